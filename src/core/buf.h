/*
 * buf.h - growable byte buffer with a hard maximum.
 *
 * Every buffer in kiban has a ceiling (curl's dynbuf "toobig"): appending past
 * `max` fails with KB_ETOOBIG and leaves the buffer unchanged.  The data is
 * always kept NUL-terminated (the NUL is not counted in len), so text built
 * here can be handed to C string functions directly.
 */
#ifndef KB_BUF_H
#define KB_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct kb_buf {
    char   *data;   /* NULL until the first append */
    size_t  len;    /* bytes in use, not counting the trailing NUL */
    size_t  cap;    /* bytes allocated */
    size_t  max;    /* hard ceiling for len */
} kb_buf;

#define KB_BUF_INIT(max_) { NULL, 0, 0, (max_) }

void kb_buf_init(kb_buf *b, size_t max);
/* Make room for `extra` more bytes.  KB_ETOOBIG past max, KB_ENOMEM. */
int  kb_buf_reserve(kb_buf *b, size_t extra);
int  kb_buf_append(kb_buf *b, const void *p, size_t n);
int  kb_buf_appends(kb_buf *b, const char *s);
int  kb_buf_appendc(kb_buf *b, char c);
int  kb_buf_appendf(kb_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int  kb_buf_vappendf(kb_buf *b, const char *fmt, va_list ap);
/* Drop the first n bytes (n > len drops everything). */
void kb_buf_consume(kb_buf *b, size_t n);
/* Forget the contents, keep the allocation. */
void kb_buf_reset(kb_buf *b);
/* Hand the allocation to the caller (NUL-terminated, never NULL unless
 * out of memory); the buffer is left empty. */
char *kb_buf_detach(kb_buf *b);
void kb_buf_free(kb_buf *b);
/* "" for an empty buffer, otherwise data. */
const char *kb_buf_cstr(const kb_buf *b);

#endif
