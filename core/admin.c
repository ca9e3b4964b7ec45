/* admin.c -- /metrics and /health over evhttp (see admin.h). */
#include "admin.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

struct sl_admin {
    struct evhttp *http;
    sl_admin_metrics_fn *fn;
    void *arg;
};

static void handle(struct evhttp_request *req, void *arg) {
    struct sl_admin *a = arg;
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *body = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    if (!body) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_send_error(req, 405, NULL);
    } else if (!strcmp(uri, "/metrics")) {
        struct sl_buf b = {0};
        if (a->fn) a->fn(a->arg, &b);
        sl_metrics_render(&b);
        evbuffer_add(body, b.data ? b.data : "", b.len);
        sl_buf_free(&b);
        evhttp_add_header(h, "Content-Type", "text/plain; version=0.0.4");
        evhttp_send_reply(req, 200, "OK", body);
    } else if (!strcmp(uri, "/health")) {
        evbuffer_add_printf(body, "ok\n");
        evhttp_add_header(h, "Content-Type", "text/plain");
        evhttp_send_reply(req, 200, "OK", body);
    } else {
        evhttp_send_error(req, 404, NULL);
    }
    evbuffer_free(body);
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
    a->http = evhttp_new(base);
    if (!a->http || evhttp_bind_socket(a->http, host, (ev_uint16_t)port) != 0) {
        sl_errf(err, errlen, "admin: cannot listen on %s", listen);
        sl_admin_destroy(a);
        return NULL;
    }
    evhttp_set_gencb(a->http, handle, a);
    return a;
}

void sl_admin_destroy(struct sl_admin *a) {
    if (!a) return;
    if (a->http) evhttp_free(a->http);
    free(a);
}
