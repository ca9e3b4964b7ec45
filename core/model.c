/* model.c -- sequential co-visitation: training, files, scoring (see model.h).
 *
 * In memory a model is, per product, its training popularity and a row of
 * followers (product number, weight) sorted by product number, at most
 * max_neighbors long, plus out = the total weight of everything that ever
 * followed it (kept whole when a row is pruned, so the row stays a share of
 * it). by_pop lists the products by popularity for the fallback and for the
 * products no window item points to.
 *
 * The file is a text header, one "key values" line each, ended by an empty
 * line, then a little-endian body whose size and FNV-1a 64 the header gives:
 *
 *   sluice-model 1
 *   catalog fnv1a64:<16 hex> <products>
 *   params lag=10 lag_decay=0.5 history=10 history_decay=0.5 alpha=1 max_neighbors=256
 *   data lines=<n> sequences=<n> products=<n> skipped=<n> order=file|time source=fnv1a64:<hex> observed=<n>
 *   body <bytes> fnv1a64:<16 hex>
 *
 *   body: u32 products; per product: u16 len + handle, u16 len + GID,
 *         f64 popularity, f64 out, u32 followers, followers x (u32 product,
 *         f32 weight) in increasing product order; then f64 total popularity. */
#define _GNU_SOURCE
#include "model.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct edge {
    uint32_t item;  /* the follower */
    float w;        /* its weight */
};

struct row {
    struct edge *e;   /* followers by increasing product number */
    uint32_t n, cap;  /* followers, slots */
    double out;       /* total weight of all followers ever counted */
};

struct sl_model {
    struct sl_catalog *cat;     /* owned copy */
    struct sl_model_params p;
    size_t nitems;              /* products in cat */
    double *pop;                /* per product: lines (training + observed) */
    double pop_total;           /* sum of pop */
    double *share;              /* per product: pop / pop_total, while share_ok */
    bool share_ok;              /* false once sl_model_observe changed pop */
    struct row *rows;           /* per product */
    uint32_t *by_pop;           /* products, most popular first, then by number */
    uint32_t *pop_pos;          /* position of each product in by_pop */
    /* The data summary of the file header. */
    size_t lines, sequences, products, skipped, observed;
    bool by_time;
    uint64_t source;
};

/* ==================== Parameters ==================== */

void sl_model_params_default(struct sl_model_params *p) {
    p->lag = 10;
    p->lag_decay = 0.5;
    p->history = 10;
    p->history_decay = 0.5;
    p->alpha = 1;
    p->max_neighbors = 256;
}

int sl_model_params_check(const struct sl_model_params *p, char *err, size_t errlen) {
    if (p->lag < 1 || p->lag > 1000) sl_errf(err, errlen, "lag: expected 1..1000, got %u", p->lag);
    else if (!(p->lag_decay > 0 && p->lag_decay <= 1))
        sl_errf(err, errlen, "lag_decay: expected a number in (0, 1], got %g", p->lag_decay);
    else if (p->history < 1 || p->history > 1000)
        sl_errf(err, errlen, "history: expected 1..1000, got %u", p->history);
    else if (!(p->history_decay > 0 && p->history_decay <= 1))
        sl_errf(err, errlen, "history_decay: expected a number in (0, 1], got %g",
                p->history_decay);
    else if (!(p->alpha >= 0 && isfinite(p->alpha)))
        sl_errf(err, errlen, "alpha: expected a finite number >= 0, got %g", p->alpha);
    else if (p->max_neighbors < 1 || p->max_neighbors > 1000000)
        sl_errf(err, errlen, "max_neighbors: expected 1..1000000, got %u", p->max_neighbors);
    else return SL_OK;
    return SL_ERR;
}

int sl_model_params_set(struct sl_model_params *p, const char *name, const char *value,
                        char *err, size_t errlen) {
    char *end;
    errno = 0;
    if (!strcmp(name, "lag_decay") || !strcmp(name, "history_decay") || !strcmp(name, "alpha")) {
        double v = strtod(value, &end);
        if (end == value || *end || errno) goto bad;
        if (!strcmp(name, "lag_decay")) p->lag_decay = v;
        else if (!strcmp(name, "history_decay")) p->history_decay = v;
        else p->alpha = v;
        return SL_OK;
    }
    if (!strcmp(name, "lag") || !strcmp(name, "history") || !strcmp(name, "max_neighbors")) {
        unsigned long v = strtoul(value, &end, 10);
        if (end == value || *end || errno || v > UINT32_MAX || *value == '-') goto bad;
        if (!strcmp(name, "lag")) p->lag = (uint32_t)v;
        else if (!strcmp(name, "history")) p->history = (uint32_t)v;
        else p->max_neighbors = (uint32_t)v;
        return SL_OK;
    }
    sl_errf(err, errlen, "unknown parameter \"%s\" (lag, lag_decay, history, history_decay, "
            "alpha, max_neighbors)", name);
    return SL_ERR;
bad:
    sl_errf(err, errlen, "%s: not a number: \"%s\"", name, value);
    return SL_ERR;
}

/* Shortest text of x that reads back as x ("0.5", not "0.50000000000000000"). */
static void fmt_double(char *out, size_t n, double x) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, x);
        if (strtod(out, NULL) == x) return;
    }
}

static void params_text(const struct sl_model_params *p, struct sl_buf *out, bool json) {
    char ld[32], hd[32], al[32];
    fmt_double(ld, sizeof(ld), p->lag_decay);
    fmt_double(hd, sizeof(hd), p->history_decay);
    fmt_double(al, sizeof(al), p->alpha);
    sl_buf_printf(out, json ? "{\"lag\":%u,\"lag_decay\":%s,\"history\":%u,\"history_decay\":%s,"
                              "\"alpha\":%s,\"max_neighbors\":%u}"
                            : "lag=%u lag_decay=%s history=%u history_decay=%s alpha=%s "
                              "max_neighbors=%u",
                  p->lag, ld, p->history, hd, al, p->max_neighbors);
}

/* ==================== Interaction data ==================== */

