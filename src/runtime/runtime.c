/*
 * runtime.c - services as sets of supervised local processes (runtime.h):
 * spec validation, apply/reconcile, endpoint selection, status, shutdown,
 * and reaping the process groups a killed server left behind.  Each
 * instance's life (spawn, probe, backoff, stop) is in supervisor.c; the
 * per-instance supervisor process is shim.c.
 */
#include "runtime/runtime_int.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

#define NAME_MAX_LEN 200        /* project and service names */

/* Passed from the server's environment to every instance; anything else
 * an instance needs goes in its spec's env. */
static const char *const inherited_env[] = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
};
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* Set by kiban for every instance; a spec may not set them. */
static const char *const reserved_env[] = {
    "PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "KIBAN_PROJECT",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- validation: one table of spec fields ---- */

typedef int (*field_check)(const json_t *v, char *err, size_t errlen);

/* A JSON string without NULs, at most KB_RT_MAX_STRING bytes. */
static bool
good_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) <= KB_RT_MAX_STRING
           && strlen(json_string_value(v)) == json_string_length(v);
}

static int
check_command(const json_t *v, char *err, size_t errlen)
{
    if (!good_string(v) || json_string_length(v) == 0) {
        set_err(err, errlen, "command: must be a non-empty string "
                "(at most %d bytes)", KB_RT_MAX_STRING);
        return KB_EINVAL;
    }
    return 0;
}

static int
check_args(const json_t *v, char *err, size_t errlen)
{
    size_t i;
    const json_t *a;

    if (!json_is_array(v) || json_array_size(v) > KB_RT_MAX_ARGS) {
        set_err(err, errlen, "args: must be an array of at most %d strings",
                KB_RT_MAX_ARGS);
        return KB_EINVAL;
    }
    json_array_foreach(v, i, a) {
        if (!good_string(a)) {
            set_err(err, errlen, "args[%zu]: must be a string (at most %d "
                    "bytes, no NUL)", i, KB_RT_MAX_STRING);
            return KB_EINVAL;
        }
    }
    return 0;
}

static bool
env_name_ok(const char *k)
{
    if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || *k == '_'))
        return false;
    for (k++; *k != '\0'; k++)
        if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z')
              || (*k >= '0' && *k <= '9') || *k == '_'))
            return false;
    return true;
}

static int
check_env(const json_t *v, char *err, size_t errlen)
{
    const char *k;
    const json_t *val;

    if (!json_is_object(v) || json_object_size(v) > KB_RT_MAX_ENV) {
        set_err(err, errlen, "env: must be an object of at most %d strings",
                KB_RT_MAX_ENV);
        return KB_EINVAL;
    }
    json_object_foreach((json_t *)v, k, val) {
        if (strlen(k) > 256 || !env_name_ok(k)) {
            set_err(err, errlen, "env.%.64s: invalid name (want "
                    "[A-Za-z_][A-Za-z0-9_]*, at most 256 bytes)", k);
            return KB_EINVAL;
        }
        for (size_t i = 0; i < NELEM(reserved_env); i++) {
            if (strcmp(k, reserved_env[i]) == 0) {
                set_err(err, errlen, "env.%s: reserved, kiban sets it", k);
                return KB_EINVAL;
            }
        }
        if (!good_string(val)) {
            set_err(err, errlen, "env.%s: must be a string (at most %d "
                    "bytes, no NUL)", k, KB_RT_MAX_STRING);
            return KB_EINVAL;
        }
    }
    return 0;
}

static int
check_instances(const json_t *v, char *err, size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0
        || json_integer_value(v) > KB_RT_MAX_INSTANCES) {
        set_err(err, errlen, "instances: must be an integer from 0 to %d",
                KB_RT_MAX_INSTANCES);
        return KB_EINVAL;
    }
    return 0;
}

static const struct spec_field {
    const char *name;
    bool        required;
    bool        template;       /* a change replaces the instances */
    field_check check;
} spec_fields[] = {
    { "command",   true,  true,  check_command },
    { "args",      false, true,  check_args },
    { "env",       false, true,  check_env },
    { "instances", false, false, check_instances },
};

