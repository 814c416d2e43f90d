/*
 * test_h2.c - HTTP/2 on the server (src/http/h2.c) over real loopback TCP:
 * h2c prior knowledge with curl and nghttp, and frame by frame with a small
 * nghttp2 client (resets, trailers, GOAWAY, limits, floods); also trailers
 * over HTTP/1.1 chunked and the per-IP connection limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "h2_harness.h"

static const kb_http_server_opts h2_opts = { .name = "test", .h2 = true };

/* A raw TCP connection (HTTP/1 by hand). */
static int
tcp_open(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port) };
    struct timeval tv = { .tv_sec = 5 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Everything until the server closes (or 5 s). */
static char *
tcp_read_all(int fd)
{
    char *out = calloc(1, 65536);
    size_t len = 0;
    ssize_t n;

    while ((n = recv(fd, out + len, 65535 - len, 0)) > 0)
        len += (size_t)n;
    return out;
}

static void
test_h2c_prior_knowledge_curl(void **state)
{
    char *out;
    int st;

    (void)state;
    server_up(&h2_opts);
    out = run(&st, "curl -sS -i --http2-prior-knowledge -b 'a=1' -b 'b=2' "
                   "'http://127.0.0.1:%d/hello?x=1' 2>&1", port);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "HTTP/2 200"));
    assert_non_null(strstr(out, "x-test: yes"));
    assert_null(strcasestr(out, "keep-alive"));        /* dropped on h2 */
    assert_null(strcasestr(out, "connection:"));
    assert_non_null(strstr(out, "content-length: "));
    assert_non_null(strstr(out, "proto=2 tls=0 method=GET host=127.0.0.1:"));
    assert_non_null(strstr(out, "q=x=1"));
    free(out);

    /* the same listener still speaks HTTP/1.1 */
    out = run(&st, "curl -sS -i --http1.1 http://127.0.0.1:%d/hello", port);
    assert_non_null(strstr(out, "HTTP/1.1 200"));
    assert_non_null(strstr(out, "proto=1"));
    free(out);
    /* Upgrade: h2c is not taken up: an HTTP/1.1 answer */
    out = run(&st, "curl -sS -i --http2 http://127.0.0.1:%d/hello", port);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "HTTP/1.1 200"));
    assert_null(strstr(out, "101"));
    free(out);
    /* streaming over h2 */
    out = run(&st, "curl -sS --http2-prior-knowledge http://127.0.0.1:%d/stream",
              port);
    assert_string_equal(out, "abcdefgh");
    free(out);
    server_down();
}

static void
test_h2c_nghttp_many_streams(void **state)
{
    char *out;
    int st;

    (void)state;
    server_up(&h2_opts);
    /* 300 requests on one connection, each answered 100 ms later: at most
     * 128 (SETTINGS_MAX_CONCURRENT_STREAMS) at a time */
    out = run(&st, "nghttp -n -s -m 300 'http://127.0.0.1:%d/slow?ms=100' 2>&1",
              port);
    assert_int_equal(st, 0);
    assert_int_equal(atomic_load(&handled), 300);
    assert_true(atomic_load(&max_inflight) <= 128);
    assert_true(atomic_load(&max_inflight) >= 100);
    free(out);
    /* h2load, as the benchmark uses it */
    out = run(&st, "h2load -n 2000 -c 4 -m 32 http://127.0.0.1:%d/hello 2>&1",
              port);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "2000 succeeded, 0 failed, 0 errored"));
    free(out);
    server_down();
}

static void
test_h2_large_bodies(void **state)
{
    size_t n = 8u << 20;
    char *big = malloc(n), path[64];
    h2upload up = { big, n, 0 };
    h2cli *c;
    h2res *r;

    (void)state;
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + (i >> 13));
    server_up(&h2_opts);
    c = h2c_open();
    /* 8 MiB up (more than every window: credit follows consumption) */
    r = h2c_req(c, "POST", "/echo", &up, NULL, 0);
    h2c_wait(c, r);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_len, n);
    assert_memory_equal(r->body, big, n);
    /* 8 MiB down, within the client's windows */
    snprintf(path, sizeof(path), "/big?n=%zu", n);
    r = h2c_req(c, "GET", path, NULL, NULL, 0);
    h2c_wait(c, r);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_len, n);
    assert_int_equal(r->body[n - 1], 'a' + (int)((n - 1) % 26));
    h2c_close(c);
    free(big);
    server_down();
}

