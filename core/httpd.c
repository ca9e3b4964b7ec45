/* httpd.c -- a small HTTP/1.1 server on libevent (see httpd.h).
 *
 * One struct conn per accepted socket, on a bufferevent; one timer per
 * connection carries whichever deadline applies (idle, head, body, write).
 * A connection reads one request (struct sl_httpd_req, which owns its parsed
 * bytes), stops reading while the owner holds it, writes the answer, then
 * reads the next one or closes. */
#define _GNU_SOURCE
#include "httpd.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#define SL_HTTPD_HARD_HEAD_FACTOR 16   /* head bytes read (most dropped) before 431 at once */
#define SL_HTTPD_HARD_HEAD_MIN 65536   /* ... but at least this many */
#define SL_HTTPD_CHUNK_LINE_MAX 1024   /* longest chunk-size line */
#define SL_HTTPD_BACKOFF_MIN_MS 10     /* first pause of accept() after EMFILE */
#define SL_HTTPD_BACKOFF_MAX_MS 1000   /* longest pause */
#define SL_HTTPD_LOG_EVERY_MS 10000    /* one log line per kind of trouble per this */
#define SL_HTTPD_REFUSE_EXTRA 64       /* connections beyond the limit kept to answer 503 */
#define SL_HTTPD_LINGER_MS 2000        /* after a refusal, read (and drop) this long before close */

/* ==================== Parser ==================== */

static const struct { const char *name; unsigned bit; } methods[] = {
    {"GET", SL_HTTPD_GET}, {"HEAD", SL_HTTPD_HEAD}, {"POST", SL_HTTPD_POST},
    {"OPTIONS", SL_HTTPD_OPTIONS},
};

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

void sl_httpd_parser_init(struct sl_httpd_parser *p, size_t max_head, size_t max_body,
                          unsigned meths) {
    memset(p, 0, sizeof(*p));
    p->max_head = max_head;
    p->max_body = max_body;
    p->methods = meths;
    p->content_length = -1;
    p->state = SL_HTTPD_P_LINE;
}

void sl_httpd_parser_free(struct sl_httpd_parser *p) {
    sl_buf_free(&p->line);
    sl_buf_free(&p->head);
    sl_buf_free(&p->body);
}

static void refuse(struct sl_httpd_parser *p, int code, const char *name) {
    p->state = SL_HTTPD_P_ERROR;
    p->error = code;
    p->error_name = name;
}

static size_t hard_head(const struct sl_httpd_parser *p) {
    size_t h = p->max_head * SL_HTTPD_HARD_HEAD_FACTOR;
    return h < SL_HTTPD_HARD_HEAD_MIN ? SL_HTTPD_HARD_HEAD_MIN : h;
}

/* Reads up to the end of a line (LF) into p->line, at most bound bytes of
 * it; a longer line is dropped (skip_line). Returns the bytes taken; *done
 * says whether the LF was among them. */
static size_t take_line(struct sl_httpd_parser *p, const char *data, size_t len,
                        size_t bound, bool *done) {
    const char *lf = memchr(data, '\n', len);
    size_t seg = lf ? (size_t)(lf - data) : len, used = lf ? seg + 1 : len;
    *done = lf != NULL;
    if (p->head_bytes + used > hard_head(p)) {
        used = hard_head(p) - p->head_bytes + 1;   /* read no further than the bound */
        p->head_bytes += used;
        refuse(p, 431, "header_too_large");
        return used;
    }
    p->head_bytes += used;
    if (!p->skip_line) {
        if (p->line.len + seg > bound) {
            p->skip_line = true;
            p->line.len = 0;
        } else {
            sl_buf_add(&p->line, data, seg);
        }
    }
    return used;
}

