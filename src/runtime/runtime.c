/*
 * runtime.c - services as sequences of immutable revisions (runtime.h):
 * applying a stored Service document (its revisions, traffic split and
 * tags), status, removal, shutdown, and reaping the process groups a
 * killed server left behind.  Routing requests and scaling is scale.c;
 * running one instance is the executor's (supervisor.c and shim.c).
 */
#include "runtime/runtime_int.h"

#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "runtime/limits.h"
#include "runtime/logs.h"

#define NAME_MAX_LEN 200        /* project and service names */

/* Passed from the server's environment to every instance; anything else
 * an instance needs goes in its spec's env. */
static const char *const inherited_env[] = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
};
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void
free_strv(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

static char *
strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
strdupf(const char *fmt, ...)
{
    kb_buf b = KB_BUF_INIT(4096);
    va_list ap;

    va_start(ap, fmt);
    int rc = kb_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        kb_buf_free(&b);
        return NULL;
    }
    return kb_buf_detach(&b);
}

/* ---- revisions ---- */

/* `service="P/S",revision="R"`; 0 or KB_ENOMEM. */
static int
rev_labels(kb_buf *b, const rt_revision *rev, const char *extra)
{
    if (kb_buf_appends(b, "service=\"") < 0
        || kb_metrics_label_escape(b, rev->svc->label) < 0
        || kb_buf_appends(b, "\",revision=\"") < 0
        || kb_metrics_label_escape(b, rev->name) < 0
        || kb_buf_appendc(b, '"') < 0
        || (extra != NULL && kb_buf_appends(b, extra) < 0))
        return KB_ENOMEM;
    return 0;
}

static int
rev_metrics(rt_revision *rev)
{
    static const char *const classes[6] = {
        ",code=\"error\"", ",code=\"1xx\"", ",code=\"2xx\"", ",code=\"3xx\"",
        ",code=\"4xx\"", ",code=\"5xx\"",
    };
    rt_rev_metrics *m = &rev->m;
    kb_buf b = KB_BUF_INIT(4096);
    int rc = 0;

    for (size_t i = 0; i < 6 && rc == 0; i++) {
        kb_buf_reset(&b);
        if ((rc = rev_labels(&b, rev, classes[i])) == 0
            && (m->requests[i] = kb_counter_get(
                    "kiban_revision_requests_total",
                    "Requests routed to a revision, by status class "
                    "(error: no answer).", b.data)) == NULL)
            rc = KB_ENOMEM;
    }
    kb_buf_reset(&b);
    if (rc == 0 && (rc = rev_labels(&b, rev, NULL)) == 0) {
        m->latency = kb_histogram_get("kiban_revision_request_duration_seconds",
            "Time from picking an instance to the end of its answer.",
            b.data, kb_metrics_latency_buckets, kb_metrics_latency_nbuckets);
        m->inflight = kb_gauge_get("kiban_revision_inflight_requests",
            "Requests an instance of the revision is working on.", b.data);
        m->instances = kb_gauge_get("kiban_revision_instances_ready",
            "Instances of the revision taking requests.", b.data);
        m->cold_starts = kb_counter_get("kiban_revision_cold_starts_total",
            "Instances started because a request found none with a free "
            "slot.", b.data);
        m->restarts = kb_counter_get("kiban_revision_restarts_total",
            "Instance restarts after an exit or a failed probe.", b.data);
        if (m->latency == NULL || m->inflight == NULL || m->instances == NULL
            || m->cold_starts == NULL || m->restarts == NULL)
            rc = KB_ENOMEM;
    }
    kb_buf_free(&b);
    return rc;
}

static void
rev_free(rt_revision *rev)
{
    for (size_t i = 0; i < 6; i++)
        kb_metrics_drop(rev->m.requests[i]);
    kb_metrics_drop(rev->m.latency);
    kb_metrics_drop(rev->m.inflight);
    kb_metrics_drop(rev->m.instances);
    kb_metrics_drop(rev->m.cold_starts);
    kb_metrics_drop(rev->m.restarts);
    kb_rt_template_free(&rev->tpl);
    json_decref(rev->template_json);
    free(rev->name);
    free(rev);
}

/* A revision of svc from its document entry (not linked).  NULL with a
 * message in err. */
