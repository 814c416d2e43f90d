/*
 * runtime_int.h - what the runtime's files share: the service and instance
 * structures, the supervisor calls runtime.c makes, /proc helpers the
 * server and the shim both use, and test-only knobs.  Not for other
 * modules: they use runtime.h.
 */
#ifndef KB_RUNTIME_INT_H
#define KB_RUNTIME_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/metrics.h"
#include "runtime/runtime.h"
#include "runtime/template.h"

#define KB_RT_MAX_INSTANCES  64      /* per service, from the spec */
#define KB_RT_MAX_SERVICES   4096    /* per runtime */
#define KB_RT_MAX_ARGS       256
#define KB_RT_MAX_ENV        256
#define KB_RT_MAX_STRING     32768   /* any one command/arg/env value */

typedef struct rt_service  rt_service;
typedef struct rt_revision rt_revision;
typedef struct rt_instance rt_instance;
struct rt_log;
struct rt_stdio;
struct rt_probe_run;

/*
 * An instance's life:
 *
 *   STARTING --startup probe passes--> RUNNING --drain--> DRAINING
 *      |  \--exit/probe fails--> BACKOFF --delay--> STARTING      |
 *      |                  (RUNNING --exit/liveness--> BACKOFF)   in-flight 0
 *   stop(): STARTING/RUNNING/DRAINING --> STOPPING --exit--> STOPPED
 *           BACKOFF ---------------------------------------> STOPPED
 *   (STOPPED: handles close, then freed once no lease holds it)
 *
 * A RUNNING instance takes requests while `ready` (no readiness probe, or
 * its last verdict was success).
 */
typedef enum rt_state {
    RT_STARTING = 0,
    RT_RUNNING,
    RT_BACKOFF,
    RT_DRAINING,
    RT_STOPPING,
    RT_STOPPED
} rt_state;

struct rt_instance {
    rt_revision  *rev;
    rt_instance  *next;             /* in rev->instances */
    char          id[17];           /* random hex; the store record name */
    rt_state      state;
    bool          ready;            /* readiness verdict (ep_lock) */
    _Atomic int   inflight;         /* leases held (acquire/release) */
    int           failures;         /* failed calls in a row (ep_lock) */
    int           ejections;        /* times taken out for failing */
    uint64_t      ejected_until_ms; /* monotonic; skipped until then */
    uint64_t      idle_since_ms;    /* monotonic: inflight last became 0 */

    uv_process_t  proc;             /* the shim; open from spawn to close */
    uv_timer_t    timer;            /* startup probe tick, backoff, grace */
    uv_timer_t    check_timer;      /* readiness and liveness ticks */
    struct rt_probe_run *startup_run, *ready_run, *live_run;
    int           startup_fails, ready_fails, ready_oks, live_fails;
    uint64_t      next_ready_ms, next_live_ms;
    struct rt_stdio *out, *err;     /* captured stdout/stderr of a spawn */
    bool          proc_open, check_open, exited, timed_out, recorded;
    int           fails_since_ready; /* exits/failed starts in a row */
    bool          startup_failed;   /* the last failure was the probe */
    char          last_line[160];   /* latest stderr (else stdout) line */
    int           open_handles;     /* freed when STOPPED and this is 0 */
    char          last_probe_error[96];

    int           pid;              /* shim pid == process group id */
    int           port;
    uint64_t      proc_start;       /* /proc starttime of the shim */
    uint64_t      spawn_ms;         /* monotonic, at spawn */
    uint64_t      ready_ms;         /* monotonic, when it became ready */
    uint64_t      exit_ms;
    uint64_t      drain_ms;         /* monotonic, when draining began */

    uint64_t      restarts;
    uint64_t      backoff_ms;       /* delay of the next restart */
    uint64_t      last_delay_ms;    /* delay of the latest restart */
    bool          has_exit;
    int           exit_code;        /* -1 when it died of a signal */
    int           exit_signal;      /* 0 when it exited */
    int64_t       exit_time_ns;
};

