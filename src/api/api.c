/*
 * api.c - the admin REST API: auth, the route table (per-kind routes,
 * custom methods, sub-resources), and the generic create/get/list/update/
 * delete and read-modify-write (kb_api_modify) of every family (api.h).
 *
 * A mutation is persisted first and then applied to its plane; if the
 * plane refuses it (a gateway route that conflicts with another gateway),
 * the store is put back as it was and the client gets the plane's error, so
 * what is stored is always what runs.
 */
#include "api/api.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "http/router.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_MAX_PAGE_SIZE 1000
#define API_MAX_ID_LEN    128

typedef struct api_call api_call;
typedef void (*api_handler)(api_call *call);

typedef struct api_route {
    const char  *method;
    const char  *pattern;       /* "%s" stands for the kind's collection */
    api_handler  handler;
    bool         auth;
} api_route;

/* A kind served by the API and the plane behind it. */
typedef struct api_kind {
    const kb_kind       *kind;
    const kb_api_family *family;
} api_kind;

/* What the router hands back for a match. */
typedef struct api_target {
    const api_route   *route;
    const api_kind    *kind;    /* NULL for routes that are not per kind */
    const kb_api_verb *verb;    /* custom methods (h_verb) */
    const kb_api_subroute *sub; /* sub-resources (h_sub) */
} api_target;

static const kb_api_family *const api_families[] = {
    &kb_api_services,
    &kb_api_gateways,
    &kb_api_apikeys,
};
#define NFAMILIES (sizeof(api_families) / sizeof(api_families[0]))

struct kb_api {
    kb_api_ctx  ctx;
    char       *token;
    kb_router  *router;
    api_kind    kinds[NFAMILIES];
    api_target *targets;
    size_t      ntargets;
    kb_counter *auth_failures;
};

/* One admin call in flight; lives in the request pool. */
struct api_call {
    kb_api          *api;
    kb_http_req     *req;
    const api_kind  *kind;
    const char      *project;
    const char      *name;
    char             parent[96];
    json_t          *spec;       /* new spec to store (owned) */
    json_t          *old_doc;    /* doc before an update (owned) */
    json_t          *reveal;     /* added to this response only (owned) */
    int64_t          old_version;
    char             errmsg[512];
    int              err;
    int              status;     /* HTTP status of a deferred error */
    const kb_api_verb *verb;     /* h_verb's */
    const kb_api_subroute *sub;  /* h_sub's */
    const char      *subname;    /* its {sub} parameter, or NULL */
    bool             modify;     /* a kb_api_modify call */
    kb_api_change    change;     /* its change (modify) */
    json_t          *base;       /* prepare's old_doc for modify (owned) */
};

static void h_healthz(api_call *c);
static void h_metrics(api_call *c);
static void h_version(api_call *c);
static void h_list(api_call *c);
static void h_get(api_call *c);
static void h_create(api_call *c);
static void h_update(api_call *c);
static void h_delete(api_call *c);
static void h_verb(api_call *c);
static void h_sub(api_call *c);

/* The route every custom method (…/{name}:VERB) goes through. */
static const api_route verb_route = {
    "POST", "/v1/projects/{project}/%s/{name}:%s", h_verb, true
};

static const api_route global_routes[] = {
    { "GET", "/healthz",    h_healthz, false },
    { "GET", "/metrics",    h_metrics, false },
    { "GET", "/v1/version", h_version, true },
};

static const api_route kind_routes[] = {
    { "GET",    "/v1/projects/{project}/%s",        h_list,   true },
    { "POST",   "/v1/projects/{project}/%s",        h_create, true },
    { "GET",    "/v1/projects/{project}/%s/{name}", h_get,    true },
    { "PATCH",  "/v1/projects/{project}/%s/{name}", h_update, true },
    { "DELETE", "/v1/projects/{project}/%s/{name}", h_delete, true },
};

