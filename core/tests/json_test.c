/* json_test.c -- unit tests of the JSON codec (core/json.c).
 *
 * Run from the repository root: the real tracker captures are read from
 * spec/fixtures/snowplow/. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "json.h"
#include "sl.h"
#include "test.h"

static lua_State *L;

/* ==================== Helpers ==================== */

/* Returns 1 when the values at absolute indices a and b are equal: same
 * types, same scalars, tables with the same keys, deep-equal values and the
 * same metatable. */
static int deep_eq(int a, int b) {
    int ta = lua_type(L, a), n = 0, m = 0, ok = 1;
    if (ta != lua_type(L, b)) return 0;
    if (ta != LUA_TTABLE) return lua_rawequal(L, a, b);

    int ha = lua_getmetatable(L, a), hb = lua_getmetatable(L, b);
    if (ha != hb) { lua_pop(L, ha + hb); return 0; }
    if (ha) {
        ok = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (!ok) return 0;
    }
    lua_pushnil(L);
    while (lua_next(L, a)) {                   /* k va */
        n++;
        lua_pushvalue(L, -2);                  /* k va k */
        lua_rawget(L, b);                      /* k va vb */
        int top = lua_gettop(L);
        if (!deep_eq(top - 1, top)) { lua_pop(L, 3); return 0; }
        lua_pop(L, 2);                         /* k */
    }
    lua_pushnil(L);
    while (lua_next(L, b)) { m++; lua_pop(L, 1); }
    return n == m;
}

/* Decodes s; on success encodes the value and returns the text (static
 * buffer), on failure returns NULL with the error in err. Leaves the stack
 * as it found it. */
static const char *roundtrip(const char *s, size_t n, char *err, size_t errlen) {
    static struct sl_buf out;
    int top = lua_gettop(L);
    sl_buf_reset(&out);
    if (sl_json_decode(L, s, n, err, errlen) != SL_OK) return NULL;
    if (sl_json_encode(L, -1, &out, err, errlen) != SL_OK) { lua_settop(L, top); return NULL; }
    lua_settop(L, top);
    return sl_buf_cstr(&out);
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = sl_malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, f);
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

