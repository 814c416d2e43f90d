/*
 * h2_harness.h - shared by test_h2.c and test_tls.c: a kiban HTTP server on
 * a loop thread with a handler that exercises every response call, a
 * small blocking HTTP/2 client on nghttp2 (to reset streams, see GOAWAY and
 * trailers frame by frame), and a helper that runs a command and captures
 * its output.  Include after <cmocka.h>.
 */
#ifndef KB_TEST_H2_HARNESS_H
#define KB_TEST_H2_HARNESS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "core/metrics.h"
#include "http/server.h"
#include "http/tls.h"

/* ---- the server side (loop thread) ------------------------------------- */

static uv_loop_t       loop;
static uv_async_t      stop_async, shutdown_async;
static pthread_t       loop_thread;
static kb_http_server *srv;
static int             port;
static atomic_int      aborts, handled, done_calls, max_inflight;
static atomic_int      last_major;
static uint64_t        shutdown_grace = 5000;

typedef struct delayed {
    uv_timer_t   timer;
    kb_http_req *req;
    bool         aborted;
} delayed;

static inline void
delayed_close(uv_handle_t *h)
{
    free(h->data);
}

static inline void
delayed_fire(uv_timer_t *t)
{
    delayed *d = t->data;

    kb_http_respond(d->req, 200, NULL, 0, "late", 4);
    uv_close((uv_handle_t *)&d->timer, delayed_close);
}

static inline void
on_abort_respond(kb_http_req *req, void *data)
{
    (void)data;
    atomic_fetch_add(&aborts, 1);
    kb_http_respond(req, 499, NULL, 0, NULL, 0);    /* only releases it */
}

static inline void
on_done(void *data)
{
    (void)data;
    atomic_fetch_add(&done_calls, 1);
}

static inline void
handler(kb_http_req *req, void *data)
{
    const char *p = req->path;
    int now = (int)kb_http_server_inflight(srv);

    (void)data;
    atomic_fetch_add(&handled, 1);
    atomic_store(&last_major, req->http_major);
    if (now > atomic_load(&max_inflight))
        atomic_store(&max_inflight, now);
    if (strcmp(p, "/hello") == 0) {
        char out[512];
        const char *host = kb_http_req_header(req, "Host");
        const char *ck = kb_http_req_header(req, "Cookie");
        int n = snprintf(out, sizeof(out),
                         "proto=%d tls=%d method=%s host=%s q=%s cookie=%s",
                         req->http_major, req->tls, req->method,
                         host ? host : "-", req->query, ck ? ck : "-");
        kb_http_header h[] = { { "X-Test", "yes" }, { "Connection", "close" },
                               { "Keep-Alive", "5" } };
        kb_http_respond(req, 200, h, 3, out, (size_t)n);
    } else if (strcmp(p, "/echo") == 0) {
        kb_http_respond(req, 200, NULL, 0, req->body, req->body_len);
    } else if (strcmp(p, "/big") == 0) {
        const char *q = kb_http_req_query(req, "n");
        size_t n = q ? strtoul(q, NULL, 10) : 1000;
        char *b = malloc(n);
        for (size_t i = 0; i < n; i++)
            b[i] = (char)('a' + i % 26);
        kb_http_respond(req, 200, NULL, 0, b, n);
        free(b);
    } else if (strcmp(p, "/trailers") == 0) {
        kb_http_header h[] = { { "Content-Type", "application/grpc" } };
        kb_http_header t[] = { { "grpc-status", "0" },
                               { "Grpc-Message", "all good" } };
        kb_http_respond_trailers(req, 200, h, 1, "payload", 7, t, 2);
    } else if (strcmp(p, "/stream") == 0) {
        kb_http_response_start(req, 200, NULL, 0);
        kb_http_response_write(req, "abc", 3);
        kb_http_response_write(req, "defgh", 5);
        kb_http_response_end(req);
    } else if (strcmp(p, "/hang") == 0) {
        kb_http_req_on_abort(req, on_abort_respond, NULL);
    } else if (strcmp(p, "/slow") == 0) {
        const char *q = kb_http_req_query(req, "ms");
        delayed *d = calloc(1, sizeof(*d));
        d->req = req;
        uv_timer_init(&loop, &d->timer);
        d->timer.data = d;
        uv_timer_start(&d->timer, delayed_fire, q ? strtoul(q, NULL, 10) : 200,
                       0);
    } else {
        kb_http_respond_error(req, 404, "not found");
    }
}

