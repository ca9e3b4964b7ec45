/* intern.c -- refcounted interned strings (see intern.h).
 *
 * Strings live in their own allocations, so a pointer to one stays valid
 * while the table grows. An id indexes the strs array; a free id's slot holds
 * the next free id, tagged with bit 0. Lookup is an open-addressing table of
 * (id, hash) pairs with linear probing and backward-shift deletion, so there
 * are no tombstones. When the last string goes, the arrays are freed too and
 * the table costs what it did when created. */
#include "intern.h"
#include "sl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define INTERN_MIN_SLOTS 16 /* Smallest lookup table. */

struct istr {
    uint32_t refs;  /* references held; freed at 0 */
    uint32_t len;   /* bytes, without the trailing NUL */
    uint64_t hash;  /* sl_intern_hash(data, len, 0) */
    char data[];    /* len bytes and a NUL */
};

struct islot {
    uint32_t id1;   /* id + 1; 0 marks an empty slot */
    uint32_t hash;  /* low bits of the string's hash, to skip most compares */
};

struct sl_intern {
    uintptr_t *strs;      /* by id: struct istr *, or (next free id << 1) | 1 */
    uint32_t nids;        /* ids handed out so far (live or free) */
    uint32_t capids;      /* capacity of strs */
    uint32_t free_head;   /* first free id, or SL_INTERN_NONE */
    uint32_t count;       /* live strings */
    struct islot *slots;  /* lookup table, mask + 1 slots, or NULL */
    uint32_t mask;        /* slots - 1 */
    size_t bytes;         /* bytes requested from the allocator */
};

/* ==================== Hashing ==================== */

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* Final avalanche: every input bit reaches every output bit. */
static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 31;
    h *= 0x7fb5d329728ea185ULL;
    h ^= h >> 27;
    h *= 0x81dadef4bc2dd44dULL;
    h ^= h >> 33;
    return h;
}

uint64_t sl_intern_hash(const void *s, size_t len, uint64_t seed) {
    const unsigned char *p = s;
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL) ^ (len * 0xc2b2ae3d27d4eb4fULL);
    uint64_t w;

    while (len >= 8) {
        h = rotl64((h ^ load64(p)) * 0x9fb21c651e98df25ULL, 29);
        p += 8;
        len -= 8;
    }
    if (len) {
        w = 0;
        memcpy(&w, p, len);
        h = rotl64((h ^ w) * 0x9fb21c651e98df25ULL, 29);
    }
    return mix64(h);
}

/* ==================== Lookup table ==================== */

static inline struct istr *str_of(const struct sl_intern *in, uint32_t id) {
    assert(id < in->nids && !(in->strs[id] & 1));
    return (struct istr *)in->strs[id];
}

/* Slot index holding s, or the empty slot where it would go. */
static uint32_t slot_find(const struct sl_intern *in, const char *s, size_t len,
                          uint64_t hash) {
    uint32_t i = (uint32_t)hash & in->mask;
    for (;;) {
        const struct islot *sl = &in->slots[i];
        if (!sl->id1) return i;
        if (sl->hash == (uint32_t)hash) {
            const struct istr *st = str_of(in, sl->id1 - 1);
            if (st->len == len && st->hash == hash && memcmp(st->data, s, len) == 0)
                return i;
        }
        i = (i + 1) & in->mask;
    }
}

static void table_resize(struct sl_intern *in, uint32_t nslots) {
    struct islot *old = in->slots;
    uint32_t oldn = old ? in->mask + 1 : 0;

    in->slots = sl_calloc(nslots, sizeof(*in->slots));
    in->mask = nslots - 1;
    in->bytes += (size_t)nslots * sizeof(*in->slots);
    for (uint32_t i = 0; i < oldn; i++) {
        if (!old[i].id1) continue;
        const struct istr *st = str_of(in, old[i].id1 - 1);
        uint32_t j = (uint32_t)st->hash & in->mask;
        while (in->slots[j].id1) j = (j + 1) & in->mask;
        in->slots[j] = old[i];
    }
    in->bytes -= (size_t)oldn * sizeof(*old);
    free(old);
}

/* Removes slot i, shifting later members of its probe run back. */
static void slot_delete(struct sl_intern *in, uint32_t i) {
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & in->mask;
        if (!in->slots[j].id1) break;
        const struct istr *st = str_of(in, in->slots[j].id1 - 1);
        uint32_t home = (uint32_t)st->hash & in->mask;
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        if (((j - home) & in->mask) >= ((j - i) & in->mask)) {
            in->slots[i] = in->slots[j];
            i = j;
        }
    }
    in->slots[i].id1 = 0;
}

