/*
 * gw_fakes.h - what the gateway's unit tests share.
 *
 * With GW_FAKES_COMPILE (tests of one policy module: test_cors.c,
 * test_ratelimit.c): a fake of the proxy's gw__header_add that records
 * the answer's headers, and gw_specs built from a document the way
 * openapi.c does (routes only) with the compile_ok/reject helpers.
 * Include it after the module's .c, with these defined:
 *   GW_FAKES_COMPILE  the module's compile function (gw__cors_compile)
 *   GW_FAKES_RELEASE  its release function (gw__cors_release)
 *   GW_FAKES_POLICY   the gw_route field it fills (cors)
 * The test defines the other fakes its module calls (gw__respond, …).
 *
 * With GW_FAKES_RUNTIME (tests of the whole gateway): a fake runtime
 * behind gw_rt_ops (fake_rt_ops), see below.  With GW_FAKES_E2E as well:
 * an in-process gateway in front of an echo backend, driven over raw TCP
 * (e2e_boot, e2e_install, exchange, e2e_stop).
 */
#ifndef KB_TESTS_GW_FAKES_H
#define KB_TESTS_GW_FAKES_H

#ifdef GW_FAKES_COMPILE

/* ------------------------------------------------------------------------ */
/* The answer: headers added, status and message of a gateway response      */

static kb_http_header fake_res[GW_MAX_EXTRA + 16];
static size_t fake_nres;
static int fake_status;
static char fake_msg[512];

int
gw__header_add(gw_ctx *c, bool upstream, const char *name, const char *value)
{
    (void)c;
    assert_false(upstream);
    if (fake_nres == GW_MAX_EXTRA)
        return KB_ETOOBIG;
    fake_res[fake_nres++] = (kb_http_header){ strdup(name), strdup(value) };
    return 0;
}

static void
fake_reset(void)
{
    for (size_t i = 0; i < fake_nres; i++) {
        free((char *)fake_res[i].name);
        free((char *)fake_res[i].value);
    }
    fake_nres = 0;
    fake_status = 0;
    fake_msg[0] = '\0';
}

