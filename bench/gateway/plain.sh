#!/bin/bash
# plain.sh - (1) plain proxy of a small JSON answer: kiban vs nginx vs HAProxy.
#
# One backend (kiban-hello, GET /hello, ~60-byte JSON) behind each proxy,
# each with one worker and keep-alive to the backend.  ROUNDS rounds; in
# each round wrk drives kiban, nginx and HAProxy in turn (after a warm-up),
# so a slow moment of the machine hits all three alike.  Prints every round
# and the medians with the ratios kiban/nginx and kiban/HAProxy.
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need wrk curl nginx haproxy

start_hello
start_kiban
cat >"$BENCH_WORK/plain.yaml" <<EOF
openapi: 3.0.3
info: {title: bench, version: "1"}
x-google-backend: {address: "http://127.0.0.1:$HELLO_PORT"}
paths:
  /hello: {get: {}}
EOF
kiban_apply "$BENCH_WORK/plain.yaml" || die "kiban refused the spec"
start_nginx "$HELLO_PORT"
start_haproxy "$HELLO_PORT"
for port in $KIBAN_PORT $NGINX_PORT $HAPROXY_PORT; do
    [ "$(status "http://127.0.0.1:$port/hello")" = 200 ] ||
        die "proxy on $port does not answer 200 for /hello"
done

section "1. Plain proxy, GET /hello (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, one worker each)"
echo "| round | kiban req/s | nginx req/s | HAProxy req/s | kiban p50 / p99 ms | nginx p50 / p99 ms | HAProxy p50 / p99 ms | bad k/n/h |"
echo "|---|---|---|---|---|---|---|---|"
kr="" nr="" hr="" k50="" n50="" h50="" k99="" n99="" h99=""
for round in $(seq "$ROUNDS"); do
    round_three /hello
    echo "| $round | $(fmt_int "$kiban_rps") | $(fmt_int "$nginx_rps") | $(fmt_int "$haproxy_rps") | $kiban_p50 / $kiban_p99 | $nginx_p50 / $nginx_p99 | $haproxy_p50 / $haproxy_p99 | $kiban_bad/$nginx_bad/$haproxy_bad |"
    kr="$kr $kiban_rps" nr="$nr $nginx_rps" hr="$hr $haproxy_rps"
    k50="$k50 $kiban_p50" n50="$n50 $nginx_p50" h50="$h50 $haproxy_p50"
    k99="$k99 $kiban_p99" n99="$n99 $nginx_p99" h99="$h99 $haproxy_p99"
done
mk=$(median $kr) mn=$(median $nr) mh=$(median $hr)
m99k=$(median $k99) m99n=$(median $n99) m99h=$(median $h99)
echo "| median | $(fmt_int "$mk") | $(fmt_int "$mn") | $(fmt_int "$mh") | $(median $k50) / $m99k | $(median $n50) / $m99n | $(median $h50) / $m99h | |"
echo
echo "kiban/nginx: req/s **$(ratio "$mk" "$mn")** (target ≥ 1.20), p99 $(ratio "$m99k" "$m99n") (target ≤ 1.00).  kiban/HAProxy: req/s **$(ratio "$mk" "$mh")** (target ≥ 1.00), p99 $(ratio "$m99k" "$m99h") (target ≤ 1.00)."