int
kb_runtime_validate(const json_t *spec, char *err, size_t errlen)
{
    const char *k;
    const json_t *v;

    if (!json_is_object(spec)) {
        set_err(err, errlen, "spec: must be an object");
        return KB_EINVAL;
    }
    json_object_foreach((json_t *)spec, k, v) {
        size_t i = 0;
        while (i < NELEM(spec_fields) && strcmp(spec_fields[i].name, k) != 0)
            i++;
        if (i == NELEM(spec_fields)) {
            set_err(err, errlen, "%.64s: unknown field (known: command, "
                    "args, env, instances)", k);
            return KB_EINVAL;
        }
        int rc = spec_fields[i].check(v, err, errlen);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < NELEM(spec_fields); i++) {
        if (spec_fields[i].required
            && json_object_get(spec, spec_fields[i].name) == NULL) {
            set_err(err, errlen, "%s: required", spec_fields[i].name);
            return KB_EINVAL;
        }
    }
    return 0;
}

/* Do two specs run the same processes (all but the instance count)? */
static bool
same_template(const json_t *a, const json_t *b)
{
    for (size_t i = 0; i < NELEM(spec_fields); i++) {
        if (!spec_fields[i].template)
            continue;
        const json_t *x = json_object_get(a, spec_fields[i].name);
        const json_t *y = json_object_get(b, spec_fields[i].name);
        if ((x == NULL) != (y == NULL) || (x != NULL && !json_equal(x, y)))
            return false;
    }
    return true;
}

