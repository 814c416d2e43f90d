#!/bin/sh
# deps.sh - install the Debian packages kiban needs, only if missing.
#
#   scripts/deps.sh          build + test dependencies
#   scripts/deps.sh bench    also the peers the benchmarks compare against
#   scripts/deps.sh fuzz     also clang for libFuzzer builds
set -eu

pkgs="gcc make cmake pkg-config ca-certificates
      libuv1-dev libjansson-dev libyaml-dev libsqlite3-dev libssl-dev
      libcurl4-openssl-dev libnghttp2-dev libcmocka-dev
      python3 curl procps openssl nghttp2-client nghttp2-server"
for extra in "$@"; do
    case "$extra" in
    bench) pkgs="$pkgs nginx-light haproxy wrk" ;;
    fuzz)  pkgs="$pkgs clang libclang-rt-14-dev" ;;
    *) echo "deps.sh: unknown group '$extra' (bench, fuzz)" >&2; exit 2 ;;
    esac
done

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps.sh: installing:$missing"
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "deps.sh: need root (or sudo) to install:$missing" >&2; exit 1; }
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian starts nginx (port 80) and haproxy when they are installed; the
# benchmarks run their own instances on loopback, so the system ones are
# not wanted.
for svc in nginx haproxy; do
    case "$missing" in
    *"$svc"*) $sudo systemctl disable --now "$svc" >/dev/null 2>&1 ||
              $sudo service "$svc" stop >/dev/null 2>&1 || true ;;
    esac
done
