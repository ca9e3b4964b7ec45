/* consume.c -- the ceiling: a librdkafka consumer that only counts records.
 *
 *   build/bench/consume BROKERS TOPIC GROUP N [fetch.wait.max.ms]
 *
 * Joins GROUP (a fresh one: it reads TOPIC from the start), takes records
 * until N have arrived, touching each value's first and last byte so the
 * payload is really read, and prints one JSON line:
 *
 *   {"records": R, "cpu_s": C, "wall_s": W, "bytes": B}
 *
 * where C and W run from the first record to the Nth (its own getrusage:
 * every thread of the process), R = N. That is the
 * cost of consuming with librdkafka the way librdkafka's examples/consumer.c
 * does, and no more: the floor under any consumer of the same records.
 * Exits 1 with a message on stderr when the broker is unreachable or no
 * record arrives for 60 s. */
#include <librdkafka/rdkafka.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define IDLE_LIMIT_MS 60000 /* Give up when no record came for this long. */
#define POLL_MS 200         /* One poll's wait when nothing is there. */

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char err[256];
    if (rd_kafka_conf_set(c, k, v, err, sizeof(err)) == RD_KAFKA_CONF_OK) return 0;
    fprintf(stderr, "consume: %s=%s: %s\n", k, v, err);
    return -1;
}

int main(int argc, char **argv) {
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    char err[512];
    int ret = 1;
    long long want, got = 0, bytes = 0;
    unsigned sink = 0;
    double cpu0 = 0, wall0 = 0;
    int idle_polls = 0;           /* polls in a row that gave nothing */

    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: consume BROKERS TOPIC GROUP N [fetch.wait.max.ms]\n");
        return 2;
    }
    want = atoll(argv[4]);
    if (want < 2) {
        fprintf(stderr, "consume: N must be at least 2\n");
        return 2;
    }
    conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", argv[1]) || set(conf, "group.id", argv[3]) ||
        set(conf, "auto.offset.reset", "earliest") || set(conf, "enable.auto.commit", "false") ||
        (argc == 6 && set(conf, "fetch.wait.max.ms", argv[5])))
        goto done;
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "consume: %s\n", err);
        goto done;
    }
    conf = NULL; /* Configuration object is now owned, and freed, by the rd_kafka_t. */
    rd_kafka_poll_set_consumer(rk);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, argv[2], RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(rk, topics)) {
        fprintf(stderr, "consume: cannot subscribe to %s\n", argv[2]);
        goto done;
    }
    while (got < want) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, POLL_MS);
        if (!m) {
            if (++idle_polls * POLL_MS > IDLE_LIMIT_MS) {
                fprintf(stderr, "consume: %lld of %lld records, then none for %d s\n",
                        got, want, IDLE_LIMIT_MS / 1000);
                goto done;
            }
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (got == 0) {
            cpu0 = cpu_now();
            wall0 = wall_now();
        }
        if (m->len) sink += ((const unsigned char *)m->payload)[0] +
                            ((const unsigned char *)m->payload)[m->len - 1];
        bytes += (long long)m->len;
        got++;
        idle_polls = 0;
        rd_kafka_message_destroy(m);
    }
    printf("{\"records\": %lld, \"cpu_s\": %.4f, \"wall_s\": %.4f, \"bytes\": %lld, \"check\": %u}\n",
           got, cpu_now() - cpu0, wall_now() - wall0, bytes, sink & 1);
    ret = 0;
done:
    if (topics) rd_kafka_topic_partition_list_destroy(topics);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (conf) rd_kafka_conf_destroy(conf);
    return ret;
}
