/*
 * fuzz_service.c - libFuzzer target for Service documents: the check
 * (kb_runtime_validate), the template parse, and the server-managed
 * revisions and traffic (kb_rt_deploy, kb_rt_update_traffic,
 * kb_rt_revision_delete) run as the API runs them.
 *
 * The input is up to four JSON texts separated by a line "---":
 *   1. the document of a create or update,
 *   2. the stored document it replaces (absent: a create),
 *   3. an :updateTraffic request,
 *   4. options {"noTraffic": bool, "tag": str, "delete": str | index,
 *      "service": str}.
 * Must never crash or leak, and every document a successful deploy, update
 * or delete stores must hold what the API relies on (check_stored); a
 * broken rule aborts with the reason.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "runtime/revision.h"
#include "runtime/runtime.h"
#include "runtime/template.h"

#define FUZZ_MAX_INPUT  (64 * 1024)
#define FUZZ_PARTS      4
#define FUZZ_SEP        "\n---\n"
#define FUZZ_NOW_NS     (1700000000LL * 1000000000LL)
#define FUZZ_MAX_COUNTER 1000000     /* revisions a stored doc has made */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
die(const char *what, const char *why, const json_t *doc)
{
    char *s = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;

    fprintf(stderr, "fuzz_service: %s: %s\n  doc: %s\n", what, why,
            s != NULL ? s : "(none)");
    free(s);
    abort();
}

/* With FUZZ_TRACE set in the environment, say what each step did (to
 * write seeds that reach the later steps). */
static void
trace(const char *step, const char *msg, int rc)
{
    static int on = -1;

    if (on < 0)
        on = getenv("FUZZ_TRACE") != NULL;
    if (on)
        fprintf(stderr, "fuzz_service: %s: %d %s\n", step, rc,
                rc != 0 || strcmp(step, "old document") == 0 ? msg : "");
}

/* Check a document and, when it is valid, parse it: the two must agree. */
static int
check_and_parse(const json_t *doc)
{
    char err[512];
    rt_template t;
    int rc = kb_runtime_validate(doc, err, sizeof(err));
    int prc = kb_rt_template_parse(doc, &t, err, sizeof(err));

    if (prc == 0)
        kb_rt_template_free(&t);
    if (rc == 0 && prc != 0 && prc != KB_ENOMEM)
        die("template parse", "a valid document does not parse", doc);
    return rc;
}

static const char *
rev_name(const json_t *r)
{
    return json_string_value(json_object_get(r, "name"));
}

/* Does a traffic entry name this revision (or, for the newest, point at
 * the latest)?  As retention counts it. */
static bool
is_referenced(const json_t *traffic, const char *name, bool newest)
{
    const json_t *e;
    size_t i;

    json_array_foreach(traffic, i, e) {
        const char *rn = json_string_value(json_object_get(e, "revisionName"));
        if ((rn != NULL && strcmp(rn, name) == 0)
            || (newest && json_is_true(json_object_get(e, "latestRevision"))))
            return true;
    }
    return false;
}

/*
 * What every stored Service document holds: it passes the check (so it
 * can be modified again), percents sum to 100, revisions are uniquely
 * named objects whose templates parse, the newest one is the document's
 * template, every revisionName is a revision, the counter covers every
 * name, retention holds, and every revision's view adds up to 100.
 * NULL when it holds, else the broken rule.
 */
