/*
 * kinds.c - the table of resource kinds (see kinds.h).
 *
 * Each kind is data: its names and a table of spec fields with types and
 * bounds.  kb_kind_check() interprets the table; the few rules a field table
 * cannot say ("exactly one of openapi and openapiFile") are declared in a
 * second table of field groups below, also interpreted by kb_kind_check().
 */
#include "api/kinds.h"
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Limits used when a field's max is 0. */
#define KIND_MAX_STRING  4096      /* bytes of a string, or of a list item */
#define KIND_MAX_ITEMS   1024      /* items of a list or entries of a map */
#define KIND_MAX_KEY     256       /* bytes of a map key */

/* ---- the kinds ----------------------------------------------------------- */

/*
 * Field bounds: for INT, [min, max] (both 0: any int64); for STRING, max
 * bytes; for STRING_LIST and STRING_MAP, max items (0: the defaults above).
 */
static const kb_field service_fields[] = {
    { "command", KB_FIELD_STRING, true, 0, 4096, false,
      "Program to run: a path, or a name looked up in PATH. Each instance "
      "gets PORT, a free loopback port it must listen on.", 0 },
    { "args", KB_FIELD_STRING_LIST, false, 0, 256, false,
      "Arguments passed to the command.", 0 },
    { "env", KB_FIELD_STRING_MAP, false, 0, 256, false,
      "Environment variables added to each instance (values are strings: "
      "quote numbers). PORT, K_SERVICE, K_REVISION, K_CONFIGURATION and "
      "KIBAN_PROJECT are reserved.", 0 },
    { "workingDir", KB_FIELD_STRING, false, 0, 4096, false,
      "Absolute working directory of each instance (default: the server's).",
      0 },
    { "resources", KB_FIELD_OBJECT, false, 0, 0, false,
      "Limits per instance: {memory: 512Mi, cpu: \"0.5\"} (memory in bytes "
      "or k/M/G/Ki/Mi/Gi; cpu in cores or millicores like 500m).", 0 },
    { "concurrency", KB_FIELD_INT, false, 1, 1000, false,
      "Most requests one instance serves at once (default 80).", 0 },
    { "minInstances", KB_FIELD_INT, false, 0, 1000, false,
      "Instances kept warm while the revision has traffic or a tag "
      "(default 0: scale to zero).", 0 },
    { "maxInstances", KB_FIELD_INT, false, 1, 1000, false,
      "Most instances autoscaling starts (default 100).", 0 },
    { "instances", KB_FIELD_INT, false, 0, 64, false,
      "A fixed number of instances (turns autoscaling off; not with "
      "minInstances/maxInstances).", 0 },
    { "scaleDownDelay", KB_FIELD_STRING, false, 0, 32, false,
      "How long an instance may idle before scale-in stops it: \"30s\", "
      "\"5m\" or seconds (default 60s).", KB_FIELD_OR_NUMBER },
    { "timeout", KB_FIELD_STRING, false, 0, 32, false,
      "How long a request may wait for an instance (cold start, queue): "
      "a duration or seconds (default 300s).", KB_FIELD_OR_NUMBER },
    { "startupProbe", KB_FIELD_OBJECT, false, 0, 0, false,
      "When a new instance is ready: {httpGet: {path: /healthz}} or "
      "{tcpSocket: {}} with periodSeconds, timeoutSeconds, "
      "failureThreshold, initialDelaySeconds (default: TCP every 50 ms for "
      "up to 10 s).", 0 },
    { "readinessProbe", KB_FIELD_OBJECT, false, 0, 0, false,
      "Checked while an instance runs; failing takes it out of rotation "
      "(default: none).", 0 },
    { "livenessProbe", KB_FIELD_OBJECT, false, 0, 0, false,
      "Checked while an instance runs; failing restarts it (default: "
      "none).", 0 },
    { "terminationGracePeriod", KB_FIELD_STRING, false, 0, 32, false,
      "Time between SIGTERM and SIGKILL when an instance stops (default "
      "10s).", KB_FIELD_OR_NUMBER },
    { "traffic", KB_FIELD_OBJECT, false, 0, 1000, false,
      "Traffic split: a list of {revisionName: R | latestRevision: true, "
      "percent: N, tag: T}; percents sum to 100 (default: all to the "
      "latest revision; kept as stored when an update leaves it out).",
      KB_FIELD_LIST },
    { "revisionHistoryLimit", KB_FIELD_INT, false, 1, 1000, false,
      "Revisions kept besides the latest and those traffic or a tag "
      "references (default 20).", 0 },
    { "revisions", KB_FIELD_OBJECT, false, 0, 0, false,
      "Output only: the service's revisions, oldest first.",
      KB_FIELD_UNCHECKED },
    { "revisionCounter", KB_FIELD_INT, false, 0, 0, false,
      "Output only: revisions created so far (never reused).",
      KB_FIELD_UNCHECKED },
};

