/*
 * auth.c - the gateway's auth stage: compiles a spec's security schemes
 * (Swagger 2.0 securityDefinitions, OpenAPI 3 components.securitySchemes,
 * with Google's x-google-* JWT extensions and apiKey schemes) and each
 * operation's `security` requirements, then checks every request against
 * them.  JWTs are verified with jwt.c against keys from jwks.c (or local
 * files); API keys are looked up by SHA-256 in the gateway's key store,
 * which the admin API fills through kb_gateway_key_set().
 */
#include "gateway/gw_int.h"
#include "gateway/jwt.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"

#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PTR_MAX           1024       /* longest JSON pointer we print */
#define AUTH_MAX_ALTS     16         /* alternatives in one `security` */
#define AUTH_MAX_AND      8          /* schemes in one alternative */
#define AUTH_MAX_AUDS     64
#define AUTH_MAX_LOCS     16
#define AUTH_MAX_SECRET   4096       /* bytes of an x-kiban-secret-file */
#define KEYS_MAX          100000     /* API keys in one gateway */
#define KEYS_BUCKETS      4096
#define KEY_MAX_GATEWAYS  64
#define REALM             "kiban"

#define MSG_BAD_CREDENTIALS "missing or invalid credentials"
#define MSG_KEY_MISSING \
    "Method doesn't allow unregistered callers (callers without " \
    "established identity). Please use API Key or other form of API " \
    "consumer identity to call this API."
#define MSG_KEY_INVALID   "API key not valid. Please pass a valid API key."
#define MSG_KEY_FORBIDDEN \
    "The API targeted by this request is invalid for the given API key."

typedef enum { SCHEME_UNSUPPORTED, SCHEME_JWT, SCHEME_APIKEY } scheme_kind;

/* Where a JWT may be: a header (with an optional prefix) or a query
 * parameter.  Headers are tried first, in order, then queries. */
typedef struct jwt_loc {
    char *header;
    char *prefix;                    /* "Bearer " or NULL */
    char *query;
} jwt_loc;

typedef struct gw_scheme {
    char         *name;
    scheme_kind   kind;
    const char   *unsupported;       /* why, for SCHEME_UNSUPPORTED */
    /* SCHEME_JWT */
    char         *issuer;
    char        **audiences;
    size_t        naudiences;
    jwt_loc      *locs;
    size_t        nlocs;
    char         *jwks_uri;          /* remote keys, or: */
    gw_keyset    *keys;              /* keys from a local file */
    uint64_t      uid;               /* token cache key part */
    _Atomic(gw_jwks_src *) src;      /* bound on first use */
    /* SCHEME_APIKEY */
    bool          in_query;
    char         *key_name;
} gw_scheme;

struct gw_auth_spec {
    gw_scheme *schemes;
    size_t     n;
};

typedef struct auth_alt {
    size_t           n;
    const gw_scheme *schemes[AUTH_MAX_AND];
} auth_alt;

/* A route's requirements: any one alternative, all of its schemes. */
struct gw_auth {
    bool     optional;               /* `{}` listed: anonymous allowed */
    bool     has_jwt;
    size_t   nalts;
    auth_alt alts[];
};

/* ------------------------------------------------------------------------ */
/* API keys                                                                 */

typedef struct key_entry {
    struct key_entry *next;
    char              sha[65];
    char             *project;
    char             *name;
    char            **gateways;
    size_t            ngateways;
} key_entry;

struct gw_keys {
    pthread_rwlock_t lock;
    key_entry       *buckets[KEYS_BUCKETS];
    size_t           n;
};

typedef enum { KEY_OK, KEY_UNKNOWN, KEY_FORBIDDEN } key_verdict;

static size_t
key_bucket(const char *sha)
{
    size_t h = 0;

    for (int i = 0; i < 8; i++)
        h = h * 16 + (size_t)(isdigit((unsigned char)sha[i])
                                  ? sha[i] - '0' : sha[i] - 'a' + 10);
    return h % KEYS_BUCKETS;
}

static void
key_entry_free(key_entry *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->ngateways; i++)
        free(e->gateways[i]);
    free(e->gateways);
    free(e->project);
    free(e->name);
    free(e);
}

/* Unlink project/name from its bucket (under the write lock). */
static key_entry *
key_unlink(struct gw_keys *k, const char *project, const char *name)
{
    for (size_t b = 0; b < KEYS_BUCKETS; b++)
        for (key_entry **pp = &k->buckets[b]; *pp != NULL;
             pp = &(*pp)->next) {
            key_entry *e = *pp;
            if (strcmp(e->project, project) == 0 &&
                strcmp(e->name, name) == 0) {
                *pp = e->next;
                k->n--;
                return e;
            }
        }
    return NULL;
}

