/*
 * test_limits.c - instance isolation against the real kernel: detection,
 * memory and CPU limits by cgroup (and the RLIMIT_AS fallback), processes
 * that leave the shim's group with setsid() still stopped, the boot
 * reaper, --user with a binary in a directory the user cannot enter, and
 * --workdir.  This binary is also the shim (argv[1] == "__shim").  Its
 * cgroups live under a private parent (kiban-test-PID), removed at the end.
 */
#include "runtime/limits.c"

#include "core/time.h"
#include "runtime/runtime.h"
#include "runtime/runtime_int.h"

#include <poll.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/times.h>
#include <sys/wait.h>
#include <cmocka.h>

#define PARENT_ENV "KIBAN_TEST_LIM_PARENT"
#define MODE_ENV   "KIBAN_TEST_LIM_MODE"
#define MiB        (1024 * 1024)

static char self_exe[PATH_MAX];
static char parent_name[64];
static int  id_seq;

typedef struct run {
    int  status;                /* waitpid status */
    char out[4096];
    char err[4096];
} run;

/* A fresh instance id for this test process. */
static const char *
new_id(char *buf, size_t len)
{
    snprintf(buf, len, "t%d-%d", (int)getpid(), ++id_seq);
    return buf;
}

static bool
can_cgroup(bool want_mem, bool want_cpu)
{
    bool mem, cpu;
    kb_lim_mode m = kb_limits_mode(&mem, &cpu);
    return m != KB_LIM_RLIMIT && (!want_mem || mem) && (!want_cpu || cpu);
}

/* Does the instance cgroup `id` exist in any hierarchy? */
static bool
cg_exists(const char *id)
{
    char dirs[2][PATH_MAX];
    int n = cg_dirs(id, dirs);
    for (int i = 0; i < n; i++)
        if (access(dirs[i], F_OK) == 0)
            return true;
    return false;
}

static bool
alive(long pid)
{
    char state = 0;
    return kb__proc_stat((int)pid, &state, NULL, NULL) == 0 && state != 'Z'
           && state != 'X';
}

/* Read both pipes until EOF (20 s hang guard), then reap the shim. */
static void
collect(pid_t pid, int out_fd, int err_fd, run *r)
{
    size_t no = 0, ne = 0;
    uint64_t end = kb_time_mono_ms() + 20000;
    struct pollfd p[2] = { { .fd = out_fd, .events = POLLIN },
                           { .fd = err_fd, .events = POLLIN } };

    while ((p[0].fd >= 0 || p[1].fd >= 0) && kb_time_mono_ms() < end) {
        if (poll(p, 2, 100) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || p[i].revents == 0)
                continue;
            char *buf = i == 0 ? r->out : r->err;
            size_t *n = i == 0 ? &no : &ne;
            ssize_t k = read(p[i].fd, buf + *n, sizeof(r->out) - 1 - *n);
            if (k <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
            } else {
                *n += (size_t)k;
            }
        }
    }
    r->out[no] = '\0';
    r->err[ne] = '\0';
    if (p[0].fd >= 0 || p[1].fd >= 0) {
        kill(pid, SIGKILL);
        fail_msg("the shim did not finish within 20 s");
    }
    assert_int_equal(waitpid(pid, &r->status, 0), pid);
}

/*
 * Run `test_limits __shim OPTS… -- CMD…` (NULL-terminated lists) with
 * stdout and stderr captured.  path_env: PATH for the shim, NULL to keep.
 */
