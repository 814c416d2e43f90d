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
#define GW_MAX_ATTEMPTS   3          /* first try + 2 retries */
#define GW_RETRY_COST     1000       /* milli-retries a retry spends */
#define GW_RETRY_EARN     200        /* … a first attempt earns (20 %) */
#define GW_RETRY_CAP      100000     /* at most 100 retries banked */

typedef gw_step (*gw_stage_fn)(gw_ctx *c);

static void wait_end(gw_ctx *c);

static gw_step stage_identity(gw_ctx *c);
static gw_step stage_route(gw_ctx *c);
static gw_step stage_backend(gw_ctx *c);
static gw_step stage_upstream(gw_ctx *c);

enum {
    ST_IDENTITY, ST_ROUTE, ST_CORS, ST_AUTH, ST_RATELIMIT, ST_VALIDATE,
    ST_CACHE, ST_AGGREGATE, ST_BACKEND, ST_UPSTREAM, NSTAGES
};

/* The pipeline, in order (gw_int.h says what each module does).  Requests
 * to a direct service host go from route straight to backend. */
static const struct {
    const char *name;
    gw_stage_fn run;
} stages[NSTAGES] = {
    [ST_IDENTITY]  = { "identity",  stage_identity },
    [ST_ROUTE]     = { "route",     stage_route },
    [ST_CORS]      = { "cors",      gw__cors_stage },
    [ST_AUTH]      = { "auth",      gw__auth_stage },
    [ST_RATELIMIT] = { "ratelimit", gw__ratelimit_stage },
    [ST_VALIDATE]  = { "validate",  gw__validate_stage },
    [ST_CACHE]     = { "cache",     gw__cache_stage },
    [ST_AGGREGATE] = { "aggregate", gw__aggregate_stage },
    [ST_BACKEND]   = { "backend",   stage_backend },
    [ST_UPSTREAM]  = { "upstream",  stage_upstream },
};

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

    /* the fixed names are 2, 7, 10, 16 or 17 long: most headers skip
     * the comparisons (this runs for every header, both ways) */
    if (n == 2 || n == 7 || n == 10 || n == 16 || n == 17)
        for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]);
             i++)
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
    return gw__pct_encode(out, v, n, "%/:@!$'()*,;");
}