static int parse_request_line(struct sl_httpd_parser *p, const char *s, size_t n) {
    const char *sp1 = memchr(s, ' ', n), *sp2, *ver;
    size_t mlen, tlen;
    if (!sp1 || sp1 == s) return SL_ERR;
    mlen = (size_t)(sp1 - s);
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar((unsigned char)s[i])) return SL_ERR;
    sp2 = memchr(sp1 + 1, ' ', n - mlen - 1);
    if (!sp2 || sp2 == sp1 + 1) return SL_ERR;
    tlen = (size_t)(sp2 - sp1 - 1);
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)sp1[1 + i];
        if (c <= 0x20 || c == 0x7f) return SL_ERR;
    }
    ver = sp2 + 1;
    if ((size_t)(s + n - ver) != 8 || memcmp(ver, "HTTP/1.", 7) != 0 ||
        (ver[7] != '0' && ver[7] != '1'))
        return SL_ERR;
    p->minor = ver[7] - '0';
    p->method = SL_HTTPD_OTHER;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i].name) == mlen && memcmp(methods[i].name, s, mlen) == 0)
            p->method = methods[i].bit;
    p->target = p->head.len;
    sl_buf_add(&p->head, sp1 + 1, tlen);
    sl_buf_addc(&p->head, '\0');
    return SL_OK;
}

/* True if the comma-separated list v holds token (case-insensitive). */
static bool has_token(const char *v, const char *token) {
    size_t tl = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        const char *e = v;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - v) == tl && strncasecmp(v, token, tl) == 0) return true;
        v = e;
    }
    return false;
}

/* One header line (no CR/LF). SL_ERR: malformed (400). */
static int parse_header(struct sl_httpd_parser *p, const char *s, size_t n) {
    const char *colon = memchr(s, ':', n), *v, *ve;
    size_t nl;
    if (!colon || colon == s) return SL_ERR;
    nl = (size_t)(colon - s);
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)s[i])) return SL_ERR;
    v = colon + 1;
    ve = s + n;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    for (const char *c = v; c < ve; c++)
        if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f) return SL_ERR;
    size_t vl = (size_t)(ve - v);
    if (nl == 6 && strncasecmp(s, "origin", 6) == 0 && !p->origin[0] &&
        vl < sizeof(p->origin)) {
        memcpy(p->origin, v, vl);
        p->origin[vl] = '\0';
    }
    if (p->head_over || p->nheaders == SL_HTTPD_MAX_HEADERS ||
        p->head.len + nl + vl + 2 > p->max_head) {
        p->head_over = true;
        return SL_OK;
    }
    p->names[p->nheaders] = p->head.len;
    sl_buf_add(&p->head, s, nl);
    sl_buf_addc(&p->head, '\0');
    p->values[p->nheaders] = p->head.len;
    sl_buf_add(&p->head, v, vl);
    sl_buf_addc(&p->head, '\0');
    p->nheaders++;
    return SL_OK;
}

/* Checks the whole head once it ended and picks what comes next. */
static void finish_head(struct sl_httpd_parser *p) {
    const char *cl = NULL, *te, *ex, *conn;
    const char *target = p->head.data + p->target;
    bool close = false, keep = false;

    p->head_done = true;
    if (p->head_over) { refuse(p, 431, "header_too_large"); return; }
    if (!(p->method & p->methods)) { refuse(p, 405, "method_not_allowed"); return; }
    if (!(target[0] == '/' || (strcmp(target, "*") == 0 && p->method == SL_HTTPD_OPTIONS))) {
        refuse(p, 400, "bad_request");
        return;
    }
    for (size_t i = 0; i < p->nheaders; i++) {
        const char *name = p->head.data + p->names[i], *val = p->head.data + p->values[i];
        if (strcasecmp(name, "Content-Length") == 0) {
            if (cl && strcmp(cl, val) != 0) { refuse(p, 400, "bad_request"); return; }
            cl = val;
        }
    }
    te = sl_httpd_parser_header(p, "Transfer-Encoding");
    if (te) {
        if (strcasecmp(te, "chunked") != 0 || cl) { refuse(p, 400, "bad_request"); return; }
        p->chunked = true;
    }
    if (cl) {
        size_t n = strlen(cl);
        if (n == 0 || n > 18 || strspn(cl, "0123456789") != n) {
            refuse(p, 400, "bad_request");
            return;
        }
        p->content_length = strtoll(cl, NULL, 10);
    }
    ex = sl_httpd_parser_header(p, "Expect");
    if (ex) {
        if (strcasecmp(ex, "100-continue") != 0) {
            refuse(p, 417, "expectation_failed");
            return;
        }
        p->expect_continue = p->minor == 1;
    }
    if (p->content_length > 0 && (uint64_t)p->content_length > p->max_body) {
        refuse(p, 413, "too_large");
        return;
    }
    conn = sl_httpd_parser_header(p, "Connection");
    if (conn) {
        close = has_token(conn, "close");
        keep = has_token(conn, "keep-alive");
    }
    p->keep_alive = !close && (p->minor == 1 || keep);
    if (p->chunked) {
        p->state = SL_HTTPD_P_CHUNK_SIZE;
    } else if (p->content_length > 0) {
        p->chunk_left = (uint64_t)p->content_length;
        p->state = SL_HTTPD_P_BODY;
    } else {
        p->state = SL_HTTPD_P_DONE;
    }
}

