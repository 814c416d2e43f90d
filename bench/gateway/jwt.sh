#!/bin/bash
# jwt.sh - (2) RS256 JWT verification on: kiban only, against its own plain
# figure in the same run (target ≥ 0.9×).
#
# A Swagger 2.0 spec as Google API Gateway takes it (securityDefinitions
# with x-google-issuer / x-google-audiences, top-level security), the key
# from a local JWKS file (x-kiban-jwks-file) instead of x-google-jwks_uri.
# The RSA key, the JWKS and the token are made here with the openssl CLI.
# Skips (exit 0, with a message) when kiban does not enforce the scheme yet.
BENCH_DIR=$(cd "$(dirname "$0")/.." && pwd)
. "$BENCH_DIR/lib.sh"
need wrk curl openssl python3

title="2. RS256 JWT verification (kiban only)"
k="$BENCH_WORK/jwt"
mkdir -p "$k"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$k/key.pem" 2>/dev/null ||
    die "openssl cannot make an RSA key"
modulus=$(openssl rsa -in "$k/key.pem" -noout -modulus 2>/dev/null | sed 's/^Modulus=//')
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
n=$(python3 -c 'import base64, sys; print(base64.urlsafe_b64encode(bytes.fromhex(sys.argv[1])).decode().rstrip("="))' "$modulus")
printf '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"bench","n":"%s","e":"AQAB"}]}\n' \
    "$n" >"$k/jwks.json"
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
payload=$(printf '{"iss":"https://issuer.bench.kiban","aud":"bench-api","sub":"user-1","iat":%d,"exp":%d}' \
    "$now" $((now + 3600)) | b64url)
sig=$(printf '%s.%s' "$header" "$payload" |
    openssl dgst -sha256 -sign "$k/key.pem" -binary | b64url)
token="$header.$payload.$sig"

start_hello
start_kiban
cat >"$BENCH_WORK/jwt.yaml" <<EOF
swagger: "2.0"
info: {title: bench, version: "1"}
x-google-backend: {address: "http://127.0.0.1:$HELLO_PORT"}
securityDefinitions:
  bench_jwt:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: "https://issuer.bench.kiban"
    x-google-audiences: "bench-api"
    x-kiban-jwks-file: "$k/jwks.json"
paths:
  /hello:
    get:
      operationId: hello
      security: [{bench_jwt: []}]
      responses: {"200": {description: ok}}
  /plain:
    get:
      operationId: plain
      x-google-backend:
        address: "http://127.0.0.1:$HELLO_PORT/hello"
        path_translation: CONSTANT_ADDRESS
      responses: {"200": {description: ok}}
EOF
kiban_apply "$BENCH_WORK/jwt.yaml" ||
    skip "$title" "kiban refused a spec with an RS256 scheme and x-kiban-jwks-file (JWT support not there yet?)"
url="http://127.0.0.1:$KIBAN_PORT"
s_none=$(status "$url/hello")
s_tok=$(status "$url/hello" -H "Authorization: Bearer $token")
s_plain=$(status "$url/plain")
[ "$s_none" = 401 ] ||
    skip "$title" "kiban answered $s_none, not 401, without a token (JWT not enforced yet)"
[ "$s_tok" = 200 ] || die "kiban answered $s_tok to a valid RS256 token"
[ "$s_plain" = 200 ] || die "kiban answered $s_plain for the plain route"

section "$title (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, one gateway loop)"
echo "| round | plain req/s | JWT req/s | plain p50 / p99 ms | JWT p50 / p99 ms | ratio req/s | bad p/j |"
echo "|---|---|---|---|---|---|---|"
pr="" jr=""
for round in $(seq "$ROUNDS"); do
    warm "$url/plain" -H "Authorization: Bearer $token"
    wrk_run "$url/plain" -H "Authorization: Bearer $token"
    p_rps=$R_RPS p_50=$R_P50 p_99=$R_P99 p_bad=$R_BAD
    warm "$url/hello" -H "Authorization: Bearer $token"
    wrk_run "$url/hello" -H "Authorization: Bearer $token"
    echo "| $round | $p_rps | $R_RPS | $p_50 / $p_99 | $R_P50 / $R_P99 | $(ratio "$R_RPS" "$p_rps") | $p_bad/$R_BAD |"
    pr="$pr $p_rps" jr="$jr $R_RPS"
done
echo
echo "JWT/plain (medians): **$(ratio "$(median $jr)" "$(median $pr)")** (target ≥ 0.90).  One token for every request: this measures the verified-token cache; the first use of a token pays the RS256 check."
