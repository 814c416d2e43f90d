/*
 * test_revision.c - revisions, traffic and tags of a Service document
 * (src/runtime/revision.c): revision names and counters, noTraffic and tag
 * deploys, pinned splits, :updateTraffic as gcloud combines its flags,
 * retention, and the preconditions of deleting a revision.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "runtime/revision.h"
#include "runtime/runtime.h"

static char err[512];

/* Create or update `svc` to spec (text); old may be NULL.  The new doc. */
static json_t *
deploy(const json_t *old, const char *spec, bool no_traffic, const char *tag,
       const char *suffix)
{
    json_t *doc = J(spec);
    kb_rt_deploy_opts o = { no_traffic, tag, 1700000000LL * 1000000000LL,
                            suffix };

    err[0] = '\0';
    assert_int_equal(kb_runtime_validate(doc, err, sizeof(err)), 0);
    if (kb_rt_deploy(doc, old, "hello", &o, err, sizeof(err)) != 0)
        fail_msg("deploy %s refused: %s", spec, err);
    return doc;
}

/* The deploy is refused with rc and an error starting with `want`. */
static void
deploy_refused(const json_t *old, const char *spec, bool no_traffic,
               const char *tag, int rc, const char *want)
{
    json_t *doc = J(spec);
    kb_rt_deploy_opts o = { no_traffic, tag, 0, "zzz" };

    err[0] = '\0';
    assert_int_equal(kb_rt_deploy(doc, old, "hello", &o, err, sizeof(err)),
                     rc);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error \"%s\" does not start with \"%s\"", err, want);
    json_decref(doc);
}

/* got equals the JSON text want. */
static bool
eqj(const json_t *got, const char *want)
{
    json_t *w = J(want);
    bool eq = json_equal(w, (json_t *)got);

    json_decref(w);
    return eq;
}

/* doc's traffic equals `want` (text). */
static void
traffic_is(const json_t *doc, const char *want)
{
    json_t *w = J(want);
    const json_t *got = json_object_get(doc, "traffic");

    if (!json_equal(w, (json_t *)got)) {
        char *g = json_dumps(got, JSON_COMPACT);
        fail_msg("traffic is %s, want %s", g, want);
    }
    json_decref(w);
}

/* The names of doc's revisions, comma-separated. */
static const char *
names(const json_t *doc)
{
    static char out[1024];
    const json_t *r;
    size_t i, off = 0;

    out[0] = '\0';
    json_array_foreach(json_object_get(doc, "revisions"), i, r) {
        int n = snprintf(out + off, sizeof(out) - off, "%s%s", i ? "," : "",
                         json_string_value(json_object_get(r, "name")));
        off += (size_t)n;
    }
    return out;
}

/* Apply an :updateTraffic request (text), then the deploy normalisation,
 * as the API does.  Returns the first error. */
static int
update_traffic(json_t *doc, const char *req)
{
    json_t *r = J(req), *base;
    int rc;

    err[0] = '\0';
    rc = kb_rt_update_traffic(doc, r, err, sizeof(err));
    json_decref(r);
    if (rc != 0)
        return rc;
    if ((rc = kb_runtime_validate(doc, err, sizeof(err))) != 0)
        return rc;
    base = json_deep_copy(doc);
    rc = kb_rt_deploy(doc, base, "hello", NULL, err, sizeof(err));
    json_decref(base);
    return rc;
}

static void
update_ok(json_t *doc, const char *req)
{
    if (update_traffic(doc, req) != 0)
        fail_msg("%s refused: %s", req, err);
}

static void
update_refused(json_t *doc, const char *req, const char *want)
{
    json_t *before = json_deep_copy(doc);
    json_t *copy = json_deep_copy(doc);

    assert_int_equal(update_traffic(copy, req), KB_EINVAL);
    if (strstr(err, want) == NULL)
        fail_msg("%s: error \"%s\" does not name \"%s\"", req, err, want);
    assert_true(json_equal(doc, before));
    json_decref(before);
    json_decref(copy);
}

