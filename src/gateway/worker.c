/*
 * worker.c - what a data-path loop owns besides its requests: its upstream
 * clients, the queue through which other threads hand requests back to it
 * (gw__post), its buffered access log, and where a backend call goes
 * (an address, or an instance leased from the runtime).
 */
#include "gateway/gw_int.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/time.h"
#include "http/curl_client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_LOG_FLUSH     (32 * 1024) /* write the access log past this */
#define GW_LOG_MAX       (1024 * 1024) /* lines dropped beyond this */
#define GW_LOG_PERIOD_MS 1000

/* ------------------------------------------------------------------------ */
/* Backends: an address, or an instance leased from the runtime              */

/* Uniform 32 bits for the traffic split: xorshift64* per thread, seeded
 * once from the system's random source. */
static uint32_t
split_random(void)
{
    static _Thread_local uint64_t x;

    while (x == 0)
        if (kb_random_bytes(&x, sizeof(x)) != 0)
            x = kb_time_mono_ns() | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

int
gw__backend_pick(gw_ctx *c, const gw_backend *b, const char *revision,
                 kb_rt_waiter *w, gw_pick *out)
{
    const gw_rt_ops *ops = c->gw->rt_ops;
    int rc;

    memset(out, 0, sizeof(*out));
    out->tls = b->tls;
    out->h2 = b->h2;
    if (b->service == NULL) {
        out->host = b->host;
        out->port = b->port;
        snprintf(out->authority, sizeof(out->authority), "%s", b->authority);
        return 0;
    }
    if (ops == NULL)
        return KB_ENOTFOUND;
    rc = ops->acquire(c->gw->rt, c->route->spec->project, b->service, b->tag,
                      revision, split_random(), w, &out->lease);
    if (rc != 0) {
        out->lease.instance = NULL;  /* nothing to release */
        return rc;
    }
    out->host = out->lease.ep.host;
    out->port = out->lease.ep.port;
    out->revision = out->lease.ep.revision;
    snprintf(out->authority, sizeof(out->authority), "%.63s:%d",
             out->lease.ep.host, out->lease.ep.port);
    return 0;
}

void
gw__backend_done(gw_ctx *c, gw_pick *p, int err, int status)
{
    kb_rt_lease lease;

    if (p->lease.instance == NULL)
        return;
    /* release a copy: the pick keeps host and revision for the log */
    lease = p->lease;
    p->lease.instance = NULL;
    c->gw->rt_ops->release(c->gw->rt, &lease, err, status);
}

/* ------------------------------------------------------------------------ */
/* Upstream calls: our HTTP/1.1 client, or libcurl for https and h2          */

typedef struct gw_call {
    bool  curl;
    void *h;
} gw_call;

int
gw__upstream_send(gw_ctx *c, const gw_pick *p, const kb_http_client_req *req,
                  kb_http_client_cb cb, void *data, void **handle)
{
    gw_call *call = kb_pool_alloc(c->req->pool, sizeof(*call));
    int rc;

    if (call == NULL)
        return KB_ENOMEM;
    call->curl = p->tls || p->h2;
    if (call->curl) {
        if (c->w->xclient == NULL)
            return -ENOTSUP;
        rc = kb_curl_client_send(c->w->xclient, req, cb, data,
                                 (kb_curl_call **)&call->h);
    } else {
        rc = kb_http_client_send(c->w->client, req, cb, data,
                                 (kb_http_client_call **)&call->h);
    }
    *handle = rc == 0 ? call : NULL;
    return rc;
}

void
gw__upstream_cancel(gw_ctx *c, void *handle)
{
    gw_call *call = handle;

    (void)c;
    if (call == NULL)
        return;
    if (call->curl)
        kb_curl_client_cancel(call->h);
    else
        kb_http_client_cancel(call->h);
}

/* ------------------------------------------------------------------------ */
/* Handing requests back to their loop                                       */

void
gw__post(gw_ctx *c)
{
    gw_worker *w = c->w;

    pthread_mutex_lock(&w->lock);
    c->posted_next = NULL;
    if (w->posted_tail != NULL)
        w->posted_tail->posted_next = c;
    else
        w->posted_head = c;
    w->posted_tail = c;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->wake);
}

static void
on_wake(uv_async_t *a)
{
    gw_worker *w = a->data;
    gw_ctx *c;

    pthread_mutex_lock(&w->lock);
    c = w->posted_head;
    w->posted_head = w->posted_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (c != NULL) {
        gw_ctx *next = c->posted_next;  /* c may be freed by resuming */
        gw__resume(c);
        c = next;
    }
}

