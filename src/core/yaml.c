/*
 * yaml.c - YAML streams to jansson values with a line map; JSON to YAML.
 *
 * The parser walks libyaml's event stream with an explicit stack of open
 * containers (no recursion on input), types plain scalars by the YAML 1.2
 * core schema and records the line of every node under its dotted path.
 * The emitter drives libyaml's emitter and picks scalar styles so that the
 * text parses back to the same JSON value.  See yaml.h and docs/manifests.md.
 */
#include "core/yaml.h"
#include "core/err.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define YAML_MAX_INPUT      ((size_t)16 << 20)  /* bytes of one stream */
#define YAML_MAX_NODES      1000000             /* nodes, aliases expanded */
#define YAML_MAX_DEPTH      256                 /* nested containers */
#define YAML_MAX_PATH       4096                /* longer paths: no line */
#define YAML_MAX_PATHMEM    ((size_t)64 << 20)  /* bytes of recorded paths */
#define YAML_MAX_EMIT_DEPTH 1024

struct kb_yaml_doc {
    json_t *root;
    json_t *lines;          /* object: dotted path -> line (integer) */
    int     line;
};

/* ---- scalar typing (YAML 1.2 core schema) ---------------------------- */

typedef enum ytype {
    YT_STR,
    YT_NULL,
    YT_BOOL,
    YT_INT,
    YT_FLOAT,
    YT_NONFINITE            /* .inf, .nan: not representable in JSON */
} ytype;

static bool
is_one_of(const char *s, size_t n, const char *const *words)
{
    for (; *words != NULL; words++)
        if (strlen(*words) == n && memcmp(s, *words, n) == 0)
            return true;
    return false;
}

static const char *const null_words[] = { "~", "null", "Null", "NULL", NULL };
static const char *const true_words[] = { "true", "True", "TRUE", NULL };
static const char *const false_words[] = { "false", "False", "FALSE", NULL };
static const char *const nonfinite_words[] = {
    ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
    "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN", NULL
};

