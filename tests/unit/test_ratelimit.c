/*
 * test_ratelimit.c - rate limits (src/gateway/ratelimit.c): token bucket
 * math (refill, burst, Retry-After and Reset rounding), the eviction bound,
 * concurrent takes, policy parsing (x-kiban-rate-limit and Google's quota
 * form) with the JSON pointer of each bad field, and the stage's headers
 * and 429s.  The proxy's gw__* helpers are small fakes here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "gateway/ratelimit.c"

#define GW_FAKES_COMPILE gw__ratelimit_compile
#define GW_FAKES_RELEASE gw__ratelimit_release
#define GW_FAKES_POLICY  ratelimit
#include "gw_fakes.h"

/* The proxy's error answer (a 429), recorded in fake_status/fake_msg. */
void
gw__respond_error(gw_ctx *c, int status, const char *fmt, ...)
{
    va_list ap;

    (void)c;
    fake_status = status;
    va_start(ap, fmt);
    vsnprintf(fake_msg, sizeof(fake_msg), fmt, ap);
    va_end(ap);
}

#define SEC 1000000000ULL
#define T0  (1000 * SEC)

static rl_limit
limit(uint64_t requests, uint64_t period, uint64_t burst, const char *scope)
{
    rl_limit l;

    memset(&l, 0, sizeof(l));
    l.requests = requests;
    l.period_s = period;
    l.burst = burst;
    l.cost = 1;
    l.rate = (double)requests / (double)period;
    scope_digest(l.scope, "gw", scope, NULL);
    return l;
}

static rl_result
take(struct gw_rl_state *st, const rl_limit *l, const char *v, uint64_t now)
{
    rl_result r;

    assert_int_equal(rl_take(st, l, v, strlen(v), now, &r), 0);
    return r;
}

static size_t
state_count(struct gw_rl_state *st)
{
    size_t n = 0;

    for (size_t i = 0; i < RL_SHARDS; i++)
        n += st->shards[i].n;
    return n;
}

/* ------------------------------------------------------------------------ */
/* Bucket math                                                               */

static void
test_burst_then_refill(void **state)
{
    struct gw_rl_state *st;
    rl_limit l = limit(10, 60, 5, "GET /a");     /* one token per 6 s */
    rl_result r;

    (void)state;
    assert_int_equal(rl_state_create(1024, &st), 0);
    for (int i = 0; i < 5; i++) {
        r = take(st, &l, "i:1.2.3.4", T0);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 4 - i);
    }
    /* empty: the next token comes in 6 s, the bucket is full in 30 s */
    r = take(st, &l, "i:1.2.3.4", T0);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_s, 6);
    assert_int_equal(r.reset_s, 30);
    /* 5.5 s later: 0.92 tokens, 0.5 s missing → Retry-After rounds up to 1 */
    r = take(st, &l, "i:1.2.3.4", T0 + 5 * SEC + SEC / 2);
    assert_false(r.allowed);
    assert_int_equal(r.retry_s, 1);
    /* exactly 6 s: one token, taken */
    r = take(st, &l, "i:1.2.3.4", T0 + 6 * SEC);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    r = take(st, &l, "i:1.2.3.4", T0 + 6 * SEC);
    assert_false(r.allowed);
    /* a long idle fills the bucket only up to burst */
    r = take(st, &l, "i:1.2.3.4", T0 + 3600 * SEC);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 4);
    assert_int_equal(r.reset_s, 6);              /* one token short of full */
    /* a clock going backwards adds nothing and does not break the bucket */
    r = take(st, &l, "i:1.2.3.4", T0);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 3);
    rl_state_free(st);
}

static void
test_keys_and_scopes_are_separate(void **state)
{
    struct gw_rl_state *st;
    rl_limit a = limit(1, 60, 1, "GET /a"), b = limit(1, 60, 1, "GET /b");

    (void)state;
    assert_int_equal(rl_state_create(1024, &st), 0);
    assert_true(take(st, &a, "i:127.0.0.2", T0).allowed);
    assert_false(take(st, &a, "i:127.0.0.2", T0).allowed);
    assert_true(take(st, &a, "i:127.0.0.3", T0).allowed);  /* other client */
    assert_true(take(st, &b, "i:127.0.0.2", T0).allowed);  /* other route */
    assert_true(take(st, &a, "k:127.0.0.2", T0).allowed);  /* other kind */
    assert_int_equal(state_count(st), 4);
    rl_state_free(st);
}

