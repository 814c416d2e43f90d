/*
 * sqlite.c - the SQLite backend of the store (the embedded default).
 *
 * One connection, used only on the store thread: WAL journal,
 * synchronous=FULL (a commit is on disk before its callback says so),
 * foreign keys on, a 5 s busy timeout plus a few retries of our own.
 * Statements are prepared once and reused.  store.c drives the
 * transactions; the contract is backend.h.
 */
#include "store/backend.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 5000      /* SQLite waits this long for a lock */
#define BUSY_RETRIES    3         /* retries of a BUSY that did not wait */
#define BUSY_BACKOFF_MS 50

/* Every statement the backend runs, prepared on first use. */
enum {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK,
    ST_SAVEPOINT, ST_RELEASE, ST_ROLLBACK_TO,
    ST_META, ST_GET, ST_INSERT, ST_UPDATE, ST_DELETE,
    ST_LIST_PARENT, ST_LIST_ALL,
    ST_SCHEMA_VERSION, ST_SCHEMA_RECORD,
    ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN]       = "BEGIN IMMEDIATE",
    [ST_COMMIT]      = "COMMIT",
    [ST_ROLLBACK]    = "ROLLBACK",
    [ST_SAVEPOINT]   = "SAVEPOINT op",
    [ST_RELEASE]     = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
    [ST_META]        = "SELECT version, create_time, update_time, request_id"
                       " FROM resources"
                       " WHERE kind = ?1 AND parent = ?2 AND name = ?3",
    [ST_GET]         = "SELECT doc, version, create_time, update_time"
                       " FROM resources"
                       " WHERE kind = ?1 AND parent = ?2 AND name = ?3",
    [ST_INSERT]      = "INSERT INTO resources (kind, parent, name, doc,"
                       " version, create_time, update_time, request_id)"
                       " VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?6)",
    [ST_UPDATE]      = "UPDATE resources SET doc = ?4, version = ?5,"
                       " update_time = ?6"
                       " WHERE kind = ?1 AND parent = ?2 AND name = ?3",
    [ST_DELETE]      = "DELETE FROM resources"
                       " WHERE kind = ?1 AND parent = ?2 AND name = ?3",
    [ST_LIST_PARENT] = "SELECT parent, name, doc, version, create_time,"
                       " update_time FROM resources"
                       " WHERE kind = ?1 AND parent = ?2 AND name > ?3"
                       " ORDER BY name LIMIT ?4",
    [ST_LIST_ALL]    = "SELECT parent, name, doc, version, create_time,"
                       " update_time FROM resources"
                       " WHERE kind = ?1 AND (parent, name) > (?2, ?3)"
                       " ORDER BY parent, name LIMIT ?4",
    [ST_SCHEMA_VERSION] = "SELECT coalesce(max(version), 0)"
                          " FROM schema_version",
    [ST_SCHEMA_RECORD]  = "INSERT INTO schema_version"
                          " (version, name, applied_at) VALUES (?1, ?2, ?3)",
};

typedef struct sq_conn {
    sqlite3      *db;
    char         *path;
    sqlite3_stmt *stmt[ST__COUNT];
} sq_conn;

/* What put() needs to know about an existing row (no doc: it may be
 * megabytes). */
typedef struct sq_meta {
    int64_t version;
    int64_t create_time;
    int64_t update_time;
    bool    rid_match;      /* stored request_id equals the one asked for */
} sq_meta;

/* Map a SQLite result code (extended codes are on) to a kiban error. */
static int
sq_errno(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
        return KB_EEXIST;
    default:
        break;
    }
    switch (rc & 0xff) {
    case SQLITE_OK:         return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:     return KB_EBUSY;
    case SQLITE_NOMEM:      return KB_ENOMEM;
    case SQLITE_FULL:       return -ENOSPC;
    case SQLITE_TOOBIG:     return KB_ETOOBIG;
    case SQLITE_READONLY:   return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:       return -EACCES;
    case SQLITE_CONSTRAINT: return KB_EINVAL;
    default:                return -EIO;
    }
}

/* Log a failed SQLite call and return its kiban error.  Call before the
 * statement is reset, while the message still describes the failure. */
static int
sq_fail(sq_conn *c, const char *what, int rc)
{
    kb_log_error("store: sqlite error", "{s:s, s:s, s:s, s:i}",
                 "path", c->path, "op", what,
                 "error", c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc),
                 "code", rc);
    return sq_errno(rc) ? sq_errno(rc) : -EIO;  /* never 0: it failed */
}

