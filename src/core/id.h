/*
 * id.h - random identifiers (request ids, trace ids, tokens, uids).
 */
#ifndef KB_ID_H
#define KB_ID_H

#include <stddef.h>

/* Fill `out` with 2*nbytes lowercase hex digits from the kernel's CSPRNG,
 * NUL-terminated; `out` must hold 2*nbytes+1 bytes.  Returns 0 or -errno. */
int kb_random_hex(char *out, size_t nbytes);
/* Like kb_random_hex, but from a per-thread xoshiro256** generator seeded
 * once from the kernel: for identifiers that must be unique, not secret
 * (request ids, trace and span ids), on hot paths.  Never fails. */
void kb_id_hex(char *out, size_t nbytes);
/* Fill `out` with n random bytes.  Returns 0 or -errno. */
int kb_random_bytes(void *out, size_t n);
/* A version-4 UUID as text (37 bytes with the NUL). */
int kb_uuid4(char out[37]);

#endif
