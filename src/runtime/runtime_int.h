/*
 * runtime_int.h - what the runtime's files share: the service and instance
 * structures, the supervisor calls runtime.c makes, /proc helpers the
 * server and the shim both use, and test-only knobs.  Not for other
 * modules: they use runtime.h.
 */
#ifndef KB_RUNTIME_INT_H
#define KB_RUNTIME_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/metrics.h"
#include "runtime/runtime.h"

#define KB_RT_MAX_INSTANCES  64      /* per service, from the spec */
#define KB_RT_MAX_SERVICES   4096    /* per runtime */
#define KB_RT_MAX_ARGS       256
#define KB_RT_MAX_ENV        256
#define KB_RT_MAX_STRING     32768   /* any one command/arg/env value */

typedef struct rt_service  rt_service;
typedef struct rt_instance rt_instance;

/*
 * An instance's life:
 *
 *   STARTING --port accepts--> RUNNING
 *      |  \--exit/timeout--> BACKOFF --delay--> STARTING
 *      |                      (RUNNING --exit--> BACKOFF as well)
 *   stop(): STARTING/RUNNING --> STOPPING --exit--> STOPPED (handles close,
 *           BACKOFF ------------------------------> STOPPED  then freed)
 */
typedef enum rt_state {
    RT_STARTING = 0,
    RT_RUNNING,
    RT_BACKOFF,
    RT_STOPPING,
    RT_STOPPED
} rt_state;

struct rt_instance {
    rt_service   *svc;
    rt_instance  *next;             /* in svc->instances */
    char          id[17];           /* random hex; the store record name */
    uint64_t      generation;       /* svc->generation it runs */
    rt_state      state;

    uv_process_t  proc;             /* the shim; open from spawn to close */
    uv_timer_t    timer;            /* probe tick, backoff, stop grace */
    uv_tcp_t      probe;            /* readiness connect, one at a time */
    uv_connect_t  probe_req;
    bool          proc_open, probe_open, exited, timed_out, recorded;
    int           open_handles;     /* freed when STOPPED and this is 0 */

    int           pid;              /* shim pid == process group id */
    int           port;
    uint64_t      proc_start;       /* /proc starttime of the shim */
    uint64_t      spawn_ms;         /* monotonic, at spawn */
    uint64_t      exit_ms;

    uint64_t      restarts;
    uint64_t      backoff_ms;       /* delay of the next restart */
    uint64_t      last_delay_ms;    /* delay of the latest restart */
    bool          has_exit;
    int           exit_code;        /* -1 when it died of a signal */
    int           exit_signal;      /* 0 when it exited */
    int64_t       exit_time_ns;
};

struct rt_service {
    kb_runtime   *rt;
    rt_service   *next;             /* in rt->services; NULL once removed */
    char         *project, *name;
    char         *label;            /* "P/S": logs and metrics */
    char         *parent;           /* "projects/P/services/S": records */
    json_t       *spec;             /* as applied (a deep copy) */
    uint64_t      generation;       /* bumped when command/args/env change */
    int           desired;
    char        **argv;             /* command + args, NULL-terminated */
    char        **env;              /* the spec's "K=V", NULL-terminated */
    rt_instance  *instances;
    size_t        ninstances;       /* allocated, including stopping ones */
    bool          removed;
    kb_counter   *restarts_total;
    kb_gauge     *running;
};

struct kb_runtime {
    uv_loop_t    *loop;
    kb_store     *store;            /* NULL: no instance records */
    char         *self_exe;
    int           watch_fd[2];      /* [0] every shim inherits; [1] only we
                                       hold: EOF on [0] = the server died */
    char        **base_env;         /* inherited from the server */
    /* Guards what kb_runtime_endpoint() reads from other threads: the
     * service and instance lists, instance state and port, generations.
     * The loop thread takes it to change them, never to read them. */
    pthread_mutex_t ep_lock;
    rt_service   *services;
    size_t        nservices;        /* allocated, including removed ones */
    int           self_pid;
    uint64_t      self_start;
    char          boot_id[40];

    uint64_t      stop_grace_ms;
    uint64_t      start_timeout_ms;
    uint64_t      probe_interval_ms;
    uint64_t      backoff_min_ms, backoff_max_ms, backoff_reset_ms;
    uint64_t      shim_grace_ms;

    bool          shutting_down;
    uv_timer_t    done_timer;       /* closed last; its close frees rt */
    void        (*done)(void *data);
    void         *done_data;
};

/* supervisor.c: the instance life cycle. */

/* Allocate an instance of svc's current generation, link it and start
 * it.  KB_ENOMEM. */
int  kb__rt_instance_add(rt_service *svc);
/* Begin stopping (see the state diagram); frees itself when done. */
void kb__rt_instance_stop(rt_instance *in);
const char *kb__rt_state_name(rt_state s);
/* {"id","pid","port","state","restarts","lastExit","backoffMs"}; new
 * reference, NULL when out of memory. */
json_t *kb__rt_instance_status(const rt_instance *in);
/* {"code":N,"time":…} or {"signal":N,"time":…}, or null before any exit. */
json_t *kb__rt_exit_json(const rt_instance *in);

/* runtime.c: called by the supervisor. */

/* An instance became running, or was freed: reconcile its service. */
void kb__rt_service_changed(rt_service *svc);
/* An instance was freed: the service (and the runtime) may be done. */
void kb__rt_instance_freed(rt_service *svc);

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
