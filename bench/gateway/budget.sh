#!/bin/bash
# budget.sh - (1b) the plain proxy with the same CPU budget for each proxy.
#
# On a small machine wrk, the proxy and the backend share the cores, so the
# plain scenario's req/s mixes all three.  Here each proxy's processes are
# put in a cgroup limited to BUDGET_PCT % of one core (default 40): the
# proxy is then the bottleneck, and req/s measures what each proxy does
# with the same CPU.  Needs root and the cgroup cpu controller (v1 or v2).
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need wrk curl nginx haproxy

title="1b. Plain proxy with the same CPU budget per proxy"
pct=${BUDGET_PCT:-40}
if [ -w /sys/fs/cgroup/cgroup.subtree_control ] 2>/dev/null &&
   grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    cg=/sys/fs/cgroup/kiban-bench.$$
    mkdir "$cg" 2>/dev/null || skip "$title" "cannot create a cgroup (need root)"
    echo "$((pct * 1000)) 100000" >"$cg/cpu.max"
elif [ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ]; then
    cg=/sys/fs/cgroup/cpu/kiban-bench.$$
    mkdir "$cg" 2>/dev/null || skip "$title" "cannot create a cgroup (need root)"
    echo 100000 >"$cg/cpu.cfs_period_us"
    echo $((pct * 1000)) >"$cg/cpu.cfs_quota_us"
else
    skip "$title" "no writable cgroup cpu controller"
fi
budget_cleanup() {
    # processes leave with their exit; then the group can go
    bench_cleanup
    rmdir "$cg" 2>/dev/null || true
}
trap budget_cleanup EXIT INT TERM

start_hello
start_kiban
cat >"$BENCH_WORK/budget.yaml" <<EOF2
openapi: 3.0.3
info: {title: bench, version: "1"}
x-google-backend: {address: "http://127.0.0.1:$HELLO_PORT"}
paths:
  /hello: {get: {}}
EOF2
kiban_apply "$BENCH_WORK/budget.yaml" || die "kiban refused the spec"
start_nginx "$HELLO_PORT"
start_haproxy "$HELLO_PORT"
# nginx: the master, then its worker (children follow a moved parent only
# when forked later, so both are moved)
for pid in $KIBAN_PID $NGINX_MASTER $(pgrep -P "$NGINX_MASTER") $HAPROXY_PID; do
    echo "$pid" >"$cg/cgroup.procs" || die "cannot move $pid into $cg"
done

section "$title ($pct % of a core each; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)"
echo "| round | kiban req/s | nginx req/s | HAProxy req/s |"
echo "|---|---|---|---|"
kr="" nr="" hr=""
for round in $(seq "$ROUNDS"); do
    round_three /hello
    echo "| $round | $(fmt_int "$kiban_rps") | $(fmt_int "$nginx_rps") | $(fmt_int "$haproxy_rps") |"
    kr="$kr $kiban_rps" nr="$nr $nginx_rps" hr="$hr $haproxy_rps"
done
mk=$(median $kr) mn=$(median $nr) mh=$(median $hr)
echo "| median | $(fmt_int "$mk") | $(fmt_int "$mn") | $(fmt_int "$mh") |"
echo
echo "Same CPU each: kiban/nginx **$(ratio "$mk" "$mn")**, kiban/HAProxy **$(ratio "$mk" "$mh")** (req/s per unit of CPU)."
