/*
 * gateway.h - the public data plane: OpenAPI-declared routes to backends.
 *
 * Each Gateway resource carries an OpenAPI 3 document (JSON).  Its paths
 * (with {templated} segments) and operations become routes whose backend is
 * the operation's `x-google-backend`, else the document's top-level one:
 *   x-google-backend: { address: "http://127.0.0.1:9000" }   URL
 *   x-google-backend: { address: "service://hello" }         kiban service
 * with path_translation APPEND_PATH_TO_ADDRESS (default at top level) or
 * CONSTANT_ADDRESS (default at operation level) and deadline (seconds,
 * default 15).  Gateways may name `hosts`: requests whose Host matches go to
 * that gateway's routes; gateways without hosts serve every other host.
 *
 * Answers: no route 404, wrong method 405 (with Allow), backend unreachable
 * 502, service without a running instance 503, deadline 504, all with
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
/* The kb_http_handler for the gateway listener (data = the kb_gateway). */
void kb_gateway_handle(kb_http_req *req, void *gw);
void kb_gateway_free(kb_gateway *gw);

#endif
