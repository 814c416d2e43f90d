/*
 * deploy.c - `kiban deploy SERVICE`: gcloud run deploy on kiban.  Reads the
 * service, applies the flags to its template (or makes one), creates or
 * updates it (a new revision when the template changed) and waits until
 * that revision is ready or has failed.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEPLOY_POLL_MS        50
#define DEPLOY_WAIT_DEFAULT   (5 * 60 * 1000LL)    /* --wait-timeout */
#define DEPLOY_MAX_ENV        256
#define DEPLOY_MAX_ARGS       256

/* The template fields of a Service, in the order the docs list them. */
const char *const kb_cli__template_fields[] = {
    "command", "args", "env", "workingDir", "resources", "concurrency",
    "minInstances", "maxInstances", "instances", "scaleDownDelay", "timeout",
    "startupProbe", "readinessProbe", "livenessProbe",
    "terminationGracePeriod", NULL,
};

/* Environment names the runtime sets itself. */
static const char *const reserved_env[] = {
    "PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "KIBAN_PROJECT",
    NULL,
};

/* Units of a duration, longest suffix first. */
static const struct { const char *suffix; long long ms; } duration_units[] = {
    { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
};

/* Suffixes of a memory size (Kubernetes quantities). */
static const char *const memory_units[] = {
    "", "k", "K", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", NULL,
};

/* ---- checked values ------------------------------------------------------ */

int
kb_cli__int_in(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (s == NULL || s[0] == '\0' || s[0] == ' ' || s[0] == '+')
        return KB_EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return KB_EINVAL;
    *out = v;
    return 0;
}

/* Leading decimal digits of s: how many (0: none), value in *v (capped). */
static size_t
digits(const char *s, long long *v)
{
    size_t n = 0;

    *v = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        if (*v < 1000000000000LL)
            *v = *v * 10 + (s[n] - '0');
        n++;
    }
    return n;
}

int
kb_cli__duration_ms(const char *s, long long *ms)
{
    long long v;
    size_t n = digits(s, &v);

    if (n == 0 || n > 9)
        return KB_EINVAL;
    if (s[n] == '\0') {
        *ms = v * 1000;
        return 0;
    }
    for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]);
         i++) {
        if (strcmp(s + n, duration_units[i].suffix) == 0) {
            *ms = v * duration_units[i].ms;
            return 0;
        }
    }
    return KB_EINVAL;
}

static bool
memory_ok(const char *s)
{
    long long v;
    size_t n = digits(s, &v);

    if (n == 0 || n > 15 || v == 0)
        return false;
    for (const char *const *u = memory_units; *u != NULL; u++)
        if (strcmp(s + n, *u) == 0)
            return true;
    return false;
}

/* "1", "0.5", "2.25" or "500m"; more than zero. */
static bool
cpu_ok(const char *s)
{
    long long whole, frac = 0;
    size_t n = digits(s, &whole), f = 0;

    if (n == 0 || n > 6)
        return false;
    if (strcmp(s + n, "m") == 0)
        return whole > 0;
    if (s[n] == '.') {
        f = digits(s + n + 1, &frac);
        if (f == 0 || f > 3 || s[n + 1 + f] != '\0')
            return false;
    } else if (s[n] != '\0') {
        return false;
    }
    return whole > 0 || frac > 0;
}

static bool
env_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 256 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    for (const char *const *r = reserved_env; *r != NULL; r++)
        if (strlen(*r) == n && memcmp(*r, s, n) == 0)
            return false;
    return true;
}

/* RFC 1035 label of at most 46 characters (a traffic tag). */
static bool
tag_ok(const char *s)
{
    return strlen(s) <= 46 && kb_name_valid(s);
}

/* ---- the template ---------------------------------------------------------- */

/* The scaling flags: flag, field, bounds. */
static const struct {
    const char *flag, *field;
    long long   min, max;
} int_flags[] = {
    { "concurrency",   "concurrency",  1, 1000 },
    { "min-instances", "minInstances", 0, 1000 },
    { "max-instances", "maxInstances", 1, 1000 },
};

static int
bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return KB_EINVAL;
}