static void
test_create_first_revision(void **state)
{
    json_t *d = deploy(NULL, "{'command': 'x', 'revisions': [{'name': 'fake'}],"
                       " 'revisionCounter': 41}", false, NULL, "k7q");
    const json_t *r;

    (void)state;
    assert_string_equal(names(d), "hello-00001-k7q");
    assert_int_equal(json_integer_value(json_object_get(d, "revisionCounter")),
                     1);
    traffic_is(d, "[{'latestRevision': true, 'percent': 100}]");
    r = json_array_get(json_object_get(d, "revisions"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "createTime")),
                        "2023-11-14T22:13:20.000000Z");
    assert_true(eqj(json_object_get(r, "template"), "{'command': 'x'}"));
    json_decref(d);

    /* A random suffix: three of [a-z0-9]. */
    json_t *doc = J("{'command': 'x'}");
    assert_int_equal(kb_rt_deploy(doc, NULL, "web", NULL, err, sizeof(err)),
                     0);
    const char *n = json_string_value(json_object_get(
        json_array_get(json_object_get(doc, "revisions"), 0), "name"));
    assert_int_equal(strlen(n), strlen("web-00001-abc"));
    assert_memory_equal(n, "web-00001-", 10);
    for (size_t i = 10; i < 13; i++)
        assert_true((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9'));
    json_decref(doc);
}

static void
test_new_revision_only_on_template_change(void **state)
{
    json_t *d1 = deploy(NULL, "{'command': 'x', 'env': {'A': '1'}}", false,
                        NULL, "aaa");
    /* Same template, other service-level fields: no revision. */
    json_t *d2 = deploy(d1, "{'command': 'x', 'env': {'A': '1'},"
                        " 'revisionHistoryLimit': 5}", false, NULL, "bbb");
    json_t *d3 = deploy(d2, "{'command': 'x', 'env': {'A': '2'}}", false, NULL,
                        "ccc");

    (void)state;
    assert_string_equal(names(d2), "hello-00001-aaa");
    assert_string_equal(names(d3), "hello-00001-aaa,hello-00002-ccc");
    assert_int_equal(json_integer_value(json_object_get(d3, "revisionCounter")),
                     2);
    /* The newest revision's template is the top-level one. */
    assert_true(eqj(json_object_get(json_array_get(
        json_object_get(d3, "revisions"), 1), "template"),
        "{'command': 'x', 'env': {'A': '2'}}"));
    /* Update without traffic: kept as stored. */
    traffic_is(d3, "[{'latestRevision': true, 'percent': 100}]");
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
}

static void
test_no_traffic_and_pinning(void **state)
{
    json_t *d1, *d2, *d3, *d4;

    (void)state;
    deploy_refused(NULL, "{'command': 'x'}", true, NULL, KB_EPRECOND,
                   "noTraffic: not supported when creating");
    d1 = deploy(NULL, "{'command': 'v1'}", false, NULL, "aaa");
    d2 = deploy(d1, "{'command': 'v2'}", true, "green", "bbb");
    assert_string_equal(names(d2), "hello-00001-aaa,hello-00002-bbb");
    traffic_is(d2, "[{'revisionName': 'hello-00001-aaa', 'percent': 100},"
                   " {'revisionName': 'hello-00002-bbb', 'percent': 0,"
                   "  'tag': 'green'}]");
    /* The pin persists across later deploys until toLatest. */
    d3 = deploy(d2, "{'command': 'v3'}", false, NULL, "ccc");
    traffic_is(d3, "[{'revisionName': 'hello-00001-aaa', 'percent': 100},"
                   " {'revisionName': 'hello-00002-bbb', 'percent': 0,"
                   "  'tag': 'green'}]");
    update_ok(d3, "{'toLatest': true}");
    traffic_is(d3, "[{'revisionName': 'hello-00002-bbb', 'percent': 0,"
                   "  'tag': 'green'}, {'latestRevision': true,"
                   "  'percent': 100}]");
    /* noTraffic with an unchanged template changes nothing. */
    d4 = deploy(d3, "{'command': 'v3'}", true, NULL, "ddd");
    assert_string_equal(names(d4), names(d3));
    traffic_is(d4, "[{'revisionName': 'hello-00002-bbb', 'percent': 0,"
                   "  'tag': 'green'}, {'latestRevision': true,"
                   "  'percent': 100}]");
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
    json_decref(d4);
}

static void
test_tag_moves(void **state)
{
    json_t *d1 = deploy(NULL, "{'command': 'v1'}", false, "blue", "aaa");
    json_t *d2, *d3;

    (void)state;
    /* The tag names the revision, not "latest". */
    traffic_is(d1, "[{'latestRevision': true, 'percent': 100},"
                   " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                   "  'tag': 'blue'}]");
    d2 = deploy(d1, "{'command': 'v2'}", false, "blue", "bbb");
    traffic_is(d2, "[{'latestRevision': true, 'percent': 100},"
                   " {'revisionName': 'hello-00002-bbb', 'percent': 0,"
                   "  'tag': 'blue'}]");
    /* Unchanged template: the tag goes to the newest revision. */
    d3 = deploy(d2, "{'command': 'v2'}", false, "green", "ccc");
    assert_string_equal(names(d3), "hello-00001-aaa,hello-00002-bbb");
    traffic_is(d3, "[{'latestRevision': true, 'percent': 100},"
                   " {'revisionName': 'hello-00002-bbb', 'percent': 0,"
                   "  'tag': 'blue'},"
                   " {'revisionName': 'hello-00002-bbb', 'percent': 0,"
                   "  'tag': 'green'}]");
    deploy_refused(d3, "{'command': 'v3'}", false, "Bad_Tag", KB_EINVAL,
                   "tag:");
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
}

