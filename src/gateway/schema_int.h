/*
 * schema_int.h - the compiled schema node, shared by schema.c (which
 * builds it) and schema_check.c (which checks values against it).  Not
 * for other files: they go through schema.h.
 */
#ifndef KB_GW_SCHEMA_INT_H
#define KB_GW_SCHEMA_INT_H

#include <regex.h>

#include "gateway/schema.h"

typedef enum gw_fmt {
    FMT_NONE = 0, FMT_DATE_TIME, FMT_DATE, FMT_TIME, FMT_EMAIL, FMT_UUID,
    FMT_INT32, FMT_INT64, FMT_IPV4, FMT_IPV6, FMT_URI, FMT_HOSTNAME, FMT_BYTE
} gw_fmt;

enum {
    F_MIN      = 1u << 0,            /* minimum (inclusive) */
    F_XMIN     = 1u << 1,            /* exclusive minimum */
    F_MAX      = 1u << 2,
    F_XMAX     = 1u << 3,
    F_MULT     = 1u << 4,
    F_UNIQUE   = 1u << 5,
    F_READONLY = 1u << 6,
    F_NO_ADDL  = 1u << 7,            /* additionalProperties: false */
    F_NEVER    = 1u << 8,            /* the schema `false` */
    F_NULLABLE = 1u << 9,            /* 3.0 nullable: true */
    F_CONST    = 1u << 10,
    F_XMIN_B   = 1u << 11,           /* exclusiveMinimum: true (2.0/3.0) */
    F_XMAX_B   = 1u << 12,
};

typedef struct prop {
    const char      *name;           /* points into the document */
    const gw_schema *schema;
} prop;

struct gw_schema {
    const json_t     *src;           /* memo key */
    unsigned          types;         /* GW_T_*; 0: any */
    unsigned          flags;
    gw_fmt            format;
    const char       *format_name;  /* as the spec wrote it */
    double            minimum, xminimum, maximum, xmaximum, multiple_of;
    size_t            min_len, max_len, min_items, max_items;
    size_t            min_props, max_props;
    regex_t          *pattern;
    const char       *pattern_src;
    const json_t     *enum_vals;     /* borrowed from the document */
    const json_t     *const_val;
    const char       *enum_text;     /* for messages, made at compile */
    const char       *const_text;
    const gw_schema  *items;
    prop             *props;         /* sorted by name */
    size_t            nprops;
    const char      **required;
    size_t            nrequired;
    const gw_schema  *addl;          /* additionalProperties schema */
    const gw_schema **all_of, **any_of, **one_of;
    size_t            nall, nany, none;
    const gw_schema  *not_;
    /* compile state */
    int               state;         /* 0 in progress, 1 done */
    int               level;         /* descents when compiling began */
};

#define NTYPES 7                     /* GW_T_* bits */

#endif
