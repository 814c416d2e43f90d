/*
 * limits.h - per-instance memory and CPU limits: cgroup v2 when its memory
 * or cpu controller can be delegated to us, else cgroup v1, else rlimits.
 * The shim creates one cgroup per instance; the server reaps leftovers.
 */
#ifndef KB_RUNTIME_LIMITS_H
#define KB_RUNTIME_LIMITS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define KB_LIM_PARENT       "kiban"     /* next to the server's cgroup */
#define KB_LIM_MAX_ID       64          /* [A-Za-z0-9_-], instance ids */
#define KB_LIM_CPU_PERIOD   100000      /* us; cpu.max / cfs_period_us */

typedef enum kb_lim_mode {
    KB_LIM_RLIMIT = 0,                  /* no usable cgroup controller */
    KB_LIM_CGROUP1,
    KB_LIM_CGROUP2
} kb_lim_mode;

typedef struct kb_limits {
    uint64_t memory;                    /* bytes; 0: no limit */
    uint32_t cpu_millis;                /* 1000 = one CPU; 0: no limit */
} kb_limits;

/*
 * What this machine allows, detected once per process from
 * /proc/self/mountinfo and /proc/self/cgroup (thread-safe).  *memory and
 * *cpu (either may be NULL) tell whether each limit is enforced: in rlimit
 * mode memory is (as RLIMIT_AS, address space, which is larger than RSS)
 * and CPU is not.
 */
kb_lim_mode kb_limits_mode(bool *memory, bool *cpu);
/* The mode's name: "cgroup2", "cgroup1" or "rlimit". */
const char *kb_limits_mode_name(kb_lim_mode mode);
/* {"mode": "cgroup2"|"cgroup1"|"rlimit", "memory": bool, "cpu": bool}:
 * a new reference, NULL when out of memory. */
json_t *kb_limits_describe(void);

/* Is `id` usable as a cgroup name (1..KB_LIM_MAX_ID of [A-Za-z0-9_-])? */
bool kb_limits_id_valid(const char *id);

/*
 * Create the instance cgroup `id` under the kiban parent (created on
 * demand, with the controllers enabled for its children on cgroup v2) and
 * set `lim` on it (NULL or zero fields: no limit).  An existing cgroup of
 * that name is reused.  KB_EINVAL for a bad id, -EOPNOTSUPP in rlimit mode,
 * else -errno of the write that failed (the cgroup is removed again).
 */
int  kb_limits_cgroup_create(const char *id, const kb_limits *lim);
/* Move `pid` (0: the caller) into cgroup `id`.  0 or -errno. */
int  kb_limits_cgroup_join(const char *id, pid_t pid);
/* The pids in cgroup `id` (at most max of them, the caller's own left out):
 * how many were stored, 0 when it is empty or gone, or -errno. */
int  kb_limits_cgroup_pids(const char *id, pid_t *pids, size_t max);
/*
 * Send `sig` to every process in cgroup `id` except the caller (sig 0:
 * only count them).  Returns how many there were (0: empty or gone), or
 * -errno when it cannot be read.  Processes forked meanwhile are caught by
 * calling again.
 */
int  kb_limits_cgroup_signal(const char *id, int sig);
/*
 * Kill everything in cgroup `id` (cgroup.kill on v2 when the kernel has it,
 * else SIGKILL each member until none is left) and remove it, waiting up to
 * timeout_ms for the members to go; zombies of the caller's own children
 * must be reaped by the caller meanwhile (the members here are normally
 * not its children).  0 (also when it did not exist), KB_ETIMEDOUT, or
 * -errno from rmdir.  Blocks: boot time or the shim only.
 */
int  kb_limits_cgroup_kill(const char *id, long timeout_ms);
/* Remove the empty cgroup `id`.  0 (also when it did not exist), KB_EBUSY
 * when processes are still in it, or -errno. */
int  kb_limits_cgroup_remove(const char *id);
/*
 * The boot reaper, for instance cgroups under the kiban parent.  Without
 * flags: kill and remove those named in ids[0..n).  KB_LIM_REAP_EXCEPT:
 * all of them except those named.  KB_LIM_REAP_EMPTY: only remove the ones
 * without processes that are older than KB_LIM_REAP_MIN_AGE seconds (one
 * a shim has just created may not have its process yet); nothing is
 * killed.  Another kiban on this machine with its own store shares the
 * parent, so killing "all but ours" (EXCEPT without EMPTY) is only right
 * when every kiban here shares one store.  Returns how many cgroups were
 * removed, or -errno when the parent cannot be read (0 when it does not
 * exist).  Blocks up to 2 s per cgroup still emptying.
 */
#define KB_LIM_REAP_EXCEPT   1u
#define KB_LIM_REAP_EMPTY    2u
#define KB_LIM_REAP_MIN_AGE  10
int  kb_limits_reap(const char *const *ids, size_t n, unsigned flags);

/* rlimit mode: RLIMIT_AS = lim->memory in the calling process (a child
 * before exec).  CPU is not enforced this way.  0 or -errno. */
int  kb_limits_rlimit_apply(const kb_limits *lim);

/* Test-only: force the mode (detection still fills the paths; a mode the
 * machine lacks degrades to rlimit) and the parent's name (NULL: the
 * default).  Call before anything else in the process. */
void kb__lim_force(int mode, const char *parent);

#endif
