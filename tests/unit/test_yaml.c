/*
 * test_yaml.c - the YAML module (src/core/yaml.c): core-schema typing, the
 * path -> line map, multi-document streams, duplicate and complex keys,
 * anchors, aliases and merge keys, the caps (alias bombs, depth, size),
 * "LINE:COL: reason" errors, and emit -> parse round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/yaml.h"

/* ---- helpers --------------------------------------------------------------- */

typedef struct parsed {
    kb_yaml_doc **docs;
    size_t        n;
    char          err[512];
    int           rc;
} parsed;

static parsed
P(const char *text)
{
    parsed p;

    memset(&p, 0, sizeof(p));
    p.rc = kb_yaml_parse(text, strlen(text), &p.docs, &p.n, p.err,
                         sizeof(p.err));
    return p;
}

static void
P_free(parsed *p)
{
    kb_yaml_docs_free(p->docs, p->n);
    p->docs = NULL;
}

/* The one document of text, which must parse. */
static json_t *
one(const char *text)
{
    parsed p = P(text);
    json_t *v;

    if (p.rc != 0)
        fail_msg("parse failed: %s\n%s", p.err, text);
    assert_int_equal(p.n, 1);
    v = json_incref(kb_yaml_doc_root(p.docs[0]));
    P_free(&p);
    return v;
}


static void
assert_json(json_t *got, const char *want_text)
{
    json_t *want = J(want_text);

    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY);
        fail_msg("got %s, want %s", g, want_text);
    }
    json_decref(want);
}

/* Parsing must fail with an error starting with prefix ("3:5: ..."). */
static void
assert_error(const char *text, int rc, const char *prefix, const char *part)
{
    parsed p = P(text);

    if (p.rc == 0)
        fail_msg("parsed, but should fail: %s", text);
    assert_int_equal(p.rc, rc);
    if (strncmp(p.err, prefix, strlen(prefix)) != 0
        || (part != NULL && strstr(p.err, part) == NULL))
        fail_msg("error \"%s\" does not start with \"%s\" or lacks \"%s\"",
                 p.err, prefix, part ? part : "");
    assert_null(p.docs);
    assert_int_equal(p.n, 0);
}

/* ---- typing ------------------------------------------------------------------ */

static void
test_core_schema_scalars(void **state)
{
    json_t *v = one(
        "nulls: [~, null, Null, NULL]\n"
        "empty:\n"
        "bools: [true, True, TRUE, false, False, FALSE]\n"
        "ints: [0, 42, -7, +3, 007, 0x1F, 0xff, 0o17, 9223372036854775807]\n"
        "floats: [1.5, -0.25, .5, 1e3, 2.5E-2, 1., +1.0e+2]\n"
        "strings: [yes, no, on, off, y, n, 0b101, 1_000, 0x, 0o9, 1e, .,"
        " 12:30, 'true', \"42\", hello world, -, ~x]\n");

    assert_json(json_object_get(v, "nulls"), "[null, null, null, null]");
    assert_true(json_is_null(json_object_get(v, "empty")));
    assert_json(json_object_get(v, "bools"),
                "[true, true, true, false, false, false]");
    assert_json(json_object_get(v, "ints"),
                "[0, 42, -7, 3, 7, 31, 255, 15, 9223372036854775807]");
    assert_true(json_is_integer(json_array_get(json_object_get(v, "ints"), 1)));
    assert_json(json_object_get(v, "floats"),
                "[1.5, -0.25, 0.5, 1000.0, 0.025, 1.0, 100.0]");
    assert_true(json_is_real(json_array_get(json_object_get(v, "floats"), 3)));
    assert_json(json_object_get(v, "strings"),
                "['yes', 'no', 'on', 'off', 'y', 'n', '0b101', '1_000', '0x',"
                " '0o9', '1e', '.', '12:30', 'true', '42', 'hello world', '-',"
                " '~x']");
    json_decref(v);
}

