/*
 * cache.c - the gateway's response cache (x-kiban-cache): GET/HEAD answers
 * kept in memory, bounded in bytes with LRU eviction, sharded so every
 * worker loop can use it, with request coalescing so a stampede of
 * identical misses sends one request upstream.  The cache stage runs
 * after auth (the subject is part of the key) and before aggregation.
 */
#include "gateway/gw_int.h"
#include "core/err.h"
#include "core/id.h"
#include "core/time.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CACHE_SHARDS         16                /* power of two */
#define CACHE_DEFAULT_MAX    ((size_t)64 << 20)
#define CACHE_DEFAULT_ENTRY  ((size_t)1 << 20)
#define CACHE_MAX_TTL_MS     (86400ull * 1000) /* one day */
#define CACHE_MAX_VARY       16
#define CACHE_MAX_KEY        (16 * 1024)       /* longer keys: BYPASS */
#define CACHE_MAX_QPARAMS    256               /* more: query kept as is */
#define CACHE_MAX_WAITERS    4096              /* per in-flight miss */
#define CACHE_MIN_BUCKETS    64
#define CACHE_FILL_BUCKETS   64
#define CACHE_PTR_MAX        4160              /* a policy's pointer + field */

/* ------------------------------------------------------------------------ */
/* Types                                                                     */

enum { RES_HIT, RES_MISS, RES_BYPASS };
static const char *const result_names[] = { "hit", "miss", "bypass" };
static const char *const result_header[] = { "HIT", "MISS", "BYPASS" };

/* One compiled x-kiban-cache. */
struct gw_cache_policy {
    uint64_t ttl_ms;
    char   **vary;                   /* header names, as written */
    size_t   nvary;
    bool     is_public;              /* no per-user part in the key */
    size_t   max_entry;              /* bytes; 0 → CACHE_DEFAULT_ENTRY */
    _Atomic(kb_counter *) results[3];
};

/*
 * One stored answer: a single allocation holding the struct, its header
 * array, the header text, the key, the gateway id, the path and the body.
 * Reference counted: the shard's table holds one reference while the entry
 * is linked, and every reader (a hit being answered) holds one.
 */
typedef struct cache_entry {
    struct cache_entry *hnext;       /* hash chain */
    struct cache_entry *lru_prev, *lru_next; /* head: most recently used */
    atomic_uint         refs;
    uint64_t            hash;
    uint64_t            stored_ms;   /* monotonic */
    uint64_t            expires_ms;
    uint64_t            age0;        /* the backend's Age, seconds */
    size_t              bytes;       /* what it counts against the bound */
    int                 status;
    const char         *key;
    size_t              keylen;
    const char         *gwid;
    const char         *path;
    kb_http_header     *headers;
    size_t              nheaders;
    const char         *body;
    size_t              body_len;
} cache_entry;

/* A miss being fetched: identical requests wait here for its answer. */
typedef struct cache_fill {
    struct cache_fill *hnext;
    uint64_t           hash;
    char              *key;
    size_t             keylen;
    gw_ctx           **waiters;
    size_t             nwaiters, cap;
} cache_fill;

typedef struct cache_shard {
    pthread_mutex_t lock;
    cache_entry   **buckets;
    size_t          nbuckets;        /* power of two */
    size_t          count;
    size_t          bytes;
    cache_entry    *lru_head, *lru_tail;
    cache_fill     *fills[CACHE_FILL_BUCKETS];
} cache_shard;

struct gw_cache {
    kb_gateway     *gw;              /* for cache_max_bytes */
    uint8_t         seed[16];        /* SipHash key: keys are user input */
    kb_gauge       *bytes_gauge;
    cache_shard     shards[CACHE_SHARDS];
};

/* What a request does in the cache stage. */
typedef enum cr_state {
    CR_NONE,
    CR_LEADER,                       /* fetching; `fill` is ours */
    CR_WAITING,                      /* in another request's fill */
    CR_WOKEN,                        /* the leader answered: see `entry` */
    CR_UPSTREAM                      /* going upstream (maybe storing) */
} cr_state;

struct gw_cache_req {
    gw_ctx                       *c;
    struct gw_cache              *cache;
    const struct gw_cache_policy *pol;
    char                         *key;        /* pool */
    size_t                        keylen;
    uint64_t                      hash;
    cr_state                      state;
    bool                          per_user;
    cache_fill                   *fill;       /* LEADER: until resolved */
    cache_entry                  *entry;      /* WOKEN: a reference */
};

/* The clock; unit tests replace it. */
static uint64_t (*cache_now_ms)(void) = kb_time_mono_ms;

/* ------------------------------------------------------------------------ */
/* SipHash-2-4 (Aumasson and Bernstein): keys are built from request input,
 * so the table's hash is keyed with a per-process random seed.            */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                       \
    do {                                                               \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);      \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                         \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                         \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);      \
    } while (0)

static uint64_t
le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t
siphash24(const uint8_t key[16], const void *data, size_t len)
{
    const uint8_t *m = data, *end = m + (len & ~(size_t)7);
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    uint64_t b = (uint64_t)len << 56;

    for (; m != end; m += 8) {
        uint64_t mi = le64(m);
        v3 ^= mi;
        SIPROUND;
        SIPROUND;
        v0 ^= mi;
    }
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)m[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    for (int r = 0; r < 4; r++)
        SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ------------------------------------------------------------------------ */
/* Policy: compiling x-kiban-cache                                           */

int
gw__cache_duration(const json_t *v, uint64_t *out_ms)
{
    double secs, scale = 1.0;
    char *end, num[32];
    const char *s;
    size_t n;

    if (json_is_integer(v) || json_is_real(v)) {
        secs = json_number_value(v);
    } else if (json_is_string(v)) {
        s = json_string_value(v);
        n = strspn(s, "0123456789.");  /* no sign, exponent, hex, inf */
        if (n == 0 || n >= sizeof(num))
            return KB_EINVAL;
        memcpy(num, s, n);
        num[n] = '\0';
        secs = strtod(num, &end);
        if (*end != '\0')
            return KB_EINVAL;
        s += n;                        /* the unit */
        if (strcmp(s, "ms") == 0)
            scale = 0.001;
        else if (strcmp(s, "s") == 0 || *s == '\0')
            scale = 1.0;
        else if (strcmp(s, "m") == 0)
            scale = 60.0;
        else if (strcmp(s, "h") == 0)
            scale = 3600.0;
        else
            return KB_EINVAL;
        secs *= scale;
    } else {
        return KB_EINVAL;
    }
    if (!(secs > 0.0) || secs > 1e9)
        return KB_EINVAL;
    *out_ms = (uint64_t)(secs * 1000.0 + 0.5);
    if (*out_ms == 0)
        *out_ms = 1;
    return 0;
}

/* A header name: an RFC 9110 token. */
static bool
token_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

void
gw__cache_policy_free(struct gw_cache_policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nvary; i++)
        free(p->vary[i]);
    free(p->vary);
    free(p);
}

