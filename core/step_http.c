/* step_http.c -- the http step kind: a request built by a rule, sent by the
 * core without blocking the loop, its answer read by a rule (see step.h,
 * step_http.h, httpc.h).
 *
 *   { name = "shopify", http = { url = ..., method = "POST",
 *       headers = { ["X-Shopify-Access-Token"] = env("SHOPIFY_ADMIN_TOKEN") },
 *       auth = { kind = "bearer", token = env("TOKEN") }, timeout = "2s",
 *       max_in_flight = 64, retries = 3, as = "sendResult", accept = { 200 },
 *       request = "recommendations.shopify.request",
 *       response = "recommendations.shopify.response", params = { ... } } }
 *
 * request(ctx, params) returns the body (a table is sent as JSON, a string
 * as it is) and optionally a table of extra headers, or nil and a reason to
 * filter the context. response(ctx, status, headers, body) returns the
 * variable `as` is set to, nil and a reason, or raises: a failure object
 * (lua/sluice/response.lua) with retryable = true is sent again after its
 * retry_after_ms (or the backoff) while retries last; anything else
 * dead-letters the record with the status and a redacted snippet of the
 * answer. Without response the variable is the decoded JSON body. A status
 * outside accept (default 2xx) is an error: the response rule still sees it
 * first, to name the failure.
 *
 * Order per key: contexts with the same key (`key`, default the key of the
 * window step before) go out one at a time, in arrival order; while a key
 * has a request in flight, a newer context waits, and with coalesce (the
 * default) a still newer one replaces the waiting one, which ends counted as
 * filtered "coalesced". Other keys never wait for a slow one.
 *
 * Bounds: the endpoint holds max_in_flight requests and a queue of
 * max_queued; beyond that contexts wait here and the step reports busy, so
 * the worker stops consuming until they drain. A response that reports a
 * GraphQL cost (Shopify's extensions.cost.throttleStatus, as value.cost or
 * failure.cost) feeds a cost bucket: requests wait for the bucket to hold
 * their cost instead of being throttled.
 *
 * Restore records skip it. In trace mode (sluice test) nothing is sent: the
 * request is traced (secrets redacted) and the context stops there, unless a
 * stub (--stub STEP=FILE, a JSON file {status, headers, body}) answers. */
#define _GNU_SOURCE
#include "step_http.h"
#include "costbucket.h"
#include "json.h"
#include "metrics.h"
#include "pipeline.h"
#include "rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <lauxlib.h>

#define SL_HTTP_SNIPPET 300      /* Response bytes quoted in a dead letter. */
#define SL_HTTP_KEY_BUCKETS 64   /* Initial buckets of the key table. */

/* ==================== Config ==================== */

/* A string the config must give, with a hint at the variable it usually
 * comes from. */
static int need_secret(struct sl_config_cur *c, const char *path, const char *key, char **out) {
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN];
    lua_getfield(L, -1, key);
    int ok = lua_type(L, -1) == LUA_TSTRING && lua_objlen(L, -1) > 0;
    if (ok) *out = sl_strdup(lua_tostring(L, -1));
    else {
        sl_config_join(p, path, key);
        sl_config_fail(c, p, "a non-empty string (is its environment variable set?)", -1);
    }
    lua_pop(L, 1);
    return ok ? SL_OK : SL_ERR;
}

static int load_auth(struct sl_config_cur *c, const char *path, struct sl_http_conf *h) {
    static const char *const keys[] = {"kind", "token", "token_url", "client_id",
                                       "client_secret", "scope", "credentials", NULL};
    static const char *const kinds[] = {"none", "bearer", "oauth2", NULL};
    static const char *const creds[] = {"basic", "body", NULL};
    char p[SL_CONFIG_PATHLEN], *kind = NULL, *cred = NULL;
    int ret = SL_ERR;
    sl_config_join(p, path, "auth");
    int in = sl_config_enter(c, path, "auth");
    if (in <= 0) return in < 0 ? SL_ERR : SL_OK;
    if (sl_config_only_keys(c, p, keys) || sl_config_get_str(c, p, "kind", "none", &kind) ||
        sl_config_one_of(c, p, "kind", kinds, "\"none\", \"bearer\" or \"oauth2\""))
        goto done;
    if (!strcmp(kind, "none")) {
        h->auth = SL_HTTPC_AUTH_NONE;
    } else if (!strcmp(kind, "bearer")) {
        h->auth = SL_HTTPC_AUTH_BEARER;
        if (need_secret(c, p, "token", &h->token)) goto done;
    } else {                       /* "oauth2": sl_config_one_of checked kind */
        h->auth = SL_HTTPC_AUTH_OAUTH2;
        if (need_secret(c, p, "token_url", &h->token_url) ||
            need_secret(c, p, "client_id", &h->client_id) ||
            need_secret(c, p, "client_secret", &h->client_secret) ||
            sl_config_get_str(c, p, "scope", NULL, &h->scope) ||
            sl_config_get_str(c, p, "credentials", "basic", &cred) ||
            sl_config_one_of(c, p, "credentials", creds, "\"basic\" or \"body\""))
            goto done;
        h->credentials_in_body = !strcmp(cred, "body");
    }
    ret = SL_OK;
done:
    free(kind);
    free(cred);
    lua_pop(sl_config_state(c), 1);
    return ret;
}

/* headers = { Name = "value", ... }: "Name: value" lines; the values of
 * credential headers are kept as secrets too. */
static int load_headers(struct sl_config_cur *c, const char *path, struct sl_http_conf *h) {
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN];
    sl_config_join(p, path, "headers");
    int in = sl_config_enter(c, path, "headers");
    if (in <= 0) return in < 0 ? SL_ERR : SL_OK;
    size_t cap = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
            strpbrk(lua_tostring(L, -1), "\r\n")) {
            sl_config_fail(c, p, "a table of Name = \"value\" strings", -1);
            lua_pop(L, 3);
            return SL_ERR;
        }
        const char *name = lua_tostring(L, -2), *value = lua_tostring(L, -1);
        if (h->nheaders + 1 >= cap) {
            cap = cap ? cap * 2 : 8;
            h->headers = sl_realloc(h->headers, cap * sizeof(char *));
            h->secrets = sl_realloc(h->secrets, cap * sizeof(char *));
        }
        struct sl_buf b = {0};
        sl_buf_printf(&b, "%s: %s", name, value);
        h->headers[h->nheaders++] = b.data;
        if (sl_httpc_secret_header(name, strlen(name)) && *value)
            h->secrets[h->nsecrets++] = sl_strdup(value);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return SL_OK;
}

