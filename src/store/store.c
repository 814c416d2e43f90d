/*
 * store.c - the store's front: checks, the queue, the store thread, group
 * commit, and completions back on the loop thread.
 *
 * Callers queue ops; one store thread takes everything queued, runs it as
 * one transaction (a savepoint per write, so a failing op does not fail
 * the others), commits once (one fsync), and hands the finished ops to a
 * uv_async_t; the loop then runs their callbacks in order.  Sync calls
 * queue the same ops and wait for them.  SQL lives in the backends
 * (backend.h), picked by the URL given to kb_store_open().
 */
#include "store/store.h"
#include "store/backend.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PENDING_DEFAULT 10000          /* ops, queued to delivered */
#define MAX_PENDING_BYTES   (256u << 20)   /* doc bytes held by those ops */
#define BATCH_MAX_OPS       1000           /* ops in one transaction */
#define BATCH_MAX_BYTES     (64u << 20)    /* doc bytes in one transaction */
#define TOKEN_MAX           6000           /* characters in a page token */
#define TOKEN_VERSION       1

typedef enum op_type { OP_GET, OP_PUT, OP_DELETE, OP_LIST, OP__COUNT } op_type;

static const char *const op_names[OP__COUNT] = { "get", "put", "delete",
                                                 "list" };

/* One queued call: its request, then its result, then how to complete. */
typedef struct store_op store_op;
struct store_op {
    store_op        *next;
    op_type          type;

    char            *kind;
    char            *parent;        /* NULL only for a list across parents */
    char            *name;
    char            *doc;           /* put: compact JSON */
    size_t           doc_len;
    kb_put_mode      mode;
    int64_t          expect_version;
    char            *request_id;
    size_t           page_size;
    char            *after_parent;  /* list: where the page token points */
    char            *after_name;

    int              err;           /* filled on the store thread */
    kb__store_row    row;
    kb_resource      res;           /* view of row */
    kb__store_row   *rows;
    kb_resource     *items;         /* views of rows */
    size_t           nrows;
    char            *next_token;

    kb_store_res_cb  res_cb;
    kb_store_list_cb list_cb;
    void            *data;
    bool             sync;
    bool             done;          /* sync: finished (under s->mu) */
};

struct kb_store {
    uv_loop_t               *loop;
    const kb__store_backend *be;
    char                    *target;
    void                    *conn;      /* store thread only */
    uv_thread_t              thread;
    uv_async_t               async;     /* loop: finished ops to deliver */

    uv_mutex_t               mu;        /* guards the fields below */
    uv_cond_t                work_cond; /* store thread waits for work */
    uv_cond_t                done_cond; /* open and sync callers wait */
    store_op                *q_head, *q_tail;        /* queued */
    store_op                *done_head, *done_tail;  /* for the loop */
    size_t                   pending;   /* queued, running or undelivered */
    size_t                   pending_bytes;
    size_t                   max_pending;
    bool                     overloaded; /* EBUSY logged, not yet cleared */
    bool                     opened;    /* thread finished open + migrate */
    int                      open_err;
    bool                     async_ready;
    bool                     stopping;  /* drain the queue, then exit */
    bool                     thread_done;
    bool                     closing;   /* kb_store_close() was called */

    bool                     joined;    /* loop thread only */
    void                   (*close_cb)(void *data);
    void                    *close_data;

    kb_counter              *m_ops[OP__COUNT];
    kb_counter              *m_commits;
    kb_histogram            *m_commit_seconds;
    kb_gauge                *m_pending;
};

/* ---- rows (shared with the backends) -------------------------------- */

void
kb__store_row_clear(kb__store_row *r)
{
    free(r->kind);
    free(r->parent);
    free(r->name);
    json_decref(r->doc);
    memset(r, 0, sizeof(*r));
}

int
kb__store_row_fill(kb__store_row *r, const kb__store_key *key,
                   const char *doc, size_t doc_len, int64_t version,
                   int64_t create_time_ns, int64_t update_time_ns)
{
    json_error_t jerr;

    memset(r, 0, sizeof(*r));
    r->kind   = strdup(key->kind);
    r->parent = strdup(key->parent);
    r->name   = strdup(key->name);
    if (r->kind == NULL || r->parent == NULL || r->name == NULL) {
        kb__store_row_clear(r);
        return KB_ENOMEM;
    }
    /* jansson escapes NUL as \u0000 when writing; allow it back in. */
    r->doc = doc ? json_loadb(doc, doc_len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                              &jerr)
                 : NULL;
    if (r->doc == NULL) {
        kb_log_error("store: stored document is not JSON", "{s:s, s:s, s:s}",
                     "kind", key->kind, "name", key->name,
                     "error", doc ? jerr.text : "missing");
        kb__store_row_clear(r);
        return -EIO;
    }
    r->version        = version;
    r->create_time_ns = create_time_ns;
    r->update_time_ns = update_time_ns;
    return 0;
}

