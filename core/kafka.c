/* kafka.c -- Kafka producer and consumer driven by the libevent loop
 * (see kafka.h).
 *
 * librdkafka writes one byte to a pipe when a queue goes from empty to
 * non-empty; the loop reads it and drains the queue. When a drain stops
 * early for fairness, it re-arms itself through a zero-timeout timer, or
 * consumption would stall: a timer, not event_active(), so that the loop
 * polls sockets between two batches (an activated event runs again before
 * the loop polls, and a backlog would starve the admin and collector HTTP). */
#define _GNU_SOURCE
#include "kafka.h"
#include "sl.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#define SL_KAFKA_DRAIN_MAX 256 /* Events served per wake-up by default. */
#define SL_KAFKA_IDLE_POLL_MS 1000 /* A consumer with nothing to read still polls this often. */

/* ==================== Queue wake-ups ==================== */

struct qwake {
    int fds[2];            /* pipe: librdkafka writes [1], the loop reads [0] */
    struct event *ev;      /* persistent read event on fds[0] */
};

static int qwake_open(struct qwake *w, struct event_base *base,
                      rd_kafka_queue_t *q, event_callback_fn cb, void *arg,
                      char *err, size_t errlen) {
    w->fds[0] = w->fds[1] = -1;
    w->ev = NULL;
    if (pipe2(w->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sl_errf(err, errlen, "pipe: %s", strerror(errno));
        return SL_ERR;
    }
    w->ev = event_new(base, w->fds[0], EV_READ | EV_PERSIST, cb, arg);
    if (!w->ev || event_add(w->ev, NULL) != 0) {
        sl_errf(err, errlen, "cannot add queue event to the loop");
        return SL_ERR;
    }
    rd_kafka_queue_io_event_enable(q, w->fds[1], "1", 1);
    return SL_OK;
}

/* One read empties the pipe: librdkafka writes a byte only when the queue
 * goes from empty to non-empty, and the loop drains the queue after each
 * read, so far fewer than 256 bytes wait. Should more wait, the pipe stays
 * readable and the loop calls again. A second read to see EAGAIN would be
 * one more system call per wake-up (thousands a second in a steady stream). */
static void qwake_drain_pipe(struct qwake *w) {
    char buf[256];
    ssize_t got = read(w->fds[0], buf, sizeof(buf));
    (void)got;
}

static void qwake_close(struct qwake *w, rd_kafka_queue_t *q) {
    if (q) rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
    if (w->ev) event_free(w->ev);
    if (w->fds[0] >= 0) close(w->fds[0]);
    if (w->fds[1] >= 0) close(w->fds[1]);
    w->ev = NULL;
    w->fds[0] = w->fds[1] = -1;
}

int sl_kafka_conf_apply(void *rd_conf, const struct sl_kafka_conf *conf,
                        char *err, size_t errlen) {
    char rerr[256];
    if (conf->brokers &&
        rd_kafka_conf_set(rd_conf, "bootstrap.servers", conf->brokers, rerr,
                          sizeof(rerr)) != RD_KAFKA_CONF_OK) {
        sl_errf(err, errlen, "bootstrap.servers: %s", rerr);
        return SL_ERR;
    }
    for (size_t i = 0; i < conf->nprops; i++) {
        if (rd_kafka_conf_set(rd_conf, conf->props[i].name, conf->props[i].value,
                              rerr, sizeof(rerr)) != RD_KAFKA_CONF_OK) {
            sl_errf(err, errlen, "kafka property %s: %s", conf->props[i].name, rerr);
            return SL_ERR;
        }
    }
    return SL_OK;
}

static int conf_set(rd_kafka_conf_t *c, const char *k, const char *v,
                    char *err, size_t errlen) {
    char rerr[256];
    if (rd_kafka_conf_set(c, k, v, rerr, sizeof(rerr)) != RD_KAFKA_CONF_OK) {
        sl_errf(err, errlen, "%s: %s", k, rerr);
        return SL_ERR;
    }
    return SL_OK;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf) {
    (void)rk;
    sl_log(level <= 3 ? SL_LOG_ERROR : level <= 4 ? SL_LOG_WARN : SL_LOG_DEBUG,
           "kafka", "%s: %s", fac, buf);
}

/* ==================== Producer ==================== */

#define PRODUCER_TOPICS 8 /* Topic handles a producer keeps (a job writes a few topics). */
#define PRODUCER_PARK_LOG_MS 10000 /* At most one "queue full" line this often. */

/* A topic handle of the current rk, kept so that a produce names its topic
 * without librdkafka looking the name up under its handle's lock. */
struct topic_ref {
    char *name;
    rd_kafka_topic_t *rkt;
};

struct sl_kafka_producer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;     /* main queue: delivery reports, errors, stats */
    struct qwake wake;
    rd_kafka_conf_t *rconf;  /* a copy, for a replacement handle */
    rd_kafka_t *old;         /* replaced after a fatal error, torn down by fix */
    struct event *fix;       /* timer: tears old down, retries a replacement */
    char name[32];           /* metric label, e.g. "sink" */
    char fault[256];         /* why no working handle exists; "" while one does */
    sl_kafka_restart_fn *on_restart;
    void *restart_arg;
    size_t inflight;         /* produced, not yet reported */
    size_t queue_max;        /* librdkafka's queue.buffering.max.messages */
    struct topic_ref topics[PRODUCER_TOPICS]; /* handles of rk, made on first produce */
    size_t ntopics;
    bool up;                 /* a broker is reachable, as far as we know */
    bool closing;            /* destroy: reports free their op, call nothing */
    bool park;               /* park_when_full */
    struct parked *phead, **ptail; /* records the full queue refused, oldest first */
    int64_t park_logged;     /* monotonic ms of the last "queue full" line */
};

