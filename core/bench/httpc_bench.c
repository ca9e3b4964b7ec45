/* httpc_bench.c -- what a request costs the HTTP client.
 *
 * A child process serves POST /invocations with a small JSON answer (evhttp,
 * keep-alive); this process sends N requests of a ~300-byte JSON body through
 * one endpoint, 1 and 32 in flight, and reports requests per second and per
 * CPU-second of this process alone (the server's CPU is the child's). Run:
 *   build/bench/httpc_bench [N] */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "httpc.h"
#include "metrics.h"
#include "sl.h"

#define BENCH_N 20000 /* Requests per measurement unless argv[1] says otherwise. */
#define BENCH_ANSWER "{\"predictions\":[{\"itemIds\":[\"gid://shopify/Product/1\"],\"preds\":[0.9]}]}"

static void serve(struct evhttp_request *req, void *arg) {
    struct evbuffer *b = evbuffer_new();
    (void)arg;
    evbuffer_add(b, BENCH_ANSWER, sizeof(BENCH_ANSWER) - 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/* Forks the server; returns its port (the child never returns). */
static int server_start(pid_t *pid) {
    int fds[2], port = 0;
    if (pipe(fds)) return -1;
    *pid = fork();
    if (*pid == 0) {
        struct event_base *base = event_base_new();
        struct evhttp *http = evhttp_new(base);
        struct evhttp_bound_socket *h = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
        struct sockaddr_in sin;
        socklen_t sl = sizeof(sin);
        getsockname(evhttp_bound_socket_get_fd(h), (struct sockaddr *)&sin, &sl);
        port = ntohs(sin.sin_port);
        evhttp_set_gencb(http, serve, NULL);
        if (write(fds[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
        event_base_dispatch(base);
        _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], &port, sizeof(port)) != sizeof(port)) port = -1;
    close(fds[0]);
    return port;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

struct run {
    struct sl_httpc_endpoint *ep;
    struct sl_httpc_req req;
    long left, done, failed;
};

static void on_done(const struct sl_httpc_response *r, void *arg);

static void send_one(struct run *rn) {
    if (rn->left <= 0) return;
    if (sl_httpc_request(rn->ep, &rn->req, on_done, rn, NULL, NULL, 0) == SL_OK) rn->left--;
}

static void on_done(const struct sl_httpc_response *r, void *arg) {
    struct run *rn = arg;
    rn->done++;
    if (r->result != SL_HTTPC_OK || r->status != 200) rn->failed++;
    send_one(rn);
}

static void measure(struct event_base *base, struct sl_httpc *c, int port, size_t inflight, long n) {
    char url[64], err[SL_ERRLEN], body[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    snprintf(body, sizeof(body), "{\"dataframe_split\":{\"columns\":[\"userId\",\"items\",\"timestamps\"],"
             "\"data\":[[\"6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab\",[\"organic-cotton-tee\","
             "\"linen-shirt\",\"wool-socks\",\"denim-jacket\"],[\"1795667677389\",\"1795667678389\","
             "\"1795667679389\",\"1795667680389\"]]]}}");
    struct sl_httpc_endpoint_conf conf = {.name = "bench", .url = url, .max_in_flight = inflight};
    struct run rn = {.left = n};
    rn.ep = sl_httpc_endpoint_create(c, &conf, err, sizeof(err));
    if (!rn.ep) {
        fprintf(stderr, "httpc_bench: %s\n", err);
        exit(1);
    }
    rn.req.path = "/invocations";
    rn.req.body = body;
    rn.req.len = strlen(body);
    /* warm up: connections open */
    long warm = (long)inflight * 4;
    struct run w = rn;
    w.left = warm;
    for (size_t i = 0; i < inflight; i++) send_one(&w);
    while (w.done < warm) event_base_loop(base, EVLOOP_ONCE);

    double t0 = (double)sl_mono_ms(), c0 = cpu_s();
    for (size_t i = 0; i < inflight; i++) send_one(&rn);
    while (rn.done < n) event_base_loop(base, EVLOOP_ONCE);
    double wall = ((double)sl_mono_ms() - t0) / 1e3, cpu = cpu_s() - c0;
    printf("httpc %2zu in flight: %ld requests, %.0f req/s, %.0f req per CPU-second of the client "
           "(%.1f us CPU each), %ld failed\n",
           inflight, n, n / wall, n / cpu, cpu * 1e6 / n, rn.failed + w.failed);
    sl_httpc_endpoint_destroy(rn.ep);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : BENCH_N;
    char err[SL_ERRLEN];
    pid_t pid;
    signal(SIGPIPE, SIG_IGN);
    int port = server_start(&pid);
    if (port <= 0) {
        fprintf(stderr, "httpc_bench: the server did not start\n");
        return 1;
    }
    struct event_base *base = event_base_new();
    struct sl_httpc *c = sl_httpc_create(base, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "httpc_bench: %s\n", err);
        return 1;
    }
    measure(base, c, port, 1, n);
    measure(base, c, port, 32, n);
    sl_httpc_destroy(c);
    event_base_free(base);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    sl_metrics_reset();
    return 0;
}
