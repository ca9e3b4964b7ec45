/* model_serve.c -- the MLflow scoring protocol over evhttp (see model_serve.h). */
#include "model_serve.h"
#include "admin.h"
#include "json.h"
#include "model.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <lauxlib.h>
#include <lualib.h>

struct sl_model_serve {
    struct sl_model_serve_opts o;
    char *model_path;              /* o.model, owned */
    struct sl_model *model;        /* the model served */
    struct sl_catalog *catalog;    /* o.catalog loaded, or NULL */
    struct evhttp *http;
    int port;
    lua_State *L;                  /* decodes request bodies */
    struct sl_model_result res;    /* scratch of sl_model_recommend */
    const char **items;            /* one row's handles, pointing into L's strings */
    int64_t *ts;                   /* one row's timestamps */
    size_t cap;                    /* slots in items and ts */
    size_t reloads, reload_failures;
};

/* ==================== Loading ==================== */

/* Loads the model file and checks its catalog; NULL with err. */
static struct sl_model *load(struct sl_model_serve *s, char *err, size_t errlen) {
    struct sl_model *m = sl_model_load(s->model_path, err, errlen);
    if (m && s->catalog &&
        sl_model_check_catalog(m, s->catalog, s->o.catalog, err, errlen)) {
        sl_model_destroy(m);
        m = NULL;
    }
    return m;
}

int sl_model_serve_reload(struct sl_model_serve *s, char *err, size_t errlen) {
    struct sl_model *m = load(s, err, errlen);
    if (!m) {
        s->reload_failures++;
        return SL_ERR;
    }
    sl_model_destroy(s->model);
    s->model = m;
    s->reloads++;
    return SL_OK;
}

/* ==================== Requests ==================== */

/* Error answer: {"error_code": "BAD_REQUEST", "message": msg}; returns status. */
static int fail(struct sl_buf *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct sl_buf *out, int status, const char *fmt, ...) {
    char msg[SL_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sl_buf_reset(out);
    sl_buf_adds(out, "{\"error_code\":\"BAD_REQUEST\",\"message\":");
    if (sl_json_add_string(out, msg, strlen(msg), NULL, 0)) sl_buf_adds(out, "\"bad request\"");
    sl_buf_adds(out, "}");
    return status;
}

static bool is_null(lua_State *L, int idx) {
    return lua_isnil(L, idx) || (lua_islightuserdata(L, idx) && !lua_touserdata(L, idx));
}

/* A JSON array (json.c gives arrays its shared metatable). */
static bool is_array(lua_State *L, int idx) {
    bool yes = false;
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (lua_istable(L, idx) && lua_getmetatable(L, idx)) {   /* ... mt */
        sl_json_push_array_mt(L);                            /* ... mt array_mt */
        yes = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return yes;
}

static bool is_object(lua_State *L, int idx) { return lua_istable(L, idx) && !is_array(L, idx); }

/* Scores one row: items at stack index -2, timestamps at -1 (either may be
 * nil/null). Appends its prediction or returns a 400 answer. */
static int answer_row(struct sl_model_serve *s, const char *where, struct sl_buf *out) {
    lua_State *L = s->L;
    size_t n = 0;
    bool has_ts = !is_null(L, -1);

    if (!is_null(L, -2)) {
        if (!is_array(L, -2)) return fail(out, 400, "%s.items: expected a list of product handles", where);
        n = lua_objlen(L, -2);
    }
    if (has_ts) {
        if (!is_array(L, -1)) return fail(out, 400, "%s.timestamps: expected a list of epoch ms", where);
        if (lua_objlen(L, -1) != n)
            return fail(out, 400, "%s.timestamps: %zu timestamps for %zu items", where,
                        (size_t)lua_objlen(L, -1), n);
    }
    if (n > s->cap) {
        s->cap = n;
        s->items = sl_realloc(s->items, n * sizeof(*s->items));
        s->ts = sl_realloc(s->ts, n * sizeof(*s->ts));
    }
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -2, (int)i + 1);                      /* ... items ts item */
        if (lua_type(L, -1) != LUA_TSTRING)
            return fail(out, 400, "%s.items[%zu]: expected a product handle (a string)", where, i);
        s->items[i] = lua_tostring(L, -1);                   /* stays alive in items */
        lua_pop(L, 1);
        if (!has_ts) continue;
        lua_rawgeti(L, -1, (int)i + 1);                      /* ... items ts t */
        /* A number, or a string of digits: the seed's signature has strings. */
        double t = lua_tonumber(L, -1);
        bool ok = lua_type(L, -1) == LUA_TNUMBER;
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t len;
            const char *str = lua_tolstring(L, -1, &len);
            ok = len > 0 && len < 19 && strspn(str, "0123456789") == len;
        }
        if (!ok || !(t > -9.2e18 && t < 9.2e18))
            return fail(out, 400, "%s.timestamps[%zu]: expected epoch ms (a number or a string "
                        "of digits)", where, i);
        s->ts[i] = (int64_t)t;
        lua_pop(L, 1);
    }
    if (sl_model_recommend(s->model, s->items, has_ts ? s->ts : NULL, n, s->o.top_n, &s->res))
        return fail(out, 400, "%s: cannot recommend", where);
    sl_buf_adds(out, "{\"itemIds\":[");
    for (size_t i = 0; i < s->res.n; i++) {
        if (i) sl_buf_addc(out, ',');
        sl_json_add_string(out, s->res.gids[i], strlen(s->res.gids[i]), NULL, 0);
    }
    sl_buf_adds(out, "],\"preds\":[");
    for (size_t i = 0; i < s->res.n; i++) {
        if (i) sl_buf_addc(out, ',');
        sl_json_add_number(out, s->res.scores[i], NULL, 0);
    }
    sl_buf_adds(out, "]}");
    return 200;
}

