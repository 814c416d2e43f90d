/*
 * test_cache.c - the gateway's response cache (src/gateway/cache.c): the
 * x-kiban-cache policy and its errors, the key (query order, vary, who
 * is asking), Cache-Control decisions, the byte bound and LRU, expiry,
 * request coalescing and purge.  Includes cache.c to reach its statics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "gateway/cache.c"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t fake_ms = 1000000;

static uint64_t
fake_now(void)
{
    return fake_ms;
}

static struct gw_cache_policy *
policy(const char *text)
{
    json_t *v = J(text);
    struct gw_cache_policy *p = NULL;
    char err[256];

    if (gw__cache_policy_parse(v, "/x", &p, err, sizeof(err)) != 0)
        fail_msg("policy rejected: %s", err);
    json_decref(v);
    return p;
}

static void
policy_rejected(const char *text, const char *want)
{
    json_t *v = J(text);
    struct gw_cache_policy *p = NULL;
    char err[256] = "";
    int rc = gw__cache_policy_parse(v, "/paths/~1a/get/x-kiban-cache", &p,
                                    err, sizeof(err));

    json_decref(v);
    if (rc != KB_EINVAL || p != NULL || strstr(err, want) == NULL)
        fail_msg("policy %s: rc %d err \"%s\", want \"%s\"", text, rc, err,
                 want);
}

/* A request with up to 8 headers given as "Name: value" strings. */
typedef struct fake_req {
    kb_http_req    req;
    kb_http_header h[8];
    char           text[8][128];
} fake_req;

static void
fake_req_init(fake_req *f, const char *method, const char *path,
              const char *query, const char *const *headers)
{
    memset(f, 0, sizeof(*f));
    f->req.pool = kb_pool_create(0);
    f->req.method = method;
    f->req.path = path;
    f->req.query = query;
    f->req.headers = f->h;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        char *colon;
        snprintf(f->text[i], sizeof(f->text[i]), "%s", headers[i]);
        colon = strchr(f->text[i], ':');
        assert_non_null(colon);
        *colon = '\0';
        f->h[i] = (kb_http_header){ f->text[i], colon + 2 };
        f->req.nheaders++;
    }
}

/* The key of a request as text, for comparisons. */
static char *
key_of(const char *gwid, const char *method, const char *path,
       const char *query, const char *const *headers, const char *subject,
       const struct gw_cache_policy *p, bool *per_user)
{
    fake_req f;
    kb_buf k = KB_BUF_INIT(0);
    bool pu;
    char *out;

    fake_req_init(&f, method, path, query, headers);
    assert_int_equal(key_build(&k, gwid, &f.req, subject, p, NULL, &pu), 0);
    if (per_user != NULL)
        *per_user = pu;
    out = strndup(k.data, k.len);
    kb_buf_free(&k);
    kb_pool_destroy(f.req.pool);
    return out;
}

static void
assert_same_key(char *a, char *b, bool same)
{
    if ((strcmp(a, b) == 0) != same)
        fail_msg("keys should %s:\n%s\n%s", same ? "match" : "differ", a, b);
    free(a);
    free(b);
}

static kb_gateway fake_gw;

static struct gw_cache *
cache_new(size_t max_bytes)
{
    memset(&fake_gw, 0, sizeof(fake_gw));
    fake_gw.cache_max_bytes = max_bytes;
    assert_int_equal(gw__cache_init(&fake_gw), 0);
    cache_now_ms = fake_now;
    return fake_gw.cache;
}

static void
cache_done(void)
{
    gw__cache_fini(&fake_gw);
    cache_now_ms = kb_time_mono_ms;
}

static cache_entry *
entry_sized(struct gw_cache *cache, const char *key, size_t body_len,
            const char *gwid, const char *path)
{
    char *body = calloc(1, body_len + 1);
    kb_http_header h[] = { { "Content-Type", "text/plain" } };
    cache_entry *e;

    memset(body, 'x', body_len);
    e = entry_new(key, strlen(key), siphash24(cache->seed, key, strlen(key)),
                  gwid, path, 200, h, 1, body, body_len);
    free(body);
    assert_non_null(e);
    e->stored_ms = fake_ms;
    e->expires_ms = fake_ms + 60000;
    return e;
}

