/*
 * test_curl_client.c - the https / HTTP/2 upstream client (curl_client.c)
 * against real loopback backends started here: nghttpd (h2c prior
 * knowledge, h2 over TLS/ALPN, trailers, upload echo) and a python3
 * HTTP/1.1 server wrapped in TLS with a certificate made by openssl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http/curl_client.c"      /* reach conns_opened */

static char       dir[64];
static char       ca_path[128];
static pid_t      pids[4];
static int        npids;
static int        py_port;          /* https HTTP/1.1 (python) */
static int        h2c_port;         /* nghttpd --no-tls */
static int        h2s_port;         /* nghttpd with TLS */
static uv_loop_t  loop;

/* ---- backends ------------------------------------------------------------ */

static const char py_server[] =
"import http.server, json, socketserver, ssl, sys, time\n"
"class H(http.server.BaseHTTPRequestHandler):\n"
"    protocol_version = 'HTTP/1.1'\n"
"    def log_message(self, *a): pass\n"
"    def reply(self, status, body, extra=()):\n"
"        self.send_response(status)\n"
"        for k, v in extra: self.send_header(k, v)\n"
"        self.send_header('Content-Length', str(len(body)))\n"
"        self.end_headers()\n"
"        if self.command != 'HEAD': self.wfile.write(body)\n"
"    def body(self):\n"
"        n = int(self.headers.get('Content-Length', '0'))\n"
"        return self.rfile.read(n)\n"
"    def handle_any(self):\n"
"        b = self.body()\n"
"        if self.path == '/hello':\n"
"            self.reply(200, b'hello', [('X-Test', '  spaced  ')])\n"
"        elif self.path == '/echo':\n"
"            self.reply(201, b, [('X-Method', self.command)])\n"
"        elif self.path.startswith('/headers'):\n"
"            out = [[k, v] for k, v in self.headers.items()]\n"
"            self.reply(200, json.dumps({'method': self.command,\n"
"                'path': self.path, 'headers': out,\n"
"                'body': len(b)}).encode())\n"
"        elif self.path == '/big':\n"
"            self.reply(200, b'x' * 1000)\n"
"        elif self.path == '/bigchunked':\n"
"            self.send_response(200)\n"
"            self.send_header('Transfer-Encoding', 'chunked')\n"
"            self.end_headers()\n"
"            for i in range(10):\n"
"                self.wfile.write(b'64\\r\\n' + b'y' * 100 + b'\\r\\n')\n"
"            self.wfile.write(b'0\\r\\n\\r\\n')\n"
"        elif self.path == '/early':\n"
"            self.wfile.write(b'HTTP/1.1 103 Early Hints\\r\\n'\n"
"                             b'Link: </a.css>\\r\\n\\r\\n')\n"
"            self.reply(200, b'final', [('X-Final', '1')])\n"
"        elif self.path == '/trailer':\n"
"            self.send_response(200)\n"
"            self.send_header('Transfer-Encoding', 'chunked')\n"
"            self.send_header('Trailer', 'X-Sum')\n"
"            self.end_headers()\n"
"            self.wfile.write(b'3\\r\\nabc\\r\\n0\\r\\nX-Sum: 42\\r\\n\\r\\n')\n"
"        elif self.path == '/manyheaders':\n"
"            self.reply(200, b'', [('X-H%d' % i, 'v') for i in range(150)])\n"
"        else:\n"
"            self.reply(404, b'nope')\n"
"    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any\n"
"class S(socketserver.ThreadingMixIn, http.server.HTTPServer):\n"
"    daemon_threads = True\n"
"srv = S(('127.0.0.1', 0), H)\n"
"ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
"ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n"
"srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
"print(srv.server_address[1], flush=True)\n"
"srv.serve_forever()\n";

