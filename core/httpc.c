/* httpc.c -- asynchronous HTTP client on libevent (see httpc.h).
 *
 * libcurl multi on the loop, as curl's docs/examples/hiperfifo.c: curl tells
 * sock_cb which sockets to watch and multi_timer_cb when to call it back;
 * both end in curl_multi_socket_action, then check_multi_info collects
 * finished transfers. A 0 ms timeout arms a 0 ms timer: libcurl is never
 * called from inside its own callbacks.
 *
 * A request is a struct sl_httpc_call. It sits in its endpoint's FIFO queue
 * until a slot is free, then in the endpoint's active list until its
 * callback runs: running, waiting for a retry (backoff timer) or waiting for
 * an OAuth token. A slot is held for the whole life of a request, retry
 * waits included, so the server never sees more than max_in_flight of them.
 * The easy handle exists only while a request holds a slot (curl easy
 * handles weigh kilobytes; a queue of thousands should not).
 *
 * OAuth2: one token per endpoint, fetched by a transfer of its own on the
 * same multi handle; requests that find no usable token wait in the active
 * list for the fetch in progress (fetch_seq says which). A token is used
 * until shortly before it expires (stale_us) and refreshed in the
 * background a little earlier (refresh_us). */
#define _GNU_SOURCE
#include "httpc.h"
#include "metrics.h"
#include "sl.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#define SL_HTTPC_USER_AGENT "sluice"          /* User-Agent of every request. */
#define SL_HTTPC_TOKEN_MAX_BODY 65536         /* Bytes accepted from a token endpoint. */
#define SL_HTTPC_TOKEN_DEFAULT_TTL_S 3600     /* Token lifetime when expires_in is missing. */
#define SL_HTTPC_TOKEN_REFRESH_AHEAD_S 60     /* Refresh this long before expiry (at most 1/4 of the lifetime). */
#define SL_HTTPC_TOKEN_STALE_AHEAD_S 5        /* Stop using a token this long before expiry (at most 1/10). */
/* Characters of an HTTP token (RFC 9110): header names, methods. */
#define TOKEN_CHARS "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

/* Upper bounds of the attempt-duration buckets, in seconds. */
static const double duration_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define SL_HTTPC_NBUCKETS (sizeof(duration_le) / sizeof(duration_le[0]))

static const char *const result_names[SL_HTTPC_RESULT_COUNT] = {
    "ok", "timeout", "connect", "protocol", "tls", "too_large", "auth", "cancelled",
};

/* ==================== Types ==================== */

enum xfer_kind { XFER_CALL, XFER_TOKEN };

/* A response body being received, bounded. */
struct sink {
    struct sl_buf body;
    size_t max;                  /* bytes accepted */
    bool too_large;              /* body or headers went over their bound */
};

/* One socket curl asked us to watch. */
struct sock {
    struct sl_httpc *c;
    struct event ev;
    bool added;                  /* ev is assigned and pending */
    struct sock *prev, *next;    /* c->socks */
};

enum call_state {
    CALL_QUEUED,                 /* in ep's queue, no slot */
    CALL_WAITING_TOKEN,          /* holds a slot, waits for fetch wait_fetch */
    CALL_RUNNING,                /* holds a slot, its easy handle is on the multi */
    CALL_BACKOFF                 /* holds a slot, timer set for the next attempt */
};

struct sl_httpc_call {
    enum xfer_kind kind;         /* XFER_CALL; CURLOPT_PRIVATE points here */
    struct sl_httpc_endpoint *ep;
    struct sl_httpc_call *prev, *next; /* ep's queue or active list */
    enum call_state state;
    char *url;
    char *method;
    char *body;                  /* NULL: none */
    size_t len;
    struct curl_slist *hdrs;     /* request headers, owned */
    struct curl_slist *auth_node;/* node of hdrs holding the OAuth header, or NULL */
    CURL *easy;                  /* while holding a slot */
    struct sink sink;
    struct sl_buf rhdrs;         /* response headers: "name\0value\0"... */
    int attempts;
    bool auth_retried;           /* the one retry after a 401 was used */
    unsigned token_gen;          /* ep->token_gen of the token sent */
    unsigned wait_fetch;         /* CALL_WAITING_TOKEN: the fetch awaited */
    int64_t start_us, attempt_us;
    int64_t due_us;              /* CALL_BACKOFF: the next attempt, not before */
    struct event timer;          /* backoff */
    char errbuf[CURL_ERROR_SIZE];
    sl_httpc_done_fn *done;
    void *arg;
};

/* An OAuth token request in flight. */
struct token_fetch {
    enum xfer_kind kind;         /* XFER_TOKEN; CURLOPT_PRIVATE points here */
    struct sl_httpc_endpoint *ep;
    CURL *easy;
    char *post;                  /* form body; holds the secret with credentials_in_body */
    struct curl_slist *hdrs;
    struct sink sink;
    char errbuf[CURL_ERROR_SIZE];
};

struct sl_httpc_endpoint {
    struct sl_httpc *c;
    struct sl_httpc_endpoint *prev, *next; /* c->eps */
    char *name;
    char *url;
    char *method;                /* NULL: by body */
    char **headers;
    size_t nheaders;
    char **secrets;              /* conf secrets, bearer token, client secret */
    size_t nsecrets;
    int timeout_ms, connect_timeout_ms, retries;
    int backoff_base_ms, backoff_max_ms, retry_after_max_ms;
    size_t max_in_flight, max_queued, max_response;
    bool tls_insecure;
    char *ca_file;
    enum sl_httpc_auth_kind auth;
    char *bearer_header;         /* BEARER: "Authorization: Bearer ..." */
    char *token_url, *client_id, *client_secret, *scope;
    bool credentials_in_body;
    char *access_token;          /* OAUTH2: NULL until fetched or after a 401 */
    char *old_token;             /* the one before, still redacted */
    unsigned token_gen;          /* bumped with each new token */
    int64_t refresh_us, stale_us;/* when to refresh, when to stop using it */
    struct token_fetch *fetch;   /* in flight, or NULL */
    unsigned fetch_seq;          /* number of the latest fetch started */
    sl_httpc_classify_fn *classify;
    void *classify_arg;
    struct sl_httpc_call *qhead, *qtail; /* FIFO of CALL_QUEUED */
    size_t nqueued;
    struct sl_httpc_call *active;/* calls holding a slot */
    size_t nactive;
    bool closing;
    char *labels;                /* endpoint="name" */
    struct sl_metrics_series *m_requests, *m_retries, *m_rejected;
    struct sl_metrics_series *m_codes[6]; /* 0: other, 1..5: 1xx..5xx */
    struct sl_metrics_series *m_buckets[SL_HTTPC_NBUCKETS + 1], *m_count;
    double duration_sum;
};

struct sl_httpc {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;         /* curl's timeout */
    struct sock *socks;
    struct sl_httpc_endpoint *eps;
    int running;                 /* transfers curl reports as running */
    int depth;                   /* > 0 inside a callback of ours */
    uint64_t rng;                /* xorshift state for jitter */
    bool closing;
};

static void check_multi_info(struct sl_httpc *c);
static void call_attempt(struct sl_httpc_call *call);
static void call_finish(struct sl_httpc_call *call, enum sl_httpc_result res, const char *error);
static void token_fetch_start(struct sl_httpc_endpoint *ep);

