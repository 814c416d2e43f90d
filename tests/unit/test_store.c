/*
 * test_store.c - the store against real SQLite files in fresh temp dirs:
 * CRUD and versions, put modes, idempotent create, pagination, reopening,
 * migrations, group commit, limits, file mode, and durability across
 * kill -9 of a process that is busy writing.
 *
 * Includes sqlite.c to check the connection's pragmas directly.
 */
#include "store/sqlite.c"

#include "core/err.h"
#include "core/metrics.h"
#include "store/backend.h"
#include "store/store.h"

#include <ftw.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

typedef struct t_env {
    char      dir[64];
    char      db[128];
    uv_loop_t loop;
    kb_store *s;
} t_env;

/* What a resource callback saw. */
typedef struct t_res {
    int     called;
    int     err;
    int64_t version, ctime, utime;
    json_t *doc;
    char    parent[128];
    char    name[128];
} t_res;

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    t_env *e = calloc(1, sizeof(*e));

    assert_non_null(e);
    snprintf(e->dir, sizeof(e->dir), "/tmp/kb-store-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->db, sizeof(e->db), "%s/kiban.db", e->dir);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    *state = e;
    return 0;
}

static void
on_closed(void *data)
{
    (*(int *)data)++;
}

static void
store_close(t_env *e)
{
    int closed = 0;

    kb_store_close(e->s, on_closed, &closed);
    /* The loop must end by itself: the store's handle is closed. */
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    e->s = NULL;
}

static int
teardown(void **state)
{
    t_env *e = *state;

    if (e->s != NULL)
        store_close(e);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    nftw(e->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static void
store_open(t_env *e)
{
    assert_int_equal(kb_store_open(&e->loop, e->db, &e->s), 0);
    assert_non_null(e->s);
}

static void
res_cb(int err, const kb_resource *r, void *data)
{
    t_res *c = data;

    c->called++;
    c->err = err;
    if (err != 0) {
        assert_null(r);
        return;
    }
    assert_non_null(r);
    c->version = r->version;
    c->ctime = r->create_time_ns;
    c->utime = r->update_time_ns;
    snprintf(c->parent, sizeof(c->parent), "%s", r->parent);
    snprintf(c->name, sizeof(c->name), "%s", r->name);
    json_decref(c->doc);
    c->doc = json_incref(r->doc);
}

static void
res_reset(t_res *c)
{
    json_decref(c->doc);
    memset(c, 0, sizeof(*c));
}

static void
wait_for(t_env *e, const int *called, int n)
{
    while (*called < n)
        uv_run(&e->loop, UV_RUN_ONCE);
    assert_int_equal(*called, n);
}

/* Put and wait.  Returns the call's error or the callback's. */
static int
do_put(t_env *e, const char *kind, const char *parent, const char *name,
       json_t *doc, kb_put_mode mode, int64_t expect, const char *rid,
       t_res *out)
{
    kb_put_opts o = { mode, expect, rid };
    int rc;

    res_reset(out);
    rc = kb_store_put(e->s, kind, parent, name, doc, &o, res_cb, out);
    json_decref(doc);
    if (rc != 0)
        return rc;
    wait_for(e, &out->called, 1);
    return out->err;
}

static int
do_get(t_env *e, const char *kind, const char *parent, const char *name,
       t_res *out)
{
    int rc;

    res_reset(out);
    if ((rc = kb_store_get(e->s, kind, parent, name, res_cb, out)) != 0)
        return rc;
    wait_for(e, &out->called, 1);
    return out->err;
}

static int
do_del(t_env *e, const char *kind, const char *parent, const char *name,
       int64_t expect, t_res *out)
{
    int rc;

    res_reset(out);
    rc = kb_store_delete(e->s, kind, parent, name, expect, res_cb, out);
    if (rc != 0)
        return rc;
    wait_for(e, &out->called, 1);
    return out->err;
}

static json_int_t
doc_int(const t_res *r, const char *key)
{
    assert_non_null(r->doc);
    return json_integer_value(json_object_get(r->doc, key));
}

/* ---- CRUD ----------------------------------------------------------- */

static void
test_crud_versions(void **state)
{
    t_env *e = *state;
    int64_t before = kb_time_unix_ns(), ctime;
    t_res r = { 0 };

    store_open(e);
    assert_int_equal(do_put(e, "services", "projects/p", "a",
                            json_pack("{s:i}", "n", 1), KB_PUT_CREATE, 0,
                            NULL, &r), 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.ctime, r.utime);
    assert_true(r.ctime >= before && r.ctime <= kb_time_unix_ns());
    assert_string_equal(r.parent, "projects/p");
    assert_string_equal(r.name, "a");
    ctime = r.ctime;

    assert_int_equal(do_get(e, "services", "projects/p", "a", &r), 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(doc_int(&r, "n"), 1);

    assert_int_equal(do_put(e, "services", "projects/p", "a",
                            json_pack("{s:i}", "n", 2), KB_PUT_UPDATE, 0,
                            NULL, &r), 0);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.ctime, ctime);
    assert_true(r.utime >= ctime);
    assert_int_equal(do_put(e, "services", "projects/p", "a",
                            json_pack("{s:i}", "n", 3), KB_PUT_UPSERT, 0,
                            NULL, &r), 0);
    assert_int_equal(r.version, 3);

    assert_int_equal(do_get(e, "services", "projects/p", "a", &r), 0);
    assert_int_equal(r.version, 3);
    assert_int_equal(r.ctime, ctime);
    assert_int_equal(doc_int(&r, "n"), 3);
    /* Same name, other kind or parent: other resources. */
    assert_int_equal(do_get(e, "topics", "projects/p", "a", &r),
                     KB_ENOTFOUND);
    assert_int_equal(do_get(e, "services", "projects/q", "a", &r),
                     KB_ENOTFOUND);

    assert_int_equal(do_del(e, "services", "projects/p", "a", 0, &r), 0);
    assert_int_equal(r.version, 3);
    assert_int_equal(doc_int(&r, "n"), 3);
    assert_int_equal(do_get(e, "services", "projects/p", "a", &r),
                     KB_ENOTFOUND);
    assert_int_equal(do_del(e, "services", "projects/p", "a", 0, &r),
                     KB_ENOTFOUND);

    /* UPSERT of a missing one creates it at version 1; NULL parent = "". */
    assert_int_equal(do_put(e, "projects", NULL, "p", json_string("x"),
                            KB_PUT_UPSERT, 0, NULL, &r), 0);
    assert_int_equal(r.version, 1);
    assert_string_equal(r.parent, "");
    assert_int_equal(do_get(e, "projects", "", "p", &r), 0);
    assert_string_equal(json_string_value(r.doc), "x");
    res_reset(&r);
}

static void
test_create_existing_eexist(void **state)
{
    t_env *e = *state;
    t_res r = { 0 };

    store_open(e);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 1),
                            KB_PUT_CREATE, 0, NULL, &r), 0);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 2),
                            KB_PUT_CREATE, 0, NULL, &r), KB_EEXIST);
    assert_int_equal(r.called, 1);
    assert_int_equal(do_get(e, "k", "p", "a", &r), 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(doc_int(&r, "n"), 1);
    res_reset(&r);
}

