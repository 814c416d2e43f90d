/*
 * ratelimit.c - per-operation rate limits: token buckets keyed by client
 * IP, API key name or a JWT claim.  Policies compile from x-kiban-rate-limit
 * and from Google's quota form (x-google-management.quota + x-google-quota);
 * buckets live gateway-wide in a sharded, bounded hash (kb_gateway->rl), so
 * re-applying a spec keeps them.  See docs/gateway.md#rate-limits.
 */
#include "gateway/gw_int.h"
#include "core/err.h"
#include "core/time.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RL_SHARDS        64          /* lock stripes (power of two) */
#define RL_MAX_BUCKETS   65536       /* gateway-wide bound on buckets */
#define RL_EVICT_SCAN    8           /* LRU tail entries looked at for a
                                        full bucket before evicting the
                                        oldest */
#define RL_MAX_VALUE     256         /* bytes of a key value (claim …) */
#define RL_MAX_COUNT     1000000000  /* requests, burst, quota values */
#define RL_MAX_PERIOD_S  86400       /* one day */
#define RL_MAX_LIMITS    16          /* limits on one operation */
#define RL_EPS           1e-9        /* float slack in token compares */
#define RL_PTR_MAX       1024

/* What a bucket is keyed by, beside its scope. */
typedef enum { RL_KEY_IP, RL_KEY_APIKEY, RL_KEY_CLAIM } rl_key_kind;

/*
 * One limit: `cost` tokens per request from a bucket of `burst` tokens that
 * refills `requests` tokens per `period_s`.  Buckets of one limit share a
 * scope: SHA-256 of "gateway id \0 route label" (x-kiban-rate-limit) or of
 * "gateway id \0 quota \0 limit name" (Google quota: every operation that
 * charges the metric draws from the same buckets), truncated to 128 bits.
 */
typedef struct rl_limit {
    unsigned char scope[16];
    uint64_t      requests;
    uint64_t      period_s;
    uint64_t      burst;
    uint64_t      cost;
    double        rate;              /* tokens per second */
    rl_key_kind   key;
    char         *claim;             /* RL_KEY_CLAIM: the claim name */
    char         *quota;             /* Google: "metric/limit", for 429s */
} rl_limit;

struct gw_ratelimit {
    rl_limit *limits;
    size_t    nlimits;
    char     *policy;                /* RateLimit-Policy value */
    char     *gateway;               /* metric labels */
    char     *route;
    _Atomic(kb_counter *) limited;
};

/* ------------------------------------------------------------------------ */
/* Buckets                                                                   */

/* LRU ring links; first in a bucket, so a link is its bucket. */
typedef struct rl_link {
    struct rl_link *newer, *older;
} rl_link;

typedef struct rl_bucket {
    rl_link           lru;           /* shard LRU ring (must be first) */
    struct rl_bucket *next;          /* hash chain */
    uint64_t          hash;
    uint64_t          last_ns;       /* tokens were right at this time */
    double            tokens;
    double            rate, burst;   /* of its limit, for eviction */
    unsigned char     scope[16];
    uint16_t          vlen;
    char              value[];
} rl_bucket;

typedef struct rl_shard {
    pthread_mutex_t lock;
    rl_bucket     **slots;
    size_t          mask;
    rl_link         lru;             /* sentinel: lru.newer is the oldest */
    size_t          n, max;
    char            pad[64];         /* keep stripes off one cache line */
} rl_shard;

struct gw_rl_state {
    uint64_t seed;
    size_t   max_buckets;
    rl_shard shards[RL_SHARDS];
};

/* What one take() saw: for the RateLimit-* headers and Retry-After. */
typedef struct rl_result {
    bool     allowed;
    uint64_t remaining;              /* whole tokens left */
    uint64_t reset_s;                /* until the bucket is full again */
    uint64_t retry_s;                /* denied: until `cost` tokens */
} rl_result;

/* Seeded 64-bit hash (FNV-1a then a murmur finaliser). */
static uint64_t
rl_hash(uint64_t seed, const unsigned char *scope, const char *v, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ seed;

    for (size_t i = 0; i < 16; i++)
        h = (h ^ scope[i]) * 1099511628211ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)v[i]) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static void
lru_unlink(rl_bucket *b)
{
    b->lru.older->newer = b->lru.newer;
    b->lru.newer->older = b->lru.older;
}

