/*
 * test_jwt.c - the pure JWT layer (jwt.c): base64url, token parsing, JWKS
 * and Google x509 parsing, every supported algorithm with keys made here
 * by OpenSSL, the attacks a verifier must refuse, and claims checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "gateway/jwt.c"
#include "jwt_testutil.h"

#define ISS "https://issuer.example"
#define AUD "kiban-test"

/* ------------------------------------------------------------------------ */

static void
b64url_round_trips_and_is_strict(void **state)
{
    unsigned char *out;
    size_t n;
    char *enc;

    (void)state;
    for (size_t len = 0; len < 40; len++) {
        unsigned char in[40];
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + 250);
        enc = tk_b64(in, len);
        assert_null(strchr(enc, '='));
        assert_int_equal(gw__b64url_decode(enc, strlen(enc), false, &out, &n),
                         0);
        assert_int_equal(n, len);
        assert_memory_equal(out, in, len);
        free(out);
        free(enc);
    }
    /* "+" and "/" are base64, not base64url */
    assert_int_equal(gw__b64url_decode("ab+/", 4, false, &out, &n), KB_EPARSE);
    /* padding only where allowed */
    assert_int_equal(gw__b64url_decode("YQ==", 4, false, &out, &n), KB_EPARSE);
    assert_int_equal(gw__b64url_decode("YQ==", 4, true, &out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 'a');
    free(out);
    /* length 1 mod 4 is impossible; "YR" has non-zero spare bits */
    assert_int_equal(gw__b64url_decode("YWJjZ", 5, false, &out, &n),
                     KB_EPARSE);
    assert_int_equal(gw__b64url_decode("YR", 2, false, &out, &n), KB_EPARSE);
}

static void
parse_refuses_malformed_tokens(void **state)
{
    const char *why;
    gw_jwt t;
    char *h_none = tk_b64("{\"alg\":\"none\"}", 14);
    char *h_crit = tk_b64("{\"alg\":\"RS256\",\"crit\":[\"b64\"]}", 30);
    char *h_dup = tk_b64("{\"alg\":\"RS256\",\"alg\":\"HS256\"}", 29);
    char *h_kid = tk_b64("{\"alg\":\"RS256\",\"kid\":7}", 23);
    char *h_ok = tk_b64("{\"alg\":\"RS256\"}", 15);
    char *p = tk_b64("{\"iss\":\"x\"}", 11);
    char *p_arr = tk_b64("[1]", 3);
    char buf[512];

    (void)state;
    assert_int_equal(gw__jwt_parse("abc", 3, &t, &why), KB_EPARSE);
    assert_int_equal(gw__jwt_parse("a.b", 3, &t, &why), KB_EPARSE);
    assert_int_equal(gw__jwt_parse("a.b.c.d", 7, &t, &why), KB_EPARSE);
    snprintf(buf, sizeof(buf), "%s.%s.", h_none, p);
    assert_int_equal(gw__jwt_parse(buf, strlen(buf), &t, &why), KB_EINVAL);
    assert_string_equal(why, "alg none refused");
    snprintf(buf, sizeof(buf), "%s.%s.AAAA", h_crit, p);
    assert_int_equal(gw__jwt_parse(buf, strlen(buf), &t, &why), KB_EINVAL);
    snprintf(buf, sizeof(buf), "%s.%s.AAAA", h_dup, p);
    assert_int_equal(gw__jwt_parse(buf, strlen(buf), &t, &why), KB_EPARSE);
    snprintf(buf, sizeof(buf), "%s.%s.AAAA", h_kid, p);
    assert_int_equal(gw__jwt_parse(buf, strlen(buf), &t, &why), KB_EPARSE);
    snprintf(buf, sizeof(buf), "%s.%s.AAAA", h_ok, p_arr);
    assert_int_equal(gw__jwt_parse(buf, strlen(buf), &t, &why), KB_EPARSE);
    snprintf(buf, sizeof(buf), "%s.%s.", h_ok, p);     /* empty signature */
    assert_int_equal(gw__jwt_parse(buf, strlen(buf), &t, &why), KB_EPARSE);
    snprintf(buf, sizeof(buf), "%s.%s.AAAA", h_ok, p);
    assert_int_equal(gw__jwt_parse(buf, strlen(buf), &t, &why), 0);
    assert_int_equal(t.alg, GW_ALG_RS256);
    assert_null(t.kid);
    assert_int_equal(t.sig_len, 3);
    assert_int_equal(t.signing_len, strlen(h_ok) + 1 + strlen(p));
    assert_memory_equal(t.payload_b64, p, strlen(p));
    gw__jwt_free(&t);
    /* over the size limit */
    {
        size_t big = GW_JWT_MAX_TOKEN + 1;
        char *tok = malloc(big + 1);
        memset(tok, 'A', big);
        tok[10] = '.';
        tok[20] = '.';
        tok[big] = '\0';
        assert_int_equal(gw__jwt_parse(tok, big, &t, &why), KB_EPARSE);
        free(tok);
    }
    free(h_none); free(h_crit); free(h_dup); free(h_kid); free(h_ok);
    free(p); free(p_arr);
}