static int64_t mono_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void wipe_free(char *s) {
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* ==================== libcurl on libevent ==================== */

static void sock_free(struct sock *k) {
    if (k->added) event_del(&k->ev);
    if (k->prev) k->prev->next = k->next;
    else k->c->socks = k->next;
    if (k->next) k->next->prev = k->prev;
    free(k);
}

/* libevent says fd is ready: tell curl, then collect what finished. */
static void event_cb(evutil_socket_t fd, short what, void *arg) {
    struct sl_httpc *c = arg;
    int action = (what & EV_READ ? CURL_CSELECT_IN : 0) |
                 (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(c->multi, fd, action, &c->running);
    check_multi_info(c);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what curl wants, or stop. */
static int sock_cb(CURL *e, curl_socket_t s, int what, void *cbp, void *sockp) {
    struct sl_httpc *c = cbp;
    struct sock *k = sockp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (k) sock_free(k);
        return 0;
    }
    if (!k) {
        k = sl_calloc(1, sizeof(*k));
        k->c = c;
        k->next = c->socks;
        if (c->socks) c->socks->prev = k;
        c->socks = k;
        curl_multi_assign(c->multi, s, k);
    } else if (k->added) {
        event_del(&k->ev);
    }
    short kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) |
                         (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
    event_assign(&k->ev, c->base, s, kind, event_cb, c);
    event_add(&k->ev, NULL);
    k->added = true;
    return 0;
}

/* The timer curl asked for went off. */
static void timer_cb(evutil_socket_t fd, short what, void *arg) {
    struct sl_httpc *c = arg;
    (void)fd; (void)what;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &c->running);
    check_multi_info(c);
}

/* CURLMOPT_TIMERFUNCTION: arm (0 ms included: never act from here) or
 * disarm the one timer. */
static int multi_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    struct sl_httpc *c = userp;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
    } else {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(c->timer, &tv);
    }
    return 0;
}

static void multi_add(struct sl_httpc *c, CURL *easy) {
    CURLMcode rc = curl_multi_add_handle(c->multi, easy);
    if (rc != CURLM_OK) {       /* only out of memory or a bug: as sl_malloc */
        sl_log(SL_LOG_ERROR, "httpc", "curl_multi_add_handle: %s", curl_multi_strerror(rc));
        abort();
    }
}

/* Connections per host, and kept alive: enough for every slot of every
 * endpoint (they may share a host) plus token fetches, so curl never queues
 * a transfer of its own behind our limits. */
static void size_connections(struct sl_httpc *c) {
    long n = 0;
    for (struct sl_httpc_endpoint *ep = c->eps; ep; ep = ep->next)
        n += (long)ep->max_in_flight + (ep->auth == SL_HTTPC_AUTH_OAUTH2);
    if (n < 1) n = 1;
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, n);
}

/* ==================== Receiving ==================== */

static size_t write_cb(char *p, size_t size, size_t n, void *arg) {
    struct sink *s = arg;
    size_t len = size * n;
    if (s->body.len + len > s->max) {
        s->too_large = true;
        return 0;                /* curl stops with CURLE_WRITE_ERROR */
    }
    sl_buf_add(&s->body, p, len);
    return len;
}

static bool is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

/* One header line: a status line starts a new header block (100 Continue,
 * then the real one); "Name: value" lines are kept as "name\0value\0". */
static size_t header_cb(char *p, size_t size, size_t n, void *arg) {
    struct sl_httpc_call *call = arg;
    size_t len = size * n, i = 0;
    if (len >= 5 && !memcmp(p, "HTTP/", 5)) {
        sl_buf_reset(&call->rhdrs);
        return len;
    }
    if (call->rhdrs.len + len > SL_HTTPC_MAX_HEADER_BYTES) {
        call->sink.too_large = true;
        return 0;
    }
    while (i < len && p[i] != ':') i++;
    if (i == 0 || i == len) return len;   /* blank line, folding, junk */
    size_t v = i + 1, e = len;
    while (v < e && is_space(p[v])) v++;
    while (e > v && is_space(p[e - 1])) e--;
    sl_buf_add(&call->rhdrs, p, i);
    sl_buf_addc(&call->rhdrs, '\0');
    sl_buf_add(&call->rhdrs, p + v, e - v);
    sl_buf_addc(&call->rhdrs, '\0');
    return len;
}

/* A response as the callback sees it; headers point into call->rhdrs. */
struct view {
    struct sl_httpc_response r;
    struct sl_httpc_header *h;
};

static void view_make(struct sl_httpc_call *call, enum sl_httpc_result res, long status,
                      const char *error, struct view *v) {
    size_t n = 0, cap = 0;
    memset(v, 0, sizeof(*v));
    for (size_t off = 0; off < call->rhdrs.len;) {
        const char *name = call->rhdrs.data + off;
        const char *value = name + strlen(name) + 1;
        if (n == cap) v->h = sl_realloc(v->h, (cap = cap ? 2 * cap : 16) * sizeof(*v->h));
        v->h[n].name = name;
        v->h[n++].value = value;
        off = (size_t)(value + strlen(value) + 1 - call->rhdrs.data);
    }
    v->r.result = res;
    v->r.status = status;
    v->r.headers = v->h;
    v->r.nheaders = n;
    v->r.body = call->sink.body.len ? call->sink.body.data : "";
    v->r.len = call->sink.body.len;
    v->r.error = error ? error : "";
    v->r.attempts = call->attempts;
    v->r.elapsed_ms = (double)(mono_us() - call->start_us) / 1000.0;
}

/* What a transfer error means, and whether another attempt may help. */
static enum sl_httpc_result map_code(CURLcode rc, bool *retryable) {
    *retryable = false;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        *retryable = true;
        return SL_HTTPC_ETIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT: case CURLE_GOT_NOTHING: case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR: case CURLE_PARTIAL_FILE: case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: case CURLE_SSL_CONNECT_ERROR:
        *retryable = true;
        return SL_HTTPC_ECONNECT;
    case CURLE_PEER_FAILED_VERIFICATION: case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
        return SL_HTTPC_ETLS;
    case CURLE_FILESIZE_EXCEEDED:
        return SL_HTTPC_ETOOLARGE;
    default:
        return SL_HTTPC_EPROTOCOL;
    }
}

/* ==================== Secrets ==================== */

bool sl_httpc_secret_header(const char *name, size_t n) {
    static const char *const words[] = {"token", "secret", "key", "password", "auth",
                                        "session", "cookie"};
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= n; i++)
            if (!strncasecmp(name + i, words[w], wl)) return true;
    }
    return false;
}

void sl_httpc_redact(const struct sl_httpc_endpoint *ep, const char *s, size_t n,
                     struct sl_buf *out) {
    const char *extra[] = {ep->access_token, ep->old_token};
    size_t i = 0, from = 0;
    while (i < n) {
        size_t hit = 0;
        for (size_t k = 0; k < ep->nsecrets + 2 && !hit; k++) {
            const char *sec = k < ep->nsecrets ? ep->secrets[k] : extra[k - ep->nsecrets];
            size_t sl = sec ? strlen(sec) : 0;
            if (sl && sl <= n - i && !memcmp(s + i, sec, sl)) hit = sl;
        }
        if (!hit) {
            i++;
            continue;
        }
        sl_buf_add(out, s + from, i - from);
        sl_buf_adds(out, SL_HTTPC_REDACTED);
        i += hit;
        from = i;
    }
    sl_buf_add(out, s + from, n - from);
}

