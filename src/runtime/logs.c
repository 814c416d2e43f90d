/*
 * logs.c - a service's captured output (see logs.h): entries in a ring of
 * pointers indexed by seq, evicted oldest first to stay under a byte
 * bound; line splitters for the pipes; queries, some of which wait (each
 * waiter owns a timer and frees itself in its close callback).
 */
#include "runtime/logs.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/time.h"

typedef struct rt_log_entry {
    uint64_t seq;
    int64_t  time_ns;
    size_t   size;              /* what it counts against the bound */
    uint32_t text_len;
    uint16_t rev_len;
    uint8_t  stream;
    char    *rev;               /* into data */
    char    *inst;
    char    *text;
    char     data[];            /* revision \0 instance \0 text \0 */
} rt_log_entry;

struct kb_rt_log_wait {
    rt_log          *log;       /* NULL once answered */
    kb_rt_log_wait  *prev, *next;
    uv_timer_t       timer;
    void           (*cb)(json_t *result, void *data);
    void            *data;
    char            *revision;  /* own copy; NULL: any */
    int64_t          since_ns;
    uint64_t         after;
    size_t           limit;
};

struct rt_log {
    uv_loop_t       *loop;
    size_t           max_bytes;
    size_t           bytes;
    rt_log_entry   **ring;      /* ring[(head + i) % cap], i = 0 oldest */
    size_t           cap;
    size_t           head;
    size_t           count;
    uint64_t         next_seq;  /* seq of the next entry; seqs of held
                                   entries are next_seq - count … */
    uint64_t         dropped;
    kb_rt_log_wait  *waiters;
    size_t           nwaiting;
    bool             freeing;
};

static const char *const stream_names[] = {
    [RT_LOG_STDOUT] = "stdout",
    [RT_LOG_STDERR] = "stderr",
};

/* ---- UTF-8 ---- */

/* Length of the well-formed UTF-8 sequence at s (n bytes there), 0 when
 * invalid or cut short.  Overlongs, surrogates and > U+10FFFF are invalid
 * (as jansson checks). */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    uint32_t cp, min;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c < 0xc2)
        return 0;
    if (c < 0xe0) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c < 0xf0) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c < 0xf5) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/*
 * How many bytes of s[0..n) fit in at most `max` bytes once each invalid
 * byte becomes U+FFFD (3 bytes); *outlen gets their size after that.
 * Always takes at least one byte when n > 0 (max >= 4).
 */
static size_t
utf8_span(const unsigned char *s, size_t n, size_t max, size_t *outlen)
{
    size_t in = 0, out = 0;

    while (in < n) {
        size_t k = utf8_seq(s + in, n - in);
        size_t w = k > 0 ? k : 3;

        if (out + w > max)
            break;
        out += w;
        in += k > 0 ? k : 1;
    }
    *outlen = out;
    return in;
}

/* Copy s[0..n) to dst with invalid bytes replaced (size: utf8_span). */
static void
utf8_copy(char *dst, const unsigned char *s, size_t n)
{
    size_t in = 0;

    while (in < n) {
        size_t k = utf8_seq(s + in, n - in);

        if (k > 0) {
            memcpy(dst, s + in, k);
            dst += k, in += k;
        } else {
            memcpy(dst, "\xef\xbf\xbd", 3);
            dst += 3, in += 1;
        }
    }
}

/* Bytes at the end of s[0..n) that start a UTF-8 sequence cut short
 * (0..3), to be held until the rest arrives. */
