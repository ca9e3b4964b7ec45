/* httpc_test.c -- the HTTP client against real sockets on 127.0.0.1.
 *
 * An evhttp server on the same event_base answers fast, slow, with a status,
 * 429 + Retry-After, a body too large, THROTTLED in a 200 body, an OAuth
 * token endpoint with short-lived tokens and an API that accepts only valid
 * tokens. A raw listener answers garbage or closes without answering. The
 * server counts accepted connections and the requests it holds at once.
 * The same handler also answers over TLS with a certificate made for the
 * test (self-signed, for IP 127.0.0.1), to check that peers are verified. */
#define _GNU_SOURCE
#include "httpc.h"
#include "metrics.h"
#include "sl.h"
#include "test.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define SECRET "very-secret-42"        /* the OAuth client secret */
#define CLIENT "client-1"              /* the OAuth client id */
#define BEARER "bearer-token-77"       /* a static bearer token */

/* ==================== Test server ==================== */

struct pending {                 /* a reply sent later */
    struct evhttp_request *req;
    struct event *ev;
    int code;
    char *body;
    char *ctype;
    struct pending *next;
};

struct raw {                     /* a connection of the raw listener */
    struct bufferevent *bev;
    struct raw *next;
};

static struct srv {
    struct event_base *base;
    struct evhttp *http;
    int port;
    struct evhttp *https;        /* the same handler over TLS */
    int tls_port;
    SSL_CTX *tls;
    char cert_file[64];          /* the certificate, PEM, for ca_file */
    struct evconnlistener *raw_l;
    int raw_port;
    struct raw *raws;
    struct pending *pending;
    int conns;                   /* connections accepted by evhttp */
    int raw_conns;               /* by the raw listener */
    int cur, max_cur;            /* requests held at once, the most seen */
    int hits;                    /* requests received */
    int flaky_left;              /* /flaky answers 500 while > 0 */
    int throttled_left;          /* /throttled answers THROTTLED while > 0 */
    int ra_left;                 /* /retry-after/N answers 429 while > 0 */
    int token_fetches;
    int token_n;                 /* number of the last token issued */
    double token_ttl;            /* expires_in of new tokens, s */
    int token_delay_ms;
    bool token_fail;             /* answer 401 invalid_client, echoing the secret */
    int revoked_below;           /* tokens numbered below are refused */
    int64_t token_expiry[64];    /* per token number, ms (monotonic) */
    char token_auth[256];        /* Authorization of the last token request */
    char token_form[256];        /* body of the last token request */
    char api_auth[256];          /* Authorization of the last /api request */
} S;

static void reply_now(struct evhttp_request *req, int code, const char *body, const char *ctype) {
    struct evbuffer *b = evbuffer_new();
    if (body) evbuffer_add(b, body, strlen(body));
    if (ctype) evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Err", b);
    evbuffer_free(b);
    S.cur--;
}

static void pending_cb(evutil_socket_t fd, short what, void *arg) {
    struct pending *p = arg, **pp;
    (void)fd; (void)what;
    for (pp = &S.pending; *pp != p; pp = &(*pp)->next) {}
    *pp = p->next;
    reply_now(p->req, p->code, p->body, p->ctype);
    event_free(p->ev);
    free(p->body);
    free(p->ctype);
    free(p);
}

static void reply_later(struct evhttp_request *req, int ms, int code, const char *body,
                        const char *ctype) {
    struct pending *p = sl_calloc(1, sizeof(*p));
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    p->req = req;
    p->code = code;
    p->body = body ? sl_strdup(body) : NULL;
    p->ctype = ctype ? sl_strdup(ctype) : NULL;
    p->ev = evtimer_new(S.base, pending_cb, p);
    p->next = S.pending;
    S.pending = p;
    evtimer_add(p->ev, &tv);
}

static void copy_header(struct evhttp_request *req, const char *name, char *out, size_t n) {
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
    snprintf(out, n, "%s", v ? v : "");
}

static char *body_of(struct evhttp_request *req) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char *s = sl_malloc(n + 1);
    evbuffer_copyout(in, s, n);
    s[n] = '\0';
    return s;
}

static void token_endpoint(struct evhttp_request *req) {
    char body[256];
    S.token_fetches++;
    copy_header(req, "Authorization", S.token_auth, sizeof(S.token_auth));
    char *form = body_of(req);
    snprintf(S.token_form, sizeof(S.token_form), "%s", form);
    free(form);
    if (S.token_fail) {
        reply_later(req, S.token_delay_ms, 401,
                    "{\"error\":\"invalid_client\",\"error_description\":\"bad secret " SECRET "\"}",
                    "application/json");
        return;
    }
    S.token_n++;
    S.token_expiry[S.token_n % 64] = sl_mono_ms() + (int64_t)(S.token_ttl * 1000);
    snprintf(body, sizeof(body),
             "{\"token_type\":\"Bearer\",\"expires_in\":%g,\"scope\":\"all-apis\","
             "\"access_token\":\"tok-%d\"}", S.token_ttl, S.token_n);
    reply_later(req, S.token_delay_ms, 200, body, "application/json");
}

static void api_endpoint(struct evhttp_request *req) {
    int n;
    char body[64];
    copy_header(req, "Authorization", S.api_auth, sizeof(S.api_auth));
    if (sscanf(S.api_auth, "Bearer tok-%d", &n) != 1 || n < S.revoked_below || n > S.token_n ||
        sl_mono_ms() > S.token_expiry[n % 64]) {
        reply_now(req, 401, "{\"error\":\"invalid token\"}", "application/json");
        return;
    }
    snprintf(body, sizeof(body), "tok-%d", n);
    reply_later(req, 20, 200, body, "text/plain");   /* held a little: concurrency */
}

