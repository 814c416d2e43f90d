/*
 * options.c - the `kiban server` settings table (see options.h).
 */
#include "server/options.h"
#include "core/err.h"
#include "core/yaml.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    OPT_STRING, OPT_DURATION_MS, OPT_SIZE, OPT_LOG_LEVEL, OPT_INT, OPT_BOOL
} opt_type;

typedef struct opt_def {
    const char *flag;          /* without the leading "--" */
    const char *key;           /* config file key */
    opt_type    type;
    size_t      offset;
    const char *def;           /* default, as text */
    int64_t     min, max;      /* numeric bounds */
    const char *help;
} opt_def;

#define OFF(f) offsetof(kb_server_options, f)

static const opt_def opt_table[] = {
    { "gateway-listen", "gateway_listen", OPT_STRING, OFF(gateway_listen),
      "127.0.0.1:8080", 0, 0, "address of the public gateway listener" },
    { "api-listen", "api_listen", OPT_STRING, OFF(api_listen),
      "127.0.0.1:8401", 0, 0, "address of the admin API listener" },
    { "data-dir", "data_dir", OPT_STRING, OFF(data_dir),
      "./kiban-data", 0, 0, "directory for the store and the admin token" },
    { "store", "store", OPT_STRING, OFF(store),
      NULL, 0, 0, "store URL (default: sqlite:DATA_DIR/kiban.db)" },
    { "log-level", "log_level", OPT_LOG_LEVEL, OFF(log_level),
      "info", 0, 0, "debug, info, warn or error" },
    { "shutdown-grace", "shutdown_grace", OPT_DURATION_MS,
      OFF(shutdown_grace_ms), "10s", 0, 3600000,
      "time in-flight requests and services get to finish on shutdown" },
    { "max-body", "max_body", OPT_SIZE, OFF(max_body_bytes),
      "32MiB", 1024, (int64_t)1 << 31, "largest request body accepted" },
    { "header-timeout", "header_timeout", OPT_DURATION_MS,
      OFF(header_timeout_ms), "10s", 100, 3600000,
      "time a client gets to send a request head (then 408)" },
    { "idle-timeout", "idle_timeout", OPT_DURATION_MS,
      OFF(idle_timeout_ms), "60s", 100, 3600000,
      "keep-alive connections idle this long are closed" },
    { "gateway-workers", "gateway_workers", OPT_INT, OFF(gateway_workers),
      "0", 0, 256, "gateway data-path loops (0: one per CPU core)" },
    { "gateway-tls-listen", "gateway_tls_listen", OPT_STRING,
      OFF(gateway_tls_listen), NULL, 0, 0,
      "address of the gateway's TLS listener (needs --tls-cert)" },
    { "tls-cert", "tls_cert", OPT_STRING, OFF(tls_certs), NULL, 0, 0,
      "CERT.pem:KEY.pem[,CERT:KEY...]; the first is the default, the "
      "others are chosen by SNI" },
    { "gateway-h2", "gateway_h2", OPT_BOOL, OFF(gateway_h2), "true", 0, 1,
      "HTTP/2 on the gateway (h2c prior knowledge, ALPN h2 over TLS)" },
    { "access-log", "access_log", OPT_STRING, OFF(access_log), "stderr", 0,
      0, "gateway access log: stderr, stdout, off or a file path" },
    { "max-connections", "max_connections", OPT_INT, OFF(max_connections),
      "10000", 1, 1000000, "open connections per gateway listener loop" },
    { "max-conns-per-ip", "max_conns_per_ip", OPT_INT,
      OFF(max_conns_per_ip), "0", 0, 1000000,
      "open gateway connections from one client address (0: no limit)" },
    { "gateway-cache-size", "gateway_cache_size", OPT_SIZE,
      OFF(gateway_cache_bytes), "64MiB", 0, (int64_t)1 << 40,
      "memory for the gateway's response cache" },
    { "ca-file", "ca_file", OPT_STRING, OFF(ca_file), NULL, 0, 0,
      "extra CA certificates (PEM) trusted for https backends and JWKS" },
    { "domain", "domain", OPT_STRING, OFF(domain), "localhost", 0, 0,
      "service URLs: SERVICE.DOMAIN and TAG---SERVICE.DOMAIN on the gateway" },
    { "run-as", "run_as", OPT_STRING, OFF(run_as), "nobody", 0, 0,
      "user that service instances run as when the server runs as root "
      "(\"\": the server's user)" },
    { "service-log-size", "service_log_size", OPT_SIZE,
      OFF(service_log_bytes), "4MiB", 0, (int64_t)1 << 34,
      "memory for each service's captured output (kiban logs)" },
};
#define NOPTS (sizeof(opt_table) / sizeof(opt_table[0]))

