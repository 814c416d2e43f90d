/*
 * test_aggregate.c - x-kiban-aggregate (src/gateway/aggregate.c): the
 * policy and its errors, filling call paths (path parameters, query,
 * claims, percent-encoding), reading a call's answer, the merged body
 * with _partial, and the status of a failed required call.  Includes
 * aggregate.c to reach its statics; the fan-out itself is tested end to
 * end (tests/e2e/test_gateway_aggregate.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "gateway/aggregate.c"

/* ------------------------------------------------------------------------ */
/* Policy                                                                    */

static gw_route test_route = {
    .method = "GET",
    .template = "/users/{id}/home",
    .label = "GET /users/{id}/home",
    .pointer = "/paths/~1users~1{id}~1home/get",
};

static struct gw_aggregate *
parse_ok(const char *text)
{
    json_t *v = J(text);
    struct gw_aggregate *a = NULL;
    char err[512];

    if (aggregate_parse(v, "/x", &test_route, &a, err, sizeof(err)) != 0)
        fail_msg("rejected: %s\n%s", err, text);
    json_decref(v);
    return a;
}

static void
rejected(const char *text, const char *want)
{
    json_t *v = J(text);
    struct gw_aggregate *a = NULL;
    char err[512] = "";
    int rc = aggregate_parse(v, "/p/x-kiban-aggregate", &test_route, &a, err,
                             sizeof(err));

    json_decref(v);
    if (rc != KB_EINVAL || a != NULL || strstr(err, want) == NULL)
        fail_msg("%s\nrc %d err \"%s\"\nwant \"%s\"", text, rc, err, want);
}

static void
test_parse(void **state)
{
    struct gw_aggregate *a;

    (void)state;
    a = parse_ok("{'timeout':'3s','calls':["
                 "{'name':'user','address':'service://users',"
                 "'path':'/users/{id}','required':true},"
                 "{'name':'orders','address':'http://127.0.0.1:9000/api/',"
                 "'path':'/orders?user={id}&limit={query.limit}',"
                 "'timeout':0.5,'cache':{'ttl':'10s'}},"
                 "{'name':'feed','address':'http://127.0.0.1:9001',"
                 "'method':'post','path':'/feed/{claims.sub}'}]}");
    assert_int_equal(a->ncalls, 3);
    assert_int_equal(a->timeout_ms, 3000);
    assert_string_equal(a->calls[0].name, "user");
    assert_string_equal(a->calls[0].b.service, "users");
    assert_true(a->calls[0].required);
    assert_string_equal(a->calls[0].method, "GET");
    assert_int_equal(a->calls[0].timeout_ms, 0);
    assert_null(a->calls[0].cache);
    assert_string_equal(a->calls[1].b.host, "127.0.0.1");
    assert_int_equal(a->calls[1].b.port, 9000);
    assert_int_equal(a->calls[1].timeout_ms, 500);
    assert_non_null(a->calls[1].cache);
    assert_false(a->calls[1].required);
    assert_string_equal(a->calls[2].method, "POST");
    aggregate_free(a);
}

