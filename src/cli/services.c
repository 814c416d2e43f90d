/*
 * services.c - `kiban services …` and `kiban revisions …`: gcloud run's
 * services and revisions commands (list, describe, delete,
 * update-traffic) on the admin API, with a readable summary of a
 * service's traffic split and revisions.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SVC_MAX_ROWS  1024           /* rows of a traffic or revision table */

/* One subcommand: its arguments after the subcommand and the verb flags
 * it accepts (the others are refused). */
typedef struct svc_sub {
    const char *name;
    int         min_args, max_args;    /* after the subcommand */
    const char *usage;
    const char *flags[10];             /* NULL-terminated */
    bool        revision;              /* a revisions subcommand: needs
                                          --service, its argument is a
                                          revision name */
    int (*run)(kb_cli *c);
} svc_sub;

/* ---- update-traffic's body (pure) -------------------------------------------- */

/* Split "a=1,b=2" (each value of a repeated flag) into obj: values as
 * percents (0..100) when percent, else strings. */
static int
pairs(const kb_cli_opts *o, const char *flag, bool percent, json_t *obj,
      char *err, size_t errlen)
{
    const char *vals[KB_CLI_MAX_ARGS];
    size_t n = kb_cli__opt_all(o, flag, vals, KB_CLI_MAX_ARGS);

    for (size_t i = 0; i < n; i++) {
        const char *p = vals[i];
        for (;;) {
            size_t len = strcspn(p, ","), klen;
            const char *eq = memchr(p, '=', len);
            char key[128], val[128];
            long long pct;

            klen = eq != NULL ? (size_t)(eq - p) : 0;
            if (eq == NULL || klen == 0 || klen >= sizeof(key)
                || len - klen - 1 == 0 || len - klen - 1 >= sizeof(val)) {
                snprintf(err, errlen, "--%s \"%s\": want %s=%s[,...]", flag,
                         vals[i], percent ? "NAME" : "TAG",
                         percent ? "PERCENT" : "REVISION");
                return KB_EINVAL;
            }
            memcpy(key, p, klen);
            key[klen] = '\0';
            memcpy(val, eq + 1, len - klen - 1);
            val[len - klen - 1] = '\0';
            if (json_object_get(obj, key) != NULL) {
                snprintf(err, errlen, "--%s: \"%s\" given twice", flag, key);
                return KB_EINVAL;
            }
            if (percent) {
                if (kb_cli__int_in(val, 0, 100, &pct) != 0) {
                    snprintf(err, errlen, "--%s: \"%s\" is not a percent "
                             "(0 to 100)", flag, val);
                    return KB_EINVAL;
                }
                json_object_set_new(obj, key, json_integer(pct));
            } else {
                json_object_set_new(obj, key, json_string(val));
            }
            if (p[len] == '\0')
                break;
            p += len + 1;
        }
    }
    return 0;
}

int
kb_cli__traffic_body(const kb_cli_opts *o, json_t **out, char *err,
                     size_t errlen)
{
    static const struct { const char *flag, *field; bool percent; } maps[] = {
        { "to-revisions", "toRevisions", true },
        { "to-tags",      "toTags",      true },
        { "set-tags",     "setTags",     false },
        { "update-tags",  "updateTags",  false },
    };
    const char *vals[KB_CLI_MAX_ARGS];
    json_t *body = json_object();
    long long sum = 0;
    size_t n;
    int rc;

    *out = NULL;
    if (body == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        json_t *obj = json_object();
        const char *k;
        json_t *v;
        if ((rc = pairs(o, maps[i].flag, maps[i].percent, obj, err,
                        errlen)) != 0) {
            json_decref(obj);
            goto out_free;
        }
        if (maps[i].percent)
            json_object_foreach(obj, k, v)
                sum += json_integer_value(v);
        if (json_object_size(obj) > 0)
            json_object_set_new(body, maps[i].field, obj);
        else
            json_decref(obj);
    }
    if (sum > 100) {
        snprintf(err, errlen, "--to-revisions and --to-tags give %lld percent "
                 "in all; at most 100", sum);
        rc = KB_EINVAL;
        goto out_free;
    }
    if (kb_cli__opt(o, "to-latest") != NULL) {
        if (json_object_get(body, "toRevisions") != NULL
            || json_object_get(body, "toTags") != NULL) {
            snprintf(err, errlen, "--to-latest cannot be combined with "
                     "--to-revisions or --to-tags");
            rc = KB_EINVAL;
            goto out_free;
        }
        json_object_set_new(body, "toLatest", json_true());
    }
    n = kb_cli__opt_all(o, "remove-tags", vals, KB_CLI_MAX_ARGS);
    if (n > 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++) {
            const char *p = vals[i];
            for (;;) {
                size_t len = strcspn(p, ",");
                if (len == 0) {
                    snprintf(err, errlen, "--remove-tags \"%s\": want "
                             "TAG[,TAG...]", vals[i]);
                    json_decref(list);
                    rc = KB_EINVAL;
                    goto out_free;
                }
                json_array_append_new(list, json_stringn(p, len));
                if (p[len] == '\0')
                    break;
                p += len + 1;
            }
        }
        json_object_set_new(body, "removeTags", list);
    }
    if (kb_cli__opt(o, "clear-tags") != NULL) {
        if (json_object_get(body, "setTags") != NULL) {
            snprintf(err, errlen, "--clear-tags cannot be combined with "
                     "--set-tags");
            rc = KB_EINVAL;
            goto out_free;
        }
        json_object_set_new(body, "clearTags", json_true());
    }
    if (json_object_size(body) == 0) {
        snprintf(err, errlen, "give at least one of --to-revisions, --to-tags, "
                 "--to-latest, --set-tags, --update-tags, --remove-tags, "
                 "--clear-tags");
        rc = KB_EINVAL;
        goto out_free;
    }
    *out = body;
    return 0;

