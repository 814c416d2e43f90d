/*
 * test_logs.c - a service's captured output (runtime/logs.h): line
 * splitting across pipe reads, CRLF, long lines, bytes that are not
 * UTF-8, the byte bound, query filters and paging, and waiting queries.
 */
#include "core/err.h"
#include "core/time.h"
#include "runtime/logs.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

typedef struct fx {
    uv_loop_t  loop;
    rt_log    *log;
} fx;

/* What a query callback received. */
typedef struct answer {
    int     calls;
    json_t *res;
} answer;

static int
setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(kb__rt_log_new(&f->loop, 1 << 20, &f->log), 0);
    *state = f;
    return 0;
}

/* Free the log; every waiter's timer must be closed afterwards. */
static int
teardown(void **state)
{
    fx *f = *state;

    kb__rt_log_free(f->log);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void
answer_cb(json_t *res, void *data)
{
    answer *a = data;

    a->calls++;
    json_decref(a->res);
    a->res = res;
}

static void
answer_clear(answer *a)
{
    json_decref(a->res);
    a->res = NULL;
    a->calls = 0;
}

/* Run a query that must answer at once; returns the result (borrowed
 * from a, valid until the next answer_clear). */
static json_t *
query_now(fx *f, answer *a, const char *revision, int64_t since_ns,
          uint64_t after, size_t limit)
{
    kb_rt_log_query q = { revision, since_ns, after, limit, 0 };
    kb_rt_log_wait *h = (kb_rt_log_wait *)1;

    answer_clear(a);
    assert_int_equal(kb__rt_log_query(f->log, &q, answer_cb, a, &h), 0);
    assert_null(h);
    assert_int_equal(a->calls, 1);
    assert_non_null(a->res);
    return a->res;
}

static json_t *
entries(json_t *res)
{
    json_t *e = json_object_get(res, "entries");

    assert_true(json_is_array(e));
    return e;
}

static const char *
text_at(json_t *res, size_t i)
{
    json_t *t = json_object_get(json_array_get(entries(res), i), "text");

    assert_true(json_is_string(t));
    return json_string_value(t);
}

static uint64_t
seq_at(json_t *res, size_t i)
{
    return (uint64_t)json_integer_value(
        json_object_get(json_array_get(entries(res), i), "seq"));
}

static uint64_t
next_seq(json_t *res)
{
    return (uint64_t)json_integer_value(json_object_get(res, "nextSeq"));
}

static void
feed(rt_log_split *s, rt_log *l, const char *text)
{
    assert_int_equal(kb__rt_log_split_feed(s, l, text, strlen(text)), 0);
}

static void
append(fx *f, int64_t t, const char *rev, const char *text)
{
    assert_int_equal(kb__rt_log_append(f->log, t, rev, "i1", RT_LOG_STDOUT,
                                       text, strlen(text)), 0);
}

/* ---- splitting ---- */

static void
test_split_across_chunks(void **state)
{
    fx *f = *state;
    rt_log_split s;
    answer a = {0};
    json_t *r, *e;

    kb__rt_log_split_init(&s, "web-00001-abc", "inst7", RT_LOG_STDERR);
    feed(&s, f->log, "hel");
    assert_int_equal(kb__rt_log_count(f->log), 0);
    feed(&s, f->log, "lo\nwor");
    feed(&s, f->log, "ld\n\npart");
    feed(&s, f->log, "ial");
    assert_int_equal(kb__rt_log_count(f->log), 3);
    kb__rt_log_split_eof(&s, f->log);
    assert_null(s.buf);
    r = query_now(f, &a, NULL, 0, 0, 0);
    assert_int_equal(json_array_size(entries(r)), 4);
    assert_string_equal(text_at(r, 0), "hello");
    assert_string_equal(text_at(r, 1), "world");
    assert_string_equal(text_at(r, 2), "");
    assert_string_equal(text_at(r, 3), "partial");
    e = json_array_get(entries(r), 0);
    assert_int_equal(seq_at(r, 0), 1);
    assert_int_equal(seq_at(r, 3), 4);
    assert_string_equal(json_string_value(json_object_get(e, "revision")),
                        "web-00001-abc");
    assert_string_equal(json_string_value(json_object_get(e, "instance")),
                        "inst7");
    assert_string_equal(json_string_value(json_object_get(e, "stream")),
                        "stderr");
    assert_int_equal(next_seq(r), 4);
    /* EOF with nothing pending adds nothing. */
    kb__rt_log_split_eof(&s, f->log);
    assert_int_equal(kb__rt_log_count(f->log), 4);
    answer_clear(&a);
}

static void
test_split_crlf(void **state)
{
    fx *f = *state;
    rt_log_split s;
    answer a = {0};
    json_t *r;

    kb__rt_log_split_init(&s, "r", "i", RT_LOG_STDOUT);
    feed(&s, f->log, "a\r\nb\r");
    feed(&s, f->log, "\nc\rd\n\r\n");
    r = query_now(f, &a, NULL, 0, 0, 0);
    assert_int_equal(json_array_size(entries(r)), 4);
    assert_string_equal(text_at(r, 0), "a");
    assert_string_equal(text_at(r, 1), "b");
    assert_string_equal(text_at(r, 2), "c\rd");     /* only a final CR goes */
    assert_string_equal(text_at(r, 3), "");
    answer_clear(&a);
    kb__rt_log_split_free(&s);
}

/* Concatenated texts of all entries (caller frees). */
static char *
all_text(fx *f, answer *a, size_t *n_entries)
{
    json_t *r = query_now(f, a, NULL, 0, 0, KB_RT_LOG_LIMIT_MAX);
    size_t total = 0, i;
    json_t *e;
    char *out;

    json_array_foreach(entries(r), i, e)
        total += json_string_length(json_object_get(e, "text"));
    out = malloc(total + 1);
    assert_non_null(out);
    total = 0;
    json_array_foreach(entries(r), i, e) {
        json_t *t = json_object_get(e, "text");

        assert_true(json_string_length(t) <= KB_RT_LOG_LINE_MAX);
        memcpy(out + total, json_string_value(t), json_string_length(t));
        total += json_string_length(t);
    }
    out[total] = '\0';
    *n_entries = json_array_size(entries(r));
    return out;
}

static void
test_long_lines_split(void **state)
{
    fx *f = *state;
    size_t n = 40000, got;
    char *line = malloc(n + 1), *text;
    rt_log_split s;
    answer a = {0};

    assert_non_null(line);
    for (size_t i = 0; i < n; i++)
        line[i] = (char)('a' + i % 26);
    line[n] = '\n';
    kb__rt_log_split_init(&s, "r", "i", RT_LOG_STDOUT);
    for (size_t off = 0; off <= n; off += 1000) {
        size_t k = n + 1 - off < 1000 ? n + 1 - off : 1000;

        assert_int_equal(kb__rt_log_split_feed(&s, f->log, line + off, k),
                         0);
        assert_true(s.len <= KB_RT_LOG_LINE_MAX);
    }
    text = all_text(f, &a, &got);
    assert_int_equal(got, 3);                       /* 16 KiB, 16 KiB, rest */
    assert_int_equal(strlen(text), n);
    assert_memory_equal(text, line, n);
    free(text);
    answer_clear(&a);
    kb__rt_log_split_free(&s);

    /* Two-byte characters fed in odd-sized chunks: no entry cuts one. */
    kb__rt_log_free(f->log);
    assert_int_equal(kb__rt_log_new(&f->loop, 1 << 20, &f->log), 0);
    for (size_t i = 0; i < n; i += 2)
        memcpy(line + i, "\xc3\xa9", 2);            /* é */
    kb__rt_log_split_init(&s, "r", "i", RT_LOG_STDOUT);
    for (size_t off = 0; off < n; off += 777)
        assert_int_equal(kb__rt_log_split_feed(&s, f->log, line + off,
                                               n - off < 777 ? n - off : 777),
                         0);
    kb__rt_log_split_eof(&s, f->log);
    text = all_text(f, &a, &got);
    assert_true(got >= 3);
    assert_int_equal(strlen(text), n);
    assert_memory_equal(text, line, n);
    free(text);
    answer_clear(&a);

    /* A long line appended at once splits the same way. */
    kb__rt_log_free(f->log);
    assert_int_equal(kb__rt_log_new(&f->loop, 1 << 20, &f->log), 0);
    assert_int_equal(kb__rt_log_append(f->log, 1, "r", "i", RT_LOG_STDOUT,
                                       line, n), 0);
    text = all_text(f, &a, &got);
    assert_int_equal(got, 3);
    assert_memory_equal(text, line, n);
    free(text);
    answer_clear(&a);
    free(line);
}

static void
test_binary_becomes_valid_json(void **state)
{
    fx *f = *state;
    static const char bin[] = "\xff\xfe ok \xc3\x28 \xed\xa0\x80 \xc0\xaf"
                              " \xe2\x82\xac \x00z\x1b[0m";
    rt_log_split s;
    answer a = {0};
    json_t *r, *back;
    char *dump;
    json_error_t je;

    kb__rt_log_split_init(&s, "r", "i", RT_LOG_STDOUT);
    assert_int_equal(kb__rt_log_split_feed(&s, f->log, bin, sizeof(bin) - 1),
                     0);
    kb__rt_log_split_eof(&s, f->log);
    r = query_now(f, &a, NULL, 0, 0, 0);
    assert_int_equal(json_array_size(entries(r)), 1);
    {
        json_t *t = json_object_get(json_array_get(entries(r), 0), "text");
        static const char want[] =
            "\xef\xbf\xbd\xef\xbf\xbd ok \xef\xbf\xbd( "
            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd"
            " \xe2\x82\xac \x00z\x1b[0m";

        assert_int_equal(json_string_length(t), sizeof(want) - 1);
        assert_memory_equal(json_string_value(t), want, sizeof(want) - 1);
    }
    dump = json_dumps(r, JSON_COMPACT);
    assert_non_null(dump);
    back = json_loads(dump, JSON_ALLOW_NUL, &je);
    assert_non_null(back);
    assert_true(json_equal(back, r));
    json_decref(back);
    free(dump);
    answer_clear(&a);
}

/* ---- the bound ---- */

static void
test_ring_keeps_bound_and_order(void **state)
{
    fx *f = *state;
    size_t bound = 64 * 1024, count;
    answer a = {0};
    json_t *r;
    char line[64], want[64];

    kb__rt_log_free(f->log);
    assert_int_equal(kb__rt_log_new(&f->loop, bound, &f->log), 0);
    for (int i = 1; i <= 5000; i++) {
        snprintf(line, sizeof(line), "line %d", i);
        append(f, i, "r", line);
        assert_true(kb__rt_log_bytes(f->log) <= bound);
    }
    count = kb__rt_log_count(f->log);
    assert_true(count > 100 && count < 5000);
    assert_true(kb__rt_log_bytes(f->log) > bound / 2);
    assert_int_equal(kb__rt_log_dropped(f->log), 5000 - count);
    assert_int_equal(kb__rt_log_last_seq(f->log), 5000);
    r = query_now(f, &a, NULL, 0, 0, KB_RT_LOG_LIMIT_MAX);
    assert_int_equal(json_array_size(entries(r)), count);
    for (size_t i = 0; i < count; i++)
        assert_int_equal(seq_at(r, i), 5000 - count + 1 + i);
    snprintf(want, sizeof(want), "line %zu", 5000 - count + 1);
    assert_string_equal(text_at(r, 0), want);
    assert_string_equal(text_at(r, count - 1), "line 5000");
    /* An `after` older than what is kept starts at the oldest kept. */
    r = query_now(f, &a, NULL, 0, 3, 1);
    assert_int_equal(seq_at(r, 0), 5000 - count + 1);
    answer_clear(&a);

    /* An entry larger than the whole bound is dropped, not kept. */
    kb__rt_log_free(f->log);
    assert_int_equal(kb__rt_log_new(&f->loop, 200, &f->log), 0);
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    append(f, 1, "r", "short");
    assert_int_equal(kb__rt_log_count(f->log), 1);
    for (int i = 0; i < 3; i++)
        append(f, 1, "r", line);
    assert_true(kb__rt_log_bytes(f->log) <= 200);
    assert_true(kb__rt_log_dropped(f->log) >= 1);
}

/* ---- queries ---- */

static void
test_filters_limit_next_seq(void **state)
{
    fx *f = *state;
    answer a = {0};
    json_t *r;

    append(f, 1500000000, "A", "a1");               /* seq 1 */
    append(f, 2000000000, "B", "b1");               /* seq 2 */
    append(f, 3000000000, "A", "a2");               /* seq 3 */
    append(f, 4000000000, "B", "b2");               /* seq 4 */
    append(f, 5000000000, "A", "a3");               /* seq 5 */

    r = query_now(f, &a, NULL, 0, 0, 0);
    assert_int_equal(json_array_size(entries(r)), 5);
    assert_string_equal(json_string_value(json_object_get(
        json_array_get(entries(r), 0), "time")),
        "1970-01-01T00:00:01.500000000Z");
    assert_int_equal(next_seq(r), 5);

    r = query_now(f, &a, "A", 0, 0, 0);
    assert_int_equal(json_array_size(entries(r)), 3);
    assert_string_equal(text_at(r, 2), "a3");
    assert_int_equal(next_seq(r), 5);

    r = query_now(f, &a, NULL, 3000000000, 0, 0);   /* since */
    assert_int_equal(json_array_size(entries(r)), 3);
    assert_string_equal(text_at(r, 0), "a2");

    r = query_now(f, &a, NULL, 0, 3, 0);            /* after */
    assert_int_equal(json_array_size(entries(r)), 2);
    assert_int_equal(seq_at(r, 0), 4);

    r = query_now(f, &a, "B", 2500000000, 0, 0);    /* both */
    assert_int_equal(json_array_size(entries(r)), 1);
    assert_string_equal(text_at(r, 0), "b2");

    /* Paging with limit: nextSeq is the last returned while more wait. */
    r = query_now(f, &a, "A", 0, 0, 2);
    assert_int_equal(json_array_size(entries(r)), 2);
    assert_int_equal(next_seq(r), 3);
    r = query_now(f, &a, "A", 0, next_seq(r), 2);
    assert_int_equal(json_array_size(entries(r)), 1);
    assert_string_equal(text_at(r, 0), "a3");
    assert_int_equal(next_seq(r), 5);

    /* Nothing new: no entries, nextSeq stays where the log is. */
    r = query_now(f, &a, NULL, 0, 5, 0);
    assert_int_equal(json_array_size(entries(r)), 0);
    assert_int_equal(next_seq(r), 5);
    r = query_now(f, &a, "nope", 0, 0, 0);
    assert_int_equal(json_array_size(entries(r)), 0);
    assert_int_equal(next_seq(r), 5);
    r = query_now(f, &a, NULL, 0, 99, 0);
    assert_int_equal(json_array_size(entries(r)), 0);
    assert_int_equal(next_seq(r), 99);
    answer_clear(&a);
}

/* ---- waiting queries ---- */

static kb_rt_log_wait *
query_wait(fx *f, answer *a, const char *revision, uint64_t after,
           uint64_t wait_ms)
{
    kb_rt_log_query q = { revision, 0, after, 0, wait_ms };
    kb_rt_log_wait *h = NULL;

    assert_int_equal(kb__rt_log_query(f->log, &q, answer_cb, a, &h), 0);
    assert_non_null(h);
    assert_int_equal(a->calls, 0);
    return h;
}

static void
test_waiter_woken_by_matching_line_only(void **state)
{
    fx *f = *state;
    answer a = {0}, b = {0};

    append(f, 1, "A", "old");
    query_wait(f, &a, "B", 1, 60000);
    query_wait(f, &b, NULL, 1, 60000);
    assert_int_equal(kb__rt_log_waiting(f->log), 2);
    append(f, 2, "A", "not for B");
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 1);                   /* any revision */
    assert_string_equal(text_at(b.res, 0), "not for B");
    append(f, 3, "B", "for B");
    assert_int_equal(a.calls, 1);
    assert_int_equal(json_array_size(entries(a.res)), 1);
    assert_string_equal(text_at(a.res, 0), "for B");
    assert_int_equal(next_seq(a.res), 3);
    append(f, 4, "B", "later");
    assert_int_equal(a.calls, 1);                   /* answered once */
    assert_int_equal(kb__rt_log_waiting(f->log), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);               /* timers closed */
    answer_clear(&a);
    answer_clear(&b);
}

