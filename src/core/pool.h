/*
 * pool.h - arena allocator with cleanup hooks (nginx pools).
 *
 * A pool lives as long as one request or one connection: everything taken
 * from it is released at once by kb_pool_destroy(), after the cleanup hooks
 * have run in reverse order of registration.  Small allocations are carved
 * from blocks; large ones get their own block.  Not thread-safe.
 */
#ifndef KB_POOL_H
#define KB_POOL_H

#include <stddef.h>

typedef struct kb_pool kb_pool;

/* NULL when out of memory.  block_size 0 picks the default (4 KiB). */
kb_pool *kb_pool_create(size_t block_size);
/* Aligned for any type; NULL when out of memory.  Memory is not zeroed. */
void    *kb_pool_alloc(kb_pool *p, size_t n);
void    *kb_pool_calloc(kb_pool *p, size_t n);
char    *kb_pool_strndup(kb_pool *p, const char *s, size_t n);
char    *kb_pool_strdup(kb_pool *p, const char *s);
/* Run fn(data) when the pool is destroyed.  0 or KB_ENOMEM. */
int      kb_pool_cleanup_add(kb_pool *p, void (*fn)(void *), void *data);
/* Bytes handed out so far (for limits and metrics). */
size_t   kb_pool_used(const kb_pool *p);
void     kb_pool_destroy(kb_pool *p);

#endif
