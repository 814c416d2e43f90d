/*
 * test_runtime.c - the runtime against real processes: kiban-hello
 * instances started through the shim, readiness, restarts with backoff,
 * round robin, rolling replacement, stopping whole process groups
 * (grandchildren included), shutdown, and no orphans after kill -9 of the
 * server, with leftover records reaped from a real store.
 *
 * This binary is also the shim (argv[1] == "__shim") and, for the kill -9
 * test, a small server (argv[1] == "__server"), so it needs no kiban CLI.
 * KIBAN_HELLO names kiban-hello (default: next to this binary).
 */
#include "core/err.h"
#include "core/metrics.h"
#include "core/time.h"
#include "runtime/runtime.h"
#include "runtime/runtime_int.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#define RT_FIXTURE_PROCS
#include "rt_fixture.h"

typedef struct fx {
    uv_loop_t   loop;
    uv_timer_t  tick;           /* wakes the loop so conditions are polled */
    kb_runtime *rt;
    kb_store   *store;
    char        dir[64];
    pid_t       server;         /* the kill -9 test's server, until killed */
} fx;

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void
opened_store(fx *f)
{
    char db[128];

    snprintf(f->dir, sizeof(f->dir), "/tmp/kb-rt-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(db, sizeof(db), "%s/kiban.db", f->dir);
    assert_int_equal(kb_store_open(&f->loop, db, &f->store), 0);
}

static int
fx_setup_common(void **state, bool with_store)
{
    fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    rt_loop_open(&f->loop, &f->tick);
    if (with_store)
        opened_store(f);
    assert_int_equal(kb_runtime_create(&f->loop, f->store, self_exe,
                                       &f->rt), 0);
    kb__runtime_set_timing(f->rt, 2000, 8000, 1000);
    *state = f;
    return 0;
}

static int
fx_setup(void **state)
{
    return fx_setup_common(state, false);
}

static int
fx_setup_store(void **state)
{
    return fx_setup_common(state, true);
}

static void
fx_shutdown(fx *f)
{
    int done = 0;

    if (f->rt == NULL)
        return;
    kb_runtime_shutdown(f->rt, 2000, flag_set, &done);
    EVENTUALLY(f, done, 10000);
    f->rt = NULL;
}

static int
fx_teardown(void **state)
{
    fx *f = *state;

    if (f->server > 0) {        /* a failed kill -9 test */
        kill(f->server, SIGKILL);
        waitpid(f->server, NULL, 0);
    }
    fx_shutdown(f);
    if (f->store != NULL) {
        int closed = 0;
        kb_store_close(f->store, flag_set, &closed);
        EVENTUALLY(f, closed, 10000);
        nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    }
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    /* Everything the runtime opened has been closed. */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static void
apply_ok(fx *f, const char *name, const char *json)
{
    char err[256] = "";
    json_error_t jerr;
    json_t *spec = json_loads(json, 0, &jerr);

    if (spec == NULL)
        fail_msg("bad test JSON: %s: %s", json, jerr.text);
    int rc = kb_runtime_apply(f->rt, "p", name, spec, err, sizeof(err));
    if (rc != 0)
        fail_msg("apply %s: %d %s", name, rc, err);
    json_decref(spec);
}

/* A spec running kiban-hello with `extra` JSON members appended. */
static void
apply_hello(fx *f, const char *name, const char *extra)
{
    char json[PATH_MAX + 512];

    /* One steady instance unless the test scales itself. */
    if (extra == NULL || (strstr(extra, "instances") == NULL
                          && strstr(extra, "Instances") == NULL))
        snprintf(json, sizeof(json), "{\"command\":\"%s\",\"instances\":1"
                 "%s%s}", hello, extra ? "," : "", extra ? extra : "");
    else
        snprintf(json, sizeof(json), "{\"command\":\"%s\"%s%s}", hello,
                 extra ? "," : "", extra ? extra : "");
    apply_ok(f, name, json);
}

/* Field of instance i in the status (-1 when absent). */
static json_int_t
st_int(fx *f, const char *name, size_t i, const char *field)
{
    json_t *st = kb_runtime_status(f->rt, "p", name);
    json_t *in = json_array_get(json_object_get(st, "instances"), i);
    json_t *v = json_object_get(in, field);
    json_int_t r = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(st);
    return r;
}

static bool
st_state_is(fx *f, const char *name, size_t i, const char *want)
{
    json_t *st = kb_runtime_status(f->rt, "p", name);
    json_t *in = json_array_get(json_object_get(st, "instances"), i);
    const char *s = json_string_value(json_object_get(in, "state"));
    bool r = s != NULL && strcmp(s, want) == 0;
    json_decref(st);
    return r;
}

static json_int_t
st_top(fx *f, const char *name, const char *field)
{
    json_t *st = kb_runtime_status(f->rt, "p", name);
    json_int_t r = json_integer_value(json_object_get(st, field));
    if (strcmp(field, "count") == 0)
        r = (json_int_t)json_array_size(json_object_get(st, "instances"));
    json_decref(st);
    return r;
}

static json_int_t
st_last_exit(fx *f, const char *name, size_t i, const char *field)
{
    json_t *st = kb_runtime_status(f->rt, "p", name);
    json_t *in = json_array_get(json_object_get(st, "instances"), i);
    json_t *v = json_object_get(json_object_get(in, "lastExit"), field);
    json_int_t r = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(st);
    return r;
}

/*
 * Where the next request to service `name` would go, as the gateway asks
 * (acquire, then release at once).  0 and *ep; KB_ENOTFOUND; KB_EUNAVAIL
 * when no instance can take it now (starting, failed, none).
 */
static int
pick(fx *f, const char *name, kb_endpoint *ep)
{
    kb_rt_lease lease;
    int rc = kb_runtime_acquire(f->rt, "p", name, NULL, NULL, 0, NULL,
                                &lease);

    if (rc == KB_EAGAIN)
        return KB_EUNAVAIL;
    if (rc != 0)
        return rc;
    *ep = lease.ep;
    kb_runtime_release(f->rt, &lease, 0, 200);
    return 0;
}

static bool
endpoint_ok(fx *f, const char *name, kb_endpoint *ep)
{
    kb_endpoint tmp;
    return pick(f, name, ep ? ep : &tmp) == 0;
}

/* GET /hello on the service's endpoint: the pid and message (copied). */
static long
hello_pid(fx *f, const char *name, char *msg, size_t msglen, int *port_out)
{
    kb_endpoint ep;
    char body[4096];

    assert_int_equal(pick(f, name, &ep), 0);
    assert_string_equal(ep.host, "127.0.0.1");
    assert_int_equal(http(ep.port, "GET", "/hello", body, sizeof(body)),
                     200);
    json_t *j = json_loads(body, 0, NULL);
    assert_non_null(j);
    long pid = (long)json_integer_value(json_object_get(j, "pid"));
    if (msg != NULL)
        snprintf(msg, msglen, "%s",
                 json_string_value(json_object_get(j, "message")));
    assert_string_equal(json_string_value(json_object_get(j, "service")),
                        name);
    json_decref(j);
    if (port_out != NULL)
        *port_out = ep.port;
    return pid;
}

/*
 * Live (not zombie) members of a process group, optionally only those
 * whose command name starts with `comm`.  Zombies count as dead: when a shim is
 * SIGKILLed its children are reparented to init, which may reap late.
 */
static int
group_live(int pgid, const char *comm)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char *end, path[64], name[64] = "", st;
        long pid = strtol(e->d_name, &end, 10);
        int pg;
        if (*end != '\0' || pid <= 0
            || kb__proc_stat((int)pid, &st, &pg, NULL) < 0 || pg != pgid
            || st == 'Z' || st == 'X')
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
        FILE *fp = fopen(path, "r");
        if (fp != NULL) {
            if (fgets(name, sizeof(name), fp) != NULL)
                name[strcspn(name, "\n")] = '\0';
            fclose(fp);
        }
        if (comm == NULL || strncmp(name, comm, strlen(comm)) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static double
metric_restarts(const char *svc)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "service=\"%s\"", svc);
    return (double)kb_counter_value(kb_counter_get(
        "kiban_runtime_restarts_total", "", labels));
}

static double
metric_running(const char *svc)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "service=\"%s\"", svc);
    return kb_gauge_value(kb_gauge_get("kiban_runtime_instances_running",
                                       "", labels));
}

