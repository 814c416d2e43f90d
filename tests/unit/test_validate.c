/*
 * test_validate.c - request validation (src/gateway/validate.c, schema.c,
 * schema_check.c): the schema compiler and its refusals with JSON
 * pointers, every keyword passing and failing, and whole requests
 * (parameters of Swagger 2.0 and OpenAPI 3.x, bodies, media types)
 * through the same check the `validate` stage runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <pthread.h>

#include "gateway/validate.c"

/* ------------------------------------------------------------------------ */
/* Schemas on their own                                                      */

/* Compile `schema` (inside a document whose components/definitions are
 * `defs`) and check `value`: returns validate's rc, message in msg. */
static int
schema_run(const char *dialect_doc, const char *schema, const char *value,
           char *msg, size_t msglen)
{
    json_t *doc = J(dialect_doc), *sch = J(schema), *val = J(value);
    gw_schema_set *set;
    const gw_schema *s;
    gw_dialect d = json_object_get(doc, "swagger") != NULL
                       ? GW_DIALECT_SWAGGER2
                   : strncmp(json_string_value(json_object_get(doc,
                                                               "openapi")),
                             "3.1", 3) == 0
                       ? GW_DIALECT_OAS31 : GW_DIALECT_OAS30;
    char err[512] = "";
    int rc;

    assert_int_equal(gw__schema_set_create(doc, d, &set), 0);
    rc = gw__schema_compile(set, sch, "/s", &s, err, sizeof(err));
    if (rc != 0)
        fail_msg("schema rejected: %s\n%s", err, schema);
    msg[0] = '\0';
    rc = gw__schema_validate(s, val, "body", msg, msglen);
    gw__schema_set_unref(set);
    json_decref(doc);
    json_decref(sch);
    json_decref(val);
    return rc;
}

#define DOC30 "{'openapi':'3.0.3','components':{'schemas':{}}}"
#define DOC31 "{'openapi':'3.1.0'}"

static void
ok_in(const char *doc, const char *schema, const char *value)
{
    char msg[512];
    int rc = schema_run(doc, schema, value, msg, sizeof(msg));

    if (rc != 0)
        fail_msg("schema %s\nvalue %s\nrejected (%d): %s", schema, value, rc,
                 msg);
}

static void
bad_in(const char *doc, const char *schema, const char *value,
       const char *want)
{
    char msg[512];
    int rc = schema_run(doc, schema, value, msg, sizeof(msg));

    if (rc == 0 || strstr(msg, want) == NULL)
        fail_msg("schema %s\nvalue %s\nrc %d msg \"%s\"\nwant \"%s\"", schema,
                 value, rc, msg, want);
}

#define OK(s, v)       ok_in(DOC30, s, v)
#define BAD(s, v, w)   bad_in(DOC30, s, v, w)

/* Compiling schema (in doc) must fail with `want` in the message. */
static void
refuse_in(const char *doc_text, const char *schema, const char *want)
{
    json_t *doc = J(doc_text), *sch = J(schema);
    gw_schema_set *set;
    const gw_schema *s;
    char err[512] = "";
    int rc;

    assert_int_equal(gw__schema_set_create(doc, GW_DIALECT_OAS30, &set), 0);
    rc = gw__schema_compile(set, sch, "/s", &s, err, sizeof(err));
    if (rc != KB_EINVAL || strstr(err, want) == NULL)
        fail_msg("schema %s\nrc %d err \"%s\"\nwant \"%s\"", schema, rc, err,
                 want);
    gw__schema_set_unref(set);
    json_decref(doc);
    json_decref(sch);
}

static void
test_types(void **state)
{
    (void)state;
    OK("{'type':'string'}", "'x'");
    BAD("{'type':'string'}", "1", "body: must be a string");
    OK("{'type':'integer'}", "3");
    OK("{'type':'integer'}", "3.0");           /* integral number */
    BAD("{'type':'integer'}", "3.5", "must be an integer");
    BAD("{'type':'integer'}", "'3'", "must be an integer");
    OK("{'type':'number'}", "3.5");
    OK("{'type':'number'}", "3");
    BAD("{'type':'number'}", "true", "must be a number");
    OK("{'type':'boolean'}", "false");
    BAD("{'type':'boolean'}", "0", "must be a boolean");
    OK("{'type':'object'}", "{}");
    BAD("{'type':'object'}", "[]", "must be an object");
    OK("{'type':'array'}", "[]");
    BAD("{'type':'array'}", "{}", "must be an array");
    BAD("{'type':'string'}", "null", "must be a string");
    /* 3.0 nullable */
    OK("{'type':'string','nullable':true}", "null");
    BAD("{'type':'string','nullable':true}", "2", "must be a string or null");
    OK("{'type':'string','nullable':true,'enum':['a']}", "null");
    /* 3.1 type arrays */
    ok_in(DOC31, "{'type':['integer','null']}", "null");
    ok_in(DOC31, "{'type':['integer','null']}", "7");
    bad_in(DOC31, "{'type':['integer','null']}", "'7'",
           "must be an integer or null");
    /* no type: anything */
    OK("{}", "[1,{'a':null}]");
    ok_in(DOC31, "true", "5");
    bad_in(DOC31, "false", "5", "no value is allowed here");
}

static void
test_enum_const(void **state)
{
    (void)state;
    OK("{'enum':['a','b',1]}", "'b'");
    OK("{'enum':['a','b',1]}", "1.0");         /* 1 == 1.0 */
    BAD("{'enum':['a','b']}", "'c'", "must be one of [\"a\",\"b\"]");
    OK("{'enum':[{'x':[1,2]}]}", "{'x':[1,2]}");
    BAD("{'enum':[{'x':[1,2]}]}", "{'x':[2,1]}", "must be one of");
    ok_in(DOC31, "{'const':'fixed'}", "'fixed'");
    bad_in(DOC31, "{'const':'fixed'}", "'other'", "must be \"fixed\"");
}

