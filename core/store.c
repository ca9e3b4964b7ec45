/* store.c -- the latest value per key, in process or on Redis (see store.h). */
#define _GNU_SOURCE
#include "store.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>

#define SL_STORE_INITIAL_BUCKETS 64 /* Hash buckets of a new table (a power of two). */

/* KEYS[1] the entry; ARGV: time, source, offset, updated_at, value, ttl ms.
 * The entry is "time source offset updated_at value": the script keeps the
 * newer stamp (store.h) and answers 1 (written) or 0 (stale). */
static const char store_script[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then\n"
    "  local t, s, o = string.match(cur, '^(%-?%d+) (%d+) (%-?%d+) ')\n"
    "  if t then\n"
    "    local nt, no = tonumber(ARGV[1]), tonumber(ARGV[3])\n"
    "    if s == ARGV[2] then\n"
    "      if tonumber(o) > no then return 0 end\n"
    "    elseif tonumber(t) > nt or (tonumber(t) == nt and tonumber(o) > no) then\n"
    "      return 0\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. "
    "ARGV[4] .. ' ' .. ARGV[5], 'PX', ARGV[6])\n"
    "return 1\n";

/* One key in process. */
struct entry {
    struct entry *hnext;         /* bucket chain */
    struct entry *prev, *next;   /* update order, oldest first */
    uint64_t hash;
    struct sl_store_stamp stamp;
    int64_t updated_at;          /* wall-clock ms of the write */
    int64_t expires;             /* monotonic ms */
    char *value;
    size_t len;
    size_t klen;
    char key[];                  /* klen bytes and a NUL */
};

/* A write waiting for Redis. */
struct sl_store_op {
    struct sl_store *s;
    struct sl_store_op *prev, *next; /* s->waiting (not sent yet) */
    sl_store_put_fn *cb;             /* NULL: cancelled */
    void *arg;
    bool sent;                       /* a command is out; its reply frees or requeues */
    char *key;                       /* prefixed */
    char args[3][24];                /* time, source, offset */
    char updated[24];
    char *value;
    size_t len;
};

/* A read waiting for Redis. */
struct get_op {
    sl_store_get_fn *cb;
    void *arg;
};

struct sl_store {
    struct sl_store_conf conf;
    /* In process. */
    struct entry **buckets;
    size_t nbuckets, nkeys;
    struct entry *oldest, *newest;
    /* Redis. */
    struct event_base *base;
    char *host, *password;
    int port, db;
    redisAsyncContext *ac;           /* NULL while disconnected */
    bool up;                         /* connected (and authenticated) */
    bool closing;                    /* destroy: replies only free their ops */
    struct event *retry;             /* reconnect and resend timer */
    int64_t backoff_ms;
    struct sl_store_op *whead, *wtail; /* writes waiting to be sent */
    size_t nwaiting, nsent;
    int64_t last_log;                /* monotonic ms of the last "down" log line */
    /* Counts. */
    uint64_t written, stale, evicted, expired, redis_errors;
};

/* ==================== In process ==================== */

static uint64_t hash_key(const char *k, size_t n) {
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * UINT64_C(0x100000001b3);
    return h;
}

static struct entry **bucket_of(struct sl_store *s, uint64_t h, const char *k, size_t n) {
    struct entry **pp = &s->buckets[h & (s->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->klen == n && !memcmp((*pp)->key, k, n)))
        pp = &(*pp)->hnext;
    return pp;
}

static void list_unlink(struct sl_store *s, struct entry *e) {
    if (e->prev) e->prev->next = e->next; else s->oldest = e->next;
    if (e->next) e->next->prev = e->prev; else s->newest = e->prev;
    e->prev = e->next = NULL;
}

static void list_append(struct sl_store *s, struct entry *e) {
    e->prev = s->newest;
    e->next = NULL;
    if (s->newest) s->newest->next = e; else s->oldest = e;
    s->newest = e;
}

static void entry_remove(struct sl_store *s, struct entry *e) {
    struct entry **pp = bucket_of(s, e->hash, e->key, e->klen);
    assert(*pp == e);
    *pp = e->hnext;
    list_unlink(s, e);
    s->nkeys--;
    free(e->value);
    free(e);
}

/* Doubles the table when it holds more keys than buckets: O(n) now and
 * then, O(1) amortised per key. */
static void maybe_grow(struct sl_store *s) {
    if (s->nkeys < s->nbuckets) return;
    size_t n = s->nbuckets * 2;
    struct entry **b = sl_calloc(n, sizeof(*b));
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (struct entry *e = s->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* Entries leave in update order, so the expired ones are at the front. */
static void expire(struct sl_store *s, int64_t now) {
    while (s->oldest && s->oldest->expires <= now) {
        entry_remove(s, s->oldest);
        s->expired++;
    }
}

/* True when a value of stamp a may replace one of stamp b (store.h). */
static bool stamp_not_older(const struct sl_store_stamp *a, const struct sl_store_stamp *b) {
    if (a->source == b->source) return a->offset >= b->offset;
    if (a->time_ms != b->time_ms) return a->time_ms > b->time_ms;
    return a->offset >= b->offset;
}

static enum sl_store_result mem_put(struct sl_store *s, const char *key, size_t klen,
                                    const struct sl_store_stamp *stamp, const char *value,
                                    size_t len) {
    int64_t now = sl_mono_ms();
    uint64_t h = hash_key(key, klen);
    expire(s, now);
    struct entry **pp = bucket_of(s, h, key, klen), *e = *pp;
    if (e) {
        if (!stamp_not_older(stamp, &e->stamp)) {
            s->stale++;
            return SL_STORE_STALE;
        }
        list_unlink(s, e);
        free(e->value);
    } else {
        if (s->nkeys >= s->conf.max_keys) {
            entry_remove(s, s->oldest);
            s->evicted++;
        }
        maybe_grow(s);
        e = sl_calloc(1, sizeof(*e) + klen + 1);
        memcpy(e->key, key, klen);
        e->klen = klen;
        e->hash = h;
        pp = &s->buckets[h & (s->nbuckets - 1)];
        e->hnext = *pp;
        *pp = e;
        s->nkeys++;
    }
    e->stamp = *stamp;
    e->value = sl_strndup(value, len);
    e->len = len;
    e->updated_at = sl_now_ms();
    e->expires = now + s->conf.ttl_ms;
    list_append(s, e);
    s->written++;
    return SL_STORE_WRITTEN;
}

static void mem_get(struct sl_store *s, const char *key, size_t klen, sl_store_get_fn *cb,
                    void *arg) {
    expire(s, sl_mono_ms());
    struct entry *e = *bucket_of(s, hash_key(key, klen), key, klen);
    if (!e) cb(arg, SL_STORE_NOT_FOUND, NULL, 0, 0);
    else cb(arg, SL_STORE_FOUND, e->value, e->len, e->updated_at);
}

/* ==================== Redis ==================== */

static void redis_connect(struct sl_store *s);
static void send_waiting(struct sl_store *s);

/* Splits "redis://[[user]:password@]host[:port][/db]". */
static int parse_url(struct sl_store *s, const char *url, char *err, size_t errlen) {
    const char *p = url, *at, *end;
    if (strncmp(p, "redis://", 8)) goto bad;
    p += 8;
    end = p + strcspn(p, "/");
    at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) goto bad;
        s->password = sl_strndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    const char *colon = memchr(p, ':', (size_t)(end - p));
    const char *hend = colon ? colon : end;
    if (hend == p) goto bad;
    s->host = sl_strndup(p, (size_t)(hend - p));
    s->port = 6379;
    if (colon) {
        char *e;
        long v = strtol(colon + 1, &e, 10);
        if (e != end || v < 1 || v > 65535) goto bad;
        s->port = (int)v;
    }
    if (*end == '/' && end[1]) {
        char *e;
        long v = strtol(end + 1, &e, 10);
        if (*e || v < 0 || v > 1000000) goto bad;
        s->db = (int)v;
    }
    return SL_OK;
bad:
    /* The URL may hold a password: never echo it. */
    sl_errf(err, errlen, "a URL like redis://host:6379/0 "
            "(redis://:password@host:port/db with a password)");
    return SL_ERR;
}

static void log_down(struct sl_store *s, const char *what) {
    int64_t now = sl_mono_ms();
    if (s->last_log && now - s->last_log < 10000) return;
    s->last_log = now;
    sl_log(SL_LOG_WARN, "store", "redis %s:%d: %s; retrying (writes wait, reads answer 503)",
           s->host, s->port, what);
}

static void arm_retry(struct sl_store *s) {
    struct timeval tv = {s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000};
    if (!evtimer_pending(s->retry, NULL)) evtimer_add(s->retry, &tv);
    s->backoff_ms = s->backoff_ms * 2 > SL_STORE_RETRY_MAX_MS ? SL_STORE_RETRY_MAX_MS
                                                                : s->backoff_ms * 2;
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
    struct sl_store *s = arg;
    (void)fd; (void)what;
    if (!s->ac) redis_connect(s);
    else if (s->up) send_waiting(s);
}

static void op_free(struct sl_store_op *op) {
    free(op->key);
    free(op->value);
    free(op);
}

static void waiting_push(struct sl_store *s, struct sl_store_op *op, bool front) {
    op->prev = op->next = NULL;
    if (front) {
        op->next = s->whead;
        if (s->whead) s->whead->prev = op; else s->wtail = op;
        s->whead = op;
    } else {
        op->prev = s->wtail;
        if (s->wtail) s->wtail->next = op; else s->whead = op;
        s->wtail = op;
    }
    s->nwaiting++;
}

static void waiting_unlink(struct sl_store *s, struct sl_store_op *op) {
    if (op->prev) op->prev->next = op->next; else s->whead = op->next;
    if (op->next) op->next->prev = op->prev; else s->wtail = op->prev;
    op->prev = op->next = NULL;
    s->nwaiting--;
}

/* The script's answer to a write: done, or back to the queue (Redis gone
 * or refusing: retried after the backoff). */
static void on_put_reply(redisAsyncContext *ac, void *r, void *priv) {
    struct sl_store_op *op = priv;
    struct sl_store *s = op->s;
    redisReply *reply = r;
    (void)ac;
    op->sent = false;
    if (s) s->nsent--;
    if (!op->cb || !s || s->closing) { /* cancelled, or the store is going */
        op_free(op);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        s->redis_errors++;
        if (reply && reply->type == REDIS_REPLY_ERROR) log_down(s, reply->str);
        waiting_push(s, op, true);     /* first in line again: keeps per-key order */
        arm_retry(s);
        return;
    }
    enum sl_store_result res = reply->integer ? SL_STORE_WRITTEN : SL_STORE_STALE;
    if (res == SL_STORE_WRITTEN) s->written++; else s->stale++;
    s->backoff_ms = SL_STORE_RETRY_MIN_MS;
    op->cb(op->arg, res);
    op_free(op);
}

static void send_op(struct sl_store *s, struct sl_store_op *op) {
    char ttl[24];
    const char *argv[11];
    size_t lens[11];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)s->conf.ttl_ms);
    argv[0] = "EVAL"; argv[1] = store_script; argv[2] = "1"; argv[3] = op->key;
    argv[4] = op->args[0]; argv[5] = op->args[1]; argv[6] = op->args[2];
    argv[7] = op->updated; argv[8] = op->value; argv[9] = ttl;
    for (int i = 0; i < 10; i++) lens[i] = strlen(argv[i]);
    lens[8] = op->len;
    op->sent = true;
    s->nsent++;
    if (redisAsyncCommandArgv(s->ac, on_put_reply, op, 10, argv, lens) != REDIS_OK) {
        op->sent = false;
        s->nsent--;
        waiting_push(s, op, true);
        arm_retry(s);
    }
}

