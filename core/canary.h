/* canary.h -- new rules run over a sample before a reload lets them in.
 *
 * On SIGHUP (and in `sluice check --against FILE`) the new rules first run
 * over a sample: the lines of the config's rules.canary file (one record
 * value per line, as `sluice test` reads them) and the last rules.canary_last
 * input records the worker has seen (copies of their values, keys and
 * metadata, bounded by rules.canary_bytes). Each sample record runs through
 * the Lua steps of the pipeline in the old rules' VM and in the new one;
 * a sink step (kafka, store) passes the context on unchanged (nothing
 * produced or stored), and any other step (window, model, http) holds it:
 * it would add a variable the canary cannot make, so the record stops
 * there (the summary says how many records stopped where), once the
 * step's request rule (http, MLflow model: what it would send, never sent)
 * took it, judged as a lua step is. The lua steps
 * after such a step run on contexts sampled as they left it in the running
 * pipeline (sl_canary_wants, sl_canary_keep_ctx): the variables the step
 * and those before it added, set in the context of the record they came
 * from, run from the step after it. They are what the running rules made:
 * new rules that change what an earlier lua step gives a later one are
 * judged on the old shape. Both VMs see the same contexts and only a
 * difference between them counts. The new rules are refused when they raise
 * on a record the old rules did not raise on, or filter more records that
 * the old rules let through than the slack allows: the larger of
 * rules.canary_filter_slack records and rules.canary_filter_slack_pct % of
 * the sample. Without old rules (`sluice check --against FILE` with no
 * baseline) any raise refuses them.
 *
 * The sample runs with the JIT off, so a rule's budget always stops it, and
 * for at most SL_CANARY_MAX_MS in all: the rest is not judged.
 * Uses rules.c, pipeline.c (sl_pipeline_push_ctx: the contexts records get). */
#ifndef SL_CANARY_H
#define SL_CANARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "pipeline.h"
#include "rules.h"

#define SL_CANARY_MAX_MS 2000    /* Bound on running one sample (the loop waits). */
#define SL_CANARY_MAX_LINES 10000 /* Lines of the canary file run at most. */
#define SL_CANARY_SAMPLE_EVERY 64 /* A full ring of contexts takes one in this many. */

struct sl_canary;

/* The last `last` input records, at most max_bytes of keys and values in
 * all. NULL when last is 0 (keeping nothing). */
struct sl_canary *sl_canary_create(size_t last, size_t max_bytes);
void sl_canary_destroy(struct sl_canary *c);

/* Keeps a copy of in (its value, key and metadata); the oldest record goes.
 * A record larger than max_bytes is not kept. O(1) but for a copy of its
 * bytes, and no allocation once the slots have grown to the records' size. */
void sl_canary_keep(struct sl_canary *c, const struct sl_input *in);
/* Input records kept now. */
size_t sl_canary_size(const struct sl_canary *c);

/* Whether a context leaving step should be kept: every one until the
 * step's ring is full, then one in SL_CANARY_SAMPLE_EVERY (false when c is
 * NULL). O(steps). */
bool sl_canary_wants(struct sl_canary *c, size_t step);
/* Keeps a context that left step: the record it came from and the JSON
 * object of its variables (sl_step_encode_vars), in a ring of its own per
 * step with the same bounds as the input records'. */
void sl_canary_keep_ctx(struct sl_canary *c, size_t step, const struct sl_input *in,
                        const char *vars, size_t varslen);
/* Contexts kept after step now. */
size_t sl_canary_size_after(const struct sl_canary *c, size_t step);

/* What one sample run found. */
struct sl_canary_verdict {
    size_t records;          /* sample records judged */
    size_t from_file;        /* ...of them from the canary file */
    size_t raised;           /* the new rules raised, the old ones did not */
    size_t filtered;         /* the new rules filtered, the old ones passed */
    size_t allowed;          /* newly filtered records allowed */
    bool refused;
    char summary[2048];      /* one line: why refused, or the counts */
};

/* Runs the sample (the lines of file, if not NULL, then the records c kept,
 * if c is not NULL) through old (NULL: none) and new_rules, both built for
 * configs with the same steps; cf (the new rules' config) gives the steps,
 * the input topic of file's records and the slack. Returns SL_ERR, with
 * err, when file cannot be read; else SL_OK and *v. */
int sl_canary_judge(const struct sl_canary *c, const char *file, struct sl_rules *old,
                    struct sl_rules *new_rules, const struct sl_config *cf,
                    struct sl_canary_verdict *v, char *err, size_t errlen);

#endif
