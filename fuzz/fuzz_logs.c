/*
 * fuzz_logs.c - libFuzzer target for a service's captured output: pipe
 * chunks through the line splitters into a small ring, direct appends,
 * and queries (answered at once or waiting), as a small program of ops.
 *
 * The input: 2 bytes of the ring's max_bytes (1 to 8192), then ops, each
 * a byte (op % 7) and its arguments:
 *   0 feed      splitter, n, n bytes
 *   1 big feed  splitter, byte c, 2 bytes n: copies of c, n & 0x3ff of
 *               them, or with bit 15 about KB_RT_LOG_LINE_MAX (n & 15
 *               - 8 more); newlines at most 63
 *   2 eof       splitter
 *   3 query     flags (revision, wait), since, 2 bytes after, 2 bytes limit
 *   4 append    revision length and bytes, stream, text length and bytes
 *   5 cancel    the oldest waiting query
 *   6 reset     splitter (drop its partial line)
 * Checked: the ring's byte bound and seq accounting after every op; every
 * answer is valid JSON in order, within the limit, complete when nothing
 * filters it; each splitter gives the same entries (or, with lines longer
 * than KB_RT_LOG_LINE_MAX, the same text) fed in chunks as fed at once.
 * A broken rule aborts with the reason.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/time.h"
#include "runtime/logs.h"

#define FUZZ_MAX_INPUT   (64 * 1024)
#define FUZZ_MAX_FED     (64 * 1024)    /* bytes fed in all, big feeds too */
#define FUZZ_SPLITTERS   3
#define FUZZ_WAITERS     16
#define FUZZ_BIG_LOG     (64u << 20)    /* never evicts what is fed */
#define FUZZ_WAIT_MS     3600000        /* waiting queries never time out */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char long_name[300];

/* The program's reader. */
typedef struct reader {
    const uint8_t *p;
    size_t         n;
} reader;