/* accept = { 200, 201 }: HTTP statuses. */
static int load_accept(struct sl_config_cur *c, const char *path, struct sl_http_conf *h) {
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN];
    sl_config_join(p, path, "accept");
    lua_getfield(L, -1, "accept");
    if (lua_isnumber(L, -1)) {                     /* accept = 200 */
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, -2);
        lua_rawseti(L, -2, 1);
        lua_remove(L, -2);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return SL_OK;
    }
    if (!lua_istable(L, -1) || lua_objlen(L, -1) == 0) {
        sl_config_fail(c, p, "a list of HTTP statuses like { 200 }", -1);
        lua_pop(L, 1);
        return SL_ERR;
    }
    size_t n = lua_objlen(L, -1);
    h->accept = sl_calloc(n, sizeof(int));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        double v = lua_tonumber(L, -1);
        if (!lua_isnumber(L, -1) || v != (int)v || v < 100 || v > 599) {
            char ip[SL_CONFIG_PATHLEN];
            snprintf(ip, sizeof(ip), "%s[%zu]", p, i);
            sl_config_fail(c, ip, "an HTTP status (100-599)", -1);
            lua_pop(L, 2);
            return SL_ERR;
        }
        h->accept[h->naccept++] = (int)v;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return SL_OK;
}

/* key = "userId" | false (no per-key order); absent: the window's key. */
static int load_key(struct sl_config_cur *c, const char *path, struct sl_http_conf *h) {
    lua_State *L = sl_config_state(c);
    lua_getfield(L, -1, "key");
    int t = lua_type(L, -1);
    int ret = SL_OK;
    if (t == LUA_TSTRING) h->key_var = sl_strdup(lua_tostring(L, -1));
    else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) h->unkeyed = true;
    else if (t != LUA_TNIL) {
        char p[SL_CONFIG_PATHLEN];
        sl_config_join(p, path, "key");
        ret = sl_config_fail(c, p, "a context variable name or false", -1);
    }
    lua_pop(L, 1);
    return ret;
}

static int load_params(struct sl_config_cur *c, const char *path, struct sl_step_conf *s) {
    lua_State *L = sl_config_state(c);
    char p[SL_CONFIG_PATHLEN], jerr[128];
    struct sl_buf b = {0};
    int ret = SL_ERR;
    sl_config_join(p, path, "params");
    lua_getfield(L, -1, "params");
    if (lua_isnil(L, -1)) {
        s->params_json = sl_strdup("{}");
        ret = SL_OK;
    } else if (!lua_istable(L, -1) || sl_json_encode(L, -1, &b, jerr, sizeof(jerr))) {
        sl_config_fail(c, p, "a table of JSON values", -1);
    } else {
        s->params_json = sl_strdup(sl_buf_cstr(&b));
        ret = SL_OK;
    }
    sl_buf_free(&b);
    lua_pop(L, 1);
    return ret;
}

static int get_ms(struct sl_config_cur *c, const char *path, const char *key, int64_t *out) {
    return sl_config_get_duration(c, path, key, 0, out);
}

int sl_step_http_load_common(struct sl_config_cur *c, const char *path, struct sl_step_conf *s) {
    struct sl_http_conf *h = sl_calloc(1, sizeof(*h));
    s->data = h;
    if (sl_config_need_str(c, path, "url", &h->url)) return SL_ERR;
    if (strncmp(h->url, "http://", 7) && strncmp(h->url, "https://", 8)) {
        char p[SL_CONFIG_PATHLEN];
        sl_config_join(p, path, "url");
        lua_getfield(sl_config_state(c), -1, "url");
        sl_config_fail(c, p, "a URL starting with http:// or https://", -1);
        lua_pop(sl_config_state(c), 1);
        return SL_ERR;
    }
    if (load_headers(c, path, h) || load_auth(c, path, h) ||
        get_ms(c, path, "timeout", &h->timeout_ms) ||
        get_ms(c, path, "connect_timeout", &h->connect_timeout_ms) ||
        get_ms(c, path, "backoff", &h->backoff_ms) ||
        get_ms(c, path, "backoff_max", &h->backoff_max_ms) ||
        sl_config_get_int(c, path, "max_in_flight", SL_HTTPC_DEFAULT_MAX_IN_FLIGHT, 1,
                          &h->max_in_flight) ||
        sl_config_get_int(c, path, "max_queued", 0, 0, &h->max_queued) ||
        sl_config_get_int(c, path, "retries", 3, 0, &h->retries) ||
        sl_config_get_str(c, path, "ca_file", NULL, &h->ca_file) ||
        sl_config_get_str(c, path, "as", NULL, &h->as) ||
        load_accept(c, path, h) || load_key(c, path, h) ||
        sl_config_get_bool(c, path, "coalesce", true, &h->coalesce) || load_params(c, path, s))
        return SL_ERR;
    if (h->timeout_ms > INT32_MAX || h->connect_timeout_ms > INT32_MAX ||
        h->backoff_ms > INT32_MAX || h->backoff_max_ms > INT32_MAX || h->retries > 1000) {
        lua_pushstring(sl_config_state(c), "too large");
        sl_config_fail(c, path, "timeouts under 24 days and retries at most 1000", -1);
        lua_pop(sl_config_state(c), 1);
        return SL_ERR;
    }
    return SL_OK;
}

