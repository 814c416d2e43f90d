/*
 * metrics.h - process-wide Prometheus metrics registry.
 *
 * A metric is a (name, labels) pair inside a family that shares name, help
 * and type.  Getting a metric registers it on first use and returns the same
 * object afterwards, so callers fetch their metrics once at setup and then
 * update them with atomic operations from any thread.  Metrics are never
 * freed before kb_metrics_reset() (tests) or process exit.
 *
 * `labels` is the Prometheus label text without braces, e.g.
 * "listener=\"api\",code=\"2xx\"", or NULL/"" for none.  Callers building it
 * from outside input must escape values with kb_metrics_label_escape().
 */
#ifndef KB_METRICS_H
#define KB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct kb_counter   kb_counter;
typedef struct kb_gauge     kb_gauge;
typedef struct kb_histogram kb_histogram;

/* Default latency buckets in seconds (1 ms … 30 s). */
extern const double kb_metrics_latency_buckets[];
extern const size_t kb_metrics_latency_nbuckets;

/* NULL only when out of memory or when `name` is already a family of
 * another type. */
kb_counter   *kb_counter_get(const char *name, const char *help,
                             const char *labels);
kb_gauge     *kb_gauge_get(const char *name, const char *help,
                           const char *labels);
kb_histogram *kb_histogram_get(const char *name, const char *help,
                               const char *labels, const double *buckets,
                               size_t nbuckets);

void     kb_counter_add(kb_counter *c, uint64_t n);
uint64_t kb_counter_value(const kb_counter *c);
void     kb_gauge_set(kb_gauge *g, double v);
void     kb_gauge_add(kb_gauge *g, double delta);
double   kb_gauge_value(const kb_gauge *g);
void     kb_histogram_observe(kb_histogram *h, double v);
uint64_t kb_histogram_count(const kb_histogram *h);

/* Append the exposition text (format 0.0.4) of every registered metric plus
 * the standard process_* metrics to `out`.  0, KB_ETOOBIG or KB_ENOMEM. */
int  kb_metrics_render(kb_buf *out);
/* Give back one get of a series (a counter, gauge or histogram): a series
 * every getter has given back leaves the exposition.  For series of things
 * that go away (a deleted revision).  NULL is ignored. */
void kb_metrics_drop(const void *series);
/* Escape a label value (\\, \", \n) into out.  0 or buffer errors. */
int  kb_metrics_label_escape(kb_buf *out, const char *value);
/* Drop every metric (unit tests only: pointers held elsewhere dangle). */
void kb_metrics_reset(void);

#endif