static void
write_file(const char *name, const char *text, size_t len)
{
    char path[192];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

/* Start argv; if `port` is given, read the port the child prints. */
static pid_t
spawn(char *const argv[], int *port)
{
    int fds[2] = { -1, -1 };
    pid_t pid;

    if (port != NULL)
        assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (port != NULL)
            dup2(fds[1], 1);
        else
            dup2(devnull, 1);
        dup2(devnull, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    pids[npids++] = pid;
    if (port != NULL) {
        char line[32] = { 0 };
        ssize_t n;
        close(fds[1]);
        n = read(fds[0], line, sizeof(line) - 1);
        close(fds[0]);
        assert_true(n > 0);
        *port = (int)strtol(line, NULL, 10);
        assert_true(*port > 0);
    }
    return pid;
}

/* A port nobody listens on right now (bound, then released). */
static int
free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void
wait_listening(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET };

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    for (int i = 0; i < 200; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return;
        usleep(25000);
    }
    fail_msg("nothing listens on port %d", port);
}

/* Also at exit, in case a failed setup skips the group teardown. */
static void
kill_backends(void)
{
    for (int i = 0; i < npids; i++) {
        kill(pids[i], SIGTERM);
        waitpid(pids[i], NULL, 0);
    }
    npids = 0;
}

static int
group_setup(void **state)
{
    char cmd[512], key[128], cert[128], docroot[128], portbuf[2][16];
    char big[2000];

    (void)state;
    if (system("command -v nghttpd openssl python3 >/dev/null") != 0)
        fail_msg("needs nghttpd (Debian nghttp2-server), openssl, python3");
    atexit(kill_backends);
    snprintf(dir, sizeof(dir), "/tmp/kb_curl_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(ca_path, sizeof(ca_path), "%s", cert);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
             " -nodes -keyout %s -out %s -days 1 -subj /CN=localhost"
             " -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
             " >/dev/null 2>&1", key, cert);
    assert_int_equal(system(cmd), 0);

    snprintf(docroot, sizeof(docroot), "%s/www", dir);
    assert_int_equal(mkdir(docroot, 0700), 0);
    write_file("www/hello.txt", "hello over h2\n", 14);
    memset(big, 'z', sizeof(big));
    write_file("www/big.bin", big, sizeof(big));
    write_file("server.py", py_server, sizeof(py_server) - 1);

    {
        char script[160];
        snprintf(script, sizeof(script), "%s/server.py", dir);
        char *argv[] = { "python3", script, cert, key, NULL };
        spawn(argv, &py_port);
    }
    h2c_port = free_port();
    snprintf(portbuf[0], sizeof(portbuf[0]), "%d", h2c_port);
    {
        /* gRPC servers stream: no Content-Length (curl 7.88 ends an h2
         * stream at Content-Length and would not wait for trailers) */
        char *argv[] = { "nghttpd", "--no-tls", "-a", "127.0.0.1", "-d",
                         docroot, "--echo-upload", "--no-content-length",
                         "--trailer=grpc-status: 0",
                         "--trailer=grpc-message: all good",
                         portbuf[0], NULL };
        spawn(argv, NULL);
    }
    h2s_port = free_port();
    snprintf(portbuf[1], sizeof(portbuf[1]), "%d", h2s_port);
    {
        char *argv[] = { "nghttpd", "-a", "127.0.0.1", "-d", docroot,
                         "--no-content-length",
                         "--trailer=grpc-status: 0", portbuf[1], key, cert,
                         NULL };
        spawn(argv, NULL);
    }
    wait_listening(py_port);
    wait_listening(h2c_port);
    wait_listening(h2s_port);
    return 0;
}

static int
group_teardown(void **state)
{
    char cmd[128];

    (void)state;
    kill_backends();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int
setup(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    uv_run(&loop, UV_RUN_DEFAULT);      /* let closing handles finish */
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

/* ---- calls --------------------------------------------------------------- */

typedef struct result {
    int     done;                   /* callback count */
    int     err;
    int     status;
    char    body[4096];
    size_t  body_len;
    char    headers[4096];          /* "name: value\n"… */
    size_t  nheaders;
    char    trailers[1024];
    size_t  ntrailers;
} result;

static void
append_fields(char *out, size_t cap, const kb_http_header *h, size_t n)
{
    size_t len = strlen(out);

    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + len, cap - len, "%s: %s\n", h[i].name,
                         h[i].value);
        assert_true(w >= 0 && (size_t)w < cap - len);
        len += (size_t)w;
    }
}

static void
on_result(int err, const kb_http_client_res *res, void *data)
{
    result *r = data;

    r->done++;
    r->err = err;
    if (err != 0) {
        assert_null(res);
        return;
    }
    r->status = res->status;
    assert_non_null(res->body);
    assert_int_equal(res->body[res->body_len], '\0');
    r->body_len = res->body_len;
    if (res->body_len < sizeof(r->body))
        memcpy(r->body, res->body, res->body_len + 1);
    r->nheaders = res->nheaders;
    append_fields(r->headers, sizeof(r->headers), res->headers, res->nheaders);
    r->ntrailers = res->ntrailers;
    append_fields(r->trailers, sizeof(r->trailers), res->trailers,
                  res->ntrailers);
}

static void
on_deadline(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Run the loop until `*done >= want` or `ms` pass. */
static void
run_until(const int *done, int want, uint64_t ms)
{
    uv_timer_t t;
    int expired = 0;

    uv_timer_init(&loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (*done < want && !expired)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static kb_curl_client *
client_new(const char *ca, size_t max_body)
{
    kb_curl_client_opts o = { .max_body = max_body, .ca_file = ca };
    kb_curl_client *c = NULL;

    assert_int_equal(kb_curl_client_create(&loop, &o, &c), 0);
    return c;
}

static kb_http_client_req
req_for(const char *method, int port, const char *target, bool tls, bool h2)
{
    kb_http_client_req q = { .method = method, .host = "127.0.0.1",
                             .port = port, .target = target, .tls = tls,
                             .h2 = h2, .timeout_ms = 5000 };
    return q;
}

static void
call_sync(kb_curl_client *c, const kb_http_client_req *q, result *r)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(kb_curl_client_send(c, q, on_result, r, NULL), 0);
    run_until(&r->done, 1, 10000);
    assert_int_equal(r->done, 1);
}

/* ---- tests --------------------------------------------------------------- */

static void
test_h2c_get_trailers(void **state)
{
    kb_curl_client *c = client_new(NULL, 0);
    kb_http_header h[] = { { "Host", "backend.internal" } };
    kb_http_client_req q = req_for("GET", h2c_port, "/hello.txt", false, true);
    result r;

    (void)state;
    q.headers = h;
    q.nheaders = 1;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 14);
    assert_string_equal(r.body, "hello over h2\n");
    /* the trailers arrive apart from the head, values trimmed */
    assert_int_equal(r.ntrailers, 2);
    assert_non_null(strstr(r.trailers, "grpc-status: 0\n"));
    assert_non_null(strstr(r.trailers, "grpc-message: all good\n"));
    assert_null(strstr(r.headers, "grpc-status: "));
    assert_non_null(strstr(r.headers, "content-type: text/plain\n"));
    assert_null(strstr(r.headers, "HTTP/"));
    kb_curl_client_destroy(c);
}

/* gRPC-shaped: POST with te: trailers over h2c; body echoed, trailers. */
static void
test_h2c_post_grpc_shape(void **state)
{
    kb_curl_client *c = client_new(NULL, 0);
    kb_http_header h[] = { { "Host", "127.0.0.1" },
                           { "Content-Type", "application/grpc" },
                           { "TE", "trailers" },
                           { "Connection", "keep-alive" } };
    kb_http_client_req q = req_for("POST", h2c_port, "/svc.Echo/Say", false,
                                   true);
    static const char msg[] = "\0\0\0\0\5hi\0yo";
    result r;

    (void)state;
    q.headers = h;
    q.nheaders = 4;
    q.body = msg;
    q.body_len = sizeof(msg) - 1;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, sizeof(msg) - 1);
    assert_memory_equal(r.body, msg, sizeof(msg) - 1);
    assert_non_null(strstr(r.trailers, "grpc-status: 0\n"));
    kb_curl_client_destroy(c);
}

static void
test_h2_tls_alpn(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_client_req q = req_for("GET", h2s_port, "/hello.txt", true, true);
    result r;

    (void)state;
    for (int i = 0; i < 2; i++) {
        call_sync(c, &q, &r);   /* nghttpd speaks nothing but h2 */
        assert_int_equal(r.err, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello over h2\n");
        assert_non_null(strstr(r.trailers, "grpc-status: 0\n"));
    }
    assert_int_equal(c->conns_opened, 1);   /* the second call reused it */
    kb_curl_client_destroy(c);
}

static void
test_https_get_and_reuse(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_client_req q = req_for("GET", py_port, "/hello", true, false);
    result r;

    (void)state;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_non_null(strstr(r.headers, "X-Test: spaced\n"));
    assert_int_equal(r.ntrailers, 0);
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_string_equal(r.body, "hello");
    assert_int_equal(c->conns_opened, 1);   /* kept alive, reused */
    kb_curl_client_destroy(c);
}

static void
test_https_name_verified(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_client_req q = req_for("GET", py_port, "/hello", true, false);
    result r;

    (void)state;
    q.host = "localhost";       /* resolved off-loop; DNS SAN checked */
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_string_equal(r.body, "hello");
    kb_curl_client_destroy(c);
}

static void
test_https_post_echo(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_client_req q = req_for("POST", py_port, "/echo", true, false);
    static const char body[] = "a\0b\r\nc";
    result r;

    (void)state;
    q.body = body;
    q.body_len = sizeof(body) - 1;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, sizeof(body) - 1);
    assert_memory_equal(r.body, body, sizeof(body) - 1);
    assert_non_null(strstr(r.headers, "X-Method: POST\n"));

    q.method = "PUT";           /* empty body still framed */
    q.body = NULL;
    q.body_len = 0;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(r.body, "");
    assert_non_null(strstr(r.headers, "X-Method: PUT\n"));
    kb_curl_client_destroy(c);
}

/* What the backend receives: our headers as given, nothing of curl's. */
static void
test_https_request_headers(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_header h[] = { { "Host", "api.example.com" },
                           { "X-Custom", "v1" },
                           { "X-Empty", "" },
                           { "Connection", "close" },
                           { "Content-Length", "999" },
                           { "Expect", "100-continue" } };
    kb_http_client_req q = req_for("DELETE", py_port, "/headers/a/../b?q=1",
                                   true, false);
    json_t *j, *hs;
    size_t i;
    json_t *pair;
    bool host = false, custom = false, empty = false;
    result r;

    (void)state;
    q.headers = h;
    q.nheaders = 6;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "method")),
                        "DELETE");
    /* the target goes out exactly as given, not normalised */
    assert_string_equal(json_string_value(json_object_get(j, "path")),
                        "/headers/a/../b?q=1");
    hs = json_object_get(j, "headers");
    json_array_foreach(hs, i, pair) {
        const char *n = json_string_value(json_array_get(pair, 0));
        const char *v = json_string_value(json_array_get(pair, 1));
        if (strcasecmp(n, "host") == 0) {
            assert_string_equal(v, "api.example.com");
            assert_false(host);
            host = true;
        } else if (strcasecmp(n, "x-custom") == 0) {
            assert_string_equal(v, "v1");
            custom = true;
        } else if (strcasecmp(n, "x-empty") == 0) {
            assert_string_equal(v, "");
            empty = true;
        } else {
            fail_msg("unexpected header %s: %s", n, v);
        }
    }
    assert_true(host && custom && empty);
    json_decref(j);

    /* a POST: curl must not invent Content-Type, Expect or Accept */
    q.method = "POST";
    q.target = "/headers";
    q.nheaders = 1;
    q.body = "{}";
    q.body_len = 2;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "body")), 2);
    json_array_foreach(json_object_get(j, "headers"), i, pair) {
        const char *n = json_string_value(json_array_get(pair, 0));
        assert_true(strcasecmp(n, "host") == 0 ||
                    strcasecmp(n, "content-length") == 0);
    }
    json_decref(j);
    kb_curl_client_destroy(c);
}