int sl_step_http_load_fn(struct sl_config_cur *c, const char *path, const char *key,
                         bool required, struct sl_step_conf *s, int slot) {
    char *name = NULL;
    if (required ? sl_config_need_str(c, path, key, &name)
                 : sl_config_get_str(c, path, key, NULL, &name))
        return SL_ERR;
    const char *dot = name ? strrchr(name, '.') : NULL;
    if (name && (!dot || dot == name || !dot[1])) {
        char p[SL_CONFIG_PATHLEN];
        sl_config_join(p, path, key);
        lua_pushstring(sl_config_state(c), name);
        sl_config_fail(c, p, "\"module.function\", e.g. \"recommendations.shopify.request\"", -1);
        lua_pop(sl_config_state(c), 1);
        free(name);
        return SL_ERR;
    }
    s->rule_fn[slot] = name;
    return SL_OK;
}

static int load_conf(struct sl_config_cur *c, const char *path, struct sl_step_conf *s,
                     size_t pos) {
    static const char *const keys[] = {
        "url", "method", "headers", "auth", "timeout", "connect_timeout", "max_in_flight",
        "max_queued", "retries", "backoff", "backoff_max", "ca_file", "as", "accept", "key",
        "coalesce", "params", "request", "response", NULL};
    char p[SL_CONFIG_PATHLEN];
    (void)pos;
    sl_config_join(p, path, "http");
    if (sl_config_enter(c, path, "http") != 1) return SL_ERR;
    int ret = SL_ERR;
    if (sl_config_only_keys(c, p, keys) || sl_step_http_load_common(c, p, s) ||
        sl_config_get_str(c, p, "method", NULL, &((struct sl_http_conf *)s->data)->method) ||
        sl_step_http_load_fn(c, p, "request", true, s, 0) ||
        sl_step_http_load_fn(c, p, "response", false, s, 1))
        goto done;
    ret = SL_OK;
done:
    lua_pop(sl_config_state(c), 1);
    return ret;
}

