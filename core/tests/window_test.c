/* window_test.c -- unit tests of the keyed sliding window and the intern
 * table (core/window.c, core/intern.c). */
#include "intern.h"
#include "sl.h"
#include "test.h"
#include "window.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define K1 "6f1c2a5e-0d4b-4c7e-9a3f-2b8d1e5c7a90"
#define K2 "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
#define K3 "ffffffff-0000-4000-8000-123456789abc"
#define ID1 "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
#define ID1_UPPER "1B4E28BA-2FA1-41D2-883F-0016D3CCA427"
#define ID2 "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
#define HDR 80 /* bytes of a key's header (window.h) */

/* ==================== Helpers ==================== */

static struct sl_window *mk(int64_t length, size_t max_entries, size_t max_keys,
                            bool dedupe, size_t nfields,
                            const enum sl_window_agg *aggs) {
    struct sl_window_conf c = {length, max_entries, max_keys, dedupe, nfields, aggs, 0};
    char err[SL_ERRLEN];
    struct sl_window *w = sl_window_create(&c, err, sizeof(err));
    if (!w) {
        printf("# create failed: %s\n", err);
        exit(1);
    }
    return w;
}

static struct sl_value str(const char *s) {
    return (struct sl_value){.type = SL_VAL_STR, .s = s, .len = strlen(s)};
}

static struct sl_value num(double d) {
    return (struct sl_value){.type = SL_VAL_NUM, .num = d};
}

/* Adds one entry with a single string field (or none when s is NULL). */
static int add(struct sl_window *w, const char *key, int64_t t, const char *id,
               const char *s) {
    struct sl_value v = s ? str(s) : (struct sl_value){.type = SL_VAL_NONE};
    return sl_window_add(w, key, strlen(key), t, id, id ? strlen(id) : 0, &v);
}

/* The view's times, comma-separated, e.g. "10,20,30". */
static const char *times(const struct sl_window *w) {
    static char buf[1024];
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sl_window_entries(w); i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%lld", i ? "," : "",
                              (long long)sl_window_entry_time(w, i));
    return buf;
}

/* The view's field 0 strings, comma-separated. */
static const char *strs(const struct sl_window *w) {
    static char buf[1024];
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sl_window_entries(w); i++) {
        struct sl_value v;
        sl_window_entry_value(w, i, 0, &v);
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%.*s", i ? "," : "",
                              (int)v.len, v.type == SL_VAL_STR ? v.s : "-");
    }
    return buf;
}

static struct sl_window_stats stats(const struct sl_window *w) {
    struct sl_window_stats st;
    sl_window_stats(w, &st);
    return st;
}

/* ==================== Cases ==================== */

static void entry_exactly_length_old_has_left(void) {
    struct sl_window *w = mk(100, 0, 0, false, 1, NULL);
    add(w, K1, 1000, NULL, "a");
    add(w, K1, 1050, NULL, "b");
    TEST("entry 99 ms old stays", add(w, K1, 1099, NULL, "c") == SL_WINDOW_ADDED &&
                                      strcmp(times(w), "1000,1050,1099") == 0);
    TEST("entry exactly length old leaves on add", add(w, K1, 1100, NULL, "d") == SL_WINDOW_ADDED &&
                                                       strcmp(times(w), "1050,1099,1100") == 0);
    TEST("entry exactly length older than newest is too old",
         add(w, K1, 1000, NULL, "x") == SL_WINDOW_TOO_OLD && sl_window_entries(w) == 0);
    TEST("entry one ms inside the window is accepted out of order",
         add(w, K1, 1001, NULL, "y") == SL_WINDOW_ADDED &&
         strcmp(times(w), "1001,1050,1099,1100") == 0);
    TEST("expire keeps a key while its newest entry is in the window",
         sl_window_expire(w, 1199) == 0 && sl_window_select(w, K1, 36) == 4);
    TEST("expire at newest + length frees the key",
         sl_window_expire(w, 1200) == 1 && stats(w).keys == 0 && stats(w).expired_keys == 1 &&
         stats(w).entries == 0 && stats(w).expired_entries == 1 + 4);
    sl_window_destroy(w);
}

static void equal_times_keep_insertion_order(void) {
    struct sl_window *w = mk(1000, 0, 0, false, 1, NULL);
    add(w, K1, 500, NULL, "a");
    add(w, K1, 500, NULL, "b");
    add(w, K1, 600, NULL, "c");
    add(w, K1, 500, NULL, "d");
    TEST("equal times are kept in insertion order, also out of order",
         strcmp(strs(w), "a,b,d,c") == 0 && strcmp(times(w), "500,500,500,600") == 0);
    sl_window_destroy(w);
}

static void out_of_order_placed_by_time(void) {
    struct sl_window *w = mk(1000, 0, 0, false, 1, NULL);
    add(w, K1, 100, NULL, "a");
    add(w, K1, 300, NULL, "c");
    add(w, K1, 200, NULL, "b");
    add(w, K1, 50, NULL, "z");
    TEST("out-of-order entries are placed by time, view oldest first",
         strcmp(times(w), "50,100,200,300") == 0 && strcmp(strs(w), "z,a,b,c") == 0);
    sl_window_expire(w, 1299);
    TEST("entries that left stay until the key's next add or its end",
         sl_window_select(w, K1, 36) == 4);
    add(w, K1, 1150, NULL, "d");
    TEST("the next add drops them", strcmp(times(w), "200,300,1150") == 0);
    TEST("the key ends when its newest entry leaves",
         sl_window_expire(w, 2149) == 0 && sl_window_expire(w, 2150) == 1);
    sl_window_destroy(w);
}

