/* model.h -- the built-in recommendation model: sequential co-visitation.
 *
 * A model counts, over users' interaction sequences, how often product b
 * follows product a within `lag` lines, nearer pairs weighing more
 * (lag_decay^(d-1) for d lines apart). For a window of viewed products it
 * scores every product c as
 *
 *     score(c) = sum_k c_k * (co[h_k][c] + alpha * pop(c)) / sum_k w_k
 *     with c_k = w_k / (out[h_k] + alpha), w_k = history_decay^k
 *
 * over the `history` most recent window items h_0 (newest), h_1, ...: a
 * mixture of next-product distributions, smoothed towards popularity pop(c)
 * (share of all lines). With no known item in the window the score is
 * pop(c) alone: the popularity fallback. Recommendations exclude the
 * products already in the window and come as GIDs with their scores,
 * the shape of the MLflow model's answer ({itemIds, preds}).
 *
 * Models are trained from the seed's interaction TSV (label, user, handle,
 * timestamp, category), saved to and loaded from versioned files (a text
 * header: format version, catalog hash, parameters, data summary; then a
 * checksummed binary body) and can keep learning from the stream
 * (sl_model_observe). A model is used by one thread at a time.
 * Uses catalog.c for products. */
#ifndef SL_MODEL_H
#define SL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "sl.h"

#define SL_MODEL_FORMAT 1         /* Model file format version this sluice writes and reads. */
#define SL_MODEL_MAGIC "sluice-model" /* First word of a model file. */
#define SL_MODEL_MAX_TOP 100      /* Most recommendations one call returns. */
#define SL_MODEL_MAX_FILE ((size_t)1 << 30) /* Largest model file loaded, bytes. */
#define SL_MODEL_MAX_TSV ((size_t)1 << 31)  /* Largest interaction file read, bytes. */

/* ==================== Parameters ==================== */

struct sl_model_params {
    uint32_t lag;           /* pairs counted up to this many lines apart (1..1000) */
    double lag_decay;       /* weight of a pair d lines apart: lag_decay^(d-1), (0, 1] */
    uint32_t history;       /* most recent window items that score (1..1000) */
    double history_decay;   /* weight of the k-th most recent: history_decay^k, (0, 1] */
    double alpha;           /* popularity prior, in lines, of each item's row (>= 0) */
    uint32_t max_neighbors; /* strongest followers kept per product (1..1000000) */
};

/* The defaults: lag 10, lag_decay 0.5, history 10, history_decay 0.5,
 * alpha 1, max_neighbors 256. */
void sl_model_params_default(struct sl_model_params *p);
/* SL_ERR with err naming the parameter when one is out of range. */
int sl_model_params_check(const struct sl_model_params *p, char *err, size_t errlen);
/* Sets the parameter `name` from text ("lag", "lag_decay", ...). SL_ERR
 * with err for an unknown name or a bad number (not range-checked here). */
int sl_model_params_set(struct sl_model_params *p, const char *name, const char *value,
                        char *err, size_t errlen);

/* ==================== Interaction data ==================== */

/* Interactions as product numbers, sequence after sequence (a sequence is a
 * run of lines of one user, in file order). Only lines with label 1 and a
 * handle of the catalog are kept; the others are counted in `skipped`. */
struct sl_model_data {
    uint32_t *items;      /* product numbers */
    int64_t *ts;          /* their timestamps, as in the file */
    size_t n, cap;        /* lines kept, slots */
    size_t *starts;       /* sequence s is items[starts[s] .. starts[s+1]) */
    size_t nseq, seqcap;  /* sequences, slots in starts (nseq + 1 used) */
    size_t skipped;       /* lines dropped: label 0 or handle not in the catalog */
    uint64_t source;      /* FNV-1a 64 of the text read */
    bool by_time;         /* sequences ordered by timestamp, not file order */
};

/* Parses TSV text (name is used in errors: "name:LINE: ..."). Lines are
 * label \t user \t handle \t timestamp [\t category ...]; empty lines are
 * skipped. SL_ERR on a malformed line or when no line matched the catalog;
 * d is then empty. d must be zeroed (or freed) before. */
int sl_model_data_parse(struct sl_model_data *d, const struct sl_catalog *cat,
                        const char *text, size_t len, const char *name, char *err,
                        size_t errlen);
/* Reorders each sequence by timestamp (stable: file order among equals). */
void sl_model_data_order_by_time(struct sl_model_data *d);
void sl_model_data_free(struct sl_model_data *d);

/* ==================== Model ==================== */

struct sl_model;