static void
test_interim_and_chunked_trailers(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_client_req q = req_for("GET", py_port, "/early", true, false);
    result r;

    (void)state;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "final");
    assert_null(strstr(r.headers, "Link"));         /* 103's, dropped */
    assert_non_null(strstr(r.headers, "X-Final: 1\n"));

    q.target = "/trailer";
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    assert_string_equal(r.body, "abc");
    assert_int_equal(r.ntrailers, 1);
    assert_string_equal(r.trailers, "X-Sum: 42\n");
    kb_curl_client_destroy(c);
}

static void
test_untrusted_certificate(void **state)
{
    kb_curl_client *c = client_new(NULL, 0);     /* system CAs only */
    kb_http_client_req q = req_for("GET", py_port, "/hello", true, false);
    result r;

    (void)state;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, -EIO);
    q.port = h2s_port;
    q.h2 = true;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, -EIO);
    kb_curl_client_destroy(c);
}

static void
test_too_big(void **state)
{
    kb_curl_client *c = client_new(ca_path, 100);
    kb_http_client_req q = req_for("GET", py_port, "/big", true, false);
    result r;

    (void)state;
    call_sync(c, &q, &r);               /* Content-Length: 1000 */
    assert_int_equal(r.err, KB_ETOOBIG);
    q.target = "/bigchunked";           /* found while reading */
    call_sync(c, &q, &r);
    assert_int_equal(r.err, KB_ETOOBIG);
    q.target = "/manyheaders";          /* 150 fields > 100 */
    call_sync(c, &q, &r);
    assert_int_equal(r.err, KB_ETOOBIG);
    q = req_for("GET", h2c_port, "/big.bin", false, true);
    call_sync(c, &q, &r);
    assert_int_equal(r.err, KB_ETOOBIG);
    q = req_for("HEAD", py_port, "/big", true, false);
    call_sync(c, &q, &r);               /* announces 1000, sends none */
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_non_null(strstr(r.headers, "Content-Length: 1000\n"));
    q = req_for("GET", h2c_port, "/hello.txt", false, true);
    /* the client still works */
    call_sync(c, &q, &r);
    assert_int_equal(r.err, 0);
    kb_curl_client_destroy(c);
}

