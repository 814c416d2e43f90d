/*
 * test_scale.c - the runtime's revisions, routing, scaling and health
 * against real kiban-hello instances, through the public API: the traffic
 * split, tags, latest-ready, scale to zero and cold starts, concurrency
 * and wait queues, draining, probes, captured logs and metrics.
 *
 * This binary is also the shim (argv[1] == "__shim").  KIBAN_HELLO names
 * kiban-hello (default: next to this binary).
 */
#include "core/buf.h"
#include "core/err.h"
#include "core/metrics.h"
#include "core/time.h"
#include "runtime/runtime.h"
#include "runtime/runtime_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>

#define RT_FIXTURE_PROCS
#include "rt_fixture.h"

#define MAX_LEASES  16
#define NWAITERS    (KB_RT_MAX_WAITERS + 8)

typedef struct waiter {
    kb_rt_waiter w;
    int          notified;      /* notify calls so far */
} waiter;

typedef struct fx {
    uv_loop_t    loop;
    uv_timer_t   tick;          /* wakes the loop so conditions are polled */
    kb_runtime  *rt;
    kb_rt_lease  lease[MAX_LEASES];  /* released at teardown if held */
    waiter      *waiters;       /* NWAITERS; cancelled at teardown */
} fx;

static void
on_notify(kb_rt_waiter *w)
{
    ((waiter *)w->data)->notified++;
}

static int
fx_setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_non_null(f->waiters = calloc(NWAITERS, sizeof(waiter)));
    for (size_t i = 0; i < NWAITERS; i++) {
        f->waiters[i].w.notify = on_notify;
        f->waiters[i].w.data = &f->waiters[i];
    }
    rt_loop_open(&f->loop, &f->tick);
    assert_int_equal(kb_runtime_create(&f->loop, NULL, self_exe, &f->rt), 0);
    kb__runtime_set_timing(f->rt, 2000, 8000, 1000);
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx *f = *state;
    int done = 0;

    /* A failed test may leave waiters queued and leases held. */
    for (size_t i = 0; i < NWAITERS; i++)
        (void)kb_runtime_wait_cancel(f->rt, &f->waiters[i].w);
    for (size_t i = 0; i < MAX_LEASES; i++)
        kb_runtime_release(f->rt, &f->lease[i], 0, 200);
    kb_runtime_shutdown(f->rt, 2000, flag_set, &done);
    EVENTUALLY(f, done, 10000);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f->waiters);
    free(f);
    return 0;
}

/* ---- helpers ---- */

/* A template running kiban-hello with `extra` members (JSON, may be ""),
 * in one of a few rotating buffers. */
static const char *
tpl_hello(const char *extra)
{
    static char bufs[8][PATH_MAX + 4096];
    static unsigned next;
    char *b = bufs[next++ % 8];

    snprintf(b, sizeof(bufs[0]), "{\"command\":\"%s\"%s%s}", hello,
             extra[0] != '\0' ? "," : "", extra);
    return b;
}

/* Revision i (1-based) of service `name`: "NAME-0000i-abc". */
static const char *
rev_name(const char *name, int i)
{
    static char bufs[8][128];
    static unsigned next;
    char *b = bufs[next++ % 8];

    snprintf(b, sizeof(bufs[0]), "%s-%05d-abc", name, i);
    return b;
}

/*
 * Apply a Service document as the API stores it: revisions first..
 * first+n-1, tpls[k] the template of revision first+k, then `traffic`.
 */
static void
apply_revs(fx *f, const char *name, int first, const char *const *tpls,
           int n, const char *traffic)
{
    char json[65536], err[256] = "";
    int k = snprintf(json, sizeof(json), "{\"revisions\":[");

    for (int i = 0; i < n; i++)
        k += snprintf(json + k, sizeof(json) - (size_t)k,
                      "%s{\"name\":\"%s\",\"template\":%s}",
                      i > 0 ? "," : "", rev_name(name, first + i), tpls[i]);
    k += snprintf(json + k, sizeof(json) - (size_t)k, "],\"traffic\":%s}",
                  traffic);
    assert_true(k < (int)sizeof(json));
    json_error_t jerr;
    json_t *doc = json_loads(json, 0, &jerr);
    if (doc == NULL)
        fail_msg("bad test JSON: %s: %s", json, jerr.text);
    /* The top-level template is the newest revision's, as stored. */
    json_t *revs = json_object_get(doc, "revisions");
    json_object_update(doc, json_object_get(json_array_get(revs,
                       json_array_size(revs) - 1), "template"));
    int rc = kb_runtime_apply(f->rt, "p", name, doc, err, sizeof(err));
    json_decref(doc);
    if (rc != 0)
        fail_msg("apply %s: %d %s", name, rc, err);
}

static const char *const LATEST100 =
    "[{\"latestRevision\":true,\"percent\":100}]";

/* A field of a revision's status (-1 when absent or not an integer). */
static json_int_t
rev_int(fx *f, const char *name, const char *rev, const char *field)
{
    json_t *st = kb_runtime_revision_status(f->rt, "p", name, rev);
    json_t *v = json_object_get(st, field);
    json_int_t r = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(st);
    return r;
}

