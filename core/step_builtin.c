/* step_builtin.c -- the model step with the built-in model: recommendations
 * for a context from model.c, in process, no HTTP (see step.h, model.h).
 *
 *   { name = "model", model = { kind = "builtin", file = env("MODEL_FILE"),
 *       catalog = "examples/catalog.json", as = "recommendationsModelOutput",
 *       top_n = 20, learn = false,
 *       items = "aggregatedProducts.slugs",
 *       timestamps = "aggregatedProducts.viewTimestamps" } }
 *
 * step_model.c reads model.kind and hands a "builtin" step to
 * sl_step_builtin_load, which sets the step's kind to this one. The input is
 * the window's aggregate, as the MLflow step's input rule reads it: items, a
 * list of product handles (oldest first), and timestamps, their ms times (a
 * number or a string of digits each; timestamps = false leaves them out).
 * The output is what recommendations.model.output makes of an MLflow answer:
 * ctx[as] = {itemIds = {GID, ...}, preds = {score, ...}} (JSON arrays), best
 * first, at most top_n, never a product of the window, popularity for a
 * window the model does not know. It runs in start and never for restore
 * records. A window that is not a list of handles (or whose timestamps do
 * not match it) is an error: the record is dead-lettered, as the input rule
 * would raise.
 *
 * The model file is loaded with the config (a missing or bad file fails the
 * config, naming the file and why) and checked against catalog when given.
 * SIGHUP reloads it (reload): a file that does not load, or does not match
 * the catalog, leaves the model in use unchanged. With learn = true each
 * window is also added to the model (sl_model_observe); what was learnt is
 * in memory only, and a reload replaces it with the file. */
#define _GNU_SOURCE
#include "step.h"
#include "json.h"
#include "lazy.h"
#include "model.h"
#include "pipeline.h"
#include "rules.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define SL_BUILTIN_DEFAULT_TOP 20  /* Recommendations per window when top_n is not given. */

/* The parsed part of a builtin model step (sl_step_conf.data). */
struct builtin_conf {
    char *file;                  /* the model file */
    char *catalog;               /* catalog file the model must match, or NULL */
    char *items;                 /* context path of the handles */
    char *timestamps;            /* context path of their times, or NULL */
    char *as;                    /* variable set; NULL: the step's name */
    int64_t top_n;
    bool learn;                  /* sl_model_observe on every window */
    struct sl_model *model;      /* loaded with the config, until a reload */
};

/* A context path split at its last dot. */
struct split_path {
    struct sl_step_path *parent; /* the path of the table holding the list; NULL: ctx */
    const char *leaf;            /* the list's name in it */
    size_t leaf_len;
};

struct builtin_step {
    const struct builtin_conf *bc;
    struct sl_step_path *items_path, *ts_path; /* bc->items and bc->timestamps split */
    struct split_path items_at, ts_at; /* ...and split at their last dot */
    const char *name;            /* the step's name */
    const char *as;              /* variable set */
    struct sl_model *model;      /* in use: bc->model or owned */
    struct sl_model *owned;      /* loaded by a reload, freed by the next or destroy */
    struct sl_model_result res;  /* scratch of sl_model_recommend */
    double gen;                  /* names st->model's GID strings (push_gids) */
    const char **items;          /* one window's handles (strings of the VM) */
    int64_t *ts;                 /* their times */
    size_t cap;                  /* slots in items and ts */
    struct sl_value *vals[2];    /* one window's handles and times, read from C */
    size_t vals_cap;             /* slots in each of vals */
    struct sl_buf handles;       /* the handles of vals[0], each ended by a NUL */
    char err[SL_ERRLEN];         /* the last result's error */
};

/* ==================== Config ==================== */

/* Loads file and, when catalog is given, checks the model against it. NULL
 * with err naming the file and why. */
static struct sl_model *load_model(const char *file, const char *catalog, char *err,
                                   size_t errlen) {
    struct sl_model *m = sl_model_load(file, err, errlen);
    struct sl_catalog *cat = NULL;
    if (!m || !catalog) return m;
    cat = sl_catalog_load(catalog, err, errlen);
    if (!cat || sl_model_check_catalog(m, cat, catalog, err, errlen)) {
        sl_model_destroy(m);
        m = NULL;
    }
    sl_catalog_destroy(cat);
    return m;
}

