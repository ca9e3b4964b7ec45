/* collector.c -- the Snowplow collector endpoint (see collector.h).
 *
 * One request, one Kafka record. The request (httpd.c) is held until the
 * producer's delivery report: 200 on ack, 503 on failure or after
 * SL_COLLECTOR_ACK_TIMEOUT_MS. Admission (503 at once) looks at the producer's
 * health, the records in flight and, on the embedded broker, at how many
 * produced bytes the watched consumer group has not committed yet. */
#define _GNU_SOURCE
#include "collector.h"
#include "httpd.h"
#include "json.h"
#include "kafka.h"
#include "sl.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#define SL_COLLECTOR_TP2_PATH "/com.snowplowanalytics.snowplow/tp2" /* POST path. */
#define SL_COLLECTOR_GET_PATH "/i"                 /* GET pixel path. */
#define SL_COLLECTOR_HEALTH_PATH "/health"         /* Liveness path. */
#define SL_COLLECTOR_PAYLOAD_SCHEMA \
    "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
#define SL_COLLECTOR_SCHEMA_PREFIX \
    "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-"
#define SL_COLLECTOR_MAX_DEPTH 64        /* JSON nesting accepted in a body. */
#define SL_COLLECTOR_HEADROOM 8192       /* Header bytes beyond max_body (cookies, UA). */
#define SL_COLLECTOR_TICK_MS 1000        /* Ack deadlines and offset lookups. */
#define SL_COLLECTOR_RECORD_OVERHEAD 70  /* Broker bytes per record beyond key+value. */
#define SL_COLLECTOR_PREFLIGHT_MAX_AGE "7200" /* Chromium caps it at 2 h. */

/* ==================== Results ==================== */

enum result {
    RES_OK, RES_BAD_JSON, RES_BAD_PAYLOAD, RES_BAD_QUERY, RES_TOO_LARGE,
    RES_BAD_CONTENT_TYPE, RES_FORBIDDEN_ORIGIN, RES_NOT_FOUND, RES_UNAVAILABLE,
    RES_OVERLOADED, RES_BACKLOG, RES_KAFKA_ERROR, RES_ACK_TIMEOUT, RES_SHUTTING_DOWN,
    RES_PREFLIGHT, RES_HEALTH,
    RES_RECS, RES_BAD_VISITOR, RES_NO_RECS, RES_STORE_UNAVAILABLE,
    /* Refused by the HTTP layer (httpd.c), named as sl_httpd_req_error_name(). */
    RES_BAD_REQUEST, RES_METHOD_NOT_ALLOWED, RES_TIMEOUT, RES_EXPECTATION_FAILED,
    RES_HEADER_TOO_LARGE, RES_CONNECTION_LIMIT, RES_COUNT
};

static const char *const result_names[RES_COUNT] = {
    "ok", "bad_json", "bad_payload", "bad_query", "too_large",
    "bad_content_type", "forbidden_origin", "not_found", "unavailable",
    "overloaded", "backlog", "kafka_error", "ack_timeout", "shutting_down",
    "preflight", "health",
    "recommendations", "bad_visitor", "no_recommendations", "store_unavailable",
    "bad_request", "method_not_allowed", "timeout", "expectation_failed",
    "header_too_large", "connection_limit",
};

/* A 1x1 transparent GIF89a: header, screen of 1x1 with a 2-colour table,
 * a graphic control extension marking colour 0 transparent, one image of
 * one pixel (LZW min code size 2), trailer. */
static const unsigned char pixel_gif[] = {
    'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0,
    0, 0, 0, 0xff, 0xff, 0xff,
    0x21, 0xf9, 4, 1, 0, 0, 0, 0,
    0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0,
    2, 2, 0x44, 1, 0,
    0x3b,
};

