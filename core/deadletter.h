/* deadletter.h -- the dead-letter record of an input that failed a step.
 *
 * A dead letter names its source record (topic, partition, offset,
 * timestamp, key), the step, the error, the rules version and when, and
 * carries the source's value so that `sluice replay` can put it back. It
 * always fits in one Kafka record of max_bytes (the producer's
 * message.max.bytes), whatever the value holds:
 * - JSON form, the usual one: the record value is
 *   {"source":{...},"value":<the value as a JSON string>,"step","error",
 *   "rulesVersion","at"}, or "valueBase64" for a value that is not UTF-8.
 * - raw form, when the JSON form would not fit (escaping can double a value
 *   full of quotes): the record value is the source value's bytes, and the
 *   same object, with "valueBytes" in place of the value, is the header
 *   SL_DEADLETTER_HEADER. A value that does not fit even raw is cut to what
 *   fits, and "valueTruncated":true says so: the whole value is still in the
 *   source topic at source.topic/partition/offset.
 * The error is cut to SL_DEADLETTER_ERROR_MAX bytes (on a UTF-8 boundary).
 * Uses json.c, step.c (string literals) and sl.h; no Kafka. */
#ifndef SL_DEADLETTER_H
#define SL_DEADLETTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "sl.h"

#define SL_DEADLETTER_HEADER "sluice.dead-letter" /* Header of the raw form: the metadata. */
#define SL_DEADLETTER_ERROR_MAX 16384             /* Longest error (with traceback) carried. */
#define SL_DEADLETTER_SLACK 512                   /* Bytes kept free of max_bytes for the record's framing. */

/* The source record of a dead letter (the caller's memory). */
struct sl_deadletter_src {
    const char *topic;       /* NULL: "" */
    int32_t partition;
    int64_t offset;
    int64_t timestamp;       /* ms, -1 when unknown */
    const void *key;         /* NULL: none */
    size_t keylen;
    const void *value;       /* NULL: none */
    size_t len;
    const char *extra;       /* more members after "error" (e.g. "http":{...}), or NULL */
};

/* What to produce. */
struct sl_deadletter {
    struct sl_buf json;      /* JSON form: the value; raw form: the header */
    bool raw;                /* raw form: value/len point into the source value */
    bool truncated;          /* raw form cut to fit */
    const void *value;       /* the record value to produce */
    size_t len;
};

/* Builds the dead letter of src for step and error into dl (whose json
 * buffer is reused; sl_buf_free(&dl->json) when done). L is any Lua state
 * with sl_json_init() done (its stack is left as it was). max_bytes bounds
 * key + value + header; 0: 1000000, librdkafka's default. */
void sl_deadletter_encode(lua_State *L, const struct sl_deadletter_src *src, const char *step,
                          const char *error, const char *rules_version, int64_t at_ms,
                          size_t max_bytes, struct sl_deadletter *dl);

#endif
