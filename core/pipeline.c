/* pipeline.c -- records through steps (see pipeline.h). */
#define _GNU_SOURCE
#include "pipeline.h"
#include "json.h"
#include "metrics.h"
#include "sl.h"
#include "window.h"

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

/* The window state of one input partition: one window per window step. */
struct wpart {
    char *topic;
    int32_t partition;
    struct sl_window **w;        /* per step; NULL for other steps */
    struct sl_window_stats *seen; /* per step: counters already exported */
    int64_t watermark;           /* newest event time seen, ms */
    int64_t watermark_mono;      /* monotonic ms when it was seen */
    struct wpart *next;
};

struct sl_pipeline {
    struct sl_pipeline_conf conf;
    const struct sl_config *cf;
    struct sl_rules *rules;      /* the VM new records start on */
    size_t inflight;             /* records pushed, not done */
    struct record *live;         /* records in flight, for destroy */
    struct sl_rules_out out;     /* scratch for step results */
    struct sl_buf buf;           /* scratch for encoding */
    int last_window;             /* index of the last window step, -1: none */
    struct wpart *wparts;        /* window state per input partition */
    struct sl_value *vals;       /* scratch: one value per aggregation */
    struct sl_value *agg;        /* scratch: aggregation output */
    size_t agg_cap;
    struct step_metrics *sm;     /* per step */
    char ***field_keys;          /* per kafka step: its fields as JSON strings, or NULL */
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

/* The JSON string literals of a kafka step's field names, made once. NULL
 * (err set) when a name cannot be encoded. */
static char **field_keys(struct sl_pipeline *pl, lua_State *L, size_t step, char *err,
                         size_t errlen) {
    const struct sl_step_conf *s = &pl->cf->steps[step];
    if (pl->field_keys[step]) return pl->field_keys[step];
    char **keys = sl_calloc(s->nfields + 1, sizeof(*keys));
    struct sl_buf b = {0};
    for (size_t i = 0; i < s->nfields; i++) {
        sl_buf_reset(&b);
        lua_pushstring(L, s->fields[i]);
        int rc = sl_json_encode(L, -1, &b, err, errlen);
        lua_pop(L, 1);
        if (rc) {
            for (size_t j = 0; j < i; j++) free(keys[j]);
            free(keys);
            sl_buf_free(&b);
            return NULL;
        }
        keys[i] = sl_strdup(sl_buf_cstr(&b));
    }
    sl_buf_free(&b);
    pl->field_keys[step] = keys;
    return keys;
}

/* Appends the JSON object {field: value, ...} of the step's fields to b,
 * straight from the context at ctx_idx: fields that are nil are left out, a
 * field named twice is written once. */
static int encode_fields(struct sl_pipeline *pl, lua_State *L, int ctx_idx, size_t step,
                         struct sl_buf *b, char *err, size_t errlen) {
    const struct sl_step_conf *s = &pl->cf->steps[step];
    char **keys = field_keys(pl, L, step, err, errlen);
    int first = 1;
    if (!keys) return SL_ERR;
    sl_buf_addc(b, '{');
    for (size_t i = 0; i < s->nfields; i++) {
        size_t j = 0;
        while (j < i && strcmp(s->fields[j], s->fields[i])) j++;
        if (j < i) continue;                         /* named before */
        push_path(L, ctx_idx, s->fields[i]);         /* ... v */
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (!first) sl_buf_addc(b, ',');
        first = 0;
        sl_buf_adds(b, keys[i]);
        sl_buf_addc(b, ':');
        int rc = sl_json_encode(L, -1, b, err, errlen);
        lua_pop(L, 1);                               /* ... */
        if (rc) return SL_ERR;
    }
    sl_buf_addc(b, '}');
    return SL_OK;
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
        if (encode_fields(pl, L, ctx_idx, c->step, b, err, sizeof(err))) goto bad;
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
    if (c->step + 1 == pl->cf->nsteps) {
        /* No step reads the context again: free it now rather than when the
         * broker acknowledges (linger plus a round trip later), so records
         * waiting for the sink do not keep their decoded input alive for
         * the garbage collector to traverse. */
        luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
        c->ref = LUA_NOREF;
    }
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

/* The counter what{step=...} of a step, resolved once. */
static void count_step_at(struct sl_metrics_series **at, const char *step, const char *what) {
    if (!*at) {
        char labels[256];
        snprintf(labels, sizeof(labels), "step=\"%s\"", step);
        *at = sl_metrics_counter(what, labels);
    }
    sl_metrics_add(*at, 1);
}

static void count_out(struct sl_pipeline *pl, size_t step) {
    count_step_at(&pl->sm[step].out, pl->cf->steps[step].name, "sluice_step_out_total");
}

/* Counts a filtered context; the first SL_PIPELINE_REASONS reasons of a
 * step keep their counter at hand, later ones are looked up each time. */
static void count_filtered(struct sl_pipeline *pl, size_t step, const char *reason) {
    struct step_metrics *m = &pl->sm[step];
    const char *name = pl->cf->steps[step].name;
    for (size_t i = 0; i < m->nreasons; i++)
        if (!strcmp(m->reasons[i], reason)) {
            sl_metrics_add(m->filtered[i], 1);
            return;
        }
    if (m->nreasons == SL_PIPELINE_REASONS || strlen(reason) >= sizeof(m->reasons[0])) {
        count_step(name, "sluice_filtered_total", reason);
        return;
    }
    char labels[256];
    snprintf(labels, sizeof(labels), "step=\"%s\",reason=\"%s\"", name, reason);
    strcpy(m->reasons[m->nreasons], reason);
    m->filtered[m->nreasons] = sl_metrics_counter("sluice_filtered_total", labels);
    sl_metrics_add(m->filtered[m->nreasons++], 1);
}

/* Counts and traces a context a step filtered out. */
static void filtered(struct ctx *c, size_t step, const char *reason) {
    count_filtered(c->rec->pl, step, reason);
    if (c->rec->pl->conf.trace) {
        char q[80];
        snprintf(q, sizeof(q), "\"%s\"", reason);
        trace_line(c->rec, c->rec->pl->cf->steps[step].name, "filtered", q);
    }
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

/* ==================== Window steps ==================== */

static struct wpart *wpart_get(struct sl_pipeline *pl, const char *topic, int32_t partition) {
    for (struct wpart *p = pl->wparts; p; p = p->next)
        if (p->partition == partition && !strcmp(p->topic, topic)) return p;
    struct wpart *p = sl_calloc(1, sizeof(*p));
    p->topic = sl_strdup(topic);
    p->partition = partition;
    p->w = sl_calloc(pl->cf->nsteps, sizeof(*p->w));
    p->seen = sl_calloc(pl->cf->nsteps, sizeof(*p->seen));
    p->watermark = INT64_MIN;
    p->next = pl->wparts;
    pl->wparts = p;
    return p;
}

/* Adds what window `step` of p bounded or expired since the last call to
 * the process-wide counters (windows come and go with partitions). */
static void export_bounds(struct sl_pipeline *pl, struct wpart *p, size_t step,
                          struct sl_window_stats *st) {
    char labels[128];
    struct sl_window_stats *seen = &p->seen[step];
    snprintf(labels, sizeof(labels), "step=\"%s\"", pl->cf->steps[step].name);
    sl_metrics_inc("sluice_window_evicted_entries_total", labels,
                   st->evicted_entries - seen->evicted_entries);
    sl_metrics_inc("sluice_window_evicted_keys_total", labels,
                   st->evicted_keys - seen->evicted_keys);
    sl_metrics_inc("sluice_window_expired_keys_total", labels,
                   st->expired_keys - seen->expired_keys);
    *seen = *st;
}

static void wpart_destroy(struct sl_pipeline *pl, struct wpart *p) {
    for (size_t i = 0; i < pl->cf->nsteps; i++) {
        if (!p->w[i]) continue;
        struct sl_window_stats st;
        sl_window_stats(p->w[i], &st);
        export_bounds(pl, p, i, &st);
        sl_window_destroy(p->w[i]);
    }
    free(p->w);
    free(p->seen);
    free(p->topic);
    free(p);
}

static struct sl_window *window_of(struct sl_pipeline *pl, struct wpart *p, size_t step) {
    static const enum sl_window_agg kinds[] = {
        [SL_AGG_LIST] = SL_WINDOW_LIST, [SL_AGG_COUNT] = SL_WINDOW_COUNT,
        [SL_AGG_FIRST] = SL_WINDOW_FIRST, [SL_AGG_LAST] = SL_WINDOW_LAST,
        [SL_AGG_DISTINCT] = SL_WINDOW_DISTINCT};
    if (p->w[step]) return p->w[step];
    const struct sl_step_conf *s = &pl->cf->steps[step];
    enum sl_window_agg *aggs = sl_calloc(s->naggs + 1, sizeof(*aggs));
    for (size_t i = 0; i < s->naggs; i++) aggs[i] = kinds[s->aggs[i].kind];
    struct sl_window_conf wc = {
        .length_ms = s->length_ms, .max_entries = s->max_entries, .max_keys = s->max_keys,
        .dedupe = s->dedupe_var != NULL, .nfields = s->naggs, .aggs = aggs,
    };
    char err[SL_ERRLEN];
    p->w[step] = sl_window_create(&wc, err, sizeof(err));
    free(aggs);
    if (!p->w[step]) {
        /* The config was checked, so this is a programmer error. */
        sl_log(SL_LOG_ERROR, "pipeline", "step %s: %s", s->name, err);
        abort();
    }
    return p->w[step];
}

/* Reads a context value as a window value; strings stay on the Lua stack. */
static void to_value(lua_State *L, int idx, struct sl_value *v) {
    v->type = SL_VAL_NONE;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        v->type = SL_VAL_NUM;
        v->num = lua_tonumber(L, idx);
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        v->type = SL_VAL_STR;
        v->s = lua_tolstring(L, idx, &v->len);
    }
}

static void push_value(lua_State *L, const struct sl_value *v) {
    if (v->type == SL_VAL_STR) lua_pushlstring(L, v->s, v->len);
    else if (v->type == SL_VAL_NUM) lua_pushnumber(L, v->num);
    else lua_pushnil(L);
}


/* Adds the context to the window of its key and sets the aggregate as a
 * variable. Returns 0 when the context goes on, -1 when it ended here. */
static int step_window(struct ctx *c, size_t step, const struct sl_step_conf *s) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    lua_State *L = sl_rules_state(rec->rules);
    int top = lua_gettop(L);
    const char *reason = NULL, *key, *id = NULL;
    size_t keylen, idlen = 0;
    int64_t t;

