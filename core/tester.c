/* tester.c -- `sluice check` and `sluice test` (see tester.h). */
#define _GNU_SOURCE
#include "tester.h"
#include "canary.h"
#include "config.h"
#include "json.h"
#include "metrics.h"
#include "pipeline.h"
#include "rules.h"
#include "sl.h"
#include "specgen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Loads the config and builds its rules VM, or prints why not. */
static int load(const char *config_file, struct sl_config **cf, struct sl_rules **r) {
    char err[SL_ERRLEN];
    *r = NULL;
    *cf = sl_config_load(config_file, err, sizeof(err));
    if (*cf) *r = sl_rules_create(*cf, err, sizeof(err));
    if (*r) return SL_OK;
    fprintf(stderr, "%s\n", err);
    sl_config_destroy(*cf);
    *cf = NULL;
    return SL_ERR;
}

/* The rules of cf with rules.path replaced by dirs (":"-separated): the
 * deployed rules a check compares against. The config is the caller's to
 * destroy after the rules. */
static struct sl_rules *baseline_rules(const char *config_file, const char *dirs,
                                       struct sl_config **bcf) {
    char err[SL_ERRLEN];
    struct sl_rules *r = NULL;
    *bcf = sl_config_load(config_file, err, sizeof(err));
    if (*bcf) {
        struct sl_config *cf = *bcf;
        char *list = sl_strdup(dirs), *save = NULL;
        for (size_t i = 0; i < cf->rules.npath; i++) free(cf->rules.path[i]);
        cf->rules.npath = 0;
        cf->rules.path = sl_realloc(cf->rules.path, (strlen(dirs) / 2 + 2) * sizeof(char *));
        for (char *d = strtok_r(list, ":", &save); d; d = strtok_r(NULL, ":", &save))
            cf->rules.path[cf->rules.npath++] = sl_strdup(d);
        free(list);
        r = sl_rules_create(cf, err, sizeof(err));
    }
    if (!r) fprintf(stderr, "sluice check: --baseline %s: %s\n", dirs, err);
    return r;
}

/* --against: the canary of a reload, offline (canary.h). */
static int check_against(const char *config_file, const struct sl_config *cf, struct sl_rules *r,
                         const char *against, const char *baseline) {
    struct sl_config *bcf = NULL;
    struct sl_rules *old = NULL;
    struct sl_canary_verdict v;
    char err[SL_ERRLEN];
    int status = 1;
    if (baseline && !(old = baseline_rules(config_file, baseline, &bcf))) goto done;
    if (sl_canary_judge(NULL, against, old, r, cf, &v, err, sizeof(err))) {
        fprintf(stderr, "sluice check: %s\n", err);
        goto done;
    }
    if (v.refused) {
        fprintf(stderr, "sluice check: refused: %s\n", v.summary);
        goto done;
    }
    printf("canary %s: %s\n", against, v.summary);
    status = 0;
done:
    sl_rules_release(old);
    sl_config_destroy(bcf);
    return status;
}

int sl_tester_check(const char *config_file, const char *against, const char *baseline) {
    struct sl_config *cf;
    struct sl_rules *r;
    int status = 0;
    if (load(config_file, &cf, &r)) return 1;
    printf("%s: ok: %zu step(s), rules version %s\n", config_file, cf->nsteps,
           sl_rules_version(r));
    for (size_t i = 0; i < cf->nsteps; i++)
        printf("%s%s (%s)%s", i ? " -> " : "steps: ", cf->steps[i].name, cf->steps[i].kind->name,
               i + 1 == cf->nsteps ? "\n" : "");
    for (size_t i = 0; i < cf->nnotes; i++) printf("note: %s\n", cf->notes[i]);
    fflush(stdout);
    if (against) status = check_against(config_file, cf, r, against, baseline);
    sl_log_flush(1);
    sl_rules_release(r);
    sl_config_destroy(cf);
    return status;
}

/* What went wrong in a run: dead letters per step, the first error. */
struct outcome {
    struct { char step[64]; size_t n; } steps[16];
    size_t nsteps;
    size_t dead;
    const char *input;           /* the input file's name, as given */
    int64_t first_line;          /* input line of the first dead letter */
    char first_step[64];
    char first_error[512];       /* its error, first line */
};

static void on_dead_letter(void *arg, const struct sl_input *in, const char *step,
                           const char *error) {
    struct outcome *o = arg;
    size_t i = 0;
    if (!o->dead++) {
        o->first_line = in->line;
        snprintf(o->first_step, sizeof(o->first_step), "%s", step);
        snprintf(o->first_error, sizeof(o->first_error), "%.*s", (int)strcspn(error, "\n"), error);
    }
    while (i < o->nsteps && strcmp(o->steps[i].step, step)) i++;
    if (i == o->nsteps && i < sizeof(o->steps) / sizeof(o->steps[0]))
        snprintf(o->steps[o->nsteps++].step, sizeof(o->steps[0].step), "%s", step);
    if (i < o->nsteps) o->steps[i].n++;
}

/* A line that is not JSON, on stderr with its line number: the pipeline's
 * decoder found it (each line is parsed once, by the pipeline). */
static void on_not_json(void *arg, const struct sl_input *in, const char *error) {
    const struct outcome *o = arg;
    fprintf(stderr, "%s:%lld: not JSON: %s\n", o->input, (long long)in->line, error);
}

/* The summary on stderr of a run that dead-lettered records. */
static void report(const struct outcome *o, int64_t lines) {
    fprintf(stderr, "sluice test: %zu of %lld record(s) dead-lettered (", o->dead,
            (long long)lines);
    for (size_t i = 0; i < o->nsteps; i++)
        fprintf(stderr, "%sstep %s: %zu", i ? ", " : "", o->steps[i].step, o->steps[i].n);
    fprintf(stderr, ")\nfirst: line %lld, step %s: %s\n", (long long)o->first_line,
            o->first_step, o->first_error);
}