/* ==================== SHA-256 ==================== */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
    for (int i = 0; i < 64; i++) {
        t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
             sha_k[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void sl_collector_sha256(const void *data, size_t n, unsigned char out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char *p = data;
    unsigned char tail[128];
    size_t rest = n % 64, tlen = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;

    for (size_t i = 0; i + 64 <= n; i += 64) sha_block(h, p + i);
    memset(tail, 0, sizeof(tail));
    if (rest) memcpy(tail, p + n - rest, rest);
    tail[rest] = 0x80;
    for (int i = 0; i < 8; i++) tail[tlen - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha_block(h, tail);
    if (tlen == 128) sha_block(h, tail + 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

/* ==================== Tracker bodies ==================== */

/* What sl_collector_check_payload learns from the tokens of a body
 * (json.c's sl_json_scan): its shape, and the first event's duid. */
struct body_scan {
    bool bad_shape;          /* valid JSON that is not a payload */
    bool have_schema, have_data;
    int member;              /* the depth-1 member whose value comes next */
    bool in_data;            /* inside the "data" array */
    bool in_first;           /* inside the first event */
    bool duid_next;          /* the first event's "duid" value comes next */
    size_t events;           /* elements of "data" */
    struct sl_buf name;      /* a decoded member name */
    struct sl_buf *key;      /* the first event's last "duid" string */
};

enum { MEMBER_OTHER, MEMBER_SCHEMA, MEMBER_DATA };

/* t's string decoded, in b (reset first). */
static const char *token_text(const struct sl_json_token *t, struct sl_buf *b, size_t *n) {
    sl_buf_reset(b);
    sl_buf_add(b, t->raw, t->len);
    if (t->escaped) b->len = sl_json_unescape(b->data, b->len, b->data); /* in place */
    *n = b->len;
    return sl_buf_cstr(b);
}

static bool name_is(const char *name, size_t n, const char *lit) {
    return n == strlen(lit) && memcmp(name, lit, n) == 0;
}

static void on_body_token(void *arg, const struct sl_json_token *t) {
    struct body_scan *b = arg;
    size_t n;
    const char *s;

    if (t->kind == SL_JSON_TOK_CLOSE) {
        if (t->depth == 1) b->in_data = false;
        if (t->depth == 2) b->in_first = false;
        return;
    }
    if (t->depth == 0) {                                  /* the document */
        b->bad_shape |= t->kind != SL_JSON_TOK_OBJECT;
    } else if (t->depth == 1 && t->kind == SL_JSON_TOK_KEY) { /* a payload member */
        s = token_text(t, &b->name, &n);
        b->member = name_is(s, n, "schema") ? MEMBER_SCHEMA :
                    name_is(s, n, "data") ? MEMBER_DATA : MEMBER_OTHER;
        if (b->member == MEMBER_SCHEMA) {
            b->bad_shape |= b->have_schema;               /* repeated */
            b->have_schema = true;
        } else if (b->member == MEMBER_DATA) {
            b->bad_shape |= b->have_data;
            b->have_data = true;
        }
    } else if (t->depth == 1 && b->member == MEMBER_SCHEMA) {
        static const char prefix[] = SL_COLLECTOR_SCHEMA_PREFIX;
        s = t->kind == SL_JSON_TOK_STRING ? token_text(t, &b->name, &n) : NULL;
        b->bad_shape |= !s || n < sizeof(prefix) - 1 || memcmp(s, prefix, sizeof(prefix) - 1);
    } else if (t->depth == 1 && b->member == MEMBER_DATA) {
        b->bad_shape |= t->kind != SL_JSON_TOK_ARRAY;
        b->in_data = t->kind == SL_JSON_TOK_ARRAY;
    } else if (t->depth == 2 && b->in_data) {             /* an event */
        b->bad_shape |= t->kind != SL_JSON_TOK_OBJECT;
        b->in_first = ++b->events == 1 && t->kind == SL_JSON_TOK_OBJECT;
    } else if (t->depth == 3 && b->in_first && t->kind == SL_JSON_TOK_KEY) {
        s = token_text(t, &b->name, &n);
        b->duid_next = name_is(s, n, "duid");
    } else if (t->depth == 3 && b->in_first && b->duid_next) {
        /* The last "duid" wins, as the pipeline's decoder reads the event;
         * one that is not a string leaves no key. */
        b->duid_next = false;
        if (t->kind == SL_JSON_TOK_STRING) token_text(t, b->key, &n);
        else sl_buf_reset(b->key);
    }
}

int sl_collector_check_payload(const char *body, size_t len, struct sl_buf *key,
                               size_t *nevents, const char **reason) {
    struct body_scan b = {.key = key};
    int ret = SL_ERR;
    const char *why = "bad_json";

    sl_buf_reset(key);
    *nevents = 0;
    if (sl_json_scan(body, len, SL_COLLECTOR_MAX_DEPTH, on_body_token, &b, NULL, 0) != SL_OK)
        goto done;
    why = "bad_payload";
    if (b.bad_shape || !b.have_schema || !b.have_data || b.events == 0) goto done;
    *nevents = b.events;
    ret = SL_OK;
done:
    sl_buf_free(&b.name);
    if (ret != SL_OK) {
        sl_buf_reset(key);
        if (reason) *reason = why;
    }
    return ret;
}

/* ==================== Query strings ==================== */

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int sl_collector_unescape(const char *s, size_t n, struct sl_buf *out) {
    const char *end = s + n, *run = s;
    while (s < end) {
        if (*s != '%' && *s != '+') { s++; continue; }
        sl_buf_add(out, run, (size_t)(s - run));
        if (*s == '+') {
            sl_buf_addc(out, ' ');
            s++;
        } else {
            int hi, lo;
            if (end - s < 3 || (hi = hexval((unsigned char)s[1])) < 0 ||
                (lo = hexval((unsigned char)s[2])) < 0)
                return SL_ERR;
            sl_buf_addc(out, (char)(hi << 4 | lo));
            s += 3;
        }
        run = s;
    }
    sl_buf_add(out, run, (size_t)(s - run));
    return SL_OK;
}

/* A query parameter: its decoded name and value, as offsets into one buffer. */
struct qparam {
    size_t name, nlen;
    size_t val, vlen;
};

/* Byte order of names, shorter first on a tie: the order of json.c's
 * sorted encoder and of lua/sluice/init.lua. */
static int qparam_cmp(const void *a, const void *b, void *bytes) {
    const struct qparam *x = a, *y = b;
    const char *d = bytes;
    int c = memcmp(d + x->name, d + y->name, x->nlen < y->nlen ? x->nlen : y->nlen);
    return c ? c : (x->nlen > y->nlen) - (x->nlen < y->nlen);
}

int sl_collector_query_to_payload(const char *qs, size_t n, struct sl_buf *out,
                                  struct sl_buf *key) {
    struct sl_buf bytes = {0};
    struct qparam params[SL_COLLECTOR_MAX_PARAMS], q;
    size_t nparams = 0, start = out->len, i;
    const char *p = qs, *end = qs + n;
    int ret = SL_ERR;

    sl_buf_reset(key);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *seg_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(seg_end - p));
        const char *name_end = eq ? eq : seg_end;

        if (name_end > p) {                  /* else an empty segment or "=x": skipped */
            q.name = bytes.len;
            if (sl_collector_unescape(p, (size_t)(name_end - p), &bytes)) goto done;
            q.nlen = bytes.len - q.name;
            q.val = bytes.len;
            if (eq && sl_collector_unescape(eq + 1, (size_t)(seg_end - eq - 1), &bytes))
                goto done;
            q.vlen = bytes.len - q.val;
            if (sl_json_utf8_check(bytes.data + q.name, q.nlen) != q.nlen ||
                sl_json_utf8_check(bytes.data + q.val, q.vlen) != q.vlen)
                goto done;
            for (i = 0; i < nparams; i++)
                if (params[i].nlen == q.nlen &&
                    !memcmp(bytes.data + params[i].name, bytes.data + q.name, q.nlen))
                    break;
            if (i == nparams && nparams++ == SL_COLLECTOR_MAX_PARAMS) goto done;
            params[i] = q;                   /* a repeated name takes its last value */
        }
        p = amp ? amp + 1 : end;
    }
    if (nparams == 0) goto done;
    qsort_r(params, nparams, sizeof(params[0]), qparam_cmp, bytes.data);
    sl_buf_adds(out, "{\"data\":[{");
    for (i = 0; i < nparams; i++) {
        const char *name = bytes.data + params[i].name, *val = bytes.data + params[i].val;
        if (i) sl_buf_addc(out, ',');
        sl_json_add_string(out, name, params[i].nlen, NULL, 0);   /* UTF-8 checked above */
        sl_buf_addc(out, ':');
        sl_json_add_string(out, val, params[i].vlen, NULL, 0);
        if (name_is(name, params[i].nlen, "duid")) sl_buf_add(key, val, params[i].vlen);
    }
    sl_buf_adds(out, "}],\"schema\":\"" SL_COLLECTOR_PAYLOAD_SCHEMA "\"}");
    ret = SL_OK;
done:
    if (ret != SL_OK) {
        out->len = start;
        if (out->data) out->data[start] = '\0';
        sl_buf_reset(key);
    }
    sl_buf_free(&bytes);
    return ret;
}

/* ==================== Headers and envelope ==================== */

bool sl_collector_is_json_type(const char *ct) {
    static const char want[] = "application/json";
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t') ct++;
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0) return false;
    ct += sizeof(want) - 1;
    while (*ct == ' ' || *ct == '\t') ct++;
    return *ct == '\0' || *ct == ';';
}

bool sl_collector_origin_allowed(const struct sl_collector_conf *conf,
                                 const char *origin) {
    if (!origin) return true;
    for (size_t i = 0; i < conf->norigins; i++) {
        const char *o = conf->allowed_origins[i];
        if (strcmp(o, "*") == 0 || strcasecmp(o, origin) == 0) return true;
    }
    return false;
}

void sl_collector_envelope(struct sl_buf *out, const char *message, size_t len,
                           int64_t received_at, const char *origin,
                           const char *user_agent, const char *ip) {
    sl_buf_adds(out, "{\"message\":");
    sl_buf_add(out, message, len);
    sl_buf_printf(out, ",\"collector\":{\"receivedAt\":%lld", (long long)received_at);
    if (origin) {
        sl_buf_adds(out, ",\"origin\":");
        sl_json_add_string_lossy(out, origin, strlen(origin));
    }
    if (user_agent) {
        sl_buf_adds(out, ",\"userAgent\":");
        sl_json_add_string_lossy(out, user_agent, strlen(user_agent));
    }
    if (ip) {
        sl_buf_adds(out, ",\"ip\":");
        sl_json_add_string_lossy(out, ip, strlen(ip));
    }
    sl_buf_adds(out, "}}");
}

/* ==================== The collector ==================== */

/* Produced records not yet acknowledged, per partition, in offset order. */
struct part_ring {
    int64_t *off;      /* offsets */
    uint32_t *bytes;   /* broker bytes of each record */
    size_t cap, head, n;
    uint64_t total;    /* sum of bytes of the n entries */
};

/* One accepted request whose record is in flight. It lives until its delivery
 * report, even when its request was answered earlier (ack timeout, destroy). */
struct pending {
    struct sl_collector *c;        /* NULL once the collector is gone */
    struct sl_httpd_req *req;      /* NULL once answered */
    struct pending *prev, *next;   /* c->inflight list, oldest first */
    int64_t start_mono;            /* for the ack deadline and latency */
    size_t bytes;                  /* broker bytes of the record */
    size_t nevents;
    bool get;                      /* answer with the GIF */
};

struct sl_collector {
    struct event_base *base;
    struct sl_collector_conf conf;   /* defaults filled in */
    struct sl_kafka_producer *producer;
    struct sl_httpd *http;
    struct event *tick;              /* ack deadlines, offset lookups */
    int port;
    bool stopping;
    unsigned char salt[32];
    size_t saltlen;

    struct pending *head, *tail;     /* records in flight, oldest first */
    size_t inflight;                 /* length of that list */
    size_t waiting;                  /* of them, requests still unanswered */
    uint64_t inflight_bytes;

    struct part_ring *parts;         /* produced and acked, by partition */
    size_t nparts;
    rd_kafka_queue_t *admin_q;       /* offset lookups answer here */
    int admin_fds[2];
    struct event *admin_ev;
    bool lookup_running;

    struct sl_buf value, key, scratch; /* reused per request */

    sl_collector_read_fn *read;      /* the read API, or NULL */
    void *reader;
    struct recs_read *reads;         /* read API requests waiting for Redis */

    uint64_t results[RES_COUNT];
    uint64_t events, bytes;          /* acknowledged */
    uint64_t ack_ms_sum, ack_count;
};

static void pending_unlink(struct sl_collector *c, struct pending *p) {
    if (p->prev) p->prev->next = p->next; else c->head = p->next;
    if (p->next) p->next->prev = p->prev; else c->tail = p->prev;
    p->prev = p->next = NULL;
    c->inflight--;
    c->inflight_bytes -= p->bytes;
}

/* ---------- Unconsumed bytes ---------- */

static struct part_ring *ring_of(struct sl_collector *c, int32_t partition) {
    if (partition < 0) return NULL;
    if ((size_t)partition >= c->nparts) {
        size_t n = (size_t)partition + 1;
        c->parts = sl_realloc(c->parts, n * sizeof(*c->parts));
        memset(c->parts + c->nparts, 0, (n - c->nparts) * sizeof(*c->parts));
        c->nparts = n;
    }
    return &c->parts[partition];
}

static void ring_push(struct part_ring *r, int64_t off, uint32_t bytes) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        int64_t *o = sl_malloc(cap * sizeof(*o));
        uint32_t *b = sl_malloc(cap * sizeof(*b));
        for (size_t i = 0; i < r->n; i++) {
            o[i] = r->off[(r->head + i) % r->cap];
            b[i] = r->bytes[(r->head + i) % r->cap];
        }
        free(r->off);
        free(r->bytes);
        r->off = o; r->bytes = b; r->cap = cap; r->head = 0;
    }
    size_t at = (r->head + r->n) % r->cap;
    r->off[at] = off;
    r->bytes[at] = bytes;
    r->n++;
    r->total += bytes;
}

