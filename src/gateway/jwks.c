/*
 * jwks.c - JWT key providers and the verified-token cache, shared by the
 * gateway's worker loops.  Key documents are fetched by one thread of our
 * own (libcurl easy, bounded time and size), never on a loop; requests
 * that need keys not yet fetched wait as GW_PENDING and are woken through
 * their waiter callback (auth.c posts them back to their loop).
 *
 * Freshness: a document is fresh for its Cache-Control max-age clamped to
 * [5 min, 24 h] (5 min when absent).  Stale keys keep serving while a
 * refresh runs, and keep serving when it fails (stale-if-error).  A token
 * whose kid is unknown triggers at most one refetch per 30 s per source.
 */
#include "gateway/jwt.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GW_JWKS_MAX_SOURCES 4096     /* distinct JWKS URIs at once */
#define TC_SHARDS           16
#define TC_BUCKETS          1024     /* per shard, power of two */

struct gw_jwks_src {
    gw_jwks            *j;
    struct gw_jwks_src *next;        /* j->sources */
    struct gw_jwks_src *qnext;       /* j->queue */
    size_t              refs;        /* under j->lock */
    char               *uri;
    gw_keyset          *keys;        /* NULL until a fetch succeeds */
    uint64_t            fresh_until; /* mono ms */
    uint64_t            last_attempt;/* mono ms a fetch started; 0 never */
    uint64_t            last_kid_fetch;
    int                 last_err;    /* of the last finished fetch */
    bool                fetching;    /* queued or running */
    gw_jwks_waiter     *waiters;
    size_t              nwaiters;
};

/* One verified token. */
typedef struct tc_entry {
    struct tc_entry *hnext;          /* bucket chain */
    struct tc_entry *prev, *next;    /* LRU list, most recent first */
    unsigned char    digest[32];
    uint64_t         uid;
    int64_t          expires;
    json_t          *claims;
    char            *subject;
    char            *payload_b64;
} tc_entry;

typedef struct tc_shard {
    pthread_mutex_t lock;
    tc_entry       *buckets[TC_BUCKETS];
    tc_entry       *head, *tail;
    size_t          n;
} tc_shard;

struct gw_jwks {
    pthread_mutex_t   lock;          /* sources, queue, every source's state */
    pthread_cond_t    cond;          /* the queue has work, or stopping */
    pthread_t         thread;
    bool              thread_started;
    bool              stopping;      /* no new fetches; thread exits */
    bool              closed;        /* destroy ran: free at last source */
    atomic_bool       abort_fetch;   /* curl progress callback checks it */
    gw_jwks_src      *sources;
    size_t            nsources;
    gw_jwks_src      *queue_head, *queue_tail;
    gw_jwks_fetch_fn  fetch;         /* fetch_curl, or a test's */
    void             *fetch_data;    /* for a test's fetcher */
    uint64_t        (*now_ms)(void); /* kb_time_mono_ms, or a test's */
    tc_shard          shards[TC_SHARDS];
};

static int fetch_curl(gw_jwks *j, const char *uri, kb_buf *body,
                      long *max_age_s);
static void *fetch_main(void *arg);

/* ------------------------------------------------------------------------ */
/* The registry                                                             */

int
gw__jwks_create(gw_jwks **out)
{
    gw_jwks *j = calloc(1, sizeof(*j));

    *out = NULL;
    if (j == NULL)
        return KB_ENOMEM;
    if (pthread_mutex_init(&j->lock, NULL) != 0) {
        free(j);
        return KB_ENOMEM;
    }
    if (pthread_cond_init(&j->cond, NULL) != 0) {
        pthread_mutex_destroy(&j->lock);
        free(j);
        return KB_ENOMEM;
    }
    for (size_t i = 0; i < TC_SHARDS; i++)
        pthread_mutex_init(&j->shards[i].lock, NULL);
    atomic_init(&j->abort_fetch, false);
    j->fetch = fetch_curl;
    j->now_ms = kb_time_mono_ms;
    *out = j;
    return 0;
}

static void
tcache_clear(gw_jwks *j)
{
    for (size_t i = 0; i < TC_SHARDS; i++) {
        tc_shard *sh = &j->shards[i];
        tc_entry *e = sh->head;
        while (e != NULL) {
            tc_entry *next = e->next;
            json_decref(e->claims);
            free(e->subject);
            free(e->payload_b64);
            free(e);
            e = next;
        }
        memset(sh->buckets, 0, sizeof(sh->buckets));
        sh->head = sh->tail = NULL;
        sh->n = 0;
    }
}

