/*
 * shim.c - `kiban __shim`: the small supervisor between the server and one
 * instance.  It leads the instance's own session and process group, puts
 * the service in the instance's cgroup with its limits, runs it (as another
 * user, in its working directory), relays stop signals to it, and kills
 * everything it started when the server dies, even by SIGKILL, so no
 * instance outlives kiban.  See docs/internals/runtime.md.
 *
 *   kiban __shim [--watch-fd N] [--server-pid N] [--grace-ms N]
 *                [--name TEXT] [--cgroup ID] [--memory BYTES]
 *                [--cpu MILLIS] [--user NAME] [--workdir DIR]
 *                -- COMMAND [ARG…]
 *
 * --watch-fd    read end of a pipe whose write end only the server holds:
 *               EOF means the server is gone (the reliable signal).
 * --server-pid  the server's pid: with PR_SET_PDEATHSIG (SIGHUP), the
 *               early signal; getppid() != it means the server is gone.
 * --grace-ms    how long the group gets between SIGTERM and SIGKILL when
 *               the shim itself has to stop it (default 3000).
 * --cgroup      the instance id: the service runs in cgroup kiban/ID
 *               (created here, removed when everything in it is gone).
 * --memory      memory limit in bytes (cgroup, else RLIMIT_AS).
 * --cpu         CPU limit in thousandths of a CPU (cgroup only).
 * --user        run COMMAND as this user (name or uid) when the shim is
 *               root; ignored otherwise.
 * --workdir     the service's working directory.
 *
 * Signals: TERM and INT are relayed to the service's processes; USR1
 * means "kill it now": SIGKILL to everything, cgroup removed, then exit.
 * The server uses USR1 rather than SIGKILL to the group, which would kill
 * the shim before it can clear the cgroup.
 *
 * Exit status: the service's (128+N when signal N killed it); 127/126 when
 * COMMAND cannot be run (126 also for a working directory it cannot enter);
 * 125 when the shim itself cannot start it.
 */
#include "runtime/runtime_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/time.h"
#include "runtime/limits.h"

#define SHIM_EXIT_USAGE 125
#define SHIM_EXIT_NOEXEC 126
#define SHIM_KILL_WAIT_MS 2000      /* after SIGKILL, for reaping */
#define SHIM_MAX_PIDS 4096          /* cgroup members read per sweep */
#define SHIM_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

extern char **environ;

typedef struct shim {
    const char *name;           /* for messages */
    int         watch_fd;       /* -1: not watching */
    long        server_pid;     /* 0: not watching */
    long        grace_ms;
    int         sfd;            /* signalfd: TERM, INT, HUP, CHLD, USR1 */
    pid_t       child;          /* the service */
    int         status;         /* its wait status, once child_exited */
    bool        child_exited;
    bool        term_sent;      /* the group already got a SIGTERM */

    const char *cgroup;         /* instance id; NULL: no cgroup */
    bool        in_cgroup;      /* the cgroup exists: the child joins it */
    bool        cg_memory;      /* and it enforces the memory limit */
    kb_limits   lim;
    const char *user;           /* NULL: keep our user */
    bool        switch_user;    /* we are root and user is set */
    uid_t       uid;
    gid_t       gid;
    char        user_name[64];  /* for initgroups; "" when unknown */
    const char *workdir;
} shim;