static void
test_refund_and_policy_change(void **state)
{
    struct gw_rl_state *st;
    rl_limit l = limit(2, 60, 2, "GET /a"), wider = limit(100, 60, 50,
                                                          "GET /a");
    rl_result r;

    (void)state;
    assert_int_equal(rl_state_create(1024, &st), 0);
    assert_true(take(st, &l, "v", T0).allowed);
    rl_refund(st, &l, "v", 1);
    r = take(st, &l, "v", T0);
    assert_int_equal(r.remaining, 1);          /* refund put it back */
    /* the spec is re-applied with a bigger bucket: state kept, new size */
    r = take(st, &wider, "v", T0 + 60 * SEC);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 49);         /* refilled up to 50 */
    rl_state_free(st);
}

/* Find n values whose buckets land in shard 0. */
static void
same_shard(struct gw_rl_state *st, const rl_limit *l, char vals[][32],
           size_t n)
{
    size_t found = 0;

    for (unsigned i = 0; found < n; i++) {
        char v[32];
        snprintf(v, sizeof(v), "i:10.0.%u.%u", i / 256, i % 256);
        if ((rl_hash(st->seed, l->scope, v, strlen(v)) & (RL_SHARDS - 1))
            == 0)
            snprintf(vals[found++], 32, "%s", v);
    }
}

static void
test_eviction_prefers_full_then_lru(void **state)
{
    struct gw_rl_state *st;
    rl_limit l = limit(1, 3600, 1, "GET /a");    /* refills in an hour */
    char v[3][32];

    (void)state;
    /* two buckets per shard */
    assert_int_equal(rl_state_create(2 * RL_SHARDS, &st), 0);
    same_shard(st, &l, v, 3);
    /* none full: the least recently used one (v0) goes */
    assert_true(take(st, &l, v[0], T0).allowed);
    assert_true(take(st, &l, v[1], T0 + SEC).allowed);
    assert_true(take(st, &l, v[2], T0 + 2 * SEC).allowed);
    assert_int_equal(st->shards[0].n, 2);
    assert_false(take(st, &l, v[1], T0 + 3 * SEC).allowed);  /* kept */
    assert_true(take(st, &l, v[0], T0 + 4 * SEC).allowed);   /* was new */
    rl_state_free(st);

    /* a full bucket goes before an older one that is still draining */
    assert_int_equal(rl_state_create(2 * RL_SHARDS, &st), 0);
    same_shard(st, &l, v, 3);
    {
        rl_limit fast = l;
        fast.rate = 1000.0;                      /* full again at once */
        assert_true(take(st, &l, v[0], T0).allowed);        /* oldest */
        assert_true(take(st, &fast, v[1], T0 + SEC).allowed);
        assert_true(take(st, &l, v[2], T0 + 2 * SEC).allowed);
    }
    assert_int_equal(st->shards[0].n, 2);
    assert_false(take(st, &l, v[0], T0 + 3 * SEC).allowed);  /* kept */
    rl_state_free(st);
}

static void
test_flood_stays_bounded(void **state)
{
    struct gw_rl_state *st;
    rl_limit l = limit(10, 60, 10, "GET /a");
    char v[32];

    (void)state;
    assert_int_equal(rl_state_create(1000, &st), 0);
    for (unsigned i = 0; i < 200000; i++) {
        snprintf(v, sizeof(v), "i:10.%u.%u.%u", i >> 16, (i >> 8) & 255,
                 i & 255);
        take(st, &l, v, T0 + i);
    }
    assert_true(state_count(st) <= st->max_buckets);
    assert_true(st->max_buckets <= 1000 + RL_SHARDS);
    for (size_t i = 0; i < RL_SHARDS; i++)
        assert_true(st->shards[i].n <= st->shards[i].max);
    rl_state_free(st);
}

typedef struct hammer {
    struct gw_rl_state *st;
    const rl_limit     *l;
    int                 allowed;
} hammer;

static void *
hammer_run(void *arg)
{
    hammer *h = arg;
    rl_result r;

    for (int i = 0; i < 20000; i++) {
        char v[16];
        /* one hot bucket, and churn across others */
        snprintf(v, sizeof(v), "%s", i % 2 ? "hot" : "x");
        if (i % 2 == 0)
            snprintf(v, sizeof(v), "c%d", i % 5000);
        rl_take(h->st, h->l, v, strlen(v), T0, &r);
        if (i % 2 && r.allowed)
            h->allowed++;
    }
    return NULL;
}