struct produce_op {
    sl_kafka_delivery_fn *cb;
    void *opaque;
};

/* A record the full queue refused, copied, waiting for room. */
struct parked {
    struct parked *next;
    struct produce_op *op;   /* NULL: no report wanted */
    char *topic;
    int32_t partition;
    int64_t ts_ms;
    bool has_key;
    size_t keylen, vallen, hlen;
    char *hname;             /* the header's name, NULL: none */
    char bytes[];            /* key, value, header value */
};

/* Produce reports and consumed records come and go with every record;
 * both are made and freed on the event loop's thread. */
static struct sl_pool op_pool = SL_POOL_INIT(struct produce_op, 4096);
static struct sl_pool record_pool = SL_POOL_INIT(struct sl_kafka_record, 4096);

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *arg);
static void unpark(struct sl_kafka_producer *p);
static void parked_drop(struct sl_kafka_producer *p);
static void producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *arg);

/* Queues the record of a report from a replaced handle on the current one,
 * with the same op: the record keeps its one callback. */
static int requeue(struct sl_kafka_producer *p, const rd_kafka_message_t *m,
                   struct produce_op *op) {
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t e;

    if (rd_kafka_message_headers((rd_kafka_message_t *)m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = rd_kafka_headers_copy(hdrs);
    else
        hdrs = NULL;
    e = rd_kafka_producev(p->rk,
            RD_KAFKA_V_TOPIC(rd_kafka_topic_name(m->rkt)),
            RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_VALUE(m->payload, m->len),
            RD_KAFKA_V_TIMESTAMP(rd_kafka_message_timestamp(m, NULL)),
            RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE(op),
            RD_KAFKA_V_END);
    if (e) {
        if (hdrs) rd_kafka_headers_destroy(hdrs);
        sl_log(SL_LOG_WARN, "kafka", "producer %s: cannot requeue a record for %s: %s",
               p->name, rd_kafka_topic_name(m->rkt), rd_kafka_err2str(e));
        return SL_ERR;
    }
    p->inflight++;
    sl_metrics_inc("sluice_kafka_producer_requeued_total", NULL, 1);
    return SL_OK;
}

/* ==================== Replacement after a fatal error ==================== */

/* Lets go of the topic handles of the current rk (before it is replaced or
 * destroyed: the handles belong to it). */
static void topics_drop(struct sl_kafka_producer *p) {
    for (size_t i = 0; i < p->ntopics; i++) {
        rd_kafka_topic_destroy(p->topics[i].rkt);
        free(p->topics[i].name);
    }
    p->ntopics = 0;
}

/* The handle of topic on the current rk, made on first use and kept while
 * the producer keeps fewer than PRODUCER_TOPICS (*own is then false); else a
 * handle of the caller's, to destroy after the produce (*own true). NULL
 * when librdkafka refuses the name. */
static rd_kafka_topic_t *topic_of(struct sl_kafka_producer *p, const char *topic, bool *own) {
    *own = false;
    for (size_t i = 0; i < p->ntopics; i++)
        if (!strcmp(p->topics[i].name, topic)) return p->topics[i].rkt;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, topic, NULL);
    if (!rkt || p->ntopics == PRODUCER_TOPICS) {
        *own = rkt != NULL;
        return rkt;
    }
    p->topics[p->ntopics].name = sl_strdup(topic);
    p->topics[p->ntopics++].rkt = rkt;
    return rkt;
}

/* Serves what a replaced handle still holds (its records come back purged
 * and are requeued on the current handle), then destroys it. Blocks for the
 * purge and the destroy: once per fatal error. */
static void producer_reap(struct sl_kafka_producer *p) {
    rd_kafka_t *old = p->old;
    int64_t end = sl_mono_ms() + 2000;
    if (!old) return;
    rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    while (rd_kafka_outq_len(old) > 0 && sl_mono_ms() < end) rd_kafka_poll(old, 10);
    rd_kafka_poll(old, 0);
    p->old = NULL;
    rd_kafka_destroy(old);
}

/* Replaces a handle that hit a fatal error (librdkafka's idempotent
 * producer cannot go on after one) with a new one built from the same
 * configuration. May run inside a poll of the failed handle: that handle is
 * only set aside here, and torn down from the loop by producer_fix. On
 * failure the failed handle stays, p->fault says why and fix retries in a
 * second. */
static void producer_restart(struct sl_kafka_producer *p) {
    char rerr[512], labels[64];
    struct timeval now = {0, 0}, later = {1, 0};
    rd_kafka_t *rk, *failed;
    rd_kafka_conf_t *rc;

    if (p->closing) return;
    rc = rd_kafka_conf_dup(p->rconf);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, rerr, sizeof(rerr));
    if (!rk) {
        rd_kafka_conf_destroy(rc);
        p->up = false;
        snprintf(p->fault, sizeof(p->fault), "Kafka producer %s failed and cannot be "
                 "replaced: %s", p->name, rerr);
        sl_log(SL_LOG_ERROR, "kafka", "%s; retrying in 1 s", p->fault);
        event_add(p->fix, &later);
        return;
    }
    /* rc is now owned, and freed, by rk. */
    topics_drop(p);
    rd_kafka_queue_io_event_enable(p->q, -1, NULL, 0);
    rd_kafka_queue_destroy(p->q);
    failed = p->rk;
    p->rk = rk;
    p->q = rd_kafka_queue_get_main(rk);
    rd_kafka_queue_io_event_enable(p->q, p->wake.fds[1], "1", 1);
    producer_reap(p);        /* an earlier failed handle, if any: its records come here */
    p->old = failed;
    p->fault[0] = '\0';
    p->up = true;
    snprintf(labels, sizeof(labels), "producer=\"%s\"", p->name);
    sl_metrics_inc("sluice_kafka_producer_restarts_total", labels, 1);
    sl_log(SL_LOG_WARN, "kafka", "producer %s replaced; records in flight are requeued",
           p->name);
    if (p->on_restart) p->on_restart(p->restart_arg, p);
    event_add(p->fix, &now);
}

