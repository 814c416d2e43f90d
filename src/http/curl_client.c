/*
 * curl_client.c - upstream calls over https and HTTP/2 (see curl_client.h).
 *
 * One libcurl multi handle per client, driven by the client's libuv loop:
 * curl tells us which sockets to watch (sock_cb → one uv_poll_t each) and
 * when to wake it (timer_cb → one uv_timer_t); we hand readiness back with
 * curl_multi_socket_action() and collect finished transfers with
 * curl_multi_info_read().  Each call is one easy handle; the multi handle
 * keeps the connection cache (kept-alive TLS connections, multiplexed
 * HTTP/2 connections) and a share handle keeps TLS sessions and DNS.
 */
#include "http/curl_client.h"
#include "http/parser.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY      (32u << 20)
#define DEFAULT_CALL_MS       15000L
#define CONNECT_MS            5000L
#define MAX_HEADERS           100u      /* per block: head, trailers */
#define MAX_HEAD_BYTES        (64u * 1024)
#define MAX_HOST_CONNECTIONS  256L      /* per host:port, then curl queues */
#define MAX_CACHED_CONNS      256L      /* idle connections kept by the multi */
#define MAX_TARGET            (64u * 1024)

typedef struct kb_curl_sock kb_curl_sock;

/* A socket curl asked us to watch; freed in its close callback. */
struct kb_curl_sock {
    uv_poll_t       poll;
    kb_curl_client *c;
    curl_socket_t   fd;
    kb_curl_sock   *prev, *next;
    bool            closing;
};

/*
 * Header fields as received: "name\0value\0" pairs in `bytes`, located by
 * offsets so the buffer may grow; turned into kb_http_header at the end.
 */
typedef struct field_list {
    kb_buf  bytes;
    size_t  name_off[MAX_HEADERS];
    size_t  value_off[MAX_HEADERS];
    size_t  n;
} field_list;

struct kb_curl_call {
    kb_curl_client    *c;
    kb_curl_call      *prev, *next;     /* the client's calls in flight */
    CURL              *easy;
    struct curl_slist *hdrs;
    char              *url;
    char              *target;
    char              *method;
    char              *body;            /* our copy; curl reads it in place */
    char              *host;            /* for log lines */
    int                port;
    kb_http_client_cb  cb;
    void              *data;
    field_list         head;
    field_list         trailers;
    kb_buf             rbody;
    int                status;
    int                version_minor;
    int                err;             /* set by our curl callbacks */
    bool               in_trailers;     /* the final head has ended */
    bool               delivering;      /* inside its own callback */
    char               errbuf[CURL_ERROR_SIZE];
};

struct kb_curl_client {
    uv_loop_t     *loop;
    CURLM         *multi;
    CURLSH        *share;
    uv_timer_t     timer;
    size_t         max_body;
    char          *ca_file;
    kb_curl_call  *calls;
    kb_curl_sock  *socks;
    unsigned       open_handles;        /* timer + polls not yet closed */
    unsigned long  conns_opened;        /* connections made (tests) */
    bool           closing;
};

/* ---- process-wide setup ------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode       global_rc;
/*
 * libcurl before 8.0.0 fails every request on a reused HTTP/2 prior-
 * knowledge (cleartext) connection with CURLE_HTTP2 (curl issue #10634,
 * fixed by PR #10643).  Debian 12 ships 7.88.1: there each h2c call gets
 * a connection of its own.  h2 over TLS (ALPN) is not affected.
 */
static bool           h2c_reuse_ok;

/*
 * curl_global_init is not thread-safe on every build, so it runs exactly
 * once per process.  curl_global_cleanup is never called: the state lives
 * until exit (leak checkers may list OpenSSL's global tables).
 */
