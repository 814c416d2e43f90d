/*
 * test_http_server.c - the HTTP/1.1 server (src/http/server.c) over real
 * loopback TCP: the server's loop runs in a thread, the test talks raw
 * HTTP to it with blocking sockets and checks every byte that comes back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/metrics.h"
#include "http/parser.h"
#include "http/server.h"

/* ---- the server side (loop thread) ------------------------------------- */

static uv_loop_t       loop;
static uv_async_t      stop_async;
static pthread_t       loop_thread;
static kb_http_server *srv;
static int             port;
static atomic_int      aborts;        /* on_abort calls */
static atomic_int      handled;       /* handler calls */
static atomic_int      done_calls;    /* shutdown done() calls */
static atomic_size_t   inflight_seen;

typedef struct delayed {
    uv_timer_t   timer;
    kb_http_req *req;
} delayed;

static void
delayed_close(uv_handle_t *h)
{
    free(h->data);
}

static void
delayed_fire(uv_timer_t *t)
{
    delayed *d = t->data;

    kb_http_respond(d->req, 200, NULL, 0, "late", 4);
    uv_close((uv_handle_t *)&d->timer, delayed_close);
}

static void
respond_later(kb_http_req *req, uint64_t ms)
{
    delayed *d = calloc(1, sizeof(*d));

    d->req = req;
    uv_timer_init(&loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, delayed_fire, ms, 0);
}

static void
on_abort_respond(kb_http_req *req, void *data)
{
    atomic_fetch_add(&aborts, 1);
    kb_http_respond(req, 499, NULL, 0, NULL, 0);    /* only releases it */
}

static void
on_abort_count(kb_http_req *req, void *data)
{
    atomic_fetch_add(&aborts, 1);
}

static void
on_done(void *data)
{
    atomic_fetch_add(&done_calls, 1);
}

static void
handler(kb_http_req *req, void *data)
{
    const char *p = req->path;

    atomic_fetch_add(&handled, 1);
    if (strcmp(p, "/hello") == 0) {
        kb_http_header h[] = { { "X-Test", "yes" }, { "Content-Length", "99" },
                               { "Bad", "a\r\nInjected: 1" } };
        kb_http_respond(req, 200, h, 3, "hello", 5);
    } else if (strcmp(p, "/echo") == 0) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", req->body_len);
        kb_http_header h[] = { { "X-Body-Len", n } };
        kb_http_respond(req, 200, h, 1, req->body, req->body_len);
    } else if (strcmp(p, "/query") == 0) {
        const char *a = kb_http_req_query(req, "a");
        const char *b = kb_http_req_query(req, "b c");
        char out[256];
        int n = snprintf(out, sizeof(out), "a=%s;b c=%s;z=%s", a ? a : "(null)",
                         b ? b : "(null)",
                         kb_http_req_query(req, "z") ? "set" : "(null)");
        kb_http_respond(req, 200, NULL, 0, out, (size_t)n);
    } else if (strcmp(p, "/json") == 0) {
        kb_http_respond_json(req, 201, json_pack("{s:s}", "name", "x"));
    } else if (strcmp(p, "/missing") == 0) {
        kb_http_respond_error(req, 404, "no such thing");
    } else if (strcmp(p, "/stream") == 0) {
        kb_http_response_start(req, 200, NULL, 0);
        kb_http_response_write(req, "abc", 3);
        kb_http_response_write(req, "", 0);
        kb_http_response_write(req, "defgh", 5);
        kb_http_response_end(req);
    } else if (strcmp(p, "/pending") == 0) {
        kb_http_req_on_abort(req, on_abort_respond, NULL);
    } else if (strcmp(p, "/pending-late") == 0) {
        /* the abort hook does not answer; a timer does, afterwards */
        kb_http_req_on_abort(req, on_abort_count, NULL);
        respond_later(req, 300);
    } else if (strcmp(p, "/slow") == 0) {
        respond_later(req, 200);
    } else if (strcmp(p, "/shutdown") == 0) {
        respond_later(req, 200);
        atomic_store(&inflight_seen, kb_http_server_inflight(srv));
        kb_http_server_shutdown(srv, 5000, on_done, NULL);
    } else {
        kb_http_respond_error(req, 404, "not found");
    }
}

