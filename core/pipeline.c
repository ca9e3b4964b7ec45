/* pipeline.c -- records through steps (see pipeline.h). */
#define _GNU_SOURCE
#include "pipeline.h"
#include "json.h"
#include "metrics.h"
#include "sl.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define SL_PIPELINE_REASONS 16 /* Filter reasons per step whose counters are kept at hand. */

/* The counters of one step, resolved on first use (a series appears in
 * /metrics only once it counted something). */
struct step_metrics {
    struct sl_metrics_series *out;       /* sluice_step_out_total */
    struct sl_metrics_series *errors;    /* sluice_step_errors_total */
    struct sl_metrics_series *filtered[SL_PIPELINE_REASONS]; /* sluice_filtered_total */
    char reasons[SL_PIPELINE_REASONS][64];                   /* their reason labels */
    size_t nreasons;
};

/* One step of the pipeline: its kind and the kind's state. */
struct step {
    const struct sl_step_kind *kind;
    void *state;
    const char *name;
    struct step_metrics m;
};

struct sl_pipeline {
    struct sl_pipeline_conf conf;
    const struct sl_config *cf;
    struct sl_rules *rules;      /* the VM new records start on */
    size_t inflight;             /* records pushed, not done */
    struct record *live;         /* records in flight, for destroy */
    struct ctx *held;            /* contexts a step keeps, for destroy */
    struct sl_buf buf;           /* scratch for dead letters */
    struct step *steps;          /* per config step */
    size_t nsteps;
    int last_restore;            /* restore records stop after this step, -1: none */
    void *shared[SL_STEP_MAX_KINDS]; /* per kind: state its steps share */
    struct sl_metrics_series *records_in, *records_done;
};

/* A record in flight. */
struct record {
    struct sl_pipeline *pl;
    struct sl_input *in;
    struct sl_rules *rules;      /* retained for the record's lifetime */
    int pending;                 /* contexts not finished */
    long seq;                    /* position in the trace */
    struct record *prev, *next;  /* in pl->live */
};

/* A context: what steps see, and its record. */
struct ctx {
    struct sl_pipeline_ctx pub;
    struct record *rec;
    bool held;                   /* a step keeps it until sl_pipeline_resume */
    struct ctx *hprev, *hnext;   /* in pl->held while held */
};

static void run(struct ctx *c);

static struct ctx *ctx_of(struct sl_pipeline_ctx *p) {
    return (struct ctx *)((char *)p - offsetof(struct ctx, pub));
}

static struct ctx *ctx_new(struct record *rec, int ref, size_t step) {
    struct ctx *c = sl_malloc(sizeof(*c));
    c->pub.rules = rec->rules;
    c->pub.in = rec->in;
    c->pub.ref = ref;
    c->pub.step = step;
    c->rec = rec;
    c->held = false;
    return c;
}

/* ==================== Helpers ==================== */

static void record_release(struct record *rec) {
    if (--rec->pending > 0) return;
    struct sl_pipeline *pl = rec->pl;
    pl->inflight--;
    if (rec->prev) rec->prev->next = rec->next;
    else pl->live = rec->next;
    if (rec->next) rec->next->prev = rec->prev;
    if (!pl->records_done)
        pl->records_done = sl_metrics_counter("sluice_records_done_total", NULL);
    sl_metrics_add(pl->records_done, 1);
    sl_rules_release(rec->rules);
    struct sl_input *in = rec->in;
    free(rec);
    if (pl->conf.on_done) pl->conf.on_done(pl->conf.arg, in);
}

static void ctx_finish(struct ctx *c) {
    struct record *rec = c->rec;
    luaL_unref(sl_rules_state(rec->rules), LUA_REGISTRYINDEX, c->pub.ref);
    free(c);
    record_release(rec);
}

static void trace_line(struct record *rec, const char *step, const char *what,
                       const char *json_value) {
    FILE *t = rec->pl->conf.trace;
    if (!t) return;
    fprintf(t, "{\"record\":%ld,\"step\":\"%s\",\"%s\":%s}\n", rec->seq, step, what, json_value);
}

void sl_pipeline_trace(struct sl_pipeline_ctx *p, const char *what, const char *json) {
    struct ctx *c = ctx_of(p);
    trace_line(c->rec, c->rec->pl->steps[p->step].name, what, json);
}

