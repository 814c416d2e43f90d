/*
 * test_http_client.c - the upstream client (src/http/client.c) against
 * kiban's own server and a scripted raw-TCP backend, all on one loop:
 * pooling and reuse, framing, errors, the stale-connection retry, cancel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "http/client.h"
#include "http/server.h"

static uv_loop_t       loop;
static kb_http_server *srv;
static int             srv_port;
static kb_http_client *cl;
static int             last_remote_port;

/* ---- our own server as the backend -------------------------------------- */

typedef struct later {
    uv_timer_t   t;
    kb_http_req *req;
} later;

static void
later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
later_fire(uv_timer_t *t)
{
    later *l = t->data;

    kb_http_respond(l->req, 200, NULL, 0, "slow", 4);
    uv_close((uv_handle_t *)&l->t, later_closed);
}

static void
handler(kb_http_req *req, void *data)
{
    last_remote_port = req->remote_port;
    if (strcmp(req->path, "/hello") == 0) {
        kb_http_header h[] = { { "X-Got-Method", req->method },
                               { "X-Got-Host", kb_http_req_header(req, "Host") } };
        kb_http_respond(req, 200, h, 2, "hello", 5);
    } else if (strcmp(req->path, "/echo") == 0) {
        kb_http_respond(req, 200, NULL, 0, req->body, req->body_len);
    } else if (strcmp(req->path, "/stream") == 0) {
        kb_http_response_start(req, 200, NULL, 0);
        kb_http_response_write(req, "abc", 3);
        kb_http_response_write(req, "defgh", 5);
        kb_http_response_end(req);
    } else if (strcmp(req->path, "/big") == 0) {
        static char big[100];
        memset(big, 'b', sizeof(big));
        kb_http_respond(req, 200, NULL, 0, big, sizeof(big));
    } else if (strcmp(req->path, "/bigstream") == 0) {
        kb_http_response_start(req, 200, NULL, 0);
        for (int i = 0; i < 10; i++)
            kb_http_response_write(req, "0123456789", 10);
        kb_http_response_end(req);
    } else if (strcmp(req->path, "/empty") == 0) {
        kb_http_respond(req, 204, NULL, 0, NULL, 0);
    } else if (strcmp(req->path, "/slow") == 0) {
        later *l = calloc(1, sizeof(*l));
        l->req = req;
        uv_timer_init(&loop, &l->t);
        l->t.data = l;
        uv_timer_start(&l->t, later_fire, 300, 0);
    } else {
        kb_http_respond_error(req, 404, "nope");
    }
}

/* ---- a scripted raw backend --------------------------------------------- */

/*
 * Modes: per accepted connection number and request number on it, what to
 * send back.  NULL = close without answering.
 */
typedef struct script {
    const char *answers[4][4];      /* [connection][request] */
    int         closes_after[4];    /* close after this many answers (0 = no) */
} script;

typedef struct raw_conn {
    uv_tcp_t tcp;
    int      idx;
    int      nreq;
    char     buf[8192];
    size_t   len;
} raw_conn;

static uv_tcp_t raw_listener;
static bool     raw_open;
static int      raw_port;
static int      raw_accepted;
static const script *raw_script;

static void
raw_free(uv_handle_t *h)
{
    free(h->data);
}

static void
raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    raw_conn *rc = h->data;

    *b = uv_buf_init(rc->buf + rc->len, (unsigned)(sizeof(rc->buf) - rc->len - 1));
}

static void
raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    raw_conn *rc = s->data;
    char *end;

    if (n < 0) {
        uv_close((uv_handle_t *)s, raw_free);
        return;
    }
    rc->len += (size_t)n;
    rc->buf[rc->len] = '\0';
    while ((end = strstr(rc->buf, "\r\n\r\n")) != NULL) {
        const char *ans = rc->idx < 4 && rc->nreq < 4
                              ? raw_script->answers[rc->idx][rc->nreq] : NULL;
        size_t used = (size_t)(end + 4 - rc->buf);
        memmove(rc->buf, rc->buf + used, rc->len - used + 1);
        rc->len -= used;
        rc->nreq++;
        if (ans == NULL) {
            uv_close((uv_handle_t *)s, raw_free);
            return;
        }
        uv_buf_t wb = uv_buf_init((char *)ans, (unsigned)strlen(ans));
        uv_try_write(s, &wb, 1);
        if (raw_script->closes_after[rc->idx] == rc->nreq) {
            uv_close((uv_handle_t *)s, raw_free);
            return;
        }
    }
}

