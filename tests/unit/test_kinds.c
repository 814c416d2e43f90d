/*
 * test_kinds.c - the kinds table (src/api/kinds.c): lookup by every name,
 * resource names, and kb_kind_check naming the offending field for each
 * kind of mistake, including the Gateway openapi/openapiFile rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/kinds.h"
#include "core/err.h"


static void
check_ok(const char *kind, const char *spec, bool cli)
{
    const kb_kind *k = kb_kind_find(kind);
    json_t *v = J(spec);
    char field[128], err[256];

    assert_non_null(k);
    if (kb_kind_check(k, v, cli, field, sizeof(field), err, sizeof(err)) != 0)
        fail_msg("%s %s refused: %s: %s", kind, spec, field, err);
    json_decref(v);
}

/* The check must fail on `field` with a reason containing `reason`. */
static void
check_bad(const char *kind, const char *spec, bool cli, const char *field,
          const char *reason)
{
    const kb_kind *k = kb_kind_find(kind);
    json_t *v = J(spec);
    char f[128], err[256];
    int rc;

    assert_non_null(k);
    rc = kb_kind_check(k, v, cli, f, sizeof(f), err, sizeof(err));
    if (rc != KB_EINVAL)
        fail_msg("%s %s accepted", kind, spec);
    if (strcmp(f, field) != 0 || strstr(err, reason) == NULL)
        fail_msg("%s %s: got \"%s: %s\", want \"%s: …%s…\"", kind, spec, f,
                 err, field, reason);
    json_decref(v);
}

static void
test_find(void **state)
{
    const char *service[] = { "Service", "service", "services", "SERVICES",
                              "sErViCe" };
    for (size_t i = 0; i < sizeof(service) / sizeof(service[0]); i++) {
        const kb_kind *k = kb_kind_find(service[i]);
        assert_non_null(k);
        assert_string_equal(k->kind, "Service");
        assert_string_equal(k->collection, "services");
        assert_string_equal(k->singular, "service");
    }
    assert_string_equal(kb_kind_find("gateways")->kind, "Gateway");
    assert_string_equal(kb_kind_find("Gateway")->collection, "gateways");
    assert_null(kb_kind_find("svc"));
    assert_null(kb_kind_find(""));
    assert_null(kb_kind_find(NULL));

    /* the table is NULL-terminated and every kind is findable by itself */
    size_t n = 0;
    for (const kb_kind *const *k = kb_kinds; *k != NULL; k++, n++) {
        assert_ptr_equal(kb_kind_find((*k)->kind), *k);
        assert_ptr_equal(kb_kind_find((*k)->collection), *k);
        assert_ptr_equal(kb_kind_find((*k)->singular), *k);
        assert_non_null((*k)->help);
        for (size_t i = 0; i < (*k)->nfields; i++)
            assert_non_null((*k)->fields[i].help);
    }
    assert_int_equal(n, 3);
}

static void
test_name_valid(void **state)
{
    char max[64], over[65];

    assert_true(kb_name_valid("hello"));
    assert_true(kb_name_valid("a"));
    assert_true(kb_name_valid("hello-world-2"));
    assert_true(kb_name_valid("a1"));
    memset(max, 'a', 63);
    max[63] = '\0';
    assert_true(kb_name_valid(max));
    memset(over, 'a', 64);
    over[64] = '\0';
    assert_false(kb_name_valid(over));
    assert_false(kb_name_valid(""));
    assert_false(kb_name_valid(NULL));
    assert_false(kb_name_valid("Hello"));
    assert_false(kb_name_valid("1abc"));
    assert_false(kb_name_valid("-abc"));
    assert_false(kb_name_valid("abc-"));
    assert_false(kb_name_valid("a_b"));
    assert_false(kb_name_valid("a.b"));
    assert_false(kb_name_valid("a b"));
    assert_false(kb_name_valid("a/b"));
    assert_false(kb_name_valid("caf\xc3\xa9"));
}

