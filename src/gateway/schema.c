/*
 * schema.c - compiles the JSON Schema subset used by OpenAPI 2.0/3.0/3.1
 * into read-only gw_schema nodes (see schema.h); schema_check.c checks
 * values against them.  validate.c uses both for parameters and bodies.
 *
 * Compile: every keyword comes from one table (`keywords[]`); $ref is
 * resolved inside the document and memoized by JSON node, so recursive
 * definitions become cyclic graphs.  A cycle that never descends into a
 * property or item (A = allOf[A]) would loop forever and is refused.
 */
#include "gateway/schema_int.h"
#include "gateway/gw_int.h"          /* gw__spec_fail, gw__pointer_join */
#include "core/buf.h"
#include "core/err.h"
#include "core/pool.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PTR_MAX     1024             /* longest JSON pointer we print */

static const struct {
    const char *name;
    gw_fmt      f;
} formats[] = {
    { "date-time", FMT_DATE_TIME }, { "date", FMT_DATE },
    { "time", FMT_TIME },           { "email", FMT_EMAIL },
    { "uuid", FMT_UUID },           { "int32", FMT_INT32 },
    { "int64", FMT_INT64 },         { "ipv4", FMT_IPV4 },
    { "ipv6", FMT_IPV6 },           { "uri", FMT_URI },
    { "hostname", FMT_HOSTNAME },   { "byte", FMT_BYTE },
};
#define NFORMATS (sizeof(formats) / sizeof(formats[0]))

typedef struct memo_slot {
    const json_t *key;
    gw_schema    *val;
} memo_slot;

struct gw_schema_set {
    size_t        refs;
    const json_t *doc;
    gw_dialect    dialect;
    kb_pool      *pool;
    memo_slot    *memo;
    size_t        memo_cap, memo_n;
};

/* ------------------------------------------------------------------------ */
/* The set                                                                   */

int
gw__schema_set_create(const json_t *doc, gw_dialect dialect,
                      gw_schema_set **out)
{
    gw_schema_set *set = calloc(1, sizeof(*set));

    *out = NULL;
    if (set == NULL)
        return KB_ENOMEM;
    set->pool = kb_pool_create(16384);
    if (set->pool == NULL) {
        free(set);
        return KB_ENOMEM;
    }
    set->refs = 1;
    set->doc = doc;
    set->dialect = dialect;
    *out = set;
    return 0;
}

gw_schema_set *
gw__schema_set_ref(gw_schema_set *set)
{
    set->refs++;
    return set;
}

void
gw__schema_set_unref(gw_schema_set *set)
{
    if (set == NULL || --set->refs > 0)
        return;
    kb_pool_destroy(set->pool);      /* runs regfree hooks */
    free(set->memo);
    free(set);
}

gw_dialect
gw__schema_set_dialect(const gw_schema_set *set)
{
    return set->dialect;
}

static size_t
memo_hash(const json_t *key, size_t cap)
{
    uintptr_t h = (uintptr_t)key;

    h ^= h >> 17;
    h *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 7) & (cap - 1);
}

static gw_schema *
memo_get(const gw_schema_set *set, const json_t *key)
{
    if (set->memo_cap == 0)
        return NULL;
    for (size_t i = memo_hash(key, set->memo_cap);;
         i = (i + 1) & (set->memo_cap - 1)) {
        if (set->memo[i].key == NULL)
            return NULL;
        if (set->memo[i].key == key)
            return set->memo[i].val;
    }
}

static int
memo_put(gw_schema_set *set, const json_t *key, gw_schema *val)
{
    if (set->memo_n >= GW_SCHEMA_MAX_NODES)
        return KB_ETOOBIG;
    if ((set->memo_n + 1) * 2 > set->memo_cap) {
        size_t cap = set->memo_cap ? set->memo_cap * 2 : 64;
        memo_slot *grown = calloc(cap, sizeof(*grown));
        if (grown == NULL)
            return KB_ENOMEM;
        for (size_t i = 0; i < set->memo_cap; i++) {
            size_t j;
            if (set->memo[i].key == NULL)
                continue;
            for (j = memo_hash(set->memo[i].key, cap); grown[j].key != NULL;
                 j = (j + 1) & (cap - 1))
                ;
            grown[j] = set->memo[i];
        }
        free(set->memo);
        set->memo = grown;
        set->memo_cap = cap;
    }
    size_t i = memo_hash(key, set->memo_cap);
    while (set->memo[i].key != NULL)
        i = (i + 1) & (set->memo_cap - 1);
    set->memo[i].key = key;
    set->memo[i].val = val;
    set->memo_n++;
    return 0;
}