static void producer_fix(evutil_socket_t fd, short what, void *arg) {
    struct sl_kafka_producer *p = arg;
    (void)fd; (void)what;
    if (p->old) producer_reap(p);
    if (p->fault[0]) producer_restart(p);
}

/* A report from the failed handle before its fatal error was served
 * restarts the producer too: whichever comes first replaces the handle. */
static bool report_from_failed(struct sl_kafka_producer *p, rd_kafka_t *rk) {
    if (rk != p->rk) return true;
    if (!rd_kafka_fatal_error(rk, NULL, 0)) return false;
    producer_error_cb(rk, RD_KAFKA_RESP_ERR__FATAL, "delivery failed", p);
    return rk != p->rk;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *arg) {
    struct sl_kafka_producer *p = arg;
    struct produce_op *op = m->_private;
    p->inflight--;
    if (!m->err) p->up = true;
    if (op && p->closing) {
        sl_pool_put(&op_pool, op);
    } else if (op) {
        if (m->err && report_from_failed(p, rk) && requeue(p, m, op) == SL_OK) return;
        if (m->err) op->cb(op->opaque, rd_kafka_err2str(m->err), m->partition, -1);
        else op->cb(op->opaque, NULL, m->partition, m->offset);
        sl_pool_put(&op_pool, op);
    }
}

static void producer_error_cb(rd_kafka_t *rk, int err, const char *reason,
                              void *arg) {
    struct sl_kafka_producer *p = arg;
    char why[512];
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        if (rk != p->rk || p->fault[0]) return;   /* already replaced or being retried */
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
        sl_log(SL_LOG_ERROR, "kafka", "producer %s: fatal error %s: %s; replacing the producer",
               p->name, rd_kafka_err2name(orig), why);
        producer_restart(p);
        return;
    }
    if (rk != p->rk) return;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) p->up = false;
    sl_log(SL_LOG_WARN, "kafka", "producer %s: %s", p->name, reason);
}

/* Statistics arrive every second; a broker in state UP means we are up. */
static int producer_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *arg) {
    struct sl_kafka_producer *p = arg;
    (void)len;
    if (rk == p->rk && !p->fault[0]) p->up = strstr(json, "\"state\":\"UP\"") != NULL;
    return 0;
}

static void producer_wake(evutil_socket_t fd, short what, void *arg) {
    struct sl_kafka_producer *p = arg;
    (void)fd; (void)what;
    qwake_drain_pipe(&p->wake);
    sl_metrics_inc("sluice_producer_wakeups_total", NULL, 1);
    while (rd_kafka_poll(p->rk, 0) > 0) {}
    unpark(p);
}

