/*
 * server.h - kiban's HTTP/1.1 server on a libuv loop.
 *
 * One kb_http_server is one listener.  It parses requests strictly
 * (parser.h), buffers the request body up to the configured limit, and then
 * hands a complete kb_http_req to the handler.  The handler answers at once
 * or later (after an upstream call, a store call …) with exactly one of
 * kb_http_respond*() or the streaming trio kb_http_response_start/write/end.
 *
 * Ownership: the server owns the request.  It stays valid until the response
 * has been handed over (kb_http_respond*() or kb_http_response_end()), even
 * if the client goes away meanwhile: in that case the on_abort hook fires,
 * and the response calls still must be made (they then only release the
 * request).  Everything allocated from req->pool is freed with the request.
 *
 * The server answers by itself, with a JSON error body, requests it cannot
 * parse (400), heads over the limit (431), bodies over the limit (413), slow
 * heads (408), unsupported transfer codings (501) and unsupported versions
 * (505).  It keeps connections alive, serves pipelined requests in order,
 * answers `Expect: 100-continue`, and counts every request in the metrics
 * kiban_http_requests_total{listener,code} and
 * kiban_http_request_duration_seconds{listener}.
 */
#ifndef KB_HTTP_SERVER_H
#define KB_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/pool.h"

typedef struct kb_http_header {
    const char *name;       /* NUL-terminated; as received (compare with   */
    const char *value;      /* strcasecmp); value trimmed of OWS           */
} kb_http_header;

typedef struct kb_http_server  kb_http_server;
typedef struct kb_http_req     kb_http_req;
typedef struct kb_http_iplimit kb_http_iplimit;

typedef void (*kb_http_handler)(kb_http_req *req, void *data);
typedef void (*kb_http_abort_cb)(kb_http_req *req, void *data);

struct kb_http_req {
    kb_pool        *pool;         /* per-request arena */
    const char     *method;       /* "GET", … */
    const char     *target;       /* raw request-target */
    const char     *path;         /* target up to '?', not percent-decoded */
    const char     *query;        /* after '?', "" when none */
    int             version_minor;/* HTTP/1.<minor> */
    kb_http_header *headers;
    size_t          nheaders;
    const char     *body;         /* NUL-terminated copy; "" when none */
    size_t          body_len;
    char            remote_addr[64]; /* peer IP as text */
    int             remote_port;
    bool            tls;          /* arrived over TLS (X-Forwarded-Proto) */
    int             http_major;   /* 1, or 2 for an HTTP/2 stream */
    const char     *authority;    /* HTTP/2 :authority (also as Host) */
    uint64_t        start_ns;     /* monotonic, when the head was complete */
    kb_http_server *server;
    void           *data;         /* for the handler */
    void           *conn_;        /* private to the server */
};

typedef struct kb_http_server_opts {
    const char     *name;            /* "gateway", "api": metrics and logs */
    kb_http_handler handler;
    void           *data;            /* handed to the handler */
    size_t          max_head;        /* 0 → 64 KiB */
    size_t          max_headers;     /* 0 → 100 */
    size_t          max_body;        /* 0 → 32 MiB */
    uint64_t        header_timeout_ms; /* 0 → 10 s: head must arrive within */
    uint64_t        body_timeout_ms;   /* 0 → 60 s: body must arrive within */
    uint64_t        idle_timeout_ms;   /* 0 → 60 s: keep-alive idle */
    size_t          max_connections; /* 0 → 10000; over it: accept and close */
    bool            reuseport;       /* SO_REUSEPORT: one listener per loop */
    struct kb_tls_server *tls;       /* TLS listener (tls.h); NULL: plain */
    bool            h2;              /* HTTP/2: h2c prior knowledge when
                                        plain, ALPN "h2" over TLS */
    size_t          max_conns_per_ip;/* 0 → no per-IP limit */
    kb_http_iplimit *iplimit;        /* shared per-IP counts (several
                                        listeners, any threads); NULL: the
                                        server's own, per max_conns_per_ip */
} kb_http_server_opts;

