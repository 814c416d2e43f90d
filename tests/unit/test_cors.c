/*
 * test_cors.c - CORS (src/gateway/cors.c): origin checks and matching,
 * policy parsing with the JSON pointer of each bad field, headers on actual
 * requests, and preflights answered at the gateway (through the route
 * stage's hook and through a declared OPTIONS operation).  The proxy's
 * gw__* helpers are small fakes here; routing is the real kb_router.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "gateway/cors.c"

#define GW_FAKES_COMPILE gw__cors_compile
#define GW_FAKES_RELEASE gw__cors_release
#define GW_FAKES_POLICY  cors
#include "gw_fakes.h"

/* ------------------------------------------------------------------------ */
/* Fakes of the rest: preflight answers and the table's router              */

static const kb_router *fake_router;

void
gw__respond(gw_ctx *c, int status, const kb_http_header *headers,
            size_t nheaders, const char *body, size_t body_len)
{
    (void)c;
    (void)body;
    assert_int_equal(fake_status, 0);          /* answered once */
    assert_int_equal(body_len, 0);
    fake_status = status;
    for (size_t i = 0; i < nheaders; i++)
        fake_res[fake_nres++] = (kb_http_header){ strdup(headers[i].name),
                                                  strdup(headers[i].value) };
}

const kb_router *
gw__table_router(const gw_table *t, const char *host)
{
    (void)t;
    (void)host;
    return fake_router;
}

/* ------------------------------------------------------------------------ */
/* Routers                                                                   */

static kb_router *
router_of(gw_spec *s)
{
    kb_router *r = kb_router_create();

    for (size_t i = 0; i < s->nroutes; i++)
        assert_int_equal(kb_router_add(r, s->routes[i].method,
                                       s->routes[i].template, &s->routes[i],
                                       NULL), 0);
    return r;
}

/* A request with up to 4 headers ("Name", "value", …, NULL). */
typedef struct fake_req {
    kb_http_req    req;
    kb_http_header h[4];
    gw_ctx         c;
} fake_req;

static void
fake_init(fake_req *f, const char *method, const char *path,
          const gw_route *route, ...)
{
    va_list ap;
    const char *name;

    memset(f, 0, sizeof(*f));
    f->req.method = method;
    f->req.path = path;
    f->req.headers = f->h;
    va_start(ap, route);
    while ((name = va_arg(ap, const char *)) != NULL && f->req.nheaders < 4)
        f->h[f->req.nheaders++] = (kb_http_header){ name,
                                                    va_arg(ap, const char *) };
    va_end(ap);
    f->c.req = &f->req;
    f->c.route = route;
    fake_reset();
}

#define DOC(extra, paths) \
    "{'openapi':'3.0.3','info':{'title':'t','version':'1'}" extra \
    ",'paths':" paths "}"

/* ------------------------------------------------------------------------ */
/* Origins                                                                   */

static void
test_origin_check_and_match(void **state)
{
    (void)state;
    assert_null(origin_check("*"));
    assert_null(origin_check("https://app.example"));
    assert_null(origin_check("http://localhost:3000"));
    assert_null(origin_check("https://*.example.com"));
    assert_null(origin_check("http://[::1]:8080"));
    assert_non_null(origin_check("https://app.example/"));
    assert_non_null(origin_check("https://app.example/path"));
    assert_non_null(origin_check("app.example"));
    assert_non_null(origin_check("null"));
    assert_non_null(origin_check("https://"));
    assert_non_null(origin_check("https://a.example:99999"));
    assert_non_null(origin_check("https://a b"));
    assert_non_null(origin_check("https://a.*.example"));

    assert_true(origin_match("https://app.example", "https://app.example"));
    assert_true(origin_match("https://app.example", "HTTPS://App.Example"));
    assert_false(origin_match("https://app.example", "http://app.example"));
    assert_false(origin_match("https://app.example",
                              "https://app.example:8443"));
    assert_true(origin_match("https://*.example.com", "https://a.example.com"));
    assert_true(origin_match("https://*.example.com",
                             "https://a.b.example.com"));
    assert_false(origin_match("https://*.example.com", "https://example.com"));
    assert_false(origin_match("https://*.example.com",
                              "https://notexample.com"));
    assert_false(origin_match("https://*.example.com",
                              "https://a.example.com.evil.net"));
    assert_false(origin_match("https://*.example.com",
                              "https://a/b.example.com"));
    assert_false(origin_match("https://*.example.com",
                              "http://a.example.com"));
    assert_false(origin_match("https://*.example.com:8443",
                              "https://a.example.com"));
    assert_true(origin_match("https://*.example.com:8443",
                             "https://a.example.com:8443"));

    assert_true(method_listed("GET, POST", "POST"));
    assert_false(method_listed("GET, POST", "post"));
    assert_false(method_listed("GET, POST", "POS"));
    assert_false(method_listed("GETX, POST", "GET"));
}