static void
test_client_traffic_checked_against_revisions(void **state)
{
    json_t *d1 = deploy(NULL, "{'command': 'v1'}", false, NULL, "aaa");
    json_t *d2 = deploy(d1, "{'command': 'v2'}", false, NULL, "bbb");
    json_t *d3;

    (void)state;
    deploy_refused(d2, "{'command': 'v2', 'traffic': [{'revisionName':"
                   " 'hello-00009-zzz', 'percent': 100}]}", false, NULL,
                   KB_EINVAL, "traffic[0].revisionName: no revision");
    d3 = deploy(d2, "{'command': 'v2', 'traffic': [{'revisionName':"
                " 'hello-00001-aaa', 'percent': 30}, {'latestRevision': true,"
                " 'percent': 70, 'tag': 'cur'}, {'revisionName':"
                " 'hello-00001-aaa', 'tag': 'old'}]}", false, NULL, "ccc");
    /* Normal form: the old revision's tag joins its percent entry. */
    traffic_is(d3, "[{'revisionName': 'hello-00001-aaa', 'percent': 30,"
                   "  'tag': 'old'},"
                   " {'latestRevision': true, 'percent': 70, 'tag': 'cur'}]");
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
}

/* A service with revisions 00001..0000n (suffixes a, b, c, …). */
static json_t *
history(int n)
{
    char spec[64], sfx[4];
    json_t *d = NULL;

    for (int i = 0; i < n; i++) {
        json_t *next;
        snprintf(spec, sizeof(spec), "{'command': 'v%d'}", i + 1);
        snprintf(sfx, sizeof(sfx), "%c%c%c", 'a' + i, 'a' + i, 'a' + i);
        next = deploy(d, spec, false, NULL, sfx);
        json_decref(d);
        d = next;
    }
    return d;
}

static void
test_update_traffic_split(void **state)
{
    json_t *d = history(3);

    (void)state;
    update_ok(d, "{'toRevisions': {'hello-00001-aaa': 90,"
                 " 'hello-00002-bbb': 10}}");
    traffic_is(d, "[{'revisionName': 'hello-00001-aaa', 'percent': 90},"
                  " {'revisionName': 'hello-00002-bbb', 'percent': 10}]");
    /* 20 to the latest: the other 80 in proportion 90:10. */
    update_ok(d, "{'toRevisions': {'LATEST': 20}}");
    traffic_is(d, "[{'revisionName': 'hello-00001-aaa', 'percent': 72},"
                  " {'revisionName': 'hello-00002-bbb', 'percent': 8},"
                  " {'latestRevision': true, 'percent': 20}]");
    /* Largest remainder: 34/33/33 → C=50, A 25.37 → 25, B 24.63 → 25. */
    update_ok(d, "{'toRevisions': {'hello-00001-aaa': 34,"
                 " 'hello-00002-bbb': 33, 'LATEST': 33}}");
    update_ok(d, "{'toRevisions': {'LATEST': 50}}");
    traffic_is(d, "[{'revisionName': 'hello-00001-aaa', 'percent': 25},"
                  " {'revisionName': 'hello-00002-bbb', 'percent': 25},"
                  " {'latestRevision': true, 'percent': 50}]");
    /* 100 to one target: the others drop out. */
    update_ok(d, "{'toRevisions': {'hello-00003-ccc': 100}}");
    traffic_is(d, "[{'revisionName': 'hello-00003-ccc', 'percent': 100}]");
    update_ok(d, "{'toLatest': true}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 100}]");
    json_decref(d);
}

