/*
 * get.c - `kiban get`, `kiban delete` and `kiban version`: reading the admin
 * API and printing resources as a table, JSON or YAML.  The table columns
 * of each kind are declared in views[] below.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef KB_VERSION
#define KB_VERSION "dev"
#endif

#define GET_PAGE_SIZE  100
#define GET_MAX_PAGES  10000
#define GET_MAX_CELL   60        /* longer cells are cut with "..." */
#define GET_MAX_COLS   8

/* ---- table columns ------------------------------------------------------- */

typedef void (*cell_fn)(const json_t *res, char *buf, size_t len);

typedef struct get_column {
    const char *header;
    cell_fn     cell;
} get_column;

typedef struct get_view {
    const char *collection;         /* NULL: the fallback view */
    get_column  cols[GET_MAX_COLS];
} get_view;

/* A JSON scalar as text; "-" if absent or not a scalar. */
static void
scalar_text(const json_t *v, char *buf, size_t len)
{
    if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, len, "%g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, len, "%s", json_is_true(v) ? "true" : "false");
    else
        snprintf(buf, len, "-");
    if (buf[0] == '\0')
        snprintf(buf, len, "-");
}

static void
cell_name(const json_t *res, char *buf, size_t len)
{
    const char *name = json_string_value(json_object_get(res, "name"));
    const char *slash = name != NULL ? strrchr(name, '/') : NULL;

    scalar_text(json_object_get(res, "name"), buf, len);
    if (slash != NULL)
        snprintf(buf, len, "%s", slash + 1);      /* projects/p/services/x */
}

static void
cell_instances(const json_t *res, char *buf, size_t len)
{
    scalar_text(json_object_get(res, "instances"), buf, len);
}

static void
cell_ready(const json_t *res, char *buf, size_t len)
{
    scalar_text(json_object_get(json_object_get(res, "status"), "ready"), buf,
                len);
}

static void
cell_routes(const json_t *res, char *buf, size_t len)
{
    scalar_text(json_object_get(json_object_get(res, "status"), "routeCount"), buf,
                len);
}

/* Join a string and a list of strings with sep; "-" if all are empty. */
static void
join(const json_t *first, const json_t *list, const char *sep, char *buf,
     size_t len)
{
    size_t off = 0, i;
    json_t *item;

    buf[0] = '\0';
    if (json_is_string(first))
        off = (size_t)snprintf(buf, len, "%s", json_string_value(first));
    json_array_foreach(list, i, item) {
        if (!json_is_string(item) || off >= len)
            continue;
        off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? sep : "",
                                json_string_value(item));
    }
    if (buf[0] == '\0')
        snprintf(buf, len, "-");
}

static void
cell_command(const json_t *res, char *buf, size_t len)
{
    join(json_object_get(res, "command"), json_object_get(res, "args"), " ",
         buf, len);
}

static void
cell_hosts(const json_t *res, char *buf, size_t len)
{
    join(NULL, json_object_get(res, "hosts"), ",", buf, len);
}

static void
cell_age(const json_t *res, char *buf, size_t len)
{
    kb_cli__age(json_string_value(json_object_get(res, "createTime")),
                time(NULL), buf, len);
}

static const get_view views[] = {
    { "services", { { "NAME", cell_name }, { "INSTANCES", cell_instances },
                    { "READY", cell_ready }, { "COMMAND", cell_command },
                    { "AGE", cell_age } } },
    { "gateways", { { "NAME", cell_name }, { "ROUTES", cell_routes },
                    { "HOSTS", cell_hosts }, { "AGE", cell_age } } },
    { NULL,       { { "NAME", cell_name }, { "AGE", cell_age } } },
};

static const get_view *
view_for(const kb_kind *k)
{
    const get_view *v = views;

    while (v->collection != NULL && strcmp(v->collection, k->collection) != 0)
        v++;
    return v;
}

/* Cut long cells and replace control characters, so a resource cannot
 * garble the terminal. */