/* ------------------------------------------------------------------------ */
/* Policies                                                                  */

static void
test_parse_policies(void **state)
{
    gw_spec *s = compile_ok(DOC(
        ",'x-kiban-cors':{'allowOrigins':['https://App.example'],"
        "'allowHeaders':['Authorization','Content-Type'],"
        "'exposeHeaders':['RateLimit-Remaining'],'maxAge':600,"
        "'allowCredentials':true}",
        "{'/a':{'get':{},'post':{},"
        "       'delete':{'x-kiban-cors':false}},"
        " '/b':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
        "              'allowMethods':['GET','PUT'],'allowHeaders':['*']}}}}"));
    const struct gw_cors *p;

    (void)state;
    p = route_of(s, "GET /a")->cors;
    assert_non_null(p);
    assert_int_equal(p->norigins, 1);
    assert_string_equal(p->origins[0], "https://app.example");
    assert_false(p->any_origin);
    assert_string_equal(p->methods, "GET, POST, DELETE");  /* the path's */
    assert_string_equal(p->headers, "Authorization, Content-Type");
    assert_string_equal(p->expose, "RateLimit-Remaining");
    assert_int_equal(p->max_age, 600);
    assert_true(p->credentials);
    assert_non_null(route_of(s, "POST /a")->cors);
    assert_null(route_of(s, "DELETE /a")->cors);
    p = route_of(s, "GET /b")->cors;                       /* replaces */
    assert_true(p->any_origin);
    assert_string_equal(p->methods, "GET, PUT");
    assert_true(p->echo_headers);
    assert_null(p->headers);
    assert_false(p->credentials);
    assert_int_equal(p->max_age, -1);
    spec_drop(s);

    s = compile_ok(DOC("", "{'/a':{'get':{}}}"));
    assert_null(route_of(s, "GET /a")->cors);
    spec_drop(s);
}

static void
test_parse_errors(void **state)
{
    (void)state;
    reject(DOC(",'x-kiban-cors':{}", "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowOrigins: required");
    reject(DOC(",'x-kiban-cors':true", "{'/a':{'get':{}}}"),
           "/x-kiban-cors: must be an object");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':[]}", "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowOrigins: must be a non-empty array");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':'*'}", "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowOrigins: must be a non-empty array");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':['https://a.example',"
               "'https://b.example/']}", "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowOrigins/1: an origin has no path");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':['null']}",
               "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowOrigins/0: \"null\" is not allowed");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':[3]}", "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowOrigins/0: must be a string");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':['https://a.example','*'],"
               "'allowCredentials':true}", "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowOrigins/1: \"*\" cannot be used with "
           "allowCredentials");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':['https://a.example'],"
               "'allowCredentials':'yes'}", "{'/a':{'get':{}}}"),
           "/x-kiban-cors/allowCredentials: must be true or false");
    reject(DOC(",'x-kiban-cors':{'allowOrigins':['https://a.example'],"
               "'exposeHeaders':['*'],'allowCredentials':true}",
               "{'/a':{'get':{}}}"),
           "/x-kiban-cors/exposeHeaders: \"*\" cannot be used with");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'maxAge':-1}}}}"),
           "/paths/~1a/get/x-kiban-cors/maxAge: must be a whole number");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'maxAge':86401}}}}"),
           "/paths/~1a/get/x-kiban-cors/maxAge: must be a whole number");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'maxAge':'10'}}}}"),
           "/paths/~1a/get/x-kiban-cors/maxAge: must be a whole number");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'allowMethods':['GET','P T']}}}}"),
           "/paths/~1a/get/x-kiban-cors/allowMethods/1: must be HTTP "
           "methods");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'allowMethods':[]}}}}"),
           "/paths/~1a/get/x-kiban-cors/allowMethods: must list at least");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'allowMethods':['*']}}}}"),
           "/paths/~1a/get/x-kiban-cors/allowMethods/0: must be HTTP");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'allowHeaders':['X-A','*']}}}}"),
           "/paths/~1a/get/x-kiban-cors/allowHeaders/1: \"*\" must be the "
           "only entry");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'allowHeaders':'X-A'}}}}"),
           "/paths/~1a/get/x-kiban-cors/allowHeaders: must be an array");
    reject(DOC("", "{'/a':{'get':{'x-kiban-cors':{'allowOrigins':['*'],"
                   "'origins':['*']}}}}"),
           "/paths/~1a/get/x-kiban-cors/origins: unknown field");
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

