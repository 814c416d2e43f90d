/*
 * test_http_parser.c - the strict HTTP/1.1 parser (src/http/parser.c):
 * request forms, every smuggling shape with the status it must get, limits,
 * pipelining, incremental parsing and the chunked decoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "http/parser.h"

static kb_http_field fields[128];

static int
preq_n(kb_http_head *h, const char *s, size_t n, const kb_http_limits *lim)
{
    kb_http_head_init(h, fields, 128);
    return kb_http_parse_request(h, s, n, lim);
}

static int
preq(kb_http_head *h, const char *s)
{
    return preq_n(h, s, strlen(s), NULL);
}

/* Parse a complete request that must fail; return the status to answer. */
static int
status_of(const char *s)
{
    kb_http_head h;
    int rc = preq(&h, s);

    if (rc > 0)
        return 200;
    if (rc == KB_EAGAIN)
        return 0;
    assert_true(rc == KB_EPARSE || rc == KB_ETOOBIG);
    assert_non_null(h.error);
    return h.error_status;
}

static int
span_is(const char *buf, kb_http_span s, const char *want)
{
    return s.len == strlen(want) && memcmp(buf + s.off, want, s.len) == 0;
}

static const char *
hdr(const kb_http_head *h, const char *buf, const char *name)
{
    static char out[256];
    for (size_t i = 0; i < h->nfields; i++) {
        if (kb_http_span_eq(buf, h->fields[i].name, name)) {
            snprintf(out, sizeof(out), "%.*s", (int)h->fields[i].value.len,
                     buf + h->fields[i].value.off);
            return out;
        }
    }
    return NULL;
}

/* ---- valid requests ---------------------------------------------------- */

static void
test_origin_form(void **state)
{
    const char *r = "GET /v1/items?x=1&y=%20 HTTP/1.1\r\n"
                    "Host: example.com:8080\r\n"
                    "X-Pad:   spaced value \t \r\n"
                    "Empty:\r\n"
                    "\r\n";
    kb_http_head h;
    int rc = preq(&h, r);

    assert_int_equal(rc, (int)strlen(r));
    assert_int_equal(h.head_len, strlen(r));
    assert_true(span_is(r, h.method, "GET"));
    assert_true(span_is(r, h.target, "/v1/items?x=1&y=%20"));
    assert_true(span_is(r, h.path, "/v1/items"));
    assert_true(span_is(r, h.query, "x=1&y=%20"));
    assert_int_equal(h.form, KB_HTTP_ORIGIN_FORM);
    assert_int_equal(h.version_minor, 1);
    assert_int_equal(h.nfields, 3);
    assert_string_equal(hdr(&h, r, "host"), "example.com:8080");
    assert_string_equal(hdr(&h, r, "x-pad"), "spaced value");
    assert_string_equal(hdr(&h, r, "EMPTY"), "");
    assert_true(h.flags & KB_HTTP_KEEP_ALIVE);
    assert_false(h.flags & (KB_HTTP_CHUNKED | KB_HTTP_HAS_LENGTH));
}

