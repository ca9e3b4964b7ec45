/* pipeline_test.c -- the step interface: a step that keeps its context and
 * finishes it later through sl_pipeline_resume (as an HTTP step will), in
 * trace mode (no producer). */
#define _GNU_SOURCE
#include "config.h"
#include "pipeline.h"
#include "rules.h"
#include "sl.h"
#include "step.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

/* ==================== A step that answers later ==================== */

static struct sl_pipeline_ctx *held;  /* the context the step keeps */
static int starts;

static void *held_create(const struct sl_step_env *env) { (void)env; return &held; }
static void held_start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    (void)state;
    starts++;
    held = c;
    res->status = SL_STEP_PENDING;
}
static void held_destroy(void *state) { (void)state; }

static const char *const no_keys[] = {NULL};
static const struct sl_step_kind held_kind = {
    .name = "held", .synopsis = "held = {...}", .keys = no_keys, .type = SL_STEP_LUA,
    .create = held_create, .start = held_start, .destroy = held_destroy,
};

/* Resumes the held context with status (and reason or error). */
static void answer(enum sl_step_status status, const char *text) {
    struct sl_step_result res = {.status = status, .reason = text, .error = text};
    struct sl_pipeline_ctx *c = held;
    held = NULL;
    sl_pipeline_resume(c, &res);
}

/* ==================== A sink that waits for its broker ==================== */

/* "split" makes two contexts of one (the same table twice); "sink" keeps
 * each context it starts, calling sl_pipeline_spent as the last kafka sink
 * does unless sink_spends is false, or filters every sink_filter_nth one. */
static struct sl_pipeline_ctx *sunk[8];
static int nsunk, spent_calls, spent_at_start[8], sink_filter_nth;
static bool sink_spends = true, sink_spend_first_only, spent_saw_value;

static void *plain_create(const struct sl_step_env *env) { (void)env; return &sunk; }
static void split_start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    static int refs[2];
    lua_State *L = sl_rules_state(c->rules);
    (void)state;
    for (int i = 0; i < 2; i++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
        refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    res->status = SL_STEP_MANY;
    res->refs = refs;
    res->nrefs = 2;
}
static void sink_start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    (void)state;
    spent_at_start[nsunk] = spent_calls;
    if (sink_filter_nth && (nsunk + 1) % sink_filter_nth == 0) {
        nsunk++;
        res->status = SL_STEP_FILTERED;
        res->reason = "not_this_one";
        return;
    }
    sunk[nsunk++] = c;
    if (sink_spends && !(sink_spend_first_only && nsunk > 1)) sl_pipeline_spent(c);
    res->status = SL_STEP_PENDING;
}
static const struct sl_step_kind split_kind = {
    .name = "split", .synopsis = "split", .keys = no_keys, .type = SL_STEP_LUA,
    .create = plain_create, .start = split_start, .destroy = held_destroy,
};
static const struct sl_step_kind sink_kind = {
    .name = "sink", .synopsis = "sink", .keys = no_keys, .type = SL_STEP_LUA,
    .create = plain_create, .start = sink_start, .destroy = held_destroy,
};

static void on_spent(void *arg, struct sl_input *in) {
    (void)arg;
    spent_calls++;
    spent_saw_value = in->value != NULL;   /* still there for the callee to free */
}

/* Resumes every kept context with next, in order. */
static void acknowledge(void) {
    struct sl_step_result next = {.status = SL_STEP_NEXT};
    for (int i = 0; i < nsunk; i++)
        if (sunk[i]) sl_pipeline_resume(sunk[i], &next);
    memset(sunk, 0, sizeof(sunk));
    nsunk = 0;
}

/* ==================== Harness ==================== */

static int done, dropped;
static void on_done(void *arg, struct sl_input *in) { (void)arg; (void)in; done++; }
static void on_drop(void *arg, struct sl_input *in) { (void)arg; (void)in; dropped++; }
static void on_fatal(void *arg, const char *why) { (void)arg; printf("# fatal: %s\n", why); }

static struct sl_config *load(const char *text) {
    char path[64], err[512];
    strcpy(path, "/tmp/sluice-pipeline-test-XXXXXX.lua");
    int fd = mkstemps(path, 4);
    if (fd < 0) return NULL;
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) { close(fd); return NULL; }
    close(fd);
    struct sl_config *c = sl_config_load(path, err, sizeof(err));
    if (!c) printf("# %s\n", err);
    unlink(path);
    return c;
}

/* on_spent: once per record, when every context still in flight is past
 * the last step; never for a record done at once or not spent. */