static void
free_strv(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

/* command + args as a NULL-terminated vector, env as "K=V" (validated
 * spec).  0 or KB_ENOMEM; on error nothing is allocated. */
static int
spec_parse(const json_t *spec, char ***argv_out, char ***env_out)
{
    const json_t *args = json_object_get(spec, "args");
    const json_t *env = json_object_get(spec, "env");
    size_t nargs = json_array_size(args), nenv = json_object_size(env), i;
    char **argv = calloc(nargs + 2, sizeof(char *));
    char **envv = calloc(nenv + 1, sizeof(char *));
    const json_t *v;
    const char *k;

    if (argv == NULL || envv == NULL)
        goto out_nomem;
    if ((argv[0] = strdup(json_string_value(json_object_get(spec, "command"))))
        == NULL)
        goto out_nomem;
    json_array_foreach(args, i, v) {
        if ((argv[i + 1] = strdup(json_string_value(v))) == NULL)
            goto out_nomem;
    }
    i = 0;
    json_object_foreach((json_t *)env, k, v) {
        kb_buf b = KB_BUF_INIT(KB_RT_MAX_STRING + 512);
        if (kb_buf_appendf(&b, "%s=%s", k, json_string_value(v)) < 0
            || (envv[i++] = kb_buf_detach(&b)) == NULL) {
            kb_buf_free(&b);
            goto out_nomem;
        }
    }
    *argv_out = argv;
    *env_out = envv;
    return 0;

out_nomem:
    free_strv(argv);
    free_strv(envv);
    return KB_ENOMEM;
}

/* ---- services ---- */

static rt_service *
service_find(kb_runtime *rt, const char *project, const char *name)
{
    for (rt_service *s = rt->services; s != NULL; s = s->next)
        if (strcmp(s->project, project) == 0 && strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void rt_maybe_done(kb_runtime *rt);

static void
service_free(rt_service *svc)
{
    kb_runtime *rt = svc->rt;

    json_decref(svc->spec);
    free_strv(svc->argv);
    free_strv(svc->env);
    free(svc->project);
    free(svc->name);
    free(svc->label);
    free(svc->parent);
    free(svc);
    rt->nservices--;
    rt_maybe_done(rt);
}

static char *
strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
strdupf(const char *fmt, ...)
{
    kb_buf b = KB_BUF_INIT(4096);
    va_list ap;

    va_start(ap, fmt);
    int rc = kb_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        kb_buf_free(&b);
        return NULL;
    }
    return kb_buf_detach(&b);
}

static rt_service *
service_new(kb_runtime *rt, const char *project, const char *name)
{
    rt_service *svc = calloc(1, sizeof(*svc));
    kb_buf labels = KB_BUF_INIT(1024);

    if (svc == NULL)
        return NULL;
    svc->rt = rt;
    svc->project = strdup(project);
    svc->name = strdup(name);
    svc->label = strdupf("%s/%s", project, name);
    svc->parent = strdupf("projects/%s/services/%s", project, name);
    if (svc->project == NULL || svc->name == NULL || svc->label == NULL
        || svc->parent == NULL || kb_buf_appends(&labels, "service=\"") < 0
        || kb_metrics_label_escape(&labels, svc->label) < 0
        || kb_buf_appendc(&labels, '"') < 0)
        goto out_free;
    svc->restarts_total = kb_counter_get("kiban_runtime_restarts_total",
        "Instance restarts after an exit, per service.", labels.data);
    svc->running = kb_gauge_get("kiban_runtime_instances_running",
        "Instances whose port accepts connections, per service.",
        labels.data);
    if (svc->restarts_total == NULL || svc->running == NULL)
        goto out_free;
    kb_buf_free(&labels);
    rt->nservices++;
    return svc;

out_free:
    kb_buf_free(&labels);
    free(svc->project);
    free(svc->name);
    free(svc->label);
    free(svc->parent);
    free(svc);
    return NULL;
}

static bool
is_current(const rt_instance *in)
{
    return in->generation == in->svc->generation
           && in->state != RT_STOPPING && in->state != RT_STOPPED;
}

/*
 * Bring a service's instances to its spec:
 *  - a removed service (or a runtime shutting down) stops everything;
 *  - instances of the current spec are added or stopped to match the
 *    desired count (stopping ones that are not serving first);
 *  - instances of an older spec keep serving until enough new ones are
 *    running, then stop one for one; those not serving stop at once.
 * Called after every change; it only starts and stops, never frees.
 */
static void
reconcile(rt_service *svc)
{
    int cur = 0, ready = 0;
    rt_instance *in;

    if (svc->removed || svc->rt->shutting_down) {
        for (in = svc->instances; in != NULL; in = in->next)
            kb__rt_instance_stop(in);
        return;
    }
    for (in = svc->instances; in != NULL; in = in->next) {
        if (is_current(in)) {
            cur++;
            ready += in->state == RT_RUNNING;
        }
    }
    for (int pass = 0; pass < 2 && cur > svc->desired; pass++) {
        /* pass 0: instances not serving; pass 1: any, newest last */
        for (in = svc->instances; in != NULL && cur > svc->desired;
             in = in->next) {
            if (!is_current(in) || (pass == 0 && in->state == RT_RUNNING))
                continue;
            ready -= in->state == RT_RUNNING;
            kb__rt_instance_stop(in);
            cur--;
        }
    }
    for (; cur < svc->desired; cur++) {
        if (kb__rt_instance_add(svc) < 0) {
            kb_log_error("cannot add an instance", "{s:s, s:s}",
                         "service", svc->label, "error", "out of memory");
            break;
        }
    }
    int keep_old = svc->desired - ready;
    for (in = svc->instances; in != NULL; in = in->next) {
        if (in->generation == svc->generation || in->state == RT_STOPPING
            || in->state == RT_STOPPED)
            continue;
        if (in->state == RT_RUNNING && keep_old > 0)
            keep_old--;
        else
            kb__rt_instance_stop(in);
    }
}

void
kb__rt_service_changed(rt_service *svc)
{
    reconcile(svc);
}

void
kb__rt_instance_freed(rt_service *svc)
{
    svc->ninstances--;
    if (svc->removed && svc->ninstances == 0)
        service_free(svc);
}

/* Unlink, stop everything; freed when the last instance is. */
static void
service_remove(kb_runtime *rt, rt_service *svc)
{
    pthread_mutex_lock(&rt->ep_lock);
    for (rt_service **pp = &rt->services; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == svc) {
            *pp = svc->next;
            break;
        }
    }
    svc->next = NULL;
    pthread_mutex_unlock(&rt->ep_lock);
    svc->removed = true;
    kb_log_info("service removed", "{s:s}", "service", svc->label);
    reconcile(svc);
    if (svc->ninstances == 0)
        service_free(svc);
}

static bool
name_ok(const char *s)
{
    return s != NULL && *s != '\0' && strlen(s) <= NAME_MAX_LEN;
}

int
kb_runtime_apply(kb_runtime *rt, const char *project, const char *name,
                 const json_t *spec, char *err, size_t errlen)
{
    char **argv, **env;
    int rc;

    if (rt->shutting_down) {
        set_err(err, errlen, "the runtime is shutting down");
        return KB_ECANCELED;
    }
    if (!name_ok(project) || !name_ok(name)) {
        set_err(err, errlen, "name: project and service names must be 1 to "
                "%d bytes", NAME_MAX_LEN);
        return KB_EINVAL;
    }
    if ((rc = kb_runtime_validate(spec, err, errlen)) < 0)
        return rc;

    rt_service *svc = service_find(rt, project, name);
    if (svc != NULL && json_equal(svc->spec, spec))
        return 0;
    if (svc == NULL && rt->nservices >= KB_RT_MAX_SERVICES) {
        set_err(err, errlen, "too many services (at most %d)",
                KB_RT_MAX_SERVICES);
        return KB_ETOOBIG;
    }
    json_t *copy = json_deep_copy(spec);
    if (copy == NULL || spec_parse(spec, &argv, &env) < 0) {
        json_decref(copy);
        set_err(err, errlen, "out of memory");
        return KB_ENOMEM;
    }
    if (svc == NULL) {
        if ((svc = service_new(rt, project, name)) == NULL) {
            json_decref(copy);
            free_strv(argv);
            free_strv(env);
            set_err(err, errlen, "out of memory");
            return KB_ENOMEM;
        }
        pthread_mutex_lock(&rt->ep_lock);
        svc->next = rt->services;
        rt->services = svc;
        pthread_mutex_unlock(&rt->ep_lock);
    }
    if (svc->spec == NULL || !same_template(svc->spec, spec)) {
        pthread_mutex_lock(&rt->ep_lock);
        svc->generation++;
        pthread_mutex_unlock(&rt->ep_lock);
    }
    json_decref(svc->spec);
    free_strv(svc->argv);
    free_strv(svc->env);
    svc->spec = copy;
    svc->argv = argv;
    svc->env = env;
    const json_t *n = json_object_get(spec, "instances");
    svc->desired = n != NULL ? (int)json_integer_value(n) : 1;
    kb_log_info("service applied", "{s:s, s:I, s:i}", "service", svc->label,
                "generation", (json_int_t)svc->generation,
                "instances", svc->desired);
    reconcile(svc);
    return 0;
}

int
kb_runtime_remove(kb_runtime *rt, const char *project, const char *name)
{
    rt_service *svc = service_find(rt, project, name);

    if (svc == NULL)
        return KB_ENOTFOUND;
    service_remove(rt, svc);
    return 0;
}

/*
 * Round robin over running instances of the current spec; while none of
 * those is running yet (a rollout), over the older ones still serving.
 */
/* The running instances to send to: the current generation's, or while
 * none of those is ready yet, the previous ones'.  Under ep_lock. */
static size_t
endpoints_locked(const rt_service *svc, kb_endpoint *out, size_t max)
{
    size_t ncur = 0, n = 0;
    const rt_instance *in;

    for (in = svc->instances; in != NULL; in = in->next)
        ncur += in->state == RT_RUNNING && in->generation == svc->generation;
    for (in = svc->instances; in != NULL && n < max; in = in->next) {
        if (in->state != RT_RUNNING ||
            (ncur > 0) != (in->generation == svc->generation))
            continue;
        snprintf(out[n].host, sizeof(out[n].host), "127.0.0.1");
        out[n].port = in->port;
        snprintf(out[n].revision, sizeof(out[n].revision), "%s-%05llu",
                 svc->name, (unsigned long long)in->generation);
        n++;
    }
    return n;
}

int
kb_runtime_endpoints(kb_runtime *rt, const char *project, const char *name,
                     kb_endpoint *out, size_t max)
{
    const rt_service *svc;
    int rc;

    pthread_mutex_lock(&rt->ep_lock);
    svc = service_find(rt, project, name);
    if (svc == NULL)
        rc = KB_ENOTFOUND;
    else
        rc = (int)endpoints_locked(svc, out, max);
    pthread_mutex_unlock(&rt->ep_lock);
    return rc == 0 ? KB_EUNAVAIL : rc;
}

int
kb_runtime_endpoint(kb_runtime *rt, const char *project, const char *name,
                    kb_endpoint *out)
{
    kb_endpoint eps[KB_RT_MAX_ENDPOINTS];
    int n = kb_runtime_endpoints(rt, project, name, eps, KB_RT_MAX_ENDPOINTS);
    static _Atomic unsigned rr;

    if (n < 0)
        return n;
    *out = eps[atomic_fetch_add(&rr, 1) % (unsigned)n];
    return 0;
}

json_t *
kb_runtime_status(kb_runtime *rt, const char *project, const char *name)
{
    rt_service *svc = service_find(rt, project, name);
    int ready = 0;

    if (svc == NULL)
        return NULL;
    json_t *list = json_array();
    for (rt_instance *in = svc->instances; in != NULL; in = in->next) {
        if (in->state == RT_STOPPED)
            continue;
        ready += in->state == RT_RUNNING;
        json_array_append_new(list, kb__rt_instance_status(in));
    }
    return json_pack("{s:o, s:i, s:i}", "instances", list, "ready", ready,
                     "desired", svc->desired);
}

/* ---- shutdown ---- */

static void
rt_closed(uv_handle_t *h)
{
    kb_runtime *rt = h->data;
    void (*done)(void *) = rt->done;
    void *data = rt->done_data;

    close(rt->watch_fd[0]);
    close(rt->watch_fd[1]);
    free_strv(rt->base_env);
    free(rt->self_exe);
    pthread_mutex_destroy(&rt->ep_lock);
    free(rt);
    if (done != NULL)
        done(data);
}

static void
rt_maybe_done(kb_runtime *rt)
{
    if (rt->shutting_down && rt->nservices == 0
        && !uv_is_closing((uv_handle_t *)&rt->done_timer))
        uv_close((uv_handle_t *)&rt->done_timer, rt_closed);
}

void
kb_runtime_shutdown(kb_runtime *rt, uint64_t grace_ms,
                    void (*done)(void *data), void *data)
{
    rt->shutting_down = true;
    rt->stop_grace_ms = grace_ms;
    rt->done = done;
    rt->done_data = data;
    kb_log_info("runtime stopping", "{s:I, s:I}",
                "services", (json_int_t)rt->nservices,
                "graceMs", (json_int_t)grace_ms);
    while (rt->services != NULL)
        service_remove(rt, rt->services);
    rt_maybe_done(rt);          /* done() runs from a close callback */
}

/* ---- reaping what a killed server left behind ---- */

typedef struct reap_ctx {
    kb_runtime *rt;
    char       *token;          /* next page, NULL at the end */
    char      **dead;           /* "parent\0name" records to delete */
    size_t      ndead, cap;
    int         err;
} reap_ctx;

static json_int_t
doc_int(const json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(doc, key));
}