static bool
rev_ready(fx *f, const char *name, const char *rev)
{
    return rev_int(f, name, rev, "readyInstances") > 0;
}

/* The revision's Ready condition reason is `want`. */
static bool
rev_reason_is(fx *f, const char *name, const char *rev, const char *want)
{
    json_t *st = kb_runtime_revision_status(f->rt, "p", name, rev);
    json_t *c = json_array_get(json_object_get(st, "conditions"), 0);
    const char *r = json_string_value(json_object_get(c, "reason"));
    bool ok = r != NULL && strcmp(r, want) == 0;
    json_decref(st);
    return ok;
}

/* A field of instance i of a revision (-1 when absent). */
static json_int_t
inst_int(fx *f, const char *name, const char *rev, size_t i,
         const char *field)
{
    json_t *st = kb_runtime_revision_status(f->rt, "p", name, rev);
    json_t *in = json_array_get(json_object_get(st, "instances"), i);
    json_t *v = json_object_get(in, field);
    json_int_t r = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(st);
    return r;
}

/* How many instances a revision lists (stopped ones are not listed). */
static size_t
inst_count(fx *f, const char *name, const char *rev)
{
    json_t *st = kb_runtime_revision_status(f->rt, "p", name, rev);
    size_t n = json_array_size(json_object_get(st, "instances"));
    json_decref(st);
    return n;
}

/* kb_runtime_acquire on project "p" with an optional test waiter. */
static int
acq(fx *f, const char *name, const char *tag, const char *rev, uint32_t rnd,
    waiter *w, kb_rt_lease *lease)
{
    return kb_runtime_acquire(f->rt, "p", name, tag, rev, rnd,
                              w != NULL ? &w->w : NULL, lease);
}

static uint32_t
xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* The pid kiban-hello reports on /hello at that port (-1: no answer). */
static long
hello_pid(int port)
{
    char body[4096];

    if (http(port, "GET", "/hello", body, sizeof(body)) != 200)
        return -1;
    json_t *j = json_loads(body, 0, NULL);
    long pid = (long)json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    return pid;
}

static int log_count(fx *f, const char *name, const char *text);

/* ---- the traffic split, tags, stickiness ---- */

static void
test_split_tags_and_stickiness(void **state)
{
    fx *f = *state;
    const char *tpls[] = { tpl_hello("\"minInstances\":1"),
                           tpl_hello("\"minInstances\":1") };
    const char *r1 = rev_name("split", 1), *r2 = rev_name("split", 2);
    kb_rt_lease l;
    int n1 = 0, n2 = 0;
    uint32_t seed = 0x9e3779b9u;

    apply_revs(f, "split", 1, tpls, 2,
               "[{\"revisionName\":\"split-00001-abc\",\"percent\":90},"
               "{\"revisionName\":\"split-00002-abc\",\"percent\":10,"
               "\"tag\":\"green\"}]");
    EVENTUALLY(f, rev_ready(f, "split", r1) && rev_ready(f, "split", r2),
               8000);

    for (int i = 0; i < 2000; i++) {
        assert_int_equal(acq(f, "split", NULL, NULL, xorshift(&seed), NULL,
                             &l), 0);
        if (strcmp(l.ep.revision, r1) == 0)
            n1++;
        else if (strcmp(l.ep.revision, r2) == 0)
            n2++;
        else
            fail_msg("acquire went to %s", l.ep.revision);
        kb_runtime_release(f->rt, &l, 0, 200);
        assert_null(l.instance);
    }
    /* 90/10 over 2,000: expect 1,800/200; a wide band around it. */
    if (n1 < 1650 || n1 > 1950 || n2 < 50 || n2 > 350)
        fail_msg("split 90/10 gave %d/%d", n1, n2);

    /* The tag pins its revision whatever rnd says. */
    for (uint32_t rnd = 0; rnd < 100; rnd++) {
        assert_int_equal(acq(f, "split", "green", NULL, rnd, NULL, &l), 0);
        assert_string_equal(l.ep.revision, r2);
        kb_runtime_release(f->rt, &l, 0, 200);
    }
    assert_int_equal(acq(f, "split", "blue", NULL, 0, NULL, &l),
                     KB_ENOTFOUND);
    assert_null(l.instance);
    assert_int_equal(acq(f, "nosuch", NULL, NULL, 0, NULL, &l),
                     KB_ENOTFOUND);

    /* A retry names its revision: it sticks, tag or split aside. */
    for (uint32_t rnd = 0; rnd < 100; rnd++) {
        assert_int_equal(acq(f, "split", NULL, r2, rnd, NULL, &l), 0);
        assert_string_equal(l.ep.revision, r2);
        kb_runtime_release(f->rt, &l, 0, 200);
        assert_int_equal(acq(f, "split", "green", r1, rnd, NULL, &l), 0);
        assert_string_equal(l.ep.revision, r1);
        kb_runtime_release(f->rt, &l, 0, 200);
    }
    /* A revision that is gone falls back to the split (rnd 0 → R1). */
    assert_int_equal(acq(f, "split", NULL, "split-00009-zzz", 0, NULL, &l),
                     0);
    assert_string_equal(l.ep.revision, r1);
    kb_runtime_release(f->rt, &l, 0, 200);
}