/* Drops the records before committed (the group's next offset to read). */
static void ring_consumed(struct part_ring *r, int64_t committed) {
    while (r->n && r->off[r->head] < committed) {
        r->total -= r->bytes[r->head];
        r->head = (r->head + 1) % r->cap;
        r->n--;
    }
}

static uint64_t unconsumed_bytes(const struct sl_collector *c) {
    uint64_t t = c->inflight_bytes;
    for (size_t i = 0; i < c->nparts; i++) t += c->parts[i].total;
    return t;
}

static bool backlog_on(const struct sl_collector *c) {
    return c->conf.max_unconsumed_bytes > 0 && c->admin_q != NULL;
}

static void on_offsets(evutil_socket_t fd, short what, void *arg) {
    struct sl_collector *c = arg;
    rd_kafka_event_t *ev;
    char buf[64];
    (void)fd; (void)what;
    while (read(c->admin_fds[0], buf, sizeof(buf)) > 0) {}
    while ((ev = rd_kafka_queue_poll(c->admin_q, 0)) != NULL) {
        const rd_kafka_ListConsumerGroupOffsets_result_t *res =
            rd_kafka_event_ListConsumerGroupOffsets_result(ev);
        c->lookup_running = false;
        if (!res || rd_kafka_event_error(ev)) {
            sl_log(SL_LOG_DEBUG, "collector", "committed offsets of %s: %s",
                   c->conf.watch_group, rd_kafka_event_error_string(ev));
            rd_kafka_event_destroy(ev);
            continue;
        }
        size_t ng;
        const rd_kafka_group_result_t **groups =
            rd_kafka_ListConsumerGroupOffsets_result_groups(res, &ng);
        for (size_t g = 0; g < ng; g++) {
            const rd_kafka_topic_partition_list_t *tp;
            if (rd_kafka_group_result_error(groups[g])) continue;
            tp = rd_kafka_group_result_partitions(groups[g]);
            for (int i = 0; tp && i < tp->cnt; i++) {
                const rd_kafka_topic_partition_t *e = &tp->elems[i];
                if (e->err || e->offset < 0 || strcmp(e->topic, c->conf.topic) != 0)
                    continue;
                struct part_ring *r = ring_of(c, e->partition);
                if (r) ring_consumed(r, e->offset);
            }
        }
        rd_kafka_event_destroy(ev);
    }
}