static void
test_numbers(void **state)
{
    (void)state;
    OK("{'minimum':1,'maximum':10}", "1");
    OK("{'minimum':1,'maximum':10}", "10");
    BAD("{'minimum':1}", "0", "must be >= 1");
    BAD("{'maximum':10}", "10.5", "must be <= 10");
    /* 2.0 / 3.0 boolean exclusives */
    BAD("{'minimum':1,'exclusiveMinimum':true}", "1", "must be > 1");
    OK("{'minimum':1,'exclusiveMinimum':true}", "1.01");
    BAD("{'maximum':10,'exclusiveMaximum':true}", "10", "must be < 10");
    OK("{'maximum':10,'exclusiveMaximum':false}", "10");
    /* 3.1 numeric exclusives */
    bad_in(DOC31, "{'exclusiveMinimum':0}", "0", "must be > 0");
    ok_in(DOC31, "{'exclusiveMaximum':5}", "4.99");
    bad_in(DOC31, "{'exclusiveMaximum':5}", "5", "must be < 5");
    OK("{'multipleOf':3}", "9");
    BAD("{'multipleOf':3}", "10", "must be a multiple of 3");
    OK("{'multipleOf':0.01}", "19.99");
    BAD("{'multipleOf':0.01}", "19.999", "must be a multiple of 0.01");
    OK("{'type':'integer','format':'int32'}", "2147483647");
    BAD("{'type':'integer','format':'int32'}", "2147483648",
        "must fit in 32 bits");
    BAD("{'type':'integer','format':'int32'}", "-2147483649",
        "must fit in 32 bits");
    OK("{'type':'integer','format':'int64'}", "9223372036854775807");
    BAD("{'type':'number','format':'int64'}", "1e19", "must fit in 64 bits");
}

static void
test_strings(void **state)
{
    (void)state;
    OK("{'minLength':2,'maxLength':3}", "'ab'");
    BAD("{'minLength':2}", "'a'", "must be at least 2 characters long");
    BAD("{'maxLength':3}", "'abcd'", "must be at most 3 characters long");
    /* code points, not bytes: three kanji are 9 bytes */
    OK("{'maxLength':3}", "'\\u57fa\\u76e4\\u5b9f'");
    BAD("{'maxLength':2}", "'\\u57fa\\u76e4\\u5b9f'", "at most 2");
    OK("{'pattern':'^[A-Z]{3}$'}", "'SFO'");
    BAD("{'pattern':'^[A-Z]{3}$'}", "'sfo'", "must match the pattern");
    /* unanchored, as ECMA-262 search */
    OK("{'pattern':'b+'}", "'abbbc'");
    /* ECMA escapes translated */
    OK("{'pattern':'^\\\\d{3}-\\\\w+$'}", "'123-ab_c'");
    BAD("{'pattern':'^\\\\d{3}$'}", "'12a'", "must match");
    OK("{'pattern':'^\\\\S+\\\\s\\\\S+$'}", "'a b'");
    BAD("{'pattern':'^\\\\S+$'}", "'a b'", "must match");
    OK("{'pattern':'^[\\\\w.-]+@[\\\\d]+$'}", "'a.b-c@42'");
    OK("{'pattern':'^[^\\\\]x]+$'}", "'abc'");
    BAD("{'pattern':'^[^\\\\]x]+$'}", "'a]c'", "must match");
    OK("{'pattern':'^\\\\.(?:js|css)$'}", "'.css'");
    BAD("{'pattern':'^\\\\.(?:js|css)$'}", "'xcss'", "must match");
    OK("{'pattern':'^a.*?z$'}", "'abcz'");        /* lazy = greedy here */
    OK("{'pattern':'^\\\\u00e9$'}", "'\\u00e9'");
}

static void
test_formats(void **state)
{
    static const struct {
        const char *format, *good, *bad;
    } cases[] = {
        { "date-time", "'2024-02-29T23:59:60.5+09:00'", "'2023-02-29T10:00:00Z'" },
        { "date-time", "'2024-01-01t00:00:00z'", "'2024-01-01T25:00:00Z'" },
        { "date-time", "'2024-01-01T00:00:00Z'", "'2024-01-01T00:00:00'" },
        { "date", "'2000-02-29'", "'1900-02-29'" },
        { "date", "'2024-12-31'", "'2024-1-31'" },
        { "time", "'10:20:30Z'", "'10:20'" },
        { "email", "'a.b+c@example.co.jp'", "'a b@example.com'" },
        { "email", "'x@example.com'", "'x@localhost'" },
        { "uuid", "'123e4567-e89b-12d3-a456-426614174000'",
          "'123e4567e89b12d3a456426614174000'" },
        { "ipv4", "'192.168.0.1'", "'256.1.1.1'" },
        { "ipv4", "'10.0.0.1'", "'10.0.0'" },
        { "ipv6", "'::1'", "'1::2::3'" },
        { "ipv6", "'2001:db8::ff00:42:8329'", "'192.168.0.1'" },
        { "uri", "'https://example.com/a?b=c#d'", "'/relative/path'" },
        { "uri", "'urn:isbn:0451450523'", "'http://exa mple.com'" },
        { "hostname", "'api.example.com'", "'-bad-.example.com'" },
        { "byte", "'aGVsbG8='", "'aGVsbG8'" },
    };
    char schema[128], msg[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(schema, sizeof(schema), "{'type':'string','format':'%s'}",
                 cases[i].format);
        OK(schema, cases[i].good);
        snprintf(msg, sizeof(msg), "must be a valid %s", cases[i].format);
        BAD(schema, cases[i].bad, msg);
    }
    /* unknown formats are annotations */
    OK("{'type':'string','format':'color'}", "'anything'");
    /* formats only constrain their own type */
    OK("{'format':'date'}", "12");
}

static void
test_arrays(void **state)
{
    (void)state;
    OK("{'type':'array','items':{'type':'integer'}}", "[1,2,3]");
    BAD("{'type':'array','items':{'type':'integer'}}", "[1,'2',3]",
        "body[1]: must be an integer");
    BAD("{'minItems':2}", "[1]", "must have at least 2 items");
    BAD("{'maxItems':1}", "[1,2]", "must have at most 1 items");
    OK("{'uniqueItems':true}", "[1,2,'1',{'a':1},{'a':2}]");
    BAD("{'uniqueItems':true}", "[1,2,1.0]",
        "items must be unique (items 0 and 2 are equal)");
    BAD("{'uniqueItems':true}", "[{'a':[1]},{'a':[1]}]", "must be unique");
    OK("{'uniqueItems':false}", "[1,1]");
}