static void strv_free(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void sl_step_http_unload(struct sl_step_conf *s) {
    struct sl_http_conf *h = s->data;
    for (int k = 0; k < SL_STEP_RULE_FNS; k++) free(s->rule_fn[k]);
    free(s->params_json);
    if (!h) return;
    free(h->url);
    free(h->path);
    free(h->method);
    strv_free(h->headers, h->nheaders);
    strv_free(h->secrets, h->nsecrets);
    free(h->token);
    free(h->token_url);
    free(h->client_id);
    free(h->client_secret);
    free(h->scope);
    free(h->ca_file);
    free(h->as);
    free(h->key_var);
    free(h->accept);
    free(h);
    s->data = NULL;
}

/* ==================== State ==================== */

/* What the http (or model) steps of a pipeline share: one client. */
struct hshared {
    struct sl_httpc *client;
    struct event_base *own_base; /* trace mode: a loop never run, for the client */
    int refs;
};

/* A canned answer for trace mode (--stub). */
struct stub {
    long status;
    struct sl_httpc_header *headers;
    size_t nheaders;
    char *body;
    size_t len;
};

struct hkey;

enum hreq_state {
    HREQ_WAIT_KEY,               /* behind the key's request in flight */
    HREQ_READY,                  /* built, in st->ready for a slot or the cost bucket */
    HREQ_SENT,                   /* with the endpoint */
    HREQ_RETRY                   /* waiting for its retry timer */
};

/* A context at the step. */
struct hreq {
    struct http_step *st;
    struct sl_pipeline_ctx *c;
    struct hkey *key;            /* NULL: unkeyed */
    enum hreq_state state;
    struct hreq *prev, *next;    /* the key's waiters or st->ready */
    struct hreq *aprev, *anext;  /* st->all */
    struct sl_httpc_call *call;  /* HREQ_SENT */
    char *body;                  /* the request built by the rule */
    size_t len;
    char **hdrs;                 /* extra headers from the rule */
    size_t nhdrs;
    int attempts;                /* attempts of every send so far */
    struct event timer;          /* HREQ_RETRY */
};

/* Contexts of one key. */
struct hkey {
    char *name;
    size_t len;
    uint64_t hash;
    struct hreq *active;         /* the one whose request runs */
    struct hreq *whead, *wtail;  /* waiting, oldest first */
    struct hkey *next;           /* bucket chain */
};

struct http_step {
    const struct sl_step_conf *s;
    const struct sl_http_conf *h;
    size_t index;
    const char *name;
    struct sl_step_path *key;    /* the key variable split; NULL: unkeyed */
    struct hshared *sh;
    struct event_base *base;     /* NULL: trace mode */
    struct sl_httpc_endpoint *ep;
    struct stub *stub;           /* trace mode only */
    struct hreq *all;            /* every context at the step */
    struct hreq *rhead, *rtail;  /* ready FIFO */
    size_t nready;
    size_t nsent;
    struct hkey **buckets;
    size_t nbuckets, nkeys;
    struct sl_cost_bucket cost;  /* learnt from responses */
    struct event gate;           /* the cost bucket's wait */
    bool gate_armed, pumping;
    struct hreq *starting;       /* the context start is running for */
    struct sl_step_result *start_res;
    struct sl_metrics_series *m_throttle_waits;
    char err[SL_ERRLEN * 2];     /* error of the last result */
    char start_err[SL_ERRLEN * 2];
    char reason[64], start_reason[64];
    struct sl_buf extra, start_extra; /* dead-letter members */
    struct sl_buf scratch;
};

static void pump(struct http_step *st);
static void key_next(struct http_step *st, struct hkey *k);

/* ==================== Keys ==================== */

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void keys_grow(struct http_step *st) {
    size_t n = st->nbuckets ? st->nbuckets * 2 : SL_HTTP_KEY_BUCKETS;
    struct hkey **b = sl_calloc(n, sizeof(*b));
    for (size_t i = 0; i < st->nbuckets; i++)
        for (struct hkey *k = st->buckets[i], *next; k; k = next) {
            next = k->next;
            k->next = b[k->hash & (n - 1)];
            b[k->hash & (n - 1)] = k;
        }
    free(st->buckets);
    st->buckets = b;
    st->nbuckets = n;
}

static struct hkey *key_get(struct http_step *st, const char *name, size_t len) {
    uint64_t h = fnv(name, len);
    if (!st->nbuckets) keys_grow(st);
    for (struct hkey *k = st->buckets[h & (st->nbuckets - 1)]; k; k = k->next)
        if (k->hash == h && k->len == len && !memcmp(k->name, name, len)) return k;
    if (st->nkeys >= st->nbuckets * 2) keys_grow(st);
    struct hkey *k = sl_calloc(1, sizeof(*k));
    k->name = sl_strndup(name, len);
    k->len = len;
    k->hash = h;
    k->next = st->buckets[h & (st->nbuckets - 1)];
    st->buckets[h & (st->nbuckets - 1)] = k;
    st->nkeys++;
    return k;
}

/* Frees k once nothing of it is left. */
static void key_release(struct http_step *st, struct hkey *k) {
    if (k->active || k->whead) return;
    struct hkey **pp = &st->buckets[k->hash & (st->nbuckets - 1)];
    while (*pp != k) pp = &(*pp)->next;
    *pp = k->next;
    st->nkeys--;
    free(k->name);
    free(k);
}

static void wait_push(struct hkey *k, struct hreq *r) {
    r->state = HREQ_WAIT_KEY;
    r->prev = k->wtail;
    r->next = NULL;
    if (k->wtail) k->wtail->next = r;
    else k->whead = r;
    k->wtail = r;
}

static struct hreq *wait_pop(struct hkey *k) {
    struct hreq *r = k->whead;
    if (!r) return NULL;
    k->whead = r->next;
    if (k->whead) k->whead->prev = NULL;
    else k->wtail = NULL;
    r->prev = r->next = NULL;
    return r;
}

/* ==================== Contexts ==================== */

static struct hreq *hreq_new(struct http_step *st, struct sl_pipeline_ctx *c) {
    struct hreq *r = sl_calloc(1, sizeof(*r));
    r->st = st;
    r->c = c;
    r->anext = st->all;
    if (st->all) st->all->aprev = r;
    st->all = r;
    return r;
}

static void hreq_free(struct hreq *r) {
    struct http_step *st = r->st;
    if (r->aprev) r->aprev->anext = r->anext;
    else st->all = r->anext;
    if (r->anext) r->anext->aprev = r->aprev;
    free(r->body);
    strv_free(r->hdrs, r->nhdrs);
    free(r);
}

static void ready_push(struct http_step *st, struct hreq *r, bool front) {
    r->state = HREQ_READY;
    if (front) {
        r->prev = NULL;
        r->next = st->rhead;
        if (st->rhead) st->rhead->prev = r;
        else st->rtail = r;
        st->rhead = r;
    } else {
        r->next = NULL;
        r->prev = st->rtail;
        if (st->rtail) st->rtail->next = r;
        else st->rhead = r;
        st->rtail = r;
    }
    st->nready++;
}

static struct hreq *ready_pop(struct http_step *st) {
    struct hreq *r = st->rhead;
    st->rhead = r->next;
    if (st->rhead) st->rhead->prev = NULL;
    else st->rtail = NULL;
    r->prev = r->next = NULL;
    st->nready--;
    return r;
}

/* Ends a context with res: the result of start when start is running for
 * it, else through sl_pipeline_resume; then the key's next context goes. */
static void finish(struct hreq *r, const struct sl_step_result *res) {
    struct http_step *st = r->st;
    struct hkey *k = r->key;
    struct sl_pipeline_ctx *c = r->c;
    if (k && k->active == r) k->active = NULL;
    hreq_free(r);
    if (st->starting == r) {
        struct sl_step_result *out = st->start_res;
        *out = *res;
        if (res->error) {
            snprintf(st->start_err, sizeof(st->start_err), "%s", res->error);
            out->error = st->start_err;
        }
        if (res->reason) {
            snprintf(st->start_reason, sizeof(st->start_reason), "%s", res->reason);
            out->reason = st->start_reason;
        }
        if (res->extra) {
            sl_buf_reset(&st->start_extra);
            sl_buf_adds(&st->start_extra, res->extra);
            out->extra = sl_buf_cstr(&st->start_extra);
        }
        st->starting = NULL;
    } else {
        sl_pipeline_resume(c, res);
    }
    if (k) key_next(st, k);
}

/* Ends r with an error: text (redacted), and the dead letter's "http"
 * member with status, attempts and a redacted snippet of body. */
static void fail(struct hreq *r, const char *text, long status, const char *body, size_t len) {
    struct http_step *st = r->st;
    lua_State *L = sl_rules_state(r->c->rules);
    struct sl_buf *b = &st->scratch;
    sl_buf_reset(b);
    sl_httpc_redact(st->ep, text, strlen(text), b);
    snprintf(st->err, sizeof(st->err), "%s", sl_buf_cstr(b));
    sl_buf_reset(&st->extra);
    sl_buf_printf(&st->extra, "\"http\":{\"status\":%ld,\"attempts\":%d", status, r->attempts);
    if (body && len) {
        size_t n = len > SL_HTTP_SNIPPET ? SL_HTTP_SNIPPET : len;
        while (n < len && n > 0 && ((unsigned char)body[n] & 0xC0) == 0x80) n--; /* whole UTF-8 */
        sl_buf_reset(b);
        sl_httpc_redact(st->ep, body, n, b);
        if (n < len) sl_buf_adds(b, "...");
        sl_buf_adds(&st->extra, ",\"response\":");
        sl_step_json_str(L, &st->extra, b->data ? b->data : "", b->len);
    }
    sl_buf_addc(&st->extra, '}');
    struct sl_step_result res = {.status = SL_STEP_ERROR, .error = st->err,
                                 .extra = sl_buf_cstr(&st->extra)};
    finish(r, &res);
}

/* ==================== Requests ==================== */

/* Runs the request rule for r: r->body and r->hdrs, or r ends (error or
 * filtered). Returns SL_OK when r is built. */
static int build(struct hreq *r) {
    struct http_step *st = r->st;
    struct sl_rules *rules = r->c->rules;
    lua_State *L = sl_rules_state(rules);
    char jerr[256];
    int top = lua_gettop(L);
    int ret = SL_ERR;

    sl_rules_push_fn(rules, st->index, 0);               /* fn params */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->c->ref);         /* fn params ctx */
    lua_insert(L, -2);                                    /* fn ctx params */
    if (sl_rules_pcall(rules, st->index, 2, 2, r->c->in)) {  /* err */
        const char *m = sl_rules_error_message(L);
        char text[SL_ERRLEN * 2];
        snprintf(text, sizeof(text), "%s: request: %s", st->name, m ? m : "(error object)");
        lua_settop(L, top);
        fail(r, text, 0, NULL, 0);
        return SL_ERR;
    }                                                     /* body headers */
    if (lua_isnil(L, -2)) {
        const char *why = lua_tostring(L, -1);
        snprintf(st->reason, sizeof(st->reason), "%s", why && *why ? why : "no_request");
        for (char *p = st->reason; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.", *p))
                *p = '_';
        lua_settop(L, top);
        struct sl_step_result res = {.status = SL_STEP_FILTERED, .reason = st->reason};
        finish(r, &res);
        return SL_ERR;
    }
    struct sl_buf b = {0};
    if (lua_type(L, -2) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -2, &n);
        sl_buf_add(&b, s, n);
    } else if (!lua_istable(L, -2) || sl_json_encode_sorted(L, -2, &b, jerr, sizeof(jerr))) {
        char text[SL_ERRLEN];
        if (!lua_istable(L, -2)) snprintf(jerr, sizeof(jerr), "it returned a %s", luaL_typename(L, -2));
        snprintf(text, sizeof(text), "%s: request: the body must be a string or a table of "
                 "JSON values: %s", st->name, jerr);
        sl_buf_free(&b);
        lua_settop(L, top);
        fail(r, text, 0, NULL, 0);
        return SL_ERR;
    }
    r->len = b.len;
    r->body = b.data ? b.data : sl_strdup("");
    if (lua_istable(L, -1)) {
        size_t cap = 4;
        r->hdrs = sl_calloc(cap, sizeof(char *));
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING ||
                (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)) {
                lua_pop(L, 1);
                continue;
            }
            if (r->nhdrs == cap) r->hdrs = sl_realloc(r->hdrs, (cap *= 2) * sizeof(char *));
            struct sl_buf h = {0};
            sl_buf_printf(&h, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
            r->hdrs[r->nhdrs++] = h.data;
            lua_pop(L, 1);
        }
    }
    ret = SL_OK;
    lua_settop(L, top);
    return ret;
}

