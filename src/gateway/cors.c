/*
 * cors.c - CORS from the spec (x-kiban-cors on the document or an
 * operation): Access-Control-* headers on actual requests, and preflights
 * answered at the gateway (the cors stage, and gw__cors_preflight() for
 * paths without an OPTIONS operation).  See docs/gateway.md#cors.
 */
#include "gateway/gw_int.h"
#include "core/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CORS_PTR_MAX      1024
#define CORS_MAX_ORIGINS  256
#define CORS_MAX_LIST     128        /* methods / headers in one list */
#define CORS_MAX_AGE      86400      /* what browsers cap at, at most */
#define CORS_MAX_ECHO     1024       /* Access-Control-Request-Headers */

/* One route's policy (each route owns its own copy). */
struct gw_cors {
    char  **origins;                 /* lower case; "*.": any subdomain */
    size_t  norigins;
    bool    any_origin;              /* "*" */
    char   *methods;                 /* "GET, POST"; NULL: the path's */
    char   *headers;                 /* Allow-Headers, or NULL */
    bool    echo_headers;            /* allowHeaders ["*"] */
    char   *expose;                  /* Expose-Headers, or NULL */
    long    max_age;                 /* -1: not sent */
    bool    credentials;
};

/* ------------------------------------------------------------------------ */
/* Matching (pure, unit tested)                                              */

static bool
tchar(int ch)
{
    return isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool
token_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!tchar((unsigned char)*s))
            return false;
    return true;
}

/*
 * Is `origin` (from the request) allowed by pattern `pat` (lower case,
 * checked at compile)?  Exact match, case-insensitive; or, for
 * "scheme://" "*." "example.com[:port]", any subdomain of example.com (not the
 * domain itself) with that scheme and port.
 */
static bool
origin_match(const char *pat, const char *origin)
{
    const char *star = strstr(pat, "://*.");
    size_t pre, rest, olen, sub;

    if (star == NULL)
        return strcasecmp(pat, origin) == 0;
    pre = (size_t)(star - pat) + 3;           /* "https://" */
    rest = strlen(star + 4);                   /* ".example.com:8443" */
    olen = strlen(origin);
    if (olen <= pre + rest || strncasecmp(origin, pat, pre) != 0 ||
        strcasecmp(origin + olen - rest, star + 4) != 0)
        return false;
    sub = olen - pre - rest;                   /* "a.b" in a.b.example.com */
    for (size_t i = 0; i < sub; i++) {
        unsigned char ch = (unsigned char)origin[pre + i];
        if (!isalnum(ch) && ch != '-' && ch != '.')
            return false;
    }
    return origin[pre] != '.';
}

static bool
origin_allowed(const struct gw_cors *p, const char *origin)
{
    if (p->any_origin)
        return true;
    for (size_t i = 0; i < p->norigins; i++)
        if (origin_match(p->origins[i], origin))
            return true;
    return false;
}

/* Is `method` one of the ", "-separated list (case-sensitive)? */
static bool
method_listed(const char *list, const char *method)
{
    size_t n = strlen(method);

    for (const char *p = list; p != NULL && *p != '\0';) {
        size_t k = strcspn(p, ", ");
        if (k == n && strncmp(p, method, n) == 0)
            return true;
        p += k;
        p += strspn(p, ", ");
    }
    return false;
}

/* An Access-Control-Request-Headers value we may echo: header names,
 * commas and spaces only, bounded. */
static bool
echo_ok(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > CORS_MAX_ECHO)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (!tchar(ch) && ch != ',' && ch != ' ' && ch != '\t')
            return false;
    }
    return true;
}

/*
 * A configured origin: "*", or scheme://host[:port] with no path, where
 * host may start with "*." (any subdomain).  Returns NULL, or why not.
 */
