/*
 * test_core.c - buffers, pools, metrics, ids, timestamps and the server's
 * settings table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/pool.h"
#include "core/time.h"
#include "server/options.h"

static void
buf_respects_its_maximum(void **state)
{
    kb_buf b = KB_BUF_INIT(10);

    assert_int_equal(kb_buf_appends(&b, "hello"), 0);
    assert_int_equal(kb_buf_appendf(&b, "%d", 1234), 0);
    assert_string_equal(kb_buf_cstr(&b), "hello1234");
    /* 9 + 2 > 10: refused, contents unchanged */
    assert_int_equal(kb_buf_appends(&b, "xy"), KB_ETOOBIG);
    assert_string_equal(kb_buf_cstr(&b), "hello1234");
    assert_int_equal(kb_buf_appendc(&b, '!'), 0);
    assert_int_equal(b.len, 10);
    assert_int_equal(kb_buf_appendf(&b, "%s", "z"), KB_ETOOBIG);
    kb_buf_consume(&b, 5);
    assert_string_equal(kb_buf_cstr(&b), "1234!");
    kb_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    assert_string_equal(kb_buf_cstr(&b), "");
    kb_buf_free(&b);
    assert_null(b.data);
}

static void
buf_grows_and_detaches(void **state)
{
    kb_buf b = KB_BUF_INIT(1 << 20);
    char *s;

    for (int i = 0; i < 10000; i++)
        assert_int_equal(kb_buf_appendc(&b, (char)('a' + i % 26)), 0);
    assert_int_equal(b.len, 10000);
    assert_int_equal(b.data[b.len], '\0');
    s = kb_buf_detach(&b);
    assert_int_equal(strlen(s), 10000);
    assert_null(b.data);
    free(s);
    s = kb_buf_detach(&b);          /* empty: still a valid string */
    assert_string_equal(s, "");
    free(s);
}

static int cleanup_order[3];
static int cleanup_n;

static void
record(void *data)
{
    cleanup_order[cleanup_n++] = (int)(intptr_t)data;
}

static void
pool_allocates_aligned_and_runs_cleanups_in_reverse(void **state)
{
    kb_pool *p = kb_pool_create(256);
    char *big;

    assert_non_null(p);
    for (int i = 0; i < 100; i++) {
        void *m = kb_pool_alloc(p, (size_t)(i % 13) + 1);
        assert_non_null(m);
        assert_int_equal((uintptr_t)m % _Alignof(max_align_t), 0);
        memset(m, 0xab, (size_t)(i % 13) + 1);
    }
    big = kb_pool_alloc(p, 10000);       /* larger than a block */
    assert_non_null(big);
    memset(big, 1, 10000);
    assert_string_equal(kb_pool_strndup(p, "abcdef", 3), "abc");
    assert_true(kb_pool_used(p) >= 10000);
    cleanup_n = 0;
    kb_pool_cleanup_add(p, record, (void *)1);
    kb_pool_cleanup_add(p, record, (void *)2);
    kb_pool_cleanup_add(p, record, (void *)3);
    kb_pool_destroy(p);
    assert_int_equal(cleanup_n, 3);
    assert_int_equal(cleanup_order[0], 3);
    assert_int_equal(cleanup_order[2], 1);
}

