/*
 * shim.c - `kiban __shim`: the small supervisor between the server and one
 * instance.  It leads the instance's own session and process group, runs
 * the service in that group, relays stop signals to it, and kills the whole
 * group when the server dies, even by SIGKILL, so no instance outlives
 * kiban.  See docs/internals/runtime.md.
 *
 *   kiban __shim [--watch-fd N] [--server-pid N] [--grace-ms N]
 *                [--name TEXT] -- COMMAND [ARG…]
 *
 * --watch-fd    read end of a pipe whose write end only the server holds:
 *               EOF means the server is gone (the reliable signal).
 * --server-pid  the server's pid: with PR_SET_PDEATHSIG (SIGHUP), the
 *               early signal; getppid() != it means the server is gone.
 * --grace-ms    how long the group gets between SIGTERM and SIGKILL when
 *               the shim itself has to stop it (default 3000).
 *
 * Exit status: the service's (128+N when signal N killed it); 127/126 when
 * COMMAND cannot be run; 125 when the shim itself cannot start it.
 */
#include "runtime/runtime_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/time.h"

#define SHIM_EXIT_USAGE 125
#define SHIM_KILL_WAIT_MS 2000      /* after SIGKILL, for reaping */

typedef struct shim {
    const char *name;           /* for messages */
    int         watch_fd;       /* -1: not watching */
    long        server_pid;     /* 0: not watching */
    long        grace_ms;
    int         sfd;            /* signalfd for TERM, INT, HUP, CHLD */
    pid_t       child;          /* the service */
    int         status;         /* its wait status, once child_exited */
    bool        child_exited;
    bool        term_sent;      /* the group already got a SIGTERM */
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

/* Wait up to ms for the group to empty, reaping as we go. */
static bool
wait_group_empty(shim *sh, long ms)
{
    uint64_t deadline = kb_time_mono_ms() + (uint64_t)ms;
    struct signalfd_siginfo si;

    for (;;) {
        reap(sh);
        if (group_others(0) == 0)
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

static int
exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

/* The service exited: clear what it left in the group, then report. */
static int
finish(shim *sh)
{
    if (group_others(0) > 0) {
        if (!sh->term_sent)
            group_others(SIGTERM);
        if (!wait_group_empty(sh, sh->grace_ms)) {
            group_others(SIGKILL);
            wait_group_empty(sh, SHIM_KILL_WAIT_MS);
        }
    }
    return exit_code(sh->status);
}

/* The server died: stop the whole group, then go. */
static void __attribute__((noreturn))
stop_orphaned(shim *sh)
{
    shim_say(sh, "server gone, stopping the instance (pid %ld)",
             (long)sh->child);
    if (!sh->term_sent)
        kill(0, SIGTERM);       /* the group; our own copy is ignored */
    sh->term_sent = true;
    if (!wait_group_empty(sh, sh->grace_ms))
        kill(0, SIGKILL);       /* the group, this shim included */
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
            if (si.ssi_signo == SIGTERM)
                sh->term_sent = true;
            break;
        }
    }
}

int
kb_runtime_shim_main(int argc, char **argv)
{
    shim sh = { .name = "?", .watch_fd = -1, .grace_ms = 3000, .sfd = -1 };
    int i = 1;
    long v;

    if (i < argc && strcmp(argv[i], "__shim") == 0)
        i++;
    for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (val == NULL)
            goto usage;
        if (strcmp(opt, "--name") == 0) {
            sh.name = val;
        } else if (strcmp(opt, "--watch-fd") == 0
                   && parse_long(val, 0, 1 << 20, &v) == 0) {
            sh.watch_fd = (int)v;
        } else if (strcmp(opt, "--server-pid") == 0
                   && parse_long(val, 1, 1L << 30, &v) == 0) {
            sh.server_pid = v;
        } else if (strcmp(opt, "--grace-ms") == 0
                   && parse_long(val, 0, 3600 * 1000, &v) == 0) {
            sh.grace_ms = v;
        } else {
            goto usage;
        }
    }
    if (i + 1 >= argc)
        goto usage;
    char **cmd = argv + i + 1;

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

    sh.child = fork();
    if (sh.child < 0) {
        shim_say(&sh, "fork: %s", strerror(errno));
        return SHIM_EXIT_USAGE;
    }
    if (sh.child == 0) {
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(cmd[0], cmd);
        int e = errno;
        shim_say(&sh, "cannot run %s: %s", cmd[0], strerror(e));
        _exit(e == ENOENT ? 127 : 126);
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
            "[--grace-ms N] [--name TEXT] -- COMMAND [ARG...]\n");
    return SHIM_EXIT_USAGE;
}