out_free:
    json_decref(body);
    return rc;
}

/* ---- printing ------------------------------------------------------------------- */

/* The last segment of a resource name ("projects/p/services/s" → "s"). */
static const char *
base_name(const char *name)
{
    const char *slash = name != NULL ? strrchr(name, '/') : NULL;

    return slash != NULL ? slash + 1 : name;
}

static bool
traffic_pinned(const json_t *svc)
{
    const json_t *traffic = json_object_get(svc, "traffic"), *t;
    size_t i;

    if (!json_is_array(traffic))
        return false;                  /* not stated: all to the latest */
    json_array_foreach(traffic, i, t)
        if (json_is_true(json_object_get(t, "latestRevision")))
            return false;
    return true;
}

/* The traffic table: the runtime's resolved split when it has one, else
 * the service's own traffic entries. */
static int
print_traffic(const json_t *svc)
{
    const json_t *traffic = json_object_get(json_object_get(svc, "status"),
                                            "traffic"), *t;
    const char **cells;
    char (*pct)[16], (*revs)[300];
    size_t n, i;
    int rc;

    if (json_array_size(traffic) == 0)
        traffic = json_object_get(svc, "traffic");
    n = json_array_size(traffic);
    if (n > SVC_MAX_ROWS)
        n = SVC_MAX_ROWS;
    cells = calloc((n + 1) * 4, sizeof(*cells));
    pct = calloc(n + 1, sizeof(*pct));
    revs = calloc(n + 1, sizeof(*revs));
    if (cells == NULL || pct == NULL || revs == NULL) {
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    cells[0] = "PERCENT";
    cells[1] = "REVISION";
    cells[2] = "TAG";
    cells[3] = "URL";
    for (i = 0; i < n; i++) {
        const char **row = cells + (i + 1) * 4;
        const char *rev;
        t = json_array_get(traffic, i);
        rev = json_string_value(json_object_get(t, "revisionName"));
        snprintf(pct[i], sizeof(pct[i]), "%lld%%",
                 (long long)json_integer_value(json_object_get(t, "percent")));
        if (json_is_true(json_object_get(t, "latestRevision")))
            snprintf(revs[i], sizeof(revs[i]), "LATEST%s%s%s",
                     rev ? " (" : "", rev ? rev : "", rev ? ")" : "");
        else
            snprintf(revs[i], sizeof(revs[i]), "%s", rev ? rev : "-");
        row[0] = pct[i];
        row[1] = revs[i];
        row[2] = json_string_value(json_object_get(t, "tag"));
        row[3] = json_string_value(json_object_get(t, "url"));
    }
    fprintf(kb_cli__out(), "Traffic:\n");
    rc = kb_cli__print_rows("  ", cells, 4, n);

out_free:
    free(cells);
    free(pct);
    free(revs);
    return rc;
}

static void
print_pinned(const json_t *svc, const char *name)
{
    if (traffic_pinned(svc))
        fprintf(kb_cli__out(), "\nTraffic is pinned: new revisions get no "
                "traffic until `kiban services update-traffic %s "
                "--to-latest`.\n", name);
}

/* A revision's readiness, and its instances as READY/RUNNING, from its
 * API view's status ("instances" is a list or a count; else "desired"). */
static void
revision_state(const json_t *r, char *ready, size_t rlen, char *inst,
               size_t ilen)
{
    const json_t *st = json_object_get(r, "status");
    const json_t *rd = json_object_get(st, "ready");
    const json_t *ri = json_object_get(st, "readyInstances");
    const json_t *in = json_object_get(st, "instances");
    long long total = -1;

    if (json_is_boolean(rd))
        snprintf(ready, rlen, "%s", json_is_true(rd) ? "true" : "false");
    else if (json_is_integer(rd))
        snprintf(ready, rlen, "%s", json_integer_value(rd) > 0 ? "true"
                                                                 : "false");
    else
        snprintf(ready, rlen, "-");
    if (json_is_array(in))
        total = (long long)json_array_size(in);
    else if (json_is_integer(in))
        total = json_integer_value(in);
    else if (json_is_integer(json_object_get(st, "desired")))
        total = json_integer_value(json_object_get(st, "desired"));
    if (json_is_integer(ri) && total >= 0)
        snprintf(inst, ilen, "%lld/%lld", (long long)json_integer_value(ri),
                 total);
    else if (total >= 0)
        snprintf(inst, ilen, "%lld", total);
    else
        snprintf(inst, ilen, "-");
}

/* Revisions (API view, newest first) as REVISION READY INSTANCES TRAFFIC
 * TAGS AGE. */
static int
print_revisions(const json_t *revs, const char *indent)
{
    enum { NC = 6 };
    size_t n = json_array_size(revs), i;
    const char **cells;
    char (*text)[5][128];            /* ready, instances, traffic, tags, age */
    time_t now = time(NULL);
    int rc;

    if (n > SVC_MAX_ROWS)
        n = SVC_MAX_ROWS;
    cells = calloc((n + 1) * NC, sizeof(*cells));
    text = calloc(n + 1, sizeof(*text));
    if (cells == NULL || text == NULL) {
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    cells[0] = "REVISION";
    cells[1] = "READY";
    cells[2] = "INSTANCES";
    cells[3] = "TRAFFIC";
    cells[4] = "TAGS";
    cells[5] = "AGE";
    for (i = 0; i < n; i++) {
        const json_t *r = json_array_get(revs, i), *tr, *tag;
        const char **row = cells + (i + 1) * NC;
        const char *name = json_string_value(json_object_get(r, "revision"));
        char *tags = text[i][3];
        size_t off = 0, j;

        tr = json_object_get(r, "traffic");
        revision_state(r, text[i][0], sizeof(text[i][0]), text[i][1],
                       sizeof(text[i][1]));
        snprintf(text[i][2], sizeof(text[i][2]), "%lld%%",
                 (long long)json_integer_value(json_object_get(tr, "percent")));
        json_array_foreach(json_object_get(tr, "tags"), j, tag) {
            if (json_is_string(tag) && off < sizeof(text[i][3]))
                off += (size_t)snprintf(tags + off, sizeof(text[i][3]) - off,
                                        "%s%s", off ? "," : "",
                                        json_string_value(tag));
        }
        kb_cli__age(json_string_value(json_object_get(r, "createTime")), now,
                    text[i][4], sizeof(text[i][4]));
        row[0] = name != NULL ? name
                 : base_name(json_string_value(json_object_get(r, "name")));
        for (int k = 0; k < 5; k++)
            row[k + 1] = text[i][k];
    }
    rc = kb_cli__print_rows(indent, cells, NC, n);

out_free:
    free(cells);
    free(text);
    return rc;
}

/* ---- API helpers ------------------------------------------------------------------ */

/* One call to the path printf-formatted from fmt that must answer 2xx
 * with a JSON object: 0 with *resp (the caller's; dropped when resp is
 * NULL), or an exit code with the error printed. */
static int __attribute__((format(printf, 5, 6)))
call_ok(kb_cli *c, const char *method, const json_t *body, json_t **resp,
        const char *fmt, ...)
{
    char path[512];
    json_t *got = NULL;
    long status;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    if (resp != NULL)
        *resp = NULL;
    if (kb_cli__call(c, method, path, body, &status, &got) != 0)
        return KB_CLI_EXIT_FAIL;
    if (status < 200 || status > 299 || !json_is_object(got)) {
        kb_cli__api_error(c, status, got);
        json_decref(got);
        return KB_CLI_EXIT_FAIL;
    }
    if (resp != NULL)
        *resp = got;
    else
        json_decref(got);
    return 0;
}

/* -o: NULL (the readable summary), "json" or "yaml"; else usage error. */
static int
output_format(const kb_cli *c, const char *verb, const char **fmt)
{
    const char *f = kb_cli__opt(&c->opts, "output");

    *fmt = NULL;
    if (f == NULL || strcmp(f, "table") == 0)
        return 0;
    if (strcmp(f, "json") == 0 || strcmp(f, "yaml") == 0) {
        *fmt = f;
        return 0;
    }
    fprintf(kb_cli__err(), "kiban %s: unknown output format \"%s\" (table, "
            "json or yaml); run 'kiban help %s'\n", verb, f, verb);
    return KB_CLI_EXIT_USAGE;
}

static int
name_arg(const char *verb, const char *what, const char *name)
{
    if (kb_name_valid(name))
        return 0;
    fprintf(kb_cli__err(), "kiban %s: \"%s\" is not a valid %s name; run "
            "'kiban help %s'\n", verb, name, what, verb);
    return KB_CLI_EXIT_USAGE;
}

/* SERVICE-NNNNN-xxx: a-z, 0-9 and '-', at most 100 bytes. */
static bool
revision_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 100 || s[0] < 'a' || s[0] > 'z')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '-'))
            return false;
    return true;
}