static void test_spent(void) {
    struct sl_config *cf = load(
        "return { pipeline = { { name = 'split', kafka = { topic = 'a' } },\n"
        "                      { name = 'sink', kafka = { topic = 'b' } } } }\n");
    char err[SL_ERRLEN];
    if (!cf) return;
    const struct sl_step_kind *kafka = cf->steps[0].kind;
    struct sl_rules *rules = sl_rules_create(cf, err, sizeof(err));
    struct sl_pipeline_conf pc = {.cf = cf, .on_done = on_done, .on_fatal = on_fatal,
                                  .on_drop = on_drop, .on_spent = on_spent};
    cf->steps[1].kind = &sink_kind;
    struct sl_pipeline *pl = sl_pipeline_create(&pc, rules);
    struct sl_input in = {.topic = "in", .partition = 1, .offset = 2, .timestamp = 1000,
                          .key = "k", .keylen = 1, .value = "{\"a\":1}", .len = 7};
    int done0 = done;

    sl_pipeline_push(pl, &in);
    TEST("spent: a context past the last step hands its record's input back at once",
         spent_calls == 1 && spent_saw_value && !in.value && !in.key && in.len == 0 &&
         in.keylen == 0 && in.offset == 2 && !strcmp(in.topic, "in") && done == done0);
    acknowledge();
    TEST("spent: acknowledged, the record is done, and on_spent is not called again",
         spent_calls == 1 && done == done0 + 1 && sl_pipeline_inflight(pl) == 0);
    sl_pipeline_destroy(pl);

    /* Two contexts of one record: the input goes back after the second. */
    cf->steps[0].kind = &split_kind;
    pl = sl_pipeline_create(&pc, sl_rules_create(cf, err, sizeof(err)));
    in.value = "{\"a\":1}";
    in.len = 7;
    spent_calls = 0;
    sl_pipeline_push(pl, &in);
    TEST("spent: of a split record, only once both contexts are past the last step",
         nsunk == 2 && spent_at_start[0] == 0 && spent_at_start[1] == 0 && spent_calls == 1);
    acknowledge();
    TEST("spent: the split record is done once, on_spent called once",
         spent_calls == 1 && done == done0 + 2);

    in.value = "{\"a\":1}";
    in.len = 7;
    spent_calls = 0;
    sink_filter_nth = 2;                      /* the second context ends at the sink */
    sl_pipeline_push(pl, &in);
    TEST("spent: a context that ends counts as past the last step",
         nsunk == 2 && spent_calls == 1 && done == done0 + 2 && in.value == NULL);
    acknowledge();
    TEST("spent: ... and the record is done when the other is acknowledged", done == done0 + 3);

    in.value = "{\"a\":1}";
    in.len = 7;
    spent_calls = 0;
    sink_filter_nth = 0;
    sink_spends = false;                      /* a sink that is not the last step */
    sl_pipeline_push(pl, &in);
    acknowledge();
    TEST("spent: never for contexts that do not pass the last step; the input stays",
         spent_calls == 0 && done == done0 + 4 && in.value != NULL);

    /* The first context passes the last step and is acknowledged while the
     * second still reads the input (it has not passed it). */
    in.value = "{\"a\":1}";
    in.len = 7;
    sink_spend_first_only = true;
    sink_spends = true;
    sl_pipeline_push(pl, &in);
    struct sl_step_result next = {.status = SL_STEP_NEXT};
    sl_pipeline_resume(sunk[0], &next);
    sunk[0] = NULL;
    TEST("spent: not while another context of the record may still read the input",
         spent_calls == 0 && in.value != NULL && sl_pipeline_inflight(pl) == 1);
    acknowledge();
    TEST("spent: ... which is done when that one is", spent_calls == 0 && done == done0 + 5);
    sink_spend_first_only = false;

    sink_filter_nth = 1;                      /* every context ends at once */
    sl_pipeline_push(pl, &in);
    TEST("spent: never for a record done at once", spent_calls == 0 && done == done0 + 6);
    sl_pipeline_destroy(pl);
    TEST("spent: nothing in flight is dropped", dropped == 0);

    cf->steps[0].kind = kafka;
    cf->steps[1].kind = kafka;
    sl_config_destroy(cf);
}

