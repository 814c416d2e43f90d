/*
 * request.c - the CLI's client of the admin API: one blocking libcurl easy
 * request per call (the CLI has no event loop), JSON in and out, bearer
 * token, bounded response size and timeouts.
 */
#include "cli/cli_int.h"
#include "core/err.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#define REQ_MAX_RESPONSE    ((size_t)64 << 20)
#define REQ_CONNECT_TIMEOUT 5L          /* seconds */
#define REQ_TOTAL_TIMEOUT   60L

static bool curl_ready;

volatile int kb_cli__interrupted;

/* Abandon the transfer once SIGINT has been seen (curl calls this about
 * once a second even while nothing arrives). */
static int
on_progress(void *data, curl_off_t dltotal, curl_off_t dlnow,
            curl_off_t ultotal, curl_off_t ulnow)
{
    (void)data, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return kb_cli__interrupted ? 1 : 0;
}

static size_t
on_body(char *p, size_t size, size_t nmemb, void *data)
{
    kb_buf *b = data;

    if (kb_buf_append(b, p, size * nmemb) != 0)
        return 0;                       /* makes curl fail: CURLE_WRITE_ERROR */
    return size * nmemb;
}

int
kb_cli__call(kb_cli *c, const char *method, const char *path,
             const json_t *body, long *status, json_t **resp)
{
    char url[4096], auth[4200];         /* tokens are at most 4 KiB */
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *headers = NULL, *h;
    kb_buf in = KB_BUF_INIT(REQ_MAX_RESPONSE);
    char *payload = NULL;
    CURL *curl;
    CURLcode cc;
    int rc = 0;

    *status = 0;
    *resp = NULL;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return KB_ENOMEM;
        curl_ready = true;
    }
    if ((size_t)snprintf(url, sizeof(url), "%s%s", c->api, path) >= sizeof(url))
        return KB_ETOOBIG;
    if ((curl = curl_easy_init()) == NULL)
        return KB_ENOMEM;

    errbuf[0] = '\0';
    h = curl_slist_append(headers, "Accept: application/json");
    if (h != NULL)
        headers = h;
    if (body != NULL) {
        payload = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
        if (payload == NULL) {
            rc = KB_ENOMEM;
            goto out_cleanup;
        }
        if ((h = curl_slist_append(headers, "Content-Type: application/json")))
            headers = h;
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    }
    if (c->token != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
        if ((h = curl_slist_append(headers, auth)))
            headers = h;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "GET") == 0)
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &in);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, REQ_CONNECT_TIMEOUT);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, REQ_TOTAL_TIMEOUT);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "kiban-cli");
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);

    cc = curl_easy_perform(curl);
    if (kb_cli__interrupted) {
        rc = KB_ECANCELED;
        goto out_cleanup;
    }
    if (cc == CURLE_WRITE_ERROR && in.len > 0) {
        if (!c->quiet)
            fprintf(kb_cli__err(), "kiban: the response from %s is larger than "
                    "%zu MiB\n", c->api, REQ_MAX_RESPONSE >> 20);
        rc = KB_ETOOBIG;
        goto out_cleanup;
    }
    if (cc != CURLE_OK) {
        if (!c->quiet)
            fprintf(kb_cli__err(), "kiban: cannot reach the kiban API at %s: %s\n",
                    c->api, errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc));
        rc = KB_EUNAVAIL;
        goto out_cleanup;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    if (in.len > 0)
        *resp = json_loadb(in.data, in.len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                          NULL);

out_cleanup:
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    free(payload);
    kb_buf_free(&in);
    return rc;
}

void
kb_cli__api_error(const kb_cli *c, long status, const json_t *resp)
{
    const json_t *e = json_object_get(resp, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *st = json_string_value(json_object_get(e, "status"));
    FILE *err = kb_cli__err();

    if (msg != NULL)
        fprintf(err, "kiban: %s (%s)\n", msg, st != NULL ? st : "ERROR");
    else
        fprintf(err, "kiban: the API answered HTTP %ld\n", status);
    if (status == 401 && c->token == NULL)
        fprintf(err, "kiban: no API token: use --token-file FILE or "
                "KIBAN_TOKEN, or run where ./kiban-data/admin.token is\n");
}

void
kb_cli__http_cleanup(void)
{
    if (curl_ready) {
        curl_global_cleanup();
        curl_ready = false;
    }
}