/* Fails the config at path.key with what went wrong (the value at the top
 * is what the config gave). */
static int fail_key(struct sl_config_cur *c, const char *path, const char *key,
                    const char *expected) {
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN];
    sl_config_join(p, path, key);
    lua_getfield(L, -1, key);
    sl_config_fail(c, p, expected, -1);
    lua_pop(L, 1);
    return SL_ERR;
}

int sl_step_builtin_load(struct sl_config_cur *c, const char *path, struct sl_step_conf *s) {
    static const char *const keys[] = {"kind", "file", "catalog", "as", "top_n", "learn",
                                       "items", "timestamps", NULL};
    lua_State *L = sl_config_state(c);
    struct builtin_conf *bc = sl_calloc(1, sizeof(*bc));
    char err[SL_ERRLEN], what[SL_ERRLEN + 160];

    s->kind = &sl_step_builtin;                      /* unload frees bc from now on */
    s->data = bc;
    if (sl_config_only_keys(c, path, keys) || sl_config_need_str(c, path, "file", &bc->file) ||
        sl_config_get_str(c, path, "catalog", NULL, &bc->catalog) ||
        sl_config_get_str(c, path, "as", NULL, &bc->as) ||
        sl_config_get_int(c, path, "top_n", SL_BUILTIN_DEFAULT_TOP, 1, &bc->top_n) ||
        sl_config_get_bool(c, path, "learn", false, &bc->learn) ||
        sl_config_get_str(c, path, "items", "aggregatedProducts.slugs", &bc->items))
        return SL_ERR;
    lua_getfield(L, -1, "timestamps");
    bool no_ts = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!no_ts && sl_config_get_str(c, path, "timestamps", "aggregatedProducts.viewTimestamps",
                                    &bc->timestamps))
        return SL_ERR;
    if (bc->top_n > SL_MODEL_MAX_TOP) {
        snprintf(what, sizeof(what), "an integer from 1 to %d", SL_MODEL_MAX_TOP);
        return fail_key(c, path, "top_n", what);
    }
    if (!*bc->file) return fail_key(c, path, "file", "the path of a model file");
    bc->model = load_model(bc->file, bc->catalog, err, sizeof(err));
    if (!bc->model) {
        snprintf(what, sizeof(what), "a model file that loads (%s; make one with: sluice model "
                 "train --interactions FILE.tsv --catalog CATALOG.json --out %s)", err, bc->file);
        return fail_key(c, path, bc->catalog && strstr(err, bc->catalog) ? "catalog" : "file",
                        what);
    }
    return SL_OK;
}

static void unload_conf(struct sl_step_conf *s) {
    struct builtin_conf *bc = s->data;
    if (!bc) return;
    free(bc->file);
    free(bc->catalog);
    free(bc->items);
    free(bc->timestamps);
    free(bc->as);
    sl_model_destroy(bc->model);
    free(bc);
    s->data = NULL;
}

/* ==================== Running ==================== */

/* A number no other step state or model ever had (push_gids). */
static double next_gen(void) {
    static uint64_t gens;
    return (double)__atomic_add_fetch(&gens, 1, __ATOMIC_RELAXED);
}

static void split_path(struct split_path *sp, const char *path) {
    const char *dot = path ? strrchr(path, '.') : NULL;
    char *parent = dot ? sl_strndup(path, (size_t)(dot - path)) : NULL;
    sp->parent = sl_step_path_create(parent);
    free(parent);
    sp->leaf = dot ? dot + 1 : path;
    sp->leaf_len = sp->leaf ? strlen(sp->leaf) : 0;
}

static void *create(const struct sl_step_env *env) {
    const struct sl_step_conf *s = &env->cf->steps[env->index];
    struct builtin_step *st = sl_calloc(1, sizeof(*st));
    st->bc = s->data;
    st->name = s->name;
    st->as = st->bc->as ? st->bc->as : s->name;
    st->model = st->bc->model;
    st->gen = next_gen();
    st->items_path = sl_step_path_create(st->bc->items);
    st->ts_path = sl_step_path_create(st->bc->timestamps);
    split_path(&st->items_at, st->bc->items);
    split_path(&st->ts_at, st->bc->timestamps);
    return st;
}