static const kb_field gateway_fields[] = {
    { "openapi", KB_FIELD_OBJECT, false, 0, 0, false,
      "The OpenAPI document (inline) declaring the routes and their backends "
      "(x-google-backend). Set exactly one of openapi and openapiFile.", 0 },
    { "openapiFile", KB_FIELD_STRING, false, 0, 4096, true,
      "Path of a YAML or JSON OpenAPI document, relative to the manifest's "
      "directory; the CLI reads it and sends it as openapi.", 0 },
    { "hosts", KB_FIELD_STRING_LIST, false, 0, 64, false,
      "Host names this gateway answers for (empty: every host).", 0 },
};

static const kb_field apikey_fields[] = {
    { "keyString", KB_FIELD_STRING, false, 0, 256, false,
      "The key (16 to 256 characters). Omit it to have one generated: it is "
      "shown once, in the answer to the create call. Only its SHA-256 is "
      "stored; a later update without keyString keeps the key.", 0 },
    { "gateways", KB_FIELD_STRING_LIST, false, 0, 64, false,
      "Gateways of the project that accept this key (empty: all).", 0 },
    { "displayName", KB_FIELD_STRING, false, 0, 256, false,
      "A label for people.", 0 },
    { "keyHash", KB_FIELD_STRING, false, 0, 64, false,
      "Output only: the key's SHA-256 (hex); ignored on input.", 0 },
    { "keyPrefix", KB_FIELD_STRING, false, 0, 8, false,
      "Output only: the key's first 8 characters, to tell keys apart.", 0 },
};

static const kb_kind kind_service = {
    "Service", "services", "service",
    "A program kiban runs as immutable revisions of local processes, with "
    "traffic split across revisions, tags and autoscaling.",
    service_fields, sizeof(service_fields) / sizeof(service_fields[0]),
};

static const kb_kind kind_gateway = {
    "Gateway", "gateways", "gateway",
    "Routes declared in an OpenAPI document, served on the gateway listener.",
    gateway_fields, sizeof(gateway_fields) / sizeof(gateway_fields[0]),
};

static const kb_kind kind_apikey = {
    "ApiKey", "apiKeys", "apiKey",
    "A key clients send to gateways whose spec has an apiKey security "
    "scheme.",
    apikey_fields, sizeof(apikey_fields) / sizeof(apikey_fields[0]),
};

const kb_kind *const kb_kinds[] = { &kind_service, &kind_gateway,
                                    &kind_apikey, NULL };

/* Groups of fields of which exactly one must be set. */
typedef struct kind_one_of {
    const kb_kind *kind;
    const char    *fields[4];      /* NULL-terminated */
} kind_one_of;

static const kind_one_of one_ofs[] = {
    { &kind_gateway, { "openapi", "openapiFile", NULL } },
};

/* ---- lookup ---------------------------------------------------------------- */

const kb_kind *
kb_kind_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (const kb_kind *const *k = kb_kinds; *k != NULL; k++) {
        if (strcasecmp(name, (*k)->kind) == 0
            || strcasecmp(name, (*k)->collection) == 0
            || strcasecmp(name, (*k)->singular) == 0)
            return *k;
    }
    return NULL;
}

