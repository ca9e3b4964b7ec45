/* replay.c -- dead letters back to their source topics (see replay.h). */
#define _GNU_SOURCE
#include "replay.h"
#include "broker.h"
#include "config.h"
#include "deadletter.h"
#include "json.h"
#include "kafka.h"
#include "offsets.h"
#include "sl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lualib.h>
#include <librdkafka/rdkafka.h>

struct replay {
    struct sl_config *cf;
    struct event_base *base;
    struct sl_kafka_producer *producer;
    struct sl_kafka_consumer *consumer;
    struct sl_offsets *offsets;
    lua_State *L;
    bool dry_run;
    int assigned;          /* partitions assigned */
    int at_eof;            /* of them, at their end */
    size_t inflight;
    long replayed, skipped;
    int status;
};

struct pending {
    struct replay *rp;
    struct sl_kafka_record *rec;
};

static void finish(struct replay *rp, struct sl_kafka_record *rec) {
    int64_t pos = sl_offsets_done(rp->offsets, rec->topic, rec->partition, rec->offset);
    if (pos >= 0 && !rp->dry_run) sl_kafka_consumer_store(rp->consumer, rec->topic, rec->partition, pos);
    sl_kafka_record_free(rec);
}

static void maybe_exit(struct replay *rp) {
    if (rp->assigned > 0 && rp->at_eof >= rp->assigned && rp->inflight == 0)
        event_base_loopexit(rp->base, NULL);
}

static void delivered(void *opaque, const char *err, int32_t p, int64_t o) {
    struct pending *pd = opaque;
    struct replay *rp = pd->rp;
    (void)p; (void)o;
    rp->inflight--;
    if (err) {
        sl_log(SL_LOG_ERROR, "replay", "cannot produce: %s; stopping", err);
        rp->status = 1;
        sl_kafka_record_free(pd->rec);
        free(pd);
        event_base_loopbreak(rp->base);
        return;
    }
    rp->replayed++;
    finish(rp, pd->rec);
    free(pd);
    maybe_exit(rp);
}

static const char *strfield(lua_State *L, int idx, const char *k, size_t *len) {
    lua_getfield(L, idx, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    lua_pop(L, 1);     /* the string stays alive in the table at idx */
    return s;
}

static int unbase64(const char *s, size_t n, struct sl_buf *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') break;
        const char *p = memchr(tbl, s[i], 64);
        if (!p) return SL_ERR;
        v = (v << 6) | (unsigned)(p - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            sl_buf_addc(out, (char)((v >> bits) & 0xff));
        }
    }
    return SL_OK;
}

