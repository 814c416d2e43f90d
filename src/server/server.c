/*
 * server.c - `kiban server`: boots the store and every plane on one libuv
 * loop, opens the gateway and api listeners, and shuts down gracefully.
 *
 * Boot order: settings → data dir and admin token → store → runtime (reaps
 * leftovers of a killed predecessor) → gateway → API, restored from the
 * store → listeners.  Shutdown (SIGTERM/SIGINT) runs it backwards: stop
 * accepting and let in-flight requests finish (grace period), stop every
 * service's processes, close the store, exit 0.
 */
#include "server/server.h"
#include "api/api.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/metrics.h"
#include "gateway/gateway.h"
#include "http/client.h"
#include "http/server.h"
#include "runtime/runtime.h"
#include "server/options.h"
#include "store/store.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_FILE  "admin.token"
#define TOKEN_BYTES 24                /* 48 hex digits */

typedef struct kb_server {
    uv_loop_t         *loop;
    kb_server_options  opts;
    char               token[2 * TOKEN_BYTES + 1];
    kb_store          *store;
    kb_runtime        *runtime;
    kb_http_client    *client;
    kb_gateway        *gateway;
    kb_api            *api;
    kb_http_server    *gateway_srv;
    kb_http_server    *api_srv;
    uv_signal_t        sigterm, sigint;
    int                listeners_open;
    bool               stopping;
    int                exit_code;
} kb_server;

/*
 * Read the admin token, creating it (mode 0600) on first start.  A token
 * file that is readable by others is refused: it grants full control.
 */
static int
admin_token(kb_server *s)
{
    char path[PATH_MAX];
    struct stat st;
    ssize_t n;
    int fd, rc;

    snprintf(path, sizeof(path), "%s/%s", s->opts.data_dir, TOKEN_FILE);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
            kb_log_error("admin token file is accessible by others; "
                         "chmod 600 it", "{s:s}", "path", path);
            close(fd);
            return KB_EINVAL;
        }
        n = read(fd, s->token, sizeof(s->token) - 1);
        close(fd);
        while (n > 0 && (s->token[n - 1] == '\n' || s->token[n - 1] == '\r'))
            n--;
        if (n < 16) {
            kb_log_error("admin token file is empty or too short",
                         "{s:s}", "path", path);
            return KB_EINVAL;
        }
        s->token[n] = '\0';
        return 0;
    }
    if (errno != ENOENT) {
        rc = -errno;
        kb_log_error("cannot read the admin token", "{s:s, s:s}", "path", path,
                     "error", kb_strerror(rc));
        return rc;
    }

    rc = kb_random_hex(s->token, TOKEN_BYTES);
    if (rc != 0)
        return rc;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        kb_log_error("cannot create the admin token", "{s:s, s:s}", "path",
                     path, "error", kb_strerror(rc));
        return rc;
    }
    n = write(fd, s->token, strlen(s->token));
    if (n != (ssize_t)strlen(s->token) || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0) {
        rc = KB_EINVAL;
        close(fd);
        unlink(path);
        kb_log_error("cannot write the admin token", "{s:s}", "path", path);
        return rc;
    }
    close(fd);
    kb_log_info("created the admin token", "{s:s}", "path", path);
    return 0;
}

static int
data_dir(kb_server *s)
{
    if (mkdir(s->opts.data_dir, 0700) != 0 && errno != EEXIST) {
        int rc = -errno;
        kb_log_error("cannot create the data directory", "{s:s, s:s}",
                     "path", s->opts.data_dir, "error", kb_strerror(rc));
        return rc;
    }
    return 0;
}

/* Shutdown ---------------------------------------------------------------- */

static void
close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void
store_closed(void *data)
{
    kb_server *s = data;

    s->store = NULL;
    kb_log_info("stopped", NULL);
    /* Whatever is still open (signal watchers …) closes now. */
    uv_walk(s->loop, close_walk, NULL);
}

static void
runtime_stopped(void *data)
{
    kb_server *s = data;

    s->runtime = NULL;
    kb_gateway_free(s->gateway);
    s->gateway = NULL;
    kb_api_free(s->api);
    s->api = NULL;
    kb_http_client_destroy(s->client);
    s->client = NULL;
    kb_store_close(s->store, store_closed, s);
}

static void
listener_closed(void *data)
{
    kb_server *s = data;

    if (--s->listeners_open > 0)
        return;
    s->gateway_srv = NULL;
    s->api_srv = NULL;
    kb_log_info("listeners closed; stopping services", NULL);
    kb_runtime_shutdown(s->runtime, (uint64_t)s->opts.shutdown_grace_ms,
                        runtime_stopped, s);
}

static void
begin_shutdown(kb_server *s)
{
    uint64_t grace = (uint64_t)s->opts.shutdown_grace_ms;

    if (s->stopping)
        return;
    s->stopping = true;
    uv_signal_stop(&s->sigterm);
    uv_signal_stop(&s->sigint);
    kb_log_info("shutting down", "{s:I}", "grace_ms",
                (json_int_t)s->opts.shutdown_grace_ms);
    s->listeners_open = 2;
    kb_http_server_shutdown(s->gateway_srv, grace, listener_closed, s);
    kb_http_server_shutdown(s->api_srv, grace, listener_closed, s);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    kb_server *s = h->data;

    kb_log_info("signal received", "{s:s}", "signal",
                signum == SIGTERM ? "SIGTERM" : "SIGINT");
    begin_shutdown(s);
}

