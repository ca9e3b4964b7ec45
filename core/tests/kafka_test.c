/* kafka_test.c -- unit tests for the producer's recovery from a fatal error,
 * and for a producer writing more topics than it keeps handles for.
 *
 * An idempotent producer that hits a fatal error ("out of order sequence
 * number" after a broker came back) refuses every record from then on. The
 * producer here runs on a loop against the embedded broker (librdkafka's mock
 * cluster); rd_kafka_test_fatal_error() raises the fatal error on the real
 * handle, as the broker would, and the checks say what the application sees:
 * every record acknowledged once, the handle replaced and counted. Last, a
 * consumer's stored positions: handed to librdkafka after each batch, at a
 * flush and at the close. */
#define _GNU_SOURCE
#include "broker.h"
#include "kafka.h"
#include "metrics.h"
#include "sl.h"
#include "test.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#define NRECS 50          /* records in flight when the fatal error comes */
#define TOPIC "fatal"

struct reports {
    int ok, failed, calls[NRECS + 1];
    char last_err[128];
    /* For records of one partition produced in slot order: acknowledgements
     * that came before an earlier slot's or at a lower offset. */
    int next_i, out_of_order;
    int64_t next_offset;
};

struct slot {
    struct reports *r;
    int i;
};

static void delivered(void *opaque, const char *err, int32_t partition, int64_t offset) {
    struct slot *s = opaque;
    (void)partition;
    s->r->calls[s->i]++;
    if (err || offset < 0) {
        s->r->failed++;
        snprintf(s->r->last_err, sizeof(s->r->last_err), "%s", err ? err : "no offset");
    } else {
        s->r->ok++;
        if (s->i < s->r->next_i || offset < s->r->next_offset) s->r->out_of_order++;
        s->r->next_i = s->i + 1;
        s->r->next_offset = offset + 1;
    }
}

struct restarted {
    int n;
    struct rd_kafka_s *handle;
};

static void on_restart(void *arg, struct sl_kafka_producer *p) {
    struct restarted *r = arg;
    r->n++;
    r->handle = sl_kafka_producer_handle(p);
}

