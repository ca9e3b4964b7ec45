/* step_model.c -- the model step kind: recommendations (or any prediction)
 * for a context from a model server (see step.h, step_http.h).
 *
 *   { name = "model", model = { kind = "mlflow", url = env("MODEL_URL"),
 *       auth = { kind = "oauth2", token_url = ..., client_id = ...,
 *                client_secret = ..., scope = "all-apis" },
 *       input = "recommendations.model.input",
 *       output = "recommendations.model.output",
 *       format = "dataframe_split", as = "recommendationsModelOutput" } }
 *
 * kind "mlflow" speaks MLflow's scoring protocol: POST <url>/invocations
 * (url may already end in /invocations, as a Databricks serving endpoint's
 * does) with the body input(ctx, params) builds; output(ctx, status,
 * headers, body) reads the answer (default: the decoded JSON). format and
 * timestamps are handed to input as params.format and params.timestamps.
 * Everything else (auth, timeout, max_in_flight, retries, key, coalesce,
 * accept, headers, params) is the http step's, and so is the machinery:
 * order per key, coalescing, bounds, retries and dead letters.
 *
 * kind "builtin" runs the built-in model in process: its load hands the
 * step over to step_builtin.c (file, catalog, as, top_n, learn, items,
 * timestamps), which sets the same variable in the same shape. */
#define _GNU_SOURCE
#include "step_http.h"

#include <stdlib.h>
#include <string.h>

/* params = params + { format = ..., timestamps = ... } in the model table,
 * for the http loader to encode. */
static void merge_params(lua_State *L) {
    static const char *const passed[] = {"format", "timestamps"};
    lua_getfield(L, -1, "params");                   /* model params */
    if (!lua_istable(L, -1)) {
        if (!lua_isnil(L, -1)) {                     /* the loader names the error */
            lua_pop(L, 1);
            return;
        }
        lua_pop(L, 1);
        lua_newtable(L);
    }
    for (size_t i = 0; i < sizeof(passed) / sizeof(passed[0]); i++) {
        lua_getfield(L, -2, passed[i]);
        if (lua_isnil(L, -1)) lua_pop(L, 1);
        else lua_setfield(L, -2, passed[i]);
    }
    lua_setfield(L, -2, "params");                   /* model */
}

static int load_conf(struct sl_config_cur *c, const char *path, struct sl_step_conf *s,
                     size_t pos) {
    static const char *const keys[] = {
        "kind", "url", "headers", "auth", "timeout", "connect_timeout", "max_in_flight",
        "max_queued", "retries", "backoff", "backoff_max", "ca_file", "as", "accept", "key",
        "coalesce", "params", "input", "output", "format", "timestamps", NULL};
    static const char *const kinds[] = {"mlflow", "builtin", NULL};
    static const char *const formats[] = {"dataframe_split", "dataframe_records", "inputs", NULL};
    static const char *const stamps[] = {"string", "number", "none", NULL};
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN], *kind = NULL;
    int ret = SL_ERR;
    (void)pos;

    sl_config_join(p, path, "model");
    if (sl_config_enter(c, path, "model") != 1) return SL_ERR;
    if (sl_config_get_str(c, p, "kind", "mlflow", &kind)) goto done;
    if (!strcmp(kind, "builtin")) {                  /* the step is step_builtin.c's now */
        ret = sl_step_builtin_load(c, p, s);
        goto done;
    }
    if (sl_config_only_keys(c, p, keys)) goto done;
    if (sl_config_one_of(c, p, "kind", kinds, "\"mlflow\" or \"builtin\"") ||
        sl_config_one_of(c, p, "format", formats,
                         "\"dataframe_split\", \"dataframe_records\" or \"inputs\"") ||
        sl_config_one_of(c, p, "timestamps", stamps, "\"string\", \"number\" or \"none\""))
        goto done;
    merge_params(L);
    if (sl_step_http_load_common(c, p, s) ||
        sl_step_http_load_fn(c, p, "input", true, s, 0) ||
        sl_step_http_load_fn(c, p, "output", false, s, 1))
        goto done;
    struct sl_http_conf *h = s->data;
    size_t n = strlen(h->url);
    while (n && h->url[n - 1] == '/') h->url[--n] = '\0';
    if (n < 12 || strcmp(h->url + n - 12, "/invocations")) h->path = sl_strdup("/invocations");
    h->method = sl_strdup("POST");
    ret = SL_OK;
done:
    free(kind);
    lua_pop(L, 1);
    return ret;
}

static const char *const model_keys[] = {NULL};

const struct sl_step_kind sl_step_model = {
    .name = "model",
    .synopsis = "model = {...}",
    .keys = model_keys,
    .type = SL_STEP_MODEL,
    .flags = 0,
    .load = load_conf,
    .unload = sl_step_http_unload,
    .create = sl_step_http_create,
    .start = sl_step_http_start,
    .cancel = sl_step_http_cancel,
    .destroy = sl_step_http_destroy,
    .busy = sl_step_http_busy,
};
