/*
 * fuzz_http_request.c - libFuzzer target for the HTTP/1.1 parser.
 *
 * Feeds the input to the request head parser, the response head parser and
 * the chunked decoder, each once whole and again split into pieces, and
 * abort()s when the incremental result differs from the one-shot result:
 * the server and the client only ever see messages in pieces.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "http/parser.h"

#define NFIELDS 32

static const kb_http_limits limits = {
    .max_head = 4096, .max_headers = NFIELDS, .max_line = 1024,
};

static void
check(int cond)
{
    if (!cond)
        abort();
}

static void
same_head(const kb_http_head *a, const kb_http_head *b,
          const kb_http_field *fa, const kb_http_field *fb)
{
    check(a->head_len == b->head_len);
    check(a->error_status == b->error_status);
    check(a->flags == b->flags);
    check(a->nfields == b->nfields);
    check(a->content_length == b->content_length);
    check(a->version_minor == b->version_minor);
    check(a->status == b->status);
    check(memcmp(&a->method, &b->method, sizeof(a->method)) == 0);
    check(memcmp(&a->target, &b->target, sizeof(a->target)) == 0);
    check(memcmp(&a->path, &b->path, sizeof(a->path)) == 0);
    check(memcmp(&a->query, &b->query, sizeof(a->query)) == 0);
    if (a->head_len > 0)
        check(memcmp(fa, fb, a->nfields * sizeof(*fa)) == 0);
}

/* Whole vs. prefix-then-whole, for the request or the response parser. */
static int
head_twice(const char *buf, size_t len, size_t split, int response,
           kb_http_head *whole)
{
    static kb_http_field f1[NFIELDS], f2[NFIELDS];
    kb_http_head part;
    int rc1, rc2;

    kb_http_head_init(whole, f1, NFIELDS);
    rc1 = response ? kb_http_parse_response(whole, buf, len, &limits)
                   : kb_http_parse_request(whole, buf, len, &limits);
    check(rc1 == KB_EAGAIN || rc1 == KB_EPARSE || rc1 == KB_ETOOBIG ||
          (rc1 > 0 && (size_t)rc1 <= len && (size_t)rc1 <= limits.max_head));
    if (rc1 > 0) {
        /* every span lies inside the head */
        check(whole->method.off + whole->method.len <= (size_t)rc1);
        check(whole->target.off + whole->target.len <= (size_t)rc1);
        check(whole->path.off + whole->path.len <= (size_t)rc1);
        check(whole->query.off + whole->query.len <= (size_t)rc1);
        for (size_t i = 0; i < whole->nfields; i++) {
            check(f1[i].name.len > 0);
            check(f1[i].name.off + f1[i].name.len <= (size_t)rc1);
            check(f1[i].value.off + f1[i].value.len <= (size_t)rc1);
        }
    }

    kb_http_head_init(&part, f2, NFIELDS);
    rc2 = response ? kb_http_parse_response(&part, buf, split, &limits)
                   : kb_http_parse_request(&part, buf, split, &limits);
    if (rc2 == KB_EAGAIN)
        rc2 = response ? kb_http_parse_response(&part, buf, len, &limits)
                       : kb_http_parse_request(&part, buf, len, &limits);
    check(rc1 == rc2);
    same_head(whole, &part, f1, f2);
    return rc1;
}

/* One-shot in place vs. three pieces into a separate buffer. */
static void
chunked_twice(const char *in, size_t len, size_t s1, size_t s2)
{
    char *a = malloc(len + 1), *b = malloc(len + 1);
    kb_http_chunked d1, d2;
    size_t used1, out1, used2 = 0, out2 = 0;
    size_t cuts[3] = { s1, s2, len };
    size_t pos = 0;
    int rc1, rc2 = KB_EAGAIN;

    check(a != NULL && b != NULL);
    memcpy(a, in, len);
    kb_http_chunked_init(&d1, 1u << 16);
    rc1 = kb_http_chunked_decode(&d1, a, len, &used1, a, &out1);
    check(out1 <= len && used1 <= len);

    kb_http_chunked_init(&d2, 1u << 16);
    for (int i = 0; i < 3 && rc2 == KB_EAGAIN; i++) {
        size_t u, o;
        if (cuts[i] < pos)
            continue;
        rc2 = kb_http_chunked_decode(&d2, in + pos, cuts[i] - pos, &u,
                                     b + out2, &o);
        check(rc2 != KB_EAGAIN || u == cuts[i] - pos);
        used2 = pos + u;
        out2 += o;
        pos = cuts[i];
    }
    check(rc1 == rc2);
    check(d1.error_status == d2.error_status);
    if (rc1 == 0)
        check(used1 == used2);
    if (rc1 == 0 || rc1 == KB_EAGAIN) {
        check(out1 == out2);
        check(memcmp(a, b, out1) == 0);
    }
    free(a);
    free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    kb_http_head h;
    size_t split = size > 0 ? (size_t)data[0] * size / 256 : 0;
    size_t split2 = size > 1 ? (size_t)data[size - 1] * size / 256 : 0;
    int rc;

    /* heads: split at the middle and at a data-chosen point */
    head_twice(buf, size, size / 2, 1, &h);
    head_twice(buf, size, split, 0, &h);
    rc = head_twice(buf, size, size / 2, 0, &h);

    /* the body after a complete head, or the whole input */
    if (rc > 0) {
        const char *body = buf + rc;
        size_t blen = size - (size_t)rc;
        chunked_twice(body, blen, blen / 3, blen / 3 * 2);
    }
    if (split > split2) {
        size_t t = split;
        split = split2;
        split2 = t;
    }
    chunked_twice(buf, size, split, split2);
    return 0;
}