/* Most recently used sits at lru.older. */
static void
lru_push(rl_shard *sh, rl_bucket *b)
{
    b->lru.older = sh->lru.older;
    b->lru.newer = &sh->lru;
    sh->lru.older->newer = &b->lru;
    sh->lru.older = &b->lru;
}

/* Bring b's tokens up to `now` (a clock going backwards adds nothing). */
static void
bucket_refill(rl_bucket *b, uint64_t now)
{
    if (now > b->last_ns) {
        double t = b->tokens + (double)(now - b->last_ns) * 1e-9 * b->rate;
        b->tokens = t > b->burst ? b->burst : t;
        b->last_ns = now;
    }
}

/* Would b be full at `now`?  Then forgetting it loses nothing. */
static bool
bucket_full(const rl_bucket *b, uint64_t now)
{
    double t = b->tokens;

    if (now > b->last_ns)
        t += (double)(now - b->last_ns) * 1e-9 * b->rate;
    return t + RL_EPS >= b->burst;
}

/* The low bits of a hash pick the shard, the next ones the slot. */
static rl_bucket **
slot_of(rl_shard *sh, uint64_t h)
{
    return &sh->slots[(h >> 6) & sh->mask];
}

static void
bucket_remove(rl_shard *sh, rl_bucket *b)
{
    rl_bucket **pp = slot_of(sh, b->hash);

    while (*pp != b)
        pp = &(*pp)->next;
    *pp = b->next;
    lru_unlink(b);
    sh->n--;
    free(b);
}

/* Make room for one more bucket: a full one near the LRU end, else the
 * least recently used. */
static void
shard_evict(rl_shard *sh, uint64_t now)
{
    rl_link *l = sh->lru.newer, *victim = l;

    for (int i = 0; i < RL_EVICT_SCAN && l != &sh->lru; i++, l = l->newer)
        if (bucket_full((rl_bucket *)l, now)) {
            victim = l;
            break;
        }
    if (victim != &sh->lru)
        bucket_remove(sh, (rl_bucket *)victim);
}

static double
secs_until(double missing, double rate)
{
    return missing <= RL_EPS ? 0 : rate > 0 ? missing / rate : INFINITY;
}

/* Whole seconds, rounded up (at least 1 when anything is missing);
 * "never" (a cost above the bucket) reads as one period. */
static uint64_t
ceil_secs(double s, uint64_t never)
{
    if (s <= 0)
        return 0;
    if (!isfinite(s) || s > 1e12)
        return never;
    s = ceil(s - RL_EPS);
    return s < 1 ? 1 : (uint64_t)s;
}

/*
 * Take l->cost tokens from the bucket of (l's scope, value) at `now`.
 * Fills *out either way.  0, or KB_ENOMEM when a new bucket could not be
 * made (the caller lets the request through: we fail open).
 */
