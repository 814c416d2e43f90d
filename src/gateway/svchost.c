/*
 * svchost.c - direct service hosts: a request whose Host is
 * [TAG---]SERVICE[.PROJECT].DOMAIN (and that no gateway claims) goes to
 * that service whole, with a route built for it in the request pool.
 * proxy.c's route stage asks here before it looks at the OpenAPI routes.
 */
#include "gateway/gw_int.h"
#include "core/err.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define GW_DEFAULT_PROJECT "default"

bool
gw__label_ok(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max || !(s[0] >= 'a' && s[0] <= 'z') ||
        s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-'))
            return false;
    return true;
}

/* Copy s[0..n) into a label field (n <= GW_MAX_LABEL, checked before). */
static void
label_copy(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    dst[n] = '\0';
}

bool
gw__svc_host_parse(const char *domain, const char *host, gw_svc_host *out)
{
    char h[256];
    size_t n, dl = strlen(domain), first, rest;
    const char *sep, *dots;

    if (host == NULL || dl == 0 || host[0] == '[')
        return false;
    n = strcspn(host, ":");
    if (n > 0 && host[n - 1] == '.')         /* "hello.localhost." */
        n--;
    if (n <= dl + 1 || n >= sizeof(h))
        return false;
    for (size_t i = 0; i < n; i++)
        h[i] = (char)tolower((unsigned char)host[i]);
    h[n] = '\0';
    if (h[n - dl - 1] != '.' || memcmp(h + n - dl, domain, dl) != 0)
        return false;
    n -= dl + 1;                             /* "[tag---]svc[.project]" */
    h[n] = '\0';
    dots = memchr(h, '.', n);
    first = dots != NULL ? (size_t)(dots - h) : n;
    rest = dots != NULL ? n - first - 1 : 0;
    if (dots != NULL && (memchr(dots + 1, '.', rest) != NULL ||
                         !gw__label_ok(dots + 1, rest, GW_MAX_LABEL)))
        return false;                        /* too many labels, bad one */
    memset(out, 0, sizeof(*out));
    if (dots != NULL)
        label_copy(out->project, dots + 1, rest);
    else
        snprintf(out->project, sizeof(out->project), GW_DEFAULT_PROJECT);
    h[first] = '\0';
    if ((sep = strstr(h, "---")) != NULL) {
        size_t tn = (size_t)(sep - h), sn = first - tn - 3;
        if (!gw__label_ok(h, tn, GW_MAX_TAG) ||
            !gw__label_ok(sep + 3, sn, GW_MAX_LABEL) ||
            strstr(sep + 3, "---") != NULL)      /* ambiguous */
            return false;
        label_copy(out->tag, h, tn);
        label_copy(out->service, sep + 3, sn);
        return true;
    }
    if (!gw__label_ok(h, first, GW_MAX_LABEL))
        return false;
    label_copy(out->service, h, first);
    return true;
}

gw_route *
gw__svc_route(gw_ctx *c, const gw_svc_host *h)
{
    kb_pool *pool = c->req->pool;
    gw_spec *s = kb_pool_calloc(pool, sizeof(*s));
    gw_route *r = kb_pool_calloc(pool, sizeof(*r));
    gw_backend *b = kb_pool_calloc(pool, sizeof(*b));
    size_t ln = strlen(h->service) + strlen(h->tag) + 10;
    char *label = kb_pool_alloc(pool, ln);

    if (s == NULL || r == NULL || b == NULL || label == NULL)
        return NULL;
    snprintf(label, ln, "service:%s%s%s", h->service,
             h->tag[0] != '\0' ? "@" : "", h->tag);
    s->project = kb_pool_strdup(pool, h->project);
    s->id = s->project;
    b->service = kb_pool_strdup(pool, h->service);
    b->tag = h->tag[0] != '\0' ? kb_pool_strdup(pool, h->tag) : NULL;
    b->path = (char *)"";
    b->pt = GW_PT_APPEND;
    b->deadline_ms = (uint64_t)(GW_SERVICE_HOST_DEADLINE_S * 1000);
    if (s->project == NULL || b->service == NULL ||
        (h->tag[0] != '\0' && b->tag == NULL))
        return NULL;
    r->method = c->req->method;
    r->template = label;
    r->label = label;
    r->pointer = (char *)"";
    r->backend = b;
    r->spec = s;
    return r;
}

int
kb_gateway_set_domain(kb_gateway *gw, const char *domain, int port)
{
    char d[GW_MAX_DOMAIN + 1];
    size_t n = domain != NULL ? strlen(domain) : 0, start = 0;

    if (n > 0 && domain[n - 1] == '.')
        n--;
    if (n > GW_MAX_DOMAIN)
        return KB_EINVAL;
    if (n == 0) {                            /* off */
        gw->domain[0] = '\0';
        return 0;
    }
    for (size_t i = 0; i <= n; i++) {
        char ch = i < n ? (char)tolower((unsigned char)domain[i]) : '.';
        if (ch == '.') {
            /* labels of a host name: letters, digits, '-' inside */
            if (i == start || i - start > GW_MAX_LABEL ||
                d[start] == '-' || d[i - 1] == '-')
                return KB_EINVAL;
            start = i + 1;
        } else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                     ch == '-')) {
            return KB_EINVAL;
        }
        if (i < n)
            d[i] = ch;
    }
    d[n] = '\0';
    memcpy(gw->domain, d, n + 1);
    if (gw->rt != NULL && port > 0)
        kb_runtime_set_url_base(gw->rt, gw->domain, port);
    return 0;
}
