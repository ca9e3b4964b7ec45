/* step_window.c -- the window step kind: a keyed sliding window in the core
 * (see step.h, window.h).
 *
 *   { name = "aggregate", window = { key = "userId", length = "5m",
 *     time = "ts", dedupe = "eventId", as = "window",
 *     aggregate = { products = { "list", "product.slug" } } } }
 *
 * Adds each context to the window of its key and sets the aggregate of that
 * window as a variable. The windows live in the core, one per step and input
 * partition (keys of a partition never span workers), so they survive rule
 * reloads and move with their partition; restore records rebuild them. Event
 * time is bounded by arrival (window.h): an event more than max_skew ahead of
 * its record's Kafka timestamp is filtered as future_time. The window steps
 * of a pipeline share one arrival watermark per partition (never a client's
 * clock), which expires idle keys on the pipeline's tick. */
#define _GNU_SOURCE
#include "step.h"
#include "json.h"
#include "lazy.h"
#include "metrics.h"
#include "pipeline.h"
#include "rules.h"
#include "window.h"

#include <stdlib.h>
#include <string.h>

/* The window state of one input partition: one window per window step. */
struct wpart {
    char *topic;
    int32_t partition;
    struct sl_window **w;        /* per step; NULL for other steps */
    struct sl_window_stats *seen; /* per step: counters already exported */
    int64_t watermark;           /* newest arrival seen (sl_window_arrival), ms */
    int64_t watermark_mono;      /* monotonic ms when it was seen */
    struct wpart *next;
};

/* What the window steps of one pipeline share. */
struct wshared {
    const struct sl_config *cf;
    struct wpart *parts;         /* window state per input partition */
    int refs;                    /* window steps using it */
};

struct window_step {
    struct wshared *sh;
    size_t index;                /* the step in the config */
    const struct sl_step_conf *s;
    bool last;                   /* the last window step: restore records end here */
    struct sl_step_path *key;    /* s->key_var split */
    struct sl_step_path *time;   /* s->time_var split, or NULL */
    struct sl_step_path *dedupe; /* s->dedupe_var split, or NULL */
    struct sl_step_path **vars;  /* each aggregation's var split */
    struct sl_step_getter *get;  /* key, time (if any), dedupe (if any), vars: one read */
    struct sl_value *vals;       /* scratch: one value per aggregation */
    struct sl_value *agg;        /* scratch: aggregation outputs, one after another */
    size_t agg_cap;
    struct sl_lazy_list *lists;  /* scratch: the list aggregations of one context */
    size_t *counts;              /* scratch: values per aggregation */
};

/* ==================== Config ==================== */

static int load_aggs(struct sl_config_cur *c, const char *path, struct sl_step_conf *s) {
    static const char *kinds[] = {"list", "count", "first", "last", "distinct", NULL};
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN];
    sl_config_join(p, path, "aggregate");
    lua_getfield(L, -1, "aggregate");
    if (lua_type(L, -1) != LUA_TTABLE) {
        sl_config_fail(c, p, "a table of name = { \"list\", \"var\" }", -1);
        lua_pop(L, 1);
        return SL_ERR;
    }
    size_t cap = 4;
    s->aggs = sl_calloc(cap, sizeof(*s->aggs));
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        char ap[SL_CONFIG_PATHLEN];
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        snprintf(ap, sizeof(ap), "%s.%s", p, name);
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) {
            sl_config_fail(c, ap, "{ \"list\"|\"count\"|\"first\"|\"last\"|\"distinct\", \"var\" }", -1);
            lua_pop(L, 3);
            return SL_ERR;
        }
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        int kind = -1;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int i = 0; kinds[i]; i++)
                if (!strcmp(kinds[i], lua_tostring(L, -2))) kind = i;
        if (kind < 0 || lua_type(L, -1) != LUA_TSTRING) {
            sl_config_fail(c, ap, "{ \"list\"|\"count\"|\"first\"|\"last\"|\"distinct\", \"var\" }",
                           kind < 0 ? -2 : -1);
            lua_pop(L, 5);
            return SL_ERR;
        }
        if (s->naggs == cap) {
            cap *= 2;
            s->aggs = sl_realloc(s->aggs, cap * sizeof(*s->aggs));
        }
        s->aggs[s->naggs].name = sl_strdup(name);
        s->aggs[s->naggs].kind = (enum sl_agg_kind)kind;
        s->aggs[s->naggs].var = sl_strdup(lua_tostring(L, -1));
        s->naggs++;
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
    return SL_OK;
}

/* Fails with path.key and what was expected unless v > 0. */
static int need_positive(struct sl_config_cur *c, const char *path, const char *key,
                         int64_t v, const char *expected) {
    char p[SL_CONFIG_PATHLEN];
    if (v > 0) return SL_OK;
    sl_config_join(p, path, key);
    lua_pushnil(sl_config_state(c));
    sl_config_fail(c, p, expected, -1);
    lua_pop(sl_config_state(c), 1);
    return SL_ERR;
}

