/*
 * server.c - HTTP/1.1 server on a libuv loop (see server.h).
 *
 * Each TCP connection is a `conn` running a small state machine (IDLE →
 * HEAD → BODY → HANDLER → FLUSH → IDLE …); each request is a `srv_req`
 * living in its own kb_pool.  Framing comes from parser.c only.  Nothing
 * here is global: one server per loop, several loops may share a port.
 */
#include "http/server.h"
#include "http/parser.h"
#include "http/http_internal.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#define DEFAULT_MAX_BODY     (32u << 20)
#define DEFAULT_HEADER_MS    10000u
#define DEFAULT_BODY_MS      60000u
#define DEFAULT_IDLE_MS      60000u
#define DEFAULT_MAX_CONNS    10000u
#define READ_CHUNK           (16u * 1024)   /* grow the read buffer by */
#define READ_SLACK           (16u * 1024)   /* read buffer beyond the head */
#define LINGER_MS            2000u          /* drain input before close */
#define STREAM_MAX_PENDING   (16u << 20)    /* unsent streamed bytes */
#define LISTEN_BACKLOG       511

typedef enum conn_state {
    CS_IDLE,      /* between requests: nothing of the next one parsed yet */
    CS_HEAD,      /* reading a request head */
    CS_BODY,      /* reading a request body */
    CS_HANDLER,   /* the handler has the request (maybe streaming) */
    CS_FLUSH,     /* response handed over; waiting for the writes */
    CS_LINGER,    /* our side shut down; draining input, then close */
    CS_CLOSED,    /* uv_close() called; freed in the close callbacks */
} conn_state;

typedef struct srv_req srv_req;
typedef struct conn conn;

struct conn {
    uv_tcp_t        tcp;
    uv_timer_t      timer;
    uv_shutdown_t   shutdown;
    kb_http_server *srv;
    conn           *prev, *next;
    kb_buf          rbuf;          /* input; freed while idle */
    size_t          rpos;          /* start of unprocessed input in rbuf */
    srv_req        *req;           /* request being read or served */
    conn_state      state;
    unsigned        nwrites;       /* uv_write requests in flight */
    size_t          wbytes;        /* bytes in those requests */
    uint64_t        since_ms;      /* uv_now when the current wait began */
    uint64_t        deadline_ms;   /* of the armed timer, 0 = none */
    uint64_t        head_deadline; /* CS_HEAD / CS_BODY deadline */
    unsigned        open_handles;
    bool            reading;
    bool            read_paused;   /* buffer was full (UV_ENOBUFS) */
    bool            read_into_body;/* on_alloc gave out body space */
    bool            peer_eof;
    bool            close_after;   /* close once the writes are done */
    bool            in_process;
    bool            served;        /* a request was answered already */
    char            remote_addr[64];
    int             remote_port;
};

struct srv_req {
    kb_http_req      pub;          /* first: srv_req * == kb_http_req * */
    conn            *conn;         /* NULL once the connection is gone */
    kb_http_head     head;
    kb_http_chunked  chunk;
    kb_buf           body;
    uint64_t         body_left;    /* Content-Length bytes still to read */
    kb_http_abort_cb abort_cb;
    void            *abort_data;
    int              status;
    bool             with_handler; /* counted in srv->inflight */
    bool             streaming;
    bool             chunked_out;
    bool             no_body;      /* HEAD, or a status without body */
    bool             done;
};

struct kb_http_server {
    uv_loop_t          *loop;
    uv_tcp_t            listener;
    uv_timer_t          grace;
    kb_http_server_opts opts;
    kb_http_limits      limits;
    char               *name;
    conn               *conns;
    size_t              nconns;
    size_t              inflight;
    int                 port;
    unsigned            open_handles;
    bool                shutting_down;
    bool                grace_closing;
    bool                done_called;
    void              (*done)(void *);
    void               *done_data;
    time_t              date_sec;
    char                date[40];
    kb_counter         *requests[5];   /* 1xx … 5xx */
    kb_histogram       *duration;
    kb_gauge           *connections;
};

typedef struct wreq {
    uv_write_t req;
    conn      *c;
    size_t     len;
    char       data[];
} wreq;