static void handle(struct evhttp_request *req, void *arg) {
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    int n;
    (void)arg;
    S.hits++;
    if (++S.cur > S.max_cur) S.max_cur = S.cur;
    if (!strcmp(path, "/fast")) {
        reply_now(req, 200, "ok", "text/plain");
    } else if (!strcmp(path, "/echo")) {
        struct evkeyvalq *out = evhttp_request_get_output_headers(req);
        char v[256];
        copy_header(req, "Authorization", v, sizeof(v));
        evhttp_add_header(out, "X-Got-Auth", v);
        copy_header(req, "Content-Type", v, sizeof(v));
        evhttp_add_header(out, "X-Got-Type", v);
        copy_header(req, "X-Test", v, sizeof(v));
        evhttp_add_header(out, "X-Got-Test", v);
        evhttp_add_header(out, "X-Got-Method",
                          evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "other");
        char *body = body_of(req);
        reply_now(req, 200, body, "application/json; charset=utf-8");
        free(body);
    } else if (sscanf(path, "/slow/%d", &n) == 1) {
        reply_later(req, n, 200, "slow", "text/plain");
    } else if (sscanf(path, "/status/%d", &n) == 1) {
        reply_now(req, n, "status", "text/plain");
    } else if (sscanf(path, "/retry-after/%d", &n) == 1) {
        if (S.ra_left > 0) {
            char v[16];
            S.ra_left--;
            snprintf(v, sizeof(v), "%d", n);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", v);
            reply_now(req, 429, "slow down", "text/plain");
        } else {
            reply_now(req, 200, "after", "text/plain");
        }
    } else if (!strcmp(path, "/flaky")) {
        if (S.flaky_left-- > 0) reply_now(req, 500, "flaky", "text/plain");
        else reply_now(req, 200, "recovered", "text/plain");
    } else if (!strcmp(path, "/throttled")) {
        if (S.throttled_left-- > 0)
            reply_now(req, 200, "{\"errors\":[{\"extensions\":{\"code\":\"THROTTLED\"}}]}",
                      "application/json");
        else
            reply_now(req, 200, "{\"data\":{}}", "application/json");
    } else if (!strcmp(path, "/big")) {
        char *big = sl_malloc(100001);
        memset(big, 'x', 100000);
        big[100000] = '\0';
        reply_now(req, 200, big, "text/plain");
        free(big);
    } else if (!strcmp(path, "/token")) {
        token_endpoint(req);
    } else if (!strcmp(path, "/api")) {
        api_endpoint(req);
    } else {
        reply_now(req, 404, "no such path", "text/plain");
    }
}

static struct bufferevent *count_conn(struct event_base *base, void *arg) {
    (void)arg;
    S.conns++;
    return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

static void raw_free(struct bufferevent *bev) {
    for (struct raw **pp = &S.raws; *pp; pp = &(*pp)->next)
        if ((*pp)->bev == bev) {
            struct raw *r = *pp;
            *pp = r->next;
            free(r);
            break;
        }
    bufferevent_free(bev);
}

static void raw_written(struct bufferevent *bev, void *arg) {
    (void)arg;
    raw_free(bev);
}

static void raw_event(struct bufferevent *bev, short what, void *arg) {
    (void)what; (void)arg;
    raw_free(bev);
}

/* Once the request head is in: "/garbage" gets bytes that are not HTTP,
 * anything else a close without an answer. */
static void raw_read(struct bufferevent *bev, void *arg) {
    struct evbuffer *in = bufferevent_get_input(bev);
    char head[64] = {0};
    (void)arg;
    if (evbuffer_search(in, "\r\n\r\n", 4, NULL).pos < 0) return;
    evbuffer_copyout(in, head, sizeof(head) - 1);
    if (strstr(head, " /garbage ")) {
        bufferevent_setcb(bev, NULL, raw_written, raw_event, NULL);
        bufferevent_write(bev, "this is not http at all\r\n\r\n", 27);
    } else {
        raw_free(bev);
    }
}

static void raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                       int len, void *arg) {
    struct raw *r = sl_calloc(1, sizeof(*r));
    (void)l; (void)sa; (void)len; (void)arg;
    S.raw_conns++;
    r->bev = bufferevent_socket_new(S.base, fd, BEV_OPT_CLOSE_ON_FREE);
    r->next = S.raws;
    S.raws = r;
    bufferevent_setcb(r->bev, raw_read, NULL, raw_event, NULL);
    bufferevent_enable(r->bev, EV_READ);
}

static int bound_port(evutil_socket_t fd) {
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    return ntohs(sin.sin_port);
}