static void
global_init(void)
{
    const curl_version_info_data *v;

    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (global_rc != CURLE_OK)
        return;
    v = curl_version_info(CURLVERSION_NOW);
    h2c_reuse_ok = v->version_num >= 0x080000;
    if (!(v->features & CURL_VERSION_ASYNCHDNS))
        kb_log_warn("libcurl resolves names on the calling thread; use IP "
                    "literals for https/h2 backends",
                    "{s:s}", "curl", v->version);
    if (!(v->features & CURL_VERSION_HTTP2))
        kb_log_warn("libcurl has no HTTP/2; h2 backends will fail",
                    "{s:s}", "curl", v->version);
}

/* ---- sockets and timer: libcurl on libuv -------------------------------- */

static void check_done(kb_curl_client *c);

static void
client_maybe_free(kb_curl_client *c)
{
    if (c->closing && c->open_handles == 0) {
        free(c->ca_file);
        free(c);
    }
}

static void
on_handle_closed(uv_handle_t *h)
{
    kb_curl_client *c;

    if (h->type == UV_POLL) {
        kb_curl_sock *k = h->data;
        c = k->c;
        free(k);
    } else {
        c = h->data;
    }
    c->open_handles--;
    client_maybe_free(c);
}

/* Stop watching at once (the fd may be reused by curl right away); free
 * in the close callback. */
static void
sock_close(kb_curl_sock *k)
{
    kb_curl_client *c = k->c;

    if (k->closing)
        return;
    k->closing = true;
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        c->socks = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    uv_poll_stop(&k->poll);
    uv_close((uv_handle_t *)&k->poll, on_handle_closed);
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    kb_curl_sock *k = p->data;
    kb_curl_client *c = k->c;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    /* k may be closed inside; its memory lives until the close callback. */
    curl_multi_socket_action(c->multi, k->fd, flags, &running);
    check_done(c);
}

/* CURLMOPT_SOCKETFUNCTION: runs inside curl; must not call back into it
 * except curl_multi_assign. */
static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    kb_curl_client *c = userp;
    kb_curl_sock *k = socketp;
    int events = 0, rc;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (k != NULL) {
            curl_multi_assign(c->multi, fd, NULL);
            sock_close(k);
        }
        return 0;
    }
    if (k == NULL) {
        k = calloc(1, sizeof(*k));
        if (k == NULL)
            return -1;
        rc = uv_poll_init_socket(c->loop, &k->poll, fd);
        if (rc != 0) {
            kb_log_error("curl socket watch failed", "{s:i, s:s}", "fd",
                         (int)fd, "error", uv_strerror(rc));
            free(k);
            return -1;
        }
        k->poll.data = k;
        k->c = c;
        k->fd = fd;
        k->next = c->socks;
        if (c->socks != NULL)
            c->socks->prev = k;
        c->socks = k;
        c->open_handles++;
        curl_multi_assign(c->multi, fd, k);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&k->poll, events, on_poll);
    return 0;
}