/*
 * Listen on `addr` ("127.0.0.1:8080", "[::1]:8080", ":8080" = all IPv4).
 * opts is copied (name is duplicated).  Returns 0 and *out, or -errno
 * (KB_EINVAL for a bad address, -EADDRINUSE …).
 */
int  kb_http_server_start(uv_loop_t *loop, const char *addr,
                          const kb_http_server_opts *opts,
                          kb_http_server **out);
/*
 * A per-client-IP count of open connections that several listeners (one
 * per loop) share, so the limit holds for the process.  Thread-safe.
 * Free it after every server using it has shut down.
 */
int  kb_http_iplimit_create(size_t max_per_ip, kb_http_iplimit **out);
void kb_http_iplimit_free(kb_http_iplimit *l);

/* The port actually bound (useful with port 0). */
int  kb_http_server_port(const kb_http_server *srv);
/* Requests handed to the handler and not yet answered. */
size_t kb_http_server_inflight(const kb_http_server *srv);
/*
 * Graceful shutdown: stop accepting, close idle connections, let in-flight
 * requests finish (their responses carry Connection: close), and after
 * grace_ms close whatever is left.  done(data) runs once every connection
 * is closed; then the server is freed.  Requests whose connection was
 * force-closed still need their response call (it only releases them).
 */
void kb_http_server_shutdown(kb_http_server *srv, uint64_t grace_ms,
                             void (*done)(void *data), void *data);

/* First header with this name (case-insensitive), or NULL. */
const char *kb_http_req_header(const kb_http_req *req, const char *name);
/* Value of query parameter `name`, percent-decoded, allocated from the
 * request pool; NULL when absent. */
const char *kb_http_req_query(const kb_http_req *req, const char *name);
/* Called (once) if the client disconnects before the response is done. */
void kb_http_req_on_abort(kb_http_req *req, kb_http_abort_cb cb, void *data);

/*
 * Whole responses.  headers may be NULL; the server adds Content-Length,
 * Date and Connection itself (and drops any of those, and any
 * Transfer-Encoding, given here).  The body is copied.  Always
 * "succeeds" from the caller's view: the request is released either way.
 */
void kb_http_respond(kb_http_req *req, int status,
                     const kb_http_header *headers, size_t nheaders,
                     const char *body, size_t body_len);
/*
 * A whole response followed by trailers (gRPC's grpc-status): an HTTP/2
 * trailing HEADERS frame; for HTTP/1.1, a chunked body with a trailer
 * section.  Otherwise as kb_http_respond.
 */
void kb_http_respond_trailers(kb_http_req *req, int status,
                              const kb_http_header *headers, size_t nheaders,
                              const char *body, size_t body_len,
                              const kb_http_header *trailers,
                              size_t ntrailers);
/* JSON body (Content-Type: application/json); steals the reference. */
void kb_http_respond_json(kb_http_req *req, int status, json_t *body);
/* {"error":{"code":status,"status":"NOT_FOUND","message":message}}; the
 * status name follows the Google API mapping of the HTTP code. */
void kb_http_respond_error(kb_http_req *req, int status, const char *message);
/* Google status name for an HTTP status (404 → "NOT_FOUND"). */
const char *kb_http_status_name(int status);
/* Reason phrase for a status code ("Not Found"), "" if unknown. */
const char *kb_http_reason(int status);

/*
 * Streaming responses: chunked transfer coding for HTTP/1.1 clients (plain
 * read-until-close for HTTP/1.0).  write() copies the data and returns 0,
 * or KB_ECANCELED once the client is gone (keep calling end()).
 */
int  kb_http_response_start(kb_http_req *req, int status,
                            const kb_http_header *headers, size_t nheaders);
int  kb_http_response_write(kb_http_req *req, const char *data, size_t len);
void kb_http_response_end(kb_http_req *req);

#endif
