/*
 * schema.h - the JSON Schema subset of OpenAPI 2.0/3.0/3.1, compiled once
 * when a spec is loaded and then checked against request values by
 * validate.c.  Compiled schemas are read-only and safe to share between
 * worker threads; the request path never looks at the spec document.
 */
#ifndef KB_GW_SCHEMA_H
#define KB_GW_SCHEMA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define GW_SCHEMA_MAX_DEPTH   64       /* nesting of a value we validate */
#define GW_SCHEMA_MAX_BUDGET  (1u << 22) /* keyword checks per request */
#define GW_SCHEMA_MAX_REFS    32       /* $ref → $ref hops */
#define GW_SCHEMA_MAX_NEST    128      /* schema nesting in the document */
#define GW_SCHEMA_MAX_NODES   100000   /* compiled schemas per spec */
#define GW_SCHEMA_MAX_PATTERN 1024     /* bytes of one `pattern` */

/* JSON types, as bits (a schema's `type`, or what a value may become). */
enum {
    GW_T_NULL    = 1u << 0,
    GW_T_BOOLEAN = 1u << 1,
    GW_T_OBJECT  = 1u << 2,
    GW_T_ARRAY   = 1u << 3,
    GW_T_NUMBER  = 1u << 4,
    GW_T_INTEGER = 1u << 5,
    GW_T_STRING  = 1u << 6,
};

typedef enum gw_dialect {
    GW_DIALECT_SWAGGER2,
    GW_DIALECT_OAS30,
    GW_DIALECT_OAS31
} gw_dialect;

typedef struct gw_schema gw_schema;
/* The compiled schemas of one spec document (reference counted; the
 * count is only touched on the control thread at compile/release). */
typedef struct gw_schema_set gw_schema_set;

/*
 * A set compiling schemas of `doc` (borrowed: the caller keeps doc alive
 * and unchanged as long as the set lives; enum/const values point into
 * it).  0 and *out (one reference), or KB_ENOMEM.
 */
int  gw__schema_set_create(const json_t *doc, gw_dialect dialect,
                           gw_schema_set **out);
gw_schema_set *gw__schema_set_ref(gw_schema_set *set);
void gw__schema_set_unref(gw_schema_set *set);
gw_dialect gw__schema_set_dialect(const gw_schema_set *set);

/*
 * The value of a local reference "#/json/pointer" in the set's document
 * (~0, ~1 and %XX decoded), or NULL with a static reason in *why.
 */
const json_t *gw__schema_ref_resolve(const gw_schema_set *set,
                                     const char *ref, const char **why);

/*
 * Compile the schema `v` found at JSON pointer `ptr` (for messages).
 * Schemas are memoized by their JSON node, so a definition used by many
 * operations is compiled once and recursive definitions work.  0 and
 * *out (owned by the set), KB_EINVAL with "pointer: reason" in err,
 * KB_ENOMEM, KB_ETOOBIG (GW_SCHEMA_MAX_NODES).
 */
int  gw__schema_compile(gw_schema_set *set, const json_t *v, const char *ptr,
                        const gw_schema **out, char *err, size_t errlen);

/* What a raw text value should be read as: the schema's `type` bits (a
 * 3.0 `nullable` adds GW_T_NULL; allOf members are looked into), 0 when
 * any type goes.  items: the array item schema, or NULL. */
unsigned gw__schema_types(const gw_schema *s);
const gw_schema *gw__schema_items(const gw_schema *s);

/*
 * Check value v against s.  0 when it conforms.  Otherwise KB_EINVAL and
 * the first failure in err as "<where>: reason", where <where> is `where`
 * followed by the path into v: `body.items[2].name`.  KB_ETOOBIG when v
 * nests deeper than GW_SCHEMA_MAX_DEPTH or checking it would take more
 * than GW_SCHEMA_MAX_BUDGET steps (err says which).  Any thread.
 */
int  gw__schema_validate(const gw_schema *s, const json_t *v,
                         const char *where, char *err, size_t errlen);

#endif
