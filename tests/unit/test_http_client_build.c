/*
 * test_http_client_build.c - the bytes the upstream client puts on the wire
 * (client.c's build_request, assembled without printf) and the header
 * checks that keep a caller from smuggling a second request into them;
 * also the per-thread recycling of buffers (buf.c) and pools (pool.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/client.c"        /* build_request, value_len, token_len */
#include "core/pool.h"

static void
expect_bytes(const kb_http_client_req *req, const char *want)
{
    kb_buf out = KB_BUF_INIT(1u << 20);

    assert_int_equal(build_request(&out, req), 0);
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    assert_int_equal(out.data[out.len], '\0');
    kb_buf_free(&out);
}

static void
request_head_is_exact(void **state)
{
    kb_http_header h[] = {
        { "Accept", "*/*" },
        { "connection", "keep-alive" },          /* dropped */
        { "Content-Length", "99" },              /* ours replaces it */
        { "TRANSFER-ENCODING", "chunked" },      /* dropped */
        { "X-Empty", "" },
        { "X-Tab", "a\tb" },
        { "X-Obs", "caf\xc3\xa9" },              /* obs-text passes */
    };
    kb_http_client_req get = { .method = "GET", .host = "127.0.0.1",
                               .port = 8080, .target = "/a?b=c",
                               .headers = h, .nheaders = 7 };
    kb_http_client_req post = { .method = "POST", .host = "::1", .port = 1,
                                .target = "/p", .body = "{}", .body_len = 2 };
    kb_http_client_req put0 = { .method = "PUT", .host = "h", .port = 65535,
                                .target = "/" };
    kb_http_header host[] = { { "hOsT", "example.com" } };
    kb_http_client_req own = { .method = "DELETE", .host = "10.0.0.1",
                               .port = 80, .target = "/x",
                               .headers = host, .nheaders = 1 };

    (void)state;
    expect_bytes(&get, "GET /a?b=c HTTP/1.1\r\n"
                       "Accept: */*\r\n"
                       "X-Empty: \r\n"
                       "X-Tab: a\tb\r\n"
                       "X-Obs: caf\xc3\xa9\r\n"
                       "Host: 127.0.0.1:8080\r\n"
                       "\r\n");
    expect_bytes(&post, "POST /p HTTP/1.1\r\n"
                        "Host: [::1]:1\r\n"
                        "Content-Length: 2\r\n"
                        "\r\n{}");
    expect_bytes(&put0, "PUT / HTTP/1.1\r\n"
                        "Host: h:65535\r\n"
                        "Content-Length: 0\r\n"
                        "\r\n");
    /* the caller's Host is kept, no second one added */
    expect_bytes(&own, "DELETE /x HTTP/1.1\r\nhOsT: example.com\r\n\r\n");
}

/* Every control byte except HT, at every position of a long value, is
 * refused: the word-at-a-time scan must not miss one. */
static void
control_bytes_refused_anywhere(void **state)
{
    static const unsigned char bad[] = { 0x01, '\r', '\n', 0x1f, 0x7f };
    char v[40];
    kb_http_header h = { "X-V", v };
    kb_http_client_req req = { .method = "GET", .host = "127.0.0.1",
                               .port = 1, .target = "/", .headers = &h,
                               .nheaders = 1 };
    kb_buf out = KB_BUF_INIT(1u << 20);

    (void)state;
    for (size_t b = 0; b < sizeof(bad); b++)
        for (size_t pos = 0; pos < 39; pos++) {
            memset(v, 'a', 39);
            v[39] = '\0';
            v[pos] = (char)bad[b];
            assert_int_equal(kb_http_value_len(v), SIZE_MAX);
            kb_buf_reset(&out);
            assert_int_equal(build_request(&out, &req), KB_EINVAL);
        }
    /* the bytes next to the forbidden ones pass */
    memset(v, ' ', 39);
    v[39] = '\0';
    v[3] = 0x7e;
    v[11] = (char)0x80;
    v[20] = '\t';
    assert_int_equal(kb_http_value_len(v), 39);
    /* header names: tokens only */
    assert_int_equal(kb_http_token_len("X-Ok_1.~"), 8);
    assert_int_equal(kb_http_token_len("Bad Name"), 0);
    assert_int_equal(kb_http_token_len("Bad:"), 0);
    assert_int_equal(kb_http_token_len("caf\xc3\xa9"), 0);
    assert_int_equal(kb_http_token_len(""), 0);
    h.name = "Bad Name";
    v[0] = 'x';
    kb_buf_reset(&out);
    assert_int_equal(build_request(&out, &req), KB_EINVAL);
    kb_buf_free(&out);
}

/* A recycled buffer or pool behaves as a fresh one. */
static void
recycled_buffers_and_pools_start_clean(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        kb_buf b = KB_BUF_INIT(1u << 20);
        kb_pool *p = kb_pool_create(0);
        char *s;
        int *ints;
        int hits = 0;

        assert_non_null(p);
        assert_int_equal(kb_pool_used(p), 0);
        assert_int_equal(kb_pool_cleanup_add(p, (void (*)(void *))free,
                                             malloc(8)), 0);
        ints = kb_pool_calloc(p, 100 * sizeof(int));
        for (int i = 0; i < 100; i++)
            hits += ints[i] == 0;
        assert_int_equal(hits, 100);
        memset(ints, 0xff, 100 * sizeof(int));
        s = kb_pool_strdup(p, "pooled");
        assert_string_equal(s, "pooled");
        assert_non_null(kb_pool_alloc(p, 10000));    /* a large block */

        assert_int_equal(kb_buf_reserve(&b, 16383), 0);
        assert_int_equal(b.len, 0);
        assert_string_equal(kb_buf_cstr(&b), "");
        assert_int_equal(kb_buf_appends(&b, "abc"), 0);
        assert_string_equal(b.data, "abc");
        kb_buf_free(&b);
        assert_null(b.data);
        kb_pool_destroy(p);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_head_is_exact),
        cmocka_unit_test(control_bytes_refused_anywhere),
        cmocka_unit_test(recycled_buffers_and_pools_start_clean),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