/* One line on stderr, one write(2), so lines never interleave. */
static void
shim_say(const shim *sh, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    int n = snprintf(line, sizeof(line), "kiban shim[%s]: ", sh->name);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

static int
parse_long(const char *s, long min, long max, long *out)
{
    char *end;

    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int
parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/*
 * Send `sig` to every other member of our process group (0: just count
 * them).  Members are our descendants (the group lives in our own
 * session), so a pid read here cannot be recycled before the kill()
 * unless the kernel wrapped its pid space in between.
 */
static int
group_others(int sig)
{
    pid_t self = getpid(), pg = getpgrp();
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        long pid;
        int pgrp;
        if (parse_long(e->d_name, 1, 1L << 30, &pid) < 0 || pid == self)
            continue;
        if (kb__proc_stat((int)pid, NULL, &pgrp, NULL) < 0 || pgrp != pg)
            continue;
        n++;
        if (sig != 0)
            kill((pid_t)pid, sig);
    }
    closedir(d);
    return n;
}

/*
 * The service's processes that left our group (setsid(), setpgid()) but
 * not its cgroup: signal them (sig 0: count).  Group members are left to
 * group_others() or kill(0, …), so each process gets a signal once.
 */
static int
escapees(const shim *sh, int sig)
{
    static pid_t pids[SHIM_MAX_PIDS];
    pid_t pg = getpgrp();
    int k = 0, n = kb_limits_cgroup_pids(sh->cgroup, pids, SHIM_MAX_PIDS);

    for (int i = 0; i < n; i++) {
        int pgrp;
        if (kb__proc_stat((int)pids[i], NULL, &pgrp, NULL) < 0 || pgrp == pg)
            continue;
        k++;
        if (sig != 0)
            kill(pids[i], sig);
    }
    return k;
}

/*
 * Everything the service started: our group, and with a cgroup the
 * members that left the group.  `sig` 0 only counts.  SIGKILL goes to the
 * whole cgroup at once (cgroup.kill on v2), so forks cannot outrun it.
 */
static int
members(const shim *sh, int sig)
{
    int n = group_others(sig);

    if (sh->in_cgroup) {
        if (sig == SIGKILL)
            (void)kb_limits_cgroup_signal(sh->cgroup, SIGKILL);
        n += escapees(sh, sig == SIGKILL ? 0 : sig);
    }
    return n;
}

/* Reap every exited child: the service and orphans we adopted as
 * subreaper. */
static void
reap(shim *sh)
{
    pid_t pid;
    int st;

    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (pid == sh->child) {
            sh->status = st;
            sh->child_exited = true;
        }
    }
}

static bool
server_gone(const shim *sh)
{
    if (sh->server_pid > 0 && getppid() != (pid_t)sh->server_pid)
        return true;
    if (sh->watch_fd >= 0) {
        struct pollfd p = { .fd = sh->watch_fd, .events = POLLIN };
        if (poll(&p, 1, 0) > 0)
            return true;        /* EOF (nobody ever writes to it) */
    }
    return false;
}

/* Wait up to ms for the service's processes to go, reaping as we go. */
static bool
wait_group_empty(shim *sh, long ms)
{
    uint64_t deadline = kb_time_mono_ms() + (uint64_t)ms;
    struct signalfd_siginfo si;

    for (;;) {
        reap(sh);
        if (members(sh, 0) == 0)
            return true;
        uint64_t now = kb_time_mono_ms();
        if (now >= deadline)
            return false;
        struct pollfd p = { .fd = sh->sfd, .events = POLLIN };
        long left = (long)(deadline - now);
        (void)poll(&p, 1, left < 20 ? (int)left : 20);
        while (read(sh->sfd, &si, sizeof(si)) == sizeof(si))
            ;                   /* SIGCHLD: reaped above; others: moot */
    }
}

/* SIGKILL whatever is left (again and again: a member may fork meanwhile),
 * then remove the cgroup. */
static void
kill_rest(shim *sh)
{
    uint64_t deadline = kb_time_mono_ms() + SHIM_KILL_WAIT_MS;

    do {
        members(sh, SIGKILL);
    } while (!wait_group_empty(sh, 50) && kb_time_mono_ms() < deadline);
    if (sh->in_cgroup) {
        int rc = kb_limits_cgroup_remove(sh->cgroup);
        if (rc < 0)
            shim_say(sh, "cgroup %s not removed: %s", sh->cgroup,
                     strerror(-rc));
        sh->in_cgroup = false;
    }
}

static int
exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