/* Copies error text e into a redacted NUL-terminated string. */
static char *redacted(const struct sl_httpc_endpoint *ep, const char *e) {
    struct sl_buf b = {0};
    sl_httpc_redact(ep, e, strlen(e), &b);
    sl_buf_cstr(&b);
    return b.data;
}

/* Appends url with the password of its userinfo, if any, redacted. */
static void add_url(const struct sl_httpc_endpoint *ep, const char *url, struct sl_buf *out) {
    const char *auth = strstr(url, "://");
    const char *at = NULL, *colon = NULL;
    if (auth) {
        auth += 3;
        for (const char *p = auth; *p && !strchr("/?#", *p); p++)
            if (*p == '@') at = p;
        for (const char *p = auth; at && p < at; p++)
            if (*p == ':') { colon = p; break; }
    }
    if (!colon) {
        sl_httpc_redact(ep, url, strlen(url), out);
        return;
    }
    sl_httpc_redact(ep, url, (size_t)(colon + 1 - url), out);
    sl_buf_adds(out, SL_HTTPC_REDACTED);
    sl_httpc_redact(ep, at, strlen(at), out);
}

/* ==================== Requests: building ==================== */

/* A header line: a name of token characters, ':', a value without CR/LF. */
static bool header_ok(const char *h) {
    size_t n = strcspn(h, ":");
    return n && h[n] == ':' && strspn(h, TOKEN_CHARS) == n && !strpbrk(h, "\r\n");
}

static bool header_named(const char *line, const char *name, size_t n) {
    return !strncasecmp(line, name, n) && line[n] == ':';
}

/* Whether one of the request's headers has the name of header line h. */
static bool overridden(const char *h, const struct sl_httpc_req *req) {
    size_t n = strcspn(h, ":");
    for (size_t i = 0; i < req->nheaders; i++)
        if (header_named(req->headers[i], h, n)) return true;
    return false;
}

static bool has_header(const struct curl_slist *l, const char *name) {
    for (; l; l = l->next)
        if (header_named(l->data, name, strlen(name))) return true;
    return false;
}

static struct curl_slist *slist_add(struct curl_slist *l, const char *s) {
    struct curl_slist *n = curl_slist_append(l, s);
    if (!n) {
        sl_log(SL_LOG_ERROR, "httpc", "out of memory building headers");
        abort();
    }
    return n;
}

static struct curl_slist *slist_last(struct curl_slist *l) {
    while (l && l->next) l = l->next;
    return l;
}

/* The header list of a request: the endpoint's (those the request names
 * replaced), the request's, a JSON Content-Type for a body without one, no
 * "Expect: 100-continue" wait, then auth. *auth_node is the OAuth header
 * node, its value set per attempt. */
static struct curl_slist *build_headers(const struct sl_httpc_endpoint *ep,
        const struct sl_httpc_req *req, struct curl_slist **auth_node) {
    struct curl_slist *l = NULL;
    for (size_t i = 0; i < ep->nheaders; i++)
        if (!overridden(ep->headers[i], req)) l = slist_add(l, ep->headers[i]);
    for (size_t i = 0; i < req->nheaders; i++) l = slist_add(l, req->headers[i]);
    if (req->body && !has_header(l, "Content-Type"))
        l = slist_add(l, "Content-Type: application/json");
    if (!has_header(l, "Expect")) l = slist_add(l, "Expect:");
    *auth_node = NULL;
    if (ep->auth == SL_HTTPC_AUTH_BEARER) {
        l = slist_add(l, ep->bearer_header);
    } else if (ep->auth == SL_HTTPC_AUTH_OAUTH2) {
        l = slist_add(l, "Authorization: Bearer");
        *auth_node = slist_last(l);
    }
    return l;
}

static char *request_url(const struct sl_httpc_endpoint *ep, const char *path) {
    if (!path || !*path) return sl_strdup(ep->url);
    if (!strncasecmp(path, "http://", 7) || !strncasecmp(path, "https://", 8))
        return sl_strdup(path);
    struct sl_buf b = {0};
    size_t ul = strlen(ep->url);
    bool slash_end = ul && ep->url[ul - 1] == '/';
    sl_buf_adds(&b, ep->url);
    if (slash_end && path[0] == '/') path++;
    else if (!slash_end && path[0] != '/' && path[0] != '?') sl_buf_addc(&b, '/');
    sl_buf_adds(&b, path);
    return b.data;
}

static const char *request_method(const struct sl_httpc_endpoint *ep,
                                  const struct sl_httpc_req *req) {
    if (req->method) return req->method;
    if (ep->method) return ep->method;
    return req->body ? "POST" : "GET";
}

void sl_httpc_describe(const struct sl_httpc_endpoint *ep, const struct sl_httpc_req *req,
                       struct sl_buf *out) {
    struct curl_slist *auth_node, *l = build_headers(ep, req, &auth_node);
    char *url = request_url(ep, req->path);
    sl_buf_printf(out, "%s ", request_method(ep, req));
    add_url(ep, url, out);
    sl_buf_addc(out, '\n');
    for (struct curl_slist *h = l; h; h = h->next) {
        size_t n = strcspn(h->data, ":");
        if (!h->data[n] || !h->data[n + 1]) continue;   /* "Expect:": removes */
        if (sl_httpc_secret_header(h->data, n)) {
            const char *v = h->data + n + 1;
            while (*v == ' ') v++;
            sl_buf_add(out, h->data, n);
            /* Keep the scheme word of "Bearer xyz" / "Basic xyz". */
            size_t w = strcspn(v, " ");
            if (v[w] == ' ' || h == auth_node)
                sl_buf_printf(out, ": %.*s %s\n", (int)w, v, SL_HTTPC_REDACTED);
            else
                sl_buf_printf(out, ": %s\n", SL_HTTPC_REDACTED);
        } else {
            sl_httpc_redact(ep, h->data, strlen(h->data), out);
            sl_buf_addc(out, '\n');
        }
    }
    sl_buf_addc(out, '\n');
    if (req->body) sl_httpc_redact(ep, req->body, req->len, out);
    curl_slist_free_all(l);
    free(url);
}

/* A new easy handle with what every transfer of ep shares. */
static CURL *easy_new(struct sl_httpc_endpoint *ep, void *priv, struct sink *sink,
                      char *errbuf) {
    CURL *e = curl_easy_init();
    if (!e) {
        sl_log(SL_LOG_ERROR, "httpc", "curl_easy_init failed (out of memory)");
        abort();
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, priv);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)ep->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)ep->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, ep->tls_insecure ? 0L : 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, ep->tls_insecure ? 0L : 2L);
    if (ep->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, ep->ca_file);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)sink->max);
    curl_easy_setopt(e, CURLOPT_USERAGENT, SL_HTTPC_USER_AGENT);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    return e;
}