static struct sl_httpc_req request_of(const struct hreq *r) {
    struct sl_httpc_req req = {
        .path = r->st->h->path, .body = r->body, .len = r->len,
        .headers = (const char *const *)r->hdrs, .nheaders = r->nhdrs,
    };
    return req;
}

/* ==================== Cost bucket ==================== */

static double num_field(lua_State *L, int idx, const char *name) {
    lua_getfield(L, idx, name);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
    lua_pop(L, 1);
    return v;
}

/* Learns the bucket from a cost table ({requestedQueryCost, throttleStatus =
 * {maximumAvailable, currentlyAvailable, restoreRate}}) at idx, reported
 * while the other requests in flight may not have been charged yet. */
static void cost_learn(struct http_step *st, lua_State *L, int idx) {
    if (!lua_istable(L, idx)) return;
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    double requested = num_field(L, idx, "requestedQueryCost");
    lua_getfield(L, idx, "throttleStatus");
    if (lua_istable(L, -1)) {
        int t = lua_gettop(L);
        sl_cost_bucket_learn(&st->cost, requested, num_field(L, t, "currentlyAvailable"),
                             num_field(L, t, "maximumAvailable"), num_field(L, t, "restoreRate"),
                             st->nsent, sl_mono_ms());
    }
    lua_pop(L, 1);
}

static void gate_cb(evutil_socket_t fd, short what, void *arg) {
    struct http_step *st = arg;
    (void)fd; (void)what;
    st->gate_armed = false;
    pump(st);
}

/* ==================== Responses ==================== */

/* Sets ctx[as] to the value at the top (popped). */
static void set_var(struct http_step *st, lua_State *L, struct sl_pipeline_ctx *c) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);            /* v ctx */
    lua_insert(L, -2);                                    /* ctx v */
    lua_setfield(L, -2, st->h->as ? st->h->as : st->name); /* ctx */
    lua_pop(L, 1);
}

static bool accepted(const struct sl_http_conf *h, long status) {
    if (!h->naccept) return status >= 200 && status <= 299;
    for (size_t i = 0; i < h->naccept; i++)
        if (h->accept[i] == status) return true;
    return false;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg) {
    struct hreq *r = arg;
    (void)fd; (void)what;
    ready_push(r->st, r, true);
    pump(r->st);
}

/* The wait before resending r after a retryable failure that named none. */
static int64_t backoff_ms(const struct http_step *st, int attempts) {
    int64_t base = st->h->backoff_ms ? st->h->backoff_ms : SL_HTTPC_DEFAULT_BACKOFF_BASE_MS;
    int64_t max = st->h->backoff_max_ms ? st->h->backoff_max_ms : SL_HTTPC_DEFAULT_BACKOFF_MAX_MS;
    int64_t w = base;
    for (int i = 1; i < attempts && w < max; i++) w *= 2;
    if (w > max) w = max;
    return w / 2 + (int64_t)(random() % (w / 2 + 1));
}

/* A failure object at the top of L (raised by the response rule): retried
 * when it says so and attempts are left, else r fails with its message. */
static void on_failure(struct hreq *r, lua_State *L, const struct sl_httpc_response *resp) {
    struct http_step *st = r->st;
    int f = lua_gettop(L);
    lua_getfield(L, f, "cost");
    cost_learn(st, L, -1);
    lua_pop(L, 1);
    lua_getfield(L, f, "retryable");
    bool retryable = lua_toboolean(L, -1);
    lua_pop(L, 1);
    double after = num_field(L, f, "retry_after_ms");
    if (retryable && r->attempts <= st->h->retries && st->base) {
        int64_t ms = after >= 0 ? (int64_t)after : backoff_ms(st, r->attempts);
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        char labels[128];
        snprintf(labels, sizeof(labels), "step=\"%s\"", st->name);
        sl_metrics_inc("sluice_http_step_retries_total", labels, 1);
        r->state = HREQ_RETRY;
        evtimer_assign(&r->timer, st->base, retry_cb, r);
        evtimer_add(&r->timer, &tv);
        return;
    }
    lua_getfield(L, f, "message");
    char text[SL_ERRLEN * 2];
    snprintf(text, sizeof(text), "%s", lua_isstring(L, -1) ? lua_tostring(L, -1)
                                                             : "the response rule failed");
    lua_pop(L, 1);
    fail(r, text, resp->status, resp->body, resp->len);
}

