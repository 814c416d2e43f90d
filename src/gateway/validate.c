/*
 * validate.c - request validation against the OpenAPI spec (opt-in with
 * x-kiban-validate).  At spec load, each opted-in operation's parameters
 * and request body are compiled into a gw_validation (schemas by
 * schema.c); the `validate` stage then checks path, query, header and
 * cookie parameters and JSON bodies, answering 400 or 415 naming the field.
 */
#include "gateway/gw_int.h"
#include "gateway/schema.h"
#include "core/buf.h"
#include "core/err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PTR_MAX        1024          /* longest JSON pointer we print */
#define MSG_MAX        512           /* longest error message */
#define MAX_PARAMS     128           /* parameters of one operation */
#define MAX_MEDIA      32            /* request body media types */
#define MAX_ITEMS      1024          /* items of one array parameter */
#define MAX_VALUE      (1u << 20)    /* bytes of one decoded value */

typedef enum param_in { IN_PATH, IN_QUERY, IN_HEADER, IN_COOKIE } param_in;

static const struct {
    const char *name;
    param_in    in;
    const char *label;               /* in messages */
} ins[] = {
    { "path", IN_PATH, "path parameter" },
    { "query", IN_QUERY, "query parameter" },
    { "header", IN_HEADER, "header" },
    { "cookie", IN_COOKIE, "cookie" },
};
#define NINS (sizeof(ins) / sizeof(ins[0]))

/* How the items of an array parameter are delimited. */
typedef enum split_style {
    SPLIT_CSV, SPLIT_SSV, SPLIT_TSV, SPLIT_PIPES, SPLIT_MULTI
} split_style;

static const char split_chars[] = { ',', ' ', '\t', '|', '\0' };

/* Swagger 2.0 collectionFormat, and the OpenAPI 3 styles they match. */
static const struct {
    const char *name;
    split_style split;
} collection_formats[] = {
    { "csv", SPLIT_CSV },   { "ssv", SPLIT_SSV },   { "tsv", SPLIT_TSV },
    { "pipes", SPLIT_PIPES }, { "multi", SPLIT_MULTI },
};

/* x-kiban-validate object fields. */
typedef struct vopts {
    bool parameters;
    bool body;
} vopts;

static const struct {
    const char *name;
    size_t      offset;
} opt_fields[] = {
    { "parameters", offsetof(vopts, parameters) },
    { "body", offsetof(vopts, body) },
};

typedef struct vparam {
    const char      *name;           /* points into the spec */
    param_in         in;
    bool             required;
    bool             json;           /* 3.x `content`: the value is JSON */
    split_style      split;
    const gw_schema *schema;
    unsigned         types;          /* what a raw value is read as */
    unsigned         item_types;     /* same, for array items */
} vparam;

typedef struct vmedia {
    char            *type;           /* lower case; may be a range */
    bool             json;
    const gw_schema *schema;         /* NULL: anything */
} vmedia;

typedef struct gw_validation gw_validation;

struct gw_validation {
    gw_schema_set *set;              /* one reference */
    vparam        *params;
    size_t         nparams;
    vmedia        *media;            /* none: the body is not checked */
    size_t         nmedia;
    bool           body_required;
};

/* ------------------------------------------------------------------------ */
/* Compiling                                                                 */

typedef struct vcc {
    gw_schema_set *set;
    char          *err;
    size_t         errlen;
    gw_dialect     dialect;
} vcc;

/* "pointer: reason" into the caller's err; returns KB_EINVAL. */
#define cfail(c, ...) gw__spec_fail((c)->err, (c)->errlen, __VA_ARGS__)

/*
 * x-kiban-validate: true/false, or {parameters: bool, body: bool} (each
 * defaults to true when the object is given) into *o.
 */
static int
opts_parse(vcc *c, const json_t *v, const char *ptr, vopts *o)
{
    const char *key;
    const json_t *f;

    if (json_is_boolean(v)) {
        o->parameters = o->body = json_is_true(v);
        return 0;
    }
    if (!json_is_object(v))
        return cfail(c, ptr, "must be true, false or an object {parameters: "
                            "bool, body: bool}");
    o->parameters = o->body = true;
    json_object_foreach((json_t *)v, key, f) {
        char p[PTR_MAX];
        size_t i;
        gw__pointer_join(p, sizeof(p), ptr, key);
        for (i = 0; i < sizeof(opt_fields) / sizeof(opt_fields[0]); i++)
            if (strcmp(key, opt_fields[i].name) == 0)
                break;
        if (i == sizeof(opt_fields) / sizeof(opt_fields[0]))
            return cfail(c, p, "unknown field (parameters, body)");
        if (!json_is_boolean(f))
            return cfail(c, p, "must be true or false");
        *(bool *)((char *)o + opt_fields[i].offset) = json_is_true(f);
    }
    return 0;
}