/* ==================== Table ==================== */

struct sl_intern *sl_intern_create(void) {
    struct sl_intern *in = sl_calloc(1, sizeof(*in));
    in->free_head = SL_INTERN_NONE;
    in->bytes = sizeof(*in);
    return in;
}

void sl_intern_destroy(struct sl_intern *in) {
    if (!in) return;
    for (uint32_t id = 0; id < in->nids; id++)
        if (!(in->strs[id] & 1)) free((void *)in->strs[id]);
    free(in->strs);
    free(in->slots);
    free(in);
}

uint32_t sl_intern_find(const struct sl_intern *in, const char *s, size_t len) {
    if (!in->count) return SL_INTERN_NONE;
    uint64_t hash = sl_intern_hash(s, len, 0);
    uint32_t i = slot_find(in, s, len, hash);
    return in->slots[i].id1 ? in->slots[i].id1 - 1 : SL_INTERN_NONE;
}

uint32_t sl_intern_add(struct sl_intern *in, const char *s, size_t len) {
    uint64_t hash = sl_intern_hash(s, len, 0);
    uint32_t i, id;
    struct istr *st;

    assert(len < UINT32_MAX);
    if (in->slots) {
        i = slot_find(in, s, len, hash);
        if (in->slots[i].id1) {
            id = in->slots[i].id1 - 1;
            st = str_of(in, id);
            assert(st->refs < UINT32_MAX);
            st->refs++;
            return id;
        }
    }
    /* Absent: keep the table at most 3/4 full after the insert. */
    if (!in->slots || (in->count + 1) * 4 > (in->mask + 1) * 3)
        table_resize(in, in->slots ? (in->mask + 1) * 2 : INTERN_MIN_SLOTS);
    i = slot_find(in, s, len, hash);

    st = sl_malloc(sizeof(*st) + len + 1);
    in->bytes += sizeof(*st) + len + 1;
    st->refs = 1;
    st->len = (uint32_t)len;
    st->hash = hash;
    if (len) memcpy(st->data, s, len);
    st->data[len] = '\0';

    if (in->free_head != SL_INTERN_NONE) {
        id = in->free_head;
        in->free_head = (uint32_t)(in->strs[id] >> 1);
    } else {
        assert(in->nids < SL_INTERN_NONE - 1);
        if (in->nids == in->capids) {
            uint32_t cap = in->capids ? in->capids * 2 : 16;
            in->strs = sl_realloc(in->strs, (size_t)cap * sizeof(*in->strs));
            in->bytes += (size_t)(cap - in->capids) * sizeof(*in->strs);
            in->capids = cap;
        }
        id = in->nids++;
    }
    in->strs[id] = (uintptr_t)st;
    in->slots[i].id1 = id + 1;
    in->slots[i].hash = (uint32_t)hash;
    in->count++;
    return id;
}

void sl_intern_ref(struct sl_intern *in, uint32_t id) {
    struct istr *st = str_of(in, id);
    assert(st->refs > 0 && st->refs < UINT32_MAX);
    st->refs++;
}

void sl_intern_unref(struct sl_intern *in, uint32_t id) {
    struct istr *st = str_of(in, id);
    assert(st->refs > 0);
    if (--st->refs) return;

    slot_delete(in, slot_find(in, st->data, st->len, st->hash));
    in->bytes -= sizeof(*st) + st->len + 1;
    free(st);
    in->strs[id] = ((uintptr_t)in->free_head << 1) | 1;
    in->free_head = id;
    if (--in->count) return;

    /* Last string gone: give the arrays back. */
    in->bytes -= (size_t)in->capids * sizeof(*in->strs) +
                 (size_t)(in->mask + 1) * sizeof(*in->slots);
    free(in->strs);
    free(in->slots);
    in->strs = NULL;
    in->slots = NULL;
    in->nids = in->capids = in->mask = 0;
    in->free_head = SL_INTERN_NONE;
}

const char *sl_intern_str(const struct sl_intern *in, uint32_t id, size_t *len) {
    const struct istr *st = str_of(in, id);
    if (len) *len = st->len;
    return st->data;
}

uint32_t sl_intern_refs(const struct sl_intern *in, uint32_t id) {
    return str_of(in, id)->refs;
}

size_t sl_intern_count(const struct sl_intern *in) { return in->count; }

size_t sl_intern_bytes(const struct sl_intern *in) { return in->bytes; }