int
kb_gateway_key_set(kb_gateway *gw, const char *project, const char *name,
                   const char *sha256_hex, const json_t *gateways)
{
    struct gw_keys *k = gw->keys;
    key_entry *e, *old;
    size_t i;
    const json_t *g;

    if (project == NULL || name == NULL || sha256_hex == NULL ||
        project[0] == '\0' || name[0] == '\0' || strlen(sha256_hex) != 64)
        return KB_EINVAL;
    if (gateways != NULL && !json_is_null(gateways) &&
        (!json_is_array(gateways) ||
         json_array_size(gateways) > KEY_MAX_GATEWAYS))
        return KB_EINVAL;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return KB_ENOMEM;
    for (i = 0; i < 64; i++) {
        if (!isxdigit((unsigned char)sha256_hex[i])) {
            free(e);
            return KB_EINVAL;
        }
        e->sha[i] = (char)tolower((unsigned char)sha256_hex[i]);
    }
    e->project = strdup(project);
    e->name = strdup(name);
    if (json_array_size(gateways) > 0)
        e->gateways = calloc(json_array_size(gateways), sizeof(char *));
    if (e->project == NULL || e->name == NULL ||
        (json_array_size(gateways) > 0 && e->gateways == NULL)) {
        key_entry_free(e);
        return KB_ENOMEM;
    }
    json_array_foreach(gateways, i, g) {
        if (!json_is_string(g)) {
            key_entry_free(e);
            return KB_EINVAL;
        }
        if ((e->gateways[e->ngateways] = strdup(json_string_value(g))) == NULL) {
            key_entry_free(e);
            return KB_ENOMEM;
        }
        e->ngateways++;
    }
    pthread_rwlock_wrlock(&k->lock);
    old = key_unlink(k, project, name);
    if (old == NULL && k->n >= KEYS_MAX) {
        pthread_rwlock_unlock(&k->lock);
        key_entry_free(e);
        return KB_ETOOBIG;
    }
    e->next = k->buckets[key_bucket(e->sha)];
    k->buckets[key_bucket(e->sha)] = e;
    k->n++;
    pthread_rwlock_unlock(&k->lock);
    key_entry_free(old);
    return 0;
}

int
kb_gateway_key_remove(kb_gateway *gw, const char *project, const char *name)
{
    key_entry *e;

    if (project == NULL || name == NULL)
        return KB_EINVAL;
    pthread_rwlock_wrlock(&gw->keys->lock);
    e = key_unlink(gw->keys, project, name);
    pthread_rwlock_unlock(&gw->keys->lock);
    if (e == NULL)
        return KB_ENOTFOUND;
    key_entry_free(e);
    return 0;
}

/* Which key (if any) is `key` for gateway project/gateway?  *name is
 * copied into pool on KEY_OK. */
static key_verdict
key_lookup(struct gw_keys *k, const char *key, const char *project,
           const char *gateway, kb_pool *pool, const char **name)
{
    unsigned char md[32];
    char sha[65];
    key_verdict v = KEY_UNKNOWN;

    *name = NULL;
    size_t klen = strlen(key);

    if (gw__sha256((const void *[]){ key }, &klen, 1, md) != 0)
        return KEY_UNKNOWN;
    for (int i = 0; i < 32; i++)
        snprintf(sha + 2 * i, 3, "%02x", md[i]);
    pthread_rwlock_rdlock(&k->lock);
    for (key_entry *e = k->buckets[key_bucket(sha)]; e != NULL; e = e->next) {
        bool allowed = e->ngateways == 0;
        if (strcmp(e->sha, sha) != 0 || strcmp(e->project, project) != 0)
            continue;
        for (size_t i = 0; i < e->ngateways && !allowed; i++)
            allowed = strcmp(e->gateways[i], gateway) == 0;
        if (!allowed) {
            v = KEY_FORBIDDEN;
            continue;
        }
        *name = kb_pool_strdup(pool, e->name);
        v = *name != NULL ? KEY_OK : KEY_UNKNOWN;
        break;
    }
    pthread_rwlock_unlock(&k->lock);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Gateway-wide state                                                       */

int
gw__auth_init(kb_gateway *gw)
{
    int rc;

    gw->keys = calloc(1, sizeof(*gw->keys));
    if (gw->keys == NULL)
        return KB_ENOMEM;
    if (pthread_rwlock_init(&gw->keys->lock, NULL) != 0) {
        free(gw->keys);
        gw->keys = NULL;
        return KB_ENOMEM;
    }
    if ((rc = gw__jwks_create(&gw->jwks)) != 0) {
        pthread_rwlock_destroy(&gw->keys->lock);
        free(gw->keys);
        gw->keys = NULL;
        return rc;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);   /* reference counted */
    return 0;
}

void
gw__auth_fini(kb_gateway *gw)
{
    if (gw->jwks != NULL) {
        gw__jwks_destroy(gw->jwks);
        gw->jwks = NULL;
        curl_global_cleanup();
    }
    if (gw->keys != NULL) {
        for (size_t b = 0; b < KEYS_BUCKETS; b++)
            while (gw->keys->buckets[b] != NULL) {
                key_entry *e = gw->keys->buckets[b];
                gw->keys->buckets[b] = e->next;
                key_entry_free(e);
            }
        pthread_rwlock_destroy(&gw->keys->lock);
        free(gw->keys);
        gw->keys = NULL;
    }
}

void
gw__auth_shutdown(kb_gateway *gw)
{
    gw__jwks_stop(gw->jwks);
}

bool
gw__auth_header_reserved(const char *name)
{
    return strcasecmp(name, GW_USERINFO_HEADER) == 0 ||
           strcasecmp(name, GW_FWD_AUTH_HEADER) == 0;
}

/* ------------------------------------------------------------------------ */
/* Compile                                                                  */

typedef struct acc {
    gw_spec      *s;
    const json_t *doc;
    char         *err;
    size_t        errlen;
    struct gw_auth_spec *as;
} acc;

/* "pointer: reason" into the caller's err; returns KB_EINVAL. */
#define spec_fail(a, ...) gw__spec_fail((a)->err, (a)->errlen, __VA_ARGS__)

static void
ptr_index(char *out, size_t cap, const char *parent, size_t i)
{
    char tok[32];

    snprintf(tok, sizeof(tok), "%zu", i);
    gw__pointer_join(out, cap, parent, tok);
}

static void
scheme_clear(gw_scheme *sc)
{
    free(sc->name);
    free(sc->issuer);
    for (size_t i = 0; i < sc->naudiences; i++)
        free(sc->audiences[i]);
    free(sc->audiences);
    for (size_t i = 0; i < sc->nlocs; i++) {
        free(sc->locs[i].header);
        free(sc->locs[i].prefix);
        free(sc->locs[i].query);
    }
    free(sc->locs);
    free(sc->jwks_uri);
    gw__keyset_unref(sc->keys);
    gw__jwks_source_unref(atomic_load(&sc->src));
    free(sc->key_name);
    memset(sc, 0, sizeof(*sc));
}

void
gw__auth_release(gw_spec *s)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        free(s->routes[i].auth);
        s->routes[i].auth = NULL;
    }
    if (s->auth != NULL) {
        for (size_t i = 0; i < s->auth->n; i++)
            scheme_clear(&s->auth->schemes[i]);
        free(s->auth->schemes);
        free(s->auth);
        s->auth = NULL;
    }
}