static void
run_shim(const char *const *opts, const char *const *cmd, const char *path_env,
         run *r)
{
    const char *argv[64];
    int k = 0, o[2], e[2];

    argv[k++] = self_exe;
    argv[k++] = "__shim";
    argv[k++] = "--name";
    argv[k++] = "limits-test";
    argv[k++] = "--grace-ms";
    argv[k++] = "500";
    for (int i = 0; opts[i] != NULL; i++)
        argv[k++] = opts[i];
    argv[k++] = "--";
    for (int i = 0; cmd[i] != NULL; i++)
        argv[k++] = cmd[i];
    argv[k] = NULL;
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    assert_int_equal(pipe2(e, O_CLOEXEC), 0);
    memset(r, 0, sizeof(*r));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(o[1], STDOUT_FILENO);
        dup2(e[1], STDERR_FILENO);
        if (path_env != NULL)
            setenv("PATH", path_env, 1);
        execv(self_exe, (char *const *)argv);
        _exit(99);
    }
    close(o[1]);
    close(e[1]);
    collect(pid, o[0], e[0], r);
}

static int
exit_of(const run *r)
{
    if (WIFEXITED(r->status))
        return WEXITSTATUS(r->status);
    return WIFSIGNALED(r->status) ? 128 + WTERMSIG(r->status) : -1;
}

/* ---- detection ---- */

static void
test_detect(void **state)
{
    (void)state;
    bool mem, cpu;
    kb_lim_mode mode = kb_limits_mode(&mem, &cpu);

    json_t *d = kb_limits_describe();
    assert_non_null(d);
    assert_string_equal(json_string_value(json_object_get(d, "mode")),
                        kb_limits_mode_name(mode));
    assert_true(json_is_boolean(json_object_get(d, "memory")));
    assert_int_equal(json_is_true(json_object_get(d, "memory")), mem);
    assert_int_equal(json_is_true(json_object_get(d, "cpu")), cpu);
    assert_int_equal(json_object_size(d), 3);
    json_decref(d);
    if (mode == KB_LIM_RLIMIT) {
        assert_true(mem);       /* as address space */
        assert_false(cpu);
    }

    /* A machine where we are root and a v1 memory hierarchy is mounted
     * (this one) must not fall back to rlimits. */
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[LIM_MAX_LINE];
    bool v1_mem = false;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, " - cgroup ") != NULL && strstr(line, "memory"))
            v1_mem = true;
    fclose(f);
    if (v1_mem && geteuid() == 0 && access("/sys/fs/cgroup", W_OK) == 0)
        assert_int_not_equal(mode, KB_LIM_RLIMIT);

    assert_true(kb_limits_id_valid("a1b2c3d4e5f60718"));
    assert_true(kb_limits_id_valid("web-00001_x"));
    assert_false(kb_limits_id_valid(""));
    assert_false(kb_limits_id_valid(".."));
    assert_false(kb_limits_id_valid("a/b"));
    char long_id[KB_LIM_MAX_ID + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_false(kb_limits_id_valid(long_id));
    assert_int_equal(kb_limits_cgroup_create("../x", NULL), KB_EINVAL);
}