static void call_easy(struct sl_httpc_call *call) {
    CURL *e = easy_new(call->ep, call, &call->sink, call->errbuf);
    curl_easy_setopt(e, CURLOPT_URL, call->url);
    /* Over TLS, wait for a connection being set up to tell whether it can
     * carry HTTP/2 streams rather than open one per request. Not over
     * cleartext, where curl would learn it only from the first response. */
    if (!strncasecmp(call->url, "https:", 6)) curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->hdrs);
    if (call->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body);
        if (strcmp(call->method, "POST")) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, call->method);
    } else if (!strcmp(call->method, "GET")) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (!strcmp(call->method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, call->method);
    }
    call->easy = e;
}

/* ==================== Requests: running ==================== */

/* The counter name{endpoint="...",key="value"}. */
static struct sl_metrics_series *series(const struct sl_httpc_endpoint *ep, const char *name,
                                        const char *key, const char *value) {
    struct sl_buf b = {0};
    sl_buf_printf(&b, "%s,%s=\"%s\"", ep->labels, key, value);
    struct sl_metrics_series *s = sl_metrics_counter(name, b.data);
    sl_buf_free(&b);
    return s;
}

static void gauges(struct sl_httpc_endpoint *ep) {
    sl_metrics_set("sluice_http_in_flight", ep->labels, (double)ep->nactive);
    sl_metrics_set("sluice_http_queued", ep->labels, (double)ep->nqueued);
}

static void active_link(struct sl_httpc_call *call) {
    struct sl_httpc_endpoint *ep = call->ep;
    call->prev = NULL;
    call->next = ep->active;
    if (ep->active) ep->active->prev = call;
    ep->active = call;
    ep->nactive++;
}

static void active_unlink(struct sl_httpc_call *call) {
    struct sl_httpc_endpoint *ep = call->ep;
    if (call->prev) call->prev->next = call->next;
    else ep->active = call->next;
    if (call->next) call->next->prev = call->prev;
    call->prev = call->next = NULL;
    ep->nactive--;
}

static struct sl_httpc_call *queue_pop(struct sl_httpc_endpoint *ep) {
    struct sl_httpc_call *call = ep->qhead;
    if (!call) return NULL;
    ep->qhead = call->next;
    if (ep->qhead) ep->qhead->prev = NULL;
    else ep->qtail = NULL;
    call->next = NULL;
    ep->nqueued--;
    return call;
}

/* Takes a slot: creates the easy handle and makes the first attempt. */
static void call_dispatch(struct sl_httpc_call *call) {
    active_link(call);
    call_easy(call);
    call_attempt(call);
}

/* Starts queued requests while slots are free. */
static void pump(struct sl_httpc_endpoint *ep) {
    while (!ep->closing && ep->nactive < ep->max_in_flight && ep->qhead)
        call_dispatch(queue_pop(ep));
    gauges(ep);
}

static void call_free(struct sl_httpc_call *call) {
    if (call->easy) curl_easy_cleanup(call->easy);
    curl_slist_free_all(call->hdrs);
    sl_buf_free(&call->sink.body);
    sl_buf_free(&call->rhdrs);
    free(call->url);
    free(call->method);
    free(call->body);
    free(call);
}

/* Stops whatever the call is doing and takes it off its list. */
static void call_detach(struct sl_httpc_call *call) {
    struct sl_httpc_endpoint *ep = call->ep;
    switch (call->state) {
    case CALL_QUEUED:
        if (call->prev) call->prev->next = call->next;
        else ep->qhead = call->next;
        if (call->next) call->next->prev = call->prev;
        else ep->qtail = call->prev;
        call->prev = call->next = NULL;
        ep->nqueued--;
        return;
    case CALL_RUNNING:
        curl_multi_remove_handle(ep->c->multi, call->easy);
        break;
    case CALL_BACKOFF:
        evtimer_del(&call->timer);
        break;
    case CALL_WAITING_TOKEN:
        break;
    }
    active_unlink(call);
}

/* Ends a request: frees its slot (starting the next queued one), calls its
 * callback once, frees it. */
static void call_finish(struct sl_httpc_call *call, enum sl_httpc_result res, const char *error) {
    struct sl_httpc_endpoint *ep = call->ep;
    struct view v;
    long status = 0;

    if (call->easy && res != SL_HTTPC_ECANCELLED && call->attempts)
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    call_detach(call);
    pump(ep);
    sl_metrics_add(ep->m_requests, 1);
    if (res != SL_HTTPC_OK)
        sl_metrics_add(series(ep, "sluice_http_errors_total", "error", result_names[res]), 1);
    view_make(call, res, status, error, &v);
    ep->c->depth++;
    call->done(&v.r, call->arg);
    ep->c->depth--;
    free(v.h);
    call_free(call);
}