int
gw__cache_policy_parse(const json_t *v, const char *pointer,
                       struct gw_cache_policy **out, char *err, size_t errlen)
{
    struct gw_cache_policy *p;
    const char *field;
    char fp[CACHE_PTR_MAX];          /* pointer of the field at hand */
    json_t *val;
    int rc = 0;

    *out = NULL;
    if (!json_is_object(v))
        return gw__spec_fail(err, errlen, pointer, "must be an object {ttl, "
                             "vary, public, maxEntryBytes} or false");
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return KB_ENOMEM;
    json_object_foreach((json_t *)v, field, val) {
        gw__pointer_join(fp, sizeof(fp), pointer, field);
        if (strcmp(field, "ttl") == 0) {
            if (gw__cache_duration(val, &p->ttl_ms) != 0 ||
                p->ttl_ms > CACHE_MAX_TTL_MS) {
                rc = gw__spec_fail(err, errlen, fp, "must be a duration such "
                                   "as \"30s\", \"5m\" or a number of seconds, "
                                   "more than 0 and at most 1 day");
                goto out_free;
            }
        } else if (strcmp(field, "vary") == 0) {
            size_t i;
            json_t *h;
            if (!json_is_array(val) || json_array_size(val) > CACHE_MAX_VARY) {
                rc = gw__spec_fail(err, errlen, fp, "must be an array of at "
                                   "most %d header names", CACHE_MAX_VARY);
                goto out_free;
            }
            p->vary = calloc(json_array_size(val) + 1, sizeof(char *));
            if (p->vary == NULL) {
                rc = KB_ENOMEM;
                goto out_free;
            }
            json_array_foreach(val, i, h) {
                if (!json_is_string(h) || !token_ok(json_string_value(h))) {
                    rc = gw__spec_fail(err, errlen, fp,
                                       "item %zu must be a header name", i);
                    goto out_free;
                }
                for (size_t k = 0; k < p->nvary; k++)
                    if (strcasecmp(p->vary[k], json_string_value(h)) == 0) {
                        rc = gw__spec_fail(err, errlen, fp,
                                           "\"%s\" is listed twice",
                                           json_string_value(h));
                        goto out_free;
                    }
                if ((p->vary[p->nvary] = strdup(json_string_value(h))) ==
                    NULL) {
                    rc = KB_ENOMEM;
                    goto out_free;
                }
                p->nvary++;
            }
        } else if (strcmp(field, "public") == 0) {
            if (!json_is_boolean(val)) {
                rc = gw__spec_fail(err, errlen, fp, "must be a boolean");
                goto out_free;
            }
            p->is_public = json_is_true(val);
        } else if (strcmp(field, "maxEntryBytes") == 0) {
            if (!json_is_integer(val) || json_integer_value(val) < 1 ||
                json_integer_value(val) > (json_int_t)1 << 40) {
                rc = gw__spec_fail(err, errlen, fp,
                                   "must be a positive integer");
                goto out_free;
            }
            p->max_entry = (size_t)json_integer_value(val);
        } else {
            rc = gw__spec_fail(err, errlen, fp, "unknown field (known: ttl, "
                               "vary, public, maxEntryBytes)");
            goto out_free;
        }
    }
    if (p->ttl_ms == 0) {
        gw__pointer_join(fp, sizeof(fp), pointer, "ttl");
        rc = gw__spec_fail(err, errlen, fp, "required");
        goto out_free;
    }
    *out = p;
    return 0;

out_free:
    gw__cache_policy_free(p);
    return rc;
}

static bool
cacheable_method(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
}

int
gw__cache_compile(gw_spec *s, char *err, size_t errlen)
{
    const json_t *dflt = s->doc != NULL
        ? json_object_get(s->doc, "x-kiban-cache") : NULL;
    struct gw_cache_policy *check;
    int rc;

    /* the document's default must be valid even if no route uses it */
    if (dflt != NULL && !json_is_false(dflt)) {
        if ((rc = gw__cache_policy_parse(dflt, "/x-kiban-cache", &check, err,
                                         errlen)) != 0)
            return rc;
        gw__cache_policy_free(check);
    }
    for (size_t i = 0; i < s->nroutes; i++) {
        gw_route *r = &s->routes[i];
        const json_t *v = r->op != NULL
            ? json_object_get(r->op, "x-kiban-cache") : NULL;
        kb_buf ptr = KB_BUF_INIT(4096);

        if (v == NULL) {
            /* the default covers GET and HEAD operations only */
            if (dflt == NULL || json_is_false(dflt) ||
                !cacheable_method(r->method))
                continue;
            v = dflt;
        } else if (json_is_false(v)) {
            continue;                /* this operation opts out */
        }
        if (kb_buf_appends(&ptr, r->pointer) != 0 ||
            kb_buf_appends(&ptr, v == dflt ? "" : "/x-kiban-cache") != 0) {
            kb_buf_free(&ptr);
            gw__cache_release(s);
            return KB_ENOMEM;
        }
        if (!cacheable_method(r->method)) {
            rc = gw__spec_fail(err, errlen, kb_buf_cstr(&ptr), "only GET and "
                               "HEAD operations can be cached (this one is %s)",
                               r->method);
        } else {
            rc = gw__cache_policy_parse(v, v == dflt ? "/x-kiban-cache"
                                                     : kb_buf_cstr(&ptr),
                                        &r->cache, err, errlen);
        }
        kb_buf_free(&ptr);
        if (rc != 0) {
            gw__cache_release(s);
            return rc;
        }
    }
    return 0;
}