static void
test_absolute_and_asterisk_form(void **state)
{
    const char *a = "GET http://api.example.com:80/p/q?z HTTP/1.1\r\n"
                    "Host: api.example.com\r\n\r\n";
    const char *b = "GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n";
    const char *c = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
    kb_http_head h;

    assert_true(preq(&h, a) > 0);
    assert_int_equal(h.form, KB_HTTP_ABSOLUTE_FORM);
    assert_true(span_is(a, h.authority, "api.example.com:80"));
    assert_true(span_is(a, h.path, "/p/q"));
    assert_true(span_is(a, h.query, "z"));

    assert_true(preq(&h, b) > 0);
    assert_true(span_is(b, h.authority, "h"));
    assert_int_equal(h.path.len, 0);

    assert_true(preq(&h, c) > 0);
    assert_int_equal(h.form, KB_HTTP_ASTERISK_FORM);
    assert_true(span_is(c, h.target, "*"));

    assert_int_equal(status_of("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
}

static void
test_leading_empty_lines_ignored(void **state)
{
    const char *r = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    kb_http_head h;

    assert_int_equal(preq(&h, r), (int)strlen(r));
    assert_true(span_is(r, h.method, "GET"));
}

static void
test_connection_semantics(void **state)
{
    kb_http_head h;

    assert_true(preq(&h, "GET / HTTP/1.0\r\n\r\n") > 0);
    assert_int_equal(h.version_minor, 0);
    assert_false(h.flags & KB_HTTP_KEEP_ALIVE);

    assert_true(preq(&h, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") > 0);
    assert_true(h.flags & KB_HTTP_KEEP_ALIVE);

    assert_true(preq(&h, "GET / HTTP/1.1\r\nHost: h\r\n"
                         "Connection: foo ,  CLOSE\r\n\r\n") > 0);
    assert_false(h.flags & KB_HTTP_KEEP_ALIVE);
    assert_true(h.flags & KB_HTTP_CONN_CLOSE);

    assert_true(preq(&h, "GET / HTTP/1.1\r\nHost: h\r\nConnection: te\r\n"
                         "Connection: Upgrade\r\n\r\n") > 0);
    assert_true(h.flags & KB_HTTP_KEEP_ALIVE);
    assert_true(h.flags & KB_HTTP_CONN_UPGRADE);

    assert_true(preq(&h, "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                         "Expect: 100-Continue\r\n\r\n") > 0);
    assert_true(h.flags & KB_HTTP_EXPECT_CONTINUE);
    assert_true(h.flags & KB_HTTP_HAS_LENGTH);
    assert_int_equal(h.content_length, 3);

    assert_true(preq(&h, "PUT / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n") > 0);
    assert_true(h.flags & KB_HTTP_EXPECT_OTHER);

    /* An HTTP/1.0 server must ignore 100-continue. */
    assert_true(preq(&h, "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n") > 0);
    assert_false(h.flags & KB_HTTP_EXPECT_CONTINUE);
}

static void
test_chunked_request_framing(void **state)
{
    kb_http_head h;

    assert_true(preq(&h, "POST / HTTP/1.1\r\nHost: h\r\n"
                         "Transfer-Encoding: Chunked\r\n\r\n") > 0);
    assert_true(h.flags & KB_HTTP_CHUNKED);
    assert_false(h.flags & KB_HTTP_HAS_LENGTH);
}

/* ---- request line errors ---------------------------------------------- */

static void
test_bad_request_lines(void **state)
{
    assert_int_equal(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    assert_int_equal(status_of("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
    assert_int_equal(status_of("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), 505);
    assert_int_equal(status_of("GET / http/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/11\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /a%2f%2F HTTP/1.1\r\nHost: h\r\n\r\n"), 200);
    /* bare CR inside the request line, bare LF as its terminator */
    assert_int_equal(status_of("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\nHost: h\r\n\r\n"), 400);
    {
        const char r[] = "GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n";
        kb_http_head h;
        assert_int_equal(preq_n(&h, r, sizeof(r) - 1, NULL), KB_EPARSE);
        assert_int_equal(h.error_status, 400);
    }
}

/* ---- header errors ----------------------------------------------------- */

static void
test_bad_headers(void **state)
{
    /* whitespace between name and colon */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length\t: 0\r\n\r\n"), 400);
    /* obs-fold, including right after the request line */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\n\tHost: h\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), 400);
    /* bare CR, bare LF */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\n\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: y\r\r\n\r\n"), 400);
    /* names */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), 400);
    /* control characters and NUL in values */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n"), 400);
    {
        const char r[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
        const char r2[] = "GET / HTTP/1.1\r\nHost: h\r\nX\0: ab\r\n\r\n";
        kb_http_head h;
        assert_int_equal(preq_n(&h, r, sizeof(r) - 1, NULL), KB_EPARSE);
        assert_int_equal(h.error_status, 400);
        assert_int_equal(preq_n(&h, r2, sizeof(r2) - 1, NULL), KB_EPARSE);
        assert_int_equal(h.error_status, 400);
    }
    /* obs-text in a value is allowed */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n"), 200);
}

static void
test_host_rules(void **state)
{
    assert_int_equal(status_of("GET / HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nX: y\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), 200);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 200);
    assert_int_equal(status_of("GET / HTTP/1.0\r\n\r\n"), 200);
}

/* ---- message framing (request smuggling) ------------------------------- */

static void
test_content_length_rules(void **state)
{
    kb_http_head h;

    assert_true(preq(&h, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n") > 0);
    assert_int_equal(h.content_length, 7);
    assert_true(preq(&h, "POST / HTTP/1.1\r\nHost: h\r\n"
                         "Content-Length: 18446744073709551615\r\n\r\n") > 0);
    assert_true(h.content_length == UINT64_MAX);

    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 5\r\nContent-Length: 5\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 5\r\ncontent-length: 6\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 5, 5\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 5\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5a\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 18446744073709551616\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 99999999999999999999999\r\n\r\n"), 400);
}

static void
test_transfer_encoding_rules(void **state)
{
    /* CL and TE together, in either order */
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), 400);
    /* codings we do not decode */
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: gzip\r\n\r\n"), 501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: identity\r\n\r\n"), 501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked;x=1\r\n\r\n"), 501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: xchunked\r\n\r\n"), 501);
    /* chunked not final, repeated, or split over lines */
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked, gzip\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "Transfer-Encoding: gzip\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked, chunked\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding: chunked,\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding:\r\n\r\n"), 400);
    /* TE on HTTP/1.0 */
    assert_int_equal(status_of("POST / HTTP/1.0\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"), 400);
    /* a space before the colon is not a different header */
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\n"
                               "Transfer-Encoding : chunked\r\n\r\n"), 400);
}

/* ---- limits ------------------------------------------------------------ */

static void
test_limits(void **state)
{
    kb_http_limits lim = { .max_head = 256, .max_headers = 3, .max_line = 64 };
    char buf[1024];
    kb_http_head h;
    int n;

    /* request line over max_line: 414, whether complete or not */
    n = snprintf(buf, sizeof(buf), "GET /%0100d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    assert_int_equal(preq_n(&h, buf, (size_t)n, &lim), KB_ETOOBIG);
    assert_int_equal(h.error_status, 414);
    assert_int_equal(preq_n(&h, buf, 70, &lim), KB_ETOOBIG);
    assert_int_equal(h.error_status, 414);
    /* exactly max_line (with CRLF) is fine */
    n = snprintf(buf, sizeof(buf), "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n",
                 64 - 16, 0);
    assert_true(preq_n(&h, buf, (size_t)n, &lim) > 0);

    /* too many fields: 431 */
    n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n"
                 "C: 3\r\n\r\n");
    assert_int_equal(preq_n(&h, buf, (size_t)n, &lim), KB_ETOOBIG);
    assert_int_equal(h.error_status, 431);

    /* head over max_head: 431, even before the head is complete */
    n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\nX: %0250d\r\n\r\n", 0);
    assert_int_equal(preq_n(&h, buf, (size_t)n, &lim), KB_ETOOBIG);
    assert_int_equal(h.error_status, 431);
    assert_int_equal(preq_n(&h, buf, 260, &lim), KB_ETOOBIG);
    assert_int_equal(h.error_status, 431);

    /* default limits: 100 fields pass, 101 do not */
    {
        static char big[8192];
        size_t off = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\n");
        for (int i = 0; i < 99; i++)
            off += (size_t)snprintf(big + off, sizeof(big) - off, "X%d: v\r\n", i);
        off += (size_t)snprintf(big + off, sizeof(big) - off, "Host: h\r\n\r\n");
        assert_true(preq_n(&h, big, off, NULL) > 0);
        assert_int_equal(h.nfields, 100);
        memcpy(big + off - 2, "Y: z\r\n\r\n", 8);
        assert_int_equal(preq_n(&h, big, off + 6, NULL), KB_ETOOBIG);
        assert_int_equal(h.error_status, 431);
    }
}

/* ---- pipelining and incremental parsing --------------------------------- */

static void
test_pipelined(void **state)
{
    const char *buf = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
                      "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t len = strlen(buf), off = 0;
    const char *paths[] = { "/a", "/b", "/c" };
    kb_http_head h;

    for (int i = 0; i < 3; i++) {
        int rc = preq_n(&h, buf + off, len - off, NULL);
        assert_true(rc > 0);
        assert_true(span_is(buf + off, h.path, paths[i]));
        off += (size_t)rc;
        if (h.flags & KB_HTTP_HAS_LENGTH)
            off += h.content_length;
    }
    assert_int_equal(off, len);
}

static void
same_head(const kb_http_head *a, const kb_http_head *b)
{
    assert_int_equal(a->head_len, b->head_len);
    assert_memory_equal(&a->method, &b->method, sizeof(a->method));
    assert_memory_equal(&a->target, &b->target, sizeof(a->target));
    assert_memory_equal(&a->path, &b->path, sizeof(a->path));
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->nfields, b->nfields);
    assert_int_equal(a->error_status, b->error_status);
}

static void
test_every_split_point(void **state)
{
    const char *reqs[] = {
        ("\r\nPOST http://h/x?y HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
         "Connection: close\r\nX:  v  \r\n\r\n"),
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
        "GET / HTTP/3.0\r\n\r\n",
    };
    static kb_http_field f1[128], f2[128];

    for (size_t r = 0; r < sizeof(reqs) / sizeof(reqs[0]); r++) {
        const char *s = reqs[r];
        size_t len = strlen(s);
        kb_http_head whole, part;
        int rc_whole;

        kb_http_head_init(&whole, f1, 128);
        rc_whole = kb_http_parse_request(&whole, s, len, NULL);
        assert_int_not_equal(rc_whole, KB_EAGAIN);
        for (size_t k = 0; k <= len; k++) {
            int rc;
            kb_http_head_init(&part, f2, 128);
            rc = kb_http_parse_request(&part, s, k, NULL);
            if (rc == KB_EAGAIN)
                rc = kb_http_parse_request(&part, s, len, NULL);
            assert_int_equal(rc, rc_whole);
            same_head(&whole, &part);
            if (rc > 0)
                assert_memory_equal(f1, f2, whole.nfields * sizeof(f1[0]));
        }
        /* byte by byte */
        kb_http_head_init(&part, f2, 128);
        {
            int rc = KB_EAGAIN;
            for (size_t k = 1; k <= len && rc == KB_EAGAIN; k++)
                rc = kb_http_parse_request(&part, s, k, NULL);
            assert_int_equal(rc, rc_whole);
            same_head(&whole, &part);
        }
    }
}

/* ---- responses --------------------------------------------------------- */

static void
test_responses(void **state)
{
    kb_http_head h;
    const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";

    kb_http_head_init(&h, fields, 128);
    assert_int_equal(kb_http_parse_response(&h, r, strlen(r), NULL),
                     (int)strlen(r) - 3);
    assert_int_equal(h.status, 404);
    assert_true(span_is(r, h.reason, "Not Found"));
    assert_int_equal(h.content_length, 3);
    assert_true(h.flags & KB_HTTP_KEEP_ALIVE);

    kb_http_head_init(&h, fields, 128);
    assert_true(kb_http_parse_response(&h, "HTTP/1.0 200\r\n\r\n", 16, NULL) > 0);
    assert_int_equal(h.status, 200);
    assert_false(h.flags & KB_HTTP_KEEP_ALIVE);

    kb_http_head_init(&h, fields, 128);
    r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_true(kb_http_parse_response(&h, r, strlen(r), NULL) > 0);
    assert_true(h.flags & KB_HTTP_CHUNKED);

    kb_http_head_init(&h, fields, 128);
    r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
    assert_int_equal(kb_http_parse_response(&h, r, strlen(r), NULL), KB_EPARSE);
    kb_http_head_init(&h, fields, 128);
    r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_int_equal(kb_http_parse_response(&h, r, strlen(r), NULL), KB_EPARSE);
    kb_http_head_init(&h, fields, 128);
    r = "HTTP/2 200 OK\r\n\r\n";
    assert_int_equal(kb_http_parse_response(&h, r, strlen(r), NULL), KB_EPARSE);
    kb_http_head_init(&h, fields, 128);
    r = "HTTP/1.1 20 OK\r\n\r\n";
    assert_int_equal(kb_http_parse_response(&h, r, strlen(r), NULL), KB_EPARSE);
    kb_http_head_init(&h, fields, 128);
    r = "HTTP/1.1 200 OK\nX: y\r\n\r\n";
    assert_int_equal(kb_http_parse_response(&h, r, strlen(r), NULL), KB_EPARSE);
}

/* ---- chunked decoder ---------------------------------------------------- */

/* Decode a whole body in place; return rc, body in out/outlen, used. */
static int
dechunk(const char *s, size_t len, uint64_t max, char *out, size_t *outlen,
        size_t *used, int *status)
{
    kb_http_chunked d;
    char *tmp = malloc(len + 1);
    int rc;

    memcpy(tmp, s, len);
    kb_http_chunked_init(&d, max);
    rc = kb_http_chunked_decode(&d, tmp, len, used, tmp, outlen);
    memcpy(out, tmp, *outlen);
    out[*outlen] = '\0';
    *status = d.error_status;
    free(tmp);
    return rc;
}

static int
chunk_status(const char *s)
{
    char out[256];
    size_t olen, used;
    int st, rc = dechunk(s, strlen(s), 100, out, &olen, &used, &st);

    if (rc == 0)
        return 200;
    if (rc == KB_EAGAIN)
        return 0;
    return st;
}

static void
test_chunked_valid(void **state)
{
    const char *s = "5\r\nhello\r\n6;name=val;q=\"a b\"\r\n world\r\n"
                    "A\r\n0123456789\r\n0\r\nX-Trailer: t\r\nY: \r\n\r\nNEXT";
    char out[256];
    size_t olen, used;
    int st;

    assert_int_equal(dechunk(s, strlen(s), 0, out, &olen, &used, &st), 0);
    assert_string_equal(out, "hello world0123456789");
    assert_int_equal(used, strlen(s) - 4);

    assert_int_equal(chunk_status("0\r\n\r\n"), 200);
    assert_int_equal(chunk_status("000\r\n\r\n"), 200);
    assert_int_equal(chunk_status("1 ;ext\r\na\r\n0\r\n\r\n"), 200);
    assert_int_equal(chunk_status("f\r\n0123456789abcde\r\n0\r\n\r\n"), 200);
    assert_int_equal(chunk_status("F\r\n0123456789abcde\r\n0\r\n\r\n"), 200);
    assert_int_equal(chunk_status("5\r\nhello\r\n"), 0);
}

static void
test_chunked_invalid(void **state)
{
    assert_int_equal(chunk_status("-5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("+5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("0x5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status(" 5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("5 \r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("g\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("\r\nhello\r\n0\r\n\r\n"), 400);
    /* bare LF / bare CR */
    assert_int_equal(chunk_status("5\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("5\r\nhello\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("5\r\nhello\r0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("5\r\nhello\r\n0\r\n\n"), 400);
    assert_int_equal(chunk_status("5;a\nb\r\nhello\r\n0\r\n\r\n"), 400);
    /* chunk data longer / shorter than its size */
    assert_int_equal(chunk_status("5\r\nhello!\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("5\r\nhell\r\n0\r\n\r\n"), 400);
    /* control char in extension, trailer obs-fold, bad trailer name */
    assert_int_equal(chunk_status("5;\x01\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(chunk_status("0\r\nA: b\r\n c\r\n\r\n"), 400);
    assert_int_equal(chunk_status("0\r\nA b: c\r\n\r\n"), 400);
    assert_int_equal(chunk_status("0\r\nA: b\nC: d\r\n\r\n"), 400);
    /* sizes: over the body limit (100 here), overflow */
    assert_int_equal(chunk_status("65\r\n"), 413);
    assert_int_equal(chunk_status("64\r\n"), 0);
    assert_int_equal(chunk_status("ffffffffffffffffffffffff\r\n"), 413);
    assert_int_equal(chunk_status("32\r\n"
                                  "01234567890123456789012345678901234567890123456789\r\n"
                                  "33\r\n"), 413);
    {
        char out[64];
        size_t olen, used;
        int st;
        const char *s = "ffffffffffffffffffff\r\n";
        assert_int_equal(dechunk(s, strlen(s), 0, out, &olen, &used, &st),
                         KB_ETOOBIG);
        assert_int_equal(st, 413);
    }
    /* size line and extension bounded */
    {
        static char big[KB_HTTP_CHUNK_LINE_MAX + 64];
        memset(big, '0', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(chunk_status(big), 400);
        memset(big, 'x', sizeof(big) - 1);
        big[0] = '1';
        big[1] = ';';
        assert_int_equal(chunk_status(big), 400);
    }
}

static void
test_chunked_incremental(void **state)
{
    const char *s = "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nrest";
    size_t len = strlen(s), msg = len - 4;

    /* byte by byte, into a separate buffer */
    {
        kb_http_chunked d;
        char out[64];
        size_t o = 0, used = 0, n;
        int rc = KB_EAGAIN;
        kb_http_chunked_init(&d, 0);
        size_t i;
        for (i = 0; i < len && rc == KB_EAGAIN; i++) {
            rc = kb_http_chunked_decode(&d, s + i, 1, &used, out + o, &n);
            o += n;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(i, msg);
        assert_int_equal(used, 1);
        assert_true(kb_http_chunked_done(&d));
        assert_int_equal(o, 11);
        assert_memory_equal(out, "hello world", 11);
    }
    /* every two-piece split, in place */
    for (size_t k = 0; k <= len; k++) {
        kb_http_chunked d;
        char buf[64];
        size_t used1, used2, n1, n2 = 0;
        int rc;
        memcpy(buf, s, len);
        kb_http_chunked_init(&d, 0);
        rc = kb_http_chunked_decode(&d, buf, k, &used1, buf, &n1);
        if (rc == KB_EAGAIN) {
            assert_int_equal(used1, k);
            rc = kb_http_chunked_decode(&d, buf + k, len - k, &used2, buf + n1, &n2);
            assert_int_equal(rc, 0);
            assert_int_equal(k + used2, msg);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(used1, msg);
        }
        assert_int_equal(n1 + n2, 11);
        assert_memory_equal(buf, "hello world", 11);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origin_form),
        cmocka_unit_test(test_absolute_and_asterisk_form),
        cmocka_unit_test(test_leading_empty_lines_ignored),
        cmocka_unit_test(test_connection_semantics),
        cmocka_unit_test(test_chunked_request_framing),
        cmocka_unit_test(test_bad_request_lines),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_host_rules),
        cmocka_unit_test(test_content_length_rules),
        cmocka_unit_test(test_transfer_encoding_rules),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_chunked_valid),
        cmocka_unit_test(test_chunked_invalid),
        cmocka_unit_test(test_chunked_incremental),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