static void
test_quoted_and_block_scalars_are_strings(void **state)
{
    json_t *v = one(
        "a: '123'\n"
        "b: \"null\"\n"
        "c: |\n"
        "  line one\n"
        "  line two\n"
        "d: >-\n"
        "  folded\n"
        "  text\n"
        "e: \"tab\\there \\u00e9 \\x41\"\n"
        "f: 'it''s'\n");

    assert_json(v, "{'a': '123', 'b': 'null', 'c': 'line one\\nline two\\n',"
                   " 'd': 'folded text', 'e': 'tab\\there \\u00e9 A',"
                   " 'f': 'it\\u0027s'}");
    json_decref(v);
}

static void
test_tags(void **state)
{
    json_t *v = one(
        "a: !!str 123\n"
        "b: !!int \"42\"\n"
        "c: !!float 3\n"
        "d: !!bool 'true'\n"
        "e: !!null ''\n"
        "f: ! 12\n"
        "g: !!map {x: 1}\n"
        "h: !!seq [1]\n"
        "i: !!str\n");

    assert_json(v, "{'a': '123', 'b': 42, 'c': 3.0, 'd': true, 'e': null,"
                   " 'f': '12', 'g': {'x': 1}, 'h': [1], 'i': ''}");
    assert_true(json_is_real(json_object_get(v, "c")));
    json_decref(v);

    assert_error("a: !!int twelve\n", KB_EPARSE, "1:4: ", "not a valid int");
    assert_error("a: !!bool maybe\n", KB_EPARSE, "1:4: ", "not a valid bool");
    assert_error("a: !Ref thing\n", KB_EPARSE, "1:4: ", "unsupported tag");
    assert_error("a: !!seq {x: 1}\n", KB_EPARSE, "1:4: ", "unsupported tag");
}

static void
test_non_json_numbers_are_errors(void **state)
{
    /* JSON has no infinity or NaN: refuse rather than guess */
    assert_error("x: .inf\n", KB_EPARSE, "1:4: ", "cannot be represented");
    assert_error("x: [1, -.Inf]\n", KB_EPARSE, "1:8: ", "cannot be represented");
    assert_error("x: .NaN\n", KB_EPARSE, "1:4: ", "cannot be represented");
    assert_error("x: 1e999\n", KB_EPARSE, "1:4: ", "out of range");
    assert_error("x: 9223372036854775808\n", KB_EPARSE, "1:4: ",
                 "out of range");
    assert_error("x: 0xffffffffffffffffff\n", KB_EPARSE, "1:4: ",
                 "out of range");

    /* quoted, they are plain strings */
    json_t *v = one("x: '.inf'\ny: \"1e999\"\n");
    assert_json(v, "{'x': '.inf', 'y': '1e999'}");
    json_decref(v);
}

static void
test_keys_are_text(void **state)
{
    /* OpenAPI response codes and other non-string keys keep their text */
    json_t *v = one("200: ok\ntrue: yes\n1.50: x\n~: n\n\"q\": 1\n");

    assert_json(v, "{'200': 'ok', 'true': 'yes', '1.50': 'x', '~': 'n',"
                   " 'q': 1}");
    json_decref(v);
}

/* ---- structure and lines ------------------------------------------------------ */

static const char manifest[] =
    "# a comment\n"                 /* 1 */
    "kind: Service\n"               /* 2 */
    "metadata:\n"                   /* 3 */
    "  name: hello\n"               /* 4 */
    "spec:\n"                       /* 5 */
    "  command: ./hello\n"          /* 6 */
    "  args:\n"                     /* 7 */
    "    - --port\n"                /* 8 */
    "    - \"8080\"\n"              /* 9 */
    "  env:\n"                      /* 10 */
    "    FOO: bar\n"                /* 11 */
    "    BAZ: |\n"                  /* 12 */
    "      multi\n"                 /* 13 */
    "  instances: 2\n"              /* 14 */
    "---\n"                         /* 15 */
    "# empty document\n"            /* 16 */
    "---\n"                         /* 17 */
    "kind: Gateway\n"               /* 18 */
    "list: [a, {b: [1, 2]}]\n";     /* 19 */

