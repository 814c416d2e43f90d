/*
 * http_internal.h - what the pieces of the HTTP server share: server.c (the
 * connections and HTTP/1.1), h2.c (HTTP/2 streams over a connection) and
 * tls.c (OpenSSL over the connection's bytes).  Also the one helper shared
 * with client.c.  Nothing here is a public API.
 */
#ifndef KB_HTTP_INTERNAL_H
#define KB_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "http/parser.h"
#include "http/server.h"

/* Set SIGPIPE to ignored if it still has the default action (server.c). */
void kb_http__ignore_sigpipe(void);

/* ---- connections and requests (server.c) -------------------------------- */

typedef enum kb_http__conn_state {
    CONN_IDLE,      /* between requests: nothing of the next one parsed yet
                     (for TLS: also while the handshake runs) */
    CONN_HEAD,      /* reading a request head */
    CONN_BODY,      /* reading a request body */
    CONN_HANDLER,   /* the handler has the request (maybe streaming) */
    CONN_FLUSH,     /* response handed over; waiting for the writes */
    CONN_LINGER,    /* our side shut down; draining input, then close */
    CONN_H2,        /* an HTTP/2 connection: h2.c drives it */
    CONN_CLOSED,    /* uv_close() called; freed in the close callbacks */
} kb_http__conn_state;

typedef struct kb_http__conn  kb_http__conn;
typedef struct kb_http__req   kb_http__req;
typedef struct kb_http__h2    kb_http__h2;       /* h2.c */
typedef struct kb_http__h2s   kb_http__h2s;      /* h2.c: one stream */
typedef struct kb_tls_conn    kb_tls_conn;       /* tls.c */
typedef struct kb_http__ipent kb_http__ipent;    /* server.c: per-IP count */

struct kb_http__conn {
    uv_tcp_t            tcp;
    uv_timer_t          timer;
    kb_http_server     *srv;
    kb_http__conn      *prev, *next;
    kb_buf              rbuf;          /* HTTP/1 input; freed while idle */
    size_t              rpos;          /* start of unprocessed input */
    kb_http__req       *req;           /* HTTP/1 request being served */
    kb_tls_conn        *tls;           /* NULL on a plain connection */
    kb_http__h2        *h2;            /* NULL unless HTTP/2 */
    kb_http__ipent     *ip;            /* per-IP count, NULL when off */
    kb_http__conn_state state;
    unsigned            nwrites;       /* uv_write requests in flight */
    size_t              wbytes;        /* bytes in those requests */
    uint64_t            since_ms;      /* uv_now when the current wait began */
    uint64_t            deadline_ms;   /* of the armed timer, 0 = none */
    uint64_t            head_deadline; /* CONN_HEAD / CONN_BODY deadline */
    unsigned            open_handles;
    bool                reading;
    bool                read_paused;   /* input full / output backlog */
    bool                read_into_body;/* on_alloc gave out body space */
    bool                peer_eof;
    bool                close_after;   /* close once the writes are done */
    bool                in_process;
    bool                in_pump;       /* TLS/h2 input being processed */
    bool                served;        /* a request was answered already */
    bool                proto_known;   /* h2c preface checked (plain h2) */
    char                remote_addr[64];
    int                 remote_port;
};

struct kb_http__req {
    kb_http_req      pub;          /* first: req * == kb_http_req * */
    kb_http__conn   *conn;         /* NULL once the connection is gone */
    kb_http__h2s    *h2s;          /* the HTTP/2 stream, NULL for HTTP/1 */
    kb_http_head     head;
    kb_http_chunked  chunk;
    kb_buf           body;
    uint64_t         body_left;    /* Content-Length bytes still to read */
    kb_http_abort_cb abort_cb;
    void            *abort_data;
    kb_http__req    *abort_next;   /* chain for kb_http__fire_aborts */
    int              status;
    bool             with_handler; /* counted in srv->inflight */
    bool             streaming;
    bool             chunked_out;
    bool             no_body;      /* HEAD, or a status without body */
    bool             done;
};