/* Follow a chain of $ref (parameters, request bodies) to the object. */
static int
deref(vcc *c, const json_t **v, char *ptr)
{
    for (int hops = 0; json_is_object(*v); hops++) {
        const json_t *ref = json_object_get(*v, "$ref");
        const char *why;
        char p[PTR_MAX];

        if (ref == NULL)
            return 0;
        gw__pointer_join(p, sizeof(p), ptr, "$ref");
        if (!json_is_string(ref))
            return cfail(c, p, "must be a string");
        if (hops == GW_SCHEMA_MAX_REFS)
            return cfail(c, p, "more than %d $ref hops (a reference cycle?)",
                        GW_SCHEMA_MAX_REFS);
        *v = gw__schema_ref_resolve(c->set, json_string_value(ref), &why);
        if (*v == NULL)
            return cfail(c, p, "\"%s\" %s", json_string_value(ref), why);
        snprintf(ptr, PTR_MAX, "%s", json_string_value(ref) + 1);
    }
    return 0;
}

static bool
media_is_json(const char *t)
{
    size_t n = strlen(t);

    return strcmp(t, "application/json") == 0 ||
           (n > 5 && strcmp(t + n - 5, "+json") == 0 &&
            strncmp(t, "application/", 12) == 0);
}

/* "Application/JSON; charset=utf-8" → "application/json" into out. */
static void
media_norm(const char *t, size_t n, char *out, size_t cap)
{
    size_t k = 0;

    while (n > 0 && (*t == ' ' || *t == '\t'))
        t++, n--;
    for (size_t i = 0; i < n && t[i] != ';' && k + 1 < cap; i++)
        if (t[i] != ' ' && t[i] != '\t')
            out[k++] = (char)tolower((unsigned char)t[i]);
    out[k] = '\0';
}

static int
media_add(vcc *c, gw_validation *v, const char *type, const json_t *schema,
          const char *ptr)
{
    char norm[128];
    vmedia *m;
    int rc;

    if (v->nmedia == MAX_MEDIA)
        return cfail(c, ptr, "more than %d media types", MAX_MEDIA);
    media_norm(type, strlen(type), norm, sizeof(norm));
    m = &v->media[v->nmedia];
    m->type = strdup(norm);
    if (m->type == NULL)
        return KB_ENOMEM;
    v->nmedia++;
    m->json = media_is_json(norm);
    if (schema != NULL) {
        char p[PTR_MAX];
        gw__pointer_join(p, sizeof(p), ptr, "schema");
        if ((rc = gw__schema_compile(c->set, schema, p, &m->schema, c->err,
                                     c->errlen)) != 0)
            return rc;
    }
    return 0;
}

/* Swagger 2.0 body parameter: its schema, for each `consumes` type. */
static int
body_swagger(vcc *c, gw_validation *v, const json_t *doc, const json_t *op,
             const json_t *param, const char *ptr)
{
    const json_t *consumes = json_object_get(op, "consumes");
    const json_t *schema = json_object_get(param, "schema");
    const json_t *t;
    size_t i;
    int rc;

    if (consumes == NULL)
        consumes = json_object_get(doc, "consumes");
    v->body_required = json_is_true(json_object_get(param, "required"));
    if (!json_is_array(consumes) || json_array_size(consumes) == 0)
        return media_add(c, v, "application/json", schema, ptr);
    json_array_foreach(consumes, i, t) {
        if (!json_is_string(t))
            continue;
        if ((rc = media_add(c, v, json_string_value(t),
                            media_is_json(json_string_value(t)) ? schema
                                                                : NULL,
                            ptr)) != 0)
            return rc;
    }
    return 0;
}

/* OpenAPI 3.x requestBody: {required, content: {type: {schema}}}. */
static int
body_oas3(vcc *c, gw_validation *v, const json_t *body, const char *at)
{
    char ptr[PTR_MAX], p[PTR_MAX];
    const json_t *content, *media;
    const char *type;
    int rc;

    snprintf(ptr, sizeof(ptr), "%s", at);
    if ((rc = deref(c, &body, ptr)) != 0)
        return rc;
    if (!json_is_object(body))
        return cfail(c, ptr, "must be an object (a request body)");
    v->body_required = json_is_true(json_object_get(body, "required"));
    content = json_object_get(body, "content");
    gw__pointer_join(p, sizeof(p), ptr, "content");
    if (content == NULL)
        return 0;
    if (!json_is_object(content))
        return cfail(c, p, "must be an object of media types");
    json_object_foreach((json_t *)content, type, media) {
        char mp[PTR_MAX];
        gw__pointer_join(mp, sizeof(mp), p, type);
        if (!json_is_object(media))
            return cfail(c, mp, "must be an object (a media type)");
        if ((rc = media_add(c, v, type, json_object_get(media, "schema"),
                            mp)) != 0)
            return rc;
    }
    return 0;
}