static void
metrics_render_prometheus_text(void **state)
{
    kb_buf out = KB_BUF_INIT(1 << 20);
    kb_counter *c, *c2;
    kb_histogram *h;
    kb_gauge *g;
    static const double b[] = { 0.1, 1 };

    kb_metrics_reset();
    c = kb_counter_get("t_requests_total", "Requests.", "code=\"2xx\"");
    c2 = kb_counter_get("t_requests_total", "Requests.", "code=\"2xx\"");
    assert_ptr_equal(c, c2);
    kb_counter_add(c, 3);
    kb_counter_add(kb_counter_get("t_requests_total", "", "code=\"5xx\""), 1);
    g = kb_gauge_get("t_inflight", "In flight.", NULL);
    kb_gauge_set(g, 2);
    kb_gauge_add(g, -0.5);
    h = kb_histogram_get("t_latency_seconds", "Latency.", "l=\"a\"", b, 2);
    kb_histogram_observe(h, 0.05);
    kb_histogram_observe(h, 0.5);
    kb_histogram_observe(h, 5);
    /* a name cannot change type */
    assert_null(kb_gauge_get("t_requests_total", "", NULL));

    assert_int_equal(kb_metrics_render(&out), 0);
    const char *t = kb_buf_cstr(&out);
    assert_non_null(strstr(t, "# TYPE t_requests_total counter\n"));
    assert_non_null(strstr(t, "t_requests_total{code=\"2xx\"} 3\n"));
    assert_non_null(strstr(t, "t_requests_total{code=\"5xx\"} 1\n"));
    assert_non_null(strstr(t, "t_inflight 1.5\n"));
    assert_non_null(strstr(t, "t_latency_seconds_bucket{l=\"a\",le=\"0.1\"} 1\n"));
    assert_non_null(strstr(t, "t_latency_seconds_bucket{l=\"a\",le=\"1\"} 2\n"));
    assert_non_null(strstr(t, "t_latency_seconds_bucket{l=\"a\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t, "t_latency_seconds_count{l=\"a\"} 3\n"));
    assert_non_null(strstr(t, "process_resident_memory_bytes "));
    assert_non_null(strstr(t, "process_open_fds "));
    kb_buf_free(&out);

    kb_buf_reset(&out);
    assert_int_equal(kb_metrics_label_escape(&out, "a\"b\\c\nd"), 0);
    assert_string_equal(kb_buf_cstr(&out), "a\\\"b\\\\c\\nd");
    kb_buf_free(&out);
    kb_metrics_reset();
}

static void
ids_are_random_hex_and_uuids(void **state)
{
    char a[33], b[33], u[37];

    assert_int_equal(kb_random_hex(a, 16), 0);
    assert_int_equal(kb_random_hex(b, 16), 0);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
    kb_id_hex(a, 16);
    kb_id_hex(b, 16);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_int_equal(a[32], '\0');
    assert_string_not_equal(a, b);
    assert_int_equal(kb_uuid4(u), 0);
    assert_int_equal(strlen(u), 36);
    assert_int_equal(u[14], '4');
    assert_true(strchr("89ab", u[19]) != NULL);
}

static void
rfc3339_formats(void **state)
{
    char ts[KB_RFC3339_LEN];

    kb_time_rfc3339(ts, sizeof(ts), 1700000000123456789LL, 3);
    assert_string_equal(ts, "2023-11-14T22:13:20.123Z");
    kb_time_rfc3339(ts, sizeof(ts), 1700000000123456789LL, 9);
    assert_string_equal(ts, "2023-11-14T22:13:20.123456789Z");
    kb_time_rfc3339(ts, sizeof(ts), 0, 0);
    assert_string_equal(ts, "1970-01-01T00:00:00Z");
    assert_true(kb_time_mono_ns() > 0);
}

static void
log_levels_parse(void **state)
{
    kb_log_level l;

    assert_int_equal(kb_log_level_parse("warn", &l), 0);
    assert_int_equal(l, KB_LOG_WARN);
    assert_int_equal(kb_log_level_parse("loud", &l), KB_EINVAL);
}

static void
server_options_defaults_flags_and_config(void **state)
{
    kb_server_options o;
    char err[256], path[] = "/tmp/kiban-opts-XXXXXX";
    char *argv1[] = { "server", "--api-listen", "127.0.0.1:9999",
                      "--shutdown-grace=250ms", "--max-body", "1MiB" };
    int fd;

    assert_int_equal(kb_server_options_parse(&o, 1, argv1, err, sizeof(err)), 0);
    assert_string_equal(o.gateway_listen, "127.0.0.1:8080");
    assert_string_equal(o.api_listen, "127.0.0.1:8401");
    assert_int_equal(o.shutdown_grace_ms, 10000);
    kb_server_options_free(&o);

    assert_int_equal(kb_server_options_parse(&o, 6, argv1, err, sizeof(err)), 0);
    assert_string_equal(o.api_listen, "127.0.0.1:9999");
    assert_int_equal(o.shutdown_grace_ms, 250);
    assert_int_equal(o.max_body_bytes, 1024 * 1024);
    kb_server_options_free(&o);

    /* the config file sits under the flags */
    fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *cfg = "gateway_listen: 127.0.0.1:7000\nlog_level: debug\n"
                      "api_listen: 127.0.0.1:1\n";
    assert_int_equal(write(fd, cfg, strlen(cfg)), (ssize_t)strlen(cfg));
    close(fd);
    char *argv2[] = { "server", "--config", path, "--api-listen",
                      "127.0.0.1:2" };
    assert_int_equal(kb_server_options_parse(&o, 5, argv2, err, sizeof(err)), 0);
    assert_string_equal(o.gateway_listen, "127.0.0.1:7000");
    assert_string_equal(o.api_listen, "127.0.0.1:2");
    assert_int_equal(o.log_level, KB_LOG_DEBUG);
    kb_server_options_free(&o);

    /* errors name what is wrong */
    char *bad1[] = { "server", "--nope", "1" };
    assert_int_equal(kb_server_options_parse(&o, 3, bad1, err, sizeof(err)),
                     KB_EINVAL);
    assert_non_null(strstr(err, "--nope"));
    kb_server_options_free(&o);
    char *bad2[] = { "server", "--shutdown-grace", "soon" };
    assert_int_equal(kb_server_options_parse(&o, 3, bad2, err, sizeof(err)),
                     KB_EINVAL);
    assert_non_null(strstr(err, "shutdown-grace"));
    kb_server_options_free(&o);
    char *bad3[] = { "server", "--api-listen" };
    assert_int_equal(kb_server_options_parse(&o, 2, bad3, err, sizeof(err)),
                     KB_EINVAL);
    kb_server_options_free(&o);

    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "colour: blue\n", 13), 13);
    close(fd);
    assert_int_equal(kb_server_options_parse(&o, 3, argv2, err, sizeof(err)),
                     KB_EINVAL);
    assert_non_null(strstr(err, "colour"));
    kb_server_options_free(&o);
    unlink(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_respects_its_maximum),
        cmocka_unit_test(buf_grows_and_detaches),
        cmocka_unit_test(pool_allocates_aligned_and_runs_cleanups_in_reverse),
        cmocka_unit_test(metrics_render_prometheus_text),
        cmocka_unit_test(ids_are_random_hex_and_uuids),
        cmocka_unit_test(rfc3339_formats),
        cmocka_unit_test(log_levels_parse),
        cmocka_unit_test(server_options_defaults_flags_and_config),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