static void conn_process(conn *c);
static void conn_close(conn *c);
static void conn_arm(conn *c);
static void srv_maybe_finish(kb_http_server *srv);

static bool
status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* ---- small helpers ------------------------------------------------------ */

/* Date header value, formatted at most once per second per server. */
static const char *
srv_date(kb_http_server *srv)
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
static bool
header_ok(const kb_http_header *h)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~";
    const unsigned char *p;

    if (h->name == NULL || h->value == NULL || h->name[0] == '\0')
        return false;
    for (p = (const unsigned char *)h->name; *p; p++)
        if (!((*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' &&
              (*p | 0x20) <= 'z') || strchr(tchars, *p) != NULL))
            return false;
    for (p = (const unsigned char *)h->value; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* Headers the server owns and drops from a handler's list. */
static bool
header_reserved(const char *name)
{
    return strcasecmp(name, "content-length") == 0 ||
           strcasecmp(name, "transfer-encoding") == 0 ||
           strcasecmp(name, "connection") == 0 ||
           strcasecmp(name, "date") == 0;
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
    if (srv->duration != NULL && srv->connections != NULL)
        rc = 0;
out_free:
    kb_buf_free(&esc);
    kb_buf_free(&lab);
    return rc;
}

static void
srv_count(kb_http_server *srv, int status, uint64_t start_ns)
{
    int cls = status / 100;

    if (cls >= 1 && cls <= 5)
        kb_counter_add(srv->requests[cls - 1], 1);
    if (start_ns != 0)
        kb_histogram_observe(srv->duration,
                             (double)(kb_time_mono_ns() - start_ns) / 1e9);
}

/* ---- requests ----------------------------------------------------------- */

/* A new request on `c`, started by its first byte.  NULL when out of memory. */
static srv_req *
req_new(conn *c)
{
    kb_http_server *srv = c->srv;
    kb_pool *pool = kb_pool_create(0);
    kb_http_field *fields;
    srv_req *r;

    if (pool == NULL)
        return NULL;
    r = kb_pool_calloc(pool, sizeof(*r));
    fields = kb_pool_alloc(pool, srv->limits.max_headers * sizeof(*fields));
    if (r == NULL || fields == NULL) {
        kb_pool_destroy(pool);
        return NULL;
    }
    r->pub.pool = pool;
    r->pub.server = srv;
    r->pub.conn_ = c;
    r->pub.body = "";
    r->pub.query = "";
    r->conn = c;
    kb_http_head_init(&r->head, fields, srv->limits.max_headers);
    kb_buf_init(&r->body, srv->opts.max_body);
    return r;
}

/* Free a request: the last thing done with it (r lives in its pool). */
static void
req_release(srv_req *r)
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
    conn *c = r->conn;

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
    snprintf(q->remote_addr, sizeof(q->remote_addr), "%s", c->remote_addr);
    q->remote_port = c->remote_port;
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
    if (c->state == CS_CLOSED)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->since_ms = uv_now(c->srv->loop);
    conn_process(c);
}

/*
 * Send bufs in order: uv_try_write when nothing is queued, the rest copied
 * into an owned block for uv_write.  The caller's memory is not kept.
 * Returns 0, or KB_ECANCELED when the connection is (now) closing.
 */
static int
conn_write(conn *c, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0, done = 0, off = 0;
    wreq *w;
    uv_buf_t b;

    if (c->state == CS_CLOSED)
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
            conn_close(c);
            return KB_ECANCELED;
        }
        if (done == total)
            return 0;
    }
    w = malloc(sizeof(*w) + (total - done));
    if (w == NULL) {
        conn_close(c);
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
        conn_close(c);
        return KB_ECANCELED;
    }
    if (c->nwrites++ == 0)
        c->since_ms = uv_now(c->srv->loop);
    c->wbytes += off;
    if (!c->in_process)
        conn_arm(c);                /* the write-progress timer */
    return 0;
}

/*
 * The length a HEAD response announces: what the handler says in its own
 * Content-Length (a proxy relays the backend's), else 0.
 */
