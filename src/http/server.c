/*
 * server.c - HTTP server on a libuv loop (see server.h): connections and
 * HTTP/1.1.
 *
 * Each TCP connection is a `conn` running a small state machine (IDLE →
 * HEAD → BODY → HANDLER → FLUSH → IDLE …); each request is a `srv_req`
 * living in its own kb_pool.  Framing comes from parser.c only.  A TLS
 * connection runs its bytes through tls.c first; an HTTP/2 connection
 * (h2c prior knowledge or ALPN "h2") is handed to h2.c (state CONN_H2).
 * Nothing here is global: one server per loop, several loops may share a
 * port.
 */
#include "http/server.h"
#include "http/parser.h"
#include "http/http_internal.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#include "http/tls.h"

#define DEFAULT_MAX_BODY     (32u << 20)
#define DEFAULT_HEADER_MS    10000u
#define DEFAULT_BODY_MS      60000u
#define DEFAULT_IDLE_MS      60000u
#define DEFAULT_MAX_CONNS    10000u
#define READ_FIRST           (2u * 1024)    /* a connection's first buffer */
#define READ_CHUNK           (16u * 1024)   /* grow the read buffer by */
#define READ_SLACK           (16u * 1024)   /* read buffer beyond the head */
#define LINGER_MS            2000u          /* drain input before close */
#define LISTEN_BACKLOG       511

typedef kb_http__conn conn;
typedef kb_http__req  srv_req;

typedef struct wreq {
    uv_write_t req;
    conn      *c;
    size_t     len;
    char       data[];
} wreq;

static void conn_process(conn *c);
static void srv_maybe_finish(kb_http_server *srv);
static void tls_pump(conn *c);

bool
kb_http__status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* ---- small helpers ------------------------------------------------------ */