static int
sq_prepare(sq_conn *c, int id, sqlite3_stmt **out)
{
    int rc;

    if (c->stmt[id] == NULL) {
        rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1,
                                SQLITE_PREPARE_PERSISTENT, &c->stmt[id], NULL);
        if (rc != SQLITE_OK)
            return sq_fail(c, "prepare", rc);
    }
    *out = c->stmt[id];
    return 0;
}

/* Reset a cached statement for its next use (drops bound pointers too). */
static void
sq_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static void
sq_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * First step of a statement, retrying SQLITE_BUSY.  A BUSY that comes back
 * after the busy timeout ran out is final (another process has held the
 * lock for 5 s).  One that comes back at once means SQLite did not wait
 * (a lock it will not wait for, WAL recovery by another process): those
 * we retry a few times with a short backoff, and only where SQLite allows
 * a retry: outside an explicit transaction, or a COMMIT.
 */
static int
sq_step(sq_conn *c, sqlite3_stmt *st)
{
    uint64_t t0;
    int rc;

    for (int i = 0;; i++) {
        t0 = kb_time_mono_ms();
        rc = sqlite3_step(st);
        if ((rc & 0xff) != SQLITE_BUSY || i == BUSY_RETRIES ||
            kb_time_mono_ms() - t0 >= BUSY_TIMEOUT_MS)
            return rc;
        if (!sqlite3_get_autocommit(c->db) && st != c->stmt[ST_COMMIT])
            return rc;
        kb_log_warn("store: database busy, retrying", "{s:s, s:i}",
                    "path", c->path, "attempt", i + 1);
        sqlite3_reset(st);
        sq_sleep_ms(BUSY_BACKOFF_MS * (i + 1));
    }
}

/* Run a cached statement that returns no rows. */
static int
sq_exec(sq_conn *c, int id, const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    if ((rc = sq_prepare(c, id, &st)) != 0)
        return rc;
    rc = sq_step(c, st);
    if (rc != SQLITE_DONE)
        err = sq_fail(c, what, rc);
    sq_done(st);
    return err;
}

/* Run literal SQL (setup and migrations only). */
static int
sq_exec_sql(sq_conn *c, const char *sql, const char *what)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : sq_fail(c, what, rc);
}

/* Bind ?1..?3 to the key.  Pointers must outlive the statement's use. */
static int
sq_bind_key(sqlite3_stmt *st, const kb__store_key *k)
{
    int rc;

    rc = sqlite3_bind_text(st, 1, k->kind, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, k->parent, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 3, k->name, -1, SQLITE_STATIC);
    return rc;
}

/* ---- setup ---------------------------------------------------------- */

/* fsync the directory holding `path`, so a new file's name is durable. */
static void
sq_sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd;

    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else if ((size_t)(slash - path) < sizeof(dir))
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    else
        return;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)fsync(fd);
    close(fd);
}

/*
 * Create the database file ourselves, mode 0600 whatever the umask, so
 * SQLite never creates it with its default 0644.  SQLite gives the -wal
 * and -shm files the database file's mode.  An existing file is kept as
 * it is (with a warning if others can read it).
 */
static int
sq_create_file(const char *path)
{
    struct stat st;
    int fd, err;

    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
            kb_log_warn("store: database file is readable by others",
                        "{s:s, s:i}", "path", path,
                        "mode", (int)(st.st_mode & 0777));
        return 0;
    }
    if (fd < 0) {
        err = -errno;
        kb_log_error("store: cannot create database file", "{s:s, s:s}",
                     "path", path, "error", strerror(errno));
        return err;
    }
    if (fchmod(fd, 0600) != 0) {
        err = -errno;
        close(fd);
        unlink(path);
        return err;
    }
    close(fd);
    sq_sync_dir(path);
    return 0;
}

/* Run a PRAGMA that answers one text row, and copy the answer. */
static int
sq_pragma_text(sq_conn *c, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(c, sql, rc);
    rc = sq_step(c, st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
    } else {
        err = sq_fail(c, sql, rc);
    }
    sqlite3_finalize(st);
    return err;
}

static void
sq_close(void *conn)
{
    sq_conn *c = conn;
    int rc;

    if (c == NULL)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(c->stmt[i]);
    rc = sqlite3_close(c->db);
    if (rc != SQLITE_OK)
        kb_log_error("store: closing sqlite database failed", "{s:s, s:s}",
                     "path", c->path, "error", sqlite3_errstr(rc));
    free(c->path);
    free(c);
}

