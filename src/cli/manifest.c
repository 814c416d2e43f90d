/*
 * manifest.c - loading and checking manifests for `kiban apply`.
 *
 * Every document of every file is checked against the kinds table before
 * anything is sent, and every error names FILE:LINE and the dotted field
 * (lines come from the YAML line map).  Then the CLI-only fields are
 * resolved: a field "xFile" names a YAML/JSON file, relative to the
 * manifest's directory, whose content is sent as "x" (Gateway openapiFile).
 * No I/O but reading files; no network.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANIFEST_MAX_FILE   ((size_t)16 << 20)
#define MANIFEST_MAX_ERRORS ((size_t)1 << 20)   /* bytes of error text */

static const char *const top_keys[] = {
    "apiVersion", "kind", "metadata", "spec", NULL
};
static const char *const metadata_keys[] = { "name", "project", NULL };

void
kb_cli__mset_init(kb_cli_mset *m)
{
    memset(m, 0, sizeof(*m));
    kb_buf_init(&m->errors, MANIFEST_MAX_ERRORS);
}

void
kb_cli__mset_free(kb_cli_mset *m)
{
    for (size_t i = 0; i < m->nitems; i++)
        json_decref(m->items[i].spec);
    free(m->items);
    for (size_t i = 0; i < m->nsrc; i++) {
        free(m->src[i].name);
        free(m->src[i].dir);
        kb_yaml_docs_free(m->src[i].docs, m->src[i].ndocs);
    }
    free(m->src);
    kb_buf_free(&m->errors);
    memset(m, 0, sizeof(*m));
}

/* Record "FILE:LINE: FIELD: reason" (no FIELD if NULL or "").  LINE 0:
 * "FILE: reason"; LINE -1: "FILE:reason", the reason starting with a
 * YAML error's "LINE:COL: ". */
static void
add_error(kb_cli_mset *m, const char *file, int line, const char *field,
          const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
add_error(kb_cli_mset *m, const char *file, int line, const char *field,
          const char *fmt, ...)
{
    va_list ap;

    if (m->nerrors++ >= KB_CLI_MAX_ERRORS)
        return;
    if (line > 0)
        kb_buf_appendf(&m->errors, "%s:%d: ", file, line);
    else if (line == 0)
        kb_buf_appendf(&m->errors, "%s: ", file);
    else
        kb_buf_appendf(&m->errors, "%s:", file);   /* the text has LINE:COL */
    if (field != NULL && field[0] != '\0')
        kb_buf_appendf(&m->errors, "%s: ", field);
    va_start(ap, fmt);
    kb_buf_vappendf(&m->errors, fmt, ap);
    va_end(ap);
    kb_buf_appendc(&m->errors, '\n');
}

int
kb_cli__mset_add_text(kb_cli_mset *m, const char *name, const char *dir,
                      const char *text, size_t len)
{
    kb_cli_source *s, *ns;
    char err[512];

    ns = realloc(m->src, (m->nsrc + 1) * sizeof(*ns));
    if (ns == NULL)
        return KB_ENOMEM;
    m->src = ns;
    s = &m->src[m->nsrc];
    memset(s, 0, sizeof(*s));
    s->name = strdup(name);
    s->dir = strdup(dir);
    if (s->name == NULL || s->dir == NULL) {
        free(s->name);
        free(s->dir);
        return KB_ENOMEM;
    }
    m->nsrc++;
    if (kb_yaml_parse(text, len, &s->docs, &s->ndocs, err, sizeof(err)) != 0)
        add_error(m, name, -1, NULL, "%s", err);  /* err is "LINE:COL: …" */
    else if (s->ndocs == 0)
        add_error(m, name, 0, NULL, "no documents");
    return 0;
}

/* Read all of fd into b (at most MANIFEST_MAX_FILE).  -errno/KB_ETOOBIG. */
static int
read_all(int fd, kb_buf *b)
{
    char chunk[65536];

    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        int rc;
        if (n == 0)
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if ((rc = kb_buf_append(b, chunk, (size_t)n)) != 0)
            return rc;
    }
}

