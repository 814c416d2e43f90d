/*
 * revision.c - revisions, traffic and tags of a Service document
 * (revision.h).  Traffic is edited as a small table: targets (a revision
 * name or "latest") with a percent, and tags pointing at targets; it is
 * loaded from the document's `traffic`, changed, and written back in one
 * normal form.
 */
#include "runtime/revision.h"
#include "runtime/template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/id.h"
#include "core/time.h"

#define REV_NAME_MAX 128
#define TAG_MAX      48

static int
fail(int rc, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
fail(int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- the traffic table ------------------------------------------------- */

typedef struct tr_target {
    char name[REV_NAME_MAX];    /* "" for latest */
    bool latest;
    int  pct;
    bool given;                 /* set by toRevisions/toTags */
} tr_target;

typedef struct tr_tag {
    char   tag[TAG_MAX];
    size_t target;
} tr_tag;

typedef struct tr_table {
    tr_target *t;
    size_t     nt, capt;
    tr_tag    *g;
    size_t     ng, capg;
} tr_table;

static void
tr_free(tr_table *tb)
{
    free(tb->t);
    free(tb->g);
    memset(tb, 0, sizeof(*tb));
}

/* Index of the target (latest, or by name), added with 0 % if new;
 * -1 when the table is full. */
static long
tr_target_get(tr_table *tb, bool latest, const char *name)
{
    for (size_t i = 0; i < tb->nt; i++)
        if (tb->t[i].latest == latest
            && (latest || strcmp(tb->t[i].name, name) == 0))
            return (long)i;
    if (tb->nt == tb->capt)
        return -1;
    memset(&tb->t[tb->nt], 0, sizeof(tb->t[0]));
    tb->t[tb->nt].latest = latest;
    if (!latest)
        snprintf(tb->t[tb->nt].name, REV_NAME_MAX, "%s", name);
    return (long)tb->nt++;
}

static long
tr_tag_find(const tr_table *tb, const char *tag)
{
    for (size_t i = 0; i < tb->ng; i++)
        if (strcmp(tb->g[i].tag, tag) == 0)
            return (long)i;
    return -1;
}

static void
tr_tag_remove(tr_table *tb, const char *tag)
{
    long i = tr_tag_find(tb, tag);

    if (i < 0)
        return;
    memmove(&tb->g[i], &tb->g[i + 1], (tb->ng - (size_t)i - 1)
                                      * sizeof(tb->g[0]));
    tb->ng--;
}

/* Point tag at target (moving it off any other). */
static int
tr_tag_set(tr_table *tb, const char *tag, size_t target)
{
    long i = tr_tag_find(tb, tag);

    if (i >= 0) {
        tb->g[i].target = target;
        return 0;
    }
    if (tb->ng == tb->capg)
        return KB_ETOOBIG;
    snprintf(tb->g[tb->ng].tag, TAG_MAX, "%s", tag);
    tb->g[tb->ng++].target = target;
    return 0;
}

/*
 * Load `traffic` (shape already checked) with room for `extra` more
 * targets and tags.
 */
static int
tr_load(tr_table *tb, const json_t *traffic, size_t extra)
{
    size_t n = json_array_size(traffic), i;
    const json_t *e;

    memset(tb, 0, sizeof(*tb));
    tb->capt = tb->capg = n + extra + 1;
    tb->t = calloc(tb->capt, sizeof(*tb->t));
    tb->g = calloc(tb->capg, sizeof(*tb->g));
    if (tb->t == NULL || tb->g == NULL) {
        tr_free(tb);
        return KB_ENOMEM;
    }
    json_array_foreach(traffic, i, e) {
        const char *rn = json_string_value(json_object_get(e, "revisionName"));
        bool latest = json_is_true(json_object_get(e, "latestRevision"));
        const char *tag = json_string_value(json_object_get(e, "tag"));
        long t;

        if (!latest && rn == NULL)
            continue;
        t = tr_target_get(tb, latest, rn);
        if (t < 0)
            return KB_ETOOBIG;
        tb->t[t].pct += (int)json_integer_value(json_object_get(e, "percent"));
        if (tag != NULL && tr_tag_set(tb, tag, (size_t)t) != 0)
            return KB_ETOOBIG;
    }
    return 0;
}

static json_t *
tr_entry(const tr_target *t, int pct, const char *tag)
{
    json_t *e = t->latest
        ? json_pack("{s:b, s:i}", "latestRevision", 1, "percent", pct)
        : json_pack("{s:s, s:i}", "revisionName", t->name, "percent", pct);

    if (e != NULL && tag != NULL)
        json_object_set_new(e, "tag", json_string(tag));
    return e;
}

/*
 * The normal form: per target (in table order) one entry with its percent
 * and first tag, then its other tags as percent-0 entries; targets with
 * neither percent nor tag are left out.
 */
static json_t *
tr_store(const tr_table *tb)
{
    json_t *out = json_array();

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < tb->nt; i++) {
        bool first = true;
        for (size_t j = 0; j < tb->ng; j++) {
            if (tb->g[j].target != i)
                continue;
            if (json_array_append_new(out, tr_entry(&tb->t[i],
                                      first ? tb->t[i].pct : 0,
                                      tb->g[j].tag)) != 0)
                goto out_free;
            first = false;
        }
        if (first && tb->t[i].pct > 0
            && json_array_append_new(out, tr_entry(&tb->t[i], tb->t[i].pct,
                                                   NULL)) != 0)
            goto out_free;
    }
    return out;

out_free:
    json_decref(out);
    return NULL;
}

/* ---- revisions ------------------------------------------------------------ */

static const char *
rev_name(const json_t *rev)
{
    return json_string_value(json_object_get(rev, "name"));
}

const json_t *
kb_rt_revision_find(const json_t *doc, const char *rev)
{
    const json_t *revs = json_object_get(doc, "revisions"), *r;
    size_t i;

    json_array_foreach(revs, i, r) {
        const char *n = rev_name(r);
        if (n != NULL && strcmp(n, rev) == 0)
            return r;
    }
    return NULL;
}

static const char *
newest_name(const json_t *doc)
{
    const json_t *revs = json_object_get(doc, "revisions");
    size_t n = json_array_size(revs);

    return n > 0 ? rev_name(json_array_get(revs, n - 1)) : NULL;
}

/* Is rev referenced by any traffic entry (by name, or as latest)? */
static bool
referenced(const json_t *doc, const char *rev, bool need_weight)
{
    const json_t *traffic = json_object_get(doc, "traffic"), *e;
    const char *newest = newest_name(doc);
    size_t i;

    json_array_foreach(traffic, i, e) {
        const char *rn = json_string_value(json_object_get(e, "revisionName"));
        bool latest = json_is_true(json_object_get(e, "latestRevision"));
        bool hit = (rn != NULL && strcmp(rn, rev) == 0)
                   || (latest && newest != NULL && strcmp(newest, rev) == 0);
        if (hit && (!need_weight
                    || json_integer_value(json_object_get(e, "percent")) > 0
                    || json_object_get(e, "tag") != NULL))
            return true;
    }
    return false;
}

/* Drop the oldest unreferenced revisions past revisionHistoryLimit. */
static void
retain(json_t *doc)
{
    json_t *revs = json_object_get(doc, "revisions");
    const json_t *lim = json_object_get(doc, "revisionHistoryLimit");
    size_t limit = json_is_integer(lim) ? (size_t)json_integer_value(lim)
                                        : KB_RT_DEFAULT_HISTORY;
    size_t n = json_array_size(revs), idle = 0, i;

    if (n == 0)
        return;
    for (i = 0; i + 1 < n; i++)
        if (!referenced(doc, rev_name(json_array_get(revs, i)), false))
            idle++;
    for (i = 0; idle > limit && i + 1 < json_array_size(revs); ) {
        if (referenced(doc, rev_name(json_array_get(revs, i)), false)) {
            i++;
            continue;
        }
        json_array_remove(revs, i);
        idle--;
    }
}

/* A new revision's name: SERVICE-NNNNN-xxx. */
static int
new_name(char *out, size_t outlen, const char *service, long long counter,
         const char *suffix)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char rnd[3];
    char sfx[4];
    int n;

    if (suffix != NULL) {
        snprintf(sfx, sizeof(sfx), "%s", suffix);
    } else {
        if (kb_random_bytes(rnd, sizeof(rnd)) != 0)
            return KB_ENOMEM;
        for (size_t i = 0; i < 3; i++)
            sfx[i] = alphabet[rnd[i] % 36];
        sfx[3] = '\0';
    }
    n = snprintf(out, outlen, "%s-%05lld-%s", service, counter, sfx);
    return n < 0 || (size_t)n >= outlen ? KB_ETOOBIG : 0;
}

