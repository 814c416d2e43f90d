/*
 * services.c - the Service family: documents checked by the runtime
 * (template.c), server-managed revisions and traffic (revision.c), the
 * :updateTraffic method, the revisions sub-collection and the logs
 * endpoint.  Every change goes through the API's generic store-then-apply
 * path (api.c), so what is stored is what runs.
 */
#include "api/api.h"
#include "core/err.h"
#include "core/time.h"
#include "runtime/revision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOGS_MAX_LIMIT 1000
#define LOGS_MAX_WAIT_MS (60 * 1000)

static int
services_validate(kb_api *api, const json_t *spec, char *err, size_t errlen)
{
    return kb_runtime_validate(spec, err, errlen);
}

static bool
query_true(kb_http_req *req, const char *name)
{
    const char *v = req != NULL ? kb_http_req_query(req, name) : NULL;

    return v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* Revisions, counter and traffic: server-managed (revision.h). */
static int
services_prepare(kb_api *api, kb_http_req *req, const char *name,
                 json_t *spec, const json_t *old_doc, json_t **reveal,
                 char *err, size_t errlen)
{
    kb_rt_deploy_opts o = { 0 };

    o.no_traffic = query_true(req, "noTraffic");
    o.tag = req != NULL ? kb_http_req_query(req, "tag") : NULL;
    return kb_rt_deploy(spec, old_doc, name, &o, err, errlen);
}

static int
services_apply(kb_api *api, const char *project, const char *name,
               const json_t *spec, char *err, size_t errlen)
{
    return kb_runtime_apply(kb_api_context(api)->runtime, project, name, spec,
                            err, errlen);
}

static void
services_remove(kb_api *api, const char *project, const char *name)
{
    (void)kb_runtime_remove(kb_api_context(api)->runtime, project, name);
}

static json_t *
services_status(kb_api *api, const char *project, const char *name)
{
    return kb_runtime_status(kb_api_context(api)->runtime, project, name);
}

/* ---- :updateTraffic ----------------------------------------------------- */

static void
decref_cleanup(void *data)
{
    json_decref(data);
}

static int
traffic_change(kb_api *api, json_t *doc, void *arg, char *err, size_t errlen)
{
    return kb_rt_update_traffic(doc, arg, err, errlen);
}

static void
services_update_traffic(kb_api *api, kb_http_req *req, const char *project,
                        const char *name)
{
    json_error_t jerr;
    json_t *body;
    kb_api_change ch = { traffic_change, NULL, NULL };

    body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES,
                      &jerr);
    if (body == NULL) {
        kb_api_error(req, 400, "INVALID_ARGUMENT", "invalid JSON at line %d "
                     "column %d: %s", jerr.line, jerr.column, jerr.text);
        return;
    }
    if (kb_pool_cleanup_add(req->pool, decref_cleanup, body) != 0) {
        json_decref(body);
        kb_api_error(req, 500, "INTERNAL", "out of memory");
        return;
    }
    ch.arg = body;
    kb_api_modify(api, req, "Service", project, name, &ch);
}

/* ---- revisions ------------------------------------------------------------ */

typedef struct rev_call {
    kb_api      *api;
    kb_http_req *req;
    const char  *project, *name, *rev;
} rev_call;

static rev_call *
rev_call_new(kb_api *api, kb_http_req *req, const char *project,
             const char *name, const char *rev)
{
    rev_call *rc = kb_pool_calloc(req->pool, sizeof(*rc));

    if (rc == NULL) {
        kb_api_error(req, 500, "INTERNAL", "out of memory");
        return NULL;
    }
    rc->api = api;
    rc->req = req;
    rc->project = project;
    rc->name = name;
    rc->rev = rev;
    return rc;
}

/* The API view of one revision with its live status. */
static json_t *
revision_json(rev_call *rc, const json_t *doc, const json_t *rev)
{
    json_t *out = kb_rt_revision_view(doc, rev, rc->project, rc->name);
    json_t *st;

    if (out == NULL)
        return NULL;
    st = kb_runtime_revision_status(kb_api_context(rc->api)->runtime,
                                    rc->project, rc->name,
                                    json_string_value(json_object_get(out,
                                                      "revision")));
    if (st != NULL)
        json_object_set_new(out, "status", st);
    return out;
}

