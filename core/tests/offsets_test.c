/* offsets_test.c -- commit positions never skip a record still in flight. */
#include "offsets.h"
#include "test.h"

#include <stdlib.h>

int main(void) {
    struct sl_offsets *o = sl_offsets_create();

    for (int64_t i = 10; i < 15; i++) sl_offsets_track(o, "t", 0, i);
    TEST("five offsets in flight", sl_offsets_pending(o, "t", 0) == 5);
    TEST("finishing a later offset does not move the position",
         sl_offsets_done(o, "t", 0, 12) == -1);
    TEST("finishing the first moves it to the next unfinished",
         sl_offsets_done(o, "t", 0, 10) == 11);
    TEST("finishing 11 skips the finished 12", sl_offsets_done(o, "t", 0, 11) == 13);
    TEST("an unknown offset is ignored", sl_offsets_done(o, "t", 0, 99) == -1);
    TEST("an offset finished twice is ignored the second time",
         sl_offsets_done(o, "t", 0, 12) == -1);
    sl_offsets_done(o, "t", 0, 14);
    TEST("last in flight finished: position is one past it",
         sl_offsets_done(o, "t", 0, 13) == 15);
    TEST("nothing pending", sl_offsets_pending(o, "t", 0) == 0);

    sl_offsets_track(o, "t", 1, 100);
    sl_offsets_track(o, "u", 0, 7);
    TEST("partitions and topics are tracked apart", sl_offsets_pending(o, NULL, 0) == 2);
    TEST("another partition's offsets do not mix", sl_offsets_done(o, "t", 1, 7) == -1);
    TEST("topic u partition 0", sl_offsets_done(o, "u", 0, 7) == 8);

    /* Growth past the initial ring, finished in reverse order. */
    for (int64_t i = 0; i < 1000; i++) sl_offsets_track(o, "g", 3, 5000 + i);
    int moved = 0;
    for (int64_t i = 999; i > 0; i--) moved += sl_offsets_done(o, "g", 3, 5000 + i) != -1;
    TEST("reverse finishing never moves while the first is in flight", moved == 0);
    TEST("finishing the first jumps past all", sl_offsets_done(o, "g", 3, 5000) == 6000);
    TEST("position: one past the last finished when none is in flight",
         sl_offsets_position(o, "g", 3) == 6000);
    sl_offsets_track(o, "g", 3, 6000);
    TEST("position: the first in flight", sl_offsets_position(o, "g", 3) == 6000);
    TEST("position: -1 for an unknown partition", sl_offsets_position(o, "none", 0) == -1);
    sl_offsets_track(o, "n", 0, 9);
    TEST("position: the first tracked before anything finished",
         sl_offsets_position(o, "n", 0) == 9);

    /* A seek back (rebalance, restore) starts the partition over. */
    sl_offsets_track(o, "s", 0, 50);
    sl_offsets_track(o, "s", 0, 20);
    TEST("seek back: only the new offset is in flight", sl_offsets_pending(o, "s", 0) == 1);
    TEST("seek back: position follows the new offset", sl_offsets_done(o, "s", 0, 20) == 21);

    sl_offsets_track(o, "d", 0, 1);
    sl_offsets_drop(o, "d", 0);
    TEST("a dropped partition has nothing pending", sl_offsets_pending(o, "d", 0) == 0);
    TEST("a dropped partition ignores done", sl_offsets_done(o, "d", 0, 1) == -1);

    sl_offsets_destroy(o);
    sl_offsets_destroy(NULL);
    return TEST_DONE();
}