static void too_old_dropped_and_counted(void) {
    struct sl_window *w = mk(100, 0, 0, false, 1, NULL);
    add(w, K1, 1000, NULL, "a");
    TEST("entry older than newest - length is too old", add(w, K1, 850, NULL, "b") == SL_WINDOW_TOO_OLD);
    TEST("too old leaves the view empty", sl_window_entries(w) == 0);
    TEST("too old is counted and not kept", stats(w).too_old == 1 && stats(w).entries == 1);
    TEST("a too old entry does not touch other keys", add(w, K2, 850, NULL, "b") == SL_WINDOW_ADDED);
    TEST("times beyond 2^62 are refused as too old",
         add(w, K3, INT64_MAX, NULL, "c") == SL_WINDOW_TOO_OLD && stats(w).too_old == 2);
    sl_window_destroy(w);
}

static void dedupe_by_id(void) {
    struct sl_window *w = mk(100, 0, 0, true, 1, NULL);
    TEST("first id is added", add(w, K1, 1000, ID1, "a") == SL_WINDOW_ADDED);
    TEST("same id re-sent is a duplicate", add(w, K1, 1010, ID1, "a") == SL_WINDOW_DUPLICATE &&
                                               sl_window_entries(w) == 0);
    TEST("same UUID in upper case is a duplicate", add(w, K1, 1010, ID1_UPPER, "a") == SL_WINDOW_DUPLICATE);
    TEST("duplicates are counted, not kept",
         stats(w).duplicates == 2 && sl_window_select(w, K1, 36) == 1);
    TEST("same id on another key is not a duplicate", add(w, K2, 1010, ID1, "a") == SL_WINDOW_ADDED);
    TEST("another id is added", add(w, K1, 1020, ID2, "b") == SL_WINDOW_ADDED);
    TEST("plain ids are deduped", add(w, K1, 1030, "ev-17", "c") == SL_WINDOW_ADDED &&
                                      add(w, K1, 1031, "ev-17", "c") == SL_WINDOW_DUPLICATE);
    TEST("plain ids differing by one byte are distinct", add(w, K1, 1032, "ev-18", "d") == SL_WINDOW_ADDED);
    TEST("entries without id are never duplicates",
         add(w, K1, 1033, NULL, "e") == SL_WINDOW_ADDED && add(w, K1, 1034, NULL, "e") == SL_WINDOW_ADDED);
    TEST("the nil UUID is an id like any other",
         add(w, K1, 1035, "00000000-0000-0000-0000-000000000000", "f") == SL_WINDOW_ADDED &&
         add(w, K1, 1036, "00000000-0000-0000-0000-000000000000", "f") == SL_WINDOW_DUPLICATE);
    TEST("same id after it left the window is accepted",
         add(w, K1, 1100, ID1, "g") == SL_WINDOW_ADDED &&
         strcmp(strs(w), "b,c,d,e,e,f,g") == 0);
    sl_window_destroy(w);
}

static void max_entries_drops_oldest(void) {
    struct sl_window *w = mk(10000, 3, 0, false, 1, NULL);
    add(w, K1, 100, NULL, "a");
    add(w, K1, 200, NULL, "b");
    add(w, K1, 300, NULL, "c");
    add(w, K1, 400, NULL, "d");
    TEST("beyond max_entries the oldest goes", strcmp(strs(w), "b,c,d") == 0);
    add(w, K1, 250, NULL, "x");
    TEST("an out-of-order entry evicts the oldest", strcmp(strs(w), "x,c,d") == 0);
    TEST("an entry older than all of a full key is too old",
         add(w, K1, 150, NULL, "y") == SL_WINDOW_TOO_OLD && stats(w).too_old == 1);
    TEST("evicted entries are counted", stats(w).evicted_entries == 2 && stats(w).entries == 3);
    sl_window_destroy(w);
}

static void max_keys_evicts_least_recent(void) {
    struct sl_window *w = mk(10000, 0, 2, false, 1, NULL);
    add(w, K1, 100, NULL, "a");
    add(w, K2, 110, NULL, "b");
    add(w, K1, 120, NULL, "c");
    TEST("adding a third key evicts the least recently added-to",
         add(w, K3, 130, NULL, "d") == SL_WINDOW_ADDED && sl_window_entries(w) == 1 &&
         sl_window_select(w, K2, 36) == 0 && sl_window_select(w, K1, 36) == 2);
    TEST("key eviction is counted", stats(w).evicted_keys == 1 && stats(w).keys == 2 &&
                                        stats(w).entries == 3);
    add(w, "named-key", 140, NULL, "e");
    TEST("LRU order follows adds, not selects",
         sl_window_select(w, K1, 36) == 0 && sl_window_select(w, K3, 36) == 1);
    sl_window_destroy(w);
}