static void
row_view(const kb__store_row *r, kb_resource *out)
{
    out->kind           = r->kind;
    out->parent         = r->parent;
    out->name           = r->name;
    out->doc            = r->doc;
    out->version        = r->version;
    out->create_time_ns = r->create_time_ns;
    out->update_time_ns = r->update_time_ns;
}

/* ---- ops ------------------------------------------------------------ */

static void
op_clear_result(store_op *op)
{
    kb__store_row_clear(&op->row);
    memset(&op->res, 0, sizeof(op->res));
    for (size_t i = 0; i < op->nrows; i++)
        kb__store_row_clear(&op->rows[i]);
    free(op->rows);
    free(op->items);
    free(op->next_token);
    op->rows = NULL;
    op->items = NULL;
    op->nrows = 0;
    op->next_token = NULL;
    op->err = 0;
}

static void
op_free(store_op *op)
{
    if (op == NULL)
        return;
    op_clear_result(op);
    free(op->kind);
    free(op->parent);
    free(op->name);
    free(op->doc);
    free(op->request_id);
    free(op->after_parent);
    free(op->after_name);
    free(op);
}

static bool
key_part_ok(const char *s, size_t max, bool may_be_empty)
{
    size_t n;

    if (s == NULL)
        return may_be_empty;
    n = strnlen(s, max + 1);
    return n <= max && (n > 0 || may_be_empty);
}

/*
 * A new op for (kind, parent, name), strings copied.  parent NULL means ""
 * (top level) except for a list, where it means every parent; name is NULL
 * for a list.  KB_EINVAL for a missing or oversized part.
 */
static int
op_new(kb_store *s, op_type type, const char *kind, const char *parent,
       const char *name, store_op **out)
{
    bool want_parent = parent != NULL || type != OP_LIST;
    store_op *op;

    if (s == NULL || !key_part_ok(kind, KB_STORE_KIND_MAX, false) ||
        !key_part_ok(parent, KB_STORE_PARENT_MAX, true) ||
        (type != OP_LIST && !key_part_ok(name, KB_STORE_NAME_MAX, false)))
        return KB_EINVAL;
    if ((op = calloc(1, sizeof(*op))) == NULL)
        return KB_ENOMEM;
    op->type = type;
    op->kind = strdup(kind);
    op->parent = want_parent ? strdup(parent ? parent : "") : NULL;
    op->name = name ? strdup(name) : NULL;
    if (op->kind == NULL || (want_parent && op->parent == NULL) ||
        (name != NULL && op->name == NULL)) {
        op_free(op);
        return KB_ENOMEM;
    }
    *out = op;
    return 0;
}

static bool
op_is_write(const store_op *op)
{
    return op->type == OP_PUT || op->type == OP_DELETE;
}

/* Run the op's callback (loop thread, or the sync caller's thread). */
static void
op_deliver(store_op *op)
{
    kb_store_page page;

    if (op->type == OP_LIST) {
        if (op->list_cb == NULL)
            return;
        if (op->err != 0) {
            op->list_cb(op->err, NULL, op->data);
            return;
        }
        page.items = op->items;
        page.n = op->nrows;
        page.next_token = op->next_token;
        op->list_cb(0, &page, op->data);
    } else if (op->res_cb != NULL) {
        op->res_cb(op->err, op->err ? NULL : &op->res, op->data);
    }
}

/* ---- page tokens ---------------------------------------------------- */
/*
 * A token is base64url (no padding) of: version byte, scope byte ('P' one
 * parent, 'A' all parents), then kind, listed parent, last parent and last
 * name separated by NUL bytes.  Carrying the query lets a token from
 * another listing be refused; the values only ever reach SQL as bound
 * parameters.
 */
static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
b64url_value(char ch)
{
    const char *p = ch ? strchr(b64url, ch) : NULL;

    return p ? (int)(p - b64url) : -1;
}

static int
b64url_encode(kb_buf *out, const unsigned char *in, size_t n)
{
    char q[4];
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t k = n - i >= 3 ? 4 : n - i + 1;

        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        q[0] = b64url[(v >> 18) & 63];
        q[1] = b64url[(v >> 12) & 63];
        q[2] = b64url[(v >> 6) & 63];
        q[3] = b64url[v & 63];
        rc = kb_buf_append(out, q, k);
    }
    return rc;
}

