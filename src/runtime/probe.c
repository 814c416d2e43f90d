/*
 * probe.c - one tcpSocket or httpGet attempt against 127.0.0.1:PORT (see
 * probe.h).  A run owns a TCP handle and a timer; whichever of connect,
 * read and timer decides first calls back, then both handles close and the
 * run is freed in the last close callback.
 */
#include "runtime/probe.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define PROBE_DEFAULT_TIMEOUT_MS 1000

struct rt_probe_run {
    uv_tcp_t      tcp;
    uv_timer_t    timer;
    uv_connect_t  conn;
    uv_write_t    wreq;
    rt_probe_cb   cb;
    void         *data;
    bool          http;
    bool          done;         /* called back or canceled */
    int           open;         /* handles not closed yet */
    uint64_t      timeout_ms;
    char         *req;          /* the GET request (httpGet) */
    size_t        reqlen;
    size_t        len;          /* bytes of response in resp */
    char          why[96];
    char          resp[KB_RT_PROBE_READ_MAX];
};

static void
run_closed(uv_handle_t *h)
{
    rt_probe_run *r = h->data;

    if (--r->open > 0)
        return;
    free(r->req);
    free(r);
}

/* Close both handles; the callback (if any) no longer runs. */
static void
run_close(rt_probe_run *r)
{
    r->done = true;
    if (!uv_is_closing((uv_handle_t *)&r->tcp))
        uv_close((uv_handle_t *)&r->tcp, run_closed);
    if (!uv_is_closing((uv_handle_t *)&r->timer))
        uv_close((uv_handle_t *)&r->timer, run_closed);
}

/* The attempt is decided: close, then tell the caller (r->why stays valid
 * until the close callbacks, which run on a later loop iteration). */
static void
run_finish(rt_probe_run *r, bool ok)
{
    if (r->done)
        return;
    run_close(r);
    r->cb(r->data, ok, r->why);
}

/*
 * "HTTP/1.1 200 …": the status code of a status line held in buf[0..len)
 * (len counts up to, not including, the line end), or -1 if it is not one.
 */
static int
status_code(const char *buf, size_t len)
{
    const unsigned char *s = (const unsigned char *)buf;

    if (len < 12 || memcmp(s, "HTTP/", 5) != 0)
        return -1;
    if (s[5] < '0' || s[5] > '9' || s[6] != '.' || s[7] < '0' ||
        s[7] > '9' || s[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    if (len > 12 && s[12] != ' ' && s[12] != '\r')
        return -1;
    return (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
}

/* Decide on the status line in resp[0..linelen). */
static void
judge_status(rt_probe_run *r, size_t linelen)
{
    int code = status_code(r->resp, linelen);

    if (code < 0) {
        snprintf(r->why, sizeof(r->why), "bad status line");
        run_finish(r, false);
        return;
    }
    snprintf(r->why, sizeof(r->why), "HTTP %d", code);
    run_finish(r, code >= 200 && code < 400);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    rt_probe_run *r = h->data;

    (void)hint;
    /* Never full here: a full buffer has been judged already. */
    *buf = uv_buf_init(r->resp + r->len,
                       (unsigned)(sizeof(r->resp) - r->len));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    rt_probe_run *r = s->data;
    const char *nl;

    (void)buf;
    if (r->done)
        return;
    if (nread == UV_EOF) {
        if (r->len == 0) {
            snprintf(r->why, sizeof(r->why),
                     "connection closed before a response");
            run_finish(r, false);
        } else {
            judge_status(r, r->len);
        }
        return;
    }
    if (nread < 0) {
        snprintf(r->why, sizeof(r->why), "%s", uv_strerror((int)nread));
        run_finish(r, false);
        return;
    }
    r->len += (size_t)nread;
    nl = memchr(r->resp, '\n', r->len);
    if (nl != NULL) {
        judge_status(r, (size_t)(nl - r->resp));
    } else if (r->len == sizeof(r->resp)) {
        snprintf(r->why, sizeof(r->why), "status line too long");
        run_finish(r, false);
    }
}

static void
on_write(uv_write_t *w, int status)
{
    /* A failed write shows up as a read error or EOF (or the timeout). */
    (void)w, (void)status;
}

static void
on_connect(uv_connect_t *c, int status)
{
    rt_probe_run *r = c->data;
    uv_buf_t b;
    int err;

    if (r->done)                        /* canceled: status is ECANCELED */
        return;
    if (status < 0) {
        snprintf(r->why, sizeof(r->why), "%s", uv_strerror(status));
        run_finish(r, false);
        return;
    }
    if (!r->http) {
        snprintf(r->why, sizeof(r->why), "connected");
        run_finish(r, true);
        return;
    }
    b = uv_buf_init(r->req, (unsigned)r->reqlen);
    err = uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, on_write);
    if (err == 0)
        err = uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
    if (err < 0) {
        snprintf(r->why, sizeof(r->why), "%s", uv_strerror(err));
        run_finish(r, false);
    }
}

static void
on_timeout(uv_timer_t *t)
{
    rt_probe_run *r = t->data;

    snprintf(r->why, sizeof(r->why), "timed out after %" PRIu64 " ms",
             r->timeout_ms);
    run_finish(r, false);
}

/* Is path something we may put on a request line? */
static bool
path_ok(const char *path)
{
    size_t n = strlen(path);

    if (n == 0 || n > KB_RT_PROBE_PATH_MAX || path[0] != '/')
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)path[i] <= 0x20 || (unsigned char)path[i] >= 0x7f)
            return false;
    return true;
}

