/* tester.h -- `sluice check` and `sluice test`: an analyst's tools.
 *
 * check loads a config and compiles every rule. test runs each line of a
 * JSON-lines file through the steps without Kafka and prints, per record and
 * step, one JSON line with the context after it, the filter reason and the
 * context dropped, or the error (pipeline.h: keys sorted, no wall-clock
 * fields, so the same input gives the same bytes). Uses config.c, rules.c, pipeline.c, canary.c, specgen.c. */
#ifndef SL_TESTER_H
#define SL_TESTER_H

#include <stdbool.h>
#include <stdio.h>

/* Returns the exit status: 0 when the config and its rules load (printing
 * the steps in order and the config's notes), else 1 with file:line on
 * stderr. With against (a JSON-lines file), the rules then run over its
 * lines as a reload's canary does (canary.h), compared with the rules in
 * baseline (rule directories, ":"-separated, in place of rules.path) or,
 * without baseline, with none: 1 and the summary on stderr when refused. */
int sl_tester_check(const char *config_file, const char *against, const char *baseline);

/* What `sluice test` runs. */
struct sl_tester_opts {
    const char *config;
    const char *input;       /* JSON lines, "-" for stdin */
    FILE *out;               /* the trace, the summary or the spec */
    bool summary;            /* counts only, no trace */
    bool emit_spec;          /* a busted spec of the trace (specgen.h) */
    const char *const *stubs; /* "STEP=FILE" answers of http/model steps */
    size_t nstubs;
    bool allow_errors;       /* exit 0 even when records were dead-lettered */
};

/* Runs every line of input through the pipeline, writing the trace to out,
 * with summary only the counts per step and reason at the end, or with
 * emit_spec a busted spec of the trace. HTTP
 * steps send nothing: stubs ("STEP=FILE", a JSON file {status, headers,
 * body}) answer them, else their request is traced and the context stops.
 * Lines that are not JSON are reported on stderr (file:line) and in the
 * trace, and run with the raw text as input, as the worker does. Returns 1
 * when the config, the input or a stub cannot be read, or when a record was
 * dead-lettered (then a summary goes to stderr: per step how many, the first
 * error with its line) unless allow_errors; else 0. */
int sl_tester_run(const struct sl_tester_opts *t);

#endif