/* Decode one JSON-pointer token of a URI fragment: %XX, then ~1 ~0. */
static bool
token_decode(const char *s, size_t n, kb_buf *out)
{
    kb_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return false;
            ch = gw__hex_digit(s[i + 1]) * 16 + gw__hex_digit(s[i + 2]);
            i += 2;
        }
        if (ch == '~') {
            char next = i + 1 < n ? s[i + 1] : '\0';
            if (next != '0' && next != '1')
                return false;
            ch = next == '0' ? '~' : '/';
            i++;
        }
        if (ch == 0 || kb_buf_appendc(out, (char)ch) != 0)
            return false;
    }
    return true;
}

const json_t *
gw__schema_ref_resolve(const gw_schema_set *set, const char *ref,
                       const char **why)
{
    kb_buf tok = KB_BUF_INIT(PTR_MAX);
    const json_t *v = set->doc;
    const char *p;

    if (ref[0] != '#') {
        *why = "only local references (\"#/...\") are supported";
        return NULL;
    }
    p = ref + 1;
    if (*p != '\0' && *p != '/') {
        *why = "not a JSON pointer (\"#/...\")";
        return NULL;
    }
    while (*p == '/') {
        const char *start = ++p;
        size_t n = strcspn(start, "/");
        p = start + n;
        if (!token_decode(start, n, &tok)) {
            *why = "bad escape in the JSON pointer";
            v = NULL;
            break;
        }
        if (json_is_object(v)) {
            v = json_object_get(v, kb_buf_cstr(&tok));
        } else if (json_is_array(v)) {
            char *end;
            long idx = strtol(kb_buf_cstr(&tok), &end, 10);
            v = (tok.len > 0 && *end == '\0' && idx >= 0)
                    ? json_array_get(v, (size_t)idx) : NULL;
        } else {
            v = NULL;
        }
        if (v == NULL) {
            *why = "does not resolve to anything in the document";
            break;
        }
    }
    kb_buf_free(&tok);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Compiling                                                                 */

typedef struct cctx {
    gw_schema_set *set;
    char          *err;
    size_t         errlen;
    int            level;            /* properties/items descended */
    int            nest;             /* compile recursion */
} cctx;

/* "pointer: reason" into the caller's err; returns KB_EINVAL. */
#define cfail(c, ...) gw__spec_fail((c)->err, (c)->errlen, __VA_ARGS__)

static void
ptr_index(char *out, const char *parent, size_t i)
{
    snprintf(out, PTR_MAX, "%.*s/%zu", PTR_MAX - 24, parent, i);
}

static int compile_at(cctx *c, const json_t *v, const char *ptr,
                      bool descend, const gw_schema **out);

static int
want_count(cctx *c, const json_t *v, const char *ptr, size_t *out)
{
    double d;

    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (size_t)json_integer_value(v);
        return 0;
    }
    d = json_is_real(v) ? json_real_value(v) : -1;
    if (d >= 0 && d == floor(d) && d < 1e15) {
        *out = (size_t)d;
        return 0;
    }
    return cfail(c, ptr, "must be a non-negative integer");
}

static int
want_number(cctx *c, const json_t *v, const char *ptr, double *out)
{
    if (!json_is_number(v))
        return cfail(c, ptr, "must be a number");
    *out = json_number_value(v);
    return 0;
}

static const struct {
    const char *name;
    unsigned    bit;
} type_names[] = {
    { "null", GW_T_NULL },       { "boolean", GW_T_BOOLEAN },
    { "object", GW_T_OBJECT },   { "array", GW_T_ARRAY },
    { "number", GW_T_NUMBER },   { "integer", GW_T_INTEGER },
    { "string", GW_T_STRING },
};