/* OpenAPI 3 style/explode → how an array value is delimited. */
static int
param_style(vcc *c, vparam *vp, const json_t *param, const char *ptr)
{
    const char *style = json_string_value(json_object_get(param, "style"));
    const json_t *explode = json_object_get(param, "explode");
    bool exploded;

    if (style == NULL)
        style = vp->in == IN_QUERY || vp->in == IN_COOKIE ? "form"
                                                          : "simple";
    exploded = explode != NULL ? json_is_true(explode)
                               : strcmp(style, "form") == 0;
    if (strcmp(style, "form") == 0 && vp->in != IN_PATH &&
        vp->in != IN_HEADER)
        vp->split = exploded && vp->in == IN_QUERY ? SPLIT_MULTI : SPLIT_CSV;
    else if (strcmp(style, "simple") == 0 &&
             (vp->in == IN_PATH || vp->in == IN_HEADER))
        vp->split = SPLIT_CSV;
    else if (strcmp(style, "spaceDelimited") == 0 && vp->in == IN_QUERY)
        vp->split = SPLIT_SSV;
    else if (strcmp(style, "pipeDelimited") == 0 && vp->in == IN_QUERY)
        vp->split = SPLIT_PIPES;
    else {
        char p[PTR_MAX];
        gw__pointer_join(p, sizeof(p), ptr, "style");
        return cfail(c, p, "style \"%s\" is not supported by the request "
                          "validator here (form, simple, spaceDelimited, "
                          "pipeDelimited)", style);
    }
    return 0;
}

/*
 * One non-body parameter (already dereferenced) into vp.  Swagger 2.0
 * parameters are their own schema; OpenAPI 3 ones carry `schema` or a
 * JSON `content`.
 */
static int
param_compile(vcc *c, vparam *vp, const json_t *param, const char *ptr)
{
    char p[PTR_MAX];
    const json_t *schema = param, *content;
    const char *sp = ptr;
    int rc;

    if (c->dialect == GW_DIALECT_SWAGGER2) {
        const char *cf = json_string_value(json_object_get(param,
                                                           "collectionFormat"));
        vp->split = SPLIT_CSV;
        for (size_t i = 0; cf != NULL && i < sizeof(collection_formats) /
                                        sizeof(collection_formats[0]); i++)
            if (strcmp(cf, collection_formats[i].name) == 0)
                vp->split = collection_formats[i].split;
        if (vp->split == SPLIT_MULTI && vp->in != IN_QUERY)
            vp->split = SPLIT_CSV;
    } else {
        if ((rc = param_style(c, vp, param, ptr)) != 0)
            return rc;
        schema = json_object_get(param, "schema");
        gw__pointer_join(p, sizeof(p), ptr, "schema");
        sp = p;
        content = json_object_get(param, "content");
        if (schema == NULL && json_is_object(content)) {
            const char *type;
            const json_t *media;
            char cp[PTR_MAX];
            gw__pointer_join(cp, sizeof(cp), ptr, "content");
            json_object_foreach((json_t *)content, type, media) {
                char norm[128];
                media_norm(type, strlen(type), norm, sizeof(norm));
                gw__pointer_join(p, sizeof(p), cp, type);
                if (!media_is_json(norm))
                    return cfail(c, p, "only JSON parameter content is "
                                      "supported by the request validator");
                vp->json = true;
                schema = json_object_get(media, "schema");
                gw__pointer_join(p, sizeof(p), p, "schema");
                break;
            }
        }
        if (schema == NULL)
            return 0;            /* presence only */
    }
    if ((rc = gw__schema_compile(c->set, schema, sp, &vp->schema, c->err,
                                 c->errlen)) != 0)
        return rc;
    vp->types = gw__schema_types(vp->schema);
    if (vp->json)
        return 0;
    if ((vp->types & GW_T_OBJECT) &&
        !(vp->types & (GW_T_STRING | GW_T_ARRAY)))
        return cfail(c, sp, "object-valued parameters are not supported by "
                           "the request validator (use content: "
                           "application/json)");
    if (vp->types & GW_T_ARRAY) {
        const gw_schema *items = gw__schema_items(vp->schema);
        vp->item_types = items != NULL ? gw__schema_types(items) : 0;
        if (vp->item_types & (GW_T_ARRAY | GW_T_OBJECT))
            return cfail(c, sp, "arrays of arrays or objects are not "
                               "supported in parameters by the request "
                               "validator");
    }
    return 0;
}