static void
jwks_free(gw_jwks *j)
{
    tcache_clear(j);
    for (size_t i = 0; i < TC_SHARDS; i++)
        pthread_mutex_destroy(&j->shards[i].lock);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

/* Detach every waiter of s (under j->lock); the caller wakes them. */
static gw_jwks_waiter *
take_waiters(gw_jwks_src *s)
{
    gw_jwks_waiter *w = s->waiters;

    s->waiters = NULL;
    s->nwaiters = 0;
    return w;
}

static void
wake(gw_jwks_waiter *w)
{
    while (w != NULL) {
        gw_jwks_waiter *next = w->next;  /* w may be gone after cb */
        w->cb(w->data);
        w = next;
    }
}

/* Detach every waiter of every source (under j->lock). */
static gw_jwks_waiter *
take_all_waiters(gw_jwks *j)
{
    gw_jwks_waiter *all = NULL;

    for (gw_jwks_src *s = j->sources; s != NULL; s = s->next) {
        gw_jwks_waiter *w = take_waiters(s);
        while (w != NULL) {
            gw_jwks_waiter *next = w->next;
            w->next = all;
            all = w;
            w = next;
        }
    }
    return all;
}

void
gw__jwks_stop(gw_jwks *j)
{
    gw_jwks_waiter *all;

    if (j == NULL)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    atomic_store(&j->abort_fetch, true);
    pthread_cond_broadcast(&j->cond);
    all = take_all_waiters(j);
    pthread_mutex_unlock(&j->lock);
    wake(all);
}

void
gw__jwks_destroy(gw_jwks *j)
{
    gw_jwks_waiter *all;
    bool free_now;

    if (j == NULL)
        return;
    gw__jwks_stop(j);
    if (j->thread_started)
        pthread_join(j->thread, NULL);

    pthread_mutex_lock(&j->lock);
    /* Sources still queued: their fetch will never run. */
    while (j->queue_head != NULL) {
        gw_jwks_src *s = j->queue_head;
        j->queue_head = s->qnext;
        s->fetching = false;
        s->refs--;                   /* the queue's reference */
    }
    j->queue_tail = NULL;
    all = take_all_waiters(j);       /* none expected after stop */
    /* Unreferenced sources go now; referenced ones when released. */
    for (gw_jwks_src **pp = &j->sources; *pp != NULL;) {
        gw_jwks_src *s = *pp;
        if (s->refs == 0) {
            *pp = s->next;
            j->nsources--;
            gw__keyset_unref(s->keys);
            free(s->uri);
            free(s);
        } else {
            pp = &s->next;
        }
    }
    j->closed = true;
    free_now = j->nsources == 0;
    pthread_mutex_unlock(&j->lock);
    wake(all);
    if (free_now)
        jwks_free(j);
}

gw_jwks_src *
gw__jwks_source(gw_jwks *j, const char *uri)
{
    gw_jwks_src *s;

    pthread_mutex_lock(&j->lock);
    for (s = j->sources; s != NULL; s = s->next)
        if (strcmp(s->uri, uri) == 0) {
            s->refs++;
            pthread_mutex_unlock(&j->lock);
            return s;
        }
    if (j->closed || j->nsources >= GW_JWKS_MAX_SOURCES ||
        (s = calloc(1, sizeof(*s))) == NULL ||
        (s->uri = strdup(uri)) == NULL) {
        free(s);
        pthread_mutex_unlock(&j->lock);
        return NULL;
    }
    s->j = j;
    s->refs = 1;
    s->next = j->sources;
    j->sources = s;
    j->nsources++;
    pthread_mutex_unlock(&j->lock);
    return s;
}

/* Drop a reference under j->lock; true when the registry must be freed
 * (closed and this was its last source) once the lock is released. */
static bool
source_unref_locked(gw_jwks_src *s)
{
    gw_jwks *j = s->j;

    if (--s->refs > 0)
        return false;
    for (gw_jwks_src **pp = &j->sources; *pp != NULL; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    j->nsources--;
    gw__keyset_unref(s->keys);
    free(s->uri);
    free(s);
    return j->closed && j->nsources == 0;
}

void
gw__jwks_source_unref(gw_jwks_src *s)
{
    gw_jwks *j;
    bool free_registry;

    if (s == NULL)
        return;
    j = s->j;
    pthread_mutex_lock(&j->lock);
    free_registry = source_unref_locked(s);
    pthread_mutex_unlock(&j->lock);
    if (free_registry)
        jwks_free(j);
}

/* Queue a fetch of s (under j->lock).  false when stopping. */
static bool
fetch_start(gw_jwks_src *s, uint64_t now)
{
    gw_jwks *j = s->j;

    if (j->stopping)
        return false;
    if (!j->thread_started) {
        if (pthread_create(&j->thread, NULL, fetch_main, j) != 0)
            return false;
        j->thread_started = true;
    }
    s->fetching = true;
    s->last_attempt = now;
    s->refs++;                       /* the queue's reference */
    s->qnext = NULL;
    if (j->queue_tail != NULL)
        j->queue_tail->qnext = s;
    else
        j->queue_head = s;
    j->queue_tail = s;
    pthread_cond_signal(&j->cond);
    return true;
}

/* Make w wait for s's fetch (under j->lock). */
static int
add_waiter(gw_jwks_src *s, gw_jwks_waiter *w)
{
    if (s->nwaiters >= GW_JWKS_MAX_WAITERS)
        return KB_EUNAVAIL;
    w->next = s->waiters;
    s->waiters = w;
    s->nwaiters++;
    return KB_EAGAIN;
}

int
gw__jwks_get(gw_jwks_src *s, unsigned flags, gw_jwks_waiter *w,
             gw_keyset **keys)
{
    gw_jwks *j = s->j;
    bool kid_miss = (flags & GW_JWKS_KID_MISS) != 0;
    uint64_t now;
    int rc = 0;

    *keys = NULL;
    pthread_mutex_lock(&j->lock);
    now = j->now_ms();
    if (j->stopping) {
        ;                            /* shutting down: what we hold, or 401 */
    } else if (s->fetching) {
        if (s->keys == NULL || kid_miss)
            rc = add_waiter(s, w);
    } else if (s->keys == NULL) {
        if (s->last_attempt != 0 && now - s->last_attempt < GW_JWKS_RETRY_MS)
            rc = KB_EUNAVAIL;
        else
            rc = fetch_start(s, now) ? add_waiter(s, w) : KB_EUNAVAIL;
    } else if (kid_miss) {
        if (s->last_kid_fetch == 0 ||
            now - s->last_kid_fetch >= GW_JWKS_KID_REFETCH_MS) {
            s->last_kid_fetch = now;
            if (fetch_start(s, now))
                rc = add_waiter(s, w);
        }
    } else if (now >= s->fresh_until &&
               now - s->last_attempt >= (s->last_err != 0
                                             ? GW_JWKS_KID_REFETCH_MS
                                             : GW_JWKS_RETRY_MS)) {
        fetch_start(s, now);         /* refresh behind the stale keys */
    }
    if (rc == 0)
        *keys = gw__keyset_ref(s->keys);
    pthread_mutex_unlock(&j->lock);
    if (rc == 0 && *keys == NULL)
        rc = KB_EUNAVAIL;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The fetch thread                                                         */

static uint64_t
ttl_ms(long max_age_s)
{
    uint64_t ms;

    if (max_age_s < 0)
        return GW_JWKS_TTL_MIN_MS;
    ms = (uint64_t)max_age_s * 1000;
    if (ms < GW_JWKS_TTL_MIN_MS)
        return GW_JWKS_TTL_MIN_MS;
    if (ms > GW_JWKS_TTL_MAX_MS)
        return GW_JWKS_TTL_MAX_MS;
    return ms;
}

static void
fetch_one(gw_jwks *j, gw_jwks_src *s)
{
    kb_buf body = KB_BUF_INIT(GW_JWKS_MAX_DOC);
    gw_keyset *ks = NULL, *old = NULL;
    gw_jwks_waiter *waiters;
    const char *why = NULL;
    long max_age = -1;
    bool free_registry, stale;
    int rc;

    rc = j->fetch(j, s->uri, &body, &max_age);  /* s->uri never changes */
    if (rc == 0)
        rc = gw__jwks_parse(kb_buf_cstr(&body), body.len, 0, &ks, &why);
    kb_buf_free(&body);

    pthread_mutex_lock(&j->lock);
    s->last_err = rc;
    s->last_attempt = j->now_ms();   /* retry pauses count from the end */
    if (rc == 0) {
        old = s->keys;
        s->keys = ks;
        s->fresh_until = j->now_ms() + ttl_ms(max_age);
    }
    s->fetching = false;
    stale = s->keys != NULL;
    waiters = take_waiters(s);
    pthread_mutex_unlock(&j->lock);

    if (rc == 0)
        kb_log_debug("jwks: fetched", "{s:s, s:i, s:I}", "uri", s->uri,
                     "keys", (int)ks->n, "max_age", (json_int_t)max_age);
    else
        kb_log_warn("jwks: fetch failed", "{s:s, s:s, s:b}", "uri", s->uri,
                    "error", why != NULL ? why : kb_strerror(rc),
                    "serving_stale", stale);
    gw__keyset_unref(old);
    wake(waiters);

    pthread_mutex_lock(&j->lock);
    free_registry = source_unref_locked(s);      /* the queue's reference */
    pthread_mutex_unlock(&j->lock);
    (void)free_registry;             /* destroy joins us before it frees */
}

static void *
fetch_main(void *arg)
{
    gw_jwks *j = arg;

    pthread_mutex_lock(&j->lock);
    for (;;) {
        gw_jwks_src *s;

        while (j->queue_head == NULL && !j->stopping)
            pthread_cond_wait(&j->cond, &j->lock);
        if (j->stopping)
            break;
        s = j->queue_head;
        j->queue_head = s->qnext;
        if (j->queue_head == NULL)
            j->queue_tail = NULL;
        pthread_mutex_unlock(&j->lock);
        fetch_one(j, s);
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* libcurl callbacks ------------------------------------------------------ */

typedef struct fetch_io {
    kb_buf *body;
    long   *max_age_s;
    bool    too_big;
} fetch_io;

static size_t
on_body(char *p, size_t size, size_t n, void *data)
{
    fetch_io *io = data;

    if (kb_buf_append(io->body, p, size * n) != 0) {
        io->too_big = true;
        return 0;                    /* curl fails with CURLE_WRITE_ERROR */
    }
    return size * n;
}

/* Cache-Control: max-age=N (no-store / no-cache: as short as allowed). */
static size_t
on_header(char *p, size_t size, size_t n, void *data)
{
    fetch_io *io = data;
    size_t len = size * n;
    char line[512];

    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        *io->max_age_s = -1;         /* a new response (after a redirect) */
        return len;
    }
    if (len < 14 || len >= sizeof(line) ||
        strncasecmp(p, "cache-control:", 14) != 0)
        return len;
    memcpy(line, p + 14, len - 14);
    line[len - 14] = '\0';
    for (char *tok = line; tok != NULL && *tok != '\0';) {
        char *comma = strchr(tok, ',');
        if (comma != NULL)
            *comma = '\0';
        while (*tok == ' ' || *tok == '\t')
            tok++;
        if (strncasecmp(tok, "max-age=", 8) == 0) {
            char *end;
            long v = strtol(tok + 8, &end, 10);
            if (end != tok + 8 && v >= 0)
                *io->max_age_s = v;
        } else if (strncasecmp(tok, "no-store", 8) == 0 ||
                   strncasecmp(tok, "no-cache", 8) == 0) {
            *io->max_age_s = 0;
        }
        tok = comma != NULL ? comma + 1 : NULL;
    }
    return len;
}

static int
on_progress(void *data, curl_off_t dlt, curl_off_t dln, curl_off_t ult,
            curl_off_t uln)
{
    gw_jwks *j = data;

    (void)dlt; (void)dln; (void)ult; (void)uln;
    return atomic_load(&j->abort_fetch) ? 1 : 0;
}

static int
fetch_curl(gw_jwks *j, const char *uri, kb_buf *body, long *max_age_s)
{
    fetch_io io = { body, max_age_s, false };
    CURL *h = curl_easy_init();
    long status = 0;
    CURLcode cc;

    *max_age_s = -1;
    if (h == NULL)
        return KB_ENOMEM;
    curl_easy_setopt(h, CURLOPT_URL, uri);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)GW_JWKS_FETCH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "kiban-jwks");
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &io);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &io);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, j);
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (io.too_big)
        return KB_ETOOBIG;
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return KB_ETIMEDOUT;
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return KB_ECANCELED;
    if (cc != CURLE_OK)
        return -EIO;
    return status == 200 ? 0 : KB_EUNAVAIL;
}

