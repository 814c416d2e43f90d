/*
 * openapi.c - compiles a Gateway spec ({"openapi": doc, "hosts": [...]})
 * into a gw_spec: one gw_route per operation, each with its backend from
 * the Google API Gateway extension x-google-backend.  Errors name the JSON
 * pointer of the offending value; a spec is accepted or rejected whole.
 *
 * Forms accepted (see docs/internals/gateway.md):
 *   - OpenAPI 3.0.x / 3.1.x and Swagger 2.0 (`basePath` prefixes paths);
 *   - x-google-backend as an object {address, path_translation, deadline,
 *     protocol, jwt_audience, disable_auth} at the top level and/or on an
 *     operation (defaults APPEND_PATH_TO_ADDRESS / CONSTANT_ADDRESS);
 *   - the OpenAPI 3.x form: x-google-backend as the name of a backend in
 *     x-google-api-management.backends (camelCase fields).
 */
#include "gateway/gw_int.h"
#include "core/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PTR_MAX 2048                 /* longest JSON pointer we print */

static const char *const methods[][2] = {
    { "get", "GET" }, { "put", "PUT" }, { "post", "POST" },
    { "delete", "DELETE" }, { "options", "OPTIONS" }, { "head", "HEAD" },
    { "patch", "PATCH" }, { "trace", "TRACE" },
};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

/* Path-item keys that are not operations and need nothing from us. */
static const char *const path_item_other[] = {
    "summary", "description", "parameters", "servers",
};

/*
 * Fields of a backend object.  Swagger 2.0 and the inline form use
 * snake_case; x-google-api-management backends use camelCase.  Both are
 * accepted everywhere, so a spec moved between the forms keeps working.
 */
typedef enum { BF_ADDRESS, BF_PT, BF_DEADLINE, BF_PROTOCOL, BF_JWT_AUD,
               BF_DISABLE_AUTH } backend_field;

static const struct {
    const char   *name;
    backend_field field;
} backend_fields[] = {
    { "address", BF_ADDRESS },
    { "path_translation", BF_PT },       { "pathTranslation", BF_PT },
    { "deadline", BF_DEADLINE },
    { "protocol", BF_PROTOCOL },
    { "jwt_audience", BF_JWT_AUD },      { "jwtAudience", BF_JWT_AUD },
    { "disable_auth", BF_DISABLE_AUTH }, { "disableAuth", BF_DISABLE_AUTH },
};
#define NBACKEND_FIELDS (sizeof(backend_fields) / sizeof(backend_fields[0]))

/* Compile state for one spec. */
typedef struct cc {
    char         *err;
    size_t        errlen;
    gw_spec      *s;
    const json_t *doc;
    const json_t *registry;          /* x-google-api-management.backends */
    const char   *base;              /* Swagger 2.0 basePath, or "" */
    size_t        base_len;
    kb_router    *router;            /* catches duplicates inside the spec */
    size_t        routes_cap;
    bool          allow_cors;        /* x-google-endpoints allowCors */
} cc;

/* "pointer: reason" into the caller's err; returns KB_EINVAL. */
#define fail(c, ...) gw__spec_fail((c)->err, (c)->errlen, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */

/* Address path: empty, or '/' then printable characters other than
 * '?', '#' and space. */
static const char *
address_path_check(const char *p)
{
    if (*p == '\0')
        return NULL;
    for (const char *q = p; *q != '\0'; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '?')
            return "not a valid URL: a query string in the address is not "
                   "supported";
        if (ch == '#' || ch <= 0x20 || ch >= 0x7f)
            return "not a valid URL: bad character in the path";
    }
    return NULL;
}

static char *
dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

