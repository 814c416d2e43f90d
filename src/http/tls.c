/*
 * tls.c - TLS termination for the HTTP server (see tls.h): certificates,
 * SNI and ALPN on OpenSSL 3, and the per-connection session server.c runs
 * over the bytes libuv reads and writes (http_internal.h, kb_http__tls_*).
 *
 * OpenSSL never touches the socket.  Each session has one small in-memory
 * BIO: reads come from the bytes libuv just delivered (copied only when
 * the connection must pause with input left over), and every record
 * OpenSSL writes is handed straight to the connection's send function.
 * So the handshake never blocks, and an idle TLS connection holds no I/O
 * buffer (SSL_MODE_RELEASE_BUFFERS drops OpenSSL's own record buffers).
 */
#include "http/tls.h"
#include "http/http_internal.h"
#include "core/err.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Mozilla "intermediate" TLS 1.2 suites; TLS 1.3 keeps OpenSSL's set. */
#define TLS12_CIPHERS \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define MAX_CERTS     256
#define MAX_NAMES     1024        /* DNS names kept per certificate */
#define COALESCE_MAX  (16u * 1024) /* small writes go out as one record */

typedef struct tls_cert {
    SSL_CTX *ctx;
    char   **names;               /* lower case; "*.example.com" allowed */
    size_t   nnames;
} tls_cert;

struct kb_tls_server {
    tls_cert *certs;              /* certs[0] is the default */
    size_t    ncerts;
};

struct kb_tls_conn {
    SSL           *ssl;
    kb_tls_send_fn send;
    void          *arg;
    const char    *in;            /* unconsumed ciphertext */
    size_t         in_len;
    char          *kept;          /* owned copy of it, when kept */
    bool           offer_h2;
    bool           is_h2;
};

/* ---- the in-memory BIO ---------------------------------------------------- */

static BIO_METHOD    *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int
bio_read(BIO *b, char *out, size_t outl, size_t *readbytes)
{
    kb_tls_conn *tc = BIO_get_data(b);
    size_t n;

    BIO_clear_retry_flags(b);
    if (tc->in_len == 0) {
        BIO_set_retry_read(b);
        *readbytes = 0;
        return 0;
    }
    n = outl < tc->in_len ? outl : tc->in_len;
    memcpy(out, tc->in, n);
    tc->in += n;
    tc->in_len -= n;
    if (tc->in_len == 0 && tc->kept != NULL) {
        free(tc->kept);
        tc->kept = NULL;
        tc->in = NULL;
    }
    *readbytes = n;
    return 1;
}

static int
bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
    kb_tls_conn *tc = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    tc->send(tc->arg, data, len);
    *written = len;
    return 1;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    kb_tls_conn *tc = BIO_get_data(b);

    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return tc != NULL ? (long)tc->in_len : 0;
    default:
        return 0;
    }
}

static int
bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int
bio_destroy(BIO *b)
{
    BIO_set_data(b, NULL);
    return 1;
}

static void
bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                 "kiban-conn");

    if (m == NULL)
        return;
    BIO_meth_set_read_ex(m, bio_read);
    BIO_meth_set_write_ex(m, bio_write);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    BIO_meth_set_destroy(m, bio_destroy);
    bio_method = m;
}

/* ---- SNI and ALPN ---------------------------------------------------------- */

/* Does host (lower case) match pattern: exactly, or "*.rest" with one
 * label in place of the star (not the bare "rest", not two labels). */
static bool
name_matches(const char *pattern, const char *host, bool wildcard)
{
    const char *dot;

    if (!wildcard)
        return strcmp(pattern, host) == 0;
    if (pattern[0] != '*' || pattern[1] != '.')
        return false;
    dot = strchr(host, '.');
    return dot != NULL && dot != host && strcmp(dot, pattern + 1) == 0;
}

/* Index of the certificate for host: exact names first, then wildcards;
 * -1 when none matches (the default certificate serves). */
static int
cert_for(const kb_tls_server *t, const char *host)
{
    char low[256];
    size_t n = strlen(host);

    if (n == 0 || n >= sizeof(low))
        return -1;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)host[i]);
    low[n] = '\0';
    if (low[n - 1] == '.')
        low[n - 1] = '\0';      /* absolute form "example.com." */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < t->ncerts; i++)
            for (size_t k = 0; k < t->certs[i].nnames; k++)
                if (name_matches(t->certs[i].names[k], low, pass == 1))
                    return (int)i;
    return -1;
}