/* Insert into the shard the key hashes to. */
static bool
put(struct gw_cache *cache, cache_entry *e)
{
    cache_shard *s = shard_of(cache, e->hash);
    bool ok;

    pthread_mutex_lock(&s->lock);
    ok = entry_insert(cache, s, e);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static bool
present(struct gw_cache *cache, const char *key)
{
    uint64_t h = siphash24(cache->seed, key, strlen(key));
    cache_shard *s = shard_of(cache, h);
    cache_entry *e;

    pthread_mutex_lock(&s->lock);
    e = entry_get(cache, s, h, key, strlen(key));
    pthread_mutex_unlock(&s->lock);
    entry_unref(e);
    return e != NULL;
}

/* ------------------------------------------------------------------------ */
/* SipHash                                                                   */

static void
test_siphash_vectors(void **state)
{
    uint8_t key[16], in[64];

    (void)state;
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        in[i] = (uint8_t)i;
    /* the reference vectors of the SipHash paper's implementation */
    assert_true(siphash24(key, in, 0) == 0x726fdb47dd0e0e31ull);
    assert_true(siphash24(key, in, 1) == 0x74f839c593dc67fdull);
    assert_true(siphash24(key, in, 15) == 0xa129ca6149be45e5ull);
}

/* ------------------------------------------------------------------------ */
/* Policy                                                                    */

static void
test_policy_fields(void **state)
{
    struct gw_cache_policy *p;

    (void)state;
    p = policy("{'ttl':'30s','vary':['Accept-Language'],'public':true,"
               "'maxEntryBytes':1000}");
    assert_int_equal(p->ttl_ms, 30000);
    assert_int_equal(p->nvary, 1);
    assert_string_equal(p->vary[0], "Accept-Language");
    assert_true(p->is_public);
    assert_int_equal(p->max_entry, 1000);
    gw__cache_policy_free(p);

    p = policy("{'ttl':2.5}");
    assert_int_equal(p->ttl_ms, 2500);
    assert_false(p->is_public);
    gw__cache_policy_free(p);
    p = policy("{'ttl':'500ms'}");
    assert_int_equal(p->ttl_ms, 500);
    gw__cache_policy_free(p);
    p = policy("{'ttl':'5m'}");
    assert_int_equal(p->ttl_ms, 300000);
    gw__cache_policy_free(p);
}

static void
test_policy_errors(void **state)
{
    (void)state;
    policy_rejected("{}", "/paths/~1a/get/x-kiban-cache/ttl: required");
    policy_rejected("true", "/paths/~1a/get/x-kiban-cache: must be an "
                            "object");
    policy_rejected("{'ttl':'soon'}", "x-kiban-cache/ttl: must be a duration");
    policy_rejected("{'ttl':0}", "ttl: must be a duration");
    policy_rejected("{'ttl':'2d'}", "ttl: must be a duration");
    policy_rejected("{'ttl':'0x10s'}", "ttl: must be a duration");
    policy_rejected("{'ttl':'1e3'}", "ttl: must be a duration");
    policy_rejected("{'ttl':'-5s'}", "ttl: must be a duration");
    policy_rejected("{'ttl':'1..2s'}", "ttl: must be a duration");
    policy_rejected("{'ttl':90000}", "at most 1 day");
    policy_rejected("{'ttl':1,'vary':'Accept'}", "vary: must be an array");
    policy_rejected("{'ttl':1,'vary':['bad header']}",
                    "vary: item 0 must be a header name");
    policy_rejected("{'ttl':1,'vary':['Accept','accept']}",
                    "\"accept\" is listed twice");
    policy_rejected("{'ttl':1,'public':'yes'}", "public: must be a boolean");
    policy_rejected("{'ttl':1,'maxEntryBytes':0}",
                    "maxEntryBytes: must be a positive integer");
    policy_rejected("{'ttl':1,'tll':2}", "tll: unknown field");
}

static gw_spec *
spec_compile(const char *text, char *err, size_t errlen, int *rc)
{
    json_t *spec = J(text);
    gw_spec *s = NULL;

    *rc = gw__spec_compile(spec, "p", "g", &s, err, errlen);
    json_decref(spec);
    return s;
}

static const gw_route *
route_of(const gw_spec *s, const char *label)
{
    for (size_t i = 0; i < s->nroutes; i++)
        if (strcmp(s->routes[i].label, label) == 0)
            return &s->routes[i];
    fail_msg("no route %s", label);
    return NULL;
}

static void
test_compile_spec(void **state)
{
    char err[512] = "";
    int rc;
    gw_spec *s;

    (void)state;
    /* a document default covers GET operations; an operation may opt out
     * or set its own */
    s = spec_compile(
        "{'openapi':{'openapi':'3.0.0','info':{'title':'t','version':'1'},"
        "'x-google-backend':{'address':'http://127.0.0.1:9'},"
        "'x-kiban-cache':{'ttl':'10s'},"
        "'paths':{'/a':{'get':{'responses':{}},'post':{'responses':{}}},"
        "'/b':{'get':{'x-kiban-cache':false,'responses':{}}},"
        "'/c':{'get':{'x-kiban-cache':{'ttl':3,'public':true},"
        "'responses':{}}}}}}", err, sizeof(err), &rc);
    if (rc != 0)
        fail_msg("rejected: %s", err);
    assert_non_null(route_of(s, "GET /a")->cache);
    assert_int_equal(route_of(s, "GET /a")->cache->ttl_ms, 10000);
    assert_null(route_of(s, "POST /a")->cache);
    assert_null(route_of(s, "GET /b")->cache);
    assert_int_equal(route_of(s, "GET /c")->cache->ttl_ms, 3000);
    assert_true(route_of(s, "GET /c")->cache->is_public);
    gw__spec_unref(s);

    /* caching a POST is an error that names the operation */
    s = spec_compile(
        "{'openapi':{'openapi':'3.0.0','info':{'title':'t','version':'1'},"
        "'x-google-backend':{'address':'http://127.0.0.1:9'},"
        "'paths':{'/a':{'post':{'x-kiban-cache':{'ttl':1},"
        "'responses':{}}}}}}", err, sizeof(err), &rc);
    assert_int_equal(rc, KB_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "/paths/~1a/post/x-kiban-cache: only GET "
                                "and HEAD"));
    /* a bad document default is an error even with no GET route */
    s = spec_compile(
        "{'openapi':{'openapi':'3.0.0','info':{'title':'t','version':'1'},"
        "'x-google-backend':{'address':'http://127.0.0.1:9'},"
        "'x-kiban-cache':{'ttl':-1},"
        "'paths':{'/a':{'post':{'responses':{}}}}}}", err, sizeof(err), &rc);
    assert_int_equal(rc, KB_EINVAL);
    assert_non_null(strstr(err, "/x-kiban-cache/ttl: must be a duration"));
}