static const char *
origin_check(const char *o)
{
    const char *p = o, *host;
    size_t n;

    if (strcmp(o, "*") == 0)
        return NULL;
    if (strcmp(o, "null") == 0)
        return "\"null\" is not allowed (sandboxed frames and local files "
               "all send it; allowing it allows them all)";
    if (!isalpha((unsigned char)*p))
        return "must be \"*\" or an origin such as \"https://app.example\"";
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0)
        return "must be \"*\" or an origin such as \"https://app.example\" "
               "(scheme://host[:port])";
    host = p += 3;
    if (strncmp(p, "*.", 2) == 0)
        p += 2;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (close == NULL || close == p + 1 || p != host)
            return "bad IPv6 address";
        for (const char *q = p + 1; q < close; q++)
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
                return "bad IPv6 address";
        p = close + 1;
    } else {
        n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789-.");
        if (n == 0)
            return "no host";
        p += n;
    }
    if (*p == ':') {
        n = strspn(p + 1, "0123456789");
        if (n == 0 || n > 5 || strtol(p + 1, NULL, 10) > 65535)
            return "bad port";
        p += 1 + n;
    }
    if (*p == '/')
        return "an origin has no path (not even a trailing \"/\")";
    if (*p != '\0')
        return "bad character in the origin";
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Compiling                                                                 */

typedef struct corsc {
    char  *err;
    size_t errlen;
} corsc;

/* "pointer: reason" into the caller's err; returns KB_EINVAL. */
#define cors_fail(c, ...) gw__spec_fail((c)->err, (c)->errlen, __VA_ARGS__)

static void
cors_free(struct gw_cors *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->norigins; i++)
        free(p->origins[i]);
    free(p->origins);
    free(p->methods);
    free(p->headers);
    free(p->expose);
    free(p);
}

/*
 * A list of tokens at `ptr` joined with ", " into *out.  `star` allows a
 * lone "*" (*is_star set, *out NULL).  0, KB_EINVAL, KB_ENOMEM.
 */
static int
token_list(corsc *c, const json_t *v, const char *ptr, const char *what,
           bool star, char **out, bool *is_star)
{
    kb_buf b = KB_BUF_INIT(16384);
    char p[CORS_PTR_MAX];
    size_t i;
    const json_t *e;

    *out = NULL;
    if (is_star != NULL)
        *is_star = false;
    if (!json_is_array(v))
        return cors_fail(c, ptr, "must be an array of %s", what);
    if (json_array_size(v) > CORS_MAX_LIST)
        return cors_fail(c, ptr, "at most %d entries", CORS_MAX_LIST);
    json_array_foreach(v, i, e) {
        const char *s = json_string_value(e);
        snprintf(p, sizeof(p), "%s/%zu", ptr, i);
        if (star && s != NULL && strcmp(s, "*") == 0) {
            if (json_array_size(v) != 1) {
                kb_buf_free(&b);
                return cors_fail(c, p, "\"*\" must be the only entry");
            }
            *is_star = true;
            return 0;
        }
        if (s == NULL || !token_ok(s) || (!star && strcmp(s, "*") == 0)) {
            kb_buf_free(&b);
            return cors_fail(c, p, "must be %s (a token such as %s)", what,
                             star ? "\"X-Request-Id\"" : "\"GET\"");
        }
        if ((i > 0 && kb_buf_appends(&b, ", ") != 0) ||
            kb_buf_appends(&b, s) != 0) {
            kb_buf_free(&b);
            return KB_ENOMEM;
        }
    }
    if (b.len == 0) {
        kb_buf_free(&b);
        return 0;                    /* [] : nothing to send */
    }
    *out = kb_buf_detach(&b);
    kb_buf_free(&b);
    return *out != NULL ? 0 : KB_ENOMEM;
}

typedef enum { CF_ORIGINS, CF_METHODS, CF_HEADERS, CF_EXPOSE, CF_MAX_AGE,
               CF_CREDENTIALS } cors_field;

static const struct {
    const char *name;
    cors_field  field;
} cors_fields[] = {
    { "allowOrigins", CF_ORIGINS },   { "allowMethods", CF_METHODS },
    { "allowHeaders", CF_HEADERS },   { "exposeHeaders", CF_EXPOSE },
    { "maxAge", CF_MAX_AGE },         { "allowCredentials", CF_CREDENTIALS },
};
#define CORS_NFIELDS (sizeof(cors_fields) / sizeof(cors_fields[0]))

/* Parse an x-kiban-cors object at `ptr`.  0 and *out, KB_EINVAL,
 * KB_ENOMEM. */
