/*
 * id.c - random identifiers from getrandom(2) (see id.h).
 */
#include "core/id.h"
#include "core/err.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>

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
