/* window.h -- keyed sliding windows of recent entries, freed by timers.
 *
 * For every key (a visitor id) the window keeps the entries of the last
 * length_ms of event time, oldest first, each with an optional event id (for
 * dedupe) and nfields values (strings or numbers). It is the state behind the
 * pipeline's window step: the step calls sl_window_add() once per event and,
 * when the entry was added, reads the key's entries or aggregates back to
 * build its output (Nussknacker's aggregate-sliding, emitWhenEventLeft=false).
 * A periodic timer of the caller calls sl_window_expire() to free the keys
 * whose entries have all left the window. Bounds on entries per key and on
 * keys keep memory finite.
 *
 * Use, in a pipeline step (error handling left out):
 *
 *     r = sl_window_add(w, key, keylen, t, id, idlen, vals);
 *     if (r != SL_WINDOW_ADDED) return;                  (counted; emit nothing)
 *     n = sl_window_entries(w);                          (>= 1)
 *     for (f = 0; f < nfields; f++) {
 *         m = sl_window_aggregate(w, f, out);            (out holds n values)
 *         ... push out[0..m) as field f's variable ...
 *     }
 *
 * and every second or so: sl_window_expire(w, now_ms).
 *
 * Window rule: after an entry at time t is added, a key holds the entries in
 * (newest - length_ms, newest], where newest is the latest time the key has
 * seen. An entry exactly length_ms older than the newest has left.
 *
 * Two clocks: an entry's time t is event time, a client's clock (input to
 * validate, never the system's clock); its arrival is the time the record
 * reached Kafka (its timestamp, see sl_window_arrival()). Event time orders
 * and ages the entries of one key only. Arrival alone drives what concerns
 * every key: an entry more than max_skew_ms ahead of its arrival is refused
 * (SL_WINDOW_FUTURE), and a key last added to at arrival a is freed by an
 * expire() at time a + length_ms, expire's clock being an arrival clock. So
 * no key's clock, however wrong, ages another key (Flink's bounded
 * out-of-orderness, pattern 8 of STYLE.md).
 *
 * Compact storage (measured numbers in core/bench/window_bench.c):
 * - a UUID in canonical 36-char form (any case) is stored as its 16 bytes, for
 *   keys and for ids; another key is copied once per key; another id is
 *   stored as a 128-bit hash of its bytes, so two different such ids count as
 *   duplicates only on a 128-bit collision (not cryptographic: a client can
 *   only forge collisions within its own key). The nil UUID is hashed like a
 *   plain id.
 * - string values are interned (intern.h), refcounted across all keys;
 *   numbers are doubles, exact for integer timestamps below 2^53.
 * - an entry is 8 bytes of time + 16 of id (with dedupe) + 8 per field; a
 *   key is an 80-byte header, its name when it is not a UUID, and 9-19 bytes
 *   of table slot; one allocation per key holds header, name and entries.
 *
 * Not thread-safe: one window belongs to one thread (the loop). Uses
 * intern.c and sl.h; no Lua, no libevent. */
#ifndef SL_WINDOW_H
#define SL_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_WINDOW_ADDED 0     /* The entry is in the window; the view shows its key. */
#define SL_WINDOW_DUPLICATE 1 /* Dedupe on and the id is already in the key's window: dropped. */
#define SL_WINDOW_TOO_OLD 2   /* The entry is outside the key's window: dropped. */
#define SL_WINDOW_FUTURE 3    /* The entry is more than max_skew_ms ahead of its arrival: dropped. */

/* How a field's values over a key's window become one output. All skip
 * entries whose value for the field is SL_VAL_NONE. */
enum sl_window_agg {
    SL_WINDOW_LIST,     /* every value, oldest first */
    SL_WINDOW_COUNT,    /* one number: how many values */
    SL_WINDOW_FIRST,    /* the oldest value (nothing if none) */
    SL_WINDOW_LAST,     /* the newest value (nothing if none) */
    SL_WINDOW_DISTINCT, /* each distinct value once, in order of first appearance */
};

enum sl_value_type { SL_VAL_NONE, SL_VAL_STR, SL_VAL_NUM };

/* A field value passed in or read back. Strings read back point into the
 * window and stay valid until the next call that changes it. */
struct sl_value {
    enum sl_value_type type;
    const char *s;   /* SL_VAL_STR: bytes (any, NUL included) */
    size_t len;      /* SL_VAL_STR: length of s */
    double num;      /* SL_VAL_NUM */
};

struct sl_window_conf {
    int64_t length_ms;               /* window length, > 0 */
    size_t max_entries;              /* per key; the oldest go beyond it; 0 = no bound */
    size_t max_keys;                 /* the least recently added-to keys go beyond it; 0 = no bound */
    bool dedupe;                     /* drop an entry whose id is in its key's window */
    size_t nfields;                  /* values per entry */
    const enum sl_window_agg *aggs;  /* nfields aggregations (copied), or NULL: all LIST */
    int64_t max_skew_ms;             /* how far an entry may be ahead of its arrival; 0 = no bound */
};

