/* model_bench.c -- how fast the built-in model trains and answers, how big
 * it is.
 *
 * Two catalogs: the seed's (238 products, interactions of `sluice model gen
 * --seed 1`, run from the repository root) and a synthetic one of 10,000
 * products in 500 "bought together" groups of 20, with 5,000 users of 100
 * lines each made like the seed's (a random product, then 1..10 follow-ups
 * from its group, or anything one time in ten). A request is a 10-item
 * window of real lines (handles, as the pipeline's window holds them) asking
 * for the top 10. Inputs are made before the clock starts. Prints plain
 * lines. */
#include "catalog.h"
#include "model.h"
#include "model_gen.h"
#include "mt.h"
#include "sl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WINDOW 10       /* items per request */
#define TOP 10          /* recommendations per request */
#define REQUESTS 200000 /* requests timed per catalog */
#define NPRODUCTS 10000 /* synthetic catalog */
#define GROUP 20        /* synthetic group size */
#define USERS 5000      /* synthetic users */
#define PER_USER 100    /* synthetic lines per user */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Trains (best of 3), then times REQUESTS recommendations for windows cut
 * from the data. */
static int bench(const char *name, const struct sl_catalog *cat, const char *tsv, size_t len) {
    struct sl_model_data d;
    struct sl_model_params p;
    struct sl_model_result r = {0};
    struct sl_buf file = {0};
    char err[SL_ERRLEN];
    double best = 1e9;
    struct sl_model *m = NULL;

    sl_model_params_default(&p);
    if (sl_model_data_parse(&d, cat, tsv, len, name, err, sizeof(err))) {
        fprintf(stderr, "model bench: %s\n", err);
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        double t0 = now_s();
        struct sl_model *fresh = sl_model_train(cat, &d, 0, &p, err, sizeof(err));
        double t = now_s() - t0;
        if (!fresh) {
            fprintf(stderr, "model bench: %s\n", err);
            return 1;
        }
        if (t < best) best = t;
        sl_model_destroy(m);
        m = fresh;
    }
    sl_model_encode(m, &file);
    printf("model %s: %zu products, %zu lines trained in %.1f ms; file %.1f KiB, "
           "memory %.1f KiB\n", name, sl_catalog_count(cat), d.n, best * 1e3,
           (double)file.len / 1024, (double)sl_model_bytes(m) / 1024);

    /* Windows: WINDOW consecutive lines starting at random places. */
    const char **win = sl_malloc((size_t)REQUESTS / 100 * WINDOW * sizeof(*win));
    struct sl_mt mt;
    sl_mt_seed(&mt, 7);
    for (size_t w = 0; w < REQUESTS / 100; w++) {
        size_t at = sl_mt_below(&mt, (uint32_t)(d.n - WINDOW));
        for (size_t k = 0; k < WINDOW; k++) win[w * WINDOW + k] = sl_catalog_handle(cat, d.items[at + k]);
    }
    double t0 = now_s(), sum = 0;
    for (size_t i = 0; i < REQUESTS; i++) {
        sl_model_recommend(m, win + (i % (REQUESTS / 100)) * WINDOW, NULL, WINDOW, TOP, &r);
        sum += r.scores[0];
    }
    double t = now_s() - t0;
    printf("model %s: %.2f us per request (%d-item window, top %d; %.0f requests/s; "
           "checksum %.3f)\n", name, t * 1e6 / REQUESTS, WINDOW, TOP, REQUESTS / t, sum);
    free(win);
    sl_model_result_free(&r);
    sl_buf_free(&file);
    sl_model_destroy(m);
    sl_model_data_free(&d);
    return 0;
}

int main(void) {
    char err[SL_ERRLEN];
    struct sl_buf tsv = {0};
    int rc = 1;

    sl_log_set_level(SL_LOG_ERROR);
    struct sl_model_gen *g = sl_model_gen_load("examples/seed/inventory.json",
                                               "examples/seed/interaction_rules.json", err, sizeof(err));
    if (!g) {
        fprintf(stderr, "model bench: %s (run from the repository root)\n", err);
        return 1;
    }
    struct sl_catalog *seed = sl_model_gen_products(g);
    sl_model_gen_tsv(g, 1, SL_MODEL_GEN_NOW, &tsv);
    if (bench("seed", seed, tsv.data, tsv.len)) goto done;

    /* The synthetic catalog and its interactions. */
    struct sl_catalog *big = sl_catalog_create();
    for (int i = 0; i < NPRODUCTS; i++) {
        char h[32], gid[48];
        snprintf(h, sizeof(h), "product-%05d", i);
        snprintf(gid, sizeof(gid), "gid://shopify/Product/%d", 1000000 + i);
        sl_catalog_add(big, h, strlen(h), gid, strlen(gid), NULL, 0);
    }
    struct sl_mt mt;
    sl_mt_seed(&mt, 11);
    sl_buf_reset(&tsv);
    for (int u = 0; u < USERS; u++) {
        for (int n = 0; n < PER_USER;) {
            uint32_t a = sl_mt_below(&mt, NPRODUCTS);
            sl_buf_printf(&tsv, "1\tu%d\tproduct-%05u\t%d\n", u, a, n++);
            for (uint32_t k = 1 + sl_mt_below(&mt, 10); k && n < PER_USER; k--) {
                uint32_t b = sl_mt_below(&mt, 10) ? a - a % GROUP + sl_mt_below(&mt, GROUP)
                                                   : sl_mt_below(&mt, NPRODUCTS);
                sl_buf_printf(&tsv, "1\tu%d\tproduct-%05u\t%d\n", u, b, n++);
            }
        }
    }
    rc = bench("10k", big, tsv.data, tsv.len);
    sl_catalog_destroy(big);
done:
    sl_catalog_destroy(seed);
    sl_model_gen_destroy(g);
    sl_buf_free(&tsv);
    return rc;
}