/* A query whose callback starts the next one (a follow loop). */
typedef struct follower {
    fx     *f;
    int     calls;
    size_t  seen;
    uint64_t after;
} follower;

static void
follow_cb(json_t *res, void *data)
{
    follower *fl = data;
    kb_rt_log_query q = { NULL, 0, 0, 0, 60000 };
    kb_rt_log_wait *h;

    fl->calls++;
    assert_non_null(res);
    fl->seen += json_array_size(entries(res));
    fl->after = next_seq(res);
    json_decref(res);
    if (fl->calls < 3) {
        q.after = fl->after;
        assert_int_equal(kb__rt_log_query(fl->f->log, &q, follow_cb, fl, &h),
                         0);
    }
}

static void
test_follow_from_callback(void **state)
{
    fx *f = *state;
    follower fl = { f, 0, 0, 0 };
    kb_rt_log_query q = { NULL, 0, 0, 0, 60000 };
    kb_rt_log_wait *h;

    assert_int_equal(kb__rt_log_query(f->log, &q, follow_cb, &fl, &h), 0);
    append(f, 1, "A", "one");
    append(f, 2, "A", "two");
    append(f, 3, "A", "three");
    assert_int_equal(fl.calls, 3);
    assert_int_equal(fl.seen, 3);
    assert_int_equal(fl.after, 3);
    assert_int_equal(kb__rt_log_waiting(f->log), 0);
}