static int
type_bit(cctx *c, const json_t *v, const char *ptr, unsigned *bits)
{
    const char *name = json_string_value(v);

    if (name == NULL)
        return cfail(c, ptr, "must be a type name");
    if (strcmp(name, "file") == 0) {     /* Swagger 2.0 formData upload */
        *bits = ~0u;
        return 0;
    }
    for (size_t i = 0; i < NTYPES; i++)
        if (strcmp(name, type_names[i].name) == 0) {
            *bits |= type_names[i].bit;
            return 0;
        }
    return cfail(c, ptr, "unknown type \"%s\" (null, boolean, object, "
                         "array, number, integer, string)", name);
}

static int
kw_type(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    unsigned bits = 0;
    size_t i;
    const json_t *t;
    int rc;

    if (json_is_array(v)) {
        json_array_foreach(v, i, t) {
            char p[PTR_MAX];
            ptr_index(p, ptr, i);
            if ((rc = type_bit(c, t, p, &bits)) != 0)
                return rc;
        }
        if (i == 0)
            return cfail(c, ptr, "must not be empty");
    } else if ((rc = type_bit(c, v, ptr, &bits)) != 0) {
        return rc;
    }
    s->types = bits == ~0u ? 0 : bits;
    return 0;
}

static int
kw_bool_flag(cctx *c, gw_schema *s, const json_t *v, const char *ptr,
             unsigned flag)
{
    if (!json_is_boolean(v))
        return cfail(c, ptr, "must be true or false");
    if (json_is_true(v))
        s->flags |= flag;
    return 0;
}

static int
kw_nullable(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    return kw_bool_flag(c, s, v, ptr, F_NULLABLE);
}

static int
kw_read_only(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    return kw_bool_flag(c, s, v, ptr, F_READONLY);
}

static int
kw_unique(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    return kw_bool_flag(c, s, v, ptr, F_UNIQUE);
}

/* v as compact JSON, at most ~120 bytes, from the set's pool: messages
 * are made here so that requests never serialize the shared document. */
static const char *
value_text(cctx *c, const json_t *v)
{
    char *full = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *out;
    size_t n;

    if (full == NULL)
        return NULL;
    n = strlen(full);
    out = kb_pool_alloc(c->set->pool, n > 120 ? 124 : n + 1);
    if (out != NULL) {
        if (n > 120)
            snprintf(out, 124, "%.117s…", full);
        else
            memcpy(out, full, n + 1);
    }
    free(full);
    return out;
}

static int
kw_enum(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    if (!json_is_array(v))
        return cfail(c, ptr, "must be an array");
    s->enum_vals = v;
    s->enum_text = value_text(c, v);
    return s->enum_text != NULL ? 0 : KB_ENOMEM;
}

static int
kw_const(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    (void)ptr;
    s->const_val = v;
    s->const_text = value_text(c, v);
    s->flags |= F_CONST;
    return s->const_text != NULL ? 0 : KB_ENOMEM;
}

static int
kw_minimum(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    s->flags |= F_MIN;
    return want_number(c, v, ptr, &s->minimum);
}

static int
kw_maximum(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    s->flags |= F_MAX;
    return want_number(c, v, ptr, &s->maximum);
}

/* exclusiveMinimum: a boolean modifying minimum (2.0, 3.0) or a bound of
 * its own (3.1); both are accepted in every version. */
static int
kw_xmin(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    if (json_is_boolean(v)) {
        if (json_is_true(v))
            s->flags |= F_XMIN_B;
        return 0;
    }
    s->flags |= F_XMIN;
    return want_number(c, v, ptr, &s->xminimum);
}

static int
kw_xmax(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    if (json_is_boolean(v)) {
        if (json_is_true(v))
            s->flags |= F_XMAX_B;
        return 0;
    }
    s->flags |= F_XMAX;
    return want_number(c, v, ptr, &s->xmaximum);
}

