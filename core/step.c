/* step.c -- the table of step kinds and helpers they share (see step.h). */
#define _GNU_SOURCE
#include "step.h"
#include "json.h"
#include "pipeline.h"
#include "regs.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

const struct sl_step_kind *const sl_step_kinds[] = {
    &sl_step_lua,
    &sl_step_kafka,
    &sl_step_window,
    &sl_step_store,
    &sl_step_http,
    &sl_step_model,
    NULL,
};

/* ==================== Context paths ==================== */

/* Each VM's cache of path segments (registry slot SL_REG_PATH_CACHE): a
 * table whose slot path->slot + i holds segment i of that path as a string
 * of the VM. */
/* Slots given out so far, process-wide: a slot is never given twice, so a
 * VM's cache can never answer a path with another's segment. */
static unsigned path_slots;

struct sl_step_path *sl_step_path_create(const char *dotted) {
    if (!dotted) return NULL;
    size_t len = strlen(dotted), n = 0;
    for (const char *q = dotted; *q; n++) {
        q += strcspn(q, ".");
        if (*q == '.') q++;
    }
    struct sl_step_path *p = sl_malloc(sizeof(*p) + n * sizeof(p->seg[0]) + len + 1);
    char *text = (char *)(p->seg + n);            /* after the segments, same block */
    memcpy(text, dotted, len + 1);
    p->text = text;
    p->n = n;
    for (size_t i = 0; i < n; i++) {
        p->seg[i].s = text;
        p->seg[i].len = strcspn(text, ".");
        text += p->seg[i].len;
        if (*text == '.') text++;
    }
    unsigned first = __atomic_fetch_add(&path_slots, (unsigned)n, __ATOMIC_RELAXED) + 1;
    /* 2^31 segments would take some 10^8 pipelines (a few paths each). */
    assert(first <= (unsigned)INT_MAX - (unsigned)n);
    p->slot = (int)first;
    return p;
}

void sl_step_path_destroy(struct sl_step_path *p) {
    free(p);   /* a VM's cached strings go with the VM */
}

/* Makes p's segments as strings of L in the cache at cache_idx. */
static void path_intern(lua_State *L, int cache_idx, const struct sl_step_path *p) {
    for (size_t i = 0; i < p->n; i++) {
        lua_pushlstring(L, p->seg[i].s, p->seg[i].len);
        lua_rawseti(L, cache_idx, p->slot + (int)i);
    }
}

int sl_step_push_path_cache(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, SL_REG_PATH_CACHE); /* cache */
    if (!lua_istable(L, -1)) {                        /* the VM's first path */
        lua_pop(L, 1);
        lua_newtable(L);                              /* cache */
        lua_getglobal(L, "type");                     /* for getters (see sl_rules_create) */
        lua_rawseti(L, -2, 0);
        lua_pushvalue(L, -1);
        lua_rawseti(L, LUA_REGISTRYINDEX, SL_REG_PATH_CACHE);
    }
    return lua_gettop(L);
}

void sl_step_push_path(lua_State *L, int cache_idx, int ctx_idx, const struct sl_step_path *p) {
    if (!p->n || !lua_istable(L, ctx_idx)) {
        if (p->n) lua_pushnil(L);                     /* nil */
        else lua_pushvalue(L, ctx_idx);               /* ctx */
        return;
    }
    lua_rawgeti(L, cache_idx, p->slot);               /* seg */
    if (lua_isnil(L, -1)) {                           /* the path's first read in L */
        lua_pop(L, 1);
        path_intern(L, cache_idx, p);
        lua_rawgeti(L, cache_idx, p->slot);
    }
    lua_gettable(L, ctx_idx);         /* v: through __index, a lazy value makes it */
    for (size_t i = 1; i < p->n; i++) {
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);                           /* nil */
            return;
        }
        lua_rawgeti(L, cache_idx, p->slot + (int)i);  /* v seg */
        lua_gettable(L, -2);                          /* v v' */
        lua_replace(L, -2);                           /* v' */
    }
}

/* ==================== Getters ==================== */

/* Past this many segments or paths, a getter's function would need more
 * upvalues (60) or locals (200) than LuaJIT allows: it reads path by path. */
#define GETTER_MAX_SEGS 48

struct sl_step_getter {
    int slot;                /* its function's slot in each VM's path cache */
    bool by_path;            /* too many segments for one function */
    size_t n;
    struct sl_step_path *paths[]; /* n of them, borrowed */
};

struct sl_step_getter *sl_step_getter_create(struct sl_step_path *const *paths, size_t n) {
    struct sl_step_getter *g = sl_malloc(sizeof(*g) + n * sizeof(g->paths[0]));
    size_t segs = 0;
    g->n = n;
    for (size_t i = 0; i < n; i++) {
        g->paths[i] = paths[i];
        segs += paths[i]->n;
    }
    g->by_path = segs > GETTER_MAX_SEGS || n > GETTER_MAX_SEGS; /* upvalues, locals */
    g->slot = (int)__atomic_fetch_add(&path_slots, 1u, __ATOMIC_RELAXED) + 1;
    assert(g->slot > 0);
    return g;
}

void sl_step_getter_destroy(struct sl_step_getter *g) {
    free(g);   /* a VM's function goes with the VM */
}

