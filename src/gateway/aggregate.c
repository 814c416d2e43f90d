/*
 * aggregate.c - x-kiban-aggregate: one operation fans out to up to 32
 * backend calls in parallel (paths filled from path parameters, query
 * parameters and JWT claims), and answers one JSON object with each
 * call's result under its name.  Runs after the cache stage, so a cached
 * operation caches the merged answer; each call may also be cached.
 */
#include "gateway/gw_int.h"
#include "core/err.h"
#include "core/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AGG_MAX_CALLS    32
#define AGG_MAX_NAME     64
#define AGG_MAX_TARGET   (16 * 1024)
#define AGG_MAX_HEADERS  8           /* headers we add to each call */
#define AGG_STATUS_GONE  499         /* client went away (as proxy.c) */
#define AGG_PTR_MAX      2048        /* the operation's JSON pointer */

typedef struct agg_call {
    char                   *name;
    char                   *address;     /* as written: cache keys */
    gw_backend              b;           /* parsed address (our strings) */
    char                   *path;        /* template: "/users/{id}" */
    const char             *method;      /* "GET" or "POST": static */
    uint64_t                timeout_ms;  /* 0: the route's deadline */
    bool                    required;
    struct gw_cache_policy *cache;
} agg_call;

struct gw_aggregate {
    agg_call *calls;
    size_t    ncalls;
    uint64_t  timeout_ms;                /* 0: none beyond each call's */
};

/* One call of one request. */
typedef struct agg_result {
    struct gw_agg_req *ar;
    const agg_call    *call;
    gw_pick            pick;
    bool               picked;
    void              *handle;           /* in flight */
    char              *target;           /* pool */
    char              *what;             /* cache key part; pool */
    json_t            *body;             /* own reference, on success */
    const char        *fail;             /* why it is missing; NULL: ok */
    int                status;           /* the call's HTTP status */
    int                err;
} agg_result;

struct gw_agg_req {
    gw_ctx                    *c;
    const struct gw_aggregate *agg;
    size_t                     pending;  /* calls out + 1 for the stage */
    kb_http_header            *headers;  /* shared by every call; [0] Host */
    size_t                     nheaders;
    agg_result                 res[];
};

/* ------------------------------------------------------------------------ */
/* Compiling                                                                 */

static void
call_free(agg_call *k)
{
    free(k->name);
    free(k->address);
    free(k->b.service);
    free(k->b.tag);
    free(k->b.host);
    free(k->b.authority);
    free(k->b.path);
    free(k->path);
    gw__cache_policy_free(k->cache);
}

static void
aggregate_free(struct gw_aggregate *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->ncalls; i++)
        call_free(&a->calls[i]);
    free(a->calls);
    free(a);
}

static bool
name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > AGG_MAX_NAME || s[0] == '_')
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return false;
    return true;
}

/* Does the route template declare path parameter `name` ({name} or
 * {name=…})? */
static bool
template_has(const char *tmpl, const char *name, size_t n)
{
    for (const char *p = strchr(tmpl, '{'); p != NULL; p = strchr(p + 1, '{'))
        if (strncmp(p + 1, name, n) == 0 && (p[1 + n] == '}' ||
                                             p[1 + n] == '='))
            return true;
    return false;
}

/*
 * Check a call's path template: starts with '/', every {…} is a path
 * parameter of the route, query.NAME or claims.NAME.  NULL, or why not.
 */
