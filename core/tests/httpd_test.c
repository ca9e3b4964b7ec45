/* httpd_test.c -- the HTTP/1.1 server: the parser on a table of requests fed
 * whole and byte by byte, and accept() back-off when descriptors run out
 * (RLIMIT_NOFILE lowered in this process). */
#define _GNU_SOURCE
#include "httpd.h"
#include "sl.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/event.h>

#define ALL (SL_HTTPD_GET | SL_HTTPD_HEAD | SL_HTTPD_POST | SL_HTTPD_OPTIONS)

/* ==================== Parser ==================== */

/* Parses req whole (step 0) or in pieces of step bytes; returns the state. */
static enum sl_httpd_pstate parse(struct sl_httpd_parser *p, const char *req, size_t step) {
    size_t n = strlen(req), off = 0;
    sl_httpd_parser_init(p, 256, 64, ALL);
    while (off < n && p->state != SL_HTTPD_P_DONE && p->state != SL_HTTPD_P_ERROR) {
        size_t len = step && n - off > step ? step : n - off;
        size_t used = sl_httpd_parse(p, req + off, len);
        if (used == 0) break;
        off += used;
    }
    return p->state;
}

static void parser(void) {
    static const struct { const char *name, *req; int error; const char *body; } cases[] = {
        {"a GET", "GET /i?e=pv HTTP/1.1\r\nHost: x\r\n\r\n", 0, ""},
        {"bare LF line ends", "GET / HTTP/1.0\nHost: x\n\n", 0, ""},
        {"a POST with a body", "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 0, "hello"},
        {"a chunked body", "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nTrailer: 1\r\n\r\n", 0, "hello"},
        {"TRACE", "TRACE / HTTP/1.1\r\n\r\n", 405, NULL},
        {"CONNECT", "CONNECT x:443 HTTP/1.1\r\n\r\n", 405, NULL},
        {"an unknown method", "BREW / HTTP/1.1\r\n\r\n", 405, NULL},
        {"a declared length over max_body", "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 413, NULL},
        {"a chunked body over max_body", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         "40\r\n", 0, NULL},
        {"chunks adding up over max_body", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                           "30\r\n000000000000000000000000000000000000000000000000\r\n11\r\n", 413, NULL},
        {"Expect other than 100-continue", "POST / HTTP/1.1\r\nExpect: x\r\nContent-Length: 1\r\n\r\n", 417, NULL},
        {"a head over max_head", "GET / HTTP/1.1\r\nX: %300\r\n\r\n", 431, NULL},
        {"garbage", "HELLO\r\n\r\n", 400, NULL},
        {"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 400, NULL},
        {"an absolute target", "GET http://x/ HTTP/1.1\r\n\r\n", 400, NULL},
        {"Content-Length and chunked", "POST / HTTP/1.1\r\nContent-Length: 1\r\n"
                                       "Transfer-Encoding: chunked\r\n\r\n", 400, NULL},
        {"two different lengths", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, NULL},
        {"a signed length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, NULL},
        {"a folded header", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, NULL},
        {"a space before the colon", "GET / HTTP/1.1\r\nX : a\r\n\r\n", 400, NULL},
        {"a control byte in a value", "GET / HTTP/1.1\r\nX: a\001b\r\n\r\n", 400, NULL},
        {"a bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, NULL},
        {"chunk data not followed by CRLF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                            "1\r\nab\r\n", 400, NULL},
    };
    struct sl_httpd_parser p;
    char name[160], big[600];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *req = cases[i].req;
        if (strstr(req, "%300")) {
            snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX: %0300d\r\n\r\n", 0);
            req = big;
        }
        for (size_t step = 0; step <= 1; step++) {
            enum sl_httpd_pstate st = parse(&p, req, step);
            bool ok;
            if (cases[i].error) {
                ok = st == SL_HTTPD_P_ERROR && p.error == cases[i].error;
            } else if (cases[i].body) {
                ok = st == SL_HTTPD_P_DONE && p.body.len == strlen(cases[i].body) &&
                     memcmp(p.body.data ? p.body.data : "", cases[i].body, p.body.len) == 0;
            } else {
                ok = st != SL_HTTPD_P_ERROR && st != SL_HTTPD_P_DONE; /* waits for more */
            }
            snprintf(name, sizeof(name), "%s (%s)", cases[i].name, step ? "byte by byte" : "whole");
            if (!ok) printf("# state %d error %d\n", st, p.error);
            TEST(name, ok);
            sl_httpd_parser_free(&p);
        }
    }
    parse(&p, "GET / HTTP/1.1\r\nOrigin: http://a\r\nConnection: close\r\n\r\n", 0);
    TEST("headers are found case-insensitively",
         strcmp(sl_httpd_parser_header(&p, "origin"), "http://a") == 0);
    TEST("Connection: close ends keep-alive", !p.keep_alive);
    sl_httpd_parser_free(&p);
    parse(&p, "GET / HTTP/1.0\r\n\r\n", 0);
    TEST("HTTP/1.0 closes by default", !p.keep_alive);
    sl_httpd_parser_free(&p);

    /* A head far over its bound keeps the Origin for CORS, and memory bounded. */
    struct sl_buf huge = {0};
    sl_buf_adds(&huge, "POST / HTTP/1.1\r\nOrigin: http://shop\r\nX: ");
    for (int i = 0; i < 100000; i++) sl_buf_addc(&huge, 'a');
    sl_buf_adds(&huge, "\r\n\r\n");
    sl_httpd_parser_init(&p, 8192, 64, ALL);  /* read up to 16 x 8 KB before giving up */
    size_t used = sl_httpd_parse(&p, huge.data, huge.len);
    TEST("a 100 KB header line gets 431 at the end of the head",
         used == huge.len && p.state == SL_HTTPD_P_ERROR && p.error == 431);
    TEST("its Origin is kept", strcmp(p.origin, "http://shop") == 0);
    TEST("and the dropped line was not buffered", p.line.cap <= 8192 && p.head.cap <= 8192);
    sl_httpd_parser_free(&p);
    sl_httpd_parser_init(&p, 256, 64, ALL);
    used = sl_httpd_parse(&p, huge.data, huge.len);
    TEST("past 16 x max_head (at least 64 KB) of head: 431 at once, the rest unread",
         used < huge.len && used <= 65536 + 4096 && p.state == SL_HTTPD_P_ERROR && p.error == 431);
    sl_httpd_parser_free(&p);
    sl_buf_free(&huge);
}

/* ==================== Accept back-off ==================== */

static int answered;

static void on_req(struct sl_httpd_req *req, void *arg) {
    (void)arg;
    answered++;
    sl_httpd_reply(req, 200, "OK", "ok", 2);
}

static int connect_to(int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void run_ms(struct event_base *base, int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void backoff(void) {
    struct event_base *base = event_base_new();
    struct sl_httpd_conf conf = {.name = "test", .listen = "127.0.0.1:0", .max_head = 1024,
                                 .max_body = 1024, .methods = ALL, .max_conns = 1000};
    char err[256];
    struct sl_httpd *h = sl_httpd_create(base, &conf, on_req, NULL, err, sizeof(err));
    struct sl_httpd_stats st;
    struct rlimit old, low;
    int fds[16], nfds = 0, fill[32], nfill = 0;

    TEST("the server starts", h != NULL);
    if (!h) return;
    /* Leave exactly 4 descriptors free: 8 clients connect (they sit in the
     * backlog), the server accepts until it runs out. The process may have
     * inherited descriptors with holes between them, or no stdin: lower the
     * limit to 32 above the lowest free descriptor, take every free one below
     * it, then give back exactly 8 + 4. */
    getrlimit(RLIMIT_NOFILE, &old);
    int first = open("/dev/null", O_RDONLY);
    close(first);
    low = old;
    low.rlim_cur = (rlim_t)first + 32;
    setrlimit(RLIMIT_NOFILE, &low);
    for (int f; nfill < 32 && (f = open("/dev/null", O_RDONLY)) >= 0;) fill[nfill++] = f;
    for (int i = 0; i < 8 + 4 && nfill > 0; i++) close(fill[--nfill]);
    for (int i = 0; i < 8; i++)
        if ((fds[nfds] = connect_to(sl_httpd_port(h))) >= 0) nfds++;
    run_ms(base, 300);
    sl_httpd_stats(h, &st);
    TEST("8 clients connected", nfds == 8);
    TEST("the server accepted what the descriptors allow", st.open == 4);
    TEST("accept() failed, counted, and accepting paused", st.accept_errors >= 1 && st.paused);
    TEST("no spinning: a handful of failures in 300 ms, not thousands",
         st.accept_errors > 0 && st.accept_errors < 20);
    /* Free descriptors: the server closes its side of 2 connections. */
    for (int i = 0; i < 2; i++) {
        if (write(fds[i], "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 38) != 38) break;
    }
    run_ms(base, 300);
    sl_httpd_stats(h, &st);
    TEST("two requests answered", answered == 2);
    TEST("accepting resumed once descriptors were free", st.open == 4 && st.accepted == 6);
    for (int i = 0; i < nfds; i++) close(fds[i]);
    run_ms(base, 1200);
    sl_httpd_stats(h, &st);
    TEST("every client accepted in the end", st.accepted == 8 && !st.paused);
    setrlimit(RLIMIT_NOFILE, &old);
    for (int i = 0; i < nfill; i++) close(fill[i]);
    sl_httpd_destroy(h);
    sl_httpd_destroy(NULL);
    event_base_free(base);
}

int main(void) {
    parser();
    backoff();
    return TEST_DONE();
}