/* Runs the loop until want reports arrived or 15 s passed. */
static void run_until(struct event_base *base, struct reports *r, int want) {
    int64_t end = sl_mono_ms() + 15000;
    struct timeval tick = {0, 10000};
    while (r->ok + r->failed < want && sl_mono_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
}

static double restarts(void) {
    return sl_metrics_get("sluice_kafka_producer_restarts_total", "producer=\"test\"");
}

static void test_fatal_error_replaces_the_producer(void) {
    const char *topics[] = {TOPIC};
    char err[SL_ERRLEN] = "";
    struct event_base *base = event_base_new();
    struct sl_broker *b = sl_broker_create(1, 2, topics, 1, err, sizeof(err));
    struct reports r = {0};
    struct slot slots[NRECS + 1];
    struct restarted rs = {0};
    struct sl_kafka_producer *p;
    struct rd_kafka_s *first;
    bool queued = true;

    TEST("the embedded broker starts", b != NULL);
    if (!b) goto done;
    struct sl_kafka_conf kc = {.brokers = sl_broker_address(b), .linger_ms = 5, .name = "test"};
    p = sl_kafka_producer_create(base, &kc, err, sizeof(err));
    TEST("the producer is created", p != NULL);
    if (!p) goto done;
    sl_kafka_producer_on_restart(p, on_restart, &rs);
    TEST("restarts are exported at 0 from the start",
         restarts() == 0 && sl_metrics_get("sluice_kafka_producer_restarts_total",
                                           "producer=\"nope\"") == 0);
    first = sl_kafka_producer_handle(p);

    /* Records queued and in flight when the handle fails. */
    for (int i = 0; i < NRECS; i++) {
        char key[16], val[32];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "{\"n\":%d}", i);
        slots[i] = (struct slot){&r, i};
        if (sl_kafka_produce(p, TOPIC, -1, key, strlen(key), val, strlen(val), 0, delivered,
                             &slots[i], err, sizeof(err)))
            queued = false;
    }
    TEST("records are queued", queued && sl_kafka_producer_inflight(p) == NRECS);
    TEST("librdkafka raises the fatal error",
         rd_kafka_test_fatal_error((rd_kafka_t *)first,
                                   RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                   "broker came back") == RD_KAFKA_RESP_ERR_NO_ERROR);
    run_until(base, &r, NRECS);
    TEST("every record in flight is acknowledged after the fatal error", r.ok == NRECS);
    TEST("none is reported failed", r.failed == 0);
    TEST("they went through the new handle (requeued)",
         sl_metrics_get("sluice_kafka_producer_requeued_total", NULL) > 0);
    if (r.failed) printf("#   last failure: %s\n", r.last_err);
    bool once = true;
    for (int i = 0; i < NRECS; i++) once = once && r.calls[i] == 1;
    TEST("each record's callback runs exactly once", once);
    TEST("the handle was replaced", sl_kafka_producer_handle(p) != first);
    TEST("the restart hook saw the new handle once",
         rs.n == 1 && rs.handle == sl_kafka_producer_handle(p));
    TEST("the restart is counted once", restarts() == 1);
    TEST("the producer has a working handle again", sl_kafka_producer_fault(p) == NULL &&
         rd_kafka_fatal_error((rd_kafka_t *)sl_kafka_producer_handle(p), NULL, 0) == 0);
    TEST("nothing is left in flight", sl_kafka_producer_inflight(p) == 0);

    /* New records go through the new handle. */
    slots[NRECS] = (struct slot){&r, NRECS};
    TEST("a record produced after the restart is accepted",
         sl_kafka_produce(p, TOPIC, -1, "k", 1, "{}", 2, 0, delivered, &slots[NRECS], err,
                          sizeof(err)) == SL_OK);
    run_until(base, &r, NRECS + 1);
    TEST("and acknowledged", r.ok == NRECS + 1 && r.calls[NRECS] == 1);

    /* A second fatal error, with nothing in flight, is recovered too. */
    TEST("a second fatal error is raised",
         rd_kafka_test_fatal_error((rd_kafka_t *)sl_kafka_producer_handle(p),
                                   RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH, "fenced") ==
         RD_KAFKA_RESP_ERR_NO_ERROR);
    {
        struct timeval t = {0, 300000};
        event_base_loopexit(base, &t);
        event_base_dispatch(base);
    }
    TEST("an idle producer is replaced as well", restarts() == 2 && rs.n == 2);
    slots[NRECS].i = NRECS;
    r.calls[NRECS] = 0;
    TEST("and produces again",
         sl_kafka_produce(p, TOPIC, -1, "k", 1, "{}", 2, 0, delivered, &slots[NRECS], err,
                          sizeof(err)) == SL_OK);
    run_until(base, &r, NRECS + 2);
    TEST("with its record acknowledged", r.ok == NRECS + 2 && r.calls[NRECS] == 1);

    /* A fatal error during a blocking flush (shutdown, rebalance): the
     * flush serves the replaced handle too and waits for the requeued records. */
    int before = r.ok;
    queued = true;
    for (int i = 0; i < NRECS; i++) {
        slots[i] = (struct slot){&r, i};
        r.calls[i] = 0;
        if (sl_kafka_produce(p, TOPIC, -1, "f", 1, "{}", 2, 0, delivered, &slots[i], err,
                             sizeof(err)))
            queued = false;
    }
    rd_kafka_test_fatal_error((rd_kafka_t *)sl_kafka_producer_handle(p),
                              RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, "in flush");
    TEST("a flush across a fatal error ends with nothing in flight",
         queued && sl_kafka_producer_flush(p, 10000) == 0);
    TEST("and every record acknowledged once", r.ok == before + NRECS && r.failed == 0 &&
         r.calls[0] == 1 && r.calls[NRECS - 1] == 1 && restarts() == 3);

    sl_kafka_producer_destroy(p);
done:
    sl_broker_destroy(b);
    event_base_free(base);
}

/* A producer keeps a handle for the first 8 topics it writes; a record for
 * any other topic still goes out, through a handle made for it. */
