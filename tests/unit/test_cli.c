/*
 * test_cli.c - the kiban CLI (src/cli/): argument parsing against the verb
 * table, help generated from the tables, exit codes, manifest checking with
 * FILE:LINE: FIELD: reason, openapiFile resolution, the spec diff, ages,
 * the release flow's pure parts (deploy's template merge, update-traffic's
 * body, durations), and apply/get/delete/version/deploy/services/revisions/
 * logs against a small in-process fake of the admin API on 127.0.0.1 (the
 * real server is tested by tests/e2e/).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_int.h"
#include "core/err.h"

/* ---- running the CLI with captured output ------------------------------------ */

static char out_text[1 << 16], err_text[1 << 16];

static void
slurp(FILE *f, char *buf, size_t len)
{
    size_t n;

    fflush(f);
    rewind(f);
    n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* kb_cli_main on a NULL-terminated argument list; output in out_text and
 * err_text. */
static int
run(const char *first, ...)
{
    char *argv[64];
    int argc = 0, rc;
    va_list ap;
    FILE *out = tmpfile(), *err = tmpfile();

    assert_non_null(out);
    assert_non_null(err);
    argv[argc++] = (char *)"kiban";
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    kb_cli__set_output(out, err);
    rc = kb_cli_main(argc, argv);
    kb_cli__set_output(NULL, NULL);
    slurp(out, out_text, sizeof(out_text));
    slurp(err, err_text, sizeof(err_text));
    return rc;
}

static void
assert_string_starts(const char *s, const char *prefix)
{
    if (strncmp(s, prefix, strlen(prefix)) != 0)
        fail_msg("\"%s\" does not start with \"%s\"", s, prefix);
}

static void
assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("\"%s\" not found in:\n%s", needle, hay);
}

/* ---- argument parsing ------------------------------------------------------------ */