static void
on_timer(uv_timer_t *t)
{
    kb_curl_client *c = t->data;
    int running;

    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

/* CURLMOPT_TIMERFUNCTION: curl may not be re-entered from here, so even a
 * zero timeout goes through the loop. */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    kb_curl_client *c = userp;

    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- response capture (curl's write and header callbacks) ---------------- */

static void
fields_init(field_list *f)
{
    kb_buf_init(&f->bytes, MAX_HEAD_BYTES);
    f->n = 0;
}

static bool
is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Add "name: value" (CRLF already stripped).  KB_EPARSE, KB_ETOOBIG. */
static int
fields_add(field_list *f, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    const char *v, *end = line + len;
    size_t noff, voff;
    int rc;

    if (colon == NULL || colon == line)
        return KB_EPARSE;
    for (const char *p = line; p < colon; p++)
        if (!kb_http_is_tchar((unsigned char)*p))
            return KB_EPARSE;
    for (v = colon + 1; v < end && is_ows(*v); v++)
        ;
    while (end > v && is_ows(end[-1]))
        end--;
    for (const char *p = v; p < end; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return KB_EPARSE;
    if (f->n == MAX_HEADERS)
        return KB_ETOOBIG;
    noff = f->bytes.len;
    rc = kb_buf_append(&f->bytes, line, (size_t)(colon - line));
    if (rc == 0)
        rc = kb_buf_appendc(&f->bytes, '\0');
    voff = f->bytes.len;
    if (rc == 0)
        rc = kb_buf_append(&f->bytes, v, (size_t)(end - v));
    if (rc == 0)
        rc = kb_buf_appendc(&f->bytes, '\0');
    if (rc != 0)
        return rc;
    f->name_off[f->n] = noff;
    f->value_off[f->n] = voff;
    f->n++;
    return 0;
}

/* "HTTP/1.1 200 OK", "HTTP/2 200 ": the status, and the minor version we
 * report (HTTP/2 and later count as 1: persistent, chunk-free). */
static int
parse_status_line(kb_curl_call *call, const char *line, size_t len)
{
    const char *p = line + 5, *end = line + len;
    int status = 0, digits = 0;

    call->version_minor = 1;
    if (len >= 8 && line[5] == '1' && line[6] == '.' && line[7] == '0')
        call->version_minor = 0;
    while (p < end && *p != ' ')
        p++;
    while (p < end && *p == ' ')
        p++;
    for (; p < end && *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
        status = status * 10 + (*p - '0');
    if (digits != 3 || status < 100)
        return KB_EPARSE;
    call->status = status;
    return 0;
}

/*
 * CURLOPT_HEADERFUNCTION: one whole line per call, CRLF included.  A
 * status line starts a block; a 1xx block is forgotten at its empty line;
 * the final block's empty line ends the head; what comes after it (HTTP/2
 * trailers, HTTP/1.1 chunked trailers) goes to `trailers`.  Returning a
 * short count aborts the transfer; call->err says why.
 */
static size_t
on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    kb_curl_call *call = userdata;
    size_t n = size * nmemb, len = n;
    int rc = 0;

    while (len > 0 && (ptr[len - 1] == '\n' || ptr[len - 1] == '\r'))
        len--;
    if (call->in_trailers) {
        if (len > 0)
            rc = fields_add(&call->trailers, ptr, len);
    } else if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        kb_buf_reset(&call->head.bytes);
        call->head.n = 0;
        rc = parse_status_line(call, ptr, len);
    } else if (len == 0) {
        if (call->status == 0)
            rc = KB_EPARSE;
        else if (call->status >= 200)
            call->in_trailers = true;
        else {                              /* 1xx: wait for the next block */
            call->status = 0;
            kb_buf_reset(&call->head.bytes);
            call->head.n = 0;
        }
    } else if (call->status == 0 || is_ows(ptr[0])) {
        rc = KB_EPARSE;                     /* no status line; obs-fold */
    } else {
        rc = fields_add(&call->head, ptr, len);
    }
    if (rc != 0) {
        call->err = rc;
        return 0;
    }
    return n;
}

/* CURLOPT_WRITEFUNCTION: buffer the body up to max_body. */
static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    kb_curl_call *call = userdata;
    size_t n = size * nmemb;
    int rc = kb_buf_append(&call->rbody, ptr, n);

    if (rc != 0) {
        call->err = rc;
        return 0;
    }
    return n;
}

/* ---- finishing a call ---------------------------------------------------- */

static void
call_unlink(kb_curl_call *call)
{
    kb_curl_client *c = call->c;

    if (call->prev != NULL)
        call->prev->next = call->next;
    else if (c->calls == call)
        c->calls = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
}

/* Remove from the multi (if added) and free.  Not linked any more. */
static void
call_free(kb_curl_call *call)
{
    if (call->easy != NULL) {
        curl_multi_remove_handle(call->c->multi, call->easy);
        curl_easy_cleanup(call->easy);
    }
    curl_slist_free_all(call->hdrs);
    kb_buf_free(&call->head.bytes);
    kb_buf_free(&call->trailers.bytes);
    kb_buf_free(&call->rbody);
    free(call->url);
    free(call->target);
    free(call->method);
    free(call->body);
    free(call->host);
    free(call);
}

static bool
is_tls_failure(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return true;
    default:
        return false;
    }
}

