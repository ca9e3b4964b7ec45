/* json_scan_test.c -- unit tests of the part of the JSON codec that needs no
 * Lua (core/json.c, "Scanning without Lua"): sl_json_scan, sl_json_unescape,
 * sl_json_utf8_check, sl_json_add_string_lossy.
 *
 * The scanner is held to the decoder: on a table of documents, on every
 * truncation of the real tracker captures and on every one-byte change of
 * them, sl_json_scan accepts exactly what sl_json_decode decodes and refuses
 * the rest at the same byte. Run from the repository root. */
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

/* The byte offset in an error message ("... at byte N"), or -1. */
static long err_offset(const char *err) {
    const char *at = strstr(err, "at byte ");
    return at ? strtol(at + 8, NULL, 10) : -1;
}

/* 1 when scan and decode agree on s[0..n): both accept, or both refuse at
 * the same byte. Prints the difference otherwise. */
static int agree(const char *s, size_t n) {
    char e1[SL_ERRLEN] = "", e2[SL_ERRLEN] = "";
    int top = lua_gettop(L);
    int d = sl_json_decode(L, s, n, e1, sizeof(e1));
    int c = sl_json_scan(s, n, 0, NULL, NULL, e2, sizeof(e2));
    lua_settop(L, top);
    if (d == c && (d == SL_OK || err_offset(e1) == err_offset(e2))) return 1;
    printf("#   %.*s\n#   decode: %s\n#   scan: %s\n", (int)(n < 80 ? n : 80), s,
           d == SL_OK ? "ok" : e1, c == SL_OK ? "ok" : e2);
    return 0;
}

static char *read_file(const char *path, size_t *n) {
    struct sl_buf b = {0};
    char err[SL_ERRLEN];
    if (sl_read_file(path, &b, 1 << 20, err, sizeof(err)) != SL_OK) {
        printf("#   %s\n", err);
        return NULL;
    }
    *n = b.len;
    return b.data;
}

/* Tokens as text: kind letter and depth per token, e.g. "o0 k1 s1 c0". */
static void on_token(void *arg, const struct sl_json_token *t) {
    static const char kinds[] = "oacksnl";
    struct sl_buf *b = arg;
    if (b->len) sl_buf_addc(b, ' ');
    sl_buf_printf(b, "%c%d", kinds[t->kind], t->depth);
    if (t->kind == SL_JSON_TOK_KEY || t->kind == SL_JSON_TOK_STRING || t->kind == SL_JSON_TOK_NUMBER ||
        t->kind == SL_JSON_TOK_LITERAL)
        sl_buf_printf(b, "=%.*s%s", (int)t->len, t->raw, t->escaped ? "!" : "");
}

/* ==================== Tests ==================== */

static void test_agrees_with_decoder(void) {
    static const char *docs[] = {
        "null", " true ", "false", "[]", "{}", "[ \n ]", "[1,null,3]", "{\"a\":null}",
        "[[],{},[[]],{\"a\":[]}]", "1795667676496", "-0", "0.1", "1e-400", "5e-324",
        "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "\"caf\\u00e9\"", "\"\\ud83d\\ude00\"",
        "\"\xe6\x97\xa5 \xf0\x9f\x98\x80\"", "{\"a\":1,\"a\":2}",
        "", "  ", "[1,]", "[1 2]", "{\"a\" 1}", "{a:1}", "{\"a\":1,}", "{\"a\":}", "[",
        "{\"a\":1", "[1}", "tru", "nul", "nulL", "01", "1.", ".5", "+1", "-", "1e+", "0x10",
        "NaN", "-Infinity", "[1e400]", "\"abc", "\"abc\\", "\"a\x01\"", "\"a\nb\"", "\"\\x\"",
        "\"\\u12\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"x\\udc00\"",
        "\"\xc3\x28\"", "\"ab\xed\xa0\x80\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"",
        "\"\xf4\x90\x80\x80\"", "\"\xe2\x82\"", "\"\x80\"", "\"abcdefghij\xff\"",
        "\"\\n\xff\"", "{\"\xff\":1}", "[1] x", "1 2", "\xef\xbb\xbf{}", "['a']",
        "[1 /* x */]", "{\"a\":[1,{\"b\":[true,false,null]}]}", "[-]", "[1e]", "{\"a\":1}}",
        "]", "}", ",", ":", "{\"a\"}", "{,}", "[,1]", "\"\\", "\"\\u\"", "\"\\ud800\\",
    };
    size_t ok = 0;
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) ok += agree(docs[i], strlen(docs[i]));
    TEST("scan accepts what decode decodes, refusing the rest at the same byte",
         ok == sizeof(docs) / sizeof(docs[0]));
    TEST("a NUL after the value is refused by both at its byte", agree("{}\0", 3));

    static const char *fixtures[] = {
        "spec/fixtures/snowplow/tp2-post-product.body.raw",
        "spec/fixtures/snowplow/tp2-post-batch3.body.raw",
    };
    static const unsigned char subst[] = {'"', '\\', '{', '}', '[', ']', ',', ':', '0', 'e',
                                          '-', ' ', 0x01, 0x80, 0xc3, 0xed, 0xff};
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        size_t n, cases = 0, same = 0;
        char *raw = read_file(fixtures[f], &n), name[300];
        if (!raw) { TEST("fixture readable", 0); continue; }
        for (size_t i = 0; i <= n; i++, cases++) same += agree(raw, i);
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < sizeof(subst); k++) {
                char keep = raw[i];
                raw[i] = (char)subst[k];
                cases++;
                same += agree(raw, n);
                raw[i] = keep;
            }
        snprintf(name, sizeof(name), "%s: every truncation and one-byte change (%zu) "
                 "is judged as the decoder judges it", fixtures[f], cases);
        TEST(name, same == cases);
        free(raw);
    }
}

