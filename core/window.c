/* window.c -- keyed sliding windows of recent entries (see window.h).
 *
 * A key is one allocation: an 80-byte header, then its name (only for keys
 * that are not UUIDs), then an array of fixed-size entries sorted by time,
 * used from index head for count entries. The header links the key into
 * three structures, all intrusive so that nothing else is allocated per key:
 * - the key table, open addressing with linear probing over tagged key
 *   pointers (a hash tag and a prefetch hint in the pointer's top bits), so
 *   that a lookup reads one line of the table and then only its own key;
 * - the recency list (most recently added-to first), only with max_keys;
 * - one hashed timer wheel for all keys, slot = due tick mod slots, where a
 *   key is due one window length after its latest arrival. An add only makes a key due
 *   later, so it never moves the key: when the slot comes round, a key that
 *   got newer entries meanwhile is linked again at its new tick (lazy, as
 *   Redis deletes timers). A key is visited about once per window length
 *   while it is active, not once per entry.
 * When an allocation moves (growth, shrink), the neighbours' links are
 * patched. An entry is its time (8 bytes), its id (16 bytes, only with
 * dedupe) and one NaN-boxed 8-byte slot per field: a double, or a tag with an
 * intern id, or the tag of "no value". */
#include "window.h"
#include "intern.h"
#include "sl.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KEY_NAMED_NONE UINT32_MAX       /* namelen of a UUID key */
#define TABLE_MIN 16                    /* smallest key table */
#define TIME_LIMIT ((int64_t)1 << 62)   /* |t| and length bound: sums never overflow */
#define VAL_NONE 0xfffa000000000000ULL  /* slot: no value (a NaN no double maps to) */
#define VAL_STR 0xfffb000000000000ULL   /* slot: tag | intern id */
#define VAL_TAG_MASK 0xffff000000000000ULL
#define VAL_NAN 0x7ff8000000000000ULL   /* every NaN is stored as this one */
#define DISTINCT_SMALL 32               /* up to this many outputs, DISTINCT compares pairwise */
#define EARLY_FIELDS 8                  /* up to this many values are encoded while a key loads */
#define SLOT_PTR_MASK ((UINT64_C(1) << 48) - 1) /* slot bits of the key pointer */
#define SLOT_LINES_SHIFT 48             /* slot bits of the lines hint */
#define SLOT_LINES_MAX 15
#define SLOT_TAG_SHIFT 52               /* slot bits of the hash tag */

struct wkey {
    struct wkey *lru_prev;  /* more recently added-to key, NULL for the first */
    struct wkey *lru_next;  /* less recently added-to key, NULL for the last */
    struct wkey *t_next;    /* next key in the same wheel slot */
    struct wkey **t_pprev;  /* the pointer that points at this key in its slot */
    unsigned char uuid[16]; /* UUID key bytes; zero for a named key */
    uint32_t hash;          /* low 32 bits of the key's hash: its home slot */
    uint32_t head;          /* index of the oldest entry */
    uint32_t count;         /* entries */
    uint32_t cap;           /* entries room */
    uint32_t namelen;       /* name bytes after the header, or KEY_NAMED_NONE */
    int64_t seen;           /* latest arrival of an entry, ms */
};

struct sl_window {
    int64_t length;               /* window length, ms */
    size_t max_entries;           /* 0 = no bound */
    size_t max_keys;              /* 0 = no bound */
    bool dedupe;                  /* entries carry a 16-byte id */
    int64_t max_skew;             /* entry time - arrival bound, ms; 0 = none */
    size_t nfields;               /* value slots per entry */
    enum sl_window_agg *aggs;     /* nfields aggregations */
    size_t stride;                /* bytes per entry */
    size_t idoff, valoff;         /* offsets of the id and values in an entry */

    uint64_t *table;              /* key table, tmask + 1 tagged slots */
    size_t tmask;
    struct wkey *lru_head, *lru_tail; /* recency list, kept only with max_keys */

    struct wkey **wheel;          /* SL_WINDOW_WHEEL_SLOTS slot lists */
    int64_t tick_ms;              /* span of one slot */
    int64_t cur;                  /* next tick expire() looks at */
    bool started;                 /* cur is meaningful */

    struct sl_intern *strs;       /* interned string values */
    struct wkey *view;            /* key of the last add or select */
    size_t bytes;                 /* requested, without strs (added in stats) */
    struct sl_window_stats st;    /* counters; keys, entries kept current */
};

/* ==================== Small helpers ==================== */

static inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if (a % b && a < 0) q--;
    return q;
}

static inline size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

static inline size_t name_room(const struct wkey *k) {
    return k->namelen == KEY_NAMED_NONE ? 0 : pad8(k->namelen);
}

