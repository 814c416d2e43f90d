/*
 * test_auth.c - the gateway's auth stage (auth.c + jwks.c): compiling
 * security schemes and requirements from specs, JWT checks against keys
 * fetched by a fake fetcher on the real fetch thread (pending requests,
 * rotation, stale-if-error, Cache-Control clamping), local key files, API
 * keys, the token cache, and many threads at once.  proxy.c's helpers are
 * replaced by small fakes that record what the stage asked for.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "gateway/jwt.c"
#include "gateway/jwks.c"
#include "gateway/auth.c"
#include "jwt_testutil.h"
#include "testutil.h"

#define ISS "https://issuer.example"

/* ------------------------------------------------------------------------ */
/* Fakes of proxy.c                                                         */

static pthread_mutex_t post_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  post_cond = PTHREAD_COND_INITIALIZER;
static int             posted;

typedef struct answer {
    int  status;
    char message[512];
} answer;

void
gw__respond_error(gw_ctx *c, int status, const char *fmt, ...)
{
    answer *a = c->on_response_data;
    va_list ap;

    a->status = status;
    va_start(ap, fmt);
    vsnprintf(a->message, sizeof(a->message), fmt, ap);
    va_end(ap);
    c->answered = true;
}

int
gw__header_add(gw_ctx *c, bool upstream, const char *name, const char *value)
{
    kb_http_header *list = upstream ? c->up_extra : c->res_extra;
    size_t *n = upstream ? &c->n_up_extra : &c->n_res_extra;

    if (*n == GW_MAX_EXTRA)
        return KB_ETOOBIG;
    list[*n].name = kb_pool_strdup(c->req->pool, name);
    list[*n].value = kb_pool_strdup(c->req->pool, value);
    (*n)++;
    return 0;
}

void
gw__post(gw_ctx *c)
{
    (void)c;
    pthread_mutex_lock(&post_lock);
    posted++;
    pthread_cond_broadcast(&post_cond);
    pthread_mutex_unlock(&post_lock);
}

/* ------------------------------------------------------------------------ */
/* A fake JWKS server and clock                                             */

static _Atomic uint64_t fake_ms = 1000000;

static uint64_t
fake_now(void)
{
    return atomic_load(&fake_ms);
}

typedef struct fake_jwks {
    pthread_mutex_t lock;
    char           *doc;
    long            max_age;
    bool            fail;
    bool            hang;            /* until the fetch is aborted */
    uint64_t        takes_ms;        /* fake time a fetch takes */
    int             fetches;
    char            last_uri[256];
} fake_jwks;