static int
cors_parse(corsc *c, const json_t *v, const char *ptr, struct gw_cors **out)
{
    struct gw_cors *p;
    const json_t *fv, *origins = NULL;
    const char *k;
    char fp[CORS_PTR_MAX];
    size_t star_at = 0;
    bool star_expose = false;
    int rc = KB_ENOMEM;

    *out = NULL;
    if (!json_is_object(v))
        return cors_fail(c, ptr, "must be an object {allowOrigins, "
                                 "allowMethods, allowHeaders, exposeHeaders, "
                                 "maxAge, allowCredentials} or false");
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return KB_ENOMEM;
    p->max_age = -1;
    json_object_foreach((json_t *)v, k, fv) {
        size_t i;
        for (i = 0; i < CORS_NFIELDS; i++)
            if (strcmp(k, cors_fields[i].name) == 0)
                break;
        gw__pointer_join(fp, sizeof(fp), ptr, k);
        if (i == CORS_NFIELDS) {
            rc = cors_fail(c, fp, "unknown field (allowOrigins, "
                                  "allowMethods, allowHeaders, "
                                  "exposeHeaders, maxAge, "
                                  "allowCredentials)");
            goto out_free;
        }
        switch (cors_fields[i].field) {
        case CF_ORIGINS:
            origins = fv;
            break;
        case CF_METHODS:
            if ((rc = token_list(c, fv, fp, "HTTP methods", false,
                                 &p->methods, NULL)) != 0)
                goto out_free;
            if (p->methods == NULL) {
                rc = cors_fail(c, fp, "must list at least one method (or "
                                      "leave it out: the path's methods)");
                goto out_free;
            }
            break;
        case CF_HEADERS:
            if ((rc = token_list(c, fv, fp, "header names", true,
                                 &p->headers, &p->echo_headers)) != 0)
                goto out_free;
            break;
        case CF_EXPOSE:
            if ((rc = token_list(c, fv, fp, "header names", true,
                                 &p->expose, &star_expose)) != 0)
                goto out_free;
            if (star_expose && (p->expose = strdup("*")) == NULL) {
                rc = KB_ENOMEM;
                goto out_free;
            }
            break;
        case CF_MAX_AGE:
            if (!json_is_integer(fv) || json_integer_value(fv) < 0 ||
                json_integer_value(fv) > CORS_MAX_AGE) {
                rc = cors_fail(c, fp, "must be a whole number of seconds "
                                      "from 0 to %d", CORS_MAX_AGE);
                goto out_free;
            }
            p->max_age = (long)json_integer_value(fv);
            break;
        case CF_CREDENTIALS:
            if (!json_is_boolean(fv)) {
                rc = cors_fail(c, fp, "must be true or false");
                goto out_free;
            }
            p->credentials = json_is_true(fv);
            break;
        }
    }
    gw__pointer_join(fp, sizeof(fp), ptr, "allowOrigins");
    if (origins == NULL) {
        rc = cors_fail(c, fp, "required (an array of origins, or [\"*\"])");
        goto out_free;
    }
    if (!json_is_array(origins) || json_array_size(origins) == 0) {
        rc = cors_fail(c, fp, "must be a non-empty array of origins such as "
                              "\"https://app.example\", or [\"*\"]");
        goto out_free;
    }
    if (json_array_size(origins) > CORS_MAX_ORIGINS) {
        rc = cors_fail(c, fp, "at most %d origins", CORS_MAX_ORIGINS);
        goto out_free;
    }
    p->origins = calloc(json_array_size(origins), sizeof(char *));
    if (p->origins == NULL)
        goto out_free;
    for (size_t i = 0; i < json_array_size(origins); i++) {
        const char *o = json_string_value(json_array_get(origins, i));
        const char *why = o != NULL ? origin_check(o) : "must be a string";
        char ip[CORS_PTR_MAX + 24];

        snprintf(ip, sizeof(ip), "%s/%zu", fp, i);
        if (why != NULL) {
            rc = cors_fail(c, ip, "%s", why);
            goto out_free;
        }
        if (strcmp(o, "*") == 0) {
            p->any_origin = true;
            star_at = i;
            continue;
        }
        if ((p->origins[p->norigins] = strdup(o)) == NULL)
            goto out_free;
        for (char *q = p->origins[p->norigins]; *q != '\0'; q++)
            *q = (char)tolower((unsigned char)*q);
        p->norigins++;
    }
    if (p->credentials && p->any_origin) {
        char ip[CORS_PTR_MAX + 24];
        snprintf(ip, sizeof(ip), "%s/%zu", fp, star_at);
        rc = cors_fail(c, ip, "\"*\" cannot be used with allowCredentials: "
                              "true (browsers refuse credentials with a "
                              "wildcard origin); list the origins");
        goto out_free;
    }
    if (p->credentials && star_expose) {
        gw__pointer_join(fp, sizeof(fp), ptr, "exposeHeaders");
        rc = cors_fail(c, fp, "\"*\" cannot be used with allowCredentials: "
                              "true (it would mean a header named \"*\"); "
                              "list the headers");
        goto out_free;
    }
    *out = p;
    return 0;

out_free:
    cors_free(p);
    return rc;
}

