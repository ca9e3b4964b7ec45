/* step.c -- the table of step kinds and helpers they share (see step.h). */
#define _GNU_SOURCE
#include "step.h"
#include "json.h"
#include "pipeline.h"

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

/* ==================== Helpers for kinds ==================== */

void sl_step_push_path(lua_State *L, int ctx_idx, const char *path) {
    lua_pushvalue(L, ctx_idx);
    while (*path) {
        size_t n = strcspn(path, ".");
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        lua_pushlstring(L, path, n);
        lua_gettable(L, -2);          /* through __index: a lazy value makes it */
        lua_remove(L, -2);
        path += n;
        if (*path == '.') path++;
    }
}

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