static int
fake_fetch(gw_jwks *j, const char *uri, kb_buf *body, long *max_age)
{
    fake_jwks *f = j->fetch_data;
    int rc;

    pthread_mutex_lock(&f->lock);
    f->fetches++;
    atomic_fetch_add(&fake_ms, f->takes_ms);
    while (f->hang && !atomic_load(&j->abort_fetch)) {
        pthread_mutex_unlock(&f->lock);
        usleep(1000);
        pthread_mutex_lock(&f->lock);
    }
    snprintf(f->last_uri, sizeof(f->last_uri), "%s", uri);
    *max_age = f->max_age;
    rc = f->fail || f->doc == NULL ? KB_EUNAVAIL : kb_buf_appends(body, f->doc);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static void
fake_set(fake_jwks *f, char *doc, long max_age, bool fail)
{
    pthread_mutex_lock(&f->lock);
    if (doc != NULL) {
        free(f->doc);
        f->doc = doc;
    }
    f->max_age = max_age;
    f->fail = fail;
    pthread_mutex_unlock(&f->lock);
}

static int
fake_fetches(fake_jwks *f)
{
    int n;

    pthread_mutex_lock(&f->lock);
    n = f->fetches;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Fixture: a gateway, a compiled spec, requests                            */

typedef struct fx {
    kb_gateway gw;
    fake_jwks  fake;
    gw_spec   *s;
    char       err[512];
} fx;

static fx *
fx_new(void)
{
    fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_int_equal(gw__auth_init(&f->gw), 0);
    pthread_mutex_init(&f->fake.lock, NULL);
    f->fake.max_age = -1;
    f->gw.jwks->fetch = fake_fetch;
    f->gw.jwks->fetch_data = &f->fake;
    f->gw.jwks->now_ms = fake_now;
    return f;
}

static void
spec_free_test(gw_spec *s)
{
    if (s == NULL)
        return;
    gw__auth_release(s);
    for (size_t i = 0; i < s->nroutes; i++) {
        free(s->routes[i].label);
        free(s->routes[i].pointer);
    }
    free(s->routes);
    for (size_t i = 0; i < s->nhosts; i++)
        free(s->hosts[i]);
    free(s->hosts);
    json_decref(s->spec);
    free(s);
}

static void
fx_free(fx *f)
{
    spec_free_test(f->s);
    gw__auth_fini(&f->gw);          /* as kb_gateway_free: before specs go */
    free(f->fake.doc);
    pthread_mutex_destroy(&f->fake.lock);
    free(f);
}

/* Compile doc (JSON, single quotes allowed) as gateway p/g; routes are
 * every operation, in document order.  Returns the compile result. */
static int
fx_spec(fx *f, const char *doc_text, const char *host)
{
    gw_spec *s = calloc(1, sizeof(*s));
    const char *path, *method;
    json_t *item, *op;

    assert_non_null(s);
    s->spec = json_object();
    json_object_set_new(s->spec, "openapi", J(doc_text));
    s->doc = json_object_get(s->spec, "openapi");
    s->project = "p";
    s->name = "g";
    if (host != NULL) {
        s->hosts = calloc(1, sizeof(char *));
        s->hosts[0] = strdup(host);
        s->nhosts = 1;
    }
    s->routes = calloc(16, sizeof(gw_route));
    json_object_foreach(json_object_get(s->doc, "paths"), path, item) {
        json_object_foreach(item, method, op) {
            gw_route *r = &s->routes[s->nroutes++];
            kb_buf b = KB_BUF_INIT(512);
            assert_int_equal(kb_buf_appends(&b, "/paths"), 0);
            assert_int_equal(gw__pointer_append(&b, path), 0);
            assert_int_equal(gw__pointer_append(&b, method), 0);
            r->pointer = kb_buf_detach(&b);
            assert_true(asprintf(&r->label, "%s %s", method, path) > 0);
            r->op = op;
            r->spec = s;
        }
    }
    spec_free_test(f->s);
    f->s = s;
    f->err[0] = '\0';
    return gw__auth_compile(s, f->err, sizeof(f->err));
}

typedef struct rq {
    kb_pool       *pool;
    kb_http_req    req;
    kb_http_header h[4];
    gw_ctx         c;
    answer         a;
} rq;

/* A request for route i with up to two headers ("Name: value"). */
static rq *
rq_new(fx *f, size_t route, const char *h1, const char *h2, const char *query)
{
    rq *r = calloc(1, sizeof(*r));
    const char *hs[2] = { h1, h2 };

    r->pool = kb_pool_create(0);
    r->req.pool = r->pool;
    r->req.method = "GET";
    r->req.query = query != NULL ? query : "";
    r->req.headers = r->h;
    for (int i = 0; i < 2; i++)
        if (hs[i] != NULL) {
            const char *colon = strchr(hs[i], ':');
            r->h[r->req.nheaders].name = kb_pool_strndup(r->pool, hs[i],
                                            (size_t)(colon - hs[i]));
            r->h[r->req.nheaders].value = colon + 2;
            r->req.nheaders++;
        }
    r->c.gw = &f->gw;
    r->c.req = &r->req;
    r->c.route = &f->s->routes[route];
    r->c.on_response_data = &r->a;
    snprintf(r->c.request_id, sizeof(r->c.request_id), "test");
    return r;
}

static void
rq_free(rq *r)
{
    json_decref(r->c.claims);        /* as proxy.c's ctx_release */
    kb_pool_destroy(r->pool);
    free(r);
}

static const char *
extra(const rq *r, bool upstream, const char *name)
{
    const kb_http_header *l = upstream ? r->c.up_extra : r->c.res_extra;
    size_t n = upstream ? r->c.n_up_extra : r->c.n_res_extra;

    for (size_t i = 0; i < n; i++)
        if (strcasecmp(l[i].name, name) == 0)
            return l[i].value;
    return NULL;
}

/* Wait for the posted count to reach `want` (5 s at most). */
static void
wait_posted(int want)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&post_lock);
    while (posted < want &&
           pthread_cond_timedwait(&post_cond, &post_lock, &until) == 0)
        ;
    assert_true(posted >= want);
    pthread_mutex_unlock(&post_lock);
}

/* Run the stage as proxy.c would: on PENDING, wait for the post, rerun. */
static gw_step
run(rq *r, int *pendings)
{
    gw_step st;

    for (int i = 0; i < 4; i++) {
        int before;
        pthread_mutex_lock(&post_lock);
        before = posted;
        pthread_mutex_unlock(&post_lock);
        st = gw__auth_stage(&r->c);
        if (st != GW_PENDING)
            return st;
        if (pendings != NULL)
            (*pendings)++;
        wait_posted(before + 1);
    }
    fail_msg("stage stayed pending");
    return GW_DONE;
}

static char *
bearer(const char *tok)
{
    char *h;

    assert_true(asprintf(&h, "Authorization: Bearer %s", tok) > 0);
    return h;
}

/* ------------------------------------------------------------------------ */

#define SWAGGER_JWT(extra_scheme, security) \
    "{'swagger':'2.0','host':'api.example.com','paths':{" \
    "'/a':{'get':{}},'/open':{'get':{'security':[]}}}," \
    "'securityDefinitions':{'jwt':{'type':'oauth2','flow':'implicit'," \
    "'authorizationUrl':'','x-google-issuer':'" ISS "'," \
    "'x-google-jwks_uri':'https://keys.example/jwks'" extra_scheme "}}," \
    "'security':" security "}"

