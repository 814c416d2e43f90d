#!/bin/bash
# idle.sh - (5) resident memory with IDLE_CONNS (10,000) idle keep-alive
# client connections: kiban vs nginx vs HAProxy (target: kiban ≤ nginx).
#
# For each proxy in turn: read VmRSS (nginx: master + worker), open the
# connections with bench/gateway/idle_conns.py (one GET /hello on each,
# answer read, then idle), read VmRSS again, close them.  The open-file
# limit is raised to the hard limit; HAProxy reserves two descriptors per
# connection, so with a hard limit of 20000 it keeps at most 9990 (its
# row says how many it held; compare the per-connection column then).
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need curl nginx haproxy python3

N=${IDLE_CONNS:-10000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((N + 200)) ] ||
    die "open-file limit $(ulimit -n) is too low for $N connections (ulimit -Hn)"

start_hello
start_kiban --max-connections $((N + 1000)) --idle-timeout 600s
cat >"$BENCH_WORK/idle.yaml" <<EOF
openapi: 3.0.3
info: {title: bench, version: "1"}
x-google-backend: {address: "http://127.0.0.1:$HELLO_PORT"}
paths:
  /hello: {get: {}}
EOF
kiban_apply "$BENCH_WORK/idle.yaml" || die "kiban refused the spec"
start_nginx "$HELLO_PORT"
start_haproxy "$HELLO_PORT"
sleep 0.5
nginx_pids="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"

# measure NAME PORT PIDS…: one table row
measure() {
    local name=$1 port=$2 before after kept failed fifo="$BENCH_WORK/idle.fifo"
    shift 2
    # same warm state for all: a few requests first
    for i in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$port/hello"; done
    sleep 0.5
    before=$(rss_kb "$@")
    rm -f "$fifo"
    mkfifo "$fifo"
    python3 "$BENCH_DIR/gateway/idle_conns.py" "$port" "$N" <"$fifo" \
        >"$BENCH_WORK/idle.out" &
    local client=$!
    exec 9>"$fifo"                      # holds the client's stdin open
    while ! grep -q '^ready' "$BENCH_WORK/idle.out" 2>/dev/null; do
        kill -0 "$client" 2>/dev/null || die "idle_conns.py died on $name"
        sleep 0.2
    done
    read -r _ kept failed <"$BENCH_WORK/idle.out"
    sleep 1
    after=$(rss_kb "$@")
    exec 9>&-                           # client exits, connections close
    wait "$client" 2>/dev/null
    echo "| $name | $kept | $failed | $((before / 1024)) | $((after / 1024)) | $(((after - before) / 1024)) | $(awk -v d=$((after - before)) -v k="$kept" 'BEGIN { if (k > 0) printf "%.2f", d * 1024 / k / 1024; else print "-" }') |"
    eval "${name}_after=$after ${name}_delta=$((after - before)) ${name}_kept=$kept"
    sleep 1
}

section "5. Resident memory with $N idle keep-alive connections (one worker each)"
echo "| proxy | connections held | failed | RSS before MiB | RSS with them MiB | growth MiB | KiB per connection |"
echo "|---|---|---|---|---|---|---|"
measure kiban "$KIBAN_PORT" "$KIBAN_PID"
measure nginx "$NGINX_PORT" $nginx_pids
measure haproxy "$HAPROXY_PORT" "$HAPROXY_PID"
echo
echo "kiban/nginx: total RSS with the connections **$(ratio "$kiban_after" "$nginx_after")**, growth $(ratio "$kiban_delta" "$nginx_delta") (target ≤ 1.00).  kiban's RSS includes the whole platform in one process (admin API, store, SQLite), nginx's the master and the worker."