    if (!lua_checkstack(L, (int)s->naggs + 16)) {
        reason = "stack_exhausted";
        goto filtered;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);                 /* ctx */
    int ctx_idx = lua_gettop(L);
    push_path(L, ctx_idx, s->key_var);                         /* ctx key */
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
        reason = "missing_key";
        goto filtered;
    }
    key = lua_tolstring(L, -1, &keylen);
    if (s->time_var) {
        push_path(L, ctx_idx, s->time_var);                    /* ctx key t */
        if (lua_type(L, -1) != LUA_TNUMBER) {
            reason = "missing_time";
            goto filtered;
        }
        t = (int64_t)lua_tonumber(L, -1);
    } else {
        if (rec->in->timestamp < 0) {
            reason = "missing_time";
            goto filtered;
        }
        t = rec->in->timestamp;
    }
    if (s->dedupe_var) {
        push_path(L, ctx_idx, s->dedupe_var);                  /* ctx key t id */
        if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
            id = lua_tolstring(L, -1, &idlen);
    }
    for (size_t f = 0; f < s->naggs; f++) {
        push_path(L, ctx_idx, s->aggs[f].var);                 /* ... v_f */
        to_value(L, -1, &pl->vals[f]);
    }
    struct wpart *wp = wpart_get(pl, rec->in->topic ? rec->in->topic : "", rec->in->partition);
    struct sl_window *w = window_of(pl, wp, step);
    int r = sl_window_add(w, key, keylen, t, id, idlen, pl->vals);
    if (t > wp->watermark) {
        wp->watermark = t;
        wp->watermark_mono = sl_mono_ms();
    }
    if (r == SL_WINDOW_DUPLICATE) { reason = "duplicate"; goto filtered; }
    if (r == SL_WINDOW_TOO_OLD) { reason = "too_old"; goto filtered; }
    if (rec->in->restore && (int)step == pl->last_window) {
        lua_settop(L, top);
        return 0;            /* run() stops here: nothing to build */
    }
    size_t n = sl_window_entries(w);
    if (n > pl->agg_cap) {
        pl->agg_cap = n * 2;
        pl->agg = sl_realloc(pl->agg, pl->agg_cap * sizeof(*pl->agg));
    }
    lua_createtable(L, 0, (int)s->naggs);                      /* ... agg */
    for (size_t f = 0; f < s->naggs; f++) {
        size_t m = sl_window_aggregate(w, f, pl->agg);
        enum sl_agg_kind k = s->aggs[f].kind;
        if (k == SL_AGG_LIST || k == SL_AGG_DISTINCT) {
            lua_createtable(L, (int)m, 0);                     /* ... agg list */
            for (size_t i = 0; i < m; i++) {
                push_value(L, &pl->agg[i]);
                lua_rawseti(L, -2, (int)i + 1);
            }
            sl_json_push_array_mt(L);
            lua_setmetatable(L, -2);
        } else if (m > 0) {
            push_value(L, &pl->agg[0]);                        /* ... agg v */
        } else {
            continue;
        }
        lua_setfield(L, -2, s->aggs[f].name);                  /* ... agg */
    }
    lua_setfield(L, ctx_idx, s->as);
    lua_settop(L, top);
    return 0;
filtered:
    lua_settop(L, top);
    if (!rec->in->restore) filtered(c, step, reason);
    ctx_finish(c);
    return -1;
}