static inline void
on_stop(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    uv_close((uv_handle_t *)&shutdown_async, NULL);
    if (atomic_load(&done_calls) == 0)
        kb_http_server_shutdown(srv, 0, on_done, NULL);
}

static inline void
on_shutdown_async(uv_async_t *a)
{
    (void)a;
    kb_http_server_shutdown(srv, shutdown_grace, on_done, NULL);
}

static inline void *
loop_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static inline void
server_up(const kb_http_server_opts *extra)
{
    kb_http_server_opts o = { .name = "test" };

    if (extra != NULL)
        o = *extra;
    o.handler = handler;
    atomic_store(&aborts, 0);
    atomic_store(&handled, 0);
    atomic_store(&done_calls, 0);
    atomic_store(&max_inflight, 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(kb_http_server_start(&loop, "127.0.0.1:0", &o, &srv), 0);
    port = kb_http_server_port(srv);
    assert_true(port > 0);
    uv_async_init(&loop, &stop_async, on_stop);
    uv_async_init(&loop, &shutdown_async, on_shutdown_async);
    pthread_create(&loop_thread, NULL, loop_main, NULL);
}

static inline void
server_down(void)
{
    uv_async_send(&stop_async);
    pthread_join(loop_thread, NULL);
    assert_int_equal(atomic_load(&done_calls), 1);
    assert_int_equal(uv_loop_close(&loop), 0);    /* every handle closed */
}

static inline void
wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 500 && atomic_load(v) < want; i++)
        usleep(10000);
}

/* ---- running tools ---------------------------------------------------- */

/* Run a shell command; its stdout (and stderr with 2>&1 in cmd) into a
 * malloc'd string.  *status: the exit status. */
static inline char *
run(int *status, const char *fmt, ...)
{
    char cmd[4096], *out = calloc(1, 1 << 22);
    size_t len = 0, n;
    va_list ap;
    FILE *f;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    f = popen(cmd, "r");
    assert_non_null(f);
    while ((n = fread(out + len, 1, (1 << 22) - 1 - len, f)) > 0)
        len += n;
    st = pclose(f);
    if (status != NULL)
        *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* ---- a small blocking HTTP/2 client ------------------------------------ */

#define H2C_MAX 64

typedef struct h2res {
    int32_t  id;
    int      status;
    char     headers[4096];   /* "name: value\n" … */
    char     trailers[1024];
    char    *body;
    size_t   body_len;
    bool     closed;
    uint32_t rst;             /* error code it closed with */
} h2res;

typedef struct h2upload {
    const char *data;
    size_t      len, off;
} h2upload;

typedef struct h2cli {
    int              fd;
    nghttp2_session *ng;
    h2res            res[H2C_MAX];
    int              nres;
    bool             goaway;
    uint32_t         goaway_code;
    bool             eof;
} h2cli;

static inline int
cb_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
          size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *u)
{
    h2res *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    char *dst;
    size_t len;

    (void)flags;
    (void)u;
    if (r == NULL)
        return 0;
    if (nl == 7 && memcmp(name, ":status", 7) == 0) {
        r->status = atoi((const char *)value);  /* test code: NUL-terminated */
        return 0;
    }
    dst = r->status != 0 && f->headers.cat == NGHTTP2_HCAT_HEADERS
              ? r->trailers : r->headers;
    len = strlen(dst);
    snprintf(dst + len, (dst == r->trailers ? sizeof(r->trailers)
                                           : sizeof(r->headers)) - len,
             "%.*s: %.*s\n", (int)nl, name, (int)vl, value);
    return 0;
}