static void
test_parse_errors(void **state)
{
    char many[8192] = "{'calls':[";

    (void)state;
    rejected("[]", "/p/x-kiban-aggregate: must be an object");
    rejected("{}", "/p/x-kiban-aggregate: calls: must be an array of 1 to 32");
    rejected("{'calls':[]}", "calls: must be an array of 1 to 32");
    for (int i = 0; i < 33; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many),
                 "%s{'name':'c%d','address':'http://127.0.0.1:1'}",
                 i ? "," : "", i);
    snprintf(many + strlen(many), sizeof(many) - strlen(many), "]}");
    rejected(many, "calls: must be an array of 1 to 32");
    rejected("{'calls':[{'address':'http://127.0.0.1:1'}]}",
             "/p/x-kiban-aggregate/calls/0: name: required");
    rejected("{'calls':[{'name':'a'}]}", "calls/0: address: required");
    rejected("{'calls':[{'name':'_partial','address':'http://h'}]}",
             "calls/0: name: must be 1-64");
    rejected("{'calls':[{'name':'a b','address':'http://h'}]}",
             "name: must be");
    rejected("{'calls':[{'name':'a','address':'http://h'},"
             "{'name':'a','address':'http://h'}]}",
             "calls/1: name: \"a\" is used by call 0");
    rejected("{'calls':[{'name':'a','address':'ftp://h'}]}",
             "calls/0: address: not a valid URL");
    rejected("{'calls':[{'name':'a','address':'grpc://h:1'}]}",
             "address: grpc:// backends cannot be aggregated");
    rejected("{'calls':[{'name':'a','address':'http://h','path':'x'}]}",
             "path: must start with '/'");
    rejected("{'calls':[{'name':'a','address':'http://h','path':'/{nope}'}]}",
             "path: {nope} is not a path parameter of /users/{id}/home");
    rejected("{'calls':[{'name':'a','address':'http://h','path':'/{id'}]}",
             "path: unbalanced '{'");
    rejected("{'calls':[{'name':'a','address':'http://h','path':'/id}'}]}",
             "path: unbalanced '}'");
    rejected("{'calls':[{'name':'a','address':'http://h','path':'/{}'}]}",
             "path: empty");
    rejected("{'calls':[{'name':'a','address':'http://h','path':'/a b'}]}",
             "path: bad character");
    rejected("{'calls':[{'name':'a','address':'http://h','method':'PUT'}]}",
             "method: must be GET or POST");
    rejected("{'calls':[{'name':'a','address':'http://h','timeout':'x'}]}",
             "timeout: must be a duration");
    rejected("{'calls':[{'name':'a','address':'http://h','required':1}]}",
             "required: must be a boolean");
    rejected("{'calls':[{'name':'a','address':'http://h','cache':{}}]}",
             "/p/x-kiban-aggregate/calls/0/cache/ttl: required");
    rejected("{'calls':[{'name':'a','address':'http://h','method':'POST',"
             "'cache':{'ttl':1}}]}", "cache: only GET calls");
    rejected("{'calls':[{'name':'a','address':'http://h','url':'/'}]}",
             "url: unknown field");
    rejected("{'calls':[{'name':'a','address':'http://h'}],'timeout':-1}",
             "timeout: must be a duration");
    rejected("{'calls':[{'name':'a','address':'http://h'}],'retries':1}",
             "retries: unknown field");
}

/* An aggregate operation needs no backend; errors carry the operation's
 * JSON pointer. */
static void
test_spec(void **state)
{
    json_t *spec;
    gw_spec *s = NULL;
    char err[512] = "";
    int rc;

    (void)state;
    spec = J("{'openapi':{'openapi':'3.0.0','info':{'title':'t','version':'1'},"
             "'paths':{'/home/{id}':{'get':{'responses':{},"
             "'x-kiban-aggregate':{'calls':[{'name':'u',"
             "'address':'http://127.0.0.1:9','path':'/u/{id}'}]}}}}}}");
    rc = gw__spec_compile(spec, "p", "g", &s, err, sizeof(err));
    if (rc != 0)
        fail_msg("rejected: %s", err);
    assert_non_null(s->routes[0].aggregate);
    assert_int_equal(s->routes[0].aggregate->ncalls, 1);
    gw__spec_unref(s);
    json_decref(spec);

    spec = J("{'openapi':{'openapi':'3.0.0','info':{'title':'t','version':'1'},"
             "'paths':{'/home':{'get':{'responses':{},"
             "'x-kiban-aggregate':{'calls':[{'name':'u',"
             "'address':'http://127.0.0.1:9','path':'/u/{id}'}]}}}}}}");
    rc = gw__spec_compile(spec, "p", "g", &s, err, sizeof(err));
    assert_int_equal(rc, KB_EINVAL);
    assert_non_null(strstr(err, "/paths/~1home/get/x-kiban-aggregate/calls/0:"
                                " path: {id} is not a path parameter"));
    json_decref(spec);
}

/* ------------------------------------------------------------------------ */
/* Filling paths                                                             */

typedef struct fill_fixture {
    kb_http_req req;
    gw_ctx      c;
} fill_fixture;

static void
fixture(fill_fixture *f, const char *path_value, const char *query)
{
    memset(f, 0, sizeof(*f));
    f->req.pool = kb_pool_create(0);
    f->req.method = "GET";
    f->req.path = "/users/x/home";
    f->req.query = query;
    f->c.req = &f->req;
    f->c.route = &test_route;
    f->c.match.nparams = 1;
    f->c.match.params[0] = (kb_route_param){ "id", path_value,
                                             strlen(path_value) };
    f->c.claims = J("{'sub':'u/1 2','org':{'id':42,'name':'a&b'},"
                    "'admin':true,'roles':['x']}");
}

static void
fixture_done(fill_fixture *f)
{
    json_decref(f->c.claims);
    kb_pool_destroy(f->req.pool);
}