/* ---- latest ready ---- */

static void
test_latest_ready(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("lr", 1), *r2 = rev_name("lr", 2);
    const char *r3 = rev_name("lr", 3);
    const char *slow = tpl_hello("\"env\":{\"HELLO_START_DELAY_MS\":\"1500\"}");
    const char *tpls[] = { tpl_hello(""), slow,
                           "{\"command\":\"sh\",\"args\":[\"-c\","
                           "\"echo lr-boom-r3 >&2; exit 1\"]}" };
    kb_rt_lease l;

    apply_revs(f, "lr", 1, tpls, 1, LATEST100);
    EVENTUALLY(f, rev_ready(f, "lr", r1), 8000);

    /* R2 is the latest but starts slowly: R1 keeps the traffic. */
    apply_revs(f, "lr", 1, tpls, 2, LATEST100);
    assert_false(rev_ready(f, "lr", r2));
    assert_int_equal(rev_int(f, "lr", r2, "percent"), 0);
    assert_int_equal(rev_int(f, "lr", r1, "percent"), 100);
    for (uint32_t rnd = 0; rnd < 300 && !rev_ready(f, "lr", r2);
         rnd += 7) {
        assert_int_equal(acq(f, "lr", NULL, NULL, rnd, NULL, &l), 0);
        assert_string_equal(l.ep.revision, r1);
        kb_runtime_release(f->rt, &l, 0, 200);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    EVENTUALLY(f, rev_ready(f, "lr", r2), 8000);
    assert_int_equal(rev_int(f, "lr", r2, "percent"), 100);
    for (uint32_t rnd = 0; rnd < 100; rnd++) {
        assert_int_equal(acq(f, "lr", NULL, NULL, rnd, NULL, &l), 0);
        assert_string_equal(l.ep.revision, r2);
        char body[1024];
        assert_int_equal(http(l.ep.port, "GET", "/hello", body,
                              sizeof(body)), 200);
        assert_non_null(strstr(body, r2));      /* "revision":"lr-00002…" */
        kb_runtime_release(f->rt, &l, 0, 200);
    }
    /* R1 lost its share: it scales to zero. */
    EVENTUALLY(f, inst_count(f, "lr", r1) == 0, 8000);

    /* R3 never gets ready: no LATEST traffic, CrashLoopBackOff with its
     * last stderr line, and a request pinned to it fails at once. */
    apply_revs(f, "lr", 1, tpls, 3, LATEST100);
    EVENTUALLY(f, rev_reason_is(f, "lr", r3, "CrashLoopBackOff"), 10000);
    json_t *st = kb_runtime_revision_status(f->rt, "p", "lr", r3);
    json_t *c = json_array_get(json_object_get(st, "conditions"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "status")),
                        "False");
    const char *msg = json_string_value(json_object_get(c, "message"));
    assert_non_null(msg);
    if (strstr(msg, "lr-boom-r3") == NULL)
        fail_msg("message without the last stderr line: %s", msg);
    assert_false(json_is_true(json_object_get(st, "ready")));
    json_decref(st);
    assert_int_equal(rev_int(f, "lr", r3, "percent"), 0);
    assert_int_equal(rev_int(f, "lr", r2, "percent"), 100);
    for (uint32_t rnd = 0; rnd < 100; rnd++) {
        assert_int_equal(acq(f, "lr", NULL, NULL, rnd, NULL, &l), 0);
        assert_string_equal(l.ep.revision, r2);
        kb_runtime_release(f->rt, &l, 0, 200);
    }
    assert_int_equal(acq(f, "lr", NULL, r3, 0, &f->waiters[0], &l),
                     KB_EUNAVAIL);
    assert_null(l.instance);
    assert_false(kb_runtime_wait_cancel(f->rt, &f->waiters[0].w));
    /* The service's status names the failed newest revision. */
    st = kb_runtime_status(f->rt, "p", "lr");
    assert_string_equal(json_string_value(json_object_get(st,
                        "latestCreatedRevisionName")), r3);
    c = json_array_get(json_object_get(st, "conditions"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "reason")),
                        "RevisionFailed");
    json_decref(st);
}

/* ---- scale to zero, cold start ---- */