static void
test_concurrent_takes_are_exact(void **state)
{
    struct gw_rl_state *st;
    rl_limit l = limit(1000, 3600, 1000, "GET /a");
    hammer h[4];
    pthread_t t[4];
    int total = 0;

    (void)state;
    assert_int_equal(rl_state_create(512, &st), 0);
    for (int i = 0; i < 4; i++) {
        h[i] = (hammer){ st, &l, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += h[i].allowed;
    }
    /* the clock stands still: exactly the bucket, never more.  (The hot
     * bucket can be evicted under churn only when full, so no less.) */
    assert_int_equal(total, 1000);
    rl_state_free(st);
}

/* ------------------------------------------------------------------------ */
/* Policies                                                                  */

#define DOC(extra, paths) \
    "{'openapi':'3.0.3','info':{'title':'t','version':'1'}" extra \
    ",'paths':" paths "}"

static void
test_parse_kiban_policies(void **state)
{
    gw_spec *s = compile_ok(DOC(
        ",'x-kiban-rate-limit':{'requests':100,'period':'1m'}",
        "{'/a':{'get':{},"
        "       'post':{'x-kiban-rate-limit':{'requests':5,'period':30,"
        "               'burst':20,'key':'claim:sub'}},"
        "       'delete':{'x-kiban-rate-limit':false}},"
        " '/b':{'get':{'x-kiban-rate-limit':{'requests':2,'period':'1h',"
        "               'key':'apiKey'}}}}"));
    const struct gw_ratelimit *p;

    (void)state;
    p = route_of(s, "GET /a")->ratelimit;
    assert_non_null(p);
    assert_int_equal(p->nlimits, 1);
    assert_int_equal(p->limits[0].requests, 100);
    assert_int_equal(p->limits[0].period_s, 60);
    assert_int_equal(p->limits[0].burst, 100);    /* default: requests */
    assert_int_equal(p->limits[0].key, RL_KEY_IP);
    assert_string_equal(p->policy, "100;w=60");
    p = route_of(s, "POST /a")->ratelimit;
    assert_int_equal(p->limits[0].key, RL_KEY_CLAIM);
    assert_string_equal(p->limits[0].claim, "sub");
    assert_string_equal(p->policy, "5;w=30;burst=20");
    assert_null(route_of(s, "DELETE /a")->ratelimit);
    p = route_of(s, "GET /b")->ratelimit;
    assert_int_equal(p->limits[0].period_s, 3600);
    assert_int_equal(p->limits[0].key, RL_KEY_APIKEY);
    /* scopes: per route, and stable across compiles of the same spec */
    assert_memory_not_equal(route_of(s, "GET /a")->ratelimit->limits[0].scope,
                            route_of(s, "POST /a")->ratelimit->limits[0].scope,
                            16);
    {
        gw_spec *again = compile_ok(DOC(
            ",'x-kiban-rate-limit':{'requests':100,'period':'1m'}",
            "{'/a':{'get':{}}}"));
        assert_memory_equal(route_of(again, "GET /a")->ratelimit->limits[0]
                                .scope,
                            route_of(s, "GET /a")->ratelimit->limits[0].scope,
                            16);
        spec_drop(again);
    }
    spec_drop(s);

    /* no limit anywhere: no policy */
    s = compile_ok(DOC("", "{'/a':{'get':{}}}"));
    assert_null(route_of(s, "GET /a")->ratelimit);
    spec_drop(s);
}

static void
test_parse_kiban_errors(void **state)
{
    (void)state;
    reject(DOC(",'x-kiban-rate-limit':{'period':'1m'}", "{'/a':{'get':{}}}"),
           "/x-kiban-rate-limit/requests: required");
    reject(DOC(",'x-kiban-rate-limit':{'requests':5}", "{'/a':{'get':{}}}"),
           "/x-kiban-rate-limit/period: required");
    reject(DOC(",'x-kiban-rate-limit':true", "{'/a':{'get':{}}}"),
           "/x-kiban-rate-limit: must be an object");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':0,'period':1}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/requests: must be an integer");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':1.5,'period':1}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/requests: must be an integer");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':5,'period':'1w'}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/period: must be a whole number");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':5,'period':0}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/period: must be a whole number");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':5,'period':'2d'}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/period: must be a whole number");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':5,'period':60,'burst':-1}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/burst: must be an integer");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':5,'period':60,'key':'cookie'}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/key: must be \"ip\"");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':5,'period':60,'key':'claim:'}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/key: must be \"ip\"");
    reject(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                   "{'requests':5,'period':60,'per':'ip'}}}}"),
           "/paths/~1a/get/x-kiban-rate-limit/per: unknown field");
}

