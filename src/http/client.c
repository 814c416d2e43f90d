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
#define READ_FIRST            (16u * 1024)   /* first read buffer (cap) */
#define READ_CHUNK            (64u * 1024)   /* then grow by */
#define MAX_FREE_CALLS        128u           /* recycled call objects */
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

/* A call's fields and headers arrays share one allocation. */
_Static_assert(sizeof(kb_http_field) % _Alignof(kb_http_header) == 0,
               "headers follow fields in one block");

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
    kb_http_client_call *next_free; /* in the client's free list */
    /* response */
    kb_http_head        head;
    kb_http_field      *fields;     /* KB_HTTP_DEFAULT_MAX_HEADERS */
    kb_http_header     *hdrs;       /* as many, for the callback */
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
    kb_http_client_call *free_calls; /* finished calls kept for reuse */
    size_t              nfree_calls;
    size_t              open_handles;
    bool                destroying;
};

static void call_finish(kb_http_client_call *call, int err,
                        const kb_http_client_res *res);
static int  call_connect(kb_http_client_call *call);
static void cconn_close(cconn *cc);
static void on_cread(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void call_free(kb_http_client_call *call);

/* ---- client and backends ----------------------------------------------- */

static void
client_maybe_free(kb_http_client *cl)
{
    if (!cl->destroying || cl->open_handles > 0)
        return;
    while (cl->free_calls != NULL) {
        kb_http_client_call *call = cl->free_calls;
        cl->free_calls = call->next_free;
        call_free(call);
    }
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
    size_t want;

    /* A first buffer of READ_FIRST bytes (a size buf.c recycles), then
     * READ_CHUNK more at a time; idle: only EOF or junk expected. */
    if (cc->state == CC_IDLE)
        want = 64;
    else if (b->cap == 0)
        want = READ_FIRST - 1;
    else if (b->cap - b->len - 1 >= 1024)
        want = b->cap - b->len - 1;
    else
        want = READ_CHUNK;
    if (want > room)
        want = room;
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
    kb_http_header *hdrs = call->hdrs;
    kb_http_client_res res = { 0 };

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
    res.trailers = NULL;
    res.ntrailers = 0;

    /* Keep the connection out of any pool until the callback is done. */
    call->conn = NULL;
    cc->call = NULL;
    call_finish(call, 0, &res);
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
    cl->open_handles--;
    if (!cl->destroying && cl->nfree_calls < MAX_FREE_CALLS) {
        /* keep it (and its arrays) for the next call: handles are only
         * valid until the callback, so nobody refers to it any more */
        if (call->out.cap > 4096)
            kb_buf_free(&call->out);
        call->next_free = cl->free_calls;
        cl->free_calls = call;
        cl->nfree_calls++;
        return;
    }
    call_free(call);
    client_maybe_free(cl);
}

static void
call_free(kb_http_client_call *call)
{
    kb_buf_free(&call->out);
    free(call->fields);
    free(call);
}

/* A call object with its arrays, recycled when one is free; NULL when out
 * of memory.  Everything but the arrays and the out buffer is zero. */
static kb_http_client_call *
call_alloc(kb_http_client *c)
{
    kb_http_client_call *call = c->free_calls;
    kb_buf out;
    kb_http_field *fields;

    if (call != NULL) {
        c->free_calls = call->next_free;
        c->nfree_calls--;
        out = call->out;
        fields = call->fields;
        memset(call, 0, sizeof(*call));
        call->out = out;
        kb_buf_reset(&call->out);
        call->fields = fields;
        call->hdrs = (kb_http_header *)(fields + KB_HTTP_DEFAULT_MAX_HEADERS);
        return call;
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL)
        return NULL;
    /* one block: the parser's fields, then the callback's headers */
    call->fields = malloc(KB_HTTP_DEFAULT_MAX_HEADERS *
                          (sizeof(kb_http_field) + sizeof(kb_http_header)));
    if (call->fields == NULL) {
        free(call);
        return NULL;
    }
    call->hdrs = (kb_http_header *)(call->fields + KB_HTTP_DEFAULT_MAX_HEADERS);
    return call;
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

/* Case-insensitive: name (n bytes) equals the lower-case literal. */
static bool
name_is(const char *name, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((char)((unsigned char)name[i] | 0x20) != lit[i])
            return false;
    return true;
}
#define NAME_IS(name, n, lit) name_is((name), (n), lit, sizeof(lit) - 1)

/* Request headers the client sets itself: 1 Host, -1 dropped, 0 other. */
static int
header_kind(const char *name, size_t n)
{
    switch (n) {
    case 4:
        return NAME_IS(name, n, "host") ? 1 : 0;
    case 10:
        return NAME_IS(name, n, "connection") ? -1 : 0;
    case 14:
        return NAME_IS(name, n, "content-length") ? -1 : 0;
    case 17:
        return NAME_IS(name, n, "transfer-encoding") ? -1 : 0;
    default:
        return 0;
    }
}

/* Decimal digits of v into the end of buf[20]; returns the first digit. */
static char *
utoa(uint64_t v, char *end)
{
    char *p = end;

    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    return p;
}

static char *
put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/*
 * The request bytes: head with Host and Content-Length, then the body.
 * Assembled without printf: one pass checks the headers and sums the
 * length, one reservation, one pass copies.
 */
static int
build_request(kb_buf *out, const kb_http_client_req *req)
{
    size_t mlen = strlen(req->method), tlen = strlen(req->target);
    size_t hostlen = strlen(req->host), total;
    bool has_host = false, bracket = strchr(req->host, ':') != NULL;
    bool clen = req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
                strcmp(req->method, "PUT") == 0 ||
                strcmp(req->method, "PATCH") == 0;
    char port[20], len[20], *pe = port + sizeof(port), *le = len + sizeof(len);
    char *ps = utoa((uint64_t)req->port, pe), *ls = utoa(req->body_len, le);
    char *p;
    int rc;

    total = mlen + 1 + tlen + sizeof(" HTTP/1.1\r\n") - 1;
    for (size_t i = 0; i < req->nheaders; i++) {
        const kb_http_header *h = &req->headers[i];
        size_t nlen = kb_http_token_len(h->name), vlen;
        int kind;
        if (nlen == 0 || h->value == NULL ||
            (vlen = kb_http_value_len(h->value)) == SIZE_MAX)
            return KB_EINVAL;
        kind = header_kind(h->name, nlen);
        if (kind < 0)
            continue;
        has_host |= kind == 1;
        total += nlen + 2 + vlen + 2;
    }
    if (!has_host)
        total += sizeof("Host: []:\r\n") - 1 + hostlen + (size_t)(pe - ps);
    if (clen)
        total += sizeof("Content-Length: \r\n") - 1 + (size_t)(le - ls);
    total += 2 + req->body_len;
    if ((rc = kb_buf_reserve(out, total)) != 0)
        return rc;

    p = out->data + out->len;
    p = put(p, req->method, mlen);
    *p++ = ' ';
    p = put(p, req->target, tlen);
    p = put(p, " HTTP/1.1\r\n", 11);
    for (size_t i = 0; i < req->nheaders; i++) {
        const kb_http_header *h = &req->headers[i];
        size_t nlen = strlen(h->name);
        if (header_kind(h->name, nlen) < 0)
            continue;
        p = put(p, h->name, nlen);
        *p++ = ':';
        *p++ = ' ';
        p = put(p, h->value, strlen(h->value));
        *p++ = '\r';
        *p++ = '\n';
    }
    if (!has_host) {
        p = put(p, "Host: ", 6);
        if (bracket)
            *p++ = '[';
        p = put(p, req->host, hostlen);
        if (bracket)
            *p++ = ']';
        *p++ = ':';
        p = put(p, ps, (size_t)(pe - ps));
        *p++ = '\r';
        *p++ = '\n';
    }
    if (clen) {
        p = put(p, "Content-Length: ", 16);
        p = put(p, ls, (size_t)(le - ls));
        *p++ = '\r';
        *p++ = '\n';
    }
    *p++ = '\r';
    *p++ = '\n';
    if (req->body_len > 0)
        p = put(p, req->body, req->body_len);
    out->len = (size_t)(p - out->data);
    out->data[out->len] = '\0';
    return 0;
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
    if (req == NULL || cb == NULL || kb_http_token_len(req->method) == 0 ||
        !kb_http_visible(req->target) || !kb_http_visible(req->host) ||
        strchr(req->host, '/') != NULL || req->port <= 0 ||
        req->port > 65535 || (req->body_len > 0 && req->body == NULL) ||
        req->body_len > INT32_MAX / 2)
        return KB_EINVAL;
    call = call_alloc(c);
    if (call == NULL)
        return KB_ENOMEM;
    call->cl = c;
    call->cb = cb;
    call->data = data;
    call->out.max = req->body_len + (1u << 20);
    call->be = backend_get(c, req->host, req->port);
    if (call->be == NULL) {
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
    call_free(call);
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
