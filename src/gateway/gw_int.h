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
    char               *host;        /* http:// host (no brackets) */
    int                 port;
    char               *authority;   /* Host header for the upstream */
    char               *path;        /* address path; "" when none */
    gw_path_translation pt;
    uint64_t            deadline_ms;
} gw_backend;

struct gw_spec;

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
    _Atomic(kb_counter *)   requests[5];   /* by class: 1xx … 5xx */
    _Atomic(kb_histogram *) upstream_seconds;
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

/* How service://NAME finds an instance: kb_runtime_endpoint, or a fake in
 * unit tests (same contract). */
typedef int (*gw_resolve_fn)(kb_runtime *rt, const char *project,
                             const char *name, kb_endpoint *out);

struct kb_gateway {
    uv_loop_t       *loop;
    kb_http_client  *client;
    kb_runtime      *rt;
    gw_resolve_fn    resolve;
    pthread_mutex_t  lock;           /* guards `table` for acquire/swap */
    gw_table        *table;
    gw_spec        **specs;          /* current gateways, in set order */
    size_t           nspecs;
};

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
/* Append the JSON-pointer escape of token ("~" → "~0", "/" → "~1"). */
int  gw__pointer_append(kb_buf *out, const char *token);

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

/* proxy.c --------------------------------------------------------------- */

/*
 * The upstream request-target for a matched route: per its backend's path
 * translation, from the raw request path and query.  0, KB_ETOOBIG.
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

#endif