static void
test_service_check(void **state)
{
    check_ok("Service", "{'command': './x'}", false);
    check_ok("Service", "{'command': './x', 'args': [], 'env': {},"
                        " 'instances': 0}", false);
    check_ok("Service", "{'command': './x', 'args': ['a', ''],"
                        " 'env': {'A': '1', 'B': ''}, 'instances': 64}", false);
    check_ok("Service", "{'command': './x', 'instances': null}", false);

    check_bad("Service", "{}", false, "command", "is required");
    check_bad("Service", "{'command': ''}", false, "command", "must not be empty");
    check_bad("Service", "{'command': null}", false, "command", "is required");
    check_bad("Service", "{'command': 5}", false, "command", "must be a string");
    check_bad("Service", "{'command': 'a\\u0000b'}", false, "command", "NUL");
    check_bad("Service", "{'command': 'x', 'instances': 'two'}", false,
              "instances", "must be an integer");
    check_bad("Service", "{'command': 'x', 'instances': 1.5}", false,
              "instances", "must be an integer");
    check_bad("Service", "{'command': 'x', 'instances': 65}", false,
              "instances", "between 0 and 64");
    check_bad("Service", "{'command': 'x', 'instances': -1}", false,
              "instances", "between 0 and 64");
    check_bad("Service", "{'command': 'x', 'args': 'a b'}", false, "args",
              "list of strings");
    check_bad("Service", "{'command': 'x', 'args': ['a', 2]}", false,
              "args[1]", "must be a string");
    check_bad("Service", "{'command': 'x', 'env': ['A=1']}", false, "env",
              "mapping of strings");
    check_bad("Service", "{'command': 'x', 'env': {'A': 'x', 'PORT': 8080}}",
              false, "env.PORT", "quote");
    check_bad("Service", "{'command': 'x', 'env': {'A=B': 'x'}}", false,
              "env.A=B", "'='");
    check_bad("Service", "{'command': 'x', 'env': {'': 'x'}}", false,
              "env.", "keys");
    check_bad("Service", "{'command': 'x', 'replicas': 2}", false, "replicas",
              "unknown field");
    check_bad("Service", "[]", false, "", "must be a mapping");
}

/* The revision-era Service fields: durations as text or seconds, objects,
 * the traffic list, and output-only fields passed through unchecked. */
static void
test_service_revision_fields(void **state)
{
    (void)state;
    check_ok("Service", "{'command': 'x', 'workingDir': '/srv',"
             " 'resources': {'memory': '512Mi', 'cpu': '0.5'},"
             " 'concurrency': 80, 'minInstances': 0, 'maxInstances': 100,"
             " 'scaleDownDelay': '30s', 'timeout': 300,"
             " 'terminationGracePeriod': 2.5,"
             " 'startupProbe': {'tcpSocket': {}}, 'readinessProbe': {},"
             " 'livenessProbe': {'httpGet': {'path': '/'}},"
             " 'traffic': [{'latestRevision': true, 'percent': 100}],"
             " 'revisionHistoryLimit': 5,"
             " 'revisions': [{'name': 'x-00001-abc'}], 'revisionCounter': 1}",
             false);
    check_ok("Service", "{'command': 'x', 'revisions': 'anything'}", false);
    check_bad("Service", "{'command': 'x', 'scaleDownDelay': true}", false,
              "scaleDownDelay", "must be a string");
    check_bad("Service", "{'command': 'x', 'timeout': ['1s']}", false,
              "timeout", "must be a string");
    check_bad("Service", "{'command': 'x', 'traffic': {'percent': 100}}",
              false, "traffic", "must be a list of mappings");
    check_bad("Service", "{'command': 'x', 'traffic': [1]}", false,
              "traffic[0]", "must be a mapping");
    check_bad("Service", "{'command': 'x', 'resources': '1Gi'}", false,
              "resources", "must be a mapping");
    check_bad("Service", "{'command': 'x', 'concurrency': 0}", false,
              "concurrency", "between 1 and 1000");
    check_bad("Service", "{'command': 'x', 'revisionHistoryLimit': 0}",
              false, "revisionHistoryLimit", "between 1 and 1000");
    check_bad("Service", "{'command': 'x', 'startupProbe': []}", false,
              "startupProbe", "must be a mapping");
}

