/* metrics.h -- process-wide counters and gauges in Prometheus text format.
 *
 * Series are named sluice_* and keyed by name plus a label string such as
 * `step="extract",reason="wrong_app_id"`. Single-threaded: call from the loop
 * only. Units add series as they go; the admin listener renders them. */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stdint.h>
#include "sl.h"

/* Adds n to the counter name{labels}; labels may be NULL. */
void sl_metrics_inc(const char *name, const char *labels, uint64_t n);
/* Sets the gauge name{labels} to v. */
void sl_metrics_set(const char *name, const char *labels, double v);
/* Current value of a series, 0 if it does not exist. */
double sl_metrics_get(const char *name, const char *labels);
/* Appends every series in Prometheus text format. */
void sl_metrics_render(struct sl_buf *out);
/* Frees every series (at exit, so leak checkers stay quiet). */
void sl_metrics_reset(void);

#endif