static const char *
fake_header(const char *name)
{
    for (size_t i = 0; i < fake_nres; i++)
        if (strcasecmp(fake_res[i].name, name) == 0)
            return fake_res[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* A gw_spec built from a document the way openapi.c does (routes only)      */

static const char *const mnames[][2] = {
    { "get", "GET" }, { "put", "PUT" }, { "post", "POST" },
    { "delete", "DELETE" }, { "options", "OPTIONS" }, { "patch", "PATCH" },
};

static gw_spec *
spec_build(const char *doc_text)
{
    gw_spec *s = calloc(1, sizeof(*s));
    const json_t *paths, *item;
    const char *path;

    assert_non_null(s);
    s->spec = json_pack("{s:o}", "openapi", J(doc_text));
    s->doc = json_object_get(s->spec, "openapi");
    s->id = strdup("default/main");
    s->routes = calloc(64, sizeof(gw_route));
    paths = json_object_get(s->doc, "paths");
    json_object_foreach((json_t *)paths, path, item) {
        const char *key;
        const json_t *op;
        json_object_foreach((json_t *)item, key, op) {      /* spec order */
            gw_route *r = &s->routes[s->nroutes];
            kb_buf b = KB_BUF_INIT(4096);
            size_t i = 0;
            while (i < sizeof(mnames) / sizeof(mnames[0]) &&
                   strcmp(mnames[i][0], key) != 0)
                i++;
            if (i == sizeof(mnames) / sizeof(mnames[0]))
                continue;
            r->method = mnames[i][1];
            r->template = strdup(path);
            assert_true(asprintf(&r->label, "%s %s", r->method, path) > 0);
            kb_buf_appends(&b, "/paths");
            gw__pointer_append(&b, path);
            gw__pointer_append(&b, mnames[i][0]);
            r->pointer = kb_buf_detach(&b);
            kb_buf_free(&b);
            r->op = op;
            r->spec = s;
            s->nroutes++;
        }
    }
    return s;
}

static void
spec_drop(gw_spec *s)
{
    GW_FAKES_RELEASE(s);
    for (size_t i = 0; i < s->nroutes; i++) {
        free(s->routes[i].template);
        free(s->routes[i].label);
        free(s->routes[i].pointer);
    }
    free(s->routes);
    free(s->id);
    json_decref(s->spec);
    free(s);
}

static gw_route *
route_of(gw_spec *s, const char *label)
{
    for (size_t i = 0; i < s->nroutes; i++)
        if (strcmp(s->routes[i].label, label) == 0)
            return &s->routes[i];
    fail_msg("no route %s", label);
    return NULL;
}

static gw_spec *
compile_ok(const char *doc)
{
    gw_spec *s = spec_build(doc);
    char err[512] = "";
    int rc = GW_FAKES_COMPILE(s, err, sizeof(err));

    if (rc != 0)
        fail_msg("rejected (%d): %s\n%s", rc, err, doc);
    return s;
}

static void
reject(const char *doc, const char *want)
{
    gw_spec *s = spec_build(doc);
    char err[512] = "";
    int rc = GW_FAKES_COMPILE(s, err, sizeof(err));

    if (rc != KB_EINVAL || strncmp(err, want, strlen(want)) != 0)
        fail_msg("doc: %s\nrc %d, err \"%s\"\nwant \"%s…\"", doc, rc, err,
                 want);
    for (size_t i = 0; i < s->nroutes; i++)
        assert_null(s->routes[i].GW_FAKES_POLICY);   /* nothing left behind */
    spec_drop(s);
}

#endif /* GW_FAKES_COMPILE */

#ifdef GW_FAKES_RUNTIME
/* ------------------------------------------------------------------------ */
/* A fake runtime: kb_runtime_acquire & co. for services of project "p"     */
/*
 *   echo   revisions echo-00001-aaa (75 %) and echo-00002-bbb (25 %, tag
 *          "green"), split on the gateway's random number
 *   cold   cold-00001-aaa: KB_EAGAIN until its cold start ends (the notify
 *          timer, 30 ms after the first wait), then served
 *   never  never-00001-aaa: KB_EAGAIN for ever (no notify), unless
 *          cancel_fails: then wait_cancel fails and a notify follows
 *   flaky  the first acquire gets a closed port, the next ones the backend
 *   down   KB_EUNAVAIL      full   KB_ETOOBIG      else KB_ENOTFOUND
 * Every instance is the test's backend (fake_rt.port).  Loop thread only.
 */
#define FAKE_MAX_QUEUED 16

static struct fake_rt {
    uv_loop_t    *loop;
    int           port, closed_port;
    int           acquires;          /* calls */
    int           acquired, released;/* leases given and given back */
    int           flaky_calls;
    char          last_tag[64];      /* "" when NULL */
    char          last_revision[96]; /* the `revision` argument; "" NULL */
    char          last_chosen[96];   /* the revision of the last lease */
    int           picks_green;       /* split: leases of echo-00002-bbb */
    int           release_err, release_status;
    kb_rt_waiter *queued[FAKE_MAX_QUEUED];
    size_t        nqueued;
    bool          cancel_fails, at_capacity, cold_ready;
    uv_timer_t    notify_timer;      /* notifies every queued waiter */
} fake_rt;

static void
fake_notify_all(uv_timer_t *t)
{
    (void)t;
    fake_rt.cold_ready = true;
    while (fake_rt.nqueued > 0) {
        kb_rt_waiter *w = fake_rt.queued[--fake_rt.nqueued];
        w->notify(w);
    }
}

static void
fake_rt_init(uv_loop_t *loop, int port, int closed_port)
{
    memset(&fake_rt, 0, sizeof(fake_rt));
    fake_rt.loop = loop;
    fake_rt.port = port;
    fake_rt.closed_port = closed_port;
    uv_timer_init(loop, &fake_rt.notify_timer);
}

static void
fake_rt_close(void)
{
    uv_close((uv_handle_t *)&fake_rt.notify_timer, NULL);
}

/* Between tests: the same state for each. */
static void
fake_rt_reset(void) __attribute__((unused));
static void
fake_rt_reset(void)
{
    fake_rt.acquires = fake_rt.acquired = fake_rt.released = 0;
    fake_rt.flaky_calls = fake_rt.picks_green = 0;
    fake_rt.cancel_fails = fake_rt.at_capacity = fake_rt.cold_ready = false;
    fake_rt.last_tag[0] = fake_rt.last_revision[0] = '\0';
    fake_rt.last_chosen[0] = '\0';
}

static void
fake_lease(kb_rt_lease *lease, const char *revision, int port)
{
    snprintf(lease->ep.host, sizeof(lease->ep.host), "127.0.0.1");
    lease->ep.port = port;
    snprintf(lease->ep.revision, sizeof(lease->ep.revision), "%s", revision);
    lease->instance = &fake_rt;
    snprintf(fake_rt.last_chosen, sizeof(fake_rt.last_chosen), "%s",
             revision);
    fake_rt.acquired++;
}

static int
fake_wait(kb_rt_waiter *w, kb_rt_lease *lease, const char *revision)
{
    snprintf(lease->ep.revision, sizeof(lease->ep.revision), "%s", revision);
    if (w == NULL)
        return KB_EAGAIN;
    assert_true(fake_rt.nqueued < FAKE_MAX_QUEUED);
    for (size_t i = 0; i < fake_rt.nqueued; i++)
        assert_ptr_not_equal(fake_rt.queued[i], w);  /* queued once */
    fake_rt.queued[fake_rt.nqueued++] = w;
    return KB_EAGAIN;
}

static int
fake_acquire(kb_runtime *rt, const char *project, const char *name,
             const char *tag, const char *revision, uint32_t rnd,
             kb_rt_waiter *w, kb_rt_lease *lease)
{
    (void)rt;
    memset(lease, 0, sizeof(*lease));
    fake_rt.acquires++;
    snprintf(fake_rt.last_tag, sizeof(fake_rt.last_tag), "%s",
             tag != NULL ? tag : "");
    snprintf(fake_rt.last_revision, sizeof(fake_rt.last_revision), "%s",
             revision != NULL ? revision : "");
    if (strcmp(project, "p") != 0)
        return KB_ENOTFOUND;
    if (strcmp(name, "echo") == 0) {
        const char *rev = rnd < 0x40000000u ? "echo-00002-bbb"
                                            : "echo-00001-aaa";
        if (tag != NULL && strcmp(tag, "green") != 0)
            return KB_ENOTFOUND;
        if (tag != NULL)
            rev = "echo-00002-bbb";
        if (revision != NULL)
            rev = revision;
        fake_rt.picks_green += strcmp(rev, "echo-00002-bbb") == 0;
        fake_lease(lease, rev, fake_rt.port);
        return 0;
    }
    if (strcmp(name, "cold") == 0) {
        if (fake_rt.cold_ready) {
            fake_lease(lease, "cold-00001-aaa", fake_rt.port);
            return 0;
        }
        if (w != NULL && !uv_is_active((uv_handle_t *)&fake_rt.notify_timer))
            uv_timer_start(&fake_rt.notify_timer, fake_notify_all, 30, 0);
        return fake_wait(w, lease, "cold-00001-aaa");
    }
    if (strcmp(name, "never") == 0)
        return fake_wait(w, lease, "never-00001-aaa");
    if (strcmp(name, "flaky") == 0) {
        fake_lease(lease, "flaky-00001-aaa", fake_rt.flaky_calls++ == 0
                                                 ? fake_rt.closed_port
                                                 : fake_rt.port);
        return 0;
    }
    if (strcmp(name, "down") == 0)
        return KB_EUNAVAIL;
    if (strcmp(name, "full") == 0)
        return KB_ETOOBIG;
    return KB_ENOTFOUND;
}

static bool
fake_wait_cancel(kb_runtime *rt, kb_rt_waiter *w)
{
    (void)rt;
    for (size_t i = 0; i < fake_rt.nqueued; i++) {
        if (fake_rt.queued[i] != w)
            continue;
        if (fake_rt.cancel_fails) {
            /* the notify is "being called": it arrives a little later */
            if (!uv_is_active((uv_handle_t *)&fake_rt.notify_timer))
                uv_timer_start(&fake_rt.notify_timer, fake_notify_all, 20, 0);
            return false;
        }
        fake_rt.queued[i] = fake_rt.queued[--fake_rt.nqueued];
        return true;
    }
    fail_msg("wait_cancel of a waiter that is not queued");
    return false;
}

static void
fake_release(kb_runtime *rt, kb_rt_lease *lease, int err, int status)
{
    (void)rt;
    assert_ptr_equal(lease->instance, &fake_rt);   /* a live lease */
    fake_rt.released++;
    fake_rt.release_err = err;
    fake_rt.release_status = status;
    memset(lease, 0, sizeof(*lease));
}

static bool
fake_at_capacity(kb_runtime *rt, const char *project, const char *name,
                 const char *revision)
{
    (void)rt, (void)project, (void)name, (void)revision;
    return fake_rt.at_capacity;
}

static const gw_rt_ops fake_rt_ops = {
    .acquire = fake_acquire,
    .wait_cancel = fake_wait_cancel,
    .release = fake_release,
    .at_capacity = fake_at_capacity,
};
#endif /* GW_FAKES_RUNTIME */

#ifdef GW_FAKES_E2E
/* ------------------------------------------------------------------------ */
/* End to end: raw TCP client → gateway listener → echo backend              */
/* (E: one gateway with one worker on this thread's loop, the fake runtime) */

typedef struct e2e {
    uv_loop_t       loop;
    kb_http_server *backend;
    kb_http_server *listener;
    kb_http_client *client;
    kb_gateway     *gw;
    kb_gateway_worker *worker;
    int             backend_port, listener_port, garbage_port, closed_port;
    uv_tcp_t        garbage;     /* answers every connection with junk */
    uv_async_t      wake;
    bool            backend_aborted;
    int             slow_pending;
} e2e;

static e2e E;

/* A backend request that answers after a while (for deadlines, aborts). */
typedef struct slow_req {
    uv_timer_t   timer;
    kb_http_req *req;
} slow_req;

static void
slow_closed(uv_handle_t *h)
{
    free(h->data);
    E.slow_pending--;
}

static void
slow_fire(uv_timer_t *t)
{
    slow_req *s = t->data;

    kb_http_respond(s->req, 200, NULL, 0, "late", 4);
    uv_close((uv_handle_t *)&s->timer, slow_closed);
}

static void
slow_abort(kb_http_req *req, void *data)
{
    slow_req *s = data;

    E.backend_aborted = true;
    uv_timer_stop(&s->timer);
    kb_http_respond(req, 499, NULL, 0, NULL, 0);   /* release it */
    uv_close((uv_handle_t *)&s->timer, slow_closed);
}

/* The backend: echoes method, target, headers and body as JSON. */
static void
echo(kb_http_req *req, void *data)
{
    static const kb_http_header extra[] = {
        { "X-Backend", "yes" },
        { "Keep-Alive", "timeout=5" },           /* hop-by-hop: dropped */
        { "X-Request-Id", "from-backend" },      /* replaced by ours */
    };
    json_t *headers, *body;
    char *text;

    if (strcmp(req->path, "/slow") == 0) {
        slow_req *s = calloc(1, sizeof(*s));
        assert_non_null(s);
        s->req = req;
        s->timer.data = s;
        uv_timer_init(&E.loop, &s->timer);
        uv_timer_start(&s->timer, slow_fire, 1500, 0);
        kb_http_req_on_abort(req, slow_abort, s);
        E.slow_pending++;
        return;
    }
    headers = json_object();
    for (size_t i = 0; i < req->nheaders; i++) {
        char name[128];
        size_t n = strlen(req->headers[i].name);
        const json_t *prev;
        if (n >= sizeof(name))
            continue;
        for (size_t k = 0; k <= n; k++)
            name[k] = (char)tolower((unsigned char)req->headers[i].name[k]);
        prev = json_object_get(headers, name);
        if (prev != NULL) {      /* repeated headers: joined, to spot them */
            char joined[1024];
            snprintf(joined, sizeof(joined), "%s|%s", json_string_value(prev),
                     req->headers[i].value);
            json_object_set_new(headers, name, json_string(joined));
        } else {
            json_object_set_new(headers, name,
                                json_string(req->headers[i].value));
        }
    }
    body = json_pack("{s:s,s:s,s:s%,s:o}", "method", req->method, "target",
                     req->target, "body", req->body, req->body_len,
                     "headers", headers);
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    kb_http_respond(req, 200, extra, 3, text, strlen(text));
    free(text);
}

static void
garbage_written(uv_write_t *w, int status)
{
    uv_close((uv_handle_t *)w->handle, (uv_close_cb)free);
    free(w);
}

static void
garbage_conn(uv_stream_t *server, int status)
{
    static char junk[] = "this is not HTTP\r\n\r\n";
    uv_tcp_t *c = calloc(1, sizeof(*c));
    uv_write_t *w = calloc(1, sizeof(*w));
    uv_buf_t b = uv_buf_init(junk, sizeof(junk) - 1);

    uv_tcp_init(server->loop, c);
    assert_int_equal(uv_accept(server, (uv_stream_t *)c), 0);
    uv_write(w, (uv_stream_t *)c, &b, 1, garbage_written);
}

static void
wake(uv_async_t *a)
{
    uv_stop(a->loop);
}

/* A loopback port that nothing listens on. */
static int
closed_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Start the loop, the echo backend, the gateway (fake runtime, no access
 * log) with one worker and its listener, and the junk and closed ports. */
static void
e2e_boot(void)
{
    kb_http_server_opts bo = { .name = "test-backend", .handler = echo };
    kb_http_server_opts go = { .name = "test-gateway" };
    struct sockaddr_in sa;
    int len = sizeof(sa);

    memset(&E, 0, sizeof(E));
    assert_int_equal(uv_loop_init(&E.loop), 0);
    assert_int_equal(uv_async_init(&E.loop, &E.wake, wake), 0);
    assert_int_equal(kb_http_server_start(&E.loop, "127.0.0.1:0", &bo,
                                          &E.backend), 0);
    E.backend_port = kb_http_server_port(E.backend);
    assert_int_equal(kb_http_client_create(&E.loop, NULL, &E.client), 0);
    assert_int_equal(kb_gateway_create(&E.loop, E.client, NULL, &E.gw), 0);
    assert_int_equal(kb_gateway_set_access_log(E.gw, "off"), 0);
    assert_int_equal(kb_gateway_worker_create(E.gw, &E.loop, &E.worker), 0);
    go.handler = kb_gateway_handle;
    go.data = E.worker;
    assert_int_equal(kb_http_server_start(&E.loop, "127.0.0.1:0", &go,
                                          &E.listener), 0);
    E.listener_port = kb_http_server_port(E.listener);

    uv_tcp_init(&E.loop, &E.garbage);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&E.garbage, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&E.garbage, 16, garbage_conn),
                     0);
    uv_tcp_getsockname(&E.garbage, (struct sockaddr *)&sa, &len);
    E.garbage_port = ntohs(sa.sin_port);
    E.closed_port = closed_port();
    fake_rt_init(&E.loop, E.backend_port, E.closed_port);
    E.gw->rt_ops = &fake_rt_ops;
}