static int
rl_take(struct gw_rl_state *st, const rl_limit *l, const char *v,
        size_t vlen, uint64_t now, rl_result *out)
{
    uint64_t h = rl_hash(st->seed, l->scope, v, vlen);
    rl_shard *sh = &st->shards[h & (RL_SHARDS - 1)];
    rl_bucket *b;
    double cost = (double)l->cost, burst = (double)l->burst;

    pthread_mutex_lock(&sh->lock);
    for (b = *slot_of(sh, h); b != NULL; b = b->next)
        if (b->hash == h && b->vlen == vlen &&
            memcmp(b->scope, l->scope, 16) == 0 &&
            memcmp(b->value, v, vlen) == 0)
            break;
    if (b != NULL) {
        lru_unlink(b);
        /* the spec was re-applied with other numbers: they apply from
         * the bucket's last use on */
        b->rate = l->rate;
        b->burst = burst;
        if (b->tokens > burst)
            b->tokens = burst;
        bucket_refill(b, now);
    } else {
        if (sh->n >= sh->max)
            shard_evict(sh, now);
        b = malloc(sizeof(*b) + vlen);
        if (b == NULL) {
            pthread_mutex_unlock(&sh->lock);
            *out = (rl_result){ true, l->burst, 0, 0 };
            return KB_ENOMEM;
        }
        b->hash = h;
        b->tokens = burst;
        b->last_ns = now;
        b->rate = l->rate;
        b->burst = burst;
        memcpy(b->scope, l->scope, 16);
        b->vlen = (uint16_t)vlen;
        memcpy(b->value, v, vlen);
        b->next = *slot_of(sh, h);
        *slot_of(sh, h) = b;
        sh->n++;
    }
    lru_push(sh, b);
    out->allowed = b->tokens + RL_EPS >= cost;
    if (out->allowed) {
        b->tokens -= cost;
        if (b->tokens < 0)
            b->tokens = 0;
    }
    out->remaining = (uint64_t)floor(b->tokens + RL_EPS);
    out->reset_s = ceil_secs(secs_until(burst - b->tokens, l->rate),
                             l->period_s);
    out->retry_s = out->allowed ? 0
                 : ceil_secs(cost > burst ? INFINITY
                                          : secs_until(cost - b->tokens,
                                                       l->rate),
                             l->period_s);
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

/* Give back tokens taken by an earlier limit of a request another limit
 * denied. */
static void
rl_refund(struct gw_rl_state *st, const rl_limit *l, const char *v,
          size_t vlen)
{
    uint64_t h = rl_hash(st->seed, l->scope, v, vlen);
    rl_shard *sh = &st->shards[h & (RL_SHARDS - 1)];

    pthread_mutex_lock(&sh->lock);
    for (rl_bucket *b = *slot_of(sh, h); b != NULL; b = b->next)
        if (b->hash == h && b->vlen == vlen &&
            memcmp(b->scope, l->scope, 16) == 0 &&
            memcmp(b->value, v, vlen) == 0) {
            b->tokens += (double)l->cost;
            if (b->tokens > b->burst)
                b->tokens = b->burst;
            break;
        }
    pthread_mutex_unlock(&sh->lock);
}

/* A state holding at most max_buckets buckets (tests use small ones). */
static int
rl_state_create(size_t max_buckets, struct gw_rl_state **out)
{
    struct gw_rl_state *st;
    size_t per = (max_buckets + RL_SHARDS - 1) / RL_SHARDS, slots = 16;
    size_t i;

    *out = NULL;
    if (per == 0)
        per = 1;
    while (slots < per)
        slots <<= 1;
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return KB_ENOMEM;
    st->max_buckets = per * RL_SHARDS;
    if (RAND_bytes((unsigned char *)&st->seed, sizeof(st->seed)) != 1)
        st->seed = kb_time_mono_ns() * 0x9e3779b97f4a7c15ULL;
    for (i = 0; i < RL_SHARDS; i++) {
        rl_shard *sh = &st->shards[i];
        sh->slots = calloc(slots, sizeof(*sh->slots));
        if (sh->slots == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            free(sh->slots);
            goto out_free_shards;
        }
        sh->mask = slots - 1;
        sh->max = per;
        sh->lru.newer = sh->lru.older = &sh->lru;
    }
    *out = st;
    return 0;

out_free_shards:
    while (i-- > 0) {
        pthread_mutex_destroy(&st->shards[i].lock);
        free(st->shards[i].slots);
    }
    free(st);
    return KB_ENOMEM;
}

static void
rl_state_free(struct gw_rl_state *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < RL_SHARDS; i++) {
        rl_shard *sh = &st->shards[i];
        while (sh->lru.newer != &sh->lru) {
            rl_bucket *b = (rl_bucket *)sh->lru.newer;
            lru_unlink(b);
            free(b);
        }
        free(sh->slots);
        pthread_mutex_destroy(&sh->lock);
    }
    free(st);
}

int
gw__ratelimit_init(kb_gateway *gw)
{
    return rl_state_create(RL_MAX_BUCKETS, &gw->rl);
}

void
gw__ratelimit_fini(kb_gateway *gw)
{
    rl_state_free(gw->rl);
    gw->rl = NULL;
}

/* ------------------------------------------------------------------------ */
/* Compiling policies                                                        */

typedef struct rlc {
    gw_spec    *s;
    char       *err;
    size_t      errlen;
} rlc;

/* "pointer: reason" into the caller's err; returns KB_EINVAL. */
#define rl_fail(c, ...) gw__spec_fail((c)->err, (c)->errlen, __VA_ARGS__)

/* A count: an integer 1..RL_MAX_COUNT (min0: 0 allowed). */
static bool
count_ok(const json_t *v, bool min0, uint64_t *out)
{
    json_int_t n;

    if (!json_is_integer(v))
        return false;
    n = json_integer_value(v);
    if (n < (min0 ? 0 : 1) || n > RL_MAX_COUNT)
        return false;
    *out = (uint64_t)n;
    return true;
}

