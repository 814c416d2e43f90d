#!/bin/bash
# aggregate.sh - (4) one operation fanning out to 3 backends that each take
# DELAY_MS (20) to answer: the total should be about the slowest call, not
# the sum.  A plain route to one such backend is the reference.
#
# The slow backends are bench/gateway/slow_backend.py (asyncio) until
# kiban-hello takes a delay option.  Skips (exit 0) when kiban does not
# know x-kiban-aggregate yet.
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need wrk curl python3

title="4. Aggregation of 3 backends, ${DELAY_MS:=20} ms each (kiban only)"
AGG_CONNECTIONS=${AGG_CONNECTIONS:-10}
ports=""
for i in 1 2 3; do
    start_slow "$DELAY_MS"
    ports="$ports $SLOW_PORT"
done
set -- $ports
start_kiban
cat >"$BENCH_WORK/agg.yaml" <<EOF
openapi: 3.0.3
info: {title: bench, version: "1"}
paths:
  /one:
    get:
      x-google-backend:
        address: "http://127.0.0.1:$1/hello"
        path_translation: CONSTANT_ADDRESS
  /agg:
    get:
      x-kiban-aggregate:
        calls:
          - {name: a, address: "http://127.0.0.1:$1", path: /a}
          - {name: b, address: "http://127.0.0.1:$2", path: /b}
          - {name: c, address: "http://127.0.0.1:$3", path: /c}
EOF
kiban_apply "$BENCH_WORK/agg.yaml" ||
    skip "$title" "kiban refused x-kiban-aggregate (aggregation not there yet?)"
url="http://127.0.0.1:$KIBAN_PORT"
body=$(curl -s "$url/agg")
printf '%s' "$body" | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if all(isinstance(d.get(k), dict) for k in "abc") else 1)' 2>/dev/null ||
    skip "$title" "GET /agg did not answer {a, b, c} (got: $(printf '%.120s' "$body"))"

section "$title (wrk -t1 -c$AGG_CONNECTIONS -d${DURATION}s)"
echo "| route | req/s | p50 ms | p99 ms | bad |"
echo "|---|---|---|---|---|"
CONNECTIONS=$AGG_CONNECTIONS
warm "$url/one"
wrk_run "$url/one"
echo "| /one (1 backend) | $R_RPS | $R_P50 | $R_P99 | $R_BAD |"
one50=$R_P50
warm "$url/agg"
wrk_run "$url/agg"
echo "| /agg (3 backends in parallel) | $R_RPS | $R_P50 | $R_P99 | $R_BAD |"
echo
echo "p50 of /agg: **$R_P50 ms** against $DELAY_MS ms for the slowest call and $((3 * DELAY_MS)) ms for the sum (one backend through the gateway: $one50 ms); /agg/one p50 = $(ratio "$R_P50" "$one50") (≈ 1 means parallel)."
