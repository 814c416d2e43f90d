/*
 * iplimit.c - open connections per client address, shared by every
 * listener of a process (one per loop), so --max-conns-per-ip holds for
 * the process.  A small chained hash under one mutex: touched once per
 * accepted and per closed connection, never per request.
 */
#include "http/server.h"
#include "http/http_internal.h"
#include "core/err.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define IPT_BUCKETS 4096u

struct kb_http__ipent {
    kb_http__ipent *next;
    uint32_t        count;
    uint8_t         len;            /* 4 or 16 */
    unsigned char   addr[16];
};

/* The peer's address bytes (4 for IPv4, 16 for IPv6); 0 when unknown. */
static size_t
ip_key(const struct sockaddr_storage *ss, unsigned char out[16])
{
    if (ss->ss_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        return 4;
    }
    if (ss->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

static uint32_t
ip_hash(const unsigned char *a, size_t n)
{
    uint32_t h = 2166136261u;                   /* FNV-1a */

    for (size_t i = 0; i < n; i++)
        h = (h ^ a[i]) * 16777619u;
    return h % IPT_BUCKETS;
}

struct kb_http_iplimit {
    pthread_mutex_t  lock;
    size_t           max;
    kb_http__ipent  *buckets[IPT_BUCKETS];
};

int
kb_http_iplimit_create(size_t max_per_ip, kb_http_iplimit **out)
{
    kb_http_iplimit *l = calloc(1, sizeof(*l));

    *out = NULL;
    if (l == NULL)
        return KB_ENOMEM;
    pthread_mutex_init(&l->lock, NULL);
    l->max = max_per_ip;
    *out = l;
    return 0;
}

void
kb_http_iplimit_free(kb_http_iplimit *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < IPT_BUCKETS; i++)
        while (l->buckets[i] != NULL) {
            kb_http__ipent *e = l->buckets[i];
            l->buckets[i] = e->next;
            free(e);
        }
    pthread_mutex_destroy(&l->lock);
    free(l);
}

/*
 * Count one more connection from this address.  0 and *out (NULL when the
 * limit is off or out of memory: the connection is then not counted), or
 * KB_EBUSY when the address is at the limit.
 */
int
kb_http__ip_acquire(kb_http_iplimit *l, const struct sockaddr_storage *ss,
           kb_http__ipent **out)
{
    unsigned char a[16];
    size_t n = ip_key(ss, a);
    kb_http__ipent *e, **slot;
    int rc = 0;

    *out = NULL;
    if (l == NULL || n == 0)
        return 0;
    pthread_mutex_lock(&l->lock);
    slot = &l->buckets[ip_hash(a, n)];
    for (e = *slot; e != NULL; e = e->next)
        if (e->len == n && memcmp(e->addr, a, n) == 0)
            break;
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        e->len = (uint8_t)n;
        memcpy(e->addr, a, n);
        e->next = *slot;
        *slot = e;
    }
    if (e != NULL && e->count >= l->max) {
        rc = KB_EBUSY;
    } else if (e != NULL) {
        e->count++;
        *out = e;
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void
kb_http__ip_release(kb_http_iplimit *l, kb_http__ipent *e)
{
    kb_http__ipent **p;

    pthread_mutex_lock(&l->lock);
    if (--e->count == 0)
        for (p = &l->buckets[ip_hash(e->addr, e->len)]; *p != NULL;
             p = &(*p)->next)
            if (*p == e) {
                *p = e->next;
                free(e);
                break;
            }
    pthread_mutex_unlock(&l->lock);
}