static void
compile_errors_name_the_pointer(void **state)
{
    static const struct { const char *doc, *want; } cases[] = {
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{'security':"
          "[{'nope':[]}]}}}}",
          "/paths/~1a/get/security/0/nope: no security scheme named 'nope'" },
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{}}},"
          "'securityDefinitions':{'j':{'x-google-issuer':'i'}}}",
          "/securityDefinitions/j/x-google-jwks_uri: required" },
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{}}},"
          "'securityDefinitions':{'j':{'x-google-issuer':'i',"
          "'x-google-jwks_uri':'ftp://x'}}}",
          "/securityDefinitions/j/x-google-jwks_uri: must be an http" },
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{}}},"
          "'securityDefinitions':{'j':{'x-google-jwks_uri':'https://k',"
          "'x-google-issuer':''}}}",
          "/securityDefinitions/j/x-google-issuer: required" },
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{}}},"
          "'securityDefinitions':{'b':{'type':'basic'}},"
          "'security':[{'b':[]}]}",
          "/security/0/b: security scheme 'b' is not supported" },
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{}}},"
          "'securityDefinitions':{'j':{'x-google-issuer':'i',"
          "'x-google-jwks_uri':'https://k','x-google-jwt-locations':"
          "[{'cookie':'c'}]}}}",
          "/securityDefinitions/j/x-google-jwt-locations/0: cookie" },
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{}}},"
          "'securityDefinitions':{'j':{'x-google-issuer':'i',"
          "'x-kiban-secret-file':'/nonexistent/secret'}}}",
          "/securityDefinitions/j/x-kiban-secret-file: cannot read "
          "/nonexistent/secret: No such file or directory" },
        { "{'swagger':'2.0','paths':{'/a':{'get':{}}},"
          "'securityDefinitions':{'j':{'x-google-issuer':'i',"
          "'x-google-jwks_uri':'https://k'}}}",
          "/securityDefinitions/j: no audience" },
        { "{'openapi':'3.0.0','paths':{'/a':{'get':{}}},'components':{"
          "'securitySchemes':{'k':{'type':'apiKey','in':'cookie',"
          "'name':'k'}}}}",
          "/components/securitySchemes/k/in: must be" },
        { "{'openapi':'3.0.0','paths':{'/a':{'get':{}}},'components':{"
          "'securitySchemes':{'j':{'type':'oauth2','x-google-auth':{"
          "'issuer':'i','jwksUri':'https://k','audiences':[7]}}}}}",
          "/components/securitySchemes/j/x-google-auth/audiences/0: must be "
          "a string" },
        { "{'swagger':'2.0','host':'h','paths':{'/a':{'get':{}}},"
          "'security':{}}",
          "/security: must be a list" },
    };
    fx *f = fx_new();

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(fx_spec(f, cases[i].doc, NULL), KB_EINVAL);
        if (strncmp(f->err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s…\"", i, f->err,
                     cases[i].want);
        assert_null(f->s->auth);     /* a failed compile keeps nothing */
    }
    /* an unsupported scheme nobody references is fine */
    assert_int_equal(fx_spec(f, "{'swagger':'2.0','paths':{'/a':{'get':{}}},"
                                "'securityDefinitions':{'b':{'type':'basic'}}}",
                             NULL), 0);
    assert_null(f->s->routes[0].auth);
    fx_free(f);
}