/* Pin every latestRevision entry of traffic to `name`. */
static void
pin_latest(json_t *traffic, const char *name)
{
    size_t i;
    json_t *e;

    json_array_foreach(traffic, i, e) {
        if (!json_is_true(json_object_get(e, "latestRevision")))
            continue;
        json_object_del(e, "latestRevision");
        json_object_set_new(e, "revisionName", json_string(name));
    }
}

/* Normalise doc's traffic; tag (if any) moves to revision `tag_rev`. */
static int
normalise(json_t *doc, const char *tag, const char *tag_rev)
{
    tr_table tb;
    json_t *out;
    int rc;

    rc = tr_load(&tb, json_object_get(doc, "traffic"), 1);
    if (rc == 0 && tag != NULL) {
        long t = tr_target_get(&tb, false, tag_rev);
        rc = t < 0 ? KB_ETOOBIG : tr_tag_set(&tb, tag, (size_t)t);
    }
    if (rc == 0) {
        out = tr_store(&tb);
        rc = out == NULL ? KB_ENOMEM
                         : json_object_set_new(doc, "traffic", out) != 0
                           ? KB_ENOMEM : 0;
    }
    tr_free(&tb);
    return rc;
}

/* The normalised traffic passes the check (a tag may have added an
 * entry), every revisionName in it names a revision of doc, and the
 * percents sum to 100. */