/* Rows of a list of records ({"items": [...], "timestamps": [...]}) at the
 * top of L. */
static int records(struct sl_model_serve *s, const char *what, struct sl_buf *out) {
    lua_State *L = s->L;
    char where[96];
    size_t n = lua_objlen(L, -1);
    if (n > SL_MODEL_SERVE_MAX_ROWS) return fail(out, 400, "%s: more than %d rows", what, SL_MODEL_SERVE_MAX_ROWS);
    for (size_t i = 0; i < n; i++) {
        snprintf(where, sizeof(where), "%s[%zu]", what, i);
        lua_rawgeti(L, -1, (int)i + 1);                      /* rows row */
        if (!is_object(L, -1)) return fail(out, 400, "%s: expected an object with items", where);
        lua_getfield(L, -1, "items");                        /* rows row items */
        lua_getfield(L, -2, "timestamps");                   /* rows row items ts */
        if (i) sl_buf_addc(out, ',');
        int st = answer_row(s, where, out);
        if (st != 200) return st;
        lua_pop(L, 3);                                       /* rows */
    }
    return 200;
}

/* Rows of {"columns": [...], "data": [[...], ...]} at the top of L. */
static int split(struct sl_model_serve *s, struct sl_buf *out) {
    lua_State *L = s->L;
    char where[96];
    int ci = 0, ct = 0;    /* 1-based positions of items and timestamps; 0: absent */
    lua_getfield(L, -1, "columns");                          /* split columns */
    if (!is_array(L, -1)) return fail(out, 400, "dataframe_split.columns: expected a list of column names");
    size_t ncol = lua_objlen(L, -1);
    for (size_t c = 1; c <= ncol; c++) {
        lua_rawgeti(L, -1, (int)c);
        const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!name) return fail(out, 400, "dataframe_split.columns[%zu]: expected a column name", c - 1);
        if (!strcmp(name, "items")) ci = (int)c;
        else if (!strcmp(name, "timestamps")) ct = (int)c;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);                                           /* split */
    if (!ci) return fail(out, 400, "dataframe_split.columns: no \"items\" column");
    lua_getfield(L, -1, "data");                             /* split data */
    if (!is_array(L, -1)) return fail(out, 400, "dataframe_split.data: expected a list of rows");
    size_t n = lua_objlen(L, -1);
    if (n > SL_MODEL_SERVE_MAX_ROWS) return fail(out, 400, "dataframe_split.data: more than %d rows", SL_MODEL_SERVE_MAX_ROWS);
    for (size_t i = 0; i < n; i++) {
        snprintf(where, sizeof(where), "dataframe_split.data[%zu]", i);
        lua_rawgeti(L, -1, (int)i + 1);                      /* split data row */
        if (!is_array(L, -1) || lua_objlen(L, -1) != ncol)
            return fail(out, 400, "%s: expected a list of %zu values, one per column", where, ncol);
        lua_rawgeti(L, -1, ci);                              /* split data row items */
        if (ct) lua_rawgeti(L, -2, ct);                      /* split data row items ts */
        else lua_pushnil(L);
        if (i) sl_buf_addc(out, ',');
        int st = answer_row(s, where, out);
        if (st != 200) return st;
        lua_pop(L, 3);                                       /* split data */
    }
    return 200;
}

