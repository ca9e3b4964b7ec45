/* step_store.c -- the store step kind: writes a visitor's latest
 * recommendations to the store the read API answers from (see recs.h,
 * store.h).
 *
 *   { name = "store", store = { key = "userId", value = "recommendationIds",
 *       max_keys = 100000, ttl = "30m", redis = env("STORE_REDIS_URL", nil),
 *       catalog = "examples/catalog.json" } }
 *
 * value names a variable holding a list of product GIDs (strings, or
 * tables with an id or gid field); the stored value is their JSON array.
 * Each write carries the input record's stamp (store.h), so an older
 * result never replaces a newer one, also when records are replayed. The
 * context goes on once the value is written or found stale; on Redis it is
 * pending meanwhile, and while Redis is down it waits (retried with
 * backoff, its offset not committed). A context without the key or the
 * value is filtered; a value that is not a list is dead-lettered. Without a
 * store (sluice test) the value is traced. Restore records skip it. */
#define _GNU_SOURCE
#include "step.h"
#include "pipeline.h"
#include "recs.h"
#include "rules.h"
#include "store.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* A context waiting for Redis. */
struct pend {
    struct store_step *st;
    struct sl_pipeline_ctx *c;
    struct sl_store_op *op;
    struct pend *prev, *next;
};

struct store_step {
    const struct sl_recs_conf *rc;
    struct sl_store *store;          /* NULL: trace mode */
    struct sl_step_path *key;        /* rc->key split */
    struct sl_step_path *value;      /* rc->value split */
    struct pend *pending;            /* contexts waiting for Redis */
    struct sl_buf buf;               /* scratch for the value */
    char err[SL_ERRLEN];             /* the last result's error */
};

/* ==================== Config ==================== */

static int load_conf(struct sl_config_cur *c, const char *path, struct sl_step_conf *s,
                     size_t pos) {
    static const char *const keys[] = {"key", "value", "max_keys", "ttl", "redis", "catalog",
                                       NULL};
    char p[SL_CONFIG_PATHLEN];
    struct sl_recs_conf *rc = sl_calloc(1, sizeof(*rc));
    (void)pos;

    s->data = rc;                                    /* freed by unload_conf */
    sl_config_join(p, path, "store");
    if (sl_config_enter(c, path, "store") != 1) return SL_ERR;
    int ret = (sl_config_only_keys(c, p, keys) ||
               sl_config_need_str(c, p, "key", &rc->key) ||
               sl_config_need_str(c, p, "value", &rc->value) ||
               sl_config_get_int(c, p, "max_keys", SL_RECS_DEFAULT_MAX_KEYS, 1, &rc->max_keys) ||
               sl_config_get_duration(c, p, "ttl", SL_RECS_DEFAULT_TTL_MS, &rc->ttl_ms) ||
               sl_config_get_str(c, p, "redis", NULL, &rc->redis) ||
               sl_config_get_str(c, p, "catalog", NULL, &rc->catalog)) ? SL_ERR : SL_OK;
    if (ret == SL_OK && rc->ttl_ms < 1) {
        char tp[SL_CONFIG_PATHLEN];
        sl_config_join(tp, p, "ttl");
        lua_getfield(sl_config_state(c), -1, "ttl");
        ret = sl_config_fail(c, tp, "a duration of at least 1ms", -1);
        lua_pop(sl_config_state(c), 1);
    }
    if (ret == SL_OK && rc->redis && !*rc->redis) {  /* STORE_REDIS_URL="" */
        free(rc->redis);
        rc->redis = NULL;
    }
    char uerr[SL_ERRLEN];
    if (ret == SL_OK && rc->redis && sl_store_check_url(rc->redis, uerr, sizeof(uerr))) {
        char rp[SL_CONFIG_PATHLEN];
        sl_config_join(rp, p, "redis");
        lua_pushstring(sl_config_state(c), "(not shown)");
        ret = sl_config_fail(c, rp, uerr, -1);
        lua_pop(sl_config_state(c), 1);
    }
    lua_pop(sl_config_state(c), 1);
    return ret;
}

static void unload_conf(struct sl_step_conf *s) {
    struct sl_recs_conf *rc = s->data;
    if (!rc) return;
    free(rc->key);
    free(rc->value);
    free(rc->redis);
    free(rc->catalog);
    free(rc);
    s->data = NULL;
}

/* ==================== Running ==================== */

static void *create(const struct sl_step_env *env) {
    struct store_step *st = sl_calloc(1, sizeof(*st));
    st->rc = env->cf->steps[env->index].data;
    st->store = env->store;
    st->key = sl_step_path_create(st->rc->key);
    st->value = sl_step_path_create(st->rc->value);
    return st;
}

/* Appends the JSON array of the GIDs in the list at idx: strings, or the id
 * (or gid) field of tables. GIDs needing JSON escapes are left out (no
 * product GID has one), so the read API can split the array. SL_ERR when
 * the value is no list. */