static void
raw_accept(uv_stream_t *l, int status)
{
    raw_conn *rc = calloc(1, sizeof(*rc));

    uv_tcp_init(&loop, &rc->tcp);
    rc->tcp.data = rc;
    rc->idx = raw_accepted++;
    uv_accept(l, (uv_stream_t *)&rc->tcp);
    uv_read_start((uv_stream_t *)&rc->tcp, raw_alloc, raw_read);
}

static void
raw_up(const script *s)
{
    struct sockaddr_in a;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    raw_script = s;
    raw_accepted = 0;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&loop, &raw_listener);
    assert_int_equal(uv_tcp_bind(&raw_listener, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&raw_listener, 16, raw_accept), 0);
    uv_tcp_getsockname(&raw_listener, (struct sockaddr *)&ss, &len);
    raw_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    raw_open = true;
}

static void
raw_down(void)
{
    if (raw_open)
        uv_close((uv_handle_t *)&raw_listener, NULL);
    raw_open = false;
}

/* ---- fixture -------------------------------------------------------------- */

typedef struct result {
    bool   called;
    int    calls;
    int    err;
    int    status;
    char   body[4096];
    size_t body_len;
    char   hdr[256];
} result;

static void
on_result(int err, const kb_http_client_res *res, void *data)
{
    result *r = data;

    r->called = true;
    r->calls++;
    r->err = err;
    if (err == 0) {
        const char *h = kb_http_client_res_header(res, "X-Got-Host");
        r->status = res->status;
        r->body_len = res->body_len;
        memcpy(r->body, res->body, res->body_len + 1);  /* incl. the NUL */
        snprintf(r->hdr, sizeof(r->hdr), "%s", h ? h : "");
    } else {
        assert_null(res);
    }
}

static int
setup(void **state)
{
    kb_http_server_opts so = { .name = "backend", .handler = handler };
    kb_http_client_opts co = { .max_body = 1000 };

    uv_loop_init(&loop);
    assert_int_equal(kb_http_server_start(&loop, "127.0.0.1:0", &so, &srv), 0);
    srv_port = kb_http_server_port(srv);
    assert_int_equal(kb_http_client_create(&loop, &co, &cl), 0);
    return 0;
}

