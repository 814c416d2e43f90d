/*
 * test_http_parser_scan.c - the word-at-a-time field-value scan in
 * parser.c accepts exactly the bytes the character table accepts: compared
 * with the bytewise rule on every byte value at every offset, and on random
 * buffers; and whole heads with long values still parse or fail as before.
 */
/* parser.c first: its static fail() and cmocka's fail() macro collide */
#include "http/parser.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

static const char *
reference_scan(const char *p, const char *end)
{
    while (p < end && IS(*p, C_VALUE))
        p++;
    return p;
}

static void
every_byte_at_every_offset(void **state)
{
    char buf[40];

    (void)state;
    for (int b = 0; b < 256; b++)
        for (size_t pos = 0; pos < sizeof(buf); pos++) {
            memset(buf, 'v', sizeof(buf));
            buf[pos] = (char)b;
            for (size_t start = 0; start < 9; start++)
                assert_ptr_equal(value_scan(buf + start, buf + sizeof(buf)),
                                 reference_scan(buf + start, buf + sizeof(buf)));
        }
}

static void
random_buffers(void **state)
{
    static const unsigned char pick[] = { 'a', ' ', '\t', 0x7e, 0x7f, 0x80,
                                          0xff, 0x1f, 0x00, '\r', '\n', 0x20 };
    char buf[64];

    (void)state;
    srand(7);
    for (int round = 0; round < 200000; round++) {
        size_t n = (size_t)rand() % sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (rand() % 8) ? (char)(0x21 + rand() % 0x5e)
                                  : (char)pick[rand() % sizeof(pick)];
        assert_ptr_equal(value_scan(buf, buf + n), reference_scan(buf, buf + n));
    }
}

static void
long_values_in_heads(void **state)
{
    kb_http_field f[8];
    kb_http_head h;
    char req[2048], tok[1200];
    int n;

    (void)state;
    memset(tok, 'A', sizeof(tok) - 1);
    tok[sizeof(tok) - 1] = '\0';
    n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\n"
                 "Authorization: Bearer %s\r\n\r\n", tok);
    kb_http_head_init(&h, f, 8);
    assert_int_equal(kb_http_parse_request(&h, req, (size_t)n, NULL), n);
    assert_int_equal(f[1].value.len, 7 + sizeof(tok) - 1);
    /* a bare CR, a DEL or a NUL deep inside a long value is still a 400 */
    for (int k = 0; k < 3; k++) {
        static const char bad[] = { '\r', 0x7f, 0x00 };
        n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\n"
                     "Authorization: Bearer %s\r\n\r\n", tok);
        req[16 + 9 + 15 + 700] = bad[k];
        kb_http_head_init(&h, f, 8);
        assert_int_equal(kb_http_parse_request(&h, req, (size_t)n, NULL),
                         KB_EPARSE);
        assert_int_equal(h.error_status, 400);
    }
    /* HT inside the value is allowed, trailing OWS trimmed */
    n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\n"
                 "X: 0123456789\tabcdefghijklmnop \t\r\n\r\n");
    kb_http_head_init(&h, f, 8);
    assert_int_equal(kb_http_parse_request(&h, req, (size_t)n, NULL), n);
    assert_int_equal(f[1].value.len, 27);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_byte_at_every_offset),
        cmocka_unit_test(random_buffers),
        cmocka_unit_test(long_values_in_heads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
