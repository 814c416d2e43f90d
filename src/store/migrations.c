/*
 * migrations.c - the SQLite schema, as numbered steps.
 *
 * sqlite.c applies every step whose version is above the database's
 * schema_version, each in its own transaction.  Released steps are never
 * edited: a schema change is a new step appended at the end.
 */
#include "store/backend.h"

const kb__store_migration kb__store_sqlite_migrations[] = {
    {
        1, "resources",
        /* One table holds every plane's resources.  A rowid table (not
         * WITHOUT ROWID) because docs may be megabytes; the primary key's
         * index serves get, list under a parent (ordered by name) and list
         * across parents (ordered by parent, name).  request_id is the
         * request id of the write that created the row (idempotent
         * create). */
        "CREATE TABLE resources ("
        "  kind        TEXT    NOT NULL CHECK (length(kind) > 0),"
        "  parent      TEXT    NOT NULL,"
        "  name        TEXT    NOT NULL CHECK (length(name) > 0),"
        "  doc         TEXT    NOT NULL,"
        "  version     INTEGER NOT NULL CHECK (version >= 1),"
        "  create_time INTEGER NOT NULL,"
        "  update_time INTEGER NOT NULL,"
        "  request_id  TEXT,"
        "  PRIMARY KEY (kind, parent, name)"
        ");"
    },
};

const size_t kb__store_sqlite_nmigrations =
    sizeof(kb__store_sqlite_migrations) /
    sizeof(kb__store_sqlite_migrations[0]);