void
kb_cli__cell_clean(char *s)
{
    size_t n = strlen(s);

    for (char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    if (n > GET_MAX_CELL) {
        size_t cut = GET_MAX_CELL - 3;
        while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
            cut--;                           /* don't split a UTF-8 sequence */
        memcpy(s + cut, "...", 4);
    }
}

static int
print_table(const kb_kind *k, const json_t *items)
{
    const get_view *v = view_for(k);
    size_t ncols = 0, nrows = json_array_size(items), width[GET_MAX_COLS];
    char (*cells)[GET_MAX_CELL + 1];
    FILE *out = kb_cli__out();

    while (ncols < GET_MAX_COLS && v->cols[ncols].header != NULL)
        ncols++;
    cells = calloc((nrows + 1) * ncols, sizeof(*cells));
    if (cells == NULL) {
        fprintf(kb_cli__err(), "kiban: out of memory\n");
        return KB_CLI_EXIT_FAIL;
    }
    for (size_t c = 0; c < ncols; c++) {
        snprintf(cells[c], sizeof(cells[c]), "%s", v->cols[c].header);
        width[c] = strlen(cells[c]);
    }
    for (size_t r = 0; r < nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            char *cell = cells[(r + 1) * ncols + c];
            char tmp[4096];
            v->cols[c].cell(json_array_get(items, r), tmp, sizeof(tmp));
            kb_cli__cell_clean(tmp);                     /* now <= GET_MAX_CELL */
            memcpy(cell, tmp, strlen(tmp) + 1);
            if (strlen(cell) > width[c])
                width[c] = strlen(cell);
        }
    }
    for (size_t r = 0; r <= nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            const char *cell = cells[r * ncols + c];
            if (c + 1 < ncols)
                fprintf(out, "%-*s  ", (int)width[c], cell);
            else
                fprintf(out, "%s\n", cell);
        }
    }
    free(cells);
    return KB_CLI_EXIT_OK;
}

int
kb_cli__print_rows(const char *indent, const char *const *cells, size_t ncols,
                   size_t nrows)
{
    size_t width[GET_MAX_COLS] = { 0 }, total = (nrows + 1) * ncols;
    char (*text)[GET_MAX_CELL + 1];
    FILE *out = kb_cli__out();

    if (ncols == 0 || ncols > GET_MAX_COLS)
        return KB_CLI_EXIT_FAIL;
    if ((text = calloc(total, sizeof(*text))) == NULL) {
        fprintf(kb_cli__err(), "kiban: out of memory\n");
        return KB_CLI_EXIT_FAIL;
    }
    for (size_t i = 0; i < total; i++) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s", cells[i] != NULL && cells[i][0] != '\0'
                 ? cells[i] : "-");
        kb_cli__cell_clean(tmp);                 /* now <= GET_MAX_CELL */
        memcpy(text[i], tmp, strlen(tmp) + 1);
        if (strlen(text[i]) > width[i % ncols])
            width[i % ncols] = strlen(text[i]);
    }
    for (size_t r = 0; r <= nrows; r++) {
        fputs(indent, out);
        for (size_t c = 0; c < ncols; c++) {
            if (c + 1 < ncols)
                fprintf(out, "%-*s  ", (int)width[c], text[r * ncols + c]);
            else
                fprintf(out, "%s\n", text[r * ncols + c]);
        }
    }
    free(text);
    return KB_CLI_EXIT_OK;
}

int
kb_cli__print_value(const json_t *v, const char *format)
{
    FILE *out = kb_cli__out();

    if (strcmp(format, "json") == 0) {
        char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s == NULL)
            return KB_CLI_EXIT_FAIL;
        fprintf(out, "%s\n", s);
        free(s);
    } else {
        kb_buf b = KB_BUF_INIT((size_t)256 << 20);
        if (kb_yaml_emit(v, &b) != 0) {
            kb_buf_free(&b);
            fprintf(kb_cli__err(), "kiban: cannot print the result as YAML\n");
            return KB_CLI_EXIT_FAIL;
        }
        fputs(kb_buf_cstr(&b), out);
        kb_buf_free(&b);
    }
    return KB_CLI_EXIT_OK;
}

/* ---- verbs ------------------------------------------------------------------- */

const char *
kb_cli__project(const kb_cli *c)
{
    return c->project != NULL ? c->project : "default";
}