static char *
filled(fill_fixture *f, const char *address, const char *path, int *rc,
       const char **missing)
{
    agg_call k;
    kb_buf out = KB_BUF_INIT(0);
    char *s;

    memset(&k, 0, sizeof(k));
    assert_null(gw__address_parse(address, &k.b));
    k.path = (char *)path;
    *missing = NULL;
    *rc = target_fill(&f->c, &k, &out, missing);
    s = strdup(kb_buf_cstr(&out));
    kb_buf_free(&out);
    k.path = NULL;
    call_free(&k);
    return s;
}

static void
expect_target(fill_fixture *f, const char *address, const char *path,
              const char *want)
{
    const char *missing;
    int rc;
    char *got = filled(f, address, path, &rc, &missing);

    if (rc != 0 || strcmp(got, want) != 0)
        fail_msg("%s + %s: rc %d got \"%s\" want \"%s\"", address, path, rc,
                 got, want);
    free(got);
}

static void
test_fill(void **state)
{
    fill_fixture f;
    const char *missing;
    int rc;
    char *got;

    (void)state;
    fixture(&f, "a%20b%2Fc", "limit=10&q=x%26y+z&e=");
    expect_target(&f, "http://h", "/users/{id}", "/users/a%20b%2Fc");
    expect_target(&f, "http://h/api/", "/users/{id}", "/api/users/a%20b%2Fc");
    expect_target(&f, "service://users/v1", "/u?l={query.limit}",
                  "/v1/u?l=10");
    /* query values are decoded, then encoded: they cannot add parameters */
    /* (a "+" in the query is a space, as forms send it) */
    expect_target(&f, "http://h", "/s?q={query.q}", "/s?q=x%26y%20z");
    expect_target(&f, "http://h", "/s?e={query.e}", "/s?e=");
    expect_target(&f, "http://h", "/f/{claims.sub}", "/f/u%2F1%202");
    expect_target(&f, "http://h", "/o/{claims.org.id}/{claims.org.name}",
                  "/o/42/a%26b");
    expect_target(&f, "http://h", "/a/{claims.admin}", "/a/true");
    expect_target(&f, "http://h/base", "", "/base");
    expect_target(&f, "http://h", "", "/");

    got = filled(&f, "http://h", "/s?x={query.nope}", &rc, &missing);
    assert_int_equal(rc, KB_ENOTFOUND);
    assert_string_equal(missing, "query.nope");
    free(got);
    got = filled(&f, "http://h", "/r/{claims.roles}", &rc, &missing);
    assert_int_equal(rc, KB_ENOTFOUND);      /* arrays are not values */
    assert_string_equal(missing, "claims.roles");
    free(got);
    got = filled(&f, "http://h", "/r/{claims.org.nope}", &rc, &missing);
    assert_int_equal(rc, KB_ENOTFOUND);
    free(got);
    fixture_done(&f);

    /* no claims at all (no auth on the route) */
    fixture(&f, "1", "");
    json_decref(f.c.claims);
    f.c.claims = NULL;
    got = filled(&f, "http://h", "/r/{claims.sub}", &rc, &missing);
    assert_int_equal(rc, KB_ENOTFOUND);
    free(got);
    fixture_done(&f);
}

/* ------------------------------------------------------------------------ */
/* Results and the merge                                                     */

typedef struct merge_fixture {
    fill_fixture        f;
    struct gw_aggregate agg;
    agg_call            calls[3];
    struct gw_agg_req  *ar;
} merge_fixture;

static void
merge_init(merge_fixture *m)
{
    static const char *const names[] = { "user", "orders", "feed" };

    fixture(&m->f, "1", "");
    memset(m->calls, 0, sizeof(m->calls));
    for (int i = 0; i < 3; i++)
        m->calls[i].name = (char *)names[i];
    m->agg = (struct gw_aggregate){ m->calls, 3, 0 };
    m->ar = kb_pool_calloc(m->f.req.pool,
                           sizeof(*m->ar) + 3 * sizeof(agg_result));
    m->ar->c = &m->f.c;
    m->ar->agg = &m->agg;
    for (int i = 0; i < 3; i++) {
        m->ar->res[i].ar = m->ar;
        m->ar->res[i].call = &m->calls[i];
    }
}

static void
merge_done(merge_fixture *m)
{
    agg_release(m->ar);
    fixture_done(&m->f);
}

static kb_http_client_res
res_of(int status, const char *body)
{
    return (kb_http_client_res){ .status = status, .body = body,
                                 .body_len = strlen(body) };
}

