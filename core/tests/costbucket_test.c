/* costbucket_test.c -- a client that waits for the cost bucket is not
 * throttled, even when it reads the answers out of order. */
#include "costbucket.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>

/* The endpoint's side: Shopify's bucket, refilled by the millisecond. */
struct server {
    double avail, max, rate, cost;
    int64_t at_ms;
};

static void server_refill(struct server *s, int64_t now) {
    s->avail += s->rate * (double)(now - s->at_ms) / 1000.0;
    if (s->avail > s->max) s->avail = s->max;
    s->at_ms = now;
}

#define SIM_INFLIGHT 8
#define SIM_REQUESTS 400

/* A request in flight: charged at arrive, answer read at read with the
 * bucket the endpoint reported when it charged it. */
struct flight {
    int64_t arrive, read;
    bool charged;
    double reported;
};

static uint32_t rng = 12345;
static uint32_t next_rand(void) {
    rng = rng * 1103515245u + 12345u;
    return (rng >> 16) & 0x7fff;
}

/* Sends SIM_REQUESTS through a bucket of 40 points refilled at 20/s, 10 a
 * request, up to SIM_INFLIGHT at once, with 1-5 ms to the endpoint and
 * 1-120 ms back (answers overtake one another). Returns the throttled
 * answers; *end_ms: when the last answer was read. */
static int simulate(int64_t *end_ms) {
    struct server s = {.avail = 40, .max = 40, .rate = 20, .cost = 10};
    struct sl_cost_bucket b = {0};
    struct flight f[SIM_INFLIGHT];
    size_t nf = 0;
    int sent = 0, answered = 0, throttled = 0;
    int64_t now = 0;
    /* the first answer teaches the bucket */
    sl_cost_bucket_learn(&b, 10, 40, 40, 20, 0, now);
    while (answered < SIM_REQUESTS && now < 10 * 60 * 1000) {
        for (size_t i = 0; i < nf; i++)
            if (!f[i].charged && f[i].arrive <= now) {
                server_refill(&s, now);
                if (s.avail >= s.cost) s.avail -= s.cost;
                else throttled++;
                f[i].reported = s.avail;
                f[i].charged = true;
            }
        for (size_t i = 0; i < nf;)
            if (f[i].charged && f[i].read <= now) {
                nf--;
                sl_cost_bucket_learn(&b, 10, (double)(int64_t)f[i].reported, 40, 20, nf, now);
                f[i] = f[nf];
                answered++;
            } else {
                i++;
            }
        while (sent < SIM_REQUESTS && nf < SIM_INFLIGHT && sl_cost_bucket_wait(&b, now) == 0) {
            int64_t up = 1 + next_rand() % 5;
            f[nf++] = (struct flight){.arrive = now + up, .read = now + up + 1 + next_rand() % 120};
            sl_cost_bucket_take(&b);
            sent++;
        }
        now++;
    }
    *end_ms = now;
    return throttled;
}

int main(void) {
    struct sl_cost_bucket b = {0};
    TEST("nothing known: no wait", sl_cost_bucket_wait(&b, 0) == 0);
    sl_cost_bucket_take(&b);
    TEST("nothing known: taking changes nothing", !b.known && b.avail == 0);
    sl_cost_bucket_learn(&b, 10, -1, 40, 20, 0, 0);
    TEST("a report without currentlyAvailable is ignored", !b.known);
    sl_cost_bucket_learn(&b, 10, 40, 40, 0, 0, 0);
    TEST("a report without restoreRate is ignored", !b.known);

    sl_cost_bucket_learn(&b, 10, 25, 40, 20, 1, 1000);
    TEST("first report: less the request in flight", b.known && b.avail == 15 && b.cost == 10);
    TEST("enough for one request: no wait", sl_cost_bucket_wait(&b, 1000) == 0);
    sl_cost_bucket_take(&b);
    TEST("taking one request's cost", b.avail == 5);
    TEST("5 points short at 20/s: 251 ms", sl_cost_bucket_wait(&b, 1000) == 251);
    TEST("refilled after 250 ms", sl_cost_bucket_wait(&b, 1250) == 0 && b.avail == 10);
    TEST("never above the maximum", sl_cost_bucket_wait(&b, 60000) == 0 && b.avail == 40);

    sl_cost_bucket_learn(&b, 10, 20, 40, 20, 0, 60000);
    TEST("a lower report lowers the estimate", b.avail == 20);
    sl_cost_bucket_learn(&b, 10, 40, 40, 20, 0, 60000);
    TEST("a higher report (read late, written before others were charged) does not raise it",
         b.avail == 20);
    sl_cost_bucket_learn(&b, 10, 40, 40, 20, 0, 60500);
    TEST("the estimate rises by the refill rate", b.avail == 30);
    sl_cost_bucket_learn(&b, 0, 40, 0, 20, 0, 60500);
    TEST("a report without cost or maximum keeps the known ones", b.cost == 10 && b.max == 40);

    int64_t end_ms = 0;
    int throttled = simulate(&end_ms);
    TEST("answers read out of order: no request throttled", throttled == 0);
    /* 400 requests of 10 points at 20 points/s after the first 40: 198 s */
    TEST("and the bucket is used: within 5% of its refill rate",
         end_ms >= 198000 && end_ms <= 208000);
    return TEST_DONE();
}
