/* config.h -- the job configuration: a Lua file returning a table.
 *
 * The file runs in a throw-away Lua state with the base, string, table, math
 * and os libraries and one helper, env(NAME, DEFAULT). Its table is checked
 * and copied into plain C structs; errors name the file, the key path and
 * what was expected, e.g.
 *   config/x.lua: pipeline[2].window.length: expected a duration like "5m", got 5
 * A step's own part (pipeline[i].lua, .kafka, .window, ...) is read by its
 * kind (step.h) through the helpers at the end of this header.
 * Uses LuaJIT, json.c (step params travel to the rules VM as JSON) and
 * step.c (the table of step kinds). */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "kafka.h"

#define SL_CONFIG_PATHLEN 256 /* Longest key path in an error message. */

struct sl_step_kind;

#define SL_CONFIG_MAX_SKEW_MS 120000 /* Default window max_skew: a client clock 2 min fast. */

enum sl_step_type {
    SL_STEP_LUA,     /* a rule function f(ctx, params) */
    SL_STEP_KAFKA,   /* produce variables of the context to a topic */
    SL_STEP_WINDOW,  /* keyed sliding window in the core */
    SL_STEP_STORE,   /* latest value per key for the read API (step_store.c) */
    SL_STEP_HTTP,    /* an HTTP request built and read by rules (step_http.c) */
    SL_STEP_MODEL,   /* a model: kind "mlflow" over HTTP (step_model.c) */
};

#define SL_STEP_RULE_FNS 2 /* Rule functions a step of another kind than lua may name. */

enum sl_agg_kind { SL_AGG_LIST, SL_AGG_COUNT, SL_AGG_FIRST, SL_AGG_LAST, SL_AGG_DISTINCT };

struct sl_agg_conf {
    char *name;              /* output field of the aggregate table */
    enum sl_agg_kind kind;
    char *var;               /* dotted context path, e.g. "product.slug" */
};

/* A step: its kind and name, then the parts its kind loads. */
struct sl_step_conf {
    const struct sl_step_kind *kind; /* from sl_step_kinds */
    enum sl_step_type type;  /* kind->type */
    char *name;              /* unique; defaults to the kind plus position */
    void *data;              /* a kind's own parsed part, freed by its unload */
    /* lua */
    char *module;            /* "recommendations.extract" */
    char *fn;                /* function in the module, default: the name */
    char *params_json;       /* the step's params table as JSON, "{}" if none */
    char *rule_fn[SL_STEP_RULE_FNS]; /* other kinds: "module.fn" of rule functions
                                        the rules VM resolves (NULL: none) */
    /* kafka */
    char *topic;
    char *key_var;           /* context path of the record key, may be NULL */
    char **fields;           /* context variables forming the value object */
    size_t nfields;
    /* window */
    char *time_var;          /* NULL: the Kafka record timestamp */
    int64_t length_ms;
    int64_t max_skew_ms;     /* event time more than this ahead of arrival: future_time */
    char *dedupe_var;        /* may be NULL */
    char *as;                /* output variable */
    size_t max_entries;
    size_t max_keys;
    struct sl_agg_conf *aggs;
    size_t naggs;
};

struct sl_config {
    char *file;
    struct {
        char *brokers;       /* "embedded" or a bootstrap list */
        bool embedded;
        int partitions;      /* topics created by the embedded broker */
        char *group;
        char **input;        /* topics consumed */
        size_t ninput;
        char *dead_letter;
        struct sl_kafka_prop *props; /* librdkafka properties of every handle */
        size_t nprops;
        struct sl_kafka_prop *consumer_props; /* ...of the consumer only */
        size_t nconsumer_props;
        struct sl_kafka_prop *producer_props; /* ...of the producers only */
        size_t nproducer_props;
    } kafka;
    struct {
        char **path;         /* directories holding rule modules */
        size_t npath;
        int64_t budget_ms;   /* a step running longer is interrupted */
        int64_t watchdog_ms; /* ...or, if it cannot be, the process exits */
        char *state_dir;     /* where the watchdog leaves the poisoned record */
        char *canary;        /* JSON lines a reload runs first (canary.h), or NULL */
        size_t canary_last;  /* last input records kept for a reload's canary */
        size_t canary_bytes; /* bound on the bytes of those records */
        size_t canary_slack; /* records the new rules may newly filter... */
        int canary_slack_pct; /* ...or this % of the sample, whichever is more */
    } rules;
    size_t max_inflight;     /* records in flight before partitions pause */
    int64_t shutdown_ms;     /* bound on finishing in-flight work at exit */
    bool has_collector;
    struct {
        char *listen;
        char *topic;
        char **allowed_origins;
        size_t norigins;
        size_t max_body;
        char *ip;            /* "hash" | "keep" | "drop" */
        char *ip_salt;
        size_t max_inflight;
    } collector;
    char *admin_listen;      /* NULL: no admin listener */
    char **notes;            /* what the config says about itself (sluice check) */
    size_t nnotes;
    struct sl_step_conf *steps;
    size_t nsteps;
    struct sl_config_leaf *leaves; /* the file's table flattened, sorted by path */
    size_t nleaves;
};