static int load_conf(struct sl_config_cur *c, const char *path, struct sl_step_conf *s,
                     size_t pos) {
    static const char *const keys[] = {"key", "time", "length", "dedupe", "as", "aggregate",
                                       "max_entries", "max_keys", "max_skew", NULL};
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN];
    int64_t n;
    int ret = SL_ERR;
    (void)pos;

    sl_config_join(p, path, "window");
    if (sl_config_enter(c, path, "window") != 1) return SL_ERR;
    if (sl_config_only_keys(c, p, keys) ||
        sl_config_need_str(c, p, "key", &s->key_var) ||
        sl_config_get_str(c, p, "time", NULL, &s->time_var) ||
        sl_config_get_duration(c, p, "length", -1, &s->length_ms) ||
        sl_config_get_duration(c, p, "max_skew", SL_CONFIG_MAX_SKEW_MS, &s->max_skew_ms) ||
        sl_config_get_str(c, p, "dedupe", NULL, &s->dedupe_var) ||
        sl_config_get_str(c, p, "as", "window", &s->as) ||
        load_aggs(c, p, s))
        goto done;
    if (need_positive(c, p, "length", s->length_ms, "a duration like \"5m\"") ||
        need_positive(c, p, "max_skew", s->max_skew_ms, "a duration above 0 like \"2m\""))
        goto done;
    if (sl_config_get_int(c, p, "max_entries", 100, 1, &n)) goto done;
    s->max_entries = (size_t)n;
    if (sl_config_get_int(c, p, "max_keys", 1000000, 1, &n)) goto done;
    s->max_keys = (size_t)n;
    ret = SL_OK;
done:
    lua_pop(L, 1);
    return ret;
}

static void unload_conf(struct sl_step_conf *s) {
    free(s->key_var);
    free(s->time_var);
    free(s->dedupe_var);
    free(s->as);
    for (size_t j = 0; j < s->naggs; j++) {
        free(s->aggs[j].name);
        free(s->aggs[j].var);
    }
    free(s->aggs);
}

static int64_t history(const struct sl_step_conf *s) { return s->length_ms; }

/* ==================== Partitions ==================== */

static struct wpart *wpart_get(struct wshared *sh, const char *topic, int32_t partition) {
    for (struct wpart *p = sh->parts; p; p = p->next)
        if (p->partition == partition && !strcmp(p->topic, topic)) return p;
    struct wpart *p = sl_calloc(1, sizeof(*p));
    p->topic = sl_strdup(topic);
    p->partition = partition;
    p->w = sl_calloc(sh->cf->nsteps, sizeof(*p->w));
    p->seen = sl_calloc(sh->cf->nsteps, sizeof(*p->seen));
    p->watermark = INT64_MIN;
    p->next = sh->parts;
    sh->parts = p;
    return p;
}

/* Adds what window `step` of p bounded or expired since the last call to
 * the process-wide counters (windows come and go with partitions). */
static void export_bounds(struct wshared *sh, struct wpart *p, size_t step,
                          struct sl_window_stats *st) {
    char labels[128];
    struct sl_window_stats *seen = &p->seen[step];
    snprintf(labels, sizeof(labels), "step=\"%s\"", sh->cf->steps[step].name);
    sl_metrics_inc("sluice_window_evicted_entries_total", labels,
                   st->evicted_entries - seen->evicted_entries);
    sl_metrics_inc("sluice_window_evicted_keys_total", labels,
                   st->evicted_keys - seen->evicted_keys);
    sl_metrics_inc("sluice_window_expired_keys_total", labels,
                   st->expired_keys - seen->expired_keys);
    *seen = *st;
}

static void wpart_destroy(struct wshared *sh, struct wpart *p) {
    for (size_t i = 0; i < sh->cf->nsteps; i++) {
        if (!p->w[i]) continue;
        struct sl_window_stats st;
        sl_window_stats(p->w[i], &st);
        export_bounds(sh, p, i, &st);
        sl_window_destroy(p->w[i]);
    }
    free(p->w);
    free(p->seen);
    free(p->topic);
    free(p);
}

