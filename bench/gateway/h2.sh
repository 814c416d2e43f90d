#!/bin/bash
# h2.sh - (6) HTTP/2 cleartext (prior knowledge) on the listener, HTTP/1.1
# with keep-alive to the backend: kiban vs nginx vs HAProxy with h2load
# (CONNECTIONS connections × H2_STREAMS streams, one h2load thread).
# Skips (exit 0) when kiban does not answer h2c yet.
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need h2load curl nginx haproxy

title="6. HTTP/2 (h2c) on the listener"
start_hello
start_kiban --gateway-h2 true 2>/dev/null ||
    skip "$title" "kiban does not take --gateway-h2"
cat >"$BENCH_WORK/h2.yaml" <<EOF
openapi: 3.0.3
info: {title: bench, version: "1"}
x-google-backend: {address: "http://127.0.0.1:$HELLO_PORT"}
paths:
  /hello: {get: {}}
EOF
kiban_apply "$BENCH_WORK/h2.yaml" || die "kiban refused the spec"
v=$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http2-prior-knowledge \
    --max-time 3 "http://127.0.0.1:$KIBAN_PORT/hello")
[ "$v" = "2 200" ] ||
    skip "$title" "kiban refuses h2c prior knowledge (curl: '$v')"
start_nginx "$HELLO_PORT" h2
start_haproxy "$HELLO_PORT" h2

section "$title: h2load -t1 -c$CONNECTIONS -m${H2_STREAMS:-10} -D$DURATION, one worker each"
echo "| round | kiban req/s | nginx req/s | HAProxy req/s | kiban p50 / p99 ms | nginx p50 / p99 ms | HAProxy p50 / p99 ms | failed k/n/h |"
echo "|---|---|---|---|---|---|---|---|"
kr="" nr="" hr="" k99="" n99="" h99=""
for round in $(seq "$ROUNDS"); do
    for who in kiban nginx haproxy; do
        case $who in
        kiban) port=$KIBAN_PORT ;;
        nginx) port=$NGINX_PORT ;;
        haproxy) port=$HAPROXY_PORT ;;
        esac
        h2_run "http://127.0.0.1:$port/hello"
        eval "${who}_rps=\$R_RPS ${who}_p50=\$R_P50 ${who}_p99=\$R_P99 ${who}_bad=\$R_BAD"
    done
    echo "| $round | $kiban_rps | $nginx_rps | $haproxy_rps | $kiban_p50 / $kiban_p99 | $nginx_p50 / $nginx_p99 | $haproxy_p50 / $haproxy_p99 | $kiban_bad/$nginx_bad/$haproxy_bad |"
    kr="$kr $kiban_rps" nr="$nr $nginx_rps" hr="$hr $haproxy_rps"
    k99="$k99 $kiban_p99" n99="$n99 $nginx_p99" h99="$h99 $haproxy_p99"
done
mk=$(median $kr) mn=$(median $nr) mh=$(median $hr)
echo
echo "kiban/nginx req/s **$(ratio "$mk" "$mn")**, p99 $(ratio "$(median $k99)" "$(median $n99)"); kiban/HAProxy req/s **$(ratio "$mk" "$mh")**, p99 $(ratio "$(median $k99)" "$(median $h99)") (medians; no target set for h2)."