/* Turns a response into r's outcome: the response rule (or JSON), the
 * accepted statuses, failures and retries. L's stack is left as found. */
static void judge(struct hreq *r, const struct sl_httpc_response *resp) {
    struct http_step *st = r->st;
    struct sl_rules *rules = r->c->rules;
    lua_State *L = sl_rules_state(rules);
    int top = lua_gettop(L);
    bool ok = accepted(st->h, resp->status);
    char text[SL_ERRLEN * 2], jerr[256];
    struct sl_step_result res = {.status = SL_STEP_NEXT};

    if (!st->s->rule_fn[1]) {
        if (!ok) {
            snprintf(text, sizeof(text), "%s: HTTP %ld is not an accepted status", st->name,
                     resp->status);
            fail(r, text, resp->status, resp->body, resp->len);
        } else if (sl_json_decode(L, resp->body, resp->len, jerr, sizeof(jerr))) {
            snprintf(text, sizeof(text), "%s: the response is not JSON: %s", st->name, jerr);
            fail(r, text, resp->status, resp->body, resp->len);
        } else {
            set_var(st, L, r->c);
            finish(r, &res);
        }
        lua_settop(L, top);
        return;
    }
    sl_rules_push_fn(rules, st->index, 1);               /* fn params */
    lua_pop(L, 1);                                        /* fn */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->c->ref);         /* fn ctx */
    lua_pushinteger(L, resp->status);                     /* fn ctx status */
    lua_createtable(L, 0, (int)resp->nheaders);           /* fn ctx status headers */
    for (size_t i = 0; i < resp->nheaders; i++) {
        struct sl_buf *b = &st->scratch;
        sl_buf_reset(b);
        for (const char *p = resp->headers[i].name; *p; p++)
            sl_buf_addc(b, (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p));
        lua_pushlstring(L, b->data ? b->data : "", b->len);
        lua_pushstring(L, resp->headers[i].value);
        lua_rawset(L, -3);
    }
    lua_pushlstring(L, resp->body, resp->len);            /* fn ctx status headers body */
    if (sl_rules_pcall(rules, st->index, 4, 2, r->c->in)) {  /* err */
        if (lua_istable(L, -1)) on_failure(r, L, resp);
        else {
            snprintf(text, sizeof(text), "%s: response: %s", st->name,
                     lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object)");
            fail(r, text, resp->status, resp->body, resp->len);
        }
    } else if (lua_isnil(L, -2)) {                        /* nil reason */
        const char *why = lua_tostring(L, -1);
        snprintf(st->reason, sizeof(st->reason), "%s", why && *why ? why : "filtered");
        res.status = SL_STEP_FILTERED;
        res.reason = st->reason;
        finish(r, &res);
    } else if (!ok) {
        snprintf(text, sizeof(text), "%s: HTTP %ld is not an accepted status", st->name,
                 resp->status);
        fail(r, text, resp->status, resp->body, resp->len);
    } else {                                              /* value x */
        lua_pop(L, 1);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "cost");
            cost_learn(st, L, -1);
            lua_pop(L, 1);
        }
        set_var(st, L, r->c);
        finish(r, &res);
    }
    lua_settop(L, top);
}

static void on_response(const struct sl_httpc_response *resp, void *arg) {
    struct hreq *r = arg;
    struct http_step *st = r->st;
    char text[SL_ERRLEN * 2];
    r->call = NULL;
    st->nsent--;
    r->attempts += resp->attempts;
    if (resp->result == SL_HTTPC_ECANCELLED) {   /* the endpoint went first: cancel ran */
        hreq_free(r);
        return;
    }
    if (resp->result != SL_HTTPC_OK) {
        snprintf(text, sizeof(text), "%s: %s: %s", st->name,
                 sl_httpc_result_name(resp->result), resp->error);
        fail(r, text, resp->status, resp->body, resp->len);
    } else {
        judge(r, resp);
    }
    pump(st);
}

/* ==================== Sending ==================== */

/* Sends ready contexts while the endpoint takes them and the cost bucket
 * allows. Not reentrant: a nested call leaves the work to the outer one. */
static void pump(struct http_step *st) {
    char err[SL_ERRLEN];
    if (st->pumping || !st->ep) return;
    st->pumping = true;
    while (st->rhead) {
        int64_t wait = sl_cost_bucket_wait(&st->cost, sl_mono_ms());
        if (wait > 0) {
            if (!st->gate_armed) {
                struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
                evtimer_add(&st->gate, &tv);
                st->gate_armed = true;
                sl_metrics_add(st->m_throttle_waits, 1);
            }
            break;
        }
        struct hreq *r = st->rhead;
        struct sl_httpc_req req = request_of(r);
        int rc = sl_httpc_request(st->ep, &req, on_response, r, &r->call, err, sizeof(err));
        if (rc == SL_HTTPC_FULL) break;
        ready_pop(st);
        if (rc != SL_OK) {
            char text[SL_ERRLEN + 64];
            snprintf(text, sizeof(text), "%s: %s", st->name, err);
            fail(r, text, 0, NULL, 0);
            continue;
        }
        r->state = HREQ_SENT;
        st->nsent++;
        sl_cost_bucket_take(&st->cost);
    }
    st->pumping = false;
}

/* The key's request ended: its oldest waiting context goes next. */
static void key_next(struct http_step *st, struct hkey *k) {
    struct hreq *r;
    while (!k->active && (r = wait_pop(k))) {
        k->active = r;
        if (build(r) == SL_OK) {
            ready_push(st, r, false);
            pump(st);
        }
    }
    key_release(st, k);
}

/* ==================== Trace mode ==================== */

/* Appends {"method", "url", "headers": [...], "body"} of what r would send,
 * secrets redacted; the body as JSON when it is JSON. */
