/*
 * probe.h - one health-check attempt against an instance's loopback port:
 * tcpSocket (the connect succeeds) or httpGet (the status line says
 * 200..399).  The supervisor decides when to probe and what a run of
 * failures means; this module runs a single attempt on a libuv loop.
 */
#ifndef KB_RUNTIME_PROBE_H
#define KB_RUNTIME_PROBE_H

#include <stdbool.h>
#include <uv.h>

#include "runtime/template.h"

/* Bytes of response read at most: only the status line matters. */
#define KB_RT_PROBE_READ_MAX 4096
/* Longest httpGet path sent. */
#define KB_RT_PROBE_PATH_MAX 2048

typedef struct rt_probe_run rt_probe_run;

/*
 * Called once per attempt, on the loop thread: ok, and a short reason for
 * status and logs ("connected", "HTTP 200", "connection refused",
 * "HTTP 500", "timed out after 1000 ms", "bad status line").  `why` is
 * valid only during the call.  The run is over when this is called: do not
 * cancel it from here or later.
 */
typedef void (*rt_probe_cb)(void *data, bool ok, const char *why);

/*
 * Start one attempt against 127.0.0.1:port using p->http, p->path and
 * p->timeout_ms (0: 1000 ms); the other fields of p are the caller's.
 * p is not kept.  0 and *out: cb will run exactly once, unless
 * kb__rt_probe_cancel(*out) comes first.  KB_EINVAL (port out of range,
 * a path that does not start with '/', holds bytes other than visible
 * ASCII or is longer than KB_RT_PROBE_PATH_MAX), KB_ENOMEM, or a libuv
 * error: cb never runs.  The run frees itself once its handles have
 * closed, so the loop must run after it ends.
 */
int  kb__rt_probe_start(uv_loop_t *loop, int port, const rt_probe *p,
                        rt_probe_cb cb, void *data, rt_probe_run **out);
/*
 * Abandon a run whose callback has not run yet: the callback never runs.
 * NULL is ignored.
 */
void kb__rt_probe_cancel(rt_probe_run *r);

#endif
