/* model_eval.c -- the seed's split, negatives and metrics (see model_eval.h). */
#include "model_eval.h"
#include "model_gen.h"
#include "mt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ==================== Metrics ==================== */

struct scored {
    double s;
    unsigned char label;
};

static int scored_cmp(const void *a, const void *b) {
    const struct scored *x = a, *y = b;
    return x->s < y->s ? -1 : x->s > y->s;
}

double sl_model_eval_auc(const double *scores, const unsigned char *labels, size_t n) {
    struct scored *v = sl_malloc((n ? n : 1) * sizeof(*v));
    double npos = 0, rank_sum = 0, auc = -1;
    for (size_t i = 0; i < n; i++) {
        v[i] = (struct scored){scores[i], labels[i]};
        npos += labels[i] != 0;
    }
    qsort(v, n, sizeof(*v), scored_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && v[j + 1].s == v[i].s) j++;
        double rank = (double)(i + j) / 2 + 1;       /* average rank of the tie */
        for (size_t k = i; k <= j; k++) if (v[k].label) rank_sum += rank;
        i = j + 1;
    }
    double nneg = (double)n - npos;
    if (npos > 0 && nneg > 0) auc = (rank_sum - npos * (npos + 1) / 2) / (npos * nneg);
    free(v);
    return auc;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ==================== One run ==================== */

/* random.choice over items, skipping pos and repeats, k times (the seed's
 * _generate_negative_samples_for_file). */
static void negatives(struct sl_mt *mt, const struct sl_model_data *d, uint32_t pos, size_t k,
                      uint32_t *out) {
    size_t got = 0;
    while (got < k) {
        uint32_t c = d->items[sl_mt_below(mt, d->n)];
        bool seen = c == pos;
        for (size_t i = 0; i < got && !seen; i++) seen = out[i] == c;
        if (!seen) out[got++] = c;
    }
}

/* Figures of one model (or popularity when pop) on one split. */
struct acc {
    double *scores;       /* all test samples, group after group */
    unsigned char *labels;
    size_t n;
    double gauc, hr, ndcg;
    size_t groups;
};

/* The rank (1-based) of pos among all products by score, ties broken as
 * sl_model_recommend does (popularity, then product number). */
static size_t rank_of(const struct sl_model *m, const double *all, size_t nitems, uint32_t pos) {
    size_t r = 1;
    double ps = all[pos], pp = sl_model_popularity(m, pos);
    for (uint32_t c = 0; c < nitems; c++) {
        if (c == pos) continue;
        double cp = sl_model_popularity(m, c);
        if (all[c] > ps || (all[c] == ps && (cp > pp || (cp == pp && c < pos)))) r++;
    }
    return r;
}

static void add_group(struct acc *a, const double *s, size_t k, size_t rank) {
    unsigned char lab[1 + SL_MODEL_EVAL_TEST_NEG] = {1};
    memcpy(a->scores + a->n, s, k * sizeof(*s));
    memcpy(a->labels + a->n, lab, k);
    a->n += k;
    a->gauc += sl_model_eval_auc(s, lab, k);
    if (rank <= SL_MODEL_EVAL_K) {
        a->hr += 1;
        a->ndcg += 1 / log2((double)rank + 1);
    }
    a->groups++;
}

static void figures(struct sl_model_eval_figures *f, size_t run, struct acc *a) {
    double auc = sl_model_eval_auc(a->scores, a->labels, a->n);
    f->auc_run[run] = auc;
    f->auc += auc;
    f->gauc += a->gauc / (double)a->groups;
    f->hr += a->hr / (double)a->groups;
    f->ndcg += a->ndcg / (double)a->groups;
}

