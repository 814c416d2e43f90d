/*
 * metrics.c - process-wide Prometheus metrics registry (see metrics.h).
 *
 * Registration takes a mutex; updates are lock-free atomics.  Gauges and
 * histogram sums hold doubles in atomic 64-bit words updated by CAS.
 */
#include "core/metrics.h"
#include "core/err.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef enum { M_COUNTER, M_GAUGE, M_HISTOGRAM } metric_type;

typedef struct metric {
    struct metric *next;           /* next series in the family */
    char *labels;
    size_t refs;                   /* gets not yet dropped (reg_lock) */
    _Atomic uint64_t value;        /* counter value, or gauge double bits */
    /* histograms */
    size_t nbuckets;
    double *bounds;
    _Atomic uint64_t *counts;      /* nbuckets + 1 (the +Inf bucket) */
    _Atomic uint64_t sum;          /* double bits */
    _Atomic uint64_t count;
} metric;

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    metric_type type;
    metric *series;
} family;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static family *families;
static family **families_tail = &families;

const double kb_metrics_latency_buckets[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
};
const size_t kb_metrics_latency_nbuckets =
    sizeof(kb_metrics_latency_buckets) / sizeof(kb_metrics_latency_buckets[0]);

static uint64_t
dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double
bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static void
atomic_add_double(_Atomic uint64_t *w, double delta)
{
    uint64_t old = atomic_load(w);

    while (!atomic_compare_exchange_weak(w, &old, dbits(bitsd(old) + delta)))
        ;
}

static metric *
lookup(const char *name, const char *help, const char *labels,
       metric_type type, const double *buckets, size_t nbuckets)
{
    family *f;
    metric *m = NULL;

    if (labels == NULL)
        labels = "";
    pthread_mutex_lock(&reg_lock);
    for (f = families; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (f != NULL && f->type != type)
        goto out;
    if (f == NULL) {
        f = calloc(1, sizeof(*f));
        if (f == NULL)
            goto out;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        if (f->name == NULL || f->help == NULL) {
            free(f->name);
            free(f->help);
            free(f);
            goto out;
        }
        f->type = type;
        *families_tail = f;
        families_tail = &f->next;
    }
    for (m = f->series; m != NULL; m = m->next)
        if (strcmp(m->labels, labels) == 0) {
            m->refs++;
            goto out;
        }

    m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto out;
    m->refs = 1;
    m->labels = strdup(labels);
    if (m->labels == NULL)
        goto out_free_m;
    if (type == M_HISTOGRAM) {
        m->nbuckets = nbuckets;
        m->bounds = malloc(nbuckets * sizeof(double));
        m->counts = calloc(nbuckets + 1, sizeof(*m->counts));
        if (m->bounds == NULL || m->counts == NULL)
            goto out_free_hist;
        memcpy(m->bounds, buckets, nbuckets * sizeof(double));
    }
    /* Append so the exposition keeps registration order. */
    metric **tail = &f->series;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = m;
    goto out;

out_free_hist:
    free(m->bounds);
    free((void *)m->counts);
    free(m->labels);
out_free_m:
    free(m);
    m = NULL;
out:
    pthread_mutex_unlock(&reg_lock);
    return m;
}

kb_counter *
kb_counter_get(const char *name, const char *help, const char *labels)
{
    return (kb_counter *)lookup(name, help, labels, M_COUNTER, NULL, 0);
}

kb_gauge *
kb_gauge_get(const char *name, const char *help, const char *labels)
{
    return (kb_gauge *)lookup(name, help, labels, M_GAUGE, NULL, 0);
}

kb_histogram *
kb_histogram_get(const char *name, const char *help, const char *labels,
                 const double *buckets, size_t nbuckets)
{
    if (buckets == NULL) {
        buckets = kb_metrics_latency_buckets;
        nbuckets = kb_metrics_latency_nbuckets;
    }
    return (kb_histogram *)lookup(name, help, labels, M_HISTOGRAM, buckets,
                                  nbuckets);
}

void
kb_counter_add(kb_counter *c, uint64_t n)
{
    if (c != NULL)
        atomic_fetch_add(&((metric *)c)->value, n);
}

uint64_t
kb_counter_value(const kb_counter *c)
{
    return c ? atomic_load(&((metric *)c)->value) : 0;
}

void
kb_gauge_set(kb_gauge *g, double v)
{
    if (g != NULL)
        atomic_store(&((metric *)g)->value, dbits(v));
}

void
kb_gauge_add(kb_gauge *g, double delta)
{
    if (g != NULL)
        atomic_add_double(&((metric *)g)->value, delta);
}

double
kb_gauge_value(const kb_gauge *g)
{
    return g ? bitsd(atomic_load(&((metric *)g)->value)) : 0;
}

void
kb_histogram_observe(kb_histogram *h, double v)
{
    metric *m = (metric *)h;
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < m->nbuckets; i++)
        if (v <= m->bounds[i])
            break;
    atomic_fetch_add(&m->counts[i], 1);
    atomic_fetch_add(&m->count, 1);
    atomic_add_double(&m->sum, v);
}

uint64_t
kb_histogram_count(const kb_histogram *h)
{
    return h ? atomic_load(&((metric *)h)->count) : 0;
}

