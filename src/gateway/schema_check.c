/*
 * schema_check.c - checks a JSON value against a compiled schema
 * (schema.h; schema.c compiles).  The first failure wins and names the
 * path into the value; recursion is bounded by the value's depth (at most
 * GW_SCHEMA_MAX_DEPTH) and the total work by a step budget, so a hostile
 * body costs a bounded amount of CPU.  Read-only: any thread.
 */
#include "gateway/schema_int.h"
#include "core/buf.h"
#include "core/err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAMES  512              /* nested checks, combinators too */

/* ------------------------------------------------------------------------ */
/* Formats                                                                   */

static bool
digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static int
num2(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* RFC 3339 full-date: YYYY-MM-DD with a real day of that month. */
static bool
is_date(const char *s, size_t n)
{
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30,
                                 31 };
    int y, m, d;

    if (n != 10 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) ||
        s[7] != '-' || !digits(s + 8, 2))
        return false;
    y = num2(s) * 100 + num2(s + 2);
    m = num2(s + 5);
    d = num2(s + 8);
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return false;
    if (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return false;
    return true;
}

/* RFC 3339 full-time: HH:MM:SS[.frac](Z|±HH:MM). */
static bool
is_time(const char *s, size_t n)
{
    size_t i = 8;

    if (n < 9 || !digits(s, 2) || s[2] != ':' || !digits(s + 3, 2) ||
        s[5] != ':' || !digits(s + 6, 2) || num2(s) > 23 ||
        num2(s + 3) > 59 || num2(s + 6) > 60)
        return false;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z'))
        return true;
    return i + 6 == n && (s[i] == '+' || s[i] == '-') &&
           digits(s + i + 1, 2) && s[i + 3] == ':' && digits(s + i + 4, 2) &&
           num2(s + i + 1) <= 23 && num2(s + i + 4) <= 59;
}

static bool
is_date_time(const char *s, size_t n)
{
    return n > 11 && is_date(s, 10) && (s[10] == 'T' || s[10] == 't' ||
                                        s[10] == ' ') &&
           is_time(s + 11, n - 11);
}

static bool
is_hostname(const char *s, size_t n)
{
    size_t label = 0;

    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum(ch) && !(ch == '-' && label > 0))
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[n - 1] != '-';
}

/* A practical address check: local@domain, printable local part without
 * spaces, a domain that is a host name with at least one dot. */
static bool
is_email(const char *s, size_t n)
{
    const char *at = memchr(s, '@', n);
    size_t local;

    if (at == NULL || memchr(at + 1, '@', n - (size_t)(at - s) - 1) != NULL)
        return false;
    local = (size_t)(at - s);
    if (local == 0 || local > 64)
        return false;
    for (size_t i = 0; i < local; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f || s[i] == '(' ||
            s[i] == ')' || s[i] == ',' || s[i] == ':' || s[i] == ';' ||
            s[i] == '<' || s[i] == '>' || s[i] == '[' || s[i] == ']' ||
            s[i] == '\\' || s[i] == '"')
            return false;
    return memchr(at + 1, '.', n - local - 1) != NULL &&
           is_hostname(at + 1, n - local - 1);
}

static bool
is_uuid(const char *s, size_t n)
{
    if (n != 36)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

static bool
is_ip(const char *s, size_t n, int af)
{
    char buf[64];
    unsigned char addr[16];

    if (n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(af, buf, addr) == 1;
}

/* RFC 3986 absolute URI, shallowly: scheme ":" then no spaces or
 * controls. */
static bool
is_uri(const char *s, size_t n)
{
    size_t i = 0;

    if (n == 0 || !isalpha((unsigned char)s[0]))
        return false;
    while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '+' ||
                     s[i] == '-' || s[i] == '.'))
        i++;
    if (i == n || s[i] != ':')
        return false;
    for (; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f || s[i] == '"' ||
            s[i] == '<' || s[i] == '>' || s[i] == '\\' || s[i] == '^' ||
            s[i] == '`' || s[i] == '{' || s[i] == '|' || s[i] == '}')
            return false;
    return true;
}

static bool
is_base64(const char *s, size_t n)
{
    size_t pad = 0;

    if (n % 4 != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            pad++;
            continue;
        }
        if (pad > 0 || !(isalnum((unsigned char)s[i]) || s[i] == '+' ||
                         s[i] == '/'))
            return false;
    }
    return pad <= 2;
}