static void
test_update_missing_enotfound(void **state)
{
    t_env *e = *state;
    t_res r = { 0 };

    store_open(e);
    assert_int_equal(do_put(e, "k", "p", "a", json_object(), KB_PUT_UPDATE,
                            0, NULL, &r), KB_ENOTFOUND);
    assert_int_equal(do_get(e, "k", "p", "a", &r), KB_ENOTFOUND);
    res_reset(&r);
}

static void
test_expect_version_conflict(void **state)
{
    t_env *e = *state;
    t_res r = { 0 };

    store_open(e);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 1),
                            KB_PUT_CREATE, 0, NULL, &r), 0);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 2),
                            KB_PUT_UPDATE, 2, NULL, &r), KB_ECONFLICT);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 2),
                            KB_PUT_UPSERT, 7, NULL, &r), KB_ECONFLICT);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 2),
                            KB_PUT_UPDATE, 1, NULL, &r), 0);
    assert_int_equal(r.version, 2);
    /* Expecting a version of something that does not exist. */
    assert_int_equal(do_put(e, "k", "p", "b", json_object(), KB_PUT_UPSERT,
                            1, NULL, &r), KB_ECONFLICT);
    assert_int_equal(do_del(e, "k", "p", "a", 1, &r), KB_ECONFLICT);
    assert_int_equal(do_get(e, "k", "p", "a", &r), 0);
    assert_int_equal(r.version, 2);
    assert_int_equal(doc_int(&r, "n"), 2);
    assert_int_equal(do_del(e, "k", "p", "a", 2, &r), 0);
    assert_int_equal(r.version, 2);
    res_reset(&r);
}

