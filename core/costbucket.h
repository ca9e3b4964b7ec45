/* costbucket.h -- a GraphQL cost bucket (Shopify's throttleStatus) as a
 * client sees it.
 *
 * The endpoint keeps a bucket of points that refills at a rate up to a
 * maximum; each request takes its cost. Its answers report the bucket, but
 * not when: an answer read now may have been written before other requests
 * were charged (answers of several connections are read in any order). So
 * a report only ever lowers the client's estimate: the estimate rises by
 * the refill rate alone, and never above what the endpoint could hold. The
 * requests in flight when a report is read are taken off it, as if none had
 * been charged yet. A client that sends only when sl_cost_bucket_wait says
 * 0 is not throttled while it is the bucket's only client. Pure; uses no
 * clock of its own (times in ms, from the caller). */
#ifndef SL_COSTBUCKET_H
#define SL_COSTBUCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sl_cost_bucket {
    bool known;                  /* a report was read */
    double avail, max, rate;     /* points, points, points/s */
    double cost;                 /* a request's requested cost */
    int64_t at_ms;               /* when avail was estimated */
};

/* A report: requested (the request's cost, <= 0 when not given), avail,
 * max (<= 0 when not given), rate (points/s), with inflight requests sent
 * and not answered, read at now_ms. A report without avail (< 0) or rate
 * (<= 0) is ignored. */
void sl_cost_bucket_learn(struct sl_cost_bucket *b, double requested, double avail,
                          double max, double rate, size_t inflight, int64_t now_ms);
/* Milliseconds until the bucket holds one request's cost; 0 when it does
 * (or nothing is known). */
int64_t sl_cost_bucket_wait(struct sl_cost_bucket *b, int64_t now_ms);
/* A request was sent: its cost is taken. */
void sl_cost_bucket_take(struct sl_cost_bucket *b);

#endif