/* ------------------------------------------------------------------------ */
/* The key                                                                   */

static void
test_key_query_and_method(void **state)
{
    struct gw_cache_policy *p = policy("{'ttl':1}");

    (void)state;
    /* parameter order does not matter; repeated names keep their order */
    assert_same_key(key_of("p/g", "GET", "/a", "b=2&a=1", NULL, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "a=1&b=2&", NULL, NULL, p,
                           NULL), true);
    assert_same_key(key_of("p/g", "GET", "/a", "a=1&a=2", NULL, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "a=2&a=1", NULL, NULL, p, NULL),
                    false);
    assert_same_key(key_of("p/g", "GET", "/a", "a=1", NULL, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "a=12", NULL, NULL, p, NULL),
                    false);
    /* HEAD is answered from GET's entry */
    assert_same_key(key_of("p/g", "GET", "/a", "", NULL, NULL, p, NULL),
                    key_of("p/g", "HEAD", "/a", "", NULL, NULL, p, NULL),
                    true);
    /* path, gateway */
    assert_same_key(key_of("p/g", "GET", "/a", "", NULL, NULL, p, NULL),
                    key_of("p/g", "GET", "/a/", "", NULL, NULL, p, NULL),
                    false);
    assert_same_key(key_of("p/g", "GET", "/a", "", NULL, NULL, p, NULL),
                    key_of("p/h", "GET", "/a", "", NULL, NULL, p, NULL),
                    false);
    /* length prefixes: a path cannot impersonate a query */
    assert_same_key(key_of("p/g", "GET", "/a1:", "", NULL, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "1:", NULL, NULL, p, NULL),
                    false);
    gw__cache_policy_free(p);
}

