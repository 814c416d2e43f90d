/*
 * template.c - a revision's template (template.h) and the check of a whole
 * Service document (kb_runtime_validate).  One table of fields: each entry
 * checks its value and, when parsing, stores it into an rt_template, so the
 * API's check and the runtime's parse can never disagree.
 */
#include "runtime/template.h"
#include "runtime/revision.h"
#include "runtime/runtime.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define TPL_MAX_ARGS       256
#define TPL_MAX_ENV        256
#define TPL_MAX_ENV_NAME   256
#define TPL_MAX_STRING     32768        /* command, an arg, an env value */
#define TPL_MAX_PATH       4096         /* workingDir, probe path */
#define TPL_MAX_INSTANCES  64           /* fixed `instances` */
#define TPL_MAX_SCALE      1000         /* min/maxInstances, concurrency */
#define TPL_MAX_DURATION_MS (24ULL * 3600 * 1000)
#define TPL_MAX_MEMORY     (1ULL << 40) /* 1 TiB */
#define TPL_MIN_MEMORY     (1ULL << 20) /* 1 MiB */
#define TPL_MAX_CPU_MILLIS 256000
#define TPL_MAX_PROBE_S    3600.0
#define TPL_MAX_FAILURES   10000
#define TPL_MAX_TRAFFIC    1000         /* traffic entries */
#define TPL_MAX_TAG        46

static const char *const reserved_env[] = {
    "PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "KIBAN_PROJECT",
};

static int
fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KB_EINVAL;
}

/* A JSON string without NULs, at most max bytes. */
static bool
good_string(const json_t *v, size_t max)
{
    return json_is_string(v) && json_string_length(v) <= max
           && strlen(json_string_value(v)) == json_string_length(v);
}

/* ---- values: durations, sizes, cpu ------------------------------------ */

/* [s, end) is digits with at most one point (no sign, no exponent). */
static bool
plain_number(const char *s, const char *end)
{
    int points = 0;

    if (end == s)
        return false;
    for (const char *p = s; p < end; p++) {
        if (*p == '.')
            points++;
        else if (*p < '0' || *p > '9')
            return false;
    }
    return points <= 1;
}

/* A unit suffix and what one of it is worth. */
typedef struct tpl_unit {
    const char *suffix;
    double      mul;
} tpl_unit;

/*
 * A quantity: a JSON number times json_mul (only an integer when
 * integers_only), or a string of digits with at most one point followed
 * by one of `units` (times its mul).  False if malformed; the caller
 * checks the range.
 */
static bool
parse_quantity(const json_t *v, const tpl_unit *units, size_t nunits,
               double json_mul, bool integers_only, double *out)
{
    const char *s;
    char *end;
    double n;

    if (json_is_number(v)) {
        if (integers_only && !json_is_integer(v))
            return false;
        *out = json_number_value(v) * json_mul;
        return true;
    }
    if (!json_is_string(v))
        return false;
    s = json_string_value(v);
    if (s[0] < '0' || s[0] > '9')
        return false;
    n = strtod(s, &end);
    if (!plain_number(s, end))
        return false;
    for (size_t i = 0; i < nunits; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            *out = n * units[i].mul;
            return true;
        }
    }
    return false;
}

/*
 * "500ms", "30s", "5m", "1h", "1.5s" or a JSON number of seconds, into
 * milliseconds, at most TPL_MAX_DURATION_MS.  False if malformed.
 */
static bool
parse_duration(const json_t *v, uint64_t *ms)
{
    static const tpl_unit units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
    };
    double n;

    if (!parse_quantity(v, units, NELEM(units), 1000, false, &n)
        || !isfinite(n) || n < 0 || n > (double)TPL_MAX_DURATION_MS)
        return false;
    *ms = (uint64_t)(n + 0.5);
    return true;
}

bool
kb_rt_duration_ms(const char *s, uint64_t *ms)
{
    json_t *v;
    bool ok;
    size_t n = strspn(s, "0123456789");

    if (n > 0 && n <= 9 && s[n] == '\0')
        v = json_integer(strtol(s, NULL, 10));
    else
        v = json_string(s);
    ok = v != NULL && parse_duration(v, ms);
    json_decref(v);
    return ok;
}