static void
test_request_id_idempotent_create(void **state)
{
    t_env *e = *state;
    t_res r = { 0 };
    int64_t ctime;

    store_open(e);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 1),
                            KB_PUT_CREATE, 0, "req-1", &r), 0);
    assert_int_equal(r.version, 1);
    ctime = r.ctime;
    /* The retry of the same create: the resource as it was, no write. */
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:i}", "n", 99),
                            KB_PUT_CREATE, 0, "req-1", &r), 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.ctime, ctime);
    assert_int_equal(doc_int(&r, "n"), 1);
    /* Another request id, or none, is a real conflict. */
    assert_int_equal(do_put(e, "k", "p", "a", json_object(), KB_PUT_CREATE, 0,
                            "req-2", &r), KB_EEXIST);
    assert_int_equal(do_put(e, "k", "p", "a", json_object(), KB_PUT_CREATE, 0,
                            NULL, &r), KB_EEXIST);
    /* A different resource created by another request keeps its own id. */
    assert_int_equal(do_put(e, "k", "p", "b", json_object(), KB_PUT_CREATE, 0,
                            "req-2", &r), 0);
    assert_int_equal(do_put(e, "k", "p", "b", json_object(), KB_PUT_CREATE, 0,
                            "req-1", &r), KB_EEXIST);
    assert_int_equal(do_get(e, "k", "p", "a", &r), 0);
    assert_int_equal(r.version, 1);
    res_reset(&r);
}

/* ---- lists ---------------------------------------------------------- */

typedef struct t_page {
    int    called;
    int    err;
    size_t n;
    char   names[1000][48];
    char   parents[1000][32];
    char  *next;
} t_page;

static void
page_cb(int err, const kb_store_page *p, void *data)
{
    t_page *c = data;

    c->called++;
    c->err = err;
    free(c->next);
    c->next = NULL;
    c->n = 0;
    if (err != 0) {
        assert_null(p);
        return;
    }
    assert_true(p->n <= 1000);
    for (size_t i = 0; i < p->n; i++) {
        assert_true(p->items[i].version >= 1);
        assert_non_null(p->items[i].doc);
        snprintf(c->names[i], sizeof(c->names[i]), "%s", p->items[i].name);
        snprintf(c->parents[i], sizeof(c->parents[i]), "%s",
                 p->items[i].parent);
    }
    c->n = p->n;
    if (p->next_token != NULL)
        c->next = strdup(p->next_token);
}

static int
do_list(t_env *e, const char *kind, const char *parent, size_t size,
        const char *token, t_page *out)
{
    int rc;

    out->called = 0;
    rc = kb_store_list(e->s, kind, parent, size, token, page_cb, out);
    if (rc != 0)
        return rc;
    wait_for(e, &out->called, 1);
    return out->err;
}

static void
put_many(t_env *e, const char *kind, const char *parent, int n,
         const char *fmt)
{
    t_res r = { 0 };
    char name[48];

    for (int i = 0; i < n; i++) {
        /* Written out of order: the list must sort. */
        int k = (i * 37) % n;

        snprintf(name, sizeof(name), fmt, k);
        assert_int_equal(do_put(e, kind, parent, name,
                                json_pack("{s:i}", "k", k), KB_PUT_CREATE, 0,
                                NULL, &r), 0);
    }
    res_reset(&r);
}

static void
test_list_pagination(void **state)
{
    t_env *e = *state;
    t_page *pg = calloc(1, sizeof(*pg));
    char *token = NULL, want[48];
    int seen = 0, pages = 0;

    assert_non_null(pg);
    store_open(e);
    put_many(e, "items", "projects/p", 120, "item-%03d");  /* 120 ⊥ 37 */
    put_many(e, "items", "projects/q", 5, "other-%d");
    put_many(e, "things", "projects/p", 5, "thing-%d");

    do {
        assert_int_equal(do_list(e, "items", "projects/p", 50, token, pg), 0);
        pages++;
        for (size_t i = 0; i < pg->n; i++, seen++) {
            snprintf(want, sizeof(want), "item-%03d", seen);
            assert_string_equal(pg->names[i], want);
            assert_string_equal(pg->parents[i], "projects/p");
        }
        assert_int_equal(pg->n, pages < 3 ? 50 : 20);
        free(token);
        token = pg->next;
        pg->next = NULL;
    } while (token != NULL && pages < 10);
    assert_int_equal(pages, 3);
    assert_int_equal(seen, 120);

    /* page_size 0 means 50; more than 1000 is capped. */
    assert_int_equal(do_list(e, "items", "projects/p", 0, NULL, pg), 0);
    assert_int_equal(pg->n, 50);
    assert_non_null(pg->next);
    assert_int_equal(do_list(e, "items", "projects/p", 5000, "", pg), 0);
    assert_int_equal(pg->n, 120);
    assert_null(pg->next);
    assert_int_equal(do_list(e, "nothing", "projects/p", 10, NULL, pg), 0);
    assert_int_equal(pg->n, 0);
    assert_null(pg->next);
    free(pg->next);
    free(pg);
}