/* GET …/services/S/revisions into *revs (new reference). */
static int
get_revisions(kb_cli *c, const char *svc, json_t **revs)
{
    json_t *resp;
    int rc;

    *revs = NULL;
    if ((rc = call_ok(c, "GET", NULL, &resp, "/v1/projects/%s/services/%s/"
                      "revisions", kb_cli__project(c), svc)) != 0)
        return rc;
    *revs = json_incref(json_object_get(resp, "revisions"));
    json_decref(resp);
    if (*revs == NULL)
        *revs = json_array();
    return 0;
}

/* ---- services ---------------------------------------------------------------------- */

static int
services_list(kb_cli *c)
{
    json_t *items = json_array(), *s;
    const char *fmt, **cells = NULL;
    size_t n, i;
    int rc;

    if ((rc = output_format(c, "services", &fmt)) != 0)
        goto out_free;
    if ((rc = kb_cli__list_all(c, "services", items)) != 0)
        goto out_free;
    if (fmt != NULL) {
        json_t *wrap = json_pack("{s:O}", "services", items);
        rc = wrap != NULL ? kb_cli__print_value(wrap, fmt) : KB_CLI_EXIT_FAIL;
        json_decref(wrap);
        goto out_free;
    }
    if ((n = json_array_size(items)) == 0) {
        fprintf(kb_cli__err(), "No services found in project %s.\n",
                kb_cli__project(c));
        goto out_free;
    }
    if ((cells = calloc((n + 1) * 4, sizeof(*cells))) == NULL) {
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    cells[0] = "SERVICE";
    cells[1] = "URL";
    cells[2] = "LATEST READY";
    cells[3] = "TRAFFIC";
    json_array_foreach(items, i, s) {
        const json_t *st = json_object_get(s, "status");
        const char **row = cells + (i + 1) * 4;
        row[0] = base_name(json_string_value(json_object_get(s, "name")));
        row[1] = json_string_value(json_object_get(st, "url"));
        row[2] = json_string_value(json_object_get(st,
                                                   "latestReadyRevisionName"));
        row[3] = traffic_pinned(s) ? "pinned" : "latest";
    }
    rc = kb_cli__print_rows("", cells, 4, n);

out_free:
    free(cells);
    json_decref(items);
    return rc;
}

static int
services_describe(kb_cli *c)
{
    const char *name = c->opts.pos[1], *fmt;
    json_t *svc = NULL, *revs = NULL;
    const json_t *st;
    FILE *out = kb_cli__out();
    int rc;

    if ((rc = output_format(c, "services", &fmt)) != 0)
        return rc;
    if ((rc = call_ok(c, "GET", NULL, &svc, "/v1/projects/%s/services/%s",
                      kb_cli__project(c), name)) != 0)
        return rc;
    if (fmt != NULL) {
        rc = kb_cli__print_value(svc, fmt);
        goto out_free;
    }
    st = json_object_get(svc, "status");
#define FIELD(o, k) (json_string_value(json_object_get(o, k)) != NULL \
                     ? json_string_value(json_object_get(o, k)) : "-")
    fprintf(out, "Service %s in project %s\n", name, kb_cli__project(c));
    fprintf(out, "URL:                      %s\n", FIELD(st, "url"));
    fprintf(out, "Latest created revision:  %s\n",
            FIELD(st, "latestCreatedRevisionName"));
    fprintf(out, "Latest ready revision:    %s\n",
            FIELD(st, "latestReadyRevisionName"));
    fprintf(out, "Command:                  %s\n", FIELD(svc, "command"));
#undef FIELD
    fputc('\n', out);
    if ((rc = print_traffic(svc)) != 0)
        goto out_free;
    print_pinned(svc, name);
    if ((rc = get_revisions(c, name, &revs)) != 0)
        goto out_free;
    fprintf(out, "\nRevisions:\n");
    rc = print_revisions(revs, "  ");

out_free:
    json_decref(revs);
    json_decref(svc);
    return rc;
}