/* ---- tests ---- */

static void
test_starts_and_serves(void **state)
{
    fx *f = *state;
    kb_endpoint ep;

    apply_hello(f, "web", NULL);
    /* Not routable before its port accepts. */
    assert_int_equal(pick(f, "web", &ep),
                     KB_EUNAVAIL);
    assert_int_equal(st_top(f, "web", "ready"), 0);
    assert_true(st_state_is(f, "web", 0, "starting"));
    EVENTUALLY(f, endpoint_ok(f, "web", &ep), 8000);

    assert_true(st_state_is(f, "web", 0, "running"));
    assert_int_equal(st_top(f, "web", "ready"), 1);
    assert_int_equal(st_top(f, "web", "desired"), 1);
    assert_int_equal(st_int(f, "web", 0, "port"), ep.port);
    assert_int_equal(metric_running("p/web"), 1);

    long pid = hello_pid(f, "web", NULL, 0, NULL);
    json_int_t shim = st_int(f, "web", 0, "pid");
    assert_true(shim > 0);
    /* The service runs in the shim's process group, not ours. */
    assert_int_equal(getpgid((pid_t)pid), shim);
    assert_int_not_equal(getpgid((pid_t)pid), getpgrp());

    char body[4096];
    assert_int_equal(http(ep.port, "GET", "/nope", body, sizeof(body)), 404);

    assert_int_equal(kb_runtime_remove(f->rt, "p", "web"), 0);
    assert_null(kb_runtime_status(f->rt, "p", "web"));
    EVENTUALLY(f, group_gone((int)shim), 5000);
    assert_int_equal(metric_running("p/web"), 0);
}