static void
test_scale_to_zero_and_cold_start(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("zero", 1);
    const char *tpls[] = { tpl_hello("\"minInstances\":0,"
                                     "\"scaleDownDelay\":\"300ms\"") };
    waiter *w = &f->waiters[0];
    kb_rt_lease *l = &f->lease[0];

    apply_revs(f, "zero", 1, tpls, 1, LATEST100);
    /* The new revision proves it starts, then goes idle to zero. */
    EVENTUALLY(f, rev_ready(f, "zero", r1), 8000);
    json_int_t shim = inst_int(f, "zero", r1, 0, "pid");
    assert_true(shim > 0);
    EVENTUALLY(f, inst_count(f, "zero", r1) == 0, 8000);
    EVENTUALLY(f, group_gone((int)shim), 8000);
    assert_int_equal(rev_int(f, "zero", r1, "coldStarts"), 0);
    assert_int_equal(rev_int(f, "zero", r1, "desired"), 0);

    /* A request finds none: it waits, an instance starts for it. */
    assert_int_equal(acq(f, "zero", NULL, NULL, 1, w, l), KB_EAGAIN);
    assert_null(l->instance);
    assert_string_equal(l->ep.revision, r1);
    assert_int_equal(rev_int(f, "zero", r1, "waiting"), 1);
    EVENTUALLY(f, w->notified == 1, 8000);
    assert_int_equal(rev_int(f, "zero", r1, "waiting"), 0);
    char rname[96];
    snprintf(rname, sizeof(rname), "%s", l->ep.revision);
    assert_int_equal(acq(f, "zero", NULL, rname, 1, NULL, l), 0);
    assert_non_null(l->instance);
    assert_int_equal(rev_int(f, "zero", r1, "coldStarts"), 1);
    assert_int_equal(rev_int(f, "zero", r1, "inflight"), 1);
    char body[1024];
    assert_int_equal(http(l->ep.port, "GET", "/hello", body,
                          sizeof(body)), 200);
    kb_runtime_release(f->rt, l, 0, 200);
    assert_int_equal(w->notified, 1);           /* once */

    /* Idle again: back to zero. */
    EVENTUALLY(f, inst_count(f, "zero", r1) == 0, 8000);
    assert_int_equal(rev_int(f, "zero", r1, "coldStarts"), 1);
}

/* ---- concurrency, queues, scale-out ---- */

static void
test_concurrency_and_queue(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("conc", 1);
    const char *tpls[] = { tpl_hello("\"concurrency\":2,\"minInstances\":1,"
                                     "\"maxInstances\":1") };
    waiter *w = f->waiters;
    kb_rt_lease *l = f->lease;

    apply_revs(f, "conc", 1, tpls, 1, LATEST100);
    EVENTUALLY(f, rev_ready(f, "conc", r1), 8000);
    assert_false(kb_runtime_at_capacity(f->rt, "p", "conc", "nope"));

    assert_int_equal(acq(f, "conc", NULL, NULL, 1, &w[0], &l[0]), 0);
    assert_int_equal(acq(f, "conc", NULL, NULL, 2, &w[1], &l[1]), 0);
    assert_ptr_equal(l[0].instance, l[1].instance);
    assert_int_equal(acq(f, "conc", NULL, NULL, 3, &w[2], &l[2]), KB_EAGAIN);
    assert_string_equal(l[2].ep.revision, r1);
    assert_true(kb_runtime_at_capacity(f->rt, "p", "conc", r1));
    assert_int_equal(rev_int(f, "conc", r1, "waiting"), 1);
    assert_int_equal(rev_int(f, "conc", r1, "inflight"), 2);

    /* Cancel while queued: true, and no notify. */
    assert_int_equal(acq(f, "conc", NULL, NULL, 4, &w[3], &l[3]), KB_EAGAIN);
    assert_true(kb_runtime_wait_cancel(f->rt, &w[3].w));
    assert_false(kb_runtime_wait_cancel(f->rt, &w[3].w));

    /* A release wakes the first waiter (only it). */
    kb_runtime_release(f->rt, &l[0], 0, 200);
    assert_int_equal(w[2].notified, 1);
    assert_int_equal(w[3].notified, 0);
    assert_false(kb_runtime_wait_cancel(f->rt, &w[2].w));
    char rname[96];
    snprintf(rname, sizeof(rname), "%s", l[2].ep.revision);
    assert_int_equal(acq(f, "conc", NULL, rname, 5, NULL, &l[2]), 0);
    /* Still one instance: maxInstances held. */
    EVENTUALLY(f, rev_int(f, "conc", r1, "desired") == 1, 2000);
    assert_int_equal(inst_count(f, "conc", r1), 1);

    /* A full queue refuses. */
    for (size_t i = 4; i < 4 + KB_RT_MAX_WAITERS; i++)
        assert_int_equal(acq(f, "conc", NULL, NULL, (uint32_t)i, &w[i],
                             &l[3]), KB_EAGAIN);
    assert_int_equal(rev_int(f, "conc", r1, "waiting"), KB_RT_MAX_WAITERS);
    assert_int_equal(acq(f, "conc", NULL, NULL, 7, &w[4 + KB_RT_MAX_WAITERS],
                         &l[3]), KB_ETOOBIG);
    assert_false(kb_runtime_wait_cancel(f->rt,
                                        &w[4 + KB_RT_MAX_WAITERS].w));
    for (size_t i = 4; i < 4 + KB_RT_MAX_WAITERS; i++)
        assert_true(kb_runtime_wait_cancel(f->rt, &w[i].w));
    assert_int_equal(rev_int(f, "conc", r1, "waiting"), 0);
    kb_runtime_release(f->rt, &l[1], 0, 200);
    kb_runtime_release(f->rt, &l[2], 0, 200);
    for (size_t i = 0; i < NWAITERS; i++)
        assert_true(w[i].notified <= 1);
    assert_int_equal(rev_int(f, "conc", r1, "inflight"), 0);
}

