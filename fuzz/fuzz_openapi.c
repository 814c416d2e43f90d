/*
 * fuzz_openapi.c - libFuzzer target for the gateway's OpenAPI loader.
 *
 * The input is an OpenAPI/Swagger document as JSON.  It is wrapped as a
 * Gateway spec {"openapi": doc}, validated, compiled and merged into a
 * route table; then every compiled route's own template is matched as a
 * path and its upstream target built.  Must never crash or leak.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "gateway/gw_int.h"

#define FUZZ_MAX_INPUT (64 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
exercise_routes(const gw_spec *s, const gw_table *t)
{
    kb_buf target = KB_BUF_INIT(1 << 20);

    for (size_t i = 0; i < s->nroutes && i < 256; i++) {
        const gw_route *r = &s->routes[i];
        const kb_router *router = gw__table_router(t, NULL);
        kb_route_match m;
        int rc = kb_router_match(router, r->method, r->template,
                                 strlen(r->template), &m);
        if (rc == 200)
            (void)gw__target_build(m.target, &m, r->template, "a=b", &target);
    }
    kb_buf_free(&target);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *doc, *spec;
    gw_spec *s = NULL;
    gw_table *t = NULL;
    char err[512];

    if (size > FUZZ_MAX_INPUT)
        return 0;
    doc = json_loadb((const char *)data, size,
                     JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL)
        return 0;
    spec = json_pack("{s:o}", "openapi", doc);   /* steals doc */
    if (spec == NULL)
        return 0;
    if (kb_gateway_validate(spec, err, sizeof(err)) == 0 &&
        gw__spec_compile(spec, "fuzz", "gw", &s, err, sizeof(err)) == 0) {
        if (gw__table_build(&s, 1, s, &t, err, sizeof(err)) == 0) {
            exercise_routes(s, t);
            gw__table_unref(t);
        }
        gw__spec_unref(s);
    }
    json_decref(spec);
    return 0;
}
