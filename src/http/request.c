/*
 * request.c - the stateless parts of the server API (see server.h): status
 * names and reason phrases, header and query-parameter lookup.  Kept apart
 * from server.c, which is the connection machinery.
 */
#include "http/server.h"

#include <string.h>
#include <strings.h>

/* ---- status tables ------------------------------------------------------ */

static const struct status_entry {
    int         code;
    const char *reason;
    const char *name;       /* Google API status */
} status_table[] = {
    { 100, "Continue", "OK" },
    { 101, "Switching Protocols", "OK" },
    { 200, "OK", "OK" },
    { 201, "Created", "OK" },
    { 202, "Accepted", "OK" },
    { 204, "No Content", "OK" },
    { 206, "Partial Content", "OK" },
    { 301, "Moved Permanently", "OK" },
    { 302, "Found", "OK" },
    { 303, "See Other", "OK" },
    { 304, "Not Modified", "OK" },
    { 307, "Temporary Redirect", "OK" },
    { 308, "Permanent Redirect", "OK" },
    { 400, "Bad Request", "INVALID_ARGUMENT" },
    { 401, "Unauthorized", "UNAUTHENTICATED" },
    { 403, "Forbidden", "PERMISSION_DENIED" },
    { 404, "Not Found", "NOT_FOUND" },
    { 405, "Method Not Allowed", "UNIMPLEMENTED" },
    { 406, "Not Acceptable", "INVALID_ARGUMENT" },
    { 408, "Request Timeout", "DEADLINE_EXCEEDED" },
    { 409, "Conflict", "ALREADY_EXISTS" },
    { 410, "Gone", "NOT_FOUND" },
    { 411, "Length Required", "INVALID_ARGUMENT" },
    { 412, "Precondition Failed", "FAILED_PRECONDITION" },
    { 413, "Content Too Large", "INVALID_ARGUMENT" },
    { 414, "URI Too Long", "INVALID_ARGUMENT" },
    { 415, "Unsupported Media Type", "INVALID_ARGUMENT" },
    { 416, "Range Not Satisfiable", "OUT_OF_RANGE" },
    { 417, "Expectation Failed", "FAILED_PRECONDITION" },
    { 422, "Unprocessable Content", "INVALID_ARGUMENT" },
    { 429, "Too Many Requests", "RESOURCE_EXHAUSTED" },
    { 431, "Request Header Fields Too Large", "INVALID_ARGUMENT" },
    { 499, "Client Closed Request", "CANCELLED" },
    { 500, "Internal Server Error", "INTERNAL" },
    { 501, "Not Implemented", "UNIMPLEMENTED" },
    { 502, "Bad Gateway", "UNAVAILABLE" },
    { 503, "Service Unavailable", "UNAVAILABLE" },
    { 504, "Gateway Timeout", "DEADLINE_EXCEEDED" },
    { 505, "HTTP Version Not Supported", "UNIMPLEMENTED" },
};

static const struct status_entry *
status_find(int status)
{
    for (size_t i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++)
        if (status_table[i].code == status)
            return &status_table[i];
    return NULL;
}

const char *
kb_http_status_name(int status)
{
    const struct status_entry *e = status_find(status);

    if (e != NULL)
        return e->name;
    if (status >= 200 && status < 400)
        return "OK";
    if (status >= 400 && status < 500)
        return "FAILED_PRECONDITION";
    return "UNKNOWN";
}

const char *
kb_http_reason(int status)
{
    const struct status_entry *e = status_find(status);

    return e != NULL ? e->reason : "";
}

/* ---- request accessors ---------------------------------------------------- */

const char *
kb_http_req_header(const kb_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

static int
hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decode (and '+' → ' ') s[0..n) into out (room for n + 1). */
static size_t
pct_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && hexdig(s[i + 1]) >= 0 &&
                   hexdig(s[i + 2]) >= 0) {
            out[o++] = (char)(hexdig(s[i + 1]) * 16 + hexdig(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return o;
}

const char *
kb_http_req_query(const kb_http_req *req, const char *name)
{
    const char *p = req->query;
    size_t nlen = strlen(name);

    while (*p != '\0') {
        const char *amp = strchr(p, '&');
        const char *end = amp != NULL ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq != NULL ? eq : end;
        size_t klen = (size_t)(kend - p);
        char kbuf[256];

        if (klen < sizeof(kbuf) && klen >= nlen) {
            if (pct_decode(p, klen, kbuf) == nlen &&
                memcmp(kbuf, name, nlen) == 0) {
                const char *v = eq != NULL ? eq + 1 : end;
                size_t vlen = (size_t)(end - v);
                char *out = kb_pool_alloc(req->pool, vlen + 1);
                if (out == NULL)
                    return NULL;
                pct_decode(v, vlen, out);
                return out;
            }
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    return NULL;
}