struct sl_kafka_producer *sl_kafka_producer_create(struct event_base *base,
        const struct sl_kafka_conf *conf, char *err, size_t errlen) {
    struct sl_kafka_producer *p = sl_calloc(1, sizeof(*p));
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    char rerr[512], linger[16], labels[64];

    snprintf(linger, sizeof(linger), "%d", conf->linger_ms > 0 ? conf->linger_ms : 2);
    snprintf(p->name, sizeof(p->name), "%s", conf->name ? conf->name : "producer");
    snprintf(labels, sizeof(labels), "producer=\"%s\"", p->name);
    sl_metrics_counter("sluice_kafka_producer_restarts_total", labels);   /* at 0 */
    p->up = true;
    p->park = conf->park_when_full;
    p->ptail = &p->phead;
    p->wake.fds[0] = p->wake.fds[1] = -1;
    if (conf_set(rc, "enable.idempotence", "true", err, errlen) ||
        conf_set(rc, "partitioner", "murmur2_random", err, errlen) ||
        conf_set(rc, "linger.ms", linger, err, errlen) ||
        conf_set(rc, "statistics.interval.ms", "1000", err, errlen) ||
        sl_kafka_conf_apply(rc, conf, err, errlen))
        goto fail;
    rd_kafka_conf_set_opaque(rc, p);
    char qmax[32];
    size_t qlen = sizeof(qmax);
    p->queue_max = rd_kafka_conf_get(rc, "queue.buffering.max.messages", qmax, &qlen) ==
                   RD_KAFKA_CONF_OK ? strtoul(qmax, NULL, 10) : 0;
    rd_kafka_conf_set_dr_msg_cb(rc, dr_msg_cb);
    rd_kafka_conf_set_error_cb(rc, producer_error_cb);
    rd_kafka_conf_set_stats_cb(rc, producer_stats_cb);
    rd_kafka_conf_set_log_cb(rc, log_cb);
    p->rconf = rd_kafka_conf_dup(rc);
    p->fix = evtimer_new(base, producer_fix, p);
    if (!p->fix) {
        sl_errf(err, errlen, "cannot create the producer's timer");
        goto fail;
    }
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, rerr, sizeof(rerr));
    if (!p->rk) {
        sl_errf(err, errlen, "kafka producer: %s", rerr);
        goto fail;
    }
    rc = NULL; /* Configuration is now owned, and freed, by the rd_kafka_t. */
    p->q = rd_kafka_queue_get_main(p->rk);
    if (qwake_open(&p->wake, base, p->q, producer_wake, p, err, errlen)) goto fail;
    return p;
fail:
    if (rc) rd_kafka_conf_destroy(rc);
    sl_kafka_producer_destroy(p);
    return NULL;
}

void sl_kafka_producer_destroy(struct sl_kafka_producer *p) {
    if (!p) return;
    parked_drop(p);
    if (p->rk) {
        p->closing = true;
        producer_reap(p);
        rd_kafka_flush(p->rk, 5000);
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        /* Reports still queued are served so their ops are freed. */
        while (rd_kafka_poll(p->rk, 0) > 0) {}
    }
    topics_drop(p);
    qwake_close(&p->wake, p->q);
    if (p->fix) event_free(p->fix);
    if (p->q) rd_kafka_queue_destroy(p->q);
    if (p->rk) rd_kafka_destroy(p->rk);
    if (p->rconf) rd_kafka_conf_destroy(p->rconf);
    free(p);
}

void sl_kafka_producer_on_restart(struct sl_kafka_producer *p, sl_kafka_restart_fn *fn,
                                  void *arg) {
    p->on_restart = fn;
    p->restart_arg = arg;
}

const char *sl_kafka_producer_fault(const struct sl_kafka_producer *p) {
    return p->fault[0] ? p->fault : NULL;
}

void sl_kafka_producer_warm(struct sl_kafka_producer *p, const char *topic) {
    /* A new topic object makes librdkafka look its leaders up now; the
     * object stays with the handle after the application's reference goes. */
    rd_kafka_topic_t *t = rd_kafka_topic_new(p->rk, topic, NULL);
    if (t) rd_kafka_topic_destroy(t);
}

int sl_kafka_produce(struct sl_kafka_producer *p, const char *topic,
                     int32_t partition, const void *key, size_t keylen,
                     const void *value, size_t vallen, int64_t ts_ms,
                     sl_kafka_delivery_fn *cb, void *opaque,
                     char *err, size_t errlen) {
    struct sl_kafka_header none = {0};
    return sl_kafka_produce_header(p, topic, partition, key, keylen, value, vallen, ts_ms,
                                   &none, cb, opaque, err, errlen);
}

/* Hands one record to librdkafka (which copies it). */
static rd_kafka_resp_err_t produce_now(struct sl_kafka_producer *p, const char *topic,
                                       int32_t partition, const void *key, size_t keylen,
                                       const void *value, size_t vallen, int64_t ts_ms,
                                       const struct sl_kafka_header *h, struct produce_op *op) {
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t e;
    if (h->name) {
        hdrs = rd_kafka_headers_new(1);
        rd_kafka_header_add(hdrs, h->name, -1, h->value, (ssize_t)h->len);
    }
    bool own;
    rd_kafka_topic_t *rkt = topic_of(p, topic, &own);
    if (!rkt) {
        e = rd_kafka_last_error();
    } else {
        e = rd_kafka_producev(p->rk,
                RD_KAFKA_V_RKT(rkt),
                RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_KEY(key, key ? keylen : 0),
                RD_KAFKA_V_VALUE((void *)value, vallen),
                RD_KAFKA_V_TIMESTAMP(ts_ms),
                RD_KAFKA_V_HEADERS(hdrs),
                RD_KAFKA_V_OPAQUE(op),
                RD_KAFKA_V_END);
        if (own) rd_kafka_topic_destroy(rkt);
    }
    if (e && hdrs) rd_kafka_headers_destroy(hdrs);   /* owned by the message only on success */
    return e;
}