/* The mode a forced process reports, via `__describe MODE`. */
static void
test_forced_rlimit_describes_itself(void **state)
{
    (void)state;
    int o[2];
    char buf[256] = "";

    assert_int_equal(pipe(o), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(o[1], STDOUT_FILENO);
        execl(self_exe, self_exe, "__describe", "rlimit", (char *)NULL);
        _exit(99);
    }
    close(o[1]);
    ssize_t n = read(o[0], buf, sizeof(buf) - 1);
    close(o[0]);
    assert_true(n > 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    json_t *d = json_loads(buf, 0, NULL);
    assert_non_null(d);
    assert_string_equal(json_string_value(json_object_get(d, "mode")),
                        "rlimit");
    assert_true(json_is_true(json_object_get(d, "memory")));
    assert_true(json_is_false(json_object_get(d, "cpu")));
    json_decref(d);
}

/* ---- memory ---- */

/* dd's buffer is one allocation of bs bytes, all of it written by read(). */
static const char *const dd_200m[] = { "dd", "if=/dev/zero", "of=/dev/null",
                                       "bs=200M", "count=1", NULL };
static const char *const dd_16m[] = { "dd", "if=/dev/zero", "of=/dev/null",
                                      "bs=16M", "count=1", NULL };

static void
test_memory_limit_cgroup(void **state)
{
    (void)state;
    char id[32], id2[32];
    run r;

    if (!can_cgroup(true, false))
        skip();
    const char *over[] = { "--cgroup", new_id(id, sizeof(id)), "--memory",
                           "67108864", NULL };
    run_shim(over, dd_200m, NULL, &r);
    /* OOM-killed (137) or, if the allocation itself failed, an error. */
    if (exit_of(&r) == 0)
        fail_msg("200 MiB under a 64 MiB limit succeeded: %s", r.err);
    assert_false(cg_exists(id));

    const char *under[] = { "--cgroup", new_id(id2, sizeof(id2)), "--memory",
                            "67108864", NULL };
    run_shim(under, dd_16m, NULL, &r);
    if (exit_of(&r) != 0)
        fail_msg("16 MiB under a 64 MiB limit failed (%d): %s", exit_of(&r),
                 r.err);
    assert_false(cg_exists(id2));
}

/* Same, with the shim forced into rlimit mode (no cgroup is created). */
static void
test_memory_limit_rlimit(void **state)
{
    (void)state;
    char id[32];
    run r;

    setenv(MODE_ENV, "rlimit", 1);
    const char *opts[] = { "--cgroup", new_id(id, sizeof(id)), "--memory",
                           "67108864", NULL };
    run_shim(opts, dd_200m, NULL, &r);
    int over = exit_of(&r);
    run_shim(opts, dd_16m, NULL, &r);
    int under = exit_of(&r);
    unsetenv(MODE_ENV);
    assert_int_not_equal(over, 0);
    if (under != 0)
        fail_msg("16 MiB under RLIMIT_AS 64 MiB failed (%d): %s", under,
                 r.err);
    assert_false(cg_exists(id));
}

/* ---- CPU ---- */

static void
test_cpu_quota(void **state)
{
    (void)state;
    char id[32];
    struct tms t0, t1;
    run r;

    if (!can_cgroup(false, true))
        skip();
    const char *opts[] = { "--cgroup", new_id(id, sizeof(id)), "--cpu", "100",
                           NULL };
    const char *busy[] = { "timeout", "1", "sh", "-c", "while :; do :; done",
                           NULL };
    long hz = sysconf(_SC_CLK_TCK);
    times(&t0);
    uint64_t start = kb_time_mono_ms();
    run_shim(opts, busy, NULL, &r);
    uint64_t wall = kb_time_mono_ms() - start;
    times(&t1);
    assert_int_equal(exit_of(&r), 124);     /* timeout's "timed out" */
    double cpu_ms = (double)((t1.tms_cutime + t1.tms_cstime)
                             - (t0.tms_cutime + t0.tms_cstime)) * 1000.0
                    / (double)hz;
    /* A tenth of a CPU: far below half of the wall time (a loose bound
     * that only a missing quota breaks). */
    if (cpu_ms >= 0.5 * (double)wall)
        fail_msg("a 100m quota burned %.0f ms of CPU in %llu ms", cpu_ms,
                 (unsigned long long)wall);
    assert_false(cg_exists(id));
}

/* ---- stopping everything ---- */

/* Wait up to 5 s for `file` to hold a pid. */
static long
read_pid_file(const char *file)
{
    uint64_t end = kb_time_mono_ms() + 5000;
    char buf[32];

    while (kb_time_mono_ms() < end) {
        int fd = open(file, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n > 0 && buf[n - 1] == '\n') {
                buf[n] = '\0';
                return strtol(buf, NULL, 10);
            }
        }
        usleep(10 * 1000);
    }
    return -1;
}

/* A service script that starts a setsid() escapee and writes its pid to
 * `file`, in a fresh directory `dir`. */
typedef struct escapee {
    char dir[sizeof("/tmp/kb-lim-XXXXXX")];
    char file[64];
    char script[512];
} escapee;

