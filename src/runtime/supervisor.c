/*
 * supervisor.c - the local executor: one instance's life.  Start it
 * through the shim on a fresh loopback port, with its output captured;
 * run its startup probe until it passes, then its readiness and liveness
 * probes; restart it with exponential backoff when it exits or a probe
 * gives up on it; stop its process group on request.  runtime.c and
 * scale.c decide how many instances a revision has; this file runs each.
 * The state diagram is in runtime_int.h.
 *
 * Handle rules: an instance owns two timers (open for its whole life),
 * the shim's process handle (open from spawn until its exit is handled)
 * and the stdout/stderr pipes of its current spawn.  It is freed once it
 * is STOPPED, the last of them has closed and no lease holds it, never
 * inside a callback of its own handles.
 */
#include "runtime/runtime_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/time.h"
#include "runtime/limits.h"
#include "runtime/logs.h"
#include "runtime/probe.h"

#define PORT_PICK_TRIES 16
#define STDIO_READ_MAX  65536
#define KILL_FALLBACK_MS 3000   /* SIGUSR1 to the shim, then SIGKILL */
#define STARTUP_FIRST_MS 1      /* default startup probe: first try after
                                   1 ms, then at 2, 4, 8 ms and every 5 ms */
#define STARTUP_QUICK_MS 5      /* until its period (a fast process is
                                   ready in a few ms) */

/* One captured stream of one spawn: a pipe and its line splitter. */
struct rt_stdio {
    uv_pipe_t     pipe;
    rt_instance  *in;           /* NULL once the instance let go of it */
    rt_log_split  split;
    rt_log_stream stream;
    char          buf[STDIO_READ_MAX];
};

static void instance_spawn(rt_instance *in);
static void cgroup_cleanup(rt_instance *in);
static void restart_due(uv_timer_t *t);
static void startup_tick(uv_timer_t *t);
static void check_tick(uv_timer_t *t);

const char *
kb__rt_state_name(rt_state s)
{
    static const char *const names[] = {
        [RT_STARTING] = "starting", [RT_RUNNING] = "running",
        [RT_BACKOFF] = "backoff",   [RT_DRAINING] = "draining",
        [RT_STOPPING] = "stopping", [RT_STOPPED] = "stopped",
    };
    return names[s];
}

static rt_service *
svc_of(const rt_instance *in)
{
    return in->rev->svc;
}

static kb_runtime *
rt_of(const rt_instance *in)
{
    return in->rev->svc->rt;
}

void
kb__rt_set_state(rt_instance *in, rt_state s)
{
    if (in->state == RT_RUNNING && s != RT_RUNNING)
        kb_gauge_add(svc_of(in)->running, -1);
    else if (in->state != RT_RUNNING && s == RT_RUNNING)
        kb_gauge_add(svc_of(in)->running, 1);
    pthread_mutex_lock(&rt_of(in)->ep_lock);
    in->state = s;
    if (s != RT_RUNNING)
        in->ready = false;
    pthread_mutex_unlock(&rt_of(in)->ep_lock);
}

static void
set_ready(rt_instance *in, bool ready)
{
    pthread_mutex_lock(&rt_of(in)->ep_lock);
    in->ready = ready;
    pthread_mutex_unlock(&rt_of(in)->ep_lock);
}

bool
kb__rt_instance_unleased(const rt_instance *in)
{
    return atomic_load(&in->inflight) == 0;
}

void
kb__rt_instance_try_free(rt_instance *in)
{
    if (in->state != RT_STOPPED || in->open_handles > 0
        || !kb__rt_instance_unleased(in))
        return;
    rt_revision *rev = in->rev;
    pthread_mutex_lock(&rt_of(in)->ep_lock);
    for (rt_instance **pp = &rev->instances; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    }
    pthread_mutex_unlock(&rt_of(in)->ep_lock);
    free(in);
    kb__rt_instance_freed(rev);
}

static void
handle_closed(uv_handle_t *h)
{
    rt_instance *in = h->data;

    in->open_handles--;
    kb__rt_instance_try_free(in);
}

static void
probes_cancel(rt_instance *in)
{
    kb__rt_probe_cancel(in->startup_run);
    kb__rt_probe_cancel(in->ready_run);
    kb__rt_probe_cancel(in->live_run);
    in->startup_run = in->ready_run = in->live_run = NULL;
}