struct kb_http_server {
    uv_loop_t          *loop;
    uv_tcp_t            listener;
    uv_timer_t          grace;
    kb_http_server_opts opts;
    kb_http_limits      limits;
    char               *name;
    kb_http__conn      *conns;
    size_t              nconns;
    size_t              inflight;
    int                 port;
    unsigned            open_handles;
    bool                shutting_down;
    bool                grace_closing;
    bool                done_called;
    void              (*done)(void *);
    void               *done_data;
    time_t              date_sec;
    char                date[40];
    char               *iobuf;         /* TLS / h2 reads (one loop: shared) */
    char               *plainbuf;      /* TLS plaintext for h2 */
    kb_http_iplimit    *iplimit;       /* per-IP counts, NULL when off */
    bool                own_iplimit;   /* made by this server */
    kb_counter         *requests[5];   /* 1xx … 5xx */
    kb_counter         *rejected_max;  /* over max_connections */
    kb_counter         *rejected_ip;   /* over max_conns_per_ip */
    kb_histogram       *duration;
    kb_gauge           *connections;
};

#define KB_HTTP__IOBUF_SIZE     (64u * 1024)
#define KB_HTTP__PLAINBUF_SIZE  (16u * 1024)

/* server.c, for h2.c. */
/* Send bytes (through TLS when the connection has it); the memory is not
 * kept.  0, or KB_ECANCELED when the connection is (now) closing. */
int  kb_http__conn_write(kb_http__conn *c, const uv_buf_t *bufs, unsigned n);
/* Close the connection (idempotent); freed in the close callbacks. */
void kb_http__conn_close(kb_http__conn *c);
/* Re-arm the timer and reading after h2.c changed what it waits for. */
void kb_http__conn_arm(kb_http__conn *c);
/* A new request in a fresh pool: HTTP/1 (with parser fields for
 * max_headers) or HTTP/2 (http_major 2).  NULL when out of memory. */
kb_http__req *kb_http__req_new(kb_http__conn *c, bool http1);
/* Free a request (and uncount it from inflight).  The last use of r. */
void kb_http__req_release(kb_http__req *r);
/* Count a response in the listener's metrics. */
void kb_http__count(kb_http_server *srv, int status, uint64_t start_ns);
/* iplimit.c: count one more connection from ss's address: 0 and *out
 * (NULL when l is NULL or out of memory: not counted), KB_EBUSY at the
 * limit.  release undoes one acquire. */
int  kb_http__ip_acquire(kb_http_iplimit *l,
                         const struct sockaddr_storage *ss,
                         kb_http__ipent **out);
void kb_http__ip_release(kb_http_iplimit *l, kb_http__ipent *e);
/* For request.c's response functions (server.c): does this status carry
 * a body; is this header one the server sets itself; may the connection
 * stay open after r; the HTTP/1.x response head in r's pool (framing: the
 * Content-Length, -1 chunked, -2 none); and the bookkeeping once a whole
 * response is queued. */
bool  kb_http__status_has_body(int status);
bool  kb_http__header_reserved(const char *name);
bool  kb_http__req_keepalive(const kb_http__req *r);
char *kb_http__build_head(kb_http__req *r, int status,
                          const kb_http_header *hdrs, size_t nh,
                          long long framing, bool keepalive, size_t *len);
void  kb_http__response_done(kb_http__conn *c, kb_http__req *r,
                             bool keepalive);
/* Date header value (cached per second). */
const char *kb_http__date(kb_http_server *srv);
/* A header a handler may send (token name, no CR/LF/NUL in the value). */
bool kb_http__header_ok(const kb_http_header *h);
/* The Content-Length a handler announces for a HEAD response, else 0. */
long long kb_http__head_length(const kb_http_header *h, size_t nh);
/* Hand a complete request to the handler (counts it in inflight). */
void kb_http__dispatch(kb_http__req *r);
/* Run the on_abort hooks of a chain of detached requests (abort_next).
 * A hook may answer (and so free the server with its last request). */
void kb_http__fire_aborts(kb_http__req *list);

/* ---- HTTP/2 (h2.c) ---------------------------------------------------------- */

