/*
 * test_gateway.c - the gateway (src/gateway/): spec validation with JSON
 * pointers, path translation, host selection, conflicts, the atomic table
 * swap, the header helpers, and end to end in-process: a kb_http_server
 * echo backend behind a gateway listener, driven over raw TCP.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/metrics.h"
#include "gateway/gw_int.h"

#define GW_FAKES_RUNTIME
#define GW_FAKES_E2E
#include "gw_fakes.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */


/* Compile a spec that must be valid. */
static gw_spec *
compile_ok(const char *text, const char *project, const char *name)
{
    json_t *spec = J(text);
    char err[512];
    gw_spec *s = NULL;
    int rc = gw__spec_compile(spec, project, name, &s, err, sizeof(err));

    if (rc != 0)
        fail_msg("spec rejected (%d): %s\n%s", rc, err, text);
    json_decref(spec);
    return s;
}

/* Validate a spec that must be rejected with `want` in the message. */
static void
reject(const char *text, const char *want)
{
    json_t *spec = J(text);
    char err[512] = "";
    int rc = kb_gateway_validate(spec, err, sizeof(err));

    if (rc != KB_EINVAL || strstr(err, want) == NULL)
        fail_msg("spec: %s\nrc %d, err \"%s\"\nwant \"%s\"", text, rc, err,
                 want);
    json_decref(spec);
}

/* The route of a one-spec table matching method + path (must match). */
static const gw_route *
route_for(const gw_table *t, const char *host, const char *method,
          const char *path, kb_route_match *m)
{
    const kb_router *r = gw__table_router(t, host);
    int rc = kb_router_match(r, method, path, strlen(path), m);

    if (rc != 200)
        fail_msg("%s %s (host %s): %d", method, path, host ? host : "-", rc);
    return m->target;
}

/* Upstream target for path?query through spec text's route. */
static char *
target_for(const char *spec_text, const char *method, const char *path,
           const char *query)
{
    gw_spec *s = compile_ok(spec_text, "p", "g");
    gw_table *t;
    kb_route_match m;
    kb_buf out = KB_BUF_INIT(1 << 16);
    char *res;

    assert_int_equal(gw__table_build(&s, 1, s, &t, NULL, 0), 0);
    assert_int_equal(gw__target_build(route_for(t, NULL, method, path, &m),
                                      &m, path, query, &out), 0);
    res = strdup(kb_buf_cstr(&out));
    kb_buf_free(&out);
    gw__table_unref(t);
    gw__spec_unref(s);
    return res;
}

static void
assert_target(const char *spec_text, const char *method, const char *path,
              const char *query, const char *want)
{
    char *got = target_for(spec_text, method, path, query);

    if (strcmp(got, want) != 0)
        fail_msg("%s %s?%s: got \"%s\", want \"%s\"", method, path, query,
                 got, want);
    free(got);
}

#define OAS3(top, paths) \
    "{'openapi':{'openapi':'3.0.3','info':{'title':'t','version':'1'}" \
    top ",'paths':" paths "}}"
#define TOP(addr) ",'x-google-backend':{'address':'" addr "'}"

/* ------------------------------------------------------------------------ */
/* Validation                                                                */

static void
test_validate_good(void **state)
{
    static const char *good[] = {
        /* the quickstart shape */
        OAS3(TOP("service://hello"),
             "{'/hello':{'get':{'operationId':'hello'}},"
             "'/hello/{name}':{'get':{}}}"),
        /* operation-level only, every field set */
        OAS3("", "{'/a':{'post':{'x-google-backend':{"
                 "'address':'http://127.0.0.1:9000/x',"
                 "'path_translation':'APPEND_PATH_TO_ADDRESS',"
                 "'deadline':2.5,'protocol':'http/1.1',"
                 "'jwt_audience':'aud','disable_auth':true}}}}"),
        /* 3.1, hosts, path-item extras, x- keys, integer deadline */
        "{'hosts':['qa.localhost','API.Example.com','[::1]'],"
        "'openapi':{'openapi':'3.1.0','x-google-backend':{"
        "'address':'http://[::1]:8080','deadline':30},"
        "'paths':{'x-note':1,'/a/{id}':{'summary':'s','parameters':[],"
        "'x-foo':{},'get':{},'put':{},'delete':{},'options':{},'head':{},"
        "'patch':{},'trace':{},'post':{}}}}}",
        /* the OpenAPI 3.x registry form */
        "{'openapi':{'openapi':'3.0.4','x-google-api-management':{"
        "'backends':{'main':{'address':'http://127.0.0.1:1',"
        "'pathTranslation':'CONSTANT_ADDRESS','jwtAudience':'a',"
        "'disableAuth':false}}},"
        "'x-google-backend':'main','paths':{'/x':{'get':{}},"
        "'/y':{'get':{'x-google-backend':'main'}}}}}",
        /* Swagger 2.0 */
        "{'openapi':{'swagger':'2.0','basePath':'/v1','x-google-backend':"
        "{'address':'http://localhost:9000'},'paths':{'/u':{'get':{}}}}}",
        /* empty paths: a gateway that only answers /healthz */
        OAS3("", "{}"),
        /* custom method and catch-all templates */
        OAS3(TOP("http://h"), "{'/v1/topics/{t}:publish':{'post':{}},"
                              "'/files/{path=**}':{'get':{}}}"),
    };
    char err[256];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        json_t *spec = J(good[i]);
        int rc = kb_gateway_validate(spec, err, sizeof(err));
        if (rc != 0)
            fail_msg("good spec %zu rejected: %s", i, err);
        json_decref(spec);
    }
}