static long long
head_content_length(const kb_http_header *hdrs, size_t nh)
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
static char *
build_head(srv_req *r, int status, const kb_http_header *hdrs, size_t nh,
           long long framing, bool keepalive, size_t *len)
{
    kb_http_server *srv = r->pub.server;
    size_t cap = 256, n = 0;
    char *out;
    int w;

    for (size_t i = 0; i < nh; i++)
        if (header_ok(&hdrs[i]))
            cap += strlen(hdrs[i].name) + strlen(hdrs[i].value) + 4;
    out = kb_pool_alloc(r->pub.pool, cap);
    if (out == NULL)
        return NULL;
    w = snprintf(out, cap, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                 kb_http_reason(status), srv_date(srv));
    n = (size_t)w;
    for (size_t i = 0; i < nh; i++) {
        size_t a, b;
        if (!header_ok(&hdrs[i])) {
            kb_log_warn("http: dropped invalid response header", "{s:s}",
                        "listener", srv->name);
            continue;
        }
        if (header_reserved(hdrs[i].name))
            continue;
        a = strlen(hdrs[i].name);
        b = strlen(hdrs[i].value);
        memcpy(out + n, hdrs[i].name, a);
        n += a;
        out[n++] = ':';
        out[n++] = ' ';
        memcpy(out + n, hdrs[i].value, b);
        n += b;
        out[n++] = '\r';
        out[n++] = '\n';
    }
    if (framing >= 0)
        n += (size_t)snprintf(out + n, cap - n, "Content-Length: %lld\r\n",
                              framing);
    else if (framing == -1)
        n += (size_t)snprintf(out + n, cap - n, "Transfer-Encoding: chunked\r\n");
    if (!keepalive)
        n += (size_t)snprintf(out + n, cap - n, "Connection: close\r\n");
    else if (r->pub.version_minor == 0)
        n += (size_t)snprintf(out + n, cap - n, "Connection: keep-alive\r\n");
    out[n++] = '\r';
    out[n++] = '\n';
    *len = n;
    return out;
}

/* May the connection carry another request after this response? */
static bool
req_keepalive(const srv_req *r)
{
    const conn *c = r->conn;

    return (r->head.flags & KB_HTTP_KEEP_ALIVE) && !c->srv->shutting_down &&
           !c->peer_eof && !c->close_after;
}

/*
 * The response to c->req has been handed over: count it, free the request
 * and let the connection go on (next request, or close) once flushed.
 */
static void
conn_response_done(conn *c, srv_req *r, bool keepalive)
{
    srv_count(c->srv, r->status, r->pub.start_ns);
    r->done = true;
    r->conn = NULL;
    c->req = NULL;
    req_release(r);
    if (!keepalive)
        c->close_after = true;
    if (c->state != CS_CLOSED)
        c->state = CS_FLUSH;
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
        conn_close(c);
        return;
    }
    r->status = status;
    j = json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status, "status",
                  kb_http_status_name(status), "message", message);
    if (j != NULL)
        body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    head = build_head(r, status, &ct, 1, body ? (long long)strlen(body) : 0,
                      false, &hlen);
    if (head != NULL) {
        uv_buf_t bufs[2] = { uv_buf_init(head, (unsigned)hlen),
                             uv_buf_init(body ? body : (char *)"",
                                         body && !r->no_body
                                             ? (unsigned)strlen(body) : 0) };
        conn_write(c, bufs, 2);
    } else {
        conn_close(c);
    }
    free(body);
    c->close_after = true;
    conn_response_done(c, r, false);
}

/* ---- reading requests --------------------------------------------------- */

static void
dispatch(conn *c)
{
    srv_req *r = c->req;
    kb_http_server *srv = c->srv;

    r->pub.body = r->body.data != NULL ? r->body.data : "";
    r->pub.body_len = r->body.len;
    r->with_handler = true;
    srv->inflight++;
    c->state = CS_HANDLER;
    srv->opts.handler(&r->pub, srv->opts.data);
    /* r may be gone now: the handler may have answered already. */
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
        conn_write(c, &b, 1);
    }
    c->state = CS_BODY;
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

