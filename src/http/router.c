/*
 * router.c - path-template router (router.h): a trie of path segments.
 *
 * Each trie node has literal children (sorted, binary-searched), children
 * for parameters with a literal suffix ("{t}:publish", longest suffix
 * first), one plain parameter child and one catch-all child.  Matching
 * walks the raw path depth first in that order, backtracking when a branch
 * dead-ends, and allocates nothing.  The trie is a tree, so one match
 * visits each node at most once: backtracking costs at most the size of
 * the route set, never more.  See docs/internals/gateway.md.
 */
#include "http/router.h"
#include "core/err.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RT_MAX_SEGMENTS 64       /* segments in one template */
#define RT_MAX_METHOD   32       /* bytes in a method name */

typedef struct rt_node rt_node;

/* A literal child ("users") or a suffixed-parameter child (":publish"). */
typedef struct rt_edge {
    char    *label;
    size_t   len;
    rt_node *node;
} rt_edge;

/* One method of one template, held by the template's final node. */
typedef struct rt_route {
    char   *method;              /* "GET", or "*" for any */
    void   *target;
    char   *pattern;             /* the template as given */
    char  **names;               /* parameter names in path order */
    size_t  nnames;
} rt_route;

struct rt_node {
    rt_edge  *lits;              /* sorted by label (memcmp, then length) */
    size_t    nlits;
    rt_edge  *sufs;              /* longest suffix first */
    size_t    nsufs;
    rt_node  *param;             /* "{name}" */
    rt_node  *rest;              /* "{name=**}": always a final node */
    rt_route *routes;            /* sorted by method */
    size_t    nroutes;
    bool      any;               /* a "*" route: never 405 here */
    char      allow[sizeof(((kb_route_match *)0)->allow)];
};

struct kb_router {
    rt_node root;
};

/* One parsed template segment (points into the template text). */
typedef enum { SEG_LIT, SEG_PARAM, SEG_SUFFIX, SEG_REST } seg_kind;

typedef struct tseg {
    seg_kind    kind;
    const char *lit;             /* literal text, or the suffix */
    size_t      litlen;
    const char *name;            /* parameter name */
    size_t      namelen;
} tseg;

/* ------------------------------------------------------------------------ */
/* Template parsing                                                          */

static bool
lit_char_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '?' && c != '#' && c != '{' &&
           c != '}' && c != '/';
}

static bool
name_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

static const char *
check_literal(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '}')
            return "unmatched '}'";
        if (c == '{')
            return "two parameters in one segment";
        if (!lit_char_ok(c))
            return c >= 0x80 ? "non-ASCII character in template "
                               "(percent-encode it)"
                             : "invalid character in template";
    }
    return NULL;
}

