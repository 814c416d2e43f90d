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
#include "http/tls.h"
#include "runtime/runtime.h"
#include "server/options.h"
#include "store/store.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_FILE  "admin.token"
#define TOKEN_BYTES 24                /* 48 hex digits */

#define MAX_TLS_CERTS 64

typedef struct kb_server kb_server;

/*
 * One gateway data-path loop on its own thread, with its own
 * SO_REUSEPORT listeners (the kernel spreads connections over them).
 */
typedef struct gw_thread {
    kb_server         *s;
    int                index;
    pthread_t          thread;
    bool               started;
    uv_loop_t          loop;
    uv_async_t         stop;         /* main → thread: shut down */
    atomic_bool        stop_requested;   /* stop is sent at most once */
    kb_gateway_worker *worker;
    kb_http_server    *plain, *tls;
    int                open;         /* listeners not yet closed */
    sem_t              ready;        /* thread → main: boot result */
    int                rc;
} gw_thread;

struct kb_server {
    uv_loop_t         *loop;
    kb_server_options  opts;
    char               token[2 * TOKEN_BYTES + 1];
    kb_store          *store;
    kb_runtime        *runtime;
    kb_http_client    *client;
    kb_gateway        *gateway;
    kb_api            *api;
    kb_http_server    *api_srv;
    kb_tls_server     *tls;
    kb_http_iplimit   *iplimit;          /* shared by the gateway loops */
    gw_thread         *gw_threads;
    int                ngw_threads;
    int                gw_threads_open;  /* 1 until all have finished */
    atomic_int         gw_finished;      /* threads whose loop ended */
    uv_async_t         gw_done;          /* a gateway thread finished */
    char               gateway_addr[128];    /* with the bound port */
    char               gateway_tls_addr[128];
    uv_signal_t        sigterm, sigint;
    int                listeners_open;
    bool               stopping;
    int                exit_code;
};

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
    s->api_srv = NULL;
    kb_log_info("listeners closed; stopping services", NULL);
    kb_runtime_shutdown(s->runtime, (uint64_t)s->opts.shutdown_grace_ms,
                        runtime_stopped, s);
}

/* Gateway threads ---------------------------------------------------------- */

static void
gw_thread_listener_closed(void *data)
{
    gw_thread *t = data;

    if (--t->open > 0)
        return;
    t->plain = t->tls = NULL;
    kb_gateway_worker_close(t->worker);
    t->worker = NULL;
    uv_close((uv_handle_t *)&t->stop, NULL);
}

static void
gw_thread_on_stop(uv_async_t *a)
{
    gw_thread *t = a->data;
    uint64_t grace = (uint64_t)t->s->opts.shutdown_grace_ms;

    t->open = (t->plain != NULL) + (t->tls != NULL);
    if (t->open == 0) {
        t->open = 1;
        gw_thread_listener_closed(t);
        return;
    }
    if (t->plain != NULL)
        kb_http_server_shutdown(t->plain, grace, gw_thread_listener_closed, t);
    if (t->tls != NULL)
        kb_http_server_shutdown(t->tls, grace, gw_thread_listener_closed, t);
}

static int
gw_listen(gw_thread *t, const char *name, const char *addr,
          kb_tls_server *tls, kb_http_server **out)
{
    const kb_server_options *o = &t->s->opts;
    kb_http_server_opts ho = {
        .name = name,
        .handler = kb_gateway_handle,
        .data = t->worker,
        .max_body = (size_t)o->max_body_bytes,
        .header_timeout_ms = (uint64_t)o->header_timeout_ms,
        .body_timeout_ms = (uint64_t)o->header_timeout_ms * 6,
        .idle_timeout_ms = (uint64_t)o->idle_timeout_ms,
        .max_connections = (size_t)o->max_connections,
        .max_conns_per_ip = (size_t)o->max_conns_per_ip,
        .iplimit = t->s->iplimit,
        .reuseport = true,
        .tls = tls,
        .h2 = o->gateway_h2 != 0,
    };
    int rc = kb_http_server_start(&t->loop, addr, &ho, out);

    if (rc != 0)
        kb_log_error("cannot listen", "{s:s, s:s, s:s}", "listener", name,
                     "addr", addr, "error", kb_strerror(rc));
    return rc;
}

