/* worker.c -- the `sluice run` loop (see worker.h). */
#define _GNU_SOURCE
#include "worker.h"
#include "admin.h"
#include "broker.h"
#include "canary.h"
#include "collector.h"
#include "config.h"
#include "json.h"
#include "kafka.h"
#include "metrics.h"
#include "offsets.h"
#include "pipeline.h"
#include "recs.h"
#include "rules.h"
#include "sl.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#define SL_WORKER_TICK_MS 100 /* Period of the housekeeping timer. */
#define SL_WORKER_PAUSE_AFTER_MS 5000 /* A hold this long becomes a partition pause. */
#define SL_WORKER_RESTORE_SLACK_MS 60000 /* Restore this much more than a window length. */
#define SL_WORKER_KAFKA_TIMEOUT_MS 10000 /* Bound on the blocking offset lookups of a rebalance. */
#define SL_WORKER_SINK_LINGER_MS 5    /* Sinks batch: a few ms, as librdkafka does by default. */
#define SL_WORKER_COLLECTOR_LINGER_MS 1 /* The collector's tracker waits for the ack. */

struct worker {
    struct sl_config *cf;
    struct event_base *base;
    struct sl_broker *broker;            /* embedded only */
    struct sl_kafka_producer *producer;  /* sinks and dead letters */
    struct sl_kafka_producer *cproducer; /* the collector's, tuned for latency */
    struct sl_kafka_consumer *consumer;
    struct sl_pipeline *pipeline;
    struct sl_offsets *offsets;
    struct sl_admin *admin;
    struct sl_collector *collector;
    struct sl_recs *recs;                /* the store step's store, or NULL */
    struct event *sighup, *sigterm, *sigint, *tick;
    char brokers[1024];                  /* the bootstrap list in use */
    int stopping;                        /* 1 once SIGTERM/SIGINT arrived */
    int64_t held_since;                  /* monotonic ms the consumer was held */
    int64_t stop_deadline;               /* monotonic ms */
    int status;                          /* exit status */
    struct sl_rules_poison *poison;      /* records the watchdog stopped earlier runs in */
    size_t npoison;
    struct restoring *restoring;         /* partitions rebuilding their windows */
    struct sl_kafka_prop *cprops, *pprops; /* kafka.properties + consumer / producer */
    unsigned ticks;
    int64_t rules_loaded_at;             /* wall ms the running rules loaded */
    unsigned reloads, reload_errors;     /* SIGHUPs that swapped / kept the rules */
    unsigned reload_refusals;            /* ...that the config or the canary refused */
    struct sl_canary *canary;            /* the last input records, for a reload */
    char reload_error[SL_ERRLEN];        /* the last failed reload's error */
};

/* A partition being restored: records below `until` (the committed offset)
 * rebuild window state and are not emitted again. */
struct restoring {
    char *topic;
    int32_t partition;
    int64_t until;
    struct restoring *next;
};

/* A consumed record in the pipeline. */
struct inrec {
    struct sl_input in;
    struct sl_kafka_record *krec;
    struct sl_rules_poison *poisoned;    /* its entry when it is being dead-lettered */
};

static struct sl_pool inrec_pool = SL_POOL_INIT(struct inrec, 4096);

/* ==================== Records ==================== */

/* Back-pressure: at max_inflight records in flight, or while a step is busy
 * (an HTTP endpoint's queue is full), the consumer is held (no record is
 * taken from its queue); past SL_WORKER_PAUSE_AFTER_MS the partitions are
 * paused, so the group still sees us poll. Both end once half the records in
 * flight are done and no step is busy. */
static void maybe_resume(struct worker *w) {
    if (!w->consumer || w->stopping ||
        sl_pipeline_inflight(w->pipeline) > w->cf->max_inflight / 2 ||
        sl_pipeline_busy(w->pipeline))
        return;
    if (sl_kafka_consumer_paused(w->consumer)) sl_kafka_consumer_pause(w->consumer, false);
    sl_kafka_consumer_hold(w->consumer, false);
}

static void check_hold(struct worker *w) {
    if (w->consumer && sl_kafka_consumer_held(w->consumer) &&
        !sl_kafka_consumer_paused(w->consumer) &&
        sl_mono_ms() - w->held_since > SL_WORKER_PAUSE_AFTER_MS) {
        sl_log(SL_LOG_WARN, "worker", "%zu records in flight for %d ms: pausing the "
               "partitions until they drain", sl_pipeline_inflight(w->pipeline),
               SL_WORKER_PAUSE_AFTER_MS);
        sl_kafka_consumer_pause(w->consumer, true);
        sl_kafka_consumer_hold(w->consumer, false);
    }
}

