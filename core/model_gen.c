/* model_gen.c -- the seed's interaction generator and the demo catalog
 * (see model_gen.h). */
#include "model_gen.h"
#include "catalog.h"
#include "intern.h"
#include "json.h"
#include "mt.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

struct title {
    char *handle;            /* title_to_handle[title] */
    uint32_t *within;        /* within-category groups listing it (a group twice if listed twice) */
    uint32_t *across;        /* across-category groups listing it */
    size_t nwithin, nacross;
};

struct list {
    char *name;              /* category name (NULL for groups) */
    uint32_t *t;             /* title numbers, repeats kept */
    size_t n;
};

struct product {
    char *handle, *gid;      /* an entry of handle_to_id */
};

struct sl_model_gen {
    struct sl_intern *names;     /* title -> title number (ids 0, 1, ... in first-seen order) */
    struct title *titles;
    size_t ntitles, tcap;
    struct list *cats, *within, *across;
    size_t ncats, nwithin, nacross;
    struct product *products;    /* by handle */
    size_t nproducts;
    double p_in, p_across;       /* frequently_bought_together_{in_category,across_categories}_prob */
    int64_t max_users, max_with, min_per_user, max_per_user;
};

/* ==================== Reading ==================== */

/* Pushes the keys of the object doc[field] (doc: the JSON text s[0..n), a
 * valid object) in text order, as a Lua list: json.c's tables forget the
 * order, and the seed draws categories in the order its file lists them. */
static void keys_in_order(lua_State *L, const char *s, size_t n, const char *field) {
    int depth = 0, target = 0, k = 0;
    bool next_is_target = false;
    lua_newtable(L);                                       /* keys */
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            size_t j = i + 1, e;
            while (j < n && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
            for (e = j + 1; e < n && isspace((unsigned char)s[e]); e++) {}
            bool key = e < n && s[e] == ':';
            if (key && ((depth == 1 && !target) || (target && depth == target)) &&
                !sl_json_decode(L, s + i, j + 1 - i, NULL, 0)) { /* keys name */
                if (!target) {
                    next_is_target = !strcmp(lua_tostring(L, -1), field);
                    lua_pop(L, 1);
                } else {
                    bool seen = false;
                    for (int x = 1; x <= k && !seen; x++) {
                        lua_rawgeti(L, -2, x);
                        seen = lua_rawequal(L, -1, -2);
                        lua_pop(L, 1);
                    }
                    if (seen) lua_pop(L, 1);
                    else lua_rawseti(L, -2, ++k);          /* keys */
                }
            }
            i = j;
        } else if (c == '{' || c == '[') {
            depth++;
            if (next_is_target && c == '{' && depth == 2) target = 2;
            next_is_target = false;
        } else if (c == '}' || c == ']') {
            if (target && depth == target) return;
            depth--;
        }
    }
}

/* The title number of the string at the top of L (popped), adding it with
 * its handle from t2h (at stack index t2h) when new. SL_ERR when it has no
 * handle. */
static int title_of(struct sl_model_gen *g, lua_State *L, int t2h, uint32_t *out,
                    const char *where, char *err, size_t errlen) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    uint32_t id = sl_intern_find(g->names, s, len);
    if (id == SL_INTERN_NONE) {
        lua_pushvalue(L, -1);                              /* ... title title */
        lua_rawget(L, t2h);                                /* ... title handle */
        if (lua_type(L, -1) != LUA_TSTRING || !lua_objlen(L, -1)) {
            sl_errf(err, errlen, "%s: \"%s\" has no handle in title_to_handle", where, s);
            lua_pop(L, 2);
            return SL_ERR;
        }
        if (g->ntitles == g->tcap) {
            g->tcap = g->tcap ? g->tcap * 2 : 256;
            g->titles = sl_realloc(g->titles, g->tcap * sizeof(*g->titles));
        }
        id = sl_intern_add(g->names, s, len);              /* the next id: nothing is freed */
        g->titles[g->ntitles++] = (struct title){sl_strdup(lua_tostring(L, -1)), NULL, NULL, 0, 0};
        lua_pop(L, 1);                                     /* ... title */
    }
    lua_pop(L, 1);
    *out = id;
    return SL_OK;
}

