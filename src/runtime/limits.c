/*
 * limits.c - per-instance cgroups and rlimits (see limits.h and "Limits,
 * users and cgroups" in docs/internals/runtime.md).  Everything here is a
 * handful of small reads and writes under /sys/fs/cgroup and /proc: the
 * shim and boot-time code call it, never the loop of a busy server.
 */
#include "runtime/limits.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"

#define LIM_MAX_LINE    4096    /* mountinfo / cgroup lines we accept */
#define LIM_MAX_REAP    4096    /* cgroups one reap handles */
#define LIM_POLL_MS     10

/* What detection found: the kiban parent directory in each hierarchy we
 * use ("" when unused). */
typedef struct lim_state {
    kb_lim_mode mode;
    bool        memory, cpu;
    bool        v2_kill;            /* cgroup.kill exists (Linux 5.14+) */
    char        v2[PATH_MAX];
    char        v1_mem[PATH_MAX];
    char        v1_cpu[PATH_MAX];
} lim_state;

static lim_state      g_lim;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int            g_force = -1;
static const char    *g_parent = KB_LIM_PARENT;

void
kb__lim_force(int mode, const char *parent)
{
    g_force = mode;
    g_parent = parent != NULL ? parent : KB_LIM_PARENT;
}

/* ---- small file helpers ---- */

static int
path_join(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int
write_text(const char *dir, const char *file, const char *text)
{
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, file);

    if (rc < 0)
        return rc;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    ssize_t n;
    do {
        n = write(fd, text, len);
    } while (n < 0 && errno == EINTR);
    rc = n < 0 ? -errno : (size_t)n != len ? -EIO : 0;
    close(fd);
    return rc;
}

