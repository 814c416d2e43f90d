/*
 * proxy.c - the gateway's request path: kb_gateway_handle() runs each
 * request through a table of stages (identity → route → backend →
 * upstream) against the route table it took a reference to, then relays
 * the backend's answer.  Later features (JWT, validation, rate limits,
 * cache) are new stages in `stages[]`; a stage may finish the request,
 * pass it on, or suspend it and resume the pipeline from a callback.
 */
#include "gateway/gw_int.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/time.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GW_MAX_TARGET     (128 * 1024)
#define GW_MAX_XFF        (8 * 1024)
#define GW_EXTRA_HEADERS  8          /* headers the gateway adds upstream */
#define GW_STATUS_ABORTED 499        /* client went away (nginx's code) */

typedef enum gw_step {
    GW_NEXT,                     /* go on with the next stage */
    GW_DONE,                     /* the request has been answered */
    GW_PENDING                   /* a callback resumes the pipeline */
} gw_step;

/* One request in flight; lives in the request pool. */
typedef struct gw_ctx {
    kb_gateway          *gw;
    kb_http_req         *req;
    gw_table            *table;      /* our reference: dropped by the pool */
    size_t               stage;
    const gw_route      *route;
    kb_route_match       match;
    const char          *upstream_host;
    int                  upstream_port;
    char                 upstream_authority[80]; /* service:// Host */
    kb_buf               target;
    kb_http_client_call *call;
    uint64_t             upstream_start_ns;
    bool                 answered;
    char                 request_id[GW_MAX_REQUEST_ID + 1];
    char                 traceparent[GW_TRACEPARENT_LEN + 1];
    bool                 trace_continued;
} gw_ctx;

typedef gw_step (*gw_stage_fn)(gw_ctx *c);

static gw_step stage_identity(gw_ctx *c);
static gw_step stage_route(gw_ctx *c);
static gw_step stage_backend(gw_ctx *c);
static gw_step stage_upstream(gw_ctx *c);

/* The pipeline, in order.  New per-route stages (auth, validation, rate
 * limits, cache lookup) go between "route" and "backend". */
static const struct {
    const char *name;
    gw_stage_fn run;
} stages[] = {
    { "identity", stage_identity },
    { "route",    stage_route },
    { "backend",  stage_backend },
    { "upstream", stage_upstream },
};
#define NSTAGES (sizeof(stages) / sizeof(stages[0]))

/* ------------------------------------------------------------------------ */
/* Pure helpers (unit tested)                                                */

static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade",
};

bool
gw__hop_by_hop(const char *name, const char *connection)
{
    size_t n = strlen(name);

    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
        if (strcasecmp(name, hop_by_hop[i]) == 0)
            return true;
    for (const char *p = connection; p != NULL && *p != '\0';) {
        size_t k;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        k = strcspn(p, ", \t");
        if (k == n && k > 0 && strncasecmp(p, name, n) == 0)
            return true;
        p += k;
    }
    return false;
}