/* "512Mi", "1Gi", "100M", "100k", "1048576" or a JSON integer of bytes. */
static bool
parse_memory(const json_t *v, uint64_t *bytes)
{
    static const tpl_unit units[] = {
        { "", 1 }, { "k", 1e3 }, { "K", 1e3 }, { "M", 1e6 }, { "G", 1e9 },
        { "T", 1e12 }, { "Ki", 1024.0 }, { "Mi", 1048576.0 },
        { "Gi", 1073741824.0 }, { "Ti", 1099511627776.0 },
    };
    double n;

    if (!parse_quantity(v, units, NELEM(units), 1, true, &n)
        || !isfinite(n) || n < (double)TPL_MIN_MEMORY
        || n > (double)TPL_MAX_MEMORY)
        return false;
    *bytes = (uint64_t)n;
    return true;
}

/* "2", "0.5", "500m" or a JSON number of cores, into millicores. */
static bool
parse_cpu(const json_t *v, uint32_t *millis)
{
    static const tpl_unit units[] = { { "", 1000 }, { "m", 1 } };
    double n;

    if (!parse_quantity(v, units, NELEM(units), 1000, false, &n)
        || !isfinite(n) || n < 1 || n > TPL_MAX_CPU_MILLIS)
        return false;
    *millis = (uint32_t)(n + 0.5);
    return true;
}

/* ---- template fields ---------------------------------------------------- */

/*
 * Each check gets the value and, when parsing, the template to fill (t is
 * NULL when only checking).  `name` is the field's name for messages.
 */
typedef int (*tpl_check)(const char *name, const json_t *v, rt_template *t,
                         char *err, size_t errlen);

/* Free a NULL-terminated string vector. */
static void
strv_free(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p != NULL; p++)
        free(*p);
    free(v);
}

static int
f_command(const char *name, const json_t *v, rt_template *t, char *err,
          size_t errlen)
{
    if (!good_string(v, TPL_MAX_STRING) || json_string_length(v) == 0)
        return fail(err, errlen, "%s: must be a non-empty string (at most %d "
                    "bytes)", name, TPL_MAX_STRING);
    (void)t;                     /* argv[0]: see f_args / tpl_finish */
    return 0;
}

static int
f_args(const char *name, const json_t *v, rt_template *t, char *err,
       size_t errlen)
{
    size_t i;
    const json_t *a;

    (void)t;
    if (!json_is_array(v) || json_array_size(v) > TPL_MAX_ARGS)
        return fail(err, errlen, "%s: must be an array of at most %d strings",
                    name, TPL_MAX_ARGS);
    json_array_foreach(v, i, a)
        if (!good_string(a, TPL_MAX_STRING))
            return fail(err, errlen, "%s[%zu]: must be a string (at most %d "
                        "bytes, no NUL)", name, i, TPL_MAX_STRING);
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
f_env(const char *name, const json_t *v, rt_template *t, char *err,
      size_t errlen)
{
    const char *k;
    const json_t *val;

    (void)t;
    if (!json_is_object(v) || json_object_size(v) > TPL_MAX_ENV)
        return fail(err, errlen, "%s: must be an object of at most %d "
                    "strings", name, TPL_MAX_ENV);
    json_object_foreach((json_t *)v, k, val) {
        if (strlen(k) > TPL_MAX_ENV_NAME || !env_name_ok(k))
            return fail(err, errlen, "%s.%.64s: invalid name (want "
                        "[A-Za-z_][A-Za-z0-9_]*, at most %d bytes)", name, k,
                        TPL_MAX_ENV_NAME);
        for (size_t i = 0; i < NELEM(reserved_env); i++)
            if (strcmp(k, reserved_env[i]) == 0)
                return fail(err, errlen, "%s.%s: reserved, kiban sets it",
                            name, k);
        if (!good_string(val, TPL_MAX_STRING))
            return fail(err, errlen, "%s.%s: must be a string (at most %d "
                        "bytes, no NUL)", name, k, TPL_MAX_STRING);
    }
    return 0;
}

static int
f_workdir(const char *name, const json_t *v, rt_template *t, char *err,
          size_t errlen)
{
    if (!good_string(v, TPL_MAX_PATH) || json_string_value(v)[0] != '/')
        return fail(err, errlen, "%s: must be an absolute path (at most %d "
                    "bytes)", name, TPL_MAX_PATH);
    if (t != NULL && (t->workdir = strdup(json_string_value(v))) == NULL)
        return KB_ENOMEM;
    return 0;
}

static int
f_resources(const char *name, const json_t *v, rt_template *t, char *err,
            size_t errlen)
{
    const char *k;
    const json_t *x;
    uint64_t mem = 0;
    uint32_t cpu = 0;

    if (!json_is_object(v))
        return fail(err, errlen, "%s: must be an object {\"memory\": "
                    "\"512Mi\", \"cpu\": \"1\"}", name);
    json_object_foreach((json_t *)v, k, x) {
        if (strcmp(k, "memory") == 0) {
            if (!parse_memory(x, &mem))
                return fail(err, errlen, "%s.memory: want bytes or a "
                            "quantity like \"512Mi\", \"1Gi\", \"100M\" "
                            "(1Mi to 1Ti)", name);
        } else if (strcmp(k, "cpu") == 0) {
            if (!parse_cpu(x, &cpu))
                return fail(err, errlen, "%s.cpu: want cores like \"1\", "
                            "\"0.5\" or \"500m\" (1m to 256)", name);
        } else {
            return fail(err, errlen, "%s.%.64s: unknown field (known: "
                        "memory, cpu)", name, k);
        }
    }
    if (t != NULL) {
        t->memory_bytes = mem;
        t->cpu_millis = cpu;
    }
    return 0;
}

/* An integer field in [lo, hi]; the value goes to *dst when parsing. */
static int
int_field(const char *name, const json_t *v, int lo, int hi, int *dst,
          char *err, size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo
        || json_integer_value(v) > hi)
        return fail(err, errlen, "%s: must be an integer from %d to %d",
                    name, lo, hi);
    if (dst != NULL)
        *dst = (int)json_integer_value(v);
    return 0;
}