static int
check_refs(const json_t *doc, char *err, size_t errlen)
{
    const json_t *traffic = json_object_get(doc, "traffic"), *e;
    size_t i;
    int sum = 0, rc;

    if ((rc = kb_rt_traffic_check(traffic, err, errlen)) != 0)
        return rc;
    json_array_foreach(traffic, i, e) {
        const char *rn = json_string_value(json_object_get(e, "revisionName"));
        if (rn != NULL && kb_rt_revision_find(doc, rn) == NULL)
            return fail(KB_EINVAL, err, errlen, "traffic[%zu].revisionName: "
                        "no revision \"%.100s\" (see the service's "
                        "revisions)", i, rn);
        sum += (int)json_integer_value(json_object_get(e, "percent"));
    }
    if (sum != 100)
        return fail(KB_EINVAL, err, errlen, "traffic: percents must sum to "
                    "100 (they sum to %d)", sum);
    return 0;
}

int
kb_rt_deploy(json_t *doc, const json_t *old_doc, const char *service,
             const kb_rt_deploy_opts *o, char *err, size_t errlen)
{
    static const kb_rt_deploy_opts none;
    const json_t *old_revs = json_object_get(old_doc, "revisions");
    const json_t *old_n = json_object_get(old_doc, "revisionCounter");
    const json_t *traffic = json_object_get(doc, "traffic"), *newest;
    const char *tag_rev, *tag;
    json_t *revs, *tpl, *rev;
    long long counter = json_is_integer(old_n) ? json_integer_value(old_n) : 0;
    char name[REV_NAME_MAX], ts[KB_RFC3339_LEN];
    int rc;

    if (o == NULL)
        o = &none;
    tag = o->tag != NULL && o->tag[0] != '\0' ? o->tag : NULL;
    if (tag != NULL && !kb_rt_tag_valid(tag))
        return fail(KB_EINVAL, err, errlen, "tag: \"%.64s\" must be lowercase "
                    "letters, digits and '-', starting with a letter, at most "
                    "46 characters", tag);
    if (o->no_traffic && old_doc == NULL)
        return fail(KB_EPRECOND, err, errlen, "noTraffic: not supported when "
                    "creating a new service");

    /* Server-managed fields: from the stored document only. */
    revs = json_is_array(old_revs) ? json_deep_copy(old_revs) : json_array();
    if (revs == NULL || json_object_set_new(doc, "revisions", revs) != 0)
        return KB_ENOMEM;
    if (traffic == NULL || json_is_null(traffic)) {
        const json_t *ot = json_object_get(old_doc, "traffic");
        json_t *t = json_is_array(ot) ? json_deep_copy(ot)
            : json_pack("[{s:b, s:i}]", "latestRevision", 1, "percent", 100);
        if (t == NULL || json_object_set_new(doc, "traffic", t) != 0)
            return KB_ENOMEM;
    }

    newest = json_array_size(revs) > 0
             ? json_array_get(revs, json_array_size(revs) - 1) : NULL;
    tag_rev = newest != NULL ? rev_name(newest) : NULL;
    if (newest == NULL
        || !kb_rt_template_equal(json_object_get(newest, "template"), doc)) {
        if (o->no_traffic) {
            if (newest == NULL)
                return fail(KB_EPRECOND, err, errlen, "noTraffic: the service "
                            "has no revision to keep the traffic on");
            pin_latest(json_object_get(doc, "traffic"), rev_name(newest));
        }
        if ((rc = new_name(name, sizeof(name), service, ++counter,
                           o->suffix)) != 0)
            return fail(rc, err, errlen, "name: the revision name is too "
                        "long");
        kb_time_rfc3339(ts, sizeof(ts), o->now_ns ? o->now_ns
                                                  : kb_time_unix_ns(), 6);
        tpl = kb_rt_template_extract(doc);
        rev = tpl ? json_pack("{s:s, s:s, s:o}", "name", name,
                              "createTime", ts, "template", tpl) : NULL;
        if (rev == NULL || json_array_append_new(revs, rev) != 0)
            return KB_ENOMEM;
        tag_rev = name;
    }
    if (json_object_set_new(doc, "revisionCounter",
                            json_integer(counter)) != 0)
        return KB_ENOMEM;

    if ((rc = normalise(doc, tag, tag_rev)) != 0)
        return fail(rc, err, errlen, rc == KB_ENOMEM ? "out of memory"
                    : "traffic: too many targets");
    if ((rc = check_refs(doc, err, errlen)) != 0)
        return rc;
    retain(doc);
    return 0;
}

