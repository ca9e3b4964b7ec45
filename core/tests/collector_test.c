/* collector_test.c -- unit tests for the Snowplow collector.
 *
 * The pure parts (payload check, query decoding, CORS decision, envelope)
 * run on the real tracker captures in spec/fixtures/snowplow/. The HTTP part
 * runs the collector on a loop with a fake producer defined below (it
 * replaces kafka.c for this binary), driven by an evhttp client on the same
 * loop. Run from the repository root. */
#define _GNU_SOURCE
#include "collector.h"
#include "kafka.h"
#include "sl.h"
#include "test.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define FIX "spec/fixtures/snowplow/"

/* ==================== Fake producer ==================== */

struct fake_rec {
    char *key;            /* NULL: no key */
    size_t keylen;
    char *value;
    size_t vallen;
    int64_t ts;
    sl_kafka_delivery_fn *cb;
    void *opaque;
    bool reported;
};

struct sl_kafka_producer {
    bool up;
    const char *fault;    /* what sl_kafka_producer_fault says */
    struct fake_rec recs[64];
    size_t n;
    size_t acked;         /* records [0, acked) reported */
};

int sl_kafka_produce(struct sl_kafka_producer *p, const char *topic,
                     int32_t partition, const void *key, size_t keylen,
                     const void *value, size_t vallen, int64_t ts_ms,
                     sl_kafka_delivery_fn *cb, void *opaque,
                     char *err, size_t errlen) {
    struct fake_rec *r;
    (void)topic; (void)partition;
    if (p->n == 64) {
        sl_errf(err, errlen, "fake queue full");
        return SL_ERR;
    }
    r = &p->recs[p->n++];
    r->key = key ? sl_strndup(key, keylen) : NULL;
    r->keylen = keylen;
    r->value = sl_strndup(value, vallen);
    r->vallen = vallen;
    r->ts = ts_ms;
    r->cb = cb;
    r->opaque = opaque;
    r->reported = false;
    return SL_OK;
}

size_t sl_kafka_producer_inflight(const struct sl_kafka_producer *p) {
    return p->n - p->acked;
}
bool sl_kafka_producer_up(const struct sl_kafka_producer *p) { return p->up; }
const char *sl_kafka_producer_fault(const struct sl_kafka_producer *p) { return p->fault; }
void sl_kafka_producer_on_restart(struct sl_kafka_producer *p, sl_kafka_restart_fn *fn,
                                  void *arg) {
    (void)p; (void)fn; (void)arg;
}
struct rd_kafka_s *sl_kafka_producer_handle(struct sl_kafka_producer *p) {
    (void)p;
    return NULL;
}

/* Reports every unreported record, as the broker would. */
static void fake_report(struct sl_kafka_producer *p, const char *err) {
    for (; p->acked < p->n; p->acked++) {
        struct fake_rec *r = &p->recs[p->acked];
        r->reported = true;
        r->cb(r->opaque, err, 0, err ? -1 : (int64_t)p->acked);
    }
}

static void fake_clear(struct sl_kafka_producer *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->recs[i].key);
        free(p->recs[i].value);
    }
    p->n = p->acked = 0;
}

/* ==================== Helpers ==================== */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    struct sl_buf b = {0};
    char chunk[4096];
    size_t n;
    if (!f) { fprintf(stderr, "# cannot open %s\n", path); exit(2); }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) sl_buf_add(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return b.data ? b.data : sl_strdup("");
}

/* Decodes the JSON string starting at s (after the opening quote) into out.
 * Enough for the "body" fields of the capture files. */
static void decode_jstr(const char *s, struct sl_buf *out) {
    for (; *s && *s != '"'; s++) {
        if (*s != '\\') { sl_buf_addc(out, *s); continue; }
        s++;
        switch (*s) {
        case 'n': sl_buf_addc(out, '\n'); break;
        case 't': sl_buf_addc(out, '\t'); break;
        case 'r': sl_buf_addc(out, '\r'); break;
        case 'u': {
            unsigned cp;
            sscanf(s + 1, "%4x", &cp);
            s += 4;
            if (cp < 0x80) sl_buf_addc(out, (char)cp);
            else if (cp < 0x800) {
                sl_buf_addc(out, (char)(0xc0 | cp >> 6));
                sl_buf_addc(out, (char)(0x80 | (cp & 0x3f)));
            } else {
                sl_buf_addc(out, (char)(0xe0 | cp >> 12));
                sl_buf_addc(out, (char)(0x80 | ((cp >> 6) & 0x3f)));
                sl_buf_addc(out, (char)(0x80 | (cp & 0x3f)));
            }
            break;
        }
        default: sl_buf_addc(out, *s);
        }
    }
}

static int check(const char *body, struct sl_buf *key, size_t *n, const char **why) {
    *why = "";
    return sl_collector_check_payload(body, strlen(body), key, n, why);
}

static bool has(const char *hay, const char *needle) {
    return hay && strstr(hay, needle) != NULL;
}

/* ==================== Pure parts ==================== */

static void test_sha256(void) {
    static const struct { const char *in, *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        unsigned char d[32];
        char hex[65];
        sl_collector_sha256(v[i].in, strlen(v[i].in), d);
        for (int k = 0; k < 32; k++) sprintf(hex + 2 * k, "%02x", d[k]);
        TEST("sha256 matches the FIPS 180-4 example", strcmp(hex, v[i].hex) == 0);
    }
}

