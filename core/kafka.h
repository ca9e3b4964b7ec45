/* kafka.h -- Kafka producer and consumer on the libevent loop.
 *
 * Wraps librdkafka. Both handles hand their queues to the loop with
 * rd_kafka_queue_io_event_enable(): the loop wakes when a queue goes from
 * empty to non-empty and drains it; nothing sleeps. A consumer also polls a
 * quiet queue once a second, so that an idle worker stays in its group
 * (max.poll.interval.ms counts polls, not records). Uses sl.h. */
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
    int linger_ms;                    /* producer batching delay; 0: 2 ms */
    const char *name;                 /* producer's metric label; NULL: "producer" */
    bool park_when_full;              /* producer: a record librdkafka's full queue refuses
                                         is kept and sent once reports made room, not an
                                         error (sl_kafka_produce) */
};

/* ==================== Producer ==================== */

/* Called once per produced record when the broker acknowledged it (err ==
 * NULL; partition and offset say where it landed) or it failed for good (err
 * names the reason; offset -1). Runs on the loop. */
typedef void sl_kafka_delivery_fn(void *opaque, const char *err,
                                  int32_t partition, int64_t offset);

/* Called on the loop when p's librdkafka handle was replaced (see
 * sl_kafka_producer_create), before the old handle is destroyed: whoever
 * holds objects of the old handle (queues) moves them to the new one. */
typedef void sl_kafka_restart_fn(void *arg, struct sl_kafka_producer *p);

/* Creates a producer (acks=all, idempotent) whose delivery reports are served
 * on base. Returns NULL and fills err on failure.
 *
 * An idempotent producer that hits a fatal error (e.g. "out of order
 * sequence number" after a broker came back) refuses every record from then
 * on. This one replaces its handle with a new one instead, counted in
 * sluice_kafka_producer_restarts_total{producer=conf->name}, and requeues
 * the records the failed handle still held on the new one, each keeping its
 * one delivery callback (a record may then be written twice, never lost).
 * While no working handle exists, sl_kafka_producer_fault() says why. */
struct sl_kafka_producer *sl_kafka_producer_create(struct event_base *base,
        const struct sl_kafka_conf *conf, char *err, size_t errlen);
/* Waits up to 5 s for queued records, then purges the rest; delivery
 * callbacks are not called any more once destroy begins. NULL does nothing. */
void sl_kafka_producer_destroy(struct sl_kafka_producer *p);

/* Looks topic's partitions and leaders up now, in the background, so the
 * first record produced to it does not wait for that (about a second on a
 * new topic). */
void sl_kafka_producer_warm(struct sl_kafka_producer *p, const char *topic);
/* Queues one record. partition -1 lets the partitioner choose from the key
 * (murmur2, as the Java client, so a key always lands in one partition).
 * ts_ms 0 means now. key/value are copied. On SL_OK, cb is called exactly once
 * later on the loop; on SL_ERR (queue full, unknown topic...) cb is never
 * called and err says why. With park_when_full a full queue is not an error:
 * the record (and every one after it, to keep their order) waits in the
 * producer and goes out as delivery reports make room; the memory it takes
 * is the caller's to bound, by stopping while sl_kafka_producer_full. */
int sl_kafka_produce(struct sl_kafka_producer *p, const char *topic,
                     int32_t partition, const void *key, size_t keylen,
                     const void *value, size_t vallen, int64_t ts_ms,
                     sl_kafka_delivery_fn *cb, void *opaque,
                     char *err, size_t errlen);

/* One Kafka header; name NULL: none. */
struct sl_kafka_header {
    const char *name;
    const void *value;
    size_t len;
};

/* sl_kafka_produce() with header h (copied). */
int sl_kafka_produce_header(struct sl_kafka_producer *p, const char *topic,
                            int32_t partition, const void *key, size_t keylen,
                            const void *value, size_t vallen, int64_t ts_ms,
                            const struct sl_kafka_header *h, sl_kafka_delivery_fn *cb,
                            void *opaque, char *err, size_t errlen);

/* The producer's message.max.bytes: the most key + value + headers of one
 * record it sends. */
size_t sl_kafka_producer_max_bytes(struct sl_kafka_producer *p);

/* fn is called after each replacement of p's handle; one per producer. */
void sl_kafka_producer_on_restart(struct sl_kafka_producer *p, sl_kafka_restart_fn *fn,
                                  void *arg);

/* Why p has no working handle (a fatal error it could not recover from
 * yet), or NULL while it has one. */
const char *sl_kafka_producer_fault(const struct sl_kafka_producer *p);

/* Records queued and not yet reported. */
size_t sl_kafka_producer_inflight(const struct sl_kafka_producer *p);
/* True while the records produced and not yet reported fill half of
 * librdkafka's queue (queue.buffering.max.messages, 100,000 by default):
 * sinks then report busy and the worker takes no more input until they
 * drain, rather than have a produce refused ("Queue full"), which stops the
 * process. Input records that each make many sink records (a tracker POST
 * of 50 events) fill the queue long before max_inflight input records.
 * Also true while records wait for room (park_when_full). */
bool sl_kafka_producer_full(const struct sl_kafka_producer *p);

/* False while no broker is reachable (librdkafka reported all brokers down
 * and none has come back since). */
bool sl_kafka_producer_up(const struct sl_kafka_producer *p);

/* Waits up to timeout_ms for every queued record to be reported, serving
 * delivery callbacks. Returns the number still in flight. Blocks: only for
 * shutdown and rebalance. */
size_t sl_kafka_producer_flush(struct sl_kafka_producer *p, int timeout_ms);