static char *
dup_or_null(const char *s, bool *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *oom = true;
    return d;
}

static struct gw_cors *
cors_dup(const struct gw_cors *t)
{
    struct gw_cors *p = calloc(1, sizeof(*p));
    bool oom = false;

    if (p == NULL)
        return NULL;
    *p = *t;
    p->origins = NULL;
    p->norigins = 0;
    p->methods = dup_or_null(t->methods, &oom);
    p->headers = dup_or_null(t->headers, &oom);
    p->expose = dup_or_null(t->expose, &oom);
    if (t->norigins > 0 &&
        (p->origins = calloc(t->norigins, sizeof(char *))) == NULL)
        oom = true;
    for (size_t i = 0; !oom && i < t->norigins; i++) {
        if ((p->origins[i] = strdup(t->origins[i])) == NULL)
            oom = true;
        else
            p->norigins++;
    }
    if (oom) {
        cors_free(p);
        return NULL;
    }
    return p;
}

/* The methods the spec declares for r's path: "GET, POST". */
static char *
path_methods(const gw_spec *s, const gw_route *r)
{
    kb_buf b = KB_BUF_INIT(256);
    char *out;

    for (size_t i = 0; i < s->nroutes; i++)
        if (strcmp(s->routes[i].template, r->template) == 0 &&
            ((b.len > 0 && kb_buf_appends(&b, ", ") != 0) ||
             kb_buf_appends(&b, s->routes[i].method) != 0)) {
            kb_buf_free(&b);
            return NULL;
        }
    out = kb_buf_detach(&b);
    kb_buf_free(&b);
    return out;
}

int
gw__cors_compile(gw_spec *s, char *err, size_t errlen)
{
    corsc c = { err, errlen };
    const json_t *doc = s->doc != NULL ? s->doc
                                       : json_object_get(s->spec, "openapi");
    const json_t *top;
    struct gw_cors *deflt = NULL;
    int rc = 0;

    if (!json_is_object(doc))
        return 0;
    top = json_object_get(doc, "x-kiban-cors");
    if (top != NULL && !json_is_false(top) &&
        (rc = cors_parse(&c, top, "/x-kiban-cors", &deflt)) != 0)
        return rc;
    for (size_t i = 0; i < s->nroutes; i++) {
        gw_route *r = &s->routes[i];
        const json_t *own = json_object_get(r->op, "x-kiban-cors");
        char ptr[CORS_PTR_MAX];

        if (own != NULL) {
            if (json_is_false(own))
                continue;
            gw__pointer_join(ptr, sizeof(ptr), r->pointer, "x-kiban-cors");
            if ((rc = cors_parse(&c, own, ptr, &r->cors)) != 0)
                goto out_free;
        } else if (deflt != NULL) {
            if ((r->cors = cors_dup(deflt)) == NULL) {
                rc = KB_ENOMEM;
                goto out_free;
            }
        } else {
            continue;
        }
        if (r->cors->methods == NULL &&
            (r->cors->methods = path_methods(s, r)) == NULL) {
            rc = KB_ENOMEM;
            goto out_free;
        }
    }
    cors_free(deflt);
    return 0;

out_free:
    cors_free(deflt);
    gw__cors_release(s);
    return rc;
}

void
gw__cors_release(gw_spec *s)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        cors_free(s->routes[i].cors);
        s->routes[i].cors = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