/* Ends a request with an error text built here (redacted). */
static void call_fail(struct sl_httpc_call *call, enum sl_httpc_result res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_fail(struct sl_httpc_call *call, enum sl_httpc_result res, const char *fmt, ...) {
    char raw[SL_ERRLEN + CURL_ERROR_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    char *text = redacted(call->ep, raw);
    call_finish(call, res, text);
    free(text);
}

static uint64_t rng_next(struct sl_httpc *c) {
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return c->rng;
}

/* The wait before the next attempt: base * 2^(attempts-1), capped, then
 * "equal jitter" into [wait/2, wait]. */
static int64_t backoff_ms(struct sl_httpc_call *call) {
    struct sl_httpc_endpoint *ep = call->ep;
    int64_t wait = ep->backoff_base_ms;
    for (int i = 1; i < call->attempts && wait < ep->backoff_max_ms; i++) wait *= 2;
    if (wait > ep->backoff_max_ms) wait = ep->backoff_max_ms;
    return wait / 2 + (int64_t)(rng_next(ep->c) % (uint64_t)(wait / 2 + 1));
}

/* Arms the backoff timer for what is left until call->due_us. */
static void backoff_arm(struct sl_httpc_call *call, int64_t now) {
    int64_t us = call->due_us - now;
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    evtimer_add(&call->timer, &tv);
}

/* libevent's clock is coarse (CLOCK_MONOTONIC_COARSE, a few ms) and a timer
 * may fire a little early; the wait is a minimum (Retry-After), so what is
 * left is waited again. */
static void backoff_cb(evutil_socket_t fd, short what, void *arg) {
    struct sl_httpc_call *call = arg;
    int64_t now = mono_us();
    (void)fd; (void)what;
    if (now < call->due_us) backoff_arm(call, now);
    else call_attempt(call);
}

static void call_retry_in(struct sl_httpc_call *call, int64_t ms) {
    int64_t now = mono_us();
    sl_metrics_add(call->ep->m_retries, 1);
    call->state = CALL_BACKOFF;
    call->due_us = now + ms * 1000;
    backoff_arm(call, now);
}

/* Puts the current token into the request's Authorization header. */
static void set_token(struct sl_httpc_call *call) {
    struct sl_httpc_endpoint *ep = call->ep;
    struct sl_buf b = {0};
    sl_buf_printf(&b, "Authorization: Bearer %s", ep->access_token);
    wipe_free(call->auth_node->data);
    call->auth_node->data = b.data;
    call->token_gen = ep->token_gen;
}

/* Sends the request once more. */
static void call_send(struct sl_httpc_call *call) {
    sl_buf_reset(&call->sink.body);
    sl_buf_reset(&call->rhdrs);
    call->sink.too_large = false;
    call->errbuf[0] = '\0';
    call->attempts++;
    call->attempt_us = mono_us();
    call->state = CALL_RUNNING;
    multi_add(call->ep->c, call->easy);
}

/* One attempt, or a wait for the token it needs. */
static void call_attempt(struct sl_httpc_call *call) {
    struct sl_httpc_endpoint *ep = call->ep;
    int64_t now = mono_us();
    if (ep->auth == SL_HTTPC_AUTH_OAUTH2) {
        if (!ep->access_token || now >= ep->stale_us) {
            token_fetch_start(ep);
            call->state = CALL_WAITING_TOKEN;
            call->wait_fetch = ep->fetch_seq;
            return;
        }
        if (now >= ep->refresh_us) token_fetch_start(ep);  /* in the background */
        set_token(call);
    }
    call_send(call);
}

/* Whether another attempt is allowed; the retry after a 401 is extra. */
static bool retries_left(const struct sl_httpc_call *call) {
    return call->attempts - (call->auth_retried ? 1 : 0) <= call->ep->retries;
}

static void observe_duration(struct sl_httpc_endpoint *ep, int64_t us) {
    double s = (double)us / 1e6;
    for (size_t i = 0; i < SL_HTTPC_NBUCKETS; i++)
        if (s <= duration_le[i]) sl_metrics_add(ep->m_buckets[i], 1);
    sl_metrics_add(ep->m_buckets[SL_HTTPC_NBUCKETS], 1);
    sl_metrics_add(ep->m_count, 1);
    ep->duration_sum += s;
    sl_metrics_set("sluice_http_duration_seconds_sum", ep->labels, ep->duration_sum);
}

/* An attempt's transfer ended (its handle is off the multi): retry, wait
 * for a new token, or finish. */
static void call_attempt_done(struct sl_httpc_call *call, CURLcode rc) {
    struct sl_httpc_endpoint *ep = call->ep;
    long status = 0;
    bool retry;
    int64_t delay = -1;
    enum sl_httpc_result res;

    call->state = CALL_BACKOFF;  /* off the multi; not yet waiting on anything */
    observe_duration(ep, mono_us() - call->attempt_us);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
        sl_metrics_add(ep->m_codes[status >= 100 && status < 600 ? status / 100 : 0], 1);
        res = SL_HTTPC_OK;
    } else if (call->sink.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        call_fail(call, SL_HTTPC_ETOOLARGE, "%s: response over %zu body bytes or %d header bytes",
                  ep->name, ep->max_response, SL_HTTPC_MAX_HEADER_BYTES);
        return;
    } else {
        res = map_code(rc, &retry);
    }

    if (res == SL_HTTPC_OK) {
        if (status == 401 && ep->auth == SL_HTTPC_AUTH_OAUTH2 && !call->auth_retried) {
            call->auth_retried = true;
            if (ep->access_token && call->token_gen == ep->token_gen) {
                wipe_free(ep->old_token);
                ep->old_token = ep->access_token;
                ep->access_token = NULL;
            }
            call_attempt(call);
            return;
        }
        enum sl_httpc_verdict verdict = SL_HTTPC_DEFAULT;
        if (ep->classify) {
            struct view v;
            view_make(call, res, status, NULL, &v);
            ep->c->depth++;
            verdict = ep->classify(&v.r, ep->classify_arg, &delay);
            ep->c->depth--;
            free(v.h);
        }
        retry = verdict == SL_HTTPC_RETRY ||
                (verdict == SL_HTTPC_DEFAULT && (status >= 500 || status == 429 || status == 408));
        if (retry && delay < 0) {
            curl_off_t after = -1;
            if (curl_easy_getinfo(call->easy, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0) {
                if (after * 1000 > ep->retry_after_max_ms) retry = false;
                else delay = (int64_t)after * 1000;
            }
            if (retry) {
                int64_t b = backoff_ms(call);
                if (b > delay) delay = b;
            }
        }
        if (retry && retries_left(call)) {
            call_retry_in(call, delay);
            return;
        }
        call_finish(call, SL_HTTPC_OK, NULL);
        return;
    }
    if (retry && retries_left(call)) {
        call_retry_in(call, backoff_ms(call));
        return;
    }
    call_fail(call, res, "%s: %s (%d attempt%s)", ep->name,
              call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc),
              call->attempts, call->attempts == 1 ? "" : "s");
}

int sl_httpc_request(struct sl_httpc_endpoint *ep, const struct sl_httpc_req *req,
                     sl_httpc_done_fn *done, void *arg, struct sl_httpc_call **callp,
                     char *err, size_t errlen) {
    assert(ep && req && done);
    if (callp) *callp = NULL;
    if (ep->closing || ep->c->closing) {
        sl_errf(err, errlen, "%s: the endpoint is closing", ep->name);
        return SL_ERR;
    }
    for (size_t i = 0; i < req->nheaders; i++)
        if (!req->headers[i] || !header_ok(req->headers[i])) {
            sl_errf(err, errlen, "%s: request header %zu is not one \"Name: value\" line",
                    ep->name, i + 1);
            return SL_ERR;
        }
    if (req->method && (!*req->method || strspn(req->method, TOKEN_CHARS) != strlen(req->method))) {
        sl_errf(err, errlen, "%s: the request method is not an HTTP method name", ep->name);
        return SL_ERR;
    }
    if (ep->nactive >= ep->max_in_flight && ep->nqueued >= ep->max_queued) {
        sl_metrics_add(ep->m_rejected, 1);
        sl_errf(err, errlen, "%s: %zu requests in flight and %zu queued", ep->name,
                ep->nactive, ep->nqueued);
        return SL_HTTPC_FULL;
    }
    struct sl_httpc_call *call = sl_calloc(1, sizeof(*call));
    call->kind = XFER_CALL;
    call->ep = ep;
    call->url = request_url(ep, req->path);
    call->method = sl_strdup(request_method(ep, req));
    if (req->body) {
        call->body = sl_malloc(req->len + 1);
        memcpy(call->body, req->body, req->len);
        call->body[req->len] = '\0';
        call->len = req->len;
    }
    call->hdrs = build_headers(ep, req, &call->auth_node);
    call->sink.max = ep->max_response;
    call->done = done;
    call->arg = arg;
    call->start_us = mono_us();
    evtimer_assign(&call->timer, ep->c->base, backoff_cb, call);
    if (ep->nactive < ep->max_in_flight && !ep->qhead) {
        call_dispatch(call);
    } else {
        call->state = CALL_QUEUED;
        call->prev = ep->qtail;
        if (ep->qtail) ep->qtail->next = call;
        else ep->qhead = call;
        ep->qtail = call;
        ep->nqueued++;
    }
    gauges(ep);
    if (callp) *callp = call;
    return SL_OK;
}

void sl_httpc_cancel(struct sl_httpc_call *call) {
    struct sl_httpc_endpoint *ep = call->ep;
    call_detach(call);
    call_free(call);
    pump(ep);
}

size_t sl_httpc_in_flight(const struct sl_httpc_endpoint *ep) { return ep->nactive; }
size_t sl_httpc_queued(const struct sl_httpc_endpoint *ep) { return ep->nqueued; }

/* ==================== Collecting finished transfers ==================== */

static void token_done(struct token_fetch *f, CURLcode rc);

static void check_multi_info(struct sl_httpc *c) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        enum xfer_kind *kind = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&kind);
        curl_multi_remove_handle(c->multi, easy);   /* msg is invalid from here */
        if (*kind == XFER_CALL) call_attempt_done((struct sl_httpc_call *)kind, rc);
        else token_done((struct token_fetch *)kind, rc);
    }
}