static size_t
utf8_tail(const unsigned char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = s[n - back];
        size_t need;

        if ((c & 0xc0) == 0x80)
            continue;                   /* continuation: look further */
        need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Copy a name: at most KB_RT_LOG_NAME_MAX bytes, anything but printable
 * ASCII as '?'.  Returns its length. */
static size_t
name_copy(char *dst, const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];

        dst[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    dst[n] = '\0';
    return n;
}

static size_t
name_len(const char *name)
{
    return name == NULL ? 0 : strnlen(name, KB_RT_LOG_NAME_MAX);
}

/* ---- the ring ---- */

static rt_log_entry *
ring_at(const rt_log *l, size_t i)
{
    return l->ring[(l->head + i) % l->cap];
}

static void
ring_pop(rt_log *l)
{
    rt_log_entry *e = l->ring[l->head];

    l->ring[l->head] = NULL;
    l->head = (l->head + 1) % l->cap;
    l->count--;
    l->bytes -= e->size;
    l->dropped++;
    free(e);
}

/* Room for one more pointer: double the ring, oldest first again. */
static int
ring_reserve(rt_log *l)
{
    rt_log_entry **n;
    size_t cap;

    if (l->count < l->cap)
        return 0;
    cap = l->cap == 0 ? 64 : l->cap * 2;
    n = malloc(cap * sizeof(*n));
    if (n == NULL)
        return KB_ENOMEM;
    for (size_t i = 0; i < l->count; i++)
        n[i] = ring_at(l, i);
    free(l->ring);
    l->ring = n;
    l->cap = cap;
    l->head = 0;
    return 0;
}

int
kb__rt_log_new(uv_loop_t *loop, size_t max_bytes, rt_log **out)
{
    rt_log *l;

    *out = NULL;
    if (max_bytes == 0 || loop == NULL)
        return KB_EINVAL;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return KB_ENOMEM;
    l->loop = loop;
    l->max_bytes = max_bytes;
    l->next_seq = 1;
    *out = l;
    return 0;
}

uint64_t kb__rt_log_dropped(const rt_log *l) { return l->dropped; }
size_t   kb__rt_log_bytes(const rt_log *l) { return l->bytes; }
size_t   kb__rt_log_count(const rt_log *l) { return l->count; }
uint64_t kb__rt_log_last_seq(const rt_log *l) { return l->next_seq - 1; }
size_t   kb__rt_log_waiting(const rt_log *l) { return l->nwaiting; }

/* ---- queries ---- */

static bool
entry_matches(const rt_log_entry *e, const char *revision, int64_t since_ns,
              uint64_t after)
{
    if (e->seq <= after)
        return false;
    if (since_ns > 0 && e->time_ns < since_ns)
        return false;
    return revision == NULL || strcmp(e->rev, revision) == 0;
}

static json_t *
entry_json(const rt_log_entry *e)
{
    char t[KB_RFC3339_LEN];

    kb_time_rfc3339(t, sizeof(t), e->time_ns, 9);
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s%}",
                     "seq", (json_int_t)e->seq, "time", t,
                     "revision", e->rev, "instance", e->inst,
                     "stream", stream_names[e->stream],
                     "text", e->text, (size_t)e->text_len);
}

/* The answer to a query (new reference; NULL: out of memory) and in *n
 * how many entries it holds. */
static json_t *
log_answer(const rt_log *l, const char *revision, int64_t since_ns,
           uint64_t after, size_t limit, size_t *n)
{
    uint64_t first = l->next_seq - l->count;
    uint64_t next = l->next_seq - 1 > after ? l->next_seq - 1 : after;
    uint64_t last = after;
    size_t i = 0;
    json_t *entries, *res;

    *n = 0;
    entries = json_array();
    if (entries == NULL)
        return NULL;
    if (after >= first)
        i = after - first + 1 < l->count ? (size_t)(after - first + 1)
                                         : l->count;
    for (; i < l->count; i++) {
        const rt_log_entry *e = ring_at(l, i);

        if (!entry_matches(e, revision, since_ns, after))
            continue;
        if (*n == limit) {              /* more than fit: resume after */
            next = last;
            break;
        }
        last = e->seq;
        if (json_array_append_new(entries, entry_json(e)) < 0) {
            json_decref(entries);
            return NULL;
        }
        (*n)++;
    }
    res = json_pack("{s:o, s:I}", "entries", entries, "nextSeq",
                    (json_int_t)next);
    return res;
}

static void
wait_closed(uv_handle_t *h)
{
    kb_rt_log_wait *w = h->data;

    free(w->revision);
    free(w);
}

/* Answer a waiting query with what there is now; it frees itself. */
static void
wait_answer(kb_rt_log_wait *w)
{
    rt_log *l = w->log;
    size_t n;
    json_t *res = log_answer(l, w->revision, w->since_ns, w->after,
                             w->limit, &n);

    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        l->waiters = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    l->nwaiting--;
    w->log = NULL;
    uv_close((uv_handle_t *)&w->timer, wait_closed);
    w->cb(res, w->data);
}

static void
wait_timeout(uv_timer_t *t)
{
    kb_rt_log_wait *w = t->data;

    if (w->log != NULL)
        wait_answer(w);
}