/* Per-revision metric series. */
typedef struct rt_rev_metrics {
    kb_counter   *requests[6];      /* 1xx-5xx by class [1..5], errors [0] */
    kb_histogram *latency;
    kb_gauge     *inflight;
    kb_gauge     *instances;        /* ready instances */
    kb_counter   *cold_starts;
    kb_counter   *restarts;
} rt_rev_metrics;

struct rt_revision {
    rt_service   *svc;
    rt_revision  *next;             /* in svc->revisions, oldest first */
    char         *name;             /* "hello-00002-k7q" */
    json_t       *template_json;    /* the stored template (own ref) */
    rt_template   tpl;
    rt_instance  *instances;        /* every state; ep_lock to change */
    size_t        ninstances;       /* allocated, including stopping ones */

    /* routing: ep_lock */
    int           percent;          /* share of the split */
    bool          tagged;
    bool          retired;          /* gone from the document */
    kb_rt_waiter *wait_head, *wait_tail;
    size_t        nwaiting;
    _Atomic int   inflight;         /* leases over all its instances */
    _Atomic unsigned rr;            /* ties between instances go round */

    /* scaling and health: the loop thread */
    int           desired;
    bool          ever_ready;
    bool          failed;           /* crash loop / startup failure */
    uint64_t      ready_since_ms;   /* condition transitions */
    char          reason[32];       /* Ready condition when not ready */
    char          message[256];
    int64_t       transition_ns;
    uint64_t      cold_starts;
    uint64_t      restarts;
    rt_rev_metrics m;
};

typedef struct rt_tag {
    char         *tag;
    rt_revision  *rev;
} rt_tag;

struct rt_service {
    kb_runtime   *rt;
    rt_service   *next;             /* in rt->services; NULL once removed */
    char         *project, *name;
    char         *label;            /* "P/S": logs and metrics */
    char         *parent;           /* "projects/P/services/S": records */
    json_t       *doc;              /* as applied (a deep copy) */
    rt_revision  *revisions;        /* oldest first; ep_lock to change */
    rt_revision  *latest;           /* newest of the document */
    rt_revision  *latest_ready;     /* newest ready one: where the
                                       latestRevision share goes (ep_lock) */
    int           latest_pct;       /* that share */
    size_t        nrevisions;       /* allocated, including retired */
    json_t       *traffic;          /* resolved targets, for status */
    struct rt_tag *tags;            /* ep_lock */
    size_t        ntags;
    struct rt_log *log;             /* captured output */
    bool          removed;
    kb_counter   *restarts_total;
    kb_gauge     *running;
};

/*
 * How instances are run: the executor.  The local one (supervisor.c) runs
 * each instance as a process group under `kiban __shim`; another (a
 * Kubernetes Deployment per revision, pods as instances) would implement
 * the same calls.  The runtime (runtime.c) owns revisions, traffic,
 * scaling and draining, and only ever calls these.
 */
typedef struct rt_executor {
    const char *name;
    /* Create an instance of rev's template, link it to rev and start it.
     * It reports back through kb__rt_instance_changed (ready, not ready,
     * exited, restarted) and kb__rt_instance_freed.  KB_ENOMEM. */
    int     (*add)(rt_revision *rev);
    /* Stop it (SIGTERM, grace, SIGKILL); it frees itself once stopped and
     * no lease holds it. */
    void    (*stop)(rt_instance *in);
    /* {"id","pid","port","state",…}: new reference or NULL. */
    json_t *(*status)(const rt_instance *in);
} rt_executor;

extern const rt_executor kb__rt_local_executor;

struct kb_runtime {
    uv_loop_t    *loop;
    kb_store     *store;            /* NULL: no instance records */
    const rt_executor *exec;
    char         *self_exe;
    char         *run_as;           /* NULL: the server's user */
    char        **run_as_env;       /* its HOME, USER, LOGNAME; or NULL */
#define KB_RT_MAX_CGROUPS_LEFT 256
    char          cgroups_left[KB_RT_MAX_CGROUPS_LEFT][17]; /* to remove */
    size_t        ncgroups_left;
    char         *domain;           /* URL base */
    int           url_port;
    size_t        log_bytes;        /* captured output per service */
    int           watch_fd[2];      /* [0] every shim inherits; [1] only we
                                       hold: EOF on [0] = the server died */
    char        **base_env;         /* inherited from the server */
    /* Guards what the data path reads and changes from other threads:
     * service, revision and instance lists, instance state, ready and
     * port, the split, tags and wait queues.  The loop thread takes it
     * to change them, never to read them. */
    pthread_mutex_t ep_lock;
    rt_service   *services;
    size_t        nservices;        /* allocated, including removed ones */
    int           self_pid;
    uint64_t      self_start;
    char          boot_id[40];