/* The GET request for path, in a new buffer (*len bytes); NULL: ENOMEM. */
static char *
build_request(const char *path, int port, size_t *len)
{
    static const char fmt[] =
        "GET %s HTTP/1.1\r\n"
        "Host: 127.0.0.1:%d\r\n"
        "User-Agent: kiban-probe/1\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n"
        "\r\n";
    size_t cap = strlen(path) + sizeof(fmt) + 8;
    char *buf = malloc(cap);
    int n;

    if (buf == NULL)
        return NULL;
    n = snprintf(buf, cap, fmt, path, port);
    if (n < 0 || (size_t)n >= cap) {
        free(buf);
        return NULL;
    }
    *len = (size_t)n;
    return buf;
}

int
kb__rt_probe_start(uv_loop_t *loop, int port, const rt_probe *p,
                   rt_probe_cb cb, void *data, rt_probe_run **out)
{
    const char *path = "/";
    struct sockaddr_in addr;
    rt_probe_run *r;
    int err;

    *out = NULL;
    if (port <= 0 || port > 65535 || p == NULL || cb == NULL)
        return KB_EINVAL;
    if (p->http && p->path != NULL && p->path[0] != '\0')
        path = p->path;
    if (p->http && !path_ok(path))
        return KB_EINVAL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return KB_ENOMEM;
    r->cb = cb;
    r->data = data;
    r->http = p->http;
    r->timeout_ms = p->timeout_ms > 0 ? p->timeout_ms
                                      : PROBE_DEFAULT_TIMEOUT_MS;
    if (r->http) {
        r->req = build_request(path, port, &r->reqlen);
        if (r->req == NULL) {
            free(r);
            return KB_ENOMEM;
        }
    }
    err = uv_timer_init(loop, &r->timer);
    if (err < 0)
        goto out_free;
    r->timer.data = r;
    r->open++;
    err = uv_tcp_init(loop, &r->tcp);
    if (err < 0)
        goto out_close_timer;
    r->tcp.data = r;
    r->conn.data = r;
    r->open++;
    uv_ip4_addr("127.0.0.1", port, &addr);
    err = uv_tcp_connect(&r->conn, &r->tcp, (const struct sockaddr *)&addr,
                         on_connect);
    if (err < 0)
        goto out_close;
    uv_timer_start(&r->timer, on_timeout, r->timeout_ms, 0);
    *out = r;
    return 0;

out_close:
    run_close(r);                       /* freed in the close callbacks */
    return err;
out_close_timer:
    r->done = true;
    uv_close((uv_handle_t *)&r->timer, run_closed);
    return err;
out_free:
    free(r->req);
    free(r);
    return err;
}

void
kb__rt_probe_cancel(rt_probe_run *r)
{
    if (r == NULL || r->done)
        return;
    run_close(r);
}
