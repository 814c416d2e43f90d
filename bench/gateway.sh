#!/bin/sh
# gateway.sh - kiban's gateway against nginx as a keep-alive reverse proxy.
#
# One backend (the example service, build/kiban-hello), put behind kiban and
# behind nginx in turn, each with one worker (kiban's gateway runs on one
# loop); wrk drives each with the same load in the same run.  Prints
# requests/s, p50 and p99 latency, and the ratio kiban/nginx.
#
#   bench/gateway.sh [BUILD_DIR]
#   DURATION=10 CONNECTIONS=50 THREADS=1 bench/gateway.sh
set -eu

build=${1:-build}
duration=${DURATION:-10}
conns=${CONNECTIONS:-50}
threads=${THREADS:-1}
path=${BENCH_PATH:-/hello}

for tool in wrk nginx curl; do
    command -v $tool >/dev/null 2>&1 || [ -x /usr/sbin/$tool ] || {
        echo "gateway.sh: $tool is missing (scripts/deps.sh bench)" >&2; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d /tmp/kiban-bench.XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() {
    i=0
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "gateway.sh: $1 never answered" >&2; exit 1; }
        sleep 0.1
    done
}

backend_port=$(free_port)
kiban_port=$(free_port)
api_port=$(free_port)
nginx_port=$(free_port)

# The backend.
PORT=$backend_port "$build/kiban-hello" >/dev/null 2>&1 &
pids="$pids $!"
wait_http "http://127.0.0.1:$backend_port/hello"

# kiban, with a URL backend so both proxies do the same work.
"$build/kiban" server --data-dir "$work/kiban" --log-level warn \
    --gateway-listen "127.0.0.1:$kiban_port" --api-listen "127.0.0.1:$api_port" \
    2>"$work/kiban.log" &
pids="$pids $!"
wait_http "http://127.0.0.1:$api_port/healthz"
cat >"$work/gw.yaml" <<EOF
kind: Gateway
metadata: {name: bench}
spec:
  openapi:
    openapi: 3.0.3
    info: {title: bench, version: "1"}
    x-google-backend: {address: "http://127.0.0.1:$backend_port"}
    paths:
      $path: {get: {}}
EOF
KIBAN_API="http://127.0.0.1:$api_port" "$build/kiban" apply -f "$work/gw.yaml" \
    --token-file "$work/kiban/admin.token" >/dev/null
wait_http "http://127.0.0.1:$kiban_port$path"

# nginx, configured the way one runs it as a keep-alive reverse proxy.
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    upstream backend {
        server 127.0.0.1:$backend_port;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
"$nginx_bin" -c "$work/nginx.conf" -p "$work/nginx"
wait_http "http://127.0.0.1:$nginx_port$path"

# wrk's --latency output → "rps p50_ms p99_ms"
run_wrk() {
    wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$1" >"$work/wrk.out" 2>&1
    [ -n "${BENCH_VERBOSE:-}" ] && cat "$work/wrk.out" >&2
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v
        }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx/ { bad = $NF }
        /Socket errors/ { err = $0 }
        END { printf "%s %.3f %.3f %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }
    ' "$work/wrk.out"
}

# Warm both, then measure each in turn.
wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$kiban_port$path" >/dev/null 2>&1
wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$nginx_port$path" >/dev/null 2>&1
set -- $(run_wrk "http://127.0.0.1:$kiban_port$path"); k_rps=$1 k_p50=$2 k_p99=$3 k_bad=$4
set -- $(run_wrk "http://127.0.0.1:$nginx_port$path"); n_rps=$1 n_p50=$2 n_p99=$3 n_bad=$4

printf '\ngateway proxy, GET %s, wrk -t%s -c%s -d%ss, one worker each\n' \
    "$path" "$threads" "$conns" "$duration"
printf '%-8s %12s %10s %10s %8s\n' proxy req/s p50_ms p99_ms non2xx
printf '%-8s %12s %10s %10s %8s\n' kiban "$k_rps" "$k_p50" "$k_p99" "$k_bad"
printf '%-8s %12s %10s %10s %8s\n' nginx "$n_rps" "$n_p50" "$n_p99" "$n_bad"
awk -v k="$k_rps" -v n="$n_rps" -v kp="$k_p99" -v np="$n_p99" 'BEGIN {
    printf "ratio kiban/nginx: req/s %.2f, p99 %.2f\n", k / n, kp / np }'
