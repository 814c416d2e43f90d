/*
 * escape.c - small helpers every gateway module shares: JSON-pointer
 * tokens and the "pointer: reason" errors of the spec compilers, the
 * percent/hex codec of paths and queries, and SHA-256.  Nothing beyond
 * core/buf and OpenSSL, so a unit test that includes one module's .c links
 * this alone.
 */
#include "gateway/gw_int.h"
#include "core/err.h"

#include <stdarg.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* JSON pointers and spec errors                                             */

int
gw__pointer_append(kb_buf *out, const char *token)
{
    int rc = kb_buf_appendc(out, '/');

    for (const char *p = token; rc == 0 && *p != '\0'; p++) {
        if (*p == '~')
            rc = kb_buf_appends(out, "~0");
        else if (*p == '/')
            rc = kb_buf_appends(out, "~1");
        else
            rc = kb_buf_appendc(out, *p);
    }
    return rc;
}

void
gw__pointer_join(char *out, size_t cap, const char *parent, const char *token)
{
    static const char cut[] = "/…";
    kb_buf b = KB_BUF_INIT(cap - 1);
    size_t keep;

    if (kb_buf_appends(&b, parent) == 0 && gw__pointer_append(&b, token) == 0) {
        snprintf(out, cap, "%s", kb_buf_cstr(&b));
    } else if (cap >= sizeof(cut)) {
        /* too long: what fits of the parent, then the mark (out may be
         * parent, hence memmove) */
        keep = strlen(parent);
        if (keep > cap - sizeof(cut))
            keep = cap - sizeof(cut);
        memmove(out, parent, keep);
        memcpy(out + keep, cut, sizeof(cut));
    } else if (cap > 0) {
        out[0] = '\0';
    }
    kb_buf_free(&b);
}

int
gw__spec_fail(char *err, size_t errlen, const char *pointer, const char *fmt,
              ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return KB_EINVAL;
    n = snprintf(err, errlen, "%s: ", pointer[0] ? pointer : "/");
    if (n >= 0 && (size_t)n < errlen) {
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return KB_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* Percent and hex                                                           */

int
gw__hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int
gw__pct_encode(kb_buf *out, const char *v, size_t n, const char *keep)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char ch = (unsigned char)v[i];
        bool as_is = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') ||
                     (ch != '\0' && (strchr("-._~", ch) != NULL ||
                                     strchr(keep, ch) != NULL));
        if (as_is)
            rc = kb_buf_appendc(out, (char)ch);
        else
            rc = kb_buf_appendf(out, "%%%c%c", hex[ch >> 4], hex[ch & 15]);
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* SHA-256                                                                   */

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* OpenSSL 3 looks an algorithm up on every EVP_sha256() digest; fetch it
 * once and keep it for the life of the process. */
static void
sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int
gw__sha256(const void *const *parts, const size_t *lens, size_t n,
           unsigned char out[32])
{
    EVP_MD_CTX *ctx;
    unsigned int len = 0;
    int ok;

    pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL || (ctx = EVP_MD_CTX_new()) == NULL)
        return KB_ENOMEM;
    ok = EVP_DigestInit_ex(ctx, sha256_md, NULL) == 1;
    for (size_t i = 0; i < n && ok; i++)
        ok = EVP_DigestUpdate(ctx, parts[i], lens[i]) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == 32;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : KB_ENOMEM;
}