/* "250ms", "10s", "2m", or a bare number of seconds. */
static int
parse_duration_ms(const char *s, int64_t *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || v < 0)
        return KB_EINVAL;
    if (strcmp(end, "ms") == 0)
        ;
    else if (*end == '\0' || strcmp(end, "s") == 0)
        v *= 1000;
    else if (strcmp(end, "m") == 0)
        v *= 60000;
    else
        return KB_EINVAL;
    if (v > 9e15)
        return KB_EINVAL;
    *out = (int64_t)v;
    return 0;
}

/* "1024", "64KiB", "32MiB", "1GiB". */
static int
parse_size(const char *s, int64_t *out)
{
    static const struct { const char *suffix; int64_t mult; } units[] = {
        { "", 1 }, { "B", 1 }, { "KiB", 1024 }, { "MiB", 1024 * 1024 },
        { "GiB", 1024 * 1024 * 1024 },
    };
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || v < 0)
        return KB_EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > INT64_MAX / units[i].mult)
                return KB_EINVAL;
            *out = v * units[i].mult;
            return 0;
        }
    }
    return KB_EINVAL;
}

static int
set_opt(kb_server_options *o, const opt_def *d, const char *val,
        const char *where, char *err, size_t errlen)
{
    char *base = (char *)o + d->offset;
    int64_t n = 0;
    int rc = 0;

    switch (d->type) {
    case OPT_STRING: {
        char **slot = (char **)(void *)base;
        char *dup = strdup(val);
        if (dup == NULL)
            return KB_ENOMEM;
        free(*slot);
        *slot = dup;
        return 0;
    }
    case OPT_LOG_LEVEL:
        rc = kb_log_level_parse(val, (kb_log_level *)(void *)base);
        if (rc != 0)
            snprintf(err, errlen, "%s: '%s' is not a log level (debug, info, "
                     "warn, error)", where, val);
        return rc;
    case OPT_DURATION_MS:
        rc = parse_duration_ms(val, &n);
        break;
    case OPT_SIZE:
        rc = parse_size(val, &n);
        break;
    case OPT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        rc = errno != 0 || end == val || *end != '\0' ? KB_EINVAL : 0;
        n = v;
        break;
    }
    case OPT_BOOL:
        if (strcmp(val, "true") == 0 || strcmp(val, "on") == 0 ||
            strcmp(val, "1") == 0)
            n = 1;
        else if (strcmp(val, "false") == 0 || strcmp(val, "off") == 0 ||
                 strcmp(val, "0") == 0)
            n = 0;
        else
            rc = KB_EINVAL;
        break;
    }
    if (rc != 0 || n < d->min || n > d->max) {
        static const char *const what[] = {
            [OPT_DURATION_MS] = "duration (e.g. 10s, 500ms)",
            [OPT_SIZE] = "size (e.g. 32MiB)",
            [OPT_INT] = "number",
            [OPT_BOOL] = "boolean (true or false)",
        };
        if (d->type == OPT_INT && rc == 0)
            snprintf(err, errlen, "%s: '%s' must be between %lld and %lld",
                     where, val, (long long)d->min, (long long)d->max);
        else
            snprintf(err, errlen, "%s: '%s' is not a valid %s", where, val,
                     what[d->type]);
        return KB_EINVAL;
    }
    *(int64_t *)(void *)base = n;
    return 0;
}