static struct bufferevent *tls_conn(struct event_base *base, void *arg) {
    (void)arg;
    return bufferevent_openssl_socket_new(base, -1, SSL_new(S.tls), BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

/* A P-256 key and a self-signed certificate for IP 127.0.0.1, valid an
 * hour; the certificate is also written to S.cert_file. */
static void tls_start(struct event_base *base) {
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509V3_CTX v3;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"127.0.0.1", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
    X509_add_ext(x, san, -1);
    X509_EXTENSION_free(san);
    X509_sign(x, key, EVP_sha256());
    snprintf(S.cert_file, sizeof(S.cert_file), "/tmp/httpc_test_cert_XXXXXX");
    int fd = mkstemp(S.cert_file);
    FILE *f = fdopen(fd, "w");
    PEM_write_X509(f, x);
    fclose(f);
    S.tls = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(S.tls, x);
    SSL_CTX_use_PrivateKey(S.tls, key);
    X509_free(x);
    EVP_PKEY_free(key);
    S.https = evhttp_new(base);
    evhttp_set_gencb(S.https, handle, NULL);
    evhttp_set_bevcb(S.https, tls_conn, NULL);
    S.tls_port = bound_port(evhttp_bound_socket_get_fd(
        evhttp_bind_socket_with_handle(S.https, "127.0.0.1", 0)));
}

static void srv_start(struct event_base *base) {
    struct sockaddr_in sin = {.sin_family = AF_INET};
    memset(&S, 0, sizeof(S));
    S.base = base;
    S.http = evhttp_new(base);
    evhttp_set_gencb(S.http, handle, NULL);
    evhttp_set_bevcb(S.http, count_conn, NULL);
    struct evhttp_bound_socket *h = evhttp_bind_socket_with_handle(S.http, "127.0.0.1", 0);
    S.port = bound_port(evhttp_bound_socket_get_fd(h));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    S.raw_l = evconnlistener_new_bind(base, raw_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                      16, (struct sockaddr *)&sin, sizeof(sin));
    S.raw_port = bound_port(evconnlistener_get_fd(S.raw_l));
    tls_start(base);
}

/* Answers what is still pending (frees requests whose client left), then
 * frees the server. */
static void srv_stop(void) {
    while (S.pending) {
        event_active(S.pending->ev, EV_TIMEOUT, 0);
        event_base_loop(S.base, EVLOOP_NONBLOCK);
    }
    while (S.raws) raw_free(S.raws->bev);
    evconnlistener_free(S.raw_l);
    evhttp_free(S.http);
    evhttp_free(S.https);
    SSL_CTX_free(S.tls);
    unlink(S.cert_file);
}

/* Counters back to zero between cases; tokens forgotten. */
static void srv_reset(void) {
    S.conns = S.raw_conns = S.cur = S.max_cur = S.hits = 0;
    S.flaky_left = S.throttled_left = S.ra_left = 0;
    S.token_fetches = S.token_delay_ms = 0;
    S.token_fail = false;
    S.token_ttl = 3600;
    S.revoked_below = S.token_n + 1;
    S.token_auth[0] = S.token_form[0] = S.api_auth[0] = '\0';
}

/* ==================== Client side helpers ==================== */

static struct event_base *base;
static int outstanding;          /* callbacks still expected */

struct got {
    int called;
    enum sl_httpc_result result;
    long status;
    int attempts;
    double elapsed_ms;
    char body[256];
    char error[512];
    char ctype[128];
    char auth[128];              /* X-Got-Auth */
    char type[128];              /* X-Got-Type */
    char test[64];               /* X-Got-Test */
    char method[16];             /* X-Got-Method */
};

static void cp(char *dst, size_t n, const char *s) { snprintf(dst, n, "%s", s ? s : ""); }

static void on_done(const struct sl_httpc_response *r, void *arg) {
    struct got *g = arg;
    g->called++;
    g->result = r->result;
    g->status = r->status;
    g->attempts = r->attempts;
    g->elapsed_ms = r->elapsed_ms;
    cp(g->body, sizeof(g->body), r->body);
    cp(g->error, sizeof(g->error), r->error);
    cp(g->ctype, sizeof(g->ctype), sl_httpc_header(r, "content-type"));
    cp(g->auth, sizeof(g->auth), sl_httpc_header(r, "X-Got-Auth"));
    cp(g->type, sizeof(g->type), sl_httpc_header(r, "x-got-type"));
    cp(g->test, sizeof(g->test), sl_httpc_header(r, "X-GOT-TEST"));
    cp(g->method, sizeof(g->method), sl_httpc_header(r, "X-Got-Method"));
    outstanding--;
}

static void tick(evutil_socket_t fd, short what, void *arg) { (void)fd; (void)what; (void)arg; }

/* Runs the loop until no callback is outstanding or ms passed. */
static void run(int ms) {
    int64_t end = sl_mono_ms() + ms;
    while (outstanding > 0 && sl_mono_ms() < end) event_base_loop(base, EVLOOP_ONCE);
}

/* Runs the loop for ms, whatever happens. */
static void run_for(int ms) {
    int64_t end = sl_mono_ms() + ms;
    while (sl_mono_ms() < end) event_base_loop(base, EVLOOP_ONCE);
}

static char url_buf[128];
static const char *url(const char *path) {
    snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d%s", S.port, path);
    return url_buf;
}

static struct sl_httpc_endpoint_conf conf_of(const char *name, const char *u) {
    struct sl_httpc_endpoint_conf c = {.name = name, .url = u, .timeout_ms = 2000,
                                       .backoff_base_ms = 10, .backoff_max_ms = 100};
    return c;
}

static int get(struct sl_httpc_endpoint *ep, const char *path, struct got *g) {
    struct sl_httpc_req req = {.path = path};
    int rc = sl_httpc_request(ep, &req, on_done, g, NULL, NULL, 0);
    if (rc == SL_OK) outstanding++;
    return rc;
}

/* One request on a new endpoint of conf, run to its end; the endpoint is
 * destroyed after. */
static void one_request(struct sl_httpc *c, const struct sl_httpc_endpoint_conf *conf,
                        const char *path, struct got *g) {
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, conf, NULL, 0);
    get(ep, path, g);
    run(4000);
    sl_httpc_endpoint_destroy(ep);
}

static char token_url_buf[128];
static struct sl_httpc_endpoint_conf oauth_conf(const char *name) {
    struct sl_httpc_endpoint_conf c = conf_of(name, url(""));
    snprintf(token_url_buf, sizeof(token_url_buf), "http://127.0.0.1:%d/token", S.port);
    c.auth.kind = SL_HTTPC_AUTH_OAUTH2;
    c.auth.token_url = token_url_buf;
    c.auth.client_id = CLIENT;
    c.auth.client_secret = SECRET;
    c.auth.scope = "all-apis";
    c.max_in_flight = 16;
    return c;
}

static void base64(const char *in, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static double metric(const char *name, const char *endpoint) {
    char labels[128];
    snprintf(labels, sizeof(labels), "endpoint=\"%s\"", endpoint);
    return sl_metrics_get(name, labels);
}

/* ==================== Cases ==================== */

static void t_success(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("success", url(""));
    const char *hdrs[] = {"X-Test: from-endpoint", "Accept: application/json"};
    const char *extra[] = {"X-Test: from-request"};
    conf.headers = hdrs;
    conf.nheaders = 2;
    conf.auth.kind = SL_HTTPC_AUTH_BEARER;
    conf.auth.token = BEARER;
    char err[SL_ERRLEN];
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, err, sizeof(err));
    struct got g = {0};
    struct sl_httpc_req req = {.path = "/echo", .body = "{\"a\":1}", .len = 7,
                               .headers = extra, .nheaders = 1};
    int rc = sl_httpc_request(ep, &req, on_done, &g, NULL, NULL, 0);
    outstanding += rc == SL_OK;
    TEST("a request is accepted", rc == SL_OK);
    TEST("its callback is never called from inside sl_httpc_request", g.called == 0);
    run(2000);
    TEST("success: called once, 200, ok", g.called == 1 && g.status == 200 && g.result == SL_HTTPC_OK);
    TEST("success: the body comes back", !strcmp(g.body, "{\"a\":1}"));
    TEST("success: one attempt, elapsed measured", g.attempts == 1 && g.elapsed_ms > 0);
    TEST("success: no error text", g.error[0] == '\0');
    TEST("a body is POSTed by default", !strcmp(g.method, "POST"));
    TEST("a body without Content-Type is sent as JSON", !strcmp(g.type, "application/json"));
    TEST("the bearer token is sent", !strcmp(g.auth, "Bearer " BEARER));
    TEST("a request header replaces the endpoint's of the same name", !strcmp(g.test, "from-request"));
    TEST("response headers are read by name, any case",
         !strcmp(g.ctype, "application/json; charset=utf-8"));
    TEST("requests and 2xx responses are counted",
         metric("sluice_http_requests_total", "success") == 1 &&
         sl_metrics_get("sluice_http_responses_total", "endpoint=\"success\",code=\"2xx\"") == 1);
    TEST("the attempt is in the duration histogram",
         metric("sluice_http_duration_seconds_count", "success") == 1 &&
         sl_metrics_get("sluice_http_duration_seconds_bucket", "endpoint=\"success\",le=\"+Inf\"") == 1);

    struct got a = {0}, b = {0};
    get(ep, "/status/404", &a);
    get(ep, "http://127.0.0.1:1/absolute", &b);   /* a full URL replaces the base */
    run(2000);
    TEST("a 404 is a response, not retried", a.result == SL_HTTPC_OK && a.status == 404 && a.attempts == 1);
    TEST("a full URL is used as is (port 1 refuses)", b.result == SL_HTTPC_ECONNECT && b.status == 0);
    TEST("a connection error says why and how often",
         strstr(b.error, "success:") && strstr(b.error, "1 attempt") != NULL);
    sl_httpc_endpoint_destroy(ep);
}

static int seq_left;
static struct sl_httpc_endpoint *seq_ep;
static void on_seq(const struct sl_httpc_response *r, void *arg) {
    int *ok = arg;
    *ok += r->status == 200;
    outstanding--;
    if (--seq_left > 0) {       /* the next one only after this one ended */
        struct sl_httpc_req req = {.path = "/fast"};
        if (sl_httpc_request(seq_ep, &req, on_seq, ok, NULL, NULL, 0) == SL_OK) outstanding++;
    }
}

static void t_keepalive(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("keepalive", url(""));
    int ok = 0;
    seq_ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    seq_left = 5;
    struct sl_httpc_req req = {.path = "/fast"};
    outstanding += sl_httpc_request(seq_ep, &req, on_seq, &ok, NULL, NULL, 0) == SL_OK;
    run(2000);
    TEST("keep-alive: 5 sequential requests succeed", ok == 5);
    TEST("keep-alive: over one connection", S.conns == 1);
    sl_httpc_endpoint_destroy(seq_ep);
}

static void t_timeout(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("timeout", url(""));
    conf.timeout_ms = 150;
    struct got g = {0};
    one_request(c, &conf, "/slow/1000", &g);
    TEST("timeout: ends with SL_HTTPC_ETIMEOUT", g.called == 1 && g.result == SL_HTTPC_ETIMEOUT);
    TEST("timeout: after about timeout_ms", g.elapsed_ms >= 140 && g.elapsed_ms < 800);
    TEST("timeout: no status, an error text", g.status == 0 && strstr(g.error, "timeout:") == g.error);
    TEST("timeout: counted as an error",
         sl_metrics_get("sluice_http_errors_total", "endpoint=\"timeout\",error=\"timeout\"") == 1);
}

static void t_retries(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("retries", url(""));
    conf.retries = 3;
    conf.backoff_base_ms = 40;
    conf.backoff_max_ms = 1000;
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got g = {0};
    S.flaky_left = 2;
    get(ep, "/flaky", &g);
    run(3000);
    TEST("retries: 500, 500, then 200", g.status == 200 && !strcmp(g.body, "recovered"));
    TEST("retries: three attempts", g.attempts == 3 && S.hits == 3);
    /* waits of at least 40/2 and 80/2 ms (jitter keeps half) */
    TEST("retries: backoff waited", g.elapsed_ms >= 60);
    TEST("retries: counted", metric("sluice_http_retries_total", "retries") == 2);
    sl_httpc_endpoint_destroy(ep);

    conf = conf_of("exhausted", url(""));
    conf.retries = 2;
    struct got e = {0};
    S.hits = 0;
    one_request(c, &conf, "/status/503", &e);
    TEST("retries exhausted: the last response is handed over", e.result == SL_HTTPC_OK && e.status == 503);
    TEST("retries exhausted: 1 + retries attempts", e.attempts == 3 && S.hits == 3);
}

static void t_broken(struct sl_httpc *c) {
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d", S.raw_port);
    struct sl_httpc_endpoint_conf conf = conf_of("broken", u);
    conf.retries = 1;
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got closed = {0};
    get(ep, "/close", &closed);
    run(3000);
    TEST("a close without answer is a connection error", closed.result == SL_HTTPC_ECONNECT);
    TEST("a close without answer is retried", closed.attempts == 2 && S.raw_conns == 2);
    struct got garbage = {0};
    S.raw_conns = 0;
    get(ep, "/garbage", &garbage);
    run(3000);
    TEST("garbage is a protocol error", garbage.result == SL_HTTPC_EPROTOCOL && garbage.error[0]);
    TEST("garbage is not retried", garbage.attempts == 1 && S.raw_conns == 1);
    sl_httpc_endpoint_destroy(ep);

    conf = conf_of("big", url(""));
    conf.max_response = 1000;
    conf.retries = 2;
    struct got big = {0};
    one_request(c, &conf, "/big", &big);
    TEST("a body over max_response is SL_HTTPC_ETOOLARGE, not retried",
         big.result == SL_HTTPC_ETOOLARGE && big.attempts == 1 && strstr(big.error, "1000"));
}

static void t_retry_after(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("retry_after", url(""));
    conf.retries = 2;
    conf.retry_after_max_ms = 5000;
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got g = {0};
    S.ra_left = 1;
    get(ep, "/retry-after/1", &g);
    run(4000);
    TEST("Retry-After: 429 then 200", g.status == 200 && g.attempts == 2);
    printf("# Retry-After: 1 s asked, %.1f ms waited\n", g.elapsed_ms);
    TEST("Retry-After: waited at least the header's 1 s (backoff is 10 ms)", g.elapsed_ms >= 1000);
    TEST("Retry-After: and not much more", g.elapsed_ms < 1800);
    sl_httpc_endpoint_destroy(ep);

    conf.retry_after_max_ms = 500;
    conf.name = "retry_after_max";
    ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got m = {0};
    S.ra_left = 1;
    get(ep, "/retry-after/1", &m);
    run(4000);
    TEST("Retry-After over retry_after_max_ms: the 429 is final at once",
         m.status == 429 && m.attempts == 1 && m.elapsed_ms < 500);
    sl_httpc_endpoint_destroy(ep);
}

static struct sl_httpc_endpoint *lim_ep;
static int lim_rc = -99;
static void on_lim(const struct sl_httpc_response *r, void *arg) {
    on_done(r, arg);
    if (lim_rc == -99) {         /* the first to finish: a slot is free again */
        static struct got late;
        lim_rc = get(lim_ep, "/fast", &late);
    }
}

static void t_limits(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("limits", url(""));
    conf.max_in_flight = 3;
    conf.max_queued = 5;
    lim_ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got g[9];
    int accepted = 0;
    memset(g, 0, sizeof(g));
    for (int i = 0; i < 8; i++) {
        struct sl_httpc_req req = {.path = "/slow/60"};
        if (sl_httpc_request(lim_ep, &req, on_lim, &g[i], NULL, NULL, 0) == SL_OK) accepted++, outstanding++;
    }
    TEST("max_in_flight: 3 in flight, 5 queued",
         sl_httpc_in_flight(lim_ep) == 3 && sl_httpc_queued(lim_ep) == 5 && accepted == 8);
    struct sl_httpc_req req = {.path = "/slow/60"};
    char err[SL_ERRLEN];
    TEST("queue bound: the next request is refused with SL_HTTPC_FULL",
         sl_httpc_request(lim_ep, &req, on_done, &g[8], NULL, err, sizeof(err)) == SL_HTTPC_FULL &&
         strstr(err, "3 requests in flight and 5 queued"));
    TEST("queue bound: refusals are counted", metric("sluice_http_rejected_total", "limits") == 1);
    run(3000);
    int ok = 0;
    for (int i = 0; i < 8; i++) ok += g[i].called == 1 && g[i].status == 200;
    TEST("max_in_flight: every accepted request succeeds", ok == 8);
    TEST("max_in_flight: the server never held more than 3", S.max_cur == 3);
    TEST("queue bound: the refused request's callback never ran", g[8].called == 0);
    TEST("a callback finds the slot it freed", lim_rc == SL_OK);
    TEST("max_in_flight: queues drain to 0",
         sl_httpc_in_flight(lim_ep) == 0 && sl_httpc_queued(lim_ep) == 0);
    sl_httpc_endpoint_destroy(lim_ep);
}

static void t_cancel(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("cancel", url(""));
    conf.max_in_flight = 1;
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got a = {0}, b = {0}, d = {0};
    struct sl_httpc_call *ca, *cb;
    struct sl_httpc_req slow = {.path = "/slow/50"}, fast = {.path = "/fast"};
    sl_httpc_request(ep, &slow, on_done, &a, &ca, NULL, 0);
    sl_httpc_request(ep, &slow, on_done, &b, &cb, NULL, 0);
    sl_httpc_request(ep, &fast, on_done, &d, NULL, NULL, 0);
    outstanding++;
    sl_httpc_cancel(cb);         /* queued */
    TEST("cancel: a queued request leaves the queue", sl_httpc_queued(ep) == 1);
    sl_httpc_cancel(ca);         /* running: its slot goes to the next */
    TEST("cancel: a running request frees its slot for the next",
         sl_httpc_in_flight(ep) == 1 && sl_httpc_queued(ep) == 0);
    run(2000);
    TEST("cancel: cancelled callbacks are not called", a.called == 0 && b.called == 0);
    TEST("cancel: the request after them runs", d.called == 1 && d.status == 200);
    sl_httpc_endpoint_destroy(ep);
}

static void t_tls(struct sl_httpc *c) {
    char u[64];
    snprintf(u, sizeof(u), "https://127.0.0.1:%d", S.tls_port);
    struct sl_httpc_endpoint_conf conf = conf_of("tls_default", u);
    conf.retries = 2;
    struct got g = {0};
    one_request(c, &conf, "/fast", &g);
    TEST("TLS: an untrusted certificate is refused by default",
         g.result == SL_HTTPC_ETLS && g.status == 0 && S.hits == 0);
    TEST("TLS: a verification failure is not retried", g.attempts == 1);

    conf = conf_of("tls_ca", u);
    conf.ca_file = S.cert_file;
    struct got v = {0};
    one_request(c, &conf, "/fast", &v);
    TEST("TLS: with its CA given, the peer is verified and answers", v.status == 200 && !strcmp(v.body, "ok"));

    conf = conf_of("tls_insecure", u);
    conf.tls_insecure = true;
    struct got i = {0};
    one_request(c, &conf, "/fast", &i);
    TEST("TLS: tls_insecure skips verification", i.status == 200);
}

static enum sl_httpc_verdict classify(const struct sl_httpc_response *r, void *arg, int64_t *delay) {
    int *seen = arg;
    (*seen)++;
    if (r->status == 200 && strstr(r->body, "\"THROTTLED\"")) {
        *delay = 5;
        return SL_HTTPC_RETRY;
    }
    return SL_HTTPC_DEFAULT;
}

static void t_classify(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("classify", url(""));
    int seen = 0;
    conf.retries = 3;
    conf.classify = classify;
    conf.classify_arg = &seen;
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got g = {0};
    S.throttled_left = 2;
    get(ep, "/throttled", &g);
    run(2000);
    TEST("classify: a 200 saying THROTTLED is retried", g.attempts == 3 && strstr(g.body, "data"));
    TEST("classify: asked once per response", seen == 3);
    sl_httpc_endpoint_destroy(ep);
}

static void t_oauth_once(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = oauth_conf("oauth");
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got g[8];
    char basic[128], expect[160];
    memset(g, 0, sizeof(g));
    S.token_delay_ms = 50;
    for (int i = 0; i < 8; i++) get(ep, "/api", &g[i]);
    run(3000);
    int ok = 0;
    for (int i = 0; i < 8; i++) ok += g[i].status == 200 && !strcmp(g[i].body, "tok-1") && g[i].attempts == 1;
    TEST("oauth: 8 concurrent requests all succeed with the token", ok == 8);
    TEST("oauth: the token was fetched once for them", S.token_fetches == 1);
    base64(CLIENT ":" SECRET, basic);
    snprintf(expect, sizeof(expect), "Basic %s", basic);
    TEST("oauth: client credentials go as HTTP Basic", !strcmp(S.token_auth, expect));
    TEST("oauth: the form asks for client_credentials with the scope",
         !strcmp(S.token_form, "grant_type=client_credentials&scope=all-apis"));

    struct got again = {0};
    get(ep, "/api", &again);
    run(2000);
    TEST("oauth: the cached token serves later requests", again.status == 200 && S.token_fetches == 1);

    /* 401 with a token the server revoked: refresh, one more attempt. */
    S.revoked_below = S.token_n + 1;
    struct got r = {0};
    get(ep, "/api", &r);
    run(2000);
    TEST("oauth 401: refreshed and retried once", r.status == 200 && r.attempts == 2 && S.token_fetches == 2);
    TEST("oauth 401: with the new token", !strcmp(r.body, "tok-2"));
    TEST("oauth: token fetches are counted",
         sl_metrics_get("sluice_http_token_fetches_total", "endpoint=\"oauth\",result=\"ok\"") == 2);

    /* A 401 that a new token does not cure is handed over after one retry. */
    S.revoked_below = 1000;
    struct got d = {0};
    get(ep, "/api", &d);
    run(2000);
    TEST("oauth 401 twice: handed over after one refresh", d.status == 401 && d.attempts == 2);
    sl_httpc_endpoint_destroy(ep);
}

static void t_oauth_expiry(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = oauth_conf("oauth_expiry");
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    int first = S.token_n + 1;
    char want[32];
    S.token_ttl = 1;             /* refreshed from 0.75 s, unused from 0.9 s */
    struct got a = {0};
    get(ep, "/api", &a);
    run(2000);
    snprintf(want, sizeof(want), "tok-%d", first);
    TEST("expiry: first token used", a.status == 200 && !strcmp(a.body, want) && S.token_fetches == 1);

    run_for(760);                /* into the refresh window (0.75-0.9 s), not stale yet */
    struct got b = {0};
    get(ep, "/api", &b);
    run(2000);
    TEST("expiry: near its end the token is still used (no wait)", !strcmp(b.body, want));
    TEST("expiry: and refreshed in the background", S.token_fetches == 2);

    run_for(1000);               /* the second token is stale too */
    struct got d = {0};
    get(ep, "/api", &d);
    run(2000);
    snprintf(want, sizeof(want), "tok-%d", first + 2);
    TEST("expiry: an expired token is fetched anew before the request",
         d.status == 200 && d.attempts == 1 && !strcmp(d.body, want) && S.token_fetches == 3);
    sl_httpc_endpoint_destroy(ep);
}

static void t_secrets(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = oauth_conf("oauth_fail");
    conf.retries = 1;
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got g[3];
    memset(g, 0, sizeof(g));
    S.token_fail = true;         /* the 401 body echoes the secret */
    S.token_delay_ms = 30;       /* still in flight when every waiter retries */
    FILE *log = tmpfile();       /* stderr, where sl_log writes, goes here a while */
    int saved = dup(2);
    fflush(stderr);
    dup2(fileno(log), 2);
    sl_log_set_level(SL_LOG_DEBUG);
    for (int i = 0; i < 3; i++) get(ep, "/api", &g[i]);
    run(3000);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    sl_log_set_level(SL_LOG_ERROR);
    char logged[4096] = {0};
    rewind(log);
    size_t nlog = fread(logged, 1, sizeof(logged) - 1, log);
    fclose(log);
    TEST("token refused: logged, without the secret",
         nlog > 0 && strstr(logged, "token request failed") && !strstr(logged, SECRET));
    int auth = 0, clean = 0;
    for (int i = 0; i < 3; i++) {
        auth += g[i].result == SL_HTTPC_EAUTH && g[i].attempts == 2;
        clean += !strstr(g[i].error, SECRET) && strstr(g[i].error, "invalid_client") &&
                 strstr(g[i].error, SL_HTTPC_REDACTED);
    }
    TEST("token refused: requests fail with SL_HTTPC_EAUTH after their retries", auth == 3);
    TEST("token refused: one fetch per round for all waiters", S.token_fetches == 2);
    TEST("token refused: the error names the cause, the secret is redacted", clean == 3);
    TEST("token refused: counted",
         sl_metrics_get("sluice_http_token_fetches_total", "endpoint=\"oauth_fail\",result=\"error\"") == 2);
    sl_httpc_endpoint_destroy(ep);

    conf = oauth_conf("oauth_down");
    conf.auth.token_url = "http://127.0.0.1:1/" SECRET;   /* nobody listens; the secret in the URL */
    ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct got down = {0};
    get(ep, "/api", &down);
    run(2000);
    TEST("token endpoint down: SL_HTTPC_EAUTH without the secret",
         down.result == SL_HTTPC_EAUTH && down.error[0] && !strstr(down.error, SECRET));

    /* describe: what a trace shows */
    const char *hdrs[] = {"X-Shopify-Access-Token: shpat_abc123", "X-Plain: visible"};
    const char *secrets[] = {"shpat_abc123"};
    struct sl_httpc_req req = {.path = "/graphql.json", .body = "{\"q\":\"shpat_abc123\"}", .len = 20,
                               .headers = hdrs, .nheaders = 2};
    struct sl_buf out = {0};
    sl_httpc_describe(ep, &req, &out);
    const char *t = sl_buf_cstr(&out);
    TEST("describe: method and URL first", strncmp(t, "POST http://127.0.0.1:", 22) == 0 &&
                                           strstr(t, "/graphql.json\n") != NULL);
    TEST("describe: the OAuth header shows its scheme, not a token",
         strstr(t, "\nAuthorization: Bearer " SL_HTTPC_REDACTED "\n") != NULL);
    TEST("describe: token-like headers are redacted, plain ones shown",
         strstr(t, "X-Shopify-Access-Token: " SL_HTTPC_REDACTED "\n") && strstr(t, "X-Plain: visible\n"));
    TEST("describe: the body follows a blank line", strstr(t, "\n\n{\"q\":") != NULL);
    sl_buf_free(&out);
    sl_httpc_endpoint_destroy(ep);

    struct sl_httpc_endpoint_conf bc = conf_of("bearer", "http://user:pa55word@127.0.0.1:1/x");
    bc.auth.kind = SL_HTTPC_AUTH_BEARER;
    bc.auth.token = BEARER;
    bc.secrets = secrets;
    bc.nsecrets = 1;
    ep = sl_httpc_endpoint_create(c, &bc, NULL, 0);
    sl_httpc_describe(ep, &req, &out);
    t = sl_buf_cstr(&out);
    TEST("describe: neither bearer token nor listed secrets appear anywhere",
         !strstr(t, BEARER) && !strstr(t, "shpat_abc123") && strstr(t, "{\"q\":\"" SL_HTTPC_REDACTED "\"}"));
    TEST("describe: a URL's password is redacted",
         strstr(t, "user:" SL_HTTPC_REDACTED "@127.0.0.1") && !strstr(t, "pa55word"));
    sl_buf_free(&out);
    const char *leak = "token " BEARER " and shpat_abc123 end";
    sl_httpc_redact(ep, leak, strlen(leak), &out);
    TEST("redact: every secret replaced, the rest kept",
         !strcmp(sl_buf_cstr(&out), "token " SL_HTTPC_REDACTED " and " SL_HTTPC_REDACTED " end"));
    sl_buf_free(&out);
    sl_httpc_endpoint_destroy(ep);
}

static void t_conf_errors(struct sl_httpc *c) {
    char err[SL_ERRLEN];
    struct sl_httpc_endpoint_conf conf = conf_of("bad", "ftp://x");
    TEST("conf: a URL that is not http(s) is refused, naming the endpoint",
         !sl_httpc_endpoint_create(c, &conf, err, sizeof(err)) && strstr(err, "bad") && strstr(err, "url"));
    const char *hdrs[] = {"NoColon"};
    conf = conf_of("bad", url(""));
    conf.headers = hdrs;
    conf.nheaders = 1;
    TEST("conf: a header without ':' is refused",
         !sl_httpc_endpoint_create(c, &conf, err, sizeof(err)) && strstr(err, "headers[1]"));
    conf = oauth_conf("bad");
    conf.auth.client_secret = "";
    TEST("conf: oauth2 without a client secret is refused",
         !sl_httpc_endpoint_create(c, &conf, err, sizeof(err)) && strstr(err, "client_secret"));
    conf = conf_of("bad", url(""));
    conf.auth.kind = SL_HTTPC_AUTH_BEARER;
    TEST("conf: bearer without a token is refused",
         !sl_httpc_endpoint_create(c, &conf, err, sizeof(err)) && strstr(err, "token"));
    conf = conf_of("inject", url(""));
    struct sl_httpc_endpoint *ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    const char *evil[] = {"X-A: 1\r\nX-Injected: 2"};
    struct sl_httpc_req req = {.path = "/fast", .headers = evil, .nheaders = 1};
    struct got g = {0};
    err[0] = '\0';
    TEST("request: a header with CR/LF is refused, saying which",
         sl_httpc_request(ep, &req, on_done, &g, NULL, err, sizeof(err)) == SL_ERR &&
         strstr(err, "inject") && strstr(err, "header 1"));
    struct sl_httpc_req m = {.path = "/fast", .method = "GET /x HTTP/1.1\r\n"};
    TEST("request: a method that is not a token is refused",
         sl_httpc_request(ep, &m, on_done, &g, NULL, err, sizeof(err)) == SL_ERR && strstr(err, "method"));
    run_for(20);
    TEST("request: refused requests never call back", g.called == 0 && S.hits == 0);
    sl_httpc_endpoint_destroy(ep);
    TEST("result names are stable", !strcmp(sl_httpc_result_name(SL_HTTPC_ETIMEOUT), "timeout") &&
                                    !strcmp(sl_httpc_result_name(SL_HTTPC_ECANCELLED), "cancelled"));
}

static struct sl_httpc_endpoint *dying_ep;
static int refused_in_cancel;
static void on_cancelled(const struct sl_httpc_response *r, void *arg) {
    on_done(r, arg);
    struct sl_httpc_req req = {.path = "/fast"};
    static struct got never;
    refused_in_cancel += sl_httpc_request(dying_ep, &req, on_done, &never, NULL, NULL, 0) == SL_ERR;
}

/* Runs last: destroys the client with requests running, queued, waiting for
 * a retry and waiting for a token. */
static void t_destroy(struct sl_httpc *c) {
    struct sl_httpc_endpoint_conf conf = conf_of("dying", url(""));
    conf.max_in_flight = 3;
    conf.retries = 5;
    conf.backoff_base_ms = 5000;
    dying_ep = sl_httpc_endpoint_create(c, &conf, NULL, 0);
    struct sl_httpc_endpoint_conf oc = oauth_conf("dying_oauth");
    S.token_delay_ms = 1000;
    struct sl_httpc_endpoint *oep = sl_httpc_endpoint_create(c, &oc, NULL, 0);
    struct got g[6];
    memset(g, 0, sizeof(g));
    struct sl_httpc_req slow = {.path = "/slow/1000"}, flaky = {.path = "/status/500"};
    outstanding = 0;
    sl_httpc_request(dying_ep, &flaky, on_cancelled, &g[0], NULL, NULL, 0);   /* will wait 5 s to retry */
    sl_httpc_request(dying_ep, &slow, on_cancelled, &g[1], NULL, NULL, 0);    /* running */
    sl_httpc_request(dying_ep, &slow, on_cancelled, &g[2], NULL, NULL, 0);    /* running */
    sl_httpc_request(dying_ep, &slow, on_cancelled, &g[3], NULL, NULL, 0);    /* queued */
    sl_httpc_request(oep, &slow, on_cancelled, &g[4], NULL, NULL, 0);         /* waits for a token */
    sl_httpc_request(oep, &slow, on_cancelled, &g[5], NULL, NULL, 0);
    run_for(150);
    TEST("destroy: set up with requests in every state",
         sl_httpc_in_flight(dying_ep) == 3 && sl_httpc_queued(dying_ep) == 1 &&
         sl_httpc_in_flight(oep) == 2 && g[0].called == 0);
    sl_httpc_destroy(c);
    int once = 0;
    for (int i = 0; i < 6; i++) once += g[i].called == 1 && g[i].result == SL_HTTPC_ECANCELLED;
    TEST("destroy: every callback called once, with SL_HTTPC_ECANCELLED", once == 6);
    TEST("destroy: requests from those callbacks are refused", refused_in_cancel == 6);
    TEST("destroy: the cancelled text says so", strstr(g[3].error, "cancelled") != NULL);
}

static const struct {
    const char *name;
    void (*fn)(struct sl_httpc *c);
} cases[] = {
    {"success", t_success},
    {"keep-alive", t_keepalive},
    {"timeout", t_timeout},
    {"retries", t_retries},
    {"broken servers", t_broken},
    {"Retry-After", t_retry_after},
    {"limits", t_limits},
    {"cancel", t_cancel},
    {"TLS", t_tls},
    {"classify", t_classify},
    {"oauth", t_oauth_once},
    {"oauth expiry", t_oauth_expiry},
    {"secrets", t_secrets},
    {"conf errors", t_conf_errors},
};

int main(void) {
    char err[SL_ERRLEN];
    signal(SIGPIPE, SIG_IGN);
    sl_log_set_level(SL_LOG_ERROR);
    base = event_base_new();
    struct event *tk = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval ten = {0, 10000};
    event_add(tk, &ten);
    srv_start(base);
    struct sl_httpc *c = sl_httpc_create(base, err, sizeof(err));
    TEST("a client is created", c != NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sl_httpc *own = sl_httpc_create(base, err, sizeof(err));
        srv_reset();
        outstanding = 0;
        printf("# %s\n", cases[i].name);
        cases[i].fn(own);
        TEST("no callback left outstanding", outstanding == 0);
        sl_httpc_destroy(own);
    }
    srv_reset();
    printf("# destroy\n");
    t_destroy(c);
    sl_httpc_destroy(NULL);
    sl_httpc_endpoint_destroy(NULL);
    srv_stop();
    event_free(tk);
    event_base_free(base);
    sl_metrics_reset();
    return TEST_DONE();
}