static bool
is_dot_segment(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

/* Parse one segment [s, s+n) into *seg; NULL or a static error. */
static const char *
parse_segment(const char *s, size_t n, tseg *seg)
{
    const char *open = memchr(s, '{', n);
    const char *close, *eq, *suffix;
    size_t inner;

    memset(seg, 0, sizeof(*seg));
    if (open == NULL) {
        const char *e = check_literal(s, n);
        if (e != NULL)
            return e;
        seg->kind = SEG_LIT;
        seg->lit = s;
        seg->litlen = n;
        return NULL;
    }
    if (open != s)
        return memchr(s, '}', (size_t)(open - s)) != NULL
                   ? "unmatched '}'"
                   : "text before '{' in a segment is not supported";
    close = memchr(s, '}', n);
    if (close == NULL)
        return "unclosed '{'";
    if (memchr(s + 1, '{', (size_t)(close - s - 1)) != NULL)
        return "'{' inside a parameter";
    inner = (size_t)(close - s - 1);
    eq = memchr(s + 1, '=', inner);
    seg->name = s + 1;
    seg->namelen = eq != NULL ? (size_t)(eq - s - 1) : inner;
    if (seg->namelen == 0)
        return "empty parameter name";
    for (size_t i = 0; i < seg->namelen; i++)
        if (!name_char_ok((unsigned char)seg->name[i]))
            return "invalid character in parameter name "
                   "(use letters, digits, '_', '.', '-')";
    seg->kind = SEG_PARAM;
    if (eq != NULL) {
        size_t plen = (size_t)(close - eq - 1);
        if (plen == 2 && eq[1] == '*' && eq[2] == '*')
            seg->kind = SEG_REST;
        else if (!(plen == 1 && eq[1] == '*'))
            return "unsupported parameter pattern "
                   "(only {name}, {name=*} and {name=**})";
    }
    suffix = close + 1;
    seg->litlen = (size_t)(s + n - suffix);
    if (seg->litlen > 0) {
        const char *e;
        if (seg->kind == SEG_REST)
            return "nothing may follow '{name=**}'";
        if ((e = check_literal(suffix, seg->litlen)) != NULL)
            return e;
        seg->kind = SEG_SUFFIX;
        seg->lit = suffix;
    }
    return NULL;
}

/* Split a template into segments.  NULL or a static error message. */
static const char *
parse_template(const char *pattern, tseg *segs, size_t *nsegs)
{
    const char *p, *end;
    size_t n = 0, nparams = 0;

    if (pattern == NULL || pattern[0] != '/')
        return "template must start with '/'";
    end = pattern + strlen(pattern);
    p = pattern + 1;
    if (p == end) {              /* "/" */
        *nsegs = 0;
        return NULL;
    }
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *e = slash != NULL ? slash : end;
        const char *err;

        if (e == p)
            return "empty path segment ('//' or a trailing '/')";
        if (is_dot_segment(p, (size_t)(e - p)))
            return "'.' and '..' segments are not allowed";
        if (n == RT_MAX_SEGMENTS)
            return "too many path segments";
        if (n > 0 && segs[n - 1].kind == SEG_REST)
            return "'{name=**}' must be the last segment";
        if ((err = parse_segment(p, (size_t)(e - p), &segs[n])) != NULL) {
            if (strcmp(err, "unclosed '{'") == 0 && strchr(e, '}') != NULL)
                return "a parameter cannot span '/' "
                       "({name=a/*} is not supported)";
            return err;
        }
        if (segs[n].kind != SEG_LIT) {
            if (++nparams > KB_ROUTER_MAX_PARAMS)
                return "too many parameters";
            for (size_t i = 0; i < n; i++)
                if (segs[i].kind != SEG_LIT &&
                    segs[i].namelen == segs[n].namelen &&
                    memcmp(segs[i].name, segs[n].name, segs[n].namelen) == 0)
                    return "duplicate parameter name";
        }
        n++;
        p = e + 1;
    }
    *nsegs = n;
    return NULL;
}