/* ---- :updateTraffic ---------------------------------------------------- */

static const char *const update_fields[] = {
    "toRevisions", "toTags", "toLatest", "setTags", "updateTags",
    "removeTags", "clearTags",
};

/* Check the request's shape. */
static int
update_check(const json_t *req, char *err, size_t errlen)
{
    const char *k, *kk;
    const json_t *v, *x;
    size_t i, n;

    if (!json_is_object(req))
        return fail(KB_EINVAL, err, errlen, "the body must be a JSON object "
                    "(toRevisions, toTags, toLatest, setTags, updateTags, "
                    "removeTags, clearTags)");
    json_object_foreach((json_t *)req, k, v) {
        for (n = 0; n < sizeof(update_fields) / sizeof(update_fields[0]); n++)
            if (strcmp(k, update_fields[n]) == 0)
                break;
        if (n == sizeof(update_fields) / sizeof(update_fields[0]))
            return fail(KB_EINVAL, err, errlen, "%.64s: unknown field (known: "
                        "toRevisions, toTags, toLatest, setTags, updateTags, "
                        "removeTags, clearTags)", k);
        if (strcmp(k, "toLatest") == 0 || strcmp(k, "clearTags") == 0) {
            if (!json_is_boolean(v))
                return fail(KB_EINVAL, err, errlen, "%s: must be true or "
                            "false", k);
            continue;
        }
        if (strcmp(k, "removeTags") == 0) {
            if (!json_is_array(v) || json_array_size(v) > 1000)
                return fail(KB_EINVAL, err, errlen, "removeTags: must be a "
                            "list of tags");
            json_array_foreach(v, i, x)
                if (!json_is_string(x))
                    return fail(KB_EINVAL, err, errlen, "removeTags[%zu]: "
                                "must be a string", i);
            continue;
        }
        if (!json_is_object(v) || json_object_size(v) > 1000)
            return fail(KB_EINVAL, err, errlen, "%s: must be a mapping", k);
        json_object_foreach((json_t *)v, kk, x) {
            bool pct = strcmp(k, "toRevisions") == 0
                       || strcmp(k, "toTags") == 0;
            if (pct && (!json_is_integer(x) || json_integer_value(x) < 0
                        || json_integer_value(x) > 100))
                return fail(KB_EINVAL, err, errlen, "%s.%.100s: must be an "
                            "integer percent from 0 to 100", k, kk);
            if (!pct && !json_is_string(x))
                return fail(KB_EINVAL, err, errlen, "%s.%.64s: must be a "
                            "revision name", k, kk);
            if (!pct && !kb_rt_tag_valid(kk))
                return fail(KB_EINVAL, err, errlen, "%s.%.64s: a tag must be "
                            "lowercase letters, digits and '-', starting "
                            "with a letter, at most 46 characters", k, kk);
        }
    }
    if (json_is_true(json_object_get(req, "toLatest"))
        && (json_object_get(req, "toRevisions") != NULL
            || json_object_get(req, "toTags") != NULL))
        return fail(KB_EINVAL, err, errlen, "toLatest: cannot be combined "
                    "with toRevisions or toTags");
    return 0;
}