/* The script is `before`, the escapee, then `after`. */
static void
escapee_init(escapee *e, const char *before, const char *after)
{
    snprintf(e->dir, sizeof(e->dir), "/tmp/kb-lim-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->file, sizeof(e->file), "%s/pid", e->dir);
    snprintf(e->script, sizeof(e->script),
             "%ssetsid sleep 1000 </dev/null >/dev/null 2>&1 & "
             "echo $! > %s.tmp; mv %s.tmp %s%s", before, e->file, e->file,
             e->file, after);
}

/* The escapee's pid (the test fails without one). */
static long
escapee_pid(const escapee *e)
{
    long pid = read_pid_file(e->file);

    assert_true(pid > 0);
    return pid;
}

/* The escapee `pid` is gone within wait_ms (else killed, and the test
 * fails: it outlived `what`), and cgroup `id` with it; removes e's files. */
static void
escapee_gone(escapee *e, long pid, int wait_ms, const char *what,
             const char *id)
{
    uint64_t end = kb_time_mono_ms() + (uint64_t)wait_ms;

    while (alive(pid) && kb_time_mono_ms() < end)
        usleep(10 * 1000);
    if (alive(pid)) {
        kill((pid_t)pid, SIGKILL);
        fail_msg("the setsid() escapee %ld outlived %s", pid, what);
    }
    assert_false(cg_exists(id));
    unlink(e->file);
    rmdir(e->dir);
}

static void
test_setsid_escapee_dies_with_service(void **state)
{
    (void)state;
    char id[32];
    escapee e;
    run r;

    if (!can_cgroup(false, false))
        skip();
    escapee_init(&e, "", "");
    const char *opts[] = { "--cgroup", new_id(id, sizeof(id)), NULL };
    const char *cmd[] = { "sh", "-c", e.script, NULL };
    run_shim(opts, cmd, NULL, &r);
    assert_int_equal(exit_of(&r), 0);
    escapee_gone(&e, escapee_pid(&e), 0, "its service", id);
}

static void
test_server_gone_stops_escapees(void **state)
{
    (void)state;
    char id[32], fd_arg[16];
    escapee e;
    int w[2];

    if (!can_cgroup(false, false))
        skip();
    escapee_init(&e, "", "; exec sleep 1000");
    assert_int_equal(pipe2(w, O_CLOEXEC), 0);
    new_id(id, sizeof(id));
    pid_t shim = fork();
    assert_true(shim >= 0);
    if (shim == 0) {
        int fd = dup(w[0]);     /* not close-on-exec */
        snprintf(fd_arg, sizeof(fd_arg), "%d", fd);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        execl(self_exe, self_exe, "__shim", "--watch-fd", fd_arg,
              "--grace-ms", "300", "--cgroup", id, "--", "sh", "-c",
              e.script, (char *)NULL);
        _exit(99);
    }
    close(w[0]);
    long pid = escapee_pid(&e);
    assert_true(alive(pid));
    close(w[1]);                /* the "server" is gone */
    int st;
    assert_int_equal(waitpid(shim, &st, 0), shim);
    escapee_gone(&e, pid, 5000, "the server", id);
}

/* SIGUSR1: everything dies at once, the cgroup goes, the shim exits with
 * the service's SIGKILL. */
static void
test_kill_now(void **state)
{
    (void)state;
    char id[32];
    escapee e;

    if (!can_cgroup(false, false))
        skip();
    escapee_init(&e, "trap '' TERM; ", "; exec sleep 1000");
    new_id(id, sizeof(id));
    pid_t shim = fork();
    assert_true(shim >= 0);
    if (shim == 0) {
        execl(self_exe, self_exe, "__shim", "--grace-ms", "60000",
              "--cgroup", id, "--", "sh", "-c", e.script, (char *)NULL);
        _exit(99);
    }
    long pid = escapee_pid(&e);
    assert_true(alive(pid));
    assert_int_equal(kill(shim, SIGUSR1), 0);
    int st;
    assert_int_equal(waitpid(shim, &st, 0), shim);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 128 + SIGKILL);
    escapee_gone(&e, pid, 5000, "a kill", id);
}

