/* step_kafka.c -- the kafka step kind: produces variables of the context to
 * a topic and lets the context go on once the broker acknowledged it (see
 * step.h, kafka.h).
 *
 *   { name = "debug", kafka = { topic = "out", key = "userId",
 *                               fields = { "userId", "product" } } }
 *
 * The value is the JSON object of the fields (nil ones left out), or of
 * every variable but input when no fields are named, every object's keys
 * in byte order (as sluice.json_encode and a trace write them). Without a producer
 * (sluice test) the record is traced instead. A record that cannot be
 * encoded is dead-lettered; a produce the broker refused for good is fatal.
 * Restore records skip it. */
#define _GNU_SOURCE
#include "step.h"
#include "json.h"
#include "kafka.h"
#include "pipeline.h"
#include "rules.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

struct kafka_step {
    const struct sl_step_conf *s;
    struct sl_kafka_producer *producer; /* NULL: trace mode */
    bool last;                   /* no step after it reads the context */
    char **keys;                 /* its fields as JSON strings, made on first use */
    size_t *order;               /* indices of its fields in byte order of their names, */
    size_t norder;               /* a field named twice once */
    const char **named;          /* keys[order[k]]: the keys of the fields written, in order */
    struct sl_step_path **fields; /* its fields split */
    struct sl_step_path *key;    /* s->key_var split, or NULL */
    struct sl_step_getter *get;  /* with fields: the fields in order, then the key if any */
    struct sl_buf buf;           /* scratch for the value */
    char err[SL_ERRLEN + 64];    /* the last result's error */
};

/* ==================== Config ==================== */

static int load_conf(struct sl_config_cur *c, const char *path, struct sl_step_conf *s,
                     size_t pos) {
    static const char *const keys[] = {"topic", "key", "fields", NULL};
    char p[SL_CONFIG_PATHLEN];
    (void)pos;

    sl_config_join(p, path, "kafka");
    if (sl_config_enter(c, path, "kafka") != 1) return SL_ERR;
    int ret = (sl_config_only_keys(c, p, keys) ||
               sl_config_need_str(c, p, "topic", &s->topic) ||
               sl_config_get_str(c, p, "key", NULL, &s->key_var) ||
               sl_config_get_strlist(c, p, "fields", &s->fields, &s->nfields)) ? SL_ERR : SL_OK;
    lua_pop(sl_config_state(c), 1);
    return ret;
}

static void unload_conf(struct sl_step_conf *s) {
    free(s->topic);
    free(s->key_var);
    for (size_t i = 0; i < s->nfields; i++) free(s->fields[i]);
    free(s->fields);
}

/* ==================== Running ==================== */

static void *create(const struct sl_step_env *env) {
    struct kafka_step *st = sl_calloc(1, sizeof(*st));
    st->s = &env->cf->steps[env->index];
    st->producer = env->producer;
    st->last = env->index + 1 == env->cf->nsteps;
    if (st->producer) sl_kafka_producer_warm(st->producer, st->s->topic);
    st->order = sl_calloc(st->s->nfields + 1, sizeof(*st->order));
    for (size_t i = 0; i < st->s->nfields; i++) {   /* insertion sort: a handful of names */
        size_t j = i;
        for (; j > 0 && strcmp(st->s->fields[st->order[j - 1]], st->s->fields[i]) > 0; j--)
            st->order[j] = st->order[j - 1];
        st->order[j] = i;
    }
    for (size_t k = 0; k < st->s->nfields; k++) {   /* a field named twice is written once */
        size_t i = st->order[k];
        if (!st->norder || strcmp(st->s->fields[st->order[st->norder - 1]], st->s->fields[i]))
            st->order[st->norder++] = i;
    }
    st->named = sl_calloc(st->s->nfields + 1, sizeof(*st->named));
    st->fields = sl_calloc(st->s->nfields + 1, sizeof(*st->fields));
    for (size_t i = 0; i < st->s->nfields; i++) st->fields[i] = sl_step_path_create(st->s->fields[i]);
    st->key = sl_step_path_create(st->s->key_var);
    if (st->s->nfields) {
        struct sl_step_path **read = sl_calloc(st->norder + 1, sizeof(*read));
        for (size_t k = 0; k < st->norder; k++) read[k] = st->fields[st->order[k]];
        if (st->key) read[st->norder] = st->key;
        st->get = sl_step_getter_create(read, st->norder + (st->key != NULL));
        free(read);
    }
    return st;
}

/* The JSON string literals of the field names, made once, and named, the
 * ones a record writes in their order. NULL (err set) when a name cannot be
 * encoded. */
static char **field_keys(struct kafka_step *st, lua_State *L, char *err, size_t errlen) {
    const struct sl_step_conf *s = st->s;
    if (st->keys) return st->keys;
    char **keys = sl_calloc(s->nfields + 1, sizeof(*keys));
    struct sl_buf b = {0};
    for (size_t i = 0; i < s->nfields; i++) {
        sl_buf_reset(&b);
        lua_pushstring(L, s->fields[i]);
        int rc = sl_json_encode(L, -1, &b, err, errlen);
        lua_pop(L, 1);
        if (rc) {
            for (size_t j = 0; j < i; j++) free(keys[j]);
            free(keys);
            sl_buf_free(&b);
            return NULL;
        }
        keys[i] = sl_strdup(sl_buf_cstr(&b));
    }
    sl_buf_free(&b);
    st->keys = keys;
    for (size_t k = 0; k < st->norder; k++) st->named[k] = keys[st->order[k]];
    return keys;
}

