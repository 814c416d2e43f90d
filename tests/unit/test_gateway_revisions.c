/*
 * test_gateway_revisions.c - the gateway's side of revisions: service://
 * backends through kb_runtime_acquire/release (split, tags, retries),
 * waiting for an instance (notify, deadline → 429/503, client abort,
 * shutdown), refusals (unavailable, queue full), and direct service hosts
 * ([TAG---]SERVICE[.PROJECT].DOMAIN).  The runtime is a fake (gw_fakes.h);
 * requests go over raw TCP to a real in-process gateway listener.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/metrics.h"
#include "gateway/gw_int.h"

#define GW_FAKES_RUNTIME
#define GW_FAKES_E2E
#include "gw_fakes.h"

/* ------------------------------------------------------------------------ */
/* Host names                                                                */

static void
test_svc_host_parse(void **state)
{
    static const struct {
        const char *domain, *host, *project, *service, *tag;
    } ok[] = {
        { "localhost", "hello.localhost", "default", "hello", "" },
        { "localhost", "hello.localhost:8080", "default", "hello", "" },
        { "localhost", "tag---svc.localhost:8080", "default", "svc", "tag" },
        { "localhost", "HeLLo.LocalHost.", "default", "hello", "" },
        { "localhost", "GREEN---Hello.Team-A.LOCALHOST:80", "team-a", "hello",
          "green" },
        { "run.example.com", "svc.proj.run.example.com", "proj", "svc", "" },
        { "run.example.com", "v2---svc.run.example.com", "default", "svc",
          "v2" },
        { "127.0.0.1.nip.io", "a.127.0.0.1.nip.io", "default", "a", "" },
    };
    static const struct {
        const char *domain, *host;
    } no[] = {
        { "localhost", "localhost" },           /* the domain itself */
        { "localhost", "localhost:8080" },
        { "localhost", "hello.example.com" },   /* another domain */
        { "localhost", "hellolocalhost" },
        { "localhost", "a.b.c.localhost" },     /* too many labels */
        { "localhost", "-x.localhost" },        /* bad labels */
        { "localhost", "x-.localhost" },
        { "localhost", "1x.localhost" },
        { "localhost", "x_y.localhost" },
        { "localhost", "---svc.localhost" },    /* empty tag */
        { "localhost", "tag---.localhost" },    /* empty service */
        { "localhost", "a---b---c.localhost" },
        { "localhost", "svc.-p.localhost" },
        { "localhost", ".localhost" },
        { "localhost", "[::1]:8080" },
        { "localhost", NULL },
        { "", "hello.localhost" },              /* service hosts off */
    };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        gw_svc_host h;
        if (!gw__svc_host_parse(ok[i].domain, ok[i].host, &h))
            fail_msg("%s under %s: no match", ok[i].host, ok[i].domain);
        assert_string_equal(h.project, ok[i].project);
        assert_string_equal(h.service, ok[i].service);
        assert_string_equal(h.tag, ok[i].tag);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        gw_svc_host h;
        if (gw__svc_host_parse(no[i].domain, no[i].host, &h))
            fail_msg("%s under %s: matched", no[i].host ? no[i].host : "NULL",
                     no[i].domain);
    }
}

static void
test_set_domain(void **state)
{
    kb_gateway *gw;

    assert_int_equal(kb_gateway_create(NULL, NULL, NULL, &gw), 0);
    assert_string_equal(gw->domain, "localhost");        /* the default */
    assert_int_equal(kb_gateway_set_domain(gw, "Run.Example.COM.", 80), 0);
    assert_string_equal(gw->domain, "run.example.com");
    assert_int_equal(kb_gateway_set_domain(gw, "bad domain", 80), KB_EINVAL);
    assert_int_equal(kb_gateway_set_domain(gw, "a..b", 80), KB_EINVAL);
    assert_int_equal(kb_gateway_set_domain(gw, "-a.b", 80), KB_EINVAL);
    assert_string_equal(gw->domain, "run.example.com");  /* unchanged */
    assert_int_equal(kb_gateway_set_domain(gw, "", 80), 0);
    assert_string_equal(gw->domain, "");                 /* off */
    kb_gateway_free(gw);
}