/* Makes g's function in L and leaves it on the stack:
 *   local type, s1, s2, ... = ...   -- the segments, as upvalues
 *   return function(c)
 *     local v1 = c[s1]
 *     local v2 = c[s2]; if type(v2) == "table" then v2 = v2[s3] else v2 = nil end
 *     return v1, v2
 *   end
 * the reads of sl_step_push_path, one path after the other. */
static void getter_make(lua_State *L, int cache_idx, const struct sl_step_getter *g) {
    struct sl_buf src = {0};
    size_t seg = 0;
    sl_buf_adds(&src, "local type");
    for (size_t i = 0; i < g->n; i++)
        for (size_t k = 0; k < g->paths[i]->n; k++) sl_buf_printf(&src, ", s%zu", ++seg);
    sl_buf_adds(&src, " = ...\nreturn function(c)\n");
    seg = 0;
    for (size_t i = 0; i < g->n; i++) {
        const struct sl_step_path *p = g->paths[i];
        if (!p->n) {
            sl_buf_printf(&src, "local v%zu = c\n", i + 1);
            continue;
        }
        sl_buf_printf(&src, "local v%zu = c[s%zu]\n", i + 1, ++seg);
        for (size_t k = 1; k < p->n; k++)
            sl_buf_printf(&src, "if type(v%zu) == 'table' then v%zu = v%zu[s%zu] else v%zu = nil end\n",
                          i + 1, i + 1, i + 1, ++seg, i + 1);
    }
    sl_buf_adds(&src, "return ");
    for (size_t i = 0; i < g->n; i++) sl_buf_printf(&src, "%sv%zu", i ? ", " : "", i + 1);
    sl_buf_adds(&src, "\nend\n");
    if (luaL_loadbuffer(L, src.data, src.len, "=sluice.paths")) {
        sl_buf_free(&src);
        lua_error(L);                                 /* out of memory: our own code is valid */
    }
    sl_buf_free(&src);
    lua_rawgeti(L, cache_idx, 0);                     /* the base library's type */
    for (size_t i = 0; i < g->n; i++)
        for (size_t k = 0; k < g->paths[i]->n; k++)
            lua_pushlstring(L, g->paths[i]->seg[k].s, g->paths[i]->seg[k].len);
    lua_call(L, 1 + (int)seg, 1);                     /* fn */
}

static void push_by_path(lua_State *L, int cache_idx, int ctx_idx, const struct sl_step_getter *g) {
    for (size_t i = 0; i < g->n; i++) sl_step_push_path(L, cache_idx, ctx_idx, g->paths[i]);
}

void sl_step_push_getter(lua_State *L, int cache_idx, int ctx_idx, const struct sl_step_getter *g) {
    if (g->by_path || !lua_istable(L, ctx_idx)) {
        push_by_path(L, cache_idx, ctx_idx, g);
        return;
    }
    lua_rawgeti(L, cache_idx, g->slot);               /* fn? */
    if (!lua_isfunction(L, -1)) {                     /* the getter's first use in L */
        lua_pop(L, 1);
        lua_rawgeti(L, cache_idx, 0);
        bool typed = lua_isfunction(L, -1);
        lua_pop(L, 1);
        if (!typed) {                                 /* no type function when the cache was made */
            push_by_path(L, cache_idx, ctx_idx, g);
            return;
        }
        getter_make(L, cache_idx, g);
        lua_pushvalue(L, -1);
        lua_rawseti(L, cache_idx, g->slot);           /* fn */
    }
    lua_pushvalue(L, ctx_idx);                        /* fn ctx */
    lua_call(L, 1, (int)g->n);                        /* v1 .. vn */
}

/* ==================== Other helpers ==================== */

int sl_step_encode_vars(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen) {
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
    int rc = sl_json_encode_sorted(L, -1, out, err, errlen);
    lua_pop(L, 1);
    return rc;
}

void sl_step_json_str(lua_State *L, struct sl_buf *b, const char *s, size_t n) {
    char err[64];
    lua_pushlstring(L, s, n);
    if (sl_json_encode(L, -1, b, err, sizeof(err))) sl_buf_adds(b, "\"(not UTF-8)\"");
    lua_pop(L, 1);
}

void sl_step_trace_write(struct sl_pipeline_ctx *c, lua_State *L, const char *what,
                         const char *topic, const char *key, size_t keylen,
                         const struct sl_buf *value) {
    if (!sl_pipeline_tracing(c)) return;
    struct sl_buf t = {0};
    sl_buf_addc(&t, '{');
    if (topic) {
        sl_buf_adds(&t, "\"topic\":");
        sl_step_json_str(L, &t, topic, strlen(topic));
        sl_buf_addc(&t, ',');
    }
    sl_buf_adds(&t, "\"key\":");
    if (key) sl_step_json_str(L, &t, key, keylen);
    else sl_buf_adds(&t, "null");
    sl_buf_adds(&t, ",\"value\":");
    sl_buf_add(&t, value->data ? value->data : "", value->len);
    sl_buf_addc(&t, '}');
    sl_pipeline_trace(c, what, sl_buf_cstr(&t));
    sl_buf_free(&t);
}

void sl_step_input_name(const struct sl_input *in, char *out, size_t n) {
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
