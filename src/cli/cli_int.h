/*
 * cli_int.h - internals shared by the files of src/cli/ and by
 * tests/unit/test_cli.c.  cli.c holds the verb table and the argument
 * parser, request.c the admin API client (libcurl), manifest.c the loading
 * and checking of manifests, apply.c and get.c the verbs that talk to the API;
 * deploy.c, services.c and logs.c the release flow (gcloud run's verbs).
 */
#ifndef KB_CLI_INT_H
#define KB_CLI_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include "api/kinds.h"
#include "core/buf.h"
#include "core/yaml.h"

#define KB_CLI_EXIT_OK     0
#define KB_CLI_EXIT_FAIL   1       /* the operation failed */
#define KB_CLI_EXIT_USAGE  2       /* bad verb, flag or argument */

#define KB_CLI_MAX_ARGS    128     /* positional args, and flag values */
#define KB_CLI_MAX_ERRORS  20      /* manifest errors printed at most */

/* ---- the verb table ------------------------------------------------------ */

typedef struct kb_cli_flag {
    const char *name;          /* long name without "--"; NULL ends a table */
    char        short_name;    /* 'f' for -f, or 0 */
    const char *arg;           /* placeholder of its value ("FILE"); NULL for
                                  a switch */
    bool        repeat;        /* may be given more than once */
    const char *help;
} kb_cli_flag;

typedef struct kb_cli_opts {
    const char *pos[KB_CLI_MAX_ARGS];          /* positional arguments */
    size_t      npos;
    struct {
        const kb_cli_flag *flag;
        const char        *value;              /* "" for a switch */
    } set[KB_CLI_MAX_ARGS];
    size_t      nset;
} kb_cli_opts;

/* One invocation of a verb that talks to the admin API. */
typedef struct kb_cli {
    kb_cli_opts opts;
    char        api[1024];     /* base URL, no trailing '/' */
    char       *token;         /* owned; NULL: send no Authorization */
    const char *project;       /* --project, or NULL */
    bool        quiet;         /* request errors are not printed */
} kb_cli;

typedef struct kb_cli_verb {
    const char        *name;   /* NULL ends the table */
    const char        *synopsis;
    const char        *summary;
    const char        *help;
    const kb_cli_flag *flags;  /* the verb's own flags, NULL-name ended */
    int                min_args, max_args;
    bool               hidden; /* not listed by `kiban help` */
    bool               api;    /* talks to the admin API: gets --api etc. */
    /* exactly one of: */
    int (*run)(kb_cli *c);                  /* parsed arguments in c->opts */
    int (*raw)(int argc, char **argv);      /* argv from the verb on */
} kb_cli_verb;

extern const kb_cli_verb kb_cli__verbs[];
extern const kb_cli_flag kb_cli__global_flags[];

const kb_cli_verb *kb_cli__verb_find(const char *name);
/*
 * Parse argv (after the verb) against the verb's flags and the global
 * flags.  0, or KB_EINVAL with a one-line message in err.  Values point
 * into argv.
 */
int  kb_cli__parse(const kb_cli_verb *v, int argc, char **argv,
                   kb_cli_opts *o, char *err, size_t errlen);
/* The last value of a flag (by long name), "" for a switch; NULL if unset. */
const char *kb_cli__opt(const kb_cli_opts *o, const char *name);
/* Every value of a flag, in order, at most max; returns how many. */
size_t kb_cli__opt_all(const kb_cli_opts *o, const char *name,
                       const char **vals, size_t max);

/* Where verbs print (stdout and stderr unless a test redirects them). */
FILE *kb_cli__out(void);
FILE *kb_cli__err(void);
void  kb_cli__set_output(FILE *out, FILE *err);

/* ---- talking to the admin API (request.c) -------------------------------- */

/*
 * Send one request to c->api + path (path starts with "/v1/"), with body
 * (may be NULL) as JSON.  0 with the HTTP status in *status and the parsed
 * body (new reference, NULL if empty or not JSON) in *resp; or KB_EUNAVAIL
 * when the API cannot be reached (already printed unless c->quiet), or
 * KB_ECANCELED (nothing printed) once kb_cli__interrupted is set.
 */
int  kb_cli__call(kb_cli *c, const char *method, const char *path,
                  const json_t *body, long *status, json_t **resp);
/* Print `kiban: MESSAGE (STATUS)` for an error response. */
void kb_cli__api_error(const kb_cli *c, long status, const json_t *resp);
/* Release libcurl's global state if a request initialised it. */
void kb_cli__http_cleanup(void);

/* ---- manifests (manifest.c) ---------------------------------------------- */

typedef struct kb_cli_manifest {
    const kb_kind     *kind;
    char               project[64];
    char               name[64];
    json_t            *spec;       /* owned; checked, nulls removed */
    const char        *file;       /* display name (owned by the source) */
    const char        *dir;        /* base of relative paths */
    const kb_yaml_doc *doc;        /* for lines */
} kb_cli_manifest;

typedef struct kb_cli_source {
    char         *name;            /* "app.yaml", or "<stdin>" */
    char         *dir;
    kb_yaml_doc **docs;
    size_t        ndocs;
} kb_cli_source;