/* ==================== Dead letters ==================== */

static void dead_letter_done(void *opaque, const char *err, int32_t p, int64_t o) {
    struct ctx *c = opaque;
    (void)p; (void)o;
    if (err) {
        struct sl_pipeline *pl = c->rec->pl;
        char why[256];
        snprintf(why, sizeof(why), "dead-letter topic %s: %s", pl->cf->kafka.dead_letter, err);
        pl->conf.on_fatal(pl->conf.arg, why);
        return;
    }
    ctx_finish(c);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(struct sl_buf *b, const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        sl_buf_addc(b, b64[(v >> 18) & 63]);
        sl_buf_addc(b, b64[(v >> 12) & 63]);
        sl_buf_addc(b, i + 1 < n ? b64[(v >> 6) & 63] : '=');
        sl_buf_addc(b, i + 2 < n ? b64[v & 63] : '=');
    }
}

/* Sends the context's record to the dead-letter topic; the context finishes
 * when the broker acknowledged it. */
static void dead_letter(struct ctx *c, const char *step, const char *error, const char *extra) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    struct sl_input *in = rec->in;
    lua_State *L = sl_rules_state(rec->rules);
    struct sl_buf *b = &pl->buf;
    char err[SL_ERRLEN];

    sl_metrics_inc("sluice_dead_letters_total", NULL, 1);
    sl_buf_reset(b);
    sl_buf_adds(b, "{\"source\":{\"topic\":");
    sl_step_json_str(L, b, in->topic ? in->topic : "", in->topic ? strlen(in->topic) : 0);
    sl_buf_printf(b, ",\"partition\":%d,\"offset\":%lld,\"timestamp\":%lld,\"key\":",
                  in->partition, (long long)in->offset, (long long)in->timestamp);
    if (in->key) sl_step_json_str(L, b, in->key, in->keylen);
    else sl_buf_adds(b, "null");
    sl_buf_adds(b, "},");
    lua_pushlstring(L, in->value ? in->value : "", in->value ? in->len : 0);
    size_t mark = b->len;
    sl_buf_adds(b, "\"value\":");
    if (sl_json_encode(L, -1, b, err, sizeof(err))) {
        b->len = mark;
        sl_buf_adds(b, "\"valueBase64\":\"");
        base64(b, in->value, in->value ? in->len : 0);
        sl_buf_addc(b, '"');
    }
    lua_pop(L, 1);
    sl_buf_adds(b, ",\"step\":");
    sl_step_json_str(L, b, step, strlen(step));
    sl_buf_adds(b, ",\"error\":");
    sl_step_json_str(L, b, error, strlen(error));
    if (extra) sl_buf_printf(b, ",%s", extra);
    sl_buf_printf(b, ",\"rulesVersion\":\"%s\",\"at\":%lld}", sl_rules_version(rec->rules),
                  (long long)sl_now_ms());

    if (!pl->conf.producer) {
        trace_line(rec, step, "dead_letter", sl_buf_cstr(b));
        ctx_finish(c);
        return;
    }
    if (sl_kafka_produce(pl->conf.producer, pl->cf->kafka.dead_letter, -1, in->key,
                         in->keylen, b->data, b->len, 0, dead_letter_done, c, err,
                         sizeof(err))) {
        char why[SL_ERRLEN + 64];
        snprintf(why, sizeof(why), "dead-letter: %s", err);
        pl->conf.on_fatal(pl->conf.arg, why);
    }
}

/* ==================== Counting and tracing ==================== */

static void count_step(const char *step, const char *what, const char *reason) {
    char labels[256];
    if (reason) snprintf(labels, sizeof(labels), "step=\"%s\",reason=\"%s\"", step, reason);
    else snprintf(labels, sizeof(labels), "step=\"%s\"", step);
    sl_metrics_inc(what, labels, 1);
}

/* The counter what{step=...} of a step, resolved once. */
static void count_step_at(struct sl_metrics_series **at, const char *step, const char *what) {
    if (!*at) {
        char labels[256];
        snprintf(labels, sizeof(labels), "step=\"%s\"", step);
        *at = sl_metrics_counter(what, labels);
    }
    sl_metrics_add(*at, 1);
}