/* One value of the config table: its key path and a hash of the value
 * (never the value: it may be a secret). A table is a leaf too ("{}"). */
struct sl_config_leaf {
    char *path;              /* "kafka.brokers", "pipeline[2].params.app_id" */
    uint64_t hash;
};

/* Loads and checks file. Returns NULL and a message in err on error. */
struct sl_config *sl_config_load(const char *file, char *err, size_t errlen);
void sl_config_destroy(struct sl_config *c);

/* Parses "250ms", "5s", "5m", "1h", "2d" (also "1m30s") into ms. */
int sl_config_parse_duration(const char *s, int64_t *ms);
/* Parses "64KB", "5MiB", "1024" into bytes. */
int sl_config_parse_size(const char *s, size_t *bytes);
/* Writes the origin a browser sends for in to out: "HTTP://Shop.Example:80/"
 * gives "http://shop.example" (scheme and host lower case, the scheme's
 * default port left out, one trailing slash accepted). "*" stays "*". SL_ERR
 * when in is no origin (another scheme, a path, a query, user info, a bad
 * port) or out is too small. */
int sl_config_normalize_origin(const char *in, char *out, size_t outlen);

/* The librdkafka properties of the consumer (consumer = true) or of the
 * producers: kafka.properties then kafka.consumer or kafka.producer, plus
 * room for one more at the end. The array is the caller's to free; its
 * strings stay the config's. */
struct sl_kafka_prop *sl_config_kafka_props(const struct sl_config *c, bool consumer,
                                            size_t *n);

/* SIGHUP: the first key whose change old -> new a reload cannot apply
 * (the kafka section, listeners, the steps and their kinds: all but the
 * steps' params, rules.budget, the canary's file and slack, and notes),
 * written to key as "kafka.brokers changed" ("... added", "... removed").
 * Returns true when there is one: the new config needs a restart. */
bool sl_config_needs_restart(const struct sl_config *old, const struct sl_config *new_cf,
                             char *key, size_t keylen);

/* Index of the step named name, or -1. */
int sl_config_step_index(const struct sl_config *c, const char *name);

/* ==================== Reading a config table ====================
 * For step kinds' load callbacks. A cursor is a config being loaded: its Lua
 * state holds the table being read at the top of the stack. path is the key
 * path of that table ("pipeline[2].window"); errors name file, path.key and
 * what was expected, and only the first error of a load is kept. Each
 * returns SL_OK or SL_ERR and leaves the stack as it found it. */

struct sl_config_cur;

lua_State *sl_config_state(struct sl_config_cur *c);
/* Records "FILE: path: expected EXPECTED, got <value at idx>"; SL_ERR. */
int sl_config_fail(struct sl_config_cur *c, const char *path, const char *expected, int idx);
/* out = path.key (out has SL_CONFIG_PATHLEN bytes). */
void sl_config_join(char *out, const char *path, const char *key);
/* An optional string (def, which may be NULL, when absent), or a required one. */
int sl_config_get_str(struct sl_config_cur *c, const char *path, const char *key,
                      const char *def, char **out);
int sl_config_need_str(struct sl_config_cur *c, const char *path, const char *key, char **out);
/* SL_ERR (reported with path.key and expected) unless key is absent or one of
 * the strings of allowed (NULL-ended). */
int sl_config_one_of(struct sl_config_cur *c, const char *path, const char *key,
                     const char *const *allowed, const char *expected);
/* An integer >= min, def when absent. */
int sl_config_get_int(struct sl_config_cur *c, const char *path, const char *key,
                      int64_t def, int64_t min, int64_t *out);
/* true or false, def when absent. */
int sl_config_get_bool(struct sl_config_cur *c, const char *path, const char *key, bool def,
                       bool *out);
/* A duration like "5m" in ms, def when absent. */
int sl_config_get_duration(struct sl_config_cur *c, const char *path, const char *key,
                           int64_t def, int64_t *out);
/* A list of strings (a single string is a list of one); none when absent. */
int sl_config_get_strlist(struct sl_config_cur *c, const char *path, const char *key,
                          char ***out, size_t *n);
/* Checks that every key of the table is one of allowed (NULL-ended). */
int sl_config_only_keys(struct sl_config_cur *c, const char *path, const char *const *allowed);
/* Pushes t[key] and returns 1 when it is a table, 0 when absent (nothing
 * pushed), -1 on error (nothing pushed). */
int sl_config_enter(struct sl_config_cur *c, const char *path, const char *key);

#endif
