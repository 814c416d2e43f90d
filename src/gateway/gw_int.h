/*
 * gw_int.h - what the gateway's files share with each other (not a public
 * contract; gateway.h is).  openapi.c compiles a Gateway spec into a
 * gw_spec, table.c merges every gw_spec into one immutable gw_table, and
 * proxy.c runs each request through a pipeline of stages against it.
 */
#ifndef KB_GW_INT_H
#define KB_GW_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "gateway/gateway.h"
#include "http/client.h"
#include "http/router.h"

#define GW_DEFAULT_DEADLINE_S 15.0
#define GW_MAX_DEADLINE_S     3600.0
#define GW_MAX_HOSTS          64       /* hosts in one Gateway spec */
#define GW_MAX_ROUTES         10000    /* operations in one Gateway spec */
#define GW_MAX_REQUEST_ID     128
#define GW_TRACEPARENT_LEN    55       /* "00-" 32 "-" 16 "-" 2 */

typedef enum gw_path_translation {
    GW_PT_UNSET = 0,
    GW_PT_APPEND,                /* APPEND_PATH_TO_ADDRESS */
    GW_PT_CONSTANT               /* CONSTANT_ADDRESS */
} gw_path_translation;

/* Where a route's requests go, from one x-google-backend. */
typedef struct gw_backend {
    struct gw_backend  *next;        /* the spec's list, for freeing */
    char               *service;     /* service://NAME, else NULL */
    char               *tag;         /* service://NAME@TAG, else NULL */
    char               *host;        /* http:// host (no brackets) */
    int                 port;
    char               *authority;   /* Host header for the upstream */
    char               *path;        /* address path; "" when none */
    gw_path_translation pt;
    uint64_t            deadline_ms;
    bool                tls;         /* https:// address */
    bool                h2;          /* protocol: h2 (gRPC passthrough) */
    char               *jwt_audience; /* accepted, see docs/gateway.md */
    bool                disable_auth;
} gw_backend;

struct gw_spec;
struct gw_auth;          /* auth.c: the route's security requirements */
struct gw_auth_spec;     /* auth.c: the spec's compiled security schemes */
struct gw_validation;    /* validate.c: parameter and body schemas */
struct gw_ratelimit;     /* ratelimit.c: the route's limit */
struct gw_cors;          /* cors.c: the route's CORS policy */
struct gw_cache_policy;  /* cache.c: x-kiban-cache */
struct gw_aggregate;     /* aggregate.c: x-kiban-aggregate */

/*
 * One operation (method + path template) of one gateway.  Immutable once
 * its spec is compiled, except the metric pointers, which are looked up on
 * first use (atomically: routes are shared by every loop thread).
 *
 * Seam for later stages: `op` is the operation object inside the spec's
 * own copy of the document; JWT auth, request validation, rate limits and
 * the cache compile their per-operation policy from it into fields added
 * here, and proxy.c's stage table runs them.
 */
typedef struct gw_route {
    const char           *method;    /* "GET": static */
    char                 *template;  /* basePath + path, as routed */
    char                 *label;     /* "GET /users/{id}" for metrics */
    char                 *pointer;   /* "/paths/~1users~1{id}/get" */
    const gw_backend     *backend;
    const struct gw_spec *spec;
    const json_t         *op;
    /* per-route policies, each compiled by its module (NULL: none) */
    struct gw_auth         *auth;
    struct gw_validation   *validation;
    struct gw_ratelimit    *ratelimit;
    struct gw_cors         *cors;
    struct gw_cache_policy *cache;
    struct gw_aggregate    *aggregate;
    _Atomic(kb_counter *)   requests[5];   /* by class: 1xx … 5xx */
    _Atomic(kb_histogram *) upstream_seconds;
    _Atomic(kb_histogram *) duration[5];   /* by class: whole request */
} gw_route;

/* A compiled Gateway spec (reference counted: tables share them). */
typedef struct gw_spec {
    atomic_size_t refs;
    char         *project;
    char         *name;
    char         *id;                /* "project/name" for metrics, errors */
    char        **hosts;             /* lower case, port-less */
    size_t        nhosts;
    gw_route     *routes;
    size_t        nroutes;
    gw_backend   *backends;
    json_t       *spec;              /* deep copy of the spec given */
    const json_t *doc;               /* its "openapi" member */
    struct gw_auth_spec *auth;       /* security schemes (auth.c) */
} gw_spec;