static void on_done(void *arg, struct sl_input *in) {
    struct worker *w = arg;
    struct inrec *r = in->owner;
    int64_t pos = in->restore ? -1 :
                  sl_offsets_done(w->offsets, in->topic, in->partition, in->offset);
    if (pos >= 0) sl_kafka_consumer_store(w->consumer, in->topic, in->partition, pos);
    if (r->poisoned) {
        r->poisoned->dead_lettered = true;   /* never dead-lettered twice */
        if (sl_rules_poison_save(w->cf, w->poison, w->npoison))
            sl_log(SL_LOG_WARN, "worker", "cannot update the watchdog's file in %s",
                   w->cf->rules.state_dir);
    }
    sl_kafka_record_free(r->krec);
    sl_pool_put(&inrec_pool, r);
    maybe_resume(w);
}

/* The record waits only for its sink's acknowledgement: its message goes
 * back to librdkafka now (the pipeline clears in's key and value). */
static void on_spent(void *arg, struct sl_input *in) {
    struct inrec *r = in->owner;
    (void)arg;
    sl_kafka_record_release(r->krec);
}

static void on_drop(void *arg, struct sl_input *in) {
    struct inrec *r = in->owner;
    (void)arg;
    sl_kafka_record_free(r->krec);
    sl_pool_put(&inrec_pool, r);
}

static void on_fatal(void *arg, const char *why) {
    struct worker *w = arg;
    sl_log(SL_LOG_ERROR, "worker", "%s; stopping without committing what is in flight", why);
    w->status = 1;
    event_base_loopbreak(w->base);
}

static struct restoring **restoring_find(struct worker *w, const char *topic, int32_t partition) {
    struct restoring **pp = &w->restoring;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->partition == partition && !strcmp((*pp)->topic, topic)) break;
    return pp;
}

/* Ends the restore of a partition: done, or given up (revoked). */
static void restoring_drop(struct worker *w, const char *topic, int32_t partition, bool done) {
    struct restoring **pp = restoring_find(w, topic, partition);
    if (!*pp) return;
    struct restoring *r = *pp;
    *pp = r->next;
    sl_log(SL_LOG_INFO, "worker", "%s/%d: %s", topic, partition,
           done ? "window state restored" : "revoked while restoring window state");
    free(r->topic);
    free(r);
}

/* Is this record one that only rebuilds window state? Records older than
 * the window are skipped altogether (*skip); *last: the restore of its
 * partition ends with it. */
static bool restore_record(struct worker *w, struct sl_kafka_record *k, bool *skip,
                           bool *last) {
    struct restoring **pp;
    int64_t len;
    *skip = *last = false;
    if (!w->restoring) return false;
    pp = restoring_find(w, k->topic, k->partition);
    if (!*pp) return false;
    if (k->offset >= (*pp)->until) {
        restoring_drop(w, k->topic, k->partition, true);
        return false;
    }
    *last = k->offset + 1 >= (*pp)->until;
    sl_pipeline_has_window(w->pipeline, &len);
    *skip = k->timestamp >= 0 && k->timestamp < sl_now_ms() - len - SL_WORKER_RESTORE_SLACK_MS;
    return true;
}

/* The watchdog's entry of this record, if an earlier process was stopped
 * in it. */
static struct sl_rules_poison *poisoned(const struct worker *w, const struct sl_kafka_record *k) {
    char what[256];
    if (!w->npoison) return NULL;
    snprintf(what, sizeof(what), "%s/%d/%lld", k->topic, k->partition, (long long)k->offset);
    for (size_t i = 0; i < w->npoison; i++)
        if (!strcmp(what, w->poison[i].what)) return &w->poison[i];
    return NULL;
}

/* The pipeline input for a consumed record; owns k. */
static struct inrec *inrec_new(struct sl_kafka_record *k, bool restore) {
    struct inrec *r = sl_pool_get(&inrec_pool);
    r->krec = k;
    r->in = (struct sl_input){
        .topic = k->topic, .partition = k->partition, .offset = k->offset,
        .timestamp = k->timestamp, .key = k->key, .keylen = k->keylen,
        .value = k->value, .len = k->len, .owner = r, .restore = restore,
    };
    return r;
}

static void restore_record_done(struct worker *w, struct sl_kafka_record *k, bool skip,
                                const struct sl_rules_poison *poison, bool last);

