/* collector.h -- the Snowplow collector endpoint.
 *
 * An HTTP server (libevent evhttp) that speaks the Snowplow tracker protocol:
 * POST /com.snowplowanalytics.snowplow/tp2 (payload_data JSON), GET /i (one
 * event as a query string, answered with a 1x1 GIF), OPTIONS (CORS preflight)
 * and GET /health (with a store, also GET /recommendations/<visitor id>:
 * sl_collector_set_reader). Each accepted request becomes one Kafka record
 * {"message": <payload>, "collector": {...}} keyed by the first event's duid;
 * the tracker is answered 200 only once the broker acknowledged the record.
 * Uses kafka.h for producing and committed-offset lookups, json.h (the core's
 * one JSON codec) to check bodies and write JSON, sl.h for the rest.
 *
 * Client IP: the TCP peer address, never X-Forwarded-For (a header anyone can
 * write). Behind a proxy every event carries the proxy's address; use ip =
 * "drop" there. A request with an SP-Anonymous header (the tracker's server
 * anonymisation) never carries an ip. */
#ifndef SL_COLLECTOR_H
#define SL_COLLECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct sl_buf;
struct sl_kafka_producer;
struct sl_collector;

enum sl_collector_ip {
    SL_COLLECTOR_IP_HASH,  /* hex SHA-256 of salt + peer address */
    SL_COLLECTOR_IP_KEEP,  /* the peer address as is */
    SL_COLLECTOR_IP_DROP   /* no "ip" field */
};

struct sl_collector_conf {
    const char *listen;            /* "127.0.0.1:8080", "[::1]:8080"; port 0 = any */
    const char *topic;             /* default "http.shopify-events" */
    const char *const *allowed_origins; /* exact origins; "*" only if listed */
    size_t norigins;
    size_t max_body;               /* default 65536 */
    enum sl_collector_ip ip;       /* default hash */
    const char *ip_salt;           /* NULL: a random salt per process */
    size_t max_inflight;           /* records awaiting broker ack; over it: 503 (0 = 10000) */
    size_t max_unconsumed_bytes;   /* 0 = off; 503 before the topic's unconsumed bytes reach it */
    const char *watch_group;       /* group whose committed offsets define "unconsumed" */
};

#define SL_COLLECTOR_DEFAULT_TOPIC "http.shopify-events" /* conf->topic NULL */
#define SL_COLLECTOR_DEFAULT_MAX_BODY 65536  /* conf->max_body 0 */
#define SL_COLLECTOR_DEFAULT_INFLIGHT 10000  /* conf->max_inflight 0 */
#define SL_COLLECTOR_ACK_TIMEOUT_MS 10000    /* no broker ack by then: 503 */

/* Binds conf->listen on base and starts serving. conf and its strings must
 * outlive the collector; producer too. Returns NULL and fills err if the
 * address cannot be bound or the conf is invalid. */
struct sl_collector *sl_collector_create(struct event_base *base,
        const struct sl_collector_conf *conf, struct sl_kafka_producer *producer,
        char *err, size_t errlen);

/* Stops listening and frees everything. Requests still waiting for a broker
 * ack get 503 (written out at once, best effort); their delivery reports,
 * when they come, are ignored. NULL does nothing. */
void sl_collector_destroy(struct sl_collector *c);

/* Graceful shutdown, step one: closes the listening socket; requests arriving
 * on open connections get 503 with Connection: close. Requests already
 * accepted still get their answer when the broker acks: keep the loop running
 * until sl_collector_pending() is 0 (or a deadline), then destroy. */
void sl_collector_stop_accepting(struct sl_collector *c);

/* The read API: GET (or HEAD) /recommendations/<visitor id> asks fn(reader,
 * id, n, cb, arg), which answers through cb exactly once, now or later,
 * with 200 and a JSON body, 400 (not a visitor id), 404 (unknown visitor)
 * or 503 (store unreachable). Answers carry CORS for the allowed origins
 * and Cache-Control: no-store, and are counted as recommendations,
 * bad_visitor, no_recommendations and store_unavailable. Without a reader
 * the path is not routed (404 not_found). reader must outlive the
 * collector (recs.h: sl_recs_read). */