static void data_push(struct sl_model_data *d, uint32_t item, int64_t ts, bool new_seq) {
    if (new_seq) {
        if (d->nseq + 2 > d->seqcap) {
            d->seqcap = d->seqcap ? d->seqcap * 2 : 256;
            d->starts = sl_realloc(d->starts, d->seqcap * sizeof(*d->starts));
        }
        d->starts[d->nseq++] = d->n;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 4096;
        d->items = sl_realloc(d->items, d->cap * sizeof(*d->items));
        d->ts = sl_realloc(d->ts, d->cap * sizeof(*d->ts));
    }
    d->items[d->n] = item;
    d->ts[d->n] = ts;
    d->n++;
    d->starts[d->nseq] = d->n;
}

void sl_model_data_free(struct sl_model_data *d) {
    free(d->items);
    free(d->ts);
    free(d->starts);
    memset(d, 0, sizeof(*d));
}

int sl_model_data_parse(struct sl_model_data *d, const struct sl_catalog *cat,
                        const char *text, size_t len, const char *name, char *err,
                        size_t errlen) {
    const char *p = text, *end = text + len, *prev_user = NULL;
    size_t prev_ulen = 0, lineno = 0;
    bool pending = true; /* the next kept line opens a sequence */

    memset(d, 0, sizeof(*d));
    d->source = sl_catalog_fnv(SL_CATALOG_FNV_INIT, text, len);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        const char *f[5];
        size_t fl[5], nf = 0;
        lineno++;
        if (le > p && le[-1] == '\r') le--;
        if (le == p) {
            p = nl ? nl + 1 : end;
            continue;
        }
        for (const char *s = p; nf < 5;) {
            const char *tab = memchr(s, '\t', (size_t)(le - s));
            f[nf] = s;
            fl[nf++] = (size_t)((tab ? tab : le) - s);
            if (!tab) break;
            s = tab + 1;
        }
        if (nf < 4 || !fl[1] || !fl[2]) {
            sl_errf(err, errlen, "%s:%zu: expected label<TAB>user<TAB>handle<TAB>timestamp"
                    "<TAB>category", name, lineno);
            goto fail;
        }
        if (fl[0] != 1 || (f[0][0] != '0' && f[0][0] != '1')) {
            sl_errf(err, errlen, "%s:%zu: label: expected 0 or 1, got \"%.*s\"", name, lineno,
                    (int)(fl[0] > 20 ? 20 : fl[0]), f[0]);
            goto fail;
        }
        char num[32], *e;
        if (fl[3] == 0 || fl[3] >= sizeof(num)) goto bad_ts;
        memcpy(num, f[3], fl[3]);
        num[fl[3]] = '\0';
        errno = 0;
        long long ts = strtoll(num, &e, 10);
        if (*e || errno) goto bad_ts;

        if (!prev_user || prev_ulen != fl[1] || memcmp(prev_user, f[1], fl[1])) pending = true;
        prev_user = f[1];
        prev_ulen = fl[1];
        uint32_t item = sl_catalog_find(cat, f[2], fl[2]);
        if (f[0][0] != '1' || item == SL_CATALOG_NONE) d->skipped++;
        else {
            data_push(d, item, ts, pending);
            pending = false;
        }
        p = nl ? nl + 1 : end;
        continue;
    bad_ts:
        sl_errf(err, errlen, "%s:%zu: timestamp: expected an integer, got \"%.*s\"", name,
                lineno, (int)(fl[3] > 20 ? 20 : fl[3]), f[3]);
        goto fail;
    }
    if (!d->n) {
        sl_errf(err, errlen, "%s: no line has label 1 and a handle of the catalog "
                "(%zu lines skipped)", name, d->skipped);
        goto fail;
    }
    return SL_OK;
fail:
    sl_model_data_free(d);
    return SL_ERR;
}

struct tsidx {
    int64_t ts;   /* timestamp */
    size_t pos;   /* position in the sequence: makes the sort stable */
    uint32_t item;
};

static int tsidx_cmp(const void *a, const void *b) {
    const struct tsidx *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

void sl_model_data_order_by_time(struct sl_model_data *d) {
    struct tsidx *t = NULL;
    size_t cap = 0;
    for (size_t s = 0; s < d->nseq; s++) {
        size_t a = d->starts[s], n = d->starts[s + 1] - a;
        if (n > cap) t = sl_realloc(t, (cap = n) * sizeof(*t));
        for (size_t i = 0; i < n; i++) t[i] = (struct tsidx){d->ts[a + i], i, d->items[a + i]};
        qsort(t, n, sizeof(*t), tsidx_cmp);
        for (size_t i = 0; i < n; i++) {
            d->ts[a + i] = t[i].ts;
            d->items[a + i] = t[i].item;
        }
    }
    free(t);
    d->by_time = true;
}

/* ==================== Building ==================== */

/* Popularity order: more lines first, then the lower product number. */
static bool pop_before(const struct sl_model *m, uint32_t a, uint32_t b) {
    double pa = m->pop[a], pb = m->pop[b];
    return pa > pb || (pa == pb && a < b);
}

static int pop_cmp(const void *a, const void *b, void *arg) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return pop_before(arg, x, y) ? -1 : pop_before(arg, y, x) ? 1 : 0;
}

/* by_pop and pop_pos, and the shares of popularity scoring reads, once pop
 * and pop_total are final. */
static void order_by_pop(struct sl_model *m) {
    for (uint32_t i = 0; i < m->nitems; i++)
        m->share[i] = m->pop_total > 0 ? m->pop[i] / m->pop_total : 0;
    m->share_ok = true;
    for (uint32_t i = 0; i < m->nitems; i++) m->by_pop[i] = i;
    qsort_r(m->by_pop, m->nitems, sizeof(*m->by_pop), pop_cmp, m);
    for (uint32_t i = 0; i < m->nitems; i++) m->pop_pos[m->by_pop[i]] = i;
}

/* An empty model of n products: a copy of cat's, or none yet when cat is
 * NULL (the caller adds them). */