/* The target of a revision key: "LATEST" means the latest revision. */
static long
key_target(tr_table *tb, const json_t *doc, const char *field, const char *rev,
           char *err, size_t errlen)
{
    long t;

    if (strcmp(rev, "LATEST") == 0)
        return tr_target_get(tb, true, NULL);
    if (kb_rt_revision_find(doc, rev) == NULL) {
        fail(KB_EINVAL, err, errlen, "%s.%.100s: no such revision", field,
             rev);
        return -2;
    }
    t = tr_target_get(tb, false, rev);
    return t;
}

/* Give target t pct percent (given by the request). */
static int
give(tr_table *tb, long t, int pct, const char *field, const char *key,
     char *err, size_t errlen)
{
    if (t == -1)
        return fail(KB_ETOOBIG, err, errlen, "traffic: too many targets");
    if (t < 0)
        return KB_EINVAL;
    if (tb->t[t].given)
        return fail(KB_EINVAL, err, errlen, "%s.%.100s: that target is "
                    "given a percent twice", field, key);
    tb->t[t].given = true;
    tb->t[t].pct = pct;
    return 0;
}

/*
 * The remainder (100 - given) over the targets not given, in proportion
 * to their current percents, by largest remainder (ties: table order).
 */
static int
spread(tr_table *tb, int given, char *err, size_t errlen)
{
    int rest = 100 - given, total = 0, assigned = 0;
    int *frac;

    if (given > 100)
        return fail(KB_EINVAL, err, errlen, "toRevisions: the percents given "
                    "sum to %d, more than 100", given);
    for (size_t i = 0; i < tb->nt; i++)
        if (!tb->t[i].given)
            total += tb->t[i].pct;
    if (rest > 0 && total == 0)
        return fail(KB_EINVAL, err, errlen, "toRevisions: the percents given "
                    "sum to %d and no other target has traffic to take the "
                    "remaining %d", given, rest);
    if ((frac = calloc(tb->nt + 1, sizeof(*frac))) == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < tb->nt; i++) {
        int orig = tb->t[i].pct;
        if (tb->t[i].given)
            continue;
        tb->t[i].pct = rest == 0 ? 0 : orig * rest / total;
        frac[i] = rest == 0 ? 0 : orig * rest % total;
        assigned += tb->t[i].pct;
    }
    while (assigned < rest) {
        size_t best = tb->nt;
        for (size_t i = 0; i < tb->nt; i++)
            if (!tb->t[i].given && frac[i] > 0
                && (best == tb->nt || frac[i] > frac[best]))
                best = i;
        if (best == tb->nt)
            break;                          /* cannot happen: sums agree */
        tb->t[best].pct++;
        frac[best] = 0;
        assigned++;
    }
    free(frac);
    return 0;
}