/* Fails the context with a message about the window (SL_STEP_ERROR). */
static void bad_input(struct builtin_step *st, struct sl_step_result *res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bad_input(struct builtin_step *st, struct sl_step_result *res, const char *fmt, ...) {
    va_list ap;
    int n = snprintf(st->err, sizeof(st->err), "%s: ", st->name);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(st->err)) vsnprintf(st->err + n, sizeof(st->err) - (size_t)n, fmt, ap);
    va_end(ap);
    res->status = SL_STEP_ERROR;
    res->error = st->err;
}

/* An ms time from t, or from the string of digits s[0..len) when s is not
 * NULL; false for anything else. */
static bool ms_of(const char *s, size_t len, double t, int64_t *out) {
    if (s) {
        char digits[17];
        if (!len || len > 16 || strspn(s, "0123456789") < len) return false;
        memcpy(digits, s, len);
        digits[len] = '\0';
        t = strtod(digits, NULL);
    }
    if (!(t >= 0 && t <= 9007199254740992.0) || t != (double)(int64_t)t) return false;
    *out = (int64_t)t;
    return true;
}

/* An ms time from a number or a string of digits; false for anything else. */
static bool read_ms(lua_State *L, int idx, int64_t *out) {
    size_t len = 0;
    const char *s = NULL;
    if (lua_type(L, idx) == LUA_TSTRING) s = lua_tolstring(L, idx, &len);
    else if (lua_type(L, idx) != LUA_TNUMBER) return false;
    return ms_of(s, len, s ? 0 : lua_tonumber(L, idx), out);
}

/* Makes room for n items and times. */
static void reserve(struct builtin_step *st, size_t n) {
    if (n <= st->cap) return;
    st->cap = n;
    st->items = sl_realloc(st->items, n * sizeof(*st->items));
    st->ts = sl_realloc(st->ts, n * sizeof(*st->ts));
}

/* The type name Lua would give value v of a window list. */
static const char *value_typename(const struct sl_value *v) {
    return v->type == SL_VAL_STR ? "string" : v->type == SL_VAL_NUM ? "number" : "nil";
}

/* Peeks list sp of ctx as the window step copied it (lazy.h), nothing made:
 * pushes sp's parent (it keeps the copy alive) and returns the list's
 * length with vals[k] filled; -1 when it is not such a list. */
static long peek_list(struct builtin_step *st, lua_State *L, int paths, int ctx_idx,
                      const struct split_path *sp, int k) {
    if (sp->parent) sl_step_push_path(L, paths, ctx_idx, sp->parent);
    else lua_pushvalue(L, ctx_idx);
    long n = sl_lazy_peek_list(L, -1, sp->leaf, sp->leaf_len, st->vals[k], st->vals_cap);
    if (n > (long)st->vals_cap) {
        st->vals_cap = (size_t)n;
        st->vals[0] = sl_realloc(st->vals[0], st->vals_cap * sizeof(*st->vals[0]));
        st->vals[1] = sl_realloc(st->vals[1], st->vals_cap * sizeof(*st->vals[1]));
        n = sl_lazy_peek_list(L, -1, sp->leaf, sp->leaf_len, st->vals[k], st->vals_cap);
    }
    return n;
}

/* The window from the lists the window step handed over, read from their
 * copy: none is made, so the sink still writes them from C. *n is the number
 * of items. 1: read (or the context failed: res says so); 0: they are not
 * such lists (or were changed since), read them through Lua. */