static void on_record(void *arg, struct sl_kafka_record *k) {
    struct worker *w = arg;
    bool skip, last, restore = restore_record(w, k, &skip, &last);
    struct sl_rules_poison *poison = poisoned(w, k);

    if (restore) {
        restore_record_done(w, k, skip, poison, last);
        return;
    }

    struct inrec *r = inrec_new(k, false);
    sl_offsets_track(w->offsets, k->topic, k->partition, k->offset);
    if (poison && poison->dead_lettered) {
        /* Dead-lettered by an earlier run that ended before committing. */
        sl_log(SL_LOG_INFO, "worker", "%s was dead-lettered already; skipped", poison->what);
        on_done(w, &r->in);
        return;
    }
    if (poison) {
        char why[512];
        r->poisoned = poison;
        snprintf(why, sizeof(why), "step %s ran past rules.watchdog (%lld ms) on this "
                 "record and the process was restarted", poison->step,
                 (long long)w->cf->rules.watchdog_ms);
        sl_log(SL_LOG_WARN, "worker", "dead-lettering %s: %s", poison->what, why);
        sl_pipeline_reject(w->pipeline, &r->in, poison->step, why);
        return;
    }
    sl_canary_keep(w->canary, &r->in);
    sl_pipeline_push(w->pipeline, &r->in);
    if ((sl_pipeline_inflight(w->pipeline) >= w->cf->max_inflight ||
         sl_pipeline_busy(w->pipeline)) && !w->stopping &&
        !sl_kafka_consumer_paused(w->consumer) && !sl_kafka_consumer_held(w->consumer)) {
        sl_kafka_consumer_hold(w->consumer, true);
        w->held_since = sl_mono_ms();
    }
}

/* Runs a restore record (skipped when too old or poisoned); the restore of
 * its partition is over once its last record ran. */
static void restore_record_done(struct worker *w, struct sl_kafka_record *k, bool skip,
                                const struct sl_rules_poison *poison, bool last) {
    char topic[256];
    int32_t partition = k->partition;

    snprintf(topic, sizeof(topic), "%s", k->topic);
    if (poison) {
        /* Processed before the watchdog stopped a later run in it: skip. */
        sl_metrics_inc("sluice_restore_skipped_total", "reason=\"watchdog\"", 1);
        sl_log(SL_LOG_WARN, "worker", "restore: skipping %s, which step %s could not finish "
               "in an earlier run", poison->what, poison->step);
    }
    if (skip || poison) {
        sl_kafka_record_free(k);
    } else {
        struct inrec *r = inrec_new(k, true);   /* k now owned by r, freed when done */
        sl_metrics_inc("sluice_restored_records_total", NULL, 1);
        sl_pipeline_push(w->pipeline, &r->in);
    }
    if (last) restoring_drop(w, topic, partition, true);
}

/* A partition given to this worker starts where its window state begins:
 * one window length (plus slack) before the committed offset, found by
 * timestamp lookup, or the earliest retained offset where the broker cannot
 * look up times. Records up to the committed offset only rebuild windows. */
static void plan_restore(struct worker *w, rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_t *rk = sl_kafka_consumer_handle(w->consumer);
    int64_t len, since;
    if (!sl_pipeline_has_window(w->pipeline, &len) || parts->cnt == 0) return;
    since = sl_now_ms() - len - SL_WORKER_RESTORE_SLACK_MS;
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_topic_partition_list_t *times = rd_kafka_topic_partition_list_copy(parts);
    if (rd_kafka_committed(rk, committed, SL_WORKER_KAFKA_TIMEOUT_MS)) {
        sl_log(SL_LOG_WARN, "worker", "cannot read committed offsets: windows start empty");
        goto done;
    }
    for (int i = 0; i < times->cnt; i++) times->elems[i].offset = since;
    rd_kafka_resp_err_t terr = rd_kafka_offsets_for_times(rk, times, SL_WORKER_KAFKA_TIMEOUT_MS);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t until = committed->elems[i].offset, start = -1, lo, hi;
        if (until < 0) continue;            /* never committed: read from the start */
        if (!terr && !times->elems[i].err && times->elems[i].offset >= 0)
            start = times->elems[i].offset;
        else if (!rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi,
                                                   SL_WORKER_KAFKA_TIMEOUT_MS))
            start = lo;                     /* no timestamp lookup: from the earliest */
        if (start < 0 || start >= until) continue;
        p->offset = start;
        struct restoring *r = sl_calloc(1, sizeof(*r));
        r->topic = sl_strdup(p->topic);
        r->partition = p->partition;
        r->until = until;
        r->next = w->restoring;
        w->restoring = r;
        sl_log(SL_LOG_INFO, "worker", "%s/%d: restoring window state from offset %lld "
               "(%s) up to the committed %lld", p->topic, p->partition, (long long)start,
               start == times->elems[i].offset ? "by time" : "earliest", (long long)until);
    }
