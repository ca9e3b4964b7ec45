/* httpc.h -- asynchronous HTTP client on the process's libevent loop.
 *
 * One client per event_base holds one libcurl multi handle, driven by
 * curl_multi_socket_action from socket and timer events (curl's hiperfifo
 * pattern): the loop never blocks on a request. Connections are kept alive
 * and shared by every endpoint of the client; HTTP/2 is used where the
 * server offers it over TLS; TLS peers are verified unless told otherwise.
 *
 * An endpoint is a base URL with its method, static headers, timeouts,
 * in-flight limit and bounded FIFO queue, retry policy (exponential backoff
 * with jitter for connection errors, timeouts, 5xx and 429; Retry-After
 * honoured; a classify hook for responses that say "retry" in a 200 body)
 * and auth: none, a bearer token, or OAuth2 client credentials (token
 * fetched once, cached, refreshed before it expires and after a 401, shared
 * by every request of the endpoint, one refresh at a time).
 *
 * Secrets (bearer tokens, client secrets, access tokens) never appear in
 * error texts or logs of this unit; sl_httpc_redact and sl_httpc_describe
 * let callers print requests and responses with them replaced.
 *
 * Metrics (metrics.h), labelled endpoint="<name>":
 *   sluice_http_requests_total             requests finished (callback called)
 *   sluice_http_responses_total{code=Nxx}  responses received, per attempt
 *   sluice_http_retries_total              attempts after the first
 *   sluice_http_errors_total{error=...}    requests finished without a response
 *   sluice_http_rejected_total             sl_httpc_request calls refused (queue full)
 *   sluice_http_token_fetches_total{result=ok|error}  OAuth token requests
 *   sluice_http_in_flight, sluice_http_queued          gauges
 *   sluice_http_duration_seconds_bucket{le=...}, _count, _sum: time of each
 *     attempt, as cumulative counters (metrics.c has no histogram type: the
 *     buckets render as counters and _sum as a gauge; histogram_quantile
 *     works on them as on a histogram).
 *
 * Single-threaded: call from the loop's thread only. Uses libcurl, libevent,
 * metrics.h and sl.h. */
#ifndef SL_HTTPC_H
#define SL_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl.h"

struct event_base;
struct sl_httpc;
struct sl_httpc_endpoint;
struct sl_httpc_call;

#define SL_HTTPC_FULL 1                  /* sl_httpc_request: queue full, nothing done */
#define SL_HTTPC_REDACTED "[redacted]"   /* What secrets are replaced with. */
#define SL_HTTPC_DEFAULT_TIMEOUT_MS 10000        /* conf timeout_ms 0 */
#define SL_HTTPC_DEFAULT_CONNECT_TIMEOUT_MS 5000 /* conf connect_timeout_ms 0 */
#define SL_HTTPC_DEFAULT_MAX_IN_FLIGHT 16        /* conf max_in_flight 0 */
#define SL_HTTPC_DEFAULT_QUEUE_FACTOR 4          /* conf max_queued 0: 4 x max_in_flight */
#define SL_HTTPC_DEFAULT_BACKOFF_BASE_MS 100     /* conf backoff_base_ms 0 */
#define SL_HTTPC_DEFAULT_BACKOFF_MAX_MS 10000    /* conf backoff_max_ms 0 */
#define SL_HTTPC_DEFAULT_RETRY_AFTER_MAX_MS 60000 /* conf retry_after_max_ms 0 */
#define SL_HTTPC_DEFAULT_MAX_RESPONSE (8u << 20) /* conf max_response 0: 8 MiB */
#define SL_HTTPC_MAX_HEADER_BYTES 65536  /* Response header bytes accepted per attempt. */

/* How a request ended. Anything but SL_HTTPC_OK means no usable response. */
enum sl_httpc_result {
    SL_HTTPC_OK,         /* a response was received (any status: judge it) */
    SL_HTTPC_ETIMEOUT,   /* no complete response within timeout_ms */
    SL_HTTPC_ECONNECT,   /* could not connect, or the peer closed/reset */
    SL_HTTPC_EPROTOCOL,  /* not HTTP (garbage), bad URL, unsupported scheme */
    SL_HTTPC_ETLS,       /* TLS handshake or certificate verification failed */
    SL_HTTPC_ETOOLARGE,  /* response body or headers over the bound */
    SL_HTTPC_EAUTH,      /* no OAuth token could be obtained */
    SL_HTTPC_ECANCELLED, /* the endpoint or client was destroyed first */
    SL_HTTPC_RESULT_COUNT
};

