/* consume.c -- the ceiling: a librdkafka consumer that only counts records.
 *
 *   build/bench/consume [-w FETCH_WAIT_MS] BROKERS TOPIC GROUP N
 *   build/bench/consume -t IDLE_MS [-w FETCH_WAIT_MS] BROKERS TOPIC GROUP 0
 *   build/bench/consume -f OUT_TOPIC [-s BYTES] [-l LINGER_MS] [-w ...] BROKERS TOPIC GROUP N
 *
 * Joins GROUP (a fresh one: it reads TOPIC from the start), takes records
 * until N have arrived, touching each value's first and last byte so the
 * payload is really read, and prints one JSON line:
 *
 *   {"records": R, "cpu_s": C, "wall_s": W, "bytes": B}
 *
 * where C and W run from the first record to the Nth (its own getrusage:
 * every thread of the process), R = N. That is the cost of consuming with
 * librdkafka the way librdkafka's examples/consumer.c does, and no more: the
 * floor under any consumer of the same records. Exits 1 with a message on
 * stderr when the broker is unreachable or no record arrives for 60 s.
 *
 * -t: tails TOPIC instead, for latency, until IDLE_MS pass without a record
 * after the first: prints "RECEIVED_MS<TAB>KEY<TAB>VIEW_MS" per record as it
 * arrives (wall clock in ms; VIEW_MS the value's first "viewTimestamp", the
 * sink record's product.viewTimestamp, or -1), then the JSON line. With a
 * short fetch wait a record is seen about when its broker acknowledged it,
 * which a broker that keeps producers' timestamps does not tell.
 *
 * -f: the ceiling of a job of the pipeline's shape (consume, produce one
 * record each): also produces every record to OUT_TOPIC, its key and the
 * first BYTES of its value (default 195, the mean of the bench job's sink
 * records), with the settings sluice's sinks use (idempotence, murmur2_random,
 * linger.ms LINGER_MS, default 5, librdkafka copying the payload), serving
 * delivery reports every 64 records as a loop would. The run ends when all N
 * are acknowledged, and "forwarded" counts them; a delivery that fails exits 1.
 * It commits no offsets (nor does the count-only run). */
#define _GNU_SOURCE
#include <librdkafka/rdkafka.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define IDLE_LIMIT_MS 60000 /* Give up when no record came for this long. */
#define POLL_MS 200         /* One poll's wait when nothing is there. */
#define DR_EVERY 64         /* -f: delivery reports served every this many records */

static int set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char err[256];
    if (rd_kafka_conf_set(c, k, v, err, sizeof(err)) == RD_KAFKA_CONF_OK) return 0;
    fprintf(stderr, "consume: %s=%s: %s\n", k, v, err);
    return -1;
}

static long long delivered, failed; /* -f: delivery reports */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *arg) {
    (void)rk; (void)arg;
    if (m->err) {
        if (!failed++) fprintf(stderr, "consume: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        delivered++;
    }
}

/* -f: a producer set as sluice's sinks are, NULL (said why) when it cannot be made. */
static rd_kafka_t *forwarder(const char *brokers, const char *linger) {
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (set(c, "bootstrap.servers", brokers) || set(c, "enable.idempotence", "true") ||
        set(c, "partitioner", "murmur2_random") || set(c, "linger.ms", linger)) {
        rd_kafka_conf_destroy(c);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!p) {
        fprintf(stderr, "consume: %s\n", err);
        rd_kafka_conf_destroy(c);
    }
    return p;
}

/* -f: produces the record's key and the first bytes of its value; 0, or -1 said why. */
static int forward(rd_kafka_t *p, const char *topic, const rd_kafka_message_t *m, size_t bytes) {
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_VALUE(m->payload, m->len < bytes ? m->len : bytes),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (!e) return 0;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "consume: produce to %s: %s\n", topic, rd_kafka_err2str(e));
            return -1;
        }
        rd_kafka_poll(p, 10);
    }
}

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

static long long wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The first "viewTimestamp": number of a value, or -1. */
static long long view_ms(const rd_kafka_message_t *m) {
    static const char tag[] = "\"viewTimestamp\":";
    const char *p = m->len ? memmem(m->payload, m->len, tag, sizeof(tag) - 1) : NULL;
    return p ? atoll(p + sizeof(tag) - 1) : -1;
}