/* Host name → the router serving it. */
typedef struct gw_host_router {
    char      *host;
    kb_router *router;
} gw_host_router;

/*
 * The route table: every gateway of every project, merged.  Immutable and
 * reference counted; the gateway swaps in a new one on every change and a
 * request keeps the one it started with.  Router targets are gw_route *.
 */
typedef struct gw_table {
    atomic_size_t   refs;
    gw_spec       **specs;           /* one reference each */
    size_t          nspecs;
    gw_host_router *hosts;           /* sorted by host */
    size_t          nhosts;
    kb_router      *fallback;        /* gateways without hosts */
} gw_table;

/*
 * How service:// backends reach the runtime: the kb_runtime_* data-path
 * calls (runtime.h has their contracts), or fakes in unit tests.  One
 * indirect call per use; any thread.
 */
typedef struct gw_rt_ops {
    int  (*acquire)(kb_runtime *rt, const char *project, const char *name,
                    const char *tag, const char *revision, uint32_t rnd,
                    kb_rt_waiter *w, kb_rt_lease *lease);
    bool (*wait_cancel)(kb_runtime *rt, kb_rt_waiter *w);
    void (*release)(kb_runtime *rt, kb_rt_lease *lease, int err, int status);
    bool (*at_capacity)(kb_runtime *rt, const char *project,
                        const char *name, const char *revision);
} gw_rt_ops;

/* The real runtime's calls (gateway.c). */
extern const gw_rt_ops gw__rt_ops;

#define GW_SERVICE_HOST_DEADLINE_S 300.0  /* direct service hosts */
#define GW_MAX_DOMAIN              200

struct gw_jwks;          /* auth.c/jwks.c: key sets by URI or file */
struct gw_keys;          /* auth.c: API keys */
struct gw_rl_state;      /* ratelimit.c: token buckets */
struct gw_cache;         /* cache.c: the response cache */
struct gw_worker;
struct gw_accesslog;     /* worker.c: where access-log lines go */

/*
 * The gateway: shared by the control loop (set/remove/status, admin calls)
 * and every data-path worker (one loop per core).  Gateway-wide state of
 * the policy modules hangs here; each module makes its own state
 * thread-safe.
 */
struct kb_gateway {
    uv_loop_t       *loop;           /* the control loop */
    kb_http_client  *client;         /* the control loop's client */
    kb_runtime      *rt;
    const gw_rt_ops *rt_ops;         /* NULL: no runtime (503/502) */
    char             domain[GW_MAX_DOMAIN + 1]; /* service hosts; "" off */
    pthread_mutex_t  lock;           /* guards `table` for acquire/swap */
    gw_table        *table;
    _Atomic uint64_t table_gen;      /* bumped on every swap */
    gw_spec        **specs;          /* current gateways, in set order */
    size_t           nspecs;
    struct gw_accesslog *accesslog;
    _Atomic int64_t     retry_budget;    /* milli-retries (proxy.c) */
    char               *ca_file;         /* extra CAs: https, JWKS; NULL */
    struct gw_jwks     *jwks;
    struct gw_keys     *keys;
    struct gw_rl_state *rl;
    struct gw_cache    *cache;
    /* --- cache.c: response cache ceiling in bytes (0 → 64 MiB); read
     * on every store: set it before the gateway serves traffic --- */
    size_t              cache_max_bytes;
    /* --- end cache.c --- */
};

/*
 * One data-path loop: its own HTTP client pools, and a queue through
 * which other threads hand requests back to it (gw__post).
 */
typedef struct gw_worker {
    kb_gateway      *gw;
    uv_loop_t       *loop;
    kb_http_client  *client;         /* HTTP/1.1 upstreams */
    struct kb_curl_client *xclient;  /* https and h2 upstreams */
    uv_async_t       wake;
    pthread_mutex_t  lock;           /* guards the posted queue */
    struct gw_ctx   *posted_head, *posted_tail;
    gw_table        *table;          /* cached reference to gw->table … */
    uint64_t         table_gen;      /* … as of this generation */
    kb_buf           log;            /* access-log lines not yet written */
    uv_timer_t       log_timer;      /* flushes `log` every second */
    bool             closing;
    int              open_handles;   /* closing: freed when 0 */
    size_t           live;           /* requests whose ctx exists */
    struct gw_wait  *waiting;        /* requests waiting for an instance
                                        (proxy.c; loop thread only) */
} gw_worker;

