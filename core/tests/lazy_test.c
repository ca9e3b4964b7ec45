/* lazy_test.c -- unit tests of the tape (json.c) and lazy values (core/lazy.c).
 *
 * Every lazy value is checked against what the eager decoder gives for the
 * same text: made whole and encoded with sorted keys, both give the same
 * bytes, and bad texts give the same error. Run from the repository root
 * (the tracker captures are read from spec/fixtures/snowplow/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "json.h"
#include "lazy.h"
#include "sl.h"
#include "test.h"

static lua_State *L;

/* lazy(s) -> v | nil, err */
static int l_lazy(lua_State *L1) {
    size_t n;
    const char *s = luaL_checklstring(L1, 1, &n);
    char err[SL_ERRLEN];
    if (sl_lazy_push(L1, s, n, err, sizeof(err)) == SL_OK) return 1;
    lua_pushnil(L1);
    lua_pushstring(L1, err);
    return 2;
}

/* sorted(v) -> text | nil, err: the encoder with sorted keys. */
static int l_sorted(lua_State *L1) {
    struct sl_buf b = {0};
    char err[SL_ERRLEN];
    luaL_checkany(L1, 1);
    int rc = sl_json_encode_sorted(L1, 1, &b, err, sizeof(err));
    if (rc) lua_pushnil(L1);
    else lua_pushlstring(L1, b.data ? b.data : "", b.len);
    sl_buf_free(&b);
    if (rc) lua_pushstring(L1, err);
    return rc ? 2 : 1;
}

/* lists() -> a table of lists as the window step makes it:
 * {slugs = {"a", "b", "a"}, ts = {1, 2.5}, empty = {}}. */
static int l_lists(lua_State *L1) {
    struct sl_value slugs[] = {{SL_VAL_STR, "a", 1, 0}, {SL_VAL_STR, "b\"q", 3, 0},
                               {SL_VAL_STR, "a", 1, 0}};
    struct sl_value ts[] = {{SL_VAL_NUM, NULL, 0, 1}, {SL_VAL_NUM, NULL, 0, 2.5}};
    struct sl_lazy_list lists[] = {{"slugs", slugs, 3}, {"ts", ts, 2}, {"empty", NULL, 0}};
    sl_lazy_push_lists(L1, lists, 3);
    slugs[0].s = "changed";                    /* the table keeps its own copy */
    return 1;
}

/* peek(t, name) -> n, "v1|v2|..." | -1: sl_lazy_peek_list, strings as
 * they are, numbers with %g; with a room of 2 values the first two only. */
static int l_peek(lua_State *L1) {
    size_t nlen;
    struct sl_value v[2];
    const char *name = luaL_checklstring(L1, 2, &nlen);
    lua_pushvalue(L1, 1);                      /* callers peek at the top: -1 */
    long n = sl_lazy_peek_list(L1, -1, name, nlen, v, 2);
    lua_pop(L1, 1);
    lua_pushnumber(L1, (lua_Number)n);
    if (n < 0) return 1;
    luaL_Buffer b;
    luaL_buffinit(L1, &b);
    for (long i = 0; i < n && i < 2; i++) {
        char num[32];
        if (i) luaL_addchar(&b, '|');
        if (v[i].type == SL_VAL_STR) luaL_addlstring(&b, v[i].s, v[i].len);
        else luaL_addlstring(&b, num, (size_t)snprintf(num, sizeof(num), "%g", v[i].num));
    }
    luaL_pushresult(&b);
    return 2;
}

/* raw(t, k) -> t[k] without __index and without making t whole. */
static int l_raw(lua_State *L1) {
    lua_settop(L1, 2);
    lua_rawget(L1, 1);
    return 1;
}

/* Calls the function below nargs arguments: true when it returns true;
 * prints the error otherwise. */
