/*
 * gw_fakes.h - what the unit tests of a policy module (test_cors.c,
 * test_ratelimit.c) share: a fake of the proxy's gw__header_add that records
 * the answer's headers, and gw_specs built from a document the way openapi.c
 * does (routes only) with the compile_ok/reject helpers.
 *
 * Include it after the module's .c, with these defined:
 *   GW_FAKES_COMPILE  the module's compile function (gw__cors_compile)
 *   GW_FAKES_RELEASE  its release function (gw__cors_release)
 *   GW_FAKES_POLICY   the gw_route field it fills (cors)
 * The test defines the other fakes its module calls (gw__respond, …).
 */
#ifndef KB_TESTS_GW_FAKES_H
#define KB_TESTS_GW_FAKES_H

/* ------------------------------------------------------------------------ */
/* The answer: headers added, status and message of a gateway response      */

static kb_http_header fake_res[GW_MAX_EXTRA + 16];
static size_t fake_nres;
static int fake_status;
static char fake_msg[512];

int
gw__header_add(gw_ctx *c, bool upstream, const char *name, const char *value)
{
    (void)c;
    assert_false(upstream);
    if (fake_nres == GW_MAX_EXTRA)
        return KB_ETOOBIG;
    fake_res[fake_nres++] = (kb_http_header){ strdup(name), strdup(value) };
    return 0;
}

static void
fake_reset(void)
{
    for (size_t i = 0; i < fake_nres; i++) {
        free((char *)fake_res[i].name);
        free((char *)fake_res[i].value);
    }
    fake_nres = 0;
    fake_status = 0;
    fake_msg[0] = '\0';
}

static const char *
fake_header(const char *name)
{
    for (size_t i = 0; i < fake_nres; i++)
        if (strcasecmp(fake_res[i].name, name) == 0)
            return fake_res[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* A gw_spec built from a document the way openapi.c does (routes only)      */

static const char *const mnames[][2] = {
    { "get", "GET" }, { "put", "PUT" }, { "post", "POST" },
    { "delete", "DELETE" }, { "options", "OPTIONS" }, { "patch", "PATCH" },
};

static gw_spec *
spec_build(const char *doc_text)
{
    gw_spec *s = calloc(1, sizeof(*s));
    const json_t *paths, *item;
    const char *path;

    assert_non_null(s);
    s->spec = json_pack("{s:o}", "openapi", J(doc_text));
    s->doc = json_object_get(s->spec, "openapi");
    s->id = strdup("default/main");
    s->routes = calloc(64, sizeof(gw_route));
    paths = json_object_get(s->doc, "paths");
    json_object_foreach((json_t *)paths, path, item) {
        const char *key;
        const json_t *op;
        json_object_foreach((json_t *)item, key, op) {      /* spec order */
            gw_route *r = &s->routes[s->nroutes];
            kb_buf b = KB_BUF_INIT(4096);
            size_t i = 0;
            while (i < sizeof(mnames) / sizeof(mnames[0]) &&
                   strcmp(mnames[i][0], key) != 0)
                i++;
            if (i == sizeof(mnames) / sizeof(mnames[0]))
                continue;
            r->method = mnames[i][1];
            r->template = strdup(path);
            assert_true(asprintf(&r->label, "%s %s", r->method, path) > 0);
            kb_buf_appends(&b, "/paths");
            gw__pointer_append(&b, path);
            gw__pointer_append(&b, mnames[i][0]);
            r->pointer = kb_buf_detach(&b);
            kb_buf_free(&b);
            r->op = op;
            r->spec = s;
            s->nroutes++;
        }
    }
    return s;
}

static void
spec_drop(gw_spec *s)
{
    GW_FAKES_RELEASE(s);
    for (size_t i = 0; i < s->nroutes; i++) {
        free(s->routes[i].template);
        free(s->routes[i].label);
        free(s->routes[i].pointer);
    }
    free(s->routes);
    free(s->id);
    json_decref(s->spec);
    free(s);
}

static gw_route *
route_of(gw_spec *s, const char *label)
{
    for (size_t i = 0; i < s->nroutes; i++)
        if (strcmp(s->routes[i].label, label) == 0)
            return &s->routes[i];
    fail_msg("no route %s", label);
    return NULL;
}

static gw_spec *
compile_ok(const char *doc)
{
    gw_spec *s = spec_build(doc);
    char err[512] = "";
    int rc = GW_FAKES_COMPILE(s, err, sizeof(err));

    if (rc != 0)
        fail_msg("rejected (%d): %s\n%s", rc, err, doc);
    return s;
}

static void
reject(const char *doc, const char *want)
{
    gw_spec *s = spec_build(doc);
    char err[512] = "";
    int rc = GW_FAKES_COMPILE(s, err, sizeof(err));

    if (rc != KB_EINVAL || strncmp(err, want, strlen(want)) != 0)
        fail_msg("doc: %s\nrc %d, err \"%s\"\nwant \"%s…\"", doc, rc, err,
                 want);
    for (size_t i = 0; i < s->nroutes; i++)
        assert_null(s->routes[i].GW_FAKES_POLICY);   /* nothing left behind */
    spec_drop(s);
}

#endif /* KB_TESTS_GW_FAKES_H */