static void stdio_close(struct rt_stdio *s);

/* Final: close what is open; the last close callback frees. */
static void
instance_dispose(rt_instance *in)
{
    kb__rt_set_state(in, RT_STOPPED);
    probes_cancel(in);
    uv_timer_stop(&in->timer);
    uv_timer_stop(&in->check_timer);
    uv_close((uv_handle_t *)&in->timer, handle_closed);
    uv_close((uv_handle_t *)&in->check_timer, handle_closed);
    stdio_close(in->out);
    stdio_close(in->err);
    in->out = in->err = NULL;
}

/* ---- store records: what a later server needs to reap this group ---- */

static void
record_done(int err, const kb_resource *res, void *data)
{
    (void)res;
    (void)data;
    if (err != 0 && err != KB_ENOTFOUND)
        kb_log_warn("instance record not written", "{s:s}",
                    "error", kb_strerror(err));
}

static void
record_put(rt_instance *in)
{
    kb_runtime *rt = rt_of(in);
    kb_put_opts opts = { .mode = KB_PUT_UPSERT };

    if (rt->store == NULL)
        return;
    json_t *doc = json_pack("{s:i, s:i, s:I, s:s, s:i, s:s, s:{s:i, s:I}}",
                            "pid", in->pid, "pgid", in->pid,
                            "startTime", (json_int_t)in->proc_start,
                            "bootId", rt->boot_id, "port", in->port,
                            "revision", in->rev->name,
                            "owner", "pid", rt->self_pid,
                            "startTime", (json_int_t)rt->self_start);
    if (doc == NULL)
        return;
    int rc = kb_store_put(rt->store, "instances", svc_of(in)->parent, in->id,
                          doc, &opts, record_done, NULL);
    json_decref(doc);
    if (rc < 0)
        record_done(rc, NULL, NULL);
    in->recorded = rc == 0;
}

static void
record_delete(rt_instance *in)
{
    kb_runtime *rt = rt_of(in);

    if (!in->recorded || rt->store == NULL)
        return;
    in->recorded = false;
    int rc = kb_store_delete(rt->store, "instances", svc_of(in)->parent,
                             in->id, 0, record_done, NULL);
    if (rc < 0)
        record_done(rc, NULL, NULL);
}

/* ---- captured output ---- */

static void
stdio_closed(uv_handle_t *h)
{
    struct rt_stdio *s = h->data;
    rt_instance *in = s->in;

    kb__rt_log_split_free(&s->split);
    free(s);
    if (in != NULL) {
        in->open_handles--;
        kb__rt_instance_try_free(in);
    }
}

static void
stdio_close(struct rt_stdio *s)
{
    if (s != NULL && !uv_is_closing((uv_handle_t *)&s->pipe))
        uv_close((uv_handle_t *)&s->pipe, stdio_closed);
}

static void
stdio_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct rt_stdio *s = h->data;

    (void)hint;
    *buf = uv_buf_init(s->buf, sizeof(s->buf));
}

/* Keep the instance's latest line (stderr preferred) for crash reports. */
static void
note_last_line(rt_instance *in, rt_log_stream stream, const char *p,
               size_t n)
{
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
        n--;
    (void)stream;
    if (n == 0)
        return;
    const char *nl = memrchr(p, '\n', n);
    if (nl != NULL) {
        n -= (size_t)(nl + 1 - p);
        p = nl + 1;
    }
    if (n >= sizeof(in->last_line))
        n = sizeof(in->last_line) - 1;
    memcpy(in->last_line, p, n);
    in->last_line[n] = '\0';
}

static void
stdio_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct rt_stdio *s = st->data;
    rt_log *log = s->in != NULL ? svc_of(s->in)->log : NULL;

    if (n > 0) {
        if (log != NULL)
            (void)kb__rt_log_split_feed(&s->split, log, buf->base,
                                        (size_t)n);
        if (s->in != NULL)
            note_last_line(s->in, s->stream, buf->base, (size_t)n);
        return;
    }
    if (n == 0)
        return;
    if (log != NULL)
        kb__rt_log_split_eof(&s->split, log);
    if (s->in != NULL) {
        if (s->in->out == s)
            s->in->out = NULL;
        if (s->in->err == s)
            s->in->err = NULL;
    }
    stdio_close(s);
}