/* Sign with alg, verify against a JWKS holding pk's public JWK. */
static void
round_trip(EVP_PKEY *pk, const char *alg, bool with_jwk_alg)
{
    char *claims = tk_claims(ISS, AUD, "user-1", 3600, 0);
    char *tok = tk_token(pk, NULL, 0, alg, "k1", claims);
    char *doc = tk_jwks(tk_jwk(pk, "k1", with_jwk_alg ? alg : NULL), NULL);
    gw_keyset *ks;
    const char *why;
    gw_jwt t;

    assert_int_equal(gw__jwks_parse(doc, strlen(doc), 0, &ks, &why), 0);
    assert_int_equal(ks->n, 1);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_string_equal(t.kid, "k1");
    assert_int_equal(gw__jwt_verify(&t, ks, &why), 0);
    gw__jwt_free(&t);

    /* another payload under this token's signature: refused */
    {
        char *other_claims = tk_claims(ISS, AUD, "user-2", 3600, 0);
        char *other = tk_token(pk, NULL, 0, alg, "k1", other_claims);
        char *spliced;
        *strrchr(other, '.') = '\0';
        assert_true(asprintf(&spliced, "%s%s", other, strrchr(tok, '.')) > 0);
        assert_int_equal(gw__jwt_parse(spliced, strlen(spliced), &t, &why), 0);
        assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
        assert_string_equal(why, "bad signature");
        gw__jwt_free(&t);
        free(other_claims);
        free(other);
        free(spliced);
    }
    gw__keyset_unref(ks);
    free(claims);
    free(tok);
    free(doc);
}

static void
every_algorithm_verifies(void **state)
{
    EVP_PKEY *rsa = tk_keygen("RSA", 2048, NULL);
    EVP_PKEY *p256 = tk_keygen("EC", 0, "P-256");
    EVP_PKEY *p384 = tk_keygen("EC", 0, "P-384");
    EVP_PKEY *ed = tk_keygen("ED25519", 0, NULL);
    static const char *const rsa_algs[] = {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    };

    (void)state;
    for (size_t i = 0; i < 6; i++) {
        round_trip(rsa, rsa_algs[i], false);
        round_trip(rsa, rsa_algs[i], true);
    }
    round_trip(p256, "ES256", true);
    round_trip(p384, "ES384", false);
    round_trip(ed, "EdDSA", true);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
}