int
kb_metrics_label_escape(kb_buf *out, const char *value)
{
    int rc = 0;

    for (const char *p = value; *p != '\0' && rc == 0; p++) {
        switch (*p) {
        case '\\': rc = kb_buf_appends(out, "\\\\"); break;
        case '"':  rc = kb_buf_appends(out, "\\\""); break;
        case '\n': rc = kb_buf_appends(out, "\\n"); break;
        default:   rc = kb_buf_appendc(out, *p); break;
        }
    }
    return rc;
}

/* Series name with labels, plus an extra label (for le=) when given. */
static int
series(kb_buf *out, const char *name, const char *suffix, const char *labels,
       const char *extra)
{
    bool any = labels[0] != '\0' || extra != NULL;

    return kb_buf_appendf(out, "%s%s%s%s%s%s%s ", name, suffix,
                          any ? "{" : "", labels,
                          labels[0] != '\0' && extra ? "," : "",
                          extra ? extra : "", any ? "}" : "");
}

static int
render_process(kb_buf *out)
{
    static const char *const stat_fmt =
        "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu "
        "%*d %*d %*d %*d %*d %*d %llu %lu %ld";
    unsigned long utime = 0, stime = 0, vsize = 0;
    unsigned long long starttime = 0;
    long rss = 0;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    double boot = 0;
    int fds = 0, rc = 0;
    FILE *f;
    char line[256];

    f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        if (fscanf(f, stat_fmt, &utime, &stime, &starttime, &vsize, &rss) != 5)
            utime = stime = vsize = 0, rss = 0, starttime = 0;
        fclose(f);
    }
    f = fopen("/proc/stat", "r");
    if (f != NULL) {
        while (fgets(line, sizeof(line), f) != NULL)
            if (sscanf(line, "btime %lf", &boot) == 1)
                break;
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--;                      /* the directory's own descriptor */
    }
    rc |= kb_buf_appendf(out,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total %.2f\n"
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes %ld\n"
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\n"
        "process_virtual_memory_bytes %lu\n"
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\n"
        "process_open_fds %d\n"
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
        "# TYPE process_start_time_seconds gauge\n"
        "process_start_time_seconds %.2f\n",
        tick > 0 ? (double)(utime + stime) / (double)tick : 0.0,
        rss * page, vsize, fds,
        tick > 0 ? boot + (double)starttime / (double)tick : 0.0);
    return rc;
}

int
kb_metrics_render(kb_buf *out)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    char num[64];
    int rc = 0;

    rc |= render_process(out);
    pthread_mutex_lock(&reg_lock);
    for (family *f = families; f != NULL && rc == 0; f = f->next) {
        rc |= kb_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name,
                             f->help, f->name, type_names[f->type]);
        for (metric *m = f->series; m != NULL && rc == 0; m = m->next) {
            if (f->type == M_COUNTER) {
                rc |= series(out, f->name, "", m->labels, NULL);
                rc |= kb_buf_appendf(out, "%llu\n",
                    (unsigned long long)atomic_load(&m->value));
                continue;
            }
            if (f->type == M_GAUGE) {
                rc |= series(out, f->name, "", m->labels, NULL);
                rc |= kb_buf_appendf(out, "%.17g\n",
                                     bitsd(atomic_load(&m->value)));
                continue;
            }
            uint64_t cum = 0;
            for (size_t i = 0; i <= m->nbuckets; i++) {
                cum += atomic_load(&m->counts[i]);
                if (i < m->nbuckets)
                    snprintf(num, sizeof(num), "le=\"%g\"", m->bounds[i]);
                else
                    snprintf(num, sizeof(num), "le=\"+Inf\"");
                rc |= series(out, f->name, "_bucket", m->labels, num);
                rc |= kb_buf_appendf(out, "%llu\n", (unsigned long long)cum);
            }
            rc |= series(out, f->name, "_sum", m->labels, NULL);
            rc |= kb_buf_appendf(out, "%.17g\n", bitsd(atomic_load(&m->sum)));
            rc |= series(out, f->name, "_count", m->labels, NULL);
            rc |= kb_buf_appendf(out, "%llu\n",
                                 (unsigned long long)atomic_load(&m->count));
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return rc == 0 ? 0 : KB_ETOOBIG;
}

static void
metric_free(metric *m)
{
    free(m->labels);
    free(m->bounds);
    free((void *)m->counts);
    free(m);
}

void
kb_metrics_drop(const void *series)
{
    metric *target = (metric *)series;

    if (target == NULL)
        return;
    pthread_mutex_lock(&reg_lock);
    for (family *f = families; f != NULL; f = f->next) {
        for (metric **pp = &f->series; *pp != NULL; pp = &(*pp)->next) {
            if (*pp != target)
                continue;
            if (--target->refs == 0) {
                *pp = target->next;
                metric_free(target);
            }
            pthread_mutex_unlock(&reg_lock);
            return;
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

void
kb_metrics_reset(void)
{
    family *f, *fn;
    metric *m, *mn;

    pthread_mutex_lock(&reg_lock);
    for (f = families; f != NULL; f = fn) {
        fn = f->next;
        for (m = f->series; m != NULL; m = mn) {
            mn = m->next;
            metric_free(m);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    families = NULL;
    families_tail = &families;
    pthread_mutex_unlock(&reg_lock);
}
