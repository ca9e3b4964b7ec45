/* step.c -- the table of step kinds and helpers they share (see step.h). */
#define _GNU_SOURCE
#include "step.h"
#include "json.h"
#include "pipeline.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

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

/* Registry key of each VM's cache of path segments: a table whose slot
 * path->slot + i holds segment i of that path as a string of the VM. */
static char path_cache_key;
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
    lua_pushlightuserdata(L, &path_cache_key);
    lua_rawget(L, LUA_REGISTRYINDEX);                 /* cache */
    if (!lua_istable(L, -1)) {                        /* the VM's first path */
        lua_pop(L, 1);
        lua_newtable(L);                              /* cache */
        lua_pushlightuserdata(L, &path_cache_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
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