static void
test_wait_timeout_returns_empty(void **state)
{
    fx *f = *state;
    answer a = {0};

    append(f, 1, "A", "old");
    query_wait(f, &a, NULL, 1, 30);
    while (a.calls == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(a.calls, 1);
    assert_int_equal(json_array_size(entries(a.res)), 0);
    assert_int_equal(next_seq(a.res), 1);
    assert_int_equal(kb__rt_log_waiting(f->log), 0);
    answer_clear(&a);
}

static void
test_cancel_answers_at_once(void **state)
{
    fx *f = *state;
    answer a = {0};
    kb_rt_log_wait *h;

    append(f, 1, "A", "old");
    h = query_wait(f, &a, "B", 0, 60000);
    kb__rt_log_cancel(h);
    assert_int_equal(a.calls, 1);
    assert_int_equal(json_array_size(entries(a.res)), 0);
    assert_int_equal(kb__rt_log_waiting(f->log), 0);
    append(f, 2, "B", "after cancel");
    assert_int_equal(a.calls, 1);
    kb__rt_log_cancel(NULL);
    answer_clear(&a);
}

static void
test_too_many_waiters_and_free(void **state)
{
    fx *f = *state;
    answer a[KB_RT_LOG_WAITERS_MAX], extra = {0};
    kb_rt_log_query q = { NULL, 0, 0, 0, 60000 };
    kb_rt_log_wait *h;

    memset(a, 0, sizeof(a));
    for (int i = 0; i < KB_RT_LOG_WAITERS_MAX; i++)
        query_wait(f, &a[i], "B", 0, 60000);
    assert_int_equal(kb__rt_log_query(f->log, &q, answer_cb, &extra, &h),
                     KB_ETOOBIG);
    assert_int_equal(extra.calls, 0);
    /* A query that need not wait is still answered. */
    q.wait_ms = 0;
    assert_int_equal(kb__rt_log_query(f->log, &q, answer_cb, &extra, &h), 0);
    assert_int_equal(extra.calls, 1);
    append(f, 1, "A", "a line for nobody waiting");
    kb__rt_log_free(f->log);
    f->log = NULL;
    for (int i = 0; i < KB_RT_LOG_WAITERS_MAX; i++) {
        assert_int_equal(a[i].calls, 1);
        assert_int_equal(json_array_size(entries(a[i].res)), 0);
        answer_clear(&a[i]);
    }
    answer_clear(&extra);
}

static void
test_bad_create(void **state)
{
    fx *f = *state;
    rt_log *l = (rt_log *)1;

    assert_int_equal(kb__rt_log_new(&f->loop, 0, &l), KB_EINVAL);
    assert_null(l);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_split_across_chunks),
        T(test_split_crlf),
        T(test_long_lines_split),
        T(test_binary_becomes_valid_json),
        T(test_ring_keeps_bound_and_order),
        T(test_filters_limit_next_seq),
        T(test_waiter_woken_by_matching_line_only),
        T(test_follow_from_callback),
        T(test_wait_timeout_returns_empty),
        T(test_cancel_answers_at_once),
        T(test_too_many_waiters_and_free),
        T(test_bad_create),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