/* A listener that never accepts: the handshake completes in the
 * backlog, the request is never answered. */
static int
silent_listener(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void
test_timeout(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    int port, fd = silent_listener(&port);
    kb_http_client_req q = req_for("GET", port, "/", false, true);
    uint64_t t0;
    result r;

    (void)state;
    q.timeout_ms = 300;
    t0 = uv_hrtime();
    call_sync(c, &q, &r);
    assert_int_equal(r.err, KB_ETIMEDOUT);
    assert_true(uv_hrtime() - t0 < 3000000000ull);
    q.tls = true;                       /* stuck in the TLS handshake */
    call_sync(c, &q, &r);
    assert_int_equal(r.err, KB_ETIMEDOUT);
    close(fd);
    kb_curl_client_destroy(c);
}

static void
test_refused(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_client_req q = req_for("GET", free_port(), "/", true, false);
    result r;

    (void)state;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, -ECONNREFUSED);
    q.h2 = true;
    q.tls = false;
    call_sync(c, &q, &r);
    assert_int_equal(r.err, -ECONNREFUSED);
    kb_curl_client_destroy(c);
}

static void
test_cancel(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    int port, fd = silent_listener(&port);
    kb_http_client_req q = req_for("POST", port, "/", false, true);
    kb_curl_call *a, *b;
    result ra = { 0 }, rb = { 0 }, rc = { 0 };

    (void)state;
    q.body = "payload";
    q.body_len = 7;
    q.timeout_ms = 200;
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &ra, &a), 0);
    kb_curl_client_cancel(a);           /* before curl ever ran */
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &rb, &b), 0);
    run_until(&rb.done, 1, 100);        /* now in flight */
    assert_int_equal(rb.done, 0);
    kb_curl_client_cancel(b);
    /* past the calls' deadline: no callback ever ran */
    run_until(&rb.done, 1, 500);
    assert_int_equal(ra.done, 0);
    assert_int_equal(rb.done, 0);
    /* and the client still serves */
    q = req_for("GET", h2c_port, "/hello.txt", false, true);
    call_sync(c, &q, &rc);
    assert_int_equal(rc.err, 0);
    close(fd);
    kb_curl_client_destroy(c);
}