/* Date header value, formatted at most once per second per server. */
const char *
kb_http__date(kb_http_server *srv)
{
    static const char days[7][4] = {
        "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun",
        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t now = time(NULL);
    struct tm tm;

    if (now != srv->date_sec) {
        gmtime_r(&now, &tm);
        snprintf(srv->date, sizeof(srv->date),
                 "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        srv->date_sec = now;
    }
    return srv->date;
}

/* A header a handler may send: token name, value without CR/LF/NUL. */
bool
kb_http__header_ok(const kb_http_header *h)
{
    return kb_http_token_len(h->name) > 0 &&
           kb_http_value_len(h->value) != SIZE_MAX;
}

/* Headers the server owns and drops from a handler's list. */
bool
kb_http__header_reserved(const char *name)
{
    switch (strlen(name)) {
    case 4:  return strcasecmp(name, "date") == 0;
    case 10: return strcasecmp(name, "connection") == 0;
    case 14: return strcasecmp(name, "content-length") == 0;
    case 17: return strcasecmp(name, "transfer-encoding") == 0;
    default: return false;
    }
}

/* ---- metrics ------------------------------------------------------------ */

static int
srv_metrics_init(kb_http_server *srv)
{
    kb_buf esc = KB_BUF_INIT(1024), lab = KB_BUF_INIT(1200);
    int rc = KB_ENOMEM;

    if (kb_metrics_label_escape(&esc, srv->name) != 0)
        goto out_free;
    for (int i = 0; i < 5; i++) {
        kb_buf_reset(&lab);
        if (kb_buf_appendf(&lab, "listener=\"%s\",code=\"%dxx\"",
                           kb_buf_cstr(&esc), i + 1) != 0)
            goto out_free;
        srv->requests[i] = kb_counter_get("kiban_http_requests_total",
                                          "HTTP requests answered, by status class",
                                          lab.data);
        if (srv->requests[i] == NULL)
            goto out_free;
    }
    kb_buf_reset(&lab);
    if (kb_buf_appendf(&lab, "listener=\"%s\"", kb_buf_cstr(&esc)) != 0)
        goto out_free;
    srv->duration = kb_histogram_get("kiban_http_request_duration_seconds",
                                     "Time from complete request head to response",
                                     lab.data, kb_metrics_latency_buckets,
                                     kb_metrics_latency_nbuckets);
    srv->connections = kb_gauge_get("kiban_http_connections",
                                    "Open HTTP connections", lab.data);
    if (srv->duration == NULL || srv->connections == NULL)
        goto out_free;
    for (int i = 0; i < 2; i++) {
        kb_buf_reset(&lab);
        if (kb_buf_appendf(&lab, "listener=\"%s\",reason=\"%s\"",
                           kb_buf_cstr(&esc),
                           i == 0 ? "max_connections" : "per_ip") != 0)
            goto out_free;
        *(i == 0 ? &srv->rejected_max : &srv->rejected_ip) = kb_counter_get(
            "kiban_http_connections_rejected_total",
            "Connections closed at accept, by reason", lab.data);
    }
    if (srv->rejected_max != NULL && srv->rejected_ip != NULL)
        rc = 0;
out_free:
    kb_buf_free(&esc);
    kb_buf_free(&lab);
    return rc;
}

void
kb_http__count(kb_http_server *srv, int status, uint64_t start_ns)
{
    int cls = status / 100;

    if (cls >= 1 && cls <= 5)
        kb_counter_add(srv->requests[cls - 1], 1);
    if (start_ns != 0)
        kb_histogram_observe(srv->duration,
                             (double)(kb_time_mono_ns() - start_ns) / 1e9);
}

/* ---- requests ----------------------------------------------------------- */

/* A new request on `c`: HTTP/1 (started by its first byte) or an HTTP/2
 * stream (h2.c; then no HTTP/1 field array).  NULL when out of memory. */
srv_req *
kb_http__req_new(conn *c, bool http1)
{
    kb_http_server *srv = c->srv;
    kb_pool *pool = kb_pool_create(0);
    kb_http_field *fields = NULL;
    srv_req *r;

    if (pool == NULL)
        return NULL;
    r = kb_pool_calloc(pool, sizeof(*r));
    if (http1)
        fields = kb_pool_alloc(pool, srv->limits.max_headers * sizeof(*fields));
    if (r == NULL || (http1 && fields == NULL)) {
        kb_pool_destroy(pool);
        return NULL;
    }
    r->pub.pool = pool;
    r->pub.server = srv;
    r->pub.conn_ = c;
    r->pub.body = "";
    r->pub.query = "";
    r->pub.http_major = http1 ? 1 : 2;
    r->pub.tls = c->tls != NULL;
    memcpy(r->pub.remote_addr, c->remote_addr, sizeof(r->pub.remote_addr));
    r->pub.remote_port = c->remote_port;
    r->conn = c;
    if (http1)
        kb_http_head_init(&r->head, fields, srv->limits.max_headers);
    kb_buf_init(&r->body, srv->opts.max_body);
    return r;
}

/* Free a request: the last thing done with it (r lives in its pool). */
void
kb_http__req_release(srv_req *r)
{
    kb_http_server *srv = r->pub.server;
    bool counted = r->with_handler;

    kb_buf_free(&r->body);
    kb_pool_destroy(r->pub.pool);
    if (counted) {
        srv->inflight--;
        srv_maybe_finish(srv);
    }
}

/* Turn the parsed head (buf[0..len)) into the public request fields. */
static int
req_fill(srv_req *r, const char *buf, size_t len)
{
    kb_http_req *q = &r->pub;
    kb_http_head *h = &r->head;
    char *copy = kb_pool_alloc(q->pool, len + 1);

    if (copy == NULL)
        return KB_ENOMEM;
    memcpy(copy, buf, len);
    copy[len] = '\0';
    copy[h->method.off + h->method.len] = '\0';
    copy[h->target.off + h->target.len] = '\0';
    q->method = copy + h->method.off;
    q->target = copy + h->target.off;
    if (h->form == KB_HTTP_ASTERISK_FORM)
        q->path = "*";
    else if (h->path.len == 0)
        q->path = "/";
    else
        q->path = kb_pool_strndup(q->pool, copy + h->path.off, h->path.len);
    q->query = h->query.len > 0 ? copy + h->query.off : "";
    q->version_minor = h->version_minor;
    q->nheaders = h->nfields;
    q->headers = kb_pool_alloc(q->pool, (h->nfields + 1) * sizeof(*q->headers));
    if (q->path == NULL || q->headers == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < h->nfields; i++) {
        const kb_http_field *f = &h->fields[i];
        copy[f->name.off + f->name.len] = '\0';
        copy[f->value.off + f->value.len] = '\0';
        q->headers[i].name = copy + f->name.off;
        q->headers[i].value = copy + f->value.off;
    }
    q->start_ns = kb_time_mono_ns();
    r->no_body = strcmp(q->method, "HEAD") == 0;
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

static void
on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = w->c;

    c->nwrites--;
    c->wbytes -= w->len;
    free(w);
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        kb_http__conn_close(c);
        return;
    }
    c->since_ms = uv_now(c->srv->loop);
    if (c->h2 != NULL) {
        kb_http__h2_flush(c);           /* room for more, maybe */
        kb_http__conn_arm(c);
        return;
    }
    conn_process(c);
}

/*
 * Send bufs in order on the socket: uv_try_write when nothing is queued,
 * the rest copied into an owned block for uv_write.  The caller's memory
 * is not kept.  Returns 0, or KB_ECANCELED when the connection is (now)
 * closing.
 */
static int
conn_send_raw(conn *c, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0, done = 0, off = 0;
    wreq *w;
    uv_buf_t b;

    if (c->state == CONN_CLOSED)
        return KB_ECANCELED;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    if (c->nwrites == 0) {
        int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (rc >= 0)
            done = (size_t)rc;
        else if (rc != UV_EAGAIN && rc != UV_ENOSYS) {
            kb_http__conn_close(c);
            return KB_ECANCELED;
        }
        if (done == total)
            return 0;
    }
    w = malloc(sizeof(*w) + (total - done));
    if (w == NULL) {
        kb_http__conn_close(c);
        return KB_ECANCELED;
    }
    for (unsigned i = 0; i < n; i++) {
        size_t skip = done > bufs[i].len ? bufs[i].len : done;
        done -= skip;
        memcpy(w->data + off, bufs[i].base + skip, bufs[i].len - skip);
        off += bufs[i].len - skip;
    }
    w->c = c;
    w->len = off;
    b = uv_buf_init(w->data, (unsigned)off);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(w);
        kb_http__conn_close(c);
        return KB_ECANCELED;
    }
    if (c->nwrites++ == 0)
        c->since_ms = uv_now(c->srv->loop);
    c->wbytes += off;
    if (!c->in_process)
        kb_http__conn_arm(c);                /* the write-progress timer */
    return 0;
}

/* tls.c hands us its records here (kb_tls_send_fn). */
static void
tls_send(void *arg, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    conn_send_raw(arg, &b, 1);
}

/* Send bufs to the client, through TLS when the connection has it. */
int
kb_http__conn_write(conn *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->tls == NULL)
        return conn_send_raw(c, bufs, n);
    if (c->state == CONN_CLOSED)
        return KB_ECANCELED;
    if (kb_http__tls_write(c->tls, bufs, n) != 0) {
        kb_http__conn_close(c);
        return KB_ECANCELED;
    }
    return c->state == CONN_CLOSED ? KB_ECANCELED : 0;
}