done:
    rd_kafka_topic_partition_list_destroy(committed);
    rd_kafka_topic_partition_list_destroy(times);
}

static void on_rebalance(void *arg, bool assigned, void *parts_) {
    struct worker *w = arg;
    rd_kafka_topic_partition_list_t *parts = parts_;
    if (assigned) {
        if (w->pipeline) plan_restore(w, parts);
        return;
    }
    /* Let what is in flight reach its sinks, so its offsets are stored
     * before the consumer commits and hands the partitions over. */
    if (w->pipeline && sl_kafka_producer_flush(w->producer, (int)w->cf->shutdown_ms) > 0)
        sl_log(SL_LOG_WARN, "worker", "revoke: records still in flight; the next owner "
               "will process them again");
    for (int i = 0; i < parts->cnt; i++) {
        sl_offsets_drop(w->offsets, parts->elems[i].topic, parts->elems[i].partition);
        char labels[320];    /* its lag is now another worker's to report */
        snprintf(labels, sizeof(labels), "topic=\"%s\",partition=\"%d\"",
                 parts->elems[i].topic, (int)parts->elems[i].partition);
        sl_metrics_set("sluice_consumer_lag", labels, 0);
        if (w->pipeline)     /* NULL when the consumer leaves the group at exit */
            sl_pipeline_drop_partition(w->pipeline, parts->elems[i].topic,
                                       parts->elems[i].partition);
        restoring_drop(w, parts->elems[i].topic, parts->elems[i].partition, false);
    }
}

/* ==================== Signals ==================== */

/* Counts and keeps a failed part of a reload. */
static void reload_failed(struct worker *w, const char *err) {
    sl_metrics_inc("sluice_reloads_total", "result=\"error\"", 1);
    w->reload_errors++;
    snprintf(w->reload_error, sizeof(w->reload_error), "%s", err);
}

/* Counts and keeps a reload refused: the new config needs a restart, or
 * the new rules failed their canary. */
static void reload_refused(struct worker *w, const char *why) {
    sl_metrics_inc("sluice_reloads_total", "result=\"refused\"", 1);
    w->reload_refusals++;
    snprintf(w->reload_error, sizeof(w->reload_error), "refused: %s", why);
    sl_log(SL_LOG_ERROR, "worker", "reload refused: %s; rules version %s and the config in "
           "use keep running", why, sl_pipeline_version(w->pipeline));
}

/* The new config and rules of a reload, checked: the config needs no
 * restart, the rules load and pass their canary. A config that no longer
 * loads (a step's file is bad, which the file reload reported already when
 * files_failed) is logged and the rules reload with the config in use. NULL
 * when refused or failed (counted and logged); else the rules, which own
 * their config when it is a new one. */
static struct sl_rules *reload_rules(struct worker *w, bool files_failed) {
    char err[SL_ERRLEN], key[SL_CONFIG_PATHLEN + 64];
    struct sl_canary_verdict v;
    struct sl_config *cf = sl_config_load(w->cf->file, err, sizeof(err));
    struct sl_rules *r = NULL;
    if (!cf) {
        if (!files_failed) reload_failed(w, err);
        sl_log(SL_LOG_ERROR, "worker", "reload: the config does not load, so its changes are "
               "not applied; the rules reload with the config in use: %s", err);
        cf = w->cf;
    } else if (sl_config_needs_restart(w->cf, cf, key, sizeof(key))) {
        snprintf(err, sizeof(err), "%s (needs a restart)", key);
        reload_refused(w, err);
        sl_config_destroy(cf);
        return NULL;
    }
    r = sl_rules_create(cf, err, sizeof(err));
    if (!r) {
        reload_failed(w, err);
        sl_log(SL_LOG_ERROR, "worker", "reload failed, keeping rules version %s: %s",
               sl_pipeline_version(w->pipeline), err);
        if (cf != w->cf) sl_config_destroy(cf);
        return NULL;
    }
    if (cf != w->cf) sl_rules_own_config(r, cf);   /* cf now lives as long as r */
    if (sl_canary_judge(w->canary, cf->rules.canary, sl_pipeline_rules(w->pipeline), r, cf,
                        &v, err, sizeof(err))) {
        reload_refused(w, err);
        sl_rules_release(r);
        return NULL;
    }
    if (v.refused) {
        reload_refused(w, v.summary);
        sl_rules_release(r);
        return NULL;
    }
    sl_log(SL_LOG_INFO, "worker", "canary: %s", v.summary);
    return r;
}

/* SIGHUP: the steps' files (a built-in model), then the config and the
 * rules; a part that fails keeps what it had, the other still swaps. */
