/*
 * request.c - what handlers call (see server.h): status names and reason
 * phrases, header and query-parameter lookup, and the response functions
 * (whole, with trailers, streamed) for HTTP/1.x requests and HTTP/2
 * streams.  Kept apart from server.c, which is the connection machinery.
 */
#include "http/server.h"
#include "http/http_internal.h"
#include "http/parser.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STREAM_MAX_PENDING   (16u << 20)    /* unsent streamed bytes */

typedef kb_http__conn conn;
typedef kb_http__req  srv_req;

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
    unsigned char first = (unsigned char)(name[0] | 0x20);

    /* a cheap first-letter test before the full comparison: this runs
     * for several names on every proxied request */
    for (size_t i = 0; i < req->nheaders; i++)
        if (((unsigned char)req->headers[i].name[0] | 0x20) == first &&
            strcasecmp(req->headers[i].name, name) == 0)
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

/* ---- request hooks ------------------------------------------------------ */

void
kb_http_req_on_abort(kb_http_req *req, kb_http_abort_cb cb, void *data)
{
    srv_req *r = (srv_req *)req;

    r->abort_cb = cb;
    r->abort_data = data;
}

/* ---- responses ---------------------------------------------------------- */

/* The response to a request whose connection is gone: count it, detach
 * it, release it. */
static void
req_finish_orphan(srv_req *r)
{
    conn *c = r->conn;

    kb_http__count(r->pub.server, r->status, r->pub.start_ns);
    r->done = true;
    if (c != NULL) {
        c->req = NULL;
        r->conn = NULL;
    }
    kb_http__req_release(r);
}

void
kb_http_respond(kb_http_req *req, int status, const kb_http_header *headers,
                size_t nheaders, const char *body, size_t body_len)
{
    long long framing;
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    char *head;
    size_t hlen;
    bool keepalive, send_body;

    if (r->streaming) {
        kb_log_warn("http: respond after response_start", NULL);
        kb_http_response_end(req);
        return;
    }
    if (status < 100 || status > 999 || body_len > INT32_MAX) {
        status = 500;               /* uv_buf_t lengths are 32-bit */
        body_len = 0;
    }
    if (req->http_major == 2) {
        kb_http__h2_respond(r, status, headers, nheaders, body, body_len,
                            NULL, 0);
        return;
    }
    r->status = status;
    if (c == NULL || c->state == CONN_CLOSED) {
        req_finish_orphan(r);
        return;
    }
    keepalive = kb_http__req_keepalive(r);
    send_body = kb_http__status_has_body(status) && !r->no_body;
    framing = kb_http__status_has_body(status) ? (long long)body_len : -2;
    if (r->no_body && framing == 0)
        framing = kb_http__head_length(headers, nheaders);
    head = kb_http__build_head(r, status, headers, nheaders, framing, keepalive,
                      &hlen);
    if (head == NULL) {
        kb_http__conn_close(c);
    } else {
        uv_buf_t bufs[2] = {
            uv_buf_init(head, (unsigned)hlen),
            uv_buf_init((char *)(body ? body : ""),
                        send_body && body ? (unsigned)body_len : 0),
        };
        kb_http__conn_write(c, bufs, 2);
    }
    kb_http__response_done(c, r, keepalive);
}

/*
 * HTTP/1.1: the body as one chunk, then the trailer section (announced in
 * a Trailer header).  HTTP/1.0, HEAD and statuses without a body cannot
 * carry trailers: a plain response, trailers dropped.
 */
void
kb_http_respond_trailers(kb_http_req *req, int status,
                         const kb_http_header *headers, size_t nheaders,
                         const char *body, size_t body_len,
                         const kb_http_header *trailers, size_t ntrailers)
{
    srv_req *r = (srv_req *)req;
    kb_buf tail = KB_BUF_INIT(KB_HTTP_TRAILER_MAX + 64);
    kb_buf names = KB_BUF_INIT(KB_HTTP_TRAILER_MAX);
    kb_http_header *hs;
    conn *c = r->conn;
    char line[24];
    char *head;
    size_t hlen, nh = 0;
    bool keepalive;

    if (status < 100 || status > 999 || body_len > INT32_MAX) {
        status = 500;
        body_len = 0;
    }
    if (req->http_major == 2 && !r->streaming) {
        kb_http__h2_respond(r, status, headers, nheaders, body, body_len,
                            trailers, ntrailers);
        return;
    }
    if (r->streaming || req->version_minor < 1 || r->no_body ||
        !kb_http__status_has_body(status) || c == NULL || c->state == CONN_CLOSED) {
        kb_http_respond(req, status, headers, nheaders, body, body_len);
        return;
    }
    r->status = status;
    for (size_t i = 0; i < ntrailers; i++) {
        const kb_http_header *t = &trailers[i];
        if (!kb_http__header_ok(t) || kb_http__header_reserved(t->name) ||
            strcasecmp(t->name, "trailer") == 0)
            continue;
        if (tail.len + strlen(t->name) + strlen(t->value) + 4 >
                KB_HTTP_TRAILER_MAX ||
            (names.len > 0 && kb_buf_append(&names, ", ", 2) != 0) ||
            kb_buf_appends(&names, t->name) != 0 ||
            kb_buf_appendf(&tail, "%s: %s\r\n", t->name, t->value) != 0)
            break;                      /* over the trailer limit: cut */
    }
    hs = kb_pool_alloc(req->pool, (nheaders + 1) * sizeof(*hs));
    keepalive = kb_http__req_keepalive(r);
    head = NULL;
    if (hs != NULL && kb_buf_append(&tail, "\r\n", 2) == 0) {
        for (size_t i = 0; i < nheaders; i++)
            if (strcasecmp(headers[i].name, "trailer") != 0)
                hs[nh++] = headers[i];
        if (names.len > 0)
            hs[nh++] = (kb_http_header){ "Trailer", names.data };
        head = kb_http__build_head(r, status, hs, nh, -1, keepalive, &hlen);
    }
    if (head == NULL) {
        kb_http__conn_close(c);
    } else {
        uv_buf_t bufs[5] = {
            uv_buf_init(head, (unsigned)hlen),
            uv_buf_init(line, body_len > 0 ? (unsigned)snprintf(
                            line, sizeof(line), "%zx\r\n", body_len) : 0),
            uv_buf_init((char *)(body ? body : ""), (unsigned)body_len),
            uv_buf_init((char *)"\r\n0\r\n", 5),
            uv_buf_init(tail.data, (unsigned)tail.len),
        };
        if (body_len == 0) {
            bufs[3].base += 2;          /* just "0\r\n" */
            bufs[3].len = 3;
        }
        kb_http__conn_write(c, bufs, 5);
    }
    kb_http__response_done(c, r, keepalive);
    kb_buf_free(&tail);
    kb_buf_free(&names);
}

