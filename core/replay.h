/* replay.h -- `sluice replay`: puts dead-lettered records back into the
 * topic they came from, with their original key, once the rule is fixed.
 *
 * Reads the dead-letter topic in its own consumer group (<group>.replay),
 * produces each record's original value to its source topic, commits after
 * the broker acknowledged it, and returns when it has caught up.
 * Uses kafka.c and json.c. */
#ifndef SL_REPLAY_H
#define SL_REPLAY_H

#include <stdbool.h>

/* Returns the exit status. dry_run prints what would be replayed and
 * commits nothing. */
int sl_replay_run(const char *config_file, bool dry_run);

#endif
