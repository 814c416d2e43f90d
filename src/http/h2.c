/*
 * h2.c - HTTP/2 on the server's connections (nghttp2, RFC 9113).
 *
 * server.c hands a connection here when it starts with the h2c preface (a
 * plain listener with opts.h2) or when TLS ALPN picked "h2".  One nghttp2
 * server session per connection; each stream becomes a kb_http__req handed
 * to the listener's handler exactly like an HTTP/1 request, and the public
 * response calls in server.c come back here for HTTP/2 requests.  nghttp2
 * does the framing, HPACK and the protocol checks; this file adds the
 * limits (head and body size, timeouts, buffered bodies and output per
 * connection) and the request lifecycle (dispatch, abort, orphaned answers).
 */
#include "http/http_internal.h"
#include "core/err.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/time.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#define H2_MAX_STREAMS      128u            /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define H2_STREAM_WINDOW    (256u * 1024)   /* SETTINGS_INITIAL_WINDOW_SIZE */
#define H2_CONN_WINDOW      (1u << 20)      /* connection receive window */
#define H2_MAX_QUEUED       (256u * 1024)   /* unsent output: stop there */
#define H2_OUT_COALESCE     (16u * 1024)    /* frames gathered per write */
#define H2_STREAM_PENDING   (16u << 20)     /* unsent streamed bytes */
#define H2_RESET_BURST      1000u           /* client RST_STREAM token bucket */
#define H2_RESET_RATE       33u             /*   refill per second */
#define H2_MAX_SETTINGS     32u             /* entries per SETTINGS frame */
#define H2_MAX_CONTINUATION 8u              /* CONTINUATION frames per head */
#define H2_HDR_OVERHEAD     32u             /* RFC 9113 §6.5.2 per field */

typedef kb_http__conn conn;
typedef kb_http__req  srv_req;
typedef kb_http__h2s  h2s;

struct kb_http__h2 {
    nghttp2_session *ng;
    conn            *c;
    h2s             *streams;       /* open streams we know */
    size_t           nstreams;
    size_t           body_buffered; /* request body bytes held by streams */
    size_t           body_budget;   /* above it, window credit waits */
    srv_req         *aborted;       /* detached, on_abort not run yet */
    uint64_t         idle_since;    /* uv_now when the last stream closed */
    uint64_t         reset_tokens;  /* client RST_STREAM bucket (x1000) */
    uint64_t         reset_ms;      /* uv_now of its last refill */
    unsigned         in_api;        /* inside a handler's response call */
    bool             in_recv;       /* inside nghttp2_session_mem_recv */
    bool             flushing;
    bool             goaway;
    bool             calm;          /* reset flood: ENHANCE_YOUR_CALM */
};

struct kb_http__h2s {
    h2s          *prev, *next;
    kb_http__h2  *h2;
    int32_t       id;
    srv_req      *req;          /* until the response is handed over */
    /* the request */
    const char   *method, *path, *scheme, *authority;
    size_t        head_bytes;
    size_t        nhdr;
    int           reject;       /* status to answer at end of head */
    const char   *reject_msg;
    uint64_t      deadline;     /* head / body deadline, 0 = none */
    size_t        body_held;    /* counted in h2->body_buffered */
    size_t        unacked;      /* received bytes not yet credited */
    bool          head_done;
    bool          answered;     /* a response is submitted */
    /* the response */
    kb_buf        out;          /* body bytes not yet framed */
    size_t        out_off;
    bool          out_eof;
    nghttp2_nv   *trailers;     /* one malloc block, strings inside */
    size_t        ntrailers;
};

static void h2_flush(conn *c);
static void api_done(kb_http__h2 *h2);

/* ---- small helpers ---------------------------------------------------------- */

/* Connection-specific fields, never sent in HTTP/2 (RFC 9113 §8.2.2), and
 * those the server sets itself. */
static bool
resp_header_dropped(const char *name)
{
    static const char *const drop[] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding",
        "upgrade", "te", "content-length", "date", "trailer",
    };

    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (strcasecmp(name, drop[i]) == 0)
            return true;
    return false;
}