enum sl_httpc_auth_kind {
    SL_HTTPC_AUTH_NONE,    /* no Authorization header */
    SL_HTTPC_AUTH_BEARER,  /* Authorization: Bearer <token> */
    SL_HTTPC_AUTH_OAUTH2   /* client credentials grant, bearer access token */
};

struct sl_httpc_auth {
    enum sl_httpc_auth_kind kind;
    const char *token;          /* BEARER: the token (a secret) */
    const char *token_url;      /* OAUTH2: e.g. https://<workspace>/oidc/v1/token */
    const char *client_id;      /* OAUTH2 */
    const char *client_secret;  /* OAUTH2: a secret */
    const char *scope;          /* OAUTH2: e.g. "all-apis"; NULL: none sent */
    bool credentials_in_body;   /* OAUTH2: client_id/secret as form fields, not HTTP Basic */
};

/* One response header; both strings NUL-terminated. */
struct sl_httpc_header {
    const char *name;
    const char *value;
};

/* What a request came to. Valid only during the callback that receives it. */
struct sl_httpc_response {
    enum sl_httpc_result result;
    long status;                 /* HTTP status of the last attempt; 0 if none */
    const struct sl_httpc_header *headers; /* of the last response, in order */
    size_t nheaders;
    const char *body;            /* last response's body, NUL-terminated; "" if none */
    size_t len;                  /* body bytes */
    const char *error;           /* why, when result != SL_HTTPC_OK; "" otherwise;
                                    never holds a secret */
    int attempts;                /* attempts made, the first included */
    double elapsed_ms;           /* from sl_httpc_request to now, queueing included */
};

/* What the classify hook tells the client about a response. */
enum sl_httpc_verdict {
    SL_HTTPC_DEFAULT,  /* use the default rule (retry 5xx, 429, 408) */
    SL_HTTPC_RETRY,    /* retry it (if retries are left) */
    SL_HTTPC_FINAL     /* hand it to the caller as it is */
};

/* Called once per request with its outcome; arg as given to sl_httpc_request.
 * The call handle is freed when this returns. It may call sl_httpc_request
 * and sl_httpc_cancel, but must not destroy the endpoint or the client. */
typedef void sl_httpc_done_fn(const struct sl_httpc_response *r, void *arg);

/* Called for each response received (r->result is SL_HTTPC_OK, r->attempts
 * counts this attempt) before the retry decision. May set *delay_ms (>= 0)
 * to the wait before the retry it asks for (default: backoff, Retry-After). */
typedef enum sl_httpc_verdict sl_httpc_classify_fn(const struct sl_httpc_response *r,
                                                   void *arg, int64_t *delay_ms);

struct sl_httpc_endpoint_conf {
    const char *name;            /* metrics label and error texts; required */
    const char *url;             /* base URL, http:// or https://; required */
    const char *method;          /* NULL: POST with a body, GET without */
    const char *const *headers;  /* "Name: value", sent with every request */
    size_t nheaders;
    int timeout_ms;              /* per attempt, connect included */
    int connect_timeout_ms;
    size_t max_in_flight;        /* requests started and not finished (retry waits count) */
    size_t max_queued;           /* waiting for a slot; beyond: SL_HTTPC_FULL */
    int retries;                 /* attempts after the first; 0: none */
    int backoff_base_ms;         /* wait before retry n: base*2^(n-1), capped at max, */
    int backoff_max_ms;          /*   jittered into [wait/2, wait] */
    int retry_after_max_ms;      /* a longer Retry-After ends the request (no retry) */
    size_t max_response;         /* body bytes; larger: SL_HTTPC_ETOOLARGE */
    bool tls_insecure;           /* true: do not verify the peer (tests only) */
    const char *ca_file;         /* NULL: the system's CA bundle */
    const char *const *secrets;  /* more strings to redact (e.g. a token header's value) */
    size_t nsecrets;
    struct sl_httpc_auth auth;
    sl_httpc_classify_fn *classify; /* NULL: the default rule only */
    void *classify_arg;
};

/* A request. Everything is copied by sl_httpc_request. */
struct sl_httpc_req {
    const char *path;            /* appended to the endpoint's URL ("/invocations");
                                    an http(s):// URL is used as is (the endpoint's
                                    headers and auth go with it); NULL: the URL alone */
    const char *method;          /* NULL: the endpoint's */
    const void *body;            /* NULL: none */
    size_t len;
    const char *const *headers;  /* "Name: value", after the endpoint's; the same
                                    name replaces the endpoint's; "Name:" removes it */
    size_t nheaders;
};

