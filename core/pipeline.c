/* pipeline.c -- records through steps (see pipeline.h). */
#define _GNU_SOURCE
#include "pipeline.h"
#include "json.h"
#include "metrics.h"
#include "sl.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

struct sl_pipeline {
    struct sl_pipeline_conf conf;
    const struct sl_config *cf;
    struct sl_rules *rules;      /* the VM new records start on */
    size_t inflight;             /* records pushed, not done */
    struct record *live;         /* records in flight, for destroy */
    struct sl_rules_out out;     /* scratch for step results */
    struct sl_buf buf;           /* scratch for encoding */
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

/* A context: one table in the record's VM, at a step. */
struct ctx {
    struct record *rec;
    int ref;
    size_t step;
};

static void run(struct ctx *c);

/* ==================== Helpers ==================== */

static void record_release(struct record *rec) {
    if (--rec->pending > 0) return;
    struct sl_pipeline *pl = rec->pl;
    pl->inflight--;
    if (rec->prev) rec->prev->next = rec->next;
    else pl->live = rec->next;
    if (rec->next) rec->next->prev = rec->prev;
    sl_metrics_inc("sluice_records_done_total", NULL, 1);
    sl_rules_release(rec->rules);
    struct sl_input *in = rec->in;
    free(rec);
    if (pl->conf.on_done) pl->conf.on_done(pl->conf.arg, in);
}

static void ctx_finish(struct ctx *c) {
    struct record *rec = c->rec;
    luaL_unref(sl_rules_state(rec->rules), LUA_REGISTRYINDEX, c->ref);
    free(c);
    record_release(rec);
}

/* Pushes ctx[path] for a dotted path ("product.slug"); nil when absent. */
static void push_path(lua_State *L, int ctx_idx, const char *path) {
    char part[128];
    lua_pushvalue(L, ctx_idx);
    while (*path) {
        size_t n = strcspn(path, ".");
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        snprintf(part, sizeof(part), "%.*s", (int)n, path);
        lua_getfield(L, -1, part);
        lua_remove(L, -2);
        path += n;
        if (*path == '.') path++;
    }
}

/* Encodes the context at idx for the trace: every variable but input. */
static int encode_vars(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen) {
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "input")) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        } else {
            lua_pop(L, 1);
        }
    }
    int rc = sl_json_encode(L, -1, out, err, errlen);
    lua_pop(L, 1);
    return rc;
}

static void trace_line(struct record *rec, const char *step, const char *what,
                       const char *json_value) {
    FILE *t = rec->pl->conf.trace;
    if (!t) return;
    fprintf(t, "{\"record\":%ld,\"step\":\"%s\",\"%s\":%s}\n", rec->seq, step, what, json_value);
}