int main(void) {
    struct sl_config *cf = load(
        "return { pipeline = { { kafka = { topic = 'first' } },\n"
        "                      { name = 'after', kafka = { topic = 'out' } },\n"
        "                      { window = { key = 'input.a', length = '5m',\n"
        "                                   aggregate = { n = { 'count', 'input.a' } } } } } }\n");
    char err[SL_ERRLEN], *trace = NULL;
    size_t tracelen = 0;
    if (!cf) return 1;
    const struct sl_step_kind *kafka = cf->steps[0].kind;
    cf->steps[0].kind = &held_kind;           /* step 1 answers later */
    FILE *t = open_memstream(&trace, &tracelen);
    struct sl_rules *rules = sl_rules_create(cf, err, sizeof(err));
    struct sl_pipeline_conf pc = {.cf = cf, .trace = t, .on_done = on_done,
                                  .on_fatal = on_fatal, .on_drop = on_drop};
    struct sl_pipeline *pl = sl_pipeline_create(&pc, rules);
    struct sl_input in = {.topic = "in", .partition = 3, .offset = 7, .timestamp = 1000,
                          .value = "{\"a\":1}", .len = 7};

    sl_pipeline_push(pl, &in);
    TEST("a pending step holds the record", held && done == 0 && sl_pipeline_inflight(pl) == 1);
    answer(SL_STEP_NEXT, NULL);
    fflush(t);
    TEST("resumed with next, the context goes on to the next step and the record is done",
         done == 1 && sl_pipeline_inflight(pl) == 0 && trace &&
         strstr(trace, "\"step\":\"after\",\"produce\":{") && strstr(trace, "\"topic\":\"out\""));

    sl_pipeline_push(pl, &in);
    answer(SL_STEP_FILTERED, "too_slow");
    fflush(t);
    TEST("resumed as filtered, the reason is traced and the record is done",
         done == 2 && strstr(trace, "\"filtered\":\"too_slow\""));

    sl_pipeline_push(pl, &in);
    answer(SL_STEP_ERROR, "status 500");
    fflush(t);
    TEST("resumed with an error, the record is dead-lettered with step and error",
         done == 3 && strstr(trace, "{\"error\":\"status 500\",\"record\":3,\"step\":\"kafka1\","
                             "\"dead_letter\":{\"error\":\"status 500\","));

    sl_pipeline_push(pl, &in);
    sl_pipeline_swap_rules(pl, sl_rules_create(cf, err, sizeof(err)));
    answer(SL_STEP_NEXT, NULL);
    TEST("a context pending across a reload finishes on the VM it started on", done == 4);

    sl_pipeline_push(pl, &in);
    answer(SL_STEP_DONE, NULL);
    TEST("resumed as done, the record is done", done == 5 && sl_pipeline_inflight(pl) == 0);

    starts = 0;
    in.restore = true;
    sl_pipeline_push(pl, &in);
    TEST("a restore record never starts a step that does not run for restore records",
         starts == 0 && done == 6 && !held);
    in.restore = false;
    sl_pipeline_push(pl, &in);
    answer(SL_STEP_NEXT, NULL);
    fflush(t);
    TEST("the window counted the records resumed with next and the restore record",
         strstr(trace, "\"step\":\"window3\",\"ctx\":") && strstr(trace, "\"window\":{\"n\":4}"));

    sl_pipeline_destroy(pl);
    TEST("nothing in flight is dropped", dropped == 0);

    /* ctx.kafka.topic of records from topics in turn (the last one's name
     * is kept as a string, so a change of topic must show). */
    {
        struct sl_rules *own = sl_rules_create(cf, err, sizeof(err));
        lua_State *L = sl_rules_state(own);
        static const char *const topics[] = {"ab", "a", "a", "abc", "ab", ""};
        int same = 1;
        for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
            struct sl_input ti = in;
            ti.topic = topics[i];
            if (sl_pipeline_push_ctx(L, &ti, err, sizeof(err)) != SL_OK) same = 0;
            lua_getfield(L, -1, "kafka");
            lua_getfield(L, -1, "topic");
            same = same && lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), topics[i]);
            lua_pop(L, 3);
        }
        TEST("each context's kafka.topic is its record's, as topics change and repeat", same);

        struct sl_input ki = {.topic = "t", .partition = 5, .offset = 12345678901LL,
                              .timestamp = 1795667677389LL, .key = "k1", .keylen = 2,
                              .value = "{\"a\":[1]}", .len = 9};
        int ok = sl_pipeline_push_ctx(L, &ki, err, sizeof(err)) == SL_OK;
        lua_getfield(L, -1, "kafka");
        lua_getfield(L, -1, "partition");
        lua_getfield(L, -2, "offset");
        lua_getfield(L, -3, "timestamp");
        lua_getfield(L, -4, "key");                    /* ctx kafka p o t k */
        ok = ok && lua_tonumber(L, -4) == 5 && lua_tonumber(L, -3) == 12345678901.0 &&
             lua_tonumber(L, -2) == 1795667677389.0 && !strcmp(lua_tostring(L, -1), "k1");
        lua_settop(L, -6);                             /* ctx */
        lua_getfield(L, -1, "input");
        lua_getfield(L, -1, "a");
        ok = ok && lua_istable(L, -1);
        lua_settop(L, -4);
        TEST("a context carries the record's partition, offset, timestamp, key and input", ok);

        ki.key = NULL;
        ki.value = NULL;
        ok = sl_pipeline_push_ctx(L, &ki, err, sizeof(err)) == SL_OK;
        lua_getfield(L, -1, "kafka");
        lua_getfield(L, -1, "key");
        lua_getfield(L, -3, "input");                  /* ctx kafka key input */
        ok = ok && lua_type(L, -2) == LUA_TLIGHTUSERDATA && !lua_touserdata(L, -2) &&
             lua_type(L, -1) == LUA_TLIGHTUSERDATA && !lua_touserdata(L, -1);
        lua_settop(L, -5);
        TEST("a record without key or value has sluice.null for both", ok);
        sl_rules_release(own);
    }

    cf->steps[0].kind = kafka;                /* its unload frees the kafka part */
    sl_config_destroy(cf);
    test_spent();
    fclose(t);
    free(trace);
    return TEST_DONE();
}
