/* pipeline.h -- runs records through the steps of a config.
 *
 * A record becomes a context (a Lua table: input = the decoded value, kafka =
 * its metadata) that moves through the steps in order. Each step is of a
 * kind behind the interface of step.h (step_lua.c, step_window.c,
 * step_kafka.c); the pipeline keeps records and contexts, routes a context
 * from step to step, counts, traces and dead-letters. A step finishes a
 * context at once or later through sl_pipeline_resume (a kafka step on the
 * broker's acknowledgement); a step error dead-letters the record
 * (deadletter.h: it always fits; one the broker refuses keeps its record in
 * flight, uncommitted, and is sent again at each tick). When
 * every context of a record has finished, the record is reported done, so
 * its offset may be committed. A record holds the rules VM it started on
 * until it is done, so a reload never closes a VM under a pending context.
 * Without a producer (sluice test), kafka steps and dead-letters are traced
 * instead of produced, and every step writes one JSON line to the trace.
 *
 * Steps that keep state (windows) keep it in the core, per input partition,
 * so it survives rule reloads and moves with its partition: a worker given a
 * partition replays its recent records as restore records, which run only
 * the steps that rebuild state (and the steps before them that run for
 * restore records) and emit and dead-letter nothing.
 * Uses rules.c, json.c, kafka.c, metrics.c and the step kinds. */
#ifndef SL_PIPELINE_H
#define SL_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "kafka.h"
#include "rules.h"
#include "step.h"

struct sl_pipeline;

/* One input record. The pipeline copies nothing: the memory must stay valid
 * until on_done is called for it. */
struct sl_input {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp;       /* ms, -1 when unknown */
    const void *key;
    size_t keylen;
    const void *value;
    size_t len;
    void *owner;             /* the caller's handle, untouched */
    int64_t line;            /* sluice test: its line in the input file, else 0 */
    bool restore;            /* rebuild window state only: run the steps up to
                                the last window step, emit and dead-letter
                                nothing */
};

/* A context at a step: one table in the VM its record started on. A step
 * reads it and may replace ref (a Lua step may return a new table); it is
 * valid from start until the step hands it back. */
struct sl_pipeline_ctx {
    struct sl_rules *rules;        /* the record's VM, held until the record ends */
    const struct sl_input *in;     /* the record */
    int ref;                       /* the context table in the VM's registry */
    size_t step;                   /* index of the step it is at */
};

/* The record has finished every step (or was dead-lettered). */
typedef void sl_pipeline_done_fn(void *arg, struct sl_input *in);
/* The record is being dead-lettered by step with error (for sluice test). */
typedef void sl_pipeline_dead_fn(void *arg, const struct sl_input *in, const char *step,
                                 const char *error);
/* No step reads the record's input (key and value) again, nor can
 * dead-letter it: every context still in flight has passed the job's last
 * step and waits only for its acknowledgement. The caller may free the
 * bytes now (in->key and in->value are NULL after), rather than when the
 * record is done. Called at most once per record, and not for a record
 * that is done at once. */
typedef void sl_pipeline_spent_fn(void *arg, struct sl_input *in);
/* The record's value is not JSON: error is the decoder's (for sluice test).
 * The record goes on with its input as a string. */
typedef void sl_pipeline_not_json_fn(void *arg, const struct sl_input *in, const char *error);
/* A sink failed for good: the process must stop without committing. */
typedef void sl_pipeline_fatal_fn(void *arg, const char *why);

struct sl_canary;

struct sl_pipeline_conf {
    const struct sl_config *cf;
    struct sl_kafka_producer *producer; /* NULL: trace mode */
    struct sl_store *store;             /* the store step's (recs.h); NULL: trace mode */
    struct event_base *base;            /* the loop HTTP steps run on; NULL in trace mode */
    const char *const *stubs;           /* trace mode: "STEP=FILE" answers of HTTP steps */
    size_t nstubs;
    FILE *trace;                        /* per-step JSON lines, or NULL */
    sl_pipeline_done_fn *on_done;
    sl_pipeline_fatal_fn *on_fatal;
    sl_pipeline_done_fn *on_drop;       /* destroy drops a record in flight */
    sl_pipeline_dead_fn *on_dead_letter; /* may be NULL */
    sl_pipeline_not_json_fn *on_not_json; /* may be NULL */
    sl_pipeline_spent_fn *on_spent;      /* may be NULL */
    struct sl_canary *canary;            /* offered the contexts leaving a step that holds
                                            them (sl_step_holds) with lua steps after it;
                                            may be NULL */
    void *arg;
};

