/* rules_test.c -- the rules VM: step results, errors with file:line and
 * traceback, the budget, versions, reference counting. */
#define _GNU_SOURCE
#include "config.h"
#include "rules.h"
#include "sl.h"
#include "test.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void put(const char *name, const char *text) { test_put(dir, name, text); }

static struct sl_config *config(void) {
    char p[256], err[512];
    snprintf(p, sizeof(p), "%s/config.lua", dir);
    FILE *f = fopen(p, "w");
    fprintf(f, "return { rules = { path = '%s/lua', budget = '100ms', watchdog = '10s' },"
               " pipeline = { { lua = 't.steps', fn = 'pass' }, { lua = 't.steps', fn = 'drop', name = 'drop' },"
               " { lua = 't.steps', fn = 'split', name = 'split' }, { lua = 't.steps', fn = 'boom', name = 'boom' },"
               " { lua = 't.steps', fn = 'spin', name = 'spin' }, { lua = 't.steps', fn = 'bad', name = 'bad' } } }",
            dir);
    fclose(f);
    struct sl_config *c = sl_config_load(p, err, sizeof(err));
    if (!c) printf("# %s\n", err);
    return c;
}

static int new_ctx(struct sl_rules *r) {
    lua_State *L = sl_rules_state(r);
    lua_newtable(L);
    lua_pushstring(L, "v");
    lua_setfield(L, -2, "x");
    lua_newtable(L);                             /* every context has its kafka metadata */
    lua_setfield(L, -2, "kafka");
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

int main(void) {
    char err[512];
    struct sl_rules_out out = {0};

    strcpy(dir, "/tmp/sluice-rules-test-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    char p[128];
    snprintf(p, sizeof(p), "%s/lua", dir); mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/lua/t", dir); mkdir(p, 0755);
    put("lua/t/steps.lua",
        "local M = {}\n"
        "function M.pass(ctx) ctx.y = 1; return ctx end\n"
        "function M.drop(ctx) return nil, 'not wanted!' end\n"
        "function M.split(ctx) return { { a = 1, kafka = ctx.kafka }, { a = 2, kafka = ctx.kafka } } end\n"
        "function M.boom(ctx)\n  error('kaput')\nend\n"
        "function M.spin(ctx) jit.off(true, true); local n = 0; while true do n = n + 1 end end\n"
        "function M.bad(ctx) return 42 end\n"
        "return M\n");
    struct sl_config *cf = config();
    TEST("the test config loads", cf != NULL);
    if (!cf) return TEST_DONE();

    struct sl_rules *r = sl_rules_create(cf, err, sizeof(err));
    TEST("rules load", r != NULL);
    if (!r) return TEST_DONE();
    TEST("version is 16 hex digits", strlen(sl_rules_version(r)) == 16);

    int ref = new_ctx(r);
    TEST("a step returning its context goes on", sl_rules_call(r, 0, &ref, NULL, "t/0/0", &out) == SL_RULES_NEXT);
    lua_rawgeti(sl_rules_state(r), LUA_REGISTRYINDEX, ref);
    lua_getfield(sl_rules_state(r), -1, "y");
    TEST("the step's change is visible", lua_tonumber(sl_rules_state(r), -1) == 1);
    lua_pop(sl_rules_state(r), 2);

    TEST("nil, reason filters", sl_rules_call(r, 1, &ref, NULL, "t/0/0", &out) == SL_RULES_FILTERED);
    TEST("the reason is made safe for a metric label", !strcmp(out.reason, "not_wanted_"));

    TEST("a list of contexts fans out", sl_rules_call(r, 2, &ref, NULL, "t/0/0", &out) == SL_RULES_MANY &&
                                        out.nrefs == 2);
    for (size_t i = 0; i < out.nrefs; i++) luaL_unref(sl_rules_state(r), LUA_REGISTRYINDEX, out.refs[i]);

    TEST("a Lua error is reported", sl_rules_call(r, 3, &ref, NULL, "t/0/0", &out) == SL_RULES_ERROR);
    TEST("the error names file:line", strstr(sl_buf_cstr(&out.error), "steps.lua:6: kaput") != NULL);
    TEST("the error has a traceback", strstr(sl_buf_cstr(&out.error), "stack traceback") != NULL);

    int64_t t0 = sl_mono_ms();
    TEST("an endless interpreted loop is stopped by the budget",
         sl_rules_call(r, 4, &ref, NULL, "t/0/0", &out) == SL_RULES_ERROR &&
         strstr(sl_buf_cstr(&out.error), "budget of 100 ms"));
    TEST("...within a few budgets", sl_mono_ms() - t0 < 1000);

    TEST("a bad return value is an error naming the step",
         sl_rules_call(r, 5, &ref, NULL, "t/0/0", &out) == SL_RULES_ERROR &&
         strstr(sl_buf_cstr(&out.error), "steps.lua:9: step bad (t.steps.bad) must return") &&
         strncmp(sl_buf_cstr(&out.error), "step ", 5) &&
         strstr(sl_buf_cstr(&out.error), "it returned a number: 42"));

    /* Version: content changes it, an unchanged reload keeps it. */
    char v1[17];
    strcpy(v1, sl_rules_version(r));
    struct sl_rules *same = sl_rules_create(cf, err, sizeof(err));
    TEST("same files, same version", same && !strcmp(v1, sl_rules_version(same)));
    put("lua/t/steps.lua", "local M = {}\nfunction M.pass(c) return c end\nM.drop = M.pass\n"
        "M.split = M.pass\nM.boom = M.pass\nM.spin = M.pass\nM.bad = M.pass\nreturn M\n");
    struct sl_rules *changed = sl_rules_create(cf, err, sizeof(err));
    TEST("changed files, new version", changed && strcmp(v1, sl_rules_version(changed)));

    put("lua/t/steps.lua", "local M = {}\nfunction M.pass(c)\n  return c +\nend\nreturn M\n");
    struct sl_rules *broken = sl_rules_create(cf, err, sizeof(err));
    TEST("a syntax error fails the load", broken == NULL);
    TEST("...naming file:line on one line", strstr(err, "steps.lua:4:") && !strchr(err, '\n'));
    put("lua/t/steps.lua", "return { pass = 1 }\n");
    broken = sl_rules_create(cf, err, sizeof(err));
    TEST("a missing function fails the load", broken == NULL && strstr(err, "has no function pass"));

    /* A module whose top-level code never ends fails to load in time. */
    int64_t wd = cf->rules.watchdog_ms;
    cf->rules.watchdog_ms = 300;
    put("lua/t/steps.lua", "local n = 0\nwhile true do n = n + 1 end\n");
    t0 = sl_mono_ms();
    broken = sl_rules_create(cf, err, sizeof(err));
    TEST("a module looping at load fails to load", broken == NULL);
    TEST("...within the watchdog and a little", sl_mono_ms() - t0 < 1500);
    TEST("...naming the module and the bound",
         strstr(err, "module t.steps: loading ran past rules.watchdog (300 ms)") != NULL);
    cf->rules.watchdog_ms = wd;
    put("lua/t/steps.lua", "local M = {}\nfunction M.pass(c) c.jit = jit.status() return c end\n"
        "M.drop = M.pass\nM.split = M.pass\nM.boom = M.pass\nM.spin = M.pass\nM.bad = M.pass\n"
        "return M\n");
    struct sl_rules *after = sl_rules_create(cf, err, sizeof(err));
    int aref = after ? new_ctx(after) : LUA_NOREF;
    TEST("the next load works, with the JIT on again",
         after && sl_rules_call(after, 0, &aref, NULL, "t/0/0", &out) == SL_RULES_NEXT);
    if (after) {
        lua_rawgeti(sl_rules_state(after), LUA_REGISTRYINDEX, aref);
        lua_getfield(sl_rules_state(after), -1, "jit");
        TEST("...jit.status() is true in a step", lua_toboolean(sl_rules_state(after), -1));
        lua_pop(sl_rules_state(after), 2);
        sl_rules_release(after);
    }

    /* The watchdog's file: one line per record, appended; states kept. */
    char state[128], pfile[256];
    snprintf(state, sizeof(state), "%s/state", dir);
    free(cf->rules.state_dir);
    cf->rules.state_dir = sl_strdup(state);
    TEST("the watchdog starts with a state folder", sl_rules_watchdog_start(cf, err, sizeof(err)) == SL_OK);
    size_t np = 99;
    struct sl_rules_poison *pl = sl_rules_poison_load(cf, &np);
    TEST("no file: no records", pl == NULL && np == 0);
    snprintf(pfile, sizeof(pfile), "%s/poisoned-%s", state, cf->kafka.group);
    FILE *pf = fopen(pfile, "a");
    fputs("in/0/5\tspin\nin/1/7\tspin\nin/0/5\tspin\n", pf);
    fclose(pf);
    pl = sl_rules_poison_load(cf, &np);
    TEST("records appended by watchdogs load once each", np == 2 && !strcmp(pl[0].what, "in/0/5") &&
         !strcmp(pl[1].what, "in/1/7") && !strcmp(pl[1].step, "spin") && !pl[0].dead_lettered);
    pl[0].dead_lettered = true;
    TEST("saving works", sl_rules_poison_save(cf, pl, np) == SL_OK);
    free(pl);
    pl = sl_rules_poison_load(cf, &np);
    TEST("a dead-lettered record stays so", np == 2 && pl[0].dead_lettered && !pl[1].dead_lettered);
    struct sl_rules_poison many[SL_RULES_POISON_MAX + 5];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < SL_RULES_POISON_MAX + 5; i++) {
        snprintf(many[i].what, sizeof(many[i].what), "in/0/%d", i);
        strcpy(many[i].step, "s");
    }
    sl_rules_poison_save(cf, many, SL_RULES_POISON_MAX + 5);
    free(pl);
    pl = sl_rules_poison_load(cf, &np);
    TEST("the file keeps the newest SL_RULES_POISON_MAX records",
         np == SL_RULES_POISON_MAX && !strcmp(pl[0].what, "in/0/5"));
    free(pl);
    TEST("saving none removes the file", sl_rules_poison_save(cf, NULL, 0) == SL_OK &&
         access(pfile, F_OK) != 0);

    /* Reference counting: a retained VM survives its first release. */
    sl_rules_retain(same);
    sl_rules_release(same);
    TEST("a retained VM is still usable", lua_gettop(sl_rules_state(same)) >= 0);
    sl_rules_release(same);
    sl_rules_release(changed);
    luaL_unref(sl_rules_state(r), LUA_REGISTRYINDEX, ref);
    sl_rules_release(r);
    sl_rules_release(NULL);
    sl_rules_out_free(&out);
    sl_config_destroy(cf);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd)) {}
    return TEST_DONE();
}