static void
test_validate_bad(void **state)
{
    /* not objects, missing parts */
    reject("[]", "/: a Gateway spec must be an object");
    reject("{}", "/openapi: required");
    reject("{'openapi':[]}", "/openapi: must be an object");
    reject("{'openapi':{'paths':{}}}", "neither \"openapi\" (3.x) nor "
                                       "\"swagger\" (2.0)");
    reject("{'openapi':{'openapi':'2.0','paths':{}}}",
           "/openapi: unsupported OpenAPI version");
    reject("{'openapi':{'openapi':'3.2.0','paths':{}}}",
           "/openapi: unsupported OpenAPI version");
    reject("{'openapi':{'swagger':'1.2','paths':{}}}",
           "/swagger: must be \"2.0\"");
    reject("{'openapi':{'openapi':'3.0.0'}}", "/paths: required");
    reject("{'openapi':{'openapi':'3.0.0','paths':[]}}",
           "/paths: must be an object");

    /* the documented example: the pointer escapes '/' as ~1 */
    reject(OAS3("", "{'/users/{id}':{'get':{'x-google-backend':"
                    "{'address':'ftp://x'}}}}"),
           "/paths/~1users~1{id}/get/x-google-backend/address: not a valid "
           "URL");
    reject(OAS3("", "{'/a~b':{'get':{'x-google-backend':"
                    "{'address':'nope'}}}}"),
           "/paths/~1a~0b/get/x-google-backend/address: not a valid URL");

    /* addresses */
    reject(OAS3(TOP("ftp://example.com"), "{'/a':{'get':{}}}"),
           "/x-google-backend/address: not a valid URL");
    reject(OAS3(TOP("http://"), "{'/a':{'get':{}}}"), "no host");
    reject(OAS3(TOP("http://h:0"), "{'/a':{'get':{}}}"), "bad port");
    reject(OAS3(TOP("http://h:65536"), "{'/a':{'get':{}}}"), "bad port");
    reject(OAS3(TOP("http://h:x"), "{'/a':{'get':{}}}"), "bad port");
    reject(OAS3(TOP("http://u@h"), "{'/a':{'get':{}}}"), "user information");
    reject(OAS3(TOP("http://h/a?b=1"), "{'/a':{'get':{}}}"), "query string");
    reject(OAS3(TOP("http://h/a b"), "{'/a':{'get':{}}}"), "bad character");
    reject(OAS3(TOP("http://h h"), "{'/a':{'get':{}}}"), "bad character");
    reject(OAS3(TOP("http://[zz]"), "{'/a':{'get':{}}}"), "IPv6");
    reject(OAS3(TOP("service://"), "{'/a':{'get':{}}}"), "service name");
    reject(OAS3(TOP("service://Hello"), "{'/a':{'get':{}}}"), "service name");

    /* backend fields */
    reject(OAS3(",'x-google-backend':{}", "{'/a':{'get':{}}}"),
           "/x-google-backend/address: required");
    reject(OAS3(",'x-google-backend':7", "{'/a':{'get':{}}}"),
           "/x-google-backend: must be an object");
    reject(OAS3(",'x-google-backend':{'address':1}", "{'/a':{'get':{}}}"),
           "/x-google-backend/address: must be a string");
    reject(OAS3(",'x-google-backend':{'address':'http://h','adress':'x'}",
                "{'/a':{'get':{}}}"),
           "/x-google-backend/adress: unknown field");
    reject(OAS3(",'x-google-backend':{'address':'http://h',"
                "'path_translation':'APPEND'}", "{'/a':{'get':{}}}"),
           "/x-google-backend/path_translation: must be "
           "APPEND_PATH_TO_ADDRESS or CONSTANT_ADDRESS");
    reject(OAS3(",'x-google-backend':{'address':'http://h','deadline':0}",
                "{'/a':{'get':{}}}"),
           "/x-google-backend/deadline: must be greater than 0");
    reject(OAS3(",'x-google-backend':{'address':'http://h','deadline':-1}",
                "{'/a':{'get':{}}}"), "greater than 0");
    reject(OAS3(",'x-google-backend':{'address':'http://h','deadline':'5'}",
                "{'/a':{'get':{}}}"), "must be a number of seconds");
    reject(OAS3(",'x-google-backend':{'address':'http://h','deadline':1e9}",
                "{'/a':{'get':{}}}"), "at most 3600 seconds");
    reject(OAS3(",'x-google-backend':{'address':'http://h','protocol':'h3'}",
                "{'/a':{'get':{}}}"),
           "/x-google-backend/protocol: must be http/1.1 or h2");
    reject(OAS3(",'x-google-backend':{'address':'http://h',"
                "'protocol':'http/1.0'}", "{'/a':{'get':{}}}"),
           "must be http/1.1");
    reject(OAS3(",'x-google-backend':{'address':'http://h',"
                "'disable_auth':'yes'}", "{'/a':{'get':{}}}"),
           "/x-google-backend/disable_auth: must be true or false");

    /* operations, paths */
    reject(OAS3("", "{'/a':{'get':{}}}"),
           "/paths/~1a/get: no backend: set x-google-backend");
    reject(OAS3(TOP("http://h"), "{'a':{'get':{}}}"),
           "/paths/a: path must start with '/'");
    reject(OAS3(TOP("http://h"), "{'/a/{':{'get':{}}}"),
           "/paths/~1a~1{/get: invalid path template \"/a/{\": unclosed '{'");
    reject(OAS3(TOP("http://h"), "{'/a/{}':{'get':{}}}"),
           "empty parameter name");
    reject(OAS3(TOP("http://h"), "{'/a//b':{'get':{}}}"),
           "empty path segment");
    reject(OAS3(TOP("http://h"), "{'/a':[]}"),
           "/paths/~1a: must be an object");
    reject(OAS3(TOP("http://h"), "{'/a':{'get':true}}"),
           "/paths/~1a/get: must be an object");
    reject(OAS3(TOP("http://h"), "{'/a':{'GET':{}}}"),
           "/paths/~1a/GET: unknown operation");
    reject(OAS3(TOP("http://h"), "{'/a':{'$ref':'#/x'}}"),
           "/paths/~1a/$ref: $ref path items are not supported");
    reject(OAS3(TOP("http://h"),
                "{'/a':{'x-google-backend':{'address':'http://h'}}}"),
           "/paths/~1a/x-google-backend: x-google-backend belongs on");
    reject(OAS3(TOP("http://h"), "{'/users/{id}':{'get':{}},"
                                 "'/users/{uid}':{'get':{}}}"),
           "/paths/~1users~1{uid}/get: GET /users/{uid} has the same method "
           "and path as /paths/~1users~1{id}/get");

    /* the 3.x registry form */
    reject(OAS3(",'x-google-backend':'missing'", "{'/a':{'get':{}}}"),
           "/x-google-backend: backend \"missing\" is not defined in "
           "/x-google-api-management/backends");
    reject("{'openapi':{'openapi':'3.0.0','x-google-api-management':{"
           "'backends':{'b':{'address':'ftp://x'}}},'paths':{}}}",
           "/x-google-api-management/backends/b/address: not a valid URL");
    reject("{'openapi':{'openapi':'3.0.0','x-google-api-management':{"
           "'backends':[]},'paths':{}}}",
           "/x-google-api-management/backends: must be an object");

    /* Swagger basePath */
    reject("{'openapi':{'swagger':'2.0','basePath':'v1','paths':{}}}",
           "/basePath: must be a path starting with '/'");
    reject("{'openapi':{'swagger':'2.0','basePath':'/{v}','paths':{}}}",
           "/basePath:");

    /* hosts */
    reject("{'hosts':'a','openapi':{'openapi':'3.0.0','paths':{}}}",
           "/hosts: must be an array");
    reject("{'hosts':['a',7],'openapi':{'openapi':'3.0.0','paths':{}}}",
           "/hosts/1: not a valid host name");
    reject("{'hosts':['a:80'],'openapi':{'openapi':'3.0.0','paths':{}}}",
           "/hosts/0: not a valid host name");
    reject("{'hosts':['http://a'],'openapi':{'openapi':'3.0.0','paths':{}}}",
           "/hosts/0: not a valid host name");
    reject("{'hosts':['a.b','A.B'],'openapi':{'openapi':'3.0.0','paths':{}}}",
           "/hosts/1: duplicate host");
}

