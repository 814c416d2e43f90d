#!/bin/bash
# traffic.sh - (3) steady load through a production Gateway while traffic
# moves 0 → 10 → 50 → 100 % to a new revision and back (target: no failed
# request).
#
# wrk -t1 -c20 --latency -H 'Host: api.bench.test' on GET /hello of a
# Gateway whose backend is service://hello; STEP seconds after it starts,
# `kiban services update-traffic` moves 10 %, 50 %, 100 % to the new
# revision (tag green), then rolls back to 100 % on the old one, STEP
# seconds apart.  Two variants: the new revision kept warm (minInstances 1,
# scaleDownDelay 60 s), and cold (minInstances 0, scaleDownDelay 1 s: the
# new revision is at zero when it first gets traffic, and the old one has
# scaled to zero by the time of the rollback).  ROUNDS rounds of each, a
# fresh server per round; "cold starts" is kiban_revision_cold_starts_total
# from /metrics at the end of the round.
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need wrk python3 curl

STEP=${STEP:-3}
CONNS=${TRAFFIC_CONNECTIONS:-20}
HOST=api.bench.test
title="3. Traffic moves under load (wrk -t1 -c$CONNS, a step every ${STEP}s)"

ms_now() { date +%s%N | cut -b1-13; }
timing() {
    python3 "$BENCH_DIR/runtime/timing.py" "$1" "$KIBAN_API_URL" \
        "$KIBAN_DATA/admin.token" hello "${@:2}"
}

# variant NAME MIN_INSTANCES SCALE_DOWN_DELAY → a table row; the moves'
# CLI times in MOVES
variant() {
    local name=$1 min=$2 delay=$3 v1 v2 t0 move colds
    start_kiban --domain localhost --run-as "${RUN_AS-}"
    hello_service "$BENCH_WORK/svc.yaml" v1 1 "$delay"
    cat >>"$BENCH_WORK/svc.yaml" <<EOF2
---
kind: Gateway
metadata: {name: prod}
spec:
  hosts: [$HOST]
  openapi:
    swagger: "2.0"
    info: {title: prod, version: "1"}
    x-google-backend: {address: "service://hello"}
    paths:
      /hello: {get: {operationId: hello, responses: {"200": {description: ok}}}}
EOF2
    kiban_apply_file "$BENCH_WORK/svc.yaml" || return 1
    wait_http "http://127.0.0.1:$KIBAN_PORT/hello" -H "Host: $HOST"
    v1=$(timing revision) || return 1
    kiban_cli deploy hello --env GREETING=v2 --no-traffic --tag green \
        --min-instances "$min" >"$BENCH_WORK/deploy.out" 2>&1 ||
        { cat "$BENCH_WORK/deploy.out" >&2; return 1; }
    v2=$(timing revision) || return 1
    [ "$min" = 0 ] && { timing zero "$v2" || return 1; }

    wrk -t1 -c"$CONNS" -d"$((STEP * 5 + 1))s" --latency -H "Host: $HOST" \
        "http://127.0.0.1:$KIBAN_PORT/hello" >"$BENCH_WORK/wrk.$min" 2>&1 &
    local wrk_pid=$!
    MOVES=""
    for move in "--to-tags green=10" "--to-tags green=50" \
                "--to-revisions $v2=100" "--to-revisions $v1=100"; do
        sleep "$STEP"
        t0=$(ms_now)
        kiban_cli services update-traffic hello $move >>"$BENCH_WORK/moves.out" 2>&1 ||
            { cat "$BENCH_WORK/moves.out" >&2; kill "$wrk_pid"; return 1; }
        MOVES="$MOVES $(( $(ms_now) - t0 ))"
    done
    wait "$wrk_pid"
    [ -n "${BENCH_VERBOSE:-}" ] && cat "$BENCH_WORK/wrk.$min" >&2
    wrk_detail "$BENCH_WORK/wrk.$min"
    colds=$(curl -s "$KIBAN_API_URL/metrics" |
            awk '/^kiban_revision_cold_starts_total/ { n += $NF } END { print n + 0 }')
    printf '| %s | %s | %s | %s | %s/%s/%s/%s | %s | %s | %s |\n' "$name" \
        "$colds" "$W_REQS" "$W_NON2XX" "$W_CONNECT" "$W_READ" "$W_WRITE" \
        "$W_TIMEOUT" "$W_RPS" "$W_P50" "$W_P99"
    FAILED=$((FAILED + W_NON2XX + W_CONNECT + W_READ + W_WRITE + W_TIMEOUT))
    WORST_P99=$(awk -v a="$W_P99" -v b="${WORST_P99:-0}" 'BEGIN { print (a > b ? a : b) }')
    ALL_MOVES="$ALL_MOVES $MOVES"
    # stop this server before the next variant
    kill -TERM "$KIBAN_PID" 2>/dev/null
    wait "$KIBAN_PID" 2>/dev/null
}

FAILED=0 ALL_MOVES=""
section "$title"
echo "| variant | cold starts | requests | non-2xx | socket errors connect/read/write/timeout | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
    variant "$r. warm (new revision minInstances 1)" 1 60s ||
        echo "| $r. warm | failed | | | | | | |"
done
for r in $(seq 1 "$ROUNDS"); do
    variant "$r. cold (new revision minInstances 0, scaleDownDelay 1s)" 0 1s ||
        echo "| $r. cold | failed | | | | | | |"
done
echo
echo "Moves: \`update-traffic --to-tags green=10\`, \`green=50\`, \`--to-revisions NEW=100\`, \`--to-revisions OLD=100\` (rollback); each CLI call took $(pctl 50 $ALL_MOVES) ms p50, $(pctl 100 $ALL_MOVES) ms max."
echo
if [ "$FAILED" -eq 0 ]; then
    echo "Failed requests during the moves: **0** (target 0: met)."
else
    echo "Failed requests during the moves: **$FAILED** (target 0: missed)."
fi