static void count_out(struct step *s) {
    count_step_at(&s->m.out, s->name, "sluice_step_out_total");
}

/* Counts a filtered context; the first SL_PIPELINE_REASONS reasons of a
 * step keep their counter at hand, later ones are looked up each time. */
static void count_filtered(struct step *s, const char *reason) {
    struct step_metrics *m = &s->m;
    for (size_t i = 0; i < m->nreasons; i++)
        if (!strcmp(m->reasons[i], reason)) {
            sl_metrics_add(m->filtered[i], 1);
            return;
        }
    if (m->nreasons == SL_PIPELINE_REASONS || strlen(reason) >= sizeof(m->reasons[0])) {
        count_step(s->name, "sluice_filtered_total", reason);
        return;
    }
    char labels[256];
    snprintf(labels, sizeof(labels), "step=\"%s\",reason=\"%s\"", s->name, reason);
    strcpy(m->reasons[m->nreasons], reason);
    m->filtered[m->nreasons] = sl_metrics_counter("sluice_filtered_total", labels);
    sl_metrics_add(m->filtered[m->nreasons++], 1);
}

/* Counts and traces a context a step filtered out. */
static void filtered(struct ctx *c, struct step *s, const char *reason) {
    count_filtered(s, reason);
    if (c->rec->pl->conf.trace) {
        char q[80];
        snprintf(q, sizeof(q), "\"%s\"", reason);
        trace_line(c->rec, s->name, "filtered", q);
    }
}

static void trace_ctx(struct record *rec, const char *step, int ref) {
    if (!rec->pl->conf.trace) return;
    lua_State *L = sl_rules_state(rec->rules);
    char err[256];
    struct sl_buf b = {0};
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (sl_step_encode_vars(L, lua_gettop(L), &b, err, sizeof(err))) {
        sl_buf_reset(&b);
        sl_step_json_str(L, &b, err, strlen(err));
        trace_line(rec, step, "unencodable", sl_buf_cstr(&b));
    } else {
        trace_line(rec, step, "ctx", sl_buf_cstr(&b));
    }
    lua_pop(L, 1);
    sl_buf_free(&b);
}

/* ==================== Routing ==================== */

/* One context in, several out: each continues after the step, in order.
 * The record stays alive until the last one ends. */
static void fan_out(struct ctx *c, struct step *s, const int *from, size_t n) {
    struct record *rec = c->rec;
    int *refs = sl_malloc((n + 1) * sizeof(int));  /* from is the step's scratch */
    memcpy(refs, from, n * sizeof(int));
    rec->pending += (int)n;
    for (size_t i = 0; i < n; i++) {
        count_out(s);
        trace_ctx(rec, s->name, refs[i]);
    }
    size_t next = c->pub.step + 1;
    ctx_finish(c);           /* the record is still held by the children */
    for (size_t i = 0; i < n; i++) run(ctx_new(rec, refs[i], next));
    free(refs);
}

/* Acts on a step's outcome for the context at it. Returns true when the
 * context goes on with the next step (c->pub.step advanced), false when it
 * ended, was handed on, or waits. */
static bool settle(struct ctx *c, const struct sl_step_result *res) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    struct step *s = &pl->steps[c->pub.step];
    char what[192];

    switch (res->status) {
    case SL_STEP_NEXT:
        if (!(s->kind->flags & SL_STEP_SINK)) {
            count_out(s);
            if (!rec->in->restore) trace_ctx(rec, s->name, c->pub.ref);
        }
        c->pub.step++;
        return true;
    case SL_STEP_FILTERED:
        filtered(c, s, res->reason);
        ctx_finish(c);
        return false;
    case SL_STEP_DONE:
        ctx_finish(c);
        return false;
    case SL_STEP_MANY:
        fan_out(c, s, res->refs, res->nrefs);
        return false;
    case SL_STEP_ERROR:
        if (rec->in->restore) {     /* dead-lettered when first run */
            ctx_finish(c);
            return false;
        }
        count_step_at(&s->m.errors, s->name, "sluice_step_errors_total");
        sl_step_input_name(rec->in, what, sizeof(what));
        sl_log(SL_LOG_WARN, "pipeline", "step %s failed on %s: %s", s->name, what, res->error);
        dead_letter(c, s->name, res->error, res->extra);
        return false;
    case SL_STEP_FATAL: {
        /* The context stays unfinished: nothing after it may commit. */
        char why[SL_ERRLEN + 128];
        snprintf(why, sizeof(why), "step %s: %s", s->name, res->error);
        pl->conf.on_fatal(pl->conf.arg, why);
        return false;
    }
    case SL_STEP_PENDING:
        c->held = true;
        c->hprev = NULL;
        c->hnext = pl->held;
        if (pl->held) pl->held->hprev = c;
        pl->held = c;
        return false;
    }
    return false;
}