/* Does a string satisfy format f?  (Numeric formats do not apply.) */
static bool
string_format_ok(gw_fmt f, const char *s, size_t n)
{
    switch (f) {
    case FMT_DATE_TIME: return is_date_time(s, n);
    case FMT_DATE:      return is_date(s, n);
    case FMT_TIME:      return is_time(s, n);
    case FMT_EMAIL:     return is_email(s, n);
    case FMT_UUID:      return is_uuid(s, n);
    case FMT_IPV4:      return is_ip(s, n, AF_INET);
    case FMT_IPV6:      return is_ip(s, n, AF_INET6);
    case FMT_URI:       return is_uri(s, n);
    case FMT_HOSTNAME:  return is_hostname(s, n);
    case FMT_BYTE:      return is_base64(s, n);
    default:            return true;
    }
}

/* ------------------------------------------------------------------------ */
/* Checking values                                                           */

typedef struct seg {
    const char *key;                 /* NULL: an array index */
    size_t      index;
} seg;

typedef struct vctx {
    char       *err;
    size_t      errlen;
    const char *where;
    seg         path[GW_SCHEMA_MAX_DEPTH + 1];
    size_t      depth;
    size_t      steps;
    size_t      frames;
    unsigned    quiet;               /* > 0 inside anyOf/oneOf/not tries */
    int         rc;                  /* KB_ETOOBIG once over a limit */
} vctx;

static void
path_print(const vctx *vc, kb_buf *b)
{
    kb_buf_appends(b, vc->where);
    for (size_t i = 0; i < vc->depth; i++) {
        const char *k = vc->path[i].key;
        bool ident = k != NULL && (isalpha((unsigned char)k[0]) ||
                                   k[0] == '_' || k[0] == '$');
        for (const char *q = k; ident && *q != '\0'; q++)
            ident = isalnum((unsigned char)*q) || *q == '_' || *q == '$' ||
                    *q == '-';
        if (k == NULL)
            kb_buf_appendf(b, "[%zu]", vc->path[i].index);
        else if (ident)
            kb_buf_appendf(b, ".%.64s", k);
        else
            kb_buf_appendf(b, "[\"%.64s\"]", k);
    }
}

static bool
vfail(vctx *vc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record a failure (unless quiet) and return false. */
static bool
vfail(vctx *vc, const char *fmt, ...)
{
    kb_buf b = KB_BUF_INIT(4096);
    va_list ap;

    if (vc->quiet > 0 || vc->err == NULL || vc->errlen == 0)
        return false;
    path_print(vc, &b);
    kb_buf_appends(&b, ": ");
    va_start(ap, fmt);
    kb_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    snprintf(vc->err, vc->errlen, "%s", kb_buf_cstr(&b));
    kb_buf_free(&b);
    return false;
}

/* Over a limit: the message is written even when quiet, and every check
 * after this fails at once. */
static bool
vexhausted(vctx *vc, const char *why)
{
    unsigned quiet = vc->quiet;

    if (vc->rc == 0) {
        vc->quiet = 0;
        vfail(vc, "%s", why);
        vc->quiet = quiet;
        vc->rc = KB_ETOOBIG;
    }
    return false;
}

static bool
spend(vctx *vc, size_t n)
{
    vc->steps += n;
    if (vc->rc != 0)
        return false;
    if (vc->steps > GW_SCHEMA_MAX_BUDGET)
        return vexhausted(vc, "too complex to validate");
    return true;
}

static unsigned
type_of(const json_t *v)
{
    double d;

    switch (json_typeof(v)) {
    case JSON_OBJECT:  return GW_T_OBJECT;
    case JSON_ARRAY:   return GW_T_ARRAY;
    case JSON_STRING:  return GW_T_STRING;
    case JSON_INTEGER: return GW_T_NUMBER | GW_T_INTEGER;
    case JSON_REAL:
        d = json_real_value(v);
        return GW_T_NUMBER | (d == floor(d) ? GW_T_INTEGER : 0);
    case JSON_TRUE:
    case JSON_FALSE:   return GW_T_BOOLEAN;
    default:           return GW_T_NULL;
    }
}

/* "a string", "an integer or null" */
static void
types_print(unsigned bits, kb_buf *b)
{
    static const struct {
        unsigned    bit;
        const char *name;
    } names[] = {
        { GW_T_BOOLEAN, "a boolean" }, { GW_T_OBJECT, "an object" },
        { GW_T_ARRAY, "an array" },    { GW_T_NUMBER, "a number" },
        { GW_T_INTEGER, "an integer" }, { GW_T_STRING, "a string" },
        { GW_T_NULL, "null" },
    };
    size_t n = 0, total = 0;

    if ((bits & GW_T_NUMBER) && (bits & GW_T_INTEGER))
        bits &= ~(unsigned)GW_T_INTEGER;
    for (size_t i = 0; i < NTYPES; i++)
        total += (bits & names[i].bit) != 0;
    for (size_t i = 0; i < NTYPES; i++) {
        if (!(bits & names[i].bit))
            continue;
        if (n > 0)
            kb_buf_appends(b, n + 1 == total ? " or " : ", ");
        kb_buf_appends(b, names[i].name);
        n++;
    }
}

/* JSON equality as JSON Schema means it: 1 equals 1.0.  Both values were
 * depth-checked, so the recursion is bounded. */
static bool
json_same(const json_t *a, const json_t *b)
{
    const char *key;
    const json_t *va;
    size_t i;

    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b),
                      json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        json_array_foreach(a, i, va)
            if (!json_same(va, json_array_get(b, i)))
                return false;
        return true;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return false;
        json_object_foreach((json_t *)a, key, va) {
            const json_t *vb = json_object_get(b, key);
            if (vb == NULL || !json_same(va, vb))
                return false;
        }
        return true;
    default:
        return true;             /* true, false, null */
    }
}