static int
on_servername(SSL *ssl, int *alert, void *arg)
{
    const kb_tls_server *t = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int i;

    (void)alert;
    if (host == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    i = cert_for(t, host);
    if (i > 0 && SSL_set_SSL_CTX(ssl, t->certs[i].ctx) == NULL)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

/* Our preference, "h2" first when the listener speaks it; the first of
 * ours the client also offers wins; none in common: no ALPN (HTTP/1.1). */
static int
on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
        const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h2[] = "h2", h11[] = "http/1.1";
    kb_tls_conn *tc = SSL_get_app_data(ssl);
    const unsigned char *ours[2] = { h2, h11 };
    const unsigned char ourlen[2] = { 2, 8 };

    (void)arg;
    for (int k = tc != NULL && tc->offer_h2 ? 0 : 1; k < 2; k++) {
        for (unsigned i = 0; i < inlen;) {
            unsigned len = in[i];
            if (i + 1 + len > inlen)
                break;                  /* malformed list */
            if (len == ourlen[k] && memcmp(in + i + 1, ours[k], len) == 0) {
                *out = in + i + 1;
                *outlen = (unsigned char)len;
                if (tc != NULL)
                    tc->is_h2 = k == 0;
                return SSL_TLSEXT_ERR_OK;
            }
            i += 1 + len;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ---- loading certificates ---------------------------------------------- */

/* The first OpenSSL error as text (and the queue cleared). */
static const char *
ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

static int
add_name(tls_cert *c, const unsigned char *s, int len)
{
    char *n, **grown;

    if (len <= 0 || c->nnames >= MAX_NAMES || memchr(s, '\0', (size_t)len))
        return 0;                       /* skip odd names */
    n = malloc((size_t)len + 1);
    grown = realloc(c->names, (c->nnames + 1) * sizeof(*c->names));
    if (n == NULL || grown == NULL) {
        free(n);
        if (grown != NULL)
            c->names = grown;
        return KB_ENOMEM;
    }
    c->names = grown;
    for (int i = 0; i < len; i++)
        n[i] = (char)tolower(s[i]);
    n[len] = '\0';
    c->names[c->nnames++] = n;
    return 0;
}

/* The certificate's DNS subjectAltNames, or its CN when it has none. */
static int
collect_names(tls_cert *c, X509 *x)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rc = 0;

    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && rc == 0;
         i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS)
            rc = add_name(c, ASN1_STRING_get0_data(g->d.dNSName),
                          ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(gens);
    if (rc == 0 && c->nnames == 0) {
        X509_NAME *subj = X509_get_subject_name(x);
        int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
        if (idx >= 0) {
            ASN1_STRING *cn = X509_NAME_ENTRY_get_data(
                X509_NAME_get_entry(subj, idx));
            rc = add_name(c, ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn));
        }
    }
    return rc;
}

/* Can the file be opened?  Names the file and the reason in err. */
static int
check_readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f;

    if (path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "%s: no file given", what);
        return KB_EINVAL;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return KB_EINVAL;
    }
    fclose(f);
    return 0;
}

static int
cert_load(tls_cert *c, const kb_tls_cert *in, kb_tls_server *t,
          char *err, size_t errlen)
{
    static const unsigned char sid_ctx[] = "kiban";
    char why[256];
    SSL_CTX *ctx;
    int rc;

    if ((rc = check_readable("certificate", in->cert_file, err, errlen)) ||
        (rc = check_readable("key", in->key_file, err, errlen)))
        return rc;
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return KB_ENOMEM;
    c->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        snprintf(err, errlen, "tls: cipher list: %s", ssl_reason(why, sizeof(why)));
        return KB_EINVAL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, in->cert_file) != 1) {
        snprintf(err, errlen, "certificate %s: not a PEM certificate chain (%s)",
                 in->cert_file, ssl_reason(why, sizeof(why)));
        return KB_EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, in->key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "key %s: not a PEM private key (%s)",
                 in->key_file, ssl_reason(why, sizeof(why)));
        return KB_EINVAL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "key %s does not match certificate %s",
                 in->key_file, in->cert_file);
        ERR_clear_error();
        return KB_EINVAL;
    }
    rc = collect_names(c, SSL_CTX_get0_certificate(ctx));
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

int
kb_tls_server_create(const kb_tls_cert *certs, size_t ncerts,
                     kb_tls_server **out, char *err, size_t errlen)
{
    kb_tls_server *t;
    int rc;

    if (errlen > 0)
        err[0] = '\0';
    if (certs == NULL || ncerts == 0 || ncerts > MAX_CERTS) {
        snprintf(err, errlen, "tls: between 1 and %d certificates", MAX_CERTS);
        return KB_EINVAL;
    }
    pthread_once(&bio_once, bio_method_init);
    if (bio_method == NULL)
        return KB_ENOMEM;
    t = calloc(1, sizeof(*t));
    if (t == NULL || (t->certs = calloc(ncerts, sizeof(*t->certs))) == NULL) {
        free(t);
        snprintf(err, errlen, "out of memory");
        return KB_ENOMEM;
    }
    t->ncerts = ncerts;
    for (size_t i = 0; i < ncerts; i++) {
        rc = cert_load(&t->certs[i], &certs[i], t, err, errlen);
        if (rc != 0) {
            kb_tls_server_free(t);
            return rc;
        }
    }
    *out = t;
    return 0;
}

