/* pipeline.c -- records through steps (see pipeline.h). */
#define _GNU_SOURCE
#include "pipeline.h"
#include "canary.h"
#include "deadletter.h"
#include "json.h"
#include "lazy.h"
#include "metrics.h"
#include "regs.h"
#include "sl.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define SL_PIPELINE_REASONS 16 /* Filter reasons per step whose counters are kept at hand. */

/* Upper bounds (s) of sluice_end_to_end_seconds: Kafka timestamp to sinks done. */
static const double latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1, 2.5, 5, 10, 30, 60, 300};

/* The counters of one step, resolved on first use (a series appears in
 * /metrics only once it counted something). Restore records count nowhere:
 * they were counted when first run. */
struct step_metrics {
    struct sl_metrics_series *in;        /* sluice_step_in_total */
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
    bool sample;                 /* contexts leaving it are offered to conf.canary */
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
    struct sl_metrics_histogram *latency; /* sluice_end_to_end_seconds */
    struct dl_op *parked;        /* dead letters waiting for a retry */
    int64_t dl_logged;           /* monotonic ms of the last dead-letter failure line */
    uint64_t dl_failed;          /* dead-letter failures since that line */
};

/* A record in flight. */
struct record {
    struct sl_pipeline *pl;
    struct sl_input *in;
    struct sl_rules *rules;      /* retained for the record's lifetime */
    int pending;                 /* contexts not finished */
    int spent;                   /* ...of which past the last step (sl_pipeline_spent) */
    bool released;               /* on_spent was called */
    bool sunk;                   /* a sink finished one of its contexts */
    long seq;                    /* position in the trace */
    struct record *prev, *next;  /* in pl->live */
};

/* A context: what steps see, and its record. */
struct ctx {
    struct sl_pipeline_ctx pub;
    struct record *rec;
    bool held;                   /* a step keeps it until sl_pipeline_resume */
    bool spent;                  /* counted in rec->spent */
    char part[32];               /* ".2" (".2.1", ...): which context of a split record */
    struct ctx *hprev, *hnext;   /* in pl->held while held */
};

static void run(struct ctx *c);
static void count_step(const char *step, const char *what, const char *reason);

static struct ctx *ctx_of(struct sl_pipeline_ctx *p) {
    return (struct ctx *)((char *)p - offsetof(struct ctx, pub));
}

/* Records and contexts come and go with every input record. */
static struct sl_pool record_pool = SL_POOL_INIT(struct record, 4096);
static struct sl_pool ctx_pool = SL_POOL_INIT(struct ctx, 4096);

static struct ctx *ctx_new(struct record *rec, int ref, size_t step, const char *part) {
    struct ctx *c = sl_pool_get(&ctx_pool);
    sl_strcpy_cut(c->part, sizeof(c->part), part);
    c->pub.rules = rec->rules;
    c->pub.in = rec->in;
    c->pub.ref = ref;
    c->pub.step = step;
    c->rec = rec;
    c->held = false;
    c->spent = false;
    return c;
}

/* ==================== Helpers ==================== */

/* Hands the record's input back (on_spent) once every context still in
 * flight is past the last step. */
static void maybe_spent(struct record *rec) {
    struct sl_pipeline *pl = rec->pl;
    if (rec->released || rec->pending == 0 || rec->spent < rec->pending || !pl->conf.on_spent)
        return;
    rec->released = true;
    pl->conf.on_spent(pl->conf.arg, rec->in);
    rec->in->key = rec->in->value = NULL;
    rec->in->keylen = rec->in->len = 0;
}

static void record_release(struct record *rec) {
    if (--rec->pending > 0) {
        maybe_spent(rec);
        return;
    }
    struct sl_pipeline *pl = rec->pl;
    pl->inflight--;
    if (rec->prev) rec->prev->next = rec->next;
    else pl->live = rec->next;
    if (rec->next) rec->next->prev = rec->prev;
    if (!pl->records_done)
        pl->records_done = sl_metrics_counter("sluice_records_done_total", NULL);
    sl_metrics_add(pl->records_done, 1);
    if (rec->sunk && rec->in->timestamp >= 0) {
        int64_t ms = sl_now_ms() - rec->in->timestamp;
        sl_metrics_observe(pl->latency, ms > 0 ? (double)ms / 1000 : 0);
    }
    sl_rules_release(rec->rules);
    struct sl_input *in = rec->in;
    sl_pool_put(&record_pool, rec);
    if (pl->conf.on_done) pl->conf.on_done(pl->conf.arg, in);
}

