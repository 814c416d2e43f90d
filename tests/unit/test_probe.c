/*
 * test_probe.c - one probe attempt (runtime/probe.h) against a small
 * server on the same loop: tcpSocket and httpGet outcomes, the request the
 * probe sends, timeouts, cancel, and every handle closed afterwards.
 */
#include "core/err.h"
#include "core/time.h"
#include "runtime/probe.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rt_fixture.h"

#define MAX_CONNS 8

typedef enum srv_mode {
    SRV_REPLY,          /* answer `reply` once the request head is in */
    SRV_SILENT,         /* accept and read, never answer */
} srv_mode;

typedef struct srv srv;

typedef struct conn {
    uv_tcp_t    tcp;
    uv_write_t  w;
    srv        *s;
    int         slot;
    size_t      len;
    char        buf[8192];
} conn;

struct srv {
    uv_tcp_t    listener;
    bool        listening;
    int         port;
    srv_mode    mode;
    const char *reply;
    size_t      reply_len;
    int         accepted;
    char        req[8192];      /* the last request head received */
    conn       *conns[MAX_CONNS];
};

typedef struct fx {
    uv_loop_t   loop;
    uv_timer_t  tick;           /* keeps UV_RUN_ONCE from blocking long */
    srv         s;
    int         calls;          /* probe callbacks */
    bool        ok;
    char        why[128];
} fx;

/* ---- the server ---- */

static void
conn_closed(uv_handle_t *h)
{
    conn *c = h->data;

    c->s->conns[c->slot] = NULL;
    free(c);
}