int
gw__target_build(const gw_route *route, const kb_route_match *m,
                 const char *path, const char *query, kb_buf *out)
{
    const gw_backend *b = route->backend;
    const char *bp;
    size_t bplen;
    int rc;

    if (b == NULL)                   /* aggregate operations have none */
        return KB_EINVAL;
    bp = b->path;
    bplen = strlen(bp);

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

static const char *const classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

static int
code_class(int status)
{
    return status >= 100 && status < 600 ? status / 100 - 1 : 4;
}

/* gateway="…",route="…" for a route, route="(what)" without one. */
static int
route_labels(kb_buf *labels, const gw_route *route, const char *what)
{
    int rc = 0;

    if (route != NULL) {
        rc |= kb_buf_appends(labels, "gateway=\"");
        rc |= kb_metrics_label_escape(labels, route->spec->id);
        rc |= kb_buf_appends(labels, "\",route=\"");
        rc |= kb_metrics_label_escape(labels, route->label);
    } else {
        rc |= kb_buf_appends(labels, "route=\"");
        rc |= kb_metrics_label_escape(labels, what != NULL ? what : "(none)");
    }
    return rc | kb_buf_appendc(labels, '"');
}

static void
count_request(const gw_ctx *c, int status)
{
    const gw_route *route = c->route;
    int k = code_class(status);
    _Atomic(kb_counter *) *slot = route != NULL
        ? &((gw_route *)route)->requests[k]
        : &unmatched_requests[k];
    kb_counter *ctr = atomic_load(slot);

    if (ctr == NULL) {
        kb_buf labels = KB_BUF_INIT(4096);
        int rc = route_labels(&labels, route, c->what);
        rc |= kb_buf_appendf(&labels, ",code=\"%s\"", classes[k]);
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

/* Histograms by route (and status class for the whole request). */
static void
observe(_Atomic(kb_histogram *) *slot, const gw_route *route,
        const char *name, const char *help, const char *code, double seconds)
{
    kb_histogram *h = atomic_load(slot);

    if (h == NULL) {
        kb_buf labels = KB_BUF_INIT(4096);
        int rc = route_labels(&labels, route, NULL);
        if (code != NULL)
            rc |= kb_buf_appendf(&labels, ",code=\"%s\"", code);
        if (rc == 0)
            h = kb_histogram_get(name, help, kb_buf_cstr(&labels),
                                 kb_metrics_latency_buckets,
                                 kb_metrics_latency_nbuckets);
        kb_buf_free(&labels);
        if (h == NULL)
            return;
        atomic_store(slot, h);
    }
    kb_histogram_observe(h, seconds);
}

static void
observe_upstream(const gw_route *route, double seconds)
{
    observe(&((gw_route *)route)->upstream_seconds, route,
            "kiban_gateway_upstream_duration_seconds",
            "Time from sending a request upstream to its complete "
            "response.", NULL, seconds);
}

static void
observe_request(const gw_ctx *c, int status)
{
    int k = code_class(status);

    if (c->route == NULL)
        return;
    observe(&((gw_route *)c->route)->duration[k], c->route,
            "kiban_gateway_request_duration_seconds",
            "Time from a request's complete head to its answer, by "
            "operation and status class.", classes[k],
            (double)(kb_time_mono_ns() - c->req->start_ns) / 1e9);
}

/* ------------------------------------------------------------------------ */
/* Answering                                                                 */

/* Our X-Request-Id and the headers stages asked for, after `headers`. */
static kb_http_header *
with_extra(gw_ctx *c, const kb_http_header *headers, size_t nheaders,
           size_t *n)
{
    kb_http_header *h;

    *n = nheaders;
    if (c->n_res_extra == 0 && c->request_id[0] == '\0')
        return (kb_http_header *)headers;
    h = kb_pool_alloc(c->req->pool,
                      (nheaders + c->n_res_extra + 1) * sizeof(*h));
    if (h == NULL)
        return (kb_http_header *)headers;
    if (nheaders > 0)
        memcpy(h, headers, nheaders * sizeof(*h));
    memcpy(h + nheaders, c->res_extra, c->n_res_extra * sizeof(*h));
    *n += c->n_res_extra;
    if (c->request_id[0] != '\0')
        h[(*n)++] = (kb_http_header){ "X-Request-Id", c->request_id };
    return h;
}

/*
 * Every answer goes through here: counts and logs it and releases the
 * request (and with it the ctx, which lives in the request pool: do not
 * touch c after).  `headers` must not hold X-Request-Id (added here).
 */
static void
answer(gw_ctx *c, int status, const kb_http_header *headers,
       size_t nheaders, const char *body, size_t body_len,
       const kb_http_header *trailers, size_t ntrailers)
{
    size_t nh;
    kb_http_header *h;

    if (c->wait != NULL)
        wait_end(c);
    h = with_extra(c, headers, nheaders, &nh);
    c->answered = true;
    count_request(c, status);
    observe_request(c, status);
    gw__accesslog(c, status, body_len);
    if (ntrailers > 0)
        kb_http_respond_trailers(c->req, status, h, nh, body, body_len,
                                 trailers, ntrailers);
    else
        kb_http_respond(c->req, status, h, nh, body, body_len);
}

void
gw__respond(gw_ctx *c, int status, const kb_http_header *headers,
            size_t nheaders, const char *body, size_t body_len)
{
    answer(c, status, headers, nheaders, body, body_len, NULL, 0);
}

/* JSON answer with an optional Allow header (405). */
static void
respond_json_allow(gw_ctx *c, int status, json_t *body, const char *allow)
{
    kb_http_header h[2];
    size_t nh = 0;
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;

    json_decref(body);
    h[nh++] = (kb_http_header){ "Content-Type", "application/json" };
    if (allow != NULL)
        h[nh++] = (kb_http_header){ "Allow", allow };
    if (text == NULL) {
        static const char oom[] =
            "{\"error\":{\"code\":500,\"status\":\"INTERNAL\","
            "\"message\":\"out of memory\"}}";
        gw__respond(c, 500, h, nh, oom, sizeof(oom) - 1);
        return;
    }
    gw__respond(c, status, h, nh, text, strlen(text));
    free(text);
}

void
gw__respond_json(gw_ctx *c, int status, json_t *body)
{
    respond_json_allow(c, status, body, NULL);
}

static void
respond_verror(gw_ctx *c, int status, const char *allow, const char *fmt,
               va_list ap)
{
    char msg[512];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    respond_json_allow(c, status,
                       json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status,
                                 "status", kb_http_status_name(status),
                                 "message", msg),
                       allow);
}

void
gw__respond_error(gw_ctx *c, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    respond_verror(c, status, NULL, fmt, ap);
    va_end(ap);
}

static void
respond_405(gw_ctx *c, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
respond_405(gw_ctx *c, const char *allow, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    respond_verror(c, 405, allow, fmt, ap);
    va_end(ap);
}

int
gw__header_add(gw_ctx *c, bool upstream, const char *name, const char *value)
{
    kb_http_header *list = upstream ? c->up_extra : c->res_extra;
    size_t *n = upstream ? &c->n_up_extra : &c->n_res_extra;
    char *nm, *v;

    if (*n == GW_MAX_EXTRA)
        return KB_ETOOBIG;
    nm = kb_pool_strdup(c->req->pool, name);
    v = kb_pool_strdup(c->req->pool, value);
    if (nm == NULL || v == NULL)
        return KB_ENOMEM;
    list[(*n)++] = (kb_http_header){ nm, v };
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Waiting for an instance (cold start, or every instance busy)              */

typedef enum gw_wait_state {
    GW_WAIT_IDLE,                /* not queued at the runtime */
    GW_WAIT_QUEUED,              /* queued: notify comes, or cancel works */
    GW_WAIT_NOTIFYING            /* cancel failed: notify is on its way */
} gw_wait_state;

typedef struct gw_wait_timer {
    uv_timer_t     timer;        /* malloc'd: outlives the pool until its
                                    close callback */
    struct gw_wait *wait;        /* NULL once the wait has ended */
} gw_wait_timer;

/* A request's wait (in the request pool, from its first KB_EAGAIN). */
struct gw_wait {
    kb_rt_waiter    w;           /* the runtime queues this */
    gw_ctx         *c;
    struct gw_wait *prev, *next; /* the worker's waiting list */
    gw_wait_timer  *timer;       /* NULL: not started or closed */
    gw_wait_state   state;
    bool            linked;      /* on the worker's list */
    bool            expired;     /* the deadline passed */
    char            revision[sizeof(((kb_endpoint *)0)->revision)];
};

static void
wait_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* The wait is over (the request got an instance, or is answered): stop
 * its timer and take it off the worker's list.  Not while QUEUED. */
static void
wait_end(gw_ctx *c)
{
    struct gw_wait *wt = c->wait;
    gw_worker *w = c->w;

    if (wt->timer != NULL) {
        wt->timer->wait = NULL;
        uv_close((uv_handle_t *)&wt->timer->timer, wait_timer_closed);
        wt->timer = NULL;
    }
    if (wt->linked) {
        if (wt->prev != NULL)
            wt->prev->next = wt->next;
        else
            w->waiting = wt->next;
        if (wt->next != NULL)
            wt->next->prev = wt->prev;
        wt->prev = wt->next = NULL;
        wt->linked = false;
    }
}

/* From any thread: an instance may be free now; acquire again on the
 * request's own loop. */
static void
on_notify(kb_rt_waiter *w)
{
    gw__post(((struct gw_wait *)w)->c);
}

/* Try to take the waiter off the runtime's queue: true if it was taken
 * (no notify will come), false if a notify is on its way. */
static bool
wait_cancel(gw_ctx *c)
{
    struct gw_wait *wt = c->wait;

    if (wt->state != GW_WAIT_QUEUED)
        return wt->state == GW_WAIT_IDLE;
    if (c->gw->rt_ops->wait_cancel(c->gw->rt, &wt->w)) {
        wt->state = GW_WAIT_IDLE;
        return true;
    }
    wt->state = GW_WAIT_NOTIFYING;
    return false;
}

/* The wait ran past the deadline: 429 when the revision is at its
 * instance cap (more would not have helped), else 503. */
static void
wait_timeout_answer(gw_ctx *c)
{
    const gw_backend *b = c->route->backend;
    struct gw_wait *wt = c->wait;
    const char *rev = wt->revision[0] != '\0' ? wt->revision : b->service;

    if (c->gw->rt_ops->at_capacity(c->gw->rt, c->route->spec->project,
                                   b->service, wt->revision)) {
        (void)gw__header_add(c, false, "Retry-After", "1");
        gw__respond_error(c, 429, "revision %s is at its maximum number of "
                          "instances and none became free within %.3gs",
                          rev, (double)b->deadline_ms / 1000.0);
        return;
    }
    gw__respond_error(c, 503, "no instance of %s became ready within %.3gs",
                      rev, (double)b->deadline_ms / 1000.0);
}

static void
on_wait_timeout(uv_timer_t *t)
{
    gw_wait_timer *wtm = t->data;
    struct gw_wait *wt = wtm->wait;

    if (wt == NULL)
        return;
    wt->expired = true;
    if (wait_cancel(wt->c))
        wait_timeout_answer(wt->c);
    /* else the notify's resume sees `expired` and answers */
}

/* Queue c's wait on its worker and arm the deadline (first wait only). */
static int
wait_begin(gw_ctx *c)
{
    struct gw_wait *wt = c->wait;
    gw_worker *w = c->w;
    uint64_t now = kb_time_mono_ns(), ms;

    wt->state = GW_WAIT_QUEUED;
    if (wt->linked)
        return 0;
    if ((wt->timer = malloc(sizeof(*wt->timer))) == NULL)
        return KB_ENOMEM;
    wt->timer->wait = wt;
    uv_timer_init(w->loop, &wt->timer->timer);
    wt->timer->timer.data = wt->timer;
    ms = c->deadline_ns > now ? (c->deadline_ns - now + 999999) / 1000000
                              : 0;
    uv_timer_start(&wt->timer->timer, on_wait_timeout, ms, 0);
    wt->next = w->waiting;
    if (w->waiting != NULL)
        w->waiting->prev = wt;
    w->waiting = wt;
    wt->linked = true;
    return 0;
}

void
gw__waits_close(gw_worker *w)
{
    struct gw_wait *wt = w->waiting, *next;

    for (; wt != NULL; wt = next) {
        next = wt->next;
        if (wait_cancel(wt->c))
            gw__respond_error(wt->c, 503, "the gateway is shutting down");
        /* else the notify's resume sees `closing` and answers */
    }
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

void
gw__resume(gw_ctx *c)
{
    if (c->wait != NULL && c->wait->state != GW_WAIT_IDLE)
        c->wait->state = GW_WAIT_IDLE;       /* posted by on_notify */
    if (c->aborted) {
        c->what = c->route != NULL ? NULL : "(aborted)";
        gw__respond(c, GW_STATUS_ABORTED, NULL, 0, NULL, 0);
        return;
    }
    pipeline_run(c);
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

/* A request to a direct service host: its route, straight to backend. */
static gw_step
route_service_host(gw_ctx *c, const gw_svc_host *sh)
{
    gw_route *r = gw__svc_route(c, sh);

    if (r == NULL) {
        c->what = "(service)";
        gw__respond_error(c, 500, "out of memory");
        return GW_DONE;
    }
    c->route = r;
    c->direct = true;
    c->stage = ST_BACKEND;
    return GW_NEXT;
}

static gw_step
stage_route(gw_ctx *c)
{
    const char *host = kb_http_req_header(c->req, "Host");
    const kb_router *router = gw__table_host_router(c->table, host);
    gw_svc_host sh;
    int rc;

    if (router == NULL) {
        /* no gateway claims the host: a service's own, or the fallback */
        if (c->gw->domain[0] != '\0' &&
            gw__svc_host_parse(c->gw->domain, host, &sh))
            return route_service_host(c, &sh);
        router = c->table->fallback;
    }
    rc = kb_router_match(router, c->req->method, c->req->path,
                         strlen(c->req->path), &c->match);

    if (rc == 200) {
        c->route = c->match.target;
        return GW_NEXT;
    }
    if (strcmp(c->req->method, "OPTIONS") == 0 && router != NULL &&
        gw__cors_preflight(c, router))
        return GW_DONE;
    if (rc == 404 && strcmp(c->req->path, "/healthz") == 0) {
        c->what = "(healthz)";
        if (strcmp(c->req->method, "GET") != 0 &&
            strcmp(c->req->method, "HEAD") != 0) {
            respond_405(c, "GET, HEAD", "method %s is not allowed here",
                        c->req->method);
            return GW_DONE;
        }
        gw__respond_json(c, 200, json_pack("{s:s}", "status", "ok"));
        return GW_DONE;
    }
    c->what = "(none)";
    if (rc == 405) {
        respond_405(c, c->match.allow, "method %s is not allowed for %s",
                    c->req->method, c->req->path);
        return GW_DONE;
    }
    gw__respond_error(c, 404, "no route for %s %s", c->req->method,
                      c->req->path);
    return GW_DONE;
}

/* Answer a failed pick: unknown service or tag (502 on a route, 404 on
 * a service host), cannot serve 503, queue full 429. */
static void
pick_failed(gw_ctx *c, int rc)
{
    const gw_backend *b = c->route->backend;

    if (rc == KB_ENOTFOUND) {
        int status = c->direct ? 404 : 502;
        if (b->tag != NULL)
            gw__respond_error(c, status, "service %s has no revision tagged "
                              "%s", b->service, b->tag);
        else if (c->direct)
            gw__respond_error(c, status, "no service %s in project %s",
                              b->service, c->route->spec->project);
        else
            gw__respond_error(c, status, "service %s not found", b->service);
    } else if (rc == KB_EUNAVAIL) {
        gw__respond_error(c, 503, "service %s has no running instance",
                          b->service);
    } else if (rc == KB_ETOOBIG) {
        (void)gw__header_add(c, false, "Retry-After", "1");
        gw__respond_error(c, 429, "too many requests are waiting for an "
                          "instance of service %s", b->service);
    } else if (rc == KB_EAGAIN) {
        gw__respond_error(c, 503, "no instance of service %s is free",
                          b->service);
    } else {
        gw__respond_error(c, 500, "cannot choose a backend: %s",
                          kb_strerror(rc));
    }
}

/* Pick where a retry goes (it does not wait); answers when nowhere. */
static bool
pick_backend(gw_ctx *c)
{
    int rc = gw__backend_pick(c, c->route->backend, NULL, NULL, &c->pick);

    if (rc == 0) {
        c->picked = true;
        return true;
    }
    pick_failed(c, rc);
    return false;
}

/*
 * The first pick, which may wait: on KB_EAGAIN the request is queued at
 * the runtime and PENDING until notified (then this stage runs again and
 * asks for the same revision), the deadline passes, or the client goes.
 */
static gw_step
backend_acquire(gw_ctx *c)
{
    const gw_backend *b = c->route->backend;
    struct gw_wait *wt = c->wait;
    kb_rt_waiter *w = NULL;
    int rc;

    if (b->service != NULL && !c->w->closing &&
        (wt == NULL || !wt->expired)) {
        if (wt == NULL) {
            if ((wt = kb_pool_calloc(c->req->pool, sizeof(*wt))) == NULL) {
                gw__respond_error(c, 500, "out of memory");
                return GW_DONE;
            }
            wt->w.notify = on_notify;
            wt->c = c;
            c->wait = wt;
        }
        w = &wt->w;
    }
    rc = gw__backend_pick(c, b,
                          wt != NULL && wt->revision[0] != '\0' ? wt->revision
                                                                 : NULL,
                          w, &c->pick);
    if (rc == KB_EAGAIN && w != NULL) {
        snprintf(wt->revision, sizeof(wt->revision), "%s",
                 c->pick.lease.ep.revision);
        if (wait_begin(c) != 0) {
            if (wait_cancel(c)) {
                gw__respond_error(c, 500, "out of memory");
                return GW_DONE;
            }
        }
        c->stage--;                  /* run this stage again on resume */
        return GW_PENDING;
    }
    if (rc == KB_EAGAIN && wt != NULL && wt->expired) {
        wait_timeout_answer(c);
        return GW_DONE;
    }
    if (rc != 0) {
        pick_failed(c, rc);
        return GW_DONE;
    }
    if (wt != NULL)
        wait_end(c);
    c->picked = true;
    return GW_NEXT;
}

static gw_step
stage_backend(gw_ctx *c)
{
    gw_step step;
    int rc;

    if (c->deadline_ns == 0)         /* covers the wait and the call */
        c->deadline_ns = kb_time_mono_ns() +
                         c->route->backend->deadline_ms * 1000000ull;
    if ((step = backend_acquire(c)) != GW_NEXT)
        return step;
    rc = gw__target_build(c->route, &c->match, c->req->path, c->req->query,
                          &c->target);
    if (rc != 0) {
        gw__backend_done(c, &c->pick, KB_ECANCELED, 0);
        c->picked = false;
        gw__respond_error(c, rc == KB_ETOOBIG ? 414 : 500,
                          "cannot build the upstream request target");
        return GW_DONE;
    }
    return GW_NEXT;
}

static bool
idempotent(const char *method)
{
    static const char *const m[] = { "GET", "HEAD", "PUT", "DELETE",
                                     "OPTIONS", "TRACE" };

    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (strcmp(method, m[i]) == 0)
            return true;
    return false;
}

/* Nothing reached the backend: a retry is safe for any method. */
static bool
not_sent(int err)
{
    return err == -ECONNREFUSED || err == -EHOSTUNREACH ||
           err == -ENETUNREACH || err == -EADDRNOTAVAIL;
}

/*
 * Retry this answer?  Connect failures always (nothing was sent);
 * connection resets and 502/503 for idempotent methods only; never past
 * GW_MAX_ATTEMPTS, the deadline, or the gateway-wide retry budget
 * (retries may add at most 20 % to the upstream load, plus what is
 * banked, so a failing backend is not hit with a retry storm).
 */
static bool
should_retry(gw_ctx *c, int err, int status)
{
    kb_gateway *gw = c->gw;
    int64_t have;

    if (c->attempts >= GW_MAX_ATTEMPTS || kb_time_mono_ns() >= c->deadline_ns)
        return false;
    if (!not_sent(err) &&
        !(idempotent(c->req->method) &&
          (err == -ECONNRESET || err == -EPIPE || status == 502 ||
           status == 503)))
        return false;
    have = atomic_load(&gw->retry_budget);
    while (have >= GW_RETRY_COST)
        if (atomic_compare_exchange_weak(&gw->retry_budget, &have,
                                         have - GW_RETRY_COST))
            return true;
    return false;
}

static void
earn_retry(kb_gateway *gw)
{
    int64_t have = atomic_load(&gw->retry_budget);

    while (have < GW_RETRY_CAP &&
           !atomic_compare_exchange_weak(&gw->retry_budget, &have,
                                         have + GW_RETRY_EARN))
        ;
}

static int send_attempt(gw_ctx *c);

static void
on_upstream(int err, const kb_http_client_res *res, void *data)
{
    gw_ctx *c = data;
    const gw_route *route = c->route;
    const char *connection;
    kb_buf conn = KB_BUF_INIT(GW_MAX_XFF);
    kb_http_header *h;
    size_t nh = 0;
    uint64_t took = kb_time_mono_ns() - c->upstream_start_ns;

    c->call = NULL;
    c->upstream_ns += took;
    observe_upstream(route, (double)took / 1e9);
    gw__backend_done(c, &c->pick, err, res != NULL ? res->status : 0);
    c->picked = false;
    if (should_retry(c, err, res != NULL ? res->status : 0)) {
        kb_log_debug("retrying upstream call", "{s:s, s:s, s:i, s:i}",
                     "route", route->label, "request_id", c->request_id,
                     "attempt", c->attempts + 1,
                     "status", res != NULL ? res->status : 0);
        if (pick_backend(c) && send_attempt(c) == 0)
            return;
        if (c->answered)
            return;
    }
    if (err == KB_ETIMEDOUT) {
        gw__respond_error(c, 504, "upstream did not answer within the "
                          "deadline of %.3gs",
                          (double)route->backend->deadline_ms / 1000.0);
        return;
    }
    if (err == KB_EPARSE || err == KB_ETOOBIG) {
        gw__respond_error(c, 502, "upstream sent %s",
                          err == KB_EPARSE ? "an invalid response"
                                           : "a response that is too large");
        return;
    }
    if (err != 0) {
        gw__respond_error(c, 502, "upstream %s:%d failed: %s",
                          c->pick.host, c->pick.port, kb_strerror(err));
        return;
    }
    if (c->on_response != NULL)
        c->on_response(c, res);
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
        gw__respond_error(c, 500, "out of memory");
        return;
    }
    for (size_t i = 0; i < res->nheaders; i++) {
        const char *name = res->headers[i].name;
        if (gw__hop_by_hop(name, connection) ||
            strcasecmp(name, "X-Request-Id") == 0 ||
            (route->cors != NULL &&         /* the gateway's policy rules */
             strncasecmp(name, "Access-Control-", 15) == 0))
            continue;
        h[nh++] = res->headers[i];
    }
    kb_buf_free(&conn);
    answer(c, res->status, h, nh, res->body, res->body_len, res->trailers,
           res->ntrailers);
}

static void
on_abort(kb_http_req *req, void *data)
{
    gw_ctx *c = data;

    (void)req;
    if (c->answered)
        return;
    if (c->wait != NULL && c->wait->linked) {
        /* waiting for an instance: answer now if the runtime lets the
         * waiter go, else its notify's resume answers */
        if (wait_cancel(c))
            gw__respond(c, GW_STATUS_ABORTED, NULL, 0, NULL, 0);
        else
            c->aborted = true;
        return;
    }
    if (c->call == NULL) {
        /* a stage is waiting (JWKS fetch, cache fill …): it resumes in
         * bounded time and gw__resume answers for the gone client */
        c->aborted = true;
        return;
    }
    gw__upstream_cancel(c, c->call);
    c->call = NULL;
    if (c->picked) {
        gw__backend_done(c, &c->pick, KB_ECANCELED, 0);
        c->picked = false;
    }
    /* the server still needs a response call to release the request */
    gw__respond(c, GW_STATUS_ABORTED, NULL, 0, NULL, 0);
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
replaced_upstream(const gw_ctx *c, const char *name)
{
    static const char *const names[] = {
        "Host", "Content-Length", "Expect", "X-Forwarded-For",
        "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id", "traceparent",
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    for (size_t i = 0; i < c->n_up_extra; i++)
        if (strcasecmp(name, c->up_extra[i].name) == 0)
            return true;
    /* only the gateway may say who the caller is, on every route */
    if (gw__auth_header_reserved(name))
        return true;
    /* tracestate belongs to the incoming trace only */
    return !c->trace_continued && strcasecmp(name, "tracestate") == 0;
}

/* The upstream request's headers, built once per request (retries reuse
 * them; only Host changes with the instance). */
static kb_http_header *upstream_headers(gw_ctx *c, size_t *n);

static int
send_attempt(gw_ctx *c)
{
    kb_http_req *req = c->req;
    kb_http_client_req up;
    uint64_t now = kb_time_mono_ns();
    size_t nh;
    kb_http_header *h = upstream_headers(c, &nh);
    int rc;

    if (h == NULL) {
        gw__backend_done(c, &c->pick, KB_ENOMEM, 0);
        c->picked = false;
        gw__respond_error(c, 500, "out of memory");
        return KB_ENOMEM;
    }
    memset(&up, 0, sizeof(up));
    up.method = req->method;
    up.host = c->pick.host;
    up.port = c->pick.port;
    up.target = kb_buf_cstr(&c->target);
    up.headers = h;
    up.nheaders = nh;
    up.body = req->body;
    up.body_len = req->body_len;
    up.timeout_ms = c->deadline_ns > now ? (c->deadline_ns - now) / 1000000
                                         : 1;
    if (up.timeout_ms == 0)
        up.timeout_ms = 1;
    up.tls = c->pick.tls;
    up.h2 = c->pick.h2;
    c->attempts++;
    c->upstream_start_ns = now;
    rc = gw__upstream_send(c, &c->pick, &up, on_upstream, c, &c->call);
    if (rc != 0) {
        c->call = NULL;
        gw__backend_done(c, &c->pick, rc, 0);
        c->picked = false;
        gw__respond_error(c, 502, "upstream %s:%d failed: %s", c->pick.host,
                          c->pick.port, kb_strerror(rc));
    }
    return rc;
}

size_t
gw__forwarded_headers(const gw_ctx *c, const char *xff, kb_http_header *h)
{
    const char *host = kb_http_req_header(c->req, "Host");
    size_t n = 0;

    h[n++] = (kb_http_header){ "X-Forwarded-For", xff };
    h[n++] = (kb_http_header){ "X-Forwarded-Proto",
                               c->req->tls ? "https" : "http" };
    if (host != NULL)
        h[n++] = (kb_http_header){ "X-Forwarded-Host", host };
    h[n++] = (kb_http_header){ "X-Request-Id", c->request_id };
    h[n++] = (kb_http_header){ "traceparent", c->traceparent };
    return n;
}

static kb_http_header *
upstream_headers(gw_ctx *c, size_t *n)
{
    kb_http_req *req = c->req;
    kb_buf conn = KB_BUF_INIT(GW_MAX_XFF), xff = KB_BUF_INIT(GW_MAX_XFF);
    const char *connection, *prior;
    kb_http_header *h;
    size_t nh = 0;
    char *xff_value;

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
    h = kb_pool_alloc(req->pool, (req->nheaders + GW_EXTRA_HEADERS +
                                  c->n_up_extra) * sizeof(*h));
    if (h == NULL || xff_value == NULL) {
        kb_buf_free(&conn);
        return NULL;
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *name = req->headers[i].name;
        if (gw__hop_by_hop(name, connection) || replaced_upstream(c, name))
            continue;
        h[nh++] = req->headers[i];
    }
    kb_buf_free(&conn);
    /* gRPC needs "TE: trailers" end to end (it is hop-by-hop otherwise) */
    if (c->pick.h2 && connection == NULL &&
        kb_http_req_header(req, "TE") != NULL)
        h[nh++] = (kb_http_header){ "TE", "trailers" };
    h[nh++] = (kb_http_header){ "Host", c->pick.authority };
    nh += gw__forwarded_headers(c, xff_value, h + nh);
    memcpy(h + nh, c->up_extra, c->n_up_extra * sizeof(*h));
    *n = nh + c->n_up_extra;
    return h;
}

static gw_step
stage_upstream(gw_ctx *c)
{
    earn_retry(c->gw);
    return send_attempt(c) == 0 ? GW_PENDING : GW_DONE;
}

/* ------------------------------------------------------------------------ */

static void
ctx_release(void *data)
{
    gw_ctx *c = data;

    kb_buf_free(&c->target);
    json_decref(c->claims);
    gw__table_unref(c->table);
    gw__worker_release(c->w);
}

void
kb_gateway_handle(kb_http_req *req, void *data)
{
    gw_worker *w = data;
    gw_ctx *c = kb_pool_calloc(req->pool, sizeof(*c));

    if (c == NULL) {
        kb_http_respond_error(req, 500, "out of memory");
        return;
    }
    c->gw = w->gw;
    c->w = w;
    c->req = req;
    w->live++;
    kb_buf_init(&c->target, GW_MAX_TARGET);
    c->table = gw__worker_table(w);
    if (c->table == NULL) {
        gw__worker_release(w);
        kb_http_respond_error(req, 500, "gateway has no route table");
        return;
    }
    if (kb_pool_cleanup_add(req->pool, ctx_release, c) != 0) {
        gw__table_unref(c->table);
        gw__worker_release(w);
        kb_http_respond_error(req, 500, "out of memory");
        return;
    }
    kb_http_req_on_abort(req, on_abort, c);
    pipeline_run(c);
}