/* --env K=V merges, --remove-env K deletes; env left absent when empty. */
static int
merge_env(json_t *t, const kb_cli_opts *o, char *err, size_t errlen)
{
    const char *vals[KB_CLI_MAX_ARGS];
    json_t *env = json_object_get(t, "env");
    size_t n;

    env = json_is_object(env) ? json_deep_copy(env) : json_object();
    if (env == NULL)
        return KB_ENOMEM;
    n = kb_cli__opt_all(o, "env", vals, KB_CLI_MAX_ARGS);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(vals[i], '=');
        char name[257];
        if (eq == NULL || !env_name_ok(vals[i], (size_t)(eq - vals[i]))) {
            json_decref(env);
            return bad(err, errlen, "--env \"%s\": want NAME=VALUE, NAME of "
                       "letters, digits and '_' not starting with a digit, "
                       "and not one kiban sets (PORT, K_SERVICE, K_REVISION, "
                       "K_CONFIGURATION, KIBAN_PROJECT)", vals[i]);
        }
        memcpy(name, vals[i], (size_t)(eq - vals[i]));
        name[eq - vals[i]] = '\0';
        if (json_object_set_new(env, name, json_string(eq + 1)) != 0) {
            json_decref(env);
            return bad(err, errlen, "--env \"%s\": the value is not valid "
                       "UTF-8", vals[i]);
        }
    }
    n = kb_cli__opt_all(o, "remove-env", vals, KB_CLI_MAX_ARGS);
    for (size_t i = 0; i < n; i++) {
        if (!env_name_ok(vals[i], strlen(vals[i]))) {
            json_decref(env);
            return bad(err, errlen, "--remove-env \"%s\": not a variable "
                       "name", vals[i]);
        }
        json_object_del(env, vals[i]);
    }
    if (json_object_size(env) > DEPLOY_MAX_ENV) {
        json_decref(env);
        return bad(err, errlen, "more than 256 environment variables");
    }
    if (json_object_size(env) == 0) {
        json_decref(env);
        json_object_del(t, "env");
        return 0;
    }
    return json_object_set_new(t, "env", env) == 0 ? 0 : KB_ENOMEM;
}

static int
merge_resources(json_t *t, const kb_cli_opts *o, char *err, size_t errlen)
{
    const char *mem = kb_cli__opt(o, "memory"), *cpu = kb_cli__opt(o, "cpu");
    json_t *res;

    if (mem == NULL && cpu == NULL)
        return 0;
    if (mem != NULL && !memory_ok(mem))
        return bad(err, errlen, "--memory \"%s\": want a size such as 512Mi, "
                   "1Gi, 100M or a number of bytes", mem);
    if (cpu != NULL && !cpu_ok(cpu))
        return bad(err, errlen, "--cpu \"%s\": want a number of cores such as "
                   "1, 0.5 or 500m", cpu);
    res = json_object_get(t, "resources");
    res = json_is_object(res) ? json_deep_copy(res) : json_object();
    if (res == NULL)
        return KB_ENOMEM;
    if (mem != NULL)
        json_object_set_new(res, "memory", json_string(mem));
    if (cpu != NULL)
        json_object_set_new(res, "cpu", json_string(cpu));
    return json_object_set_new(t, "resources", res) == 0 ? 0 : KB_ENOMEM;
}