/* A name lower-cased into the pool (HTTP/2 field names are lower case). */
static char *
lower_dup(kb_pool *p, const char *s)
{
    size_t n = strlen(s);
    char *d = kb_pool_alloc(p, n + 1);

    if (d == NULL)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    return d;
}

static nghttp2_nv
mknv(const char *name, const char *value)
{
    nghttp2_nv nv = { (uint8_t *)name, (uint8_t *)value, strlen(name),
                      strlen(value), NGHTTP2_NV_FLAG_NONE };
    return nv;
}

/* ---- streams ------------------------------------------------------------ */

/* Give the client back window credit as buffered bodies allow. */
static void
h2_credit(kb_http__h2 *h2)
{
    for (h2s *s = h2->streams; s != NULL; s = s->next) {
        if (h2->body_buffered > h2->body_budget)
            return;
        if (s->unacked > 0) {
            nghttp2_session_consume(h2->ng, s->id, s->unacked);
            s->unacked = 0;
        }
    }
}

/* The stream no longer holds its request body (answered or gone). */
static void
stream_drop_body(h2s *s, bool stream_open)
{
    kb_http__h2 *h2 = s->h2;

    h2->body_buffered -= s->body_held;
    s->body_held = 0;
    if (s->unacked > 0) {
        if (stream_open)
            nghttp2_session_consume(h2->ng, s->id, s->unacked);
        else
            nghttp2_session_consume_connection(h2->ng, s->unacked);
        s->unacked = 0;
    }
    h2_credit(h2);
}

/* Take the request off its stream: it stays with the handler, which must
 * still answer (the answer then only releases it). */
static void
stream_detach_req(h2s *s)
{
    srv_req *r = s->req;

    s->req = NULL;
    r->conn = NULL;
    r->h2s = NULL;
    r->pub.conn_ = NULL;
}

static void
stream_free(h2s *s)
{
    kb_buf_free(&s->out);
    free(s->trailers);
    free(s);
}

static void
stream_unlink(h2s *s)
{
    kb_http__h2 *h2 = s->h2;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h2->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    if (--h2->nstreams == 0)
        h2->idle_since = uv_now(h2->c->srv->loop);
}

/* ---- responses -------------------------------------------------------------- */

/* The answer to a request whose stream is gone: count it, release it. */
static void
req_orphan(srv_req *r)
{
    kb_http__count(r->pub.server, r->status, r->pub.start_ns);
    r->done = true;
    kb_http__req_release(r);
}