static void expiry_frees_memory(void) {
    enum sl_window_agg aggs[2] = {SL_WINDOW_LIST, SL_WINDOW_LIST};
    struct sl_window *w = mk(300000, 0, 0, true, 2, aggs);
    size_t base = stats(w).bytes;
    char key[64], id[64], slug[32];

    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "%08x-0000-4000-8000-%012x", i, i);
        for (int j = 0; j < 7; j++) {
            struct sl_value v[2];
            snprintf(id, sizeof(id), "%08x-1111-4000-8000-%012x", i, j);
            snprintf(slug, sizeof(slug), "product-%d", (i + j) % 50);
            v[0] = str(slug);
            v[1] = num(1795667676496.0 + j);
            sl_window_add(w, key, strlen(key), 1000000 + i * 10 + j, id, strlen(id), v);
        }
    }
    struct sl_window_stats st = stats(w);
    TEST("keys, entries and strings are held", st.keys == 2000 && st.entries == 14000 &&
                                                   st.strings == 50 && st.bytes > base);
    TEST("expire before anything leaves frees nothing",
         sl_window_expire(w, 1000000 + 300000 - 1) == 0 && stats(w).entries == 14000);
    size_t freed = sl_window_expire(w, 1000000 + 300000 + 10000);
    st = stats(w);
    TEST("expire frees the keys whose entries all left", freed == 1000 && st.keys == 1000 &&
                                                             st.expired_keys == 1000);
    TEST("expire far later frees everything",
         sl_window_expire(w, 5000000000LL) == 1000 && stats(w).keys == 0);
    st = stats(w);
    TEST("after expiry: 0 keys, 0 entries, 0 strings", st.keys == 0 && st.entries == 0 && st.strings == 0);
    TEST("after expiry: bytes back to the empty window's", st.bytes == base);
    TEST("expired entries are counted", st.expired_entries == 14000);
    sl_window_destroy(w);
}

static void expire_across_wheel_turns(void) {
    struct sl_window *w = mk(1000, 0, 0, false, 0, NULL);
    TEST("expire on an empty window does nothing", sl_window_expire(w, 123456) == 0);
    /* Keys due over ten turns of the wheel, expired in uneven steps. */
    for (int i = 0; i < 100; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%d", i);
        sl_window_add(w, key, strlen(key), (int64_t)i * 100, NULL, 0, NULL);
    }
    size_t total = 0;
    int ok = 1;
    for (int64_t now = 0; now <= 12000; now += 37) {
        total += sl_window_expire(w, now);
        /* Key i is due at i * 100 + 1000. */
        int64_t want = now < 1000 ? 0 : (now - 1000) / 100 + 1;
        if (want > 100) want = 100;
        if ((int64_t)total != want) ok = 0;
    }
    TEST("every key is freed at its time, whatever the steps", ok && total == 100);
    sl_window_add(w, "late", 4, 5, NULL, 0, NULL);
    TEST("a key due before the last expire is freed by the next",
         sl_window_expire(w, 12000) == 1 && stats(w).keys == 0);
    sl_window_add(w, "back", 4, 50000, NULL, 0, NULL);
    TEST("expire with an earlier time than before changes nothing",
         sl_window_expire(w, 100) == 0 && stats(w).keys == 1);
    TEST("a jump of many wheel turns frees the key", sl_window_expire(w, 1LL << 40) == 1);
    sl_window_destroy(w);
}

static void interning_shares_strings(void) {
    struct sl_window *w = mk(1000, 0, 0, false, 1, NULL);
    size_t base = stats(w).bytes;
    for (int i = 0; i < 100; i++) {
        char key[32];
        snprintf(key, sizeof(key), "visitor-%d", i);
        add(w, key, i, NULL, "shared-slug");
        add(w, key, i, NULL, i % 2 ? "odd" : "even");
    }
    TEST("a slug shared by 100 keys is stored once", stats(w).strings == 3);
    int ok = 1;
    for (int i = 0; i < 99; i++) {
        sl_window_expire(w, i + 1000);
        if (stats(w).strings != (i < 98 ? 3u : 2u) || stats(w).keys != (size_t)(99 - i)) ok = 0;
    }
    TEST("the slug stays while any entry holds it", ok);
    sl_window_expire(w, 99 + 1000);
    TEST("the slug goes with its last entry", stats(w).strings == 0 && stats(w).bytes == base);
    sl_window_destroy(w);

    struct sl_intern *in = sl_intern_create();
    size_t b0 = sl_intern_bytes(in);
    uint32_t a = sl_intern_add(in, "a\0b", 3), b = sl_intern_add(in, "a", 1);
    size_t len;
    TEST("interned strings keep NUL bytes", a != b && memcmp(sl_intern_str(in, a, &len), "a\0b", 3) == 0 && len == 3);
    TEST("adding again takes a reference", sl_intern_add(in, "a\0b", 3) == a && sl_intern_refs(in, a) == 2);
    sl_intern_unref(in, a);
    TEST("unref keeps the string while referenced", sl_intern_find(in, "a\0b", 3) == a);
    sl_intern_unref(in, a);
    TEST("last unref frees it", sl_intern_find(in, "a\0b", 3) == SL_INTERN_NONE && sl_intern_count(in) == 1);
    TEST("a freed id is reused", sl_intern_add(in, "c", 1) == a);
    char s[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(s, sizeof(s), "s%d", i);
        sl_intern_add(in, s, strlen(s));
    }
    for (int i = 0; i < 1000; i += 2) {
        snprintf(s, sizeof(s), "s%d", i);
        sl_intern_unref(in, sl_intern_find(in, s, strlen(s)));
    }
    ok = 1;
    for (int i = 0; i < 1000; i++) {
        snprintf(s, sizeof(s), "s%d", i);
        uint32_t id = sl_intern_find(in, s, strlen(s));
        if ((i % 2 == 0) != (id == SL_INTERN_NONE)) ok = 0;
        if (id != SL_INTERN_NONE && strcmp(sl_intern_str(in, id, NULL), s) != 0) ok = 0;
    }
    TEST("lookups stay right after many deletions", ok && sl_intern_count(in) == 502);
    for (int i = 1; i < 1000; i += 2) {
        snprintf(s, sizeof(s), "s%d", i);
        sl_intern_unref(in, sl_intern_find(in, s, strlen(s)));
    }
    sl_intern_unref(in, b);
    sl_intern_unref(in, sl_intern_find(in, "c", 1));
    TEST("an emptied table costs what a new one does", sl_intern_count(in) == 0 && sl_intern_bytes(in) == b0);
    sl_intern_destroy(in);
}