const char *
gw__address_parse(const char *a, gw_backend *b)
{
    /* scheme → TLS, HTTP/2, default port (grpc:// as ESPv2 takes it) */
    static const struct {
        const char *scheme;
        bool        tls, h2;
        long        port;
    } schemes[] = {
        { "http://", false, false, 80 },   { "https://", true, false, 443 },
        { "grpc://", false, true, 80 },    { "grpcs://", true, true, 443 },
    };
    const char *auth, *end, *path, *host, *hend, *colon = NULL;
    const char *why;
    long port = 80, default_port;
    bool v6 = false;
    size_t k;

    if (strncasecmp(a, "service://", 10) == 0) {
        const char *name = a + 10;
        size_t n = strcspn(name, "/@"), tn = 0;
        const char *tag = name[n] == '@' ? name + n + 1 : NULL;
        if (!gw__label_ok(name, n, GW_MAX_LABEL))
            return "not a valid URL: service://NAME needs a service name "
                   "(lower-case letters, digits and '-')";
        if (tag != NULL) {
            tn = strcspn(tag, "/");
            if (!gw__label_ok(tag, tn, GW_MAX_TAG))
                return "not a valid URL: service://NAME@TAG needs a tag of "
                       "1 to 46 lower-case letters, digits and '-' (a "
                       "letter first, no '-' last)";
        }
        if ((why = address_path_check(tag != NULL ? tag + tn : name + n)) !=
            NULL)
            return why;
        b->service = dup_n(name, n);
        if (tag != NULL)
            b->tag = dup_n(tag, tn);
        /* path NULL tells the caller memory ran out */
        b->path = tag == NULL || b->tag != NULL
                      ? strdup(tag != NULL ? tag + tn : name + n)
                      : NULL;
        return NULL;
    }
    for (k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++)
        if (strncasecmp(a, schemes[k].scheme, strlen(schemes[k].scheme)) == 0)
            break;
    if (k == sizeof(schemes) / sizeof(schemes[0]))
        return "not a valid URL (http[s]://host[:port][/path], "
               "grpc[s]://host[:port] or service://NAME)";
    b->tls = schemes[k].tls;
    b->h2 = schemes[k].h2;
    port = default_port = schemes[k].port;
    auth = a + strlen(schemes[k].scheme);
    end = auth + strcspn(auth, "/?#");
    if (*end == '?' || *end == '#')
        return "not a valid URL: a query string in the address is not "
               "supported";
    path = end;
    if (memchr(auth, '@', (size_t)(end - auth)) != NULL)
        return "not a valid URL: user information is not allowed";
    host = auth;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (close == NULL || close == host + 1)
            return "not a valid URL: bad IPv6 address";
        for (const char *q = host + 1; q < close; q++)
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
                return "not a valid URL: bad IPv6 address";
        v6 = true;
        hend = close + 1;
        if (hend < end && *hend != ':')
            return "not a valid URL: bad IPv6 address";
        colon = hend < end ? hend : NULL;
    } else {
        colon = memchr(host, ':', (size_t)(end - host));
        hend = colon != NULL ? colon : end;
        if (hend == host)
            return "not a valid URL: no host";
        for (const char *q = host; q < hend; q++)
            if (!isalnum((unsigned char)*q) && *q != '.' && *q != '-' &&
                *q != '_')
                return "not a valid URL: bad character in the host";
    }
    if (colon != NULL) {
        char *stop;
        size_t n = (size_t)(end - colon - 1);
        if (n == 0 || n > 5)
            return "not a valid URL: bad port";
        for (size_t i = 0; i < n; i++)
            if (!isdigit((unsigned char)colon[1 + i]))
                return "not a valid URL: bad port";
        port = strtol(colon + 1, &stop, 10);
        if (port < 1 || port > 65535)
            return "not a valid URL: bad port";
    }
    if ((why = address_path_check(path)) != NULL)
        return why;
    b->host = v6 ? dup_n(host + 1, (size_t)(hend - host - 2))
                 : dup_n(host, (size_t)(hend - host));
    b->port = (int)port;
    /* Host header: as written, lower-cased, without a default port */
    b->authority = port == default_port ? dup_n(host, (size_t)(hend - host))
                              : dup_n(host, (size_t)(end - host));
    if (b->authority != NULL)
        for (char *q = b->authority; *q != '\0'; q++)
            *q = (char)tolower((unsigned char)*q);
    b->path = strdup(path);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Backends                                                                  */

static void
backend_free(gw_backend *b)
{
    free(b->service);
    free(b->tag);
    free(b->host);
    free(b->authority);
    free(b->path);
    free(b->jwt_audience);
    free(b);
}

/*
 * Parse a backend object at `ptr` into a new gw_backend (linked into the
 * spec).  pt_default applies when the object sets no path translation.
 */
