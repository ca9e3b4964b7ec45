/* httpd.h -- a small HTTP/1.1 server on libevent, for the listeners that face
 * the network: the collector and the admin listener.
 *
 * libevent 2.1's evhttp answers some requests itself before any callback of
 * ours runs (413 over its body limit, 400 over its header limit, 501 for a
 * method it was not told about, a lingering close on a declared length it will
 * not read), with no CORS and no count; it keeps a client that sends a byte
 * per timeout forever and has no connection limit and no back-off when
 * accept() fails. Here every answer goes through the owner's callback, so
 * the owner counts it and adds its headers (CORS), and each listener is
 * bounded: head and body sizes, head and body deadlines, idle keep-alive,
 * connections (the oldest idle one makes room, else 503), and accept() paused
 * with back-off on EMFILE/ENFILE, resumed when a connection closes.
 *
 * Requests on a connection are served one after the other (a pipelined one
 * waits until the answer before it is written). The parser is a pure
 * function over bytes (sl_httpd_parse), fuzzed by core/fuzz/admin_fuzz.c.
 * Uses libevent (evconnlistener, bufferevent) and sl.h. */
#ifndef SL_HTTPD_H
#define SL_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl.h"

struct event_base;
struct sl_httpd;
struct sl_httpd_req;

/* Methods, as bits of sl_httpd_conf.methods. */
#define SL_HTTPD_GET     0x01  /* GET */
#define SL_HTTPD_HEAD    0x02  /* HEAD: answered without a body */
#define SL_HTTPD_POST    0x04  /* POST */
#define SL_HTTPD_OPTIONS 0x08  /* OPTIONS */
#define SL_HTTPD_OTHER   0x100 /* any other token; never accepted */

#define SL_HTTPD_HEAD_TIMEOUT_MS 10000  /* first byte of a request to the end of its head */
#define SL_HTTPD_BODY_TIMEOUT_MS 10000  /* end of the head to the end of the body */
#define SL_HTTPD_IDLE_TIMEOUT_MS 30000  /* keep-alive wait for the next request */
#define SL_HTTPD_WRITE_TIMEOUT_MS 30000 /* an answer not taken by the client by then: close */
#define SL_HTTPD_MAX_HEADERS 100        /* header lines kept; more is 431 */
#define SL_HTTPD_FD_RESERVE 256         /* descriptors left to the rest of the process */
#define SL_HTTPD_MAX_CONNS_CAP 65536    /* default connection limit never above this */

struct sl_httpd_conf {
    const char *name;        /* "collector", "admin": log lines */
    const char *listen;      /* "host:port", "[::1]:port", ":port"; port 0 = any */
    size_t max_head;         /* request line and headers; over: 431 */
    size_t max_body;         /* declared or received (chunked) body; over: 413 */
    unsigned methods;        /* SL_HTTPD_* accepted; others get 405 */
    size_t max_conns;        /* 0: from RLIMIT_NOFILE (see sl_httpd_default_conns) */
    int head_timeout_ms;     /* 0: SL_HTTPD_HEAD_TIMEOUT_MS */
    int body_timeout_ms;     /* 0: SL_HTTPD_BODY_TIMEOUT_MS */
    int idle_timeout_ms;     /* 0: SL_HTTPD_IDLE_TIMEOUT_MS */
};

/* Called once per request: a complete one, or one refused by the server,
 * where sl_httpd_req_error() gives the status the owner answers with and
 * sl_httpd_req_error_name() a short reason for its metrics. The owner
 * answers each exactly once with sl_httpd_reply(), now or later. */
typedef void sl_httpd_fn(struct sl_httpd_req *req, void *arg);

/* Binds conf->listen and serves on base. conf's strings must outlive the
 * server. NULL and err filled if the address cannot be bound. */
struct sl_httpd *sl_httpd_create(struct event_base *base, const struct sl_httpd_conf *conf,
                                 sl_httpd_fn *fn, void *arg, char *err, size_t errlen);

/* Writes out what was answered (best effort, without blocking) and closes
 * every connection. A request not answered yet stays valid: its answer,
 * when it comes, frees it and sends nothing. NULL does nothing. */
void sl_httpd_destroy(struct sl_httpd *h);

/* Closes the listening socket; open connections are served on. */
void sl_httpd_stop_accepting(struct sl_httpd *h);

/* The bound TCP port. */
int sl_httpd_port(const struct sl_httpd *h);

/* The connection limit used when conf->max_conns is 0: the soft
 * RLIMIT_NOFILE less SL_HTTPD_FD_RESERVE (half of it below 2 x the reserve),
 * at most SL_HTTPD_MAX_CONNS_CAP. */
size_t sl_httpd_default_conns(void);