/* JSON string literal of s into b (s must be valid UTF-8 or it is replaced). */
static void json_str(lua_State *L, struct sl_buf *b, const char *s, size_t n) {
    char err[64];
    lua_pushlstring(L, s, n);
    if (sl_json_encode(L, -1, b, err, sizeof(err))) sl_buf_adds(b, "\"(not UTF-8)\"");
    lua_pop(L, 1);
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
static void dead_letter(struct ctx *c, const char *step, const char *error) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    struct sl_input *in = rec->in;
    lua_State *L = sl_rules_state(rec->rules);
    struct sl_buf *b = &pl->buf;
    char err[SL_ERRLEN];

    sl_metrics_inc("sluice_dead_letters_total", NULL, 1);
    sl_buf_reset(b);
    sl_buf_adds(b, "{\"source\":{\"topic\":");
    json_str(L, b, in->topic ? in->topic : "", in->topic ? strlen(in->topic) : 0);
    sl_buf_printf(b, ",\"partition\":%d,\"offset\":%lld,\"timestamp\":%lld,\"key\":",
                  in->partition, (long long)in->offset, (long long)in->timestamp);
    if (in->key) json_str(L, b, in->key, in->keylen);
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
    json_str(L, b, step, strlen(step));
    sl_buf_adds(b, ",\"error\":");
    json_str(L, b, error, strlen(error));
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

/* ==================== Steps ==================== */

static void kafka_done(void *opaque, const char *err, int32_t p, int64_t o) {
    struct ctx *c = opaque;
    (void)p; (void)o;
    if (err) {
        struct sl_pipeline *pl = c->rec->pl;
        char why[256];
        snprintf(why, sizeof(why), "step %s: %s", pl->cf->steps[c->step].name, err);
        pl->conf.on_fatal(pl->conf.arg, why);
        return;
    }
    c->step++;
    run(c);
}

/* Produces the step's fields of the context. Returns 1 when the context
 * waits for the broker, 0 when it may go on, -1 when it was dead-lettered. */
static int step_kafka(struct ctx *c, const struct sl_step_conf *s) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    lua_State *L = sl_rules_state(rec->rules);
    struct sl_buf *b = &pl->buf;
    char err[SL_ERRLEN];
    const char *key = NULL;
    size_t keylen = 0;
    int top = lua_gettop(L);

    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);          /* ctx */
    int ctx_idx = lua_gettop(L);
    sl_buf_reset(b);
    if (s->nfields) {
        lua_newtable(L);                                 /* ctx value */
        for (size_t i = 0; i < s->nfields; i++) {
            push_path(L, ctx_idx, s->fields[i]);         /* ctx value v */
            lua_setfield(L, -2, s->fields[i]);
        }
        if (sl_json_encode(L, -1, b, err, sizeof(err))) goto bad;
    } else if (encode_vars(L, ctx_idx, b, err, sizeof(err))) {
        goto bad;
    }
    if (s->key_var) {
        push_path(L, ctx_idx, s->key_var);
        if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
            key = lua_tolstring(L, -1, &keylen);          /* stays on the stack */
    }
    if (!pl->conf.producer) {
        struct sl_buf t = {0};
        sl_buf_printf(&t, "{\"topic\":\"%s\",\"key\":", s->topic);
        if (key) json_str(L, &t, key, keylen);
        else sl_buf_adds(&t, "null");
        sl_buf_printf(&t, ",\"value\":%s}", sl_buf_cstr(b));
        trace_line(rec, s->name, "produce", sl_buf_cstr(&t));
        sl_buf_free(&t);
        lua_settop(L, top);
        return 0;
    }
    if (sl_kafka_produce(pl->conf.producer, s->topic, -1, key, keylen, b->data, b->len,
                         0, kafka_done, c, err, sizeof(err))) {
        lua_settop(L, top);
        char why[SL_ERRLEN + 64];
        snprintf(why, sizeof(why), "step %s: %s", s->name, err);
        pl->conf.on_fatal(pl->conf.arg, why);
        return 1;
    }
    lua_settop(L, top);
    return 1;
bad:
    lua_settop(L, top);
    {
        char msg[SL_ERRLEN + 64];
        snprintf(msg, sizeof(msg), "cannot encode the record for topic %s: %s", s->topic, err);
        dead_letter(c, s->name, msg);
    }
    return -1;
}

static void count_step(const char *step, const char *what, const char *reason) {
    char labels[256];
    if (reason) snprintf(labels, sizeof(labels), "step=\"%s\",reason=\"%s\"", step, reason);
    else snprintf(labels, sizeof(labels), "step=\"%s\"", step);
    sl_metrics_inc(what, labels, 1);
}

static void trace_ctx(struct record *rec, const char *step, int ref) {
    if (!rec->pl->conf.trace) return;
    lua_State *L = sl_rules_state(rec->rules);
    char err[256];
    struct sl_buf b = {0};
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (encode_vars(L, lua_gettop(L), &b, err, sizeof(err))) {
        sl_buf_reset(&b);
        json_str(L, &b, err, strlen(err));
        trace_line(rec, step, "unencodable", sl_buf_cstr(&b));
    } else {
        trace_line(rec, step, "ctx", sl_buf_cstr(&b));
    }
    lua_pop(L, 1);
    sl_buf_free(&b);
}

