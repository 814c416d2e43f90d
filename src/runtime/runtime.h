/*
 * runtime.h - services as sequences of immutable revisions, run as
 * supervised local processes (Cloud Run's model on one machine).
 *
 * The runtime follows stored Service documents (kb_runtime_apply): each
 * revision's instances are process groups listening on a free loopback
 * PORT, probed, restarted with exponential backoff (0.1 s doubling to
 * 30 s), scaled on requests in flight and down to zero, drained before
 * they stop.  Requests pick a revision by the traffic split or a tag and
 * an instance with a free slot (kb_runtime_acquire); with none free they
 * wait for one.  No instance outlives the server, even when it is killed
 * with SIGKILL: a small supervisor process per instance kills its group
 * (and cgroup) when the server dies, and what is recorded in the store is
 * reaped at the next start.
 *
 * All calls on the loop thread, except the data path (acquire, release,
 * wait_cancel, at_capacity).
 */
#ifndef KB_RUNTIME_H
#define KB_RUNTIME_H

#include <jansson.h>
#include <stdbool.h>
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
/*
 * Check a Service document without applying it: the template fields
 * (template.h), "traffic" (shape, percents summing to 100, unique tags),
 * "revisionHistoryLimit".  The output-only "revisions" and
 * "revisionCounter" are not checked (the API sets them).  KB_EINVAL with
 * "field: reason" in err.  (template.c)
 */
int  kb_runtime_validate(const json_t *spec, char *err, size_t errlen);
/*
 * Make a service follow its stored document (copied): one revision per
 * entry of "revisions" (immutable: an entry seen before is not re-read),
 * traffic split and tags from "traffic" (latestRevision = the last
 * revision).  Revisions that are routable (percent > 0 or a tag) keep
 * minInstances and autoscale; the newest gets one instance to prove it
 * starts; the others are drained and stopped.  A document without
 * "revisions" runs its top-level template as revision NAME-00000-000 with
 * all the traffic.  KB_EINVAL for a bad document (message in err).
 */
int  kb_runtime_apply(kb_runtime *rt, const char *project, const char *name,
                      const json_t *spec, char *err, size_t errlen);
/* Stop and forget a service.  KB_ENOTFOUND if unknown. */
int  kb_runtime_remove(kb_runtime *rt, const char *project, const char *name);

/* ---- the data path: any thread ---- */

typedef struct kb_rt_lease {
    kb_endpoint ep;             /* host, port, revision name */
    void       *instance;       /* the runtime's; NULL when not acquired */
    uint64_t    start_ns;       /* monotonic, set by acquire */
} kb_rt_lease;

typedef struct kb_rt_waiter kb_rt_waiter;
struct kb_rt_waiter {
    /* Called once, from any thread, when the caller should call
     * kb_runtime_acquire again (an instance got ready or a slot freed, the
     * revision went away, or the runtime is stopping).  Must only hand the
     * request back to its own loop (gw__post). */
    void        (*notify)(kb_rt_waiter *w);
    void         *data;
    /* the runtime's own */
    kb_rt_waiter *prev, *next;
    void         *rev;
};

#define KB_RT_MAX_WAITERS 1000  /* per revision */

/*
 * Pick an instance for one request.  tag NULL: the traffic split, using
 * rnd (uniform 32 bits) to choose; tag set: the revision carrying it.
 * revision non-NULL (a retry after notify): that revision by name; if it
 * is gone, as if NULL.
 *  0            *lease filled; the instance's in-flight count is raised:
 *               exactly one kb_runtime_release() must follow.
 *  KB_EAGAIN    no instance has a free slot (cold start, or all busy); the
 *               runtime scales up.  If w is not NULL it is queued on the
 *               chosen revision (named in lease->ep.revision) and
 *               w->notify will be called once.
 *  KB_ENOTFOUND no such service, or no revision with that tag.
 *  KB_EUNAVAIL  the revision cannot serve (crash loop, failed start).
 *  KB_ETOOBIG   the revision's wait queue is full (KB_RT_MAX_WAITERS).
 */
int  kb_runtime_acquire(kb_runtime *rt, const char *project, const char *name,
                        const char *tag, const char *revision, uint32_t rnd,
                        kb_rt_waiter *w, kb_rt_lease *lease);
/* Take w off its queue if it is still queued: true if it was (no notify
 * will come), false if notify has been or is being called. */
bool kb_runtime_wait_cancel(kb_runtime *rt, kb_rt_waiter *w);
/* The request on this lease is over: err 0 and the HTTP status, or the
 * error of the call.  Counts the revision's metrics; may wake a waiter.
 * The lease is cleared. */
void kb_runtime_release(kb_runtime *rt, kb_rt_lease *lease, int err,
                        int status);
/* Is that revision at its maxInstances (a timed-out wait is then a 429,
 * else a 503)? */
bool kb_runtime_at_capacity(kb_runtime *rt, const char *project,
                            const char *name, const char *revision);

/* ---- control: the loop thread ---- */

/* Where tag and service URLs point (status "url" fields): the gateway's
 * domain and port (80 is left out).  Copied. */
void kb_runtime_set_url_base(kb_runtime *rt, const char *domain, int port);
/* Captured output kept per service, in bytes (0: the default, 4 MiB). */
void kb_runtime_set_log_size(kb_runtime *rt, size_t bytes);
/* Run instances as this user when the server runs as root (NULL or "":
 * as the server's user).  Copied; before the first apply. */
void kb_runtime_set_run_as(kb_runtime *rt, const char *user);

/*
 * Captured output of a service's instances.  Entries newer than
 * since_ns (0: all kept) with seq > after, of one revision (NULL: all), at
 * most limit (0: 1000).  When none match and wait_ms > 0, waits up to
 * wait_ms for one.  cb gets {"entries":[{"seq","time","revision",
 * "instance","stream","text"}],"nextSeq":N} (new reference; NULL when out
 * of memory) exactly once, on the loop thread, possibly before this
 * returns; *handle lets the caller cancel a wait (then cb runs at once).
 * KB_ENOTFOUND (no such service: cb not called), KB_ETOOBIG (too many
 * waiting queries).
 */
typedef struct kb_rt_log_query {
    const char *revision;
    int64_t     since_ns;
    uint64_t    after;
    size_t      limit;
    uint64_t    wait_ms;
} kb_rt_log_query;
typedef struct kb_rt_log_wait kb_rt_log_wait;
int  kb_runtime_logs(kb_runtime *rt, const char *project, const char *name,
                     const kb_rt_log_query *q,
                     void (*cb)(json_t *result, void *data), void *data,
                     kb_rt_log_wait **handle);
void kb_runtime_logs_cancel(kb_runtime *rt, kb_rt_log_wait *handle);

/*
 * Status of one revision ({"ready", "conditions", "instances", "desired",
 * "readyInstances", "inflight", "coldStarts", "restarts", …}); NULL if
 * unknown.  New reference.
 */
json_t *kb_runtime_revision_status(kb_runtime *rt, const char *project,
                                   const char *name, const char *revision);
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