/* ==================== Client ==================== */

/* A client on base. base must outlive it. Returns NULL and fills err if
 * libcurl cannot be set up. */
struct sl_httpc *sl_httpc_create(struct event_base *base, char *err, size_t errlen);

/* Destroys every endpoint left (see sl_httpc_endpoint_destroy), closes the
 * kept-alive connections and frees the client. NULL does nothing. Not from a
 * callback of this client. */
void sl_httpc_destroy(struct sl_httpc *c);

/* ==================== Endpoints ==================== */

/* An endpoint of c. conf and its strings are copied. Returns NULL and fills
 * err (naming conf->name and the field) when the conf is invalid: missing
 * name or url, a URL that is not http(s)://, a header without ':', OAuth2
 * without token_url/client_id/client_secret, bearer without token. */
struct sl_httpc_endpoint *sl_httpc_endpoint_create(struct sl_httpc *c,
        const struct sl_httpc_endpoint_conf *conf, char *err, size_t errlen);

/* Cancels the endpoint's requests, queued and in flight: each callback is
 * called once, before this returns, with SL_HTTPC_ECANCELLED (requests made
 * from those callbacks are refused with SL_ERR). Then frees the endpoint and
 * wipes its secrets. NULL does nothing. Not from a callback of this client. */
void sl_httpc_endpoint_destroy(struct sl_httpc_endpoint *ep);

/* Starts req on ep, or queues it when max_in_flight requests are in flight.
 * Returns SL_OK: done will be called exactly once, later, never from inside
 * this call; *call (if call is not NULL) is a handle for sl_httpc_cancel,
 * valid until done is called. Returns SL_HTTPC_FULL when max_queued requests
 * already wait: nothing was done, done will not be called; space frees only
 * when a request finishes, and it is free before that request's callback
 * runs, so a caller holding its consumer can try again from any callback.
 * Returns SL_ERR, nothing done and err filled, when a header is not one
 * "Name: value" line, the method is not a token, or the endpoint is being
 * destroyed. err may be NULL. */
int sl_httpc_request(struct sl_httpc_endpoint *ep, const struct sl_httpc_req *req,
                     sl_httpc_done_fn *done, void *arg, struct sl_httpc_call **call,
                     char *err, size_t errlen);

/* Abandons a request: its callback is NOT called, its slot or queue place
 * is freed at once. call must be a handle whose callback has not run. */
void sl_httpc_cancel(struct sl_httpc_call *call);

/* Requests started and not finished (waiting for a retry or a token too). */
size_t sl_httpc_in_flight(const struct sl_httpc_endpoint *ep);
/* Requests waiting for a slot. */
size_t sl_httpc_queued(const struct sl_httpc_endpoint *ep);

/* ==================== Responses and secrets ==================== */

/* The value of the last response header called name (case-insensitive), or
 * NULL. O(number of headers). */
const char *sl_httpc_header(const struct sl_httpc_response *r, const char *name);

/* "ok", "timeout", "connect", "protocol", "tls", "too_large", "auth",
 * "cancelled": stable names for metric labels and dead letters. */
const char *sl_httpc_result_name(enum sl_httpc_result result);

/* Appends s[0..n) to out with every secret of ep (bearer token, client
 * secret, access tokens, conf secrets) replaced by SL_HTTPC_REDACTED. */
void sl_httpc_redact(const struct sl_httpc_endpoint *ep, const char *s, size_t n,
                     struct sl_buf *out);

/* Whether a header named name[0..n) carries a credential (its name contains
 * token, secret, key, password, auth, session or cookie): describe redacts
 * its value, and callers should list that value among the secrets. */
bool sl_httpc_secret_header(const char *name, size_t n);

/* Appends the request that sl_httpc_request would send, as text for traces:
 * "METHOD URL\n", one "Name: value\n" per header (the auth header included),
 * "\n", then the body. Values of credential headers (Authorization, Cookie,
 * names containing token, secret, key, password, auth, session), a URL's
 * password, and every secret of ep are replaced by SL_HTTPC_REDACTED. Sends
 * nothing and fetches no token. */
void sl_httpc_describe(const struct sl_httpc_endpoint *ep, const struct sl_httpc_req *req,
                       struct sl_buf *out);

#endif