static void
test_scale_out(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("wide", 1);
    const char *tpls[] = { tpl_hello("\"concurrency\":2,\"minInstances\":1,"
                                     "\"maxInstances\":3") };
    waiter *w = f->waiters;
    kb_rt_lease *l = f->lease;
    bool queued[5] = { false };
    int held = 0;

    apply_revs(f, "wide", 1, tpls, 1, LATEST100);
    EVENTUALLY(f, rev_ready(f, "wide", r1), 8000);

    /* Five requests held, two per instance: three instances. */
    uint64_t end = kb_time_mono_ms() + 15000;
    while (held < 5) {
        if (kb_time_mono_ms() >= end)
            fail_msg("only %d of 5 leases within 15 s", held);
        for (int i = 0; i < 5; i++) {
            if (l[i].instance != NULL || queued[i])
                continue;
            w[i].notified = 0;
            int rc = acq(f, "wide", NULL, NULL, (uint32_t)i, &w[i], &l[i]);
            if (rc == 0)
                held++;
            else if (rc == KB_EAGAIN)
                queued[i] = true;
            else
                fail_msg("acquire: %d", rc);
        }
        uv_run(&f->loop, UV_RUN_ONCE);
        for (int i = 0; i < 5; i++)
            if (queued[i] && w[i].notified > 0)
                queued[i] = false;
    }
    EVENTUALLY(f, rev_int(f, "wide", r1, "readyInstances") == 3
                  && rev_int(f, "wide", r1, "desired") == 3, 8000);
    assert_int_equal(inst_count(f, "wide", r1), 3);
    assert_true(kb_runtime_at_capacity(f->rt, "p", "wide", r1));
    int per[3] = { 0 };
    void *ins[3] = { NULL };
    for (int i = 0; i < 5; i++) {
        int k = 0;
        while (k < 3 && ins[k] != NULL && ins[k] != l[i].instance)
            k++;
        assert_true(k < 3);
        ins[k] = l[i].instance;
        per[k]++;
    }
    for (int k = 0; k < 3; k++)
        assert_true(per[k] >= 1 && per[k] <= 2);
    /* No instance was started twice: a waiter woken by a new instance
     * does not count as gone demand while it comes back. */
    EVENTUALLY(f, log_count(f, "wide", "listening on") >= 3, 5000);
    assert_int_equal(log_count(f, "wide", "listening on"), 3);
    for (int i = 0; i < 5; i++)
        kb_runtime_release(f->rt, &l[i], 0, 200);
    assert_int_equal(rev_int(f, "wide", r1, "inflight"), 0);
}

/* ---- draining ---- */

typedef struct slow_req {
    int port;
    int status;
    char body[256];
    _Atomic int done;
} slow_req;

static void *
slow_thread(void *arg)
{
    slow_req *r = arg;

    r->status = http(r->port, "GET", "/sleep/1500", r->body,
                     sizeof(r->body));
    atomic_store(&r->done, 1);
    return NULL;
}

static void
test_drain_waits_for_leases(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("dr", 1), *r2 = rev_name("dr", 2);
    const char *tpls[] = { tpl_hello("\"minInstances\":1"),
                           tpl_hello("\"minInstances\":1") };
    kb_rt_lease *l = &f->lease[0], tmp;
    slow_req req = { 0 };
    pthread_t th;

    apply_revs(f, "dr", 1, tpls, 1, LATEST100);
    EVENTUALLY(f, rev_ready(f, "dr", r1), 8000);
    json_int_t shim = inst_int(f, "dr", r1, 0, "pid");
    assert_true(shim > 0);
    assert_int_equal(acq(f, "dr", NULL, NULL, 0, NULL, l), 0);
    rt_instance *in = l->instance;

    /* A real request is in flight on R1 when R1 leaves the document. */
    req.port = l->ep.port;
    assert_int_equal(pthread_create(&th, NULL, slow_thread, &req), 0);
    apply_revs(f, "dr", 2, &tpls[1], 1, LATEST100);
    assert_null(kb_runtime_revision_status(f->rt, "p", "dr", r1));
    assert_int_equal(in->state, RT_DRAINING);
    /* Not picked any more, even when asked for by name. */
    int rc = acq(f, "dr", NULL, r1, 0, NULL, &tmp);
    assert_true(rc == 0 || rc == KB_EAGAIN);
    assert_string_equal(tmp.ep.revision, r2);
    kb_runtime_release(f->rt, &tmp, 0, 200);

    /* R2 comes up, the request completes; R1 still runs: a lease. */
    EVENTUALLY(f, rev_ready(f, "dr", r2) && atomic_load(&req.done), 10000);
    pthread_join(th, NULL);
    assert_int_equal(req.status, 200);
    assert_non_null(strstr(req.body, "\"slept\":1500"));
    /* (The request took 1.5 s: several scale passes ran meanwhile.) */
    assert_int_equal(in->state, RT_DRAINING);
    assert_false(group_gone((int)shim));

    /* The last lease goes: R1's instance stops. */
    kb_runtime_release(f->rt, l, 0, 200);
    EVENTUALLY(f, group_gone((int)shim), 8000);
    json_t *st = kb_runtime_status(f->rt, "p", "dr");
    assert_int_equal(json_array_size(json_object_get(st, "instances")), 1);
    assert_int_equal(json_array_size(json_object_get(st, "revisions")), 1);
    json_decref(st);
}