static void
test_objects(void **state)
{
    const char *book =
        "{'type':'object','required':['name','author'],"
        " 'properties':{'name':{'type':'string'},"
        "  'author':{'type':'string'},"
        "  'year':{'type':'integer','minimum':0},"
        "  'tags':{'type':'array','items':{'type':'object',"
        "    'properties':{'label':{'type':'string','maxLength':5}}}}}}";

    (void)state;
    OK(book, "{'name':'n','author':'a','extra':true}");
    BAD(book, "{'name':'n'}", "body.author: required");
    BAD(book, "{'name':'n','author':7}", "body.author: must be a string");
    BAD(book, "{'name':'n','author':'a','year':-1}", "body.year: must be >= 0");
    BAD(book, "{'name':'n','author':'a','tags':[{'label':'ok'},"
              "{'label':'too long'}]}",
        "body.tags[1].label: must be at most 5 characters long");
    BAD("{'additionalProperties':false,'properties':{'a':{}}}",
        "{'a':1,'b':2}", "body.b: unknown property");
    OK("{'additionalProperties':{'type':'integer'},'properties':{'a':{}}}",
       "{'a':'x','b':2}");
    BAD("{'additionalProperties':{'type':'integer'}}", "{'b c':'x'}",
        "body[\"b c\"]: must be an integer");
    BAD("{'minProperties':1}", "{}", "must have at least 1 properties");
    BAD("{'maxProperties':1}", "{'a':1,'b':2}", "at most 1 properties");
    /* properties only apply to objects */
    OK("{'properties':{'a':{'type':'string'}}}", "5");
    /* readOnly: rejected in requests, not required */
    OK("{'required':['id','n'],'properties':{'id':{'type':'string',"
       "'readOnly':true},'n':{}}}", "{'n':1}");
    BAD("{'properties':{'id':{'readOnly':true}}}", "{'id':'x'}",
        "body.id: is read-only");
}

static void
test_combinators(void **state)
{
    (void)state;
    OK("{'allOf':[{'type':'integer'},{'minimum':3}]}", "4");
    BAD("{'allOf':[{'type':'integer'},{'minimum':3}]}", "2", "must be >= 3");
    OK("{'anyOf':[{'type':'string'},{'type':'integer'}]}", "2");
    BAD("{'anyOf':[{'type':'string'},{'type':'integer'}]}", "2.5",
        "must match one of the anyOf schemas");
    /* one branch fits the type: its own complaint is reported */
    BAD("{'anyOf':[{'type':'string','maxLength':2},{'type':'integer'}]}",
        "'abc'", "body: must be at most 2 characters long");
    OK("{'oneOf':[{'type':'string'},{'type':'integer'}]}", "'x'");
    BAD("{'oneOf':[{'type':'number'},{'type':'integer'}]}", "3",
        "must match exactly one of the oneOf schemas (it matches 0 and 1)");
    BAD("{'oneOf':[{'type':'string'},{'type':'boolean'}]}", "3",
        "must match one of the oneOf schemas");
    OK("{'not':{'type':'string'}}", "3");
    BAD("{'not':{'type':'string'}}", "'x'", "must not match");
    /* a failing quiet branch leaves no message behind */
    OK("{'anyOf':[{'required':['a']},{'required':['b']}]}", "{'b':1}");
}

static void
test_refs(void **state)
{
    const char *doc =
        "{'openapi':'3.0.3','components':{'schemas':{"
        " 'Node':{'type':'object','properties':{'v':{'type':'integer'},"
        "   'kids':{'type':'array','items':{'$ref':'#/components/schemas/Node'}}}},"
        " 'Alias':{'$ref':'#/components/schemas/Node'},"
        " 'a~b/c':{'type':'string'}}}}";

    (void)state;
    ok_in(doc, "{'$ref':'#/components/schemas/Alias'}",
          "{'v':1,'kids':[{'v':2,'kids':[{'v':3}]}]}");
    bad_in(doc, "{'$ref':'#/components/schemas/Node'}",
           "{'v':1,'kids':[{'v':2,'kids':[{'v':'x'}]}]}",
           "body.kids[0].kids[0].v: must be an integer");
    ok_in(doc, "{'$ref':'#/components/schemas/a~0b~1c'}", "'s'");
    ok_in(doc, "{'$ref':'#/components/schemas/a%7E0b~1c'}", "'s'");
    /* 3.0: siblings of $ref are ignored */
    ok_in(doc, "{'$ref':'#/components/schemas/a~0b~1c','maxLength':1}",
          "'long'");
    /* 3.1: they apply too */
    bad_in("{'openapi':'3.1.0','$defs':{'S':{'type':'string'}}}",
           "{'$ref':'#/$defs/S','maxLength':1}", "'long'", "at most 1");
    bad_in("{'openapi':'3.1.0','$defs':{'S':{'type':'string'}}}",
           "{'$ref':'#/$defs/S','maxLength':1}", "5", "must be a string");
    /* recursion deeper than the depth limit is refused, not overflowed */
    {
        kb_buf deep = KB_BUF_INIT(1 << 20);
        char msg[512];
        for (int i = 0; i < 100; i++)
            kb_buf_appends(&deep, "{'kids':[");
        for (int i = 0; i < 100; i++)
            kb_buf_appends(&deep, "]}");
        assert_int_equal(schema_run(doc, "{'$ref':'#/components/schemas/Node'}",
                                    kb_buf_cstr(&deep), msg, sizeof(msg)),
                         KB_ETOOBIG);
        assert_non_null(strstr(msg, "deep"));
        kb_buf_free(&deep);
    }
}