static void
test_list_bad_token(void **state)
{
    static const char *const bad[] = {
        "garbage!!", "AAAA", "A", "' OR 1=1 --", "AQ", "%00",
        "bm90IGEgdG9rZW4",              /* base64url of "not a token" */
    };
    t_env *e = *state;
    t_page *pg = calloc(1, sizeof(*pg));
    char *token, *huge;

    assert_non_null(pg);
    store_open(e);
    put_many(e, "items", "projects/p", 3, "i%d");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kb_store_list(e->s, "items", "projects/p", 1, bad[i],
                                       page_cb, pg), KB_EINVAL);
    huge = malloc(10001);
    assert_non_null(huge);
    memset(huge, 'A', 10000);
    huge[10000] = '\0';
    assert_int_equal(kb_store_list(e->s, "items", "projects/p", 1, huge,
                                   page_cb, pg), KB_EINVAL);
    free(huge);
    assert_int_equal(pg->called, 0);    /* an error never calls back */

    /* A real token works only for the listing that made it. */
    assert_int_equal(do_list(e, "items", "projects/p", 1, NULL, pg), 0);
    assert_non_null(pg->next);
    token = pg->next;
    pg->next = NULL;
    assert_int_equal(kb_store_list(e->s, "things", "projects/p", 1, token,
                                   page_cb, pg), KB_EINVAL);
    assert_int_equal(kb_store_list(e->s, "items", "projects/q", 1, token,
                                   page_cb, pg), KB_EINVAL);
    assert_int_equal(kb_store_list(e->s, "items", NULL, 1, token,
                                   page_cb, pg), KB_EINVAL);
    /* One character changed: still refused, never "some other page". */
    token[strlen(token) - 1] = token[strlen(token) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(kb_store_list(e->s, "items", "projects/p", 1, token,
                                   page_cb, pg), KB_EINVAL);
    token[strlen(token) - 1] = '\0';
    assert_int_equal(kb_store_list(e->s, "items", "projects/p", 1, token,
                                   page_cb, pg), KB_EINVAL);
    free(token);
    free(pg->next);
    free(pg);
}

static void
test_list_parent_null(void **state)
{
    static const char *const want[][2] = {
        { "", "top" }, { "projects/a", "x" }, { "projects/a", "y" },
        { "projects/b", "a" }, { "projects/b", "z" },
    };
    t_env *e = *state;
    t_page *pg = calloc(1, sizeof(*pg));
    char *token = NULL;
    size_t seen = 0;
    t_res r = { 0 };

    assert_non_null(pg);
    store_open(e);
    for (int i = 4; i >= 0; i--)
        assert_int_equal(do_put(e, "svc", want[i][0], want[i][1],
                                json_object(), KB_PUT_CREATE, 0, NULL, &r), 0);
    assert_int_equal(do_put(e, "other", "projects/a", "q", json_object(),
                            KB_PUT_CREATE, 0, NULL, &r), 0);
    res_reset(&r);

    /* Across parents, two at a time: ordered by parent, then name. */
    do {
        assert_int_equal(do_list(e, "svc", NULL, 2, token, pg), 0);
        for (size_t i = 0; i < pg->n; i++, seen++) {
            assert_true(seen < 5);
            assert_string_equal(pg->parents[i], want[seen][0]);
            assert_string_equal(pg->names[i], want[seen][1]);
        }
        free(token);
        token = pg->next;
        pg->next = NULL;
    } while (token != NULL);
    assert_int_equal(seen, 5);

    /* "" is the top level only. */
    assert_int_equal(do_list(e, "svc", "", 10, NULL, pg), 0);
    assert_int_equal(pg->n, 1);
    assert_string_equal(pg->names[0], "top");
    assert_int_equal(do_list(e, "svc", "projects/b", 10, NULL, pg), 0);
    assert_int_equal(pg->n, 2);
    free(pg);
}

/* ---- persistence and schema ----------------------------------------- */

static void
test_reopen_persistence(void **state)
{
    t_env *e = *state;
    t_res r = { 0 };

    store_open(e);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:s}", "v", "one"),
                            KB_PUT_CREATE, 0, NULL, &r), 0);
    assert_int_equal(do_put(e, "k", "p", "a", json_pack("{s:s}", "v", "two"),
                            KB_PUT_UPDATE, 0, NULL, &r), 0);
    assert_int_equal(do_put(e, "k", "p", "gone", json_object(),
                            KB_PUT_CREATE, 0, NULL, &r), 0);
    assert_int_equal(do_del(e, "k", "p", "gone", 0, &r), 0);
    store_close(e);

    store_open(e);
    assert_int_equal(do_get(e, "k", "p", "a", &r), 0);
    assert_int_equal(r.version, 2);
    assert_string_equal(json_string_value(json_object_get(r.doc, "v")), "two");
    assert_int_equal(do_get(e, "k", "p", "gone", &r), KB_ENOTFOUND);
    res_reset(&r);
}