static unsigned
rd_byte(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static unsigned
rd_u16(reader *r)
{
    unsigned lo = rd_byte(r);

    return lo | rd_byte(r) << 8;
}

static const uint8_t *
rd_bytes(reader *r, size_t *n)
{
    const uint8_t *p = r->p;

    if (*n > r->n)
        *n = r->n;
    r->p += *n, r->n -= *n;
    return p;
}

static void
die(const char *why, const json_t *res)
{
    char *s = res != NULL ? json_dumps(res, JSON_COMPACT) : NULL;

    fprintf(stderr, "fuzz_logs: %s\n  answer: %.2000s\n", why,
            s != NULL ? s : "(none)");
    free(s);
    abort();
}

/* ---- answers ---------------------------------------------------------- */

typedef struct asked {
    rt_log          *log;
    kb_rt_log_query  q;
    size_t           limit;          /* as the log applies it */
    bool             answered;
    bool             immediate;      /* cb ran inside the query call */
    uint64_t         last_seq;       /* the log's, when asked */
    size_t           count;
    kb_rt_log_wait  *handle;
} asked;

static void
check_answer(json_t *res, void *data)
{
    asked *a = data;
    const json_t *entries, *e, *next;
    uint64_t prev, hi;
    size_t i, n;
    char *text;
    json_t *back;

    if (a->answered)
        die("a query is answered twice", res);
    a->answered = true;
    a->handle = NULL;
    if (res == NULL)
        die("no answer (out of memory?)", NULL);
    text = json_dumps(res, JSON_COMPACT);
    back = text != NULL ? json_loads(text, JSON_ALLOW_NUL, NULL) : NULL;
    if (back == NULL || !json_equal(back, res))
        die("the answer does not survive JSON text", res);
    json_decref(back);
    free(text);

    entries = json_object_get(res, "entries");
    next = json_object_get(res, "nextSeq");
    n = json_array_size(entries);
    if (!json_is_array(entries) || !json_is_integer(next))
        die("no entries or nextSeq", res);
    if (n > a->limit)
        die("more entries than the limit", res);
    prev = a->q.after;
    json_array_foreach(entries, i, e) {
        const json_t *seq = json_object_get(e, "seq");
        const char *rev = json_string_value(json_object_get(e, "revision"));
        const char *st = json_string_value(json_object_get(e, "stream"));

        if (!json_is_integer(seq) || (uint64_t)json_integer_value(seq) <= prev)
            die("entries not in seq order after `after`", res);
        prev = (uint64_t)json_integer_value(seq);
        if (rev == NULL || !json_is_string(json_object_get(e, "instance"))
            || !json_is_string(json_object_get(e, "text"))
            || !json_is_string(json_object_get(e, "time")) || st == NULL
            || (strcmp(st, "stdout") != 0 && strcmp(st, "stderr") != 0))
            die("an entry lacks a field", res);
        if (a->q.revision != NULL && strcmp(rev, a->q.revision) != 0)
            die("an entry of another revision", res);
    }
    if ((uint64_t)json_integer_value(next) < a->q.after
        || (n > 0 && (uint64_t)json_integer_value(next) < prev))
        die("nextSeq goes back", res);
    /* Unfiltered answers given at once are complete. */
    hi = a->last_seq > a->q.after ? a->last_seq : a->q.after;
    if (a->immediate && a->q.revision == NULL && a->q.since_ns == 0) {
        size_t want = a->q.after >= a->last_seq ? 0
            : a->last_seq - a->q.after < a->count
              ? (size_t)(a->last_seq - a->q.after) : a->count;
        if (n != (want < a->limit ? want : a->limit))
            die("an unfiltered answer misses entries", res);
        if (n < a->limit && (uint64_t)json_integer_value(next) != hi)
            die("nextSeq is not the newest seq", res);
    }
    if (a->immediate && (uint64_t)json_integer_value(next) > hi)
        die("nextSeq is past the newest seq", res);
    json_decref(res);
}

/* ---- the ring's own bounds -------------------------------------------- */

static void
check_ring(const rt_log *l, size_t max)
{
    if (kb__rt_log_bytes(l) > max)
        die("the ring holds more than max_bytes", NULL);
    if (kb__rt_log_count(l) == 0 && kb__rt_log_bytes(l) != 0)
        die("an empty ring counts bytes", NULL);
    if (kb__rt_log_count(l) + kb__rt_log_dropped(l) < kb__rt_log_last_seq(l))
        die("entries vanished without being counted as dropped", NULL);
}

/* ---- chunked versus at once -------------------------------------------- */

/* One splitter fed in chunks (into the small ring and into `chunked`) and
 * the same bytes fed at once between eofs (into `whole`). */
typedef struct fz_stream {
    rt_log_split  s, sc, sw;
    rt_log       *chunked, *whole;
    char         *acc;               /* bytes since the last eof */
    size_t        acclen, acccap;
    bool          long_line;         /* a line's text > KB_RT_LOG_LINE_MAX */
    bool          reset;             /* a partial line was dropped */
} fz_stream;

static void
stream_feed(fz_stream *st, rt_log *l, const char *p, size_t n)
{
    kb__rt_log_split_feed(&st->s, l, p, n);
    kb__rt_log_split_feed(&st->sc, st->chunked, p, n);
    if (n == 0)
        return;
    if (st->acclen + n > st->acccap) {
        size_t cap = st->acccap ? st->acccap : 1024;
        char *b;
        while (cap < st->acclen + n)
            cap *= 2;
        if ((b = realloc(st->acc, cap)) == NULL)
            abort();
        st->acc = b, st->acccap = cap;
    }
    memcpy(st->acc + st->acclen, p, n);
    st->acclen += n;
}

/* Would some line of the accumulated bytes be cut into pieces? */
static void
note_long_lines(fz_stream *st)
{
    const char *p = st->acc, *end;

    if (st->acclen == 0)
        return;
    end = p + st->acclen;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl != NULL ? nl : end) - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n > KB_RT_LOG_LINE_MAX)
            st->long_line = true;
        p = nl != NULL ? nl + 1 : end;
    }
}

static void
stream_eof(fz_stream *st, rt_log *l)
{
    kb__rt_log_split_eof(&st->s, l);
    kb__rt_log_split_eof(&st->sc, st->chunked);
    note_long_lines(st);
    kb__rt_log_split_feed(&st->sw, st->whole, st->acc, st->acclen);
    kb__rt_log_split_eof(&st->sw, st->whole);
    st->acclen = 0;
}

static void
collect(json_t *res, void *data)
{
    *(json_t **)data = res;
}

/* Every entry's text of a log, oldest first, as a JSON array. */
static json_t *
texts(rt_log *l)
{
    json_t *out = json_array(), *res;
    kb_rt_log_query q = { NULL, 0, 0, KB_RT_LOG_LIMIT_MAX, 0 };
    kb_rt_log_wait *h;
    size_t i;
    const json_t *e;

    for (;;) {
        res = NULL;
        if (kb__rt_log_query(l, &q, collect, &res, &h) != 0 || res == NULL)
            die("a query of the reference log fails", NULL);
        json_array_foreach(json_object_get(res, "entries"), i, e)
            json_array_append(out, json_object_get(e, "text"));
        if (json_array_size(json_object_get(res, "entries")) == 0) {
            json_decref(res);
            return out;
        }
        q.after = (uint64_t)json_integer_value(json_object_get(res,
                                                               "nextSeq"));
        json_decref(res);
    }
}