/* The service exited: clear what it left behind, then report. */
static int
finish(shim *sh)
{
    if (members(sh, 0) > 0) {
        if (!sh->term_sent)
            members(sh, SIGTERM);
        if (!wait_group_empty(sh, sh->grace_ms))
            kill_rest(sh);
    }
    if (sh->in_cgroup)
        kill_rest(sh);          /* empty by now: only removes it */
    return exit_code(sh->status);
}

/* The server died: stop everything, then go. */
static void __attribute__((noreturn))
stop_orphaned(shim *sh)
{
    shim_say(sh, "server gone, stopping the instance (pid %ld)",
             (long)sh->child);
    if (!sh->term_sent)
        members(sh, SIGTERM);
    sh->term_sent = true;
    if (!wait_group_empty(sh, sh->grace_ms) || sh->in_cgroup)
        kill_rest(sh);
    kill(0, SIGKILL);           /* the group, this shim included */
    _exit(sh->child_exited ? exit_code(sh->status) : 1);
}

static void
on_signals(shim *sh)
{
    struct signalfd_siginfo si;

    while (read(sh->sfd, &si, sizeof(si)) == sizeof(si)) {
        if ((pid_t)si.ssi_pid == getpid() && si.ssi_signo != SIGCHLD)
            continue;           /* the echo of our own kill(0, …) */
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap(sh);
            break;
        case SIGHUP:            /* PR_SET_PDEATHSIG; otherwise ignored */
            if (server_gone(sh))
                stop_orphaned(sh);
            break;
        case SIGTERM:
        case SIGINT:
            if (server_gone(sh))
                stop_orphaned(sh);
            kill(0, (int)si.ssi_signo);     /* relay to the group */
            if (sh->in_cgroup)
                escapees(sh, (int)si.ssi_signo);
            if (si.ssi_signo == SIGTERM)
                sh->term_sent = true;
            break;
        case SIGUSR1:           /* kill now; the exit follows in the loop */
            sh->term_sent = true;
            kill_rest(sh);
            break;
        }
    }
}

/* --user: a name, or a uid without a passwd entry.  Before fork, so the
 * child needs no NSS lookups. */
static int
resolve_user(shim *sh)
{
    struct passwd *pw = getpwnam(sh->user);
    long v;

    if (pw == NULL && parse_long(sh->user, 0, 0x7fffffffL, &v) == 0) {
        pw = getpwuid((uid_t)v);
        if (pw == NULL) {
            sh->uid = (uid_t)v;
            sh->gid = (gid_t)v;
            return 0;
        }
    }
    if (pw == NULL)
        return -1;
    sh->uid = pw->pw_uid;
    sh->gid = pw->pw_gid;
    snprintf(sh->user_name, sizeof(sh->user_name), "%s", pw->pw_name);
    return 0;
}

/*
 * The executable, opened while we are still root: the user we switch to
 * may not be allowed to traverse the directory it lives in.  Looked up on
 * PATH like execvp.  -1 when not found or not openable (the caller then
 * uses execvp, which reports why).  A script keeps its fd across exec:
 * the kernel hands the interpreter /dev/fd/N.
 */
static int
open_exe(const char *cmd)
{
    char path[PATH_MAX];
    const char *p = getenv("PATH");
    int fd = -1;

    if (strchr(cmd, '/') != NULL) {
        fd = open(cmd, O_RDONLY | O_CLOEXEC);
    } else {
        if (p == NULL)
            p = SHIM_DEFAULT_PATH;
        while (fd < 0) {
            size_t n = strcspn(p, ":");
            int k = snprintf(path, sizeof(path), "%.*s%s%s", (int)n, p,
                             n > 0 ? "/" : "", cmd);
            if (k > 0 && (size_t)k < sizeof(path)) {
                fd = open(path, O_RDONLY | O_CLOEXEC);
                struct stat st;
                if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)
                                || (st.st_mode & 0111) == 0)) {
                    close(fd);
                    fd = -1;
                }
            }
            if (p[n] == '\0')
                break;
            p += n + 1;
        }
    }
    char magic[2];
    if (fd >= 0 && pread(fd, magic, 2, 0) == 2 && magic[0] == '#'
        && magic[1] == '!')
        (void)fcntl(fd, F_SETFD, 0);
    return fd;
}