static void ctx_finish(struct ctx *c) {
    struct record *rec = c->rec;
    if (c->spent) rec->spent--;
    luaL_unref(sl_rules_state(rec->rules), LUA_REGISTRYINDEX, c->pub.ref);
    sl_pool_put(&ctx_pool, c);
    record_release(rec);
}

/* Writes one trace line for the value at the top of rec's VM (popped):
 * {"record":N,"step":STEP,"<what>":value}, the record "N.i" for the i-th
 * context split from it. Every object's keys come sorted, and wall-clock
 * fields of the run (the Kafka timestamp sluice test gives each record, a
 * dead letter's "at" and source timestamp) are left out, so the same input
 * gives the same trace. A dead letter's line begins with its error, without
 * the traceback (which the dead letter keeps). */
static void trace_top(struct record *rec, const char *part, const char *step, const char *what,
                      const char *extra_key, const char *extra) {
    FILE *t = rec->pl->conf.trace;
    lua_State *L = sl_rules_state(rec->rules);
    struct sl_buf b = {0};
    char err[256];
    int v = lua_gettop(L);

    if (!strcmp(what, "dead_letter") && lua_istable(L, v)) {
        lua_pushnil(L);
        lua_setfield(L, v, "at");
        lua_getfield(L, v, "source");
        if (lua_istable(L, -1)) {
            lua_pushnil(L);
            lua_setfield(L, -2, "timestamp");
        }
        lua_pop(L, 1);
        lua_getfield(L, v, "error");
        size_t n = 0;
        const char *e = lua_tolstring(L, -1, &n);
        const char *tb = e ? strstr(e, "\nstack traceback:") : NULL;
        sl_buf_adds(&b, "{\"error\":");
        sl_step_json_str(L, &b, e ? e : "", tb ? (size_t)(tb - e) : n);
        sl_buf_adds(&b, ",");
        lua_pop(L, 1);
    } else {
        sl_buf_adds(&b, "{");
    }
    if (*part) sl_buf_printf(&b, "\"record\":\"%ld%s\"", rec->seq, part);
    else sl_buf_printf(&b, "\"record\":%ld", rec->seq);
    if (step) {
        sl_buf_adds(&b, ",\"step\":");
        sl_step_json_str(L, &b, step, strlen(step));
    }
    if (extra_key) sl_buf_printf(&b, ",\"%s\":%s", extra_key, extra);
    sl_buf_printf(&b, ",\"%s\":", what);
    if (sl_json_encode_sorted(L, v, &b, err, sizeof(err))) {
        sl_buf_adds(&b, "{\"unencodable\":");
        sl_step_json_str(L, &b, err, strlen(err));
        sl_buf_adds(&b, "}");
    }
    sl_buf_adds(&b, "}\n");
    fputs(sl_buf_cstr(&b), t);
    sl_buf_free(&b);
    lua_settop(L, v - 1);
}

/* Traces json (a step's own JSON text) as the value of what. */
static void trace_line(struct record *rec, const char *part, const char *step,
                       const char *what, const char *json_value) {
    if (!rec->pl->conf.trace) return;
    lua_State *L = sl_rules_state(rec->rules);
    char err[256];
    if (sl_json_decode(L, json_value, strlen(json_value), err, sizeof(err)))
        lua_pushstring(L, json_value);
    trace_top(rec, part, step, what, NULL, NULL);
}

bool sl_pipeline_tracing(struct sl_pipeline_ctx *p) {
    return ctx_of(p)->rec->pl->conf.trace != NULL;
}