#define POLICY_DOC DOC( \
    ",'x-kiban-cors':{'allowOrigins':['https://app.example'," \
    "'https://*.tenant.example'],'allowHeaders':['Authorization']," \
    "'exposeHeaders':['RateLimit-Remaining','X-Request-Id'],'maxAge':600," \
    "'allowCredentials':true}", \
    "{'/a':{'get':{},'post':{},'put':{'x-kiban-cors':false}}," \
    " '/open':{'get':{'x-kiban-cors':{'allowOrigins':['*']," \
    "                 'allowHeaders':['*']}}}," \
    " '/own':{'get':{},'options':{'x-kiban-cors':false}}," \
    " '/none':{'get':{'x-kiban-cors':false},'options':{}}}")

static void
test_actual_requests(void **state)
{
    gw_spec *s = compile_ok(POLICY_DOC);
    fake_req f;

    (void)state;
    fake_init(&f, "GET", "/a", route_of(s, "GET /a"),
              "Origin", "https://app.example", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_string_equal(fake_header("Access-Control-Allow-Origin"),
                        "https://app.example");
    assert_string_equal(fake_header("Vary"), "Origin");
    assert_string_equal(fake_header("Access-Control-Allow-Credentials"),
                        "true");
    assert_string_equal(fake_header("Access-Control-Expose-Headers"),
                        "RateLimit-Remaining, X-Request-Id");
    assert_null(fake_header("Access-Control-Allow-Methods"));
    assert_int_equal(fake_status, 0);

    /* a subdomain of the wildcard, echoed as sent */
    fake_init(&f, "POST", "/a", route_of(s, "POST /a"),
              "Origin", "https://acme.tenant.example", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_string_equal(fake_header("Access-Control-Allow-Origin"),
                        "https://acme.tenant.example");

    /* another origin: no CORS headers, but the answer varies by Origin */
    fake_init(&f, "GET", "/a", route_of(s, "GET /a"),
              "Origin", "https://evil.example", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_null(fake_header("Access-Control-Allow-Origin"));
    assert_null(fake_header("Access-Control-Allow-Credentials"));
    assert_string_equal(fake_header("Vary"), "Origin");
    assert_int_equal(fake_nres, 1);

    /* same-origin request (no Origin) */
    fake_init(&f, "GET", "/a", route_of(s, "GET /a"), NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_null(fake_header("Access-Control-Allow-Origin"));
    assert_string_equal(fake_header("Vary"), "Origin");

    /* "*": no echo, no Vary */
    fake_init(&f, "GET", "/open", route_of(s, "GET /open"),
              "Origin", "https://anyone.example", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_string_equal(fake_header("Access-Control-Allow-Origin"), "*");
    assert_null(fake_header("Vary"));
    assert_null(fake_header("Access-Control-Allow-Credentials"));

    /* CORS off for the operation */
    fake_init(&f, "PUT", "/a", route_of(s, "PUT /a"),
              "Origin", "https://app.example", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_int_equal(fake_nres, 0);
    fake_reset();
    spec_drop(s);
}

static void
test_preflight_without_options_route(void **state)
{
    gw_spec *s = compile_ok(POLICY_DOC);
    kb_router *router = router_of(s);
    fake_req f;

    (void)state;
    fake_router = router;
    /* allowed: 204 with the Allow-* headers */
    fake_init(&f, "OPTIONS", "/a", NULL, "Origin", "https://app.example",
              "Access-Control-Request-Method", "POST",
              "Access-Control-Request-Headers", "authorization", NULL);
    assert_true(gw__cors_preflight(&f.c, router));
    assert_int_equal(fake_status, 204);
    assert_string_equal(fake_header("Access-Control-Allow-Origin"),
                        "https://app.example");
    assert_string_equal(fake_header("Vary"), "Origin");
    assert_string_equal(fake_header("Access-Control-Allow-Methods"),
                        "GET, POST, PUT");
    assert_string_equal(fake_header("Access-Control-Allow-Headers"),
                        "Authorization");
    assert_string_equal(fake_header("Access-Control-Max-Age"), "600");
    assert_string_equal(fake_header("Access-Control-Allow-Credentials"),
                        "true");
    assert_string_equal(f.c.what, "(preflight)");

    /* other origin: not answered, the router's 405 goes out as usual */
    fake_init(&f, "OPTIONS", "/a", NULL, "Origin", "https://evil.example",
              "Access-Control-Request-Method", "POST", NULL);
    assert_false(gw__cors_preflight(&f.c, router));
    assert_int_equal(fake_status, 0);
    assert_int_equal(fake_nres, 0);
    /* a method the path does not have */
    fake_init(&f, "OPTIONS", "/a", NULL, "Origin", "https://app.example",
              "Access-Control-Request-Method", "PATCH", NULL);
    assert_false(gw__cors_preflight(&f.c, router));
    /* a method whose operation turned CORS off */
    fake_init(&f, "OPTIONS", "/a", NULL, "Origin", "https://app.example",
              "Access-Control-Request-Method", "PUT", NULL);
    assert_false(gw__cors_preflight(&f.c, router));
    /* not a preflight: no Access-Control-Request-Method */
    fake_init(&f, "OPTIONS", "/a", NULL, "Origin", "https://app.example",
              NULL);
    assert_false(gw__cors_preflight(&f.c, router));
    /* unknown path */
    fake_init(&f, "OPTIONS", "/zzz", NULL, "Origin", "https://app.example",
              "Access-Control-Request-Method", "GET", NULL);
    assert_false(gw__cors_preflight(&f.c, router));
    assert_int_equal(fake_status, 0);

    /* allowHeaders ["*"]: the requested headers are echoed, if sane */
    fake_init(&f, "OPTIONS", "/open", NULL, "Origin", "https://x.example",
              "Access-Control-Request-Method", "GET",
              "Access-Control-Request-Headers", "authorization, x-trace",
              NULL);
    assert_true(gw__cors_preflight(&f.c, router));
    assert_string_equal(fake_header("Access-Control-Allow-Origin"), "*");
    assert_string_equal(fake_header("Access-Control-Allow-Headers"),
                        "authorization, x-trace");
    assert_null(fake_header("Access-Control-Max-Age"));
    assert_null(fake_header("Vary"));
    fake_init(&f, "OPTIONS", "/open", NULL, "Origin", "https://x.example",
              "Access-Control-Request-Method", "GET",
              "Access-Control-Request-Headers", "x-a\r\nSet-Cookie: a=b",
              NULL);
    assert_true(gw__cors_preflight(&f.c, router));
    assert_null(fake_header("Access-Control-Allow-Headers"));
    fake_reset();
    kb_router_free(router);
    spec_drop(s);
}

static void
test_preflight_with_declared_options(void **state)
{
    gw_spec *s = compile_ok(POLICY_DOC);
    kb_router *router = router_of(s);
    fake_req f;

    (void)state;
    fake_router = router;
    /* the spec declares OPTIONS /own (CORS off there), but GET /own has a
     * policy: the preflight is answered at the gateway */
    fake_init(&f, "OPTIONS", "/own", route_of(s, "OPTIONS /own"),
              "Origin", "https://app.example",
              "Access-Control-Request-Method", "GET", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_DONE);
    assert_int_equal(fake_status, 204);
    assert_string_equal(fake_header("Access-Control-Allow-Methods"),
                        "GET, OPTIONS");
    assert_null(f.c.what);                 /* counted under its route */

    /* GET /none has no policy: the preflight goes on to the backend */
    fake_init(&f, "OPTIONS", "/none", route_of(s, "OPTIONS /none"),
              "Origin", "https://app.example",
              "Access-Control-Request-Method", "GET", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_int_equal(fake_status, 0);
    assert_int_equal(fake_nres, 0);
    /* a plain OPTIONS (no preflight headers) is an actual request */
    fake_init(&f, "OPTIONS", "/own", route_of(s, "OPTIONS /own"),
              "Origin", "https://app.example", NULL);
    assert_int_equal(gw__cors_stage(&f.c), GW_NEXT);
    assert_int_equal(fake_status, 0);
    fake_reset();
    kb_router_free(router);
    spec_drop(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origin_check_and_match),
        cmocka_unit_test(test_parse_policies),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_actual_requests),
        cmocka_unit_test(test_preflight_without_options_route),
        cmocka_unit_test(test_preflight_with_declared_options),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