static void *
gw_thread_main(void *arg)
{
    gw_thread *t = arg;
    kb_server *s = t->s;
    int rc;

    rc = uv_loop_init(&t->loop);
    if (rc != 0) {
        t->rc = rc;
        sem_post(&t->ready);
        return NULL;
    }
    uv_async_init(&t->loop, &t->stop, gw_thread_on_stop);
    t->stop.data = t;
    if ((rc = kb_gateway_worker_create(s->gateway, &t->loop,
                                       &t->worker)) == 0 &&
        (rc = gw_listen(t, "gateway", s->gateway_addr, NULL,
                        &t->plain)) == 0 &&
        s->tls != NULL)
        rc = gw_listen(t, "gateway-tls", s->gateway_tls_addr, s->tls,
                       &t->tls);
    t->rc = rc;
    if (rc != 0 && !atomic_exchange(&t->stop_requested, true))
        gw_thread_on_stop(&t->stop); /* close what opened, then exit */
    sem_post(&t->ready);             /* t->rc is read by main after this */
    uv_run(&t->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&t->loop) != 0)
        kb_log_warn("gateway loop closed with handles still open", NULL);
    atomic_fetch_add(&s->gw_finished, 1);
    uv_async_send(&s->gw_done);
    return NULL;
}

/* After the first loop bound "host:0", the others take its port. */
static void
pin_port(char *addr, size_t cap, int port)
{
    char *colon = strrchr(addr, ':');

    if (colon != NULL && strcmp(colon, ":0") == 0)
        snprintf(colon, cap - (size_t)(colon - addr), ":%d", port);
}

static void
join_gateway_threads(kb_server *s)
{
    for (int i = 0; i < s->ngw_threads; i++) {
        pthread_join(s->gw_threads[i].thread, NULL);
        sem_destroy(&s->gw_threads[i].ready);
    }
    free(s->gw_threads);
    s->gw_threads = NULL;
    s->ngw_threads = 0;
    kb_http_iplimit_free(s->iplimit);
    s->iplimit = NULL;
}

/* Sends coalesce: act once every started thread has finished. */
static void
on_gw_done(uv_async_t *a)
{
    kb_server *s = a->data;

    if (s->gw_threads_open == 0 ||
        atomic_load(&s->gw_finished) < s->ngw_threads)
        return;
    s->gw_threads_open = 0;
    join_gateway_threads(s);
    if (s->stopping)
        listener_closed(s);
}

static int
start_gateway_threads(kb_server *s)
{
    int n = (int)s->opts.gateway_workers;
    int rc = 0;

    if (n == 0) {
        n = (int)uv_available_parallelism();
        if (n < 1)
            n = 1;
    }
    s->gw_threads = calloc((size_t)n, sizeof(*s->gw_threads));
    if (s->gw_threads == NULL)
        return KB_ENOMEM;
    if (s->opts.max_conns_per_ip > 0 &&
        (rc = kb_http_iplimit_create((size_t)s->opts.max_conns_per_ip,
                                     &s->iplimit)) != 0)
        return rc;
    snprintf(s->gateway_addr, sizeof(s->gateway_addr), "%s",
             s->opts.gateway_listen);
    if (s->opts.gateway_tls_listen != NULL)
        snprintf(s->gateway_tls_addr, sizeof(s->gateway_tls_addr), "%s",
                 s->opts.gateway_tls_listen);
    for (int i = 0; i < n && rc == 0; i++) {
        gw_thread *t = &s->gw_threads[i];
        t->s = s;
        t->index = i;
        sem_init(&t->ready, 0, 0);
        if (pthread_create(&t->thread, NULL, gw_thread_main, t) != 0) {
            sem_destroy(&t->ready);
            rc = KB_ENOMEM;
            break;
        }
        t->started = true;
        s->ngw_threads = i + 1;
        s->gw_threads_open = 1;
        while (sem_wait(&t->ready) != 0)
            ;
        rc = t->rc;
        if (rc == 0 && i == 0) {
            pin_port(s->gateway_addr, sizeof(s->gateway_addr),
                     kb_http_server_port(t->plain));
            kb_runtime_set_url_base(s->runtime, s->opts.domain,
                                    kb_http_server_port(t->plain));
            if (t->tls != NULL)
                pin_port(s->gateway_tls_addr, sizeof(s->gateway_tls_addr),
                         kb_http_server_port(t->tls));
            kb_log_info("listening", "{s:s, s:s, s:i}", "listener",
                        "gateway", "addr", s->opts.gateway_listen, "port",
                        kb_http_server_port(t->plain));
            if (t->tls != NULL)
                kb_log_info("listening", "{s:s, s:s, s:i}", "listener",
                            "gateway-tls", "addr", s->opts.gateway_tls_listen,
                            "port", kb_http_server_port(t->tls));
        }
    }
    kb_log_info("gateway loops started", "{s:i}", "loops", s->ngw_threads);
    return rc;
}