void sl_pipeline_spent(struct sl_pipeline_ctx *p) {
    struct ctx *c = ctx_of(p);
    if (c->spent) return;
    c->spent = true;
    c->rec->spent++;
    maybe_spent(c->rec);
}

void sl_pipeline_trace(struct sl_pipeline_ctx *p, const char *what, const char *json) {
    struct ctx *c = ctx_of(p);
    trace_line(c->rec, c->part, c->rec->pl->steps[p->step].name, what, json);
}

/* ==================== Dead letters ==================== */

#define SL_PIPELINE_DL_LOG_MS 10000 /* At most one log line this often for failing dead letters. */

/* A dead letter being sent. When it cannot be, it is parked: its record
 * stays in flight (its offset uncommitted: it is still in the source topic)
 * and sl_pipeline_tick sends it again. */
struct dl_op {
    struct ctx *c;
    char *step, *error, *extra;   /* extra: more dead-letter members, or NULL */
    struct dl_op *next;          /* in pl->parked */
};

static void dead_letter_send(struct dl_op *op);

/* Counts a failed dead letter, logs it rate-limited, parks it. */
static void dead_letter_park(struct dl_op *op, const char *why) {
    struct sl_pipeline *pl = op->c->rec->pl;
    int64_t now = sl_mono_ms();
    sl_metrics_inc("sluice_dead_letter_failures_total", NULL, 1);
    pl->dl_failed++;
    if (now - pl->dl_logged >= SL_PIPELINE_DL_LOG_MS) {
        char what[96];
        sl_step_input_name(op->c->rec->in, what, sizeof(what));
        sl_log(SL_LOG_ERROR, "pipeline", "dead-letter topic %s: %s (record %s; %llu "
               "failure(s) since the last such line); the record stays uncommitted and "
               "its dead letter is retried every second", pl->cf->kafka.dead_letter, why,
               what, (unsigned long long)pl->dl_failed);
        pl->dl_logged = now;
        pl->dl_failed = 0;
    }
    op->next = pl->parked;
    pl->parked = op;
}

static void dead_letter_done(void *opaque, const char *err, int32_t p, int64_t o) {
    struct dl_op *op = opaque;
    struct ctx *c = op->c;
    (void)p; (void)o;
    if (err) {
        dead_letter_park(op, err);
        return;
    }
    free(op->step);
    free(op->error);
    free(op->extra);
    free(op);
    ctx_finish(c);
}

/* Sends the context's record to the dead-letter topic; the context finishes
 * when the broker acknowledged it. */
static void dead_letter(struct ctx *c, const char *step, const char *error, const char *extra) {
    struct dl_op *op = sl_calloc(1, sizeof(*op));
    sl_metrics_inc("sluice_dead_letters_total", NULL, 1);
    count_step(step, "sluice_step_dead_letters_total", NULL);
    if (c->rec->pl->conf.on_dead_letter)
        c->rec->pl->conf.on_dead_letter(c->rec->pl->conf.arg, c->rec->in, step, error);
    op->c = c;
    op->step = sl_strdup(step);
    op->error = sl_strdup(error);
    op->extra = extra ? sl_strdup(extra) : NULL;
    dead_letter_send(op);
}

static void dead_letter_send(struct dl_op *op) {
    struct record *rec = op->c->rec;
    struct sl_pipeline *pl = rec->pl;
    struct sl_input *in = rec->in;
    struct sl_deadletter_src src = {
        .topic = in->topic, .partition = in->partition, .offset = in->offset,
        .timestamp = in->timestamp, .key = in->key, .keylen = in->keylen,
        .value = in->value, .len = in->len, .extra = op->extra,
    };
    struct sl_deadletter dl = {.json = pl->buf};
    char err[SL_ERRLEN];

    sl_deadletter_encode(sl_rules_state(rec->rules), &src, op->step, op->error,
                         sl_rules_version(rec->rules), sl_now_ms(),
                         pl->conf.producer ? sl_kafka_producer_max_bytes(pl->conf.producer) : 0,
                         &dl);
    pl->buf = dl.json;   /* the scratch buffer, grown */
    if (!pl->conf.producer) {
        trace_line(rec, op->c->part, op->step, "dead_letter", sl_buf_cstr(&pl->buf));
        dead_letter_done(op, NULL, -1, -1);
        return;
    }
    struct sl_kafka_header h = {0};
    if (dl.raw) h = (struct sl_kafka_header){SL_DEADLETTER_HEADER, pl->buf.data, pl->buf.len};
    if (sl_kafka_produce_header(pl->conf.producer, pl->cf->kafka.dead_letter, -1, in->key,
                                in->keylen, dl.value, dl.len, 0, &h, dead_letter_done, op,
                                err, sizeof(err)))
        dead_letter_park(op, err);
}

