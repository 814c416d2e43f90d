/*
 * test_template.c - a revision's template (src/runtime/template.c): the
 * defaults a parse fills in, every value syntax (durations, memory, cpu,
 * probes), errors that name their field, and the whole-document check of
 * kb_runtime_validate (traffic shape, revisionHistoryLimit).
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
#include "runtime/template.h"

/* Parse `text` (must succeed). */
static void
parse_ok(const char *text, rt_template *t)
{
    json_t *v = J(text);
    char err[256] = "";

    if (kb_rt_template_parse(v, t, err, sizeof(err)) != 0)
        fail_msg("%s refused: %s", text, err);
    json_decref(v);
}

/* Both the parse and the document check refuse `text`, naming `want`. */
static void
refused(const char *text, const char *want)
{
    json_t *v = J(text);
    rt_template t;
    char err[256] = "";

    if (kb_runtime_validate(v, err, sizeof(err)) != KB_EINVAL)
        fail_msg("%s accepted by validate", text);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("%s: error \"%s\" does not start with \"%s\"", text, err,
                 want);
    /* The parse reads template fields only. */
    if (strncmp(want, "traffic", 7) != 0 && strncmp(want, "image", 5) != 0
        && strncmp(want, "revisionHistoryLimit", 20) != 0) {
        err[0] = '\0';
        if (kb_rt_template_parse(v, &t, err, sizeof(err)) != KB_EINVAL)
            fail_msg("%s accepted by parse", text);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("%s: parse error \"%s\" does not start with \"%s\"",
                     text, err, want);
    }
    json_decref(v);
}

static void
test_defaults(void **state)
{
    rt_template t;

    (void)state;
    parse_ok("{'command': 'srv'}", &t);
    assert_string_equal(t.argv[0], "srv");
    assert_null(t.argv[1]);
    assert_null(t.env[0]);
    assert_null(t.workdir);
    assert_int_equal(t.memory_bytes, 0);
    assert_int_equal(t.cpu_millis, 0);
    assert_int_equal(t.concurrency, 80);
    assert_int_equal(t.min_instances, 0);
    assert_int_equal(t.max_instances, 100);
    assert_false(t.fixed);
    assert_int_equal(t.scale_down_delay_ms, 60000);
    assert_int_equal(t.timeout_ms, 300000);
    assert_int_equal(t.grace_ms, 10000);
    /* startup: TCP every 50 ms, up to 10 s; the others off */
    assert_false(t.startup.http);
    assert_false(t.startup.set);
    assert_int_equal(t.startup.period_ms, 50);
    assert_int_equal(t.startup.failure_threshold, 200);
    assert_int_equal(t.startup.timeout_ms, 1000);
    assert_false(t.readiness.set);
    assert_false(t.liveness.set);
    assert_int_equal(t.readiness.period_ms, 10000);
    assert_int_equal(t.liveness.failure_threshold, 3);
    kb_rt_template_free(&t);
}

static void
test_full_template(void **state)
{
    rt_template t;

    (void)state;
    parse_ok("{'command': '/bin/srv', 'args': ['-v', 'x'],"
             " 'env': {'MODE': 'prod', '_a1': ''}, 'workingDir': '/srv',"
             " 'resources': {'memory': '512Mi', 'cpu': '500m'},"
             " 'concurrency': 10, 'minInstances': 1, 'maxInstances': 5,"
             " 'scaleDownDelay': '500ms', 'timeout': 30,"
             " 'terminationGracePeriod': '1m',"
             " 'startupProbe': {'httpGet': {'path': '/ready'},"
             "   'periodSeconds': 0.1, 'failureThreshold': 50,"
             "   'initialDelaySeconds': 1.5},"
             " 'readinessProbe': {'tcpSocket': {}, 'timeoutSeconds': 2},"
             " 'livenessProbe': {'httpGet': {}},"
             " 'traffic': [{'latestRevision': true, 'percent': 100}],"
             " 'revisions': 'ignored', 'revisionCounter': 3}", &t);
    assert_string_equal(t.argv[0], "/bin/srv");
    assert_string_equal(t.argv[1], "-v");
    assert_string_equal(t.argv[2], "x");
    assert_null(t.argv[3]);
    assert_string_equal(t.env[0], "MODE=prod");
    assert_string_equal(t.env[1], "_a1=");
    assert_null(t.env[2]);
    assert_string_equal(t.workdir, "/srv");
    assert_int_equal(t.memory_bytes, 512ULL << 20);
    assert_int_equal(t.cpu_millis, 500);
    assert_int_equal(t.concurrency, 10);
    assert_int_equal(t.min_instances, 1);
    assert_int_equal(t.max_instances, 5);
    assert_int_equal(t.scale_down_delay_ms, 500);
    assert_int_equal(t.timeout_ms, 30000);
    assert_int_equal(t.grace_ms, 60000);
    assert_true(t.startup.set);
    assert_true(t.startup.http);
    assert_string_equal(t.startup.path, "/ready");
    assert_int_equal(t.startup.period_ms, 100);
    assert_int_equal(t.startup.failure_threshold, 50);
    assert_int_equal(t.startup.initial_delay_ms, 1500);
    assert_int_equal(t.startup.timeout_ms, 1000);
    assert_true(t.readiness.set);
    assert_false(t.readiness.http);
    assert_int_equal(t.readiness.timeout_ms, 2000);
    assert_int_equal(t.readiness.period_ms, 10000);
    assert_true(t.liveness.http);
    assert_string_equal(t.liveness.path, "/");
    kb_rt_template_free(&t);
}

