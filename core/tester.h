/* tester.h -- `sluice check` and `sluice test`: an analyst's tools.
 *
 * check loads a config and compiles every rule. test runs each line of a
 * JSON-lines file through the steps without Kafka and prints, per record and
 * step, one JSON line with the context after it, the filter reason or the
 * error. Uses config.c, rules.c, pipeline.c. */
#ifndef SL_TESTER_H
#define SL_TESTER_H

#include <stdbool.h>
#include <stdio.h>

/* Returns the exit status: 0 when the config and its rules load, else 1
 * with file:line on stderr. */
int sl_tester_check(const char *config_file);

/* Runs every line of input through the pipeline, writing the trace to out,
 * or with summary only the counts per step and reason at the end. Returns
 * 0, or 1 when the config or the input cannot be read. */
int sl_tester_run(const char *config_file, const char *input, FILE *out, bool summary);

#endif