/* Keeps a copy of a record the full queue refused, after the others. */
static void park(struct sl_kafka_producer *p, const char *topic, int32_t partition,
                 const void *key, size_t keylen, const void *value, size_t vallen,
                 int64_t ts_ms, const struct sl_kafka_header *h, struct produce_op *op) {
    keylen = key ? keylen : 0;
    size_t hlen = h->name ? h->len : 0;
    struct parked *k = sl_malloc(sizeof(*k) + keylen + vallen + hlen);
    *k = (struct parked){.op = op, .topic = sl_strdup(topic), .partition = partition,
                         .ts_ms = ts_ms ? ts_ms : sl_now_ms(), .has_key = key != NULL,
                         .keylen = keylen, .vallen = vallen, .hlen = hlen,
                         .hname = h->name ? sl_strdup(h->name) : NULL};
    if (keylen) memcpy(k->bytes, key, keylen);
    if (vallen) memcpy(k->bytes + keylen, value, vallen);
    if (hlen) memcpy(k->bytes + keylen + vallen, h->value, hlen);
    if (!p->phead) {
        p->ptail = &p->phead;
        int64_t now = sl_mono_ms();
        if (!p->park_logged || now - p->park_logged >= PRODUCER_PARK_LOG_MS) {
            p->park_logged = now;
            sl_log(SL_LOG_WARN, "kafka", "producer %s: queue full; records wait for the "
                   "broker's acknowledgements (sluice_kafka_producer_parked_total)", p->name);
        }
    }
    *p->ptail = k;
    p->ptail = &k->next;
    sl_metrics_inc("sluice_kafka_producer_parked_total", NULL, 1);
}

static void parked_free(struct parked *k) {
    free(k->topic);
    free(k->hname);
    free(k);
}

/* Sends the parked records, oldest first, while the queue takes them. A
 * record refused for another reason is reported failed to its op. */
static void unpark(struct sl_kafka_producer *p) {
    while (p->phead) {
        struct parked *k = p->phead;
        struct sl_kafka_header h = {k->hname, k->bytes + k->keylen + k->vallen, k->hlen};
        rd_kafka_resp_err_t e = produce_now(p, k->topic, k->partition,
                                            k->has_key ? k->bytes : NULL, k->keylen,
                                            k->bytes + k->keylen, k->vallen, k->ts_ms, &h, k->op);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) return;
        p->phead = k->next;
        if (e) {
            p->inflight--;
            if (k->op) {
                char why[SL_ERRLEN];
                snprintf(why, sizeof(why), "produce to %s: %s", k->topic, rd_kafka_err2str(e));
                k->op->cb(k->op->opaque, why, -1, -1);
                sl_pool_put(&op_pool, k->op);
            }
        }
        parked_free(k);
    }
}

/* destroy: the parked records are dropped, their ops freed uncalled. */
static void parked_drop(struct sl_kafka_producer *p) {
    while (p->phead) {
        struct parked *k = p->phead;
        p->phead = k->next;
        sl_pool_put(&op_pool, k->op);
        parked_free(k);
    }
}

int sl_kafka_produce_header(struct sl_kafka_producer *p, const char *topic,
                            int32_t partition, const void *key, size_t keylen,
                            const void *value, size_t vallen, int64_t ts_ms,
                            const struct sl_kafka_header *h, sl_kafka_delivery_fn *cb,
                            void *opaque, char *err, size_t errlen) {
    struct produce_op *op = NULL;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__QUEUE_FULL;

    if (cb) {
        op = sl_pool_get(&op_pool);
        op->cb = cb;
        op->opaque = opaque;
    }
    if (!p->phead)               /* parked records go first: they keep their order */
        e = produce_now(p, topic, partition, key, keylen, value, vallen, ts_ms, h, op);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && p->park) {
        park(p, topic, partition, key, keylen, value, vallen, ts_ms, h, op);
        e = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    if (e) {
        sl_pool_put(&op_pool, op);
        sl_errf(err, errlen, "produce to %s: %s", topic, rd_kafka_err2str(e));
        return SL_ERR;
    }
    p->inflight++;
    return SL_OK;
}

size_t sl_kafka_producer_max_bytes(struct sl_kafka_producer *p) {
    char v[32];
    size_t n = sizeof(v);
    if (rd_kafka_conf_get(rd_kafka_conf(p->rk), "message.max.bytes", v, &n) != RD_KAFKA_CONF_OK)
        return 1000000;
    return (size_t)strtoull(v, NULL, 10);
}

size_t sl_kafka_producer_inflight(const struct sl_kafka_producer *p) {
    return p->inflight;
}

bool sl_kafka_producer_full(const struct sl_kafka_producer *p) {
    return p->phead || (p->queue_max && p->inflight >= p->queue_max / 2);
}

bool sl_kafka_producer_up(const struct sl_kafka_producer *p) { return p->up; }