/* Decide about one record: kill its group if it is still ours to kill.
 * Returns true if the record should be deleted. */
static bool
reap_one(kb_runtime *rt, const kb_resource *r)
{
    const json_t *owner = json_object_get(r->doc, "owner");
    const char *boot = json_string_value(json_object_get(r->doc, "bootId"));
    json_int_t pid = doc_int(r->doc, "pid"), pgid = doc_int(r->doc, "pgid");
    uint64_t start = (uint64_t)doc_int(r->doc, "startTime");
    json_int_t opid = doc_int(owner, "pid");
    uint64_t ostart = (uint64_t)doc_int(owner, "startTime");
    bool zombie = false;

    if (boot == NULL || strcmp(boot, rt->boot_id) != 0)
        return true;            /* from an earlier boot: nothing to kill */
    if (opid > 0 && opid <= INT_MAX
        && kb__proc_same((int)opid, ostart, &zombie) && !zombie)
        return false;           /* its server is alive: not ours */
    if (pid > 1 && pid <= INT_MAX && pgid == pid
        && kb__proc_same((int)pid, start, NULL)) {
        kb_log_warn("killing an instance left by an earlier server",
                    "{s:s, s:s, s:I}", "parent", r->parent, "instance",
                    r->name, "pgid", pgid);
        kill((pid_t)-pgid, SIGKILL);
    }
    return true;
}