/* Runs the context from its current step until it finishes or waits. */
static void run(struct ctx *c) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    const struct sl_config *cf = pl->cf;
    char what[192];

    while (c->step < cf->nsteps) {
        const struct sl_step_conf *s = &cf->steps[c->step];
        if (s->type == SL_STEP_KAFKA) {
            int r = step_kafka(c, s);
            if (r) return;
            c->step++;
            continue;
        }
        if (s->type != SL_STEP_LUA) {
            dead_letter(c, s->name, "this step type is not available in this build");
            return;
        }
        snprintf(what, sizeof(what), "%s/%d/%lld", rec->in->topic ? rec->in->topic : "-",
                 rec->in->partition, (long long)rec->in->offset);
        struct sl_rules_out *o = &pl->out;
        switch (sl_rules_call(rec->rules, c->step, &c->ref, what, o)) {
        case SL_RULES_NEXT:
            count_step(s->name, "sluice_step_out_total", NULL);
            trace_ctx(rec, s->name, c->ref);
            c->step++;
            break;
        case SL_RULES_FILTERED:
            count_step(s->name, "sluice_filtered_total", o->reason);
            if (pl->conf.trace) {
                char q[80];
                snprintf(q, sizeof(q), "\"%s\"", o->reason);
                trace_line(rec, s->name, "filtered", q);
            }
            ctx_finish(c);
            return;
        case SL_RULES_MANY: {
            /* One context in, several out: each continues after this step,
             * in order. The record stays alive until the last one ends. */
            size_t n = o->nrefs;
            int *refs = sl_malloc((n + 1) * sizeof(int));
            memcpy(refs, o->refs, n * sizeof(int));
            rec->pending += (int)n;
            for (size_t i = 0; i < n; i++) {
                count_step(s->name, "sluice_step_out_total", NULL);
                trace_ctx(rec, s->name, refs[i]);
            }
            size_t next = c->step + 1;
            ctx_finish(c);           /* the record is still held by the children */
            for (size_t i = 0; i < n; i++) {
                struct ctx *k = sl_malloc(sizeof(*k));
                k->rec = rec;
                k->ref = refs[i];
                k->step = next;
                run(k);
            }
            free(refs);
            return;
        }
        case SL_RULES_ERROR:
            count_step(s->name, "sluice_step_errors_total", NULL);
            sl_log(SL_LOG_WARN, "pipeline", "step %s failed on %s: %s", s->name, what,
                   sl_buf_cstr(&o->error));
            dead_letter(c, s->name, sl_buf_cstr(&o->error));
            return;
        }
    }
    ctx_finish(c);
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
    sl_metrics_inc("sluice_records_in_total", NULL, 1);
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
    struct ctx *c = sl_malloc(sizeof(*c));
    c->rec = rec;
    c->step = 0;
    c->ref = make_ctx(rec);
    run(c);
}

void sl_pipeline_reject(struct sl_pipeline *pl, struct sl_input *in,
                        const char *step, const char *why) {
    struct record *rec = record_new(pl, in);
    struct ctx *c = sl_malloc(sizeof(*c));
    c->rec = rec;
    c->step = 0;
    c->ref = LUA_NOREF;
    dead_letter(c, step, why);
}

struct sl_pipeline *sl_pipeline_create(const struct sl_pipeline_conf *conf,
                                       struct sl_rules *rules) {
    struct sl_pipeline *pl = sl_calloc(1, sizeof(*pl));
    pl->conf = *conf;
    pl->cf = conf->cf;
    pl->rules = rules;     /* ownership moves to the pipeline */
    return pl;
}

void sl_pipeline_destroy(struct sl_pipeline *pl) {
    if (!pl) return;
    /* Contexts of these records may still be referenced by queued produce
     * reports; the producer is destroyed after us with its reports muted. */
    while (pl->live) {
        struct record *rec = pl->live;
        pl->live = rec->next;
        if (pl->conf.on_drop) pl->conf.on_drop(pl->conf.arg, rec->in);
        sl_rules_release(rec->rules);
        free(rec);
    }
    sl_rules_release(pl->rules);
    sl_rules_out_free(&pl->out);
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