static void
remote_jwks_request_waits_then_passes(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("RSA", 2048, NULL);
    char *claims = tk_claims(ISS, "https://api.example.com", "user-1", 600, 0);
    char *tok = tk_token(k, NULL, 0, "RS256", "k1", claims);
    char *h = bearer(tok);
    int pend = 0;
    rq *r;

    (void)state;
    fake_set(&f->fake, tk_jwks(tk_jwk(k, "k1", "RS256"), NULL), 3600, false);
    assert_int_equal(fx_spec(f, SWAGGER_JWT("", "[{'jwt':[]}]"), NULL), 0);

    /* first request: no keys yet → pending, fetched once, then passes */
    r = rq_new(f, 0, h, NULL, NULL);
    assert_int_equal(run(r, &pend), GW_NEXT);
    assert_int_equal(pend, 1);
    assert_int_equal(fake_fetches(&f->fake), 1);
    assert_string_equal(f->fake.last_uri, "https://keys.example/jwks");
    assert_non_null(r->c.claims);
    assert_string_equal(json_string_value(json_object_get(r->c.claims, "sub")),
                        "user-1");
    assert_string_equal(r->c.subject, ISS "|user-1");
    assert_null(r->c.api_key);
    /* the payload segment as sent, and the original Authorization */
    {
        const char *p = strchr(tok, '.') + 1;
        size_t plen = (size_t)(strchr(p, '.') - p);
        const char *ui = extra(r, true, "X-Apigateway-Api-Userinfo");
        assert_non_null(ui);
        assert_int_equal(strlen(ui), plen);
        assert_memory_equal(ui, p, plen);
    }
    assert_string_equal(extra(r, true, "X-Forwarded-Authorization"), h + 15);
    rq_free(r);

    /* same token again: a cache hit, no fetch, same identity */
    r = rq_new(f, 0, h, NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_string_equal(r->c.subject, ISS "|user-1");
    assert_non_null(extra(r, true, "X-Apigateway-Api-Userinfo"));
    rq_free(r);
    {
        unsigned char d[32];
        unsigned int dl;
        gw_tc_hit hit;
        kb_pool *p = kb_pool_create(0);
        EVP_Digest(tok, strlen(tok), d, &dl, EVP_sha256(), NULL);
        assert_true(gw__tcache_get(f->gw.jwks, d, f->s->auth->schemes[0].uid,
                                   time(NULL), p, &hit));
        json_decref(hit.claims);
        kb_pool_destroy(p);
    }

    /* the same token in the default query location */
    {
        char *q;
        assert_true(asprintf(&q, "x=1&access_token=%s", tok) > 0);
        r = rq_new(f, 0, NULL, NULL, q);
        assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
        rq_free(r);
        free(q);
    }
    /* an operation with security: [] needs nothing */
    r = rq_new(f, 1, NULL, NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_null(r->c.claims);
    rq_free(r);
    assert_int_equal(fake_fetches(&f->fake), 1);

    free(h);
    free(tok);
    free(claims);
    EVP_PKEY_free(k);
    fx_free(f);
}

static void
refusals_are_401_without_detail(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("EC", 0, "P-256");
    EVP_PKEY *other = tk_keygen("EC", 0, "P-256");
    const char *aud = "https://api.example.com";
    struct { char *claims; EVP_PKEY *key; const char *alg; } bad[] = {
        { tk_claims("https://evil.example", aud, "u", 600, 0), k, "ES256" },
        { tk_claims(ISS, aud, "u", -120, 600), k, "ES256" },       /* expired */
        { tk_claims(ISS, "https://other.example", "u", 600, 0), k, "ES256" },
        { tk_claims(ISS, aud, "u", 600, 0), other, "ES256" },      /* bad sig */
        { tk_claims(ISS, aud, "u", 600, -600), k, "ES256" },      /* iat future */
    };
    rq *r;
    char *h;

    (void)state;
    fake_set(&f->fake, tk_jwks(tk_jwk(k, "k1", NULL), NULL), -1, false);
    assert_int_equal(fx_spec(f, SWAGGER_JWT("", "[{'jwt':[]}]"), NULL), 0);

    /* nothing presented: a challenge without an error code (RFC 6750) */
    r = rq_new(f, 0, NULL, NULL, NULL);
    assert_int_equal(run(r, NULL), GW_DONE);
    assert_int_equal(r->a.status, 401);
    assert_string_equal(r->a.message, MSG_BAD_CREDENTIALS);
    assert_string_equal(extra(r, false, "WWW-Authenticate"),
                        "Bearer realm=\"kiban\"");
    assert_null(extra(r, true, "X-Apigateway-Api-Userinfo"));
    rq_free(r);
    /* a different scheme in Authorization is not a bearer token */
    r = rq_new(f, 0, "Authorization: Basic dXNlcjpwdw==", NULL, NULL);
    assert_int_equal(run(r, NULL), GW_DONE);
    assert_int_equal(r->a.status, 401);
    rq_free(r);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *tok = tk_token(bad[i].key, NULL, 0, bad[i].alg, "k1",
                             bad[i].claims);
        h = bearer(tok);
        r = rq_new(f, 0, h, NULL, NULL);
        assert_int_equal(run(r, NULL), GW_DONE);
        assert_int_equal(r->a.status, 401);
        assert_string_equal(r->a.message, MSG_BAD_CREDENTIALS);
        assert_string_equal(extra(r, false, "WWW-Authenticate"),
                            "Bearer realm=\"kiban\", error=\"invalid_token\"");
        assert_null(r->c.claims);
        assert_null(r->c.subject);
        rq_free(r);
        free(h);
        free(tok);
        free(bad[i].claims);
        /* the wrong issuer is refused before any key is fetched */
        assert_int_equal(fake_fetches(&f->fake), i == 0 ? 0 : 1);
    }
    /* garbage and alg none */
    r = rq_new(f, 0, "Authorization: Bearer not.a.jwt", NULL, NULL);
    assert_int_equal(run(r, NULL), GW_DONE);
    assert_int_equal(r->a.status, 401);
    rq_free(r);
    {
        char *hd = tk_b64("{\"alg\":\"none\"}", 14);
        char *cl = tk_claims(ISS, aud, "u", 600, 0);
        char *pl = tk_b64(cl, strlen(cl));
        char *hh;
        assert_true(asprintf(&hh, "Authorization: Bearer %s.%s.", hd, pl) > 0);
        r = rq_new(f, 0, hh, NULL, NULL);
        assert_int_equal(run(r, NULL), GW_DONE);
        assert_int_equal(r->a.status, 401);
        rq_free(r);
        free(hd); free(cl); free(pl); free(hh);
    }
    assert_int_equal(fake_fetches(&f->fake), 1);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    fx_free(f);
}

static void
unknown_kid_refetches_at_most_every_30s(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k1 = tk_keygen("ED25519", 0, NULL);
    EVP_PKEY *k2 = tk_keygen("ED25519", 0, NULL);
    EVP_PKEY *k3 = tk_keygen("ED25519", 0, NULL);
    char *claims = tk_claims(ISS, "https://api.example.com", "u", 600, 0);
    char *t1 = tk_token(k1, NULL, 0, "EdDSA", "k1", claims);
    char *t2 = tk_token(k2, NULL, 0, "EdDSA", "k2", claims);
    char *t3 = tk_token(k3, NULL, 0, "EdDSA", "k3", claims);
    char *h1 = bearer(t1), *h2 = bearer(t2), *h3 = bearer(t3);
    int pend = 0;
    rq *r;

    (void)state;
    fake_set(&f->fake, tk_jwks(tk_jwk(k1, "k1", NULL), NULL), -1, false);
    assert_int_equal(fx_spec(f, SWAGGER_JWT("", "[{'jwt':[]}]"), NULL), 0);
    r = rq_new(f, 0, h1, NULL, NULL);
    assert_int_equal(run(r, NULL), GW_NEXT);
    rq_free(r);
    assert_int_equal(fake_fetches(&f->fake), 1);

    /* the issuer rotates: k2 joins.  A k2 token waits for one refetch. */
    fake_set(&f->fake, tk_jwks(tk_jwk(k1, "k1", NULL), tk_jwk(k2, "k2", NULL)),
             -1, false);
    r = rq_new(f, 0, h2, NULL, NULL);
    assert_int_equal(run(r, &pend), GW_NEXT);
    assert_int_equal(pend, 1);
    assert_int_equal(fake_fetches(&f->fake), 2);
    rq_free(r);

    /* k3 is nowhere: within 30 s of that refetch, no new fetch */
    r = rq_new(f, 0, h3, NULL, NULL);
    assert_int_equal(run(r, NULL), GW_DONE);
    assert_int_equal(r->a.status, 401);
    assert_int_equal(fake_fetches(&f->fake), 2);
    rq_free(r);
    /* 31 s later: one more refetch, still unknown → 401 */
    atomic_fetch_add(&fake_ms, 31000);
    pend = 0;
    r = rq_new(f, 0, h3, NULL, NULL);
    assert_int_equal(run(r, &pend), GW_DONE);
    assert_int_equal(pend, 1);
    assert_int_equal(r->a.status, 401);
    assert_int_equal(fake_fetches(&f->fake), 3);
    rq_free(r);

    free(h1); free(h2); free(h3); free(t1); free(t2); free(t3);
    free(claims);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k3);
    fx_free(f);
}