static bool
param_same(const vparam *a, const char *name, param_in in)
{
    return a->in == in && (in == IN_HEADER ? strcasecmp(a->name, name) == 0
                                           : strcmp(a->name, name) == 0);
}

/* Add the parameters listed at `list` (path item's, then operation's:
 * the later replaces one with the same name and location). */
static int
params_add(vcc *c, gw_validation *v, const json_t *doc, const json_t *op,
           const json_t *list, const char *at, const vopts *o)
{
    const json_t *param;
    size_t i;
    int rc;

    if (list == NULL)
        return 0;
    if (!json_is_array(list))
        return cfail(c, at, "must be an array of parameters");
    json_array_foreach(list, i, param) {
        char ptr[PTR_MAX], p[PTR_MAX];
        const char *name, *in;
        vparam vp, *slot = NULL;
        size_t k;

        snprintf(ptr, sizeof(ptr), "%.*s/%zu", PTR_MAX - 24, at, i);
        if ((rc = deref(c, &param, ptr)) != 0)
            return rc;
        if (!json_is_object(param))
            return cfail(c, ptr, "must be an object (a parameter)");
        name = json_string_value(json_object_get(param, "name"));
        in = json_string_value(json_object_get(param, "in"));
        if (name == NULL) {
            gw__pointer_join(p, sizeof(p), ptr, "name");
            return cfail(c, p, "required (a string)");
        }
        if (in != NULL && strcmp(in, "body") == 0 &&
            c->dialect == GW_DIALECT_SWAGGER2) {
            if (o->body && (rc = body_swagger(c, v, doc, op, param,
                                              ptr)) != 0)
                return rc;
            continue;
        }
        if (in != NULL && strcmp(in, "formData") == 0 &&
            c->dialect == GW_DIALECT_SWAGGER2)
            continue;            /* form bodies are not checked */
        memset(&vp, 0, sizeof(vp));
        for (k = 0; in != NULL && k < NINS; k++)
            if (strcmp(in, ins[k].name) == 0)
                break;
        if (in == NULL || k == NINS) {
            gw__pointer_join(p, sizeof(p), ptr, "in");
            return cfail(c, p, "must be path, query, header or cookie%s",
                        c->dialect == GW_DIALECT_SWAGGER2
                            ? ", body or formData" : "");
        }
        vp.name = name;
        vp.in = ins[k].in;
        if (!o->parameters)
            continue;
        /* OpenAPI 3: these header parameters "SHALL be ignored" */
        if (vp.in == IN_HEADER && c->dialect != GW_DIALECT_SWAGGER2 &&
            (strcasecmp(name, "Accept") == 0 ||
             strcasecmp(name, "Content-Type") == 0 ||
             strcasecmp(name, "Authorization") == 0))
            continue;
        vp.required = vp.in == IN_PATH ||
                      json_is_true(json_object_get(param, "required"));
        if ((rc = param_compile(c, &vp, param, ptr)) != 0)
            return rc;
        for (k = 0; k < v->nparams && slot == NULL; k++)
            if (param_same(&v->params[k], name, vp.in))
                slot = &v->params[k];
        if (slot == NULL) {
            if (v->nparams == MAX_PARAMS)
                return cfail(c, ptr, "more than %d parameters", MAX_PARAMS);
            slot = &v->params[v->nparams++];
        }
        *slot = vp;
    }
    return 0;
}

/* The path item of a route, from its pointer "/paths/<path>/<method>". */
static const json_t *
path_item_of(const json_t *doc, const char *pointer)
{
    const char *start, *end;
    kb_buf key = KB_BUF_INIT(PTR_MAX);
    const json_t *item = NULL;

    if (strncmp(pointer, "/paths/", 7) != 0)
        return NULL;
    start = pointer + 7;
    end = strrchr(start, '/');
    if (end == NULL)
        return NULL;
    for (const char *q = start; q < end; q++) {
        char ch = *q;
        if (ch == '~' && q + 1 < end && (q[1] == '0' || q[1] == '1'))
            ch = *++q == '0' ? '~' : '/';
        if (kb_buf_appendc(&key, ch) != 0)
            goto out_free_key;
    }
    item = json_object_get(json_object_get(doc, "paths"), kb_buf_cstr(&key));
out_free_key:
    kb_buf_free(&key);
    return item;
}

