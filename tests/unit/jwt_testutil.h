/*
 * jwt_testutil.h - keys, JWKS documents, certificates and signed tokens
 * made with OpenSSL for test_jwt.c and test_auth.c.  Include after
 * <cmocka.h> and "gateway/jwt.h" (or jwt.c).
 */
#ifndef KB_JWT_TESTUTIL_H
#define KB_JWT_TESTUTIL_H

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "RSA" (bits), "EC" (curve "P-256"/"P-384"), "ED25519". */
static inline EVP_PKEY *
tk_keygen(const char *type, int bits_or_0, const char *curve)
{
    EVP_PKEY *pk = NULL;

    if (strcmp(type, "RSA") == 0)
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits_or_0);
    else if (strcmp(type, "EC") == 0)
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    else
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(pk);
    return pk;
}

static inline char *
tk_b64(const void *p, size_t n)
{
    kb_buf b = KB_BUF_INIT(1 << 20);

    assert_int_equal(gw__b64url_encode(p, n, &b), 0);
    if (b.data == NULL)
        assert_int_equal(kb_buf_appends(&b, ""), 0);
    return kb_buf_detach(&b);
}

static inline char *
tk_bn_b64(EVP_PKEY *pk, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int n;
    char *out;

    assert_int_equal(EVP_PKEY_get_bn_param(pk, param, &bn), 1);
    n = pad > 0 ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    assert_true(n > 0);
    out = tk_b64(buf, (size_t)n);
    BN_free(bn);
    return out;
}

/* The public JWK of pk (new reference). */
static inline json_t *
tk_jwk(EVP_PKEY *pk, const char *kid, const char *alg)
{
    json_t *j = json_object();
    int id = EVP_PKEY_get_base_id(pk);

    if (id == EVP_PKEY_RSA) {
        char *n = tk_bn_b64(pk, OSSL_PKEY_PARAM_RSA_N, 0);
        char *e = tk_bn_b64(pk, OSSL_PKEY_PARAM_RSA_E, 0);
        json_object_set_new(j, "kty", json_string("RSA"));
        json_object_set_new(j, "n", json_string(n));
        json_object_set_new(j, "e", json_string(e));
        free(n);
        free(e);
    } else if (id == EVP_PKEY_EC) {
        size_t half = EVP_PKEY_get_bits(pk) == 256 ? 32 : 48;
        char *x = tk_bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, half);
        char *y = tk_bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_Y, half);
        json_object_set_new(j, "kty", json_string("EC"));
        json_object_set_new(j, "crv", json_string(half == 32 ? "P-256"
                                                             : "P-384"));
        json_object_set_new(j, "x", json_string(x));
        json_object_set_new(j, "y", json_string(y));
        free(x);
        free(y);
    } else {
        unsigned char raw[32];
        size_t rl = sizeof(raw);
        char *x;
        assert_int_equal(EVP_PKEY_get_raw_public_key(pk, raw, &rl), 1);
        x = tk_b64(raw, rl);
        json_object_set_new(j, "kty", json_string("OKP"));
        json_object_set_new(j, "crv", json_string("Ed25519"));
        json_object_set_new(j, "x", json_string(x));
        free(x);
    }
    if (kid != NULL)
        json_object_set_new(j, "kid", json_string(kid));
    if (alg != NULL)
        json_object_set_new(j, "alg", json_string(alg));
    json_object_set_new(j, "use", json_string("sig"));
    return j;
}

/* {"keys": [jwk...]} as text (malloc'd).  Steals the JWKs. */
static inline char *
tk_jwks(json_t *k1, json_t *k2)
{
    json_t *doc = json_object(), *keys = json_array();
    char *s;

    if (k1 != NULL)
        json_array_append_new(keys, k1);
    if (k2 != NULL)
        json_array_append_new(keys, k2);
    json_object_set_new(doc, "keys", keys);
    s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

/* A self-signed PEM certificate for pk (malloc'd). */
static inline char *
tk_cert_pem(EVP_PKEY *pk)
{
    X509 *x = X509_new();
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"securetoken", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    assert_int_equal(PEM_write_bio_X509(bio, x), 1);
    n = BIO_get_mem_data(bio, &data);
    out = strndup(data, (size_t)n);
    BIO_free(bio);
    X509_free(x);
    return out;
}

static inline const EVP_MD *
tk_md(const char *alg)
{
    if (strstr(alg, "384") != NULL)
        return EVP_sha384();
    if (strstr(alg, "512") != NULL)
        return EVP_sha512();
    return EVP_sha256();
}

/* Sign "header.payload" with pk (or secret for HS*) as JOSE alg wants. */
static inline char *
tk_sign(EVP_PKEY *pk, const void *secret, size_t secret_len,
        const char *alg, const char *input)
{
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);

    if (strncmp(alg, "HS", 2) == 0) {
        unsigned int ml = 0;
        assert_non_null(HMAC(tk_md(alg), secret, (int)secret_len,
                             (const unsigned char *)input, strlen(input), sig,
                             &ml));
        siglen = ml;
    } else {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pc = NULL;
        const EVP_MD *md = strcmp(alg, "EdDSA") == 0 ? NULL : tk_md(alg);
        assert_int_equal(EVP_DigestSignInit(m, &pc, md, NULL, pk), 1);
        if (alg[0] == 'P') {
            EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING);
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST);
            EVP_PKEY_CTX_set_rsa_mgf1_md(pc, md);
        }
        assert_int_equal(EVP_DigestSign(m, sig, &siglen,
                                        (const unsigned char *)input,
                                        strlen(input)), 1);
        EVP_MD_CTX_free(m);
        if (alg[0] == 'E' && alg[1] == 'S') {   /* DER → r || s */
            size_t half = strcmp(alg, "ES256") == 0 ? 32 : 48;
            const unsigned char *p = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
            assert_non_null(es);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)half);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + half, (int)half);
            siglen = 2 * half;
            ECDSA_SIG_free(es);
        }
    }
    return tk_b64(sig, siglen);
}

/* A compact JWS with the given header alg/kid and claims (JSON text). */
static inline char *
tk_token(EVP_PKEY *pk, const void *secret, size_t secret_len,
         const char *alg, const char *kid, const char *claims_json)
{
    json_t *h = json_object();
    char *hs, *h64, *p64, *input, *sig, *out;

    json_object_set_new(h, "alg", json_string(alg));
    json_object_set_new(h, "typ", json_string("JWT"));
    if (kid != NULL)
        json_object_set_new(h, "kid", json_string(kid));
    hs = json_dumps(h, JSON_COMPACT);
    h64 = tk_b64(hs, strlen(hs));
    p64 = tk_b64(claims_json, strlen(claims_json));
    assert_true(asprintf(&input, "%s.%s", h64, p64) > 0);
    sig = tk_sign(pk, secret, secret_len, alg, input);
    assert_true(asprintf(&out, "%s.%s", input, sig) > 0);
    free(hs);
    free(h64);
    free(p64);
    free(input);
    free(sig);
    json_decref(h);
    return out;
}

/* Claims text with exp/iat relative to now. */
static inline char *
tk_claims(const char *iss, const char *aud, const char *sub, long exp_in,
          long iat_ago)
{
    long now = (long)time(NULL);
    char *s;

    assert_true(asprintf(&s, "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\","
                             "\"iat\":%ld,\"exp\":%ld}",
                         iss, aud, sub, now - iat_ago, now + exp_in) > 0);
    return s;
}

#endif
