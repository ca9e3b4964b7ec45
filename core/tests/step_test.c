/* step_test.c -- unit tests of the helpers step kinds share (core/step.c):
 * context paths split once and read per record in any VM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "json.h"
#include "lazy.h"
#include "sl.h"
#include "step.h"
#include "test.h"

/* ==================== Helpers ==================== */

/* A VM as the rules have it: JSON and lazy values set up. */
static lua_State *vm(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    sl_json_init(L);
    sl_lazy_init(L);
    return L;
}

/* Runs chunk s (it returns the context table) and leaves its result on the
 * stack; exits when it fails, as every case needs it. */
static void push_chunk(lua_State *L, const char *s) {
    if (luaL_loadstring(L, s) || lua_pcall(L, 0, 1, 0)) {
        printf("# lua error: %s\n", lua_tostring(L, -1));
        exit(1);
    }
}

/* Pushes the value of p in the context at ctx_idx as a step reads it. */
static void push_path(lua_State *L, int ctx_idx, const struct sl_step_path *p) {
    int paths = sl_step_push_path_cache(L);
    sl_step_push_path(L, paths, ctx_idx, p);
    lua_remove(L, paths);
}

/* The value of path in the context at the top as text ("nil", "string:x",
 * "number:5", "table"), the stack as it was; *grew is what the read left
 * on the stack besides the cache (1 expected). */
static const char *read_path(lua_State *L, const char *path, int *grew) {
    static char out[128];
    struct sl_step_path *p = sl_step_path_create(path);
    int top = lua_gettop(L);
    int paths = sl_step_push_path_cache(L);
    sl_step_push_path(L, paths, top, p);
    *grew = lua_gettop(L) - paths;
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER)
        snprintf(out, sizeof(out), "%s:%s", lua_typename(L, t), lua_tostring(L, -1));
    else
        snprintf(out, sizeof(out), "%s", lua_typename(L, t));
    lua_settop(L, top);
    sl_step_path_destroy(p);
    return out;
}

/* read_path, checked against want and a stack grown by one. */
static int reads(lua_State *L, const char *path, const char *want) {
    int grew;
    const char *got = read_path(L, path, &grew);
    if (strcmp(got, want) || grew != 1)
        printf("# ctx.%s: expected %s (stack +1), got %s (stack %+d)\n", path, want, got, grew);
    return !strcmp(got, want) && grew == 1;
}

/* ==================== Splitting ==================== */

static void test_split(void) {
    struct sl_step_path *p = sl_step_path_create("product.slug");
    TEST("split: two segments", p->n == 2 && p->seg[0].len == 7 &&
         !memcmp(p->seg[0].s, "product", 7) && p->seg[1].len == 4 &&
         !memcmp(p->seg[1].s, "slug", 4));
    TEST("split: the text is kept for messages", !strcmp(p->text, "product.slug"));
    struct sl_step_path *q = sl_step_path_create("product.slug");
    TEST("split: each path has slots of its own", q->slot >= p->slot + 2 || p->slot >= q->slot + 2);
    sl_step_path_destroy(q);
    sl_step_path_destroy(p);

    char buf[] = "userId";
    p = sl_step_path_create(buf);
    buf[0] = 'X';
    TEST("split: the text is copied", p->n == 1 && p->seg[0].len == 6 &&
         !memcmp(p->seg[0].s, "userId", 6) && !strcmp(p->text, "userId"));
    sl_step_path_destroy(p);

    p = sl_step_path_create("a..b");
    TEST("split: \"a..b\" has an empty segment between", p->n == 3 && p->seg[1].len == 0 &&
         p->seg[2].len == 1 && p->seg[2].s[0] == 'b');
    sl_step_path_destroy(p);
    p = sl_step_path_create("a.");
    TEST("split: a trailing dot ends the path", p->n == 1 && p->seg[0].len == 1);
    sl_step_path_destroy(p);
    p = sl_step_path_create("");
    TEST("split: \"\" has no segment", p->n == 0);
    sl_step_path_destroy(p);
    TEST("split: NULL gives NULL", sl_step_path_create(NULL) == NULL);
    sl_step_path_destroy(NULL);
}