static void
test_key_vary(void **state)
{
    struct gw_cache_policy *p = policy("{'ttl':1,'vary':['Accept-Language']}");
    const char *ja[] = { "accept-language: ja", NULL };
    const char *ja2[] = { "Accept-Language: ja", "X-Other: 1", NULL };
    const char *en[] = { "Accept-Language: en", NULL };
    const char *empty[] = { "Accept-Language: ", NULL };

    (void)state;
    assert_same_key(key_of("p/g", "GET", "/a", "", ja, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "", ja2, NULL, p, NULL), true);
    assert_same_key(key_of("p/g", "GET", "/a", "", ja, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "", en, NULL, p, NULL), false);
    /* absent and empty are different requests */
    assert_same_key(key_of("p/g", "GET", "/a", "", NULL, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "", empty, NULL, p, NULL),
                    false);
    gw__cache_policy_free(p);
}

static void
test_key_who(void **state)
{
    struct gw_cache_policy *p = policy("{'ttl':1}");
    struct gw_cache_policy *pub = policy("{'ttl':1,'public':true}");
    const char *tok_a[] = { "Authorization: Bearer aaa", NULL };
    const char *tok_b[] = { "Authorization: Bearer bbb", NULL };
    const char *cookie[] = { "Cookie: s=1", NULL };
    bool per_user;

    (void)state;
    /* verified subjects never share; the same subject does */
    assert_same_key(key_of("p/g", "GET", "/a", "", NULL, "iss|alice", p, NULL),
                    key_of("p/g", "GET", "/a", "", NULL, "iss|bob", p, NULL),
                    false);
    assert_same_key(key_of("p/g", "GET", "/a", "", tok_a, "iss|alice", p,
                           &per_user),
                    key_of("p/g", "GET", "/a", "", tok_b, "iss|alice", p,
                           NULL), true);
    assert_true(per_user);
    /* unverified credentials never share, nor with anonymous requests */
    assert_same_key(key_of("p/g", "GET", "/a", "", tok_a, NULL, p, &per_user),
                    key_of("p/g", "GET", "/a", "", tok_b, NULL, p, NULL),
                    false);
    assert_true(per_user);
    assert_same_key(key_of("p/g", "GET", "/a", "", tok_a, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "", tok_a, NULL, p, NULL),
                    true);
    assert_same_key(key_of("p/g", "GET", "/a", "", tok_a, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "", NULL, NULL, p, &per_user),
                    false);
    assert_false(per_user);
    assert_same_key(key_of("p/g", "GET", "/a", "", cookie, NULL, p, NULL),
                    key_of("p/g", "GET", "/a", "", NULL, NULL, p, NULL),
                    false);
    /* no credential text in the key */
    {
        char *k = key_of("p/g", "GET", "/a", "", tok_a, NULL, p, NULL);
        assert_null(strstr(k, "aaa"));
        free(k);
    }
    /* public: everybody shares */
    assert_same_key(key_of("p/g", "GET", "/a", "", tok_a, "iss|alice", pub,
                           &per_user),
                    key_of("p/g", "GET", "/a", "", NULL, NULL, pub, NULL),
                    true);
    assert_false(per_user);
    gw__cache_policy_free(p);
    gw__cache_policy_free(pub);
}

/* ------------------------------------------------------------------------ */
/* What is stored                                                            */

static uint64_t
ttl_for(const struct gw_cache_policy *p, int status, const char *h1,
        const char *h2, bool per_user, const char **why)
{
    kb_http_header h[2] = { { "", "" }, { "", "" } };
    char t[2][256];
    size_t n = 0;
    const char *w = NULL;
    uint64_t ttl;

    for (const char *x = h1; x != NULL; x = x == h1 ? h2 : NULL) {
        char *colon;
        snprintf(t[n], sizeof(t[n]), "%s", x);
        colon = strchr(t[n], ':');
        *colon = '\0';
        h[n] = (kb_http_header){ t[n], colon + 2 };
        n++;
    }
    ttl = store_ttl(p, status, h, n, per_user, &w);
    if (why != NULL)
        *why = w;
    return ttl;
}

