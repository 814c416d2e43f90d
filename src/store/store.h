/*
 * store.h - the one store interface every plane uses.
 *
 * State is a set of resources: JSON documents addressed by
 * (kind, parent, name), e.g. ("services", "projects/default", "hello").
 * Each has a version that grows by one on every write (the etag), and
 * create/update times.  Backends: SQLite (WAL, embedded default) now,
 * PostgreSQL later, behind the same calls; the backend is chosen by the URL
 * given to kb_store_open().  Only the store speaks SQL.
 *
 * Every call is asynchronous: it is queued to the store's own thread and
 * its callback runs later on the loop thread that opened the store.  A call
 * that returns an error never calls its callback.  Results handed to a
 * callback are valid during the callback only (take a json_incref() of a
 * document to keep it).  Callbacks run in the order their calls finished;
 * a callback that reports success means the change is durable (fsynced).
 *
 * Errors every call may return: KB_EINVAL (missing kind or name, a key part
 * over 128 bytes for kind or 1024 for parent/name, a bad option),
 * KB_EBUSY (10,000 calls already pending: back off, e.g. HTTP 503),
 * KB_ECANCELED (the store is closing).  A parent of NULL in get, put and
 * delete means "" (a top-level resource).  Callbacks may be NULL.
 */
#ifndef KB_STORE_H
#define KB_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct kb_store kb_store;

typedef struct kb_resource {
    const char *kind;
    const char *parent;
    const char *name;
    json_t     *doc;             /* borrowed */
    int64_t     version;         /* ≥ 1 */
    int64_t     create_time_ns;  /* Unix ns */
    int64_t     update_time_ns;
} kb_resource;

typedef enum kb_put_mode {
    KB_PUT_CREATE = 1,           /* KB_EEXIST if present */
    KB_PUT_UPDATE,               /* KB_ENOTFOUND if absent */
    KB_PUT_UPSERT
} kb_put_mode;

typedef struct kb_put_opts {
    kb_put_mode mode;
    int64_t     expect_version;  /* 0 = any; else KB_ECONFLICT on mismatch */
    const char *request_id;      /* optional: a CREATE repeated with the same
                                    request id returns the existing resource
                                    instead of KB_EEXIST */
} kb_put_opts;

/* err is 0 or a KB_E* code; res is NULL when err != 0. */
typedef void (*kb_store_res_cb)(int err, const kb_resource *res, void *data);

typedef struct kb_store_page {
    const kb_resource *items;
    size_t             n;
    const char        *next_token; /* NULL at the end */
} kb_store_page;
typedef void (*kb_store_list_cb)(int err, const kb_store_page *page,
                                 void *data);

/*
 * Open a store.  url: "sqlite:PATH" or a plain path (SQLite database file;
 * its directory must exist; a new file is created with mode 0600), later
 * "postgres://…" (-ENOTSUP for now).  Runs migrations synchronously (boot
 * time, before the loop serves anything).  Returns 0 and *out, or -errno /
 * KB_EINVAL (also for a database whose schema is newer than this binary)
 * with a message logged.
 */
int  kb_store_open(uv_loop_t *loop, const char *url, kb_store **out);
/* Finish queued calls (their callbacks run), stop the thread, free; then
 * cb(data) on the loop thread (cb may be NULL).  The loop must keep
 * running until cb: the store closes its uv_async_t.  Calls made after
 * this return KB_ECANCELED. */
void kb_store_close(kb_store *s, void (*cb)(void *data), void *data);

int kb_store_get(kb_store *s, const char *kind, const char *parent,
                 const char *name, kb_store_res_cb cb, void *data);
/* doc is copied (serialized) before the call returns; over 4 MiB of
 * compact JSON → KB_ETOOBIG.  opts NULL = UPSERT with no checks.  The
 * callback may get KB_EEXIST (CREATE), KB_ENOTFOUND (UPDATE), or
 * KB_ECONFLICT (expect_version differs, or is set and nothing exists).
 * A CREATE whose request_id equals the one that created the existing
 * resource returns that resource (version unchanged). */
int kb_store_put(kb_store *s, const char *kind, const char *parent,
                 const char *name, json_t *doc, const kb_put_opts *opts,
                 kb_store_res_cb cb, void *data);
/* res is the deleted resource. expect_version 0 = any. */
int kb_store_delete(kb_store *s, const char *kind, const char *parent,
                    const char *name, int64_t expect_version,
                    kb_store_res_cb cb, void *data);
/*
 * List resources of a kind under a parent, ordered by name.  parent NULL
 * lists across all parents (ordered by parent, then name).  page_size 0 →
 * 50, capped at 1000.  page_token is NULL/"" for the first page, else a
 * next_token from a previous page (KB_EINVAL if malformed).
 */
int kb_store_list(kb_store *s, const char *kind, const char *parent,
                  size_t page_size, const char *page_token,
                  kb_store_list_cb cb, void *data);

/* Synchronous variants for boot and for tests: they run the call on the
 * store thread and wait (never call them from a loop callback that must
 * not block).  They work before uv_run() and from any thread.  On success
 * cb runs on the calling thread before the call returns 0, with data valid
 * during cb only; on failure the call returns the error (KB_ENOTFOUND,
 * KB_ECONFLICT, …) and cb is not called.  cb may be NULL. */
int kb_store_get_sync(kb_store *s, const char *kind, const char *parent,
                      const char *name, kb_store_res_cb cb, void *data);
int kb_store_list_sync(kb_store *s, const char *kind, const char *parent,
                       size_t page_size, const char *page_token,
                       kb_store_list_cb cb, void *data);
int kb_store_put_sync(kb_store *s, const char *kind, const char *parent,
                      const char *name, json_t *doc, const kb_put_opts *opts,
                      kb_store_res_cb cb, void *data);
int kb_store_delete_sync(kb_store *s, const char *kind, const char *parent,
                         const char *name, int64_t expect_version,
                         kb_store_res_cb cb, void *data);

#endif