/* Takes ownership of rules. */
struct sl_pipeline *sl_pipeline_create(const struct sl_pipeline_conf *conf,
                                       struct sl_rules *rules);
/* Frees the pipeline; records still in flight go to on_drop, not on_done.
 * Their contexts leak into nothing: the caller must mute or destroy the
 * producer whose reports reference them right after. */
void sl_pipeline_destroy(struct sl_pipeline *pl);

/* Swaps in new rules (ownership moves): records that start from now on use
 * them; records in flight finish on the VM they started on. */
void sl_pipeline_swap_rules(struct sl_pipeline *pl, struct sl_rules *rules);
const char *sl_pipeline_version(const struct sl_pipeline *pl);
/* The rules new records start on (the pipeline's: not retained). */
struct sl_rules *sl_pipeline_rules(const struct sl_pipeline *pl);
/* SIGHUP: every step reloads what it read from files (a built-in model's
 * file). A step whose file is bad keeps what it has; SL_ERR with err
 * naming the first such step, file and why (the others are logged). */
int sl_pipeline_reload_files(struct sl_pipeline *pl, char *err, size_t errlen);

/* Pushes the context table of a record onto L, as every record's starts:
 * input (the value decoded as JSON; the raw text, and SL_ERR with why in
 * err, when it is not JSON; sluice.null for none) and kafka (its metadata).
 * Counts and traces nothing (a reload's canary builds contexts with it). */
int sl_pipeline_push_ctx(lua_State *L, const struct sl_input *in, char *err, size_t errlen);

/* Runs one record. Synchronous steps run now; on_done may be called before
 * this returns. */
void sl_pipeline_push(struct sl_pipeline *pl, struct sl_input *in);
/* Hands back a context its step kept (SL_STEP_PENDING) with the outcome:
 * exactly once per pending start, and not from within that start (a step
 * may resume another context it held, e.g. one a newer one supersedes).
 * The context goes on, ends or is dead-lettered as if start had set res. */
void sl_pipeline_resume(struct sl_pipeline_ctx *c, const struct sl_step_result *res);
/* Writes {"record":N,"step":STEP,"<what>":json} to the trace, if any, with
 * json's object keys sorted (its text is decoded and encoded again). */
void sl_pipeline_trace(struct sl_pipeline_ctx *c, const char *what, const char *json);
/* True when there is a trace to write to (sluice test without --summary):
 * a step builds what it would trace only then. */
bool sl_pipeline_tracing(struct sl_pipeline_ctx *c);
/* The step at c is the job's last and has handed its context on (a sink
 * waiting for the broker): the context reads its input no more. */
void sl_pipeline_spent(struct sl_pipeline_ctx *c);

/* Dead-letters a record without running it (the watchdog's victim). */
void sl_pipeline_reject(struct sl_pipeline *pl, struct sl_input *in,
                        const char *step, const char *why);

/* Records pushed and not yet done. */
size_t sl_pipeline_inflight(const struct sl_pipeline *pl);
/* True while a step cannot take more contexts (an HTTP endpoint's queue is
 * full): the caller holds its consumer until it is false again. */
bool sl_pipeline_busy(const struct sl_pipeline *pl);

/* Housekeeping from the caller's periodic timer: each step's tick (window
 * expiry on each partition's arrival watermark, its newest record's arrival
 * advanced by the wall clock since: never a client's clock; and the window
 * gauges). */
void sl_pipeline_tick(struct sl_pipeline *pl);

/* Forgets the state steps keep for a partition (revoked: its keys now live in
 * another worker; if it comes back, it is rebuilt by restore records). */
void sl_pipeline_drop_partition(struct sl_pipeline *pl, const char *topic,
                                int32_t partition);

/* True when a step keeps state rebuilt from recent input (a window step),
 * so a new partition needs restore records; how far back in *length_ms. */
bool sl_pipeline_has_window(const struct sl_pipeline *pl, int64_t *length_ms);

#endif
