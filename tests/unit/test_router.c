/*
 * test_router.c - the path-template router (src/http/router.c): precedence,
 * backtracking, 405/Allow, HEAD fallback, suffix verbs, catch-all, strict
 * paths, malformed and duplicate templates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "http/router.h"

/* Targets are small integers cast to pointers. */
#define T(n) ((void *)(uintptr_t)(n))

static kb_router *
mk(void)
{
    kb_router *r = kb_router_create();
    assert_non_null(r);
    return r;
}

static void
add_ok(kb_router *r, const char *method, const char *pattern, int target)
{
    const char *err = NULL;
    int rc = kb_router_add(r, method, pattern, T(target), &err);

    if (rc != 0)
        fail_msg("add %s %s: %d %s", method, pattern, rc, err ? err : "");
}

static int
match(const kb_router *r, const char *method, const char *path,
      kb_route_match *m)
{
    return kb_router_match(r, method, path, strlen(path), m);
}

/* The value of param `name` as a NUL-terminated string (static buffer). */
static const char *
param(const kb_route_match *m, const char *name)
{
    static char buf[256];
    size_t len;
    const char *v = kb_route_param_get(m, name, &len);

    if (v == NULL)
        return NULL;
    assert_true(len < sizeof(buf));
    memcpy(buf, v, len);
    buf[len] = '\0';
    return buf;
}

static void
test_literal_and_params(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "GET", "/", 1);
    add_ok(r, "GET", "/users", 2);
    add_ok(r, "GET", "/users/{id}", 3);
    add_ok(r, "GET", "/users/{id}/posts/{post}", 4);

    assert_int_equal(match(r, "GET", "/", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_int_equal(m.nparams, 0);
    assert_int_equal(match(r, "GET", "/users", &m), 200);
    assert_ptr_equal(m.target, T(2));
    assert_int_equal(match(r, "GET", "/users/42", &m), 200);
    assert_ptr_equal(m.target, T(3));
    assert_string_equal(m.pattern, "/users/{id}");
    assert_string_equal(param(&m, "id"), "42");
    assert_int_equal(match(r, "GET", "/users/7/posts/x1", &m), 200);
    assert_ptr_equal(m.target, T(4));
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.params[0].name, "id");
    assert_string_equal(param(&m, "id"), "7");
    assert_string_equal(param(&m, "post"), "x1");
    assert_null(param(&m, "nope"));
    /* literals are exact and case-sensitive; params need a segment */
    assert_int_equal(match(r, "GET", "/Users", &m), 404);
    assert_int_equal(match(r, "GET", "/users/7/posts", &m), 404);
    assert_int_equal(match(r, "GET", "/users/7/posts/x/y", &m), 404);
    assert_int_equal(match(r, "GET", "/nothing", &m), 404);
    kb_router_free(r);
}

