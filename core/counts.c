/* counts.c -- `sluice counts` (see counts.h). */
#define _GNU_SOURCE
#include "counts.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

/* One step's row. */
struct row {
    char name[64];
    double position;         /* sluice_step_position: order in the pipeline */
    double in, out, errors, dead;
    double filtered;         /* all reasons */
    char reasons[SL_COUNTS_MAX_REASONS][64];
    double by_reason[SL_COUNTS_MAX_REASONS];
    size_t nreasons;
};

struct table {
    struct row rows[SL_COUNTS_MAX_STEPS];
    size_t n;
};

/* ==================== Parsing the text format ==================== */

/* Copies the value of label `name` in the label text {a="x",b="y"} into out.
 * Prometheus escapes (\" \\ \n) are undone. */
static bool label(const char *labels, const char *end, const char *name, char *out, size_t n) {
    size_t k = strlen(name);
    for (const char *p = labels; p && p < end; ) {
        if (!strncmp(p, name, k) && p[k] == '=' && p[k + 1] == '"') {
            size_t j = 0;
            for (p += k + 2; p < end && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < end) p++;
                if (j + 1 < n) out[j++] = *p == 'n' && p[-1] == '\\' ? '\n' : *p;
            }
            out[j] = '\0';
            return true;
        }
        /* to the next label: past this value's closing quote and the comma */
        p = strchr(p, '"');
        while (p && p < end && (p = strchr(p + 1, '"')) && p[-1] == '\\') {}
        if (!p || p >= end) break;
        p += 2;
    }
    return false;
}

static struct row *row_of(struct table *t, const char *step) {
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->rows[i].name, step)) return &t->rows[i];
    if (t->n == SL_COUNTS_MAX_STEPS) return NULL;
    struct row *r = &t->rows[t->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", step);
    r->position = 1e9 + (double)t->n;    /* unknown: after the known ones, as seen */
    return r;
}

static void add_reason(struct row *r, const char *reason, double v) {
    r->filtered += v;
    for (size_t i = 0; i < r->nreasons; i++)
        if (!strcmp(r->reasons[i], reason)) {
            r->by_reason[i] += v;
            return;
        }
    if (r->nreasons == SL_COUNTS_MAX_REASONS) return;
    snprintf(r->reasons[r->nreasons], sizeof(r->reasons[0]), "%s", reason);
    r->by_reason[r->nreasons++] = v;
}

/* One sample line: name{labels} value. */
static void sample(struct table *t, const char *line, const char *eol) {
    static const char *const names[] = {
        "sluice_step_position", "sluice_step_in_total", "sluice_step_out_total",
        "sluice_filtered_total", "sluice_step_errors_total", "sluice_step_dead_letters_total"};
    const char *brace = memchr(line, '{', (size_t)(eol - line));
    const char *close = brace ? memchr(brace, '}', (size_t)(eol - brace)) : NULL;
    char step[64], reason[64];
    size_t which;
    if (!close) return;
    for (which = 0; which < sizeof(names) / sizeof(names[0]); which++)
        if ((size_t)(brace - line) == strlen(names[which]) &&
            !strncmp(line, names[which], (size_t)(brace - line)))
            break;
    if (which == sizeof(names) / sizeof(names[0])) return;
    if (!label(brace + 1, close, "step", step, sizeof(step))) return;
    double v = strtod(close + 1, NULL);
    struct row *r = row_of(t, step);
    if (!r) return;
    switch (which) {
    case 0: r->position = v; break;
    case 1: r->in += v; break;
    case 2: r->out += v; break;
    case 3:
        if (!label(brace + 1, close, "reason", reason, sizeof(reason))) snprintf(reason, sizeof(reason), "?");
        add_reason(r, reason, v);
        break;
    case 4: r->errors += v; break;
    default: r->dead += v; break;
    }
}

