/*
 * fuzz_jwt.c - libFuzzer target for the gateway's JWT layer
 * (src/gateway/jwt.c).
 *
 * The first byte picks what the rest is:
 *   't'  a token: parsed, verified against a fixed key set (Ed25519, P-256
 *        and an HMAC secret) and its claims checked;
 *   'j'  a key document (JWKS, lone JWK or Google x509 map): parsed, and a
 *        fixed RS256 token verified against it;
 *   else base64url: decoding then encoding must give the input back.
 * Nothing may crash or leak.  Seeds in fuzz/corpus/jwt/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "gateway/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fixed_jwks[] =
    "{\"keys\":["
    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed\",\"x\":\""
    "VOO_2i5tkNavRNmGS2Os36TmEXwllzgXrvdxwHeadwo\"}"
    ","
    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"ec\",\"x\":\"RFw"
    "GeIGu7ZGGH64fYY2U16-AqtZfXe_Jghgq6kRF3SY\",\"y\":\"KPupAS2-3"
    "HzYA4N2-Dx76qlPgPMcucvcuvgJ6N_-qPA\"}"
    ","
    "{\"kty\":\"oct\",\"kid\":\"hs\",\"k\":\"ZnV6ei1zZWNyZXQtZnV6"
    "ei1zZWNyZXQtZnV6ei1zZWM\"}"
    "]}";

static const char fixed_token[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzIiwidHlwIjoiSldUIn0.eyJpc3Mi"
    "OiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwiYXVkIjoiZnV6eiIsInN1YiI6"
    "InUxIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.fNBef6U"
    "2kTpRY1bC_Iultxr2JYoTksv_LDPgDklSh8_eOriMt4Fndvh-jbiRv27cz2t"
    "9J1Ty3VN1bWLMv4xb_xtI4Tmd_F9lSVP_GAFVNcl3bWi1VyJFwMqGPbc4-QO"
    "2pQdb4XrZgxODDQHPiCb1fPlRh1vrRw54zONfYavHlGbwmLdXSxOZpJwZiw4"
    "LtpsgP-pUR9tnge8PMbVdbJ5z2osUUaNrrdkZc0YrsuGNSiUa-QAP4EbARQd"
    "qSU-1-4Jsq3LMGzK3wdDKly3sRqhq8elZMqN57IwvUME6phJicjxlFT76V8N"
    "XNN9YQyerYjf7b0jqoOqAXi5sJNrLulTSpQ";

static void
verify_and_check(const gw_jwt *t, const gw_keyset *ks)
{
    const char *const auds[] = { "fuzz" };
    gw_jwt_expect e = { "https://issuer.example", auds, 1, 1700000000 };
    const char *why;

    if (gw__jwt_verify(t, ks, &why) == 0)
        (void)gw__jwt_check_claims(t->claims, &e, &why);
}

static void
fuzz_token(const char *tok, size_t len)
{
    static gw_keyset *ks;
    const char *why;
    gw_jwt t;

    if (ks == NULL && gw__jwks_parse(fixed_jwks, strlen(fixed_jwks),
                                     GW_JWKS_ALLOW_OCT, &ks, &why) != 0)
        abort();                     /* the fixed key set must parse */
    if (gw__jwt_parse(tok, len, &t, &why) != 0)
        return;
    verify_and_check(&t, ks);
    gw__jwt_free(&t);
}

static void
fuzz_jwks(const char *doc, size_t len, unsigned flags)
{
    gw_keyset *ks;
    const char *why;
    gw_jwt t;

    if (gw__jwks_parse(doc, len, flags, &ks, &why) != 0)
        return;
    if (ks->n == 0)
        abort();                     /* success means a usable key */
    if (gw__jwt_parse(fixed_token, strlen(fixed_token), &t, &why) != 0)
        abort();
    verify_and_check(&t, ks);
    gw__jwt_free(&t);
    gw__keyset_unref(ks);
}

static void
fuzz_b64(const char *in, size_t len)
{
    kb_buf b = KB_BUF_INIT(1 << 20);
    unsigned char *raw;
    size_t n;

    if (gw__b64url_decode(in, len, false, &raw, &n) != 0)
        return;
    if (gw__b64url_encode(raw, n, &b) != 0 || b.len != len ||
        (len > 0 && memcmp(b.data, in, len) != 0)) {
        fprintf(stderr, "base64url round trip differs\n");
        abort();
    }
    kb_buf_free(&b);
    free(raw);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;

    if (size == 0 || size > GW_JWKS_MAX_DOC + 1)
        return 0;
    /* a NUL-terminated copy: the parsers get lengths, but PEM needs it */
    text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] == 't')
        fuzz_token(text, size - 1);
    else if (data[0] == 'j' || data[0] == 'J')
        fuzz_jwks(text, size - 1, data[0] == 'J' ? GW_JWKS_ALLOW_OCT : 0);
    else
        fuzz_b64(text, size - 1);
    free(text);
    return 0;
}