/* "30s", "1m", "2h", "1d", "90" (seconds), or a number of seconds. */
static bool
period_parse(const json_t *v, uint64_t *out)
{
    const char *s;
    char *end;
    unsigned long long n;
    uint64_t mul = 1;

    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 1 || i > RL_MAX_PERIOD_S)
            return false;
        *out = (uint64_t)i;
        return true;
    }
    if (!json_is_string(v))
        return false;
    s = json_string_value(v);
    if (!isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno != 0 || n == 0 || n > RL_MAX_PERIOD_S)
        return false;
    switch (*end) {
    case '\0': case 's': mul = 1; break;
    case 'm':            mul = 60; break;
    case 'h':            mul = 3600; break;
    case 'd':            mul = 86400; break;
    default:             return false;
    }
    if (*end != '\0' && end[1] != '\0')
        return false;
    if (n * mul > RL_MAX_PERIOD_S)
        return false;
    *out = n * mul;
    return true;
}

static void
scope_digest(unsigned char out[16], const char *a, const char *b,
             const char *c3)
{
    const void *parts[3] = { a, b, c3 };
    size_t lens[3] = { strlen(a) + 1, strlen(b) + 1,
                       c3 != NULL ? strlen(c3) + 1 : 0 };
    unsigned char md[32];

    memset(out, 0, 16);
    if (gw__sha256(parts, lens, c3 != NULL ? 3 : 2, md) == 0)
        memcpy(out, md, 16);
}

typedef enum { RF_REQUESTS, RF_PERIOD, RF_BURST, RF_KEY } rl_field;

static const struct {
    const char *name;
    rl_field    field;
} rl_fields[] = {
    { "requests", RF_REQUESTS }, { "period", RF_PERIOD },
    { "burst", RF_BURST },       { "key", RF_KEY },
};
#define RL_NFIELDS (sizeof(rl_fields) / sizeof(rl_fields[0]))

/*
 * Parse an x-kiban-rate-limit object at `ptr` into *l (scope left to the
 * caller; l->claim allocated for claim keys).  0, KB_EINVAL, KB_ENOMEM.
 */
static int
limit_parse(rlc *c, const json_t *v, const char *ptr, rl_limit *l)
{
    char p[RL_PTR_MAX];
    const char *k;
    const json_t *fv;
    bool have_requests = false, have_period = false, have_burst = false;

    memset(l, 0, sizeof(*l));
    l->cost = 1;
    if (!json_is_object(v))
        return rl_fail(c, ptr, "must be an object {requests, period, burst, "
                               "key} or false");
    json_object_foreach((json_t *)v, k, fv) {
        size_t i;
        for (i = 0; i < RL_NFIELDS; i++)
            if (strcmp(k, rl_fields[i].name) == 0)
                break;
        gw__pointer_join(p, sizeof(p), ptr, k);
        if (i == RL_NFIELDS)
            return rl_fail(c, p, "unknown field (requests, period, burst, "
                                 "key)");
        switch (rl_fields[i].field) {
        case RF_REQUESTS:
            if (!count_ok(fv, false, &l->requests))
                return rl_fail(c, p, "must be an integer from 1 to %d",
                               RL_MAX_COUNT);
            have_requests = true;
            break;
        case RF_PERIOD:
            if (!period_parse(fv, &l->period_s))
                return rl_fail(c, p, "must be a whole number of seconds "
                                     "(1 to %d) or a duration such as "
                                     "\"30s\", \"1m\", \"1h\", \"1d\"",
                               RL_MAX_PERIOD_S);
            have_period = true;
            break;
        case RF_BURST:
            if (!count_ok(fv, false, &l->burst))
                return rl_fail(c, p, "must be an integer from 1 to %d",
                               RL_MAX_COUNT);
            have_burst = true;
            break;
        case RF_KEY: {
            const char *s = json_string_value(fv);
            if (s != NULL && strcmp(s, "ip") == 0) {
                l->key = RL_KEY_IP;
            } else if (s != NULL && strcmp(s, "apiKey") == 0) {
                l->key = RL_KEY_APIKEY;
            } else if (s != NULL && strncmp(s, "claim:", 6) == 0 &&
                       s[6] != '\0' && strlen(s + 6) <= 128) {
                free(l->claim);
                l->claim = strdup(s + 6);
                if (l->claim == NULL)
                    return KB_ENOMEM;
                l->key = RL_KEY_CLAIM;
            } else {
                return rl_fail(c, p, "must be \"ip\", \"apiKey\" or "
                                     "\"claim:NAME\"");
            }
            break;
        }
        }
    }
    if (!have_requests) {
        gw__pointer_join(p, sizeof(p), ptr, "requests");
        return rl_fail(c, p, "required");
    }
    if (!have_period) {
        gw__pointer_join(p, sizeof(p), ptr, "period");
        return rl_fail(c, p, "required");
    }
    if (!have_burst)
        l->burst = l->requests;
    l->rate = (double)l->requests / (double)l->period_s;
    return 0;
}