static void
test_store_rules(void **state)
{
    struct gw_cache_policy *p = policy("{'ttl':60}");
    struct gw_cache_policy *pv = policy("{'ttl':60,'vary':['Accept']}");
    const char *why;
    char date[64], exp[64];
    time_t now = time(NULL);
    struct tm tm;

    (void)state;
    assert_int_equal(ttl_for(p, 200, NULL, NULL, false, NULL), 60000);
    assert_int_equal(ttl_for(p, 404, NULL, NULL, false, NULL), 60000);
    assert_int_equal(ttl_for(p, 410, NULL, NULL, false, NULL), 60000);
    assert_int_equal(ttl_for(p, 500, NULL, NULL, false, &why), 0);
    assert_string_equal(why, "status");
    assert_int_equal(ttl_for(p, 302, NULL, NULL, false, NULL), 0);
    assert_int_equal(ttl_for(p, 206, NULL, NULL, false, NULL), 0);
    /* Cache-Control */
    assert_int_equal(ttl_for(p, 200, "Cache-Control: no-store", NULL, true,
                             &why), 0);
    assert_string_equal(why, "no-store");
    assert_int_equal(ttl_for(p, 200, "cache-control: public, No-Cache",
                             NULL, true, &why), 0);
    assert_string_equal(why, "no-cache");
    assert_int_equal(ttl_for(p, 200, "Cache-Control: private", NULL, false,
                             &why), 0);
    assert_string_equal(why, "private");
    assert_int_equal(ttl_for(p, 200, "Cache-Control: private, max-age=5",
                             NULL, true, NULL), 5000);
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=10", NULL,
                             false, NULL), 10000);
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=\"10\"", NULL,
                             false, NULL), 10000);
    /* never longer than the policy's ttl */
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=3600", NULL,
                             false, NULL), 60000);
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=99999999999999"
                             "99999999", NULL, false, NULL), 60000);
    /* s-maxage wins over max-age for a shared cache */
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=5, s-maxage=20",
                             NULL, false, NULL), 20000);
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=5",
                             "Cache-Control: s-maxage=7", false, NULL), 7000);
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=0", NULL, false,
                             &why), 0);
    assert_int_equal(ttl_for(p, 200, "Cache-Control: max-age=abc", NULL,
                             false, NULL), 0);
    /* Set-Cookie */
    assert_int_equal(ttl_for(p, 200, "Set-Cookie: a=1", NULL, true, &why), 0);
    assert_string_equal(why, "set-cookie");
    /* Vary must be covered by the policy */
    assert_int_equal(ttl_for(p, 200, "Vary: Accept", NULL, false, &why), 0);
    assert_string_equal(why, "vary");
    assert_int_equal(ttl_for(pv, 200, "Vary: accept", NULL, false, NULL),
                     60000);
    assert_int_equal(ttl_for(pv, 200, "Vary: Accept, Cookie", NULL, false,
                             NULL), 0);
    assert_int_equal(ttl_for(pv, 200, "Vary: *", NULL, false, NULL), 0);
    /* Expires (relative to Date) when there is no max-age */
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "Date: %a, %d %b %Y %H:%M:%S GMT", &tm);
    now += 30;
    gmtime_r(&now, &tm);
    strftime(exp, sizeof(exp), "Expires: %a, %d %b %Y %H:%M:%S GMT", &tm);
    assert_int_equal(ttl_for(p, 200, date, exp, false, NULL), 30000);
    assert_int_equal(ttl_for(p, 200, "Expires: 0", NULL, false, NULL), 0);
    assert_int_equal(ttl_for(p, 200, "Expires: Thu, 01 Jan 1970 00:00:00 GMT",
                             NULL, false, NULL), 0);
    gw__cache_policy_free(p);
    gw__cache_policy_free(pv);
}

/* ------------------------------------------------------------------------ */
/* Bound, LRU, expiry                                                        */

/* Keys that land in shard 0, so one shard's bound is exercised. */
static void
keys_in_shard0(struct gw_cache *cache, char keys[][16], size_t n)
{
    size_t found = 0;

    for (int i = 0; found < n; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%05d", i);
        if (shard_of(cache, siphash24(cache->seed, k, strlen(k))) ==
            &cache->shards[0])
            memcpy(keys[found++], k, sizeof(k));
    }
}