#define SL_COLLECTOR_RECS_PATH "/recommendations/" /* Read API prefix. */
typedef void sl_collector_answer_fn(void *arg, int code, const char *body, size_t len);
typedef void sl_collector_read_fn(void *reader, const char *id, size_t n,
                                  sl_collector_answer_fn *cb, void *arg);
void sl_collector_set_reader(struct sl_collector *c, sl_collector_read_fn *fn, void *reader);

/* Requests held open waiting for a broker ack. */
size_t sl_collector_pending(const struct sl_collector *c);

/* The bound TCP port (useful with port 0). */
int sl_collector_port(const struct sl_collector *c);

/* Appends Prometheus text lines: sluice_collector_requests_total{result=...},
 * sluice_collector_events_total, sluice_collector_bytes_total,
 * sluice_collector_inflight, sluice_collector_unconsumed_bytes,
 * sluice_collector_ack_seconds_{sum,count}. */
void sl_collector_metrics(const struct sl_collector *c, struct sl_buf *out);

/* ==================== Request parsing (pure; tests, fuzzing) ==================== */

/* Checks a tp2 POST body: strict RFC 8259 JSON (valid UTF-8, depth <= 64,
 * numbers within a double's range as json.c reads them: 1e999 is bad_json)
 * holding an object whose "schema" is a string starting with
 * "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-" and whose
 * "data" is a non-empty array of objects; other members are allowed, a
 * repeated "schema" or "data" is not. The check is json.c's sl_json_scan, so
 * an accepted body is one the pipeline decodes. On SL_OK, key holds the first
 * event's "duid" (decoded; the last one when the event repeats it, as the
 * pipeline's decoder reads it; empty if it has none or it is not a string)
 * and *nevents the number of events. On SL_ERR, *reason is "bad_json" or "bad_payload". */
int sl_collector_check_payload(const char *body, size_t len, struct sl_buf *key,
                               size_t *nevents, const char **reason);

/* Percent-decodes s[0..n) onto out. "+" decodes to a space, as in HTML form
 * encoding and Snowplow's own collector; the JS tracker never sends a raw "+"
 * (encodeURIComponent writes %2B), so this only matters for hand-made pixel
 * URLs. A "%" not followed by two hex digits is an error (SL_ERR). */
int sl_collector_unescape(const char *s, size_t n, struct sl_buf *out);

/* Turns a GET /i query string into a payload_data 1-0-4 JSON object,
 * {"data":[{...}],"schema":"iglu:...payload_data/jsonschema/1-0-4"}, every
 * parameter a string, percent-decoded, keys in byte order (the bytes
 * lua/sluice/snowplow.lua's payload_from_query encodes to). Empty segments
 * and empty names are skipped; a repeated name keeps its last value, as
 * Snowplow's enrich reads a query string (a map of the pairs). Returns
 * SL_ERR on a bad escape, a decoded value that is not UTF-8, no parameter at
 * all, or more than SL_COLLECTOR_MAX_PARAMS. key gets the "duid" value. */
#define SL_COLLECTOR_MAX_PARAMS 256 /* Query parameters accepted in one GET. */
int sl_collector_query_to_payload(const char *qs, size_t n, struct sl_buf *out,
                                  struct sl_buf *key);

/* True for "application/json" with any parameters, case-insensitive. */
bool sl_collector_is_json_type(const char *content_type);

/* True if a request from origin may be answered: no Origin header (NULL),
 * an origin listed in conf (ASCII case-insensitive), or "*" listed. */
bool sl_collector_origin_allowed(const struct sl_collector_conf *conf,
                                 const char *origin);

/* Appends the Kafka record value: {"message":<message raw>,"collector":
 * {"receivedAt":ms,"origin":..,"userAgent":..,"ip":..}}; NULL fields are
 * left out, bytes of them that are not UTF-8 are written as U+FFFD
 * (sl_json_add_string_lossy). message must be valid JSON. */
void sl_collector_envelope(struct sl_buf *out, const char *message, size_t len,
                           int64_t received_at, const char *origin,
                           const char *user_agent, const char *ip);

/* SHA-256 (FIPS 180-4) of data[0..n). */
void sl_collector_sha256(const void *data, size_t n, unsigned char out[32]);

#endif