static void
reap_page(int err, const kb_store_page *page, void *data)
{
    reap_ctx *ctx = data;

    free(ctx->token);
    ctx->token = NULL;
    ctx->err = err;
    if (err != 0)
        return;
    for (size_t i = 0; i < page->n; i++) {
        const kb_resource *r = &page->items[i];
        if (!reap_one(ctx->rt, r))
            continue;
        if (ctx->ndead == ctx->cap) {
            size_t cap = ctx->cap ? ctx->cap * 2 : 16;
            char **d = realloc(ctx->dead, cap * sizeof(char *));
            if (d == NULL)
                continue;
            ctx->dead = d;
            ctx->cap = cap;
        }
        size_t lp = strlen(r->parent), ln = strlen(r->name);
        char *e = malloc(lp + ln + 2);
        if (e == NULL)
            continue;
        memcpy(e, r->parent, lp + 1);
        memcpy(e + lp + 1, r->name, ln + 1);
        ctx->dead[ctx->ndead++] = e;
    }
    if (page->next_token != NULL && *page->next_token != '\0')
        ctx->token = strdup(page->next_token);
}

static void
reap_leftovers(kb_runtime *rt)
{
    reap_ctx ctx = { .rt = rt };

    for (int pages = 0; pages < 10000; pages++) {
        int rc = kb_store_list_sync(rt->store, "instances", NULL, 500,
                                    ctx.token, reap_page, &ctx);
        if (rc < 0 || ctx.err != 0) {
            kb_log_error("cannot list instance records", "{s:s}", "error",
                         kb_strerror(rc < 0 ? rc : ctx.err));
            break;
        }
        if (ctx.token == NULL)
            break;
    }
    free(ctx.token);
    for (size_t i = 0; i < ctx.ndead; i++) {
        const char *parent = ctx.dead[i];
        const char *name = parent + strlen(parent) + 1;
        int rc = kb_store_delete_sync(rt->store, "instances", parent, name,
                                      0, NULL, NULL);
        if (rc < 0 && rc != KB_ENOTFOUND)
            kb_log_warn("instance record not deleted", "{s:s, s:s, s:s}",
                        "parent", parent, "instance", name,
                        "error", kb_strerror(rc));
        free(ctx.dead[i]);
    }
    free(ctx.dead);
}

