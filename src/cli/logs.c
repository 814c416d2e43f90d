/*
 * logs.c - `kiban logs SERVICE`: what a service's instances wrote to
 * stdout and stderr, from GET …/services/S/logs; --follow long-polls
 * with after=nextSeq until SIGINT.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGS_WAIT        "30s"       /* one long poll of --follow */
#define LOGS_MAX_LIMIT   100000
#define LOGS_RETRY_MS    1000        /* after an error while following */

static void
on_sigint(int sig)
{
    (void)sig;
    kb_cli__interrupted = 1;
}

/* Print n bytes of text with control characters (but tabs, and NULs
 * too) shown as '?'. */
static void
put_clean_n(FILE *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        fputc((ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : ch, out);
    }
}

static void
put_clean(FILE *out, const char *s)
{
    put_clean_n(out, s, strlen(s));
}

/* One entry: "TIME REVISION/INSTANCE[:stderr] text", or a JSON line. */
static void
print_entry(const json_t *e, bool json)
{
    FILE *out = kb_cli__out();
    const char *stream = json_string_value(json_object_get(e, "stream"));
    const json_t *inst = json_object_get(e, "instance");
    const char *s;
    char id[64];

    if (json) {
        char *line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (line != NULL)
            fprintf(out, "%s\n", line);
        free(line);
        return;
    }
    if (json_is_integer(inst))
        snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(inst));
    else
        snprintf(id, sizeof(id), "%s", json_string_value(inst) != NULL
                 ? json_string_value(inst) : "-");
    s = json_string_value(json_object_get(e, "time"));
    put_clean(out, s != NULL ? s : "-");
    fputc(' ', out);
    s = json_string_value(json_object_get(e, "revision"));
    put_clean(out, s != NULL ? s : "-");
    fputc('/', out);
    put_clean(out, id);
    if (stream != NULL && strcmp(stream, "stderr") == 0)
        fputs(":stderr", out);
    fputc(' ', out);
    const json_t *text = json_object_get(e, "text");
    if (json_is_string(text))   /* may hold NULs (\u0000) */
        put_clean_n(out, json_string_value(text), json_string_length(text));
    fputc('\n', out);
}

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

int
kb_cli__logs(kb_cli *c)
{
    const char *name = c->opts.pos[0];
    const char *rev = kb_cli__opt(&c->opts, "revision");
    const char *since = kb_cli__opt(&c->opts, "since");
    const char *limit = kb_cli__opt(&c->opts, "limit");
    const char *format = kb_cli__opt(&c->opts, "output");
    bool follow = kb_cli__opt(&c->opts, "follow") != NULL;
    bool json = false;
    long long ms, n, after = -1;
    char base[512], query[512], path[1200];
    struct sigaction sa, old_sa;
    int rc = KB_CLI_EXIT_OK;

    if (format != NULL && strcmp(format, "json") == 0)
        json = true;
    else if (format != NULL && strcmp(format, "text") != 0) {
        fprintf(kb_cli__err(), "kiban logs: unknown output format \"%s\" "
                "(text or json); run 'kiban help logs'\n", format);
        return KB_CLI_EXIT_USAGE;
    }
    if (!kb_name_valid(name)) {
        fprintf(kb_cli__err(), "kiban logs: \"%s\" is not a valid service "
                "name; run 'kiban help logs'\n", name);
        return KB_CLI_EXIT_USAGE;
    }
    if (rev != NULL && (rev[0] == '\0' || strlen(rev) > 100
                        || strspn(rev, "abcdefghijklmnopqrstuvwxyz0123456789-")
                           != strlen(rev))) {
        fprintf(kb_cli__err(), "kiban logs: --revision \"%s\" is not a "
                "revision name; run 'kiban help logs'\n", rev);
        return KB_CLI_EXIT_USAGE;
    }
    if (since != NULL && kb_cli__duration_ms(since, &ms) != 0) {
        fprintf(kb_cli__err(), "kiban logs: --since \"%s\": want a duration "
                "such as 30s, 5m or 2h; run 'kiban help logs'\n", since);
        return KB_CLI_EXIT_USAGE;
    }
    if (limit != NULL && kb_cli__int_in(limit, 1, LOGS_MAX_LIMIT, &n) != 0) {
        fprintf(kb_cli__err(), "kiban logs: --limit \"%s\": want a whole "
                "number from 1 to %d; run 'kiban help logs'\n", limit,
                LOGS_MAX_LIMIT);
        return KB_CLI_EXIT_USAGE;
    }
    snprintf(query, sizeof(query), "%s%s%s%s%s%s", rev ? "&revision=" : "",
             rev ? rev : "", since ? "&since=" : "", since ? since : "",
             limit ? "&limit=" : "", limit ? limit : "");
    snprintf(base, sizeof(base), "/v1/projects/%s/services/%s/logs",
             kb_cli__project(c), name);
    if (follow) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_sa);
    }
    for (;;) {
        json_t *resp = NULL, *e;
        const json_t *next;
        long status;
        size_t i;
        int err;

        if (after >= 0)                  /* --follow: what came since */
            snprintf(path, sizeof(path), "%s?after=%lld&wait=%s%s%s", base,
                     after, LOGS_WAIT, rev ? "&revision=" : "", rev ? rev : "");
        else
            snprintf(path, sizeof(path), "%s%s%s", base, query[0] ? "?" : "",
                     query[0] ? query + 1 : "");
        err = kb_cli__call(c, "GET", path, NULL, &status, &resp);
        if (err == KB_ECANCELED || kb_cli__interrupted)
            break;                              /* SIGINT: done, exit 0 */
        if (err == 0 && (status != 200 || !json_is_object(resp))) {
            kb_cli__api_error(c, status, resp);
            err = KB_EINVAL;
        }
        if (err != 0) {
            json_decref(resp);
            if (!follow || status == 404 || status == 400 || status == 401
                || status == 403) {
                rc = KB_CLI_EXIT_FAIL;
                break;
            }
            sleep_ms(LOGS_RETRY_MS);         /* the server may come back */
            if (kb_cli__interrupted)
                break;
            continue;
        }
        json_array_foreach(json_object_get(resp, "entries"), i, e)
            print_entry(e, json);
        fflush(kb_cli__out());
        next = json_object_get(resp, "nextSeq");
        if (json_is_integer(next))
            after = json_integer_value(next);
        json_decref(resp);
        if (!follow)
            break;
        if (after < 0)
            after = 0;
    }
    if (follow) {
        sigaction(SIGINT, &old_sa, NULL);
        kb_cli__interrupted = 0;
    }
    return rc;
}