/* A process that joined cgroup `id`, with a setsid() grandchild; both
 * sleep.  Returns the child. */
static pid_t
sleeper_in(const char *id)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (kb_limits_cgroup_join(id, 0) < 0)
            _exit(3);
        if (fork() == 0) {
            setsid();
            execlp("sleep", "sleep", "1000", (char *)NULL);
            _exit(4);
        }
        execlp("sleep", "sleep", "1000", (char *)NULL);
        _exit(4);
    }
    return pid;
}

static void
test_boot_reaper(void **state)
{
    (void)state;
    char keep[32], drop[32];

    if (!can_cgroup(false, false))
        skip();
    new_id(keep, sizeof(keep));
    new_id(drop, sizeof(drop));
    assert_int_equal(kb_limits_cgroup_create(keep, NULL), 0);
    assert_int_equal(kb_limits_cgroup_create(drop, NULL), 0);
    pid_t k = sleeper_in(keep), d = sleeper_in(drop);
    uint64_t end = kb_time_mono_ms() + 5000;
    while ((kb_limits_cgroup_signal(keep, 0) < 2
            || kb_limits_cgroup_signal(drop, 0) < 2)
           && kb_time_mono_ms() < end)
        usleep(10 * 1000);
    assert_int_equal(kb_limits_cgroup_signal(drop, 0), 2);
    assert_int_equal(kb_limits_cgroup_signal(keep, 0), 2);

    /* Everything but the kept one (the keep-list form). */
    const char *ids[] = { keep };
    int st;
    assert_int_equal(kb_limits_reap(ids, 1, KB_LIM_REAP_EXCEPT), 1);
    assert_int_equal(waitpid(d, &st, 0), d);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_false(cg_exists(drop));
    assert_true(cg_exists(keep));
    assert_int_equal(kb_limits_cgroup_signal(keep, 0), 2);

    /* The named form. */
    assert_int_equal(kb_limits_reap(ids, 1, 0), 1);
    assert_int_equal(waitpid(k, &st, 0), k);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_false(cg_exists(keep));
    assert_int_equal(kb_limits_reap(ids, 1, 0), 0);

    /* Sweeping empty leftovers: a fresh one is spared, an old one goes, a
     * busy old one is not killed. */
    char fresh[32], old_empty[32], old_busy[32], dirs[2][PATH_MAX];
    new_id(fresh, sizeof(fresh));
    new_id(old_empty, sizeof(old_empty));
    new_id(old_busy, sizeof(old_busy));
    assert_int_equal(kb_limits_cgroup_create(fresh, NULL), 0);
    assert_int_equal(kb_limits_cgroup_create(old_empty, NULL), 0);
    assert_int_equal(kb_limits_cgroup_create(old_busy, NULL), 0);
    struct timespec past[2] = { { time(NULL) - 60, 0 },
                                { time(NULL) - 60, 0 } };
    for (int i = 0, nd = cg_dirs(old_empty, dirs); i < nd; i++)
        assert_int_equal(utimensat(AT_FDCWD, dirs[i], past, 0), 0);
    for (int i = 0, nd = cg_dirs(old_busy, dirs); i < nd; i++)
        assert_int_equal(utimensat(AT_FDCWD, dirs[i], past, 0), 0);
    pid_t b = sleeper_in(old_busy);
    end = kb_time_mono_ms() + 5000;
    while (kb_limits_cgroup_signal(old_busy, 0) < 2 && kb_time_mono_ms() < end)
        usleep(10 * 1000);
    assert_int_equal(kb_limits_reap(NULL, 0,
                                    KB_LIM_REAP_EXCEPT | KB_LIM_REAP_EMPTY), 1);
    assert_false(cg_exists(old_empty));
    assert_true(cg_exists(fresh));
    assert_int_equal(kb_limits_cgroup_signal(old_busy, 0), 2);
    const char *rest[] = { fresh, old_busy };
    assert_int_equal(kb_limits_reap(rest, 2, 0), 2);
    assert_int_equal(waitpid(b, &st, 0), b);
    assert_false(cg_exists(fresh) || cg_exists(old_busy));
}