static int
parse(const char *verb, kb_cli_opts *o, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;

    va_start(ap, errlen);
    for (const char *a = va_arg(ap, const char *); a != NULL;
         a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    return kb_cli__parse(kb_cli__verb_find(verb), argc, argv, o, err, errlen);
}

static void
test_parse_flags(void **state)
{
    kb_cli_opts o;
    char err[256];
    const char *files[8];

    assert_int_equal(parse("apply", &o, err, sizeof(err), "-f", "a.yaml",
                           "--filename=b.yaml", "-fc.yaml", "--dry-run",
                           "--project", "p1", "--api=http://x", "-f", "-",
                           NULL), 0);
    assert_int_equal(kb_cli__opt_all(&o, "filename", files, 8), 4);
    assert_string_equal(files[0], "a.yaml");
    assert_string_equal(files[1], "b.yaml");
    assert_string_equal(files[2], "c.yaml");
    assert_string_equal(files[3], "-");
    assert_string_equal(kb_cli__opt(&o, "dry-run"), "");
    assert_string_equal(kb_cli__opt(&o, "project"), "p1");
    assert_string_equal(kb_cli__opt(&o, "api"), "http://x");
    assert_null(kb_cli__opt(&o, "token-file"));
    assert_int_equal(o.npos, 0);

    /* flags anywhere after the verb; positionals in order; -- ends flags */
    assert_int_equal(parse("get", &o, err, sizeof(err), "--project", "x",
                           "services", "-o", "json", "hello", NULL), 0);
    assert_int_equal(o.npos, 2);
    assert_string_equal(o.pos[0], "services");
    assert_string_equal(o.pos[1], "hello");
    assert_string_equal(kb_cli__opt(&o, "output"), "json");
    assert_int_equal(parse("get", &o, err, sizeof(err), "services", "--",
                           "-o", NULL), 0);
    assert_string_equal(o.pos[1], "-o");
    assert_null(kb_cli__opt(&o, "output"));
}

static void
test_parse_errors(void **state)
{
    kb_cli_opts o;
    char err[256];

    assert_int_equal(parse("apply", &o, err, sizeof(err), "--bogus", NULL),
                     KB_EINVAL);
    assert_string_equal(err, "unknown flag --bogus");
    assert_int_equal(parse("apply", &o, err, sizeof(err), "-x", NULL),
                     KB_EINVAL);
    assert_string_equal(err, "unknown flag -x");
    assert_int_equal(parse("apply", &o, err, sizeof(err), "-f", NULL),
                     KB_EINVAL);
    assert_string_equal(err, "flag --filename needs a value (FILE)");
    assert_int_equal(parse("apply", &o, err, sizeof(err), "--dry-run=yes",
                           NULL), KB_EINVAL);
    assert_string_equal(err, "flag --dry-run takes no value");
    assert_int_equal(parse("get", &o, err, sizeof(err), "services", "-o", "a",
                           "-o", "b", NULL), KB_EINVAL);
    assert_string_equal(err, "flag --output given twice");
    /* -o belongs to get, not to delete */
    assert_int_equal(parse("delete", &o, err, sizeof(err), "service", "x",
                           "-o", "json", NULL), KB_EINVAL);
    /* positional counts come from the table */
    assert_int_equal(parse("get", &o, err, sizeof(err), NULL), KB_EINVAL);
    assert_non_null(strstr(err, "missing arguments"));
    assert_int_equal(parse("get", &o, err, sizeof(err), "a", "b", "c", NULL),
                     KB_EINVAL);
    assert_non_null(strstr(err, "too many arguments"));
    assert_int_equal(parse("delete", &o, err, sizeof(err), "service", NULL),
                     KB_EINVAL);
    assert_int_equal(parse("apply", &o, err, sizeof(err), "stray", NULL),
                     KB_EINVAL);
    /* global API flags are only for verbs that talk to the API */
    assert_int_equal(parse("help", &o, err, sizeof(err), "--api", "x", NULL),
                     KB_EINVAL);
    /* --help needs no arguments */
    assert_int_equal(parse("delete", &o, err, sizeof(err), "--help", NULL), 0);
}

/* ---- help and exit codes ----------------------------------------------------------- */

static void
test_help_lists_the_table(void **state)
{
    assert_int_equal(run("help", NULL), 0);
    for (const kb_cli_verb *v = kb_cli__verbs; v->name != NULL; v++) {
        char line[64];
        snprintf(line, sizeof(line), "\n  %s ", v->name);
        if (v->hidden)
            assert_null(strstr(out_text, v->name));
        else
            assert_contains(out_text, line);
        if (!v->hidden)
            assert_contains(out_text, v->summary);
    }
    assert_null(strstr(out_text, "__shim"));
    for (const kb_kind *const *k = kb_kinds; *k != NULL; k++)
        assert_contains(out_text, (*k)->kind);
    assert_contains(out_text, "--api URL");
    assert_contains(out_text, "--token-file FILE");
    assert_contains(out_text, "--project P");

    /* -h and --help at the top print the same */
    char first[sizeof(out_text)];
    memcpy(first, out_text, sizeof(first));
    assert_int_equal(run("--help", NULL), 0);
    assert_string_equal(out_text, first);
    /* no verb at all: the help on stderr, exit 2 */
    assert_int_equal(run(NULL), 2);
    assert_string_equal(err_text, first);
}

static void
test_help_verb_and_kind(void **state)
{
    assert_int_equal(run("help", "apply", NULL), 0);
    assert_contains(out_text, "Usage: kiban apply -f FILE|-");
    assert_contains(out_text, "-f, --filename FILE");
    assert_contains(out_text, "--dry-run");
    assert_contains(out_text, "--project P");

    assert_int_equal(run("get", "--help", NULL), 0);
    assert_contains(out_text, "Usage: kiban get KIND [NAME]");
    assert_contains(out_text, "-o, --output FORMAT");

    /* kinds: every field of the table, with its bounds */
    assert_int_equal(run("help", "services", NULL), 0);
    const kb_kind *k = kb_kind_find("Service");
    for (size_t i = 0; i < k->nfields; i++)
        assert_contains(out_text, k->fields[i].name);
    assert_contains(out_text, "integer, 0 to 64");
    assert_contains(out_text, "kind: Service");
    assert_int_equal(run("help", "kinds", NULL), 0);
    assert_contains(out_text, "kind: Service");
    assert_contains(out_text, "kind: Gateway");
    assert_contains(out_text, "openapiFile");

    assert_int_equal(run("help", "nothing", NULL), 2);
    assert_contains(err_text, "run 'kiban help'");
    assert_int_equal(run("help", "__shim", NULL), 2);
}

static void
test_usage_errors_exit_2(void **state)
{
    assert_int_equal(run("frobnicate", NULL), 2);
    assert_string_equal(err_text,
                        "kiban: unknown verb \"frobnicate\"; run 'kiban help'\n");
    assert_string_equal(out_text, "");

    assert_int_equal(run("get", "services", "--bogus", NULL), 2);
    assert_string_equal(err_text, "kiban get: unknown flag --bogus; run "
                        "'kiban help get'\n");
    assert_int_equal(run("apply", NULL), 2);
    assert_contains(err_text, "-f FILE is required");
    assert_int_equal(run("apply", "-f", "-", "-f", "-", NULL), 2);
    assert_int_equal(run("get", "widgets", "--api", "http://127.0.0.1:9",
                         NULL), 2);
    assert_contains(err_text, "unknown kind \"widgets\"");
    assert_int_equal(run("get", "services", "Bad_Name", NULL), 2);
    assert_int_equal(run("get", "services", "-o", "xml", NULL), 2);
    assert_int_equal(run("get", "services", "--api", "ftp://x", NULL), 2);
    assert_int_equal(run("get", "services", "--project", "No", NULL), 2);
}

/* ---- manifests ----------------------------------------------------------------------- */

/* Check one manifest text; the first error line, or "" if it is good. */
static const char *
check_text(const char *text, const char *project)
{
    static char first[1024];
    kb_cli_mset m;

    kb_cli__mset_init(&m);
    assert_int_equal(kb_cli__mset_add_text(&m, "app.yaml", ".", text,
                                           strlen(text)), 0);
    kb_cli__mset_check(&m, project);
    snprintf(first, sizeof(first), "%s", kb_buf_cstr(&m.errors));
    first[strcspn(first, "\n")] = '\0';
    kb_cli__mset_free(&m);
    return first;
}

static const char good_service[] =
    "kind: Service\n"
    "metadata:\n"
    "  name: hello\n"
    "spec:\n"
    "  command: ./hello\n"
    "  args: [--x]\n"
    "  env:\n"
    "    A: b\n"
    "  instances: 2\n";

static void
test_manifest_good(void **state)
{
    kb_cli_mset m;
    const char *text =
        "apiVersion: kiban/v1\n"
        "kind: Service\n"
        "metadata: {name: one, project: team-a}\n"
        "spec: {command: ./x, instances: ~, args: null}\n"
        "---\n"
        "{\"kind\": \"Gateway\", \"metadata\": {\"name\": \"gw\"},"
        " \"spec\": {\"openapi\": {\"openapi\": \"3.0.0\"}, \"hosts\": []}}\n";

    assert_string_equal(check_text(good_service, NULL), "");
    kb_cli__mset_init(&m);
    kb_cli__mset_add_text(&m, "x.yaml", ".", text, strlen(text));
    assert_int_equal(kb_cli__mset_check(&m, NULL), 0);
    assert_int_equal(m.nitems, 2);
    assert_string_equal(m.items[0].kind->kind, "Service");
    assert_string_equal(m.items[0].project, "team-a");
    assert_string_equal(m.items[0].name, "one");
    /* nulls mean "not set" and are not sent */
    assert_int_equal(json_object_size(m.items[0].spec), 1);
    assert_string_equal(m.items[1].kind->kind, "Gateway");
    assert_string_equal(m.items[1].project, "default");
    kb_cli__mset_free(&m);

    /* --project is the default project */
    kb_cli__mset_init(&m);
    kb_cli__mset_add_text(&m, "x.yaml", ".", good_service,
                          strlen(good_service));
    assert_int_equal(kb_cli__mset_check(&m, "staging"), 0);
    assert_string_equal(m.items[0].project, "staging");
    kb_cli__mset_free(&m);
}

static void
test_manifest_errors(void **state)
{
    /* bad YAML: FILE:LINE:COL */
    assert_string_equal(check_text("kind: Service\nmetadata:\n  name: x\n"
                                   " spec: 1\n", NULL),
                        "app.yaml:4:2: did not find expected key while "
                        "parsing a block mapping");
    assert_string_equal(check_text("a: 1\na: 2\n", NULL),
                        "app.yaml:2:1: duplicate key \"a\"");
    /* unknown top-level key */
    assert_string_equal(check_text("kind: Service\nmetadata: {name: x}\n"
                                   "spec: {command: x}\nstatus: {}\n", NULL),
                        "app.yaml:4: status: unknown field (expected "
                        "apiVersion, kind, metadata, spec)");
    /* unknown spec field: the line of that field */
    assert_string_starts(check_text("kind: Service\nmetadata: {name: x}\n"
                                    "spec:\n  command: x\n\n  replicas: 3\n",
                                    NULL),
                         "app.yaml:6: spec.replicas: unknown field for Service "
                         "(known: command, args, env, ");
    /* wrong type */
    assert_string_equal(check_text("kind: Service\nmetadata: {name: x}\n"
                                   "spec:\n  command: x\n  instances: \"two\"\n",
                                   NULL),
                        "app.yaml:5: spec.instances: must be an integer");
    assert_string_equal(check_text("kind: Service\nmetadata: {name: x}\n"
                                   "spec:\n  command: x\n  args:\n    - a\n"
                                   "    - 7\n", NULL),
                        "app.yaml:7: spec.args[1]: must be a string (quote "
                        "the value)");
    assert_string_equal(check_text("kind: Service\nmetadata: {name: x}\n"
                                   "spec:\n  command: x\n  env:\n    A: b\n"
                                   "    N: 1\n", NULL),
                        "app.yaml:7: spec.env.N: must be a string (quote the "
                        "value)");
    assert_string_equal(check_text("kind: Service\nmetadata: {name: x}\n"
                                   "spec:\n  instances: 1\n", NULL),
                        "app.yaml:3: spec.command: is required (a string)");
    /* missing, unknown, misspelled kind */
    assert_string_equal(check_text("metadata: {name: x}\nspec: {}\n", NULL),
                        "app.yaml:1: kind: is required (one of Service, "
                        "Gateway, ApiKey)");
    assert_string_equal(check_text("\n\nkind: Widget\nmetadata: {name: x}\n"
                                   "spec: {}\n", NULL),
                        "app.yaml:3: kind: unknown kind \"Widget\" (known: "
                        "Service, Gateway, ApiKey)");
    assert_string_equal(check_text("kind: services\nmetadata: {name: x}\n"
                                   "spec: {}\n", NULL),
                        "app.yaml:1: kind: unknown kind \"services\" (did you "
                        "mean Service?)");
    assert_string_equal(check_text("apiVersion: v1\nkind: Service\n", NULL),
                        "app.yaml:1: apiVersion: must be kiban/v1");
    /* names */
    assert_string_equal(check_text("kind: Service\nmetadata:\n  name: Hello_1\n"
                                   "spec: {command: x}\n", NULL),
                        "app.yaml:3: metadata.name: \"Hello_1\" is not a valid "
                        "name (lowercase letters, digits and '-', starting "
                        "with a letter, at most 63 characters)");
    assert_string_equal(check_text("kind: Service\nmetadata:\n  name: 12\n"
                                   "spec: {command: x}\n", NULL),
                        "app.yaml:3: metadata.name: the value is not a valid "
                        "name (lowercase letters, digits and '-', starting "
                        "with a letter, at most 63 characters)");
    assert_string_equal(check_text("kind: Service\nmetadata: {}\n"
                                   "spec: {command: x}\n", NULL),
                        "app.yaml:2: metadata.name: is required");
    assert_string_equal(check_text("kind: Service\nmetadata:\n  name: a\n"
                                   "  labels: {}\nspec: {command: x}\n", NULL),
                        "app.yaml:4: metadata.labels: unknown field (expected "
                        "name, project)");
    assert_string_equal(check_text("kind: Service\nmetadata:\n  name: a\n"
                                   "  project: prod\nspec: {command: x}\n",
                                   "staging"),
                        "app.yaml:4: metadata.project: \"prod\" differs from "
                        "--project staging");
    assert_string_equal(check_text("kind: Service\nmetadata: {name: a}\n",
                                   NULL),
                        "app.yaml:1: spec: is required");
    assert_string_equal(check_text("kind: Service\nmetadata: {name: a}\n"
                                   "spec: [x]\n", NULL),
                        "app.yaml:3: spec: must be a mapping");
    assert_string_equal(check_text("- kind: Service\n", NULL),
                        "app.yaml:1: a manifest must be a mapping with kind, "
                        "metadata and spec");
    assert_string_equal(check_text("# nothing\n", NULL),
                        "app.yaml: no documents");
    /* Gateway: both, neither */
    assert_string_equal(check_text("kind: Gateway\nmetadata: {name: g}\n"
                                   "spec:\n  openapi: {}\n"
                                   "  openapiFile: api.yaml\n", NULL),
                        "app.yaml:5: spec.openapiFile: cannot be set together "
                        "with openapi; set only one");
    assert_string_equal(check_text("kind: Gateway\nmetadata: {name: g}\n"
                                   "spec:\n  hosts: [a.example]\n", NULL),
                        "app.yaml:3: spec.openapi: one of openapi or "
                        "openapiFile is required");
}

static void
test_manifest_every_document_is_checked(void **state)
{
    kb_cli_mset m;
    const char *text =
        "kind: Service\nmetadata: {name: a}\nspec: {command: x}\n"      /* 1-3 */
        "---\n"
        "kind: Service\nmetadata: {name: b}\nspec: {command: 1}\n"      /* 5-7 */
        "---\n"
        "kind: Service\nmetadata: {name: a}\nspec: {command: y}\n";     /* 9-11 */

    kb_cli__mset_init(&m);
    kb_cli__mset_add_text(&m, "all.yaml", ".", text, strlen(text));
    assert_int_equal(kb_cli__mset_check(&m, NULL), 2);
    assert_string_equal(kb_buf_cstr(&m.errors),
                        "all.yaml:7: spec.command: must be a string (quote the "
                        "value)\n"
                        "all.yaml:10: metadata.name: service/a is declared "
                        "twice (also at all.yaml:2)\n");
    kb_cli__mset_free(&m);
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void
test_manifest_openapi_file(void **state)
{
    char dir[] = "/tmp/kb_test_cli_XXXXXX", path[256], api[256], sub[256];
    kb_cli_mset m;
    json_t *openapi;

    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof(sub), "%s/api", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(api, sizeof(api), "%s/api/openapi.yaml", dir);
    write_file(api, "openapi: 3.0.0\npaths:\n  /hello:\n    get:\n"
                    "      responses: {200: {description: ok}}\n");
    snprintf(path, sizeof(path), "%s/gw.yaml", dir);
    write_file(path, "kind: Gateway\nmetadata: {name: gw}\nspec:\n"
                     "  hosts: [a.example]\n  openapiFile: api/openapi.yaml\n");

    /* resolved relative to the manifest's directory, sent as openapi */
    kb_cli__mset_init(&m);
    assert_int_equal(kb_cli__mset_add_file(&m, path), 0);
    assert_int_equal(kb_cli__mset_check(&m, NULL), 0);
    assert_int_equal(m.nitems, 1);
    assert_null(json_object_get(m.items[0].spec, "openapiFile"));
    openapi = json_object_get(m.items[0].spec, "openapi");
    assert_string_equal(json_string_value(json_object_get(openapi, "openapi")),
                        "3.0.0");
    assert_non_null(json_object_get(json_object_get(openapi, "paths"),
                                    "/hello"));
    kb_cli__mset_free(&m);

    /* a missing file: the line of openapiFile */
    unlink(api);
    kb_cli__mset_init(&m);
    kb_cli__mset_add_file(&m, path);
    assert_int_equal(kb_cli__mset_check(&m, NULL), 1);
    char want[512];
    snprintf(want, sizeof(want), "%s:5: spec.openapiFile: cannot load "
             "%s/api/openapi.yaml: No such file or directory\n", path, dir);
    assert_string_equal(kb_buf_cstr(&m.errors), want);
    kb_cli__mset_free(&m);

    /* bad YAML in the OpenAPI file: both places are named */
    write_file(api, "openapi: 3.0.0\npaths: [\n");
    kb_cli__mset_init(&m);
    kb_cli__mset_add_file(&m, path);
    assert_int_equal(kb_cli__mset_check(&m, NULL), 1);
    snprintf(want, sizeof(want), "%s:5: spec.openapiFile: cannot load "
             "%s/api/openapi.yaml:3:1: ", path, dir);
    assert_int_equal(strncmp(kb_buf_cstr(&m.errors), want, strlen(want)), 0);
    kb_cli__mset_free(&m);

    /* not a mapping */
    write_file(api, "- 1\n");
    kb_cli__mset_init(&m);
    kb_cli__mset_add_file(&m, path);
    assert_int_equal(kb_cli__mset_check(&m, NULL), 1);
    assert_non_null(strstr(kb_buf_cstr(&m.errors), "openapi must be a mapping"));
    kb_cli__mset_free(&m);

    /* a manifest file that does not exist */
    kb_cli__mset_init(&m);
    snprintf(want, sizeof(want), "%s/none.yaml", dir);
    kb_cli__mset_add_file(&m, want);
    assert_int_equal(kb_cli__mset_check(&m, NULL), 1);
    assert_non_null(strstr(kb_buf_cstr(&m.errors), "none.yaml: cannot open"));
    kb_cli__mset_free(&m);

    unlink(api);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
}

/* ---- diff and ages ---------------------------------------------------------------------- */

static json_t *
J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);

    if (v == NULL)
        fail_msg("bad test JSON (%s): %s", e.text, text);
    return v;
}