int
kb_cli__deploy_template(const json_t *current, const kb_cli_opts *o,
                        json_t **out, char *err, size_t errlen)
{
    const char *cmd = kb_cli__opt(o, "command");
    const char *wd = kb_cli__opt(o, "working-dir");
    const char *timeout = kb_cli__opt(o, "timeout");
    const char *args[KB_CLI_MAX_ARGS];
    size_t nargs = kb_cli__opt_all(o, "arg", args, KB_CLI_MAX_ARGS);
    bool scaling = false;
    long long v, ms;
    json_t *t;
    int rc;

    *out = NULL;
    if ((t = json_object()) == NULL)
        return KB_ENOMEM;
    for (const char *const *f = kb_cli__template_fields; *f != NULL; f++) {
        json_t *val = json_object_get(current, *f);
        if (val != NULL && !json_is_null(val))
            json_object_set_new(t, *f, json_deep_copy(val));
    }
    if (cmd != NULL) {
        if (cmd[0] == '\0') {
            rc = bad(err, errlen, "--command must not be empty");
            goto out_free;
        }
        json_object_set_new(t, "command", json_string(cmd));
    }
    if (!json_is_string(json_object_get(t, "command"))) {
        rc = bad(err, errlen, "--command is required to create a service");
        goto out_free;
    }
    if (nargs > 0) {
        json_t *list = json_array();
        if (nargs > DEPLOY_MAX_ARGS) {
            json_decref(list);
            rc = bad(err, errlen, "more than 256 --arg");
            goto out_free;
        }
        for (size_t i = 0; i < nargs; i++)
            json_array_append_new(list, json_string(args[i]));
        json_object_set_new(t, "args", list);
    }
    if ((rc = merge_env(t, o, err, errlen)) != 0)
        goto out_free;
    if (wd != NULL) {
        if (wd[0] != '/') {
            rc = bad(err, errlen, "--working-dir \"%s\": must be an absolute "
                     "path", wd);
            goto out_free;
        }
        json_object_set_new(t, "workingDir", json_string(wd));
    }
    if ((rc = merge_resources(t, o, err, errlen)) != 0)
        goto out_free;
    for (size_t i = 0; i < sizeof(int_flags) / sizeof(int_flags[0]); i++) {
        const char *s = kb_cli__opt(o, int_flags[i].flag);
        if (s == NULL)
            continue;
        if (kb_cli__int_in(s, int_flags[i].min, int_flags[i].max, &v) != 0) {
            snprintf(err, errlen, "--%s \"%s\": want a whole number from %lld "
                     "to %lld", int_flags[i].flag, s, int_flags[i].min,
                     int_flags[i].max);
            rc = KB_EINVAL;
            goto out_free;
        }
        json_object_set_new(t, int_flags[i].field, json_integer(v));
        if (i > 0)
            scaling = true;
    }
    if (scaling)                     /* autoscaling replaces a fixed count */
        json_object_del(t, "instances");
    if (json_is_integer(json_object_get(t, "minInstances"))
        && json_is_integer(json_object_get(t, "maxInstances"))
        && json_integer_value(json_object_get(t, "minInstances"))
           > json_integer_value(json_object_get(t, "maxInstances"))) {
        rc = bad(err, errlen, "--min-instances is more than --max-instances");
        goto out_free;
    }
    if (timeout != NULL) {
        if (kb_cli__duration_ms(timeout, &ms) != 0 || ms == 0) {
            rc = bad(err, errlen, "--timeout \"%s\": want a duration such as "
                     "500ms, 30s or 5m", timeout);
            goto out_free;
        }
        json_object_set_new(t, "timeout", json_string(timeout));
    }
    *out = t;
    return 0;

out_free:
    json_decref(t);
    return rc;
}

/* ---- reading a service ------------------------------------------------------- */

const char *
kb_cli__newest_revision(const json_t *service)
{
    const json_t *revs = json_object_get(service, "revisions");
    const json_t *st = json_object_get(service, "status");
    size_t n = json_array_size(revs);
    const char *name;

    if (n > 0 && (name = json_string_value(json_object_get(
                      json_array_get(revs, n - 1), "name"))) != NULL)
        return name;
    return json_string_value(json_object_get(st, "latestCreatedRevisionName"));
}

int
kb_cli__revision_percent(const json_t *service, const char *rev)
{
    const json_t *traffic = json_object_get(json_object_get(service, "status"),
                                            "traffic");
    const char *newest = kb_cli__newest_revision(service);
    bool resolved = json_array_size(traffic) > 0;
    const json_t *t;
    size_t i;
    int sum = 0;

    if (!resolved)
        traffic = json_object_get(service, "traffic");
    json_array_foreach(traffic, i, t) {
        const char *name = json_string_value(json_object_get(t, "revisionName"));
        bool latest = json_is_true(json_object_get(t, "latestRevision"));
        bool hit = name != NULL ? strcmp(name, rev) == 0
                                : latest && newest && strcmp(newest, rev) == 0;
        if (hit)
            sum += (int)json_integer_value(json_object_get(t, "percent"));
    }
    if (json_array_size(traffic) == 0 && newest && strcmp(newest, rev) == 0)
        sum = 100;                   /* no traffic stated: all to latest */
    return sum;
}

/* The URL of the traffic target carrying tag, or NULL. */
static const char *
tag_url(const json_t *service, const char *tag)
{
    const json_t *traffic = json_object_get(json_object_get(service, "status"),
                                            "traffic"), *t;
    size_t i;

    json_array_foreach(traffic, i, t) {
        const char *tg = json_string_value(json_object_get(t, "tag"));
        if (tg != NULL && strcmp(tg, tag) == 0)
            return json_string_value(json_object_get(t, "url"));
    }
    return NULL;
}

/* ---- waiting ------------------------------------------------------------------- */

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The Ready condition of a status object, or NULL. */
static const json_t *
ready_condition(const json_t *status)
{
    const json_t *conds = json_object_get(status, "conditions"), *cd;
    size_t i;

    json_array_foreach(conds, i, cd) {
        const char *type = json_string_value(json_object_get(cd, "type"));
        if (type != NULL && strcmp(type, "Ready") == 0)
            return cd;
    }
    return NULL;
}