static void
test_fixed_instances(void **state)
{
    rt_template t;

    (void)state;
    parse_ok("{'command': 'x', 'instances': 3}", &t);
    assert_true(t.fixed);
    assert_int_equal(t.min_instances, 3);
    assert_int_equal(t.max_instances, 3);
    kb_rt_template_free(&t);
    parse_ok("{'command': 'x', 'instances': 0}", &t);
    assert_true(t.fixed);
    assert_int_equal(t.max_instances, 0);
    kb_rt_template_free(&t);
}

static void
test_quantities(void **state)
{
    static const struct { const char *mem; uint64_t bytes; } mems[] = {
        { "'512Mi'", 512ULL << 20 }, { "'1Gi'", 1ULL << 30 },
        { "'100M'", 100000000 }, { "'100000k'", 100000000 },
        { "2097152", 2097152 }, { "'2097152'", 2097152 },
        { "'1.5Gi'", 3ULL << 29 },
    };
    static const struct { const char *cpu; uint32_t millis; } cpus[] = {
        { "'2'", 2000 }, { "'0.5'", 500 }, { "'500m'", 500 }, { "1", 1000 },
        { "0.25", 250 }, { "'1m'", 1 },
    };
    static const struct { const char *d; uint64_t ms; } durs[] = {
        { "'500ms'", 500 }, { "'30s'", 30000 }, { "'5m'", 300000 },
        { "'1h'", 3600000 }, { "45", 45000 }, { "'1.5s'", 1500 },
        { "0.2", 200 }, { "'0s'", 0 },
    };
    char text[256];
    rt_template t;

    (void)state;
    for (size_t i = 0; i < sizeof(mems) / sizeof(mems[0]); i++) {
        snprintf(text, sizeof(text), "{'command': 'x', 'resources': "
                 "{'memory': %s}}", mems[i].mem);
        parse_ok(text, &t);
        assert_int_equal(t.memory_bytes, mems[i].bytes);
        kb_rt_template_free(&t);
    }
    for (size_t i = 0; i < sizeof(cpus) / sizeof(cpus[0]); i++) {
        snprintf(text, sizeof(text), "{'command': 'x', 'resources': "
                 "{'cpu': %s}}", cpus[i].cpu);
        parse_ok(text, &t);
        assert_int_equal(t.cpu_millis, cpus[i].millis);
        kb_rt_template_free(&t);
    }
    for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
        snprintf(text, sizeof(text), "{'command': 'x', 'timeout': %s}",
                 durs[i].d);
        parse_ok(text, &t);
        assert_int_equal(t.timeout_ms, durs[i].ms);
        kb_rt_template_free(&t);
    }
    uint64_t ms = 0;
    assert_true(kb_rt_duration_ms("30", &ms));
    assert_int_equal(ms, 30000);
    assert_true(kb_rt_duration_ms("5m", &ms));
    assert_int_equal(ms, 300000);
    assert_false(kb_rt_duration_ms("5 m", &ms));
    assert_false(kb_rt_duration_ms("", &ms));
    assert_false(kb_rt_duration_ms("25h", &ms));
}