/* ==================== Reading ==================== */

static void test_read(void) {
    lua_State *L = vm();
    push_chunk(L, "return { userId = 'u1', n = 5, product = { slug = 'mug', price = { eur = 12 } },"
                  " s = 'text', a = { [''] = { b = 'empty' } },"
                  " m = setmetatable({}, { __index = function(t, k) return k .. '!' end }) }");
    TEST("read: a single segment", reads(L, "userId", "string:u1"));
    TEST("read: a number", reads(L, "n", "number:5"));
    TEST("read: nested", reads(L, "product.slug", "string:mug"));
    TEST("read: three deep", reads(L, "product.price.eur", "number:12"));
    TEST("read: a table", reads(L, "product.price", "table"));
    TEST("read: a missing variable is nil", reads(L, "nope", "nil"));
    TEST("read: a missing intermediate is nil", reads(L, "nope.slug.x", "nil"));
    TEST("read: a missing last member is nil", reads(L, "product.nope", "nil"));
    TEST("read: through a string is nil (no string method)", reads(L, "s.len", "nil"));
    TEST("read: through a number is nil", reads(L, "n.x", "nil"));
    TEST("read: through a leaf deeper is nil", reads(L, "product.slug.x.y", "nil"));
    TEST("read: an empty segment is a key \"\"", reads(L, "a..b", "string:empty"));
    TEST("read: a trailing dot is ignored", reads(L, "userId.", "string:u1"));
    TEST("read: \"\" is the context", reads(L, "", "table"));
    TEST("read: members come through __index", reads(L, "m.hello", "string:hello!"));

    /* The same path object read many times (its strings cached in L),
     * with the cache pushed once and once per read. */
    struct sl_step_path *p = sl_step_path_create("product.slug");
    int ok = 1, paths = sl_step_push_path_cache(L);
    for (int i = 0; i < 1000 && ok; i++) {
        sl_step_push_path(L, paths, 1, p);
        ok = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "mug") &&
             lua_gettop(L) == 3;
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    for (int i = 0; i < 1000 && ok; i++) {
        push_path(L, 1, p);
        ok = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "mug") &&
             lua_gettop(L) == 2;
        lua_pop(L, 1);
    }
    TEST("read: the same path 1000 times", ok);
    int first = sl_step_push_path_cache(L), second = sl_step_push_path_cache(L);
    TEST("read: the VM keeps one cache", first == 2 && second == 3 && lua_istable(L, first) &&
         lua_rawequal(L, first, second));
    lua_settop(L, 1);
    sl_step_path_destroy(p);
    lua_pushliteral(L, "not a table");
    TEST("read: a context that is no table reads nil", reads(L, "len", "nil"));
    TEST("read: ... and \"\" is that value", reads(L, "", "string:not a table"));
    lua_close(L);
}

/* A lazy record (lazy.h) read through a path: members are made by its
 * __index, never skipped as absent. */
static void test_lazy(void) {
    static const char doc[] = "{\"message\":{\"data\":{\"url\":\"https://s/products/mug\","
                              "\"n\":3,\"flag\":true},\"other\":[1,2]},\"x\":\"y\"}";
    char err[SL_ERRLEN];
    size_t was = sl_lazy_eager_members(0);            /* every object lazy */
    lua_State *L = vm();
    lua_newtable(L);                                  /* ctx */
    int ok = sl_lazy_push(L, doc, sizeof(doc) - 1, err, sizeof(err)) == SL_OK;
    TEST("lazy: the record parses", ok);
    if (!ok) {
        printf("# %s\n", err);
        lua_close(L);
        sl_lazy_eager_members(was);
        return;
    }
    lua_setfield(L, 1, "input");                      /* ctx */
    lua_getfield(L, 1, "input");
    lua_pushliteral(L, "message");
    lua_rawget(L, -2);
    TEST("lazy: the member is not made yet", sl_lazy_is(L, -2) && lua_isnil(L, -1));
    lua_settop(L, 1);
    TEST("lazy: a nested string", reads(L, "input.message.data.url", "string:https://s/products/mug"));
    TEST("lazy: a nested number", reads(L, "input.message.data.n", "number:3"));
    TEST("lazy: an object", reads(L, "input.message.data", "table"));
    TEST("lazy: a missing member is nil", reads(L, "input.message.nope.url", "nil"));
    TEST("lazy: through an array", reads(L, "input.message.other", "table"));
    TEST("lazy: a top-level member", reads(L, "input.x", "string:y"));
    lua_getfield(L, 1, "input");
    lua_pushliteral(L, "message");
    lua_rawget(L, -2);
    TEST("lazy: the read made the member", lua_istable(L, -1));
    lua_close(L);
    sl_lazy_eager_members(was);
}