static int
kw_multiple_of(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    int rc = want_number(c, v, ptr, &s->multiple_of);

    if (rc == 0 && !(s->multiple_of > 0))
        return cfail(c, ptr, "must be greater than 0");
    s->flags |= F_MULT;
    return rc;
}

#define KW_COUNT(fn, field)                                                  \
    static int fn(cctx *c, gw_schema *s, const json_t *v, const char *ptr)   \
    {                                                                        \
        return want_count(c, v, ptr, &s->field);                             \
    }
KW_COUNT(kw_min_length, min_len)
KW_COUNT(kw_max_length, max_len)
KW_COUNT(kw_min_items, min_items)
KW_COUNT(kw_max_items, max_items)
KW_COUNT(kw_min_props, min_props)
KW_COUNT(kw_max_props, max_props)

static int
kw_format(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    const char *name = json_string_value(v);

    if (name == NULL)
        return cfail(c, ptr, "must be a string");
    for (size_t i = 0; i < NFORMATS; i++)
        if (strcmp(name, formats[i].name) == 0) {
            s->format = formats[i].f;
            s->format_name = name;
        }
    return 0;                    /* other formats are annotations */
}

/* ECMA-262 class escapes, outside and inside brackets. */
static const struct {
    char        esc;
    const char *outside, *inside;
} class_escapes[] = {
    { 'd', "[0-9]", "0-9" },          { 'D', "[^0-9]", NULL },
    { 'w', "[A-Za-z0-9_]", "A-Za-z0-9_" }, { 'W', "[^A-Za-z0-9_]", NULL },
    { 's', "[[:space:]]", "[:space:]" },   { 'S', "[^[:space:]]", NULL },
};

/* \n \t … and \xHH / \uHHHH as a code point; -1 if not one of those. */
static long
char_escape(const char *p, size_t *used)
{
    static const char simple[] = "n\nt\tr\rf\fv\v";
    unsigned v;

    *used = 1;
    for (size_t i = 0; simple[i] != '\0'; i += 2)
        if (simple[i] == *p)
            return (unsigned char)simple[i + 1];
    if (*p == 'x' && sscanf(p + 1, "%2x", &v) == 1 &&
        strspn(p + 1, "0123456789abcdefABCDEF") >= 2) {
        *used = 3;
        return (long)v;
    }
    if (*p == 'u' && strspn(p + 1, "0123456789abcdefABCDEF") >= 4 &&
        sscanf(p + 1, "%4x", &v) == 1) {
        *used = 5;
        return (long)v;
    }
    return -1;
}

static int
append_cp(kb_buf *b, long cp)
{
    char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    }
    return kb_buf_append(b, u, n);
}

/*
 * Translate an ECMA-262 pattern into a POSIX ERE with the same meaning
 * for the common subset: \d \w \s (and negations) become classes,
 * escapes inside brackets become literal members, lazy quantifiers become
 * greedy (same match/no-match answer), (?: becomes (.  Refused, with a
 * reason: lookaround, backreferences, \b, Unicode property escapes.
 */