size_t sl_kafka_producer_flush(struct sl_kafka_producer *p, int timeout_ms) {
    int64_t end = sl_mono_ms() + timeout_ms;
    while (p->inflight > 0 && sl_mono_ms() < end) {
        if (p->old) producer_reap(p);   /* replaced meanwhile: its records come here */
        rd_kafka_poll(p->rk, 50);
        unpark(p);
    }
    return p->inflight;
}

struct rd_kafka_s *sl_kafka_producer_handle(struct sl_kafka_producer *p) {
    return p->rk;
}

/* ==================== Consumer ==================== */

struct sl_kafka_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;       /* consumer queue; the main queue forwards here */
    struct qwake wake;
    struct event *idle;        /* timer: polls a quiet queue (max.poll.interval.ms) */
    struct event *again;       /* zero timer: the next batch, after pending I/O */
    struct sl_kafka_consumer_conf conf;
    char **topics;             /* conf.topics, copied: records' topic names */
    bool paused;
    bool held;                 /* records are not taken from the queue */
    struct store *stores;      /* positions to store, by partition (store_flush) */
    size_t nstores, capstores, ndirty;
};

/* A partition's position given to sl_kafka_consumer_store, handed to
 * librdkafka by store_flush: one list and one call a batch of records,
 * not one a record. */
struct store {
    char *topic;               /* owned */
    int32_t partition;
    int64_t offset;
    bool dirty;                /* not handed to librdkafka yet */
};

/* Hands the positions stored since the last flush to librdkafka, which
 * commits them (auto commit, sl_kafka_consumer_commit, a revoke). */
static int store_flush(struct sl_kafka_consumer *c) {
    if (!c->ndirty) return SL_OK;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->ndirty);
    for (size_t i = 0; i < c->nstores; i++) {
        struct store *st = &c->stores[i];
        if (!st->dirty) continue;
        rd_kafka_topic_partition_list_add(l, st->topic, st->partition)->offset = st->offset;
        st->dirty = false;
    }
    c->ndirty = 0;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
    for (int i = 0; e && i < l->cnt; i++)
        if (l->elems[i].err)
            sl_log(SL_LOG_WARN, "kafka", "cannot store offset %lld of %s [%d]: %s",
                   (long long)l->elems[i].offset, l->elems[i].topic, l->elems[i].partition,
                   rd_kafka_err2str(l->elems[i].err));
    rd_kafka_topic_partition_list_destroy(l);
    return e ? SL_ERR : SL_OK;
}

/* Forgets the positions of the partitions in parts (revoked: stored and
 * committed already, or another consumer's to store now). */
static void store_forget(struct sl_kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts) {
    for (size_t i = 0; i < c->nstores;) {
        struct store *st = &c->stores[i];
        if (!rd_kafka_topic_partition_list_find(parts, st->topic, st->partition)) {
            i++;
            continue;
        }
        if (st->dirty) c->ndirty--;
        free(st->topic);
        *st = c->stores[--c->nstores];
    }
}

static void pause_assigned(struct sl_kafka_consumer *c, bool pause) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) || !parts) return;
    if (parts->cnt > 0) {
        if (pause) rd_kafka_pause_partitions(c->rk, parts);
        else rd_kafka_resume_partitions(c->rk, parts);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *arg) {
    struct sl_kafka_consumer *c = arg;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        sl_log(SL_LOG_INFO, "kafka", "assigned %d partition(s)", parts->cnt);
        if (c->conf.on_rebalance) c->conf.on_rebalance(c->conf.arg, true, parts);
        rd_kafka_assign(rk, parts);
        if (c->paused && parts->cnt > 0) rd_kafka_pause_partitions(rk, parts);
    } else {
        sl_log(SL_LOG_INFO, "kafka", "revoking %d partition(s)", parts->cnt);
        if (c->conf.on_rebalance) c->conf.on_rebalance(c->conf.arg, false, parts);
        store_flush(c);
        rd_kafka_commit(rk, NULL, 0);
        store_forget(c, parts);
        rd_kafka_assign(rk, NULL);
    }
}

/* Counts commits by result in sluice_commits_total (nothing to commit is
 * not a commit). */
static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                      rd_kafka_topic_partition_list_t *offsets, void *arg) {
    (void)rk; (void)offsets; (void)arg;
    if (e == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    sl_metrics_inc("sluice_commits_total", e ? "result=\"error\"" : "result=\"ok\"", 1);
    if (e) sl_log(SL_LOG_WARN, "kafka", "commit failed: %s", rd_kafka_err2str(e));
}

static void consumer_error(struct sl_kafka_consumer *c, rd_kafka_message_t *m) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (c->conf.on_eof)
            c->conf.on_eof(c->conf.arg, rd_kafka_topic_name(m->rkt), m->partition);
        return;
    }
    sl_log(SL_LOG_WARN, "kafka", "consumer: %s", rd_kafka_message_errstr(m));
}

/* Runs consumer_drain on the next loop iteration, after the sockets that
 * are ready: the loop polls with a zero timeout while the timer is due. */