static void
test_h2_reset_fires_abort(void **state)
{
    h2cli *c;
    h2res *hang, *ok;

    (void)state;
    server_up(&h2_opts);
    c = h2c_open();
    hang = h2c_req(c, "GET", "/hang", NULL, NULL, 0);
    for (int i = 0; i < 100 && atomic_load(&handled) < 1; i++)
        h2c_pump(c, 10);
    assert_int_equal(atomic_load(&handled), 1);
    assert_int_equal(kb_http_server_inflight(srv), 1);
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, hang->id,
                              NGHTTP2_CANCEL);
    h2c_pump(c, 50);
    wait_for(&aborts, 1);
    assert_int_equal(atomic_load(&aborts), 1);
    /* the connection goes on */
    ok = h2c_req(c, "GET", "/hello", NULL, NULL, 0);
    h2c_wait(c, ok);
    assert_int_equal(ok->status, 200);
    assert_int_equal(kb_http_server_inflight(srv), 0);
    /* a connection that goes away aborts its open streams too */
    hang = h2c_req(c, "GET", "/hang", NULL, NULL, 0);
    for (int i = 0; i < 100 && atomic_load(&handled) < 3; i++)
        h2c_pump(c, 10);
    h2c_close(c);
    wait_for(&aborts, 2);
    assert_int_equal(atomic_load(&aborts), 2);
    server_down();
}

static void
test_h2_trailers(void **state)
{
    h2cli *c;
    h2res *r;
    int fd;
    char *out;

    (void)state;
    server_up(&h2_opts);
    c = h2c_open();
    r = h2c_req(c, "POST", "/trailers", NULL, NULL, 0);
    h2c_wait(c, r);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "payload");
    assert_non_null(strstr(r->headers, "content-type: application/grpc\n"));
    assert_string_equal(r->trailers, "grpc-status: 0\ngrpc-message: all good\n");
    h2c_close(c);

    /* HTTP/1.1: chunked with a trailer section */
    fd = tcp_open();
    send(fd, "GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
         54, 0);
    out = tcp_read_all(fd);
    assert_non_null(strstr(out, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(out, "Trailer: grpc-status, Grpc-Message\r\n"));
    assert_non_null(strstr(out, "\r\n\r\n7\r\npayload\r\n0\r\ngrpc-status: 0\r\n"
                                "Grpc-Message: all good\r\n\r\n"));
    free(out);
    close(fd);
    /* HTTP/1.0: no chunked coding, so no trailers */
    fd = tcp_open();
    send(fd, "GET /trailers HTTP/1.0\r\n\r\n", 26, 0);
    out = tcp_read_all(fd);
    assert_non_null(strstr(out, "Content-Length: 7\r\n"));
    assert_null(strstr(out, "grpc-status"));
    free(out);
    close(fd);
    server_down();
}

static void
test_h2_goaway_on_shutdown(void **state)
{
    h2cli *c;
    h2res *slow, *late;

    (void)state;
    server_up(&h2_opts);
    c = h2c_open();
    slow = h2c_req(c, "GET", "/slow?ms=300", NULL, NULL, 0);
    for (int i = 0; i < 100 && atomic_load(&handled) < 1; i++)
        h2c_pump(c, 10);
    uv_async_send(&shutdown_async);
    for (int i = 0; i < 100 && !c->goaway; i++)
        h2c_pump(c, 10);
    assert_true(c->goaway);
    assert_int_equal(c->goaway_code, NGHTTP2_NO_ERROR);
    assert_false(slow->closed);
    h2c_wait(c, slow);                  /* the in-flight stream finishes */
    assert_int_equal(slow->status, 200);
    assert_string_equal(slow->body, "late");
    /* a stream opened after the GOAWAY is not served */
    late = h2c_req(c, "GET", "/hello", NULL, NULL, 0);
    for (int i = 0; i < 200 && h2c_pump(c, 10); i++)
        ;
    assert_true(c->eof);                /* then the server closes */
    assert_int_equal(late->status, 0);
    wait_for(&done_calls, 1);
    assert_int_equal(atomic_load(&handled), 1);
    h2c_close(c);
    server_down();
}