/* Asks the broker for the watched group's committed offsets of the
 * partitions we have unconsumed records in; the answer comes to on_offsets. */
static void lookup_offsets(struct sl_collector *c) {
    rd_kafka_t *rk = (rd_kafka_t *)sl_kafka_producer_handle(c->producer);
    rd_kafka_topic_partition_list_t *tp;
    rd_kafka_ListConsumerGroupOffsets_t *req;
    rd_kafka_AdminOptions_t *opt;
    char err[256];

    if (!backlog_on(c) || c->lookup_running || !rk) return;
    tp = rd_kafka_topic_partition_list_new((int)c->nparts + 1);
    for (size_t i = 0; i < c->nparts; i++)
        if (c->parts[i].n) rd_kafka_topic_partition_list_add(tp, c->conf.topic, (int32_t)i);
    if (tp->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(tp);
        return;
    }
    req = rd_kafka_ListConsumerGroupOffsets_new(c->conf.watch_group, tp);
    opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    rd_kafka_AdminOptions_set_request_timeout(opt, 5000, err, sizeof(err));
    rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, opt, c->admin_q);
    c->lookup_running = true;
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_ListConsumerGroupOffsets_destroy(req);
    rd_kafka_topic_partition_list_destroy(tp);
}

static int admin_open(struct sl_collector *c, char *err, size_t errlen) {
    rd_kafka_t *rk = (rd_kafka_t *)sl_kafka_producer_handle(c->producer);
    c->admin_fds[0] = c->admin_fds[1] = -1;
    if (!c->conf.max_unconsumed_bytes) return SL_OK;
    if (!c->conf.watch_group || !rk) {
        sl_log(SL_LOG_WARN, "collector",
               "max_unconsumed_bytes is set but there is no group to watch: off");
        return SL_OK;
    }
    if (pipe2(c->admin_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sl_errf(err, errlen, "collector: pipe: %s", strerror(errno));
        return SL_ERR;
    }
    c->admin_ev = event_new(c->base, c->admin_fds[0], EV_READ | EV_PERSIST,
                            on_offsets, c);
    if (!c->admin_ev || event_add(c->admin_ev, NULL) != 0) {
        sl_errf(err, errlen, "collector: cannot add an event");
        return SL_ERR;
    }
    c->admin_q = rd_kafka_queue_new(rk);
    rd_kafka_queue_io_event_enable(c->admin_q, c->admin_fds[1], "1", 1);
    return SL_OK;
}

/* The producer replaced its handle after a fatal error: the offset lookups'
 * queue belonged to the old one. A lookup still running there is dropped;
 * the next tick asks again. */
static void on_producer_restart(void *arg, struct sl_kafka_producer *producer) {
    struct sl_collector *c = arg;
    if (!c->admin_q) return;
    rd_kafka_queue_io_event_enable(c->admin_q, -1, NULL, 0);
    rd_kafka_queue_destroy(c->admin_q);
    c->admin_q = rd_kafka_queue_new((rd_kafka_t *)sl_kafka_producer_handle(producer));
    rd_kafka_queue_io_event_enable(c->admin_q, c->admin_fds[1], "1", 1);
    c->lookup_running = false;
}

static void admin_close(struct sl_collector *c) {
    if (c->admin_q) {
        rd_kafka_queue_io_event_enable(c->admin_q, -1, NULL, 0);
        rd_kafka_queue_destroy(c->admin_q);
    }
    if (c->admin_ev) event_free(c->admin_ev);
    if (c->admin_fds[0] >= 0) close(c->admin_fds[0]);
    if (c->admin_fds[1] >= 0) close(c->admin_fds[1]);
}

/* ---------- Replies ---------- */

/* CORS headers for an allowed origin; Vary always, as the answer depends
 * on Origin. */
static void add_cors(struct sl_httpd_req *req, const char *origin) {
    sl_httpd_add_header(req, "Vary", "Origin");
    if (!origin) return;
    sl_httpd_add_header(req, "Access-Control-Allow-Origin", origin);
    sl_httpd_add_header(req, "Access-Control-Allow-Credentials", "true");
}

/* Every answer goes through here or reply_ok: counted under r. */
static void reply(struct sl_collector *c, struct sl_httpd_req *req,
                  enum result r, int code, const char *reason, const char *text) {
    char body[320];
    int n = 0;
    c->results[r]++;
    if (text) {
        sl_httpd_add_header(req, "Content-Type", "text/plain; charset=utf-8");
        n = snprintf(body, sizeof(body), "%s\n", text);
    }
    if (code == 503) sl_httpd_add_header(req, "Retry-After", "1");
    if (c->stopping) sl_httpd_set_close(req);
    sl_httpd_reply(req, code, reason, body, (size_t)n);
}

static void reply_ok(struct sl_collector *c, struct sl_httpd_req *req, bool get) {
    if (!get) {
        reply(c, req, RES_OK, 200, "OK", "ok");
        return;
    }
    c->results[RES_OK]++;
    sl_httpd_add_header(req, "Content-Type", "image/gif");
    sl_httpd_add_header(req, "Cache-Control", "no-cache, no-store, must-revalidate");
    if (c->stopping) sl_httpd_set_close(req);
    sl_httpd_reply(req, 200, "OK", pixel_gif, sizeof(pixel_gif));
}

static void reply_unavailable(struct sl_collector *c, struct sl_httpd_req *req,
                              enum result r) {
    reply(c, req, r, 503, "Service Unavailable", result_names[r]);
}

/* ---------- Delivery ---------- */

static void on_delivery(void *opaque, const char *err, int32_t partition,
                        int64_t offset) {
    struct pending *p = opaque;
    struct sl_collector *c = p->c;

    if (!c) { free(p); return; }   /* the collector is gone */
    pending_unlink(c, p);
    if (!err) {
        c->events += p->nevents;
        c->bytes += p->bytes;
        c->ack_ms_sum += (uint64_t)(sl_mono_ms() - p->start_mono);
        c->ack_count++;
        if (backlog_on(c)) {
            struct part_ring *r = ring_of(c, partition);
            if (r && offset >= 0) ring_push(r, offset, (uint32_t)p->bytes);
        }
    } else {
        sl_log(SL_LOG_WARN, "collector", "record not delivered: %s", err);
    }
    if (p->req) {
        c->waiting--;
        if (err) reply_unavailable(c, p->req, RES_KAFKA_ERROR);
        else reply_ok(c, p->req, p->get);
    }
    free(p);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    struct sl_collector *c = arg;
    int64_t deadline = sl_mono_ms() - SL_COLLECTOR_ACK_TIMEOUT_MS;
    (void)fd; (void)what;
    for (struct pending *p = c->head; p && p->start_mono <= deadline; p = p->next) {
        if (!p->req) continue;
        reply_unavailable(c, p->req, RES_ACK_TIMEOUT);
        p->req = NULL;   /* the record stays in flight until its report */
        c->waiting--;
    }
    lookup_offsets(c);
}

/* ---------- Requests ---------- */

static const char *client_ip(struct sl_collector *c, struct sl_httpd_req *req,
                             char hex[65]) {
    const char *addr = sl_httpd_req_peer(req);
    unsigned char d[32];

    if (c->conf.ip == SL_COLLECTOR_IP_DROP || !addr) return NULL;
    if (sl_httpd_req_header(req, "SP-Anonymous")) return NULL;
    if (c->conf.ip == SL_COLLECTOR_IP_KEEP) return addr;
    size_t al = strlen(addr);
    unsigned char *m = sl_malloc(c->saltlen + al);
    memcpy(m, c->salt, c->saltlen);
    memcpy(m + c->saltlen, addr, al);
    sl_collector_sha256(m, c->saltlen + al, d);
    free(m);
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = "0123456789abcdef"[d[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[d[i] & 15];
    }
    hex[64] = '\0';
    return hex;
}

/* Produces the record for an accepted payload and holds the request. */
static void produce(struct sl_collector *c, struct sl_httpd_req *req,
                    const char *msg, size_t len, size_t nevents, bool get,
                    int64_t now, const char *origin) {
    struct pending *p;
    char hex[65], err[SL_ERRLEN];
    size_t bytes;

    if (!sl_kafka_producer_up(c->producer)) {
        reply_unavailable(c, req, RES_UNAVAILABLE);
        return;
    }
    if (c->inflight >= c->conf.max_inflight) {
        reply_unavailable(c, req, RES_OVERLOADED);
        return;
    }
    sl_buf_reset(&c->value);
    sl_collector_envelope(&c->value, msg, len, now, origin,
                          sl_httpd_req_header(req, "User-Agent"), client_ip(c, req, hex));
    bytes = c->value.len + c->key.len + SL_COLLECTOR_RECORD_OVERHEAD;
    if (backlog_on(c) &&
        unconsumed_bytes(c) + bytes > c->conf.max_unconsumed_bytes) {
        reply_unavailable(c, req, RES_BACKLOG);
        return;
    }
    p = sl_calloc(1, sizeof(*p));
    p->c = c;
    p->req = req;
    p->start_mono = sl_mono_ms();
    p->bytes = bytes;
    p->nevents = nevents;
    p->get = get;
    if (sl_kafka_produce(c->producer, c->conf.topic, -1,
                         c->key.len ? c->key.data : NULL, c->key.len,
                         c->value.data, c->value.len, now, on_delivery, p,
                         err, sizeof(err)) != SL_OK) {
        free(p);
        sl_log(SL_LOG_WARN, "collector", "%s", err);
        reply_unavailable(c, req, RES_KAFKA_ERROR);
        return;
    }
    p->prev = c->tail;
    if (c->tail) c->tail->next = p; else c->head = p;
    c->tail = p;
    c->inflight++;
    c->inflight_bytes += bytes;
    c->waiting++;
}

static void handle_post(struct sl_collector *c, struct sl_httpd_req *req,
                        int64_t now, const char *origin) {
    size_t len, nevents;
    const char *body = sl_httpd_req_body(req, &len);
    const char *enc = sl_httpd_req_header(req, "Content-Encoding");
    const char *reason;

    if (len > c->conf.max_body) {
        reply(c, req, RES_TOO_LARGE, 413, "Payload Too Large", "too_large");
        return;
    }
    if (!sl_collector_is_json_type(sl_httpd_req_header(req, "Content-Type")) ||
        (enc && strcasecmp(enc, "identity") != 0)) {
        reply(c, req, RES_BAD_CONTENT_TYPE, 415, "Unsupported Media Type",
              "bad_content_type");
        return;
    }
    if (sl_collector_check_payload(body, len, &c->key, &nevents, &reason) != SL_OK) {
        reply(c, req, strcmp(reason, "bad_json") == 0 ? RES_BAD_JSON : RES_BAD_PAYLOAD, 400,
              "Bad Request", reason);
        return;
    }
    produce(c, req, body, len, nevents, false, now, origin);
}

static void handle_get(struct sl_collector *c, struct sl_httpd_req *req,
                       const char *query, size_t qlen, int64_t now,
                       const char *origin) {
    sl_buf_reset(&c->scratch);
    if (qlen > c->conf.max_body) {
        reply(c, req, RES_TOO_LARGE, 413, "Payload Too Large", "too_large");
        return;
    }
    if (sl_collector_query_to_payload(query, qlen, &c->scratch, &c->key) != SL_OK) {
        reply(c, req, RES_BAD_QUERY, 400, "Bad Request", "bad_query");
        return;
    }
    produce(c, req, c->scratch.data, c->scratch.len, 1, true, now, origin);
}

/* ---------- Read API ---------- */

/* A read API request waiting for the store. */
struct recs_read {
    struct sl_collector *c;          /* NULL once the collector is gone */
    struct sl_httpd_req *req;
    struct recs_read *prev, *next;   /* c->reads */
};

static void on_recs(void *arg, int code, const char *body, size_t len) {
    struct recs_read *rd = arg;
    struct sl_collector *c = rd->c;
    struct sl_httpd_req *req = rd->req;
    if (c) {
        if (rd->prev) rd->prev->next = rd->next; else c->reads = rd->next;
        if (rd->next) rd->next->prev = rd->prev;
    }
    free(rd);
    if (!c) {                        /* the server is gone: frees req, sends nothing */
        sl_httpd_reply(req, 503, "Service Unavailable", NULL, 0);
        return;
    }
    sl_httpd_add_header(req, "Cache-Control", "no-store");
    if (code == 200) {
        c->results[RES_RECS]++;
        sl_httpd_add_header(req, "Content-Type", "application/json");
        if (c->stopping) sl_httpd_set_close(req);
        sl_httpd_reply(req, 200, "OK", body, len);
    } else if (code == 400) {
        reply(c, req, RES_BAD_VISITOR, 400, "Bad Request", "bad_visitor");
    } else if (code == 404) {
        reply(c, req, RES_NO_RECS, 404, "Not Found", "no_recommendations");
    } else {
        reply_unavailable(c, req, RES_STORE_UNAVAILABLE);
    }
}

static void handle_recs(struct sl_collector *c, struct sl_httpd_req *req, const char *id,
                        size_t n) {
    struct recs_read *rd = sl_calloc(1, sizeof(*rd));
    rd->c = c;
    rd->req = req;
    rd->next = c->reads;
    if (rd->next) rd->next->prev = rd;
    c->reads = rd;
    c->read(c->reader, id, n, on_recs, rd);
}

void sl_collector_set_reader(struct sl_collector *c, sl_collector_read_fn *fn, void *reader) {
    c->read = fn;
    c->reader = reader;
}

static void preflight(struct sl_collector *c, struct sl_httpd_req *req) {
    sl_httpd_add_header(req, "Access-Control-Allow-Methods", "POST, GET, OPTIONS");
    sl_httpd_add_header(req, "Access-Control-Allow-Headers", "Content-Type, SP-Anonymous");
    sl_httpd_add_header(req, "Access-Control-Max-Age", SL_COLLECTOR_PREFLIGHT_MAX_AGE);
    reply(c, req, RES_PREFLIGHT, 200, "OK", NULL);
}

static bool path_is(const char *path, size_t n, const char *lit) {
    return n == strlen(lit) && memcmp(path, lit, n) == 0;
}

/* A request the HTTP layer refused (httpd.h): answered with its status,
 * CORS headers for an allowed origin, counted under its name. */
static void refused(struct sl_collector *c, struct sl_httpd_req *req, const char *origin) {
    static const struct { int code; const char *reason; enum result r; } map[] = {
        {400, "Bad Request", RES_BAD_REQUEST},
        {405, "Method Not Allowed", RES_METHOD_NOT_ALLOWED},
        {408, "Request Timeout", RES_TIMEOUT},
        {413, "Payload Too Large", RES_TOO_LARGE},
        {417, "Expectation Failed", RES_EXPECTATION_FAILED},
        {431, "Request Header Fields Too Large", RES_HEADER_TOO_LARGE},
        {503, "Service Unavailable", RES_CONNECTION_LIMIT},
    };
    int code = sl_httpd_req_error(req);
    size_t i = 0;
    while (i + 1 < sizeof(map) / sizeof(map[0]) && map[i].code != code) i++;
    assert(map[i].code == code);
    if (sl_collector_origin_allowed(&c->conf, origin)) add_cors(req, origin);
    else sl_httpd_add_header(req, "Vary", "Origin");
    if (code == 405) sl_httpd_add_header(req, "Allow", "GET, HEAD, POST, OPTIONS");
    reply(c, req, map[i].r, code, map[i].reason, result_names[map[i].r]);
}

static void on_request(struct sl_httpd_req *req, void *arg) {
    struct sl_collector *c = arg;
    int64_t now = sl_now_ms();
    const char *uri = sl_httpd_req_target(req);
    const char *origin = sl_httpd_req_header(req, "Origin");
    unsigned cmd = sl_httpd_req_method(req);
    size_t plen = strcspn(uri, "?#"), qlen = 0;
    const char *query = NULL;

    if (sl_httpd_req_error(req)) {
        refused(c, req, origin);
        return;
    }
    if (uri[plen] == '?') {
        query = uri + plen + 1;
        qlen = strcspn(query, "#");
    }
    if (!sl_collector_origin_allowed(&c->conf, origin)) {
        sl_httpd_add_header(req, "Vary", "Origin");
        reply(c, req, RES_FORBIDDEN_ORIGIN, 403, "Forbidden", "forbidden_origin");
        return;
    }
    add_cors(req, origin);
    if (c->stopping) {
        reply_unavailable(c, req, RES_SHUTTING_DOWN);
        return;
    }
    if (path_is(uri, plen, SL_COLLECTOR_TP2_PATH)) {
        if (cmd == SL_HTTPD_POST) { handle_post(c, req, now, origin); return; }
        if (cmd == SL_HTTPD_OPTIONS) { preflight(c, req); return; }
    } else if (path_is(uri, plen, SL_COLLECTOR_GET_PATH)) {
        if (cmd == SL_HTTPD_GET) {
            handle_get(c, req, query ? query : "", qlen, now, origin);
            return;
        }
        if (cmd == SL_HTTPD_OPTIONS) { preflight(c, req); return; }
    } else if (c->read && plen > strlen(SL_COLLECTOR_RECS_PATH) &&
               !memcmp(uri, SL_COLLECTOR_RECS_PATH, strlen(SL_COLLECTOR_RECS_PATH))) {
        size_t pre = strlen(SL_COLLECTOR_RECS_PATH);
        if (cmd == SL_HTTPD_GET || cmd == SL_HTTPD_HEAD) {
            handle_recs(c, req, uri + pre, plen - pre);
            return;
        }
        if (cmd == SL_HTTPD_OPTIONS) { preflight(c, req); return; }
    } else if (path_is(uri, plen, SL_COLLECTOR_HEALTH_PATH) &&
               (cmd == SL_HTTPD_GET || cmd == SL_HTTPD_HEAD)) {
        const char *fault = sl_kafka_producer_fault(c->producer);
        if (fault) reply(c, req, RES_HEALTH, 503, "Service Unavailable", fault);
        else reply(c, req, RES_HEALTH, 200, "OK", "ok");
        return;
    }
    reply(c, req, RES_NOT_FOUND, 404, "Not Found", "not_found");
}

/* ---------- Life cycle ---------- */

struct sl_collector *sl_collector_create(struct event_base *base,
        const struct sl_collector_conf *conf, struct sl_kafka_producer *producer,
        char *err, size_t errlen) {
    struct sl_collector *c = sl_calloc(1, sizeof(*c));
    struct sl_httpd_conf hc = {0};
    struct timeval tick = {SL_COLLECTOR_TICK_MS / 1000, (SL_COLLECTOR_TICK_MS % 1000) * 1000};

    assert(base && conf && producer);
    c->base = base;
    c->conf = *conf;
    c->producer = producer;
    c->admin_fds[0] = c->admin_fds[1] = -1;
    if (!c->conf.topic) c->conf.topic = SL_COLLECTOR_DEFAULT_TOPIC;
    if (!c->conf.max_body) c->conf.max_body = SL_COLLECTOR_DEFAULT_MAX_BODY;
    if (!c->conf.max_inflight) c->conf.max_inflight = SL_COLLECTOR_DEFAULT_INFLIGHT;
    if (conf->ip_salt) {
        size_t n = strlen(conf->ip_salt);
        sl_collector_sha256(conf->ip_salt, n, c->salt); /* any length fits */
        c->saltlen = sizeof(c->salt);
    } else {
        if (getrandom(c->salt, 16, 0) != 16) {
            sl_errf(err, errlen, "collector: getrandom: %s", strerror(errno));
            goto fail;
        }
        c->saltlen = 16;
    }
    hc.name = "collector";
    hc.listen = conf->listen;
    hc.max_body = c->conf.max_body;
    hc.max_head = c->conf.max_body + SL_COLLECTOR_HEADROOM;  /* a GET carries its event */
    hc.methods = SL_HTTPD_GET | SL_HTTPD_HEAD | SL_HTTPD_POST | SL_HTTPD_OPTIONS;
    c->http = sl_httpd_create(base, &hc, on_request, c, err, errlen);
    if (!c->http) goto fail;
    c->port = sl_httpd_port(c->http);
    if (admin_open(c, err, errlen)) goto fail;
    sl_kafka_producer_on_restart(producer, on_producer_restart, c);
    c->tick = event_new(base, -1, EV_PERSIST, on_tick, c);
    if (!c->tick || event_add(c->tick, &tick) != 0) {
        sl_errf(err, errlen, "collector: cannot add the timer");
        goto fail;
    }
    sl_log(SL_LOG_INFO, "collector", "listening on %s (port %d), topic %s", conf->listen,
           c->port, c->conf.topic);
    return c;
fail:
    sl_collector_destroy(c);
    return NULL;
}

void sl_collector_stop_accepting(struct sl_collector *c) {
    if (!c || c->stopping) return;
    c->stopping = true;
    sl_httpd_stop_accepting(c->http);
}

size_t sl_collector_pending(const struct sl_collector *c) {
    return c ? c->waiting : 0;
}

int sl_collector_port(const struct sl_collector *c) { return c->port; }

void sl_collector_destroy(struct sl_collector *c) {
    if (!c) return;
    c->stopping = true;
    sl_kafka_producer_on_restart(c->producer, NULL, NULL);
    for (struct pending *p = c->head, *next; p; p = next) {
        next = p->next;
        /* The 503 goes out now: sl_httpd_destroy below writes what it can. */
        if (p->req) reply_unavailable(c, p->req, RES_SHUTTING_DOWN);
        p->req = NULL;
        p->c = NULL;   /* freed by its delivery report */
        p->prev = p->next = NULL;
    }
    for (struct recs_read *rd = c->reads; rd; rd = rd->next) rd->c = NULL;
    if (c->tick) event_free(c->tick);
    admin_close(c);
    sl_httpd_destroy(c->http);
    for (size_t i = 0; i < c->nparts; i++) {
        free(c->parts[i].off);
        free(c->parts[i].bytes);
    }
    free(c->parts);
    sl_buf_free(&c->value);
    sl_buf_free(&c->key);
    sl_buf_free(&c->scratch);
    free(c);
}

void sl_collector_metrics(const struct sl_collector *c, struct sl_buf *out) {
    sl_buf_adds(out, "# HELP sluice_collector_requests_total Collector requests by result.\n"
                     "# TYPE sluice_collector_requests_total counter\n");
    for (int r = 0; r < RES_COUNT; r++)
        sl_buf_printf(out, "sluice_collector_requests_total{result=\"%s\"} %llu\n",
                      result_names[r], (unsigned long long)c->results[r]);
    sl_buf_printf(out,
        "# HELP sluice_collector_events_total Tracker events acknowledged by the broker.\n"
        "# TYPE sluice_collector_events_total counter\n"
        "sluice_collector_events_total %llu\n"
        "# HELP sluice_collector_bytes_total Record bytes acknowledged by the broker.\n"
        "# TYPE sluice_collector_bytes_total counter\n"
        "sluice_collector_bytes_total %llu\n"
        "# HELP sluice_collector_inflight Records produced and not yet acknowledged.\n"
        "# TYPE sluice_collector_inflight gauge\n"
        "sluice_collector_inflight %zu\n"
        "# HELP sluice_collector_unconsumed_bytes Produced bytes the watched group has not committed.\n"
        "# TYPE sluice_collector_unconsumed_bytes gauge\n"
        "sluice_collector_unconsumed_bytes %llu\n"
        "# HELP sluice_collector_ack_seconds Time from request to broker ack.\n"
        "# TYPE sluice_collector_ack_seconds summary\n"
        "sluice_collector_ack_seconds_sum %.3f\n"
        "sluice_collector_ack_seconds_count %llu\n",
        (unsigned long long)c->events, (unsigned long long)c->bytes, c->inflight,
        (unsigned long long)(backlog_on(c) ? unconsumed_bytes(c) : 0),
        (double)c->ack_ms_sum / 1000.0, (unsigned long long)c->ack_count);
    if (c->http) {
        struct sl_httpd_stats st;
        sl_httpd_stats(c->http, &st);
        sl_buf_printf(out,
            "# HELP sluice_collector_connections Open connections and their limit.\n"
            "# TYPE sluice_collector_connections gauge\n"
            "sluice_collector_connections{state=\"open\"} %zu\n"
            "sluice_collector_connections{state=\"limit\"} %zu\n"
            "# HELP sluice_collector_connections_total Connections by what became of them at accept.\n"
            "# TYPE sluice_collector_connections_total counter\n"
            "sluice_collector_connections_total{event=\"accepted\"} %llu\n"
            "sluice_collector_connections_total{event=\"evicted_idle\"} %llu\n"
            "sluice_collector_connections_total{event=\"refused\"} %llu\n"
            "# HELP sluice_collector_accept_errors_total accept() failures (EMFILE, ENFILE); accepting pauses.\n"
            "# TYPE sluice_collector_accept_errors_total counter\n"
            "sluice_collector_accept_errors_total %llu\n"
            "# HELP sluice_collector_accept_paused 1 while accepting is paused after such a failure.\n"
            "# TYPE sluice_collector_accept_paused gauge\n"
            "sluice_collector_accept_paused %d\n",
            st.open, st.max, (unsigned long long)st.accepted, (unsigned long long)st.evicted,
            (unsigned long long)st.refused, (unsigned long long)st.accept_errors, st.paused ? 1 : 0);
    }
}