/* Boot -------------------------------------------------------------------- */

static int
open_listener(kb_server *s, const char *name, const char *addr,
              kb_http_handler handler, void *data, kb_http_server **out)
{
    kb_http_server_opts o = {
        .name = name,
        .handler = handler,
        .data = data,
        .max_body = (size_t)s->opts.max_body_bytes,
        .header_timeout_ms = (uint64_t)s->opts.header_timeout_ms,
        .body_timeout_ms = (uint64_t)s->opts.header_timeout_ms * 6,
        .idle_timeout_ms = (uint64_t)s->opts.idle_timeout_ms,
    };
    int rc = kb_http_server_start(s->loop, addr, &o, out);

    if (rc != 0) {
        kb_log_error("cannot listen", "{s:s, s:s, s:s}", "listener", name,
                     "addr", addr, "error", kb_strerror(rc));
        return rc;
    }
    kb_log_info("listening", "{s:s, s:s, s:i}", "listener", name, "addr", addr,
                "port", kb_http_server_port(*out));
    return 0;
}

static int
boot(kb_server *s, const char *self_exe)
{
    char url[PATH_MAX + 16];
    kb_api_ctx ctx;
    int rc;

    if ((rc = data_dir(s)) != 0 || (rc = admin_token(s)) != 0)
        return rc;
    if (s->opts.store != NULL)
        snprintf(url, sizeof(url), "%s", s->opts.store);
    else
        snprintf(url, sizeof(url), "sqlite:%s/kiban.db", s->opts.data_dir);
    if ((rc = kb_store_open(s->loop, url, &s->store)) != 0) {
        kb_log_error("cannot open the store", "{s:s, s:s}", "store", url,
                     "error", kb_strerror(rc));
        return rc;
    }
    if ((rc = kb_runtime_create(s->loop, s->store, self_exe, &s->runtime)) != 0 ||
        (rc = kb_http_client_create(s->loop, NULL, &s->client)) != 0 ||
        (rc = kb_gateway_create(s->loop, s->client, s->runtime,
                                &s->gateway)) != 0) {
        kb_log_error("cannot start the planes", "{s:s}", "error",
                     kb_strerror(rc));
        return rc;
    }
    ctx = (kb_api_ctx){ s->loop, s->store, s->runtime, s->gateway, s->token };
    if ((rc = kb_api_create(&ctx, &s->api)) != 0 ||
        (rc = kb_api_restore(s->api)) != 0) {
        kb_log_error("cannot start the admin API", "{s:s}", "error",
                     kb_strerror(rc));
        return rc;
    }
    if ((rc = open_listener(s, "api", s->opts.api_listen, kb_api_handle,
                            s->api, &s->api_srv)) != 0 ||
        (rc = open_listener(s, "gateway", s->opts.gateway_listen,
                            kb_gateway_handle, s->gateway,
                            &s->gateway_srv)) != 0)
        return rc;

    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    return 0;
}

/* Tear down whatever boot() got to, without a loop run in between. */
static void
boot_failed(kb_server *s)
{
    s->stopping = true;
    if (s->api_srv != NULL || s->gateway_srv != NULL) {
        s->listeners_open = (s->api_srv != NULL) + (s->gateway_srv != NULL);
        if (s->api_srv != NULL)
            kb_http_server_shutdown(s->api_srv, 0, listener_closed, s);
        if (s->gateway_srv != NULL)
            kb_http_server_shutdown(s->gateway_srv, 0, listener_closed, s);
    } else if (s->runtime != NULL) {
        kb_runtime_shutdown(s->runtime, 0, runtime_stopped, s);
    } else {
        kb_gateway_free(s->gateway);
        kb_api_free(s->api);
        kb_http_client_destroy(s->client);
        s->gateway = NULL;
        s->api = NULL;
        s->client = NULL;
        if (s->store != NULL)
            kb_store_close(s->store, store_closed, s);
    }
    uv_run(s->loop, UV_RUN_DEFAULT);
}

int
kb_server_main(int argc, char **argv)
{
    kb_server s;
    char err[512] = "", self[PATH_MAX];
    ssize_t n;
    int rc;

    memset(&s, 0, sizeof(s));
    rc = kb_server_options_parse(&s.opts, argc, argv, err, sizeof(err));
    if (rc == 1) {                      /* --help */
        kb_server_options_free(&s.opts);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "kiban server: %s\n", err);
        kb_server_options_free(&s.opts);
        return 2;
    }
    kb_log_set_level(s.opts.log_level);
    signal(SIGPIPE, SIG_IGN);

    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        fprintf(stderr, "kiban server: cannot find its own executable\n");
        kb_server_options_free(&s.opts);
        return 1;
    }
    self[n] = '\0';

    s.loop = uv_default_loop();
    kb_log_info("starting", "{s:s, s:s, s:I}", "version", KB_VERSION,
                "data_dir", s.opts.data_dir, "pid", (json_int_t)getpid());
    rc = boot(&s, self);
    if (rc != 0) {
        boot_failed(&s);
        uv_loop_close(s.loop);
        kb_server_options_free(&s.opts);
        return 1;
    }
    kb_log_info("ready", "{s:s, s:s}", "gateway", s.opts.gateway_listen,
                "api", s.opts.api_listen);
    uv_run(s.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(s.loop);
    if (rc != 0)
        kb_log_warn("loop closed with handles still open", "{s:s}", "error",
                    uv_strerror(rc));
    kb_server_options_free(&s.opts);
    return s.exit_code;
}