static int
sq_open(const char *path, void **out)
{
    char mode[32];
    sq_conn *c;
    int rc;

    if (path[0] == '\0') {
        kb_log_error("store: empty sqlite path", NULL);
        return KB_EINVAL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->path = strdup(path)) == NULL) {
        free(c);
        return KB_ENOMEM;
    }
    if ((rc = sq_create_file(path)) != 0)
        goto out_free;

    /* NOMUTEX: only the store thread ever touches this connection. */
    rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE |
                         SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = sq_fail(c, "open", rc);
        goto out_close;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);

    /* The first statement also tells a file that is not a database. */
    if ((rc = sq_pragma_text(c, "PRAGMA journal_mode=WAL",
                             mode, sizeof(mode))) != 0)
        goto out_close;
    if (strcmp(mode, "wal") != 0) {
        kb_log_error("store: cannot use WAL journal", "{s:s, s:s}",
                     "path", path, "journal_mode", mode);
        rc = -EIO;
        goto out_close;
    }
    rc = sq_exec_sql(c, "PRAGMA synchronous=FULL;"
                        "PRAGMA foreign_keys=ON;"
                        "PRAGMA trusted_schema=OFF;", "pragmas");
    if (rc != 0)
        goto out_close;
    *out = c;
    return 0;

out_close:
    sq_close(c);
    return rc;
out_free:
    free(c->path);
    free(c);
    return rc;
}

/* Read the schema version inside the current transaction. */
static int
sq_schema_version(sq_conn *c, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    if ((rc = sq_prepare(c, ST_SCHEMA_VERSION, &st)) != 0)
        return rc;
    rc = sq_step(c, st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        err = sq_fail(c, "schema version", rc);
    sq_done(st);
    return err;
}

static int
sq_schema_record(sq_conn *c, const kb__store_migration *m)
{
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    if ((rc = sq_prepare(c, ST_SCHEMA_RECORD, &st)) != 0)
        return rc;
    sqlite3_bind_int64(st, 1, m->version);
    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, kb_time_unix_ns());
    rc = sq_step(c, st);
    if (rc != SQLITE_DONE)
        err = sq_fail(c, "record migration", rc);
    sq_done(st);
    return err;
}

static void sq_rollback(void *conn);

/*
 * Apply the steps above the database's version, one transaction each.
 * The version is read inside the write transaction, so two processes
 * opening the same new file at once do not both apply a step.
 */
static int
sq_migrate(void *conn)
{
    const kb__store_migration *m = kb__store_sqlite_migrations;
    const int64_t known = (int64_t)kb__store_sqlite_nmigrations;
    sq_conn *c = conn;
    int64_t cur = 0;
    int rc;

    for (size_t i = 0; i < kb__store_sqlite_nmigrations; i++) {
        if (m[i].version != (int)i + 1) {
            kb_log_error("store: migration table out of order", "{s:i}",
                         "index", (int)i);
            return KB_EINVAL;
        }
    }
    rc = sq_exec_sql(c, "CREATE TABLE IF NOT EXISTS schema_version ("
                        " version    INTEGER PRIMARY KEY,"
                        " name       TEXT    NOT NULL,"
                        " applied_at INTEGER NOT NULL)", "schema_version");
    if (rc != 0)
        return rc;

    for (;;) {
        if ((rc = sq_exec(c, ST_BEGIN, "begin")) != 0)
            return rc;
        if ((rc = sq_schema_version(c, &cur)) != 0)
            goto out_rollback;
        if (cur > known) {
            kb_log_error("store: database schema is newer than this kiban;"
                         " upgrade kiban or use another data directory",
                         "{s:s, s:I, s:I}", "path", c->path,
                         "db_version", (json_int_t)cur,
                         "known_version", (json_int_t)known);
            rc = KB_EINVAL;
            goto out_rollback;
        }
        if (cur == known) {
            sq_rollback(c);              /* nothing written */
            return 0;
        }
        m = &kb__store_sqlite_migrations[cur];  /* version cur + 1 */
        if ((rc = sq_exec_sql(c, m->sql, m->name)) != 0)
            goto out_rollback;
        if ((rc = sq_schema_record(c, m)) != 0)
            goto out_rollback;
        if ((rc = sq_exec(c, ST_COMMIT, "commit")) != 0)
            goto out_rollback;
        kb_log_info("store: migration applied", "{s:s, s:i, s:s}",
                    "path", c->path, "version", m->version, "name", m->name);
    }

out_rollback:
    sq_rollback(c);
    return rc;
}