/* Runs the context from its current step until it finishes or waits. */
static void run(struct ctx *c) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    struct sl_step_result res;

    while (c->pub.step < pl->nsteps) {
        struct step *s = &pl->steps[c->pub.step];
        if (rec->in->restore) {
            if ((int)c->pub.step > pl->last_restore) break;
            if (!(s->kind->flags & SL_STEP_FOR_RESTORE)) {
                c->pub.step++;
                continue;
            }
        }
        res = (struct sl_step_result){.status = SL_STEP_NEXT};
        s->kind->start(s->state, &c->pub, &res);
        if (!settle(c, &res)) return;
    }
    ctx_finish(c);
}

void sl_pipeline_resume(struct sl_pipeline_ctx *p, const struct sl_step_result *res) {
    struct ctx *c = ctx_of(p);
    assert(c->held && res->status != SL_STEP_PENDING);
    struct sl_pipeline *pl = c->rec->pl;
    c->held = false;
    if (c->hprev) c->hprev->hnext = c->hnext;
    else pl->held = c->hnext;
    if (c->hnext) c->hnext->hprev = c->hprev;
    if (settle(c, res)) run(c);
}

/* ==================== Records ==================== */

static long trace_seq;

static struct record *record_new(struct sl_pipeline *pl, struct sl_input *in) {
    struct record *rec = sl_calloc(1, sizeof(*rec));
    rec->pl = pl;
    rec->in = in;
    rec->rules = pl->rules;
    sl_rules_retain(rec->rules);
    rec->pending = 1;
    rec->seq = ++trace_seq;
    rec->next = pl->live;
    if (pl->live) pl->live->prev = rec;
    pl->live = rec;
    pl->inflight++;
    if (!pl->records_in) pl->records_in = sl_metrics_counter("sluice_records_in_total", NULL);
    sl_metrics_add(pl->records_in, 1);
    return rec;
}

/* Builds the context table: input (decoded, or the raw string when the
 * value is not JSON) and kafka metadata. */
static int make_ctx(struct record *rec) {
    lua_State *L = sl_rules_state(rec->rules);
    struct sl_input *in = rec->in;
    char err[256];

    lua_createtable(L, 0, 8);                                  /* ctx */
    if (!in->value) lua_pushlightuserdata(L, NULL);
    else if (sl_json_decode(L, in->value, in->len, err, sizeof(err))) {
        sl_metrics_inc("sluice_input_not_json_total", NULL, 1);
        lua_pushlstring(L, in->value, in->len);                /* ctx input */
    }
    lua_setfield(L, -2, "input");                              /* ctx */
    lua_createtable(L, 0, 5);                                  /* ctx kafka */
    lua_pushstring(L, in->topic ? in->topic : "");
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, in->partition);
    lua_setfield(L, -2, "partition");
    lua_pushnumber(L, (lua_Number)in->offset);
    lua_setfield(L, -2, "offset");
    lua_pushnumber(L, (lua_Number)in->timestamp);
    lua_setfield(L, -2, "timestamp");
    if (in->key) lua_pushlstring(L, in->key, in->keylen);
    else lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "key");
    lua_setfield(L, -2, "kafka");                              /* ctx */
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void sl_pipeline_push(struct sl_pipeline *pl, struct sl_input *in) {
    struct record *rec = record_new(pl, in);
    run(ctx_new(rec, make_ctx(rec), 0));
}

void sl_pipeline_reject(struct sl_pipeline *pl, struct sl_input *in,
                        const char *step, const char *why) {
    struct record *rec = record_new(pl, in);
    dead_letter(ctx_new(rec, LUA_NOREF, 0), step, why, NULL);
}