static void bytes_accounting(void) {
    struct sl_window *w = mk(300000, 0, 0, true, 1, NULL);
    size_t base = stats(w).bytes, one;
    add(w, "abc", 1, NULL, NULL);
    one = stats(w).bytes - base;
    /* header 80 + name padded to 8 + one entry of 8 (time) + 16 (id) + 8 (value) */
    TEST("a named key with one entry costs header, name and entry", one == HDR + 8 + 32);
    sl_window_destroy(w);

    w = mk(300000, 0, 0, true, 1, NULL);
    base = stats(w).bytes;
    char key[40], id[40];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "%08x-0000-4000-8000-%012x", i * 7919, i);
        for (int j = 0; j < 10; j++) {
            snprintf(id, sizeof(id), "%08x-2222-4000-8000-%012x", i, j);
            add(w, key, 1000 + j * 1000, id, "slug");
        }
    }
    struct sl_window_stats st = stats(w);
    double per_key = HDR + (double)(st.bytes - base - HDR * st.keys - 32 * st.entries) / st.keys;
    double per_entry = (double)(st.bytes - base - HDR * st.keys) / st.entries;
    printf("# 10000 UUID keys x 10 entries: %zu bytes; %.1f B/key with table, %.1f B/entry with slack\n",
           st.bytes - base, per_key, per_entry);
    TEST("10 UUID-id entries per key cost at most 128 B per key and 48 B per entry",
         st.bytes - base <= 128 * st.keys + 48 * st.entries);
    TEST("a UUID key costs its header and a share of the table, no name", per_key <= HDR + 2 * 8);
    TEST("an entry with a UUID id and one string costs 32 B", per_entry <= 32 + 8);
    sl_window_destroy(w);
}

static void values_round_trip(void) {
    enum sl_window_agg aggs[3] = {SL_WINDOW_LIST, SL_WINDOW_LIST, SL_WINDOW_LIST};
    struct sl_window *w = mk(1000, 0, 0, false, 3, aggs);
    struct sl_value v[3] = {num(1795667676496.0), {.type = SL_VAL_STR, .s = "n\0ul", .len = 4},
                            {.type = SL_VAL_NONE}};
    sl_window_add(w, K1, 36, 10, NULL, 0, v);
    v[0] = num(NAN);
    v[1] = num(-0.0);
    v[2] = num(INFINITY);
    sl_window_add(w, K1, 36, 20, NULL, 0, v);
    struct sl_value o;
    sl_window_entry_value(w, 0, 0, &o);
    TEST("a millisecond timestamp comes back exact", o.type == SL_VAL_NUM && o.num == 1795667676496.0);
    sl_window_entry_value(w, 0, 1, &o);
    TEST("string bytes come back exact, NUL included", o.type == SL_VAL_STR && o.len == 4 &&
                                                         memcmp(o.s, "n\0ul", 4) == 0);
    sl_window_entry_value(w, 0, 2, &o);
    TEST("a missing value comes back missing", o.type == SL_VAL_NONE);
    sl_window_entry_value(w, 1, 0, &o);
    TEST("NaN comes back NaN", o.type == SL_VAL_NUM && isnan(o.num));
    sl_window_entry_value(w, 1, 1, &o);
    TEST("-0 comes back -0", o.type == SL_VAL_NUM && o.num == 0 && signbit(o.num));
    sl_window_entry_value(w, 1, 2, &o);
    TEST("infinity comes back", o.type == SL_VAL_NUM && isinf(o.num));
    TEST("UUID keys match in any case",
         sl_window_select(w, "6F1C2A5E-0D4B-4C7E-9A3F-2B8D1E5C7A90", 36) == 2);
    TEST("a key that is not held selects nothing",
         sl_window_select(w, K2, 36) == 0 && sl_window_entries(w) == 0);
    sl_window_destroy(w);
}

static void aggregates(void) {
    enum sl_window_agg aggs[5] = {SL_WINDOW_LIST, SL_WINDOW_COUNT, SL_WINDOW_FIRST,
                                  SL_WINDOW_LAST, SL_WINDOW_DISTINCT};
    struct sl_window *w = mk(1000, 0, 0, false, 5, aggs);
    const char *seq[] = {"b", "a", NULL, "b", "c", "a", NULL};
    struct sl_value out[64];
    for (int i = 0; i < 7; i++) {
        struct sl_value v[5];
        for (int f = 0; f < 5; f++)
            v[f] = seq[i] ? str(seq[i]) : (struct sl_value){.type = SL_VAL_NONE};
        sl_window_add(w, K1, 36, 100 + i, NULL, 0, v);
    }
    size_t n = sl_window_aggregate(w, 0, out);
    TEST("LIST gives present values oldest first", n == 5 && out[0].s[0] == 'b' && out[4].s[0] == 'a');
    n = sl_window_aggregate(w, 1, out);
    TEST("COUNT counts present values", n == 1 && out[0].type == SL_VAL_NUM && out[0].num == 5);
    n = sl_window_aggregate(w, 2, out);
    TEST("FIRST gives the oldest value", n == 1 && out[0].s[0] == 'b');
    n = sl_window_aggregate(w, 3, out);
    TEST("LAST gives the newest present value", n == 1 && out[0].s[0] == 'a');
    n = sl_window_aggregate(w, 4, out);
    TEST("DISTINCT gives each value once, first seen first",
         n == 3 && out[0].s[0] == 'b' && out[1].s[0] == 'a' && out[2].s[0] == 'c');
    sl_window_destroy(w);

    enum sl_window_agg d = SL_WINDOW_DISTINCT;
    w = mk(100000, 0, 0, false, 1, &d);
    for (int i = 0; i < 60; i++) {
        struct sl_value v = num(i % 3 == 2 ? -0.0 : (double)(i % 20));
        sl_window_add(w, K1, 36, i, NULL, 0, &v);
    }
    n = sl_window_aggregate(w, 0, out);
    bool no_minus_zero = true;
    for (size_t i = 0; i < n; i++) no_minus_zero = no_minus_zero && !signbit(out[i].num);
    TEST("DISTINCT over many entries compares numbers by value (0 == -0)",
         n == 20 && out[0].num == 0 && out[1].num == 1 && no_minus_zero);
    sl_window_destroy(w);
}