static void
test_address_parse(void **state)
{
    static const struct {
        const char *address, *host, *authority, *path;
        int port;
        bool tls, h2;
    } ok[] = {
        { "http://127.0.0.1:9000", "127.0.0.1", "127.0.0.1:9000", "", 9000,
          false, false },
        { "http://Example.COM/base/", "Example.COM", "example.com", "/base/",
          80, false, false },
        { "HTTP://h:80/x", "h", "h", "/x", 80, false, false },
        { "http://[::1]:8080/p", "::1", "[::1]:8080", "/p", 8080, false,
          false },
        { "http://[::1]", "::1", "[::1]", "", 80, false, false },
        { "https://api.example.com/v1", "api.example.com", "api.example.com",
          "/v1", 443, true, false },
        { "https://h:8443", "h", "h:8443", "", 8443, true, false },
        { "grpc://127.0.0.1:50051", "127.0.0.1", "127.0.0.1:50051", "", 50051,
          false, true },
        { "grpcs://g.example.com", "g.example.com", "g.example.com", "", 443,
          true, true },
    };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        gw_backend b;
        const char *why;

        memset(&b, 0, sizeof(b));
        why = gw__address_parse(ok[i].address, &b);
        if (why != NULL)
            fail_msg("%s: %s", ok[i].address, why);
        assert_null(b.service);
        assert_string_equal(b.host, ok[i].host);
        assert_string_equal(b.authority, ok[i].authority);
        assert_string_equal(b.path, ok[i].path);
        assert_int_equal(b.port, ok[i].port);
        assert_int_equal(b.tls, ok[i].tls);
        assert_int_equal(b.h2, ok[i].h2);
        free(b.host);
        free(b.authority);
        free(b.path);
    }
    {
        gw_backend b;
        memset(&b, 0, sizeof(b));
        assert_null(gw__address_parse("service://hello-2/api", &b));
        assert_string_equal(b.service, "hello-2");
        assert_string_equal(b.path, "/api");
        assert_null(b.host);
        assert_null(b.tag);
        free(b.service);
        free(b.path);
    }
}

/* service://NAME@TAG pins the tagged revision; a tag is an RFC 1035 label
 * short enough for TAG---SERVICE to be one. */
