/*
 * client.c - HTTP/1.1 upstream client with keep-alive pools (see client.h).
 *
 * A `call` is one exchange (resolve → connect or reuse → write → read); a
 * `cconn` is one TCP connection, either serving a call or idle in its
 * backend's pool.  Responses are framed by parser.c, decoded in place in the
 * connection's read buffer, and handed to the callback without a copy.
 */
#include "http/client.h"
#include "http/http_internal.h"
#include "http/parser.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define DEFAULT_MAX_IDLE      64u
#define DEFAULT_IDLE_MS       30000u
#define DEFAULT_CONNECT_MS    5000u
#define DEFAULT_MAX_BODY      (32u << 20)
#define DEFAULT_CALL_MS       15000u
#define READ_CHUNK            (64u * 1024)
#define BACKEND_BUCKETS       64u
#define MAX_ADDRS             4

typedef struct backend backend;
typedef struct cconn cconn;

struct backend {
    backend *next;          /* hash chain */
    char    *host;
    int      port;
    cconn   *idle;          /* most recently used first */
    size_t   nidle;
};

typedef enum { CC_CONNECTING, CC_ACTIVE, CC_IDLE, CC_CLOSED } cc_state;

struct cconn {
    uv_tcp_t        tcp;
    uv_timer_t      timer;          /* connect timeout, then idle timeout */
    uv_connect_t    connect;
    uv_write_t      write;
    kb_http_client *cl;
    backend        *be;
    cconn          *prev, *next;    /* every connection of the client */
    cconn          *inext, *iprev;  /* the backend's idle list */
    kb_http_client_call *call;
    kb_buf          rbuf;
    unsigned        open_handles;
    unsigned        nwrites;
    cc_state        state;
    bool            reused;         /* served a call before this one */
};

typedef struct resolver {
    uv_getaddrinfo_t     req;
    kb_http_client_call *call;      /* NULL once the call gave up on it */
} resolver;

typedef enum { PH_HEAD, PH_BODY } phase;

struct kb_http_client_call {
    kb_http_client     *cl;
    backend            *be;
    kb_http_client_call *prev, *next;
    uv_timer_t          deadline;
    kb_buf              out;        /* the request bytes */
    kb_http_client_cb   cb;
    void               *data;
    cconn              *conn;
    resolver           *res;
    struct sockaddr_storage addrs[MAX_ADDRS];
    int                 naddrs, addr_idx;
    /* response */
    kb_http_head        head;
    kb_http_field      *fields;
    kb_http_chunked     chunk;
    phase               phase;
    size_t              body_start; /* offset of the body in rbuf */
    size_t              body_len;   /* decoded body bytes */
    bool                got_bytes;  /* any response byte arrived */
    bool                idempotent;
    bool                head_req;
    bool                retried;
    bool                done;       /* finished or canceled */
};

struct kb_http_client {
    uv_loop_t          *loop;
    kb_http_client_opts opts;
    kb_http_limits      limits;
    backend            *buckets[BACKEND_BUCKETS];
    cconn              *conns;
    kb_http_client_call *calls;
    size_t              open_handles;
    bool                destroying;
};

static void call_finish(kb_http_client_call *call, int err,
                        const kb_http_client_res *res);
static int  call_connect(kb_http_client_call *call);
static void cconn_close(cconn *cc);
static void on_cread(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- client and backends ----------------------------------------------- */

static void
client_maybe_free(kb_http_client *cl)
{
    if (!cl->destroying || cl->open_handles > 0)
        return;
    for (size_t i = 0; i < BACKEND_BUCKETS; i++) {
        backend *b = cl->buckets[i], *next;
        for (; b != NULL; b = next) {
            next = b->next;
            free(b->host);
            free(b);
        }
    }
    free(cl);
}

static size_t
backend_hash(const char *host, int port)
{
    size_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)host; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (h ^ (size_t)port) % BACKEND_BUCKETS;
}

static backend *
backend_find(const kb_http_client *cl, const char *host, int port)
{
    backend *b = cl->buckets[backend_hash(host, port)];

    while (b != NULL && !(b->port == port && strcmp(b->host, host) == 0))
        b = b->next;
    return b;
}