/* A chunk-size line: hex digits, then optional extensions. */
static void chunk_size(struct sl_httpd_parser *p, const char *s, size_t n) {
    uint64_t size = 0;
    size_t i = 0;
    for (; i < n && i < 16; i++) {
        int d = s[i] >= '0' && s[i] <= '9' ? s[i] - '0'
              : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10
              : s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 10 : -1;
        if (d < 0) break;
        size = size * 16 + (uint64_t)d;
    }
    if (i == 0 || i == 16 || (i < n && s[i] != ';' && s[i] != ' ' && s[i] != '\t')) {
        refuse(p, 400, "bad_request");
        return;
    }
    if (size == 0) { p->state = SL_HTTPD_P_TRAILERS; return; }
    if (size > p->max_body || p->body.len + size > p->max_body) {
        refuse(p, 413, "too_large");
        return;
    }
    p->chunk_left = size;
    p->state = SL_HTTPD_P_CHUNK_DATA;
}

/* A complete line in p->line, CR stripped, for the line states. */
static void on_line(struct sl_httpd_parser *p, bool skipped) {
    const char *s = p->line.data ? p->line.data : "";
    size_t n = p->line.len;
    switch (p->state) {
    case SL_HTTPD_P_LINE:
        if (skipped) { p->head_over = true; p->state = SL_HTTPD_P_HEADERS; break; }
        if (n == 0) break;   /* empty lines before a request are ignored */
        if (parse_request_line(p, s, n)) refuse(p, 400, "bad_request");
        else p->state = SL_HTTPD_P_HEADERS;
        break;
    case SL_HTTPD_P_HEADERS:
        if (skipped) { p->head_over = true; break; }
        if (n == 0) { finish_head(p); break; }
        if (s[0] == ' ' || s[0] == '\t' || parse_header(p, s, n)) refuse(p, 400, "bad_request");
        break;
    case SL_HTTPD_P_CHUNK_SIZE:
        if (skipped) refuse(p, 400, "bad_request");
        else chunk_size(p, s, n);
        break;
    case SL_HTTPD_P_CHUNK_END:
        if (skipped || n) refuse(p, 400, "bad_request");
        else p->state = SL_HTTPD_P_CHUNK_SIZE;
        break;
    case SL_HTTPD_P_TRAILERS:
        if (!skipped && n == 0) p->state = SL_HTTPD_P_DONE;
        break;
    default:
        assert(!"not a line state");
    }
}

size_t sl_httpd_parse(struct sl_httpd_parser *p, const char *data, size_t len) {
    size_t off = 0;
    while (off < len && p->state != SL_HTTPD_P_DONE && p->state != SL_HTTPD_P_ERROR) {
        enum sl_httpd_pstate st = p->state;
        if (st == SL_HTTPD_P_BODY || st == SL_HTTPD_P_CHUNK_DATA) {
            size_t n = len - off;
            if (n > p->chunk_left) n = (size_t)p->chunk_left;
            sl_buf_add(&p->body, data + off, n);
            off += n;
            p->chunk_left -= n;
            if (p->chunk_left == 0)
                p->state = st == SL_HTTPD_P_BODY ? SL_HTTPD_P_DONE : SL_HTTPD_P_CHUNK_END;
            continue;
        }
        bool done, skipped;
        size_t bound = st == SL_HTTPD_P_CHUNK_SIZE || st == SL_HTTPD_P_CHUNK_END
                     ? SL_HTTPD_CHUNK_LINE_MAX : p->max_head;
        off += take_line(p, data + off, len - off, bound, &done);
        if (p->state == SL_HTTPD_P_ERROR || !done) continue;
        skipped = p->skip_line;
        p->skip_line = false;
        if (p->line.len && p->line.data[p->line.len - 1] == '\r') p->line.len--;
        on_line(p, skipped);
        p->line.len = 0;
        if (st == SL_HTTPD_P_HEADERS && p->head_done) break;  /* stop after the head */
    }
    return off;
}