/* ---- probes ---- */

static void
test_startup_probe_waits_for_slow_start(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("slow", 1);
    const char *tpls[] = { tpl_hello(
        "\"minInstances\":1,\"env\":{\"HELLO_START_DELAY_MS\":\"500\"},"
        "\"startupProbe\":{\"httpGet\":{\"path\":\"/healthz\"},"
        "\"periodSeconds\":0.05}") };
    kb_rt_lease l;

    uint64_t t0 = kb_time_mono_ms();
    apply_revs(f, "slow", 1, tpls, 1, LATEST100);
    assert_int_equal(acq(f, "slow", NULL, NULL, 0, NULL, &l), KB_EAGAIN);
    assert_true(rev_reason_is(f, "slow", r1, "Deploying"));
    EVENTUALLY(f, rev_ready(f, "slow", r1), 8000);
    /* It could not have answered before its delay. */
    assert_true(kb_time_mono_ms() - t0 >= 500);
    assert_int_equal(inst_int(f, "slow", r1, 0, "restarts"), 0);
    json_t *st = kb_runtime_revision_status(f->rt, "p", "slow", r1);
    json_t *c = json_array_get(json_object_get(st, "conditions"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "status")),
                        "True");
    json_decref(st);
    assert_int_equal(acq(f, "slow", NULL, NULL, 0, NULL, &l), 0);
    kb_runtime_release(f->rt, &l, 0, 200);
}

static void
test_readiness_probe(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("rdy", 1);
    const char *tpls[] = { tpl_hello(
        "\"minInstances\":1,\"readinessProbe\":{\"httpGet\":{\"path\":"
        "\"/healthz\"},\"periodSeconds\":0.1,\"failureThreshold\":1}") };
    kb_rt_lease l;
    char body[256];

    apply_revs(f, "rdy", 1, tpls, 1, LATEST100);
    EVENTUALLY(f, rev_ready(f, "rdy", r1), 8000);
    json_int_t port = inst_int(f, "rdy", r1, 0, "port");
    long pid = hello_pid((int)port);
    assert_true(pid > 0);

    assert_int_equal(http((int)port, "GET", "/health/fail", body,
                          sizeof(body)), 200);
    EVENTUALLY(f, rev_int(f, "rdy", r1, "readyInstances") == 0, 5000);
    assert_int_equal(acq(f, "rdy", NULL, NULL, 0, NULL, &l), KB_EAGAIN);
    /* Out of rotation, not restarted. */
    assert_int_equal(inst_count(f, "rdy", r1), 1);
    assert_int_equal(inst_int(f, "rdy", r1, 0, "restarts"), 0);

    assert_int_equal(http((int)port, "GET", "/health/ok", body,
                          sizeof(body)), 200);
    EVENTUALLY(f, rev_ready(f, "rdy", r1), 5000);
    assert_int_equal(acq(f, "rdy", NULL, NULL, 0, NULL, &l), 0);
    assert_int_equal(l.ep.port, port);
    kb_runtime_release(f->rt, &l, 0, 200);
    assert_int_equal(hello_pid((int)port), pid);
}

static void
test_liveness_probe_restarts(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("live", 1);
    const char *tpls[] = { tpl_hello(
        "\"minInstances\":1,\"livenessProbe\":{\"httpGet\":{\"path\":"
        "\"/healthz\"},\"periodSeconds\":0.1,\"failureThreshold\":1}") };
    char body[256];

    apply_revs(f, "live", 1, tpls, 1, LATEST100);
    EVENTUALLY(f, rev_ready(f, "live", r1), 8000);
    json_int_t port = inst_int(f, "live", r1, 0, "port");
    json_int_t shim = inst_int(f, "live", r1, 0, "pid");
    long pid = hello_pid((int)port);
    assert_true(pid > 0);
    assert_int_equal(inst_int(f, "live", r1, 0, "restarts"), 0);

    assert_int_equal(http((int)port, "GET", "/health/fail", body,
                          sizeof(body)), 200);
    EVENTUALLY(f, inst_int(f, "live", r1, 0, "restarts") >= 1, 5000);
    EVENTUALLY(f, rev_ready(f, "live", r1), 8000);
    assert_true(rev_int(f, "live", r1, "restarts") >= 1);
    assert_int_not_equal(inst_int(f, "live", r1, 0, "pid"), shim);
    long pid2 = hello_pid((int)inst_int(f, "live", r1, 0, "port"));
    assert_true(pid2 > 0);
    assert_int_not_equal(pid2, pid);
    EVENTUALLY(f, group_gone((int)shim), 5000);
}