static const char *
check_stored(const json_t *doc, const char *service)
{
    static char why[640];
    const json_t *revs = json_object_get(doc, "revisions");
    const json_t *traffic = json_object_get(doc, "traffic");
    const json_t *cnt = json_object_get(doc, "revisionCounter");
    const json_t *lim = json_object_get(doc, "revisionHistoryLimit");
    const json_t *r, *e;
    size_t i, j, n = json_array_size(revs), idle = 0, slen = strlen(service);
    size_t limit = json_is_integer(lim) ? (size_t)json_integer_value(lim)
                                        : KB_RT_DEFAULT_HISTORY;
    char err[512];
    int sum = 0, vsum = 0;

    if (kb_runtime_validate(doc, err, sizeof(err)) != 0) {
        snprintf(why, sizeof(why), "does not pass the check: %s", err);
        return why;
    }
    if (!json_is_array(traffic))
        return "traffic is not a list";
    json_array_foreach(traffic, i, e)
        sum += (int)json_integer_value(json_object_get(e, "percent"));
    if (sum != 100)
        return "traffic percents do not sum to 100";
    if (!json_is_array(revs) || n == 0)
        return "no revisions";
    if (!json_is_integer(cnt) || json_integer_value(cnt) < 1
        || json_integer_value(cnt) > FUZZ_MAX_COUNTER)
        return "revisionCounter missing or out of range";
    json_array_foreach(revs, i, r) {
        const char *name = rev_name(r);
        rt_template t;

        if (!json_is_object(r) || name == NULL || strlen(name) >= 128
            || !json_is_object(json_object_get(r, "template"))
            || !json_is_string(json_object_get(r, "createTime")))
            return "a revision is not {name, createTime, template}";
        for (j = 0; j < i; j++)
            if (strcmp(rev_name(json_array_get(revs, j)), name) == 0)
                return "two revisions have the same name";
        /* SERVICE-NNNNN-xxx: NNNNN <= the counter, so no new name clashes */
        if (strncmp(name, service, slen) == 0 && name[slen] == '-'
            && strtoll(name + slen + 1, NULL, 10) > json_integer_value(cnt))
            return "a revision's number is above revisionCounter";
        if (kb_rt_template_parse(json_object_get(r, "template"), &t, err,
                                 sizeof(err)) != 0)
            return "a revision's template does not parse";
        kb_rt_template_free(&t);
        if (i + 1 < n && !is_referenced(traffic, name, false))
            idle++;
    }
    if (!kb_rt_template_equal(json_object_get(json_array_get(revs, n - 1),
                                              "template"), doc))
        return "the newest revision's template is not the document's";
    json_array_foreach(traffic, i, e) {
        const char *rn = json_string_value(json_object_get(e, "revisionName"));
        if (rn != NULL && kb_rt_revision_find(doc, rn) == NULL)
            return "a traffic revisionName names no revision";
        if (json_integer_value(json_object_get(e, "percent")) == 0
            && json_object_get(e, "tag") == NULL)
            return "an untagged percent-0 entry is kept";
    }
    if (idle > limit)
        return "more idle revisions than revisionHistoryLimit";
    json_array_foreach(revs, i, r) {
        json_t *v = kb_rt_revision_view(doc, r, "p", service);
        if (v == NULL)
            return "a revision has no view";
        vsum += (int)json_integer_value(json_object_get(
            json_object_get(v, "traffic"), "percent"));
        json_decref(v);
    }
    if (vsum != 100)
        return "the revisions' views do not add up to 100 percent";
    return NULL;
}

/* A stored document: the rules hold, and deploying it unchanged (what
 * every modify does last) succeeds and changes nothing. */
static void
expect_stored(const json_t *doc, const char *service, const char *what)
{
    const char *why = check_stored(doc, service);
    json_t *again;
    char err[512];

    if (why != NULL)
        die(what, why, doc);
    if ((again = json_deep_copy(doc)) == NULL)
        return;
    if (kb_rt_deploy(again, doc, service, NULL, err, sizeof(err)) != 0)
        die(what, "deploying the stored document again fails", doc);
    if (!json_equal(again, (json_t *)doc))
        die(what, "deploying the stored document again changes it", again);
    json_decref(again);
}

/*
 * A modify as the API runs it (api.c kb_api_modify): change a copy of the
 * stored doc, check it, deploy it over its own copy.  The new stored doc,
 * or NULL when refused.
 */
static json_t *
modify(const json_t *stored, const char *service, const json_t *req,
       const char *rev)
{
    json_t *doc = json_deep_copy(stored), *base = NULL;
    char err[512] = "";
    int rc;

    if (doc == NULL)
        return NULL;
    rc = req != NULL ? kb_rt_update_traffic(doc, req, err, sizeof(err))
                     : kb_rt_revision_delete(doc, rev, err, sizeof(err));
    trace(req != NULL ? "updateTraffic" : "revision delete", err, rc);
    if (rc != 0)
        goto refused;
    if (kb_runtime_validate(doc, err, sizeof(err)) != 0) {
        /* More than the check's 1000 entries: refused, as the API does. */
        if (json_array_size(json_object_get(doc, "traffic")) > 1000)
            goto refused;
        die(req != NULL ? "updateTraffic" : "revision delete",
            "the changed document does not pass the check", doc);
    }
    if ((base = json_deep_copy(doc)) == NULL)
        goto refused;
    rc = kb_rt_deploy(doc, base, service, NULL, err, sizeof(err));
    json_decref(base);
    if (rc != 0) {
        if (rc == KB_ENOMEM)
            goto refused;
        die(req != NULL ? "updateTraffic" : "revision delete",
            "the deploy after the change fails", doc);
    }
    expect_stored(doc, service, req != NULL ? "updateTraffic"
                                            : "revision delete");
    if (rev != NULL && kb_rt_revision_find(doc, rev) != NULL)
        die("revision delete", "the revision is still there", doc);
    return doc;

refused:
    json_decref(doc);
    return NULL;
}

