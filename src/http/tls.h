/*
 * tls.h - TLS for the HTTP server: certificates, SNI and ALPN (OpenSSL 3).
 *
 * A kb_tls_server holds one SSL_CTX per certificate.  The first
 * certificate is the default; a ClientHello whose SNI matches a DNS name
 * (or wildcard) of another certificate's subjectAltName (or CN when it has
 * none) gets that one.  ALPN offers "h2" (when the listener has HTTP/2 on)
 * and "http/1.1".  Immutable once created; shared by every loop.
 */
#ifndef KB_HTTP_TLS_H
#define KB_HTTP_TLS_H

#include <stddef.h>

typedef struct kb_tls_cert {
    const char *cert_file;      /* PEM: certificate, then its chain */
    const char *key_file;       /* PEM private key */
} kb_tls_cert;

typedef struct kb_tls_server kb_tls_server;

/*
 * Load the certificates.  0 and *out, or KB_EINVAL with a reason naming the
 * file in err (unreadable, not PEM, key does not match), KB_ENOMEM.
 */
int  kb_tls_server_create(const kb_tls_cert *certs, size_t ncerts,
                          kb_tls_server **out, char *err, size_t errlen);
void kb_tls_server_free(kb_tls_server *tls);

#endif