/* Sends the parked dead letters again (they park again if they fail). */
static void dead_letter_retry(struct sl_pipeline *pl) {
    struct dl_op *op = pl->parked;
    pl->parked = NULL;
    while (op) {
        struct dl_op *next = op->next;
        dead_letter_send(op);
        op = next;
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

/* Pushes the copy of context table idx that the trace shows: its
 * variables (input only when with_input), kafka without the timestamp. */
static void push_traced(lua_State *L, int idx, bool with_input) {
    lua_newtable(L);                                         /* t */
    lua_pushnil(L);                                          /* t nil */
    while (lua_next(L, idx)) {                               /* t k v */
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k || (!with_input && !strcmp(k, "input"))) {
            lua_pop(L, 1);
            continue;
        }
        if (!strcmp(k, "kafka") && lua_istable(L, -1)) {
            int kt = lua_gettop(L);
            lua_newtable(L);                                 /* t k v v' */
            lua_pushnil(L);
            while (lua_next(L, kt)) {                        /* t k v v' kk kv */
                if (lua_type(L, -2) == LUA_TSTRING && !strcmp(lua_tostring(L, -2), "timestamp")) {
                    lua_pop(L, 1);
                    continue;
                }
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, -4);                           /* t k v v' kk */
            }
            lua_remove(L, -2);                               /* t k v' */
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);                                   /* t k k v */
        lua_rawset(L, -4);                                   /* t k */
    }
}

/* Traces the context ref after step: {"ctx":...}, or with reason the
 * context it dropped, input included: {"filtered":REASON,"ctx":...}. */
static void trace_ctx(struct record *rec, const char *part, const char *step, int ref,
                      const char *reason) {
    if (!rec->pl->conf.trace) return;
    lua_State *L = sl_rules_state(rec->rules);
    struct sl_buf q = {0};
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);                  /* ctx */
    if (!lua_istable(L, -1)) {                               /* a rejected record */
        lua_pop(L, 1);
        lua_newtable(L);
    }
    push_traced(L, lua_gettop(L), reason != NULL);           /* ctx t */
    lua_remove(L, -2);                                       /* t */
    if (reason) sl_step_json_str(L, &q, reason, strlen(reason));
    trace_top(rec, part, step, "ctx", reason ? "filtered" : NULL, sl_buf_cstr(&q));
    sl_buf_free(&q);
}

/* Counts and traces a context a step filtered out. */
static void filtered(struct ctx *c, struct step *s, const char *reason) {
    count_filtered(s, reason);
    trace_ctx(c->rec, c->part, s->name, c->pub.ref, reason);
}

/* version="<rules version>" for the errors counted per rules version. */
static const char *version_label(const struct sl_rules *r) {
    static char label[64];
    snprintf(label, sizeof(label), "version=\"%s\"", sl_rules_version(r));
    return label;
}

/* ==================== Routing ==================== */

/* Writes "<part>.<k>" into dst (size bytes, cut as snprintf cuts): the
 * name of a split record's k-th context, made per context without printf. */
static void part_child(char *dst, size_t size, const char *part, size_t k) {
    char tail[24];
    size_t nt = sizeof(tail);
    do tail[--nt] = (char)('0' + k % 10); while (k /= 10);
    tail[--nt] = '.';
    size_t n = strnlen(part, size - 1), m = sizeof(tail) - nt;
    memcpy(dst, part, n);
    if (m > size - 1 - n) m = size - 1 - n;
    memcpy(dst + n, tail + nt, m);
    dst[n + m] = '\0';
}