static void
test_unknown_service(void **state)
{
    fx *f = *state;
    kb_endpoint ep;

    assert_int_equal(pick(f, "nope", &ep),
                     KB_ENOTFOUND);
    assert_null(kb_runtime_status(f->rt, "p", "nope"));
    assert_int_equal(kb_runtime_remove(f->rt, "p", "nope"), KB_ENOTFOUND);

    /* Zero instances: known, never routable. */
    apply_hello(f, "idle", "\"instances\":0");
    assert_int_equal(pick(f, "idle", &ep),
                     KB_EUNAVAIL);
    assert_int_equal(st_top(f, "idle", "count"), 0);
}

static void
test_crash_restarts(void **state)
{
    fx *f = *state;
    char body[256];
    int port;

    apply_hello(f, "crashy", NULL);
    EVENTUALLY(f, endpoint_ok(f, "crashy", NULL), 8000);
    long pid1 = hello_pid(f, "crashy", NULL, 0, &port);
    json_int_t shim1 = st_int(f, "crashy", 0, "pid");
    double before = metric_restarts("p/crashy");

    /* /crash exits 3 without answering. */
    assert_int_equal(http(port, "GET", "/crash", body, sizeof(body)), -1);
    EVENTUALLY(f, st_int(f, "crashy", 0, "restarts") == 1, 5000);
    assert_int_equal(st_last_exit(f, "crashy", 0, "code"), 3);
    assert_int_equal(st_last_exit(f, "crashy", 0, "signal"), -1);
    assert_int_equal(st_int(f, "crashy", 0, "backoffMs"), 100);
    assert_int_equal(metric_restarts("p/crashy"), before + 1);

    EVENTUALLY(f, endpoint_ok(f, "crashy", NULL), 8000);
    long pid2 = hello_pid(f, "crashy", NULL, 0, NULL);
    assert_int_not_equal(pid1, pid2);
    assert_int_not_equal(st_int(f, "crashy", 0, "pid"), shim1);
    EVENTUALLY(f, group_gone((int)shim1), 5000);
}

static void
test_backoff_grows_when_command_missing(void **state)
{
    fx *f = *state;
    uint64_t at[5] = { 0 };

    apply_ok(f, "missing", "{\"command\":\"/nonexistent/kiban-no-such\"}");
    /* Restart k is scheduled 100 ms * 2^(k-1) after exit k. */
    for (json_int_t k = 1; k <= 4; k++) {
        EVENTUALLY(f, st_int(f, "missing", 0, "restarts") >= k, 8000);
        at[k] = kb_time_mono_ms();
        assert_int_equal(st_int(f, "missing", 0, "restarts"), k);
        assert_int_equal(st_int(f, "missing", 0, "backoffMs"),
                         100 << (k - 1));
        assert_int_equal(st_last_exit(f, "missing", 0, "code"), 127);
        assert_int_equal(pick(f, "missing",
                                             &(kb_endpoint){ 0 }),
                         KB_EUNAVAIL);
    }
    /* The delays are honoured: restart 3 waited its 400 ms. */
    assert_true(at[2] - at[1] >= 90);
    assert_true(at[4] - at[3] >= 380);
}

static void
test_start_timeout_kills_and_restarts(void **state)
{
    fx *f = *state;

    kb__runtime_set_timing(f->rt, 0, 300, 0);
    /* Runs, but never listens on $PORT. */
    apply_ok(f, "deaf", "{\"command\":\"sleep\",\"args\":[\"1000\"]}");
    json_int_t shim = 0;
    EVENTUALLY(f, (shim = st_int(f, "deaf", 0, "pid")) > 0, 2000);
    EVENTUALLY(f, st_int(f, "deaf", 0, "restarts") >= 1, 5000);
    assert_int_equal(st_last_exit(f, "deaf", 0, "signal"), SIGKILL);
    assert_int_equal(pick(f, "deaf",
                                         &(kb_endpoint){ 0 }), KB_EUNAVAIL);
    EVENTUALLY(f, group_live((int)shim, NULL) == 0, 5000);
}