/* ------------------------------------------------------------------------ */
/* The verified-token cache                                                 */

static size_t
tc_hash(const unsigned char digest[32], uint64_t uid)
{
    uint64_t h;

    memcpy(&h, digest, sizeof(h));   /* a SHA-256 prefix is well mixed */
    return (size_t)(h ^ (uid * 0x9E3779B97F4A7C15ull));
}

static void
tc_lru_unlink(tc_shard *sh, tc_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        sh->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        sh->tail = e->prev;
    e->prev = e->next = NULL;
}

static void
tc_lru_push(tc_shard *sh, tc_entry *e)
{
    e->prev = NULL;
    e->next = sh->head;
    if (sh->head != NULL)
        sh->head->prev = e;
    sh->head = e;
    if (sh->tail == NULL)
        sh->tail = e;
}

static void
tc_remove(tc_shard *sh, tc_entry *e, size_t bucket)
{
    for (tc_entry **pp = &sh->buckets[bucket]; *pp != NULL;
         pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    tc_lru_unlink(sh, e);
    sh->n--;
    json_decref(e->claims);
    free(e->subject);
    free(e->payload_b64);
    free(e);
}

static tc_entry *
tc_find(tc_shard *sh, size_t bucket, const unsigned char digest[32],
        uint64_t uid)
{
    for (tc_entry *e = sh->buckets[bucket]; e != NULL; e = e->hnext)
        if (e->uid == uid && memcmp(e->digest, digest, 32) == 0)
            return e;
    return NULL;
}

bool
gw__tcache_get(gw_jwks *j, const unsigned char digest[32], uint64_t uid,
               int64_t now, kb_pool *pool, gw_tc_hit *out)
{
    size_t h = tc_hash(digest, uid);
    tc_shard *sh = &j->shards[h % TC_SHARDS];
    size_t bucket = (h / TC_SHARDS) & (TC_BUCKETS - 1);
    bool hit = false;
    tc_entry *e;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&sh->lock);
    e = tc_find(sh, bucket, digest, uid);
    if (e != NULL && now > e->expires) {
        tc_remove(sh, e, bucket);
    } else if (e != NULL) {
        out->subject = kb_pool_strdup(pool, e->subject);
        out->payload_b64 = kb_pool_strdup(pool, e->payload_b64);
        if (out->subject != NULL && out->payload_b64 != NULL) {
            out->claims = json_incref(e->claims);
            tc_lru_unlink(sh, e);
            tc_lru_push(sh, e);
            hit = true;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return hit;
}

void
gw__tcache_put(gw_jwks *j, const unsigned char digest[32], uint64_t uid,
               int64_t expires, json_t *claims, const char *subject,
               const char *payload_b64, size_t payload_len)
{
    size_t h = tc_hash(digest, uid);
    tc_shard *sh = &j->shards[h % TC_SHARDS];
    size_t bucket = (h / TC_SHARDS) & (TC_BUCKETS - 1);
    tc_entry *e = calloc(1, sizeof(*e));

    if (e == NULL)
        return;
    e->subject = strdup(subject);
    e->payload_b64 = strndup(payload_b64, payload_len);
    if (e->subject == NULL || e->payload_b64 == NULL) {
        free(e->subject);
        free(e->payload_b64);
        free(e);
        return;
    }
    memcpy(e->digest, digest, 32);
    e->uid = uid;
    e->expires = expires;
    e->claims = json_incref(claims);

    pthread_mutex_lock(&sh->lock);
    {
        tc_entry *old = tc_find(sh, bucket, digest, uid);
        if (old != NULL)
            tc_remove(sh, old, bucket);
        while (sh->n >= GW_TCACHE_MAX / TC_SHARDS && sh->tail != NULL) {
            tc_entry *victim = sh->tail;
            size_t vh = tc_hash(victim->digest, victim->uid);
            tc_remove(sh, victim, (vh / TC_SHARDS) & (TC_BUCKETS - 1));
        }
        e->hnext = sh->buckets[bucket];
        sh->buckets[bucket] = e;
        tc_lru_push(sh, e);
        sh->n++;
    }
    pthread_mutex_unlock(&sh->lock);
}
