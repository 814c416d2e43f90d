#!/bin/bash
# deploy.sh - (2) `kiban deploy` until the new revision answers (target ≤ 1 s).
#
# From before the CLI starts until the new revision's tag URL
# (Host: tN---hello.localhost) answers GET /hello with the new GREETING:
# DEPLOY_ROUNDS deploys with --no-traffic, then (after update-traffic
# --to-latest) DEPLOY_ROUNDS deploys that take all traffic, also timed until the service host
# (Host: hello.localhost) answers with the new GREETING.
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need python3 curl

N=${DEPLOY_ROUNDS:-10}
title="2. Deploy until the new revision answers"
start_kiban --domain localhost --run-as "${RUN_AS-}"
# The first revision; old revisions' instances go after 2 s idle.
hello_service "$BENCH_WORK/svc.yaml" v0 1 2s
kiban_apply_file "$BENCH_WORK/svc.yaml" || skip "$title" "the Service was refused"
wait_http "http://127.0.0.1:$KIBAN_PORT/hello" -H 'Host: hello.localhost'

timing() {
    python3 "$BENCH_DIR/runtime/timing.py" deploy "$BUILD/kiban" \
        "$KIBAN_API_URL" "$KIBAN_DATA/admin.token" "$KIBAN_PORT" hello \
        localhost "$@"
}
timing 1 "$N" --no-traffic >"$BENCH_WORK/notraffic.txt" ||
    { section "$title"; echo "failed (--no-traffic)"; exit 1; }
kiban_cli services update-traffic hello --to-latest >/dev/null ||
    { section "$title"; echo "failed: update-traffic --to-latest"; exit 1; }
timing $((N + 1)) "$N" >"$BENCH_WORK/traffic.txt" ||
    { section "$title"; echo "failed (with traffic)"; exit 1; }
[ -n "${BENCH_VERBOSE:-}" ] && cat "$BENCH_WORK/notraffic.txt" "$BENCH_WORK/traffic.txt" >&2

section "$title ($N deploys each; ms from before \`kiban deploy\` starts)"
echo "| variant | CLI exits p50 / max | tag URL answers p50 / max | service host answers p50 / max |"
echo "|---|---|---|---|"
row() {
    local f=$1 name=$2 a b c
    a=$(awk '{ print $1 }' "$f") b=$(awk '{ print $2 }' "$f") c=$(awk '{ print $3 }' "$f")
    printf '| %s | %s / %s | %s / %s | %s |\n' "$name" \
        "$(pctl 50 $a)" "$(pctl 100 $a)" "$(pctl 50 $b)" "$(pctl 100 $b)" \
        "$([ "$3" = yes ] && echo "$(pctl 50 $c) / $(pctl 100 $c)" || echo '(no traffic)')"
}
row "$BENCH_WORK/notraffic.txt" '`deploy hello --env GREETING=vN --tag tN --no-traffic`' no
row "$BENCH_WORK/traffic.txt" '`deploy hello --env GREETING=vN --tag tN` (traffic on latest)' yes
echo
worst=$(cat "$BENCH_WORK/notraffic.txt" "$BENCH_WORK/traffic.txt" |
        awk '{ m = $2 > m ? $2 : m; m = $3 > m ? $3 : m } END { print m }')
awk -v w="$worst" 'BEGIN {
    printf "Slowest deploy until the new revision answered: **%.0f ms** (target ≤ 1000 ms: %s).\n",
           w, (w <= 1000 ? "met" : "missed") }'