/* Every partition of topic at its first offset, NULL when the topic is not there. */
static rd_kafka_topic_partition_list_t *partitions_of(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);

    if (e || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        fprintf(stderr, "consume: no partitions for %s: %s\n", topic,
                rd_kafka_err2str(e ? e : md->topic_cnt ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
    } else {
        l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
        for (int i = 0; i < md->topics[0].partition_cnt; i++)
            rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
    }
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return l;
}

int main(int argc, char **argv) {
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_t *fwd = NULL;       /* -f: the producer */
    const char *fwd_topic = NULL, *linger = "5";
    size_t fwd_bytes = 195;
    rd_kafka_topic_partition_list_t *topics = NULL;
    char err[512];
    int ret = 1;
    long long want, got = 0, bytes = 0;
    unsigned sink = 0;
    double cpu0 = 0, wall0 = 0;
    long long last_ms = 0;        /* -t: when the last record came */
    int idle_polls = 0;           /* polls in a row that gave nothing */
    const char *wait = NULL;
    long idle_ms = 0;             /* -t: tail until this long without a record */
    int opt;

    while ((opt = getopt(argc, argv, "w:t:f:s:l:")) != -1) {
        switch (opt) {
        case 'w': wait = optarg; break;
        case 't': idle_ms = atol(optarg); break;
        case 'f': fwd_topic = optarg; break;
        case 's': fwd_bytes = strtoul(optarg, NULL, 10); break;
        case 'l': linger = optarg; break;
        default: goto usage;
        }
    }
    if (argc - optind != 4) goto usage;
    argv += optind;
    want = atoll(argv[3]);
    if (idle_ms ? want != 0 || idle_ms < POLL_MS || fwd_topic : want < 2) goto usage;
    if (fwd_topic && !(fwd = forwarder(argv[0], linger))) goto done;
    conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", argv[0]) || set(conf, "group.id", argv[2]) ||
        set(conf, "auto.offset.reset", "earliest") || set(conf, "enable.auto.commit", "false") ||
        (wait && set(conf, "fetch.wait.max.ms", wait)))
        goto done;
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "consume: %s\n", err);
        goto done;
    }
    conf = NULL; /* Configuration object is now owned, and freed, by the rd_kafka_t. */
    rd_kafka_poll_set_consumer(rk);
    if (idle_ms) {
        /* Tailing: every partition from the start at once, no group join
         * to wait for, so it reads before the first record is produced. */
        if (!(topics = partitions_of(rk, argv[1]))) goto done;
        if (rd_kafka_assign(rk, topics)) {
            fprintf(stderr, "consume: cannot assign the partitions of %s\n", argv[1]);
            goto done;
        }
    } else {
        topics = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(topics, argv[1], RD_KAFKA_PARTITION_UA);
        if (rd_kafka_subscribe(rk, topics)) {
            fprintf(stderr, "consume: cannot subscribe to %s\n", argv[1]);
            goto done;
        }
    }
    while (idle_ms || got < want) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, idle_ms ? 1 : POLL_MS);
        if (!m) {
            if (idle_ms && got && wall_ms() - last_ms > idle_ms) break;
            if (++idle_polls * (idle_ms ? 1 : POLL_MS) > IDLE_LIMIT_MS) {
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
        if (idle_ms) {
            last_ms = wall_ms();
            printf("%lld\t%.*s\t%lld\n", last_ms, (int)m->key_len, (const char *)m->key, view_ms(m));
        }
        if (m->len) sink += ((const unsigned char *)m->payload)[0] +
                            ((const unsigned char *)m->payload)[m->len - 1];
        bytes += (long long)m->len;
        got++;
        idle_polls = 0;
        if (fwd && forward(fwd, fwd_topic, m, fwd_bytes)) {
            rd_kafka_message_destroy(m);
            goto done;
        }
        if (fwd && got % DR_EVERY == 0) rd_kafka_poll(fwd, 0);
        rd_kafka_message_destroy(m);
    }
    if (fwd) {
        rd_kafka_flush(fwd, IDLE_LIMIT_MS);
        if (failed || delivered != got) {
            fprintf(stderr, "consume: %lld of %lld records delivered to %s, %lld failed\n",
                    delivered, got, fwd_topic, failed);
            goto done;
        }
    }
    printf("{\"records\": %lld, \"cpu_s\": %.4f, \"wall_s\": %.4f, \"bytes\": %lld, \"check\": %u, "
           "\"forwarded\": %lld}\n", got, cpu_now() - cpu0, wall_now() - wall0, bytes, sink & 1,
           delivered);
    ret = 0;
    goto done;
usage:
    fprintf(stderr, "usage: consume [-w FETCH_WAIT_MS] BROKERS TOPIC GROUP N (N >= 2)\n"
                    "       consume -t IDLE_MS [-w FETCH_WAIT_MS] BROKERS TOPIC GROUP 0\n"
                    "       consume -f OUT_TOPIC [-s BYTES] [-l LINGER_MS] [-w FETCH_WAIT_MS] "
                    "BROKERS TOPIC GROUP N\n");
    ret = 2;
done:
    if (topics) rd_kafka_topic_partition_list_destroy(topics);
    if (rk) {
        if (idle_ms) rd_kafka_assign(rk, NULL);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (conf) rd_kafka_conf_destroy(conf);
    if (fwd) rd_kafka_destroy(fwd);
    return ret;
}