/* ------------------------------------------------------------------------ */
/* End to end with the fake runtime                                          */

static int
rev_setup(void **state)
{
    e2e_boot();
    assert_int_equal(kb_gateway_set_domain(E.gw, "kiban.test", 8080), 0);
    e2e_install("rev",
        "{'openapi':{'openapi':'3.0.3','paths':{"
        "'/echo':{'get':{'x-google-backend':{'address':'service://echo'}}},"
        "'/green':{'get':{'x-google-backend':{'address':"
        "  'service://echo@green'}}},"
        "'/blue':{'get':{'x-google-backend':{'address':"
        "  'service://echo@blue'}}},"
        "'/cold':{'get':{'x-google-backend':{'address':'service://cold',"
        "  'deadline':10}}},"
        "'/never':{'get':{'x-google-backend':{'address':'service://never',"
        "  'deadline':0.2}}},"
        "'/never-long':{'get':{'x-google-backend':{'address':"
        "  'service://never','deadline':30}}},"
        "'/flaky':{'get':{'x-google-backend':{'address':'service://flaky'}},"
        "  'post':{'x-google-backend':{'address':'service://flaky'}}},"
        "'/down':{'get':{'x-google-backend':{'address':'service://down'}}},"
        "'/full':{'get':{'x-google-backend':{'address':'service://full'}}},"
        "'/ghost':{'get':{'x-google-backend':{'address':'service://ghost'}}}"
        "}}}");
    e2e_install("claims",
        "{'hosts':['claimed.p.kiban.test'],"
        "'openapi':{'openapi':'3.0.3','paths':{"
        "'/{any}':{'get':{'x-google-backend':{'address':"
        "  'service://echo@green','path_translation':"
        "  'APPEND_PATH_TO_ADDRESS'}}}}}}");
    *state = &E;
    return 0;
}

static int
rev_teardown(void **state)
{
    (void)state;
    e2e_stop();
    return 0;
}

static int
rev_before(void **state)
{
    (void)state;
    fake_rt_reset();
    return 0;
}

/* Every lease given back exactly once, no waiter left queued, no request
 * left in the gateway. */
static int
rev_after(void **state)
{
    (void)state;
    for (int i = 0; i < 200 && kb_http_server_inflight(E.listener) > 0; i++) {
        uv_run(&E.loop, UV_RUN_NOWAIT);
        usleep(10 * 1000);
    }
    assert_int_equal(kb_http_server_inflight(E.listener), 0);
    assert_int_equal(fake_rt.acquired, fake_rt.released);
    assert_int_equal(fake_rt.nqueued, 0);
    assert_null(E.worker->waiting);
    return 0;
}

static void
get(const char *path, const char *host, reply *r)
{
    char req[1024];

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\nHost: %s\n"
             "Connection: close\n\n", path, host);
    exchange(req, false, r);
}

static void
test_split_and_release(void **state)
{
    reply r;
    int n = 200;

    for (int i = 0; i < n; i++) {
        get("/echo", "gw.test", &r);
        assert_int_equal(r.status, 200);
        reply_free(&r);
    }
    /* no tag, no revision: the split, on a uniform random number */
    assert_string_equal(fake_rt.last_tag, "");
    assert_string_equal(fake_rt.last_revision, "");
    assert_int_equal(fake_rt.acquired, n);
    assert_int_equal(fake_rt.released, n);
    assert_int_equal(fake_rt.release_err, 0);
    assert_int_equal(fake_rt.release_status, 200);
    /* 25 % of 200 ± far more than chance allows */
    if (fake_rt.picks_green < 20 || fake_rt.picks_green > 80)
        fail_msg("%d of %d requests went to the 25 %% revision",
                 fake_rt.picks_green, n);
}

static void
test_tag_pin(void **state)
{
    reply r;

    get("/green", "gw.test", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fake_rt.last_tag, "green");
    assert_string_equal(fake_rt.last_chosen, "echo-00002-bbb");
    reply_free(&r);
    get("/blue", "gw.test", &r);
    assert_error(&r, 502, kb_http_status_name(502),
                 "service echo has no revision tagged blue");
    reply_free(&r);
}