static const char *
pattern_translate(const char *p, kb_buf *out)
{
    static const char special[] = ".[]()*+?{}|^$\\";
    size_t used;
    long cp;

    while (*p != '\0') {
        if (*p == '\\') {
            p++;
            if (*p == '\0')
                return "ends with a lone backslash";
            for (size_t i = 0; i < 6; i++)
                if (class_escapes[i].esc == *p) {
                    kb_buf_appends(out, class_escapes[i].outside);
                    p++;
                    goto next;
                }
            if (*p == 'b' || *p == 'B')
                return "word boundaries (\\b, \\B) are not supported";
            if (*p == '0' || (*p >= '1' && *p <= '9'))
                return "\\0 and backreferences are not supported";
            if ((cp = char_escape(p, &used)) > 0) {
                if (cp < 0x80 && strchr(special, (int)cp) != NULL)
                    kb_buf_appendc(out, '\\');
                append_cp(out, cp);
                p += used;
                continue;
            }
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
                return "unsupported escape (\\p, \\k, \\c … are not "
                       "supported)";
            if (strchr(special, *p) != NULL)
                kb_buf_appendc(out, '\\');
            kb_buf_appendc(out, *p++);
            continue;
        }
        if (*p == '(' && p[1] == '?') {
            if (p[2] != ':')
                return "lookahead, lookbehind and named groups are not "
                       "supported";
            kb_buf_appendc(out, '(');
            p += 3;
            continue;
        }
        if ((*p == '*' || *p == '+' || *p == '?' || *p == '}') &&
            p[1] == '?') {
            kb_buf_appendc(out, *p);     /* lazy → greedy */
            p += 2;
            continue;
        }
        if (*p == '[') {
            kb_buf body = KB_BUF_INIT(GW_SCHEMA_MAX_PATTERN * 8);
            bool neg = false, rbracket = false, dash = false, caret = false;
            if (kb_buf_reserve(&body, strlen(p) * 6 + 16) != 0)
                return "out of memory";
            p++;
            if (*p == '^')
                neg = true, p++;
            while (*p != ']') {
                if (*p == '\0') {
                    kb_buf_free(&body);
                    return "unterminated [";
                }
                if (*p == '\\') {
                    const char *inside = NULL;
                    bool known = false;
                    p++;
                    for (size_t i = 0; i < 6; i++)
                        if (class_escapes[i].esc == *p)
                            inside = class_escapes[i].inside, known = true;
                    if (known && inside == NULL) {
                        kb_buf_free(&body);
                        return "negated classes (\\D, \\W, \\S) inside "
                               "[...] are not supported";
                    }
                    if (inside != NULL) {
                        kb_buf_appends(&body, inside);
                        p++;
                    } else if (*p == '0') {
                        kb_buf_free(&body);
                        return "\\0 is not supported";
                    } else if ((cp = char_escape(p, &used)) > 0) {
                        if (cp == ']')
                            rbracket = true;
                        else if (cp == '-')
                            dash = true;
                        else if (cp == '^')
                            caret = true;
                        else
                            append_cp(&body, cp);
                        p += used;
                    } else if (*p == ']' || *p == '-' || *p == '^') {
                        rbracket |= *p == ']';
                        dash |= *p == '-';
                        caret |= *p == '^';
                        p++;
                    } else if (*p == '\0' || (*p >= 'a' && *p <= 'z') ||
                               (*p >= 'A' && *p <= 'Z')) {
                        kb_buf_free(&body);
                        return "unsupported escape inside [...]";
                    } else {
                        kb_buf_appendc(&body, *p++);
                    }
                    continue;
                }
                kb_buf_appendc(&body, *p++);
            }
            p++;
            if (body.len == 0 && !rbracket && !dash && caret && !neg) {
                kb_buf_appends(out, "\\^");
            } else {
                kb_buf_appendc(out, '[');
                if (neg)
                    kb_buf_appendc(out, '^');
                if (rbracket)
                    kb_buf_appendc(out, ']');
                kb_buf_appends(out, kb_buf_cstr(&body));
                if (caret)
                    kb_buf_appendc(out, '^');
                if (dash)
                    kb_buf_appendc(out, '-');
                kb_buf_appendc(out, ']');
            }
            kb_buf_free(&body);
            continue;
        }
        kb_buf_appendc(out, *p++);
next:;
    }
    return NULL;
}

static void
regex_cleanup(void *re)
{
    regfree(re);
}

static int
kw_pattern(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    kb_buf ere = KB_BUF_INIT(GW_SCHEMA_MAX_PATTERN * 8);
    const char *src = json_string_value(v), *why;
    regex_t *re;
    int rc;

    if (src == NULL)
        return cfail(c, ptr, "must be a string (a regular expression)");
    if (strlen(src) > GW_SCHEMA_MAX_PATTERN)
        return cfail(c, ptr, "longer than %d bytes", GW_SCHEMA_MAX_PATTERN);
    /* reserved up front (\s, the longest, grows 2 bytes to 11), so the
     * translation's appends cannot fail */
    re = kb_pool_calloc(c->set->pool, sizeof(*re));
    if (re == NULL || kb_buf_reserve(&ere, strlen(src) * 6 + 16) != 0) {
        kb_buf_free(&ere);
        return KB_ENOMEM;
    }
    if ((why = pattern_translate(src, &ere)) != NULL) {
        kb_buf_free(&ere);
        return cfail(c, ptr, "unsupported regular expression: %s", why);
    }
    rc = regcomp(re, kb_buf_cstr(&ere), REG_EXTENDED | REG_NOSUB);
    kb_buf_free(&ere);
    if (rc != 0) {
        char msg[128];
        regerror(rc, re, msg, sizeof(msg));
        return cfail(c, ptr, "bad regular expression: %s", msg);
    }
    if (kb_pool_cleanup_add(c->set->pool, regex_cleanup, re) != 0) {
        regfree(re);
        return KB_ENOMEM;
    }
    s->pattern = re;
    s->pattern_src = src;
    return 0;
}