/* Trains on d's train lines and scores its test lines. */
static int run_split(const struct sl_catalog *cat, const struct sl_model_data *d,
                     const struct sl_model_params *p, uint64_t seed, size_t run,
                     struct sl_model_eval_figures *model_f, struct sl_model_eval_figures *pop_f,
                     double *train_s, char *err, size_t errlen) {
    const size_t k = 1 + SL_MODEL_EVAL_TEST_NEG, nitems = sl_catalog_count(cat);
    struct acc am = {0}, ap = {0};
    struct sl_mt mt;
    uint32_t cand[1 + SL_MODEL_EVAL_TEST_NEG], vneg[SL_MODEL_EVAL_VALID_NEG];
    uint32_t *all_items = sl_malloc(nitems * sizeof(*all_items));
    double *all = sl_malloc(nitems * sizeof(*all)), s[1 + SL_MODEL_EVAL_TEST_NEG];
    int ret = SL_ERR;

    double t0 = now_s();
    struct sl_model *m = sl_model_train(cat, d, 2, p, err, errlen);
    *train_s = now_s() - t0;
    if (!m) goto done;
    am.scores = sl_malloc(d->nseq * k * sizeof(double));
    ap.scores = sl_malloc(d->nseq * k * sizeof(double));
    am.labels = sl_malloc(d->nseq * k);
    ap.labels = sl_malloc(d->nseq * k);
    for (uint32_t c = 0; c < nitems; c++) all_items[c] = c;

    sl_mt_seed(&mt, seed);
    /* The valid file's negatives come first from the same stream. */
    for (size_t u = 0; u < d->nseq; u++) {
        size_t a = d->starts[u], n = d->starts[u + 1] - a;
        if (n >= 3) negatives(&mt, d, d->items[a + n - 2], SL_MODEL_EVAL_VALID_NEG, vneg);
    }
    for (size_t u = 0; u < d->nseq; u++) {
        size_t a = d->starts[u], n = d->starts[u + 1] - a;
        if (n < 2) continue;                       /* no history: the library writes no line */
        size_t t = n - 1, h0 = t > SL_MODEL_EVAL_HISTORY ? t - SL_MODEL_EVAL_HISTORY : 0;
        const uint32_t *hist = d->items + a + h0;
        cand[0] = d->items[a + t];
        negatives(&mt, d, cand[0], SL_MODEL_EVAL_TEST_NEG, cand + 1);

        sl_model_score(m, hist, t - h0, cand, k, s);
        sl_model_score(m, hist, t - h0, all_items, nitems, all);
        add_group(&am, s, k, rank_of(m, all, nitems, cand[0]));

        for (size_t i = 0; i < k; i++) s[i] = sl_model_popularity(m, cand[i]);
        for (uint32_t c = 0; c < nitems; c++) all[c] = sl_model_popularity(m, c);
        add_group(&ap, s, k, rank_of(m, all, nitems, cand[0]));
    }
    if (!am.groups) {
        sl_errf(err, errlen, "no user has two lines or more: nothing to test");
        goto done;
    }
    figures(model_f, run, &am);
    figures(pop_f, run, &ap);
    ret = SL_OK;
done:
    sl_model_destroy(m);
    free(am.scores);
    free(am.labels);
    free(ap.scores);
    free(ap.labels);
    free(all_items);
    free(all);
    return ret;
}

/* ==================== Runs ==================== */