void
gw__cache_release(gw_spec *s)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        gw__cache_policy_free(s->routes[i].cache);
        s->routes[i].cache = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* The key                                                                   */

/* One length-prefixed field: keys never collide through separators. */
static int
key_field(kb_buf *k, const char *p, size_t n)
{
    int rc = kb_buf_appendf(k, "%zu:", n);

    return rc != 0 ? rc : kb_buf_append(k, p, n);
}

typedef struct qparam {
    const char *p;
    size_t      n, nlen;             /* whole "name=value", name length */
} qparam;

static int
qparam_cmp(const void *a, const void *b)
{
    const qparam *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int d = memcmp(x->p, y->p, n);

    if (d != 0)
        return d;
    if (x->nlen != y->nlen)
        return x->nlen < y->nlen ? -1 : 1;
    /* same name: keep the order they came in (stable) */
    return x->p < y->p ? -1 : x->p > y->p;
}

/*
 * The query with its parameters sorted by name (equal names keep their
 * order, empty pieces dropped): ?b=2&a=1 and ?a=1&b=2 share an entry.
 */
static int
query_normalize(kb_buf *k, const char *query)
{
    qparam qs[CACHE_MAX_QPARAMS];
    kb_buf q = KB_BUF_INIT(CACHE_MAX_KEY);
    size_t nq = 0;
    int rc = 0;

    for (const char *p = query; *p != '\0'; p += *p == '&') {
        size_t n = strcspn(p, "&");
        if (n > 0 && nq == CACHE_MAX_QPARAMS)
            return key_field(k, query, strlen(query));   /* as it is */
        if (n > 0) {
            size_t nlen = strcspn(p, "=");
            qs[nq++] = (qparam){ p, n, nlen < n ? nlen : n };
        }
        p += n;
    }
    qsort(qs, nq, sizeof(qs[0]), qparam_cmp);
    for (size_t i = 0; i < nq && rc == 0; i++)
        if ((i == 0 || (rc = kb_buf_appendc(&q, '&')) == 0))
            rc = kb_buf_append(&q, qs[i].p, qs[i].n);
    if (rc == 0)
        rc = key_field(k, kb_buf_cstr(&q), q.len);
    kb_buf_free(&q);
    return rc;
}

/* Every value of a request header, joined with ","; NULL when absent. */
static int
header_joined(const kb_http_req *req, const char *name, kb_buf *out,
              bool *present)
{
    int rc = 0;

    *present = false;
    for (size_t i = 0; i < req->nheaders && rc == 0; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) {
            if (*present)
                rc = kb_buf_appendc(out, ',');
            if (rc == 0)
                rc = kb_buf_appends(out, req->headers[i].value);
            *present = true;
        }
    return rc;
}

/* SHA-256 (hex) of the request's Authorization and Cookie headers. */
static int
credential_hash(const kb_http_req *req, char hex[65], bool *any)
{
    kb_buf b = KB_BUF_INIT(CACHE_MAX_KEY * 4);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool a = false, k = false;
    int rc;

    if ((rc = header_joined(req, "Authorization", &b, &a)) == 0 &&
        (rc = kb_buf_appendc(&b, '\n')) == 0)
        rc = header_joined(req, "Cookie", &b, &k);
    if (rc != 0) {
        kb_buf_free(&b);
        return rc;
    }
    *any = a || k;
    if (*any && gw__sha256((const void *[]){ b.data }, &b.len, 1, md) != 0)
        rc = KB_ENOMEM;
    mdlen = *any ? 32 : 0;
    kb_buf_free(&b);
    for (unsigned int i = 0; i < mdlen && rc == 0; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[*any && rc == 0 ? 64 : 0] = '\0';
    return rc;
}

/*
 * The key of a request: gateway id, method class (GET and HEAD share),
 * path, normalized query, each vary header's value, `what` (aggregate
 * calls; NULL for whole responses), and who is asking: nothing when the
 * policy is public, else the verified subject, else a hash of the
 * Authorization and Cookie headers (requests with credentials nobody
 * verified never share), else "anonymous".  *per_user says whether the
 * entry is private to one user.  0, KB_ETOOBIG, KB_ENOMEM.
 */
static int
key_build(kb_buf *k, const char *gwid, const kb_http_req *req,
          const char *subject, const struct gw_cache_policy *p,
          const char *what, bool *per_user)
{
    kb_buf v = KB_BUF_INIT(CACHE_MAX_KEY);
    int rc;

    k->max = CACHE_MAX_KEY;
    kb_buf_reset(k);
    *per_user = false;
    if ((rc = key_field(k, gwid, strlen(gwid))) != 0 ||
        (rc = kb_buf_appends(k, "G")) != 0 ||
        (rc = key_field(k, req->path, strlen(req->path))) != 0 ||
        (rc = query_normalize(k, req->query)) != 0)
        return rc;
    for (size_t i = 0; i < p->nvary; i++) {
        bool present;
        kb_buf_reset(&v);
        if ((rc = header_joined(req, p->vary[i], &v, &present)) != 0)
            goto out_free_v;
        rc = present ? key_field(k, v.data != NULL ? v.data : "", v.len)
                     : kb_buf_appends(k, "-");
        if (rc != 0)
            goto out_free_v;
    }
    if (what != NULL && (rc = key_field(k, what, strlen(what))) != 0)
        goto out_free_v;
    if (p->is_public) {
        rc = kb_buf_appends(k, "P");
    } else if (subject != NULL) {
        if ((rc = kb_buf_appends(k, "S")) == 0)
            rc = key_field(k, subject, strlen(subject));
        *per_user = true;
    } else {
        char hex[65];
        bool any = false;
        if ((rc = credential_hash(req, hex, &any)) != 0)
            goto out_free_v;
        rc = any ? kb_buf_appendf(k, "C%s", hex) : kb_buf_appends(k, "A");
        *per_user = any;
    }
out_free_v:
    kb_buf_free(&v);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Deciding what is stored (RFC 9111, for a shared cache)                    */

typedef struct cc_directives {
    bool no_store, no_cache, priv, pub;
    long max_age, s_maxage;          /* seconds; -1 when absent */
} cc_directives;

/* A delta-seconds value; invalid ones count as 0 (RFC 9111 §1.2.2). */
static long
delta_seconds(const char *v, size_t n)
{
    long s = 0;

    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        s = s > (LONG_MAX - 9) / 10 ? LONG_MAX / 2 : s * 10 + (v[i] - '0');
    }
    return s;
}

/* Parse one Cache-Control value into d (directives accumulate). */
static void
cc_parse(const char *s, cc_directives *d)
{
    while (*s != '\0') {
        size_t n, vn = 0;
        const char *val = NULL;

        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        n = strcspn(s, "=, \t");
        if (n == 0) {
            if (*s == '\0')
                break;
            s++;                     /* stray '=' */
            continue;
        }
        const char *name = s;
        s += n;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '=') {
            s++;
            while (*s == ' ' || *s == '\t')
                s++;
            val = s;
            if (*s == '"') {
                const char *q = strchr(s + 1, '"');
                vn = q != NULL ? (size_t)(q - s) + 1 : strlen(s);
            } else {
                vn = strcspn(s, ", \t");
            }
            s += vn;
        }
#define IS(lit) (n == sizeof(lit) - 1 && strncasecmp(name, lit, n) == 0)
        if (IS("no-store"))
            d->no_store = true;
        else if (IS("no-cache"))     /* also no-cache="field": not stored */
            d->no_cache = true;
        else if (IS("private"))      /* also private="field" */
            d->priv = true;
        else if (IS("public"))
            d->pub = true;
        else if (IS("max-age"))
            d->max_age = val != NULL ? delta_seconds(val, vn) : 0;
        else if (IS("s-maxage"))
            d->s_maxage = val != NULL ? delta_seconds(val, vn) : 0;
#undef IS
    }
}