static int
services_delete(kb_cli *c)
{
    const char *name = c->opts.pos[1];
    int rc = call_ok(c, "DELETE", NULL, NULL, "/v1/projects/%s/services/%s",
                     kb_cli__project(c), name);

    if (rc == 0)
        fprintf(kb_cli__out(), "Service [%s] deleted.\n", name);
    return rc;
}

static int
services_update_traffic(kb_cli *c)
{
    const char *name = c->opts.pos[1];
    json_t *body, *svc;
    char err[512];
    int rc;

    if ((rc = kb_cli__traffic_body(&c->opts, &body, err, sizeof(err))) != 0) {
        fprintf(kb_cli__err(), "kiban services update-traffic: %s; run 'kiban "
                "help services'\n", rc == KB_ENOMEM ? "out of memory" : err);
        return rc == KB_ENOMEM ? KB_CLI_EXIT_FAIL : KB_CLI_EXIT_USAGE;
    }
    rc = call_ok(c, "POST", body, &svc, "/v1/projects/%s/services/%s:"
                 "updateTraffic", kb_cli__project(c), name);
    json_decref(body);
    if (rc != 0)
        return rc;
    rc = print_traffic(svc);
    print_pinned(svc, name);
    json_decref(svc);
    return rc;
}

static const svc_sub services_subs[] = {
    { "list", 0, 0, "services list [-o json|yaml]", { "output", NULL },
      false, services_list },
    { "describe", 1, 1, "services describe SERVICE [-o json|yaml]",
      { "output", NULL }, false, services_describe },
    { "delete", 1, 1, "services delete SERVICE", { NULL }, false,
      services_delete },
    { "update-traffic", 1, 1, "services update-traffic SERVICE [--to-revisions "
      "R=P,...] [--to-tags T=P,...] [--to-latest] [--set-tags T=R,...] "
      "[--update-tags T=R,...] [--remove-tags T,...] [--clear-tags]",
      { "to-revisions", "to-tags", "to-latest", "set-tags", "update-tags",
        "remove-tags", "clear-tags", NULL }, false, services_update_traffic },
    { NULL, 0, 0, NULL, { NULL }, false, NULL },
};