static void
test_refusals(void **state)
{
    reply r;

    get("/down", "gw.test", &r);
    assert_error(&r, 503, kb_http_status_name(503),
                 "service down has no running instance");
    reply_free(&r);
    get("/full", "gw.test", &r);
    assert_error(&r, 429, kb_http_status_name(429), "waiting");
    assert_string_equal(reply_header(&r, "Retry-After"), "1");
    reply_free(&r);
    get("/ghost", "gw.test", &r);
    assert_error(&r, 502, kb_http_status_name(502), "service ghost not found");
    reply_free(&r);
    assert_int_equal(fake_rt.acquired, 0);
}

/* A retry acquires again: two leases, each released once. */
static void
test_retry_reacquires(void **state)
{
    reply r;

    get("/flaky", "gw.test", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    assert_int_equal(fake_rt.acquired, 2);
    assert_int_equal(fake_rt.released, 2);
    assert_int_equal(fake_rt.release_status, 200);
}

/* KB_EAGAIN: the request waits, the notify resumes it, and it asks for
 * the revision the split chose. */
static void
test_cold_start_waits(void **state)
{
    reply r;

    get("/cold", "gw.test", &r);
    assert_int_equal(r.status, 200);
    assert_true(fake_rt.acquires >= 2);
    assert_string_equal(fake_rt.last_revision, "cold-00001-aaa");
    assert_int_equal(fake_rt.acquired, 1);
    reply_free(&r);
}

static void
test_wait_timeout(void **state)
{
    reply r;

    /* nothing became ready: 503 naming the revision */
    get("/never", "gw.test", &r);
    assert_error(&r, 503, kb_http_status_name(503),
                 "no instance of never-00001-aaa became ready within 0.2s");
    reply_free(&r);
    /* the revision is at its instance cap: 429 */
    fake_rt.at_capacity = true;
    get("/never", "gw.test", &r);
    assert_error(&r, 429, kb_http_status_name(429),
                 "revision never-00001-aaa is at its maximum");
    assert_string_equal(reply_header(&r, "Retry-After"), "1");
    reply_free(&r);
    /* the waiter could not be cancelled (a notify was on its way): the
     * resume answers, without waiting again */
    fake_rt.at_capacity = false;
    fake_rt.cancel_fails = true;
    get("/never", "gw.test", &r);
    assert_error(&r, 503, kb_http_status_name(503), "became ready within");
    reply_free(&r);
    assert_int_equal(fake_rt.acquired, 0);
}

/* A client socket on this thread with `request` sent (small: it fits the
 * socket buffer), and the loop run until the request waits. */
static int
client_waiting(const char *request)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    struct timeval tv = { .tv_sec = 10 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_port = htons((uint16_t)E.listener_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, request, strlen(request)),
                     (ssize_t)strlen(request));
    for (int i = 0; i < 1000 && E.worker->waiting == NULL; i++) {
        uv_run(&E.loop, UV_RUN_NOWAIT);
        usleep(5 * 1000);
    }
    assert_non_null(E.worker->waiting);
    return fd;
}

static void
run_until_idle(void)
{
    for (int i = 0; i < 500 && kb_http_server_inflight(E.listener) > 0; i++) {
        uv_run(&E.loop, UV_RUN_NOWAIT);
        usleep(5 * 1000);
    }
    assert_int_equal(kb_http_server_inflight(E.listener), 0);
}

/* The client goes while its request waits: cancelled at once, or (when
 * the notify is already on its way) answered at the resume. */
static void
test_abort_while_waiting(void **state)
{
    for (int pass = 0; pass < 2; pass++) {
        int fd;
        fake_rt.cancel_fails = pass == 1;
        fd = client_waiting("GET /never-long HTTP/1.1\r\nHost: x\r\n"
                            "Connection: close\r\n\r\n");
        close(fd);
        run_until_idle();
        assert_int_equal(fake_rt.acquires, pass + 1);
        assert_int_equal(fake_rt.nqueued, 0);
        assert_null(E.worker->waiting);
    }
}