const char *sl_httpd_parser_header(const struct sl_httpd_parser *p, const char *name) {
    for (size_t i = 0; i < p->nheaders; i++)
        if (strcasecmp(p->head.data + p->names[i], name) == 0)
            return p->head.data + p->values[i];
    return NULL;
}

/* ==================== Server ==================== */

enum conn_state {
    C_READ,    /* reading a request */
    C_WAIT,    /* the owner holds the request */
    C_WRITE,   /* the answer is being written */
    C_LINGER   /* refused and answered: reading what the client still sends, then close */
};

struct conn {
    struct sl_httpd *h;
    struct bufferevent *bev;
    struct event *timer;           /* the deadline of the current state */
    enum conn_state state;
    struct sl_httpd_req *req;      /* the request being read or held */
    bool close_after;              /* close once the answer is written */
    bool linger;                   /* ... after C_LINGER: the request was not read to its end */
    bool continue_checked;         /* 100 Continue decided for this request */
    char peer[INET6_ADDRSTRLEN];
    struct conn *prev, *next;      /* h->conns, oldest first */
};

struct sl_httpd_req {
    struct conn *conn;             /* NULL once the connection is gone */
    struct sl_httpd_parser p;
    struct sl_buf out;             /* response header lines */
    char peer[INET6_ADDRSTRLEN];
    bool close;
    int error;                     /* status the owner answers with, or 0 */
    const char *error_name;
};

/* Rate limit of one kind of log line. */
struct ratelog {
    int64_t last_ms;
    uint64_t suppressed;
};

struct sl_httpd {
    struct event_base *base;
    struct sl_httpd_conf conf;     /* defaults filled in */
    sl_httpd_fn *fn;
    void *arg;
    struct evconnlistener *lev;
    struct event *resume;          /* re-enables accept() after a pause */
    int backoff_ms;
    int port;
    struct conn *head, *tail;      /* open connections, oldest first */
    size_t nconns;
    struct sl_httpd_stats st;
    struct ratelog log_accept, log_full;
};

/* Logs at most one line per SL_HTTPD_LOG_EVERY_MS for rl, saying how many
 * were left out since the last one. */
static void ratelog(struct sl_httpd *h, struct ratelog *rl, const char *what) {
    int64_t now = sl_mono_ms();
    if (rl->last_ms && now - rl->last_ms < SL_HTTPD_LOG_EVERY_MS) {
        rl->suppressed++;
        return;
    }
    if (rl->suppressed)
        sl_log(SL_LOG_WARN, h->conf.name, "%s (%llu more like it in the last %d s)", what,
               (unsigned long long)rl->suppressed, (int)((now - rl->last_ms) / 1000));
    else
        sl_log(SL_LOG_WARN, h->conf.name, "%s", what);
    rl->last_ms = now;
    rl->suppressed = 0;
}

static void arm(struct conn *c, int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (ms <= 0) event_del(c->timer);
    else event_add(c->timer, &tv);
}

static struct sl_httpd_req *req_new(struct conn *c) {
    struct sl_httpd *h = c->h;
    struct sl_httpd_req *r = sl_calloc(1, sizeof(*r));
    r->conn = c;
    memcpy(r->peer, c->peer, sizeof(r->peer));
    sl_httpd_parser_init(&r->p, h->conf.max_head, h->conf.max_body, h->conf.methods);
    return r;
}

static void req_free(struct sl_httpd_req *r) {
    sl_httpd_parser_free(&r->p);
    sl_buf_free(&r->out);
    free(r);
}

static void conn_free(struct conn *c) {
    struct sl_httpd *h = c->h;
    if (c->req) {
        if (c->state == C_WAIT) c->req->conn = NULL;  /* the owner frees it */
        else req_free(c->req);
    }
    if (c->prev) c->prev->next = c->next; else h->head = c->next;
    if (c->next) c->next->prev = c->prev; else h->tail = c->prev;
    h->nconns--;
    event_free(c->timer);
    bufferevent_free(c->bev);
    free(c);
    /* A descriptor is free again: accept at once if accept() was paused. */
    if (h->st.paused && h->lev) {
        event_del(h->resume);
        h->st.paused = false;
        evconnlistener_enable(h->lev);
    }
}