/* libcurl's result → our error convention (curl_client.h). */
static int
map_result(kb_curl_call *call, CURLcode rc)
{
    long oserr = 0;

    if (call->err != 0)                 /* our callbacks aborted it */
        return call->err;
    switch (rc) {
    case CURLE_OK:
        return call->status >= 200 ? 0 : KB_EPARSE;
    case CURLE_OPERATION_TIMEDOUT:
        return KB_ETIMEDOUT;
    case CURLE_FILESIZE_EXCEEDED:
        return KB_ETOOBIG;
    case CURLE_OUT_OF_MEMORY:
        return KB_ENOMEM;
    case CURLE_COULDNT_RESOLVE_HOST:
        return KB_EUNAVAIL;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(call->easy, CURLINFO_OS_ERRNO, &oserr);
        return oserr > 0 ? -(int)oserr : -ECONNREFUSED;
    case CURLE_GOT_NOTHING:
        return -ECONNRESET;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_HTTP3:
        return KB_EPARSE;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        curl_easy_getinfo(call->easy, CURLINFO_OS_ERRNO, &oserr);
        return oserr > 0 ? -(int)oserr : -EIO;
    default:
        return -EIO;
    }
}

static void
fields_export(field_list *f, kb_http_header *out)
{
    for (size_t i = 0; i < f->n; i++) {
        out[i].name = f->bytes.data + f->name_off[i];
        out[i].value = f->bytes.data + f->value_off[i];
    }
}

/*
 * Deliver one finished transfer.  The call is already unlinked; its easy
 * handle is released first, so a callback that destroys the client leaves
 * nothing of curl's in use.
 */
static void
call_complete(kb_curl_call *call, CURLcode cres)
{
    kb_http_header hv[MAX_HEADERS], tv[MAX_HEADERS];
    kb_http_client_res res;
    int err = map_result(call, cres);
    const char *why = call->errbuf[0] ? call->errbuf : curl_easy_strerror(cres);
    long nconn = 0;

    if (curl_easy_getinfo(call->easy, CURLINFO_NUM_CONNECTS, &nconn) ==
        CURLE_OK && nconn > 0)
        call->c->conns_opened += (unsigned long)nconn;

    if (err != 0 && is_tls_failure(cres))
        kb_log_warn("upstream tls failure", "{s:s, s:i, s:s}", "host",
                    call->host, "port", call->port, "error", why);
    else if (err == -EIO || err == KB_EPARSE)
        kb_log_debug("upstream call failed", "{s:s, s:i, s:s, s:i}", "host",
                     call->host, "port", call->port, "error", why,
                     "curl_code", (int)cres);
    curl_multi_remove_handle(call->c->multi, call->easy);
    curl_easy_cleanup(call->easy);
    call->easy = NULL;
    call->delivering = true;
    if (err != 0) {
        call->cb(err, NULL, call->data);
        return;
    }
    memset(&res, 0, sizeof(res));
    res.status = call->status;
    res.version_minor = call->version_minor;
    fields_export(&call->head, hv);
    res.headers = hv;
    res.nheaders = call->head.n;
    fields_export(&call->trailers, tv);
    res.trailers = tv;
    res.ntrailers = call->trailers.n;
    res.body = kb_buf_cstr(&call->rbody);
    res.body_len = call->rbody.len;
    call->cb(0, &res, call->data);
}

/*
 * Hand every finished transfer to its callback.  A callback may send,
 * cancel other calls or destroy the client: the message queue is read
 * afresh each time and nothing of the client is touched once it closes.
 */
static void
check_done(kb_curl_client *c)
{
    CURLMsg *m;
    int left;

    while (!c->closing && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
        kb_curl_call *call = NULL;
        CURLcode cres;

        if (m->msg != CURLMSG_DONE)
            continue;
        cres = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        if (call == NULL)
            continue;
        call_unlink(call);
        call_complete(call, cres);
        call_free(call);
    }
}