/* Rows of {"items": [[...], ...], "timestamps": [[...], ...]} (columns) at
 * the top of L. */
static int columns(struct sl_model_serve *s, struct sl_buf *out) {
    lua_State *L = s->L;
    char where[96];
    lua_getfield(L, -1, "items");                            /* cols items */
    lua_getfield(L, -2, "timestamps");                       /* cols items ts */
    if (!is_array(L, -2)) return fail(out, 400, "inputs.items: expected a list, one entry per row");
    size_t n = lua_objlen(L, -2);
    bool has_ts = !is_null(L, -1);
    if (has_ts && (!is_array(L, -1) || lua_objlen(L, -1) != n))
        return fail(out, 400, "inputs.timestamps: expected a list of %zu entries, one per row", n);
    if (n > SL_MODEL_SERVE_MAX_ROWS) return fail(out, 400, "inputs.items: more than %d rows", SL_MODEL_SERVE_MAX_ROWS);
    for (size_t i = 0; i < n; i++) {
        snprintf(where, sizeof(where), "inputs[%zu]", i);
        lua_rawgeti(L, -2, (int)i + 1);                      /* cols items ts row_items */
        if (has_ts) lua_rawgeti(L, -2, (int)i + 1);          /* cols items ts row_items row_ts */
        else lua_pushnil(L);
        if (i) sl_buf_addc(out, ',');
        int st = answer_row(s, where, out);
        if (st != 200) return st;
        lua_pop(L, 2);                                       /* cols items ts */
    }
    return 200;
}

static const char *const formats[] = {"dataframe_split", "dataframe_records", "inputs"};

/* The media type of a Content-Type value is application/json (any case,
 * parameters such as charset ignored). */
static bool is_json(const char *ct) {
    static const char want[] = "application/json";
    while (*ct == ' ' || *ct == '\t') ct++;
    if (strncasecmp(ct, want, sizeof(want) - 1)) return false;
    ct += sizeof(want) - 1;
    while (*ct == ' ' || *ct == '\t') ct++;
    return !*ct || *ct == ';';
}

int sl_model_serve_invocations(struct sl_model_serve *s, const char *content_type,
                               const char *body, size_t len, struct sl_buf *out) {
    lua_State *L = s->L;
    char jerr[SL_ERRLEN];
    int status, found = -1;

    sl_buf_reset(out);

    if (!content_type)
        return fail(out, 400, "no Content-Type: send the body as application/json");
    if (!is_json(content_type))
        return fail(out, 415, "Content-Type \"%.64s\" is not supported: send application/json "
                    "with dataframe_split, dataframe_records or inputs", content_type);
    lua_settop(L, 0);
    if (sl_json_decode(L, body, len, jerr, sizeof(jerr)))
        return fail(out, 400, "the body is not JSON: %s", jerr);
    if (!is_object(L, 1))
        return fail(out, 400, "expected a JSON object with one of dataframe_split, "
                    "dataframe_records or inputs");
    lua_pushnil(L);
    while (lua_next(L, 1)) {                                 /* doc key value */
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        int f = -1;
        for (int i = 0; i < 3; i++) if (!strcmp(k, formats[i])) f = i;
        if (f < 0 && strcmp(k, "params")) {
            status = fail(out, 400, "unknown field \"%.64s\": expected one of dataframe_split, "
                          "dataframe_records or inputs (and optionally params)", k);
            goto done;
        }
        if (f >= 0 && found >= 0) {
            status = fail(out, 400, "both %s and %s: send exactly one input format",
                          formats[found], formats[f]);
            goto done;
        }
        if (f >= 0) found = f;
        lua_pop(L, 1);                                       /* doc key */
    }
    if (found < 0) {
        status = fail(out, 400, "no input: expected one of dataframe_split, dataframe_records "
                      "or inputs");
        goto done;
    }
    lua_getfield(L, 1, formats[found]);                      /* doc input */
    sl_buf_adds(out, "{\"predictions\":[");
    if (found == 0) {
        status = is_object(L, -1) ? split(s, out)
                                  : fail(out, 400, "dataframe_split: expected an object with "
                                         "columns and data");
    } else if (is_array(L, -1)) {
        status = records(s, formats[found], out);
    } else if (found == 2 && is_object(L, -1)) {
        status = columns(s, out);
    } else {
        status = fail(out, 400, "%s: expected a list of records", formats[found]);
    }
    if (status == 200) sl_buf_adds(out, "]}");
done:
    lua_settop(L, 0);
    return status;
}

