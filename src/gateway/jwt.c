/*
 * jwt.c - the pure half of the gateway's JWT support: base64url, compact
 * JWS parsing, JWK / JWKS / Google x509-map parsing into EVP_PKEYs, and
 * signature and claims checks.  No I/O, no shared state: any thread.
 * jwks.c fetches key documents and auth.c decides what a request needs.
 */
#include "gateway/jwt.h"
#include "core/err.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#define RSA_MIN_BITS 2048            /* RFC 7518 §3.3 */

/* ------------------------------------------------------------------------ */
/* base64url                                                                */

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
b64url_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

int
gw__b64url_decode(const char *in, size_t len, bool allow_padding,
                  unsigned char **out, size_t *outlen)
{
    unsigned char *buf;
    uint32_t acc = 0;
    size_t n = 0, bits = 0;

    *out = NULL;
    *outlen = 0;
    if (allow_padding)
        while (len > 0 && in[len - 1] == '=')
            len--;
    if (len % 4 == 1)
        return KB_EPARSE;
    buf = malloc(len / 4 * 3 + 3);
    if (buf == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0) {
            free(buf);
            return KB_EPARSE;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {                  /* non-canonical trailing bits */
        free(buf);
        return KB_EPARSE;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;
}

int
gw__b64url_encode(const void *in, size_t len, kb_buf *out)
{
    const unsigned char *p = in;
    char quad[4];
    int rc = 0;
    size_t i;

    for (i = 0; rc == 0 && i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        quad[0] = b64url_chars[v >> 18];
        quad[1] = b64url_chars[(v >> 12) & 63];
        quad[2] = b64url_chars[(v >> 6) & 63];
        quad[3] = b64url_chars[v & 63];
        rc = kb_buf_append(out, quad, 4);
    }
    if (rc == 0 && len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        quad[0] = b64url_chars[v >> 18];
        quad[1] = b64url_chars[(v >> 12) & 63];
        rc = kb_buf_append(out, quad, 2);
    } else if (rc == 0 && len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        quad[0] = b64url_chars[v >> 18];
        quad[1] = b64url_chars[(v >> 12) & 63];
        quad[2] = b64url_chars[(v >> 6) & 63];
        rc = kb_buf_append(out, quad, 3);
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Algorithms                                                               */

static const struct {
    const char *name;
    gw_jwt_alg  alg;
} alg_table[] = {
    { "RS256", GW_ALG_RS256 }, { "RS384", GW_ALG_RS384 },
    { "RS512", GW_ALG_RS512 }, { "PS256", GW_ALG_PS256 },
    { "PS384", GW_ALG_PS384 }, { "PS512", GW_ALG_PS512 },
    { "ES256", GW_ALG_ES256 }, { "ES384", GW_ALG_ES384 },
    { "EdDSA", GW_ALG_EDDSA }, { "HS256", GW_ALG_HS256 },
    { "HS384", GW_ALG_HS384 }, { "HS512", GW_ALG_HS512 },
};
#define NALGS (sizeof(alg_table) / sizeof(alg_table[0]))

gw_jwt_alg
gw__jwt_alg_parse(const char *name)
{
    if (name == NULL)
        return GW_ALG_NONE;
    for (size_t i = 0; i < NALGS; i++)
        if (strcmp(name, alg_table[i].name) == 0)
            return alg_table[i].alg;
    return GW_ALG_NONE;
}

const char *
gw__jwt_alg_name(gw_jwt_alg alg)
{
    for (size_t i = 0; i < NALGS; i++)
        if (alg_table[i].alg == alg)
            return alg_table[i].name;
    return "none";
}

/* The digest an algorithm signs with; NULL for EdDSA (pure). */
static const EVP_MD *
alg_md(gw_jwt_alg alg)
{
    switch (alg) {
    case GW_ALG_RS256: case GW_ALG_PS256: case GW_ALG_ES256:
    case GW_ALG_HS256:
        return EVP_sha256();
    case GW_ALG_RS384: case GW_ALG_PS384: case GW_ALG_ES384:
    case GW_ALG_HS384:
        return EVP_sha384();
    case GW_ALG_RS512: case GW_ALG_PS512: case GW_ALG_HS512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

/* Does a key of type kty serve alg? */
static bool
alg_fits_kty(gw_jwt_alg alg, gw_kty kty)
{
    switch (alg) {
    case GW_ALG_RS256: case GW_ALG_RS384: case GW_ALG_RS512:
    case GW_ALG_PS256: case GW_ALG_PS384: case GW_ALG_PS512:
        return kty == GW_KTY_RSA;
    case GW_ALG_ES256:
        return kty == GW_KTY_P256;
    case GW_ALG_ES384:
        return kty == GW_KTY_P384;
    case GW_ALG_EDDSA:
        return kty == GW_KTY_ED25519;
    case GW_ALG_HS256: case GW_ALG_HS384: case GW_ALG_HS512:
        return kty == GW_KTY_OCT;
    default:
        return false;
    }
}

/* ------------------------------------------------------------------------ */
/* Tokens                                                                   */

static json_t *
decode_json_segment(const char *seg, size_t len)
{
    unsigned char *raw;
    size_t rawlen;
    json_t *v;

    if (gw__b64url_decode(seg, len, false, &raw, &rawlen) != 0)
        return NULL;
    v = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (v != NULL && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

int
gw__jwt_parse(const char *token, size_t len, gw_jwt *out, const char **why)
{
    const char *dot1, *dot2, *alg;
    const json_t *kid;
    int rc;

    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (len == 0 || len > GW_JWT_MAX_TOKEN) {
        *why = "token empty or too long";
        return KB_EPARSE;
    }
    dot1 = memchr(token, '.', len);
    dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))
                        : NULL;
    if (dot1 == NULL || dot2 == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        *why = "not a compact JWS (three segments)";
        return KB_EPARSE;
    }
    out->header = decode_json_segment(token, (size_t)(dot1 - token));
    if (out->header == NULL) {
        *why = "header is not base64url JSON object";
        rc = KB_EPARSE;
        goto out_free;
    }
    alg = json_string_value(json_object_get(out->header, "alg"));
    if (alg == NULL) {
        *why = "header has no alg";
        rc = KB_EPARSE;
        goto out_free;
    }
    out->alg = gw__jwt_alg_parse(alg);
    if (out->alg == GW_ALG_NONE) {
        *why = strcmp(alg, "none") == 0 ? "alg none refused"
                                        : "unsupported alg";
        rc = KB_EINVAL;
        goto out_free;
    }
    if (json_object_get(out->header, "crit") != NULL) {
        *why = "crit header parameters are not supported";
        rc = KB_EINVAL;
        goto out_free;
    }
    kid = json_object_get(out->header, "kid");
    if (kid != NULL && !json_is_string(kid)) {
        *why = "kid is not a string";
        rc = KB_EPARSE;
        goto out_free;
    }
    out->kid = json_string_value(kid);
    out->payload_b64 = dot1 + 1;
    out->payload_b64_len = (size_t)(dot2 - dot1 - 1);
    out->claims = decode_json_segment(out->payload_b64, out->payload_b64_len);
    if (out->claims == NULL) {
        *why = "payload is not base64url JSON object";
        rc = KB_EPARSE;
        goto out_free;
    }
    rc = gw__b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), false,
                           &out->sig, &out->sig_len);
    if (rc != 0 || out->sig_len == 0) {
        *why = "signature is not base64url";
        rc = rc == KB_ENOMEM ? rc : KB_EPARSE;
        goto out_free;
    }
    out->signing_input = token;
    out->signing_len = (size_t)(dot2 - token);
    return 0;

out_free:
    gw__jwt_free(out);
    return rc;
}

void
gw__jwt_free(gw_jwt *t)
{
    json_decref(t->header);
    json_decref(t->claims);
    free(t->sig);
    memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------------------ */
/* Signatures                                                               */

/* JOSE ECDSA signature (r || s, each `half` bytes) → DER.  malloc'd. */
static unsigned char *
ecdsa_jose_to_der(const unsigned char *sig, size_t half, size_t *derlen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL);
    BIGNUM *s = BN_bin2bn(sig + half, (int)half, NULL);
    unsigned char *der = NULL;
    int n;

    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NULL;
    }
    n = i2d_ECDSA_SIG(es, &der);     /* es owns r and s now */
    ECDSA_SIG_free(es);
    if (n <= 0)
        return NULL;
    *derlen = (size_t)n;
    return der;
}

static bool
verify_pkey(const gw_jwt *t, const gw_jwk *k)
{
    const EVP_MD *md = alg_md(t->alg);
    const unsigned char *sig = t->sig;
    unsigned char *der = NULL;
    size_t siglen = t->sig_len;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *mctx;
    bool ok = false;

    if (t->alg == GW_ALG_ES256 || t->alg == GW_ALG_ES384) {
        size_t half = t->alg == GW_ALG_ES256 ? 32 : 48;
        if (t->sig_len != 2 * half)
            return false;
        der = ecdsa_jose_to_der(t->sig, half, &siglen);
        if (der == NULL)
            return false;
        sig = der;
    }
    mctx = EVP_MD_CTX_new();
    if (mctx == NULL)
        goto out_free_der;
    if (EVP_DigestVerifyInit(mctx, &pctx, md, NULL, k->pkey) != 1)
        goto out_free_ctx;
    if (t->alg == GW_ALG_PS256 || t->alg == GW_ALG_PS384 ||
        t->alg == GW_ALG_PS512) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1)
            goto out_free_ctx;
    } else if (k->kty == GW_KTY_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
            goto out_free_ctx;
    }
    ok = EVP_DigestVerify(mctx, sig, siglen,
                          (const unsigned char *)t->signing_input,
                          t->signing_len) == 1;
out_free_ctx:
    EVP_MD_CTX_free(mctx);
out_free_der:
    OPENSSL_free(der);
    return ok;
}

static bool
verify_hmac(const gw_jwt *t, const gw_jwk *k)
{
    const EVP_MD *md = alg_md(t->alg);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;

    if (HMAC(md, k->secret, (int)k->secret_len,
             (const unsigned char *)t->signing_input, t->signing_len, mac,
             &maclen) == NULL)
        return false;
    return maclen == t->sig_len && CRYPTO_memcmp(mac, t->sig, maclen) == 0;
}

/* Is key k allowed to verify t at all (type, strength, declared alg)? */
static bool
key_fits(const gw_jwt *t, const gw_jwk *k)
{
    if (!alg_fits_kty(t->alg, k->kty))
        return false;
    if (k->alg != GW_ALG_NONE && k->alg != t->alg)
        return false;
    if (k->kty == GW_KTY_OCT)       /* RFC 7518 §3.2: key >= hash size */
        return k->secret_len >= (size_t)EVP_MD_get_size(alg_md(t->alg));
    return true;
}

int
gw__jwt_verify(const gw_jwt *t, const gw_keyset *ks, const char **why)
{
    bool kid_seen = false, fit_seen = false;

    *why = NULL;
    for (size_t i = 0; ks != NULL && i < ks->n; i++) {
        const gw_jwk *k = &ks->keys[i];

        if (t->kid != NULL && k->kid != NULL && strcmp(t->kid, k->kid) != 0)
            continue;
        kid_seen = true;
        if (!key_fits(t, k))
            continue;
        fit_seen = true;
        if (k->kty == GW_KTY_OCT ? verify_hmac(t, k) : verify_pkey(t, k))
            return 0;
    }
    if (!kid_seen) {
        *why = "no key with the token's kid";
        return KB_ENOTFOUND;
    }
    *why = fit_seen ? "bad signature" : "no key fits the token's alg";
    return KB_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* Claims                                                                   */

/* A NumericDate claim: false when present but not a number. */
static bool
numeric_date(const json_t *claims, const char *name, bool *present,
             int64_t *out)
{
    const json_t *v = json_object_get(claims, name);

    *present = v != NULL;
    if (v == NULL)
        return true;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d > -9.0e15 && d < 9.0e15))   /* also rejects NaN */
            return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

static bool
audience_expected(const gw_jwt_expect *e, const char *aud)
{
    for (size_t i = 0; i < e->naudiences; i++)
        if (strcmp(e->audiences[i], aud) == 0)
            return true;
    return false;
}

int
gw__jwt_check_claims(const json_t *claims, const gw_jwt_expect *e,
                     const char **why)
{
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    const json_t *aud = json_object_get(claims, "aud");
    bool present, aud_ok = false;
    int64_t t;

    *why = NULL;
    if (iss == NULL || e->issuer == NULL || strcmp(iss, e->issuer) != 0) {
        *why = "issuer mismatch";
        return KB_EINVAL;
    }
    if (json_is_string(aud)) {
        aud_ok = audience_expected(e, json_string_value(aud));
    } else if (json_is_array(aud)) {
        size_t i;
        const json_t *a;
        json_array_foreach(aud, i, a)
            if (json_is_string(a) && audience_expected(e, json_string_value(a)))
                aud_ok = true;
    }
    if (!aud_ok) {
        *why = "audience not allowed";
        return KB_EINVAL;
    }
    if (!numeric_date(claims, "exp", &present, &t) || !present) {
        *why = "exp missing or not a number";
        return KB_EINVAL;
    }
    if (e->now > t + GW_JWT_SKEW_S) {
        *why = "token expired";
        return KB_EINVAL;
    }
    if (!numeric_date(claims, "nbf", &present, &t)) {
        *why = "nbf not a number";
        return KB_EINVAL;
    }
    if (present && e->now + GW_JWT_SKEW_S < t) {
        *why = "token not yet valid (nbf)";
        return KB_EINVAL;
    }
    if (!numeric_date(claims, "iat", &present, &t)) {
        *why = "iat not a number";
        return KB_EINVAL;
    }
    if (present && e->now + GW_JWT_SKEW_S < t) {
        *why = "token issued in the future (iat)";
        return KB_EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */

static void
jwk_clear(gw_jwk *k)
{
    free(k->kid);
    EVP_PKEY_free(k->pkey);
    if (k->secret != NULL)
        OPENSSL_cleanse(k->secret, k->secret_len);
    free(k->secret);
    memset(k, 0, sizeof(*k));
}

gw_keyset *
gw__keyset_ref(gw_keyset *ks)
{
    if (ks != NULL)
        atomic_fetch_add(&ks->refs, 1);
    return ks;
}

void
gw__keyset_unref(gw_keyset *ks)
{
    if (ks == NULL || atomic_fetch_sub(&ks->refs, 1) != 1)
        return;
    for (size_t i = 0; i < ks->n; i++)
        jwk_clear(&ks->keys[i]);
    free(ks);
}

static gw_keyset *
keyset_new(size_t cap)
{
    gw_keyset *ks = calloc(1, sizeof(*ks) + cap * sizeof(gw_jwk));

    if (ks != NULL)
        atomic_init(&ks->refs, 1);
    return ks;
}

int
gw__keyset_secret(const void *secret, size_t len, gw_keyset **out)
{
    gw_keyset *ks;

    *out = NULL;
    if (len < 32)
        return KB_EINVAL;
    ks = keyset_new(1);
    if (ks == NULL)
        return KB_ENOMEM;
    ks->keys[0].kty = GW_KTY_OCT;
    ks->keys[0].secret = malloc(len);
    if (ks->keys[0].secret == NULL) {
        gw__keyset_unref(ks);
        return KB_ENOMEM;
    }
    memcpy(ks->keys[0].secret, secret, len);
    ks->keys[0].secret_len = len;
    ks->n = 1;
    *out = ks;
    return 0;
}

/* A base64url member of a JWK, decoded. */
static unsigned char *
jwk_bytes(const json_t *jwk, const char *name, size_t *len)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    unsigned char *out;

    if (s == NULL || gw__b64url_decode(s, strlen(s), true, &out, len) != 0)
        return NULL;
    return out;
}

static EVP_PKEY *
pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pk = NULL;

    if (params != NULL && ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pk;
}

static EVP_PKEY *
jwk_rsa(const json_t *jwk)
{
    size_t nlen = 0, elen = 0;
    unsigned char *n = jwk_bytes(jwk, "n", &nlen);
    unsigned char *e = jwk_bytes(jwk, "e", &elen);
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pk = NULL;

    if (n == NULL || e == NULL || nlen == 0 || elen == 0 || nlen > 2048)
        goto out_free;
    bn = BN_bin2bn(n, (int)nlen, NULL);
    be = BN_bin2bn(e, (int)elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn == NULL || be == NULL || bld == NULL ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1)
        goto out_free;
    pk = pkey_fromdata("RSA", bld);
out_free:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pk;
}

static EVP_PKEY *
jwk_ec(const json_t *jwk, gw_kty kty)
{
    size_t half = kty == GW_KTY_P256 ? 32 : 48, xlen = 0, ylen = 0;
    unsigned char *x = jwk_bytes(jwk, "x", &xlen);
    unsigned char *y = jwk_bytes(jwk, "y", &ylen);
    unsigned char point[1 + 2 * 48];
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pk = NULL;

    if (x == NULL || y == NULL || xlen != half || ylen != half)
        goto out_free;
    point[0] = 0x04;                 /* uncompressed */
    memcpy(point + 1, x, half);
    memcpy(point + 1 + half, y, half);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL ||
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                        kty == GW_KTY_P256 ? "P-256" : "P-384",
                                        0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
                                         1 + 2 * half) != 1)
        goto out_free;
    pk = pkey_fromdata("EC", bld);
out_free:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pk;
}