/* Hands the current request to the owner: complete, or refused with error. */
static void dispatch(struct conn *c, int error, const char *name) {
    struct sl_httpd_req *r = c->req;
    c->state = C_WAIT;
    arm(c, 0);
    bufferevent_disable(c->bev, EV_READ);
    r->error = error;
    r->error_name = name;
    if (error) r->close = true;   /* the rest of the request is not read */
    c->h->fn(r, c->h->arg);
}

static void conn_read(struct conn *c) {
    struct sl_httpd *h = c->h;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == C_READ && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        struct sl_httpd_parser *p;
        if (!c->req) {
            c->req = req_new(c);
            c->continue_checked = false;
            arm(c, h->conf.head_timeout_ms);
        }
        p = &c->req->p;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        evbuffer_drain(in, sl_httpd_parse(p, v.iov_base, v.iov_len));
        if (p->state == SL_HTTPD_P_ERROR) {
            dispatch(c, p->error, p->error_name);
            return;
        }
        if (p->head_done && !c->continue_checked) {
            c->continue_checked = true;
            if (p->state != SL_HTTPD_P_DONE) arm(c, h->conf.body_timeout_ms);
            if (p->expect_continue && p->state != SL_HTTPD_P_DONE &&
                evbuffer_get_length(in) == 0)
                bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        if (p->state == SL_HTTPD_P_DONE) {
            dispatch(c, 0, NULL);
            return;
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg) {
    struct conn *c = arg;
    if (c->state == C_LINGER) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    conn_read(c);
}

/* The answer is out: next request, or close. */
static void on_write(struct bufferevent *bev, void *arg) {
    struct conn *c = arg;
    (void)bev;
    if (c->state != C_WRITE) return;   /* a 100 Continue went out */
    if (c->close_after && c->linger) {
        /* Closing with unread bytes would send a reset that can destroy
         * the answer before the client reads it: half-close, drain, close. */
        shutdown(bufferevent_getfd(c->bev), SHUT_WR);
        c->state = C_LINGER;
        arm(c, SL_HTTPD_LINGER_MS);
        bufferevent_enable(c->bev, EV_READ);
        return;
    }
    if (c->close_after) { conn_free(c); return; }
    c->state = C_READ;
    arm(c, c->h->conf.idle_timeout_ms);
    bufferevent_enable(c->bev, EV_READ);
    conn_read(c);                      /* a pipelined request may be waiting */
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
    (void)bev; (void)what;
    conn_free(arg);                    /* EOF or error */
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    struct conn *c = arg;
    (void)fd; (void)what;
    if (c->state == C_READ && c->req) {
        dispatch(c, 408, "timeout");   /* a request too slow to arrive */
        return;
    }
    conn_free(c);                      /* idle keep-alive, or an answer not taken */
}

/* The oldest connection waiting for a next request, or NULL. O(n). */
static struct conn *idle_conn(struct sl_httpd *h) {
    for (struct conn *c = h->head; c; c = c->next)
        if (c->state == C_READ && !c->req) return c;
    return NULL;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg) {
    struct sl_httpd *h = arg;
    struct conn *c;
    bool refuse_it = false;
    (void)lev; (void)salen;

    h->backoff_ms = 0;
    if (h->nconns >= h->conf.max_conns) {
        struct conn *old = idle_conn(h);
        if (old) {
            conn_free(old);
            h->st.evicted++;
        } else if (h->nconns >= h->conf.max_conns + SL_HTTPD_REFUSE_EXTRA) {
            evutil_closesocket(fd);
            h->st.refused++;
            ratelog(h, &h->log_full, "connection limit reached: closing new connections");
            return;
        } else {
            refuse_it = true;
        }
    }
    h->st.accepted++;
    c = sl_calloc(1, sizeof(*c));
    c->h = h;
    c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(h->base, on_timer, c);
    if (!c->bev || !c->timer) {
        if (c->bev) bufferevent_free(c->bev); else evutil_closesocket(fd);
        if (c->timer) event_free(c->timer);
        free(c);
        return;
    }
    if (sa->sa_family == AF_INET)
        evutil_inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof(c->peer));
    else if (sa->sa_family == AF_INET6)
        evutil_inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof(c->peer));
    c->prev = h->tail;
    if (h->tail) h->tail->next = c; else h->head = c;
    h->tail = c;
    h->nconns++;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    if (refuse_it) {
        h->st.refused++;
        ratelog(h, &h->log_full, "connection limit reached: answering 503");
        c->req = req_new(c);
        dispatch(c, 503, "connection_limit");
        return;
    }
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    arm(c, h->conf.idle_timeout_ms);
}

