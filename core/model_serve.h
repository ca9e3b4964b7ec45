/* model_serve.h -- an MLflow scoring server for the built-in model.
 *
 * Speaks the protocol of `mlflow models serve` with the seed model's
 * signature, so the pipeline's MLflow model step (and any MLflow client)
 * can call sluice's model as it calls the seed's:
 *
 *   POST /invocations   Content-Type: application/json; one of
 *     {"dataframe_split": {"columns": ["userId","items","timestamps"], "data": [[...], ...]}}
 *     {"dataframe_records": [{"userId": ..., "items": [...], "timestamps": [...]}, ...]}
 *     {"inputs": [records as above]}  or  {"inputs": {"items": [[...]], ...}} (columns)
 *   -> 200 {"predictions": [{"itemIds": [GID, ...], "preds": [score, ...]}, ...]}
 *   bad input -> 400 {"error_code": "BAD_REQUEST", "message": "<what and where>"};
 *   another Content-Type -> 415; a body over SL_MODEL_SERVE_MAX_BODY -> 413.
 *   GET /ping, GET /health -> 200; GET /version -> the model's header as JSON.
 *
 * items are product handles, oldest first; timestamps (optional, one per
 * item) are epoch milliseconds; userId is accepted and not used. SIGHUP
 * loads the model file again; a file that does not load keeps the model
 * being served. Runs on libevent's evhttp; parses JSON with json.c; scores
 * with model.c. */
#ifndef SL_MODEL_SERVE_H
#define SL_MODEL_SERVE_H

#include <stddef.h>

#include "sl.h"

#define SL_MODEL_SERVE_MAX_BODY (8u << 20)     /* Largest request body, bytes (413 above). */
#define SL_MODEL_SERVE_MAX_HEADERS (16u << 10) /* Largest request header block, bytes. */
#define SL_MODEL_SERVE_MAX_ROWS 10000          /* Most rows in one request. */
#define SL_MODEL_SERVE_TIMEOUT 30              /* Seconds a connection may idle mid-request. */

struct event_base;
struct sl_model_serve;

struct sl_model_serve_opts {
    const char *model;    /* the model file */
    const char *listen;   /* host:port; port 0 picks a free one */
    const char *catalog;  /* refuse models trained for another catalog, or NULL */
    size_t top_n;         /* recommendations per row, 1..SL_MODEL_MAX_TOP */
};

/* Loads the model and listens on the loop. NULL with err on a bad model or
 * address. */
struct sl_model_serve *sl_model_serve_create(struct event_base *base,
                                             const struct sl_model_serve_opts *o, char *err,
                                             size_t errlen);
void sl_model_serve_destroy(struct sl_model_serve *s);
/* The port it listens on. */
int sl_model_serve_port(const struct sl_model_serve *s);
/* Loads the model file again; on failure keeps the current model and
 * returns SL_ERR with err. */
int sl_model_serve_reload(struct sl_model_serve *s, char *err, size_t errlen);

/* The answer to POST /invocations with this Content-Type (NULL: none) and
 * body: returns the HTTP status; out is replaced by the JSON answer. */
int sl_model_serve_invocations(struct sl_model_serve *s, const char *content_type,
                               const char *body, size_t len, struct sl_buf *out);

/* `sluice model serve`: serves until SIGTERM or SIGINT, reloads on SIGHUP.
 * Prints http://HOST:PORT on stdout once listening. Returns the exit
 * status. */
int sl_model_serve_run(const struct sl_model_serve_opts *o);

#endif