static int
teardown(void **state)
{
    raw_down();                          /* if a failed test left it */
    kb_http_client_destroy(cl);
    kb_http_server_shutdown(srv, 0, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

static void
run_until(result *r)
{
    while (!r->called)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void
timer_noop(uv_timer_t *t)
{
}

/* Run the loop for `ms` milliseconds. */
static void
run_for(uint64_t ms)
{
    uv_timer_t t;

    uv_timer_init(&loop, &t);
    uv_timer_start(&t, timer_noop, ms, 0);
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static int
get(const char *method, const char *host, int port, const char *target,
    uint64_t timeout_ms, result *r, kb_http_client_call **call)
{
    kb_http_client_req req = { .method = method, .host = host, .port = port,
                               .target = target, .timeout_ms = timeout_ms };

    memset(r, 0, sizeof(*r));
    return kb_http_client_send(cl, &req, on_result, r, call);
}

/* ---- tests ---------------------------------------------------------------- */

static void
test_keepalive_reuse(void **state)
{
    result r;
    int first_port;

    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/hello", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    {
        char want[32];
        snprintf(want, sizeof(want), "127.0.0.1:%d", srv_port);
        assert_string_equal(r.hdr, want);
    }
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", srv_port), 1);
    first_port = last_remote_port;

    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/stream", 0, &r, NULL), 0);
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", srv_port), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.body_len, 8);
    assert_string_equal(r.body, "abcdefgh");
    assert_int_equal(last_remote_port, first_port);          /* reused */
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", srv_port), 1);

    /* a POST body, HEAD and 204 without bodies, all on the same connection */
    {
        kb_http_header h[] = { { "Content-Length", "999" }, { "X-A", "b" } };
        kb_http_client_req req = { .method = "POST", .host = "127.0.0.1",
                                   .port = srv_port, .target = "/echo",
                                   .headers = h, .nheaders = 2,
                                   .body = "payload", .body_len = 7 };
        memset(&r, 0, sizeof(r));
        assert_int_equal(kb_http_client_send(cl, &req, on_result, &r, NULL), 0);
        run_until(&r);
        assert_int_equal(r.err, 0);
        assert_string_equal(r.body, "payload");
    }
    assert_int_equal(get("HEAD", "127.0.0.1", srv_port, "/hello", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/empty", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.status, 204);
    assert_int_equal(last_remote_port, first_port);
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", srv_port), 1);
}

static void
test_resolve_name(void **state)
{
    result r;

    /* "localhost" goes through getaddrinfo; ::1 (if first) is refused and
     * the next address is tried */
    assert_int_equal(get("GET", "localhost", srv_port, "/hello", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    assert_string_equal(r.body, "hello");
    assert_int_equal(kb_http_client_idle(cl, "localhost", srv_port), 1);

    assert_int_equal(get("GET", "no-such-host.invalid", srv_port, "/", 2000,
                         &r, NULL), 0);
    run_until(&r);
    assert_true(r.err < 0);
}

static void
test_connection_refused(void **state)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    result r;

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    close(fd);                           /* nothing listens there now */
    assert_int_equal(get("GET", "127.0.0.1", port, "/", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, -ECONNREFUSED);
    assert_int_equal(r.calls, 1);
}

static void
test_timeout(void **state)
{
    result r;

    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/slow", 100, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, KB_ETIMEDOUT);
    /* the half-done connection is not pooled */
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", srv_port), 0);
    /* let the server's late answer go nowhere, then check it still works */
    run_for(400);
    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/hello", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
}

static void
test_too_big(void **state)
{
    result r;

    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/big", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);           /* 100 bytes: under 1000 */

    {
        kb_http_client *small;
        kb_http_client_opts o = { .max_body = 50 };
        kb_http_client_req req = { .method = "GET", .host = "127.0.0.1",
                                   .port = srv_port, .target = "/big" };
        assert_int_equal(kb_http_client_create(&loop, &o, &small), 0);
        memset(&r, 0, sizeof(r));
        assert_int_equal(kb_http_client_send(small, &req, on_result, &r, NULL), 0);
        run_until(&r);
        assert_int_equal(r.err, KB_ETOOBIG);
        req.target = "/bigstream";
        memset(&r, 0, sizeof(r));
        assert_int_equal(kb_http_client_send(small, &req, on_result, &r, NULL), 0);
        run_until(&r);
        assert_int_equal(r.err, KB_ETOOBIG);
        assert_int_equal(kb_http_client_idle(small, "127.0.0.1", srv_port), 0);
        kb_http_client_destroy(small);
    }
}

static void
test_cancel_and_destroy(void **state)
{
    kb_http_client_call *call = NULL;
    result r, r2;

    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/slow", 0, &r, &call), 0);
    assert_non_null(call);
    uv_run(&loop, UV_RUN_NOWAIT);
    kb_http_client_cancel(call);
    run_for(500);
    assert_false(r.called);
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", srv_port), 0);

    /* destroy: a pending call gets KB_ECANCELED, once */
    {
        kb_http_client *other;
        kb_http_client_req req = { .method = "GET", .host = "127.0.0.1",
                                   .port = srv_port, .target = "/slow" };
        assert_int_equal(kb_http_client_create(&loop, NULL, &other), 0);
        memset(&r2, 0, sizeof(r2));
        assert_int_equal(kb_http_client_send(other, &req, on_result, &r2, NULL), 0);
        uv_run(&loop, UV_RUN_NOWAIT);
        kb_http_client_destroy(other);
        assert_int_equal(r2.calls, 1);
        assert_int_equal(r2.err, KB_ECANCELED);
    }
    /* bad requests are refused at once, without a callback */
    assert_int_equal(get("GET", "127.0.0.1", srv_port, "/a b", 0, &r, NULL), KB_EINVAL);
    assert_int_equal(get("G T", "127.0.0.1", srv_port, "/", 0, &r, NULL), KB_EINVAL);
    assert_int_equal(get("GET", "127.0.0.1", 0, "/", 0, &r, NULL), KB_EINVAL);
    {
        kb_http_header h[] = { { "X", "a\r\nInjected: 1" } };
        kb_http_client_req req = { .method = "GET", .host = "127.0.0.1",
                                   .port = srv_port, .target = "/",
                                   .headers = h, .nheaders = 1 };
        assert_int_equal(kb_http_client_send(cl, &req, on_result, &r, NULL), KB_EINVAL);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_false(r.called);
}

static void
test_idle_closed_by_peer(void **state)
{
    kb_http_server *s2;
    kb_http_server_opts so = { .name = "short", .handler = handler,
                               .idle_timeout_ms = 100 };
    result r;
    int p;

    assert_int_equal(kb_http_server_start(&loop, "127.0.0.1:0", &so, &s2), 0);
    p = kb_http_server_port(s2);
    assert_int_equal(get("GET", "127.0.0.1", p, "/hello", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", p), 1);
    /* the server drops the idle connection; the pool notices the EOF */
    for (int i = 0; i < 100 && kb_http_client_idle(cl, "127.0.0.1", p) > 0; i++)
        run_for(20);
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", p), 0);
    kb_http_server_shutdown(s2, 0, NULL, NULL);
}

#define OK2 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

static void
test_stale_connection_retry(void **state)
{
    /* connection 0 answers once, then drops the second request unanswered
     * (as a server closing an idle connection at that moment would);
     * connection 1 answers */
    static const script s = {
        .answers = {
            { OK2, NULL },
            { "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nretried", OK2 },
            { OK2, NULL },
        },
    };
    result r;

    raw_up(&s);
    assert_int_equal(get("GET", "127.0.0.1", raw_port, "/", 0, &r, NULL), 0);
    run_until(&r);
    assert_string_equal(r.body, "ok");
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", raw_port), 1);
    assert_int_equal(get("GET", "127.0.0.1", raw_port, "/", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    assert_string_equal(r.body, "retried");
    assert_int_equal(raw_accepted, 2);

    raw_down();
}

static void
test_post_not_retried(void **state)
{
    static const script s = {
        .answers = { { OK2, NULL }, { OK2 } },
    };
    kb_http_client_req req = { .method = "POST", .host = "127.0.0.1",
                               .target = "/", .body = "x", .body_len = 1 };
    result r;

    raw_up(&s);
    req.port = raw_port;
    memset(&r, 0, sizeof(r));
    assert_int_equal(kb_http_client_send(cl, &req, on_result, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(kb_http_client_send(cl, &req, on_result, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, -ECONNRESET);
    assert_int_equal(raw_accepted, 1);
    raw_down();
}

static void
test_interim_and_close_delimited(void **state)
{
    static const script s = {
        .answers = {
            { "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n" ,
              "HTTP/1.0 200 OK\r\n\r\nuntil close" },
            { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" },
            { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort" },
        },
        .closes_after = { 2, 0, 1 },
    };
    result r;

    raw_up(&s);
    assert_int_equal(get("GET", "127.0.0.1", raw_port, "/", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abc");
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", raw_port), 1);

    assert_int_equal(get("GET", "127.0.0.1", raw_port, "/", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, 0);
    assert_string_equal(r.body, "until close");
    assert_int_equal(kb_http_client_idle(cl, "127.0.0.1", raw_port), 0);

    /* a response the parser rejects */
    assert_int_equal(get("GET", "127.0.0.1", raw_port, "/", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, KB_EPARSE);

    /* a body cut short by close */
    assert_int_equal(get("GET", "127.0.0.1", raw_port, "/", 0, &r, NULL), 0);
    run_until(&r);
    assert_int_equal(r.err, -ECONNRESET);
    raw_down();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_closed_by_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_connection_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_and_close_delimited, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