static void
jwks_down_keeps_stale_keys(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("RSA", 2048, NULL);
    gw_jwks_src *src;
    int n;
    rq *r;

    (void)state;
    fake_set(&f->fake, tk_jwks(tk_jwk(k, "k1", NULL), NULL), 600, false);
    assert_int_equal(fx_spec(f, SWAGGER_JWT("", "[{'jwt':[]}]"), NULL), 0);
    for (int i = 0; i < 3; i++) {
        /* a fresh token each time, so the token cache does not answer */
        char cl[256], *tok, *h;
        snprintf(cl, sizeof(cl), "{\"iss\":\"" ISS "\",\"aud\":"
                 "\"https://api.example.com\",\"sub\":\"u%d\",\"exp\":%ld}",
                 i, (long)time(NULL) + 600);
        tok = tk_token(k, NULL, 0, "PS256", "k1", cl);
        h = bearer(tok);
        r = rq_new(f, 0, h, NULL, NULL);
        assert_int_equal(run(r, NULL), GW_NEXT);
        rq_free(r);
        free(h);
        free(tok);
        if (i == 0) {
            /* fetched with max-age 600: fresh for 600 s */
            src = atomic_load(&f->s->auth->schemes[0].src);
            assert_int_equal(src->fresh_until, fake_now() + 600000);
            /* then the server goes down and the keys go stale */
            fake_set(&f->fake, NULL, 600, true);
            atomic_fetch_add(&fake_ms, 601000);
        }
        if (i == 1) {
            /* that request was served from stale keys and started one
             * background refresh, which failed */
            for (int w = 0; w < 500 && fake_fetches(&f->fake) < 2; w++)
                usleep(10000);
            assert_int_equal(fake_fetches(&f->fake), 2);
        }
    }
    /* a failed refresh is retried no sooner than 30 s */
    n = fake_fetches(&f->fake);
    usleep(50000);
    assert_int_equal(fake_fetches(&f->fake), n);
    assert_int_equal(n, 2);
    EVP_PKEY_free(k);
    fx_free(f);
}

static void
first_fetch_failure_answers_then_retries(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("EC", 0, "P-384");
    char *claims = tk_claims(ISS, "https://api.example.com", "u", 600, 0);
    char *tok = tk_token(k, NULL, 0, "ES384", "k1", claims);
    char *h = bearer(tok);
    gw_jwks_src *src;
    int pend = 0;
    rq *r;

    (void)state;
    fake_set(&f->fake, tk_jwks(tk_jwk(k, "k1", NULL), NULL), 10, true);
    f->fake.takes_ms = GW_JWKS_FETCH_TIMEOUT_MS;  /* fails by timing out */
    assert_int_equal(fx_spec(f, SWAGGER_JWT("", "[{'jwt':[]}]"), NULL), 0);
    r = rq_new(f, 0, h, NULL, NULL);
    assert_int_equal(run(r, &pend), GW_DONE);     /* resumed, then refused */
    f->fake.takes_ms = 0;
    assert_int_equal(pend, 1);
    assert_int_equal(r->a.status, 401);
    rq_free(r);
    /* within 5 s: refused at once, no new fetch */
    r = rq_new(f, 0, h, NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(fake_fetches(&f->fake), 1);
    rq_free(r);
    /* the server is back; 6 s later the next request fetches and passes */
    fake_set(&f->fake, NULL, 10, false);
    atomic_fetch_add(&fake_ms, 6000);
    r = rq_new(f, 0, h, NULL, NULL);
    assert_int_equal(run(r, NULL), GW_NEXT);
    assert_int_equal(fake_fetches(&f->fake), 2);
    rq_free(r);
    /* max-age 10 is clamped up to the 5 min floor */
    src = atomic_load(&f->s->auth->schemes[0].src);
    assert_int_equal(src->fresh_until - fake_now(), GW_JWKS_TTL_MIN_MS);
    free(h);
    free(tok);
    free(claims);
    EVP_PKEY_free(k);
    fx_free(f);
}

static void
shutdown_wakes_waiters_at_once(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("ED25519", 0, NULL);
    char *claims = tk_claims(ISS, "https://api.example.com", "u", 600, 0);
    char *tok = tk_token(k, NULL, 0, "EdDSA", "k1", claims);
    char *h = bearer(tok);
    int before;
    rq *r;

    (void)state;
    fake_set(&f->fake, tk_jwks(tk_jwk(k, "k1", NULL), NULL), -1, false);
    f->fake.hang = true;             /* a JWKS server that never answers */
    assert_int_equal(fx_spec(f, SWAGGER_JWT("", "[{'jwt':[]}]"), NULL), 0);
    r = rq_new(f, 0, h, NULL, NULL);
    pthread_mutex_lock(&post_lock);
    before = posted;
    pthread_mutex_unlock(&post_lock);
    assert_int_equal(gw__auth_stage(&r->c), GW_PENDING);
    gw__auth_shutdown(&f->gw);       /* posts the waiter now */
    wait_posted(before + 1);
    /* resumed: refused, and it never waits again */
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 401);
    rq_free(r);
    free(h);
    free(tok);
    free(claims);
    EVP_PKEY_free(k);
    fx_free(f);
}