/* ---- starting a call ----------------------------------------------------- */

/* Header names we never pass: curl frames the message itself, and
 * HTTP/2 forbids connection-specific fields. */
static bool
header_dropped(const kb_http_header *h, bool h2)
{
    static const char *const always[] = {
        "content-length", "transfer-encoding", "connection", "expect" };
    static const char *const in_h2[] = {
        "keep-alive", "proxy-connection", "upgrade" };

    for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
        if (strcasecmp(h->name, always[i]) == 0)
            return true;
    if (!h2)
        return false;
    for (size_t i = 0; i < sizeof(in_h2) / sizeof(in_h2[0]); i++)
        if (strcasecmp(h->name, in_h2[i]) == 0)
            return true;
    /* HTTP/2 allows only "TE: trailers" (which gRPC sends). */
    return strcasecmp(h->name, "te") == 0 &&
           strcasecmp(h->value, "trailers") != 0;
}

static int
slist_add(struct curl_slist **l, const char *line)
{
    struct curl_slist *n = curl_slist_append(*l, line);

    if (n == NULL)
        return KB_ENOMEM;
    *l = n;
    return 0;
}

/*
 * The header list for curl.  "Name: value" sends a field; "Name;" sends it
 * empty; "Name:" stops curl from adding its own (Expect, Accept, and
 * Content-Type, which it would invent for a POST).  curl adds Host itself
 * only when the caller gave none, and turns Host into :authority for h2.
 */
static int
build_headers(kb_curl_call *call, const kb_http_client_req *req)
{
    bool has_accept = false, has_ctype = false;
    kb_buf line = KB_BUF_INIT(MAX_HEAD_BYTES);
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < req->nheaders; i++) {
        const kb_http_header *h = &req->headers[i];

        if (kb_http_token_len(h->name) == 0 || h->value == NULL || kb_http_value_len(h->value) == SIZE_MAX) {
            rc = KB_EINVAL;
            break;
        }
        if (header_dropped(h, req->h2))
            continue;
        if (strcasecmp(h->name, "accept") == 0)
            has_accept = true;
        else if (strcasecmp(h->name, "content-type") == 0)
            has_ctype = true;
        kb_buf_reset(&line);
        rc = h->value[0] == '\0' ? kb_buf_appendf(&line, "%s;", h->name)
                                 : kb_buf_appendf(&line, "%s: %s", h->name,
                                                  h->value);
        if (rc == 0)
            rc = slist_add(&call->hdrs, line.data);
    }
    if (rc == 0)
        rc = slist_add(&call->hdrs, "Expect:");
    if (rc == 0 && !has_accept)
        rc = slist_add(&call->hdrs, "Accept:");
    if (rc == 0 && !has_ctype)
        rc = slist_add(&call->hdrs, "Content-Type:");
    kb_buf_free(&line);
    return rc;
}

static bool
method_has_body(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "PATCH") == 0;
}