static int
load_config(kb_server_options *o, const char *path, char *err, size_t errlen)
{
    json_t *doc = NULL, *v;
    const char *key;
    char text[64], where[256];
    int rc;

    rc = kb_yaml_load_file(path, &doc, err, errlen);
    if (rc != 0)
        return rc;
    if (!json_is_object(doc)) {
        snprintf(err, errlen, "%s: the config file must be a mapping", path);
        rc = KB_EINVAL;
        goto out;
    }
    json_object_foreach(doc, key, v) {
        const opt_def *d = NULL;
        const char *val;

        for (size_t i = 0; i < NOPTS; i++)
            if (strcmp(opt_table[i].key, key) == 0)
                d = &opt_table[i];
        snprintf(where, sizeof(where), "%s: %s", path, key);
        if (d == NULL) {
            snprintf(err, errlen, "%s: unknown setting", where);
            rc = KB_EINVAL;
            goto out;
        }
        if (json_is_string(v)) {
            val = json_string_value(v);
        } else if (json_is_boolean(v)) {
            val = json_is_true(v) ? "true" : "false";
        } else if (json_is_integer(v)) {
            snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(v));
            val = text;
        } else {
            snprintf(err, errlen, "%s: expected a string or a number", where);
            rc = KB_EINVAL;
            goto out;
        }
        rc = set_opt(o, d, val, where, err, errlen);
        if (rc != 0)
            goto out;
    }
out:
    json_decref(doc);
    return rc;
}

static const opt_def *
find_flag(const char *arg, const char **inline_val)
{
    size_t n;

    if (strncmp(arg, "--", 2) != 0)
        return NULL;
    arg += 2;
    n = strcspn(arg, "=");
    *inline_val = arg[n] == '=' ? arg + n + 1 : NULL;
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opt_table[i].flag) == n &&
            strncmp(opt_table[i].flag, arg, n) == 0)
            return &opt_table[i];
    if (n == 6 && strncmp(arg, "config", 6) == 0)
        return (const opt_def *)1;      /* handled by the caller */
    return NULL;
}

int
kb_server_options_parse(kb_server_options *o, int argc, char **argv,
                        char *err, size_t errlen)
{
    const char *config = NULL, *val;
    char where[128];
    int rc;

    memset(o, 0, sizeof(*o));
    for (size_t i = 0; i < NOPTS; i++) {
        if (opt_table[i].def == NULL)
            continue;
        rc = set_opt(o, &opt_table[i], opt_table[i].def, "default", err,
                     errlen);
        if (rc != 0)
            return rc;
    }

    /* First pass: --help and --config (the file sits under the flags). */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            kb_buf b = KB_BUF_INIT(1 << 16);
            kb_server_options_usage(&b);
            fputs(kb_buf_cstr(&b), stdout);
            kb_buf_free(&b);
            return 1;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i] + 9;
    }
    if (config != NULL) {
        o->config = strdup(config);
        rc = load_config(o, config, err, errlen);
        if (rc != 0)
            return rc;
    }

    for (int i = 1; i < argc; i++) {
        const opt_def *d = find_flag(argv[i], &val);

        if (d == NULL) {
            snprintf(err, errlen, "unknown flag '%s' (see 'kiban server "
                     "--help')", argv[i]);
            return KB_EINVAL;
        }
        if (val == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "flag '%s' needs a value", argv[i]);
                return KB_EINVAL;
            }
            val = argv[++i];
        }
        if (d == (const opt_def *)1)
            continue;                   /* --config, already loaded */
        snprintf(where, sizeof(where), "--%s", d->flag);
        rc = set_opt(o, d, val, where, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void
kb_server_options_free(kb_server_options *o)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (opt_table[i].type == OPT_STRING) {
            char **slot = (char **)(void *)((char *)o + opt_table[i].offset);
            free(*slot);
            *slot = NULL;
        }
    }
    free(o->config);
    o->config = NULL;
}

int
kb_server_options_usage(kb_buf *out)
{
    int rc = kb_buf_appends(out,
        "usage: kiban server [flags]\n\n"
        "Runs every kiban plane in one process.\n\nflags:\n"
        "  --config FILE                  settings file (YAML or JSON; keys as the "
        "flags with '_')\n");

    for (size_t i = 0; i < NOPTS && rc == 0; i++) {
        char left[40];
        snprintf(left, sizeof(left), "--%s VALUE", opt_table[i].flag);
        rc = kb_buf_appendf(out, "  %-30s %s", left, opt_table[i].help);
        if (rc == 0 && opt_table[i].def != NULL)
            rc = kb_buf_appendf(out, " (default %s)", opt_table[i].def);
        if (rc == 0)
            rc = kb_buf_appendc(out, '\n');
    }
    return rc;
}