static void on_sighup(evutil_socket_t sig, short what, void *arg) {
    struct worker *w = arg;
    char err[SL_ERRLEN];
    (void)sig; (void)what;
    if (!w->pipeline) return;
    bool files_failed = sl_pipeline_reload_files(w->pipeline, err, sizeof(err)) != SL_OK;
    if (files_failed) {
        reload_failed(w, err);
        sl_log(SL_LOG_ERROR, "worker", "reload failed: %s", err);
    }
    struct sl_rules *r = reload_rules(w, files_failed);
    if (!r) return;
    char old[17];
    snprintf(old, sizeof(old), "%s", sl_pipeline_version(w->pipeline));
    sl_pipeline_swap_rules(w->pipeline, r);
    sl_metrics_inc("sluice_reloads_total", "result=\"ok\"", 1);
    w->reloads++;
    w->rules_loaded_at = sl_now_ms();
    sl_log(SL_LOG_INFO, "worker", "rules reloaded: version %s (was %s)",
           sl_pipeline_version(w->pipeline), old);
}

static void on_stop(evutil_socket_t sig, short what, void *arg) {
    struct worker *w = arg;
    (void)what;
    if (w->stopping) {
        sl_log(SL_LOG_WARN, "worker", "second signal: stopping now");
        event_base_loopbreak(w->base);
        return;
    }
    sl_log(SL_LOG_INFO, "worker", "signal %d: stopping; finishing records in flight",
           (int)sig);
    w->stopping = 1;
    w->stop_deadline = sl_mono_ms() + w->cf->shutdown_ms;
    if (w->consumer) sl_kafka_consumer_pause(w->consumer, true);
    if (w->collector) sl_collector_stop_accepting(w->collector);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    struct worker *w = arg;
    (void)fd; (void)what;
    check_hold(w);
    if (w->consumer && (sl_kafka_consumer_held(w->consumer) || sl_kafka_consumer_paused(w->consumer)))
        maybe_resume(w);
    /* Positions of records done at a sink's acknowledgement, between the
     * consumer's batches (which hand theirs over themselves). */
    if (w->consumer) sl_kafka_consumer_store_flush(w->consumer);
    sl_log_flush(0);
    if (w->pipeline && ++w->ticks % (1000 / SL_WORKER_TICK_MS) == 0) {
        sl_pipeline_tick(w->pipeline);
        sl_recs_tick(w->recs);
    }
    if (!w->stopping) return;
    size_t left = (w->pipeline ? sl_pipeline_inflight(w->pipeline) : 0) +
                  (w->collector ? sl_collector_pending(w->collector) : 0) +
                  sl_kafka_producer_inflight(w->producer) +
                  (w->cproducer ? sl_kafka_producer_inflight(w->cproducer) : 0);
    if (left == 0 || sl_mono_ms() > w->stop_deadline) {
        if (left) sl_log(SL_LOG_WARN, "worker", "%zu record(s) still in flight at the "
                         "shutdown timeout; they will be processed again", left);
        event_base_loopexit(w->base, NULL);
    }
}

/* ==================== Set-up ==================== */

/* A JSON string, or null for text that is not UTF-8. */
static void add_str(struct sl_buf *b, const char *s) {
    if (sl_json_add_string(b, s, strlen(s), NULL, 0)) sl_buf_adds(b, "null");
}

/* Lag of one assigned partition: its end minus the next offset to finish
 * (or to fetch, before any record of it was taken). */
struct lag_walk {
    struct worker *w;
    struct sl_buf *json;                 /* /status partitions, or NULL */
    size_t n;
};

static void lag_partition(void *arg, const char *topic, int32_t partition,
                          int64_t position, int64_t high) {
    struct lag_walk *lw = arg;
    char labels[320];
    int64_t done = sl_offsets_position(lw->w->offsets, topic, partition);
    int64_t at = done >= 0 ? done : position;
    int64_t lag = high >= 0 && at >= 0 ? (high > at ? high - at : 0) : -1;
    snprintf(labels, sizeof(labels), "topic=\"%s\",partition=\"%d\"", topic, (int)partition);
    if (lag >= 0) sl_metrics_set("sluice_consumer_lag", labels, (double)lag);
    if (lw->json) {
        sl_buf_adds(lw->json, lw->n ? ",{\"topic\":" : "{\"topic\":");
        add_str(lw->json, topic);
        sl_buf_printf(lw->json, ",\"partition\":%d,\"position\":%lld,\"end\":%lld,\"lag\":%lld}",
                      (int)partition, (long long)at, (long long)high, (long long)lag);
    }
    lw->n++;
}

