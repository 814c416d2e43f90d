/*
 * supervisor.c - the life of one instance: start it through the shim on a
 * fresh loopback port, probe the port until it accepts, restart it with
 * exponential backoff when it exits, stop its process group on request.
 * runtime.c decides how many instances a service has and of which spec;
 * this file runs each one.  The state diagram is in runtime_int.h.
 *
 * Handle rules: an instance owns a timer (open for its whole life), the
 * shim's process handle (open from spawn until its exit is handled) and at
 * most one probe connection.  It is freed in the close callback of the
 * last of them, never inside a callback of its own handles.
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

#define PORT_PICK_TRIES 16

static void instance_spawn(rt_instance *in);
static void restart_due(uv_timer_t *t);

const char *
kb__rt_state_name(rt_state s)
{
    static const char *const names[] = {
        [RT_STARTING] = "starting", [RT_RUNNING] = "running",
        [RT_BACKOFF] = "backoff",   [RT_STOPPING] = "stopping",
        [RT_STOPPED] = "stopped",
    };
    return names[s];
}

/* Every state change goes through here, so the running gauge stays true. */
static void
set_state(rt_instance *in, rt_state s)
{
    if (in->state == RT_RUNNING && s != RT_RUNNING)
        kb_gauge_add(in->svc->running, -1);
    else if (in->state != RT_RUNNING && s == RT_RUNNING)
        kb_gauge_add(in->svc->running, 1);
    pthread_mutex_lock(&in->svc->rt->ep_lock);
    in->state = s;
    pthread_mutex_unlock(&in->svc->rt->ep_lock);
}

static void
maybe_free(rt_instance *in)
{
    if (in->state != RT_STOPPED || in->open_handles > 0)
        return;
    rt_service *svc = in->svc;
    pthread_mutex_lock(&svc->rt->ep_lock);
    for (rt_instance **pp = &svc->instances; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    }
    pthread_mutex_unlock(&svc->rt->ep_lock);
    free(in);
    kb__rt_instance_freed(svc);
}

static void
handle_closed(uv_handle_t *h)
{
    rt_instance *in = h->data;

    in->open_handles--;
    maybe_free(in);
}

/* Final: close what is open; the last close callback frees. */
static void
instance_dispose(rt_instance *in)
{
    set_state(in, RT_STOPPED);
    uv_timer_stop(&in->timer);
    uv_close((uv_handle_t *)&in->timer, handle_closed);
    if (in->probe_open && !uv_is_closing((uv_handle_t *)&in->probe))
        uv_close((uv_handle_t *)&in->probe, handle_closed);
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
    kb_runtime *rt = in->svc->rt;
    kb_put_opts opts = { .mode = KB_PUT_UPSERT };

    if (rt->store == NULL)
        return;
    json_t *doc = json_pack("{s:i, s:i, s:I, s:s, s:i, s:{s:i, s:I}}",
                            "pid", in->pid, "pgid", in->pid,
                            "startTime", (json_int_t)in->proc_start,
                            "bootId", rt->boot_id, "port", in->port,
                            "owner", "pid", rt->self_pid,
                            "startTime", (json_int_t)rt->self_start);
    if (doc == NULL)
        return;
    int rc = kb_store_put(rt->store, "instances", in->svc->parent, in->id,
                          doc, &opts, record_done, NULL);
    json_decref(doc);
    if (rc < 0)
        record_done(rc, NULL, NULL);
    in->recorded = rc == 0;
}

static void
record_delete(rt_instance *in)
{
    kb_runtime *rt = in->svc->rt;

    if (!in->recorded || rt->store == NULL)
        return;
    in->recorded = false;
    int rc = kb_store_delete(rt->store, "instances", in->svc->parent, in->id,
                             0, record_done, NULL);
    if (rc < 0)
        record_done(rc, NULL, NULL);
}

/* ---- spawning ---- */

static bool
port_taken(const kb_runtime *rt, int port)
{
    for (const rt_service *s = rt->services; s != NULL; s = s->next)
        for (const rt_instance *i = s->instances; i != NULL; i = i->next)
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
    char tmp[256];
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
    const rt_service *svc = in->svc;
    const kb_runtime *rt = svc->rt;
    size_t n = count(svc->argv), k = 0;
    char **a = kb_pool_calloc(pool, (n + 12) * sizeof(char *));
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
    a[k++] = svc->label;
    a[k++] = "--";
    for (size_t i = 0; i < n; i++)
        a[k++] = svc->argv[i];
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
    const rt_service *svc = in->svc;
    const kb_runtime *rt = svc->rt;
    size_t k = 0;
    char **e = kb_pool_calloc(pool, (count(rt->base_env) + count(svc->env)
                                     + 4) * sizeof(char *));
    if (e == NULL)
        return NULL;
    for (size_t i = 0; rt->base_env[i] != NULL; i++)
        if (!env_has(svc->env, rt->base_env[i]))
            e[k++] = rt->base_env[i];
    for (size_t i = 0; svc->env[i] != NULL; i++)
        e[k++] = svc->env[i];
    e[k++] = pool_printf(pool, "PORT=%d", in->port);
    e[k++] = pool_printf(pool, "K_SERVICE=%s", svc->name);
    e[k++] = pool_printf(pool, "KIBAN_PROJECT=%s", svc->project);
    e[k] = NULL;
    return e[k - 1] && e[k - 2] && e[k - 3] ? e : NULL;
}

