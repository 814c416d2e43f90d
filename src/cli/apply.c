/*
 * apply.c - `kiban apply`: check every manifest, then create or update each
 * resource in order, kubectl style.  Checking is all-or-nothing (manifest.c);
 * applying stops at the first API error, after reporting what was done.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <string.h>

/* Create, update or leave one resource.  Returns an exit code. */
static int
apply_one(kb_cli *c, const kb_cli_manifest *it, bool dry)
{
    const kb_kind *k = it->kind;
    const char *done, *method;
    char path[512], url[640];
    json_t *live = NULL, *resp = NULL;
    long status;
    int rc = KB_CLI_EXIT_FAIL;

    snprintf(path, sizeof(path), "/v1/projects/%s/%s/%s", it->project,
             k->collection, it->name);
    if (kb_cli__call(c, "GET", path, NULL, &status, &live) != 0)
        return KB_CLI_EXIT_FAIL;

    if (status == 404) {
        method = "POST";
        done = "created";
        snprintf(url, sizeof(url), "/v1/projects/%s/%s?%sId=%s%s", it->project,
                 k->collection, k->singular, it->name,
                 dry ? "&validateOnly=true" : "");
    } else if (status == 200 && json_is_object(live)) {
        if (!kb_cli__spec_differs(k, it->spec, live)) {
            done = "unchanged";
            goto out_print;
        }
        method = "PATCH";
        done = "configured";
        snprintf(url, sizeof(url), "%s%s", path,
                 dry ? "?validateOnly=true" : "");
    } else {
        kb_cli__api_error(c, status, live);
        goto out_context;
    }

    if (kb_cli__call(c, method, url, it->spec, &status, &resp) != 0)
        goto out_free;
    if (status < 200 || status > 299) {
        kb_cli__api_error(c, status, resp);
        goto out_context;
    }

out_print:
    fprintf(kb_cli__out(), "%s/%s %s%s\n", k->singular, it->name, done,
            dry ? " (dry run)" : "");
    /* a secret the server generated is shown once (ApiKey) */
    if (json_is_string(json_object_get(resp, "keyString")))
        fprintf(kb_cli__out(), "  keyString: %s (shown once: keep it)\n",
                json_string_value(json_object_get(resp, "keyString")));
    fflush(kb_cli__out());
    rc = KB_CLI_EXIT_OK;
    goto out_free;

out_context:
    fprintf(kb_cli__err(), "kiban: while applying %s/%s from %s:%d\n",
            k->singular, it->name, it->file, kb_yaml_doc_line(it->doc));
out_free:
    json_decref(resp);
    json_decref(live);
    return rc;
}

int
kb_cli__apply(kb_cli *c)
{
    const char *files[KB_CLI_MAX_ARGS];
    size_t nfiles = kb_cli__opt_all(&c->opts, "filename", files,
                                    KB_CLI_MAX_ARGS);
    bool dry = kb_cli__opt(&c->opts, "dry-run") != NULL, stdin_seen = false;
    kb_cli_mset m;
    size_t nerr;
    int rc = KB_CLI_EXIT_OK;

    if (nfiles == 0) {
        fprintf(kb_cli__err(), "kiban apply: -f FILE is required; run 'kiban "
                "help apply'\n");
        return KB_CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < nfiles; i++) {
        if (strcmp(files[i], "-") == 0 && stdin_seen) {
            fprintf(kb_cli__err(), "kiban apply: -f - given twice; run 'kiban "
                    "help apply'\n");
            return KB_CLI_EXIT_USAGE;
        }
        stdin_seen = stdin_seen || strcmp(files[i], "-") == 0;
    }

    kb_cli__mset_init(&m);
    for (size_t i = 0; i < nfiles; i++) {
        if (kb_cli__mset_add_file(&m, files[i]) != 0) {
            fprintf(kb_cli__err(), "kiban: out of memory\n");
            rc = KB_CLI_EXIT_FAIL;
            goto out_free;
        }
    }
    nerr = kb_cli__mset_check(&m, c->project);
    if (nerr > 0) {
        fputs(kb_buf_cstr(&m.errors), kb_cli__err());
        if (nerr > KB_CLI_MAX_ERRORS)
            fprintf(kb_cli__err(), "... and %zu more errors\n",
                    nerr - KB_CLI_MAX_ERRORS);
        fprintf(kb_cli__err(), "kiban: nothing applied (%zu error%s)\n", nerr,
                nerr == 1 ? "" : "s");
        rc = KB_CLI_EXIT_FAIL;
        goto out_free;
    }
    for (size_t i = 0; i < m.nitems && rc == KB_CLI_EXIT_OK; i++)
        rc = apply_one(c, &m.items[i], dry);

out_free:
    kb_cli__mset_free(&m);
    return rc;
}