static void
test_two_instances_round_robin(void **state)
{
    fx *f = *state;
    kb_endpoint a, b, c;

    apply_hello(f, "pair", "\"instances\":2");
    EVENTUALLY(f, st_top(f, "pair", "ready") == 2, 8000);
    assert_int_equal(st_top(f, "pair", "count"), 2);
    json_int_t p0 = st_int(f, "pair", 0, "port");
    json_int_t p1 = st_int(f, "pair", 1, "port");
    assert_true(p0 > 0 && p1 > 0);
    assert_int_not_equal(p0, p1);

    assert_int_equal(pick(f, "pair", &a), 0);
    assert_int_equal(pick(f, "pair", &b), 0);
    assert_int_equal(pick(f, "pair", &c), 0);
    assert_int_not_equal(a.port, b.port);
    assert_int_equal(a.port, c.port);
    assert_true((a.port == p0 && b.port == p1) || (a.port == p1
                                                   && b.port == p0));
    /* Two different processes answer. */
    long x = hello_pid(f, "pair", NULL, 0, NULL);
    long y = hello_pid(f, "pair", NULL, 0, NULL);
    assert_int_not_equal(x, y);

    /* Another count is another revision (as in Cloud Run): the old
     * instances go, one new one serves. */
    json_int_t s0 = st_int(f, "pair", 0, "pid");
    json_int_t s1 = st_int(f, "pair", 1, "pid");
    apply_hello(f, "pair", "\"instances\":1");
    EVENTUALLY(f, st_top(f, "pair", "count") == 1
                  && st_top(f, "pair", "ready") == 1, 8000);
    EVENTUALLY(f, group_gone((int)s0) && group_gone((int)s1), 5000);
}

/* A Service document as the API stores it: revisions r1..rN of
 * kiban-hello greeting g1..gN, then `traffic` (JSON). */
static void
apply_revisions(fx *f, const char *name, int n, const char *tpl_extra,
                const char *traffic)
{
    char json[8192];
    int k = snprintf(json, sizeof(json), "{\"command\":\"%s\",\"revisions\":[",
                     hello);

    for (int i = 1; i <= n; i++)
        k += snprintf(json + k, sizeof(json) - (size_t)k,
                      "%s{\"name\":\"%s-0000%d-abc\",\"template\":{"
                      "\"command\":\"%s\",\"env\":{\"GREETING\":\"g%d\"}%s%s}}",
                      i > 1 ? "," : "", name, i, hello, i,
                      tpl_extra ? "," : "", tpl_extra ? tpl_extra : "");
    snprintf(json + k, sizeof(json) - (size_t)k, "],\"traffic\":%s}", traffic);
    apply_ok(f, name, json);
}

static void
test_changed_env_replaces_instances(void **state)
{
    fx *f = *state;
    char msg[128];
    kb_endpoint ep;
    const char *latest = "[{\"latestRevision\":true,\"percent\":100}]";
    const char *tpl = "\"instances\":1,\"scaleDownDelay\":\"200ms\"";

    apply_revisions(f, "greet", 1, tpl, latest);
    EVENTUALLY(f, endpoint_ok(f, "greet", &ep), 8000);
    assert_string_equal(ep.revision, "greet-00001-abc");
    long pid1 = hello_pid(f, "greet", msg, sizeof(msg), NULL);
    assert_string_equal(msg, "g1");
    json_int_t shim1 = st_int(f, "greet", 0, "pid");

    /* The same document again changes nothing. */
    apply_revisions(f, "greet", 1, tpl, latest);
    assert_int_equal(st_top(f, "greet", "count"), 1);
    assert_int_equal(st_int(f, "greet", 0, "pid"), shim1);

    /* A new revision: LATEST stays on the old one until the new one is
     * ready (Cloud Run's latest ready revision). */
    apply_revisions(f, "greet", 2, tpl, latest);
    assert_int_equal(st_top(f, "greet", "count"), 2);
    assert_int_equal(hello_pid(f, "greet", msg, sizeof(msg), NULL), pid1);
    assert_string_equal(msg, "g1");

    EVENTUALLY(f, endpoint_ok(f, "greet", &ep)
                  && strcmp(ep.revision, "greet-00002-abc") == 0, 8000);
    long pid2 = hello_pid(f, "greet", msg, sizeof(msg), NULL);
    assert_string_equal(msg, "g2");
    assert_int_not_equal(pid1, pid2);
    /* The old revision lost its share: idle past scaleDownDelay, it
     * drains and stops. */
    EVENTUALLY(f, group_gone((int)shim1), 5000);
    EVENTUALLY(f, st_top(f, "greet", "count") == 1, 5000);

    /* Pinned to r1 (a rollback): r1 comes back, r2 drains. */
    apply_revisions(f, "greet", 2, tpl,
                    "[{\"revisionName\":\"greet-00001-abc\",\"percent\":100}]");
    EVENTUALLY(f, endpoint_ok(f, "greet", &ep)
                  && strcmp(ep.revision, "greet-00001-abc") == 0, 8000);
    hello_pid(f, "greet", msg, sizeof(msg), NULL);
    assert_string_equal(msg, "g1");
}

/* sh runs a background sleep (a grandchild of the shim), then execs
 * hello: both are in the instance's group. */