static void test_unescape(void) {
    struct sl_buf b = {0};
    TEST("%E2%80%93 decodes to the UTF-8 en dash",
         sl_collector_unescape("a%E2%80%93b", 11, &b) == SL_OK &&
         b.len == 5 && memcmp(b.data, "a\xe2\x80\x93" "b", 5) == 0);
    sl_buf_reset(&b);
    TEST("lower-case hex decodes", sl_collector_unescape("%e2%80%93", 9, &b) == SL_OK &&
         b.len == 3 && memcmp(b.data, "\xe2\x80\x93", 3) == 0);
    sl_buf_reset(&b);
    TEST("+ decodes to a space", sl_collector_unescape("a+b", 3, &b) == SL_OK &&
         strcmp(b.data, "a b") == 0);
    sl_buf_reset(&b);
    TEST("%2B decodes to a plus", sl_collector_unescape("%2B", 3, &b) == SL_OK &&
         strcmp(b.data, "+") == 0);
    sl_buf_reset(&b);
    TEST("%00 decodes to a NUL byte", sl_collector_unescape("%00", 3, &b) == SL_OK &&
         b.len == 1 && b.data[0] == 0);
    static const char *bad[] = {"%", "%2", "a%2", "%zz", "%G0", "%0g", "%%41"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sl_buf_reset(&b);
        TEST("a bad escape is refused",
             sl_collector_unescape(bad[i], strlen(bad[i]), &b) == SL_ERR);
    }
    sl_buf_free(&b);
}

static void test_query(void) {
    struct sl_buf out = {0}, key = {0}, k2 = {0};
    size_t qlen, n;
    const char *why;
    char *qs = slurp(FIX "get-i-product.querystring.txt", &qlen);

    TEST("the captured GET query becomes a payload",
         sl_collector_query_to_payload(qs, qlen, &out, &key) == SL_OK);
    static const char tail[] = "}],\"schema\":\"iglu:com.snowplowanalytics.snowplow/"
        "payload_data/jsonschema/1-0-4\"}";
    TEST("payload ends with the payload_data 1-0-4 schema (keys in byte order)",
         out.len > sizeof(tail) && strcmp(out.data + out.len - (sizeof(tail) - 1), tail) == 0);
    TEST("the event's keys are in byte order, as the sorted encoders write them",
         strncmp(out.data, "{\"data\":[{\"aid\":", 16) == 0 &&
         has(out.data, "\"stm\":\"1795667685709\","));
    TEST("the page title is percent-decoded with its en dash",
         has(out.data, "\"page\":\"Classic Leather Sneaker \xe2\x80\x93 NU Demo Store\""));
    TEST("the url is decoded",
         has(out.data, "\"url\":\"http://127.0.0.1:8080/products/classic-leather-sneaker\""));
    TEST("cx stays base64url", has(out.data, "\"cx\":\"eyJzY2hlbWEiOiJpZ2x1"));
    TEST("the key is the duid", key.len == 36 &&
         memcmp(key.data, "36a64dd0-0746-4b4c-93e4-b284312026b5", 36) == 0);
    TEST("the built payload passes the POST check",
         sl_collector_check_payload(out.data, out.len, &k2, &n, &why) == SL_OK && n == 1 &&
         k2.len == 36 && memcmp(k2.data, key.data, 36) == 0);
    free(qs);

    sl_buf_reset(&out);
    /* Snowplow's enrich reads a query string as a map of its pairs, and so does
     * lua/sluice/snowplow.lua's decode_query: the last value of a name wins. */
    TEST("a repeated name keeps the last value; empty segments and names are skipped",
         sl_collector_query_to_payload("e=pv&&e=pp&=x&a&b=1%2B1+2", 25, &out, &key) == SL_OK &&
         strcmp(out.data, "{\"data\":[{\"a\":\"\",\"b\":\"1+1 2\",\"e\":\"pp\"}],"
                "\"schema\":\"iglu:com.snowplowanalytics.snowplow/payload_data/"
                "jsonschema/1-0-4\"}") == 0);
    TEST("no duid, no key", key.len == 0);
    sl_buf_reset(&out);
    TEST("a repeated duid keys the record by its last value",
         sl_collector_query_to_payload("duid=a&e=pv&duid=b", 18, &out, &key) == SL_OK &&
         key.len == 1 && key.data[0] == 'b' && has(out.data, "\"duid\":\"b\""));
    sl_buf_reset(&out);
    TEST("a later repeat of a name must be UTF-8 too (it is the value kept)",
         sl_collector_query_to_payload("e=pv&e=%FF", 10, &out, &key) == SL_ERR);
    sl_buf_reset(&out);
    TEST("keys sort by bytes, a prefix first, as the sorted encoders sort them",
         sl_collector_query_to_payload("ab=1&a=2&B=3&%C3%A9=4", 21, &out, &key) == SL_OK &&
         strncmp(out.data, "{\"data\":[{\"B\":\"3\",\"a\":\"2\",\"ab\":\"1\",\"\xc3\xa9\":\"4\"}]", 40) == 0);
    sl_buf_reset(&out);
    TEST("quotes and control bytes are escaped as json.c escapes them",
         sl_collector_query_to_payload("q=%22%5C%0A%01%08%0C", 20, &out, &key) == SL_OK &&
         has(out.data, "\"q\":\"\\\"\\\\\\n\\u0001\\b\\f\""));
    static const char *bad[] = {"", "&&&", "=x", "e=%ZZ", "e=pv&url=%E2%80", "e=%FF",
                                "%C0%80=1", "e=%ED%A0%80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sl_buf_reset(&out);
        sl_buf_adds(&out, "keep");
        TEST("a bad query is refused and leaves out as it was",
             sl_collector_query_to_payload(bad[i], strlen(bad[i]), &out, &key) == SL_ERR &&
             strcmp(out.data, "keep") == 0 && key.len == 0);
    }
    struct sl_buf many = {0};
    for (int i = 0; i <= SL_COLLECTOR_MAX_PARAMS; i++) sl_buf_printf(&many, "p%d=1&", i);
    sl_buf_reset(&out);
    TEST("more than SL_COLLECTOR_MAX_PARAMS parameters are refused",
         sl_collector_query_to_payload(many.data, many.len, &out, &key) == SL_ERR);
    sl_buf_free(&many);
    sl_buf_free(&out);
    sl_buf_free(&key);
    sl_buf_free(&k2);
}