static sqlite3 *
raw_open(t_env *e)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open_v2(e->db, &db, SQLITE_OPEN_READWRITE,
                                     NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t
raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v;

    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void
test_migrations_recorded(void **state)
{
    t_env *e = *state;
    sqlite3 *db;

    store_open(e);
    store_close(e);
    db = raw_open(e);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_version"),
                     (int64_t)kb__store_sqlite_nmigrations);
    assert_int_equal(raw_int(db, "SELECT max(version) FROM schema_version"),
                     (int64_t)kb__store_sqlite_nmigrations);
    assert_true(raw_int(db, "SELECT min(applied_at) FROM schema_version") > 0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema"
                                 " WHERE name = 'resources'"), 1);
    sqlite3_close(db);

    /* Opening again applies nothing twice. */
    store_open(e);
    store_close(e);
    db = raw_open(e);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_version"),
                     (int64_t)kb__store_sqlite_nmigrations);
    sqlite3_close(db);
}

static void
test_newer_schema_refused(void **state)
{
    t_env *e = *state;
    kb_store *s = (kb_store *)&s;    /* must be reset to NULL */
    char sql[160];
    sqlite3 *db;

    store_open(e);
    store_close(e);
    db = raw_open(e);
    snprintf(sql, sizeof(sql), "INSERT INTO schema_version VALUES"
             " (%zu, 'from the future', 1)", kb__store_sqlite_nmigrations + 1);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    assert_int_equal(kb_store_open(&e->loop, e->db, &s), KB_EINVAL);
    assert_null(s);
    /* Refused without touching it. */
    db = raw_open(e);
    assert_int_equal(raw_int(db, "SELECT max(version) FROM schema_version"),
                     (int64_t)kb__store_sqlite_nmigrations + 1);
    sqlite3_close(db);
}

