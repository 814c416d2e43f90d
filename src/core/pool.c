/*
 * pool.c - arena allocator with cleanup hooks (see pool.h).
 *
 * A request creates and destroys a pool: destroyed pools of the default
 * block size are kept, with their first block, in a small per-thread cache
 * and handed out again by kb_pool_create(), so a request costs no malloc
 * for its pool.  The cache is off under AddressSanitizer.
 */
#include "core/pool.h"
#include "core/err.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POOL_ALIGN         alignof(max_align_t)
#define POOL_DEFAULT_BLOCK 4096u
#define POOL_CACHE_MAX     64u      /* pools kept per thread: 256 KiB */

#if defined(__SANITIZE_ADDRESS__)
#define POOL_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_CACHE 0
#endif
#endif
#ifndef POOL_CACHE
#define POOL_CACHE 1
#endif

typedef struct pool_block {
    struct pool_block *next;
    size_t used;
    size_t size;
    alignas(max_align_t) unsigned char data[];
} pool_block;

typedef struct pool_cleanup {
    struct pool_cleanup *next;
    void (*fn)(void *);
    void *data;
} pool_cleanup;

struct kb_pool {
    pool_block   *current;    /* block small allocations come from */
    pool_block   *blocks;     /* every block, for destroy */
    pool_cleanup *cleanups;
    size_t        block_size;
    size_t        total;
    kb_pool      *next_free;  /* in the thread's cache */
};

#if POOL_CACHE
typedef struct pool_cache {
    kb_pool *head;
    unsigned n;
} pool_cache;

static _Thread_local pool_cache *tl_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void
pool_free(kb_pool *p)
{
    pool_block *b, *next;

    for (b = p->blocks; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(p);
}

/* Thread exit: free the cached pools. */
static void
cache_free(void *data)
{
    pool_cache *c = data;
    kb_pool *p, *next;

    for (p = c->head; p != NULL; p = next) {
        next = p->next_free;
        pool_free(p);
    }
    free(c);
}

static void
cache_key_init(void)
{
    (void)pthread_key_create(&cache_key, cache_free);
}

static pool_cache *
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

/* Keep a destroyed pool (hooks run) with one standard block for reuse:
 * true when the cache took it. */
static bool
pool_recycle(kb_pool *p)
{
    pool_cache *cache;
    pool_block *b, *next, *keep = NULL;

    if (p->block_size != POOL_DEFAULT_BLOCK || (cache = cache_get()) == NULL ||
        cache->n >= POOL_CACHE_MAX)
        return false;
    for (b = p->blocks; b != NULL; b = next) {
        next = b->next;
        if (keep == NULL && b->size == p->block_size)
            keep = b;
        else
            free(b);
    }
    if (keep != NULL) {
        keep->next = NULL;
        keep->used = 0;
    }
    p->blocks = p->current = keep;
    p->cleanups = NULL;
    p->total = 0;
    p->next_free = cache->head;
    cache->head = p;
    cache->n++;
    return true;
}
#else
static bool pool_recycle(kb_pool *p) { (void)p; return false; }
#endif

static pool_block *
block_new(size_t size)
{
    pool_block *b = malloc(sizeof(*b) + size);

    if (b == NULL)
        return NULL;
    b->next = NULL;
    b->used = 0;
    b->size = size;
    return b;
}

kb_pool *
kb_pool_create(size_t block_size)
{
    kb_pool *p;

    if (block_size == 0)
        block_size = POOL_DEFAULT_BLOCK;
#if POOL_CACHE
    if (block_size == POOL_DEFAULT_BLOCK && tl_cache != NULL &&
        tl_cache->head != NULL) {
        p = tl_cache->head;         /* reset by kb_pool_destroy */
        tl_cache->head = p->next_free;
        tl_cache->n--;
        p->next_free = NULL;
        return p;
    }
#endif
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->block_size = block_size;
    return p;
}

void *
kb_pool_alloc(kb_pool *p, size_t n)
{
    pool_block *b;
    size_t off;

    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - POOL_ALIGN)
        return NULL;
    n = (n + POOL_ALIGN - 1) & ~(POOL_ALIGN - 1);

    b = p->current;
    if (b != NULL && b->size - b->used >= n) {
        off = b->used;
        b->used += n;
        p->total += n;
        return b->data + off;
    }
    if (n > p->block_size / 4) {
        /* Large: a block of its own, current block stays in use. */
        b = block_new(n);
        if (b == NULL)
            return NULL;
        b->used = n;
        b->next = p->blocks;
        p->blocks = b;
        p->total += n;
        return b->data;
    }
    b = block_new(p->block_size);
    if (b == NULL)
        return NULL;
    b->used = n;
    b->next = p->blocks;
    p->blocks = b;
    p->current = b;
    p->total += n;
    return b->data;
}

void *
kb_pool_calloc(kb_pool *p, size_t n)
{
    void *m = kb_pool_alloc(p, n);

    if (m != NULL)
        memset(m, 0, n);
    return m;
}

char *
kb_pool_strndup(kb_pool *p, const char *s, size_t n)
{
    char *d = kb_pool_alloc(p, n + 1);

    if (d == NULL)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *
kb_pool_strdup(kb_pool *p, const char *s)
{
    return kb_pool_strndup(p, s, strlen(s));
}

int
kb_pool_cleanup_add(kb_pool *p, void (*fn)(void *), void *data)
{
    pool_cleanup *c = kb_pool_alloc(p, sizeof(*c));

    if (c == NULL)
        return KB_ENOMEM;
    c->fn = fn;
    c->data = data;
    c->next = p->cleanups;
    p->cleanups = c;
    return 0;
}

size_t
kb_pool_used(const kb_pool *p)
{
    return p->total;
}

void
kb_pool_destroy(kb_pool *p)
{
    pool_block *b, *next;

    if (p == NULL)
        return;
    /* Hooks are stored in the pool's own blocks: run them all first. */
    for (pool_cleanup *c = p->cleanups; c != NULL; c = c->next)
        c->fn(c->data);
    if (pool_recycle(p))
        return;
    for (b = p->blocks; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(p);
}