static bool
status_cacheable(int status)
{
    static const int ok[] = { 200, 203, 204, 300, 301, 308, 404, 410 };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (status == ok[i])
            return true;
    return false;
}

static bool
vary_listed(const struct gw_cache_policy *p, const char *name, size_t n)
{
    for (size_t i = 0; i < p->nvary; i++)
        if (strlen(p->vary[i]) == n && strncasecmp(p->vary[i], name, n) == 0)
            return true;
    return false;
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") as Unix seconds. */
static bool
http_date(const char *s, time_t *out)
{
    struct tm tm;
    const char *end;

    memset(&tm, 0, sizeof(tm));
    end = s != NULL ? strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm) : NULL;
    if (end == NULL || *end != '\0')
        return false;
    *out = timegm(&tm);
    return true;
}

/*
 * How long the answer may be kept, in ms; 0: not stored (*why says why).
 * The policy's ttl is the ceiling: the backend's s-maxage, max-age or
 * Expires shorten it, never lengthen it.
 */
static uint64_t
store_ttl(const struct gw_cache_policy *p, int status,
          const kb_http_header *h, size_t nh, bool per_user,
          const char **why)
{
    cc_directives d = { .max_age = -1, .s_maxage = -1 };
    const char *expires = NULL, *date = NULL;
    uint64_t ttl = p->ttl_ms;

    if (!status_cacheable(status)) {
        *why = "status";
        return 0;
    }
    for (size_t i = 0; i < nh; i++) {
        const char *name = h[i].name;
        if (strcasecmp(name, "Cache-Control") == 0) {
            cc_parse(h[i].value, &d);
        } else if (strcasecmp(name, "Set-Cookie") == 0) {
            *why = "set-cookie";
            return 0;
        } else if (strcasecmp(name, "Expires") == 0) {
            expires = h[i].value;
        } else if (strcasecmp(name, "Date") == 0) {
            date = h[i].value;
        } else if (strcasecmp(name, "Vary") == 0) {
            /* every header the backend varies on must be in our key */
            for (const char *v = h[i].value; *v != '\0';) {
                size_t n;
                while (*v == ' ' || *v == '\t' || *v == ',')
                    v++;
                n = strcspn(v, ", \t");
                if (n > 0 && ((n == 1 && *v == '*') ||
                              !vary_listed(p, v, n))) {
                    *why = "vary";
                    return 0;
                }
                v += n;
            }
        }
    }
    if (d.no_store || d.no_cache) {
        *why = d.no_store ? "no-store" : "no-cache";
        return 0;
    }
    if (d.priv && !per_user) {
        *why = "private";
        return 0;
    }
    if (d.s_maxage >= 0 || d.max_age >= 0) {
        long s = d.s_maxage >= 0 ? d.s_maxage : d.max_age;
        if ((uint64_t)s < ttl / 1000 + 1 && (uint64_t)s * 1000 < ttl)
            ttl = (uint64_t)s * 1000;
    } else if (expires != NULL) {
        time_t e, now = time(NULL);
        if (!http_date(expires, &e)) {
            ttl = 0;                 /* invalid Expires: already stale */
        } else {
            time_t base;
            if (!http_date(date, &base))
                base = now;
            ttl = e <= base ? 0
                  : (uint64_t)(e - base) * 1000 < ttl
                      ? (uint64_t)(e - base) * 1000 : ttl;
        }
    }
    if (ttl == 0)
        *why = "expired";
    return ttl;
}

/* ------------------------------------------------------------------------ */
/* Entries, shards, LRU                                                      */

static size_t
cache_max(const struct gw_cache *cache)
{
    return cache->gw != NULL && cache->gw->cache_max_bytes > 0
               ? cache->gw->cache_max_bytes : CACHE_DEFAULT_MAX;
}