static int encode_ids(lua_State *L, int idx, struct sl_buf *b) {
    bool first = true;
    if (!lua_istable(L, idx)) return SL_ERR;
    size_t n = lua_objlen(L, idx);
    sl_buf_addc(b, '[');
    for (size_t i = 1; i <= n; i++) {
        size_t len = 0;
        lua_rawgeti(L, idx, (int)i);                 /* ... item */
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "id");               /* ... item id */
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_getfield(L, -1, "gid");          /* ... item gid */
            }
            lua_remove(L, -2);                       /* ... id */
        }
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        bool plain = s && len > 0;
        for (size_t j = 0; plain && j < len; j++)
            plain = (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\';
        if (plain) {
            if (!first) sl_buf_addc(b, ',');
            first = false;
            sl_buf_addc(b, '"');
            sl_buf_add(b, s, len);
            sl_buf_addc(b, '"');
        }
        lua_pop(L, 1);                               /* ... */
    }
    sl_buf_addc(b, ']');
    return SL_OK;
}

/* The stamp of the context's input record (store.h). */
static void stamp_of(const struct sl_input *in, struct sl_store_stamp *st) {
    uint32_t h = 2166136261u;
    for (const char *p = in->topic ? in->topic : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    st->source = (h ^ (uint32_t)in->partition) * 16777619u;
    st->time_ms = in->timestamp > 0 ? in->timestamp : 0;
    st->offset = in->offset;
}

static void pend_unlink(struct store_step *st, struct pend *p) {
    if (p->prev) p->prev->next = p->next; else st->pending = p->next;
    if (p->next) p->next->prev = p->prev;
}

/* Redis wrote the value or found a newer one: the context goes on. */
static void written(void *arg, enum sl_store_result r) {
    struct pend *p = arg;
    struct sl_step_result res = {.status = SL_STEP_NEXT};
    struct sl_pipeline_ctx *c = p->c;
    (void)r;
    pend_unlink(p->st, p);
    free(p);
    sl_pipeline_resume(c, &res);
}

static void start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    struct store_step *st = state;
    lua_State *L = sl_rules_state(c->rules);
    struct sl_buf *b = &st->buf;
    char key[SL_STORE_MAX_KEY];
    size_t klen = 0;
    int top = lua_gettop(L);

    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);          /* ctx */
    int ctx_idx = lua_gettop(L);
    int paths = sl_step_push_path_cache(L);             /* ctx paths */
    sl_step_push_path(L, paths, ctx_idx, st->key);      /* ctx paths key */
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        const char *k = lua_tolstring(L, -1, &klen);
        if (klen > 0 && klen < sizeof(key)) {
            for (size_t i = 0; i < klen; i++) key[i] = (char)tolower((unsigned char)k[i]);
            key[klen] = '\0';
        } else {
            klen = 0;
        }
    }
    if (!klen) {
        lua_settop(L, top);
        res->status = SL_STEP_FILTERED;
        res->reason = "no_store_key";
        return;
    }
    sl_step_push_path(L, paths, ctx_idx, st->value);    /* ctx paths key value */
    if (lua_isnil(L, -1)) {
        lua_settop(L, top);
        res->status = SL_STEP_FILTERED;
        res->reason = "no_store_value";
        return;
    }
    sl_buf_reset(b);
    if (encode_ids(L, lua_gettop(L), b)) {
        snprintf(st->err, sizeof(st->err), "store: %s: expected a list of product GIDs, got %s",
                 st->rc->value, luaL_typename(L, -1));
        lua_settop(L, top);
        res->status = SL_STEP_ERROR;
        res->error = st->err;
        return;
    }
    lua_settop(L, top);
    if (!st->store) {                                     /* sluice test */
        sl_step_trace_write(c, L, "store", NULL, key, klen, b);
        res->status = SL_STEP_NEXT;
        return;
    }
    struct sl_store_stamp stamp;
    struct pend *p = sl_calloc(1, sizeof(*p));
    stamp_of(c->in, &stamp);
    enum sl_store_result r = sl_store_put(st->store, key, klen, &stamp, b->data, b->len,
                                          written, p, &p->op);
    if (r != SL_STORE_PENDING) {
        free(p);
        res->status = SL_STEP_NEXT;
        return;
    }
    p->st = st;
    p->c = c;
    p->next = st->pending;
    if (p->next) p->next->prev = p;
    st->pending = p;
    res->status = SL_STEP_PENDING;
}

/* The pipeline is going: its pending contexts are never resumed. */
static void cancel(void *state) {
    struct store_step *st = state;
    while (st->pending) {
        struct pend *p = st->pending;
        st->pending = p->next;
        sl_store_cancel(p->op);
        free(p);
    }
}

static void destroy(void *state) {
    struct store_step *st = state;
    if (!st) return;
    cancel(st);
    sl_step_path_destroy(st->key);
    sl_step_path_destroy(st->value);
    sl_buf_free(&st->buf);
    free(st);
}

static const char *const store_keys[] = {NULL};

const struct sl_step_kind sl_step_store = {
    .name = "store",
    .synopsis = "store = {...}",
    .keys = store_keys,
    .type = SL_STEP_STORE,
    .flags = SL_STEP_SINK,
    .load = load_conf,
    .unload = unload_conf,
    .create = create,
    .start = start,
    .cancel = cancel,
    .destroy = destroy,
};
