/*
 * template.h - a revision's template: the fields of a Service that a
 * revision freezes (command, args, env, workingDir, resources, scaling,
 * probes, timeouts), checked and parsed with every default filled in.
 * The API checks Service documents with kb_runtime_validate (runtime.h);
 * the runtime parses each revision's template into an rt_template.
 */
#ifndef KB_RUNTIME_TEMPLATE_H
#define KB_RUNTIME_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_probe {
    bool      http;                  /* httpGet, else tcpSocket */
    char     *path;                  /* httpGet.path (own copy), "/" … */
    uint64_t  initial_delay_ms;
    uint64_t  period_ms;
    uint64_t  timeout_ms;
    int       failure_threshold;
    bool      set;                   /* given in the spec (else default;
                                        readiness/liveness: off) */
} rt_probe;

typedef struct rt_template {
    char    **argv;                  /* command + args, NULL-terminated */
    char    **env;                   /* the spec's "K=V", NULL-terminated */
    char     *workdir;               /* NULL: the server's working dir */
    uint64_t  memory_bytes;          /* 0: no limit */
    uint32_t  cpu_millis;            /* 0: no limit (1000 = one core) */
    int       concurrency;           /* max in-flight per instance */
    int       min_instances;
    int       max_instances;
    bool      fixed;                 /* `instances` given: min = max */
    uint64_t  scale_down_delay_ms;
    uint64_t  timeout_ms;            /* a request's wait for an instance */
    uint64_t  grace_ms;              /* SIGTERM → SIGKILL */
    rt_probe  startup, readiness, liveness;
} rt_template;

/* The template fields of a Service document, in the order docs list them. */
extern const char *const kb_rt_template_fields[];

/*
 * Parse a checked or unchecked template (or a whole Service document:
 * other fields are ignored) into *out with defaults filled in.  0;
 * KB_EINVAL with "field: reason" in err; KB_ENOMEM.  On error nothing is
 * left allocated.  kb_rt_template_free() releases what a parse allocated.
 */
int  kb_rt_template_parse(const json_t *spec, rt_template *out, char *err,
                          size_t errlen);
void kb_rt_template_free(rt_template *t);
/* A new object holding only the template fields of `spec`; NULL when out
 * of memory. */
json_t *kb_rt_template_extract(const json_t *spec);
/* Do two documents have equal template fields (absent == absent)? */
bool kb_rt_template_equal(const json_t *a, const json_t *b);

#endif