static void
conn_close(conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void
conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn *c = h->data;

    (void)hint;
    *buf = uv_buf_init(c->buf + c->len,
                       (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void
reply_done(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

static void
conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = st->data;
    srv *s = c->s;

    (void)buf;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = '\0';
    if (strstr(c->buf, "\r\n\r\n") == NULL)
        return;
    snprintf(s->req, sizeof(s->req), "%s", c->buf);
    c->len = 0;
    if (s->mode == SRV_REPLY) {
        uv_buf_t b = uv_buf_init((char *)s->reply, (unsigned)s->reply_len);

        c->w.data = c;
        uv_read_stop(st);
        assert_int_equal(uv_write(&c->w, st, &b, 1, reply_done), 0);
    }
}

static void
on_conn(uv_stream_t *l, int status)
{
    srv *s = l->data;
    conn *c;
    int slot = -1;

    assert_int_equal(status, 0);
    for (int i = 0; i < MAX_CONNS; i++)
        if (s->conns[i] == NULL) {
            slot = i;
            break;
        }
    assert_true(slot >= 0);
    c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->s = s;
    c->slot = slot;
    s->conns[slot] = c;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    s->accepted++;
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

/* Listen on a fresh loopback port. */
static void
srv_start(fx *f, srv_mode mode, const char *reply, size_t reply_len)
{
    srv *s = &f->s;
    struct sockaddr_in addr;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    s->mode = mode;
    s->reply = reply;
    s->reply_len = reply_len;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_init(&f->loop, &s->listener), 0);
    s->listener.data = s;
    s->listening = true;
    assert_int_equal(uv_tcp_bind(&s->listener,
                                 (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 16, on_conn), 0);
    assert_int_equal(uv_tcp_getsockname(&s->listener,
                                        (struct sockaddr *)&ss, &len), 0);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void
srv_reply(fx *f, const char *reply)
{
    srv_start(f, SRV_REPLY, reply, strlen(reply));
}

/* A loopback port nothing listens on (bound, then closed). */
static int
dead_port(fx *f)
{
    srv_start(f, SRV_SILENT, NULL, 0);
    uv_close((uv_handle_t *)&f->s.listener, NULL);
    f->s.listening = false;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return f->s.port;
}

/* ---- fixture ---- */

static int
setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    rt_loop_open(&f->loop, &f->tick);
    *state = f;
    return 0;
}

/* Close everything; the loop must end with no handle left open (a probe
 * run that did not close its handles fails here, and ASan reports one
 * that was not freed). */
static int
teardown(void **state)
{
    fx *f = *state;

    if (f->s.listening)
        uv_close((uv_handle_t *)&f->s.listener, NULL);
    for (int i = 0; i < MAX_CONNS; i++)
        if (f->s.conns[i] != NULL)
            conn_close(f->s.conns[i]);
    uv_close((uv_handle_t *)&f->tick, NULL);
    for (int i = 0; i < 100 && uv_loop_alive(&f->loop); i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void
probe_cb(void *data, bool ok, const char *why)
{
    fx *f = data;

    f->calls++;
    f->ok = ok;
    snprintf(f->why, sizeof(f->why), "%s", why);
}

static rt_probe
http_probe(const char *path, uint64_t timeout_ms)
{
    rt_probe p = { .http = true, .path = (char *)path,
                   .timeout_ms = timeout_ms, .failure_threshold = 1,
                   .set = true };
    return p;
}

/* Run one probe to its end; returns its outcome (f->why has the reason). */
static bool
probe_once(fx *f, int port, const rt_probe *p)
{
    rt_probe_run *r;

    f->calls = 0;
    assert_int_equal(kb__rt_probe_start(&f->loop, port, p, probe_cb, f, &r),
                     0);
    assert_non_null(r);
    EVENTUALLY(f, f->calls > 0, 10000);
    run_for(f, 20);
    assert_int_equal(f->calls, 1);
    return f->ok;
}

/* An answer the server gives and what the probe makes of it (why NULL:
 * not checked). */
typedef struct answer {
    const char *reply;
    bool        ok;
    const char *why;
} answer;

/* Probe once per answer, the server (listening) giving each in turn. */
static void
check_answers(fx *f, const rt_probe *p, const answer *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        f->s.reply = a[i].reply;
        f->s.reply_len = strlen(a[i].reply);
        if (probe_once(f, f->s.port, p) != a[i].ok)
            fail_msg("%s: ok is %d, want %d (%s)", a[i].reply, !a[i].ok,
                     a[i].ok, f->why);
        if (a[i].why != NULL)
            assert_string_equal(f->why, a[i].why);
    }
}

/* ---- tcpSocket ---- */

static void
test_tcp_connects(void **state)
{
    fx *f = *state;
    rt_probe p = { .http = false, .timeout_ms = 1000 };

    srv_start(f, SRV_SILENT, NULL, 0);
    assert_true(probe_once(f, f->s.port, &p));
    assert_string_equal(f->why, "connected");
}

static void
test_tcp_refused(void **state)
{
    fx *f = *state;
    rt_probe p = { .http = false, .timeout_ms = 1000 };
    int port = dead_port(f);

    assert_false(probe_once(f, port, &p));
    assert_string_equal(f->why, "connection refused");
}

/* ---- httpGet ---- */

static void
test_http_200_ok_and_request_shape(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe("/healthz?full=1", 1000);
    char host[64];

    srv_reply(f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_true(probe_once(f, f->s.port, &p));
    assert_string_equal(f->why, "HTTP 200");
    assert_non_null(strstr(f->s.req, "GET /healthz?full=1 HTTP/1.1\r\n"));
    assert_ptr_equal(strstr(f->s.req, "GET "), f->s.req);
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", f->s.port);
    assert_non_null(strstr(f->s.req, host));
    assert_non_null(strstr(f->s.req, "\r\nUser-Agent: kiban-probe/1\r\n"));
    assert_non_null(strstr(f->s.req, "\r\nConnection: close\r\n"));
}

static void
test_http_500_fails(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe("/healthz", 1000);

    srv_reply(f, "HTTP/1.1 500 Internal Server Error\r\n"
                 "Content-Length: 0\r\n\r\n");
    assert_false(probe_once(f, f->s.port, &p));
    assert_string_equal(f->why, "HTTP 500");
}

static void
test_http_redirect_and_edges(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe(NULL, 1000);        /* no path: "/" */

    srv_reply(f, "HTTP/1.0 301 Moved Permanently\r\nLocation: /x\r\n\r\n");
    assert_true(probe_once(f, f->s.port, &p));
    assert_string_equal(f->why, "HTTP 301");
    assert_non_null(strstr(f->s.req, "GET / HTTP/1.1\r\n"));
    static const answer edges[] = {
        /* 399 passes, 400 and 199 do not: Kubernetes' range. */
        { "HTTP/1.1 399 X\r\n\r\n", true, NULL },
        { "HTTP/1.1 400 Bad Request\r\n\r\n", false, "HTTP 400" },
        { "HTTP/1.1 199 X\r\n\r\n", false, NULL },
        /* A status line without a reason phrase, then the connection
         * closes. */
        { "HTTP/1.1 204", true, "HTTP 204" },
    };
    check_answers(f, &p, edges, sizeof(edges) / sizeof(edges[0]));
}

static void
test_http_no_listener_fails(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe("/healthz", 1000);
    int port = dead_port(f);

    assert_false(probe_once(f, port, &p));
    assert_string_equal(f->why, "connection refused");
}

static void
test_http_slow_server_times_out(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe("/healthz", 150);

    srv_start(f, SRV_SILENT, NULL, 0);
    assert_false(probe_once(f, f->s.port, &p));
    assert_string_equal(f->why, "timed out after 150 ms");
    assert_int_equal(f->s.accepted, 1);
}

static void
test_http_garbage_fails(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe("/", 1000);
    static char big[6000];
    static const answer garbage[] = {
        { "SSH-2.0-OpenSSH_9.2\r\n", false, "bad status line" },
        { "HTTP/1.1 2000 OK\r\n\r\n", false, NULL },
        /* Closed without a byte. */
        { "", false, "connection closed before a response" },
        /* No line end within 4 KiB (big, below): the probe stops
         * reading. */
        { big, false, "status line too long" },
    };

    memset(big, 'H', sizeof(big) - 1);
    srv_start(f, SRV_REPLY, NULL, 0);
    check_answers(f, &p, garbage, sizeof(garbage) / sizeof(garbage[0]));
}

static void
test_bad_arguments(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe("/a b", 1000);
    rt_probe_run *r = (rt_probe_run *)1;

    assert_int_equal(kb__rt_probe_start(&f->loop, 8080, &p, probe_cb, f,
                                        &r), KB_EINVAL);
    assert_null(r);
    p.path = "/x\r\nEvil: 1";
    assert_int_equal(kb__rt_probe_start(&f->loop, 8080, &p, probe_cb, f,
                                        &r), KB_EINVAL);
    p.path = "healthz";
    assert_int_equal(kb__rt_probe_start(&f->loop, 8080, &p, probe_cb, f,
                                        &r), KB_EINVAL);
    p.path = "/";
    assert_int_equal(kb__rt_probe_start(&f->loop, 0, &p, probe_cb, f, &r),
                     KB_EINVAL);
    assert_int_equal(kb__rt_probe_start(&f->loop, 70000, &p, probe_cb, f,
                                        &r), KB_EINVAL);
    run_for(f, 20);
    assert_int_equal(f->calls, 0);
}

/* Cancel before the connect completes, and while waiting for an answer:
 * the callback never runs and the run still frees itself. */
static void
test_cancel_prevents_callback(void **state)
{
    fx *f = *state;
    rt_probe p = http_probe("/healthz", 300);
    rt_probe tcp = { .http = false, .timeout_ms = 300 };
    rt_probe_run *r;

    srv_start(f, SRV_SILENT, NULL, 0);
    assert_int_equal(kb__rt_probe_start(&f->loop, f->s.port, &p, probe_cb,
                                        f, &r), 0);
    kb__rt_probe_cancel(r);
    assert_int_equal(kb__rt_probe_start(&f->loop, f->s.port, &tcp, probe_cb,
                                        f, &r), 0);
    kb__rt_probe_cancel(r);
    assert_int_equal(kb__rt_probe_start(&f->loop, f->s.port, &p, probe_cb,
                                        f, &r), 0);
    EVENTUALLY(f, strstr(f->s.req, "GET /healthz") != NULL, 5000);
    kb__rt_probe_cancel(r);
    kb__rt_probe_cancel(NULL);
    run_for(f, 600);                    /* past the 300 ms timeout */
    assert_int_equal(f->calls, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tcp_connects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_200_ok_and_request_shape,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_500_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_http_redirect_and_edges, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_http_no_listener_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_http_slow_server_times_out,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_garbage_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_prevents_callback, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