static const char *
path_check(const char *path, const char *route_tmpl, char *why, size_t n)
{
    if (path[0] != '/')
        return "must start with '/'";
    for (const char *p = path; *p != '\0'; p++) {
        const char *close;
        size_t len;
        if (*p == '}')
            return "unbalanced '}'";
        if (*p == ' ' || *p == '#' || (unsigned char)*p < 0x20 ||
            (unsigned char)*p >= 0x7f)
            return "bad character (spaces, '#' and non-ASCII are not "
                   "allowed)";
        if (*p != '{')
            continue;
        close = strchr(p, '}');
        if (close == NULL)
            return "unbalanced '{'";
        len = (size_t)(close - p - 1);
        if (len == 0 || memchr(p + 1, '{', len) != NULL)
            return "empty or nested {…}";
        if (len > 6 && strncmp(p + 1, "query.", 6) == 0) {
            /* any query parameter name */
        } else if (len > 7 && strncmp(p + 1, "claims.", 7) == 0) {
            /* any claim (dotted: nested objects) */
        } else if (!template_has(route_tmpl, p + 1, len)) {
            snprintf(why, n, "{%.*s} is not a path parameter of %s (use "
                     "{NAME}, {query.NAME} or {claims.NAME})",
                     (int)(len > 200 ? 200 : len), p + 1, route_tmpl);
            return why;
        }
        p = close;
    }
    return NULL;
}

static int
call_parse(const json_t *v, const char *ptr, const gw_route *r, agg_call *k,
           char *err, size_t errlen)
{
    const char *field, *why;
    char why_buf[512];
    json_t *val;
    int rc;

    if (!json_is_object(v))
        return gw__spec_fail(err, errlen, ptr, "must be an object {name, "
                             "address, path, method, timeout, required, "
                             "cache}");
    k->method = "GET";
    json_object_foreach((json_t *)v, field, val) {
        if (strcmp(field, "name") == 0) {
            if (!json_is_string(val) || !name_ok(json_string_value(val)))
                return gw__spec_fail(err, errlen, ptr, "name: must be 1-%d of "
                                     "[A-Za-z0-9_-], not starting with '_'",
                                     AGG_MAX_NAME);
            if ((k->name = strdup(json_string_value(val))) == NULL)
                return KB_ENOMEM;
        } else if (strcmp(field, "address") == 0) {
            if (!json_is_string(val))
                return gw__spec_fail(err, errlen, ptr,
                                     "address: must be a string");
            if ((why = gw__address_parse(json_string_value(val), &k->b)) !=
                NULL)
                return gw__spec_fail(err, errlen, ptr, "address: %s", why);
            if (k->b.path == NULL ||
                (k->b.service == NULL &&
                 (k->b.host == NULL || k->b.authority == NULL)) ||
                (k->address = strdup(json_string_value(val))) == NULL)
                return KB_ENOMEM;
            if (k->b.h2)
                return gw__spec_fail(err, errlen, ptr, "address: grpc:// "
                                     "backends cannot be aggregated (JSON "
                                     "only)");
        } else if (strcmp(field, "path") == 0) {
            if (!json_is_string(val))
                return gw__spec_fail(err, errlen, ptr,
                                     "path: must be a string");
            if ((why = path_check(json_string_value(val), r->template,
                                  why_buf, sizeof(why_buf))) != NULL)
                return gw__spec_fail(err, errlen, ptr, "path: %s", why);
            if ((k->path = strdup(json_string_value(val))) == NULL)
                return KB_ENOMEM;
        } else if (strcmp(field, "method") == 0) {
            const char *m = json_is_string(val) ? json_string_value(val) : "";
            if (strcasecmp(m, "GET") == 0)
                k->method = "GET";
            else if (strcasecmp(m, "POST") == 0)
                k->method = "POST";
            else
                return gw__spec_fail(err, errlen, ptr,
                                     "method: must be GET or POST");
        } else if (strcmp(field, "timeout") == 0) {
            if (gw__cache_duration(val, &k->timeout_ms) != 0 ||
                k->timeout_ms > (uint64_t)(GW_MAX_DEADLINE_S * 1000))
                return gw__spec_fail(err, errlen, ptr, "timeout: must be a "
                                     "duration (\"2s\", \"500ms\" or seconds) "
                                     "up to %.0fs", GW_MAX_DEADLINE_S);
        } else if (strcmp(field, "required") == 0) {
            if (!json_is_boolean(val))
                return gw__spec_fail(err, errlen, ptr,
                                     "required: must be a boolean");
            k->required = json_is_true(val);
        } else if (strcmp(field, "cache") == 0) {
            char p[AGG_PTR_MAX + 64];
            snprintf(p, sizeof(p), "%s/cache", ptr);
            if ((rc = gw__cache_policy_parse(val, p, &k->cache, err,
                                             errlen)) != 0)
                return rc;
        } else {
            return gw__spec_fail(err, errlen, ptr, "%s: unknown field (known: "
                                 "name, address, path, method, timeout, "
                                 "required, cache)", field);
        }
    }
    if (k->name == NULL)
        return gw__spec_fail(err, errlen, ptr, "name: required");
    if (k->address == NULL)
        return gw__spec_fail(err, errlen, ptr, "address: required");
    if (k->path == NULL && (k->path = strdup("")) == NULL)
        return KB_ENOMEM;
    if (k->cache != NULL && strcmp(k->method, "GET") != 0)
        return gw__spec_fail(err, errlen, ptr,
                             "cache: only GET calls can be cached");
    return 0;
}

