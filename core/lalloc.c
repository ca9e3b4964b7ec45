/* lalloc.c -- the rules' Lua VMs' allocator: free lists per size class. */
#include "lalloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FINE_MAX 1024          /* classes of 16 bytes up to here ... */
#define FINE_STEP 16
#define COARSE_STEP 256        /* ... then of 256 up to SL_LALLOC_SMALL */
#define NCLASSES (FINE_MAX / FINE_STEP + (SL_LALLOC_SMALL - FINE_MAX) / COARSE_STEP + 1)
#define CHUNK_BYTES (128 * 1024)

/* A chunk's header, padded so that blocks stay 16-byte aligned. */
struct chunk {
    struct chunk *next;
    char pad[8];
};

struct sl_lalloc {
    void *free[NCLASSES];      /* freed blocks of each class, linked through their first word */
    char *bump, *end;          /* the rest of the newest chunk */
    struct chunk *chunks;
    size_t held;
};

_Static_assert(sizeof(struct chunk) % 16 == 0, "blocks must stay 16-byte aligned");

static inline unsigned class_of(size_t n) {
    if (n <= FINE_MAX) return (unsigned)((n + FINE_STEP - 1) / FINE_STEP);
    return (unsigned)(FINE_MAX / FINE_STEP + (n - FINE_MAX + COARSE_STEP - 1) / COARSE_STEP);
}

static inline size_t class_bytes(unsigned c) {
    if (c <= FINE_MAX / FINE_STEP) return (size_t)c * FINE_STEP;
    return FINE_MAX + (size_t)(c - FINE_MAX / FINE_STEP) * COARSE_STEP;
}

struct sl_lalloc *sl_lalloc_create(void) {
    return calloc(1, sizeof(struct sl_lalloc));
}

void sl_lalloc_destroy(struct sl_lalloc *a) {
    if (!a) return;
    for (struct chunk *c = a->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

size_t sl_lalloc_held(const struct sl_lalloc *a) { return a->held; }

/* Gives block p back to class c. */
static inline void small_put(struct sl_lalloc *a, unsigned c, void *p) {
    memcpy(p, &a->free[c], sizeof(void *));
    a->free[c] = p;
}

/* A new block of class c, cut from the newest chunk (or a new one); NULL
 * when out of memory. */
static void *small_cut(struct sl_lalloc *a, unsigned c) {
    size_t bytes = class_bytes(c);
    if ((size_t)(a->end - a->bump) < bytes) {
        struct chunk *ch = malloc(CHUNK_BYTES);
        if (!ch) return NULL;
        /* The old chunk's tail, less than one block of this class, is
         * given to the largest class it holds. */
        size_t tail = (size_t)(a->end - a->bump);
        if (tail >= FINE_STEP) {
            unsigned t = class_of(tail);
            if (class_bytes(t) > tail) t--;
            small_put(a, t, a->bump);
        }
        ch->next = a->chunks;
        a->chunks = ch;
        a->held += CHUNK_BYTES;
        a->bump = (char *)(ch + 1);
        a->end = (char *)ch + CHUNK_BYTES;
    }
    void *p = a->bump;
    a->bump += bytes;
    return p;
}

/* A block of class c: the last one freed when the class has one. The
 * class's next block is prefetched: the free list links blocks the garbage
 * collector freed anywhere in the chunks, and reading the link of a block
 * that left the cache (a steady stream's records come in small batches
 * between other threads' work) would stall the allocation after this one. */
static inline void *small_get(struct sl_lalloc *a, unsigned c) {
    void *p = a->free[c];
    if (__builtin_expect(p == NULL, 0)) return small_cut(a, c);
    memcpy(&a->free[c], p, sizeof(void *));
    if (a->free[c]) __builtin_prefetch(a->free[c], 1);
    return p;
}

static inline bool is_small(size_t n) { return n - 1 < SL_LALLOC_SMALL; } /* 0 < n <= SMALL */

void *sl_lalloc_fn(void *ud, void *ptr, size_t osize, size_t nsize) {
    struct sl_lalloc *a = ud;
    /* First the two calls of almost every object: made, then freed. */
    if (!ptr) {
        if (__builtin_expect(is_small(nsize), 1)) return small_get(a, class_of(nsize));
        osize = 0;                                     /* Lua 5.1: osize is 0 for a new block */
    } else if (nsize == 0) {
        if (__builtin_expect(is_small(osize), 1)) small_put(a, class_of(osize), ptr);
        else {
            a->held -= osize;
            free(ptr);
        }
        return NULL;
    }
    if (nsize == 0) return NULL;                       /* nothing, freed */
    if (ptr && !is_small(osize) && !is_small(nsize)) { /* large to large */
        void *q = realloc(ptr, nsize);
        if (q) a->held = a->held - osize + nsize;
        return q;
    }
    if (ptr && is_small(osize) && is_small(nsize) && class_of(osize) == class_of(nsize))
        return ptr;                                    /* it fits where it is */
    void *q;
    if (is_small(nsize)) q = small_get(a, class_of(nsize));
    else if ((q = malloc(nsize))) a->held += nsize;
    if (!q) return NULL;                               /* ptr stays as it was */
    if (ptr) {
        memcpy(q, ptr, osize < nsize ? osize : nsize);
        sl_lalloc_fn(a, ptr, osize, 0);
    }
    return q;
}