static struct sl_model *model_new(const struct sl_catalog *cat, size_t n,
                                  const struct sl_model_params *p) {
    struct sl_model *m = sl_calloc(1, sizeof(*m));
    m->cat = sl_catalog_create();
    m->nitems = n;
    for (uint32_t i = 0; cat && i < n; i++) {
        const char *h = sl_catalog_handle(cat, i), *g = sl_catalog_gid(cat, i);
        int rc = sl_catalog_add(m->cat, h, strlen(h), g, strlen(g), NULL, 0);
        assert(rc == SL_OK); /* valid in one catalog, valid in its copy */
        (void)rc;
    }
    m->p = *p;
    m->pop = sl_calloc(n ? n : 1, sizeof(*m->pop));
    m->rows = sl_calloc(n ? n : 1, sizeof(*m->rows));
    m->by_pop = sl_calloc(n ? n : 1, sizeof(*m->by_pop));
    m->pop_pos = sl_calloc(n ? n : 1, sizeof(*m->pop_pos));
    m->share = sl_calloc(n ? n : 1, sizeof(*m->share));
    return m;
}

void sl_model_destroy(struct sl_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nitems; i++) free(m->rows[i].e);
    free(m->rows);
    free(m->pop);
    free(m->share);
    free(m->by_pop);
    free(m->pop_pos);
    sl_catalog_destroy(m->cat);
    free(m);
}

/* Pair weights while training: open addressing, key (a << 32 | b) + 1. */
struct pairs {
    uint64_t *key;   /* 0: empty */
    double *w;
    size_t mask, n;
};

static size_t pair_slot(const struct pairs *t, uint64_t key) {
    size_t i = (size_t)((key * UINT64_C(0x9e3779b97f4a7c15)) >> 20) & t->mask;
    while (t->key[i] && t->key[i] != key) i = (i + 1) & t->mask;
    return i;
}

static void pairs_add(struct pairs *t, uint32_t a, uint32_t b, double w) {
    uint64_t key = (((uint64_t)a << 32) | b) + 1;
    size_t i;
    if ((t->n + 1) * 2 > t->mask + 1) {
        struct pairs g = {sl_calloc((t->mask + 1) * 2, sizeof(uint64_t)),
                          sl_calloc((t->mask + 1) * 2, sizeof(double)), (t->mask + 1) * 2 - 1,
                          t->n};
        for (size_t j = 0; j <= t->mask; j++) {
            if (!t->key[j]) continue;
            i = pair_slot(&g, t->key[j]);
            g.key[i] = t->key[j];
            g.w[i] = t->w[j];
        }
        free(t->key);
        free(t->w);
        *t = g;
    }
    i = pair_slot(t, key);
    if (!t->key[i]) {
        t->key[i] = key;
        t->n++;
    }
    t->w[i] += w;
}

static int edge_by_item(const void *a, const void *b) {
    const struct edge *x = a, *y = b;
    return x->item < y->item ? -1 : x->item > y->item;
}

static int edge_by_weight(const void *a, const void *b) {
    const struct edge *x = a, *y = b;
    if (x->w != y->w) return x->w > y->w ? -1 : 1;
    return x->item < y->item ? -1 : x->item > y->item;
}

/* Keeps a row's max strongest followers (ties: lower product number). */
static void row_prune(struct row *r, uint32_t max) {
    if (r->n <= max) return;
    qsort(r->e, r->n, sizeof(*r->e), edge_by_weight);
    r->n = max;
    qsort(r->e, r->n, sizeof(*r->e), edge_by_item);
}

struct sl_model *sl_model_train(const struct sl_catalog *cat, const struct sl_model_data *d,
                                size_t holdout, const struct sl_model_params *p, char *err,
                                size_t errlen) {
    struct pairs t = {sl_calloc(1024, sizeof(uint64_t)), sl_calloc(1024, sizeof(double)), 1023, 0};
    struct sl_model *m = NULL, *ret = NULL;
    double decay[1001];

    if (sl_model_params_check(p, err, errlen)) goto done;
    m = model_new(cat, sl_catalog_count(cat), p);
    decay[1] = 1;
    for (uint32_t k = 2; k <= p->lag; k++) decay[k] = decay[k - 1] * p->lag_decay;
    for (size_t s = 0; s < d->nseq; s++) {
        size_t a = d->starts[s], n = d->starts[s + 1] - a;
        const uint32_t *seq = d->items + a;
        if (n <= holdout) continue;
        n -= holdout;
        m->sequences++;
        for (size_t i = 0; i < n; i++) {
            assert(seq[i] < m->nitems);
            m->pop[seq[i]] += 1;
            for (size_t k = 1; k <= p->lag && i + k < n; k++) {
                pairs_add(&t, seq[i], seq[i + k], decay[k]);
                m->rows[seq[i]].out += decay[k];
            }
        }
        m->lines += n;
    }
    if (!m->lines) {
        sl_errf(err, errlen, "no interaction left to learn from (%zu sequences, %zu held out "
                "of each)", d->nseq, holdout);
        goto done;
    }
    for (size_t j = 0; j <= t.mask; j++) {
        if (!t.key[j]) continue;
        struct row *r = &m->rows[(t.key[j] - 1) >> 32];
        if (r->n == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 8;
            r->e = sl_realloc(r->e, r->cap * sizeof(*r->e));
        }
        r->e[r->n++] = (struct edge){(uint32_t)(t.key[j] - 1), (float)t.w[j]};
    }
    for (size_t i = 0; i < m->nitems; i++) {
        struct row *r = &m->rows[i];
        if (r->n) qsort(r->e, r->n, sizeof(*r->e), edge_by_item);
        row_prune(r, p->max_neighbors);
        if (r->cap > r->n && r->n) {
            r->e = sl_realloc(r->e, r->n * sizeof(*r->e));
            r->cap = r->n;
        }
        m->pop_total += m->pop[i];
        m->products += m->pop[i] > 0;
    }
    order_by_pop(m);
    m->skipped = d->skipped;
    m->by_time = d->by_time;
    m->source = d->source;
    ret = m;
    m = NULL; /* Returned to the caller. */
done:
    sl_model_destroy(m);
    free(t.key);
    free(t.w);
    return ret;
}

