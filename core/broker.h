/* broker.h -- the embedded Kafka-protocol broker.
 *
 * librdkafka's mock cluster: real Kafka protocol on 127.0.0.1, in memory, run
 * by librdkafka's own threads. For a laptop, a demo and small tests only: it
 * keeps the last 5 MiB of each partition and silently drops older records.
 * Uses librdkafka. */
#ifndef SL_BROKER_H
#define SL_BROKER_H

#include <stddef.h>

#define SL_BROKER_PARTITIONS 4  /* Partitions of topics created by default. */
#define SL_BROKER_RETENTION_BYTES (5u << 20) /* What the mock keeps per partition. */

struct sl_broker;

/* Starts a broker cluster of nbrokers with the listed topics created with
 * partitions each (other topics are auto-created with SL_BROKER_PARTITIONS). */
struct sl_broker *sl_broker_create(int nbrokers, int partitions,
                                   const char *const *topics, size_t ntopics,
                                   char *err, size_t errlen);
/* Creates one more topic (no-op if it exists). */
int sl_broker_topic(struct sl_broker *b, const char *topic, int partitions);
/* The bootstrap list, e.g. "127.0.0.1:39445". Valid until destroy. */
const char *sl_broker_address(const struct sl_broker *b);
void sl_broker_destroy(struct sl_broker *b);

#endif