static void
entry_unref(cache_entry *e)
{
    if (e != NULL && atomic_fetch_sub(&e->refs, 1) == 1)
        free(e);
}

/* Headers kept with an entry: not hop-by-hop, not ours, not recomputed. */
static bool
header_stored(const char *name, const char *connection)
{
    static const char *const skip[] = {
        "Content-Length", "Date", "Age", "X-Request-Id", "X-Cache",
        "Set-Cookie",
    };

    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strcasecmp(name, skip[i]) == 0)
            return false;
    return !gw__hop_by_hop(name, connection);
}

/*
 * A new entry (one reference) copying the answer; NULL when out of
 * memory.  gwid/path name it for purges.
 */
static cache_entry *
entry_new(const char *key, size_t keylen, uint64_t hash, const char *gwid,
          const char *path, int status, const kb_http_header *h, size_t nh,
          const char *body, size_t body_len)
{
    const char *connection = NULL;
    size_t nkeep = 0, text = 0, gl = strlen(gwid) + 1, pl = strlen(path) + 1;
    size_t total;
    cache_entry *e;
    char *p;

    for (size_t i = 0; i < nh; i++)
        if (strcasecmp(h[i].name, "Connection") == 0)
            connection = h[i].value;
    for (size_t i = 0; i < nh; i++)
        if (header_stored(h[i].name, connection)) {
            nkeep++;
            text += strlen(h[i].name) + strlen(h[i].value) + 2;
        }
    total = sizeof(*e) + nkeep * sizeof(kb_http_header) + text + keylen + 1 +
            gl + pl + body_len + 1;
    if ((e = malloc(total)) == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    atomic_init(&e->refs, 1);
    e->hash = hash;
    e->bytes = total;
    e->status = status;
    e->headers = (kb_http_header *)(e + 1);
    p = (char *)(e->headers + nkeep);
    for (size_t i = 0; i < nh; i++) {
        size_t n, v;
        if (!header_stored(h[i].name, connection))
            continue;
        n = strlen(h[i].name) + 1;
        v = strlen(h[i].value) + 1;
        memcpy(p, h[i].name, n);
        memcpy(p + n, h[i].value, v);
        e->headers[e->nheaders++] = (kb_http_header){ p, p + n };
        p += n + v;
    }
    memcpy(p, key, keylen);
    p[keylen] = '\0';
    e->key = p;
    e->keylen = keylen;
    p += keylen + 1;
    memcpy(p, gwid, gl);
    e->gwid = p;
    p += gl;
    memcpy(p, path, pl);
    e->path = p;
    p += pl;
    if (body_len > 0)
        memcpy(p, body, body_len);
    p[body_len] = '\0';
    e->body = p;
    e->body_len = body_len;
    return e;
}

static cache_shard *
shard_of(struct gw_cache *cache, uint64_t hash)
{
    return &cache->shards[hash >> 60 & (CACHE_SHARDS - 1)];
}

static void
lru_unlink(cache_shard *s, cache_entry *e)
{
    if (e->lru_prev != NULL)
        e->lru_prev->lru_next = e->lru_next;
    else
        s->lru_head = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->lru_prev = e->lru_prev;
    else
        s->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void
lru_push(cache_shard *s, cache_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = s->lru_head;
    if (s->lru_head != NULL)
        s->lru_head->lru_prev = e;
    s->lru_head = e;
    if (s->lru_tail == NULL)
        s->lru_tail = e;
}

/* Take e out of the shard (lock held) and drop the table's reference. */
static void
entry_remove(struct gw_cache *cache, cache_shard *s, cache_entry *e)
{
    cache_entry **pp = &s->buckets[e->hash & (s->nbuckets - 1)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(s, e);
    s->count--;
    s->bytes -= e->bytes;
    if (cache->bytes_gauge != NULL)
        kb_gauge_add(cache->bytes_gauge, -(double)e->bytes);
    entry_unref(e);
}

static cache_entry *
entry_find(cache_shard *s, uint64_t hash, const char *key, size_t keylen)
{
    if (s->buckets == NULL)
        return NULL;
    for (cache_entry *e = s->buckets[hash & (s->nbuckets - 1)]; e != NULL;
         e = e->hnext)
        if (e->hash == hash && e->keylen == keylen &&
            memcmp(e->key, key, keylen) == 0)
            return e;
    return NULL;
}

/* Double the bucket array (lock held); on failure keep the old one. */
static void
shard_grow(cache_shard *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : CACHE_MIN_BUCKETS;
    cache_entry **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return;
    for (size_t i = 0; i < s->nbuckets; i++)
        for (cache_entry *e = s->buckets[i], *next; e != NULL; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/*
 * Link e (whose reference passes to the table) into its shard, replacing
 * an entry with the same key and evicting from the LRU tail until the
 * shard fits its share of the bound.  Lock held.  false (e released) when
 * it can never fit.
 */
static bool
entry_insert(struct gw_cache *cache, cache_shard *s, cache_entry *e)
{
    size_t limit = cache_max(cache) / CACHE_SHARDS;
    cache_entry *old;

    if (e->bytes > limit) {
        entry_unref(e);
        return false;
    }
    if ((old = entry_find(s, e->hash, e->key, e->keylen)) != NULL)
        entry_remove(cache, s, old);
    while (s->bytes + e->bytes > limit && s->lru_tail != NULL)
        entry_remove(cache, s, s->lru_tail);
    if (s->count >= s->nbuckets)
        shard_grow(s);
    if (s->buckets == NULL) {
        entry_unref(e);
        return false;
    }
    e->hnext = s->buckets[e->hash & (s->nbuckets - 1)];
    s->buckets[e->hash & (s->nbuckets - 1)] = e;
    lru_push(s, e);
    s->count++;
    s->bytes += e->bytes;
    if (cache->bytes_gauge != NULL)
        kb_gauge_add(cache->bytes_gauge, (double)e->bytes);
    return true;
}

/*
 * A fresh entry for the key with a new reference (moved to the LRU head),
 * or NULL; an expired one is dropped.  Lock held.
 */
static cache_entry *
entry_get(struct gw_cache *cache, cache_shard *s, uint64_t hash,
          const char *key, size_t keylen)
{
    cache_entry *e = entry_find(s, hash, key, keylen);

    if (e == NULL)
        return NULL;
    if (cache_now_ms() >= e->expires_ms) {
        entry_remove(cache, s, e);
        return NULL;
    }
    lru_unlink(s, e);
    lru_push(s, e);
    atomic_fetch_add(&e->refs, 1);
    return e;
}

static cache_fill **
fill_slot(cache_shard *s, uint64_t hash, const char *key, size_t keylen)
{
    cache_fill **pp = &s->fills[(hash >> 8) & (CACHE_FILL_BUCKETS - 1)];

    for (; *pp != NULL; pp = &(*pp)->hnext)
        if ((*pp)->hash == hash && (*pp)->keylen == keylen &&
            memcmp((*pp)->key, key, keylen) == 0)
            break;
    return pp;
}

/* ------------------------------------------------------------------------ */
/* Gateway-wide state                                                        */

int
gw__cache_init(kb_gateway *gw)
{
    struct gw_cache *cache = calloc(1, sizeof(*cache));
    size_t i;
    int rc;

    if (cache == NULL)
        return KB_ENOMEM;
    cache->gw = gw;
    if ((rc = kb_random_bytes(cache->seed, sizeof(cache->seed))) != 0)
        goto out_free;
    cache->bytes_gauge = kb_gauge_get("kiban_gateway_cache_bytes",
                                      "Bytes held by the gateway's response "
                                      "cache.", NULL);
    for (i = 0; i < CACHE_SHARDS; i++)
        if ((rc = -pthread_mutex_init(&cache->shards[i].lock, NULL)) != 0)
            goto out_destroy;
    gw->cache = cache;
    return 0;

out_destroy:
    while (i-- > 0)
        pthread_mutex_destroy(&cache->shards[i].lock);
out_free:
    free(cache);
    return rc;
}

void
gw__cache_fini(kb_gateway *gw)
{
    struct gw_cache *cache = gw->cache;

    if (cache == NULL)
        return;
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &cache->shards[i];
        while (s->lru_tail != NULL)
            entry_remove(cache, s, s->lru_tail);
        free(s->buckets);
        /* no request outlives the gateway, so no fill is left; be safe */
        for (size_t b = 0; b < CACHE_FILL_BUCKETS; b++)
            for (cache_fill *f = s->fills[b], *next; f != NULL; f = next) {
                next = f->hnext;
                free(f->waiters);
                free(f->key);
                free(f);
            }
        pthread_mutex_destroy(&s->lock);
    }
    free(cache);
    gw->cache = NULL;
}

long
kb_gateway_cache_purge(kb_gateway *gw, const char *project, const char *name,
                       const char *path_prefix)
{
    struct gw_cache *cache = gw != NULL ? gw->cache : NULL;
    size_t plen = path_prefix != NULL ? strlen(path_prefix) : 0;
    char id[1024];
    long n = 0;

    if (cache == NULL || project == NULL || name == NULL)
        return 0;
    if ((size_t)snprintf(id, sizeof(id), "%s/%s", project, name) >=
        sizeof(id))
        return 0;
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &cache->shards[i];
        pthread_mutex_lock(&s->lock);
        for (cache_entry *e = s->lru_head, *next; e != NULL; e = next) {
            next = e->lru_next;
            if (strcmp(e->gwid, id) == 0 &&
                strncmp(e->path, path_prefix != NULL ? path_prefix : "",
                        plen) == 0) {
                entry_remove(cache, s, e);
                n++;
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* The stage                                                                 */

static void
count_result(const gw_ctx *c, int result)
{
    struct gw_cache_policy *p = c->route->cache;
    kb_counter *ctr = atomic_load(&p->results[result]);

    if (ctr == NULL) {
        kb_buf labels = KB_BUF_INIT(4096);
        int rc = kb_buf_appends(&labels, "gateway=\"");
        rc |= kb_metrics_label_escape(&labels, c->route->spec->id);
        rc |= kb_buf_appendf(&labels, "\",result=\"%s\"",
                             result_names[result]);
        if (rc == 0)
            ctr = kb_counter_get("kiban_gateway_cache_requests_total",
                                 "Requests to cached operations, by what "
                                 "the cache did.", kb_buf_cstr(&labels));
        kb_buf_free(&labels);
        if (ctr == NULL)
            return;
        atomic_store(&p->results[result], ctr);
    }
    kb_counter_add(ctr, 1);
}

/* X-Cache on whatever answer the request gets; counted. */
static void
mark(gw_ctx *c, int result)
{
    c->cache_state = result_header[result];
    gw__header_add(c, false, "X-Cache", result_header[result]);
    count_result(c, result);
}

/* Answer from an entry (GET: the body; HEAD: only its length). */
static void
respond_hit(gw_ctx *c, cache_entry *e)
{
    kb_http_header *h;
    char age[24], len[24];
    uint64_t now = cache_now_ms();
    size_t nh = 0;
    bool head = strcmp(c->req->method, "HEAD") == 0;

    c->cache_state = "HIT";
    count_result(c, RES_HIT);
    h = kb_pool_alloc(c->req->pool, (e->nheaders + 3) * sizeof(*h));
    if (h == NULL) {
        entry_unref(e);
        gw__respond_error(c, 500, "out of memory");
        return;
    }
    memcpy(h, e->headers, e->nheaders * sizeof(*h));
    nh = e->nheaders;
    snprintf(age, sizeof(age), "%llu",
             (unsigned long long)(e->age0 +
                                  (now > e->stored_ms
                                       ? (now - e->stored_ms) / 1000 : 0)));
    h[nh++] = (kb_http_header){ "X-Cache", "HIT" };
    h[nh++] = (kb_http_header){ "Age", age };
    if (head) {
        snprintf(len, sizeof(len), "%zu", e->body_len);
        h[nh++] = (kb_http_header){ "Content-Length", len };
    }
    /* gw__respond copies headers and body before it returns */
    gw__respond(c, e->status, h, nh, head ? NULL : e->body,
                head ? 0 : e->body_len);
    entry_unref(e);
}

/* Hand the fill's waiters the answer (entry may be NULL: go upstream
 * yourselves).  The fill is detached already; it is freed here. */
static void
fill_wake(cache_fill *f, cache_entry *e)
{
    for (size_t i = 0; i < f->nwaiters; i++) {
        gw_ctx *w = f->waiters[i];
        if (e != NULL)
            atomic_fetch_add(&e->refs, 1);
        w->cache_req->entry = e;
        w->cache_req->state = CR_WOKEN;
        gw__post(w);
    }
    free(f->waiters);
    free(f->key);
    free(f);
}

/* Detach the leader's fill (lock held); NULL when already resolved. */
static cache_fill *
fill_detach(struct gw_cache_req *cr, cache_shard *s)
{
    cache_fill *f = cr->fill, **pp;

    if (f == NULL)
        return NULL;
    pp = fill_slot(s, cr->hash, cr->key, cr->keylen);
    if (*pp == f)
        *pp = f->hnext;
    cr->fill = NULL;
    return f;
}

/*
 * Store res under cr's key if it may be stored (gwid/path name the entry
 * for purges), then release the requests waiting for it: with the entry,
 * or without (they go upstream themselves).
 */
static void
store_answer(struct gw_cache_req *cr, const char *gwid, const char *path,
             const kb_http_client_res *res)
{
    cache_shard *s = shard_of(cr->cache, cr->hash);
    const char *why = NULL;
    uint64_t ttl = store_ttl(cr->pol, res->status, res->headers,
                             res->nheaders, cr->per_user, &why);
    size_t max_entry = cr->pol->max_entry ? cr->pol->max_entry
                                          : CACHE_DEFAULT_ENTRY;
    cache_entry *e = NULL;
    cache_fill *f;

    if (ttl > 0 && res->body_len <= max_entry &&
        (e = entry_new(cr->key, cr->keylen, cr->hash, gwid, path,
                       res->status, res->headers, res->nheaders, res->body,
                       res->body_len)) != NULL) {
        const char *age = kb_http_client_res_header(res, "Age");
        e->stored_ms = cache_now_ms();
        e->expires_ms = e->stored_ms + ttl;
        e->age0 = age != NULL ? (uint64_t)delta_seconds(age, strlen(age)) : 0;
    }
    pthread_mutex_lock(&s->lock);
    if (e != NULL) {
        atomic_fetch_add(&e->refs, 1);          /* ours, for the waiters */
        if (!entry_insert(cr->cache, s, e)) {
            entry_unref(e);
            e = NULL;
        }
    }
    f = fill_detach(cr, s);
    pthread_mutex_unlock(&s->lock);
    if (f != NULL)
        fill_wake(f, e);
    entry_unref(e);
}

/* The upstream's (or the aggregate's) answer: a gw_response_fn. */
static void
on_response(gw_ctx *c, const kb_http_client_res *res)
{
    store_answer(c->cache_req, c->route->spec->id, c->req->path, res);
}

/*
 * Request pool cleanup: a leader that never got an answer (upstream
 * failed, client gone) releases its waiters; a woken waiter that never
 * ran drops its entry.
 */
static void
req_release(void *data)
{
    struct gw_cache_req *cr = data;

    if (cr->fill != NULL) {
        cache_shard *s = shard_of(cr->cache, cr->hash);
        cache_fill *f;
        pthread_mutex_lock(&s->lock);
        f = fill_detach(cr, s);
        pthread_mutex_unlock(&s->lock);
        if (f != NULL)
            fill_wake(f, NULL);
    }
    entry_unref(cr->entry);
    cr->entry = NULL;
}

/*
 * The pipeline moves past a stage before running it (proxy.c runs
 * stages[c->stage++]); a waiter must come back to this stage when the
 * leader posts it, so it steps back one.
 */
static void
rerun_on_resume(gw_ctx *c)
{
    c->stage--;
}

typedef enum lookup_result {
    LOOKUP_HIT,                      /* *hit: a fresh entry (a reference) */
    LOOKUP_WAIT,                     /* joined a fill: PENDING */
    LOOKUP_LEAD,                     /* made the fill: fetch it */
    LOOKUP_MISS                      /* fetch it, nobody waits on us */
} lookup_result;

/*
 * Look cr's key up (key and hash set): a fresh entry, else join the fill
 * of an identical request in flight, else start one.  A HEAD never leads
 * (its answer has no body to store).
 */
static lookup_result
lookup(struct gw_cache_req *cr, bool head, cache_entry **hit)
{
    cache_shard *s = shard_of(cr->cache, cr->hash);
    lookup_result out = LOOKUP_MISS;
    cache_fill **slot, *f;

    pthread_mutex_lock(&s->lock);
    if ((*hit = entry_get(cr->cache, s, cr->hash, cr->key, cr->keylen)) !=
        NULL) {
        out = LOOKUP_HIT;
        goto out_unlock;
    }
    slot = fill_slot(s, cr->hash, cr->key, cr->keylen);
    if ((f = *slot) != NULL) {
        if (f->nwaiters == f->cap && f->cap < CACHE_MAX_WAITERS) {
            size_t cap = f->cap ? f->cap * 2 : 8;
            gw_ctx **grown = realloc(f->waiters, cap * sizeof(*grown));
            if (grown != NULL) {
                f->waiters = grown;
                f->cap = cap;
            }
        }
        if (f->nwaiters < f->cap) {  /* else: too many, go upstream */
            f->waiters[f->nwaiters++] = cr->c;
            cr->state = CR_WAITING;
            out = LOOKUP_WAIT;
        }
        goto out_unlock;
    }
    if (!head && (f = calloc(1, sizeof(*f))) != NULL) {
        if ((f->key = malloc(cr->keylen)) == NULL) {
            free(f);
            goto out_unlock;
        }
        memcpy(f->key, cr->key, cr->keylen);
        f->keylen = cr->keylen;
        f->hash = cr->hash;
        *slot = f;
        cr->fill = f;
        cr->state = CR_LEADER;
        out = LOOKUP_LEAD;
    }
out_unlock:
    pthread_mutex_unlock(&s->lock);
    return out;
}

/* Set up cr (in the pool) for c: its key, hash, cleanup.  0 or an error
 * (the key is too long, out of memory): then the cache is bypassed. */
static int
req_prepare(gw_ctx *c, struct gw_cache_req *cr)
{
    kb_buf key = KB_BUF_INIT(CACHE_MAX_KEY);
    int rc;

    cr->c = c;
    cr->cache = c->gw->cache;
    cr->pol = c->route->cache;
    rc = key_build(&key, c->route->spec->id, c->req, c->subject, cr->pol,
                   NULL, &cr->per_user);
    if (rc == 0 && (cr->key = kb_pool_strndup(c->req->pool, key.data,
                                              key.len)) == NULL)
        rc = KB_ENOMEM;
    if (rc == 0 && (rc = kb_pool_cleanup_add(c->req->pool, req_release,
                                             cr)) == 0) {
        cr->keylen = key.len;
        cr->hash = siphash24(cr->cache->seed, key.data, key.len);
    }
    kb_buf_free(&key);
    return rc;
}

gw_step
gw__cache_stage(gw_ctx *c)
{
    struct gw_cache_req *cr = c->cache_req;
    cache_entry *e;
    bool head;

    if (cr != NULL && cr->state == CR_WOKEN) {
        /* the leader answered: its entry, or go upstream without waiting */
        if (cr->entry != NULL) {
            e = cr->entry;
            cr->entry = NULL;
            respond_hit(c, e);
            return GW_DONE;
        }
        cr->state = CR_UPSTREAM;
        mark(c, RES_MISS);
        c->on_response = on_response;
        c->on_response_data = cr;
        return GW_NEXT;
    }
    if (c->route == NULL || c->route->cache == NULL || cr != NULL)
        return GW_NEXT;
    if (c->gw->cache == NULL || !cacheable_method(c->req->method) ||
        kb_http_req_header(c->req, "Range") != NULL ||
        (cr = kb_pool_calloc(c->req->pool, sizeof(*cr))) == NULL ||
        req_prepare(c, cr) != 0) {
        mark(c, RES_BYPASS);
        return GW_NEXT;
    }
    c->cache_req = cr;
    head = strcmp(c->req->method, "HEAD") == 0;
    switch (lookup(cr, head, &e)) {
    case LOOKUP_HIT:
        respond_hit(c, e);
        return GW_DONE;
    case LOOKUP_WAIT:
        rerun_on_resume(c);
        return GW_PENDING;
    case LOOKUP_LEAD:
    case LOOKUP_MISS:
        break;
    }
    if (cr->state != CR_LEADER)
        cr->state = CR_UPSTREAM;
    mark(c, RES_MISS);
    if (!head) {                     /* a HEAD's answer is never stored */
        c->on_response = on_response;
        c->on_response_data = cr;
    }
    return GW_NEXT;
}

/* ------------------------------------------------------------------------ */
/* For aggregate.c: one call's body under its own key                        */

static int
call_key(gw_ctx *c, const struct gw_cache_policy *p, const char *what,
         kb_buf *key, bool *per_user)
{
    if (c->gw->cache == NULL || c->route == NULL)
        return KB_ENOTFOUND;
    return key_build(key, c->route->spec->id, c->req, c->subject, p, what,
                     per_user);
}

int
gw__cache_call_get(gw_ctx *c, const struct gw_cache_policy *p,
                   const char *what, kb_buf *body)
{
    kb_buf key = KB_BUF_INIT(CACHE_MAX_KEY);
    struct gw_cache *cache = c->gw->cache;
    bool per_user;
    cache_entry *e = NULL;
    int rc;

    if (call_key(c, p, what, &key, &per_user) == 0) {
        uint64_t hash = siphash24(cache->seed, key.data, key.len);
        cache_shard *s = shard_of(cache, hash);
        pthread_mutex_lock(&s->lock);
        e = entry_get(cache, s, hash, key.data, key.len);
        pthread_mutex_unlock(&s->lock);
    }
    kb_buf_free(&key);
    if (e == NULL)
        return KB_ENOTFOUND;
    kb_buf_reset(body);
    rc = kb_buf_append(body, e->body, e->body_len);
    entry_unref(e);
    return rc;
}

int
gw__cache_call_put(gw_ctx *c, const struct gw_cache_policy *p,
                   const char *what, const kb_http_client_res *res)
{
    kb_buf key = KB_BUF_INIT(CACHE_MAX_KEY);
    struct gw_cache *cache = c->gw->cache;
    size_t max_entry = p->max_entry ? p->max_entry : CACHE_DEFAULT_ENTRY;
    const char *why = NULL;
    bool per_user;
    cache_entry *e;
    cache_shard *s;
    uint64_t hash, ttl;
    int rc;

    if ((rc = call_key(c, p, what, &key, &per_user)) != 0)
        goto out_free_key;
    ttl = store_ttl(p, res->status, res->headers, res->nheaders, per_user,
                    &why);
    if (ttl == 0 || res->body_len > max_entry) {
        rc = ttl == 0 ? KB_EINVAL : KB_ETOOBIG;
        goto out_free_key;
    }
    hash = siphash24(cache->seed, key.data, key.len);
    e = entry_new(key.data, key.len, hash, c->route->spec->id, c->req->path,
                  res->status, res->headers, res->nheaders, res->body,
                  res->body_len);
    if (e == NULL) {
        rc = KB_ENOMEM;
        goto out_free_key;
    }
    e->stored_ms = cache_now_ms();
    e->expires_ms = e->stored_ms + ttl;
    s = shard_of(cache, hash);
    pthread_mutex_lock(&s->lock);
    rc = entry_insert(cache, s, e) ? 0 : KB_ETOOBIG;
    pthread_mutex_unlock(&s->lock);
out_free_key:
    kb_buf_free(&key);
    return rc;
}