/* After the last write of a response: next request, linger, or close. */
static bool
conn_flushed(conn *c)
{
    kb_http_server *srv = c->srv;

    if (c->nwrites > 0)
        return false;
    if (c->close_after || c->peer_eof || srv->shutting_down) {
        if (c->peer_eof ||
            uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, NULL) != 0) {
            conn_close(c);
            return false;
        }
        c->state = CS_LINGER;
        c->since_ms = uv_now(srv->loop);
        kb_buf_free(&c->rbuf);
        c->rpos = 0;
        return false;
    }
    c->state = CS_IDLE;
    c->served = true;
    c->since_ms = uv_now(srv->loop);
    return true;
}

/* One step of the connection state machine; true to keep going. */
static bool
conn_step(conn *c)
{
    kb_http_server *srv = c->srv;

    switch (c->state) {
    case CS_IDLE:
        if (c->rpos == c->rbuf.len) {
            kb_buf_free(&c->rbuf);       /* idle connections hold no buffer */
            c->rpos = 0;
            return false;
        }
        if (srv->shutting_down) {
            conn_close(c);
            return false;
        }
        c->req = req_new(c);
        if (c->req == NULL) {
            conn_close(c);
            return false;
        }
        c->head_deadline = (c->served ? uv_now(srv->loop) : c->since_ms) +
                           srv->opts.header_timeout_ms;
        c->state = CS_HEAD;
        return true;
    case CS_HEAD:
        return read_head(c);
    case CS_BODY:
        return read_body(c);
    case CS_FLUSH:
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
        conn_state before = c->state;
        bool more = conn_step(c);
        /* a step that answered (an error, a synchronous handler) moved
         * the state on: keep going until nothing changes */
        if (c->state == CS_CLOSED || (!more && c->state == before))
            break;
    }
    c->in_process = false;
    conn_arm(c);
}

/* ---- reading, timers ---------------------------------------------------- */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    srv_req *r = c->req;
    kb_buf *b = &c->rbuf;
    size_t room, want;

    c->read_into_body = false;
    if (c->state == CS_LINGER || (c->state == CS_FLUSH && c->close_after)) {
        kb_buf_reset(b);                    /* input is discarded */
        c->rpos = 0;
    }
    /* A Content-Length body with nothing buffered: read straight into it. */
    if (c->state == CS_BODY && r != NULL && r->body_left > 0 &&
        c->rpos == b->len) {
        want = r->body_left < 65536 ? (size_t)r->body_left : 65536;
        if (kb_buf_reserve(&r->body, want) == 0) {
            c->read_into_body = true;
            *buf = uv_buf_init(r->body.data + r->body.len, (unsigned)want);
            return;
        }
    }
    if (c->rpos > 0 && (c->rpos == b->len || b->cap - b->len < 1024)) {
        kb_buf_consume(b, c->rpos);
        c->rpos = 0;
    }
    room = b->max - b->len;
    want = room < READ_CHUNK ? room : READ_CHUNK;
    if (want == 0 || kb_buf_reserve(b, want) != 0) {
        *buf = uv_buf_init(NULL, 0);        /* UV_ENOBUFS: pause reading */
        return;
    }
    want = b->cap - b->len - 1;
    if (want > room)
        want = room;
    *buf = uv_buf_init(b->data + b->len, (unsigned)want);
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    bool into_body = c->read_into_body;

    c->read_into_body = false;
    if (c->state == CS_CLOSED)
        return;
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
        if (c->state == CS_LINGER ||
            (c->state == CS_FLUSH && c->close_after)) {
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
        uv_read_stop(s);
        c->reading = false;
        c->read_paused = true;
        return;
    }
    /* EOF or error: the client is gone (or has half-closed, which an
     * HTTP/1.1 client does not do before it has its response). */
    uv_read_stop(s);
    c->reading = false;
    c->peer_eof = true;
    if (c->state == CS_FLUSH && nread == UV_EOF && c->nwrites > 0)
        return;                 /* finish writing, then close */
    conn_close(c);
}

static void
on_timer(uv_timer_t *t)
{
    conn *c = t->data;

    c->deadline_ms = 0;
    switch (c->state) {
    case CS_HEAD:
        conn_error(c, 408, "request head not received in time");
        break;
    case CS_BODY:
        conn_error(c, 408, "request body not received in time");
        break;
    default:        /* idle, stalled writes, linger */
        conn_close(c);
        break;
    }
}

