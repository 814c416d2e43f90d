/*
 * api.h - the admin REST API on the api listener.
 *
 * Routes are declared in one table (api.c); resource families (services,
 * gateways, …) plug in through kb_api_family, one file each.  Every /v1
 * call needs `Authorization: Bearer <admin token>`; /healthz and /metrics
 * do not.  Errors are {"error":{"code","status","message"}}.
 */
#ifndef KB_API_H
#define KB_API_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "api/kinds.h"
#include "gateway/gateway.h"
#include "http/server.h"
#include "runtime/runtime.h"
#include "store/store.h"

typedef struct kb_api kb_api;

typedef struct kb_api_ctx {
    uv_loop_t  *loop;
    kb_store   *store;
    kb_runtime *runtime;
    kb_gateway *gateway;
    const char *token;          /* admin bearer token (copied) */
} kb_api_ctx;

/*
 * A custom method of a kind, Google style: POST .../{name}:VERB.  The
 * handler answers the request itself (any JSON body is in req->body).
 */
typedef struct kb_api_verb {
    const char *verb;                      /* "purgeCache" */
    void      (*run)(kb_api *api, kb_http_req *req, const char *project,
                     const char *name);
} kb_api_verb;

/*
 * A sub-resource route of a kind: METHOD .../{collection}/{name}/PATH,
 * where PATH may end in one "{sub}" segment ("revisions/{sub}").  The
 * handler answers the request itself; sub is NULL when PATH has none.
 */
typedef struct kb_api_subroute {
    const char *method;                    /* "GET" */
    const char *path;                      /* "revisions/{sub}" */
    void      (*run)(kb_api *api, kb_http_req *req, const char *project,
                     const char *name, const char *sub);
} kb_api_subroute;

/*
 * A resource family: the plane behind one kind.  The API does the HTTP,
 * auth, field checks (kinds.h) and persistence; the family checks meaning
 * and makes the plane follow the stored state.
 */
typedef struct kb_api_family {
    const char *kind;                      /* "Service" */
    /* Check a spec beyond its field types; KB_EINVAL + message. */
    int     (*validate)(kb_api *api, const json_t *spec, char *err,
                        size_t errlen);
    /* Make the plane run this spec; KB_EINVAL/KB_ECONFLICT + message. */
    int     (*apply)(kb_api *api, const char *project, const char *name,
                     const json_t *spec, char *err, size_t errlen);
    /* Stop serving it. */
    void    (*remove)(kb_api *api, const char *project, const char *name);
    /* Live status object or NULL (new reference). */
    json_t *(*status)(kb_api *api, const char *project, const char *name);
    /*
     * Optional: turn a checked spec of resource `name` into what is
     * stored, before it is (create, update and kb_api_modify).  old_doc is
     * the stored doc on update, NULL on create, and for kb_api_modify the
     * doc as its change left it.  req is the client's create or update
     * call (its query may carry options), NULL for kb_api_modify.  Fields put in
     * *reveal (a new object, or leave NULL) are added to this one response
     * and never stored: a generated secret, say.  KB_EINVAL
     * (INVALID_ARGUMENT) or KB_EPRECOND (FAILED_PRECONDITION) + message.
     */
    int     (*prepare)(kb_api *api, kb_http_req *req, const char *name,
                       json_t *spec, const json_t *old_doc, json_t **reveal,
                       char *err, size_t errlen);
    const kb_api_verb     *verbs;          /* NULL-terminated by verb */
    const kb_api_subroute *subroutes;      /* NULL-terminated by method */
} kb_api_family;

extern const kb_api_family kb_api_services;
extern const kb_api_family kb_api_gateways;
extern const kb_api_family kb_api_apikeys;

/*
 * A read-modify-write of one stored resource, for custom methods and
 * sub-resources: the same path as PATCH.  The stored doc is read, copied
 * and handed to change(); the result is checked (kinds table, validate,
 * then prepare with the changed doc as old_doc and req NULL), stored if
 * the version did not move meanwhile (409 ABORTED otherwise), applied (a
 * plane refusal puts the store back), and answered: by respond() when set,
 * else with the resource.  change returns 0, or KB_EINVAL (400
 * INVALID_ARGUMENT), KB_EPRECOND (400 FAILED_PRECONDITION), KB_ENOTFOUND
 * (404) with a message.  *ch is copied; ch->arg must live until the
 * request is answered (allocate it from req->pool).
 */
typedef struct kb_api_change {
    int   (*change)(kb_api *api, json_t *doc, void *arg, char *err,
                    size_t errlen);
    void  (*respond)(kb_api *api, kb_http_req *req, const json_t *doc,
                     void *arg);
    void   *arg;
} kb_api_change;
void kb_api_modify(kb_api *api, kb_http_req *req, const char *kind,
                   const char *project, const char *name,
                   const kb_api_change *ch);
/* A Google-style error answer {"error":{"code","status","message"}};
 * status NULL: from the code. */
void kb_api_error(kb_http_req *req, int code, const char *status,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The answer for an error code of a family call: KB_EINVAL → 400
 * INVALID_ARGUMENT, KB_EPRECOND → 400 FAILED_PRECONDITION, KB_ENOTFOUND →
 * 404, KB_ETOOBIG → 400, KB_EBUSY → 503, else 500; msg may be NULL. */
void kb_api_fail(kb_http_req *req, int rc, const char *msg);

int  kb_api_create(const kb_api_ctx *ctx, kb_api **out);
/* The kb_http_handler of the api listener (data = the kb_api). */
void kb_api_handle(kb_http_req *req, void *api);
/* The planes behind the API, for the families. */
const kb_api_ctx *kb_api_context(const kb_api *api);
/*
 * Boot: make every plane follow what the store holds (services first, then
 * gateways).  Synchronous; runs before the listeners open.  Resources that
 * no longer apply are logged and skipped.  Returns 0 or a store error.
 */
int  kb_api_restore(kb_api *api);
void kb_api_free(kb_api *api);

#endif