static int
aggregate_parse(const json_t *v, const char *ptr, const gw_route *r,
                struct gw_aggregate **out, char *err, size_t errlen)
{
    struct gw_aggregate *a;
    const json_t *calls, *t;
    const char *field;
    json_t *val;
    char p[AGG_PTR_MAX + 32];
    size_t i;
    int rc;

    *out = NULL;
    if (!json_is_object(v))
        return gw__spec_fail(err, errlen, ptr,
                             "must be an object {calls, timeout}");
    json_object_foreach((json_t *)v, field, val)
        if (strcmp(field, "calls") != 0 && strcmp(field, "timeout") != 0)
            return gw__spec_fail(err, errlen, ptr,
                                 "%s: unknown field (known: calls, timeout)",
                                 field);
    calls = json_object_get(v, "calls");
    if (!json_is_array(calls) || json_array_size(calls) == 0 ||
        json_array_size(calls) > AGG_MAX_CALLS)
        return gw__spec_fail(err, errlen, ptr,
                             "calls: must be an array of 1 to %d calls",
                             AGG_MAX_CALLS);
    if ((a = calloc(1, sizeof(*a))) == NULL ||
        (a->calls = calloc(json_array_size(calls), sizeof(agg_call))) ==
            NULL) {
        free(a);
        return KB_ENOMEM;
    }
    if ((t = json_object_get(v, "timeout")) != NULL &&
        (gw__cache_duration(t, &a->timeout_ms) != 0 ||
         a->timeout_ms > (uint64_t)(GW_MAX_DEADLINE_S * 1000))) {
        rc = gw__spec_fail(err, errlen, ptr, "timeout: must be a duration "
                           "(\"2s\", \"500ms\" or seconds) up to %.0fs",
                           GW_MAX_DEADLINE_S);
        goto out_free;
    }
    json_array_foreach(calls, i, val) {
        snprintf(p, sizeof(p), "%s/calls/%zu", ptr, i);
        rc = call_parse(val, p, r, &a->calls[i], err, errlen);
        a->ncalls = i + 1;
        if (rc != 0)
            goto out_free;
        for (size_t k = 0; k < i; k++)
            if (strcmp(a->calls[k].name, a->calls[i].name) == 0) {
                rc = gw__spec_fail(err, errlen, p,
                                   "name: \"%s\" is used by call %zu",
                                   a->calls[i].name, k);
                goto out_free;
            }
    }
    *out = a;
    return 0;

out_free:
    aggregate_free(a);
    return rc;
}

int
gw__aggregate_compile(gw_spec *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        gw_route *r = &s->routes[i];
        const json_t *v = r->op != NULL
            ? json_object_get(r->op, "x-kiban-aggregate") : NULL;
        char ptr[AGG_PTR_MAX];
        int rc;

        if (v == NULL)
            continue;
        snprintf(ptr, sizeof(ptr), "%s/x-kiban-aggregate", r->pointer);
        if ((rc = aggregate_parse(v, ptr, r, &r->aggregate, err, errlen)) !=
            0) {
            gw__aggregate_release(s);
            return rc;
        }
    }
    return 0;
}