static bool
store_ok(rev_call *rc, int err)
{
    if (err == KB_ENOTFOUND) {
        kb_api_error(rc->req, 404, "NOT_FOUND", "service \"%s\" not found "
                     "in project \"%s\"", rc->name, rc->project);
        return false;
    }
    if (err != 0) {
        kb_api_fail(rc->req, err, NULL);
        return false;
    }
    return true;
}

/* Read service `name` of `project`, then cb with a rev_call for revision
 * `rev` (NULL: all); answers req itself when that cannot start. */
static void
service_fetch(kb_api *api, kb_http_req *req, const char *project,
              const char *name, const char *rev, kb_store_res_cb cb)
{
    rev_call *rc = rev_call_new(api, req, project, name, rev);
    char parent[96];
    int e;

    if (rc == NULL)
        return;
    snprintf(parent, sizeof(parent), "projects/%s", project);
    e = kb_store_get(kb_api_context(api)->store, "services", parent, name,
                     cb, rc);
    if (e != 0)
        kb_api_fail(req, e, NULL);
}

static void
list_got(int err, const kb_resource *res, void *data)
{
    rev_call *rc = data;
    const json_t *revs;
    json_t *out;
    size_t n;

    if (!store_ok(rc, err))
        return;
    revs = json_object_get(res->doc, "revisions");
    out = json_array();
    for (n = json_array_size(revs); out != NULL && n > 0; n--)
        if (json_array_append_new(out, revision_json(rc, res->doc,
                                  json_array_get(revs, n - 1))) != 0) {
            json_decref(out);
            out = NULL;
        }
    if (out == NULL) {
        kb_api_error(rc->req, 500, "INTERNAL", "out of memory");
        return;
    }
    kb_http_respond_json(rc->req, 200, json_pack("{s:o}", "revisions", out));
}

static void
revisions_list(kb_api *api, kb_http_req *req, const char *project,
               const char *name, const char *sub)
{
    (void)sub;
    service_fetch(api, req, project, name, NULL, list_got);
}

static void
get_got(int err, const kb_resource *res, void *data)
{
    rev_call *rc = data;
    const json_t *rev;
    json_t *out;

    if (!store_ok(rc, err))
        return;
    rev = kb_rt_revision_find(res->doc, rc->rev);
    if (rev == NULL) {
        kb_api_error(rc->req, 404, "NOT_FOUND", "revision \"%s\" not found "
                     "in service \"%s\"", rc->rev, rc->name);
        return;
    }
    if ((out = revision_json(rc, res->doc, rev)) == NULL) {
        kb_api_error(rc->req, 500, "INTERNAL", "out of memory");
        return;
    }
    kb_http_respond_json(rc->req, 200, out);
}

static void
revisions_get(kb_api *api, kb_http_req *req, const char *project,
              const char *name, const char *sub)
{
    service_fetch(api, req, project, name, sub, get_got);
}

static int
delete_change(kb_api *api, json_t *doc, void *arg, char *err, size_t errlen)
{
    return kb_rt_revision_delete(doc, arg, err, errlen);
}

static void
delete_respond(kb_api *api, kb_http_req *req, const json_t *doc, void *arg)
{
    kb_http_respond_json(req, 200, json_object());
}

static void
revisions_delete(kb_api *api, kb_http_req *req, const char *project,
                 const char *name, const char *sub)
{
    kb_api_change ch = { delete_change, delete_respond, (void *)sub };

    kb_api_modify(api, req, "Service", project, name, &ch);
}

/* ---- logs ------------------------------------------------------------------- */

/*
 * One logs call.  malloc'd, not from the request pool: the runtime may
 * answer before kb_runtime_logs returns, and answering frees the pool.
 */
typedef struct logs_call {
    kb_api         *api;
    kb_http_req    *req;
    kb_rt_log_wait *handle;
    bool            returned;   /* kb_runtime_logs has returned */
    bool            answered;
} logs_call;

static void
logs_done(json_t *result, void *data)
{
    logs_call *lc = data;
    kb_http_req *req = lc->req;

    lc->handle = NULL;
    if (lc->returned)
        free(lc);
    else
        lc->answered = true;            /* the caller frees it */
    if (result == NULL) {
        kb_api_error(req, 500, "INTERNAL", "out of memory");
        return;
    }
    kb_http_respond_json(req, 200, result);
}

