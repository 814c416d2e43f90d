/*
 * time.c - clocks and timestamps (see time.h).
 */
#include "core/time.h"

#include <stdio.h>
#include <time.h>

uint64_t
kb_time_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
kb_time_mono_ms(void)
{
    return kb_time_mono_ns() / 1000000u;
}

int64_t
kb_time_unix_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
kb_time_rfc3339(char *out, size_t outlen, int64_t unix_ns, int digits)
{
    time_t secs = (time_t)(unix_ns / 1000000000);
    long frac = (long)(unix_ns % 1000000000);
    struct tm tm;
    char base[32];

    if (frac < 0) {
        frac += 1000000000;
        secs -= 1;
    }
    gmtime_r(&secs, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    if (digits <= 0) {
        snprintf(out, outlen, "%sZ", base);
        return;
    }
    if (digits > 9)
        digits = 9;
    for (int i = digits; i < 9; i++)
        frac /= 10;
    snprintf(out, outlen, "%s.%0*ldZ", base, digits, frac);
}
