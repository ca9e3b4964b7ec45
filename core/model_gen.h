/* model_gen.h -- the seed's synthetic interactions and the demo catalog.
 *
 * Reproduces the seed showcase's interaction generator from its inventory
 * (categories -> product titles, title -> handle, handle -> GID) and its
 * rules (probabilities, counts, "frequently bought together" groups within
 * and across categories), as examples/seed/README.md describes: for users
 * user_1 .. user_{max_users-1}, randint(min, max) times a random category and
 * a random product of it, then randint(1, max_with_product) follow-ups, each
 * from a random within-category group of the product (probability
 * in_category_prob), else from a random across-category group (cumulative
 * probability in + across), else a random product of the category; every
 * line gets a uniform timestamp in the 30 days before `now` and the first
 * product's category. The draws are Python's (mt.c), so for a seed the TSV is
 * the one the seed's Python code writes after random.seed(seed).
 *
 * Also writes the demo catalog (examples/catalog.json) from the inventory.
 * Reads JSON with json.c. */
#ifndef SL_MODEL_GEN_H
#define SL_MODEL_GEN_H

#include <stdint.h>

#include "sl.h"

#define SL_MODEL_GEN_NOW INT64_C(1730822806) /* Default end of the 30 days: 2024-11-05T16:26:46Z, the seed file's date. */
#define SL_MODEL_GEN_DAYS 30                /* Timestamps fall in this many days before now. */

struct sl_model_gen;

/* Reads the inventory and the rules. NULL with err naming the file and the
 * key on any problem (a group's title without a handle included). */
struct sl_model_gen *sl_model_gen_load(const char *inventory, const char *rules, char *err,
                                       size_t errlen);
void sl_model_gen_destroy(struct sl_model_gen *g);

/* Appends the interaction TSV for seed (label \t user \t handle \t
 * timestamp \t category, one line per interaction, in generation order). */
void sl_model_gen_tsv(const struct sl_model_gen *g, uint64_t seed, int64_t now,
                      struct sl_buf *out);

/* Appends the catalog JSON: {"source": ..., "products": [{"handle", "gid",
 * "title", "category", "categories", "price", "image"}, ...]} with products
 * in handle order. Prices are made up (a hash of the handle), images are a
 * placeholder per category (images/<category>.svg). SL_ERR when a title is
 * not valid UTF-8. */
int sl_model_gen_catalog(const struct sl_model_gen *g, struct sl_buf *out, char *err,
                         size_t errlen);

/* `sluice model gen`: loads the inventory and rules, writes the TSV of seed
 * to tsv_path ("-": stdout; NULL: none) and the catalog to catalog_path
 * (NULL: none). SL_ERR with err naming the file. */
int sl_model_gen_write(const char *inventory, const char *rules, uint64_t seed, int64_t now,
                       const char *tsv_path, const char *catalog_path, char *err, size_t errlen);

/* A catalog of the inventory's handle_to_id, in handle order: the products
 * of sl_model_gen_catalog, numbered alike. Never NULL. */
struct sl_catalog *sl_model_gen_products(const struct sl_model_gen *g);

#endif
