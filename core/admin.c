/* admin.c -- /metrics, /healthz, /readyz and /status over httpd.c (see
 * admin.h).
 *
 * Bounded as the collector is: GET and HEAD only (405 otherwise, before any
 * body is read), no body at all (413), a head of SL_ADMIN_MAX_HEAD (431),
 * SL_ADMIN_MAX_CONNS connections, httpd.c's deadlines. */
#include "admin.h"
#include "httpd.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

struct sl_admin {
    struct sl_httpd *http;
    sl_admin_metrics_fn *fn;
    sl_admin_ready_fn *ready;
    sl_admin_status_fn *status;
    void *arg;
    uint64_t answers[6];         /* 200, 404, 405, 4xx other, 503, timeouts */
};

static void answer(struct sl_admin *a, struct sl_httpd_req *req, int code,
                   const char *reason, const char *ctype, const char *body, size_t len) {
    int slot = code == 200 ? 0 : code == 404 ? 1 : code == 405 ? 2 : code == 503 ? 4
             : code == 408 ? 5 : 3;
    a->answers[slot]++;
    if (ctype) sl_httpd_add_header(req, "Content-Type", ctype);
    if (code == 405) sl_httpd_add_header(req, "Allow", "GET, HEAD");
    sl_httpd_reply(req, code, reason, body, len);
}

static void handle(struct sl_httpd_req *req, void *arg) {
    struct sl_admin *a = arg;
    const char *uri = sl_httpd_req_target(req);
    int err = sl_httpd_req_error(req);

    if (err) {
        const char *name = sl_httpd_req_error_name(req);
        answer(a, req, err, sl_httpd_reason(err), "text/plain", name, strlen(name));
    } else if (!strcmp(uri, "/metrics")) {
        struct sl_buf b = {0};
        if (a->fn) a->fn(a->arg, &b);
        sl_buf_printf(&b,
            "# HELP sluice_admin_requests_total Admin listener answers by status.\n"
            "# TYPE sluice_admin_requests_total counter\n"
            "sluice_admin_requests_total{status=\"200\"} %llu\n"
            "sluice_admin_requests_total{status=\"404\"} %llu\n"
            "sluice_admin_requests_total{status=\"405\"} %llu\n"
            "sluice_admin_requests_total{status=\"4xx\"} %llu\n"
            "sluice_admin_requests_total{status=\"503\"} %llu\n"
            "sluice_admin_requests_total{status=\"408\"} %llu\n",
            (unsigned long long)a->answers[0], (unsigned long long)a->answers[1],
            (unsigned long long)a->answers[2], (unsigned long long)a->answers[3],
            (unsigned long long)a->answers[4], (unsigned long long)a->answers[5]);
        sl_metrics_render(&b);
        answer(a, req, 200, "OK", "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
        sl_buf_free(&b);
    } else if (!strcmp(uri, "/health") || !strcmp(uri, "/healthz")) {
        answer(a, req, 200, "OK", "text/plain", "ok\n", 3);
    } else if (!strcmp(uri, "/readyz")) {
        char why[256] = "";
        if (!a->ready || a->ready(a->arg, why, sizeof(why))) {
            answer(a, req, 200, "OK", "text/plain", "ready\n", 6);
        } else {
            struct sl_buf b = {0};
            sl_buf_printf(&b, "not ready: %s\n", why);
            answer(a, req, 503, "Service Unavailable", "text/plain", b.data, b.len);
            sl_buf_free(&b);
        }
    } else if (!strcmp(uri, "/status") && a->status) {
        struct sl_buf b = {0};
        a->status(a->arg, &b);
        sl_buf_addc(&b, '\n');
        answer(a, req, 200, "OK", "application/json", b.data, b.len);
        sl_buf_free(&b);
    } else {
        answer(a, req, 404, "Not Found", "text/plain", "not found\n", 10);
    }
}

int sl_admin_parse_listen(const char *listen, char *host, size_t hostlen, int *port) {
    const char *colon = strrchr(listen, ':');
    char *end;
    if (!colon || colon == listen || (size_t)(colon - listen) >= hostlen) return SL_ERR;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535) return SL_ERR;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    *port = (int)p;
    return SL_OK;
}

struct sl_admin *sl_admin_create(struct event_base *base, const char *listen,
                                 sl_admin_metrics_fn *fn, void *arg,
                                 char *err, size_t errlen) {
    struct sl_httpd_conf hc = {.name = "admin", .listen = listen,
        .max_head = SL_ADMIN_MAX_HEAD, .max_body = 0,
        .methods = SL_ADMIN_METHODS, .max_conns = SL_ADMIN_MAX_CONNS};
    char host[256];
    int port;
    struct sl_admin *a;

    if (sl_admin_parse_listen(listen, host, sizeof(host), &port)) {
        sl_errf(err, errlen, "admin: expected host:port, got \"%s\"", listen);
        return NULL;
    }
    a = sl_calloc(1, sizeof(*a));
    a->fn = fn;
    a->arg = arg;
    a->http = sl_httpd_create(base, &hc, handle, a, err, errlen);
    if (!a->http) {
        sl_admin_destroy(a);
        return NULL;
    }
    return a;
}

void sl_admin_destroy(struct sl_admin *a) {
    if (!a) return;
    sl_httpd_destroy(a->http);
    free(a);
}

void sl_admin_set_probes(struct sl_admin *a, sl_admin_ready_fn *ready,
                         sl_admin_status_fn *status) {
    a->ready = ready;
    a->status = status;
}
