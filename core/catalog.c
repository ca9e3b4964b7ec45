/* catalog.c -- products by number and by handle (see catalog.h). */
#include "catalog.h"
#include "intern.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

struct sl_catalog {
    struct sl_intern *handles; /* handle -> id; ids are product numbers (never freed) */
    char **gids;               /* by product number */
    size_t n, cap;             /* products, slots in gids */
    size_t gid_bytes;          /* bytes of the GID strings */
};

struct sl_catalog *sl_catalog_create(void) {
    struct sl_catalog *c = sl_calloc(1, sizeof(*c));
    c->handles = sl_intern_create();
    return c;
}

void sl_catalog_destroy(struct sl_catalog *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) free(c->gids[i]);
    free(c->gids);
    sl_intern_destroy(c->handles);
    free(c);
}

int sl_catalog_add(struct sl_catalog *c, const char *handle, size_t hlen, const char *gid,
                   size_t glen, char *err, size_t errlen) {
    if (!hlen || hlen > SL_CATALOG_MAX_FIELD || memchr(handle, '\0', hlen)) {
        sl_errf(err, errlen, "handle: expected 1 to %d bytes without NUL", SL_CATALOG_MAX_FIELD);
        return SL_ERR;
    }
    if (!glen || glen > SL_CATALOG_MAX_FIELD || memchr(gid, '\0', glen)) {
        sl_errf(err, errlen, "gid of \"%.*s\": expected 1 to %d bytes without NUL", (int)hlen,
                handle, SL_CATALOG_MAX_FIELD);
        return SL_ERR;
    }
    if (sl_intern_find(c->handles, handle, hlen) != SL_INTERN_NONE) {
        sl_errf(err, errlen, "handle \"%.*s\" listed twice", (int)hlen, handle);
        return SL_ERR;
    }
    if (c->n >= SL_CATALOG_MAX_PRODUCTS) {
        sl_errf(err, errlen, "more than %d products", SL_CATALOG_MAX_PRODUCTS);
        return SL_ERR;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->gids = sl_realloc(c->gids, c->cap * sizeof(*c->gids));
    }
    /* A table that never frees hands out ids 0, 1, 2, ...: the product number. */
    uint32_t id = sl_intern_add(c->handles, handle, hlen);
    (void)id;
    c->gids[c->n] = sl_strndup(gid, glen);
    c->gid_bytes += glen + 1;
    c->n++;
    return SL_OK;
}

size_t sl_catalog_count(const struct sl_catalog *c) { return c->n; }

uint32_t sl_catalog_find(const struct sl_catalog *c, const char *s, size_t len) {
    uint32_t id = sl_intern_find(c->handles, s, len);
    return id == SL_INTERN_NONE ? SL_CATALOG_NONE : id;
}

const char *sl_catalog_handle(const struct sl_catalog *c, uint32_t i) {
    return i < c->n ? sl_intern_str(c->handles, i, NULL) : NULL;
}

const char *sl_catalog_gid(const struct sl_catalog *c, uint32_t i) {
    return i < c->n ? c->gids[i] : NULL;
}

uint64_t sl_catalog_fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * UINT64_C(0x100000001b3);
    return h;
}

uint64_t sl_catalog_hash(const struct sl_catalog *c) {
    uint64_t h = SL_CATALOG_FNV_INIT;
    for (uint32_t i = 0; i < c->n; i++) {
        size_t len;
        const char *hd = sl_intern_str(c->handles, i, &len);
        h = sl_catalog_fnv(h, hd, len + 1);
        h = sl_catalog_fnv(h, c->gids[i], strlen(c->gids[i]) + 1);
    }
    return h;
}

size_t sl_catalog_bytes(const struct sl_catalog *c) {
    return sizeof(*c) + c->cap * sizeof(*c->gids) + c->gid_bytes + sl_intern_bytes(c->handles);
}

/* ==================== Reading JSON ==================== */

/* The string field `name` of the table at the top of L, or NULL. */
static const char *field(lua_State *L, const char *name, size_t *len) {
    const char *s = NULL;
    lua_getfield(L, -1, name);                      /* ... product value */
    if (lua_type(L, -1) == LUA_TSTRING) s = lua_tolstring(L, -1, len);
    lua_pop(L, 1);                                  /* ... product (s stays in the table) */
    return s;
}

struct sl_catalog *sl_catalog_load(const char *path, char *err, size_t errlen) {
    struct sl_buf text = {0};
    struct sl_catalog *c = NULL, *ret = NULL;
    char jerr[SL_ERRLEN];
    lua_State *L = luaL_newstate();

    if (!L) {
        sl_errf(err, errlen, "%s: cannot create a Lua state", path);
        return NULL;
    }
    sl_json_init(L);
    if (sl_read_file(path, &text, (size_t)256 << 20, err, errlen)) goto done;
    if (sl_json_decode(L, text.data ? text.data : "", text.len, jerr, sizeof(jerr))) {
        sl_errf(err, errlen, "%s: %s", path, jerr);
        goto done;
    }
    if (!lua_istable(L, -1)) {
        sl_errf(err, errlen, "%s: expected a JSON object with \"products\"", path);
        goto done;
    }
    lua_getfield(L, -1, "products");                /* doc products */
    if (!lua_istable(L, -1) || lua_objlen(L, -1) == 0) {
        sl_errf(err, errlen, "%s: \"products\": expected a non-empty list", path);
        goto done;
    }
    c = sl_catalog_create();
    for (size_t i = 1, n = lua_objlen(L, -1); i <= n; i++) {
        size_t hlen = 0, glen = 0;
        char aerr[SL_ERRLEN];
        lua_rawgeti(L, -1, (int)i);                 /* doc products product */
        if (!lua_istable(L, -1)) {
            sl_errf(err, errlen, "%s: products[%zu]: expected an object", path, i - 1);
            goto done;
        }
        const char *h = field(L, "handle", &hlen), *g = field(L, "gid", &glen);
        if (!h || !g) {
            sl_errf(err, errlen, "%s: products[%zu].%s: expected a string", path, i - 1,
                    h ? "gid" : "handle");
            goto done;
        }
        if (sl_catalog_add(c, h, hlen, g, glen, aerr, sizeof(aerr))) {
            sl_errf(err, errlen, "%s: products[%zu]: %s", path, i - 1, aerr);
            goto done;
        }
        lua_pop(L, 1);                              /* doc products */
    }
    ret = c;
    c = NULL; /* Returned to the caller. */
done:
    sl_catalog_destroy(c);
    sl_buf_free(&text);
    lua_close(L);
    return ret;
}