static void
apply_with_grandchild(fx *f, const char *name, const char *trap)
{
    char json[PATH_MAX + 512];

    snprintf(json, sizeof(json), "{\"command\":\"sh\",\"args\":[\"-c\","
             "\"%ssleep 1000 & exec %s\"],\"instances\":1}", trap, hello);
    apply_ok(f, name, json);
}

static void
test_remove_kills_grandchildren(void **state)
{
    fx *f = *state;
    char body[64];
    int port;

    apply_with_grandchild(f, "family", "");
    EVENTUALLY(f, endpoint_ok(f, "family", NULL), 8000);
    json_int_t shim = st_int(f, "family", 0, "pid");
    EVENTUALLY(f, group_live((int)shim, "sleep") == 1, 2000);

    /* A crash takes the grandchild with it before the restart. */
    hello_pid(f, "family", NULL, 0, &port);
    http(port, "GET", "/crash", body, sizeof(body));
    EVENTUALLY(f, group_gone((int)shim), 5000);
    EVENTUALLY(f, endpoint_ok(f, "family", NULL), 8000);
    shim = st_int(f, "family", 0, "pid");
    EVENTUALLY(f, group_live((int)shim, "sleep") == 1, 2000);

    assert_int_equal(kb_runtime_remove(f->rt, "p", "family"), 0);
    EVENTUALLY(f, group_gone((int)shim), 5000);
}

static void
test_leftover_ignoring_sigterm_is_killed(void **state)
{
    fx *f = *state;

    /* The sleep ignores SIGTERM (hello installs its own handler). */
    apply_with_grandchild(f, "stubborn", "trap '' TERM; ");
    EVENTUALLY(f, endpoint_ok(f, "stubborn", NULL), 8000);
    json_int_t shim = st_int(f, "stubborn", 0, "pid");
    EVENTUALLY(f, group_live((int)shim, "sleep") == 1, 2000);
    assert_int_equal(kb_runtime_remove(f->rt, "p", "stubborn"), 0);
    EVENTUALLY(f, group_gone((int)shim), 6000);
}

static void
test_stop_escalates_to_sigkill(void **state)
{
    fx *f = *state;

    kb__runtime_set_timing(f->rt, 600, 0, 0);
    apply_ok(f, "deaf2", "{\"command\":\"sh\",\"args\":[\"-c\","
             "\"trap '' TERM; sleep 1000\"]}");
    json_int_t shim = 0;
    EVENTUALLY(f, (shim = st_int(f, "deaf2", 0, "pid")) > 0, 2000);
    EVENTUALLY(f, group_live((int)shim, "sleep") == 1, 2000);

    uint64_t t0 = kb_time_mono_ms();
    assert_int_equal(kb_runtime_remove(f->rt, "p", "deaf2"), 0);
    run_for(f, 300);
    /* SIGTERM is ignored; the grace period is honoured... */
    assert_int_equal(group_live((int)shim, "sleep"), 1);
    /* ...then SIGKILL takes the whole group. */
    EVENTUALLY(f, group_live((int)shim, NULL) == 0, 5000);
    assert_true(kb_time_mono_ms() - t0 >= 550);
}

static void
test_validate_names_fields(void **state)
{
    (void)state;
    static const struct { const char *json, *want; } bad[] = {
        { "[]", "spec" },
        { "{}", "command: required" },
        { "{\"command\":\"\"}", "command" },
        { "{\"command\":5}", "command" },
        { "{\"command\":\"x\",\"args\":\"y\"}", "args" },
        { "{\"command\":\"x\",\"args\":[\"a\",1]}", "args[1]" },
        { "{\"command\":\"x\",\"env\":[]}", "env" },
        { "{\"command\":\"x\",\"env\":{\"1A\":\"v\"}}", "env.1A" },
        { "{\"command\":\"x\",\"env\":{\"A-B\":\"v\"}}", "env.A-B" },
        { "{\"command\":\"x\",\"env\":{\"\":\"v\"}}", "env." },
        { "{\"command\":\"x\",\"env\":{\"PORT\":\"1\"}}", "env.PORT" },
        { "{\"command\":\"x\",\"env\":{\"K_SERVICE\":\"1\"}}",
          "env.K_SERVICE" },
        { "{\"command\":\"x\",\"env\":{\"A\":1}}", "env.A" },
        { "{\"command\":\"x\",\"instances\":65}", "instances" },
        { "{\"command\":\"x\",\"instances\":-1}", "instances" },
        { "{\"command\":\"x\",\"instances\":1.5}", "instances" },
        { "{\"command\":\"x\",\"instances\":\"2\"}", "instances" },
        { "{\"command\":\"x\",\"image\":\"y\"}", "image" },
    };
    static const char *const good[] = {
        "{\"command\":\"x\"}",
        "{\"command\":\"x\",\"args\":[],\"env\":{},\"instances\":0}",
        ("{\"command\":\"x\",\"args\":[\"-v\"],\"env\":{\"_a1\":\"\"},"
         "\"instances\":64}"),
    };
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *spec = json_loads(bad[i].json, JSON_DECODE_ANY, NULL);
        assert_non_null(spec);
        err[0] = '\0';
        assert_int_equal(kb_runtime_validate(spec, err, sizeof(err)),
                         KB_EINVAL);
        if (strstr(err, bad[i].want) == NULL)
            fail_msg("%s: error \"%s\" does not name \"%s\"", bad[i].json,
                     err, bad[i].want);
        json_decref(spec);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        json_t *spec = json_loads(good[i], 0, NULL);
        assert_int_equal(kb_runtime_validate(spec, err, sizeof(err)), 0);
        json_decref(spec);
    }

    /* 257 args: too many. */
    json_t *spec = json_pack("{s:s, s:[]}", "command", "x", "args");
    for (int i = 0; i < 257; i++)
        json_array_append_new(json_object_get(spec, "args"),
                              json_string("a"));
    assert_int_equal(kb_runtime_validate(spec, err, sizeof(err)), KB_EINVAL);
    assert_non_null(strstr(err, "args"));
    json_decref(spec);
}