/* ---- transactions --------------------------------------------------- */

static int
sq_begin(void *conn)
{
    return sq_exec(conn, ST_BEGIN, "begin");
}

static int
sq_commit(void *conn)
{
    return sq_exec(conn, ST_COMMIT, "commit");
}

static bool
sq_in_txn(void *conn)
{
    return !sqlite3_get_autocommit(((sq_conn *)conn)->db);
}

static void
sq_rollback(void *conn)
{
    if (sq_in_txn(conn))
        (void)sq_exec(conn, ST_ROLLBACK, "rollback");
}

static int
sq_savepoint(void *conn)
{
    return sq_exec(conn, ST_SAVEPOINT, "savepoint");
}

static void
sq_release(void *conn, bool keep)
{
    if (!sq_in_txn(conn))
        return;                 /* the transaction is already gone */
    if (!keep)
        (void)sq_exec(conn, ST_ROLLBACK_TO, "rollback to savepoint");
    (void)sq_exec(conn, ST_RELEASE, "release savepoint");
}

/* ---- operations ----------------------------------------------------- */

static int
sq_get(void *conn, const kb__store_key *key, kb__store_row *out)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = NULL;
    int rc, err;

    if ((rc = sq_prepare(c, ST_GET, &st)) != 0)
        return rc;
    if ((rc = sq_bind_key(st, key)) != SQLITE_OK) {
        err = sq_fail(c, "get", rc);
        goto out_done;
    }
    rc = sq_step(c, st);
    if (rc == SQLITE_ROW) {
        /* text before bytes: the length is that of the text form */
        const char *doc = (const char *)sqlite3_column_text(st, 0);
        size_t len = (size_t)sqlite3_column_bytes(st, 0);

        err = kb__store_row_fill(out, key, doc, len,
                                 sqlite3_column_int64(st, 1),
                                 sqlite3_column_int64(st, 2),
                                 sqlite3_column_int64(st, 3));
    } else if (rc == SQLITE_DONE) {
        err = KB_ENOTFOUND;
    } else {
        err = sq_fail(c, "get", rc);
    }
out_done:
    sq_done(st);
    return err;
}

/* Version, times and request id of a row, without reading its doc. */
static int
sq_meta_get(sq_conn *c, const kb__store_key *key, const char *rid,
            sq_meta *m)
{
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    if ((rc = sq_prepare(c, ST_META, &st)) != 0)
        return rc;
    if ((rc = sq_bind_key(st, key)) != SQLITE_OK) {
        err = sq_fail(c, "lookup", rc);
        goto out_done;
    }
    rc = sq_step(c, st);
    if (rc == SQLITE_ROW) {
        const char *stored = (const char *)sqlite3_column_text(st, 3);
        m->version     = sqlite3_column_int64(st, 0);
        m->create_time = sqlite3_column_int64(st, 1);
        m->update_time = sqlite3_column_int64(st, 2);
        m->rid_match   = rid != NULL && stored != NULL &&
                         strcmp(rid, stored) == 0;
    } else if (rc == SQLITE_DONE) {
        err = KB_ENOTFOUND;
    } else {
        err = sq_fail(c, "lookup", rc);
    }
out_done:
    sq_done(st);
    return err;
}

/* INSERT a new row (version 1) or UPDATE an existing one to `version`. */
static int
sq_write(sq_conn *c, const kb__store_key *key, const kb__store_put *p,
         int64_t version, int64_t now)
{
    bool insert = version == 1;
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    if ((rc = sq_prepare(c, insert ? ST_INSERT : ST_UPDATE, &st)) != 0)
        return rc;
    rc = sq_bind_key(st, key);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 4, p->doc, (int)p->doc_len,
                               SQLITE_STATIC);
    if (rc == SQLITE_OK && insert) {
        rc = sqlite3_bind_int64(st, 5, now);
        if (rc == SQLITE_OK)
            rc = p->request_id ? sqlite3_bind_text(st, 6, p->request_id, -1,
                                                   SQLITE_STATIC)
                               : sqlite3_bind_null(st, 6);
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(st, 5, version);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 6, now);
    }
    if (rc == SQLITE_OK)
        rc = sq_step(c, st);
    if (rc != SQLITE_DONE)
        err = sq_fail(c, insert ? "insert" : "update", rc);
    sq_done(st);
    return err;
}