static json_t *
joined(const json_t *a)
{
    size_t i, n = 0;
    const json_t *t;
    char *buf;
    json_t *out;

    json_array_foreach(a, i, t)
        n += json_string_length(t);
    if ((buf = malloc(n + 1)) == NULL)
        abort();
    n = 0;
    json_array_foreach(a, i, t) {
        memcpy(buf + n, json_string_value(t), json_string_length(t));
        n += json_string_length(t);
    }
    out = json_stringn_nocheck(buf, n);
    free(buf);
    return out;
}

/* The lengths of a list of texts (to print). */
static json_t *
lengths(const json_t *a)
{
    json_t *out = json_array();
    const json_t *t;
    size_t i;

    json_array_foreach(a, i, t)
        json_array_append_new(out, json_integer((json_int_t)
                                                json_string_length(t)));
    return out;
}

static void
stream_compare(fz_stream *st)
{
    json_t *a = texts(st->chunked), *b = texts(st->whole);

    if (!st->long_line && !json_equal(a, b)) {
        json_t *both = json_pack("{s:o, s:o}", "chunked", lengths(a),
                                 "whole", lengths(b));
        die("a splitter's entries depend on how the bytes were chunked "
            "(the entries' lengths follow)", both);
    }
    if (st->long_line) {
        json_t *ja = joined(a), *jb = joined(b);
        if (!json_equal(ja, jb))
            die("a splitter's text depends on how the bytes were chunked",
                NULL);
        json_decref(ja);
        json_decref(jb);
    }
    json_decref(a);
    json_decref(b);
}

/* ---- the program ---------------------------------------------------------- */

static uv_loop_t *
fuzz_loop(void)
{
    static uv_loop_t loop;
    static bool ready;

    if (!ready) {
        if (uv_loop_init(&loop) != 0)
            abort();
        memset(long_name, 'r', sizeof(long_name) - 1);
        long_name[7] = '\x01';
        ready = true;
    }
    return &loop;
}