static EVP_PKEY *
jwk_okp(const json_t *jwk)
{
    size_t xlen = 0;
    unsigned char *x = jwk_bytes(jwk, "x", &xlen);
    EVP_PKEY *pk = NULL;

    if (x != NULL && xlen == 32)
        pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen);
    free(x);
    return pk;
}

/* The kty of an EVP_PKEY we can use; 0 otherwise (or RSA too short). */
static gw_kty
pkey_kty(EVP_PKEY *pk)
{
    char group[64];
    size_t glen = 0;

    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:
        return EVP_PKEY_get_bits(pk) >= RSA_MIN_BITS ? GW_KTY_RSA : 0;
    case EVP_PKEY_ED25519:
        return GW_KTY_ED25519;
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), &glen) != 1)
            return 0;
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            return GW_KTY_P256;
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            return GW_KTY_P384;
        return 0;
    default:
        return 0;
    }
}

/* Does "use" / "key_ops" allow verifying signatures? */
static bool
jwk_for_signatures(const json_t *jwk)
{
    const json_t *use = json_object_get(jwk, "use");
    const json_t *ops = json_object_get(jwk, "key_ops");

    if (use != NULL &&
        (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return false;
    if (ops != NULL) {
        size_t i;
        const json_t *op;
        if (!json_is_array(ops))
            return false;
        json_array_foreach(ops, i, op)
            if (json_is_string(op) &&
                strcmp(json_string_value(op), "verify") == 0)
                return true;
        return false;
    }
    return true;
}

/* One JWK into k.  false: skip it (unsupported or malformed). */
static bool
jwk_parse(const json_t *jwk, unsigned flags, gw_jwk *k)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const json_t *kid = json_object_get(jwk, "kid");
    const json_t *alg = json_object_get(jwk, "alg");

    memset(k, 0, sizeof(*k));
    if (!json_is_object(jwk) || kty == NULL || !jwk_for_signatures(jwk))
        return false;
    if (kid != NULL && !json_is_string(kid))
        return false;
    if (alg != NULL) {
        k->alg = gw__jwt_alg_parse(json_string_value(alg));
        if (k->alg == GW_ALG_NONE)
            return false;
    }
    if (strcmp(kty, "RSA") == 0) {
        k->kty = GW_KTY_RSA;
        k->pkey = jwk_rsa(jwk);
    } else if (strcmp(kty, "EC") == 0 && crv != NULL &&
               (strcmp(crv, "P-256") == 0 || strcmp(crv, "P-384") == 0)) {
        k->kty = strcmp(crv, "P-256") == 0 ? GW_KTY_P256 : GW_KTY_P384;
        k->pkey = jwk_ec(jwk, k->kty);
    } else if (strcmp(kty, "OKP") == 0 && crv != NULL &&
               strcmp(crv, "Ed25519") == 0) {
        k->kty = GW_KTY_ED25519;
        k->pkey = jwk_okp(jwk);
    } else if (strcmp(kty, "oct") == 0 && (flags & GW_JWKS_ALLOW_OCT)) {
        k->kty = GW_KTY_OCT;
        k->secret = jwk_bytes(jwk, "k", &k->secret_len);
        if (k->secret == NULL || k->secret_len < 32) {
            jwk_clear(k);
            return false;
        }
    } else {
        return false;
    }
    if (k->kty != GW_KTY_OCT &&
        (k->pkey == NULL || pkey_kty(k->pkey) != k->kty)) {
        jwk_clear(k);
        return false;
    }
    if (k->alg != GW_ALG_NONE && !alg_fits_kty(k->alg, k->kty)) {
        jwk_clear(k);
        return false;
    }
    if (kid != NULL && (k->kid = strdup(json_string_value(kid))) == NULL) {
        jwk_clear(k);
        return false;
    }
    return true;
}

/* A PEM certificate or public key (Google's x509 map values). */
static bool
pem_parse(const char *kid, const char *pem, gw_jwk *k)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *cert;

    memset(k, 0, sizeof(*k));
    if (bio == NULL)
        return false;
    if (strstr(pem, "-----BEGIN CERTIFICATE-----") != NULL) {
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (cert != NULL)
            k->pkey = X509_get_pubkey(cert);
        X509_free(cert);
    } else if (strstr(pem, "-----BEGIN PUBLIC KEY-----") != NULL) {
        k->pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    }
    BIO_free(bio);
    if (k->pkey == NULL || (k->kty = pkey_kty(k->pkey)) == 0 ||
        (k->kid = strdup(kid)) == NULL) {
        jwk_clear(k);
        return false;
    }
    return true;
}

