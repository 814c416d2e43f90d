#!/bin/bash
# runtime.sh - kiban's runtime benchmarks (cold start, deploy, traffic moves).
#
# Runs the scenarios in bench/runtime/ one after another, each with its own
# kiban server on 127.0.0.1 random ports (one gateway loop, no access log,
# --domain localhost) running build/kiban-hello as the service, and writes
# one markdown report.  Scenarios whose feature is missing print
# "skipped: why" and do not fail the run.
#
#   bench/runtime.sh [BUILD_DIR] [SCENARIO…]     (default: all, in order)
#   ROUNDS=3 STEP=3 bench/runtime.sh build traffic
#
# Scenarios: coldstart (COLD_ROUNDS, default 30), deploy (DEPLOY_ROUNDS
# deploys per variant, default 10), traffic (wrk -t1 -c20 while traffic
# moves 0 → 10 → 50 → 100 % and back, STEP seconds per step, ROUNDS rounds
# of each variant, default 3).  When run as root the
# instances keep root (RUN_AS, default ""; RUN_AS=nobody to switch).  The
# report goes to stdout and to $BENCH_OUT (default BUILD_DIR/bench-runtime.md).
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
scenarios=${*:-coldstart deploy traffic}
build=$(cd "$build" && pwd) || { echo "runtime.sh: no build dir" >&2; exit 1; }
[ -x "$build/kiban" ] && [ -x "$build/kiban-hello" ] ||
    { echo "runtime.sh: $build has no kiban / kiban-hello (make build)" >&2; exit 1; }
out=${BENCH_OUT:-$build/bench-runtime.md}
export RUN_AS=${RUN_AS-}

{
    echo "## Runtime benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "- kiban $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$here/.." diff --quiet HEAD 2>/dev/null || echo '+changes'), build $(grep -m1 CMAKE_BUILD_TYPE: "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')"
    echo "- kiban server --gateway-workers 1 --access-log off --domain localhost --run-as '$RUN_AS' (as $(id -un)); COLD_ROUNDS=${COLD_ROUNDS:-30} DEPLOY_ROUNDS=${DEPLOY_ROUNDS:-10} ROUNDS=${ROUNDS:-3} STEP=${STEP:-3}s; the client, kiban and the instances share the machine"
    for s in $scenarios; do
        script="$here/runtime/$s.sh"
        [ -x "$script" ] || { printf '\n### %s\n\nno such scenario\n' "$s"; continue; }
        BUILD=$build "$script" || printf '\n(%s failed: exit %d)\n' "$s" $?
    done
} | tee "$out"
echo >&2
echo "runtime.sh: report in $out" >&2