/*
 * Poll GET …/revisions/REV until its status says ready (exit 0) or a Ready
 * condition False (reason and message printed, exit 1), or wait_ms passes.
 */
static int
wait_ready(kb_cli *c, const char *service, const char *rev, long long wait_ms)
{
    long long deadline = now_ms() + wait_ms;
    char path[512];
    FILE *err = kb_cli__err();

    snprintf(path, sizeof(path), "/v1/projects/%s/services/%s/revisions/%s",
             kb_cli__project(c), service, rev);
    for (;;) {
        json_t *resp = NULL;
        const json_t *st, *ready, *cond;
        const char *cs;
        long status;

        if (kb_cli__call(c, "GET", path, NULL, &status, &resp) != 0)
            return KB_CLI_EXIT_FAIL;
        if (status != 200 && status != 404) {
            kb_cli__api_error(c, status, resp);
            json_decref(resp);
            return KB_CLI_EXIT_FAIL;
        }
        st = json_object_get(resp, "status");
        ready = json_object_get(st, "ready");
        cond = ready_condition(st);
        cs = json_string_value(json_object_get(cond, "status"));
        if (status == 200 && (json_is_true(ready)
                              || (json_is_integer(ready)
                                  && json_integer_value(ready) > 0)
                              || (cs != NULL && strcmp(cs, "True") == 0))) {
            json_decref(resp);
            return KB_CLI_EXIT_OK;
        }
        if (status == 200 && cs != NULL && strcmp(cs, "False") == 0) {
            const char *reason = json_string_value(json_object_get(cond,
                                                                   "reason"));
            const char *msg = json_string_value(json_object_get(cond,
                                                                "message"));
            char text[1024];
            snprintf(text, sizeof(text), "%s%s%s",
                     reason != NULL ? reason : "NotReady",
                     msg != NULL ? ": " : "", msg != NULL ? msg : "");
            for (char *p = text; *p != '\0'; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    *p = '?';
            fprintf(err, "kiban: revision [%s] failed: %s\n"
                    "kiban: its output: kiban logs %s --revision %s\n", rev,
                    text, service, rev);
            json_decref(resp);
            return KB_CLI_EXIT_FAIL;
        }
        json_decref(resp);
        if (now_ms() >= deadline) {
            fprintf(err, "kiban: revision [%s] is not ready after %lld ms; it "
                    "may still become ready: kiban services describe %s\n",
                    rev, wait_ms, service);
            return KB_CLI_EXIT_FAIL;
        }
        sleep_ms(DEPLOY_POLL_MS);
    }
}

/* ---- the verb ------------------------------------------------------------------ */

/* GET the service: 0 with *svc (NULL when it does not exist), or an exit
 * code (error printed). */
static int
get_service(kb_cli *c, const char *name, json_t **svc)
{
    char path[512];
    json_t *resp = NULL;
    long status;

    *svc = NULL;
    snprintf(path, sizeof(path), "/v1/projects/%s/services/%s",
             kb_cli__project(c), name);
    if (kb_cli__call(c, "GET", path, NULL, &status, &resp) != 0)
        return KB_CLI_EXIT_FAIL;
    if (status == 404) {
        json_decref(resp);
        return 0;
    }
    if (status != 200 || !json_is_object(resp)) {
        kb_cli__api_error(c, status, resp);
        json_decref(resp);
        return KB_CLI_EXIT_FAIL;
    }
    *svc = resp;
    return 0;
}

/* "&updateMask=command,args,…" of every template field. */
static void
update_mask(char *buf, size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "updateMask=");

    for (const char *const *f = kb_cli__template_fields; *f != NULL
         && off < len; f++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s",
                                f == kb_cli__template_fields ? "" : ",", *f);
}

static void
print_result(const json_t *svc, const char *name, const char *rev,
             const char *tag, bool waited)
{
    FILE *out = kb_cli__out();
    const char *url = json_string_value(json_object_get(
        json_object_get(svc, "status"), "url"));
    const char *turl = tag != NULL ? tag_url(svc, tag) : NULL;

    fprintf(out, "Service [%s] revision [%s] has been %s and is serving %d "
            "percent of traffic.\n", name, rev, waited ? "deployed" : "created",
            kb_cli__revision_percent(svc, rev));
    if (url != NULL)
        fprintf(out, "Service URL: %s\n", url);
    if (turl != NULL)
        fprintf(out, "The revision can be reached directly at %s\n", turl);
}

