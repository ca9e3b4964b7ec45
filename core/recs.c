/* recs.c -- the store step's store and catalog, and the read API's answers
 * (see recs.h). */
#define _GNU_SOURCE
#include "recs.h"
#include "intern.h"
#include "json.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define SL_RECS_MAX_CATALOG ((size_t)256 << 20) /* Largest catalog file read. */

struct sl_recs {
    struct sl_store *store;
    struct sl_intern *gids;      /* GID -> product number (never freed) */
    char **products;             /* by number: the product's JSON object */
    size_t n;
};

/* A read waiting for the store. */
struct read {
    struct sl_recs *r;
    sl_recs_answer_fn *cb;
    void *arg;
    char id[40];                 /* the visitor id, lower case */
};

/* ==================== Catalog ==================== */

/* The product at the top of L as the read API shows it:
 * {"id":gid,"handle":..,"title":..,"category":..,"price":..,"image":..,"url":..},
 * fields the catalog lacks left out. SL_ERR when it has no GID. */
static int product_json(lua_State *L, struct sl_buf *b, const char **gid, size_t *glen) {
    static const char *const fields[] = {"handle", "title", "category", "price", "image", "url",
                                         NULL};
    char jerr[64];
    lua_getfield(L, -1, "gid");                     /* ... product gid */
    if (lua_type(L, -1) != LUA_TSTRING || !lua_objlen(L, -1)) {
        lua_pop(L, 1);
        return SL_ERR;
    }
    *gid = lua_tolstring(L, -1, glen);              /* stays in the product table */
    sl_buf_adds(b, "{\"id\":");
    int rc = sl_json_encode(L, -1, b, jerr, sizeof(jerr));
    lua_pop(L, 1);                                  /* ... product */
    if (rc) return SL_ERR;
    for (size_t i = 0; fields[i]; i++) {
        lua_getfield(L, -1, fields[i]);             /* ... product v */
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            size_t mark = b->len;
            sl_buf_printf(b, ",\"%s\":", fields[i]);
            if (sl_json_encode(L, -1, b, jerr, sizeof(jerr))) b->len = mark;
        }
        lua_pop(L, 1);                              /* ... product */
    }
    sl_buf_addc(b, '}');
    return SL_OK;
}

static int load_catalog(struct sl_recs *r, const char *path, char *err, size_t errlen) {
    struct sl_buf text = {0}, b = {0};
    char jerr[SL_ERRLEN];
    int ret = SL_ERR;
    lua_State *L = luaL_newstate();

    if (!L) {
        sl_errf(err, errlen, "%s: cannot create a Lua state", path);
        return SL_ERR;
    }
    sl_json_init(L);
    if (sl_read_file(path, &text, SL_RECS_MAX_CATALOG, err, errlen)) goto done;
    if (sl_json_decode(L, text.data ? text.data : "", text.len, jerr, sizeof(jerr))) {
        sl_errf(err, errlen, "%s: %s", path, jerr);
        goto done;
    }
    if (lua_istable(L, -1)) lua_getfield(L, -1, "products"); /* doc products */
    if (!lua_istable(L, -1)) {
        sl_errf(err, errlen, "%s: \"products\": expected a list of products", path);
        goto done;
    }
    size_t n = lua_objlen(L, -1);
    r->products = sl_calloc(n ? n : 1, sizeof(*r->products));
    for (size_t i = 1; i <= n; i++) {
        const char *gid;
        size_t glen;
        lua_rawgeti(L, -1, (int)i);                 /* doc products product */
        sl_buf_reset(&b);
        if (!lua_istable(L, -1) || product_json(L, &b, &gid, &glen)) {
            sl_errf(err, errlen, "%s: products[%zu]: expected an object with a string \"gid\"",
                    path, i - 1);
            goto done;
        }
        if (sl_intern_find(r->gids, gid, glen) != SL_INTERN_NONE) {
            sl_errf(err, errlen, "%s: products[%zu].gid: \"%.*s\" listed twice", path, i - 1,
                    (int)glen, gid);
            goto done;
        }
        sl_intern_add(r->gids, gid, glen);          /* number r->n */
        r->products[r->n++] = sl_strdup(sl_buf_cstr(&b));
        lua_pop(L, 1);                              /* doc products */
    }
    ret = SL_OK;
done:
    sl_buf_free(&text);
    sl_buf_free(&b);
    lua_close(L);
    return ret;
}