/* ==================== OAuth2 client credentials ==================== */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && is_space(*p)) p++;
    return p;
}

/* Past the JSON string starting at p ('"'), or NULL. */
static const char *skip_string(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

/* Past the JSON value at p, or NULL. */
static const char *skip_value(const char *p, const char *end) {
    int depth = 0;
    while (p < end) {
        if (*p == '"') {
            if (!(p = skip_string(p, end))) return NULL;
        } else if (*p == '{' || *p == '[') {
            depth++, p++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0) return p;
            depth--, p++;
        } else if (*p == ',' && depth == 0) {
            return p;
        } else {
            p++;
        }
        if (depth == 0 && (p >= end || *p == ',' || *p == '}' || *p == ']' || is_space(*p)))
            return p;
    }
    return depth ? NULL : p;
}

/* The value of member key of the JSON object s[0..n), or NULL. Top level
 * only; keys are compared as written. */
static const char *json_member(const char *s, size_t n, const char *key, const char **vend) {
    const char *p = s, *end = s + n;
    size_t kl = strlen(key);
    p = skip_ws(p, end);
    if (p == end || *p++ != '{') return NULL;
    for (;;) {
        p = skip_ws(p, end);
        if (p == end || *p != '"') return NULL;
        const char *k = p + 1, *q = skip_string(p, end);
        if (!q) return NULL;
        bool match = (size_t)(q - 1 - k) == kl && !memcmp(k, key, kl);
        p = skip_ws(q, end);
        if (p == end || *p++ != ':') return NULL;
        p = skip_ws(p, end);
        const char *v = p;
        if (!(p = skip_value(p, end))) return NULL;
        if (match) {
            *vend = p;
            return v;
        }
        p = skip_ws(p, end);
        if (p == end || *p++ != ',') return NULL;
    }
}

/* The JSON string value of member key as a new string (escapes of ASCII
 * only), or NULL. */
static char *json_string(const char *s, size_t n, const char *key) {
    const char *end, *v = json_member(s, n, key, &end);
    struct sl_buf b = {0};
    if (!v || *v != '"') return NULL;
    for (v++; v < end - 1; v++) {
        char ch = *v;
        if (ch == '\\') {
            if (++v >= end - 1) goto bad;
            switch (*v) {
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'u': {
                char hex[5] = {0};
                if (end - 1 - v < 5) goto bad;
                memcpy(hex, v + 1, 4);
                long cp = strtol(hex, NULL, 16);
                if (cp <= 0 || cp >= 0x80) goto bad;
                ch = (char)cp;
                v += 4;
                break;
            }
            default: ch = *v;
            }
        }
        sl_buf_addc(&b, ch);
    }
    return b.data ? b.data : sl_strdup("");
bad:
    if (b.data) explicit_bzero(b.data, b.cap);
    sl_buf_free(&b);
    return NULL;
}

/* A JSON number, or a string holding one ("3600"), as seconds; -1 if none. */
static double json_seconds(const char *s, size_t n, const char *key) {
    const char *end, *v = json_member(s, n, key, &end);
    char num[32];
    if (!v) return -1;
    if (*v == '"') v++;
    size_t l = (size_t)(end - v);
    if (l >= sizeof(num)) return -1;
    memcpy(num, v, l);
    num[l] = '\0';
    char *stop;
    double d = strtod(num, &stop);
    return stop == num || d < 0 ? -1 : d;
}

static void token_fetch_free(struct token_fetch *f) {
    if (!f) return;
    if (f->easy) curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->hdrs);
    wipe_free(f->post);
    if (f->sink.body.data) explicit_bzero(f->sink.body.data, f->sink.body.cap);
    sl_buf_free(&f->sink.body);
    free(f);
}

static void form_add(struct sl_buf *b, CURL *e, const char *name, const char *value) {
    char *esc = curl_easy_escape(e, value, 0);
    if (!esc) {
        sl_log(SL_LOG_ERROR, "httpc", "out of memory encoding a form field");
        abort();
    }
    sl_buf_printf(b, "%s%s=%s", b->len ? "&" : "", name, esc);
    explicit_bzero(esc, strlen(esc));
    curl_free(esc);
}

/* Starts a token request unless one is in flight. */
static void token_fetch_start(struct sl_httpc_endpoint *ep) {
    struct token_fetch *f;
    struct sl_buf form = {0};
    if (ep->fetch) return;
    f = sl_calloc(1, sizeof(*f));
    f->kind = XFER_TOKEN;
    f->ep = ep;
    f->sink.max = SL_HTTPC_TOKEN_MAX_BODY;
    f->easy = easy_new(ep, f, &f->sink, f->errbuf);
    form_add(&form, f->easy, "grant_type", "client_credentials");
    if (ep->scope) form_add(&form, f->easy, "scope", ep->scope);
    if (ep->credentials_in_body) {
        form_add(&form, f->easy, "client_id", ep->client_id);
        form_add(&form, f->easy, "client_secret", ep->client_secret);
    } else {
        curl_easy_setopt(f->easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(f->easy, CURLOPT_USERNAME, ep->client_id);
        curl_easy_setopt(f->easy, CURLOPT_PASSWORD, ep->client_secret);
    }
    f->post = form.data;
    f->hdrs = slist_add(NULL, "Content-Type: application/x-www-form-urlencoded");
    f->hdrs = slist_add(f->hdrs, "Accept: application/json");
    f->hdrs = slist_add(f->hdrs, "Expect:");
    curl_easy_setopt(f->easy, CURLOPT_URL, ep->token_url);
    curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, f->hdrs);
    curl_easy_setopt(f->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)form.len);
    curl_easy_setopt(f->easy, CURLOPT_POSTFIELDS, f->post);
    ep->fetch = f;
    ep->fetch_seq++;
    multi_add(ep->c, f->easy);
}

/* The first active call waiting for fetch seq, or NULL. O(in flight). */
static struct sl_httpc_call *token_waiter(struct sl_httpc_endpoint *ep, unsigned seq) {
    for (struct sl_httpc_call *call = ep->active; call; call = call->next)
        if (call->state == CALL_WAITING_TOKEN && call->wait_fetch == seq) return call;
    return NULL;
}

/* A token request ended: keep the token and start the requests waiting for
 * it, or count the failure as an attempt of each of them. */
