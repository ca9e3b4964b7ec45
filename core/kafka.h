/* kafka.h -- Kafka producer and consumer on the libevent loop.
 *
 * Wraps librdkafka. Both handles hand their queues to the loop with
 * rd_kafka_queue_io_event_enable(): the loop wakes when a queue goes from
 * empty to non-empty and drains it; nothing polls or sleeps. Uses sl.h. */
#ifndef SL_KAFKA_H
#define SL_KAFKA_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct event_base;
struct sl_kafka_producer;
struct sl_kafka_consumer;

/* One librdkafka property, e.g. {"acks", "all"}. */
struct sl_kafka_prop {
    const char *name;
    const char *value;
};

struct sl_kafka_conf {
    const char *brokers;              /* bootstrap list "host:port,..." */
    const struct sl_kafka_prop *props; /* extra librdkafka properties */
    size_t nprops;
};

/* ==================== Producer ==================== */

/* Called once per produced record when the broker acknowledged it (err ==
 * NULL; partition and offset say where it landed) or it failed for good (err
 * names the reason; offset -1). Runs on the loop. */
typedef void sl_kafka_delivery_fn(void *opaque, const char *err,
                                  int32_t partition, int64_t offset);

/* Creates a producer (acks=all, idempotent) whose delivery reports are served
 * on base. Returns NULL and fills err on failure. */
struct sl_kafka_producer *sl_kafka_producer_create(struct event_base *base,
        const struct sl_kafka_conf *conf, char *err, size_t errlen);
void sl_kafka_producer_destroy(struct sl_kafka_producer *p);

/* Queues one record. partition -1 lets the partitioner choose from the key
 * (murmur2, as the Java client, so a key always lands in one partition).
 * ts_ms 0 means now. key/value are copied. On SL_OK, cb is called exactly once
 * later on the loop; on SL_ERR (queue full, unknown topic...) cb is never
 * called and err says why. */
int sl_kafka_produce(struct sl_kafka_producer *p, const char *topic,
                     int32_t partition, const void *key, size_t keylen,
                     const void *value, size_t vallen, int64_t ts_ms,
                     sl_kafka_delivery_fn *cb, void *opaque,
                     char *err, size_t errlen);

/* Records queued and not yet reported. */
size_t sl_kafka_producer_inflight(const struct sl_kafka_producer *p);

/* False while no broker is reachable (librdkafka reported all brokers down
 * and none has come back since). */
bool sl_kafka_producer_up(const struct sl_kafka_producer *p);

/* Waits up to timeout_ms for every queued record to be reported, serving
 * delivery callbacks. Returns the number still in flight. Blocks: only for
 * shutdown and rebalance. */
size_t sl_kafka_producer_flush(struct sl_kafka_producer *p, int timeout_ms);

/* The librdkafka handle, for units that need more (metadata, offsets). */
struct rd_kafka_s *sl_kafka_producer_handle(struct sl_kafka_producer *p);

#endif
