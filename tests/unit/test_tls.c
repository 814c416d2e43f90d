/*
 * test_tls.c - TLS termination on the server (src/http/tls.c): SNI among
 * three certificates made here with the openssl CLI (SAN names, a
 * wildcard, a CN-only one), ALPN h2 / http/1.1, large bodies both ways over
 * both, session resumption, protocol floor, handshake timeout, and the
 * errors a bad certificate configuration gives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/err.h"
#include "h2_harness.h"

static char dir[64];
static kb_tls_server *tls;

static int
setup(void **state)
{
    int st;
    char *out;

    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/kb_tls_%d", (int)getpid());
    out = run(&st,
        "set -e; mkdir -p %s; cd %s;"
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout a.key "
        "  -out a.pem -subj /CN=a.test "
        "  -addext subjectAltName=DNS:a.test,DNS:www.a.test 2>&1;"
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "  -days 2 -keyout b.key -out b.pem -subj /CN=other.test "
        "  -addext subjectAltName=DNS:*.b.test 2>&1;"
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "  -days 2 -keyout c.key -out c.pem -subj /CN=c.test 2>&1;"
        "head -c 8388608 /dev/urandom > big.bin", dir, dir);
    assert_int_equal(st, 0);
    free(out);
    return 0;
}

static int
teardown(void **state)
{
    char *out = run(NULL, "rm -rf %s", dir);

    (void)state;
    free(out);
    return 0;
}

static void
tls_up(bool h2, uint64_t header_ms)
{
    char f[6][128], err[512];
    kb_tls_cert certs[3];
    kb_http_server_opts o = { .name = "tls", .h2 = h2,
                              .header_timeout_ms = header_ms };

    for (int i = 0; i < 3; i++) {
        snprintf(f[2 * i], sizeof(f[0]), "%s/%c.pem", dir, 'a' + i);
        snprintf(f[2 * i + 1], sizeof(f[0]), "%s/%c.key", dir, 'a' + i);
        certs[i] = (kb_tls_cert){ f[2 * i], f[2 * i + 1] };
    }
    assert_int_equal(kb_tls_server_create(certs, 3, &tls, err, sizeof(err)), 0);
    o.tls = tls;
    server_up(&o);
}

static void
tls_down(void)
{
    server_down();
    kb_tls_server_free(tls);
    tls = NULL;
}

/* curl to https://NAME:port/PATH resolved to 127.0.0.1, trusting CA. */
static char *
curl_tls(int *st, const char *opts, const char *name, const char *ca,
         const char *path)
{
    return run(st, "curl -sS -i %s --resolve %s:%d:127.0.0.1 --cacert %s/%s "
                   "https://%s:%d%s 2>&1", opts, name, port, dir, ca, name,
               port, path);
}

static void
test_sni_and_alpn(void **state)
{
    char *out;
    int st;

    (void)state;
    tls_up(true, 0);
    /* the SAN name of the first certificate; ALPN h2 */
    out = curl_tls(&st, "", "a.test", "a.pem", "/hello");
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "HTTP/2 200"));
    assert_non_null(strstr(out, "proto=2 tls=1 method=GET host=a.test:"));
    free(out);
    out = curl_tls(&st, "--http1.1", "www.a.test", "a.pem", "/hello");
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "HTTP/1.1 200"));
    assert_non_null(strstr(out, "proto=1 tls=1"));
    free(out);
    /* the wildcard of the second: verified against b.pem only */
    out = curl_tls(&st, "", "x.b.test", "b.pem", "/hello");
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "HTTP/2 200"));
    free(out);
    /* a wildcard covers one label only: b.test gets the default (a) */
    out = curl_tls(&st, "", "b.test", "b.pem", "/hello");
    assert_int_not_equal(st, 0);
    free(out);
    out = curl_tls(&st, "", "y.x.b.test", "b.pem", "/hello");
    assert_int_not_equal(st, 0);
    free(out);
    /* the third has no SAN: its CN is matched */
    out = curl_tls(&st, "", "c.test", "c.pem", "/hello");
    assert_int_equal(st, 0);
    free(out);
    /* no SNI, or an unknown name: the first certificate */
    out = run(&st, "openssl s_client -connect 127.0.0.1:%d -noservername "
                   "</dev/null 2>&1", port);
    assert_non_null(strstr(out, "subject=CN = a.test"));
    free(out);
    out = run(&st, "openssl s_client -connect 127.0.0.1:%d -servername "
                   "nothing.test -alpn http/1.1 </dev/null 2>&1", port);
    assert_non_null(strstr(out, "subject=CN = a.test"));
    assert_non_null(strstr(out, "ALPN protocol: http/1.1"));
    free(out);
    out = run(&st, "openssl s_client -connect 127.0.0.1:%d -servername "
                   "Z.B.TEST -alpn h2,http/1.1 </dev/null 2>&1", port);
    assert_non_null(strstr(out, "subject=CN = other.test"));
    assert_non_null(strstr(out, "ALPN protocol: h2"));
    free(out);
    /* nghttp over TLS, several streams */
    out = run(&st, "nghttp -n -s -m 20 https://127.0.0.1:%d/hello 2>&1", port);
    assert_int_equal(st, 0);
    free(out);
    tls_down();
}