static int window_from_lists(struct builtin_step *st, lua_State *L, int paths, int ctx_idx,
                             struct sl_step_result *res, size_t *n) {
    const struct builtin_conf *bc = st->bc;
    long ni = peek_list(st, L, paths, ctx_idx, &st->items_at, 0), nt = 0;
    if (ni < 0) return 0;
    if (bc->timestamps && (nt = peek_list(st, L, paths, ctx_idx, &st->ts_at, 1)) < 0) return 0;
    *n = (size_t)ni;
    if (bc->timestamps && nt != ni) {
        bad_input(st, res, "ctx.%s must be a list of %zu ms times (one per item of ctx.%s), "
                  "got another length", bc->timestamps, *n, bc->items);
        return 1;
    }
    reserve(st, *n);
    const struct sl_value *iv = st->vals[0], *tv = st->vals[1];
    st->handles.len = 0;
    for (size_t i = 0; i < *n; i++) {
        if (iv[i].type != SL_VAL_STR || !iv[i].len) {
            bad_input(st, res, "ctx.%s[%zu] must be a product handle, got %s", bc->items, i + 1,
                      value_typename(&iv[i]));
            return 1;
        }
        sl_buf_add(&st->handles, iv[i].s, iv[i].len);
        sl_buf_addc(&st->handles, '\0');
        if (!bc->timestamps) continue;
        if (tv[i].type == SL_VAL_NONE ||
            !ms_of(tv[i].type == SL_VAL_STR ? tv[i].s : NULL, tv[i].len, tv[i].num, &st->ts[i])) {
            bad_input(st, res, "ctx.%s[%zu] must be an integer ms time, got %s", bc->timestamps,
                      i + 1, value_typename(&tv[i]));
            return 1;
        }
    }
    for (size_t i = 0, at = 0; i < *n; at += iv[i].len + 1, i++)
        st->items[i] = st->handles.data + at;         /* the buffer is final now */
    res->status = SL_STEP_NEXT;
    return 1;
}

/* The window read through Lua: any tables of handles and times. */
static void window_from_lua(struct builtin_step *st, lua_State *L, int paths, int ctx_idx,
                            struct sl_step_result *res, size_t *n) {
    const struct builtin_conf *bc = st->bc;
    bool has_ts = false;
    sl_step_push_path(L, paths, ctx_idx, st->items_path); /* ctx paths items */
    if (!lua_istable(L, -1)) {
        bad_input(st, res, "ctx.%s must be a list of product handles, got %s", bc->items,
                  luaL_typename(L, -1));
        return;
    }
    *n = lua_objlen(L, -1);
    if (bc->timestamps) {
        sl_step_push_path(L, paths, ctx_idx, st->ts_path); /* ctx paths items ts */
        if (!lua_istable(L, -1) || lua_objlen(L, -1) != *n) {
            bad_input(st, res, "ctx.%s must be a list of %zu ms times (one per item of ctx.%s), "
                      "got %s", bc->timestamps, *n, bc->items,
                      lua_istable(L, -1) ? "another length" : luaL_typename(L, -1));
            return;
        }
        has_ts = true;
    } else {
        lua_pushnil(L);                                 /* ctx paths items nil */
    }
    reserve(st, *n);
    for (size_t i = 0; i < *n; i++) {
        lua_rawgeti(L, -2, (int)i + 1);                 /* ctx paths items ts item */
        if (lua_type(L, -1) != LUA_TSTRING || !lua_objlen(L, -1)) {
            bad_input(st, res, "ctx.%s[%zu] must be a product handle, got %s", bc->items, i + 1,
                      luaL_typename(L, -1));
            return;
        }
        st->items[i] = lua_tostring(L, -1);             /* stays alive in items */
        lua_pop(L, 1);                                  /* ctx paths items ts */
        if (!has_ts) continue;
        lua_rawgeti(L, -1, (int)i + 1);                 /* ctx paths items ts t */
        if (!read_ms(L, -1, &st->ts[i])) {
            bad_input(st, res, "ctx.%s[%zu] must be an integer ms time, got %s", bc->timestamps,
                      i + 1, luaL_typename(L, -1));
            return;
        }
        lua_pop(L, 1);                                  /* ctx paths items ts */
    }
    res->status = SL_STEP_NEXT;                         /* items stay on the stack */
}

/* Pushes the table of the model's GIDs as Lua strings, made as needed
 * once per Lua state and model (not hashed and interned per window): T in
 * the registry under st's address, T[0] = st->gen, T[i + 1] product i's GID. */
static void push_gids(struct builtin_step *st, lua_State *L) {
    lua_pushlightuserdata(L, st);
    lua_rawget(L, LUA_REGISTRYINDEX);                /* T? */
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 0);
        bool ours = lua_tonumber(L, -1) == st->gen;  /* not another model's */
        lua_pop(L, 1);
        if (ours) return;
    }
    lua_pop(L, 1);
    lua_createtable(L, (int)sl_catalog_count(sl_model_catalog(st->model)), 1); /* T */
    lua_pushnumber(L, st->gen);
    lua_rawseti(L, -2, 0);
    lua_pushlightuserdata(L, st);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);                /* T */
}