static void
test_compile_refusals(void **state)
{
    (void)state;
    refuse_in(DOC30, "{'pattern':'(unclosed'}", "/s/pattern: bad regular");
    refuse_in(DOC30, "{'pattern':'(?=x)'}", "/s/pattern: unsupported regular "
                                           "expression: lookahead");
    refuse_in(DOC30, "{'pattern':'(a)\\\\1'}", "backreferences");
    refuse_in(DOC30, "{'pattern':'\\\\bword'}", "word boundaries");
    refuse_in(DOC30, "{'pattern':'\\\\p{L}'}", "unsupported escape");
    refuse_in(DOC30, "{'properties':{'a':{'$ref':'#/nope'}}}",
              "/s/properties/a/$ref: \"#/nope\" does not resolve");
    refuse_in(DOC30, "{'$ref':'other.yaml#/X'}", "only local references");
    refuse_in("{'openapi':'3.0.3','d':{'A':{'$ref':'#/d/B'},"
              "'B':{'$ref':'#/d/A'}}}",
              "{'$ref':'#/d/A'}", "$ref hops");
    refuse_in("{'openapi':'3.0.3','d':{'A':{'allOf':[{'$ref':'#/d/A'}]}}}",
              "{'$ref':'#/d/A'}", "/d/A/allOf/0: schema refers to itself "
                                  "without descending");
    refuse_in(DOC30, "{'type':'str'}", "/s/type: unknown type \"str\"");
    refuse_in(DOC30, "{'minLength':-1}", "/s/minLength: must be a "
                                         "non-negative integer");
    refuse_in(DOC30, "{'multipleOf':0}", "/s/multipleOf: must be greater");
    refuse_in(DOC30, "{'patternProperties':{}}",
              "/s/patternProperties: keyword not supported");
    refuse_in(DOC30, "{'items':[{},{}]}", "tuple validation");
    refuse_in(DOC30, "{'anyOf':[]}", "must be a non-empty array");
    refuse_in(DOC30, "{'required':'a'}", "/s/required: must be an array");
}

/* A schema whose work explodes (nested anyOf) stops at the budget. */
static void
test_budget(void **state)
{
    const char *doc =
        "{'openapi':'3.0.3','d':{'T':{'anyOf':["
        " {'type':'object','properties':{'a':{'$ref':'#/d/T'}}},"
        " {'type':'object','properties':{'a':{'$ref':'#/d/T'}},"
        "  'required':['a']}]}}}";
    kb_buf deep = KB_BUF_INIT(1 << 20);
    char msg[512];
    int rc;

    (void)state;
    for (int i = 0; i < 40; i++)
        kb_buf_appends(&deep, "{'a':");
    kb_buf_appends(&deep, "1");
    for (int i = 0; i < 40; i++)
        kb_buf_appends(&deep, "}");
    rc = schema_run(doc, "{'$ref':'#/d/T'}", kb_buf_cstr(&deep), msg,
                    sizeof(msg));
    assert_int_equal(rc, KB_ETOOBIG);
    assert_non_null(strstr(msg, "too complex"));
    kb_buf_free(&deep);
}

/* ------------------------------------------------------------------------ */
/* Whole requests                                                            */

typedef struct fx {
    gw_spec    s;
    json_t    *doc;
    kb_router *router;
} fx;

static const char *const verbs[][2] = {
    { "get", "GET" }, { "post", "POST" }, { "put", "PUT" },
    { "delete", "DELETE" }, { "patch", "PATCH" },
};

/* Routes for every operation of doc, as openapi.c makes them; then
 * gw__validate_compile.  rc and err as it returned. */
static fx *
fx_build(const char *doc_text, int *rc, char *err, size_t errlen)
{
    fx *f = calloc(1, sizeof(*f));
    const char *path, *base;
    const json_t *item;

    f->doc = J(doc_text);
    f->s.doc = f->doc;
    f->s.routes = calloc(64, sizeof(gw_route));
    f->router = kb_router_create();
    base = json_string_value(json_object_get(f->doc, "basePath"));
    if (base == NULL || strcmp(base, "/") == 0)
        base = "";
    json_object_foreach(json_object_get(f->doc, "paths"), path, item) {
        for (size_t i = 0; i < 5; i++) {
            const json_t *op = json_object_get(item, verbs[i][0]);
            gw_route *r;
            kb_buf ptr = KB_BUF_INIT(4096);
            if (op == NULL)
                continue;
            r = &f->s.routes[f->s.nroutes++];
            r->method = verbs[i][1];
            assert_true(asprintf(&r->template, "%s%s", base, path) > 0);
            kb_buf_appends(&ptr, "/paths");
            gw__pointer_append(&ptr, path);
            gw__pointer_append(&ptr, verbs[i][0]);
            r->pointer = kb_buf_detach(&ptr);
            r->op = op;
            r->spec = &f->s;
            assert_int_equal(kb_router_add(f->router, r->method, r->template,
                                           r, NULL), 0);
        }
    }
    *rc = gw__validate_compile(&f->s, err, errlen);
    return f;
}

static void
fx_free(fx *f)
{
    gw__validate_release(&f->s);
    for (size_t i = 0; i < f->s.nroutes; i++) {
        assert_null(f->s.routes[i].validation);
        free(f->s.routes[i].template);
        free(f->s.routes[i].pointer);
    }
    free(f->s.routes);
    kb_router_free(f->router);
    json_decref(f->doc);
    free(f);
}

static fx *
load(const char *doc_text)
{
    char err[512] = "";
    int rc;
    fx *f = fx_build(doc_text, &rc, err, sizeof(err));

    if (rc != 0)
        fail_msg("spec rejected (%d): %s", rc, err);
    return f;
}

static void
load_fails(const char *doc_text, const char *want)
{
    char err[512] = "";
    int rc;
    fx *f = fx_build(doc_text, &rc, err, sizeof(err));

    if (rc != KB_EINVAL || strstr(err, want) == NULL)
        fail_msg("rc %d err \"%s\"\nwant \"%s\"", rc, err, want);
    for (size_t i = 0; i < f->s.nroutes; i++)
        assert_null(f->s.routes[i].validation);
    fx_free(f);
}

/*
 * Run "METHOD /target" with headers ("Name: value" lines joined by "\n")
 * and body through the route's validation.  Returns the status (0 when
 * the request passes); message in msg.
 */