/* The route every sub-resource (…/{name}/PATH) goes through. */
static const api_route sub_route = {
    NULL, "/v1/projects/{project}/%s/{name}/%s", h_sub, true
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define API_MAX_VERBS 8                /* custom methods per kind */
#define API_MAX_SUBROUTES 8            /* sub-resource routes per kind */

/* Responses --------------------------------------------------------------- */

static void
error_va(kb_http_req *req, int code, const char *status, const char *fmt,
         va_list ap) __attribute__((format(printf, 4, 0)));

static void
error_va(kb_http_req *req, int code, const char *status, const char *fmt,
         va_list ap)
{
    char msg[768];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (status == NULL)
        status = kb_http_status_name(code);
    kb_http_respond_json(req, code,
        json_pack("{s:{s:i, s:s, s:s}}", "error", "code", code,
                  "status", status, "message", msg));
}

void
kb_api_error(kb_http_req *req, int code, const char *status,
             const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_va(req, code, status, fmt, ap);
    va_end(ap);
}

static void
api_error(api_call *c, int code, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
api_error(api_call *c, int code, const char *status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_va(c->req, code, status, fmt, ap);
    va_end(ap);
}

void
kb_api_fail(kb_http_req *req, int rc, const char *msg)
{
    static const struct { int rc, code; const char *status; } map[] = {
        { KB_EINVAL,    400, "INVALID_ARGUMENT" },
        { KB_EPRECOND,  400, "FAILED_PRECONDITION" },
        { KB_ENOTFOUND, 404, "NOT_FOUND" },
        { KB_ETOOBIG,   400, "INVALID_ARGUMENT" },
        { KB_ECONFLICT, 409, "ABORTED" },
        { KB_EBUSY,     503, "UNAVAILABLE" },
    };

    for (size_t i = 0; i < NELEM(map); i++)
        if (map[i].rc == rc) {
            kb_api_error(req, map[i].code, map[i].status, "%s",
                         msg != NULL && msg[0] != '\0' ? msg
                                                       : kb_strerror(rc));
            return;
        }
    if (rc != KB_ENOMEM)
        kb_log_error("API call failed", "{s:s, s:s}", "error",
                     kb_strerror(rc), "path", req->path);
    kb_api_error(req, 500, "INTERNAL", "internal error");
}

/* Map a store error to the client's answer. */
static void
api_store_error(api_call *c, int err)
{
    const char *what = c->kind ? c->kind->kind->singular : "resource";

    switch (err) {
    case KB_ENOTFOUND:
        api_error(c, 404, "NOT_FOUND", "%s \"%s\" not found in project \"%s\"",
                  what, c->name, c->project);
        break;
    case KB_EEXIST:
        api_error(c, 409, "ALREADY_EXISTS",
                  "%s \"%s\" already exists in project \"%s\"", what, c->name,
                  c->project);
        break;
    case KB_ECONFLICT:
        api_error(c, 409, "ABORTED", "%s \"%s\" was changed concurrently "
                  "(etag mismatch); read it again and retry", what, c->name);
        break;
    case KB_EINVAL:
        api_error(c, 400, "INVALID_ARGUMENT", "invalid page token");
        break;
    case KB_ETOOBIG:
        api_error(c, 400, "INVALID_ARGUMENT", "%s is too large", what);
        break;
    case KB_EBUSY:
        api_error(c, 503, "UNAVAILABLE", "the store is overloaded; retry");
        break;
    default:
        kb_log_error("store call failed", "{s:s, s:s}", "error",
                     kb_strerror(err), "path", c->req->path);
        api_error(c, 500, "INTERNAL", "internal error");
        break;
    }
}

static void
rfc3339(json_t *obj, const char *key, int64_t ns)
{
    char ts[KB_RFC3339_LEN];

    kb_time_rfc3339(ts, sizeof(ts), ns, 6);
    json_object_set_new(obj, key, json_string(ts));
}

/* The API view of a stored resource: its doc plus output-only fields. */
static json_t *
resource_json(kb_api *api, const api_kind *k, const char *project,
              const kb_resource *res)
{
    json_t *out = json_deep_copy(res->doc);
    char name[256], etag[32];

    if (out == NULL)
        return NULL;
    snprintf(name, sizeof(name), "projects/%s/%s/%s", project,
             k->kind->collection, res->name);
    snprintf(etag, sizeof(etag), "\"%lld\"", (long long)res->version);
    json_object_set_new(out, "name", json_string(name));
    rfc3339(out, "createTime", res->create_time_ns);
    rfc3339(out, "updateTime", res->update_time_ns);
    json_object_set_new(out, "etag", json_string(etag));
    if (k->family->status != NULL) {
        json_t *st = k->family->status(api, project, res->name);
        if (st != NULL)
            json_object_set_new(out, "status", st);
    }
    return out;
}

static void
respond_resource(api_call *c, const kb_resource *res)
{
    json_t *out = resource_json(c->api, c->kind, c->project, res);

    if (out != NULL && c->reveal != NULL)
        json_object_update(out, c->reveal);
    if (out == NULL) {
        api_error(c, 500, "INTERNAL", "out of memory");
        return;
    }
    kb_http_respond_json(c->req, 200, out);
}

/* Request parsing --------------------------------------------------------- */

static bool
query_bool(api_call *c, const char *name)
{
    const char *v = kb_http_req_query(c->req, name);

    return v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* Output-only fields a client may send back unchanged (get → edit → put). */
static const char *const output_only[] = {
    "name", "uid", "createTime", "updateTime", "status",
};

/*
 * Parse the body: a JSON object, output-only fields dropped.  On success
 * c->spec holds it; otherwise the error is answered and false returned.
 * An "etag" field, if any, is checked against `version` (0 = no check).
 */
static bool
read_body(api_call *c, int64_t version)
{
    char etag[32];
    json_error_t jerr;
    json_t *body, *v;

    if (c->req->body_len == 0) {
        api_error(c, 400, "INVALID_ARGUMENT", "the request needs a JSON body");
        return false;
    }
    body = json_loadb(c->req->body, c->req->body_len,
                      JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL) {
        api_error(c, 400, "INVALID_ARGUMENT", "invalid JSON at line %d "
                  "column %d: %s", jerr.line, jerr.column, jerr.text);
        return false;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        api_error(c, 400, "INVALID_ARGUMENT", "the body must be a JSON object");
        return false;
    }
    for (size_t i = 0; i < NELEM(output_only); i++)
        json_object_del(body, output_only[i]);
    v = json_object_get(body, "etag");
    if (v != NULL) {
        snprintf(etag, sizeof(etag), "\"%lld\"", (long long)version);
        if (!json_is_string(v) ||
            (version != 0 && strcmp(json_string_value(v), etag) != 0)) {
            json_decref(body);
            api_store_error(c, KB_ECONFLICT);
            return false;
        }
        json_object_del(body, "etag");
    }
    c->spec = body;
    return true;
}

/* Check c->spec as a spec of the call's kind: field types (kinds table),
 * then meaning (the family).  Answers the error and returns false. */
static bool
check_spec(api_call *c)
{
    char field[128] = "", why[384] = "";
    int rc;

    rc = kb_kind_check(c->kind->kind, c->spec, false, field, sizeof(field),
                       why, sizeof(why));
    if (rc != 0) {
        api_error(c, 400, "INVALID_ARGUMENT", "%s%s%s", field,
                  field[0] ? ": " : "", why);
        return false;
    }
    why[0] = '\0';
    rc = c->kind->family->validate(c->api, c->spec, why, sizeof(why));
    if (rc == 0 && c->kind->family->prepare != NULL)
        rc = c->kind->family->prepare(c->api, c->modify ? NULL : c->req,
                                      c->name, c->spec,
                                      c->modify ? c->base : c->old_doc,
                                      &c->reveal, why, sizeof(why));
    if (rc == KB_ENOMEM) {
        api_error(c, 500, "INTERNAL", "out of memory");
        return false;
    }
    if (rc != 0) {
        kb_api_fail(c->req, rc == KB_EPRECOND || rc == KB_ENOTFOUND
                            ? rc : KB_EINVAL,
                    why[0] ? why : "invalid specification");
        return false;
    }
    return true;
}

/* Handlers ---------------------------------------------------------------- */

static void
h_healthz(api_call *c)
{
    kb_http_respond_json(c->req, 200, json_pack("{s:s}", "status", "ok"));
}

static void
h_metrics(api_call *c)
{
    static const kb_http_header ct[] = {
        { "Content-Type", "text/plain; version=0.0.4; charset=utf-8" },
    };
    kb_buf out = KB_BUF_INIT(16 << 20);

    if (kb_metrics_render(&out) != 0) {
        kb_buf_free(&out);
        api_error(c, 500, "INTERNAL", "cannot render metrics");
        return;
    }
    kb_http_respond(c->req, 200, ct, 1, out.data, out.len);
    kb_buf_free(&out);
}

static void
h_version(api_call *c)
{
    kb_http_respond_json(c->req, 200, json_pack("{s:s}", "version", KB_VERSION));
}

static void
list_done(int err, const kb_store_page *page, void *data)
{
    api_call *c = data;
    json_t *out, *items;

    if (err != 0) {
        api_store_error(c, err);
        return;
    }
    items = json_array();
    for (size_t i = 0; i < page->n; i++)
        json_array_append_new(items, resource_json(c->api, c->kind, c->project,
                                                   &page->items[i]));
    out = json_object();
    json_object_set_new(out, c->kind->kind->collection, items);
    if (page->next_token != NULL)
        json_object_set_new(out, "nextPageToken", json_string(page->next_token));
    kb_http_respond_json(c->req, 200, out);
}

static void
h_list(api_call *c)
{
    const char *ps = kb_http_req_query(c->req, "pageSize");
    const char *token = kb_http_req_query(c->req, "pageToken");
    long size = 0;
    char *end;
    int rc;

    if (ps != NULL && ps[0] != '\0') {
        size = strtol(ps, &end, 10);
        if (*end != '\0' || size < 0 || size > API_MAX_PAGE_SIZE) {
            api_error(c, 400, "INVALID_ARGUMENT",
                      "pageSize must be an integer from 0 to %d",
                      API_MAX_PAGE_SIZE);
            return;
        }
    }
    rc = kb_store_list(c->api->ctx.store, c->kind->kind->collection, c->parent,
                       (size_t)size, token, list_done, c);
    if (rc != 0)
        api_store_error(c, rc);
}

static void
get_done(int err, const kb_resource *res, void *data)
{
    api_call *c = data;

    if (err != 0)
        api_store_error(c, err);
    else
        respond_resource(c, res);
}

static void
h_get(api_call *c)
{
    int rc = kb_store_get(c->api->ctx.store, c->kind->kind->collection,
                          c->parent, c->name, get_done, c);
    if (rc != 0)
        api_store_error(c, rc);
}

/* The answer after a revert: the plane's refusal, whatever the revert did. */
static void
revert_done(int err, const kb_resource *res, void *data)
{
    api_call *c = data;

    if (err != 0)
        kb_log_error("could not revert a refused change", "{s:s, s:s, s:s}",
                     "kind", c->kind->kind->kind, "name", c->name,
                     "error", kb_strerror(err));
    api_error(c, c->status, NULL, "%s", c->errmsg);
}

/* A stored doc as its plane sees it: without the API's own fields. */
static int
apply_doc(kb_api *api, const api_kind *k, const char *project,
          const char *name, const json_t *doc, char *err, size_t errlen)
{
    json_t *spec = json_copy((json_t *)doc);
    int rc;

    if (spec == NULL)
        return KB_ENOMEM;
    json_object_del(spec, "uid");
    rc = k->family->apply(api, project, name, spec, err, errlen);
    json_decref(spec);
    return rc;
}

/* After the store took the new spec: make the plane follow it. */
static void
apply_stored(api_call *c, const kb_resource *res)
{
    int rc;

    c->errmsg[0] = '\0';
    rc = apply_doc(c->api, c->kind, c->project, c->name, res->doc,
                   c->errmsg, sizeof(c->errmsg));
    if (rc == 0) {
        kb_log_info("applied", "{s:s, s:s, s:s, s:I}", "kind",
                    c->kind->kind->kind, "project", c->project, "name",
                    c->name, "version", (json_int_t)res->version);
        if (c->modify && c->change.respond != NULL)
            c->change.respond(c->api, c->req, res->doc, c->change.arg);
        else
            respond_resource(c, res);
        return;
    }

    /* Refused by the plane: put the store back as it was. */
    c->status = rc == KB_ECONFLICT || rc == KB_EEXIST ? 409 : 400;
    if (c->errmsg[0] == '\0')
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", kb_strerror(rc));
    if (c->old_doc == NULL) {
        rc = kb_store_delete(c->api->ctx.store, c->kind->kind->collection,
                             c->parent, c->name, res->version, revert_done, c);
    } else {
        kb_put_opts o = { KB_PUT_UPDATE, res->version, NULL };
        rc = kb_store_put(c->api->ctx.store, c->kind->kind->collection,
                          c->parent, c->name, c->old_doc, &o, revert_done, c);
    }
    if (rc != 0)
        revert_done(rc, NULL, c);
}

static void
put_done(int err, const kb_resource *res, void *data)
{
    api_call *c = data;

    if (err != 0) {
        api_store_error(c, err);
        return;
    }
    apply_stored(c, res);
}

/* The resource a validateOnly call would produce. */
static void
respond_dry(api_call *c, int64_t version)
{
    int64_t now = kb_time_unix_ns();
    kb_resource r = {
        .kind = c->kind->kind->collection, .parent = c->parent,
        .name = c->name, .doc = c->spec, .version = version,
        .create_time_ns = now, .update_time_ns = now,
    };

    respond_resource(c, &r);
}

static void
call_cleanup(void *data)
{
    api_call *c = data;

    json_decref(c->spec);
    json_decref(c->old_doc);
    json_decref(c->reveal);
    json_decref(c->base);
}

static void
h_create(api_call *c)
{
    char idparam[64], uid[37];
    const char *id, *rid;
    kb_put_opts o = { KB_PUT_CREATE, 0, NULL };
    int rc;

    snprintf(idparam, sizeof(idparam), "%sId", c->kind->kind->singular);
    id = kb_http_req_query(c->req, idparam);
    if (id == NULL || id[0] == '\0') {
        api_error(c, 400, "INVALID_ARGUMENT", "the query parameter %s is "
                  "required", idparam);
        return;
    }
    if (!kb_name_valid(id)) {
        api_error(c, 400, "INVALID_ARGUMENT", "%s \"%s\" is not a valid name "
                  "(lowercase letters, digits and '-', starting with a letter, "
                  "at most 63 characters)", idparam, id);
        return;
    }
    c->name = id;
    if (!read_body(c, 0) || !check_spec(c))
        return;
    if (query_bool(c, "validateOnly")) {
        respond_dry(c, 0);
        return;
    }
    rid = kb_http_req_query(c->req, "requestId");
    if (rid != NULL && (rid[0] == '\0' || strlen(rid) > API_MAX_ID_LEN)) {
        api_error(c, 400, "INVALID_ARGUMENT", "requestId must have 1 to %d "
                  "characters", API_MAX_ID_LEN);
        return;
    }
    o.request_id = rid;
    kb_uuid4(uid);
    json_object_set_new(c->spec, "uid", json_string(uid));
    rc = kb_store_put(c->api->ctx.store, c->kind->kind->collection, c->parent,
                      c->name, c->spec, &o, put_done, c);
    if (rc != 0)
        api_store_error(c, rc);
}

/* updateMask=a,b: only those top-level fields come from the body. */
static int
apply_update_mask(api_call *c, const char *mask)
{
    json_t *merged = json_deep_copy(c->old_doc);
    char field[128];
    const char *p = mask;

    if (merged == NULL)
        return KB_ENOMEM;
    json_object_del(merged, "uid");
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        json_t *v;

        if (n == 0 || n >= sizeof(field)) {
            json_decref(merged);
            return KB_EINVAL;
        }
        memcpy(field, p, n);
        field[n] = '\0';
        v = json_object_get(c->spec, field);
        if (v != NULL)
            json_object_set(merged, field, v);
        else
            json_object_del(merged, field);
        p += n;
        if (*p == ',')
            p++;
    }
    json_decref(c->spec);
    c->spec = merged;
    return 0;
}

/* The stored resource an update starts from: keeps a copy in c->old_doc
 * with its version; false (answered) when the read failed. */
static bool
got_old(api_call *c, int err, const kb_resource *res)
{
    if (err != 0) {
        api_store_error(c, err);
        return false;
    }
    c->old_doc = json_deep_copy(res->doc);
    c->old_version = res->version;
    return true;
}

/* Check c->spec, give it the old uid and write it over c->old_version
 * (with dry_run and ?validateOnly only answer what it would be); answers
 * every error. */
static void
put_update(api_call *c, bool dry_run)
{
    kb_put_opts o = { KB_PUT_UPDATE, 0, NULL };
    json_t *uid;
    int rc;

    if (!check_spec(c))
        return;
    uid = json_object_get(c->old_doc, "uid");
    if (uid != NULL)
        json_object_set(c->spec, "uid", uid);
    if (dry_run && query_bool(c, "validateOnly")) {
        respond_dry(c, c->old_version + 1);
        return;
    }
    o.expect_version = c->old_version;
    rc = kb_store_put(c->api->ctx.store, c->kind->kind->collection, c->parent,
                      c->name, c->spec, &o, put_done, c);
    if (rc != 0)
        api_store_error(c, rc);
}

static void
update_got_old(int err, const kb_resource *res, void *data)
{
    api_call *c = data;
    const char *mask;

    if (!got_old(c, err, res) || !read_body(c, res->version))
        return;
    mask = kb_http_req_query(c->req, "updateMask");
    if (mask != NULL && mask[0] != '\0' && apply_update_mask(c, mask) != 0) {
        api_error(c, 400, "INVALID_ARGUMENT", "malformed updateMask");
        return;
    }
    put_update(c, true);
}

static void
h_update(api_call *c)
{
    int rc = kb_store_get(c->api->ctx.store, c->kind->kind->collection,
                          c->parent, c->name, update_got_old, c);
    if (rc != 0)
        api_store_error(c, rc);
}

static void
delete_done(int err, const kb_resource *res, void *data)
{
    api_call *c = data;

    if (err != 0) {
        api_store_error(c, err);
        return;
    }
    c->kind->family->remove(c->api, c->project, c->name);
    kb_log_info("deleted", "{s:s, s:s, s:s}", "kind", c->kind->kind->kind,
                "project", c->project, "name", c->name);
    kb_http_respond_json(c->req, 200, json_object());
}

static void
h_delete(api_call *c)
{
    const char *etag = kb_http_req_query(c->req, "etag");
    long long version = 0;
    int rc;

    if (etag != NULL && sscanf(etag, "\"%lld\"", &version) != 1 &&
        sscanf(etag, "%lld", &version) != 1) {
        api_error(c, 400, "INVALID_ARGUMENT", "malformed etag");
        return;
    }
    rc = kb_store_delete(c->api->ctx.store, c->kind->kind->collection,
                         c->parent, c->name, version, delete_done, c);
    if (rc != 0)
        api_store_error(c, rc);
}

/* Dispatch ---------------------------------------------------------------- */

static bool
authorized(const kb_api *api, const kb_http_req *req)
{
    const char *h = kb_http_req_header(req, "Authorization");
    size_t n = strlen(api->token);

    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return strlen(h) == n && CRYPTO_memcmp(h, api->token, n) == 0;
}

/* A path parameter as a pool string; NULL if absent. */
static const char *
param(kb_http_req *req, const kb_route_match *m, const char *name)
{
    size_t len;
    const char *v = kb_route_param_get(m, name, &len);

    return v ? kb_pool_strndup(req->pool, v, len) : NULL;
}

void
kb_api_handle(kb_http_req *req, void *data)
{
    static const kb_http_header www_auth[] = {
        { "WWW-Authenticate", "Bearer realm=\"kiban\"" },
    };
    static const char unauth[] =
        "{\"error\":{\"code\":401,\"status\":\"UNAUTHENTICATED\","
        "\"message\":\"missing or invalid bearer token\"}}";
    kb_api *api = data;
    kb_route_match m;
    const api_target *t;
    api_call *c;
    int st;

    c = kb_pool_calloc(req->pool, sizeof(*c));
    if (c == NULL) {
        kb_http_respond_error(req, 500, "out of memory");
        return;
    }
    c->api = api;
    c->req = req;

    st = kb_router_match(api->router, req->method, req->path,
                         strlen(req->path), &m);
    if (st == 404) {
        api_error(c, 404, "NOT_FOUND", "no such API path: %s", req->path);
        return;
    }
    if (st == 405) {
        kb_http_header allow = { "Allow", m.allow };
        char body[256];
        int n = snprintf(body, sizeof(body),
                         "{\"error\":{\"code\":405,\"status\":\"UNIMPLEMENTED\","
                         "\"message\":\"method %s is not allowed here\"}}",
                         req->method);
        kb_http_header hs[2] = { allow, { "Content-Type", "application/json" } };
        kb_http_respond(req, 405, hs, 2, body, (size_t)n);
        return;
    }
    t = m.target;
    if (t->route->auth && !authorized(api, req)) {
        kb_counter_add(api->auth_failures, 1);
        kb_http_header hs[2] = { www_auth[0],
                                 { "Content-Type", "application/json" } };
        kb_http_respond(req, 401, hs, 2, unauth, sizeof(unauth) - 1);
        return;
    }
    c->kind = t->kind;
    if (t->kind != NULL) {
        c->project = param(req, &m, "project");
        c->name = param(req, &m, "name");
        if (c->project == NULL || !kb_name_valid(c->project)) {
            api_error(c, 400, "INVALID_ARGUMENT", "invalid project name");
            return;
        }
        if (c->name != NULL && !kb_name_valid(c->name)) {
            api_error(c, 404, "NOT_FOUND", "%s \"%s\" not found",
                      t->kind->kind->singular, c->name);
            return;
        }
        snprintf(c->parent, sizeof(c->parent), "projects/%s", c->project);
        if (kb_pool_cleanup_add(req->pool, call_cleanup, c) != 0) {
            kb_http_respond_error(req, 500, "out of memory");
            return;
        }
    }
    c->verb = t->verb;
    c->sub = t->sub;
    if (t->sub != NULL)
        c->subname = param(req, &m, "sub");
    t->route->handler(c);
}

static void
h_verb(api_call *c)
{
    c->verb->run(c->api, c->req, c->project, c->name);
}

static void
h_sub(api_call *c)
{
    c->sub->run(c->api, c->req, c->project, c->name, c->subname);
}

/* Read-modify-write ------------------------------------------------------- */

static void
modify_got(int err, const kb_resource *res, void *data)
{
    api_call *c = data;
    char why[512] = "";
    int rc;

    if (!got_old(c, err, res))
        return;
    c->spec = json_deep_copy(res->doc);
    if (c->old_doc == NULL || c->spec == NULL) {
        api_error(c, 500, "INTERNAL", "out of memory");
        return;
    }
    json_object_del(c->spec, "uid");
    rc = c->change.change(c->api, c->spec, c->change.arg, why, sizeof(why));
    if (rc != 0) {
        kb_api_fail(c->req, rc, why);
        return;
    }
    if ((c->base = json_deep_copy(c->spec)) == NULL) {
        api_error(c, 500, "INTERNAL", "out of memory");
        return;
    }
    put_update(c, false);
}

void
kb_api_modify(kb_api *api, kb_http_req *req, const char *kind,
              const char *project, const char *name, const kb_api_change *ch)
{
    const api_kind *k = NULL;
    api_call *c;
    int rc;

    for (size_t i = 0; i < NFAMILIES; i++)
        if (strcmp(api->kinds[i].family->kind, kind) == 0)
            k = &api->kinds[i];
    c = kb_pool_calloc(req->pool, sizeof(*c));
    if (k == NULL || c == NULL || ch == NULL || ch->change == NULL) {
        kb_api_error(req, 500, "INTERNAL", "internal error");
        return;
    }
    c->api = api;
    c->req = req;
    c->kind = k;
    c->project = project;
    c->name = name;
    c->modify = true;
    c->change = *ch;
    snprintf(c->parent, sizeof(c->parent), "projects/%s", project);
    if (kb_pool_cleanup_add(req->pool, call_cleanup, c) != 0) {
        kb_api_error(req, 500, "INTERNAL", "out of memory");
        return;
    }
    rc = kb_store_get(api->ctx.store, k->kind->collection, c->parent, name,
                      modify_got, c);
    if (rc != 0)
        api_store_error(c, rc);
}

/* Setup ------------------------------------------------------------------- */

const kb_api_ctx *
kb_api_context(const kb_api *api)
{
    return &api->ctx;
}

/* Route `method` and tmpl's pattern (its "%s"s: the kind's collection,
 * then arg) to a copy of tmpl in the next slot of api->targets; logs a
 * bad route. */
static int
add_target(kb_api *api, api_target tmpl, const char *method, const char *arg)
{
    char pattern[256];
    const char *why = NULL;
    api_target *t = &api->targets[api->ntargets++];
    int rc;

    *t = tmpl;
    snprintf(pattern, sizeof(pattern), t->route->pattern,
             t->kind ? t->kind->kind->collection : "", arg);
    rc = kb_router_add(api->router, method, pattern, t, &why);
    if (rc != 0)
        kb_log_error("bad API route", "{s:s, s:s}", "pattern", pattern,
                     "error", why ? why : kb_strerror(rc));
    return rc;
}

static int
add_route(kb_api *api, const api_route *r, const api_kind *k)
{
    return add_target(api, (api_target){ .route = r, .kind = k }, r->method,
                      "");
}

static int
add_verb_route(kb_api *api, const kb_api_verb *v, const api_kind *k)
{
    if (v - k->family->verbs >= API_MAX_VERBS)
        return KB_ETOOBIG;
    return add_target(api, (api_target){ .route = &verb_route, .kind = k,
                                         .verb = v },
                      verb_route.method, v->verb);
}

static int
add_sub_route(kb_api *api, const kb_api_subroute *s, const api_kind *k)
{
    if (s - k->family->subroutes >= API_MAX_SUBROUTES)
        return KB_ETOOBIG;
    return add_target(api, (api_target){ .route = &sub_route, .kind = k,
                                         .sub = s },
                      s->method, s->path);
}

int
kb_api_create(const kb_api_ctx *ctx, kb_api **out)
{
    kb_api *api = calloc(1, sizeof(*api));
    int rc = KB_ENOMEM;

    if (api == NULL)
        return KB_ENOMEM;
    api->ctx = *ctx;
    api->token = strdup(ctx->token);
    api->ctx.token = api->token;
    api->router = kb_router_create();
    api->targets = calloc(NELEM(global_routes) +
                          NFAMILIES * (NELEM(kind_routes) + API_MAX_VERBS
                                       + API_MAX_SUBROUTES),
                          sizeof(*api->targets));
    if (api->token == NULL || api->router == NULL || api->targets == NULL)
        goto out_free;
    api->auth_failures = kb_counter_get("kiban_api_auth_failures_total",
        "Admin API calls refused for a missing or wrong token.", NULL);

    for (size_t i = 0; i < NELEM(global_routes); i++)
        if ((rc = add_route(api, &global_routes[i], NULL)) != 0)
            goto out_free;
    for (size_t k = 0; k < NFAMILIES; k++) {
        api->kinds[k].family = api_families[k];
        api->kinds[k].kind = kb_kind_find(api_families[k]->kind);
        if (api->kinds[k].kind == NULL) {
            rc = KB_EINVAL;
            goto out_free;
        }
        for (size_t i = 0; i < NELEM(kind_routes); i++)
            if ((rc = add_route(api, &kind_routes[i], &api->kinds[k])) != 0)
                goto out_free;
        for (const kb_api_verb *v = api_families[k]->verbs;
             v != NULL && v->verb != NULL; v++)
            if ((rc = add_verb_route(api, v, &api->kinds[k])) != 0)
                goto out_free;
        for (const kb_api_subroute *s = api_families[k]->subroutes;
             s != NULL && s->method != NULL; s++)
            if ((rc = add_sub_route(api, s, &api->kinds[k])) != 0)
                goto out_free;
    }
    *out = api;
    return 0;

out_free:
    kb_api_free(api);
    return rc;
}

void
kb_api_free(kb_api *api)
{
    if (api == NULL)
        return;
    kb_router_free(api->router);
    free(api->targets);
    free(api->token);
    free(api);
}

/* Boot -------------------------------------------------------------------- */

typedef struct restore_state {
    kb_api         *api;
    const api_kind *kind;
    char           *next;
    size_t          applied, failed;
    int             err;
} restore_state;

static void
restore_page(int err, const kb_store_page *page, void *data)
{
    restore_state *st = data;
    char why[512];

    st->err = err;
    if (err != 0)
        return;
    for (size_t i = 0; i < page->n; i++) {
        const kb_resource *r = &page->items[i];
        const char *project = strncmp(r->parent, "projects/", 9) == 0
                              ? r->parent + 9 : r->parent;
        why[0] = '\0';
        if (apply_doc(st->api, st->kind, project, r->name, r->doc, why,
                      sizeof(why)) == 0) {
            st->applied++;
            continue;
        }
        st->failed++;
        kb_log_error("stored resource no longer applies; skipped",
                     "{s:s, s:s, s:s, s:s}", "kind", st->kind->kind->kind,
                     "project", project, "name", r->name, "error", why);
    }
    if (page->next_token != NULL)
        st->next = strdup(page->next_token);
}

int
kb_api_restore(kb_api *api)
{
    for (size_t k = 0; k < NFAMILIES; k++) {
        restore_state st = { api, &api->kinds[k], NULL, 0, 0, 0 };
        int rc;

        do {
            char *token = st.next;
            st.next = NULL;
            rc = kb_store_list_sync(api->ctx.store, st.kind->kind->collection,
                                    NULL, 500, token, restore_page, &st);
            free(token);
            if (rc == 0)
                rc = st.err;
            if (rc != 0) {
                free(st.next);
                return rc;
            }
        } while (st.next != NULL);
        kb_log_info("restored from the store", "{s:s, s:i, s:i}", "kind",
                    st.kind->kind->kind, "applied", (int)st.applied,
                    "failed", (int)st.failed);
    }
    return 0;
}