static int call_true(int nargs) {
    int ok;
    if (lua_pcall(L, nargs, 1, 0)) {
        printf("# lua error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

/* True when chunk s returns true. */
static int lua_true(const char *s) {
    if (luaL_loadstring(L, s)) {
        printf("# lua error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    return call_true(0);
}

/* The text of the value at the top made whole and sorted equals the eager
 * decoder's. */
static const char same_as_eager[] =
    "local function same(s)\n"
    "  local a, ea = lazy(s)\n"
    "  local b, eb = sluice.json_decode(s)\n"
    "  if a == nil or b == nil then\n"
    "    if ea ~= eb then print('# lazy: ' .. tostring(ea) .. ' eager: ' .. tostring(eb)) end\n"
    "    return ea == eb\n"
    "  end\n"
    "  local ta, tb = sorted(a), sorted(b)\n"
    "  if ta ~= tb then print('# lazy: ' .. tostring(ta) .. '\\n# eager: ' .. tostring(tb)) end\n"
    "  return ta == tb\n"
    "end\n"
    "return same\n";

static int same(const char *json) {
    lua_getglobal(L, "same");
    lua_pushstring(L, json);
    return call_true(1);
}

/* ==================== Tape ==================== */

static void test_tape(void) {
    struct sl_json_tape t = {0};
    char err[SL_ERRLEN];
    const char *s = "{\"a\":[1,\"x\\ny\",true],\"b\":{},\"c\":null}";

    TEST("tape: a document parses", sl_json_tape_parse(&t, s, strlen(s), err, sizeof(err)) == SL_OK);
    TEST("tape: the root is an object of 3 members",
         t.nodes[0].type == SL_JSON_OBJECT && t.nodes[0].u.count == 3);
    TEST("tape: nodes in document order (10 nodes)", t.n == 10 && t.nodes[0].next == 10);
    TEST("tape: the array skips its subtree", t.nodes[2].type == SL_JSON_ARRAY &&
         t.nodes[2].u.count == 3 && t.nodes[2].next == 6);
    TEST("tape: a string with an escape is marked", t.nodes[4].type == SL_JSON_STRING &&
         (t.nodes[4].flags & SL_JSON_ESCAPED) && t.nodes[4].u.str.len == 4);
    char out[8];
    size_t n = sl_json_unescape(s + t.nodes[4].u.str.off, t.nodes[4].u.str.len, out);
    TEST("tape: unescape gives the string", n == 3 && !memcmp(out, "x\ny", 3));
    TEST("tape: a number holds its value", t.nodes[3].type == SL_JSON_NUMBER && t.nodes[3].u.num == 1);
    TEST("tape: a trailing comma fails with the eager decoder's words",
         sl_json_tape_parse(&t, "[1,]", 4, err, sizeof(err)) == SL_ERR &&
         strstr(err, "value expected") && strstr(err, "at byte 3"));
    free(t.nodes);

    /* A number is the node that grows the tape (found by json_fuzz: its
     * node was written through the array from before the growth). */
    int good = 0;
    for (int k = 1; k <= 300; k++) {
        struct sl_json_tape fresh = {0};
        struct sl_buf doc = {0};
        bool same = true;
        sl_buf_addc(&doc, '[');
        for (int j = 0; j < k; j++) sl_buf_printf(&doc, "%s%d", j ? "," : "", j * 7);
        sl_buf_addc(&doc, ']');
        same = sl_json_tape_parse(&fresh, doc.data, doc.len, err, sizeof(err)) == SL_OK &&
               fresh.n == (size_t)k + 1;
        for (int j = 0; same && j < k; j++)
            same = fresh.nodes[j + 1].type == SL_JSON_NUMBER && fresh.nodes[j + 1].u.num == j * 7;
        good += same;
        free(fresh.nodes);
        sl_buf_free(&doc);
    }
    TEST("tape: numbers keep their values as the tape grows (1 to 300 in a fresh tape)", good == 300);
}

/* ==================== Same as the eager decoder ==================== */

static void test_same(void) {
    static const char *docs[] = {
        "{}", "[]", "1", "-0", "\"s\"", "null", "true", "[{}]", "[[],[[]]]",
        "{\"a\":1,\"a\":2}", "{\"a\":{\"x\":1},\"a\":[2]}", "{\"\\u0061\":1,\"a\":2}",
        "{\"a\":1,\"\\u0061\":2}", "[1e308,-1e-400,12345678901234567890,9007199254740993]",
        "{\"k\":\"\\ud83d\\ude00 \\u00e9\\\"\\\\/\\b\\f\\n\\r\\t\"}",
        "{\"\xc3\xa9\":\"\xe2\x82\xac\"}", " { \"a\" : [ 1 , { \"b\" : null } ] } ",
        /* the same errors */
        "", "{", "[1,", "{\"a\"}", "{\"a\":}", "[1 2]", "\"\\x\"", "\"\\u12\"", "\"\\udc00\"",
        "\"\\ud800x\"", "\"\xff\"", "\"\xc3\"", "\"\x01\"", "1e999", "-", "01", "1.", "1e",
        "tru", "nul", "[1]x", "{\"a\":1,}", "\"abc",
    };
    char name[160];
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        snprintf(name, sizeof(name), "lazy equals eager for %.100s", docs[i]);
        TEST(name, same(docs[i]));
    }
    /* nesting: 256 levels are fine, 257 fail the same way */
    char deep[1200];
    for (int depth = 256; depth <= 257; depth++) {
        for (int i = 0; i < depth; i++) deep[i] = '[';
        for (int i = 0; i < depth; i++) deep[depth + i] = ']';
        deep[2 * depth] = '\0';
        snprintf(name, sizeof(name), "lazy equals eager for %d nested arrays", depth);
        TEST(name, same(deep));
    }
    char *objs = malloc(257 * 6 + 8);
    size_t k = 0;
    for (int i = 0; i < 257; i++) { memcpy(objs + k, "{\"a\":", 5); k += 5; }
    objs[k++] = '1';
    for (int i = 0; i < 257; i++) objs[k++] = '}';
    objs[k] = '\0';
    TEST("lazy equals eager for 257 nested objects", same(objs));
    free(objs);
}

static void test_fixture(const char *path) {
    struct sl_buf b = {0};
    char err[SL_ERRLEN], name[200];
    int ok = sl_read_file(path, &b, 1 << 20, err, sizeof(err)) == SL_OK;
    snprintf(name, sizeof(name), "lazy equals eager for %s", path);
    TEST(name, ok && same(sl_buf_cstr(&b)));
    sl_buf_free(&b);
}

/* ==================== Reading, changing, walking ==================== */

static void test_access(void) {
    TEST("a member deep down reads as eager",
         lua_true("local v = lazy('{\"m\":{\"data\":[{\"url\":\"u\"},{\"url\":\"w\"}]}}')"
                  " return v.m.data[2].url == 'w' and v.m.data[1].url == 'u'"));
    TEST("an object is a table, not a list, with no metatable to see",
         lua_true("local v = lazy('{\"a\":1}') return type(v) == 'table' and v[1] == nil"
                  " and getmetatable(v) == nil and #v == 0"));
    TEST("an array is whole: #, ipairs and the array metatable",
         lua_true("local a = lazy('{\"a\":[10,20,30]}').a local s = 0"
                  " for i, x in ipairs(a) do s = s + i * x end"
                  " return #a == 3 and s == 140 and getmetatable(a) == sluice.array_mt"));
    TEST("an empty array stays an array",
         lua_true("return sorted(lazy('{\"a\":[]}')) == '{\"a\":[]}'"));
    TEST("null is sluice.null, integers stay integers",
         lua_true("local v = lazy('{\"n\":null,\"t\":1795667677426}')"
                  " return v.n == sluice.null and v.t == 1795667677426 and sorted(v) == '{\"n\":null,\"t\":1795667677426}'"));
    TEST("a missing member is nil and stays nil",
         lua_true("local v = lazy('{\"a\":1}') return v.b == nil and v.b == nil and v[2] == nil"));
    TEST("duplicate keys: the last wins when read",
         lua_true("return lazy('{\"a\":1,\"b\":0,\"a\":2}').a == 2"));
    TEST("an escaped key is found by its text",
         lua_true("return lazy('{\"\\\\u0061b\":7}').ab == 7"));
    TEST("a value read twice is the same table",
         lua_true("local v = lazy('{\"o\":{\"x\":1}}') return v.o == v.o"));
}

static void test_changes(void) {
    TEST("a rule changes a member: the encoder writes the change",
         lua_true("local v = lazy('{\"a\":1,\"b\":{\"c\":2}}') v.b.c = 3"
                  " return sorted(v) == '{\"a\":1,\"b\":{\"c\":3}}'"));
    TEST("a rule assigns a member it never read: the encoder writes that",
         lua_true("local v = lazy('{\"a\":1,\"b\":2}') v.b = 'x'"
                  " return v.b == 'x' and sorted(v) == '{\"a\":1,\"b\":\"x\"}'"));
    TEST("a rule adds a member",
         lua_true("local v = lazy('{\"a\":1}') v.z = {1, 2}"
                  " return sorted(v) == '{\"a\":1,\"z\":[1,2]}'"));
    TEST("a rule deletes a member it read: it stays deleted",
         lua_true("local v = lazy('{\"a\":1,\"b\":2}') local _ = v.a v.a = nil"
                  " return v.a == nil and sorted(v) == '{\"b\":2}'"));
    TEST("a rule deletes a member it never read: it stays deleted",
         lua_true("local v = lazy('{\"a\":1,\"b\":2}') v.a = nil"
                  " return v.a == nil and sorted(v) == '{\"b\":2}'"));
    TEST("a deleted duplicate key stays deleted",
         lua_true("local v = lazy('{\"a\":1,\"a\":2,\"b\":3}') v.a = nil"
                  " local n = 0 for _ in pairs(v) do n = n + 1 end return v.a == nil and n == 1"));
    TEST("an object of 20000 members, 500 of them duplicated later, expands as the eager decoder's",
         lua_true("local parts = {} for i = 1, 20000 do parts[i] = string.format('\"k%d\":%d', i, i) end"
                  " for i = 1, 500 do parts[#parts + 1] = string.format('\"k%d\":\"again%d\"', i * 40, i) end"
                  " local text = '{' .. table.concat(parts, ',') .. '}'"
                  " local o = lazy(text) local n = 0 for _ in pairs(o) do n = n + 1 end"
                  " return n == 20000 and o.k40 == 'again1' and o.k41 == 41"
                  " and sorted(o) == sorted(sluice.json_decode(text))"));
    TEST("an object of more than 256 members is made whole at its first read, not scanned per read",
         lua_true("local parts = {} for i = 1, 300 do parts[i] = string.format('\"k%d\":%d', i, i) end"
                  " local text = '{' .. table.concat(parts, ',') .. ',\"k7\":\"last\"}'"
                  " local o = lazy(text) local first = o.k1"
                  " return first == 1 and raw(o, 'k300') == 300 and raw(o, 'k7') == 'last'"
                  " and o.k7 == 'last' and o.k301 == nil and sorted(o) == sorted(sluice.json_decode(text))"));
    TEST("an object of 256 members stays lazy after a read",
         lua_true("local parts = {} for i = 1, 256 do parts[i] = string.format('\"k%d\":%d', i, i) end"
                  " local o = lazy('{' .. table.concat(parts, ',') .. '}') local first = o.k1"
                  " return first == 1 and raw(o, 'k2') == nil and o.k2 == 2"));
    TEST("assigning to an object of more than 256 members: the change, the deletion and the rest are kept",
         lua_true("local parts = {} for i = 1, 300 do parts[i] = string.format('\"k%d\":%d', i, i) end"
                  " local o = lazy('{' .. table.concat(parts, ',') .. '}')"
                  " o.k5 = nil o.k6 = 'x' o.new = true"
                  " local d = sluice.json_decode(sorted(o)) local n = 0 for _ in pairs(d) do n = n + 1 end"
                  " return n == 300 and d.k5 == nil and d.k6 == 'x' and d.new == true and d.k300 == 300"
                  " and o.k5 == nil and raw(o, 'k7') == 7"));
    TEST("the unsorted encoder writes a changed record",
         lua_true("local v = lazy('{\"a\":{\"b\":1},\"c\":[1]}') v.a.b = 'x' v.c[2] = 2"
                  " local d = sluice.json_decode(sluice.json_encode(v))"
                  " return d.a.b == 'x' and #d.c == 2 and d.c[2] == 2"));
}

/* The sorted encoder writes what a lazy object did not make from its tape
 * (json.c's enc_tape_object). Names no other test reads: no hot key. */
static void test_encode(void) {
    TEST("sorted encoding of a lazy object writes it from its tape, making none of its members",
         lua_true("local text = '{\"q5\":[1,{\"q6\":1}],\"q1\":\"x\",\"q2\":1.50,\"q3\":{\"q7\":null,"
                  "\"q8\":true,\"q9\":false,\"q10\":-0,\"q11\":1e3},\"q4\":\"\\\\u00e9\\\\\"\",\"q1\":2}'"
                  " local o = lazy(text) local s = sorted(o)"
                  " return s == sorted(sluice.json_decode(text))"
                  " and s:find('{\"q1\":2,\"q2\":1.5,\"q3\":{\"q10\":-0,\"q11\":1000,', 1, true) == 1"
                  " and raw(o, 'q1') == nil and raw(o, 'q3') == nil and raw(o, 'q5') == nil"));
    TEST("sorted encoding of a lazy object read, changed, deleted and added to, at every depth, "
         "equals the eager decoder's value changed alike",
         lua_true("local text = '{\"r1\":1,\"r2\":{\"s1\":1,\"s2\":2,\"s3\":3,\"s4\":4,\"s5\":{\"t1\":1,"
                  "\"t2\":2,\"t3\":3,\"t4\":4,\"t5\":5}},\"r3\":\"a\",\"r3\":\"b\",\"r4\":[{\"u1\":1,\"u2\":2,"
                  "\"u3\":3,\"u4\":4,\"u5\":5}],\"r5\":null,\"r\\\\u0036\":6,\"r8\":{\"v1\":1,\"v2\":2,"
                  "\"v3\":3,\"v4\":4,\"v5\":5}}'"
                  " local function change(o)"
                  "   local _ = o.r1 o.r2.s1 = nil o.r2.s5.t2 = 'x' o.r3 = nil"
                  "   o.r4[1].u3 = {1, 2} o.r7 = 'new' _ = o.r6 _ = o.r8.v1 o.r8 = nil"
                  "   return o"
                  " end"
                  " local a, b = change(lazy(text)), change(sluice.json_decode(text))"
                  " local sa, sb = sorted(a), sorted(b)"
                  " if sa ~= sb then print('# lazy:  ' .. sa) print('# eager: ' .. sb) end"
                  " return sa == sb and raw(a, 'r5') == nil and raw(a.r2, 's4') == nil"));
    TEST("sorted encoding of a read member deleted, of its duplicate and of an escaped spelling",
         lua_true("local text = '{\"w1\":1,\"w1\":2,\"w\\\\u0032\":3,\"w2\":4,\"w3\":5,\"w4\":6}'"
                  " local o = lazy(text) local _ = o.w1 o.w1 = nil o.w2 = nil"
                  " return sorted(o) == '{\"w3\":5,\"w4\":6}'"));
    TEST("sorted encoding of a lazy record nested deep in a table fails where the eager one does "
         "(252 levels in 2 tables: written; 253: too deep)",
         lua_true("local ok = 0"
                  " for d = 248, 256 do"
                  "   local text = string.rep('[', d) .. '{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":[1]}' .. string.rep(']', d)"
                  "   local sa, ea = sorted({x = {y = lazy(text)}})"
                  "   local sb, eb = sorted({x = {y = sluice.json_decode(text)}})"
                  "   if sa == sb and ea == eb then ok = ok + 1 end"
                  "   if d == 252 and sa == nil or d == 253 and sa ~= nil then return false end"
                  " end"
                  " return ok == 9"));
    TEST("a lazy object holding a key that is not a string fails to encode, as a table does",
         lua_true("local o = lazy('{\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5}') rawset(o, 1, 'x')"
                  " local s, e = sorted(o) local t = {k1 = 1} t[1] = 'x' local s2, e2 = sorted(t)"
                  " return s == nil and s2 == nil and e == e2"
                  " and e == 'json: cannot encode a table with both string and non-string keys'"));
}

static void test_walks(void) {
    TEST("pairs sees every member, once, with the last duplicate",
         lua_true("local v = lazy('{\"a\":1,\"b\":{\"x\":1},\"a\":3}') local n, s = 0, 0"
                  " for k, x in pairs(v) do n = n + 1 if k == 'a' then s = x end end"
                  " return n == 2 and s == 3"));
    TEST("pairs after a partial read sees every member",
         lua_true("local v = lazy('{\"a\":1,\"b\":2,\"c\":3}') local _ = v.b local n = 0"
                  " for _ in pairs(v) do n = n + 1 end return n == 3"));
    TEST("after pairs the object is a plain table",
         lua_true("local v = lazy('{\"a\":1}') for _ in pairs(v) do end"
                  " return debug.getmetatable(v) == nil"));
    TEST("next sees the members",
         lua_true("local v = lazy('{\"a\":1}') local k, x = next(v) return k == 'a' and x == 1"
                  " and next(v, 'a') == nil and next(lazy('{}')) == nil"));
    TEST("rawget sees members not read yet",
         lua_true("return rawget(lazy('{\"a\":5}'), 'a') == 5"));
    TEST("setmetatable keeps every member",
         lua_true("local v = setmetatable(lazy('{\"a\":5}'), {}) return rawget(v, 'a') == 5"));
    TEST("nested objects stay lazy after a shallow pairs",
         lua_true("local v = lazy('{\"o\":{\"x\":1}}') for _ in pairs(v) do end"
                  " return debug.getmetatable(v.o) ~= nil and v.o.x == 1"));
}

/* ==================== Tables of lists ==================== */

static void test_lists(void) {
    TEST("lists: a list reads as an array of its values",
         lua_true("local t = lists() return #t.slugs == 3 and t.slugs[1] == 'a'"
                  " and t.slugs[2] == 'b\"q' and t.ts[2] == 2.5 and getmetatable(t.slugs) == sluice.array_mt"));
    TEST("lists: the encoder writes them from the copy (as made whole)",
         lua_true("local a = sluice.json_decode(sluice.json_encode(lists()))"
                  " return sorted(a) == '{\"empty\":[],\"slugs\":[\"a\",\"b\\\\\"q\",\"a\"],\"ts\":[1,2.5]}'"));
    TEST("lists: sorted encoding equals the unsorted one's content",
         lua_true("return sorted(lists()) == sorted(sluice.json_decode(sluice.json_encode(lists())))"));
    TEST("lists: a list changed by a rule is written changed",
         lua_true("local t = lists() t.slugs[4] = 'z' t.ts = nil t.n = 3"
                  " return sorted(sluice.json_decode(sluice.json_encode(t))) =="
                  " '{\"empty\":[],\"n\":3,\"slugs\":[\"a\",\"b\\\\\"q\",\"a\",\"z\"]}'"));
    TEST("lists: a list assigned before it is read stays assigned",
         lua_true("local t = lists() t.ts = 'x' return t.ts == 'x' and sluice.json_decode(sluice.json_encode(t)).ts == 'x'"));
    TEST("lists: pairs sees every list",
         lua_true("local n = 0 for k, v in pairs(lists()) do n = n + #v end return n == 5"));
    TEST("lists: peek gives a list's length and values without making it",
         lua_true("local t = lists() local n, v = peek(t, 'slugs')"
                  " return n == 3 and v == 'a|b\"q' and select(2, peek(t, 'ts')) == '1|2.5'"
                  " and sorted(t) == sorted(sluice.json_decode(sluice.json_encode(lists())))"));
    TEST("lists: peek leaves the list unmade (the encoder writes it from the copy)",
         lua_true("local t = lists() peek(t, 'slugs') return peek(t, 'slugs') == 3 and t.slugs[3] == 'a' and #t.slugs == 3"));
    TEST("lists: peek of an empty list gives 0",
         lua_true("return peek(lists(), 'empty') == 0"));
    TEST("lists: peek of a list read, assigned or deleted gives -1 (read it through Lua)",
         lua_true("local a, b, c = lists(), lists(), lists() local _ = a.slugs b.slugs = {'x'} c.slugs = nil"
                  " return peek(a, 'slugs') == -1 and peek(b, 'slugs') == -1 and peek(c, 'slugs') == -1"
                  " and peek(a, 'ts') == 2"));
    TEST("lists: peek of a missing list, an expanded table or another value gives -1",
         lua_true("local t = lists() local e = lists() for _ in pairs(e) do end"
                  " return peek(t, 'nope') == -1 and peek(e, 'slugs') == -1 and peek({slugs = {'a'}}, 'slugs') == -1"
                  " and peek(lazy('{\"slugs\":[\"a\"],\"b\":1,\"c\":2,\"d\":3,\"e\":4}'), 'slugs') == -1"
                  " and peek('x', 'slugs') == -1"));
    TEST("lists: sorted encoding writes them from the copy, leaving them unmade",
         lua_true("local t = lists() t.n = 2 local s = sorted(t)"
                  " return s == '{\"empty\":[],\"n\":2,\"slugs\":[\"a\",\"b\\\\\"q\",\"a\"],\"ts\":[1,2.5]}'"
                  " and peek(t, 'slugs') == 3 and peek(t, 'ts') == 2"));
    TEST("lists: sorted encoding of lists read, changed or deleted equals the table made whole",
         lua_true("local t = lists() t.slugs[4] = 'z' t.ts = nil t.m = {b = 1, a = 2}"
                  " local u = lists() u.slugs[4] = 'z' u.ts = nil u.m = {b = 1, a = 2} for _ in pairs(u) do end"
                  " return sorted(t) == sorted(u) and sorted(t) =="
                  " '{\"empty\":[],\"m\":{\"a\":2,\"b\":1},\"slugs\":[\"a\",\"b\\\\\"q\",\"a\",\"z\"]}'"));
    TEST("lists: sorted encoding fails on a member that is not UTF-8",
         lua_true("local t = lists() t.bad = '\\255' return sorted(t) == nil"));
    TEST("lists: the keys a lazy value keeps its copy under are never seen",
         lua_true("local t, o = lists(), lazy('{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}')"
                  " local n = 0 for k in pairs(t) do n = n + (type(k) == 'string' and 1 or 100) end"
                  " for k in pairs(o) do n = n + (type(k) == 'string' and 1 or 100) end"
                  " return n == 8 and #o == 0 and next(o, nil) ~= nil and rawget(o, 'a') == 1"));
    TEST("lists: a string that is not UTF-8 fails to encode as it would made whole",
         lua_true("local t = lists() t.bad = '\\255' return sluice.json_encode(t) == nil"));
}

static void test_hot(void) {
    /* Objects of 5 members, so they are lazy whatever the eager bound. */
    static const char first[] =
        "local o = lazy('{\"e\":\"pv\",\"aid\":\"a\",\"x\":1,\"y\":2,\"z\":3}')"
        " return raw(o, 'aid') == nil and o.aid == 'a' and o.e == 'pv' and raw(o, 'aid') == 'a'";
    TEST("hot keys: a member read through __index is made on its first read", lua_true(first));
    TEST("hot keys: a new object makes the members rules read before, at once",
         lua_true("local o = lazy('{\"unread\":1,\"aid\":\"b\",\"e\":\"se\",\"y\":2,\"z\":3}')"
                  " return raw(o, 'aid') == 'b' and raw(o, 'e') == 'se' and raw(o, 'unread') == nil"
                  " and o.unread == 1"));
    TEST("hot keys: the last of duplicate members wins, as when read",
         lua_true("local o = lazy('{\"aid\":\"first\",\"x\":1,\"aid\":\"last\",\"y\":2,\"z\":3}')"
                  " local n = 0 for k, v in pairs(o) do if k == 'aid' then n = n + 1 end end"
                  " return o.aid == 'last' and n == 1"));
    TEST("hot keys: a duplicate hot member deleted stays deleted, through pairs and encoders",
         lua_true("local o = lazy('{\"aid\":\"first\",\"x\":1,\"aid\":\"last\",\"y\":2,\"z\":3}')"
                  " if raw(o, 'aid') ~= 'last' then return false end"
                  " o.aid = nil local n = 0 for k in pairs(o) do n = n + 1 end"
                  " local d = sluice.json_decode(sluice.json_encode(o))"
                  " return o.aid == nil and n == 3 and d.aid == nil and d.x == 1"
                  " and sorted(o) == '{\"x\":1,\"y\":2,\"z\":3}'"));
    TEST("hot keys: a duplicate hot member assigned keeps its new value through pairs",
         lua_true("local o = lazy('{\"aid\":\"first\",\"x\":1,\"aid\":\"last\",\"y\":2,\"z\":3}')"
                  " o.aid = 'new' local seen = {} for k, v in pairs(o) do seen[#seen + 1] = k .. '=' .. tostring(v) end"
                  " table.sort(seen)"
                  " return table.concat(seen, ',') == 'aid=new,x=1,y=2,z=3'"));
    TEST("hot keys: a later escaped spelling of a hot key wins, made on read",
         lua_true("local o = lazy('{\"aid\":\"plain\",\"x\":1,\"a\\\\u0069d\":\"escaped\",\"y\":2,\"z\":3}')"
                  " return raw(o, 'aid') == nil and o.aid == 'escaped' and raw(o, 'aid') == 'escaped'"));
    TEST("hot keys: an earlier escaped spelling of a hot key loses to the plain one, made at once",
         lua_true("local o = lazy('{\"\\\\u0061id\":\"escaped\",\"aid\":\"plain\",\"y\":2,\"z\":3,\"w\":4}')"
                  " local n = 0 for k in pairs(o) do if k == 'aid' then n = n + 1 end end"
                  " return o.aid == 'plain' and n == 1"));
    TEST("hot keys: a long escaped key among hot ones is no hot key",
         lua_true("local k = string.rep('\\\\u0061', 30)"
                  " local o = lazy('{\"aid\":\"a\",\"' .. k .. '\":1,\"e\":\"pv\",\"y\":2,\"z\":3}')"
                  " return raw(o, 'aid') == 'a' and raw(o, 'e') == 'pv' and o[string.rep('a', 30)] == 1"));
    TEST("hot keys: a hot member deleted or assigned stays so, and the object encodes as changed",
         lua_true("local o = lazy('{\"aid\":\"a\",\"e\":\"pv\",\"x\":1,\"y\":2,\"z\":3}')"
                  " o.aid = nil o.e = 'changed'"
                  " return o.aid == nil and o.e == 'changed'"
                  " and sorted(o) == '{\"e\":\"changed\",\"x\":1,\"y\":2,\"z\":3}'"));
    TEST("hot keys: reading 40 names in turn (more than are kept) gives every value right",
         lua_true("local parts = {} for i = 1, 40 do parts[i] = string.format('\"k%d\":%d', i, i) end"
                  " local text = '{' .. table.concat(parts, ',') .. '}'"
                  " for round = 1, 3 do"
                  "   local o = lazy(text)"
                  "   for i = 1, 40 do if o['k' .. i] ~= i then return false end end"
                  "   if o.k41 ~= nil then return false end"
                  " end"
                  " local o = lazy(text) o.k40 = nil local n = 0 for _ in pairs(o) do n = n + 1 end"
                  " return n == 39 and sorted(lazy(text)) == sorted(sluice.json_decode(text))"));
    TEST("hot keys: nested objects made at once are lazy in turn, and equal the eager decoder's",
         same("{\"aid\":{\"e\":1,\"aid\":[1,{\"e\":2,\"q\":3,\"r\":4,\"s\":5,\"t\":6}],\"b\":2,\"c\":3,\"d\":4},"
              "\"e\":\"\\u00e9\",\"x\":1,\"y\":2,\"z\":3}"));
}

/* shapes() -> the VM's builders for the hot keys of now. */
static int l_shapes(lua_State *L1) {
    lua_pushinteger(L1, (lua_Integer)sl_lazy_shape_builders(L1));
    return 1;
}

/* Once the hot keys have stayed the same for a while, a lazy object is made
 * by a builder for its set of hot members, whose table constructor names
 * them: the keys are spelt in Lua source, whatever their bytes. */
static void test_shapes(void) {
    lua_register(L, "shapes", l_shapes);
    /* Keys a template must spell byte for byte: quotes, what would end a
     * long string or start a comment, UTF-8. A key JSON escapes (q"uote)
     * is left to __index, built or not. */
    static const char odd[] =
        "keys = { \"it's\", ']]', '--[[x', '\\195\\169t\\195\\169', 'a=b%d', 'plain', 'q\"uote' }\n"
        "function made(k, v) if k:find('\"', 1, true) then return nil end return v end\n"
        "function text(round, mask)\n"
        "  local t = { x = 1, y = 2, z = 3, w = 4, v = 5 }\n"
        "  for i, k in ipairs(keys) do\n"
        "    if not mask or mask % 2 ^ i >= 2 ^ (i - 1) then t[k] = k .. round end\n"
        "  end\n"
        "  return sluice.json_encode(t)\n"
        "end\n"
        "local o = lazy(text(0))\n"
        "for _, k in ipairs(keys) do if o[k] ~= k .. 0 then return false end end\n"
        "return true\n";
    TEST("shapes: keys of odd bytes are read, so learnt", lua_true(odd));
    TEST("shapes: 200 objects later, each has its hot members made, and equals the eager decoder's",
         lua_true("for round = 1, 200 do\n"
                  "  local s = text(round) local o = lazy(s)\n"
                  "  for _, k in ipairs(keys) do\n"
                  "    if raw(o, k) ~= made(k, k .. round) or o[k] ~= k .. round then\n"
                  "      print('# ' .. round .. ': ' .. k) return false\n"
                  "    end\n"
                  "  end\n"
                  "  if raw(o, 'y') ~= nil or sorted(o) ~= sorted(sluice.json_decode(s)) then return false end\n"
                  "end\n"
                  "return true"));
    TEST("shapes: ... made by a builder for their keys", lua_true("return shapes() == 1"));
    TEST("shapes: objects with each of 128 sets of the hot keys have those members made, no other",
         lua_true("for mask = 0, 127 do\n"
                  "  local o = lazy(text(mask, mask))\n"
                  "  for i, k in ipairs(keys) do\n"
                  "    local want = mask % 2 ^ i >= 2 ^ (i - 1) and k .. mask or nil\n"
                  "    if raw(o, k) ~= made(k, want) or o[k] ~= want then print('# ' .. mask .. ': ' .. k) return false end\n"
                  "  end\n"
                  "end\n"
                  "return true"));
    TEST("shapes: a VM keeps at most 32 builders for one set of hot keys",
         lua_true("return shapes() == 32"));
    TEST("shapes: a hot member deleted, assigned or spelt escaped is as when read",
         lua_true("local o = lazy(text(7)) o.plain = nil o[']]'] = 'set'\n"
                  "local e = lazy('{\"pl\\\\u0061in\":\"escaped\",\"x\":1,\"y\":2,\"z\":3,\"w\":4}')\n"
                  "return o.plain == nil and o[']]'] == 'set' and raw(e, 'plain') == nil\n"
                  "  and e.plain == 'escaped' and sorted(o):find('plain', 1, true) == nil"));
    TEST("shapes: a duplicate hot member deleted stays deleted through pairs",
         lua_true("local o = lazy('{\"plain\":\"a\",\"x\":1,\"plain\":\"b\",\"y\":2,\"z\":3}')\n"
                  "if raw(o, 'plain') ~= 'b' then return false end\n"
                  "o.plain = nil local n = 0 for _ in pairs(o) do n = n + 1 end\n"
                  "return n == 3 and o.plain == nil and sorted(o) == '{\"x\":1,\"y\":2,\"z\":3}'"));
    TEST("shapes: a new hot key starts the builders over, and objects stay right meanwhile",
         lua_true("local o = lazy('{\"fresh\":0,\"x\":1,\"y\":2,\"z\":3,\"w\":4}')\n"
                  "if o.fresh ~= 0 or shapes() ~= 0 then return false end\n"
                  "for round = 1, 100 do\n"
                  "  local p = lazy('{\"fresh\":' .. round .. ',\"plain\":\"p\",\"x\":1,\"y\":2,\"z\":3}')\n"
                  "  if raw(p, 'fresh') ~= round or raw(p, 'plain') ~= 'p' or p.y ~= 2 then return false end\n"
                  "end\n"
                  "return shapes() >= 1"));
}

/* A VM with the base library only (no require, so no table.new): lazy
 * objects are made, hot members included, in tables that grow. */
static void test_no_package(void) {
    lua_State *B = luaL_newstate();
    lua_pushcfunction(B, luaopen_base);
    lua_call(B, 0, 0);
    sl_json_init(B);
    sl_lazy_init(B);
    lua_register(B, "lazy", l_lazy);
    static const char reads[] =
        "local ok = true\n"
        "for round = 1, 3 do\n"
        "  local o = lazy('{\"e\":\"pv\",\"aid\":\"a' .. round .. '\",\"x\":1,\"y\":2,\"z\":3,'\n"
        "    .. '\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8}')\n"
        "  ok = ok and o.e == 'pv' and o.aid == 'a' .. round and o.z == 3\n"
        "  for i = 1, 8 do ok = ok and o['k' .. i] == i end\n"
        "end\n"
        "return ok\n";
    int ok = !luaL_loadstring(B, reads) && !lua_pcall(B, 0, 1, 0) && lua_toboolean(B, -1);
    if (!ok) printf("# %s\n", lua_isstring(B, -1) ? lua_tostring(B, -1) : "false");
    TEST("a VM without the package library makes lazy objects and their hot members", ok);
    lua_close(B);
}

/* With the default bound, where an object of two members is made whole. */
static void test_record_lazy(void) {
    size_t was = sl_lazy_eager_members(4);
    TEST("the record itself is lazy whatever its size: a member never read is never made",
         lua_true("local o = lazy('{\"rootRead\":{\"q1\":1},\"rootUnread\":{\"q2\":2}}')"
                  " if raw(o, 'rootUnread') ~= nil or raw(o, 'rootRead') ~= nil then return false end"
                  " local m = o.rootRead"
                  " return m.q1 == 1 and raw(o, 'rootUnread') == nil and o.rootUnread.q2 == 2"
                  " and sorted(o) == '{\"rootRead\":{\"q1\":1},\"rootUnread\":{\"q2\":2}}'"));
    TEST("a key that is not a string reads nil from a lazy object, and members still read",
         lua_true("local o = lazy('{\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":{\"k6\":6}}')"
                  " return o[1] == nil and o[true] == nil and o[2.5] == nil and o.k1 == 1"
                  " and o.k5.k6 == 6 and raw(o, 1) == nil"));
    sl_lazy_eager_members(was);
}

int main(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    sl_json_init(L);
    sl_lazy_init(L);
    sl_lazy_open_env(L);

    lua_createtable(L, 0, 4);                  /* sluice */
    lua_pushcfunction(L, sl_lua_json_decode);
    lua_setfield(L, -2, "json_decode");
    lua_pushcfunction(L, sl_lua_json_encode);
    lua_setfield(L, -2, "json_encode");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    sl_json_push_array_mt(L);
    lua_setfield(L, -2, "array_mt");
    lua_setglobal(L, "sluice");                /* */
    lua_register(L, "lazy", l_lazy);
    lua_register(L, "sorted", l_sorted);
    lua_register(L, "lists", l_lists);
    lua_register(L, "peek", l_peek);
    lua_register(L, "raw", l_raw);
    if (luaL_loadstring(L, same_as_eager) || lua_pcall(L, 0, 1, 0)) return 1;
    lua_setglobal(L, "same");

    test_tape();
    for (int pass = 0; pass < 2; pass++) {     /* small objects made at once, then lazy too */
        test_same();
        test_fixture("spec/fixtures/snowplow/tp2-post-product.body.raw");
        test_fixture("spec/fixtures/snowplow/tp2-post-batch3.body.raw");
        sl_lazy_eager_members(0);
    }
    test_access();
    test_changes();
    test_encode();
    test_walks();
    test_lists();
    test_hot();
    test_shapes();
    test_record_lazy();
    test_no_package();

    TEST("stack is balanced at the end", lua_gettop(L) == 0);
    lua_close(L);
    return TEST_DONE();
}