int
kb_cli__mset_add_file(kb_cli_mset *m, const char *path)
{
    kb_buf text = KB_BUF_INIT(MANIFEST_MAX_FILE);
    const char *name = path, *slash;
    char *dir;
    int fd, rc;

    if (strcmp(path, "-") == 0) {
        name = "<stdin>";
        fd = STDIN_FILENO;
    } else if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        add_error(m, path, 0, NULL, "cannot open: %s", strerror(errno));
        return 0;
    }
    rc = read_all(fd, &text);
    if (fd != STDIN_FILENO)
        close(fd);
    if (rc != 0) {
        add_error(m, name, 0, NULL, "cannot read: %s", rc == KB_ETOOBIG
                  ? "larger than 16 MiB" : strerror(-rc));
        kb_buf_free(&text);
        return rc == KB_ENOMEM ? rc : 0;
    }
    /* relative paths inside a manifest are relative to its directory */
    slash = strrchr(path, '/');
    if (fd == STDIN_FILENO || slash == NULL)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL) {
        kb_buf_free(&text);
        return KB_ENOMEM;
    }
    rc = kb_cli__mset_add_text(m, name, dir, kb_buf_cstr(&text), text.len);
    free(dir);
    kb_buf_free(&text);
    return rc;
}

static bool
in_list(const char *key, const char *const *list)
{
    for (; *list != NULL; list++)
        if (strcmp(key, *list) == 0)
            return true;
    return false;
}

static const kb_kind *
kind_exact(const char *name)
{
    for (const kb_kind *const *k = kb_kinds; *k != NULL; k++)
        if (strcmp((*k)->kind, name) == 0)
            return *k;
    return NULL;
}

static void
kind_names(char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (const kb_kind *const *k = kb_kinds; *k != NULL && off < len; k++) {
        int n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "",
                         (*k)->kind);
        if (n < 0)
            break;
        off += (size_t)n;
    }
}