static int
f_concurrency(const char *name, const json_t *v, rt_template *t, char *err,
              size_t errlen)
{
    return int_field(name, v, 1, TPL_MAX_SCALE, t ? &t->concurrency : NULL,
                     err, errlen);
}

static int
f_min(const char *name, const json_t *v, rt_template *t, char *err,
      size_t errlen)
{
    return int_field(name, v, 0, TPL_MAX_SCALE, t ? &t->min_instances : NULL,
                     err, errlen);
}

static int
f_max(const char *name, const json_t *v, rt_template *t, char *err,
      size_t errlen)
{
    return int_field(name, v, 1, TPL_MAX_SCALE, t ? &t->max_instances : NULL,
                     err, errlen);
}

static int
f_instances(const char *name, const json_t *v, rt_template *t, char *err,
            size_t errlen)
{
    int n = 0;
    int rc = int_field(name, v, 0, TPL_MAX_INSTANCES, &n, err, errlen);

    if (rc == 0 && t != NULL) {
        t->fixed = true;
        t->min_instances = n;
        t->max_instances = n;
    }
    return rc;
}

static int
duration_field(const char *name, const json_t *v, uint64_t *dst, char *err,
               size_t errlen)
{
    uint64_t ms;

    if (!parse_duration(v, &ms))
        return fail(err, errlen, "%s: want a duration like \"500ms\", "
                    "\"30s\", \"5m\", \"1h\" or a number of seconds "
                    "(at most 24h)", name);
    if (dst != NULL)
        *dst = ms;
    return 0;
}

static int
f_scale_down(const char *name, const json_t *v, rt_template *t, char *err,
             size_t errlen)
{
    return duration_field(name, v, t ? &t->scale_down_delay_ms : NULL, err,
                          errlen);
}

static int
f_timeout(const char *name, const json_t *v, rt_template *t, char *err,
          size_t errlen)
{
    return duration_field(name, v, t ? &t->timeout_ms : NULL, err, errlen);
}

static int
f_grace(const char *name, const json_t *v, rt_template *t, char *err,
        size_t errlen)
{
    return duration_field(name, v, t ? &t->grace_ms : NULL, err, errlen);
}