static void send_waiting(struct sl_store *s) {
    while (s->up && s->whead) {
        struct sl_store_op *op = s->whead;
        waiting_unlink(s, op);
        if (!op->cb) { op_free(op); continue; }
        send_op(s, op);
    }
}

static void on_ready(redisAsyncContext *ac, void *r, void *priv) {
    struct sl_store *s = priv;
    redisReply *reply = r;
    if (!s || ac != s->ac) return;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        log_down(s, reply ? reply->str : "AUTH/SELECT failed");
        redisAsyncDisconnect(ac);
        return;
    }
    if (!s->up) sl_log(SL_LOG_INFO, "store", "redis %s:%d: connected", s->host, s->port);
    s->up = true;
    s->last_log = 0;
    s->backoff_ms = SL_STORE_RETRY_MIN_MS;
    send_waiting(s);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    struct sl_store *s = ac->data;
    if (status != REDIS_OK) {
        log_down(s, ac->errstr);
        s->ac = NULL;                  /* hiredis frees it */
        arm_retry(s);
        return;
    }
    if (s->password) redisAsyncCommand(s->ac, NULL, NULL, "AUTH %s", s->password);
    redisAsyncCommand(s->ac, on_ready, s, "SELECT %d", s->db);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    struct sl_store *s = ac->data;
    (void)status;
    if (!s || s->closing) return;
    if (s->up) log_down(s, ac->errstr[0] ? ac->errstr : "disconnected");
    s->up = false;
    s->ac = NULL;                      /* hiredis frees it */
    arm_retry(s);
}