/* The first 24 bytes an HTTP/2 client sends (RFC 9113 §3.4). */
#define KB_HTTP__H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define KB_HTTP__H2_PREFACE_LEN 24u

/* Turn c into an HTTP/2 connection: our SETTINGS go out at once.  0, or
 * KB_ENOMEM (the caller closes c). */
int  kb_http__h2_start(kb_http__conn *c);
/* Bytes from the client.  0, or a negative error: close the connection. */
int  kb_http__h2_recv(kb_http__conn *c, const char *data, size_t len);
/* Write what nghttp2 has to send (bounded by the output queue limit); close
 * the connection when the session is over. */
void kb_http__h2_flush(kb_http__conn *c);
/* Too much output queued: stop reading from this client. */
bool kb_http__h2_backlogged(const kb_http__conn *c);
/* The timer deadline (uv_now ms) this HTTP/2 connection needs, 0 = none. */
uint64_t kb_http__h2_deadline(const kb_http__conn *c);
/* The timer fired: 408 late requests, close an idle connection. */
void kb_http__h2_timer(kb_http__conn *c);
/* Graceful shutdown: GOAWAY, let open streams finish. */
void kb_http__h2_goaway(kb_http__conn *c);
/* The connection is gone: free the session and its streams.  Returns the
 * requests still with the handler, detached, chained by abort_next, for
 * kb_http__fire_aborts once the caller is done with the server. */
kb_http__req *kb_http__h2_free(kb_http__conn *c);
/* Responses on a stream (server.c calls these for HTTP/2 requests). */
void kb_http__h2_respond(kb_http__req *r, int status,
                         const kb_http_header *hdrs, size_t nh,
                         const char *body, size_t len,
                         const kb_http_header *trailers, size_t nt);
int  kb_http__h2_start_response(kb_http__req *r, int status,
                                const kb_http_header *hdrs, size_t nh);
int  kb_http__h2_write(kb_http__req *r, const char *data, size_t len);
void kb_http__h2_end(kb_http__req *r);

/* ---- TLS over a connection (tls.c) ------------------------------------------ */

/* Where the TLS records for the peer go: called synchronously from inside
 * the kb_http__tls_* calls; must take all bytes (copy or send). */
typedef void (*kb_tls_send_fn)(void *arg, const char *data, size_t len);

/* A server-side TLS session on t's default certificate; ALPN offers "h2"
 * only when h2.  0 and *out, or KB_ENOMEM. */
int  kb_http__tls_conn_new(struct kb_tls_server *t, bool h2,
                           kb_tls_send_fn send, void *arg, kb_tls_conn **out);
void kb_http__tls_conn_free(kb_tls_conn *tc);
/* Ciphertext from the peer; valid until kb_http__tls_keep_input or the
 * next call of this.  Unconsumed input is dropped when replaced. */
void kb_http__tls_input(kb_tls_conn *tc, const char *data, size_t len);
/* Copy unconsumed input into the session (the caller's buffer is about to
 * be reused).  0 or KB_ENOMEM. */
int  kb_http__tls_keep_input(kb_tls_conn *tc);
/* Unread input (ciphertext or decrypted bytes) is waiting. */
bool kb_http__tls_has_input(const kb_tls_conn *tc);
/* Drive the handshake: 0 done, KB_EAGAIN needs more input, KB_EPARSE
 * failed (alert sent). */
int  kb_http__tls_handshake(kb_tls_conn *tc);
/* Decrypt into out: *n bytes (0 = needs more input).  0, KB_ECANCELED when
 * the peer sent close_notify, KB_EPARSE on a TLS error. */
int  kb_http__tls_read(kb_tls_conn *tc, char *out, size_t cap, size_t *n);
/* Encrypt and send bufs.  0 or KB_EPARSE. */
int  kb_http__tls_write(kb_tls_conn *tc, const uv_buf_t *bufs, unsigned n);
/* ALPN picked "h2". */
bool kb_http__tls_is_h2(const kb_tls_conn *tc);
/* Send close_notify (best effort). */
void kb_http__tls_shutdown(kb_tls_conn *tc);

#endif