static void
test_errors_name_field(void **state)
{
    (void)state;
    refused("[]", "spec");
    refused("{}", "command: required");
    refused("{'command': ''}", "command:");
    refused("{'command': 5}", "command:");
    refused("{'command': 'x', 'args': 'y'}", "args:");
    refused("{'command': 'x', 'args': ['a', 1]}", "args[1]:");
    refused("{'command': 'x', 'env': []}", "env:");
    refused("{'command': 'x', 'env': {'1A': 'v'}}", "env.1A:");
    refused("{'command': 'x', 'env': {'A-B': 'v'}}", "env.A-B:");
    refused("{'command': 'x', 'env': {'A': 1}}", "env.A:");
    refused("{'command': 'x', 'env': {'PORT': '1'}}", "env.PORT: reserved");
    refused("{'command': 'x', 'env': {'K_REVISION': '1'}}",
            "env.K_REVISION: reserved");
    refused("{'command': 'x', 'env': {'K_CONFIGURATION': '1'}}",
            "env.K_CONFIGURATION");
    refused("{'command': 'x', 'env': {'KIBAN_PROJECT': '1'}}",
            "env.KIBAN_PROJECT");
    refused("{'command': 'x', 'workingDir': 'rel/dir'}", "workingDir:");
    refused("{'command': 'x', 'resources': []}", "resources:");
    refused("{'command': 'x', 'resources': {'memory': '1Xi'}}",
            "resources.memory:");
    refused("{'command': 'x', 'resources': {'memory': '10k'}}",
            "resources.memory:");
    refused("{'command': 'x', 'resources': {'memory': -5}}",
            "resources.memory:");
    refused("{'command': 'x', 'resources': {'memory': '1e9'}}",
            "resources.memory:");
    refused("{'command': 'x', 'resources': {'cpu': '1e3m'}}",
            "resources.cpu:");
    refused("{'command': 'x', 'timeout': '1e2s'}", "timeout:");
    refused("{'command': 'x', 'timeout': '1.2.3s'}", "timeout:");
    refused("{'command': 'x', 'resources': {'cpu': '0'}}", "resources.cpu:");
    refused("{'command': 'x', 'resources': {'cpu': 'two'}}",
            "resources.cpu:");
    refused("{'command': 'x', 'resources': {'gpu': 1}}", "resources.gpu:");
    refused("{'command': 'x', 'concurrency': 0}", "concurrency:");
    refused("{'command': 'x', 'concurrency': 1001}", "concurrency:");
    refused("{'command': 'x', 'minInstances': -1}", "minInstances:");
    refused("{'command': 'x', 'maxInstances': 0}", "maxInstances:");
    refused("{'command': 'x', 'minInstances': 5, 'maxInstances': 2}",
            "minInstances:");
    refused("{'command': 'x', 'minInstances': 101}", "minInstances:");
    refused("{'command': 'x', 'instances': 65}", "instances:");
    refused("{'command': 'x', 'instances': 1.5}", "instances:");
    refused("{'command': 'x', 'instances': 2, 'maxInstances': 3}",
            "instances:");
    refused("{'command': 'x', 'scaleDownDelay': '5 m'}", "scaleDownDelay:");
    refused("{'command': 'x', 'scaleDownDelay': '5d'}", "scaleDownDelay:");
    refused("{'command': 'x', 'timeout': -1}", "timeout:");
    refused("{'command': 'x', 'timeout': '25h'}", "timeout:");
    refused("{'command': 'x', 'terminationGracePeriod': true}",
            "terminationGracePeriod:");
    refused("{'command': 'x', 'startupProbe': 1}", "startupProbe:");
    refused("{'command': 'x', 'startupProbe': {'httpGet': {}, "
            "'tcpSocket': {}}}", "startupProbe:");
    refused("{'command': 'x', 'readinessProbe': {'httpGet': "
            "{'path': 'x'}}}", "readinessProbe.httpGet.path:");
    refused("{'command': 'x', 'readinessProbe': {'httpGet': "
            "{'port': 8080}}}", "readinessProbe.httpGet.port:");
    refused("{'command': 'x', 'livenessProbe': {'periodSeconds': 0}}",
            "livenessProbe.periodSeconds:");
    refused("{'command': 'x', 'livenessProbe': {'timeoutSeconds': -1}}",
            "livenessProbe.timeoutSeconds:");
    refused("{'command': 'x', 'livenessProbe': {'failureThreshold': 0}}",
            "livenessProbe.failureThreshold:");
    refused("{'command': 'x', 'livenessProbe': {'exec': {}}}",
            "livenessProbe.exec:");
    refused("{'command': 'x', 'image': 'y'}", "image:");
    refused("{'command': 'x', 'revisionHistoryLimit': 0}",
            "revisionHistoryLimit:");
}