static void
test_address_tag(void **state)
{
    static const struct {
        const char *address, *service, *tag, *path;
    } ok[] = {
        { "service://hello@green", "hello", "green", "" },
        { "service://hello@v2-canary/api/v1", "hello", "v2-canary",
          "/api/v1" },
        { "service://h@a012345678901234567890123456789012345678901234",
          "h", "a012345678901234567890123456789012345678901234", "" },
    };
    static const char *const bad[] = {
        "service://hello@", "service://hello@/x", "service://hello@Green",
        "service://hello@9lives", "service://hello@green-",
        "service://hello@gr_een", "service://hello@a@b",
        "service://hello@a0123456789012345678901234567890123456789012345",
        "service://@green",
    };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        gw_backend b;
        const char *why;
        memset(&b, 0, sizeof(b));
        if ((why = gw__address_parse(ok[i].address, &b)) != NULL)
            fail_msg("%s: %s", ok[i].address, why);
        assert_string_equal(b.service, ok[i].service);
        assert_string_equal(b.tag, ok[i].tag);
        assert_string_equal(b.path, ok[i].path);
        free(b.service);
        free(b.tag);
        free(b.path);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_backend b;
        memset(&b, 0, sizeof(b));
        if (gw__address_parse(bad[i], &b) == NULL)
            fail_msg("%s accepted", bad[i]);
        free(b.service);
        free(b.tag);
        free(b.path);
    }
    /* refused when the spec is checked, with the pointer */
    reject("{'openapi':{'openapi':'3.0.3','paths':{'/a':{'get':{"
           "'x-google-backend':{'address':'service://hello@Blue'}}}}}}",
           "/paths/~1a/get/x-google-backend/address: not a valid "
           "URL: service://NAME@TAG needs a tag");
}

/* ------------------------------------------------------------------------ */
/* Path translation                                                          */

static void
test_translation_defaults(void **state)
{
    /* top level: APPEND_PATH_TO_ADDRESS by default */
    const char *top = OAS3(TOP("http://127.0.0.1:9000/base"),
                           "{'/users/{id}':{'get':{}}}");
    /* operation level: CONSTANT_ADDRESS by default (Google's example) */
    const char *op = OAS3(TOP("http://127.0.0.1:9000/base"),
                          "{'/api/company/{cid}/user/{uid}':{'get':{"
                          "'x-google-backend':{'address':"
                          "'http://127.0.0.1:9001/getUser'}}}}");

    assert_target(top, "GET", "/users/42", "", "/base/users/42");
    assert_target(top, "GET", "/users/42", "x=1&y", "/base/users/42?x=1&y");
    assert_target(top, "HEAD", "/users/a%2Fb", "", "/base/users/a%2Fb");
    assert_target(op, "GET", "/api/company/widgetworks/user/johndoe", "",
                  "/getUser?cid=widgetworks&uid=johndoe");
    assert_target(op, "GET", "/api/company/widgetworks/user/johndoe",
                  "timezone=EST",
                  "/getUser?timezone=EST&cid=widgetworks&uid=johndoe");
}

static void
test_translation_explicit(void **state)
{
    /* explicit modes override the defaults in both places */
    const char *top_const = OAS3(
        ",'x-google-backend':{'address':'http://h/fn',"
        "'path_translation':'CONSTANT_ADDRESS'}",
        "{'/items/{id}':{'get':{}}}");
    const char *op_append = OAS3(
        "", "{'/items/{id}':{'get':{'x-google-backend':{'address':"
            "'http://h/v2/','path_translation':'APPEND_PATH_TO_ADDRESS'}}}}");
    const char *no_path = OAS3(
        "", "{'/items/{id}':{'get':{'x-google-backend':{'address':"
            "'http://h:81'}}},'/plain':{'get':{'x-google-backend':"
            "{'address':'http://h:81'}}}}");
    const char *append_root = OAS3(TOP("http://h"), "{'/':{'get':{}}}");

    assert_target(top_const, "GET", "/items/7", "", "/fn?id=7");
    assert_target(op_append, "GET", "/items/7", "q=1", "/v2/items/7?q=1");
    assert_target(no_path, "GET", "/items/7", "", "/?id=7");
    assert_target(no_path, "GET", "/plain", "a=b", "/?a=b");
    assert_target(no_path, "GET", "/plain", "", "/");
    assert_target(append_root, "GET", "/", "", "/");
}

static void
test_translation_param_encoding(void **state)
{
    const char *spec = OAS3(
        "", "{'/f/{name}/{rest=**}':{'get':{'x-google-backend':{'address':"
            "'http://h/fn'}}},'/t/{topic}:publish':{'post':{"
            "'x-google-backend':{'address':'http://h/pub'}}}}");

    /* raw path bytes stay encoded; '&', '=', '+' must not split params */
    assert_target(spec, "GET", "/f/a%2Fb&c=d+e/x/y", "",
                  "/fn?name=a%2Fb%26c%3Dd%2Be&rest=x/y");
    assert_target(spec, "POST", "/t/news:publish", "", "/pub?topic=news");
}

static void
test_translation_registry_and_swagger(void **state)
{
    const char *reg =
        "{'openapi':{'openapi':'3.0.4','x-google-api-management':{"
        "'backends':{'plain':{'address':'http://h/b'},"
        "'fixed':{'address':'http://h/f','pathTranslation':"
        "'APPEND_PATH_TO_ADDRESS'}}},"
        "'x-google-backend':'plain',"
        "'paths':{'/top/{id}':{'get':{}},"
        "'/op/{id}':{'get':{'x-google-backend':'plain'}},"
        "'/fixed/{id}':{'get':{'x-google-backend':'fixed'}}}}}";
    const char *sw =
        "{'openapi':{'swagger':'2.0','basePath':'/v1/','x-google-backend':"
        "{'address':'http://h/up'},'paths':{'/users/{id}':{'get':{}},"
        "'/':{'get':{}}}}}";
    gw_spec *s;

    /* the same named backend: APPEND where the document references it,
     * CONSTANT where an operation does, unless it says otherwise */
    assert_target(reg, "GET", "/top/1", "", "/b/top/1");
    assert_target(reg, "GET", "/op/1", "", "/b?id=1");
    assert_target(reg, "GET", "/fixed/1", "", "/f/fixed/1");
    /* basePath prefixes every path; APPEND sends the whole request path */
    assert_target(sw, "GET", "/v1/users/5", "", "/up/v1/users/5");
    assert_target(sw, "GET", "/v1", "", "/up/v1");
    s = compile_ok(sw, "p", "g");
    assert_int_equal(s->nroutes, 2);
    assert_string_equal(s->routes[0].template, "/v1/users/{id}");
    assert_string_equal(s->routes[0].label, "GET /v1/users/{id}");
    assert_string_equal(s->routes[0].pointer, "/paths/~1users~1{id}/get");
    assert_int_equal(s->routes[0].backend->deadline_ms, 15000);
    gw__spec_unref(s);
}

