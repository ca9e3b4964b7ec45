/* store_test.c -- the in-process store: stamps order writes, max_keys bounds
 * it (least recently updated evicted), idle keys expire, and operations
 * cost the same whatever the size; the read API's visitor id check. */
#define _GNU_SOURCE
#include "recs.h"
#include "store.h"
#include "test.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct got {
    enum sl_store_result r;
    char value[256];
    int64_t updated_at;
};

static void on_get(void *arg, enum sl_store_result r, const char *v, size_t n, int64_t at) {
    struct got *g = arg;
    g->r = r;
    snprintf(g->value, sizeof(g->value), "%.*s", (int)n, v ? v : "");
    g->updated_at = at;
}

static struct got get(struct sl_store *s, const char *key) {
    struct got g = {.r = SL_STORE_PENDING};
    sl_store_get(s, key, strlen(key), on_get, &g);
    return g;
}

static enum sl_store_result put(struct sl_store *s, const char *key, int64_t time_ms,
                                uint32_t source, int64_t offset, const char *v) {
    struct sl_store_stamp st = {.time_ms = time_ms, .source = source, .offset = offset};
    struct sl_store_op *op = (struct sl_store_op *)1;
    enum sl_store_result r = sl_store_put(s, key, strlen(key), &st, v, strlen(v), NULL, NULL,
                                          &op);
    return op ? SL_STORE_PENDING : r;
}

static double secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds per put + get over n distinct keys in a store of max_keys. */
static double per_op(size_t max_keys, size_t n) {
    char err[SL_ERRLEN], key[32];
    struct sl_store_conf c = {.max_keys = max_keys, .ttl_ms = 3600000};
    struct sl_store *s = sl_store_create(NULL, &c, err, sizeof(err));
    double t0 = secs();
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%zu", i);
        put(s, key, 1, 1, (int64_t)i, "[\"gid\"]");
        get(s, key);
    }
    double t = (secs() - t0) / (double)n;
    sl_store_destroy(s);
    return t;
}