static void
test_lru_byte_bound(void **state)
{
    /* 16 shards of 8 KiB: each entry is ~1.2 KiB, so 6 fit */
    struct gw_cache *cache = cache_new(16 * 8192);
    cache_shard *s0 = &cache->shards[0];
    char keys[10][16];
    size_t per;
    double before;
    kb_gauge *bytes_gauge;

    (void)state;
    keys_in_shard0(cache, keys, 10);
    bytes_gauge = cache->bytes_gauge;
    before = kb_gauge_value(bytes_gauge);
    for (int i = 0; i < 6; i++)
        assert_true(put(cache, entry_sized(cache, keys[i], 1100, "p/g",
                                           "/a")));
    per = s0->lru_head->bytes;
    assert_int_equal(s0->count, 6);
    assert_int_equal(s0->bytes, 6 * per);
    assert_true(kb_gauge_value(cache->bytes_gauge) - before == 6.0 * per);
    /* reading k0 makes k1 the least recently used */
    assert_true(present(cache, keys[0]));
    assert_true(put(cache, entry_sized(cache, keys[6], 1100, "p/g", "/a")));
    assert_true(s0->bytes <= 8192);
    assert_true(present(cache, keys[0]));
    assert_false(present(cache, keys[1]));
    assert_true(present(cache, keys[6]));
    /* a bigger entry evicts as many as it needs */
    assert_true(put(cache, entry_sized(cache, keys[7], 3000, "p/g", "/a")));
    assert_true(s0->bytes <= 8192);
    assert_true(present(cache, keys[7]));
    /* one that can never fit is refused and evicts nothing */
    {
        size_t count = s0->count;
        assert_false(put(cache, entry_sized(cache, keys[8], 9000, "p/g",
                                            "/a")));
        assert_int_equal(s0->count, count);
    }
    /* same key: replaced, not duplicated */
    {
        size_t count = s0->count;
        assert_true(put(cache, entry_sized(cache, keys[7], 10, "p/g", "/a")));
        assert_int_equal(s0->count, count);
    }
    cache_done();
    /* everything freed is taken off the gauge */
    assert_true(kb_gauge_value(bytes_gauge) == before);
}

static void
test_default_bound(void **state)
{
    struct gw_cache *cache = cache_new(0);

    (void)state;
    assert_int_equal(cache_max(cache), (size_t)64 << 20);
    fake_gw.cache_max_bytes = 1 << 20;
    assert_int_equal(cache_max(cache), (size_t)1 << 20);
    cache_done();
}

static void
test_expiry(void **state)
{
    struct gw_cache *cache = cache_new(0);
    cache_entry *e = entry_sized(cache, "k", 10, "p/g", "/a");

    (void)state;
    e->expires_ms = fake_ms + 5000;
    assert_true(put(cache, e));
    fake_ms += 4999;
    assert_true(present(cache, "k"));
    fake_ms += 1;
    assert_false(present(cache, "k"));
    /* the expired entry was dropped, not just hidden */
    assert_int_equal(shard_of(cache, siphash24(cache->seed, "k", 1))->count,
                     0);
    cache_done();
}

/* A reader keeps an entry alive after it is evicted. */
static void
test_refcount(void **state)
{
    struct gw_cache *cache = cache_new(0);
    cache_entry *e = entry_sized(cache, "k", 10, "p/g", "/a"), *got;
    cache_shard *s = shard_of(cache, e->hash);

    (void)state;
    assert_true(put(cache, e));
    pthread_mutex_lock(&s->lock);
    got = entry_get(cache, s, e->hash, "k", 1);
    pthread_mutex_unlock(&s->lock);
    assert_ptr_equal(got, e);
    assert_int_equal(kb_gateway_cache_purge(&fake_gw, "p", "g", NULL), 1);
    assert_int_equal(got->body_len, 10);     /* ASan: still valid */
    entry_unref(got);
    cache_done();
}

/* ------------------------------------------------------------------------ */
/* Purge                                                                     */

static void
test_purge(void **state)
{
    struct gw_cache *cache = cache_new(0);

    (void)state;
    assert_true(put(cache, entry_sized(cache, "1", 10, "p/a", "/x/1")));
    assert_true(put(cache, entry_sized(cache, "2", 10, "p/a", "/x/2")));
    assert_true(put(cache, entry_sized(cache, "3", 10, "p/a", "/y")));
    assert_true(put(cache, entry_sized(cache, "4", 10, "p/b", "/x/1")));
    assert_true(put(cache, entry_sized(cache, "5", 10, "p/ab", "/x/1")));
    assert_int_equal(kb_gateway_cache_purge(&fake_gw, "p", "a", "/x"), 2);
    assert_false(present(cache, "1"));
    assert_false(present(cache, "2"));
    assert_true(present(cache, "3"));
    assert_true(present(cache, "4"));
    assert_int_equal(kb_gateway_cache_purge(&fake_gw, "p", "a", "/x"), 0);
    assert_int_equal(kb_gateway_cache_purge(&fake_gw, "p", "a", NULL), 1);
    assert_int_equal(kb_gateway_cache_purge(&fake_gw, "p", "b", ""), 1);
    assert_true(present(cache, "5"));
    assert_int_equal(kb_gateway_cache_purge(&fake_gw, "q", "a", NULL), 0);
    cache_done();
}