static void nothing_fatal(void *arg, const char *why) {
    (void)arg;
    fprintf(stderr, "sluice test: %s\n", why);
}

/* Checks that each stub is STEP=FILE for an http or model step and a
 * readable file. */
static int check_stubs(const struct sl_config *cf, const char *const *stubs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(stubs[i], '=');
        char step[256];
        if (!eq || eq == stubs[i] || !eq[1] || (size_t)(eq - stubs[i]) >= sizeof(step)) {
            fprintf(stderr, "sluice test: --stub %s: expected STEP=FILE\n", stubs[i]);
            return SL_ERR;
        }
        snprintf(step, sizeof(step), "%.*s", (int)(eq - stubs[i]), stubs[i]);
        int at = sl_config_step_index(cf, step);
        if (at < 0 || (cf->steps[at].type != SL_STEP_HTTP && cf->steps[at].type != SL_STEP_MODEL)) {
            fprintf(stderr, "sluice test: --stub %s: %s is not an http or model step of %s\n",
                    stubs[i], step, cf->file);
            return SL_ERR;
        }
        FILE *f = fopen(eq + 1, "r");
        if (!f) {
            fprintf(stderr, "sluice test: --stub %s: %s: %s\n", stubs[i], eq + 1, strerror(errno));
            return SL_ERR;
        }
        fclose(f);
    }
    return SL_OK;
}

/* --emit-spec: the run's trace in memory and a copy of each record's value. */
struct capture {
    FILE *trace;                 /* open_memstream on buf */
    char *buf;
    size_t len;
    char **lines;
    long long *linenos;
    size_t n, cap;
};

static void capture_line(struct capture *c, const char *line, int64_t lineno) {
    if (c->n == c->cap) {
        c->cap = c->cap * 2 + 64;
        c->lines = sl_realloc(c->lines, c->cap * sizeof(*c->lines));
        c->linenos = sl_realloc(c->linenos, c->cap * sizeof(*c->linenos));
    }
    c->lines[c->n] = sl_strdup(line);
    c->linenos[c->n++] = (long long)lineno;
}

static void capture_free(struct capture *c) {
    if (c->trace) fclose(c->trace);
    free(c->buf);
    for (size_t i = 0; i < c->n; i++) free(c->lines[i]);
    free(c->lines);
    free(c->linenos);
}

int sl_tester_run(const struct sl_tester_opts *t) {
    int status = 1;
    struct outcome o = {.input = t->input};
    struct capture cap = {0};
    FILE *in = NULL, *out = t->out;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t n;
    int64_t lineno = 0;
    struct sl_pipeline *pl = NULL;
    struct sl_config *cf;
    struct sl_rules *r;

    if (load(t->config, &cf, &r)) return 1;
    if (check_stubs(cf, t->stubs, t->nstubs)) {
        sl_rules_release(r);
        goto done;
    }
    in = strcmp(t->input, "-") ? fopen(t->input, "r") : stdin;
    if (!in) {
        fprintf(stderr, "sluice test: %s: %s\n", t->input, strerror(errno));
        sl_rules_release(r);
        goto done;
    }
    if (t->emit_spec && !(cap.trace = open_memstream(&cap.buf, &cap.len))) {
        fprintf(stderr, "sluice test: cannot buffer the trace: %s\n", strerror(errno));
        sl_rules_release(r);
        goto done;
    }
    struct sl_pipeline_conf pc = {.cf = cf, .trace = t->summary ? NULL : t->emit_spec ? cap.trace : out,
                                  .on_fatal = nothing_fatal, .stubs = t->stubs, .nstubs = t->nstubs,
                                  .on_dead_letter = on_dead_letter, .on_not_json = on_not_json,
                                  .arg = &o};
    int64_t t0 = sl_mono_ms();
    pl = sl_pipeline_create(&pc, r);          /* r is now owned by the pipeline */
    while ((n = getline(&line, &linecap, in)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        struct sl_input rec = {
            .topic = cf->kafka.input[0], .partition = 0, .offset = lineno - 1,
            .timestamp = sl_now_ms(), .value = line, .len = (size_t)n, .line = lineno,
        };
        if (t->emit_spec) capture_line(&cap, line, lineno);
        sl_pipeline_push(pl, &rec);
        if (!t->summary && !t->emit_spec) fflush(out);
    }
    if (t->summary) {
        struct sl_buf b = {0};
        sl_pipeline_tick(pl);   /* window gauges and counters */
        sl_metrics_render(&b);
        fprintf(out, "%lld record(s) in %lld ms\n%s", (long long)lineno,
                (long long)(sl_mono_ms() - t0), b.data ? b.data : "");
        sl_buf_free(&b);
    }
    if (t->emit_spec) {
        char gerr[SL_ERRLEN];
        fflush(cap.trace);
        if (sl_specgen_write(out, cap.buf, cap.len, cf, t->input, cap.lines, cap.linenos, cap.n,
                             gerr, sizeof(gerr))) {
            fprintf(stderr, "sluice test: --emit-spec: %s\n", gerr);
            goto done;
        }
    }
    if (o.dead) report(&o, lineno);
    status = o.dead && !t->allow_errors ? 1 : 0;
done:
    sl_log_flush(1);
    free(line);
    if (in && in != stdin) fclose(in);
    sl_pipeline_destroy(pl);
    capture_free(&cap);
    sl_config_destroy(cf);
    sl_metrics_reset();
    return status;
}