gw_table *
gw__worker_table(gw_worker *w)
{
    kb_gateway *gw = w->gw;
    uint64_t gen = atomic_load(&gw->table_gen);

    if (w->table == NULL || gen != w->table_gen) {
        pthread_mutex_lock(&gw->lock);
        gw__table_unref(w->table);
        w->table = gw->table != NULL ? gw__table_ref(gw->table) : NULL;
        w->table_gen = atomic_load(&gw->table_gen);
        pthread_mutex_unlock(&gw->lock);
    }
    return w->table != NULL ? gw__table_ref(w->table) : NULL;
}

/* ------------------------------------------------------------------------ */
/* Access log                                                                */

struct gw_accesslog {
    int fd;                          /* -1: off */
    bool own;                        /* we opened it */
};

int
kb_gateway_set_access_log(kb_gateway *gw, const char *where)
{
    struct gw_accesslog *al = gw->accesslog;
    int fd;

    if (al == NULL) {
        if ((al = calloc(1, sizeof(*al))) == NULL)
            return KB_ENOMEM;
        al->fd = STDERR_FILENO;
        gw->accesslog = al;
    }
    if (where == NULL || strcmp(where, "stderr") == 0)
        fd = STDERR_FILENO;
    else if (strcmp(where, "stdout") == 0)
        fd = STDOUT_FILENO;
    else if (strcmp(where, "off") == 0)
        fd = -1;
    else if ((fd = open(where, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                        0640)) < 0)
        return -errno;
    if (al->own)
        close(al->fd);
    al->fd = fd;
    al->own = fd > STDERR_FILENO;
    return 0;
}

void
gw__accesslog_free(kb_gateway *gw)
{
    if (gw->accesslog != NULL && gw->accesslog->own)
        close(gw->accesslog->fd);
    free(gw->accesslog);
    gw->accesslog = NULL;
}

