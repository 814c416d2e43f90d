/*
 * apikeys.c - kind ApiKey: keys that clients present to gateways whose
 * spec declares an apiKey security scheme.  Only the key's SHA-256 is
 * stored and handed to the gateway; the key itself is shown once, in the
 * answer to the call that created (or replaced) it.
 */
#include "api/api.h"
#include "core/err.h"
#include "core/id.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#define KEY_MIN       16
#define KEY_MAX       256
#define KEY_RANDOM    20             /* bytes: 40 hex digits */
#define KEY_PREFIX    "kbk_"

static bool
key_ok(const char *k)
{
    size_t n = strlen(k);

    if (n < KEY_MIN || n > KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] <= ' ' || k[i] > '~' || k[i] == '&' || k[i] == '#' ||
            k[i] == '%' || k[i] == '+')
            return false;            /* must travel in a query unescaped */
    return true;
}

static int
apikeys_validate(kb_api *api, const json_t *spec, char *err, size_t errlen)
{
    const json_t *k = json_object_get(spec, "keyString"), *g, *v;
    size_t i;

    if (k != NULL && !key_ok(json_string_value(k))) {
        snprintf(err, errlen, "keyString: must be %d to %d printable "
                 "characters without spaces, '&', '#', '%%' or '+'",
                 KEY_MIN, KEY_MAX);
        return KB_EINVAL;
    }
    g = json_object_get(spec, "gateways");
    json_array_foreach(g, i, v)
        if (!kb_name_valid(json_string_value(v))) {
            snprintf(err, errlen, "gateways[%zu]: not a valid gateway name",
                     i);
            return KB_EINVAL;
        }
    return 0;
}

static int
sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;

    if (EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return KB_ENOMEM;
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/*
 * keyString given → store its hash (and reveal nothing new); none given on
 * create → generate one and reveal it; none given on update → keep the
 * stored hash.  keyHash/keyPrefix sent by a client are ignored.
 */
static int
apikeys_prepare(kb_api *api, kb_http_req *req, const char *name,
                json_t *spec, const json_t *old_doc,
                json_t **reveal, char *err, size_t errlen)
{
    char key[KEY_MAX + 1], hash[65], prefix[9];
    const json_t *given = json_object_get(spec, "keyString");

    json_object_del(spec, "keyHash");
    json_object_del(spec, "keyPrefix");
    if (given == NULL && old_doc != NULL &&
        json_is_string(json_object_get(old_doc, "keyHash"))) {
        json_object_set(spec, "keyHash", json_object_get(old_doc, "keyHash"));
        json_object_set(spec, "keyPrefix",
                        json_object_get(old_doc, "keyPrefix"));
        return 0;
    }
    if (given != NULL) {
        snprintf(key, sizeof(key), "%s", json_string_value(given));
    } else {
        memcpy(key, KEY_PREFIX, sizeof(KEY_PREFIX) - 1);
        if (kb_random_hex(key + sizeof(KEY_PREFIX) - 1, KEY_RANDOM) != 0) {
            snprintf(err, errlen, "cannot generate a key");
            return KB_ENOMEM;
        }
        if ((*reveal = json_pack("{s:s}", "keyString", key)) == NULL)
            return KB_ENOMEM;
    }
    if (sha256_hex(key, hash) != 0)
        return KB_ENOMEM;
    snprintf(prefix, sizeof(prefix), "%.8s", key);
    json_object_del(spec, "keyString");
    if (json_object_set_new(spec, "keyHash", json_string(hash)) != 0 ||
        json_object_set_new(spec, "keyPrefix", json_string(prefix)) != 0)
        return KB_ENOMEM;
    return 0;
}

static int
apikeys_apply(kb_api *api, const char *project, const char *name,
              const json_t *spec, char *err, size_t errlen)
{
    const char *hash = json_string_value(json_object_get(spec, "keyHash"));
    int rc;

    if (hash == NULL) {
        snprintf(err, errlen, "the stored key has no keyHash");
        return KB_EINVAL;
    }
    rc = kb_gateway_key_set(kb_api_context(api)->gateway, project, name, hash,
                            json_object_get(spec, "gateways"));
    if (rc != 0)
        snprintf(err, errlen, "cannot install the key: %s", kb_strerror(rc));
    return rc;
}

static void
apikeys_remove(kb_api *api, const char *project, const char *name)
{
    (void)kb_gateway_key_remove(kb_api_context(api)->gateway, project, name);
}

const kb_api_family kb_api_apikeys = {
    .kind = "ApiKey",
    .validate = apikeys_validate,
    .apply = apikeys_apply,
    .remove = apikeys_remove,
    .prepare = apikeys_prepare,
};