#define NTOPICS 11
static void test_many_topics(void) {
    char names[NTOPICS][16], err[SL_ERRLEN] = "";
    const char *topics[NTOPICS];
    struct event_base *base = event_base_new();
    struct reports r = {0};
    struct slot slots[2 * NTOPICS];
    bool queued = true;

    for (int i = 0; i < NTOPICS; i++) {
        snprintf(names[i], sizeof(names[i]), "topic-%d", i);
        topics[i] = names[i];
    }
    struct sl_broker *b = sl_broker_create(1, 1, topics, NTOPICS, err, sizeof(err));
    TEST("many topics: the embedded broker starts", b != NULL);
    if (!b) goto done;
    struct sl_kafka_conf kc = {.brokers = sl_broker_address(b), .linger_ms = 5, .name = "many"};
    struct sl_kafka_producer *p = sl_kafka_producer_create(base, &kc, err, sizeof(err));
    TEST("many topics: the producer is created", p != NULL);
    if (!p) goto done;
    for (int round = 0; round < 2; round++)           /* each topic twice: kept, then reused */
        for (int i = 0; i < NTOPICS; i++) {
            int k = round * NTOPICS + i;
            slots[k] = (struct slot){&r, k};
            if (sl_kafka_produce(p, names[i], -1, "k", 1, "{}", 2, 0, delivered, &slots[k], err,
                                 sizeof(err)))
                queued = false;
        }
    TEST("many topics: records for 11 topics are queued, twice each", queued);
    run_until(base, &r, 2 * NTOPICS);
    bool once = true;
    for (int k = 0; k < 2 * NTOPICS; k++) once = once && r.calls[k] == 1;
    TEST("many topics: every record is acknowledged once", r.ok == 2 * NTOPICS && r.failed == 0 &&
         once);
    if (r.failed) printf("#   last failure: %s\n", r.last_err);
    sl_kafka_producer_destroy(p);
done:
    sl_broker_destroy(b);
    event_base_free(base);
}

/* ==================== A full queue ==================== */

/* The producer reports full at half of queue.buffering.max.messages, and
 * not full again once its records are acknowledged, so sinks stop taking
 * input before librdkafka refuses a produce. */
static void test_full_queue(void) {
    const char *topics[] = {"full"};
    char err[SL_ERRLEN] = "";
    struct event_base *base = event_base_new();
    struct reports r = {0};
    struct slot slots[NRECS];
    bool ok = true, full_at_4 = true;

    struct sl_broker *b = sl_broker_create(1, 1, topics, 1, err, sizeof(err));
    TEST("full queue: the embedded broker starts", b != NULL);
    if (!b) goto done;
    const struct sl_kafka_prop props[] = {{"queue.buffering.max.messages", "10"}};
    struct sl_kafka_conf kc = {.brokers = sl_broker_address(b), .props = props, .nprops = 1,
                               .linger_ms = 50, .name = "full"};
    struct sl_kafka_producer *p = sl_kafka_producer_create(base, &kc, err, sizeof(err));
    TEST("full queue: the producer is created", p != NULL);
    if (!p) goto done;
    TEST("full queue: an empty producer is not full", !sl_kafka_producer_full(p));
    for (int i = 0; i < 5; i++) {
        slots[i] = (struct slot){&r, i};
        if (i == 4) full_at_4 = sl_kafka_producer_full(p);
        if (sl_kafka_produce(p, "full", -1, "k", 1, "{}", 2, 0, delivered, &slots[i], err,
                             sizeof(err)))
            ok = false;
    }
    TEST("full queue: 4 of 10 records in flight are not full", ok && !full_at_4);
    TEST("full queue: 5 of 10 are", sl_kafka_producer_full(p));
    run_until(base, &r, 5);
    TEST("full queue: once acknowledged it is not full", r.ok == 5 && !sl_kafka_producer_full(p));
    sl_kafka_producer_destroy(p);
done:
    sl_broker_destroy(b);
    event_base_free(base);
}

/* With park_when_full, records the full queue refuses wait in the producer
 * and go out, in order, as reports make room; without it the produce fails
 * ("Queue full"). */
#define NPARK 40
static struct sl_kafka_producer *park_p;
static struct slot park_extra;

/* delivered, and at the second acknowledgement one more record, as a
 * pipeline resumed by a report produces: it must go after those waiting. */
static void delivered_then_more(void *opaque, const char *err, int32_t partition, int64_t offset) {
    struct slot *s = opaque;
    delivered(opaque, err, partition, offset);
    if (s->i == 1) {
        char e[SL_ERRLEN];
        park_extra = (struct slot){s->r, NPARK};
        if (sl_kafka_produce(park_p, "park", -1, "k", 1, "{}", 2, 0, delivered, &park_extra, e,
                             sizeof(e)))
            s->r->failed++;
    }
}

