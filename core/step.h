/* step.h -- the interface every step kind implements, and the table of the
 * kinds a config may name.
 *
 * A step kind is one struct of callbacks, as Fluent Bit's flb_filter_plugin:
 * load reads and checks the kind's part of a step's config table, create
 * makes the step's state for one pipeline, start runs the step on a
 * context, cancel and destroy end it. Each kind lives in its own file
 * (step_lua.c, step_window.c, step_kafka.c, step_http.c, step_model.c,
 * step_builtin.c) and sl_step_kinds names them;
 * adding a kind is a file and a row there.
 *
 * start finishes a context now, by filling in *res, or later: it sets
 * res->status = SL_STEP_PENDING, keeps the context and hands it back through
 * sl_pipeline_resume exactly once, from whatever completes it (the broker's
 * acknowledgement, an HTTP response). While a context is pending it stays
 * valid, and so does the VM its record started on, even across a reload.
 * Uses config.c (the load helpers) and pipeline.c (contexts, resume). */
#ifndef SL_STEP_H
#define SL_STEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "config.h"
#include "sl.h"

#define SL_STEP_FOR_RESTORE 1u  /* Runs for restore records (they only rebuild state). */
#define SL_STEP_SINK 2u         /* Writes out: its context is not traced; its acknowledgement ends a record's latency. */
#define SL_STEP_MAX_KINDS 16    /* Bound on enum sl_step_type values (the kinds' shared slots). */

struct event_base;
struct sl_kafka_producer;
struct sl_pipeline_ctx;
struct sl_store;
struct sl_input;

/* How a step left a context. */
enum sl_step_status {
    SL_STEP_NEXT,      /* go on with the next step */
    SL_STEP_FILTERED,  /* the context ends here, counted under reason */
    SL_STEP_ERROR,     /* the record is dead-lettered with error (restore: ends) */
    SL_STEP_DONE,      /* the context ends here, nothing to count */
    SL_STEP_MANY,      /* replaced by nrefs contexts, each going on after the step */
    SL_STEP_FATAL,     /* a sink failed for good: the process stops, nothing commits */
    SL_STEP_PENDING,   /* start only: the step resumes the context later */
};

/* A step's outcome. Strings and refs need only live until the pipeline has
 * taken them (the return of start or of sl_pipeline_resume). */
struct sl_step_result {
    enum sl_step_status status;
    const char *reason;      /* FILTERED: short and stable (a metric label) */
    const char *error;       /* ERROR, FATAL: what failed, for log and dead letter */
    const char *extra;       /* ERROR: more members of the dead-letter record, as
                                JSON text ("\"http\":{...}"), or NULL */
    const int *refs;         /* MANY: context tables in the record's VM, taken over */
    size_t nrefs;
};

/* What a step is created with. */
struct sl_step_env {
    const struct sl_config *cf;
    size_t index;                       /* the step in cf->steps */
    struct sl_kafka_producer *producer; /* NULL: trace mode (sluice test) */
    struct sl_store *store;             /* store steps write here; NULL: trace mode */
    struct event_base *base;            /* the loop; NULL in trace mode */
    const char *const *stubs;           /* trace mode: "STEP=FILE" canned answers */
    size_t nstubs;
    void **shared;                      /* one slot per kind and pipeline, NULL at
                                           first: state the kind's steps share; the
                                           kind frees it with its last step */
};

/* Reads pipeline[i] (the table at the top of c's Lua stack, path names it)
 * into s: the kind's own key and any of its keys; s->name if the kind
 * derives it (else the config defaults it to the kind's name plus pos). */
typedef int sl_step_load_fn(struct sl_config_cur *c, const char *path,
                            struct sl_step_conf *s, size_t pos);
/* Frees what load set in s (also after a load that failed half way). */
typedef void sl_step_unload_fn(struct sl_step_conf *s);
/* The step's state in one pipeline; the config was checked by load. */
typedef void *sl_step_create_fn(const struct sl_step_env *env);
/* Runs the step on c: fills *res, or sets SL_STEP_PENDING and resumes later. */
typedef void sl_step_start_fn(void *state, struct sl_pipeline_ctx *c,
                              struct sl_step_result *res);
/* The pipeline is going away with contexts pending: the step must never
 * resume them (they are dropped with their records). */
typedef void sl_step_cancel_fn(void *state);
typedef void sl_step_destroy_fn(void *state);
/* Periodic housekeeping (expiry, gauges). */
typedef void sl_step_tick_fn(void *state);
/* Forgets what the step keeps for an input partition (revoked). */
typedef void sl_step_drop_fn(void *state, const char *topic, int32_t partition);
/* True while the step cannot take more contexts without growing without
 * bound (its endpoint's queue is full): the caller stops consuming. */
typedef bool sl_step_busy_fn(void *state);
/* SIGHUP: reloads what the step read from files at config load (a model
 * file). On failure the step keeps what it has: SL_ERR with err naming the
 * file and why. */
typedef int sl_step_reload_fn(void *state, char *err, size_t errlen);
/* How much recent input (ms) rebuilds the step's state for a partition. */
typedef int64_t sl_step_history_fn(const struct sl_step_conf *s);