static inline int
cb_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *d,
        size_t len, void *u)
{
    h2res *r = nghttp2_session_get_stream_user_data(ng, id);

    (void)flags;
    (void)u;
    if (r == NULL)
        return 0;
    r->body = realloc(r->body, r->body_len + len + 1);
    memcpy(r->body + r->body_len, d, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static inline int
cb_close(nghttp2_session *ng, int32_t id, uint32_t code, void *u)
{
    h2res *r = nghttp2_session_get_stream_user_data(ng, id);

    (void)u;
    if (r != NULL) {
        r->closed = true;
        r->rst = code;
    }
    return 0;
}

static inline int
cb_frame(nghttp2_session *ng, const nghttp2_frame *f, void *u)
{
    h2cli *c = u;

    (void)ng;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true;
        c->goaway_code = f->goaway.error_code;
    }
    return 0;
}

static inline h2cli *
h2c_open(void)
{
    h2cli *c = calloc(1, sizeof(*c));
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port) };
    nghttp2_session_callbacks *cb;

    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, cb_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cb_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, cb_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cb_frame);
    assert_int_equal(nghttp2_session_client_new(&c->ng, cb, c), 0);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, NULL, 0);
    return c;
}

static inline void
h2c_close(h2cli *c)
{
    for (int i = 0; i < c->nres; i++)
        free(c->res[i].body);
    nghttp2_session_del(c->ng);
    close(c->fd);
    free(c);
}

/* Send what the session has, then read for up to ms; false once EOF. */
static inline bool
h2c_pump(h2cli *c, int ms)
{
    const uint8_t *p;
    ssize_t n;
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
    char buf[65536];

    while ((n = nghttp2_session_mem_send(c->ng, &p)) > 0)
        for (ssize_t off = 0; off < n;) {
            ssize_t w = send(c->fd, p + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w <= 0)
                return !(c->eof = true);
            off += w;
        }
    if (c->eof || poll(&pfd, 1, ms) <= 0)
        return !c->eof;
    n = recv(c->fd, buf, sizeof(buf), 0);
    if (n <= 0)
        return !(c->eof = true);
    if (nghttp2_session_mem_recv(c->ng, (uint8_t *)buf, (size_t)n) < 0)
        c->eof = true;
    return !c->eof;
}

static inline ssize_t
upload_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
            uint32_t *flags, nghttp2_data_source *src, void *u)
{
    h2upload *up = src->ptr;
    size_t n = up->len - up->off < len ? up->len - up->off : len;

    (void)ng;
    (void)id;
    (void)u;
    memcpy(buf, up->data + up->off, n);
    up->off += n;
    if (up->off == up->len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, \
                   strlen(v), NGHTTP2_NV_FLAG_NONE }

/* Submit a request; up (or NULL) is its body.  extra headers optional. */
static inline h2res *
h2c_req(h2cli *c, const char *method, const char *path, h2upload *up,
        const nghttp2_nv *extra, size_t nextra)
{
    nghttp2_nv nv[40] = { NV(":method", method), NV(":scheme", "http"),
                          NV(":authority", "example.test"),
                          NV(":path", path) };
    nghttp2_data_provider prd = { .source.ptr = up, .read_callback = upload_read };
    h2res *r = &c->res[c->nres++];

    for (size_t i = 0; i < nextra; i++)
        nv[4 + i] = extra[i];
    r->id = nghttp2_submit_request(c->ng, NULL, nv, 4 + nextra,
                                   up != NULL ? &prd : NULL, r);
    assert_true(r->id > 0);
    return r;
}

/* Pump until r is closed (or EOF / 20 s). */
static inline void
h2c_wait(h2cli *c, h2res *r)
{
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!r->closed && h2c_pump(c, 10)) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 20)
            break;
    }
}

#endif