static void
hmac_secret_verifies_and_must_be_long(void **state)
{
    const char *secret = "0123456789abcdef0123456789abcdef";   /* 32 bytes */
    char *claims = tk_claims(ISS, AUD, "u", 60, 0);
    char *tok = tk_token(NULL, secret, 32, "HS256", NULL, claims);
    char *tok512 = tk_token(NULL, secret, 32, "HS512", NULL, claims);
    char *wrong = tk_token(NULL, "0123456789abcdef0123456789abcdeX", 32,
                           "HS256", NULL, claims);
    gw_keyset *ks;
    const char *why;
    gw_jwt t;

    (void)state;
    assert_int_equal(gw__keyset_secret(secret, 31, &ks), KB_EINVAL);
    assert_int_equal(gw__keyset_secret(secret, 32, &ks), 0);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), 0);
    gw__jwt_free(&t);
    assert_int_equal(gw__jwt_parse(wrong, strlen(wrong), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
    gw__jwt_free(&t);
    /* HS512 needs a 64-byte key (RFC 7518 §3.2) */
    assert_int_equal(gw__jwt_parse(tok512, strlen(tok512), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
    assert_string_equal(why, "no key fits the token's alg");
    gw__jwt_free(&t);
    gw__keyset_unref(ks);
    free(claims);
    free(tok);
    free(tok512);
    free(wrong);
}

static void
algorithm_and_key_type_must_agree(void **state)
{
    EVP_PKEY *rsa = tk_keygen("RSA", 2048, NULL);
    EVP_PKEY *p256 = tk_keygen("EC", 0, "P-256");
    char *claims = tk_claims(ISS, AUD, "u", 60, 0);
    char *doc = tk_jwks(tk_jwk(rsa, "r", NULL), tk_jwk(p256, "e", "ES256"));
    gw_keyset *ks;
    const char *why;
    gw_jwt t;
    char *tok;

    (void)state;
    assert_int_equal(gw__jwks_parse(doc, strlen(doc), 0, &ks, &why), 0);
    assert_int_equal(ks->n, 2);

    /* the classic confusion: HS256 "signed" with the RSA public key's
     * bytes (its JWK n) as the HMAC secret must not verify */
    {
        BIO *bio = BIO_new(BIO_s_mem());
        char *pem;
        long plen;
        assert_int_equal(PEM_write_bio_PUBKEY(bio, rsa), 1);
        plen = BIO_get_mem_data(bio, &pem);
        tok = tk_token(NULL, pem, (size_t)plen, "HS256", "r", claims);
        BIO_free(bio);
        assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
        assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
        assert_string_equal(why, "no key fits the token's alg");
        gw__jwt_free(&t);
        free(tok);
    }
    /* RS256 header on an EC key's kid */
    tok = tk_token(rsa, NULL, 0, "RS256", "e", claims);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
    gw__jwt_free(&t);
    free(tok);
    /* a PSS signature presented as RS256 */
    tok = tk_token(rsa, NULL, 0, "PS256", "r", claims);
    {
        char *sig = strrchr(tok, '.');
        char *rs = tk_token(rsa, NULL, 0, "RS256", "r", claims);
        char *mixed;
        *strrchr(rs, '.') = '\0';
        assert_true(asprintf(&mixed, "%s%s", rs, sig) > 0);
        assert_int_equal(gw__jwt_parse(mixed, strlen(mixed), &t, &why), 0);
        assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
        gw__jwt_free(&t);
        free(rs);
        free(mixed);
    }
    free(tok);
    /* an ES256 key whose JWK says alg ES256 refuses an ES384 header */
    tok = tk_token(p256, NULL, 0, "ES256", "e", claims);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), 0);
    t.alg = GW_ALG_ES384;
    assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
    gw__jwt_free(&t);
    free(tok);
    /* unknown kid: the caller may refetch */
    tok = tk_token(rsa, NULL, 0, "RS256", "rotated", claims);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_ENOTFOUND);
    gw__jwt_free(&t);
    free(tok);
    /* no kid at all: every fitting key is tried */
    tok = tk_token(rsa, NULL, 0, "RS256", NULL, claims);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), 0);
    gw__jwt_free(&t);
    free(tok);

    gw__keyset_unref(ks);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p256);
    free(claims);
    free(doc);
}

static void
jwks_skips_what_it_cannot_use(void **state)
{
    EVP_PKEY *small = tk_keygen("RSA", 1024, NULL);
    EVP_PKEY *ed = tk_keygen("ED25519", 0, NULL);
    json_t *enc = tk_jwk(ed, "enc", NULL);
    char *doc;
    gw_keyset *ks;
    const char *why;

    (void)state;
    json_object_set_new(enc, "use", json_string("enc"));
    /* a 1024-bit RSA key and an encryption key: nothing usable */
    doc = tk_jwks(tk_jwk(small, "s", NULL), enc);
    assert_int_equal(gw__jwks_parse(doc, strlen(doc), 0, &ks, &why),
                     KB_EPARSE);
    free(doc);
    /* oct keys only from local files */
    doc = strdup("{\"keys\":[{\"kty\":\"oct\",\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAx"
                 "MjM0NTY3ODlhYmNkZWY\"}]}");
    assert_int_equal(gw__jwks_parse(doc, strlen(doc), 0, &ks, &why),
                     KB_EPARSE);
    assert_int_equal(gw__jwks_parse(doc, strlen(doc), GW_JWKS_ALLOW_OCT, &ks,
                                    &why), 0);
    assert_int_equal(ks->keys[0].kty, GW_KTY_OCT);
    assert_int_equal(ks->keys[0].secret_len, 32);
    gw__keyset_unref(ks);
    free(doc);
    /* a lone JWK is a set of one; junk is not a key set */
    {
        json_t *j = tk_jwk(ed, "solo", NULL);
        doc = json_dumps(j, 0);
        json_decref(j);
        assert_int_equal(gw__jwks_parse(doc, strlen(doc), 0, &ks, &why), 0);
        assert_string_equal(ks->keys[0].kid, "solo");
        gw__keyset_unref(ks);
        free(doc);
    }
    assert_int_equal(gw__jwks_parse("[]", 2, 0, &ks, &why), KB_EPARSE);
    assert_int_equal(gw__jwks_parse("{\"keys\":[]}", 11, 0, &ks, &why),
                     KB_EPARSE);
    assert_int_equal(gw__jwks_parse("{", 1, 0, &ks, &why), KB_EPARSE);
    assert_int_equal(gw__jwks_parse("{}", GW_JWKS_MAX_DOC + 1, 0, &ks, &why),
                     KB_ETOOBIG);
    /* an EC point that is not on the curve */
    assert_int_equal(gw__jwks_parse(
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
        "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
        "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}",
        strlen("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
               "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
               "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}"),
        0, &ks, &why), KB_EPARSE);
    EVP_PKEY_free(small);
    EVP_PKEY_free(ed);
}

