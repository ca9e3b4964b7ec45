/* metrics.c -- counters and gauges (see metrics.h).
 *
 * A small open hash table of series; a series is never removed while the
 * process runs, so the table only grows with distinct label sets (steps,
 * reasons: a few dozen). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_METRICS_BUCKETS 256 /* Hash buckets; chains stay short for a few hundred series. */

struct sl_metrics_series {
    char *name;
    char *labels;        /* "" when none */
    double value;
    int gauge;           /* 1: gauge, 0: counter */
    struct sl_metrics_series *next;
};

static struct sl_metrics_series *buckets[SL_METRICS_BUCKETS];

static unsigned hash(const char *a, const char *b) {
    unsigned h = 2166136261u;
    for (; *a; a++) h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ '{') * 16777619u;
    for (; *b; b++) h = (h ^ (unsigned char)*b) * 16777619u;
    return h % SL_METRICS_BUCKETS;
}

static struct sl_metrics_series *find(const char *name, const char *labels, int create, int gauge) {
    if (!labels) labels = "";
    unsigned h = hash(name, labels);
    for (struct sl_metrics_series *s = buckets[h]; s; s = s->next)
        if (!strcmp(s->name, name) && !strcmp(s->labels, labels)) return s;
    if (!create) return NULL;
    struct sl_metrics_series *s = sl_calloc(1, sizeof(*s));
    s->name = sl_strdup(name);
    s->labels = sl_strdup(labels);
    s->gauge = gauge;
    s->next = buckets[h];
    buckets[h] = s;
    return s;
}

void sl_metrics_inc(const char *name, const char *labels, uint64_t n) {
    find(name, labels, 1, 0)->value += (double)n;
}

struct sl_metrics_series *sl_metrics_counter(const char *name, const char *labels) {
    return find(name, labels, 1, 0);
}

void sl_metrics_add(struct sl_metrics_series *s, uint64_t n) { s->value += (double)n; }

void sl_metrics_set(const char *name, const char *labels, double v) {
    find(name, labels, 1, 1)->value = v;
}

double sl_metrics_get(const char *name, const char *labels) {
    struct sl_metrics_series *s = find(name, labels, 0, 0);
    return s ? s->value : 0;
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
        if (i == 0 || strcmp(all[i]->name, all[i - 1]->name))
            sl_buf_printf(out, "# TYPE %s %s\n", all[i]->name,
                          all[i]->gauge ? "gauge" : "counter");
        if (*all[i]->labels)
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
            free(s->name);
            free(s->labels);
            free(s);
            s = next;
        }
        buckets[i] = NULL;
    }
}