static rt_revision *
rev_new(rt_service *svc, const char *name, const json_t *tpl, char *err,
        size_t errlen)
{
    rt_revision *rev = calloc(1, sizeof(*rev));
    char why[256] = "";

    if (rev == NULL || (rev->name = strdup(name)) == NULL) {
        free(rev);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    rev->svc = svc;
    if (kb_rt_template_parse(tpl, &rev->tpl, why, sizeof(why)) != 0) {
        set_err(err, errlen, "revision %s: %s", name, why);
        free(rev->name);
        free(rev);
        return NULL;
    }
    rev->template_json = json_deep_copy(tpl);
    if (rev->template_json == NULL || rev_metrics(rev) != 0) {
        set_err(err, errlen, "out of memory");
        rev_free(rev);
        return NULL;
    }
    rev->transition_ns = kb_time_unix_ns();
    snprintf(rev->reason, sizeof(rev->reason), "Deploying");
    return rev;
}

static rt_revision *
rev_find(const rt_service *svc, const char *name)
{
    for (rt_revision *r = svc->revisions; r != NULL; r = r->next)
        if (!r->retired && strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

/* ---- services ---- */

static rt_service *
service_find(kb_runtime *rt, const char *project, const char *name)
{
    for (rt_service *s = rt->services; s != NULL; s = s->next)
        if (!s->removed && strcmp(s->project, project) == 0
            && strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void rt_maybe_done(kb_runtime *rt);

static void
tags_free(rt_tag *tags, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(tags[i].tag);
    free(tags);
}

static void
service_free(rt_service *svc)
{
    kb_runtime *rt = svc->rt;

    pthread_mutex_lock(&rt->ep_lock);
    for (rt_service **pp = &rt->services; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == svc) {
            *pp = svc->next;
            break;
        }
    }
    pthread_mutex_unlock(&rt->ep_lock);
    json_decref(svc->doc);
    json_decref(svc->traffic);
    tags_free(svc->tags, svc->ntags);
    kb__rt_log_free(svc->log);
    free(svc->project);
    free(svc->name);
    free(svc->label);
    free(svc->parent);
    free(svc);
    rt->nservices--;
    rt_maybe_done(rt);
}

static rt_service *
service_new(kb_runtime *rt, const char *project, const char *name)
{
    rt_service *svc = calloc(1, sizeof(*svc));
    kb_buf labels = KB_BUF_INIT(1024);

    if (svc == NULL)
        return NULL;
    svc->rt = rt;
    svc->project = strdup(project);
    svc->name = strdup(name);
    svc->label = strdupf("%s/%s", project, name);
    svc->parent = strdupf("projects/%s/services/%s", project, name);
    if (svc->project == NULL || svc->name == NULL || svc->label == NULL
        || svc->parent == NULL || kb_buf_appends(&labels, "service=\"") < 0
        || kb_metrics_label_escape(&labels, svc->label) < 0
        || kb_buf_appendc(&labels, '"') < 0)
        goto out_free;
    if (kb__rt_log_new(rt->loop, rt->log_bytes, &svc->log) != 0)
        goto out_free;
    svc->restarts_total = kb_counter_get("kiban_runtime_restarts_total",
        "Instance restarts after an exit, per service.", labels.data);
    svc->running = kb_gauge_get("kiban_runtime_instances_running",
        "Instances whose port accepts connections, per service.",
        labels.data);
    if (svc->restarts_total == NULL || svc->running == NULL)
        goto out_free;
    kb_buf_free(&labels);
    rt->nservices++;
    return svc;

out_free:
    kb_buf_free(&labels);
    kb__rt_log_free(svc->log);
    free(svc->project);
    free(svc->name);
    free(svc->label);
    free(svc->parent);
    free(svc);
    return NULL;
}

/* A retired revision with no instance left goes; then maybe its service. */
static void
rev_maybe_free(rt_revision *rev)
{
    rt_service *svc = rev->svc;
    kb_runtime *rt = svc->rt;

    if (!rev->retired || rev->ninstances > 0)
        return;
    pthread_mutex_lock(&rt->ep_lock);
    for (rt_revision **pp = &svc->revisions; *pp != NULL;
         pp = &(*pp)->next) {
        if (*pp == rev) {
            *pp = rev->next;
            break;
        }
    }
    pthread_mutex_unlock(&rt->ep_lock);
    rev_free(rev);
    svc->nrevisions--;
    if (svc->removed && svc->nrevisions == 0)
        service_free(svc);
}

void
kb__rt_instance_freed(rt_revision *rev)
{
    rev->ninstances--;
    rev_maybe_free(rev);
}

/* Retire a revision: no more requests; drained, then freed. */
static void
rev_retire(rt_revision *rev)
{
    kb_runtime *rt = rev->svc->rt;

    pthread_mutex_lock(&rt->ep_lock);
    rev->retired = true;
    rev->percent = 0;
    rev->tagged = false;
    pthread_mutex_unlock(&rt->ep_lock);
    kb__rt_latest_ready_update(rev->svc);
    kb__rt_wake_all(rev);
    kb__rt_scale_revision(rev);
    rev_maybe_free(rev);
}

/* ---- applying a document ---- */

/* The revisions a document lists, or one made of its top-level template
 * (a document stored before revisions existed).  New reference. */
static json_t *
doc_revisions(const json_t *doc, const char *name)
{
    const json_t *revs = json_object_get(doc, "revisions");
    json_t *tpl;
    char rname[256], *text;
    uint32_t h = 2166136261u;   /* FNV-1a of the template */

    if (json_is_array(revs) && json_array_size(revs) > 0)
        return json_incref((json_t *)revs);
    if ((tpl = kb_rt_template_extract(doc)) == NULL)
        return NULL;
    if ((text = json_dumps(tpl, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
        json_decref(tpl);
        return NULL;
    }
    for (const char *p = text; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    free(text);
    snprintf(rname, sizeof(rname), "%s-00000-%08x", name, h);
    return json_pack("[{s:s, s:o}]", "name", rname, "template", tpl);
}

typedef struct resolved {
    rt_revision *rev;
    int          percent;
    const char  *tag;
    bool         latest;
} resolved;

static rt_revision *
find_in(const rt_service *svc, rt_revision *fresh, const char *name)
{
    for (rt_revision *r = fresh; r != NULL; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return svc != NULL ? rev_find(svc, name) : NULL;
}

static void
fresh_free(rt_revision *fresh)
{
    while (fresh != NULL) {
        rt_revision *next = fresh->next;
        rev_free(fresh);
        fresh = next;
    }
}

/* The URL of a service or of one of its tags ("" without a domain). */
static void
service_url(const rt_service *svc, const char *tag, char *out, size_t outlen)
{
    const kb_runtime *rt = svc->rt;
    char port[16] = "";

    out[0] = '\0';
    if (rt->domain == NULL || rt->domain[0] == '\0')
        return;
    if (rt->url_port > 0 && rt->url_port != 80)
        snprintf(port, sizeof(port), ":%d", rt->url_port);
    snprintf(out, outlen, "http://%s%s%s%s%s.%s%s", tag ? tag : "",
             tag ? "---" : "", svc->name,
             strcmp(svc->project, "default") != 0 ? "." : "",
             strcmp(svc->project, "default") != 0 ? svc->project : "",
             rt->domain, port);
}

/* Traffic as applied: each target with its revision resolved. */
static json_t *
traffic_json(const resolved *t, size_t n)
{
    json_t *arr = json_array();

    for (size_t i = 0; arr != NULL && i < n; i++) {
        json_t *o = json_pack("{s:i}", "percent", t[i].percent);
        if (o == NULL)
            continue;
        if (t[i].latest)        /* resolved when status is asked */
            json_object_set_new(o, "latestRevision", json_true());
        else
            json_object_set_new(o, "revisionName",
                                json_string(t[i].rev->name));
        if (t[i].tag != NULL)
            json_object_set_new(o, "tag", json_string(t[i].tag));
        json_array_append_new(arr, o);
    }
    return arr;
}

int
kb_runtime_apply(kb_runtime *rt, const char *project, const char *name,
                 const json_t *doc, char *err, size_t errlen)
{
    json_t *revs = NULL, *copy = NULL, *tjson = NULL, *deflt = NULL;
    rt_revision *fresh = NULL, **tail = &fresh, *latest;
    resolved *res = NULL;
    rt_tag *tags = NULL;
    size_t ntags = 0, n, i;
    const json_t *e, *traffic;
    int rc;

    if (rt->shutting_down) {
        set_err(err, errlen, "the runtime is shutting down");
        return KB_ECANCELED;
    }
    if (project == NULL || name == NULL || *project == '\0' || *name == '\0'
        || strlen(project) > NAME_MAX_LEN || strlen(name) > NAME_MAX_LEN) {
        set_err(err, errlen, "name: project and service names must be 1 to "
                "%d bytes", NAME_MAX_LEN);
        return KB_EINVAL;
    }
    if ((rc = kb_runtime_validate(doc, err, errlen)) < 0)
        return rc;

    rt_service *svc = service_find(rt, project, name), *created = NULL;
    if (svc != NULL && json_equal(svc->doc, doc))
        return 0;
    if (svc == NULL) {
        if (rt->nservices >= KB_RT_MAX_SERVICES) {
            set_err(err, errlen, "too many services (at most %d)",
                    KB_RT_MAX_SERVICES);
            return KB_ETOOBIG;
        }
        if ((svc = created = service_new(rt, project, name)) == NULL) {
            set_err(err, errlen, "out of memory");
            return KB_ENOMEM;
        }
    }

    rc = KB_ENOMEM;
    if ((revs = doc_revisions(doc, name)) == NULL
        || (copy = json_deep_copy(doc)) == NULL)
        goto out_nomem;
    /* New revisions first, unlinked: nothing changes if one is bad. */
    json_array_foreach(revs, i, e) {
        const char *rn = json_string_value(json_object_get(e, "name"));
        const json_t *tpl = json_object_get(e, "template");
        if (rn == NULL || !json_is_object(tpl)) {
            set_err(err, errlen, "revisions[%zu]: needs a name and a "
                    "template", i);
            rc = KB_EINVAL;
            goto out_free;
        }
        if (find_in(svc, fresh, rn) != NULL)
            continue;           /* immutable: already running */
        rt_revision *r = rev_new(svc, rn, tpl, err, errlen);
        if (r == NULL) {
            rc = KB_EINVAL;
            goto out_free;
        }
        *tail = r;
        tail = &r->next;
    }
    latest = find_in(svc, fresh, json_string_value(json_object_get(
                 json_array_get(revs, json_array_size(revs) - 1), "name")));

    /* Traffic, resolved against the revisions the document keeps. */
    traffic = json_object_get(doc, "traffic");
    if (!json_is_array(traffic) || json_array_size(traffic) == 0
        || json_object_get(doc, "revisions") == NULL) {
        deflt = json_pack("[{s:b, s:i}]", "latestRevision", 1, "percent",
                          100);
        traffic = deflt;
    }
    n = json_array_size(traffic);
    res = calloc(n ? n : 1, sizeof(*res));
    tags = calloc(n ? n : 1, sizeof(*tags));
    if (res == NULL || tags == NULL)
        goto out_nomem;
    json_array_foreach(traffic, i, e) {
        const char *rn = json_string_value(json_object_get(e, "revisionName"));
        res[i].latest = json_is_true(json_object_get(e, "latestRevision"));
        res[i].rev = res[i].latest ? latest : rn ? find_in(svc, fresh, rn)
                                                 : NULL;
        res[i].percent = (int)json_integer_value(json_object_get(e,
                                                                 "percent"));
        res[i].tag = json_string_value(json_object_get(e, "tag"));
        if (res[i].rev == NULL) {
            set_err(err, errlen, "traffic[%zu].revisionName: no revision "
                    "%.128s", i, rn ? rn : "(none)");
            rc = KB_EINVAL;
            goto out_free;
        }
        if (res[i].tag != NULL) {
            tags[ntags].rev = res[i].rev;
            if ((tags[ntags++].tag = strdup(res[i].tag)) == NULL)
                goto out_nomem;
        }
    }
    if ((tjson = traffic_json(res, n)) == NULL)
        goto out_nomem;

    if (created != NULL) {
        pthread_mutex_lock(&rt->ep_lock);
        svc->next = rt->services;
        rt->services = svc;
        pthread_mutex_unlock(&rt->ep_lock);
        created = NULL;
    }

    /* Commit: link the new revisions, set the split and the tags. */
    pthread_mutex_lock(&rt->ep_lock);
    rt_revision **pp = &svc->revisions;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = fresh;
    for (rt_revision *r = fresh; r != NULL; r = r->next)
        svc->nrevisions++;
    fresh = NULL;
    for (rt_revision *r = svc->revisions; r != NULL; r = r->next) {
        r->percent = 0;
        r->tagged = false;
    }
    svc->latest_pct = 0;
    for (i = 0; i < n; i++) {
        if (res[i].latest)
            svc->latest_pct += res[i].percent;
        else
            res[i].rev->percent += res[i].percent;
        res[i].rev->tagged |= res[i].tag != NULL;
    }
    svc->latest = latest;
    rt_tag *old_tags = svc->tags;
    size_t old_ntags = svc->ntags;
    svc->tags = tags;
    svc->ntags = ntags;
    tags = NULL;
    pthread_mutex_unlock(&rt->ep_lock);
    tags_free(old_tags, old_ntags);

    json_decref(svc->doc);
    svc->doc = copy;
    copy = NULL;
    json_decref(svc->traffic);
    svc->traffic = tjson;
    tjson = NULL;

    kb__rt_latest_ready_update(svc);
    kb_log_info("service applied", "{s:s, s:s, s:i}", "service", svc->label,
                "latest", latest->name, "revisions", (int)svc->nrevisions);
    /* Revisions the document dropped go; the others rescale. */
    for (rt_revision *r = svc->revisions, *next; r != NULL; r = next) {
        next = r->next;
        bool kept = false;
        json_array_foreach(revs, i, e) {
            if (strcmp(json_string_value(json_object_get(e, "name")),
                       r->name) == 0)
                kept = true;
        }
        if (!kept && !r->retired)
            rev_retire(r);
        else if (!r->retired)
            kb__rt_scale_revision(r);
    }
    rc = 0;
    goto out_free;

out_nomem:
    set_err(err, errlen, "out of memory");
    rc = KB_ENOMEM;
out_free:
    if (tags != NULL)
        tags_free(tags, ntags);
    free(res);
    fresh_free(fresh);
    json_decref(tjson);
    json_decref(deflt);
    json_decref(copy);
    json_decref(revs);
    if (created != NULL)
        service_free(created);
    return rc;
}

/* Retire every revision; the service stays listed (for the scale pass,
 * which drains and stops its instances) until the last one is freed. */
static void
service_remove(kb_runtime *rt, rt_service *svc)
{
    pthread_mutex_lock(&rt->ep_lock);
    svc->removed = true;
    pthread_mutex_unlock(&rt->ep_lock);
    kb_log_info("service removed", "{s:s}", "service", svc->label);
    (void)rt;
    if (svc->nrevisions == 0) {
        service_free(svc);
        return;
    }
    for (rt_revision *r = svc->revisions, *next; r != NULL; r = next) {
        next = r->next;
        if (!r->retired) {
            bool last = svc->nrevisions == 1 && r->ninstances == 0;
            rev_retire(r);
            if (last)
                return;         /* that freed r and the service */
        }
    }
}

int
kb_runtime_remove(kb_runtime *rt, const char *project, const char *name)
{
    rt_service *svc = service_find(rt, project, name);

    if (svc == NULL)
        return KB_ENOTFOUND;
    service_remove(rt, svc);
    return 0;
}

/* ---- status ---- */

static json_t *
rev_summary(const rt_revision *rev)
{
    int ready = 0, n = 0;

    for (const rt_instance *in = rev->instances; in != NULL; in = in->next) {
        if (in->state == RT_STOPPED)
            continue;
        n++;
        ready += kb__rt_serving(in);
    }
    int pct = rev->percent + (rev == rev->svc->latest_ready
                              ? rev->svc->latest_pct : 0);
    return json_pack("{s:s, s:b, s:i, s:i, s:i, s:i}", "name", rev->name,
                     "ready", rev->ever_ready && !rev->failed,
                     "readyInstances", ready, "instances", n,
                     "desired", rev->desired, "percent", pct);
}

/* The service's Ready condition: False when its newest revision failed,
 * Unknown while it is coming up, else True. */
static json_t *
service_condition(const rt_service *svc)
{
    const rt_revision *l = svc->latest;
    json_t *c;

    if (l == NULL)
        return json_pack("{s:s, s:s}", "type", "Ready", "status", "Unknown");
    c = kb__rt_revision_condition(l);
    if (c != NULL && l->failed) {
        char msg[400];
        snprintf(msg, sizeof(msg), "Revision %s is not ready: %s", l->name,
                 l->message);
        json_object_set_new(c, "reason", json_string("RevisionFailed"));
        json_object_set_new(c, "message", json_string(msg));
    }
    return c;
}

json_t *
kb_runtime_status(kb_runtime *rt, const char *project, const char *name)
{
    rt_service *svc = service_find(rt, project, name);
    const rt_revision *ready_rev = NULL;
    char url[512];
    int ready = 0, desired = 0;

    if (svc == NULL)
        return NULL;
    json_t *list = json_array(), *revs = json_array();
    json_t *traffic = json_deep_copy(svc->traffic);
    for (const rt_revision *r = svc->revisions; r != NULL; r = r->next) {
        if (r->retired)
            continue;
        if (r->ever_ready)
            ready_rev = r;
        desired += r->desired;
        json_array_insert_new(revs, 0, rev_summary(r));
        for (const rt_instance *in = r->instances; in != NULL;
             in = in->next) {
            if (in->state == RT_STOPPED)
                continue;
            ready += kb__rt_serving(in);
            json_t *st = rt->exec->status(in);
            if (st != NULL) {
                json_object_set_new(st, "revision", json_string(r->name));
                json_array_append_new(list, st);
            }
        }
    }
    size_t i;
    json_t *t;
    json_array_foreach(traffic, i, t) {
        const char *tag = json_string_value(json_object_get(t, "tag"));
        if (json_is_true(json_object_get(t, "latestRevision"))
            && svc->latest_ready != NULL)
            json_object_set_new(t, "revisionName",
                                json_string(svc->latest_ready->name));
        service_url(svc, NULL, url, sizeof(url));
        if (tag != NULL)
            service_url(svc, tag, url, sizeof(url));
        if (tag != NULL && url[0] != '\0')
            json_object_set_new(t, "url", json_string(url));
    }
    service_url(svc, NULL, url, sizeof(url));
    json_t *out = json_pack("{s:s, s:o, s:o, s:[o], s:o, s:i, s:i, s:o}",
        "latestCreatedRevisionName", svc->latest ? svc->latest->name : "",
        "latestReadyRevisionName",
        ready_rev ? json_string(ready_rev->name) : json_null(),
        "traffic", traffic ? traffic : json_array(),
        "conditions", service_condition(svc),
        "revisions", revs ? revs : json_array(),
        "ready", ready, "desired", desired,
        "instances", list ? list : json_array());
    if (out != NULL && url[0] != '\0')
        json_object_set_new(out, "url", json_string(url));
    return out;
}

json_t *
kb_runtime_revision_status(kb_runtime *rt, const char *project,
                           const char *name, const char *revision)
{
    rt_service *svc = service_find(rt, project, name);
    const rt_revision *rev = svc != NULL ? rev_find(svc, revision) : NULL;
    int ready = 0;
    char url[512];

    if (rev == NULL)
        return NULL;
    json_t *list = json_array(), *tags = json_array();
    for (const rt_instance *in = rev->instances; in != NULL; in = in->next) {
        if (in->state == RT_STOPPED)
            continue;
        ready += kb__rt_serving(in);
        json_array_append_new(list, rt->exec->status(in));
    }
    for (size_t i = 0; i < svc->ntags; i++)
        if (svc->tags[i].rev == rev)
            json_array_append_new(tags, json_string(svc->tags[i].tag));
    json_t *out = json_pack(
        "{s:b, s:[o], s:o, s:i, s:i, s:i, s:i, s:I, s:I, s:i, s:o, s:b}",
        "ready", rev->ever_ready && !rev->failed,
        "conditions", kb__rt_revision_condition(rev),
        "instances", list ? list : json_array(),
        "desired", rev->desired, "readyInstances", ready,
        "inflight", (int)atomic_load(&rev->inflight),
        "waiting", (int)rev->nwaiting,
        "coldStarts", (json_int_t)rev->cold_starts,
        "restarts", (json_int_t)rev->restarts,
        "percent", rev->percent + (rev == svc->latest_ready
                                   ? svc->latest_pct : 0),
        "tags", tags ? tags : json_array(),
        "latest", rev == svc->latest);
    if (out != NULL) {
        json_t *lim = kb_limits_describe();
        if (lim != NULL) {
            json_object_set_new(lim, "runAs", rt->run_as != NULL
                                ? json_string(rt->run_as) : json_null());
            json_object_set_new(out, "isolation", lim);
        }
    }
    if (out != NULL && json_array_size(tags) > 0) {
        service_url(svc, json_string_value(json_array_get(tags, 0)), url,
                    sizeof(url));
        if (url[0] != '\0')
            json_object_set_new(out, "url", json_string(url));
    }
    return out;
}

/* ---- settings ---- */

void
kb_runtime_set_url_base(kb_runtime *rt, const char *domain, int port)
{
    char *d = domain != NULL && *domain != '\0' ? strdup(domain) : NULL;

    free(rt->domain);
    rt->domain = d;
    rt->url_port = port;
}

void
kb_runtime_set_run_as(kb_runtime *rt, const char *user)
{
    struct passwd *pw;

    free(rt->run_as);
    free_strv(rt->run_as_env);
    rt->run_as_env = NULL;
    rt->run_as = user != NULL && *user != '\0' && geteuid() == 0
                 ? strdup(user) : NULL;
    if (rt->run_as == NULL || (pw = getpwnam(rt->run_as)) == NULL)
        return;                 /* a uid without an entry: keep ours */
    rt->run_as_env = calloc(4, sizeof(char *));
    if (rt->run_as_env == NULL)
        return;
    rt->run_as_env[0] = strdupf("HOME=%s", pw->pw_dir);
    rt->run_as_env[1] = strdupf("USER=%s", pw->pw_name);
    rt->run_as_env[2] = strdupf("LOGNAME=%s", pw->pw_name);
    if (rt->run_as_env[0] == NULL || rt->run_as_env[1] == NULL
        || rt->run_as_env[2] == NULL) {
        free_strv(rt->run_as_env);
        rt->run_as_env = NULL;
    }
}

void
kb_runtime_set_log_size(kb_runtime *rt, size_t bytes)
{
    rt->log_bytes = bytes != 0 ? bytes : 4u << 20;
}

/* ---- captured output ---- */

int
kb_runtime_logs(kb_runtime *rt, const char *project, const char *name,
                const kb_rt_log_query *q,
                void (*cb)(json_t *result, void *data), void *data,
                kb_rt_log_wait **handle)
{
    rt_service *svc = service_find(rt, project, name);

    *handle = NULL;
    if (svc == NULL)
        return KB_ENOTFOUND;
    return kb__rt_log_query(svc->log, q, cb, data, handle);
}

void
kb_runtime_logs_cancel(kb_runtime *rt, kb_rt_log_wait *handle)
{
    (void)rt;
    kb__rt_log_cancel(handle);
}

/* ---- shutdown ---- */

static void
rt_closed(uv_handle_t *h)
{
    kb_runtime *rt = h->data;
    void (*done)(void *) = rt->done;
    void *data = rt->done_data;

    close(rt->watch_fd[0]);
    close(rt->watch_fd[1]);
    free_strv(rt->base_env);
    free(rt->self_exe);
    free(rt->run_as);
    free_strv(rt->run_as_env);
    free(rt->domain);
    pthread_mutex_destroy(&rt->ep_lock);
    free(rt);
    if (done != NULL)
        done(data);
}

static void
rt_maybe_done(kb_runtime *rt)
{
    if (rt->shutting_down && rt->nservices == 0
        && !uv_is_closing((uv_handle_t *)&rt->done_timer)) {
        kb__rt_scale_close(rt);
        uv_close((uv_handle_t *)&rt->done_timer, rt_closed);
    }
}

void
kb_runtime_shutdown(kb_runtime *rt, uint64_t grace_ms,
                    void (*done)(void *data), void *data)
{
    rt->shutting_down = true;
    rt->stop_grace_ms = grace_ms;
    rt->done = done;
    rt->done_data = data;
    kb_log_info("runtime stopping", "{s:I, s:I}",
                "services", (json_int_t)rt->nservices,
                "graceMs", (json_int_t)grace_ms);
    for (rt_service *s = rt->services, *next; s != NULL; s = next) {
        next = s->next;
        if (!s->removed)
            service_remove(rt, s);
        else
            for (rt_revision *r = s->revisions; r != NULL; r = r->next)
                kb__rt_scale_revision(r);
    }
    rt_maybe_done(rt);          /* done() runs from a close callback */
}

/* ---- reaping what a killed server left behind ---- */

typedef struct reap_ctx {
    kb_runtime *rt;
    char       *token;          /* next page, NULL at the end */
    char      **dead;           /* "parent\0name" records to delete */
    size_t      ndead, cap;
    int         err;
} reap_ctx;

static json_int_t
doc_int(const json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(doc, key));
}

/* Decide about one record: kill its group if it is still ours to kill.
 * Returns true if the record should be deleted. */
static bool
reap_one(kb_runtime *rt, const kb_resource *r)
{
    const json_t *owner = json_object_get(r->doc, "owner");
    const char *boot = json_string_value(json_object_get(r->doc, "bootId"));
    json_int_t pid = doc_int(r->doc, "pid"), pgid = doc_int(r->doc, "pgid");
    uint64_t start = (uint64_t)doc_int(r->doc, "startTime");
    json_int_t opid = doc_int(owner, "pid");
    uint64_t ostart = (uint64_t)doc_int(owner, "startTime");
    bool zombie = false;

    if (boot == NULL || strcmp(boot, rt->boot_id) != 0)
        return true;            /* from an earlier boot: nothing to kill */
    if (opid > 0 && opid <= INT_MAX
        && kb__proc_same((int)opid, ostart, &zombie) && !zombie)
        return false;           /* its server is alive: not ours */
    if (pid > 1 && pid <= INT_MAX && pgid == pid
        && kb__proc_same((int)pid, start, NULL)) {
        kb_log_warn("killing an instance left by an earlier server",
                    "{s:s, s:s, s:I}", "parent", r->parent, "instance",
                    r->name, "pgid", pgid);
        kill((pid_t)-pgid, SIGKILL);
    }
    return true;
}

static void
reap_page(int err, const kb_store_page *page, void *data)
{
    reap_ctx *ctx = data;

    free(ctx->token);
    ctx->token = NULL;
    ctx->err = err;
    if (err != 0)
        return;
    for (size_t i = 0; i < page->n; i++) {
        const kb_resource *r = &page->items[i];
        if (!reap_one(ctx->rt, r))
            continue;
        if (ctx->ndead == ctx->cap) {
            size_t cap = ctx->cap ? ctx->cap * 2 : 16;
            char **d = realloc(ctx->dead, cap * sizeof(char *));
            if (d == NULL)
                continue;
            ctx->dead = d;
            ctx->cap = cap;
        }
        size_t lp = strlen(r->parent), ln = strlen(r->name);
        char *e = malloc(lp + ln + 2);
        if (e == NULL)
            continue;
        memcpy(e, r->parent, lp + 1);
        memcpy(e + lp + 1, r->name, ln + 1);
        ctx->dead[ctx->ndead++] = e;
    }
    if (page->next_token != NULL && *page->next_token != '\0')
        ctx->token = strdup(page->next_token);
}

static void
reap_leftovers(kb_runtime *rt)
{
    reap_ctx ctx = { .rt = rt };

    for (int pages = 0; pages < 10000; pages++) {
        int rc = kb_store_list_sync(rt->store, "instances", NULL, 500,
                                    ctx.token, reap_page, &ctx);
        if (rc < 0 || ctx.err != 0) {
            kb_log_error("cannot list instance records", "{s:s}", "error",
                         kb_strerror(rc < 0 ? rc : ctx.err));
            break;
        }
        if (ctx.token == NULL)
            break;
    }
    free(ctx.token);
    /* The instances' cgroups (named by instance id) go with them; so do
     * empty leftovers no record names.  Boot time: blocking is fine. */
    const char **ids = calloc(ctx.ndead ? ctx.ndead : 1, sizeof(char *));
    for (size_t i = 0; ids != NULL && i < ctx.ndead; i++)
        ids[i] = ctx.dead[i] + strlen(ctx.dead[i]) + 1;
    if (ids != NULL && ctx.ndead > 0)
        (void)kb_limits_reap(ids, ctx.ndead, 0);
    (void)kb_limits_reap(NULL, 0, KB_LIM_REAP_EXCEPT | KB_LIM_REAP_EMPTY);
    free(ids);
    for (size_t i = 0; i < ctx.ndead; i++) {
        const char *parent = ctx.dead[i];
        const char *name = parent + strlen(parent) + 1;
        int rc = kb_store_delete_sync(rt->store, "instances", parent, name,
                                      0, NULL, NULL);
        if (rc < 0 && rc != KB_ENOTFOUND)
            kb_log_warn("instance record not deleted", "{s:s, s:s, s:s}",
                        "parent", parent, "instance", name,
                        "error", kb_strerror(rc));
        free(ctx.dead[i]);
    }
    free(ctx.dead);
}

/* ---- creation ---- */

static char **
make_base_env(void)
{
    char **env = calloc(NELEM(inherited_env) + 1, sizeof(char *));
    size_t k = 0;

    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < NELEM(inherited_env); i++) {
        const char *v = getenv(inherited_env[i]);
        if (v == NULL && strcmp(inherited_env[i], "PATH") == 0)
            v = DEFAULT_PATH;
        if (v == NULL || strlen(v) > KB_RT_MAX_STRING)
            continue;
        if ((env[k++] = strdupf("%s=%s", inherited_env[i], v)) == NULL) {
            free_strv(env);
            return NULL;
        }
    }
    return env;
}

static char *
own_exe(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    return strdup(buf);
}

void
kb__runtime_set_timing(kb_runtime *rt, uint64_t stop_grace_ms,
                       uint64_t start_timeout_ms, uint64_t shim_grace_ms)
{
    if (stop_grace_ms != 0)
        rt->stop_grace_ms = stop_grace_ms;
    if (start_timeout_ms != 0)
        rt->start_timeout_ms = start_timeout_ms;
    if (shim_grace_ms != 0)
        rt->shim_grace_ms = shim_grace_ms;
}

int
kb_runtime_create(uv_loop_t *loop, kb_store *store, const char *self_exe,
                  kb_runtime **out)
{
    kb_runtime *rt = calloc(1, sizeof(*rt));
    int rc = KB_ENOMEM;

    if (rt == NULL)
        return KB_ENOMEM;
    rt->loop = loop;
    rt->store = store;
    pthread_mutex_init(&rt->ep_lock, NULL);
    rt->exec = &kb__rt_local_executor;
    rt->stop_grace_ms = 0;              /* each revision's own */
    rt->log_bytes = 4u << 20;
    rt->scale_period_ms = 250;
    rt->start_timeout_ms = 10000;
    rt->backoff_min_ms = 100;
    rt->backoff_max_ms = 30000;
    rt->backoff_reset_ms = 10000;
    rt->shim_grace_ms = 3000;
    rt->self_pid = (int)getpid();
    (void)kb__proc_stat(rt->self_pid, NULL, NULL, &rt->self_start);
    kb__proc_boot_id(rt->boot_id, sizeof(rt->boot_id));

    rt->self_exe = self_exe != NULL ? strdup(self_exe) : own_exe();
    if (rt->self_exe == NULL)
        goto out_free_rt;
    if ((rt->base_env = make_base_env()) == NULL)
        goto out_free_exe;
    /* Both ends close-on-exec: only libuv's dup2 into a shim's fd 3 makes
     * the read end survive exec, and no child ever holds the write end. */
    if (pipe2(rt->watch_fd, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out_free_env;
    }
    if ((rc = kb__rt_scale_init(rt)) != 0)
        goto out_close_pipe;
    if (store != NULL)
        reap_leftovers(rt);
    uv_timer_init(loop, &rt->done_timer);
    rt->done_timer.data = rt;
    *out = rt;
    return 0;

out_close_pipe:
    close(rt->watch_fd[0]);
    close(rt->watch_fd[1]);

out_free_env:
    free_strv(rt->base_env);
out_free_exe:
    free(rt->self_exe);
out_free_rt:
    pthread_mutex_destroy(&rt->ep_lock);
    free(rt);
    return rc;
}

