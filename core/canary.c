/* canary.c -- a reload's sample run (see canary.h). */
#define _GNU_SOURCE
#include "canary.h"
#include "json.h"
#include "sl.h"
#include "step.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* ==================== The last records ==================== */

/* A kept record: its key, then its value, then (a context sampled after a
 * step) the JSON object of its variables, in buf. */
struct slot {
    char topic[256];         /* Kafka topic names are at most 249 bytes */
    int32_t partition;
    int64_t offset, timestamp;
    char *buf;               /* key bytes, value bytes, vars bytes */
    size_t cap;              /* bytes allocated for buf */
    size_t keylen, len, varslen;
    bool has_key, has_value;
    bool used;
};

/* The last records kept at one point: the input (step SIZE_MAX) or the
 * contexts leaving one step. */
struct ring {
    struct slot *slots;      /* a ring of n */
    size_t n;
    size_t next;             /* the slot the next record goes to (the oldest) */
    size_t bytes;            /* sum of the slots' cap */
    size_t step;             /* SIZE_MAX: input records; else the step they left */
    uint64_t seen;           /* contexts offered (sl_canary_wants) */
};

struct sl_canary {
    struct ring in;          /* the input records */
    struct ring *after;      /* contexts sampled after steps, by first use */
    size_t nafter;
    size_t last, max_bytes;  /* each ring's bounds */
};

static void ring_init(struct ring *r, size_t n, size_t step) {
    r->slots = sl_calloc(n, sizeof(*r->slots));
    r->n = n;
    r->step = step;
}

static void ring_free(struct ring *r) {
    for (size_t i = 0; i < r->n; i++) free(r->slots[i].buf);
    free(r->slots);
}

struct sl_canary *sl_canary_create(size_t last, size_t max_bytes) {
    if (!last) return NULL;
    struct sl_canary *c = sl_calloc(1, sizeof(*c));
    ring_init(&c->in, last, SIZE_MAX);
    c->last = last;
    c->max_bytes = max_bytes;
    return c;
}

void sl_canary_destroy(struct sl_canary *c) {
    if (!c) return;
    ring_free(&c->in);
    for (size_t i = 0; i < c->nafter; i++) ring_free(&c->after[i]);
    free(c->after);
    free(c);
}

static void slot_free(struct ring *r, struct slot *s) {
    r->bytes -= s->cap;
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
    s->used = false;
}

/* Keeps in (and vars) in r's oldest slot, within max_bytes. */
static void ring_keep(struct ring *r, size_t max_bytes, const struct sl_input *in,
                      const char *vars, size_t varslen) {
    size_t keylen = in->key ? in->keylen : 0, len = in->value ? in->len : 0;
    size_t need = keylen + len + varslen;
    if (need > max_bytes) return;
    struct slot *s = &r->slots[r->next];
    r->next = (r->next + 1) % r->n;
    if (s->cap < need) {
        size_t cap = need < 256 ? 256 : need + need / 4;
        if (cap > max_bytes) cap = need;
        r->bytes += cap - s->cap;
        s->buf = sl_realloc(s->buf, cap);
        s->cap = cap;
    }
    /* Over the bound: the oldest records give their memory back. */
    for (size_t i = 0; r->bytes > max_bytes && i < r->n; i++) {
        struct slot *o = &r->slots[(r->next + i) % r->n];
        if (o != s && o->cap) slot_free(r, o);
    }
    sl_strcpy_cut(s->topic, sizeof(s->topic), in->topic ? in->topic : "");
    s->partition = in->partition;
    s->offset = in->offset;
    s->timestamp = in->timestamp;
    s->has_key = in->key != NULL;
    s->has_value = in->value != NULL;
    s->keylen = keylen;
    s->len = len;
    s->varslen = varslen;
    if (keylen) memcpy(s->buf, in->key, keylen);
    if (len) memcpy(s->buf + keylen, in->value, len);
    if (varslen) memcpy(s->buf + keylen + len, vars, varslen);
    s->used = true;
}

void sl_canary_keep(struct sl_canary *c, const struct sl_input *in) {
    if (c) ring_keep(&c->in, c->max_bytes, in, NULL, 0);
}

static size_t ring_size(const struct ring *r) {
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) n += r->slots[i].used;
    return n;
}

size_t sl_canary_size(const struct sl_canary *c) {
    return c ? ring_size(&c->in) : 0;
}