static void token_done(struct token_fetch *f, CURLcode rc) {
    struct sl_httpc_endpoint *ep = f->ep;
    unsigned seq = ep->fetch_seq;
    long status = 0;
    char *token = NULL;
    char error[SL_ERRLEN];
    struct sl_httpc_call *call;
    const char *body = sl_buf_cstr(&f->sink.body);
    size_t n = f->sink.body.len;

    ep->fetch = NULL;            /* new waiters start a new fetch */
    error[0] = '\0';
    if (rc != CURLE_OK) {
        snprintf(error, sizeof(error), "%s", f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200) token = json_string(body, n, "access_token");
        if (!token || !*token) {
            char *code = json_string(body, n, "error");
            char *desc = json_string(body, n, "error_description");
            snprintf(error, sizeof(error), "HTTP %ld%s%s%s%s%s", status,
                     code ? ": " : (status == 200 ? ": no access_token in " : ""),
                     code ? code : (status == 200 ? "the response" : ""),
                     desc ? " (" : "", desc ? desc : "", desc ? ")" : "");
            wipe_free(code);
            wipe_free(desc);
        }
    }
    if (token && *token) {
        double ttl = json_seconds(body, n, "expires_in");
        if (ttl < 0) ttl = SL_HTTPC_TOKEN_DEFAULT_TTL_S;
        double ahead = ttl / 4 < SL_HTTPC_TOKEN_REFRESH_AHEAD_S ? ttl / 4 : SL_HTTPC_TOKEN_REFRESH_AHEAD_S;
        double stale = ttl / 10 < SL_HTTPC_TOKEN_STALE_AHEAD_S ? ttl / 10 : SL_HTTPC_TOKEN_STALE_AHEAD_S;
        int64_t now = mono_us();
        wipe_free(ep->old_token);
        ep->old_token = ep->access_token;
        ep->access_token = token;
        ep->token_gen++;
        ep->refresh_us = now + (int64_t)((ttl - ahead) * 1e6);
        ep->stale_us = now + (int64_t)((ttl - stale) * 1e6);
        sl_metrics_add(series(ep, "sluice_http_token_fetches_total", "result", "ok"), 1);
        token_fetch_free(f);
        /* A fresh token is used even if its lifetime is shorter than the
         * margins: waiters run now, never wait again for this fetch. */
        while ((call = token_waiter(ep, seq))) {
            set_token(call);
            call_send(call);
        }
        return;
    }
    wipe_free(token);
    sl_metrics_add(series(ep, "sluice_http_token_fetches_total", "result", "error"), 1);
    char *text = redacted(ep, error);
    sl_log(SL_LOG_WARN, "httpc", "%s: token request failed: %s", ep->name, text);
    token_fetch_free(f);
    /* Each waiter counts it as a failed attempt: it retries (a new fetch)
     * after its backoff, or fails. Callbacks may add waiters of a newer
     * fetch; only this one's are taken. */
    while ((call = token_waiter(ep, seq))) {
        call->attempts++;
        if (retries_left(call)) call_retry_in(call, backoff_ms(call));
        else call_fail(call, SL_HTTPC_EAUTH, "%s: token request failed: %s (%d attempt%s)",
                       ep->name, text, call->attempts, call->attempts == 1 ? "" : "s");
    }
    free(text);
}

/* ==================== Endpoints ==================== */

static char **strv_dup(const char *const *v, size_t n) {
    char **d = sl_calloc(n ? n : 1, sizeof(*d));
    for (size_t i = 0; i < n; i++) d[i] = sl_strdup(v[i]);
    return d;
}

static void strv_free(char **v, size_t n, bool wipe) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) {
        if (wipe) wipe_free(v[i]);
        else free(v[i]);
    }
    free(v);
}

static bool http_url(const char *u) {
    return u && (!strncasecmp(u, "http://", 7) || !strncasecmp(u, "https://", 8)) &&
           strlen(u) > (u[4] == ':' ? 7u : 8u);
}

static int check_conf(const struct sl_httpc_endpoint_conf *conf, char *err, size_t errlen) {
    const char *name = conf->name ? conf->name : "(unnamed)";
    const struct sl_httpc_auth *a = &conf->auth;
    if (!conf->name || !*conf->name) {
        sl_errf(err, errlen, "http endpoint: name is required");
        return SL_ERR;
    }
    if (!http_url(conf->url)) {
        sl_errf(err, errlen, "http endpoint %s: url must start with http:// or https://", name);
        return SL_ERR;
    }
    for (size_t i = 0; i < conf->nheaders; i++)
        if (!conf->headers[i] || !header_ok(conf->headers[i])) {
            sl_errf(err, errlen, "http endpoint %s: headers[%zu] is not one \"Name: value\" line",
                    name, i + 1);
            return SL_ERR;
        }
    if (conf->method && (!*conf->method || strspn(conf->method, TOKEN_CHARS) != strlen(conf->method))) {
        sl_errf(err, errlen, "http endpoint %s: method \"%s\" is not an HTTP method name", name,
                conf->method);
        return SL_ERR;
    }
    if (conf->timeout_ms < 0 || conf->connect_timeout_ms < 0 || conf->retries < 0 ||
        conf->backoff_base_ms < 0 || conf->backoff_max_ms < 0 || conf->retry_after_max_ms < 0) {
        sl_errf(err, errlen, "http endpoint %s: timeouts, retries and backoff must not be negative", name);
        return SL_ERR;
    }
    if (a->kind == SL_HTTPC_AUTH_BEARER && (!a->token || !*a->token)) {
        sl_errf(err, errlen, "http endpoint %s: auth bearer needs a token (is its variable set?)", name);
        return SL_ERR;
    }
    if (a->kind == SL_HTTPC_AUTH_OAUTH2) {
        const char *missing = !http_url(a->token_url) ? "token_url (http:// or https://)"
                            : !a->client_id || !*a->client_id ? "client_id"
                            : !a->client_secret || !*a->client_secret ? "client_secret" : NULL;
        if (missing) {
            sl_errf(err, errlen, "http endpoint %s: auth oauth2 needs %s", name, missing);
            return SL_ERR;
        }
    }
    return SL_OK;
}

/* "endpoint=\"name\"" with the name escaped for a label value. */
static char *label_of(const char *name) {
    struct sl_buf b = {0};
    sl_buf_adds(&b, "endpoint=\"");
    for (const char *p = name; *p; p++) {
        if (*p == '"' || *p == '\\') sl_buf_addc(&b, '\\');
        if (*p == '\n') sl_buf_adds(&b, "\\n");
        else sl_buf_addc(&b, *p);
    }
    sl_buf_addc(&b, '"');
    return b.data;
}

static void metrics_resolve(struct sl_httpc_endpoint *ep) {
    char le[32];
    ep->m_requests = sl_metrics_counter("sluice_http_requests_total", ep->labels);
    ep->m_retries = sl_metrics_counter("sluice_http_retries_total", ep->labels);
    ep->m_rejected = sl_metrics_counter("sluice_http_rejected_total", ep->labels);
    for (int i = 0; i < 6; i++)
        ep->m_codes[i] = series(ep, "sluice_http_responses_total", "code",
                                (const char *[]){"other", "1xx", "2xx", "3xx", "4xx", "5xx"}[i]);
    for (size_t i = 0; i <= SL_HTTPC_NBUCKETS; i++) {
        if (i < SL_HTTPC_NBUCKETS) snprintf(le, sizeof(le), "%g", duration_le[i]);
        else snprintf(le, sizeof(le), "+Inf");
        ep->m_buckets[i] = series(ep, "sluice_http_duration_seconds_bucket", "le", le);
    }
    ep->m_count = sl_metrics_counter("sluice_http_duration_seconds_count", ep->labels);
    gauges(ep);
}

