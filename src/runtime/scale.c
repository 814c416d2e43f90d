/*
 * scale.c - the runtime's data path and autoscaler.  A request picks a
 * revision (its tag, or the traffic split), then the ready instance of
 * that revision with the fewest requests in flight and a free slot under
 * the revision's concurrency.  With no free slot it waits in the
 * revision's queue while the scale pass starts instances (a cold start
 * when there were none).  The scale pass also drains instances idle for
 * scaleDownDelay beyond what the revision needs, and stops drained ones
 * once their last request is over.
 *
 * Threads: acquire, release and wait_cancel run on gateway threads under
 * rt->ep_lock; everything else runs on the runtime's loop.  The data path
 * asks the loop for a pass through an async handle (kick).
 */
#include "runtime/runtime_int.h"

#include <signal.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "runtime/limits.h"

#define CRASHLOOP_AFTER 3       /* failed starts in a row: the revision failed */
#define EJECT_AFTER     5       /* failed calls in a row: out for a while */
#define EJECT_BASE_MS   10000   /* × times ejected, up to the cap */
#define EJECT_MAX_MS    300000

bool
kb__rt_serving(const rt_instance *in)
{
    return in->state == RT_RUNNING && in->ready;
}

static void
kick(kb_runtime *rt)
{
    if (!atomic_exchange(&rt->kicked, true))
        uv_async_send(&rt->kick);
}

/* ---- lookups under ep_lock ---- */

static rt_service *
svc_find_locked(kb_runtime *rt, const char *project, const char *name)
{
    for (rt_service *s = rt->services; s != NULL; s = s->next)
        if (!s->removed && strcmp(s->name, name) == 0
            && strcmp(s->project, project) == 0)
            return s;
    return NULL;
}