static int
kw_items(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    if (json_is_array(v))
        return cfail(c, ptr, "tuple validation (items as an array) is not "
                             "supported");
    return compile_at(c, v, ptr, true, &s->items);
}

static int
cmp_prop(const void *a, const void *b)
{
    return strcmp(((const prop *)a)->name, ((const prop *)b)->name);
}

static int
kw_properties(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    const char *key;
    const json_t *sub;
    int rc;

    if (!json_is_object(v))
        return cfail(c, ptr, "must be an object of schemas");
    s->props = kb_pool_calloc(c->set->pool,
                              (json_object_size(v) + 1) * sizeof(prop));
    if (s->props == NULL)
        return KB_ENOMEM;
    json_object_foreach((json_t *)v, key, sub) {
        char p[PTR_MAX];
        gw__pointer_join(p, sizeof(p), ptr, key);
        s->props[s->nprops].name = key;
        if ((rc = compile_at(c, sub, p, true,
                             &s->props[s->nprops].schema)) != 0)
            return rc;
        s->nprops++;
    }
    qsort(s->props, s->nprops, sizeof(prop), cmp_prop);
    return 0;
}

static int
kw_required(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    size_t i;
    const json_t *name;

    if (json_is_boolean(v))      /* a 2.0 parameter's own flag */
        return 0;
    if (!json_is_array(v))
        return cfail(c, ptr, "must be an array of property names");
    s->required = kb_pool_calloc(c->set->pool,
                                 (json_array_size(v) + 1) * sizeof(char *));
    if (s->required == NULL)
        return KB_ENOMEM;
    json_array_foreach(v, i, name) {
        char p[PTR_MAX];
        ptr_index(p, ptr, i);
        if (!json_is_string(name))
            return cfail(c, p, "must be a property name (a string)");
        s->required[s->nrequired++] = json_string_value(name);
    }
    return 0;
}

static int
kw_additional(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    if (json_is_false(v)) {
        s->flags |= F_NO_ADDL;
        return 0;
    }
    if (json_is_true(v))
        return 0;
    return compile_at(c, v, ptr, true, &s->addl);
}

/* allOf / anyOf / oneOf: a non-empty array of schemas, same level. */
static int
schema_list(cctx *c, const json_t *v, const char *ptr,
            const gw_schema ***list, size_t *n)
{
    size_t i;
    const json_t *sub;
    int rc;

    if (!json_is_array(v) || json_array_size(v) == 0)
        return cfail(c, ptr, "must be a non-empty array of schemas");
    *list = kb_pool_calloc(c->set->pool,
                           json_array_size(v) * sizeof(gw_schema *));
    if (*list == NULL)
        return KB_ENOMEM;
    json_array_foreach(v, i, sub) {
        char p[PTR_MAX];
        ptr_index(p, ptr, i);
        if ((rc = compile_at(c, sub, p, false, &(*list)[i])) != 0)
            return rc;
        *n = i + 1;
    }
    return 0;
}

static int
kw_all_of(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    return schema_list(c, v, ptr, &s->all_of, &s->nall);
}

static int
kw_any_of(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    return schema_list(c, v, ptr, &s->any_of, &s->nany);
}

static int
kw_one_of(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    return schema_list(c, v, ptr, &s->one_of, &s->none);
}

static int
kw_not(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    return compile_at(c, v, ptr, false, &s->not_);
}