static int
drop_privileges(const shim *sh)
{
    if (sh->user_name[0] != '\0' ? initgroups(sh->user_name, sh->gid) < 0
                                 : setgroups(0, NULL) < 0)
        return -1;
    if (setgid(sh->gid) < 0 || setuid(sh->uid) < 0)
        return -1;
    /* It must have stuck: no way back to root. */
    if (getuid() != sh->uid || geteuid() != sh->uid || getgid() != sh->gid
        || getegid() != sh->gid || (sh->uid != 0 && setuid(0) == 0)) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

/* In the forked child: limits, working directory, user, exec. */
static void __attribute__((noreturn))
run_service(shim *sh, char **cmd)
{
    int rc;

    if (sh->in_cgroup && (rc = kb_limits_cgroup_join(sh->cgroup, 0)) < 0) {
        shim_say(sh, "cannot join cgroup %s: %s", sh->cgroup, strerror(-rc));
        _exit(SHIM_EXIT_USAGE);
    }
    if (!sh->cg_memory && (rc = kb_limits_rlimit_apply(&sh->lim)) < 0) {
        shim_say(sh, "setrlimit: %s", strerror(-rc));
        _exit(SHIM_EXIT_USAGE);
    }
    if (sh->workdir != NULL && chdir(sh->workdir) < 0) {
        shim_say(sh, "cannot change to working directory %s: %s",
                 sh->workdir, strerror(errno));
        _exit(SHIM_EXIT_NOEXEC);
    }
    int fd = open_exe(cmd[0]);
    if (sh->switch_user && drop_privileges(sh) < 0) {
        shim_say(sh, "cannot run as user %s: %s", sh->user, strerror(errno));
        _exit(SHIM_EXIT_USAGE);
    }
    if (fd >= 0)
        execveat(fd, "", cmd, environ, AT_EMPTY_PATH);
    else
        execvp(cmd[0], cmd);
    int e = errno;
    shim_say(sh, "cannot run %s: %s", cmd[0], strerror(e));
    _exit(e == ENOENT ? 127 : SHIM_EXIT_NOEXEC);
}

/* Create the instance cgroup; without one (or without its memory
 * controller), memory falls back to RLIMIT_AS in the child. */
static void
setup_cgroup(shim *sh)
{
    bool mem;

    if (sh->cgroup == NULL || kb_limits_mode(&mem, NULL) == KB_LIM_RLIMIT)
        return;
    int rc = kb_limits_cgroup_create(sh->cgroup, &sh->lim);
    if (rc < 0) {
        shim_say(sh, "cgroup %s not created (%s): memory limited by "
                 "RLIMIT_AS, CPU not limited", sh->cgroup, strerror(-rc));
        return;
    }
    sh->in_cgroup = true;
    sh->cg_memory = mem;
}

/* Parse one `--opt value`; false if unknown or bad. */
static bool
parse_opt(shim *sh, const char *opt, const char *val)
{
    long v;
    uint64_t u;

    if (strcmp(opt, "--name") == 0) {
        sh->name = val;
    } else if (strcmp(opt, "--watch-fd") == 0
               && parse_long(val, 0, 1 << 20, &v) == 0) {
        sh->watch_fd = (int)v;
    } else if (strcmp(opt, "--server-pid") == 0
               && parse_long(val, 1, 1L << 30, &v) == 0) {
        sh->server_pid = v;
    } else if (strcmp(opt, "--grace-ms") == 0
               && parse_long(val, 0, 3600 * 1000, &v) == 0) {
        sh->grace_ms = v;
    } else if (strcmp(opt, "--cgroup") == 0 && kb_limits_id_valid(val)) {
        sh->cgroup = val;
    } else if (strcmp(opt, "--memory") == 0
               && parse_u64(val, UINT64_MAX / 2, &u) == 0) {
        sh->lim.memory = u;
    } else if (strcmp(opt, "--cpu") == 0
               && parse_u64(val, 1000000, &u) == 0) {
        sh->lim.cpu_millis = (uint32_t)u;
    } else if (strcmp(opt, "--user") == 0 && *val != '\0') {
        sh->user = val;
    } else if (strcmp(opt, "--workdir") == 0 && *val != '\0') {
        sh->workdir = val;
    } else {
        return false;
    }
    return true;
}

int
kb_runtime_shim_main(int argc, char **argv)
{
    shim sh = { .name = "?", .watch_fd = -1, .grace_ms = 3000, .sfd = -1 };
    int i = 1;

    if (i < argc && strcmp(argv[i], "__shim") == 0)
        i++;
    for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc || !parse_opt(&sh, argv[i], argv[i + 1]))
            goto usage;
    }
    if (i + 1 >= argc)
        goto usage;
    char **cmd = argv + i + 1;

    if (sh.user != NULL && geteuid() == 0) {
        if (resolve_user(&sh) < 0) {
            shim_say(&sh, "unknown user %s", sh.user);
            return SHIM_EXIT_USAGE;
        }
        sh.switch_user = true;
    }

    /* Lead a session and group of our own (libuv's UV_PROCESS_DETACHED has
     * usually done it before exec). */
    if (getpgrp() != getpid() && setsid() < 0) {
        shim_say(&sh, "setsid: %s", strerror(errno));
        return SHIM_EXIT_USAGE;
    }
    /* Orphans of the service come to us, so we can reap them. */
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1);

    /* Signals arrive on a signalfd from here on, none lost before fork. */
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_BLOCK, &mask, &old);
    signal(SIGPIPE, SIG_IGN);   /* a closed stderr must not kill us */
    sh.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sh.sfd < 0) {
        shim_say(&sh, "signalfd: %s", strerror(errno));
        return SHIM_EXIT_USAGE;
    }
    if (sh.watch_fd >= 0 && fcntl(sh.watch_fd, F_SETFD, FD_CLOEXEC) < 0)
        sh.watch_fd = -1;
    /*
     * The kernel sends SIGHUP when the thread that forked us dies.  If the
     * server died before this prctl, we were already reparented: check.
     */
    if (sh.server_pid > 0)
        (void)prctl(PR_SET_PDEATHSIG, SIGHUP);
    if (server_gone(&sh)) {
        shim_say(&sh, "server gone before the instance started");
        return SHIM_EXIT_USAGE;
    }
    setup_cgroup(&sh);

    sh.child = fork();
    if (sh.child < 0) {
        shim_say(&sh, "fork: %s", strerror(errno));
        if (sh.in_cgroup)
            (void)kb_limits_cgroup_remove(sh.cgroup);
        return SHIM_EXIT_USAGE;
    }
    if (sh.child == 0) {
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        run_service(&sh, cmd);
    }

    for (;;) {
        struct pollfd p[2] = { { .fd = sh.sfd, .events = POLLIN },
                               { .fd = sh.watch_fd, .events = POLLIN } };
        if (poll(p, sh.watch_fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR) {
            shim_say(&sh, "poll: %s", strerror(errno));
            stop_orphaned(&sh);
        }
        if (sh.watch_fd >= 0 && p[1].revents != 0)
            stop_orphaned(&sh);
        if (p[0].revents & POLLIN)
            on_signals(&sh);
        if (sh.child_exited)
            return finish(&sh);
    }

usage:
    fprintf(stderr, "usage: kiban __shim [--watch-fd N] [--server-pid N] "
            "[--grace-ms N] [--name TEXT] [--cgroup ID] [--memory BYTES] "
            "[--cpu MILLIS] [--user NAME] [--workdir DIR] "
            "-- COMMAND [ARG...]\n");
    return SHIM_EXIT_USAGE;
}