/* Look up KIND and check NAME; prints the error and returns an exit code. */
static int
kind_and_name(const kb_cli *c, const char *verb, const kb_kind **k)
{
    const char *name = c->opts.npos > 1 ? c->opts.pos[1] : NULL;

    if ((*k = kb_kind_find(c->opts.pos[0])) == NULL) {
        fprintf(kb_cli__err(), "kiban %s: unknown kind \"%s\"; run 'kiban help "
                "kinds'\n", verb, c->opts.pos[0]);
        return KB_CLI_EXIT_USAGE;
    }
    if (name != NULL && !kb_name_valid(name)) {
        fprintf(kb_cli__err(), "kiban %s: \"%s\" is not a valid name; run "
                "'kiban help %s'\n", verb, name, verb);
        return KB_CLI_EXIT_USAGE;
    }
    return KB_CLI_EXIT_OK;
}

char *
kb_cli__url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out, *o;

    if (n > 4096 || (out = malloc(3 * n + 1)) == NULL)
        return NULL;
    for (o = out; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
            || (ch >= '0' && ch <= '9') || strchr("-._~", ch) != NULL) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}

int
kb_cli__list_all(kb_cli *c, const char *collection, json_t *items)
{
    char path[2048], *token = NULL;
    int pages = 0, rc = KB_CLI_EXIT_FAIL;

    for (;;) {
        json_t *resp = NULL, *page;
        const char *next;
        long status;

        snprintf(path, sizeof(path), "/v1/projects/%s/%s?pageSize=%d%s%s",
                 kb_cli__project(c), collection, GET_PAGE_SIZE,
                 token != NULL ? "&pageToken=" : "", token != NULL ? token : "");
        if (kb_cli__call(c, "GET", path, NULL, &status, &resp) != 0)
            break;
        if (status != 200 || !json_is_object(resp)) {
            kb_cli__api_error(c, status, resp);
            json_decref(resp);
            break;
        }
        page = json_object_get(resp, collection);
        if (page != NULL && (!json_is_array(page)
                             || json_array_extend(items, page) != 0)) {
            fprintf(kb_cli__err(), "kiban: unexpected list response\n");
            json_decref(resp);
            break;
        }
        next = json_string_value(json_object_get(resp, "nextPageToken"));
        if (next == NULL || next[0] == '\0') {
            json_decref(resp);
            rc = KB_CLI_EXIT_OK;
            break;
        }
        if (++pages >= GET_MAX_PAGES || (token && strcmp(token, next) == 0)) {
            fprintf(kb_cli__err(), "kiban: the API keeps returning pages; "
                    "stopped after %d\n", pages);
            json_decref(resp);
            break;
        }
        free(token);
        token = kb_cli__url_escape(next);
        json_decref(resp);
        if (token == NULL || strlen(token) > 1024) {
            fprintf(kb_cli__err(), "kiban: the API returned an unusable page "
                    "token\n");
            break;
        }
    }
    free(token);
    return rc;
}

int
kb_cli__get(kb_cli *c)
{
    const char *format = kb_cli__opt(&c->opts, "output");
    const char *name = c->opts.npos > 1 ? c->opts.pos[1] : NULL;
    const kb_kind *k;
    json_t *result = NULL, *items;
    char path[512];
    long status;
    int rc;

    if (format == NULL)
        format = "table";
    if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0
        && strcmp(format, "yaml") != 0) {
        fprintf(kb_cli__err(), "kiban get: unknown output format \"%s\" (table, "
                "json or yaml); run 'kiban help get'\n", format);
        return KB_CLI_EXIT_USAGE;
    }
    if ((rc = kind_and_name(c, "get", &k)) != KB_CLI_EXIT_OK)
        return rc;

    if (name != NULL) {
        snprintf(path, sizeof(path), "/v1/projects/%s/%s/%s", kb_cli__project(c),
                 k->collection, name);
        if (kb_cli__call(c, "GET", path, NULL, &status, &result) != 0)
            return KB_CLI_EXIT_FAIL;
        if (status != 200 || !json_is_object(result)) {
            kb_cli__api_error(c, status, result);
            json_decref(result);
            return KB_CLI_EXIT_FAIL;
        }
        if (strcmp(format, "table") != 0) {
            rc = kb_cli__print_value(result, format);
        } else if ((items = json_array()) == NULL
                   || json_array_append(items, result) != 0) {
            json_decref(items);
            rc = KB_CLI_EXIT_FAIL;
        } else {
            rc = print_table(k, items);
            json_decref(items);
        }
        json_decref(result);
        return rc;
    }

    if ((items = json_array()) == NULL)
        return KB_CLI_EXIT_FAIL;
    if ((rc = kb_cli__list_all(c, k->collection, items)) != KB_CLI_EXIT_OK) {
        json_decref(items);
        return rc;
    }
    if (strcmp(format, "table") == 0) {
        if (json_array_size(items) == 0)
            fprintf(kb_cli__err(), "No %s found in project %s.\n",
                    k->collection, kb_cli__project(c));
        else
            rc = print_table(k, items);
    } else if ((result = json_pack("{s:o}", k->collection, items)) == NULL) {
        rc = KB_CLI_EXIT_FAIL;
    } else {
        items = NULL;                        /* owned by result now */
        rc = kb_cli__print_value(result, format);
        json_decref(result);
    }
    json_decref(items);
    return rc;
}

