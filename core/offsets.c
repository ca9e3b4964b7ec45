/* offsets.c -- commit positions per partition (see offsets.h).
 *
 * Each partition keeps a ring of (offset, done) in arrival order. done()
 * finds its slot by binary search, O(log n), and pops finished slots from the
 * head, O(1) amortised. */
#include "offsets.h"
#include "sl.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    int64_t offset;
    bool done;
};

struct part {
    char *topic;
    int32_t partition;
    struct slot *ring;
    size_t cap, head, len;   /* ring capacity (power of two), first slot, slots used */
    int64_t next_done;       /* one past the last finished when len == 0, else -1 */
    struct part *next;
};

struct sl_offsets {
    struct part *parts;      /* one per assigned partition, the last used first */
};

struct sl_offsets *sl_offsets_create(void) {
    return sl_calloc(1, sizeof(struct sl_offsets));
}

static void part_free(struct part *p) {
    free(p->topic);
    free(p->ring);
    free(p);
}

void sl_offsets_destroy(struct sl_offsets *o) {
    if (!o) return;
    while (o->parts) {
        struct part *n = o->parts->next;
        part_free(o->parts);
        o->parts = n;
    }
    free(o);
}

/* The link to a partition's entry (*link NULL when there is none). */
static struct part **find_link(struct part *const *head, const char *topic, int32_t partition) {
    struct part *const *pp = head;
    while (*pp && ((*pp)->partition != partition || strcmp((*pp)->topic, topic)))
        pp = &(*pp)->next;
    return (struct part **)pp;
}

static struct part *find(const struct sl_offsets *o, const char *topic, int32_t partition) {
    return *find_link(&o->parts, topic, partition);
}

/* find, moving the partition found to the front: records come in runs of
 * one partition, and a consumer may have 64 partitions. */
static struct part *find_front(struct sl_offsets *o, const char *topic, int32_t partition) {
    struct part **pp = find_link(&o->parts, topic, partition), *p = *pp;
    if (p && pp != &o->parts) {
        *pp = p->next;
        p->next = o->parts;
        o->parts = p;
    }
    return p;
}

static struct slot *at(struct part *p, size_t i) {
    return &p->ring[(p->head + i) & (p->cap - 1)];
}

void sl_offsets_track(struct sl_offsets *o, const char *topic, int32_t partition,
                      int64_t offset) {
    struct part *p = find_front(o, topic, partition);
    if (!p) {
        p = sl_calloc(1, sizeof(*p));
        p->topic = sl_strdup(topic);
        p->partition = partition;
        p->next_done = -1;
        p->cap = 64;
        p->ring = sl_malloc(p->cap * sizeof(*p->ring));
        p->next = o->parts;
        o->parts = p;
    }
    if (p->len && at(p, p->len - 1)->offset >= offset) {
        p->head = p->len = 0;   /* seek back: start over */
    }
    if (p->len == p->cap) {
        struct slot *r = sl_malloc(2 * p->cap * sizeof(*r));
        for (size_t i = 0; i < p->len; i++) r[i] = *at(p, i);
        free(p->ring);
        p->ring = r;
        p->head = 0;
        p->cap *= 2;
    }
    struct slot *s = at(p, p->len++);
    s->offset = offset;
    s->done = false;
}

int64_t sl_offsets_done(struct sl_offsets *o, const char *topic, int32_t partition,
                        int64_t offset) {
    struct part *p = find_front(o, topic, partition);
    size_t lo = 0, hi;
    if (!p || !p->len) return -1;
    hi = p->len;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (at(p, mid)->offset < offset) lo = mid + 1;
        else hi = mid;
    }
    if (lo == p->len || at(p, lo)->offset != offset) return -1;
    at(p, lo)->done = true;
    if (lo != 0) return -1;
    int64_t last = offset;
    while (p->len && at(p, 0)->done) {
        last = at(p, 0)->offset;
        p->head = (p->head + 1) & (p->cap - 1);
        p->len--;
    }
    p->next_done = last + 1;
    return p->len ? at(p, 0)->offset : last + 1;
}

int64_t sl_offsets_position(const struct sl_offsets *o, const char *topic, int32_t partition) {
    const struct part *p = find(o, topic, partition);
    if (!p) return -1;
    return p->len ? at((struct part *)p, 0)->offset : p->next_done;
}

size_t sl_offsets_pending(const struct sl_offsets *o, const char *topic,
                          int32_t partition) {
    size_t n = 0;
    for (struct part *p = o->parts; p; p = p->next) {
        if (topic && (p->partition != partition || strcmp(p->topic, topic))) continue;
        for (size_t i = 0; i < p->len; i++)
            n += !at(p, i)->done;
    }
    return n;
}

void sl_offsets_drop(struct sl_offsets *o, const char *topic, int32_t partition) {
    struct part **pp = find_link(&o->parts, topic, partition), *p = *pp;
    if (!p) return;
    *pp = p->next;
    part_free(p);
}