static int
run(fx *f, const char *method, const char *target, const char *headers,
    const char *body, char *msg, size_t msglen)
{
    kb_http_req req;
    kb_http_header h[16];
    kb_route_match m;
    char path[1024], *hcopy = strdup(headers ? headers : "");
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    const gw_route *r;
    int status;

    memset(&req, 0, sizeof(req));
    snprintf(path, sizeof(path), "%.*s", (int)plen, target);
    req.method = method;
    req.target = target;
    req.path = path;
    req.query = q ? q + 1 : "";
    req.body = body ? body : "";
    req.body_len = body ? strlen(body) : 0;
    for (char *line = strtok(hcopy, "\n"); line != NULL && req.nheaders < 16;
         line = strtok(NULL, "\n")) {
        char *colon = strchr(line, ':');
        assert_non_null(colon);
        *colon = '\0';
        h[req.nheaders].name = line;
        h[req.nheaders].value = colon + 1 + strspn(colon + 1, " ");
        req.nheaders++;
    }
    req.headers = h;
    if (kb_router_match(f->router, method, path, strlen(path), &m) != 200)
        fail_msg("no route for %s %s", method, path);
    r = m.target;
    msg[0] = '\0';
    status = r->validation == NULL
                 ? 0 : request_check(r->validation, &req, &m, msg, msglen);
    free(hcopy);
    return status;
}

static void
pass(fx *f, const char *method, const char *target, const char *headers,
     const char *body)
{
    char msg[512];
    int st = run(f, method, target, headers, body, msg, sizeof(msg));

    if (st != 0)
        fail_msg("%s %s: %d %s", method, target, st, msg);
}

static void
deny(fx *f, const char *method, const char *target, const char *headers,
     const char *body, int status, const char *want)
{
    char msg[512];
    int st = run(f, method, target, headers, body, msg, sizeof(msg));

    if (st != status || strstr(msg, want) == NULL)
        fail_msg("%s %s: %d \"%s\"\nwant %d \"%s\"", method, target, st, msg,
                 status, want);
}

#define JSON_CT "Content-Type: application/json"

/* Google's Endpoints bookstore example (Swagger 2.0), plus validation. */
static const char bookstore[] =
    "{'swagger':'2.0','info':{'title':'Bookstore','version':'1.0.0'},"
    " 'host':'bookstore.endpoints.example.cloud.goog','basePath':'/',"
    " 'consumes':['application/json'],'produces':['application/json'],"
    " 'schemes':['https'],'x-kiban-validate':true,"
    " 'paths':{"
    "  '/shelves':{"
    "   'get':{'operationId':'listShelves','responses':{'200':{'description':'ok',"
    "          'schema':{'$ref':'#/definitions/listShelvesResponse'}}}},"
    "   'post':{'operationId':'createShelf','parameters':[{'in':'body',"
    "          'name':'shelf','required':true,'schema':{'$ref':'#/definitions/shelf'}}],"
    "          'responses':{'200':{'description':'ok'}}}},"
    "  '/shelves/{shelf}':{"
    "   'get':{'operationId':'getShelf','parameters':[{'in':'path','name':'shelf',"
    "          'required':true,'type':'integer','format':'int64'}],"
    "          'responses':{'200':{'description':'ok'}}},"
    "   'delete':{'operationId':'deleteShelf','x-kiban-validate':false,"
    "          'parameters':[{'in':'path','name':'shelf','required':true,"
    "          'type':'integer','format':'int64'}],"
    "          'responses':{'default':{'description':'empty'}}}},"
    "  '/shelves/{shelf}/books':{"
    "   'parameters':[{'$ref':'#/parameters/shelf'}],"
    "   'get':{'operationId':'listBooks','parameters':[{'in':'query',"
    "          'name':'pageSize','type':'integer','minimum':1,'maximum':100},"
    "          {'in':'query','name':'ids','type':'array','items':{'type':'integer'},"
    "           'collectionFormat':'csv','maxItems':3},"
    "          {'in':'query','name':'tag','type':'array','items':{'type':'string',"
    "           'enum':['a','b']},'collectionFormat':'multi'},"
    "          {'in':'header','name':'X-Client-Version','type':'string',"
    "           'pattern':'^\\\\d+\\\\.\\\\d+$','required':true}],"
    "          'responses':{'200':{'description':'ok'}}},"
    "   'post':{'operationId':'createBook','parameters':[{'in':'body',"
    "          'name':'book','required':true,'schema':{'$ref':'#/definitions/book'}}],"
    "          'responses':{'200':{'description':'ok'}}}}},"
    " 'parameters':{'shelf':{'in':'path','name':'shelf','required':true,"
    "   'type':'integer','format':'int64','minimum':1}},"
    " 'definitions':{"
    "  'book':{'properties':{'author':{'type':'string'},'name':{'type':'string'},"
    "          'title':{'type':'string'}},'required':['name','author','title']},"
    "  'listShelvesResponse':{'properties':{'shelves':{'items':"
    "          {'$ref':'#/definitions/shelf'},'type':'array'}},'type':'object'},"
    "  'shelf':{'properties':{'name':{'type':'string'},'theme':{'type':'string'}},"
    "          'required':['name','theme']}},"
    " 'securityDefinitions':{'api_key':{'in':'query','name':'key','type':'apiKey'}}}";

static void
test_swagger_params(void **state)
{
    fx *f = load(bookstore);
    const char *ver = "X-Client-Version: 1.2";

    (void)state;
    pass(f, "GET", "/shelves", NULL, NULL);
    pass(f, "GET", "/shelves/42", NULL, NULL);
    deny(f, "GET", "/shelves/abc", NULL, NULL, 400,
         "invalid request: path parameter \"shelf\": must be an integer");
    deny(f, "GET", "/shelves/1.5", NULL, NULL, 400, "must be an integer");
    /* opted out per operation */
    pass(f, "DELETE", "/shelves/abc", NULL, NULL);
    /* path-item parameter via #/parameters, with its own minimum */
    pass(f, "GET", "/shelves/1/books", ver, NULL);
    deny(f, "GET", "/shelves/0/books", ver, NULL, 400,
         "path parameter \"shelf\": must be >= 1");
    /* query */
    pass(f, "GET", "/shelves/1/books?pageSize=100", ver, NULL);
    deny(f, "GET", "/shelves/1/books?pageSize=101", ver, NULL, 400,
         "invalid request: query parameter \"pageSize\": must be <= 100");
    deny(f, "GET", "/shelves/1/books?pageSize=ten", ver, NULL, 400,
         "query parameter \"pageSize\": must be an integer");
    deny(f, "GET", "/shelves/1/books?pageSize=", ver, NULL, 400,
         "must be an integer");
    deny(f, "GET", "/shelves/1/books?pageSize=1e999", ver, NULL, 400,
         "must be an integer");
    /* csv arrays */
    pass(f, "GET", "/shelves/1/books?ids=1,2,3", ver, NULL);
    pass(f, "GET", "/shelves/1/books?ids=1%2C2", ver, NULL);
    deny(f, "GET", "/shelves/1/books?ids=1,x", ver, NULL, 400,
         "query parameter \"ids\"[1]: must be an integer");
    deny(f, "GET", "/shelves/1/books?ids=1,2,3,4", ver, NULL, 400,
         "must have at most 3 items");
    /* multi: repeated parameters */
    pass(f, "GET", "/shelves/1/books?tag=a&tag=b&pageSize=5", ver, NULL);
    deny(f, "GET", "/shelves/1/books?tag=a&tag=c", ver, NULL, 400,
         "query parameter \"tag\"[1]: must be one of [\"a\",\"b\"]");
    deny(f, "GET", "/shelves/1/books?pageSize=%zz", ver, NULL, 400,
         "bad percent-encoding");
    /* header: required, case-insensitive, pattern */
    deny(f, "GET", "/shelves/1/books", NULL, NULL, 400,
         "header \"X-Client-Version\": required");
    pass(f, "GET", "/shelves/1/books", "x-client-version: 10.0", NULL);
    deny(f, "GET", "/shelves/1/books", "X-CLIENT-VERSION: v1", NULL, 400,
         "header \"X-Client-Version\": must match the pattern");
    fx_free(f);
}