static void
test_line_map(void **state)
{
    parsed p = P(manifest);
    kb_yaml_doc *d;

    assert_int_equal(p.rc, 0);
    assert_int_equal(p.n, 2);                    /* the empty one is skipped */
    d = p.docs[0];
    assert_int_equal(kb_yaml_line(d, "kind"), 2);
    assert_int_equal(kb_yaml_line(d, "metadata"), 3);
    assert_int_equal(kb_yaml_line(d, "metadata.name"), 4);
    assert_int_equal(kb_yaml_line(d, "spec"), 5);
    assert_int_equal(kb_yaml_line(d, "spec.command"), 6);
    assert_int_equal(kb_yaml_line(d, "spec.args"), 7);
    assert_int_equal(kb_yaml_line(d, "spec.args[0]"), 8);
    assert_int_equal(kb_yaml_line(d, "spec.args[1]"), 9);
    assert_int_equal(kb_yaml_line(d, "spec.env.FOO"), 11);
    assert_int_equal(kb_yaml_line(d, "spec.env.BAZ"), 12);
    assert_int_equal(kb_yaml_line(d, "spec.instances"), 14);
    /* unknown paths fall back to the nearest ancestor */
    assert_int_equal(kb_yaml_line(d, "spec.env.NOPE"), 10);
    assert_int_equal(kb_yaml_line(d, "spec.args[7]"), 7);
    assert_int_equal(kb_yaml_line(d, "spec.nothing.deeper[3].x"), 5);
    assert_int_equal(kb_yaml_line(d, "nope"), 2);
    assert_int_equal(kb_yaml_line(d, ""), 2);

    d = p.docs[1];
    assert_int_equal(kb_yaml_doc_line(d), 17);
    assert_int_equal(kb_yaml_line(d, "kind"), 18);
    assert_int_equal(kb_yaml_line(d, "list[1].b[1]"), 19);
    assert_json(kb_yaml_doc_root(d), "{'kind': 'Gateway', 'list': ['a', {'b': [1, 2]}]}");
    P_free(&p);
}

static void
test_multi_document_streams(void **state)
{
    parsed p = P("---\na: 1\n...\n---\n- x\n---\n\"s\"\n--- ~\n---\n");

    assert_int_equal(p.rc, 0);
    assert_int_equal(p.n, 3);                   /* the null docs skipped */
    assert_json(kb_yaml_doc_root(p.docs[0]), "{'a': 1}");
    assert_json(kb_yaml_doc_root(p.docs[1]), "['x']");
    assert_json(kb_yaml_doc_root(p.docs[2]), "'s'");
    assert_int_equal(kb_yaml_doc_line(p.docs[1]), 4);
    P_free(&p);

    p = P("");
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.n, 0);
    P_free(&p);
    p = P("# only a comment\n");
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.n, 0);
    P_free(&p);
}

static void
test_json_is_yaml(void **state)
{
    json_t *v = one("{\"a\": [1, 2.5, true, null, \"x\\/y\\u00e9\"],\n"
                    "\t\"b\": {\"c\": {}}, \"d\": []}");

    assert_json(v, "{'a': [1, 2.5, true, null, 'x/y\\u00e9'],"
                   " 'b': {'c': {}}, 'd': []}");
    json_decref(v);
}

static void
test_duplicate_and_complex_keys(void **state)
{
    assert_error("a: 1\nb: 2\na: 3\n", KB_EPARSE, "3:1: ", "duplicate key \"a\"");
    assert_error("x:\n  y: 1\n  \"y\": 2\n", KB_EPARSE, "3:3: ", "duplicate key");
    assert_error("{a: 1, a: 1}", KB_EPARSE, "1:8: ", "duplicate key");
    assert_error("? [a, b]\n: 1\n", KB_EPARSE, "1:3: ", "keys must be scalars");
    assert_error("? {a: 1}\n: 1\n", KB_EPARSE, "1:3: ", "keys must be scalars");
    assert_error("a: &k x\n*k : 1\n", KB_EPARSE, "2:1: ", "alias");
    /* the same key in different mappings is fine */
    json_t *v = one("a: {k: 1}\nb: {k: 2}\n");
    json_decref(v);
}

