/*
 * backend.h - what a store backend implements (internal to src/store/).
 *
 * store.c owns the queue, the store thread, batching and callbacks; a
 * backend owns one database connection and speaks its SQL dialect.  Every
 * function in the vtable runs on the store thread, one call at a time, so a
 * backend needs no locking of its own.  SQLite is sqlite.c; a PostgreSQL
 * backend (libpq) adds one more vtable and one row in store.c's URL table.
 */
#ifndef KB_STORE_BACKEND_H
#define KB_STORE_BACKEND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Hard limits, checked by store.c before anything is queued. */
#define KB_STORE_DOC_MAX      (4u << 20)  /* serialized doc bytes */
#define KB_STORE_KIND_MAX     128         /* bytes, each key part */
#define KB_STORE_PARENT_MAX   1024
#define KB_STORE_NAME_MAX     1024
#define KB_STORE_REQID_MAX    256
#define KB_STORE_PAGE_DEFAULT 50
#define KB_STORE_PAGE_MAX     1000

/* A resource's address.  parent is never NULL here ("" = top level). */
typedef struct kb__store_key {
    const char *kind;
    const char *parent;
    const char *name;
} kb__store_key;

/* A row handed back by a backend; everything in it is owned by the row and
 * released with kb__store_row_clear(). */
typedef struct kb__store_row {
    char    *kind;
    char    *parent;
    char    *name;
    json_t  *doc;                 /* one reference */
    int64_t  version;
    int64_t  create_time_ns;
    int64_t  update_time_ns;
} kb__store_row;

/* A write request as the backend sees it. */
typedef struct kb__store_put {
    const char  *doc;             /* compact JSON, doc_len bytes */
    size_t       doc_len;
    kb_put_mode  mode;
    int64_t      expect_version;  /* 0 = any */
    const char  *request_id;      /* NULL = none */
    int64_t      now_ns;          /* wall clock for create/update times */
} kb__store_put;

typedef struct kb__store_backend {
    const char *name;
    /*
     * Connect to `target` (the URL with any "sqlite:" prefix removed) and
     * set the connection up.  0 and *conn, or a negative error with the
     * reason logged.  On error nothing needs closing.
     */
    int  (*open)(const char *target, void **conn);
    /* Bring the schema up to date (each step in its own transaction).
     * KB_EINVAL, logged, when the database is newer than this binary. */
    int  (*migrate)(void *conn);
    void (*close)(void *conn);

    /* A batch: begin() starts a write transaction (retrying while the
     * database is busy), commit() makes it durable, rollback() drops it.
     * in_txn() tells whether a transaction is still open (a failure may
     * have rolled it back behind our back).  savepoint()/release() wrap one
     * op inside a batch; release(conn, false) undoes the op first. */
    int  (*begin)(void *conn);
    int  (*commit)(void *conn);
    void (*rollback)(void *conn);
    bool (*in_txn)(void *conn);
    int  (*savepoint)(void *conn);
    void (*release)(void *conn, bool keep);

    /* The operations.  0 and *out filled, or KB_ENOTFOUND, KB_EEXIST,
     * KB_ECONFLICT, or a database error (-EIO, KB_EBUSY, -ENOSPC, …).
     * On error *out is left empty.  put() and del() run inside a
     * transaction the caller opened. */
    int  (*get)(void *conn, const kb__store_key *key, kb__store_row *out);
    int  (*put)(void *conn, const kb__store_key *key,
                const kb__store_put *put, kb__store_row *out);
    int  (*del)(void *conn, const kb__store_key *key, int64_t expect_version,
                kb__store_row *out);
    /*
     * Up to `limit` rows of `kind` strictly after (after_parent, after_name)
     * in key order: under one parent ordered by name, or (parent NULL)
     * across parents ordered by parent then name.  "" / "" starts at the
     * beginning (names are never empty).  rows has room for `limit`;
     * *more is set when at least one further row exists.  On error no row
     * is left filled.
     */
    int  (*list)(void *conn, const char *kind, const char *parent,
                 const char *after_parent, const char *after_name,
                 size_t limit, kb__store_row *rows, size_t *n, bool *more);
} kb__store_backend;

extern const kb__store_backend kb__store_sqlite_backend;

/* Numbered schema steps of the SQLite backend (migrations.c).  Versions
 * start at 1 and grow by one; a step is never edited once released, only
 * new steps are appended. */
typedef struct kb__store_migration {
    int         version;
    const char *name;
    const char *sql;              /* one or more statements */
} kb__store_migration;

extern const kb__store_migration kb__store_sqlite_migrations[];
extern const size_t              kb__store_sqlite_nmigrations;

/* Helpers for backends (store.c).  Fill a row from column values: copies
 * the strings, parses the doc text.  0, KB_ENOMEM, or -EIO (doc text that
 * is not JSON: logged).  On error the row is left empty. */
int  kb__store_row_fill(kb__store_row *r, const kb__store_key *key,
                        const char *doc, size_t doc_len, int64_t version,
                        int64_t create_time_ns, int64_t update_time_ns);
void kb__store_row_clear(kb__store_row *r);

/* Test hook: change the bound on pending ops (default 10,000). */
void kb__store_set_max_pending(kb_store *s, size_t max);

#endif
