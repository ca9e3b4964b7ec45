/* metrics.h -- process-wide counters, gauges and histograms in Prometheus
 * text format.
 *
 * Series are named sluice_* and keyed by name plus a label string such as
 * `step="extract",reason="wrong_app_id"`. Single-threaded: call from the loop
 * only. Units add series as they go; the admin listener renders them. */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stdint.h>
#include "sl.h"

struct sl_metrics_series;
struct sl_metrics_histogram;

/* Adds n to the counter name{labels}; labels may be NULL. O(length of name
 * and labels): hashes both. */
void sl_metrics_inc(const char *name, const char *labels, uint64_t n);
/* The counter name{labels}, created at 0 if new, for sl_metrics_add on hot
 * paths. Valid until sl_metrics_reset. */
struct sl_metrics_series *sl_metrics_counter(const char *name, const char *labels);
/* Adds n to a counter from sl_metrics_counter. O(1). */
void sl_metrics_add(struct sl_metrics_series *s, uint64_t n);
/* Sets the gauge name{labels} to v. */
void sl_metrics_set(const char *name, const char *labels, double v);
/* Current value of a series, 0 if it does not exist. */
double sl_metrics_get(const char *name, const char *labels);
/* The histogram name{labels} with the nbounds upper bounds (increasing; +Inf
 * is implied), created empty if new: rendered as name_bucket{...,le="b"}
 * (cumulative), name_sum and name_count. The bounds of the first call stay.
 * Valid until sl_metrics_reset. */
struct sl_metrics_histogram *sl_metrics_histogram(const char *name, const char *labels,
                                                  const double *bounds, size_t nbounds);
/* Counts one observation v. O(nbounds). */
void sl_metrics_observe(struct sl_metrics_histogram *h, double v);
/* Appends every series in Prometheus text format. */
void sl_metrics_render(struct sl_buf *out);
/* Frees every series (at exit, so leak checkers stay quiet). */
void sl_metrics_reset(void);

#endif
