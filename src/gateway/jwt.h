/*
 * jwt.h - JSON Web Tokens for the gateway's auth stage: base64url, token
 * parsing, JWK/JWKS parsing (RFC 7517 and Google's x509 map), signature
 * verification with OpenSSL 3 (jwt.c, pure), and the key providers and
 * verified-token cache that auth.c runs on the data path (jwks.c).
 */
#ifndef KB_GW_JWT_H
#define KB_GW_JWT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/pool.h"

#define GW_JWT_MAX_TOKEN    16384         /* bytes of one compact JWS */
#define GW_JWT_SKEW_S       60            /* exp / nbf / iat leeway */
#define GW_JWKS_MAX_DOC     (1024 * 1024) /* bytes of one JWKS document */
#define GW_JWKS_MAX_KEYS    64            /* usable keys kept from one doc */

/* ------------------------------------------------------------------------ */
/* jwt.c: pure functions, any thread.                                      */

typedef enum gw_jwt_alg {
    GW_ALG_NONE = 0,     /* not a usable algorithm ("none" is refused) */
    GW_ALG_RS256, GW_ALG_RS384, GW_ALG_RS512,
    GW_ALG_PS256, GW_ALG_PS384, GW_ALG_PS512,
    GW_ALG_ES256, GW_ALG_ES384,
    GW_ALG_EDDSA,
    GW_ALG_HS256, GW_ALG_HS384, GW_ALG_HS512,
} gw_jwt_alg;

typedef enum gw_kty {
    GW_KTY_RSA = 1,
    GW_KTY_P256,
    GW_KTY_P384,
    GW_KTY_ED25519,
    GW_KTY_OCT           /* an HMAC secret: local files only */
} gw_kty;

/* One verification key. */
typedef struct gw_jwk {
    char          *kid;          /* NULL: matches whatever kid a token has */
    gw_kty         kty;
    gw_jwt_alg     alg;          /* the JWK's "alg"; GW_ALG_NONE: any that
                                    fits the key type */
    EVP_PKEY      *pkey;         /* public key (not for GW_KTY_OCT) */
    unsigned char *secret;       /* GW_KTY_OCT */
    size_t         secret_len;
} gw_jwk;

/* An immutable, reference-counted set of keys (shared by threads). */
typedef struct gw_keyset {
    atomic_size_t refs;
    size_t        n;
    gw_jwk        keys[];
} gw_keyset;

/* A parsed (not yet verified) compact JWS.  Pointers into the token text
 * stay valid as long as the token does. */
typedef struct gw_jwt {
    gw_jwt_alg     alg;
    const char    *kid;          /* in header; NULL when absent */
    json_t        *header;       /* own reference */
    json_t        *claims;       /* own reference */
    const char    *signing_input;/* "header.payload" in the token */
    size_t         signing_len;
    const char    *payload_b64;  /* the payload segment, as sent */
    size_t         payload_b64_len;
    unsigned char *sig;          /* decoded signature (malloc) */
    size_t         sig_len;
} gw_jwt;

/* What a token's claims must say. */
typedef struct gw_jwt_expect {
    const char        *issuer;       /* exact match */
    const char *const *audiences;    /* aud must name one of these */
    size_t             naudiences;
    int64_t            now;          /* Unix seconds */
} gw_jwt_expect;

/*
 * Base64url (RFC 4648 §5) without padding.  decode: into a malloc'd buffer
 * (NUL-terminated for convenience, not counted); 0 or KB_EPARSE (bad
 * character, bad length, non-zero trailing bits, or '=' unless
 * allow_padding), KB_ENOMEM.  encode: appends to out (KB_ETOOBIG past its
 * max).
 */
int  gw__b64url_decode(const char *in, size_t len, bool allow_padding,
                       unsigned char **out, size_t *outlen);
int  gw__b64url_encode(const void *in, size_t len, kb_buf *out);

/* "RS256" → GW_ALG_RS256; GW_ALG_NONE for anything unsupported. */
gw_jwt_alg gw__jwt_alg_parse(const char *name);
const char *gw__jwt_alg_name(gw_jwt_alg alg);

/*
 * Split and decode a compact JWS (header.payload.signature).  Header and
 * payload must be JSON objects without duplicate keys; the header needs a
 * supported "alg" ("none" is refused) and no "crit".  On success *out owns
 * its members (gw__jwt_free).  KB_EPARSE or KB_EINVAL with a static
 * reason in *why (for debug logs, never for clients), KB_ENOMEM.
 */
int  gw__jwt_parse(const char *token, size_t len, gw_jwt *out,
                   const char **why);
void gw__jwt_free(gw_jwt *t);

/*
 * Verify t's signature with a key of ks: a key whose kid equals the
 * token's (or either has none), whose type fits the algorithm (RSA for
 * RS/PS with >= 2048 bits, the named curve for ES, Ed25519 for EdDSA, a
 * long enough secret for HS) and whose "alg", when set, is the token's.
 * 0; KB_ENOTFOUND when no key carries the token's kid (a refetch may
 * help); KB_EINVAL for a bad signature or no fitting key.
 */
int  gw__jwt_verify(const gw_jwt *t, const gw_keyset *ks, const char **why);

/*
 * Check iss (exact), aud (string or array; one must be expected), exp
 * (required), nbf and iat (when present), all with GW_JWT_SKEW_S leeway.
 * 0 or KB_EINVAL with a static reason.
 */
int  gw__jwt_check_claims(const json_t *claims, const gw_jwt_expect *e,
                          const char **why);