/* Every POST body of a capture file passes the check, with its duid as key. */
static void check_capture_file(const char *path, size_t want_posts) {
    size_t len, posts = 0, ok = 0, events = 0;
    char *all = slurp(path, &len);
    struct sl_buf body = {0}, key = {0};
    for (char *line = all; line && *line; ) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *b = strstr(line, "\"body\": \"");
        if (b && strstr(line, "\"method\": \"POST\"")) {
            size_t n;
            const char *why;
            sl_buf_reset(&body);
            decode_jstr(b + 9, &body);
            posts++;
            char *d = strstr(body.data, "\"duid\":\"");
            if (sl_collector_check_payload(body.data, body.len, &key, &n, &why) == SL_OK &&
                d && key.len == 36 && memcmp(key.data, d + 8, 36) == 0)
                ok++;
            events += n;
        }
        line = nl ? nl + 1 : NULL;
    }
    printf("# %s: %zu POSTs, %zu events\n", path, posts, events);
    TEST("every captured POST body is accepted with its duid", posts == want_posts &&
         ok == posts);
    sl_buf_free(&body);
    sl_buf_free(&key);
    free(all);
}

static void test_payload(void) {
    struct sl_buf key = {0};
    size_t len, n;
    const char *why;
    char *body = slurp(FIX "tp2-post-product.body.raw", &len);

    TEST("the captured single POST body is accepted",
         sl_collector_check_payload(body, len, &key, &n, &why) == SL_OK && n == 1);
    TEST("its key is the duid", key.len == 36 &&
         memcmp(key.data, "4f1195b8-6b68-4cd6-a7eb-925bd120e8ad", 36) == 0);
    size_t prefixes_ok = 0;
    for (size_t i = 0; i < len; i++)
        if (sl_collector_check_payload(body, i, &key, &n, &why) == SL_ERR &&
            strcmp(why, "bad_json") == 0 && key.len == 0)
            prefixes_ok++;
    TEST("every truncation of the body is bad_json", prefixes_ok == len);
    free(body);

    body = slurp(FIX "tp2-post-batch3.body.raw", &len);
    TEST("the captured batch of 3 is accepted with 3 events",
         sl_collector_check_payload(body, len, &key, &n, &why) == SL_OK && n == 3);
    free(body);
    body = slurp(FIX "tp2-post-batch3.body.pretty.json", &len);
    TEST("the pretty-printed batch (whitespace) is accepted",
         sl_collector_check_payload(body, len, &key, &n, &why) == SL_OK && n == 3);
    free(body);
    check_capture_file(FIX "post-pageviews.requests.jsonl", 5);
    check_capture_file(FIX "batch-bufferSize3.requests.jsonl", 6);

#define S "\"schema\":\"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4\""
    static const struct { const char *body, *why; } bad[] = {
        {"", "bad_json"}, {"   ", "bad_json"}, {"{", "bad_json"}, {"nul", "bad_json"},
        {"{" S ",\"data\":[{}]} x", "bad_json"},
        {"{" S ",\"data\":[{},]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":01}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":1.}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":-}]}", "bad_json"},
        /* Beyond a double: what json.c cannot decode is refused here. */
        {"{" S ",\"data\":[{\"a\":1e999}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":-1e400}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":1.2e329}]}", "bad_json"},
        {"{" S ",\"data\":[{\"co\":[1e999]}],\"x\":0}", "bad_json"},
        {"{\"x\":1e309," S ",\"data\":[{}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":\"\x01\"}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":\"\xff\"}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":\"\xc0\x80\"}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":\"\xed\xa0\x80\"}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":\"\\ud800\"}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":\"\\udc00\"}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":\"\\x\"}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\":tru}]}", "bad_json"},
        {"{" S ",\"data\":[{'a':1}]}", "bad_json"},
        {"{" S ",\"data\":[{\"a\" 1}]}", "bad_json"},
        {"\xef\xbb\xbf{" S ",\"data\":[{}]}", "bad_json"},
        {"[]", "bad_payload"}, {"\"x\"", "bad_payload"}, {"{}", "bad_payload"},
        {"{\"data\":[{}]}", "bad_payload"},
        {"{" S "}", "bad_payload"},
        {"{" S ",\"data\":[]}", "bad_payload"},
        {"{" S ",\"data\":{}}", "bad_payload"},
        {"{" S ",\"data\":[{},1]}", "bad_payload"},
        {"{" S ",\"data\":[null]}", "bad_payload"},
        {"{" S ",\"data\":[{}],\"data\":[{}]}", "bad_payload"},
        {"{" S "," S ",\"data\":[{}]}", "bad_payload"},
        {"{\"schema\":1,\"data\":[{}]}", "bad_payload"},
        {"{\"schema\":\"iglu:com.acme/payload_data/jsonschema/1-0-4\",\"data\":[{}]}",
         "bad_payload"},
        {"{\"schema\":\"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/2-0-0\","
         "\"data\":[{}]}", "bad_payload"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = check(bad[i].body, &key, &n, &why);
        if (r != SL_ERR || strcmp(why, bad[i].why) != 0)
            printf("# body %zu: got %s, want %s\n", i, why, bad[i].why);
        TEST("a bad body is refused with its reason",
             r == SL_ERR && strcmp(why, bad[i].why) == 0 && key.len == 0);
    }
    TEST("a body with a NUL byte inside is bad_json",
         sl_collector_check_payload("{\"a\":\0}", 7, &key, &n, &why) == SL_ERR &&
         strcmp(why, "bad_json") == 0);

    TEST("numbers a double holds are accepted (1.7e308, -1e-400 underflows to 0)",
         check("{" S ",\"data\":[{\"a\":1.7e308,\"b\":-1e-400,\"c\":-0.0e+5}]}",
               &key, &n, &why) == SL_OK && n == 1);

    struct sl_buf deep = {0};
    sl_buf_adds(&deep, "{" S ",\"data\":[{\"a\":");
    for (int i = 0; i < 100000; i++) sl_buf_addc(&deep, '[');
    TEST("a nesting bomb is refused without recursion to the bottom",
         sl_collector_check_payload(deep.data, deep.len, &key, &n, &why) == SL_ERR);
    sl_buf_reset(&deep);
    sl_buf_adds(&deep, "{" S ",\"data\":[{\"a\":");
    for (int i = 0; i < 60; i++) sl_buf_addc(&deep, '[');
    for (int i = 0; i < 60; i++) sl_buf_addc(&deep, ']');
    sl_buf_adds(&deep, "}]}");
    TEST("nesting of 63 levels is accepted",
         sl_collector_check_payload(deep.data, deep.len, &key, &n, &why) == SL_OK);
    sl_buf_free(&deep);

    TEST("escaped member names count: d\\u0061ta is data, \\u0064uid is duid",
         check("{\"sche\\u006da\":\"iglu:com.snowplowanalytics.snowplow/payload_data/"
               "jsonschema/1-0-3\",\"d\\u0061ta\":[{\"\\u0064uid\":\"a\\u00e9\\ud83d\\ude00\\/\"}]}",
               &key, &n, &why) == SL_OK &&
         strcmp(key.data, "a\xc3\xa9\xf0\x9f\x98\x80/") == 0);
    TEST("a non-string duid gives no key, other members and values are fine",
         check(" {\"x\":[1,-2.5e+3,true,false,null,{}], " S " , \"data\" : [ {\"duid\":7},"
               "{\"duid\":\"z\"} ] } ", &key, &n, &why) == SL_OK && key.len == 0 && n == 2);
    /* json.c's decoder keeps the last of repeated keys: the record is keyed by
     * the duid the pipeline reads. */
    TEST("the first event's last duid wins, as the pipeline decodes it",
         check("{" S ",\"data\":[{\"duid\":\"a\",\"duid\":\"b\"},{\"duid\":\"c\"}]}",
               &key, &n, &why) == SL_OK && strcmp(key.data, "b") == 0);
    TEST("a last duid that is not a string leaves no key",
         check("{" S ",\"data\":[{\"duid\":\"a\",\"duid\":null}]}",
               &key, &n, &why) == SL_OK && key.len == 0);
    TEST("a duid nested deeper in the event is not the key",
         check("{" S ",\"data\":[{\"x\":{\"duid\":\"a\"},\"y\":[\"duid\",\"b\"]}]}",
               &key, &n, &why) == SL_OK && key.len == 0);
    TEST("a schema member inside an event is not the payload's",
         check("{\"data\":[{\"schema\":1}]," S "}", &key, &n, &why) == SL_OK && n == 1);