void
gw__aggregate_release(gw_spec *s)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        aggregate_free(s->routes[i].aggregate);
        s->routes[i].aggregate = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Filling a call's path                                                     */

/* Append v percent-encoded: only unreserved characters stay as they are,
 * so a value can never add a path segment or a query parameter. */
static int
pct_encode(kb_buf *out, const char *v, size_t n)
{
    return gw__pct_encode(out, v, n, "");
}

/* A path parameter as received (percent-encoded): decode, then encode. */
static int
pct_reencode(kb_buf *out, const char *v, size_t n)
{
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        int hi, lo;
        char ch = v[i];
        if (ch == '%' && i + 2 < n && (hi = gw__hex_digit(v[i + 1])) >= 0 &&
            (lo = gw__hex_digit(v[i + 2])) >= 0) {
            ch = (char)(hi << 4 | lo);
            i += 2;
        }
        rc = pct_encode(out, &ch, 1);
    }
    return rc;
}

/* A claim by dotted name ("org.id"), or NULL. */
static const json_t *
claim_get(const json_t *claims, const char *name, size_t n)
{
    const json_t *v = claims;
    char part[256];

    while (v != NULL && n > 0) {
        size_t k = strcspn(name, ".");
        if (k > n)
            k = n;
        if (k == 0 || k >= sizeof(part) || !json_is_object(v))
            return NULL;
        memcpy(part, name, k);
        part[k] = '\0';
        v = json_object_get(v, part);
        name += k;
        n -= k;
        if (n > 0) {
            name++;
            n--;
        }
    }
    return v;
}

/*
 * The call's request-target: address path + the call's path with every
 * {…} filled in and percent-encoded.  0; KB_ENOTFOUND with the missing
 * name in *missing (pool) when a value is absent; KB_ETOOBIG.
 */