/* A pipe for fd 1 or 2 of the next spawn.  NULL when out of memory. */
static struct rt_stdio *
stdio_new(rt_instance *in, rt_log_stream stream)
{
    struct rt_stdio *s = malloc(sizeof(*s));

    if (s == NULL)
        return NULL;
    if (uv_pipe_init(rt_of(in)->loop, &s->pipe, 0) < 0) {
        free(s);
        return NULL;
    }
    s->pipe.data = s;
    s->in = in;
    s->stream = stream;
    kb__rt_log_split_init(&s->split, in->rev->name, in->id, stream);
    in->open_handles++;
    return s;
}

/* ---- spawning ---- */

static bool
port_taken(const kb_runtime *rt, int port)
{
    for (const rt_service *s = rt->services; s != NULL; s = s->next)
        for (const rt_revision *r = s->revisions; r != NULL; r = r->next)
            for (const rt_instance *i = r->instances; i != NULL; i = i->next)
                if (i->port == port && i->state != RT_STOPPED)
                    return true;
    return false;
}

/*
 * A free loopback port: bind port 0, read the port, close.  The instance
 * binds it a moment later; someone else may take it in between (a small,
 * known race): the instance then fails to start and is restarted on a new
 * port.  Ports our own instances were given are skipped.
 */
