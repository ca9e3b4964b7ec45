/* produce.c -- tracker records into Kafka at a fixed rate, stamped with the
 * time they are sent, for end-to-end latency.
 *
 *   build/bench/produce BROKERS TOPIC EVENTS RATE SECONDS [LINGER_MS]
 *
 * EVENTS is scripts/gen-events.lua's output with KEYED=1 ("key<TAB>value"
 * lines), read into memory first and sent in order (from the top again when
 * the run needs more). Every record is sent at its due time on a fixed
 * schedule (RATE per second, a millisecond's share at a time, catching up
 * when late), with its Kafka timestamp set to the send time in ms and every
 * "dtm":"<13 digits>" of the value rewritten to that same time: the view's
 * event time, which the pipeline carries into its output record
 * (product.viewTimestamp), is then the input record's Kafka timestamp, so a
 * reader of the output alone has both ends of each record's latency.
 * LINGER_MS is the producer's linger.ms, 0 unless given: with 0 a record is
 * on its way when stamped, in a request of its own unless one is in flight
 * (at 20k records/s that is thousands of produce requests a second, which
 * keep a broker on the same two cores busy); a few ms batch them as a
 * collector does (sluice's lingers 1 ms).
 *
 * Prints one JSON line when every record is acknowledged:
 *   {"sent": N, "seconds": S, "rate": R, "late_ms_max": L}
 * seconds: from the first send to the last acknowledgement; late_ms_max: how far the schedule fell behind at worst (a loaded machine).
 * Exits 1 when a record is not delivered. */
#define _GNU_SOURCE
#include <librdkafka/rdkafka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DTM "\"dtm\":\"" /* Where an event's device time starts in a value. */
#define DTM_DIGITS 13     /* Milliseconds since 1970 until the year 2286. */

struct event {
    char *key;         /* visitor id */
    size_t keylen;
    char *value;       /* collector record, its dtm rewritten before each send */
    size_t len;
};

static long long failed;     /* records the broker did not take */

static void delivered(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (!failed) fprintf(stderr, "produce: %s\n", rd_kafka_err2str(m->err));
        failed++;
    }
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Reads "key\tvalue" lines; returns how many, NULL events on failure. */
static struct event *load(const char *path, size_t *n) {
    FILE *f = fopen(path, "r");
    struct event *ev = NULL;
    size_t cap = 0, len = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;

    *n = 0;
    if (!f) {
        perror(path);
        return NULL;
    }
    while ((got = getline(&line, &lcap, f)) > 0) {
        char *tab = memchr(line, '\t', (size_t)got);
        if (!tab) continue;
        if (line[got - 1] == '\n') line[--got] = '\0';
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            struct event *bigger = realloc(ev, cap * sizeof(*ev));
            if (!bigger) break;
            ev = bigger;
        }
        ev[len].keylen = (size_t)(tab - line);
        ev[len].key = strndup(line, ev[len].keylen);
        ev[len].len = (size_t)(line + got - tab - 1);
        ev[len].value = strndup(tab + 1, ev[len].len);
        len++;
    }
    free(line);
    fclose(f);
    *n = len;
    return ev;
}

/* Writes t as the 13 digits after every "dtm":" in v (values of another
 * width are left alone). */
static void stamp(char *v, size_t len, int64_t t) {
    char digits[DTM_DIGITS + 1];
    snprintf(digits, sizeof(digits), "%013lld", (long long)t);
    for (char *p = v; (p = memmem(p, len - (size_t)(p - v), DTM, sizeof(DTM) - 1)); ) {
        p += sizeof(DTM) - 1;
        if ((size_t)(p - v) + DTM_DIGITS < len && p[DTM_DIGITS] == '"') memcpy(p, digits, DTM_DIGITS);
    }
}

int main(int argc, char **argv) {
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    struct event *ev = NULL;
    size_t nev = 0;
    char err[512];
    int ret = 1;
    double rate, seconds, t0, late_max = 0;
    long long total, sent = 0;

    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: produce BROKERS TOPIC EVENTS RATE SECONDS [LINGER_MS]\n");
        return 2;
    }
    rate = atof(argv[4]);
    seconds = atof(argv[5]);
    if (rate <= 0 || seconds <= 0) {
        fprintf(stderr, "produce: RATE and SECONDS must be positive\n");
        return 2;
    }
    total = (long long)(rate * seconds);
    ev = load(argv[3], &nev);
    if (!nev) {
        fprintf(stderr, "produce: %s: no key<TAB>value lines\n", argv[3]);
        goto done;
    }
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "linger.ms", argc == 7 ? argv[6] : "0", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", err, sizeof(err))) {
        fprintf(stderr, "produce: %s\n", err);
        goto done;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, delivered);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "produce: %s\n", err);
        goto done;
    }
    conf = NULL; /* Configuration object is now owned, and freed, by the rd_kafka_t. */

    t0 = mono_s();
    while (sent < total) {
        double el = mono_s() - t0;
        long long due = (long long)(el * rate);
        if (due > total) due = total;
        if (due > sent && (el - sent / rate) * 1000 > late_max) late_max = (el - sent / rate) * 1000;
        while (sent < due) {
            struct event *e = &ev[sent % (long long)nev];
            int64_t t = now_ms();
            rd_kafka_resp_err_t r;
            stamp(e->value, e->len, t);
            r = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[2]),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_KEY(e->key, e->keylen),
                                  RD_KAFKA_V_VALUE(e->value, e->len),
                                  RD_KAFKA_V_TIMESTAMP(t), RD_KAFKA_V_END);
            if (r == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 1);
                continue;
            }
            if (r) {
                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(r));
                goto done;
            }
            sent++;
        }
        rd_kafka_poll(rk, 0);
        {
            /* Sleep to the next record's due time, at most 1 ms. */
            double wait = (sent + 1) / rate - (mono_s() - t0);
            if (wait > 0.001) wait = 0.001;
            if (wait > 0) {
                struct timespec ts = {0, (long)(wait * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    if (rd_kafka_flush(rk, 30000)) {
        fprintf(stderr, "produce: %d records not acknowledged after 30 s\n", rd_kafka_outq_len(rk));
        goto done;
    }
    if (failed) goto done;
    printf("{\"sent\": %lld, \"seconds\": %.3f, \"rate\": %.0f, \"late_ms_max\": %.1f}\n",
           sent, mono_s() - t0, rate, late_max);
    ret = 0;
done:
    if (rk) rd_kafka_destroy(rk);
    if (conf) rd_kafka_conf_destroy(conf);
    for (size_t i = 0; i < nev; i++) {
        free(ev[i].key);
        free(ev[i].value);
    }
    free(ev);
    return ret;
}