/*
 * The length a HEAD response announces: what the handler says in its own
 * Content-Length (a proxy relays the backend's), else 0.
 */
long long
kb_http__head_length(const kb_http_header *hdrs, size_t nh)
{
    for (size_t i = 0; i < nh; i++) {
        const char *v = hdrs[i].value;
        long long n = 0;

        if (strcasecmp(hdrs[i].name, "Content-Length") != 0 || *v == '\0')
            continue;
        for (; *v >= '0' && *v <= '9' && n < (1LL << 50); v++)
            n = n * 10 + (*v - '0');
        return *v == '\0' ? n : 0;
    }
    return 0;
}

/*
 * Build a response head in the request pool.  framing: the Content-Length
 * value, or -1 for chunked, or -2 for none (read until close / no body).
 */
/* Append n bytes of s at out + *at. */
static void
put(char *out, size_t *at, const char *s, size_t n)
{
    memcpy(out + *at, s, n);
    *at += n;
}

#define PUT_LIT(out, at, lit) put(out, at, lit, sizeof(lit) - 1)

char *
kb_http__build_head(srv_req *r, int status, const kb_http_header *hdrs,
                    size_t nh, long long framing, bool keepalive,
                    size_t *len)
{
    kb_http_server *srv = r->pub.server;
    const char *reason = kb_http_reason(status), *date = kb_http__date(srv);
    size_t cap = 128 + strlen(reason) + strlen(date), n = 0;
    char *out, num[24];

    for (size_t i = 0; i < nh; i++)
        cap += strlen(hdrs[i].name) + strlen(hdrs[i].value) + 4;
    out = kb_pool_alloc(r->pub.pool, cap);
    if (out == NULL)
        return NULL;
    if (status < 100 || status > 999)
        status = 500;
    PUT_LIT(out, &n, "HTTP/1.1 ");
    num[0] = (char)('0' + status / 100);
    num[1] = (char)('0' + status / 10 % 10);
    num[2] = (char)('0' + status % 10);
    num[3] = ' ';
    put(out, &n, num, 4);
    put(out, &n, reason, strlen(reason));
    PUT_LIT(out, &n, "\r\nDate: ");
    put(out, &n, date, strlen(date));
    PUT_LIT(out, &n, "\r\n");
    for (size_t i = 0; i < nh; i++) {
        if (!kb_http__header_ok(&hdrs[i])) {
            kb_log_warn("http: dropped invalid response header", "{s:s}",
                        "listener", srv->name);
            continue;
        }
        if (kb_http__header_reserved(hdrs[i].name))
            continue;
        put(out, &n, hdrs[i].name, strlen(hdrs[i].name));
        PUT_LIT(out, &n, ": ");
        put(out, &n, hdrs[i].value, strlen(hdrs[i].value));
        PUT_LIT(out, &n, "\r\n");
    }
    if (framing >= 0) {
        /* digits by hand: this runs once per response */
        char *e = num + sizeof(num), *d = e;
        unsigned long long v = (unsigned long long)framing;
        do
            *--d = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        PUT_LIT(out, &n, "Content-Length: ");
        put(out, &n, d, (size_t)(e - d));
        PUT_LIT(out, &n, "\r\n");
    } else if (framing == -1) {
        PUT_LIT(out, &n, "Transfer-Encoding: chunked\r\n");
    }
    if (!keepalive)
        PUT_LIT(out, &n, "Connection: close\r\n");
    else if (r->pub.version_minor == 0)
        PUT_LIT(out, &n, "Connection: keep-alive\r\n");
    PUT_LIT(out, &n, "\r\n");
    *len = n;
    return out;
}

/* May the connection carry another request after this response? */
bool
kb_http__req_keepalive(const srv_req *r)
{
    const conn *c = r->conn;

    return (r->head.flags & KB_HTTP_KEEP_ALIVE) && !c->srv->shutting_down &&
           !c->peer_eof && !c->close_after;
}

/*
 * The response to c->req has been handed over: count it, free the request
 * and let the connection go on (next request, or close) once flushed.
 */
void
kb_http__response_done(conn *c, srv_req *r, bool keepalive)
{
    kb_http__count(c->srv, r->status, r->pub.start_ns);
    r->done = true;
    r->conn = NULL;
    c->req = NULL;
    kb_http__req_release(r);
    if (!keepalive)
        c->close_after = true;
    if (c->state != CONN_CLOSED)
        c->state = CONN_FLUSH;
    conn_process(c);
}

/* The server's own error answer; the connection closes afterwards. */
static void
conn_error(conn *c, int status, const char *message)
{
    srv_req *r = c->req;
    json_t *j;
    char *body = NULL, *head;
    size_t hlen;
    static const kb_http_header ct = { "Content-Type", "application/json" };

    if (r == NULL) {
        kb_http__conn_close(c);
        return;
    }
    r->status = status;
    j = json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status, "status",
                  kb_http_status_name(status), "message", message);
    if (j != NULL)
        body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    head = kb_http__build_head(r, status, &ct, 1, body ? (long long)strlen(body) : 0,
                      false, &hlen);
    if (head != NULL) {
        uv_buf_t bufs[2] = { uv_buf_init(head, (unsigned)hlen),
                             uv_buf_init(body ? body : (char *)"",
                                         body && !r->no_body
                                             ? (unsigned)strlen(body) : 0) };
        kb_http__conn_write(c, bufs, 2);
    } else {
        kb_http__conn_close(c);
    }
    free(body);
    c->close_after = true;
    kb_http__response_done(c, r, false);
}

/* ---- reading requests --------------------------------------------------- */