static void
validation_free(gw_validation *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->nmedia; i++)
        free(v->media[i].type);
    free(v->media);
    free(v->params);
    gw__schema_set_unref(v->set);
    free(v);
}

static int
route_compile(vcc *c, const json_t *doc, const gw_route *r, const vopts *o,
              gw_validation **out)
{
    char ptr[PTR_MAX];
    const json_t *item = path_item_of(doc, r->pointer);
    gw_validation *v = calloc(1, sizeof(*v));
    int rc;

    *out = NULL;
    if (v == NULL)
        return KB_ENOMEM;
    v->set = gw__schema_set_ref(c->set);
    v->params = calloc(MAX_PARAMS, sizeof(vparam));
    v->media = calloc(MAX_MEDIA, sizeof(vmedia));
    if (v->params == NULL || v->media == NULL) {
        rc = KB_ENOMEM;
        goto out_free;
    }
    if (item != NULL) {
        char ip[PTR_MAX];
        snprintf(ip, sizeof(ip), "%.*s", (int)(strrchr(r->pointer, '/') -
                                               r->pointer), r->pointer);
        gw__pointer_join(ptr, sizeof(ptr), ip, "parameters");
        if ((rc = params_add(c, v, doc, r->op,
                             json_object_get(item, "parameters"), ptr,
                             o)) != 0)
            goto out_free;
    }
    gw__pointer_join(ptr, sizeof(ptr), r->pointer, "parameters");
    if ((rc = params_add(c, v, doc, r->op, json_object_get(r->op,
                                                           "parameters"),
                         ptr, o)) != 0)
        goto out_free;
    if (o->body && c->dialect != GW_DIALECT_SWAGGER2 &&
        json_object_get(r->op, "requestBody") != NULL) {
        gw__pointer_join(ptr, sizeof(ptr), r->pointer, "requestBody");
        if ((rc = body_oas3(c, v, json_object_get(r->op, "requestBody"),
                            ptr)) != 0)
            goto out_free;
    }
    *out = v;
    return 0;

out_free:
    validation_free(v);
    return rc;
}

int
gw__validate_compile(gw_spec *s, char *err, size_t errlen)
{
    const json_t *doc = s->doc != NULL ? s->doc
                                       : json_object_get(s->spec, "openapi");
    const json_t *top;
    vcc c = { NULL, err, errlen, GW_DIALECT_OAS30 };
    vopts dflt = { false, false };
    const char *ver;
    int rc = 0;

    if (!json_is_object(doc))
        return 0;
    if ((ver = json_string_value(json_object_get(doc, "openapi"))) != NULL)
        c.dialect = strncmp(ver, "3.1", 3) == 0 ? GW_DIALECT_OAS31
                                                : GW_DIALECT_OAS30;
    else
        c.dialect = GW_DIALECT_SWAGGER2;
    top = json_object_get(doc, "x-kiban-validate");
    if (top != NULL && (rc = opts_parse(&c, top, "/x-kiban-validate",
                                        &dflt)) != 0)
        return rc;
    for (size_t i = 0; i < s->nroutes; i++) {
        gw_route *r = &s->routes[i];
        const json_t *xv = json_object_get(r->op, "x-kiban-validate");
        vopts o = dflt;
        if (xv != NULL) {
            char p[PTR_MAX];
            gw__pointer_join(p, sizeof(p), r->pointer, "x-kiban-validate");
            if ((rc = opts_parse(&c, xv, p, &o)) != 0)
                goto out_release;
        }
        if (!o.parameters && !o.body)
            continue;
        if (c.set == NULL &&
            (rc = gw__schema_set_create(doc, c.dialect, &c.set)) != 0)
            goto out_release;
        if ((rc = route_compile(&c, doc, r, &o, &r->validation)) != 0)
            goto out_release;
    }
    gw__schema_set_unref(c.set);     /* the routes hold theirs */
    return 0;

out_release:
    gw__schema_set_unref(c.set);
    gw__validate_release(s);
    return rc;
}