static void bad_conf_refused(void) {
    struct sl_window_conf c = {0, 0, 0, false, 0, NULL, 0};
    char err[SL_ERRLEN] = "";
    TEST("zero length is refused with a reason", sl_window_create(&c, err, sizeof(err)) == NULL &&
                                                     strstr(err, "length") != NULL);
    enum sl_window_agg bad = (enum sl_window_agg)42;
    c = (struct sl_window_conf){1000, 0, 0, false, 1, &bad, 0};
    TEST("an unknown aggregation is refused", sl_window_create(&c, err, sizeof(err)) == NULL);
    c = (struct sl_window_conf){1000, 0, 0, false, 0, NULL, -1};
    TEST("a negative max_skew is refused with a reason",
         sl_window_create(&c, err, sizeof(err)) == NULL && strstr(err, "max_skew") != NULL);
    sl_window_destroy(NULL);
    TEST("destroy(NULL) does nothing", 1);
}

/* ==================== Reference model ==================== */

/* A naive window: arrays scanned linearly, ids compared as canonical text. */
#define M_KEYS 64
#define M_ENTRIES 4096
struct m_entry {
    int64_t t;
    char id[40];  /* canonical id text, "<none>" for none */
    int vtype[2]; /* 0 none, 1 str, 2 num */
    char vs[2][16];
    double vn[2];
};
struct m_key {
    bool live;
    char name[40];
    uint64_t active;
    int n;
    struct m_entry *e;
};
struct model {
    int64_t length;
    size_t max_entries, max_keys;
    bool dedupe;
    struct m_key keys[M_KEYS];
    uint64_t clock;
    struct sl_window_stats st;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void canon(const char *s, char *out) {
    size_t n = strlen(s);
    bool uuid = n == 36 && s[8] == '-';
    for (size_t i = 0; i <= n; i++)
        out[i] = uuid && s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 32) : s[i];
}

static int m_find(struct model *m, const char *name) {
    char c[40];
    canon(name, c);
    for (int i = 0; i < M_KEYS; i++)
        if (m->keys[i].live && strcmp(m->keys[i].name, c) == 0) return i;
    return -1;
}

static void m_remove(struct model *m, struct m_key *k, int n) {
    memmove(k->e, k->e + n, (size_t)(k->n - n) * sizeof(*k->e));
    k->n -= n;
    m->st.entries -= (size_t)n;
}

static int m_add(struct model *m, const char *name, int64_t t, const char *id,
                 const struct m_entry *ne) {
    char cid[40] = "<none>";
    int ki = m_find(m, name);
    bool fresh = ki < 0;
    struct m_key *k;
    if (id) canon(id, cid);
    if (ki >= 0) {
        k = &m->keys[ki];
        int64_t newest = k->e[k->n - 1].t;
        if (t <= newest - m->length) { m->st.too_old++; return SL_WINDOW_TOO_OLD; }
        int64_t cutoff = (t > newest ? t : newest) - m->length;
        int drop = 0, evict = 0;
        while (drop < k->n && k->e[drop].t <= cutoff) drop++;
        if (m->max_entries && (size_t)(k->n - drop) >= m->max_entries) {
            if (t < k->e[drop].t) { m->st.too_old++; return SL_WINDOW_TOO_OLD; }
            evict = k->n - drop - (int)m->max_entries + 1;
        }
        if (m->dedupe && id)
            for (int i = drop; i < k->n; i++)
                if (strcmp(k->e[i].id, cid) == 0) { m->st.duplicates++; return SL_WINDOW_DUPLICATE; }
        m_remove(m, k, drop + evict);
        m->st.expired_entries += (uint64_t)drop;
        m->st.evicted_entries += (uint64_t)evict;
    } else {
        for (ki = 0; m->keys[ki].live; ki++) {}
        k = &m->keys[ki];
        k->live = true;
        canon(name, k->name);
        k->n = 0;
        m->st.keys++;
    }
    int pos = k->n;
    while (pos > 0 && k->e[pos - 1].t > t) pos--;
    memmove(k->e + pos + 1, k->e + pos, (size_t)(k->n - pos) * sizeof(*k->e));
    k->e[pos] = *ne;
    k->e[pos].t = t;
    strcpy(k->e[pos].id, cid);
    k->n++;
    k->active = ++m->clock;
    m->st.entries++;
    if (fresh && m->max_keys && m->st.keys > m->max_keys) {
        int lru = -1;
        for (int i = 0; i < M_KEYS; i++)
            if (m->keys[i].live && (lru < 0 || m->keys[i].active < m->keys[lru].active)) lru = i;
        if (lru < 0) abort(); /* there are two keys at least */
        m_remove(m, &m->keys[lru], m->keys[lru].n);
        m->keys[lru].live = false;
        m->st.keys--;
        m->st.evicted_keys++;
    }
    return SL_WINDOW_ADDED;
}