static void redis_connect(struct sl_store *s) {
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
    if (!ac) {
        arm_retry(s);
        return;
    }
    if (ac->err) {
        log_down(s, ac->errstr);
        redisAsyncFree(ac);
        arm_retry(s);
        return;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
        redisAsyncFree(ac);
        arm_retry(s);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    s->ac = ac;
}

static void on_get_reply(redisAsyncContext *ac, void *r, void *priv) {
    struct get_op *g = priv;
    redisReply *reply = r;
    (void)ac;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        g->cb(g->arg, SL_STORE_UNAVAILABLE, NULL, 0, 0);
    } else if (reply->type != REDIS_REPLY_STRING) {
        g->cb(g->arg, SL_STORE_NOT_FOUND, NULL, 0, 0);
    } else {
        /* "time source offset updated_at value" */
        const char *p = reply->str, *end = p + reply->len;
        int spaces = 0;
        long long updated = 0;
        while (p < end && spaces < 4) {
            if (*p++ == ' ' && ++spaces == 3) updated = strtoll(p, NULL, 10);
        }
        if (spaces < 4) g->cb(g->arg, SL_STORE_NOT_FOUND, NULL, 0, 0);
        else g->cb(g->arg, SL_STORE_FOUND, p, (size_t)(end - p), updated);
    }
    free(g);
}

