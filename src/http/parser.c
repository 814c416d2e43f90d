/*
 * parser.c - strict HTTP/1.1 head parser and chunked decoder (see parser.h).
 *
 * Lines are found with memchr and checked with one table lookup per byte;
 * every rule that can let two parsers disagree about where a message ends
 * (RFC 9112 section 11.2, request smuggling) is a hard error here.
 */
#include "http/parser.h"
#include "core/err.h"

#include <stdint.h>
#include <string.h>

/* Character classes (one table, bit per class). */
#define C_TCHAR  1u     /* token: field names, methods, codings */
#define C_VALUE  2u     /* field-value byte: HT, SP, VCHAR, obs-text */
#define C_TARGET 4u     /* request-target byte: VCHAR except '#' */
#define C_HEX    8u
#define C_HOST   16u    /* Host / authority byte */

static const unsigned char cls[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     2, 23,  6,  3, 23, 23, 23, 23, 22, 22, 23, 23, 22, 23, 23,  6,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 22, 22,  6, 22,  6,  6,
     6, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 22,  6, 22,  7, 23,
     7, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,  6,  7,  6, 23,  0,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
};

#define IS(c, k) ((cls[(unsigned char)(c)] & (k)) != 0)

enum { STAGE_START, STAGE_FIELDS, STAGE_DONE, STAGE_ERROR };

/* kb_http_head.te_ bits: what the Transfer-Encoding lines said. */
#define TE_SEEN          1u
#define TE_CHUNKED       2u    /* chunked seen (once) */
#define TE_AFTER_CHUNKED 4u    /* a coding came after chunked */
#define TE_REPEAT        8u    /* chunked seen twice */
#define TE_UNKNOWN       16u   /* a coding we do not decode */
#define TE_BAD           32u   /* empty list element */

static inline unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

static bool
ieq(const char *p, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)p[i]) != lower((unsigned char)lit[i]))
            return false;
    return true;
}

#define IEQ(p, n, lit) ieq((p), (n), (lit), sizeof(lit) - 1)

bool
kb_http_span_eq(const char *buf, kb_http_span s, const char *str)
{
    return ieq(buf + s.off, s.len, str, strlen(str));
}

static inline kb_http_span
span(const char *base, const char *p, size_t n)
{
    kb_http_span s = { (uint32_t)(p - base), (uint32_t)n };
    return s;
}

static int
fail(kb_http_head *h, int status, const char *msg)
{
    h->stage_ = STAGE_ERROR;
    h->error_status = status;
    h->error = msg;
    return (status == 414 || status == 431) ? KB_ETOOBIG : KB_EPARSE;
}

void
kb_http_head_init(kb_http_head *h, kb_http_field *fields, size_t cap)
{
    memset(h, 0, sizeof(*h));
    h->fields = fields;
    h->cap_fields_ = fields != NULL ? cap : 0;
}

/* Split a comma list and hand each OWS-trimmed element to `fn`. */
typedef void (*elem_fn)(kb_http_head *h, const char *p, size_t n);

static void
each_element(kb_http_head *h, const char *p, size_t n, elem_fn fn)
{
    const char *end = p + n;

    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma != NULL ? comma : end;
        const char *s = p, *t = e;
        while (s < t && (*s == ' ' || *s == '\t'))
            s++;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        fn(h, s, (size_t)(t - s));
        if (comma == NULL)
            return;
        p = comma + 1;
    }
}

static void
te_element(kb_http_head *h, const char *p, size_t n)
{
    h->te_ |= TE_SEEN;
    if (n == 0) {
        h->te_ |= TE_BAD;
    } else if (IEQ(p, n, "chunked")) {
        if (h->te_ & TE_CHUNKED)
            h->te_ |= TE_REPEAT;
        h->te_ |= TE_CHUNKED;
    } else {
        if (h->te_ & TE_CHUNKED)
            h->te_ |= TE_AFTER_CHUNKED;
        h->te_ |= TE_UNKNOWN;
    }
}