static void
test_no_h2_listener(void **state)
{
    char *out;
    int st;

    (void)state;
    tls_up(false, 0);
    out = curl_tls(&st, "--http2", "a.test", "a.pem", "/hello");
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "HTTP/1.1 200"));   /* ALPN: no h2 offered */
    free(out);
    /* keep-alive: two requests, one connection */
    out = run(&st, "curl -sv --http1.1 --resolve a.test:%d:127.0.0.1 --cacert "
                   "%s/a.pem https://a.test:%d/hello https://a.test:%d/stream "
                   "2>&1", port, dir, port, port);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "Re-using existing connection"));
    assert_non_null(strstr(out, "abcdefgh"));
    free(out);
    tls_down();
}

static void
test_tls_large_bodies(void **state)
{
    const char *protos[] = { "--http2", "--http1.1" };
    char *out, *want;
    int st;

    (void)state;
    tls_up(true, 0);
    want = run(&st, "sha256sum < %s/big.bin", dir);
    for (int i = 0; i < 2; i++) {
        out = run(&st, "curl -sS %s --resolve a.test:%d:127.0.0.1 --cacert "
                       "%s/a.pem --data-binary @%s/big.bin "
                       "https://a.test:%d/echo | sha256sum", protos[i], port,
                  dir, dir, port);
        assert_string_equal(out, want);
        free(out);
        out = run(&st, "curl -sS %s --resolve a.test:%d:127.0.0.1 --cacert "
                       "%s/a.pem 'https://a.test:%d/big?n=8388608' | wc -c",
                  protos[i], port, dir, port);
        assert_int_equal(strtol(out, NULL, 10), 8388608);
        free(out);
    }
    free(want);
    tls_down();
}

static void
test_tls_protocol_details(void **state)
{
    char *out, sess[128];
    int st, fd;
    char ch;
    struct sockaddr_in a = { .sin_family = AF_INET };
    struct timeval tv = { .tv_sec = 3 };

    (void)state;
    tls_up(true, 300);
    /* TLS 1.1 is refused */
    out = run(&st, "openssl s_client -connect 127.0.0.1:%d -tls1_1 "
                   "</dev/null 2>&1", port);
    assert_int_not_equal(st, 0);
    free(out);
    /* session resumption (tickets) */
    snprintf(sess, sizeof(sess), "%s/sess", dir);
    out = run(&st, "openssl s_client -connect 127.0.0.1:%d -tls1_2 "
                   "-sess_out %s </dev/null 2>&1", port, sess);
    assert_non_null(strstr(out, "New, TLSv1.2"));
    free(out);
    out = run(&st, "openssl s_client -connect 127.0.0.1:%d -tls1_2 "
                   "-sess_in %s </dev/null 2>&1", port, sess);
    assert_non_null(strstr(out, "Reused, TLSv1.2"));
    free(out);
    /* a client that never says hello: closed after the header timeout */
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(recv(fd, &ch, 1, 0), 0);
    close(fd);
    /* garbage instead of a ClientHello: closed, server fine */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    send(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, 0);
    while (recv(fd, &ch, 1, 0) > 0)
        ;
    close(fd);
    out = curl_tls(&st, "", "a.test", "a.pem", "/hello");
    assert_int_equal(st, 0);
    free(out);
    tls_down();
}

static void
test_certificate_errors(void **state)
{
    char a_pem[128], a_key[128], b_key[128], junk[128], err[512];
    kb_tls_server *t = NULL;
    char *out;

    (void)state;
    snprintf(a_pem, sizeof(a_pem), "%s/a.pem", dir);
    snprintf(a_key, sizeof(a_key), "%s/a.key", dir);
    snprintf(b_key, sizeof(b_key), "%s/b.key", dir);
    snprintf(junk, sizeof(junk), "%s/junk.pem", dir);
    out = run(NULL, "echo 'not a certificate' > %s", junk);
    free(out);

    kb_tls_cert missing = { "/nonexistent/x.pem", a_key };
    assert_int_equal(kb_tls_server_create(&missing, 1, &t, err, sizeof(err)),
                     KB_EINVAL);
    assert_string_equal(err, "certificate /nonexistent/x.pem: No such file "
                             "or directory");
    kb_tls_cert nokey = { a_pem, NULL };
    assert_int_equal(kb_tls_server_create(&nokey, 1, &t, err, sizeof(err)),
                     KB_EINVAL);
    assert_string_equal(err, "key: no file given");
    kb_tls_cert bad = { junk, a_key };
    assert_int_equal(kb_tls_server_create(&bad, 1, &t, err, sizeof(err)),
                     KB_EINVAL);
    assert_non_null(strstr(err, "not a PEM certificate chain"));
    assert_non_null(strstr(err, junk));
    kb_tls_cert badkey = { a_pem, junk };
    assert_int_equal(kb_tls_server_create(&badkey, 1, &t, err, sizeof(err)),
                     KB_EINVAL);
    assert_non_null(strstr(err, "not a PEM private key"));
    kb_tls_cert mismatch = { a_pem, b_key };
    assert_int_equal(kb_tls_server_create(&mismatch, 1, &t, err, sizeof(err)),
                     KB_EINVAL);
    assert_non_null(strstr(err, "does not match certificate"));
    assert_int_equal(kb_tls_server_create(NULL, 0, &t, err, sizeof(err)),
                     KB_EINVAL);
    assert_null(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sni_and_alpn),
        cmocka_unit_test(test_no_h2_listener),
        cmocka_unit_test(test_tls_large_bodies),
        cmocka_unit_test(test_tls_protocol_details),
        cmocka_unit_test(test_certificate_errors),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