/* Read a small local file named by the spec.  malloc'd, NUL-terminated. */
static int
read_file(acc *a, const char *ptr, const char *path, size_t max, char **out,
          size_t *len)
{
    FILE *f = fopen(path, "rb");
    kb_buf b = KB_BUF_INIT(max);
    char chunk[4096];
    size_t n;
    int rc = 0;

    *out = NULL;
    if (f == NULL)
        return spec_fail(a, ptr, "cannot read %s: %s", path, strerror(errno));
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = kb_buf_append(&b, chunk, n);
    if (rc == 0 && ferror(f))
        rc = -EIO;
    fclose(f);
    if (rc != 0) {
        kb_buf_free(&b);
        if (rc == KB_ENOMEM)
            return rc;
        return spec_fail(a, ptr, "cannot read %s: %s", path,
                    rc == KB_ETOOBIG ? "file too large" : kb_strerror(rc));
    }
    *len = b.len;
    *out = kb_buf_detach(&b);
    return *out != NULL ? 0 : KB_ENOMEM;
}

static int
add_audience(acc *a, gw_scheme *sc, const char *ptr, const char *aud,
             size_t len)
{
    char *copy;

    while (len > 0 && isspace((unsigned char)*aud)) {
        aud++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)aud[len - 1]))
        len--;
    if (len == 0)
        return 0;
    if (sc->naudiences == AUTH_MAX_AUDS)
        return spec_fail(a, ptr, "more than %d audiences", AUTH_MAX_AUDS);
    if ((copy = strndup(aud, len)) == NULL)
        return KB_ENOMEM;
    sc->audiences[sc->naudiences++] = copy;
    return 0;
}

/* x-google-audiences: "a, b" (Google's form) or ["a", "b"]. */
static int
compile_audiences(acc *a, gw_scheme *sc, const json_t *v, const char *ptr)
{
    int rc;

    sc->audiences = calloc(AUTH_MAX_AUDS, sizeof(char *));
    if (sc->audiences == NULL)
        return KB_ENOMEM;
    if (json_is_string(v)) {
        const char *p = json_string_value(v);
        for (;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
            if ((rc = add_audience(a, sc, ptr, p, len)) != 0)
                return rc;
            if (comma == NULL)
                break;
            p = comma + 1;
        }
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            char p[PTR_MAX];
            ptr_index(p, sizeof(p), ptr, i);
            if (!json_is_string(e))
                return spec_fail(a, p, "must be a string");
            if ((rc = add_audience(a, sc, p, json_string_value(e),
                                   strlen(json_string_value(e)))) != 0)
                return rc;
        }
    } else {
        return spec_fail(a, ptr, "must be a comma-separated string or a list of "
                            "strings");
    }
    if (sc->naudiences == 0)
        return spec_fail(a, ptr, "names no audience");
    return 0;
}

/* Add "https://NAME" and "https://NAME/" for a service name. */
static int
add_default_audience(acc *a, gw_scheme *sc, const char *ptr, const char *host,
                     size_t len)
{
    char buf[512];
    int rc, n;

    if (len == 0 || len > 400)
        return 0;
    for (int slash = 0; slash < 2; slash++) {
        n = snprintf(buf, sizeof(buf), "https://%.*s%s", (int)len, host,
                     slash ? "/" : "");
        for (size_t i = 0; i < sc->naudiences; i++)
            if (strcmp(sc->audiences[i], buf) == 0)
                n = 0;
        if (n > 0 && (rc = add_audience(a, sc, ptr, buf, (size_t)n)) != 0)
            return rc;
    }
    return 0;
}

/*
 * ESPv2 accepts aud "https://SERVICE_NAME" when x-google-audiences is
 * absent.  Our service names: Swagger's `host`, the hosts of OpenAPI 3
 * `servers`, and the Gateway's own `hosts`.
 */
static int
default_audiences(acc *a, gw_scheme *sc, const char *ptr)
{
    const char *host = json_string_value(json_object_get(a->doc, "host"));
    const json_t *servers = json_object_get(a->doc, "servers");
    const json_t *srv;
    size_t i;
    int rc;

    sc->audiences = calloc(AUTH_MAX_AUDS, sizeof(char *));
    if (sc->audiences == NULL)
        return KB_ENOMEM;
    if (host != NULL &&
        (rc = add_default_audience(a, sc, ptr, host, strcspn(host, ":/"))) != 0)
        return rc;
    json_array_foreach(servers, i, srv) {
        const char *url = json_string_value(json_object_get(srv, "url"));
        const char *p = url != NULL ? strstr(url, "://") : NULL;
        if (p != NULL && (rc = add_default_audience(a, sc, ptr, p + 3,
                                                    strcspn(p + 3, ":/"))) != 0)
            return rc;
    }
    for (i = 0; i < a->s->nhosts; i++)
        if ((rc = add_default_audience(a, sc, ptr, a->s->hosts[i],
                                       strlen(a->s->hosts[i]))) != 0)
            return rc;
    if (sc->naudiences == 0)
        return spec_fail(a, ptr, "no audience: set x-google-audiences (without "
                            "it, the accepted audience is https://HOST for "
                            "the spec's host, servers or hosts, and none is "
                            "named)");
    return 0;
}

