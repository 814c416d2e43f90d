# lib.sh - shared by the bench/gateway/*.sh scenarios (sourced, bash).
#
# Starts kiban, nginx and HAProxy as keep-alive reverse proxies on
# 127.0.0.1 random ports with configs generated into a temp dir, each with
# one worker (kiban: one gateway loop; nginx: worker_processes 1; HAProxy:
# nbthread 1), runs wrk/h2load against them and prints markdown.  Every
# process started here is stopped on exit.
#
# Settings (environment): DURATION (s, default 10), CONNECTIONS (50),
# THREADS (wrk threads, 1), WARMUP (s, 2), ROUNDS (3).

set -u

BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY_BIN=$(command -v haproxy || echo /usr/sbin/haproxy)

BENCH_WORK=$(mktemp -d /tmp/kiban-bench.XXXXXX)
BENCH_PIDS=""

bench_cleanup() {
    local p
    for p in $BENCH_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in $BENCH_PIDS; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$BENCH_WORK"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
            die "$tool is missing (scripts/deps.sh bench)"
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL [CURL ARGS…]: until it answers at all (any status)
wait_http() {
    local url=$1 i=0
    shift
    until curl -sS -o /dev/null "$@" "$url" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 150 ] && die "$url never answered"
        sleep 0.1
    done
}

# status URL [CURL ARGS…]: the HTTP status code
status() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' "$@" "$url"
}

# ---- backends --------------------------------------------------------------

# start_hello → HELLO_PORT: the example service (small JSON at GET /hello)
start_hello() {
    HELLO_PORT=$(free_port)
    PORT=$HELLO_PORT "$BUILD/kiban-hello" >/dev/null 2>&1 &
    BENCH_PIDS="$BENCH_PIDS $!"
    wait_http "http://127.0.0.1:$HELLO_PORT/hello"
}

# start_slow DELAY_MS → SLOW_PORT: a keep-alive backend answering every
# GET after DELAY_MS (python; kiban-hello has no delay option yet)
start_slow() {
    SLOW_PORT=$(free_port)
    python3 "$BENCH_DIR/gateway/slow_backend.py" "$SLOW_PORT" "$1" &
    BENCH_PIDS="$BENCH_PIDS $!"
    wait_http "http://127.0.0.1:$SLOW_PORT/hello"
}

# ---- kiban -------------------------------------------------------------------

# start_kiban [EXTRA ARGS…] → KIBAN_PORT KIBAN_API_URL KIBAN_PID KIBAN_DATA
# One gateway loop, no access log (nginx and HAProxy run without one too).
start_kiban() {
    local api
    KIBAN_PORT=$(free_port)
    api=$(free_port)
    KIBAN_DATA="$BENCH_WORK/kiban.$KIBAN_PORT"
    KIBAN_API_URL="http://127.0.0.1:$api"
    # (older builds have neither flag: one loop and no access log anyway)
    local opts=""
    "$BUILD/kiban" server --help 2>&1 | grep -q -- --gateway-workers &&
        opts="$opts --gateway-workers 1"
    "$BUILD/kiban" server --help 2>&1 | grep -q -- --access-log &&
        opts="$opts --access-log off"
    "$BUILD/kiban" server --data-dir "$KIBAN_DATA" --log-level warn \
        --gateway-listen "127.0.0.1:$KIBAN_PORT" \
        --api-listen "127.0.0.1:$api" $opts \
        "$@" 2>>"$BENCH_WORK/kiban.log" &
    KIBAN_PID=$!
    BENCH_PIDS="$BENCH_PIDS $KIBAN_PID"
    wait_http "$KIBAN_API_URL/healthz"
}