/* One Google quota limit: x-google-management.quota.limits[i]. */
typedef struct gq_limit {
    const char *name;
    const char *metric;
    uint64_t    value;
} gq_limit;

typedef struct gq {
    const json_t *metrics;           /* x-google-management.metrics */
    gq_limit     *limits;
    size_t        nlimits;
} gq;

static bool
metric_declared(const gq *q, const char *name)
{
    size_t i;
    const json_t *m;

    json_array_foreach(q->metrics, i, m)
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0)
            return true;
    return false;
}

/* Check and index x-google-management (metrics, quota.limits). */
static int
google_management(rlc *c, const json_t *doc, gq *q)
{
    const json_t *mg = json_object_get(doc, "x-google-management");
    const json_t *quota, *limits, *m;
    char p[RL_PTR_MAX];
    size_t i;

    memset(q, 0, sizeof(*q));
    if (mg == NULL)
        return 0;
    if (!json_is_object(mg))
        return rl_fail(c, "/x-google-management", "must be an object");
    q->metrics = json_object_get(mg, "metrics");
    if (q->metrics != NULL && !json_is_array(q->metrics))
        return rl_fail(c, "/x-google-management/metrics", "must be an "
                          "array of {name, valueType, metricKind}");
    json_array_foreach(q->metrics, i, m) {
        const json_t *vt = json_object_get(m, "valueType");
        const json_t *mk = json_object_get(m, "metricKind");
        snprintf(p, sizeof(p), "/x-google-management/metrics/%zu", i);
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "name")))
            return rl_fail(c, p, "must be an object with a name");
        if (vt != NULL && !(json_is_string(vt) &&
                            strcmp(json_string_value(vt), "INT64") == 0))
            return rl_fail(c, p, "valueType must be INT64");
        if (mk != NULL && !(json_is_string(mk) &&
                            strcmp(json_string_value(mk), "DELTA") == 0))
            return rl_fail(c, p, "metricKind must be DELTA");
    }
    quota = json_object_get(mg, "quota");
    if (quota == NULL)
        return 0;
    if (!json_is_object(quota))
        return rl_fail(c, "/x-google-management/quota", "must be an object");
    limits = json_object_get(quota, "limits");
    if (limits == NULL)
        return 0;
    if (!json_is_array(limits))
        return rl_fail(c, "/x-google-management/quota/limits",
                       "must be an array");
    q->limits = calloc(json_array_size(limits) + 1, sizeof(*q->limits));
    if (q->limits == NULL)
        return KB_ENOMEM;
    json_array_foreach(limits, i, m) {
        const json_t *name = json_object_get(m, "name");
        const json_t *metric = json_object_get(m, "metric");
        const json_t *unit = json_object_get(m, "unit");
        const json_t *values = json_object_get(m, "values");
        char lp[RL_PTR_MAX];
        gq_limit *g = &q->limits[q->nlimits];

        snprintf(lp, sizeof(lp), "/x-google-management/quota/limits/%zu", i);
        if (!json_is_object(m))
            return rl_fail(c, lp, "must be an object {name, metric, unit, "
                                  "values}");
        if (!json_is_string(name) || json_string_length(name) == 0) {
            gw__pointer_join(p, sizeof(p), lp, "name");
            return rl_fail(c, p, "required (a string)");
        }
        if (!json_is_string(metric)) {
            gw__pointer_join(p, sizeof(p), lp, "metric");
            return rl_fail(c, p, "required (a metric name)");
        }
        if (q->metrics == NULL ||
            !metric_declared(q, json_string_value(metric))) {
            gw__pointer_join(p, sizeof(p), lp, "metric");
            return rl_fail(c, p, "metric \"%s\" is not declared in "
                                 "/x-google-management/metrics",
                           json_string_value(metric));
        }
        if (!json_is_string(unit) ||
            strcmp(json_string_value(unit), "1/min/{project}") != 0) {
            gw__pointer_join(p, sizeof(p), lp, "unit");
            return rl_fail(c, p, "must be \"1/min/{project}\" (only "
                                 "per-minute, per-consumer limits are "
                                 "supported, as in Cloud Endpoints)");
        }
        gw__pointer_join(p, sizeof(p), lp, "values");
        if (!json_is_object(values))
            return rl_fail(c, p, "required: {STANDARD: requests per minute}");
        gw__pointer_join(p, sizeof(p), p, "STANDARD");
        if (!count_ok(json_object_get(values, "STANDARD"), true, &g->value))
            return rl_fail(c, p, "must be an integer from 0 to %d",
                           RL_MAX_COUNT);
        for (size_t k = 0; k < q->nlimits; k++)
            if (strcmp(q->limits[k].name, json_string_value(name)) == 0) {
                gw__pointer_join(p, sizeof(p), lp, "name");
                return rl_fail(c, p, "duplicate limit name");
            }
        g->name = json_string_value(name);
        g->metric = json_string_value(metric);
        q->nlimits++;
    }
    return 0;
}