int
gw__jwks_parse(const char *doc, size_t len, unsigned flags, gw_keyset **out,
               const char **why)
{
    const json_t *keys, *v;
    const char *name;
    gw_keyset *ks;
    json_t *root;
    size_t i;

    *out = NULL;
    *why = NULL;
    if (len > GW_JWKS_MAX_DOC) {
        *why = "key document too large";
        return KB_ETOOBIG;
    }
    root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        *why = "key document is not a JSON object";
        return KB_EPARSE;
    }
    ks = keyset_new(GW_JWKS_MAX_KEYS);
    if (ks == NULL) {
        json_decref(root);
        return KB_ENOMEM;
    }
    keys = json_object_get(root, "keys");
    if (json_is_array(keys)) {                     /* RFC 7517 JWK Set */
        json_array_foreach(keys, i, v)
            if (ks->n < GW_JWKS_MAX_KEYS && jwk_parse(v, flags, &ks->keys[ks->n]))
                ks->n++;
    } else if (keys == NULL && json_object_get(root, "kty") != NULL) {
        if (jwk_parse(root, flags, &ks->keys[0]))  /* a lone JWK */
            ks->n = 1;
    } else if (keys == NULL) {                     /* Google's x509 map */
        json_object_foreach(root, name, v) {
            const char *pem = json_string_value(v);
            if (pem != NULL && ks->n < GW_JWKS_MAX_KEYS &&
                pem_parse(name, pem, &ks->keys[ks->n]))
                ks->n++;
        }
    }
    json_decref(root);
    if (ks->n == 0) {
        gw__keyset_unref(ks);
        *why = "no usable key in the key document";
        return KB_EPARSE;
    }
    *out = ks;
    return 0;
}