/*
 * Where an instance's stdio goes: stdin is /dev/null, stdout and stderr go
 * straight to the server's stderr.  This is the hook for log capture: give
 * stdio[1] and stdio[2] UV_CREATE_PIPE streams here and read them on the
 * loop (line-prefixed, structured, bounded).  stdio[3] is the shim's
 * watch pipe and must stay.
 */
static void
instance_stdio(const rt_instance *in, uv_stdio_container_t stdio[4])
{
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = STDERR_FILENO;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = STDERR_FILENO;
    stdio[3].flags = UV_INHERIT_FD;
    stdio[3].data.fd = in->svc->rt->watch_fd[0];
}

static void
schedule_restart(rt_instance *in)
{
    kb_runtime *rt = in->svc->rt;

    if (in->exit_ms - in->spawn_ms >= rt->backoff_reset_ms)
        in->backoff_ms = rt->backoff_min_ms;    /* it ran long enough */
    uint64_t delay = in->backoff_ms;
    in->backoff_ms = delay * 2 > rt->backoff_max_ms ? rt->backoff_max_ms
                                                    : delay * 2;
    in->last_delay_ms = delay;
    in->restarts++;
    kb_counter_add(in->svc->restarts_total, 1);
    set_state(in, RT_BACKOFF);
    kb_log_info("restart scheduled", "{s:s, s:s, s:I, s:I}",
                "service", in->svc->label, "instance", in->id,
                "delayMs", (json_int_t)delay,
                "restarts", (json_int_t)in->restarts);
    uv_timer_start(&in->timer, restart_due, delay, 0);
}

static bool
must_retire(const rt_instance *in)
{
    const rt_service *svc = in->svc;
    return svc->removed || svc->rt->shutting_down
           || in->generation != svc->generation;
}

static void
proc_closed(uv_handle_t *h)
{
    rt_instance *in = h->data;

    in->proc_open = false;
    in->open_handles--;
    record_delete(in);
    if (in->state == RT_STOPPED)
        maybe_free(in);
    else if (in->state == RT_STOPPING || must_retire(in))
        instance_dispose(in);
    else
        schedule_restart(in);
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
    kb_log(in->state == RT_STOPPING ? KB_LOG_INFO : KB_LOG_WARN,
           "instance exited", "{s:s, s:s, s:i, s:o, s:I}",
           "service", in->svc->label, "instance", in->id, "pid", in->pid,
           "exit", kb__rt_exit_json(in),
           "ranMs", (json_int_t)(in->exit_ms - in->spawn_ms));
    uv_timer_stop(&in->timer);
    if (in->state == RT_STARTING || in->state == RT_RUNNING)
        set_state(in, RT_BACKOFF);      /* until proc_closed decides */
    uv_close((uv_handle_t *)p, proc_closed);
}

/* ---- readiness: the port accepts a connection ---- */

static void probe_tick(uv_timer_t *t);

static void
probe_closed(uv_handle_t *h)
{
    rt_instance *in = h->data;
    kb_runtime *rt = in->svc->rt;

    in->probe_open = false;
    in->open_handles--;
    if (in->state == RT_STARTING && !in->exited && !in->timed_out)
        uv_timer_start(&in->timer, probe_tick, rt->probe_interval_ms, 0);
    maybe_free(in);
}

static void
probe_done(uv_connect_t *req, int status)
{
    rt_instance *in = req->data;

    if (status == 0 && in->state == RT_STARTING && !in->exited) {
        set_state(in, RT_RUNNING);
        kb_log_info("instance ready", "{s:s, s:s, s:i, s:i, s:I}",
                    "service", in->svc->label, "instance", in->id,
                    "pid", in->pid, "port", in->port, "startupMs",
                    (json_int_t)(kb_time_mono_ms() - in->spawn_ms));
        kb__rt_service_changed(in->svc);
    }
    if (!uv_is_closing((uv_handle_t *)&in->probe))
        uv_close((uv_handle_t *)&in->probe, probe_closed);
}