static void on_record(void *arg, struct sl_kafka_record *rec) {
    struct replay *rp = arg;
    lua_State *L = rp->L;
    char err[SL_ERRLEN];
    size_t klen = 0, vlen = 0, tlen = 0;
    struct sl_buf raw = {0};
    int top = lua_gettop(L);

    sl_offsets_track(rp->offsets, rec->topic, rec->partition, rec->offset);
    /* Raw form: the metadata in a header, the record value is the source's. */
    const void *meta = rec->value;
    size_t metalen = rec->len;
    rd_kafka_headers_t *hdrs = NULL;
    bool rawform = !rd_kafka_message_headers(rec->msg, &hdrs) &&
               !rd_kafka_header_get_last(hdrs, SL_DEADLETTER_HEADER, &meta, &metalen);
    if (!meta || sl_json_decode(L, meta, metalen, err, sizeof(err)) || !lua_istable(L, -1)) {
        sl_log(SL_LOG_WARN, "replay", "%s/%d/%lld is not a dead letter; skipped",
               rec->topic, rec->partition, (long long)rec->offset);
        goto skip;
    }
    int d = lua_gettop(L);
    lua_getfield(L, d, "source");
    if (!lua_istable(L, -1)) goto bad;
    int src = lua_gettop(L);
    const char *topic = strfield(L, src, "topic", &tlen);
    const char *key = strfield(L, src, "key", &klen);
    const char *value = rawform ? (rec->value ? rec->value : "") : strfield(L, d, "value", &vlen);
    if (rawform) {
        vlen = rec->value ? rec->len : 0;
        lua_getfield(L, d, "valueTruncated");
        bool cut = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (cut) {
            lua_getfield(L, src, "partition");
            lua_getfield(L, src, "offset");
            sl_log(SL_LOG_WARN, "replay", "%s/%d/%lld carries a truncated value; skipped: the "
                   "whole record is at %s/%s/%s while the source topic retains it",
                   rec->topic, rec->partition, (long long)rec->offset, topic ? topic : "?",
                   lua_tostring(L, -2) ? lua_tostring(L, -2) : "?",
                   lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            goto skip;
        }
    } else if (!value) {
        const char *b = strfield(L, d, "valueBase64", &vlen);
        if (!b || unbase64(b, vlen, &raw)) goto bad;
        value = raw.data ? raw.data : "";
        vlen = raw.len;
    }
    if (!topic || !*topic) goto bad;
    if (rp->dry_run) {
        printf("%s/%d/%lld -> %s key=%.*s %zu bytes\n", rec->topic, rec->partition,
               (long long)rec->offset, topic, (int)(key ? klen : 4), key ? key : "null", vlen);
        rp->replayed++;
        goto skip;
    }
    struct pending *pd = sl_malloc(sizeof(*pd));
    pd->rp = rp;
    pd->rec = rec;
    if (sl_kafka_produce(rp->producer, topic, -1, key, klen, value, vlen, 0, delivered, pd,
                         err, sizeof(err))) {
        sl_log(SL_LOG_ERROR, "replay", "%s", err);
        free(pd);
        rp->status = 1;
        event_base_loopbreak(rp->base);
        sl_kafka_record_free(rec);
        goto done;
    }
    rp->inflight++;
    goto done;
bad:
    sl_log(SL_LOG_WARN, "replay", "%s/%d/%lld lacks source.topic or value; skipped",
           rec->topic, rec->partition, (long long)rec->offset);
skip:
    rp->skipped += !rp->dry_run;
    finish(rp, rec);
done:
    sl_buf_free(&raw);
    lua_settop(L, top);
}

static void on_eof(void *arg, const char *topic, int32_t partition) {
    struct replay *rp = arg;
    (void)topic; (void)partition;
    rp->at_eof++;
    maybe_exit(rp);
}

static void on_rebalance(void *arg, bool assigned, void *parts_) {
    struct replay *rp = arg;
    rd_kafka_topic_partition_list_t *parts = parts_;
    if (assigned) rp->assigned += parts->cnt;
    else rp->assigned = rp->at_eof = 0;
}

int sl_replay_run(const char *config_file, bool dry_run) {
    struct replay rp;
    char err[SL_ERRLEN], group[512];
    memset(&rp, 0, sizeof(rp));
    rp.dry_run = dry_run;
    rp.status = 1;

    rp.cf = sl_config_load(config_file, err, sizeof(err));
    if (!rp.cf) {
        fprintf(stderr, "sluice replay: %s\n", err);
        return 1;
    }
    if (rp.cf->kafka.embedded) {
        fprintf(stderr, "sluice replay: %s: kafka.brokers is \"embedded\": its broker lives "
                "inside the running worker; set KAFKA_BROKERS to the broker's address\n",
                config_file);
        goto done;
    }
    struct sl_kafka_conf kc = {.brokers = rp.cf->kafka.brokers, .name = "replay"};
    struct sl_kafka_conf cc_kafka = {.brokers = rp.cf->kafka.brokers};
    struct sl_kafka_prop *pprops = sl_config_kafka_props(rp.cf, false, &kc.nprops);
    struct sl_kafka_prop *props = sl_config_kafka_props(rp.cf, true, &cc_kafka.nprops);
    props[cc_kafka.nprops++] = (struct sl_kafka_prop){"enable.partition.eof", "true"};
    kc.props = pprops;
    cc_kafka.props = props;
    const char *topics[1] = {rp.cf->kafka.dead_letter};
    snprintf(group, sizeof(group), "%s.replay", rp.cf->kafka.group);

    rp.base = event_base_new();
    rp.L = luaL_newstate();
    sl_json_init(rp.L);
    rp.offsets = sl_offsets_create();
    rp.producer = sl_kafka_producer_create(rp.base, &kc, err, sizeof(err));
    struct sl_kafka_consumer_conf cc = {
        .kafka = cc_kafka, .group = group, .topics = topics, .ntopics = 1,
        .on_record = on_record, .on_rebalance = on_rebalance, .on_eof = on_eof, .arg = &rp,
    };
    if (rp.producer) rp.consumer = sl_kafka_consumer_create(rp.base, &cc, err, sizeof(err));
    free(props);
    free(pprops);
    if (!rp.producer || !rp.consumer) {
        fprintf(stderr, "sluice replay: %s\n", err);
        goto done;
    }
    rp.status = 0;
    event_base_dispatch(rp.base);
    if (!dry_run) sl_kafka_consumer_commit(rp.consumer, true);
    fprintf(stderr, "sluice replay: %ld record(s) %s, %ld skipped\n", rp.replayed,
            dry_run ? "would be replayed" : "replayed", rp.skipped);
done:
    sl_kafka_consumer_destroy(rp.consumer);
    sl_kafka_producer_destroy(rp.producer);
    sl_offsets_destroy(rp.offsets);
    if (rp.L) lua_close(rp.L);
    if (rp.base) event_base_free(rp.base);
    sl_config_destroy(rp.cf);
    return rp.status;
}
