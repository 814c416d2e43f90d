/*
 * parser.h - strict HTTP/1.1 message parsing (RFC 9112), no I/O, no malloc.
 *
 * The gateway's security boundary: the server (server.c) and the upstream
 * client (client.c) both frame messages with these functions only.  The head
 * parser is resumable over a growing contiguous buffer and records results
 * as offsets, so the caller may reallocate the buffer between calls.  The
 * chunked decoder is a byte-level state machine that can decode in place.
 */
#ifndef KB_HTTP_PARSER_H
#define KB_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KB_HTTP_DEFAULT_MAX_HEAD    (64u * 1024)   /* whole head, 431 */
#define KB_HTTP_DEFAULT_MAX_HEADERS 100u           /* field lines, 431 */
#define KB_HTTP_DEFAULT_MAX_LINE    (8u * 1024)    /* request line, 414 */
#define KB_HTTP_MAX_HEAD_CEILING    (256u << 20)   /* limits are clamped */
#define KB_HTTP_CHUNK_LINE_MAX      4096u          /* size line + exts, 400 */
#define KB_HTTP_TRAILER_MAX         (16u * 1024)   /* trailer section, 431 */
#define KB_HTTP_TRAILER_FIELDS_MAX  100u           /* trailer lines, 431 */

/* Limits for the head parser; zero fields take the defaults above. */
typedef struct kb_http_limits {
    size_t max_head;
    size_t max_headers;
    size_t max_line;
} kb_http_limits;

/* A piece of the parsed buffer: buf + off, len bytes (not NUL-terminated). */
typedef struct kb_http_span {
    uint32_t off;
    uint32_t len;
} kb_http_span;

typedef struct kb_http_field {
    kb_http_span name;   /* a token, as received */
    kb_http_span value;  /* leading and trailing OWS removed */
} kb_http_field;

/* kb_http_head.flags */
enum {
    KB_HTTP_KEEP_ALIVE      = 1u << 0, /* connection reusable after message */
    KB_HTTP_CHUNKED         = 1u << 1, /* Transfer-Encoding: chunked */
    KB_HTTP_HAS_LENGTH      = 1u << 2, /* Content-Length (content_length) */
    KB_HTTP_EXPECT_CONTINUE = 1u << 3, /* Expect: 100-continue (1.1 only) */
    KB_HTTP_EXPECT_OTHER    = 1u << 4, /* an expectation we cannot meet */
    KB_HTTP_CONN_CLOSE      = 1u << 5, /* Connection: close */
    KB_HTTP_CONN_KEEPALIVE  = 1u << 6, /* Connection: keep-alive */
    KB_HTTP_CONN_UPGRADE    = 1u << 7, /* Connection: upgrade */
};

typedef enum kb_http_target_form {
    KB_HTTP_ORIGIN_FORM = 0,   /* /path?query */
    KB_HTTP_ABSOLUTE_FORM,     /* http://authority/path?query */
    KB_HTTP_ASTERISK_FORM,     /* * (OPTIONS only) */
} kb_http_target_form;

/*
 * State and result of parsing one message head.  Initialise with
 * kb_http_head_init() before the first call and again for every message.
 * Result fields are valid once a parse call returned > 0; spans are offsets
 * into the buffer passed to that call.
 */
typedef struct kb_http_head {
    /* request line */
    kb_http_span method;
    kb_http_span target;
    kb_http_span authority;    /* absolute-form only, else len 0 */
    kb_http_span path;         /* len 0 for "http://h" and "*" */
    kb_http_span query;        /* after '?', len 0 when none */
    kb_http_target_form form;
    /* status line */
    int          status;
    kb_http_span reason;
    /* both */
    int          version_minor;   /* HTTP/1.<minor>: 0 or 1 */
    kb_http_field *fields;        /* caller's array */
    size_t       nfields;
    uint64_t     content_length;  /* with KB_HTTP_HAS_LENGTH */
    unsigned     flags;
    size_t       head_len;        /* bytes of the head incl. final CRLF */
    /* failure: HTTP status to answer (400, 414, 431, 501, 505) and a
     * static message */
    int          error_status;
    const char  *error;

    /* private parse state */
    size_t   cap_fields_;
    size_t   pos_;                /* where the next unparsed line starts */
    uint8_t  stage_;
    uint8_t  response_;
    uint8_t  nhost_;
    uint8_t  te_;                 /* TE_* bits in parser.c */
} kb_http_head;