static size_t walk_partitions(struct worker *w, struct sl_buf *json) {
    struct lag_walk lw = {w, json, 0};
    if (w->consumer) sl_kafka_consumer_partitions(w->consumer, lag_partition, &lw);
    sl_metrics_set("sluice_assigned_partitions", NULL, (double)lw.n);
    return lw.n;
}

/* /readyz: rules loaded, a broker reachable, not stopping. Partitions not
 * yet assigned is the normal wait of a group member, not a failure. */
static bool ready_cb(void *arg, char *why, size_t whylen) {
    struct worker *w = arg;
    if (w->stopping) sl_errf(why, whylen, "stopping");
    else if (w->cf->nsteps && !w->pipeline) sl_errf(why, whylen, "rules not loaded");
    else if (sl_kafka_producer_fault(w->producer))
        sl_errf(why, whylen, "%s", sl_kafka_producer_fault(w->producer));
    else if (w->cproducer && sl_kafka_producer_fault(w->cproducer))
        sl_errf(why, whylen, "%s", sl_kafka_producer_fault(w->cproducer));
    else if (!sl_kafka_producer_up(w->producer))
        sl_errf(why, whylen, "no Kafka broker reachable at %s", w->brokers);
    else return true;
    return false;
}

static void add_time(struct sl_buf *b, int64_t ms) {
    char ts[32];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    sl_buf_printf(b, "\"%s.%03dZ\"", ts, (int)(ms % 1000));
}

/* /status: what an operator asks first. Names and numbers only: never the
 * config's values (they hold secrets). */
static void status_cb(void *arg, struct sl_buf *b) {
    struct worker *w = arg;
    char why[256];
    bool ready = ready_cb(w, why, sizeof(why));
    sl_buf_adds(b, "{\"version\":\"" SL_VERSION "\",\"config\":");
    add_str(b, w->cf->file);
    sl_buf_printf(b, ",\"ready\":%s", ready ? "true" : "false");
    if (!ready) {
        sl_buf_adds(b, ",\"not_ready\":");
        add_str(b, why);
    }
    sl_buf_adds(b, ",\"rules\":{\"version\":");
    if (w->pipeline) sl_buf_printf(b, "\"%s\",\"loaded_at\":", sl_pipeline_version(w->pipeline));
    else sl_buf_adds(b, "null,\"loaded_at\":");
    if (w->rules_loaded_at) add_time(b, w->rules_loaded_at);
    else sl_buf_adds(b, "null");
    sl_buf_printf(b, ",\"reloads\":%u,\"reload_errors\":%u,\"reloads_refused\":%u,"
                  "\"last_reload_error\":", w->reloads, w->reload_errors, w->reload_refusals);
    if (w->reload_error[0])
        add_str(b, w->reload_error);
    else sl_buf_adds(b, "null");
    sl_buf_printf(b, "},\"broker_up\":%s,\"inflight\":%zu,\"partitions\":[",
                  sl_kafka_producer_up(w->producer) ? "true" : "false",
                  w->pipeline ? sl_pipeline_inflight(w->pipeline) : 0);
    walk_partitions(w, b);
    sl_buf_adds(b, "]}");
}

static void metrics_cb(void *arg, struct sl_buf *out) {
    struct worker *w = arg;
    walk_partitions(w, NULL);
    if (w->collector) sl_collector_metrics(w->collector, out);
    sl_recs_metrics(w->recs, out);
    sl_metrics_set("sluice_inflight_records", NULL,
                   w->pipeline ? (double)sl_pipeline_inflight(w->pipeline) : 0);
    sl_metrics_set("sluice_producer_inflight", NULL,
                   (double)sl_kafka_producer_inflight(w->producer));
}

/* The collector's read API, answered from the store step's store. */
static void read_recs(void *reader, const char *id, size_t n, sl_collector_answer_fn *cb,
                      void *arg) {
    sl_recs_read(reader, id, n, cb, arg);
}

static int start_broker(struct worker *w, char *err, size_t errlen) {
    const struct sl_config *cf = w->cf;
    const char *topics[64];
    size_t n = 0;
    for (size_t i = 0; i < cf->kafka.ninput && n < 60; i++) topics[n++] = cf->kafka.input[i];
    topics[n++] = cf->kafka.dead_letter;
    if (cf->has_collector) topics[n++] = cf->collector.topic;
    for (size_t i = 0; i < cf->nsteps && n < 63; i++)
        if (cf->steps[i].type == SL_STEP_KAFKA) topics[n++] = cf->steps[i].topic;
    w->broker = sl_broker_create(1, cf->kafka.partitions, topics, n, err, errlen);
    if (!w->broker) return SL_ERR;
    snprintf(w->brokers, sizeof(w->brokers), "%s", sl_broker_address(w->broker));
    sl_log(SL_LOG_INFO, "worker", "embedded broker on %s", w->brokers);
    sl_log(SL_LOG_WARN, "worker", "the embedded broker is in memory and keeps only the "
           "last 5 MiB of each partition: it is for a laptop, a demo and small tests; "
           "point kafka.brokers at a real Kafka cluster for anything else");
    return SL_OK;
}