/* Is v nested at most `left` levels deep? */
static bool
depth_ok(const json_t *v, size_t left)
{
    const char *key;
    const json_t *sub;
    size_t i;

    if (json_is_array(v)) {
        if (left == 0 && json_array_size(v) > 0)
            return false;
        json_array_foreach(v, i, sub)
            if (!depth_ok(sub, left - 1))
                return false;
    } else if (json_is_object(v)) {
        if (left == 0 && json_object_size(v) > 0)
            return false;
        json_object_foreach((json_t *)v, key, sub)
            if (!depth_ok(sub, left - 1))
                return false;
    }
    return true;
}

static bool check(vctx *vc, const gw_schema *s, const json_t *v);

static bool
check_number(vctx *vc, const gw_schema *s, const json_t *v)
{
    double x = json_number_value(v);

    if ((s->flags & F_MIN) && x < s->minimum)
        return vfail(vc, "must be >= %.15g", s->minimum);
    if ((s->flags & F_XMIN) && x <= s->xminimum)
        return vfail(vc, "must be > %.15g", s->xminimum);
    if ((s->flags & F_MAX) && x > s->maximum)
        return vfail(vc, "must be <= %.15g", s->maximum);
    if ((s->flags & F_XMAX) && x >= s->xmaximum)
        return vfail(vc, "must be < %.15g", s->xmaximum);
    if (s->flags & F_MULT) {
        double q = x / s->multiple_of;
        if (!isfinite(q) || fabs(q - nearbyint(q)) > 1e-9 * fmax(1.0, fabs(q)))
            return vfail(vc, "must be a multiple of %.15g", s->multiple_of);
    }
    if (s->format == FMT_INT32 && (x < -2147483648.0 || x > 2147483647.0))
        return vfail(vc, "must fit in 32 bits (format int32)");
    if (s->format == FMT_INT64 && !json_is_integer(v) &&
        (x < -9223372036854775808.0 || x >= 9223372036854775808.0))
        return vfail(vc, "must fit in 64 bits (format int64)");
    return true;
}

static bool
check_string(vctx *vc, const gw_schema *s, const json_t *v)
{
    const char *str = json_string_value(v);
    size_t n = json_string_length(v), cps = 0;

    for (size_t i = 0; i < n; i++)   /* code points: non-continuation */
        cps += ((unsigned char)str[i] & 0xC0) != 0x80;
    if (cps < s->min_len)
        return vfail(vc, "must be at least %zu characters long", s->min_len);
    if (cps > s->max_len)
        return vfail(vc, "must be at most %zu characters long", s->max_len);
    if (s->pattern != NULL) {
        if (!spend(vc, n / 64))
            return false;
        if (strlen(str) != n ||      /* an embedded NUL */
            regexec(s->pattern, str, 0, NULL, 0) != 0)
            return vfail(vc, "must match the pattern %.200s", s->pattern_src);
    }
    if (s->format != FMT_NONE && !string_format_ok(s->format, str, n))
        return vfail(vc, "must be a valid %s", s->format_name);
    return true;
}