/* The librdkafka handle, for units that need more (metadata, offsets). It
 * changes when the producer is replaced: see sl_kafka_producer_on_restart. */
struct rd_kafka_s *sl_kafka_producer_handle(struct sl_kafka_producer *p);

/* ==================== Consumer ==================== */

/* One consumed record. The message stays owned by the consumer's caller:
 * record_fn receives it and must pass it to sl_kafka_record_free. */
struct sl_kafka_record {
    const char *topic;   /* one of the consumer's topics when it names one, else
                            librdkafka's: both live as long as the consumer */
    int32_t partition;
    int64_t offset;
    int64_t timestamp;   /* ms, -1 if none */
    const void *key;     /* may be NULL */
    size_t keylen;
    const void *value;   /* may be NULL (tombstone) */
    size_t len;
    void *msg;           /* the rd_kafka_message_t behind it; NULL once released */
};

/* Hands one record to the application; ownership of rec moves to it. */
typedef void sl_kafka_record_fn(void *arg, struct sl_kafka_record *rec);
/* Partitions assigned (assigned = true) or about to be revoked. For a
 * revoke, the callee must finish or give up in-flight work of those
 * partitions and store their offsets before it returns; the consumer then
 * commits synchronously. parts is an rd_kafka_topic_partition_list_t. */
typedef void sl_kafka_rebalance_fn(void *arg, bool assigned, void *parts);

/* The consumer reached the end of a partition (enable.partition.eof). */
typedef void sl_kafka_eof_fn(void *arg, const char *topic, int32_t partition);

struct sl_kafka_consumer_conf {
    struct sl_kafka_conf kafka;
    const char *group;
    const char *const *topics;
    size_t ntopics;
    size_t batch;                 /* records drained per loop wake-up */
    sl_kafka_record_fn *on_record;
    sl_kafka_rebalance_fn *on_rebalance; /* may be NULL */
    sl_kafka_eof_fn *on_eof;      /* may be NULL */
    void *arg;
};

/* Creates a consumer in group conf->group subscribed to conf->topics, with
 * auto offset store off: offsets are stored by sl_kafka_consumer_store and
 * committed every auto.commit.interval.ms and on close. Records reach
 * on_record from the loop. */
struct sl_kafka_consumer *sl_kafka_consumer_create(struct event_base *base,
        const struct sl_kafka_consumer_conf *conf, char *err, size_t errlen);
/* Leaves the group (commits stored offsets) and frees everything. Blocks
 * for the leave. NULL does nothing. */
void sl_kafka_consumer_destroy(struct sl_kafka_consumer *c);

void sl_kafka_record_free(struct sl_kafka_record *rec);
/* Frees the message behind rec (key and value become NULL) and keeps the
 * rest (topic, partition, offset, timestamp) until sl_kafka_record_free:
 * for a record whose bytes nothing reads again while it waits for its
 * sink's acknowledgement. Its memory goes back while it is still in the
 * cache, and librdkafka's fetch buffers are not held for a linger. */
void sl_kafka_record_release(struct sl_kafka_record *rec);

/* Stores next_offset (last done + 1) as the partition's commit position.
 * librdkafka gets the positions stored since the last time in one call:
 * after each batch of records the consumer takes from its queue, at
 * sl_kafka_consumer_store_flush, before a commit, a revoke and the close. */
void sl_kafka_consumer_store(struct sl_kafka_consumer *c, const char *topic,
                             int32_t partition, int64_t next_offset);
/* Hands the positions stored since the last flush to librdkafka now (its
 * auto commit commits what it has): for positions stored outside the
 * consumer's batches, such as at a sink's acknowledgement. SL_ERR when
 * librdkafka refused one (logged; a partition no longer assigned). */
int sl_kafka_consumer_store_flush(struct sl_kafka_consumer *c);
/* Commits stored offsets now; sync blocks until the broker answered. */
int sl_kafka_consumer_commit(struct sl_kafka_consumer *c, bool sync);

/* Holds or releases the hand-over of records (short back-pressure): while
 * held, the loop takes nothing from the consumer queue and librdkafka stops
 * fetching once its pre-fetch queue is full. Cheap, but the group needs a poll
 * within max.poll.interval.ms: for a long stall, pause instead. */
void sl_kafka_consumer_hold(struct sl_kafka_consumer *c, bool hold);
bool sl_kafka_consumer_held(const struct sl_kafka_consumer *c);

/* Pauses or resumes fetching of every assigned partition (long back-pressure:
 * librdkafka drops what it pre-fetched for them and fetches it again on
 * resume). */
void sl_kafka_consumer_pause(struct sl_kafka_consumer *c, bool pause);
bool sl_kafka_consumer_paused(const struct sl_kafka_consumer *c);

struct rd_kafka_s *sl_kafka_consumer_handle(struct sl_kafka_consumer *c);
/* Called per assigned partition: position is the next offset the consumer
 * fetches (-1 unknown), high the partition's end as last fetched (-1
 * unknown). */
typedef void sl_kafka_partition_fn(void *arg, const char *topic, int32_t partition,
                                   int64_t position, int64_t high);
/* Calls fn for each partition assigned now, without blocking (cached
 * watermarks). Returns how many. */
int sl_kafka_consumer_partitions(struct sl_kafka_consumer *c, sl_kafka_partition_fn *fn,
                                 void *arg);

/* Applies conf->props to a librdkafka configuration; err names the bad
 * property. Shared by every handle sluice creates. */
int sl_kafka_conf_apply(void *rd_conf, const struct sl_kafka_conf *conf,
                        char *err, size_t errlen);

#endif
