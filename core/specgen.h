/* specgen.h -- `sluice test --emit-spec`: a trace turned into a busted spec.
 *
 * For every record of a `sluice test` run and every lua step it reached, the
 * spec has one `it` that runs the step's function with sluice.testing's
 * run_step on the context the step started on (the record's value for the
 * first step, else the context the trace showed before it with the record's
 * input) and asserts what the trace showed after it: the context (as the
 * trace shows it: without input, kafka without timestamp), the contexts of a
 * list, the filter reason, or the error. Other steps are not run: their
 * output is the next lua step's input. The spec passes as written; an
 * analyst edits its expectations into the behaviour wanted.
 * Uses json.c (the trace is read back), config.h (steps and params). */
#ifndef SL_SPECGEN_H
#define SL_SPECGEN_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* Writes the spec of trace (the JSON lines of a run, len bytes) to out.
 * lines[i] is the value of record i + 1 (NUL-ended), linenos[i] its line in
 * input_name. SL_ERR with err when the trace cannot be read back. */
int sl_specgen_write(FILE *out, const char *trace, size_t len, const struct sl_config *cf,
                     const char *input_name, char *const *lines, const long long *linenos,
                     size_t nlines, char *err, size_t errlen);

#endif