static backend *
backend_get(kb_http_client *cl, const char *host, int port)
{
    backend *b = backend_find(cl, host, port);
    size_t h;

    if (b != NULL)
        return b;
    b = calloc(1, sizeof(*b));
    if (b == NULL || (b->host = strdup(host)) == NULL) {
        free(b);
        return NULL;
    }
    b->port = port;
    h = backend_hash(host, port);
    b->next = cl->buckets[h];
    cl->buckets[h] = b;
    return b;
}

int
kb_http_client_create(uv_loop_t *loop, const kb_http_client_opts *opts,
                      kb_http_client **out)
{
    kb_http_client *cl = calloc(1, sizeof(*cl));

    if (cl == NULL)
        return KB_ENOMEM;
    kb_http__ignore_sigpipe();
    cl->loop = loop;
    if (opts != NULL)
        cl->opts = *opts;
    if (cl->opts.max_idle_per_backend == 0)
        cl->opts.max_idle_per_backend = DEFAULT_MAX_IDLE;
    if (cl->opts.idle_timeout_ms == 0)
        cl->opts.idle_timeout_ms = DEFAULT_IDLE_MS;
    if (cl->opts.connect_timeout_ms == 0)
        cl->opts.connect_timeout_ms = DEFAULT_CONNECT_MS;
    if (cl->opts.max_body == 0)
        cl->opts.max_body = DEFAULT_MAX_BODY;
    if (cl->opts.max_head == 0)
        cl->opts.max_head = KB_HTTP_DEFAULT_MAX_HEAD;
    if (cl->opts.max_head > KB_HTTP_MAX_HEAD_CEILING)
        cl->opts.max_head = KB_HTTP_MAX_HEAD_CEILING;
    cl->limits.max_head = cl->opts.max_head;
    cl->limits.max_headers = KB_HTTP_DEFAULT_MAX_HEADERS;
    cl->limits.max_line = cl->opts.max_head;
    *out = cl;
    return 0;
}

size_t
kb_http_client_idle(const kb_http_client *c, const char *host, int port)
{
    const backend *b = backend_find(c, host, port);

    return b != NULL ? b->nidle : 0;
}

/* ---- connections --------------------------------------------------------- */

static void
idle_remove(cconn *cc)
{
    backend *b = cc->be;

    if (cc->iprev != NULL)
        cc->iprev->inext = cc->inext;
    else
        b->idle = cc->inext;
    if (cc->inext != NULL)
        cc->inext->iprev = cc->iprev;
    cc->inext = cc->iprev = NULL;
    b->nidle--;
}

static void
on_cconn_close(uv_handle_t *h)
{
    cconn *cc = h->data;
    kb_http_client *cl = cc->cl;

    cl->open_handles--;
    if (--cc->open_handles > 0)
        return;
    if (cc->prev != NULL)
        cc->prev->next = cc->next;
    else
        cl->conns = cc->next;
    if (cc->next != NULL)
        cc->next->prev = cc->prev;
    kb_buf_free(&cc->rbuf);
    free(cc);
    client_maybe_free(cl);
}

/* Close a connection; it must no longer be attached to a call. */
static void
cconn_close(cconn *cc)
{
    if (cc->state == CC_CLOSED)
        return;
    if (cc->state == CC_IDLE)
        idle_remove(cc);
    cc->state = CC_CLOSED;
    cc->call = NULL;
    uv_close((uv_handle_t *)&cc->tcp, on_cconn_close);
    uv_close((uv_handle_t *)&cc->timer, on_cconn_close);
}

static void
on_idle_timer(uv_timer_t *t)
{
    cconn_close(t->data);
}

/* Hand a connection that finished a call back to its pool, or close it. */
static void
cconn_release(cconn *cc, bool reusable)
{
    kb_http_client *cl = cc->cl;
    backend *b = cc->be;

    cc->call = NULL;
    if (cc->state != CC_ACTIVE)
        return;
    if (!reusable || cl->destroying || cc->nwrites > 0 ||
        b->nidle >= cl->opts.max_idle_per_backend) {
        cconn_close(cc);
        return;
    }
    kb_buf_free(&cc->rbuf);             /* idle connections hold no buffer */
    cc->state = CC_IDLE;
    cc->reused = true;
    cc->inext = b->idle;
    cc->iprev = NULL;
    if (b->idle != NULL)
        b->idle->iprev = cc;
    b->idle = cc;
    b->nidle++;
    uv_timer_start(&cc->timer, on_idle_timer, cl->opts.idle_timeout_ms, 0);
}