static bool
differs(const char *kind, const char *desired, const char *live)
{
    json_t *d = J(desired), *l = J(live);
    bool r = kb_cli__spec_differs(kb_kind_find(kind), d, l);

    json_decref(d);
    json_decref(l);
    return r;
}

static void
test_spec_diff(void **state)
{
    const char *live = "{\"name\": \"projects/default/services/a\","
                       " \"uid\": \"u1\", \"etag\": \"7\", \"createTime\": \"x\","
                       " \"status\": {\"ready\": 1}, \"command\": \"./x\","
                       " \"args\": [\"a\"], \"env\": {\"A\": \"1\", \"B\": \"2\"},"
                       " \"instances\": 2}";

    /* output-only fields are ignored; key order does not matter */
    assert_false(differs("Service", "{\"instances\": 2, \"env\": {\"B\": \"2\","
                         " \"A\": \"1\"}, \"args\": [\"a\"], \"command\": \"./x\"}",
                         live));
    assert_true(differs("Service", "{\"command\": \"./x\", \"args\": [\"a\"],"
                        " \"env\": {\"A\": \"1\", \"B\": \"2\"}, \"instances\": 3}",
                        live));
    assert_true(differs("Service", "{\"command\": \"./x\", \"args\": [\"a\", \"b\"],"
                        " \"env\": {\"A\": \"1\", \"B\": \"2\"}, \"instances\": 2}",
                        live));
    /* a field left out of the manifest that is set live is a change */
    assert_true(differs("Service", "{\"command\": \"./x\", \"args\": [\"a\"],"
                        " \"instances\": 2}", live));
    /* absent, null and empty are the same */
    assert_false(differs("Service", "{\"command\": \"./x\"}",
                         "{\"command\": \"./x\", \"args\": [], \"env\": {},"
                         " \"instances\": null}"));
    assert_false(differs("Service", "{\"command\": \"./x\", \"args\": []}",
                         "{\"command\": \"./x\"}"));
    /* 0 is a value, not "unset" */
    assert_true(differs("Service", "{\"command\": \"./x\", \"instances\": 0}",
                        "{\"command\": \"./x\"}"));
    /* deep objects compare by value */
    assert_false(differs("Gateway", "{\"openapi\": {\"a\": {\"b\": [1, 2]},"
                         " \"c\": 1}}", "{\"openapi\": {\"c\": 1, \"a\": {\"b\":"
                         " [1, 2]}}, \"status\": {\"routes\": 1}}"));
    assert_true(differs("Gateway", "{\"openapi\": {\"a\": {\"b\": [2, 1]}}}",
                        "{\"openapi\": {\"a\": {\"b\": [1, 2]}}}"));
    /* a Service's revisions are the server's; its traffic, when the
     * manifest leaves it out, is kept as `update-traffic` set it */
    const char *released = "{\"command\": \"./x\", \"revisionCounter\": 2,"
        " \"revisions\": [{\"name\": \"a-00002-xyz\"}], \"traffic\":"
        " [{\"revisionName\": \"a-00002-xyz\", \"percent\": 100}]}";
    assert_false(differs("Service", "{\"command\": \"./x\"}", released));
    assert_true(differs("Service", "{\"command\": \"./x\", \"traffic\": "
                        "[{\"latestRevision\": true, \"percent\": 100}]}",
                        released));
}

static void
test_age(void **state)
{
    time_t now = 1700000000;        /* 2023-11-14T22:13:20Z */
    char buf[32];

    kb_cli__age("2023-11-14T22:13:20Z", now, buf, sizeof(buf));
    assert_string_equal(buf, "0s");
    kb_cli__age("2023-11-14T22:12:00.123456Z", now, buf, sizeof(buf));
    assert_string_equal(buf, "80s");
    kb_cli__age("2023-11-14T21:13:20Z", now, buf, sizeof(buf));
    assert_string_equal(buf, "60m");
    kb_cli__age("2023-11-14T23:13:20+02:00", now, buf, sizeof(buf));
    assert_string_equal(buf, "60m");
    kb_cli__age("2023-11-13T22:13:20Z", now, buf, sizeof(buf));
    assert_string_equal(buf, "24h");
    kb_cli__age("2023-11-01T22:13:20Z", now, buf, sizeof(buf));
    assert_string_equal(buf, "13d");
    kb_cli__age("2020-11-14T22:13:20Z", now, buf, sizeof(buf));
    assert_string_equal(buf, "3y");
    kb_cli__age("2023-11-15T00:00:00Z", now, buf, sizeof(buf));
    assert_string_equal(buf, "0s");                  /* in the future */
    kb_cli__age("yesterday", now, buf, sizeof(buf));
    assert_string_equal(buf, "-");
    kb_cli__age(NULL, now, buf, sizeof(buf));
    assert_string_equal(buf, "-");
    kb_cli__age("2023-11-14T22:13:20", now, buf, sizeof(buf));
    assert_string_equal(buf, "-");                   /* no zone */
}