static void
test_syntax_errors_have_positions(void **state)
{
    assert_error("a: b: c\n", KB_EPARSE, "1:5: ", "mapping values");
    assert_error("a: [1, 2\n", KB_EPARSE, "2:1: ", NULL);
    assert_error("a:\n  - x\n - y\n", KB_EPARSE, "3:2: ", NULL);
    assert_error("a: \"unterminated\n", KB_EPARSE, "2:1: ", NULL);
    assert_error("a: 1\n\tb: 2\n", KB_EPARSE, "2:", "tab");
    assert_error("a: \"\\uD800\"\n", KB_EPARSE, "1:", "escape");
    assert_error("a: \x01\n", KB_EPARSE, "1:", "control characters");
    assert_error("a: \xff\xfe\n", KB_EPARSE, "1:", "UTF-8");
}

/* ---- anchors and the caps ----------------------------------------------------- */

static void
test_anchors_aliases_and_merges(void **state)
{
    parsed p = P("base: &base\n"
                 "  command: ./x\n"
                 "  env: &env {A: '1'}\n"
                 "one:\n"
                 "  <<: *base\n"
                 "  command: ./y\n"        /* overrides the merged key */
                 "two:\n"
                 "  env: *env\n"
                 "three:\n"
                 "  <<: [{a: 1}, {a: 2, b: 2}]\n"
                 "  b: 3\n"
                 "'<<': literal\n");
    json_t *root;

    assert_int_equal(p.rc, 0);
    root = kb_yaml_doc_root(p.docs[0]);
    assert_json(json_object_get(root, "one"),
                "{'command': './y', 'env': {'A': '1'}}");
    assert_json(json_object_get(root, "two"), "{'env': {'A': '1'}}");
    assert_json(json_object_get(root, "three"), "{'a': 1, 'b': 3}");
    assert_string_equal(json_string_value(json_object_get(root, "<<")),
                        "literal");
    /* an alias is a private copy: editing it leaves the anchor alone */
    json_object_set_new(json_object_get(json_object_get(root, "two"), "env"),
                        "B", json_string("2"));
    assert_json(json_object_get(json_object_get(root, "base"), "env"),
                "{'A': '1'}");
    /* the alias's line is where it is used */
    assert_int_equal(kb_yaml_line(p.docs[0], "two.env"), 8);
    P_free(&p);

    assert_error("a: *missing\n", KB_EPARSE, "1:4: ", "unknown anchor");
    assert_error("a: &x [1, *x]\n", KB_EPARSE, "1:11: ", "unknown anchor");
    assert_error("a:\n  <<: 1\n", KB_EPARSE, "2:7: ", "merge key");
    /* explicit duplicates are still errors next to a merge */
    assert_error("a:\n  <<: {x: 1}\n  y: 1\n  y: 2\n", KB_EPARSE, "4:3: ",
                 "duplicate");
    /* anchors do not cross documents */
    assert_error("a: &x 1\n---\nb: *x\n", KB_EPARSE, "3:4: ", "unknown anchor");
}

static void
test_alias_bomb_is_capped(void **state)
{
    kb_buf b = KB_BUF_INIT(1 << 20);
    kb_yaml_doc **docs = NULL;
    size_t n = 99;
    char err[256];
    int rc;

    /* a billion laughs: 10^9 nodes after expansion, from ~1 KiB of text */
    kb_buf_appends(&b, "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++) {
        kb_buf_appendf(&b, "l%d: &l%d [", i, i);
        for (int j = 0; j < 10; j++)
            kb_buf_appendf(&b, "%s*l%d", j ? ", " : "", i - 1);
        kb_buf_appends(&b, "]\n");
    }
    char *t = strdup(kb_buf_cstr(&b));
    rc = kb_yaml_parse(t, strlen(t), &docs, &n, err, sizeof(err));
    assert_int_equal(rc, KB_ETOOBIG);
    assert_non_null(strstr(err, "more than 1000000 nodes"));
    assert_null(docs);
    assert_int_equal(n, 0);
    free(t);
    kb_buf_free(&b);
}