/* ------------------------------------------------------------------------ */
/* Coalescing                                                                */

typedef struct coalesce_fixture {
    uv_loop_t           loop;
    gw_worker           w;
    struct gw_cache_policy *pol;
    gw_ctx              c[6];
    struct gw_cache_req cr[6];
} coalesce_fixture;

static void
noop_async(uv_async_t *a)
{
    (void)a;
}

static void
fixture_init(coalesce_fixture *f, struct gw_cache *cache, const char *key)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->w.wake, noop_async), 0);
    pthread_mutex_init(&f->w.lock, NULL);
    f->w.loop = &f->loop;
    f->pol = policy("{'ttl':60}");
    for (size_t i = 0; i < 6; i++) {
        f->c[i].w = &f->w;
        f->c[i].cache_req = &f->cr[i];
        f->cr[i].c = &f->c[i];
        f->cr[i].cache = cache;
        f->cr[i].pol = f->pol;
        f->cr[i].key = (char *)key;
        f->cr[i].keylen = strlen(key);
        f->cr[i].hash = siphash24(cache->seed, key, strlen(key));
    }
}

static size_t
posted(coalesce_fixture *f)
{
    size_t n = 0;

    for (gw_ctx *c = f->w.posted_head; c != NULL; c = c->posted_next)
        n++;
    return n;
}