/* ---- user and working directory ---- */

static void
copy_file(const char *from, const char *to, mode_t mode)
{
    char buf[65536];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC,
                                              mode);
    ssize_t n;

    assert_true(in >= 0 && out >= 0);
    while ((n = read(in, buf, sizeof(buf))) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
    assert_int_equal(chmod(to, mode), 0);
}

static void
test_user_nobody_runs_from_private_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/kb-lim-XXXXXX", bin[PATH_MAX], sh[PATH_MAX];
    char path[PATH_MAX + 32];
    run r;

    if (geteuid() != 0)
        skip();
    struct passwd *pw = getpwnam("nobody");
    if (pw == NULL)
        skip();
    assert_non_null(mkdtemp(dir));          /* 0700, root's */
    snprintf(bin, sizeof(bin), "%s/myid", dir);
    snprintf(sh, sizeof(sh), "%s/myscript", dir);
    copy_file(access("/usr/bin/id", X_OK) == 0 ? "/usr/bin/id" : "/bin/id",
              bin, 0755);
    int fd = open(sh, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    assert_true(fd >= 0);
    const char text[] = "#!/bin/sh\nexec id -u\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1),
                     (ssize_t)sizeof(text) - 1);
    close(fd);
    char expect[32];
    snprintf(expect, sizeof(expect), "%ld\n", (long)pw->pw_uid);

    const char *opts[] = { "--user", "nobody", NULL };
    const char *id_u[] = { bin, "-u", NULL };
    run_shim(opts, id_u, NULL, &r);
    assert_int_equal(exit_of(&r), 0);
    assert_string_equal(r.out, expect);

    /* No supplementary group of root's is left. */
    const char *id_g[] = { bin, "-G", NULL };
    run_shim(opts, id_g, NULL, &r);
    assert_int_equal(exit_of(&r), 0);
    assert_null(strstr(r.out, " 0 "));
    assert_true(strncmp(r.out, "0 ", 2) != 0 && strcmp(r.out, "0\n") != 0);

    /* A #! script there, and a PATH lookup into the directory. */
    const char *script[] = { sh, NULL };
    run_shim(opts, script, NULL, &r);
    assert_int_equal(exit_of(&r), 0);
    assert_string_equal(r.out, expect);
    snprintf(path, sizeof(path), "%s:/usr/bin:/bin", dir);
    const char *by_name[] = { "myid", "-u", NULL };
    run_shim(opts, by_name, path, &r);
    assert_int_equal(exit_of(&r), 0);
    assert_string_equal(r.out, expect);

    /* The user really cannot enter the directory. */
    const char *peek[] = { "cat", sh, NULL };
    run_shim(opts, peek, NULL, &r);
    assert_int_not_equal(exit_of(&r), 0);

    /* An unknown user: the shim refuses to start. */
    const char *bad[] = { "--user", "no-such-user-kiban", NULL };
    run_shim(bad, id_u, NULL, &r);
    assert_int_equal(exit_of(&r), 125);
    assert_non_null(strstr(r.err, "unknown user no-such-user-kiban"));

    unlink(bin);
    unlink(sh);
    rmdir(dir);
}

static void
test_workdir(void **state)
{
    (void)state;
    char dir[] = "/tmp/kb-lim-XXXXXX", real[PATH_MAX], expect[PATH_MAX + 2];
    run r;

    assert_non_null(mkdtemp(dir));
    assert_non_null(realpath(dir, real));
    snprintf(expect, sizeof(expect), "%s\n", real);
    const char *opts[] = { "--workdir", dir, NULL };
    const char *pwd[] = { "pwd", NULL };
    run_shim(opts, pwd, NULL, &r);
    assert_int_equal(exit_of(&r), 0);
    assert_string_equal(r.out, expect);

    /* Relative commands resolve against it. */
    char script[PATH_MAX];
    snprintf(script, sizeof(script), "%s/hi", dir);
    int fd = open(script, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "#!/bin/sh\necho hi\n", 18), 18);
    close(fd);
    const char *rel[] = { "./hi", NULL };
    run_shim(opts, rel, NULL, &r);
    assert_int_equal(exit_of(&r), 0);
    assert_string_equal(r.out, "hi\n");
    unlink(script);
    rmdir(dir);
}

