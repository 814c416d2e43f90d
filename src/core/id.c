/*
 * id.c - random identifiers from getrandom(2) (see id.h).
 */
#include "core/id.h"
#include "core/err.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

int
kb_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;

    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int
kb_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    size_t done = 0;

    while (done < nbytes) {
        size_t chunk = nbytes - done < sizeof(raw) ? nbytes - done : sizeof(raw);
        int rc = kb_random_bytes(raw, chunk);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < chunk; i++) {
            out[2 * (done + i)] = hex[raw[i] >> 4];
            out[2 * (done + i) + 1] = hex[raw[i] & 15];
        }
        done += chunk;
    }
    out[2 * nbytes] = '\0';
    return 0;
}

int
kb_uuid4(char out[37])
{
    unsigned char b[16];
    int rc = kb_random_bytes(b, sizeof(b));

    if (rc != 0)
        return rc;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

/* xoshiro256** (Blackman and Vigna), one state per thread. */
static _Thread_local uint64_t xs[4];
static _Thread_local int xs_seeded;

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
xs_next(void)
{
    uint64_t r = rotl(xs[1] * 5, 7) * 9, t = xs[1] << 17;

    xs[2] ^= xs[0];
    xs[3] ^= xs[1];
    xs[1] ^= xs[2];
    xs[0] ^= xs[3];
    xs[2] ^= t;
    xs[3] = rotl(xs[3], 45);
    return r;
}

void
kb_id_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = 0;

    if (!xs_seeded) {
        /* The kernel CSPRNG does not fail once the pool is initialised;
         * if it ever did, mix in the clock and the thread's stack. */
        if (kb_random_bytes(xs, sizeof(xs)) != 0) {
            xs[0] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&v;
            xs[1] = 0x9e3779b97f4a7c15u;
            xs[2] = (uint64_t)clock();
            xs[3] = 0xbf58476d1ce4e5b9u;
        }
        xs_seeded = 1;
    }
    for (size_t i = 0; i < nbytes; i++) {
        if (i % 8 == 0)
            v = xs_next();
        unsigned b = (unsigned)(v & 0xff);
        v >>= 8;
        out[2 * i] = hex[b >> 4];
        out[2 * i + 1] = hex[b & 15];
    }
    out[2 * nbytes] = '\0';
}