static void
test_result_take(void **state)
{
    merge_fixture m;
    agg_result *r;
    kb_http_client_res res;

    (void)state;
    merge_init(&m);
    r = &m.ar->res[0];
    assert_string_equal(result_take(r, KB_ETIMEDOUT, NULL), "timeout");
    assert_string_equal(result_take(r, -ECONNREFUSED, NULL), "unreachable");
    assert_string_equal(result_take(r, KB_ETOOBIG, NULL), "too large");
    res = res_of(503, "{}");
    assert_string_equal(result_take(r, 0, &res), "status 503");
    assert_int_equal(r->status, 503);
    res = res_of(200, "<html>");
    assert_string_equal(result_take(r, 0, &res), "not JSON");
    res = res_of(204, "");
    assert_null(result_take(r, 0, &res));
    assert_true(json_is_null(r->body));
    json_decref(r->body);
    res = res_of(200, "[1,2]");
    assert_null(result_take(r, 0, &res));
    assert_true(json_is_array(r->body));
    res = res_of(200, "\"text\"");
    assert_null(result_take(&m.ar->res[1], 0, &res));
    assert_true(json_is_string(m.ar->res[1].body));
    merge_done(&m);
}

static void
test_merge(void **state)
{
    merge_fixture m;
    kb_http_client_res res;
    const char *partial;
    json_t *got, *want;

    (void)state;
    merge_init(&m);
    res = res_of(200, "{\"id\":1}");
    assert_null(result_take(&m.ar->res[0], 0, &res));
    res = res_of(200, "[{\"n\":2}]");
    assert_null(result_take(&m.ar->res[1], 0, &res));
    m.ar->res[2].fail = result_take(&m.ar->res[2], KB_ETIMEDOUT, NULL);
    got = merge(m.ar, &partial);
    want = J("{'user':{'id':1},'orders':[{'n':2}],'feed':null,"
             "'_partial':{'feed':'timeout'}}");
    assert_true(json_equal(got, want));
    assert_string_equal(partial, "feed");
    json_decref(got);
    json_decref(want);

    /* two missing: both listed, in call order */
    m.ar->res[0].fail = "status 500";
    got = merge(m.ar, &partial);
    assert_string_equal(partial, "user, feed");
    want = J("{'user':null,'orders':[{'n':2}],'feed':null,"
             "'_partial':{'user':'status 500','feed':'timeout'}}");
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);

    /* all there: no _partial */
    m.ar->res[0].fail = NULL;
    m.ar->res[2].fail = NULL;
    m.ar->res[2].body = json_true();
    got = merge(m.ar, &partial);
    assert_null(partial);
    assert_null(json_object_get(got, "_partial"));
    assert_int_equal(json_object_size(got), 3);
    json_decref(got);
    merge_done(&m);
}

static void
test_required_status(void **state)
{
    agg_result r;

    (void)state;
    memset(&r, 0, sizeof(r));
    r.err = KB_ETIMEDOUT;
    assert_int_equal(required_status(&r), 504);
    r.err = KB_EUNAVAIL;
    assert_int_equal(required_status(&r), 503);
    r.err = -ECONNREFUSED;
    assert_int_equal(required_status(&r), 502);
    r.err = 0;
    r.status = 404;
    assert_int_equal(required_status(&r), 404);
    r.status = 403;
    assert_int_equal(required_status(&r), 403);
    r.status = 500;
    assert_int_equal(required_status(&r), 502);
    r.status = 200;                  /* 2xx but not JSON */
    assert_int_equal(required_status(&r), 502);
}

static void
test_call_timeout(void **state)
{
    gw_backend b = { .deadline_ms = 7000 };
    gw_route route = test_route;
    gw_ctx c;
    struct gw_aggregate a = { NULL, 0, 0 };
    agg_call k;

    (void)state;
    memset(&c, 0, sizeof(c));
    memset(&k, 0, sizeof(k));
    c.route = &route;
    /* no backend: the gateway's default deadline */
    assert_int_equal(call_timeout(&c, &a, &k), 15000);
    route.backend = &b;
    assert_int_equal(call_timeout(&c, &a, &k), 7000);
    k.timeout_ms = 2000;
    assert_int_equal(call_timeout(&c, &a, &k), 2000);
    a.timeout_ms = 1000;             /* the overall timeout caps each call */
    assert_int_equal(call_timeout(&c, &a, &k), 1000);
    a.timeout_ms = 9000;
    assert_int_equal(call_timeout(&c, &a, &k), 2000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_spec),
        cmocka_unit_test(test_fill),
        cmocka_unit_test(test_result_take),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_required_status),
        cmocka_unit_test(test_call_timeout),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