static int setup(struct worker *w, char *err, size_t errlen) {
    const struct sl_config *cf = w->cf;
    struct sl_kafka_conf kc = {0};

    w->base = event_base_new();
    if (!w->base) {
        sl_errf(err, errlen, "cannot create the event loop");
        return SL_ERR;
    }
    if (cf->kafka.embedded) {
        if (start_broker(w, err, errlen)) return SL_ERR;
    } else {
        snprintf(w->brokers, sizeof(w->brokers), "%s", cf->kafka.brokers);
    }
    size_t ncprops;
    w->cprops = sl_config_kafka_props(cf, true, &ncprops);
    w->pprops = sl_config_kafka_props(cf, false, &kc.nprops);
    kc.brokers = w->brokers;
    kc.props = w->pprops;
    kc.linger_ms = SL_WORKER_SINK_LINGER_MS;
    kc.name = "sink";
    /* A record the full queue refuses waits in the producer: the sinks are
     * busy meanwhile, so it is what one input record makes past half the
     * queue, not a crash-loop of the worker. */
    kc.park_when_full = true;
    w->producer = sl_kafka_producer_create(w->base, &kc, err, errlen);
    if (!w->producer) return SL_ERR;
    kc.linger_ms = 0;
    kc.park_when_full = false;
    w->offsets = sl_offsets_create();

    if (cf->nsteps) {
        struct sl_rules *rules = sl_rules_create(cf, err, errlen);
        if (!rules) return SL_ERR;
        sl_log(SL_LOG_INFO, "worker", "rules version %s", sl_rules_version(rules));
        w->rules_loaded_at = sl_now_ms();
        sl_metrics_counter("sluice_reloads_total", "result=\"ok\"");    /* at 0 */
        sl_metrics_counter("sluice_reloads_total", "result=\"error\"");
        sl_metrics_counter("sluice_reloads_total", "result=\"refused\"");
        w->canary = sl_canary_create(cf->rules.canary_last, cf->rules.canary_bytes);
        w->recs = sl_recs_open(w->base, cf, err, errlen);
        if (!w->recs && err[0]) {
            sl_rules_release(rules);
            return SL_ERR;
        }
        struct sl_pipeline_conf pc = {
            .cf = cf, .producer = w->producer, .base = w->base, .on_done = on_done,
            .store = w->recs ? sl_recs_store(w->recs) : NULL,
            .on_fatal = on_fatal, .on_drop = on_drop, .on_spent = on_spent,
            .canary = w->canary, .arg = w,
        };
        w->pipeline = sl_pipeline_create(&pc, rules);   /* rules now owned by it */
        if (sl_rules_watchdog_start(cf, err, errlen)) return SL_ERR;
        w->poison = sl_rules_poison_load(cf, &w->npoison);
        for (size_t i = 0; i < w->npoison; i++)
            if (!w->poison[i].dead_lettered)
                sl_log(SL_LOG_WARN, "worker", "an earlier run was stopped by the watchdog in "
                       "step %s on record %s: that record will be dead-lettered (or skipped "
                       "if it comes back only to rebuild windows)", w->poison[i].step,
                       w->poison[i].what);
        struct sl_kafka_consumer_conf cc = {
            .kafka = {.brokers = w->brokers, .props = w->cprops, .nprops = ncprops},
            .group = cf->kafka.group,
            .topics = (const char *const *)cf->kafka.input, .ntopics = cf->kafka.ninput,
            .on_record = on_record, .on_rebalance = on_rebalance, .arg = w,
        };
        w->consumer = sl_kafka_consumer_create(w->base, &cc, err, errlen);
        if (!w->consumer) return SL_ERR;
        sl_log(SL_LOG_INFO, "worker", "consuming %s in group %s from %s", cf->kafka.input[0],
               cf->kafka.group, w->brokers);
    }
    if (cf->has_collector) {
        struct sl_collector_conf cc = {
            .listen = cf->collector.listen, .topic = cf->collector.topic,
            .allowed_origins = (const char *const *)cf->collector.allowed_origins,
            .norigins = cf->collector.norigins, .max_body = cf->collector.max_body,
            .ip = !strcmp(cf->collector.ip, "keep") ? SL_COLLECTOR_IP_KEEP
                : !strcmp(cf->collector.ip, "drop") ? SL_COLLECTOR_IP_DROP
                : SL_COLLECTOR_IP_HASH,
            .ip_salt = cf->collector.ip_salt, .max_inflight = cf->collector.max_inflight,
        };
        /* The embedded broker drops what lies beyond its last 5 MiB of a
         * partition: refuse new events before the unconsumed part nears it. */
        if (cf->kafka.embedded) {
            cc.max_unconsumed_bytes = SL_BROKER_RETENTION_BYTES * 4 / 5;
            cc.watch_group = cf->kafka.group;
        }
        struct sl_kafka_conf ckc = kc;
        ckc.linger_ms = SL_WORKER_COLLECTOR_LINGER_MS;
        ckc.name = "collector";
        w->cproducer = sl_kafka_producer_create(w->base, &ckc, err, errlen);
        if (!w->cproducer) return SL_ERR;
        sl_kafka_producer_warm(w->cproducer, cf->collector.topic);
        w->collector = sl_collector_create(w->base, &cc, w->cproducer, err, errlen);
        if (!w->collector) return SL_ERR;
        if (w->recs) sl_collector_set_reader(w->collector, read_recs, w->recs);
        sl_log(SL_LOG_INFO, "worker", "collector on http://%s -> topic %s",
               cf->collector.listen, cf->collector.topic);
    }
    if (cf->admin_listen) {
        w->admin = sl_admin_create(w->base, cf->admin_listen, metrics_cb, w, err, errlen);
        if (!w->admin) return SL_ERR;
        sl_admin_set_probes(w->admin, ready_cb, status_cb);
        sl_log(SL_LOG_INFO, "worker", "admin on http://%s/metrics", cf->admin_listen);
    }
    w->sighup = evsignal_new(w->base, SIGHUP, on_sighup, w);
    w->sigterm = evsignal_new(w->base, SIGTERM, on_stop, w);
    w->sigint = evsignal_new(w->base, SIGINT, on_stop, w);
    w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    struct timeval tv = {0, SL_WORKER_TICK_MS * 1000};
    if (!w->sighup || !w->sigterm || !w->sigint || !w->tick ||
        event_add(w->sighup, NULL) || event_add(w->sigterm, NULL) ||
        event_add(w->sigint, NULL) || event_add(w->tick, &tv)) {
        sl_errf(err, errlen, "cannot add signal events to the loop");
        return SL_ERR;
    }
    return SL_OK;
}