static void
test_update_traffic_errors(void **state)
{
    json_t *d = history(2);

    (void)state;
    update_refused(d, "{'toRevisions': {'hello-00001-aaa': 60,"
                      " 'hello-00002-bbb': 50}}", "more than 100");
    update_refused(d, "{'toRevisions': {'hello-00009-zzz': 10}}",
                   "toRevisions.hello-00009-zzz: no such revision");
    update_refused(d, "{'toRevisions': {'LATEST': 50}}",
                   "no other target");
    update_refused(d, "{'toRevisions': {'hello-00001-aaa': 101}}",
                   "toRevisions.hello-00001-aaa");
    update_refused(d, "{'toRevisions': {'hello-00001-aaa': '10'}}",
                   "toRevisions.hello-00001-aaa");
    update_refused(d, "{'toTags': {'nope': 10}}", "toTags.nope: no such tag");
    update_refused(d, "{'setTags': {'Bad': 'hello-00001-aaa'}}",
                   "setTags.Bad");
    update_refused(d, "{'updateTags': {'ok': 'hello-00009-zzz'}}",
                   "updateTags.hello-00009-zzz");
    update_refused(d, "{'toLatest': true, 'toRevisions': {'LATEST': 100}}",
                   "toLatest");
    update_refused(d, "{'toTraffic': 1}", "toTraffic: unknown field");
    update_refused(d, "{'removeTags': 'x'}", "removeTags");
    json_decref(d);
}

static void
test_update_traffic_tags(void **state)
{
    json_t *d = history(3);

    (void)state;
    update_ok(d, "{'setTags': {'green': 'hello-00002-bbb',"
                 " 'blue': 'hello-00001-aaa'}}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 100},"
                  " {'revisionName': 'hello-00002-bbb', 'percent': 0,"
                  "  'tag': 'green'},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'blue'}]");
    /* toTags: by tag; the rest stays where it was. */
    update_ok(d, "{'toTags': {'green': 10}}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 90},"
                  " {'revisionName': 'hello-00002-bbb', 'percent': 10,"
                  "  'tag': 'green'},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'blue'}]");
    /* updateTags moves one; the old target keeps its percent. */
    update_ok(d, "{'updateTags': {'green': 'hello-00001-aaa'}}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 90},"
                  " {'revisionName': 'hello-00002-bbb', 'percent': 10},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'green'},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'blue'}]");
    /* Tags set in the same call can be used by toTags. */
    update_ok(d, "{'updateTags': {'cur': 'LATEST'}, 'toTags': {'cur': 100}}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 100, 'tag': 'cur'},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'green'},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'blue'}]");
    update_ok(d, "{'removeTags': ['green', 'nonexistent']}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 100, 'tag': 'cur'},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'blue'}]");
    /* toLatest keeps tags as percent-0 entries. */
    update_ok(d, "{'toLatest': true}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 100, 'tag': 'cur'},"
                  " {'revisionName': 'hello-00001-aaa', 'percent': 0,"
                  "  'tag': 'blue'}]");
    update_ok(d, "{'clearTags': true}");
    traffic_is(d, "[{'latestRevision': true, 'percent': 100}]");
    json_decref(d);
}

