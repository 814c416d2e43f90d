/*
 * gateway.c - the kb_gateway object (gateway.h): the list of installed
 * Gateway specs and the current route table.  Every set/remove compiles
 * (openapi.c), builds a whole new table from the list (table.c) and swaps
 * it in; the old table lives on until the last request holding it ends.
 */
#include "gateway/gw_int.h"
#include "core/err.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const gw_rt_ops gw__rt_ops = {
    .acquire = kb_runtime_acquire,
    .wait_cancel = kb_runtime_wait_cancel,
    .release = kb_runtime_release,
    .at_capacity = kb_runtime_at_capacity,
};

int
kb_gateway_create(uv_loop_t *loop, kb_http_client *client, kb_runtime *rt,
                  kb_gateway **out)
{
    kb_gateway *gw = calloc(1, sizeof(*gw));
    int rc;

    *out = NULL;
    if (gw == NULL)
        return KB_ENOMEM;
    gw->loop = loop;
    gw->client = client;
    gw->rt = rt;
    gw->rt_ops = rt != NULL ? &gw__rt_ops : NULL;
    snprintf(gw->domain, sizeof(gw->domain), "localhost");
    atomic_init(&gw->retry_budget, 10000);   /* 10 retries banked */
    if (pthread_mutex_init(&gw->lock, NULL) != 0) {
        free(gw);
        return KB_ENOMEM;
    }
    if ((rc = gw__table_build(NULL, 0, NULL, &gw->table, NULL, 0)) != 0 ||
        (rc = kb_gateway_set_access_log(gw, "stderr")) != 0 ||
        (rc = gw__auth_init(gw)) != 0 ||
        (rc = gw__ratelimit_init(gw)) != 0 ||
        (rc = gw__cache_init(gw)) != 0) {
        kb_gateway_free(gw);
        return rc;
    }
    *out = gw;
    return 0;
}

/* Index of project/name in gw->specs, or nspecs. */
static size_t
spec_find(const kb_gateway *gw, const char *project, const char *name)
{
    size_t i;

    for (i = 0; i < gw->nspecs; i++)
        if (strcmp(gw->specs[i]->project, project) == 0 &&
            strcmp(gw->specs[i]->name, name) == 0)
            break;
    return i;
}

/* Install `specs` (the list takes ownership of the array and of one
 * reference per spec) and the table built from them. */
static void
swap_in(kb_gateway *gw, gw_spec **specs, size_t nspecs, gw_table *table)
{
    gw_table *old_table;
    gw_spec **old_specs = gw->specs;
    size_t old_n = gw->nspecs;

    pthread_mutex_lock(&gw->lock);
    old_table = gw->table;
    gw->table = table;
    atomic_fetch_add(&gw->table_gen, 1);
    pthread_mutex_unlock(&gw->lock);
    gw->specs = specs;
    gw->nspecs = nspecs;
    gw__table_unref(old_table);          /* in-flight requests keep theirs */
    for (size_t i = 0; i < old_n; i++)
        gw__spec_unref(old_specs[i]);
    free(old_specs);
}

int
kb_gateway_set(kb_gateway *gw, const char *project, const char *name,
               const json_t *spec, char *err, size_t errlen)
{
    gw_spec *s, **list;
    gw_table *table;
    size_t at, n;
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (project == NULL || name == NULL)
        return KB_EINVAL;
    rc = gw__spec_compile(spec, project, name, &s, err, errlen);
    if (rc != 0)
        return rc;
    at = spec_find(gw, project, name);
    n = at < gw->nspecs ? gw->nspecs : gw->nspecs + 1;
    list = calloc(n, sizeof(*list));
    if (list == NULL) {
        gw__spec_unref(s);
        return KB_ENOMEM;
    }
    for (size_t i = 0; i < gw->nspecs; i++)
        list[i] = gw__spec_ref(gw->specs[i]);
    if (at < gw->nspecs)
        gw__spec_unref(list[at]);
    list[at] = s;
    rc = gw__table_build(list, n, s, &table, err, errlen);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++)
            gw__spec_unref(list[i]);
        free(list);
        return rc;                   /* the previous table keeps serving */
    }
    swap_in(gw, list, n, table);
    (void)kb_gateway_cache_purge(gw, project, name, NULL); /* a new spec */
    kb_log_info("gateway installed", "{s:s, s:s, s:i, s:i}", "project",
                project, "name", name, "routes", (int)s->nroutes, "hosts",
                (int)s->nhosts);
    return 0;
}

int
kb_gateway_remove(kb_gateway *gw, const char *project, const char *name)
{
    size_t at = spec_find(gw, project, name), n = 0;
    gw_spec **list;
    gw_table *table;
    int rc;

    if (at == gw->nspecs)
        return KB_ENOTFOUND;
    list = calloc(gw->nspecs, sizeof(*list));
    if (list == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < gw->nspecs; i++)
        if (i != at)
            list[n++] = gw__spec_ref(gw->specs[i]);
    /* fewer routes cannot conflict; only memory can fail here */
    rc = gw__table_build(list, n, NULL, &table, NULL, 0);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++)
            gw__spec_unref(list[i]);
        free(list);
        return rc;
    }
    swap_in(gw, list, n, table);
    (void)kb_gateway_cache_purge(gw, project, name, NULL);
    kb_log_info("gateway removed", "{s:s, s:s}", "project", project, "name",
                name);
    return 0;
}

void
kb_gateway_free(kb_gateway *gw)
{
    if (gw == NULL)
        return;
    gw__cache_fini(gw);
    gw__ratelimit_fini(gw);
    gw__auth_fini(gw);
    gw__accesslog_free(gw);
    free(gw->ca_file);
    gw__table_unref(gw->table);
    for (size_t i = 0; i < gw->nspecs; i++)
        gw__spec_unref(gw->specs[i]);
    free(gw->specs);
    pthread_mutex_destroy(&gw->lock);
    free(gw);
}

/* What a route's requests go to, for status. */
static const char *
route_backend(const gw_route *r)
{
    if (r->backend == NULL)
        return "(aggregate)";
    return r->backend->service != NULL ? r->backend->service
                                       : r->backend->authority;
}

json_t *
kb_gateway_status(kb_gateway *gw, const char *project, const char *name)
{
    size_t i = spec_find(gw, project, name);
    const gw_spec *s;
    json_t *routes;

    if (i == gw->nspecs)
        return NULL;
    s = gw->specs[i];
    routes = json_array();
    for (size_t r = 0; r < s->nroutes; r++)
        json_array_append_new(routes, json_pack("{s:s, s:s}", "route",
            s->routes[r].label, "backend", route_backend(&s->routes[r])));
    return json_pack("{s:I, s:o}", "routeCount", (json_int_t)s->nroutes,
                     "routes", routes);
}

void
kb_gateway_set_cache_size(kb_gateway *gw, size_t bytes)
{
    /* the cache takes its size at init: make it anew (no traffic yet) */
    gw__cache_fini(gw);
    gw->cache_max_bytes = bytes;
    if (gw__cache_init(gw) != 0)
        kb_log_error("cannot create the response cache", NULL);
}

int
kb_gateway_set_ca_file(kb_gateway *gw, const char *path)
{
    char *copy = path != NULL ? strdup(path) : NULL;

    if (path != NULL && copy == NULL)
        return KB_ENOMEM;
    free(gw->ca_file);
    gw->ca_file = copy;
    return 0;
}

void
kb_gateway_shutdown(kb_gateway *gw)
{
    gw__auth_shutdown(gw);
}