static int
sq_put(void *conn, const kb__store_key *key, const kb__store_put *p,
       kb__store_row *out)
{
    sq_conn *c = conn;
    int64_t now = p->now_ns;
    sq_meta m = { 0, 0, 0, false };
    int rc;

    rc = sq_meta_get(c, key, p->request_id, &m);
    if (rc == 0) {
        if (p->mode == KB_PUT_CREATE)   /* a replayed create gets the row */
            return m.rid_match ? sq_get(c, key, out) : KB_EEXIST;
        if (p->expect_version != 0 && p->expect_version != m.version)
            return KB_ECONFLICT;
        if (now < m.update_time)        /* the wall clock stepped back */
            now = m.update_time;
        if ((rc = sq_write(c, key, p, m.version + 1, now)) != 0)
            return rc;
        return kb__store_row_fill(out, key, p->doc, p->doc_len,
                                  m.version + 1, m.create_time, now);
    }
    if (rc != KB_ENOTFOUND)
        return rc;
    if (p->mode == KB_PUT_UPDATE)
        return KB_ENOTFOUND;
    if (p->expect_version != 0)         /* expected a version that is gone */
        return KB_ECONFLICT;
    if ((rc = sq_write(c, key, p, 1, now)) != 0)
        return rc;
    return kb__store_row_fill(out, key, p->doc, p->doc_len, 1, now, now);
}

static int
sq_del(void *conn, const kb__store_key *key, int64_t expect_version,
       kb__store_row *out)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    if ((rc = sq_get(c, key, out)) != 0)
        return rc;
    if (expect_version != 0 && expect_version != out->version) {
        err = KB_ECONFLICT;
        goto out_clear;
    }
    if ((err = sq_prepare(c, ST_DELETE, &st)) != 0)
        goto out_clear;
    rc = sq_bind_key(st, key);
    if (rc == SQLITE_OK)
        rc = sq_step(c, st);
    if (rc != SQLITE_DONE)
        err = sq_fail(c, "delete", rc);
    sq_done(st);
    if (err == 0)
        return 0;
out_clear:
    kb__store_row_clear(out);
    return err;
}

static int
sq_list(void *conn, const char *kind, const char *parent,
        const char *after_parent, const char *after_name, size_t limit,
        kb__store_row *rows, size_t *n, bool *more)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = NULL;
    int rc, err = 0;

    *n = 0;
    *more = false;
    if ((rc = sq_prepare(c, parent ? ST_LIST_PARENT : ST_LIST_ALL, &st)) != 0)
        return rc;
    rc = sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, parent ? parent : after_parent, -1,
                               SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 3, after_name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)   /* one more than asked: is there a next page? */
        rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)limit + 1);
    if (rc != SQLITE_OK) {
        err = sq_fail(c, "list", rc);
        goto out_done;
    }
    for (rc = sq_step(c, st); rc == SQLITE_ROW; rc = sqlite3_step(st)) {
        kb__store_key key;
        const char *doc;
        size_t len;

        if (*n == limit) {
            *more = true;
            break;
        }
        key.kind   = kind;
        key.parent = (const char *)sqlite3_column_text(st, 0);
        key.name   = (const char *)sqlite3_column_text(st, 1);
        if (key.parent == NULL || key.name == NULL) {
            err = KB_ENOMEM;    /* text conversion is all that can fail */
            goto out_clear;
        }
        doc = (const char *)sqlite3_column_text(st, 2);
        len = (size_t)sqlite3_column_bytes(st, 2);
        err = kb__store_row_fill(&rows[*n], &key, doc, len,
                                 sqlite3_column_int64(st, 3),
                                 sqlite3_column_int64(st, 4),
                                 sqlite3_column_int64(st, 5));
        if (err != 0)
            goto out_clear;
        (*n)++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        err = sq_fail(c, "list", rc);
        goto out_clear;
    }
    goto out_done;

out_clear:
    for (size_t i = 0; i < *n; i++)
        kb__store_row_clear(&rows[i]);
    *n = 0;
    *more = false;
out_done:
    sq_done(st);
    return err;
}

const kb__store_backend kb__store_sqlite_backend = {
    .name      = "sqlite",
    .open      = sq_open,
    .migrate   = sq_migrate,
    .close     = sq_close,
    .begin     = sq_begin,
    .commit    = sq_commit,
    .rollback  = sq_rollback,
    .in_txn    = sq_in_txn,
    .savepoint = sq_savepoint,
    .release   = sq_release,
    .get       = sq_get,
    .put       = sq_put,
    .del       = sq_del,
    .list      = sq_list,
};