static void
test_swagger_body(void **state)
{
    fx *f = load(bookstore);

    (void)state;
    pass(f, "POST", "/shelves", JSON_CT,
         "{\"name\":\"fiction\",\"theme\":\"novels\"}");
    pass(f, "POST", "/shelves", "Content-Type: application/json; charset=utf-8",
         "{\"name\":\"fiction\",\"theme\":\"novels\"}");
    deny(f, "POST", "/shelves", JSON_CT, "{\"name\":\"fiction\"}", 400,
         "invalid request: body.theme: required");
    deny(f, "POST", "/shelves", JSON_CT, "{\"name\":1,\"theme\":\"x\"}", 400,
         "body.name: must be a string");
    deny(f, "POST", "/shelves", NULL, NULL, 400,
         "invalid request: body: required");
    deny(f, "POST", "/shelves", JSON_CT, "{\"name\":", 400,
         "invalid request: body: not valid JSON");
    deny(f, "POST", "/shelves", JSON_CT, "{\"a\":1,\"a\":2}", 400,
         "not valid JSON (duplicate object key");
    deny(f, "POST", "/shelves", "Content-Type: text/plain", "hello", 415,
         "Content-Type \"text/plain\" is not accepted here (application/json)");
    deny(f, "POST", "/shelves", NULL, "{}", 415, "\"(none)\"");
    pass(f, "POST", "/shelves/7/books", JSON_CT,
         "{\"name\":\"n\",\"author\":\"a\",\"title\":\"t\"}");
    deny(f, "POST", "/shelves/7/books", JSON_CT,
         "{\"name\":\"n\",\"author\":\"a\"}", 400, "body.title: required");
    fx_free(f);
}

static const char oas3[] =
    "{'openapi':'3.0.3','info':{'title':'t','version':'1'},"
    " 'x-kiban-validate':{'parameters':true,'body':true},"
    " 'paths':{"
    "  '/items/{id}':{"
    "   'parameters':[{'name':'id','in':'path','required':true,"
    "     'schema':{'type':'string','format':'uuid'}},"
    "    {'name':'verbose','in':'query','schema':{'type':'boolean'}}],"
    "   'get':{'parameters':[{'name':'verbose','in':'query',"
    "     'schema':{'type':'integer','enum':[0,1]}},"
    "     {'$ref':'#/components/parameters/Limit'},"
    "     {'name':'ids','in':'query','schema':{'type':'array',"
    "       'items':{'type':'integer'}}},"
    "     {'name':'csv','in':'query','explode':false,'schema':{'type':'array',"
    "       'items':{'type':'integer'}}},"
    "     {'name':'pipes','in':'query','style':'pipeDelimited','explode':false,"
    "       'schema':{'type':'array','items':{'type':'string','maxLength':2}}},"
    "     {'name':'session','in':'cookie','schema':{'type':'string',"
    "       'minLength':4}},"
    "     {'name':'X-Tags','in':'header','schema':{'type':'array',"
    "       'items':{'type':'string','enum':['a','b']}}},"
    "     {'name':'filter','in':'query','content':{'application/json':"
    "       {'schema':{'type':'object','required':['q']}}}},"
    "     {'name':'Accept','in':'header','required':true,"
    "       'schema':{'type':'string'}}]},"
    "   'put':{'requestBody':{'$ref':'#/components/requestBodies/Item'}},"
    "   'patch':{'x-kiban-validate':{'body':false},"
    "     'requestBody':{'$ref':'#/components/requestBodies/Item'}}},"
    "  '/upload':{'post':{'requestBody':{'content':{"
    "     'application/json':{'schema':{'type':'array','maxItems':1}},"
    "     'image/*':{}}}}},"
    "  '/free':{'post':{'requestBody':{'content':{'*/*':{}}}}}},"
    " 'components':{"
    "  'parameters':{'Limit':{'name':'limit','in':'query','required':false,"
    "    'schema':{'type':'integer','minimum':1,'maximum':100}}},"
    "  'requestBodies':{'Item':{'required':true,'content':{"
    "    'application/json':{'schema':{'$ref':'#/components/schemas/Item'}},"
    "    'application/merge-patch+json':{'schema':{'type':'object'}}}}},"
    "  'schemas':{'Item':{'type':'object','required':['name'],"
    "    'additionalProperties':false,'properties':{"
    "     'id':{'type':'string','readOnly':true},"
    "     'name':{'type':'string','minLength':1},"
    "     'price':{'type':'number','minimum':0,'exclusiveMinimum':true},"
    "     'when':{'type':'string','format':'date-time'},"
    "     'note':{'type':'string','nullable':true},"
    "     'parts':{'type':'array','items':{'$ref':'#/components/schemas/Item'}}}}}}}";

#define UUID "/items/123e4567-e89b-12d3-a456-426614174000"