static bool
is_preflight(const kb_http_req *req)
{
    const char *o, *m;

    if (strcmp(req->method, "OPTIONS") != 0)
        return false;
    o = kb_http_req_header(req, "Origin");
    m = kb_http_req_header(req, "Access-Control-Request-Method");
    return o != NULL && o[0] != '\0' && m != NULL && m[0] != '\0';
}

/*
 * Answer a preflight at the gateway when the route for the requested
 * method on this path has a policy that allows the origin and the method.
 * Otherwise false: nothing was sent, and the request goes on as if CORS
 * were not configured (Envoy's CORS filter does the same).
 */
static bool
preflight_answer(gw_ctx *c, const kb_router *router)
{
    const char *origin = kb_http_req_header(c->req, "Origin");
    const char *method =
        kb_http_req_header(c->req, "Access-Control-Request-Method");
    const char *req_headers =
        kb_http_req_header(c->req, "Access-Control-Request-Headers");
    const struct gw_cors *p;
    const gw_route *r;
    kb_route_match m;
    kb_http_header h[8];
    char age[24];
    size_t nh = 0;

    if (router == NULL ||
        kb_router_match(router, method, c->req->path, strlen(c->req->path),
                        &m) != 200)
        return false;
    r = m.target;
    p = r != NULL ? r->cors : NULL;
    if (p == NULL || !origin_allowed(p, origin) ||
        !method_listed(p->methods, method))
        return false;
    h[nh++] = (kb_http_header){ "Access-Control-Allow-Origin",
                                p->any_origin ? "*" : origin };
    if (!p->any_origin)
        h[nh++] = (kb_http_header){ "Vary", p->echo_headers
            ? "Origin, Access-Control-Request-Headers" : "Origin" };
    h[nh++] = (kb_http_header){ "Access-Control-Allow-Methods", p->methods };
    if (p->headers != NULL)
        h[nh++] = (kb_http_header){ "Access-Control-Allow-Headers",
                                    p->headers };
    else if (p->echo_headers && req_headers != NULL && echo_ok(req_headers))
        h[nh++] = (kb_http_header){ "Access-Control-Allow-Headers",
                                    req_headers };
    if (p->max_age >= 0) {
        snprintf(age, sizeof(age), "%ld", p->max_age);
        h[nh++] = (kb_http_header){ "Access-Control-Max-Age", age };
    }
    if (p->credentials)
        h[nh++] = (kb_http_header){ "Access-Control-Allow-Credentials",
                                    "true" };
    if (p->expose != NULL)       /* as ESPv2 does, harmless on a preflight */
        h[nh++] = (kb_http_header){ "Access-Control-Expose-Headers",
                                    p->expose };
    if (c->route == NULL)
        c->what = "(preflight)";
    gw__respond(c, 204, h, nh, NULL, 0);
    return true;
}

bool
gw__cors_preflight(gw_ctx *c, const kb_router *router)
{
    if (!is_preflight(c->req))
        return false;
    return preflight_answer(c, router);
}

gw_step
gw__cors_stage(gw_ctx *c)
{
    const struct gw_cors *p = c->route != NULL ? c->route->cors : NULL;
    const char *origin;

    if (is_preflight(c->req)) {
        /* the spec declares OPTIONS here: answer it ourselves when the
         * requested method's route has a policy; else on to its backend */
        const kb_router *router = gw__table_router(
            c->table, kb_http_req_header(c->req, "Host"));
        return preflight_answer(c, router) ? GW_DONE : GW_NEXT;
    }
    if (p == NULL)
        return GW_NEXT;
    if (!p->any_origin)              /* the answer depends on Origin */
        gw__header_add(c, false, "Vary", "Origin");
    origin = kb_http_req_header(c->req, "Origin");
    if (origin == NULL || origin[0] == '\0' || !origin_allowed(p, origin))
        return GW_NEXT;
    gw__header_add(c, false, "Access-Control-Allow-Origin",
                   p->any_origin ? "*" : origin);
    if (p->credentials)
        gw__header_add(c, false, "Access-Control-Allow-Credentials", "true");
    if (p->expose != NULL)
        gw__header_add(c, false, "Access-Control-Expose-Headers", p->expose);
    return GW_NEXT;
}
