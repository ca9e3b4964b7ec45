/* json_fuzz.c -- libFuzzer target for the core's one JSON codec (json.c and
 * the lazy records of lazy.c), differential.
 *
 * The first input byte picks the lazy objects' eager bound (0: every object
 * lazy), whether a few members are read before the encoder walks the value,
 * and whether the value is changed as a rule changes it (its first member
 * deleted, one added); the rest is the JSON text. Checked on every input:
 *   - the eager decoder, the tape and the lazy push accept the same texts and
 *     word the same error; the scanner (the collector's) accepts the same;
 *   - an accepted text encodes (keys in byte order) to the same bytes
 *     decoded eagerly and decoded lazily, read in part or not at all, changed
 *     or not (the encoder writes what a lazy object did not make from its
 *     tape, json.c's enc_tape_object);
 *   - that encoding decodes again to a value that encodes to the same bytes.
 * Any disagreement aborts with both sides on stderr. */
#include "json.h"
#include "lazy.h"
#include "sl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static void differ(const char *what, const char *a, const char *b) {
    fprintf(stderr, "json_fuzz: %s differ:\n  %s\n  %s\n", what, a, b);
    abort();
}

/* Encodes the value on top (popped) into out; the error text when it fails. */
static int encode_top(struct sl_buf *out, char *err, size_t errlen) {
    int ret = sl_json_encode_sorted(L, -1, out, err, errlen);
    lua_pop(L, 1);
    return ret;
}

/* Reads the lazy value on top at the first keys of the eager one below it
 * (through __index, as a rule reads ctx.input.x). */
static void touch(void) {
    int n = 0;
    if (!lua_istable(L, -1) || !lua_istable(L, -2)) return;
    lua_pushnil(L);                           /* eager lazy nil */
    while (n < 3 && lua_next(L, -3)) {        /* eager lazy k v */
        lua_pop(L, 1);
        lua_pushvalue(L, -1);                 /* eager lazy k k */
        lua_gettable(L, -3);                  /* eager lazy k v' */
        lua_pop(L, 1);
        n++;
    }
    if (n == 3) lua_pop(L, 1);                /* the key lua_next left */
}

/* Changes the eager value and the lazy one above it alike: deletes the
 * eager one's first member (its first key, in lua_next order) and sets
 * new = true, as a rule changes ctx.input. */
static void change(void) {
    int lz = lua_gettop(L), ea = lz - 1;
    if (!lua_istable(L, lz) || !lua_istable(L, ea)) return;
    lua_pushnil(L);                           /* eager lazy nil */
    if (lua_next(L, ea)) {                    /* eager lazy k v */
        lua_pop(L, 1);                        /* eager lazy k */
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_settable(L, lz);                  /* eager lazy k */
        lua_pushnil(L);
        lua_settable(L, ea);                  /* eager lazy */
    }
    for (int t = ea; t <= lz; t++) {
        lua_pushliteral(L, "new");
        lua_pushboolean(L, 1);
        lua_settable(L, t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err_d[256] = "", err_t[256] = "", err_l[256] = "", err_s[256] = "", err_e[256] = "";
    struct sl_json_tape tape = {0};
    struct sl_buf eager = {0}, lazy = {0}, again = {0};
    const char *s = (const char *)data + 1;
    size_t n = size ? size - 1 : 0;
    int rd, rt, rl, rs;

    if (size == 0) return 0;
    L = luaL_newstate();                       /* per input: LuaJIT's memory is not */
    luaL_openlibs(L);                          /* malloc's, so the leak check could not */
    sl_json_init(L);                           /* see what the registry holds */
    sl_lazy_init(L);
    sl_lazy_eager_members(data[0] & 1 ? 0 : 4);

    rd = sl_json_decode(L, s, n, err_d, sizeof(err_d));
    rt = sl_json_tape_parse(&tape, s, n, err_t, sizeof(err_t));
    rl = sl_lazy_push(L, s, n, err_l, sizeof(err_l));
    rs = sl_json_scan(s, n, 0, NULL, NULL, err_s, sizeof(err_s));
    if (rd != rt || (rd && strcmp(err_d, err_t))) differ("decoder and tape", err_d, err_t);
    if (rd != rl || (rd && strcmp(err_d, err_l))) differ("decoder and lazy push", err_d, err_l);
    if (rd != rs) differ("decoder and scanner", err_d, err_s);
    if (rd == SL_OK) {                         /* stack: eager lazy */
        if (data[0] & 2) touch();
        if (data[0] & 4) change();
        if (encode_top(&lazy, err_e, sizeof(err_e))) sl_buf_adds(&lazy, err_e);
        rd = encode_top(&eager, err_e, sizeof(err_e));
        if (rd) sl_buf_adds(&eager, err_e);
        if (eager.len != lazy.len || memcmp(eager.data, lazy.data, eager.len))
            differ("eager and lazy encodings", sl_buf_cstr(&eager), sl_buf_cstr(&lazy));
        if (rd == SL_OK) {
            if (sl_json_decode(L, eager.data, eager.len, err_e, sizeof(err_e)))
                differ("an encoding and the decoder", sl_buf_cstr(&eager), err_e);
            if (encode_top(&again, err_e, sizeof(err_e)) ||
                again.len != eager.len || memcmp(again.data, eager.data, eager.len))
                differ("an encoding and its round trip", sl_buf_cstr(&eager), sl_buf_cstr(&again));
        }
    }
    lua_close(L);
    free(tape.nodes);
    sl_buf_free(&eager);
    sl_buf_free(&lazy);
    sl_buf_free(&again);
    return 0;
}