/* Install gateway p/name from JSON text written with ' for ". */
static void
e2e_install(const char *name, const char *text)
{
    char *copy = strdup(text), err[512];
    json_t *spec;
    json_error_t jerr;

    assert_non_null(copy);
    for (char *p = copy; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    spec = json_loads(copy, 0, &jerr);
    if (spec == NULL)
        fail_msg("bad test spec: %s\n%s", jerr.text, copy);
    if (kb_gateway_set(E.gw, "p", name, spec, err, sizeof(err)) != 0)
        fail_msg("e2e spec: %s", err);
    json_decref(spec);
    free(copy);
}

static void
server_gone(void *data)
{
    (*(int *)data)--;
}

/* Stop everything e2e_boot started; the loop must close cleanly. */
static void
e2e_stop(void)
{
    int servers = 2;

    kb_http_server_shutdown(E.listener, 100, server_gone, &servers);
    kb_http_server_shutdown(E.backend, 100, server_gone, &servers);
    while (servers > 0 || E.slow_pending > 0)
        uv_run(&E.loop, UV_RUN_ONCE);
    kb_http_client_destroy(E.client);
    kb_gateway_worker_close(E.worker);
    fake_rt_close();
    uv_close((uv_handle_t *)&E.garbage, NULL);
    uv_close((uv_handle_t *)&E.wake, NULL);
    uv_run(&E.loop, UV_RUN_DEFAULT);
    kb_gateway_free(E.gw);
    assert_int_equal(uv_loop_close(&E.loop), 0);
}

/* One raw exchange on a thread while the loop serves on this one. */
typedef struct xchg {
    char        request[4096];
    bool        abort_after_send;
    char        response[65536];
    size_t      len;
} xchg;

static void *
xchg_thread(void *arg)
{
    xchg *x = arg;
    struct sockaddr_in sa = { .sin_family = AF_INET };
    struct timeval tv = { .tv_sec = 10 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    size_t off = 0, n = strlen(x->request);

    sa.sin_port = htons((uint16_t)E.listener_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        while (off < n) {
            ssize_t w = write(fd, x->request + off, n - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        while (!x->abort_after_send && x->len < sizeof(x->response) - 1) {
            ssize_t r = read(fd, x->response + x->len,
                             sizeof(x->response) - 1 - x->len);
            if (r <= 0)
                break;
            x->len += (size_t)r;
        }
    }
    x->response[x->len] = '\0';
    close(fd);
    uv_async_send(&E.wake);
    return NULL;
}

typedef struct reply {
    int     status;
    char    head[8192];
    char   *body;
    json_t *json;                /* the body, when it is JSON */
} reply;

static void
reply_free(reply *r)
{
    json_decref(r->json);
    r->json = NULL;
}

/* Send a raw request ("\n" becomes CRLF) and parse the reply. */
static void
exchange(const char *request, bool abort_after_send, reply *r)
{
    xchg *x = calloc(1, sizeof(*x));
    pthread_t th;
    size_t n = 0;
    char *end;

    assert_non_null(x);
    for (const char *p = request; *p != '\0' && n + 2 < sizeof(x->request);
         p++) {
        if (*p == '\n')
            x->request[n++] = '\r';
        x->request[n++] = *p;
    }
    x->abort_after_send = abort_after_send;
    assert_int_equal(pthread_create(&th, NULL, xchg_thread, x), 0);
    uv_run(&E.loop, UV_RUN_DEFAULT);     /* until the thread wakes us */
    pthread_join(th, NULL);
    memset(r, 0, sizeof(*r));
    if (abort_after_send) {
        free(x);
        return;
    }
    end = strstr(x->response, "\r\n\r\n");
    if (end == NULL || sscanf(x->response, "HTTP/1.1 %d", &r->status) != 1)
        fail_msg("bad reply to %s:\n%s", request, x->response);
    snprintf(r->head, sizeof(r->head), "%.*s", (int)(end - x->response) + 2,
             x->response);
    r->body = strdup(end + 4);
    r->json = json_loads(r->body, 0, NULL);
    free(r->body);
    r->body = NULL;
    free(x);
}

/* Value of a reply header (static buffer), or NULL. */
static const char *
reply_header(const reply *r, const char *name)
{
    static char value[1024];
    size_t n = strlen(name);

    for (const char *line = strstr(r->head, "\r\n"); line != NULL;
         line = strstr(line + 2, "\r\n")) {
        const char *l = line + 2;
        if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
            const char *v = l + n + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(value, sizeof(value), "%.*s", (int)(e - v), v);
            return value;
        }
    }
    return NULL;
}

/* headers.NAME from the echo backend's JSON, or NULL. */
static const char *
echoed(const reply *r, const char *name)
{
    return json_string_value(json_object_get(
        json_object_get(r->json, "headers"), name));
}

static void
assert_error(const reply *r, int status, const char *gstatus,
             const char *msg_part)
{
    const char *msg;

    assert_int_equal(r->status, status);
    assert_non_null(r->json);
    assert_int_equal(json_integer_value(json_object_get(
        json_object_get(r->json, "error"), "code")), status);
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(r->json, "error"), "status")), gstatus);
    msg = json_string_value(json_object_get(json_object_get(r->json, "error"),
                                            "message"));
    if (msg == NULL || strstr(msg, msg_part) == NULL)
        fail_msg("error message \"%s\" lacks \"%s\"", msg ? msg : "",
                 msg_part);
    assert_true(gw__request_id_ok(reply_header(r, "X-Request-Id")));
    assert_string_equal(reply_header(r, "Content-Type"), "application/json");
}
#endif /* GW_FAKES_E2E */

#endif /* KB_TESTS_GW_FAKES_H */