int
kb_cli__deploy(kb_cli *c)
{
    const char *name = c->opts.pos[0], *tag = kb_cli__opt(&c->opts, "tag");
    const char *wt = kb_cli__opt(&c->opts, "wait-timeout");
    bool no_traffic = kb_cli__opt(&c->opts, "no-traffic") != NULL;
    bool no_wait = kb_cli__opt(&c->opts, "no-wait") != NULL;
    long long wait_ms = DEPLOY_WAIT_DEFAULT;
    json_t *svc = NULL, *tmpl = NULL, *resp = NULL, *fresh = NULL;
    char err[512], path[1024], mask[512], *etag = NULL;
    const char *before = NULL, *rev;
    char revbuf[256];
    long status;
    int rc;

    if (!kb_name_valid(name)) {
        fprintf(kb_cli__err(), "kiban deploy: \"%s\" is not a valid service "
                "name (a-z, 0-9 and '-', starting with a letter); run 'kiban "
                "help deploy'\n", name);
        return KB_CLI_EXIT_USAGE;
    }
    if (tag != NULL && !tag_ok(tag)) {
        fprintf(kb_cli__err(), "kiban deploy: --tag \"%s\": want a-z, 0-9 and "
                "'-', starting with a letter, at most 46; run 'kiban help "
                "deploy'\n", tag);
        return KB_CLI_EXIT_USAGE;
    }
    if (wt != NULL && (kb_cli__duration_ms(wt, &wait_ms) != 0 || wait_ms == 0)) {
        fprintf(kb_cli__err(), "kiban deploy: --wait-timeout \"%s\": want a "
                "duration such as 30s or 5m; run 'kiban help deploy'\n", wt);
        return KB_CLI_EXIT_USAGE;
    }
    if ((rc = get_service(c, name, &svc)) != 0)
        return rc;
    rc = kb_cli__deploy_template(svc, &c->opts, &tmpl, err, sizeof(err));
    if (rc != 0) {
        fprintf(kb_cli__err(), "kiban deploy: %s; run 'kiban help deploy'\n",
                rc == KB_ENOMEM ? "out of memory" : err);
        rc = rc == KB_ENOMEM ? KB_CLI_EXIT_FAIL : KB_CLI_EXIT_USAGE;
        goto out_free;
    }
    if (tag != NULL && (etag = kb_cli__url_escape(tag)) == NULL) {
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    if (svc == NULL) {
        snprintf(path, sizeof(path), "/v1/projects/%s/services?serviceId=%s%s"
                 "%s%s", kb_cli__project(c), name,
                 no_traffic ? "&noTraffic=true" : "", etag ? "&tag=" : "",
                 etag ? etag : "");
        rc = kb_cli__call(c, "POST", path, tmpl, &status, &resp);
    } else {
        before = kb_cli__newest_revision(svc);
        update_mask(mask, sizeof(mask));
        snprintf(path, sizeof(path), "/v1/projects/%s/services/%s?%s%s%s%s",
                 kb_cli__project(c), name, mask,
                 no_traffic ? "&noTraffic=true" : "", etag ? "&tag=" : "",
                 etag ? etag : "");
        rc = kb_cli__call(c, "PATCH", path, tmpl, &status, &resp);
    }
    if (rc != 0) {
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    if (status < 200 || status > 299 || !json_is_object(resp)) {
        kb_cli__api_error(c, status, resp);
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    if ((rev = kb_cli__newest_revision(resp)) == NULL) {
        fprintf(kb_cli__err(), "kiban: the server did not name the service's "
                "revision\n");
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    snprintf(revbuf, sizeof(revbuf), "%s", rev);
    rev = revbuf;                        /* resp is replaced below */
    if (before != NULL && strcmp(before, rev) == 0) {
        const char *turl = tag != NULL ? tag_url(resp, tag) : NULL;
        fprintf(kb_cli__out(), "No change: revision %s is unchanged.\n", rev);
        if (turl != NULL)
            fprintf(kb_cli__out(), "The revision can be reached directly at "
                    "%s\n", turl);
        rc = KB_CLI_EXIT_OK;
        goto out_free;
    }
    if (!no_wait) {
        fprintf(kb_cli__err(), "Waiting for revision [%s] to be ready...\n",
                rev);
        if ((rc = wait_ready(c, name, rev, wait_ms)) != KB_CLI_EXIT_OK)
            goto out_free;
        if (get_service(c, name, &fresh) == 0 && fresh != NULL) {
            json_decref(resp);
            resp = fresh;                /* status now shows the revision */
        }
    }
    print_result(resp, name, rev, tag, !no_wait);
    rc = KB_CLI_EXIT_OK;

out_free:
    free(etag);
    json_decref(tmpl);
    json_decref(svc);
    json_decref(resp);
    return rc;
}