/* ---- the release flow: pure parts ------------------------------------------------- */

/* Parse deploy/services flags and run f; the result as compact JSON text
 * (or "ERROR: message"). */
/* argv[0..argc) then the words from first to a NULL, parsed as verb's
 * options into *o (argv must outlive o); fails the test on a parse error. */
static void
parse_words(const char *verb, kb_cli_opts *o, char **argv, int argc,
            const char *first, va_list ap)
{
    char err[256];

    for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    assert_int_equal(kb_cli__parse(kb_cli__verb_find(verb), argc, argv, o,
                                   err, sizeof(err)), 0);
}

/* "ERROR: err" when rc is not 0, else t compact with sorted keys, in
 * text; returns text.  Drops t. */
static const char *
outcome_text(char *text, size_t len, int rc, json_t *t, const char *err)
{
    if (rc != 0) {
        snprintf(text, len, "ERROR: %s", err);
    } else {
        char *dump = json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(text, len, "%s", dump);
        free(dump);
    }
    json_decref(t);
    return text;
}

/* got is an error that contains msg (the bad flag and value name it). */
static void
assert_flag_error(const char *got, const char *flag, const char *value,
                  const char *msg)
{
    if (strncmp(got, "ERROR: ", 7) != 0 || strstr(got, msg) == NULL)
        fail_msg("%s %s: got %s", flag, value, got);
}

static const char *
template_of(const char *current, ...)
{
    static char text[2048];
    kb_cli_opts o;
    char err[256], *argv[32];
    json_t *cur = current ? json_loads(current, 0, NULL) : NULL, *t = NULL;
    int rc;
    va_list ap;

    va_start(ap, current);
    parse_words("deploy", &o, argv, 0, va_arg(ap, const char *), ap);
    va_end(ap);
    rc = kb_cli__deploy_template(cur, &o, &t, err, sizeof(err));
    if (rc != 0) {
        assert_int_equal(rc, KB_EINVAL);
        assert_null(t);
    }
    json_decref(cur);
    return outcome_text(text, sizeof(text), rc, t, err);
}

