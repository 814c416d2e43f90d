/*
 * router.h - path-template router shared by the gateway and the admin API.
 *
 * Templates follow OpenAPI path templating: literal segments and
 * `{name}` segments that match one non-empty segment ("/users/{id}").  A
 * segment may also carry a literal suffix after a parameter, as Google APIs
 * use for custom methods: "/v1/projects/{p}/topics/{t}:publish".  A final
 * `{name=**}` matches the rest of the path (several segments).
 *
 * Matching prefers literal segments over parameters, segment by segment, so
 * "/users/me" wins over "/users/{id}".  A path that matches a template but
 * not its method gives 405 and the allowed methods.  The router is built
 * once and then read-only: safe to share between threads.
 */
#ifndef KB_HTTP_ROUTER_H
#define KB_HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#define KB_ROUTER_MAX_PARAMS 16

typedef struct kb_router kb_router;

typedef struct kb_route_param {
    const char *name;          /* points into the router */
    const char *value;         /* points into the matched path (not NUL- */
    size_t      value_len;     /* terminated), not percent-decoded */
} kb_route_param;

typedef struct kb_route_match {
    void          *target;     /* what kb_router_add() was given */
    const char    *pattern;    /* the template that matched */
    kb_route_param params[KB_ROUTER_MAX_PARAMS];
    size_t         nparams;
    char           allow[128]; /* for 405: "GET, POST" */
} kb_route_match;

kb_router *kb_router_create(void);
/*
 * Add a route.  method is an HTTP method ("GET") or "*" for any.  Returns
 * 0, KB_EINVAL for a malformed template (message in *err if err is not
 * NULL, a static string), KB_EEXIST for a duplicate method+template (also
 * for templates that differ only in parameter names), KB_ENOMEM.
 */
int  kb_router_add(kb_router *r, const char *method, const char *pattern,
                   void *target, const char **err);
/*
 * Match a path (without query).  Returns 200 and fills *m on a match, 404
 * when no template matches the path, 405 when one does but not for this
 * method (m->allow filled).  HEAD falls back to GET routes.
 */
int  kb_router_match(const kb_router *r, const char *method, const char *path,
                     size_t path_len, kb_route_match *m);
/* Value of the named parameter in a match, or NULL (len in *len). */
const char *kb_route_param_get(const kb_route_match *m, const char *name,
                               size_t *len);
void kb_router_free(kb_router *r);

#endif