static void
run_query(rt_log *l, size_t max, reader *r, asked *waiting, size_t *nwaiting)
{
    static const char *const rev_by_flag[] = {
        NULL, "svc-00001-abc", "svc-00002-xyz", "nope", long_name,
    };
    unsigned flags = rd_byte(r), since = rd_byte(r);
    asked a = { .log = l }, *slot = &a;
    kb_rt_log_wait *h = NULL;
    int rc;

    a.q.revision = rev_by_flag[(flags & 0x7f) % 5];
    a.q.since_ns = since == 0 ? 0
        : since < 128 ? kb_time_unix_ns() - (int64_t)since * 1000000
        : kb_time_unix_ns() + (int64_t)since * 1000000000;
    a.q.after = rd_u16(r);
    a.q.limit = rd_u16(r);
    a.q.wait_ms = (flags & 0x80) && *nwaiting < FUZZ_WAITERS ? FUZZ_WAIT_MS
                                                             : 0;
    a.limit = a.q.limit == 0 ? KB_RT_LOG_LIMIT_DEFAULT
            : a.q.limit > KB_RT_LOG_LIMIT_MAX ? KB_RT_LOG_LIMIT_MAX
            : a.q.limit;
    a.last_seq = kb__rt_log_last_seq(l);
    a.count = kb__rt_log_count(l);
    a.immediate = true;
    if (a.q.wait_ms > 0) {
        slot = &waiting[(*nwaiting)++];
        *slot = a;
    }
    rc = kb__rt_log_query(l, &slot->q, check_answer, slot, &h);
    if (rc != 0)
        die("a query fails", NULL);
    if (h == NULL && !slot->answered)
        die("no handle and no answer", NULL);
    if (h != NULL) {
        if (slot->answered)
            die("a handle for an answered query", NULL);
        slot->handle = h;
        slot->immediate = false;
    }
    if (a.q.wait_ms == 0 && !slot->answered)
        die("a query without wait is not answered at once", NULL);
    (void)max;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uv_loop_t *loop = fuzz_loop();
    reader r = { data, size };
    size_t max, fed = 0, nwaiting = 0;
    rt_log *l = NULL;
    fz_stream st[FUZZ_SPLITTERS];
    asked waiting[FUZZ_WAITERS];
    static const struct {
        const char   *rev, *inst;
        rt_log_stream stream;
    } who[FUZZ_SPLITTERS] = {
        { "svc-00001-abc", "i-1", RT_LOG_STDOUT },
        { "svc-00001-abc", "i-1", RT_LOG_STDERR },
        { "svc-00002-xyz", "i\x7f-2", RT_LOG_STDOUT },
    };

    if (size > FUZZ_MAX_INPUT)
        return 0;
    max = 1 + rd_u16(&r) % 8192;
    if (kb__rt_log_new(loop, max, &l) != 0)
        abort();
    memset(st, 0, sizeof(st));
    for (int i = 0; i < FUZZ_SPLITTERS; i++) {
        const char *rev = i == 2 && (size & 1) ? long_name : who[i].rev;
        kb__rt_log_split_init(&st[i].s, rev, who[i].inst, who[i].stream);
        kb__rt_log_split_init(&st[i].sc, rev, who[i].inst, who[i].stream);
        kb__rt_log_split_init(&st[i].sw, rev, who[i].inst, who[i].stream);
        if (kb__rt_log_new(loop, FUZZ_BIG_LOG, &st[i].chunked) != 0
            || kb__rt_log_new(loop, FUZZ_BIG_LOG, &st[i].whole) != 0)
            abort();
    }

    while (r.n > 0) {
        unsigned op = rd_byte(&r) % 7;
        fz_stream *s = &st[rd_byte(&r) % FUZZ_SPLITTERS];

        switch (op) {
        case 0: {
            size_t n = rd_byte(&r);
            const uint8_t *p = rd_bytes(&r, &n);
            fed += n;
            stream_feed(s, l, (const char *)p, n);
            break;
        }
        case 1: {
            unsigned c = rd_byte(&r);
            size_t n = rd_u16(&r);
            /* short, or around the line limit */
            n = n & 0x8000 ? KB_RT_LOG_LINE_MAX - 8 + (n & 15) : n & 0x3ff;
            char *p;
            if (c == '\n')
                n %= 64;            /* many empty entries: slow, no news */
            if (fed + n > FUZZ_MAX_FED)
                break;
            if ((p = malloc(n + 1)) == NULL)
                abort();
            memset(p, (int)c, n);
            fed += n;
            stream_feed(s, l, p, n);
            free(p);
            break;
        }
        case 2:
            stream_eof(s, l);
            break;
        case 3:
            r.p--, r.n++;           /* the splitter byte is the flags */
            run_query(l, max, &r, waiting, &nwaiting);
            break;
        case 4: {
            size_t rn = rd_byte(&r), tn;
            const uint8_t *rp = rd_bytes(&r, &rn);
            char rev[256];
            unsigned which = rd_byte(&r);
            const uint8_t *tp;
            memcpy(rev, rp, rn);
            rev[rn] = '\0';
            tn = rd_byte(&r) * 64;
            tp = rd_bytes(&r, &tn);
            kb__rt_log_append(l, kb_time_unix_ns(), rn > 0 ? rev : NULL,
                              NULL, (rt_log_stream)(which % 4),
                              (const char *)tp, tn);
            break;
        }
        case 5:
            for (size_t i = 0; i < nwaiting; i++)
                if (waiting[i].handle != NULL) {
                    kb__rt_log_cancel(waiting[i].handle);
                    if (!waiting[i].answered)
                        die("a cancelled query is not answered", NULL);
                    break;
                }
            break;
        case 6:
            kb__rt_log_split_free(&s->s);
            kb__rt_log_split_free(&s->sc);
            s->reset = true;
            break;
        }
        check_ring(l, max);
    }

    for (int i = 0; i < FUZZ_SPLITTERS; i++) {
        stream_eof(&st[i], l);
        check_ring(l, max);
        if (!st[i].reset)
            stream_compare(&st[i]);
        kb__rt_log_split_free(&st[i].s);
        kb__rt_log_split_free(&st[i].sc);
        kb__rt_log_split_free(&st[i].sw);
        kb__rt_log_free(st[i].chunked);
        kb__rt_log_free(st[i].whole);
        free(st[i].acc);
    }
    kb__rt_log_free(l);
    for (size_t i = 0; i < nwaiting; i++)
        if (!waiting[i].answered)
            die("a waiting query is never answered", NULL);
    uv_run(loop, UV_RUN_NOWAIT);    /* the waiters' timers close */
    return 0;
}