#define GOOGLE_MGMT \
    ",'x-google-management':{'metrics':[" \
    "  {'name':'read-requests','displayName':'Read','valueType':'INT64'," \
    "   'metricKind':'DELTA'}," \
    "  {'name':'write-requests','valueType':'INT64','metricKind':'DELTA'}]," \
    " 'quota':{'limits':[" \
    "  {'name':'read-limit','metric':'read-requests'," \
    "   'unit':'1/min/{project}','values':{'STANDARD':1000}}," \
    "  {'name':'write-limit','metric':'write-requests'," \
    "   'unit':'1/min/{project}','values':{'STANDARD':10}}]}}"

static void
test_parse_google_quota(void **state)
{
    gw_spec *s = compile_ok(DOC(GOOGLE_MGMT,
        "{'/books':{'get':{'x-google-quota':{'metricCosts':"
        "                  {'read-requests':1}}},"
        "           'post':{'x-google-quota':{'metricCosts':"
        "                  {'write-requests':2,'read-requests':1}}}},"
        " '/shelves':{'get':{'x-google-quota':{'metricCosts':"
        "                  {'read-requests':1}}},"
        "             'delete':{}}}"));
    const struct gw_ratelimit *g, *p, *sh;

    (void)state;
    g = route_of(s, "GET /books")->ratelimit;
    p = route_of(s, "POST /books")->ratelimit;
    sh = route_of(s, "GET /shelves")->ratelimit;
    assert_non_null(g);
    assert_int_equal(g->nlimits, 1);
    assert_int_equal(g->limits[0].requests, 1000);
    assert_int_equal(g->limits[0].period_s, 60);
    assert_int_equal(g->limits[0].key, RL_KEY_APIKEY);
    assert_string_equal(g->policy, "1000;w=60");
    assert_int_equal(p->nlimits, 2);
    assert_string_equal(p->policy, "10;w=60, 1000;w=60");
    assert_int_equal(p->limits[0].cost, 2);
    /* one metric: one set of buckets, shared by every operation */
    assert_memory_equal(g->limits[0].scope, sh->limits[0].scope, 16);
    assert_memory_equal(g->limits[0].scope, p->limits[1].scope, 16);
    assert_null(route_of(s, "DELETE /shelves")->ratelimit);
    spec_drop(s);
}

static void
test_parse_google_errors(void **state)
{
    (void)state;
    reject(DOC(GOOGLE_MGMT, "{'/a':{'get':{'x-google-quota':{'metricCosts':"
                            "{'other-requests':1}}}}}"),
           "/paths/~1a/get/x-google-quota/metricCosts/other-requests: "
           "metric \"other-requests\" is not declared");
    reject(DOC(GOOGLE_MGMT, "{'/a':{'get':{'x-google-quota':{'metricCosts':"
                            "{'read-requests':-1}}}}}"),
           "/paths/~1a/get/x-google-quota/metricCosts/read-requests: must be");
    reject(DOC(GOOGLE_MGMT, "{'/a':{'get':{'x-google-quota':{}}}}"),
           "/paths/~1a/get/x-google-quota/metricCosts: required");
    reject(DOC(",'x-google-management':{'metrics':[{'name':'m'}],"
               "'quota':{'limits':[{'name':'l','metric':'m',"
               "'unit':'1/d/{project}','values':{'STANDARD':5}}]}}",
               "{'/a':{'get':{}}}"),
           "/x-google-management/quota/limits/0/unit: must be "
           "\"1/min/{project}\"");
    reject(DOC(",'x-google-management':{'metrics':[{'name':'m'}],"
               "'quota':{'limits':[{'name':'l','metric':'m',"
               "'unit':'1/min/{project}','values':{}}]}}",
               "{'/a':{'get':{}}}"),
           "/x-google-management/quota/limits/0/values/STANDARD: must be");
    reject(DOC(",'x-google-management':{'metrics':[{'name':'m'}],"
               "'quota':{'limits':[{'name':'l','metric':'n',"
               "'unit':'1/min/{project}','values':{'STANDARD':5}}]}}",
               "{'/a':{'get':{}}}"),
           "/x-google-management/quota/limits/0/metric: metric \"n\" is not "
           "declared");
    reject(DOC(",'x-google-management':{'metrics':[{'name':'m',"
               "'valueType':'DOUBLE'}]}", "{'/a':{'get':{}}}"),
           "/x-google-management/metrics/0: valueType must be INT64");
}

