/* broker.c -- the embedded broker on librdkafka's mock cluster (see broker.h). */
#include "broker.h"
#include "sl.h"

#include <stdlib.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

struct sl_broker {
    rd_kafka_t *rk;                 /* the handle that owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    int partitions;
};

struct sl_broker *sl_broker_create(int nbrokers, int partitions,
                                   const char *const *topics, size_t ntopics,
                                   char *err, size_t errlen) {
    struct sl_broker *b = sl_calloc(1, sizeof(*b));
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    char rerr[256];

    b->partitions = partitions > 0 ? partitions : SL_BROKER_PARTITIONS;
    /* A producer that never produces: it only hosts the cluster. */
    rd_kafka_conf_set(rc, "log_level", "3", NULL, 0);
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, rerr, sizeof(rerr));
    if (!b->rk) {
        rd_kafka_conf_destroy(rc);
        sl_errf(err, errlen, "embedded broker: %s", rerr);
        goto fail;
    }
    b->mc = rd_kafka_mock_cluster_new(b->rk, nbrokers > 0 ? nbrokers : 1);
    if (!b->mc) {
        sl_errf(err, errlen, "embedded broker: cannot start the mock cluster");
        goto fail;
    }
    for (size_t i = 0; i < ntopics; i++)
        if (sl_broker_topic(b, topics[i], b->partitions) != SL_OK) {
            sl_errf(err, errlen, "embedded broker: cannot create topic %s", topics[i]);
            goto fail;
        }
    return b;
fail:
    sl_broker_destroy(b);
    return NULL;
}

int sl_broker_topic(struct sl_broker *b, const char *topic, int partitions) {
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(
        b->mc, topic, partitions > 0 ? partitions : b->partitions, 1);
    return (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) ? SL_ERR : SL_OK;
}

const char *sl_broker_address(const struct sl_broker *b) {
    return rd_kafka_mock_cluster_bootstraps(b->mc);
}

void sl_broker_destroy(struct sl_broker *b) {
    if (!b) return;
    if (b->mc) rd_kafka_mock_cluster_destroy(b->mc);
    if (b->rk) rd_kafka_destroy(b->rk);
    free(b);
}