static void
test_literal_beats_param(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    /* added in the "wrong" order on purpose */
    add_ok(r, "GET", "/users/{id}", 1);
    add_ok(r, "GET", "/users/me", 2);
    assert_int_equal(match(r, "GET", "/users/me", &m), 200);
    assert_ptr_equal(m.target, T(2));
    assert_int_equal(m.nparams, 0);
    assert_int_equal(match(r, "GET", "/users/mee", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_int_equal(match(r, "GET", "/users/m", &m), 200);
    assert_ptr_equal(m.target, T(1));
    kb_router_free(r);
}

static void
test_backtracking(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "GET", "/a/{x}/c", 1);
    add_ok(r, "GET", "/a/b/{y}", 2);
    add_ok(r, "GET", "/a/b/d/e", 3);

    /* literal "b" branch first: /a/b/{y} */
    assert_int_equal(match(r, "GET", "/a/b/c", &m), 200);
    assert_ptr_equal(m.target, T(2));
    assert_string_equal(param(&m, "y"), "c");
    /* /a/b/d/e via literals; /a/b/d/x dead-ends under "b" → backtrack,
     * but /a/{x}/c cannot take 3 segments either → 404 */
    assert_int_equal(match(r, "GET", "/a/b/d/e", &m), 200);
    assert_ptr_equal(m.target, T(3));
    assert_int_equal(match(r, "GET", "/a/b/d/x", &m), 404);
    /* /a/z/c only through the param */
    assert_int_equal(match(r, "GET", "/a/z/c", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_string_equal(param(&m, "x"), "z");
    kb_router_free(r);

    /* deeper: the literal branch matches two segments and then fails */
    r = mk();
    add_ok(r, "GET", "/p/{a}/q/r", 1);
    add_ok(r, "GET", "/p/lit/q/{b}/s", 2);
    assert_int_equal(match(r, "GET", "/p/lit/q/r", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_string_equal(param(&m, "a"), "lit");
    assert_int_equal(m.nparams, 1);   /* the abandoned branch left nothing */
    assert_int_equal(match(r, "GET", "/p/lit/q/r/s", &m), 200);
    assert_ptr_equal(m.target, T(2));
    assert_string_equal(param(&m, "b"), "r");
    kb_router_free(r);
}

static void
test_backtrack_on_method(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    /* the literal template matches the path but not the method: the
     * param template that allows it wins */
    add_ok(r, "GET", "/a/{x}", 1);
    add_ok(r, "POST", "/a/b", 2);
    assert_int_equal(match(r, "GET", "/a/b", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_int_equal(match(r, "POST", "/a/b", &m), 200);
    assert_ptr_equal(m.target, T(2));
    /* neither allows DELETE: 405 listing the union */
    assert_int_equal(match(r, "DELETE", "/a/b", &m), 405);
    assert_string_equal(m.allow, "POST, GET, HEAD");
    kb_router_free(r);
}

static void
test_405_allow(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "POST", "/items", 1);
    add_ok(r, "GET", "/items", 2);
    add_ok(r, "DELETE", "/items", 3);
    add_ok(r, "PUT", "/only-put", 4);

    assert_int_equal(match(r, "PATCH", "/items", &m), 405);
    assert_null(m.target);
    /* sorted, HEAD implied by GET, OPTIONS not implied */
    assert_string_equal(m.allow, "DELETE, GET, HEAD, POST");
    assert_int_equal(match(r, "OPTIONS", "/items", &m), 405);
    assert_int_equal(match(r, "GET", "/only-put", &m), 405);
    assert_string_equal(m.allow, "PUT");
    /* HEAD is not implied without GET */
    assert_int_equal(match(r, "HEAD", "/only-put", &m), 405);
    /* a 404 leaves allow empty */
    assert_int_equal(match(r, "GET", "/nope", &m), 404);
    assert_string_equal(m.allow, "");
    kb_router_free(r);
}

static void
test_head_and_any(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "GET", "/g", 1);
    add_ok(r, "GET", "/gh", 2);
    add_ok(r, "HEAD", "/gh", 3);
    add_ok(r, "*", "/any", 4);
    add_ok(r, "GET", "/any", 5);

    assert_int_equal(match(r, "HEAD", "/g", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_int_equal(match(r, "HEAD", "/gh", &m), 200);
    assert_ptr_equal(m.target, T(3));         /* explicit HEAD wins */
    assert_int_equal(match(r, "GET", "/gh", &m), 200);
    assert_ptr_equal(m.target, T(2));
    assert_int_equal(match(r, "GET", "/any", &m), 200);
    assert_ptr_equal(m.target, T(5));         /* specific beats "*" */
    assert_int_equal(match(r, "BREW", "/any", &m), 200);
    assert_ptr_equal(m.target, T(4));
    /* methods are case-sensitive */
    assert_int_equal(match(r, "get", "/g", &m), 405);
    kb_router_free(r);
}

static void
test_suffix_verbs(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "POST", "/v1/projects/{p}/topics/{topic}:publish", 1);
    add_ok(r, "GET", "/v1/projects/{p}/topics/{topic}", 2);
    add_ok(r, "POST", "/v1/projects/{p}/topics/{topic}:sh", 3);
    add_ok(r, "GET", "/v1/projects/{p}/topics:list", 4);

    assert_int_equal(match(r, "POST", "/v1/projects/x/topics/t1:publish", &m),
                     200);
    assert_ptr_equal(m.target, T(1));
    assert_string_equal(param(&m, "p"), "x");
    assert_string_equal(param(&m, "topic"), "t1");
    /* the longer suffix is tried first; ":sh" still works alone */
    assert_int_equal(match(r, "POST", "/v1/projects/x/topics/t1:sh", &m), 200);
    assert_ptr_equal(m.target, T(3));
    assert_string_equal(param(&m, "topic"), "t1");
    /* the plain param takes the whole segment, colon included */
    assert_int_equal(match(r, "GET", "/v1/projects/x/topics/t1:publish", &m),
                     200);
    assert_ptr_equal(m.target, T(2));
    assert_string_equal(param(&m, "topic"), "t1:publish");
    /* the suffix alone is not enough: the param must be non-empty */
    assert_int_equal(match(r, "POST", "/v1/projects/x/topics/:publish", &m),
                     405);
    /* a literal with a colon */
    assert_int_equal(match(r, "GET", "/v1/projects/x/topics:list", &m), 200);
    assert_ptr_equal(m.target, T(4));
    kb_router_free(r);
}

static void
test_catch_all(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "GET", "/files/{path=**}", 1);
    add_ok(r, "GET", "/files/special", 2);
    add_ok(r, "GET", "/files/{name}/meta", 3);
    add_ok(r, "GET", "/x/{id=*}", 4);

    assert_int_equal(match(r, "GET", "/files/a/b/c.txt", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_string_equal(param(&m, "path"), "a/b/c.txt");
    assert_int_equal(match(r, "GET", "/files/one", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_string_equal(param(&m, "path"), "one");
    assert_int_equal(match(r, "GET", "/files/special", &m), 200);
    assert_ptr_equal(m.target, T(2));
    assert_int_equal(match(r, "GET", "/files/a/meta", &m), 200);
    assert_ptr_equal(m.target, T(3));          /* param beats catch-all */
    /* the catch-all needs at least one segment */
    assert_int_equal(match(r, "GET", "/files", &m), 404);
    /* {id=*} is {id} */
    assert_int_equal(match(r, "GET", "/x/9", &m), 200);
    assert_string_equal(param(&m, "id"), "9");
    assert_int_equal(match(r, "GET", "/x/9/10", &m), 404);
    kb_router_free(r);
}

static void
test_encoded_slash_and_raw_values(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "GET", "/users/{id}", 1);
    /* %2F is not a separator: one segment, value not decoded */
    assert_int_equal(match(r, "GET", "/users/a%2Fb", &m), 200);
    assert_string_equal(param(&m, "id"), "a%2Fb");
    assert_int_equal(match(r, "GET", "/users/a/b", &m), 404);
    /* matching uses path_len, not the NUL */
    assert_int_equal(kb_router_match(r, "GET", "/users/42/extra", 9, &m),
                     200);
    assert_string_equal(param(&m, "id"), "42");
    kb_router_free(r);
}

static void
test_strict_paths(void **state)
{
    kb_router *r = mk();
    kb_route_match m;

    add_ok(r, "GET", "/a/{x}", 1);
    add_ok(r, "GET", "/a/{x}/{y}", 2);
    add_ok(r, "GET", "/", 3);
    static const char *bad[] = {
        "", "a/b", "//", "/a//b", "/a/b/", "/a/./b", "/a/..", "/a/.",
        "/a/%2e%2E", "/a/%2e", "/a/.%2e/b", "/a/b c", "/a/b\x01",
        "*",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (match(r, "GET", bad[i], &m) != 404)
            fail_msg("path \"%s\" should be 404", bad[i]);
    /* three dots or dots with other text are ordinary segments */
    assert_int_equal(match(r, "GET", "/a/...", &m), 200);
    assert_int_equal(match(r, "GET", "/a/.hidden", &m), 200);
    assert_int_equal(match(r, "GET", "/a/%2e%2e%2e", &m), 200);
    kb_router_free(r);
}

static void
test_malformed_templates(void **state)
{
    static const struct {
        const char *pattern;
        const char *msg;          /* a substring of the message */
    } cases[] = {
        { "a/b", "start with '/'" },
        { "", "start with '/'" },
        { "/a/{", "unclosed '{'" },
        { "/a/{}", "empty parameter name" },
        { "/a/{a}{b}", "two parameters in one segment" },
        { "/a/}", "unmatched '}'" },
        { "/a/x}y", "unmatched '}'" },
        { "/a/{b}c}", "unmatched '}'" },
        { "/a/{a{b}}", "'{' inside a parameter" },
        { "/a/x{b}", "text before '{'" },
        { "/a//b", "empty path segment" },
        { "/a/", "empty path segment" },
        { "/a/../b", "'.' and '..'" },
        { "/a/{b c}", "invalid character in parameter name" },
        { "/a/{b=x*}", "unsupported parameter pattern" },
        { "/a/{b=x/*}", "cannot span '/'" },
        { "/a/{p=**}/b", "must be the last segment" },
        { "/a/{p=**}:x", "nothing may follow" },
        { "/a/{x}/{x}", "duplicate parameter name" },
        { "/a b", "invalid character" },
        { "/a?b", "invalid character" },
        { "/caf\xc3\xa9", "non-ASCII" },
    };
    kb_router *r = mk();

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *err = NULL;
        int rc = kb_router_add(r, "GET", cases[i].pattern, T(1), &err);
        if (rc != KB_EINVAL || err == NULL ||
            strstr(err, cases[i].msg) == NULL)
            fail_msg("template \"%s\": rc %d, err \"%s\", want \"%s\"",
                     cases[i].pattern, rc, err ? err : "(null)",
                     cases[i].msg);
    }
    /* err may be NULL */
    assert_int_equal(kb_router_add(r, "GET", "/a/{", T(1), NULL), KB_EINVAL);
    /* bad methods */
    assert_int_equal(kb_router_add(r, "", "/a", T(1), NULL), KB_EINVAL);
    assert_int_equal(kb_router_add(r, "G T", "/a", T(1), NULL), KB_EINVAL);
    /* 17 parameters are too many */
    {
        char pat[256] = "";
        size_t len = 0;
        const char *err = NULL;
        for (int i = 0; i < 17; i++)
            len += (size_t)snprintf(pat + len, sizeof(pat) - len, "/{p%d}", i);
        assert_int_equal(kb_router_add(r, "GET", pat, T(1), &err), KB_EINVAL);
        assert_non_null(strstr(err, "too many parameters"));
    }
    /* nothing was added by the failures */
    {
        kb_route_match m;
        assert_int_equal(match(r, "GET", "/a/b", &m), 404);
    }
    kb_router_free(r);
}

static void
test_duplicates(void **state)
{
    kb_router *r = mk();
    const char *err = NULL;
    kb_route_match m;

    add_ok(r, "GET", "/users/{id}", 1);
    assert_int_equal(kb_router_add(r, "GET", "/users/{id}", T(2), &err),
                     KB_EEXIST);
    assert_non_null(err);
    /* different parameter names, same shape */
    assert_int_equal(kb_router_add(r, "GET", "/users/{uid}", T(2), &err),
                     KB_EEXIST);
    assert_int_equal(kb_router_add(r, "GET", "/users/{uid=*}", T(2), NULL),
                     KB_EEXIST);
    /* another method on the same template is fine */
    add_ok(r, "PUT", "/users/{uid}", 3);
    /* suffix params: same suffix duplicates, other suffix does not */
    add_ok(r, "POST", "/t/{a}:run", 4);
    assert_int_equal(kb_router_add(r, "POST", "/t/{b}:run", T(5), NULL),
                     KB_EEXIST);
    add_ok(r, "POST", "/t/{b}:stop", 6);
    add_ok(r, "*", "/w", 7);
    assert_int_equal(kb_router_add(r, "*", "/w", T(8), NULL), KB_EEXIST);
    /* the first registration still answers */
    assert_int_equal(match(r, "GET", "/users/1", &m), 200);
    assert_ptr_equal(m.target, T(1));
    assert_string_equal(param(&m, "id"), "1");
    assert_int_equal(match(r, "PUT", "/users/1", &m), 200);
    assert_ptr_equal(m.target, T(3));
    assert_string_equal(param(&m, "uid"), "1");   /* names per template */
    assert_null(param(&m, "id"));
    kb_router_free(r);
}

static void
test_many_routes(void **state)
{
    kb_router *r = mk();
    kb_route_match m;
    char pat[64], path[64];

    /* enough literals to exercise the sorted insert and binary search */
    for (int i = 0; i < 500; i++) {
        snprintf(pat, sizeof(pat), "/svc%d/{id}", (i * 7919) % 500);
        add_ok(r, "GET", pat, 1000 + (i * 7919) % 500);
    }
    for (int i = 0; i < 500; i++) {
        snprintf(path, sizeof(path), "/svc%d/x", i);
        assert_int_equal(match(r, "GET", path, &m), 200);
        assert_ptr_equal(m.target, T(1000 + i));
    }
    assert_int_equal(match(r, "GET", "/svc500/x", &m), 404);
    kb_router_free(r);
}

static void
test_deep_backtracking(void **state)
{
    kb_router *r = mk();
    kb_route_match m;
    char pat[512], path[512];
    size_t len;

    /* /x/x/.../x/end for depths 1..30 (all literal) plus one template
     * with a parameter at the first level that ends in "last": a path of
     * x's ending in "last" walks the whole literal chain, fails, and is
     * matched only after backtracking to the top */
    for (int d = 1; d <= 30; d++) {
        len = 0;
        for (int i = 0; i < d; i++)
            len += (size_t)snprintf(pat + len, sizeof(pat) - len, "/x");
        snprintf(pat + len, sizeof(pat) - len, "/end");
        add_ok(r, "GET", pat, d);
    }
    len = (size_t)snprintf(pat, sizeof(pat), "/{first}");
    for (int i = 1; i < 30; i++)
        len += (size_t)snprintf(pat + len, sizeof(pat) - len, "/x");
    snprintf(pat + len, sizeof(pat) - len, "/last");
    add_ok(r, "GET", pat, 99);

    len = 0;
    for (int i = 0; i < 30; i++)
        len += (size_t)snprintf(path + len, sizeof(path) - len, "/x");
    snprintf(path + len, sizeof(path) - len, "/last");
    assert_int_equal(match(r, "GET", path, &m), 200);
    assert_ptr_equal(m.target, T(99));
    assert_int_equal(m.nparams, 1);
    assert_string_equal(param(&m, "first"), "x");
    memcpy(path + len, "/end", 5);
    assert_int_equal(match(r, "GET", path, &m), 200);
    assert_ptr_equal(m.target, T(30));
    assert_int_equal(m.nparams, 0);
    kb_router_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_and_params),
        cmocka_unit_test(test_literal_beats_param),
        cmocka_unit_test(test_backtracking),
        cmocka_unit_test(test_backtrack_on_method),
        cmocka_unit_test(test_405_allow),
        cmocka_unit_test(test_head_and_any),
        cmocka_unit_test(test_suffix_verbs),
        cmocka_unit_test(test_catch_all),
        cmocka_unit_test(test_encoded_slash_and_raw_values),
        cmocka_unit_test(test_strict_paths),
        cmocka_unit_test(test_malformed_templates),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_deep_backtracking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