/* Reads the list of titles at the top of L into l. */
static int read_titles(struct sl_model_gen *g, lua_State *L, int t2h, struct list *l,
                       const char *where, char *err, size_t errlen) {
    size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    if (!n) {
        sl_errf(err, errlen, "%s: expected a non-empty list of product titles", where);
        return SL_ERR;
    }
    l->t = sl_calloc(n, sizeof(*l->t));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);                        /* ... list title */
        if (lua_type(L, -1) != LUA_TSTRING) {
            sl_errf(err, errlen, "%s[%zu]: expected a product title", where, i - 1);
            lua_pop(L, 1);
            return SL_ERR;
        }
        if (title_of(g, L, t2h, &l->t[l->n], where, err, errlen)) return SL_ERR;
        l->n++;
    }
    return SL_OK;
}

/* Reads rules[key], a list of groups, into *lists and indexes them. */
static int read_groups(struct sl_model_gen *g, lua_State *L, int rules, int t2h, const char *key,
                       struct list **lists, size_t *nlists, bool within, const char *path,
                       char *err, size_t errlen) {
    char where[256];
    lua_getfield(L, rules, key);                           /* ... groups */
    size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    if (!n) {
        sl_errf(err, errlen, "%s: %s: expected a non-empty list of groups", path, key);
        return SL_ERR;
    }
    *lists = sl_calloc(n, sizeof(**lists));
    for (size_t i = 1; i <= n; i++) {
        snprintf(where, sizeof(where), "%s: %s[%zu]", path, key, i - 1);
        lua_rawgeti(L, -1, (int)i);                        /* ... groups group */
        if (read_titles(g, L, t2h, &(*lists)[*nlists], where, err, errlen)) return SL_ERR;
        (*nlists)++;
        lua_pop(L, 1);                                     /* ... groups */
    }
    lua_pop(L, 1);
    /* Python: for idx, group in enumerate(groups): for p in group: index[p].append(idx) */
    for (size_t i = 0; i < *nlists; i++) {
        for (size_t j = 0; j < (*lists)[i].n; j++) {
            struct title *t = &g->titles[(*lists)[i].t[j]];
            uint32_t **idx = within ? &t->within : &t->across;
            size_t *cnt = within ? &t->nwithin : &t->nacross;
            *idx = sl_realloc(*idx, (*cnt + 1) * sizeof(**idx));
            (*idx)[(*cnt)++] = (uint32_t)i;
        }
    }
    return SL_OK;
}

static int read_number(lua_State *L, int rules, const char *key, double lo, double hi,
                       bool integer, double *out, const char *path, char *err, size_t errlen) {
    lua_getfield(L, rules, key);
    double v = lua_tonumber(L, -1);
    bool ok = lua_type(L, -1) == LUA_TNUMBER && v >= lo && v <= hi && (!integer || v == (int64_t)v);
    lua_pop(L, 1);
    if (!ok) {
        sl_errf(err, errlen, "%s: %s: expected %s in [%g, %g]", path, key,
                integer ? "an integer" : "a number", lo, hi);
        return SL_ERR;
    }
    *out = v;
    return SL_OK;
}

static int product_cmp(const void *a, const void *b) {
    return strcmp(((const struct product *)a)->handle, ((const struct product *)b)->handle);
}

/* Reads a JSON file into a Lua value on L (its text left in text). */
static int read_json(lua_State *L, const char *path, struct sl_buf *text, char *err,
                     size_t errlen) {
    char jerr[SL_ERRLEN];
    if (sl_read_file(path, text, (size_t)64 << 20, err, errlen)) return SL_ERR;
    if (sl_json_decode(L, text->data ? text->data : "", text->len, jerr, sizeof(jerr))) {
        sl_errf(err, errlen, "%s: %s", path, jerr);
        return SL_ERR;
    }
    if (!lua_istable(L, -1)) {
        sl_errf(err, errlen, "%s: expected a JSON object", path);
        return SL_ERR;
    }
    return SL_OK;
}