#undef S
    sl_buf_free(&key);
}

static void test_headers(void) {
    const char *origins[] = {"http://127.0.0.1:8080", "https://shop.example"};
    const char *star[] = {"*"};
    struct sl_collector_conf conf = {.allowed_origins = origins, .norigins = 2};
    struct sl_collector_conf any = {.allowed_origins = star, .norigins = 1};
    struct sl_collector_conf none = {0};

    TEST("application/json is JSON", sl_collector_is_json_type("application/json"));
    TEST("the tracker's content-type is JSON",
         sl_collector_is_json_type("application/json; charset=UTF-8"));
    TEST("case and spaces do not matter",
         sl_collector_is_json_type(" Application/JSON ;charset=utf-8"));
    TEST("no content-type is not JSON", !sl_collector_is_json_type(NULL));
    TEST("text/plain is not JSON", !sl_collector_is_json_type("text/plain"));
    TEST("application/jsonx is not JSON", !sl_collector_is_json_type("application/jsonx"));
    TEST("application/json-patch+json is not JSON",
         !sl_collector_is_json_type("application/json-patch+json"));

    TEST("no Origin is allowed", sl_collector_origin_allowed(&none, NULL));
    TEST("a listed origin is allowed",
         sl_collector_origin_allowed(&conf, "http://127.0.0.1:8080"));
    TEST("origins compare case-insensitively",
         sl_collector_origin_allowed(&conf, "HTTPS://Shop.Example"));
    TEST("an unlisted origin is refused",
         !sl_collector_origin_allowed(&conf, "http://127.0.0.1:8081"));
    TEST("a prefix of a listed origin is refused",
         !sl_collector_origin_allowed(&conf, "http://127.0.0.1:80"));
    TEST("\"null\" is refused unless listed", !sl_collector_origin_allowed(&conf, "null"));
    TEST("an empty list refuses every origin",
         !sl_collector_origin_allowed(&none, "http://127.0.0.1:8080"));
    TEST("a listed * allows any origin",
         sl_collector_origin_allowed(&any, "https://evil.example"));
}