static void
dispatch(conn *c)
{
    srv_req *r = c->req;
    kb_http_server *srv = c->srv;

    c->state = CONN_HANDLER;
    kb_http__dispatch(r);
    /* r may be gone now: the handler may have answered already. */
    (void)srv;
}

void
kb_http__dispatch(srv_req *r)
{
    kb_http_server *srv = r->pub.server;

    r->pub.body = r->body.data != NULL ? r->body.data : "";
    r->pub.body_len = r->body.len;
    r->with_handler = true;
    srv->inflight++;
    srv->opts.handler(&r->pub, srv->opts.data);
}

static bool
read_head(conn *c)
{
    srv_req *r = c->req;
    kb_http_server *srv = c->srv;
    const char *in = c->rbuf.data + c->rpos;
    int rc = kb_http_parse_request(&r->head, in, c->rbuf.len - c->rpos,
                                   &srv->limits);
    unsigned fl;

    if (rc == KB_EAGAIN)
        return false;
    if (rc < 0) {
        conn_error(c, r->head.error_status, r->head.error);
        return false;
    }
    if (req_fill(r, in, (size_t)rc) != 0) {
        conn_error(c, 500, "out of memory");
        return false;
    }
    c->rpos += (size_t)rc;
    fl = r->head.flags;
    if (fl & KB_HTTP_EXPECT_OTHER) {
        conn_error(c, 417, "unsupported expectation");
        return false;
    }
    if (fl & KB_HTTP_CHUNKED) {
        kb_http_chunked_init(&r->chunk, srv->opts.max_body);
    } else if ((fl & KB_HTTP_HAS_LENGTH) && r->head.content_length > 0) {
        if (r->head.content_length > srv->opts.max_body) {
            conn_error(c, 413, "request body too large");
            return false;
        }
        r->body_left = r->head.content_length;
    } else {
        dispatch(c);
        return true;
    }
    if ((fl & KB_HTTP_EXPECT_CONTINUE) && c->rpos == c->rbuf.len) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        kb_http__conn_write(c, &b, 1);
    }
    c->state = CONN_BODY;
    c->head_deadline = uv_now(srv->loop) + srv->opts.body_timeout_ms;
    return true;
}

static bool
read_body(conn *c)
{
    srv_req *r = c->req;
    const char *in = c->rbuf.data + c->rpos;
    size_t avail = c->rbuf.len - c->rpos;

    if (!(r->head.flags & KB_HTTP_CHUNKED)) {
        size_t take = avail < r->body_left ? avail : (size_t)r->body_left;
        if (take > 0 && kb_buf_append(&r->body, in, take) != 0) {
            conn_error(c, 500, "out of memory");
            return false;
        }
        c->rpos += take;
        r->body_left -= take;
        if (r->body_left > 0)
            return false;
    } else {
        size_t room = r->body.max - r->body.len, used, out;
        int rc;
        if (avail == 0)
            return false;
        if (kb_buf_reserve(&r->body, avail < room ? avail : room) != 0) {
            conn_error(c, 500, "out of memory");
            return false;
        }
        rc = kb_http_chunked_decode(&r->chunk, in, avail, &used,
                                    r->body.data + r->body.len, &out);
        r->body.len += out;
        r->body.data[r->body.len] = '\0';
        c->rpos += used;
        if (rc == KB_EAGAIN)
            return false;
        if (rc != 0) {
            conn_error(c, r->chunk.error_status, r->chunk.error);
            return false;
        }
    }
    dispatch(c);
    return true;
}

/* Runs once the FIN is sent, or with UV_ECANCELED when the connection
 * closes first. */
static void
on_shutdown(uv_shutdown_t *sh, int status)
{
    (void)status;
    free(sh);
}