static void
conn_element(kb_http_head *h, const char *p, size_t n)
{
    if (IEQ(p, n, "close"))
        h->flags |= KB_HTTP_CONN_CLOSE;
    else if (IEQ(p, n, "keep-alive"))
        h->flags |= KB_HTTP_CONN_KEEPALIVE;
    else if (IEQ(p, n, "upgrade"))
        h->flags |= KB_HTTP_CONN_UPGRADE;
}

/* Content-Length: 1*DIGIT, nothing else (no sign, list, or spaces). */
static int
content_length(kb_http_head *h, const char *p, size_t n)
{
    uint64_t v = 0;

    if (h->flags & KB_HTTP_HAS_LENGTH)
        return fail(h, 400, "duplicate Content-Length");
    if (n == 0)
        return fail(h, 400, "empty Content-Length");
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)p[i] - '0';
        if (d > 9)
            return fail(h, 400, "invalid Content-Length");
        if (v > (UINT64_MAX - d) / 10)
            return fail(h, 400, "Content-Length overflows");
        v = v * 10 + d;
    }
    h->content_length = v;
    h->flags |= KB_HTTP_HAS_LENGTH;
    return 0;
}

/* The fields that decide framing and connection handling. */
static int
field_semantics(kb_http_head *h, const char *name, size_t nlen,
                const char *v, size_t vlen)
{
    switch (nlen) {
    case 4:
        if (!h->response_ && IEQ(name, nlen, "host")) {
            if (++h->nhost_ > 1)
                return fail(h, 400, "duplicate Host");
            for (size_t i = 0; i < vlen; i++)
                if (!IS(v[i], C_HOST))
                    return fail(h, 400, "invalid Host");
        }
        break;
    case 6:
        if (!h->response_ && IEQ(name, nlen, "expect")) {
            if (IEQ(v, vlen, "100-continue"))
                h->flags |= KB_HTTP_EXPECT_CONTINUE;
            else
                h->flags |= KB_HTTP_EXPECT_OTHER;
        }
        break;
    case 10:
        if (IEQ(name, nlen, "connection"))
            each_element(h, v, vlen, conn_element);
        break;
    case 14:
        if (IEQ(name, nlen, "content-length"))
            return content_length(h, v, vlen);
        break;
    case 17:
        if (IEQ(name, nlen, "transfer-encoding"))
            each_element(h, v, vlen, te_element);
        break;
    default:
        break;
    }
    return 0;
}

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/*
 * The first byte in [p, end) that is not C_VALUE, or end.  C_VALUE is
 * exactly "not a control byte other than HT, and not DEL", so eight bytes
 * at a time are skipped while none of them is below 0x20 or is 0x7f (an
 * exact test); a word that has one is scanned bytewise with the table,
 * which decides (HT passes there).  Long values (tokens, cookies) cost a
 * few instructions per eight bytes.
 */
static const char *
value_scan(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t x, y;
        memcpy(&x, p, 8);
        y = x ^ (0x7f * ONES);
        if ((((x - 0x20 * ONES) & ~x) | ((y - ONES) & ~y)) & HIGHS)
            break;
        p += 8;
    }
    while (p < end && IS(*p, C_VALUE))
        p++;
    return p;
}

bool
kb_http_is_tchar(unsigned char c)
{
    return IS(c, C_TCHAR);
}

size_t
kb_http_token_len(const char *s)
{
    const char *p = s;

    if (s == NULL)
        return 0;
    while (IS(*p, C_TCHAR))
        p++;
    return *p == '\0' ? (size_t)(p - s) : 0;
}

size_t
kb_http_value_len(const char *s)
{
    size_t n;

    if (s == NULL)
        return SIZE_MAX;
    n = strlen(s);
    return value_scan(s, s + n) == s + n ? n : SIZE_MAX;
}