static size_t m_expire(struct model *m, int64_t now) {
    size_t freed = 0;
    for (int i = 0; i < M_KEYS; i++) {
        struct m_key *k = &m->keys[i];
        if (!k->live || k->e[k->n - 1].t > now - m->length) continue;
        m->st.expired_entries += (uint64_t)k->n;
        m_remove(m, k, k->n);
        {
            k->live = false;
            m->st.keys--;
            m->st.expired_keys++;
            freed++;
        }
    }
    return freed;
}

static void uuid_keys_and_ids_parsed_exactly(void) {
    /* Bytes next to the hex ranges, and bytes >= 0x80 that alias them. */
    static const unsigned char near[] = {'/', ':', '@', 'G', '`', 'g', 0xb0, 0xe1, 0xc1, 0};
    struct sl_window *w = mk(1000, 0, 0, false, 0, NULL);
    size_t base = stats(w).bytes, uuid_cost, named_cost;
    char key[37];
    bool ok = true;

    sl_window_add(w, K1, 36, 1, NULL, 0, NULL);
    uuid_cost = stats(w).bytes - base;
    TEST("a UUID key costs its header and an entry, no name", uuid_cost == HDR + 8);
    for (size_t pos = 0; pos < 36; pos++) {
        if (pos == 8 || pos == 13 || pos == 18 || pos == 23) continue;
        for (size_t c = 0; c < sizeof(near); c++) {
            struct sl_window *one = mk(1000, 0, 0, false, 0, NULL);
            size_t before = stats(one).bytes;
            memcpy(key, K1, 37);
            key[pos] = (char)near[c];
            ok &= sl_window_add(one, key, 36, 1, NULL, 0, NULL) == SL_WINDOW_ADDED;
            named_cost = stats(one).bytes - before;
            ok &= named_cost == HDR + 40 + 8;
            sl_window_destroy(one);
        }
    }
    TEST("a non-hex byte at any digit makes the key a plain name", ok);
    TEST("upper-case UUID key is the same key", sl_window_select(w, "6F1C2A5E-0D4B-4C7E-9A3F-2B8D1E5C7A90", 36) == 1);
    sl_window_destroy(w);

    w = mk(1000, 0, 0, true, 0, NULL);
    ok = true;
    for (int i = 0; i < 256; i++) {
        char id[37];
        snprintf(id, sizeof(id), "%02x%06x-0000-4000-8000-%012x", i, i * 7, i * 31);
        ok &= sl_window_add(w, K1, 36, 10 + i, id, 36, NULL) == SL_WINDOW_ADDED;
        for (size_t j = 0; id[j]; j++) id[j] = (char)(id[j] >= 'a' && id[j] <= 'f' ? id[j] - 32 : id[j]);
        ok &= sl_window_add(w, K1, 36, 10 + i, id, 36, NULL) == SL_WINDOW_DUPLICATE;
    }
    TEST("every byte value of a UUID id round-trips, any case", ok && stats(w).entries == 256);
    sl_window_destroy(w);
}

static void rejected_adds_keep_no_strings(void) {
    struct sl_window *w = mk(100, 0, 0, true, 1, NULL);
    size_t base = stats(w).bytes;
    add(w, K1, 1000, ID1, "a");
    TEST("a duplicate with a new string keeps no string",
         add(w, K1, 1001, ID1, "new") == SL_WINDOW_DUPLICATE && stats(w).strings == 1);
    TEST("a too old entry with a new string keeps no string",
         add(w, K1, 800, ID2, "old") == SL_WINDOW_TOO_OLD && stats(w).strings == 1);
    TEST("a rejected add with the key's own string keeps its count",
         add(w, K1, 1002, ID1, "a") == SL_WINDOW_DUPLICATE && stats(w).strings == 1 &&
         add(w, K1, 1003, ID2, "a") == SL_WINDOW_ADDED && strcmp(strs(w), "a,a") == 0);
    sl_window_expire(w, 5000);
    TEST("all strings go with the key", stats(w).strings == 0 && stats(w).bytes == base);
    sl_window_destroy(w);
}

static void many_fields_round_trip(void) {
    enum { NF = 11 };
    struct sl_window *w = mk(1000, 0, 0, true, NF, NULL);
    size_t base = stats(w).bytes;
    struct sl_value v[NF], out;
    char s[NF][8];
    bool ok = true;

    for (int f = 0; f < NF; f++) {
        snprintf(s[f], sizeof(s[f]), "f%d", f);
        v[f] = f % 3 == 0 ? num(f * 1.5) : f % 3 == 1 ? str(s[f]) : (struct sl_value){.type = SL_VAL_NONE};
    }
    ok &= sl_window_add(w, K1, 36, 1000, ID1, 36, v) == SL_WINDOW_ADDED;
    ok &= sl_window_add(w, K1, 36, 1001, ID1, 36, v) == SL_WINDOW_DUPLICATE;
    for (int f = 0; f < NF; f++) {
        sl_window_select(w, K1, 36);
        sl_window_entry_value(w, 0, (size_t)f, &out);
        ok &= out.type == v[f].type;
        if (out.type == SL_VAL_NUM) ok &= out.num == v[f].num;
        if (out.type == SL_VAL_STR) ok &= out.len == v[f].len && memcmp(out.s, v[f].s, out.len) == 0;
    }
    TEST("11 fields of each type round-trip", ok);
    TEST("a duplicate with 11 fields keeps no extra string", stats(w).strings == 4);
    sl_window_expire(w, 5000);
    TEST("11-field strings go with the key", stats(w).strings == 0 && stats(w).bytes == base);
    sl_window_destroy(w);
}