/* The deadline the current state calls for (uv_now ms), 0 for none. */
static uint64_t
conn_deadline(const conn *c)
{
    const kb_http_server_opts *o = &c->srv->opts;

    switch (c->state) {
    case CS_IDLE:
        return c->since_ms + (c->served ? o->idle_timeout_ms
                                        : o->header_timeout_ms);
    case CS_HEAD:
    case CS_BODY:
        return c->head_deadline;
    case CS_HANDLER:
    case CS_FLUSH:
        return c->nwrites > 0 ? c->since_ms + o->idle_timeout_ms : 0;
    case CS_LINGER:
        return c->since_ms + LINGER_MS;
    default:
        return 0;
    }
}

/* Match the timer and the reading to the state, after each processing. */
static void
conn_arm(conn *c)
{
    uint64_t d, now;

    if (c->state == CS_CLOSED)
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
        if (c->read_paused && c->rpos == 0 && c->rbuf.len >= c->rbuf.max &&
            c->state != CS_LINGER)
            return;             /* still full */
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->reading = true;
            c->read_paused = false;
        }
    }
}

/* ---- connections -------------------------------------------------------- */

static void
conn_free(conn *c)
{
    kb_http_server *srv = c->srv;
    srv_req *r = c->req;
    kb_http_abort_cb cb = NULL;
    void *cb_data = NULL;

    c->req = NULL;
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
            req_release(r);             /* still being read: just drop it */
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
}

static void
on_conn_close(uv_handle_t *h)
{
    conn *c = h->data;

    if (--c->open_handles == 0)
        conn_free(c);
}

static void
conn_close(conn *c)
{
    if (c->state == CS_CLOSED)
        return;
    c->state = CS_CLOSED;
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_close);
}

static void
on_reject_close(uv_handle_t *h)
{
    free(h);
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
        uv_tcp_t *t = malloc(sizeof(*t));
        if (t == NULL || uv_tcp_init(srv->loop, t) != 0) {
            free(t);
            return;
        }
        uv_accept(l, (uv_stream_t *)t);
        uv_close((uv_handle_t *)t, on_reject_close);
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
    c->state = CS_IDLE;
    c->since_ms = uv_now(srv->loop);
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    kb_gauge_add(srv->connections, 1);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
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
    conn_arm(c);
}

/* ---- server ------------------------------------------------------------- */

static void
srv_free(kb_http_server *srv)
{
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
        conn_close(c);
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
        if (c->state == CS_IDLE)
            conn_close(c);
        else if (c->state == CS_LINGER)
            conn_close(c);
    }
    uv_timer_start(&srv->grace, on_grace, grace_ms, 0);
}

/* ---- request hooks ------------------------------------------------------ */

void
kb_http_req_on_abort(kb_http_req *req, kb_http_abort_cb cb, void *data)
{
    srv_req *r = (srv_req *)req;

    r->abort_cb = cb;
    r->abort_data = data;
}

/* ---- responses ---------------------------------------------------------- */

/* The response to a request whose connection is gone: count it, detach
 * it, release it. */
static void
req_finish_orphan(srv_req *r)
{
    conn *c = r->conn;

    srv_count(r->pub.server, r->status, r->pub.start_ns);
    r->done = true;
    if (c != NULL) {
        c->req = NULL;
        r->conn = NULL;
    }
    req_release(r);
}

void
kb_http_respond(kb_http_req *req, int status, const kb_http_header *headers,
                size_t nheaders, const char *body, size_t body_len)
{
    long long framing;
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    char *head;
    size_t hlen;
    bool keepalive, send_body;

    if (r->streaming) {
        kb_log_warn("http: respond after response_start", NULL);
        kb_http_response_end(req);
        return;
    }
    if (status < 100 || status > 999 || body_len > INT32_MAX) {
        status = 500;               /* uv_buf_t lengths are 32-bit */
        body_len = 0;
    }
    r->status = status;
    if (c == NULL || c->state == CS_CLOSED) {
        req_finish_orphan(r);
        return;
    }
    keepalive = req_keepalive(r);
    send_body = status_has_body(status) && !r->no_body;
    framing = status_has_body(status) ? (long long)body_len : -2;
    if (r->no_body && framing == 0)
        framing = head_content_length(headers, nheaders);
    head = build_head(r, status, headers, nheaders, framing, keepalive,
                      &hlen);
    if (head == NULL) {
        conn_close(c);
    } else {
        uv_buf_t bufs[2] = {
            uv_buf_init(head, (unsigned)hlen),
            uv_buf_init((char *)(body ? body : ""),
                        send_body && body ? (unsigned)body_len : 0),
        };
        conn_write(c, bufs, 2);
    }
    conn_response_done(c, r, keepalive);
}