/* Writes "topic/partition/offset" of the input into out[n], n >= 64 (what a
 * rule error or the watchdog names). Called for every Lua step: no printf. */
static void input_name(const struct sl_input *in, char *out, size_t n) {
    const char *topic = in->topic ? in->topic : "-";
    size_t len = strlen(topic), room = n - 48;   /* 48: '/', two integers, NUL */
    char digits[24];
    int64_t nums[2] = {in->partition, in->offset};

    if (len > room) len = room;
    memcpy(out, topic, len);
    for (int i = 0; i < 2; i++) {
        uint64_t u = nums[i] < 0 ? -(uint64_t)nums[i] : (uint64_t)nums[i];
        size_t d = 0;
        out[len++] = '/';
        if (nums[i] < 0) out[len++] = '-';
        do { digits[d++] = (char)('0' + u % 10); u /= 10; } while (u);
        while (d) out[len++] = digits[--d];
    }
    out[len] = '\0';
}

/* Runs the context from its current step until it finishes or waits. */
static void run(struct ctx *c) {
    struct record *rec = c->rec;
    struct sl_pipeline *pl = rec->pl;
    const struct sl_config *cf = pl->cf;
    char what[192];

    while (c->step < cf->nsteps) {
        const struct sl_step_conf *s = &cf->steps[c->step];
        if (rec->in->restore && (int)c->step > pl->last_window) break;
        if (s->type == SL_STEP_KAFKA) {
            if (!rec->in->restore) {
                int r = step_kafka(c, s);
                if (r) return;
            }
            c->step++;
            continue;
        }
        if (s->type == SL_STEP_WINDOW) {
            if (step_window(c, c->step, s)) return;
            count_out(pl, c->step);
            if (!rec->in->restore) trace_ctx(rec, s->name, c->ref);
            c->step++;
            continue;
        }
        input_name(rec->in, what, sizeof(what));
        struct sl_rules_out *o = &pl->out;
        switch (sl_rules_call(rec->rules, c->step, &c->ref, what, o)) {
        case SL_RULES_NEXT:
            count_out(pl, c->step);
            trace_ctx(rec, s->name, c->ref);
            c->step++;
            break;
        case SL_RULES_FILTERED:
            filtered(c, c->step, o->reason);
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
                count_out(pl, c->step);
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
            if (rec->in->restore) {     /* dead-lettered when first run */
                ctx_finish(c);
                return;
            }
            count_step_at(&pl->sm[c->step].errors, s->name, "sluice_step_errors_total");
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
    pl->last_window = -1;
    size_t maxaggs = 0;
    for (size_t i = 0; i < pl->cf->nsteps; i++)
        if (pl->cf->steps[i].type == SL_STEP_WINDOW) {
            pl->last_window = (int)i;
            if (pl->cf->steps[i].naggs > maxaggs) maxaggs = pl->cf->steps[i].naggs;
        }
    pl->vals = sl_calloc(maxaggs + 1, sizeof(*pl->vals));
    pl->sm = sl_calloc(pl->cf->nsteps + 1, sizeof(*pl->sm));
    pl->field_keys = sl_calloc(pl->cf->nsteps + 1, sizeof(*pl->field_keys));
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
    while (pl->wparts) {
        struct wpart *p = pl->wparts;
        pl->wparts = p->next;
        wpart_destroy(pl, p);
    }
    free(pl->vals);
    free(pl->agg);
    free(pl->sm);
    for (size_t i = 0; i < pl->cf->nsteps; i++) {
        if (!pl->field_keys[i]) continue;
        for (size_t j = 0; j < pl->cf->steps[i].nfields; j++) free(pl->field_keys[i][j]);
        free(pl->field_keys[i]);
    }
    free(pl->field_keys);
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

void sl_pipeline_tick(struct sl_pipeline *pl) {
    int64_t mono = sl_mono_ms();
    for (size_t i = 0; i < pl->cf->nsteps; i++) {
        const struct sl_step_conf *s = &pl->cf->steps[i];
        if (s->type != SL_STEP_WINDOW) continue;
        struct sl_window_stats st, sum = {0};
        for (struct wpart *p = pl->wparts; p; p = p->next) {
            if (!p->w[i]) continue;
            /* Event time as of now: the newest event, plus the time since. */
            sl_window_expire(p->w[i], p->watermark + (mono - p->watermark_mono));
            sl_window_stats(p->w[i], &st);
            export_bounds(pl, p, i, &st);
            sum.keys += st.keys;
            sum.entries += st.entries;
            sum.bytes += st.bytes;
        }
        char labels[128];
        snprintf(labels, sizeof(labels), "step=\"%s\"", s->name);
        sl_metrics_set("sluice_window_keys", labels, (double)sum.keys);
        sl_metrics_set("sluice_window_entries", labels, (double)sum.entries);
        sl_metrics_set("sluice_window_bytes", labels, (double)sum.bytes);
    }
}

void sl_pipeline_drop_partition(struct sl_pipeline *pl, const char *topic,
                                int32_t partition) {
    for (struct wpart **pp = &pl->wparts; *pp; pp = &(*pp)->next)
        if ((*pp)->partition == partition && !strcmp((*pp)->topic, topic)) {
            struct wpart *p = *pp;
            *pp = p->next;
            wpart_destroy(pl, p);
            return;
        }
}

bool sl_pipeline_has_window(const struct sl_pipeline *pl, int64_t *length_ms) {
    int64_t longest = 0;
    for (size_t i = 0; i < pl->cf->nsteps; i++)
        if (pl->cf->steps[i].type == SL_STEP_WINDOW && pl->cf->steps[i].length_ms > longest)
            longest = pl->cf->steps[i].length_ms;
    if (length_ms) *length_ms = longest;
    return longest > 0;
}
