#!/bin/sh
# quickstart.sh - run kiban on its embedded default with the quickstart
# example applied, in the foreground (Ctrl-C stops it and its services).
#
#   scripts/quickstart.sh [BUILD_DIR]
set -eu
build=${1:-build}
bin="$build/kiban"
data=./kiban-data
api=http://127.0.0.1:8401

[ -x "$bin" ] || { echo "quickstart: $bin not built (run 'make')" >&2; exit 1; }
if curl -fsS "$api/healthz" >/dev/null 2>&1; then
    echo "quickstart: something already answers on $api; stop it first" >&2
    exit 1
fi

mkdir -p "$data"
"$bin" server --data-dir "$data" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server; exit 0' INT TERM

i=0
until curl -fsS "$api/healthz" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 $server 2>/dev/null; then
        echo "quickstart: kiban did not start (see the log above)" >&2
        kill -TERM $server 2>/dev/null || true
        exit 1
    fi
    sleep 0.1
done

KIBAN_API=$api "$bin" apply -f examples/quickstart.yaml --token-file "$data/admin.token"

# The example service needs a moment to open its port.
i=0
until curl -fsS http://127.0.0.1:8080/hello >/dev/null 2>&1 || [ $i -gt 50 ]; do
    i=$((i + 1)); sleep 0.1
done

cat <<MSG

kiban is running (data in $data; Ctrl-C stops it). Try, in another terminal:

  curl http://127.0.0.1:8080/hello              # through the gateway
  curl http://127.0.0.1:8080/hello/newcomer
  export KIBAN_TOKEN=\$(cat $data/admin.token)
  $bin get services                       # what runs
  $bin get gateway quickstart -o yaml
  curl -H "Authorization: Bearer \$KIBAN_TOKEN" $api/v1/projects/default/services
  curl $api/metrics                         # Prometheus metrics

MSG
wait $server