static void
test_apply_rejects_bad_spec(void **state)
{
    fx *f = *state;
    char err[256] = "";
    json_t *spec = json_pack("{s:s, s:{s:s}}", "command", hello, "env",
                             "PORT", "80");

    assert_int_equal(kb_runtime_apply(f->rt, "p", "bad", spec, err,
                                      sizeof(err)), KB_EINVAL);
    assert_non_null(strstr(err, "env.PORT"));
    assert_null(kb_runtime_status(f->rt, "p", "bad"));
    json_decref(spec);
}

static void
test_shutdown_stops_everything(void **state)
{
    fx *f = *state;
    int pg[3], n = 0, done = 0;

    apply_hello(f, "a", "\"instances\":2");
    apply_with_grandchild(f, "b", "");
    EVENTUALLY(f, st_top(f, "a", "ready") == 2
                  && st_top(f, "b", "ready") == 1, 8000);
    pg[n++] = (int)st_int(f, "a", 0, "pid");
    pg[n++] = (int)st_int(f, "a", 1, "pid");
    pg[n++] = (int)st_int(f, "b", 0, "pid");

    kb_runtime_shutdown(f->rt, 2000, flag_set, &done);
    f->rt = NULL;
    EVENTUALLY(f, done, 8000);
    for (int i = 0; i < n; i++)
        assert_true(group_gone(pg[i]));
}

/* ---- records and kill -9 ---- */

typedef struct list_ctx {
    int    err, n;
    json_t *first;
} list_ctx;

static void
list_cb(int err, const kb_store_page *page, void *data)
{
    list_ctx *c = data;
    c->err = err;
    if (err != 0)
        return;
    c->n = (int)page->n;
    if (page->n > 0 && c->first == NULL)
        c->first = json_incref(page->items[0].doc);
}

static int
count_records(fx *f, json_t **first)
{
    list_ctx c = { 0 };
    assert_int_equal(kb_store_list_sync(f->store, "instances", NULL, 1000,
                                        NULL, list_cb, &c), 0);
    assert_int_equal(c.err, 0);
    if (first != NULL)
        *first = c.first;
    else
        json_decref(c.first);
    return c.n;
}

static void
test_records_follow_instances(void **state)
{
    fx *f = *state;
    json_t *doc = NULL;
    uint64_t start;

    apply_hello(f, "rec", NULL);
    EVENTUALLY(f, endpoint_ok(f, "rec", NULL), 8000);
    json_int_t shim = st_int(f, "rec", 0, "pid");
    assert_int_equal(count_records(f, &doc), 1);
    assert_int_equal(json_integer_value(json_object_get(doc, "pid")), shim);
    assert_int_equal(json_integer_value(json_object_get(doc, "pgid")), shim);
    assert_int_equal(kb__proc_stat((int)shim, NULL, NULL, &start), 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "startTime")),
                     (json_int_t)start);
    json_decref(doc);

    assert_int_equal(kb_runtime_remove(f->rt, "p", "rec"), 0);
    EVENTUALLY(f, group_gone((int)shim), 5000);
    run_for(f, 50);
    assert_int_equal(count_records(f, NULL), 0);
}

/*
 * `test_runtime __server DIR HELLO FD`: a minimal server with a store in
 * DIR running one instance (with a grandchild); writes the instance's
 * process group to FD once it serves, then runs until killed.
 */