static int
backend_object(cc *c, const json_t *obj, const char *ptr,
               gw_path_translation pt_default, const gw_backend **out)
{
    char p[PTR_MAX];
    const char *key, *why;
    const json_t *v;
    const json_t *address = NULL;
    gw_backend *b;
    double deadline = GW_DEFAULT_DEADLINE_S;
    gw_path_translation pt = GW_PT_UNSET;
    int protocol = 0;                /* 0: as the address says */
    const char *jwt_audience = NULL;
    bool disable_auth = false;

    if (!json_is_object(obj))
        return fail(c, ptr, "must be an object with an address (or, in "
                            "OpenAPI 3.x, the name of a backend)");
    json_object_foreach((json_t *)obj, key, v) {
        size_t i;
        for (i = 0; i < NBACKEND_FIELDS; i++)
            if (strcmp(key, backend_fields[i].name) == 0)
                break;
        gw__pointer_join(p, sizeof(p), ptr, key);
        if (i == NBACKEND_FIELDS)
            return fail(c, p, "unknown field (address, path_translation, "
                              "deadline, protocol, jwt_audience, "
                              "disable_auth)");
        switch (backend_fields[i].field) {
        case BF_ADDRESS:
            if (!json_is_string(v))
                return fail(c, p, "must be a string");
            address = v;
            break;
        case BF_PT:
            if (json_is_string(v) &&
                strcmp(json_string_value(v), "APPEND_PATH_TO_ADDRESS") == 0)
                pt = GW_PT_APPEND;
            else if (json_is_string(v) &&
                     strcmp(json_string_value(v), "CONSTANT_ADDRESS") == 0)
                pt = GW_PT_CONSTANT;
            else
                return fail(c, p, "must be APPEND_PATH_TO_ADDRESS or "
                                  "CONSTANT_ADDRESS");
            break;
        case BF_DEADLINE:
            if (!json_is_number(v))
                return fail(c, p, "must be a number of seconds");
            deadline = json_number_value(v);
            if (!(deadline > 0))
                return fail(c, p, "must be greater than 0");
            if (deadline > GW_MAX_DEADLINE_S)
                return fail(c, p, "must be at most %.0f seconds",
                            GW_MAX_DEADLINE_S);
            break;
        case BF_PROTOCOL:
            if (!json_is_string(v))
                return fail(c, p, "must be a string");
            if (strcmp(json_string_value(v), "h2") == 0)
                protocol = 2;
            else if (strcmp(json_string_value(v), "http/1.1") == 0)
                protocol = 1;
            else
                return fail(c, p, "must be http/1.1 or h2");
            break;
        case BF_JWT_AUD:
            if (!json_is_string(v))
                return fail(c, p, "must be a string");
            jwt_audience = json_string_value(v);
            break;
        case BF_DISABLE_AUTH:
            if (!json_is_boolean(v))
                return fail(c, p, "must be true or false");
            disable_auth = json_is_true(v);
            break;
        }
    }
    if (address == NULL) {
        gw__pointer_join(p, sizeof(p), ptr, "address");
        return fail(c, p, "required");
    }
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return KB_ENOMEM;
    gw__pointer_join(p, sizeof(p), ptr, "address");
    if ((why = gw__address_parse(json_string_value(address), b)) != NULL) {
        backend_free(b);
        return fail(c, p, "%s", why);
    }
    if (b->path == NULL || (b->service == NULL &&
                            (b->host == NULL || b->authority == NULL))) {
        backend_free(b);
        return KB_ENOMEM;
    }
    if (protocol != 0)
        b->h2 = protocol == 2;
    b->disable_auth = disable_auth;
    if (jwt_audience != NULL &&
        (b->jwt_audience = strdup(jwt_audience)) == NULL) {
        backend_free(b);
        return KB_ENOMEM;
    }
    b->pt = pt != GW_PT_UNSET ? pt : pt_default;
    b->deadline_ms = (uint64_t)(deadline * 1000.0 + 0.5);
    if (b->deadline_ms == 0)
        b->deadline_ms = 1;
    b->next = c->s->backends;
    c->s->backends = b;
    *out = b;
    return 0;
}

/*
 * An x-google-backend value at `ptr`: an object, or (OpenAPI 3.x) the name
 * of a backend in x-google-api-management.backends.
 */
