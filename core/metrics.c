/* metrics.c -- counters, gauges and histograms (see metrics.h).
 *
 * A small open hash table of series; a series is never removed while the
 * process runs, so the table only grows with distinct label sets (steps,
 * reasons: a few dozen). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_METRICS_BUCKETS 256 /* Hash buckets; chains stay short for a few hundred series. */

enum kind { COUNTER, GAUGE, HISTOGRAM };

struct sl_metrics_series {
    char *name;
    char *labels;        /* "" when none */
    double value;        /* counter, gauge; a histogram's sum */
    enum kind kind;
    struct sl_metrics_histogram *hist; /* HISTOGRAM only */
    struct sl_metrics_series *next;
};

struct sl_metrics_histogram {
    struct sl_metrics_series *series; /* its name, labels and sum */
    double *bounds;      /* upper bounds, increasing */
    uint64_t *counts;    /* per bucket (not cumulative); [nbounds] is +Inf */
    size_t nbounds;
    uint64_t count;
};

static struct sl_metrics_series *buckets[SL_METRICS_BUCKETS];

static unsigned hash(const char *a, const char *b) {
    unsigned h = 2166136261u;
    for (; *a; a++) h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ '{') * 16777619u;
    for (; *b; b++) h = (h ^ (unsigned char)*b) * 16777619u;
    return h % SL_METRICS_BUCKETS;
}

static struct sl_metrics_series *find(const char *name, const char *labels, int create,
                                      enum kind kind) {
    if (!labels) labels = "";
    unsigned h = hash(name, labels);
    for (struct sl_metrics_series *s = buckets[h]; s; s = s->next)
        if (!strcmp(s->name, name) && !strcmp(s->labels, labels)) return s;
    if (!create) return NULL;
    struct sl_metrics_series *s = sl_calloc(1, sizeof(*s));
    s->name = sl_strdup(name);
    s->labels = sl_strdup(labels);
    s->kind = kind;
    s->next = buckets[h];
    buckets[h] = s;
    return s;
}

void sl_metrics_inc(const char *name, const char *labels, uint64_t n) {
    find(name, labels, 1, COUNTER)->value += (double)n;
}

struct sl_metrics_series *sl_metrics_counter(const char *name, const char *labels) {
    return find(name, labels, 1, COUNTER);
}

void sl_metrics_add(struct sl_metrics_series *s, uint64_t n) { s->value += (double)n; }

void sl_metrics_set(const char *name, const char *labels, double v) {
    find(name, labels, 1, GAUGE)->value = v;
}

double sl_metrics_get(const char *name, const char *labels) {
    struct sl_metrics_series *s = find(name, labels, 0, COUNTER);
    return s ? s->value : 0;
}

struct sl_metrics_histogram *sl_metrics_histogram(const char *name, const char *labels,
                                                  const double *bounds, size_t nbounds) {
    struct sl_metrics_series *s = find(name, labels, 1, HISTOGRAM);
    if (s->hist) return s->hist;
    struct sl_metrics_histogram *h = sl_calloc(1, sizeof(*h));
    h->series = s;
    h->bounds = sl_malloc(nbounds * sizeof(*h->bounds));
    memcpy(h->bounds, bounds, nbounds * sizeof(*h->bounds));
    h->counts = sl_calloc(nbounds + 1, sizeof(*h->counts));
    h->nbounds = nbounds;
    s->hist = h;
    return h;
}

void sl_metrics_observe(struct sl_metrics_histogram *h, double v) {
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->count++;
    h->series->value += v;
}

static void render_histogram(struct sl_buf *out, const struct sl_metrics_series *s) {
    const struct sl_metrics_histogram *h = s->hist;
    const char *sep = *s->labels ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        cum += h->counts[i];
        if (i < h->nbounds)
            sl_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name, s->labels, sep,
                          h->bounds[i], (unsigned long long)cum);
        else
            sl_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", s->name, s->labels, sep,
                          (unsigned long long)cum);
    }
    if (*s->labels) {
        sl_buf_printf(out, "%s_sum{%s} %.17g\n", s->name, s->labels, s->value);
        sl_buf_printf(out, "%s_count{%s} %llu\n", s->name, s->labels,
                      (unsigned long long)h->count);
    } else {
        sl_buf_printf(out, "%s_sum %.17g\n", s->name, s->value);
        sl_buf_printf(out, "%s_count %llu\n", s->name, (unsigned long long)h->count);
    }
}

static int cmp(const void *a, const void *b) {
    const struct sl_metrics_series *x = *(struct sl_metrics_series *const *)a;
    const struct sl_metrics_series *y = *(struct sl_metrics_series *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

void sl_metrics_render(struct sl_buf *out) {
    size_t n = 0, cap = 64;
    struct sl_metrics_series **all = sl_malloc(cap * sizeof(*all));
    for (int i = 0; i < SL_METRICS_BUCKETS; i++)
        for (struct sl_metrics_series *s = buckets[i]; s; s = s->next) {
            if (n == cap) all = sl_realloc(all, (cap *= 2) * sizeof(*all));
            all[n++] = s;
        }
    qsort(all, n, sizeof(*all), cmp);
    for (size_t i = 0; i < n; i++) {
        static const char *const types[] = {"counter", "gauge", "histogram"};
        if (i == 0 || strcmp(all[i]->name, all[i - 1]->name))
            sl_buf_printf(out, "# TYPE %s %s\n", all[i]->name, types[all[i]->kind]);
        if (all[i]->kind == HISTOGRAM)
            render_histogram(out, all[i]);
        else if (*all[i]->labels)
            sl_buf_printf(out, "%s{%s} %.17g\n", all[i]->name, all[i]->labels, all[i]->value);
        else
            sl_buf_printf(out, "%s %.17g\n", all[i]->name, all[i]->value);
    }
    free(all);
}

void sl_metrics_reset(void) {
    for (int i = 0; i < SL_METRICS_BUCKETS; i++) {
        struct sl_metrics_series *s = buckets[i];
        while (s) {
            struct sl_metrics_series *next = s->next;
            if (s->hist) {
                free(s->hist->bounds);
                free(s->hist->counts);
                free(s->hist);
            }
            free(s->name);
            free(s->labels);
            free(s);
            s = next;
        }
        buckets[i] = NULL;
    }
}