# kiban_apply OPENAPI_YAML_FILE: a Gateway named bench with that spec
# (indented under spec.openapi); fails loudly when the spec is refused
kiban_apply() {
    local f="$BENCH_WORK/gw.$$.yaml"
    {
        printf 'kind: Gateway\nmetadata: {name: bench}\nspec:\n  openapi:\n'
        sed 's/^/    /' "$1"
    } >"$f"
    KIBAN_API="$KIBAN_API_URL" "$BUILD/kiban" apply -f "$f" \
        --token-file "$KIBAN_DATA/admin.token" >"$BENCH_WORK/apply.out" 2>&1 ||
        { cat "$BENCH_WORK/apply.out" >&2; return 1; }
}

# ---- peers -------------------------------------------------------------------

# start_nginx BACKEND_PORT [h2] → NGINX_PORT NGINX_MASTER (its worker is a child)
start_nginx() {
    local dir="$BENCH_WORK/nginx.$1${2:+.$2}" listen_opt=""
    [ "${2:-}" = h2 ] && listen_opt=" http2"
    NGINX_PORT=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $dir;
    proxy_temp_path $dir;
    fastcgi_temp_path $dir;
    uwsgi_temp_path $dir;
    scgi_temp_path $dir;
    keepalive_requests 100000;
    keepalive_timeout 120s;
    upstream backend {
        server 127.0.0.1:$1;
        keepalive ${NGINX_KEEPALIVE:-1024};
    }
    server {
        listen 127.0.0.1:$NGINX_PORT$listen_opt;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
    "$NGINX_BIN" -c "$dir/nginx.conf" -p "$dir" 2>>"$dir/error.log" &
    BENCH_PIDS="$BENCH_PIDS $!"
    NGINX_MASTER=$!
    wait_http "http://127.0.0.1:$NGINX_PORT/" ${2:+--http2-prior-knowledge}
}

# start_haproxy BACKEND_PORT [h2] → HAPROXY_PORT HAPROXY_PID
start_haproxy() {
    local dir="$BENCH_WORK/haproxy.$1${2:+.$2}" bind_opt=""
    [ "${2:-}" = h2 ] && bind_opt=" proto h2"
    HAPROXY_PORT=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    # HAProxy reserves two descriptors per connection; the hard limit here
    # may be 20000 (ulimit -Hn), so 9990 is the most it will start with.
    maxconn ${HAPROXY_MAXCONN:-9990}
    pidfile $dir/haproxy.pid
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT$bind_opt
    default_backend be
backend be
    server s1 127.0.0.1:$1 maxconn 1000
EOF
    "$HAPROXY_BIN" -db -f "$dir/haproxy.cfg" >>"$dir/log" 2>&1 &
    HAPROXY_PID=$!
    BENCH_PIDS="$BENCH_PIDS $HAPROXY_PID"
    wait_http "http://127.0.0.1:$HAPROXY_PORT/" ${2:+--http2-prior-knowledge}
}

# ---- load ----------------------------------------------------------------------

# wrk_run URL [WRK ARGS…] → R_RPS R_P50 R_P99 (ms) R_BAD (non-2xx + errors)
wrk_run() {
    local url=$1 out="$BENCH_WORK/wrk.out"
    shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" \
        >"$out" 2>&1
    [ -n "${BENCH_VERBOSE:-}" ] && cat "$out" >&2
    set -- $(awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v
        }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx/ { bad += $NF }
        /Socket errors/ {
            for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) bad += $i + 0
        }
        END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, bad }
    ' "$out")
    R_RPS=$1 R_P50=$2 R_P99=$3 R_BAD=$4
}

# round_three PATH: one round of warm-up + wrk against kiban, nginx and
# HAProxy in turn → ${who}_rps ${who}_p50 ${who}_p99 ${who}_bad for
# who = kiban, nginx, haproxy
round_three() {
    local who port
    for who in kiban nginx haproxy; do
        case $who in
        kiban) port=$KIBAN_PORT ;;
        nginx) port=$NGINX_PORT ;;
        haproxy) port=$HAPROXY_PORT ;;
        esac
        warm "http://127.0.0.1:$port$1"
        wrk_run "http://127.0.0.1:$port$1"
        eval "${who}_rps=\$R_RPS ${who}_p50=\$R_P50 ${who}_p99=\$R_P99 ${who}_bad=\$R_BAD"
    done
}

