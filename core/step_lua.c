/* step_lua.c -- the lua step kind: a rule function f(ctx, params) in the
 * record's rules VM (see step.h, rules.h).
 *
 *   { name = "extract", lua = "recommendations.extract", fn = "extract",
 *     params = { appId = "shop" } }
 *
 * The function returns the context, nil and a reason (filtered), or a list
 * of contexts (one in, several out); a Lua error dead-letters the record.
 * It runs for restore records too: the steps before a window build what the
 * window adds. */
#define _GNU_SOURCE
#include "step.h"
#include "json.h"
#include "metrics.h"
#include "pipeline.h"
#include "rules.h"

#include <stdlib.h>
#include <string.h>

struct lua_step {
    size_t index;                /* the step in the config */
    struct sl_rules_out out;     /* scratch for the call's results */
};

/* ==================== Config ==================== */

static int load_conf(struct sl_config_cur *c, const char *path, struct sl_step_conf *s,
                    size_t pos) {
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN];
    (void)pos;

    if (sl_config_need_str(c, path, "lua", &s->module)) return SL_ERR;
    const char *dot = strrchr(s->module, '.');
    if (sl_config_get_str(c, path, "name", dot ? dot + 1 : s->module, &s->name) ||
        sl_config_get_str(c, path, "fn", s->name, &s->fn))
        return SL_ERR;
    sl_config_join(p, path, "params");
    lua_getfield(L, -1, "params");                   /* step params */
    int t = lua_type(L, -1);
    int ret = SL_ERR;
    if (t == LUA_TNIL) {
        s->params_json = sl_strdup("{}");
    } else if (t != LUA_TTABLE) {
        sl_config_fail(c, p, "a table", -1);
        goto done;
    } else {
        struct sl_buf b = {0};
        char jerr[128];
        if (sl_json_encode(L, -1, &b, jerr, sizeof(jerr))) {
            sl_buf_free(&b);
            sl_config_fail(c, p, "a table of JSON values", -1);
            goto done;
        }
        s->params_json = sl_strdup(sl_buf_cstr(&b));
        sl_buf_free(&b);
    }
    ret = SL_OK;
done:
    lua_pop(L, 1);                                   /* step */
    return ret;
}

static void unload_conf(struct sl_step_conf *s) {
    free(s->module);
    free(s->fn);
    free(s->params_json);
}

/* ==================== Running ==================== */

static void *create(const struct sl_step_env *env) {
    struct lua_step *st = sl_calloc(1, sizeof(*st));
    st->index = env->index;
    return st;
}

static void start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    struct lua_step *st = state;
    struct sl_rules_out *o = &st->out;

    /* A restore record runs interpreted, where the budget always stops a
     * stuck rule: a restart never dies on the records it replays. */
    sl_rules_jit(c->rules, !c->in->restore);
    switch (sl_rules_call(c->rules, st->index, &c->ref, c->in, NULL, o)) {
    case SL_RULES_NEXT:
        res->status = SL_STEP_NEXT;
        break;
    case SL_RULES_FILTERED:
        res->status = SL_STEP_FILTERED;
        res->reason = o->reason;
        break;
    case SL_RULES_MANY:
        res->status = SL_STEP_MANY;
        res->refs = o->refs;
        res->nrefs = o->nrefs;
        break;
    case SL_RULES_ERROR:
        if (c->in->restore)          /* skipped: it was dead-lettered when first run */
            sl_metrics_inc("sluice_restore_skipped_total", "reason=\"error\"", 1);
        res->status = SL_STEP_ERROR;
        res->error = sl_buf_cstr(&o->error);
        break;
    }
}

static void destroy(void *state) {
    struct lua_step *st = state;
    if (!st) return;
    sl_rules_out_free(&st->out);
    free(st);
}

static const char *const lua_keys[] = {"fn", "params", NULL};

const struct sl_step_kind sl_step_lua = {
    .name = "lua",
    .synopsis = "lua = \"module\"",
    .keys = lua_keys,
    .type = SL_STEP_LUA,
    .flags = SL_STEP_FOR_RESTORE,
    .load = load_conf,
    .unload = unload_conf,
    .create = create,
    .start = start,
    .destroy = destroy,
};
