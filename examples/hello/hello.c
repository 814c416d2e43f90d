/*
 * hello.c - kiban-hello, the example service the quickstart runs.
 *
 * A small HTTP/1.1 server using only libc: one poll() loop, non-blocking
 * sockets, keep-alive, Content-Length bodies.  It does what every kiban
 * service does: listen on 127.0.0.1:$PORT and exit cleanly on SIGTERM.
 *
 *   GET  /hello          {"message":"Hello from kiban!","service":…,"pid":…}
 *   GET  /hello/{name}   {"message":"Hello, {name}!"}
 *   GET  /healthz        ok
 *   GET  /headers        the request headers as a JSON object (names in
 *                        lower case; repeated headers joined with ", ")
 *   POST /echo           the request body, as sent
 *   GET  /crash          exit(3) at once (tests use it to check restarts)
 *   GET  /sleep/{ms}     answer after ms milliseconds (≤ 60 s); the whole
 *                        process waits meanwhile (tests use it to keep a
 *                        request in flight)
 *   GET  /health/fail    /healthz answers 503 from now on (probe tests)
 *   GET  /health/ok      /healthz answers 200 again
 *
 * Environment: PORT (required), K_SERVICE and K_REVISION (set by kiban),
 * GREETING, HELLO_START_DELAY_MS (wait this long before listening: a slow
 * start).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* memmem, accept4 */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS    1024
#define MAX_REQUEST  (64 * 1024)    /* head + body of one request */
#define MAX_HEADERS  64
#define MAX_RESPONSE (MAX_REQUEST * 7 + 4096) /* worst case: escaped echo */

struct conn {
    int    fd;
    char   in[MAX_REQUEST];
    size_t inlen;
    char  *out;                 /* pending response bytes */
    size_t outlen, outoff;
    int    close_after;         /* close once `out` is written */
};

struct header { char *name, *value; };

static volatile sig_atomic_t stopping;
static const char *service_name = "hello";
static const char *greeting = "Hello from kiban!";
static const char *revision = "";
static int unhealthy;
static struct conn *conns[MAX_CONNS];

static void
on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* A string with a fixed capacity; text past it is dropped. */
struct str { char *p; size_t len, cap; };

static void
str_add(struct str *s, const char *data, size_t n)
{
    if (s->len + n >= s->cap)
        return;                 /* cannot happen for the bodies we build */
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void
str_addf(struct str *s, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof(tmp))
        str_add(s, tmp, (size_t)n);
}

/* Append `v` (n bytes) as a quoted JSON string. */
static void
str_json(struct str *s, const char *v, size_t n)
{
    str_add(s, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            str_add(s, esc, 2);
        } else if (c < 0x20) {
            str_addf(s, "\\u%04x", c);
        } else {
            str_add(s, (const char *)&c, 1);
        }
    }
    str_add(s, "\"", 1);
}

/* Set while answering HEAD: the head says the length, no body follows. */
static int head_only;

/* Queue a complete response on `c`. */
static void
respond(struct conn *c, int status, const char *type, const char *body,
        size_t bodylen)
{
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found"
                       : status == 413 ? "Content Too Large" : "Bad Request";
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %.100s\r\n"
                     "Content-Length: %zu\r\n%s\r\n", status, reason, type,
                     bodylen, c->close_after ? "Connection: close\r\n" : "");
    if (head_only)
        bodylen = 0;
    char *out = realloc(c->out, c->outlen + (size_t)n + bodylen);
    if (out == NULL) {
        c->close_after = 1;
        return;
    }
    c->out = out;
    memcpy(c->out + c->outlen, head, (size_t)n);
    memcpy(c->out + c->outlen + (size_t)n, body, bodylen);
    c->outlen += (size_t)n + bodylen;
}

static void
respond_json(struct conn *c, int status, struct str *body)
{
    respond(c, status, "application/json", body->p, body->len);
}

/* Route one parsed request. */
static void
handle(struct conn *c, const char *method, const char *path,
       struct header *h, int nh, const char *body, size_t bodylen)
{
    static char space[MAX_RESPONSE], joined[MAX_REQUEST];
    struct str s = { space, 0, sizeof(space) };
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    head_only = strcmp(method, "HEAD") == 0;