static void
test_connection_settings(void **state)
{
    t_env *e = *state;
    sq_conn *c = NULL;

    assert_int_equal(kb__store_sqlite_backend.open(e->db, (void **)&c), 0);
    assert_non_null(c);
    /* Durability claims rest on these: FULL, not NORMAL. */
    assert_int_equal(raw_int(c->db, "PRAGMA synchronous"), 2);
    assert_int_equal(raw_int(c->db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(raw_int(c->db, "PRAGMA busy_timeout"), 5000);
    kb__store_sqlite_backend.close(c);
    /* WAL is a property of the file. */
    {
        sqlite3 *db = raw_open(e);
        sqlite3_stmt *st;

        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1,
                                            &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
}

static void
test_file_mode_0600(void **state)
{
    t_env *e = *state;
    mode_t old = umask(022);
    char wal[160];
    struct stat st;
    t_res r = { 0 };

    store_open(e);
    umask(old);
    assert_int_equal(stat(e->db, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(do_put(e, "k", "p", "a", json_object(), KB_PUT_CREATE,
                            0, NULL, &r), 0);
    snprintf(wal, sizeof(wal), "%s-wal", e->db);
    assert_int_equal(stat(wal, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    res_reset(&r);
}

/* ---- group commit and the queue ------------------------------------- */

typedef struct t_order {
    int  called;
    int  bad_order;
    int  errs[2100];
} t_order;

typedef struct t_slot {
    t_order *o;
    int      index;
} t_slot;

static void
order_cb(int err, const kb_resource *r, void *data)
{
    t_slot *sl = data;

    (void)r;
    if (sl->index != sl->o->called)
        sl->o->bad_order++;
    sl->o->errs[sl->index] = err;
    sl->o->called++;
}

static void
test_group_commit(void **state)
{
    enum { N = 2000 };
    t_env *e = *state;
    kb_counter *commits = kb_counter_get("kb_store_commits_total",
        "Store write transactions committed", NULL);
    t_order *o = calloc(1, sizeof(*o));
    t_slot *slots = calloc(N + 8, sizeof(*slots));
    t_page *pg = calloc(1, sizeof(*pg));
    kb_put_opts create = { KB_PUT_CREATE, 0, NULL };
    kb_put_opts update = { KB_PUT_UPDATE, 0, NULL };
    uint64_t c0;
    sqlite3 *db;
    char name[32];
    t_res got = { 0 };
    json_t *pg_doc = json_object();
    int k = 0;

    assert_non_null(o);
    assert_non_null(slots);
    assert_non_null(pg);
    store_open(e);
    /* Hold the write lock from another connection, so everything below
     * queues up while the store thread waits on its busy timeout. */
    db = raw_open(e);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    c0 = kb_counter_value(commits);

    for (int i = 0; i < N; i++) {
        json_t *doc = json_pack("{s:i}", "i", i);

        snprintf(name, sizeof(name), "n%05d", i);
        slots[k] = (t_slot){ o, k };
        assert_int_equal(kb_store_put(e->s, "k", "p", name, doc, &create,
                                      order_cb, &slots[k]), 0);
        k++;
        json_decref(doc);
        if (i != 10)
            continue;
        /* Failing ops inside the batch fail alone (slots 11 and 12)... */
        slots[k] = (t_slot){ o, k };
        assert_int_equal(kb_store_put(e->s, "k", "p", "n00003", pg_doc,
                                      &create, order_cb, &slots[k]), 0);
        k++;
        slots[k] = (t_slot){ o, k };
        assert_int_equal(kb_store_put(e->s, "k", "p", "missing", pg_doc,
                                      &update, order_cb, &slots[k]), 0);
        k++;
        /* ...and a read sees the writes queued before it. */
        assert_int_equal(kb_store_get(e->s, "k", "p", "n00010", res_cb, &got),
                         0);
    }
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    wait_for(e, &o->called, k);
    assert_int_equal(o->bad_order, 0);
    for (int i = 0; i < k; i++) {
        if (i == 11)
            assert_int_equal(o->errs[i], KB_EEXIST);
        else if (i == 12)
            assert_int_equal(o->errs[i], KB_ENOTFOUND);
        else
            assert_int_equal(o->errs[i], 0);
    }
    assert_int_equal(got.called, 1);
    assert_int_equal(got.err, 0);
    assert_int_equal(doc_int(&got, "i"), 10);
    /* 2000 writes, a handful of fsyncs. */
    assert_true(kb_counter_value(commits) - c0 <= 8);

    store_close(e);
    store_open(e);
    assert_int_equal(do_list(e, "k", "p", 1000, NULL, pg), 0);
    assert_int_equal(pg->n, 1000);
    assert_non_null(pg->next);
    {
        char *token = pg->next;

        pg->next = NULL;
        assert_int_equal(do_list(e, "k", "p", 1000, token, pg), 0);
        free(token);
    }
    assert_int_equal(pg->n, 1000);
    assert_null(pg->next);
    assert_string_equal(pg->names[999], "n01999");
    res_reset(&got);
    json_decref(pg_doc);
    free(pg);
    free(slots);
    free(o);
}

static void
test_busy_locked_out(void **state)
{
    t_env *e = *state;
    uint64_t t0 = kb_time_mono_ms();
    t_res w = { 0 }, rd = { 0 };
    json_t *doc = json_object();
    sqlite3 *db;

    store_open(e);
    assert_int_equal(kb_store_put_sync(e->s, "k", "p", "a", doc, NULL, NULL,
                                       NULL), 0);
    /* Another process holds the write lock past the busy timeout. */
    db = raw_open(e);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(kb_store_put(e->s, "k", "p", "b", doc, NULL, res_cb, &w),
                     0);
    assert_int_equal(kb_store_get(e->s, "k", "p", "a", res_cb, &rd), 0);
    while (w.called + rd.called < 2)
        uv_run(&e->loop, UV_RUN_ONCE);
    assert_int_equal(w.err, KB_EBUSY);
    assert_int_equal(rd.err, 0);        /* readers are not locked out */
    assert_true(kb_time_mono_ms() - t0 >= 5000);
    /* Lock released: writes go through again. */
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(do_put(e, "k", "p", "b", json_incref(doc), KB_PUT_CREATE,
                            0, NULL, &w), 0);
    json_decref(doc);
    res_reset(&w);
    res_reset(&rd);
}

static void
test_queue_bound(void **state)
{
    t_env *e = *state;
    t_res r[4] = { { 0 } };
    json_t *doc = json_object();
    int called = 0;

    store_open(e);
    kb__store_set_max_pending(e->s, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kb_store_put(e->s, "k", "p", "a", doc, NULL, res_cb,
                                      &r[i]), 0);
    assert_int_equal(kb_store_put(e->s, "k", "p", "a", doc, NULL, res_cb,
                                  &r[3]), KB_EBUSY);
    while (r[0].called + r[1].called + r[2].called < 3)
        uv_run(&e->loop, UV_RUN_ONCE);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].err, 0);
        assert_int_equal(r[i].version, i + 1);
        called += r[i].called;
    }
    assert_int_equal(called, 3);
    assert_int_equal(r[3].called, 0);
    /* Delivered callbacks free their slots. */
    assert_int_equal(do_put(e, "k", "p", "a", json_incref(doc), KB_PUT_UPDATE,
                            3, NULL, &r[3]), 0);
    assert_int_equal(r[3].version, 4);
    json_decref(doc);
    for (int i = 0; i < 4; i++)
        res_reset(&r[i]);
}

static void
test_doc_too_large(void **state)
{
    t_env *e = *state;
    size_t big = (4u << 20);        /* + quotes: one past the limit */
    char *text = malloc(big + 1);
    json_t *doc;
    t_res r = { 0 };

    assert_non_null(text);
    store_open(e);
    memset(text, 'x', big);
    text[big] = '\0';
    doc = json_string(text);
    assert_int_equal(kb_store_put(e->s, "k", "p", "a", doc, NULL, res_cb, &r),
                     KB_ETOOBIG);
    json_decref(doc);
    /* Exactly at the limit is fine, and comes back whole. */
    text[big - 2] = '\0';
    assert_int_equal(do_put(e, "k", "p", "a", json_string(text),
                            KB_PUT_CREATE, 0, NULL, &r), 0);
    assert_int_equal(do_get(e, "k", "p", "a", &r), 0);
    assert_int_equal(strlen(json_string_value(r.doc)), big - 2);
    res_reset(&r);
    free(text);
}

/* ---- sync calls, close, arguments ----------------------------------- */

static void
test_sync_before_run(void **state)
{
    t_env *e = *state;
    kb_put_opts create = { KB_PUT_CREATE, 0, NULL };
    json_t *doc = json_pack("{s:s}", "boot", "yes");
    t_page *pg = calloc(1, sizeof(*pg));
    t_res r = { 0 };

    assert_non_null(pg);
    store_open(e);                      /* the loop has never run */
    assert_int_equal(kb_store_put_sync(e->s, "k", "p", "a", doc, &create,
                                       res_cb, &r), 0);
    assert_int_equal(r.called, 1);
    assert_int_equal(r.version, 1);
    assert_int_equal(kb_store_put_sync(e->s, "k", "p", "a", doc, &create,
                                       res_cb, &r), KB_EEXIST);
    assert_int_equal(r.called, 1);      /* an error never calls back */
    res_reset(&r);
    assert_int_equal(kb_store_get_sync(e->s, "k", "p", "a", res_cb, &r), 0);
    assert_int_equal(r.called, 1);
    assert_string_equal(json_string_value(json_object_get(r.doc, "boot")),
                        "yes");
    assert_int_equal(kb_store_list_sync(e->s, "k", "p", 0, NULL, page_cb, pg),
                     0);
    assert_int_equal(pg->called, 1);
    assert_int_equal(pg->n, 1);
    assert_int_equal(kb_store_delete_sync(e->s, "k", "p", "a", 0, NULL, NULL),
                     0);
    assert_int_equal(kb_store_get_sync(e->s, "k", "p", "a", res_cb, &r),
                     KB_ENOTFOUND);
    json_decref(doc);
    res_reset(&r);
    free(pg->next);
    free(pg);
}

static void
test_close_drains(void **state)
{
    t_env *e = *state;
    t_res *r = calloc(100, sizeof(*r));
    json_t *doc = json_object();
    char name[16];
    int closed = 0;

    assert_non_null(r);
    store_open(e);
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "x%d", i);
        assert_int_equal(kb_store_put(e->s, "k", "p", name, doc, NULL, res_cb,
                                      &r[i]), 0);
    }
    kb_store_close(e->s, on_closed, &closed);
    assert_int_equal(kb_store_get(e->s, "k", "p", "x1", res_cb, &r[0]),
                     KB_ECANCELED);
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    e->s = NULL;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(r[i].called, 1);
        assert_int_equal(r[i].err, 0);
        res_reset(&r[i]);
    }
    store_open(e);
    assert_int_equal(kb_store_get_sync(e->s, "k", "p", "x99", NULL, NULL), 0);
    json_decref(doc);
    free(r);
}

static void
test_bad_arguments(void **state)
{
    t_env *e = *state;
    kb_put_opts bad_mode = { 0, 0, NULL }, bad_ver = { KB_PUT_UPSERT, -1,
                                                        NULL };
    char long_name[1100], url[200];
    json_t *doc = json_object();
    kb_store *s = NULL;

    assert_int_equal(kb_store_open(&e->loop, "postgres://db/kiban", &s),
                     -ENOTSUP);
    assert_int_equal(kb_store_open(&e->loop, "mysql://x", &s), KB_EINVAL);
    snprintf(url, sizeof(url), "sqlite:%s/no/such/dir/k.db", e->dir);
    assert_int_equal(kb_store_open(&e->loop, url, &s), -ENOENT);
    assert_null(s);

    snprintf(url, sizeof(url), "sqlite:%s", e->db);  /* the URL form */
    assert_int_equal(kb_store_open(&e->loop, url, &e->s), 0);
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(kb_store_get(e->s, NULL, "p", "a", NULL, NULL),
                     KB_EINVAL);
    assert_int_equal(kb_store_get(e->s, "k", "p", "", NULL, NULL), KB_EINVAL);
    assert_int_equal(kb_store_get(e->s, "k", "p", NULL, NULL, NULL),
                     KB_EINVAL);
    assert_int_equal(kb_store_get(e->s, "k", "p", long_name, NULL, NULL),
                     KB_EINVAL);
    assert_int_equal(kb_store_put(e->s, "k", "p", "a", NULL, NULL, NULL,
                                  NULL), KB_EINVAL);
    assert_int_equal(kb_store_put(e->s, "k", "p", "a", doc, &bad_mode, NULL,
                                  NULL), KB_EINVAL);
    assert_int_equal(kb_store_put(e->s, "k", "p", "a", doc, &bad_ver, NULL,
                                  NULL), KB_EINVAL);
    assert_int_equal(kb_store_delete(e->s, "k", "p", "a", -2, NULL, NULL),
                     KB_EINVAL);
    assert_int_equal(kb_store_list(e->s, "", NULL, 0, NULL, NULL, NULL),
                     KB_EINVAL);
    /* A name with SQL in it is just a name. */
    assert_int_equal(kb_store_put_sync(e->s, "k", "p", "a'); DROP TABLE "
                                       "resources; --", doc, NULL, NULL,
                                       NULL), 0);
    assert_int_equal(kb_store_get_sync(e->s, "k", "p", "a'); DROP TABLE "
                                       "resources; --", NULL, NULL), 0);
    json_decref(doc);
}

/* ---- durability across kill -9 -------------------------------------- */

typedef struct t_child {
    kb_store *s;
    int       fd;
    int       next;
} t_child;

static void child_put(t_child *c);

static void
child_cb(int err, const kb_resource *r, void *data)
{
    t_child *c = data;
    char line[64];
    int n;

    if (err == 0) {
        /* Reported only after the commit that made it durable. */
        n = snprintf(line, sizeof(line), "%s\n", r->name);
        if (write(c->fd, line, (size_t)n) != n)
            _exit(3);
    }
    child_put(c);
}

static void
child_put(t_child *c)
{
    char name[32];
    json_t *doc;

    if (c->next >= 1000000)
        return;
    snprintf(name, sizeof(name), "c%07d", c->next++);
    doc = json_pack("{s:s, s:i}", "payload", "some bytes to write", "n",
                    c->next);
    if (kb_store_put(c->s, "crash", "p", name, doc, NULL, child_cb, c) != 0)
        _exit(4);
    json_decref(doc);
}

static void
crash_child(const char *db, int fd)
{
    uv_loop_t loop;
    t_child c = { NULL, fd, 0 };

    if (uv_loop_init(&loop) != 0 || kb_store_open(&loop, db, &c.s) != 0)
        _exit(2);
    for (int i = 0; i < 32; i++)        /* keep 32 writes in flight */
        child_put(&c);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(0);
}

static void
test_crash_durability(void **state)
{
    t_env *e = *state;
    size_t cap = 1 << 20, len = 0, names = 0;
    char *buf = malloc(cap + 1), *line, *nl;
    int fds[2], status;
    uint64_t deadline;
    pid_t pid;

    assert_non_null(buf);
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(e->db, fds[1]);
    }
    close(fds[1]);

    /* Let it commit a few hundred, then kill it in the middle of work. */
    deadline = kb_time_mono_ms() + 30000;
    while (kb_time_mono_ms() < deadline) {
        struct pollfd p = { fds[0], POLLIN, 0 };
        ssize_t n;
        size_t lines = 0;

        if (poll(&p, 1, 1000) <= 0)
            continue;
        n = read(fds[0], buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        for (size_t i = 0; i < len; i++)
            lines += buf[i] == '\n';
        if (lines >= 400)
            break;
    }
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    for (;;) {                          /* what it reported before dying */
        ssize_t n = read(fds[0], buf + len, cap - len);

        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fds[0]);
    buf[len] = '\0';

    store_open(e);
    for (line = buf; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        assert_int_equal(kb_store_get_sync(e->s, "crash", "p", line, NULL,
                                           NULL), 0);
        names++;
    }
    assert_true(names >= 400);
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crud_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_existing_eexist, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_update_missing_enotfound, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expect_version_conflict, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_request_id_idempotent_create,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_pagination, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_list_bad_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_parent_null, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persistence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_migrations_recorded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connection_settings, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_file_mode_0600, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_locked_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doc_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_before_run, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_durability, setup,
                                        teardown),
    };

    kb_log_set_level(KB_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