static void teardown(struct worker *w) {
    if (w->producer && !w->status) sl_kafka_producer_flush(w->producer, 2000);
    if (w->consumer) sl_kafka_consumer_commit(w->consumer, true);
    if (w->tick) event_free(w->tick);
    if (w->sighup) event_free(w->sighup);
    if (w->sigterm) event_free(w->sigterm);
    if (w->sigint) event_free(w->sigint);
    sl_admin_destroy(w->admin);
    sl_collector_destroy(w->collector);
    /* Records still in flight hold Kafka messages: the pipeline drops them
     * (uncommitted, so they are consumed again) before the consumer goes. */
    sl_pipeline_destroy(w->pipeline);
    w->pipeline = NULL;
    sl_recs_destroy(w->recs);      /* after its step and its reader */
    w->recs = NULL;
    sl_kafka_consumer_destroy(w->consumer);   /* leaves the group: a last revoke */
    sl_kafka_producer_destroy(w->producer);
    sl_kafka_producer_destroy(w->cproducer);
    sl_offsets_destroy(w->offsets);
    while (w->restoring) {
        struct restoring *r = w->restoring;
        w->restoring = r->next;
        free(r->topic);
        free(r);
    }
    sl_broker_destroy(w->broker);
    sl_canary_destroy(w->canary);
    free(w->poison);
    free(w->cprops);
    free(w->pprops);
    if (w->base) event_base_free(w->base);
    sl_config_destroy(w->cf);
    sl_metrics_reset();
}

int sl_worker_run(const char *config_file) {
    struct worker w;
    char err[SL_ERRLEN];

    memset(&w, 0, sizeof(w));
    signal(SIGPIPE, SIG_IGN);
    w.cf = sl_config_load(config_file, err, sizeof(err));
    if (!w.cf) {
        fprintf(stderr, "sluice: %s\n", err);
        return 1;
    }
    if (setup(&w, err, sizeof(err))) {
        fprintf(stderr, "sluice: %s\n", err);
        teardown(&w);
        return 1;
    }
    event_base_dispatch(w.base);
    int status = w.status;
    sl_log_flush(1);
    sl_log(status ? SL_LOG_ERROR : SL_LOG_INFO, "worker", "stopped (exit %d)", status);
    teardown(&w);
    return status;
}
