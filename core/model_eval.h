/* model_eval.h -- the seed notebook's evaluation protocol, for model.c.
 *
 * The seed split its interaction file with the recommenders library's
 * Amazon-reviews functions, in the file's line order: per user the last line
 * is test, the second last valid, the rest train; an instance's history is
 * the user's lines before it, at most 50. It drew 4 negatives per valid and
 * 9 per test positive with random.choice from the list of all interactions'
 * items, skipping only the positive and repeats, and reported AUC over all
 * test samples (sklearn's roc_auc_score) and group AUC (per user, averaged).
 * This unit does the same (Python's draws from mt.c, seeded with the run's
 * seed), trains the model on the train lines, and adds HR@10 and NDCG@10 of
 * the test item over the full catalog, the training time, a popularity
 * baseline, and the same figures with each user's lines ordered by timestamp
 * (what the library's own pipeline does), where order carries no signal.
 * Uses model.c and model_gen.c. */
#ifndef SL_MODEL_EVAL_H
#define SL_MODEL_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "model.h"

#define SL_MODEL_EVAL_MAX_RUNS 64   /* Most seeds or files one evaluation averages. */
#define SL_MODEL_EVAL_HISTORY 50    /* The seed's max_seq_length. */
#define SL_MODEL_EVAL_VALID_NEG 4   /* Negatives per valid positive (drawn, unused). */
#define SL_MODEL_EVAL_TEST_NEG 9    /* Negatives per test positive. */
#define SL_MODEL_EVAL_K 10          /* Cut-off of HR@K and NDCG@K. */
#define SL_MODEL_EVAL_SEED_AUC 0.86 /* The seed notebook's SLi-Rec test AUC, for reference. */

struct sl_model_eval_opts {
    const char *inventory, *rules;   /* the seed's data: catalog, and the generator */
    const char *catalog;             /* a catalog file instead of the inventory's, or NULL */
    const uint64_t *seeds;           /* generator seeds (also negative sampling seeds) */
    size_t nseeds;
    const char *const *files;        /* TSV files to evaluate instead of generating, or NULL */
    size_t nfiles;                   /* (negatives of file i are seeded with seeds[i] or i + 1) */
    int64_t now;                     /* generator's end of time */
    struct sl_model_params params;
};

struct sl_model_eval_figures {
    double auc, gauc, hr, ndcg;      /* means over the runs */
    double auc_run[SL_MODEL_EVAL_MAX_RUNS];
};

struct sl_model_eval_result {
    size_t runs;                             /* seeds or files averaged */
    double users, lines;                     /* per run, mean */
    double train_s;                          /* training time of one run, mean */
    struct sl_model_eval_figures model[2];   /* [0] file order, [1] timestamp order */
    struct sl_model_eval_figures pop[2];     /* popularity baseline, same orders */
    uint64_t seeds[SL_MODEL_EVAL_MAX_RUNS];  /* negative sampling seed of each run */
};

/* Runs the protocol. SL_ERR with err on unreadable inputs or a bad file. */
int sl_model_eval_run(const struct sl_model_eval_opts *o, struct sl_model_eval_result *r,
                      char *err, size_t errlen);
/* Prints the table (the seed's 0.86 beside it) to f. */
void sl_model_eval_print(const struct sl_model_eval_opts *o, const struct sl_model_eval_result *r,
                         FILE *f);

/* sklearn's roc_auc_score of scores against labels (1 positive, 0
 * negative): the Mann-Whitney statistic, ties counting one half. -1 when
 * there are no positives or no negatives. */
double sl_model_eval_auc(const double *scores, const unsigned char *labels, size_t n);

#endif
