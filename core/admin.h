/* admin.h -- the admin HTTP listener: GET /metrics (Prometheus text),
 * /healthz and /health (the process is alive: always 200), /readyz (200 when
 * the job can do its work, else 503 with the reason) and /status (JSON from
 * the owner). Runs on the loop with httpd.c, bounded (GET/HEAD only, no
 * body, 8 KB of head, 64 connections). Uses metrics.c. */
#ifndef SL_ADMIN_H
#define SL_ADMIN_H

#include <stdbool.h>

#include "sl.h"

struct event_base;
struct sl_admin;

#define SL_ADMIN_MAX_HEAD 8192   /* request line and headers of a scrape */
#define SL_ADMIN_MAX_CONNS 64    /* a few scrapers and probes */
#define SL_ADMIN_METHODS 0x03    /* SL_HTTPD_GET | SL_HTTPD_HEAD */

/* Called before /metrics renders, so units can refresh their gauges and
 * append series of their own. */
typedef void sl_admin_metrics_fn(void *arg, struct sl_buf *out);

/* Fills why (a short sentence) and returns false when the job is not ready. */
typedef bool sl_admin_ready_fn(void *arg, char *why, size_t whylen);
/* Appends the JSON object /status answers. */
typedef void sl_admin_status_fn(void *arg, struct sl_buf *out);

/* Binds listen ("host:port", numeric host) on base; fn (may be NULL) runs
 * before each /metrics. NULL and err filled on failure. */
struct sl_admin *sl_admin_create(struct event_base *base, const char *listen,
                                 sl_admin_metrics_fn *fn, void *arg,
                                 char *err, size_t errlen);
void sl_admin_destroy(struct sl_admin *a);
/* Sets what /readyz and /status ask (NULL: always ready; /status 404). */
void sl_admin_set_probes(struct sl_admin *a, sl_admin_ready_fn *ready,
                         sl_admin_status_fn *status);

/* Splits "host:port" into host (caller's buffer) and port. */
int sl_admin_parse_listen(const char *listen, char *host, size_t hostlen, int *port);

#endif