/* ==================== Opening ==================== */

struct sl_recs *sl_recs_open(struct event_base *base, const struct sl_config *cf,
                             char *err, size_t errlen) {
    const struct sl_recs_conf *rc = NULL;
    char serr[SL_ERRLEN];
    err[0] = '\0';
    for (size_t i = 0; i < cf->nsteps; i++)
        if (cf->steps[i].type == SL_STEP_STORE) rc = cf->steps[i].data;
    if (!rc) return NULL;
    struct sl_recs *r = sl_calloc(1, sizeof(*r));
    r->gids = sl_intern_create();
    if (rc->catalog && load_catalog(r, rc->catalog, err, errlen)) goto fail;
    struct sl_store_conf sc = {
        .max_keys = (size_t)rc->max_keys, .ttl_ms = rc->ttl_ms, .redis_url = rc->redis,
    };
    r->store = sl_store_create(base, &sc, serr, sizeof(serr));
    if (!r->store) {
        sl_errf(err, errlen, "%s: store: %s", cf->file, serr);
        goto fail;
    }
    sl_log(SL_LOG_INFO, "store", "%s, %zu catalog products; read API on the collector at "
           "/recommendations/<visitor id>", rc->redis ? "on redis" : "in process", r->n);
    return r;
fail:
    sl_recs_destroy(r);
    return NULL;
}

void sl_recs_destroy(struct sl_recs *r) {
    if (!r) return;
    sl_store_destroy(r->store);
    for (size_t i = 0; i < r->n; i++) free(r->products[i]);
    free(r->products);
    sl_intern_destroy(r->gids);
    free(r);
}

struct sl_store *sl_recs_store(struct sl_recs *r) { return r->store; }

void sl_recs_tick(struct sl_recs *r) {
    if (r) sl_store_tick(r->store);
}

void sl_recs_metrics(const struct sl_recs *r, struct sl_buf *out) {
    if (r) sl_store_metrics(r->store, out);
}

/* ==================== Reading ==================== */

bool sl_recs_valid_id(const char *id, size_t n) {
    if (n != 36) return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? id[i] != '-' : !isxdigit((unsigned char)id[i])) return false;
    }
    return true;
}

/* The stored value is the JSON array of GIDs the store step wrote: plain
 * strings without escapes (step_store.c keeps only such GIDs). */
static void on_value(void *arg, enum sl_store_result res, const char *value, size_t len,
                     int64_t updated_at) {
    struct read *rd = arg;
    struct sl_recs *r = rd->r;
    if (res == SL_STORE_NOT_FOUND) {
        rd->cb(rd->arg, 404, NULL, 0);
    } else if (res != SL_STORE_FOUND) {
        rd->cb(rd->arg, 503, NULL, 0);
    } else {
        struct sl_buf b = {0};
        const char *p = value, *end = value + len;
        bool first = true;
        sl_buf_printf(&b, "{\"visitorId\":\"%s\",\"updatedAt\":%lld,\"products\":[", rd->id,
                      (long long)updated_at);
        while (p < end) {
            const char *q = memchr(p, '"', (size_t)(end - p)), *e;
            if (!q || !(e = memchr(q + 1, '"', (size_t)(end - q - 1)))) break;
            uint32_t i = sl_intern_find(r->gids, q + 1, (size_t)(e - q - 1));
            if (i != SL_INTERN_NONE) {
                if (!first) sl_buf_addc(&b, ',');
                first = false;
                sl_buf_adds(&b, r->products[i]);
            }
            p = e + 1;
        }
        sl_buf_adds(&b, "]}");
        rd->cb(rd->arg, 200, b.data, b.len);
        sl_buf_free(&b);
    }
    free(rd);
}

void sl_recs_read(struct sl_recs *r, const char *id, size_t n, sl_recs_answer_fn *cb,
                  void *arg) {
    if (!sl_recs_valid_id(id, n)) {
        cb(arg, 400, NULL, 0);
        return;
    }
    struct read *rd = sl_calloc(1, sizeof(*rd));
    rd->r = r;
    rd->cb = cb;
    rd->arg = arg;
    for (size_t i = 0; i < n; i++) rd->id[i] = (char)tolower((unsigned char)id[i]);
    sl_store_get(r->store, rd->id, n, on_value, rd);
}