int
kb_rt_update_traffic(json_t *doc, const json_t *req, char *err, size_t errlen)
{
    const json_t *to_revs = json_object_get(req, "toRevisions");
    const json_t *to_tags = json_object_get(req, "toTags");
    const json_t *set = json_object_get(req, "setTags");
    const json_t *upd = json_object_get(req, "updateTags");
    const json_t *rm = json_object_get(req, "removeTags"), *v;
    const char *k;
    tr_table tb;
    json_t *out;
    size_t i;
    int rc, given = 0;

    if ((rc = update_check(req, err, errlen)) != 0)
        return rc;
    rc = tr_load(&tb, json_object_get(doc, "traffic"),
                 json_object_size(to_revs) + json_object_size(to_tags)
                 + json_object_size(set) + json_object_size(upd) + 1);
    if (rc != 0)
        return fail(rc, err, errlen, "traffic: too many targets");

    /* Tags first, so toTags can name a tag set by this same call. */
    if (json_is_true(json_object_get(req, "clearTags")) || set != NULL)
        tb.ng = 0;
    json_array_foreach(rm, i, v)
        tr_tag_remove(&tb, json_string_value(v));
    for (int pass = 0; pass < 2; pass++) {
        const json_t *m = pass == 0 ? set : upd;
        json_object_foreach((json_t *)m, k, v) {
            long t = key_target(&tb, doc, pass == 0 ? "setTags" : "updateTags",
                                json_string_value(v), err, errlen);
            if (t < 0) {
                rc = t == -1 ? fail(KB_ETOOBIG, err, errlen, "traffic: too "
                                    "many targets") : KB_EINVAL;
                goto out;
            }
            if ((rc = tr_tag_set(&tb, k, (size_t)t)) != 0)
                goto out;
        }
    }

    if (json_is_true(json_object_get(req, "toLatest"))) {
        long t = tr_target_get(&tb, true, NULL);
        if (t < 0) {
            rc = fail(KB_ETOOBIG, err, errlen, "traffic: too many targets");
            goto out;
        }
        for (i = 0; i < tb.nt; i++)
            tb.t[i].pct = 0;
        tb.t[t].pct = 100;
    } else if (to_revs != NULL || to_tags != NULL) {
        json_object_foreach((json_t *)to_revs, k, v) {
            long t = key_target(&tb, doc, "toRevisions", k, err, errlen);
            if ((rc = give(&tb, t, (int)json_integer_value(v), "toRevisions",
                           k, err, errlen)) != 0)
                goto out;
            given += (int)json_integer_value(v);
        }
        json_object_foreach((json_t *)to_tags, k, v) {
            long g = tr_tag_find(&tb, k);
            if (g < 0) {
                rc = fail(KB_EINVAL, err, errlen, "toTags.%.64s: no such tag",
                          k);
                goto out;
            }
            if ((rc = give(&tb, (long)tb.g[g].target,
                           (int)json_integer_value(v), "toTags", k, err,
                           errlen)) != 0)
                goto out;
            given += (int)json_integer_value(v);
        }
        if ((rc = spread(&tb, given, err, errlen)) != 0)
            goto out;
    }
    out = tr_store(&tb);
    if (out == NULL || json_object_set_new(doc, "traffic", out) != 0)
        rc = KB_ENOMEM;
out:
    tr_free(&tb);
    return rc;
}

/* ---- revision delete and view ------------------------------------------- */

int
kb_rt_revision_delete(json_t *doc, const char *rev, char *err, size_t errlen)
{
    json_t *revs = json_object_get(doc, "revisions");
    const char *newest = newest_name(doc);
    size_t i;
    json_t *r;

    if (kb_rt_revision_find(doc, rev) == NULL)
        return fail(KB_ENOTFOUND, err, errlen, "revision \"%.100s\" not found",
                    rev);
    if (newest != NULL && strcmp(newest, rev) == 0)
        return fail(KB_EPRECOND, err, errlen, "revision \"%.100s\" is the "
                    "latest revision of the service and cannot be deleted",
                    rev);
    if (referenced(doc, rev, true))
        return fail(KB_EPRECOND, err, errlen, "revision \"%.100s\" is "
                    "referenced by the service's traffic (a percent or a "
                    "tag); move its traffic and tags first", rev);
    json_array_foreach(revs, i, r) {
        if (strcmp(rev_name(r), rev) == 0) {
            json_array_remove(revs, i);
            break;
        }
    }
    return normalise(doc, NULL, NULL);
}

json_t *
kb_rt_revision_view(const json_t *doc, const json_t *rev, const char *project,
                    const char *service)
{
    const json_t *traffic = json_object_get(doc, "traffic"), *e;
    const char *name = rev_name(rev), *newest = newest_name(doc);
    bool latest = newest != NULL && name != NULL && strcmp(newest, name) == 0;
    json_t *out, *tags = json_array();
    char full[512];
    size_t i;
    int pct = 0;

    if (tags == NULL || name == NULL) {
        json_decref(tags);
        return NULL;
    }
    json_array_foreach(traffic, i, e) {
        const char *rn = json_string_value(json_object_get(e, "revisionName"));
        const json_t *tag = json_object_get(e, "tag");
        if (!((rn != NULL && strcmp(rn, name) == 0)
              || (latest && json_is_true(json_object_get(e, "latestRevision")))))
            continue;
        pct += (int)json_integer_value(json_object_get(e, "percent"));
        if (json_is_string(tag))
            json_array_append(tags, (json_t *)tag);
    }
    snprintf(full, sizeof(full), "projects/%s/services/%s/revisions/%s",
             project, service, name);
    out = json_pack("{s:s, s:s, s:s, s:O?, s:O?, s:{s:i, s:o, s:b}}",
                    "name", full, "revision", name, "service", service,
                    "createTime", json_object_get(rev, "createTime"),
                    "template", json_object_get(rev, "template"),
                    "traffic", "percent", pct, "tags", tags, "latest", latest);
    return out;
}