static void
test_depth_and_size_caps(void **state)
{
    kb_buf b = KB_BUF_INIT(64 << 20);
    kb_yaml_doc **docs;
    size_t n;
    char err[256];
    int rc;

    for (int i = 0; i < 256; i++)
        kb_buf_appendc(&b, '[');
    for (int i = 0; i < 256; i++)
        kb_buf_appendc(&b, ']');
    rc = kb_yaml_parse(b.data, b.len, &docs, &n, err, sizeof(err));
    assert_int_equal(rc, 0);                         /* 256 is allowed */
    kb_yaml_docs_free(docs, n);

    kb_buf_reset(&b);
    for (int i = 0; i < 257; i++)
        kb_buf_appendc(&b, '[');
    rc = kb_yaml_parse(b.data, b.len, &docs, &n, err, sizeof(err));
    assert_int_equal(rc, KB_ETOOBIG);
    assert_string_equal(err, "1:257: nested deeper than 256 levels");

    /* an alias may not smuggle in more depth than the cap */
    kb_buf_reset(&b);
    kb_buf_appends(&b, "a: &a ");
    for (int i = 0; i < 200; i++)
        kb_buf_appendc(&b, '[');
    for (int i = 0; i < 200; i++)
        kb_buf_appendc(&b, ']');
    kb_buf_appends(&b, "\nb: ");
    for (int i = 0; i < 100; i++)
        kb_buf_appendc(&b, '[');
    kb_buf_appends(&b, "*a");
    for (int i = 0; i < 100; i++)
        kb_buf_appendc(&b, ']');
    rc = kb_yaml_parse(b.data, b.len, &docs, &n, err, sizeof(err));
    assert_int_equal(rc, KB_ETOOBIG);
    assert_non_null(strstr(err, "alias *a nests deeper"));

    /* input size */
    kb_buf_reset(&b);
    assert_int_equal(kb_buf_reserve(&b, (16 << 20) + 1), 0);
    memset(b.data, ' ', (16 << 20) + 1);
    rc = kb_yaml_parse(b.data, (16 << 20) + 1, &docs, &n, err, sizeof(err));
    assert_int_equal(rc, KB_ETOOBIG);
    assert_string_equal(err, "1:1: input is larger than 16 MiB");
    kb_buf_free(&b);
}

/* ---- emitter -------------------------------------------------------------------- */

static void
roundtrip(json_t *v)
{
    kb_buf b = KB_BUF_INIT(1 << 20);
    parsed p;

    assert_int_equal(kb_yaml_emit(v, &b), 0);
    p = P(kb_buf_cstr(&b));
    if (p.rc != 0)
        fail_msg("emitted YAML does not parse (%s):\n%s", p.err, b.data);
    assert_int_equal(p.n, json_is_null(v) ? 0 : 1);
    if (p.n == 1 && !json_equal(kb_yaml_doc_root(p.docs[0]), v)) {
        char *s = json_dumps(kb_yaml_doc_root(p.docs[0]), JSON_ENCODE_ANY);
        fail_msg("round trip changed the value:\n%s\nread back as %s", b.data,
                 s);
    }
    P_free(&p);
    kb_buf_free(&b);
}

