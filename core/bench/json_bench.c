/* json_bench.c -- what the JSON codec costs per record.
 *
 * Decodes a ~1.4 KB record (the real tp2 capture in a collector envelope)
 * into Lua tables N times, with our decoder and, when it loads, lua-cjson;
 * then as the pipeline hands it to rules (lazy.h) and read as the extract
 * rule reads it, beside the eager decoder read the same way; then encodes a
 * small pipeline context. Run from the repository root:
 *   build/bench/json_bench [N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "json.h"
#include "lazy.h"
#include "sl.h"

#define BENCH_FIXTURE "spec/fixtures/snowplow/tp2-post-product.body.raw"
#define BENCH_N 200000 /* Records decoded per measurement unless argv[1] says otherwise. */

/* CPU time of this thread: what a record costs, even when other processes
 * share the cores. */
static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Builds the record the pipeline sees: the tracker body in an envelope with
 * collector metadata. Returns SL_ERR when the fixture cannot be read. */
static int build_record(struct sl_buf *rec) {
    FILE *f = fopen(BENCH_FIXTURE, "rb");
    char body[16384];
    size_t n;

    if (!f) return SL_ERR;
    n = fread(body, 1, sizeof(body), f);
    fclose(f);
    while (n && (body[n - 1] == '\n' || body[n - 1] == '\r')) n--;
    sl_buf_adds(rec, "{\"message\":");
    sl_buf_add(rec, body, n);
    sl_buf_adds(rec,
        ",\"collector\":{\"receivedAt\":1795667677512,"
        "\"origin\":\"http://127.0.0.1:8080\","
        "\"userAgent\":\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/156.0.0.0 Safari/537.36\","
        "\"ip\":\"127.0.0.1\",\"path\":\"/com.snowplowanalytics.snowplow/tp2\","
        "\"contentType\":\"application/json; charset=UTF-8\",\"hostname\":\"127.0.0.1:9090\","
        "\"networkUserId\":\"2f6e8c1a-58b4-4e0b-9a8e-0b1f4f6f2d71\","
        "\"referer\":\"http://127.0.0.1:8080/products/classic-leather-sneaker\","
        "\"acceptLanguage\":\"en-US,en;q=0.9\",\"headers\":[\"sec-ch-ua-platform: \\\"Linux\\\"\","
        "\"sec-ch-ua: \\\"Not:A-Brand\\\";v=\\\"8\\\", \\\"Chromium\\\";v=\\\"156\\\"\","
        "\"sec-ch-ua-mobile: ?0\",\"Sec-Fetch-Site: same-site\",\"Sec-Fetch-Mode: cors\"]}}");
    return SL_OK;
}

/* The members the extract rule reads of a record (snowplow.payload, then
 * page_view on each event), as a function of the record's value. */
static const char extract_reads[] =
    "return function(input)\n"
    "  local m = input.message\n"
    "  local schema, data = m.schema, m.data\n"
    "  local n = 0\n"
    "  for i = 1, #data do\n"
    "    local ev = data[i]\n"
    "    if ev.e and ev.aid and ev.duid and ev.eid and ev.url and ev.dtm then n = n + 1 end\n"
    "  end\n"
    "  return schema and n\n"
    "end\n";

/* Times n rounds of: push the record (lazy or eager), then call the reads
 * function at the top of the stack on it, or, when out is not NULL, encode
 * it with sorted keys into out (as a sink writing the record does). */
static double time_push(lua_State *L, const struct sl_buf *rec, bool lazy, struct sl_buf *out,
                        int n) {
    char err[SL_ERRLEN];
    double t0 = 0;
    for (int i = -n / 10; i < n; i++) {                   /* the first tenth warms up */
        if (i == 0) t0 = now_ns();
        if (!out) lua_pushvalue(L, -1);                   /* f f */
        if (lazy) sl_lazy_push(L, rec->data, rec->len, err, sizeof(err));
        else sl_json_decode(L, rec->data, rec->len, err, sizeof(err));
        if (out) {
            sl_buf_reset(out);
            sl_json_encode_sorted(L, -1, out, err, sizeof(err));
        } else {
            lua_call(L, 1, 1);                            /* f n */
        }
        lua_pop(L, 1);
    }
    return now_ns() - t0;
}

