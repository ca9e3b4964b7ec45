/* offsets.h -- which consumed offsets may be committed.
 *
 * Records of one partition arrive in offset order and finish in any order
 * (asynchronous steps). A partition's commit position is the lowest offset
 * still in flight, or one past the last finished when none is: committing
 * it never skips a record that has not finished (at-least-once). Pure data
 * structure; uses sl.h. */
#ifndef SL_OFFSETS_H
#define SL_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

struct sl_offsets;

struct sl_offsets *sl_offsets_create(void);
void sl_offsets_destroy(struct sl_offsets *o);

/* Starts tracking offset of (topic, partition). Offsets of one partition
 * must be tracked in increasing order; a lower one (a seek back after a
 * rebalance) resets that partition. */
void sl_offsets_track(struct sl_offsets *o, const char *topic, int32_t partition,
                      int64_t offset);
/* Marks offset finished. Returns the partition's new commit position when it
 * moved, else -1. Unknown offsets are ignored (-1). */
int64_t sl_offsets_done(struct sl_offsets *o, const char *topic, int32_t partition,
                        int64_t offset);
/* The partition's commit position now (the next offset to process), -1
 * when nothing of it was tracked. */
int64_t sl_offsets_position(const struct sl_offsets *o, const char *topic, int32_t partition);
/* Offsets in flight in the partition (all partitions when topic is NULL). */
size_t sl_offsets_pending(const struct sl_offsets *o, const char *topic,
                          int32_t partition);
/* Forgets a partition (revoked). */
void sl_offsets_drop(struct sl_offsets *o, const char *topic, int32_t partition);

#endif