static void test_park_when_full(void) {
    const char *topics[] = {"park"};
    char err[SL_ERRLEN] = "";
    struct event_base *base = event_base_new();
    struct reports r = {0};
    struct slot slots[NPARK];
    int refused = 0;

    struct sl_broker *b = sl_broker_create(1, 1, topics, 1, err, sizeof(err));
    TEST("park: the embedded broker starts", b != NULL);
    if (!b) goto done;
    const struct sl_kafka_prop props[] = {{"queue.buffering.max.messages", "10"}};
    struct sl_kafka_conf kc = {.brokers = sl_broker_address(b), .props = props, .nprops = 1,
                               .linger_ms = 20, .name = "park"};
    struct sl_kafka_producer *strict = sl_kafka_producer_create(base, &kc, err, sizeof(err));
    kc.park_when_full = true;
    struct sl_kafka_producer *p = sl_kafka_producer_create(base, &kc, err, sizeof(err));
    park_p = p;
    TEST("park: the producers are created", p && strict);
    if (!p || !strict) goto done;
    for (int i = 0; i < 11; i++)
        refused += sl_kafka_produce(strict, "park", -1, "k", 1, "{}", 2, 0, NULL, NULL, err,
                                    sizeof(err)) != SL_OK;
    TEST("park: without it the 11th record of a queue of 10 is refused",
         refused == 1 && strstr(err, "Queue full"));
    refused = 0;
    for (int i = 0; i < NPARK; i++) {
        slots[i] = (struct slot){&r, i};
        char v[16];
        int n = snprintf(v, sizeof(v), "{\"i\":%d}", i);
        refused += sl_kafka_produce(p, "park", -1, "k", 1, v, (size_t)n, 0, delivered_then_more,
                                    &slots[i], err, sizeof(err)) != SL_OK;
    }
    TEST("park: with it 40 records into a queue of 10 are all taken", refused == 0);
    TEST("park: the producer is full while records wait", sl_kafka_producer_full(p));
    TEST("park: ...and counts them in flight", sl_kafka_producer_inflight(p) == NPARK);
    run_until(base, &r, NPARK + 1);
    bool once = true;
    for (int i = 0; i <= NPARK; i++) once = once && r.calls[i] == 1;
    TEST("park: every record is acknowledged once, in the order produced, one produced "
         "from a report after those that waited",
         r.ok == NPARK + 1 && r.failed == 0 && once && r.out_of_order == 0);
    TEST("park: then nothing waits", !sl_kafka_producer_full(p) && sl_kafka_producer_inflight(p) == 0);
    /* Records still waiting at destroy are dropped, their reports uncalled. */
    for (int i = 0; i < NPARK; i++)
        sl_kafka_produce(p, "park", -1, "k", 1, "{}", 2, 0, delivered, &slots[i], err, sizeof(err));
    int before = r.ok + r.failed;
    sl_kafka_producer_destroy(p);
    TEST("park: destroy with records waiting calls none of their reports",
         r.ok + r.failed == before);
    sl_kafka_producer_destroy(strict);
done:
    sl_broker_destroy(b);
    event_base_free(base);
}

/* ==================== Stored positions ==================== */

#define STORED "stored"
#define PER_PART 10

struct consumed {
    struct sl_kafka_consumer *c;
    int n;
};

/* Stores each record's position as the worker does when it is done: every
 * record of partition 1, the first 5 of partition 0. */
static void store_some(void *arg, struct sl_kafka_record *rec) {
    struct consumed *k = arg;
    k->n++;
    if (rec->partition == 1 || rec->offset < 5)
        sl_kafka_consumer_store(k->c, rec->topic, rec->partition, rec->offset + 1);
    sl_kafka_record_free(rec);
}

/* The group's committed offsets of partitions 0 and 1, read through a
 * handle of its own (-1: none, -2: the read failed). */
