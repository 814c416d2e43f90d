/*
 * client.h - HTTP/1.1 upstream client with per-backend keep-alive pools.
 *
 * A kb_http_client holds one pool of idle keep-alive connections per
 * backend (host, port).  A call sends one request and delivers the whole
 * response (body buffered up to max_body, chunked or Content-Length or
 * read-until-close decoded) to the callback.  If a reused idle connection
 * turns out to be closed before any byte of the response arrived, the
 * request is retried once on a fresh connection when it is idempotent
 * (GET, HEAD, PUT, DELETE, OPTIONS, TRACE).
 *
 * Errors given to the callback: KB_ETIMEDOUT (deadline passed),
 * -ECONNREFUSED and other -errno (connect/IO failure), KB_EPARSE (bad
 * response), KB_ETOOBIG (response over max_body).  All on the loop thread.
 */
#ifndef KB_HTTP_CLIENT_H
#define KB_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/server.h"        /* kb_http_header */

typedef struct kb_http_client      kb_http_client;
typedef struct kb_http_client_call kb_http_client_call;

typedef struct kb_http_client_opts {
    size_t   max_idle_per_backend;  /* 0 → 64 */
    uint64_t idle_timeout_ms;       /* 0 → 30 s: idle pooled conn closed */
    uint64_t connect_timeout_ms;    /* 0 → 5 s */
    size_t   max_body;              /* 0 → 32 MiB */
    size_t   max_head;              /* 0 → 64 KiB */
} kb_http_client_opts;

typedef struct kb_http_client_req {
    const char *method;             /* "GET" … */
    const char *host;               /* IP literal or name (resolved off-loop) */
    int         port;
    const char *target;             /* "/path?query" */
    const kb_http_header *headers;  /* Host is added if absent; Content-
                                       Length/Transfer-Encoding/Connection
                                       given here are dropped */
    size_t      nheaders;
    const char *body;
    size_t      body_len;
    uint64_t    timeout_ms;         /* whole exchange; 0 → 15 s */
    /* kb_curl_client only (curl_client.h); kb_http_client ignores them */
    bool        tls;                /* https: verify against `host` */
    bool        h2;                 /* HTTP/2 (prior knowledge if !tls) */
} kb_http_client_req;

typedef struct kb_http_client_res {
    int             status;
    int             version_minor;
    kb_http_header *headers;        /* valid during the callback only */
    size_t          nheaders;
    const char     *body;           /* NUL-terminated, valid during cb */
    size_t          body_len;
    kb_http_header *trailers;       /* HTTP/2 trailers (gRPC status) */
    size_t          ntrailers;
} kb_http_client_res;

/* res is NULL when err != 0. Called exactly once unless canceled. */
typedef void (*kb_http_client_cb)(int err, const kb_http_client_res *res,
                                  void *data);

int  kb_http_client_create(uv_loop_t *loop, const kb_http_client_opts *opts,
                           kb_http_client **out);
/*
 * Start a call.  Everything in `req` is copied.  On success returns 0 and
 * (if `call` is not NULL) a handle usable with kb_http_client_cancel()
 * until the callback runs.  On failure returns -errno and never calls cb.
 */
int  kb_http_client_send(kb_http_client *c, const kb_http_client_req *req,
                         kb_http_client_cb cb, void *data,
                         kb_http_client_call **call);
/* Abandon a call: its callback will not run; its connection is closed. */
void kb_http_client_cancel(kb_http_client_call *call);
/* Number of idle pooled connections to host:port (tests, metrics). */
size_t kb_http_client_idle(const kb_http_client *c, const char *host,
                           int port);
/* Close every connection; pending calls get KB_ECANCELED; then free. */
void kb_http_client_destroy(kb_http_client *c);

/* First header with this name (case-insensitive) in a response, or NULL. */
const char *kb_http_client_res_header(const kb_http_client_res *res,
                                      const char *name);

#endif