/* Read dir/file into buf (NUL-terminated, truncated to len - 1). */
static int
read_text(const char *dir, const char *file, char *buf, size_t len)
{
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, file);

    buf[0] = '\0';
    if (rc < 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t have = 0;
    while (have < len - 1) {
        ssize_t n = read(fd, buf + have, len - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        have += (size_t)n;
    }
    buf[have] = '\0';
    close(fd);
    return rc;
}

static bool
file_exists(const char *dir, const char *file)
{
    char path[PATH_MAX];
    return path_join(path, sizeof(path), dir, file) == 0
           && access(path, F_OK) == 0;
}

/* Is `word` one of the space- or comma-separated words of `list`? */
static bool
has_word(const char *list, const char *word)
{
    size_t wl = strlen(word);

    for (const char *p = list; *p != '\0';) {
        size_t n = strcspn(p, " ,\n");
        if (n == wl && strncmp(p, word, wl) == 0)
            return true;
        p += n;
        p += strspn(p, " ,\n");
    }
    return false;
}

/* ---- detection ---- */

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void
unescape(char *s)
{
    char *w = s;

    for (char *r = s; *r != '\0'; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0'
            && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* This process's cgroup path in the hierarchy that has `ctrl` ("" for the
 * v2 one) from /proc/self/cgroup. */
static int
own_cgroup(const char *ctrl, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    char line[LIM_MAX_LINE];
    int rc = -ENOENT;

    if (f == NULL)
        return -errno;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        bool match = *ctrl == '\0' ? (strcmp(line, "0") == 0 && c1[1] == '\0')
                                   : has_word(c1 + 1, ctrl);
        if (match) {
            int n = snprintf(out, len, "%s", c2 + 1);
            rc = n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

/*
 * Where the kiban parent goes in the hierarchy with `ctrl` ("" for the
 * cgroup2 one): next to our own cgroup, i.e. mountpoint + the parent of
 * our path (relative to the mount's root) + "/kiban".  *base gets that
 * parent directory.
 */
static int
parent_dir(const char *ctrl, char *base, char *kiban)
{
    char own[PATH_MAX], line[LIM_MAX_LINE];
    int rc = own_cgroup(ctrl, own, sizeof(own));

    if (rc < 0)
        return rc;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return -errno;
    rc = -ENOENT;
    while (fgets(line, sizeof(line), f) != NULL) {
        /* id parent maj:min root mountpoint opts [optional…] - type src super */
        char *field[5], *sep = strstr(line, " - "), *save = NULL;
        if (sep == NULL)
            continue;
        *sep = '\0';
        char *type = strtok_r(sep + 3, " \n", &save);
        (void)strtok_r(NULL, " \n", &save);     /* source */
        char *super = strtok_r(NULL, " \n", &save);
        if (type == NULL || super == NULL)
            continue;
        if (*ctrl == '\0' ? strcmp(type, "cgroup2") != 0
                          : strcmp(type, "cgroup") != 0 || !has_word(super, ctrl))
            continue;
        save = NULL;
        int k = 0;
        for (char *t = strtok_r(line, " ", &save); t != NULL && k < 5;
             t = strtok_r(NULL, " ", &save))
            field[k++] = t;
        if (k < 5)
            continue;
        char *root = field[3], *mnt = field[4];
        unescape(root);
        unescape(mnt);
        /* Our path must lie under the mount's root to be reachable. */
        size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
        if (strncmp(own, root, rl) != 0 || (own[rl] != '/' && own[rl] != '\0'))
            continue;
        char rel[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s", own + rl);
        char *slash = strrchr(rel, '/');
        if (slash != NULL)
            *slash = '\0';      /* the parent of our cgroup ("" = the root) */
        int n = snprintf(base, PATH_MAX, "%s%s", mnt, rel);
        int m = snprintf(kiban, PATH_MAX, "%s%s/%s", mnt, rel, g_parent);
        rc = n < 0 || n >= PATH_MAX || m < 0 || m >= PATH_MAX ? -ENAMETOOLONG
                                                              : 0;
        break;
    }
    fclose(f);
    return rc;
}

static int
make_dir(const char *path)
{
    return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -errno;
}

/* cgroup2: usable when memory or cpu can be enabled for the kiban parent's
 * children.  Prepares the parent (idempotent). */
static void
detect_v2(lim_state *s)
{
    char base[PATH_MAX], kiban[PATH_MAX], ctl[512], want[64] = "";

    if (parent_dir("", base, kiban) < 0)
        return;
    if (read_text(base, "cgroup.controllers", ctl, sizeof(ctl)) < 0)
        return;
    bool mem = has_word(ctl, "memory"), cpu = has_word(ctl, "cpu");
    if (!mem && !cpu)
        return;
    if (read_text(base, "cgroup.subtree_control", ctl, sizeof(ctl)) < 0)
        return;
    if (mem && !has_word(ctl, "memory")
        && write_text(base, "cgroup.subtree_control", "+memory") < 0)
        mem = false;
    if (cpu && !has_word(ctl, "cpu")
        && write_text(base, "cgroup.subtree_control", "+cpu") < 0)
        cpu = false;
    if ((!mem && !cpu) || make_dir(kiban) < 0)
        return;
    snprintf(want, sizeof(want), "%s%s", mem ? "+memory " : "",
             cpu ? "+cpu" : "");
    if (write_text(kiban, "cgroup.subtree_control", want) < 0)
        return;                 /* e.g. the parent has processes */
    s->memory = mem;
    s->cpu = cpu;
    s->v2_kill = file_exists(kiban, "cgroup.kill");
    snprintf(s->v2, sizeof(s->v2), "%s", kiban);
    s->mode = KB_LIM_CGROUP2;
}

static bool
detect_v1_one(const char *ctrl, char *out)
{
    char base[PATH_MAX];

    if (parent_dir(ctrl, base, out) < 0 || make_dir(out) < 0) {
        out[0] = '\0';
        return false;
    }
    return true;
}

static void
detect(void)
{
    lim_state *s = &g_lim;

    memset(s, 0, sizeof(*s));
    if (g_force != KB_LIM_RLIMIT && g_force != KB_LIM_CGROUP1)
        detect_v2(s);
    if (s->mode == KB_LIM_RLIMIT && g_force != KB_LIM_RLIMIT
        && g_force != KB_LIM_CGROUP2) {
        s->memory = detect_v1_one("memory", s->v1_mem);
        s->cpu = detect_v1_one("cpu", s->v1_cpu);
        if (s->memory || s->cpu)
            s->mode = KB_LIM_CGROUP1;
    }
    if (s->mode == KB_LIM_RLIMIT) {
        s->memory = true;       /* as address space */
        s->cpu = false;
    }
}

kb_lim_mode
kb_limits_mode(bool *memory, bool *cpu)
{
    pthread_once(&g_once, detect);
    if (memory != NULL)
        *memory = g_lim.memory;
    if (cpu != NULL)
        *cpu = g_lim.cpu;
    return g_lim.mode;
}

const char *
kb_limits_mode_name(kb_lim_mode mode)
{
    static const char *const names[] = {
        [KB_LIM_RLIMIT] = "rlimit",
        [KB_LIM_CGROUP1] = "cgroup1",
        [KB_LIM_CGROUP2] = "cgroup2",
    };
    return (unsigned)mode < sizeof(names) / sizeof(names[0]) ? names[mode]
                                                             : "rlimit";
}

json_t *
kb_limits_describe(void)
{
    bool mem, cpu;
    kb_lim_mode mode = kb_limits_mode(&mem, &cpu);

    return json_pack("{s:s, s:b, s:b}", "mode", kb_limits_mode_name(mode),
                     "memory", mem, "cpu", cpu);
}

/* ---- instance cgroups ---- */

bool
kb_limits_id_valid(const char *id)
{
    size_t n = 0;

    for (; id[n] != '\0'; n++) {
        char c = id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return n >= 1 && n <= KB_LIM_MAX_ID;
}

/* The instance's directories in every hierarchy we use; how many. */
static int
cg_dirs(const char *id, char dirs[2][PATH_MAX])
{
    const char *parents[2];
    int n = 0, k = 0;

    if (kb_limits_mode(NULL, NULL) == KB_LIM_CGROUP2) {
        parents[n++] = g_lim.v2;
    } else if (g_lim.mode == KB_LIM_CGROUP1) {
        if (g_lim.v1_mem[0] != '\0')
            parents[n++] = g_lim.v1_mem;
        if (g_lim.v1_cpu[0] != '\0')
            parents[n++] = g_lim.v1_cpu;
    }
    for (int i = 0; i < n; i++)
        if (path_join(dirs[k], PATH_MAX, parents[i], id) == 0)
            k++;
    return k;
}

static int
set_limits(const char *dir, bool is_mem, const kb_limits *lim)
{
    char num[32];
    int rc = 0;

    if (g_lim.mode == KB_LIM_CGROUP2) {
        if (g_lim.memory && lim->memory > 0) {
            snprintf(num, sizeof(num), "%llu", (unsigned long long)lim->memory);
            rc = write_text(dir, "memory.max", num);
            if (rc == 0 && file_exists(dir, "memory.swap.max"))
                rc = write_text(dir, "memory.swap.max", "0");
            if (rc == 0 && file_exists(dir, "memory.oom.group"))
                (void)write_text(dir, "memory.oom.group", "1");
        }
        if (rc == 0 && g_lim.cpu && lim->cpu_millis > 0) {
            uint64_t q = (uint64_t)lim->cpu_millis * (KB_LIM_CPU_PERIOD / 1000);
            snprintf(num, sizeof(num), "%llu %d",
                     (unsigned long long)(q < 1000 ? 1000 : q),
                     KB_LIM_CPU_PERIOD);
            rc = write_text(dir, "cpu.max", num);
        }
        return rc;
    }
    if (is_mem && lim->memory > 0) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)lim->memory);
        rc = write_text(dir, "memory.limit_in_bytes", num);
        if (rc == 0 && file_exists(dir, "memory.memsw.limit_in_bytes"))
            rc = write_text(dir, "memory.memsw.limit_in_bytes", num);
    } else if (!is_mem && lim->cpu_millis > 0) {
        uint64_t q = (uint64_t)lim->cpu_millis * (KB_LIM_CPU_PERIOD / 1000);
        snprintf(num, sizeof(num), "%d", KB_LIM_CPU_PERIOD);
        rc = write_text(dir, "cpu.cfs_period_us", num);
        snprintf(num, sizeof(num), "%llu",
                 (unsigned long long)(q < 1000 ? 1000 : q));
        if (rc == 0)
            rc = write_text(dir, "cpu.cfs_quota_us", num);
    }
    return rc;
}

int
kb_limits_cgroup_create(const char *id, const kb_limits *lim)
{
    static const kb_limits none;
    char dirs[2][PATH_MAX];
    int rc = 0;

    if (!kb_limits_id_valid(id))
        return KB_EINVAL;
    int n = cg_dirs(id, dirs);
    if (n == 0)
        return -EOPNOTSUPP;
    for (int i = 0; i < n && rc == 0; i++) {
        rc = make_dir(dirs[i]);
        bool is_mem = g_lim.mode == KB_LIM_CGROUP1 && g_lim.v1_mem[0] != '\0'
                      && i == 0;
        if (rc == 0)
            rc = set_limits(dirs[i], is_mem, lim != NULL ? lim : &none);
    }
    if (rc < 0)
        (void)kb_limits_cgroup_remove(id);
    return rc;
}

int
kb_limits_cgroup_join(const char *id, pid_t pid)
{
    char dirs[2][PATH_MAX], num[24];

    if (!kb_limits_id_valid(id))
        return KB_EINVAL;
    int n = cg_dirs(id, dirs);
    if (n == 0)
        return -EOPNOTSUPP;
    snprintf(num, sizeof(num), "%ld", (long)pid);
    for (int i = 0; i < n; i++) {
        int rc = write_text(dirs[i], "cgroup.procs", num);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Signal (or count, sig 0) the members listed in dir/cgroup.procs. */
static int
signal_dir(const char *dir, int sig)
{
    char path[PATH_MAX];
    int n = 0, rc = path_join(path, sizeof(path), dir, "cgroup.procs");
    pid_t self = getpid();
    long pid;

    if (rc < 0)
        return rc;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : -errno;
    while (fscanf(f, "%ld", &pid) == 1) {
        if (pid <= 0 || pid == (long)self)
            continue;
        n++;
        if (sig != 0)
            (void)kill((pid_t)pid, sig);
    }
    fclose(f);
    return n;
}

int
kb_limits_cgroup_pids(const char *id, pid_t *pids, size_t max)
{
    char dirs[2][PATH_MAX], path[PATH_MAX];
    pid_t self = getpid();
    size_t n = 0;
    long pid;

    if (!kb_limits_id_valid(id))
        return KB_EINVAL;
    if (cg_dirs(id, dirs) == 0)
        return 0;
    /* v1: every hierarchy holds the same processes; the first will do. */
    int rc = path_join(path, sizeof(path), dirs[0], "cgroup.procs");
    if (rc < 0)
        return rc;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : -errno;
    while (n < max && fscanf(f, "%ld", &pid) == 1)
        if (pid > 0 && pid != (long)self)
            pids[n++] = (pid_t)pid;
    fclose(f);
    return (int)n;
}

int
kb_limits_cgroup_signal(const char *id, int sig)
{
    char dirs[2][PATH_MAX];
    int total = 0;

    if (!kb_limits_id_valid(id))
        return KB_EINVAL;
    int n = cg_dirs(id, dirs);
    if (sig == SIGKILL && g_lim.mode == KB_LIM_CGROUP2 && g_lim.v2_kill
        && n == 1) {
        int c = signal_dir(dirs[0], 0);
        if (c > 0 && write_text(dirs[0], "cgroup.kill", "1") == 0)
            return c;           /* fork-safe: the kernel kills them all */
    }
    for (int i = 0; i < n; i++) {
        int c = signal_dir(dirs[i], sig);
        if (c < 0)
            return c;
        /* v1: the hierarchies hold the same processes; count the most. */
        if (c > total)
            total = c;
    }
    return total;
}

int
kb_limits_cgroup_remove(const char *id)
{
    char dirs[2][PATH_MAX];
    int rc = 0;

    if (!kb_limits_id_valid(id))
        return KB_EINVAL;
    int n = cg_dirs(id, dirs);
    for (int i = 0; i < n; i++) {
        if (rmdir(dirs[i]) < 0 && errno != ENOENT && rc == 0)
            rc = errno == EBUSY ? KB_EBUSY : -errno;
    }
    return rc;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int
kb_limits_cgroup_kill(const char *id, long timeout_ms)
{
    if (!kb_limits_id_valid(id))
        return KB_EINVAL;
    for (long waited = 0;; waited += LIM_POLL_MS) {
        int c = kb_limits_cgroup_signal(id, SIGKILL);
        if (c < 0)
            return c;
        if (c == 0) {
            int rc = kb_limits_cgroup_remove(id);
            if (rc != KB_EBUSY)
                return rc;      /* EBUSY: a member still exiting */
        }
        if (waited >= timeout_ms)
            return KB_ETIMEDOUT;
        sleep_ms(LIM_POLL_MS);
    }
}

static bool
listed(const char *name, const char *const *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] != NULL && strcmp(ids[i], name) == 0)
            return true;
    return false;
}

int
kb_limits_reap(const char *const *ids, size_t n, unsigned flags)
{
    bool except = (flags & KB_LIM_REAP_EXCEPT) != 0;
    bool empty_only = (flags & KB_LIM_REAP_EMPTY) != 0;
    time_t now = time(NULL);
    const char *parents[2];
    char (*found)[KB_LIM_MAX_ID + 1];
    int np = 0, nf = 0, removed = 0;

    if (kb_limits_mode(NULL, NULL) == KB_LIM_CGROUP2) {
        parents[np++] = g_lim.v2;
    } else if (g_lim.mode == KB_LIM_CGROUP1) {
        if (g_lim.v1_mem[0] != '\0')
            parents[np++] = g_lim.v1_mem;
        if (g_lim.v1_cpu[0] != '\0')
            parents[np++] = g_lim.v1_cpu;
    }
    if (np == 0)
        return 0;
    found = calloc(LIM_MAX_REAP, sizeof(*found));
    if (found == NULL)
        return KB_ENOMEM;
    for (int p = 0; p < np; p++) {
        DIR *d = opendir(parents[p]);
        struct dirent *e;
        if (d == NULL) {
            if (errno == ENOENT)
                continue;
            int rc = -errno;
            free(found);
            return rc;
        }
        while ((e = readdir(d)) != NULL && nf < LIM_MAX_REAP) {
            if (e->d_type != DT_DIR || !kb_limits_id_valid(e->d_name))
                continue;
            if (listed(e->d_name, ids, n) == except)
                continue;
            struct stat st;
            if (empty_only
                && (fstatat(dirfd(d), e->d_name, &st, 0) < 0
                    || now - st.st_mtime < KB_LIM_REAP_MIN_AGE))
                continue;
            bool dup = false;
            for (int i = 0; i < nf && !dup; i++)
                dup = strcmp(found[i], e->d_name) == 0;
            if (!dup) {
                size_t len = strlen(e->d_name);     /* <= KB_LIM_MAX_ID */
                memcpy(found[nf], e->d_name, len + 1);
                nf++;
            }
        }
        closedir(d);
    }
    for (int i = 0; i < nf; i++) {
        if (empty_only ? kb_limits_cgroup_signal(found[i], 0) == 0
                         && kb_limits_cgroup_remove(found[i]) == 0
                       : kb_limits_cgroup_kill(found[i], 2000) == 0)
            removed++;
    }
    free(found);
    return removed;
}

int
kb_limits_rlimit_apply(const kb_limits *lim)
{
    if (lim == NULL || lim->memory == 0)
        return 0;
    struct rlimit rl = { (rlim_t)lim->memory, (rlim_t)lim->memory };
    return setrlimit(RLIMIT_AS, &rl) < 0 ? -errno : 0;
}