void
kb_http_respond_json(kb_http_req *req, int status, json_t *body)
{
    static const kb_http_header ct = { "Content-Type", "application/json" };
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY)
                              : NULL;

    json_decref(body);
    if (text == NULL) {
        kb_http_respond_error(req, 500, "cannot encode response");
        return;
    }
    kb_http_respond(req, status, &ct, 1, text, strlen(text));
    free(text);
}

void
kb_http_respond_error(kb_http_req *req, int status, const char *message)
{
    static const kb_http_header ct = { "Content-Type", "application/json" };
    json_t *j = json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status,
                          "status", kb_http_status_name(status), "message",
                          message != NULL ? message : "");
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (text == NULL) {
        static const char fallback[] =
            "{\"error\":{\"code\":500,\"status\":\"INTERNAL\","
            "\"message\":\"out of memory\"}}";
        kb_http_respond(req, 500, &ct, 1, fallback, sizeof(fallback) - 1);
        return;
    }
    kb_http_respond(req, status, &ct, 1, text, strlen(text));
    free(text);
}

int
kb_http_response_start(kb_http_req *req, int status,
                       const kb_http_header *headers, size_t nheaders)
{
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    char *head;
    size_t hlen;
    long long framing;
    uv_buf_t b;

    if (r->streaming)
        return KB_EINVAL;
    if (status < 100 || status > 999)
        status = 500;
    if (req->http_major == 2)
        return kb_http__h2_start_response(r, status, headers, nheaders);
    r->streaming = true;
    r->status = status;
    if (c == NULL || c->state == CONN_CLOSED)
        return KB_ECANCELED;
    if (!kb_http__status_has_body(status)) {
        r->no_body = true;
        framing = -2;
    } else if (r->pub.version_minor >= 1) {
        r->chunked_out = !r->no_body;
        framing = -1;
    } else {
        c->close_after = true;          /* HTTP/1.0: body ends at close */
        framing = -2;
    }
    head = kb_http__build_head(r, status, headers, nheaders, framing,
                      kb_http__req_keepalive(r), &hlen);
    if (head == NULL) {
        kb_http__conn_close(c);
        return KB_ECANCELED;
    }
    b = uv_buf_init(head, (unsigned)hlen);
    return kb_http__conn_write(c, &b, 1);
}

int
kb_http_response_write(kb_http_req *req, const char *data, size_t len)
{
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    char line[24];
    uv_buf_t bufs[3];

    if (!r->streaming || len > INT32_MAX)
        return KB_EINVAL;
    if (req->http_major == 2)
        return kb_http__h2_write(r, data, len);
    if (c == NULL || c->state == CONN_CLOSED)
        return KB_ECANCELED;
    if (len == 0 || r->no_body)
        return 0;
    if (c->wbytes + len > STREAM_MAX_PENDING) {
        /* The client does not read: treat it as gone. */
        kb_http__conn_close(c);
        return KB_ECANCELED;
    }
    if (!r->chunked_out) {
        bufs[0] = uv_buf_init((char *)data, (unsigned)len);
        return kb_http__conn_write(c, bufs, 1);
    }
    bufs[0] = uv_buf_init(line, (unsigned)snprintf(line, sizeof(line),
                                                   "%zx\r\n", len));
    bufs[1] = uv_buf_init((char *)data, (unsigned)len);
    bufs[2] = uv_buf_init((char *)"\r\n", 2);
    return kb_http__conn_write(c, bufs, 3);
}

void
kb_http_response_end(kb_http_req *req)
{
    srv_req *r = (srv_req *)req;
    conn *c = r->conn;
    bool keepalive;

    if (!r->streaming) {
        kb_http_respond(req, 500, NULL, 0, NULL, 0);
        return;
    }
    if (req->http_major == 2) {
        kb_http__h2_end(r);
        return;
    }
    if (c == NULL || c->state == CONN_CLOSED) {
        req_finish_orphan(r);
        return;
    }
    keepalive = kb_http__req_keepalive(r);
    if (r->chunked_out) {
        uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
        kb_http__conn_write(c, &b, 1);
    }
    kb_http__response_done(c, r, keepalive);
}
