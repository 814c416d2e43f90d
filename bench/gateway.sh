#!/bin/bash
# gateway.sh - kiban's gateway benchmarks, run by `make bench`.
#
# Runs the scenarios in bench/gateway/ one after another, each with its own
# fresh instances on 127.0.0.1 random ports (configs generated into a temp
# dir, one worker each, keep-alive to the backend), and writes one markdown
# report: machine, versions, then a table per scenario.  Scenarios whose
# feature is missing print "skipped: why" and do not fail the run.
#
#   bench/gateway.sh [BUILD_DIR] [SCENARIO…]     (default: all, in order)
#   DURATION=10 CONNECTIONS=50 THREADS=1 ROUNDS=3 bench/gateway.sh build plain
#
# Scenarios: plain (kiban/nginx/HAProxy), budget (the same, each proxy
# limited to the same CPU), jwt, cache, aggregate, idle
# (memory with 10,000 idle connections), h2.  The report goes to stdout and
# to $BENCH_OUT (default BUILD_DIR/bench-gateway.md).
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
scenarios=${*:-plain budget jwt cache aggregate idle h2}
build=$(cd "$build" && pwd) || { echo "gateway.sh: no build dir" >&2; exit 1; }
[ -x "$build/kiban" ] && [ -x "$build/kiban-hello" ] ||
    { echo "gateway.sh: $build has no kiban / kiban-hello (make build)" >&2; exit 1; }
out=${BENCH_OUT:-$build/bench-gateway.md}

{
    echo "## Gateway benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "- kiban $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$here/.." diff --quiet HEAD 2>/dev/null || echo '+changes'), build $(grep -m1 CMAKE_BUILD_TYPE: "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2)"
    echo "- $(/usr/sbin/nginx -v 2>&1 | sed 's/nginx version: //'), HAProxy $(/usr/sbin/haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), h2load $(h2load --version 2>/dev/null | awk '{ print $NF }')"
    echo "- load: DURATION=${DURATION:-10}s CONNECTIONS=${CONNECTIONS:-50} THREADS=${THREADS:-1} ROUNDS=${ROUNDS:-3} WARMUP=${WARMUP:-2}s; one worker per proxy (kiban --gateway-workers 1, nginx worker_processes 1, HAProxy nbthread 1); no access logs; wrk, the proxies and the backend share the machine"
    for s in $scenarios; do
        script="$here/gateway/$s.sh"
        [ -x "$script" ] || { printf '\n### %s\n\nno such scenario\n' "$s"; continue; }
        BUILD=$build "$script" || printf '\n(%s failed: exit %d)\n' "$s" $?
    done
} | tee "$out"
echo >&2
echo "gateway.sh: report in $out" >&2