int sl_model_eval_run(const struct sl_model_eval_opts *o, struct sl_model_eval_result *r,
                      char *err, size_t errlen) {
    struct sl_model_gen *g = NULL;
    struct sl_catalog *cat = NULL;
    struct sl_buf text = {0};
    struct sl_model_data d[2] = {{0}, {0}};
    int ret = SL_ERR;
    size_t runs = o->files ? o->nfiles : o->nseeds;

    memset(r, 0, sizeof(*r));
    if (!runs || runs > SL_MODEL_EVAL_MAX_RUNS) {
        sl_errf(err, errlen, "expected 1 to %d seeds or files, got %zu", SL_MODEL_EVAL_MAX_RUNS,
                runs);
        return SL_ERR;
    }
    if (!o->files || !o->catalog) {
        g = sl_model_gen_load(o->inventory, o->rules, err, errlen);
        if (!g) goto done;
    }
    cat = o->catalog ? sl_catalog_load(o->catalog, err, errlen) : sl_model_gen_products(g);
    if (!cat) goto done;
    for (size_t i = 0; i < runs; i++) {
        const char *name = o->files ? o->files[i] : "generated";
        char derr[SL_ERRLEN];
        double ts;
        r->seeds[i] = o->files ? (i < o->nseeds ? o->seeds[i] : i + 1) : o->seeds[i];
        sl_buf_reset(&text);
        if (o->files) {
            if (sl_read_file(o->files[i], &text, SL_MODEL_MAX_TSV, err, errlen)) goto done;
        } else {
            sl_model_gen_tsv(g, o->seeds[i], o->now, &text);
        }
        for (int order = 0; order < 2; order++) {
            sl_model_data_free(&d[order]);
            if (sl_model_data_parse(&d[order], cat, text.data ? text.data : "", text.len, name,
                                    err, errlen))
                goto done;
            if (order) sl_model_data_order_by_time(&d[order]);
            if (run_split(cat, &d[order], &o->params, r->seeds[i], i, &r->model[order],
                          &r->pop[order], &ts, derr, sizeof(derr))) {
                sl_errf(err, errlen, "%s: %s", name, derr);
                goto done;
            }
            if (!order) r->train_s += ts;
        }
        r->users += (double)d[0].nseq;
        r->lines += (double)d[0].n;
    }
    r->runs = runs;
    r->users /= (double)runs;
    r->lines /= (double)runs;
    r->train_s /= (double)runs;
    for (int order = 0; order < 2; order++) {
        struct sl_model_eval_figures *f[2] = {&r->model[order], &r->pop[order]};
        for (int j = 0; j < 2; j++) {
            f[j]->auc /= (double)runs;
            f[j]->gauc /= (double)runs;
            f[j]->hr /= (double)runs;
            f[j]->ndcg /= (double)runs;
        }
    }
    ret = SL_OK;
done:
    sl_model_data_free(&d[0]);
    sl_model_data_free(&d[1]);
    sl_buf_free(&text);
    sl_catalog_destroy(cat);
    sl_model_gen_destroy(g);
    return ret;
}

void sl_model_eval_print(const struct sl_model_eval_opts *o, const struct sl_model_eval_result *r,
                         FILE *f) {
    const struct sl_model_params *p = &o->params;
    fprintf(f, "The seed's protocol, mean of %zu %s (", r->runs,
            o->files ? "files" : "generator seeds");
    for (size_t i = 0; i < r->runs; i++) {
        if (o->files) fprintf(f, "%s%s", i ? " " : "", o->files[i]);
        else fprintf(f, "%s%llu", i ? " " : "", (unsigned long long)r->seeds[i]);
    }
    fprintf(f, "): %.0f users, %.0f lines per run.\n"
            "Per user the last line is test, the second last valid, the rest train; history "
            "= the lines\nbefore, at most %d; %d popularity-weighted negatives per test line. "
            "HR@%d and NDCG@%d rank\nthe test item among all products.\n"
            "Model: lag=%u lag_decay=%g history=%u history_decay=%g alpha=%g "
            "max_neighbors=%u\n\n", r->users, r->lines, SL_MODEL_EVAL_HISTORY,
            SL_MODEL_EVAL_TEST_NEG, SL_MODEL_EVAL_K, SL_MODEL_EVAL_K, p->lag, p->lag_decay,
            p->history, p->history_decay, p->alpha, p->max_neighbors);
    fprintf(f, "%-10s %-24s %7s %7s %7s %8s %10s\n", "order", "model", "AUC", "gAUC", "HR@10",
            "NDCG@10", "train");
    for (int order = 0; order < 2; order++) {
        const char *on = order ? "timestamp" : "file";
        const struct sl_model_eval_figures *m = &r->model[order], *q = &r->pop[order];
        fprintf(f, "%-10s %-24s %7.4f %7.4f %7.4f %8.4f", on, "sluice co-visitation", m->auc,
                m->gauc, m->hr, m->ndcg);
        if (!order) fprintf(f, " %8.1f ms\n", r->train_s * 1e3);
        else fprintf(f, "\n");
        fprintf(f, "%-10s %-24s %7.4f %7.4f %7.4f %8.4f\n", on, "popularity", q->auc, q->gauc,
                q->hr, q->ndcg);
        if (!order)
            fprintf(f, "%-10s %-24s %7.2f %7s %7s %8s %10s\n", on, "seed SLi-Rec (notebook)",
                    SL_MODEL_EVAL_SEED_AUC, "-", "-", "-", "~30 min");
    }
    fprintf(f, "\nAUC per run (file order, sluice):");
    for (size_t i = 0; i < r->runs; i++) fprintf(f, " %.4f", r->model[0].auc_run[i]);
    fprintf(f, "\n");
}