/* The window's view equals the model's key (or both are empty). */
static bool same_view(const struct sl_window *w, const struct m_key *k) {
    size_t n = sl_window_entries(w);
    if (!k) return n == 0;
    if (n != (size_t)k->n) return false;
    for (size_t i = 0; i < n; i++) {
        if (sl_window_entry_time(w, i) != k->e[i].t) return false;
        for (size_t f = 0; f < 2; f++) {
            struct sl_value v;
            sl_window_entry_value(w, i, f, &v);
            if ((int)v.type != k->e[i].vtype[f]) return false;
            if (v.type == SL_VAL_STR && (v.len != strlen(k->e[i].vs[f]) ||
                                         memcmp(v.s, k->e[i].vs[f], v.len) != 0)) return false;
            if (v.type == SL_VAL_NUM && v.num != k->e[i].vn[f]) return false;
        }
    }
    return true;
}

static bool same_counters(const struct sl_window_stats *a, const struct sl_window_stats *b) {
    return a->keys == b->keys && a->entries == b->entries && a->duplicates == b->duplicates &&
           a->too_old == b->too_old && a->evicted_entries == b->evicted_entries &&
           a->evicted_keys == b->evicted_keys && a->expired_keys == b->expired_keys &&
           a->expired_entries == b->expired_entries;
}

static void matches_reference_model(void) {
    static const char *ids[] = {ID1, ID1_UPPER, ID2, "x1", "x2", "x3", "x4", "a5",
                                "00000000-0000-0000-0000-000000000000", ""};
    static const char *slugs[] = {"alpha", "beta", "gamma", "delta", "", "eps\001"};
    int failures = 0, rounds = 0;
    for (int round = 0; round < 40; round++) {
        struct model *m = sl_calloc(1, sizeof(*m));
        m->length = 50 + rnd(2000);
        m->max_entries = rnd(3) ? 0 : 1 + rnd(8);
        m->max_keys = rnd(3) ? 0 : 1 + rnd(20);
        m->dedupe = rnd(2);
        for (int i = 0; i < M_KEYS; i++) m->keys[i].e = sl_calloc(M_ENTRIES, sizeof(struct m_entry));
        struct sl_window *w = mk(m->length, m->max_entries, m->max_keys, m->dedupe, 2, NULL);
        size_t base = stats(w).bytes;
        int64_t now = (int64_t)rnd(100000) - 50000;
        char names[40][40];
        for (int i = 0; i < 40; i++) {
            if (i % 2) snprintf(names[i], 40, "%08X-%04x-4000-8000-%012d", i * 977, i, i);
            else snprintf(names[i], 40, "user:%d", i);
        }
        for (int op = 0; op < 6000; op++) {
            uint32_t r = rnd(100);
            if (r < 3) {
                int64_t at = now - (int64_t)rnd((uint32_t)m->length * 2);
                size_t a = sl_window_expire(w, at), b = m_expire(m, at);
                if (a != b) failures++;
                continue;
            }
            if (r < 60) now += rnd(40);
            else if (r < 62) now += rnd(5000);
            const char *name = names[rnd(40)];
            int64_t t = now - (rnd(4) ? 0 : (int64_t)rnd((uint32_t)m->length + 50));
            const char *id = rnd(5) ? ids[rnd(10)] : NULL;
            struct m_entry ne = {0};
            struct sl_value v[2];
            for (int f = 0; f < 2; f++) {
                ne.vtype[f] = (int)rnd(3);
                if (ne.vtype[f] == 1) {
                    strcpy(ne.vs[f], slugs[rnd(6)]);
                    v[f] = str(ne.vs[f]);
                } else if (ne.vtype[f] == 2) {
                    ne.vn[f] = 1795667676496.0 + rnd(1000);
                    v[f] = num(ne.vn[f]);
                } else {
                    v[f] = (struct sl_value){.type = SL_VAL_NONE};
                }
            }
            int a = sl_window_add(w, name, strlen(name), t, id, id ? strlen(id) : 0, v);
            int b = m_add(m, name, t, id, &ne);
            int ki = m_find(m, name);
            if (a != b || !same_view(w, a == SL_WINDOW_ADDED ? &m->keys[ki] : NULL)) failures++;
            if (op % 97 == 0) {
                for (int i = 0; i < 40; i++) {
                    int mk_i = m_find(m, names[i]);
                    sl_window_select(w, names[i], strlen(names[i]));
                    if (!same_view(w, mk_i >= 0 ? &m->keys[mk_i] : NULL)) failures++;
                }
            }
            struct sl_window_stats st = stats(w);
            if (!same_counters(&st, &m->st)) failures++;
        }
        sl_window_expire(w, now + m->length + 5000);
        m_expire(m, now + m->length + 5000);
        struct sl_window_stats st = stats(w);
        if (!same_counters(&st, &m->st) || st.keys || st.entries || st.strings || st.bytes != base)
            failures++;
        sl_window_destroy(w);
        for (int i = 0; i < M_KEYS; i++) free(m->keys[i].e);
        free(m);
        rounds++;
    }
    printf("# %d rounds of 6000 random operations\n", rounds);
    TEST("random adds and expiries match the reference model", failures == 0);
}

/* ==================== Two clocks ==================== */