static void consumer_rearm(struct sl_kafka_consumer *c) {
    static const struct timeval now = {0, 0};
    event_add(c->again, &now);
}

/* The record's topic name: the consumer's own copy when it names one of
 * its topics, which outlives the message (sl_kafka_record_release). */
static const char *topic_name(const struct sl_kafka_consumer *c, rd_kafka_topic_t *rkt) {
    const char *t = rd_kafka_topic_name(rkt);
    for (size_t i = 0; i < c->conf.ntopics; i++)
        if (!strcmp(c->topics[i], t)) return c->topics[i];
    return t;
}

/* Serves the consumer queue: up to one batch of records and events. */
static void consumer_drain(struct sl_kafka_consumer *c) {
    size_t n = 0, batch = c->conf.batch ? c->conf.batch : SL_KAFKA_DRAIN_MAX;

    while (n < batch) {
        if (c->held) break;       /* sl_kafka_consumer_hold(false) wakes us */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);
        if (!m) break;            /* empty: the next non-empty write wakes us */
        n++;
        if (m->err) {
            consumer_error(c, m);
            rd_kafka_message_destroy(m);
            continue;
        }
        struct sl_kafka_record *rec = sl_pool_get(&record_pool);
        rd_kafka_timestamp_type_t tstype;
        rec->topic = topic_name(c, m->rkt);
        rec->partition = m->partition;
        rec->offset = m->offset;
        rec->timestamp = rd_kafka_message_timestamp(m, &tstype);
        rec->key = m->key;
        rec->keylen = m->key_len;
        rec->value = m->payload;
        rec->len = m->len;
        rec->msg = m;
        c->conf.on_record(c->conf.arg, rec);   /* rec is now owned by the callee */
    }
    store_flush(c);
    /* Stopped early for fairness: the queue may still hold records and will
     * not write to the pipe again, so wake ourselves once the loop has
     * served what else is ready. */
    if (n == batch) consumer_rearm(c);
}

static void consumer_wake(evutil_socket_t fd, short what, void *arg) {
    struct sl_kafka_consumer *c = arg;
    (void)fd; (void)what;
    qwake_drain_pipe(&c->wake);
    sl_metrics_inc("sluice_consumer_wakeups_total", NULL, 1);
    consumer_drain(c);
}

static void consumer_again(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    consumer_drain(arg);
}

/* The group counts only polls: a queue that stays empty never wakes the
 * loop, and past max.poll.interval.ms librdkafka would leave the group. A
 * held consumer is not polled (that would take records); a hold turns into
 * a pause long before the interval. */
static void consumer_idle(evutil_socket_t fd, short what, void *arg) {
    struct sl_kafka_consumer *c = arg;
    (void)fd; (void)what;
    if (!c->held) consumer_drain(c);
}

void sl_kafka_record_release(struct sl_kafka_record *rec) {
    if (!rec || !rec->msg) return;
    rd_kafka_message_destroy(rec->msg);
    rec->msg = NULL;
    rec->key = rec->value = NULL;
    rec->keylen = rec->len = 0;
}

void sl_kafka_record_free(struct sl_kafka_record *rec) {
    if (!rec) return;
    if (rec->msg) rd_kafka_message_destroy(rec->msg);
    sl_pool_put(&record_pool, rec);
}

struct sl_kafka_consumer *sl_kafka_consumer_create(struct event_base *base,
        const struct sl_kafka_consumer_conf *conf, char *err, size_t errlen) {
    struct sl_kafka_consumer *c = sl_calloc(1, sizeof(*c));
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *topics = NULL;
    rd_kafka_resp_err_t e;
    char rerr[512];

    if (!conf->on_record || !conf->group || conf->ntopics == 0) {
        sl_errf(err, errlen, "consumer needs a group, topics and a record handler");
        goto fail;
    }
    c->conf = *conf;
    c->topics = sl_calloc(conf->ntopics, sizeof(*c->topics));
    for (size_t i = 0; i < conf->ntopics; i++) c->topics[i] = sl_strdup(conf->topics[i]);
    c->wake.fds[0] = c->wake.fds[1] = -1;
    if (conf_set(rc, "group.id", conf->group, err, errlen) ||
        conf_set(rc, "enable.auto.offset.store", "false", err, errlen) ||
        conf_set(rc, "enable.auto.commit", "true", err, errlen) ||
        conf_set(rc, "auto.commit.interval.ms", "1000", err, errlen) ||
        conf_set(rc, "auto.offset.reset", "earliest", err, errlen) ||
        conf_set(rc, "queued.max.messages.kbytes", "262144", err, errlen) ||
        /* A worker killed with -9 holds its partitions until the session
         * times out: 10 s, not librdkafka's 45 s, before a restart resumes. */
        conf_set(rc, "session.timeout.ms", "10000", err, errlen) ||
        conf_set(rc, "heartbeat.interval.ms", "2000", err, errlen) ||
        sl_kafka_conf_apply(rc, &conf->kafka, err, errlen))
        goto fail;
    rd_kafka_conf_set_opaque(rc, c);
    rd_kafka_conf_set_rebalance_cb(rc, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(rc, commit_cb);
    sl_metrics_counter("sluice_commits_total", "result=\"ok\"");      /* at 0 */
    rd_kafka_conf_set_log_cb(rc, log_cb);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, rerr, sizeof(rerr));
    if (!c->rk) {
        sl_errf(err, errlen, "kafka consumer: %s", rerr);
        goto fail;
    }
    rc = NULL; /* Configuration is now owned, and freed, by the rd_kafka_t. */
    rd_kafka_poll_set_consumer(c->rk);
    c->q = rd_kafka_queue_get_consumer(c->rk);
    if (qwake_open(&c->wake, base, c->q, consumer_wake, c, err, errlen)) goto fail;

    topics = rd_kafka_topic_partition_list_new((int)conf->ntopics);
    for (size_t i = 0; i < conf->ntopics; i++)
        rd_kafka_topic_partition_list_add(topics, conf->topics[i], RD_KAFKA_PARTITION_UA);
    e = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        sl_errf(err, errlen, "subscribe: %s", rd_kafka_err2str(e));
        goto fail;
    }
    c->idle = event_new(base, -1, EV_PERSIST, consumer_idle, c);
    struct timeval tv = {SL_KAFKA_IDLE_POLL_MS / 1000, (SL_KAFKA_IDLE_POLL_MS % 1000) * 1000};
    if (!c->idle || event_add(c->idle, &tv)) {
        sl_errf(err, errlen, "cannot add the consumer's poll timer to the loop");
        goto fail;
    }
    c->again = evtimer_new(base, consumer_again, c);
    if (!c->again) {
        sl_errf(err, errlen, "cannot create the consumer's timer");
        goto fail;
    }
    /* Records may already be queued before the first pipe write. */
    consumer_rearm(c);
    return c;