/* ==================== HTTP ==================== */

static void reply(struct evhttp_request *req, int status, const char *type, const char *body,
                  size_t len) {
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, status, status == 200 ? "OK" : status == 415 ? "Unsupported Media Type"
                      : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
                      : "Bad Request", b);
    evbuffer_free(b);
}

static void on_request(struct evhttp_request *req, void *arg) {
    struct sl_model_serve *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    struct sl_buf out = {0};
    int status;

    if (!path) path = "";
    if (!strcmp(path, "/invocations")) {
        if (cmd != EVHTTP_REQ_POST) {
            status = fail(&out, 405, "POST a JSON body to /invocations");
        } else {
            struct evbuffer *in = evhttp_request_get_input_buffer(req);
            size_t len = evbuffer_get_length(in);
            const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
            const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
                                                "Content-Type");
            status = sl_model_serve_invocations(s, ct, body, len, &out);
        }
        reply(req, status, "application/json", out.data ? out.data : "", out.len);
    } else if ((!strcmp(path, "/ping") || !strcmp(path, "/health")) && get) {
        reply(req, 200, "application/json", "\n", 1);
    } else if (!strcmp(path, "/version") && get) {
        sl_buf_adds(&out, "{\"server\":\"sluice model serve\",\"model_file\":");
        sl_json_add_string(&out, s->model_path, strlen(s->model_path), NULL, 0);
        sl_buf_adds(&out, ",\"model\":");
        sl_model_describe(s->model, &out);
        sl_buf_printf(&out, ",\"top_n\":%zu,\"reloads\":%zu,\"reload_failures\":%zu}\n",
                      s->o.top_n, s->reloads, s->reload_failures);
        reply(req, 200, "application/json", out.data, out.len);
    } else {
        bool known = !strcmp(path, "/ping") || !strcmp(path, "/health") || !strcmp(path, "/version");
        status = fail(&out, known ? 405 : 404, known ? "use GET" :
                      "not found: POST /invocations, GET /ping, /health or /version");
        reply(req, status, "application/json", out.data, out.len);
    }
    sl_buf_free(&out);
}

struct sl_model_serve *sl_model_serve_create(struct event_base *base,
                                             const struct sl_model_serve_opts *o, char *err,
                                             size_t errlen) {
    struct sl_model_serve *s = sl_calloc(1, sizeof(*s)), *ret = NULL;
    struct evhttp_bound_socket *sock;
    char host[256];
    int port;

    s->o = *o;
    s->model_path = sl_strdup(o->model);
    s->o.model = s->model_path;
    if (o->top_n < 1 || o->top_n > SL_MODEL_MAX_TOP) {
        sl_errf(err, errlen, "top: expected 1..%d, got %zu", SL_MODEL_MAX_TOP, o->top_n);
        goto done;
    }
    if (o->catalog && !(s->catalog = sl_catalog_load(o->catalog, err, errlen))) goto done;
    if (!(s->model = load(s, err, errlen))) goto done;
    if (!(s->L = luaL_newstate())) {
        sl_errf(err, errlen, "cannot create a Lua state");
        goto done;
    }
    sl_json_init(s->L);
    if (base) {
        if (sl_admin_parse_listen(o->listen, host, sizeof(host), &port)) {
            sl_errf(err, errlen, "listen: expected host:port, got \"%s\"", o->listen);
            goto done;
        }
        s->http = evhttp_new(base);
        if (!s->http || !(sock = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port))) {
            sl_errf(err, errlen, "cannot listen on %s", o->listen);
            goto done;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (!getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &sl))
            s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
        evhttp_set_max_body_size(s->http, SL_MODEL_SERVE_MAX_BODY);
        evhttp_set_max_headers_size(s->http, SL_MODEL_SERVE_MAX_HEADERS);
        evhttp_set_timeout(s->http, SL_MODEL_SERVE_TIMEOUT);
        evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
        evhttp_set_gencb(s->http, on_request, s);
    }
    ret = s;
    s = NULL; /* Returned to the caller. */
