/* step_http.h -- the HTTP machinery the http and model step kinds share.
 *
 * step_http.c implements the http kind and exports its config reader and
 * callbacks, so that step_model.c can describe a model (kind "mlflow": POST
 * <url>/invocations, rules input and output) as the same request machinery
 * with its own keys. Uses httpc.h, config.h and step.h. */
#ifndef SL_STEP_HTTP_H
#define SL_STEP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "httpc.h"
#include "step.h"

/* The parsed part of an http or model step (sl_step_conf.data). Request and
 * response functions are s->rule_fn[0] and [1], their params s->params_json. */
struct sl_http_conf {
    char *url;                   /* endpoint URL */
    char *path;                  /* appended to url per request, or NULL */
    char *method;                /* NULL: POST */
    char **headers;              /* "Name: value" */
    size_t nheaders;
    char **secrets;              /* values of credential headers */
    size_t nsecrets;
    enum sl_httpc_auth_kind auth;
    char *token;                 /* bearer */
    char *token_url, *client_id, *client_secret, *scope; /* oauth2 */
    bool credentials_in_body;    /* oauth2: client id and secret as form fields */
    char *ca_file;
    int64_t timeout_ms, connect_timeout_ms, backoff_ms, backoff_max_ms;
    int64_t max_in_flight, max_queued, retries;
    char *as;                    /* variable set from the response */
    char *key_var;               /* NULL: the key of the window step before */
    bool unkeyed;                /* key = false: no per-key order */
    bool coalesce;               /* newer contexts of a busy key replace the waiting one */
    int *accept;                 /* statuses taken as success; none: 2xx */
    size_t naccept;
};

/* Reads the keys both kinds share from the table at the top of c's stack
 * (path names it: "pipeline[3].http") into s->data, s->params_json:
 * url, headers, auth, timeout, connect_timeout, max_in_flight, max_queued,
 * retries, backoff, backoff_max, ca_file, as, accept, key, coalesce, params. */
int sl_step_http_load_common(struct sl_config_cur *c, const char *path, struct sl_step_conf *s);
/* Reads a function name key ("recommendations.shopify.request") into
 * s->rule_fn[slot]; required or not. */
int sl_step_http_load_fn(struct sl_config_cur *c, const char *path, const char *key,
                         bool required, struct sl_step_conf *s, int slot);

sl_step_unload_fn sl_step_http_unload;
sl_step_create_fn sl_step_http_create;
sl_step_start_fn sl_step_http_start;
sl_step_cancel_fn sl_step_http_cancel;
sl_step_destroy_fn sl_step_http_destroy;
sl_step_busy_fn sl_step_http_busy;

#endif
