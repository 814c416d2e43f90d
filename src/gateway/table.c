/*
 * table.c - the gateway's route table: every compiled Gateway spec of
 * every project merged into one router per host name plus one fallback
 * router for gateways that name no host.  A table is immutable once built
 * and reference counted; gateway.c swaps whole tables, so a request that
 * holds one sees a consistent set of routes until it finishes.
 */
#include "gateway/gw_int.h"
#include "core/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void
table_free(gw_table *t)
{
    for (size_t i = 0; i < t->nhosts; i++) {
        free(t->hosts[i].host);
        kb_router_free(t->hosts[i].router);
    }
    free(t->hosts);
    kb_router_free(t->fallback);
    for (size_t i = 0; i < t->nspecs; i++)
        gw__spec_unref(t->specs[i]);
    free(t->specs);
    free(t);
}

gw_table *
gw__table_ref(gw_table *t)
{
    atomic_fetch_add(&t->refs, 1);
    return t;
}

void
gw__table_unref(gw_table *t)
{
    if (t != NULL && atomic_fetch_sub(&t->refs, 1) == 1)
        table_free(t);
}

static int
host_cmp(const void *a, const void *b)
{
    return strcmp(((const gw_host_router *)a)->host,
                  ((const gw_host_router *)b)->host);
}

/* The router for host h, created (unsorted, at the end) if missing. */
static kb_router *
host_router(gw_table *t, size_t *cap, const char *h)
{
    for (size_t i = 0; i < t->nhosts; i++)
        if (strcmp(t->hosts[i].host, h) == 0)
            return t->hosts[i].router;
    if (t->nhosts == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        gw_host_router *grown = realloc(t->hosts, ncap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        t->hosts = grown;
        *cap = ncap;
    }
    t->hosts[t->nhosts].host = strdup(h);
    t->hosts[t->nhosts].router = kb_router_create();
    if (t->hosts[t->nhosts].host == NULL ||
        t->hosts[t->nhosts].router == NULL) {
        free(t->hosts[t->nhosts].host);
        kb_router_free(t->hosts[t->nhosts].router);
        return NULL;
    }
    return t->hosts[t->nhosts++].router;
}

/*
 * The route already in `router` that r collided with: match r's own
 * template as a path (parameters in braces match parameter segments).
 * Only used for the error message, so a miss is harmless.
 */
static const gw_route *
collided_with(const kb_router *router, const gw_route *r)
{
    kb_route_match m;

    if (kb_router_match(router, r->method, r->template, strlen(r->template),
                        &m) == 200)
        return m.target;
    return NULL;
}

static int
add_spec(gw_table *t, size_t *cap, gw_spec *s, const gw_spec *subject,
         char *err, size_t errlen)
{
    size_t nrouters = s->nhosts > 0 ? s->nhosts : 1;

    for (size_t h = 0; h < nrouters; h++) {
        kb_router *router = s->nhosts > 0 ? host_router(t, cap, s->hosts[h])
                                          : t->fallback;
        if (router == NULL)
            return KB_ENOMEM;
        for (size_t i = 0; i < s->nroutes; i++) {
            gw_route *r = &s->routes[i];
            const gw_route *other;
            int rc = kb_router_add(router, r->method, r->template, r, NULL);

            if (rc == 0)
                continue;
            if (rc != KB_EEXIST)
                return rc == KB_EINVAL ? KB_ENOMEM : rc; /* compiled: valid */
            other = collided_with(router, r);
            /* report from the point of view of the spec being set */
            if (other != NULL && other->spec == subject) {
                const gw_route *tmp = r;
                r = (gw_route *)other;
                other = tmp;
            }
            if (err != NULL && errlen > 0) {
                const char *where = s->nhosts > 0 ? s->hosts[h] : NULL;
                snprintf(err, errlen,
                         "%s: %s conflicts with gateway %s, which serves the "
                         "same method and path %s%s%s",
                         r->pointer, r->label,
                         other != NULL ? other->spec->id : "(another)",
                         where != NULL ? "for host \"" : "for every host "
                                                         "(neither names "
                                                         "hosts)",
                         where != NULL ? where : "",
                         where != NULL ? "\"" : "");
            }
            return KB_EEXIST;
        }
    }
    return 0;
}

int
gw__table_build(gw_spec *const *specs, size_t nspecs, const gw_spec *subject,
                gw_table **out, char *err, size_t errlen)
{
    gw_table *t = calloc(1, sizeof(*t));
    size_t cap = 0;
    int rc = KB_ENOMEM;

    *out = NULL;
    if (t == NULL)
        return KB_ENOMEM;
    atomic_init(&t->refs, 1);
    t->fallback = kb_router_create();
    t->specs = calloc(nspecs + 1, sizeof(gw_spec *));
    if (t->fallback == NULL || t->specs == NULL)
        goto out_free_table;
    for (size_t i = 0; i < nspecs; i++) {
        t->specs[t->nspecs++] = gw__spec_ref(specs[i]);
        if ((rc = add_spec(t, &cap, specs[i], subject, err, errlen)) != 0)
            goto out_free_table;
    }
    if (t->nhosts > 1)
        qsort(t->hosts, t->nhosts, sizeof(gw_host_router), host_cmp);
    *out = t;
    return 0;

out_free_table:
    table_free(t);
    return rc;
}

const kb_router *
gw__table_router(const gw_table *t, const char *host)
{
    const kb_router *r = gw__table_host_router(t, host);

    return r != NULL ? r : t->fallback;
}

const kb_router *
gw__table_host_router(const gw_table *t, const char *host)
{
    char h[256];
    size_t n;

    if (host == NULL || t->nhosts == 0)
        return NULL;
    if (host[0] == '[') {                    /* "[::1]:8080" */
        const char *close = strchr(host, ']');
        n = close != NULL ? (size_t)(close - host + 1) : strlen(host);
    } else {
        n = strcspn(host, ":");
    }
    if (n > 0 && host[n - 1] == '.')         /* "example.com." */
        n--;
    if (n == 0 || n >= sizeof(h))
        return NULL;
    for (size_t i = 0; i < n; i++)
        h[i] = (char)tolower((unsigned char)host[i]);
    h[n] = '\0';
    {
        size_t lo = 0, hi = t->nhosts;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = strcmp(t->hosts[mid].host, h);
            if (c == 0)
                return t->hosts[mid].router;
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    return NULL;
}