bool
kb_http_visible(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

/* One field line (without CRLF): name ":" OWS value OWS. */
static int
field_line(kb_http_head *h, const char *buf, size_t pos, size_t n,
           size_t max_fields)
{
    const char *line = buf + pos, *end = line + n, *p = line;
    const char *vs, *ve;
    size_t nlen;

    if (*p == ' ' || *p == '\t')
        return fail(h, 400, "obsolete line folding");
    while (p < end && IS(*p, C_TCHAR))
        p++;
    if (p == line)
        return fail(h, 400, "invalid header name");
    if (p == end || *p != ':')
        return fail(h, 400, "invalid character in header name");
    nlen = (size_t)(p - line);
    p++;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    vs = p;
    p = value_scan(p, end);
    if (p != end)
        return fail(h, 400, "invalid character in header value");
    ve = end;
    while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    if (h->nfields >= max_fields)
        return fail(h, 431, "too many header fields");
    if (h->nfields < h->cap_fields_) {
        h->fields[h->nfields].name = span(buf, line, nlen);
        h->fields[h->nfields].value = span(buf, vs, (size_t)(ve - vs));
    }
    h->nfields++;
    return field_semantics(h, line, nlen, vs, (size_t)(ve - vs));
}

/* scheme "://" authority [path-abempty] ["?" query]: http or https only. */
static int
absolute_form(kb_http_head *h, const char *buf, const char *t, size_t tlen)
{
    const char *end = t + tlen, *p = t, *a, *q;

    while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        p++;
    if (!(IEQ(t, (size_t)(p - t), "http") || IEQ(t, (size_t)(p - t), "https")))
        return fail(h, 400, "invalid request target");
    if (end - p < 3 || memcmp(p, "://", 3) != 0)
        return fail(h, 400, "invalid request target");
    a = p + 3;
    p = a;
    while (p < end && *p != '/' && *p != '?') {
        if (!IS(*p, C_HOST))
            return fail(h, 400, "invalid authority in request target");
        p++;
    }
    if (p == a)
        return fail(h, 400, "empty authority in request target");
    h->authority = span(buf, a, (size_t)(p - a));
    q = memchr(p, '?', (size_t)(end - p));
    h->path = span(buf, p, (size_t)((q ? q : end) - p));
    if (q != NULL)
        h->query = span(buf, q + 1, (size_t)(end - q - 1));
    else
        h->query = span(buf, end, 0);
    h->form = KB_HTTP_ABSOLUTE_FORM;
    return 0;
}

static int
request_target(kb_http_head *h, const char *buf, const char *t, size_t tlen)
{
    const char *end = t + tlen, *q;

    /* Percent-encoding must be well formed: '%' HEXDIG HEXDIG. */
    for (q = memchr(t, '%', tlen); q != NULL;
         q = memchr(q, '%', (size_t)(end - q))) {
        if (end - q < 3 || !IS(q[1], C_HEX) || !IS(q[2], C_HEX))
            return fail(h, 400, "invalid percent-encoding in request target");
        q += 3;
        if (q >= end)
            break;
    }
    if (t[0] == '/') {
        q = memchr(t, '?', tlen);
        h->path = span(buf, t, (size_t)((q ? q : end) - t));
        h->query = q ? span(buf, q + 1, (size_t)(end - q - 1))
                     : span(buf, end, 0);
        h->form = KB_HTTP_ORIGIN_FORM;
        return 0;
    }
    if (tlen == 1 && t[0] == '*') {
        if (!(h->method.len == 7 &&
              memcmp(buf + h->method.off, "OPTIONS", 7) == 0))
            return fail(h, 400, "asterisk-form is for OPTIONS only");
        h->path = span(buf, t, 0);
        h->query = span(buf, end, 0);
        h->form = KB_HTTP_ASTERISK_FORM;
        return 0;
    }
    return absolute_form(h, buf, t, tlen);
}

/* method SP request-target SP HTTP-version */
static int
request_line(kb_http_head *h, const char *buf, size_t pos, size_t n)
{
    const char *p = buf + pos, *end = p + n, *m = p, *t;

    while (p < end && IS(*p, C_TCHAR))
        p++;
    if (p == m)
        return fail(h, 400, "invalid method");
    if (p == end || *p != ' ')
        return fail(h, 400, "malformed request line");
    h->method = span(buf, m, (size_t)(p - m));
    t = ++p;
    while (p < end && IS(*p, C_TARGET))
        p++;
    if (p == t)
        return fail(h, 400, "missing request target");
    if (p == end || *p != ' ')
        return fail(h, 400, "invalid character in request target");
    h->target = span(buf, t, (size_t)(p - t));
    p++;
    if (end - p != 8 || memcmp(p, "HTTP/", 5) != 0 ||
        p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' || p[7] > '9')
        return fail(h, 400, "malformed HTTP version");
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return fail(h, 505, "HTTP version not supported");
    h->version_minor = p[7] - '0';
    if (h->method.len == 7 && memcmp(m, "CONNECT", 7) == 0)
        return fail(h, 501, "CONNECT is not supported");
    return request_target(h, buf, t, h->target.len);
}

/* HTTP-version SP 3DIGIT [SP reason-phrase] (a missing reason is allowed) */
static int
status_line(kb_http_head *h, const char *buf, size_t pos, size_t n)
{
    const char *p = buf + pos;

    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 ||
        (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
        p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' ||
        p[11] < '0' || p[11] > '9')
        return fail(h, 400, "malformed status line");
    h->version_minor = p[7] - '0';
    h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (n > 12) {
        if (p[12] != ' ')
            return fail(h, 400, "malformed status line");
        for (size_t i = 13; i < n; i++)
            if (!IS(p[i], C_VALUE))
                return fail(h, 400, "invalid character in reason phrase");
        h->reason = span(buf, p + 13, n - 13);
    } else {
        h->reason = span(buf, p + n, 0);
    }
    return 0;
}

/* After the empty line: decide framing and persistence. */
static int
finish(kb_http_head *h)
{
    unsigned te = h->te_;

    if (!h->response_ && h->version_minor == 1 && h->nhost_ == 0)
        return fail(h, 400, "missing Host header");
    if (te & TE_SEEN) {
        if (!h->response_ && h->version_minor == 0)
            return fail(h, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (h->flags & KB_HTTP_HAS_LENGTH)
            return fail(h, 400, "both Content-Length and Transfer-Encoding");
        if (te & (TE_BAD | TE_REPEAT | TE_AFTER_CHUNKED))
            return fail(h, 400, "chunked must be the final transfer coding");
        if (te & TE_UNKNOWN)
            return fail(h, h->response_ ? 400 : 501,
                        "unsupported transfer coding");
        h->flags |= KB_HTTP_CHUNKED;
    }
    if (h->version_minor == 0)
        h->flags &= ~(unsigned)(KB_HTTP_EXPECT_CONTINUE | KB_HTTP_EXPECT_OTHER);
    if (h->version_minor == 1 ? !(h->flags & KB_HTTP_CONN_CLOSE)
                              : ((h->flags & KB_HTTP_CONN_KEEPALIVE) &&
                                 !(h->flags & KB_HTTP_CONN_CLOSE)))
        h->flags |= KB_HTTP_KEEP_ALIVE;
    return 0;
}

static int
parse_head(kb_http_head *h, const char *buf, size_t len,
           const kb_http_limits *lim)
{
    size_t max_head = KB_HTTP_DEFAULT_MAX_HEAD;
    size_t max_fields = KB_HTTP_DEFAULT_MAX_HEADERS;
    size_t max_line = KB_HTTP_DEFAULT_MAX_LINE;
    int rc;

    if (h->stage_ == STAGE_DONE)
        return (int)h->head_len;
    if (h->stage_ == STAGE_ERROR)
        return (h->error_status == 414 || h->error_status == 431)
                   ? KB_ETOOBIG : KB_EPARSE;
    if (lim != NULL) {
        if (lim->max_head)
            max_head = lim->max_head;
        if (lim->max_headers)
            max_fields = lim->max_headers;
        if (lim->max_line)
            max_line = lim->max_line;
    }
    if (max_head > KB_HTTP_MAX_HEAD_CEILING)
        max_head = KB_HTTP_MAX_HEAD_CEILING;
    if (max_line > KB_HTTP_MAX_HEAD_CEILING)
        max_line = KB_HTTP_MAX_HEAD_CEILING;
    if (h->fields != NULL && max_fields > h->cap_fields_)
        max_fields = h->cap_fields_;

    /*
     * Limits are checked before content, against the length a line will
     * at least have, so that a prefix of the input never gives another
     * answer than the whole input does.
     */
    for (;;) {
        size_t pos = h->pos_, avail = len - pos, l, n;
        const char *line = buf + pos;
        const char *lf = avail > 0 ? memchr(line, '\n', avail) : NULL;

        if (lf == NULL) {
            if (h->stage_ == STAGE_START) {
                if (avail + 1 > max_line)
                    return fail(h, h->response_ ? 431 : 414,
                                "request line too long");
            } else if (len + 1 > max_head) {
                return fail(h, 431, "header section too large");
            }
            return KB_EAGAIN;
        }
        l = (size_t)(lf - line) + 1;
        if (h->stage_ == STAGE_START && l > max_line)
            return fail(h, h->response_ ? 431 : 414, "request line too long");
        if (pos + l > max_head)
            return fail(h, 431, "header section too large");
        if (l < 2 || line[l - 2] != '\r')
            return fail(h, 400, "bare LF line terminator");
        n = l - 2;
        if (h->stage_ == STAGE_START) {
            if (n > 0) {
                rc = h->response_ ? status_line(h, buf, pos, n)
                                  : request_line(h, buf, pos, n);
                if (rc != 0)
                    return rc;
                h->stage_ = STAGE_FIELDS;
            }
            /* else: an empty line before the start line is ignored */
        } else if (n == 0) {
            h->pos_ = pos + l;
            h->head_len = h->pos_;
            rc = finish(h);
            if (rc != 0)
                return rc;
            h->stage_ = STAGE_DONE;
            return (int)h->head_len;
        } else {
            rc = field_line(h, buf, pos, n, max_fields);
            if (rc != 0)
                return rc;
        }
        h->pos_ = pos + l;
    }
}

int
kb_http_parse_request(kb_http_head *h, const char *buf, size_t len,
                      const kb_http_limits *limits)
{
    h->response_ = 0;
    return parse_head(h, buf, len, limits);
}

int
kb_http_parse_response(kb_http_head *h, const char *buf, size_t len,
                       const kb_http_limits *limits)
{
    h->response_ = 1;
    return parse_head(h, buf, len, limits);
}

/* ---- chunked transfer coding ------------------------------------------ */

enum {
    CH_SIZE0,       /* first hex digit of a chunk size */
    CH_SIZE,        /* more hex digits, ';', BWS or CR */
    CH_EXT_BWS,     /* whitespace after the size: ';' must follow */
    CH_EXT,         /* chunk extensions (validated, ignored) */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_START,    /* start of a trailer line or the final CRLF */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_END_LF,
    CH_DONE,
    CH_ERROR
};

void
kb_http_chunked_init(kb_http_chunked *d, uint64_t max_body)
{
    memset(d, 0, sizeof(*d));
    d->max_body = max_body ? max_body : UINT64_MAX;
    d->state = CH_SIZE0;
}

bool
kb_http_chunked_done(const kb_http_chunked *d)
{
    return d->state == CH_DONE;
}

static int
ch_fail(kb_http_chunked *d, int status, const char *msg)
{
    d->state = CH_ERROR;
    d->error_status = status;
    d->error = msg;
    return status == 400 ? KB_EPARSE : KB_ETOOBIG;
}

static inline unsigned
hexval(unsigned char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)(lower(c) - 'a' + 10);
}

int
kb_http_chunked_decode(kb_http_chunked *d, const char *in, size_t in_len,
                       size_t *in_used, char *out, size_t *out_len)
{
    const char *p = in, *end = in + in_len;
    size_t o = 0;

    *in_used = 0;
    *out_len = 0;
    if (d->state == CH_DONE)
        return 0;
    if (d->state == CH_ERROR)
        return d->error_status == 400 ? KB_EPARSE : KB_ETOOBIG;

    while (p < end) {
        unsigned char c;

        if (d->state == CH_DATA) {
            size_t n = (size_t)(end - p);
            if (n > d->size)
                n = (size_t)d->size;
            memmove(out + o, p, n);
            o += n;
            p += n;
            d->size -= n;
            if (d->size == 0)
                d->state = CH_DATA_CR;
            continue;
        }
        c = (unsigned char)*p++;
        switch (d->state) {
        case CH_SIZE0:
            if (!IS(c, C_HEX))
                return ch_fail(d, 400, "invalid chunk size");
            d->size = hexval(c);
            d->line_len = 1;
            if (d->size > d->max_body - d->total)
                return ch_fail(d, 413, "body too large");
            d->state = CH_SIZE;
            break;
        case CH_SIZE:
            if (++d->line_len > KB_HTTP_CHUNK_LINE_MAX)
                return ch_fail(d, 400, "chunk size line too long");
            if (IS(c, C_HEX)) {
                uint64_t room = d->max_body - d->total;
                unsigned v = hexval(c);
                if (d->size > room / 16)
                    return ch_fail(d, 413, "body too large");
                d->size *= 16;
                if (v > room - d->size)
                    return ch_fail(d, 413, "body too large");
                d->size += v;
            } else if (c == ';') {
                d->state = CH_EXT;
            } else if (c == ' ' || c == '\t') {
                d->state = CH_EXT_BWS;
            } else if (c == '\r') {
                d->state = CH_SIZE_LF;
            } else {
                return ch_fail(d, 400, "invalid chunk size");
            }
            break;
        case CH_EXT_BWS:
            if (++d->line_len > KB_HTTP_CHUNK_LINE_MAX)
                return ch_fail(d, 400, "chunk size line too long");
            if (c == ';')
                d->state = CH_EXT;
            else if (c != ' ' && c != '\t')
                return ch_fail(d, 400, "invalid chunk size");
            break;
        case CH_EXT:
            if (++d->line_len > KB_HTTP_CHUNK_LINE_MAX)
                return ch_fail(d, 400, "chunk extension too long");
            if (c == '\r')
                d->state = CH_SIZE_LF;
            else if (!IS(c, C_VALUE))
                return ch_fail(d, 400, "invalid chunk extension");
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                return ch_fail(d, 400, "bare CR in chunk size line");
            if (d->size == 0) {
                d->state = CH_TR_START;
            } else {
                d->total += d->size;
                d->state = CH_DATA;
            }
            break;
        case CH_DATA_CR:
            if (c != '\r')
                return ch_fail(d, 400, "missing CRLF after chunk data");
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                return ch_fail(d, 400, "missing CRLF after chunk data");
            d->state = CH_SIZE0;
            break;
        case CH_TR_START:
        case CH_TR_NAME:
        case CH_TR_VALUE:
        case CH_TR_LF:
        case CH_END_LF:
            if (++d->trailer_len > KB_HTTP_TRAILER_MAX)
                return ch_fail(d, 431, "trailer section too large");
            switch (d->state) {
            case CH_TR_START:
                if (c == '\r') {
                    d->state = CH_END_LF;
                } else if (IS(c, C_TCHAR)) {
                    if (++d->ntrailers > KB_HTTP_TRAILER_FIELDS_MAX)
                        return ch_fail(d, 431, "too many trailer fields");
                    d->state = CH_TR_NAME;
                } else {
                    return ch_fail(d, 400, "invalid trailer field");
                }
                break;
            case CH_TR_NAME:
                if (c == ':')
                    d->state = CH_TR_VALUE;
                else if (!IS(c, C_TCHAR))
                    return ch_fail(d, 400, "invalid trailer field name");
                break;
            case CH_TR_VALUE:
                if (c == '\r')
                    d->state = CH_TR_LF;
                else if (!IS(c, C_VALUE))
                    return ch_fail(d, 400, "invalid trailer field value");
                break;
            case CH_TR_LF:
                if (c != '\n')
                    return ch_fail(d, 400, "bare CR in trailer section");
                d->state = CH_TR_START;
                break;
            default: /* CH_END_LF */
                if (c != '\n')
                    return ch_fail(d, 400, "bare CR after trailer section");
                d->state = CH_DONE;
                *in_used = (size_t)(p - in);
                *out_len = o;
                return 0;
            }
            break;
        default:
            return ch_fail(d, 400, "chunked decoder misuse");
        }
    }
    *in_used = in_len;
    *out_len = o;
    return KB_EAGAIN;
}