/* ------------------------------------------------------------------------ */
/* Hosts, conflicts, swap                                                    */

#define HOSTED(hosts, addr, paths) \
    "{'hosts':" hosts ",'openapi':{'openapi':'3.0.0'" TOP(addr) \
    ",'paths':" paths "}}"

static void
test_host_selection(void **state)
{
    gw_spec *s[3];
    gw_table *t;
    kb_route_match m;
    const gw_route *r;

    s[0] = compile_ok(HOSTED("['qa.localhost','[::1]']", "http://qa",
                             "{'/x':{'get':{}},'/only-qa':{'get':{}}}"),
                      "p", "qa");
    s[1] = compile_ok(HOSTED("[]", "http://default",
                             "{'/x':{'get':{}}}"), "p", "default");
    s[2] = compile_ok(HOSTED("['other.test']", "http://other",
                             "{'/x':{'get':{}}}"), "q", "other");
    assert_int_equal(gw__table_build(s, 3, NULL, &t, NULL, 0), 0);

    r = route_for(t, "QA.LocalHost:8080", "GET", "/x", &m);
    assert_string_equal(r->backend->host, "qa");
    assert_string_equal(r->spec->id, "p/qa");
    r = route_for(t, "qa.localhost.", "GET", "/only-qa", &m);
    assert_string_equal(r->backend->host, "qa");
    r = route_for(t, "[::1]:8080", "GET", "/x", &m);
    assert_string_equal(r->backend->host, "qa");
    r = route_for(t, "other.test", "GET", "/x", &m);
    assert_string_equal(r->backend->host, "other");
    r = route_for(t, "unknown.test:80", "GET", "/x", &m);
    assert_string_equal(r->backend->host, "default");
    r = route_for(t, NULL, "GET", "/x", &m);     /* HTTP/1.0, no Host */
    assert_string_equal(r->backend->host, "default");
    /* a named host sees only its gateways' routes, and vice versa */
    assert_int_equal(kb_router_match(gw__table_router(t, "other.test"),
                                     "GET", "/only-qa", 8, &m), 404);
    assert_int_equal(kb_router_match(gw__table_router(t, "x"),
                                     "GET", "/only-qa", 8, &m), 404);
    gw__table_unref(t);
    for (int i = 0; i < 3; i++)
        gw__spec_unref(s[i]);
}

static kb_gateway *
gateway_new(void)
{
    kb_gateway *gw = NULL;

    assert_int_equal(kb_gateway_create(NULL, NULL, NULL, &gw), 0);
    return gw;
}

static int
set_text(kb_gateway *gw, const char *project, const char *name,
         const char *text, char *err, size_t errlen)
{
    json_t *spec = J(text);
    int rc = kb_gateway_set(gw, project, name, spec, err, errlen);

    json_decref(spec);
    return rc;
}

static void
test_conflicts(void **state)
{
    kb_gateway *gw = gateway_new();
    char err[512];
    gw_table *before;
    kb_route_match m;

    assert_int_equal(set_text(gw, "p", "a", HOSTED("[]", "http://a",
                              "{'/users/{id}':{'get':{}}}"), err,
                              sizeof(err)), 0);
    /* two host-less gateways, same method and path shape: refused */
    before = gw->table;
    assert_int_equal(set_text(gw, "p", "b", HOSTED("[]", "http://b",
                              "{'/users/{uid}':{'get':{}}}"), err,
                              sizeof(err)), KB_EEXIST);
    assert_non_null(strstr(err, "/paths/~1users~1{uid}/get: GET "
                                "/users/{uid} conflicts with gateway p/a"));
    assert_ptr_equal(gw->table, before);         /* nothing changed */
    assert_int_equal(gw->nspecs, 1);
    /* another method, or a named host, is fine */
    assert_int_equal(set_text(gw, "p", "b", HOSTED("[]", "http://b",
                              "{'/users/{uid}':{'put':{}}}"), err,
                              sizeof(err)), 0);
    assert_int_equal(set_text(gw, "q", "c", HOSTED("['c.test']", "http://c",
                              "{'/users/{id}':{'get':{}}}"), err,
                              sizeof(err)), 0);
    /* two gateways naming the same host conflict too */
    assert_int_equal(set_text(gw, "q", "d", HOSTED("['C.test']", "http://d",
                              "{'/users/{x}':{'get':{}}}"), err,
                              sizeof(err)), KB_EEXIST);
    assert_non_null(strstr(err, "conflicts with gateway q/c"));
    assert_non_null(strstr(err, "for host \"c.test\""));
    /* replacing a gateway never conflicts with its old self */
    assert_int_equal(set_text(gw, "p", "a", HOSTED("[]", "http://a2",
                              "{'/users/{name}':{'get':{}}}"), err,
                              sizeof(err)), 0);
    assert_int_equal(gw->nspecs, 3);
    assert_int_equal(kb_router_match(gw__table_router(gw->table, NULL),
                                     "GET", "/users/1", 8, &m), 200);
    assert_string_equal(((const gw_route *)m.target)->backend->host, "a2");
    /* an invalid spec is KB_EINVAL and changes nothing */
    before = gw->table;
    assert_int_equal(set_text(gw, "p", "a", "{'openapi':{}}", err,
                              sizeof(err)), KB_EINVAL);
    assert_ptr_equal(gw->table, before);
    kb_gateway_free(gw);
}

