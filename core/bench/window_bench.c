/* window_bench.c -- how fast and how big the keyed sliding window is.
 *
 * The seed scenario's shape: 100k visitors (UUID keys) with 10 product views
 * each inside a 5-minute window, a UUID event id per view (dedupe on), the
 * product slug from a catalogue of 240 as the one field, millisecond
 * timestamps of 2026 with a little disorder. Inputs are made before the
 * clock and the RSS baseline start. Prints plain lines. */
#include "sl.h"
#include "window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NKEYS 100000    /* visitors, unless given as the first argument */
#define PER_KEY 10      /* views per visitor in the window */
#define NSLUGS 240      /* catalogue */
#define LENGTH 300000   /* 5 minutes */
#define T0 1795667676496LL

/* One view as the pipeline step would have it: the key and id text hot in
 * the caller's memory (they come from the event just decoded). */
struct event {
    int64_t t;      /* event time, ms */
    uint16_t slug;  /* index into slugs */
    char key[37];   /* visitor UUID text */
    char id[37];    /* event UUID text */
};

static uint64_t rng = 0x2545f4914f6cdd1dULL;
static uint64_t rnd64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void uuid(char out[37]) {
    uint64_t a = rnd64(), b = rnd64();
    snprintf(out, 37, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
             (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
             (unsigned long long)(b & 0xffffffffffffULL));
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double rss_mb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

/* Events for n views: every key PER_KEY times in random order, times rising
 * over span ms from t0, each up to 2 s early (trackers, batching). */
static struct event *make_events(size_t n, int64_t t0, int64_t span, char (*keys)[37],
                                 size_t nkeys) {
    struct event *ev = sl_malloc(n * sizeof(*ev));
    uint32_t *order = sl_malloc(n * sizeof(*order));
    for (size_t i = 0; i < n; i++) order[i] = (uint32_t)(i % nkeys);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = rnd64() % (i + 1);
        uint32_t k = order[i];
        order[i] = order[j];
        order[j] = k;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(ev[i].key, keys[order[i]], 37);
        ev[i].slug = (uint16_t)(rnd64() % NSLUGS);
        ev[i].t = t0 + (int64_t)((double)i * span / n) - (int64_t)(rnd64() % 2000);
        uuid(ev[i].id);
    }
    free(order);
    return ev;
}

static size_t run(struct sl_window *w, const struct event *ev, size_t n,
                  char (*slugs)[40], size_t *added) {
    size_t sum = 0;
    *added = 0;
    for (size_t i = 0; i < n; i++) {
        const struct event *e = &ev[i];
        struct sl_value v = {.type = SL_VAL_STR, .s = slugs[e->slug],
                             .len = strlen(slugs[e->slug])};
        if (sl_window_add(w, e->key, 36, e->t, e->id, 36, &v) == SL_WINDOW_ADDED) {
            ++*added;
            sum += sl_window_entries(w);
        }
    }
    return sum;
}

int main(int argc, char **argv) {
    static char slugs[NSLUGS][40];
    size_t nkeys = argc > 1 ? strtoul(argv[1], NULL, 10) : NKEYS;
    char (*keys)[37] = sl_malloc((nkeys ? nkeys : 1) * sizeof(*keys));
    enum sl_window_agg agg = SL_WINDOW_LIST;
    struct sl_window_conf conf = {LENGTH, 100, 0, true, 1, &agg, 0};  /* no skew bound */
    struct sl_window_stats st;
    char err[SL_ERRLEN];
    size_t n = nkeys * PER_KEY, added;
    double t, rss0, rss1;

    if (!nkeys) return 1;
    for (size_t i = 0; i < nkeys; i++) uuid(keys[i]);
    for (int i = 0; i < NSLUGS; i++)
        snprintf(slugs[i], sizeof(slugs[i]), "product-%03d-organic-cotton-tee", i);
    /* Fill: 1M views over 4 minutes, all inside the window. */
    struct event *fill = make_events(n, T0, LENGTH - 60000, keys, nkeys);
    /* Slide: 1M more views over the next 5 minutes; old entries leave. */
    struct event *slide = make_events(n, T0 + LENGTH - 60000, LENGTH, keys, nkeys);

    struct sl_window *w = sl_window_create(&conf, err, sizeof(err));
    if (!w) {
        fprintf(stderr, "window: %s\n", err);
        return 1;
    }
    sl_window_stats(w, &st);
    size_t base = st.bytes;
    rss0 = rss_mb();

    t = now_s();
    run(w, fill, n, slugs, &added);
    t = now_s() - t;
    rss1 = rss_mb();
    sl_window_stats(w, &st);
    double bytes = (double)(st.bytes - base);
    double per_entry = 8 + 16 + 8; /* time, id, one field */
    double per_key = (bytes - per_entry * st.entries) / st.keys;
    double fill_rate = added / t;
    printf("window fill: %.2fM updates/s, %zu keys, %zu entries, %zu strings\n",
           fill_rate / 1e6, st.keys, st.entries, st.strings);
    printf("window memory: %.1f B/entry, %.1f B/key overhead, %.1f B/entry all-in "
           "(%.1f MB by stats; rss delta %.1f MB = %.1f B/entry all-in)\n",
           per_entry, per_key, bytes / st.entries, bytes / 1048576.0, rss1 - rss0,
           (rss1 - rss0) * 1048576.0 / st.entries);

    /* Slide with a 1-second expiry timer in event time, as the loop would. */
    int64_t next_tick = slide[0].t;
    double texp = 0;
    size_t sum = 0, total = 0, freed = 0;
    t = now_s();
    for (size_t i = 0; i < n; i += 1000) {
        size_t m = n - i < 1000 ? n - i : 1000;
        sum += run(w, slide + i, m, slugs, &added);
        total += added;
        if (slide[i + m - 1].t >= next_tick) {
            double t1 = now_s();
            freed += sl_window_expire(w, next_tick);
            texp += now_s() - t1;
            next_tick += 1000;
        }
    }
    t = now_s() - t;
    sl_window_stats(w, &st);
    double slide_rate = total / t;
    printf("window slide: %.2fM updates/s (expire included, %.1f ms in expire), "
           "%zu keys, %zu entries, %.1f entries/emit, %zu keys freed\n",
           slide_rate / 1e6, texp * 1e3, st.keys, st.entries, (double)sum / total, freed);
    printf("window counters: added %llu, duplicates %llu, too_old %llu, left %llu\n",
           (unsigned long long)st.added, (unsigned long long)st.duplicates,
           (unsigned long long)st.too_old, (unsigned long long)st.expired_entries);

    /* Re-sent events: the last tenth again, all duplicates. */
    size_t resent = n / 10;
    t = now_s();
    run(w, slide + n - resent, resent, slugs, &added);
    t = now_s() - t;
    printf("window dedupe: %.2fM re-sent events/s dropped, %zu added\n", resent / t / 1e6, added);

    /* Expire everything: the cost of freeing memory. */
    size_t keys_before = st.keys, entries_before = st.entries;
    t = now_s();
    freed = sl_window_expire(w, slide[n - 1].t + LENGTH + 3000);
    t = now_s() - t;
    sl_window_stats(w, &st);
    printf("window expire all: %zu keys and %zu entries freed in %.1f ms "
           "(%.0f ns/key), %zu bytes left of %zu at start\n",
           freed, entries_before, t * 1e3, t * 1e9 / (keys_before ? keys_before : 1),
           st.bytes, base);

    /* An idle tick: nothing to do, cost of passing empty slots. */
    t = now_s();
    for (int i = 0; i < 1000; i++) sl_window_expire(w, slide[n - 1].t + LENGTH + 4000 + i * 1000);
    t = now_s() - t;
    printf("window idle expire: %.0f ns per call\n", t * 1e9 / 1000);

    /* The same fill with max_keys set: the recency list is kept up to date. */
    sl_window_destroy(w);
    conf.max_keys = 1000000;
    w = sl_window_create(&conf, err, sizeof(err));
    t = now_s();
    run(w, fill, n, slugs, &added);
    t = now_s() - t;
    printf("window fill with max_keys (LRU kept): %.2fM updates/s\n", added / t / 1e6);

    printf("window: %.2fM updates/s filling, %.2fM sliding, %zu keys, %zu entries, "
           "%.1f B/entry, %.1f B/key (rss delta %.1f MB)\n",
           fill_rate / 1e6, slide_rate / 1e6, nkeys, n, per_entry, per_key,
           rss1 - rss0);
    sl_window_destroy(w);
    free(fill);
    free(slide);
    free(keys);
    return 0;
}