static void
test_h2_limits(void **state)
{
    kb_http_server_opts o = h2_opts;
    char v[1100];
    nghttp2_nv big[6];
    h2cli *c;
    h2res *r;
    h2upload up;
    char *body = calloc(1, 5000);

    (void)state;
    o.max_head = 4096;
    o.max_body = 1000;
    o.body_timeout_ms = 300;
    server_up(&o);
    c = h2c_open();
    /* a head over max_head (after HPACK decoding): 431 */
    memset(v, 'v', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    for (int i = 0; i < 6; i++)
        big[i] = (nghttp2_nv)NV("x-big", v);
    r = h2c_req(c, "GET", "/hello", NULL, big, 6);
    h2c_wait(c, r);
    assert_int_equal(r->status, 431);
    /* a declared body over max_body: 413 at once */
    up = (h2upload){ body, 5000, 0 };
    r = h2c_req(c, "POST", "/echo", &up,
                (nghttp2_nv[]){ NV("content-length", "5000") }, 1);
    h2c_wait(c, r);
    assert_int_equal(r->status, 413);
    /* an undeclared one: 413 once it passes the limit */
    up = (h2upload){ body, 5000, 0 };
    r = h2c_req(c, "POST", "/echo", &up, NULL, 0);
    h2c_wait(c, r);
    assert_int_equal(r->status, 413);
    assert_non_null(strstr(r->body, "\"status\":\"INVALID_ARGUMENT\""));
    /* a body that does not come: 408 after body_timeout */
    {
        nghttp2_nv nv[] = { NV(":method", "POST"), NV(":scheme", "http"),
                            NV(":authority", "x"), NV(":path", "/echo") };
        h2res *w = &c->res[c->nres++];
        w->id = nghttp2_submit_headers(c->ng, NGHTTP2_FLAG_NONE, -1, NULL,
                                       nv, 4, w);
        h2c_wait(c, w);
        assert_int_equal(w->status, 408);
    }
    /* the connection is still usable, and the server counted it all */
    r = h2c_req(c, "GET", "/hello", NULL, NULL, 0);
    h2c_wait(c, r);
    assert_int_equal(r->status, 200);
    h2c_close(c);
    free(body);
    server_down();
}

static void
test_h2_rapid_reset_flood(void **state)
{
    h2cli *c;
    int sent = 0;

    (void)state;
    server_up(&h2_opts);
    c = h2c_open();
    /* open-and-cancel, as fast as possible (CVE-2023-44487) */
    for (int i = 0; i < 3000 && !c->eof && !c->goaway; i++) {
        nghttp2_nv nv[] = { NV(":method", "GET"), NV(":scheme", "http"),
                            NV(":authority", "x"), NV(":path", "/hang") };
        int32_t id = nghttp2_submit_request(c->ng, NULL, nv, 4, NULL, NULL);
        h2c_pump(c, 0);
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        h2c_pump(c, 0);
        sent++;
    }
    for (int i = 0; i < 1000 && !c->eof; i++)
        h2c_pump(c, 10);
    assert_true(c->goaway || c->eof);   /* the server cut it short */
    assert_true(atomic_load(&handled) <= 1100); /* burst 1000 (+ refill) */
    assert_true(atomic_load(&handled) >= 1000);
    h2c_close(c);
    /* every stream that reached the handler was aborted, none leaked */
    wait_for(&aborts, atomic_load(&handled));
    assert_int_equal(atomic_load(&aborts), atomic_load(&handled));
    /* and the server still serves */
    {
        int st;
        char *out = run(&st, "curl -sS --http2-prior-knowledge "
                             "http://127.0.0.1:%d/hello", port);
        assert_non_null(strstr(out, "proto=2"));
        free(out);
    }
    server_down();
}

static void
test_h2_idle_timeout(void **state)
{
    kb_http_server_opts o = h2_opts;
    h2cli *c;

    (void)state;
    o.idle_timeout_ms = 300;
    server_up(&o);
    c = h2c_open();
    for (int i = 0; i < 200 && h2c_pump(c, 10); i++)
        ;
    assert_true(c->goaway);
    assert_true(c->eof);
    h2c_close(c);
    server_down();
}

static void
test_per_ip_limit(void **state)
{
    kb_http_server_opts o = { .name = "perip", .max_conns_per_ip = 2 };
    kb_buf m = KB_BUF_INIT(1 << 20);
    int a, b, x, y;
    char ch;

    (void)state;
    server_up(&o);
    a = tcp_open();
    b = tcp_open();
    x = tcp_open();                     /* the third: closed at once */
    assert_int_equal(recv(x, &ch, 1, 0), 0);
    close(x);
    send(a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 32, 0);
    assert_true(recv(a, &ch, 1, 0) == 1);   /* the first two are served */
    close(b);
    usleep(100000);
    y = tcp_open();                     /* room again */
    send(y, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 32, 0);
    assert_true(recv(y, &ch, 1, 0) == 1);
    close(y);
    close(a);
    assert_int_equal(kb_metrics_render(&m), 0);
    assert_non_null(strstr(m.data, "kiban_http_connections_rejected_total"
                                   "{listener=\"perip\",reason=\"per_ip\"} 1\n"));
    kb_buf_free(&m);
    server_down();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h2c_prior_knowledge_curl),
        cmocka_unit_test(test_h2c_nghttp_many_streams),
        cmocka_unit_test(test_h2_large_bodies),
        cmocka_unit_test(test_h2_reset_fires_abort),
        cmocka_unit_test(test_h2_trailers),
        cmocka_unit_test(test_h2_goaway_on_shutdown),
        cmocka_unit_test(test_h2_limits),
        cmocka_unit_test(test_h2_rapid_reset_flood),
        cmocka_unit_test(test_h2_idle_timeout),
        cmocka_unit_test(test_per_ip_limit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
