/* deadletter_test.c -- dead letters always fit (deadletter.h). */
#include "deadletter.h"
#include "json.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

static lua_State *L;

/* The dead letter of value for a 1000-byte record limit (or max). */
static void encode(const char *value, size_t len, const char *error, size_t max,
                   struct sl_deadletter *dl) {
    struct sl_deadletter_src src = {
        .topic = "in", .partition = 2, .offset = 7, .timestamp = 5, .key = "k", .keylen = 1,
        .value = value, .len = len,
    };
    sl_deadletter_encode(L, &src, "extract", error, "0123456789abcdef", 99, max, dl);
}

static void small_value_is_json(void) {
    struct sl_deadletter dl = {0};
    encode("{\"a\":1}", 7, "boom", 1000, &dl);
    TEST("a small value goes in the JSON form", !dl.raw && !dl.truncated &&
         dl.value == dl.json.data && dl.len == dl.json.len);
    TEST("which names source, step, error, version and time",
         strstr(sl_buf_cstr(&dl.json), "{\"source\":{\"topic\":\"in\",\"partition\":2,\"offset\":7,"
                "\"timestamp\":5,\"key\":\"k\"},\"value\":\"{\\\"a\\\":1}\",\"step\":\"extract\","
                "\"error\":\"boom\",\"rulesVersion\":\"0123456789abcdef\",\"at\":99}") != NULL);
    encode("\xff\xfe", 2, "boom", 1000, &dl);
    TEST("a value that is not UTF-8 goes in base64", strstr(sl_buf_cstr(&dl.json),
                                                            "\"valueBase64\":\"//4=\"") != NULL);
    sl_buf_free(&dl.json);
}

static void quotes_go_raw(void) {
    struct sl_deadletter dl = {0};
    size_t n = 900;
    char *v = malloc(n);
    memset(v, '"', n);
    v[0] = '[';
    encode(v, n, "boom", 2000, &dl);
    TEST("a value that escaping makes too long goes raw, whole",
         dl.raw && !dl.truncated && dl.value == v && dl.len == n);
    TEST("with the metadata and its size in the header",
         strstr(sl_buf_cstr(&dl.json), "\"valueBytes\":900,\"step\":\"extract\"") != NULL &&
         strncmp(dl.json.data, "{\"source\":{\"topic\":\"in\"", 23) == 0);
    TEST("and key + value + header within the limit less the slack",
         1 + dl.len + dl.json.len <= 2000 - SL_DEADLETTER_SLACK);
    free(v);
    sl_buf_free(&dl.json);
}

static void too_long_is_cut(void) {
    struct sl_deadletter dl = {0};
    size_t n = 5000, max = 2000;
    char *v = malloc(n);
    memset(v, 'x', n);
    char *err = malloc(SL_DEADLETTER_ERROR_MAX * 2 + 1);
    memset(err, 'e', SL_DEADLETTER_ERROR_MAX * 2);
    err[SL_DEADLETTER_ERROR_MAX * 2] = '\0';
    encode(v, n, "boom", max, &dl);
    TEST("a value that does not fit even raw is cut and marked",
         dl.raw && dl.truncated && dl.len > 0 && dl.len < n &&
         strstr(sl_buf_cstr(&dl.json), "\"valueBytes\":5000,\"valueTruncated\":true") != NULL);
    TEST("key + value + header fit within the limit less the slack",
         1 + dl.len + dl.json.len <= max - SL_DEADLETTER_SLACK);
    encode("{}", 2, err, 0, &dl);
    TEST("an error is cut to SL_DEADLETTER_ERROR_MAX bytes",
         !dl.raw && dl.json.len < SL_DEADLETTER_ERROR_MAX + 300);
    free(v);
    free(err);
    sl_buf_free(&dl.json);
}

int main(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    sl_json_init(L);
    small_value_is_json();
    quotes_go_raw();
    too_long_is_cut();
    TEST("the Lua stack is left as it was", lua_gettop(L) == 0);
    lua_close(L);
    return TEST_DONE();
}