static void on_resume(evutil_socket_t fd, short what, void *arg) {
    struct sl_httpd *h = arg;
    (void)fd; (void)what;
    h->st.paused = false;
    if (h->lev) evconnlistener_enable(h->lev);
}

/* accept() failed for want of descriptors or memory: pause accepting (the
 * socket stays readable, so going on would spin), back off, log once. */
static void on_accept_error(struct evconnlistener *lev, void *arg) {
    struct sl_httpd *h = arg;
    int err = EVUTIL_SOCKET_ERROR();
    char msg[160];
    struct timeval tv;

    h->st.accept_errors++;
    evconnlistener_disable(lev);
    h->st.paused = true;
    h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 : SL_HTTPD_BACKOFF_MIN_MS;
    if (h->backoff_ms > SL_HTTPD_BACKOFF_MAX_MS) h->backoff_ms = SL_HTTPD_BACKOFF_MAX_MS;
    tv.tv_sec = h->backoff_ms / 1000;
    tv.tv_usec = (h->backoff_ms % 1000) * 1000;
    event_add(h->resume, &tv);
    snprintf(msg, sizeof(msg), "accept: %s; pausing new connections (%zu open)",
             evutil_socket_error_to_string(err), h->nconns);
    ratelog(h, &h->log_accept, msg);
}

/* ---------- Life cycle ---------- */

size_t sl_httpd_default_conns(void) {
    struct rlimit rl;
    size_t n;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return SL_HTTPD_MAX_CONNS_CAP;
    n = (size_t)rl.rlim_cur;
    n = n >= 2 * SL_HTTPD_FD_RESERVE ? n - SL_HTTPD_FD_RESERVE : n / 2;
    return n > SL_HTTPD_MAX_CONNS_CAP ? SL_HTTPD_MAX_CONNS_CAP : n ? n : 1;
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, int *sslen) {
    const char *colon = strrchr(listen, ':'), *h = listen, *he;
    char host[256], *end;
    long v;
    if (!colon) return SL_ERR;
    he = colon;
    if (*h == '[') {
        h++;
        if (he == h || he[-1] != ']') return SL_ERR;
        he--;
    }
    if (he == h) { h = "0.0.0.0"; he = h + 7; }
    if ((size_t)(he - h) >= sizeof(host)) return SL_ERR;
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = '\0';
    errno = 0;
    v = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || v < 0 || v > 65535) return SL_ERR;
    memset(ss, 0, sizeof(*ss));
    if (strchr(host, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)v);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) return SL_ERR;
        *sslen = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)v);
        if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) return SL_ERR;
        *sslen = sizeof(*s4);
    }
    return SL_OK;
}