void
kb_http_respond_json(kb_http_req *req, int status, json_t *body)
{
    static const kb_http_header ct = { "Content-Type", "application/json" };
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY)
                              : NULL;

    json_decref(body);
    if (text == NULL) {
        kb_http_respond_error(req, 500, "cannot encode response");
        return;
    }
    kb_http_respond(req, status, &ct, 1, text, strlen(text));
    free(text);
}

void
kb_http_respond_error(kb_http_req *req, int status, const char *message)
{
    static const kb_http_header ct = { "Content-Type", "application/json" };
    json_t *j = json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status,
                          "status", kb_http_status_name(status), "message",
                          message != NULL ? message : "");
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (text == NULL) {
        static const char fallback[] =
            "{\"error\":{\"code\":500,\"status\":\"INTERNAL\","
            "\"message\":\"out of memory\"}}";
        kb_http_respond(req, 500, &ct, 1, fallback, sizeof(fallback) - 1);
        return;
    }
    kb_http_respond(req, status, &ct, 1, text, strlen(text));
    free(text);
}

int
kb_http_response_start(kb_http_req *req, int status,
                       const kb_http_header *headers, size_t nheaders)
{
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    char *head;
    size_t hlen;
    long long framing;
    uv_buf_t b;

    if (r->streaming)
        return KB_EINVAL;
    if (status < 100 || status > 999)
        status = 500;
    r->streaming = true;
    r->status = status;
    if (c == NULL || c->state == CS_CLOSED)
        return KB_ECANCELED;
    if (!status_has_body(status)) {
        r->no_body = true;
        framing = -2;
    } else if (r->pub.version_minor >= 1) {
        r->chunked_out = !r->no_body;
        framing = -1;
    } else {
        c->close_after = true;          /* HTTP/1.0: body ends at close */
        framing = -2;
    }
    head = build_head(r, status, headers, nheaders, framing,
                      req_keepalive(r), &hlen);
    if (head == NULL) {
        conn_close(c);
        return KB_ECANCELED;
    }
    b = uv_buf_init(head, (unsigned)hlen);
    return conn_write(c, &b, 1);
}

int
kb_http_response_write(kb_http_req *req, const char *data, size_t len)
{
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    char line[24];
    uv_buf_t bufs[3];

    if (!r->streaming || len > INT32_MAX)
        return KB_EINVAL;
    if (c == NULL || c->state == CS_CLOSED)
        return KB_ECANCELED;
    if (len == 0 || r->no_body)
        return 0;
    if (c->wbytes + len > STREAM_MAX_PENDING) {
        /* The client does not read: treat it as gone. */
        conn_close(c);
        return KB_ECANCELED;
    }
    if (!r->chunked_out) {
        bufs[0] = uv_buf_init((char *)data, (unsigned)len);
        return conn_write(c, bufs, 1);
    }
    bufs[0] = uv_buf_init(line, (unsigned)snprintf(line, sizeof(line),
                                                   "%zx\r\n", len));
    bufs[1] = uv_buf_init((char *)data, (unsigned)len);
    bufs[2] = uv_buf_init((char *)"\r\n", 2);
    return conn_write(c, bufs, 3);
}

void
kb_http_response_end(kb_http_req *req)
{
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    bool keepalive;

    if (!r->streaming) {
        kb_http_respond(req, 500, NULL, 0, NULL, 0);
        return;
    }
    if (c == NULL || c->state == CS_CLOSED) {
        req_finish_orphan(r);
        return;
    }
    keepalive = req_keepalive(r);
    if (r->chunked_out) {
        uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
        conn_write(c, &b, 1);
    }
    conn_response_done(c, r, keepalive);
}