static void
test_atomic_swap_and_remove(void **state)
{
    kb_gateway *gw = gateway_new();
    char err[512];
    gw_table *held;
    kb_route_match m;

    assert_int_equal(set_text(gw, "p", "g", HOSTED("[]", "http://old",
                              "{'/v/{id}':{'get':{}}}"), err, sizeof(err)),
                     0);
    /* what an in-flight request does: keep a reference */
    held = gw__table_ref(gw->table);
    assert_int_equal(set_text(gw, "p", "g", HOSTED("[]", "http://new",
                              "{'/w':{'get':{}}}"), err, sizeof(err)), 0);
    assert_ptr_not_equal(gw->table, held);
    /* the held table still routes (and its spec and backend are alive) */
    assert_int_equal(kb_router_match(gw__table_router(held, NULL), "GET",
                                     "/v/1", 4, &m), 200);
    assert_string_equal(((const gw_route *)m.target)->backend->host, "old");
    assert_string_equal(((const gw_route *)m.target)->label, "GET /v/{id}");
    /* the new one does not have the old route */
    assert_int_equal(kb_router_match(gw__table_router(gw->table, NULL), "GET",
                                     "/v/1", 4, &m), 404);
    assert_int_equal(kb_router_match(gw__table_router(gw->table, NULL), "GET",
                                     "/w", 2, &m), 200);
    gw__table_unref(held);       /* last reference: freed (ASan checks) */

    assert_int_equal(kb_gateway_remove(gw, "p", "nope"), KB_ENOTFOUND);
    assert_int_equal(kb_gateway_remove(gw, "p", "g"), 0);
    assert_int_equal(kb_router_match(gw__table_router(gw->table, NULL), "GET",
                                     "/w", 2, &m), 404);
    assert_int_equal(gw->nspecs, 0);
    kb_gateway_free(gw);
}

/* ------------------------------------------------------------------------ */
/* Header helpers                                                            */

static void
test_hop_by_hop(void **state)
{
    assert_true(gw__hop_by_hop("connection", NULL));
    assert_true(gw__hop_by_hop("Keep-Alive", NULL));
    assert_true(gw__hop_by_hop("proxy-connection", NULL));
    assert_true(gw__hop_by_hop("TE", NULL));
    assert_true(gw__hop_by_hop("Trailer", NULL));
    assert_true(gw__hop_by_hop("transfer-encoding", NULL));
    assert_true(gw__hop_by_hop("Upgrade", NULL));
    assert_false(gw__hop_by_hop("Content-Type", NULL));
    assert_false(gw__hop_by_hop("Trailers", NULL));
    /* and whatever Connection lists */
    assert_true(gw__hop_by_hop("X-Secret", "keep-alive, x-secret"));
    assert_true(gw__hop_by_hop("x-b", "x-a,X-B"));
    assert_false(gw__hop_by_hop("X-Sec", "x-secret"));
    assert_false(gw__hop_by_hop("X-Secret", "close"));
}

static void
test_request_id(void **state)
{
    char id129[130];

    assert_true(gw__request_id_ok("abc-DEF_1.2"));
    assert_false(gw__request_id_ok(NULL));
    assert_false(gw__request_id_ok(""));
    assert_false(gw__request_id_ok("a b"));
    assert_false(gw__request_id_ok("a/b"));
    assert_false(gw__request_id_ok("é"));
    memset(id129, 'a', 128);
    id129[128] = '\0';
    assert_true(gw__request_id_ok(id129));
    id129[128] = 'a';
    id129[129] = '\0';
    assert_false(gw__request_id_ok(id129));
}

static bool
traceparent_shape(const char *t)
{
    if (strlen(t) != 55 || strncmp(t, "00-", 3) != 0 || t[35] != '-' ||
        t[52] != '-')
        return false;
    for (int i = 3; i < 55; i++)
        if (i != 35 && i != 52 && !strchr("0123456789abcdef", t[i]))
            return false;
    return strncmp(t + 3, "00000000000000000000000000000000", 32) != 0 &&
           strncmp(t + 36, "0000000000000000", 16) != 0;
}

static void
test_traceparent(void **state)
{
    static const char in[] =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    static const char *bad[] = {
        NULL, "", "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    char out[56], out2[56];
    bool cont;

    gw__traceparent(in, out, &cont);
    assert_true(cont);
    assert_true(traceparent_shape(out));
    assert_memory_equal(out, in, 36);                 /* same trace id */
    assert_memory_not_equal(out + 36, in + 36, 16);   /* new parent id */
    assert_string_equal(out + 52, "-01");             /* flags kept */
    /* a later version with extra fields is continued as version 00 */
    gw__traceparent(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
        out, &cont);
    assert_true(cont);
    assert_memory_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
    assert_string_equal(out + 52, "-00");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw__traceparent(bad[i], out, &cont);
        assert_false(cont);
        assert_true(traceparent_shape(out));
        gw__traceparent(bad[i], out2, &cont);
        assert_memory_not_equal(out + 3, out2 + 3, 32); /* fresh traces */
    }
}

/* ------------------------------------------------------------------------ */
/* End to end: raw TCP client → gateway listener → echo backend              */