static void
test_emit_round_trip(void **state)
{
    json_t *v = J("{'kind': 'Service', 'metadata': {'name': 'hello'},"
                  " 'spec': {'command': './x', 'args': ['1', '-1', '0x1F',"
                  " '1.5', '1e3', '.5', 'true', 'False', 'null', '~', '', ' ',"
                  " ' lead', 'trail ', 'yes', 'no', 'on', 'a: b', '- x', '#c',"
                  " 'x #c', '&a', '*a', '!t', '|', '>', '@', '`', '\\u0027q\\u0027',"
                  " '\\\"q\\\"', '{', '[', '%', '.inf', '.NaN', '<<', '12:30',"
                  " '1_000', 'line\\nline', 'trail\\n', 'two\\n\\n',"
                  " '\\n lead', 'tab\\tx', 'nul\\u0000x', 'ctl\\u0007',"
                  " '\\u00e9\\u6f22\\ud83d\\ude00', '\\u2028'],"
                  " 'env': {'A': '1', '200': 'x', 'true': 'y', '': 'empty',"
                  " 'k: v': 1, 'multi\\nkey': 2},"
                  " 'instances': 2, 'n': [0, -5, 9223372036854775807,"
                  " -9223372036854775807, 1.0, -0.0, 0.1, 1e300, 2.5e-10,"
                  " 123456789.125], 'b': [true, false, null], 'e': [{}, [], [[]],"
                  " {'x': {}}]}}");

    roundtrip(v);
    json_decref(v);

    /* scalars and empty containers at the top */
    const char *tops[] = { "'x'", "'123'", "''", "42", "1.5", "true", "[]",
                           "{}", "'multi\\nline\\n'", "[[1, [2, [3]]]]" };
    for (size_t i = 0; i < sizeof(tops) / sizeof(tops[0]); i++) {
        v = J(tops[i]);
        roundtrip(v);
        json_decref(v);
    }

    /* a long string stays on one line */
    char longs[3000];
    memset(longs, 'a', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    for (size_t i = 10; i < sizeof(longs) - 1; i += 11)
        longs[i] = ' ';
    v = json_pack("{s:s}", longs, longs);
    roundtrip(v);
    json_decref(v);
}

static void
test_emit_style(void **state)
{
    json_t *v = J("{'name': 'hello', 'port': '8080', 'ok': true, 'count': 3,"
                  " 'list': ['a'], 'none': {}, 'text': 'a\\nb\\n', 'y': 'n'}");
    kb_buf b = KB_BUF_INIT(4096);

    assert_int_equal(kb_yaml_emit(v, &b), 0);
    assert_string_equal(b.data,
                        "name: hello\n"
                        "port: \"8080\"\n"
                        "ok: true\n"
                        "count: 3\n"
                        "list:\n"
                        "- a\n"
                        "none: {}\n"
                        "text: |\n"
                        "  a\n"
                        "  b\n"
                        "\"y\": \"n\"\n");      /* YAML 1.1 booleans */
    json_decref(v);

    /* appending past the buffer's max fails and leaves what was there */
    kb_buf small = KB_BUF_INIT(16);
    kb_buf_appends(&small, "keep");
    v = J("{'a long key': 'and a long value'}");
    assert_int_equal(kb_yaml_emit(v, &small), KB_ETOOBIG);
    assert_string_equal(kb_buf_cstr(&small), "keep");
    json_decref(v);
    kb_buf_free(&small);
    kb_buf_free(&b);
}

/* ---- files ----------------------------------------------------------------------- */

static void
test_load_file(void **state)
{
    char dir[] = "/tmp/kb_test_yaml_XXXXXX", path[128], err[512];
    json_t *v = NULL;
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/api.yaml", dir);
    f = fopen(path, "w");
    fputs("openapi: 3.0.0\npaths:\n  /x: {}\n", f);
    fclose(f);
    assert_int_equal(kb_yaml_load_file(path, &v, err, sizeof(err)), 0);
    assert_json(v, "{'openapi': '3.0.0', 'paths': {'/x': {}}}");
    json_decref(v);

    f = fopen(path, "w");
    fputs("a: 1\n---\nb: 2\n", f);
    fclose(f);
    assert_int_equal(kb_yaml_load_file(path, &v, err, sizeof(err)), KB_EPARSE);
    assert_null(v);
    assert_non_null(strstr(err, "expected one document, found 2"));
    assert_int_equal(strncmp(err, path, strlen(path)), 0);

    f = fopen(path, "w");
    fputs("a: 1\nb: [\n", f);
    fclose(f);
    assert_int_equal(kb_yaml_load_file(path, &v, err, sizeof(err)), KB_EPARSE);
    char want[200];
    snprintf(want, sizeof(want), "%s:3:1: ", path);
    assert_int_equal(strncmp(err, want, strlen(want)), 0);
    unlink(path);

    assert_int_equal(kb_yaml_load_file(path, &v, err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "No such file"));
    rmdir(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_schema_scalars),
        cmocka_unit_test(test_quoted_and_block_scalars_are_strings),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_non_json_numbers_are_errors),
        cmocka_unit_test(test_keys_are_text),
        cmocka_unit_test(test_line_map),
        cmocka_unit_test(test_multi_document_streams),
        cmocka_unit_test(test_json_is_yaml),
        cmocka_unit_test(test_duplicate_and_complex_keys),
        cmocka_unit_test(test_syntax_errors_have_positions),
        cmocka_unit_test(test_anchors_aliases_and_merges),
        cmocka_unit_test(test_alias_bomb_is_capped),
        cmocka_unit_test(test_depth_and_size_caps),
        cmocka_unit_test(test_emit_round_trip),
        cmocka_unit_test(test_emit_style),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