/* Trains on d, leaving out the last `holdout` lines of every sequence (0 for
 * production, 2 for the seed's train/valid/test split). The model keeps a
 * copy of cat. NULL with err when the parameters are out of range or no
 * line is left to learn from. Deterministic: the same input gives the same
 * model, byte for byte once saved. */
struct sl_model *sl_model_train(const struct sl_catalog *cat, const struct sl_model_data *d,
                                size_t holdout, const struct sl_model_params *p, char *err,
                                size_t errlen);
void sl_model_destroy(struct sl_model *m);
/* `sluice model train`: reads the catalog and the TSV (by_time: each
 * sequence in timestamp order), trains on every line, saves to out and logs
 * a summary. SL_ERR with err naming the file. */
int sl_model_train_file(const char *tsv, const char *catalog, const char *out, bool by_time,
                        const struct sl_model_params *p, char *err, size_t errlen);

/* Writes the model file (to path.tmp, then renamed over path, so a reader
 * never sees half a file). */
int sl_model_save(const struct sl_model *m, const char *path, char *err, size_t errlen);
/* The model file's bytes. */
void sl_model_encode(const struct sl_model *m, struct sl_buf *out);
/* Loads a model file. Never aborts on a bad file: NULL with err saying why
 * (not a model file, another format version, truncated or corrupted body,
 * bad values), so a reload can keep the model it has. */
struct sl_model *sl_model_load(const char *path, char *err, size_t errlen);
/* The same from bytes; name is used in errors. */
struct sl_model *sl_model_decode(const char *buf, size_t len, const char *name, char *err,
                                 size_t errlen);
/* SL_ERR with a clear message when m was trained for another catalog than
 * cat (different products, numbering or GIDs). */
int sl_model_check_catalog(const struct sl_model *m, const struct sl_catalog *cat,
                           const char *catalog_name, char *err, size_t errlen);

const struct sl_catalog *sl_model_catalog(const struct sl_model *m);
const struct sl_model_params *sl_model_params(const struct sl_model *m);
/* Bytes the model holds in memory, catalog included. */
size_t sl_model_bytes(const struct sl_model *m);
/* One JSON object describing the model: format, catalog (hash, products),
 * params, data (lines, sequences, products, skipped, order, source). */
void sl_model_describe(const struct sl_model *m, struct sl_buf *out);

/* ==================== Scoring ==================== */

struct sl_model_result {
    size_t n;                           /* recommendations below, best first */
    uint32_t items[SL_MODEL_MAX_TOP];   /* product numbers */
    const char *gids[SL_MODEL_MAX_TOP]; /* their GIDs, owned by the model */
    double scores[SL_MODEL_MAX_TOP];    /* descending, in (0, 1] */
    size_t known;                       /* window items in the catalog; 0: popularity */
    /* Scratch kept between calls (free with sl_model_result_free). */
    double *acc;                        /* per product, 0 between calls */
    unsigned char *flag;                /* per product, 0 between calls */
    uint32_t *list;                     /* products whose acc or flag is set */
    uint32_t *window;                   /* the window's product numbers */
    size_t cap, list_cap, known_cap;    /* products acc/flag hold, slots in list, window */
};
void sl_model_result_free(struct sl_model_result *r);

/* Recommends up to top_n (<= SL_MODEL_MAX_TOP) products for a window of
 * handles items[0..n) (oldest first; handles not in the catalog are
 * ignored). ts (may be NULL) are their timestamps: when given and not in
 * order, items are taken in timestamp order (stable). Products of the window
 * are never recommended. Ties go to the more popular product, then to the
 * lower product number. out (zeroed before its first use) is filled; its
 * GIDs live as long as m. SL_ERR only when top_n is out of range. */
int sl_model_recommend(const struct sl_model *m, const char *const *items, const int64_t *ts,
                       size_t n, size_t top_n, struct sl_model_result *out);

/* Scores of products cands[0..nc) after the history hist[0..n) (product
 * numbers, oldest first), into scores: the score of the formula above, no
 * exclusion. For evaluation. */
void sl_model_score(const struct sl_model *m, const uint32_t *hist, size_t n,
                    const uint32_t *cands, size_t nc, double *scores);
/* How many training lines product i had. */
double sl_model_popularity(const struct sl_model *m, uint32_t i);

/* Online learning: items[0..n) is a window after a new view (oldest first),
 * items[n-1] the new one. Adds it to the popularity counts and its pairs
 * with the `lag` items before it, as training does. A product's followers
 * stay bounded by max_neighbors (the weakest makes room). No-op when the
 * new item is not in the catalog. */
void sl_model_observe(struct sl_model *m, const char *const *items, size_t n);

#endif