static int
e2e_setup(void **state)
{
    char spec_text[4096];

    e2e_boot();
    snprintf(spec_text, sizeof(spec_text),
        "{'openapi':{'openapi':'3.0.3',"
        "'x-google-backend':{'address':'http://127.0.0.1:%d'},"
        "'paths':{"
        "'/echo/{id}':{'get':{},'post':{}},"
        "'/const/{id}':{'get':{'x-google-backend':{'address':"
        "  'http://127.0.0.1:%d/fn'}}},"
        "'/slow':{'get':{'x-google-backend':{'address':"
        "  'http://127.0.0.1:%d/slow','deadline':0.2}}},"
        "'/slow-long':{'get':{'x-google-backend':{'address':"
        "  'http://127.0.0.1:%d/slow','deadline':10}}},"
        "'/refused':{'get':{'x-google-backend':{'address':"
        "  'http://127.0.0.1:%d'}}},"
        "'/garbage':{'get':{'x-google-backend':{'address':"
        "  'http://127.0.0.1:%d'}}},"
        "'/svc/{id}':{'get':{'x-google-backend':{'address':'service://echo',"
        "  'path_translation':'APPEND_PATH_TO_ADDRESS'}}},"
        "'/ghost':{'get':{'x-google-backend':{'address':'service://ghost'}}},"
        "'/down':{'get':{'x-google-backend':{'address':'service://down'}}}"
        "}}}",
        E.backend_port, E.backend_port, E.backend_port, E.backend_port,
        E.closed_port, E.garbage_port);
    e2e_install("e2e", spec_text);
    *state = &E;
    return 0;
}

static int
e2e_teardown(void **state)
{
    (void)state;
    e2e_stop();
    return 0;
}

static void
test_e2e_forwarding(void **state)
{
    reply r;
    char want_xfh[64], want_host[64];

    exchange("GET /echo/42?x=1 HTTP/1.1\n"
             "Host: gw.test\n"
             "X-Forwarded-For: 10.0.0.1\n"
             "X-Forwarded-For: 10.0.0.2\n"
             "X-Request-Id: req-123.abc\n"
             "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"
             "00f067aa0ba902b7-01\n"
             "tracestate: k=v\n"
             "X-Forwarded-Proto: https\n"
             "Keep-Alive: timeout=9\n"
             "X-Private: secret\n"
             "Upgrade: websocket\n"
             "X-Kept: yes\n"
             "Connection: close, X-Private\n\n", false, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(json_string_value(json_object_get(r.json, "method")),
                        "GET");
    /* APPEND_PATH_TO_ADDRESS: the whole path and query */
    assert_string_equal(json_string_value(json_object_get(r.json, "target")),
                        "/echo/42?x=1");
    /* what the gateway adds */
    assert_string_equal(echoed(&r, "x-forwarded-for"),
                        "10.0.0.1, 10.0.0.2, 127.0.0.1");
    assert_string_equal(echoed(&r, "x-forwarded-proto"), "http");
    assert_string_equal(echoed(&r, "x-forwarded-host"), "gw.test");
    assert_string_equal(echoed(&r, "x-request-id"), "req-123.abc");
    snprintf(want_host, sizeof(want_host), "127.0.0.1:%d", E.backend_port);
    snprintf(want_xfh, sizeof(want_xfh), "%s", echoed(&r, "host"));
    assert_string_equal(want_xfh, want_host);
    /* trace propagated: same trace id and flags, new parent */
    assert_true(traceparent_shape(echoed(&r, "traceparent")));
    assert_memory_equal(echoed(&r, "traceparent"),
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
    assert_string_not_equal(echoed(&r, "traceparent") + 36,
                            "00f067aa0ba902b7-01");
    assert_string_equal(echoed(&r, "traceparent") + 52, "-01");
    assert_string_equal(echoed(&r, "tracestate"), "k=v");
    /* hop-by-hop and Connection-listed headers are not forwarded */
    assert_null(echoed(&r, "keep-alive"));
    assert_null(echoed(&r, "x-private"));
    assert_null(echoed(&r, "upgrade"));
    assert_string_equal(echoed(&r, "x-kept"), "yes");
    /* the response: backend headers minus hop-by-hop, our request id */
    assert_string_equal(reply_header(&r, "X-Backend"), "yes");
    assert_null(reply_header(&r, "Keep-Alive"));
    assert_string_equal(reply_header(&r, "X-Request-Id"), "req-123.abc");
    reply_free(&r);
}

static void
test_e2e_generated_ids(void **state)
{
    reply r;
    const char *tp;

    exchange("GET /echo/1 HTTP/1.1\nHost: gw.test\n"
             "X-Request-Id: bad id with spaces\n"
             "traceparent: 00-zzzz\n"
             "tracestate: stale=1\n"
             "Connection: close\n\n", false, &r);
    assert_int_equal(r.status, 200);
    /* a fresh 32-hex request id, the same both ways */
    assert_int_equal(strlen(echoed(&r, "x-request-id")), 32);
    assert_true(strspn(echoed(&r, "x-request-id"), "0123456789abcdef") == 32);
    assert_string_equal(reply_header(&r, "X-Request-Id"),
                        echoed(&r, "x-request-id"));
    /* a new trace; the old tracestate is not carried into it */
    tp = echoed(&r, "traceparent");
    assert_true(traceparent_shape(tp));
    assert_string_equal(tp + 52, "-00");
    assert_null(echoed(&r, "tracestate"));
    /* no X-Forwarded-For before: just the client */
    assert_string_equal(echoed(&r, "x-forwarded-for"), "127.0.0.1");
    reply_free(&r);
}

static void
test_e2e_constant_and_body(void **state)
{
    reply r;

    exchange("GET /const/a%2Fb&c?tz=EST HTTP/1.1\nHost: x\n"
             "Connection: close\n\n", false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "target")),
                        "/fn?tz=EST&id=a%2Fb%26c");
    reply_free(&r);

    exchange("POST /echo/9 HTTP/1.1\nHost: x\nContent-Type: text/plain\n"
             "Content-Length: 11\nConnection: close\n\nhello world", false,
             &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "method")),
                        "POST");
    assert_string_equal(json_string_value(json_object_get(r.json, "body")),
                        "hello world");
    assert_string_equal(echoed(&r, "content-type"), "text/plain");
    assert_string_equal(echoed(&r, "content-length"), "11");
    reply_free(&r);
}