/* ------------------------------------------------------------------------ */
/* One request in flight, and what the stages share about it.               */

#define GW_MAX_EXTRA 16              /* headers a stage may add */

typedef enum gw_step {
    GW_NEXT,                     /* go on with the next stage */
    GW_DONE,                     /* the request has been answered */
    GW_PENDING                   /* gw__resume / gw__post continues it */
} gw_step;

/* Where one upstream call goes: from gw__backend_pick(). */
typedef struct gw_pick {
    const char *host;
    int         port;
    char        authority[80];       /* Host header */
    bool        tls, h2;
    const char *revision;            /* service:// only (in lease or the
                                        pool); else NULL */
    kb_rt_lease lease;               /* service://: lease.instance set
                                        while acquired */
} gw_pick;

/* Called with the upstream's answer before it is relayed (cache.c). */
typedef void (*gw_response_fn)(struct gw_ctx *c, const kb_http_client_res *res);

typedef struct gw_ctx {
    kb_gateway          *gw;
    gw_worker           *w;
    kb_http_req         *req;        /* the request pool holds this ctx */
    gw_table            *table;      /* our reference */
    size_t               stage;
    const gw_route      *route;
    kb_route_match       match;
    char                 request_id[GW_MAX_REQUEST_ID + 1];
    char                 traceparent[GW_TRACEPARENT_LEN + 1];
    bool                 trace_continued;
    bool                 answered;
    bool                 aborted;    /* client gone while PENDING */

    /* set by auth.c when a credential was verified */
    json_t              *claims;     /* verified JWT claims (own ref) */
    const char          *subject;    /* "iss|sub", or "key:NAME"; pool */
    const char          *api_key;    /* the API key's name; pool */

    /* headers stages add: to the upstream request, to any answer */
    kb_http_header       up_extra[GW_MAX_EXTRA];
    size_t               n_up_extra;
    kb_http_header       res_extra[GW_MAX_EXTRA];
    size_t               n_res_extra;

    gw_response_fn       on_response;
    void                *on_response_data;

    /* --- cache.c / aggregate.c: per-request state (in the pool) --- */
    struct gw_cache_req *cache_req;
    struct gw_agg_req   *agg_req;
    /* --- end cache.c / aggregate.c --- */

    /* proxy.c's own */
    const char          *what;       /* metrics label without a route */
    const char          *cache_state;/* "HIT"/"MISS"/…: access log */
    gw_pick              pick;
    bool                 picked;
    kb_buf               target;
    void                *call;
    uint64_t             upstream_start_ns;
    uint64_t             upstream_ns;    /* summed over attempts */
    uint64_t             deadline_ns;    /* monotonic, for retries */
    int                  attempts;
    bool                 direct;     /* a direct service host's request */
    struct gw_wait      *wait;       /* waiting for an instance; pool */
    struct gw_ctx       *posted_next;
} gw_ctx;

/* proxy.c: what stages use ---------------------------------------------- */

/*
 * Answer the request (counted, logged, res_extra headers added).  The ctx
 * lives in the request pool: do not touch c after.  `what` labels
 * requests without a route in metrics (NULL when c->route is set).
 */
void gw__respond(gw_ctx *c, int status, const kb_http_header *headers,
                 size_t nheaders, const char *body, size_t body_len);