/* ------------------------------------------------------------------------ */
/* The stage                                                                 */

typedef struct fake_req {
    kb_http_req  req;
    gw_ctx       c;
    kb_gateway   gw;
} fake_req;

static void
fake_init(fake_req *f, struct gw_rl_state *st, const gw_route *r,
          const char *ip)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->req.remote_addr, sizeof(f->req.remote_addr), "%s", ip);
    f->gw.rl = st;
    f->c.gw = &f->gw;
    f->c.req = &f->req;
    f->c.route = r;
    fake_reset();
}

static void
test_stage_headers_and_429(void **state)
{
    gw_spec *s = compile_ok(DOC("", "{'/a':{'get':{'x-kiban-rate-limit':"
                                    "{'requests':2,'period':60}}}}"));
    gw_route *r = route_of(s, "GET /a");
    struct gw_rl_state *st;
    fake_req f;
    uint64_t before;

    (void)state;
    assert_int_equal(rl_state_create(1024, &st), 0);
    fake_init(&f, st, r, "127.0.0.2");
    assert_int_equal(ratelimit_at(&f.c, st, r->ratelimit, T0), GW_NEXT);
    assert_string_equal(fake_header("RateLimit-Limit"), "2");
    assert_string_equal(fake_header("RateLimit-Remaining"), "1");
    assert_string_equal(fake_header("RateLimit-Reset"), "30");
    assert_string_equal(fake_header("RateLimit-Policy"), "2;w=60");
    assert_null(fake_header("Retry-After"));
    fake_init(&f, st, r, "127.0.0.2");
    assert_int_equal(ratelimit_at(&f.c, st, r->ratelimit, T0), GW_NEXT);
    assert_string_equal(fake_header("RateLimit-Remaining"), "0");
    assert_string_equal(fake_header("RateLimit-Reset"), "60");

    before = kb_counter_value(kb_counter_get(
        "kiban_gateway_ratelimited_total", "",
        "gateway=\"default/main\",route=\"GET /a\""));
    fake_init(&f, st, r, "127.0.0.2");
    assert_int_equal(ratelimit_at(&f.c, st, r->ratelimit, T0 + SEC),
                     GW_DONE);
    assert_int_equal(fake_status, 429);
    assert_string_equal(fake_header("Retry-After"), "29");
    assert_string_equal(fake_header("RateLimit-Remaining"), "0");
    assert_non_null(strstr(fake_msg, "GET /a"));
    assert_int_equal(kb_counter_value(kb_counter_get(
        "kiban_gateway_ratelimited_total", "",
        "gateway=\"default/main\",route=\"GET /a\"")), before + 1);

    /* another client has its own bucket */
    fake_init(&f, st, r, "127.0.0.3");
    assert_int_equal(ratelimit_at(&f.c, st, r->ratelimit, T0 + SEC),
                     GW_NEXT);
    fake_reset();
    rl_state_free(st);
    spec_drop(s);
}