/* Seconds (fractional) as a number: [lo, TPL_MAX_PROBE_S], > lo if open. */
static int
seconds_field(const char *probe, const char *name, const json_t *v, bool open,
              uint64_t *dst, char *err, size_t errlen)
{
    double s;

    if (!json_is_number(v) || !isfinite(s = json_number_value(v)) || s < 0
        || (open && s <= 0) || s > TPL_MAX_PROBE_S)
        return fail(err, errlen, "%s.%s: must be a number of seconds %s 0 "
                    "(at most %.0f)", probe, name, open ? ">" : ">=",
                    TPL_MAX_PROBE_S);
    if (dst != NULL) {
        *dst = (uint64_t)(s * 1000 + 0.5);
        if (open && *dst == 0)
            *dst = 1;
    }
    return 0;
}

static int
probe_action(const char *probe, const char *k, const json_t *x, rt_probe *p,
             char *err, size_t errlen)
{
    const char *kk;
    const json_t *y;
    const char *path = "/";

    if (!json_is_object(x))
        return fail(err, errlen, "%s.%s: must be an object", probe, k);
    if (strcmp(k, "tcpSocket") == 0) {
        if (json_object_size(x) != 0)
            return fail(err, errlen, "%s.tcpSocket: takes no fields (the "
                        "instance's PORT is probed)", probe);
        return 0;
    }
    json_object_foreach((json_t *)x, kk, y) {
        if (strcmp(kk, "path") != 0)
            return fail(err, errlen, "%s.httpGet.%.64s: unknown field "
                        "(known: path)", probe, kk);
        if (!good_string(y, TPL_MAX_PATH) || json_string_value(y)[0] != '/')
            return fail(err, errlen, "%s.httpGet.path: must be a path "
                        "starting with '/'", probe);
        path = json_string_value(y);
    }
    if (p != NULL) {
        p->http = true;
        if ((p->path = strdup(path)) == NULL)
            return KB_ENOMEM;
    }
    return 0;
}

/* A probe object; p (when parsing) holds the defaults already. */
static int
probe_field(const char *name, const json_t *v, rt_probe *p, char *err,
            size_t errlen)
{
    const char *k;
    const json_t *x;
    int nactions = 0, rc;

    if (!json_is_object(v))
        return fail(err, errlen, "%s: must be an object like {\"httpGet\": "
                    "{\"path\": \"/healthz\"}} or {\"tcpSocket\": {}}", name);
    json_object_foreach((json_t *)v, k, x) {
        if (strcmp(k, "httpGet") == 0 || strcmp(k, "tcpSocket") == 0) {
            if (++nactions > 1)
                return fail(err, errlen, "%s: set only one of httpGet and "
                            "tcpSocket", name);
            rc = probe_action(name, k, x, p, err, errlen);
        } else if (strcmp(k, "initialDelaySeconds") == 0) {
            rc = seconds_field(name, k, x, false,
                               p ? &p->initial_delay_ms : NULL, err, errlen);
        } else if (strcmp(k, "periodSeconds") == 0) {
            rc = seconds_field(name, k, x, true, p ? &p->period_ms : NULL,
                               err, errlen);
        } else if (strcmp(k, "timeoutSeconds") == 0) {
            rc = seconds_field(name, k, x, true, p ? &p->timeout_ms : NULL,
                               err, errlen);
        } else if (strcmp(k, "failureThreshold") == 0) {
            rc = int_field("failureThreshold", x, 1, TPL_MAX_FAILURES,
                           p ? &p->failure_threshold : NULL, err, errlen);
            if (rc != 0)
                return fail(err, errlen, "%s.failureThreshold: must be an "
                            "integer from 1 to %d", name, TPL_MAX_FAILURES);
        } else {
            return fail(err, errlen, "%s.%.64s: unknown field (known: "
                        "httpGet, tcpSocket, initialDelaySeconds, "
                        "periodSeconds, timeoutSeconds, failureThreshold)",
                        name, k);
        }
        if (rc != 0)
            return rc;
    }
    if (p != NULL)
        p->set = true;
    return 0;
}

static int
f_startup(const char *name, const json_t *v, rt_template *t, char *err,
          size_t errlen)
{
    return probe_field(name, v, t ? &t->startup : NULL, err, errlen);
}

static int
f_readiness(const char *name, const json_t *v, rt_template *t, char *err,
            size_t errlen)
{
    return probe_field(name, v, t ? &t->readiness : NULL, err, errlen);
}