/* One context in, several out: each continues after the step, in order.
 * The record stays alive until the last one ends. */
static void fan_out(struct ctx *c, struct step *s, const int *from, size_t n) {
    struct record *rec = c->rec;
    int *refs = sl_malloc((n + 1) * sizeof(int));  /* from is the step's scratch */
    memcpy(refs, from, n * sizeof(int));
    rec->pending += (int)n;
    char (*parts)[sizeof(c->part)] = sl_malloc((n + 1) * sizeof(*parts));
    for (size_t i = 0; i < n; i++) {
        part_child(parts[i], sizeof(parts[i]), c->part, i + 1);
        if (!rec->in->restore) {
            count_out(s);
            trace_ctx(rec, parts[i], s->name, refs[i], NULL);
        }
    }
    size_t next = c->pub.step + 1;
    ctx_finish(c);           /* the record is still held by the children */
    for (size_t i = 0; i < n; i++) run(ctx_new(rec, refs[i], next, parts[i]));
    free(parts);
    free(refs);
}

/* Keeps the variables of c, leaving its step, for a reload's canary. A
 * context whose variables do not encode is not kept. */
static void sample(struct ctx *c) {
    struct sl_pipeline *pl = c->rec->pl;
    lua_State *L = sl_rules_state(c->rec->rules);
    char err[256];
    sl_buf_reset(&pl->buf);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->pub.ref);         /* ctx */
    if (lua_istable(L, -1) && !sl_step_encode_vars(L, lua_gettop(L), &pl->buf, err, sizeof(err)))
        sl_canary_keep_ctx(pl->conf.canary, c->pub.step, c->rec->in, pl->buf.data, pl->buf.len);
    lua_pop(L, 1);
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
        if (!rec->in->restore) {
            count_out(s);
            if (s->kind->flags & SL_STEP_SINK) rec->sunk = true;
            else trace_ctx(rec, c->part, s->name, c->pub.ref, NULL);
            if (s->sample && sl_canary_wants(pl->conf.canary, c->pub.step)) sample(c);
        }
        c->pub.step++;
        return true;
    case SL_STEP_FILTERED:
        if (!rec->in->restore) filtered(c, s, res->reason);
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
        sl_metrics_inc("sluice_rules_errors_total", version_label(rec->rules), 1);
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
        if (!rec->in->restore) count_step_at(&s->m.in, s->name, "sluice_step_in_total");
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
    struct record *rec = sl_pool_get(&record_pool);
    rec->pl = pl;
    rec->in = in;
    rec->rules = pl->rules;
    sl_rules_retain(rec->rules);
    rec->pending = 1;
    rec->spent = 0;
    rec->released = false;
    rec->seq = ++trace_seq;
    rec->next = pl->live;
    if (pl->live) pl->live->prev = rec;
    pl->live = rec;
    pl->inflight++;
    if (!pl->records_in) pl->records_in = sl_metrics_counter("sluice_records_in_total", NULL);
    sl_metrics_add(pl->records_in, 1);
    return rec;
}

/* What building a context needs, made once per VM and kept in a registry
 * table (SL_REG_CTX_KIT): the function that builds it, and the last
 * record's topic name as a string. */
enum { KIT_MAKE = 1, KIT_TOPIC, KIT_N = KIT_TOPIC };

/* The context of a record, built in Lua: the JIT compiles the table
 * constructors (templates whose keys are interned once), where building
 * the tables through the C API took about 25 calls. Room for 8 members, as
 * steps add their variables. */
static const char ctx_maker[] =
    "local ok, new = pcall(require, 'table.new')\n"
    "if not ok then new = function() return {} end end\n"
    "return function(input, topic, partition, offset, timestamp, key)\n"
    "  local ctx = new(0, 8)\n"
    "  ctx.input = input\n"
    "  ctx.kafka = { topic = topic, partition = partition, offset = offset,\n"
    "                timestamp = timestamp, key = key }\n"
    "  return ctx\n"
    "end\n";

