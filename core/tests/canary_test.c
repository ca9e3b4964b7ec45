/* canary_test.c -- a reload's sample: the last records kept within their
 * bounds, and the judgement of new rules against old ones (raise, filter
 * past the slack, lists of contexts, other steps passed through). */
#define _GNU_SOURCE
#include "canary.h"
#include "config.h"
#include "rules.h"
#include "sl.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void put(const char *name, const char *text) { test_put(dir, name, text); }

#define KAFKA_STEP "{ kafka = { topic = 'o' } }"
#define WINDOW_STEP "{ name = 'w', window = { key = 'input.n', length = '5m', " \
                    "aggregate = { ns = { 'list', 'input.n' } }, as = 'agg' } }"

/* The rules of module t.<mod>: step one (its fn `f`), the step middle (a
 * kafka step is passed through by the canary, a window step holds the
 * context), then t.<mod>.g. */
static struct sl_rules *rules_with(const char *mod, const char *middle, struct sl_config **cf) {
    char p[256], err[512];
    snprintf(p, sizeof(p), "%s/config-%s-%zu.lua", dir, mod, strlen(middle));
    FILE *f = fopen(p, "w");
    fprintf(f, "return { rules = { path = '%s/lua', canary_filter_slack = 2, "
               "canary_filter_slack_pct = 10 }, pipeline = { "
               "{ lua = 't.%s', fn = 'f', name = 'one' }, %s, "
               "{ lua = 't.%s', fn = 'g', name = 'two' } } }", dir, mod, middle, mod);
    fclose(f);
    *cf = sl_config_load(p, err, sizeof(err));
    struct sl_rules *r = *cf ? sl_rules_create(*cf, err, sizeof(err)) : NULL;
    if (!r) printf("# %s\n", err);
    return r;
}

static struct sl_rules *rules(const char *mod, struct sl_config **cf) {
    return rules_with(mod, KAFKA_STEP, cf);
}

static void kept(void) {
    struct sl_input in = {.topic = "t", .partition = 1, .value = "{\"n\":1}", .len = 7,
                          .key = "k", .keylen = 1};
    TEST("canary_last 0 keeps nothing", sl_canary_create(0, 100) == NULL);
    sl_canary_keep(NULL, &in);           /* and keeping into it does nothing */
    struct sl_canary *c = sl_canary_create(3, 1000);
    for (int i = 0; i < 5; i++) {
        in.offset = i;
        sl_canary_keep(c, &in);
    }
    TEST("the ring keeps the last canary_last records", sl_canary_size(c) == 3);
    sl_canary_destroy(c);
    /* Records of 501 bytes take slots of 626 (a quarter to grow): two fit
     * in 1300 bytes, each further one pushes the oldest out. */
    char big[500];
    memset(big, 'x', sizeof(big));
    in.value = big;
    in.len = sizeof(big);
    c = sl_canary_create(10, 1300);
    for (int i = 0; i < 6; i++) sl_canary_keep(c, &in);
    TEST("canary_bytes bounds the records kept", sl_canary_size(c) == 2);
    in.len = 2000;
    sl_canary_keep(c, &in);
    TEST("a record larger than canary_bytes is not kept", sl_canary_size(c) == 2);
    sl_canary_destroy(c);
}