void
gw__validate_release(gw_spec *s)
{
    for (size_t i = 0; i < s->nroutes; i++) {
        validation_free(s->routes[i].validation);
        s->routes[i].validation = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Checking a request                                                        */

typedef struct rq {
    const gw_validation  *v;
    const kb_http_req    *req;
    const kb_route_match *m;
    char                 *msg;
    size_t                msglen;
    kb_buf                scratch;   /* decoded values */
} rq;

/* Percent-decode s[0..n) onto out.  '+' stays '+' (RFC 3986, not HTML
 * forms).  0, KB_EINVAL (bad escape), KB_ETOOBIG. */
static int
pct_decode(const char *s, size_t n, kb_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi = i + 2 < n ? gw__hex_digit(s[i + 1]) : -1;
            int lo = i + 2 < n ? gw__hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return KB_EINVAL;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (kb_buf_appendc(out, ch) != 0)
            return KB_ETOOBIG;
    }
    return 0;
}

static int
rfail(rq *q, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Write the answer's message; returns the status. */
static int
rfail(rq *q, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(q->msg, q->msglen, fmt, ap);
    va_end(ap);
    return status;
}

/* -?digits, optionally .digits and an exponent. */
static bool
number_syntax(const char *s, size_t n, bool *integral)
{
    size_t i = 0, d;

    *integral = true;
    if (i < n && s[i] == '-')
        i++;
    for (d = i; i < n && isdigit((unsigned char)s[i]); i++)
        ;
    if (i == d)
        return false;
    if (i < n && s[i] == '.') {
        *integral = false;
        for (d = ++i; i < n && isdigit((unsigned char)s[i]); i++)
            ;
        if (i == d)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        *integral = false;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        for (d = i; i < n && isdigit((unsigned char)s[i]); i++)
            ;
        if (i == d)
            return false;
    }
    return i == n;
}

/*
 * A raw text value as the JSON the schema reads: a number when it may be
 * one and looks like one, a boolean for "true"/"false", else a string
 * (so the schema's type check names what was expected).  s is
 * NUL-terminated at n.  New reference, NULL when out of memory.
 */
static json_t *
coerce(const char *s, size_t n, unsigned types)
{
    bool integral;

    if ((types & (GW_T_INTEGER | GW_T_NUMBER)) &&
        number_syntax(s, n, &integral)) {
        if (integral) {
            char *end;
            long long ll;
            errno = 0;
            ll = strtoll(s, &end, 10);
            if (errno == 0)
                return json_integer(ll);
        }
        double d = strtod(s, NULL);
        if (isfinite(d))             /* "1e999" stays text: not a number */
            return json_real(d);
    }
    if ((types & GW_T_BOOLEAN) && n == 4 && memcmp(s, "true", 4) == 0)
        return json_true();
    if ((types & GW_T_BOOLEAN) && n == 5 && memcmp(s, "false", 5) == 0)
        return json_false();
    return json_stringn_nocheck(s, n);
}

static int
raw_push(json_t *raw, const char *s, size_t n)
{
    if (json_array_size(raw) >= MAX_ITEMS)
        return KB_ETOOBIG;
    return json_array_append_new(raw, json_stringn_nocheck(s, n)) == 0
               ? 0 : KB_ENOMEM;
}

/* Every occurrence of query parameter `name`, decoded, onto raw. */
static int
query_values(rq *q, const char *name, json_t *raw)
{
    const char *p = q->req->query;
    kb_buf key = KB_BUF_INIT(MAX_VALUE);
    int rc = 0;

    while (*p != '\0' && rc == 0) {
        const char *amp = strchr(p, '&');
        const char *end = amp != NULL ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq != NULL ? eq : end;

        kb_buf_reset(&key);
        if (kend > p && pct_decode(p, (size_t)(kend - p), &key) == 0 &&
            strcmp(kb_buf_cstr(&key), name) == 0) {
            const char *val = eq != NULL ? eq + 1 : end;
            kb_buf_reset(&q->scratch);
            rc = pct_decode(val, (size_t)(end - val), &q->scratch);
            if (rc == 0)
                rc = raw_push(raw, kb_buf_cstr(&q->scratch), q->scratch.len);
        }
        p = amp != NULL ? amp + 1 : end;
    }
    kb_buf_free(&key);
    return rc;
}

/* All lines of header `name`, joined with ",". */
static int
header_values(rq *q, const char *name, json_t *raw)
{
    bool found = false;

    kb_buf_reset(&q->scratch);
    for (size_t i = 0; i < q->req->nheaders; i++) {
        if (strcasecmp(q->req->headers[i].name, name) != 0)
            continue;
        if ((found && kb_buf_appendc(&q->scratch, ',') != 0) ||
            kb_buf_appends(&q->scratch, q->req->headers[i].value) != 0)
            return KB_ETOOBIG;
        found = true;
    }
    return found ? raw_push(raw, kb_buf_cstr(&q->scratch), q->scratch.len)
                 : 0;
}

/* Cookie `name` from the Cookie header(s) ("a=1; b=2"). */
static int
cookie_values(rq *q, const char *name, json_t *raw)
{
    size_t nlen = strlen(name);

    for (size_t i = 0; i < q->req->nheaders; i++) {
        const char *p = q->req->headers[i].value;
        if (strcasecmp(q->req->headers[i].name, "Cookie") != 0)
            continue;
        while (*p != '\0') {
            const char *end = p + strcspn(p, ";");
            while (*p == ' ' || *p == '\t')
                p++;
            if ((size_t)(end - p) > nlen && strncmp(p, name, nlen) == 0 &&
                p[nlen] == '=')
                return raw_push(raw, p + nlen + 1,
                                (size_t)(end - p - (ptrdiff_t)nlen - 1));
            p = *end == ';' ? end + 1 : end;
        }
    }
    return 0;
}

static int
path_values(rq *q, const char *name, json_t *raw)
{
    size_t len;
    const char *val = kb_route_param_get(q->m, name, &len);
    int rc;

    if (val == NULL)
        return 0;
    kb_buf_reset(&q->scratch);
    if ((rc = pct_decode(val, len, &q->scratch)) != 0)
        return rc;
    return raw_push(raw, kb_buf_cstr(&q->scratch), q->scratch.len);
}

/* Split one text value into array items; NULL when out of memory or over
 * MAX_ITEMS (*toobig). */
static json_t *
split_items(const json_t *text, const vparam *p, bool *toobig)
{
    const char *s = json_string_value(text);
    size_t n = json_string_length(text);
    char delim = split_chars[p->split];
    json_t *arr = json_array();

    *toobig = false;
    if (arr == NULL || n == 0)
        return arr;
    for (size_t start = 0; start <= n;) {
        const char *hit = memchr(s + start, delim, n - start);
        size_t end = hit != NULL ? (size_t)(hit - s) : n;
        size_t a = start, b = end;
        char *item;
        json_t *v;

        if (p->in == IN_HEADER) {    /* list items around OWS */
            while (a < b && (s[a] == ' ' || s[a] == '\t'))
                a++;
            while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
                b--;
        }
        if (json_array_size(arr) == MAX_ITEMS) {
            *toobig = true;
            json_decref(arr);
            return NULL;
        }
        item = strndup(s + a, b - a);
        v = item != NULL ? coerce(item, b - a, p->item_types) : NULL;
        free(item);
        if (v == NULL || json_array_append_new(arr, v) != 0) {
            json_decref(arr);
            return NULL;
        }
        start = end + 1;
    }
    return arr;
}

static int
check_param(rq *q, const vparam *p)
{
    char where[160];
    json_t *raw = json_array(), *value = NULL;
    const char *label = ins[p->in].label;
    int rc = 0, status = 0;

    snprintf(where, sizeof(where), "%s \"%.100s\"", label, p->name);
    if (raw == NULL)
        return rfail(q, 500, "out of memory");
    switch (p->in) {
    case IN_PATH:   rc = path_values(q, p->name, raw); break;
    case IN_QUERY:  rc = query_values(q, p->name, raw); break;
    case IN_HEADER: rc = header_values(q, p->name, raw); break;
    case IN_COOKIE: rc = cookie_values(q, p->name, raw); break;
    }
    if (rc != 0) {
        status = rc == KB_ENOMEM ? rfail(q, 500, "out of memory")
                 : rc == KB_EINVAL
                     ? rfail(q, 400, "invalid request: %s: bad "
                                     "percent-encoding", where)
                     : rfail(q, 400, "invalid request: %s: too long or too "
                                     "many values", where);
        goto out_free;
    }
    if (json_array_size(raw) == 0) {
        /* a path parameter the template lacks is the spec's mistake: the
         * router never captures it, so it cannot be checked */
        if (p->required && p->in != IN_PATH)
            status = rfail(q, 400, "invalid request: %s: required", where);
        goto out_free;
    }
    if (p->schema == NULL)
        goto out_free;
    if (p->json) {
        json_error_t e;
        const json_t *t = json_array_get(raw, 0);
        value = json_loadb(json_string_value(t), json_string_length(t),
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
        if (value == NULL) {
            status = rfail(q, 400, "invalid request: %s: not valid JSON",
                           where);
            goto out_free;
        }
    } else if (p->types & GW_T_ARRAY) {
        bool toobig = false;
        if (p->split == SPLIT_MULTI) {
            size_t i;
            const json_t *t;
            value = json_array();
            json_array_foreach(raw, i, t) {
                json_t *item = coerce(json_string_value(t),
                                      json_string_length(t), p->item_types);
                if (value == NULL || item == NULL ||
                    json_array_append_new(value, item) != 0) {
                    status = rfail(q, 500, "out of memory");
                    goto out_free;
                }
            }
        } else {
            value = split_items(json_array_get(raw, 0), p, &toobig);
        }
        if (value == NULL) {
            status = toobig ? rfail(q, 400, "invalid request: %s: more than "
                                            "%d items", where, MAX_ITEMS)
                            : rfail(q, 500, "out of memory");
            goto out_free;
        }
    } else {
        const json_t *t = json_array_get(raw, 0);
        value = coerce(json_string_value(t), json_string_length(t),
                       p->types);
        if (value == NULL) {
            status = rfail(q, 500, "out of memory");
            goto out_free;
        }
    }
    {
        char detail[MSG_MAX];
        rc = gw__schema_validate(p->schema, value, where, detail,
                                 sizeof(detail));
        if (rc == KB_ENOMEM)
            status = rfail(q, 500, "out of memory");
        else if (rc != 0)
            status = rfail(q, 400, "invalid request: %s", detail);
    }
out_free:
    json_decref(value);
    json_decref(raw);
    return status;
}

/* The declared media type the request's type falls under, or NULL. */
static const vmedia *
media_match(const gw_validation *v, const char *type)
{
    const char *slash = strchr(type, '/');
    const vmedia *range = NULL, *any = NULL;

    for (size_t i = 0; i < v->nmedia; i++) {
        const char *t = v->media[i].type;
        size_t n = strlen(t);
        if (strcmp(t, type) == 0)
            return &v->media[i];
        if (strcmp(t, "*/*") == 0)
            any = &v->media[i];
        else if (slash != NULL && n >= 2 && strcmp(t + n - 2, "/*") == 0 &&
                 (size_t)(slash - type) == n - 2 &&
                 strncmp(t, type, n - 2) == 0)
            range = &v->media[i];
    }
    return range != NULL ? range : any;
}

static int
check_body(rq *q)
{
    const gw_validation *v = q->v;
    const char *ct = kb_http_req_header(q->req, "Content-Type");
    char type[128], detail[MSG_MAX];
    const vmedia *m;
    json_error_t e;
    json_t *body;
    int rc;

    if (v->nmedia == 0)
        return 0;
    if (q->req->body_len == 0)
        return v->body_required
                   ? rfail(q, 400, "invalid request: body: required") : 0;
    media_norm(ct != NULL ? ct : "", ct != NULL ? strlen(ct) : 0, type,
               sizeof(type));
    m = media_match(v, type);
    if (m == NULL) {
        kb_buf list = KB_BUF_INIT(256);
        for (size_t i = 0; i < v->nmedia; i++)
            kb_buf_appendf(&list, "%s%s", i ? ", " : "", v->media[i].type);
        rc = rfail(q, 415, "Content-Type \"%.100s\" is not accepted here "
                           "(%s)", type[0] ? type : "(none)",
                   kb_buf_cstr(&list));
        kb_buf_free(&list);
        return rc;
    }
    if (!media_is_json(type))
        return 0;
    body = json_loadb(q->req->body, q->req->body_len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
    if (body == NULL)
        return rfail(q, 400, "invalid request: body: not valid JSON (%.100s "
                             "at line %d, column %d)", e.text, e.line,
                     e.column);
    rc = m->schema != NULL ? gw__schema_validate(m->schema, body, "body",
                                                 detail, sizeof(detail))
                           : 0;
    json_decref(body);
    if (rc == KB_ENOMEM)
        return rfail(q, 500, "out of memory");
    return rc != 0 ? rfail(q, 400, "invalid request: %s", detail) : 0;
}

/*
 * Check a request against a route's compiled validation.  0 when it
 * passes; otherwise the HTTP status (400, 415, 500) with the message in
 * msg.  Read-only on v: any thread.
 */
static int
request_check(const gw_validation *v, const kb_http_req *req,
              const kb_route_match *m, char *msg, size_t msglen)
{
    rq q = { v, req, m, msg, msglen, KB_BUF_INIT(MAX_VALUE) };
    int status = 0;

    for (size_t i = 0; i < v->nparams && status == 0; i++)
        status = check_param(&q, &v->params[i]);
    if (status == 0)
        status = check_body(&q);
    kb_buf_free(&q.scratch);
    return status;
}

gw_step
gw__validate_stage(gw_ctx *c)
{
    const gw_validation *v = c->route != NULL ? c->route->validation : NULL;
    char msg[MSG_MAX];
    int status;

    if (v == NULL)
        return GW_NEXT;
    status = request_check(v, c->req, &c->match, msg, sizeof(msg));
    if (status == 0)
        return GW_NEXT;
    gw__respond_error(c, status, "%s", msg);
    return GW_DONE;
}