/* Runs Lua code that must return true; names the failure otherwise. */
static int lua_true(const char *code) {
    int ok;
    if (luaL_dostring(L, code)) {
        printf("#   lua error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

/* ==================== Cases ==================== */

struct rt_case {
    const char *name;
    const char *in;
    size_t inlen;        /* 0: strlen(in) */
    const char *out;     /* expected re-encoding */
};

static const struct rt_case rt_cases[] = {
    {"null", "null", 0, "null"},
    {"true", " true ", 0, "true"},
    {"false", "\tfalse\r\n", 0, "false"},
    {"empty array stays an array", "[]", 0, "[]"},
    {"empty object stays an object", "{}", 0, "{}"},
    {"empty array with blanks", "[ \n ]", 0, "[]"},
    {"null inside an array", "[1,null,3]", 0, "[1,null,3]"},
    {"only nulls", "[null,null]", 0, "[null,null]"},
    {"null inside an object", "{\"a\":null}", 0, "{\"a\":null}"},
    {"nested empties", "[[],{},[[]],{\"a\":[]}]", 0, "[[],{},[[]],{\"a\":[]}]"},
    {"nested arrays and objects", "{\"a\":[1,{\"b\":[true,false,null]}]}", 0,
     "{\"a\":[1,{\"b\":[true,false,null]}]}"},
    {"ms timestamp stays an integer", "1795667676496", 0, "1795667676496"},
    {"ms timestamp inside an object", "{\"stm\":1795667677389}", 0, "{\"stm\":1795667677389}"},
    {"2^53 stays an integer", "9007199254740992", 0, "9007199254740992"},
    {"-2^53 stays an integer", "-9007199254740992", 0, "-9007199254740992"},
    {"2^53+1 rounds to 2^53", "9007199254740993", 0, "9007199254740992"},
    {"beyond 2^53 prints shortest exact", "9007199254740994", 0, "9007199254740994"},
    {"far beyond 2^53 prints shortest exact", "12345678901234567890", 0, "1.2345678901234567e+19"},
    {"negative integer", "-42", 0, "-42"},
    {"zero", "0", 0, "0"},
    {"minus zero stays minus zero", "-0", 0, "-0"},
    {"0.1", "0.1", 0, "0.1"},
    {"-0.5", "-0.5", 0, "-0.5"},
    {"needs 17 digits", "0.30000000000000004", 0, "0.30000000000000004"},
    {"needs 16 digits", "0.3333333333333333", 0, "0.3333333333333333"},
    {"smallest denormal", "5e-324", 0, "4.94065645841247e-324"},
    {"exponent", "1.5e300", 0, "1.5e+300"},
    {"capital exponent integral", "1E2", 0, "100"},
    {"negative exponent", "25e-1", 0, "2.5"},
    {"small exponent", "1e-7", 0, "1e-07"},
    {"exponent with plus", "1e+2", 0, "100"},
    {"integral float", "3.0", 0, "3"},
    {"many digits go the slow way", "123456789012345678901234567890", 0, "1.2345678901234568e+29"},
    {"long fraction", "0.1000000000000000000000000000001", 0, "0.1"},
    {"pi", "3.141592653589793", 0, "3.141592653589793"},
    {"max double", "1.7976931348623157e308", 0, "1.7976931348623157e+308"},
    {"underflow to zero", "1e-400", 0, "0"},
    {"simple escapes", "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", 0, "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\""},
    {"\\u escape to UTF-8", "\"caf\\u00e9\"", 0, "\"caf\xc3\xa9\""},
    {"\\u escape 3 bytes", "\"\\u20AC\"", 0, "\"\xe2\x82\xac\""},
    {"surrogate pair to UTF-8", "\"\\ud83d\\ude00\"", 0, "\"\xf0\x9f\x98\x80\""},
    {"\\u0000 kept", "\"a\\u0000b\"", 0, "\"a\\u0000b\""},
    {"control escapes", "\"\\u0001\\u001f\"", 0, "\"\\u0001\\u001f\""},
    {"raw UTF-8 passes through", "\"\xe6\x97\xa5\xe6\x9c\xac \xe2\x80\x93 \xf0\x9f\x98\x80\"", 0,
     "\"\xe6\x97\xa5\xe6\x9c\xac \xe2\x80\x93 \xf0\x9f\x98\x80\""},
    {"escapes after UTF-8", "\"\xc3\xa9\\n\xc3\xa9\"", 0, "\"\xc3\xa9\\n\xc3\xa9\""},
    {"long string with an escape at the end", "\"0123456789abcdefghijklmnopqrstuvwxyz\\t\"", 0,
     "\"0123456789abcdefghijklmnopqrstuvwxyz\\t\""},
    {"DEL passes raw", "\"\x7f\"", 0, "\"\x7f\""},
    {"duplicate keys: last wins", "{\"a\":1,\"a\":2}", 0, "{\"a\":2}"},
    {"empty key", "{\"\":1}", 0, "{\"\":1}"},
    {"escaped key", "{\"a\\nb\":1}", 0, "{\"a\\nb\":1}"},
    {"string keys that look numeric stay an object", "{\"1\":1}", 0, "{\"1\":1}"},
    {"NUL byte inside a string", "\"a\\u0000\"", 0, "\"a\\u0000\""},
};

struct err_case {
    const char *name;
    const char *in;
    size_t inlen;        /* 0: strlen(in) */
    const char *want;    /* substring of the error, incl. the offset */
};

static const struct err_case err_cases[] = {
    {"empty input", "", 0, "at byte 0"},
    {"only blanks", "  ", 0, "at byte 2"},
    {"trailing comma in array", "[1,]", 0, "at byte 3"},
    {"missing comma in array", "[1 2]", 0, "at byte 3"},
    {"missing colon", "{\"a\" 1}", 0, "at byte 5"},
    {"unquoted key", "{a:1}", 0, "at byte 1"},
    {"trailing comma in object", "{\"a\":1,}", 0, "at byte 7"},
    {"missing value in object", "{\"a\":}", 0, "at byte 5"},
    {"unclosed array", "[", 0, "at byte 1"},
    {"unclosed object", "{\"a\":1", 0, "at byte 6"},
    {"mismatched bracket", "[1}", 0, "at byte 2"},
    {"truncated true", "tru", 0, "at byte 0"},
    {"truncated null", "nul", 0, "at byte 0"},
    {"bad literal", "nulL", 0, "at byte 0"},
    {"leading zero", "01", 0, "trailing data after the value: unexpected '1' at byte 1"},
    {"dot without digits", "1.", 0, "at byte 2"},
    {"dot first", ".5", 0, "at byte 0"},
    {"plus sign", "+1", 0, "at byte 0"},
    {"lone minus", "-", 0, "at byte 1"},
    {"exponent without digits", "1e+", 0, "at byte 3"},
    {"hex number", "0x10", 0, "at byte 1"},
    {"NaN", "NaN", 0, "at byte 0"},
    {"Infinity", "-Infinity", 0, "at byte 1"},
    {"number out of range", "[1e400]", 0, "number out of range at byte 1"},
    {"unterminated string", "\"abc", 0, "unterminated string: unexpected end of input at byte 4"},
    {"unterminated after escape", "\"abc\\", 0, "at byte 5"},
    {"raw control char in string", "\"a\x01\"", 0, "control character in string: unexpected byte 0x01 at byte 2"},
    {"raw newline in string", "\"a\nb\"", 0, "at byte 2"},
    {"bad escape", "\"\\x\"", 0, "bad string escape: unexpected 'x' at byte 2"},
    {"short \\u escape", "\"\\u12\"", 0, "at byte 1"},
    {"non-hex \\u escape", "\"\\u12g4\"", 0, "at byte 1"},
    {"lone high surrogate", "\"\\ud800\"", 0, "high surrogate not followed by a low surrogate at byte 1"},
    {"high surrogate then non-surrogate", "\"\\ud800\\u0041\"", 0, "at byte 1"},
    {"lone low surrogate", "\"x\\udc00\"", 0, "lone low surrogate in \\u escape at byte 2"},
    {"invalid UTF-8 continuation", "\"\xc3\x28\"", 0, "invalid UTF-8 in string at byte 1"},
    {"UTF-8 surrogate", "\"ab\xed\xa0\x80\"", 0, "invalid UTF-8 in string at byte 3"},
    {"overlong UTF-8", "\"\xc0\xaf\"", 0, "invalid UTF-8 in string at byte 1"},
    {"overlong 3-byte UTF-8", "\"\xe0\x80\xaf\"", 0, "invalid UTF-8 in string at byte 1"},
    {"UTF-8 above U+10FFFF", "\"\xf4\x90\x80\x80\"", 0, "invalid UTF-8 in string at byte 1"},
    {"truncated UTF-8", "\"\xe2\x82\"", 0, "invalid UTF-8 in string at byte 1"},
    {"stray continuation byte", "\"\x80\"", 0, "invalid UTF-8 in string at byte 1"},
    {"0xff byte", "\"abcdefghij\xff\"", 0, "invalid UTF-8 in string at byte 11"},
    {"invalid UTF-8 after an escape", "\"\\n\xff\"", 0, "invalid UTF-8 in string at byte 3"},
    {"invalid UTF-8 in a key", "{\"\xff\":1}", 0, "invalid UTF-8 in string at byte 2"},
    {"trailing garbage", "[1] x", 0, "trailing data after the value: unexpected 'x' at byte 4"},
    {"two values", "1 2", 0, "at byte 2"},
    {"byte order mark", "\xef\xbb\xbf{}", 0, "at byte 0"},
    {"NUL after the value", "{}\0", 3, "unexpected byte 0x00 at byte 2"},
    {"single quotes", "['a']", 0, "at byte 1"},
    {"comment", "[1 /* x */]", 0, "at byte 3"},
};

/* ==================== Tests ==================== */

static void test_roundtrips(void) {
    char err[SL_ERRLEN], name[256];
    for (size_t i = 0; i < sizeof(rt_cases) / sizeof(rt_cases[0]); i++) {
        const struct rt_case *c = &rt_cases[i];
        size_t n = c->inlen ? c->inlen : strlen(c->in);
        int top = lua_gettop(L);
        const char *got = roundtrip(c->in, n, err, sizeof(err));
        snprintf(name, sizeof(name), "round trip: %s", c->name);
        TEST(name, got && strcmp(got, c->out) == 0);
        if (!got) printf("#   error: %s\n", err);
        else if (strcmp(got, c->out)) printf("#   got %s, want %s\n", got, c->out);
        if (lua_gettop(L) != top) printf("#   stack moved\n");
    }
}

static void test_errors(void) {
    char err[SL_ERRLEN], name[256];
    for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
        const struct err_case *c = &err_cases[i];
        size_t n = c->inlen ? c->inlen : strlen(c->in);
        int top = lua_gettop(L);
        err[0] = '\0';
        int rc = sl_json_decode(L, c->in, n, err, sizeof(err));
        snprintf(name, sizeof(name), "rejects %s with the offset", c->name);
        TEST(name, rc == SL_ERR && strstr(err, c->want) && lua_gettop(L) == top);
        if (rc != SL_ERR) { printf("#   decoded instead of failing\n"); lua_settop(L, top); }
        else if (!strstr(err, c->want)) printf("#   error \"%s\", want \"%s\"\n", err, c->want);
    }
}

static void test_values(void) {
    char err[SL_ERRLEN];
    int top = lua_gettop(L);

    TEST("null decodes to lightuserdata NULL",
         sl_json_decode(L, "null", 4, err, sizeof(err)) == SL_OK &&
         lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
    lua_settop(L, top);

    {
        static const char text[] = "{\"zz\":1,\"b\":{\"y\":[{\"q\":1,\"a\":2}],\"x\":null},"
                                   "\"a\":\"s\",\"ab\":true,\"B\":2}";
        struct sl_buf out = {0};
        int ok = sl_json_decode(L, text, sizeof(text) - 1, err, sizeof(err)) == SL_OK &&
                 sl_json_encode_sorted(L, -1, &out, err, sizeof(err)) == SL_OK;
        TEST("sorted encoding writes every object's keys in byte order",
             ok && !strcmp(sl_buf_cstr(&out), "{\"B\":2,\"a\":\"s\",\"ab\":true,"
                           "\"b\":{\"x\":null,\"y\":[{\"a\":2,\"q\":1}]},\"zz\":1}") &&
             lua_gettop(L) == top + 1);
        sl_buf_free(&out);
        lua_settop(L, top);
    }

    TEST("ms timestamp decodes exactly",
         sl_json_decode(L, "1795667676496", 13, err, sizeof(err)) == SL_OK &&
         lua_tonumber(L, -1) == 1795667676496.0);
    lua_settop(L, top);

    TEST("0.1 decodes to the nearest double",
         sl_json_decode(L, "0.1", 3, err, sizeof(err)) == SL_OK && lua_tonumber(L, -1) == 0.1);
    lua_settop(L, top);

    TEST("-0 decodes to negative zero",
         sl_json_decode(L, "-0", 2, err, sizeof(err)) == SL_OK &&
         lua_tonumber(L, -1) == 0 && signbit(lua_tonumber(L, -1)));
    lua_settop(L, top);

    TEST("array has the shared array metatable",
         sl_json_decode(L, "[1]", 3, err, sizeof(err)) == SL_OK &&
         lua_getmetatable(L, -1) && (sl_json_push_array_mt(L), lua_rawequal(L, -1, -2)));
    lua_settop(L, top);

    TEST("object has no metatable",
         sl_json_decode(L, "{\"a\":1}", 7, err, sizeof(err)) == SL_OK && !lua_getmetatable(L, -1));
    lua_settop(L, top);

    TEST("decode needs no NUL terminator",
         sl_json_decode(L, "[12]345", 4, err, sizeof(err)) == SL_OK && lua_objlen(L, -1) == 1);
    lua_settop(L, top);

    TEST("number at the very end of the input",
         sl_json_decode(L, "12345", 3, err, sizeof(err)) == SL_OK && lua_tonumber(L, -1) == 123);
    lua_settop(L, top);
}

/* The number encoder must print what the shortest of %.15g/%.16g/%.17g that
 * reads back the same prints. */
static void test_number_format(void) {
    char err[SL_ERRLEN], want[40];
    struct sl_buf out = {0};
    int bad = 0, total = 0;
    unsigned seed = 12345;

    for (int i = 0; i < 200000 && bad < 5; i++) {
        double x;
        uint64_t bits;
        switch (i % 6) {
        case 0: x = (double)(i - 100000) / 1000; break;
        case 5:                                   /* short decimals below 1e-4: d.ddde-XX */
            seed = seed * 1103515245 + 12345;
            x = (double)(seed % 100000000 + 1) / 1e12 / pow(10, seed % 11) * (i & 1 ? 1 : -1);
            break;
        case 1: x = 1.0 / (i + 2); break;
        case 2: x = (double)i * 0.1; break;
        case 3: seed = seed * 1103515245 + 12345; x = (double)(seed % 100000000) / 1e7 - 5; break;
        default:
            seed = seed * 1103515245 + 12345;
            bits = ((uint64_t)seed << 32) ^ ((uint64_t)i * 0x9E3779B97F4A7C15ULL);
            memcpy(&x, &bits, sizeof(x));
            if (!isfinite(x)) continue;
        }
        if (x == floor(x) && fabs(x) <= 9007199254740992.0) continue;
        snprintf(want, sizeof(want), "%.15g", x);
        if (strtod(want, NULL) != x) {
            snprintf(want, sizeof(want), "%.16g", x);
            if (strtod(want, NULL) != x) snprintf(want, sizeof(want), "%.17g", x);
        }
        sl_buf_reset(&out);
        lua_pushnumber(L, x);
        total++;
        if (sl_json_encode(L, -1, &out, err, sizeof(err)) != SL_OK || strcmp(sl_buf_cstr(&out), want)) {
            printf("#   %.17g: got %s, want %s\n", x, out.data ? out.data : "(none)", want);
            bad++;
        }
        lua_pop(L, 1);
    }
    TEST("numbers print as the shortest of %.15g/%.16g/%.17g that round-trips", bad == 0 && total > 180000);
    sl_buf_free(&out);
}

static void test_encode_errors(void) {
    static const struct { const char *name, *lua, *want; } cases[] = {
        {"a function", "return function() end", "cannot encode a function"},
        {"NaN", "return 0/0", "NaN"},
        {"infinity", "return math.huge", "infinity"},
        {"-infinity inside an array", "return {1, -math.huge}", "infinity"},
        {"mixed keys", "return {1, a = 2}", "both string and non-string keys"},
        {"mixed keys, string first", "return {a = 1, [2] = 2}", "both string and non-string keys"},
        {"a plain table with holes", "return {[1] = 1, [3] = 3}", "holes"},
        {"a key that is not 1..n", "return {[0] = 1}", "not 1..n"},
        {"a fractional key", "return {[1.5] = 1}", "not 1..n"},
        {"a boolean key", "return {[true] = 1}", "both string and non-string keys"},
        {"invalid UTF-8", "return {s = 'ab\\255'}", "invalid UTF-8 in string at byte 2"},
        {"invalid UTF-8 in a key", "return {['\\192\\175'] = 1}", "invalid UTF-8"},
        {"a cycle", "local t = {} t.t = t return t", "nesting deeper than 256"},
        {"300 levels", "local t = {} for i = 1, 300 do t = {t} end return t", "nesting deeper than 256"},
        {"a coroutine", "return coroutine.create(print)", "cannot encode a thread"},
        {"an excessively sparse array", "return sluice.array({[1] = 1, [1000] = 2})", "sparse"},
        {"an array in itself (each level judged once)", "local t = {} t[1] = t return t", "nesting deeper than 256"},
        {"a bad value before a bad key: the key is judged first",
         "local t = {1, function() end, 3} t.x = 1 return t", "both string and non-string keys"},
        {"a bad value in an array that is fine otherwise", "return {1, 2, function() end, 4}", "cannot encode a function"},
        {"a bad value in an array part with holes after it", "local t = {1, function() end} t[4] = 4 return t", "holes"},
    };
    char err[SL_ERRLEN], name[256];
    struct sl_buf out = {0};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int top = lua_gettop(L);
        sl_buf_reset(&out);
        sl_buf_adds(&out, "prefix");
        if (luaL_dostring(L, cases[i].lua)) {
            printf("#   lua error: %s\n", lua_tostring(L, -1));
            lua_settop(L, top);
            continue;
        }
        int rc = sl_json_encode(L, -1, &out, err, sizeof(err));
        snprintf(name, sizeof(name), "encode rejects %s and keeps the buffer", cases[i].name);
        TEST(name, rc == SL_ERR && strstr(err, cases[i].want) && out.len == 6 &&
             strcmp(out.data, "prefix") == 0 && lua_gettop(L) == top + 1);
        if (rc == SL_OK) printf("#   encoded as %s\n", out.data);
        else if (!strstr(err, cases[i].want)) printf("#   error \"%s\", want \"%s\"\n", err, cases[i].want);
        lua_settop(L, top);
    }

    int top = lua_gettop(L);
    (void)luaL_dostring(L, "local t = {} for i = 1, 255 do t = {t} end return t");
    sl_buf_reset(&out);
    TEST("encode accepts 256 levels", sl_json_encode(L, -1, &out, err, sizeof(err)) == SL_OK &&
         out.len == 512 && out.data[254] == '[' && out.data[255] == '{' && out.data[256] == '}');
    lua_settop(L, top);
    sl_buf_free(&out);
}

static void test_encode_values(void) {
    static const struct { const char *name, *lua, *want; } cases[] = {
        {"a sequence as an array", "return {1, 2, 3}", "[1,2,3]"},
        {"an empty plain table as an object", "return {}", "{}"},
        {"sluice.array() as an empty array", "return sluice.array()", "[]"},
        {"sluice.array({}) as an empty array", "return sluice.array({})", "[]"},
        {"holes in sluice.array as null", "return sluice.array({1, nil, 3})", "[1,null,3]"},
        {"trailing hole kept as null", "local t = sluice.array({}) t[3] = 1 return t", "[null,null,1]"},
        {"nil as null", "return nil", "null"},
        {"sluice.null as null", "return {sluice.null}", "[null]"},
        {"a large ms timestamp", "return {stm = 1795667676496}", "{\"stm\":1795667676496}"},
        {"2^53", "return 2^53", "9007199254740992"},
        {"a float", "return 0.1 + 0.2", "0.30000000000000004"},
        {"-0", "return -0.0", "-0"},
        {"1/3", "return 1/3", "0.3333333333333333"},
        {"1e21", "return 1e21", "1e+21"},
        {"escapes", "return '\"\\\\\\n\\r\\t\\b\\f\\0\\1\\31/'", "\"\\\"\\\\\\n\\r\\t\\b\\f\\u0000\\u0001\\u001f/\""},
        {"UTF-8 raw", "return '\\226\\130\\172'", "\"\xe2\x82\xac\""},
        {"nested", "return {a = {sluice.array()}}", "{\"a\":[[]]}"},
    };
    char err[SL_ERRLEN], name[256];
    struct sl_buf out = {0};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int top = lua_gettop(L);
        sl_buf_reset(&out);
        if (luaL_dostring(L, cases[i].lua)) {
            printf("#   lua error: %s\n", lua_tostring(L, -1));
            lua_settop(L, top);
            continue;
        }
        int rc = sl_json_encode(L, -1, &out, err, sizeof(err));
        snprintf(name, sizeof(name), "encodes %s", cases[i].name);
        TEST(name, rc == SL_OK && strcmp(sl_buf_cstr(&out), cases[i].want) == 0 && lua_gettop(L) == top + 1);
        if (rc != SL_OK) printf("#   error: %s\n", err);
        else if (strcmp(out.data, cases[i].want)) printf("#   got %s, want %s\n", out.data, cases[i].want);
        lua_settop(L, top);
    }

    int top = lua_gettop(L);
    sl_buf_reset(&out);
    sl_buf_adds(&out, "x=");
    lua_pushnumber(L, 5);
    TEST("encode appends to the buffer",
         sl_json_encode(L, -1, &out, err, sizeof(err)) == SL_OK && strcmp(out.data, "x=5") == 0);
    lua_settop(L, top);

    /* A sink's fields: values on the stack, keys given, nil left out. */
    static const char *const keys[] = {"\"a\"", "\"b\"", "\"c\""};
    sl_buf_reset(&out);
    sl_buf_adds(&out, "v=");
    lua_pushstring(L, "s");
    lua_pushnil(L);
    if (luaL_dostring(L, "return {z = 1, y = sluice.array({2})}")) lua_pushnil(L);
    TEST("members: the values named by the keys, nil left out, objects sorted, the stack kept",
         sl_json_encode_members_sorted(L, top + 1, 3, keys, &out, err, sizeof(err)) == SL_OK &&
         !strcmp(out.data, "v={\"a\":\"s\",\"c\":{\"y\":[2],\"z\":1}}") &&
         lua_gettop(L) == top + 3);
    lua_settop(L, top);
    sl_buf_reset(&out);
    lua_pushnil(L);
    TEST("members: all nil is an empty object",
         sl_json_encode_members_sorted(L, -1, 1, keys, &out, err, sizeof(err)) == SL_OK &&
         !strcmp(out.data, "{}"));
    lua_settop(L, top);
    sl_buf_reset(&out);
    sl_buf_adds(&out, "v=");
    lua_pushstring(L, "ok");
    lua_pushstring(L, "\377");
    TEST("members: a value that cannot be encoded fails and leaves the buffer as it was",
         sl_json_encode_members_sorted(L, top + 1, 2, keys, &out, err, sizeof(err)) == SL_ERR &&
         !strcmp(sl_buf_cstr(&out), "v=") && strstr(err, "UTF-8") && lua_gettop(L) == top + 2);
    lua_settop(L, top);
    sl_buf_free(&out);
}

static void test_depth(void) {
    char err[SL_ERRLEN];
    size_t n = 1 << 20;
    char *s = sl_malloc(n);
    int top = lua_gettop(L);

    memset(s, '[', n);
    err[0] = '\0';
    TEST("1 MB of '[' fails cleanly",
         sl_json_decode(L, s, n, err, sizeof(err)) == SL_ERR && strstr(err, "nesting deeper than 256") &&
         lua_gettop(L) == top);

    for (size_t i = 0; i + 5 <= n; i += 5) memcpy(s + i, "{\"a\":", 5);
    TEST("1 MB of '{\"a\":' fails cleanly",
         sl_json_decode(L, s, n, err, sizeof(err)) == SL_ERR && strstr(err, "nesting deeper than 256") &&
         lua_gettop(L) == top);

    memset(s, '[', 256);
    memset(s + 256, ']', 256);
    TEST("256 levels decode", sl_json_decode(L, s, 512, err, sizeof(err)) == SL_OK);
    lua_settop(L, top);
    memset(s, '[', 257);
    memset(s + 257, ']', 257);
    TEST("257 levels fail", sl_json_decode(L, s, 514, err, sizeof(err)) == SL_ERR &&
         strstr(err, "at byte 256"));
    free(s);

    /* Every level holds as many members as it can keep on the stack before
     * the nested one opens: the Lua stack must still be enough. */
    struct sl_buf b = {0};
    for (int d = 0; d < 256; d++) {
        sl_buf_addc(&b, d % 2 ? '[' : '{');
        for (int i = 0; i < 70; i++) {
            if (d % 2) sl_buf_adds(&b, "\"xxxxxxxx\",");
            else sl_buf_printf(&b, "\"k%d\":0,", i);
        }
        if (d % 2 == 0) sl_buf_adds(&b, "\"n\":");
    }
    sl_buf_adds(&b, "0");
    for (int d = 255; d >= 0; d--) sl_buf_addc(&b, d % 2 ? ']' : '}');
    int ok = sl_json_decode(L, b.data, b.len, err, sizeof(err)) == SL_OK;
    TEST("256 wide levels decode within the Lua stack", ok);
    if (!ok) printf("#   %s\n", err);
    else {
        struct sl_buf out = {0};
        int enc = sl_json_encode(L, -1, &out, err, sizeof(err)) == SL_OK;
        TEST("256 wide levels encode", enc);
        if (enc) {
            TEST("256 wide levels decode again equal",
                 sl_json_decode(L, out.data, out.len, err, sizeof(err)) == SL_OK &&
                 deep_eq(lua_gettop(L) - 1, lua_gettop(L)));
        }
        sl_buf_free(&out);
    }
    lua_settop(L, top);
    sl_buf_free(&b);
}

static void test_large(void) {
    char err[SL_ERRLEN];
    struct sl_buf b = {0}, out = {0};
    int top = lua_gettop(L), ok;

    sl_buf_addc(&b, '[');
    for (int i = 0; i < 100000; i++) sl_buf_printf(&b, "%s%d", i ? "," : "", i);
    sl_buf_addc(&b, ']');
    ok = sl_json_decode(L, b.data, b.len, err, sizeof(err)) == SL_OK;
    TEST("100000-element array decodes", ok && lua_objlen(L, -1) == 100000);
    if (ok) {
        lua_rawgeti(L, -1, 100000);
        TEST("last element in place", lua_tonumber(L, -1) == 99999);
        lua_pop(L, 1);
        TEST("100000-element array encodes back identical",
             sl_json_encode(L, -1, &out, err, sizeof(err)) == SL_OK && out.len == b.len &&
             memcmp(out.data, b.data, b.len) == 0);
    }
    lua_settop(L, top);

    sl_buf_reset(&b);
    sl_buf_addc(&b, '{');
    for (int i = 0; i < 10000; i++) sl_buf_printf(&b, "%s\"key%d\":%d", i ? "," : "", i, i);
    sl_buf_addc(&b, '}');
    ok = sl_json_decode(L, b.data, b.len, err, sizeof(err)) == SL_OK;
    TEST("10000-key object decodes", ok);
    if (ok) {
        lua_getfield(L, -1, "key9999");
        TEST("last key in place", lua_tonumber(L, -1) == 9999);
        lua_pop(L, 1);
        sl_buf_reset(&out);
        TEST("10000-key object re-decodes equal",
             sl_json_encode(L, -1, &out, err, sizeof(err)) == SL_OK &&
             sl_json_decode(L, out.data, out.len, err, sizeof(err)) == SL_OK &&
             deep_eq(lua_gettop(L) - 1, lua_gettop(L)));
    }
    lua_settop(L, top);

    sl_buf_reset(&b);                        /* a 100 KB string with escapes spread through */
    sl_buf_addc(&b, '"');
    for (int i = 0; i < 10000; i++) sl_buf_adds(&b, "abcdefgh\\n");
    sl_buf_addc(&b, '"');
    ok = sl_json_decode(L, b.data, b.len, err, sizeof(err)) == SL_OK;
    TEST("100 KB escaped string decodes", ok && lua_objlen(L, -1) == 90000);
    lua_settop(L, top);

    sl_buf_free(&b);
    sl_buf_free(&out);
}

static void test_fixture(const char *path, int envelope) {
    char err[SL_ERRLEN], name[300];
    size_t n;
    char *raw = read_file(path, &n);
    struct sl_buf in = {0}, out = {0};
    int top = lua_gettop(L), ok;

    snprintf(name, sizeof(name), "fixture %s%s is readable", path, envelope ? " in an envelope" : "");
    TEST(name, raw != NULL);
    if (!raw) return;
    if (envelope) {
        sl_buf_adds(&in, "{\"message\":");
        sl_buf_add(&in, raw, n);
        sl_buf_adds(&in, ",\"collector\":{\"ts\":1795667677512,\"ip\":\"127.0.0.1\","
                         "\"path\":\"/com.snowplowanalytics.snowplow/tp2\",\"headers\":[]}}");
    } else {
        sl_buf_add(&in, raw, n);
    }

    ok = sl_json_decode(L, in.data, in.len, err, sizeof(err)) == SL_OK;
    snprintf(name, sizeof(name), "fixture %s%s decodes", path, envelope ? " in an envelope" : "");
    TEST(name, ok);
    if (!ok) { printf("#   %s\n", err); goto done; }
    ok = sl_json_encode(L, -1, &out, err, sizeof(err)) == SL_OK;
    snprintf(name, sizeof(name), "fixture %s%s re-encodes", path, envelope ? " in an envelope" : "");
    TEST(name, ok);
    if (!ok) { printf("#   %s\n", err); goto done; }
    ok = sl_json_decode(L, out.data, out.len, err, sizeof(err)) == SL_OK;
    snprintf(name, sizeof(name), "fixture %s%s decodes again equal", path, envelope ? " in an envelope" : "");
    TEST(name, ok && deep_eq(top + 1, top + 2));

    lua_pushvalue(L, top + 1);
    lua_setglobal(L, "fixture");
    snprintf(name, sizeof(name), "fixture %s%s: fields in place", path, envelope ? " in an envelope" : "");
    TEST(name, lua_true(envelope
        ? "local m = fixture.message return m.data[1].tv == 'js-4.10.1' and #fixture.collector.headers == 0"
          " and getmetatable(fixture.collector.headers) ~= nil and fixture.collector.ts == 1795667677512"
        : "return type(fixture.data) == 'table' and #fixture.data >= 1 and fixture.data[1].tv == 'js-4.10.1'"
          " and fixture.schema:find('payload_data', 1, true) ~= nil"));
done:
    lua_settop(L, top);
    free(raw);
    sl_buf_free(&in);
    sl_buf_free(&out);
}

static void test_lua_api(void) {
    TEST("sluice.json_decode('[]') is an empty array that encodes as []",
         lua_true("return sluice.json_encode(sluice.json_decode('[]')) == '[]'"));
    TEST("sluice.json_decode returns nil, err on bad input",
         lua_true("local v, e = sluice.json_decode('[1,') return v == nil and e:find('at byte 3', 1, true) ~= nil"));
    TEST("sluice.json_encode returns nil, err on a function",
         lua_true("local v, e = sluice.json_encode({f = print}) return v == nil and e:find('function', 1, true) ~= nil"));
    TEST("json null is sluice.null",
         lua_true("return sluice.json_decode('[null]')[1] == sluice.null"));
    TEST("sluice.array keeps the table and sets the metatable",
         lua_true("local t = {} return sluice.array(t) == t and getmetatable(t) ~= nil"));
    TEST("decoded arrays share one metatable",
         lua_true("return getmetatable(sluice.json_decode('[1]')) == getmetatable(sluice.array())"));
    TEST("json_decode rejects a non-string argument",
         lua_true("return not pcall(sluice.json_decode, {})"));
    TEST("duplicate keys: last wins",
         lua_true("return sluice.json_decode('{\"a\":1,\"a\":2}').a == 2"));
    TEST("objects with many keys decode",
         lua_true("local t = {} for i = 1, 200 do t['k' .. i] = i end"
                  " local d = sluice.json_decode(sluice.json_encode(t))"
                  " for i = 1, 200 do if d['k' .. i] ~= i then return false end end return true"));
}

/* The array metatable sits in a registry slot of its own (regs.h): refs
 * made and freed around it never take or change it. */
static void test_registry_slot(void) {
    int refs[300];
    for (int i = 0; i < 300; i++) {
        lua_pushinteger(L, i);
        refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    for (int i = 0; i < 300; i += 2) luaL_unref(L, LUA_REGISTRYINDEX, refs[i]);
    bool positive = true;
    for (int i = 0; i < 150; i++) {
        lua_pushboolean(L, 1);
        positive = positive && luaL_ref(L, LUA_REGISTRYINDEX) > 0;
    }
    sl_json_push_array_mt(L);                  /* mt */
    lua_getfield(L, -1, "__name");
    TEST("registry: 450 refs made and 150 freed leave the array metatable where it was",
         positive && lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), "array"));
    lua_pop(L, 2);
}

int main(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    sl_json_init(L);

    lua_createtable(L, 0, 4);                  /* sluice */
    lua_pushcfunction(L, sl_lua_json_decode);
    lua_setfield(L, -2, "json_decode");
    lua_pushcfunction(L, sl_lua_json_encode);
    lua_setfield(L, -2, "json_encode");
    lua_pushcfunction(L, sl_lua_array);
    lua_setfield(L, -2, "array");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_setglobal(L, "sluice");                /* */

    test_roundtrips();
    test_errors();
    test_values();
    test_encode_values();
    test_encode_errors();
    test_number_format();
    test_depth();
    test_large();
    test_fixture("spec/fixtures/snowplow/tp2-post-product.body.raw", 0);
    test_fixture("spec/fixtures/snowplow/tp2-post-batch3.body.raw", 0);
    test_fixture("spec/fixtures/snowplow/tp2-post-product.body.raw", 1);
    test_fixture("spec/fixtures/snowplow/tp2-post-batch3.body.raw", 1);
    test_lua_api();
    test_registry_slot();

    TEST("stack is balanced at the end", lua_gettop(L) == 0);
    lua_close(L);
    return TEST_DONE();
}