int
kb_cli__delete(kb_cli *c)
{
    const kb_kind *k;
    json_t *resp = NULL;
    char path[512];
    long status;
    int rc;

    if ((rc = kind_and_name(c, "delete", &k)) != KB_CLI_EXIT_OK)
        return rc;
    snprintf(path, sizeof(path), "/v1/projects/%s/%s/%s", kb_cli__project(c),
             k->collection, c->opts.pos[1]);
    if (kb_cli__call(c, "DELETE", path, NULL, &status, &resp) != 0)
        return KB_CLI_EXIT_FAIL;
    if (status < 200 || status > 299) {
        kb_cli__api_error(c, status, resp);
        json_decref(resp);
        return KB_CLI_EXIT_FAIL;
    }
    json_decref(resp);
    fprintf(kb_cli__out(), "%s/%s deleted\n", k->singular, c->opts.pos[1]);
    return KB_CLI_EXIT_OK;
}

int
kb_cli__version(kb_cli *c)
{
    json_t *resp = NULL;
    const char *v;
    long status;

    fprintf(kb_cli__out(), "kiban %s\n", KB_VERSION);
    fflush(kb_cli__out());
    c->quiet = true;                  /* a server that is down is no error */
    if (kb_cli__call(c, "GET", "/v1/version", NULL, &status, &resp) == 0
        && status == 200
        && (v = json_string_value(json_object_get(resp, "version"))) != NULL) {
        char text[128];
        snprintf(text, sizeof(text), "%s", v);
        kb_cli__cell_clean(text);
        fprintf(kb_cli__out(), "server %s (%s)\n", text, c->api);
    }
    json_decref(resp);
    return KB_CLI_EXIT_OK;
}

/* ---- ages ------------------------------------------------------------------------ */

/* Parse "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" to a time_t. */
static bool
parse_rfc3339(const char *s, time_t *out)
{
    struct tm tm;
    const char *p;
    long off = 0;
    char *end;

    memset(&tm, 0, sizeof(tm));
    if (s == NULL || (p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
        return false;
    if (*p == '.') {
        strtol(p + 1, &end, 10);
        if (end == p + 1)
            return false;
        p = end;
    }
    if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || strlen(p) != 6)
            return false;
        off = sign * (hh * 3600L + mm * 60L);
    } else if (strcmp(p, "Z") != 0 && strcmp(p, "z") != 0) {
        return false;
    }
    *out = timegm(&tm) - off;
    return true;
}

void
kb_cli__age(const char *rfc3339, time_t now, char *buf, size_t len)
{
    time_t t;
    long long s;

    if (!parse_rfc3339(rfc3339, &t)) {
        snprintf(buf, len, "-");
        return;
    }
    s = (long long)(now - t);
    if (s < 0)
        s = 0;                               /* clocks disagree a little */
    if (s < 120)
        snprintf(buf, len, "%llds", s);
    else if (s < 3 * 3600)
        snprintf(buf, len, "%lldm", s / 60);
    else if (s < 48 * 3600)
        snprintf(buf, len, "%lldh", s / 3600);
    else if (s < 2 * 365 * 86400LL)
        snprintf(buf, len, "%lldd", s / 86400);
    else
        snprintf(buf, len, "%lldy", s / (365 * 86400LL));
}