static void
on_stop(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    if (atomic_load(&done_calls) == 0)
        kb_http_server_shutdown(srv, 0, on_done, NULL);
}

static void *
loop_main(void *arg)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static void
server_up(const kb_http_server_opts *extra)
{
    kb_http_server_opts o = { .name = "test", .handler = handler };

    if (extra != NULL)
        o = *extra;
    o.handler = handler;
    atomic_store(&aborts, 0);
    atomic_store(&handled, 0);
    atomic_store(&done_calls, 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(kb_http_server_start(&loop, "127.0.0.1:0", &o, &srv), 0);
    port = kb_http_server_port(srv);
    assert_true(port > 0);
    uv_async_init(&loop, &stop_async, on_stop);
    pthread_create(&loop_thread, NULL, loop_main, NULL);
}

static void
server_down(void)
{
    uv_async_send(&stop_async);
    pthread_join(loop_thread, NULL);
    assert_int_equal(atomic_load(&done_calls), 1);
    assert_int_equal(uv_loop_close(&loop), 0);    /* every handle closed */
}

/* ---- the client side (test thread) ------------------------------------- */

typedef struct cli {
    int    fd;
    size_t len;
    char   buf[1 << 20];
} cli;

typedef struct resp {
    int    status;
    char   head[8192];
    kb_http_head h;
    kb_http_field f[64];
    char  *body;
    size_t body_len;
} resp;

static cli *
cli_open(void)
{
    cli *c = calloc(1, sizeof(*c));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { .tv_sec = 5 };

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return c;
}

static void
cli_close(cli *c)
{
    close(c->fd);
    free(c);
}

static void
cli_send_n(cli *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

static void
cli_send(cli *c, const char *s)
{
    cli_send_n(c, s, strlen(s));
}

/* More bytes into c->buf; false on EOF, error or timeout. */
static bool
cli_fill(cli *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len - 1, 0);

    if (n <= 0)
        return false;
    c->len += (size_t)n;
    return true;
}

static bool
cli_eof(cli *c)
{
    return c->len == 0 && recv(c->fd, c->buf, 1, 0) == 0;
}

static const char *
resp_header(resp *r, const char *name)
{
    static char v[1024];
    for (size_t i = 0; i < r->h.nfields; i++)
        if (kb_http_span_eq(r->head, r->f[i].name, name)) {
            snprintf(v, sizeof(v), "%.*s", (int)r->f[i].value.len,
                     r->head + r->f[i].value.off);
            return v;
        }
    return NULL;
}

/* Read one response (1xx ones too).  no_body for HEAD requests. */
static int
cli_read(cli *c, resp *r, bool no_body)
{
    int n;

    free(r->body);
    memset(r, 0, sizeof(*r));
    kb_http_head_init(&r->h, r->f, 64);
    while ((n = kb_http_parse_response(&r->h, c->buf, c->len, NULL)) == KB_EAGAIN)
        if (!cli_fill(c))
            return -1;
    assert_true(n > 0);
    memcpy(r->head, c->buf, (size_t)n);
    memmove(c->buf, c->buf + n, c->len - (size_t)n);
    c->len -= (size_t)n;
    r->status = r->h.status;
    r->body = calloc(1, 1 << 20);
    if (no_body || r->status < 200 || r->status == 204 || r->status == 304)
        return 0;
    if (r->h.flags & KB_HTTP_HAS_LENGTH) {
        while (c->len < r->h.content_length)
            if (!cli_fill(c))
                return -1;
        r->body_len = r->h.content_length;
        memcpy(r->body, c->buf, r->body_len);
        memmove(c->buf, c->buf + r->body_len, c->len - r->body_len);
        c->len -= r->body_len;
    } else if (r->h.flags & KB_HTTP_CHUNKED) {
        kb_http_chunked d;
        size_t used, out;
        kb_http_chunked_init(&d, 0);
        for (;;) {
            int rc = kb_http_chunked_decode(&d, c->buf, c->len, &used,
                                            r->body + r->body_len, &out);
            r->body_len += out;
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            if (rc == 0)
                break;
            assert_int_equal(rc, KB_EAGAIN);
            if (!cli_fill(c))
                return -1;
        }
    } else {
        while (cli_fill(c))
            ;
        r->body_len = c->len;
        memcpy(r->body, c->buf, c->len);
        c->len = 0;
    }
    return 0;
}

static void
resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* ---- tests --------------------------------------------------------------- */

static void
test_keepalive_two_requests(void **state)
{
    resp r = { 0 };
    cli *c;

    server_up(NULL);
    c = cli_open();
    cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 5);
    assert_memory_equal(r.body, "hello", 5);
    assert_string_equal(resp_header(&r, "X-Test"), "yes");
    assert_string_equal(resp_header(&r, "Content-Length"), "5");
    assert_non_null(resp_header(&r, "Date"));
    assert_null(resp_header(&r, "Connection"));
    assert_null(resp_header(&r, "Injected"));     /* no header injection */
    assert_null(resp_header(&r, "Bad"));
    assert_true(r.h.flags & KB_HTTP_KEEP_ALIVE);

    cli_send(c, "GET /json HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 201);
    assert_string_equal(resp_header(&r, "Content-Type"), "application/json");
    assert_string_equal(r.body, "{\"name\":\"x\"}");

    /* HTTP/1.0 keep-alive is answered with Connection: keep-alive */
    cli_send(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_string_equal(resp_header(&r, "Connection"), "keep-alive");
    /* HTTP/1.0 without it: answered, then closed */
    cli_send(c, "GET /hello HTTP/1.0\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Connection"), "close");
    assert_true(cli_eof(c));
    resp_free(&r);
    cli_close(c);
    assert_int_equal(atomic_load(&handled), 4);
    server_down();
}

static void
test_pipelining_in_order(void **state)
{
    resp r = { 0 };
    cli *c;

    server_up(NULL);
    c = cli_open();
    cli_send(c, "GET /query?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
                "GET /query?a=3&b+c=%41%2b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_string_equal(r.body, "a=1;b c=(null);z=(null)");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_string_equal(r.body, "xyz");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_string_equal(r.body, "a=3;b c=A+;z=(null)");
    /* and the connection is still good afterwards */
    cli_send(c, "GET /query?z HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_string_equal(r.body, "a=(null);b c=(null);z=set");
    resp_free(&r);
    cli_close(c);
    server_down();
}

static void
test_chunked_request_echoed(void **state)
{
    resp r = { 0 };
    cli *c;

    server_up(NULL);
    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5;ext=1\r\nhello\r\n");
    usleep(50000);                       /* the body arrives in pieces */
    cli_send(c, "6\r\n world\r\n0\r\nTrailer: yes\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "X-Body-Len"), "11");
    assert_string_equal(r.body, "hello world");

    /* a large Content-Length body sent in pieces */
    {
        static char big[200000];
        char head[128];
        memset(big, 'q', sizeof(big));
        snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nHost: x\r\n"
                 "Content-Length: %zu\r\n\r\n", sizeof(big));
        cli_send(c, head);
        cli_send_n(c, big, 1000);
        usleep(20000);
        cli_send_n(c, big + 1000, sizeof(big) - 1000);
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.body_len, sizeof(big));
        assert_memory_equal(r.body, big, sizeof(big));
    }
    resp_free(&r);
    cli_close(c);
    server_down();
}

static void
test_expect_continue(void **state)
{
    kb_http_server_opts o = { .name = "test", .max_body = 1000 };
    resp r = { 0 };
    cli *c;

    server_up(&o);
    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                "Expect: 100-continue\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 100);
    cli_send(c, "abcd");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abcd");

    /* over the limit: 413 at once, no 100 */
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                "Expect: 100-continue\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 413);
    assert_string_equal(resp_header(&r, "Connection"), "close");
    assert_true(cli_eof(c));
    cli_close(c);

    /* an expectation we cannot meet: 417 */
    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                "Expect: teapot\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 417);
    resp_free(&r);
    cli_close(c);
    server_down();
}

static void
test_body_limit_413(void **state)
{
    kb_http_server_opts o = { .name = "test", .max_body = 10 };
    resp r = { 0 };
    cli *c;

    server_up(&o);
    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
                "01234567890");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 413);
    assert_string_equal(r.body, "{\"error\":{\"code\":413,\"status\":"
                                "\"INVALID_ARGUMENT\",\"message\":"
                                "\"request body too large\"}}");
    assert_true(cli_eof(c));
    cli_close(c);

    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\n01234\r\n6\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 413);
    assert_true(cli_eof(c));
    cli_close(c);

    /* exactly the limit is fine */
    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "0123456789");
    resp_free(&r);
    cli_close(c);
    assert_int_equal(atomic_load(&handled), 1);
    server_down();
}