static void
test_deploy_template(void **state)
{
    const char *cur =
        "{\"name\": \"projects/default/services/web\", \"command\": \"./srv\","
        " \"args\": [\"a\", \"b\"], \"env\": {\"A\": \"1\", \"B\": \"2\"},"
        " \"instances\": 2, \"resources\": {\"memory\": \"1Gi\"},"
        " \"traffic\": [{\"latestRevision\": true, \"percent\": 100}],"
        " \"revisions\": [{\"name\": \"web-00001-abc\"}],"
        " \"status\": {\"url\": \"http://web.localhost\"}}";

    /* a new service: --command is required, the flags are the template */
    assert_string_equal(template_of(NULL, "web", "--env", "A=1", NULL),
                        "ERROR: --command is required to create a service");
    assert_string_equal(template_of(NULL, "web", "--command", "./srv", "--arg",
                                    "-v", "--arg", "--port=1", "--env",
                                    "A=x=y", "--memory", "512Mi", "--cpu",
                                    "0.5", "--concurrency", "10", "--timeout",
                                    "30s", "--working-dir", "/srv", NULL),
        "{\"args\":[\"-v\",\"--port=1\"],\"command\":\"./srv\",\"concurrency\":10,"
        "\"env\":{\"A\":\"x=y\"},\"resources\":{\"cpu\":\"0.5\",\"memory\":"
        "\"512Mi\"},\"timeout\":\"30s\",\"workingDir\":\"/srv\"}");

    /* an update: the current template with the flags applied; --env merges,
     * --remove-env deletes; autoscaling flags drop a fixed count; the
     * service-level and output-only fields are not part of it */
    assert_string_equal(template_of(cur, "web", "--env", "A=9", "--env",
                                    "C=3", "--remove-env", "B", "--cpu", "1",
                                    "--max-instances", "5", NULL),
        "{\"args\":[\"a\",\"b\"],\"command\":\"./srv\",\"env\":{\"A\":\"9\","
        "\"C\":\"3\"},\"maxInstances\":5,\"resources\":{\"cpu\":\"1\","
        "\"memory\":\"1Gi\"}}");
    /* any --arg replaces the whole list; --command replaces the command */
    assert_string_equal(template_of(cur, "web", "--arg", "z", "--command",
                                    "/bin/new", NULL),
        "{\"args\":[\"z\"],\"command\":\"/bin/new\",\"env\":{\"A\":\"1\","
        "\"B\":\"2\"},\"instances\":2,\"resources\":{\"memory\":\"1Gi\"}}");
    /* removing every variable leaves no env at all */
    assert_string_equal(template_of(cur, "web", "--remove-env", "A",
                                    "--remove-env", "B", "--remove-env", "Z",
                                    NULL),
        "{\"args\":[\"a\",\"b\"],\"command\":\"./srv\",\"instances\":2,"
        "\"resources\":{\"memory\":\"1Gi\"}}");
    /* no flags: the same template (the server then makes no revision) */
    assert_string_equal(template_of(cur, "web", NULL),
        "{\"args\":[\"a\",\"b\"],\"command\":\"./srv\",\"env\":{\"A\":\"1\","
        "\"B\":\"2\"},\"instances\":2,\"resources\":{\"memory\":\"1Gi\"}}");

    /* bad values, each with a message naming the flag */
    static const struct { const char *flag, *value, *msg; } bad[] = {
        { "--env", "NOPE", "--env \"NOPE\": want NAME=VALUE" },
        { "--env", "PORT=1", "--env \"PORT=1\"" },
        { "--env", "1A=x", "--env \"1A=x\"" },
        { "--env", "=x", "--env \"=x\"" },
        { "--remove-env", "A-B", "--remove-env \"A-B\"" },
        { "--memory", "lots", "--memory \"lots\"" },
        { "--memory", "0", "--memory \"0\"" },
        { "--memory", "5Xi", "--memory \"5Xi\"" },
        { "--cpu", "0", "--cpu \"0\"" },
        { "--cpu", "-1", "--cpu \"-1\"" },
        { "--cpu", "0.0005", "--cpu \"0.0005\"" },
        { "--concurrency", "0", "--concurrency \"0\": want a whole number "
          "from 1 to 1000" },
        { "--concurrency", "1001", "--concurrency \"1001\"" },
        { "--max-instances", "1e3", "--max-instances \"1e3\"" },
        { "--min-instances", "-1", "--min-instances \"-1\"" },
        { "--timeout", "30x", "--timeout \"30x\"" },
        { "--timeout", "0s", "--timeout \"0s\"" },
        { "--working-dir", "rel/dir", "--working-dir \"rel/dir\": must be "
          "an absolute path" },
        { "--command", "", "--command must not be empty" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_flag_error(template_of(cur, "web", bad[i].flag, bad[i].value,
                                      NULL), bad[i].flag, bad[i].value,
                          bad[i].msg);
    }
    assert_string_equal(template_of(cur, "web", "--min-instances", "5",
                                    "--max-instances", "2", NULL),
                        "ERROR: --min-instances is more than --max-instances");
}

static const char *
traffic_of(const char *first, ...)
{
    static char text[1024];
    kb_cli_opts o;
    char err[256], *argv[32];
    json_t *t = NULL;
    int rc;
    va_list ap;

    argv[0] = (char *)"update-traffic";
    argv[1] = (char *)"web";
    va_start(ap, first);
    parse_words("services", &o, argv, 2, first, ap);
    va_end(ap);
    rc = kb_cli__traffic_body(&o, &t, err, sizeof(err));
    return outcome_text(text, sizeof(text), rc, t, err);
}

static void
test_traffic_flags(void **state)
{
    assert_string_equal(traffic_of("--to-revisions", "web-00001-abc=90,"
                                   "LATEST=10", NULL),
        "{\"toRevisions\":{\"LATEST\":10,\"web-00001-abc\":90}}");
    /* repeated flags combine; tags as gcloud's flags */
    assert_string_equal(traffic_of("--to-tags", "green=10", "--update-tags",
                                   "green=web-00002-abc", "--remove-tags",
                                   "blue,red", "--remove-tags", "old", NULL),
        "{\"removeTags\":[\"blue\",\"red\",\"old\"],\"toTags\":{\"green\":10},"
        "\"updateTags\":{\"green\":\"web-00002-abc\"}}");
    assert_string_equal(traffic_of("--to-latest", "--clear-tags", NULL),
                        "{\"clearTags\":true,\"toLatest\":true}");
    assert_string_equal(traffic_of("--set-tags", "a=r1,b=r2", NULL),
                        "{\"setTags\":{\"a\":\"r1\",\"b\":\"r2\"}}");

    static const struct { const char *flag, *value, *msg; } bad[] = {
        { "--to-revisions", "a=90,b=20", "give 110 percent in all" },
        { "--to-revisions", "a", "--to-revisions \"a\": want NAME=PERCENT" },
        { "--to-revisions", "a=", "--to-revisions \"a=\"" },
        { "--to-revisions", "=5", "--to-revisions \"=5\"" },
        { "--to-revisions", "a=x", "\"x\" is not a percent" },
        { "--to-revisions", "a=101", "\"101\" is not a percent" },
        { "--to-revisions", "a=1,a=2", "\"a\" given twice" },
        { "--set-tags", "green", "--set-tags \"green\": want TAG=REVISION" },
        { "--remove-tags", "a,,b", "--remove-tags \"a,,b\"" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_flag_error(traffic_of(bad[i].flag, bad[i].value, NULL),
                          bad[i].flag, bad[i].value, bad[i].msg);
    }
    assert_string_equal(traffic_of("--to-latest", "--to-tags", "g=1", NULL),
                        "ERROR: --to-latest cannot be combined with "
                        "--to-revisions or --to-tags");
    assert_string_equal(traffic_of("--set-tags", "a=b", "--clear-tags", NULL),
                        "ERROR: --clear-tags cannot be combined with "
                        "--set-tags");
    assert_contains(traffic_of(NULL), "ERROR: give at least one of");
}

static void
test_durations_and_numbers(void **state)
{
    static const struct { const char *s; long long ms; } good[] = {
        { "500ms", 500 }, { "30s", 30000 }, { "5m", 300000 },
        { "2h", 7200000 }, { "7", 7000 }, { "0s", 0 },
    };
    static const char *const bad[] = {
        "", "s", "5x", "-1s", "1.5s", " 5s", "5 s", "5sec", "1234567890s",
    };
    long long v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(kb_cli__duration_ms(good[i].s, &v), 0);
        assert_int_equal(v, good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kb_cli__duration_ms(bad[i], &v) != KB_EINVAL)
            fail_msg("duration \"%s\" accepted", bad[i]);
    assert_int_equal(kb_cli__int_in("10", 1, 10, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(kb_cli__int_in("11", 1, 10, &v), KB_EINVAL);
    assert_int_equal(kb_cli__int_in("1e3", 1, 1000, &v), KB_EINVAL);
    assert_int_equal(kb_cli__int_in("+1", 1, 10, &v), KB_EINVAL);
    assert_int_equal(kb_cli__int_in(" 1", 1, 10, &v), KB_EINVAL);
    assert_int_equal(kb_cli__int_in("99999999999999999999", 1, 10, &v),
                     KB_EINVAL);
}

static void
test_revision_percent(void **state)
{
    json_t *s = json_loads(
        "{\"revisions\": [{\"name\": \"w-00001-aaa\"}, {\"name\": \"w-00002-bbb\"}],"
        " \"traffic\": [{\"latestRevision\": true, \"percent\": 70},"
        "               {\"revisionName\": \"w-00001-aaa\", \"percent\": 30}]}",
        0, NULL);

    /* the spec's split: latestRevision counts for the newest */
    assert_string_equal(kb_cli__newest_revision(s), "w-00002-bbb");
    assert_int_equal(kb_cli__revision_percent(s, "w-00002-bbb"), 70);
    assert_int_equal(kb_cli__revision_percent(s, "w-00001-aaa"), 30);
    assert_int_equal(kb_cli__revision_percent(s, "w-00003-ccc"), 0);
    /* the runtime's resolved split wins when present */
    json_object_set_new(s, "status", json_loads(
        "{\"traffic\": [{\"revisionName\": \"w-00001-aaa\", \"percent\": 100,"
        " \"latestRevision\": true}]}", 0, NULL));
    assert_int_equal(kb_cli__revision_percent(s, "w-00002-bbb"), 0);
    assert_int_equal(kb_cli__revision_percent(s, "w-00001-aaa"), 100);
    /* no traffic stated at all: everything to the newest */
    json_object_del(s, "status");
    json_object_del(s, "traffic");
    assert_int_equal(kb_cli__revision_percent(s, "w-00002-bbb"), 100);
    json_decref(s);
}

static void
test_release_flow_usage_errors(void **state)
{
    /* subcommands and their flags: exit 2 before any request (the API
     * address is unusable) */
    const char *api = "--api=http://127.0.0.1:9";

    assert_int_equal(run("services", "frob", api, NULL), 2);
    assert_contains(err_text, "kiban services: unknown command \"frob\" (list, "
                              "describe, delete, update-traffic)");
    assert_int_equal(run("services", "describe", api, NULL), 2);
    assert_contains(err_text, "missing arguments: usage: kiban services "
                              "describe SERVICE");
    assert_int_equal(run("services", "list", "extra", api, NULL), 2);
    assert_int_equal(run("services", "describe", "web", "--to-latest", api,
                         NULL), 2);
    assert_contains(err_text, "flag --to-latest does not apply");
    assert_int_equal(run("services", "update-traffic", "web", api, NULL), 2);
    assert_contains(err_text, "give at least one of");
    assert_int_equal(run("services", "update-traffic", "web", "--to-tags",
                         "g=200", api, NULL), 2);
    assert_int_equal(run("services", "describe", "Web", api, NULL), 2);
    assert_int_equal(run("services", "list", "-o", "xml", api, NULL), 2);
    assert_int_equal(run("revisions", "list", api, NULL), 2);
    assert_contains(err_text, "--service SERVICE is required");
    assert_int_equal(run("revisions", "delete", "--service", "web", api,
                         NULL), 2);
    assert_int_equal(run("revisions", "delete", "Bad!", "--service", "web",
                         api, NULL), 2);
    assert_int_equal(run("deploy", api, NULL), 2);
    assert_int_equal(run("deploy", "web", "--tag", "Green", api, NULL), 2);
    assert_contains(err_text, "--tag \"Green\"");
    assert_int_equal(run("deploy", "web", "--wait-timeout", "soon", api,
                         NULL), 2);
    assert_int_equal(run("deploy", "web", "--output", "json", api, NULL), 2);
    assert_int_equal(run("logs", "web", "--since", "5x", api, NULL), 2);
    assert_int_equal(run("logs", "web", "--limit", "0", api, NULL), 2);
    assert_int_equal(run("logs", "web", "-o", "yaml", api, NULL), 2);
    assert_int_equal(run("logs", api, NULL), 2);
    assert_int_equal(run("help", "deploy", NULL), 0);
    assert_contains(out_text, "--no-traffic");
    assert_contains(out_text, "--wait-timeout DUR");
    /* `services` is a verb and a kind: help shows both */
    assert_int_equal(run("help", "services", NULL), 0);
    assert_contains(out_text, "Usage: kiban services list|describe");
    assert_contains(out_text, "kind: Service");
}

/* ---- a fake admin API on loopback ----------------------------------------------------------- */

/*
 * Enough of the admin API contract for the CLI: a store of resources by
 * "collection/name", one item per list page (to exercise pagination),
 * validateOnly, 404/409, bearer token "t0ken".  Every request is logged as
 * "METHOD TARGET\n" in fake_log.
 */
typedef struct fake {
    int       fd;
    int       port;
    pthread_t thread;
    json_t   *store;
    json_t   *last_body;             /* the last request's JSON body */
    char      log[1 << 14];
    size_t    loglen;
    bool      stop;
} fake;

static fake F;

static void
fake_reply(int c, int code, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT);
    char head[256];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\nConnection: "
                     "close\r\n\r\n", code, strlen(s));

    if (write(c, head, (size_t)n) < 0 || write(c, s, strlen(s)) < 0) {
        /* the client went away */
    }
    free(s);
    json_decref(body);
}

static void
fake_error(int c, int code, const char *status, const char *msg)
{
    fake_reply(c, code, json_pack("{s:{s:i,s:s,s:s}}", "error", "code", code,
                                  "status", status, "message", msg));
}

/* A service's revisions: a new one when the template fields differ. */
static void
fake_revise(json_t *res, const json_t *old, const char *name)
{
    json_t *revs = json_deep_copy(json_object_get(old, "revisions"));
    bool same = old != NULL;

    if (revs == NULL)
        revs = json_array();
    for (const char *const *f = kb_cli__template_fields; *f != NULL; f++) {
        const json_t *a = json_object_get(res, *f), *b = json_object_get(old, *f);
        if ((a == NULL) != (b == NULL) || (a != NULL && !json_equal(a, b)))
            same = false;
    }
    if (!same) {
        char rn[128];
        snprintf(rn, sizeof(rn), "%s-%05zu-abc", name,
                 json_array_size(revs) + 1);
        json_array_append_new(revs, json_pack("{s:s}", "name", rn));
    }
    json_object_set_new(res, "revisions", revs);
    if (strcmp(name, "web") != 0)
        return;                       /* the apply/get tests' services */
    json_object_set_new(res, "status", json_pack("{s:s, s:[{s:s,s:i},"
        "{s:s,s:i,s:s,s:s}]}", "url", "http://web.localhost:8080",
        "traffic", "revisionName", "web-00001-abc", "percent", 90,
        "revisionName", "web-00002-abc", "percent", 10, "tag", "green",
        "url", "http://green---web.localhost:8080"));
}

/* Revisions, :updateTraffic and logs; true if the request was one. */
static bool
fake_release_flow(int c, const char *method, const char *target,
                  const json_t *spec)
{
    const char *r = strstr(target, "/revisions/");

    if (r != NULL && strcmp(method, "GET") == 0) {
        if (strstr(r, "-bad") != NULL)
            fake_reply(c, 200, json_pack("{s:s, s:{s:b, s:[{s:s,s:s,s:s,s:s}]}}",
                "revision", r + 11, "status", "ready", 0, "conditions",
                "type", "Ready", "status", "False", "reason", "CrashLoop",
                "message", "exited with status 3 five times"));
        else
            fake_reply(c, 200, json_pack("{s:s, s:{s:b}}", "revision", r + 11,
                                         "status", "ready", 1));
        return true;
    }
    if (r != NULL && strcmp(method, "DELETE") == 0) {
        fake_error(c, 400, "FAILED_PRECONDITION", "revision serves traffic");
        return true;
    }
    if (strstr(target, "/revisions") != NULL) {
        fake_reply(c, 200, json_pack("{s:[{s:s,s:s,s:{s:i,s:[s]},s:{s:b,s:i,"
            "s:i}},{s:s,s:s,s:{s:i}}]}", "revisions",
            "revision", "web-00002-abc", "createTime", "2001-01-01T00:00:00Z",
            "traffic", "percent", 10, "tags", "green",
            "status", "ready", 1, "readyInstances", 1, "desired", 1,
            "revision", "web-00001-abc", "createTime", "2001-01-01T00:00:00Z",
            "traffic", "percent", 90));
        return true;
    }
    if (strstr(target, ":updateTraffic") != NULL) {
        json_t *svc = json_pack("{s:s, s:[{s:s,s:i},{s:s,s:i,s:s}]}", "name",
            "projects/default/services/web", "traffic",
            "revisionName", "web-00001-abc", "percent", 90,
            "revisionName", "web-00002-abc", "percent", 10, "tag", "green");
        (void)spec;
        fake_reply(c, 200, svc);
        return true;
    }
    if (strstr(target, "/logs") != NULL) {
        if (strstr(target, "after=") != NULL) {     /* --follow: one more */
            if (strstr(target, "after=9") != NULL)
                kb_cli__interrupted = 1;            /* as SIGINT does */
            fake_reply(c, 200, json_pack("{s:[{s:i,s:s,s:s,s:s,s:s,s:s}], s:i}",
                "entries", "seq", 8, "time", "2001-01-01T00:00:02Z",
                "revision", "web-00001-abc", "instance", "2", "stream",
                "stdout", "text", "later", "nextSeq", 9));
            return true;
        }
        fake_reply(c, 200, json_pack("{s:[{s:i,s:s,s:s,s:s,s:s,s:s},"
            "{s:i,s:s,s:s,s:s,s:s,s:s}], s:i}", "entries",
            "seq", 6, "time", "2001-01-01T00:00:00Z", "revision",
            "web-00001-abc", "instance", "1", "stream", "stdout", "text",
            "started",
            "seq", 7, "time", "2001-01-01T00:00:01Z", "revision",
            "web-00001-abc", "instance", "1", "stream", "stderr", "text",
            "bad\x1b[31m", "nextSeq", 8));
        return true;
    }
    return false;
}

static void
fake_handle(int c)
{
    char req[1 << 16], method[16], target[1024], coll[64], name[64] = "";
    char key[160], id[64] = "";
    size_t len = 0;
    ssize_t n;
    char *end, *body, *q;
    long clen = 0;
    json_t *spec = NULL, *res;
    bool validate;

    while ((end = memmem(req, len, "\r\n\r\n", 4)) == NULL
           && (n = read(c, req + len, sizeof(req) - 1 - len)) > 0)
        len += (size_t)n;
    if (end == NULL)
        return;
    req[len] = '\0';
    if ((q = strcasestr(req, "\r\nContent-Length:")) != NULL)
        clen = strtol(q + 17, NULL, 10);
    body = end + 4;
    while ((long)(len - (size_t)(body - req)) < clen
           && (n = read(c, req + len, sizeof(req) - 1 - len)) > 0)
        len += (size_t)n;
    req[len] = '\0';
    if (sscanf(req, "%15s %1023s", method, target) != 2)
        return;
    F.loglen += (size_t)snprintf(F.log + F.loglen, sizeof(F.log) - F.loglen,
                                 "%s %s\n", method, target);
    if (strcmp(target, "/v1/version") == 0) {
        fake_reply(c, 200, json_pack("{s:s}", "version", "9.9.9"));
        return;
    }
    if (strstr(req, "\r\nAuthorization: Bearer t0ken\r\n") == NULL) {
        fake_error(c, 401, "UNAUTHENTICATED", "a valid token is required");
        return;
    }
    if (clen > 0)
        spec = json_loadb(body, (size_t)clen, 0, NULL);
    json_decref(F.last_body);
    F.last_body = json_incref(spec);
    if (fake_release_flow(c, method, target, spec)) {
        json_decref(spec);
        return;
    }
    validate = strstr(target, "validateOnly=true") != NULL;
    if ((q = strchr(target, '?')) != NULL)
        *q++ = '\0';
    if (sscanf(target, "/v1/projects/default/%63[a-z]/%63[a-z0-9-]", coll,
               name) < 1) {
        fake_error(c, 404, "NOT_FOUND", "no such route");
        json_decref(spec);
        return;
    }
    if (q != NULL && (q = strstr(q, "Id=")) != NULL)
        sscanf(q + 3, "%63[a-z0-9-]", id);
    snprintf(key, sizeof(key), "%s/%s", coll, name[0] ? name : id);
    res = json_object_get(F.store, key);

    if (strcmp(method, "GET") == 0 && name[0] == '\0') {
        /* one item per page; the token is the index of the next item */
        const char *tok = strstr(target + strlen(target) + 1, "pageToken=");
        long at = tok != NULL ? strtol(tok + 10, NULL, 10) : 0, i = 0;
        const char *k;
        json_t *v, *page = json_array(), *out;
        json_object_foreach(F.store, k, v) {
            if (strncmp(k, coll, strlen(coll)) == 0 && i++ == at)
                json_array_append(page, v);
        }
        out = json_pack("{s:o}", coll, page);
        if (at + 1 < i)
            json_object_set_new(out, "nextPageToken",
                                json_sprintf("%ld", at + 1));
        fake_reply(c, 200, out);
    } else if (strcmp(method, "GET") == 0) {
        if (res == NULL)
            fake_error(c, 404, "NOT_FOUND", "not found");
        else
            fake_reply(c, 200, json_incref(res));
    } else if (strcmp(method, "POST") == 0) {
        if (res != NULL) {
            fake_error(c, 409, "ALREADY_EXISTS", "exists");
        } else if (json_is_string(json_object_get(spec, "command"))
                   && strcmp(json_string_value(json_object_get(spec, "command")),
                             "invalid") == 0) {
            fake_error(c, 400, "INVALID_ARGUMENT",
                       "spec.command: not an executable");
        } else {
            res = json_deep_copy(spec);
            json_object_set_new(res, "name", json_sprintf(
                "projects/default/%s/%s", coll, id));
            json_object_set_new(res, "createTime",
                                json_string("2001-01-01T00:00:00Z"));
            json_object_set_new(res, "status", json_pack("{s:i}", "ready", 1));
            if (strcmp(coll, "services") == 0)
                fake_revise(res, NULL, id);
            if (!validate)
                json_object_set(F.store, key, res);
            fake_reply(c, 200, res);
        }
    } else if (strcmp(method, "PATCH") == 0) {
        if (res == NULL) {
            fake_error(c, 404, "NOT_FOUND", "not found");
        } else {
            json_t *nr = json_pack("{s:O,s:O}", "name",
                                   json_object_get(res, "name"), "createTime",
                                   json_object_get(res, "createTime"));
            json_object_update(nr, spec);
            if (strcmp(coll, "services") == 0)
                fake_revise(nr, res, name);
            if (!validate)
                json_object_set(F.store, key, nr);
            fake_reply(c, 200, nr);
        }
    } else if (strcmp(method, "DELETE") == 0) {
        if (res == NULL) {
            fake_error(c, 404, "NOT_FOUND", "service x not found");
        } else {
            json_object_del(F.store, key);
            fake_reply(c, 200, json_object());
        }
    }
    json_decref(spec);
}

static void *
fake_main(void *arg)
{
    for (;;) {
        int c = accept(F.fd, NULL, NULL);
        if (c < 0 || F.stop) {
            if (c >= 0)
                close(c);
            return NULL;
        }
        fake_handle(c);
        close(c);
    }
}

/* Listen on 127.0.0.1:0 (or just reserve a port and close it: refused). */
static int
loopback_listener(int *port)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int
fake_start(void **state)
{
    char api[64];

    memset(&F, 0, sizeof(F));
    F.fd = loopback_listener(&F.port);
    F.store = json_object();
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", F.port);
    setenv("KIBAN_API", api, 1);
    setenv("KIBAN_TOKEN", "t0ken", 1);
    return pthread_create(&F.thread, NULL, fake_main, NULL);
}

static int
fake_stop(void **state)
{
    int c, port = F.port;
    struct sockaddr_in a;

    F.stop = true;
    c = socket(AF_INET, SOCK_STREAM, 0);          /* wake accept() */
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c, (struct sockaddr *)&a, sizeof(a)) != 0) {
        /* accept() sees F.stop on its next wake-up either way */
    }
    pthread_join(F.thread, NULL);
    close(c);
    close(F.fd);
    json_decref(F.store);
    json_decref(F.last_body);
    unsetenv("KIBAN_API");
    unsetenv("KIBAN_TOKEN");
    return 0;
}