static void test_tokens(void) {
    struct sl_buf b = {0};
    static const char doc[] = " {\"a\":[1,\"x\\n\",{}],\"b\":null} ";
    TEST("tokens come in input order with their depth",
         sl_json_scan(doc, sizeof(doc) - 1, 0, on_token, &b, NULL, 0) == SL_OK &&
         strcmp(sl_buf_cstr(&b), "o0 k1=a a1 n2=1 s2=x\\n! o2 c2 c1 k1=b l1=null c0") == 0);
    sl_buf_reset(&b);
    TEST("tokens before a fault are reported",
         sl_json_scan("[true,fals]", 11, 0, on_token, &b, NULL, 0) == SL_ERR &&
         strcmp(sl_buf_cstr(&b), "a0 l1=true") == 0);
    sl_buf_free(&b);
}

static void test_depth(void) {
    char err[SL_ERRLEN];
    struct sl_buf d = {0};
    TEST("max_depth 3 takes three containers", sl_json_scan("[[{}]]", 6, 3, NULL, NULL, NULL, 0) == SL_OK);
    TEST("and refuses a fourth at its byte",
         sl_json_scan("[[[{}]]]", 8, 3, NULL, NULL, err, sizeof(err)) == SL_ERR &&
         err_offset(err) == 3);
    for (int i = 0; i < SL_JSON_MAX_DEPTH; i++) sl_buf_addc(&d, '[');
    for (int i = 0; i < SL_JSON_MAX_DEPTH; i++) sl_buf_addc(&d, ']');
    TEST("the default depth is the decoder's (256 levels pass)", agree(d.data, d.len) &&
         sl_json_scan(d.data, d.len, 0, NULL, NULL, NULL, 0) == SL_OK);
    sl_buf_reset(&d);
    for (int i = 0; i < 100000; i++) sl_buf_addc(&d, '[');
    TEST("a nesting bomb is refused as the decoder refuses it", agree(d.data, d.len));
    sl_buf_free(&d);
}

static void test_unescape(void) {
    static const char *raws[] = {"plain", "a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t", "caf\\u00e9",
                                 "\\u20AC\\ud83d\\ude00x", "\\u0000"};
    size_t same = 0;
    for (size_t i = 0; i < sizeof(raws) / sizeof(raws[0]); i++) {
        struct sl_buf doc = {0};
        size_t n, rn = strlen(raws[i]);
        char *out = sl_malloc(rn + 1), *inplace = sl_malloc(rn + 1);
        sl_buf_printf(&doc, "\"%s\"", raws[i]);
        int top = lua_gettop(L);
        if (sl_json_decode(L, doc.data, doc.len, NULL, 0) == SL_OK) {
            const char *want = lua_tolstring(L, -1, &n);
            size_t on = sl_json_unescape(raws[i], rn, out);
            memcpy(inplace, raws[i], rn);
            size_t in = sl_json_unescape(inplace, rn, inplace);     /* in place, as the collector does */
            same += n == on && memcmp(want, out, n) == 0 && in == on && memcmp(want, inplace, n) == 0;
        }
        lua_settop(L, top);
        sl_buf_free(&doc);
        free(out);
        free(inplace);
    }
    TEST("unescape gives the bytes the decoder gives, into a buffer and in place",
         same == sizeof(raws) / sizeof(raws[0]));
}

static void test_utf8(void) {
    TEST("valid UTF-8 is checked whole", sl_json_utf8_check("a\xc3\xa9\xf0\x9f\x98\x80", 7) == 7);
    TEST("the check stops at an overlong form", sl_json_utf8_check("ab\xc0\xaf", 4) == 2);
    TEST("the check stops at a surrogate", sl_json_utf8_check("\xed\xa0\x80", 3) == 0);
    TEST("the check stops at a truncated sequence", sl_json_utf8_check("x\xe2\x82", 3) == 1);
    TEST("the check stops above U+10FFFF", sl_json_utf8_check("\xf4\x90\x80\x80", 4) == 0);

    struct sl_buf b = {0};
    sl_json_add_string_lossy(&b, "a\"\xff" "b\xe2\x82", 6);
    TEST("lossy strings escape as the encoder does and write U+FFFD per bad byte",
         strcmp(sl_buf_cstr(&b), "\"a\\\"\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd\"") == 0);
    sl_buf_reset(&b);
    sl_json_add_string_lossy(&b, "\xe2\x80\x93\n", 4);
    TEST("a valid string is written as sl_json_add_string writes it",
         strcmp(sl_buf_cstr(&b), "\"\xe2\x80\x93\\n\"") == 0);
    sl_buf_free(&b);
}

int main(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    sl_json_init(L);

    test_agrees_with_decoder();
    test_tokens();
    test_depth();
    test_unescape();
    test_utf8();

    lua_close(L);
    return TEST_DONE();
}