int sl_model_train_file(const char *tsv, const char *catalog, const char *out, bool by_time,
                        const struct sl_model_params *p, char *err, size_t errlen) {
    struct sl_catalog *cat = sl_catalog_load(catalog, err, errlen);
    struct sl_model_data d = {0};
    struct sl_buf text = {0};
    struct sl_model *m = NULL;
    int ret = SL_ERR;
    if (!cat || sl_read_file(tsv, &text, SL_MODEL_MAX_TSV, err, errlen) ||
        sl_model_data_parse(&d, cat, text.data ? text.data : "", text.len, tsv, err, errlen))
        goto done;
    if (by_time) sl_model_data_order_by_time(&d);
    int64_t t0 = sl_mono_ms();
    if (!(m = sl_model_train(cat, &d, 0, p, err, errlen))) goto done;
    int64_t ms = sl_mono_ms() - t0;
    if (sl_model_save(m, out, err, errlen)) goto done;
    sl_log(SL_LOG_INFO, "model", "%s: %zu lines of %zu sequences (%zu skipped), %zu of %zu "
           "products seen, trained in %" PRId64 " ms; %zu bytes in memory", out, m->lines,
           m->sequences, m->skipped, m->products, m->nitems, ms, sl_model_bytes(m));
    ret = SL_OK;
done:
    sl_model_destroy(m);
    sl_model_data_free(&d);
    sl_buf_free(&text);
    sl_catalog_destroy(cat);
    return ret;
}

/* ==================== Files ==================== */