static int by_position(const void *a, const void *b) {
    const struct row *x = a, *y = b;
    return x->position < y->position ? -1 : x->position > y->position;
}

int sl_counts_format(const char *metrics, struct sl_buf *out, char *err, size_t errlen) {
    struct table *t = sl_calloc(1, sizeof(*t));
    int ret = SL_ERR;

    for (const char *p = metrics; *p; ) {
        const char *eol = strchr(p, '\n');
        if (!eol) eol = p + strlen(p);
        if (*p != '#') sample(t, p, eol);
        p = *eol ? eol + 1 : eol;
    }
    if (t->n == 0) {
        sl_errf(err, errlen, "no step counts in /metrics (no steps, or not a sluice admin listener)");
        goto done;
    }
    qsort(t->rows, t->n, sizeof(t->rows[0]), by_position);
    sl_buf_printf(out, "%-24s %12s %12s %12s %12s %12s\n", "STEP", "IN", "OUT", "FILTERED",
                  "ERRORS", "DEAD LETTERS");
    for (size_t i = 0; i < t->n; i++) {
        const struct row *r = &t->rows[i];
        sl_buf_printf(out, "%-24s %12.0f %12.0f %12.0f %12.0f %12.0f\n", r->name, r->in, r->out,
                      r->filtered, r->errors, r->dead);
        for (size_t k = 0; k < r->nreasons; k++)
            sl_buf_printf(out, "  %-48s %12.0f\n", r->reasons[k], r->by_reason[k]);
    }
    ret = SL_OK;
done:
    free(t);
    return ret;
}

/* ==================== Scraping ==================== */

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
    sl_buf_add(arg, p, size * n);
    return size * n;
}

/* GETs url into body. */
static int scrape(CURL *h, const char *url, struct sl_buf *body, char *err, size_t errlen) {
    char cerr[CURL_ERROR_SIZE] = "";
    long code = 0;
    sl_buf_reset(body);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)SL_COUNTS_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(h) != CURLE_OK) {
        sl_errf(err, errlen, "%s: %s", url, cerr);
        return SL_ERR;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200) {
        sl_errf(err, errlen, "%s: HTTP %ld", url, code);
        return SL_ERR;
    }
    sl_buf_cstr(body);
    return SL_OK;
}

int sl_counts_run(const struct sl_counts_opts *o) {
    char url[512], err[SL_ERRLEN];
    struct sl_buf body = {0}, table = {0};
    bool tty = isatty(1);
    int ret = 1;
    CURL *h;

    if (!strncmp(o->admin, "http://", 7) || !strncmp(o->admin, "https://", 8))
        snprintf(url, sizeof(url), "%s%s", o->admin,
                 strstr(o->admin + 8, "/metrics") ? "" : "/metrics");
    else
        snprintf(url, sizeof(url), "http://%s/metrics", o->admin);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) || !(h = curl_easy_init())) {
        fprintf(stderr, "sluice counts: cannot start libcurl\n");
        return 1;
    }
    for (;;) {
        sl_buf_reset(&table);
        if (scrape(h, url, &body, err, sizeof(err)) ||
            sl_counts_format(body.data ? body.data : "", &table, err, sizeof(err))) {
            fprintf(stderr, "sluice counts: %s\n", err);
            if (!o->watch) goto done;
        } else {
            if (o->watch && tty) fputs("\033[H\033[2J", stdout);   /* home, clear */
            if (o->watch) {
                time_t now = time(NULL);
                char ts[32];
                strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&now));
                printf("%s  %s\n", url, ts);
            }
            fputs(sl_buf_cstr(&table), stdout);
            fflush(stdout);
        }
        if (!o->watch) break;
        if (!tty) putchar('\n');
        usleep((useconds_t)o->interval_ms * 1000);
    }
    ret = 0;
done:
    curl_easy_cleanup(h);
    curl_global_cleanup();
    sl_buf_free(&body);
    sl_buf_free(&table);
    return ret;
}