/* ==================== Pipeline ==================== */

struct sl_pipeline *sl_pipeline_create(const struct sl_pipeline_conf *conf,
                                       struct sl_rules *rules) {
    struct sl_pipeline *pl = sl_calloc(1, sizeof(*pl));
    pl->conf = *conf;
    pl->cf = conf->cf;
    pl->rules = rules;     /* ownership moves to the pipeline */
    pl->last_restore = -1;
    pl->nsteps = pl->cf->nsteps;
    pl->steps = sl_calloc(pl->nsteps + 1, sizeof(*pl->steps));
    for (size_t i = 0; i < pl->nsteps; i++) {
        const struct sl_step_conf *sc = &pl->cf->steps[i];
        struct step *s = &pl->steps[i];
        assert(sc->kind && (unsigned)sc->kind->type < SL_STEP_MAX_KINDS);
        struct sl_step_env env = {
            .cf = pl->cf, .index = i, .producer = conf->producer, .base = conf->base,
            .stubs = conf->stubs, .nstubs = conf->nstubs,
            .shared = &pl->shared[sc->kind->type],
        };
        s->kind = sc->kind;
        s->name = sc->name;
        s->state = s->kind->create(&env);
        if (s->kind->history) pl->last_restore = (int)i;
    }
    return pl;
}

void sl_pipeline_destroy(struct sl_pipeline *pl) {
    if (!pl) return;
    for (size_t i = 0; i < pl->nsteps; i++)
        if (pl->steps[i].kind->cancel) pl->steps[i].kind->cancel(pl->steps[i].state);
    /* Steps resume nothing after cancel: the contexts they kept go with
     * their records (their VMs close with the records' references). */
    while (pl->held) {
        struct ctx *c = pl->held;
        pl->held = c->hnext;
        free(c);
    }
    /* Contexts of these records may still be referenced by queued produce
     * reports; the producer is destroyed after us with its reports muted. */
    while (pl->live) {
        struct record *rec = pl->live;
        pl->live = rec->next;
        if (pl->conf.on_drop) pl->conf.on_drop(pl->conf.arg, rec->in);
        sl_rules_release(rec->rules);
        free(rec);
    }
    for (size_t i = pl->nsteps; i-- > 0;) pl->steps[i].kind->destroy(pl->steps[i].state);
    free(pl->steps);
    sl_rules_release(pl->rules);
    sl_buf_free(&pl->buf);
    free(pl);
}

void sl_pipeline_swap_rules(struct sl_pipeline *pl, struct sl_rules *rules) {
    struct sl_rules *old = pl->rules;
    pl->rules = rules;
    sl_rules_release(old);  /* closed now, or when its last record ends */
}

const char *sl_pipeline_version(const struct sl_pipeline *pl) {
    return sl_rules_version(pl->rules);
}

size_t sl_pipeline_inflight(const struct sl_pipeline *pl) { return pl->inflight; }

bool sl_pipeline_busy(const struct sl_pipeline *pl) {
    for (size_t i = 0; i < pl->nsteps; i++)
        if (pl->steps[i].kind->busy && pl->steps[i].kind->busy(pl->steps[i].state)) return true;
    return false;
}

void sl_pipeline_tick(struct sl_pipeline *pl) {
    for (size_t i = 0; i < pl->nsteps; i++)
        if (pl->steps[i].kind->tick) pl->steps[i].kind->tick(pl->steps[i].state);
}

void sl_pipeline_drop_partition(struct sl_pipeline *pl, const char *topic,
                                int32_t partition) {
    for (size_t i = 0; i < pl->nsteps; i++)
        if (pl->steps[i].kind->drop_partition)
            pl->steps[i].kind->drop_partition(pl->steps[i].state, topic, partition);
}

bool sl_pipeline_has_window(const struct sl_pipeline *pl, int64_t *length_ms) {
    int64_t longest = 0;
    for (size_t i = 0; i < pl->nsteps; i++) {
        if (!pl->steps[i].kind->history) continue;
        int64_t h = pl->steps[i].kind->history(&pl->cf->steps[i]);
        if (h > longest) longest = h;
    }
    if (length_ms) *length_ms = longest;
    return longest > 0;
}