static void
test_bounds(void **state)
{
    const kb_kind *k = kb_kind_find("service");
    char field[64], err[256];
    json_t *spec = json_pack("{s:s}", "command", "x"), *args, *env;
    char *cmd;
    int rc;

    /* args: at most 256 items */
    args = json_array();
    for (int i = 0; i < 256; i++)
        json_array_append_new(args, json_string("a"));
    json_object_set_new(spec, "args", args);
    assert_int_equal(kb_kind_check(k, spec, false, field, sizeof(field), err,
                                   sizeof(err)), 0);
    json_array_append_new(args, json_string("a"));
    rc = kb_kind_check(k, spec, false, field, sizeof(field), err, sizeof(err));
    assert_int_equal(rc, KB_EINVAL);
    assert_string_equal(field, "args");
    assert_non_null(strstr(err, "256"));
    json_object_del(spec, "args");

    /* env: at most 256 entries */
    env = json_object();
    for (int i = 0; i < 257; i++) {
        char key[16];
        snprintf(key, sizeof(key), "K%d", i);
        json_object_set_new(env, key, json_string("v"));
    }
    json_object_set_new(spec, "env", env);
    rc = kb_kind_check(k, spec, false, field, sizeof(field), err, sizeof(err));
    assert_int_equal(rc, KB_EINVAL);
    assert_string_equal(field, "env");
    json_object_del(spec, "env");

    /* command: at most 4096 bytes */
    cmd = malloc(4098);
    memset(cmd, 'x', 4096);
    cmd[4096] = '\0';
    json_object_set_new(spec, "command", json_string(cmd));
    assert_int_equal(kb_kind_check(k, spec, false, field, sizeof(field), err,
                                   sizeof(err)), 0);
    cmd[4096] = 'x';
    cmd[4097] = '\0';
    json_object_set_new(spec, "command", json_string(cmd));
    rc = kb_kind_check(k, spec, false, field, sizeof(field), err, sizeof(err));
    assert_int_equal(rc, KB_EINVAL);
    assert_string_equal(field, "command");
    assert_non_null(strstr(err, "4096"));
    free(cmd);
    json_decref(spec);

    /* tiny output buffers are safe */
    spec = J("{'bogus': 1}");
    assert_int_equal(kb_kind_check(k, spec, false, field, 3, err, 5), KB_EINVAL);
    assert_string_equal(field, "bo");
    assert_int_equal(strlen(err), 4);
    json_decref(spec);
}

static void
test_gateway_check(void **state)
{
    /* from the CLI: exactly one of openapi / openapiFile */
    check_ok("Gateway", "{'openapi': {'openapi': '3.0.0'}}", true);
    check_ok("Gateway", "{'openapiFile': 'api.yaml', 'hosts': ['a.example']}",
             true);
    check_bad("Gateway", "{'openapi': {}, 'openapiFile': 'x.yaml'}", true,
              "openapiFile", "set only one");
    check_bad("Gateway", "{'hosts': []}", true, "openapi",
              "one of openapi or openapiFile is required");
    check_bad("Gateway", "{'openapi': null, 'openapiFile': null}", true,
              "openapi", "one of openapi or openapiFile");
    check_bad("Gateway", "{'openapiFile': 3}", true, "openapiFile",
              "must be a string");
    check_bad("Gateway", "{'openapi': 'x'}", true, "openapi",
              "must be a mapping");
    check_bad("Gateway", "{'openapi': {}, 'hosts': 'a'}", true, "hosts",
              "list of strings");

    /* from the API: openapiFile is never accepted, openapi is required */
    check_ok("Gateway", "{'openapi': {'paths': {}}}", false);
    check_bad("Gateway", "{'openapiFile': 'api.yaml'}", false, "openapiFile",
              "resolved by the kiban CLI");
    check_bad("Gateway", "{'hosts': ['a']}", false, "openapi", "is required");

    /* hosts: at most 64 */
    json_t *spec = J("{'openapi': {}}"), *hosts = json_array();
    char field[64], err[256];
    for (int i = 0; i < 65; i++)
        json_array_append_new(hosts, json_string("h.example"));
    json_object_set_new(spec, "hosts", hosts);
    assert_int_equal(kb_kind_check(kb_kind_find("gateway"), spec, false, field,
                                   sizeof(field), err, sizeof(err)), KB_EINVAL);
    assert_string_equal(field, "hosts");
    json_decref(spec);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_service_check),
        cmocka_unit_test(test_service_revision_fields),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_gateway_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
