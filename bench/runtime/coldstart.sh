#!/bin/bash
# coldstart.sh - (1) a request to a revision scaled to zero, against the
# service process's own start (target: ≤ 50 ms on top of it).
#
# A service with minInstances 0 and a short scaleDownDelay; each round waits
# until it has no instance, then times one GET /hello through the gateway's
# service host (Host: hello.localhost) until its answer.  In the same round,
# kiban-hello is spawned directly with PORT and timed until /hello answers.
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need python3 curl

N=${COLD_ROUNDS:-30}
IDLE=${COLD_IDLE:-200ms}
title="1. Cold start through the gateway vs the process's own start"
start_kiban --domain localhost --run-as "${RUN_AS-}"
hello_service "$BENCH_WORK/svc.yaml" cold 0 "$IDLE"
kiban_apply_file "$BENCH_WORK/svc.yaml" || skip "$title" "the Service was refused"
python3 "$BENCH_DIR/runtime/timing.py" coldstart "$BUILD/kiban-hello" \
    "$KIBAN_API_URL" "$KIBAN_DATA/admin.token" "$KIBAN_PORT" \
    hello.localhost hello "$N" >"$BENCH_WORK/cold.txt" ||
    { section "$title"; echo "failed: $(tail -1 "$BENCH_WORK/cold.txt")"; exit 1; }
[ -n "${BENCH_VERBOSE:-}" ] && cat "$BENCH_WORK/cold.txt" >&2

direct=$(awk '{ print $1 }' "$BENCH_WORK/cold.txt")
cold=$(awk '{ print $2 }' "$BENCH_WORK/cold.txt")
extra=$(awk '{ printf "%.3f\n", $2 - $1 }' "$BENCH_WORK/cold.txt")
n=$(wc -l <"$BENCH_WORK/cold.txt")

section "$title ($n rounds, scaleDownDelay $IDLE, run-as '${RUN_AS-}')"
echo "| ms | p50 | p90 | max |"
echo "|---|---|---|---|"
for row in "kiban-hello spawned directly, until /hello answers:direct" \
           "first request to the scaled-to-zero revision (gateway, Host: hello.localhost):cold" \
           "difference, per round (cold − direct):extra"; do
    name=${row%:*}
    eval "vals=\$${row##*:}"
    printf '| %s | %s | %s | %s |\n' "$name" $(pctl 50 $vals) $(pctl 90 $vals) $(pctl 100 $vals)
done
echo
p50c=$(pctl 50 $cold) p50d=$(pctl 50 $direct)
awk -v c="$p50c" -v d="$p50d" 'BEGIN {
    printf "Cold start p50 **%.1f ms** against %.1f ms for the process alone: **+%.1f ms** (target ≤ +50 ms: %s).\n",
           c, d, c - d, (c - d <= 50 ? "met" : "missed") }'