/* The client went away: end the wait; logs_done then answers (which only
 * releases the request) and frees lc. */
static void
logs_abort(kb_http_req *req, void *data)
{
    logs_call *lc = data;

    if (lc->handle != NULL)
        kb_runtime_logs_cancel(kb_api_context(lc->api)->runtime, lc->handle);
}

/* A non-negative integer query parameter; false if malformed. */
static bool
query_u64(kb_http_req *req, const char *name, uint64_t max, uint64_t *out)
{
    const char *v = kb_http_req_query(req, name);
    char *end;
    unsigned long long n;

    if (v == NULL || v[0] == '\0')
        return true;
    if (v[0] < '0' || v[0] > '9')
        return false;
    n = strtoull(v, &end, 10);
    if (*end != '\0' || n > max)
        return false;
    *out = n;
    return true;
}

static void
services_logs(kb_api *api, kb_http_req *req, const char *project,
              const char *name, const char *sub)
{
    kb_rt_log_query q = { 0 };
    const char *since = kb_http_req_query(req, "since");
    const char *wait = kb_http_req_query(req, "wait");
    uint64_t limit = 0, ms;
    logs_call *lc;
    int rc;

    q.revision = kb_http_req_query(req, "revision");
    if (q.revision != NULL && q.revision[0] == '\0')
        q.revision = NULL;
    if (!query_u64(req, "after", UINT64_MAX, &q.after)) {
        kb_api_error(req, 400, "INVALID_ARGUMENT", "after: must be a "
                     "sequence number (nextSeq of an earlier answer)");
        return;
    }
    if (!query_u64(req, "limit", LOGS_MAX_LIMIT, &limit)) {
        kb_api_error(req, 400, "INVALID_ARGUMENT", "limit: must be an "
                     "integer from 0 to %d", LOGS_MAX_LIMIT);
        return;
    }
    q.limit = (size_t)limit;
    if (since != NULL && since[0] != '\0') {
        if (!kb_rt_duration_ms(since, &ms)) {
            kb_api_error(req, 400, "INVALID_ARGUMENT", "since: want a "
                         "duration like \"5m\", \"1h\" or seconds");
            return;
        }
        q.since_ns = kb_time_unix_ns() - (int64_t)ms * 1000000;
    }
    if (wait != NULL && wait[0] != '\0') {
        if (!kb_rt_duration_ms(wait, &ms) || ms > LOGS_MAX_WAIT_MS) {
            kb_api_error(req, 400, "INVALID_ARGUMENT", "wait: want a "
                         "duration up to 60s, like \"30s\"");
            return;
        }
        q.wait_ms = ms;
    }
    lc = calloc(1, sizeof(*lc));
    if (lc == NULL) {
        kb_api_error(req, 500, "INTERNAL", "out of memory");
        return;
    }
    lc->api = api;
    lc->req = req;
    rc = kb_runtime_logs(kb_api_context(api)->runtime, project, name, &q,
                         logs_done, lc, &lc->handle);
    lc->returned = true;
    if (rc == 0 && !lc->answered) {
        kb_http_req_on_abort(req, logs_abort, lc);
        return;
    }
    free(lc);
    if (rc == 0)
        return;                         /* answered already */
    if (rc == KB_ENOTFOUND)
        kb_api_error(req, 404, "NOT_FOUND", "service \"%s\" not found in "
                     "project \"%s\"", name, project);
    else if (rc == KB_ETOOBIG)
        kb_api_error(req, 429, "RESOURCE_EXHAUSTED", "too many log "
                     "queries are waiting; retry later");
    else
        kb_api_fail(req, rc, NULL);
}

static const kb_api_verb service_verbs[] = {
    { "updateTraffic", services_update_traffic },
    { NULL, NULL },
};

static const kb_api_subroute service_subroutes[] = {
    { "GET",    "revisions",       revisions_list },
    { "GET",    "revisions/{sub}", revisions_get },
    { "DELETE", "revisions/{sub}", revisions_delete },
    { "GET",    "logs",            services_logs },
    { NULL, NULL, NULL },
};

const kb_api_family kb_api_services = {
    .kind = "Service",
    .validate = services_validate,
    .prepare = services_prepare,
    .apply = services_apply,
    .remove = services_remove,
    .status = services_status,
    .verbs = service_verbs,
    .subroutes = service_subroutes,
};