/* 3.1: $ref next to other keywords applies in addition to them (2.0 and
 * 3.0 ignore the siblings: follow_refs() never gets here). */
static int
kw_ref_sibling(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    const gw_schema **grown;
    const json_t *target;
    const char *why;

    if (!json_is_string(v))
        return cfail(c, ptr, "must be a string");
    target = gw__schema_ref_resolve(c->set, json_string_value(v), &why);
    if (target == NULL)
        return cfail(c, ptr, "\"%s\" %s", json_string_value(v), why);
    grown = kb_pool_calloc(c->set->pool, (s->nall + 1) * sizeof(*grown));
    if (grown == NULL)
        return KB_ENOMEM;
    if (s->nall > 0)
        memcpy(grown, s->all_of, s->nall * sizeof(*grown));
    s->all_of = grown;
    s->nall++;
    return compile_at(c, target, json_string_value(v) + 1, false,
                      &grown[s->nall - 1]);
}

static int
kw_refuse(cctx *c, gw_schema *s, const json_t *v, const char *ptr)
{
    (void)s, (void)v;
    return cfail(c, ptr, "keyword not supported by the request validator "
                         "(turn x-kiban-validate off for this operation, or "
                         "drop the keyword)");
}

typedef int (*kw_fn)(cctx *c, gw_schema *s, const json_t *v,
                     const char *ptr);

/* Every keyword the compiler acts on; all others are annotations. */
static const struct {
    const char *name;
    kw_fn       fn;
} keywords[] = {
    { "type", kw_type },                 { "nullable", kw_nullable },
    { "x-nullable", kw_nullable },       { "readOnly", kw_read_only },
    { "enum", kw_enum },                 { "const", kw_const },
    { "minimum", kw_minimum },           { "maximum", kw_maximum },
    { "exclusiveMinimum", kw_xmin },     { "exclusiveMaximum", kw_xmax },
    { "multipleOf", kw_multiple_of },
    { "minLength", kw_min_length },      { "maxLength", kw_max_length },
    { "pattern", kw_pattern },           { "format", kw_format },
    { "items", kw_items },               { "minItems", kw_min_items },
    { "maxItems", kw_max_items },        { "uniqueItems", kw_unique },
    { "properties", kw_properties },     { "required", kw_required },
    { "additionalProperties", kw_additional },
    { "minProperties", kw_min_props },   { "maxProperties", kw_max_props },
    { "allOf", kw_all_of },              { "anyOf", kw_any_of },
    { "oneOf", kw_one_of },              { "not", kw_not },
    { "$ref", kw_ref_sibling },
    { "patternProperties", kw_refuse },  { "dependencies", kw_refuse },
    { "dependentRequired", kw_refuse },  { "dependentSchemas", kw_refuse },
    { "if", kw_refuse },                 { "then", kw_refuse },
    { "else", kw_refuse },               { "prefixItems", kw_refuse },
    { "contains", kw_refuse },           { "propertyNames", kw_refuse },
    { "unevaluatedProperties", kw_refuse },
    { "unevaluatedItems", kw_refuse },   { "$dynamicRef", kw_refuse },
    { "$recursiveRef", kw_refuse },
};
#define NKEYWORDS (sizeof(keywords) / sizeof(keywords[0]))

/* Follow $ref from v (a chain of pure references) to the schema itself. */
static int
follow_refs(cctx *c, const json_t **v, char *ptr)
{
    for (int hops = 0;; hops++) {
        const json_t *ref = json_object_get(*v, "$ref");
        const json_t *target;
        const char *why;
        char p[PTR_MAX];

        if (ref == NULL)
            return 0;
        /* 3.1: siblings of $ref count; kw_ref_sibling handles them */
        if (c->set->dialect == GW_DIALECT_OAS31 && json_object_size(*v) > 1)
            return 0;
        gw__pointer_join(p, sizeof(p), ptr, "$ref");
        if (!json_is_string(ref))
            return cfail(c, p, "must be a string");
        if (hops == GW_SCHEMA_MAX_REFS)
            return cfail(c, p, "more than %d $ref hops (a reference "
                               "cycle?)", GW_SCHEMA_MAX_REFS);
        target = gw__schema_ref_resolve(c->set, json_string_value(ref), &why);
        if (target == NULL)
            return cfail(c, p, "\"%s\" %s", json_string_value(ref), why);
        snprintf(ptr, PTR_MAX, "%s", json_string_value(ref) + 1);
        *v = target;
    }
}