int main(void) {
    char err[SL_ERRLEN];
    struct sl_store_conf conf = {.max_keys = 3, .ttl_ms = 3600000};
    struct sl_store *s = sl_store_create(NULL, &conf, err, sizeof(err));

    TEST("in process without a loop", s && !sl_store_is_redis(s));
    TEST("unknown key: not found", get(s, "a").r == SL_STORE_NOT_FOUND);
    int64_t before = sl_now_ms();
    TEST("first write is written", put(s, "a", 1000, 7, 10, "[\"x\"]") == SL_STORE_WRITTEN);
    struct got g = get(s, "a");
    TEST("read back", g.r == SL_STORE_FOUND && !strcmp(g.value, "[\"x\"]"));
    TEST("updatedAt is the write's wall clock", g.updated_at >= before &&
         g.updated_at <= sl_now_ms());

    /* Ordering guard. */
    TEST("same source, older offset: stale", put(s, "a", 5000, 7, 9, "[\"old\"]") ==
         SL_STORE_STALE);
    TEST("the stale write changed nothing", !strcmp(get(s, "a").value, "[\"x\"]"));
    TEST("same source, same offset (a replay): written",
         put(s, "a", 1000, 7, 10, "[\"x2\"]") == SL_STORE_WRITTEN);
    TEST("same source, newer offset, older time: written (offsets order a partition)",
         put(s, "a", 1, 7, 11, "[\"y\"]") == SL_STORE_WRITTEN);
    TEST("another source, older time: stale", put(s, "a", 0, 8, 999, "[\"z\"]") ==
         SL_STORE_STALE);
    TEST("another source, newer time: written", put(s, "a", 2, 8, 0, "[\"z\"]") ==
         SL_STORE_WRITTEN);
    TEST("now the newest", !strcmp(get(s, "a").value, "[\"z\"]"));
    TEST("keys are compared whole", get(s, "ab").r == SL_STORE_NOT_FOUND &&
         get(s, "").r == SL_STORE_NOT_FOUND);

    /* Bound: the least recently updated goes. */
    put(s, "b", 1, 1, 1, "[]");
    put(s, "c", 1, 1, 1, "[]");
    put(s, "a", 3, 8, 1, "[\"a\"]");        /* a updated: b is now the oldest */
    TEST("fourth key evicts the least recently updated",
         put(s, "d", 1, 1, 1, "[]") == SL_STORE_WRITTEN && get(s, "b").r == SL_STORE_NOT_FOUND);
    TEST("the others stay", get(s, "a").r == SL_STORE_FOUND && get(s, "c").r == SL_STORE_FOUND &&
         get(s, "d").r == SL_STORE_FOUND);
    struct sl_buf m = {0};
    sl_store_metrics(s, &m);
    TEST("eviction counted", strstr(sl_buf_cstr(&m), "sluice_store_evictions_total 1\n") != NULL);
    TEST("keys gauge at the bound", strstr(sl_buf_cstr(&m), "sluice_store_keys 3\n") != NULL);
    TEST("stale writes counted", strstr(sl_buf_cstr(&m),
                                        "sluice_store_writes_total{result=\"stale\"} 2\n") != NULL);
    sl_buf_free(&m);
    sl_store_destroy(s);

    /* Expiry after the idle time, per key. */
    conf = (struct sl_store_conf){.max_keys = 100, .ttl_ms = 60};
    s = sl_store_create(NULL, &conf, err, sizeof(err));
    put(s, "old", 1, 1, 1, "[]");
    usleep(40 * 1000);
    put(s, "new", 1, 1, 1, "[]");
    usleep(40 * 1000);
    TEST("a key idle past ttl expires", get(s, "old").r == SL_STORE_NOT_FOUND);
    TEST("a key updated within ttl stays", get(s, "new").r == SL_STORE_FOUND);
    put(s, "new", 1, 1, 2, "[]");
    usleep(40 * 1000);
    sl_store_tick(s);
    TEST("an update renews the idle time", get(s, "new").r == SL_STORE_FOUND);
    usleep(70 * 1000);
    sl_store_tick(s);
    m = (struct sl_buf){0};
    sl_store_metrics(s, &m);
    TEST("expired by the tick, counted", strstr(sl_buf_cstr(&m), "sluice_store_keys 0\n") &&
         strstr(sl_buf_cstr(&m), "sluice_store_expirations_total 2\n"));
    sl_buf_free(&m);
    TEST("an expired key forgets its stamp", put(s, "old", 0, 1, 0, "[]") == SL_STORE_WRITTEN);
    sl_store_destroy(s);
    sl_store_destroy(NULL);

    /* O(1): the cost per operation does not grow with the size. */
    double small = per_op(1000, 20000), big = per_op(200000, 400000);
    printf("# %.0f ns per put+get with 1000 keys, %.0f ns with 200000\n", small * 1e9,
           big * 1e9);
    TEST("cost per operation flat in the number of keys (within 4x, cache misses aside)",
         big < small * 4);
    double evicting = per_op(1000, 400000);
    TEST("evicting costs no more than a flat rate", evicting < small * 4);

    /* Redis URL checks. */
    conf = (struct sl_store_conf){.max_keys = 1, .ttl_ms = 1, .redis_url = "http://x"};
    TEST("a Redis URL of another scheme is refused", !sl_store_create(NULL, &conf, err,
                                                                      sizeof(err)));

    /* The read API's visitor ids. */
    TEST("a tracker duid is a visitor id",
         sl_recs_valid_id("4f1195b8-6b68-4cd6-a7eb-925bd120e8ad", 36));
    TEST("upper case hex too", sl_recs_valid_id("4F1195B8-6B68-4CD6-A7EB-925BD120E8AD", 36));
    TEST("a short id is not", !sl_recs_valid_id("4f1195b8-6b68-4cd6-a7eb-925bd120e8a", 35));
    TEST("dashes in place", !sl_recs_valid_id("4f1195b86-b68-4cd6-a7eb-925bd120e8ad", 36));
    TEST("hex only", !sl_recs_valid_id("4f1195b8-6b68-4cd6-a7eb-925bd120e8az", 36));
    TEST("no path tricks", !sl_recs_valid_id("../../../../../../../../etc/passwd!!", 36));
    return TEST_DONE();
}