static void
test_destroy_pending(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    int port, fd = silent_listener(&port);
    kb_http_client_req q = req_for("GET", port, "/", true, false);
    result r1 = { 0 }, r2 = { 0 };

    (void)state;
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &r1, NULL), 0);
    q.h2 = true;
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &r2, NULL), 0);
    run_until(&r1.done, 1, 100);
    kb_curl_client_destroy(c);
    assert_int_equal(r1.done, 1);
    assert_int_equal(r1.err, KB_ECANCELED);
    assert_int_equal(r2.done, 1);
    assert_int_equal(r2.err, KB_ECANCELED);
    close(fd);
}

#define NCONC 24

typedef struct conc {
    kb_curl_client *c;
    int             done;
    int             ok;
    int             last_err;
} conc;

static void
on_conc(int err, const kb_http_client_res *res, void *data)
{
    conc *k = data;

    k->done++;
    k->last_err = err;
    if (err == 0 && res->status == 200 && res->body_len == 14 &&
        res->ntrailers >= 1)
        k->ok++;
}

static void
test_h2_multiplexed(void **state)
{
    kb_curl_client *c = client_new(ca_path, 0);
    kb_http_client_req q = req_for("GET", h2c_port, "/hello.txt", false, true);
    conc k = { .c = c };

    (void)state;
    for (int i = 0; i < NCONC; i++)
        assert_int_equal(kb_curl_client_send(c, &q, on_conc, &k, NULL), 0);
    run_until(&k.done, NCONC, 10000);
    assert_int_equal(k.done, NCONC);
    assert_int_equal(k.ok, NCONC);
    /* one connection, many streams; a connection each before curl 8 */
    assert_int_equal(c->conns_opened, h2c_reuse_ok ? 1 : NCONC);

    q = req_for("GET", h2s_port, "/hello.txt", true, true);
    k.done = k.ok = 0;
    for (int i = 0; i < NCONC; i++)
        assert_int_equal(kb_curl_client_send(c, &q, on_conc, &k, NULL), 0);
    run_until(&k.done, NCONC, 10000);
    assert_int_equal(k.last_err, 0);
    assert_int_equal(k.ok, NCONC);
    /* plus one TLS connection for all of them */
    assert_int_equal(c->conns_opened, (h2c_reuse_ok ? 1 : NCONC) + 1);
    kb_curl_client_destroy(c);
}