/* A copy of the spec without null members (null means "not set"). */
static json_t *
spec_copy(const json_t *spec)
{
    json_t *out = json_object(), *v;
    const char *k;

    if (out == NULL)
        return NULL;
    json_object_foreach((json_t *)spec, k, v) {
        if (!json_is_null(v) && json_object_set(out, k, v) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/*
 * Check one document; append it to m->items if it is good.  At most one
 * error per document (the first), so one mistake is not reported ten times.
 */
static int
check_doc(kb_cli_mset *m, const kb_cli_source *s, const kb_yaml_doc *d,
          const char *flag_project)
{
    const json_t *root = kb_yaml_doc_root(d), *v, *meta, *spec;
    const char *file = s->name, *key, *kind_name, *name, *project;
    const kb_kind *k;
    char field[256], err[512], path[300], names[128];
    kb_cli_manifest *it, *ni;

#define LINE(p) kb_yaml_line(d, (p))
    if (!json_is_object(root)) {
        add_error(m, file, kb_yaml_doc_line(d), NULL, "a manifest must be a "
                  "mapping with kind, metadata and spec");
        return 0;
    }
    json_object_foreach((json_t *)root, key, v) {
        if (!in_list(key, top_keys)) {
            add_error(m, file, LINE(key), key, "unknown field (expected "
                      "apiVersion, kind, metadata, spec)");
            return 0;
        }
    }
    if ((v = json_object_get(root, "apiVersion")) != NULL
        && (!json_is_string(v) || strcmp(json_string_value(v), "kiban/v1") != 0)) {
        add_error(m, file, LINE("apiVersion"), "apiVersion",
                  "must be kiban/v1");
        return 0;
    }

    kind_names(names, sizeof(names));
    v = json_object_get(root, "kind");
    if (v == NULL || json_is_null(v)) {
        add_error(m, file, LINE("kind"), "kind", "is required (one of %s)",
                  names);
        return 0;
    }
    if ((kind_name = json_string_value(v)) == NULL) {
        add_error(m, file, LINE("kind"), "kind", "must be a string (one of %s)",
                  names);
        return 0;
    }
    if ((k = kind_exact(kind_name)) == NULL) {
        const kb_kind *near = kb_kind_find(kind_name);
        if (near != NULL)
            add_error(m, file, LINE("kind"), "kind", "unknown kind \"%s\" (did "
                      "you mean %s?)", kind_name, near->kind);
        else
            add_error(m, file, LINE("kind"), "kind", "unknown kind \"%s\" "
                      "(known: %s)", kind_name, names);
        return 0;
    }

    meta = json_object_get(root, "metadata");
    if (meta == NULL || json_is_null(meta)) {
        add_error(m, file, LINE("metadata"), "metadata", "is required (with "
                  "a name)");
        return 0;
    }
    if (!json_is_object(meta)) {
        add_error(m, file, LINE("metadata"), "metadata", "must be a mapping");
        return 0;
    }
    json_object_foreach((json_t *)meta, key, v) {
        if (!in_list(key, metadata_keys)) {
            snprintf(path, sizeof(path), "metadata.%s", key);
            add_error(m, file, LINE(path), path, "unknown field (expected "
                      "name, project)");
            return 0;
        }
    }
    v = json_object_get(meta, "name");
    if (v == NULL || json_is_null(v)) {
        add_error(m, file, LINE("metadata.name"), "metadata.name",
                  "is required");
        return 0;
    }
    if ((name = json_string_value(v)) == NULL || !kb_name_valid(name)) {
        add_error(m, file, LINE("metadata.name"), "metadata.name",
                  "%s%s%s is not a valid name (lowercase letters, digits and "
                  "'-', starting with a letter, at most 63 characters)",
                  name ? "\"" : "", name ? name : "the value", name ? "\"" : "");
        return 0;
    }
    project = flag_project != NULL ? flag_project : "default";
    v = json_object_get(meta, "project");
    if (v != NULL && !json_is_null(v)) {
        const char *p = json_string_value(v);
        if (p == NULL || !kb_name_valid(p)) {
            add_error(m, file, LINE("metadata.project"), "metadata.project",
                      "%s%s%s is not a valid project name (lowercase letters, "
                      "digits and '-', starting with a letter)", p ? "\"" : "",
                      p ? p : "the value", p ? "\"" : "");
            return 0;
        }
        if (flag_project != NULL && strcmp(p, flag_project) != 0) {
            add_error(m, file, LINE("metadata.project"), "metadata.project",
                      "\"%s\" differs from --project %s", p, flag_project);
            return 0;
        }
        project = p;
    }

    spec = json_object_get(root, "spec");
    if (spec == NULL || json_is_null(spec)) {
        add_error(m, file, LINE("spec"), "spec", "is required");
        return 0;
    }
    if (!json_is_object(spec)) {
        add_error(m, file, LINE("spec"), "spec", "must be a mapping");
        return 0;
    }
    if (kb_kind_check(k, spec, true, field, sizeof(field), err,
                      sizeof(err)) != 0) {
        snprintf(path, sizeof(path), field[0] ? "spec.%s" : "spec", field);
        add_error(m, file, LINE(path), path, "%s", err);
        return 0;
    }

    for (size_t i = 0; i < m->nitems; i++) {
        it = &m->items[i];
        if (it->kind == k && strcmp(it->project, project) == 0
            && strcmp(it->name, name) == 0) {
            add_error(m, file, LINE("metadata.name"), "metadata.name",
                      "%s/%s is declared twice (also at %s:%d)", k->singular,
                      name, it->file, kb_yaml_line(it->doc, "metadata.name"));
            return 0;
        }
    }
#undef LINE

    ni = realloc(m->items, (m->nitems + 1) * sizeof(*ni));
    if (ni == NULL)
        return KB_ENOMEM;
    m->items = ni;
    it = &m->items[m->nitems];
    memset(it, 0, sizeof(*it));
    it->kind = k;
    snprintf(it->project, sizeof(it->project), "%s", project);
    snprintf(it->name, sizeof(it->name), "%s", name);
    it->file = s->name;
    it->dir = s->dir;
    it->doc = d;
    if ((it->spec = spec_copy(spec)) == NULL)
        return KB_ENOMEM;
    m->nitems++;
    return 0;
}

/*
 * Replace each CLI-only field "xFile" of a checked manifest with "x", the
 * content of the file it names.  Errors point at the "xFile" line.
 */
static int
resolve(kb_cli_mset *m, kb_cli_manifest *it)
{
    const kb_kind *k = it->kind;
    char path[300], file[4096], err[1024], field[256];

    for (size_t i = 0; i < k->nfields; i++) {
        const kb_field *f = &k->fields[i];
        const char *rel;
        char target[128];
        size_t n = strlen(f->name);
        json_t *content;
        int rc;

        if (!f->cli_only || (rel = json_string_value(
                                 json_object_get(it->spec, f->name))) == NULL)
            continue;
        snprintf(path, sizeof(path), "spec.%s", f->name);
        if (n <= 4 || strcmp(f->name + n - 4, "File") != 0
            || n - 4 >= sizeof(target)) {
            add_error(m, it->file, kb_yaml_line(it->doc, path), path,
                      "the CLI cannot resolve this field");
            return 0;
        }
        snprintf(target, sizeof(target), "%.*s", (int)(n - 4), f->name);
        if (rel[0] == '\0') {
            add_error(m, it->file, kb_yaml_line(it->doc, path), path,
                      "must name a file");
            return 0;
        }
        if (rel[0] == '/')
            snprintf(file, sizeof(file), "%s", rel);
        else
            snprintf(file, sizeof(file), "%s/%s", it->dir, rel);
        rc = kb_yaml_load_file(file, &content, err, sizeof(err));
        if (rc == KB_ENOMEM)
            return rc;
        if (rc != 0) {
            add_error(m, it->file, kb_yaml_line(it->doc, path), path,
                      "cannot load %s", err);
            return 0;
        }
        if (json_object_del(it->spec, f->name) != 0
            || json_object_set_new(it->spec, target, content) != 0)
            return KB_ENOMEM;
        /* what is sent must pass the check the API makes */
        if (kb_kind_check(k, it->spec, false, field, sizeof(field), err,
                          sizeof(err)) != 0) {
            add_error(m, it->file, kb_yaml_line(it->doc, path), path,
                      "%s: %s %s", file, field, err);
            return 0;
        }
    }
    return 0;
}

size_t
kb_cli__mset_check(kb_cli_mset *m, const char *project)
{
    for (size_t i = 0; i < m->nsrc; i++) {
        for (size_t j = 0; j < m->src[i].ndocs; j++) {
            size_t had = m->nitems;
            int rc = check_doc(m, &m->src[i], m->src[i].docs[j], project);
            if (rc == 0 && m->nitems > had)
                rc = resolve(m, &m->items[had]);
            if (rc != 0) {
                add_error(m, m->src[i].name, 0, NULL, "out of memory");
                return m->nerrors;
            }
        }
    }
    return m->nerrors;
}

/* Absent, null, "", [] and {} all mean "not set". */
static bool
unset(const json_t *v)
{
    return v == NULL || json_is_null(v)
           || (json_is_string(v) && json_string_length(v) == 0)
           || (json_is_array(v) && json_array_size(v) == 0)
           || (json_is_object(v) && json_object_size(v) == 0);
}

/* Fields an update that leaves them out keeps as stored (a Service's
 * traffic split, changed by `kiban services update-traffic`). */
static const struct { const char *collection, *field; } kept_fields[] = {
    { "services", "traffic" },
};

static bool
kept_when_omitted(const kb_kind *k, const char *field)
{
    for (size_t i = 0; i < sizeof(kept_fields) / sizeof(kept_fields[0]); i++)
        if (strcmp(kept_fields[i].collection, k->collection) == 0
            && strcmp(kept_fields[i].field, field) == 0)
            return true;
    return false;
}

bool
kb_cli__spec_differs(const kb_kind *k, const json_t *desired,
                     const json_t *live)
{
    for (size_t i = 0; i < k->nfields; i++) {
        const kb_field *f = &k->fields[i];
        const json_t *d = json_object_get(desired, f->name);
        const json_t *l = json_object_get(live, f->name);

        if (f->cli_only || f->variant == KB_FIELD_UNCHECKED)
            continue;                      /* never sent, or output-only */
        if (unset(d) && unset(l))
            continue;
        if (unset(d) && kept_when_omitted(k, f->name))
            continue;
        if (unset(d) || unset(l) || !json_equal((json_t *)d, (json_t *)l))
            return true;
    }
    return false;
}