/* Pushes the JSON array {v[0], ...} of the model's result: GIDs (the table
 * of push_gids at gids_idx) or scores. */
static void push_array(lua_State *L, const struct sl_model_result *r, int gids_idx) {
    lua_createtable(L, (int)r->n, 0);                /* arr */
    for (size_t i = 0; i < r->n; i++) {
        if (!gids_idx) {
            lua_pushnumber(L, r->scores[i]);
        } else {
            lua_rawgeti(L, gids_idx, (int)r->items[i] + 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushstring(L, r->gids[i]);
                lua_pushvalue(L, -1);
                lua_rawseti(L, gids_idx, (int)r->items[i] + 1);
            }
        }
        lua_rawseti(L, -2, (int)i + 1);
    }
    sl_json_push_array_mt(L);                        /* arr mt */
    lua_setmetatable(L, -2);                         /* arr */
}

static void start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    struct builtin_step *st = state;
    const struct builtin_conf *bc = st->bc;
    lua_State *L = sl_rules_state(c->rules);
    int top = lua_gettop(L);
    size_t n = 0;

    if (!lua_checkstack(L, 9)) {
        bad_input(st, res, "out of Lua stack");
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);          /* ctx */
    int ctx_idx = lua_gettop(L);
    int paths = sl_step_push_path_cache(L);             /* ctx paths */
    res->status = SL_STEP_ERROR;
    if (!window_from_lists(st, L, paths, ctx_idx, res, &n)) {
        lua_settop(L, paths);
        window_from_lua(st, L, paths, ctx_idx, res, &n);
    }
    if (res->status != SL_STEP_NEXT) goto done;         /* bad_input said why */
    /* top_n was checked at load: recommend cannot fail. The window's
     * strings stay on the stack until done. */
    sl_model_recommend(st->model, st->items, bc->timestamps ? st->ts : NULL, n,
                       (size_t)bc->top_n, &st->res);
    if (bc->learn && n) sl_model_observe(st->model, st->items, n);
    push_gids(st, L);                                   /* ctx paths ... gids */
    int gids_idx = lua_gettop(L);
    lua_createtable(L, 0, 2);                           /* ctx paths ... gids out */
    push_array(L, &st->res, gids_idx);
    lua_setfield(L, -2, "itemIds");
    push_array(L, &st->res, 0);
    lua_setfield(L, -2, "preds");
    lua_setfield(L, ctx_idx, st->as);                   /* ctx paths ... */
done:
    lua_settop(L, top);
}

/* SIGHUP: the file again; a bad one keeps the model in use. */
static int reload(void *state, char *err, size_t errlen) {
    struct builtin_step *st = state;
    char why[SL_ERRLEN];
    struct sl_model *m = load_model(st->bc->file, st->bc->catalog, why, sizeof(why));
    if (!m) {
        sl_errf(err, errlen, "step %s: keeping the model in use: %s", st->name, why);
        return SL_ERR;
    }
    sl_model_destroy(st->owned);                        /* the one a reload loaded before */
    st->owned = m;
    st->model = m;
    st->gen = next_gen();                               /* its GIDs, not the old model's */
    sl_log(SL_LOG_INFO, "model", "step %s: model reloaded from %s (%zu products)", st->name,
           st->bc->file, sl_catalog_count(sl_model_catalog(m)));
    return SL_OK;
}

static void destroy(void *state) {
    struct builtin_step *st = state;
    if (!st) return;
    sl_model_destroy(st->owned);
    sl_model_result_free(&st->res);
    free(st->items);
    free(st->ts);
    sl_step_path_destroy(st->items_path);
    sl_step_path_destroy(st->ts_path);
    sl_step_path_destroy(st->items_at.parent);
    sl_step_path_destroy(st->ts_at.parent);
    free(st->vals[0]);
    free(st->vals[1]);
    sl_buf_free(&st->handles);
    free(st);
}

static const char *const builtin_keys[] = {NULL};

const struct sl_step_kind sl_step_builtin = {
    .name = "model",
    .synopsis = "model = {...}",
    .keys = builtin_keys,
    .type = SL_STEP_MODEL,
    .flags = 0,
    .load = NULL,                /* reached through step_model.c's load */
    .unload = unload_conf,
    .create = create,
    .start = start,
    .destroy = destroy,
    .reload = reload,
};
