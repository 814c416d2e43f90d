/*
 * curl_client.h - upstream calls over https and HTTP/2 (libcurl's multi
 * interface driven by a libuv loop).
 *
 * The gateway's HTTP/1.1 cleartext upstreams use kb_http_client (our own,
 * the hot path); backends with an https:// address or `protocol: h2` (gRPC)
 * go through this client, which keeps libcurl's connection cache (TLS
 * sessions, multiplexed HTTP/2 connections) per loop.  The contract is
 * kb_http_client's: same request and response structs (req->tls, req->h2
 * are honoured; res->trailers carries HTTP/2 trailers), same callback,
 * called exactly once unless canceled, on the loop thread.
 *
 * Errors: KB_ETIMEDOUT, KB_ETOOBIG (response over max_body), -ECONNREFUSED
 * or -EIO (connect/TLS failure; certificate problems are logged),
 * KB_EPARSE (bad response).
 */
#ifndef KB_HTTP_CURL_CLIENT_H
#define KB_HTTP_CURL_CLIENT_H

#include <stddef.h>
#include <uv.h>

#include "http/client.h"

typedef struct kb_curl_client kb_curl_client;
typedef struct kb_curl_call   kb_curl_call;

typedef struct kb_curl_client_opts {
    size_t      max_body;           /* 0 → 32 MiB */
    const char *ca_file;            /* extra CA bundle (PEM); NULL: system */
} kb_curl_client_opts;

int  kb_curl_client_create(uv_loop_t *loop, const kb_curl_client_opts *opts,
                           kb_curl_client **out);
int  kb_curl_client_send(kb_curl_client *c, const kb_http_client_req *req,
                         kb_http_client_cb cb, void *data,
                         kb_curl_call **call);
void kb_curl_client_cancel(kb_curl_call *call);
/* Pending calls get KB_ECANCELED; handles close; then free (the loop
 * must run for the handles to close). */
void kb_curl_client_destroy(kb_curl_client *c);

#endif