static void
test_oas3_params(void **state)
{
    fx *f = load(oas3);

    (void)state;
    pass(f, "GET", UUID, NULL, NULL);
    deny(f, "GET", "/items/42", NULL, NULL, 400,
         "path parameter \"id\": must be a valid uuid");
    /* the operation's verbose (integer) overrides the path item's */
    pass(f, "GET", UUID "?verbose=1", NULL, NULL);
    deny(f, "GET", UUID "?verbose=true", NULL, NULL, 400,
         "query parameter \"verbose\": must be an integer");
    deny(f, "GET", UUID "?verbose=2", NULL, NULL, 400, "must be one of [0,1]");
    /* components/parameters */
    deny(f, "GET", UUID "?limit=101", NULL, NULL, 400,
         "query parameter \"limit\": must be <= 100");
    /* form + explode (default): repeated */
    pass(f, "GET", UUID "?ids=1&ids=2", NULL, NULL);
    deny(f, "GET", UUID "?ids=1,2", NULL, NULL, 400,
         "query parameter \"ids\"[0]: must be an integer");
    /* explode false: comma separated */
    pass(f, "GET", UUID "?csv=1,2", NULL, NULL);
    deny(f, "GET", UUID "?csv=1,b", NULL, NULL, 400, "\"csv\"[1]");
    pass(f, "GET", UUID "?pipes=ab|cd", NULL, NULL);
    deny(f, "GET", UUID "?pipes=ab|cde", NULL, NULL, 400,
         "query parameter \"pipes\"[1]: must be at most 2");
    /* cookie */
    pass(f, "GET", UUID, "Cookie: a=b; session=abcd", NULL);
    deny(f, "GET", UUID, "Cookie: session=abc; x=y", NULL, 400,
         "cookie \"session\": must be at least 4 characters long");
    /* header arrays: lines joined, items trimmed */
    pass(f, "GET", UUID, "X-Tags: a, b\nx-tags: a", NULL);
    deny(f, "GET", UUID, "X-Tags: a, c", NULL, 400,
         "header \"X-Tags\"[1]: must be one of");
    /* JSON content parameter */
    pass(f, "GET", UUID "?filter=%7B%22q%22%3A1%7D", NULL, NULL);
    deny(f, "GET", UUID "?filter=%7B%7D", NULL, NULL, 400,
         "query parameter \"filter\".q: required");
    deny(f, "GET", UUID "?filter=%7B", NULL, NULL, 400, "not valid JSON");
    /* a required Accept header parameter is ignored in OpenAPI 3 */
    fx_free(f);
}

static void
test_oas3_body(void **state)
{
    fx *f = load(oas3);

    (void)state;
    pass(f, "PUT", UUID, JSON_CT, "{\"name\":\"x\",\"price\":1.5,"
                                  "\"when\":\"2024-05-01T10:00:00Z\","
                                  "\"note\":null}");
    deny(f, "PUT", UUID, JSON_CT, "{}", 400, "invalid request: body.name: "
                                             "required");
    deny(f, "PUT", UUID, JSON_CT, "{\"name\":\"x\",\"price\":0}", 400,
         "body.price: must be > 0");
    deny(f, "PUT", UUID, JSON_CT, "{\"name\":\"x\",\"id\":\"1\"}", 400,
         "body.id: is read-only");
    deny(f, "PUT", UUID, JSON_CT, "{\"name\":\"x\",\"colour\":1}", 400,
         "body.colour: unknown property");
    deny(f, "PUT", UUID, JSON_CT, "{\"name\":\"x\",\"when\":\"yesterday\"}",
         400, "body.when: must be a valid date-time");
    deny(f, "PUT", UUID, JSON_CT,
         "{\"name\":\"x\",\"parts\":[{\"name\":\"a\"},{\"name\":\"\"}]}", 400,
         "body.parts[1].name: must be at least 1 characters long");
    deny(f, "PUT", UUID, NULL, NULL, 400, "body: required");
    /* the second JSON media type has its own schema */
    pass(f, "PUT", UUID, "Content-Type: application/merge-patch+json",
         "{\"price\":2}");
    deny(f, "PUT", UUID, "Content-Type: application/merge-patch+json", "[]",
         400, "body: must be an object");
    deny(f, "PUT", UUID, "Content-Type: application/xml", "<a/>", 415,
         "(application/json, application/merge-patch+json)");
    /* body checks off for this operation; parameters still on */
    pass(f, "PATCH", UUID, "Content-Type: text/plain", "anything");
    deny(f, "PATCH", "/items/x", NULL, NULL, 400, "must be a valid uuid");
    /* ranges: an image/ range takes any image, unchecked */
    pass(f, "POST", "/upload", "Content-Type: image/png", "\x89PNG");
    deny(f, "POST", "/upload", JSON_CT, "[1,2]", 400,
         "body: must have at most 1 items");
    deny(f, "POST", "/upload", "Content-Type: text/plain", "x", 415,
         "image/*");
    /* optional body may be absent */
    pass(f, "POST", "/upload", NULL, NULL);
    /* any type, and JSON is still parsed when it says it is JSON */
    pass(f, "POST", "/free", "Content-Type: text/csv", "a,b");
    deny(f, "POST", "/free", JSON_CT, "nope", 400, "not valid JSON");
    fx_free(f);
}

static void
test_opt_in(void **state)
{
    fx *f;

    (void)state;
    /* off unless asked for */
    f = load("{'openapi':'3.0.3','paths':{'/a':{'get':{'parameters':["
             "{'name':'n','in':'query','required':true,'schema':{}}]}}}}");
    assert_null(f->s.routes[0].validation);
    pass(f, "GET", "/a", NULL, NULL);
    fx_free(f);
    /* on for one operation */
    f = load("{'openapi':'3.0.3','paths':{'/a':{'get':{'x-kiban-validate':"
             "true,'parameters':[{'name':'n','in':'query','required':true,"
             "'schema':{}}]},'post':{}}}}");
    deny(f, "GET", "/a", NULL, NULL, 400, "query parameter \"n\": required");
    assert_null(f->s.routes[1].validation);
    fx_free(f);
    /* unchecked schemas of operations that do not opt in load as is */
    f = load("{'openapi':'3.0.3','paths':{'/a':{'get':{'parameters':["
             "{'name':'n','in':'query','schema':{'pattern':'(?=x)'}}]}}}}");
    fx_free(f);
    load_fails("{'openapi':'3.0.3','x-kiban-validate':'yes','paths':{}}",
               "/x-kiban-validate: must be true, false or an object");
    load_fails("{'openapi':'3.0.3','x-kiban-validate':{'headers':true},"
               "'paths':{}}", "/x-kiban-validate/headers: unknown field");
    load_fails("{'openapi':'3.0.3','paths':{'/a':{'get':{'x-kiban-validate':"
               "{'body':1}}}}}", "/paths/~1a/get/x-kiban-validate/body: must "
                                 "be true or false");
}