static bool
all_digits(const char *s, size_t n, int base)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = base == 8  ? (c >= '0' && c <= '7')
                : base == 16 ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
                                || (c >= 'A' && c <= 'F'))
                : (c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+ */
static bool
looks_int(const char *s, size_t n)
{
    if (n > 2 && s[0] == '0' && s[1] == 'o')
        return all_digits(s + 2, n - 2, 8);
    if (n > 2 && s[0] == '0' && s[1] == 'x')
        return all_digits(s + 2, n - 2, 16);
    if (n > 0 && (s[0] == '-' || s[0] == '+'))
        return all_digits(s + 1, n - 1, 10);
    return all_digits(s, n, 10);
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool
looks_float(const char *s, size_t n)
{
    size_t i = 0, d = 0, f = 0;

    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, d++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, f++;
        if (d == 0 && f == 0)
            return false;
    } else if (d == 0) {
        return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t e = 0;
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, e++;
        if (e == 0)
            return false;
    }
    return i == n;
}

static ytype
classify(const char *s, size_t n)
{
    if (n == 0 || is_one_of(s, n, null_words))
        return YT_NULL;
    if (is_one_of(s, n, true_words) || is_one_of(s, n, false_words))
        return YT_BOOL;
    if (looks_int(s, n))
        return YT_INT;
    if (looks_float(s, n))
        return YT_FLOAT;
    if (is_one_of(s, n, nonfinite_words))
        return YT_NONFINITE;
    return YT_STR;
}

/* Value of a scalar for which looks_int() holds.  KB_ETOOBIG past int64. */
static int
int_value(const char *s, size_t n, json_int_t *out)
{
    char buf[80];
    const char *digits = s;
    int base = 10;
    long long v;
    char *end;

    if (n >= sizeof(buf))
        return KB_ETOOBIG;   /* leading zeros aside, too many digits */
    if (n > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
        base = s[1] == 'o' ? 8 : 16;
        digits = s + 2;
        n -= 2;
    }
    memcpy(buf, digits, n);
    buf[n] = '\0';
    errno = 0;
    v = strtoll(buf, &end, base);
    if (errno == ERANGE || *end != '\0')
        return KB_ETOOBIG;
    *out = (json_int_t)v;
    return 0;
}

/* Value of a scalar for which looks_float() holds.  KB_ETOOBIG when it
 * overflows to infinity. */
static int
float_value(const char *s, size_t n, double *out)
{
    char *buf = malloc(n + 1), *end;
    double v;

    if (buf == NULL)
        return KB_ENOMEM;
    memcpy(buf, s, n);
    buf[n] = '\0';
    v = strtod(buf, &end);
    free(buf);
    if (!isfinite(v))
        return KB_ETOOBIG;
    *out = v;
    return 0;
}

/* ---- parser state ------------------------------------------------------ */

typedef struct yframe {
    json_t     *value;      /* object or array being filled (owned) */
    char       *anchor;     /* owned; registered when the container ends */
    size_t      path_len;   /* length of this container's own path */
    bool        path_ok;    /* false: path too long, lines not recorded */
    char       *key;        /* mappings: pending key (owned), NULL if next */
    yaml_mark_t key_mark;
    bool        key_merge;  /* the pending key is the merge key "<<" */
    json_t     *merged;     /* mappings: keys copied in by "<<", or NULL */
    size_t      nodes;      /* nodes in this subtree so far */
    int         height;     /* container levels in this subtree */
} yframe;

typedef struct yanchor {
    char   *name;
    json_t *value;
    size_t  nodes;
    int     height;
} yanchor;

typedef struct yparser {
    yaml_parser_t yp;
    yframe        stack[YAML_MAX_DEPTH];
    size_t        depth;
    kb_buf        path;
    yanchor      *anchors;
    size_t        nanchors, capanchors;
    size_t        nodes;
    size_t        pathmem;
    kb_yaml_doc  *doc;
    kb_yaml_doc **docs;
    size_t        ndocs, capdocs;
    char         *err;
    size_t        errlen;
} yparser;

static int
fail(yparser *p, yaml_mark_t m, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
fail(yparser *p, yaml_mark_t m, int rc, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (p->errlen == 0)
        return rc;
    n = snprintf(p->err, p->errlen, "%zu:%zu: ", m.line + 1, m.column + 1);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static void
doc_free(kb_yaml_doc *d)
{
    if (d == NULL)
        return;
    json_decref(d->root);
    json_decref(d->lines);
    free(d);
}

static void
anchors_clear(yparser *p)
{
    for (size_t i = 0; i < p->nanchors; i++) {
        free(p->anchors[i].name);
        json_decref(p->anchors[i].value);
    }
    p->nanchors = 0;
}

static void
frame_clear(yframe *f)
{
    json_decref(f->value);
    json_decref(f->merged);
    free(f->anchor);
    free(f->key);
    memset(f, 0, sizeof(*f));
}

static int
anchor_add(yparser *p, const char *name, json_t *v, size_t nodes, int height)
{
    for (size_t i = 0; i < p->nanchors; i++) {
        if (strcmp(p->anchors[i].name, name) == 0) {   /* redefinition */
            json_decref(p->anchors[i].value);
            p->anchors[i].value = json_incref(v);
            p->anchors[i].nodes = nodes;
            p->anchors[i].height = height;
            return 0;
        }
    }
    if (p->nanchors == p->capanchors) {
        size_t ncap = p->capanchors ? p->capanchors * 2 : 16;
        yanchor *na = realloc(p->anchors, ncap * sizeof(*na));
        if (na == NULL)
            return KB_ENOMEM;
        p->anchors = na;
        p->capanchors = ncap;
    }
    p->anchors[p->nanchors].name = strdup(name);
    if (p->anchors[p->nanchors].name == NULL)
        return KB_ENOMEM;
    p->anchors[p->nanchors].value = json_incref(v);
    p->anchors[p->nanchors].nodes = nodes;
    p->anchors[p->nanchors].height = height;
    p->nanchors++;
    return 0;
}

static const yanchor *
anchor_find(const yparser *p, const char *name)
{
    for (size_t i = 0; i < p->nanchors; i++)
        if (strcmp(p->anchors[i].name, name) == 0)
            return &p->anchors[i];
    return NULL;
}

static int
count_nodes(yparser *p, size_t n, yaml_mark_t m)
{
    if (n > YAML_MAX_NODES - p->nodes)
        return fail(p, m, KB_ETOOBIG,
                    "more than %d nodes (after expanding aliases)",
                    YAML_MAX_NODES);
    p->nodes += n;
    return 0;
}

static yframe *
top(yparser *p)
{
    return p->depth > 0 ? &p->stack[p->depth - 1] : NULL;
}

static void
path_truncate(kb_buf *b, size_t len)
{
    b->len = len;
    if (b->data != NULL)
        b->data[len] = '\0';
}

/*
 * A node begins at the current position: compute its path into p->path and
 * record its line.  Sets *path_ok for frames the node may open.
 */
static int
node_begin(yparser *p, yaml_mark_t m, bool *path_ok)
{
    yframe *parent = top(p);
    int line = (int)m.line + 1;
    int rc = 0;

    if (parent == NULL) {
        path_truncate(&p->path, 0);
        *path_ok = true;
    } else {
        path_truncate(&p->path, parent->path_len);
        *path_ok = parent->path_ok;
        if (*path_ok && json_is_object(parent->value)) {
            if (parent->key_merge)
                *path_ok = false;          /* merged keys get no lines */
            else if (p->path.len > 0)
                rc = kb_buf_appendf(&p->path, ".%s", parent->key);
            else
                rc = kb_buf_appends(&p->path, parent->key);
            line = (int)parent->key_mark.line + 1;
        } else if (*path_ok) {
            rc = kb_buf_appendf(&p->path, "[%zu]",
                                json_array_size(parent->value));
        }
        if (*path_ok && rc != 0) {
            path_truncate(&p->path, parent->path_len);
            *path_ok = false;
        }
    }
    if (*path_ok && p->pathmem + p->path.len + 1 <= YAML_MAX_PATHMEM) {
        if (json_object_set_new(p->doc->lines, kb_buf_cstr(&p->path),
                                json_integer(line)) != 0)
            return fail(p, m, KB_ENOMEM, "out of memory");
        p->pathmem += p->path.len + 1;
    }
    return 0;
}

/* Copy the keys of a "<<" source into the mapping f (keys already present
 * win).  Consumes src. */
static int
merge_into(yparser *p, yframe *f, json_t *src, yaml_mark_t m)
{
    size_t n = json_is_array(src) ? json_array_size(src) : 1;
    int rc = 0;

    if (f->merged == NULL && (f->merged = json_object()) == NULL) {
        json_decref(src);
        return fail(p, m, KB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *s = json_is_array(src) ? json_array_get(src, i) : src;
        const char *k;
        json_t *v;

        if (!json_is_object(s)) {
            rc = fail(p, m, KB_EPARSE,
                      "the merge key '<<' needs a mapping or a list of mappings");
            break;
        }
        json_object_foreach(s, k, v) {
            if (json_object_get(f->value, k) != NULL)
                continue;                    /* keys already set win */
            if (json_object_set(f->value, k, v) != 0
                || json_object_set_new(f->merged, k, json_true()) != 0) {
                rc = fail(p, m, KB_ENOMEM, "out of memory");
                break;
            }
        }
    }
    json_decref(src);
    return rc;
}

/*
 * Attach a finished node (consumed) to its parent or make it the document
 * root.  nodes/height describe its subtree; m is where it started.
 */
static int
node_attach(yparser *p, json_t *v, size_t nodes, int height, yaml_mark_t m)
{
    yframe *f = top(p);
    int rc = 0;

    if (f == NULL) {
        p->doc->root = v;
        return 0;
    }
    f->nodes += nodes;
    if (height + 1 > f->height)
        f->height = height + 1;
    if (json_is_array(f->value)) {
        if (json_array_append_new(f->value, v) != 0)
            return fail(p, m, KB_ENOMEM, "out of memory");
        return 0;
    }
    if (f->key_merge) {
        rc = merge_into(p, f, v, m);
    } else if (json_object_get(f->value, f->key) != NULL
               && json_object_get(f->merged, f->key) == NULL) {
        json_decref(v);
        rc = fail(p, f->key_mark, KB_EPARSE, "duplicate key \"%s\"", f->key);
    } else {
        json_object_del(f->merged, f->key);
        if (json_object_set_new(f->value, f->key, v) != 0)
            rc = fail(p, m, KB_ENOMEM, "out of memory");
    }
    free(f->key);
    f->key = NULL;
    f->key_merge = false;
    return rc;
}

/* JSON value of a scalar event (new reference in *out). */
static int
scalar_value(yparser *p, const yaml_event_t *ev, json_t **out)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    yaml_mark_t m = ev->start_mark;
    ytype t;
    int rc;

    *out = NULL;
    if (tag == NULL && ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        tag = YAML_STR_TAG;
    if (tag != NULL && strcmp(tag, "!") == 0)
        tag = YAML_STR_TAG;          /* the non-specific tag: a string */
    if (tag != NULL && (strcmp(tag, YAML_STR_TAG) == 0
                        || strcmp(tag, YAML_TIMESTAMP_TAG) == 0
                        || strcmp(tag, "tag:yaml.org,2002:binary") == 0))
        goto string;

    t = classify(s, n);
    if (tag != NULL) {
        bool ok = strcmp(tag, YAML_NULL_TAG) == 0 ? t == YT_NULL
                : strcmp(tag, YAML_BOOL_TAG) == 0 ? t == YT_BOOL
                : strcmp(tag, YAML_INT_TAG) == 0 ? t == YT_INT
                : strcmp(tag, YAML_FLOAT_TAG) == 0
                    ? (t == YT_INT || t == YT_FLOAT || t == YT_NONFINITE)
                : false;
        if (!ok && (strcmp(tag, YAML_NULL_TAG) == 0
                    || strcmp(tag, YAML_BOOL_TAG) == 0
                    || strcmp(tag, YAML_INT_TAG) == 0
                    || strcmp(tag, YAML_FLOAT_TAG) == 0))
            return fail(p, m, KB_EPARSE, "\"%.40s\" is not a valid %s", s,
                        tag + sizeof("tag:yaml.org,2002:") - 1);
        if (!ok)
            return fail(p, m, KB_EPARSE, "unsupported tag %.60s", tag);
        if (strcmp(tag, YAML_FLOAT_TAG) == 0 && t == YT_INT)
            t = YT_FLOAT;
    }

    switch (t) {
    case YT_NULL:
        *out = json_null();
        return 0;
    case YT_BOOL:
        *out = json_boolean(s[0] == 't' || s[0] == 'T');
        return 0;
    case YT_INT: {
        json_int_t i;
        if (int_value(s, n, &i) != 0)
            return fail(p, m, KB_EPARSE, "integer %.40s is out of range", s);
        *out = json_integer(i);
        break;
    }
    case YT_FLOAT: {
        double d;
        if (looks_int(s, n) && s[0] == '0' && n > 2 && (s[1] == 'x' || s[1] == 'o')) {
            json_int_t i;
            if (int_value(s, n, &i) != 0)
                return fail(p, m, KB_EPARSE, "number %.40s is out of range", s);
            d = (double)i;
        } else if ((rc = float_value(s, n, &d)) != 0) {
            return fail(p, m, rc == KB_ENOMEM ? rc : KB_EPARSE,
                        "number %.40s is out of range", s);
        }
        *out = json_real(d);
        break;
    }
    case YT_NONFINITE:
        return fail(p, m, KB_EPARSE,
                    "%.10s cannot be represented in JSON; quote it for a string",
                    s);
    case YT_STR:
        goto string;
    }
    if (*out == NULL)
        return fail(p, m, KB_ENOMEM, "out of memory");
    return 0;

string:
    *out = json_stringn(s, n);
    if (*out == NULL)
        return fail(p, m, KB_EPARSE, "string is not valid UTF-8");
    return 0;
}

/* ---- events -------------------------------------------------------------- */

static int
on_scalar(yparser *p, const yaml_event_t *ev)
{
    yframe *f = top(p);
    const char *anchor = (const char *)ev->data.scalar.anchor;
    json_t *v;
    bool path_ok;
    int rc;

    if (f != NULL && json_is_object(f->value) && f->key == NULL) {
        /* a key: its text, whatever it looks like ("200", "true") */
        const char *s = (const char *)ev->data.scalar.value;
        if (strlen(s) != ev->data.scalar.length)
            return fail(p, ev->start_mark, KB_EPARSE,
                        "mapping keys must not contain NUL");
        if ((f->key = strdup(s)) == NULL)
            return fail(p, ev->start_mark, KB_ENOMEM, "out of memory");
        f->key_mark = ev->start_mark;
        f->key_merge = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
                       && ev->data.scalar.tag == NULL && strcmp(s, "<<") == 0;
        if (anchor != NULL) {
            json_t *ks = json_string(s);
            if (ks == NULL)
                return fail(p, ev->start_mark, KB_EPARSE,
                            "key is not valid UTF-8");
            rc = anchor_add(p, anchor, ks, 1, 0);
            json_decref(ks);
            if (rc != 0)
                return fail(p, ev->start_mark, rc, "out of memory");
        }
        return count_nodes(p, 1, ev->start_mark);
    }
    if ((rc = count_nodes(p, 1, ev->start_mark)) != 0)
        return rc;
    if ((rc = node_begin(p, ev->start_mark, &path_ok)) != 0)
        return rc;
    if ((rc = scalar_value(p, ev, &v)) != 0)
        return rc;
    if (anchor != NULL && (rc = anchor_add(p, anchor, v, 1, 0)) != 0) {
        json_decref(v);
        return fail(p, ev->start_mark, rc, "out of memory");
    }
    return node_attach(p, v, 1, 0, ev->start_mark);
}

static int
on_alias(yparser *p, const yaml_event_t *ev)
{
    yframe *f = top(p);
    const char *name = (const char *)ev->data.alias.anchor;
    const yanchor *a;
    json_t *v;
    bool path_ok;
    int rc;

    if (f != NULL && json_is_object(f->value) && f->key == NULL)
        return fail(p, ev->start_mark, KB_EPARSE,
                    "an alias cannot be a mapping key");
    if ((a = anchor_find(p, name)) == NULL)
        return fail(p, ev->start_mark, KB_EPARSE,
                    "unknown anchor \"%.60s\"", name);
    if ((int)p->depth + a->height > YAML_MAX_DEPTH)
        return fail(p, ev->start_mark, KB_ETOOBIG,
                    "alias *%.60s nests deeper than %d levels", name,
                    YAML_MAX_DEPTH);
    if ((rc = count_nodes(p, a->nodes, ev->start_mark)) != 0)
        return rc;
    if ((rc = node_begin(p, ev->start_mark, &path_ok)) != 0)
        return rc;
    /* a private copy: callers may edit one occurrence without the others */
    if ((v = json_deep_copy(a->value)) == NULL)
        return fail(p, ev->start_mark, KB_ENOMEM, "out of memory");
    return node_attach(p, v, a->nodes, a->height, ev->start_mark);
}

static int
on_start(yparser *p, const yaml_event_t *ev, bool mapping)
{
    yframe *f = top(p), *nf;
    const char *tag = (const char *)(mapping ? ev->data.mapping_start.tag
                                             : ev->data.sequence_start.tag);
    const char *anchor = (const char *)(mapping ? ev->data.mapping_start.anchor
                                                : ev->data.sequence_start.anchor);
    bool path_ok;
    int rc;

    if (f != NULL && json_is_object(f->value) && f->key == NULL)
        return fail(p, ev->start_mark, KB_EPARSE,
                    "mapping keys must be scalars");
    if (tag != NULL && strcmp(tag, "!") != 0
        && strcmp(tag, mapping ? YAML_MAP_TAG : YAML_SEQ_TAG) != 0)
        return fail(p, ev->start_mark, KB_EPARSE, "unsupported tag %.60s", tag);
    if (p->depth == YAML_MAX_DEPTH)
        return fail(p, ev->start_mark, KB_ETOOBIG,
                    "nested deeper than %d levels", YAML_MAX_DEPTH);
    if ((rc = count_nodes(p, 1, ev->start_mark)) != 0)
        return rc;
    if ((rc = node_begin(p, ev->start_mark, &path_ok)) != 0)
        return rc;
    nf = &p->stack[p->depth];
    memset(nf, 0, sizeof(*nf));
    nf->value = mapping ? json_object() : json_array();
    nf->path_len = p->path.len;
    nf->path_ok = path_ok;
    nf->nodes = 1;
    nf->height = 1;
    if (nf->value == NULL)
        return fail(p, ev->start_mark, KB_ENOMEM, "out of memory");
    p->depth++;
    if (anchor != NULL && (nf->anchor = strdup(anchor)) == NULL)
        return fail(p, ev->start_mark, KB_ENOMEM, "out of memory");
    return 0;
}

static int
on_end(yparser *p, const yaml_event_t *ev)
{
    yframe f = p->stack[--p->depth];
    int rc = 0;

    memset(&p->stack[p->depth], 0, sizeof(p->stack[p->depth]));
    if (f.anchor != NULL)
        rc = anchor_add(p, f.anchor, f.value, f.nodes, f.height);
    if (rc != 0) {
        rc = fail(p, ev->start_mark, rc, "out of memory");
        json_decref(f.value);
    } else {
        rc = node_attach(p, f.value, f.nodes, f.height, ev->start_mark);
    }
    f.value = NULL;
    frame_clear(&f);
    return rc;
}

static int
on_document_end(yparser *p)
{
    kb_yaml_doc *d = p->doc;

    p->doc = NULL;
    anchors_clear(p);                    /* anchors are per document */
    if (d->root == NULL || json_is_null(d->root)) {
        doc_free(d);                     /* empty documents are skipped */
        return 0;
    }
    if (p->ndocs == p->capdocs) {
        size_t ncap = p->capdocs ? p->capdocs * 2 : 4;
        kb_yaml_doc **nd = realloc(p->docs, ncap * sizeof(*nd));
        if (nd == NULL) {
            doc_free(d);
            return KB_ENOMEM;
        }
        p->docs = nd;
        p->capdocs = ncap;
    }
    p->docs[p->ndocs++] = d;
    return 0;
}

static int
parser_error(yparser *p)
{
    const yaml_parser_t *yp = &p->yp;
    yaml_mark_t m = yp->problem_mark;

    if (yp->error == YAML_MEMORY_ERROR)
        return fail(p, m, KB_ENOMEM, "out of memory");
    if (yp->error == YAML_READER_ERROR)       /* bad encoding: no mark */
        return fail(p, yp->mark, KB_EPARSE, "%s", yp->problem != NULL
                    ? yp->problem : "cannot read input");
    if (yp->context != NULL)
        return fail(p, m, KB_EPARSE, "%s %s", yp->problem, yp->context);
    return fail(p, m, KB_EPARSE, "%s",
                yp->problem != NULL ? yp->problem : "syntax error");
}

static void
parser_cleanup(yparser *p)
{
    while (p->depth > 0)
        frame_clear(&p->stack[--p->depth]);
    anchors_clear(p);
    free(p->anchors);
    doc_free(p->doc);
    kb_buf_free(&p->path);
    yaml_parser_delete(&p->yp);
}

int
kb_yaml_parse(const char *text, size_t len, kb_yaml_doc ***docs,
              size_t *ndocs, char *err, size_t errlen)
{
    yparser *p;
    yaml_event_t ev;
    bool done = false;
    int rc = 0;

    *docs = NULL;
    *ndocs = 0;
    if (errlen > 0)
        err[0] = '\0';
    if (len > YAML_MAX_INPUT) {
        snprintf(err, errlen, "1:1: input is larger than %zu MiB",
                 YAML_MAX_INPUT >> 20);
        return KB_ETOOBIG;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        snprintf(err, errlen, "1:1: out of memory");
        return KB_ENOMEM;
    }
    p->err = err;
    p->errlen = errlen;
    kb_buf_init(&p->path, YAML_MAX_PATH);
    if (!yaml_parser_initialize(&p->yp)) {
        free(p);
        snprintf(err, errlen, "1:1: out of memory");
        return KB_ENOMEM;
    }
    yaml_parser_set_input_string(&p->yp, (const unsigned char *)text, len);

    while (!done && rc == 0) {
        if (!yaml_parser_parse(&p->yp, &ev)) {
            rc = parser_error(p);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            p->doc = calloc(1, sizeof(*p->doc));
            if (p->doc == NULL || (p->doc->lines = json_object()) == NULL) {
                rc = fail(p, ev.start_mark, KB_ENOMEM, "out of memory");
                break;
            }
            p->doc->line = (int)ev.start_mark.line + 1;
            break;
        case YAML_DOCUMENT_END_EVENT:
            if ((rc = on_document_end(p)) != 0)
                rc = fail(p, ev.start_mark, rc, "out of memory");
            break;
        case YAML_SCALAR_EVENT:
            rc = on_scalar(p, &ev);
            break;
        case YAML_ALIAS_EVENT:
            rc = on_alias(p, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = on_start(p, &ev, false);
            break;
        case YAML_MAPPING_START_EVENT:
            rc = on_start(p, &ev, true);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            rc = on_end(p, &ev);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }

    if (rc == 0) {
        *docs = p->docs;
        *ndocs = p->ndocs;
        p->docs = NULL;
    } else {
        kb_yaml_docs_free(p->docs, p->ndocs);
    }
    parser_cleanup(p);
    free(p);
    return rc;
}

json_t *
kb_yaml_doc_root(const kb_yaml_doc *doc)
{
    return doc->root;
}

int
kb_yaml_doc_line(const kb_yaml_doc *doc)
{
    return doc->line;
}

int
kb_yaml_line(const kb_yaml_doc *doc, const char *path)
{
    char *p = strdup(path != NULL ? path : "");
    int line = 0;

    if (p == NULL)
        return doc->line;
    for (;;) {
        json_t *l = json_object_get(doc->lines, p);
        size_t n = strlen(p);
        if (l != NULL) {
            line = (int)json_integer_value(l);
            break;
        }
        if (n == 0)
            break;
        /* drop the last component: "a.b[2]" -> "a.b" -> "a" -> "" */
        if (p[n - 1] == ']') {
            char *open = strrchr(p, '[');
            if (open == NULL)
                break;
            *open = '\0';
        } else {
            char *dot = strrchr(p, '.');
            if (dot != NULL)
                *dot = '\0';
            else
                p[0] = '\0';
        }
    }
    free(p);
    return line != 0 ? line : doc->line;
}

void
kb_yaml_docs_free(kb_yaml_doc **docs, size_t ndocs)
{
    if (docs == NULL)
        return;
    for (size_t i = 0; i < ndocs; i++)
        doc_free(docs[i]);
    free(docs);
}

int
kb_yaml_load_file(const char *path, json_t **out, char *err, size_t errlen)
{
    kb_yaml_doc **docs = NULL;
    size_t ndocs = 0;
    char perr[512];
    kb_buf text = KB_BUF_INIT(YAML_MAX_INPUT);
    char chunk[65536];
    ssize_t n;
    int fd, rc = 0;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto out_close;
        }
        if ((rc = kb_buf_append(&text, chunk, (size_t)n)) != 0) {
            snprintf(err, errlen, "%s: %s", path, rc == KB_ETOOBIG
                     ? "file is larger than 16 MiB" : "out of memory");
            goto out_close;
        }
    }
    rc = kb_yaml_parse(kb_buf_cstr(&text), text.len, &docs, &ndocs, perr,
                       sizeof(perr));
    if (rc != 0) {
        snprintf(err, errlen, "%s:%s", path, perr);
        goto out_close;
    }
    if (ndocs != 1) {
        snprintf(err, errlen, "%s:%d: expected one document, found %zu", path,
                 ndocs > 1 ? kb_yaml_doc_line(docs[1]) : 1, ndocs);
        rc = KB_EPARSE;
        goto out_free_docs;
    }
    *out = json_incref(kb_yaml_doc_root(docs[0]));

out_free_docs:
    kb_yaml_docs_free(docs, ndocs);
out_close:
    close(fd);
    kb_buf_free(&text);
    return rc;
}

/* ---- emitter ------------------------------------------------------------- */

typedef struct yemitter {
    yaml_emitter_t em;
    kb_buf        *out;
    int            rc;       /* first kb_buf error, if any */
} yemitter;

static int
emit_write(void *data, unsigned char *buf, size_t size)
{
    yemitter *e = data;
    int rc = kb_buf_append(e->out, buf, size);

    if (rc != 0) {
        if (e->rc == 0)
            e->rc = rc;
        return 0;
    }
    return 1;
}

/* The emitter owns and frees the event, even on failure. */
static int
emit(yemitter *e, yaml_event_t *ev, int init_ok)
{
    if (!init_ok)
        return KB_ENOMEM;
    if (!yaml_emitter_emit(&e->em, ev))
        return e->rc != 0 ? e->rc : KB_EINVAL;
    return 0;
}

/* Would a plain scalar with this text read back as something other than
 * this string, here or in a YAML 1.1 reader? */
static bool
needs_quotes(const char *s, size_t n)
{
    static const char *const yaml11[] = {
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "on", "On", "ON", "off", "Off", "OFF", "=", "<<", NULL
    };

    if (classify(s, n) != YT_STR || is_one_of(s, n, yaml11))
        return true;
    /* numbers in other notations (1_000, 0b1, 1:30, +.5) */
    if (n > 0 && ((s[0] >= '0' && s[0] <= '9')
                  || ((s[0] == '-' || s[0] == '+' || s[0] == '.') && n > 1
                      && ((s[1] >= '0' && s[1] <= '9') || s[1] == '.'))))
        return true;
    return memchr(s, '\0', n) != NULL;
}

static int
emit_scalar(yemitter *e, const char *s, size_t n, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    int ok = yaml_scalar_event_initialize(&ev, NULL, NULL,
                                          (yaml_char_t *)s, (int)n, 1, 1,
                                          style);
    return emit(e, &ev, ok);
}

static int
emit_string(yemitter *e, const char *s, size_t n)
{
    yaml_scalar_style_t style = YAML_PLAIN_SCALAR_STYLE;

    if (needs_quotes(s, n))
        style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    else if (memchr(s, '\n', n) != NULL)
        style = YAML_LITERAL_SCALAR_STYLE;  /* libyaml quotes if it can't */
    return emit_scalar(e, s, n, style);
}

static int
emit_real(yemitter *e, double d)
{
    char buf[40];

    /* shortest text that reads back as the same double */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (strpbrk(buf, ".eE") == NULL) {
        size_t l = strlen(buf);
        snprintf(buf + l, sizeof(buf) - l, ".0");
    }
    return emit_scalar(e, buf, strlen(buf), YAML_PLAIN_SCALAR_STYLE);
}

static int
emit_value(yemitter *e, const json_t *v, int depth)
{
    yaml_event_t ev;
    char num[32];
    int rc;

    if (depth > YAML_MAX_EMIT_DEPTH)
        return KB_ETOOBIG;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *c;
        bool empty = json_object_size(v) == 0;
        rc = emit(e, &ev, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                      empty ? YAML_FLOW_MAPPING_STYLE : YAML_BLOCK_MAPPING_STYLE));
        if (rc != 0)
            return rc;
        json_object_foreach((json_t *)v, k, c) {
            if ((rc = emit_string(e, k, strlen(k))) != 0
                || (rc = emit_value(e, c, depth + 1)) != 0)
                return rc;
        }
        return emit(e, &ev, yaml_mapping_end_event_initialize(&ev));
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *c;
        bool empty = json_array_size(v) == 0;
        rc = emit(e, &ev, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                      empty ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE));
        if (rc != 0)
            return rc;
        json_array_foreach(v, i, c) {
            if ((rc = emit_value(e, c, depth + 1)) != 0)
                return rc;
        }
        return emit(e, &ev, yaml_sequence_end_event_initialize(&ev));
    }
    case JSON_STRING:
        return emit_string(e, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        return emit_scalar(e, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        return emit_real(e, json_real_value(v));
    case JSON_TRUE:
        return emit_scalar(e, "true", 4, YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE:
        return emit_scalar(e, "false", 5, YAML_PLAIN_SCALAR_STYLE);
    case JSON_NULL:
        return emit_scalar(e, "null", 4, YAML_PLAIN_SCALAR_STYLE);
    }
    return KB_EINVAL;
}

int
kb_yaml_emit(const json_t *v, kb_buf *out)
{
    yemitter e;
    yaml_event_t ev;
    size_t start = out->len;
    int rc;

    memset(&e, 0, sizeof(e));
    e.out = out;
    if (v == NULL)
        return KB_EINVAL;
    if (!yaml_emitter_initialize(&e.em))
        return KB_ENOMEM;
    yaml_emitter_set_output(&e.em, emit_write, &e);
    yaml_emitter_set_unicode(&e.em, 1);
    yaml_emitter_set_indent(&e.em, 2);
    yaml_emitter_set_width(&e.em, -1);
    yaml_emitter_set_break(&e.em, YAML_LN_BREAK);

    rc = emit(&e, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
    if (rc == 0)
        rc = emit(&e, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL,
                                                                NULL, 1));
    if (rc == 0)
        rc = emit_value(&e, v, 0);
    if (rc == 0)
        rc = emit(&e, &ev, yaml_document_end_event_initialize(&ev, 1));
    if (rc == 0)
        rc = emit(&e, &ev, yaml_stream_end_event_initialize(&ev));
    if (rc == 0 && !yaml_emitter_flush(&e.em))
        rc = e.rc != 0 ? e.rc : KB_EINVAL;
    yaml_emitter_delete(&e.em);
    if (rc != 0)
        path_truncate(out, start);       /* leave no half document */
    return rc;
}