/* After the last write of a response: next request, linger, or close. */
static bool
conn_flushed(conn *c)
{
    kb_http_server *srv = c->srv;

    if (c->nwrites > 0)
        return false;
    if (c->close_after || c->peer_eof || srv->shutting_down) {
        if (c->tls != NULL && !c->peer_eof)
            kb_http__tls_shutdown(c->tls);     /* close_notify first */
        /* allocated only now: idle connections stay small */
        uv_shutdown_t *sh = c->peer_eof ? NULL : malloc(sizeof(*sh));
        if (sh == NULL ||
            uv_shutdown(sh, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
            free(sh);
            kb_http__conn_close(c);
            return false;
        }
        c->state = CONN_LINGER;
        c->since_ms = uv_now(srv->loop);
        kb_buf_free(&c->rbuf);
        c->rpos = 0;
        return false;
    }
    c->state = CONN_IDLE;
    c->served = true;
    c->since_ms = uv_now(srv->loop);
    return true;
}

/*
 * The first bytes of a plain connection on an HTTP/2 listener: the h2c
 * preface switches it to HTTP/2 (with those bytes), anything else is
 * HTTP/1.1.  A prefix of the preface waits for more.  True to go on.
 */
static bool
conn_sniff_h2c(conn *c)
{
    const char *in = c->rbuf.data + c->rpos;
    size_t n = c->rbuf.len - c->rpos;
    size_t cmp = n < KB_HTTP__H2_PREFACE_LEN ? n : KB_HTTP__H2_PREFACE_LEN;

    if (memcmp(in, KB_HTTP__H2_PREFACE, cmp) != 0) {
        c->proto_known = true;          /* HTTP/1.1 */
        return true;
    }
    if (n < KB_HTTP__H2_PREFACE_LEN)
        return false;
    c->proto_known = true;
    if (kb_http__h2_start(c) != 0 ||
        kb_http__h2_recv(c, in, n) != 0) {
        kb_http__conn_close(c);
        return false;
    }
    kb_buf_free(&c->rbuf);
    c->rpos = 0;
    kb_http__h2_flush(c);
    return false;
}

/* One step of the connection state machine; true to keep going. */
static bool
conn_step(conn *c)
{
    kb_http_server *srv = c->srv;

    switch (c->state) {
    case CONN_IDLE:
        if (c->rpos == c->rbuf.len) {
            kb_buf_free(&c->rbuf);       /* idle connections hold no buffer */
            c->rpos = 0;
            return false;
        }
        if (srv->shutting_down) {
            kb_http__conn_close(c);
            return false;
        }
        if (!c->proto_known)
            return conn_sniff_h2c(c);
        c->req = kb_http__req_new(c, true);
        if (c->req == NULL) {
            kb_http__conn_close(c);
            return false;
        }
        c->head_deadline = (c->served ? uv_now(srv->loop) : c->since_ms) +
                           srv->opts.header_timeout_ms;
        c->state = CONN_HEAD;
        return true;
    case CONN_HEAD:
        return read_head(c);
    case CONN_BODY:
        return read_body(c);
    case CONN_FLUSH:
        return conn_flushed(c);
    default:
        return false;
    }
}

static void
conn_process(conn *c)
{
    if (c->in_process)
        return;             /* the loop below sees the new state */
    c->in_process = true;
    for (;;) {
        kb_http__conn_state before = c->state;
        bool more = conn_step(c);
        /* a step that answered (an error, a synchronous handler) moved
         * the state on: keep going until nothing changes */
        if (c->state == CONN_CLOSED || (!more && c->state == before))
            break;
    }
    c->in_process = false;
    kb_http__conn_arm(c);
}

/* ---- reading, timers ---------------------------------------------------- */

/* Input that arrives now is discarded (the response is out, we close). */
static bool
conn_discarding(const conn *c)
{
    return c->state == CONN_LINGER ||
           (c->state == CONN_FLUSH && c->close_after);
}

/* Room at the end of the HTTP/1 read buffer; false when it is full. */
static bool
rbuf_room(conn *c, char **at, size_t *len)
{
    kb_buf *b = &c->rbuf;
    size_t room, want;

    if (conn_discarding(c)) {
        kb_buf_reset(b);                    /* input is discarded */
        c->rpos = 0;
    }
    if (c->rpos > 0 && (c->rpos == b->len || b->cap - b->len < 1024)) {
        kb_buf_consume(b, c->rpos);
        c->rpos = 0;
    }
    room = b->max - b->len;
    /* a small first buffer (most heads fit; an idle keep-alive connection
     * then costs little), used up to its last KiB, then grown */
    want = b->cap == 0 ? READ_FIRST : READ_CHUNK;
    if (want > room)
        want = room;
    if (want == 0 ||
        (b->cap - b->len <= 1024 && kb_buf_reserve(b, want) != 0))
        return false;
    want = b->cap - b->len - 1;
    *at = b->data + b->len;
    *len = want > room ? room : want;
    return true;
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    srv_req *r = c->req;
    char *at;
    size_t want;

    c->read_into_body = false;
    if (c->tls != NULL || c->h2 != NULL) {
        /* consumed (or copied) within on_read: one buffer per server */
        *buf = uv_buf_init(c->srv->iobuf, KB_HTTP__IOBUF_SIZE);
        return;
    }
    /* A Content-Length body with nothing buffered: read straight into it. */
    if (c->state == CONN_BODY && r != NULL && r->body_left > 0 &&
        c->rpos == c->rbuf.len) {
        want = r->body_left < 65536 ? (size_t)r->body_left : 65536;
        if (kb_buf_reserve(&r->body, want) == 0) {
            c->read_into_body = true;
            *buf = uv_buf_init(r->body.data + r->body.len, (unsigned)want);
            return;
        }
    }
    if (!rbuf_room(c, &at, &want)) {
        *buf = uv_buf_init(NULL, 0);        /* UV_ENOBUFS: pause reading */
        return;
    }
    *buf = uv_buf_init(at, (unsigned)want);
}

/* Stop reading until kb_http__conn_arm sees room again. */
static void
conn_pause(conn *c)
{
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    c->read_paused = true;
}

/* EOF or a read error (nread < 0), or TLS close_notify. */
static void
conn_input_end(conn *c, ssize_t nread)
{
    /* The client is gone (or has half-closed, which an HTTP/1.1 client
     * does not do before it has its response). */
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    c->peer_eof = true;
    if (c->h2 == NULL && c->state == CONN_FLUSH && nread == UV_EOF &&
        c->nwrites > 0)
        return;                 /* finish writing, then close */
    kb_http__conn_close(c);
}

/* The handshake is done: pick the protocol ALPN agreed on. */
static int
tls_ready(conn *c)
{
    c->proto_known = true;
    if (kb_http__tls_is_h2(c->tls))
        return kb_http__h2_start(c);
    return 0;
}

/*
 * Decrypt what the TLS session has and hand it on (HTTP/1 read buffer or
 * nghttp2), until it needs more input, the connection closes, or the
 * application cannot take more (then reading pauses with the rest kept).
 */
static void
tls_pump(conn *c)
{
    kb_http_server *srv = c->srv;
    bool paused = false;
    int rc;

    if (c->in_pump || c->state == CONN_CLOSED)
        return;
    c->in_pump = true;
    if (!c->proto_known) {
        rc = kb_http__tls_handshake(c->tls);
        if (rc == KB_EAGAIN)
            goto out;
        if (rc != 0 || tls_ready(c) != 0) {
            kb_http__conn_close(c);
            goto out;
        }
    }
    while (c->state != CONN_CLOSED) {
        char *at = srv->plainbuf;
        size_t cap = KB_HTTP__PLAINBUF_SIZE, n;

        if (c->h2 != NULL ? kb_http__h2_backlogged(c)
                          : !conn_discarding(c) && !rbuf_room(c, &at, &cap)) {
            paused = true;
            break;
        }
        rc = kb_http__tls_read(c->tls, at, cap, &n);
        if (rc != 0) {
            conn_input_end(c, rc == KB_ECANCELED ? UV_EOF : UV_EPROTO);
            break;
        }
        if (n == 0)
            break;
        if (c->h2 != NULL) {
            if (kb_http__h2_recv(c, at, n) != 0)
                kb_http__conn_close(c);
            continue;
        }
        if (conn_discarding(c))
            continue;
        c->rbuf.len += n;
        c->rbuf.data[c->rbuf.len] = '\0';
        conn_process(c);
    }
    if (paused && c->state != CONN_CLOSED) {
        if (kb_http__tls_keep_input(c->tls) != 0)
            kb_http__conn_close(c);
        else
            conn_pause(c);
    }
    if (c->h2 != NULL && c->state != CONN_CLOSED)
        kb_http__h2_flush(c);
out:
    c->in_pump = false;
    kb_http__conn_arm(c);
}

/* on_read for TLS and HTTP/2 connections (buf is the server's iobuf). */
static void
on_read_layered(conn *c, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0 && nread != UV_ENOBUFS) {
        conn_input_end(c, nread);
        return;
    }
    if (nread <= 0)
        return;
    if (c->tls != NULL) {
        kb_http__tls_input(c->tls, buf->base, (size_t)nread);
        tls_pump(c);
        return;
    }
    if (kb_http__h2_recv(c, buf->base, (size_t)nread) != 0) {
        kb_http__conn_close(c);
        return;
    }
    kb_http__h2_flush(c);
    kb_http__conn_arm(c);
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    bool into_body = c->read_into_body;

    c->read_into_body = false;
    if (c->state == CONN_CLOSED)
        return;
    if (c->tls != NULL || c->h2 != NULL) {
        on_read_layered(c, nread, buf);
        return;
    }
    if (nread > 0) {
        if (into_body) {
            srv_req *r = c->req;
            r->body.len += (size_t)nread;
            r->body.data[r->body.len] = '\0';
            r->body_left -= (uint64_t)nread;
        } else {
            c->rbuf.len += (size_t)nread;
            c->rbuf.data[c->rbuf.len] = '\0';
        }
        if (conn_discarding(c)) {
            kb_buf_reset(&c->rbuf);
            c->rpos = 0;
            return;
        }
        conn_process(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        conn_pause(c);
        return;
    }
    conn_input_end(c, nread);
}

static void
on_timer(uv_timer_t *t)
{
    conn *c = t->data;

    c->deadline_ms = 0;
    switch (c->state) {
    case CONN_HEAD:
        conn_error(c, 408, "request head not received in time");
        break;
    case CONN_BODY:
        conn_error(c, 408, "request body not received in time");
        break;
    case CONN_H2:
        kb_http__h2_timer(c);
        break;
    default:        /* idle (or a slow handshake), stalled writes, linger */
        kb_http__conn_close(c);
        break;
    }
}

/* The deadline the current state calls for (uv_now ms), 0 for none. */
static uint64_t
conn_deadline(const conn *c)
{
    const kb_http_server_opts *o = &c->srv->opts;

    switch (c->state) {
    case CONN_IDLE:
        return c->since_ms + (c->served ? o->idle_timeout_ms
                                        : o->header_timeout_ms);
    case CONN_HEAD:
    case CONN_BODY:
        return c->head_deadline;
    case CONN_HANDLER:
    case CONN_FLUSH:
        return c->nwrites > 0 ? c->since_ms + o->idle_timeout_ms : 0;
    case CONN_LINGER:
        return c->since_ms + LINGER_MS;
    case CONN_H2:
        return kb_http__h2_deadline(c);
    default:
        return 0;
    }
}

/* Match the timer and the reading to the state, after each processing. */
void
kb_http__conn_arm(conn *c)
{
    uint64_t d, now;

    if (c->state == CONN_CLOSED)
        return;
    d = conn_deadline(c);
    if (d != c->deadline_ms) {
        c->deadline_ms = d;
        if (d == 0) {
            uv_timer_stop(&c->timer);
        } else {
            now = uv_now(c->srv->loop);
            uv_timer_start(&c->timer, on_timer, d > now ? d - now : 0, 0);
        }
    }
    if (!c->reading && !c->peer_eof) {
        bool was_paused = c->read_paused;
        if (c->read_paused && c->rpos == 0 && c->rbuf.len >= c->rbuf.max &&
            c->state != CONN_LINGER)
            return;             /* still full */
        if (c->h2 != NULL && kb_http__h2_backlogged(c))
            return;             /* the client does not read its responses */
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->reading = true;
            c->read_paused = false;
        }
        /* TLS keeps what it had decrypted or received when it paused */
        if (was_paused && c->tls != NULL && !c->in_pump &&
            kb_http__tls_has_input(c->tls))
            tls_pump(c);
    }
}