/* Strict decode: the alphabet only, no padding, unused bits zero.  The
 * result is NUL-terminated (the NUL not counted in *n). */
static int
b64url_decode(const char *in, size_t len, unsigned char **out, size_t *n)
{
    unsigned char *buf;
    uint32_t acc = 0;
    size_t o = 0;
    int bits = 0;

    if (len % 4 == 1)
        return KB_EINVAL;
    if ((buf = malloc(len * 3 / 4 + 1)) == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value(in[i]);

        if (v < 0)
            goto out_bad;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        goto out_bad;
    buf[o] = '\0';
    *out = buf;
    *n = o;
    return 0;

out_bad:
    free(buf);
    return KB_EINVAL;
}

/* The token for the page after `last`.  Store thread. */
static int
token_encode(const store_op *op, const kb__store_row *last, char **out)
{
    kb_buf raw = KB_BUF_INIT(4 * TOKEN_MAX);
    kb_buf tok = KB_BUF_INIT(2 * TOKEN_MAX);
    const char *qparent = op->parent ? op->parent : "";
    int rc;

    rc = kb_buf_appendc(&raw, TOKEN_VERSION);
    if (rc == 0)
        rc = kb_buf_appendc(&raw, op->parent ? 'P' : 'A');
    if (rc == 0)
        rc = kb_buf_append(&raw, op->kind, strlen(op->kind) + 1);
    if (rc == 0)
        rc = kb_buf_append(&raw, qparent, strlen(qparent) + 1);
    if (rc == 0)
        rc = kb_buf_append(&raw, last->parent, strlen(last->parent) + 1);
    if (rc == 0)
        rc = kb_buf_appends(&raw, last->name);
    if (rc == 0)
        rc = b64url_encode(&tok, (const unsigned char *)raw.data, raw.len);
    kb_buf_free(&raw);
    if (rc != 0 || (*out = kb_buf_detach(&tok)) == NULL) {
        kb_buf_free(&tok);
        return rc ? rc : KB_ENOMEM;
    }
    return 0;
}

/* Check a page token against the op's query and set op->after_*.
 * KB_EINVAL for anything but a token this listing handed out. */
static int
token_decode(store_op *op, const char *token)
{
    const char *field[4], *p, *end;
    unsigned char *raw;
    size_t len = strnlen(token, TOKEN_MAX + 1), n;
    int rc;

    if (len > TOKEN_MAX)
        return KB_EINVAL;
    if ((rc = b64url_decode(token, len, &raw, &n)) != 0)
        return rc;
    rc = KB_EINVAL;
    if (n < 2 || raw[0] != TOKEN_VERSION || raw[1] != (op->parent ? 'P' : 'A'))
        goto out_free;
    p = (const char *)raw + 2;
    end = (const char *)raw + n;
    for (int i = 0; i < 4; i++) {   /* four fields, exactly three NULs */
        const char *nul = memchr(p, '\0', (size_t)(end - p));

        field[i] = p;
        if ((i < 3) != (nul != NULL))
            goto out_free;
        p = nul ? nul + 1 : end;
    }
    if (strcmp(field[0], op->kind) != 0 ||
        strcmp(field[1], op->parent ? op->parent : "") != 0 ||
        (op->parent && strcmp(field[2], op->parent) != 0) ||
        field[3][0] == '\0')
        goto out_free;
    op->after_parent = strdup(field[2]);
    op->after_name = strdup(field[3]);
    rc = op->after_parent && op->after_name ? 0 : KB_ENOMEM;
out_free:
    free(raw);
    return rc;
}

/* ---- the store thread ----------------------------------------------- */

static int
run_list(kb_store *s, store_op *op)
{
    bool more;
    int rc;

    op->rows = calloc(op->page_size, sizeof(*op->rows));
    if (op->rows == NULL)
        return KB_ENOMEM;
    rc = s->be->list(s->conn, op->kind, op->parent,
                     op->after_parent ? op->after_parent : "",
                     op->after_name ? op->after_name : "",
                     op->page_size, op->rows, &op->nrows, &more);
    if (rc != 0)
        return rc;
    if (op->nrows > 0) {
        op->items = calloc(op->nrows, sizeof(*op->items));
        if (op->items == NULL)
            return KB_ENOMEM;
        for (size_t i = 0; i < op->nrows; i++)
            row_view(&op->rows[i], &op->items[i]);
    }
    if (more && op->nrows > 0)
        rc = token_encode(op, &op->rows[op->nrows - 1], &op->next_token);
    return rc;
}

/* Run one op against the backend; the result lands in op.  Returns (and
 * records) op->err. */
static int
run_op(kb_store *s, store_op *op)
{
    kb__store_key key = { op->kind, op->parent, op->name };
    kb__store_put put;
    int rc;

    op_clear_result(op);
    switch (op->type) {
    case OP_GET:
        rc = s->be->get(s->conn, &key, &op->row);
        break;
    case OP_PUT:
        put.doc            = op->doc;
        put.doc_len        = op->doc_len;
        put.mode           = op->mode;
        put.expect_version = op->expect_version;
        put.request_id     = op->request_id;
        put.now_ns         = kb_time_unix_ns();
        rc = s->be->put(s->conn, &key, &put, &op->row);
        break;
    case OP_DELETE:
        rc = s->be->del(s->conn, &key, op->expect_version, &op->row);
        break;
    case OP_LIST:
    default:
        rc = run_list(s, op);
        break;
    }
    if (rc != 0)
        op_clear_result(op);
    else if (op->type != OP_LIST)
        row_view(&op->row, &op->res);
    op->err = rc;
    kb_counter_add(s->m_ops[op->type], 1);
    return rc;
}

/* Run one op in a transaction of its own (the fallback path). */
static void
run_alone(kb_store *s, store_op *op)
{
    int rc;

    if (!op_is_write(op)) {
        run_op(s, op);
        return;
    }
    if ((rc = s->be->begin(s->conn)) != 0) {
        op_clear_result(op);
        op->err = rc;
        return;
    }
    if (run_op(s, op) != 0) {
        s->be->rollback(s->conn);
        return;
    }
    if ((rc = s->be->commit(s->conn)) != 0) {
        s->be->rollback(s->conn);
        op_clear_result(op);
        op->err = rc;
        return;
    }
    kb_counter_add(s->m_commits, 1);
}

/*
 * Group commit: every op of the batch in one transaction, each write in a
 * savepoint (a failed op is undone alone), then one COMMIT.  Reads inside
 * see the writes before them; nobody sees anything before the commit,
 * since callbacks run only after it.  If the transaction itself fails (the
 * commit, or an error that rolled it back), nothing of it was kept, and
 * each op is run again on its own so one bad op cannot fail the rest.  If
 * it cannot even begin (locked by another process past the busy timeout
 * and retries), the writes fail with that error and the reads still run.
 */
static void
run_batch(kb_store *s, store_op *batch)
{
    uint64_t t0 = kb_time_mono_ns();
    bool writes = false;
    int rc, fail_writes = 0;
    store_op *op;

    for (op = batch; op != NULL; op = op->next)
        writes = writes || op_is_write(op);
    if (!writes) {
        for (op = batch; op != NULL; op = op->next)
            run_op(s, op);
        return;
    }

    if ((rc = s->be->begin(s->conn)) != 0) {
        fail_writes = rc;       /* not any op's fault; no use retrying each */
        goto out_fallback;
    }
    for (op = batch; op != NULL; op = op->next) {
        if (!op_is_write(op)) {
            run_op(s, op);
        } else if ((rc = s->be->savepoint(s->conn)) != 0) {
            op_clear_result(op);
            op->err = rc;
        } else {
            rc = run_op(s, op);
            s->be->release(s->conn, rc == 0);
        }
        if (!s->be->in_txn(s->conn))    /* rolled back by the failure */
            goto out_fallback;
    }
    if ((rc = s->be->commit(s->conn)) != 0) {
        s->be->rollback(s->conn);
        goto out_fallback;
    }
    kb_counter_add(s->m_commits, 1);
    kb_histogram_observe(s->m_commit_seconds,
                         (double)(kb_time_mono_ns() - t0) / 1e9);
    return;

out_fallback:
    kb_log_warn("store: batch transaction failed; running its ops one by one",
                "{s:s, s:i}", "backend", s->be->name, "error", rc);
    for (op = batch; op != NULL; op = op->next) {
        if (fail_writes != 0 && op_is_write(op)) {
            op_clear_result(op);
            op->err = fail_writes;
            continue;
        }
        run_alone(s, op);
        /* Still locked out after the busy timeout and retries: fail the
         * rest now rather than wait that long for each of them. */
        if (op_is_write(op) && op->err == KB_EBUSY)
            fail_writes = KB_EBUSY;
    }
}

/* Take the front of the queue: up to BATCH_MAX_OPS ops and about
 * BATCH_MAX_BYTES of docs (at least one op).  Under s->mu. */
static store_op *
take_batch(kb_store *s)
{
    store_op *head = s->q_head, *last = head;
    size_t n = 1, bytes = head->doc_len;

    while (last->next != NULL && n < BATCH_MAX_OPS &&
           bytes + last->next->doc_len <= BATCH_MAX_BYTES) {
        last = last->next;
        bytes += last->doc_len;
        n++;
    }
    s->q_head = last->next;
    if (s->q_head == NULL)
        s->q_tail = NULL;
    last->next = NULL;
    return head;
}

/* Hand a finished batch over: sync ops to their waiting callers, the rest
 * to the loop, in order. */
static void
finish_batch(kb_store *s, store_op *batch)
{
    bool wake_sync = false, wake_loop = false;
    store_op *op, *next;

    uv_mutex_lock(&s->mu);
    for (op = batch; op != NULL; op = next) {
        next = op->next;        /* a sync op may be freed once we unlock */
        op->next = NULL;
        if (op->sync) {
            op->done = true;
            wake_sync = true;
            continue;
        }
        if (s->done_tail != NULL)
            s->done_tail->next = op;
        else
            s->done_head = op;
        s->done_tail = op;
        wake_loop = true;
    }
    if (wake_sync)
        uv_cond_broadcast(&s->done_cond);
    wake_loop = wake_loop && s->async_ready;
    uv_mutex_unlock(&s->mu);
    if (wake_loop)
        uv_async_send(&s->async);
}

static void
store_thread(void *arg)
{
    kb_store *s = arg;
    store_op *batch;
    bool wake_loop;
    int rc;

    rc = s->be->open(s->target, &s->conn);
    if (rc == 0 && (rc = s->be->migrate(s->conn)) != 0) {
        s->be->close(s->conn);
        s->conn = NULL;
    }
    uv_mutex_lock(&s->mu);
    s->opened = true;
    s->open_err = rc;
    uv_cond_broadcast(&s->done_cond);
    uv_mutex_unlock(&s->mu);
    if (rc != 0)
        return;

    for (;;) {
        uv_mutex_lock(&s->mu);
        while (s->q_head == NULL && !s->stopping)
            uv_cond_wait(&s->work_cond, &s->mu);
        if (s->q_head == NULL) {            /* stopping and drained */
            uv_mutex_unlock(&s->mu);
            break;
        }
        batch = take_batch(s);
        uv_mutex_unlock(&s->mu);
        run_batch(s, batch);
        finish_batch(s, batch);
    }

    s->be->close(s->conn);
    s->conn = NULL;
    uv_mutex_lock(&s->mu);
    s->thread_done = true;
    wake_loop = s->async_ready;
    uv_mutex_unlock(&s->mu);
    if (wake_loop)
        uv_async_send(&s->async);
}

/* ---- the loop side -------------------------------------------------- */

static void
on_async_closed(uv_handle_t *h)
{
    kb_store *s = h->data;
    void (*cb)(void *) = s->close_cb;
    void *data = s->close_data;

    uv_cond_destroy(&s->done_cond);
    uv_cond_destroy(&s->work_cond);
    uv_mutex_destroy(&s->mu);
    free(s->target);
    free(s);
    if (cb != NULL)
        cb(data);
}

/* Deliver finished ops (several sends may have coalesced into one call:
 * take the whole list), then finish a close once the thread is gone. */
static void
on_async(uv_async_t *h)
{
    kb_store *s = h->data;
    store_op *list, *op;
    size_t n = 0, bytes = 0;
    bool finished;

    uv_mutex_lock(&s->mu);
    list = s->done_head;
    s->done_head = s->done_tail = NULL;
    for (op = list; op != NULL; op = op->next) {
        n++;
        bytes += op->doc_len;
    }
    s->pending -= n;
    s->pending_bytes -= bytes;
    if (s->pending == 0)
        s->overloaded = false;
    kb_gauge_set(s->m_pending, (double)s->pending);
    uv_mutex_unlock(&s->mu);

    while ((op = list) != NULL) {
        list = op->next;
        op_deliver(op);         /* may queue more ops, or close the store */
        op_free(op);
    }

    uv_mutex_lock(&s->mu);
    finished = s->thread_done && s->done_head == NULL;
    uv_mutex_unlock(&s->mu);
    if (finished && !s->joined) {
        s->joined = true;
        uv_thread_join(&s->thread);     /* it has returned or is returning */
        uv_close((uv_handle_t *)&s->async, on_async_closed);
    }
}

/* Queue an op.  On error the op is freed and nothing will be called. */
static int
store_submit(kb_store *s, store_op *op)
{
    bool log_busy = false;
    int rc = 0;

    uv_mutex_lock(&s->mu);
    if (s->closing) {
        rc = KB_ECANCELED;
    } else if (s->pending >= s->max_pending ||
               s->pending_bytes + op->doc_len > MAX_PENDING_BYTES) {
        rc = KB_EBUSY;
        log_busy = !s->overloaded;
        s->overloaded = true;
    } else {
        if (s->q_tail != NULL)
            s->q_tail->next = op;
        else
            s->q_head = op;
        s->q_tail = op;
        s->pending++;
        s->pending_bytes += op->doc_len;
        kb_gauge_set(s->m_pending, (double)s->pending);
        uv_cond_signal(&s->work_cond);
    }
    uv_mutex_unlock(&s->mu);
    if (log_busy)
        kb_log_warn("store: queue full, refusing calls", "{s:i}",
                    "max_pending", (int)s->max_pending);
    if (rc != 0)
        op_free(op);
    return rc;
}

/* Queue an op and wait for it on this thread.  0 after cb ran with the
 * result, or the error (cb not called). */
static int
store_run_sync(kb_store *s, store_op *op)
{
    int rc;

    op->sync = true;
    if ((rc = store_submit(s, op)) != 0)
        return rc;
    uv_mutex_lock(&s->mu);
    while (!op->done)
        uv_cond_wait(&s->done_cond, &s->mu);
    s->pending--;
    s->pending_bytes -= op->doc_len;
    if (s->pending == 0)
        s->overloaded = false;
    kb_gauge_set(s->m_pending, (double)s->pending);
    uv_mutex_unlock(&s->mu);
    rc = op->err;
    if (rc == 0)
        op_deliver(op);
    op_free(op);
    return rc;
}

/* ---- opening and closing -------------------------------------------- */

/* Which backend serves a URL, and what it is given. */
static const struct {
    const char              *prefix;
    const kb__store_backend *be;        /* NULL: not in this build */
    bool                     strip;     /* hand over the rest only */
} store_urls[] = {
    { "sqlite:",       &kb__store_sqlite_backend, true  },
    { "postgres://",   NULL,                      false },
    { "postgresql://", NULL,                      false },
};

static int
store_pick_backend(const char *url, const kb__store_backend **be,
                   const char **target)
{
    for (size_t i = 0; i < sizeof(store_urls) / sizeof(store_urls[0]); i++) {
        size_t n = strlen(store_urls[i].prefix);

        if (strncmp(url, store_urls[i].prefix, n) != 0)
            continue;
        if (store_urls[i].be == NULL) {
            kb_log_error("store: backend not available in this build",
                         "{s:s}", "scheme", store_urls[i].prefix);
            return -ENOTSUP;
        }
        *be = store_urls[i].be;
        *target = store_urls[i].strip ? url + n : url;
        return 0;
    }
    if (strstr(url, "://") != NULL) {
        kb_log_error("store: unknown store URL scheme", NULL);
        return KB_EINVAL;
    }
    *be = &kb__store_sqlite_backend;    /* a plain path */
    *target = url;
    return 0;
}

static void
store_metrics(kb_store *s)
{
    char labels[32];

    for (int i = 0; i < OP__COUNT; i++) {
        snprintf(labels, sizeof(labels), "op=\"%s\"", op_names[i]);
        s->m_ops[i] = kb_counter_get("kb_store_ops_total",
                                     "Store operations run", labels);
    }
    s->m_commits = kb_counter_get("kb_store_commits_total",
                                  "Store write transactions committed", NULL);
    s->m_commit_seconds = kb_histogram_get("kb_store_commit_seconds",
        "Time to run and commit one batch of store writes", NULL,
        kb_metrics_latency_buckets, kb_metrics_latency_nbuckets);
    s->m_pending = kb_gauge_get("kb_store_pending",
                                "Store calls queued or awaiting delivery",
                                NULL);
}

int
kb_store_open(uv_loop_t *loop, const char *url, kb_store **out)
{
    const char *target;
    kb_store *s;
    int rc;

    if (loop == NULL || url == NULL || out == NULL)
        return KB_EINVAL;
    *out = NULL;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return KB_ENOMEM;
    s->loop = loop;
    s->max_pending = MAX_PENDING_DEFAULT;
    if ((rc = store_pick_backend(url, &s->be, &target)) != 0)
        goto out_free;
    if ((s->target = strdup(target)) == NULL) {
        rc = KB_ENOMEM;
        goto out_free;
    }
    if ((rc = uv_mutex_init(&s->mu)) != 0)
        goto out_free;
    if ((rc = uv_cond_init(&s->work_cond)) != 0)
        goto out_mutex;
    if ((rc = uv_cond_init(&s->done_cond)) != 0)
        goto out_work_cond;
    store_metrics(s);

    /* The thread opens the database and migrates: all SQL runs there. */
    if ((rc = uv_thread_create(&s->thread, store_thread, s)) != 0)
        goto out_done_cond;
    uv_mutex_lock(&s->mu);
    while (!s->opened)
        uv_cond_wait(&s->done_cond, &s->mu);
    rc = s->open_err;
    uv_mutex_unlock(&s->mu);
    if (rc != 0)
        goto out_join;

    if ((rc = uv_async_init(loop, &s->async, on_async)) != 0) {
        uv_mutex_lock(&s->mu);
        s->stopping = true;
        uv_cond_signal(&s->work_cond);
        uv_mutex_unlock(&s->mu);
        goto out_join;
    }
    s->async.data = s;
    uv_mutex_lock(&s->mu);
    s->async_ready = true;
    uv_mutex_unlock(&s->mu);
    *out = s;
    return 0;

out_join:
    uv_thread_join(&s->thread);
out_done_cond:
    uv_cond_destroy(&s->done_cond);
out_work_cond:
    uv_cond_destroy(&s->work_cond);
out_mutex:
    uv_mutex_destroy(&s->mu);
out_free:
    free(s->target);
    free(s);
    return rc;
}

void
kb_store_close(kb_store *s, void (*cb)(void *data), void *data)
{
    if (s == NULL) {
        if (cb != NULL)
            cb(data);
        return;
    }
    uv_mutex_lock(&s->mu);
    if (s->closing) {
        uv_mutex_unlock(&s->mu);
        kb_log_error("store: closed twice", NULL);
        return;
    }
    s->closing = true;
    s->stopping = true;
    s->close_cb = cb;
    s->close_data = data;
    uv_cond_signal(&s->work_cond);
    uv_mutex_unlock(&s->mu);
    /* The thread drains the queue, closes the database, and wakes on_async,
     * which delivers the last callbacks, joins it and closes the handle. */
}

void
kb__store_set_max_pending(kb_store *s, size_t max)
{
    uv_mutex_lock(&s->mu);
    s->max_pending = max;
    uv_mutex_unlock(&s->mu);
}

/* ---- the calls ------------------------------------------------------ */

static int
get_op(kb_store *s, const char *kind, const char *parent, const char *name,
       kb_store_res_cb cb, void *data, store_op **out)
{
    int rc = op_new(s, OP_GET, kind, parent, name, out);

    if (rc == 0) {
        (*out)->res_cb = cb;
        (*out)->data = data;
    }
    return rc;
}

/* json_dump_callback sink into a kb_buf capped at KB_STORE_DOC_MAX. */
typedef struct dump_ctx {
    kb_buf buf;
    int    err;
} dump_ctx;

static int
dump_cb(const char *p, size_t n, void *data)
{
    dump_ctx *ctx = data;

    if ((ctx->err = kb_buf_append(&ctx->buf, p, n)) != 0)
        return -1;
    return 0;
}

static int
put_op(kb_store *s, const char *kind, const char *parent, const char *name,
       json_t *doc, const kb_put_opts *opts, kb_store_res_cb cb, void *data,
       store_op **out)
{
    static const kb_put_opts upsert = { KB_PUT_UPSERT, 0, NULL };
    dump_ctx ctx = { KB_BUF_INIT(KB_STORE_DOC_MAX), 0 };
    store_op *op;
    int rc;

    if (opts == NULL)
        opts = &upsert;
    if (doc == NULL || opts->expect_version < 0 ||
        (opts->mode != KB_PUT_CREATE && opts->mode != KB_PUT_UPDATE &&
         opts->mode != KB_PUT_UPSERT) ||
        (opts->request_id != NULL &&
         !key_part_ok(opts->request_id, KB_STORE_REQID_MAX, true)))
        return KB_EINVAL;
    if ((rc = op_new(s, OP_PUT, kind, parent, name, &op)) != 0)
        return rc;

    if (json_dump_callback(doc, dump_cb, &ctx,
                           JSON_COMPACT | JSON_ENCODE_ANY) != 0) {
        rc = ctx.err ? ctx.err : KB_EINVAL;
        goto out_free;
    }
    op->doc_len = ctx.buf.len;
    if ((op->doc = kb_buf_detach(&ctx.buf)) == NULL) {
        rc = KB_ENOMEM;
        goto out_free;
    }
    if (opts->request_id != NULL && opts->request_id[0] != '\0' &&
        (op->request_id = strdup(opts->request_id)) == NULL) {
        rc = KB_ENOMEM;
        goto out_free;
    }
    op->mode = opts->mode;
    op->expect_version = opts->expect_version;
    op->res_cb = cb;
    op->data = data;
    *out = op;
    return 0;

out_free:
    kb_buf_free(&ctx.buf);
    op_free(op);
    return rc;
}

static int
delete_op(kb_store *s, const char *kind, const char *parent,
          const char *name, int64_t expect_version, kb_store_res_cb cb,
          void *data, store_op **out)
{
    int rc;

    if (expect_version < 0)
        return KB_EINVAL;
    if ((rc = op_new(s, OP_DELETE, kind, parent, name, out)) != 0)
        return rc;
    (*out)->expect_version = expect_version;
    (*out)->res_cb = cb;
    (*out)->data = data;
    return 0;
}

static int
list_op(kb_store *s, const char *kind, const char *parent, size_t page_size,
        const char *page_token, kb_store_list_cb cb, void *data,
        store_op **out)
{
    store_op *op;
    int rc;

    if ((rc = op_new(s, OP_LIST, kind, parent, NULL, &op)) != 0)
        return rc;
    op->page_size = page_size == 0 ? KB_STORE_PAGE_DEFAULT
                  : page_size > KB_STORE_PAGE_MAX ? KB_STORE_PAGE_MAX
                  : page_size;
    if (page_token != NULL && page_token[0] != '\0' &&
        (rc = token_decode(op, page_token)) != 0) {
        op_free(op);
        return rc;
    }
    op->list_cb = cb;
    op->data = data;
    *out = op;
    return 0;
}

/* Queue op (or run it and wait, for the _sync calls) once building it
 * succeeded; rc is what building it returned. */
static int
store_start(kb_store *s, int rc, store_op *op, bool sync)
{
    if (rc != 0)
        return rc;
    return sync ? store_run_sync(s, op) : store_submit(s, op);
}

int
kb_store_get(kb_store *s, const char *kind, const char *parent,
             const char *name, kb_store_res_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = get_op(s, kind, parent, name, cb, data, &op);

    return store_start(s, rc, op, false);
}

int
kb_store_put(kb_store *s, const char *kind, const char *parent,
             const char *name, json_t *doc, const kb_put_opts *opts,
             kb_store_res_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = put_op(s, kind, parent, name, doc, opts, cb, data, &op);

    return store_start(s, rc, op, false);
}

int
kb_store_delete(kb_store *s, const char *kind, const char *parent,
                const char *name, int64_t expect_version,
                kb_store_res_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = delete_op(s, kind, parent, name, expect_version, cb, data, &op);

    return store_start(s, rc, op, false);
}

int
kb_store_list(kb_store *s, const char *kind, const char *parent,
              size_t page_size, const char *page_token,
              kb_store_list_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = list_op(s, kind, parent, page_size, page_token, cb, data, &op);

    return store_start(s, rc, op, false);
}

int
kb_store_get_sync(kb_store *s, const char *kind, const char *parent,
                  const char *name, kb_store_res_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = get_op(s, kind, parent, name, cb, data, &op);

    return store_start(s, rc, op, true);
}

int
kb_store_put_sync(kb_store *s, const char *kind, const char *parent,
                  const char *name, json_t *doc, const kb_put_opts *opts,
                  kb_store_res_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = put_op(s, kind, parent, name, doc, opts, cb, data, &op);

    return store_start(s, rc, op, true);
}

int
kb_store_delete_sync(kb_store *s, const char *kind, const char *parent,
                     const char *name, int64_t expect_version,
                     kb_store_res_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = delete_op(s, kind, parent, name, expect_version, cb, data, &op);

    return store_start(s, rc, op, true);
}

int
kb_store_list_sync(kb_store *s, const char *kind, const char *parent,
                   size_t page_size, const char *page_token,
                   kb_store_list_cb cb, void *data)
{
    store_op *op = NULL;
    int rc = list_op(s, kind, parent, page_size, page_token, cb, data, &op);

    return store_start(s, rc, op, true);
}