static void
policy_free(struct gw_ratelimit *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nlimits; i++) {
        free(p->limits[i].claim);
        free(p->limits[i].quota);
    }
    free(p->limits);
    free(p->policy);
    free(p->gateway);
    free(p->route);
    free(p);
}

/* Append a copy of l to p (takes l's allocations). */
static int
policy_add(rlc *c, struct gw_ratelimit *p, rl_limit *l, const char *ptr)
{
    rl_limit *grown;

    if (p->nlimits == RL_MAX_LIMITS) {
        free(l->claim);
        free(l->quota);
        return rl_fail(c, ptr, "too many limits on one operation (at most "
                               "%d)", RL_MAX_LIMITS);
    }
    grown = realloc(p->limits, (p->nlimits + 1) * sizeof(*grown));
    if (grown == NULL) {
        free(l->claim);
        free(l->quota);
        return KB_ENOMEM;
    }
    p->limits = grown;
    p->limits[p->nlimits++] = *l;
    memset(l, 0, sizeof(*l));
    return 0;
}

/* RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers-06 §2.3):
 * "100;w=60;burst=20, 1000;w=60". */
static int
policy_header(struct gw_ratelimit *p)
{
    kb_buf b = KB_BUF_INIT(4096);
    int rc = 0;

    for (size_t i = 0; i < p->nlimits && rc == 0; i++) {
        const rl_limit *l = &p->limits[i];
        rc = kb_buf_appendf(&b, "%s%" PRIu64 ";w=%" PRIu64, i ? ", " : "",
                            l->requests, l->period_s);
        if (rc == 0 && l->burst != l->requests)
            rc = kb_buf_appendf(&b, ";burst=%" PRIu64, l->burst);
    }
    if (rc == 0)
        p->policy = kb_buf_detach(&b);
    kb_buf_free(&b);
    return rc == 0 && p->policy != NULL ? 0 : KB_ENOMEM;
}

/* The Google quota limits an operation's x-google-quota charges. */
static int
route_google(rlc *c, const gq *q, const gw_route *r,
             struct gw_ratelimit *p)
{
    const json_t *xq = json_object_get(r->op, "x-google-quota");
    const json_t *costs, *cv;
    const char *metric;
    char ptr[RL_PTR_MAX], p2[RL_PTR_MAX];
    int rc;