/* Google's securetoken form: {"kid": "-----BEGIN CERTIFICATE-----..."} */
static void
firebase_x509_map_verifies(void **state)
{
    EVP_PKEY *k1 = tk_keygen("RSA", 2048, NULL);
    EVP_PKEY *k2 = tk_keygen("RSA", 2048, NULL);
    char *c1 = tk_cert_pem(k1), *c2 = tk_cert_pem(k2);
    json_t *map = json_object();
    char *doc, *tok;
    const char *iss = "https://securetoken.google.com/my-project";
    char *claims = tk_claims(iss, "my-project", "firebase-uid", 3600, 10);
    gw_keyset *ks;
    const char *why;
    gw_jwt t;
    gw_jwt_expect e = { iss, (const char *const[]){ "my-project" }, 1,
                        (int64_t)time(NULL) };

    (void)state;
    json_object_set_new(map, "aaa111", json_string(c1));
    json_object_set_new(map, "bbb222", json_string(c2));
    doc = json_dumps(map, 0);
    assert_int_equal(gw__jwks_parse(doc, strlen(doc), 0, &ks, &why), 0);
    assert_int_equal(ks->n, 2);
    tok = tk_token(k2, NULL, 0, "RS256", "bbb222", claims);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), 0);
    assert_int_equal(gw__jwt_check_claims(t.claims, &e, &why), 0);
    gw__jwt_free(&t);
    free(tok);
    /* signed by k1 but naming k2's kid */
    tok = tk_token(k1, NULL, 0, "RS256", "bbb222", claims);
    assert_int_equal(gw__jwt_parse(tok, strlen(tok), &t, &why), 0);
    assert_int_equal(gw__jwt_verify(&t, ks, &why), KB_EINVAL);
    gw__jwt_free(&t);
    free(tok);
    gw__keyset_unref(ks);
    json_decref(map);
    free(doc);
    free(c1);
    free(c2);
    free(claims);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

static int
check(const char *claims_json, const char *const *auds, size_t naud,
      const char **why)
{
    json_t *c = json_loads(claims_json, 0, NULL);
    gw_jwt_expect e = { ISS, auds, naud, 1000000 };
    int rc;

    assert_non_null(c);
    rc = gw__jwt_check_claims(c, &e, why);
    json_decref(c);
    return rc;
}

static void
claims_are_checked_with_skew(void **state)
{
    const char *const auds[] = { "other", AUD };
    const char *why;

    (void)state;
    /* now = 1000000 */
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                           "\"exp\":1000100}", auds, 2, &why), 0);
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":[\"x\",\"" AUD "\"],"
                           "\"exp\":1000100.5}", auds, 2, &why), 0);
    /* expired 30 s ago: inside the 60 s skew */
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                           "\"exp\":999970}", auds, 2, &why), 0);
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                           "\"exp\":999939}", auds, 2, &why), KB_EINVAL);
    assert_string_equal(why, "token expired");
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"}",
                           auds, 2, &why), KB_EINVAL);
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                           "\"exp\":\"1000100\"}", auds, 2, &why), KB_EINVAL);
    /* nbf / iat in the future, beyond and within the skew */
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                           "\"exp\":1000100,\"nbf\":1000061}", auds, 2, &why),
                     KB_EINVAL);
    assert_string_equal(why, "token not yet valid (nbf)");
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                           "\"exp\":1000100,\"nbf\":1000059}", auds, 2, &why),
                     0);
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                           "\"exp\":1000100,\"iat\":1000500}", auds, 2, &why),
                     KB_EINVAL);
    /* wrong issuer, wrong audience, audience of the wrong type */
    assert_int_equal(check("{\"iss\":\"https://evil\",\"aud\":\"" AUD "\","
                           "\"exp\":1000100}", auds, 2, &why), KB_EINVAL);
    assert_string_equal(why, "issuer mismatch");
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":\"nope\","
                           "\"exp\":1000100}", auds, 2, &why), KB_EINVAL);
    assert_string_equal(why, "audience not allowed");
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":[],"
                           "\"exp\":1000100}", auds, 2, &why), KB_EINVAL);
    assert_int_equal(check("{\"iss\":\"" ISS "\",\"aud\":7,"
                           "\"exp\":1000100}", auds, 2, &why), KB_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(b64url_round_trips_and_is_strict),
        cmocka_unit_test(parse_refuses_malformed_tokens),
        cmocka_unit_test(every_algorithm_verifies),
        cmocka_unit_test(hmac_secret_verifies_and_must_be_long),
        cmocka_unit_test(algorithm_and_key_type_must_agree),
        cmocka_unit_test(jwks_skips_what_it_cannot_use),
        cmocka_unit_test(firebase_x509_map_verifies),
        cmocka_unit_test(claims_are_checked_with_skew),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
