/*
 * gateway.h - the public data plane: OpenAPI-declared routes to backends.
 *
 * Each Gateway resource carries an OpenAPI 3 document (JSON).  Its paths
 * (with {templated} segments) and operations become routes whose backend is
 * the operation's `x-google-backend`, else the document's top-level one:
 *   x-google-backend: { address: "http://127.0.0.1:9000" }   URL
 *   x-google-backend: { address: "service://hello" }         kiban service
 *   x-google-backend: { address: "service://hello@green" }   its tag
 * with path_translation APPEND_PATH_TO_ADDRESS (default at top level) or
 * CONSTANT_ADDRESS (default at operation level) and deadline (seconds,
 * default 15).  Gateways may name `hosts`: requests whose Host matches go to
 * that gateway's routes; gateways without hosts serve every other host.
 *
 * A request to a service waits (up to the route's deadline) while the
 * runtime starts an instance or frees a slot.  Answers: no route 404,
 * wrong method 405 (with Allow), backend unreachable 502, revision at its
 * instance cap or wait queue full 429, service that cannot serve or no
 * instance ready in time 503, deadline 504, all with
 * kiban's JSON error body.  Proxied requests get X-Forwarded-For,
 * X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id (kept or created) and a
 * W3C traceparent (propagated with a new span id, or created).
 *
 * The route table is immutable once built and replaced atomically by
 * kb_gateway_set(); requests in flight keep the table they started with.
 */
#ifndef KB_GATEWAY_H
#define KB_GATEWAY_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "http/client.h"
#include "http/server.h"
#include "runtime/runtime.h"

typedef struct kb_gateway kb_gateway;

int  kb_gateway_create(uv_loop_t *loop, kb_http_client *client,
                       kb_runtime *rt, kb_gateway **out);
/*
 * Check a Gateway spec {"openapi": {...document...}, "hosts": [...]}
 * without applying it.  KB_EINVAL with "JSON-pointer: reason" in err.
 */
int  kb_gateway_validate(const json_t *spec, char *err, size_t errlen);
/* Install or replace gateway `name` of `project` (spec copied). */
int  kb_gateway_set(kb_gateway *gw, const char *project, const char *name,
                    const json_t *spec, char *err, size_t errlen);
int  kb_gateway_remove(kb_gateway *gw, const char *project, const char *name);
/* {"routeCount": n, "routes": [{"route": "GET /x", "backend": "…"}]} for
 * an installed gateway, NULL if unknown.  New reference. */
json_t *kb_gateway_status(kb_gateway *gw, const char *project,
                          const char *name);
/*
 * API keys (kind ApiKey): the gateway keeps each key's SHA-256 (lower-case
 * hex), never the key.  A key is accepted by the gateways of its project,
 * or only by those named in `gateways` (NULL or empty: all).  set replaces.
 * 0, KB_EINVAL, KB_ENOMEM; remove: KB_ENOTFOUND.  Any thread.
 */
int  kb_gateway_key_set(kb_gateway *gw, const char *project, const char *name,
                        const char *sha256_hex, const json_t *gateways);
int  kb_gateway_key_remove(kb_gateway *gw, const char *project,
                           const char *name);
/*
 * Drop cached responses of gateway project/name: all of them, or those
 * whose request path starts with `path_prefix`.  Returns how many were
 * dropped (>= 0).  Any thread.
 */
long kb_gateway_cache_purge(kb_gateway *gw, const char *project,
                            const char *name, const char *path_prefix);

/*
 * Data-path workers: one per loop that serves the gateway listener (the
 * server runs one loop per core, each with its own SO_REUSEPORT listener).
 * A worker has its own upstream connection pools.  Create and close on
 * the worker's loop thread; after close the loop must run until its
 * handles are closed (the worker frees itself then).
 */
typedef struct gw_worker kb_gateway_worker;
int  kb_gateway_worker_create(kb_gateway *gw, uv_loop_t *loop,
                              kb_gateway_worker **out);
/* Shutdown begins: stop background work (JWKS fetches) and hand every
 * waiting request back to its worker now.  Any thread, before the
 * workers close. */
void kb_gateway_shutdown(kb_gateway *gw);
void kb_gateway_worker_close(kb_gateway_worker *w);
/*
 * Where access-log lines go: "stderr" (default), "stdout", "off", or a
 * file path (opened for append, 0640).  0, or -errno from open().
 */
int  kb_gateway_set_access_log(kb_gateway *gw, const char *where);

/* Extra CA certificates (PEM file) trusted for https backends and JWKS
 * URLs, besides the system's; before the workers start.  0, KB_ENOMEM. */
int  kb_gateway_set_ca_file(kb_gateway *gw, const char *path);
/* Memory for the response cache (0 → 64 MiB); before traffic. */
void kb_gateway_set_cache_size(kb_gateway *gw, size_t bytes);
/*
 * Direct service hosts under `domain` (default "localhost"; NULL or "" turns
 * them off): Host SERVICE.DOMAIN follows the service's traffic split,
 * TAG---SERVICE.DOMAIN goes to the revision with that tag, and
 * SERVICE.PROJECT.DOMAIN / TAG---SERVICE.PROJECT.DOMAIN name a project
 * other than "default".  A gateway naming the host in its `hosts` wins.
 * Workers read the domain without a lock: call this on the control loop
 * before any worker serves.  `port` > 0 (the gateway listener's) also
 * sets the runtime's URL base (kb_runtime_set_url_base); 0 leaves that to
 * the caller, e.g. once the listener's port is known.  0, KB_EINVAL (not
 * a host name, or too long; the domain is then unchanged).
 */
int  kb_gateway_set_domain(kb_gateway *gw, const char *domain, int port);

/* The kb_http_handler for the gateway listener (data = a worker). */
void kb_gateway_handle(kb_http_req *req, void *worker);
void kb_gateway_free(kb_gateway *gw);

#endif