static void
log_reset(void)
{
    F.loglen = 0;
    F.log[0] = '\0';
}

static void
test_apply_against_fake_api(void **state)
{
    char dir[] = "/tmp/kb_test_cli_XXXXXX", path[256], bad[256];

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/app.yaml", dir);
    write_file(path, "kind: Service\nmetadata: {name: hello}\n"
                     "spec: {command: ./hello, instances: 2}\n---\n"
                     "kind: Gateway\nmetadata: {name: edge}\n"
                     "spec: {openapi: {openapi: 3.0.0}}\n");

    /* dry run: validated by the server, nothing stored */
    log_reset();
    assert_int_equal(run("apply", "-f", path, "--dry-run", NULL), 0);
    assert_string_equal(out_text, "service/hello created (dry run)\n"
                                  "gateway/edge created (dry run)\n");
    assert_string_equal(F.log,
        "GET /v1/projects/default/services/hello\n"
        "POST /v1/projects/default/services?serviceId=hello&validateOnly=true\n"
        "GET /v1/projects/default/gateways/edge\n"
        "POST /v1/projects/default/gateways?gatewayId=edge&validateOnly=true\n");
    assert_int_equal(json_object_size(F.store), 0);

    assert_int_equal(run("apply", "-f", path, NULL), 0);
    assert_string_equal(out_text, "service/hello created\ngateway/edge created\n");
    assert_int_equal(json_object_size(F.store), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(
                         F.store, "services/hello"), "instances")), 2);

    log_reset();
    assert_int_equal(run("apply", "-f", path, NULL), 0);
    assert_string_equal(out_text, "service/hello unchanged\n"
                                  "gateway/edge unchanged\n");
    assert_null(strstr(F.log, "POST"));
    assert_null(strstr(F.log, "PATCH"));

    write_file(path, "kind: Service\nmetadata: {name: hello}\n"
                     "spec: {command: ./hello, instances: 3}\n");
    log_reset();
    assert_int_equal(run("apply", "-f", path, "--dry-run", NULL), 0);
    assert_string_equal(out_text, "service/hello configured (dry run)\n");
    assert_contains(F.log, "PATCH /v1/projects/default/services/hello?"
                           "validateOnly=true\n");
    assert_int_equal(run("apply", "-f", path, NULL), 0);
    assert_string_equal(out_text, "service/hello configured\n");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(
                         F.store, "services/hello"), "instances")), 3);

    /* a manifest error: nothing is sent at all */
    snprintf(bad, sizeof(bad), "%s/bad.yaml", dir);
    write_file(bad, "kind: Service\nmetadata: {name: other}\n"
                    "spec:\n  command: ./x\n  instances: \"two\"\n");
    log_reset();
    assert_int_equal(run("apply", "-f", path, "-f", bad, NULL), 1);
    assert_string_equal(F.log, "");
    assert_string_equal(out_text, "");
    char want[512];
    snprintf(want, sizeof(want), "%s:5: spec.instances: must be an integer\n"
             "kiban: nothing applied (1 error)\n", bad);
    assert_string_equal(err_text, want);

    /* an API error stops after what was applied, exit 1 */
    write_file(bad, "kind: Service\nmetadata: {name: one}\nspec: {command: ./one}\n"
                    "---\nkind: Service\nmetadata: {name: two}\n"
                    "spec: {command: invalid}\n---\n"
                    "kind: Service\nmetadata: {name: three}\n"
                    "spec: {command: ./three}\n");
    assert_int_equal(run("apply", "-f", bad, NULL), 1);
    assert_string_equal(out_text, "service/one created\n");
    assert_contains(err_text, "kiban: spec.command: not an executable "
                              "(INVALID_ARGUMENT)\n");
    assert_null(json_object_get(F.store, "services/three"));

    unlink(bad);
    unlink(path);
    rmdir(dir);
}