void
kb_tls_server_free(kb_tls_server *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->ncerts; i++) {
        for (size_t k = 0; k < t->certs[i].nnames; k++)
            free(t->certs[i].names[k]);
        free(t->certs[i].names);
        SSL_CTX_free(t->certs[i].ctx);
    }
    free(t->certs);
    free(t);
}

/* ---- one connection ------------------------------------------------------ */

int
kb_http__tls_conn_new(kb_tls_server *t, bool h2, kb_tls_send_fn send,
                      void *arg, kb_tls_conn **out)
{
    kb_tls_conn *tc = calloc(1, sizeof(*tc));
    BIO *bio;

    if (tc == NULL)
        return KB_ENOMEM;
    tc->send = send;
    tc->arg = arg;
    tc->offer_h2 = h2;
    tc->ssl = SSL_new(t->certs[0].ctx);
    bio = tc->ssl != NULL ? BIO_new(bio_method) : NULL;
    if (bio == NULL) {
        SSL_free(tc->ssl);
        free(tc);
        return KB_ENOMEM;
    }
    BIO_set_data(bio, tc);
    SSL_set_bio(tc->ssl, bio, bio);
    SSL_set_app_data(tc->ssl, tc);
    SSL_set_accept_state(tc->ssl);
    *out = tc;
    return 0;
}

void
kb_http__tls_conn_free(kb_tls_conn *tc)
{
    if (tc == NULL)
        return;
    SSL_free(tc->ssl);
    free(tc->kept);
    free(tc);
}

void
kb_http__tls_input(kb_tls_conn *tc, const char *data, size_t len)
{
    if (tc->in_len > 0) {
        /* Not consumed yet (rare): keep it, then append. */
        char *n = malloc(tc->in_len + len);
        if (n == NULL)
            return;                     /* the new bytes are lost: the
                                           record check will fail */
        memcpy(n, tc->in, tc->in_len);
        memcpy(n + tc->in_len, data, len);
        free(tc->kept);
        tc->kept = n;
        tc->in = n;
        tc->in_len += len;
        return;
    }
    tc->in = data;
    tc->in_len = len;
}

int
kb_http__tls_keep_input(kb_tls_conn *tc)
{
    char *n;

    if (tc->in_len == 0 || tc->kept != NULL)
        return 0;
    n = malloc(tc->in_len);
    if (n == NULL)
        return KB_ENOMEM;
    memcpy(n, tc->in, tc->in_len);
    tc->kept = n;
    tc->in = n;
    return 0;
}

bool
kb_http__tls_has_input(const kb_tls_conn *tc)
{
    return tc->in_len > 0 || SSL_pending(tc->ssl) > 0;
}

int
kb_http__tls_handshake(kb_tls_conn *tc)
{
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(tc->ssl);
    if (r == 1)
        return 0;
    e = SSL_get_error(tc->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return KB_EAGAIN;
    if (kb_log_get_level() <= KB_LOG_DEBUG) {
        char why[256];
        kb_log_debug("tls: handshake failed", "{s:s}", "reason",
                     ssl_reason(why, sizeof(why)));
    }
    ERR_clear_error();
    return KB_EPARSE;
}

int
kb_http__tls_read(kb_tls_conn *tc, char *out, size_t cap, size_t *n)
{
    int r, e;

    *n = 0;
    ERR_clear_error();
    r = SSL_read_ex(tc->ssl, out, cap, n);
    if (r == 1)
        return 0;
    *n = 0;
    e = SSL_get_error(tc->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    ERR_clear_error();
    return e == SSL_ERROR_ZERO_RETURN ? KB_ECANCELED : KB_EPARSE;
}

int
kb_http__tls_write(kb_tls_conn *tc, const uv_buf_t *bufs, unsigned n)
{
    char small[COALESCE_MAX];
    size_t total = 0, done;

    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    ERR_clear_error();
    if (n > 1 && total <= sizeof(small)) {
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(small + off, bufs[i].base, bufs[i].len);
            off += bufs[i].len;
        }
        return total == 0 || SSL_write_ex(tc->ssl, small, total, &done) == 1
                   ? 0 : KB_EPARSE;
    }
    for (unsigned i = 0; i < n; i++)
        if (bufs[i].len > 0 &&
            SSL_write_ex(tc->ssl, bufs[i].base, bufs[i].len, &done) != 1) {
            ERR_clear_error();
            return KB_EPARSE;
        }
    return 0;
}

bool
kb_http__tls_is_h2(const kb_tls_conn *tc)
{
    return tc->is_h2;
}

void
kb_http__tls_shutdown(kb_tls_conn *tc)
{
    if (SSL_is_init_finished(tc->ssl))
        SSL_shutdown(tc->ssl);
    ERR_clear_error();
}