bool
kb_name_valid(const char *name)
{
    size_t n;

    if (name == NULL || (n = strlen(name)) == 0 || n > 63)
        return false;
    if (name[0] < 'a' || name[0] > 'z' || name[n - 1] == '-')
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

/* ---- checking ---------------------------------------------------------------- */

static int
reject(char *field, size_t fieldlen, char *err, size_t errlen,
       const char *fname, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static int
reject(char *field, size_t fieldlen, char *err, size_t errlen,
       const char *fname, const char *fmt, ...)
{
    va_list ap;

    if (fieldlen > 0)
        snprintf(field, fieldlen, "%s", fname);
    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KB_EINVAL;
}

static const kb_field *
field_find(const kb_kind *k, const char *name)
{
    for (size_t i = 0; i < k->nfields; i++)
        if (strcmp(k->fields[i].name, name) == 0)
            return &k->fields[i];
    return NULL;
}

static long long
limit(long long max, long long dflt)
{
    return max > 0 ? max : dflt;
}

static const char *
type_name(kb_field_type t)
{
    switch (t) {
    case KB_FIELD_STRING:      return "a string";
    case KB_FIELD_INT:         return "an integer";
    case KB_FIELD_BOOL:        return "true or false";
    case KB_FIELD_STRING_LIST: return "a list of strings";
    case KB_FIELD_STRING_MAP:  return "a mapping of strings";
    case KB_FIELD_OBJECT:      return "a mapping";
    }
    return "?";
}

/* A string item: type, NUL, length.  `what` names it in messages. */
static int
check_string(const json_t *v, long long max, bool nonempty, char *field,
             size_t fieldlen, char *err, size_t errlen, const char *fname)
{
    size_t n;

    if (!json_is_string(v)) {
        if (json_is_number(v) || json_is_boolean(v))
            return reject(field, fieldlen, err, errlen, fname,
                          "must be a string (quote the value)");
        return reject(field, fieldlen, err, errlen, fname, "must be a string");
    }
    n = json_string_length(v);
    if (memchr(json_string_value(v), '\0', n) != NULL)
        return reject(field, fieldlen, err, errlen, fname,
                      "must not contain NUL characters");
    if ((long long)n > max)
        return reject(field, fieldlen, err, errlen, fname,
                      "is longer than %lld bytes", max);
    if (nonempty && n == 0)
        return reject(field, fieldlen, err, errlen, fname,
                      "must not be empty");
    return 0;
}

static int
check_field(const kb_field *f, const json_t *v, char *field, size_t fieldlen,
            char *err, size_t errlen)
{
    char sub[512];
    int rc;

    if (f->variant == KB_FIELD_UNCHECKED)
        return 0;
    if (f->variant == KB_FIELD_OR_NUMBER && json_is_number(v))
        return 0;
    switch (f->type) {
    case KB_FIELD_STRING:
        return check_string(v, limit(f->max, KIND_MAX_STRING), f->required,
                            field, fieldlen, err, errlen, f->name);
    case KB_FIELD_INT: {
        json_int_t i;
        if (!json_is_integer(v))
            return reject(field, fieldlen, err, errlen, f->name,
                          "must be an integer");
        i = json_integer_value(v);
        if ((f->min != 0 || f->max != 0) && (i < f->min || i > f->max))
            return reject(field, fieldlen, err, errlen, f->name,
                          "must be between %lld and %lld", f->min, f->max);
        return 0;
    }
    case KB_FIELD_BOOL:
        if (!json_is_boolean(v))
            return reject(field, fieldlen, err, errlen, f->name,
                          "must be true or false");
        return 0;
    case KB_FIELD_STRING_LIST: {
        size_t i;
        json_t *item;
        long long max = limit(f->max, KIND_MAX_ITEMS);
        if (!json_is_array(v))
            return reject(field, fieldlen, err, errlen, f->name,
                          "must be a list of strings");
        if ((long long)json_array_size(v) > max)
            return reject(field, fieldlen, err, errlen, f->name,
                          "has more than %lld items", max);
        json_array_foreach(v, i, item) {
            snprintf(sub, sizeof(sub), "%s[%zu]", f->name, i);
            rc = check_string(item, KIND_MAX_STRING, false, field, fieldlen,
                              err, errlen, sub);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    case KB_FIELD_STRING_MAP: {
        const char *key;
        json_t *item;
        long long max = limit(f->max, KIND_MAX_ITEMS);
        if (!json_is_object(v))
            return reject(field, fieldlen, err, errlen, f->name,
                          "must be a mapping of strings");
        if ((long long)json_object_size(v) > max)
            return reject(field, fieldlen, err, errlen, f->name,
                          "has more than %lld entries", max);
        json_object_foreach((json_t *)v, key, item) {
            snprintf(sub, sizeof(sub), "%s.%s", f->name, key);
            if (key[0] == '\0' || strlen(key) > KIND_MAX_KEY
                || strchr(key, '=') != NULL)
                return reject(field, fieldlen, err, errlen, sub,
                              "keys must be 1 to %d bytes without '='",
                              KIND_MAX_KEY);
            rc = check_string(item, KIND_MAX_STRING, false, field, fieldlen,
                              err, errlen, sub);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    case KB_FIELD_OBJECT:
        if (f->variant == KB_FIELD_LIST) {
            size_t i;
            json_t *item;
            long long max = limit(f->max, KIND_MAX_ITEMS);
            if (!json_is_array(v))
                return reject(field, fieldlen, err, errlen, f->name,
                              "must be a list of mappings");
            if ((long long)json_array_size(v) > max)
                return reject(field, fieldlen, err, errlen, f->name,
                              "has more than %lld items", max);
            json_array_foreach(v, i, item) {
                if (json_is_object(item))
                    continue;
                snprintf(sub, sizeof(sub), "%s[%zu]", f->name, i);
                return reject(field, fieldlen, err, errlen, sub,
                              "must be a mapping");
            }
            return 0;
        }
        if (!json_is_object(v))
            return reject(field, fieldlen, err, errlen, f->name,
                          "must be a mapping");
        return 0;
    }
    return reject(field, fieldlen, err, errlen, f->name, "unknown field type");
}

/* Present and not null: an explicit null is the same as leaving it out. */
static bool
is_set(const json_t *spec, const char *name)
{
    const json_t *v = json_object_get(spec, name);
    return v != NULL && !json_is_null(v);
}

static int
check_one_ofs(const kb_kind *k, const json_t *spec, bool allow_cli_only,
              char *field, size_t fieldlen, char *err, size_t errlen)
{
    for (size_t g = 0; g < sizeof(one_ofs) / sizeof(one_ofs[0]); g++) {
        const char *set[4], *names[4];
        size_t nset = 0, nnames = 0;

        if (one_ofs[g].kind != k)
            continue;
        for (const char *const *n = one_ofs[g].fields; *n != NULL; n++) {
            const kb_field *f = field_find(k, *n);
            if (f == NULL || (f->cli_only && !allow_cli_only))
                continue;
            names[nnames++] = *n;
            if (is_set(spec, *n))
                set[nset++] = *n;
        }
        if (nset == 1)
            continue;
        if (nset > 1)
            return reject(field, fieldlen, err, errlen, set[1],
                          "cannot be set together with %s; set only one",
                          set[0]);
        if (nnames == 1)
            return reject(field, fieldlen, err, errlen, names[0],
                          "is required");
        if (nnames == 2)
            return reject(field, fieldlen, err, errlen, names[0],
                          "one of %s or %s is required", names[0], names[1]);
        return reject(field, fieldlen, err, errlen, names[0],
                      "one of %s, %s, ... is required", names[0], names[1]);
    }
    return 0;
}

int
kb_kind_check(const kb_kind *k, const json_t *spec, bool allow_cli_only,
              char *field, size_t fieldlen, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    int rc;

    if (fieldlen > 0)
        field[0] = '\0';
    if (errlen > 0)
        err[0] = '\0';
    if (!json_is_object(spec))
        return reject(field, fieldlen, err, errlen, "", "must be a mapping");

    json_object_foreach((json_t *)spec, key, v) {
        const kb_field *f = field_find(k, key);
        if (f == NULL || (f->cli_only && !allow_cli_only)) {
            char known[512];
            size_t off = 0;
            known[0] = '\0';
            for (size_t i = 0; i < k->nfields; i++) {
                if (k->fields[i].cli_only && !allow_cli_only)
                    continue;
                int n = snprintf(known + off, sizeof(known) - off, "%s%s",
                                 off ? ", " : "", k->fields[i].name);
                if (n < 0 || (size_t)n >= sizeof(known) - off)
                    break;
                off += (size_t)n;
            }
            if (f != NULL)
                return reject(field, fieldlen, err, errlen, key,
                              "is resolved by the kiban CLI and cannot be "
                              "sent to the API");
            return reject(field, fieldlen, err, errlen, key,
                          "unknown field for %s (known: %s)", k->kind, known);
        }
        if (json_is_null(v))
            continue;                       /* same as absent */
        if ((rc = check_field(f, v, field, fieldlen, err, errlen)) != 0)
            return rc;
    }
    for (size_t i = 0; i < k->nfields; i++) {
        const kb_field *f = &k->fields[i];
        if (f->required && !is_set(spec, f->name))
            return reject(field, fieldlen, err, errlen, f->name,
                          "is required (%s)", type_name(f->type));
    }
    return check_one_ofs(k, spec, allow_cli_only, field, fieldlen, err,
                         errlen);
}