static void describe(struct http_step *st, struct hreq *r, struct sl_buf *out) {
    lua_State *L = sl_rules_state(r->c->rules);
    struct sl_buf d = {0};
    struct sl_httpc_req req = request_of(r);
    char jerr[64];
    sl_httpc_describe(st->ep, &req, &d);
    const char *s = sl_buf_cstr(&d), *nl = strchr(s, '\n'), *sp = strchr(s, ' ');
    sl_buf_adds(out, "{\"method\":");
    sl_step_json_str(L, out, s, (size_t)(sp - s));
    sl_buf_adds(out, ",\"url\":");
    sl_step_json_str(L, out, sp + 1, (size_t)(nl - sp - 1));
    sl_buf_adds(out, ",\"headers\":[");
    const char *p = nl + 1;
    for (int first = 1; *p && *p != '\n'; first = 0) {
        const char *e = strchr(p, '\n');
        if (!first) sl_buf_addc(out, ',');
        sl_step_json_str(L, out, p, (size_t)(e - p));
        p = e + 1;
    }
    if (*p == '\n') p++;
    size_t blen = d.len - (size_t)(p - s);
    sl_buf_adds(out, "],\"body\":");
    if (blen && sl_json_decode(L, p, blen, jerr, sizeof(jerr)) == SL_OK) {
        lua_pop(L, 1);
        sl_buf_add(out, p, blen);
    } else {
        sl_step_json_str(L, out, p, blen);
    }
    sl_buf_addc(out, '}');
    sl_buf_free(&d);
}

/* Runs r at once: traces its request, then answers it with the stub, or
 * ends the context there. */
static void trace_run(struct http_step *st, struct hreq *r) {
    if (sl_pipeline_tracing(r->c)) {
        struct sl_buf b = {0};
        describe(st, r, &b);
        sl_pipeline_trace(r->c, "request", sl_buf_cstr(&b));
        sl_buf_free(&b);
    }
    if (!st->stub) {
        char note[256];
        snprintf(note, sizeof(note), "\"not sent: no --stub %s=FILE answers this step\"", st->name);
        sl_pipeline_trace(r->c, "stopped", note);
        struct sl_step_result res = {.status = SL_STEP_DONE};
        finish(r, &res);
        return;
    }
    struct sl_httpc_response resp = {
        .result = SL_HTTPC_OK, .status = st->stub->status, .headers = st->stub->headers,
        .nheaders = st->stub->nheaders, .body = st->stub->body, .len = st->stub->len,
        .error = "", .attempts = 1,
    };
    r->attempts = 1;
    judge(r, &resp);
}

static void stub_free(struct stub *sb) {
    if (!sb) return;
    for (size_t i = 0; i < sb->nheaders; i++) {
        free((char *)sb->headers[i].name);
        free((char *)sb->headers[i].value);
    }
    free(sb->headers);
    free(sb->body);
    free(sb);
}

/* Reads a stub file {"status": 200, "headers": {...}, "body": <string or
 * JSON>}; NULL (logged) when it cannot. */
static struct stub *stub_load(const char *step, const char *file) {
    lua_State *L = luaL_newstate();
    struct stub *sb = NULL;
    char err[256];
    struct sl_buf text = {0};
    FILE *f = fopen(file, "rb");
    if (!L || !f) {
        sl_log(SL_LOG_ERROR, "http", "--stub %s=%s: cannot read the file", step, file);
        goto done;
    }
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) sl_buf_add(&text, chunk, n);
    sl_json_init(L);
    if (sl_json_decode(L, text.data ? text.data : "", text.len, err, sizeof(err)) ||
        !lua_istable(L, -1)) {
        sl_log(SL_LOG_ERROR, "http", "--stub %s=%s: expected a JSON object {status, headers, "
               "body}: %s", step, file, text.len ? err : "empty file");
        goto done;
    }
    sb = sl_calloc(1, sizeof(*sb));
    lua_getfield(L, -1, "status");
    sb->status = lua_isnumber(L, -1) ? (long)lua_tonumber(L, -1) : 200;
    lua_pop(L, 1);
    lua_getfield(L, -1, "headers");
    if (lua_istable(L, -1)) {
        size_t cap = 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_isstring(L, -1)) {
                if (sb->nheaders == cap)
                    sb->headers = sl_realloc(sb->headers, (cap = cap * 2 + 4) * sizeof(*sb->headers));
                sb->headers[sb->nheaders].name = sl_strdup(lua_tostring(L, -2));
                sb->headers[sb->nheaders++].value = sl_strdup(lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "body");
    struct sl_buf body = {0};
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t bl;
        const char *bs = lua_tolstring(L, -1, &bl);
        sl_buf_add(&body, bs, bl);
    } else if (!lua_isnil(L, -1)) {
        sl_json_encode(L, -1, &body, err, sizeof(err));
    }
    sb->len = body.len;
    sb->body = body.data ? body.data : sl_strdup("");
done:
    if (f) fclose(f);
    if (L) lua_close(L);
    sl_buf_free(&text);
    return sb;
}

/* ==================== Step ==================== */

static struct hshared *shared_get(const struct sl_step_env *env) {
    struct hshared *sh = *env->shared;
    char err[SL_ERRLEN];
    if (sh) {
        sh->refs++;
        return sh;
    }
    sh = sl_calloc(1, sizeof(*sh));
    struct event_base *base = env->base;
    if (!base) base = sh->own_base = event_base_new();
    sh->client = base ? sl_httpc_create(base, err, sizeof(err)) : NULL;
    if (!sh->client) sl_log(SL_LOG_ERROR, "http", "no HTTP client: %s", base ? err : "no loop");
    sh->refs = 1;
    *env->shared = sh;
    return sh;
}

static void shared_put(struct hshared *sh, void **slot) {
    (void)slot;
    if (--sh->refs > 0) return;
    sl_httpc_destroy(sh->client);
    if (sh->own_base) event_base_free(sh->own_base);
    free(sh);
}

/* The key variable: the step's, else the window step's before it. */
static const char *key_var_of(const struct sl_step_env *env, const struct sl_http_conf *h) {
    if (h->unkeyed) return NULL;
    if (h->key_var) return h->key_var;
    for (size_t i = env->index; i-- > 0;)
        if (env->cf->steps[i].type == SL_STEP_WINDOW) return env->cf->steps[i].key_var;
    return NULL;
}