static cconn *
cconn_new(kb_http_client *cl, backend *b)
{
    cconn *cc = calloc(1, sizeof(*cc));

    if (cc == NULL)
        return NULL;
    cc->cl = cl;
    cc->be = b;
    kb_buf_init(&cc->rbuf, cl->opts.max_head + cl->opts.max_body + 2 * READ_CHUNK);
    uv_tcp_init(cl->loop, &cc->tcp);
    uv_timer_init(cl->loop, &cc->timer);
    cc->tcp.data = cc;
    cc->timer.data = cc;
    cc->open_handles = 2;
    cl->open_handles += 2;
    cc->next = cl->conns;
    if (cl->conns != NULL)
        cl->conns->prev = cc;
    cl->conns = cc;
    return cc;
}

/* ---- the exchange ---------------------------------------------------------- */

/* A connection failed under the call: retry when the stale rule allows. */
static void
call_conn_failed(kb_http_client_call *call, int err)
{
    cconn *cc = call->conn;
    bool stale = cc != NULL && cc->reused && !call->got_bytes;

    call->conn = NULL;
    if (cc != NULL)
        cconn_close(cc);
    if (stale && call->idempotent && !call->retried) {
        int rc;
        call->retried = true;
        kb_log_debug("http client: retrying on a fresh connection",
                     "{s:s, s:i}", "host", call->be->host, "port",
                     call->be->port);
        call->addr_idx = 0;
        rc = call_connect(call);
        if (rc == 0)
            return;
        err = rc;
    }
    call_finish(call, err, NULL);
}

static void
on_cwrite(uv_write_t *w, int status)
{
    cconn *cc = w->data;

    cc->nwrites--;
    if (cc->state == CC_CLOSED || status == 0 || cc->call == NULL)
        return;
    call_conn_failed(cc->call, status);
}

/* Send the call's request on its (connected) connection. */
static int
call_write(kb_http_client_call *call)
{
    cconn *cc = call->conn;
    uv_buf_t b = uv_buf_init(call->out.data, (unsigned)call->out.len);
    int rc = uv_try_write((uv_stream_t *)&cc->tcp, &b, 1);

    if (rc == (int)call->out.len)
        return 0;
    if (rc < 0 && rc != UV_EAGAIN)
        return rc;
    if (rc > 0) {
        b.base += rc;
        b.len -= (size_t)rc;
    }
    cc->write.data = cc;
    rc = uv_write(&cc->write, (uv_stream_t *)&cc->tcp, &b, 1, on_cwrite);
    if (rc == 0)
        cc->nwrites++;
    return rc;
}

static void
on_cconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    cconn *cc = h->data;
    kb_buf *b = &cc->rbuf;
    size_t room = b->max - b->len;
    size_t want = room < READ_CHUNK ? room : READ_CHUNK;

    if (cc->state == CC_IDLE)
        want = 64;                      /* only EOF or junk expected */
    if (want == 0 || kb_buf_reserve(b, want) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(b->data + b->len, (unsigned)want);
}

static void
on_connect_timer(uv_timer_t *t)
{
    cconn *cc = t->data;
    kb_http_client_call *call = cc->call;

    if (call == NULL) {
        cconn_close(cc);
        return;
    }
    call->conn = NULL;
    cconn_close(cc);
    call_finish(call, KB_ETIMEDOUT, NULL);
}

static void
on_connect(uv_connect_t *req, int status)
{
    cconn *cc = req->data;
    kb_http_client_call *call = cc->call;
    int rc;

    if (cc->state == CC_CLOSED || call == NULL)
        return;
    if (status < 0) {
        call->conn = NULL;
        cconn_close(cc);
        if (++call->addr_idx < call->naddrs && call_connect(call) == 0)
            return;
        call_finish(call, status, NULL);
        return;
    }
    uv_timer_stop(&cc->timer);
    cc->state = CC_ACTIVE;
    uv_tcp_nodelay(&cc->tcp, 1);
    rc = uv_read_start((uv_stream_t *)&cc->tcp, on_cconn_alloc, on_cread);
    if (rc == 0)
        rc = call_write(call);
    if (rc != 0) {
        call->conn = NULL;
        cconn_close(cc);
        call_finish(call, rc, NULL);
    }
}