static void test_envelope(void) {
    struct sl_buf b = {0};
    sl_collector_envelope(&b, "{\"a\":1}", 7, 1795667685709, "http://127.0.0.1:8080",
                          "Mozilla \"5\"\\\n\x01\xff\xe2\x80\x93", "10.0.0.1");
    TEST("the envelope carries message raw and escaped collector fields",
         strcmp(b.data, "{\"message\":{\"a\":1},\"collector\":{\"receivedAt\":1795667685709,"
                "\"origin\":\"http://127.0.0.1:8080\",\"userAgent\":\"Mozilla \\\"5\\\"\\\\\\n"
                "\\u0001\xef\xbf\xbd\xe2\x80\x93\",\"ip\":\"10.0.0.1\"}}") == 0);
    sl_buf_reset(&b);
    sl_collector_envelope(&b, "{}", 2, 5, NULL, NULL, NULL);
    TEST("absent fields are left out",
         strcmp(b.data, "{\"message\":{},\"collector\":{\"receivedAt\":5}}") == 0);
    sl_buf_reset(&b);
    TEST("each byte of a truncated sequence in a header becomes U+FFFD",
         (sl_collector_envelope(&b, "{}", 2, 5, NULL, "a\xe2\x80", NULL), 1) &&
         strcmp(b.data, "{\"message\":{},\"collector\":{\"receivedAt\":5,"
                "\"userAgent\":\"a\xef\xbf\xbd\xef\xbf\xbd\"}}") == 0);
    sl_buf_reset(&b);
    sl_collector_envelope(&b, "{}", 2, 5, NULL, "\xf0\x9f\x98\x80", NULL);
    TEST("4-byte UTF-8 in a header passes through",
         strcmp(b.data, "{\"message\":{},\"collector\":{\"receivedAt\":5,"
                "\"userAgent\":\"\xf0\x9f\x98\x80\"}}") == 0);
    sl_buf_free(&b);
}

/* ==================== Over HTTP ==================== */

static struct event_base *base;
static int port;

struct resp {
    bool done;
    int code;
    struct sl_buf body;
    char acao[128], acac[16], vary[32], ctype[64], acah[128], acam[64], maxage[16];
};

static void copy_hdr(struct evkeyvalq *h, const char *name, char *dst, size_t n) {
    const char *v = evhttp_find_header(h, name);
    snprintf(dst, n, "%s", v ? v : "");
}

static void on_resp(struct evhttp_request *req, void *arg) {
    struct resp *r = arg;
    r->done = true;
    if (!req) return;
    r->code = evhttp_request_get_response_code(req);
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(b);
    if (n) sl_buf_add(&r->body, evbuffer_pullup(b, -1), n);
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    copy_hdr(h, "Access-Control-Allow-Origin", r->acao, sizeof(r->acao));
    copy_hdr(h, "Access-Control-Allow-Credentials", r->acac, sizeof(r->acac));
    copy_hdr(h, "Vary", r->vary, sizeof(r->vary));
    copy_hdr(h, "Content-Type", r->ctype, sizeof(r->ctype));
    copy_hdr(h, "Access-Control-Allow-Headers", r->acah, sizeof(r->acah));
    copy_hdr(h, "Access-Control-Allow-Methods", r->acam, sizeof(r->acam));
    copy_hdr(h, "Access-Control-Max-Age", r->maxage, sizeof(r->maxage));
}

struct call {
    struct evhttp_connection *conn;
    struct resp r;
};

/* Starts one request on its own connection. hdrs is "Name", "value", ...,
 * NULL. */
static void start(struct call *c, enum evhttp_cmd_type cmd, const char *uri,
                  const char *const *hdrs, const char *body, size_t len) {
    memset(c, 0, sizeof(*c));
    c->conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", (unsigned short)port);
    struct evhttp_request *req = evhttp_request_new(on_resp, &c->r);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", "127.0.0.1");
    for (; hdrs && *hdrs; hdrs += 2) evhttp_add_header(h, hdrs[0], hdrs[1]);
    if (body) evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    evhttp_make_request(c->conn, req, cmd, uri);
}