/* The index in c->after of the ring of contexts leaving step; nafter when
 * there is none. */
static size_t after_index(const struct sl_canary *c, size_t step) {
    size_t i = 0;
    while (i < c->nafter && c->after[i].step != step) i++;
    return i;
}

/* The ring of contexts leaving step, made on first use. */
static struct ring *after_ring(struct sl_canary *c, size_t step) {
    size_t i = after_index(c, step);
    if (i < c->nafter) return &c->after[i];
    c->after = sl_realloc(c->after, (c->nafter + 1) * sizeof(*c->after));
    struct ring *r = &c->after[c->nafter++];
    memset(r, 0, sizeof(*r));
    ring_init(r, c->last, step);
    return r;
}

bool sl_canary_wants(struct sl_canary *c, size_t step) {
    if (!c) return false;
    struct ring *r = after_ring(c, step);
    uint64_t k = r->seen++;
    return k < r->n || k % SL_CANARY_SAMPLE_EVERY == 0;
}

void sl_canary_keep_ctx(struct sl_canary *c, size_t step, const struct sl_input *in,
                        const char *vars, size_t varslen) {
    if (c) ring_keep(after_ring(c, step), c->max_bytes, in, vars, varslen);
}

size_t sl_canary_size_after(const struct sl_canary *c, size_t step) {
    size_t i = c ? after_index(c, step) : 0;
    return c && i < c->nafter ? ring_size(&c->after[i]) : 0;
}

/* ==================== Running a record ==================== */

/* How a record came out of one VM. */
enum outcome { PASSED, FILTERED, RAISED };

struct result {
    enum outcome o;
    size_t step;             /* FILTERED, RAISED: the step */
    char reason[64];         /* FILTERED */
    char error[512];         /* RAISED: the error's first line */
    size_t stopped;          /* step a context stopped at (nsteps: none) */
    bool any_passed, any_filtered;
};

/* Notes the first error of a context: it raised e at step i (its first
 * line is kept). */
static void raised_at(struct result *res, size_t i, const char *e) {
    if (res->o == RAISED) return;
    res->o = RAISED;
    res->step = i;
    snprintf(res->error, sizeof(res->error), "%.*s", (int)strcspn(e, "\n"), e);
}

/* Runs the request rule of step i (an http or MLflow model step: what it
 * would send, never sent) on context ref. False when the rule raised or
 * filtered the context, noted in res as a lua step's would be. */
static bool run_request(struct sl_rules *r, size_t i, int ref, const struct sl_input *in,
                        struct result *res) {
    lua_State *L = sl_rules_state(r);
    int top = lua_gettop(L);
    bool ok = false;
    sl_rules_push_fn(r, i, 0);                            /* fn params */
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);               /* fn params ctx */
    lua_insert(L, -2);                                    /* fn ctx params */
    if (sl_rules_pcall(r, i, 2, 2, in)) {                 /* err */
        const char *e = sl_rules_error_message(L);
        raised_at(res, i, e ? e : "(error object)");
    } else if (lua_isnil(L, -2)) {                        /* nil reason */
        if (!res->any_filtered) {
            const char *why = lua_tostring(L, -1);
            res->step = i;
            snprintf(res->reason, sizeof(res->reason), "%s", why && *why ? why : "no_request");
        }
        res->any_filtered = true;
    } else {
        ok = true;
    }
    lua_settop(L, top);
    return ok;
}

/* Runs context ref from step `from` on through the lua steps. A sink step
 * passes it on; any other step (window, model, http) would add a variable
 * the canary cannot make, so the context stops there, as passed, once the
 * step's request rule (http, MLflow model) took it: the lua steps after it
 * run on contexts sampled as they left it (judge_ring). Takes ref. */
