/*
 * logs.h - the captured output of one service: a ring of line entries
 * bounded in bytes, line splitters fed from the instances' stdout/stderr
 * pipes, and queries (kb_runtime_logs) that may wait for the next line.
 * Everything runs on the runtime's loop thread.
 */
#ifndef KB_RUNTIME_LOGS_H
#define KB_RUNTIME_LOGS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/runtime.h"

/* Longest text of one entry; a longer line becomes several entries. */
#define KB_RT_LOG_LINE_MAX   16384
/* Longest revision or instance name kept (longer ones are cut). */
#define KB_RT_LOG_NAME_MAX   255
/* Queries waiting on one service's log at most. */
#define KB_RT_LOG_WAITERS_MAX 64
/* Entries in one answer: 0 asks for the default, more is cut to the max. */
#define KB_RT_LOG_LIMIT_DEFAULT 1000
#define KB_RT_LOG_LIMIT_MAX     10000

typedef enum rt_log_stream {
    RT_LOG_STDOUT = 0,
    RT_LOG_STDERR = 1,
} rt_log_stream;

typedef struct rt_log rt_log;

/*
 * A new, empty log holding at most max_bytes of entries (each entry
 * counts its text, its names and a fixed header; the oldest entries are
 * dropped first to make room).  The loop runs the timers of waiting
 * queries.  0 and *out; KB_EINVAL (max_bytes 0), KB_ENOMEM.
 */
int  kb__rt_log_new(uv_loop_t *loop, size_t max_bytes, rt_log **out);
/*
 * Answer every waiting query with what there is, then free the log (the
 * waiters' timers close and free themselves on the loop afterwards).
 * Callbacks run from here must not use the log.  NULL is ignored.
 */
void kb__rt_log_free(rt_log *l);

/*
 * Add one line (no line end) of `len` bytes: invalid UTF-8 bytes become
 * U+FFFD; text longer than KB_RT_LOG_LINE_MAX (after that) becomes several
 * entries.  Names are copied.  Wakes the waiting queries the new entries
 * match (their callbacks run before this returns).  0, or KB_ENOMEM (the
 * line is lost and counted as dropped).
 */
int  kb__rt_log_append(rt_log *l, int64_t time_ns, const char *revision,
                       const char *instance, rt_log_stream stream,
                       const char *text, size_t len);

/* Entries dropped so far (evicted to stay in bounds, or lost). */
uint64_t kb__rt_log_dropped(const rt_log *l);
/* Bytes the entries hold now (<= max_bytes). */
size_t   kb__rt_log_bytes(const rt_log *l);
/* Entries held now. */
size_t   kb__rt_log_count(const rt_log *l);
/* The seq of the newest entry ever added (0: none yet). */
uint64_t kb__rt_log_last_seq(const rt_log *l);

/*
 * Query as kb_runtime_logs documents it: entries with seq > q->after,
 * time >= q->since_ns (0: any), of q->revision (NULL: any), oldest first,
 * at most q->limit.  The answer is {"entries": [{"seq", "time" (RFC 3339,
 * nanoseconds), "revision", "instance", "stream", "text"}], "nextSeq": N}
 * where N is the `after` of the next query in a follow loop: the seq of
 * the last entry returned when the limit cut the answer, else the newest
 * seq in the log (or q->after when that is larger).
 *
 * When an entry matches or q->wait_ms is 0, cb runs before this returns
 * and *handle is NULL.  Otherwise the query waits up to q->wait_ms for
 * a matching entry and *handle identifies it until cb has run.  cb gets a
 * new reference (NULL when out of memory) and runs exactly once; it may
 * query again or append, but must not free the log.  0;
 * KB_ETOOBIG (KB_RT_LOG_WAITERS_MAX queries wait already), KB_ENOMEM,
 * KB_ECANCELED (the log is being freed): cb not called.
 */
int  kb__rt_log_query(rt_log *l, const kb_rt_log_query *q,
                      void (*cb)(json_t *result, void *data), void *data,
                      kb_rt_log_wait **handle);
/*
 * Answer a waiting query now with what there is.  Only before its
 * callback has run; NULL is ignored.
 */
void kb__rt_log_cancel(kb_rt_log_wait *w);
/* Queries waiting now. */
size_t kb__rt_log_waiting(const rt_log *l);

/*
 * A line splitter for one (instance, stream): takes the chunks a pipe read
 * gives and appends whole lines ("\n" and a "\r" before it stripped).  A
 * partial line longer than KB_RT_LOG_LINE_MAX is appended in pieces, cut
 * at a UTF-8 boundary.  The names are borrowed: they must outlive the
 * splitter.  Holds at most KB_RT_LOG_LINE_MAX + 4 bytes, allocated only
 * while a partial line is pending.
 */
typedef struct rt_log_split {
    const char    *revision;
    const char    *instance;
    rt_log_stream  stream;
    char          *buf;         /* the partial line; NULL when none */
    size_t         len;
    size_t         cap;
    bool           cut;         /* pieces of the current line were
                                   appended already */
} rt_log_split;

void kb__rt_log_split_init(rt_log_split *s, const char *revision,
                           const char *instance, rt_log_stream stream);
/*
 * Feed `len` bytes read from the pipe; complete lines go to l (NULL:
 * discarded), stamped with the wall clock now.  0, or KB_ENOMEM (the
 * partial line is appended as it is, so nothing is held back).
 */
int  kb__rt_log_split_feed(rt_log_split *s, rt_log *l, const char *data,
                           size_t len);
/* End of the stream: append a pending partial line and release the
 * buffer.  The splitter may be fed again afterwards. */
void kb__rt_log_split_eof(rt_log_split *s, rt_log *l);
/* Release the buffer without appending anything. */
void kb__rt_log_split_free(rt_log_split *s);

#endif