static void
probe_tick(uv_timer_t *t)
{
    rt_instance *in = t->data;
    kb_runtime *rt = in->svc->rt;
    struct sockaddr_in addr;

    if (in->state != RT_STARTING || in->exited || in->probe_open)
        return;
    if (kb_time_mono_ms() - in->spawn_ms >= rt->start_timeout_ms) {
        in->timed_out = true;
        kb_log_warn("instance not ready in time, killing it",
                    "{s:s, s:s, s:i, s:i, s:I}", "service", in->svc->label,
                    "instance", in->id, "pid", in->pid, "port", in->port,
                    "timeoutMs", (json_int_t)rt->start_timeout_ms);
        kill(-in->pid, SIGKILL);        /* exit → restart with backoff */
        return;
    }
    uv_ip4_addr("127.0.0.1", in->port, &addr);
    if (uv_tcp_init(rt->loop, &in->probe) < 0) {
        uv_timer_start(&in->timer, probe_tick, rt->probe_interval_ms, 0);
        return;
    }
    in->probe.data = in;
    in->probe_req.data = in;
    in->probe_open = true;
    in->open_handles++;
    if (uv_tcp_connect(&in->probe_req, &in->probe,
                       (const struct sockaddr *)&addr, probe_done) < 0)
        uv_close((uv_handle_t *)&in->probe, probe_closed);
}

/* Start (or restart) the shim.  A failure counts as an exit: backoff. */
static void
instance_spawn(rt_instance *in)
{
    rt_service *svc = in->svc;
    kb_runtime *rt = svc->rt;
    uv_process_options_t opts = { 0 };
    uv_stdio_container_t stdio[4];
    kb_pool *pool = kb_pool_create(0);
    int rc;

    in->exited = false;
    in->timed_out = false;
    in->pid = 0;
    in->spawn_ms = kb_time_mono_ms();
    set_state(in, RT_STARTING);

    rc = pool == NULL ? KB_ENOMEM : pick_port(rt, &in->port);
    if (rc == 0) {
        opts.file = rt->self_exe;
        opts.args = shim_args(pool, in);
        opts.env = instance_env(pool, in);
        if (opts.args == NULL || opts.env == NULL)
            rc = KB_ENOMEM;
    }
    if (rc == 0) {
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
                     "service", svc->label, "instance", in->id,
                     "error", kb_strerror(rc));
        in->exited = true;
        in->exit_ms = in->spawn_ms;
        in->has_exit = true;
        in->exit_code = -1;
        in->exit_signal = 0;
        in->exit_time_ns = kb_time_unix_ns();
        set_state(in, RT_BACKOFF);
        if (in->proc_open)
            uv_close((uv_handle_t *)&in->proc, proc_closed);
        else
            schedule_restart(in);
        return;
    }
    in->pid = in->proc.pid;
    (void)kb__proc_stat(in->pid, NULL, NULL, &in->proc_start);
    record_put(in);
    kb_log_info("instance started", "{s:s, s:s, s:i, s:i}",
                "service", svc->label, "instance", in->id,
                "pid", in->pid, "port", in->port);
    uv_timer_start(&in->timer, probe_tick, rt->probe_interval_ms, 0);
}

static void
restart_due(uv_timer_t *t)
{
    instance_spawn(t->data);
}

int
kb__rt_instance_add(rt_service *svc)
{
    kb_runtime *rt = svc->rt;
    rt_instance *in = calloc(1, sizeof(*in));

    if (in == NULL)
        return KB_ENOMEM;
    if (kb_random_hex(in->id, (sizeof(in->id) - 1) / 2) < 0)
        snprintf(in->id, sizeof(in->id), "%p", (void *)in);
    in->svc = svc;
    in->generation = svc->generation;
    in->backoff_ms = rt->backoff_min_ms;
    uv_timer_init(rt->loop, &in->timer);
    in->timer.data = in;
    in->open_handles = 1;

    rt_instance **pp = &svc->instances;
    pthread_mutex_lock(&rt->ep_lock);
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = in;
    pthread_mutex_unlock(&rt->ep_lock);
    svc->ninstances++;
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
                "{s:s, s:s, s:i}", "service", in->svc->label,
                "instance", in->id, "pid", in->pid);
    kill(-in->pid, SIGKILL);
}

/*
 * SIGTERM goes to the shim, which relays it to the whole group (each
 * member gets it once); SIGKILL to the group after the grace period.
 */
void
kb__rt_instance_stop(rt_instance *in)
{
    kb_runtime *rt = in->svc->rt;

    switch (in->state) {
    case RT_STOPPING:
    case RT_STOPPED:
        return;
    case RT_BACKOFF:
        if (in->proc_open)      /* exited, close pending: it disposes */
            set_state(in, RT_STOPPING);
        else
            instance_dispose(in);
        return;
    case RT_STARTING:
    case RT_RUNNING:
        set_state(in, RT_STOPPING);
        if (in->exited || !in->proc_open)
            return;
        if (kill(in->pid, SIGTERM) < 0)
            kill(-in->pid, SIGTERM);
        uv_timer_start(&in->timer, grace_expired, rt->stop_grace_ms, 0);
        return;
    }
}

json_t *
kb__rt_instance_status(const rt_instance *in)
{
    return json_pack("{s:s, s:i, s:i, s:s, s:I, s:o, s:I}",
                     "id", in->id, "pid", in->pid, "port", in->port,
                     "state", kb__rt_state_name(in->state),
                     "restarts", (json_int_t)in->restarts,
                     "lastExit", kb__rt_exit_json(in),
                     "backoffMs", (json_int_t)in->last_delay_ms);
}