    if (xq == NULL)
        return 0;
    gw__pointer_join(ptr, sizeof(ptr), r->pointer, "x-google-quota");
    if (!json_is_object(xq))
        return rl_fail(c, ptr, "must be an object {metricCosts: {...}}");
    costs = json_object_get(xq, "metricCosts");
    gw__pointer_join(ptr, sizeof(ptr), ptr, "metricCosts");
    if (!json_is_object(costs))
        return rl_fail(c, ptr, "required: an object of metric name → cost");
    json_object_foreach((json_t *)costs, metric, cv) {
        uint64_t cost;
        gw__pointer_join(p2, sizeof(p2), ptr, metric);
        if (q->metrics == NULL || !metric_declared(q, metric))
            return rl_fail(c, p2, "metric \"%s\" is not declared in "
                                  "/x-google-management/metrics", metric);
        if (!count_ok(cv, true, &cost))
            return rl_fail(c, p2, "must be an integer cost from 0 to %d",
                           RL_MAX_COUNT);
        if (cost == 0)
            continue;
        for (size_t i = 0; i < q->nlimits; i++) {
            rl_limit l;
            if (strcmp(q->limits[i].metric, metric) != 0)
                continue;
            memset(&l, 0, sizeof(l));
            l.requests = q->limits[i].value;
            l.period_s = 60;
            l.burst = q->limits[i].value;
            l.cost = cost;
            l.rate = (double)l.requests / 60.0;
            l.key = RL_KEY_APIKEY;
            scope_digest(l.scope, c->s->id, "\x01quota", q->limits[i].name);
            if (asprintf(&l.quota, "%s/%s", metric, q->limits[i].name) < 0) {
                l.quota = NULL;
                return KB_ENOMEM;
            }
            if ((rc = policy_add(c, p, &l, p2)) != 0)
                return rc;
        }
    }
    return 0;
}

int
gw__ratelimit_compile(gw_spec *s, char *err, size_t errlen)
{
    rlc c = { s, err, errlen };
    const json_t *doc = s->doc != NULL ? s->doc
                                       : json_object_get(s->spec, "openapi");
    const json_t *top;
    rl_limit deflt;
    bool have_default = false;
    gq q;
    int rc;

    memset(&deflt, 0, sizeof(deflt));
    if (!json_is_object(doc))
        return 0;
    if ((rc = google_management(&c, doc, &q)) != 0)
        goto out_free;
    top = json_object_get(doc, "x-kiban-rate-limit");
    if (top != NULL && !json_is_false(top)) {
        if ((rc = limit_parse(&c, top, "/x-kiban-rate-limit", &deflt)) != 0)
            goto out_free;
        have_default = true;
    }
    for (size_t i = 0; i < s->nroutes; i++) {
        gw_route *r = &s->routes[i];
        const json_t *own = json_object_get(r->op, "x-kiban-rate-limit");
        struct gw_ratelimit *p = calloc(1, sizeof(*p));
        rl_limit l;
        char ptr[RL_PTR_MAX];

        if (p == NULL) {
            rc = KB_ENOMEM;
            goto out_free;
        }
        r->ratelimit = p;            /* release frees it on any error */
        memset(&l, 0, sizeof(l));
        gw__pointer_join(ptr, sizeof(ptr), r->pointer, "x-kiban-rate-limit");
        if (own != NULL && !json_is_false(own)) {
            if ((rc = limit_parse(&c, own, ptr, &l)) != 0) {
                free(l.claim);
                goto out_free;
            }
        } else if (own == NULL && have_default) {
            l = deflt;
            if (deflt.claim != NULL && (l.claim = strdup(deflt.claim)) == NULL) {
                rc = KB_ENOMEM;
                goto out_free;
            }
        }
        if (l.requests > 0) {
            scope_digest(l.scope, s->id, r->label, NULL);
            if ((rc = policy_add(&c, p, &l, ptr)) != 0)
                goto out_free;
        }
        if ((rc = route_google(&c, &q, r, p)) != 0)
            goto out_free;
        if (p->nlimits == 0) {
            free(p);
            r->ratelimit = NULL;
            continue;
        }
        p->gateway = strdup(s->id);
        p->route = strdup(r->label);
        if (p->gateway == NULL || p->route == NULL ||
            (rc = policy_header(p)) != 0) {
            rc = KB_ENOMEM;
            goto out_free;
        }
    }
    free(deflt.claim);
    free(q.limits);
    return 0;

out_free:
    free(deflt.claim);
    free(q.limits);
    gw__ratelimit_release(s);
    return rc;
}

void
gw__ratelimit_release(gw_spec *s)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        policy_free(s->routes[i].ratelimit);
        s->routes[i].ratelimit = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* The stage                                                                 */

/*
 * The bucket key value of limit l for this request into buf: "k:NAME"
 * (API key), "c:VALUE" (claim: a string or an integer) or "i:ADDRESS"
 * (the peer address) — the fallback when the request has no value for the
 * limit's key.  Returns the length.
 */
