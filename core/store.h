/* store.h -- the latest value per key, for the store sink and its read API.
 *
 * A store keeps, per key (a visitor id), one value (the JSON the sink
 * writes), the wall-clock time it was written and the ordering stamp of the
 * input record it came from. A write whose stamp is older than the stored
 * one is refused (stale), so a result that finishes late (an HTTP step
 * answering out of order) or a record replayed after a restart never
 * replaces a newer one.
 *
 * In process (the default): a hash table of keys and a list in update order,
 * so every operation is O(1) on average; at most max_keys keys (the least
 * recently updated is evicted, counted) and a key not updated for ttl
 * expires. An evicted or expired key forgets its stamp.
 *
 * Redis (conf->redis_url set): hiredis on the caller's libevent loop, never
 * blocking. Each write is one EVAL of a script that compares stamps and
 * SETs the entry with PX ttl, so the guard holds for every worker sharing
 * the Redis. While Redis is unreachable, writes wait and are retried with
 * backoff (their callback comes once they are written or found stale),
 * reads answer SL_STORE_UNAVAILABLE, and the connection is retried.
 * Uses hiredis, libevent and sl.h. */
#ifndef SL_STORE_H
#define SL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl.h"

struct event_base;
struct sl_store;
struct sl_store_op;

#define SL_STORE_REDIS_PREFIX "sluice:recs:" /* Redis key of an entry: prefix + key. */
#define SL_STORE_MAX_KEY 256                 /* Longest key accepted, bytes. */
#define SL_STORE_RETRY_MIN_MS 100            /* First retry of a write after a Redis failure. */
#define SL_STORE_RETRY_MAX_MS 5000           /* Retries and reconnects back off up to this. */

/* Where a value comes from, to order writes of one key. Within one source
 * (an input topic and partition) the offset orders; across sources (a key
 * that moved partition) the record time does, then the offset. Equal stamps
 * replace (the same record written again). */
struct sl_store_stamp {
    int64_t time_ms;         /* the input record's Kafka timestamp (0 unknown) */
    uint32_t source;         /* hash of its topic and partition */
    int64_t offset;          /* its offset */
};

struct sl_store_conf {
    size_t max_keys;         /* in process: keys kept (>= 1) */
    int64_t ttl_ms;          /* an entry not updated for this long expires (>= 1) */
    const char *redis_url;   /* NULL: in process; "redis://[:password@]host[:port][/db]" */
};

/* Outcomes of a write or a read. */
enum sl_store_result {
    SL_STORE_WRITTEN,        /* the value is stored */
    SL_STORE_STALE,          /* a newer value was there: nothing changed */
    SL_STORE_FOUND,          /* read: value, updated_at set */
    SL_STORE_NOT_FOUND,      /* read: no such key (or expired) */
    SL_STORE_UNAVAILABLE,    /* read: Redis cannot be reached */
    SL_STORE_PENDING,        /* the callback comes later */
};

/* A write finished: WRITTEN or STALE. */
typedef void sl_store_put_fn(void *arg, enum sl_store_result r);
/* A read finished: FOUND (value[0..len), updated_at ms), NOT_FOUND or
 * UNAVAILABLE. value is valid during the call only. */
typedef void sl_store_get_fn(void *arg, enum sl_store_result r, const char *value,
                             size_t len, int64_t updated_at);

/* An in-process store, or one on Redis on base (connecting starts now;
 * Redis being down is not an error here). NULL with err on a bad conf. */
struct sl_store *sl_store_create(struct event_base *base, const struct sl_store_conf *conf,
                                 char *err, size_t errlen);
/* SL_OK when url is a Redis URL the store takes, else SL_ERR and err (which
 * never echoes the URL: it may hold a password). */
int sl_store_check_url(const char *url, char *err, size_t errlen);
/* Frees the store. Writes still waiting get no callback (cancel them
 * first, or let them go with their owner). NULL does nothing. */
void sl_store_destroy(struct sl_store *s);

/* Writes value[0..len) under key if stamp is not older than the stored
 * one. In process: returns WRITTEN or STALE at once, *op NULL. Redis:
 * returns PENDING with *op set; cb(arg, result) comes exactly once, later,
 * unless sl_store_cancel(op) is called first. */
enum sl_store_result sl_store_put(struct sl_store *s, const char *key, size_t klen,
                                  const struct sl_store_stamp *stamp, const char *value,
                                  size_t len, sl_store_put_fn *cb, void *arg,
                                  struct sl_store_op **op);
/* The write's callback will never come. */
void sl_store_cancel(struct sl_store_op *op);

/* Reads key: cb comes at once (in process, Redis not connected) or later. */
void sl_store_get(struct sl_store *s, const char *key, size_t klen, sl_store_get_fn *cb,
                  void *arg);

/* Housekeeping (in process: expiry of idle keys). */
void sl_store_tick(struct sl_store *s);

bool sl_store_is_redis(const struct sl_store *s);
/* Appends Prometheus text: sluice_store_writes_total{result}, keys,
 * evictions, expirations, sluice_store_redis_up, pending writes. */
void sl_store_metrics(const struct sl_store *s, struct sl_buf *out);

#endif