fail:
    if (rc) rd_kafka_conf_destroy(rc);
    sl_kafka_consumer_destroy(c);
    return NULL;
}

void sl_kafka_consumer_destroy(struct sl_kafka_consumer *c) {
    if (!c) return;
    if (c->idle) event_free(c->idle);
    if (c->again) event_free(c->again);
    qwake_close(&c->wake, c->q);
    if (c->rk) store_flush(c);              /* closing commits what is stored */
    if (c->rk) rd_kafka_consumer_close(c->rk);
    if (c->q) rd_kafka_queue_destroy(c->q);
    if (c->rk) rd_kafka_destroy(c->rk);
    for (size_t i = 0; c->topics && i < c->conf.ntopics; i++) free(c->topics[i]);
    free(c->topics);
    for (size_t i = 0; i < c->nstores; i++) free(c->stores[i].topic);
    free(c->stores);
    free(c);
}

void sl_kafka_consumer_store(struct sl_kafka_consumer *c, const char *topic,
                             int32_t partition, int64_t next_offset) {
    struct store *st = NULL;
    for (size_t i = 0; i < c->nstores && !st; i++)
        if (c->stores[i].partition == partition && !strcmp(c->stores[i].topic, topic))
            st = &c->stores[i];
    if (!st) {
        if (c->nstores == c->capstores) {
            c->capstores = c->capstores ? 2 * c->capstores : 8;
            c->stores = sl_realloc(c->stores, c->capstores * sizeof(*c->stores));
        }
        st = &c->stores[c->nstores++];
        *st = (struct store){.topic = sl_strdup(topic), .partition = partition};
    }
    if (!st->dirty) c->ndirty++;
    st->dirty = true;
    st->offset = next_offset;
}

int sl_kafka_consumer_store_flush(struct sl_kafka_consumer *c) { return store_flush(c); }

int sl_kafka_consumer_commit(struct sl_kafka_consumer *c, bool sync) {
    store_flush(c);
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, NULL, sync ? 0 : 1);
    return (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) ? SL_ERR : SL_OK;
}

void sl_kafka_consumer_pause(struct sl_kafka_consumer *c, bool pause) {
    if (c->paused == pause) return;
    c->paused = pause;
    pause_assigned(c, pause);
}

void sl_kafka_consumer_hold(struct sl_kafka_consumer *c, bool hold) {
    if (c->held == hold) return;
    c->held = hold;
    if (!hold) consumer_rearm(c);
}

bool sl_kafka_consumer_held(const struct sl_kafka_consumer *c) { return c->held; }

bool sl_kafka_consumer_paused(const struct sl_kafka_consumer *c) {
    return c->paused;
}

struct rd_kafka_s *sl_kafka_consumer_handle(struct sl_kafka_consumer *c) {
    return c->rk;
}

int sl_kafka_consumer_partitions(struct sl_kafka_consumer *c, sl_kafka_partition_fn *fn,
                                 void *arg) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    int n;
    if (rd_kafka_assignment(c->rk, &parts) || !parts) return 0;
    rd_kafka_position(c->rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi)) hi = -1;
        fn(arg, p->topic, p->partition, p->offset >= 0 ? p->offset : -1, hi);
    }
    n = parts->cnt;
    rd_kafka_topic_partition_list_destroy(parts);
    return n;
}