/* Shutdown: a waiting request does not hold the worker's close. */
static void
test_close_answers_waiters(void **state)
{
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    int fd = client_waiting("GET /never-long HTTP/1.1\r\nHost: x\r\n"
                            "Connection: close\r\n\r\n");

    gw__waits_close(E.worker);               /* what worker_close runs */
    assert_null(E.worker->waiting);
    run_until_idle();
    /* read to the close while the loop runs (it writes and closes) */
    for (int i = 0; i < 1000 && len < sizeof(buf) - 1; i++) {
        n = recv(fd, buf + len, sizeof(buf) - 1 - len, MSG_DONTWAIT);
        if (n == 0)
            break;
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        uv_run(&E.loop, UV_RUN_NOWAIT);
        usleep(5 * 1000);
    }
    buf[len] = '\0';
    close(fd);
    if (strncmp(buf, "HTTP/1.1 503", 12) != 0 ||
        strstr(buf, "shutting down") == NULL)
        fail_msg("got %s", buf);
}

static void
test_service_hosts(void **state)
{
    reply r;

    /* the split, the whole path and query, the usual headers */
    get("/any/path?q=1", "echo.p.kiban.test:8080", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "target")),
                        "/any/path?q=1");
    assert_string_equal(echoed(&r, "x-forwarded-host"),
                        "echo.p.kiban.test:8080");
    assert_true(gw__request_id_ok(echoed(&r, "x-request-id")));
    assert_non_null(echoed(&r, "traceparent"));
    assert_string_equal(fake_rt.last_tag, "");
    reply_free(&r);
    /* a tag pin, case-insensitive */
    get("/", "GREEN---Echo.P.Kiban.Test", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fake_rt.last_tag, "green");
    assert_string_equal(fake_rt.last_chosen, "echo-00002-bbb");
    reply_free(&r);
    /* unknown service, tag, project: 404 */
    get("/", "ghost.p.kiban.test", &r);
    assert_error(&r, 404, "NOT_FOUND", "no service ghost in project p");
    reply_free(&r);
    get("/", "blue---echo.p.kiban.test", &r);
    assert_error(&r, 404, "NOT_FOUND", "service echo has no revision tagged "
                 "blue");
    reply_free(&r);
    get("/", "echo.kiban.test", &r);          /* project "default" */
    assert_error(&r, 404, "NOT_FOUND", "no service echo in project default");
    reply_free(&r);
    /* a gateway naming the host wins: its route, not the service host */
    fake_rt.last_tag[0] = '\0';
    get("/x", "claimed.p.kiban.test", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fake_rt.last_tag, "green");
    reply_free(&r);
    get("/", "claimed.p.kiban.test", &r);      /* not a route of it */
    assert_error(&r, 404, "NOT_FOUND", "no route");
    reply_free(&r);
    /* other hosts: the OpenAPI routes */
    get("/echo", "kiban.test", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

static void
test_service_host_metrics(void **state)
{
    kb_buf out = KB_BUF_INIT(1 << 22);
    reply r;

    get("/", "echo.p.kiban.test", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    assert_int_equal(kb_metrics_render(&out), 0);
    assert_non_null(strstr(kb_buf_cstr(&out),
                           "kiban_gateway_requests_total{gateway=\"p\","
                           "route=\"service:echo\",code=\"2xx\"}"));
    assert_non_null(strstr(kb_buf_cstr(&out),
                           "kiban_gateway_requests_total{gateway=\"p\","
                           "route=\"service:echo@blue\",code=\"4xx\"}"));
    kb_buf_free(&out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_svc_host_parse),
        cmocka_unit_test(test_set_domain),
    };
#define T(f) cmocka_unit_test_setup_teardown(f, rev_before, rev_after)
    const struct CMUnitTest e2e_tests[] = {
        T(test_split_and_release),
        T(test_tag_pin),
        T(test_refusals),
        T(test_retry_reacquires),
        T(test_cold_start_waits),
        T(test_wait_timeout),
        T(test_abort_while_waiting),
        T(test_close_answers_waiters),
        T(test_service_hosts),
        T(test_service_host_metrics),
    };
#undef T
    int failed = cmocka_run_group_tests(tests, NULL, NULL);

    failed += cmocka_run_group_tests_name("gateway revisions end to end",
                                          e2e_tests, rev_setup, rev_teardown);
    return failed;
}