/* One path read in two VMs, one closed in between: each reads its own
 * strings. */
static void test_two_vms(void) {
    lua_State *a = vm(), *b = vm();
    struct sl_step_path *p = sl_step_path_create("product.slug");
    push_chunk(a, "return { product = { slug = 'from-a' } }");
    push_chunk(b, "return { product = { slug = 'from-b' } }");
    push_path(a, 1, p);
    push_path(b, 1, p);
    TEST("two VMs: each reads its context",
         !strcmp(lua_tostring(a, -1), "from-a") && !strcmp(lua_tostring(b, -1), "from-b"));
    lua_settop(a, 1);
    lua_settop(b, 1);
    lua_close(a);                                     /* a reload closed the old VM */
    lua_gc(b, LUA_GCCOLLECT, 0);
    push_path(b, 1, p);
    TEST("two VMs: the other still reads after one closed",
         lua_type(b, -1) == LUA_TSTRING && !strcmp(lua_tostring(b, -1), "from-b"));
    lua_settop(b, 1);

    /* A VM made after the path was read elsewhere. */
    lua_State *c = vm();
    push_chunk(c, "return { product = { slug = 'from-c' } }");
    push_path(c, 1, p);
    TEST("two VMs: a new VM reads the path",
         lua_type(c, -1) == LUA_TSTRING && !strcmp(lua_tostring(c, -1), "from-c"));
    lua_close(c);
    sl_step_path_destroy(p);

    /* A path freed and another made (maybe at the same address) in a VM
     * that cached the first: the second reads its own segments. */
    push_chunk(b, "return { userId = 'u', eventId = 'e' }");
    p = sl_step_path_create("userId");
    push_path(b, 2, p);
    lua_pop(b, 1);
    sl_step_path_destroy(p);
    p = sl_step_path_create("eventId");
    push_path(b, 2, p);
    TEST("two VMs: a new path never reads an old one's segments",
         lua_type(b, -1) == LUA_TSTRING && !strcmp(lua_tostring(b, -1), "e"));
    sl_step_path_destroy(p);
    lua_close(b);
}

/* ==================== Getters ==================== */

/* Reads paths[0..n) of the context at the top with one getter and one by
 * one with sl_step_push_path: true when both give the same values (as
 * read_path spells them) and the getter left exactly n values. */
static int getter_agrees(lua_State *L, const char *const *paths, size_t n, int times) {
    struct sl_step_path **ps = calloc(n, sizeof(*ps));
    for (size_t i = 0; i < n; i++) ps[i] = sl_step_path_create(paths[i]);
    struct sl_step_getter *g = sl_step_getter_create(ps, n);
    int top = lua_gettop(L), ok = 1;
    for (int round = 0; round < times && ok; round++) {
        int cache = sl_step_push_path_cache(L);
        sl_step_push_getter(L, cache, top, g);
        if (lua_gettop(L) != cache + (int)n) {
            printf("# getter: %d values, expected %zu\n", lua_gettop(L) - cache, n);
            ok = 0;
        }
        for (size_t i = 0; ok && i < n; i++) {
            sl_step_push_path(L, cache, top, ps[i]);
            if (!lua_rawequal(L, -1, cache + 1 + (int)i) &&
                !(lua_type(L, -1) == LUA_TNUMBER && lua_type(L, cache + 1 + (int)i) == LUA_TNUMBER &&
                  lua_tonumber(L, -1) == lua_tonumber(L, cache + 1 + (int)i))) {
                printf("# getter: ctx.%s: got a %s, one by one a %s\n", paths[i],
                       luaL_typename(L, cache + 1 + (int)i), luaL_typename(L, -1));
                ok = 0;
            }
            lua_pop(L, 1);
        }
        lua_settop(L, top);
    }
    sl_step_getter_destroy(g);
    for (size_t i = 0; i < n; i++) sl_step_path_destroy(ps[i]);
    free(ps);
    return ok;
}