static size_t
key_value(const gw_ctx *c, const rl_limit *l, char *buf, size_t cap)
{
    int n = -1;

    if (l->key == RL_KEY_APIKEY && c->api_key != NULL &&
        strlen(c->api_key) <= RL_MAX_VALUE) {
        n = snprintf(buf, cap, "k:%s", c->api_key);
    } else if (l->key == RL_KEY_CLAIM && c->claims != NULL) {
        const json_t *v = json_object_get(c->claims, l->claim);
        if (json_is_string(v) && json_string_length(v) <= RL_MAX_VALUE &&
            json_string_length(v) > 0)
            n = snprintf(buf, cap, "c:%s", json_string_value(v));
        else if (json_is_integer(v))
            n = snprintf(buf, cap, "c:%" JSON_INTEGER_FORMAT,
                         json_integer_value(v));
    }
    if (n < 0 || (size_t)n >= cap)
        n = snprintf(buf, cap, "i:%s", c->req->remote_addr);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void
count_limited(struct gw_ratelimit *p)
{
    kb_counter *ctr = atomic_load_explicit(&p->limited, memory_order_acquire);

    if (ctr == NULL) {
        kb_buf labels = KB_BUF_INIT(8192);
        if (kb_buf_appends(&labels, "gateway=\"") == 0 &&
            kb_metrics_label_escape(&labels, p->gateway) == 0 &&
            kb_buf_appends(&labels, "\",route=\"") == 0 &&
            kb_metrics_label_escape(&labels, p->route) == 0 &&
            kb_buf_appendc(&labels, '"') == 0)
            ctr = kb_counter_get("kiban_gateway_ratelimited_total",
                                 "Requests answered 429 by a rate limit, by "
                                 "gateway and operation.",
                                 kb_buf_cstr(&labels));
        kb_buf_free(&labels);
        if (ctr == NULL)
            return;
        atomic_store_explicit(&p->limited, ctr, memory_order_release);
    }
    kb_counter_add(ctr, 1);
}

static void
header_u64(gw_ctx *c, const char *name, uint64_t v)
{
    char text[24];

    snprintf(text, sizeof(text), "%" PRIu64, v);
    gw__header_add(c, false, name, text);
}

/* Run every limit of the route against the request at `now`. */
static gw_step
ratelimit_at(gw_ctx *c, struct gw_rl_state *st, struct gw_ratelimit *p,
             uint64_t now)
{
    char vals[RL_MAX_LIMITS][RL_MAX_VALUE + 72];
    size_t lens[RL_MAX_LIMITS];
    rl_result res, shown = { true, 0, 0, 0 };
    const rl_limit *shown_l = NULL;
    size_t i, denied = p->nlimits;

    for (i = 0; i < p->nlimits; i++) {
        const rl_limit *l = &p->limits[i];
        lens[i] = key_value(c, l, vals[i], sizeof(vals[i]));
        rl_take(st, l, vals[i], lens[i], now, &res);
        /* headers show the limit closest to its end (draft-06 §3) */
        if (shown_l == NULL || !res.allowed ||
            (shown.allowed && res.remaining < shown.remaining)) {
            shown = res;
            shown_l = l;
        }
        if (!res.allowed) {
            denied = i;
            break;
        }
    }
    if (denied < p->nlimits)
        for (i = 0; i < denied; i++)
            rl_refund(st, &p->limits[i], vals[i], lens[i]);
    header_u64(c, "RateLimit-Limit", shown_l->burst);
    header_u64(c, "RateLimit-Remaining", shown.remaining);
    header_u64(c, "RateLimit-Reset", shown.reset_s);
    gw__header_add(c, false, "RateLimit-Policy", p->policy);
    if (denied == p->nlimits)
        return GW_NEXT;
    header_u64(c, "Retry-After", shown.retry_s);
    count_limited(p);
    if (shown_l->quota != NULL)
        gw__respond_error(c, 429, "Quota exceeded for quota metric and limit "
                                  "'%s'; retry after %" PRIu64 " s",
                          shown_l->quota, shown.retry_s);
    else
        gw__respond_error(c, 429, "rate limit exceeded for %s; retry after "
                                  "%" PRIu64 " s", p->route, shown.retry_s);
    return GW_DONE;
}

gw_step
gw__ratelimit_stage(gw_ctx *c)
{
    struct gw_ratelimit *p = c->route != NULL ? c->route->ratelimit : NULL;

    if (p == NULL || c->gw == NULL || c->gw->rl == NULL)
        return GW_NEXT;
    return ratelimit_at(c, c->gw->rl, p, kb_time_mono_ns());
}
