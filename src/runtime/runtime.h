/*
 * runtime.h - services run as supervised local processes.
 *
 * A service spec (JSON, as the admin API stores it):
 *   { "command": "./build/kiban-hello", "args": ["--x"],
 *     "env": {"K": "V"}, "instances": 1 }
 * Each instance is a child process in its own process group, with PORT set
 * to a free loopback port it must listen on.  An instance that exits is
 * restarted with exponential backoff (0.1 s doubling to 30 s, reset after
 * it has run 10 s).  Removing a service or shutting down stops its process
 * groups (SIGTERM, then SIGKILL after the grace period).  No instance
 * outlives the server, even when the server is killed with SIGKILL: every
 * instance is watched by a small supervisor process that kills its group
 * when the server dies, and process groups recorded in the store are reaped
 * at the next start.
 *
 * All calls on the loop thread, except kb_runtime_endpoint(s).
 */
#ifndef KB_RUNTIME_H
#define KB_RUNTIME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/store.h"

typedef struct kb_runtime kb_runtime;

typedef struct kb_endpoint {
    char host[64];              /* "127.0.0.1" */
    int  port;
    char revision[96];          /* what runs there: "NAME-00003" (the
                                   service's generation) */
} kb_endpoint;

/*
 * Create the runtime.  `self_exe` is the path of the kiban binary (used to
 * start the per-instance supervisor: `kiban __shim …`).  Reaps instances
 * left over from a previous server process (recorded in the store) before
 * returning.  0 and *out, or -errno.
 */
int  kb_runtime_create(uv_loop_t *loop, kb_store *store, const char *self_exe,
                       kb_runtime **out);
/* Check a spec without applying it; KB_EINVAL with a message in err. */
int  kb_runtime_validate(const json_t *spec, char *err, size_t errlen);
/*
 * Start or reconcile a service to `spec` (copied).  An unchanged spec is a
 * no-op; a changed command/args/env replaces the instances (new ones are
 * started, old ones stopped); a changed count adds or stops instances.
 * KB_EINVAL for a bad spec (message in err).
 */
int  kb_runtime_apply(kb_runtime *rt, const char *project, const char *name,
                      const json_t *spec, char *err, size_t errlen);
/* Stop and forget a service.  KB_ENOTFOUND if unknown. */
int  kb_runtime_remove(kb_runtime *rt, const char *project, const char *name);
#define KB_RT_MAX_ENDPOINTS 64

/*
 * The running instances a request may go to (up to max), for callers that
 * choose themselves (the gateway picks the least loaded).  Returns how
 * many (> 0); KB_ENOTFOUND: no such service; KB_EUNAVAIL: it has no
 * running instance right now.  Safe from any thread.
 */
int  kb_runtime_endpoints(kb_runtime *rt, const char *project,
                          const char *name, kb_endpoint *out, size_t max);
/* One of them, round robin.  Same errors; safe from any thread. */
int  kb_runtime_endpoint(kb_runtime *rt, const char *project,
                         const char *name, kb_endpoint *out);
/*
 * Status of a service: {"instances":[{"pid":…,"port":…,"state":"running",
 * "restarts":…,"lastExit":…}], "ready": n, "desired": n}; NULL if unknown.
 * New reference.
 */
json_t *kb_runtime_status(kb_runtime *rt, const char *project,
                          const char *name);
/*
 * Stop every instance (SIGTERM to each group, SIGKILL after grace_ms), wait
 * for them, then free the runtime and call done(data).
 */
void kb_runtime_shutdown(kb_runtime *rt, uint64_t grace_ms,
                         void (*done)(void *data), void *data);

/* Entry point of `kiban __shim`: the per-instance supervisor. */
int  kb_runtime_shim_main(int argc, char **argv);

#endif