/* ---- revisions ------------------------------------------------------------------------ */

static int
revisions_list(kb_cli *c)
{
    const char *svc = kb_cli__opt(&c->opts, "service"), *fmt;
    json_t *revs;
    int rc;

    if ((rc = output_format(c, "revisions", &fmt)) != 0)
        return rc;
    if ((rc = get_revisions(c, svc, &revs)) != 0)
        return rc;
    if (fmt != NULL) {
        json_t *wrap = json_pack("{s:O}", "revisions", revs);
        rc = wrap != NULL ? kb_cli__print_value(wrap, fmt) : KB_CLI_EXIT_FAIL;
        json_decref(wrap);
    } else if (json_array_size(revs) == 0) {
        fprintf(kb_cli__err(), "No revisions found for service %s.\n", svc);
    } else {
        rc = print_revisions(revs, "");
    }
    json_decref(revs);
    return rc;
}

static int
revisions_describe(kb_cli *c)
{
    const char *svc = kb_cli__opt(&c->opts, "service"), *fmt;
    json_t *rev;
    int rc;

    if ((rc = output_format(c, "revisions", &fmt)) != 0)
        return rc;
    if ((rc = call_ok(c, "GET", NULL, &rev, "/v1/projects/%s/services/%s/"
                      "revisions/%s", kb_cli__project(c), svc,
                      c->opts.pos[1])) != 0)
        return rc;
    rc = kb_cli__print_value(rev, fmt != NULL ? fmt : "yaml");
    json_decref(rev);
    return rc;
}

