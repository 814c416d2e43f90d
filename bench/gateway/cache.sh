#!/bin/bash
# cache.sh - (3) response cache hits against the plain proxy (target ≥ 2×).
#
# Two routes to the same backend answer on one kiban: /hello plain, /cached
# with x-kiban-cache {ttl: 60}.  Skips (exit 0) when the second GET of
# /cached is not an X-Cache: HIT (the cache is not there yet).
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need wrk curl

title="3. Cache hit vs plain proxy (kiban only)"
start_hello
start_kiban
cat >"$BENCH_WORK/cache.yaml" <<EOF
openapi: 3.0.3
info: {title: bench, version: "1"}
x-google-backend: {address: "http://127.0.0.1:$HELLO_PORT"}
paths:
  /hello: {get: {}}
  /cached:
    get:
      x-kiban-cache: {ttl: 60}
      x-google-backend:
        address: "http://127.0.0.1:$HELLO_PORT/hello"
        path_translation: CONSTANT_ADDRESS
EOF
kiban_apply "$BENCH_WORK/cache.yaml" ||
    skip "$title" "kiban refused x-kiban-cache (the cache is not there yet?)"
url="http://127.0.0.1:$KIBAN_PORT"
curl -s -o /dev/null "$url/cached"
xcache=$(curl -s -D - -o /dev/null "$url/cached" | tr -d '\r' |
    awk -F': *' 'tolower($1) == "x-cache" { print $2 }')
case $xcache in
HIT*) ;;
*) skip "$title" "the second GET /cached was not a hit (X-Cache: ${xcache:-absent})" ;;
esac

section "$title (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, one gateway loop)"
echo "| round | plain req/s | cache hit req/s | plain p50 / p99 ms | hit p50 / p99 ms | ratio req/s | bad p/c |"
echo "|---|---|---|---|---|---|---|"
pr="" cr=""
for round in $(seq "$ROUNDS"); do
    warm "$url/hello"
    wrk_run "$url/hello"
    p_rps=$R_RPS p_50=$R_P50 p_99=$R_P99 p_bad=$R_BAD
    warm "$url/cached"
    wrk_run "$url/cached"
    echo "| $round | $p_rps | $R_RPS | $p_50 / $p_99 | $R_P50 / $R_P99 | $(ratio "$R_RPS" "$p_rps") | $p_bad/$R_BAD |"
    pr="$pr $p_rps" cr="$cr $R_RPS"
done
echo
echo "hit/plain (medians): **$(ratio "$(median $cr)" "$(median $pr)")** (target ≥ 2.00)."