/* ---- connections -------------------------------------------------------- */

static void
conn_free(conn *c)
{
    kb_http_server *srv = c->srv;
    srv_req *r = c->req, *aborted = NULL;
    kb_http_abort_cb cb = NULL;
    void *cb_data = NULL;

    c->req = NULL;
    if (c->h2 != NULL)
        aborted = kb_http__h2_free(c);  /* its requests, detached */
    kb_http__tls_conn_free(c->tls);
    if (c->ip != NULL)
        kb_http__ip_release(srv->iplimit, c->ip);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->nconns--;
    kb_gauge_add(srv->connections, -1);
    kb_buf_free(&c->rbuf);
    free(c);

    if (r != NULL) {
        r->conn = NULL;
        r->pub.conn_ = NULL;
        if (!r->with_handler) {
            kb_http__req_release(r);             /* still being read: just drop it */
            r = NULL;
        } else {
            cb = r->abort_cb;
            cb_data = r->abort_data;
            r->abort_cb = NULL;
        }
    }
    srv_maybe_finish(srv);              /* srv lives while r is in flight */
    if (r != NULL && cb != NULL)
        cb(&r->pub, cb_data);           /* last: it may answer and free r */
    kb_http__fire_aborts(aborted);
}

/* Run the abort hooks of a chain of detached requests (abort_next); each
 * hook may answer and free its request.  Whoever calls this must not touch
 * the server afterwards: the last answer may free it. */