/* Open a new connection to call->addrs[call->addr_idx]. */
static int
call_connect_addr(kb_http_client_call *call)
{
    kb_http_client *cl = call->cl;
    cconn *cc = cconn_new(cl, call->be);
    int rc;

    if (cc == NULL)
        return KB_ENOMEM;
    cc->state = CC_CONNECTING;
    cc->call = call;
    call->conn = cc;
    cc->connect.data = cc;
    rc = uv_tcp_connect(&cc->connect, &cc->tcp,
                        (struct sockaddr *)&call->addrs[call->addr_idx],
                        on_connect);
    if (rc != 0) {
        call->conn = NULL;
        cconn_close(cc);
        return rc;
    }
    uv_timer_start(&cc->timer, on_connect_timer, cl->opts.connect_timeout_ms, 0);
    return 0;
}

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    resolver *r = req->data;
    kb_http_client_call *call = r->call;
    int rc;

    free(r);
    if (call == NULL) {                 /* canceled or timed out meanwhile */
        uv_freeaddrinfo(ai);
        return;
    }
    call->res = NULL;
    call->naddrs = 0;
    for (struct addrinfo *a = ai; a != NULL && call->naddrs < MAX_ADDRS;
         a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
            continue;
        memcpy(&call->addrs[call->naddrs++], a->ai_addr, a->ai_addrlen);
    }
    uv_freeaddrinfo(ai);
    if (status < 0 || call->naddrs == 0) {
        kb_log_debug("http client: cannot resolve", "{s:s, s:s}", "host",
                     call->be->host, "error",
                     status < 0 ? uv_strerror(status) : "no address");
        call_finish(call, KB_EUNAVAIL, NULL);
        return;
    }
    call->addr_idx = 0;
    rc = call_connect_addr(call);
    if (rc != 0)
        call_finish(call, rc, NULL);
}

/*
 * Get a fresh connection for the call: from the literal address, from an
 * earlier resolution, or by resolving the host on the thread pool first.
 */