static int
revisions_delete(kb_cli *c)
{
    const char *svc = kb_cli__opt(&c->opts, "service");
    int rc = call_ok(c, "DELETE", NULL, NULL, "/v1/projects/%s/services/%s/"
                     "revisions/%s", kb_cli__project(c), svc, c->opts.pos[1]);

    if (rc == 0)
        fprintf(kb_cli__out(), "Revision [%s] deleted.\n", c->opts.pos[1]);
    return rc;
}

static const svc_sub revisions_subs[] = {
    { "list", 0, 0, "revisions list --service SERVICE [-o json|yaml]",
      { "service", "output", NULL }, true, revisions_list },
    { "describe", 1, 1, "revisions describe REVISION --service SERVICE "
      "[-o json|yaml]", { "service", "output", NULL }, true,
      revisions_describe },
    { "delete", 1, 1, "revisions delete REVISION --service SERVICE",
      { "service", NULL }, true, revisions_delete },
    { NULL, 0, 0, NULL, { NULL }, false, NULL },
};

/* ---- dispatch --------------------------------------------------------------------------- */

static bool
flag_allowed(const svc_sub *s, const char *flag)
{
    for (const kb_cli_flag *g = kb_cli__global_flags; g->name != NULL; g++)
        if (strcmp(g->name, flag) == 0)
            return true;
    for (size_t i = 0; s->flags[i] != NULL; i++)
        if (strcmp(s->flags[i], flag) == 0)
            return true;
    return strcmp(flag, "help") == 0;
}

/* Find the subcommand in pos[0], check its arguments and flags, run it. */
static int
dispatch(kb_cli *c, const char *verb, const svc_sub *subs)
{
    const char *name = c->opts.pos[0];
    int nargs = (int)c->opts.npos - 1;
    const svc_sub *s = subs;

    while (s->name != NULL && strcmp(s->name, name) != 0)
        s++;
    if (s->name == NULL) {
        fprintf(kb_cli__err(), "kiban %s: unknown command \"%s\" (", verb,
                name);
        for (s = subs; s->name != NULL; s++)
            fprintf(kb_cli__err(), "%s%s", s == subs ? "" : ", ", s->name);
        fprintf(kb_cli__err(), "); run 'kiban help %s'\n", verb);
        return KB_CLI_EXIT_USAGE;
    }
    if (nargs < s->min_args || nargs > s->max_args) {
        fprintf(kb_cli__err(), "kiban %s: %s: usage: kiban %s\n", verb,
                nargs < s->min_args ? "missing arguments" : "too many arguments",
                s->usage);
        return KB_CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < c->opts.nset; i++) {
        if (!flag_allowed(s, c->opts.set[i].flag->name)) {
            fprintf(kb_cli__err(), "kiban %s %s: flag --%s does not apply; "
                    "usage: kiban %s\n", verb, s->name,
                    c->opts.set[i].flag->name, s->usage);
            return KB_CLI_EXIT_USAGE;
        }
    }
    if (s->revision) {
        const char *svc = kb_cli__opt(&c->opts, "service");
        if (svc == NULL) {
            fprintf(kb_cli__err(), "kiban %s %s: --service SERVICE is "
                    "required; usage: kiban %s\n", verb, s->name, s->usage);
            return KB_CLI_EXIT_USAGE;
        }
        if (name_arg(verb, "service", svc) != 0)
            return KB_CLI_EXIT_USAGE;
        if (nargs > 0 && !revision_name_ok(c->opts.pos[1])) {
            fprintf(kb_cli__err(), "kiban %s: \"%s\" is not a revision name "
                    "(SERVICE-00001-abc); run 'kiban help %s'\n", verb,
                    c->opts.pos[1], verb);
            return KB_CLI_EXIT_USAGE;
        }
    } else if (nargs > 0 && name_arg(verb, "service", c->opts.pos[1]) != 0) {
        return KB_CLI_EXIT_USAGE;
    }
    return s->run(c);
}

int
kb_cli__services(kb_cli *c)
{
    return dispatch(c, "services", services_subs);
}

int
kb_cli__revisions(kb_cli *c)
{
    return dispatch(c, "revisions", revisions_subs);
}
