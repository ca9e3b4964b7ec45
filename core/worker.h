/* worker.h -- `sluice run`: one libevent loop running the collector, the
 * Kafka consumer, the pipeline and the admin listener of a config.
 *
 * SIGHUP reloads the rules (a failed reload keeps the old ones); SIGTERM and
 * SIGINT stop consuming, let in-flight records finish within
 * shutdown_timeout, commit and return 0. Uses every other unit. */
#ifndef SL_WORKER_H
#define SL_WORKER_H

/* Runs the job of config file until stopped. Returns the process exit
 * status. */
int sl_worker_run(const char *config_file);

#endif