static void
test_e2e_route_errors(void **state)
{
    reply r;

    exchange("GET /nope HTTP/1.1\nHost: x\nConnection: close\n\n", false, &r);
    assert_error(&r, 404, "NOT_FOUND", "no route for GET /nope");
    reply_free(&r);
    exchange("DELETE /echo/1 HTTP/1.1\nHost: x\nConnection: close\n\n", false,
             &r);
    assert_error(&r, 405, kb_http_status_name(405), "DELETE");
    assert_string_equal(reply_header(&r, "Allow"), "GET, HEAD, POST");
    reply_free(&r);
    exchange("GET /echo//1 HTTP/1.1\nHost: x\nConnection: close\n\n", false,
             &r);
    assert_error(&r, 404, "NOT_FOUND", "no route");
    reply_free(&r);
    exchange("GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n", false,
             &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")),
                        "ok");
    reply_free(&r);
}

static void
test_e2e_upstream_errors(void **state)
{
    reply r;

    exchange("GET /refused HTTP/1.1\nHost: x\nConnection: close\n\n", false,
             &r);
    assert_error(&r, 502, kb_http_status_name(502), "upstream");
    reply_free(&r);
    exchange("GET /garbage HTTP/1.1\nHost: x\nConnection: close\n\n", false,
             &r);
    assert_error(&r, 502, kb_http_status_name(502), "upstream");
    reply_free(&r);
    exchange("GET /slow HTTP/1.1\nHost: x\nConnection: close\n\n", false, &r);
    assert_error(&r, 504, "DEADLINE_EXCEEDED", "deadline");
    reply_free(&r);
    exchange("GET /ghost HTTP/1.1\nHost: x\nConnection: close\n\n", false, &r);
    assert_error(&r, 502, kb_http_status_name(502), "service ghost not found");
    reply_free(&r);
    exchange("GET /down HTTP/1.1\nHost: x\nConnection: close\n\n", false, &r);
    assert_error(&r, 503, kb_http_status_name(503),
                 "service down has no running instance");
    reply_free(&r);
}

static void
test_e2e_service_backend(void **state)
{
    reply r;
    char want[64];

    exchange("GET /svc/7?q=1 HTTP/1.1\nHost: x\nConnection: close\n\n", false,
             &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "target")),
                        "/svc/7?q=1");
    snprintf(want, sizeof(want), "127.0.0.1:%d", E.backend_port);
    assert_string_equal(echoed(&r, "host"), want);
    reply_free(&r);
}

static void
test_e2e_client_abort_cancels_upstream(void **state)
{
    reply r;

    E.backend_aborted = false;
    exchange("GET /slow-long HTTP/1.1\nHost: x\nConnection: close\n\n", true,
             &r);
    /* the backend sees its connection go long before its 1.5 s answer */
    for (int i = 0; i < 100 && !E.backend_aborted; i++) {
        uv_run(&E.loop, UV_RUN_NOWAIT);
        usleep(10 * 1000);
    }
    assert_true(E.backend_aborted);
    assert_int_equal(kb_http_server_inflight(E.listener), 0);
}

static void
test_e2e_metrics(void **state)
{
    kb_buf out = KB_BUF_INIT(1 << 22);
    const char *text;

    assert_int_equal(kb_metrics_render(&out), 0);
    text = kb_buf_cstr(&out);
    assert_non_null(strstr(text, "kiban_gateway_requests_total{gateway=\"p/"
                                 "e2e\",route=\"GET /echo/{id}\",code=\"2xx\"}"));
    assert_non_null(strstr(text, "kiban_gateway_requests_total{gateway=\"p/"
                                 "e2e\",route=\"GET /slow\",code=\"5xx\"}"));
    assert_non_null(strstr(text, "kiban_gateway_requests_total{route=\"(none)"
                                 "\",code=\"4xx\"}"));
    assert_non_null(strstr(text, "kiban_gateway_upstream_duration_seconds_"
                                 "count{gateway=\"p/e2e\",route=\"GET "
                                 "/echo/{id}\"}"));
    kb_buf_free(&out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_good),
        cmocka_unit_test(test_validate_bad),
        cmocka_unit_test(test_address_parse),
        cmocka_unit_test(test_address_tag),
        cmocka_unit_test(test_translation_defaults),
        cmocka_unit_test(test_translation_explicit),
        cmocka_unit_test(test_translation_param_encoding),
        cmocka_unit_test(test_translation_registry_and_swagger),
        cmocka_unit_test(test_host_selection),
        cmocka_unit_test(test_conflicts),
        cmocka_unit_test(test_atomic_swap_and_remove),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_traceparent),
    };
    const struct CMUnitTest e2e_tests[] = {
        cmocka_unit_test(test_e2e_forwarding),
        cmocka_unit_test(test_e2e_generated_ids),
        cmocka_unit_test(test_e2e_constant_and_body),
        cmocka_unit_test(test_e2e_route_errors),
        cmocka_unit_test(test_e2e_upstream_errors),
        cmocka_unit_test(test_e2e_service_backend),
        cmocka_unit_test(test_e2e_client_abort_cancels_upstream),
        cmocka_unit_test(test_e2e_metrics),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);

    failed += cmocka_run_group_tests_name("gateway end to end", e2e_tests,
                                          e2e_setup, e2e_teardown);
    return failed;
}