/* Every easy option of one call.  Any curl error → KB_ENOMEM/KB_EINVAL. */
static int
setup_easy(kb_curl_call *call, const kb_http_client_req *req)
{
    kb_curl_client *c = call->c;
    CURL *e = call->easy;
    CURLcode r = CURLE_OK;
    long version;

    if (req->h2)
        version = req->tls ? CURL_HTTP_VERSION_2TLS
                           : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    else
        version = CURL_HTTP_VERSION_1_1;

#define SET(opt, val) do { if (r == CURLE_OK) r = curl_easy_setopt(e, opt, val); } while (0)
    SET(CURLOPT_PRIVATE, call);
    SET(CURLOPT_ERRORBUFFER, call->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_SHARE, c->share);
    SET(CURLOPT_URL, call->url);
    SET(CURLOPT_REQUEST_TARGET, call->target);    /* sent as given */
    SET(CURLOPT_PATH_AS_IS, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_PROXY, "");                       /* ignore *_proxy env */
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_HTTP_VERSION, version);
    SET(CURLOPT_TIMEOUT_MS, req->timeout_ms ? (long)req->timeout_ms
                                            : DEFAULT_CALL_MS);
    SET(CURLOPT_CONNECTTIMEOUT_MS, CONNECT_MS);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file != NULL)
        SET(CURLOPT_CAINFO, c->ca_file);
    SET(CURLOPT_HTTPHEADER, call->hdrs);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, call);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, call);
    /* No CURLOPT_MAXFILESIZE: curl would apply it to the Content-Length of
     * HEAD and 304 answers too; on_body enforces max_body instead. */
    if (req->h2 && !req->tls && !h2c_reuse_ok) {
        SET(CURLOPT_FRESH_CONNECT, 1L);           /* see h2c_reuse_ok */
        SET(CURLOPT_FORBID_REUSE, 1L);
    } else if (req->h2) {
        SET(CURLOPT_PIPEWAIT, 1L);                /* multiplex, don't dial */
    }
    if (strcmp(req->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (req->body_len > 0 || method_has_body(req->method)) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_POSTFIELDS, call->body);
        SET(CURLOPT_CUSTOMREQUEST, call->method);
    } else {
        SET(CURLOPT_HTTPGET, 1L);
        if (strcmp(req->method, "GET") != 0)
            SET(CURLOPT_CUSTOMREQUEST, call->method);
    }
#undef SET
    if (r == CURLE_OUT_OF_MEMORY)
        return KB_ENOMEM;
    if (r != CURLE_OK) {
        kb_log_error("curl option refused", "{s:s}", "error",
                     curl_easy_strerror(r));
        return KB_EINVAL;
    }
    return 0;
}

static int
call_prepare(kb_curl_call *call, const kb_http_client_req *req)
{
    kb_buf url = KB_BUF_INIT(1024);
    bool v6 = strchr(req->host, ':') != NULL && req->host[0] != '[';
    int rc;

    rc = kb_buf_appendf(&url, "%s://%s%s%s:%d/", req->tls ? "https" : "http",
                        v6 ? "[" : "", req->host, v6 ? "]" : "", req->port);
    if (rc != 0) {
        kb_buf_free(&url);
        return rc == KB_ETOOBIG ? KB_EINVAL : rc;
    }
    call->url = kb_buf_detach(&url);
    call->target = strdup(req->target);
    call->method = strdup(req->method);
    call->host = strdup(req->host);
    call->body = malloc(req->body_len + 1);
    if (call->url == NULL || call->target == NULL || call->method == NULL ||
        call->host == NULL || call->body == NULL)
        return KB_ENOMEM;
    if (req->body_len > 0)
        memcpy(call->body, req->body, req->body_len);
    call->body[req->body_len] = '\0';
    rc = build_headers(call, req);
    if (rc != 0)
        return rc;
    call->easy = curl_easy_init();
    if (call->easy == NULL)
        return KB_ENOMEM;
    return setup_easy(call, req);
}

int
kb_curl_client_send(kb_curl_client *c, const kb_http_client_req *req,
                    kb_http_client_cb cb, void *data, kb_curl_call **out)
{
    kb_curl_call *call;
    CURLMcode mrc;
    int rc;

    if (c == NULL || c->closing)
        return KB_ECANCELED;
    if (req == NULL || cb == NULL || kb_http_token_len(req->method) == 0 ||
        !kb_http_visible(req->target) || req->target[0] != '/' ||
        strlen(req->target) > MAX_TARGET || !kb_http_visible(req->host) ||
        strchr(req->host, '/') != NULL || strchr(req->host, '@') != NULL ||
        req->port <= 0 || req->port > 65535 ||
        (req->body_len > 0 && req->body == NULL) ||
        req->body_len > (size_t)INT32_MAX)
        return KB_EINVAL;
    call = calloc(1, sizeof(*call));
    if (call == NULL)
        return KB_ENOMEM;
    call->c = c;
    call->cb = cb;
    call->data = data;
    call->port = req->port;
    fields_init(&call->head);
    fields_init(&call->trailers);
    kb_buf_init(&call->rbody, c->max_body);
    rc = call_prepare(call, req);
    if (rc != 0)
        goto out_free_call;
    mrc = curl_multi_add_handle(c->multi, call->easy);
    if (mrc != CURLM_OK) {
        rc = mrc == CURLM_OUT_OF_MEMORY ? KB_ENOMEM : -EIO;
        goto out_free_call;
    }
    call->next = c->calls;
    if (c->calls != NULL)
        c->calls->prev = call;
    c->calls = call;
    if (out != NULL)
        *out = call;
    return 0;

out_free_call:
    call_free(call);                    /* never added, or add failed */
    return rc;
}