static void committed(const char *brokers, const char *group, int64_t out[2]) {
    char err[256];
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    out[0] = out[1] = -2;
    if (rd_kafka_conf_set(rc, "bootstrap.servers", brokers, err, sizeof(err)) ||
        rd_kafka_conf_set(rc, "group.id", group, err, sizeof(err))) {
        rd_kafka_conf_destroy(rc);
        return;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, err, sizeof(err));
    if (!rk) {                                   /* rc is still ours on failure */
        rd_kafka_conf_destroy(rc);
        return;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(l, STORED, 0);
    rd_kafka_topic_partition_list_add(l, STORED, 1);
    if (!rd_kafka_committed(rk, l, 10000))
        for (int i = 0; i < 2; i++)
            out[l->elems[i].partition] = l->elems[i].offset < 0 ? -1 : l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

static void test_stored_positions(void) {
    const char *topics[] = {STORED};
    char err[SL_ERRLEN] = "";
    struct event_base *base = event_base_new();
    struct reports r = {0};
    struct slot slots[2 * PER_PART];
    int64_t got[2];

    struct sl_broker *b = sl_broker_create(1, 2, topics, 1, err, sizeof(err));
    TEST("stored positions: the embedded broker starts", b != NULL);
    if (!b) goto done;
    const char *brokers = sl_broker_address(b);
    struct sl_kafka_conf kc = {.brokers = brokers, .linger_ms = 5, .name = "stored"};
    struct sl_kafka_producer *p = sl_kafka_producer_create(base, &kc, err, sizeof(err));
    for (int i = 0; p && i < 2 * PER_PART; i++) {
        slots[i] = (struct slot){&r, i};
        sl_kafka_produce(p, STORED, i % 2, "k", 1, "{}", 2, 0, delivered, &slots[i], err,
                         sizeof(err));
    }
    if (p) run_until(base, &r, 2 * PER_PART);
    sl_kafka_producer_destroy(p);
    TEST("stored positions: 10 records in each of 2 partitions", r.ok == 2 * PER_PART);

    struct consumed k = {0};
    struct sl_kafka_consumer_conf cc = {.kafka = {.brokers = brokers, .name = "stored"},
        .group = "g-stored", .topics = topics, .ntopics = 1, .batch = 3,
        .on_record = store_some, .arg = &k};
    k.c = sl_kafka_consumer_create(base, &cc, err, sizeof(err));
    TEST("stored positions: the consumer is created", k.c != NULL);
    if (!k.c) goto done;
    int64_t end = sl_mono_ms() + 15000;
    struct timeval tick = {0, 10000};
    while (k.n < 2 * PER_PART && sl_mono_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    TEST("stored positions: every record is consumed, in batches of 3", k.n == 2 * PER_PART);
    TEST("stored positions: a commit commits the last position stored of each partition",
         sl_kafka_consumer_commit(k.c, true) == SL_OK &&
         (committed(brokers, "g-stored", got), got[0] == 5 && got[1] == PER_PART));
    if (got[0] != 5 || got[1] != PER_PART)
        printf("#   committed %lld and %lld\n", (long long)got[0], (long long)got[1]);

    /* A position stored between batches (at a sink's acknowledgement)
     * waits for the next flush: librdkafka's commit does not see it before. */
    rd_kafka_t *rk = sl_kafka_consumer_handle(k.c);
    sl_kafka_consumer_store(k.c, STORED, 0, 8);
    rd_kafka_commit(rk, NULL, 0);
    committed(brokers, "g-stored", got);
    TEST("stored positions: a position stored between batches waits for a flush", got[0] == 5);
    rd_kafka_resp_err_t e = sl_kafka_consumer_store_flush(k.c) == SL_OK ?
                            rd_kafka_commit(rk, NULL, 0) : RD_KAFKA_RESP_ERR__FAIL;
    committed(brokers, "g-stored", got);
    TEST("stored positions: after the flush librdkafka commits it", !e && got[0] == 8);
    sl_kafka_consumer_store(k.c, STORED, 1, 3);      /* not flushed: the close hands it over */
    sl_kafka_consumer_destroy(k.c);
    committed(brokers, "g-stored", got);
    TEST("stored positions: closing commits a position not flushed yet", got[1] == 3 && got[0] == 8);
done:
    sl_broker_destroy(b);
    event_base_free(base);
}

int main(void) {
    sl_log_set_level(SL_LOG_ERROR);
    test_fatal_error_replaces_the_producer();
    test_many_topics();
    test_full_queue();
    test_park_when_full();
    test_stored_positions();
    sl_kafka_producer_destroy(NULL);
    sl_metrics_reset();
    return TEST_DONE();
}