static int
server_main(int argc, char **argv)
{
    uv_loop_t loop;
    kb_store *store;
    kb_runtime *rt;
    char db[PATH_MAX], json[PATH_MAX + 256], err[256];

    if (argc != 5)
        return 2;
    uv_loop_init(&loop);
    snprintf(db, sizeof(db), "%s/kiban.db", argv[2]);
    if (kb_store_open(&loop, db, &store) != 0
        || kb_runtime_create(&loop, store, self_exe, &rt) != 0)
        return 3;
    snprintf(json, sizeof(json), "{\"command\":\"sh\",\"args\":[\"-c\","
             "\"sleep 1000 & exec %s\"]}", argv[3]);
    json_t *spec = json_loads(json, 0, NULL);
    if (kb_runtime_apply(rt, "p", "victim", spec, err, sizeof(err)) != 0)
        return 4;
    json_decref(spec);
    kb_rt_lease lease;
    while (kb_runtime_acquire(rt, "p", "victim", NULL, NULL, 0, NULL,
                              &lease) != 0)
        uv_run(&loop, UV_RUN_ONCE);
    kb_runtime_release(rt, &lease, 0, 200);
    /* Report only once the instance's record is durable. */
    list_ctx c = { 0 };
    while (c.n == 0) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (kb_store_list_sync(store, "instances", NULL, 10, NULL, list_cb,
                               &c) != 0)
            return 5;
    }
    json_decref(c.first);
    json_t *st = kb_runtime_status(rt, "p", "victim");
    char line[64];
    int n = snprintf(line, sizeof(line), "%lld\n", (long long)
        json_integer_value(json_object_get(json_array_get(
            json_object_get(st, "instances"), 0), "pid")));
    if (write((int)strtol(argv[4], NULL, 10), line, (size_t)n) != n)
        return 5;
    for (;;)
        uv_run(&loop, UV_RUN_DEFAULT);
}

/* Reap children that are not the runtime's (orphans we adopted as a
 * subreaper).  Only called when the fixture has no instances. */