/* Pushes the kit, made on first use. */
static void push_ctx_kit(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, SL_REG_CTX_KIT);
    if (lua_istable(L, -1)) return;
    lua_pop(L, 1);
    lua_createtable(L, KIT_N, 0);                              /* kit */
    if (luaL_loadbuffer(L, ctx_maker, sizeof(ctx_maker) - 1, "=sluice.context"))
        lua_error(L);                                          /* our own code: cannot fail */
    lua_call(L, 0, 1);                                         /* kit make */
    lua_rawseti(L, -2, KIT_MAKE);
    lua_pushvalue(L, -1);
    lua_rawseti(L, LUA_REGISTRYINDEX, SL_REG_CTX_KIT);
}

/* Pushes topic as a Lua string: the one the kit (at kit_idx) keeps for the
 * last record's topic when it is the same (a job reads one topic, or a
 * few), without hashing the name again. */
static void push_topic(lua_State *L, int kit_idx, const char *topic) {
    size_t n;
    lua_rawgeti(L, kit_idx, KIT_TOPIC);                        /* s? */
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s && !strncmp(s, topic, n) && topic[n] == '\0') return;
    lua_pop(L, 1);
    lua_pushstring(L, topic);                                  /* s */
    lua_pushvalue(L, -1);
    lua_rawseti(L, kit_idx, KIT_TOPIC);
}

int sl_pipeline_push_ctx(lua_State *L, const struct sl_input *in, char *err, size_t errlen) {
    int ret = SL_OK;
    push_ctx_kit(L);                                           /* kit */
    int kit = lua_gettop(L);
    lua_rawgeti(L, kit, KIT_MAKE);                             /* kit make */
    if (!in->value) lua_pushlightuserdata(L, NULL);
    else if (sl_lazy_push(L, in->value, in->len, err, errlen)) { /* parsed once, read lazily */
        lua_pushlstring(L, in->value, in->len);                /* kit make input */
        ret = SL_ERR;
    }
    push_topic(L, kit, in->topic ? in->topic : "");
    lua_pushinteger(L, in->partition);
    lua_pushnumber(L, (lua_Number)in->offset);
    lua_pushnumber(L, (lua_Number)in->timestamp);
    if (in->key) lua_pushlstring(L, in->key, in->keylen);
    else lua_pushlightuserdata(L, NULL);                       /* kit make input topic p o t k */
    lua_call(L, 6, 1);                                         /* kit ctx */
    lua_remove(L, kit);                                        /* ctx */
    return ret;
}

/* Builds the record's context table, counting and tracing a value that is
 * not JSON. */