struct sl_step_kind {
    const char *name;               /* its key in a step table: pipeline[i].<name> */
    const char *synopsis;           /* for "expected exactly one of ..." */
    const char *const *keys;        /* other step-level keys it reads, NULL-ended */
    enum sl_step_type type;
    unsigned flags;                 /* SL_STEP_FOR_RESTORE, SL_STEP_SINK */
    sl_step_load_fn *load;
    sl_step_unload_fn *unload;
    sl_step_create_fn *create;
    sl_step_start_fn *start;
    sl_step_cancel_fn *cancel;      /* NULL: nothing to cancel */
    sl_step_destroy_fn *destroy;
    sl_step_tick_fn *tick;          /* NULL: none */
    sl_step_drop_fn *drop_partition; /* NULL: keeps nothing per partition */
    sl_step_busy_fn *busy;          /* NULL: never busy */
    sl_step_history_fn *history;    /* NULL: stateless; else restore records run
                                       up to the last such step */
    sl_step_reload_fn *reload;      /* NULL: nothing read from files */
};

/* The kinds a config may name, in the order errors list them; NULL-ended. */
extern const struct sl_step_kind *const sl_step_kinds[];

extern const struct sl_step_kind sl_step_lua;
extern const struct sl_step_kind sl_step_window;
extern const struct sl_step_kind sl_step_kafka;
extern const struct sl_step_kind sl_step_store;
extern const struct sl_step_kind sl_step_http;
extern const struct sl_step_kind sl_step_model;
/* The model step with model.kind = "builtin" (step_builtin.c): not in
 * sl_step_kinds, step_model.c's load hands such a step over to it. */
extern const struct sl_step_kind sl_step_builtin;
int sl_step_builtin_load(struct sl_config_cur *c, const char *path, struct sl_step_conf *s);

/* ==================== Helpers for kinds ==================== */

/* ==================== Context paths ==================== */

/* A dotted context path ("product.slug") split once, when a step is made:
 * segments end at each '.', so "a..b" has an empty one between and a
 * trailing '.' ends the path. Its segments' strings are made in a VM the
 * first time it reads the path there and kept in that VM's registry under
 * slots no other path has, so a read formats and hashes nothing, and a VM
 * only ever sees its own strings (a step's paths outlive reloads: pending
 * contexts read them on their old VM, new ones on the new). */
struct sl_step_path_seg {
    const char *s;           /* into the path's text (not NUL-ended) */
    size_t len;
};

struct sl_step_path {
    const char *text;        /* the path as written (for messages) */
    size_t n;                /* segments; 0 (the path ""): the context itself */
    int slot;                /* segment i's string is slot + i in each VM's cache */
    struct sl_step_path_seg seg[]; /* n of them */
};

/* Splits dotted (copied: it may go once this returns); NULL for NULL. */
struct sl_step_path *sl_step_path_create(const char *dotted);
void sl_step_path_destroy(struct sl_step_path *p);
/* Pushes the VM's cache of path segments (made on its first use) and
 * returns its index: once per step start, for every sl_step_push_path of
 * that start. */
int sl_step_push_path_cache(lua_State *L);
/* Pushes ctx[seg1][seg2]... for the context at ctx_idx (both indexes
 * absolute), cache_idx from sl_step_push_path_cache: nil when a segment is
 * missing or reaches a value that is not a table. Each read goes through
 * __index (a lazy value makes the member). Uses 2 slots of the stack. */
void sl_step_push_path(lua_State *L, int cache_idx, int ctx_idx, const struct sl_step_path *p);

/* Several paths read together, in order, by one Lua function made once per
 * VM (kept in the path cache): a step reads its paths in one call instead of
 * a C API call per segment. The paths are borrowed: they outlive it. */
struct sl_step_getter;
struct sl_step_getter *sl_step_getter_create(struct sl_step_path *const *paths, size_t n);
void sl_step_getter_destroy(struct sl_step_getter *g);
/* Pushes the values of g's paths for the context at ctx_idx, in order, as
 * sl_step_push_path would one by one (cache_idx from
 * sl_step_push_path_cache, both indexes absolute). Needs n + 3 slots of the
 * stack. */
void sl_step_push_getter(lua_State *L, int cache_idx, int ctx_idx, const struct sl_step_getter *g);

/* ==================== Other helpers ==================== */

/* A step that adds a variable only a running pipeline can make (window,
 * model, http): neither lua nor a sink. A reload's canary stops a record's
 * contexts there and runs the lua steps after it on contexts sampled as
 * they left it (canary.h). */
static inline bool sl_step_holds(const struct sl_step_conf *s) {
    return s->type != SL_STEP_LUA && !(s->kind->flags & SL_STEP_SINK);
}

/* Encodes the context at idx as JSON: every variable but input, keys in byte order. */
int sl_step_encode_vars(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen);
/* Appends the JSON string literal of s (or "(not UTF-8)"). */
void sl_step_json_str(lua_State *L, struct sl_buf *b, const char *s, size_t n);
/* In trace mode, what a sink would write, as the trace line's `what`:
 * {"topic":T,"key":K,"value":V}, topic left out when NULL, key null when
 * NULL, value the JSON text in value. Nothing when nothing is traced. */
void sl_step_trace_write(struct sl_pipeline_ctx *c, lua_State *L, const char *what,
                         const char *topic, const char *key, size_t keylen,
                         const struct sl_buf *value);
/* Writes "topic/partition/offset" of the input into out[n], n >= 64, without
 * printf (it runs for every Lua step). */
void sl_step_input_name(const struct sl_input *in, char *out, size_t n);

#endif