struct sl_model_gen *sl_model_gen_load(const char *inventory, const char *rules, char *err,
                                       size_t errlen) {
    struct sl_model_gen *g = sl_calloc(1, sizeof(*g)), *ret = NULL;
    struct sl_buf itext = {0}, rtext = {0};
    char where[512];
    double v;
    lua_State *L = luaL_newstate();

    g->names = sl_intern_create();
    if (!L) {
        sl_errf(err, errlen, "cannot create a Lua state");
        goto done;
    }
    sl_json_init(L);
    if (read_json(L, inventory, &itext, err, errlen)) goto done;        /* inv */
    int inv = lua_gettop(L);
    lua_getfield(L, inv, "title_to_handle");                            /* inv t2h */
    int t2h = lua_gettop(L);
    lua_getfield(L, inv, "handle_to_id");                               /* inv t2h h2id */
    lua_getfield(L, inv, "categories");                                 /* inv t2h h2id cats */
    if (!lua_istable(L, t2h) || !lua_istable(L, t2h + 1) || !lua_istable(L, t2h + 2)) {
        sl_errf(err, errlen, "%s: expected objects categories, title_to_handle and "
                "handle_to_id", inventory);
        goto done;
    }
    /* Categories in file order, their titles in list order (repeats kept). */
    keys_in_order(L, itext.data, itext.len, "categories");              /* ... cats names */
    g->ncats = lua_objlen(L, -1);
    if (!g->ncats) {
        sl_errf(err, errlen, "%s: categories: expected a non-empty object", inventory);
        goto done;
    }
    g->cats = sl_calloc(g->ncats, sizeof(*g->cats));
    for (size_t i = 0; i < g->ncats; i++) {
        lua_rawgeti(L, -1, (int)i + 1);                                 /* ... cats names name */
        g->cats[i].name = sl_strdup(lua_tostring(L, -1));
        lua_rawget(L, -3);                                              /* ... cats names titles */
        snprintf(where, sizeof(where), "%s: categories.%s", inventory, g->cats[i].name);
        if (read_titles(g, L, t2h, &g->cats[i], where, err, errlen)) goto done;
        lua_pop(L, 1);                                                  /* ... cats names */
    }
    lua_pop(L, 2);                                                      /* inv t2h h2id */
    /* handle_to_id, sorted by handle. */
    lua_pushnil(L);
    while (lua_next(L, -2)) {                                           /* ... h2id handle gid */
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
            sl_errf(err, errlen, "%s: handle_to_id: expected handle -> GID strings", inventory);
            goto done;
        }
        g->products = sl_realloc(g->products, (g->nproducts + 1) * sizeof(*g->products));
        g->products[g->nproducts++] = (struct product){sl_strdup(lua_tostring(L, -2)),
                                                       sl_strdup(lua_tostring(L, -1))};
        lua_pop(L, 1);                                                  /* ... h2id handle */
    }
    lua_pop(L, 1);                                                      /* inv t2h */
    qsort(g->products, g->nproducts, sizeof(*g->products), product_cmp);

    if (read_json(L, rules, &rtext, err, errlen)) goto done;            /* inv t2h rules */
    int r = lua_gettop(L);
    if (read_groups(g, L, r, t2h, "within_category_groups", &g->within, &g->nwithin, true,
                    rules, err, errlen) ||
        read_groups(g, L, r, t2h, "across_category_groups", &g->across, &g->nacross, false,
                    rules, err, errlen))
        goto done;
    if (read_number(L, r, "frequently_bought_together_in_category_prob", 0, 1, false, &g->p_in,
                    rules, err, errlen) ||
        read_number(L, r, "frequently_bought_together_across_categories_prob", 0, 1, false,
                    &g->p_across, rules, err, errlen))
        goto done;
    if (g->p_in + g->p_across > 1) {
        sl_errf(err, errlen, "%s: the in-category and across-categories probabilities add up "
                "to more than 1", rules);
        goto done;
    }
    if (read_number(L, r, "max_users", 2, 1e6, true, &v, rules, err, errlen)) goto done;
    g->max_users = (int64_t)v;
    if (read_number(L, r, "max_num_interactions_with_the_product", 1, 1e3, true, &v, rules, err,
                    errlen)) goto done;
    g->max_with = (int64_t)v;
    if (read_number(L, r, "min_num_interactions_per_user", 1, 1e5, true, &v, rules, err, errlen))
        goto done;
    g->min_per_user = (int64_t)v;
    if (read_number(L, r, "max_num_interactions_per_user", (double)g->min_per_user, 1e5, true, &v,
                    rules, err, errlen)) goto done;
    g->max_per_user = (int64_t)v;
    ret = g;
    g = NULL; /* Returned to the caller. */