static inline unsigned char *key_name(struct wkey *k) { return (unsigned char *)(k + 1); }

static inline unsigned char *ents(const struct sl_window *w, struct wkey *k, size_t i) {
    return (unsigned char *)(k + 1) + name_room(k) + i * w->stride;
}

/* Entry i counted from the oldest. */
static inline unsigned char *ent(const struct sl_window *w, struct wkey *k, size_t i) {
    return ents(w, k, k->head + i);
}

static inline int64_t ent_time(const unsigned char *e) {
    int64_t t;
    memcpy(&t, e, 8);
    return t;
}

static inline uint64_t ent_val(const struct sl_window *w, const unsigned char *e, size_t f) {
    uint64_t v;
    memcpy(&v, e + w->valoff + 8 * f, 8);
    return v;
}

static inline size_t key_size(const struct sl_window *w, const struct wkey *k, size_t cap) {
    return sizeof(struct wkey) + name_room(k) + cap * w->stride;
}

/* Cache lines from k's header to the end of the entry after its newest. */
static inline uint64_t key_lines(const struct sl_window *w, const struct wkey *k) {
    size_t end = ((uintptr_t)k & 63) + sizeof(*k) + name_room(k) +
                 ((size_t)k->head + k->count + 1) * w->stride;
    size_t n = (end + 63) / 64;
    return n < SLOT_LINES_MAX ? n : SLOT_LINES_MAX;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ONES 0x0101010101010101ULL      /* one in every byte */

/* 8 hex digits (first in the lowest byte) to 4 bytes in memory order (first
 * digit in the high nibble of the lowest byte); false if a byte is not a hex
 * digit. Eight bytes at a time: each byte is range-checked with an add that
 * cannot carry out of a byte < 0x80 (a byte >= 0x80 may spoil its
 * neighbour's check, but rejects the word by itself). */
static inline bool hex8(uint64_t x, uint64_t *out) {
    uint64_t l = x | 0x20 * ONES, digit, alpha, v;

#define GE(x, lo) (((x) + (0x80 - (lo)) * ONES) & 0x80 * ONES)
    digit = GE(x, '0') & ~GE(x, '9' + 1);
    alpha = GE(l, 'a') & ~GE(l, 'f' + 1);
#undef GE
    v = (x & 0x0f * ONES) + ((x >> 6) & ONES) * 9;        /* each byte its value */
    v = ((v << 4) | (v >> 8)) & 0x00ff00ff00ff00ffULL;    /* pairs to bytes */
    v = (v | (v >> 8)) & 0x0000ffff0000ffffULL;
    *out = (v | (v >> 16)) & 0xffffffffULL;
    return !(x & 0x80 * ONES) && (digit | alpha) == 0x80 * ONES;
}

static inline uint64_t load4x2(const unsigned char *a, const unsigned char *b) {
    uint32_t lo, hi;
    memcpy(&lo, a, 4);
    memcpy(&hi, b, 4);
    return (uint64_t)hi << 32 | lo;
}

/* Parses a canonical 8-4-4-4-12 UUID, any case, into out[0..16) and also
 * into two words (w[0] = out[0..8) as a native load would give). */
static inline bool uuid_parse_words(const char *s, size_t len, unsigned char out[16],
                                    uint64_t w[2]) {
    const unsigned char *p = (const unsigned char *)s;
    uint64_t a, d, q[4];
    bool ok;

    if (len != 36 || p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-')
        return false;
    memcpy(&a, p, 8);
    memcpy(&d, p + 28, 8);
    ok = hex8(a, &q[0]) & hex8(load4x2(p + 9, p + 14), &q[1]) &
         hex8(load4x2(p + 19, p + 24), &q[2]) & hex8(d, &q[3]);
    w[0] = q[0] | q[1] << 32;
    w[1] = q[2] | q[3] << 32;
    memcpy(out, w, 16);
    return ok;
}
#else
/* Hex digit values + 1, so that the zero of every other byte means "not hex". */
static const signed char hexval[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7,
    ['7'] = 8, ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

/* Parses a canonical 8-4-4-4-12 UUID, any case, into out[0..16) and also
 * into two words (w[0] = out[0..8) as a native load would give). */
static bool uuid_parse_words(const char *s, size_t len, unsigned char out[16],
                             uint64_t w[2]) {
    static const unsigned char at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    const unsigned char *p = (const unsigned char *)s;
    int bad = 0;

    if (len != 36 || p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-')
        return false;
    for (int i = 0; i < 16; i++) {
        int hi = hexval[p[at[i]]], lo = hexval[p[at[i] + 1]];
        bad |= (hi == 0) | (lo == 0);
        out[i] = (unsigned char)((hi - 1) << 4 | (lo - 1));
    }
    memcpy(w, out, 16);
    return !bad;
}
#endif

static inline bool uuid_parse(const char *s, size_t len, unsigned char out[16]) {
    uint64_t w[2];
    return uuid_parse_words(s, len, out, w);
}

/* The 16 bytes an id is kept as: a UUID's own bytes or a 128-bit hash; all
 * zeros means "no id". */
static void id_bytes(const char *id, size_t len, unsigned char out[16]) {
    static const unsigned char zero[16];
    uint64_t h[2];

    if (!id) {
        memset(out, 0, 16);
        return;
    }
    if (uuid_parse(id, len, out) && memcmp(out, zero, 16) != 0) return;
    h[0] = sl_intern_hash(id, len, 0x5bd1e9955bd1e995ULL);
    h[1] = sl_intern_hash(id, len, 0x27d4eb2f165667c5ULL);
    if (!h[0] && !h[1]) h[0] = 1;
    memcpy(out, h, 16);
}

static inline uint64_t val_encode(struct sl_window *w, const struct sl_value *v) {
    uint64_t bits;
    switch (v->type) {
    case SL_VAL_STR:
        return VAL_STR | sl_intern_add(w->strs, v->s ? v->s : "", v->s ? v->len : 0);
    case SL_VAL_NUM:
        if (isnan(v->num)) return VAL_NAN;
        memcpy(&bits, &v->num, 8);
        return bits;
    default:
        return VAL_NONE;
    }
}

static inline void val_decode(const struct sl_window *w, uint64_t bits, struct sl_value *out) {
    out->s = NULL;
    out->len = 0;
    out->num = 0;
    if ((bits & VAL_TAG_MASK) == VAL_STR) {
        out->type = SL_VAL_STR;
        out->s = sl_intern_str(w->strs, (uint32_t)bits, &out->len);
    } else if (bits == VAL_NONE) {
        out->type = SL_VAL_NONE;
    } else {
        out->type = SL_VAL_NUM;
        memcpy(&out->num, &bits, 8);
    }
}

/* Releases what one encoded value holds. */
static inline void val_release(struct sl_window *w, uint64_t v) {
    if ((v & VAL_TAG_MASK) == VAL_STR) sl_intern_unref(w->strs, (uint32_t)v);
}

/* Releases what the values of entry e hold. */
static inline void ent_release(struct sl_window *w, const unsigned char *e) {
    for (size_t f = 0; f < w->nfields; f++) val_release(w, ent_val(w, e, f));
}

/* ==================== Key table ==================== */

/* A slot is 0 when empty, else a key pointer (user-space pointers from
 * malloc fit in 48 bits on x86-64 and arm64 Linux; slot_make asserts it)
 * with, in the 16 bits above it:
 * - the number of cache lines the key's next add will touch, from its header
 *   to the entry after its newest (capped at 15), so that the add can fetch
 *   them all at once, before it reads the header;
 * - the top 12 bits of the key's 64-bit hash, so that a lookup reads a key's
 *   memory only on a tag match: 1 in 4096 for another key. */

static inline uint64_t slot_tag(uint64_t hash) { return hash >> SLOT_TAG_SHIFT; }

static inline struct wkey *slot_key(uint64_t slot) {
    return (struct wkey *)(uintptr_t)(slot & SLOT_PTR_MASK);
}

static inline unsigned slot_lines(uint64_t slot) {
    return (unsigned)(slot >> SLOT_LINES_SHIFT) & SLOT_LINES_MAX;
}

static inline uint64_t slot_make(struct wkey *k, uint64_t tag) {
    assert(((uint64_t)(uintptr_t)k & ~SLOT_PTR_MASK) == 0);
    return (uint64_t)(uintptr_t)k | tag << SLOT_TAG_SHIFT;
}

/* Re-points slot i at k (same key, moved), keeping its tag and hint. */
static inline void slot_repoint(struct sl_window *w, size_t i, struct wkey *k) {
    assert(((uint64_t)(uintptr_t)k & ~SLOT_PTR_MASK) == 0);
    w->table[i] = (w->table[i] & ~SLOT_PTR_MASK) | (uint64_t)(uintptr_t)k;
}

static uint64_t key_hash(const char *key, size_t len, unsigned char uuid[16], bool *is_uuid) {
    uint64_t q[2], a, b;
    *is_uuid = uuid_parse_words(key, len, uuid, q);
    if (!*is_uuid) return sl_intern_hash(key, len, 0x3c6ef372fe94f82bULL);
    a = q[0];
    b = q[1];
    a ^= (b ^ (b >> 29)) * 0x9e3779b97f4a7c15ULL;
    a = (a ^ (a >> 32)) * 0xbf58476d1ce4e5b9ULL;
    return a ^ (a >> 29);
}

/* Slot holding the key, or the empty slot where it would go. */
static size_t table_find(const struct sl_window *w, const char *key, size_t len,
                         const unsigned char *uuid, bool is_uuid, uint64_t hash) {
    uint64_t tag = slot_tag(hash);
    size_t i = (uint32_t)hash & w->tmask;
    for (;; i = (i + 1) & w->tmask) {
        uint64_t sl = w->table[i];
        struct wkey *k;
        if (!sl) return i;
        if (sl >> SLOT_TAG_SHIFT != tag) continue;
        k = slot_key(sl);
        if (is_uuid) {
            if (k->namelen == KEY_NAMED_NONE && memcmp(k->uuid, uuid, 16) == 0) return i;
        } else if (k->namelen == len && memcmp(key_name(k), key, len) == 0) {
            return i;
        }
    }
}

/* The first slot whose tag matches hash (most likely the key's), or 0.
 * Reads the table only. */
static inline uint64_t table_peek(const struct sl_window *w, uint64_t hash) {
    uint64_t tag = slot_tag(hash);
    size_t i = (uint32_t)hash & w->tmask;
    for (;; i = (i + 1) & w->tmask) {
        uint64_t sl = w->table[i];
        if (!sl || sl >> SLOT_TAG_SHIFT == tag) return sl;
    }
}

/* Slot holding exactly this key object. */
static size_t table_slot_of(const struct sl_window *w, const struct wkey *k) {
    size_t i = k->hash & w->tmask;
    while (slot_key(w->table[i]) != k) i = (i + 1) & w->tmask;
    return i;
}

static void table_resize(struct sl_window *w, size_t nslots) {
    uint64_t *old = w->table;
    size_t oldn = w->tmask + 1;

    w->table = sl_calloc(nslots, sizeof(*w->table));
    w->tmask = nslots - 1;
    for (size_t i = 0; i < oldn; i++) {
        if (!old[i]) continue;
        size_t j = slot_key(old[i])->hash & w->tmask;
        while (w->table[j]) j = (j + 1) & w->tmask;
        w->table[j] = old[i];
    }
    free(old);
    w->bytes += nslots * sizeof(*w->table);
    w->bytes -= oldn * sizeof(*w->table);
}

/* Removes slot i, shifting later members of its probe run back. */
static void table_delete(struct sl_window *w, size_t i) {
    size_t j = i;
    for (;;) {
        j = (j + 1) & w->tmask;
        if (!w->table[j]) break;
        size_t home = slot_key(w->table[j])->hash & w->tmask;
        if (((j - home) & w->tmask) >= ((j - i) & w->tmask)) {
            w->table[i] = w->table[j];
            i = j;
        }
    }
    w->table[i] = 0;
    if (w->tmask + 1 > TABLE_MIN && w->st.keys * 8 < w->tmask + 1)
        table_resize(w, (w->tmask + 1) / 2);
}

/* ==================== Recency list ==================== */

static void lru_unlink(struct sl_window *w, struct wkey *k) {
    if (k->lru_prev) k->lru_prev->lru_next = k->lru_next;
    else w->lru_head = k->lru_next;
    if (k->lru_next) k->lru_next->lru_prev = k->lru_prev;
    else w->lru_tail = k->lru_prev;
}

static void lru_push(struct sl_window *w, struct wkey *k) {
    k->lru_prev = NULL;
    k->lru_next = w->lru_head;
    if (w->lru_head) w->lru_head->lru_prev = k;
    else w->lru_tail = k;
    w->lru_head = k;
}

/* ==================== Timer wheel ==================== */

/* A key is due one window length after its latest arrival: by then any
 * entry it gets next, on a clock consistent with its own, leaves all older
 * ones out of the window. */
static inline int64_t key_due(const struct sl_window *w, struct wkey *k) {
    return k->seen + w->length;
}

static void wheel_unlink(struct wkey *k) {
    *k->t_pprev = k->t_next;
    if (k->t_next) k->t_next->t_pprev = k->t_pprev;
}

/* Links k at the tick of due. A tick before the next one expire() looks at
 * moves that back, so that every linked key has a tick >= cur. */
static void wheel_link(struct sl_window *w, struct wkey *k, int64_t due) {
    int64_t tick = floordiv(due, w->tick_ms);
    struct wkey **slot;

    if (!w->started || tick < w->cur) w->cur = tick;
    w->started = true;
    slot = &w->wheel[(uint64_t)tick & (SL_WINDOW_WHEEL_SLOTS - 1)];
    k->t_next = *slot;
    k->t_pprev = slot;
    if (*slot) (*slot)->t_pprev = &k->t_next;
    *slot = k;
}

/* ==================== Keys ==================== */

/* Fixes every pointer to a key whose allocation moved from old to k. */
static void key_moved(struct sl_window *w, struct wkey *k, size_t slot) {
    slot_repoint(w, slot, k);
    if (w->max_keys) {
        if (k->lru_prev) k->lru_prev->lru_next = k;
        else w->lru_head = k;
        if (k->lru_next) k->lru_next->lru_prev = k;
        else w->lru_tail = k;
    }
    if (!k->t_pprev) return; /* not on the wheel yet */
    *k->t_pprev = k;
    if (k->t_next) k->t_next->t_pprev = &k->t_next;
}

/* Reallocates k for cap entries, moving its entries to index 0. Returns the
 * key's new address. */
static struct wkey *key_resize(struct sl_window *w, struct wkey *k, uint32_t cap) {
    size_t slot = table_slot_of(w, k);
    bool viewed = w->view == k;
    struct wkey *nk;

    assert(cap >= k->count);
    if (k->head) {
        memmove(ents(w, k, 0), ents(w, k, k->head), (size_t)k->count * w->stride);
        k->head = 0;
    }
    w->bytes -= key_size(w, k, k->cap);
    w->bytes += key_size(w, k, cap);
    nk = sl_realloc(k, key_size(w, k, cap));
    nk->cap = cap;
    if (nk != k) {
        /* k is freed: only nk's copy of the links is read from here on. */
        key_moved(w, nk, slot);
        if (viewed) w->view = nk;
    }
    return nk;
}

/* Drops the n oldest entries of k. */
static void key_drop(struct sl_window *w, struct wkey *k, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) ent_release(w, ent(w, k, i));
    k->head += n;
    k->count -= n;
    w->st.entries -= n;
    if (!k->count) k->head = 0;
}

/* Frees k and everything it holds. */
static void key_free(struct sl_window *w, struct wkey *k) {
    key_drop(w, k, k->count);
    table_delete(w, table_slot_of(w, k));
    if (w->max_keys) lru_unlink(w, k);
    wheel_unlink(k);
    if (w->view == k) w->view = NULL;
    w->bytes -= key_size(w, k, k->cap);
    w->st.keys--;
    free(k);
    if (!w->st.keys) w->started = false;
}

/* Gives back room when a key holds much less than it has. */
static struct wkey *key_fit(struct sl_window *w, struct wkey *k) {
    if (k->cap >= 16 && k->count * 3 < k->cap)
        k = key_resize(w, k, k->count + k->count / 4 + 2);
    return k;
}

/* Index of the first entry of k whose time is > t. */
static uint32_t upper_bound(const struct sl_window *w, struct wkey *k, int64_t t) {
    uint32_t lo = 0, hi = k->count;
    /* In-order adds land at the end: check it first. */
    if (!hi || ent_time(ent(w, k, hi - 1)) <= t) return hi;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ent_time(ent(w, k, mid)) <= t) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* ==================== Window ==================== */

struct sl_window *sl_window_create(const struct sl_window_conf *conf, char *err,
                                   size_t errlen) {
    struct sl_window *w;

    if (conf->length_ms <= 0 || conf->length_ms > TIME_LIMIT) {
        sl_errf(err, errlen, "window length must be > 0 ms, got %lld",
                (long long)conf->length_ms);
        return NULL;
    }
    if (conf->max_skew_ms < 0 || conf->max_skew_ms > TIME_LIMIT) {
        sl_errf(err, errlen, "max_skew must be >= 0 ms, got %lld",
                (long long)conf->max_skew_ms);
        return NULL;
    }
    if (conf->max_entries > UINT32_MAX / 2) {
        sl_errf(err, errlen, "max_entries must be at most %u", UINT32_MAX / 2);
        return NULL;
    }
    for (size_t f = 0; conf->aggs && f < conf->nfields; f++) {
        if ((unsigned)conf->aggs[f] > SL_WINDOW_DISTINCT) {
            sl_errf(err, errlen, "field %zu: unknown aggregation %d", f, (int)conf->aggs[f]);
            return NULL;
        }
    }

    w = sl_calloc(1, sizeof(*w));
    w->length = conf->length_ms;
    w->max_entries = conf->max_entries;
    w->max_keys = conf->max_keys;
    w->dedupe = conf->dedupe;
    w->max_skew = conf->max_skew_ms;
    w->nfields = conf->nfields;
    w->aggs = sl_calloc(conf->nfields, sizeof(*w->aggs));
    for (size_t f = 0; conf->aggs && f < conf->nfields; f++) w->aggs[f] = conf->aggs[f];
    w->idoff = 8;
    w->valoff = w->idoff + (w->dedupe ? 16 : 0);
    w->stride = w->valoff + 8 * w->nfields;
    w->table = sl_calloc(TABLE_MIN, sizeof(*w->table));
    w->tmask = TABLE_MIN - 1;
    w->wheel = sl_calloc(SL_WINDOW_WHEEL_SLOTS, sizeof(*w->wheel));
    w->tick_ms = (w->length + SL_WINDOW_WHEEL_SLOTS - 1) / SL_WINDOW_WHEEL_SLOTS;
    w->strs = sl_intern_create();
    w->bytes = sizeof(*w) + (conf->nfields ? conf->nfields : 1) * sizeof(*w->aggs) +
               TABLE_MIN * sizeof(*w->table) + SL_WINDOW_WHEEL_SLOTS * sizeof(*w->wheel);
    return w;
}

void sl_window_destroy(struct sl_window *w) {
    if (!w) return;
    for (size_t i = 0; i <= w->tmask; i++) {
        if (w->table[i]) free(slot_key(w->table[i])); /* its strings go with the intern table */
    }
    sl_intern_destroy(w->strs);
    free(w->table);
    free(w->wheel);
    free(w->aggs);
    free(w);
}

/* Makes a key with room for one entry and links it everywhere but the wheel
 * (which needs its first entry). */
static struct wkey *key_new(struct sl_window *w, const char *key, size_t len,
                            const unsigned char *uuid, bool is_uuid, uint64_t hash,
                            size_t slot) {
    struct wkey *k;
    size_t room = is_uuid ? 0 : pad8(len), size;

    assert(len < KEY_NAMED_NONE);
    size = sizeof(*k) + room + w->stride;
    k = sl_malloc(size);
    memset(k, 0, sizeof(*k));
    if (is_uuid) {
        memcpy(k->uuid, uuid, 16);
        k->namelen = KEY_NAMED_NONE;
    } else {
        k->namelen = (uint32_t)len;
        if (len) memcpy(key_name(k), key, len);
    }
    k->hash = (uint32_t)hash;
    k->cap = 1;
    w->bytes += size;
    w->table[slot] = slot_make(k, slot_tag(hash));
    w->st.keys++;
    if (w->max_keys) lru_push(w, k);
    return k;
}

int64_t sl_window_arrival(int64_t kafka_ts, int64_t now_ms, int64_t max_skew_ms) {
    if (kafka_ts < 0 || (max_skew_ms > 0 && kafka_ts - max_skew_ms > now_ms)) return now_ms;
    return kafka_ts;
}

int sl_window_add(struct sl_window *w, const char *key, size_t keylen, int64_t t,
                  const char *id, size_t idlen, const struct sl_value *vals) {
    return sl_window_add_at(w, key, keylen, t, t, id, idlen, vals);
}

int sl_window_add_at(struct sl_window *w, const char *key, size_t keylen, int64_t t,
                     int64_t arrival, const char *id, size_t idlen,
                     const struct sl_value *vals) {
    unsigned char uuid[16], idb[16];
    uint64_t early[EARLY_FIELDS];
    bool is_uuid, fresh = false, is_early = w->nfields <= EARLY_FIELDS;
    int ret;
    uint64_t hash;
    uint32_t drop = 0, evict = 0, pos;
    struct wkey *k;
    size_t slot;
    unsigned char *e;

    w->view = NULL;
    if (t < -TIME_LIMIT || t > TIME_LIMIT || arrival < -TIME_LIMIT || arrival > TIME_LIMIT) {
        w->st.too_old++;
        return SL_WINDOW_TOO_OLD;
    }
    if (w->max_skew && t - arrival > w->max_skew) {
        w->st.future++;
        return SL_WINDOW_FUTURE;
    }
    /* The key's slot and header are most likely cache misses: start them,
     * and parse the id while they load. */
    hash = key_hash(key, keylen, uuid, &is_uuid);
    {
        /* The lines the add will touch, whose addresses do not depend on
         * each other. */
        uint64_t sl = table_peek(w, hash);
        const char *p = (const char *)slot_key(sl);
        for (unsigned line = 0, n = slot_lines(sl); line < n; line++)
            __builtin_prefetch(p + 64 * line);
    }
    if (w->dedupe) id_bytes(id, idlen, idb);
    /* Interning does not depend on the key either (references taken here
     * are dropped if the entry is not added). */
    for (size_t f = 0; is_early && f < w->nfields; f++) early[f] = val_encode(w, &vals[f]);
    slot = table_find(w, key, keylen, uuid, is_uuid, hash);
    k = slot_key(w->table[slot]);

    if (k) {
        int64_t newest = ent_time(ent(w, k, k->count - 1));
        int64_t cutoff;
        if (t <= newest - w->length) {
            w->st.too_old++;
            ret = SL_WINDOW_TOO_OLD;
            goto rejected;
        }
        cutoff = (t > newest ? t : newest) - w->length;
        if (ent_time(ent(w, k, 0)) <= cutoff) drop = upper_bound(w, k, cutoff);
        if (w->max_entries && k->count - drop >= w->max_entries) {
            if (t < ent_time(ent(w, k, drop))) {
                w->st.too_old++;
                ret = SL_WINDOW_TOO_OLD;
                goto rejected;
            }
            evict = k->count - drop - (uint32_t)w->max_entries + 1;
        }
        if (w->dedupe && id) {
            for (uint32_t i = drop; i < k->count; i++) {
                if (memcmp(ent(w, k, i) + w->idoff, idb, 16) == 0) {
                    w->st.duplicates++;
                    ret = SL_WINDOW_DUPLICATE;
                    goto rejected;
                }
            }
        }
        if (drop) {
            key_drop(w, k, drop);
            w->st.expired_entries += drop;
            k = key_fit(w, k);
        }
        if (evict) {
            key_drop(w, k, evict);
            w->st.evicted_entries += evict;
        }
    } else {
        /* Keep the table at most 7/8 full: tags keep long probe runs in the
         * table's own lines, and a small table stays in cache longer. */
        if ((w->st.keys + 1) * 8 > (w->tmask + 1) * 7) {
            table_resize(w, (w->tmask + 1) * 2);
            slot = table_find(w, key, keylen, uuid, is_uuid, hash);
        }
        k = key_new(w, key, keylen, uuid, is_uuid, hash, slot);
        fresh = true;
    }

    /* Room at the end: compact to the front, or grow. */
    if (k->head + k->count == k->cap) {
        if (k->head) {
            memmove(ents(w, k, 0), ents(w, k, k->head), (size_t)k->count * w->stride);
            k->head = 0;
        } else {
            /* Small keys grow two entries at a time, so they waste little. */
            size_t cap = k->cap < 16 ? (k->cap + 2) & ~1u : (size_t)k->cap + k->cap / 4;
            if (w->max_entries && cap > w->max_entries) cap = w->max_entries;
            k = key_resize(w, k, (uint32_t)cap);
        }
    }
    pos = upper_bound(w, k, t);
    e = ent(w, k, pos);
    if (pos < k->count) memmove(e + w->stride, e, (size_t)(k->count - pos) * w->stride);
    memcpy(e, &t, 8);
    if (w->dedupe) memcpy(e + w->idoff, idb, 16);
    for (size_t f = 0; f < w->nfields; f++) {
        uint64_t v = is_early ? early[f] : val_encode(w, &vals[f]);
        memcpy(e + w->valoff + 8 * f, &v, 8);
    }
    k->count++;
    if (fresh || arrival > k->seen) k->seen = arrival;
    w->st.entries++;
    w->st.added++;
    /* Before any eviction below, which may move slots. */
    w->table[slot] = (w->table[slot] & ~((uint64_t)SLOT_LINES_MAX << SLOT_LINES_SHIFT)) |
                     key_lines(w, k) << SLOT_LINES_SHIFT;

    if (fresh) {
        wheel_link(w, k, key_due(w, k));
    } else {
        if (w->max_keys && w->lru_head != k) {
            lru_unlink(w, k);
            lru_push(w, k);
        }
    }
    if (fresh && w->max_keys && w->st.keys > w->max_keys) {
        key_free(w, w->lru_tail);
        w->st.evicted_keys++;
    }
    w->view = k;
    return SL_WINDOW_ADDED;

rejected:
    for (size_t f = 0; is_early && f < w->nfields; f++) val_release(w, early[f]);
    return ret;
}

size_t sl_window_select(struct sl_window *w, const char *key, size_t keylen) {
    unsigned char uuid[16];
    bool is_uuid;
    uint64_t hash = key_hash(key, keylen, uuid, &is_uuid);

    w->view = slot_key(w->table[table_find(w, key, keylen, uuid, is_uuid, hash)]);
    return w->view ? w->view->count : 0;
}

size_t sl_window_expire(struct sl_window *w, int64_t now_ms) {
    int64_t now_tick, last;
    size_t freed = 0;

    w->view = NULL;
    if (!w->started || now_ms > TIME_LIMIT || now_ms < -TIME_LIMIT) return 0;
    now_tick = floordiv(now_ms, w->tick_ms);
    if (now_tick < w->cur) return 0;
    /* Past one turn of the wheel, every slot has been seen once. */
    last = now_tick - w->cur >= SL_WINDOW_WHEEL_SLOTS
               ? w->cur + SL_WINDOW_WHEEL_SLOTS - 1 : now_tick;

    for (int64_t tick = w->cur; tick <= last && w->started; tick++) {
        struct wkey **slot = &w->wheel[(uint64_t)tick & (SL_WINDOW_WHEEL_SLOTS - 1)];
        struct wkey *k, *next, *stand_in;

        /* Detach the slot: keys put back into it wait for a later call. */
        k = *slot;
        *slot = NULL;
        for (; k; k = next) {
            next = k->t_next;
            k->t_next = NULL;
            k->t_pprev = &stand_in; /* unlinked; key_free and key_resize write here */
            if (key_due(w, k) <= now_ms) {
                w->st.expired_entries += k->count;
                w->st.expired_keys++;
                key_free(w, k);
                freed++;
            } else {
                wheel_link(w, k, key_due(w, k)); /* got newer entries since linked */
            }
        }
    }
    if (w->started) w->cur = now_tick;
    return freed;
}

/* ==================== View ==================== */

size_t sl_window_entries(const struct sl_window *w) {
    return w->view ? w->view->count : 0;
}

int64_t sl_window_entry_time(const struct sl_window *w, size_t i) {
    assert(w->view && i < w->view->count);
    return ent_time(ent(w, w->view, i));
}

void sl_window_entry_value(const struct sl_window *w, size_t i, size_t f,
                           struct sl_value *out) {
    assert(w->view && i < w->view->count && f < w->nfields);
    val_decode(w, ent_val(w, ent(w, w->view, i), f), out);
}

/* Value bits that compare equal exactly when values are equal. */
static inline uint64_t val_key(uint64_t bits) {
    return bits == 0x8000000000000000ULL ? 0 : bits; /* -0.0 is 0.0 */
}

static size_t distinct(struct sl_window *w, size_t f, struct sl_value *out) {
    struct wkey *k = w->view;
    bool hashed = k->count > DISTINCT_SMALL;
    size_t n = 0, nset = 16;
    uint64_t *seen;

    /* Small views: compare with the outputs so far; larger: a hash set. */
    while (nset < 2 * (size_t)k->count) nset *= 2;
    seen = sl_malloc((hashed ? nset : k->count) * sizeof(*seen));
    for (size_t i = 0; hashed && i < nset; i++) seen[i] = VAL_NONE;
    for (uint32_t i = 0; i < k->count; i++) {
        uint64_t v = ent_val(w, ent(w, k, i), f), key = val_key(v);
        bool dup = false;
        if (v == VAL_NONE) continue;
        if (hashed) {
            size_t j = (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 32) & (nset - 1);
            while (seen[j] != VAL_NONE && seen[j] != key) j = (j + 1) & (nset - 1);
            dup = seen[j] == key;
            seen[j] = key;
        } else {
            for (size_t j = 0; j < n && !dup; j++) dup = seen[j] == key;
            seen[n] = key;
        }
        if (!dup) val_decode(w, v, &out[n++]);
    }
    free(seen);
    return n;
}

size_t sl_window_aggregate(struct sl_window *w, size_t f, struct sl_value *out) {
    struct wkey *k = w->view;
    size_t n = 0;

    assert(f < w->nfields);
    if (!k) {
        if (w->aggs[f] != SL_WINDOW_COUNT) return 0;
        out[0] = (struct sl_value){.type = SL_VAL_NUM, .num = 0};
        return 1;
    }
    switch (w->aggs[f]) {
    case SL_WINDOW_LIST:
        for (uint32_t i = 0; i < k->count; i++) {
            uint64_t v = ent_val(w, ent(w, k, i), f);
            if (v != VAL_NONE) val_decode(w, v, &out[n++]);
        }
        return n;
    case SL_WINDOW_COUNT:
        for (uint32_t i = 0; i < k->count; i++)
            n += ent_val(w, ent(w, k, i), f) != VAL_NONE;
        out[0] = (struct sl_value){.type = SL_VAL_NUM, .num = (double)n};
        return 1;
    case SL_WINDOW_FIRST:
        for (uint32_t i = 0; i < k->count; i++) {
            uint64_t v = ent_val(w, ent(w, k, i), f);
            if (v != VAL_NONE) {
                val_decode(w, v, &out[0]);
                return 1;
            }
        }
        return 0;
    case SL_WINDOW_LAST:
        for (uint32_t i = k->count; i-- > 0;) {
            uint64_t v = ent_val(w, ent(w, k, i), f);
            if (v != VAL_NONE) {
                val_decode(w, v, &out[0]);
                return 1;
            }
        }
        return 0;
    case SL_WINDOW_DISTINCT:
        return distinct(w, f, out);
    }
    return 0;
}

void sl_window_stats(const struct sl_window *w, struct sl_window_stats *out) {
    *out = w->st;
    out->strings = sl_intern_count(w->strs);
    out->bytes = w->bytes + sl_intern_bytes(w->strs);
}