struct sl_httpd *sl_httpd_create(struct event_base *base, const struct sl_httpd_conf *conf,
                                 sl_httpd_fn *fn, void *arg, char *err, size_t errlen) {
    struct sl_httpd *h = sl_calloc(1, sizeof(*h));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int sslen;

    assert(base && conf && fn && conf->name);
    h->base = base;
    h->conf = *conf;
    h->fn = fn;
    h->arg = arg;
    if (!h->conf.max_conns) h->conf.max_conns = sl_httpd_default_conns();
    if (!h->conf.head_timeout_ms) h->conf.head_timeout_ms = SL_HTTPD_HEAD_TIMEOUT_MS;
    if (!h->conf.body_timeout_ms) h->conf.body_timeout_ms = SL_HTTPD_BODY_TIMEOUT_MS;
    if (!h->conf.idle_timeout_ms) h->conf.idle_timeout_ms = SL_HTTPD_IDLE_TIMEOUT_MS;
    h->st.max = h->conf.max_conns;
    if (!conf->listen || parse_listen(conf->listen, &ss, &sslen)) {
        sl_errf(err, errlen, "%s: listen must be \"host:port\" with a numeric host, got \"%s\"",
                conf->name, conf->listen ? conf->listen : "(none)");
        goto fail;
    }
    h->resume = evtimer_new(base, on_resume, h);
    if (!h->resume) {
        sl_errf(err, errlen, "%s: cannot create a timer", conf->name);
        goto fail;
    }
    h->lev = evconnlistener_new_bind(base, on_accept, h,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, -1,
        (struct sockaddr *)&ss, sslen);
    if (!h->lev) {
        sl_errf(err, errlen, "%s: cannot listen on %s: %s", conf->name, conf->listen,
                strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(h->lev, on_accept_error);
    if (getsockname(evconnlistener_get_fd(h->lev), (struct sockaddr *)&ss, &sl) == 0)
        h->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return h;
fail:
    sl_httpd_destroy(h);
    return NULL;
}

void sl_httpd_stop_accepting(struct sl_httpd *h) {
    if (!h || !h->lev) return;
    evconnlistener_free(h->lev);
    h->lev = NULL;
    event_del(h->resume);
    h->st.paused = false;
}

int sl_httpd_port(const struct sl_httpd *h) { return h->port; }

void sl_httpd_destroy(struct sl_httpd *h) {
    if (!h) return;
    sl_httpd_stop_accepting(h);
    while (h->head) {
        struct conn *c = h->head;
        struct evbuffer *out = bufferevent_get_output(c->bev);
        if (evbuffer_get_length(out)) {
            evbuffer_unfreeze(out, 1);   /* the bufferevent keeps its front frozen */
            evbuffer_write(out, bufferevent_getfd(c->bev));
        }
        conn_free(c);
    }
    if (h->resume) event_free(h->resume);
    free(h);
}

void sl_httpd_stats(const struct sl_httpd *h, struct sl_httpd_stats *out) {
    *out = h->st;
    out->open = h->nconns;
}

/* ---------- Requests ---------- */

const char *sl_httpd_reason(int code) {
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

int sl_httpd_req_error(const struct sl_httpd_req *req) { return req->error; }
const char *sl_httpd_req_error_name(const struct sl_httpd_req *req) {
    return req->error_name ? req->error_name : "";
}
unsigned sl_httpd_req_method(const struct sl_httpd_req *req) { return req->p.method; }

const char *sl_httpd_req_target(const struct sl_httpd_req *req) {
    return req->p.method && req->p.head.data ? req->p.head.data + req->p.target : "";
}

const char *sl_httpd_req_header(const struct sl_httpd_req *req, const char *name) {
    const char *v = sl_httpd_parser_header(&req->p, name);
    if (!v && strcasecmp(name, "Origin") == 0 && req->p.origin[0]) v = req->p.origin;
    return v;
}

const char *sl_httpd_req_body(const struct sl_httpd_req *req, size_t *len) {
    *len = req->p.body.len;
    return req->p.body.data ? req->p.body.data : "";
}

const char *sl_httpd_req_peer(const struct sl_httpd_req *req) {
    return req->peer[0] ? req->peer : NULL;
}

void sl_httpd_add_header(struct sl_httpd_req *req, const char *name, const char *value) {
    if (strpbrk(name, "\r\n") || strpbrk(value, "\r\n")) return;
    sl_buf_printf(&req->out, "%s: %s\r\n", name, value);
}

void sl_httpd_set_close(struct sl_httpd_req *req) { req->close = true; }

void sl_httpd_reply(struct sl_httpd_req *req, int code, const char *reason,
                    const void *body, size_t len) {
    struct conn *c = req->conn;
    struct evbuffer *out;
    bool head_only = req->p.method == SL_HTTPD_HEAD;

    if (!c) { req_free(req); return; }  /* the connection went away */
    assert(c->state == C_WAIT && c->req == req);
    c->close_after = req->close || !req->p.keep_alive;
    c->linger = req->error != 0;
    out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", code, reason);
    if (req->out.len) evbuffer_add(out, req->out.data, req->out.len);
    evbuffer_add_printf(out, "Content-Length: %zu\r\n%s\r\n", len,
                        c->close_after ? "Connection: close\r\n" : "");
    if (len && !head_only) evbuffer_add(out, body, len);
    c->req = NULL;
    req_free(req);
    c->state = C_WRITE;
    arm(c, SL_HTTPD_WRITE_TIMEOUT_MS);
    bufferevent_enable(c->bev, EV_WRITE);
}