/*
 * Compile v (at ptr).  descend: v applies to a property or item of the
 * value its parent applies to (one level deeper), else to the same value.
 */
static int
compile_at(cctx *c, const json_t *v, const char *ptr, bool descend,
           const gw_schema **out)
{
    char here[PTR_MAX];
    gw_schema *s;
    const char *key;
    const json_t *kv;
    int rc;

    snprintf(here, sizeof(here), "%s", ptr);
    if (json_is_object(v) && (rc = follow_refs(c, &v, here)) != 0)
        return rc;
    if (!json_is_object(v) && !json_is_boolean(v))
        return cfail(c, here, "must be a schema (an object)");
    if ((s = memo_get(c->set, v)) != NULL) {
        if (s->state == 0 && s->level == c->level + (descend ? 1 : 0))
            return cfail(c, ptr, "schema refers to itself without "
                                  "descending into a property or item "
                                  "(infinite recursion)");
        *out = s;
        return 0;
    }
    if (c->nest >= GW_SCHEMA_MAX_NEST)
        return cfail(c, here, "schemas nested more than %d deep",
                     GW_SCHEMA_MAX_NEST);
    s = kb_pool_calloc(c->set->pool, sizeof(*s));
    if (s == NULL)
        return KB_ENOMEM;
    s->src = v;
    s->max_len = s->max_items = s->max_props = SIZE_MAX;
    if ((rc = memo_put(c->set, v, s)) != 0)
        return rc == KB_ETOOBIG
                   ? cfail(c, here, "more than %d schemas in one spec",
                           GW_SCHEMA_MAX_NODES)
                   : rc;
    if (json_is_false(v))
        s->flags |= F_NEVER;
    c->level += descend ? 1 : 0;
    c->nest++;
    s->level = c->level;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, kv) {
            char p[PTR_MAX];
            size_t i;
            for (i = 0; i < NKEYWORDS; i++)
                if (strcmp(key, keywords[i].name) == 0)
                    break;
            if (i == NKEYWORDS)
                continue;
            gw__pointer_join(p, sizeof(p), here, key);
            if ((rc = keywords[i].fn(c, s, kv, p)) != 0)
                goto out_level;
        }
    }
    if (s->flags & F_XMIN_B) {       /* 2.0/3.0 boolean form */
        s->flags = (s->flags & ~(unsigned)F_MIN) |
                   ((s->flags & F_MIN) ? F_XMIN : 0);
        s->xminimum = s->minimum;
    }
    if (s->flags & F_XMAX_B) {
        s->flags = (s->flags & ~(unsigned)F_MAX) |
                   ((s->flags & F_MAX) ? F_XMAX : 0);
        s->xmaximum = s->maximum;
    }
    if ((s->flags & F_NULLABLE) && s->types != 0)
        s->types |= GW_T_NULL;
    s->state = 1;
    *out = s;
out_level:
    c->level -= descend ? 1 : 0;
    c->nest--;
    return rc;
}

int
gw__schema_compile(gw_schema_set *set, const json_t *v, const char *ptr,
                   const gw_schema **out, char *err, size_t errlen)
{
    cctx c = { set, err, errlen, 0, 0 };

    *out = NULL;
    return compile_at(&c, v, ptr, false, out);
}

unsigned
gw__schema_types(const gw_schema *s)
{
    unsigned t = s->types;

    for (size_t i = 0; t == 0 && i < s->nall; i++)
        t = s->all_of[i]->types;
    return t;
}

const gw_schema *
gw__schema_items(const gw_schema *s)
{
    const gw_schema *items = s->items;

    for (size_t i = 0; items == NULL && i < s->nall; i++)
        items = s->all_of[i]->items;
    return items;
}