static void
test_traffic_shape(void **state)
{
    static const char *const good[] = {
        "[{'latestRevision': true, 'percent': 100}]",
        "[{'revisionName': 'a-00001-abc', 'percent': 90},"
        " {'latestRevision': true, 'percent': 10, 'tag': 'canary'}]",
        "[{'latestRevision': true, 'percent': 100},"
        " {'revisionName': 'a-00001-abc', 'tag': 'old'},"
        " {'revisionName': 'a-00001-abc', 'tag': 'older', 'percent': 0}]",
        "[{'revisionName': 'a-00001-abc', 'latestRevision': false,"
        " 'percent': 100}]",
    };
    char text[512], err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(text, sizeof(text), "{'command': 'x', 'traffic': %s}",
                 good[i]);
        json_t *v = J(text);
        if (kb_runtime_validate(v, err, sizeof(err)) != 0)
            fail_msg("%s refused: %s", good[i], err);
        json_decref(v);
    }
    refused("{'command': 'x', 'traffic': []}", "traffic:");
    refused("{'command': 'x', 'traffic': {}}", "traffic:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 90}]}", "traffic: percents must sum to 100");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 100}, {'revisionName': 'r', 'percent': 10}]}",
            "traffic: percents must sum to 100");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 100}, {'percent': 0}]}", "traffic[1]:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'revisionName': 'r', 'percent': 100}]}", "traffic[0]:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 101}]}", "traffic[0].percent:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 50}, {'latestRevision': true, 'percent': 50}]}",
            "traffic[1]:");
    refused("{'command': 'x', 'traffic': [{'revisionName': 'r',"
            " 'percent': 50}, {'revisionName': 'r', 'percent': 50}]}",
            "traffic[1].revisionName:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 100, 'tag': 'a'}, {'revisionName': 'r',"
            " 'tag': 'a'}]}", "traffic[1].tag:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 100, 'tag': 'Blue'}]}", "traffic[0].tag:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 100, 'tag': 'a---b'}]}", "traffic[0].tag:");
    refused("{'command': 'x', 'traffic': [{'latestRevision': true,"
            " 'percent': 100, 'url': 'http://x'}]}", "traffic[0].url:");

    assert_true(kb_rt_tag_valid("green"));
    assert_true(kb_rt_tag_valid("v2-canary"));
    assert_false(kb_rt_tag_valid("2x"));
    assert_false(kb_rt_tag_valid("x-"));
    assert_false(kb_rt_tag_valid(""));
    assert_false(kb_rt_tag_valid("abcdefghijabcdefghijabcdefghijabcdefghijabcdefg"));
    assert_true(kb_rt_tag_valid("abcdefghijabcdefghijabcdefghijabcdefghijabcdef"));
}

static void
test_extract_and_equal(void **state)
{
    json_t *a = J("{'command': 'x', 'env': {'A': '1'}, 'traffic': [],"
                  " 'revisionHistoryLimit': 3, 'revisions': [],"
                  " 'timeout': '30s', 'args': null}");
    json_t *b = J("{'command': 'x', 'env': {'A': '1'}, 'timeout': '30s'}");
    json_t *c = J("{'command': 'x', 'env': {'A': '2'}, 'timeout': '30s'}");
    json_t *d = J("{'command': 'x', 'env': {'A': '1'}}");
    json_t *x = kb_rt_template_extract(a);

    (void)state;
    assert_true(json_equal(x, b));      /* only template fields; no nulls */
    assert_true(kb_rt_template_equal(a, b));
    assert_false(kb_rt_template_equal(a, c));
    assert_false(kb_rt_template_equal(b, d));
    assert_false(kb_rt_template_equal(d, b));
    assert_true(kb_rt_template_equal(x, a));
    for (const char *const *f = kb_rt_template_fields; *f != NULL; f++)
        assert_true(strlen(*f) > 0);
    json_decref(x);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_template),
        cmocka_unit_test(test_fixed_instances),
        cmocka_unit_test(test_quantities),
        cmocka_unit_test(test_errors_name_field),
        cmocka_unit_test(test_traffic_shape),
        cmocka_unit_test(test_extract_and_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