/* Adds with an arrival time apart from the event time. */
static int add_at(struct sl_window *w, const char *key, int64_t t, int64_t arrival,
                  const char *id) {
    struct sl_value v = str(key);
    return sl_window_add_at(w, key, strlen(key), t, arrival, id, id ? strlen(id) : 0, &v);
}

static void future_entry_refused(void) {
    int64_t now = 1795667677000LL, year = 366LL * 86400 * 1000;
    struct sl_window_conf c = {300000, 50, 0, true, 1, NULL, 120000};
    char err[SL_ERRLEN];
    struct sl_window *w = sl_window_create(&c, err, sizeof(err));

    TEST("an entry up to max_skew ahead of its arrival is in",
         add_at(w, K1, now + 120000, now, ID1) == SL_WINDOW_ADDED);
    TEST("one more ms ahead is refused as future and counted",
         add_at(w, K2, now + 120001, now, ID2) == SL_WINDOW_FUTURE && sl_window_entries(w) == 0 &&
         stats(w).future == 1 && stats(w).keys == 1);
    TEST("a year ahead is refused", add_at(w, K2, now + year, now, ID2) == SL_WINDOW_FUTURE);
    TEST("a refused entry leaves no key and no id behind: the same id later is in",
         sl_window_select(w, K2, 36) == 0 && add_at(w, K2, now + 10, now + 10, ID2) == SL_WINDOW_ADDED);
    sl_window_destroy(w);

    c.max_skew_ms = 0;
    w = sl_window_create(&c, err, sizeof(err));
    TEST("max_skew 0 bounds nothing", add_at(w, K1, now + year, now, ID1) == SL_WINDOW_ADDED);
    sl_window_destroy(w);
}

/* The attack of issue 13: one key's clock a year ahead must not age the
 * windows of the other keys of its partition. */
static void one_clock_does_not_age_other_keys(void) {
    int64_t now = 1795667677000LL, year = 366LL * 86400 * 1000;
    struct sl_window *w = mk(300000, 50, 0, true, 1, NULL);

    add_at(w, K1, now, now, "a1");
    add_at(w, K1, now + 1000, now + 1000, "a2");
    add_at(w, K1, now + 2000, now + 2000, "a3");
    TEST("a key whose event time is a year ahead of its arrival is its own business",
         add_at(w, K2, now + year, now + 2500, "b1") == SL_WINDOW_ADDED);
    TEST("expire on the arrival clock keeps every key that arrived within a length",
         sl_window_expire(w, now + 2500 + 1000) == 0 && stats(w).keys == 2);
    TEST("the other key's next entry sees its whole window",
         add_at(w, K1, now + 3000, now + 3000, "a4") == SL_WINDOW_ADDED && sl_window_entries(w) == 4);
    TEST("and its re-sent entry is still a duplicate",
         add_at(w, K1, now + 2000, now + 4000, "a3") == SL_WINDOW_DUPLICATE);
    TEST("a key whose clock lags its arrival by an hour keeps its window while it is active",
         add_at(w, "late", now - 3600000, now + 5000, "l1") == SL_WINDOW_ADDED &&
         sl_window_expire(w, now + 6000) == 0 &&
         add_at(w, "late", now - 3600000 + 1000, now + 6000, "l2") == SL_WINDOW_ADDED &&
         sl_window_entries(w) == 2);
    TEST("a key is freed one length after its latest arrival, not before",
         sl_window_expire(w, now + 3000 + 300000 - 1) == 1 /* K2: arrived at now + 2500 */ &&
         sl_window_select(w, K1, 36) == 4 && sl_window_expire(w, now + 3000 + 300000) == 1 &&
         sl_window_select(w, K1, 36) == 0);
    sl_window_destroy(w);
}

static void arrival_of_a_record(void) {
    TEST("the Kafka timestamp is the arrival", sl_window_arrival(1000, 5000, 100) == 1000);
    TEST("no timestamp: the wall clock", sl_window_arrival(-1, 5000, 100) == 5000);
    TEST("a timestamp up to max_skew ahead of the wall clock is kept",
         sl_window_arrival(5100, 5000, 100) == 5100);
    TEST("further ahead: the wall clock", sl_window_arrival(5101, 5000, 100) == 5000);
    TEST("max_skew 0: any timestamp", sl_window_arrival(999999, 5000, 0) == 999999);
}

static const struct {
    const char *name;
    void (*fn)(void);
} cases[] = {
    {"entry exactly length old", entry_exactly_length_old_has_left},
    {"equal timestamps", equal_times_keep_insertion_order},
    {"out of order", out_of_order_placed_by_time},
    {"too old", too_old_dropped_and_counted},
    {"dedupe", dedupe_by_id},
    {"max entries", max_entries_drops_oldest},
    {"max keys LRU", max_keys_evicts_least_recent},
    {"expiry frees memory", expiry_frees_memory},
    {"expiry across wheel turns", expire_across_wheel_turns},
    {"interning refcounts", interning_shares_strings},
    {"bytes accounting", bytes_accounting},
    {"UUID parsing", uuid_keys_and_ids_parsed_exactly},
    {"rejected adds", rejected_adds_keep_no_strings},
    {"many fields", many_fields_round_trip},
    {"values", values_round_trip},
    {"aggregates", aggregates},
    {"bad conf", bad_conf_refused},
    {"future entries", future_entry_refused},
    {"one clock does not age other keys", one_clock_does_not_age_other_keys},
    {"arrival", arrival_of_a_record},
    {"reference model", matches_reference_model},
};

int main(void) {
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        printf("# %s\n", cases[i].name);
        cases[i].fn();
    }
    return TEST_DONE();
}