/* Appends the JSON object {field: value, ...} of the step's fields to b,
 * their values at first, first + 1, ... (st->get's order): fields in byte
 * order, those that are nil left out, a field named twice written once. */
static int encode_fields(struct kafka_step *st, lua_State *L, int first, struct sl_buf *b,
                         char *err, size_t errlen) {
    if (!field_keys(st, L, err, errlen)) return SL_ERR;
    return sl_json_encode_members_sorted(L, first, st->norder, st->named, b, err, errlen);
}

/* The broker's report on a produce: the context goes on, or the process
 * stops (a sink that failed for good). */
static void produced(void *opaque, const char *err, int32_t p, int64_t o) {
    struct sl_step_result res = {.status = err ? SL_STEP_FATAL : SL_STEP_NEXT, .error = err};
    (void)p; (void)o;
    sl_pipeline_resume(opaque, &res);
}

/* Produces the step's fields of the context: pending until the broker
 * acknowledges, at once in trace mode, an error when they cannot be encoded. */
static void start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    struct kafka_step *st = state;
    const struct sl_step_conf *s = st->s;
    lua_State *L = sl_rules_state(c->rules);
    struct sl_buf *b = &st->buf;
    char err[SL_ERRLEN];
    const char *key = NULL;
    size_t keylen = 0;
    int top = lua_gettop(L);

    if (!lua_checkstack(L, (int)s->nfields + 8)) {
        snprintf(err, sizeof(err), "Lua stack full");
        goto bad;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);          /* ctx */
    int ctx_idx = lua_gettop(L);
    int paths = sl_step_push_path_cache(L);             /* ctx paths */
    sl_buf_reset(b);
    if (s->nfields) {
        sl_step_push_getter(L, paths, ctx_idx, st->get); /* ctx paths fields... [key] */
        if (encode_fields(st, L, paths + 1, b, err, sizeof(err))) goto bad;
    } else {
        if (sl_step_encode_vars(L, ctx_idx, b, err, sizeof(err))) goto bad;
        if (st->key) sl_step_push_path(L, paths, ctx_idx, st->key); /* ctx paths key */
    }
    if (st->key && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER))
        key = lua_tolstring(L, -1, &keylen);              /* stays on the stack */
    if (!st->producer) {                                  /* sluice test */
        sl_step_trace_write(c, L, "produce", s->topic, key, keylen, b);
        lua_settop(L, top);
        res->status = SL_STEP_NEXT;
        return;
    }
    if (sl_kafka_produce(st->producer, s->topic, -1, key, keylen, b->data, b->len,
                         0, produced, c, err, sizeof(err))) {
        lua_settop(L, top);
        snprintf(st->err, sizeof(st->err), "%s", err);
        res->status = SL_STEP_FATAL;
        res->error = st->err;
        return;
    }
    lua_settop(L, top);
    if (st->last) {
        /* No step reads the context again: free it now rather than when the
         * broker acknowledges (linger plus a round trip later), so records
         * waiting for the sink do not keep their decoded input alive for
         * the garbage collector to traverse. */
        luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
        c->ref = LUA_NOREF;
        sl_pipeline_spent(c);     /* nor the input: a failed report stops the process */
    }
    res->status = SL_STEP_PENDING;
    return;
bad:
    lua_settop(L, top);
    snprintf(st->err, sizeof(st->err), "cannot encode the record for topic %s: %s", s->topic, err);
    res->status = SL_STEP_ERROR;
    res->error = st->err;
}

static void destroy(void *state) {
    struct kafka_step *st = state;
    if (!st) return;
    if (st->keys) {
        for (size_t i = 0; i < st->s->nfields; i++) free(st->keys[i]);
        free(st->keys);
    }
    free(st->order);
    free(st->named);
    for (size_t i = 0; i < st->s->nfields; i++) sl_step_path_destroy(st->fields[i]);
    free(st->fields);
    sl_step_path_destroy(st->key);
    sl_step_getter_destroy(st->get);
    sl_buf_free(&st->buf);
    free(st);
}

static const char *const kafka_keys[] = {NULL};

/* Busy while the producer's queue is half full (sl_kafka_producer_full). */
static bool busy(void *state) {
    const struct kafka_step *st = state;
    return st->producer && sl_kafka_producer_full(st->producer);
}

/* Reports of contexts pending at destroy are muted by the caller, who
 * destroys the producer right after the pipeline: nothing to cancel. */
const struct sl_step_kind sl_step_kafka = {
    .name = "kafka",
    .synopsis = "kafka = {...}",
    .keys = kafka_keys,
    .type = SL_STEP_KAFKA,
    .flags = SL_STEP_SINK,
    .load = load_conf,
    .unload = unload_conf,
    .create = create,
    .start = start,
    .busy = busy,
    .destroy = destroy,
};
