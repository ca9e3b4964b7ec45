/* deadletter.c -- dead-letter records that always fit (see deadletter.h). */
#include "deadletter.h"
#include "json.h"
#include "step.h"

#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(struct sl_buf *b, const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        sl_buf_addc(b, b64[(v >> 18) & 63]);
        sl_buf_addc(b, b64[(v >> 12) & 63]);
        sl_buf_addc(b, i + 1 < n ? b64[(v >> 6) & 63] : '=');
        sl_buf_addc(b, i + 2 < n ? b64[v & 63] : '=');
    }
}

/* Appends {"source":{...}, */
static void add_source(lua_State *L, struct sl_buf *b, const struct sl_deadletter_src *src) {
    sl_buf_adds(b, "{\"source\":{\"topic\":");
    sl_step_json_str(L, b, src->topic ? src->topic : "", src->topic ? strlen(src->topic) : 0);
    sl_buf_printf(b, ",\"partition\":%d,\"offset\":%lld,\"timestamp\":%lld,\"key\":",
                  src->partition, (long long)src->offset, (long long)src->timestamp);
    if (src->key) sl_step_json_str(L, b, src->key, src->keylen);
    else sl_buf_adds(b, "null");
    sl_buf_adds(b, "},");
}

/* Appends ,"step":...,"error":...[,extra],"rulesVersion":...,"at":...} */
static void add_tail(lua_State *L, struct sl_buf *b, const char *step, const char *error,
                     size_t errlen, const char *extra, const char *version, int64_t at_ms) {
    sl_buf_adds(b, ",\"step\":");
    sl_step_json_str(L, b, step, strlen(step));
    sl_buf_adds(b, ",\"error\":");
    sl_step_json_str(L, b, error, errlen);
    if (extra && *extra) sl_buf_printf(b, ",%s", extra);
    sl_buf_printf(b, ",\"rulesVersion\":\"%s\",\"at\":%lld}", version, (long long)at_ms);
}

void sl_deadletter_encode(lua_State *L, const struct sl_deadletter_src *src, const char *step,
                          const char *error, const char *rules_version, int64_t at_ms,
                          size_t max_bytes, struct sl_deadletter *dl) {
    struct sl_buf *b = &dl->json;
    size_t limit = max_bytes ? max_bytes : 1000000, keylen = src->key ? src->keylen : 0;
    size_t room = limit > keylen + SL_DEADLETTER_SLACK ? limit - keylen - SL_DEADLETTER_SLACK : 0;
    size_t errlen = strlen(error), mark;
    char err[64];

    if (errlen > SL_DEADLETTER_ERROR_MAX) {
        errlen = SL_DEADLETTER_ERROR_MAX;
        while (errlen && ((unsigned char)error[errlen] & 0xc0) == 0x80) errlen--;
    }
    sl_buf_reset(b);
    add_source(L, b, src);
    mark = b->len;
    /* JSON form: the value as a string, or base64 when it is not UTF-8. */
    lua_pushlstring(L, src->value ? src->value : "", src->value ? src->len : 0);
    sl_buf_adds(b, "\"value\":");
    if (sl_json_encode(L, -1, b, err, sizeof(err))) {
        b->len = mark;
        sl_buf_adds(b, "\"valueBase64\":\"");
        base64(b, src->value, src->value ? src->len : 0);
        sl_buf_addc(b, '"');
    }
    lua_pop(L, 1);
    add_tail(L, b, step, error, errlen, src->extra, rules_version, at_ms);
    dl->raw = dl->truncated = false;
    dl->value = b->data;
    dl->len = b->len;
    if (b->len <= room) return;

    /* Raw form: the value as it came, the rest in the header; cut when even
     * that is too long. */
    dl->raw = true;
    dl->value = src->value;
    dl->len = src->value ? src->len : 0;
    for (int pass = 0; pass < 2; pass++) {
        b->len = mark;
        sl_buf_printf(b, "\"valueBytes\":%zu", src->value ? src->len : 0);
        if (dl->truncated) sl_buf_adds(b, ",\"valueTruncated\":true");
        add_tail(L, b, step, error, errlen, src->extra, rules_version, at_ms);
        if (b->len + dl->len <= room) break;
        dl->truncated = true;
        dl->len = room > b->len + 32 ? room - b->len - 32 : 0; /* 32: the marker's room */
    }
    sl_buf_cstr(b);
}