void *sl_step_http_create(const struct sl_step_env *env) {
    const struct sl_step_conf *s = &env->cf->steps[env->index];
    const struct sl_http_conf *h = s->data;
    struct http_step *st = sl_calloc(1, sizeof(*st));
    char err[SL_ERRLEN], labels[128];
    st->s = s;
    st->h = h;
    st->index = env->index;
    st->name = s->name;
    st->base = env->base;
    st->key = sl_step_path_create(key_var_of(env, h));
    st->sh = shared_get(env);
    snprintf(labels, sizeof(labels), "step=\"%s\"", s->name);
    st->m_throttle_waits = sl_metrics_counter("sluice_http_cost_waits_total", labels);
    if (st->base) evtimer_assign(&st->gate, st->base, gate_cb, st);
    struct sl_httpc_endpoint_conf ec = {
        .name = s->name, .url = h->url, .method = h->method,
        .headers = (const char *const *)h->headers, .nheaders = h->nheaders,
        .timeout_ms = (int)h->timeout_ms, .connect_timeout_ms = (int)h->connect_timeout_ms,
        .max_in_flight = (size_t)h->max_in_flight, .max_queued = (size_t)h->max_queued,
        .retries = (int)h->retries, .backoff_base_ms = (int)h->backoff_ms,
        .backoff_max_ms = (int)h->backoff_max_ms, .ca_file = h->ca_file,
        .secrets = (const char *const *)h->secrets, .nsecrets = h->nsecrets,
        .auth = {.kind = h->auth, .token = h->token, .token_url = h->token_url,
                 .client_id = h->client_id, .client_secret = h->client_secret,
                 .scope = h->scope, .credentials_in_body = h->credentials_in_body},
    };
    if (st->sh->client) st->ep = sl_httpc_endpoint_create(st->sh->client, &ec, err, sizeof(err));
    if (st->sh->client && !st->ep) sl_log(SL_LOG_ERROR, "http", "step %s: %s", s->name, err);
    for (size_t i = 0; !st->base && i < env->nstubs; i++) {
        const char *eq = strchr(env->stubs[i], '=');
        if (eq && (size_t)(eq - env->stubs[i]) == strlen(s->name) &&
            !strncmp(env->stubs[i], s->name, strlen(s->name)))
            st->stub = stub_load(s->name, eq + 1);
    }
    return st;
}

void sl_step_http_start(void *state, struct sl_pipeline_ctx *c, struct sl_step_result *res) {
    struct http_step *st = state;
    lua_State *L = sl_rules_state(c->rules);
    struct hkey *k = NULL;

    if (!st->ep) {
        snprintf(st->start_err, sizeof(st->start_err), "%s: the step has no HTTP endpoint "
                 "(see the log at start)", st->name);
        res->status = SL_STEP_ERROR;
        res->error = st->start_err;
        return;
    }
    struct hreq *r = hreq_new(st, c);
    if (st->key && st->base) {
        int top = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);                /* ctx */
        int ctx_idx = lua_gettop(L);
        int paths = sl_step_push_path_cache(L);                  /* ctx paths */
        sl_step_push_path(L, paths, ctx_idx, st->key);           /* ctx paths key */
        size_t len;
        const char *key = (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
                              ? lua_tolstring(L, -1, &len) : NULL;
        if (key) k = key_get(st, key, len);
        lua_settop(L, top);
    }
    r->key = k;
    res->status = SL_STEP_PENDING;
    if (k && k->active) {
        if (st->h->coalesce && k->whead) {
            struct hreq *old = wait_pop(k);
            struct sl_step_result skip = {.status = SL_STEP_FILTERED, .reason = "coalesced"};
            struct sl_pipeline_ctx *oc = old->c;
            hreq_free(old);
            sl_pipeline_resume(oc, &skip);
        }
        wait_push(k, r);
        return;
    }
    if (k) k->active = r;
    st->starting = r;
    st->start_res = res;
    if (build(r) == SL_OK) {
        if (!st->base) {
            trace_run(st, r);
        } else {
            ready_push(st, r, false);
            pump(st);
        }
    }
    st->starting = NULL;
}

void sl_step_http_cancel(void *state) {
    struct http_step *st = state;
    while (st->all) {
        struct hreq *r = st->all;
        if (r->state == HREQ_SENT && r->call) sl_httpc_cancel(r->call);
        if (r->state == HREQ_RETRY) evtimer_del(&r->timer);
        hreq_free(r);
    }
    st->rhead = st->rtail = NULL;
    st->nready = st->nsent = 0;
    for (size_t i = 0; i < st->nbuckets; i++)
        while (st->buckets[i]) {
            struct hkey *k = st->buckets[i];
            st->buckets[i] = k->next;
            free(k->name);
            free(k);
        }
    st->nkeys = 0;
    if (st->gate_armed) evtimer_del(&st->gate);
    st->gate_armed = false;
}

void sl_step_http_destroy(void *state) {
    struct http_step *st = state;
    if (!st) return;
    sl_step_http_cancel(st);
    sl_httpc_endpoint_destroy(st->ep);
    shared_put(st->sh, NULL);
    stub_free(st->stub);
    sl_step_path_destroy(st->key);
    free(st->buckets);
    sl_buf_free(&st->extra);
    sl_buf_free(&st->start_extra);
    sl_buf_free(&st->scratch);
    free(st);
}

bool sl_step_http_busy(void *state) {
    const struct http_step *st = state;
    return st->rhead != NULL;
}

static const char *const http_keys[] = {NULL};

const struct sl_step_kind sl_step_http = {
    .name = "http",
    .synopsis = "http = {...}",
    .keys = http_keys,
    .type = SL_STEP_HTTP,
    .flags = 0,
    .load = load_conf,
    .unload = sl_step_http_unload,
    .create = sl_step_http_create,
    .start = sl_step_http_start,
    .cancel = sl_step_http_cancel,
    .destroy = sl_step_http_destroy,
    .busy = sl_step_http_busy,
};