done:
    sl_model_gen_destroy(g);
    sl_buf_free(&itext);
    sl_buf_free(&rtext);
    if (L) lua_close(L);
    return ret;
}

static void free_lists(struct list *l, size_t n) {
    for (size_t i = 0; l && i < n; i++) {
        free(l[i].name);
        free(l[i].t);
    }
    free(l);
}

void sl_model_gen_destroy(struct sl_model_gen *g) {
    if (!g) return;
    for (size_t i = 0; i < g->ntitles; i++) {
        free(g->titles[i].handle);
        free(g->titles[i].within);
        free(g->titles[i].across);
    }
    free(g->titles);
    for (size_t i = 0; i < g->nproducts; i++) {
        free(g->products[i].handle);
        free(g->products[i].gid);
    }
    free(g->products);
    free_lists(g->cats, g->ncats);
    free_lists(g->within, g->nwithin);
    free_lists(g->across, g->nacross);
    sl_intern_destroy(g->names);
    free(g);
}

/* ==================== Interactions ==================== */

static void line(struct sl_buf *out, int64_t user, const char *handle, int64_t ts,
                 const char *category) {
    sl_buf_printf(out, "1\tuser_%" PRId64 "\t%s\t%" PRId64 "\t%s\n", user, handle, ts, category);
}

void sl_model_gen_tsv(const struct sl_model_gen *g, uint64_t seed, int64_t now,
                      struct sl_buf *out) {
    const int64_t span = SL_MODEL_GEN_DAYS * 86400, start = now - span;
    const double p_either = g->p_across + g->p_in; /* the seed's order of the sum */
    struct sl_mt mt;

    sl_mt_seed(&mt, seed);
    for (int64_t u = 1; u < g->max_users; u++) {
        int64_t n = sl_mt_randint(&mt, g->min_per_user, g->max_per_user);
        for (int64_t i = 0; i < n; i++) {
            const struct list *cat = &g->cats[sl_mt_below(&mt, g->ncats)];
            const struct title *p = &g->titles[cat->t[sl_mt_below(&mt, cat->n)]];
            line(out, u, p->handle, start + sl_mt_randint(&mt, 0, span), cat->name);
            int64_t k = sl_mt_randint(&mt, 1, g->max_with);
            for (int64_t j = 0; j < k; j++) {
                double roll = sl_mt_random(&mt);
                const struct list *from = cat;
                if (roll < g->p_in && p->nwithin)
                    from = &g->within[p->within[sl_mt_below(&mt, p->nwithin)]];
                else if (roll < p_either && p->nacross)
                    from = &g->across[p->across[sl_mt_below(&mt, p->nacross)]];
                const struct title *q = &g->titles[from->t[sl_mt_below(&mt, from->n)]];
                line(out, u, q->handle, start + sl_mt_randint(&mt, 0, span), cat->name);
            }
        }
    }
}

/* ==================== Catalog ==================== */

/* "water-bottle" -> "Water Bottle": a title for handles no title maps to. */
static void humanize(const char *handle, struct sl_buf *out) {
    bool word = true;
    for (const char *p = handle; *p; p++) {
        char c = *p == '-' ? ' ' : *p;
        sl_buf_addc(out, word ? (char)toupper((unsigned char)c) : c);
        word = c == ' ';
    }
}

static void field(struct sl_buf *out, const char *name, const char *value, bool *ok) {
    sl_buf_printf(out, ",\"%s\":", name);
    if (sl_json_add_string(out, value, strlen(value), NULL, 0)) *ok = false;
}