static void
cache_control_is_clamped(void **state)
{
    (void)state;
    assert_int_equal(ttl_ms(-1), GW_JWKS_TTL_MIN_MS);
    assert_int_equal(ttl_ms(0), GW_JWKS_TTL_MIN_MS);
    assert_int_equal(ttl_ms(3600), 3600 * 1000);
    assert_int_equal(ttl_ms(10L * 24 * 3600), GW_JWKS_TTL_MAX_MS);
    /* the header parser */
    {
        kb_buf body = KB_BUF_INIT(10);
        long age = -1;
        fetch_io io = { &body, &age, false };
        char l1[] = "Cache-Control: public, max-age=19856, must-revalidate\r\n";
        char l2[] = "cache-control: no-store\r\n";
        char l3[] = "HTTP/1.1 200 OK\r\n";
        on_header(l1, 1, strlen(l1), &io);
        assert_int_equal(age, 19856);
        on_header(l3, 1, strlen(l3), &io);
        assert_int_equal(age, -1);
        on_header(l2, 1, strlen(l2), &io);
        assert_int_equal(age, 0);
        /* bodies over the limit fail the write */
        assert_int_equal(on_body("0123456789AB", 1, 12, &io), 0);
        assert_true(io.too_big);
    }
}

static void
api_keys_by_hash(void **state)
{
    fx *f = fx_new();
    unsigned char md[32];
    unsigned int ml;
    char hex[65];
    json_t *only_other = J("['other-gw']");
    rq *r;

    (void)state;
    EVP_Digest("s3cret-key", 10, md, &ml, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02X", md[i]);   /* upper case accepted */
    assert_int_equal(fx_spec(f,
        "{'openapi':'3.0.3','paths':{'/a':{'get':{}},'/q':{'get':{"
        "'security':[{'q':[]}]}}},'components':{'securitySchemes':{"
        "'h':{'type':'apiKey','in':'header','name':'x-api-key'},"
        "'q':{'type':'apiKey','in':'query','name':'key'}}},"
        "'security':[{'h':[]}]}", NULL), 0);
    assert_int_equal(kb_gateway_key_set(&f->gw, "p", "k1", "abc", NULL),
                     KB_EINVAL);
    assert_int_equal(kb_gateway_key_set(&f->gw, "p", "k1", hex, NULL), 0);

    r = rq_new(f, 0, NULL, NULL, NULL);          /* missing: 401 (ESPv2) */
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 401);
    assert_string_equal(r->a.message, MSG_KEY_MISSING);
    rq_free(r);
    r = rq_new(f, 0, "X-Api-Key: wrong", NULL, NULL);   /* invalid: 400 */
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 400);
    assert_string_equal(r->a.message, MSG_KEY_INVALID);
    rq_free(r);
    r = rq_new(f, 0, "X-Api-Key: s3cret-key", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_string_equal(r->c.api_key, "k1");
    assert_string_equal(r->c.subject, "key:k1");
    assert_null(r->c.claims);
    rq_free(r);
    r = rq_new(f, 1, NULL, NULL, "key=s3cret-key");
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    rq_free(r);
    r = rq_new(f, 1, "X-Api-Key: s3cret-key", NULL, NULL);  /* wrong place */
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 401);
    rq_free(r);

    /* restricted to another gateway: 403; to this one: fine */
    assert_int_equal(kb_gateway_key_set(&f->gw, "p", "k1", hex, only_other),
                     0);
    r = rq_new(f, 0, "X-Api-Key: s3cret-key", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 403);
    rq_free(r);
    json_array_append_new(only_other, json_string("g"));
    assert_int_equal(kb_gateway_key_set(&f->gw, "p", "k1", hex, only_other),
                     0);
    r = rq_new(f, 0, "X-Api-Key: s3cret-key", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    rq_free(r);
    /* a key of another project is unknown here */
    assert_int_equal(kb_gateway_key_remove(&f->gw, "p", "k1"), 0);
    assert_int_equal(kb_gateway_key_remove(&f->gw, "p", "k1"), KB_ENOTFOUND);
    assert_int_equal(kb_gateway_key_set(&f->gw, "other", "k1", hex, NULL), 0);
    r = rq_new(f, 0, "X-Api-Key: s3cret-key", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 400);
    rq_free(r);
    json_decref(only_other);
    fx_free(f);
}