/* JSON body; steals `body`. */
void gw__respond_json(gw_ctx *c, int status, json_t *body);
/* kiban's JSON error body {"error":{code,status,message}}. */
void gw__respond_error(gw_ctx *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Add a header to the upstream request (upstream = true) or to whatever
 * answer the request gets.  name/value are copied into the pool.  0,
 * KB_ETOOBIG (GW_MAX_EXTRA reached), KB_ENOMEM. */
int  gw__header_add(gw_ctx *c, bool upstream, const char *name,
                    const char *value);
/* Shutdown of worker w (its loop thread): every request waiting for an
 * instance is answered 503 now, or when its notify arrives. */
void gw__waits_close(gw_worker *w);
/* Continue the pipeline of a PENDING request: on its own loop thread. */
void gw__resume(gw_ctx *c);
/* Same, from any thread: queues c to its worker's loop. */
void gw__post(gw_ctx *c);
/*
 * Choose where a call to backend b goes.  http(s)://: the address (load
 * and ejection tracked per host:port).  service://: kb_runtime_acquire
 * through gw->rt_ops, split by a per-thread random number, or b->tag;
 * `revision` (NULL: none) asks for that revision again after a wait.
 * 0; KB_ENOTFOUND (no such service or tag); KB_EUNAVAIL (the revision
 * cannot serve); KB_ETOOBIG (its wait queue is full); KB_EAGAIN (no free
 * instance: when w is not NULL it is queued and w->notify comes once;
 * out->lease.ep.revision names the revision waited on).  Every
 * successful pick is paired with exactly one gw__backend_done() with the
 * call's outcome (err, or the HTTP status); done is a no-op on a pick
 * already done.
 */
int  gw__backend_pick(gw_ctx *c, const gw_backend *b, const char *revision,
                      kb_rt_waiter *w, gw_pick *out);
void gw__backend_done(gw_ctx *c, gw_pick *p, int err, int status);
/*
 * Send one upstream call over the worker's HTTP/1.1 client, or its
 * https/h2 client as p says.  Same contract as kb_http_client_send; the
 * handle cancels with gw__upstream_cancel().
 */
int  gw__upstream_send(gw_ctx *c, const gw_pick *p,
                       const kb_http_client_req *req, kb_http_client_cb cb,
                       void *data, void **handle);
void gw__upstream_cancel(gw_ctx *c, void *handle);

/* worker.c ---------------------------------------------------------------- */

/* A request's ctx is gone (pairs with live++ in kb_gateway_handle); the
 * last one lets a closing worker finish. */
void gw__worker_release(gw_worker *w);
/* A new reference to the current route table (worker-cached). */
gw_table *gw__worker_table(gw_worker *w);
/* Append the access-log line of an answered request to its worker's
 * buffer (written when full, and every second). */
void gw__accesslog(gw_ctx *c, int status, size_t bytes);
void gw__accesslog_free(kb_gateway *gw);

/* Policy modules ---------------------------------------------------------
 *
 * Each module compiles its per-route policy from route->op (and the
 * document, spec->doc) after openapi.c has built the routes, frees what it
 * compiled, and runs a stage.  compile: 0, or KB_EINVAL with
 * "JSON-pointer: reason" in err (the whole spec is rejected), KB_ENOMEM.
 * Stages run on any worker thread, concurrently.  Gateway-wide state:
 * init at kb_gateway_create (0 or -errno), fini at kb_gateway_free.
 *
 * Pipeline: identity → route → cors → auth → ratelimit → validate →
 *           cache → aggregate → backend → upstream
 */
int     gw__cors_compile(gw_spec *s, char *err, size_t errlen);
void    gw__cors_release(gw_spec *s);
gw_step gw__cors_stage(gw_ctx *c);
/* Called by the route stage for an OPTIONS request without an OPTIONS
 * route: true if it answered it as a CORS preflight. */
bool    gw__cors_preflight(gw_ctx *c, const kb_router *router);

int     gw__auth_init(kb_gateway *gw);
void    gw__auth_fini(kb_gateway *gw);
int     gw__auth_compile(gw_spec *s, char *err, size_t errlen);
void    gw__auth_release(gw_spec *s);
gw_step gw__auth_stage(gw_ctx *c);
/* --- auth.c additions --------------------------------------------------
 * Headers the auth stage sets on the upstream request after verifying a
 * JWT: the token's payload segment (base64url JSON, as Google sends it)
 * and the original Authorization header (which itself is forwarded
 * unchanged, as ESPv2 does).  A backend trusts them, so proxy.c must drop
 * any the client sent, on every route: gw__auth_header_reserved(name).
 * c->claims, when set, is shared with the token cache: read only. */
#define GW_USERINFO_HEADER "X-Apigateway-Api-Userinfo"
#define GW_FWD_AUTH_HEADER "X-Forwarded-Authorization"
bool    gw__auth_header_reserved(const char *name);
/* A request may wait in the auth stage (GW_PENDING) for a JWKS fetch, up
 * to 5 s, and is then posted back to its worker from the fetch thread.
 * Call this when shutdown begins, while the workers' loops still run and
 * before any worker is closed: it aborts the fetch and posts every waiter
 * at once (they are refused), and no request waits after it. */
void    gw__auth_shutdown(kb_gateway *gw);
/* --- end auth.c additions ----------------------------------------------- */

int     gw__ratelimit_init(kb_gateway *gw);
void    gw__ratelimit_fini(kb_gateway *gw);
int     gw__ratelimit_compile(gw_spec *s, char *err, size_t errlen);
void    gw__ratelimit_release(gw_spec *s);
gw_step gw__ratelimit_stage(gw_ctx *c);

int     gw__validate_compile(gw_spec *s, char *err, size_t errlen);
void    gw__validate_release(gw_spec *s);
gw_step gw__validate_stage(gw_ctx *c);

int     gw__cache_init(kb_gateway *gw);
void    gw__cache_fini(kb_gateway *gw);
int     gw__cache_compile(gw_spec *s, char *err, size_t errlen);
void    gw__cache_release(gw_spec *s);
gw_step gw__cache_stage(gw_ctx *c);

int     gw__aggregate_compile(gw_spec *s, char *err, size_t errlen);
void    gw__aggregate_release(gw_spec *s);
gw_step gw__aggregate_stage(gw_ctx *c);

/* --- cache.c: what aggregate.c uses to cache each call's answer --------
 *
 * An x-kiban-cache value compiled on its own (a call's `cache`), and a
 * lookup/store of one call's answer under a key made of the policy (vary,
 * public), the request (gateway, path, subject or credential) and `what`
 * (the call: route, name, resolved target).  get: 0 and the body copied
 * into `body`, or KB_ENOTFOUND (also when the cache is off or the key is
 * too long).  put: stores res per the same rules as whole responses
 * (status, Cache-Control, Set-Cookie …); 0, or a negative error when not
 * stored (not fatal).  Any worker thread.
 */
int  gw__cache_policy_parse(const json_t *v, const char *pointer,
                            struct gw_cache_policy **out, char *err,
                            size_t errlen);
void gw__cache_policy_free(struct gw_cache_policy *p);
int  gw__cache_call_get(gw_ctx *c, const struct gw_cache_policy *p,
                        const char *what, kb_buf *body);
int  gw__cache_call_put(gw_ctx *c, const struct gw_cache_policy *p,
                        const char *what, const kb_http_client_res *res);
/* A duration: a number of seconds, or "500ms", "30s", "5m", "1h".  0 and
 * *out_ms (at least 1), or KB_EINVAL. */
int  gw__cache_duration(const json_t *v, uint64_t *out_ms);
/* --- end cache.c --- */

/* openapi.c ------------------------------------------------------------- */

/*
 * Compile a Gateway spec.  project/name may be NULL (validation only).
 * Returns 0 and *out (one reference), KB_EINVAL with "pointer: reason" in
 * err, or KB_ENOMEM.
 */
int  gw__spec_compile(const json_t *spec, const char *project,
                      const char *name, gw_spec **out, char *err,
                      size_t errlen);
gw_spec *gw__spec_ref(gw_spec *s);
void gw__spec_unref(gw_spec *s);
/* Parse an x-google-backend address into b (host/port/path or service).
 * NULL, or a static reason.  Exposed for tests. */
const char *gw__address_parse(const char *address, gw_backend *b);

/* escape.c -------------------------------------------------------------- */

/* Append "/" and the JSON-pointer escape of token ("~" → "~0", "/" →
 * "~1"). */
int  gw__pointer_append(kb_buf *out, const char *token);
/* out = parent + "/" + escaped token, NUL-terminated in cap bytes; when it
 * does not fit, what fits of parent then "/…".  out may be parent. */
void gw__pointer_join(char *out, size_t cap, const char *parent,
                      const char *token);
/* Write "pointer: reason" into err (the root "" is printed "/"); err may
 * be NULL.  Always returns KB_EINVAL, so a compiler can `return` it. */
int  gw__spec_fail(char *err, size_t errlen, const char *pointer,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The value of one hex digit, or -1. */
int  gw__hex_digit(char ch);
/* Append v[0..n) percent-encoded (%XX, upper case): letters, digits,
 * "-._~" and the characters in keep stay as they are. */
int  gw__pct_encode(kb_buf *out, const char *v, size_t n, const char *keep);
/* SHA-256 of parts[0..n) concatenated (the algorithm is fetched once).
 * 0 or KB_ENOMEM.  Any thread. */
int  gw__sha256(const void *const *parts, const size_t *lens, size_t n,
                unsigned char out[32]);

/* table.c --------------------------------------------------------------- */

/*
 * Build a table from specs (each gets a new reference).  KB_EEXIST with a
 * message when two gateways serving the same host (or both serving no
 * host) declare the same method and path; the message names `subject`'s
 * route (the spec being set) and the other gateway.  KB_ENOMEM.
 */
int  gw__table_build(gw_spec *const *specs, size_t nspecs,
                     const gw_spec *subject, gw_table **out, char *err,
                     size_t errlen);
gw_table *gw__table_ref(gw_table *t);
void gw__table_unref(gw_table *t);
/* The router for a Host header value (port stripped, case-insensitive);
 * the fallback router when no gateway names that host.  May be NULL. */
const kb_router *gw__table_router(const gw_table *t, const char *host);
/* The router of a gateway naming that host; NULL when none does. */
const kb_router *gw__table_host_router(const gw_table *t, const char *host);

/* svchost.c -------------------------------------------------------------- */

#define GW_MAX_LABEL 63
#define GW_MAX_TAG   46               /* TAG---SERVICE fits a label */

/* A direct service host: [TAG---]SERVICE[.PROJECT].DOMAIN. */
typedef struct gw_svc_host {
    char project[GW_MAX_LABEL + 1];  /* "default" when not in the host */
    char service[GW_MAX_LABEL + 1];
    char tag[GW_MAX_LABEL + 1];      /* "" when none */
} gw_svc_host;

/*
 * Parse a Host header value against `domain` (lower case, no port):
 * case-insensitive, the port and one trailing dot ignored.  true and *out
 * when it names a service (each label an RFC 1035 label); false otherwise
 * (the domain itself, another domain, bad labels, more labels).
 */
bool gw__svc_host_parse(const char *domain, const char *host,
                        gw_svc_host *out);
/* Is s[0..n) an RFC 1035 label of at most max characters (lower-case
 * letters, digits, '-'; a letter first; no '-' last)? */
bool gw__label_ok(const char *s, size_t n, size_t max);
/*
 * The route of a request to a direct service host (built in the request
 * pool: label "service:NAME" or "service:NAME@TAG", gateway label
 * PROJECT, backend service://NAME[@TAG] with APPEND_PATH_TO_ADDRESS and
 * a 300 s deadline).  NULL when out of memory.
 */
gw_route *gw__svc_route(gw_ctx *c, const gw_svc_host *h);

/* proxy.c --------------------------------------------------------------- */

/*
 * The upstream request-target for a matched route: per its backend's path
 * translation, from the raw request path and query.  0, KB_ETOOBIG,
 * KB_EINVAL (an aggregate route: no backend).
 */
int  gw__target_build(const gw_route *route, const kb_route_match *m,
                      const char *path, const char *query, kb_buf *out);
/* Is an incoming X-Request-Id kept (1..128 of [A-Za-z0-9._-])? */
bool gw__request_id_ok(const char *id);
/*
 * The traceparent to send upstream: the incoming one's trace-id and flags
 * with a new parent-id when `incoming` is valid (*continued = true), else
 * a new trace.  out holds GW_TRACEPARENT_LEN + 1 bytes.
 */
void gw__traceparent(const char *incoming, char *out, bool *continued);
/* Is this header hop-by-hop (fixed list, or named in `connection`, the
 * joined Connection header values; may be NULL)? */
bool gw__hop_by_hop(const char *name, const char *connection);
/* Append to h the headers the gateway adds to every upstream request:
 * X-Forwarded-For (xff, the value to send), -Proto, -Host (when the
 * request has a Host), X-Request-Id, traceparent.  Returns how many (4
 * or 5); the values point into c and xff. */
size_t gw__forwarded_headers(const gw_ctx *c, const char *xff,
                             kb_http_header *h);

#endif
