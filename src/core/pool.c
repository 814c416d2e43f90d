/*
 * pool.c - arena allocator with cleanup hooks (see pool.h).
 */
#include "core/pool.h"
#include "core/err.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POOL_ALIGN alignof(max_align_t)

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
};

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
    kb_pool *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->block_size = block_size ? block_size : 4096;
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
    for (b = p->blocks; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(p);
}