static void report(const char *what, double ns, size_t bytes, int n) {
    double per = ns / n;
    printf("%s: %.0f ns/record (%.0f MB/s)\n", what, per, (double)bytes / per * 1e3);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : BENCH_N;
    struct sl_buf rec = {0}, out = {0};
    char err[SL_ERRLEN];
    lua_State *L = luaL_newstate();
    double t0;
    int have_cjson;

    if (n <= 0) n = BENCH_N;
    luaL_openlibs(L);
    sl_json_init(L);
    if (build_record(&rec) != SL_OK) {
        fprintf(stderr, "json_bench: cannot read %s (run from the repository root)\n", BENCH_FIXTURE);
        return 1;
    }
    printf("record: %zu bytes, %d decodes per run\n", rec.len, n);

    /* Ours: C buffer in, Lua table out. */
    for (int i = 0; i < n / 10; i++) {
        if (sl_json_decode(L, rec.data, rec.len, err, sizeof(err)) != SL_OK) {
            fprintf(stderr, "json_bench: %s\n", err);
            return 1;
        }
        lua_pop(L, 1);
    }
    t0 = now_ns();
    for (int i = 0; i < n; i++) {
        sl_json_decode(L, rec.data, rec.len, err, sizeof(err));
        lua_pop(L, 1);
    }
    report("json decode", now_ns() - t0, rec.len, n);

    /* The tape alone: what parsing and checking the text costs, before any
     * Lua value is made. */
    struct sl_json_tape tape = {0};
    for (int i = -n / 10; i < n; i++) {
        if (i == 0) t0 = now_ns();
        if (sl_json_tape_parse(&tape, rec.data, rec.len, err, sizeof(err)) != SL_OK) {
            fprintf(stderr, "json_bench: %s\n", err);
            return 1;
        }
    }
    report("tape parse only", now_ns() - t0, rec.len, n);
    free(tape.nodes);

    /* As rules get it: parsed once, members made when read (the 16 hot keys
     * learnt in the warm-up), against the eager decoder, read the same way. */
    sl_lazy_init(L);
    if (luaL_dostring(L, extract_reads)) {
        fprintf(stderr, "json_bench: %s\n", lua_tostring(L, -1));
        return 1;
    }                                                     /* f */
    report("lazy push + the extract rule's reads", time_push(L, &rec, true, NULL, n), rec.len, n);
    report("json decode + the same reads", time_push(L, &rec, false, NULL, n), rec.len, n);
    lua_pop(L, 1);

    /* A sink that writes the record as it came (fields = {"input", ...}):
     * the lazy record is written from its tape, the eager one walked. */
    report("lazy push + sorted encode of the record unread", time_push(L, &rec, true, &out, n),
           rec.len, n);
    report("json decode + sorted encode of the record", time_push(L, &rec, false, &out, n),
           rec.len, n);
    sl_buf_reset(&out);

    /* lua-cjson, given the record already as a Lua string. */
    have_cjson = luaL_dostring(L, "return require('cjson').decode") == 0;
    if (have_cjson) {
        lua_pushlstring(L, rec.data, rec.len);            /* decode s */
        for (int i = 0; i < n / 10; i++) {
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
            lua_call(L, 1, 1);
            lua_pop(L, 1);
        }
        t0 = now_ns();
        for (int i = 0; i < n; i++) {
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
            lua_call(L, 1, 1);
            lua_pop(L, 1);
        }
        report("lua-cjson decode", now_ns() - t0, rec.len, n);
        lua_pop(L, 2);
    } else {
        printf("lua-cjson decode: not available (%s)\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }

    /* Encode a small context like the one the HTTP and debug steps write;
     * scores have 7 decimals, as a model server's JSON gives them. */
    lua_pushcfunction(L, sl_lua_array);
    lua_setglobal(L, "sluice_array");
    if (luaL_dostring(L,
            "local arr = sluice_array\n"
            "local recs = arr({})\n"
            "for i = 1, 10 do recs[i] = {id = 'gid://shopify/Product/' .. (8000000000 + i), score = tonumber(string.format('%.7f', 1 / (i + 2)))} end\n"
            "return {userId = '4f1195b8-6b68-4cd6-a7eb-925bd120e8ad', eventTime = 1795667677389,\n"
            "        product = 'classic-leather-sneaker',\n"
            "        aggregatedProducts = arr({'classic-leather-sneaker', 'merino-wool-beanie', 'canvas-weekender-bag'}),\n"
            "        recommendationsModelOutput = recs, sendResult = arr({})}")) {
        fprintf(stderr, "json_bench: %s\n", lua_tostring(L, -1));
        return 1;
    }                                                     /* ctx */
    if (sl_json_encode(L, -1, &out, err, sizeof(err)) != SL_OK) {
        fprintf(stderr, "json_bench: %s\n", err);
        return 1;
    }
    size_t ctx_len = out.len;
    t0 = now_ns();
    for (int i = 0; i < n; i++) {
        sl_buf_reset(&out);
        sl_json_encode(L, -1, &out, err, sizeof(err));
    }
    printf("json encode context (%zu bytes): %.0f ns/record\n", ctx_len, (now_ns() - t0) / n);

    if (have_cjson && luaL_dostring(L, "return require('cjson').encode") == 0) {
        lua_pushvalue(L, -2);                             /* ctx encode ctx */
        t0 = now_ns();
        for (int i = 0; i < n; i++) {
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
            lua_call(L, 1, 1);
            lua_pop(L, 1);
        }
        printf("lua-cjson encode context: %.0f ns/record\n", (now_ns() - t0) / n);
        lua_pop(L, 2);
    }

    /* Decode + re-encode the whole record: what a pass-through step costs. */
    t0 = now_ns();
    for (int i = 0; i < n; i++) {
        sl_json_decode(L, rec.data, rec.len, err, sizeof(err));
        sl_buf_reset(&out);
        sl_json_encode(L, -1, &out, err, sizeof(err));
        lua_pop(L, 1);
    }
    report("json decode+encode", now_ns() - t0, rec.len, n);

    lua_close(L);
    sl_buf_free(&rec);
    sl_buf_free(&out);
    return 0;
}