static void
test_get_delete_version_against_fake_api(void **state)
{
    json_t *v;

    /* the store holds hello, edge, one (from the previous test) */
    log_reset();
    assert_int_equal(run("get", "services", NULL), 0);
    /* READY is "-" where the resource has no status (the fake's PATCH
     * drops it); INSTANCES is "-" where the spec leaves it out */
    char age[16], want[256];
    kb_cli__age("2001-01-01T00:00:00Z", time(NULL), age, sizeof(age));
    snprintf(want, sizeof(want), "NAME   INSTANCES  READY  COMMAND  AGE\n"
                                 "hello  3          -      ./hello  %s\n"
                                 "one    -          1      ./one    %s\n",
             age, age);
    assert_string_equal(out_text, want);
    /* one item per page: pagination was followed to the end */
    assert_contains(F.log, "GET /v1/projects/default/services?pageSize=100\n"
                           "GET /v1/projects/default/services?pageSize=100&"
                           "pageToken=1\n");

    assert_int_equal(run("get", "gateway", "-o", "json", NULL), 0);
    v = json_loads(out_text, 0, NULL);
    assert_non_null(v);
    assert_int_equal(json_array_size(json_object_get(v, "gateways")), 1);
    json_decref(v);

    assert_int_equal(run("get", "Service", "hello", "-o", "yaml", NULL), 0);
    assert_contains(out_text, "name: projects/default/services/hello\n");
    assert_contains(out_text, "instances: 3\n");

    assert_int_equal(run("get", "service", "nope", NULL), 1);
    assert_string_equal(err_text, "kiban: not found (NOT_FOUND)\n");

    assert_int_equal(run("delete", "service", "one", NULL), 0);
    assert_string_equal(out_text, "service/one deleted\n");
    assert_int_equal(run("delete", "service", "one", NULL), 1);
    assert_string_equal(err_text, "kiban: service x not found (NOT_FOUND)\n");

    /* no token: the server's message and a hint */
    unsetenv("KIBAN_TOKEN");
    assert_int_equal(run("get", "services", "--token-file", "/nonexistent",
                         NULL), 1);
    assert_contains(err_text, "cannot read the token file /nonexistent");
    assert_int_equal(run("get", "services", NULL), 1);
    assert_contains(err_text, "kiban: a valid token is required "
                              "(UNAUTHENTICATED)\n");
    setenv("KIBAN_TOKEN", "t0ken", 1);

    assert_int_equal(run("version", NULL), 0);
    assert_contains(out_text, "kiban ");
    assert_contains(out_text, "\nserver 9.9.9 (http://127.0.0.1:");
}