static void
test_startup_probe_fails(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("s404", 1);
    const char *tpls[] = { tpl_hello(
        "\"minInstances\":1,\"startupProbe\":{\"httpGet\":{\"path\":"
        "\"/no-such-path\"},\"periodSeconds\":0.05,"
        "\"failureThreshold\":2}") };
    kb_rt_lease l;

    apply_revs(f, "s404", 1, tpls, 1, LATEST100);
    EVENTUALLY(f, rev_reason_is(f, "s404", r1, "StartupProbeFailed"), 10000);
    json_t *st = kb_runtime_revision_status(f->rt, "p", "s404", r1);
    json_t *c = json_array_get(json_object_get(st, "conditions"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "status")),
                        "False");
    const char *msg = json_string_value(json_object_get(c, "message"));
    if (msg == NULL || strstr(msg, "startup probe") == NULL)
        fail_msg("message: %s", msg ? msg : "(none)");
    json_decref(st);
    assert_int_equal(rev_int(f, "s404", r1, "readyInstances"), 0);
    assert_int_equal(acq(f, "s404", NULL, NULL, 0, NULL, &l), KB_EUNAVAIL);
}

/* ---- captured output ---- */

typedef struct log_res {
    json_t *res;
    int     calls;
} log_res;

static void
log_cb(json_t *result, void *data)
{
    log_res *r = data;

    json_decref(r->res);
    r->res = result;
    r->calls++;
}

/* Index of the first entry whose text contains `text` (-1: none). */
static int
entry_find(const json_t *res, const char *text)
{
    size_t i;
    json_t *e;

    json_array_foreach(json_object_get(res, "entries"), i, e) {
        const char *t = json_string_value(json_object_get(e, "text"));
        if (t != NULL && strstr(t, text) != NULL)
            return (int)i;
    }
    return -1;
}

/* Query the log now (no wait); the answer (new reference). */
static json_t *
logs_now(fx *f, const char *name, const char *rev, uint64_t after)
{
    kb_rt_log_query q = { .revision = rev, .after = after };
    kb_rt_log_wait *h = NULL;
    log_res r = { 0 };

    assert_int_equal(kb_runtime_logs(f->rt, "p", name, &q, log_cb, &r, &h),
                     0);
    assert_int_equal(r.calls, 1);
    assert_null(h);
    assert_non_null(r.res);
    return r.res;
}

static bool
logs_have(fx *f, const char *name, const char *rev, const char *text)
{
    json_t *res = logs_now(f, name, rev, 0);
    bool ok = entry_find(res, text) >= 0;
    json_decref(res);
    return ok;
}

/* Entries of a service whose text contains `text`. */
static int
log_count(fx *f, const char *name, const char *text)
{
    json_t *res = logs_now(f, name, NULL, 0);
    size_t i;
    json_t *e;
    int n = 0;

    json_array_foreach(json_object_get(res, "entries"), i, e) {
        const char *t = json_string_value(json_object_get(e, "text"));
        n += t != NULL && strstr(t, text) != NULL;
    }
    json_decref(res);
    return n;
}

static void
test_logs(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("lg", 1), *r2 = rev_name("lg", 2);
    const char *tpls[] = { tpl_hello("\"minInstances\":1"),
                           tpl_hello("\"minInstances\":1") };
    kb_rt_log_wait *h = NULL;
    log_res r = { 0 };
    char body[256];

    assert_int_equal(kb_runtime_logs(f->rt, "p", "nosuch",
                                     &(kb_rt_log_query){ 0 }, log_cb, &r,
                                     &h), KB_ENOTFOUND);
    assert_int_equal(r.calls, 0);

    apply_revs(f, "lg", 1, tpls, 2,
               "[{\"revisionName\":\"lg-00001-abc\",\"percent\":50},"
               "{\"revisionName\":\"lg-00002-abc\",\"percent\":50}]");
    EVENTUALLY(f, rev_ready(f, "lg", r1) && rev_ready(f, "lg", r2), 8000);
    EVENTUALLY(f, logs_have(f, "lg", r1, "listening on")
                  && logs_have(f, "lg", r2, "listening on"), 5000);

    /* The entry names its revision, instance and stream. */
    json_t *st = kb_runtime_revision_status(f->rt, "p", "lg", r1);
    const char *id1 = json_string_value(json_object_get(json_array_get(
        json_object_get(st, "instances"), 0), "id"));
    assert_non_null(id1);
    json_t *res = logs_now(f, "lg", r1, 0);
    json_t *e = json_array_get(json_object_get(res, "entries"),
                               (size_t)entry_find(res, "listening on"));
    assert_string_equal(json_string_value(json_object_get(e, "revision")),
                        r1);
    assert_string_equal(json_string_value(json_object_get(e, "instance")),
                        id1);
    assert_string_equal(json_string_value(json_object_get(e, "stream")),
                        "stderr");
    assert_true(json_integer_value(json_object_get(e, "seq")) > 0);
    json_decref(st);
    /* The revision filter: only R1's lines. */
    size_t i;
    json_array_foreach(json_object_get(res, "entries"), i, e)
        assert_string_equal(json_string_value(json_object_get(e,
                            "revision")), r1);
    json_decref(res);
    res = logs_now(f, "lg", NULL, 0);
    int both = 0;
    json_array_foreach(json_object_get(res, "entries"), i, e) {
        const char *rv = json_string_value(json_object_get(e, "revision"));
        both |= strcmp(rv, r1) == 0 ? 1 : strcmp(rv, r2) == 0 ? 2 : 0;
    }
    assert_int_equal(both, 3);
    uint64_t next = (uint64_t)json_integer_value(json_object_get(res,
                                                                 "nextSeq"));
    assert_true(next > 0);
    json_decref(res);

    /* A waiting query of R2 is answered by R2's next line. */
    kb_rt_log_query q = { .revision = r2, .after = next, .wait_ms = 20000 };
    assert_int_equal(kb_runtime_logs(f->rt, "p", "lg", &q, log_cb, &r, &h),
                     0);
    assert_int_equal(r.calls, 0);
    assert_non_null(h);
    json_int_t port2 = inst_int(f, "lg", r2, 0, "port");
    assert_int_equal(http((int)port2, "GET", "/crash", body,
                          sizeof(body)), -1);
    EVENTUALLY(f, r.calls == 1, 5000);
    assert_non_null(r.res);
    int k = entry_find(r.res, "/crash requested");
    if (k < 0)
        fail_msg("answered without the crash line: %s",
                 json_dumps(r.res, JSON_COMPACT));
    e = json_array_get(json_object_get(r.res, "entries"), (size_t)k);
    assert_string_equal(json_string_value(json_object_get(e, "revision")),
                        r2);
    assert_string_equal(json_string_value(json_object_get(e, "stream")),
                        "stderr");
    assert_true(json_integer_value(json_object_get(e, "seq"))
                > (json_int_t)next);
    json_decref(r.res);
    r.res = NULL;
    /* And R1's log has no such line. */
    assert_false(logs_have(f, "lg", r1, "/crash requested"));
}

