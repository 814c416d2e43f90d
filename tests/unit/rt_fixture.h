/*
 * rt_fixture.h - what the runtime's unit tests share: a loop polled until
 * a condition holds, and (with RT_FIXTURE_PROCS) the test binary as shim,
 * kiban-hello located, a blocking HTTP client and process-group checks.
 * Include after <cmocka.h>; the test's fixture struct has a `loop` member.
 */
#ifndef KB_TESTS_RT_FIXTURE_H
#define KB_TESTS_RT_FIXTURE_H

#include "core/time.h"

#include <stdint.h>
#include <uv.h>

/* Poll `cond` while running f's loop; fail after ms (a hang guard). */
#define EVENTUALLY(f, cond, ms) do {                                       \
    uint64_t end_ = kb_time_mono_ms() + (ms);                              \
    while (!(cond)) {                                                      \
        if (kb_time_mono_ms() >= end_)                                     \
            fail_msg("%s:%d: not true within %d ms: %s", __FILE__,         \
                     __LINE__, (int)(ms), #cond);                          \
        uv_run(&(f)->loop, UV_RUN_ONCE);                                   \
    }                                                                      \
} while (0)

/* Run the loop for ms whatever happens. */
static inline void
rt_run_for(uv_loop_t *loop, int ms)
{
    uint64_t end = kb_time_mono_ms() + (uint64_t)ms;

    while (kb_time_mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
}

#define run_for(f, ms) rt_run_for(&(f)->loop, (ms))

static inline void
rt_tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Initialise the loop with a 10 ms timer that keeps UV_RUN_ONCE from
 * blocking long, so EVENTUALLY polls its condition. */
static inline void
rt_loop_open(uv_loop_t *loop, uv_timer_t *tick)
{
    assert_int_equal(uv_loop_init(loop), 0);
    uv_timer_init(loop, tick);
    uv_timer_start(tick, rt_tick_cb, 10, 10);
}

/* A completion callback that sets the int at data. */
static inline void
flag_set(void *data)
{
    *(int *)data = 1;
}

#ifdef RT_FIXTURE_PROCS

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static char self_exe[PATH_MAX];     /* this binary, also the shim */
static char hello[PATH_MAX];        /* kiban-hello */

/* Fill self_exe: 0, or -1. */
static inline int
rt_find_self(void)
{
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);

    if (n <= 0)
        return -1;
    self_exe[n] = '\0';
    return 0;
}

/* Fill hello from KIBAN_HELLO (default: kiban-hello next to self_exe):
 * 0, or -1 with a message on stderr naming `prog`. */
static inline int
rt_find_hello(const char *prog)
{
    const char *h = getenv("KIBAN_HELLO");

    if (h != NULL && *h != '\0') {
        snprintf(hello, sizeof(hello), "%s", h);
    } else {
        snprintf(hello, sizeof(hello), "%s", self_exe);
        char *slash = strrchr(hello, '/');
        snprintf(slash + 1, sizeof(hello) - (size_t)(slash + 1 - hello),
                 "kiban-hello");
    }
    if (access(hello, X_OK) != 0) {
        fprintf(stderr, "%s: kiban-hello not found at %s "
                "(set KIBAN_HELLO)\n", prog, hello);
        return -1;
    }
    return 0;
}

/*
 * One blocking HTTP/1.1 request to 127.0.0.1:port (the loop is not run
 * meanwhile; the instance is another process).  The status code, or -1
 * without a response; the body goes to out.
 */
static inline int
http(int port, const char *method, const char *path, char *out, size_t len)
{
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { .tv_sec = 10 };
    char req[512], buf[16384];
    size_t n = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    out[0] = '\0';
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    int rl = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\n"
                      "Connection: close\r\n\r\n", method, path);
    if (write(fd, req, (size_t)rl) != rl) {
        close(fd);
        return -1;
    }
    for (ssize_t r; n < sizeof(buf) - 1
         && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0;)
        n += (size_t)r;
    close(fd);
    buf[n] = '\0';
    int status;
    char *body = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1 || body == NULL)
        return -1;
    snprintf(out, len, "%s", body + 4);
    return status;
}

/* No process of group pgid is left. */
static inline bool
group_gone(int pgid)
{
    return kill(-pgid, 0) < 0 && errno == ESRCH;
}

#endif /* RT_FIXTURE_PROCS */

#endif