static void
test_release_flow_against_fake_api(void **state)
{
    json_t *web, *v;
    char age[16], want[1024];

    /* create: GET (404), POST, wait for the revision, read the URL */
    log_reset();
    assert_int_equal(run("deploy", "web", "--command", "./srv", "--arg", "-v",
                         "--env", "A=1", NULL), 0);
    assert_string_equal(out_text,
        "Service [web] revision [web-00001-abc] has been deployed and is "
        "serving 90 percent of traffic.\n"
        "Service URL: http://web.localhost:8080\n");
    assert_string_equal(F.log,
        "GET /v1/projects/default/services/web\n"
        "POST /v1/projects/default/services?serviceId=web\n"
        "GET /v1/projects/default/services/web/revisions/web-00001-abc\n"
        "GET /v1/projects/default/services/web\n");

    /* the same template again: no new revision, nothing to wait for */
    log_reset();
    assert_int_equal(run("deploy", "web", NULL), 0);
    assert_string_equal(out_text,
                        "No change: revision web-00001-abc is unchanged.\n");
    assert_null(strstr(F.log, "/revisions/"));

    /* an update: only the template fields, noTraffic and the tag */
    log_reset();
    assert_int_equal(run("deploy", "web", "--env", "B=2", "--no-traffic",
                         "--tag", "green", NULL), 0);
    assert_contains(F.log, "PATCH /v1/projects/default/services/web?updateMask="
        "command,args,env,workingDir,resources,concurrency,minInstances,"
        "maxInstances,instances,scaleDownDelay,timeout,startupProbe,"
        "readinessProbe,livenessProbe,terminationGracePeriod&noTraffic=true&"
        "tag=green\n");
    web = json_object_get(F.store, "services/web");
    assert_string_equal(json_string_value(json_object_get(json_object_get(
                            web, "env"), "B")), "2");
    assert_string_equal(json_string_value(json_object_get(json_object_get(
                            web, "env"), "A")), "1");
    assert_string_equal(json_string_value(json_array_get(json_object_get(
                            web, "args"), 0)), "-v");
    assert_string_equal(out_text,
        "Service [web] revision [web-00002-abc] has been deployed and is "
        "serving 10 percent of traffic.\n"
        "Service URL: http://web.localhost:8080\n"
        "The revision can be reached directly at "
        "http://green---web.localhost:8080\n");

    /* --no-wait: no polling */
    log_reset();
    assert_int_equal(run("deploy", "web", "--env", "C=3", "--no-wait", NULL), 0);
    assert_contains(out_text, "Service [web] revision [web-00003-abc] has been "
                              "created");
    assert_null(strstr(F.log, "/revisions/"));

    /* a revision that fails: its reason and message, exit 1 */
    assert_int_equal(run("deploy", "web-bad", "--command", "./x", NULL), 1);
    assert_contains(err_text, "kiban: revision [web-bad-00001-abc] failed: "
                              "CrashLoop: exited with status 3 five times\n");
    assert_string_equal(out_text, "");
    /* a new service needs --command */
    assert_int_equal(run("deploy", "nosuch", NULL), 2);
    assert_contains(err_text, "--command is required to create a service");

    /* describe: URL, the traffic table, pinned traffic, revisions */
    json_object_set_new(json_object_get(F.store, "services/web"), "traffic",
                        json_loads("[{\"revisionName\": \"web-00001-abc\", "
                                   "\"percent\": 100}]", 0, NULL));
    assert_int_equal(run("services", "describe", "web", NULL), 0);
    kb_cli__age("2001-01-01T00:00:00Z", time(NULL), age, sizeof(age));
    snprintf(want, sizeof(want),
        "Service web in project default\n"
        "URL:                      http://web.localhost:8080\n"
        "Latest created revision:  -\n"
        "Latest ready revision:    -\n"
        "Command:                  ./srv\n"
        "\n"
        "Traffic:\n"
        "  PERCENT  REVISION       TAG    URL\n"
        "  90%%      web-00001-abc  -      -\n"
        "  10%%      web-00002-abc  green  http://green---web.localhost:8080\n"
        "\n"
        "Traffic is pinned: new revisions get no traffic until `kiban services "
        "update-traffic web --to-latest`.\n"
        "\n"
        "Revisions:\n"
        "  REVISION       READY  INSTANCES  TRAFFIC  TAGS   AGE\n"
        "  web-00002-abc  true   1/1        10%%      green  %s\n"
        "  web-00001-abc  -      -          90%%      -      %s\n", age, age);
    assert_string_equal(out_text, want);
    assert_int_equal(run("services", "describe", "web", "-o", "json", NULL), 0);
    v = json_loads(out_text, 0, NULL);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "command")),
                        "./srv");
    json_decref(v);

    /* update-traffic: gcloud's flags as JSON; prints the new split */
    assert_int_equal(run("services", "update-traffic", "web", "--to-tags",
                         "green=10", NULL), 0);
    v = json_loads("{\"toTags\": {\"green\": 10}}", 0, NULL);
    assert_true(json_equal(F.last_body, v));
    json_decref(v);
    assert_contains(out_text, "  10%      web-00002-abc  green  -\n");
    assert_contains(out_text, "Traffic is pinned");

    assert_int_equal(run("services", "list", NULL), 0);
    assert_contains(out_text, "SERVICE  URL                        "
                              "LATEST READY  TRAFFIC\n");
    assert_contains(out_text, "web      http://web.localhost:8080  -  "
                              "           pinned\n");

    /* revisions */
    assert_int_equal(run("revisions", "list", "--service", "web", NULL), 0);
    assert_contains(out_text, "web-00002-abc  true   1/1        10%      "
                              "green");
    assert_int_equal(run("revisions", "describe", "web-00002-abc", "--service",
                         "web", NULL), 0);
    assert_contains(out_text, "revision: web-00002-abc\n");
    assert_int_equal(run("revisions", "delete", "web-00001-abc", "--service",
                         "web", NULL), 1);
    assert_string_equal(err_text, "kiban: revision serves traffic "
                                  "(FAILED_PRECONDITION)\n");

    /* logs: one line per entry, control characters shown as ? */
    log_reset();
    assert_int_equal(run("logs", "web", "--since", "5m", "--limit", "10",
                         "--revision", "web-00001-abc", NULL), 0);
    assert_string_equal(F.log, "GET /v1/projects/default/services/web/logs?"
                        "revision=web-00001-abc&since=5m&limit=10\n");
    assert_string_equal(out_text,
        "2001-01-01T00:00:00Z web-00001-abc/1 started\n"
        "2001-01-01T00:00:01Z web-00001-abc/1:stderr bad?[31m\n");
    /* --follow: long polls after the last entry until interrupted (exit
     * 0); only --revision carries over */
    log_reset();
    assert_int_equal(run("logs", "web", "--follow", "--limit", "10",
                         "--revision", "web-00001-abc", NULL), 0);
    assert_string_equal(F.log,
        "GET /v1/projects/default/services/web/logs?revision=web-00001-abc&"
        "limit=10\n"
        "GET /v1/projects/default/services/web/logs?after=8&wait=30s&"
        "revision=web-00001-abc\n"
        "GET /v1/projects/default/services/web/logs?after=9&wait=30s&"
        "revision=web-00001-abc\n");
    assert_contains(out_text, "bad?[31m\n"
                              "2001-01-01T00:00:02Z web-00001-abc/2 later\n");
    assert_int_equal(kb_cli__interrupted, 0);
    assert_int_equal(run("logs", "web", "-o", "json", NULL), 0);
    v = json_loadb(out_text, strcspn(out_text, "\n"), 0, NULL);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "text")),
                        "started");
    json_decref(v);

    assert_int_equal(run("services", "delete", "web", NULL), 0);
    assert_string_equal(out_text, "Service [web] deleted.\n");
    assert_int_equal(run("services", "delete", "web", NULL), 1);
}

static void
test_unreachable_api(void **state)
{
    char api[64];
    int port, fd = loopback_listener(&port);

    close(fd);                     /* nothing listens there any more */
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", port);
    assert_int_equal(run("get", "services", "--api", api, NULL), 1);
    char want[128];
    snprintf(want, sizeof(want), "kiban: cannot reach the kiban API at %s: ",
             api);
    assert_int_equal(strncmp(err_text, want, strlen(want)), 0);
    /* version still works, with the client line only */
    assert_int_equal(run("version", "--api", api, NULL), 0);
    assert_int_equal(strncmp(out_text, "kiban ", 6), 0);
    assert_null(strstr(out_text, "server"));
    assert_string_equal(err_text, "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_flags),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_help_lists_the_table),
        cmocka_unit_test(test_help_verb_and_kind),
        cmocka_unit_test(test_usage_errors_exit_2),
        cmocka_unit_test(test_manifest_good),
        cmocka_unit_test(test_manifest_errors),
        cmocka_unit_test(test_manifest_every_document_is_checked),
        cmocka_unit_test(test_manifest_openapi_file),
        cmocka_unit_test(test_spec_diff),
        cmocka_unit_test(test_age),
        cmocka_unit_test(test_unreachable_api),
        cmocka_unit_test(test_deploy_template),
        cmocka_unit_test(test_traffic_flags),
        cmocka_unit_test(test_durations_and_numbers),
        cmocka_unit_test(test_revision_percent),
        cmocka_unit_test(test_release_flow_usage_errors),
    };
    const struct CMUnitTest api_tests[] = {
        cmocka_unit_test(test_apply_against_fake_api),
        cmocka_unit_test(test_get_delete_version_against_fake_api),
        cmocka_unit_test(test_release_flow_against_fake_api),
    };
    int failed;

    unsetenv("KIBAN_API");
    unsetenv("KIBAN_TOKEN");
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("fake_api", api_tests, fake_start,
                                          fake_stop);
    return failed;
}
