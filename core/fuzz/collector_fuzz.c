/* collector_fuzz.c -- libFuzzer target for the collector's request parsing.
 *
 * The first input byte picks the parser: payload check of a tp2 POST body,
 * GET query decoding, percent-decoding and header strings, or the
 * Content-Type and Origin checks; the rest is the input. Each result is checked for what the
 * contract promises: an accepted body or a built GET payload is itself a
 * valid payload, and a refused one leaves the outputs empty. */
#include "collector.h"
#include "json.h"
#include "sl.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct sl_buf key = {0}, out = {0}, key2 = {0};
    const char *in = (const char *)data + 1, *why = NULL;
    size_t n = size ? size - 1 : 0, events = 0, events2 = 0;

    if (size == 0) return 0;
    switch (data[0] % 4) {
    case 0:
        if (sl_collector_check_payload(in, n, &key, &events, &why) == SL_OK) {
            if (events == 0) abort();
            /* An accepted body goes into the envelope raw: it must stay valid. */
            sl_collector_envelope(&out, in, n, 1, "o", "u", NULL);
            if (sl_json_scan(out.data, out.len, 0, NULL, NULL, NULL, 0) != SL_OK) abort();
        } else if (key.len || !why) {
            abort();
        }
        break;
    case 1:
        if (sl_collector_query_to_payload(in, n, &out, &key) == SL_OK) {
            if (sl_collector_check_payload(out.data, out.len, &key2, &events2, &why) != SL_OK ||
                events2 != 1 || key2.len != key.len ||
                (key.len && memcmp(key.data, key2.data, key.len) != 0))
                abort();
        } else if (out.len || key.len) {
            abort();
        }
        break;
    case 2:
        if (sl_collector_unescape(in, n, &out) == SL_OK && out.len > n) abort();
        sl_buf_reset(&out);
        sl_json_add_string_lossy(&out, in, n);
        if (sl_collector_check_payload(out.data, out.len, &key, &events, &why) != SL_ERR ||
            strcmp(why, "bad_payload") != 0)
            abort(); /* a JSON string is valid JSON, not a payload */
        break;
    default: {
        char *s = strndup(in, n);
        const char *origins[] = {"http://127.0.0.1:8080"};
        struct sl_collector_conf conf = {.allowed_origins = origins, .norigins = 1};
        (void)sl_collector_is_json_type(s);
        (void)sl_collector_origin_allowed(&conf, s);
        free(s);
    }
    }
    sl_buf_free(&key);
    sl_buf_free(&key2);
    sl_buf_free(&out);
    return 0;
}