int sl_model_gen_catalog(const struct sl_model_gen *g, struct sl_buf *out, char *err,
                         size_t errlen) {
    struct sl_buf tmp = {0};
    bool ok = true;
    sl_buf_adds(out, "{\"source\":\"the seed showcase's inventory (examples/seed/inventory.json); "
                "prices and images are placeholders\",\n\"products\":[");
    for (size_t i = 0; i < g->nproducts; i++) {
        const struct product *pr = &g->products[i];
        const char *title = NULL, *category = NULL;
        /* The first title (by title number, i.e. file order) with this handle. */
        for (size_t t = 0; t < g->ntitles && !title; t++)
            if (!strcmp(g->titles[t].handle, pr->handle))
                title = sl_intern_str(g->names, (uint32_t)t, NULL);
        sl_buf_reset(&tmp);
        if (!title) humanize(pr->handle, &tmp);
        sl_buf_adds(out, i ? ",\n{\"handle\":" : "\n{\"handle\":");
        if (sl_json_add_string(out, pr->handle, strlen(pr->handle), NULL, 0)) ok = false;
        field(out, "gid", pr->gid, &ok);
        field(out, "title", title ? title : sl_buf_cstr(&tmp), &ok);
        /* Categories listing a title of this handle, in category order. */
        size_t mark = out->len;
        sl_buf_adds(out, ",\"categories\":[");
        bool first = true;
        for (size_t c = 0; c < g->ncats; c++) {
            bool has = false;
            for (size_t k = 0; k < g->cats[c].n && !has; k++)
                has = !strcmp(g->titles[g->cats[c].t[k]].handle, pr->handle);
            if (!has) continue;
            if (!first) sl_buf_addc(out, ',');
            if (sl_json_add_string(out, g->cats[c].name, strlen(g->cats[c].name), NULL, 0))
                ok = false;
            if (first) category = g->cats[c].name;
            first = false;
        }
        sl_buf_addc(out, ']');
        /* "category" goes before "categories": move the list behind it. */
        size_t lst = out->len - mark;
        char *saved = sl_strndup(out->data + mark, lst);
        out->len = mark;
        field(out, "category", category ? category : "", &ok);
        sl_buf_add(out, saved, lst);
        free(saved);
        uint64_t h = sl_catalog_fnv(SL_CATALOG_FNV_INIT, pr->handle, strlen(pr->handle));
        sl_buf_printf(out, ",\"price\":\"%" PRIu64 ".99\",\"image\":\"images/", 2 + h % 97);
        if (category)
            for (const char *c = category; *c; c++)
                sl_buf_addc(out, isalnum((unsigned char)*c) ? (char)tolower((unsigned char)*c) : '-');
        else sl_buf_adds(out, "placeholder");
        sl_buf_adds(out, ".svg\"}");
    }
    sl_buf_adds(out, "\n]}\n");
    sl_buf_free(&tmp);
    if (!ok) sl_errf(err, errlen, "inventory: a title or handle is not valid UTF-8");
    return ok ? SL_OK : SL_ERR;
}

struct sl_catalog *sl_model_gen_products(const struct sl_model_gen *g) {
    struct sl_catalog *c = sl_catalog_create();
    for (size_t i = 0; i < g->nproducts; i++) {
        const struct product *p = &g->products[i];
        if (sl_catalog_add(c, p->handle, strlen(p->handle), p->gid, strlen(p->gid), NULL, 0))
            sl_log(SL_LOG_WARN, "model", "inventory: product \"%s\" left out of the catalog",
                   p->handle);
    }
    return c;
}

/* Writes b to path ("-": stdout). */
static int write_out(const char *path, const struct sl_buf *b, char *err, size_t errlen) {
    bool out = !strcmp(path, "-");
    FILE *f = out ? stdout : fopen(path, "wb");
    bool bad = !f || fwrite(b->data ? b->data : "", 1, b->len, f) != b->len;
    if (f) bad |= (out ? fflush(f) : fclose(f)) != 0;
    if (bad) sl_errf(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
    return bad ? SL_ERR : SL_OK;
}

int sl_model_gen_write(const char *inventory, const char *rules, uint64_t seed, int64_t now,
                       const char *tsv_path, const char *catalog_path, char *err, size_t errlen) {
    struct sl_buf b = {0};
    int ret = SL_ERR;
    struct sl_model_gen *g = sl_model_gen_load(inventory, rules, err, errlen);
    if (!g) return SL_ERR;
    if (catalog_path && (sl_model_gen_catalog(g, &b, err, errlen) ||
                         write_out(catalog_path, &b, err, errlen)))
        goto done;
    if (tsv_path) {
        sl_buf_reset(&b);
        sl_model_gen_tsv(g, seed, now, &b);
        if (write_out(tsv_path, &b, err, errlen)) goto done;
    }
    ret = SL_OK;
done:
    sl_buf_free(&b);
    sl_model_gen_destroy(g);
    return ret;
}