typedef struct kb_cli_mset {
    kb_cli_source   *src;
    size_t           nsrc;
    kb_cli_manifest *items;
    size_t           nitems;
    size_t           nerrors;      /* errors found so far */
    kb_buf           errors;       /* "FILE:LINE: FIELD: reason\n" lines */
} kb_cli_mset;

void kb_cli__mset_init(kb_cli_mset *m);
void kb_cli__mset_free(kb_cli_mset *m);
/* Parse manifest text as the named source; dir is the base of relative
 * paths.  A YAML error is recorded; returns 0 or KB_ENOMEM. */
int  kb_cli__mset_add_text(kb_cli_mset *m, const char *name, const char *dir,
                           const char *text, size_t len);
/* Read a file ("-": stdin) and add it as above. */
int  kb_cli__mset_add_file(kb_cli_mset *m, const char *path);
/*
 * Check every document of every source (project: the --project flag or
 * NULL) and append the good ones to m->items; then resolve cli_only fields
 * (Gateway openapiFile).  Returns the number of errors; each is a line
 * "FILE:LINE: FIELD: reason" in m->errors.
 */
size_t kb_cli__mset_check(kb_cli_mset *m, const char *project);
/* Would applying `desired` change `live`?  Compares only the fields the
 * kind declares, but output-only ones; absent, null and empty ("", [],
 * {}) are the same; a Service's traffic left out is kept, so no change. */
bool kb_cli__spec_differs(const kb_kind *k, const json_t *desired,
                          const json_t *live);

/* ---- verbs (apply.c, get.c) ---------------------------------------------- */

int  kb_cli__apply(kb_cli *c);
int  kb_cli__get(kb_cli *c);
int  kb_cli__delete(kb_cli *c);
int  kb_cli__version(kb_cli *c);
/* gateway_verbs.c */
int  kb_cli__create_key(kb_cli *c);
int  kb_cli__purge_cache(kb_cli *c);
/* "42s", "5m", "3h", "12d", "2y" since an RFC 3339 time; "-" if unknown. */
void kb_cli__age(const char *rfc3339, time_t now, char *buf, size_t len);
/* get.c, shared with the verbs of the release flow: */
/* Replace control characters by '?' and cut past 60 bytes with "...". */
void kb_cli__cell_clean(char *s);
/* Print v as "json" or "yaml" on the output stream.  Exit code. */
int  kb_cli__print_value(const json_t *v, const char *format);
/* Percent-encode all but unreserved characters.  New string or NULL. */
char *kb_cli__url_escape(const char *s);
/* Append every item of /v1/projects/P/COLLECTION to items, following
 * nextPageToken.  Exit code (errors printed). */
int  kb_cli__list_all(kb_cli *c, const char *collection, json_t *items);
/*
 * Print a table: cells holds nrows+1 rows of ncols strings, the first row
 * the headers; NULL cells print as "-".  Each line starts with indent.
 * Cells are cleaned as by kb_cli__cell_clean.  Exit code.
 */
int  kb_cli__print_rows(const char *indent, const char *const *cells,
                        size_t ncols, size_t nrows);
/* The --project flag or "default". */
const char *kb_cli__project(const kb_cli *c);

/* ---- the release flow (deploy.c, services.c, logs.c) --------------------- */

/* Set by SIGINT while a verb waits (logs --follow, deploy's wait): the
 * current request is abandoned and kb_cli__call returns KB_ECANCELED. */
extern volatile int kb_cli__interrupted;

/* "500ms", "30s", "5m", "2h" or a whole number of seconds, to ms.  0 or
 * KB_EINVAL. */
int  kb_cli__duration_ms(const char *s, long long *ms);
/* A decimal integer in [min, max], nothing else.  0 or KB_EINVAL. */
int  kb_cli__int_in(const char *s, long long min, long long max,
                    long long *out);
/*
 * The template a deploy sends: `current` (the Service as read, or NULL
 * to create one) with the deploy flags of o applied (--command, --arg,
 * --env, --remove-env, --working-dir, --memory, --cpu, --concurrency,
 * --min-instances, --max-instances, --timeout).  On success *out is a new
 * object holding only template fields.  KB_EINVAL with a one-line
 * message in err for a bad flag value (or no --command on create).
 */
int  kb_cli__deploy_template(const json_t *current, const kb_cli_opts *o,
                             json_t **out, char *err, size_t errlen);
/* The template fields of a Service (round-trip order). */
extern const char *const kb_cli__template_fields[];
/*
 * The body of :updateTraffic from the update-traffic flags of o.
 * *out a new object; KB_EINVAL with a message in err (bad pair, percent
 * out of range, --to-latest with --to-revisions, no flag at all).
 */
int  kb_cli__traffic_body(const kb_cli_opts *o, json_t **out, char *err,
                          size_t errlen);
/*
 * Percent of the traffic `service` (API view) sends to revision rev: the
 * status' resolved traffic when present, else the spec's (latestRevision
 * entries count for the newest revision).
 */
int  kb_cli__revision_percent(const json_t *service, const char *rev);
/* The newest revision's name in a Service document, or NULL. */
const char *kb_cli__newest_revision(const json_t *service);

int  kb_cli__deploy(kb_cli *c);
int  kb_cli__services(kb_cli *c);
int  kb_cli__revisions(kb_cli *c);
int  kb_cli__logs(kb_cli *c);

#endif