static int
f_liveness(const char *name, const json_t *v, rt_template *t, char *err,
           size_t errlen)
{
    return probe_field(name, v, t ? &t->liveness : NULL, err, errlen);
}

static const struct tpl_field {
    const char *name;
    tpl_check   check;
} tpl_fields[] = {
    { "command",                f_command },
    { "args",                   f_args },
    { "env",                    f_env },
    { "workingDir",             f_workdir },
    { "resources",              f_resources },
    { "concurrency",            f_concurrency },
    { "minInstances",           f_min },
    { "maxInstances",           f_max },
    { "instances",              f_instances },
    { "scaleDownDelay",         f_scale_down },
    { "timeout",                f_timeout },
    { "startupProbe",           f_startup },
    { "readinessProbe",         f_readiness },
    { "livenessProbe",          f_liveness },
    { "terminationGracePeriod", f_grace },
};

const char *const kb_rt_template_fields[] = {
    "command", "args", "env", "workingDir", "resources", "concurrency",
    "minInstances", "maxInstances", "instances", "scaleDownDelay", "timeout",
    "startupProbe", "readinessProbe", "livenessProbe",
    "terminationGracePeriod", NULL,
};

static const struct tpl_field *
tpl_field_find(const char *name)
{
    for (size_t i = 0; i < NELEM(tpl_fields); i++)
        if (strcmp(tpl_fields[i].name, name) == 0)
            return &tpl_fields[i];
    return NULL;
}

/* Present and not null (null is the same as absent). */
static const json_t *
get_set(const json_t *spec, const char *name)
{
    const json_t *v = json_object_get(spec, name);

    return json_is_null(v) ? NULL : v;
}

/* The rules between fields, once each field is fine on its own. */
static int
tpl_cross_check(const json_t *spec, char *err, size_t errlen)
{
    const json_t *min = get_set(spec, "minInstances");
    const json_t *max = get_set(spec, "maxInstances");

    if (get_set(spec, "instances") != NULL && (min != NULL || max != NULL))
        return fail(err, errlen, "instances: cannot be set together with "
                    "%s (instances turns autoscaling off)",
                    min != NULL ? "minInstances" : "maxInstances");
    if (min != NULL && json_integer_value(min)
                       > (max != NULL ? json_integer_value(max) : 100))
        return fail(err, errlen, "minInstances: must not exceed "
                    "maxInstances (%lld)", max != NULL
                    ? (long long)json_integer_value(max) : 100LL);
    if (get_set(spec, "command") == NULL)
        return fail(err, errlen, "command: required (the program to run)");
    return 0;
}

static void
tpl_defaults(rt_template *t)
{
    memset(t, 0, sizeof(*t));
    t->concurrency = 80;
    t->min_instances = 0;
    t->max_instances = 100;
    t->scale_down_delay_ms = 60000;
    t->timeout_ms = 300000;
    t->grace_ms = 10000;
    t->startup = (rt_probe){ .period_ms = 50, .timeout_ms = 1000,
                             .failure_threshold = 200 };
    t->readiness = (rt_probe){ .period_ms = 10000, .timeout_ms = 1000,
                               .failure_threshold = 3 };
    t->liveness = t->readiness;
}

/* argv = command + args, env = "K=V" each; both NULL-terminated. */
static int
tpl_vectors(const json_t *spec, rt_template *t)
{
    const json_t *args = get_set(spec, "args"), *env = get_set(spec, "env");
    const json_t *v;
    const char *k;
    size_t n = 0, i;

    t->argv = calloc(json_array_size(args) + 2, sizeof(char *));
    t->env = calloc(json_object_size(env) + 1, sizeof(char *));
    if (t->argv == NULL || t->env == NULL)
        return KB_ENOMEM;
    if ((t->argv[n++] = strdup(json_string_value(get_set(spec, "command"))))
        == NULL)
        return KB_ENOMEM;
    json_array_foreach(args, i, v)
        if ((t->argv[n++] = strdup(json_string_value(v))) == NULL)
            return KB_ENOMEM;
    n = 0;
    json_object_foreach((json_t *)env, k, v) {
        size_t kl = strlen(k), vl = json_string_length(v);
        char *s = malloc(kl + vl + 2);
        if (s == NULL)
            return KB_ENOMEM;
        memcpy(s, k, kl);
        s[kl] = '=';
        memcpy(s + kl + 1, json_string_value(v), vl + 1);
        t->env[n++] = s;
    }
    return 0;
}