static int
backend_value(cc *c, const json_t *v, const char *ptr,
              gw_path_translation pt_default, const gw_backend **out)
{
    char p[PTR_MAX];
    const json_t *def;

    if (!json_is_string(v))
        return backend_object(c, v, ptr, pt_default, out);
    def = c->registry != NULL ? json_object_get(c->registry,
                                                json_string_value(v))
                              : NULL;
    if (def == NULL)
        return fail(c, ptr, "backend \"%s\" is not defined in "
                            "/x-google-api-management/backends",
                    json_string_value(v));
    gw__pointer_join(p, sizeof(p), "/x-google-api-management/backends",
                     json_string_value(v));
    return backend_object(c, def, p, pt_default, out);
}

/* ------------------------------------------------------------------------ */
/* Hosts                                                                     */

static bool
host_ok(const char *h)
{
    size_t n = strlen(h);

    if (n == 0 || n > 253)
        return false;
    if (h[0] == '[')             /* IPv6 literal, as in a Host header */
        return n > 2 && h[n - 1] == ']' &&
               strspn(h + 1, "0123456789abcdefABCDEF:.") == n - 2;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' &&
            h[i] != '_')
            return false;
    return h[0] != '.' && h[0] != '-';
}

static int
compile_hosts(cc *c, const json_t *hosts)
{
    size_t i;
    const json_t *v;

    if (hosts == NULL || json_is_null(hosts))
        return 0;
    if (!json_is_array(hosts))
        return fail(c, "/hosts", "must be an array of host names");
    if (json_array_size(hosts) > GW_MAX_HOSTS)
        return fail(c, "/hosts", "at most %d hosts", GW_MAX_HOSTS);
    c->s->hosts = calloc(json_array_size(hosts) + 1, sizeof(char *));
    if (c->s->hosts == NULL)
        return KB_ENOMEM;
    json_array_foreach(hosts, i, v) {
        char p[64], *h;
        size_t n;

        snprintf(p, sizeof(p), "/hosts/%zu", i);
        if (!json_is_string(v) || !host_ok(json_string_value(v)))
            return fail(c, p, "not a valid host name (a name such as "
                              "\"api.example.com\", without scheme, port "
                              "or path)");
        h = strdup(json_string_value(v));
        if (h == NULL)
            return KB_ENOMEM;
        n = strlen(h);
        if (n > 1 && h[n - 1] == '.')        /* "example.com." */
            h[n - 1] = '\0';
        for (char *q = h; *q != '\0'; q++)
            *q = (char)tolower((unsigned char)*q);
        for (size_t k = 0; k < c->s->nhosts; k++)
            if (strcmp(c->s->hosts[k], h) == 0) {
                free(h);
                return fail(c, p, "duplicate host");
            }
        c->s->hosts[c->s->nhosts++] = h;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Paths and operations                                                      */

/* Template shape: parameter names blanked, for "same route" messages. */
static void
template_shape(const char *t, kb_buf *out)
{
    while (*t != '\0') {
        if (*t == '{') {
            const char *close = strchr(t, '}');
            const char *eq;
            if (close == NULL)
                break;
            eq = memchr(t, '=', (size_t)(close - t));
            kb_buf_appends(out, eq != NULL && close - eq == 3 ? "{**}" : "{}");
            t = close + 1;
            continue;
        }
        kb_buf_appendc(out, *t++);
    }
}

/* The earlier route of this spec with the same method and shape. */
static const gw_route *
route_twin(const gw_spec *s, const char *method, const char *template)
{
    kb_buf a = KB_BUF_INIT(1 << 16), b = KB_BUF_INIT(1 << 16);
    const gw_route *twin = NULL;

    template_shape(template, &a);
    for (size_t i = 0; i < s->nroutes && twin == NULL; i++) {
        if (strcmp(s->routes[i].method, method) != 0)
            continue;
        kb_buf_reset(&b);
        template_shape(s->routes[i].template, &b);
        if (strcmp(kb_buf_cstr(&a), kb_buf_cstr(&b)) == 0)
            twin = &s->routes[i];
    }
    kb_buf_free(&a);
    kb_buf_free(&b);
    return twin;
}

static int
add_route(cc *c, const char *method, const char *path_key, const char *ptr,
          const json_t *op, const gw_backend *backend)
{
    gw_route *r;
    const char *why = NULL;
    size_t tlen = c->base_len + strlen(path_key);
    int rc;

    if (c->s->nroutes == GW_MAX_ROUTES)
        return fail(c, ptr, "too many operations (at most %d)",
                    GW_MAX_ROUTES);
    if (c->s->nroutes == c->routes_cap) {
        size_t cap = c->routes_cap ? c->routes_cap * 2 : 16;
        gw_route *grown = realloc(c->s->routes, cap * sizeof(gw_route));
        if (grown == NULL)
            return KB_ENOMEM;
        c->s->routes = grown;
        c->routes_cap = cap;
    }
    r = &c->s->routes[c->s->nroutes];
    memset(r, 0, sizeof(*r));
    r->method = method;
    r->template = malloc(tlen + 1);
    r->label = malloc(strlen(method) + 1 + tlen + 1);
    r->pointer = strdup(ptr);
    if (r->template == NULL || r->label == NULL || r->pointer == NULL)
        goto out_free;
    memcpy(r->template, c->base, c->base_len);
    if (c->base_len > 0 && strcmp(path_key, "/") == 0)
        r->template[c->base_len] = '\0';        /* basePath "/v1" + "/" */
    else
        memcpy(r->template + c->base_len, path_key, strlen(path_key) + 1);
    snprintf(r->label, strlen(method) + 1 + tlen + 1, "%s %s", method,
             r->template);
    r->backend = backend;
    r->spec = c->s;
    r->op = op;
    /* this router only catches duplicates; table.c builds the real ones */
    rc = kb_router_add(c->router, method, r->template, r, &why);
    if (rc == KB_EEXIST) {
        const gw_route *twin = route_twin(c->s, method, r->template);
        rc = fail(c, ptr, "%s has the same method and path as %s",
                  r->label, twin != NULL ? twin->pointer : "another path");
        goto out_free_rc;
    }
    if (rc != 0) {
        rc = rc == KB_EINVAL ? fail(c, ptr, "invalid path template \"%s\": "
                                            "%s", r->template, why)
                             : rc;
        goto out_free_rc;
    }
    c->s->nroutes++;
    return 0;

out_free:
    rc = KB_ENOMEM;
out_free_rc:
    free(r->template);
    free(r->label);
    free(r->pointer);
    return rc;
}

/*
 * x-google-endpoints allowCors: true (as ESPv2): CORS preflights reach the
 * backend unauthenticated.  A path without its own OPTIONS operation gets
 * one (in our copy of the document) sent where its first operation goes.
 */
static int
add_cors_passthrough(json_t *item)
{
    const json_t *first = NULL, *xb;
    json_t *op;

    if (json_object_get(item, "options") != NULL)
        return 0;
    for (size_t i = 0; i < NMETHODS && first == NULL; i++)
        if (json_is_object(json_object_get(item, methods[i][0])))
            first = json_object_get(item, methods[i][0]);
    if (first == NULL)
        return 0;
    op = json_pack("{s:[], s:b}", "security", "x-kiban-generated", 1);
    if (op == NULL)
        return KB_ENOMEM;
    xb = json_object_get(first, "x-google-backend");
    if ((xb != NULL && json_object_set(op, "x-google-backend",
                                       (json_t *)xb) != 0) ||
        json_object_set_new(item, "options", op) != 0)
        return KB_ENOMEM;
    return 0;
}

static int
compile_path_item(cc *c, const char *path_key, const json_t *item,
                  const gw_backend *top)
{
    char ptr[PTR_MAX], p[PTR_MAX];
    const char *key;
    const json_t *v;
    int rc;

    gw__pointer_join(ptr, sizeof(ptr), "/paths", path_key);
    if (path_key[0] != '/')
        return fail(c, ptr, "path must start with '/'");
    if (!json_is_object(item))
        return fail(c, ptr, "must be an object (a path item)");
    if (c->allow_cors && (rc = add_cors_passthrough((json_t *)item)) != 0)
        return rc;
    json_object_foreach((json_t *)item, key, v) {
        size_t i;
        const gw_backend *backend = top;
        const json_t *xb;

        gw__pointer_join(p, sizeof(p), ptr, key);
        if (strcmp(key, "$ref") == 0)
            return fail(c, p, "$ref path items are not supported");
        if (strcmp(key, "x-google-backend") == 0)
            return fail(c, p, "x-google-backend belongs on the document or "
                              "on an operation, not on a path");
        for (i = 0; i < NMETHODS; i++)
            if (strcmp(key, methods[i][0]) == 0)
                break;
        if (i == NMETHODS) {
            bool known = strncmp(key, "x-", 2) == 0;
            for (size_t k = 0; k < sizeof(path_item_other) /
                                   sizeof(path_item_other[0]); k++)
                known |= strcmp(key, path_item_other[k]) == 0;
            if (known)
                continue;
            return fail(c, p, "unknown operation (get, put, post, delete, "
                              "options, head, patch, trace)");
        }
        if (!json_is_object(v))
            return fail(c, p, "must be an object (an operation)");
        xb = json_object_get(v, "x-google-backend");
        if (xb != NULL) {
            char bp[PTR_MAX];
            gw__pointer_join(bp, sizeof(bp), p, "x-google-backend");
            if ((rc = backend_value(c, xb, bp, GW_PT_CONSTANT, &backend)) != 0)
                return rc;
        }
        if (backend == NULL &&
            json_object_get(v, "x-kiban-aggregate") == NULL)
            return fail(c, p, "no backend: set x-google-backend on this "
                              "operation or at the top level (or "
                              "x-kiban-aggregate)");
        if ((rc = add_route(c, methods[i][1], path_key, p, v, backend)) != 0)
            return rc;
    }
    return 0;
}

static int
compile_doc(cc *c, const json_t *doc)
{
    const json_t *v, *paths, *mgmt, *xb;
    const gw_backend *top = NULL;
    const char *key;
    int rc;

    if (doc == NULL)
        return fail(c, "/openapi", "required (an OpenAPI 3.x or Swagger 2.0 "
                                   "document)");
    if (!json_is_object(doc))
        return fail(c, "/openapi", "must be an object (an OpenAPI 3.x or "
                                   "Swagger 2.0 document)");
    c->doc = doc;
    c->base = "";
    if ((v = json_object_get(doc, "openapi")) != NULL) {
        const char *ver = json_string_value(v);
        if (ver == NULL || !(strncmp(ver, "3.0", 3) == 0 ||
                             strncmp(ver, "3.1", 3) == 0) ||
            (ver[3] != '\0' && ver[3] != '.'))
            return fail(c, "/openapi", "unsupported OpenAPI version (3.0.x "
                                       "and 3.1.x are supported, and "
                                       "swagger 2.0)");
    } else if ((v = json_object_get(doc, "swagger")) != NULL) {
        const json_t *bp = json_object_get(doc, "basePath");
        if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0)
            return fail(c, "/swagger", "must be \"2.0\"");
        if (bp != NULL) {
            const char *b = json_string_value(bp);
            if (b == NULL || b[0] != '/' || strpbrk(b, "{}?#") != NULL)
                return fail(c, "/basePath", "must be a path starting with "
                                            "'/' (no parameters)");
            c->base = b;
            c->base_len = strlen(b);
            while (c->base_len > 0 && c->base[c->base_len - 1] == '/')
                c->base_len--;   /* "/" and "/v1/" */
        }
    } else {
        return fail(c, "", "not an OpenAPI document: neither \"openapi\" "
                           "(3.x) nor \"swagger\" (2.0) is set");
    }

    mgmt = json_object_get(doc, "x-google-api-management");
    if (mgmt != NULL) {
        if (!json_is_object(mgmt))
            return fail(c, "/x-google-api-management", "must be an object");
        c->registry = json_object_get(mgmt, "backends");
        if (c->registry != NULL && !json_is_object(c->registry))
            return fail(c, "/x-google-api-management/backends",
                        "must be an object of named backends");
        if (c->registry != NULL) {   /* check every one, used or not */
            json_object_foreach((json_t *)c->registry, key, v) {
                char p[PTR_MAX];
                const gw_backend *unused;
                gw__pointer_join(p, sizeof(p),
                                 "/x-google-api-management/backends", key);
                if ((rc = backend_object(c, v, p, GW_PT_APPEND, &unused)) != 0)
                    return rc;
            }
        }
    }
    v = json_object_get(doc, "x-google-endpoints");
    if (v != NULL) {
        size_t i;
        const json_t *e;
        if (!json_is_array(v))
            return fail(c, "/x-google-endpoints", "must be an array");
        json_array_foreach(v, i, e) {
            const json_t *ac = json_object_get(e, "allowCors");
            char p[PTR_MAX];
            snprintf(p, sizeof(p), "/x-google-endpoints/%zu/allowCors", i);
            if (ac != NULL && !json_is_boolean(ac))
                return fail(c, p, "must be true or false");
            c->allow_cors |= json_is_true(ac);
        }
    }
    xb = json_object_get(doc, "x-google-backend");
    if (xb != NULL &&
        (rc = backend_value(c, xb, "/x-google-backend", GW_PT_APPEND,
                            &top)) != 0)
        return rc;

    paths = json_object_get(doc, "paths");
    if (paths == NULL)
        return fail(c, "/paths", "required");
    if (!json_is_object(paths))
        return fail(c, "/paths", "must be an object");
    json_object_foreach((json_t *)paths, key, v) {
        if (strncmp(key, "x-", 2) == 0)
            continue;
        if ((rc = compile_path_item(c, key, v, top)) != 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */

static void
spec_free(gw_spec *s)
{
    /* each release frees only what its compile built (NULL-safe) */
    gw__aggregate_release(s);
    gw__cache_release(s);
    gw__validate_release(s);
    gw__ratelimit_release(s);
    gw__auth_release(s);
    gw__cors_release(s);
    for (size_t i = 0; i < s->nroutes; i++) {
        free(s->routes[i].template);
        free(s->routes[i].label);
        free(s->routes[i].pointer);
    }
    free(s->routes);
    while (s->backends != NULL) {
        gw_backend *next = s->backends->next;
        backend_free(s->backends);
        s->backends = next;
    }
    for (size_t i = 0; i < s->nhosts; i++)
        free(s->hosts[i]);
    free(s->hosts);
    free(s->project);
    free(s->name);
    free(s->id);
    json_decref(s->spec);
    free(s);
}

int
gw__spec_compile(const json_t *spec, const char *project, const char *name,
                 gw_spec **out, char *err, size_t errlen)
{
    cc c;
    gw_spec *s;
    int rc;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    memset(&c, 0, sizeof(c));
    c.err = err;
    c.errlen = errlen;
    if (!json_is_object(spec))
        return fail(&c, "", "a Gateway spec must be an object "
                            "{\"openapi\": {...}, \"hosts\": [...]}");
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KB_ENOMEM;
    atomic_init(&s->refs, 1);
    c.s = s;
    /* Our own copy: routes point into it (op), so it must not change. */
    s->spec = json_deep_copy(spec);
    s->project = strdup(project != NULL ? project : "");
    s->name = strdup(name != NULL ? name : "");
    c.router = kb_router_create();
    if (s->spec == NULL || s->project == NULL || s->name == NULL ||
        c.router == NULL ||
        asprintf(&s->id, "%s/%s", s->project, s->name) < 0) {
        s->id = NULL;
        rc = KB_ENOMEM;
        goto out_free_spec;
    }
    s->doc = json_object_get(s->spec, "openapi");
    if ((rc = compile_hosts(&c, json_object_get(s->spec, "hosts"))) != 0 ||
        (rc = compile_doc(&c, s->doc)) != 0 ||
        (rc = gw__cors_compile(s, err, errlen)) != 0 ||
        (rc = gw__auth_compile(s, err, errlen)) != 0 ||
        (rc = gw__ratelimit_compile(s, err, errlen)) != 0 ||
        (rc = gw__validate_compile(s, err, errlen)) != 0 ||
        (rc = gw__cache_compile(s, err, errlen)) != 0 ||
        (rc = gw__aggregate_compile(s, err, errlen)) != 0)
        goto out_free_spec;
    kb_router_free(c.router);
    *out = s;
    return 0;

out_free_spec:
    kb_router_free(c.router);
    spec_free(s);
    return rc;
}

gw_spec *
gw__spec_ref(gw_spec *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void
gw__spec_unref(gw_spec *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
        spec_free(s);
}

int
kb_gateway_validate(const json_t *spec, char *err, size_t errlen)
{
    gw_spec *s;
    int rc = gw__spec_compile(spec, NULL, NULL, &s, err, errlen);

    gw__spec_unref(s);
    return rc;
}