bool
gw__request_id_ok(const char *id)
{
    size_t n = 0;

    if (id == NULL)
        return false;
    for (; id[n] != '\0'; n++) {
        char ch = id[n];
        if (n == GW_MAX_REQUEST_ID ||
            !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return n > 0;
}

static bool
lowhex(const char *s, size_t n, bool nonzero)
{
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        any |= s[i] != '0';
    }
    return !nonzero || any;
}

/* W3C Trace Context: version-traceid-parentid-flags, lower-case hex.
 * Version ff is invalid; version 00 is exactly 55 characters; a later
 * version may append "-…" fields, which we do not forward. */
static bool
traceparent_ok(const char *t)
{
    size_t n = t != NULL ? strlen(t) : 0;

    if (n < GW_TRACEPARENT_LEN || !lowhex(t, 2, false) ||
        strncmp(t, "ff", 2) == 0 || t[2] != '-' || t[35] != '-' ||
        t[52] != '-' || !lowhex(t + 3, 32, true) ||
        !lowhex(t + 36, 16, true) || !lowhex(t + 53, 2, false))
        return false;
    if (strncmp(t, "00", 2) == 0)
        return n == GW_TRACEPARENT_LEN;
    return n == GW_TRACEPARENT_LEN || t[GW_TRACEPARENT_LEN] == '-';
}

void
gw__traceparent(const char *incoming, char *out, bool *continued)
{
    char trace[33], span[17];
    const char *flags = "00";    /* a new trace: not sampled (no tracer) */
    *continued = traceparent_ok(incoming);
    if (*continued) {
        memcpy(trace, incoming + 3, 32);
        trace[32] = '\0';
        flags = incoming + 53;
    } else {
        do                              /* all zeros is not a valid id */
            kb_id_hex(trace, 16);
        while (strspn(trace, "0") == 32);
    }
    do
        kb_id_hex(span, 8);
    while (strspn(span, "0") == 16);
    snprintf(out, GW_TRACEPARENT_LEN + 1, "00-%s-%s-%.2s", trace, span,
             flags);
}

/* Percent-encode a raw path value for a query string: keep what is safe
 * there (and existing %XX escapes), encode '&', '=', '+', '#', … */
static int
query_value(kb_buf *out, const char *v, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || strchr("-._~%/:@!$'()*,;", ch) != NULL)
            rc = kb_buf_appendc(out, (char)ch);
        else
            rc = kb_buf_appendf(out, "%%%c%c", hex[ch >> 4], hex[ch & 15]);
    }
    return rc;
}