static void
reap_adopted(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

static void
test_kill9_leaves_no_orphans(void **state)
{
    fx *f = *state;
    int fds[2];
    char line[64] = "";

    /* Adopt orphans so their zombies can be reaped here, not by init. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    assert_int_equal(pipe(fds), 0);
    pid_t server = fork();
    assert_true(server >= 0);
    f->server = server;
    if (server == 0) {
        char fd[16];
        close(fds[0]);
        snprintf(fd, sizeof(fd), "%d", fds[1]);
        execl(self_exe, self_exe, "__server", f->dir, hello, fd,
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], line, sizeof(line) - 1);
    close(fds[0]);
    if (n <= 0)
        fail_msg("the test server did not start its instance");
    int pgid = (int)strtol(line, NULL, 10);
    assert_true(pgid > 0);
    uint64_t end = kb_time_mono_ms() + 3000;
    while (group_live(pgid, "sleep") == 0 && kb_time_mono_ms() < end)
        usleep(10 * 1000);      /* sh may not have exec'd it yet */
    assert_int_equal(group_live(pgid, "sleep"), 1);
    assert_int_equal(group_live(pgid, "kiban-hello"), 1);

    kill(server, SIGKILL);
    assert_int_equal(waitpid(server, NULL, 0), server);
    f->server = 0;
    /* The shim sees the pipe's EOF (and SIGHUP) and stops its group. */
    end = kb_time_mono_ms() + 8000;
    while (!group_gone(pgid) && kb_time_mono_ms() < end) {
        reap_adopted();
        usleep(20 * 1000);
    }
    assert_true(group_gone(pgid));

    /* Its record is still in the store; a new runtime clears it. */
    fx_shutdown(f);
    assert_int_equal(count_records(f, NULL), 1);
    assert_int_equal(kb_runtime_create(&f->loop, f->store, self_exe,
                                       &f->rt), 0);
    assert_int_equal(count_records(f, NULL), 0);
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
    reap_adopted();
}

/* A process group of two sleeps, like an instance a dead server left. */
static pid_t
spawn_group(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        execl("/bin/sh", "sh", "-c", "sleep 1000 & exec sleep 1000",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void
put_done(int err, const kb_resource *res, void *data)
{
    (void)res;
    *(int *)data = err == 0 ? 1 : -1;
}

static void
put_record(fx *f, const char *name, pid_t pid, uint64_t start,
           const char *boot, pid_t owner, uint64_t owner_start)
{
    kb_put_opts o = { .mode = KB_PUT_UPSERT };
    int done = 0;
    json_t *doc = json_pack("{s:i, s:i, s:I, s:s, s:i, s:{s:i, s:I}}",
                            "pid", (int)pid, "pgid", (int)pid,
                            "startTime", (json_int_t)start, "bootId", boot,
                            "port", 1, "owner", "pid", (int)owner,
                            "startTime", (json_int_t)owner_start);
    assert_int_equal(kb_store_put(f->store, "instances",
                                  "projects/p/services/old", name, doc, &o,
                                  put_done, &done), 0);
    json_decref(doc);
    EVENTUALLY(f, done != 0, 5000);
    assert_int_equal(done, 1);
}

static void
test_reaps_recorded_groups(void **state)
{
    fx *f = *state;
    char boot[40];
    uint64_t s1, s2, s3, self_start;

    fx_shutdown(f);             /* a fresh runtime comes later */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    kb__proc_boot_id(boot, sizeof(boot));
    assert_true(boot[0] != '\0');
    assert_int_equal(kb__proc_stat(getpid(), NULL, NULL, &self_start), 0);

    pid_t dead_owner = fork();
    if (dead_owner == 0)
        _exit(0);
    waitpid(dead_owner, NULL, 0);

    pid_t g1 = spawn_group(), g2 = spawn_group(), g3 = spawn_group();
    EVENTUALLY(f, group_live(g1, "sleep") == 2 && group_live(g2, "sleep")
                  == 2 && group_live(g3, "sleep") == 2, 5000);
    assert_int_equal(kb__proc_stat(g1, NULL, NULL, &s1), 0);
    assert_int_equal(kb__proc_stat(g2, NULL, NULL, &s2), 0);
    assert_int_equal(kb__proc_stat(g3, NULL, NULL, &s3), 0);

    /* g1: left by a dead server: killed. */
    put_record(f, "a", g1, s1, boot, dead_owner, 1);
    /* g2: the pid was recycled (start time differs): spared. */
    put_record(f, "b", g2, s2 + 1, boot, dead_owner, 1);
    /* g2 again, from another boot: spared. */
    put_record(f, "c", g2, s2, "another-boot", dead_owner, 1);
    /* g3: its server (this process) is alive: spared, record kept. */
    put_record(f, "d", g3, s3, boot, getpid(), self_start);

    assert_int_equal(kb_runtime_create(&f->loop, f->store, self_exe,
                                       &f->rt), 0);
    int st;
    assert_int_equal(waitpid(g1, &st, 0), g1);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    uint64_t end = kb_time_mono_ms() + 5000;
    while (group_live(g1, NULL) > 0 && kb_time_mono_ms() < end)
        usleep(10 * 1000);
    assert_int_equal(group_live(g1, NULL), 0);
    assert_int_equal(group_live(g2, "sleep"), 2);
    assert_int_equal(group_live(g3, "sleep"), 2);
    json_t *left = NULL;
    assert_int_equal(count_records(f, &left), 1);
    assert_int_equal(json_integer_value(json_object_get(left, "pid")), g3);
    json_decref(left);

    kill(-g2, SIGKILL);
    kill(-g3, SIGKILL);
    waitpid(g2, NULL, 0);
    waitpid(g3, NULL, 0);
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
    end = kb_time_mono_ms() + 3000;
    while (kb_time_mono_ms() < end && (!group_gone(g1) || !group_gone(g2)
                                      || !group_gone(g3))) {
        reap_adopted();
        usleep(10 * 1000);
    }
}

static void
test_shim_reports_exit_codes(void **state)
{
    (void)state;
    static const struct { const char *script; int want; } cases[] = {
        { "exit 0", 0 },
        { "exit 7", 7 },
        { "kill -SEGV $$", 128 + SIGSEGV },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            execl(self_exe, self_exe, "__shim", "--name", "t", "--", "sh",
                  "-c", cases[i].script, (char *)NULL);
            _exit(99);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), cases[i].want);
    }

    /* Not found: 127, with a message. */
    pid_t pid = fork();
    if (pid == 0) {
        execl(self_exe, self_exe, "__shim", "--", "/nonexistent/x",
              (char *)NULL);
        _exit(99);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 127);

    /* Usage errors: 125. */
    pid = fork();
    if (pid == 0) {
        execl(self_exe, self_exe, "__shim", "--bogus", "1", "--", "true",
              (char *)NULL);
        _exit(99);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 125);
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "__shim") == 0)
        return kb_runtime_shim_main(argc, argv);

    if (rt_find_self() != 0)
        return 1;
    if (argc > 1 && strcmp(argv[1], "__server") == 0)
        return server_main(argc, argv);
    if (rt_find_hello("test_runtime") != 0)
        return 1;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_names_fields),
        cmocka_unit_test(test_shim_reports_exit_codes),
        cmocka_unit_test_setup_teardown(test_starts_and_serves,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_service,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_apply_rejects_bad_spec,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_restarts,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_backoff_grows_when_command_missing,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_start_timeout_kills_and_restarts,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_two_instances_round_robin,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_changed_env_replaces_instances,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_remove_kills_grandchildren,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_leftover_ignoring_sigterm_is_killed,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_stop_escalates_to_sigkill,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_stops_everything,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_records_follow_instances,
                                        fx_setup_store, fx_teardown),
        cmocka_unit_test_setup_teardown(test_kill9_leaves_no_orphans,
                                        fx_setup_store, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reaps_recorded_groups,
                                        fx_setup_store, fx_teardown),
    };
    if (getenv("KIBAN_TEST_FILTER") != NULL)    /* e.g. "*kill9*" */
        cmocka_set_test_filter(getenv("KIBAN_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