void
kb_http__fire_aborts(srv_req *list)
{
    while (list != NULL) {
        srv_req *r = list;
        kb_http_abort_cb cb = r->abort_cb;

        list = r->abort_next;
        r->abort_next = NULL;
        r->abort_cb = NULL;
        if (cb != NULL)
            cb(&r->pub, r->abort_data);
    }
}

static void
on_conn_close(uv_handle_t *h)
{
    conn *c = h->data;

    if (--c->open_handles == 0)
        conn_free(c);
}

void
kb_http__conn_close(conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_close);
}

static void
on_reject_close(uv_handle_t *h)
{
    free(h);
}

/* Accept a connection only to close it at once (over a limit). */
static void
reject_connection(kb_http_server *srv, uv_stream_t *l, kb_counter *why)
{
    uv_tcp_t *t = malloc(sizeof(*t));

    if (t == NULL || uv_tcp_init(srv->loop, t) != 0) {
        free(t);
        return;
    }
    uv_accept(l, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_reject_close);
    if (why != NULL)
        kb_counter_add(why, 1);
}

static void
on_connection(uv_stream_t *l, int status)
{
    kb_http_server *srv = l->data;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    conn *c;

    if (status < 0) {
        kb_log_warn("http: accept failed", "{s:s, s:s}", "listener",
                    srv->name, "error", uv_strerror(status));
        return;
    }
    if (srv->shutting_down || srv->nconns >= srv->opts.max_connections) {
        reject_connection(srv, l, srv->shutting_down ? NULL
                                                     : srv->rejected_max);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = srv;
    kb_buf_init(&c->rbuf, srv->limits.max_head + srv->limits.max_line +
                          READ_SLACK);
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->state = CONN_IDLE;
    c->proto_known = !srv->opts.h2 && srv->opts.tls == NULL;
    c->since_ms = uv_now(srv->loop);
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    kb_gauge_add(srv->connections, 1);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        kb_http__conn_close(c);
        return;
    }
    memset(&ss, 0, sizeof(ss));
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, c->remote_addr, sizeof(c->remote_addr));
            c->remote_port = ntohs(a->sin6_port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, c->remote_addr, sizeof(c->remote_addr));
            c->remote_port = ntohs(a->sin_port);
        }
    }
    if (kb_http__ip_acquire(srv->iplimit, &ss, &c->ip) != 0) {
        kb_counter_add(srv->rejected_ip, 1);
        kb_http__conn_close(c);
        return;
    }
    if (srv->opts.tls != NULL &&
        kb_http__tls_conn_new(srv->opts.tls, srv->opts.h2, tls_send, c,
                              &c->tls) != 0) {
        kb_http__conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    kb_http__conn_arm(c);
}

/* ---- server ------------------------------------------------------------- */

static void
srv_free(kb_http_server *srv)
{
    if (srv->own_iplimit)
        kb_http_iplimit_free(srv->iplimit);
    free(srv->iobuf);
    free(srv->plainbuf);
    free(srv->name);
    free(srv);
}

static void on_srv_handle_close(uv_handle_t *h);

/*
 * During shutdown: once the listener and every connection are closed, close
 * the grace timer; its close callback runs done().  The server is freed
 * after that as soon as no orphaned request (answered later) refers to it.
 */
static void
srv_maybe_finish(kb_http_server *srv)
{
    if (!srv->shutting_down)
        return;
    if (!srv->grace_closing && srv->nconns == 0 && srv->open_handles == 1) {
        srv->grace_closing = true;
        uv_timer_stop(&srv->grace);
        uv_close((uv_handle_t *)&srv->grace, on_srv_handle_close);
        return;
    }
    if (srv->done_called && srv->inflight == 0)
        srv_free(srv);
}

static void
on_srv_handle_close(uv_handle_t *h)
{
    kb_http_server *srv = h->data;

    srv->open_handles--;
    if (h == (uv_handle_t *)&srv->grace) {
        srv->done_called = true;
        if (srv->done != NULL)
            srv->done(srv->done_data);
    }
    srv_maybe_finish(srv);
}

static void
on_grace(uv_timer_t *t)
{
    kb_http_server *srv = t->data;

    for (conn *c = srv->conns; c != NULL; c = c->next)
        kb_http__conn_close(c);
}

/* "127.0.0.1:8080", "[::1]:8080", ":8080" (all IPv4). */
static int
parse_addr(const char *addr, struct sockaddr_storage *ss)
{
    char host[64];
    const char *colon, *hs;
    size_t hlen;
    char *end;
    long port;

    if (addr == NULL)
        return KB_EINVAL;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (rb == NULL || rb[1] != ':')
            return KB_EINVAL;
        hs = addr + 1;
        hlen = (size_t)(rb - hs);
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return KB_EINVAL;
        hs = addr;
        hlen = (size_t)(colon - addr);
    }
    if (hlen >= sizeof(host))
        return KB_EINVAL;
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 ||
        port > 65535)
        return KB_EINVAL;
    if (addr[0] == '[')
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0
                   ? 0 : KB_EINVAL;
    return uv_ip4_addr(hlen ? host : "0.0.0.0", (int)port,
                       (struct sockaddr_in *)ss) == 0 ? 0 : KB_EINVAL;
}