static rt_revision *
rev_by_name_locked(rt_service *svc, const char *name)
{
    for (rt_revision *r = svc->revisions; r != NULL; r = r->next)
        if (!r->retired && strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

static rt_revision *
rev_by_tag_locked(rt_service *svc, const char *tag)
{
    for (size_t i = 0; i < svc->ntags; i++)
        if (strcmp(svc->tags[i].tag, tag) == 0)
            return svc->tags[i].rev;
    return NULL;
}

static int
share(const rt_revision *rev)
{
    return rev->percent + (rev == rev->svc->latest_ready
                           ? rev->svc->latest_pct : 0);
}

bool
kb__rt_routable(const rt_revision *rev)
{
    return !rev->retired && (share(rev) > 0 || rev->tagged);
}

/* The split: shares add up to 100 over the routable revisions. */
static rt_revision *
rev_split_locked(rt_service *svc, uint32_t rnd)
{
    int at = (int)(rnd % 100u), sum = 0, p;
    rt_revision *last = NULL;

    for (rt_revision *r = svc->revisions; r != NULL; r = r->next) {
        if (r->retired || (p = share(r)) <= 0)
            continue;
        last = r;
        sum += p;
        if (at < sum)
            return r;
    }
    return last != NULL ? last : svc->latest;
}

void
kb__rt_latest_ready_update(rt_service *svc)
{
    rt_revision *best = NULL;

    for (rt_revision *r = svc->revisions; r != NULL; r = r->next)
        if (!r->retired && r->ever_ready && !r->failed)
            best = r;
    if (best == NULL)
        best = svc->latest;
    if (best == svc->latest_ready)
        return;
    pthread_mutex_lock(&svc->rt->ep_lock);
    svc->latest_ready = best;
    pthread_mutex_unlock(&svc->rt->ep_lock);
    if (best != NULL)
        kb_log_info("latest ready revision", "{s:s, s:s}", "service",
                    svc->label, "revision", best->name);
    /* Both the old and the new one rescale on the next pass. */
    kick(svc->rt);
}

/*
 * The ready instance with the fewest requests in flight and a free slot,
 * skipping instances ejected for failing (unless every candidate is);
 * ties go round the list, so a retry lands on another instance.  NULL:
 * none.
 */
static rt_instance *
instance_pick_locked(rt_revision *rev)
{
    rt_instance *best = NULL;
    bool best_ejected = true;
    int best_load = 0;
    size_t n = 0, skip;
    uint64_t now = kb_time_mono_ms();

    for (rt_instance *in = rev->instances; in != NULL; in = in->next)
        n++;
    skip = n > 0 ? atomic_fetch_add(&rev->rr, 1) % n : 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t k = 0;
        for (rt_instance *in = rev->instances; in != NULL; in = in->next, k++) {
            if ((pass == 0) != (k >= skip))
                continue;
            int load = atomic_load(&in->inflight);
            bool ejected = in->ejected_until_ms > now;
            if (!kb__rt_serving(in) || load >= rev->tpl.concurrency)
                continue;
            if (best == NULL || (best_ejected && !ejected)
                || (ejected == best_ejected && load < best_load)) {
                best = in;
                best_load = load;
                best_ejected = ejected;
            }
        }
    }
    return best;
}

/* Did this call show the instance failing (not the request)? */
static bool
call_failed(int err, int status)
{
    if (err == KB_ECANCELED || err == KB_ENOMEM)
        return false;
    return err != 0 || status == 502 || status == 503 || status == 504;
}

static void
wait_push_locked(rt_revision *rev, kb_rt_waiter *w)
{
    w->rev = rev;
    w->next = NULL;
    w->prev = rev->wait_tail;
    if (rev->wait_tail != NULL)
        rev->wait_tail->next = w;
    else
        rev->wait_head = w;
    rev->wait_tail = w;
    rev->nwaiting++;
}

static void
wait_unlink_locked(kb_rt_waiter *w)
{
    rt_revision *rev = w->rev;

    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        rev->wait_head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        rev->wait_tail = w->prev;
    rev->nwaiting--;
    w->rev = NULL;
    w->prev = w->next = NULL;
}

/* Take up to n waiters off rev's queue into a list (linked by next) to
 * notify once the lock is released. */
static kb_rt_waiter *
wait_pop_locked(rt_revision *rev, size_t n)
{
    kb_rt_waiter *head = NULL, **tail = &head;

    while (n-- > 0 && rev->wait_head != NULL) {
        kb_rt_waiter *w = rev->wait_head;
        wait_unlink_locked(w);
        *tail = w;
        tail = &w->next;
    }
    return head;
}

static void
notify_list(kb_rt_waiter *w)
{
    while (w != NULL) {
        kb_rt_waiter *next = w->next;
        w->next = NULL;
        w->notify(w);
        w = next;
    }
}

/* ---- the data path ---- */

static void
lease_fill(kb_rt_lease *lease, rt_instance *in)
{
    memcpy(lease->ep.host, "127.0.0.1", sizeof("127.0.0.1"));
    lease->ep.port = in->port;
    snprintf(lease->ep.revision, sizeof(lease->ep.revision), "%s",
             in->rev->name);
    lease->instance = in;
    lease->start_ns = kb_time_mono_ns();
}

int
kb_runtime_acquire(kb_runtime *rt, const char *project, const char *name,
                   const char *tag, const char *revision, uint32_t rnd,
                   kb_rt_waiter *w, kb_rt_lease *lease)
{
    rt_revision *rev = NULL;
    rt_instance *in;
    rt_service *svc;
    int rc;

    char want[sizeof(lease->ep.revision)];

    /* revision may point into *lease (a retry): copy it first */
    if (revision != NULL) {
        snprintf(want, sizeof(want), "%s", revision);
        revision = want;
    }
    memset(lease, 0, sizeof(*lease));
    pthread_mutex_lock(&rt->ep_lock);
    svc = svc_find_locked(rt, project, name);
    if (svc == NULL || rt->shutting_down) {
        rc = svc == NULL ? KB_ENOTFOUND : KB_EUNAVAIL;
        goto out_unlock;
    }
    if (revision != NULL)
        rev = rev_by_name_locked(svc, revision);
    if (rev == NULL)
        rev = tag != NULL ? rev_by_tag_locked(svc, tag)
                          : rev_split_locked(svc, rnd);
    if (rev == NULL || rev->retired) {
        rc = KB_ENOTFOUND;
        goto out_unlock;
    }
    snprintf(lease->ep.revision, sizeof(lease->ep.revision), "%s",
             rev->name);
    if ((in = instance_pick_locked(rev)) != NULL) {
        atomic_fetch_add(&in->inflight, 1);
        atomic_fetch_add(&rev->inflight, 1);
        lease_fill(lease, in);
        pthread_mutex_unlock(&rt->ep_lock);
        kb_gauge_add(rev->m.inflight, 1);
        return 0;
    }
    if (rev->failed || rev->tpl.max_instances == 0) {
        rc = KB_EUNAVAIL;       /* nothing will come: do not wait */
        goto out_unlock;
    }
    if (w != NULL) {
        if (rev->nwaiting >= KB_RT_MAX_WAITERS) {
            rc = KB_ETOOBIG;
            goto out_unlock;
        }
        wait_push_locked(rev, w);
    }
    rc = KB_EAGAIN;
    pthread_mutex_unlock(&rt->ep_lock);
    kick(rt);
    return rc;

out_unlock:
    pthread_mutex_unlock(&rt->ep_lock);
    return rc;
}

bool
kb_runtime_wait_cancel(kb_runtime *rt, kb_rt_waiter *w)
{
    bool queued;

    pthread_mutex_lock(&rt->ep_lock);
    queued = w->rev != NULL;
    if (queued)
        wait_unlink_locked(w);
    pthread_mutex_unlock(&rt->ep_lock);
    return queued;
}

void
kb_runtime_release(kb_runtime *rt, kb_rt_lease *lease, int err, int status)
{
    rt_instance *in = lease->instance;
    kb_rt_waiter *wake = NULL;
    bool need_pass = false;
    rt_revision *rev;

    if (in == NULL)
        return;
    rev = in->rev;
    uint64_t now = kb_time_mono_ns();
    int cls = err != 0 || status < 100 || status > 599 ? 0 : status / 100;
    kb_counter_add(rev->m.requests[cls], 1);
    kb_histogram_observe(rev->m.latency,
                         (double)(now - lease->start_ns) / 1e9);
    kb_gauge_add(rev->m.inflight, -1);

    uint64_t ejected_ms = 0;
    pthread_mutex_lock(&rt->ep_lock);
    if (!call_failed(err, status)) {
        in->failures = 0;
    } else if (++in->failures >= EJECT_AFTER) {
        in->failures = 0;
        in->ejections++;
        ejected_ms = (uint64_t)EJECT_BASE_MS * (uint64_t)in->ejections;
        if (ejected_ms > EJECT_MAX_MS)
            ejected_ms = EJECT_MAX_MS;
        in->ejected_until_ms = now / 1000000u + ejected_ms;
    }
    atomic_fetch_sub(&rev->inflight, 1);
    if (atomic_fetch_sub(&in->inflight, 1) == 1) {
        in->idle_since_ms = now / 1000000u;
        need_pass = in->state == RT_DRAINING || in->state == RT_STOPPING
                    || in->state == RT_STOPPED;
    }
    if (kb__rt_serving(in) && rev->nwaiting > 0)
        wake = wait_pop_locked(rev, 1);
    pthread_mutex_unlock(&rt->ep_lock);
    if (ejected_ms > 0)
        kb_log_warn("backend instance ejected",
                    "{s:s, s:i, s:I}", "revision", lease->ep.revision,
                    "port", lease->ep.port, "forMs", (json_int_t)ejected_ms);
    memset(lease, 0, sizeof(*lease));
    notify_list(wake);
    if (need_pass)
        kick(rt);
}

bool
kb_runtime_at_capacity(kb_runtime *rt, const char *project, const char *name,
                       const char *revision)
{
    bool full = false;
    rt_service *svc;
    rt_revision *rev;

    pthread_mutex_lock(&rt->ep_lock);
    svc = svc_find_locked(rt, project, name);
    rev = svc != NULL && revision != NULL ? rev_by_name_locked(svc, revision)
                                          : NULL;
    if (rev != NULL) {
        int n = 0;
        for (rt_instance *in = rev->instances; in != NULL; in = in->next)
            n += in->state != RT_DRAINING && in->state != RT_STOPPING
                 && in->state != RT_STOPPED;
        full = n >= rev->tpl.max_instances;
    }
    pthread_mutex_unlock(&rt->ep_lock);
    return full;
}

/* ---- health: what the executor reports ---- */

json_t *
kb__rt_revision_condition(const rt_revision *rev)
{
    char ts[KB_RFC3339_LEN];
    const char *status = rev->failed ? "False"
                         : rev->ever_ready ? "True" : "Unknown";
    json_t *c;

    kb_time_rfc3339(ts, sizeof(ts), rev->transition_ns, 3);
    c = json_pack("{s:s, s:s, s:s}", "type", "Ready", "status", status,
                  "lastTransitionTime", ts);
    if (c != NULL && !(rev->ever_ready && !rev->failed)) {
        json_object_set_new(c, "reason", json_string(rev->reason));
        if (rev->message[0] != '\0')
            json_object_set_new(c, "message", json_string(rev->message));
    }
    return c;
}

static void
rev_transition(rt_revision *rev, const char *reason, const char *msg)
{
    snprintf(rev->reason, sizeof(rev->reason), "%s", reason);
    snprintf(rev->message, sizeof(rev->message), "%s", msg);
    rev->transition_ns = kb_time_unix_ns();
}

void
kb__rt_instance_changed(rt_instance *in)
{
    rt_revision *rev = in->rev;
    kb_runtime *rt = rev->svc->rt;
    kb_rt_waiter *wake = NULL;
    int ready = 0;

    for (rt_instance *i = rev->instances; i != NULL; i = i->next)
        ready += kb__rt_serving(i);
    kb_gauge_set(rev->m.instances, ready);
    if (kb__rt_serving(in)) {
        if (!rev->ever_ready || rev->failed) {
            pthread_mutex_lock(&rt->ep_lock);
            rev->ever_ready = true;
            rev->failed = false;
            pthread_mutex_unlock(&rt->ep_lock);
            rev_transition(rev, "Ready", "");
            kb_log_info("revision ready", "{s:s, s:s}", "service",
                        rev->svc->label, "revision", rev->name);
            kb__rt_latest_ready_update(rev->svc);
        }
        pthread_mutex_lock(&rt->ep_lock);
        wake = wait_pop_locked(rev, (size_t)rev->tpl.concurrency);
        pthread_mutex_unlock(&rt->ep_lock);
        notify_list(wake);
    } else if (ready == 0 && !rev->failed
               && in->fails_since_ready >= CRASHLOOP_AFTER) {
        char msg[256];
        json_t *ex = kb__rt_exit_json(in);
        char *exs = ex != NULL ? json_dumps(ex, JSON_COMPACT) : NULL;
        snprintf(msg, sizeof(msg), "%s %d times in a row (last exit %s)%s%s",
                 in->startup_failed ? "the startup probe failed"
                                    : "the instance exited",
                 in->fails_since_ready, exs ? exs : "unknown",
                 in->last_line[0] ? "; last output: " : "", in->last_line);
        free(exs);
        json_decref(ex);
        pthread_mutex_lock(&rt->ep_lock);
        rev->failed = true;
        pthread_mutex_unlock(&rt->ep_lock);
        rev_transition(rev, in->startup_failed ? "StartupProbeFailed"
                                               : "CrashLoopBackOff", msg);
        kb_log_warn("revision failed", "{s:s, s:s, s:s, s:s}", "service",
                    rev->svc->label, "revision", rev->name,
                    "reason", rev->reason, "message", msg);
        kb__rt_wake_all(rev);
    }
    kb__rt_scale_revision(rev);
}

void
kb__rt_wake_all(rt_revision *rev)
{
    kb_runtime *rt = rev->svc->rt;
    kb_rt_waiter *wake;

    pthread_mutex_lock(&rt->ep_lock);
    wake = wait_pop_locked(rev, SIZE_MAX);
    pthread_mutex_unlock(&rt->ep_lock);
    notify_list(wake);
}

/* ---- scaling ---- */

static bool
active(const rt_instance *in)
{
    return in->state == RT_STARTING || in->state == RT_RUNNING
           || in->state == RT_BACKOFF;
}

/* How many instances rev should have now. */
static int
rev_desired(const rt_revision *rev)
{
    const rt_service *svc = rev->svc;
    const rt_template *t = &rev->tpl;
    bool routable = kb__rt_routable(rev);
    int demand, need, d;

    if (rev->retired || svc->removed || svc->rt->shutting_down)
        return 0;
    demand = atomic_load(&rev->inflight) + (int)rev->nwaiting;
    need = (demand + t->concurrency - 1) / t->concurrency;
    d = routable ? t->min_instances : 0;
    if (need > d)
        d = need;
    if (rev == svc->latest && !rev->ever_ready && !rev->failed && d < 1)
        d = 1;                  /* prove that a new revision starts */
    if (rev->failed && routable && d < 1)
        d = 1;                  /* keep trying, with backoff */
    if (rev->failed && !routable)
        d = 0;
    if (d > t->max_instances)
        d = t->max_instances;
    return d;
}

/* Put an idle ready instance out of rotation (under ep_lock, so no
 * acquire can pick it meanwhile).  false if it got busy. */
static bool
drain(rt_instance *in, bool only_idle)
{
    kb_runtime *rt = in->rev->svc->rt;
    bool ok;

    pthread_mutex_lock(&rt->ep_lock);
    ok = !only_idle || atomic_load(&in->inflight) == 0;
    pthread_mutex_unlock(&rt->ep_lock);
    if (!ok)
        return false;
    in->drain_ms = kb_time_mono_ms();
    kb__rt_set_state(in, RT_DRAINING);
    kb_log_info("instance draining", "{s:s, s:s, s:s, s:i}", "service",
                in->rev->svc->label, "revision", in->rev->name, "instance",
                in->id, "inflight", atomic_load(&in->inflight));
    return true;
}

void
kb__rt_scale_revision(rt_revision *rev)
{
    kb_runtime *rt = rev->svc->rt;
    const rt_executor *ex = rt->exec;
    uint64_t now = kb_time_mono_ms();
    bool stopping = rev->retired || rev->svc->removed || rt->shutting_down;
    int have = 0, ready = 0, desired = rev_desired(rev);
    rt_instance *in, *next;

    for (in = rev->instances; in != NULL; in = in->next) {
        have += active(in);
        ready += kb__rt_serving(in);
    }
    if (desired != rev->desired)
        kb_log_debug("revision scaled", "{s:s, s:s, s:i, s:i}", "service",
                     rev->svc->label, "revision", rev->name, "from",
                     rev->desired, "to", desired);
    rev->desired = desired;

    if (have < desired && have == 0 && rev->nwaiting > 0) {
        rev->cold_starts++;
        kb_counter_add(rev->m.cold_starts, 1);
    }
    for (; have < desired; have++) {
        if (ex->add(rev) < 0) {
            kb_log_error("cannot add an instance", "{s:s, s:s}", "revision",
                         rev->name, "error", "out of memory");
            break;
        }
    }

    /* Too many: instances not serving go first, then idle ones.  While
     * the revision takes traffic, either kind goes only once idle (or
     * started) scaleDownDelay ago: demand dips for a moment when woken
     * waiters are on their way back to acquire, and an instance still
     * starting is the one they will need. */
    bool at_once = stopping || !kb__rt_routable(rev);
    for (int pass = 0; pass < 2 && have > desired; pass++) {
        for (in = rev->instances; in != NULL && have > desired; in = next) {
            next = in->next;
            if (!active(in))
                continue;
            bool idle = at_once || now - in->idle_since_ms
                                   >= rev->tpl.scale_down_delay_ms;
            if (pass == 0 && !kb__rt_serving(in) && idle) {
                ex->stop(in);
                have--;
            } else if (pass == 1 && kb__rt_serving(in) && idle) {
                if (rt->shutting_down) {
                    ex->stop(in);
                    have--;
                } else if (drain(in, !stopping)) {
                    have--;
                }
            }
        }
    }

    /* Drained ones stop when their last request is over (or too late). */
    for (in = rev->instances; in != NULL; in = next) {
        next = in->next;
        if (in->state == RT_DRAINING
            && (atomic_load(&in->inflight) == 0 || rt->shutting_down
                || now - in->drain_ms >= rev->tpl.timeout_ms)) {
            if (atomic_load(&in->inflight) > 0)
                kb_log_warn("drained instance still busy, stopping it",
                            "{s:s, s:s, s:i}", "revision", rev->name,
                            "instance", in->id, "inflight",
                            atomic_load(&in->inflight));
            ex->stop(in);
        }
    }
    (void)ready;
}

/*
 * Every revision of every service (removed ones included: they drain).
 * Last, stopped instances that no lease holds any more are freed; that
 * may free their revision and service, so the walk keeps its next
 * pointers and touches nothing of an instance after freeing it.
 */
static void
scale_all(kb_runtime *rt)
{
    rt_service *s, *snext;
    rt_revision *r, *rnext;
    rt_instance *in, *inext;

    for (s = rt->services; s != NULL; s = s->next)
        for (r = s->revisions; r != NULL; r = r->next)
            kb__rt_scale_revision(r);
    for (s = rt->services; s != NULL; s = snext) {
        snext = s->next;
        for (r = s->revisions; r != NULL; r = rnext) {
            rnext = r->next;
            for (in = r->instances; in != NULL; in = inext) {
                inext = in->next;
                if (in->state == RT_STOPPED)
                    kb__rt_instance_try_free(in);
            }
        }
    }
}

static void
on_kick(uv_async_t *a)
{
    kb_runtime *rt = a->data;

    atomic_store(&rt->kicked, false);
    scale_all(rt);
}

/* Cgroups of shims that were killed, still busy when they exited. */
static void
cgroups_retry(kb_runtime *rt)
{
    size_t k = 0;

    for (size_t i = 0; i < rt->ncgroups_left; i++) {
        (void)kb_limits_cgroup_signal(rt->cgroups_left[i], SIGKILL);
        if (kb_limits_cgroup_remove(rt->cgroups_left[i]) == KB_EBUSY)
            memmove(rt->cgroups_left[k++], rt->cgroups_left[i],
                    sizeof(rt->cgroups_left[i]));
    }
    rt->ncgroups_left = k;
}

static void
on_tick(uv_timer_t *t)
{
    kb_runtime *rt = t->data;

    scale_all(rt);
    if (rt->ncgroups_left > 0)
        cgroups_retry(rt);
}

int
kb__rt_scale_init(kb_runtime *rt)
{
    int rc = uv_async_init(rt->loop, &rt->kick, on_kick);

    if (rc < 0)
        return rc;
    rt->kick.data = rt;
    uv_timer_init(rt->loop, &rt->scale_timer);
    rt->scale_timer.data = rt;
    uv_timer_start(&rt->scale_timer, on_tick, rt->scale_period_ms,
                   rt->scale_period_ms);
    return 0;
}

void
kb__rt_scale_close(kb_runtime *rt)
{
    uv_close((uv_handle_t *)&rt->kick, NULL);
    uv_close((uv_handle_t *)&rt->scale_timer, NULL);
}