static void
test_retention(void **state)
{
    json_t *d = deploy(NULL, "{'command': 'v1', 'revisionHistoryLimit': 2}",
                       false, "keep", "aaa");
    char spec[96], sfx[4];

    (void)state;
    for (int i = 2; i <= 6; i++) {
        json_t *next;
        snprintf(spec, sizeof(spec), "{'command': 'v%d', "
                 "'revisionHistoryLimit': 2}", i);
        snprintf(sfx, sizeof(sfx), "%c%c%c", 'a' + i - 1, 'a' + i - 1,
                 'a' + i - 1);
        next = deploy(d, spec, false, NULL, sfx);
        json_decref(d);
        d = next;
    }
    /* 00001 is tagged; of the rest, the newest and 2 more stay. */
    assert_string_equal(names(d), "hello-00001-aaa,hello-00004-ddd,"
                        "hello-00005-eee,hello-00006-fff");
    assert_int_equal(json_integer_value(json_object_get(d, "revisionCounter")),
                     6);
    json_decref(d);
}

static void
test_delete_preconditions_and_counter(void **state)
{
    json_t *d = history(3), *d4;

    (void)state;
    update_ok(d, "{'toRevisions': {'hello-00002-bbb': 100},"
                 " 'setTags': {'old': 'hello-00001-aaa'}}");
    assert_int_equal(kb_rt_revision_delete(d, "hello-00009-zzz", err,
                                           sizeof(err)), KB_ENOTFOUND);
    assert_int_equal(kb_rt_revision_delete(d, "hello-00003-ccc", err,
                                           sizeof(err)), KB_EPRECOND);
    assert_non_null(strstr(err, "latest"));
    assert_int_equal(kb_rt_revision_delete(d, "hello-00002-bbb", err,
                                           sizeof(err)), KB_EPRECOND);
    assert_int_equal(kb_rt_revision_delete(d, "hello-00001-aaa", err,
                                           sizeof(err)), KB_EPRECOND);
    assert_non_null(strstr(err, "tag"));
    update_ok(d, "{'clearTags': true}");
    assert_int_equal(kb_rt_revision_delete(d, "hello-00001-aaa", err,
                                           sizeof(err)), 0);
    assert_string_equal(names(d), "hello-00002-bbb,hello-00003-ccc");
    /* The counter is never reused. */
    d4 = deploy(d, "{'command': 'v4'}", false, NULL, "ddd");
    assert_string_equal(names(d4), "hello-00002-bbb,hello-00003-ccc,"
                        "hello-00004-ddd");
    json_decref(d);
    json_decref(d4);
}

static void
test_revision_view(void **state)
{
    json_t *d = history(2), *v;
    const json_t *revs;

    (void)state;
    update_ok(d, "{'toRevisions': {'hello-00001-aaa': 30},"
                 " 'setTags': {'a': 'hello-00001-aaa', 'b': 'hello-00001-aaa',"
                 " 'now': 'LATEST'}}");
    revs = json_object_get(d, "revisions");
    v = kb_rt_revision_view(d, json_array_get(revs, 0), "p", "hello");
    assert_string_equal(json_string_value(json_object_get(v, "name")),
                        "projects/p/services/hello/revisions/hello-00001-aaa");
    assert_string_equal(json_string_value(json_object_get(v, "revision")),
                        "hello-00001-aaa");
    assert_true(eqj(json_object_get(v, "traffic"),
                    "{'percent': 30, 'tags': ['a', 'b'], 'latest': false}"));
    json_decref(v);
    v = kb_rt_revision_view(d, json_array_get(revs, 1), "p", "hello");
    assert_true(eqj(json_object_get(v, "traffic"),
                    "{'percent': 70, 'tags': ['now'], 'latest': true}"));
    assert_true(eqj(json_object_get(v, "template"), "{'command': 'v2'}"));
    assert_non_null(json_object_get(v, "createTime"));
    json_decref(v);
    json_decref(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_first_revision),
        cmocka_unit_test(test_new_revision_only_on_template_change),
        cmocka_unit_test(test_no_traffic_and_pinning),
        cmocka_unit_test(test_tag_moves),
        cmocka_unit_test(test_client_traffic_checked_against_revisions),
        cmocka_unit_test(test_update_traffic_split),
        cmocka_unit_test(test_update_traffic_errors),
        cmocka_unit_test(test_update_traffic_tags),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_delete_preconditions_and_counter),
        cmocka_unit_test(test_revision_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