done:
    sl_model_serve_destroy(s);
    return ret;
}

void sl_model_serve_destroy(struct sl_model_serve *s) {
    if (!s) return;
    if (s->http) evhttp_free(s->http);
    if (s->L) lua_close(s->L);
    sl_model_result_free(&s->res);
    sl_model_destroy(s->model);
    sl_catalog_destroy(s->catalog);
    free(s->items);
    free(s->ts);
    free(s->model_path);
    free(s);
}

int sl_model_serve_port(const struct sl_model_serve *s) { return s->port; }

/* ==================== sluice model serve ==================== */

struct run {
    struct event_base *base;
    struct sl_model_serve *s;
};

static void on_stop(evutil_socket_t sig, short what, void *arg) {
    struct run *r = arg;
    (void)what;
    sl_log(SL_LOG_INFO, "model", "signal %d: stopping", (int)sig);
    event_base_loopexit(r->base, NULL);
}

static void on_reload(evutil_socket_t sig, short what, void *arg) {
    struct run *r = arg;
    char err[SL_ERRLEN];
    (void)sig;
    (void)what;
    if (sl_model_serve_reload(r->s, err, sizeof(err)))
        sl_log(SL_LOG_ERROR, "model", "reload failed, still serving the model loaded before: %s",
               err);
    else
        sl_log(SL_LOG_INFO, "model", "reloaded %s (%zu products)", r->s->model_path,
               sl_catalog_count(sl_model_catalog(r->s->model)));
}

int sl_model_serve_run(const struct sl_model_serve_opts *o) {
    struct run r = {event_base_new(), NULL};
    struct event *ev[3] = {NULL, NULL, NULL};
    char err[SL_ERRLEN];
    int rc = 1;

    signal(SIGPIPE, SIG_IGN);
    if (!r.base) {
        fprintf(stderr, "sluice model serve: cannot create an event loop\n");
        return 1;
    }
    if (!(r.s = sl_model_serve_create(r.base, o, err, sizeof(err)))) {
        fprintf(stderr, "sluice model serve: %s\n", err);
        goto done;
    }
    ev[0] = evsignal_new(r.base, SIGTERM, on_stop, &r);
    ev[1] = evsignal_new(r.base, SIGINT, on_stop, &r);
    ev[2] = evsignal_new(r.base, SIGHUP, on_reload, &r);
    for (int i = 0; i < 3; i++) {
        if (!ev[i] || event_add(ev[i], NULL)) {
            fprintf(stderr, "sluice model serve: cannot watch signals\n");
            goto done;
        }
    }
    struct sl_buf desc = {0};
    sl_model_describe(r.s->model, &desc);
    sl_log(SL_LOG_INFO, "model", "serving %s on port %d: %s", r.s->model_path, r.s->port,
           sl_buf_cstr(&desc));
    sl_buf_free(&desc);
    char host[256];
    int port;
    sl_admin_parse_listen(o->listen, host, sizeof(host), &port);
    printf("http://%s:%d\n", host, r.s->port);
    fflush(stdout);
    rc = event_base_dispatch(r.base) < 0;
done:
    for (int i = 0; i < 3; i++) if (ev[i]) event_free(ev[i]);
    sl_model_serve_destroy(r.s);
    event_base_free(r.base);
    return rc;
}