/* A callback may start the next call and may destroy the client. */
typedef struct chain {
    kb_curl_client *c;
    int             done;
    int             left;
    int             errs[4];
} chain;

static void
on_chain(int err, const kb_http_client_res *res, void *data)
{
    chain *ch = data;
    kb_http_client_req q = req_for("GET", h2c_port, "/hello.txt", false, true);

    (void)res;
    ch->errs[ch->done++] = err;
    if (--ch->left > 0)
        assert_int_equal(kb_curl_client_send(ch->c, &q, on_chain, ch, NULL), 0);
    else
        kb_curl_client_destroy(ch->c);
}

static void
test_callback_reentry(void **state)
{
    chain ch = { .c = client_new(NULL, 0), .left = 3 };
    kb_http_client_req q = req_for("GET", h2c_port, "/hello.txt", false, true);
    (void)state;
    assert_int_equal(kb_curl_client_send(ch.c, &q, on_chain, &ch, NULL), 0);
    run_until(&ch.done, 3, 10000);
    assert_int_equal(ch.done, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ch.errs[i], 0);
}

static void
test_url_and_resolver(void **state)
{
    kb_curl_client *c = client_new(NULL, 0);
    kb_http_client_req q = req_for("GET", 8443, "/p?q=1", true, true);
    kb_curl_call *call = calloc(1, sizeof(*call));
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

    (void)state;
    /* names are resolved by curl's threaded resolver, off the loop */
    assert_true(v->features & CURL_VERSION_ASYNCHDNS);
    assert_non_null(call);
    call->c = c;
    fields_init(&call->head);
    fields_init(&call->trailers);
    kb_buf_init(&call->rbody, 16);
    q.host = "::1";
    assert_int_equal(call_prepare(call, &q), 0);
    assert_string_equal(call->url, "https://[::1]:8443/");
    assert_string_equal(call->target, "/p?q=1");
    call_free(call);
    kb_curl_client_destroy(c);
}

static void
test_bad_requests(void **state)
{
    kb_curl_client *c = client_new(NULL, 0);
    kb_http_header bad[] = { { "X-A", "line\r\nInjected: 1" } };
    kb_http_client_req q = req_for("GET", h2c_port, "/x", false, true);
    kb_curl_client_opts o = { .ca_file = "/nonexistent/ca.pem" };
    kb_curl_client *c2 = NULL;
    result r = { 0 };

    (void)state;
    q.headers = bad;
    q.nheaders = 1;
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &r, NULL),
                     KB_EINVAL);
    q.nheaders = 0;
    q.target = "no-slash";
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &r, NULL),
                     KB_EINVAL);
    q.target = "/a b";
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &r, NULL),
                     KB_EINVAL);
    q.target = "/";
    q.method = "GE T";
    assert_int_equal(kb_curl_client_send(c, &q, on_result, &r, NULL),
                     KB_EINVAL);
    run_until(&r.done, 1, 50);
    assert_int_equal(r.done, 0);        /* failed sends never call back */
    assert_int_equal(kb_curl_client_create(&loop, &o, &c2), -ENOENT);
    kb_curl_client_destroy(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_h2c_get_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_h2c_post_grpc_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_h2_tls_alpn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_get_and_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_name_verified, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_post_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_request_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_and_chunked_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untrusted_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_h2_multiplexed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_reentry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_and_resolver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