static void
test_bad_workdir(void **state)
{
    (void)state;
    run r;
    const char *opts[] = { "--workdir", "/nonexistent/kiban-dir", NULL };
    const char *cmd[] = { "true", NULL };

    run_shim(opts, cmd, NULL, &r);
    assert_int_equal(exit_of(&r), 126);
    assert_non_null(strstr(r.err, "cannot change to working directory "
                                  "/nonexistent/kiban-dir"));
}

static void
test_bad_flags(void **state)
{
    (void)state;
    run r;
    const char *cmd[] = { "true", NULL };
    const char *bad_id[] = { "--cgroup", "../etc", NULL };
    const char *bad_mem[] = { "--memory", "-5", NULL };
    const char *bad_cpu[] = { "--cpu", "lots", NULL };

    run_shim(bad_id, cmd, NULL, &r);
    assert_int_equal(exit_of(&r), 125);
    run_shim(bad_mem, cmd, NULL, &r);
    assert_int_equal(exit_of(&r), 125);
    run_shim(bad_cpu, cmd, NULL, &r);
    assert_int_equal(exit_of(&r), 125);
}

/* Remove this process's private kiban parent in every hierarchy. */
static void
remove_parent(void)
{
    (void)kb_limits_reap(NULL, 0, KB_LIM_REAP_EXCEPT);
    if (g_lim.v2[0] != '\0')
        rmdir(g_lim.v2);
    if (g_lim.v1_mem[0] != '\0')
        rmdir(g_lim.v1_mem);
    if (g_lim.v1_cpu[0] != '\0')
        rmdir(g_lim.v1_cpu);
}

static int
force_from_env(void)
{
    const char *mode = getenv(MODE_ENV);
    int m = -1;

    if (mode != NULL)
        for (int i = 0; i <= KB_LIM_CGROUP2; i++)
            if (strcmp(mode, kb_limits_mode_name((kb_lim_mode)i)) == 0)
                m = i;
    kb__lim_force(m, getenv(PARENT_ENV));
    return m;
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "__shim") == 0) {
        force_from_env();
        return kb_runtime_shim_main(argc, argv);
    }
    if (argc > 2 && strcmp(argv[1], "__describe") == 0) {
        setenv(MODE_ENV, argv[2], 1);
        force_from_env();
        json_t *d = kb_limits_describe();
        char *s = json_dumps(d, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(d);
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        return 1;
    self_exe[n] = '\0';
    snprintf(parent_name, sizeof(parent_name), "kiban-test-%d", (int)getpid());
    setenv(PARENT_ENV, parent_name, 1);
    unsetenv(MODE_ENV);
    force_from_env();
    /* Orphans of timed-out shims come to us rather than to init. */
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_forced_rlimit_describes_itself),
        cmocka_unit_test(test_memory_limit_cgroup),
        cmocka_unit_test(test_memory_limit_rlimit),
        cmocka_unit_test(test_cpu_quota),
        cmocka_unit_test(test_setsid_escapee_dies_with_service),
        cmocka_unit_test(test_server_gone_stops_escapees),
        cmocka_unit_test(test_kill_now),
        cmocka_unit_test(test_boot_reaper),
        cmocka_unit_test(test_user_nobody_runs_from_private_dir),
        cmocka_unit_test(test_workdir),
        cmocka_unit_test(test_bad_workdir),
        cmocka_unit_test(test_bad_flags),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    remove_parent();
    return rc;
}