    uv_async_t    kick;             /* the data path asks for a scale pass */
    _Atomic bool  kicked;
    uv_timer_t    scale_timer;      /* periodic scale-in and drain pass */

    uint64_t      stop_grace_ms;    /* 0: each revision's own */
    uint64_t      start_timeout_ms;
    uint64_t      backoff_min_ms, backoff_max_ms, backoff_reset_ms;
    uint64_t      shim_grace_ms;
    uint64_t      scale_period_ms;

    bool          shutting_down;
    uv_timer_t    done_timer;       /* closed last; its close frees rt */
    void        (*done)(void *data);
    void         *done_data;
};

/* supervisor.c: the local executor's instance life cycle. */

const char *kb__rt_state_name(rt_state s);
/* {"code":N,"time":…} or {"signal":N,"time":…}, or null before any exit. */
json_t *kb__rt_exit_json(const rt_instance *in);

/* Every state change goes through here (gauges, ep_lock). */
void kb__rt_set_state(rt_instance *in, rt_state s);
/* Free a STOPPED instance whose handles are closed once no lease holds
 * it; no-op otherwise. */
void kb__rt_instance_try_free(rt_instance *in);

/* scale.c: routing and scaling (loop thread unless noted). */

int  kb__rt_scale_init(kb_runtime *rt);
/* Close the scale handles; cb when closed. */
void kb__rt_scale_close(kb_runtime *rt);
/* Bring a revision to the instances it needs: start, drain, stop. */
void kb__rt_scale_revision(rt_revision *rev);
/* Notify every waiter of rev (it went away, failed, or we stop). */
void kb__rt_wake_all(rt_revision *rev);
/* Is the instance taking requests? (ep_lock or loop thread) */
bool kb__rt_serving(const rt_instance *in);
/* Does rev take a share of the split or have a tag? (ep_lock or loop) */
bool kb__rt_routable(const rt_revision *rev);
/* Point the latestRevision share at the newest ready revision (the newest
 * one while none is ready).  Loop thread. */
void kb__rt_latest_ready_update(rt_service *svc);
/* Ready condition of a revision as JSON (new reference). */
json_t *kb__rt_revision_condition(const rt_revision *rev);

/* runtime.c: called by the executor. */

/* An instance became ready or not ready, exited, or restarted: rescale
 * its revision, wake waiters. */
void kb__rt_instance_changed(rt_instance *in);
/* An instance was freed: its revision (and service) may be done. */
void kb__rt_instance_freed(rt_revision *rev);
/* Can this instance be freed (no lease holds it)? */
bool kb__rt_instance_unleased(const rt_instance *in);

/* proc.c: /proc helpers (Linux). */

/* Fields of /proc/PID/stat.  0, or -errno (-ENOENT: no such process). */
int  kb__proc_stat(int pid, char *state, int *pgrp, uint64_t *starttime);
/* This boot's id (/proc/sys/kernel/random/boot_id); "" if unreadable. */
void kb__proc_boot_id(char *out, size_t outlen);
/* Does `pid` exist and have started at `starttime` (so it is the same
 * process, not a recycled pid)?  *zombie (may be NULL) tells whether it
 * has exited but not been reaped yet. */
bool kb__proc_same(int pid, uint64_t starttime, bool *zombie);

/* Test-only: shorten the timings.  Any 0 argument keeps the current
 * value. */
void kb__runtime_set_timing(kb_runtime *rt, uint64_t stop_grace_ms,
                            uint64_t start_timeout_ms, uint64_t shim_grace_ms);

#endif