static void
test_stage_keys_and_fallback(void **state)
{
    gw_spec *s = compile_ok(DOC("", "{'/k':{'get':{'x-kiban-rate-limit':"
                                    "{'requests':1,'period':60,"
                                    "'key':'apiKey'}}},"
                                    "'/c':{'get':{'x-kiban-rate-limit':"
                                    "{'requests':1,'period':60,"
                                    "'key':'claim:tenant'}}}}"));
    gw_route *rk = route_of(s, "GET /k"), *rc = route_of(s, "GET /c");
    struct gw_rl_state *st;
    fake_req f;
    char buf[400];

    (void)state;
    assert_int_equal(rl_state_create(1024, &st), 0);
    /* same IP, two API keys: two buckets */
    fake_init(&f, st, rk, "127.0.0.1");
    f.c.api_key = "alpha";
    assert_int_equal(ratelimit_at(&f.c, st, rk->ratelimit, T0), GW_NEXT);
    fake_init(&f, st, rk, "127.0.0.1");
    f.c.api_key = "beta";
    assert_int_equal(ratelimit_at(&f.c, st, rk->ratelimit, T0), GW_NEXT);
    fake_init(&f, st, rk, "127.0.0.9");
    f.c.api_key = "alpha";
    assert_int_equal(ratelimit_at(&f.c, st, rk->ratelimit, T0), GW_DONE);
    /* no key: the client's address */
    fake_init(&f, st, rk, "127.0.0.1");
    assert_int_equal(key_value(&f.c, &rk->ratelimit->limits[0], buf,
                               sizeof(buf)), strlen("i:127.0.0.1"));
    assert_string_equal(buf, "i:127.0.0.1");
    assert_int_equal(ratelimit_at(&f.c, st, rk->ratelimit, T0), GW_NEXT);

    /* claims: string and integer values; others fall back to the IP */
    fake_init(&f, st, rc, "127.0.0.1");
    f.c.claims = J("{'tenant':'acme','n':7}");
    key_value(&f.c, &rc->ratelimit->limits[0], buf, sizeof(buf));
    assert_string_equal(buf, "c:acme");
    assert_int_equal(ratelimit_at(&f.c, st, rc->ratelimit, T0), GW_NEXT);
    assert_int_equal(ratelimit_at(&f.c, st, rc->ratelimit, T0), GW_DONE);
    json_decref(f.c.claims);
    fake_init(&f, st, rc, "127.0.0.1");
    f.c.claims = J("{'tenant':42}");
    key_value(&f.c, &rc->ratelimit->limits[0], buf, sizeof(buf));
    assert_string_equal(buf, "c:42");
    json_decref(f.c.claims);
    f.c.claims = J("{'tenant':{'id':1}}");
    key_value(&f.c, &rc->ratelimit->limits[0], buf, sizeof(buf));
    assert_string_equal(buf, "i:127.0.0.1");
    json_decref(f.c.claims);
    fake_reset();
    rl_state_free(st);
    spec_drop(s);
}

static void
test_stage_google_shared_metric(void **state)
{
    gw_spec *s = compile_ok(DOC(GOOGLE_MGMT,
        "{'/books':{'get':{'x-google-quota':{'metricCosts':"
        "                  {'read-requests':1}}},"
        "           'post':{'x-google-quota':{'metricCosts':"
        "                  {'read-requests':1,'write-requests':2}}}}}"));
    gw_route *get = route_of(s, "GET /books"), *post = route_of(s,
                                                               "POST /books");
    struct gw_rl_state *st;
    fake_req f;

    (void)state;
    assert_int_equal(rl_state_create(1024, &st), 0);
    /* writes cost 2 of 10 per minute: 5 pass, the 6th is refused, and the
     * read tokens it took first are given back */
    for (int i = 0; i < 5; i++) {
        fake_init(&f, st, post, "127.0.0.1");
        f.c.api_key = "app";
        assert_int_equal(ratelimit_at(&f.c, st, post->ratelimit, T0),
                         GW_NEXT);
    }
    assert_string_equal(fake_header("RateLimit-Limit"), "10");
    assert_string_equal(fake_header("RateLimit-Remaining"), "0");
    fake_init(&f, st, post, "127.0.0.1");
    f.c.api_key = "app";
    assert_int_equal(ratelimit_at(&f.c, st, post->ratelimit, T0), GW_DONE);
    assert_int_equal(fake_status, 429);
    assert_string_equal(fake_header("Retry-After"), "12");  /* 2 tokens */
    assert_non_null(strstr(fake_msg, "write-requests/write-limit"));
    /* reads drew from the same read-requests bucket: 1000 - 5 */
    fake_init(&f, st, get, "127.0.0.1");
    f.c.api_key = "app";
    assert_int_equal(ratelimit_at(&f.c, st, get->ratelimit, T0), GW_NEXT);
    assert_string_equal(fake_header("RateLimit-Remaining"), "994");
    fake_reset();
    rl_state_free(st);
    spec_drop(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refill),
        cmocka_unit_test(test_keys_and_scopes_are_separate),
        cmocka_unit_test(test_refund_and_policy_change),
        cmocka_unit_test(test_eviction_prefers_full_then_lru),
        cmocka_unit_test(test_flood_stays_bounded),
        cmocka_unit_test(test_concurrent_takes_are_exact),
        cmocka_unit_test(test_parse_kiban_policies),
        cmocka_unit_test(test_parse_kiban_errors),
        cmocka_unit_test(test_parse_google_quota),
        cmocka_unit_test(test_parse_google_errors),
        cmocka_unit_test(test_stage_headers_and_429),
        cmocka_unit_test(test_stage_keys_and_fallback),
        cmocka_unit_test(test_stage_google_shared_metric),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