static int
call_connect(kb_http_client_call *call)
{
    kb_http_client *cl = call->cl;
    backend *b = call->be;
    struct addrinfo hints;
    char port[8];
    resolver *r;
    int rc;

    while (call->naddrs > 0 && call->addr_idx < call->naddrs) {
        rc = call_connect_addr(call);
        if (rc == 0)
            return 0;
        call->addr_idx++;
    }
    if (call->naddrs > 0)
        return KB_EUNAVAIL;
    if (uv_ip4_addr(b->host, b->port, (struct sockaddr_in *)&call->addrs[0]) == 0 ||
        uv_ip6_addr(b->host, b->port, (struct sockaddr_in6 *)&call->addrs[0]) == 0) {
        call->naddrs = 1;
        call->addr_idx = 0;
        return call_connect_addr(call);
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return KB_ENOMEM;
    r->call = call;
    r->req.data = r;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", b->port);
    rc = uv_getaddrinfo(cl->loop, &r->req, on_resolved, b->host, port, &hints);
    if (rc != 0) {
        free(r);
        return rc;
    }
    call->res = r;
    return 0;
}

/* Start (or restart) the exchange: an idle pooled connection first. */
static int
call_start(kb_http_client_call *call)
{
    backend *b = call->be;
    cconn *cc = b->idle;
    int rc;

    while (cc != NULL) {
        idle_remove(cc);
        uv_timer_stop(&cc->timer);
        cc->state = CC_ACTIVE;
        cc->call = call;
        call->conn = cc;
        rc = call_write(call);
        if (rc == 0)
            return 0;
        call->conn = NULL;
        cconn_close(cc);
        cc = b->idle;
    }
    return call_connect(call);
}

/* Deliver the complete response in cc->rbuf and release the connection. */
static void
call_complete(kb_http_client_call *call, bool reusable)
{
    cconn *cc = call->conn;
    kb_http_client *cl = call->cl;
    char *base = cc->rbuf.data;
    kb_http_header *hdrs = NULL;
    kb_http_client_res res;

    if (call->head.nfields > 0) {
        hdrs = malloc(call->head.nfields * sizeof(*hdrs));
        if (hdrs == NULL) {
            call->conn = NULL;
            cconn_close(cc);
            call_finish(call, KB_ENOMEM, NULL);
            return;
        }
    }
    for (size_t i = 0; i < call->head.nfields; i++) {
        kb_http_field *f = &call->fields[i];
        base[f->name.off + f->name.len] = '\0';
        base[f->value.off + f->value.len] = '\0';
        hdrs[i].name = base + f->name.off;
        hdrs[i].value = base + f->value.off;
    }
    base[call->body_start + call->body_len] = '\0';
    res.status = call->head.status;
    res.version_minor = call->head.version_minor;
    res.headers = hdrs;
    res.nheaders = call->head.nfields;
    res.body = base + call->body_start;
    res.body_len = call->body_len;

    /* Keep the connection out of any pool until the callback is done. */
    call->conn = NULL;
    cc->call = NULL;
    call_finish(call, 0, &res);
    free(hdrs);
    if (!cl->destroying)
        cconn_release(cc, reusable);
    else
        cconn_close(cc);
}

/*
 * Frame the response bytes in cc->rbuf.  Returns true when the call is
 * over (delivered or failed).  eof: the peer closed its side.
 */
static bool
call_parse(kb_http_client_call *call, bool eof)
{
    cconn *cc = call->conn;
    kb_http_client *cl = call->cl;
    kb_buf *b = &cc->rbuf;
    unsigned fl;

    while (call->phase == PH_HEAD) {
        int rc = kb_http_parse_response(&call->head, b->data, b->len,
                                        &cl->limits);
        if (rc == KB_EAGAIN)
            return false;
        if (rc < 0) {
            call->conn = NULL;
            cconn_close(cc);
            call_finish(call, rc == KB_ETOOBIG ? KB_ETOOBIG : KB_EPARSE, NULL);
            return true;
        }
        if (call->head.status >= 100 && call->head.status < 200) {
            if (call->head.status == 101) {
                call->conn = NULL;
                cconn_close(cc);
                call_finish(call, KB_EPARSE, NULL);
                return true;
            }
            kb_buf_consume(b, (size_t)rc);      /* interim: skip it */
            kb_http_head_init(&call->head, call->fields,
                              KB_HTTP_DEFAULT_MAX_HEADERS);
            continue;
        }
        call->phase = PH_BODY;
        call->body_start = (size_t)rc;
        call->body_len = 0;
        fl = call->head.flags;
        if (fl & KB_HTTP_CHUNKED)
            kb_http_chunked_init(&call->chunk, cl->opts.max_body);
        if ((fl & KB_HTTP_HAS_LENGTH) &&
            call->head.content_length > cl->opts.max_body) {
            call->conn = NULL;
            cconn_close(cc);
            call_finish(call, KB_ETOOBIG, NULL);
            return true;
        }
    }

    fl = call->head.flags;
    if (call->head_req || call->head.status == 204 || call->head.status == 304) {
        call_complete(call, (fl & KB_HTTP_KEEP_ALIVE) &&
                                b->len == call->body_start);
        return true;
    }
    if (fl & KB_HTTP_CHUNKED) {
        size_t from = call->body_start + call->body_len;
        size_t used, out;
        int rc = kb_http_chunked_decode(&call->chunk, b->data + from,
                                        b->len - from, &used,
                                        b->data + from, &out);
        bool extra = from + used < b->len;
        call->body_len += out;
        if (rc == KB_EAGAIN) {
            b->len = call->body_start + call->body_len;
            if (!eof)
                return false;
        }
        if (rc == 0) {
            call_complete(call, (fl & KB_HTTP_KEEP_ALIVE) && !extra);
            return true;
        }
        call->conn = NULL;
        cconn_close(cc);
        call_finish(call, rc == KB_ETOOBIG ? KB_ETOOBIG
                          : rc == KB_EAGAIN ? -ECONNRESET : KB_EPARSE, NULL);
        return true;
    }
    if (fl & KB_HTTP_HAS_LENGTH) {
        size_t have = b->len - call->body_start;
        if (have >= call->head.content_length) {
            call->body_len = (size_t)call->head.content_length;
            call_complete(call, (fl & KB_HTTP_KEEP_ALIVE) &&
                                    have == call->head.content_length);
            return true;
        }
        if (!eof)
            return false;
        call->conn = NULL;
        cconn_close(cc);
        call_finish(call, -ECONNRESET, NULL);
        return true;
    }
    /* No framing: the body ends when the server closes. */
    call->body_len = b->len - call->body_start;
    if (call->body_len > cl->opts.max_body) {
        call->conn = NULL;
        cconn_close(cc);
        call_finish(call, KB_ETOOBIG, NULL);
        return true;
    }
    if (!eof)
        return false;
    call_complete(call, false);
    return true;
}

static void
on_cread(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    cconn *cc = s->data;
    kb_http_client_call *call = cc->call;

    if (cc->state == CC_CLOSED || nread == 0)
        return;
    if (call == NULL) {
        /* idle: EOF, an error, or bytes nobody asked for all end it */
        cconn_close(cc);
        return;
    }
    if (nread > 0) {
        cc->rbuf.len += (size_t)nread;
        cc->rbuf.data[cc->rbuf.len] = '\0';
        call->got_bytes = true;
        call_parse(call, false);
        return;
    }
    if (nread == UV_ENOBUFS) {
        call->conn = NULL;
        cconn_close(cc);
        call_finish(call, KB_ETOOBIG, NULL);
        return;
    }
    if (nread == UV_EOF && call->got_bytes) {
        call_parse(call, true);
        return;
    }
    /* closed or reset before any byte of the response */
    call_conn_failed(call, nread == UV_EOF ? -ECONNRESET : (int)nread);
}

/* ---- calls ----------------------------------------------------------------- */

static void
on_call_closed(uv_handle_t *h)
{
    kb_http_client_call *call = h->data;
    kb_http_client *cl = call->cl;

    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        cl->calls = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    kb_buf_free(&call->out);
    free(call->fields);
    free(call);
    cl->open_handles--;
    client_maybe_free(cl);
}

/* Give up everything the call holds (connection, resolution, timer). */
static void
call_detach(kb_http_client_call *call)
{
    call->done = true;
    if (call->conn != NULL) {
        cconn *cc = call->conn;
        call->conn = NULL;
        cconn_close(cc);
    }
    if (call->res != NULL) {
        call->res->call = NULL;         /* its callback frees it */
        uv_cancel((uv_req_t *)&call->res->req);
        call->res = NULL;
    }
    uv_close((uv_handle_t *)&call->deadline, on_call_closed);
}

static void
call_finish(kb_http_client_call *call, int err, const kb_http_client_res *res)
{
    if (call->done)
        return;
    call_detach(call);
    call->cb(err, err == 0 ? res : NULL, call->data);
}

static void
on_deadline(uv_timer_t *t)
{
    call_finish(t->data, KB_ETIMEDOUT, NULL);
}

static bool
is_token(const char *s)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~";

    if (s == NULL || *s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' &&
              (*p | 0x20) <= 'z') || strchr(tchars, *p) != NULL))
            return false;
    return true;
}