/* ---- metrics ---- */

/* The value of one series in the rendered metrics (-1: absent). */
static double
metric_value(const char *series)
{
    kb_buf b = KB_BUF_INIT(64u << 20);
    double v = -1;

    assert_int_equal(kb_metrics_render(&b), 0);
    assert_int_equal(kb_buf_appendc(&b, '\0'), 0);
    for (const char *p = b.data; (p = strstr(p, series)) != NULL; p++) {
        if ((p == b.data || p[-1] == '\n') && p[strlen(series)] == ' ') {
            v = strtod(p + strlen(series) + 1, NULL);
            break;
        }
    }
    kb_buf_free(&b);
    return v;
}

static void
test_metrics(void **state)
{
    fx *f = *state;
    const char *r1 = rev_name("met", 1);
    const char *tpls[] = { tpl_hello("\"minInstances\":0,"
                                     "\"scaleDownDelay\":\"300ms\"") };
    waiter *w = &f->waiters[0];
    kb_rt_lease *l = &f->lease[0];
    const char *req2 = "kiban_revision_requests_total{service=\"p/met\","
                       "revision=\"met-00001-abc\",code=\"2xx\"}";
    const char *req5 = "kiban_revision_requests_total{service=\"p/met\","
                       "revision=\"met-00001-abc\",code=\"5xx\"}";
    const char *cold = "kiban_revision_cold_starts_total{service=\"p/met\","
                       "revision=\"met-00001-abc\"}";

    apply_revs(f, "met", 1, tpls, 1, LATEST100);
    assert_true(metric_value(req2) == 0);
    assert_true(metric_value(cold) == 0);
    EVENTUALLY(f, rev_ready(f, "met", r1), 8000);
    EVENTUALLY(f, inst_count(f, "met", r1) == 0, 8000);

    assert_int_equal(acq(f, "met", NULL, NULL, 0, w, l), KB_EAGAIN);
    EVENTUALLY(f, w->notified == 1, 8000);
    assert_int_equal(acq(f, "met", NULL, r1, 0, NULL, l), 0);
    kb_runtime_release(f->rt, l, 0, 200);
    assert_int_equal(acq(f, "met", NULL, r1, 0, NULL, l), 0);
    kb_runtime_release(f->rt, l, 0, 200);
    assert_int_equal(acq(f, "met", NULL, r1, 0, NULL, l), 0);
    kb_runtime_release(f->rt, l, 0, 503);

    assert_true(metric_value(req2) == 2);
    assert_true(metric_value(req5) == 1);
    assert_true(metric_value(cold) == 1);
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "__shim") == 0)
        return kb_runtime_shim_main(argc, argv);

    if (rt_find_self() != 0 || rt_find_hello("test_scale") != 0)
        return 1;

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(test_split_tags_and_stickiness),
        T(test_latest_ready),
        T(test_scale_to_zero_and_cold_start),
        T(test_concurrency_and_queue),
        T(test_scale_out),
        T(test_drain_waits_for_leases),
        T(test_startup_probe_waits_for_slow_start),
        T(test_readiness_probe),
        T(test_liveness_probe_restarts),
        T(test_startup_probe_fails),
        T(test_logs),
        T(test_metrics),
    };
#undef T
    if (getenv("KIBAN_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("KIBAN_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