/* Check (t NULL) or parse the template fields of spec; others ignored. */
static int
tpl_run(const json_t *spec, rt_template *t, char *err, size_t errlen)
{
    int rc;

    if (!json_is_object(spec))
        return fail(err, errlen, "spec: must be an object");
    for (size_t i = 0; i < NELEM(tpl_fields); i++) {
        const json_t *v = get_set(spec, tpl_fields[i].name);
        if (v == NULL)
            continue;
        rc = tpl_fields[i].check(tpl_fields[i].name, v, t, err, errlen);
        if (rc != 0)
            return rc;
    }
    if ((rc = tpl_cross_check(spec, err, errlen)) != 0)
        return rc;
    if (t != NULL && (rc = tpl_vectors(spec, t)) != 0)
        return rc;
    return 0;
}

int
kb_rt_template_parse(const json_t *spec, rt_template *out, char *err,
                     size_t errlen)
{
    int rc;

    tpl_defaults(out);
    rc = tpl_run(spec, out, err, errlen);
    if (rc == KB_ENOMEM)
        fail(err, errlen, "out of memory");
    if (rc != 0)
        kb_rt_template_free(out);
    return rc;
}

void
kb_rt_template_free(rt_template *t)
{
    if (t == NULL)
        return;
    strv_free(t->argv);
    strv_free(t->env);
    free(t->workdir);
    free(t->startup.path);
    free(t->readiness.path);
    free(t->liveness.path);
    memset(t, 0, sizeof(*t));
}