static int
add_loc(gw_scheme *sc, const char *header, const char *prefix,
        const char *query)
{
    jwt_loc *l = &sc->locs[sc->nlocs];

    if ((header != NULL && (l->header = strdup(header)) == NULL) ||
        (prefix != NULL && prefix[0] != '\0' &&
         (l->prefix = strdup(prefix)) == NULL) ||
        (query != NULL && (l->query = strdup(query)) == NULL)) {
        free(l->header);
        free(l->prefix);
        free(l->query);
        memset(l, 0, sizeof(*l));
        return KB_ENOMEM;
    }
    sc->nlocs++;
    return 0;
}

/* x-google-jwt-locations / jwtLocations, or ESPv2's defaults. */
static int
compile_locations(acc *a, gw_scheme *sc, const json_t *v, const char *ptr)
{
    size_t i;
    const json_t *e;
    int rc;

    sc->locs = calloc(AUTH_MAX_LOCS, sizeof(jwt_loc));
    if (sc->locs == NULL)
        return KB_ENOMEM;
    if (v == NULL) {
        if ((rc = add_loc(sc, "Authorization", "Bearer ", NULL)) != 0 ||
            (rc = add_loc(sc, "X-Goog-Iap-Jwt-Assertion", NULL, NULL)) != 0 ||
            (rc = add_loc(sc, NULL, NULL, "access_token")) != 0)
            return rc;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return spec_fail(a, ptr, "must be a non-empty list of {header, "
                            "value_prefix} or {query}");
    if (json_array_size(v) > AUTH_MAX_LOCS)
        return spec_fail(a, ptr, "more than %d locations", AUTH_MAX_LOCS);
    json_array_foreach(v, i, e) {
        char p[PTR_MAX];
        const json_t *h = json_object_get(e, "header");
        const json_t *q = json_object_get(e, "query");
        const json_t *pre = json_object_get(e, "value_prefix");

        if (pre == NULL)
            pre = json_object_get(e, "valuePrefix");
        ptr_index(p, sizeof(p), ptr, i);
        if (!json_is_object(e))
            return spec_fail(a, p, "must be an object {header, value_prefix} or "
                              "{query}");
        if (json_object_get(e, "cookie") != NULL)
            return spec_fail(a, p, "cookie locations are not supported");
        if ((h != NULL) == (q != NULL))
            return spec_fail(a, p, "needs exactly one of header or query");
        if ((h != NULL && (!json_is_string(h) ||
                           json_string_length(h) == 0)) ||
            (q != NULL && (!json_is_string(q) ||
                           json_string_length(q) == 0)))
            return spec_fail(a, p, "header / query must be a non-empty string");
        if (pre != NULL && (q != NULL || !json_is_string(pre)))
            return spec_fail(a, p, "value_prefix is a string, for headers only");
        if ((rc = add_loc(sc, json_string_value(h), json_string_value(pre),
                          json_string_value(q))) != 0)
            return rc;
    }
    return 0;
}

/* The x-kiban-* key sources of a JWT scheme. */
static int
compile_local_keys(acc *a, gw_scheme *sc, const json_t *def, const char *ptr)
{
    const json_t *jf = json_object_get(def, "x-kiban-jwks-file");
    const json_t *sf = json_object_get(def, "x-kiban-secret-file");
    char p[PTR_MAX], *data = NULL;
    const char *why = NULL;
    size_t len = 0;
    int rc;

    if (jf != NULL && sf != NULL)
        return spec_fail(a, ptr, "set only one of x-kiban-jwks-file and "
                            "x-kiban-secret-file");
    if (jf == NULL && sf == NULL)
        return 0;
    gw__pointer_join(p, sizeof(p), ptr, jf != NULL ? "x-kiban-jwks-file"
                                                   : "x-kiban-secret-file");
    if (!json_is_string(jf != NULL ? jf : sf) ||
        json_string_length(jf != NULL ? jf : sf) == 0)
        return spec_fail(a, p, "must be a file path");
    if (jf != NULL) {
        if ((rc = read_file(a, p, json_string_value(jf), GW_JWKS_MAX_DOC,
                            &data, &len)) != 0)
            return rc;
        rc = gw__jwks_parse(data, len, GW_JWKS_ALLOW_OCT, &sc->keys, &why);
        free(data);
        if (rc == KB_ENOMEM)
            return rc;
        if (rc != 0)
            return spec_fail(a, p, "%s: %s", json_string_value(jf), why);
        return 0;
    }
    if ((rc = read_file(a, p, json_string_value(sf), AUTH_MAX_SECRET, &data,
                        &len)) != 0)
        return rc;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    rc = gw__keyset_secret(data, len, &sc->keys);
    OPENSSL_cleanse(data, len);
    free(data);
    if (rc == KB_EINVAL)
        return spec_fail(a, p, "the secret must be at least 32 bytes");
    return rc;
}

static int
compile_jwt(acc *a, gw_scheme *sc, const json_t *def, const char *ptr,
            bool oas3_form)
{
    static _Atomic uint64_t next_uid = 1;
    const json_t *src = oas3_form ? json_object_get(def, "x-google-auth") : def;
    const char *k_iss = oas3_form ? "issuer" : "x-google-issuer";
    const char *k_uri = oas3_form ? "jwksUri" : "x-google-jwks_uri";
    const char *k_aud = oas3_form ? "audiences" : "x-google-audiences";
    const char *k_loc = oas3_form ? "jwtLocations" : "x-google-jwt-locations";
    const json_t *iss = json_object_get(src, k_iss);
    const json_t *uri = json_object_get(src, k_uri);
    const json_t *aud = json_object_get(src, k_aud);
    char base[PTR_MAX], p[PTR_MAX];
    int rc;

    if (oas3_form)
        gw__pointer_join(base, sizeof(base), ptr, "x-google-auth");
    else
        snprintf(base, sizeof(base), "%s", ptr);
    if (oas3_form && !json_is_object(src))
        return spec_fail(a, base, "must be an object {issuer, jwksUri, "
                             "audiences, jwtLocations}");
    sc->kind = SCHEME_JWT;
    sc->uid = atomic_fetch_add(&next_uid, 1);
    gw__pointer_join(p, sizeof(p), base, k_iss);
    if (!json_is_string(iss) || json_string_length(iss) == 0)
        return spec_fail(a, p, "required: the tokens' issuer (iss)");
    if ((sc->issuer = strdup(json_string_value(iss))) == NULL)
        return KB_ENOMEM;

    if ((rc = compile_local_keys(a, sc, def, ptr)) != 0)
        return rc;
    gw__pointer_join(p, sizeof(p), base, k_uri);
    if (uri != NULL && sc->keys != NULL)
        return spec_fail(a, p, "set either a JWKS URI or an x-kiban-* key file, "
                          "not both");
    if (uri == NULL && sc->keys == NULL)
        return spec_fail(a, p, "required (or x-kiban-jwks-file / "
                          "x-kiban-secret-file on the scheme)");
    if (uri != NULL) {
        const char *u = json_string_value(uri);
        if (u == NULL || json_string_length(uri) > 2048 ||
            (strncasecmp(u, "https://", 8) != 0 &&
             strncasecmp(u, "http://", 7) != 0))
            return spec_fail(a, p, "must be an http:// or https:// URL");
        if ((sc->jwks_uri = strdup(u)) == NULL)
            return KB_ENOMEM;
    }

    gw__pointer_join(p, sizeof(p), base, k_aud);
    rc = aud != NULL ? compile_audiences(a, sc, aud, p)
                     : default_audiences(a, sc, ptr);
    if (rc != 0)
        return rc;
    gw__pointer_join(p, sizeof(p), base, k_loc);
    return compile_locations(a, sc, json_object_get(src, k_loc), p);
}

static int
compile_apikey(acc *a, gw_scheme *sc, const json_t *def, const char *ptr)
{
    const char *in = json_string_value(json_object_get(def, "in"));
    const json_t *name = json_object_get(def, "name");
    char p[PTR_MAX];

    sc->kind = SCHEME_APIKEY;
    gw__pointer_join(p, sizeof(p), ptr, "in");
    if (in == NULL || (strcmp(in, "header") != 0 && strcmp(in, "query") != 0))
        return spec_fail(a, p, "must be \"header\" or \"query\" (cookie is not "
                          "supported)");
    sc->in_query = strcmp(in, "query") == 0;
    gw__pointer_join(p, sizeof(p), ptr, "name");
    if (!json_is_string(name) || json_string_length(name) == 0)
        return spec_fail(a, p, "required: the header or query parameter name");
    sc->key_name = strdup(json_string_value(name));
    return sc->key_name != NULL ? 0 : KB_ENOMEM;
}

static int
compile_scheme(acc *a, gw_scheme *sc, const char *name, const json_t *def,
               const char *ptr)
{
    const char *type;

    if ((sc->name = strdup(name)) == NULL)
        return KB_ENOMEM;
    if (!json_is_object(def))
        return spec_fail(a, ptr, "must be an object (a security scheme)");
    if (json_object_get(def, "$ref") != NULL)
        return spec_fail(a, ptr, "$ref security schemes are not supported");
    type = json_string_value(json_object_get(def, "type"));
    if (json_object_get(def, "x-google-auth") != NULL)
        return compile_jwt(a, sc, def, ptr, true);
    if (json_object_get(def, "x-google-issuer") != NULL)
        return compile_jwt(a, sc, def, ptr, false);
    if (type != NULL && strcmp(type, "apiKey") == 0)
        return compile_apikey(a, sc, def, ptr);
    sc->kind = SCHEME_UNSUPPORTED;
    sc->unsupported = "only JWT schemes (x-google-issuer / x-google-auth) "
                      "and apiKey schemes are supported";
    return 0;
}

static const gw_scheme *
scheme_find(const struct gw_auth_spec *as, const char *name)
{
    for (size_t i = 0; as != NULL && i < as->n; i++)
        if (strcmp(as->schemes[i].name, name) == 0)
            return &as->schemes[i];
    return NULL;
}

/* A `security` list into *out (NULL when it asks for nothing). */
static int
compile_requirements(acc *a, const json_t *sec, const char *ptr,
                     struct gw_auth **out)
{
    struct gw_auth *au;
    const json_t *alt;
    size_t i;

    *out = NULL;
    if (!json_is_array(sec))
        return spec_fail(a, ptr, "must be a list of security requirements");
    if (json_array_size(sec) == 0)
        return 0;
    if (json_array_size(sec) > AUTH_MAX_ALTS)
        return spec_fail(a, ptr, "more than %d alternatives", AUTH_MAX_ALTS);
    au = calloc(1, sizeof(*au) + json_array_size(sec) * sizeof(auth_alt));
    if (au == NULL)
        return KB_ENOMEM;
    json_array_foreach(sec, i, alt) {
        char p[PTR_MAX], pk[PTR_MAX];
        const char *name;
        const json_t *scopes;

        ptr_index(p, sizeof(p), ptr, i);
        if (!json_is_object(alt)) {
            free(au);
            return spec_fail(a, p, "must be an object {scheme: [scopes]}");
        }
        if (json_object_size(alt) == 0)
            au->optional = true;
        if (json_object_size(alt) > AUTH_MAX_AND) {
            free(au);
            return spec_fail(a, p, "more than %d schemes", AUTH_MAX_AND);
        }
        json_object_foreach((json_t *)alt, name, scopes) {
            const gw_scheme *sc = scheme_find(a->as, name);
            gw__pointer_join(pk, sizeof(pk), p, name);
            if (sc == NULL) {
                free(au);
                return spec_fail(a, pk, "no security scheme named '%s' is "
                                   "defined", name);
            }
            if (sc->kind == SCHEME_UNSUPPORTED) {
                free(au);
                return spec_fail(a, pk, "security scheme '%s' is not supported: "
                                   "%s", name, sc->unsupported);
            }
            if (!json_is_array(scopes)) {
                free(au);
                return spec_fail(a, pk, "must be a list (of scopes)");
            }
            au->has_jwt |= sc->kind == SCHEME_JWT;
            au->alts[au->nalts].schemes[au->alts[au->nalts].n++] = sc;
        }
        if (json_object_size(alt) > 0)
            au->nalts++;
    }
    if (au->nalts == 0) {            /* only `{}`: nothing required */
        free(au);
        return 0;
    }
    *out = au;
    return 0;
}

static int
compile_all(acc *a)
{
    const json_t *defs, *def, *top;
    const char *defs_ptr, *name;
    size_t i = 0;
    int rc;

    if (json_object_get(a->doc, "swagger") != NULL) {
        defs = json_object_get(a->doc, "securityDefinitions");
        defs_ptr = "/securityDefinitions";
    } else {
        const json_t *comp = json_object_get(a->doc, "components");
        defs = json_object_get(comp, "securitySchemes");
        defs_ptr = "/components/securitySchemes";
    }
    if (defs != NULL && !json_is_object(defs))
        return spec_fail(a, defs_ptr, "must be an object of named schemes");
    a->as = calloc(1, sizeof(*a->as));
    if (a->as == NULL)
        return KB_ENOMEM;
    a->s->auth = a->as;              /* released with the spec */
    if (json_object_size(defs) > 0) {
        a->as->schemes = calloc(json_object_size(defs), sizeof(gw_scheme));
        if (a->as->schemes == NULL)
            return KB_ENOMEM;
    }
    json_object_foreach((json_t *)defs, name, def) {
        char p[PTR_MAX];
        gw__pointer_join(p, sizeof(p), defs_ptr, name);
        a->as->n = ++i;
        if ((rc = compile_scheme(a, &a->as->schemes[i - 1], name, def, p)) != 0)
            return rc;
    }

    top = json_object_get(a->doc, "security");
    if (top != NULL) {               /* checked even if every op overrides */
        struct gw_auth *probe;
        if ((rc = compile_requirements(a, top, "/security", &probe)) != 0)
            return rc;
        free(probe);
    }
    for (i = 0; i < a->s->nroutes; i++) {
        gw_route *r = &a->s->routes[i];
        const json_t *sec = json_object_get(r->op, "security");
        char p[PTR_MAX];

        if (sec != NULL)
            gw__pointer_join(p, sizeof(p), r->pointer, "security");
        else
            snprintf(p, sizeof(p), "/security");
        if (sec == NULL)
            sec = top;
        if (sec != NULL &&
            (rc = compile_requirements(a, sec, p, &r->auth)) != 0)
            return rc;
    }
    return 0;
}

int
gw__auth_compile(gw_spec *s, char *err, size_t errlen)
{
    acc a;
    int rc;

    memset(&a, 0, sizeof(a));
    a.s = s;
    a.doc = s->doc != NULL ? s->doc : json_object_get(s->spec, "openapi");
    a.err = err;
    a.errlen = errlen;
    if (!json_is_object(a.doc))
        return 0;
    rc = compile_all(&a);
    if (rc != 0)
        gw__auth_release(s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The stage                                                                */

typedef enum {
    AR_OK,
    AR_MISSING,                       /* no credential for this scheme */
    AR_INVALID,                       /* a JWT was presented and refused */
    AR_KEY_INVALID,                   /* unknown API key */
    AR_KEY_FORBIDDEN,                 /* key of another gateway */
    AR_PENDING                        /* waiting for keys */
} result;

/* What one alternative established. */
typedef struct ident {
    json_t     *claims;              /* own reference */
    const char *subject;
    const char *payload_b64;
    const char *key_name;
} ident;

static void
resume_cb(void *data)
{
    gw__post(data);
}

static void
reject_log(const gw_ctx *c, const gw_scheme *sc, const char *why)
{
    if (kb_log_get_level() > KB_LOG_DEBUG)
        return;
    kb_log_debug("gateway: credential refused", "{s:s, s:s, s:s, s:s}",
                 "request_id", c->request_id,
                 "route", c->route->label != NULL ? c->route->label : "",
                 "scheme", sc->name, "reason", why);
}

/* The token for scheme sc: headers first, then query parameters. */
static const char *
jwt_extract(gw_ctx *c, const gw_scheme *sc)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < sc->nlocs; i++) {
            const jwt_loc *l = &sc->locs[i];
            const char *v;

            if (pass == 0 && l->header != NULL) {
                v = kb_http_req_header(c->req, l->header);
                if (v == NULL)
                    continue;
                if (l->prefix != NULL) {
                    size_t plen = strlen(l->prefix);
                    if (strncasecmp(v, l->prefix, plen) != 0)
                        continue;
                    v += plen;
                }
                while (*v == ' ' || *v == '\t')
                    v++;
                if (*v != '\0')
                    return v;
            } else if (pass == 1 && l->query != NULL) {
                v = kb_http_req_query(c->req, l->query);
                if (v != NULL && *v != '\0')
                    return v;
            }
        }
    return NULL;
}

/* The scheme's key source, bound to this gateway on first use. */
static gw_jwks_src *
scheme_source(gw_ctx *c, const gw_scheme *csc)
{
    gw_scheme *sc = (gw_scheme *)csc;    /* only the atomic slot changes */
    gw_jwks_src *src = atomic_load(&sc->src), *expected = NULL;

    if (src != NULL)
        return src;
    src = gw__jwks_source(c->gw->jwks, sc->jwks_uri);
    if (src == NULL)
        return NULL;
    if (!atomic_compare_exchange_strong(&sc->src, &expected, src)) {
        gw__jwks_source_unref(src);  /* another thread bound it first */
        src = expected;
    }
    return src;
}

/* Keys for t: 0 with *keys, or a result to return. */
static result
jwt_keys(gw_ctx *c, const gw_scheme *sc, unsigned flags, gw_keyset **keys)
{
    gw_jwks_waiter *w;
    gw_jwks_src *src;
    int rc;

    *keys = NULL;
    if (sc->keys != NULL) {
        *keys = gw__keyset_ref(sc->keys);
        return AR_OK;
    }
    src = scheme_source(c, sc);
    w = kb_pool_calloc(c->req->pool, sizeof(*w));
    if (src == NULL || w == NULL) {
        reject_log(c, sc, "out of memory");
        return AR_INVALID;
    }
    w->cb = resume_cb;
    w->data = c;
    rc = gw__jwks_get(src, flags, w, keys);
    if (rc == KB_EAGAIN)
        return AR_PENDING;
    if (rc != 0) {
        kb_log_warn("gateway: no JWT keys", "{s:s, s:s}", "scheme", sc->name,
                    "jwks_uri", sc->jwks_uri);
        return AR_INVALID;
    }
    return AR_OK;
}

static result
check_jwt(gw_ctx *c, const gw_scheme *sc, ident *id)
{
    const char *tok = jwt_extract(c, sc), *why = NULL, *iss, *sub;
    int64_t now = kb_time_unix_ns() / 1000000000;
    unsigned char digest[32];
    gw_keyset *keys = NULL;
    gw_jwt_expect expect;
    gw_tc_hit hit;
    int64_t exp = 0;
    size_t len, subject_len;
    char *subject;
    result r;
    gw_jwt t;
    int rc;

    if (tok == NULL)
        return AR_MISSING;
    len = strlen(tok);
    if (len > GW_JWT_MAX_TOKEN) {
        reject_log(c, sc, "token too long");
        return AR_INVALID;
    }
    if (gw__sha256((const void *[]){ tok }, &len, 1, digest) != 0)
        return AR_INVALID;
    if (gw__tcache_get(c->gw->jwks, digest, sc->uid, now, c->req->pool,
                       &hit)) {
        id->claims = hit.claims;
        id->subject = hit.subject;
        id->payload_b64 = hit.payload_b64;
        return AR_OK;
    }
    if (gw__jwt_parse(tok, len, &t, &why) != 0) {
        reject_log(c, sc, why);
        return AR_INVALID;
    }
    iss = json_string_value(json_object_get(t.claims, "iss"));
    if (iss == NULL || strcmp(iss, sc->issuer) != 0) {
        reject_log(c, sc, "issuer mismatch");   /* before fetching keys */
        r = AR_INVALID;
        goto out_free_token;
    }
    if ((r = jwt_keys(c, sc, 0, &keys)) != AR_OK)
        goto out_free_token;
    rc = gw__jwt_verify(&t, keys, &why);
    if (rc == KB_ENOTFOUND && sc->keys == NULL) {
        gw__keyset_unref(keys);
        if ((r = jwt_keys(c, sc, GW_JWKS_KID_MISS, &keys)) != AR_OK)
            goto out_free_token;
        rc = gw__jwt_verify(&t, keys, &why);
    }
    gw__keyset_unref(keys);
    if (rc != 0) {
        reject_log(c, sc, why);
        r = AR_INVALID;
        goto out_free_token;
    }
    expect.issuer = sc->issuer;
    expect.audiences = (const char *const *)sc->audiences;
    expect.naudiences = sc->naudiences;
    expect.now = now;
    if (gw__jwt_check_claims(t.claims, &expect, &why) != 0) {
        reject_log(c, sc, why);
        r = AR_INVALID;
        goto out_free_token;
    }

    sub = json_string_value(json_object_get(t.claims, "sub"));
    subject_len = strlen(iss) + (sub != NULL ? strlen(sub) : 0) + 2;
    subject = kb_pool_alloc(c->req->pool, subject_len);
    id->payload_b64 = kb_pool_strndup(c->req->pool, t.payload_b64,
                                      t.payload_b64_len);
    if (subject == NULL || id->payload_b64 == NULL) {
        r = AR_INVALID;
        goto out_free_token;
    }
    snprintf(subject, subject_len, "%s|%s", iss, sub != NULL ? sub : "");
    id->subject = subject;
    id->claims = json_incref(t.claims);
    if (json_is_integer(json_object_get(t.claims, "exp")))
        exp = (int64_t)json_integer_value(json_object_get(t.claims, "exp"));
    else
        exp = (int64_t)json_real_value(json_object_get(t.claims, "exp"));
    exp = exp + GW_JWT_SKEW_S < now + GW_TCACHE_TTL_S ? exp + GW_JWT_SKEW_S
                                                      : now + GW_TCACHE_TTL_S;
    gw__tcache_put(c->gw->jwks, digest, sc->uid, exp, t.claims, id->subject,
                   t.payload_b64, t.payload_b64_len);
    r = AR_OK;
out_free_token:
    gw__jwt_free(&t);
    return r;
}

static result
check_apikey(gw_ctx *c, const gw_scheme *sc, ident *id)
{
    const char *key = sc->in_query ? kb_http_req_query(c->req, sc->key_name)
                                   : kb_http_req_header(c->req, sc->key_name);
    const gw_spec *s = c->route->spec;

    if (key == NULL || key[0] == '\0')
        return AR_MISSING;
    switch (key_lookup(c->gw->keys, key, s->project, s->name, c->req->pool,
                       &id->key_name)) {
    case KEY_OK:
        return AR_OK;
    case KEY_FORBIDDEN:
        reject_log(c, sc, "API key not allowed on this gateway");
        return AR_KEY_FORBIDDEN;
    default:
        reject_log(c, sc, "unknown API key");
        return AR_KEY_INVALID;
    }
}

/* Make id the request's identity.  0, or an error for a 500. */
static int
apply(gw_ctx *c, ident *id)
{
    const char *authz;
    int rc;

    if (id->claims != NULL) {
        json_decref(c->claims);
        c->claims = id->claims;      /* the ctx's reference now */
        id->claims = NULL;
        c->subject = id->subject;
        if ((rc = gw__header_add(c, true, GW_USERINFO_HEADER,
                                 id->payload_b64)) != 0)
            return rc;
        authz = kb_http_req_header(c->req, "Authorization");
        if (authz != NULL &&
            (rc = gw__header_add(c, true, GW_FWD_AUTH_HEADER, authz)) != 0)
            return rc;
    }
    if (id->key_name != NULL) {
        c->api_key = id->key_name;
        if (c->subject == NULL) {
            size_t n = strlen(id->key_name) + 5;
            char *sub = kb_pool_alloc(c->req->pool, n);
            if (sub == NULL)
                return KB_ENOMEM;
            snprintf(sub, n, "key:%s", id->key_name);
            c->subject = sub;
        }
    }
    return 0;
}

static void
reject(gw_ctx *c, const struct gw_auth *au, result worst)
{
    switch (worst) {
    case AR_KEY_FORBIDDEN:
        gw__respond_error(c, 403, "%s", MSG_KEY_FORBIDDEN);
        return;
    case AR_KEY_INVALID:
        gw__respond_error(c, 400, "%s", MSG_KEY_INVALID);
        return;
    case AR_INVALID:
        gw__header_add(c, false, "WWW-Authenticate",
                       "Bearer realm=\"" REALM "\", error=\"invalid_token\"");
        gw__respond_error(c, 401, "%s", MSG_BAD_CREDENTIALS);
        return;
    default:                         /* nothing presented */
        if (au->has_jwt) {
            gw__header_add(c, false, "WWW-Authenticate",
                           "Bearer realm=\"" REALM "\"");
            gw__respond_error(c, 401, "%s", MSG_BAD_CREDENTIALS);
        } else {
            gw__respond_error(c, 401, "%s", MSG_KEY_MISSING);
        }
        return;
    }
}

gw_step
gw__auth_stage(gw_ctx *c)
{
    const struct gw_auth *au = c->route != NULL ? c->route->auth : NULL;
    result worst = AR_MISSING;

    if (au == NULL)
        return GW_NEXT;
    for (size_t i = 0; i < au->nalts; i++) {
        const auth_alt *alt = &au->alts[i];
        ident id;
        result r = AR_OK;

        memset(&id, 0, sizeof(id));
        for (size_t k = 0; k < alt->n && r == AR_OK; k++) {
            const gw_scheme *sc = alt->schemes[k];
            if (sc->kind == SCHEME_JWT && id.claims != NULL) {
                ident extra;         /* a second JWT: verify, keep first */
                memset(&extra, 0, sizeof(extra));
                r = check_jwt(c, sc, &extra);
                json_decref(extra.claims);
            } else if (sc->kind == SCHEME_JWT) {
                r = check_jwt(c, sc, &id);
            } else {
                r = check_apikey(c, sc, &id);
            }
        }
        if (r == AR_PENDING) {
            json_decref(id.claims);
            /* proxy.c resumes at c->stage, which it moved past us before
             * calling: step back so the resumed pipeline runs this stage
             * again (now with keys, or to refuse). */
            if (c->stage > 0)
                c->stage--;
            return GW_PENDING;
        }
        if (r == AR_OK) {
            int rc = apply(c, &id);
            json_decref(id.claims);
            if (rc != 0) {
                kb_log_error("gateway: auth headers", "{s:s}", "error",
                             kb_strerror(rc));
                gw__respond_error(c, 500, "internal error");
                return GW_DONE;
            }
            return GW_NEXT;
        }
        json_decref(id.claims);
        if (worst == AR_MISSING && r != AR_MISSING)
            worst = r;               /* the first credential refused */
    }
    if (au->optional && worst == AR_MISSING)
        return GW_NEXT;
    reject(c, au, worst);
    return GW_DONE;
}