struct sl_httpd_stats {
    size_t open;             /* connections open now */
    size_t max;              /* the limit */
    uint64_t accepted;       /* connections accepted */
    uint64_t evicted;        /* idle keep-alive connections closed to make room */
    uint64_t refused;        /* answered 503 at the limit */
    uint64_t accept_errors;  /* accept() failures (EMFILE, ENFILE, ...) */
    bool paused;             /* accepting is paused after such a failure */
};
void sl_httpd_stats(const struct sl_httpd *h, struct sl_httpd_stats *out);

/* ==================== Requests ==================== */

/* 0 for a complete request, else the status to answer: 400 bad_request,
 * 405 method_not_allowed, 408 timeout, 413 too_large, 417
 * expectation_failed, 431 header_too_large, 503 connection_limit. */
int sl_httpd_req_error(const struct sl_httpd_req *req);
const char *sl_httpd_req_error_name(const struct sl_httpd_req *req);
unsigned sl_httpd_req_method(const struct sl_httpd_req *req); /* SL_HTTPD_* */
/* The request-target as sent ("/i?e=pv"); "" when the request line was bad. */
const char *sl_httpd_req_target(const struct sl_httpd_req *req);
/* The first header of that name (ASCII case-insensitive), or NULL. */
const char *sl_httpd_req_header(const struct sl_httpd_req *req, const char *name);
const char *sl_httpd_req_body(const struct sl_httpd_req *req, size_t *len);
/* The peer's address ("127.0.0.1", "::1"), or NULL. */
const char *sl_httpd_req_peer(const struct sl_httpd_req *req);

/* The reason phrase of a status sluice answers with ("Not Found"). */
const char *sl_httpd_reason(int code);

/* Adds a response header. A name or value with CR, LF or NUL is dropped. */
void sl_httpd_add_header(struct sl_httpd_req *req, const char *name, const char *value);
/* Closes the connection after the answer. */
void sl_httpd_set_close(struct sl_httpd_req *req);
/* Answers req (Content-Length from len; no body on HEAD) and frees it. */
void sl_httpd_reply(struct sl_httpd_req *req, int code, const char *reason,
                    const void *body, size_t len);

/* ==================== Parsing (pure; tests, fuzzing) ==================== */

enum sl_httpd_pstate {
    SL_HTTPD_P_LINE,        /* request line */
    SL_HTTPD_P_HEADERS,     /* header lines */
    SL_HTTPD_P_BODY,        /* Content-Length body */
    SL_HTTPD_P_CHUNK_SIZE,  /* chunk-size line */
    SL_HTTPD_P_CHUNK_DATA,  /* chunk data */
    SL_HTTPD_P_CHUNK_END,   /* CRLF after chunk data */
    SL_HTTPD_P_TRAILERS,    /* trailer lines after the last chunk */
    SL_HTTPD_P_DONE,        /* a complete request */
    SL_HTTPD_P_ERROR        /* refused: error, error_name */
};

struct sl_httpd_parser {
    /* Limits, set before the first call. */
    size_t max_head, max_body;
    unsigned methods;
    /* State. */
    enum sl_httpd_pstate state;
    struct sl_buf line;          /* the line being read */
    bool skip_line;              /* the line is over the bound: dropped up to its LF */
    bool head_over;              /* the head is over max_head: 431 at its end */
    bool head_done;              /* set when the head ends; the caller clears it */
    size_t head_bytes;           /* bytes of head (and trailers) seen */
    uint64_t chunk_left;         /* bytes left in this chunk or Content-Length body */
    /* The request. */
    struct sl_buf head;          /* method, target and header names/values, NUL-terminated */
    size_t target;               /* offset of the target in head */
    size_t names[SL_HTTPD_MAX_HEADERS], values[SL_HTTPD_MAX_HEADERS];
    size_t nheaders;
    char origin[256];            /* Origin, kept even when the head is over its bound */
    unsigned method;
    int minor;                   /* HTTP/1.minor */
    int64_t content_length;      /* -1: none */
    bool chunked, expect_continue, keep_alive;
    struct sl_buf body;
    int error;                   /* status when state is ERROR */
    const char *error_name;
};

/* Sets up p with its limits (and frees nothing: p is zeroed). */
void sl_httpd_parser_init(struct sl_httpd_parser *p, size_t max_head, size_t max_body,
                          unsigned methods);
void sl_httpd_parser_free(struct sl_httpd_parser *p);
/* Feeds data[0..len); returns the bytes taken. Stops after the head ends
 * (head_done set, to send 100 Continue or refuse early), at DONE and at
 * ERROR; call again with the rest. Memory stays within about max_head +
 * max_body whatever the input. */
size_t sl_httpd_parse(struct sl_httpd_parser *p, const char *data, size_t len);
/* The first header of that name in p (case-insensitive), or NULL. */
const char *sl_httpd_parser_header(const struct sl_httpd_parser *p, const char *name);

#endif
