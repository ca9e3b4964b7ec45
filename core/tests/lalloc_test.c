/* lalloc_test.c -- the rules' VM allocator: blocks aligned and reused by
 * size class, contents kept across a resize between classes and to and
 * from malloc's sizes, and a VM's churn held in bounded memory. */
#include "lalloc.h"
#include "test.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

static bool filled(const unsigned char *p, size_t n, unsigned char c) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != c) return false;
    return true;
}

static void test_blocks(void) {
    struct sl_lalloc *a = sl_lalloc_create();
    bool aligned = true;
    void *p[64];
    for (size_t i = 0; i < 64; i++) {
        p[i] = sl_lalloc_fn(a, NULL, 0, 1 + i * 97);
        aligned = aligned && p[i] && ((uintptr_t)p[i] & 15) == 0;
        memset(p[i], 0xab, 1 + i * 97);
    }
    TEST("blocks of 1 to 6112 bytes are 16-byte aligned", aligned);
    bool intact = true;
    for (size_t i = 0; i < 64; i++) intact = intact && filled(p[i], 1 + i * 97, 0xab);
    TEST("blocks do not overlap", intact);
    for (size_t i = 0; i < 64; i++) sl_lalloc_fn(a, p[i], 1 + i * 97, 0);

    void *x = sl_lalloc_fn(a, NULL, 0, 40);
    sl_lalloc_fn(a, x, 40, 0);
    void *y = sl_lalloc_fn(a, NULL, 0, 48);           /* the same class: 33..48 bytes */
    TEST("a freed block is handed out again to its class", x == y);
    void *z = sl_lalloc_fn(a, NULL, 0, 64);
    TEST("... and not to another", z != y);
    TEST("a resize within the class keeps the block", sl_lalloc_fn(a, y, 48, 47) == y);

    memset(y, 0x11, 48);
    void *big = sl_lalloc_fn(a, y, 48, 3000);         /* fine class to coarse */
    TEST("a resize to another class keeps the contents", big && filled(big, 48, 0x11));
    if (!big) return;
    memset(big, 0x22, 3000);
    size_t before = sl_lalloc_held(a);
    void *huge = sl_lalloc_fn(a, big, 3000, SL_LALLOC_SMALL + 5000); /* to malloc */
    TEST("a resize past the classes keeps the contents and counts malloc's bytes",
         huge && filled(huge, 3000, 0x22) && sl_lalloc_held(a) == before + SL_LALLOC_SMALL + 5000);
    if (!huge) return;
    memset(huge, 0x33, SL_LALLOC_SMALL + 5000);
    void *huger = sl_lalloc_fn(a, huge, SL_LALLOC_SMALL + 5000, 4 * SL_LALLOC_SMALL);
    TEST("a large block grows with realloc",
         huger && filled(huger, SL_LALLOC_SMALL + 5000, 0x33) &&
         sl_lalloc_held(a) == before + 4 * SL_LALLOC_SMALL);
    if (!huger) return;
    void *back = sl_lalloc_fn(a, huger, 4 * SL_LALLOC_SMALL, 100);
    TEST("and shrinks back into a class, its bytes no longer held",
         back && filled(back, 100, 0x33) && sl_lalloc_held(a) == before);
    sl_lalloc_fn(a, back, 100, 0);
    sl_lalloc_fn(a, z, 64, 0);
    sl_lalloc_destroy(a);
    sl_lalloc_destroy(NULL);
}

/* A VM on the allocator makes and drops records' worth of tables and
 * strings; what the allocator holds stays near the VM's peak heap. */
static void test_vm(void) {
    struct sl_lalloc *a = sl_lalloc_create();
    lua_State *L = lua_newstate(sl_lalloc_fn, a);
    TEST("a VM runs on the allocator", L != NULL);
    if (!L) return;
    luaL_openlibs(L);
    const char *churn =
        "local keep = {}\n"
        "for i = 1, 200000 do\n"
        "  local t = { id = 'visitor-' .. i, slug = 'product-' .. (i % 97), n = i,\n"
        "              list = { i, i + 1, tostring(i) } }\n"
        "  if i % 50000 == 0 then keep = {} end\n"
        "  if i % 1000 == 0 then keep[#keep + 1] = t end\n"
        "end\n"
        "local s = string.rep('x', 20000)\n"                       /* malloc's */
        "return #s, keep[1] and keep[1].n\n";
    int rc = luaL_dostring(L, churn);
    TEST("200,000 records' tables and strings are made and collected",
         rc == 0 && lua_tointeger(L, -2) == 20000 && lua_tointeger(L, -1) == 200000);
    lua_gc(L, LUA_GCCOLLECT, 0);
    size_t held = sl_lalloc_held(a);
    size_t heap = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024;
    TEST("the allocator holds less than 16 MB after the churn", held < 16u << 20);
    TEST("and at least the live heap", held >= heap);
    printf("# held %zu KB, live heap %zu KB\n", held >> 10, heap >> 10);
    lua_close(L);
    sl_lalloc_destroy(a);
}

int main(void) {
    test_blocks();
    test_vm();
    return TEST_DONE();
}