static bool
method_ok(const char *m)
{
    size_t n = strlen(m);

    if (n == 0 || n > RT_MAX_METHOD)
        return false;
    if (n == 1 && m[0] == '*')
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m[i];
        if (!name_char_ok(c) && strchr("!#$%&'*+^`|~", c) == NULL)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Building                                                                  */

kb_router *
kb_router_create(void)
{
    return calloc(1, sizeof(kb_router));
}

static int
label_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Binary search for a literal child; returns its index or where it goes. */
static size_t
lit_find(const rt_node *n, const char *s, size_t len, bool *found)
{
    size_t lo = 0, hi = n->nlits;

    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = label_cmp(n->lits[mid].label, n->lits[mid].len, s, len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Insert an edge at index i of (*edges, *n); NULL when out of memory. */
static rt_node *
edge_insert(rt_edge **edges, size_t *n, size_t i, const char *s, size_t len)
{
    rt_edge *grown = realloc(*edges, (*n + 1) * sizeof(rt_edge));
    rt_node *child;
    char *label;

    if (grown == NULL)
        return NULL;
    *edges = grown;
    child = calloc(1, sizeof(rt_node));
    label = malloc(len + 1);
    if (child == NULL || label == NULL) {
        free(child);
        free(label);
        return NULL;
    }
    memcpy(label, s, len);
    label[len] = '\0';
    memmove(&grown[i + 1], &grown[i], (*n - i) * sizeof(rt_edge));
    grown[i] = (rt_edge){ label, len, child };
    (*n)++;
    return child;
}

/* The child for one segment, created if missing; NULL when out of memory. */
static rt_node *
child_get(rt_node *n, const tseg *seg)
{
    bool found;
    size_t i;

    switch (seg->kind) {
    case SEG_LIT:
        i = lit_find(n, seg->lit, seg->litlen, &found);
        if (found)
            return n->lits[i].node;
        return edge_insert(&n->lits, &n->nlits, i, seg->lit, seg->litlen);
    case SEG_SUFFIX:
        for (i = 0; i < n->nsufs; i++) {
            const rt_edge *e = &n->sufs[i];
            if (e->len == seg->litlen &&
                memcmp(e->label, seg->lit, e->len) == 0)
                return e->node;
            if (e->len < seg->litlen ||
                (e->len == seg->litlen &&
                 memcmp(e->label, seg->lit, e->len) > 0))
                break;
        }
        return edge_insert(&n->sufs, &n->nsufs, i, seg->lit, seg->litlen);
    case SEG_PARAM:
        if (n->param == NULL)
            n->param = calloc(1, sizeof(rt_node));
        return n->param;
    case SEG_REST:
        if (n->rest == NULL)
            n->rest = calloc(1, sizeof(rt_node));
        return n->rest;
    }
    return NULL;
}

/* Append "A, B" style tokens into dst (size cap), skipping duplicates and
 * stopping before a token that would not fit whole. */
static void
allow_add(char *dst, size_t cap, const char *tok)
{
    size_t len = strlen(dst), tlen = strlen(tok);
    const char *p = dst;

    while (*p != '\0') {             /* already listed? */
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (n == tlen && memcmp(p, tok, n) == 0)
            return;
        if (comma == NULL)
            break;
        p = comma + 2;
    }
    if (len + (len > 0 ? 2 : 0) + tlen + 1 > cap)
        return;
    if (len > 0) {
        memcpy(dst + len, ", ", 2);
        len += 2;
    }
    memcpy(dst + len, tok, tlen + 1);
}

static void
allow_compute(rt_node *n)
{
    bool get = false, head = false;

    n->allow[0] = '\0';
    n->any = false;
    for (size_t i = 0; i < n->nroutes; i++) {
        const char *m = n->routes[i].method;
        if (strcmp(m, "*") == 0)
            n->any = true;
        get |= strcmp(m, "GET") == 0;
        head |= strcmp(m, "HEAD") == 0;
    }
    for (size_t i = 0; i < n->nroutes; i++) {
        const char *m = n->routes[i].method;
        /* HEAD is implied by GET; it sorts right after it */
        if (get && !head && strcmp(m, "GET") > 0 && strcmp(m, "HEAD") > 0) {
            allow_add(n->allow, sizeof(n->allow), "HEAD");
            head = true;
        }
        if (strcmp(m, "*") != 0)
            allow_add(n->allow, sizeof(n->allow), m);
    }
    if (get && !head)
        allow_add(n->allow, sizeof(n->allow), "HEAD");
}

static void
route_free(rt_route *r)
{
    free(r->method);
    free(r->pattern);
    free(r->names);              /* names and their text: one block */
}

/* Fill *r from the parsed template; 0 or KB_ENOMEM. */
static int
route_init(rt_route *r, const char *method, const char *pattern,
           void *target, const tseg *segs, size_t nsegs)
{
    size_t nnames = 0, text = 0;
    char *p;

    for (size_t i = 0; i < nsegs; i++)
        if (segs[i].kind != SEG_LIT) {
            nnames++;
            text += segs[i].namelen + 1;
        }
    memset(r, 0, sizeof(*r));
    r->method = strdup(method);
    r->pattern = strdup(pattern);
    r->names = malloc(nnames * sizeof(char *) + text + 1);
    if (r->method == NULL || r->pattern == NULL || r->names == NULL) {
        route_free(r);
        return KB_ENOMEM;
    }
    r->target = target;
    p = (char *)(r->names + nnames);
    for (size_t i = 0; i < nsegs; i++)
        if (segs[i].kind != SEG_LIT) {
            memcpy(p, segs[i].name, segs[i].namelen);
            p[segs[i].namelen] = '\0';
            r->names[r->nnames++] = p;
            p += segs[i].namelen + 1;
        }
    return 0;
}

int
kb_router_add(kb_router *r, const char *method, const char *pattern,
              void *target, const char **err)
{
    tseg segs[RT_MAX_SEGMENTS];
    size_t nsegs = 0, at;
    const char *msg;
    rt_node *n;
    rt_route route, *grown;

    if (err != NULL)
        *err = NULL;
    if (method == NULL || !method_ok(method)) {
        if (err != NULL)
            *err = "invalid method";
        return KB_EINVAL;
    }
    if ((msg = parse_template(pattern, segs, &nsegs)) != NULL) {
        if (err != NULL)
            *err = msg;
        return KB_EINVAL;
    }
    n = &r->root;
    for (size_t i = 0; i < nsegs && n != NULL; i++)
        n = child_get(n, &segs[i]);
    if (n == NULL)
        return KB_ENOMEM;        /* empty nodes left behind are harmless */
    for (at = 0; at < n->nroutes; at++) {
        int c = strcmp(n->routes[at].method, method);
        if (c == 0) {
            if (err != NULL)
                *err = "a route for this method and path already exists";
            return KB_EEXIST;
        }
        if (c > 0)
            break;
    }
    if (route_init(&route, method, pattern, target, segs, nsegs) != 0)
        return KB_ENOMEM;
    grown = realloc(n->routes, (n->nroutes + 1) * sizeof(rt_route));
    if (grown == NULL) {
        route_free(&route);
        return KB_ENOMEM;
    }
    n->routes = grown;
    memmove(&grown[at + 1], &grown[at], (n->nroutes - at) * sizeof(rt_route));
    grown[at] = route;
    n->nroutes++;
    allow_compute(n);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Matching                                                                  */

typedef struct rt_walk {
    const char     *method;
    const char     *path;
    size_t          len;
    const char     *vals[KB_ROUTER_MAX_PARAMS];
    size_t          vlens[KB_ROUTER_MAX_PARAMS];
    size_t          nvals;
    bool            path_matched;
    kb_route_match *m;
} rt_walk;

static const rt_route *
route_for_method(const rt_node *n, const char *method)
{
    const rt_route *get = NULL, *any = NULL;

    for (size_t i = 0; i < n->nroutes; i++) {
        const rt_route *r = &n->routes[i];
        if (strcmp(r->method, method) == 0)
            return r;
        if (strcmp(r->method, "GET") == 0)
            get = r;
        else if (strcmp(r->method, "*") == 0)
            any = r;
    }
    if (get != NULL && strcmp(method, "HEAD") == 0)
        return get;
    return any;
}

/* At the end of the path: does this node answer the method? */
static bool
walk_leaf(rt_walk *w, const rt_node *n)
{
    const rt_route *r;

    if (n->nroutes == 0)
        return false;
    r = route_for_method(n, w->method);
    if (r == NULL) {
        const char *p = n->allow;
        char tok[RT_MAX_METHOD + 1];

        w->path_matched = true;
        while (*p != '\0') {     /* union of every matching template */
            size_t k = strcspn(p, ",");
            if (k <= RT_MAX_METHOD) {
                memcpy(tok, p, k);
                tok[k] = '\0';
                allow_add(w->m->allow, sizeof(w->m->allow), tok);
            }
            p += k;
            while (*p == ',' || *p == ' ')
                p++;
        }
        return false;
    }
    w->m->target = r->target;
    w->m->pattern = r->pattern;
    w->m->nparams = w->nvals;
    for (size_t i = 0; i < w->nvals; i++) {
        w->m->params[i].name = r->names[i];
        w->m->params[i].value = w->vals[i];
        w->m->params[i].value_len = w->vlens[i];
    }
    return true;
}

static bool walk(rt_walk *w, const rt_node *n, size_t pos);

static bool
walk_param(rt_walk *w, const rt_node *child, const char *v, size_t vlen,
           size_t next)
{
    bool ok;

    if (w->nvals == KB_ROUTER_MAX_PARAMS)
        return false;            /* cannot happen: templates are capped */
    w->vals[w->nvals] = v;
    w->vlens[w->nvals] = vlen;
    w->nvals++;
    ok = walk(w, child, next);
    w->nvals--;
    return ok;
}

/* pos is the index of the '/' before the next segment, or len at the end. */
static bool
walk(rt_walk *w, const rt_node *n, size_t pos)
{
    const char *seg;
    const char *slash;
    size_t seglen, next;
    bool found;
    size_t i;

    if (pos == w->len)
        return walk_leaf(w, n);
    seg = w->path + pos + 1;
    slash = memchr(seg, '/', w->len - pos - 1);
    next = slash != NULL ? (size_t)(slash - w->path) : w->len;
    seglen = next - pos - 1;

    i = lit_find(n, seg, seglen, &found);
    if (found && walk(w, n->lits[i].node, next))
        return true;
    for (i = 0; i < n->nsufs; i++) {
        const rt_edge *e = &n->sufs[i];
        if (seglen > e->len &&
            memcmp(seg + seglen - e->len, e->label, e->len) == 0 &&
            walk_param(w, e->node, seg, seglen - e->len, next))
            return true;
    }
    if (n->param != NULL && walk_param(w, n->param, seg, seglen, next))
        return true;
    if (n->rest != NULL &&
        walk_param(w, n->rest, seg, w->len - pos - 1, w->len))
        return true;
    return false;
}

/* Strict path check: leading '/', no empty or dot segments (also encoded
 * as %2e), no bytes outside printable ASCII. */
static bool
path_ok(const char *path, size_t len)
{
    size_t s;

    if (len == 0 || path[0] != '/')
        return false;
    if (len == 1)
        return true;
    s = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i < len && path[i] != '/') {
            unsigned char c = (unsigned char)path[i];
            if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
                return false;
            continue;
        }
        size_t n = i - s, dots = 0, k = s;
        if (n == 0)
            return false;
        while (k < i) {          /* count '.' and '%2e' units */
            if (path[k] == '.') {
                k++;
            } else if (i - k >= 3 && path[k] == '%' && path[k + 1] == '2' &&
                       (path[k + 2] == 'e' || path[k + 2] == 'E')) {
                k += 3;
            } else {
                break;
            }
            dots++;
        }
        if (k == i && dots <= 2)
            return false;
        s = i + 1;
    }
    return true;
}

int
kb_router_match(const kb_router *r, const char *method, const char *path,
                size_t path_len, kb_route_match *m)
{
    rt_walk w;

    m->target = NULL;
    m->pattern = NULL;
    m->nparams = 0;
    m->allow[0] = '\0';
    if (r == NULL || method == NULL || path == NULL ||
        !path_ok(path, path_len))
        return 404;
    memset(&w, 0, sizeof(w));
    w.method = method;
    w.path = path;
    w.len = path_len;
    w.m = m;
    if (walk(&w, &r->root, path_len == 1 ? 1 : 0))
        return 200;
    if (w.path_matched)
        return 405;
    return 404;
}

const char *
kb_route_param_get(const kb_route_match *m, const char *name, size_t *len)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0) {
            if (len != NULL)
                *len = m->params[i].value_len;
            return m->params[i].value;
        }
    if (len != NULL)
        *len = 0;
    return NULL;
}

static void
node_free(rt_node *n)
{
    for (size_t i = 0; i < n->nlits; i++) {
        node_free(n->lits[i].node);
        free(n->lits[i].node);
        free(n->lits[i].label);
    }
    for (size_t i = 0; i < n->nsufs; i++) {
        node_free(n->sufs[i].node);
        free(n->sufs[i].node);
        free(n->sufs[i].label);
    }
    if (n->param != NULL) {
        node_free(n->param);
        free(n->param);
    }
    if (n->rest != NULL) {
        node_free(n->rest);
        free(n->rest);
    }
    for (size_t i = 0; i < n->nroutes; i++)
        route_free(&n->routes[i]);
    free(n->lits);
    free(n->sufs);
    free(n->routes);
}

void
kb_router_free(kb_router *r)
{
    if (r == NULL)
        return;
    node_free(&r->root);
    free(r);
}