int
kb__rt_log_query(rt_log *l, const kb_rt_log_query *q,
                 void (*cb)(json_t *result, void *data), void *data,
                 kb_rt_log_wait **handle)
{
    size_t limit = q->limit == 0 ? KB_RT_LOG_LIMIT_DEFAULT
                 : q->limit > KB_RT_LOG_LIMIT_MAX ? KB_RT_LOG_LIMIT_MAX
                 : q->limit;
    kb_rt_log_wait *w;
    json_t *res;
    size_t n;
    int err;

    *handle = NULL;
    if (l->freeing)
        return KB_ECANCELED;
    res = log_answer(l, q->revision, q->since_ns, q->after, limit, &n);
    if (res == NULL)
        return KB_ENOMEM;
    if (n > 0 || q->wait_ms == 0) {
        cb(res, data);
        return 0;
    }
    json_decref(res);
    if (l->nwaiting >= KB_RT_LOG_WAITERS_MAX)
        return KB_ETOOBIG;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KB_ENOMEM;
    if (q->revision != NULL) {
        w->revision = strdup(q->revision);
        if (w->revision == NULL) {
            err = KB_ENOMEM;
            goto out_free;
        }
    }
    err = uv_timer_init(l->loop, &w->timer);
    if (err < 0)
        goto out_free_revision;
    w->timer.data = w;
    w->log = l;
    w->cb = cb;
    w->data = data;
    w->since_ns = q->since_ns;
    w->after = q->after;
    w->limit = limit;
    w->next = l->waiters;
    if (l->waiters != NULL)
        l->waiters->prev = w;
    l->waiters = w;
    l->nwaiting++;
    uv_timer_start(&w->timer, wait_timeout, q->wait_ms, 0);
    *handle = w;
    return 0;

out_free_revision:
    free(w->revision);
out_free:
    free(w);
    return err;
}

void
kb__rt_log_cancel(kb_rt_log_wait *w)
{
    if (w != NULL && w->log != NULL)
        wait_answer(w);
}

/* Answer the waiters that entry e matches.  A callback may add or cancel
 * waiters, so start over after each answer (at most 64 of them); a waiter
 * added meanwhile has seen e already and does not match it. */
static void
wake_waiters(rt_log *l, const rt_log_entry *e)
{
    for (;;) {
        kb_rt_log_wait *w = l->waiters;

        while (w != NULL &&
               !entry_matches(e, w->revision, w->since_ns, w->after))
            w = w->next;
        if (w == NULL)
            return;
        wait_answer(w);
    }
}

void
kb__rt_log_free(rt_log *l)
{
    if (l == NULL)
        return;
    l->freeing = true;
    while (l->waiters != NULL)
        wait_answer(l->waiters);
    for (size_t i = 0; i < l->count; i++)
        free(ring_at(l, i));
    free(l->ring);
    free(l);
}

/* ---- appending ---- */

/* One entry of `outlen` bytes made from text[0..len). */
static int
entry_add(rt_log *l, int64_t time_ns, const char *revision,
          const char *instance, rt_log_stream stream,
          const unsigned char *text, size_t len, size_t outlen)
{
    size_t rlen = name_len(revision), ilen = name_len(instance);
    size_t size = sizeof(rt_log_entry) + rlen + ilen + outlen + 3;
    rt_log_entry *e;

    if (size > l->max_bytes) {
        l->dropped++;
        return 0;
    }
    e = malloc(size);
    if (e == NULL)
        goto out_lost;
    e->time_ns = time_ns;
    e->size = size;
    e->stream = (uint8_t)stream;
    e->rev_len = (uint16_t)rlen;
    e->text_len = (uint32_t)outlen;
    e->rev = e->data;
    name_copy(e->rev, revision, rlen);
    e->inst = e->rev + rlen + 1;
    name_copy(e->inst, instance, ilen);
    e->text = e->inst + ilen + 1;
    utf8_copy(e->text, text, len);
    e->text[outlen] = '\0';
    while (l->count > 0 && l->bytes + size > l->max_bytes)
        ring_pop(l);
    if (ring_reserve(l) < 0) {
        free(e);
        goto out_lost;
    }
    e->seq = l->next_seq++;
    l->ring[(l->head + l->count) % l->cap] = e;
    l->count++;
    l->bytes += size;
    wake_waiters(l, e);
    return 0;

out_lost:
    l->dropped++;
    return KB_ENOMEM;
}