static void
test_spec_errors(void **state)
{
    (void)state;
    load_fails("{'openapi':'3.0.3','x-kiban-validate':true,'paths':{'/a':{"
               "'get':{'parameters':[{'name':'n','in':'query','schema':"
               "{'type':'string','pattern':'a{2,1}'}}]}}}}",
               "/paths/~1a/get/parameters/0/schema/pattern: bad regular "
               "expression");
    load_fails("{'openapi':'3.0.3','x-kiban-validate':true,'paths':{'/a':{"
               "'post':{'requestBody':{'$ref':'#/components/requestBodies/X'}"
               "}}}}", "/paths/~1a/post/requestBody/$ref: "
                       "\"#/components/requestBodies/X\" does not resolve");
    load_fails("{'openapi':'3.0.3','x-kiban-validate':true,'paths':{'/a':{"
               "'get':{'parameters':[{'$ref':'#/components/parameters/P'}]}}},"
               "'components':{'parameters':{'P':{'name':'p','in':'query',"
               "'schema':{'$ref':'#/components/schemas/Missing'}}}}}",
               "/components/parameters/P/schema/$ref");
    load_fails("{'openapi':'3.0.3','x-kiban-validate':true,'paths':{'/a':{"
               "'get':{'parameters':[{'name':'o','in':'query','schema':"
               "{'type':'object'}}]}}}}", "object-valued parameters");
    load_fails("{'openapi':'3.0.3','x-kiban-validate':true,'paths':{'/a':{"
               "'get':{'parameters':[{'name':'o','in':'query','style':"
               "'deepObject','schema':{'type':'string'}}]}}}}",
               "/paths/~1a/get/parameters/0/style: style \"deepObject\"");
    load_fails("{'openapi':'3.0.3','x-kiban-validate':true,'paths':{'/a':{"
               "'get':{'parameters':[{'name':'o','in':'nowhere'}]}}}}",
               "/paths/~1a/get/parameters/0/in: must be path, query");
    load_fails("{'swagger':'2.0','x-kiban-validate':true,'paths':{'/a':{"
               "'get':{'parameters':[{'name':'n','in':'query','type':'integer',"
               "'maximum':'ten'}]}}}}",
               "/paths/~1a/get/parameters/0/maximum: must be a number");
    /* the document's own opt-in covers every operation: a bad schema
     * anywhere used fails the whole spec, even when an earlier route
     * compiled fine */
    load_fails("{'openapi':'3.1.0','x-kiban-validate':true,'paths':{"
               "'/a':{'get':{}},'/b':{'post':{'requestBody':{'content':{"
               "'application/json':{'schema':{'$ref':'#/$defs/L'}}}}}}},"
               "'$defs':{'L':{'$ref':'#/$defs/L','type':'object'}}}",
               "refers to itself without descending");
}

/* Google's API Gateway "airports" quickstart shape (Swagger 2.0). */
static void
test_airports(void **state)
{
    fx *f = load(
        "{'swagger':'2.0','info':{'title':'Airport Codes','description':"
        "'Get the name of an airport from its three-letter IATA code.',"
        "'version':'1.0.0'},'host':'airports.example.com','schemes':['https'],"
        "'x-kiban-validate':true,"
        "'paths':{'/airportName':{'get':{'description':'Get the airport name "
        "for a given IATA code.','operationId':'airportName','parameters':["
        "{'name':'iataCode','in':'query','required':true,'type':'string'}],"
        "'responses':{'200':{'description':'Success.','schema':{'type':"
        "'string'}},'400':{'description':'The IATA code is invalid or "
        "missing.','schema':{'type':'string'}}}}}}}");

    (void)state;
    pass(f, "GET", "/airportName?iataCode=SFO", NULL, NULL);
    pass(f, "GET", "/airportName?iataCode=", NULL, NULL);
    deny(f, "GET", "/airportName", NULL, NULL, 400,
         "invalid request: query parameter \"iataCode\": required");
    deny(f, "GET", "/airportName?iata=SFO", NULL, NULL, 400, "required");
    fx_free(f);
}

/* The compiled validation is shared by every worker thread: check the
 * same route from several threads at once, good and bad requests mixed. */
typedef struct thr_arg {
    fx  *f;
    int  wrong;
} thr_arg;

static void *
thr_main(void *p)
{
    thr_arg *a = p;
    char msg[512];

    for (int i = 0; i < 500; i++) {
        int st = run(a->f, "GET", i % 2 ? "/shelves/1/books?tag=a&ids=1,2"
                                        : "/shelves/1/books?tag=z",
                     "X-Client-Version: 1.2", NULL, msg, sizeof(msg));
        if (st != (i % 2 ? 0 : 400) ||
            (st != 0 && strstr(msg, "\"tag\"[0]: must be one of") == NULL))
            a->wrong++;
        st = run(a->f, "POST", "/shelves", JSON_CT,
                 i % 3 ? "{\"name\":\"a\",\"theme\":\"b\"}"
                       : "{\"name\":\"a\"}", msg, sizeof(msg));
        if (st != (i % 3 ? 0 : 400))
            a->wrong++;
    }
    return NULL;
}

static void
test_threads(void **state)
{
    fx *f = load(bookstore);
    pthread_t t[4];
    thr_arg args[4];

    (void)state;
    for (int i = 0; i < 4; i++) {
        args[i].f = f;
        args[i].wrong = 0;
        assert_int_equal(pthread_create(&t[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].wrong, 0);
    }
    fx_free(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_enum_const),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_combinators),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_compile_refusals),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_opt_in),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_swagger_params),
        cmocka_unit_test(test_swagger_body),
        cmocka_unit_test(test_oas3_params),
        cmocka_unit_test(test_oas3_body),
        cmocka_unit_test(test_airports),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