static void walk(struct sl_rules *r, const struct sl_config *cf, int ref, size_t from,
                 const struct sl_input *in, const char *what, struct sl_rules_out *out,
                 struct result *res) {
    lua_State *L = sl_rules_state(r);
    for (size_t i = from; i < cf->nsteps; i++) {
        if (sl_step_holds(&cf->steps[i])) {
            if (cf->steps[i].rule_fn[0] && !run_request(r, i, ref, in, res)) {
                luaL_unref(L, LUA_REGISTRYINDEX, ref);
                return;
            }
            if (i < res->stopped) res->stopped = i;
            break;
        }
        if (cf->steps[i].type != SL_STEP_LUA) continue;     /* a sink passes it on */
        switch (sl_rules_call(r, i, &ref, in, what, out)) {
        case SL_RULES_NEXT:
            continue;
        case SL_RULES_FILTERED:
            if (!res->any_filtered) {
                res->step = i;
                snprintf(res->reason, sizeof(res->reason), "%s", out->reason);
            }
            res->any_filtered = true;
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            return;
        case SL_RULES_MANY: {
            size_t n = out->nrefs;
            int *refs = sl_malloc((n + 1) * sizeof(int));   /* out is reused below */
            memcpy(refs, out->refs, n * sizeof(int));
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            for (size_t k = 0; k < n; k++) walk(r, cf, refs[k], i + 1, in, what, out, res);
            free(refs);
            return;
        }
        case SL_RULES_ERROR:
            raised_at(res, i, sl_buf_cstr(&out->error));
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            return;
        }
    }
    res->any_passed = true;
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* One sample: a record and where its contexts start. */
struct sample {
    const struct sl_input *in;
    const char *vars;        /* the JSON object of a sampled context's variables, or NULL */
    size_t varslen;
    size_t from;             /* the first step it runs */
    const char *where;       /* the record's name in the summary */
};

/* Pushes the context a sample starts with: the record's, with the sampled
 * variables set in it. False (nothing pushed) when they do not decode. */
static bool push_sample(lua_State *L, const struct sample *sm) {
    char err[256];
    sl_pipeline_push_ctx(L, sm->in, err, sizeof(err));    /* ctx (input raw if not JSON) */
    if (!sm->vars) return true;
    if (sl_json_decode(L, sm->vars, sm->varslen, err, sizeof(err))) {   /* pushes nothing */
        lua_pop(L, 1);
        return false;
    }
    if (!lua_istable(L, -1)) {                            /* ctx vars */
        lua_pop(L, 2);
        return false;
    }
    lua_pushnil(L);                                       /* ctx vars nil */
    while (lua_next(L, -2)) {                             /* ctx vars k v */
        lua_pushvalue(L, -2);
        lua_insert(L, -2);                                /* ctx vars k k v */
        lua_rawset(L, -5);                                /* ctx vars k */
    }
    lua_pop(L, 1);                                        /* ctx */
    return true;
}

/* Runs one sample through r's lua steps: raised if any of its contexts
 * raised, else passed if any reached the end, else filtered. False when a
 * sampled context's variables do not decode (not judged). */
static bool run_record(struct sl_rules *r, const struct sl_config *cf, const struct sample *sm,
                       struct sl_rules_out *out, struct result *res) {
    lua_State *L = sl_rules_state(r);
    memset(res, 0, sizeof(*res));
    res->stopped = cf->nsteps;
    if (!push_sample(L, sm)) return false;
    walk(r, cf, luaL_ref(L, LUA_REGISTRYINDEX), sm->from, sm->in, sm->where, out, res);
    if (res->o != RAISED) res->o = res->any_passed ? PASSED : FILTERED;
    return true;
}

/* ==================== Judging ==================== */

/* Per step: records the new rules newly raised on or filtered. */
struct tally {
    size_t raised, filtered;
    char reason[64];         /* the first reason it newly filtered with */
};

struct judge {
    struct sl_rules *old, *new_rules;
    const struct sl_config *cf;
    struct sl_rules_out out;
    struct tally *steps;     /* per config step */
    size_t passed, filtered, raised; /* the new rules' outcomes */
    size_t held, held_at;            /* records whose contexts stopped at a step the canary
                                        does not run; the first such step */
    size_t *sampled;                 /* per config step: contexts sampled after it, judged */
    char first_error[768];   /* "<error> (record <where>)" */
    int64_t deadline;        /* monotonic ms */
    bool stopped;            /* the time ran out */
    struct sl_canary_verdict *v;
};

/* Runs one sample in both VMs and tallies the difference. */
static void judge_one(struct judge *j, const struct sample *sm) {
    struct result o = {.o = PASSED}, n;
    if (sl_mono_ms() > j->deadline) {
        j->stopped = true;
        return;
    }
    if (j->old && !run_record(j->old, j->cf, sm, &j->out, &o)) return;
    if (!run_record(j->new_rules, j->cf, sm, &j->out, &n)) return;
    j->v->records++;
    if (sm->from) j->sampled[sm->from - 1]++;
    else if (n.stopped < j->cf->nsteps && (!j->held++ || n.stopped < j->held_at))
        j->held_at = n.stopped;
    if (n.o == PASSED) j->passed++;
    else if (n.o == FILTERED) j->filtered++;
    else j->raised++;
    if (n.o == RAISED && o.o != RAISED) {
        if (!j->v->raised++)
            snprintf(j->first_error, sizeof(j->first_error), "%s (record %s)", n.error, sm->where);
        j->steps[n.step].raised++;
    } else if (j->old && n.o == FILTERED && o.o == PASSED) {
        struct tally *t = &j->steps[n.step];
        if (!t->filtered++) snprintf(t->reason, sizeof(t->reason), "%s", n.reason);
        j->v->filtered++;
    }
}

/* Runs the lines of file as records of the first input topic. */
static int judge_file(struct judge *j, const char *file, char *err, size_t errlen) {
    FILE *f = fopen(file, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int64_t lineno = 0;
    if (!f) {
        sl_errf(err, errlen, "rules.canary %s: %s", file, strerror(errno));
        return SL_ERR;
    }
    while (!j->stopped && lineno < SL_CANARY_MAX_LINES && (n = getline(&line, &cap, f)) >= 0) {
        char where[320];
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        struct sl_input in = {
            .topic = j->cf->kafka.input[0], .offset = lineno - 1, .timestamp = sl_now_ms(),
            .value = line, .len = (size_t)n, .line = lineno,
        };
        snprintf(where, sizeof(where), "%s:%lld", file, (long long)lineno);
        judge_one(j, &(struct sample){.in = &in, .where = where});
        j->v->from_file += !j->stopped;
    }
    free(line);
    fclose(f);
    return SL_OK;
}

/* Runs the records of ring r, oldest first: input records from the first
 * step, sampled contexts from the step after the one they left. */
static void judge_ring(struct judge *j, const struct ring *r) {
    bool after = r->step != SIZE_MAX;
    if (after && r->step + 1 >= j->cf->nsteps) return;
    for (size_t i = 0; i < r->n && !j->stopped; i++) {
        const struct slot *s = &r->slots[(r->next + i) % r->n];
        char where[400];
        if (!s->used) continue;
        struct sl_input in = {
            .topic = s->topic, .partition = s->partition, .offset = s->offset,
            .timestamp = s->timestamp, .key = s->has_key ? s->buf : NULL, .keylen = s->keylen,
            .value = s->has_value ? s->buf + s->keylen : NULL, .len = s->len,
        };
        int n = snprintf(where, sizeof(where), "%s/%d/%lld", s->topic, (int)s->partition,
                         (long long)s->offset);
        if (after && n > 0 && (size_t)n < sizeof(where))
            snprintf(where + n, sizeof(where) - (size_t)n, " after step %s",
                     j->cf->steps[r->step].name);
        judge_one(j, &(struct sample){.in = &in, .where = where, .from = after ? r->step + 1 : 0,
                                      .vars = after ? s->buf + s->keylen + s->len : NULL,
                                      .varslen = s->varslen});
    }
}

/* Runs the kept records, then the contexts sampled after steps. */
static void judge_kept(struct judge *j, const struct sl_canary *c) {
    if (!c) return;
    judge_ring(j, &c->in);
    for (size_t i = 0; i < c->nafter; i++) judge_ring(j, &c->after[i]);
}

/* Appends "step S: n, ..." for the steps with a count of what. */
static void list_steps(struct sl_buf *b, const struct judge *j, bool raised) {
    size_t k = 0;
    for (size_t i = 0; i < j->cf->nsteps; i++) {
        const struct tally *t = &j->steps[i];
        size_t n = raised ? t->raised : t->filtered;
        if (!n) continue;
        sl_buf_printf(b, "%sstep %s: %zu", k++ ? ", " : "", j->cf->steps[i].name, n);
        if (!raised) sl_buf_printf(b, " with reason %s", t->reason);
    }
}

static void verdict(struct judge *j) {
    struct sl_canary_verdict *v = j->v;
    struct sl_buf b = {0};
    size_t pct = (v->records * (size_t)j->cf->rules.canary_slack_pct) / 100;
    v->allowed = j->cf->rules.canary_slack > pct ? j->cf->rules.canary_slack : pct;
    if (v->raised) {
        sl_buf_printf(&b, "the new rules raise on %zu of %zu sample record(s)%s (", v->raised,
                      v->records, j->old ? " that the old rules handled" : "");
        list_steps(&b, j, true);
        sl_buf_printf(&b, "); first: %s", j->first_error);
        v->refused = true;
    } else if (j->old && v->filtered > v->allowed) {
        sl_buf_printf(&b, "the new rules filter %zu of %zu sample record(s) that the old rules "
                      "passed, more than the %zu allowed by rules.canary_filter_slack %zu and "
                      "rules.canary_filter_slack_pct %d%% (", v->filtered, v->records,
                      v->allowed, j->cf->rules.canary_slack, j->cf->rules.canary_slack_pct);
        list_steps(&b, j, false);
        sl_buf_adds(&b, ")");
        v->refused = true;
    } else {
        sl_buf_printf(&b, "%zu sample record(s) (%zu from the canary file): the new rules pass "
                      "%zu, filter %zu, raise on %zu", v->records, v->from_file, j->passed,
                      j->filtered, j->raised);
        if (j->old) sl_buf_printf(&b, "; %zu newly filtered (%zu allowed)", v->filtered,
                                  v->allowed);
    }
    if (j->held) {
        /* The lua steps after the first step that held a record: checked
         * when contexts sampled after the step holding them before ran. */
        size_t later = 0, checked = 0, contexts = 0, holder = j->held_at;
        for (size_t i = j->held_at + 1; i < j->cf->nsteps; i++) {
            if (sl_step_holds(&j->cf->steps[i])) holder = i;
            if (j->cf->steps[i].type != SL_STEP_LUA) continue;
            later++;
            checked += j->sampled[holder] > 0;
        }
        for (size_t i = j->held_at; i < j->cf->nsteps; i++) contexts += j->sampled[i];
        const struct sl_step_conf *at = &j->cf->steps[j->held_at];
        sl_buf_printf(&b, " [%zu record(s) stopped at step %s (%s), which the canary does not run%s",
                      j->held, at->name, at->kind->name,
                      at->rule_fn[0] ? " (its request rule ran)" : "");
        if (checked) sl_buf_printf(&b, "; %zu context(s) sampled after such steps ran the %zu lua "
                                   "step(s) after it", contexts, checked);
        if (later > checked)
            sl_buf_printf(&b, "%s the %zu lua step(s) after it %sare not checked (sluice test "
                          "--stub checks them)", checked ? ";" : ":", later - checked,
                          checked ? "that no sampled context reached " : "");
        sl_buf_adds(&b, "]");
    }
    if (j->stopped)
        sl_buf_printf(&b, " [the sample was cut at %d ms: records after that were not run]",
                      SL_CANARY_MAX_MS);
    snprintf(v->summary, sizeof(v->summary), "%s", sl_buf_cstr(&b));
    sl_buf_free(&b);
}

int sl_canary_judge(const struct sl_canary *c, const char *file, struct sl_rules *old,
                    struct sl_rules *new_rules, const struct sl_config *cf,
                    struct sl_canary_verdict *v, char *err, size_t errlen) {
    int ret = SL_ERR;
    struct judge j = {
        .old = old, .new_rules = new_rules, .cf = cf, .v = v,
        .steps = sl_calloc(cf->nsteps + 1, sizeof(*j.steps)),
        .sampled = sl_calloc(cf->nsteps + 1, sizeof(*j.sampled)),
        .deadline = sl_mono_ms() + SL_CANARY_MAX_MS,
    };
    memset(v, 0, sizeof(*v));
    /* Interpreted, where the budget hook always fires: a rule that loops
     * on a sample record is stopped by its budget, never by the watchdog. */
    if (old) sl_rules_jit(old, false);
    sl_rules_jit(new_rules, false);
    if (file && judge_file(&j, file, err, errlen)) goto done;
    judge_kept(&j, c);
    verdict(&j);
    ret = SL_OK;
done:
    if (old) sl_rules_jit(old, true);
    sl_rules_jit(new_rules, true);
    sl_rules_out_free(&j.out);
    free(j.steps);
    free(j.sampled);
    return ret;
}