int main(void) {
    char err[512], p[256];
    struct sl_config *cf_old, *cf_raise, *cf_filter, *cf_few, *cf_many;
    struct sl_canary_verdict v;

    kept();
    strcpy(dir, "/tmp/sluice-canary-test-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(p, sizeof(p), "%s/lua", dir); mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/lua/t", dir); mkdir(p, 0755);
    /* The old rules: pass records with ok = true, filter the others, raise
     * on a value that is not JSON. */
    put("lua/t/old.lua", "local M = {}\n"
        "function M.f(ctx) assert(type(ctx.input) == 'table', 'not a table')\n"
        "  if ctx.input.ok then return ctx end return nil, 'not_ok' end\n"
        "function M.g(ctx) return ctx end\nreturn M\n");
    put("lua/t/raise.lua", "local M = {}\n"
        "function M.f(ctx) if ctx.input.n == 3 then error('three') end return ctx end\n"
        "function M.g(ctx) return ctx end\nreturn M\n");
    put("lua/t/filter.lua", "local M = {}\n"
        "function M.f(ctx) return ctx end\n"
        "function M.g(ctx) if type(ctx.input) ~= 'table' or ctx.input.n > 1 then return nil, 'late' end\n"
        "  return ctx end\nreturn M\n");
    put("lua/t/few.lua", "local M = {}\n"
        "function M.f(ctx) if ctx.input.ok and ctx.input.n ~= 2 then return ctx end return nil, 'x' end\n"
        "function M.g(ctx) return ctx end\nreturn M\n");
    /* After the window step: ctx.agg.ns, a list the window made. */
    put("lua/t/agg.lua", "local M = {}\n"
        "function M.f(ctx) return ctx end\n"
        "function M.g(ctx) assert(type(ctx.agg.ns[1]) == 'number') return ctx end\nreturn M\n");
    put("lua/t/aggbad.lua", "local M = {}\n"
        "function M.f(ctx) return ctx end\n"
        "function M.g(ctx) if ctx.agg.ns[2] == 3 then error('agg three') end return ctx end\n"
        "return M\n");
    /* An http step between: its request rule runs, nothing is sent. */
    put("lua/t/req.lua", "local M = {}\n"
        "function M.f(ctx) return ctx end\n"
        "function M.req(ctx) return { q = ctx.input.n } end\n"
        "function M.g(ctx) return ctx end\nreturn M\n");
    put("lua/t/reqbad.lua", "local M = {}\n"
        "function M.f(ctx) return ctx end\n"
        "function M.req(ctx) if ctx.input.n == 3 then error('bad body') end return {} end\n"
        "function M.g(ctx) return ctx end\nreturn M\n");
    put("lua/t/many.lua", "local M = {}\n"
        "function M.f(ctx) return { ctx, { kafka = ctx.kafka, input = { n = 9 } } } end\n"
        "function M.g(ctx) if ctx.input.n == 9 then error('nine') end return ctx end\nreturn M\n");
    /* 10 records: 8 with ok, 1 without, 1 not JSON. */
    put("sample.jsonl", "{\"n\":1,\"ok\":true}\n{\"n\":2,\"ok\":true}\n{\"n\":3,\"ok\":true}\n"
        "{\"n\":4,\"ok\":true}\n{\"n\":5,\"ok\":true}\n\n{\"n\":6,\"ok\":true}\n"
        "{\"n\":7,\"ok\":true}\n{\"n\":8,\"ok\":true}\n{\"n\":9}\nnot json\n");
    snprintf(p, sizeof(p), "%s/sample.jsonl", dir);

    struct sl_rules *old = rules("old", &cf_old), *raise = rules("raise", &cf_raise),
                    *filter = rules("filter", &cf_filter), *few = rules("few", &cf_few),
                    *many = rules("many", &cf_many);
    if (!old || !raise || !filter || !few || !many) return 1;

    TEST("the same rules pass", sl_canary_judge(NULL, p, old, old, cf_old, &v, err, sizeof(err)) ==
         SL_OK && !v.refused && v.records == 10 && v.from_file == 10);
    TEST("...with the counts in the summary",
         strstr(v.summary, "10 sample record(s) (10 from the canary file): the new rules pass 8, "
                "filter 1, raise on 1") != NULL);
    if (!strstr(v.summary, "pass 8")) printf("# %s\n", v.summary);

    sl_canary_judge(NULL, p, old, raise, cf_raise, &v, err, sizeof(err));
    TEST("a raise the old rules did not have refuses", v.refused && v.raised == 1);
    TEST("...naming the step, the count, the error's file:line and the record",
         strstr(v.summary, "raise on 1 of 10 sample record(s) that the old rules handled "
                "(step one: 1); first: ") && strstr(v.summary, "raise.lua:2: three (record ") &&
         strstr(v.summary, "sample.jsonl:3)"));
    if (!v.refused) printf("# %s\n", v.summary);

    sl_canary_judge(NULL, p, old, filter, cf_filter, &v, err, sizeof(err));
    TEST("filtering 7 more than the old rules (slack 2) refuses", v.refused && v.filtered == 7 &&
         v.allowed == 2 && strstr(v.summary, "step two: 7 with reason late"));
    if (!v.refused) printf("# %s\n", v.summary);

    sl_canary_judge(NULL, p, old, few, cf_few, &v, err, sizeof(err));
    TEST("filtering 1 more (within the slack) passes", !v.refused && v.filtered == 1);

    sl_canary_judge(NULL, p, NULL, filter, cf_filter, &v, err, sizeof(err));
    TEST("without old rules filtering does not refuse", !v.refused);
    sl_canary_judge(NULL, p, NULL, old, cf_old, &v, err, sizeof(err));
    TEST("without old rules any raise refuses (the line that is not JSON)", v.refused &&
         v.raised == 1 && strstr(v.summary, "(record ") && strstr(v.summary, "sample.jsonl:11)"));

    sl_canary_judge(NULL, p, old, many, cf_many, &v, err, sizeof(err));
    TEST("contexts of a list run on, each through the later steps", v.refused &&
         v.raised == 9 && strstr(v.summary, "step two: 9") && strstr(v.summary, "many.lua:3: nine"));

    /* Kept records run after the file's lines. */
    struct sl_canary *c = sl_canary_create(4, 1 << 20);
    struct sl_input in = {.topic = "in", .partition = 2, .offset = 41, .value = "{\"n\":3,\"ok\":true}",
                          .len = 17};
    sl_canary_keep(c, &in);
    sl_canary_judge(c, NULL, old, raise, cf_raise, &v, err, sizeof(err));
    TEST("kept records are judged, named topic/partition/offset", v.refused && v.records == 1 &&
         strstr(v.summary, "(record in/2/41)"));

    TEST("a canary file that cannot be read is an error",
         sl_canary_judge(c, "/nonexistent/c.jsonl", old, raise, cf_raise, &v, err, sizeof(err)) ==
         SL_ERR && strstr(err, "rules.canary /nonexistent/c.jsonl"));
    sl_canary_destroy(c);

    /* With a window step between them, step two would see a context
     * without the window's variable: it is not run, and the summary says so. */
    struct sl_config *cf_wmany;
    struct sl_rules *wmany = rules_with("many", WINDOW_STEP, &cf_wmany);
    if (!wmany) return 1;
    sl_canary_judge(NULL, p, NULL, wmany, cf_wmany, &v, err, sizeof(err));
    TEST("a context stops at a window step: the lua steps after it are not run", !v.refused &&
         v.raised == 0 && strstr(v.summary, "stopped at step w (window)") &&
         strstr(v.summary, "the 1 lua step(s) after it are not checked"));
    if (v.refused || !strstr(v.summary, "stopped at")) printf("# %s\n", v.summary);
    sl_rules_release(wmany);
    sl_config_destroy(cf_wmany);

    /* An http step's request rule runs on the contexts that reach it. */
    struct sl_config *cf_req, *cf_reqbad;
    struct sl_rules *req = rules_with("req", "{ name = 'h', http = { url = 'http://127.0.0.1:1/', "
                                      "request = 't.req.req' } }", &cf_req),
                    *reqbad = rules_with("reqbad", "{ name = 'h', http = { url = "
                                         "'http://127.0.0.1:1/', request = 't.reqbad.req' } }",
                                         &cf_reqbad);
    if (!req || !reqbad) return 1;
    sl_canary_judge(NULL, p, req, req, cf_req, &v, err, sizeof(err));
    TEST("an http step's request rule that takes every context: records stop at the step",
         !v.refused && strstr(v.summary, "stopped at step h (http)"));
    if (v.refused) printf("# %s\n", v.summary);
    sl_canary_judge(NULL, p, req, reqbad, cf_reqbad, &v, err, sizeof(err));
    TEST("a request rule that raises where the old one did not refuses, naming the step",
         v.refused && v.raised == 1 && strstr(v.summary, "step h: 1") &&
         strstr(v.summary, "reqbad.lua:3: bad body") && strstr(v.summary, "sample.jsonl:3)"));
    if (!v.refused) printf("# %s\n", v.summary);
    sl_rules_release(req);
    sl_rules_release(reqbad);
    sl_config_destroy(cf_req);
    sl_config_destroy(cf_reqbad);

    /* Contexts sampled as they left the window step run step two. */
    struct sl_config *cf_agg, *cf_aggbad;
    struct sl_rules *agg = rules_with("agg", WINDOW_STEP, &cf_agg),
                    *aggbad = rules_with("aggbad", WINDOW_STEP, &cf_aggbad);
    if (!agg || !aggbad) return 1;
    c = sl_canary_create(4, 1 << 20);
    TEST("the first contexts after a step are all wanted",
         sl_canary_wants(c, 1) && sl_canary_wants(c, 1) && sl_canary_wants(c, 1) &&
         sl_canary_wants(c, 1));
    size_t wanted = 0;
    for (int i = 4; i < 132; i++) wanted += sl_canary_wants(c, 1);
    TEST("then one in SL_CANARY_SAMPLE_EVERY", wanted == 2);
    in.value = "{\"n\":3,\"ok\":true}";
    in.len = strlen(in.value);
    static const char vars[] = "{\"agg\":{\"ns\":[1,3]}}";
    sl_canary_keep_ctx(c, 1, &in, vars, strlen(vars));
    TEST("a sampled context is kept apart from the input records",
         sl_canary_size_after(c, 1) == 1 && sl_canary_size(c) == 0 &&
         sl_canary_size_after(c, 0) == 0);
    sl_canary_judge(c, NULL, agg, agg, cf_agg, &v, err, sizeof(err));
    TEST("the same rules pass a sampled context, which ran the lua step after the window",
         !v.refused && v.records == 1 && strstr(v.summary, "pass 1"));
    if (v.refused || !strstr(v.summary, "pass 1")) printf("# %s\n", v.summary);
    sl_canary_judge(c, NULL, agg, aggbad, cf_aggbad, &v, err, sizeof(err));
    TEST("a later step that raises on a sampled context refuses, naming it",
         v.refused && v.raised == 1 && strstr(v.summary, "step two: 1") &&
         strstr(v.summary, "aggbad.lua:3: agg three") &&
         strstr(v.summary, "(record in/2/41 after step w)"));
    if (!v.refused) printf("# %s\n", v.summary);
    sl_canary_keep(c, &in);
    sl_canary_judge(c, NULL, agg, agg, cf_agg, &v, err, sizeof(err));
    TEST("a record held at the window says the lua step after it ran on sampled contexts",
         !v.refused && v.records == 2 &&
         strstr(v.summary, "1 record(s) stopped at step w (window)") &&
         strstr(v.summary, "1 context(s) sampled after such steps ran the 1 lua step(s) after it") &&
         !strstr(v.summary, "not checked"));
    if (!strstr(v.summary, "context(s) sampled")) printf("# %s\n", v.summary);
    lua_State *L_new = sl_rules_state(aggbad), *L_old = sl_rules_state(agg);
    int top_new = lua_gettop(L_new), top_old = lua_gettop(L_old);
    sl_canary_keep_ctx(c, 1, &in, "{not json", 9);
    sl_canary_keep_ctx(c, 1, &in, "3", 1);
    sl_canary_judge(c, NULL, agg, aggbad, cf_aggbad, &v, err, sizeof(err));
    TEST("a sampled context whose variables do not decode, or are no object, is not judged",
         v.records == 2);
    TEST("...and both VMs' stacks are left as found",
         lua_gettop(L_new) == top_new && lua_gettop(L_old) == top_old);
    sl_canary_destroy(c);
    sl_rules_release(agg);
    sl_rules_release(aggbad);
    sl_config_destroy(cf_agg);
    sl_config_destroy(cf_aggbad);

    sl_rules_release(old);
    sl_rules_release(raise);
    sl_rules_release(filter);
    sl_rules_release(few);
    sl_rules_release(many);
    sl_config_destroy(cf_old);
    sl_config_destroy(cf_raise);
    sl_config_destroy(cf_filter);
    sl_config_destroy(cf_few);
    sl_config_destroy(cf_many);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd)) {}
    return TEST_DONE();
}