static void test_getter(void) {
    static const char *const paths[] = {
        "userId", "n", "product.slug", "product.price.eur", "product.price", "nope",
        "nope.slug.x", "product.nope", "s.len", "n.x", "product.slug.x.y", "a..b", "userId.",
        "", "m.hello", "userId",
    };
    const size_t n = sizeof(paths) / sizeof(paths[0]);
    static const char ctx[] =
        "return { userId = 'u1', n = 5, product = { slug = 'mug', price = { eur = 12 } },"
        " s = 'text', a = { [''] = { b = 'empty' } },"
        " m = setmetatable({}, { __index = function(t, k) return k .. '!' end }) }";
    lua_State *L = vm();
    push_chunk(L, ctx);
    TEST("getter: reads what the paths read one by one", getter_agrees(L, paths, n, 1));
    TEST("getter: ... 1000 times over (its function made once)", getter_agrees(L, paths, n, 1000));
    TEST("getter: a single path", getter_agrees(L, paths + 2, 1, 3));
    TEST("getter: no path", getter_agrees(L, paths, 0, 3));
    lua_settop(L, 0);
    lua_pushliteral(L, "not a table");
    TEST("getter: a context that is no table", getter_agrees(L, paths, n, 2));
    lua_settop(L, 0);

    /* More segments than one function's upvalues take: read path by path. */
    const char *many[64];
    for (size_t i = 0; i < 64; i++) many[i] = i % 2 ? "product.slug" : "userId";
    push_chunk(L, ctx);
    TEST("getter: 96 segments in 64 paths", getter_agrees(L, many, 64, 2));
    for (size_t i = 0; i < 64; i++) many[i] = "";
    TEST("getter: 64 paths of no segment", getter_agrees(L, many, 64, 2));
    /* A rule that replaces the global type after the VM was made. */
    push_chunk(L, "type = function() return 'table' end return 1");
    lua_pop(L, 1);
    TEST("getter: a rule's own global type changes nothing", getter_agrees(L, paths, n, 2));
    lua_close(L);

    /* A VM without the base library when its path cache was made. */
    L = luaL_newstate();
    sl_lazy_init(L);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "mug");
    lua_setfield(L, -2, "slug");
    lua_setfield(L, -2, "product");
    TEST("getter: a VM without type", getter_agrees(L, paths + 2, 3, 2));
    lua_close(L);

    /* A lazy record read through a getter: its members made by __index. */
    static const char doc[] = "{\"message\":{\"data\":{\"url\":\"https://s/products/mug\","
                              "\"n\":3,\"flag\":true},\"other\":[1,2]},\"x\":\"y\"}";
    static const char *const lazy_paths[] = {
        "input.message.data.url", "input.message.data.n", "input.message.nope.url",
        "input.x", "input.message.data.flag", "input",
    };
    char err[SL_ERRLEN];
    size_t was = sl_lazy_eager_members(0);
    L = vm();
    lua_newtable(L);
    int ok = sl_lazy_push(L, doc, sizeof(doc) - 1, err, sizeof(err)) == SL_OK;
    lua_setfield(L, 1, "input");
    TEST("getter: a lazy record", ok && getter_agrees(L, lazy_paths, 6, 2));
    lua_close(L);
    sl_lazy_eager_members(was);
}

int main(void) {
    test_split();
    test_read();
    test_lazy();
    test_two_vms();
    test_getter();
    return TEST_DONE();
}