static void
fixture_done(coalesce_fixture *f)
{
    for (size_t i = 0; i < 6; i++) {
        entry_unref(f->cr[i].entry);
        f->cr[i].entry = NULL;
    }
    uv_close((uv_handle_t *)&f->w.wake, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    pthread_mutex_destroy(&f->w.lock);
    gw__cache_policy_free(f->pol);
}

static void
test_coalesce_hit(void **state)
{
    struct gw_cache *cache = cache_new(0);
    coalesce_fixture f;
    cache_entry *hit;
    kb_http_header h[] = { { "Content-Type", "application/json" },
                           { "Connection", "close" } };
    kb_http_client_res res = { .status = 200, .headers = h, .nheaders = 2,
                               .body = "{}", .body_len = 2 };

    (void)state;
    fixture_init(&f, cache, "key");
    /* the first GET leads; later GETs and a HEAD wait */
    assert_int_equal(lookup(&f.cr[0], false, &hit), LOOKUP_LEAD);
    assert_int_equal(lookup(&f.cr[1], false, &hit), LOOKUP_WAIT);
    assert_int_equal(lookup(&f.cr[2], false, &hit), LOOKUP_WAIT);
    assert_int_equal(lookup(&f.cr[3], true, &hit), LOOKUP_WAIT);
    assert_int_equal(posted(&f), 0);
    /* the leader's answer is stored and handed to every waiter */
    store_answer(&f.cr[0], "p/g", "/a", &res);
    assert_null(f.cr[0].fill);
    assert_int_equal(posted(&f), 3);
    for (size_t i = 1; i <= 3; i++) {
        assert_int_equal(f.cr[i].state, CR_WOKEN);
        assert_non_null(f.cr[i].entry);
        assert_ptr_equal(f.cr[i].entry, f.cr[1].entry);
    }
    assert_int_equal(f.cr[1].entry->status, 200);
    assert_int_equal(f.cr[1].entry->body_len, 2);
    /* hop-by-hop headers are not stored */
    assert_int_equal(f.cr[1].entry->nheaders, 1);
    /* the table and three waiters hold it */
    assert_int_equal(atomic_load(&f.cr[1].entry->refs), 4);
    /* the next request hits */
    assert_int_equal(lookup(&f.cr[4], false, &hit), LOOKUP_HIT);
    assert_ptr_equal(hit, f.cr[1].entry);
    entry_unref(hit);
    /* the leader's cleanup has nothing left to do */
    req_release(&f.cr[0]);
    assert_int_equal(posted(&f), 3);
    fixture_done(&f);
    cache_done();
}

static void
test_coalesce_not_cacheable(void **state)
{
    struct gw_cache *cache = cache_new(0);
    coalesce_fixture f;
    cache_entry *hit;
    kb_http_header h[] = { { "Cache-Control", "no-store" } };
    kb_http_client_res res = { .status = 200, .headers = h, .nheaders = 1,
                               .body = "x", .body_len = 1 };

    (void)state;
    fixture_init(&f, cache, "key");
    assert_int_equal(lookup(&f.cr[0], false, &hit), LOOKUP_LEAD);
    assert_int_equal(lookup(&f.cr[1], false, &hit), LOOKUP_WAIT);
    store_answer(&f.cr[0], "p/g", "/a", &res);
    /* woken without an entry: it goes upstream itself */
    assert_int_equal(posted(&f), 1);
    assert_int_equal(f.cr[1].state, CR_WOKEN);
    assert_null(f.cr[1].entry);
    /* nothing stored, no fill left: the next request leads anew */
    assert_int_equal(lookup(&f.cr[2], false, &hit), LOOKUP_LEAD);
    req_release(&f.cr[2]);
    fixture_done(&f);
    cache_done();
}

static void
test_coalesce_leader_fails(void **state)
{
    struct gw_cache *cache = cache_new(0);
    coalesce_fixture f;
    cache_entry *hit;

    (void)state;
    fixture_init(&f, cache, "key");
    assert_int_equal(lookup(&f.cr[0], false, &hit), LOOKUP_LEAD);
    assert_int_equal(lookup(&f.cr[1], false, &hit), LOOKUP_WAIT);
    assert_int_equal(lookup(&f.cr[2], false, &hit), LOOKUP_WAIT);
    /* the leader's request ends without an answer (502, client gone) */
    req_release(&f.cr[0]);
    assert_int_equal(posted(&f), 2);
    assert_int_equal(f.cr[1].state, CR_WOKEN);
    assert_null(f.cr[1].entry);
    assert_int_equal(f.cr[2].state, CR_WOKEN);
    fixture_done(&f);
    cache_done();
}

static void
test_head_never_leads(void **state)
{
    struct gw_cache *cache = cache_new(0);
    coalesce_fixture f;
    cache_entry *hit;

    (void)state;
    fixture_init(&f, cache, "key");
    assert_int_equal(lookup(&f.cr[0], true, &hit), LOOKUP_MISS);
    assert_null(f.cr[0].fill);
    assert_int_equal(lookup(&f.cr[1], false, &hit), LOOKUP_LEAD);
    req_release(&f.cr[1]);
    fixture_done(&f);
    cache_done();
}

/* Many threads hammering one cache: no lost bytes, no crash (TSan/ASan). */
typedef struct hammer_arg {
    struct gw_cache *cache;
    int              id;
} hammer_arg;

static void *
hammer(void *data)
{
    hammer_arg *a = data;

    for (int i = 0; i < 2000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "k%d", (i * 7 + a->id) % 300);
        if (!present(a->cache, k))
            put(a->cache, entry_sized(a->cache, k, 200 + (size_t)(i % 900),
                                      "p/g", "/a"));
        if (i % 500 == 0)
            kb_gateway_cache_purge(&fake_gw, "p", "g", "/a");
    }
    return NULL;
}

static void
test_threads(void **state)
{
    struct gw_cache *cache = cache_new(16 * 16384);
    pthread_t t[4];
    hammer_arg args[4];
    size_t total = 0;

    (void)state;
    cache_now_ms = kb_time_mono_ms;
    for (int i = 0; i < 4; i++) {
        args[i] = (hammer_arg){ cache, i };
        pthread_create(&t[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        size_t sum = 0;
        for (cache_entry *e = cache->shards[i].lru_head; e != NULL;
             e = e->lru_next)
            sum += e->bytes;
        assert_int_equal(sum, cache->shards[i].bytes);
        assert_true(sum <= 16384);
        total += sum;
    }
    assert_true(total <= 16 * 16384);
    cache_done();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_policy_fields),
        cmocka_unit_test(test_policy_errors),
        cmocka_unit_test(test_compile_spec),
        cmocka_unit_test(test_key_query_and_method),
        cmocka_unit_test(test_key_vary),
        cmocka_unit_test(test_key_who),
        cmocka_unit_test(test_store_rules),
        cmocka_unit_test(test_lru_byte_bound),
        cmocka_unit_test(test_default_bound),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_coalesce_hit),
        cmocka_unit_test(test_coalesce_not_cacheable),
        cmocka_unit_test(test_coalesce_leader_fails),
        cmocka_unit_test(test_head_never_leads),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
