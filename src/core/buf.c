/*
 * buf.c - growable byte buffer with a hard maximum (see buf.h).
 */
#include "core/buf.h"
#include "core/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
kb_buf_init(kb_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

int
kb_buf_reserve(kb_buf *b, size_t extra)
{
    size_t need, ncap;
    char *p;

    if (extra > b->max || b->len > b->max - extra)
        return KB_ETOOBIG;
    need = b->len + extra + 1;               /* room for the NUL */
    if (need <= b->cap)
        return 0;
    ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap = ncap > ((size_t)-1) / 2 ? need : ncap * 2;
    p = realloc(b->data, ncap);
    if (p == NULL)
        return KB_ENOMEM;
    b->data = p;
    b->cap = ncap;
    return 0;
}

int
kb_buf_append(kb_buf *b, const void *p, size_t n)
{
    int rc = kb_buf_reserve(b, n);

    if (rc != 0)
        return rc;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int
kb_buf_appends(kb_buf *b, const char *s)
{
    return kb_buf_append(b, s, strlen(s));
}

int
kb_buf_appendc(kb_buf *b, char c)
{
    return kb_buf_append(b, &c, 1);
}

int
kb_buf_vappendf(kb_buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    int n, rc;

    va_copy(cp, ap);
    n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return KB_EINVAL;
    rc = kb_buf_reserve(b, (size_t)n);
    if (rc != 0)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int
kb_buf_appendf(kb_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = kb_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void
kb_buf_consume(kb_buf *b, size_t n)
{
    if (n >= b->len) {
        kb_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void
kb_buf_reset(kb_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

char *
kb_buf_detach(kb_buf *b)
{
    char *p = b->data;

    if (p == NULL)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

void
kb_buf_free(kb_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

const char *
kb_buf_cstr(const kb_buf *b)
{
    return b->data != NULL ? b->data : "";
}