/* ---- lifetime ------------------------------------------------------------ */

int
kb_curl_client_create(uv_loop_t *loop, const kb_curl_client_opts *opts,
                      kb_curl_client **out)
{
    kb_curl_client *c;
    CURLMcode mr = CURLM_OK;
    CURLSHcode sr = CURLSHE_OK;
    int rc;

    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return -EIO;
    if (loop == NULL || out == NULL)
        return KB_EINVAL;
    if (opts != NULL && opts->ca_file != NULL &&
        access(opts->ca_file, R_OK) != 0)
        return -errno;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return KB_ENOMEM;
    c->loop = loop;
    c->max_body = opts != NULL && opts->max_body ? opts->max_body
                                                 : DEFAULT_MAX_BODY;
    if (opts != NULL && opts->ca_file != NULL) {
        c->ca_file = strdup(opts->ca_file);
        if (c->ca_file == NULL) {
            rc = KB_ENOMEM;
            goto out_free_client;
        }
    }
    c->multi = curl_multi_init();
    c->share = curl_share_init();
    if (c->multi == NULL || c->share == NULL) {
        rc = KB_ENOMEM;
        goto out_cleanup_curl;
    }
    /* One loop thread uses the share: no lock functions needed. */
    sr = curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    if (sr == CURLSHE_OK)
        sr = curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
#define MSET(opt, val) do { if (mr == CURLM_OK) mr = curl_multi_setopt(c->multi, opt, val); } while (0)
    MSET(CURLMOPT_SOCKETFUNCTION, sock_cb);
    MSET(CURLMOPT_SOCKETDATA, c);
    MSET(CURLMOPT_TIMERFUNCTION, timer_cb);
    MSET(CURLMOPT_TIMERDATA, c);
    MSET(CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    MSET(CURLMOPT_MAX_HOST_CONNECTIONS, MAX_HOST_CONNECTIONS);
    MSET(CURLMOPT_MAXCONNECTS, MAX_CACHED_CONNS);
#undef MSET
    if (sr != CURLSHE_OK || mr != CURLM_OK) {
        rc = -EIO;
        goto out_cleanup_curl;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 1;
    *out = c;
    return 0;

out_cleanup_curl:
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi);
    if (c->share != NULL)
        curl_share_cleanup(c->share);
out_free_client:
    free(c->ca_file);
    free(c);
    return rc;
}

void
kb_curl_client_cancel(kb_curl_call *call)
{
    if (call == NULL || call->delivering)
        return;
    call_unlink(call);
    call_free(call);
}

void
kb_curl_client_destroy(kb_curl_client *c)
{
    kb_curl_call *call;

    if (c == NULL || c->closing)
        return;
    c->closing = true;
    /* Callbacks may cancel other calls: take the head of the list anew. */
    while ((call = c->calls) != NULL) {
        call_unlink(call);
        curl_multi_remove_handle(c->multi, call->easy);
        call->delivering = true;
        call->cb(KB_ECANCELED, NULL, call->data);
        call_free(call);
    }
    /* Closing the cached connections reports their sockets as removed. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    curl_share_cleanup(c->share);
    c->share = NULL;
    while (c->socks != NULL)
        sock_close(c->socks);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}