static void put_u16(struct sl_buf *b, uint16_t v) {
    unsigned char c[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    sl_buf_add(b, c, 2);
}

static void put_u32(struct sl_buf *b, uint32_t v) {
    unsigned char c[4];
    for (int i = 0; i < 4; i++) c[i] = (unsigned char)(v >> (8 * i));
    sl_buf_add(b, c, 4);
}

static void put_u64(struct sl_buf *b, uint64_t v) {
    unsigned char c[8];
    for (int i = 0; i < 8; i++) c[i] = (unsigned char)(v >> (8 * i));
    sl_buf_add(b, c, 8);
}

static void put_f32(struct sl_buf *b, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(b, v);
}

static void put_f64(struct sl_buf *b, double f) {
    uint64_t v;
    memcpy(&v, &f, 8);
    put_u64(b, v);
}

static void put_str(struct sl_buf *b, const char *s) {
    size_t n = strlen(s);
    put_u16(b, (uint16_t)n);
    sl_buf_add(b, s, n);
}

void sl_model_encode(const struct sl_model *m, struct sl_buf *out) {
    struct sl_buf body = {0};
    put_u32(&body, (uint32_t)m->nitems);
    for (uint32_t i = 0; i < m->nitems; i++) {
        const struct row *r = &m->rows[i];
        put_str(&body, sl_catalog_handle(m->cat, i));
        put_str(&body, sl_catalog_gid(m->cat, i));
        put_f64(&body, m->pop[i]);
        put_f64(&body, r->out);
        put_u32(&body, r->n);
        for (uint32_t k = 0; k < r->n; k++) {
            put_u32(&body, r->e[k].item);
            put_f32(&body, r->e[k].w);
        }
    }
    put_f64(&body, m->pop_total);

    sl_buf_printf(out, "%s %d\ncatalog fnv1a64:%016" PRIx64 " %zu\nparams ", SL_MODEL_MAGIC,
                  SL_MODEL_FORMAT, sl_catalog_hash(m->cat), m->nitems);
    params_text(&m->p, out, false);
    sl_buf_printf(out, "\ndata lines=%zu sequences=%zu products=%zu skipped=%zu order=%s "
                  "source=fnv1a64:%016" PRIx64 " observed=%zu\nbody %zu fnv1a64:%016" PRIx64
                  "\n\n", m->lines, m->sequences, m->products, m->skipped,
                  m->by_time ? "time" : "file", m->source, m->observed, body.len,
                  sl_catalog_fnv(SL_CATALOG_FNV_INIT, body.data, body.len));
    sl_buf_add(out, body.data, body.len);
    sl_buf_free(&body);
}

int sl_model_save(const struct sl_model *m, const char *path, char *err, size_t errlen) {
    struct sl_buf b = {0}, tmp = {0};
    int ret = SL_ERR;
    FILE *f = NULL;

    sl_model_encode(m, &b);
    sl_buf_printf(&tmp, "%s.tmp", path);
    f = fopen(tmp.data, "wb");
    if (!f) {
        sl_errf(err, errlen, "%s: %s", tmp.data, strerror(errno));
        goto done;
    }
    if (fwrite(b.data, 1, b.len, f) != b.len || fflush(f) || fsync(fileno(f))) {
        sl_errf(err, errlen, "%s: %s", tmp.data, strerror(errno));
        goto done;
    }
    if (fclose(f)) {
        f = NULL;
        sl_errf(err, errlen, "%s: %s", tmp.data, strerror(errno));
        goto done;
    }
    f = NULL;
    if (rename(tmp.data, path)) {
        sl_errf(err, errlen, "%s: %s", path, strerror(errno));
        goto done;
    }
    ret = SL_OK;
done:
    if (f) fclose(f);
    if (ret && tmp.data) remove(tmp.data);
    sl_buf_free(&b);
    sl_buf_free(&tmp);
    return ret;
}

/* A bounds-checked reader of the body: a short read sets bad and gives 0. */
struct rd {
    const unsigned char *p;
    size_t n, i;
    bool bad;
};

static const unsigned char *rd_take(struct rd *r, size_t k) {
    if (r->bad || r->n - r->i < k) {
        r->bad = true;
        return NULL;
    }
    r->i += k;
    return r->p + r->i - k;
}

static uint64_t rd_uint(struct rd *r, int bytes) {
    const unsigned char *c = rd_take(r, (size_t)bytes);
    uint64_t v = 0;
    for (int i = 0; c && i < bytes; i++) v |= (uint64_t)c[i] << (8 * i);
    return v;
}

static double rd_f64(struct rd *r) {
    uint64_t v = rd_uint(r, 8);
    double f;
    memcpy(&f, &v, 8);
    return f;
}

static float rd_f32(struct rd *r) {
    uint32_t v = (uint32_t)rd_uint(r, 4);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* Header values read by decode. */
struct header {
    int version;
    uint64_t catalog, body_sum, source;
    size_t products, body_len, lines, sequences, used, skipped, observed;
    bool by_time, have_catalog, have_params, have_data, have_body;
    struct sl_model_params p;
};

/* Parses the "key=value ..." words of a data line. */
static int header_data(struct header *h, char *s) {
    for (char *w = strtok(s, " "); w; w = strtok(NULL, " ")) {
        char *eq = strchr(w, '=');
        if (!eq) return SL_ERR;
        *eq++ = '\0';
        if (!strcmp(w, "order")) {
            if (strcmp(eq, "file") && strcmp(eq, "time")) return SL_ERR;
            h->by_time = !strcmp(eq, "time");
        } else if (!strcmp(w, "source")) {
            if (sscanf(eq, "fnv1a64:%16" SCNx64, &h->source) != 1) return SL_ERR;
        } else {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(eq, &end, 10);
            if (end == eq || *end || errno) return SL_ERR;
            if (!strcmp(w, "lines")) h->lines = (size_t)v;
            else if (!strcmp(w, "sequences")) h->sequences = (size_t)v;
            else if (!strcmp(w, "products")) h->used = (size_t)v;
            else if (!strcmp(w, "skipped")) h->skipped = (size_t)v;
            else if (!strcmp(w, "observed")) h->observed = (size_t)v;
        }
    }
    return SL_OK;
}

/* Reads the header lines of buf[0..hlen) (hlen excludes the empty line). */
static int header_parse(struct header *h, const char *buf, size_t hlen, const char *name,
                        char *err, size_t errlen) {
    char line[4096];
    size_t lineno = 1;
    sl_model_params_default(&h->p);
    for (const char *p = strchr(buf, '\n') + 1; p < buf + hlen; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(buf + hlen - p));
        size_t n = (size_t)((nl ? nl : buf + hlen) - p);
        char perr[SL_ERRLEN];
        if (n >= sizeof(line)) goto bad;
        memcpy(line, p, n);
        line[n] = '\0';
        p += n + 1;
        char *sp = strchr(line, ' ');
        if (!sp) goto bad;
        *sp++ = '\0';
        if (!strcmp(line, "catalog")) {
            if (sscanf(sp, "fnv1a64:%16" SCNx64 " %zu", &h->catalog, &h->products) != 2) goto bad;
            h->have_catalog = true;
        } else if (!strcmp(line, "params")) {
            for (char *w = strtok(sp, " "); w; w = strtok(NULL, " ")) {
                char *eq = strchr(w, '=');
                if (!eq) goto bad;
                *eq++ = '\0';
                if (sl_model_params_set(&h->p, w, eq, perr, sizeof(perr))) {
                    sl_errf(err, errlen, "%s: header line %zu: %s", name, lineno, perr);
                    return SL_ERR;
                }
            }
            h->have_params = true;
        } else if (!strcmp(line, "data")) {
            if (header_data(h, sp)) goto bad;
            h->have_data = true;
        } else if (!strcmp(line, "body")) {
            if (sscanf(sp, "%zu fnv1a64:%16" SCNx64, &h->body_len, &h->body_sum) != 2) goto bad;
            h->have_body = true;
        } /* other keys: later additions within this format version, ignored */
    }
    if (!h->have_catalog || !h->have_params || !h->have_data || !h->have_body) {
        sl_errf(err, errlen, "%s: header lacks its %s line", name,
                !h->have_catalog ? "catalog" : !h->have_params ? "params"
                : !h->have_data ? "data" : "body");
        return SL_ERR;
    }
    return SL_OK;
bad:
    sl_errf(err, errlen, "%s: header line %zu is malformed", name, lineno);
    return SL_ERR;
}

/* Reads the body into m; SL_ERR with err on anything out of place. */
static int body_parse(struct sl_model *m, struct rd *r, const char *name, char *err,
                      size_t errlen) {
    for (uint32_t i = 0; i < m->nitems; i++) {
        size_t hl = (size_t)rd_uint(r, 2);
        const unsigned char *h = rd_take(r, hl);
        size_t gl = (size_t)rd_uint(r, 2);
        const unsigned char *g = rd_take(r, gl);
        char aerr[SL_ERRLEN];
        if (r->bad) goto short_body;
        if (sl_catalog_add(m->cat, (const char *)h, hl, (const char *)g, gl, aerr, sizeof(aerr))) {
            sl_errf(err, errlen, "%s: product %u: %s", name, i, aerr);
            return SL_ERR;
        }
        struct row *row = &m->rows[i];
        m->pop[i] = rd_f64(r);
        row->out = rd_f64(r);
        uint32_t n = (uint32_t)rd_uint(r, 4);
        if (r->bad) goto short_body;
        if (!(m->pop[i] >= 0 && isfinite(m->pop[i]) && row->out >= 0 && isfinite(row->out)) ||
            n > m->nitems || n > m->p.max_neighbors || (size_t)n * 8 > r->n - r->i) {
            sl_errf(err, errlen, "%s: product %u (%s): bad counts", name, i,
                    sl_catalog_handle(m->cat, i));
            return SL_ERR;
        }
        row->e = sl_malloc((n ? n : 1) * sizeof(*row->e));
        row->n = row->cap = n;
        for (uint32_t k = 0; k < n; k++) {
            row->e[k].item = (uint32_t)rd_uint(r, 4);
            row->e[k].w = rd_f32(r);
            if (row->e[k].item >= m->nitems || (k && row->e[k].item <= row->e[k - 1].item) ||
                !(row->e[k].w >= 0 && isfinite(row->e[k].w))) {
                sl_errf(err, errlen, "%s: product %u (%s): bad follower %u", name, i,
                        sl_catalog_handle(m->cat, i), k);
                return SL_ERR;
            }
        }
    }
    m->pop_total = rd_f64(r);
    if (r->bad) goto short_body;
    if (r->i != r->n) {
        sl_errf(err, errlen, "%s: %zu bytes after the body's end", name, r->n - r->i);
        return SL_ERR;
    }
    if (!(m->pop_total > 0 && isfinite(m->pop_total))) {
        sl_errf(err, errlen, "%s: total popularity is not a positive number", name);
        return SL_ERR;
    }
    return SL_OK;
short_body:
    sl_errf(err, errlen, "%s: the body ends too early", name);
    return SL_ERR;
}

struct sl_model *sl_model_decode(const char *buf, size_t len, const char *name, char *err,
                                 size_t errlen) {
    struct header h = {0};
    struct sl_model *m = NULL, *ret = NULL;
    size_t magic = strlen(SL_MODEL_MAGIC);
    const char *end;
    char *vend;

    if (len < magic + 2 || memcmp(buf, SL_MODEL_MAGIC " ", magic + 1)) {
        sl_errf(err, errlen, "%s: not a sluice model file (it does not start with \"%s\")",
                name, SL_MODEL_MAGIC);
        goto done;
    }
    errno = 0;
    long v = strtol(buf + magic + 1, &vend, 10);
    if (vend == buf + magic + 1 || vend >= buf + len || *vend != '\n' || errno) {
        sl_errf(err, errlen, "%s: not a sluice model file (no format version)", name);
        goto done;
    }
    if (v != SL_MODEL_FORMAT) {
        sl_errf(err, errlen, "%s: model file format version %ld; this sluice reads version %d: "
                "train the model again with this sluice (sluice model train)", name, v,
                SL_MODEL_FORMAT);
        goto done;
    }
    end = memmem(buf, len < 65536 ? len : 65536, "\n\n", 2);
    if (!end) {
        sl_errf(err, errlen, "%s: truncated header (no empty line ends it)", name);
        goto done;
    }
    if (memchr(buf, '\0', (size_t)(end - buf))) {
        sl_errf(err, errlen, "%s: header holds a NUL byte", name);
        goto done;
    }
    /* The header lines, NUL-terminated for sscanf. */
    {
        char *text = sl_strndup(buf, (size_t)(end - buf));
        int rc = header_parse(&h, text, (size_t)(end - buf), name, err, errlen);
        free(text);
        if (rc) goto done;
    }
    if (sl_model_params_check(&h.p, err, errlen)) {
        char perr[SL_ERRLEN];
        snprintf(perr, sizeof(perr), "%s", err);
        sl_errf(err, errlen, "%s: params: %s", name, perr);
        goto done;
    }
    const char *body = end + 2;
    size_t have = len - (size_t)(body - buf);
    if (have < h.body_len) {
        sl_errf(err, errlen, "%s: truncated: the body has %zu of its %zu bytes", name, have,
                h.body_len);
        goto done;
    }
    if (have > h.body_len) {
        sl_errf(err, errlen, "%s: %zu bytes after the body's %zu", name, have - h.body_len,
                h.body_len);
        goto done;
    }
    if (sl_catalog_fnv(SL_CATALOG_FNV_INIT, body, have) != h.body_sum) {
        sl_errf(err, errlen, "%s: corrupted: the body's checksum is not the header's", name);
        goto done;
    }
    struct rd r = {(const unsigned char *)body, have, 0, false};
    uint32_t n = (uint32_t)rd_uint(&r, 4);
    if (r.bad || n != h.products || n > SL_CATALOG_MAX_PRODUCTS || (size_t)n * 28 > have) {
        sl_errf(err, errlen, "%s: the body's product count is not the header's %zu", name,
                h.products);
        goto done;
    }
    m = model_new(NULL, n, &h.p);
    if (body_parse(m, &r, name, err, errlen)) goto done;
    if (sl_catalog_hash(m->cat) != h.catalog) {
        sl_errf(err, errlen, "%s: the products in the body do not have the header's catalog "
                "hash", name);
        goto done;
    }
    for (size_t i = 0; i < m->nitems; i++) m->products += m->pop[i] > 0;
    order_by_pop(m);
    m->lines = h.lines;
    m->sequences = h.sequences;
    m->skipped = h.skipped;
    m->observed = h.observed;
    m->by_time = h.by_time;
    m->source = h.source;
    ret = m;
    m = NULL; /* Returned to the caller. */
done:
    sl_model_destroy(m);
    return ret;
}

struct sl_model *sl_model_load(const char *path, char *err, size_t errlen) {
    struct sl_buf b = {0};
    struct sl_model *m = NULL;
    if (!sl_read_file(path, &b, SL_MODEL_MAX_FILE, err, errlen))
        m = sl_model_decode(b.data ? b.data : "", b.len, path, err, errlen);
    sl_buf_free(&b);
    return m;
}

int sl_model_check_catalog(const struct sl_model *m, const struct sl_catalog *cat,
                           const char *catalog_name, char *err, size_t errlen) {
    uint64_t a = sl_catalog_hash(m->cat), b = sl_catalog_hash(cat);
    if (a == b) return SL_OK;
    sl_errf(err, errlen, "the model was trained for catalog fnv1a64:%016" PRIx64 " (%zu "
            "products), %s is fnv1a64:%016" PRIx64 " (%zu products): train the model again "
            "with this catalog (sluice model train)", a, m->nitems, catalog_name, b,
            sl_catalog_count(cat));
    return SL_ERR;
}

const struct sl_catalog *sl_model_catalog(const struct sl_model *m) { return m->cat; }
const struct sl_model_params *sl_model_params(const struct sl_model *m) { return &m->p; }

size_t sl_model_bytes(const struct sl_model *m) {
    size_t b = sizeof(*m) + sl_catalog_bytes(m->cat) +
               m->nitems * (sizeof(*m->pop) + sizeof(*m->share) + sizeof(*m->rows) +
                            2 * sizeof(uint32_t));
    for (size_t i = 0; i < m->nitems; i++) b += m->rows[i].cap * sizeof(struct edge);
    return b;
}

void sl_model_describe(const struct sl_model *m, struct sl_buf *out) {
    sl_buf_printf(out, "{\"format\":%d,\"catalog\":{\"hash\":\"fnv1a64:%016" PRIx64 "\","
                  "\"products\":%zu},\"params\":", SL_MODEL_FORMAT, sl_catalog_hash(m->cat),
                  m->nitems);
    params_text(&m->p, out, true);
    sl_buf_printf(out, ",\"data\":{\"lines\":%zu,\"sequences\":%zu,\"products\":%zu,"
                  "\"skipped\":%zu,\"order\":\"%s\",\"source\":\"fnv1a64:%016" PRIx64 "\","
                  "\"observed\":%zu}}", m->lines, m->sequences, m->products, m->skipped,
                  m->by_time ? "time" : "file", m->source, m->observed);
}

/* ==================== Scoring ==================== */

double sl_model_popularity(const struct sl_model *m, uint32_t i) {
    return i < m->nitems ? m->pop[i] : 0;
}

static double share(const struct sl_model *m, uint32_t c) {
    if (m->share_ok) return m->share[c];             /* the same quotient, made once */
    return m->pop_total > 0 ? m->pop[c] / m->pop_total : 0;
}

static float follower(const struct row *r, uint32_t c) {
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->e[mid].item < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < r->n && r->e[lo].item == c ? r->e[lo].w : 0;
}

/* The weights of the history: coef[k] for the k-th newest usable item of
 * hist (src[k] is it), k < *used; returns the popularity weight beta (1 when
 * nothing is usable: pure popularity). */
static double mix(const struct sl_model *m, const uint32_t *hist, size_t n, double *coef,
                  uint32_t *src, size_t *used) {
    double w = 1, sum = 0, beta = 0;
    size_t u = 0;
    for (size_t j = n; j-- > 0 && u < m->p.history;) {
        double denom = m->rows[hist[j]].out + m->p.alpha;
        if (!(denom > 0)) continue;   /* never followed by anything, no prior */
        coef[u] = w / denom;
        src[u++] = hist[j];
        sum += w;
        w *= m->p.history_decay;
    }
    for (size_t k = 0; k < u; k++) {
        coef[k] /= sum;
        beta += coef[k] * m->p.alpha;
    }
    *used = u;
    return u ? beta : 1;
}

void sl_model_score(const struct sl_model *m, const uint32_t *hist, size_t n,
                    const uint32_t *cands, size_t nc, double *scores) {
    double coef[1000];
    uint32_t src[1000];
    size_t used;
    double beta = mix(m, hist, n, coef, src, &used);
    for (size_t i = 0; i < nc; i++) {
        double s = beta * share(m, cands[i]);
        for (size_t k = 0; k < used; k++) s += coef[k] * follower(&m->rows[src[k]], cands[i]);
        scores[i] = s;
    }
}

void sl_model_result_free(struct sl_model_result *r) {
    free(r->acc);
    free(r->flag);
    free(r->list);
    free(r->window);
    memset(r, 0, sizeof(*r));
}

#define FLAG_TOUCHED 1  /* acc holds a share of some follower row */
#define FLAG_WINDOW 2   /* in the window: never recommended */

/* Inserts (c, s) into the best-first top list of out if it makes the cut:
 * a higher score first, then the more popular product (pop_pos keeps the
 * order of pop_before, also after sl_model_observe). */
static inline void offer(const struct sl_model *m, struct sl_model_result *out, size_t top_n,
                         uint32_t c, double s) {
    size_t i = out->n;
    if (i == top_n) {
        double ws = out->scores[i - 1];
        if (s < ws || (s == ws && m->pop_pos[c] > m->pop_pos[out->items[i - 1]])) return;
        i--;
    } else {
        out->n++;
    }
    for (; i > 0; i--) {
        double ps = out->scores[i - 1];
        uint32_t p = out->items[i - 1];
        if (ps > s || (ps == s && m->pop_pos[p] < m->pop_pos[c])) break;
        out->items[i] = p;
        out->scores[i] = ps;
    }
    out->items[i] = c;
    out->scores[i] = s;
}

/* Window handles -> product numbers in time order; returns how many. */
static size_t resolve(const struct sl_model *m, const char *const *items, const int64_t *ts,
                      size_t n, uint32_t *known) {
    size_t k = 0;
    bool sorted = true;
    for (size_t i = 1; ts && i < n; i++) sorted = sorted && ts[i - 1] <= ts[i];
    if (sorted) {
        for (size_t i = 0; i < n; i++) {
            uint32_t c = items[i] ? sl_catalog_find(m->cat, items[i], strlen(items[i]))
                                  : SL_CATALOG_NONE;
            if (c != SL_CATALOG_NONE) known[k++] = c;
        }
        return k;
    }
    struct tsidx *t = sl_malloc(n * sizeof(*t));
    for (size_t i = 0; i < n; i++) t[i] = (struct tsidx){ts[i], i, 0};
    qsort(t, n, sizeof(*t), tsidx_cmp);
    for (size_t i = 0; i < n; i++) {
        const char *h = items[t[i].pos];
        uint32_t c = h ? sl_catalog_find(m->cat, h, strlen(h)) : SL_CATALOG_NONE;
        if (c != SL_CATALOG_NONE) known[k++] = c;
    }
    free(t);
    return k;
}

static void scratch_reserve(const struct sl_model *m, struct sl_model_result *r, size_t list) {
    if (r->cap < m->nitems) {
        free(r->acc);
        free(r->flag);
        r->acc = sl_calloc(m->nitems, sizeof(*r->acc));
        r->flag = sl_calloc(m->nitems, sizeof(*r->flag));
        r->cap = m->nitems;
    }
    if (r->list_cap < list) {
        free(r->list);
        r->list = sl_malloc(list * sizeof(*r->list));
        r->list_cap = list;
    }
}

int sl_model_recommend(const struct sl_model *m, const char *const *items, const int64_t *ts,
                       size_t n, size_t top_n, struct sl_model_result *out) {
    double coef[1000];
    uint32_t src[1000];
    size_t used, nk, nlist = 0, reach = 0;

    out->n = out->known = 0;
    if (top_n < 1 || top_n > SL_MODEL_MAX_TOP) return SL_ERR;
    if (out->known_cap < n) {
        free(out->window);
        out->window = sl_malloc(n * sizeof(*out->window));
        out->known_cap = n;
    }
    uint32_t *known = out->window;
    nk = resolve(m, items, ts, n, known);
    out->known = nk;
    double beta = mix(m, known, nk, coef, src, &used);
    for (size_t k = 0; k < used; k++) reach += m->rows[src[k]].n;
    scratch_reserve(m, out, nk + reach + 1);

    unsigned char *flag = out->flag;
    double *acc = out->acc;
    uint32_t *list = out->list;
    /* Dense: the rows hold at least half as many followers as the catalog
     * has products (the seed's 238), so every product is a candidate and no
     * list is kept. Sparse: a list of the products touched (a large catalog,
     * where scanning it all would cost more). The answer is the same: the
     * best top_n by score, then popularity. */
    bool dense = m->nitems <= 2 * reach;
    for (size_t i = 0; i < nk; i++) {
        list[nlist] = known[i];                       /* kept when new (branch-free) */
        nlist += !flag[known[i]];
        flag[known[i]] |= FLAG_WINDOW;
    }
    for (size_t k = 0; k < used; k++) {
        const struct edge *e = m->rows[src[k]].e;
        uint32_t rn = m->rows[src[k]].n;
        double ck = coef[k];
        if (dense) {                                  /* every product is a candidate */
            for (uint32_t j = 0; j < rn; j++) acc[e[j].item] += ck * e[j].w;
            continue;
        }
        for (uint32_t j = 0; j < rn; j++) {
            uint32_t c = e[j].item;
            list[nlist] = c;
            nlist += !flag[c];
            flag[c] |= FLAG_TOUCHED;
            acc[c] += ck * e[j].w;
        }
    }
    /* Products some window item points to, then the most popular others.
     * Dense: every product but the window's, most popular first (so the top
     * list fills with good scores early and most later ones fall short of
     * its last; an untouched product's acc is 0). Once the list is full, a
     * candidate short of its last score is dropped before the call. */
    if (dense) {
        for (size_t i = 0; i < m->nitems; i++) {
            uint32_t c = m->by_pop[i];
            if (flag[c] & FLAG_WINDOW) continue;
            double s = beta * share(m, c) + acc[c];
            if (out->n == top_n && s < out->scores[top_n - 1]) continue;
            offer(m, out, top_n, c, s);
        }
    } else {
        for (size_t i = 0; i < nlist; i++) {
            uint32_t c = list[i];
            if (flag[c] != FLAG_TOUCHED) continue;
            double s = beta * share(m, c) + acc[c];
            if (out->n == top_n && s < out->scores[top_n - 1]) continue;
            offer(m, out, top_n, c, s);
        }
        for (size_t i = 0, taken = 0; i < m->nitems && taken < top_n; i++) {
            uint32_t c = m->by_pop[i];
            if (flag[c]) continue;
            offer(m, out, top_n, c, beta * share(m, c));
            taken++;
        }
    }
    if (dense) {
        memset(acc, 0, m->nitems * sizeof(*acc));
        memset(flag, 0, m->nitems * sizeof(*flag));
    } else {
        for (size_t i = 0; i < nlist; i++) {
            acc[list[i]] = 0;
            flag[list[i]] = 0;
        }
    }
    /* Scores to 12 decimals: no answer needs more, and such a number is
     * written to JSON without printf (json.c's short-decimal path), which
     * was a fifth of a pipeline's CPU with 20 scores per record. */
    for (size_t i = 0; i < out->n; i++) {
        out->gids[i] = sl_catalog_gid(m->cat, out->items[i]);
        out->scores[i] = nearbyint(out->scores[i] * 1e12) / 1e12;
    }
    return SL_OK;
}

/* ==================== Online learning ==================== */

/* Adds w to a's follower b, making room by dropping the weakest follower
 * when the row is full and b would not be the weakest. */
static void follow(struct row *r, uint32_t b, double w, uint32_t max) {
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->e[mid].item < b) lo = mid + 1;
        else hi = mid;
    }
    if (lo < r->n && r->e[lo].item == b) {
        r->e[lo].w += (float)w;
        return;
    }
    if (r->n >= max) {
        size_t weak = 0;
        for (size_t i = 1; i < r->n; i++)
            if (r->e[i].w < r->e[weak].w) weak = i;
        if (r->e[weak].w >= (float)w) return;
        memmove(r->e + weak, r->e + weak + 1, (r->n - weak - 1) * sizeof(*r->e));
        r->n--;
        if (weak < lo) lo--;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->e = sl_realloc(r->e, r->cap * sizeof(*r->e));
    }
    memmove(r->e + lo + 1, r->e + lo, (r->n - lo) * sizeof(*r->e));
    r->e[lo] = (struct edge){b, (float)w};
    r->n++;
}