static void
requirements_or_and_optional(void **state)
{
    fx *f = fx_new();
    const char *secret = "a-local-secret-of-at-least-32-bytes!!";
    char path[] = "/tmp/kiban-test-secret-XXXXXX";
    int fd = mkstemp(path);
    char *claims = tk_claims(ISS, "aud-1", "alice", 600, 0);
    char *tok = tk_token(NULL, secret, strlen(secret), "HS256", NULL, claims);
    char *h = bearer(tok), *doc;
    unsigned char md[32];
    unsigned int ml;
    char hex[65];
    rq *r;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, secret, strlen(secret)), (ssize_t)strlen(secret));
    assert_int_equal(write(fd, "\n", 1), 1);   /* a trailing newline is cut */
    close(fd);
    EVP_Digest("k-9", 3, md, &ml, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    assert_int_equal(kb_gateway_key_set(&f->gw, "p", "mobile", hex, NULL), 0);
    assert_true(asprintf(&doc,
        "{'swagger':'2.0','paths':{"
        "'/or':{'get':{'security':[{'jwt':[]},{'key':[]}]}},"
        "'/and':{'get':{'security':[{'jwt':[],'key':[]}]}},"
        "'/opt':{'get':{'security':[{},{'jwt':[]}]}}},"
        "'securityDefinitions':{"
        "'jwt':{'type':'oauth2','x-google-issuer':'" ISS "',"
        "'x-google-audiences':'aud-0, aud-1','x-kiban-secret-file':'%s'},"
        "'key':{'type':'apiKey','in':'header','name':'X-Api-Key'}}}",
        path) > 0);
    assert_int_equal(fx_spec(f, doc, NULL), 0);

    /* OR: either credential */
    r = rq_new(f, 0, h, NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_string_equal(r->c.subject, ISS "|alice");
    rq_free(r);
    r = rq_new(f, 0, "X-Api-Key: k-9", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_string_equal(r->c.subject, "key:mobile");
    rq_free(r);
    r = rq_new(f, 0, "X-Api-Key: k-8", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 400);
    rq_free(r);
    /* AND: both, identity from the JWT, key name kept */
    r = rq_new(f, 1, "X-Api-Key: k-9", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 401);
    assert_non_null(extra(r, false, "WWW-Authenticate"));
    rq_free(r);
    r = rq_new(f, 1, "X-Api-Key: k-9", h, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_string_equal(r->c.subject, ISS "|alice");
    assert_string_equal(r->c.api_key, "mobile");
    rq_free(r);
    /* optional: nothing is fine, a bad token is not */
    r = rq_new(f, 2, NULL, NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_null(r->c.subject);
    rq_free(r);
    r = rq_new(f, 2, "Authorization: Bearer x.y.z", NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
    assert_int_equal(r->a.status, 401);
    rq_free(r);
    r = rq_new(f, 2, h, NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_non_null(r->c.claims);
    rq_free(r);
    assert_int_equal(fake_fetches(&f->fake), 0);  /* local keys only */

    unlink(path);
    free(doc);
    free(h);
    free(tok);
    free(claims);
    fx_free(f);
}

static void
openapi3_form_and_locations(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("EC", 0, "P-256");
    char path[] = "/tmp/kiban-test-jwks-XXXXXX";
    int fd = mkstemp(path);
    char *jwks = tk_jwks(tk_jwk(k, "e1", "ES256"), NULL);
    char *claims = tk_claims(ISS, "https://gw.example.org", "bob", 600, 0);
    char *tok = tk_token(k, NULL, 0, "ES256", "e1", claims);
    char *doc, *hx, *q;
    rq *r;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, jwks, strlen(jwks)), (ssize_t)strlen(jwks));
    close(fd);
    /* audience defaults to https://HOST of the Gateway's hosts */
    assert_true(asprintf(&doc,
        "{'openapi':'3.0.3','paths':{'/a':{'get':{}}},"
        "'security':[{'fb':[]}],'components':{'securitySchemes':{"
        "'fb':{'type':'oauth2','flows':{'implicit':{'authorizationUrl':'',"
        "'scopes':{}}},'x-kiban-jwks-file':'%s','x-google-auth':{"
        "'issuer':'" ISS "','jwtLocations':[{'header':'X-Token',"
        "'valuePrefix':'Token '},{'query':'jwt'}]}}}}}", path) > 0);
    assert_int_equal(fx_spec(f, doc, "gw.example.org"), 0);
    assert_true(asprintf(&hx, "X-Token: Token %s", tok) > 0);
    assert_true(asprintf(&q, "jwt=%s", tok) > 0);
    r = rq_new(f, 0, hx, NULL, NULL);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    assert_null(extra(r, true, "X-Forwarded-Authorization"));  /* none sent */
    rq_free(r);
    r = rq_new(f, 0, NULL, NULL, q);
    assert_int_equal(gw__auth_stage(&r->c), GW_NEXT);
    rq_free(r);
    /* Authorization: Bearer is not a location of this scheme */
    {
        char *h = bearer(tok);
        r = rq_new(f, 0, h, NULL, NULL);
        assert_int_equal(gw__auth_stage(&r->c), GW_DONE);
        assert_int_equal(r->a.status, 401);
        rq_free(r);
        free(h);
    }
    /* the file is read at compile: a broken one fails the spec */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "{\"keys\":[]}", 11), 11);
    close(fd);
    assert_int_equal(fx_spec(f, doc, "gw.example.org"), KB_EINVAL);
    assert_non_null(strstr(f->err, "/components/securitySchemes/fb/"
                                   "x-kiban-jwks-file: "));
    unlink(path);
    free(doc); free(hx); free(q); free(jwks); free(tok); free(claims);
    EVP_PKEY_free(k);
    fx_free(f);
}

static void
firebase_tokens_verify(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("RSA", 2048, NULL);
    char *pem = tk_cert_pem(k);
    json_t *map = json_object();
    const char *iss = "https://securetoken.google.com/my-project";
    char *claims, *tok, *h;
    rq *r;

    (void)state;
    json_object_set_new(map, "fbkid1", json_string(pem));
    fake_set(&f->fake, json_dumps(map, 0), 3600, false);
    assert_int_equal(fx_spec(f,
        "{'swagger':'2.0','paths':{'/me':{'get':{}}},"
        "'securityDefinitions':{'firebase':{'authorizationUrl':'',"
        "'flow':'implicit','type':'oauth2','x-google-issuer':"
        "'https://securetoken.google.com/my-project','x-google-jwks_uri':"
        "'https://www.googleapis.com/service_accounts/v1/metadata/x509/"
        "securetoken@system.gserviceaccount.com','x-google-audiences':"
        "'my-project'}},'security':[{'firebase':[]}]}", NULL), 0);
    assert_true(asprintf(&claims, "{\"iss\":\"%s\",\"aud\":\"my-project\","
        "\"auth_time\":%ld,\"user_id\":\"uid-7\",\"sub\":\"uid-7\",\"iat\":%ld,"
        "\"exp\":%ld,\"firebase\":{\"sign_in_provider\":\"password\"}}", iss,
        (long)time(NULL) - 5, (long)time(NULL) - 5,
        (long)time(NULL) + 3595) > 0);
    tok = tk_token(k, NULL, 0, "RS256", "fbkid1", claims);
    h = bearer(tok);
    r = rq_new(f, 0, h, NULL, NULL);
    assert_int_equal(run(r, NULL), GW_NEXT);
    assert_string_equal(r->c.subject, "https://securetoken.google.com/"
                                      "my-project|uid-7");
    rq_free(r);
    json_decref(map);
    free(pem); free(claims); free(tok); free(h);
    EVP_PKEY_free(k);
    fx_free(f);
}

typedef struct worker_arg {
    fx    *f;
    char **headers;
    size_t nheaders;
    int    ok;
} worker_arg;

static void *
worker(void *data)
{
    worker_arg *a = data;

    for (int i = 0; i < 400; i++) {
        rq *r = rq_new(a->f, 0, a->headers[(size_t)i % a->nheaders], NULL,
                       NULL);
        if (gw__auth_stage(&r->c) == GW_NEXT && r->c.claims != NULL)
            a->ok++;
        rq_free(r);
    }
    return NULL;
}

static void
many_threads_share_the_cache(void **state)
{
    fx *f = fx_new();
    EVP_PKEY *k = tk_keygen("EC", 0, "P-256");
    char path[] = "/tmp/kiban-test-jwks-XXXXXX";
    int fd = mkstemp(path);
    char *jwks = tk_jwks(tk_jwk(k, "e1", NULL), NULL), *doc;
    char *headers[40];
    worker_arg args[4];
    pthread_t th[4];

    (void)state;
    assert_int_equal(write(fd, jwks, strlen(jwks)), (ssize_t)strlen(jwks));
    close(fd);
    assert_true(asprintf(&doc, "{'swagger':'2.0','host':'h.example',"
        "'paths':{'/a':{'get':{}}},'security':[{'j':[]}],"
        "'securityDefinitions':{'j':{'x-google-issuer':'" ISS "',"
        "'x-kiban-jwks-file':'%s'}}}", path) > 0);
    assert_int_equal(fx_spec(f, doc, NULL), 0);
    for (int i = 0; i < 40; i++) {
        char cl[256], *tok;
        snprintf(cl, sizeof(cl), "{\"iss\":\"" ISS "\",\"aud\":"
                 "\"https://h.example/\",\"sub\":\"u%d\",\"exp\":%ld}", i,
                 (long)time(NULL) + 600);
        tok = tk_token(k, NULL, 0, "ES256", "e1", cl);
        headers[i] = bearer(tok);
        free(tok);
    }
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){ f, headers, 40, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 400);
    }
    /* the cache is bounded */
    {
        json_t *cl = json_object();
        unsigned char d[32] = { 0 };
        size_t total = 0;
        for (uint32_t i = 0; i < GW_TCACHE_MAX + 500; i++) {
            memcpy(d, &i, sizeof(i));
            memcpy(d + 8, &i, sizeof(i));
            gw__tcache_put(f->gw.jwks, d, 99, time(NULL) + 60, cl, "s", "p", 1);
        }
        for (int s = 0; s < TC_SHARDS; s++)
            total += f->gw.jwks->shards[s].n;
        assert_true(total <= GW_TCACHE_MAX);
        assert_true(total >= GW_TCACHE_MAX - TC_SHARDS);
        json_decref(cl);
    }
    for (int i = 0; i < 40; i++)
        free(headers[i]);
    unlink(path);
    free(doc);
    free(jwks);
    EVP_PKEY_free(k);
    fx_free(f);
}

static void
reserved_headers(void **state)
{
    (void)state;
    assert_true(gw__auth_header_reserved("x-apigateway-api-userinfo"));
    assert_true(gw__auth_header_reserved("X-Forwarded-Authorization"));
    assert_false(gw__auth_header_reserved("Authorization"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(compile_errors_name_the_pointer),
        cmocka_unit_test(remote_jwks_request_waits_then_passes),
        cmocka_unit_test(refusals_are_401_without_detail),
        cmocka_unit_test(unknown_kid_refetches_at_most_every_30s),
        cmocka_unit_test(jwks_down_keeps_stale_keys),
        cmocka_unit_test(first_fetch_failure_answers_then_retries),
        cmocka_unit_test(shutdown_wakes_waiters_at_once),
        cmocka_unit_test(cache_control_is_clamped),
        cmocka_unit_test(api_keys_by_hash),
        cmocka_unit_test(requirements_or_and_optional),
        cmocka_unit_test(openapi3_form_and_locations),
        cmocka_unit_test(firebase_tokens_verify),
        cmocka_unit_test(many_threads_share_the_cache),
        cmocka_unit_test(reserved_headers),
    };

    kb_log_set_level(KB_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
