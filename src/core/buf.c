/*
 * buf.c - growable byte buffer with a hard maximum (see buf.h).
 *
 * Buffers on the request path are born and freed once per request (read
 * buffers, upstream request bytes).  Freed allocations of a few power-of-two
 * sizes are kept in a small per-thread cache and handed to the next buffer
 * that starts at that size, so the hot path does not go through malloc's
 * large-chunk bins.  The cache is off under AddressSanitizer, which must
 * see every free.
 */
#include "core/buf.h"
#include "core/err.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define BUF_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUF_CACHE 0
#endif
#endif
#ifndef BUF_CACHE
#define BUF_CACHE 1
#endif

#define CACHE_MIN_SHIFT 10u         /* 1 KiB */
#define CACHE_CLASSES   8u          /* 1 KiB … 128 KiB */
#define CACHE_DEPTH     16u         /* per class: at most 4 MiB per thread */

typedef struct buf_cache {
    void    *blocks[CACHE_CLASSES][CACHE_DEPTH];
    unsigned n[CACHE_CLASSES];
} buf_cache;

#if BUF_CACHE
static _Thread_local buf_cache *tl_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

/* Thread exit: give the cached blocks back. */
static void
cache_free(void *data)
{
    buf_cache *c = data;

    for (unsigned k = 0; k < CACHE_CLASSES; k++)
        for (unsigned i = 0; i < c->n[k]; i++)
            free(c->blocks[k][i]);
    free(c);
}

static void
cache_key_init(void)
{
    (void)pthread_key_create(&cache_key, cache_free);
}

static buf_cache *
cache_get(void)
{
    if (tl_cache == NULL) {
        pthread_once(&cache_once, cache_key_init);
        tl_cache = calloc(1, sizeof(*tl_cache));
        if (tl_cache != NULL)
            (void)pthread_setspecific(cache_key, tl_cache);
    }
    return tl_cache;
}

/* The class of a capacity the cache holds, or -1. */
static int
cache_class(size_t cap)
{
    for (unsigned k = 0; k < CACHE_CLASSES; k++)
        if (cap == (size_t)1 << (CACHE_MIN_SHIFT + k))
            return (int)k;
    return -1;
}

static void *
cache_take(size_t cap)
{
    int k = cache_class(cap);
    buf_cache *c;

    if (k < 0 || (c = cache_get()) == NULL || c->n[k] == 0)
        return NULL;
    return c->blocks[k][--c->n[k]];
}

/* true when the cache kept p (the caller must not free it). */
static bool
cache_put(void *p, size_t cap)
{
    int k = cache_class(cap);
    buf_cache *c;

    if (k < 0 || (c = cache_get()) == NULL || c->n[k] == CACHE_DEPTH)
        return false;
    c->blocks[k][c->n[k]++] = p;
    return true;
}
#else
static void *cache_take(size_t cap) { (void)cap; return NULL; }
static bool  cache_put(void *p, size_t cap) { (void)p; (void)cap; return false; }
#endif

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
    if (b->data != NULL)
        p = realloc(b->data, ncap);
    else if ((p = cache_take(ncap)) == NULL)
        p = malloc(ncap);
    if (p == NULL)
        return KB_ENOMEM;
    if (b->data == NULL)
        p[0] = '\0';                  /* kept NUL-terminated (buf.h) */
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
    if (b->data != NULL && !cache_put(b->data, b->cap))
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