/* Ask every gateway thread to stop; gw_done fires as each finishes. */
static void
stop_gateway_threads(kb_server *s)
{
    for (int i = 0; i < s->ngw_threads; i++)
        if (!atomic_exchange(&s->gw_threads[i].stop_requested, true))
            uv_async_send(&s->gw_threads[i].stop);
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
    /* the api listener, and each gateway loop, count as one listener */
    s->listeners_open = 1 + (s->gw_threads_open > 0);
    kb_gateway_shutdown(s->gateway);
    kb_http_server_shutdown(s->api_srv, grace, listener_closed, s);
    stop_gateway_threads(s);
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

/* --tls-cert "cert:key[,cert:key…]" → the TLS listener's certificates. */
static int
load_tls(kb_server *s)
{
    kb_tls_cert certs[MAX_TLS_CERTS];
    char *list, *item, *save = NULL, err[512] = "";
    size_t n = 0;
    int rc;

    if (s->opts.gateway_tls_listen == NULL && s->opts.tls_certs == NULL)
        return 0;
    if (s->opts.gateway_tls_listen == NULL || s->opts.tls_certs == NULL) {
        kb_log_error("--gateway-tls-listen and --tls-cert go together", NULL);
        return KB_EINVAL;
    }
    if ((list = strdup(s->opts.tls_certs)) == NULL)
        return KB_ENOMEM;
    for (item = strtok_r(list, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (colon == NULL || colon == item || colon[1] == '\0' ||
            n == MAX_TLS_CERTS) {
            kb_log_error("--tls-cert: expected CERT.pem:KEY.pem[,...] "
                         "(at most 64)", "{s:s}", "value", item);
            free(list);
            return KB_EINVAL;
        }
        *colon = '\0';
        certs[n++] = (kb_tls_cert){ item, colon + 1 };
    }
    rc = n == 0 ? KB_EINVAL
                : kb_tls_server_create(certs, n, &s->tls, err, sizeof(err));
    free(list);
    if (rc != 0)
        kb_log_error("cannot load the TLS certificates", "{s:s}", "error",
                     err[0] != '\0' ? err : kb_strerror(rc));
    return rc;
}

static int
boot(kb_server *s, const char *self_exe)
{
    char url[PATH_MAX + 16];
    kb_api_ctx ctx;
    int rc;

    if ((rc = data_dir(s)) != 0 || (rc = admin_token(s)) != 0 ||
        (rc = load_tls(s)) != 0)
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
    if (kb_gateway_set_domain(s->gateway, s->opts.domain, 0) != 0) {
        kb_log_error("bad --domain", "{s:s}", "domain", s->opts.domain);
        return KB_EINVAL;
    }
    kb_gateway_set_cache_size(s->gateway,
                              (size_t)s->opts.gateway_cache_bytes);
    kb_runtime_set_run_as(s->runtime, s->opts.run_as);
    kb_runtime_set_log_size(s->runtime, (size_t)s->opts.service_log_bytes);
    if (s->opts.ca_file != NULL &&
        (access(s->opts.ca_file, R_OK) != 0 ||
         kb_gateway_set_ca_file(s->gateway, s->opts.ca_file) != 0)) {
        kb_log_error("cannot read the CA file", "{s:s}", "path",
                     s->opts.ca_file);
        return KB_EINVAL;
    }
    if ((rc = kb_gateway_set_access_log(s->gateway, s->opts.access_log)) != 0) {
        kb_log_error("cannot open the access log", "{s:s, s:s}", "path",
                     s->opts.access_log, "error", kb_strerror(rc));
        return rc;
    }
    ctx = (kb_api_ctx){ s->loop, s->store, s->runtime, s->gateway, s->token };
    if ((rc = kb_api_create(&ctx, &s->api)) != 0 ||
        (rc = kb_api_restore(s->api)) != 0) {
        kb_log_error("cannot start the admin API", "{s:s}", "error",
                     kb_strerror(rc));
        return rc;
    }
    uv_async_init(s->loop, &s->gw_done, on_gw_done);
    s->gw_done.data = s;
    if ((rc = open_listener(s, "api", s->opts.api_listen, kb_api_handle,
                            s->api, &s->api_srv)) != 0 ||
        (rc = start_gateway_threads(s)) != 0)
        return rc;

    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    return 0;
}

/* Tear down whatever boot() got to. */
static void
boot_failed(kb_server *s)
{
    s->stopping = true;
    if (s->api_srv != NULL || s->gw_threads_open > 0) {
        s->listeners_open = (s->api_srv != NULL) + (s->gw_threads_open > 0);
        if (s->api_srv != NULL)
            kb_http_server_shutdown(s->api_srv, 0, listener_closed, s);
        stop_gateway_threads(s);
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
        kb_http_iplimit_free(s.iplimit);
        kb_tls_server_free(s.tls);
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
    kb_tls_server_free(s.tls);
    kb_server_options_free(&s.opts);
    return s.exit_code;
}