static int
target_fill(gw_ctx *c, const agg_call *k, kb_buf *out, const char **missing)
{
    const char *bp = k->b.path, *p = k->path;
    size_t bplen = strlen(bp);
    int rc = 0;

    out->max = AGG_MAX_TARGET;
    kb_buf_reset(out);
    if (*p == '\0')                  /* no path: the address's as written */
        return kb_buf_appends(out, bplen > 0 ? bp : "/");
    while (bplen > 0 && bp[bplen - 1] == '/')
        bplen--;
    if ((rc = kb_buf_append(out, bp, bplen)) != 0)
        return rc;
    while (*p != '\0' && rc == 0) {
        const char *close, *name;
        size_t n;
        if (*p != '{') {
            size_t lit = strcspn(p, "{");
            rc = kb_buf_append(out, p, lit);
            p += lit;
            continue;
        }
        close = strchr(p, '}');      /* checked at compile time */
        name = p + 1;
        n = (size_t)(close - name);
        p = close + 1;
        if (n > 6 && strncmp(name, "query.", 6) == 0) {
            char q[256];
            const char *v;
            snprintf(q, sizeof(q), "%.*s", (int)(n - 6), name + 6);
            v = kb_http_req_query(c->req, q);
            if (v == NULL)
                goto out_missing;
            rc = pct_encode(out, v, strlen(v));
        } else if (n > 7 && strncmp(name, "claims.", 7) == 0) {
            const json_t *v = claim_get(c->claims, name + 7, n - 7);
            char num[64];
            if (json_is_string(v))
                rc = pct_encode(out, json_string_value(v),
                                json_string_length(v));
            else if (json_is_integer(v)) {
                snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                         json_integer_value(v));
                rc = pct_encode(out, num, strlen(num));
            } else if (json_is_boolean(v))
                rc = kb_buf_appends(out, json_is_true(v) ? "true" : "false");
            else
                goto out_missing;
        } else {
            char pn[256];
            const char *v;
            size_t vlen;
            snprintf(pn, sizeof(pn), "%.*s", (int)n, name);
            v = kb_route_param_get(&c->match, pn, &vlen);
            if (v == NULL)
                goto out_missing;
            rc = pct_reencode(out, v, vlen);
        }
        continue;
out_missing:
        *missing = kb_pool_strndup(c->req->pool, name, n);
        return KB_ENOTFOUND;
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Running the calls                                                         */

static bool
forwarded(const char *name, const char *connection, bool body)
{
    static const char *const drop[] = {
        "Host", "Content-Length", "Expect", "Accept", "Accept-Encoding",
        "Range", "If-Match", "If-None-Match", "If-Modified-Since",
        "If-Unmodified-Since", "If-Range", "X-Forwarded-For",
        "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id",
        "traceparent",
    };

    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (strcasecmp(name, drop[i]) == 0)
            return false;
    if (gw__auth_header_reserved(name))  /* only the gateway says who */
        return false;
    if (!body && strcasecmp(name, "Content-Type") == 0)
        return false;
    return !gw__hop_by_hop(name, connection);
}

/*
 * The headers every call sends, [0] left for Host: the request's own
 * (not hop-by-hop, not conditional, no Accept-Encoding: we must read the
 * JSON), those stages added (auth's X-Apigateway-Api-Userinfo …), ours.
 */
static int
headers_build(struct gw_agg_req *ar)
{
    gw_ctx *c = ar->c;
    kb_http_req *req = c->req;
    const char *connection = kb_http_req_header(req, "Connection");
    const char *prior = kb_http_req_header(req, "X-Forwarded-For");
    kb_buf xff = KB_BUF_INIT(8192);
    kb_http_header *h;
    size_t nh = 1;
    char *xv;

    if ((prior != NULL && (kb_buf_appends(&xff, prior) != 0 ||
                           kb_buf_appends(&xff, ", ") != 0)) ||
        kb_buf_appends(&xff, req->remote_addr) != 0) {
        kb_buf_reset(&xff);
        kb_buf_appends(&xff, req->remote_addr);
    }
    xv = kb_pool_strdup(req->pool, kb_buf_cstr(&xff));
    kb_buf_free(&xff);
    h = kb_pool_alloc(req->pool, (1 + req->nheaders + c->n_up_extra +
                                  AGG_MAX_HEADERS) * sizeof(*h));
    if (h == NULL || xv == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < req->nheaders; i++) {
        bool replaced = false;
        for (size_t k = 0; k < c->n_up_extra; k++)
            replaced |= strcasecmp(req->headers[i].name,
                                   c->up_extra[k].name) == 0;
        if (!replaced && forwarded(req->headers[i].name, connection, true))
            h[nh++] = req->headers[i];
    }
    memcpy(h + nh, c->up_extra, c->n_up_extra * sizeof(*h));
    nh += c->n_up_extra;
    h[nh++] = (kb_http_header){ "Accept", "application/json" };
    nh += gw__forwarded_headers(c, xv, h + nh);
    ar->headers = h;
    ar->nheaders = nh;
    return 0;
}

static void finish(struct gw_agg_req *ar);

/* One call is over; the last one answers. */
static void
call_done(struct gw_agg_req *ar)
{
    if (--ar->pending == 0)
        finish(ar);
}

/* Why a call's answer is not used; NULL when it is (r->body set). */
static const char *
result_take(agg_result *r, int err, const kb_http_client_res *res)
{
    kb_pool *pool = r->ar->c->req->pool;
    json_error_t je;
    char s[32];

    r->err = err;
    if (err == KB_ETIMEDOUT)
        return "timeout";
    if (err == KB_ETOOBIG)
        return "too large";
    if (err == KB_EPARSE)
        return "invalid response";
    if (err != 0)
        return "unreachable";
    r->status = res->status;
    if (res->status < 200 || res->status > 299) {
        const char *why;
        snprintf(s, sizeof(s), "status %d", res->status);
        why = kb_pool_strdup(pool, s);
        return why != NULL ? why : "failed";
    }
    if (res->body_len == 0) {
        r->body = json_null();       /* 204 and friends */
        return NULL;
    }
    r->body = json_loadb(res->body, res->body_len,
                         JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    return r->body != NULL ? NULL : "not JSON";
}

static void
on_call(int err, const kb_http_client_res *res, void *data)
{
    agg_result *r = data;
    struct gw_agg_req *ar = r->ar;
    gw_ctx *c = ar->c;

    r->handle = NULL;
    if (r->picked) {
        gw__backend_done(c, &r->pick, err, res != NULL ? res->status : 0);
        r->picked = false;
    }
    r->fail = result_take(r, err, res);
    if (r->fail == NULL && r->call->cache != NULL)
        gw__cache_call_put(c, r->call->cache, r->what, res);
    if (c->aborted) {
        /* nobody will read the answer: stop the other calls now */
        for (size_t i = 0; i < ar->agg->ncalls; i++) {
            agg_result *o = &ar->res[i];
            if (o->handle == NULL)
                continue;
            gw__upstream_cancel(c, o->handle);
            o->handle = NULL;
            if (o->picked) {
                gw__backend_done(c, &o->pick, KB_ECANCELED, 0);
                o->picked = false;
            }
            o->fail = "canceled";
            ar->pending--;
        }
    }
    call_done(ar);
}

/* The deadline of one call: its own timeout or the route's, within the
 * aggregate's overall timeout (all calls start together). */
static uint64_t
call_timeout(const gw_ctx *c, const struct gw_aggregate *a, const agg_call *k)
{
    uint64_t t = k->timeout_ms;

    if (t == 0)
        t = c->route->backend != NULL
                ? c->route->backend->deadline_ms
                : (uint64_t)(GW_DEFAULT_DEADLINE_S * 1000);
    if (a->timeout_ms > 0 && a->timeout_ms < t)
        t = a->timeout_ms;
    return t;
}

/* Start call i (or settle it from the cache, or fail it). */
static void
call_start(struct gw_agg_req *ar, size_t i)
{
    agg_result *r = &ar->res[i];
    const agg_call *k = r->call;
    gw_ctx *c = ar->c;
    kb_http_client_req up;
    kb_http_header *h;
    int rc;

    if (k->cache != NULL) {
        kb_buf body = KB_BUF_INIT((size_t)1 << 30);
        json_error_t je;
        r->what = kb_pool_alloc(c->req->pool, strlen(c->route->label) +
                                strlen(k->name) + strlen(k->address) +
                                strlen(r->target) + 4);
        if (r->what == NULL) {
            r->fail = "out of memory";
            return;
        }
        snprintf(r->what, strlen(c->route->label) + strlen(k->name) +
                 strlen(k->address) + strlen(r->target) + 4, "%s\n%s\n%s\n%s",
                 c->route->label, k->name, k->address, r->target);
        if (gw__cache_call_get(c, k->cache, r->what, &body) == 0) {
            r->body = body.len > 0
                ? json_loadb(body.data, body.len,
                             JSON_DECODE_ANY | JSON_ALLOW_NUL, &je)
                : json_null();
            r->status = 200;
            kb_buf_free(&body);
            if (r->body != NULL)
                return;              /* settled from the cache */
        }
        kb_buf_free(&body);
    }
    /* calls do not wait for a cold start: a busy or starting revision
     * fails this call (the runtime scales up for the next request) */
    if ((rc = gw__backend_pick(c, &k->b, NULL, NULL, &r->pick)) != 0) {
        r->err = rc;
        r->fail = rc == KB_ENOTFOUND ? "unknown service" : "no instance";
        return;
    }
    r->picked = true;
    h = kb_pool_alloc(c->req->pool, ar->nheaders * sizeof(*h));
    if (h == NULL) {
        gw__backend_done(c, &r->pick, KB_ENOMEM, 0);
        r->picked = false;
        r->fail = "out of memory";
        return;
    }
    memcpy(h, ar->headers, ar->nheaders * sizeof(*h));
    h[0] = (kb_http_header){ "Host", r->pick.authority };
    memset(&up, 0, sizeof(up));
    up.method = k->method;
    up.host = r->pick.host;
    up.port = r->pick.port;
    up.target = r->target;
    up.headers = h;
    up.nheaders = ar->nheaders;
    if (strcmp(k->method, "POST") == 0) {
        up.body = c->req->body;
        up.body_len = c->req->body_len;
    } else {
        /* a GET sends no body: drop the client's Content-Type */
        size_t n = 1;
        for (size_t j = 1; j < ar->nheaders; j++)
            if (strcasecmp(h[j].name, "Content-Type") != 0)
                h[n++] = h[j];
        up.nheaders = n;
    }
    up.timeout_ms = call_timeout(c, ar->agg, k);
    up.tls = r->pick.tls;
    up.h2 = r->pick.h2;
    ar->pending++;
    rc = gw__upstream_send(c, &r->pick, &up, on_call, r, &r->handle);
    if (rc != 0) {
        ar->pending--;
        r->handle = NULL;
        gw__backend_done(c, &r->pick, rc, 0);
        r->picked = false;
        r->err = rc;
        r->fail = "unreachable";
    }
}

/* The status a failed required call turns into. */
static int
required_status(const agg_result *r)
{
    if (r->err == KB_ETIMEDOUT)
        return 504;
    if (r->err == KB_EUNAVAIL || r->err == KB_EAGAIN ||
        r->err == KB_ETOOBIG)
        return 503;
    if (r->status >= 400 && r->status <= 499)
        return r->status;
    return 502;
}

/*
 * The merged answer {"name": body|null, …, "_partial": {"name": why}}.
 * New reference, or NULL when out of memory; *partial lists the missing
 * calls ("a, b") in the pool, or NULL.
 */
static json_t *
merge(struct gw_agg_req *ar, const char **partial)
{
    json_t *out = json_object(), *why = NULL;
    kb_buf names = KB_BUF_INIT(AGG_MAX_CALLS * (AGG_MAX_NAME + 2));
    int rc = out == NULL;

    *partial = NULL;
    for (size_t i = 0; i < ar->agg->ncalls && rc == 0; i++) {
        agg_result *r = &ar->res[i];
        if (r->fail == NULL) {
            rc = json_object_set(out, r->call->name, r->body);
            continue;
        }
        rc = json_object_set_new(out, r->call->name, json_null());
        if (why == NULL && rc == 0 && (why = json_object()) == NULL)
            rc = -1;
        if (rc == 0)
            rc = json_object_set_new(why, r->call->name,
                                     json_string(r->fail));
        if (rc == 0 && names.len > 0)
            rc = kb_buf_appends(&names, ", ");
        if (rc == 0)
            rc = kb_buf_appends(&names, r->call->name);
    }
    if (rc == 0 && why != NULL) {
        rc = json_object_set(out, "_partial", why);
        *partial = kb_pool_strdup(ar->c->req->pool, kb_buf_cstr(&names));
        if (*partial == NULL)
            rc = -1;
    }
    json_decref(why);
    kb_buf_free(&names);
    if (rc != 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* Every call is over: answer (from the stage or the last callback). */
static void
finish(struct gw_agg_req *ar)
{
    gw_ctx *c = ar->c;
    kb_http_header h[4];
    size_t nh = 0;
    const char *partial;
    char *text = NULL, len[24];
    json_t *body;

    if (c->aborted) {
        gw__respond(c, AGG_STATUS_GONE, NULL, 0, NULL, 0);
        return;
    }
    for (size_t i = 0; i < ar->agg->ncalls; i++) {
        agg_result *r = &ar->res[i];
        if (r->fail != NULL && r->call->required) {
            int status = required_status(r);
            gw__header_add(c, false, "X-Kiban-Partial", r->call->name);
            gw__respond_error(c, status, "required call \"%s\" failed: %s",
                              r->call->name, r->fail);
            return;
        }
    }
    body = merge(ar, &partial);
    if (body != NULL)
        text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL) {
        gw__respond_error(c, 500, "out of memory");
        return;
    }
    h[nh++] = (kb_http_header){ "Content-Type", "application/json" };
    if (partial != NULL) {
        /* a partial answer is not kept by the cache, nor by clients */
        h[nh++] = (kb_http_header){ "X-Kiban-Partial", partial };
        h[nh++] = (kb_http_header){ "Cache-Control", "no-store" };
    }
    if (c->on_response != NULL) {
        /* the cache stage wants the merged answer (cache after merge) */
        kb_http_client_res res = {
            .status = 200, .version_minor = 1, .headers = h,
            .nheaders = nh, .body = text, .body_len = strlen(text),
        };
        c->on_response(c, &res);
    }
    if (strcmp(c->req->method, "HEAD") == 0) {
        snprintf(len, sizeof(len), "%zu", strlen(text));
        h[nh++] = (kb_http_header){ "Content-Length", len };
    }
    gw__respond(c, 200, h, nh, text, strlen(text));
    free(text);
}

/* Pool cleanup: the parsed bodies. */
static void
agg_release(void *data)
{
    struct gw_agg_req *ar = data;

    for (size_t i = 0; i < ar->agg->ncalls; i++) {
        json_decref(ar->res[i].body);
        ar->res[i].body = NULL;
    }
}

gw_step
gw__aggregate_stage(gw_ctx *c)
{
    const struct gw_aggregate *a = c->route != NULL ? c->route->aggregate
                                                    : NULL;
    struct gw_agg_req *ar;
    kb_buf target = KB_BUF_INIT(AGG_MAX_TARGET);

    if (a == NULL)
        return GW_NEXT;
    ar = kb_pool_calloc(c->req->pool,
                        sizeof(*ar) + a->ncalls * sizeof(agg_result));
    if (ar == NULL || kb_pool_cleanup_add(c->req->pool, agg_release, ar) != 0)
        goto out_oom;
    ar->c = c;
    ar->agg = a;
    ar->pending = 1;                 /* the stage's own, dropped below */
    c->agg_req = ar;
    if (headers_build(ar) != 0)
        goto out_oom;
    /* every target first: a required call without its value is a 400 */
    for (size_t i = 0; i < a->ncalls; i++) {
        agg_result *r = &ar->res[i];
        const char *missing = NULL;
        int rc;
        r->ar = ar;
        r->call = &a->calls[i];
        rc = target_fill(c, r->call, &target, &missing);
        if (rc == KB_ENOTFOUND) {
            if (r->call->required) {
                kb_buf_free(&target);
                gw__respond_error(c, 400, "missing {%s} for call \"%s\"",
                                  missing != NULL ? missing : "?",
                                  r->call->name);
                return GW_DONE;
            }
            r->fail = "missing value";
            continue;
        }
        if (rc != 0 ||
            (r->target = kb_pool_strndup(c->req->pool, target.data,
                                         target.len)) == NULL) {
            r->fail = rc == KB_ETOOBIG ? "path too long" : "out of memory";
            continue;
        }
    }
    kb_buf_free(&target);
    for (size_t i = 0; i < a->ncalls; i++)
        if (ar->res[i].fail == NULL)
            call_start(ar, i);
    if (--ar->pending == 0) {
        finish(ar);
        return GW_DONE;
    }
    return GW_PENDING;

out_oom:
    kb_buf_free(&target);
    gw__respond_error(c, 500, "out of memory");
    return GW_DONE;
}