static int
pick_port(const kb_runtime *rt, int *out)
{
    for (int tries = 0; tries < PORT_PICK_TRIES; tries++) {
        struct sockaddr_in a = { .sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0
            || getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        close(fd);
        int port = ntohs(a.sin_port);
        if (!port_taken(rt, port)) {
            *out = port;
            return 0;
        }
    }
    return KB_EBUSY;
}

static char *
pool_printf(kb_pool *pool, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *
pool_printf(kb_pool *pool, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return NULL;
    return kb_pool_strdup(pool, tmp);
}

static size_t
count(char *const *v)
{
    size_t n = 0;
    while (v != NULL && v[n] != NULL)
        n++;
    return n;
}

/* `kiban __shim --watch-fd 3 … -- command args…`.  NULL: out of memory. */
static char **
shim_args(kb_pool *pool, const rt_instance *in)
{
    const rt_template *t = &in->rev->tpl;
    const kb_runtime *rt = rt_of(in);
    size_t n = count(t->argv), k = 0;
    char **a = kb_pool_calloc(pool, (n + 24) * sizeof(char *));
    char *pid = pool_printf(pool, "%d", rt->self_pid);
    char *grace = pool_printf(pool, "%llu",
                              (unsigned long long)rt->shim_grace_ms);

    if (a == NULL || pid == NULL || grace == NULL)
        return NULL;
    a[k++] = rt->self_exe;
    a[k++] = "__shim";
    a[k++] = "--watch-fd";
    a[k++] = "3";               /* stdio[3] in instance_stdio() */
    a[k++] = "--server-pid";
    a[k++] = pid;
    a[k++] = "--grace-ms";
    a[k++] = grace;
    a[k++] = "--name";
    a[k++] = svc_of(in)->label;
    a[k++] = "--cgroup";
    a[k++] = (char *)in->id;
    if (t->memory_bytes > 0) {
        a[k++] = "--memory";
        if ((a[k++] = pool_printf(pool, "%llu",
                                  (unsigned long long)t->memory_bytes))
            == NULL)
            return NULL;
    }
    if (t->cpu_millis > 0) {
        a[k++] = "--cpu";
        if ((a[k++] = pool_printf(pool, "%u", t->cpu_millis)) == NULL)
            return NULL;
    }
    if (rt->run_as != NULL) {
        a[k++] = "--user";
        a[k++] = rt->run_as;
    }
    if (t->workdir != NULL) {
        a[k++] = "--workdir";
        a[k++] = t->workdir;
    }
    a[k++] = "--";
    for (size_t i = 0; i < n; i++)
        a[k++] = t->argv[i];
    a[k] = NULL;
    return a;
}

static bool
env_has(char *const *env, const char *entry)
{
    size_t len = strcspn(entry, "=");
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        if (strncmp(env[i], entry, len) == 0 && env[i][len] == '=')
            return true;
    return false;
}

/* The server's inherited basics, then the spec's env (which wins), then
 * what kiban sets.  NULL: out of memory. */
static char **
instance_env(kb_pool *pool, const rt_instance *in)
{
    const rt_service *svc = svc_of(in);
    const kb_runtime *rt = svc->rt;
    char *const *senv = in->rev->tpl.env;
    size_t k = 0, fixed;
    char **e = kb_pool_calloc(pool, (count(rt->base_env) + count(senv)
                                     + count(rt->run_as_env) + 6)
                                    * sizeof(char *));
    if (e == NULL)
        return NULL;
    for (size_t i = 0; rt->base_env[i] != NULL; i++) {
        if (env_has(senv, rt->base_env[i])
            || (rt->run_as_env != NULL
                && env_has(rt->run_as_env, rt->base_env[i])))
            continue;
        e[k++] = rt->base_env[i];
    }
    /* HOME, USER, LOGNAME of the user instances run as. */
    for (size_t i = 0; rt->run_as_env != NULL && rt->run_as_env[i] != NULL;
         i++)
        if (!env_has(senv, rt->run_as_env[i]))
            e[k++] = rt->run_as_env[i];
    for (size_t i = 0; senv != NULL && senv[i] != NULL; i++)
        e[k++] = senv[i];
    fixed = k;
    e[k++] = pool_printf(pool, "PORT=%d", in->port);
    e[k++] = pool_printf(pool, "K_SERVICE=%s", svc->name);
    e[k++] = pool_printf(pool, "K_REVISION=%s", in->rev->name);
    e[k++] = pool_printf(pool, "K_CONFIGURATION=%s", svc->name);
    e[k++] = pool_printf(pool, "KIBAN_PROJECT=%s", svc->project);
    e[k] = NULL;
    for (size_t i = fixed; i < k; i++)
        if (e[i] == NULL)
            return NULL;
    return e;
}

/*
 * Where an instance's stdio goes: stdin is /dev/null; stdout and stderr
 * are pipes the loop reads into the service's log; stdio[3] is the shim's
 * watch pipe.
 */
static void
instance_stdio(rt_instance *in, uv_stdio_container_t stdio[4])
{
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_IGNORE;
    if (in->out != NULL) {
        stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
        stdio[1].data.stream = (uv_stream_t *)&in->out->pipe;
    }
    if (in->err != NULL) {
        stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
        stdio[2].data.stream = (uv_stream_t *)&in->err->pipe;
    }
    stdio[3].flags = UV_INHERIT_FD;
    stdio[3].data.fd = rt_of(in)->watch_fd[0];
}

static void
schedule_restart(rt_instance *in)
{
    kb_runtime *rt = rt_of(in);

    if (in->exit_ms - in->spawn_ms >= rt->backoff_reset_ms)
        in->backoff_ms = rt->backoff_min_ms;    /* it ran long enough */
    uint64_t delay = in->backoff_ms;
    in->backoff_ms = delay * 2 > rt->backoff_max_ms ? rt->backoff_max_ms
                                                    : delay * 2;
    in->last_delay_ms = delay;
    in->restarts++;
    in->rev->restarts++;
    kb_counter_add(svc_of(in)->restarts_total, 1);
    kb_counter_add(in->rev->m.restarts, 1);
    kb__rt_set_state(in, RT_BACKOFF);
    kb_log_info("restart scheduled", "{s:s, s:s, s:s, s:I, s:I}",
                "service", svc_of(in)->label, "revision", in->rev->name,
                "instance", in->id, "delayMs", (json_int_t)delay,
                "restarts", (json_int_t)in->restarts);
    uv_timer_start(&in->timer, restart_due, delay, 0);
}

static bool
must_retire(const rt_instance *in)
{
    const rt_revision *rev = in->rev;
    return rev->retired || rev->svc->removed || rev->svc->rt->shutting_down;
}

static void
proc_closed(uv_handle_t *h)
{
    rt_instance *in = h->data;

    in->proc_open = false;
    in->open_handles--;
    record_delete(in);
    if (in->state == RT_STOPPED) {
        kb__rt_instance_try_free(in);
        return;
    }
    if (in->state == RT_STOPPING || in->state == RT_DRAINING
        || must_retire(in)) {
        instance_dispose(in);
        return;
    }
    schedule_restart(in);
    kb__rt_instance_changed(in);
}

json_t *
kb__rt_exit_json(const rt_instance *in)
{
    char ts[KB_RFC3339_LEN];

    if (!in->has_exit)
        return json_null();
    kb_time_rfc3339(ts, sizeof(ts), in->exit_time_ns, 3);
    if (in->exit_signal != 0)
        return json_pack("{s:i, s:s}", "signal", in->exit_signal,
                         "time", ts);
    return json_pack("{s:i, s:s}", "code", in->exit_code, "time", ts);
}

/*
 * The shim exited.  It reports the service's status, with 128+N for
 * "killed by signal N" (as shells do, so a service that itself exits with
 * 130 reads as SIGINT); if the shim was killed itself, libuv says so.
 */
static void
proc_exited(uv_process_t *p, int64_t status, int term_signal)
{
    rt_instance *in = p->data;
    bool asked = in->state == RT_STOPPING || in->state == RT_DRAINING;

    in->exited = true;
    in->exit_ms = kb_time_mono_ms();
    in->has_exit = true;
    in->exit_time_ns = kb_time_unix_ns();
    in->exit_code = -1;
    in->exit_signal = term_signal;
    if (term_signal == 0 && status > 128 && status < 128 + 65)
        in->exit_signal = (int)status - 128;
    else if (term_signal == 0)
        in->exit_code = (int)status;
    if (!asked && in->ready_ms == 0)
        in->fails_since_ready++;        /* died before it ever served */
    kb_log(asked ? KB_LOG_INFO : KB_LOG_WARN,
           "instance exited", "{s:s, s:s, s:s, s:i, s:o, s:I}",
           "service", svc_of(in)->label, "revision", in->rev->name,
           "instance", in->id, "pid", in->pid,
           "exit", kb__rt_exit_json(in),
           "ranMs", (json_int_t)(in->exit_ms - in->spawn_ms));
    probes_cancel(in);
    uv_timer_stop(&in->timer);
    uv_timer_stop(&in->check_timer);
    if (term_signal != 0)
        cgroup_cleanup(in);
    if (in->state == RT_STARTING || in->state == RT_RUNNING)
        kb__rt_set_state(in, RT_BACKOFF);   /* until proc_closed decides */
    uv_close((uv_handle_t *)p, proc_closed);
}

/* ---- killing ---- */

/* The shim did not act on SIGUSR1 in time (or is gone): kill the group
 * and whatever is left in the instance's cgroup ourselves. */
static void
kill_fallback(uv_timer_t *t)
{
    rt_instance *in = t->data;

    if (in->exited || !in->proc_open)
        return;
    kb_log_warn("instance supervisor did not stop its group, killing it",
                "{s:s, s:s, s:i}", "revision", in->rev->name,
                "instance", in->id, "pid", in->pid);
    kill(-in->pid, SIGKILL);
    (void)kb_limits_cgroup_signal(in->id, SIGKILL);
}

/*
 * Kill an instance now.  SIGUSR1 asks the shim to SIGKILL everything in
 * the instance's cgroup (or group), remove the cgroup and exit; killing
 * the shim itself first would leave the cgroup behind.
 */
static void
kill_now(rt_instance *in)
{
    if (in->exited || !in->proc_open)
        return;
    if (kill(in->pid, SIGUSR1) < 0) {
        kill(-in->pid, SIGKILL);
        return;
    }
    uv_timer_start(&in->timer, kill_fallback, KILL_FALLBACK_MS, 0);
}

/* A shim killed by a signal could not clean up: do it (without
 * blocking: a cgroup still busy is retried by the scale pass). */
static void
cgroup_cleanup(rt_instance *in)
{
    kb_runtime *rt = rt_of(in);

    (void)kb_limits_cgroup_signal(in->id, SIGKILL);
    if (kb_limits_cgroup_remove(in->id) == KB_EBUSY
        && rt->ncgroups_left < KB_RT_MAX_CGROUPS_LEFT)
        memcpy(rt->cgroups_left[rt->ncgroups_left++], in->id,
               sizeof(in->id));
}

/* ---- probes ---- */

static uint64_t
probe_budget_ms(const rt_probe *p)
{
    return p->initial_delay_ms + p->period_ms * (uint64_t)p->failure_threshold;
}

/* The probe gave up on a started instance: kill it; the exit restarts. */
static void
kill_instance(rt_instance *in, const char *what, const char *why)
{
    kb_log_warn("instance failed its probe, killing it",
                "{s:s, s:s, s:s, s:s, s:s}", "service", svc_of(in)->label,
                "revision", in->rev->name, "instance", in->id, "probe", what,
                "reason", why);
    kill_now(in);
}

static void
became_ready(rt_instance *in)
{
    uint64_t now = kb_time_mono_ms();
    const rt_template *t = &in->rev->tpl;

    in->ready_ms = now;
    in->idle_since_ms = now;
    in->fails_since_ready = 0;
    in->startup_failed = false;
    kb__rt_set_state(in, RT_RUNNING);
    set_ready(in, !t->readiness.set);
    kb_log_info("instance ready", "{s:s, s:s, s:s, s:i, s:i, s:I}",
                "service", svc_of(in)->label, "revision", in->rev->name,
                "instance", in->id, "pid", in->pid, "port", in->port,
                "startupMs", (json_int_t)(now - in->spawn_ms));
    in->next_ready_ms = now + (t->readiness.set ? t->readiness.initial_delay_ms
                                                : 0);
    in->next_live_ms = now + t->liveness.initial_delay_ms
                       + t->liveness.period_ms;
    if (t->readiness.set || t->liveness.set)
        uv_timer_start(&in->check_timer, check_tick,
                       t->readiness.set ? t->readiness.initial_delay_ms
                                        : t->liveness.initial_delay_ms
                                          + t->liveness.period_ms, 0);
    kb__rt_instance_changed(in);
}

static void
startup_done(void *data, bool ok, const char *why)
{
    rt_instance *in = data;
    const rt_probe *p = &in->rev->tpl.startup;
    kb_runtime *rt = rt_of(in);
    uint64_t limit = probe_budget_ms(p);

    in->startup_run = NULL;
    if (in->state != RT_STARTING || in->exited)
        return;
    if (ok) {
        became_ready(in);
        return;
    }
    snprintf(in->last_probe_error, sizeof(in->last_probe_error), "%s", why);
    if (!p->set) {
        /* The default probe's quick tries before its first period are
         * not counted: failure_threshold keeps meaning periods. */
        uint64_t since = kb_time_mono_ms() - in->spawn_ms;

        if (since < p->period_ms) {
            uint64_t next = since < STARTUP_FIRST_MS ? STARTUP_FIRST_MS
                                                     : since;

            if (next > STARTUP_QUICK_MS)
                next = STARTUP_QUICK_MS;
            if (next > p->period_ms - since)
                next = p->period_ms - since;
            uv_timer_start(&in->timer, startup_tick, next, 0);
            return;
        }
    }
    in->startup_fails++;
    if (rt->start_timeout_ms != 0 && rt->start_timeout_ms < limit)
        limit = rt->start_timeout_ms;
    if (in->startup_fails >= p->failure_threshold
        || kb_time_mono_ms() - in->spawn_ms >= limit) {
        in->timed_out = true;
        in->startup_failed = true;
        snprintf(in->last_line, sizeof(in->last_line), "startup probe: %s",
                 why);
        kill_instance(in, "startup", why);
        return;
    }
    uv_timer_start(&in->timer, startup_tick, p->period_ms, 0);
}

static void
startup_tick(uv_timer_t *t)
{
    rt_instance *in = t->data;

    if (in->state != RT_STARTING || in->exited || in->startup_run != NULL)
        return;
    if (kb__rt_probe_start(rt_of(in)->loop, in->port, &in->rev->tpl.startup,
                           startup_done, in, &in->startup_run) < 0) {
        in->startup_run = NULL;
        uv_timer_start(&in->timer, startup_tick,
                       in->rev->tpl.startup.period_ms, 0);
    }
}

static void
ready_done(void *data, bool ok, const char *why)
{
    rt_instance *in = data;
    const rt_probe *p = &in->rev->tpl.readiness;

    in->ready_run = NULL;
    if (in->state != RT_RUNNING)
        return;
    if (ok) {
        in->ready_fails = 0;
        if (!in->ready) {
            set_ready(in, true);
            kb__rt_instance_changed(in);
        }
        return;
    }
    snprintf(in->last_probe_error, sizeof(in->last_probe_error), "%s", why);
    if (++in->ready_fails >= p->failure_threshold && in->ready) {
        kb_log_warn("instance not ready", "{s:s, s:s, s:s, s:s}", "service",
                    svc_of(in)->label, "revision", in->rev->name,
                    "instance", in->id, "reason", why);
        set_ready(in, false);
        kb__rt_instance_changed(in);
    }
}

static void
live_done(void *data, bool ok, const char *why)
{
    rt_instance *in = data;

    in->live_run = NULL;
    if (in->state != RT_RUNNING && in->state != RT_DRAINING)
        return;
    if (ok) {
        in->live_fails = 0;
        return;
    }
    snprintf(in->last_probe_error, sizeof(in->last_probe_error), "%s", why);
    if (++in->live_fails >= in->rev->tpl.liveness.failure_threshold) {
        in->live_fails = 0;
        kill_instance(in, "liveness", why);
    }
}

/* Readiness and liveness: each on its own period, one timer. */
static void
check_tick(uv_timer_t *t)
{
    rt_instance *in = t->data;
    const rt_template *tpl = &in->rev->tpl;
    kb_runtime *rt = rt_of(in);
    uint64_t now = kb_time_mono_ms(), next = UINT64_MAX;

    if ((in->state != RT_RUNNING && in->state != RT_DRAINING) || in->exited)
        return;
    if (tpl->readiness.set && in->state == RT_RUNNING) {
        if (now >= in->next_ready_ms && in->ready_run == NULL) {
            if (kb__rt_probe_start(rt->loop, in->port, &tpl->readiness,
                                   ready_done, in, &in->ready_run) < 0)
                in->ready_run = NULL;
            in->next_ready_ms = now + tpl->readiness.period_ms;
        }
        next = in->next_ready_ms;
    }
    if (tpl->liveness.set) {
        if (now >= in->next_live_ms && in->live_run == NULL) {
            if (kb__rt_probe_start(rt->loop, in->port, &tpl->liveness,
                                   live_done, in, &in->live_run) < 0)
                in->live_run = NULL;
            in->next_live_ms = now + tpl->liveness.period_ms;
        }
        if (in->next_live_ms < next)
            next = in->next_live_ms;
    }
    if (next != UINT64_MAX)
        uv_timer_start(&in->check_timer, check_tick,
                       next > now ? next - now : 1, 0);
}

/* Start (or restart) the shim.  A failure counts as an exit: backoff. */
static void
instance_spawn(rt_instance *in)
{
    kb_runtime *rt = rt_of(in);
    uv_process_options_t opts = { 0 };
    uv_stdio_container_t stdio[4];
    kb_pool *pool = kb_pool_create(0);
    int rc;

    in->exited = false;
    in->timed_out = false;
    in->pid = 0;
    in->ready_ms = 0;
    in->startup_fails = in->ready_fails = in->live_fails = 0;
    in->spawn_ms = kb_time_mono_ms();
    in->idle_since_ms = in->spawn_ms;
    kb__rt_set_state(in, RT_STARTING);

    rc = pool == NULL ? KB_ENOMEM : pick_port(rt, &in->port);
    if (rc == 0) {
        opts.file = rt->self_exe;
        opts.args = shim_args(pool, in);
        opts.env = instance_env(pool, in);
        if (opts.args == NULL || opts.env == NULL)
            rc = KB_ENOMEM;
    }
    if (rc == 0) {
        /* A previous spawn's pipes may still drain: they close at EOF
         * and still count in open_handles until then. */
        in->out = stdio_new(in, RT_LOG_STDOUT);
        in->err = stdio_new(in, RT_LOG_STDERR);
        instance_stdio(in, stdio);
        opts.stdio = stdio;
        opts.stdio_count = 4;
        opts.exit_cb = proc_exited;
        opts.flags = UV_PROCESS_DETACHED;   /* setsid() before exec */
        in->proc.data = in;
        rc = uv_spawn(rt->loop, &in->proc, &opts);
        in->proc_open = true;           /* even on failure: must be closed */
        in->open_handles++;
    }
    kb_pool_destroy(pool);

    if (rc < 0) {
        kb_log_error("instance could not be started", "{s:s, s:s, s:s}",
                     "revision", in->rev->name, "instance", in->id,
                     "error", kb_strerror(rc));
        in->exited = true;
        in->exit_ms = in->spawn_ms;
        in->has_exit = true;
        in->exit_code = -1;
        in->exit_signal = 0;
        in->exit_time_ns = kb_time_unix_ns();
        in->fails_since_ready++;
        stdio_close(in->out);
        stdio_close(in->err);
        in->out = in->err = NULL;
        kb__rt_set_state(in, RT_BACKOFF);
        if (in->proc_open)
            uv_close((uv_handle_t *)&in->proc, proc_closed);
        else
            schedule_restart(in);
        return;
    }
    if (in->out != NULL)
        uv_read_start((uv_stream_t *)&in->out->pipe, stdio_alloc, stdio_read);
    if (in->err != NULL)
        uv_read_start((uv_stream_t *)&in->err->pipe, stdio_alloc, stdio_read);
    in->pid = in->proc.pid;
    (void)kb__proc_stat(in->pid, NULL, NULL, &in->proc_start);
    record_put(in);
    kb_log_info("instance started", "{s:s, s:s, s:s, s:i, s:i}",
                "service", svc_of(in)->label, "revision", in->rev->name,
                "instance", in->id, "pid", in->pid, "port", in->port);
    uv_timer_start(&in->timer, startup_tick,
                   in->rev->tpl.startup.initial_delay_ms
                   + (in->rev->tpl.startup.set ? 0 : STARTUP_FIRST_MS),
                   0);
}

static void
restart_due(uv_timer_t *t)
{
    instance_spawn(t->data);
}

static int
local_add(rt_revision *rev)
{
    kb_runtime *rt = rev->svc->rt;
    rt_instance *in = calloc(1, sizeof(*in));

    if (in == NULL)
        return KB_ENOMEM;
    if (kb_random_hex(in->id, (sizeof(in->id) - 1) / 2) < 0)
        snprintf(in->id, sizeof(in->id), "%p", (void *)in);
    in->rev = rev;
    in->backoff_ms = rt->backoff_min_ms;
    uv_timer_init(rt->loop, &in->timer);
    uv_timer_init(rt->loop, &in->check_timer);
    in->timer.data = in;
    in->check_timer.data = in;
    in->open_handles = 2;

    rt_instance **pp = &rev->instances;
    pthread_mutex_lock(&rt->ep_lock);
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = in;
    pthread_mutex_unlock(&rt->ep_lock);
    rev->ninstances++;
    instance_spawn(in);
    return 0;
}

static void
grace_expired(uv_timer_t *t)
{
    rt_instance *in = t->data;

    if (in->exited || !in->proc_open)
        return;
    kb_log_warn("instance did not stop in time, killing its group",
                "{s:s, s:s, s:i}", "revision", in->rev->name,
                "instance", in->id, "pid", in->pid);
    kill_now(in);
}

/*
 * SIGTERM goes to the shim, which relays it to the whole group (each
 * member gets it once); SIGKILL to the group after the grace period.
 */
static void
local_stop(rt_instance *in)
{
    kb_runtime *rt = rt_of(in);
    uint64_t grace = rt->stop_grace_ms != 0 ? rt->stop_grace_ms
                                            : in->rev->tpl.grace_ms;

    switch (in->state) {
    case RT_STOPPING:
    case RT_STOPPED:
        return;
    case RT_BACKOFF:
        if (in->proc_open)      /* exited, close pending: it disposes */
            kb__rt_set_state(in, RT_STOPPING);
        else
            instance_dispose(in);
        return;
    case RT_STARTING:
    case RT_RUNNING:
    case RT_DRAINING:
        probes_cancel(in);
        uv_timer_stop(&in->check_timer);
        kb__rt_set_state(in, RT_STOPPING);
        if (in->exited || !in->proc_open)
            return;
        if (kill(in->pid, SIGTERM) < 0)
            kill(-in->pid, SIGTERM);
        uv_timer_start(&in->timer, grace_expired, grace, 0);
        return;
    }
}

static json_t *
local_status(const rt_instance *in)
{
    json_t *o = json_pack("{s:s, s:i, s:i, s:s, s:b, s:i, s:I, s:o, s:I}",
                          "id", in->id, "pid", in->pid, "port", in->port,
                          "state", kb__rt_state_name(in->state),
                          "ready", kb__rt_serving(in),
                          "inflight", atomic_load(&in->inflight),
                          "restarts", (json_int_t)in->restarts,
                          "lastExit", kb__rt_exit_json(in),
                          "backoffMs", (json_int_t)in->last_delay_ms);
    if (o != NULL && in->last_probe_error[0] != '\0')
        json_object_set_new(o, "lastProbeError",
                            json_string(in->last_probe_error));
    return o;
}

const rt_executor kb__rt_local_executor = {
    .name = "local",
    .add = local_add,
    .stop = local_stop,
    .status = local_status,
};