static void
test_head_limit_431(void **state)
{
    kb_http_server_opts o = { .name = "test", .max_head = 1024, .max_headers = 5 };
    char big[10000];
    resp r = { 0 };
    cli *c;

    server_up(&o);
    c = cli_open();
    snprintf(big, sizeof(big), "GET /hello HTTP/1.1\r\nHost: x\r\nX: %01500d\r\n\r\n", 0);
    cli_send(c, big);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 431);
    assert_string_equal(resp_header(&r, "Connection"), "close");
    assert_true(cli_eof(c));
    cli_close(c);

    c = cli_open();
    cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\n"
                "D: 1\r\nE: 1\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 431);
    cli_close(c);

    c = cli_open();
    snprintf(big, sizeof(big), "GET /%01100d HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    cli_send(c, big);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 414);
    resp_free(&r);
    cli_close(c);
    assert_int_equal(atomic_load(&handled), 0);
    server_down();
}

static void
test_smuggling_400_close(void **state)
{
    static const char *bad[] = {
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        "Content-Length: 3\r\n\r\nabc",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
        "GET /hello HTTP/1.1\nHost: x\n\n",
        "GET /hello HTTP/1.1\r\n\r\n",
    };
    resp r = { 0 };

    server_up(NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cli *c = cli_open();
        cli_send(c, bad[i]);
        /* a valid request right behind must not be served */
        cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 400);
        assert_string_equal(resp_header(&r, "Connection"), "close");
        assert_string_equal(resp_header(&r, "Content-Type"), "application/json");
        assert_non_null(strstr(r.body, "\"code\":400,\"status\":\"INVALID_ARGUMENT\""));
        assert_true(cli_eof(c));
        cli_close(c);
    }
    {
        cli *c = cli_open();
        cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 501);
        assert_non_null(strstr(r.body, "UNIMPLEMENTED"));
        cli_close(c);
        c = cli_open();
        cli_send(c, "GET / HTTP/1.2\r\nHost: x\r\n\r\n");
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 505);
        cli_close(c);
    }
    resp_free(&r);
    assert_int_equal(atomic_load(&handled), 0);
    server_down();
}