#define GW_JWKS_ALLOW_OCT 0x1        /* accept "kty":"oct" (local files) */

/*
 * Parse a key document: an RFC 7517 JWK Set {"keys": [...]}, a single
 * JWK, or Google's x509 form {"kid": "-----BEGIN CERTIFICATE-----..."}
 * (PEM public keys are accepted there too).  Keys of unsupported types,
 * with "use" other than "sig", or unparsable are skipped; a document with
 * no usable key is an error.  0 and *out (one reference); KB_EPARSE with
 * *why; KB_ETOOBIG over GW_JWKS_MAX_DOC; KB_ENOMEM.
 */
int  gw__jwks_parse(const char *doc, size_t len, unsigned flags,
                    gw_keyset **out, const char **why);
/* A set holding one HMAC secret (copied). 0, KB_EINVAL (< 32 bytes),
 * KB_ENOMEM. */
int  gw__keyset_secret(const void *secret, size_t len, gw_keyset **out);
gw_keyset *gw__keyset_ref(gw_keyset *ks);
void gw__keyset_unref(gw_keyset *ks);

/* ------------------------------------------------------------------------ */
/* jwks.c: key providers by URI, and the verified-token cache.  One        */
/* struct gw_jwks per gateway (gw->jwks); every function is thread-safe.   */

#define GW_JWKS_TTL_MIN_MS      (5 * 60 * 1000)       /* Cache-Control floor */
#define GW_JWKS_TTL_MAX_MS      (24 * 3600 * 1000)    /* … and ceiling */
#define GW_JWKS_KID_REFETCH_MS  (30 * 1000)           /* unknown kid; and
                                                         a failed refresh
                                                         of stale keys */
#define GW_JWKS_RETRY_MS        (5 * 1000)            /* no keys yet and
                                                         the fetch failed */
#define GW_JWKS_FETCH_TIMEOUT_MS 5000
#define GW_JWKS_MAX_WAITERS     4096                  /* per source */
#define GW_TCACHE_MAX           10000                 /* verified tokens */
#define GW_TCACHE_TTL_S         300                   /* longest a verdict is
                                                         reused */

typedef struct gw_jwks gw_jwks;
typedef struct gw_jwks_src gw_jwks_src;

/* A request waiting for keys: cb(data) runs once, on the fetch thread,
 * when the fetch it waits for has ended (successfully or not). */
typedef struct gw_jwks_waiter {
    struct gw_jwks_waiter *next;
    void                 (*cb)(void *data);
    void                  *data;
} gw_jwks_waiter;

/* The fetcher: GET uri into body (bounded), *max_age_s from Cache-Control
 * max-age (-1 when absent).  0 or a negative error.  Replaceable for
 * tests; runs on the fetch thread. */
typedef int (*gw_jwks_fetch_fn)(gw_jwks *j, const char *uri, kb_buf *body,
                                long *max_age_s);

int  gw__jwks_create(gw_jwks **out);
/* Shutdown begins: abort the fetch under way, wake every waiter now, and
 * never make a request wait again (it gets the keys held, or none).  Any
 * thread; idempotent. */
void gw__jwks_stop(gw_jwks *j);
/* Stops the fetch thread (an ongoing fetch is aborted), resumes every
 * waiter, and frees the registry once the last source is released. */
void gw__jwks_destroy(gw_jwks *j);

/* The source for uri, created on first use (no fetch yet).  New
 * reference, or NULL when out of memory. */
gw_jwks_src *gw__jwks_source(gw_jwks *j, const char *uri);
void gw__jwks_source_unref(gw_jwks_src *s);

#define GW_JWKS_KID_MISS 0x1         /* the keys held lack the token's kid */

/*
 * Keys of source s for one request.
 *   0           *keys is set (one reference); they may be stale while a
 *               refresh runs in the background.
 *   KB_EAGAIN   no keys yet (or GW_JWKS_KID_MISS and a refetch is due): a
 *               fetch is under way and w will be called when it ends.
 *   KB_EUNAVAIL no keys and none coming soon (the last fetch failed less
 *               than GW_JWKS_RETRY_MS ago, or too many waiters).
 * With GW_JWKS_KID_MISS and no refetch due (one ran less than
 * GW_JWKS_KID_REFETCH_MS ago), the keys held are returned again.
 */
int  gw__jwks_get(gw_jwks_src *s, unsigned flags, gw_jwks_waiter *w,
                  gw_keyset **keys);

/* A verified token, as the cache gives it back. */
typedef struct gw_tc_hit {
    json_t     *claims;              /* one reference; shared, read-only */
    const char *subject;             /* in the pool */
    const char *payload_b64;         /* in the pool */
} gw_tc_hit;

/* Look up (digest = SHA-256 of the token, uid = the scheme's id).  Strings
 * are copied into pool.  false on a miss or an entry past its expiry. */
bool gw__tcache_get(gw_jwks *j, const unsigned char digest[32], uint64_t uid,
                    int64_t now, kb_pool *pool, gw_tc_hit *out);
/* Remember a verified token until `expires` (Unix seconds).  Takes a new
 * reference to claims; copies the strings.  Evicts the least recently
 * used entry of its shard when full.  Out of memory is ignored. */
void gw__tcache_put(gw_jwks *j, const unsigned char digest[32], uint64_t uid,
                    int64_t expires, json_t *claims, const char *subject,
                    const char *payload_b64, size_t payload_len);

#endif