struct sl_httpc_endpoint *sl_httpc_endpoint_create(struct sl_httpc *c,
        const struct sl_httpc_endpoint_conf *conf, char *err, size_t errlen) {
    const struct sl_httpc_auth *a = &conf->auth;
    struct sl_httpc_endpoint *ep;
    size_t ns = 0;

    if (check_conf(conf, err, errlen) != SL_OK) return NULL;
    ep = sl_calloc(1, sizeof(*ep));
    ep->c = c;
    ep->name = sl_strdup(conf->name);
    ep->url = sl_strdup(conf->url);
    ep->method = conf->method ? sl_strdup(conf->method) : NULL;
    ep->headers = strv_dup(conf->headers, conf->nheaders);
    ep->nheaders = conf->nheaders;
    ep->timeout_ms = conf->timeout_ms ? conf->timeout_ms : SL_HTTPC_DEFAULT_TIMEOUT_MS;
    ep->connect_timeout_ms = conf->connect_timeout_ms ? conf->connect_timeout_ms
                                                      : SL_HTTPC_DEFAULT_CONNECT_TIMEOUT_MS;
    ep->max_in_flight = conf->max_in_flight ? conf->max_in_flight : SL_HTTPC_DEFAULT_MAX_IN_FLIGHT;
    ep->max_queued = conf->max_queued ? conf->max_queued
                                      : SL_HTTPC_DEFAULT_QUEUE_FACTOR * ep->max_in_flight;
    ep->retries = conf->retries;
    ep->backoff_base_ms = conf->backoff_base_ms ? conf->backoff_base_ms : SL_HTTPC_DEFAULT_BACKOFF_BASE_MS;
    ep->backoff_max_ms = conf->backoff_max_ms ? conf->backoff_max_ms : SL_HTTPC_DEFAULT_BACKOFF_MAX_MS;
    if (ep->backoff_max_ms < ep->backoff_base_ms) ep->backoff_max_ms = ep->backoff_base_ms;
    ep->retry_after_max_ms = conf->retry_after_max_ms ? conf->retry_after_max_ms
                                                      : SL_HTTPC_DEFAULT_RETRY_AFTER_MAX_MS;
    ep->max_response = conf->max_response ? conf->max_response : SL_HTTPC_DEFAULT_MAX_RESPONSE;
    ep->tls_insecure = conf->tls_insecure;
    ep->ca_file = conf->ca_file ? sl_strdup(conf->ca_file) : NULL;
    ep->auth = a->kind;
    ep->classify = conf->classify;
    ep->classify_arg = conf->classify_arg;

    ep->secrets = sl_calloc(conf->nsecrets + 2, sizeof(*ep->secrets));
    for (size_t i = 0; i < conf->nsecrets; i++)
        if (conf->secrets[i] && *conf->secrets[i]) ep->secrets[ns++] = sl_strdup(conf->secrets[i]);
    if (a->kind == SL_HTTPC_AUTH_BEARER) {
        struct sl_buf b = {0};
        sl_buf_printf(&b, "Authorization: Bearer %s", a->token);
        ep->bearer_header = b.data;
        ep->secrets[ns++] = sl_strdup(a->token);
    } else if (a->kind == SL_HTTPC_AUTH_OAUTH2) {
        ep->token_url = sl_strdup(a->token_url);
        ep->client_id = sl_strdup(a->client_id);
        ep->client_secret = sl_strdup(a->client_secret);
        ep->scope = a->scope && *a->scope ? sl_strdup(a->scope) : NULL;
        ep->credentials_in_body = a->credentials_in_body;
        ep->secrets[ns++] = sl_strdup(a->client_secret);
    }
    ep->nsecrets = ns;
    ep->labels = label_of(ep->name);
    metrics_resolve(ep);

    ep->next = c->eps;
    if (c->eps) c->eps->prev = ep;
    c->eps = ep;
    size_connections(c);
    return ep;
}

void sl_httpc_endpoint_destroy(struct sl_httpc_endpoint *ep) {
    struct sl_httpc_call *call;
    if (!ep) return;
    struct sl_httpc *c = ep->c;
    assert(!c->depth || c->closing);   /* not from a callback of this client */
    assert(!ep->closing);
    ep->closing = true;
    if (ep->fetch) {
        curl_multi_remove_handle(c->multi, ep->fetch->easy);
        token_fetch_free(ep->fetch);
        ep->fetch = NULL;
    }
    while ((call = ep->qhead) || (call = ep->active))
        call_finish(call, SL_HTTPC_ECANCELLED, "request cancelled: the endpoint was closed");
    gauges(ep);

    if (ep->prev) ep->prev->next = ep->next;
    else c->eps = ep->next;
    if (ep->next) ep->next->prev = ep->prev;
    size_connections(c);

    free(ep->name);
    free(ep->url);
    free(ep->method);
    strv_free(ep->headers, ep->nheaders, true);
    strv_free(ep->secrets, ep->nsecrets, true);
    free(ep->ca_file);
    wipe_free(ep->bearer_header);
    free(ep->token_url);
    free(ep->client_id);
    wipe_free(ep->client_secret);
    free(ep->scope);
    wipe_free(ep->access_token);
    wipe_free(ep->old_token);
    free(ep->labels);
    free(ep);
}

/* ==================== Client ==================== */

struct sl_httpc *sl_httpc_create(struct event_base *base, char *err, size_t errlen) {
    struct sl_httpc *c = NULL;
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        sl_errf(err, errlen, "http client: curl_global_init: %s", curl_easy_strerror(rc));
        return NULL;
    }
    c = sl_calloc(1, sizeof(*c));
    c->base = base;
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, timer_cb, c);
    if (!c->multi || !c->timer) {
        sl_errf(err, errlen, "http client: cannot create the curl multi handle or its timer");
        if (c->multi) curl_multi_cleanup(c->multi);
        if (c->timer) event_free(c->timer);
        free(c);
        curl_global_cleanup();
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    size_connections(c);
    if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != (ssize_t)sizeof(c->rng) || !c->rng)
        c->rng = (uint64_t)mono_us() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    if (!c->rng) c->rng = 1;
    return c;
}

void sl_httpc_destroy(struct sl_httpc *c) {
    if (!c) return;
    assert(!c->depth);                 /* not from a callback of this client */
    c->closing = true;
    while (c->eps) sl_httpc_endpoint_destroy(c->eps);
    curl_multi_cleanup(c->multi);   /* closes kept-alive connections: sock_cb REMOVEs */
    while (c->socks) sock_free(c->socks);
    event_free(c->timer);
    free(c);
    curl_global_cleanup();
}

/* ==================== Responses ==================== */

const char *sl_httpc_header(const struct sl_httpc_response *r, const char *name) {
    const char *found = NULL;
    for (size_t i = 0; i < r->nheaders; i++)
        if (!strcasecmp(r->headers[i].name, name)) found = r->headers[i].value;
    return found;
}

const char *sl_httpc_result_name(enum sl_httpc_result result) {
    return (unsigned)result < SL_HTTPC_RESULT_COUNT ? result_names[result] : "unknown";
}