# warm URL [WRK ARGS…]
warm() {
    local url=$1
    shift
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
}

# h2_run URL → R_RPS R_P50 R_P99 R_BAD: h2load, one thread, CONNECTIONS
# connections with H2_STREAMS (10) concurrent streams each, for DURATION s;
# percentiles from h2load's per-request log
h2_run() {
    local url=$1 log="$BENCH_WORK/h2load.log" out="$BENCH_WORK/h2load.out"
    rm -f "$log"
    h2load -t1 -c"$CONNECTIONS" -m"${H2_STREAMS:-10}" -D"$DURATION" \
        --warm-up-time="${WARMUP}" --log-file="$log" "$url" >"$out" 2>&1
    [ -n "${BENCH_VERBOSE:-}" ] && cat "$out" >&2
    R_RPS=$(awk '/^finished in/ { v = $4; sub(/,$/, "", v); printf "%.0f", v }' "$out")
    R_BAD=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$out")
    set -- $(awk -F'\t' '{ print $3 }' "$log" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "0 0"; exit }
            i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
            i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
            printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000
        }')
    R_P50=$1 R_P99=$2
}

# rss_kb PID…: summed VmRSS of the processes, KiB
rss_kb() {
    local p sum=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# ---- output ----------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
fmt_int() { printf "%'d" "$1" 2>/dev/null || printf '%s' "$1"; }

section() { printf '\n### %s\n\n' "$*"; }
skip() { printf '\n### %s\n\nskipped: %s\n' "$1" "$2"; say "bench: $1 skipped: $2"; exit 0; }

# ---- kiban CLI and figures (bench/runtime/) ------------------------------------

# kiban_cli ARGS…: the CLI against the kiban started by start_kiban
kiban_cli() {
    KIBAN_API="$KIBAN_API_URL" "$BUILD/kiban" "$@" \
        --token-file "$KIBAN_DATA/admin.token"
}

# kiban_apply_file FILE: apply a manifest; fails loudly when it is refused
# hello_service FILE GREETING MIN_INSTANCES SCALE_DOWN_DELAY: write the
# example service `hello` as a manifest (more documents may be appended)
hello_service() {
    cat >"$1" <<EOF_SVC
kind: Service
metadata: {name: hello}
spec:
  command: $BUILD/kiban-hello
  env: {GREETING: $2}
  minInstances: $3
  scaleDownDelay: $4
EOF_SVC
}

kiban_apply_file() {
    kiban_cli apply -f "$1" >"$BENCH_WORK/apply.out" 2>&1 ||
        { cat "$BENCH_WORK/apply.out" >&2; return 1; }
}

# pctl P VALUE…: the P-th percentile (nearest rank; 100 = max)
pctl() {
    local p=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v p="$p" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "-"; exit }
            i = int((NR * p + 99) / 100); if (i < 1) i = 1; if (i > NR) i = NR
            print v[i]
        }'
}

# wrk_detail FILE → W_REQS W_NON2XX W_CONNECT W_READ W_WRITE W_TIMEOUT W_RPS
# W_P50 W_P99 (ms), from the output of one `wrk --latency` run
wrk_detail() {
    set -- $(awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v
        }
        / requests in / { reqs = $1 }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx/ { bad += $NF }
        /Socket errors/ {
            for (i = 1; i <= NF; i++) {
                v = $(i + 1); sub(/,$/, "", v)
                if ($i == "connect") c = v; else if ($i == "read") r = v
                else if ($i == "write") w = v; else if ($i == "timeout") t = v
            }
        }
        END { printf "%d %d %d %d %d %d %.0f %.3f %.3f\n",
                     reqs, bad, c, r, w, t, rps, p50, p99 }
    ' "$1")
    W_REQS=$1 W_NON2XX=$2 W_CONNECT=$3 W_READ=$4 W_WRITE=$5 W_TIMEOUT=$6
    W_RPS=$7 W_P50=$8 W_P99=$9
}