/* Visible ASCII only (request target, host). */
static bool
is_visible(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

static bool
value_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* The request bytes: head with Host and Content-Length, then the body. */
static int
build_request(kb_buf *out, const kb_http_client_req *req)
{
    bool has_host = false;
    int rc;

    rc = kb_buf_appendf(out, "%s %s HTTP/1.1\r\n", req->method, req->target);
    for (size_t i = 0; rc == 0 && i < req->nheaders; i++) {
        const kb_http_header *h = &req->headers[i];
        if (!is_token(h->name) || h->value == NULL || !value_ok(h->value))
            return KB_EINVAL;
        if (strcasecmp(h->name, "content-length") == 0 ||
            strcasecmp(h->name, "transfer-encoding") == 0 ||
            strcasecmp(h->name, "connection") == 0)
            continue;
        if (strcasecmp(h->name, "host") == 0)
            has_host = true;
        rc = kb_buf_appendf(out, "%s: %s\r\n", h->name, h->value);
    }
    if (rc == 0 && !has_host)
        rc = kb_buf_appendf(out, strchr(req->host, ':') != NULL
                                     ? "Host: [%s]:%d\r\n" : "Host: %s:%d\r\n",
                            req->host, req->port);
    if (rc == 0 && (req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
                    strcmp(req->method, "PUT") == 0 ||
                    strcmp(req->method, "PATCH") == 0))
        rc = kb_buf_appendf(out, "Content-Length: %zu\r\n", req->body_len);
    if (rc == 0)
        rc = kb_buf_append(out, "\r\n", 2);
    if (rc == 0 && req->body_len > 0)
        rc = kb_buf_append(out, req->body, req->body_len);
    return rc;
}

int
kb_http_client_send(kb_http_client *c, const kb_http_client_req *req,
                    kb_http_client_cb cb, void *data,
                    kb_http_client_call **out)
{
    static const char *const idempotent[] = {
        "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE" };
    kb_http_client_call *call;
    int rc;

    if (c->destroying)
        return KB_ECANCELED;
    if (req == NULL || cb == NULL || !is_token(req->method) ||
        !is_visible(req->target) || !is_visible(req->host) ||
        strchr(req->host, '/') != NULL || req->port <= 0 ||
        req->port > 65535 || (req->body_len > 0 && req->body == NULL) ||
        req->body_len > INT32_MAX / 2)
        return KB_EINVAL;
    call = calloc(1, sizeof(*call));
    if (call == NULL)
        return KB_ENOMEM;
    call->cl = c;
    call->cb = cb;
    call->data = data;
    kb_buf_init(&call->out, req->body_len + (1u << 20));
    call->fields = malloc(KB_HTTP_DEFAULT_MAX_HEADERS * sizeof(*call->fields));
    call->be = backend_get(c, req->host, req->port);
    if (call->fields == NULL || call->be == NULL) {
        rc = KB_ENOMEM;
        goto out_free;
    }
    rc = build_request(&call->out, req);
    if (rc != 0)
        goto out_free;
    for (size_t i = 0; i < sizeof(idempotent) / sizeof(idempotent[0]); i++)
        if (strcmp(req->method, idempotent[i]) == 0)
            call->idempotent = true;
    call->head_req = strcmp(req->method, "HEAD") == 0;
    kb_http_head_init(&call->head, call->fields, KB_HTTP_DEFAULT_MAX_HEADERS);

    uv_timer_init(c->loop, &call->deadline);
    call->deadline.data = call;
    c->open_handles++;
    call->next = c->calls;
    if (c->calls != NULL)
        c->calls->prev = call;
    c->calls = call;
    uv_timer_start(&call->deadline, on_deadline,
                   req->timeout_ms ? req->timeout_ms : DEFAULT_CALL_MS, 0);
    rc = call_start(call);
    if (rc != 0) {
        call_detach(call);              /* freed in the close callback */
        return rc;
    }
    if (out != NULL)
        *out = call;
    return 0;

out_free:
    kb_buf_free(&call->out);
    free(call->fields);
    free(call);
    return rc;
}

void
kb_http_client_cancel(kb_http_client_call *call)
{
    if (call != NULL && !call->done)
        call_detach(call);
}

void
kb_http_client_destroy(kb_http_client *c)
{
    kb_http_client_call *call;

    if (c == NULL || c->destroying)
        return;
    c->destroying = true;
    /* Callbacks may cancel other calls: look for a live one each time. */
    for (;;) {
        for (call = c->calls; call != NULL && call->done; call = call->next)
            ;
        if (call == NULL)
            break;
        call_finish(call, KB_ECANCELED, NULL);
    }
    for (cconn *cc = c->conns; cc != NULL; cc = cc->next)
        cconn_close(cc);
    client_maybe_free(c);
}

const char *
kb_http_client_res_header(const kb_http_client_res *res, const char *name)
{
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    return NULL;
}
