/*
 * families.c - the plane behind the Gateway kind: gateways install route
 * tables.  A family is a small adapter from the API's stored spec to its
 * plane's header API (services: services.c, API keys: apikeys.c).
 */
#include "api/api.h"
#include "core/err.h"

/* Gateways ---------------------------------------------------------------- */

static int
gateways_validate(kb_api *api, const json_t *spec, char *err, size_t errlen)
{
    return kb_gateway_validate(spec, err, errlen);
}

static int
gateways_apply(kb_api *api, const char *project, const char *name,
               const json_t *spec, char *err, size_t errlen)
{
    return kb_gateway_set(kb_api_context(api)->gateway, project, name, spec,
                          err, errlen);
}

static void
gateways_remove(kb_api *api, const char *project, const char *name)
{
    (void)kb_gateway_remove(kb_api_context(api)->gateway, project, name);
}

static json_t *
gateways_status(kb_api *api, const char *project, const char *name)
{
    return kb_gateway_status(kb_api_context(api)->gateway, project, name);
}

static void
gateways_purge(kb_api *api, kb_http_req *req, const char *project,
               const char *name)
{
    kb_gateway *gw = kb_api_context(api)->gateway;
    json_t *body = NULL, *status = kb_gateway_status(gw, project, name);
    const char *prefix = NULL;
    json_error_t jerr;
    long n;

    if (status == NULL) {
        kb_http_respond_error(req, 404, "gateway not found");
        return;
    }
    json_decref(status);
    if (req->body_len > 0) {
        body = json_loadb(req->body, req->body_len, 0, &jerr);
        const json_t *p = json_object_get(body, "pathPrefix");
        if (!json_is_object(body) || (p != NULL && !json_is_string(p))) {
            json_decref(body);
            kb_http_respond_error(req, 400, "the body must be a JSON object "
                                  "{\"pathPrefix\": \"/...\"} (or empty)");
            return;
        }
        prefix = json_string_value(p);
    }
    n = kb_gateway_cache_purge(gw, project, name, prefix);
    json_decref(body);
    kb_http_respond_json(req, 200, json_pack("{s:I}", "purged",
                                             (json_int_t)n));
}

static const kb_api_verb gateway_verbs[] = {
    { "purgeCache", gateways_purge },
    { NULL, NULL },
};

const kb_api_family kb_api_gateways = {
    .kind = "Gateway",
    .validate = gateways_validate,
    .apply = gateways_apply,
    .remove = gateways_remove,
    .status = gateways_status,
    .verbs = gateway_verbs,
};