/* ---- creation ---- */

static char **
make_base_env(void)
{
    char **env = calloc(NELEM(inherited_env) + 1, sizeof(char *));
    size_t k = 0;

    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < NELEM(inherited_env); i++) {
        const char *v = getenv(inherited_env[i]);
        if (v == NULL && strcmp(inherited_env[i], "PATH") == 0)
            v = DEFAULT_PATH;
        if (v == NULL || strlen(v) > KB_RT_MAX_STRING)
            continue;
        if ((env[k++] = strdupf("%s=%s", inherited_env[i], v)) == NULL) {
            free_strv(env);
            return NULL;
        }
    }
    return env;
}

static char *
own_exe(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    return strdup(buf);
}

void
kb__runtime_set_timing(kb_runtime *rt, uint64_t stop_grace_ms,
                       uint64_t start_timeout_ms, uint64_t shim_grace_ms)
{
    if (stop_grace_ms != 0)
        rt->stop_grace_ms = stop_grace_ms;
    if (start_timeout_ms != 0)
        rt->start_timeout_ms = start_timeout_ms;
    if (shim_grace_ms != 0)
        rt->shim_grace_ms = shim_grace_ms;
}

int
kb_runtime_create(uv_loop_t *loop, kb_store *store, const char *self_exe,
                  kb_runtime **out)
{
    kb_runtime *rt = calloc(1, sizeof(*rt));
    int rc = KB_ENOMEM;

    if (rt == NULL)
        return KB_ENOMEM;
    rt->loop = loop;
    rt->store = store;
    pthread_mutex_init(&rt->ep_lock, NULL);
    rt->stop_grace_ms = 10000;
    rt->start_timeout_ms = 10000;
    rt->probe_interval_ms = 50;
    rt->backoff_min_ms = 100;
    rt->backoff_max_ms = 30000;
    rt->backoff_reset_ms = 10000;
    rt->shim_grace_ms = 3000;
    rt->self_pid = (int)getpid();
    (void)kb__proc_stat(rt->self_pid, NULL, NULL, &rt->self_start);
    kb__proc_boot_id(rt->boot_id, sizeof(rt->boot_id));

    rt->self_exe = self_exe != NULL ? strdup(self_exe) : own_exe();
    if (rt->self_exe == NULL)
        goto out_free_rt;
    if ((rt->base_env = make_base_env()) == NULL)
        goto out_free_exe;
    /* Both ends close-on-exec: only libuv's dup2 into a shim's fd 3 makes
     * the read end survive exec, and no child ever holds the write end. */
    if (pipe2(rt->watch_fd, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out_free_env;
    }
    if (store != NULL)
        reap_leftovers(rt);
    uv_timer_init(loop, &rt->done_timer);
    rt->done_timer.data = rt;
    *out = rt;
    return 0;

out_free_env:
    free_strv(rt->base_env);
out_free_exe:
    free(rt->self_exe);
out_free_rt:
    pthread_mutex_destroy(&rt->ep_lock);
    free(rt);
    return rc;
}