int
kb__rt_log_append(rt_log *l, int64_t time_ns, const char *revision,
                  const char *instance, rt_log_stream stream,
                  const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    int err = 0;

    if (l == NULL || l->freeing)
        return 0;
    if ((unsigned)stream > RT_LOG_STDERR)
        stream = RT_LOG_STDERR;
    do {
        size_t outlen, in = utf8_span(p, len, KB_RT_LOG_LINE_MAX, &outlen);
        int e = entry_add(l, time_ns, revision, instance, stream, p, in,
                          outlen);

        if (e < 0)
            err = e;
        p += in, len -= in;
    } while (len > 0);
    return err;
}

/* ---- line splitting ---- */

void
kb__rt_log_split_init(rt_log_split *s, const char *revision,
                      const char *instance, rt_log_stream stream)
{
    memset(s, 0, sizeof(*s));
    s->revision = revision;
    s->instance = instance;
    s->stream = stream;
}

void
kb__rt_log_split_free(rt_log_split *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    s->cut = false;
}

/* Append a complete line, without its "\r" if it ends with one.  Nothing
 * left of a line already appended in pieces is no entry of its own. */
static int
emit_line(rt_log_split *s, rt_log *l, int64_t now, const char *p, size_t n)
{
    bool cut = s->cut;

    s->cut = false;
    if (n > 0 && p[n - 1] == '\r')
        n--;
    if (n == 0 && cut)
        return 0;
    return kb__rt_log_append(l, now, s->revision, s->instance, s->stream,
                             p, n);
}

/* Buffer a part of the current line; when the buffer reaches
 * KB_RT_LOG_LINE_MAX, append what it holds up to a UTF-8 boundary, keeping
 * a cut sequence and a final "\r" (which may be half of a CRLF). */
static int
buffer_add(rt_log_split *s, rt_log *l, int64_t now, const char *p, size_t n)
{
    int err = 0;

    while (n > 0) {
        size_t take = KB_RT_LOG_LINE_MAX - s->len;

        if (take > n)
            take = n;
        if (s->len + take > s->cap) {
            size_t cap = s->cap == 0 ? 256 : s->cap;
            char *b;

            while (cap < s->len + take)
                cap *= 2;
            if (cap > KB_RT_LOG_LINE_MAX)
                cap = KB_RT_LOG_LINE_MAX;
            b = realloc(s->buf, cap);
            if (b == NULL) {
                /* Hold nothing back: what we have, then the rest. */
                if (s->len > 0)
                    kb__rt_log_append(l, now, s->revision, s->instance,
                                      s->stream, s->buf, s->len);
                kb__rt_log_append(l, now, s->revision, s->instance,
                                  s->stream, p, n);
                s->len = 0;
                s->cut = true;
                return KB_ENOMEM;
            }
            s->buf = b;
            s->cap = cap;
        }
        memcpy(s->buf + s->len, p, take);
        s->len += take;
        p += take, n -= take;
        if (s->len == KB_RT_LOG_LINE_MAX) {
            size_t keep = utf8_tail((unsigned char *)s->buf, s->len);
            int e;

            if (keep == 0 && s->buf[s->len - 1] == '\r')
                keep = 1;
            e = kb__rt_log_append(l, now, s->revision, s->instance,
                                  s->stream, s->buf, s->len - keep);
            if (e < 0)
                err = e;
            s->cut = true;
            memmove(s->buf, s->buf + s->len - keep, keep);
            s->len = keep;
        }
    }
    return err;
}

int
kb__rt_log_split_feed(rt_log_split *s, rt_log *l, const char *data,
                      size_t len)
{
    int64_t now = kb_time_unix_ns();
    int err = 0, e;

    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t n;

        if (nl == NULL) {
            e = buffer_add(s, l, now, data, len);
            return e < 0 ? e : err;
        }
        n = (size_t)(nl - data);
        if (s->len == 0) {
            e = emit_line(s, l, now, data, n);
        } else {
            e = buffer_add(s, l, now, data, n);
            if (emit_line(s, l, now, s->buf, s->len) < 0)
                e = KB_ENOMEM;
            kb__rt_log_split_free(s);
        }
        if (e < 0)
            err = e;
        data += n + 1, len -= n + 1;
    }
    return err;
}

void
kb__rt_log_split_eof(rt_log_split *s, rt_log *l)
{
    if (s->len > 0)
        emit_line(s, l, kb_time_unix_ns(), s->buf, s->len);
    kb__rt_log_split_free(s);
}
