/* rules.h -- the Lua VM that runs the rules of a pipeline.
 *
 * One sl_rules is one LuaJIT state with the rule modules of every lua step
 * loaded, their functions and params resolved, and the `sluice` module in
 * package.loaded. A reload builds a new sl_rules and swaps it in only when it
 * loaded; records in flight keep a reference to the VM they started on, and
 * a VM is closed when its last reference goes (sl_rules_release).
 *
 * A monitor thread watches the running step. Past rules.budget it arms a
 * count hook that interrupts the step where the VM allows it (no hook is set
 * otherwise: it would slow the interpreter). Compiled LuaJIT traces ignore
 * hooks, so past rules.watchdog (run only) it writes the
 * record's coordinates to the state directory, logs step and record, and
 * exits with SL_RULES_WATCHDOG_EXIT so a supervisor restarts the process;
 * the next process dead-letters that record instead of running it again
 * (once: the file remembers it was), and skips it if it is a restore record.
 * Loading a module (its top-level code) runs with the JIT off under the
 * same monitor, bounded by rules.watchdog: a load that does not finish in
 * time fails (a reload keeps the old rules) with the module named. A load
 * that the hook cannot stop (inside a C function, or catching the error in
 * a loop) ends the process with SL_RULES_WATCHDOG_EXIT after twice the bound
 * and SL_RULES_LOAD_GRACE_MS.
 * Records reach rules as lazy values (lazy.h), whose globals pairs, next,
 * rawget, rawset, getmetatable and setmetatable see them as plain tables.
 * Uses LuaJIT, json.c, lazy.c, config.h. */
#ifndef SL_RULES_H
#define SL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "config.h"
#include "sl.h"

#define SL_RULES_WATCHDOG_EXIT 70  /* Exit status when the watchdog stops a stuck step. */
#define SL_RULES_HOOK_COUNT 1000   /* VM instructions between checks once the hook is armed. */
#define SL_RULES_GC_PAUSE 400      /* The VMs' garbage collector pause (percent of the live heap). */
#define SL_RULES_MONITOR_MS 20     /* How often the monitor thread looks at the running step. */
#define SL_RULES_LOAD_GRACE_MS 1000 /* A load still running this long past 2x its bound ends the process. */

struct sl_rules;
struct sl_input;

enum sl_rules_result {
    SL_RULES_NEXT,     /* the step returned a context: *ctx_ref now holds it */
    SL_RULES_FILTERED, /* nil, reason: reason is in out->reason */
    SL_RULES_MANY,     /* a list of contexts: refs in out->refs[0..n) */
    SL_RULES_ERROR,    /* a Lua error or a bad return: message in out->error */
};

struct sl_rules_out {
    char reason[64];        /* filter reason, sanitised for metric labels */
    struct sl_buf error;    /* error with traceback */
    int *refs;              /* SL_RULES_MANY: context refs, owned by the caller */
    size_t nrefs;
};

/* Builds a new VM for cf: loads every lua step's module and resolves its
 * function. Returns NULL with file:line in err when a rule fails to load. */
struct sl_rules *sl_rules_create(const struct sl_config *cf, char *err, size_t errlen);

/* The VM takes over cf, the config it was created with (a reload's, whose
 * step params it uses): cf is destroyed when the VM closes. */
void sl_rules_own_config(struct sl_rules *r, struct sl_config *cf);

void sl_rules_retain(struct sl_rules *r);
/* Drops a reference; the last one closes the VM. NULL does nothing. */
void sl_rules_release(struct sl_rules *r);

lua_State *sl_rules_state(struct sl_rules *r);
/* Hash of the rule files' contents, 16 hex digits. */
const char *sl_rules_version(const struct sl_rules *r);

/* Runs lua step `step` (index in cf->steps) on the context table referenced
 * by *ctx_ref. On SL_RULES_NEXT *ctx_ref refers to the returned table (the old
 * ref is released when it changed). `in` is the record, `what` how the
 * watchdog names it when it stops the step: NULL for "topic/partition/offset"
 * of in (formatted only then). out->error is reset by the call. */
enum sl_rules_result sl_rules_call(struct sl_rules *r, size_t step, int *ctx_ref,
                                   const struct sl_input *in, const char *what,
                                   struct sl_rules_out *out);

void sl_rules_out_free(struct sl_rules_out *out);

/* Pushes rule function slot (0 .. SL_STEP_RULE_FNS-1) of step `step`, as
 * its rule_fn names it, then the step's params table: fn params. Both
 * were resolved when the VM was built. */
void sl_rules_push_fn(struct sl_rules *r, size_t step, int slot);

/* Calls the function below nargs arguments on the stack, as lua_pcall,
 * under the step's budget and the watchdog (record in, as sl_rules_call). On
 * success leaves nresults values and returns SL_OK; on error leaves one
 * value and returns SL_ERR: a table raised by the rule as it was (a failure
 * object, lua/sluice/response.lua), anything else as a message with its
 * traceback. */
int sl_rules_pcall(struct sl_rules *r, size_t step, int nargs, int nresults,
                   const struct sl_input *in);
/* The message of the error value at the top of L (as sl_rules_pcall leaves
 * it): the string, or a raised table's (a failure object's) message; NULL
 * when it has neither. The stack is left as found; the text lives as long
 * as the value. */
const char *sl_rules_error_message(lua_State *L);

/* Starts the watchdog thread for the process (idempotent). */
int sl_rules_watchdog_start(const struct sl_config *cf, char *err, size_t errlen);
/* A record the watchdog stopped a process in (the file in rules.state_dir
 * holds one line per record, appended by the watchdog, oldest first). */
struct sl_rules_poison {
    char what[256];          /* "topic/partition/offset" */
    char step[64];           /* the step it ran in */
    bool dead_lettered;      /* its dead letter was acknowledged: never again */
};
#define SL_RULES_POISON_MAX 64 /* Records kept in the file; older ones are forgotten. */

/* The records earlier processes were stopped in (*n of them; NULL when
 * none). The caller frees the array. */
struct sl_rules_poison *sl_rules_poison_load(const struct sl_config *cf, size_t *n);
/* Rewrites the file with list (the last SL_RULES_POISON_MAX; none: removed). */
int sl_rules_poison_save(const struct sl_config *cf, const struct sl_rules_poison *list,
                         size_t n);

/* Turns the VM's JIT compiler off (flushing its traces) or on again. A
 * restore record runs with it off: then the budget always stops a stuck
 * rule, so a record replayed to rebuild windows never trips the watchdog.
 * Costs a flush on each switch to off, so restore records come in runs. */
void sl_rules_jit(struct sl_rules *r, bool on);

#endif