/* ==================== The store ==================== */

struct sl_store *sl_store_create(struct event_base *base, const struct sl_store_conf *conf,
                                 char *err, size_t errlen) {
    struct sl_store *s = sl_calloc(1, sizeof(*s));
    assert(conf->max_keys >= 1 && conf->ttl_ms >= 1);
    s->conf = *conf;
    s->conf.redis_url = NULL;
    s->nbuckets = SL_STORE_INITIAL_BUCKETS;
    s->buckets = sl_calloc(s->nbuckets, sizeof(*s->buckets));
    s->backoff_ms = SL_STORE_RETRY_MIN_MS;
    if (!conf->redis_url) return s;
    if (!base) {
        sl_errf(err, errlen, "redis: needs the event loop");
        goto fail;
    }
    if (parse_url(s, conf->redis_url, err, errlen)) goto fail;
    s->base = base;
    s->retry = evtimer_new(base, on_retry, s);
    if (!s->retry) {
        sl_errf(err, errlen, "redis: cannot create a timer");
        goto fail;
    }
    redis_connect(s);
    return s;
fail:
    sl_store_destroy(s);
    return NULL;
}

void sl_store_destroy(struct sl_store *s) {
    if (!s) return;
    while (s->oldest) entry_remove(s, s->oldest);
    free(s->buckets);
    if (s->ac) {
        redisAsyncContext *ac = s->ac;
        s->ac = NULL;
        s->closing = true;
        /* Replies still due come now, with NULL: their ops are freed. */
        redisAsyncFree(ac);
    }
    while (s->whead) {
        struct sl_store_op *op = s->whead;
        waiting_unlink(s, op);
        op_free(op);
    }
    if (s->retry) event_free(s->retry);
    free(s->host);
    free(s->password);
    free(s);
}

int sl_store_check_url(const char *url, char *err, size_t errlen) {
    struct sl_store s = {0};
    int rc = parse_url(&s, url, err, errlen);
    free(s.host);
    free(s.password);
    return rc;
}

bool sl_store_is_redis(const struct sl_store *s) { return s->host != NULL; }