json_t *
kb_rt_template_extract(const json_t *spec)
{
    json_t *out = json_object();

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < NELEM(tpl_fields); i++) {
        json_t *v = json_object_get(spec, tpl_fields[i].name);
        if (v != NULL && !json_is_null(v)
            && json_object_set(out, tpl_fields[i].name, v) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

bool
kb_rt_template_equal(const json_t *a, const json_t *b)
{
    for (size_t i = 0; i < NELEM(tpl_fields); i++) {
        const json_t *x = get_set(a, tpl_fields[i].name);
        const json_t *y = get_set(b, tpl_fields[i].name);
        if ((x == NULL) != (y == NULL) || (x != NULL && !json_equal(x, y)))
            return false;
    }
    return true;
}

/* ---- service-level fields ---------------------------------------------- */

bool
kb_rt_tag_valid(const char *tag)
{
    size_t n;

    if (tag == NULL || (n = strlen(tag)) == 0 || n > TPL_MAX_TAG)
        return false;
    if (tag[0] < 'a' || tag[0] > 'z' || tag[n - 1] == '-'
        || strstr(tag, "---") != NULL)
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = tag[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

/* One TrafficTarget's own shape; its percent in *pct, latest in *latest. */
static int
check_target(size_t i, const json_t *e, int *pct, bool *latest, char *err,
             size_t errlen)
{
    const json_t *rn = get_set(e, "revisionName");
    const json_t *lr = get_set(e, "latestRevision");
    const json_t *p = get_set(e, "percent"), *tag = get_set(e, "tag");
    const char *k;
    const json_t *v;

    if (!json_is_object(e))
        return fail(err, errlen, "traffic[%zu]: must be an object like "
                    "{\"latestRevision\": true, \"percent\": 100}", i);
    json_object_foreach((json_t *)e, k, v) {
        if (strcmp(k, "revisionName") != 0 && strcmp(k, "latestRevision") != 0
            && strcmp(k, "percent") != 0 && strcmp(k, "tag") != 0)
            return fail(err, errlen, "traffic[%zu].%.64s: unknown field "
                        "(known: revisionName, latestRevision, percent, "
                        "tag)", i, k);
    }
    if (lr != NULL && !json_is_boolean(lr))
        return fail(err, errlen, "traffic[%zu].latestRevision: must be true "
                    "or false", i);
    *latest = json_is_true(lr);
    if (rn != NULL && (!good_string(rn, 128) || json_string_length(rn) == 0))
        return fail(err, errlen, "traffic[%zu].revisionName: must be a "
                    "revision name", i);
    if (*latest && rn != NULL)
        return fail(err, errlen, "traffic[%zu]: set only one of revisionName "
                    "and latestRevision", i);
    if (!*latest && rn == NULL)
        return fail(err, errlen, "traffic[%zu]: set revisionName or "
                    "\"latestRevision\": true", i);
    *pct = 0;
    if (p != NULL) {
        if (!json_is_integer(p) || json_integer_value(p) < 0
            || json_integer_value(p) > 100)
            return fail(err, errlen, "traffic[%zu].percent: must be an "
                        "integer from 0 to 100", i);
        *pct = (int)json_integer_value(p);
    }
    if (tag != NULL && (!json_is_string(tag)
                        || !kb_rt_tag_valid(json_string_value(tag))))
        return fail(err, errlen, "traffic[%zu].tag: must be lowercase "
                    "letters, digits and '-', starting with a letter, at "
                    "most %d characters", i, TPL_MAX_TAG);
    return 0;
}

int
kb_rt_traffic_check(const json_t *traffic, char *err, size_t errlen)
{
    size_t i, j, n;
    int sum = 0, nlatest = 0, rc;
    const json_t *e;

    if (!json_is_array(traffic) || (n = json_array_size(traffic)) == 0
        || n > TPL_MAX_TRAFFIC)
        return fail(err, errlen, "traffic: must be a list of 1 to %d "
                    "targets", TPL_MAX_TRAFFIC);
    json_array_foreach(traffic, i, e) {
        int pct = 0;
        bool latest = false;
        const json_t *tag, *rn;

        if ((rc = check_target(i, e, &pct, &latest, err, errlen)) != 0)
            return rc;
        sum += pct;
        nlatest += latest && pct > 0;
        if (latest && nlatest > 1 && pct > 0)
            return fail(err, errlen, "traffic[%zu]: only one latestRevision "
                        "entry may carry a percent", i);
        tag = get_set(e, "tag");
        rn = get_set(e, "revisionName");
        for (j = 0; j < i; j++) {
            const json_t *o = json_array_get(traffic, j);
            const json_t *ot = get_set(o, "tag"), *orn;
            if (tag != NULL && ot != NULL && json_equal(tag, ot))
                return fail(err, errlen, "traffic[%zu].tag: \"%s\" is "
                            "already used by traffic[%zu]", i,
                            json_string_value(tag), j);
            orn = get_set(o, "revisionName");
            if (pct > 0 && rn != NULL && orn != NULL && json_equal(rn, orn)
                && json_integer_value(get_set(o, "percent")) > 0)
                return fail(err, errlen, "traffic[%zu].revisionName: \"%s\" "
                            "already has a percent in traffic[%zu]; merge "
                            "them", i, json_string_value(rn), j);
        }
    }
    if (sum != 100)
        return fail(err, errlen, "traffic: percents must sum to 100 (they "
                    "sum to %d)", sum);
    return 0;
}

int
kb_runtime_validate(const json_t *spec, char *err, size_t errlen)
{
    const char *k;
    const json_t *v;
    int rc;

    if (!json_is_object(spec))
        return fail(err, errlen, "spec: must be an object");
    json_object_foreach((json_t *)spec, k, v) {
        if (tpl_field_find(k) != NULL || strcmp(k, "revisions") == 0
            || strcmp(k, "revisionCounter") == 0 || json_is_null(v))
            continue;
        if (strcmp(k, "traffic") == 0) {
            if ((rc = kb_rt_traffic_check(v, err, errlen)) != 0)
                return rc;
        } else if (strcmp(k, "revisionHistoryLimit") == 0) {
            if ((rc = int_field(k, v, 1, 1000, NULL, err, errlen)) != 0)
                return rc;
        } else {
            return fail(err, errlen, "%.64s: unknown field (known: command, "
                        "args, env, workingDir, resources, concurrency, "
                        "minInstances, maxInstances, instances, "
                        "scaleDownDelay, timeout, startupProbe, "
                        "readinessProbe, livenessProbe, "
                        "terminationGracePeriod, traffic, "
                        "revisionHistoryLimit)", k);
        }
    }
    return tpl_run(spec, NULL, err, errlen);
}