/* Split data into at most FUZZ_PARTS JSON values (NULL: absent/bad). */
static void
split(const uint8_t *data, size_t size, json_t **parts)
{
    const char *p = (const char *)data, *end = p + size;
    size_t seplen = strlen(FUZZ_SEP);

    for (int i = 0; i < FUZZ_PARTS; i++) {
        const char *sep = NULL;
        json_error_t jerr;

        parts[i] = NULL;
        if (p == NULL)
            continue;
        if (i + 1 < FUZZ_PARTS)
            sep = memmem(p, (size_t)(end - p), FUZZ_SEP, seplen);
        parts[i] = json_loadb(p, sep != NULL ? (size_t)(sep - p)
                                             : (size_t)(end - p),
                              JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
        p = sep != NULL ? sep + seplen : NULL;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *part[FUZZ_PARTS], *stored = NULL, *doc = NULL, *next;
    const json_t *opts, *del;
    kb_rt_deploy_opts o = { false, NULL, FUZZ_NOW_NS, "abc" };
    const char *service = "svc", *rev = NULL;
    char err[512] = "";
    int rc;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    split(data, size, part);
    opts = part[3];
    o.no_traffic = json_is_true(json_object_get(opts, "noTraffic"));
    o.tag = json_string_value(json_object_get(opts, "tag"));
    if (json_is_string(json_object_get(opts, "service"))
        && json_string_length(json_object_get(opts, "service")) > 0)
        service = json_string_value(json_object_get(opts, "service"));

    /* The stored document: the input's own if it is one, else what
     * creating it stores. */
    if (part[1] != NULL && check_and_parse(part[1]) == 0) {
        const char *why = check_stored(part[1], service);
        trace("old document", why != NULL ? why : "stored as it is", 0);
        if (why == NULL) {
            stored = json_incref(part[1]);
        } else if ((stored = json_deep_copy(part[1])) != NULL) {
            kb_rt_deploy_opts c = { false, NULL, FUZZ_NOW_NS, "old" };
            rc = kb_rt_deploy(stored, NULL, service, &c, err, sizeof(err));
            if (rc == 0) {
                expect_stored(stored, service, "create");
            } else {
                json_decref(stored);
                stored = NULL;
            }
        }
    }

    /* The create or update. */
    if (part[0] != NULL && check_and_parse(part[0]) == 0
        && (doc = json_deep_copy(part[0])) != NULL) {
        rc = kb_rt_deploy(doc, stored, service, &o, err, sizeof(err));
        trace("deploy", err, rc);
        if (rc == 0) {
            expect_stored(doc, service, stored ? "update" : "create");
            json_decref(stored);
            stored = doc;
        } else {
            if (rc != KB_EINVAL && rc != KB_EPRECOND && rc != KB_ETOOBIG
                && rc != KB_ENOMEM)
                die("deploy", "unexpected error code", doc);
            json_decref(doc);
        }
    }

    /* :updateTraffic, then a revision delete, on what is stored. */
    if (stored != NULL && part[2] != NULL && !json_is_null(part[2])
        && (next = modify(stored, service, part[2], NULL)) != NULL) {
        json_decref(stored);
        stored = next;
    }
    del = json_object_get(opts, "delete");
    if (json_is_integer(del))
        rev = rev_name(json_array_get(json_object_get(stored, "revisions"),
                                      (size_t)json_integer_value(del)));
    else
        rev = json_string_value(del);
    if (stored != NULL && rev != NULL) {
        char name[256];
        snprintf(name, sizeof(name), "%s", rev);   /* rev is in stored */
        if ((next = modify(stored, service, NULL, name)) != NULL) {
            json_decref(stored);
            stored = next;
        }
    }

    json_decref(stored);
    for (int i = 0; i < FUZZ_PARTS; i++)
        json_decref(part[i]);
    return 0;
}
