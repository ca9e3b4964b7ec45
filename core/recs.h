/* recs.h -- a visitor's latest recommendations: the store of a config's
 * store step, with the catalog that the read API answers from.
 *
 * The worker opens it from the config (one store step per pipeline) before
 * the pipeline, whose store step writes to sl_recs_store(), and hands it to
 * the collector, whose GET /recommendations/<visitor id> calls
 * sl_recs_read(). The answer is
 *   {"visitorId":"...","updatedAt":ms,"products":[{"id":gid,"handle",
 *    "title","category","price","image"[,"url"]}, ...]}
 * in the stored order, with GIDs the catalog does not know left out.
 * Uses store.c, json.c (the catalog file), intern.c (GID lookup). */
#ifndef SL_RECS_H
#define SL_RECS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

struct event_base;
struct sl_recs;

/* The store step's config part (sl_step_conf.data), read by step_store.c. */
struct sl_recs_conf {
    char *key;               /* context path of the visitor id ("userId") */
    char *value;             /* context path of the list of product GIDs */
    int64_t max_keys;        /* in process: keys kept */
    int64_t ttl_ms;          /* idle time before a key expires */
    char *redis;             /* NULL: in process */
    char *catalog;           /* catalog file (examples/catalog.json) */
};

#define SL_RECS_DEFAULT_MAX_KEYS 100000  /* store.max_keys when absent. */
#define SL_RECS_DEFAULT_TTL_MS 1800000   /* store.ttl when absent: 30 minutes. */

/* The store and catalog of cf's store step. NULL with err[0] == '\0' when
 * cf has none; NULL with err naming the file on failure. */
struct sl_recs *sl_recs_open(struct event_base *base, const struct sl_config *cf,
                             char *err, size_t errlen);
void sl_recs_destroy(struct sl_recs *r);
struct sl_store *sl_recs_store(struct sl_recs *r);

/* True for a tracker duid: a UUID, 8-4-4-4-12 hex digits. */
bool sl_recs_valid_id(const char *id, size_t n);

/* An answer of the read API: 200 (body is the JSON), 400, 404 or 503
 * (body NULL). body is valid during the call only. */
typedef void sl_recs_answer_fn(void *arg, int code, const char *body, size_t len);
/* Answers for visitor id[0..n): at once (in process, bad id, Redis down)
 * or later (Redis). The id is compared in lower case. */
void sl_recs_read(struct sl_recs *r, const char *id, size_t n, sl_recs_answer_fn *cb,
                  void *arg);

void sl_recs_tick(struct sl_recs *r);
void sl_recs_metrics(const struct sl_recs *r, struct sl_buf *out);

#endif