static struct sl_window *window_of(struct wshared *sh, struct wpart *p, size_t step) {
    static const enum sl_window_agg kinds[] = {
        [SL_AGG_LIST] = SL_WINDOW_LIST, [SL_AGG_COUNT] = SL_WINDOW_COUNT,
        [SL_AGG_FIRST] = SL_WINDOW_FIRST, [SL_AGG_LAST] = SL_WINDOW_LAST,
        [SL_AGG_DISTINCT] = SL_WINDOW_DISTINCT};
    if (p->w[step]) return p->w[step];
    const struct sl_step_conf *s = &sh->cf->steps[step];
    enum sl_window_agg *aggs = sl_calloc(s->naggs + 1, sizeof(*aggs));
    for (size_t i = 0; i < s->naggs; i++) aggs[i] = kinds[s->aggs[i].kind];
    struct sl_window_conf wc = {
        .length_ms = s->length_ms, .max_entries = s->max_entries, .max_keys = s->max_keys,
        .dedupe = s->dedupe_var != NULL, .nfields = s->naggs, .aggs = aggs,
        .max_skew_ms = s->max_skew_ms,
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

/* ==================== Running ==================== */

static void *create(const struct sl_step_env *env) {
    struct window_step *st = sl_calloc(1, sizeof(*st));
    struct wshared *sh = *env->shared;
    if (!sh) {
        sh = sl_calloc(1, sizeof(*sh));
        sh->cf = env->cf;
        *env->shared = sh;
    }
    sh->refs++;
    st->sh = sh;
    st->index = env->index;
    st->s = &env->cf->steps[env->index];
    st->last = true;
    for (size_t i = env->index + 1; i < env->cf->nsteps; i++)
        if (env->cf->steps[i].kind == &sl_step_window) st->last = false;
    st->vals = sl_calloc(st->s->naggs + 1, sizeof(*st->vals));
    st->lists = sl_calloc(st->s->naggs + 1, sizeof(*st->lists));
    st->counts = sl_calloc(st->s->naggs + 1, sizeof(*st->counts));
    st->key = sl_step_path_create(st->s->key_var);
    st->time = sl_step_path_create(st->s->time_var);
    st->dedupe = sl_step_path_create(st->s->dedupe_var);
    st->vars = sl_calloc(st->s->naggs + 1, sizeof(*st->vars));
    for (size_t f = 0; f < st->s->naggs; f++) st->vars[f] = sl_step_path_create(st->s->aggs[f].var);
    struct sl_step_path **all = sl_calloc(st->s->naggs + 3, sizeof(*all));
    size_t n = 0;
    all[n++] = st->key;
    if (st->time) all[n++] = st->time;
    if (st->dedupe) all[n++] = st->dedupe;
    for (size_t f = 0; f < st->s->naggs; f++) all[n++] = st->vars[f];
    st->get = sl_step_getter_create(all, n);
    free(all);
    return st;
}

/* Adds the context to the window of its key and sets the aggregate as a
 * variable. A restore record ends at the last window step (nothing to
 * build), and one the window refuses ends uncounted. */
static void start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    struct window_step *st = state;
    const struct sl_step_conf *s = st->s;
    lua_State *L = sl_rules_state(c->rules);
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
    int paths = sl_step_push_path_cache(L);                    /* ctx paths */
    sl_step_push_getter(L, paths, ctx_idx, st->get);           /* ctx paths key [t] [id] v_f... */
    int at = paths + 1;
    if (lua_type(L, at) != LUA_TSTRING && lua_type(L, at) != LUA_TNUMBER) {
        reason = "missing_key";
        goto filtered;
    }
    key = lua_tolstring(L, at++, &keylen);
    if (st->time) {
        if (lua_type(L, at) != LUA_TNUMBER) {
            reason = "missing_time";
            goto filtered;
        }
        t = (int64_t)lua_tonumber(L, at++);
    } else {
        if (c->in->timestamp < 0) {
            reason = "missing_time";
            goto filtered;
        }
        t = c->in->timestamp;
    }
    if (st->dedupe) {
        if (lua_type(L, at) == LUA_TSTRING || lua_type(L, at) == LUA_TNUMBER)
            id = lua_tolstring(L, at, &idlen);
        at++;
    }
    for (size_t f = 0; f < s->naggs; f++) to_value(L, at++, &st->vals[f]);
    struct wpart *wp = wpart_get(st->sh, c->in->topic ? c->in->topic : "", c->in->partition);
    struct sl_window *w = window_of(st->sh, wp, st->index);
    int64_t arrival = sl_window_arrival(c->in->timestamp, sl_now_ms(), s->max_skew_ms);
    int r = sl_window_add_at(w, key, keylen, t, arrival, id, idlen, st->vals);
    if (arrival > wp->watermark) {
        wp->watermark = arrival;
        wp->watermark_mono = sl_mono_ms();
    }
    if (r == SL_WINDOW_FUTURE) { reason = "future_time"; goto filtered; }
    if (r == SL_WINDOW_DUPLICATE) { reason = "duplicate"; goto filtered; }
    if (r == SL_WINDOW_TOO_OLD) { reason = "too_old"; goto filtered; }
    if (c->in->restore && st->last) {
        lua_settop(L, top);
        res->status = SL_STEP_NEXT;   /* the pipeline stops here: nothing to build */
        return;
    }
    /* Each aggregation's output side by side in st->agg; the lists are
     * copied into a table that makes them only when read (lazy.h), and the
     * kafka step writes them from that copy. */
    size_t n = sl_window_entries(w), used = 0, nlists = 0;
    if (n * s->naggs + 1 > st->agg_cap) {
        st->agg_cap = (n * s->naggs + 1) * 2;
        st->agg = sl_realloc(st->agg, st->agg_cap * sizeof(*st->agg));
    }
    for (size_t f = 0; f < s->naggs; f++) {
        enum sl_agg_kind k = s->aggs[f].kind;
        size_t m = sl_window_aggregate(w, f, st->agg + used);
        if (k == SL_AGG_LIST || k == SL_AGG_DISTINCT)
            st->lists[nlists++] = (struct sl_lazy_list){s->aggs[f].name, st->agg + used, m};
        st->counts[f] = m;
        used += m ? m : 1;
    }
    sl_lazy_push_lists(L, st->lists, nlists);                  /* ... agg */
    used = 0;
    for (size_t f = 0; f < s->naggs; f++) {                    /* the scalars, raw */
        enum sl_agg_kind k = s->aggs[f].kind;
        size_t m = st->counts[f];
        if (k != SL_AGG_LIST && k != SL_AGG_DISTINCT && m > 0) {
            lua_pushstring(L, s->aggs[f].name);
            push_value(L, &st->agg[used]);                     /* ... agg name v */
            lua_rawset(L, -3);                                 /* ... agg */
        }
        used += m ? m : 1;
    }
    lua_setfield(L, ctx_idx, s->as);
    lua_settop(L, top);
    res->status = SL_STEP_NEXT;
    return;
filtered:
    lua_settop(L, top);
    if (c->in->restore) {
        res->status = SL_STEP_DONE;
    } else {
        res->status = SL_STEP_FILTERED;
        res->reason = reason;
    }
}

/* Expires each partition's window on its arrival watermark advanced by the
 * wall clock since, exports the bound counters and sets the gauges. */
static void tick(void *state) {
    struct window_step *st = state;
    int64_t mono = sl_mono_ms();
    size_t i = st->index;
    struct sl_window_stats wst, sum = {0};
    for (struct wpart *p = st->sh->parts; p; p = p->next) {
        if (!p->w[i]) continue;
        /* Arrival time as of now: the newest arrival, plus the time since. */
        sl_window_expire(p->w[i], p->watermark + (mono - p->watermark_mono));
        sl_window_stats(p->w[i], &wst);
        export_bounds(st->sh, p, i, &wst);
        sum.keys += wst.keys;
        sum.entries += wst.entries;
        sum.bytes += wst.bytes;
    }
    char labels[128];
    snprintf(labels, sizeof(labels), "step=\"%s\"", st->s->name);
    sl_metrics_set("sluice_window_keys", labels, (double)sum.keys);
    sl_metrics_set("sluice_window_entries", labels, (double)sum.entries);
    sl_metrics_set("sluice_window_bytes", labels, (double)sum.bytes);
}

/* Drops the partition's windows of every window step at once (the first
 * window step's call; the others find nothing). */
static void drop_partition(void *state, const char *topic, int32_t partition) {
    struct window_step *st = state;
    for (struct wpart **pp = &st->sh->parts; *pp; pp = &(*pp)->next)
        if ((*pp)->partition == partition && !strcmp((*pp)->topic, topic)) {
            struct wpart *p = *pp;
            *pp = p->next;
            wpart_destroy(st->sh, p);
            return;
        }
}

static void destroy(void *state) {
    struct window_step *st = state;
    if (!st) return;
    struct wshared *sh = st->sh;
    if (--sh->refs == 0) {
        while (sh->parts) {
            struct wpart *p = sh->parts;
            sh->parts = p->next;
            wpart_destroy(sh, p);
        }
        free(sh);
    }
    free(st->vals);
    free(st->lists);
    free(st->counts);
    free(st->agg);
    sl_step_path_destroy(st->key);
    sl_step_path_destroy(st->time);
    sl_step_path_destroy(st->dedupe);
    for (size_t f = 0; f < st->s->naggs; f++) sl_step_path_destroy(st->vars[f]);
    free(st->vars);
    sl_step_getter_destroy(st->get);
    free(st);
}

static const char *const window_keys[] = {NULL};

const struct sl_step_kind sl_step_window = {
    .name = "window",
    .synopsis = "window = {...}",
    .keys = window_keys,
    .type = SL_STEP_WINDOW,
    .flags = SL_STEP_FOR_RESTORE,
    .load = load_conf,
    .unload = unload_conf,
    .create = create,
    .start = start,
    .tick = tick,
    .drop_partition = drop_partition,
    .destroy = destroy,
    .history = history,
};