static void
test_timeouts(void **state)
{
    kb_http_server_opts o = { .name = "test", .header_timeout_ms = 200,
                              .body_timeout_ms = 200, .idle_timeout_ms = 300 };
    resp r = { 0 };
    cli *c;

    server_up(&o);
    /* slow head: 408, then close */
    c = cli_open();
    cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 408);
    assert_non_null(strstr(r.body, "DEADLINE_EXCEEDED"));
    assert_true(cli_eof(c));
    cli_close(c);

    /* slow body: 408 */
    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 408);
    cli_close(c);

    /* idle keep-alive: closed silently */
    c = cli_open();
    cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(cli_eof(c));
    cli_close(c);

    /* a connection that never sends anything: closed silently */
    c = cli_open();
    assert_true(cli_eof(c));
    resp_free(&r);
    cli_close(c);
    server_down();
}

static void
test_streaming_and_head(void **state)
{
    resp r = { 0 };
    cli *c;

    server_up(NULL);
    c = cli_open();
    cli_send(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Transfer-Encoding"), "chunked");
    assert_null(resp_header(&r, "Content-Length"));
    assert_string_equal(r.body, "abcdefgh");

    /* HEAD: the GET's headers, no body; the connection stays in sync */
    cli_send(c, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, true), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Content-Length"), "5");
    cli_send(c, "HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, true), 0);
    assert_int_equal(r.status, 200);
    cli_send(c, "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\"error\":{\"code\":404,\"status\":\"NOT_FOUND\","
                                "\"message\":\"no such thing\"}}");
    cli_close(c);

    /* HTTP/1.0: the streamed body ends at close */
    c = cli_open();
    cli_send(c, "GET /stream HTTP/1.0\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_null(resp_header(&r, "Transfer-Encoding"));
    assert_string_equal(r.body, "abcdefgh");
    resp_free(&r);
    cli_close(c);
    server_down();
}

static void
test_client_disconnects(void **state)
{
    resp r = { 0 };
    cli *c;

    server_up(NULL);
    /* while the handler is pending: on_abort fires, its answer releases */
    c = cli_open();
    cli_send(c, "GET /pending HTTP/1.1\r\nHost: x\r\n\r\n");
    while (atomic_load(&handled) < 1)
        usleep(1000);
    cli_close(c);
    for (int i = 0; i < 2000 && atomic_load(&aborts) < 1; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&aborts), 1);

    /* the answer comes after the abort, from a timer */
    c = cli_open();
    cli_send(c, "GET /pending-late HTTP/1.1\r\nHost: x\r\n\r\n");
    while (atomic_load(&handled) < 2)
        usleep(1000);
    cli_close(c);
    usleep(500000);
    assert_int_equal(atomic_load(&aborts), 2);

    /* mid-body and mid-head: nothing reaches the handler */
    c = cli_open();
    cli_send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
    usleep(20000);
    cli_close(c);
    c = cli_open();
    cli_send(c, "GET /hel");
    usleep(20000);
    cli_close(c);

    /* mid-response: a big response to a client that reads nothing */
    c = cli_open();
    for (int i = 0; i < 50; i++)
        cli_send(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    cli_close(c);

    /* the server is still fine */
    c = cli_open();
    cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_down();
}

static void
test_graceful_shutdown(void **state)
{
    resp r = { 0 };
    cli *c, *idle;

    server_up(NULL);
    idle = cli_open();
    cli_send(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(idle, &r, false), 0);

    c = cli_open();
    cli_send(c, "GET /shutdown HTTP/1.1\r\nHost: x\r\n\r\n");
    /* the idle connection is closed at once */
    assert_true(cli_eof(idle));
    /* the in-flight request still gets its answer, with Connection: close */
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "late");
    assert_string_equal(resp_header(&r, "Connection"), "close");
    assert_true(cli_eof(c));
    assert_int_equal(atomic_load(&inflight_seen), 1);
    cli_close(c);
    cli_close(idle);
    server_down();
    resp_free(&r);
}

static void
test_many_idle_connections(void **state)
{
    enum { N = 2000 };
    kb_http_server_opts o = { .name = "many", .max_connections = N + 1 };
    static int fds[N];
    kb_gauge *g;
    resp r = { 0 };
    cli *c;

    server_up(&o);
    g = kb_gauge_get("kiban_http_connections", "", "listener=\"many\"");
    for (int i = 0; i < N; i++) {
        struct sockaddr_in a = { .sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port) };
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
        send(fds[i], "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 33, MSG_NOSIGNAL);
    }
    for (int i = 0; i < 3000 && kb_gauge_value(g) < N; i++)
        usleep(1000);
    assert_true(kb_gauge_value(g) >= N);
    /* the next two: one more fits, the one after is refused */
    c = cli_open();
    cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    {
        cli *over = cli_open();
        assert_true(cli_eof(over));
        cli_close(over);
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
    resp_free(&r);
    cli_close(c);
    server_down();
}

static void
test_metrics_and_names(void **state)
{
    kb_counter *ok, *bad;
    uint64_t ok0, bad0;
    resp r = { 0 };
    cli *c;

    server_up(NULL);
    ok = kb_counter_get("kiban_http_requests_total", "",
                        "listener=\"test\",code=\"2xx\"");
    bad = kb_counter_get("kiban_http_requests_total", "",
                         "listener=\"test\",code=\"4xx\"");
    ok0 = kb_counter_value(ok);
    bad0 = kb_counter_value(bad);
    c = cli_open();
    cli_send(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(cli_read(c, &r, false), 0);
    cli_send(c, "BAD\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    cli_close(c);
    server_down();
    assert_int_equal(kb_counter_value(ok) - ok0, 1);
    assert_int_equal(kb_counter_value(bad) - bad0, 2);

    assert_string_equal(kb_http_status_name(400), "INVALID_ARGUMENT");
    assert_string_equal(kb_http_status_name(401), "UNAUTHENTICATED");
    assert_string_equal(kb_http_status_name(403), "PERMISSION_DENIED");
    assert_string_equal(kb_http_status_name(404), "NOT_FOUND");
    assert_string_equal(kb_http_status_name(405), "UNIMPLEMENTED");
    assert_string_equal(kb_http_status_name(408), "DEADLINE_EXCEEDED");
    assert_string_equal(kb_http_status_name(409), "ALREADY_EXISTS");
    assert_string_equal(kb_http_status_name(412), "FAILED_PRECONDITION");
    assert_string_equal(kb_http_status_name(429), "RESOURCE_EXHAUSTED");
    assert_string_equal(kb_http_status_name(499), "CANCELLED");
    assert_string_equal(kb_http_status_name(500), "INTERNAL");
    assert_string_equal(kb_http_status_name(501), "UNIMPLEMENTED");
    assert_string_equal(kb_http_status_name(502), "UNAVAILABLE");
    assert_string_equal(kb_http_status_name(503), "UNAVAILABLE");
    assert_string_equal(kb_http_status_name(504), "DEADLINE_EXCEEDED");
    assert_string_equal(kb_http_reason(404), "Not Found");
    assert_string_equal(kb_http_reason(299), "");
}

static void
test_start_errors(void **state)
{
    kb_http_server_opts o = { .name = "x", .handler = handler };
    kb_http_server *s = NULL;
    uv_loop_t l;

    uv_loop_init(&l);
    assert_int_equal(kb_http_server_start(&l, "localhost:80", &o, &s), KB_EINVAL);
    assert_int_equal(kb_http_server_start(&l, "127.0.0.1", &o, &s), KB_EINVAL);
    assert_int_equal(kb_http_server_start(&l, "127.0.0.1:99999", &o, &s), KB_EINVAL);
    assert_int_equal(kb_http_server_start(&l, "[::1:80", &o, &s), KB_EINVAL);
    /* two listeners on one port only with reuseport */
    o.reuseport = true;
    assert_int_equal(kb_http_server_start(&l, "127.0.0.1:0", &o, &s), 0);
    {
        char addr[32];
        kb_http_server *s2 = NULL, *s3 = NULL;
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", kb_http_server_port(s));
        assert_int_equal(kb_http_server_start(&l, addr, &o, &s2), 0);
        o.reuseport = false;
        assert_int_equal(kb_http_server_start(&l, addr, &o, &s3), -EADDRINUSE);
        kb_http_server_shutdown(s2, 0, NULL, NULL);
    }
    kb_http_server_shutdown(s, 0, NULL, NULL);
    uv_run(&l, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&l), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_two_requests),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_chunked_request_echoed),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_body_limit_413),
        cmocka_unit_test(test_head_limit_431),
        cmocka_unit_test(test_smuggling_400_close),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_streaming_and_head),
        cmocka_unit_test(test_client_disconnects),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_many_idle_connections),
        cmocka_unit_test(test_metrics_and_names),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