static int make_ctx(struct record *rec) {
    lua_State *L = sl_rules_state(rec->rules);
    struct sl_input *in = rec->in;
    char err[256];

    if (sl_pipeline_push_ctx(L, in, err, sizeof(err))) {      /* ctx */
        sl_metrics_inc("sluice_input_not_json_total", NULL, 1);
        if (rec->pl->conf.on_not_json) rec->pl->conf.on_not_json(rec->pl->conf.arg, in, err);
        if (rec->pl->conf.trace) {
            char line[32];
            lua_pushstring(L, err);                            /* ctx err */
            snprintf(line, sizeof(line), "%lld", (long long)in->line);
            trace_top(rec, "", NULL, "not_json", in->line ? "line" : NULL, line);
        }
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void sl_pipeline_push(struct sl_pipeline *pl, struct sl_input *in) {
    struct record *rec = record_new(pl, in);
    run(ctx_new(rec, make_ctx(rec), 0, ""));
}

void sl_pipeline_reject(struct sl_pipeline *pl, struct sl_input *in,
                        const char *step, const char *why) {
    struct record *rec = record_new(pl, in);
    dead_letter(ctx_new(rec, LUA_NOREF, 0, ""), step, why, NULL);
}

/* ==================== Pipeline ==================== */

struct sl_pipeline *sl_pipeline_create(const struct sl_pipeline_conf *conf,
                                       struct sl_rules *rules) {
    struct sl_pipeline *pl = sl_calloc(1, sizeof(*pl));
    pl->conf = *conf;
    pl->cf = conf->cf;
    pl->rules = rules;     /* ownership moves to the pipeline */
    sl_metrics_counter("sluice_rules_errors_total", version_label(rules));
    pl->latency = sl_metrics_histogram("sluice_end_to_end_seconds", NULL, latency_bounds,
                                       sizeof(latency_bounds) / sizeof(latency_bounds[0]));
    pl->last_restore = -1;
    pl->nsteps = pl->cf->nsteps;
    pl->steps = sl_calloc(pl->nsteps + 1, sizeof(*pl->steps));
    for (size_t i = 0; i < pl->nsteps; i++) {
        const struct sl_step_conf *sc = &pl->cf->steps[i];
        struct step *s = &pl->steps[i];
        assert(sc->kind && (unsigned)sc->kind->type < SL_STEP_MAX_KINDS);
        struct sl_step_env env = {
            .cf = pl->cf, .index = i, .producer = conf->producer, .store = conf->store,
            .base = conf->base, .stubs = conf->stubs, .nstubs = conf->nstubs,
            .shared = &pl->shared[sc->kind->type],
        };
        s->kind = sc->kind;
        s->name = sc->name;
        s->state = s->kind->create(&env);
        /* Every step's counters exist from the start, at 0, so a dashboard's
         * rate() has a series; its place lets `sluice counts` keep the order. */
        char labels[160];
        snprintf(labels, sizeof(labels), "step=\"%s\"", s->name);
        sl_metrics_set("sluice_step_position", labels, (double)i);
        s->m.in = sl_metrics_counter("sluice_step_in_total", labels);
        s->m.out = sl_metrics_counter("sluice_step_out_total", labels);
        s->m.errors = sl_metrics_counter("sluice_step_errors_total", labels);
        sl_metrics_counter("sluice_step_dead_letters_total", labels);
        if (s->kind->history) pl->last_restore = (int)i;
        /* A lua step before the next step that holds a context: the canary
         * can run it on contexts that left this one. */
        if (conf->canary && sl_step_holds(sc))
            for (size_t k = i + 1; k < pl->nsteps && !sl_step_holds(&pl->cf->steps[k]); k++)
                if (pl->cf->steps[k].type == SL_STEP_LUA) s->sample = true;
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
        sl_pool_put(&ctx_pool, c);
    }
    /* Contexts of these records may still be referenced by queued produce
     * reports; the producer is destroyed after us with its reports muted. */
    while (pl->live) {
        struct record *rec = pl->live;
        pl->live = rec->next;
        if (pl->conf.on_drop) pl->conf.on_drop(pl->conf.arg, rec->in);
        sl_rules_release(rec->rules);
        sl_pool_put(&record_pool, rec);
    }
    while (pl->parked) {
        struct dl_op *op = pl->parked;
        pl->parked = op->next;
        free(op->c);
        free(op->step);
        free(op->error);
        free(op->extra);
        free(op);
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
    sl_metrics_counter("sluice_rules_errors_total", version_label(rules));
    sl_rules_release(old);  /* closed now, or when its last record ends */
}

int sl_pipeline_reload_files(struct sl_pipeline *pl, char *err, size_t errlen) {
    int ret = SL_OK;
    char why[SL_ERRLEN];
    for (size_t i = 0; i < pl->nsteps; i++) {
        const struct sl_step_kind *k = pl->steps[i].kind;
        if (!k->reload || !k->reload(pl->steps[i].state, why, sizeof(why))) continue;
        if (ret == SL_OK) sl_errf(err, errlen, "%s", why);
        else sl_log(SL_LOG_ERROR, "pipeline", "reload: %s", why);
        ret = SL_ERR;
    }
    return ret;
}

struct sl_rules *sl_pipeline_rules(const struct sl_pipeline *pl) { return pl->rules; }

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
    dead_letter_retry(pl);
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