enum sl_store_result sl_store_put(struct sl_store *s, const char *key, size_t klen,
                                  const struct sl_store_stamp *stamp, const char *value,
                                  size_t len, sl_store_put_fn *cb, void *arg,
                                  struct sl_store_op **opp) {
    *opp = NULL;
    if (!s->host) return mem_put(s, key, klen, stamp, value, len);
    struct sl_store_op *op = sl_calloc(1, sizeof(*op));
    size_t plen = strlen(SL_STORE_REDIS_PREFIX);
    op->s = s;
    op->cb = cb;
    op->arg = arg;
    op->key = sl_malloc(plen + klen + 1);
    memcpy(op->key, SL_STORE_REDIS_PREFIX, plen);
    memcpy(op->key + plen, key, klen);
    op->key[plen + klen] = '\0';
    snprintf(op->args[0], sizeof(op->args[0]), "%lld",
             (long long)(stamp->time_ms > 0 ? stamp->time_ms : 0));
    snprintf(op->args[1], sizeof(op->args[1]), "%u", stamp->source);
    snprintf(op->args[2], sizeof(op->args[2]), "%lld", (long long)stamp->offset);
    snprintf(op->updated, sizeof(op->updated), "%lld", (long long)sl_now_ms());
    op->value = sl_strndup(value, len);
    op->len = len;
    *opp = op;
    if (s->up && !s->whead) send_op(s, op);
    else waiting_push(s, op, false);
    return SL_STORE_PENDING;
}

void sl_store_cancel(struct sl_store_op *op) {
    if (!op) return;
    op->cb = NULL;
    if (op->sent || !op->s) return;    /* freed by its reply */
    waiting_unlink(op->s, op);
    op_free(op);
}

void sl_store_get(struct sl_store *s, const char *key, size_t klen, sl_store_get_fn *cb,
                  void *arg) {
    if (!s->host) {
        mem_get(s, key, klen, cb, arg);
        return;
    }
    if (!s->up) {
        cb(arg, SL_STORE_UNAVAILABLE, NULL, 0, 0);
        return;
    }
    struct get_op *g = sl_calloc(1, sizeof(*g));
    g->cb = cb;
    g->arg = arg;
    if (redisAsyncCommand(s->ac, on_get_reply, g, "GET " SL_STORE_REDIS_PREFIX "%b", key,
                          klen) != REDIS_OK) {
        free(g);
        cb(arg, SL_STORE_UNAVAILABLE, NULL, 0, 0);
    }
}

void sl_store_tick(struct sl_store *s) {
    if (s && !s->host) expire(s, sl_mono_ms());
}

void sl_store_metrics(const struct sl_store *s, struct sl_buf *out) {
    sl_buf_printf(out,
        "# HELP sluice_store_writes_total Store writes by result (stale: a newer value was there).\n"
        "# TYPE sluice_store_writes_total counter\n"
        "sluice_store_writes_total{result=\"written\"} %llu\n"
        "sluice_store_writes_total{result=\"stale\"} %llu\n",
        (unsigned long long)s->written, (unsigned long long)s->stale);
    if (!s->host) {
        sl_buf_printf(out,
            "# HELP sluice_store_keys Keys in the in-process store.\n"
            "# TYPE sluice_store_keys gauge\n"
            "sluice_store_keys %zu\n"
            "# HELP sluice_store_evictions_total Keys evicted at max_keys (least recently updated).\n"
            "# TYPE sluice_store_evictions_total counter\n"
            "sluice_store_evictions_total %llu\n"
            "# HELP sluice_store_expirations_total Keys expired after ttl without an update.\n"
            "# TYPE sluice_store_expirations_total counter\n"
            "sluice_store_expirations_total %llu\n",
            s->nkeys, (unsigned long long)s->evicted, (unsigned long long)s->expired);
        return;
    }
    sl_buf_printf(out,
        "# HELP sluice_store_redis_up 1 while the store's Redis is connected.\n"
        "# TYPE sluice_store_redis_up gauge\n"
        "sluice_store_redis_up %d\n"
        "# HELP sluice_store_redis_errors_total Writes Redis failed or refused (retried).\n"
        "# TYPE sluice_store_redis_errors_total counter\n"
        "sluice_store_redis_errors_total %llu\n"
        "# HELP sluice_store_pending_writes Writes waiting for Redis.\n"
        "# TYPE sluice_store_pending_writes gauge\n"
        "sluice_store_pending_writes %zu\n",
        s->up ? 1 : 0, (unsigned long long)s->redis_errors, s->nwaiting + s->nsent);
}