/*
 * Syntax checks for what we send (server answers, upstream requests), by
 * the same rules and tables the parser applies to what we receive.
 *   kb_http_is_tchar    an RFC 9110 token character
 *   kb_http_token_len   strlen(s) when s is a non-empty token, else 0
 *   kb_http_value_len   strlen(s) when s is a valid field value (no
 *                       control byte but HT, no DEL), else SIZE_MAX
 *   kb_http_visible     s is non-empty visible ASCII (targets, hosts)
 * NULL is never valid.
 */
bool   kb_http_is_tchar(unsigned char c);
size_t kb_http_token_len(const char *s);
size_t kb_http_value_len(const char *s);
bool   kb_http_visible(const char *s);

/*
 * Prepare `h` for a new message.  `fields`/`cap` is where header fields go
 * (the smaller of cap and limits->max_headers bounds the count, 431 past
 * it; fields may be NULL to validate without keeping fields).
 */
void kb_http_head_init(kb_http_head *h, kb_http_field *fields, size_t cap);

/*
 * Parse a request head from buf[0..len).  Call again with the same `h` and
 * the same bytes plus more when KB_EAGAIN is returned; work already done is
 * not repeated.  Returns the head length (> 0) when complete, KB_EAGAIN
 * when more bytes are needed, KB_ETOOBIG (414, 431) or KB_EPARSE (400, 501,
 * 505) with h->error_status and h->error set.  Errors are sticky.  `limits`
 * may be NULL (defaults) and must be the same on every call.
 *
 * Framing is decided here: duplicate or non-numeric Content-Length,
 * Content-Length with Transfer-Encoding, Transfer-Encoding on HTTP/1.0, a
 * chunked that is repeated or not final are 400; other transfer codings are
 * 501; a missing or repeated Host on HTTP/1.1 is 400.
 */
int  kb_http_parse_request(kb_http_head *h, const char *buf, size_t len,
                           const kb_http_limits *limits);

/*
 * Parse a response head (status line and fields) the same way.  Returns as
 * above; every malformed head is KB_EPARSE, an over-limit one KB_ETOOBIG.
 * Responses with both Content-Length and Transfer-Encoding, or a transfer
 * coding other than exactly "chunked", are rejected too.  Whether the
 * response has a body (HEAD, 1xx, 204, 304) is for the caller to decide.
 */
int  kb_http_parse_response(kb_http_head *h, const char *buf, size_t len,
                            const kb_http_limits *limits);

/* Case-insensitive comparison of a span with a NUL-terminated string. */
bool kb_http_span_eq(const char *buf, kb_http_span s, const char *str);

/*
 * Incremental decoder of the chunked transfer coding.
 */
typedef struct kb_http_chunked {
    uint64_t max_body;      /* decoded body limit (413) */
    uint64_t total;         /* decoded bytes so far */
    uint64_t size;          /* chunk size being read / data bytes left */
    uint32_t line_len;      /* bytes of the current size line */
    uint32_t trailer_len;   /* bytes of the trailer section */
    uint32_t ntrailers;
    uint8_t  state;
    int          error_status;  /* 400, 413, 431 after a failure */
    const char  *error;
} kb_http_chunked;

/* max_body 0 means no limit. */
void kb_http_chunked_init(kb_http_chunked *d, uint64_t max_body);

/*
 * Decode in[0..in_len) and write the body bytes to out, which must have
 * room for in_len bytes and may be `in` itself or lie anywhere before it
 * (decoding in place).  *out_len is set to the bytes written by this call.
 * Returns 0 when the last chunk and the trailer section are complete
 * (*in_used = bytes that belonged to the message; the rest is the next
 * message), KB_EAGAIN when all input was consumed and more is needed,
 * KB_EPARSE (400) or KB_ETOOBIG (413 body over max_body, 431 trailers)
 * with d->error_status set.  Trailer fields are validated and dropped.
 */
int  kb_http_chunked_decode(kb_http_chunked *d, const char *in, size_t in_len,
                            size_t *in_used, char *out, size_t *out_len);

bool kb_http_chunked_done(const kb_http_chunked *d);

#endif