/*
 * libuv writes with write(2): a peer that reset the connection would kill
 * the process with SIGPIPE.  Ignore it unless the program has its own
 * handler.  Shared with client.c.
 */
void
kb_http__ignore_sigpipe(void)
{
    struct sigaction sa;

    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

static void
on_start_fail_close(uv_handle_t *h)
{
    srv_free(h->data);
}

int
kb_http_server_start(uv_loop_t *loop, const char *addr,
                     const kb_http_server_opts *opts, kb_http_server **out)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss), rc;
    kb_http_server *srv;

    if (opts == NULL || opts->handler == NULL)
        return KB_EINVAL;
    kb_http__ignore_sigpipe();
    memset(&ss, 0, sizeof(ss));
    rc = parse_addr(addr, &ss);
    if (rc != 0)
        return rc;
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return KB_ENOMEM;
    srv->loop = loop;
    srv->opts = *opts;
    srv->name = strdup(opts->name != NULL ? opts->name : "http");
    if (srv->name == NULL) {
        free(srv);
        return KB_ENOMEM;
    }
    srv->opts.name = srv->name;
#define DEFAULT(f, v) if (srv->opts.f == 0) srv->opts.f = (v)
    DEFAULT(max_head, KB_HTTP_DEFAULT_MAX_HEAD);
    DEFAULT(max_headers, KB_HTTP_DEFAULT_MAX_HEADERS);
    DEFAULT(max_body, DEFAULT_MAX_BODY);
    DEFAULT(header_timeout_ms, DEFAULT_HEADER_MS);
    DEFAULT(body_timeout_ms, DEFAULT_BODY_MS);
    DEFAULT(idle_timeout_ms, DEFAULT_IDLE_MS);
    DEFAULT(max_connections, DEFAULT_MAX_CONNS);
#undef DEFAULT
    if (srv->opts.max_head > KB_HTTP_MAX_HEAD_CEILING)
        srv->opts.max_head = KB_HTTP_MAX_HEAD_CEILING;
    srv->limits.max_head = srv->opts.max_head;
    srv->limits.max_headers = srv->opts.max_headers;
    srv->limits.max_line = KB_HTTP_DEFAULT_MAX_LINE < srv->opts.max_head
                               ? KB_HTTP_DEFAULT_MAX_LINE : srv->opts.max_head;
    if (srv_metrics_init(srv) != 0) {
        srv_free(srv);
        return KB_ENOMEM;
    }
    /* TLS and HTTP/2 read into one buffer per server (one loop), consumed
     * or copied within each read callback; the per-IP table when asked. */
    if ((srv->opts.tls != NULL || srv->opts.h2) &&
        (srv->iobuf = malloc(KB_HTTP__IOBUF_SIZE)) == NULL)
        rc = KB_ENOMEM;
    if (srv->opts.tls != NULL &&
        (srv->plainbuf = malloc(KB_HTTP__PLAINBUF_SIZE)) == NULL)
        rc = KB_ENOMEM;
    srv->iplimit = srv->opts.iplimit;
    if (srv->iplimit == NULL && srv->opts.max_conns_per_ip > 0 && rc == 0) {
        rc = kb_http_iplimit_create(srv->opts.max_conns_per_ip,
                                    &srv->iplimit);
        srv->own_iplimit = rc == 0;
    }
    if (rc != 0) {
        srv_free(srv);
        return rc;
    }
    rc = uv_tcp_init_ex(loop, &srv->listener, ss.ss_family);
    if (rc != 0) {
        srv_free(srv);
        return rc;
    }
    srv->listener.data = srv;
    if (srv->opts.reuseport) {
        uv_os_fd_t fd;
        int one = 1;
        rc = uv_fileno((uv_handle_t *)&srv->listener, &fd);
        if (rc == 0 &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
            rc = -errno;
        if (rc != 0)
            goto out_close;
    }
    rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, LISTEN_BACKLOG,
                       on_connection);
    if (rc == 0)
        rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &sslen);
    if (rc != 0)
        goto out_close;
    srv->port = ntohs(ss.ss_family == AF_INET6
                          ? ((struct sockaddr_in6 *)&ss)->sin6_port
                          : ((struct sockaddr_in *)&ss)->sin_port);
    uv_timer_init(loop, &srv->grace);
    srv->grace.data = srv;
    srv->open_handles = 2;
    *out = srv;
    return 0;

out_close:
    uv_close((uv_handle_t *)&srv->listener, on_start_fail_close);
    return rc;
}

int
kb_http_server_port(const kb_http_server *srv)
{
    return srv->port;
}

size_t
kb_http_server_inflight(const kb_http_server *srv)
{
    return srv->inflight;
}

void
kb_http_server_shutdown(kb_http_server *srv, uint64_t grace_ms,
                        void (*done)(void *data), void *data)
{
    conn *c;

    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    srv->done = done;
    srv->done_data = data;
    uv_close((uv_handle_t *)&srv->listener, on_srv_handle_close);
    /* The grace timer closes with on_srv_handle_close too. */
    for (c = srv->conns; c != NULL; c = c->next) {
        if (c->state == CONN_IDLE)
            kb_http__conn_close(c);
        else if (c->state == CONN_LINGER)
            kb_http__conn_close(c);
        else if (c->state == CONN_H2)
            kb_http__h2_goaway(c);      /* open streams finish */
    }
    uv_timer_start(&srv->grace, on_grace, grace_ms, 0);
}
