/*
 * gateway_verbs.c - gateway verbs beyond apply/get/delete:
 * `kiban create-key NAME` makes an API key and prints it (the only time
 * it is shown), `kiban purge-cache GATEWAY` drops cached responses.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <stdio.h>
#include <string.h>

static const char *
project_of(const kb_cli *c)
{
    const char *p = kb_cli__opt(&c->opts, "project");

    return p != NULL ? p : "default";
}

/* POST path with body; prints the API error.  0 or an exit code. */
static int
post(kb_cli *c, const char *path, const json_t *body, json_t **resp)
{
    long status;

    if (kb_cli__call(c, "POST", path, body, &status, resp) != 0)
        return KB_CLI_EXIT_FAIL;
    if (status < 200 || status > 299) {
        kb_cli__api_error(c, status, *resp);
        json_decref(*resp);
        *resp = NULL;
        return KB_CLI_EXIT_FAIL;
    }
    return KB_CLI_EXIT_OK;
}

int
kb_cli__create_key(kb_cli *c)
{
    const char *gws[KB_CLI_MAX_ARGS], *name = c->opts.pos[0];
    const char *key = kb_cli__opt(&c->opts, "key");
    const char *label = kb_cli__opt(&c->opts, "display-name");
    size_t n = kb_cli__opt_all(&c->opts, "gateway", gws, KB_CLI_MAX_ARGS);
    json_t *body = json_object(), *list = json_array(), *resp = NULL;
    char path[512];
    int rc;

    if (!kb_name_valid(name)) {
        fprintf(kb_cli__err(), "kiban: create-key: \"%s\" is not a valid "
                "name\n", name);
        json_decref(body);
        json_decref(list);
        return KB_CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_string(gws[i]));
    json_object_set_new(body, "gateways", list);
    if (key != NULL)
        json_object_set_new(body, "keyString", json_string(key));
    if (label != NULL)
        json_object_set_new(body, "displayName", json_string(label));
    snprintf(path, sizeof(path), "/v1/projects/%s/apiKeys?apiKeyId=%s",
             project_of(c), name);
    rc = post(c, path, body, &resp);
    json_decref(body);
    if (rc != KB_CLI_EXIT_OK)
        return rc;
    if (json_is_string(json_object_get(resp, "keyString")))
        fprintf(kb_cli__out(), "%s\n",
                json_string_value(json_object_get(resp, "keyString")));
    else
        fprintf(kb_cli__out(), "apiKey/%s created\n", name);
    json_decref(resp);
    return KB_CLI_EXIT_OK;
}

int
kb_cli__purge_cache(kb_cli *c)
{
    const char *prefix = kb_cli__opt(&c->opts, "path-prefix");
    json_t *body = json_object(), *resp = NULL;
    char path[512];
    int rc;

    if (!kb_name_valid(c->opts.pos[0])) {
        fprintf(kb_cli__err(), "kiban: purge-cache: \"%s\" is not a valid "
                "gateway name\n", c->opts.pos[0]);
        json_decref(body);
        return KB_CLI_EXIT_USAGE;
    }
    if (prefix != NULL)
        json_object_set_new(body, "pathPrefix", json_string(prefix));
    snprintf(path, sizeof(path), "/v1/projects/%s/gateways/%s:purgeCache",
             project_of(c), c->opts.pos[0]);
    rc = post(c, path, body, &resp);
    json_decref(body);
    if (rc != KB_CLI_EXIT_OK)
        return rc;
    fprintf(kb_cli__out(), "%lld cached responses purged\n",
            (long long)json_integer_value(json_object_get(resp, "purged")));
    json_decref(resp);
    return KB_CLI_EXIT_OK;
}