/* nghttp2 pulls response body bytes from s->out. */
static ssize_t
on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
             uint32_t *flags, nghttp2_data_source *src, void *user)
{
    h2s *s = src->ptr;
    size_t avail = s->out.len - s->out_off;
    size_t n = length < avail ? length : avail;

    (void)user;
    if (n > 0) {
        memcpy(buf, s->out.data + s->out_off, n);
        s->out_off += n;
    }
    if (s->out_off == s->out.len) {
        if (s->out_eof)
            kb_buf_free(&s->out);
        else
            kb_buf_reset(&s->out);
        s->out_off = 0;
        if (s->out_eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (s->ntrailers > 0 &&
                nghttp2_submit_trailer(ng, id, s->trailers, s->ntrailers) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        } else if (n == 0) {
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* Copy trailers (lower-case names, valid fields only) into one block the
 * stream owns until they are sent.  0 or KB_ENOMEM. */
static int
stream_set_trailers(h2s *s, const kb_http_header *t, size_t nt)
{
    size_t bytes = 0, k = 0;
    char *p;

    for (size_t i = 0; i < nt; i++)
        if (kb_http__header_ok(&t[i]) && !resp_header_dropped(t[i].name))
            bytes += strlen(t[i].name) + strlen(t[i].value) + 2;
    if (bytes == 0)
        return 0;
    s->trailers = malloc(nt * sizeof(nghttp2_nv) + bytes);
    if (s->trailers == NULL)
        return KB_ENOMEM;
    p = (char *)(s->trailers + nt);
    for (size_t i = 0; i < nt; i++) {
        size_t a, b;
        if (!kb_http__header_ok(&t[i]) || resp_header_dropped(t[i].name))
            continue;
        a = strlen(t[i].name);
        b = strlen(t[i].value);
        for (size_t j = 0; j <= a; j++)
            p[j] = (char)tolower((unsigned char)t[i].name[j]);
        memcpy(p + a + 1, t[i].value, b + 1);
        s->trailers[k] = (nghttp2_nv){ (uint8_t *)p, (uint8_t *)(p + a + 1),
                                       a, b, NGHTTP2_NV_FLAG_NONE };
        p += a + b + 2;
        k++;
    }
    s->ntrailers = k;
    return 0;
}

/*
 * Submit the response HEADERS for r's stream.  length: the content-length
 * to announce, -1 for none.  with_data: a body (or trailers) follows from
 * s->out.  0, or KB_ENOMEM / an nghttp2 failure (the stream is reset).
 */
static int
submit_head(srv_req *r, int status, const kb_http_header *hdrs, size_t nh,
            long long length, bool with_data)
{
    h2s *s = r->h2s;
    kb_pool *p = r->pub.pool;
    nghttp2_nv *nv = kb_pool_alloc(p, (nh + 3) * sizeof(*nv));
    char *st = kb_pool_alloc(p, 12), *cl = kb_pool_alloc(p, 24);
    nghttp2_data_provider prd = { .source.ptr = s, .read_callback = on_read_body };
    size_t n = 0;
    int rc;

    if (nv == NULL || st == NULL || cl == NULL)
        return KB_ENOMEM;
    snprintf(st, 12, "%03d", status % 1000);   /* 200 … 999 here */
    nv[n++] = mknv(":status", st);
    for (size_t i = 0; i < nh; i++) {
        char *name;
        if (!kb_http__header_ok(&hdrs[i]) || resp_header_dropped(hdrs[i].name))
            continue;
        if ((name = lower_dup(p, hdrs[i].name)) == NULL)
            return KB_ENOMEM;
        nv[n++] = mknv(name, hdrs[i].value);
    }
    if (length >= 0) {
        snprintf(cl, 24, "%lld", length);
        nv[n++] = mknv("content-length", cl);
    }
    nv[n++] = mknv("date", kb_http__date(r->pub.server));
    s->answered = true;
    rc = nghttp2_submit_response(s->h2->ng, s->id, nv, n,
                                 with_data ? &prd : NULL);
    if (rc != 0) {
        nghttp2_submit_rst_stream(s->h2->ng, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
        return KB_EINVAL;
    }
    return 0;
}

/* The response is handed over: count it, detach and free the request. */
static void
stream_finish_req(h2s *s)
{
    srv_req *r = s->req;

    kb_http__count(r->pub.server, r->status, r->pub.start_ns);
    r->done = true;
    stream_detach_req(s);
    stream_drop_body(s, true);
    kb_http__req_release(r);
}

void
kb_http__h2_respond(srv_req *r, int status, const kb_http_header *hdrs,
                    size_t nh, const char *body, size_t len,
                    const kb_http_header *trailers, size_t nt)
{
    h2s *s = r->h2s;
    kb_http__h2 *h2;
    bool send_body;
    long long length;

    if (status < 200)
        status = 500;               /* no interim answer as the final one */
    r->status = status;
    if (r->conn == NULL || s == NULL || s->answered) {
        req_orphan(r);
        return;
    }
    h2 = s->h2;
    h2->in_api++;
    send_body = kb_http__status_has_body(status) && !r->no_body;
    length = kb_http__status_has_body(status) ? (long long)len : -1;
    if (r->no_body && length == 0)
        length = kb_http__head_length(hdrs, nh);
    if (send_body && nt > 0 && stream_set_trailers(s, trailers, nt) != 0)
        send_body = false;
    if (send_body && len > 0 && kb_buf_append(&s->out, body, len) != 0) {
        nghttp2_submit_rst_stream(h2->ng, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
    } else {
        s->out_eof = true;
        submit_head(r, status, hdrs, nh, length,
                    send_body && (len > 0 || s->ntrailers > 0));
    }
    stream_finish_req(s);
    api_done(h2);
}

int
kb_http__h2_start_response(srv_req *r, int status, const kb_http_header *hdrs,
                           size_t nh)
{
    h2s *s = r->h2s;
    kb_http__h2 *h2;
    int rc;

    if (status < 200)
        status = 500;
    r->streaming = true;
    r->status = status;
    if (r->conn == NULL || s == NULL || s->answered)
        return KB_ECANCELED;
    h2 = s->h2;
    h2->in_api++;
    if (!kb_http__status_has_body(status) || r->no_body) {
        r->no_body = true;
        s->out_eof = true;
    }
    rc = submit_head(r, status, hdrs, nh,
                     r->no_body ? kb_http__head_length(hdrs, nh) : -1,
                     !r->no_body);
    api_done(h2);
    return rc == 0 ? 0 : KB_ECANCELED;
}

int
kb_http__h2_write(srv_req *r, const char *data, size_t len)
{
    h2s *s = r->h2s;
    kb_http__h2 *h2;

    if (r->conn == NULL || s == NULL)
        return KB_ECANCELED;
    if (len == 0 || r->no_body)
        return 0;
    h2 = s->h2;
    h2->in_api++;
    if (s->out_off > 0 && s->out_off >= s->out.len / 2) {
        kb_buf_consume(&s->out, s->out_off);    /* keep it compact */
        s->out_off = 0;
    }
    if (s->out.len - s->out_off + len > H2_STREAM_PENDING ||
        kb_buf_append(&s->out, data, len) != 0) {
        /* The client does not read: treat the stream as gone. */
        nghttp2_submit_rst_stream(h2->ng, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_CANCEL);
        stream_detach_req(s);
        stream_drop_body(s, true);
        api_done(h2);
        return KB_ECANCELED;
    }
    nghttp2_session_resume_data(h2->ng, s->id);
    api_done(h2);
    return 0;
}

void
kb_http__h2_end(srv_req *r)
{
    h2s *s = r->h2s;
    kb_http__h2 *h2;

    if (r->conn == NULL || s == NULL) {
        req_orphan(r);
        return;
    }
    h2 = s->h2;
    h2->in_api++;
    s->out_eof = true;
    nghttp2_session_resume_data(h2->ng, s->id);
    stream_finish_req(s);
    api_done(h2);
}

/* End of a response call: send what can go, then leave the API. */
static void
api_done(kb_http__h2 *h2)
{
    conn *c = h2->c;

    h2_flush(c);
    if (--h2->in_api == 0 && c->state != CONN_CLOSED && !c->in_process)
        kb_http__conn_arm(c);
}

/* The server's own answer to a request it will not hand to the handler. */
static void
stream_error(h2s *s, int status, const char *msg)
{
    static const kb_http_header ct = { "Content-Type", "application/json" };
    srv_req *r = s->req;
    char body[320];
    int n;

    if (r == NULL || s->answered)
        return;
    n = snprintf(body, sizeof(body),
                 "{\"error\":{\"code\":%d,\"status\":\"%s\",\"message\":\"%s\"}}",
                 status, kb_http_status_name(status), msg);
    s->deadline = 0;
    s->h2->in_api++;
    kb_http__h2_respond(r, status, &ct, 1, body, (size_t)n, NULL, 0);
    s->h2->in_api--;
}

/* ---- requests ------------------------------------------------------------- */

static int
on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    kb_http__h2 *h2 = user;
    conn *c = h2->c;
    h2s *s;
    srv_req *r;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s = calloc(1, sizeof(*s));
    r = s != NULL ? kb_http__req_new(c, false) : NULL;
    if (r != NULL)
        r->pub.headers = kb_pool_alloc(r->pub.pool,
                                       (c->srv->opts.max_headers + 2) *
                                           sizeof(kb_http_header));
    if (r == NULL || r->pub.headers == NULL) {
        if (r != NULL)
            kb_http__req_release(r);
        free(s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;   /* resets it */
    }
    s->h2 = h2;
    s->id = f->hd.stream_id;
    s->req = r;
    r->h2s = s;
    r->pub.method = "";
    r->pub.target = r->pub.path = "/";
    kb_buf_init(&s->out, INT32_MAX);
    s->deadline = uv_now(c->srv->loop) + c->srv->opts.header_timeout_ms;
    s->next = h2->streams;
    if (h2->streams != NULL)
        h2->streams->prev = s;
    h2->streams = s;
    h2->nstreams++;
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static int
on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
          size_t namelen, const uint8_t *value, size_t valuelen,
          uint8_t flags, void *user)
{
    kb_http__h2 *h2 = user;
    const kb_http_server_opts *o = &h2->c->srv->opts;
    h2s *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    kb_pool *p;
    char *n, *v;

    (void)flags;
    if (s == NULL || s->req == NULL || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    s->head_bytes += namelen + valuelen + H2_HDR_OVERHEAD;
    if (s->head_bytes > 2 * o->max_head)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  /* HPACK bomb: reset */
    if (s->head_bytes > o->max_head && s->reject == 0) {
        s->reject = 431;
        s->reject_msg = "request header fields too large";
    }
    if (s->reject != 0 || s->head_done)
        return 0;                       /* request trailers are dropped */
    p = s->req->pub.pool;
    n = kb_pool_strndup(p, (const char *)name, namelen);
    v = kb_pool_strndup(p, (const char *)value, valuelen);
    if (n == NULL || v == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (n[0] == ':') {
        /* nghttp2 has checked which pseudo-headers are allowed */
        if (strcmp(n, ":method") == 0)
            s->method = v;
        else if (strcmp(n, ":path") == 0)
            s->path = v;
        else if (strcmp(n, ":scheme") == 0)
            s->scheme = v;
        else if (strcmp(n, ":authority") == 0)
            s->authority = v;
        return 0;
    }
    if (s->nhdr >= o->max_headers) {
        s->reject = 431;
        s->reject_msg = "too many header fields";
        return 0;
    }
    s->req->pub.headers[s->nhdr++] = (kb_http_header){ n, v };
    return 0;
}

/* RFC 9113 §8.2.3: cookie fields split by the client are joined again. */
static void
join_cookies(h2s *s)
{
    kb_http_req *q = &s->req->pub;
    size_t total = 0, k = 0, len = 0, o = 0;
    char *joined;

    for (size_t i = 0; i < s->nhdr; i++)
        if (strcmp(q->headers[i].name, "cookie") == 0) {
            total += strlen(q->headers[i].value) + 2;
            k++;
        }
    if (k < 2 || (joined = kb_pool_alloc(q->pool, total)) == NULL)
        return;
    k = 0;
    for (size_t i = 0; i < s->nhdr; i++) {
        const char *v = q->headers[i].value;
        size_t n = strlen(v);

        if (strcmp(q->headers[i].name, "cookie") != 0) {
            q->headers[o++] = q->headers[i];
            continue;
        }
        if (len > 0) {
            memcpy(joined + len, "; ", 2);
            len += 2;
        }
        memcpy(joined + len, v, n);
        len += n;
        if (k++ == 0)
            q->headers[o++] = (kb_http_header){ "cookie", joined };
    }
    joined[len] = '\0';
    s->nhdr = o;
}

/* The request head is complete: fill the public fields. */
static void
stream_head_done(h2s *s)
{
    srv_req *r = s->req;
    kb_http_req *q = &r->pub;
    kb_http_server *srv = r->pub.server;
    const char *qm, *cl;

    s->head_done = true;
    q->start_ns = kb_time_mono_ns();
    if (s->reject != 0)
        return;
    if (s->method == NULL || s->path == NULL ||
        strcmp(s->method, "CONNECT") == 0) {
        s->reject = 501;                /* CONNECT (no :path) */
        s->reject_msg = "method not supported";
        return;
    }
    join_cookies(s);
    q->method = s->method;
    q->target = s->path;
    qm = strchr(s->path, '?');
    q->path = qm != NULL ? kb_pool_strndup(q->pool, s->path,
                                           (size_t)(qm - s->path)) : s->path;
    q->query = qm != NULL ? qm + 1 : "";
    q->version_minor = 0;
    q->http_major = 2;
    /* :authority is the Host; code written for HTTP/1 reads "host" */
    for (size_t i = 0; i < s->nhdr; i++)
        if (strcmp(q->headers[i].name, "host") == 0) {
            if (s->authority != NULL)
                q->headers[i] = q->headers[--s->nhdr];
            else
                s->authority = q->headers[i].value;
            break;
        }
    if (s->authority != NULL)
        q->headers[s->nhdr++] = (kb_http_header){ "host", s->authority };
    q->authority = s->authority;
    q->headers[s->nhdr].name = NULL;
    q->nheaders = s->nhdr;
    r->no_body = strcmp(q->method, "HEAD") == 0;
    if (q->path == NULL) {
        s->reject = 500;
        s->reject_msg = "out of memory";
        return;
    }
    cl = kb_http_req_header(q, "content-length");
    if (cl != NULL && strtoull(cl, NULL, 10) > srv->opts.max_body) {
        s->reject = 413;
        s->reject_msg = "request body too large";
        return;
    }
    s->deadline = uv_now(srv->loop) + srv->opts.body_timeout_ms;
}

static void
stream_dispatch(h2s *s)
{
    srv_req *r = s->req;

    s->deadline = 0;
    kb_http__dispatch(r);
    /* r may be answered (and released) already */
}

/*
 * A client RST_STREAM: one token from a bucket of H2_RESET_BURST refilled
 * at H2_RESET_RATE a second.  Empty (the "rapid reset" attack, where each
 * stream costs us a handler call and the client nothing): stop processing
 * this connection's input at once; it gets GOAWAY ENHANCE_YOUR_CALM.
 * nghttp2's own limit (the same numbers) only stops new streams once its
 * GOAWAY is sent, after the whole read buffer has been processed.
 */
static bool
reset_allowed(kb_http__h2 *h2)
{
    uint64_t now = uv_now(h2->c->srv->loop);

    h2->reset_tokens += (now - h2->reset_ms) * H2_RESET_RATE;
    h2->reset_ms = now;
    if (h2->reset_tokens > H2_RESET_BURST * 1000)
        h2->reset_tokens = H2_RESET_BURST * 1000;
    if (h2->reset_tokens < 1000)
        return false;
    h2->reset_tokens -= 1000;
    return true;
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    kb_http__h2 *h2 = user;
    h2s *s;

    if (f->hd.type == NGHTTP2_RST_STREAM && !reset_allowed(h2)) {
        h2->calm = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (s == NULL || s->req == NULL || s->answered)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && !s->head_done &&
        (f->hd.flags & NGHTTP2_FLAG_END_HEADERS)) {
        stream_head_done(s);
        if (s->reject != 0) {
            stream_error(s, s->reject, s->reject_msg);
            return 0;
        }
    }
    if (s->head_done && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        stream_dispatch(s);
    return 0;
}

static int
on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id,
              const uint8_t *data, size_t len, void *user)
{
    kb_http__h2 *h2 = user;
    h2s *s = nghttp2_session_get_stream_user_data(ng, id);

    (void)flags;
    if (s == NULL || s->req == NULL || s->answered || !s->head_done ||
        s->req->with_handler) {
        nghttp2_session_consume(ng, id, len);   /* not wanted: credit */
        return 0;
    }
    if (kb_buf_append(&s->req->body, data, len) != 0) {
        nghttp2_session_consume(ng, id, len);
        stream_error(s, 413, "request body too large");
        return 0;
    }
    s->body_held += len;
    h2->body_buffered += len;
    if (h2->body_buffered <= h2->body_budget)
        nghttp2_session_consume(ng, id, len);
    else
        s->unacked += len;
    return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user)
{
    kb_http__h2 *h2 = user;
    h2s *s = nghttp2_session_get_stream_user_data(ng, id);
    srv_req *r;

    (void)code;
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    r = s->req;
    stream_unlink(s);
    stream_drop_body(s, false);
    if (r != NULL) {
        stream_detach_req(s);
        if (r->with_handler) {
            r->abort_next = h2->aborted;     /* on_abort at a safe point */
            h2->aborted = r;
        } else {
            kb_http__req_release(r);         /* never reached the handler */
        }
    }
    stream_free(s);
    return 0;
}

/* ---- the session ------------------------------------------------------------ */

int
kb_http__h2_start(conn *c)
{
    kb_http_server *srv = c->srv;
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    kb_http__h2 *h2 = calloc(1, sizeof(*h2));
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
          srv->opts.max_head > UINT32_MAX ? UINT32_MAX
                                          : (uint32_t)srv->opts.max_head },
    };
    int rc = KB_ENOMEM;

    if (h2 == NULL || nghttp2_session_callbacks_new(&cb) != 0 ||
        nghttp2_option_new(&opt) != 0)
        goto out_free;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_settings(opt, H2_MAX_SETTINGS);
    nghttp2_option_set_stream_reset_rate_limit(opt, H2_RESET_BURST,
                                               H2_RESET_RATE);
    nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATION);
    if (nghttp2_session_server_new2(&h2->ng, cb, h2, opt) != 0)
        goto out_free;
    h2->c = c;
    h2->body_budget = 2 * srv->opts.max_body;
    h2->idle_since = uv_now(srv->loop);
    h2->reset_ms = h2->idle_since;
    h2->reset_tokens = H2_RESET_BURST * 1000;
    if (nghttp2_submit_settings(h2->ng, NGHTTP2_FLAG_NONE, iv,
                                sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(h2->ng, NGHTTP2_FLAG_NONE, 0,
                                              H2_CONN_WINDOW) != 0) {
        nghttp2_session_del(h2->ng);
        goto out_free;
    }
    c->h2 = h2;
    c->state = CONN_H2;
    h2 = NULL;
    rc = 0;
out_free:
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    free(h2);
    return rc;
}

int
kb_http__h2_recv(conn *c, const char *data, size_t len)
{
    kb_http__h2 *h2 = c->h2;
    ssize_t n;

    h2->in_recv = true;
    n = nghttp2_session_mem_recv(h2->ng, (const uint8_t *)data, len);
    h2->in_recv = false;
    if (n < 0) {
        kb_log_debug("http2: bad input", "{s:s, s:s}", "client",
                     c->remote_addr, "error", nghttp2_strerror((int)n));
        /* a GOAWAY may be queued (flood, protocol error): best effort */
        nghttp2_session_terminate_session(h2->ng, h2->calm
                                              ? NGHTTP2_ENHANCE_YOUR_CALM
                                              : NGHTTP2_PROTOCOL_ERROR);
        h2_flush(c);
        return KB_EPARSE;
    }
    return 0;
}

/* Gather frames into few writes; stop while the output queue is full. */
static void
h2_flush(conn *c)
{
    kb_http__h2 *h2 = c->h2;
    char out[H2_OUT_COALESCE];
    size_t n = 0;

    if (h2 == NULL || h2->in_recv || h2->flushing || c->state == CONN_CLOSED)
        return;
    h2->flushing = true;
    while (c->wbytes < H2_MAX_QUEUED && c->state != CONN_CLOSED) {
        const uint8_t *p;
        ssize_t k = nghttp2_session_mem_send(h2->ng, &p);
        if (k < 0) {
            kb_http__conn_close(c);
            break;
        }
        if (k == 0)
            break;
        if (n > 0 && n + (size_t)k > sizeof(out)) {
            uv_buf_t b = uv_buf_init(out, (unsigned)n);
            kb_http__conn_write(c, &b, 1);
            n = 0;
        }
        if ((size_t)k > sizeof(out)) {
            uv_buf_t b = uv_buf_init((char *)p, (unsigned)k);
            kb_http__conn_write(c, &b, 1);
        } else {
            memcpy(out + n, p, (size_t)k);
            n += (size_t)k;
        }
    }
    if (n > 0 && c->state != CONN_CLOSED) {
        uv_buf_t b = uv_buf_init(out, (unsigned)n);
        kb_http__conn_write(c, &b, 1);
    }
    h2->flushing = false;
    if (c->state == CONN_CLOSED)
        return;
    if (!nghttp2_session_want_read(h2->ng) &&
        !nghttp2_session_want_write(h2->ng) && c->nwrites == 0) {
        if (c->tls != NULL)
            kb_http__tls_shutdown(c->tls);
        kb_http__conn_close(c);         /* GOAWAY done, streams finished */
        return;
    }
    if (h2->aborted != NULL && h2->in_api == 0) {
        srv_req *list = h2->aborted;
        h2->aborted = NULL;
        kb_http__fire_aborts(list);     /* the connection stays open */
    }
}

void
kb_http__h2_flush(conn *c)
{
    h2_flush(c);
    if (c->h2 != NULL && c->h2->in_api == 0)
        kb_http__conn_arm(c);
}

bool
kb_http__h2_backlogged(const conn *c)
{
    return c->wbytes >= H2_MAX_QUEUED;
}

uint64_t
kb_http__h2_deadline(const conn *c)
{
    const kb_http__h2 *h2 = c->h2;
    const kb_http_server_opts *o = &c->srv->opts;
    uint64_t d = 0;

    if (c->nwrites > 0)
        d = c->since_ms + o->idle_timeout_ms;   /* a stalled write */
    else if (h2->nstreams == 0)
        d = h2->idle_since + o->idle_timeout_ms;
    for (const h2s *s = h2->streams; s != NULL; s = s->next)
        if (s->deadline != 0 && (d == 0 || s->deadline < d))
            d = s->deadline;
    return d;
}

void
kb_http__h2_timer(conn *c)
{
    kb_http__h2 *h2 = c->h2;
    const kb_http_server_opts *o = &c->srv->opts;
    uint64_t now = uv_now(c->srv->loop);
    h2s *s, *next;

    if (c->nwrites > 0 && c->since_ms + o->idle_timeout_ms <= now) {
        kb_http__conn_close(c);         /* the client stopped reading */
        return;
    }
    if (c->nwrites == 0 && h2->nstreams == 0 &&
        h2->idle_since + o->idle_timeout_ms <= now) {
        nghttp2_session_terminate_session(h2->ng, NGHTTP2_NO_ERROR);
        kb_http__h2_flush(c);           /* GOAWAY; closes when written */
        return;
    }
    for (s = h2->streams; s != NULL; s = next) {
        next = s->next;
        if (s->deadline == 0 || s->deadline > now)
            continue;
        if (!s->head_done) {
            /* stuck inside HEADERS/CONTINUATION: nothing else may be sent
             * on the connection before they end */
            kb_http__conn_close(c);
            return;
        }
        stream_error(s, 408, "request body not received in time");
    }
    kb_http__h2_flush(c);
}

void
kb_http__h2_goaway(conn *c)
{
    kb_http__h2 *h2 = c->h2;

    if (h2->goaway)
        return;
    h2->goaway = true;
    nghttp2_submit_goaway(h2->ng, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h2->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    kb_http__h2_flush(c);
}

srv_req *
kb_http__h2_free(conn *c)
{
    kb_http__h2 *h2 = c->h2;
    srv_req *list = h2->aborted;

    while (h2->streams != NULL) {
        h2s *s = h2->streams;
        srv_req *r = s->req;
        h2->streams = s->next;
        if (r != NULL) {
            stream_detach_req(s);
            if (r->with_handler) {
                r->abort_next = list;
                list = r;
            } else {
                kb_http__req_release(r);
            }
        }
        stream_free(s);
    }
    nghttp2_session_del(h2->ng);
    free(h2);
    c->h2 = NULL;
    return list;
}