struct sl_window_stats {
    size_t keys;              /* keys held */
    size_t entries;           /* entries held */
    size_t strings;           /* distinct interned strings held */
    size_t bytes;             /* bytes requested from the allocator, all included */
    uint64_t added;           /* entries added */
    uint64_t duplicates;      /* entries dropped as duplicates */
    uint64_t too_old;         /* entries dropped as too old */
    uint64_t future;          /* entries dropped as ahead of their arrival */
    uint64_t expired_entries; /* entries that left the window (by add or expire) */
    uint64_t evicted_entries; /* entries dropped beyond max_entries */
    uint64_t evicted_keys;    /* keys dropped beyond max_keys */
    uint64_t expired_keys;    /* keys freed because all their entries left */
};

struct sl_window;

/* Creates an empty window. Returns NULL and fills err when conf is invalid
 * (length_ms <= 0, nfields > 0 with a bad aggregation). */
struct sl_window *sl_window_create(const struct sl_window_conf *conf, char *err,
                                   size_t errlen);
/* Frees the window and all its state. NULL is ok. */
void sl_window_destroy(struct sl_window *w);

/* Adds one entry for key at event time t (ms, within +-2^62: outside it
 * counts as too old), arrived at time arrival (ms, see sl_window_arrival),
 * with id[0..idlen) (NULL: no id; used only with dedupe) and
 * conf.nfields values (vals may be NULL when nfields is 0); strings are
 * copied. Out-of-order entries are placed by time; equal times keep insertion
 * order. Restoring state is replaying adds, in any order. Returns:
 * - SL_WINDOW_ADDED: the entry is in; the key's entries older than the
 *   window left; beyond max_entries the oldest left; beyond max_keys the
 *   least recently added-to other key left. The view now shows the key.
 * - SL_WINDOW_FUTURE: max_skew_ms is set and t > arrival + max_skew_ms.
 *   Nothing changes but the counter; the view is empty.
 * - SL_WINDOW_TOO_OLD: t <= newest - length_ms for the key, or the key is
 *   full (max_entries) and t is older than all its entries. Nothing changes
 *   but the counter; the view is empty.
 * - SL_WINDOW_DUPLICATE: dedupe is on and an entry with the same id is in the
 *   key's window as of this entry. Nothing changes but the counter; the view
 *   is empty.
 * Cost: one key lookup (the key's memory is most likely a cache miss), plus
 * O(entries of the key) for the dedupe scan, out-of-order placement and
 * moving entries to the front of the key's room; no allocation but when a
 * key is new or grows. */
int sl_window_add_at(struct sl_window *w, const char *key, size_t keylen, int64_t t,
                     int64_t arrival, const char *id, size_t idlen,
                     const struct sl_value *vals);
/* sl_window_add_at() with arrival = t: event time is arrival time (the Kafka
 * timestamp is the entry's time). */
int sl_window_add(struct sl_window *w, const char *key, size_t keylen, int64_t t,
                  const char *id, size_t idlen, const struct sl_value *vals);

/* The arrival time of a record: its Kafka timestamp when it has one that is
 * not more than max_skew_ms ahead of now_ms (the producer's clock is input
 * too; 0: no bound), else now_ms, the caller's wall clock. Restore records
 * replayed later keep their timestamps, so they arrive as they first did. */
int64_t sl_window_arrival(int64_t kafka_ts, int64_t now_ms, int64_t max_skew_ms);

/* Points the view at key without changing anything. Returns its number of
 * entries, 0 (and an empty view) if the key is not held. */
size_t sl_window_select(struct sl_window *w, const char *key, size_t keylen);

/* ---- The view: the key of the last successful add or select, valid until
 * the next call that changes the window (add, expire, destroy). ---- */

/* Number of entries in the view. */
size_t sl_window_entries(const struct sl_window *w);
/* Time of entry i (0 = oldest) of the view. */
int64_t sl_window_entry_time(const struct sl_window *w, size_t i);
/* Value of field f of entry i of the view. */
void sl_window_entry_value(const struct sl_window *w, size_t i, size_t f,
                           struct sl_value *out);
/* Aggregates field f of the view with conf.aggs[f] into out, which must hold
 * sl_window_entries() values (at least 1). Returns the number of values
 * written: LIST and DISTINCT 0..n, FIRST and LAST 0 or 1, COUNT 1 (a number).
 * DISTINCT compares strings by bytes and numbers by value. */
size_t sl_window_aggregate(struct sl_window *w, size_t f, struct sl_value *out);

/* Frees the keys not added to for a window length at time now_ms (latest
 * arrival <= now_ms - length_ms), and with them their strings. Called from
 * the caller's periodic timer with an arrival clock: the newest arrival of
 * its records plus the wall-clock time since (so a lagging consumer does not
 * free keys its backlog still adds to). The
 * entries of a key still active are not touched here: they leave on the key's
 * next add (and are never shown), so a key holds at most the entries of 2
 * window lengths, and at most max_entries. Returns the number of keys freed.
 * Cost: proportional to the keys freed, plus a visit to each key still
 * active about once per window length, plus the wheel slots passed since the
 * last call (at most SL_WINDOW_WHEEL_SLOTS); not to the number of keys. */
size_t sl_window_expire(struct sl_window *w, int64_t now_ms);
#define SL_WINDOW_WHEEL_SLOTS 4096 /* Slots of the timer wheel, spanning one window length. */

void sl_window_stats(const struct sl_window *w, struct sl_window_stats *out);

#endif