static void run_ms(int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void wait_for(struct call *c) {
    for (int i = 0; i < 200 && !c->r.done; i++) run_ms(10);
}

static void finish(struct call *c) {
    evhttp_connection_free(c->conn);
    sl_buf_free(&c->r.body);
}

/* One request, waited for. */
static void call(struct call *c, enum evhttp_cmd_type cmd, const char *uri,
                 const char *const *hdrs, const char *body, size_t len) {
    start(c, cmd, uri, hdrs, body, len);
    wait_for(c);
}

static const char *const tracker_post[] = {
    "Origin", "http://127.0.0.1:8080",
    "content-type", "application/json; charset=UTF-8",
    "User-Agent", "Mozilla/5.0 HeadlessChrome/156.0.0.0",
    NULL};

static bool cors_ok(const struct resp *r) {
    return strcmp(r->acao, "http://127.0.0.1:8080") == 0 && strcmp(r->acac, "true") == 0 &&
           strcmp(r->vary, "Origin") == 0;
}

static uint64_t metric(struct sl_collector *col, const char *line) {
    struct sl_buf m = {0};
    unsigned long long v = 0;
    sl_collector_metrics(col, &m);
    char want[256];
    snprintf(want, sizeof(want), "\n%s ", line);
    const char *at = strstr(m.data, want);
    if (at) sscanf(at + strlen(want), "%llu", &v);
    sl_buf_free(&m);
    return v;
}

static void test_http(void) {
    const char *origins[] = {"http://127.0.0.1:8080"};
    struct sl_collector_conf conf = {
        .listen = "127.0.0.1:0", .topic = "t", .allowed_origins = origins,
        .norigins = 1, .max_body = 4096, .ip = SL_COLLECTOR_IP_KEEP, .max_inflight = 3,
    };
    struct sl_kafka_producer fake = {.up = true};
    char err[SL_ERRLEN];
    size_t blen, qlen;
    char *body = slurp(FIX "tp2-post-product.body.raw", &blen);
    char *qs = slurp(FIX "get-i-product.querystring.txt", &qlen);
    struct call a, b, c, d;
    int64_t t0 = sl_now_ms();

    base = event_base_new();
    struct sl_collector *col = sl_collector_create(base, &conf, &fake, err, sizeof(err));
    TEST("the collector starts on an ephemeral port", col != NULL);
    if (!col) { printf("# %s\n", err); return; }
    port = sl_collector_port(col);
    TEST("it reports its port", port > 0);

    /* POST: held until the ack, then 200 with CORS. */
    start(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post,
          body, blen);
    run_ms(100);
    TEST("a POST is not answered before the broker ack", !a.r.done);
    TEST("it produced one record", fake.n == 1 && sl_collector_pending(col) == 1);
    struct fake_rec *r = &fake.recs[0];
    TEST("the record key is the first event's duid", r->key && r->keylen == 36 &&
         memcmp(r->key, "4f1195b8-6b68-4cd6-a7eb-925bd120e8ad", 36) == 0);
    TEST("the record timestamp is the receive time", r->ts >= t0 && r->ts <= sl_now_ms());
    TEST("the message is the body as received",
         strncmp(r->value, "{\"message\":", 11) == 0 && memcmp(r->value + 11, body, blen) == 0);
    char tail[256];
    snprintf(tail, sizeof(tail), ",\"collector\":{\"receivedAt\":%lld,\"origin\":"
             "\"http://127.0.0.1:8080\",\"userAgent\":\"Mozilla/5.0 HeadlessChrome/156.0.0.0\","
             "\"ip\":\"127.0.0.1\"}}", (long long)r->ts);
    TEST("collector metadata follows the message", strcmp(r->value + 11 + blen, tail) == 0);
    fake_report(&fake, NULL);
    wait_for(&a);
    TEST("after the ack the tracker gets 200", a.r.code == 200 && cors_ok(&a.r));
    TEST("the POST answer is ok", a.r.body.len == 3 && memcmp(a.r.body.data, "ok\n", 3) == 0);
    TEST("nothing is pending", sl_collector_pending(col) == 0);
    finish(&a);

    /* GET /i: payload built from the query, GIF answer. */
    char uri[2048];
    snprintf(uri, sizeof(uri), "/i?%s", qs);
    const char *get_hdrs[] = {"Origin", "http://127.0.0.1:8080", NULL};
    start(&a, EVHTTP_REQ_GET, uri, get_hdrs, NULL, 0);
    run_ms(50);
    TEST("a GET is held too", !a.r.done && fake.n == 2);
    r = &fake.recs[1];
    static const char ghead[] = "{\"message\":{\"data\":[{\"aid\":";
    TEST("the GET record carries a payload_data object",
         strncmp(r->value, ghead, sizeof(ghead) - 1) == 0 &&
         has(r->value, "}],\"schema\":\"iglu:com.snowplowanalytics.snowplow/payload_data/"
             "jsonschema/1-0-4\"},\"collector\":"));
    TEST("the GET record key is the duid", r->key &&
         strcmp(r->key, "36a64dd0-0746-4b4c-93e4-b284312026b5") == 0);
    fake_report(&fake, NULL);
    wait_for(&a);
    TEST("the GET gets a 43-byte GIF with CORS", a.r.code == 200 && cors_ok(&a.r) &&
         strcmp(a.r.ctype, "image/gif") == 0 && a.r.body.len == 43 &&
         memcmp(a.r.body.data, "GIF89a", 6) == 0);
    finish(&a);

    /* Preflight. */
    const char *pre[] = {"Origin", "http://127.0.0.1:8080",
                         "Access-Control-Request-Method", "POST",
                         "Access-Control-Request-Headers", "content-type", NULL};
    call(&a, EVHTTP_REQ_OPTIONS, "/com.snowplowanalytics.snowplow/tp2", pre, NULL, 0);
    TEST("the preflight answers 200 with CORS", a.r.code == 200 && cors_ok(&a.r));
    TEST("it allows the tracker's headers and methods",
         strcmp(a.r.acah, "Content-Type, SP-Anonymous") == 0 &&
         strcmp(a.r.acam, "POST, GET, OPTIONS") == 0 && atoi(a.r.maxage) > 0);
    finish(&a);
    call(&a, EVHTTP_REQ_OPTIONS, "/i", pre, NULL, 0);
    TEST("OPTIONS /i is a preflight too", a.r.code == 200 && cors_ok(&a.r));
    finish(&a);

    /* Refusals: counted, CORS on every answer, nothing produced. */
    size_t before = fake.n;
    const char *evil[] = {"Origin", "https://evil.example", "Content-Type",
                          "application/json", NULL};
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", evil, body, blen);
    TEST("another origin gets 403 without CORS headers", a.r.code == 403 && !a.r.acao[0]);
    finish(&a);
    call(&a, EVHTTP_REQ_OPTIONS, "/com.snowplowanalytics.snowplow/tp2", evil, NULL, 0);
    TEST("its preflight gets 403 too", a.r.code == 403 && !a.r.acao[0]);
    finish(&a);
    const char *text[] = {"Origin", "http://127.0.0.1:8080", "Content-Type", "text/plain", NULL};
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", text, body, blen);
    TEST("text/plain gets 415 with CORS", a.r.code == 415 && cors_ok(&a.r));
    finish(&a);
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", get_hdrs, body, blen);
    TEST("no content-type gets 415", a.r.code == 415 && cors_ok(&a.r));
    finish(&a);
    const char *gz[] = {"Origin", "http://127.0.0.1:8080", "Content-Type", "application/json",
                        "Content-Encoding", "gzip", NULL};
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", gz, body, blen);
    TEST("a gzip body gets 415", a.r.code == 415);
    finish(&a);
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen - 1);
    TEST("a truncated body gets 400 bad_json with CORS", a.r.code == 400 && cors_ok(&a.r) &&
         has(a.r.body.data, "bad_json"));
    finish(&a);
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, "[1]", 3);
    TEST("JSON that is no payload gets 400 bad_payload", a.r.code == 400 &&
         has(a.r.body.data, "bad_payload"));
    finish(&a);
    char *big = sl_calloc(1, 4097 * 4 + 2);
    memset(big, ' ', 4097);
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, big, 4097);
    TEST("a body over max_body gets 413 with CORS", a.r.code == 413 && cors_ok(&a.r));
    finish(&a);
    memset(big, ' ', 4097 * 4 + 1);
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, big,
         4097 * 4 + 1);
    TEST("a body far over max_body gets 413 with CORS too", a.r.code == 413 && cors_ok(&a.r));
    finish(&a);
    free(big);
    call(&a, EVHTTP_REQ_GET, "/i?e=pv&page=%E2%80", get_hdrs, NULL, 0);
    TEST("a GET with a broken escape gets 400 with CORS", a.r.code == 400 && cors_ok(&a.r));
    finish(&a);
    call(&a, EVHTTP_REQ_GET, "/i?e=%zz", get_hdrs, NULL, 0);
    TEST("a GET with a bad escape gets 400", a.r.code == 400);
    finish(&a);
    call(&a, EVHTTP_REQ_GET, "/i", get_hdrs, NULL, 0);
    TEST("a GET without parameters gets 400", a.r.code == 400);
    finish(&a);
    call(&a, EVHTTP_REQ_GET, "/com.snowplowanalytics.snowplow/tp2", get_hdrs, NULL, 0);
    TEST("GET on the POST path gets 404 with CORS", a.r.code == 404 && cors_ok(&a.r));
    finish(&a);
    call(&a, EVHTTP_REQ_GET, "/nope", NULL, NULL, 0);
    TEST("an unknown path gets 404", a.r.code == 404);
    finish(&a);
    call(&a, EVHTTP_REQ_GET, "/health", NULL, NULL, 0);
    TEST("/health answers 200", a.r.code == 200);
    finish(&a);
    fake.fault = "Kafka producer sink failed and cannot be replaced: no memory";
    call(&a, EVHTTP_REQ_GET, "/health", NULL, NULL, 0);
    TEST("/health answers 503 naming why while the producer has no working handle",
         a.r.code == 503 && has(a.r.body.data, "cannot be replaced: no memory"));
    finish(&a);
    fake.fault = NULL;
    TEST("no refused request produced anything", fake.n == before);

    /* No Origin (curl, servers): allowed, no CORS headers. */
    const char *curl[] = {"Content-Type", "application/json", NULL};
    start(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", curl, body, blen);
    run_ms(50);
    TEST("a request without Origin is accepted", fake.n == before + 1);
    TEST("and has no origin in its record", !has(fake.recs[fake.n - 1].value, "\"origin\""));
    fake_report(&fake, NULL);
    wait_for(&a);
    TEST("it gets 200 without ACAO", a.r.code == 200 && !a.r.acao[0]);
    finish(&a);

    /* Kafka failures: 503 so the tracker retries. */
    start(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen);
    run_ms(50);
    fake_report(&fake, "Broker: Not enough in-sync replicas");
    wait_for(&a);
    TEST("a failed delivery gets 503 with CORS", a.r.code == 503 && cors_ok(&a.r));
    finish(&a);
    fake.up = false;
    before = fake.n;
    call(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen);
    TEST("broker down: 503 at once, nothing produced", a.r.code == 503 && fake.n == before &&
         has(a.r.body.data, "unavailable"));
    finish(&a);
    fake.up = true;
    start(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen);
    start(&b, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen);
    start(&c, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen);
    run_ms(100);
    TEST("three requests are in flight", sl_collector_pending(col) == 3);
    call(&d, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen);
    TEST("over max_inflight: 503 at once", d.r.code == 503 && has(d.r.body.data, "overloaded"));
    finish(&d);
    fake_report(&fake, NULL);
    wait_for(&a); wait_for(&b); wait_for(&c);
    TEST("broker back: the held ones get 200",
         a.r.code == 200 && b.r.code == 200 && c.r.code == 200);
    finish(&a); finish(&b); finish(&c);

    TEST("metrics count ok answers",
         metric(col, "sluice_collector_requests_total{result=\"ok\"}") == 6);
    TEST("metrics count forbidden origins",
         metric(col, "sluice_collector_requests_total{result=\"forbidden_origin\"}") == 2);
    TEST("metrics count bad content types",
         metric(col, "sluice_collector_requests_total{result=\"bad_content_type\"}") == 3);
    TEST("metrics count every too large body",
         metric(col, "sluice_collector_requests_total{result=\"too_large\"}") == 2);
    TEST("metrics count events", metric(col, "sluice_collector_events_total") == 6);

    /* Destroy with a request held: it gets 503, the late report is harmless. */
    start(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2", tracker_post, body, blen);
    run_ms(50);
    sl_collector_stop_accepting(col);
    call(&b, EVHTTP_REQ_GET, "/health", NULL, NULL, 0);
    TEST("after stop_accepting new connections are refused", b.r.code == 0);
    finish(&b);
    TEST("the held request still waits", !a.r.done && sl_collector_pending(col) == 1);
    sl_collector_destroy(col);
    wait_for(&a);
    TEST("destroy answers a held request 503", a.r.code == 503);
    finish(&a);
    fake_report(&fake, NULL);
    TEST("a report after destroy is ignored", true);
    sl_collector_destroy(NULL);

    fake_clear(&fake);
    free(body);
    free(qs);
    event_base_free(base);
}

static void test_ip_modes(void) {
    struct sl_kafka_producer fake = {.up = true};
    char err[SL_ERRLEN];
    size_t blen;
    char *body = slurp(FIX "tp2-post-product.body.raw", &blen);
    struct call a;
    unsigned char salt[32], d[32];
    unsigned char m[32 + 9];
    char want[80];

    sl_collector_sha256("pepper", 6, salt);
    memcpy(m, salt, 32);
    memcpy(m + 32, "127.0.0.1", 9);
    sl_collector_sha256(m, sizeof(m), d);
    strcpy(want, "\"ip\":\"");
    for (int i = 0; i < 32; i++) sprintf(want + 6 + 2 * i, "%02x", d[i]);
    strcat(want, "\"");

    static const struct { enum sl_collector_ip ip; bool anon; const char *name; } modes[] = {
        {SL_COLLECTOR_IP_HASH, false, "ip = hash gives the salted SHA-256 of the peer"},
        {SL_COLLECTOR_IP_DROP, false, "ip = drop leaves ip out"},
        {SL_COLLECTOR_IP_KEEP, true, "SP-Anonymous leaves ip out"},
    };
    const char *anon[] = {"Content-Type", "application/json", "SP-Anonymous", "*", NULL};
    for (size_t i = 0; i < 3; i++) {
        struct sl_collector_conf conf = {.listen = "127.0.0.1:0", .ip = modes[i].ip,
                                         .ip_salt = "pepper"};
        base = event_base_new();
        struct sl_collector *col = sl_collector_create(base, &conf, &fake, err, sizeof(err));
        port = sl_collector_port(col);
        const char *plain[] = {"Content-Type", "application/json", NULL};
        start(&a, EVHTTP_REQ_POST, "/com.snowplowanalytics.snowplow/tp2",
              modes[i].anon ? anon : plain, body, blen);
        run_ms(50);
        const char *v = fake.n ? fake.recs[fake.n - 1].value : "";
        if (modes[i].ip == SL_COLLECTOR_IP_HASH) TEST(modes[i].name, has(v, want));
        else TEST(modes[i].name, !has(v, "\"ip\""));
        fake_report(&fake, NULL);
        wait_for(&a);
        finish(&a);
        sl_collector_destroy(col);
        event_base_free(base);
        fake_clear(&fake);
    }
    struct sl_collector_conf bad = {.listen = "nonsense"};
    base = event_base_new();
    TEST("a bad listen address is an error with a message",
         sl_collector_create(base, &bad, &fake, err, sizeof(err)) == NULL &&
         has(err, "listen"));
    event_base_free(base);
    free(body);
}

int main(void) {
    sl_log_set_level(SL_LOG_ERROR);
    test_sha256();
    test_unescape();
    test_query();
    test_payload();
    test_headers();
    test_envelope();
    test_http();
    test_ip_modes();
    return TEST_DONE();
}
