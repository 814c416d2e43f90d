/*
 * time.h - clocks and timestamps.
 */
#ifndef KB_TIME_H
#define KB_TIME_H

#include <stddef.h>
#include <stdint.h>

#define KB_RFC3339_LEN 40

/* Monotonic clock. */
uint64_t kb_time_mono_ns(void);
uint64_t kb_time_mono_ms(void);
/* Wall clock, nanoseconds since the Unix epoch. */
int64_t  kb_time_unix_ns(void);
/* RFC 3339 UTC text, e.g. 2026-11-23T09:31:00.123Z, with `digits` (0-9)
 * fractional digits.  `out` must hold KB_RFC3339_LEN bytes. */
void     kb_time_rfc3339(char *out, size_t outlen, int64_t unix_ns, int digits);

#endif