void sl_model_observe(struct sl_model *m, const char *const *items, size_t n) {
    if (!n || !items[n - 1]) return;
    uint32_t b = sl_catalog_find(m->cat, items[n - 1], strlen(items[n - 1]));
    if (b == SL_CATALOG_NONE) return;
    double w = 1;
    size_t d = 0;
    for (size_t j = n - 1; j-- > 0 && d < m->p.lag;) {
        uint32_t a = items[j] ? sl_catalog_find(m->cat, items[j], strlen(items[j]))
                              : SL_CATALOG_NONE;
        if (a == SL_CATALOG_NONE) continue;
        m->rows[a].out += w;
        follow(&m->rows[a], b, w, m->p.max_neighbors);
        w *= m->p.lag_decay;
        d++;
    }
    if (m->pop[b] == 0) m->products++;
    m->pop[b] += 1;
    m->pop_total += 1;
    m->share_ok = false;                              /* every share changed */
    m->observed++;
    /* Move b up the popularity order past the products it now beats. */
    for (uint32_t pos = m->pop_pos[b]; pos > 0 && pop_before(m, b, m->by_pop[pos - 1]); pos--) {
        uint32_t o = m->by_pop[pos - 1];
        m->by_pop[pos] = o;
        m->pop_pos[o] = pos;
        m->by_pop[pos - 1] = b;
        m->pop_pos[b] = pos - 1;
    }
}