static bool
check_array(vctx *vc, const gw_schema *s, const json_t *v)
{
    size_t n = json_array_size(v), i;
    const json_t *item;

    if (n < s->min_items)
        return vfail(vc, "must have at least %zu items", s->min_items);
    if (n > s->max_items)
        return vfail(vc, "must have at most %zu items", s->max_items);
    if (s->flags & F_UNIQUE) {
        for (i = 1; i < n; i++) {
            if (!spend(vc, i))
                return false;
            for (size_t j = 0; j < i; j++)
                if (json_same(json_array_get(v, j), json_array_get(v, i)))
                    return vfail(vc, "items must be unique (items %zu and "
                                     "%zu are equal)", j, i);
        }
    }
    if (s->items == NULL)
        return true;
    if (vc->depth == GW_SCHEMA_MAX_DEPTH)
        return vexhausted(vc, "nested too deeply");
    json_array_foreach(v, i, item) {
        bool ok;
        vc->path[vc->depth].key = NULL;
        vc->path[vc->depth].index = i;
        vc->depth++;
        ok = check(vc, s->items, item);
        vc->depth--;
        if (!ok)
            return false;
    }
    return true;
}

static const prop *
prop_find(const gw_schema *s, const char *name)
{
    size_t lo = 0, hi = s->nprops;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->props[mid].name);
        if (c == 0)
            return &s->props[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Descend into member `key` of the current value and check it. */
static bool
check_member(vctx *vc, const char *key, const gw_schema *s, const json_t *v)
{
    bool ok;

    if (vc->depth == GW_SCHEMA_MAX_DEPTH)
        return vexhausted(vc, "nested too deeply");
    vc->path[vc->depth].key = key;
    vc->depth++;
    ok = s != NULL ? check(vc, s, v) : vfail(vc, "%s", "required");
    vc->depth--;
    return ok;
}

static bool
check_object(vctx *vc, const gw_schema *s, const json_t *v)
{
    size_t n = json_object_size(v);
    const char *key;
    const json_t *member;

    if (n < s->min_props)
        return vfail(vc, "must have at least %zu properties", s->min_props);
    if (n > s->max_props)
        return vfail(vc, "must have at most %zu properties", s->max_props);
    for (size_t i = 0; i < s->nrequired; i++) {
        const prop *p = prop_find(s, s->required[i]);
        if (json_object_get(v, s->required[i]) != NULL)
            continue;
        /* read-only properties are required in responses only */
        if (p != NULL && (p->schema->flags & F_READONLY))
            continue;
        return check_member(vc, s->required[i], NULL, NULL);
    }
    if (s->nprops == 0 && s->addl == NULL && !(s->flags & F_NO_ADDL))
        return true;
    json_object_foreach((json_t *)v, key, member) {
        const prop *p = prop_find(s, key);
        const gw_schema *sub = p != NULL ? p->schema : s->addl;
        if (p != NULL && (p->schema->flags & F_READONLY)) {
            vc->path[vc->depth].key = key;   /* depth < max: see below */
            if (vc->depth == GW_SCHEMA_MAX_DEPTH)
                return vexhausted(vc, "nested too deeply");
            vc->depth++;
            vfail(vc, "is read-only");
            vc->depth--;
            return false;
        }
        if (p == NULL && (s->flags & F_NO_ADDL)) {
            if (vc->depth == GW_SCHEMA_MAX_DEPTH)
                return vexhausted(vc, "nested too deeply");
            vc->path[vc->depth].key = key;
            vc->depth++;
            vfail(vc, "unknown property (additionalProperties is false)");
            vc->depth--;
            return false;
        }
        if (sub != NULL && !check_member(vc, key, sub, member))
            return false;
    }
    return true;
}

/* Try s quietly: does v conform? */
static bool
try_check(vctx *vc, const gw_schema *s, const json_t *v)
{
    bool ok;

    vc->quiet++;
    ok = check(vc, s, v);
    vc->quiet--;
    return ok;
}

/* No branch of anyOf/oneOf matched: when exactly one branch accepts the
 * value's type, its own complaint is the useful one. */
static bool
branches_fail(vctx *vc, const gw_schema *const *list, size_t n,
              const json_t *v, const char *which)
{
    const gw_schema *only = NULL;
    size_t fits = 0;

    for (size_t i = 0; i < n; i++)
        if (list[i]->types == 0 || (list[i]->types & type_of(v))) {
            only = list[i];
            fits++;
        }
    if (fits == 1 && vc->quiet == 0 && vc->rc == 0)
        return check(vc, only, v) ? vfail(vc, "must match one of the %s "
                                              "schemas", which)
                                  : false;
    return vfail(vc, "must match one of the %s schemas", which);
}

static bool
check_combinators(vctx *vc, const gw_schema *s, const json_t *v)
{
    size_t matched = 0, first = 0;

    for (size_t i = 0; i < s->nall; i++)
        if (!check(vc, s->all_of[i], v))
            return false;
    if (s->nany > 0) {
        for (size_t i = 0; i < s->nany && matched == 0; i++)
            matched += try_check(vc, s->any_of[i], v);
        if (vc->rc != 0)
            return false;
        if (matched == 0)
            return branches_fail(vc, s->any_of, s->nany, v, "anyOf");
    }
    if (s->none > 0) {
        matched = 0;
        for (size_t i = 0; i < s->none; i++) {
            if (!try_check(vc, s->one_of[i], v))
                continue;
            if (matched++ == 0) {
                first = i;
                continue;
            }
            return vfail(vc, "must match exactly one of the oneOf schemas "
                             "(it matches %zu and %zu)", first, i);
        }
        if (vc->rc != 0)
            return false;
        if (matched == 0)
            return branches_fail(vc, s->one_of, s->none, v, "oneOf");
    }
    if (s->not_ != NULL && try_check(vc, s->not_, v))
        return vfail(vc, "must not match the \"not\" schema");
    return vc->rc == 0;
}

static bool
check(vctx *vc, const gw_schema *s, const json_t *v)
{
    unsigned t = type_of(v);
    bool ok = false;

    if (!spend(vc, 1))
        return false;
    if (vc->frames >= MAX_FRAMES)
        return vexhausted(vc, "schema recursion too deep");
    vc->frames++;
    if (s->flags & F_NEVER) {
        ok = vfail(vc, "no value is allowed here");
        goto out;
    }
    if (s->types != 0 && !(s->types & t)) {
        kb_buf b = KB_BUF_INIT(128);
        types_print(s->types, &b);
        ok = vfail(vc, "must be %s", kb_buf_cstr(&b));
        kb_buf_free(&b);
        goto out;
    }
    if (t == GW_T_NULL && (s->flags & F_NULLABLE)) {
        ok = true;
        goto out;
    }
    if (s->enum_vals != NULL) {
        size_t i;
        const json_t *e;
        bool found = false;
        if (!spend(vc, json_array_size(s->enum_vals)))
            goto out;
        json_array_foreach(s->enum_vals, i, e)
            if ((found = json_same(e, v)))
                break;
        if (!found) {
            ok = vfail(vc, "must be one of %s", s->enum_text);
            goto out;
        }
    }
    if ((s->flags & F_CONST) && !json_same(s->const_val, v)) {
        ok = vfail(vc, "must be %s", s->const_text);
        goto out;
    }
    if (t & GW_T_NUMBER)
        ok = check_number(vc, s, v);
    else if (t == GW_T_STRING)
        ok = check_string(vc, s, v);
    else if (t == GW_T_ARRAY)
        ok = check_array(vc, s, v);
    else if (t == GW_T_OBJECT)
        ok = check_object(vc, s, v);
    else
        ok = true;
    if (ok)
        ok = check_combinators(vc, s, v);
out:
    vc->frames--;
    return ok && vc->rc == 0;
}

int
gw__schema_validate(const gw_schema *s, const json_t *v, const char *where,
                    char *err, size_t errlen)
{
    vctx *vc = calloc(1, sizeof(*vc));
    int rc;

    if (vc == NULL)
        return KB_ENOMEM;
    vc->err = err;
    vc->errlen = errlen;
    vc->where = where;
    if (!depth_ok(v, GW_SCHEMA_MAX_DEPTH)) {
        snprintf(err, errlen, "%s: nested more than %d levels deep", where,
                 GW_SCHEMA_MAX_DEPTH);
        free(vc);
        return KB_ETOOBIG;
    }
    rc = check(vc, s, v) ? 0 : vc->rc != 0 ? vc->rc : KB_EINVAL;
    free(vc);
    return rc;
}