int
gw__target_build(const gw_route *route, const kb_route_match *m,
                 const char *path, const char *query, kb_buf *out)
{
    const gw_backend *b = route->backend;
    const char *bp = b->path;
    size_t bplen = strlen(bp);
    int rc;

    out->max = GW_MAX_TARGET;
    kb_buf_reset(out);
    if (b->pt == GW_PT_APPEND) {
        /* address path + request path: "/base" + "/users/1" */
        while (bplen > 0 && bp[bplen - 1] == '/')
            bplen--;
        if ((rc = kb_buf_append(out, bp, bplen)) != 0 ||
            (rc = kb_buf_appends(out, path)) != 0)
            return rc;
        if (query != NULL && query[0] != '\0' &&
            ((rc = kb_buf_appendc(out, '?')) != 0 ||
             (rc = kb_buf_appends(out, query)) != 0))
            return rc;
        return 0;
    }
    /* CONSTANT_ADDRESS: the address path as is; the request's query, then
     * each path parameter as name=value */
    if ((rc = kb_buf_appends(out, bplen > 0 ? bp : "/")) != 0)
        return rc;
    if (query != NULL && query[0] != '\0' &&
        ((rc = kb_buf_appendc(out, '?')) != 0 ||
         (rc = kb_buf_appends(out, query)) != 0))
        return rc;
    for (size_t i = 0; i < m->nparams; i++) {
        bool first = (query == NULL || query[0] == '\0') && i == 0;
        if ((rc = kb_buf_appendc(out, first ? '?' : '&')) != 0 ||
            (rc = query_value(out, m->params[i].name,
                              strlen(m->params[i].name))) != 0 ||
            (rc = kb_buf_appendc(out, '=')) != 0 ||
            (rc = query_value(out, m->params[i].value,
                              m->params[i].value_len)) != 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */

static _Atomic(kb_counter *) unmatched_requests[5];

static int
code_class(int status)
{
    return status >= 100 && status < 600 ? status / 100 - 1 : 4;
}

static void
count_request(const gw_route *route, const char *what, int status)
{
    static const char *const classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    int k = code_class(status);
    _Atomic(kb_counter *) *slot = route != NULL
        ? &((gw_route *)route)->requests[k]
        : &unmatched_requests[k];
    kb_counter *ctr = atomic_load(slot);

    if (ctr == NULL) {
        kb_buf labels = KB_BUF_INIT(4096);
        int rc = 0;
        if (route != NULL) {
            rc |= kb_buf_appends(&labels, "gateway=\"");
            rc |= kb_metrics_label_escape(&labels, route->spec->id);
            rc |= kb_buf_appends(&labels, "\",route=\"");
            rc |= kb_metrics_label_escape(&labels, route->label);
        } else {
            rc |= kb_buf_appends(&labels, "route=\"");
            rc |= kb_metrics_label_escape(&labels, what);
        }
        rc |= kb_buf_appendf(&labels, "\",code=\"%s\"", classes[k]);
        if (rc == 0)
            ctr = kb_counter_get("kiban_gateway_requests_total",
                                 "Requests answered by the gateway, by "
                                 "route and status class.",
                                 kb_buf_cstr(&labels));
        kb_buf_free(&labels);
        if (ctr == NULL)
            return;
        atomic_store(slot, ctr);     /* same pointer if two threads race */
    }
    kb_counter_add(ctr, 1);
}

static void
observe_upstream(const gw_route *route, double seconds)
{
    _Atomic(kb_histogram *) *slot = &((gw_route *)route)->upstream_seconds;
    kb_histogram *h = atomic_load(slot);

    if (h == NULL) {
        kb_buf labels = KB_BUF_INIT(4096);
        int rc = kb_buf_appends(&labels, "gateway=\"");
        rc |= kb_metrics_label_escape(&labels, route->spec->id);
        rc |= kb_buf_appends(&labels, "\",route=\"");
        rc |= kb_metrics_label_escape(&labels, route->label);
        rc |= kb_buf_appendc(&labels, '"');
        if (rc == 0)
            h = kb_histogram_get("kiban_gateway_upstream_duration_seconds",
                                 "Time from sending a request upstream to "
                                 "its complete response.",
                                 kb_buf_cstr(&labels),
                                 kb_metrics_latency_buckets,
                                 kb_metrics_latency_nbuckets);
        kb_buf_free(&labels);
        if (h == NULL)
            return;
        atomic_store(slot, h);
    }
    kb_histogram_observe(h, seconds);
}

/* ------------------------------------------------------------------------ */
/* Answering                                                                 */

/*
 * Every answer goes through here: counts it and releases the request (and
 * with it the ctx, which lives in the request pool: do not touch c after).
 */
static void
respond(gw_ctx *c, int status, kb_http_header *headers, size_t nheaders,
        const char *body, size_t body_len, const char *what)
{
    c->answered = true;
    count_request(c->route, what, status);
    kb_http_respond(c->req, status, headers, nheaders, body, body_len);
}

static void
respond_json(gw_ctx *c, int status, json_t *body, const char *allow,
             const char *what)
{
    kb_http_header h[3];
    size_t nh = 0;
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;

    json_decref(body);
    h[nh++] = (kb_http_header){ "Content-Type", "application/json" };
    if (c->request_id[0] != '\0')
        h[nh++] = (kb_http_header){ "X-Request-Id", c->request_id };
    if (allow != NULL)
        h[nh++] = (kb_http_header){ "Allow", allow };
    if (text == NULL) {
        static const char oom[] =
            "{\"error\":{\"code\":500,\"status\":\"INTERNAL\","
            "\"message\":\"out of memory\"}}";
        respond(c, 500, h, nh, oom, sizeof(oom) - 1, what);
        return;
    }
    respond(c, status, h, nh, text, strlen(text), what);
    free(text);
}

/* kiban's JSON error body with our X-Request-Id (and Allow for 405). */
static void
respond_error(gw_ctx *c, int status, const char *allow, const char *what,
              const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
respond_error(gw_ctx *c, int status, const char *allow, const char *what,
              const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond_json(c, status,
                 json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status,
                           "status", kb_http_status_name(status),
                           "message", msg),
                 allow, what);
}

/* ------------------------------------------------------------------------ */
/* Stages                                                                    */

static void
pipeline_run(gw_ctx *c)
{
    while (c->stage < NSTAGES) {
        gw_step step = stages[c->stage++].run(c);
        if (step != GW_NEXT)
            return;              /* answered, or a callback resumes */
    }
}

static gw_step
stage_identity(gw_ctx *c)
{
    const char *id = kb_http_req_header(c->req, "X-Request-Id");

    if (gw__request_id_ok(id))
        snprintf(c->request_id, sizeof(c->request_id), "%s", id);
    else
        kb_id_hex(c->request_id, 16);
    gw__traceparent(kb_http_req_header(c->req, "traceparent"),
                    c->traceparent, &c->trace_continued);
    return GW_NEXT;
}

static gw_step
stage_route(gw_ctx *c)
{
    const kb_router *router =
        gw__table_router(c->table, kb_http_req_header(c->req, "Host"));
    int rc = kb_router_match(router, c->req->method, c->req->path,
                             strlen(c->req->path), &c->match);

    if (rc == 200) {
        c->route = c->match.target;
        return GW_NEXT;
    }
    if (rc == 404 && strcmp(c->req->path, "/healthz") == 0) {
        if (strcmp(c->req->method, "GET") != 0 &&
            strcmp(c->req->method, "HEAD") != 0) {
            respond_error(c, 405, "GET, HEAD", "(healthz)",
                          "method %s is not allowed here", c->req->method);
            return GW_DONE;
        }
        respond_json(c, 200, json_pack("{s:s}", "status", "ok"), NULL,
                     "(healthz)");
        return GW_DONE;
    }
    if (rc == 405) {
        respond_error(c, 405, c->match.allow, "(none)",
                      "method %s is not allowed for %s", c->req->method,
                      c->req->path);
        return GW_DONE;
    }
    respond_error(c, 404, NULL, "(none)", "no route for %s %s",
                  c->req->method, c->req->path);
    return GW_DONE;
}

static gw_step
stage_backend(gw_ctx *c)
{
    const gw_backend *b = c->route->backend;
    int rc;

    if (b->service != NULL) {
        kb_endpoint ep;
        rc = c->gw->resolve != NULL
                 ? c->gw->resolve(c->gw->rt, c->route->spec->project,
                                  b->service, &ep)
                 : KB_ENOTFOUND;
        if (rc == KB_EUNAVAIL) {
            respond_error(c, 503, NULL, NULL,
                          "service %s has no running instance", b->service);
            return GW_DONE;
        }
        if (rc != 0) {
            respond_error(c, 502, NULL, NULL, "service %s not found",
                          b->service);
            return GW_DONE;
        }
        c->upstream_host = kb_pool_strdup(c->req->pool, ep.host);
        c->upstream_port = ep.port;
        snprintf(c->upstream_authority, sizeof(c->upstream_authority),
                 "%s:%d", ep.host, ep.port);
        if (c->upstream_host == NULL) {
            respond_error(c, 500, NULL, NULL, "out of memory");
            return GW_DONE;
        }
    } else {
        c->upstream_host = b->host;
        c->upstream_port = b->port;
        snprintf(c->upstream_authority, sizeof(c->upstream_authority), "%s",
                 b->authority);
    }
    rc = gw__target_build(c->route, &c->match, c->req->path, c->req->query,
                          &c->target);
    if (rc != 0) {
        respond_error(c, rc == KB_ETOOBIG ? 414 : 500, NULL, NULL,
                      "cannot build the upstream request target");
        return GW_DONE;
    }
    return GW_NEXT;
}

static void
on_upstream(int err, const kb_http_client_res *res, void *data)
{
    gw_ctx *c = data;
    const gw_route *route = c->route;
    const char *connection;
    kb_buf conn = KB_BUF_INIT(GW_MAX_XFF);
    kb_http_header *h;
    size_t nh = 0;

    c->call = NULL;
    observe_upstream(route,
                     (double)(kb_time_mono_ns() - c->upstream_start_ns) / 1e9);
    if (err == KB_ETIMEDOUT) {
        respond_error(c, 504, NULL, NULL,
                      "upstream did not answer within the deadline of %.3gs",
                      (double)route->backend->deadline_ms / 1000.0);
        return;
    }
    if (err == KB_EPARSE || err == KB_ETOOBIG) {
        respond_error(c, 502, NULL, NULL, "upstream sent %s",
                      err == KB_EPARSE ? "an invalid response"
                                       : "a response that is too large");
        return;
    }
    if (err != 0) {
        respond_error(c, 502, NULL, NULL, "upstream %s:%d failed: %s",
                      c->upstream_host, c->upstream_port, kb_strerror(err));
        return;
    }
    /* relay: status, headers minus hop-by-hop, body; our X-Request-Id.
     * Content-Length stays in the list: the server sets its own, and for
     * HEAD announces the backend's. */
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, "Connection") == 0) {
            if (conn.len > 0)
                kb_buf_appendc(&conn, ',');
            kb_buf_appends(&conn, res->headers[i].value);
        }
    connection = kb_buf_cstr(&conn);
    h = kb_pool_alloc(c->req->pool, (res->nheaders + 1) * sizeof(*h));
    if (h == NULL) {
        kb_buf_free(&conn);
        respond_error(c, 500, NULL, NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < res->nheaders; i++) {
        const char *name = res->headers[i].name;
        if (gw__hop_by_hop(name, connection) ||
            strcasecmp(name, "X-Request-Id") == 0)
            continue;
        h[nh++] = res->headers[i];
    }
    h[nh++] = (kb_http_header){ "X-Request-Id", c->request_id };
    kb_buf_free(&conn);
    respond(c, res->status, h, nh, res->body, res->body_len, NULL);
}

static void
on_abort(kb_http_req *req, void *data)
{
    gw_ctx *c = data;

    if (c->answered)
        return;
    if (c->call != NULL) {
        kb_http_client_cancel(c->call);
        c->call = NULL;
    }
    /* the server still needs a response call to release the request */
    respond(c, GW_STATUS_ABORTED, NULL, 0, NULL, 0, NULL);
}

/* Join every value of a request header with ", " (NULL when absent). */
static const char *
joined_header(gw_ctx *c, const char *name, kb_buf *b)
{
    bool any = false;

    for (size_t i = 0; i < c->req->nheaders; i++)
        if (strcasecmp(c->req->headers[i].name, name) == 0) {
            if ((any && kb_buf_appends(b, ", ") != 0) ||
                kb_buf_appends(b, c->req->headers[i].value) != 0) {
                kb_buf_reset(b);     /* over the cap: treat as absent */
                return NULL;
            }
            any = true;
        }
    return any ? kb_buf_cstr(b) : NULL;
}

/* Request headers the gateway sets itself (or must not forward). */
static bool
replaced_upstream(const char *name, bool trace_continued)
{
    static const char *const names[] = {
        "Host", "Content-Length", "Expect", "X-Forwarded-For",
        "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id", "traceparent",
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    /* tracestate belongs to the incoming trace only */
    return !trace_continued && strcasecmp(name, "tracestate") == 0;
}

static gw_step
stage_upstream(gw_ctx *c)
{
    kb_http_req *req = c->req;
    kb_buf conn = KB_BUF_INIT(GW_MAX_XFF), xff = KB_BUF_INIT(GW_MAX_XFF);
    const char *connection, *prior, *host;
    kb_http_header *h;
    size_t nh = 0;
    kb_http_client_req up;
    char *xff_value;
    int rc;

    connection = joined_header(c, "Connection", &conn);
    prior = joined_header(c, "X-Forwarded-For", &xff);  /* into xff */
    if ((prior != NULL && kb_buf_appends(&xff, ", ") != 0) ||
        kb_buf_appends(&xff, req->remote_addr) != 0) {
        /* an absurd X-Forwarded-For: start over with just the client */
        kb_buf_reset(&xff);
        kb_buf_appends(&xff, req->remote_addr);
    }
    xff_value = kb_pool_strdup(req->pool, kb_buf_cstr(&xff));
    kb_buf_free(&xff);
    h = kb_pool_alloc(req->pool,
                      (req->nheaders + GW_EXTRA_HEADERS) * sizeof(*h));
    if (h == NULL || xff_value == NULL) {
        kb_buf_free(&conn);
        respond_error(c, 500, NULL, NULL, "out of memory");
        return GW_DONE;
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *name = req->headers[i].name;
        if (gw__hop_by_hop(name, connection) ||
            replaced_upstream(name, c->trace_continued))
            continue;
        h[nh++] = req->headers[i];
    }
    kb_buf_free(&conn);
    host = kb_http_req_header(req, "Host");
    h[nh++] = (kb_http_header){ "Host", c->upstream_authority };
    h[nh++] = (kb_http_header){ "X-Forwarded-For", xff_value };
    h[nh++] = (kb_http_header){ "X-Forwarded-Proto",
                                req->tls ? "https" : "http" };
    if (host != NULL)
        h[nh++] = (kb_http_header){ "X-Forwarded-Host", host };
    h[nh++] = (kb_http_header){ "X-Request-Id", c->request_id };
    h[nh++] = (kb_http_header){ "traceparent", c->traceparent };

    memset(&up, 0, sizeof(up));
    up.method = req->method;
    up.host = c->upstream_host;
    up.port = c->upstream_port;
    up.target = kb_buf_cstr(&c->target);
    up.headers = h;
    up.nheaders = nh;
    up.body = req->body;
    up.body_len = req->body_len;
    up.timeout_ms = c->route->backend->deadline_ms;
    c->upstream_start_ns = kb_time_mono_ns();
    /* the hook first: once the call is out, the client may go any time */
    kb_http_req_on_abort(req, on_abort, c);
    rc = kb_http_client_send(c->gw->client, &up, on_upstream, c, &c->call);
    if (rc != 0) {
        c->call = NULL;
        respond_error(c, 502, NULL, NULL, "upstream %s:%d failed: %s",
                      c->upstream_host, c->upstream_port, kb_strerror(rc));
        return GW_DONE;
    }
    return GW_PENDING;
}

/* ------------------------------------------------------------------------ */

static void
ctx_release(void *data)
{
    gw_ctx *c = data;

    kb_buf_free(&c->target);
    gw__table_unref(c->table);
}

/* Take a reference to the current table (the lock covers load + ref). */
static gw_table *
table_acquire(kb_gateway *gw)
{
    gw_table *t;

    pthread_mutex_lock(&gw->lock);
    t = gw->table != NULL ? gw__table_ref(gw->table) : NULL;
    pthread_mutex_unlock(&gw->lock);
    return t;
}

void
kb_gateway_handle(kb_http_req *req, void *data)
{
    kb_gateway *gw = data;
    gw_ctx *c = kb_pool_calloc(req->pool, sizeof(*c));

    if (c == NULL) {
        kb_http_respond_error(req, 500, "out of memory");
        return;
    }
    c->gw = gw;
    c->req = req;
    kb_buf_init(&c->target, GW_MAX_TARGET);
    c->table = table_acquire(gw);
    if (c->table == NULL) {
        kb_http_respond_error(req, 500, "gateway has no route table");
        return;
    }
    if (kb_pool_cleanup_add(req->pool, ctx_release, c) != 0) {
        gw__table_unref(c->table);
        kb_http_respond_error(req, 500, "out of memory");
        return;
    }
    pipeline_run(c);
}