    if (get && strcmp(path, "/crash") == 0) {
        fprintf(stderr, "kiban-hello: /crash requested, exiting with 3\n");
        exit(3);
    }
    if (get && strcmp(path, "/hello") == 0) {
        str_add(&s, "{\"message\":", 11);
        str_json(&s, greeting, strlen(greeting));
        str_add(&s, ",\"service\":", 11);
        str_json(&s, service_name, strlen(service_name));
        str_add(&s, ",\"revision\":", 12);
        str_json(&s, revision, strlen(revision));
        str_addf(&s, ",\"pid\":%ld}", (long)getpid());
    } else if (get && strncmp(path, "/hello/", 7) == 0 && path[7] != '\0'
               && strchr(path + 7, '/') == NULL) {
        char msg[512];
        int n = snprintf(msg, sizeof(msg), "Hello, %s!", path + 7);
        str_add(&s, "{\"message\":", 11);
        str_json(&s, msg, n < (int)sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
        str_add(&s, "}", 1);
    } else if (get && strcmp(path, "/healthz") == 0) {
        if (unhealthy)
            respond(c, 503, "text/plain", "unhealthy\n", 10);
        else
            respond(c, 200, "text/plain", "ok\n", 3);
        return;
    } else if (get && (strcmp(path, "/health/fail") == 0
                       || strcmp(path, "/health/ok") == 0)) {
        unhealthy = path[8] == 'f';
        fprintf(stderr, "kiban-hello: health set to %s\n",
                unhealthy ? "failing" : "ok");
        respond(c, 200, "text/plain", "ok\n", 3);
        return;
    } else if (get && strncmp(path, "/sleep/", 7) == 0) {
        long ms = strtol(path + 7, NULL, 10);
        struct timespec ts;
        if (ms < 0 || ms > 60000)
            ms = 0;
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (ms % 1000) * 1000000L;
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        str_addf(&s, "{\"slept\":%ld,\"pid\":%ld}", ms, (long)getpid());
    } else if (get && strcmp(path, "/headers") == 0) {
        str_add(&s, "{", 1);
        for (int i = 0; i < nh; i++) {
            int seen = 0;
            for (int j = 0; j < i && !seen; j++)
                seen = strcmp(h[j].name, h[i].name) == 0;
            if (seen)
                continue;
            struct str v = { joined, 0, sizeof(joined) };
            for (int j = i; j < nh; j++) {
                if (strcmp(h[j].name, h[i].name) != 0)
                    continue;
                if (v.len > 0)
                    str_add(&v, ", ", 2);
                str_add(&v, h[j].value, strlen(h[j].value));
            }
            if (s.len > 1)
                str_add(&s, ",", 1);
            str_json(&s, h[i].name, strlen(h[i].name));
            str_add(&s, ":", 1);
            str_json(&s, v.p, v.len);
        }
        str_add(&s, "}", 1);
    } else if (strcmp(method, "POST") == 0 && strcmp(path, "/echo") == 0) {
        const char *type = "application/octet-stream";
        for (int i = 0; i < nh; i++)
            if (strcmp(h[i].name, "content-type") == 0)
                type = h[i].value;
        respond(c, 200, type, body, bodylen);
        return;
    } else {
        str_add(&s, "{\"error\":\"not found\",\"path\":", 28);
        str_json(&s, path, strlen(path));
        str_add(&s, "}", 1);
        respond_json(c, 404, &s);
        return;
    }
    respond_json(c, 200, &s);
}

/*
 * Answer every complete request in c->in.  The head is parsed from a copy,
 * so a request whose body has not fully arrived is simply parsed again
 * when more bytes come.  A malformed request gets a 400 (413 when too
 * large) and the connection closes after it.
 */
static void
process(struct conn *c)
{
    static char head[MAX_REQUEST];

    while (!c->close_after) {
        char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (end == NULL) {
            if (c->inlen == sizeof(c->in))
                goto bad;       /* head larger than the whole buffer */
            return;
        }
        size_t headlen = (size_t)(end - c->in) + 4;
        memcpy(head, c->in, headlen - 4);
        head[headlen - 4] = '\0';

        /* Request line: METHOD SP PATH SP VERSION */
        char *save, *line = strtok_r(head, "\r\n", &save), *sp;
        char *method = line ? strtok_r(line, " ", &sp) : NULL;
        char *path = method ? strtok_r(NULL, " ", &sp) : NULL;
        char *version = path ? strtok_r(NULL, " ", &sp) : NULL;
        if (version == NULL || strncmp(version, "HTTP/1.", 7) != 0)
            goto bad;
        int keep_alive = strcmp(version, "HTTP/1.1") == 0;
        path[strcspn(path, "?")] = '\0';   /* routes ignore the query */

        struct header h[MAX_HEADERS];
        int nh = 0;
        long clen = 0;
        char *hl;
        while ((hl = strtok_r(NULL, "\r\n", &save)) != NULL) {
            char *colon = strchr(hl, ':');
            if (colon == NULL || nh == MAX_HEADERS)
                goto bad;
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            for (char *p = hl; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            h[nh].name = hl;
            h[nh++].value = v;
            if (strcmp(hl, "content-length") == 0) {
                char *e;
                errno = 0;
                clen = strtol(v, &e, 10);
                if (errno != 0 || e == v || *e != '\0' || clen < 0)
                    goto bad;
            } else if (strcmp(hl, "transfer-encoding") == 0) {
                goto bad;       /* chunked bodies are not supported */
            } else if (strcmp(hl, "connection") == 0) {
                keep_alive = strcasecmp(v, "close") != 0;
            }
        }
        if ((size_t)clen > sizeof(c->in) - headlen) {
            c->close_after = 1;
            respond(c, 413, "text/plain", "too large\n", 10);
            return;
        }
        if (c->inlen < headlen + (size_t)clen)
            return;             /* body not all here yet */
        if (!keep_alive)
            c->close_after = 1;
        handle(c, method, path, h, nh, c->in + headlen, (size_t)clen);
        size_t used = headlen + (size_t)clen;
        memmove(c->in, c->in + used, c->inlen - used);
        c->inlen -= used;
    }
    return;
bad:
    c->close_after = 1;
    respond(c, 400, "text/plain", "bad request\n", 12);
}

static void
conn_close(int i)
{
    close(conns[i]->fd);
    free(conns[i]->out);
    free(conns[i]);
    conns[i] = NULL;
}

/* Read what is there; returns -1 when the connection should go. */
static int
on_readable(struct conn *c)
{
    if (c->close_after)
        return 0;               /* finishing a response; read no more */
    ssize_t n = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return -1;
    if (n > 0) {
        c->inlen += (size_t)n;
        process(c);
    }
    return 0;
}

static int
on_writable(struct conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->outoff += (size_t)n;
    }
    c->outoff = c->outlen = 0;
    return c->close_after ? -1 : 0;
}

int
main(void)
{
    const char *port_s = getenv("PORT");
    char *end;
    long port = port_s ? strtol(port_s, &end, 10) : 0;
    if (port_s == NULL || *port_s == '\0' || *end != '\0' || port < 1
        || port > 65535) {
        fprintf(stderr, "kiban-hello: PORT must be set to a port number "
                "(1-65535), got %s\n", port_s ? port_s : "nothing");
        return 2;
    }
    if (getenv("K_SERVICE") != NULL && *getenv("K_SERVICE") != '\0')
        service_name = getenv("K_SERVICE");
    if (getenv("GREETING") != NULL)
        greeting = getenv("GREETING");
    if (getenv("K_REVISION") != NULL)
        revision = getenv("K_REVISION");
    const char *delay = getenv("HELLO_START_DELAY_MS");
    if (delay != NULL && strtol(delay, NULL, 10) > 0) {
        long ms = strtol(delay, NULL, 10) % 600000;
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }

    struct sigaction sa = { .sa_handler = on_signal };  /* no SA_RESTART */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in addr = { .sin_family = AF_INET,
                                .sin_port = htons((unsigned short)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0
        || listen(lfd, 128) < 0) {
        fprintf(stderr, "kiban-hello: cannot listen on 127.0.0.1:%ld: %s\n",
                port, strerror(errno));
        return 1;
    }
    fprintf(stderr, "kiban-hello: %s listening on 127.0.0.1:%ld (pid %ld)\n",
            service_name, port, (long)getpid());

    while (!stopping) {
        struct pollfd pfd[MAX_CONNS + 1];
        int idx[MAX_CONNS + 1], n = 1;
        pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        for (int i = 0; i < MAX_CONNS; i++) {
            if (conns[i] == NULL)
                continue;
            short ev = conns[i]->outlen > 0 ? POLLOUT : POLLIN;
            pfd[n] = (struct pollfd){ .fd = conns[i]->fd, .events = ev };
            idx[n++] = i;
        }
        if (poll(pfd, (nfds_t)n, -1) < 0)
            continue;           /* EINTR: the loop checks `stopping` */

        if (pfd[0].revents & POLLIN) {
            int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            int slot = 0;
            while (fd >= 0 && slot < MAX_CONNS && conns[slot] != NULL)
                slot++;
            if (fd >= 0 && slot < MAX_CONNS
                && (conns[slot] = calloc(1, sizeof(struct conn))) != NULL)
                conns[slot]->fd = fd;
            else if (fd >= 0)
                close(fd);      /* full: refuse */
        }
        for (int k = 1; k < n; k++) {
            struct conn *c = conns[idx[k]];
            int rc = 0;
            if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR))
                rc = on_readable(c);
            if (rc == 0 && (c->outlen > 0 || c->close_after))
                rc = on_writable(c);
            if (rc < 0)
                conn_close(idx[k]);
        }
    }

    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i] != NULL)
            conn_close(i);
    close(lfd);
    fprintf(stderr, "kiban-hello: stopped\n");
    return 0;
}
