/*
 * options.h - `kiban server` settings: one table gives flags, config-file
 * keys, defaults, bounds and help.
 *
 * Precedence: defaults < config file (--config FILE, YAML or JSON, keys
 * spelled as the flags without dashes: gateway_listen …) < flags.
 */
#ifndef KB_SERVER_OPTIONS_H
#define KB_SERVER_OPTIONS_H

#include <stdint.h>

#include "core/buf.h"
#include "core/log.h"

typedef struct kb_server_options {
    char        *gateway_listen;
    char        *api_listen;
    char        *data_dir;
    char        *store;           /* store URL; default sqlite in data_dir */
    char        *config;
    kb_log_level log_level;
    int64_t      shutdown_grace_ms;
    int64_t      max_body_bytes;
    int64_t      header_timeout_ms;
    int64_t      idle_timeout_ms;
    int64_t      gateway_workers;  /* data-path loops; 0: one per core */
    char        *gateway_tls_listen;
    char        *tls_certs;        /* "cert.pem:key.pem[,cert:key…]" */
    int64_t      gateway_h2;       /* 1: HTTP/2 on the gateway listeners */
    char        *access_log;       /* stderr, stdout, off, or a path */
    int64_t      max_connections;
    int64_t      max_conns_per_ip;
    int64_t      gateway_cache_bytes;
    char        *ca_file;          /* extra CAs for https backends, JWKS */
    char        *domain;           /* SERVICE.DOMAIN service URLs */
    char        *run_as;           /* instances' user when root; "" none */
    int64_t      service_log_bytes;/* captured output kept per service */
} kb_server_options;

/*
 * Fill *o from defaults, the config file and argv (argv[0] is the verb).
 * Returns 0; KB_EINVAL with a one-line message in err for a bad flag, value
 * or config file; 1 when --help was asked (usage already printed).
 */
int  kb_server_options_parse(kb_server_options *o, int argc, char **argv,
                             char *err, size_t errlen);
void kb_server_options_free(kb_server_options *o);
/* Usage text generated from the table. */
int  kb_server_options_usage(kb_buf *out);

#endif
