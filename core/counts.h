/* counts.h -- `sluice counts`: each step's counts of a running instance.
 *
 * Reads the admin listener's /metrics over HTTP (libcurl) and prints one row
 * per step, in pipeline order: records in, out, filtered (with one line per
 * reason), errors and dead letters; with watch, again every interval until
 * interrupted. The table is built from the text alone, so it is the same
 * numbers a Prometheus scrape sees. Uses libcurl and sl.h. */
#ifndef SL_COUNTS_H
#define SL_COUNTS_H

#include <stdbool.h>
#include <stdio.h>

#include "sl.h"

#define SL_COUNTS_MAX_STEPS 64        /* Rows of a table; more steps are left out. */
#define SL_COUNTS_MAX_REASONS 32      /* Filter reasons shown per step. */
#define SL_COUNTS_TIMEOUT_MS 5000     /* Bound on one scrape. */

struct sl_counts_opts {
    const char *admin;       /* "host:port" or an http:// URL of the admin listener */
    bool watch;              /* refresh until interrupted */
    int interval_ms;         /* between refreshes */
};

/* Formats the table of a /metrics text into out. SL_ERR with err when the
 * text has no step counts at all (not a sluice admin listener, or no steps). */
int sl_counts_format(const char *metrics, struct sl_buf *out, char *err, size_t errlen);

/* Runs the command; returns the exit status (1 when the listener cannot be
 * read). */
int sl_counts_run(const struct sl_counts_opts *o);

#endif
