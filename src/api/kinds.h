/*
 * kinds.h - the resource kinds of manifests and of the admin API.
 *
 * One table declares every kind: its manifest name ("Service"), its API
 * collection ("services"), the names the CLI accepts for it, and the fields
 * of its spec with their types and bounds.  The CLI checks manifests with
 * it (reporting file:line), the admin API checks request bodies with it,
 * and `kiban help` and docs/ list it.
 *
 * A manifest document:
 *   kind: Service
 *   metadata: { name: hello, project: default }   # project optional
 *   spec: { command: ..., args: [...], env: {K: V}, instances: 1 }
 * The API resource is the spec's fields plus output-only fields (name,
 * uid, createTime, updateTime, etag, status).
 */
#ifndef KB_API_KINDS_H
#define KB_API_KINDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum kb_field_type {
    KB_FIELD_STRING,
    KB_FIELD_INT,
    KB_FIELD_BOOL,
    KB_FIELD_STRING_LIST,      /* array of strings */
    KB_FIELD_STRING_MAP,       /* object of string values */
    KB_FIELD_OBJECT            /* any JSON object (e.g. an OpenAPI doc) */
} kb_field_type;

/* Refinements of a field's type (kb_field.variant). */
typedef enum kb_field_variant {
    KB_FIELD_PLAIN = 0,
    KB_FIELD_OR_NUMBER,        /* STRING that may be a number as well
                                  (a duration: "30s" or 30) */
    KB_FIELD_LIST,             /* OBJECT: a list of mappings instead */
    KB_FIELD_UNCHECKED         /* any JSON: output-only, the server
                                  replaces what a client sends */
} kb_field_variant;

typedef struct kb_field {
    const char   *name;
    kb_field_type type;
    bool          required;
    long long     min, max;    /* INT bounds; STRING/LIST/MAP max length
                                  (0 = default limit) */
    bool          cli_only;    /* resolved by the CLI, never sent (e.g.
                                  Gateway openapiFile) */
    const char   *help;
    kb_field_variant variant;
} kb_field;

typedef struct kb_kind {
    const char     *kind;        /* "Service" */
    const char     *collection;  /* "services": API path segment */
    const char     *singular;    /* "service" */
    const char     *help;
    const kb_field *fields;
    size_t          nfields;
} kb_kind;

/* Every kind, NULL-terminated. */
extern const kb_kind *const kb_kinds[];

/* By manifest kind, collection or singular, case-insensitive; or NULL. */
const kb_kind *kb_kind_find(const char *name);
/*
 * Check a spec object against the kind's field table: unknown fields, wrong
 * types, missing required fields, bounds.  cli_only fields are refused
 * unless allow_cli_only.  Returns 0, or KB_EINVAL with the offending field
 * name (e.g. "instances", "env.FOO") in field and the reason in err.
 */
int kb_kind_check(const kb_kind *k, const json_t *spec, bool allow_cli_only,
                  char *field, size_t fieldlen, char *err, size_t errlen);
/* Resource names must be RFC 1035 labels: [a-z]([-a-z0-9]*[a-z0-9])?, at
 * most 63 characters.  Also used for project names. */
bool kb_name_valid(const char *name);

#endif