static void
log_flush(gw_worker *w)
{
    const struct gw_accesslog *al = w->gw->accesslog;
    size_t off = 0;

    while (al != NULL && al->fd >= 0 && off < w->log.len) {
        ssize_t n = write(al->fd, w->log.data + off, w->log.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;                   /* a full disk loses lines, not us */
        off += (size_t)n;
    }
    kb_buf_reset(&w->log);
}

static void
on_log_timer(uv_timer_t *t)
{
    log_flush(t->data);
}

/* A JSON string (quotes included) of at most `max` bytes of s. */
static int
json_str(kb_buf *b, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    int rc = kb_buf_appendc(b, '"');

    for (size_t i = 0; s != NULL && s[i] != '\0' && i < max && rc == 0; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            rc = kb_buf_appendc(b, '\\') | kb_buf_appendc(b, (char)ch);
        else if (ch < 0x20 || ch == 0x7f)
            rc = kb_buf_appendf(b, "\\u00%c%c", hex[ch >> 4], hex[ch & 15]);
        else
            rc = kb_buf_appendc(b, (char)ch);
    }
    return rc | kb_buf_appendc(b, '"');
}

/*
 * One line per answered request:
 * {"time","msg":"access","method","host","path","status","bytes",
 *  "duration_ms","upstream_ms","attempts","gateway","route","upstream",
 *  "revision","service","cache","request_id","trace_id","client",
 *  "user_agent"}
 */
void
gw__accesslog(gw_ctx *c, int status, size_t bytes)
{
    gw_worker *w = c->w;
    kb_buf *b = &w->log;
    const kb_http_req *req = c->req;
    char ts[KB_RFC3339_LEN];
    size_t mark = b->len;
    uint64_t now = kb_time_mono_ns();
    int rc;

    if (w->gw->accesslog == NULL || w->gw->accesslog->fd < 0)
        return;
    kb_time_rfc3339(ts, sizeof(ts), kb_time_unix_ns(), 3);
    rc = kb_buf_appendf(b, "{\"time\":\"%s\",\"msg\":\"access\","
                           "\"method\":", ts);
    rc |= json_str(b, req->method, 32);
    rc |= kb_buf_appends(b, ",\"host\":");
    rc |= json_str(b, kb_http_req_header(req, "Host"), 256);
    rc |= kb_buf_appends(b, ",\"path\":");
    rc |= json_str(b, req->path, 2048);
    rc |= kb_buf_appendf(b, ",\"status\":%d,\"bytes\":%zu,"
                            "\"duration_ms\":%.3f,\"upstream_ms\":%.3f,"
                            "\"attempts\":%d",
                         status, bytes, (double)(now - req->start_ns) / 1e6,
                         (double)c->upstream_ns / 1e6, c->attempts);
    if (c->route != NULL) {
        rc |= kb_buf_appends(b, ",\"gateway\":");
        rc |= json_str(b, c->route->spec->id, 512);
        rc |= kb_buf_appends(b, ",\"route\":");
        rc |= json_str(b, c->route->label, 2048);
        if (c->route->backend != NULL && c->route->backend->service != NULL) {
            rc |= kb_buf_appends(b, ",\"service\":");
            rc |= json_str(b, c->route->backend->service, 256);
        }
    }
    if (c->attempts > 0 && c->pick.host != NULL)
        rc |= kb_buf_appendf(b, ",\"upstream\":\"%s:%d\"", c->pick.host,
                             c->pick.port);
    if (c->attempts > 0 && c->pick.revision != NULL) {
        rc |= kb_buf_appends(b, ",\"revision\":");
        rc |= json_str(b, c->pick.revision, 96);
    }
    if (c->cache_state != NULL)
        rc |= kb_buf_appendf(b, ",\"cache\":\"%s\"", c->cache_state);
    rc |= kb_buf_appendf(b, ",\"request_id\":\"%s\",\"trace_id\":\"%.32s\","
                            "\"client\":",
                         c->request_id,
                         c->traceparent[0] != '\0' ? c->traceparent + 3 : "");
    rc |= json_str(b, req->remote_addr, 64);
    rc |= kb_buf_appends(b, ",\"user_agent\":");
    rc |= json_str(b, kb_http_req_header(req, "User-Agent"), 256);
    rc |= kb_buf_appends(b, "}\n");
    if (rc != 0) {                   /* over GW_LOG_MAX: drop this line */
        b->len = mark;
        if (b->data != NULL)
            b->data[mark] = '\0';
    }
    if (b->len >= GW_LOG_FLUSH)
        log_flush(w);
}

/* ------------------------------------------------------------------------ */

int
kb_gateway_worker_create(kb_gateway *gw, uv_loop_t *loop,
                         kb_gateway_worker **out)
{
    gw_worker *w = calloc(1, sizeof(*w));
    int rc;

    *out = NULL;
    if (w == NULL)
        return KB_ENOMEM;
    w->gw = gw;
    w->loop = loop;
    kb_buf_init(&w->log, GW_LOG_MAX);
    /* idle upstream connections: as many as the busiest moment needs
     * (HTTP/2 clients can have hundreds of requests in flight) */
    if ((rc = kb_http_client_create(loop, &(kb_http_client_opts){
                                        .max_idle_per_backend = 1024 },
                                    &w->client)) != 0)
        goto out_free;
    if ((rc = kb_curl_client_create(loop, &(kb_curl_client_opts){
                                        .ca_file = gw->ca_file },
                                    &w->xclient)) != 0)
        goto out_client;
    pthread_mutex_init(&w->lock, NULL);
    uv_async_init(loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_timer_init(loop, &w->log_timer);
    w->log_timer.data = w;
    uv_timer_start(&w->log_timer, on_log_timer, GW_LOG_PERIOD_MS,
                   GW_LOG_PERIOD_MS);
    uv_unref((uv_handle_t *)&w->log_timer);
    *out = w;
    return 0;

out_client:
    kb_http_client_destroy(w->client);
out_free:
    free(w);
    return rc;
}

static void
worker_closed(uv_handle_t *h)
{
    gw_worker *w = h->data;

    if (--w->open_handles > 0)
        return;
    pthread_mutex_destroy(&w->lock);
    kb_buf_free(&w->log);
    free(w);
}

/* The last request is gone: close the clients and handles. */
static void
worker_finish(gw_worker *w)
{
    log_flush(w);
    gw__table_unref(w->table);
    w->table = NULL;
    kb_curl_client_destroy(w->xclient);
    kb_http_client_destroy(w->client);
    w->open_handles = 2;
    uv_close((uv_handle_t *)&w->wake, worker_closed);
    uv_close((uv_handle_t *)&w->log_timer, worker_closed);
}

void
gw__worker_release(gw_worker *w)
{
    if (--w->live == 0 && w->closing)
        worker_finish(w);
}

/*
 * Requests still alive (a forced shutdown released their connections, but
 * a stage may be waiting for a JWKS fetch or a cache fill that posts them
 * back here) keep the worker, its queue and its clients until the last one
 * is answered.  Requests waiting for an instance are answered 503 now (or
 * at their notify, which the runtime sends soon).
 */
void
kb_gateway_worker_close(kb_gateway_worker *w)
{
    if (w == NULL || w->closing)
        return;
    log_flush(w);
    gw__waits_close(w);              /* before `closing`: may release */
    w->closing = true;
    if (w->live == 0)
        worker_finish(w);
}
