/* costbucket.c -- a GraphQL cost bucket as a client sees it (costbucket.h). */
#include "costbucket.h"

/* Brings the estimate to now_ms: the refill since it was made. */
static void refill(struct sl_cost_bucket *b, int64_t now_ms) {
    if (now_ms > b->at_ms) b->avail += b->rate * (double)(now_ms - b->at_ms) / 1000.0;
    if (b->avail > b->max) b->avail = b->max;
    b->at_ms = now_ms;
}

void sl_cost_bucket_learn(struct sl_cost_bucket *b, double requested, double avail,
                          double max, double rate, size_t inflight, int64_t now_ms) {
    if (avail < 0 || rate <= 0) return;
    if (requested > 0) b->cost = requested;
    else if (b->cost <= 0) b->cost = 1;
    b->rate = rate;
    b->max = max > 0 ? max : (b->max > 0 ? b->max : avail);
    double reported = avail - b->cost * (double)inflight;
    if (!b->known) {
        b->known = true;
        b->avail = reported;
        b->at_ms = now_ms;
        return;
    }
    refill(b, now_ms);
    if (reported < b->avail) b->avail = reported;
}

int64_t sl_cost_bucket_wait(struct sl_cost_bucket *b, int64_t now_ms) {
    if (!b->known) return 0;
    refill(b, now_ms);
    if (b->avail >= b->cost) return 0;
    return (int64_t)((b->cost - b->avail) / b->rate * 1000.0) + 1;
}

void sl_cost_bucket_take(struct sl_cost_bucket *b) {
    if (b->known) b->avail -= b->cost;
}
