/* lazy.c -- JSON records that rules read on demand (see lazy.h).
 *
 * The tape of a record lives in one full userdata: a header, the nodes and a
 * copy of the text. A lazy object is a plain table T that keeps the tape and
 * its object node under two light userdata keys (no rule's key can be one:
 * `T.x` and T[1] never see them, and whatever walks T expands it first, which
 * removes them), with the metatable M that every lazy value of the VM shares:
 * M = { [3] = sentinel, [4] = H, [5] = B, [6] = C, [7] = B0, __index = lazy_index,
 *       __newindex = lazy_newindex },
 * H holding the hot keys (below) as Lua strings: H[h + 1] spells hot[h]
 * (push_hot_strings), B a Lua function that makes a lazy value's table
 * (lazy_begin, push_builder), C the builders of tables with a given set of
 * hot members (push_shape_builder).
 * So everything a lazy object needs is reachable from it, making one costs a
 * table and two keys, and the garbage collector frees the tape with the last
 * value that refers to it. */
#include "lazy.h"
#include "json.h"
#include "regs.h"
#include "sl.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define LAZY_HASH_HINT 8     /* Hash slots made with a lazy table (members read, not all). */
#define LAZY_EAGER_MEMBERS 4 /* Objects this small are made whole at once, not lazy. */
#define LAZY_KEY_INLINE 256  /* Bytes of unescaped string kept on the C stack. */
#define LAZY_LISTS UINT32_MAX /* The node of a table of lists (no object node). */
#define LAZY_HOT 16          /* Keys rules read through __index, made with each new lazy object. */
#define LAZY_HOT_LEN 24      /* The longest such key. */
#define LAZY_SHAPES 32       /* Builders of one set of hot keys (S, below) kept per VM. */
#define LAZY_SHAPES_AFTER 64 /* Lazy objects made with hot[] unchanged before S is used. */
#define LAZY_SCAN_MEMBERS 256 /* Members read one by one from the tape at most; a larger
                               * object is made whole at its first read or assignment. */

/* The slots of the shared metatable M (top of file). env_wrappers spells
 * M_SENTINEL as 3. */
enum { M_SENTINEL = 3, M_HOT = 4, M_BUILDER = 5, M_SHAPES = 6, M_BUILDER0 = 7 };

static char sentinel;        /* M[3]: marks the metatable as ours. */
static char tape_key;        /* T[&tape_key]: the tape (or snapshot) of a lazy value. */
static char node_key;        /* T[&node_key]: its object node, LAZY_LISTS for lists. */
static uint32_t eager_members = LAZY_EAGER_MEMBERS; /* sl_lazy_eager_members */

/* The keys rules last read through __index (learnt, replaced in turn): a
 * new lazy object makes its members of these names at once, so a rule that
 * reads the same few members of every record (an event's e, aid, duid, ...)
 * finds them in the table, without a metamethod call each. Only bytes, no
 * Lua value: every VM of the thread shares them. */
static struct hot_key {
    uint8_t len;
    char s[LAZY_HOT_LEN];
} hot[LAZY_HOT];
static unsigned nhot, hot_next;
#define HOT_SLOTS 64         /* hot_slot's size: a power of 2, four times LAZY_HOT */
static uint8_t hot_slot[HOT_SLOTS]; /* open addressing by hot_hash: index in hot[] + 1, 0 empty */
static uint32_t hot_gen = 1; /* changes with hot[] (push_hot_strings) */
static uint32_t hot_steady;  /* lazy objects made since hot[] last changed (to LAZY_SHAPES_AFTER) */
_Static_assert(LAZY_HOT < HOT_SLOTS / 2 && LAZY_HOT < 255, "hot_slot keeps empty slots");

static inline unsigned hot_hash(const char *k, size_t kn) {
    return ((unsigned)kn * 37u + (unsigned char)k[0] * 7u + (unsigned char)k[kn - 1]) & (HOT_SLOTS - 1);
}

/* The index in hot[] of key k, -1 when it is not a hot key. Most keys that
 * are not land on an empty slot. */
static inline int hot_find(const char *k, size_t kn) {
    if (!kn || kn > LAZY_HOT_LEN) return -1;
    for (unsigned h = hot_hash(k, kn); hot_slot[h]; h = (h + 1) & (HOT_SLOTS - 1)) {
        const struct hot_key *e = &hot[hot_slot[h] - 1];
        if (e->len == kn && !memcmp(e->s, k, kn)) return hot_slot[h] - 1;
    }
    return -1;
}

/* Learns key k, read through __index and found. */
static void hot_learn(const char *k, size_t kn) {
    if (!kn || kn > LAZY_HOT_LEN || hot_find(k, kn) >= 0) return;
    struct hot_key *h = &hot[hot_next];
    hot_next = (hot_next + 1) % LAZY_HOT;
    if (nhot < LAZY_HOT) nhot++;
    h->len = (uint8_t)kn;
    memcpy(h->s, k, kn);
    hot_gen++;
    hot_steady = 0;
    memset(hot_slot, 0, sizeof(hot_slot));
    for (unsigned i = 0; i < nhot; i++) {
        unsigned at = hot_hash(hot[i].s, hot[i].len);
        while (hot_slot[at]) at = (at + 1) & (HOT_SLOTS - 1);
        hot_slot[at] = (uint8_t)(i + 1);
    }
}

/* The tape of one record, in one userdata. */
struct ltape {
    uint32_t nnodes;
    uint32_t len;                /* bytes of text after the nodes */
    struct sl_json_node nodes[]; /* then the text */
};

static inline const char *ltape_text(const struct ltape *t) {
    return (const char *)(t->nodes + t->nnodes);
}

/* ==================== Making values ==================== */

struct lsnap;
static void push_node(lua_State *L, int tape_idx, int meta_idx, struct ltape *t, uint32_t i);
static int lists_index(lua_State *L, struct lsnap *s, const char *k, size_t kn);
static void lists_take(struct lsnap *s, const char *k, size_t kn);
static void lists_expand(lua_State *L, int idx, struct lsnap *s);

/* Pushes string node nd of text, unescaped. */
static void push_string(lua_State *L, const struct sl_json_node *nd, const char *text) {
    const char *raw = text + nd->u.str.off;
    char local[LAZY_KEY_INLINE], *buf = local;

    if (!(nd->flags & SL_JSON_ESCAPED)) {
        lua_pushlstring(L, raw, nd->u.str.len);
        return;
    }
    if (nd->u.str.len > sizeof(local)) buf = sl_malloc(nd->u.str.len);
    size_t n = sl_json_unescape(raw, nd->u.str.len, buf);
    lua_pushlstring(L, buf, n);
    if (buf != local) free(buf);
}

/* Pushes scalar node nd of text; false when nd is a container. */
static bool push_scalar(lua_State *L, const struct sl_json_node *nd, const char *text) {
    switch ((enum sl_json_type)nd->type) {
    case SL_JSON_NULL: lua_pushlightuserdata(L, NULL); return true;
    case SL_JSON_FALSE: lua_pushboolean(L, 0); return true;
    case SL_JSON_TRUE: lua_pushboolean(L, 1); return true;
    case SL_JSON_NUMBER: lua_pushnumber(L, nd->u.num); return true;
    case SL_JSON_STRING: push_string(L, nd, text); return true;
    case SL_JSON_ARRAY:
    case SL_JSON_OBJECT:
        break;
    }
    return false;
}

/* A lazy value's table is made by B, M[5] (push_builder), which sets its
 * two hidden keys and its first members in one call: the JIT compiles it,
 * cheaper than a C API call per key; B0, M[7], is B for a table made
 * without members (a table of lists), whose compiled code does not leave
 * at the test for a first pair. lazy_begin pushes B (B0 when the caller
 * pushes no pair) and its first arguments: data is the tape (or snapshot)
 * at data_idx, node its object node (LAZY_LISTS: a table of lists), hsize
 * the table's hash slots, the shared metatable at meta_idx (both indices
 * absolute). The caller then pushes npairs key, value pairs, and lazy_end
 * makes the table T and gives it the metatable: B tape node hsize [k v]...
 * -> T (lazy_end calls any builder, given its nargs). */
static void lazy_begin(lua_State *L, int data_idx, int meta_idx, uint32_t node, int hsize,
                       unsigned npairs) {
    lua_rawgeti(L, meta_idx, npairs ? M_BUILDER : M_BUILDER0);
    lua_pushvalue(L, data_idx);
    lua_pushnumber(L, (lua_Number)node);
    lua_pushinteger(L, hsize);                        /* B tape node hsize */
}

static void lazy_end(lua_State *L, int meta_idx, int nargs) {
    lua_call(L, nargs, 1);                            /* T */
    lua_pushvalue(L, meta_idx);
    lua_setmetatable(L, -2);
}

/* Pushes the shared metatable. */
static void push_meta(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, SL_REG_LAZY_META);
}

/* The hot key an escaped key node spells, -1 when none. No escape takes
 * more than 6 bytes for one (\u0041 for A), so a key of more than 6 times
 * LAZY_HOT_LEN bytes cannot be one. */
static int hot_find_escaped(const struct ltape *t, const struct sl_json_node *kn) {
    char buf[LAZY_HOT_LEN * 6];
    if (kn->u.str.len > sizeof(buf)) return -1;
    return hot_find(buf, sl_json_unescape(ltape_text(t) + kn->u.str.off, kn->u.str.len, buf));
}

/* Pushes H, the strings of the hot keys (M[4] of the metatable at
 * meta_idx): H[h + 1] spells hot[h] once made. H[0] is the hot_gen its
 * strings were made under; when hot[] changed since, H is replaced by an
 * empty one (every VM of the thread shares hot[], which changes seldom
 * once rules have run a few records). */
static void push_hot_strings(lua_State *L, int meta_idx) {
    lua_rawgeti(L, meta_idx, M_HOT);                  /* H */
    lua_rawgeti(L, -1, 0);                            /* H gen */
    bool fresh = lua_tonumber(L, -1) == (lua_Number)hot_gen;
    lua_pop(L, 1);                                    /* H */
    if (fresh) return;
    lua_pop(L, 1);
    lua_createtable(L, LAZY_HOT, 1);                  /* H */
    lua_pushnumber(L, (lua_Number)hot_gen);
    lua_rawseti(L, -2, 0);
    lua_pushvalue(L, -1);
    lua_rawseti(L, meta_idx, M_HOT);
}

/* Pushes hot key h, which k[0..kn) spells (unescaped in the tape), as a Lua
 * string, from H at h_idx (push_hot_strings), where it is kept once made:
 * cheaper than hashing the bytes into a string again. */
static void push_hot_key(lua_State *L, int h_idx, int h, const char *k, size_t kn) {
    lua_rawgeti(L, h_idx, h + 1);                     /* s? */
    if (lua_type(L, -1) == LUA_TSTRING) return;
    lua_pop(L, 1);
    lua_pushlstring(L, k, kn);                        /* k */
    lua_pushvalue(L, -1);
    lua_rawseti(L, h_idx, h + 1);
}

/* The hot key that key node kn spells, or -1. */
static inline int hot_of(const struct ltape *t, const struct sl_json_node *kn) {
    return kn->flags & SL_JSON_ESCAPED ? hot_find_escaped(t, kn)
                                       : hot_find(ltape_text(t) + kn->u.str.off, kn->u.str.len);
}

/* Marks the earlier occurrences of the hot members about to be made (the
 * last of each, in last[]) taken, as reading a member takes every
 * occurrence: if the rule deletes one, an expansion (pairs) must not make
 * it again from an earlier duplicate. Only for an object with a duplicate
 * hot key, which hot_scan notices. */
static void hot_take_earlier(struct ltape *t, uint32_t obj, const uint32_t last[LAZY_HOT]) {
    uint32_t count = t->nodes[obj].u.count;
    for (uint32_t m = 0, k = obj + 1; m < count; m++) {
        int h = hot_of(t, &t->nodes[k]);
        if (h >= 0 && last[h] && last[h] != k + 1) t->nodes[k + 1].flags |= SL_JSON_TAKEN;
        k = t->nodes[k + 1].next;
    }
}

/* Finds the members of object node obj whose names are hot keys, as
 * reading them would make them: of duplicates the last. last[h] is the value
 * node of hot key h + 1, 0 when there is none or its last occurrence is an
 * escaped spelling (the member is left to __index, which unescapes).
 * Returns how many were found. Earlier duplicates of the members found are
 * taken (hot_take_earlier). */
static unsigned hot_scan(struct ltape *t, uint32_t obj, uint32_t last[LAZY_HOT]) {
    uint32_t count = t->nodes[obj].u.count;
    bool dups = false;
    for (uint32_t m = 0, k = obj + 1; m < count; m++) {
        const struct sl_json_node *kn = &t->nodes[k];
        int h = hot_of(t, kn);
        if (h >= 0) {
            dups |= last[h] != 0;
            last[h] = kn->flags & SL_JSON_ESCAPED ? 0 : k + 1;
        }
        k = t->nodes[k + 1].next;
    }
    unsigned n = 0;
    for (unsigned h = 0; h < nhot; h++) n += last[h] != 0;
    if (dups) hot_take_earlier(t, obj, last);
    return n;
}

/* Pushes the n hot members of last[] (hot_scan) as key, value pairs in
 * member order, the keys' strings from H at h_idx (push_hot_strings). */
static void push_hot_pairs(lua_State *L, int tape_idx, int meta_idx, struct ltape *t,
                           const uint32_t *last, unsigned n, int h_idx) {
    const char *text = ltape_text(t);
    unsigned slot[LAZY_HOT];                          /* hot keys found, by value node */
    unsigned found = 0;
    for (unsigned h = 0; h < nhot; h++) {
        if (!last[h]) continue;
        unsigned j = found++;
        for (; j > 0 && last[slot[j - 1]] > last[h]; j--) slot[j] = slot[j - 1];
        slot[j] = h;
    }
    for (unsigned j = 0; j < n; j++) {
        uint32_t v = last[slot[j]];
        const struct sl_json_node *kn = &t->nodes[v - 1];
        t->nodes[v].flags |= SL_JSON_TAKEN;
        push_hot_key(L, h_idx, (int)slot[j], text + kn->u.str.off, kn->u.str.len); /* .. k */
        push_node(L, tape_idx, meta_idx, t, v);       /* .. k v */
    }
}

/* Pushes the source of S (push_shape_builder) for the hot keys of last[]:
 *   local tk, nk = ...
 *   return function(tape, node, v1, v2)
 *   local t = {["\101"] = v1, ["\097\105\100"] = v2}
 *   t[tk] = tape; t[nk] = node; return t end
 * every byte of a key a decimal escape, whatever it is. */
static void push_shape_source(lua_State *L, const uint32_t *last) {
    luaL_Buffer b;
    char num[16];
    unsigned n = 0;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "local tk, nk = ...\nreturn function(tape, node");
    for (unsigned h = 0; h < nhot; h++) {
        if (!last[h]) continue;
        snprintf(num, sizeof(num), ", v%u", ++n);
        luaL_addstring(&b, num);
    }
    luaL_addstring(&b, ")\nlocal t = {");
    n = 0;
    for (unsigned h = 0; h < nhot; h++) {
        if (!last[h]) continue;
        luaL_addstring(&b, n ? ", [\"" : "[\"");
        for (unsigned c = 0; c < hot[h].len; c++) {
            snprintf(num, sizeof(num), "\\%03u", (unsigned char)hot[h].s[c]);
            luaL_addstring(&b, num);
        }
        snprintf(num, sizeof(num), "\"] = v%u", ++n);
        luaL_addstring(&b, num);
    }
    luaL_addstring(&b, "}\nt[tk] = tape\nt[nk] = node\nreturn t\nend\n");
    luaL_pushresult(&b);
}

/* How many builders C (M[6], at c_idx) holds for hot[] as it is now; -1
 * when they were made for another hot[] (push_shape_builder). */
static lua_Integer shapes_made(lua_State *L, int c_idx) {
    lua_rawgeti(L, c_idx, 0);
    lua_rawgeti(L, c_idx, -1);                        /* gen made */
    lua_Integer made = lua_tonumber(L, -2) == (lua_Number)hot_gen ? lua_tointeger(L, -1) : -1;
    lua_pop(L, 2);
    return made;
}

/* Pushes S(tape, node, v1, ..., vn), the builder of a lazy table whose hot
 * members are those last[] (hot_scan) has, given their values in hot[]'s
 * order: a Lua function made for that set of keys, whose table constructor
 * names them, so the JIT makes the table from a template with the keys in
 * place instead of inserting each (B, M[5]). The builders live in
 * C = M[6], by hot_gen * 2^LAZY_HOT + the set's bits, C[0] the hot_gen
 * they were made under (C is replaced when hot[] changed). Returns false,
 * nothing pushed, while hot[] is new (a rule reading ever new members would
 * make a builder per record) or the VM has LAZY_SHAPES builders of this
 * hot[]. */
static bool push_shape_builder(lua_State *L, int meta_idx, const uint32_t *last) {
    if (hot_steady < LAZY_SHAPES_AFTER) {
        hot_steady++;
        return false;
    }
    lua_Number key = (lua_Number)hot_gen * (1 << LAZY_HOT);
    for (unsigned h = 0; h < nhot; h++)
        if (last[h]) key += (lua_Number)(1u << h);
    lua_rawgeti(L, meta_idx, M_SHAPES);               /* C */
    lua_pushnumber(L, key);
    lua_rawget(L, -2);                                /* C S? */
    if (lua_isfunction(L, -1)) {
        lua_remove(L, -2);                            /* S */
        return true;
    }
    lua_pop(L, 1);
    lua_Integer made = shapes_made(L, lua_gettop(L));
    if (made < 0) {                                   /* made for another hot[] */
        lua_pop(L, 1);
        lua_createtable(L, 1, 4);                     /* C */
        lua_pushnumber(L, (lua_Number)hot_gen);
        lua_rawseti(L, -2, 0);
        lua_pushinteger(L, 0);
        lua_rawseti(L, -2, -1);                       /* C[-1]: how many builders */
        lua_pushvalue(L, -1);
        lua_rawseti(L, meta_idx, M_SHAPES);
        made = 0;
    }
    if (made >= LAZY_SHAPES) {
        lua_pop(L, 1);
        return false;
    }
    push_shape_source(L, last);                       /* C src */
    size_t len;
    const char *src = lua_tolstring(L, -1, &len);
    if (luaL_loadbuffer(L, src, len, "=sluice.lazy")) /* C src chunk | C src err */
        lua_error(L);                                 /* out of memory: the source is ours */
    lua_remove(L, -2);                                /* C chunk */
    lua_pushlightuserdata(L, &tape_key);
    lua_pushlightuserdata(L, &node_key);
    lua_call(L, 2, 1);                                /* C S */
    lua_pushnumber(L, key);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_pushinteger(L, made + 1);
    lua_rawseti(L, -3, -1);
    lua_remove(L, -2);                                /* S */
    return true;
}

/* Pushes object node i of the tape at tape_idx as a new lazy object, its
 * hot members made. */
static void push_lazy_object(lua_State *L, int tape_idx, int meta_idx, struct ltape *t,
                             uint32_t i) {
    uint32_t last[LAZY_HOT] = { 0 };
    unsigned n = nhot ? hot_scan(t, i, last) : 0;
    luaL_checkstack(L, 2 * (int)n + 8, "JSON nesting");
    if (n && push_shape_builder(L, meta_idx, last)) { /* S */
        lua_pushvalue(L, tape_idx);
        lua_pushnumber(L, (lua_Number)i);             /* S tape node */
        for (unsigned h = 0; h < nhot; h++) {
            if (!last[h]) continue;
            t->nodes[last[h]].flags |= SL_JSON_TAKEN;
            push_node(L, tape_idx, meta_idx, t, last[h]); /* S tape node v... */
        }
        lazy_end(L, meta_idx, 2 + (int)n);            /* T */
        return;
    }
    push_hot_strings(L, meta_idx);                    /* H */
    int h = lua_gettop(L);
    lazy_begin(L, tape_idx, meta_idx, i, LAZY_HASH_HINT, n); /* H B tape node hsize */
    push_hot_pairs(L, tape_idx, meta_idx, t, last, n, h); /* .. k v ... */
    lazy_end(L, meta_idx, 3 + 2 * (int)n);            /* H T */
    lua_replace(L, h);                                /* T */
}

/* Pushes object node i of the tape at tape_idx: a new lazy object, or a
 * plain table made at once when it has at most eager_members members
 * (a lazy one costs more than a few members: an envelope, {"slug": ...}). */
static void push_object(lua_State *L, int tape_idx, int meta_idx, struct ltape *t, uint32_t i) {
    uint32_t count = t->nodes[i].u.count;
    if (count <= eager_members) {
        lua_createtable(L, 0, (int)count);            /* T */
        luaL_checkstack(L, 4, "JSON nesting");
        for (uint32_t m = 0, k = i + 1; m < count; m++) {
            push_string(L, &t->nodes[k], ltape_text(t));
            push_node(L, tape_idx, meta_idx, t, k + 1); /* T k v */
            lua_rawset(L, -3);                        /* in order: the last duplicate wins */
            k = t->nodes[k + 1].next;
        }
        return;
    }
    push_lazy_object(L, tape_idx, meta_idx, t, i);
}

/* Pushes array node i made whole: a table with the array metatable, its
 * elements made (objects lazy, arrays whole). */
static void push_array(lua_State *L, int tape_idx, int meta_idx, struct ltape *t, uint32_t i) {
    uint32_t count = t->nodes[i].u.count, e = i + 1;
    luaL_checkstack(L, 4, "JSON nesting");
    lua_createtable(L, (int)count, 0);                /* A */
    for (uint32_t k = 1; k <= count; k++) {
        push_node(L, tape_idx, meta_idx, t, e);
        lua_rawseti(L, -2, (int)k);
        e = t->nodes[e].next;
    }
    sl_json_push_array_mt(L);                         /* A mt */
    lua_setmetatable(L, -2);                          /* A */
}

static void push_node(lua_State *L, int tape_idx, int meta_idx, struct ltape *t, uint32_t i) {
    const struct sl_json_node *nd = &t->nodes[i];
    if (push_scalar(L, nd, ltape_text(t))) return;
    if (nd->type == SL_JSON_ARRAY) push_array(L, tape_idx, meta_idx, t, i);
    else push_object(L, tape_idx, meta_idx, t, i);
}

/* ==================== Members ==================== */

/* True when key node i spells k[0..kn). */
static inline bool key_is(const struct ltape *t, uint32_t i, const char *k, size_t kn) {
    const struct sl_json_node *nd = &t->nodes[i];
    const char *raw = ltape_text(t) + nd->u.str.off;
    if (!(nd->flags & SL_JSON_ESCAPED))
        return nd->u.str.len == kn && (!kn || (raw[0] == k[0] && !memcmp(raw, k, kn)));
    if (nd->u.str.len < kn) return false;             /* unescaping only shortens */
    char local[LAZY_KEY_INLINE], *buf = local;
    if (nd->u.str.len > sizeof(local)) buf = sl_malloc(nd->u.str.len);
    size_t n = sl_json_unescape(raw, nd->u.str.len, buf);
    bool same = n == kn && !memcmp(buf, k, kn);
    if (buf != local) free(buf);
    return same;
}

/* Finds member k of object node obj: returns the value node of its last
 * occurrence (the last duplicate wins), 0 when there is none. Every
 * occurrence is marked taken; *was_taken says whether the last one already
 * was (the member was made or assigned before). */
static uint32_t take_member(struct ltape *t, uint32_t obj, const char *k, size_t kn,
                            bool *was_taken) {
    uint32_t i = obj + 1, found = 0;
    *was_taken = false;
    for (uint32_t m = 0; m < t->nodes[obj].u.count; m++) {
        uint32_t v = i + 1;
        if (key_is(t, i, k, kn)) {
            found = v;
            *was_taken = t->nodes[v].flags & SL_JSON_TAKEN;
            t->nodes[v].flags |= SL_JSON_TAKEN;
        }
        i = t->nodes[v].next;
    }
    return found;
}

/* The tape and object node of the lazy object at idx (*obj is LAZY_LISTS and
 * the result a struct lsnap for a table of lists), the shared metatable M
 * pushed and left on the stack; NULL (nothing pushed) when idx is not one. */
static void *lazy_of(lua_State *L, int idx, uint32_t *obj) {
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
    if (!lua_getmetatable(L, idx)) return NULL;       /* M */
    lua_rawgeti(L, -1, M_SENTINEL);
    bool ours = lua_touserdata(L, -1) == &sentinel;
    lua_pop(L, 1);
    if (!ours) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_pushlightuserdata(L, &node_key);
    lua_rawget(L, idx);
    *obj = (uint32_t)lua_tonumber(L, -1);
    lua_pushlightuserdata(L, &tape_key);
    lua_rawget(L, idx);                               /* M node tape */
    void *t = lua_touserdata(L, -1);
    lua_pop(L, 2);                                    /* M */
    return t;
}

/* Pushes the tape of the lazy value at idx (absolute). */
static void push_data(lua_State *L, int idx) {
    lua_pushlightuserdata(L, &tape_key);
    lua_rawget(L, idx);
}

/* Forgets that the lazy value at idx (absolute) is one: a plain table. */
static void make_plain(lua_State *L, int idx) {
    lua_pushlightuserdata(L, &tape_key);
    lua_pushnil(L);
    lua_rawset(L, idx);
    lua_pushlightuserdata(L, &node_key);
    lua_pushnil(L);
    lua_rawset(L, idx);
    lua_pushnil(L);
    lua_setmetatable(L, idx);
}

/* __index(T, k): makes member k from the tape, stores it in T, returns it;
 * nil when T has no such member or it was deleted. */
static int lazy_index(lua_State *L) {
    uint32_t obj, v;
    size_t kn;
    bool was_taken;
    if (lua_type(L, 2) != LUA_TSTRING) return 0;      /* t[1] of an object: is_object asks */
    struct ltape *t = lazy_of(L, 1, &obj);            /* T k M */
    if (!t) return 0;
    const char *k = lua_tolstring(L, 2, &kn);
    if (obj == LAZY_LISTS) return lists_index(L, (struct lsnap *)t, k, kn);
    if (t->nodes[obj].u.count > LAZY_SCAN_MEMBERS) {  /* made whole: no scan per read */
        lua_pop(L, 1);                                /* T k */
        sl_lazy_expand(L, 1);
        lua_rawget(L, 1);
        return 1;
    }
    if (!(v = take_member(t, obj, k, kn, &was_taken)) || was_taken) return 0;
    hot_learn(k, kn);
    push_data(L, 1);                                  /* T k M tape */
    push_node(L, 4, 3, t, v);                         /* T k M tape v */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);                             /* T k M tape v k v */
    lua_rawset(L, 1);                                 /* T k M tape v */
    return 1;
}

/* __newindex(T, k, v): a member assigned before it was read is never made
 * from the tape afterwards. */
static int lazy_newindex(lua_State *L) {
    uint32_t obj;
    size_t kn;
    bool was_taken;
    struct ltape *t = lazy_of(L, 1, &obj);            /* T k v M? */
    if (t && lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tolstring(L, 2, &kn);
        if (obj == LAZY_LISTS) lists_take((struct lsnap *)t, k, kn);
        else if (t->nodes[obj].u.count > LAZY_SCAN_MEMBERS) sl_lazy_expand(L, 1);
        else take_member(t, obj, k, kn, &was_taken);
    }
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

bool sl_lazy_hidden_key(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TLIGHTUSERDATA) return false;
    void *p = lua_touserdata(L, idx);
    return p == &tape_key || p == &node_key;
}

void sl_lazy_view(lua_State *L, int idx, struct sl_lazy_view *v) {
    uint32_t obj;
    *v = (struct sl_lazy_view){.kind = SL_LAZY_NO};
    if (lua_type(L, idx) != LUA_TTABLE) return;
    void *t = lazy_of(L, idx, &obj);                  /* M? */
    if (!t) return;
    lua_pop(L, 1);
    v->data = t;
    v->obj = obj;
    v->kind = obj == LAZY_LISTS ? SL_LAZY_LISTS : SL_LAZY_OBJECT;
}

bool sl_lazy_is(lua_State *L, int idx) {
    struct sl_lazy_view v;
    sl_lazy_view(L, idx, &v);
    return v.kind != SL_LAZY_NO;
}

const struct sl_json_node *sl_lazy_view_tape(const struct sl_lazy_view *v, const char **text) {
    const struct ltape *t = v->data;
    assert(v->kind == SL_LAZY_OBJECT);
    *text = ltape_text(t);
    return t->nodes;
}

void sl_lazy_expand(lua_State *L, int idx) {
    uint32_t obj;
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
    if (lua_type(L, idx) != LUA_TTABLE) return;
    struct ltape *t = lazy_of(L, idx, &obj);          /* M */
    if (!t) return;
    luaL_checkstack(L, 4, "JSON expand");
    if (obj == LAZY_LISTS) {
        lists_expand(L, idx, (struct lsnap *)t);
        lua_pop(L, 1);
        make_plain(L, idx);
        return;
    }
    int meta_idx = lua_gettop(L);
    push_data(L, idx);                                /* M tape */
    int tape_idx = lua_gettop(L);
    uint32_t i = obj + 1, count = t->nodes[obj].u.count;
    uint32_t small[64], *keys = count <= 64 ? small : sl_malloc(count * sizeof(*keys));
    for (uint32_t m = 0; m < count; m++) {
        keys[m] = i;
        i = t->nodes[i + 1].next;
    }
    /* Last member first: the last duplicate of a key wins. A key already in
     * the table is a member made before (a hot one is its last occurrence)
     * or set by a later duplicate; one the rule assigned or deleted has
     * every occurrence taken. One hash lookup per member, where looking for
     * a later duplicate of each took count^2 / 2 key comparisons. */
    for (uint32_t m = count; m-- > 0;) {
        uint32_t k = keys[m], v = k + 1;
        if (t->nodes[v].flags & SL_JSON_TAKEN) continue;
        t->nodes[v].flags |= SL_JSON_TAKEN;
        push_string(L, &t->nodes[k], ltape_text(t));  /* M tape k */
        lua_pushvalue(L, -1);
        lua_rawget(L, idx);                           /* M tape k old */
        if (!lua_isnil(L, -1)) {
            lua_pop(L, 2);                            /* M tape */
            continue;
        }
        lua_pop(L, 1);                                /* M tape k */
        push_node(L, tape_idx, meta_idx, t, v);       /* M tape k v */
        lua_rawset(L, idx);                           /* M tape */
    }
    if (keys != small) free(keys);
    lua_pop(L, 2);                                    /* */
    make_plain(L, idx);
}

/* ==================== Lists made on demand ==================== */

/* One value of a snapshot. */
struct lval {
    uint8_t type;                /* enum sl_value_type */
    uint32_t len;                /* string: its bytes at off */
    union { double num; size_t off; } u;
};

/* One list of a snapshot. */
struct llist {
    uint32_t name_off, name_len; /* its name in the bytes */
    uint32_t first, n;           /* its values: vals[first .. first + n) */
    bool taken;                  /* made, assigned or deleted: never made again */
};

/* The copy of a table of lists, in one userdata: the header, the lists, the
 * values, the bytes of names and strings. */
struct lsnap {
    uint32_t nlists;
    uint32_t nvals;
    size_t vals_at;              /* offset of vals from the header */
    size_t bytes_at;             /* offset of the bytes */
};

static inline struct llist *lsnap_lists(struct lsnap *s) { return (struct llist *)(s + 1); }
static inline struct lval *lsnap_vals(struct lsnap *s) { return (struct lval *)((char *)s + s->vals_at); }
static inline char *lsnap_bytes(struct lsnap *s) { return (char *)s + s->bytes_at; }

#define ALIGN8(x) (((x) + 7) & ~(size_t)7)

void sl_lazy_push_lists(lua_State *L, const struct sl_lazy_list *lists, size_t n) {
    size_t nvals = 0, nbytes = 0;
    for (size_t i = 0; i < n; i++) {
        nbytes += strlen(lists[i].name);
        nvals += lists[i].n;
        for (size_t j = 0; j < lists[i].n; j++)
            if (lists[i].vals[j].type == SL_VAL_STR) nbytes += lists[i].vals[j].len;
    }
    size_t vals_at = ALIGN8(sizeof(struct lsnap) + n * sizeof(struct llist));
    size_t bytes_at = vals_at + nvals * sizeof(struct lval);
    luaL_checkstack(L, 8, "window lists");
    struct lsnap *s = lua_newuserdata(L, bytes_at + nbytes); /* snap */
    s->nlists = (uint32_t)n;
    s->nvals = (uint32_t)nvals;
    s->vals_at = vals_at;
    s->bytes_at = bytes_at;
    struct llist *ll = lsnap_lists(s);
    struct lval *lv = lsnap_vals(s);
    char *bytes = lsnap_bytes(s);
    size_t at = 0, v = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(lists[i].name);
        memcpy(bytes + at, lists[i].name, nl);
        ll[i] = (struct llist){(uint32_t)at, (uint32_t)nl, (uint32_t)v, (uint32_t)lists[i].n, false};
        at += nl;
        for (size_t j = 0; j < lists[i].n; j++, v++) {
            const struct sl_value *src = &lists[i].vals[j];
            lv[v].type = (uint8_t)src->type;
            if (src->type == SL_VAL_STR) {
                memcpy(bytes + at, src->s, src->len);
                lv[v].len = (uint32_t)src->len;
                lv[v].u.off = at;
                at += src->len;
            } else {
                lv[v].u.num = src->num;
            }
        }
    }
    int snap = lua_gettop(L);
    push_meta(L);                                     /* snap M */
    /* Room for the lists, a count, the two hidden keys. */
    lazy_begin(L, snap, snap + 1, LAZY_LISTS, (int)n + 3, 0); /* snap M B0 snap node hsize */
    lazy_end(L, snap + 1, 3);                         /* snap M T */
    lua_replace(L, snap);                             /* T M */
    lua_pop(L, 1);                                    /* T */
}

/* Pushes list i of s as a table with the array metatable. */
static void push_list(lua_State *L, struct lsnap *s, uint32_t i) {
    struct llist *l = &lsnap_lists(s)[i];
    struct lval *v = lsnap_vals(s) + l->first;
    lua_createtable(L, (int)l->n, 0);                 /* A */
    for (uint32_t j = 0; j < l->n; j++) {
        if (v[j].type == SL_VAL_STR) lua_pushlstring(L, lsnap_bytes(s) + v[j].u.off, v[j].len);
        else if (v[j].type == SL_VAL_NUM) lua_pushnumber(L, v[j].u.num);
        else lua_pushnil(L);
        lua_rawseti(L, -2, (int)j + 1);
    }
    sl_json_push_array_mt(L);
    lua_setmetatable(L, -2);                          /* A */
}

/* Marks list k of s taken; returns its index, or -1 when s has none (or
 * it was taken before: *was_taken). */
static int lists_find(struct lsnap *s, const char *k, size_t kn, bool *was_taken) {
    struct llist *ll = lsnap_lists(s);
    for (uint32_t i = 0; i < s->nlists; i++) {
        if (ll[i].name_len != kn || memcmp(lsnap_bytes(s) + ll[i].name_off, k, kn)) continue;
        *was_taken = ll[i].taken;
        ll[i].taken = true;
        return (int)i;
    }
    return -1;
}

static void lists_take(struct lsnap *s, const char *k, size_t kn) {
    bool was_taken;
    lists_find(s, k, kn, &was_taken);
}

/* __index of a table of lists (T k M on the stack). */
static int lists_index(lua_State *L, struct lsnap *s, const char *k, size_t kn) {
    bool was_taken = false;
    int i = lists_find(s, k, kn, &was_taken);
    if (i < 0 || was_taken) return 0;
    push_list(L, s, (uint32_t)i);                     /* T k M A */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);                                 /* T k M A */
    return 1;
}

/* Makes every list of s not taken a member of the table at idx. */
static void lists_expand(lua_State *L, int idx, struct lsnap *s) {
    struct llist *ll = lsnap_lists(s);
    for (uint32_t i = 0; i < s->nlists; i++) {
        if (ll[i].taken) continue;
        ll[i].taken = true;
        lua_pushlstring(L, lsnap_bytes(s) + ll[i].name_off, ll[i].name_len);
        push_list(L, s, i);
        lua_rawset(L, idx);
    }
}

/* The snapshot of the table of lists at idx, NULL for any other value. */
static struct lsnap *lists_of(lua_State *L, int idx) {
    struct sl_lazy_view v;
    sl_lazy_view(L, idx, &v);
    return v.kind == SL_LAZY_LISTS ? (struct lsnap *)v.data : NULL;
}

long sl_lazy_peek_list(lua_State *L, int idx, const char *name, size_t nlen,
                       struct sl_value *out, size_t cap) {
    struct lsnap *s = lists_of(L, idx);
    if (!s) return -1;
    struct llist *ll = lsnap_lists(s);
    for (uint32_t i = 0; i < s->nlists; i++) {
        if (ll[i].name_len != nlen || memcmp(lsnap_bytes(s) + ll[i].name_off, name, nlen)) continue;
        if (ll[i].taken) return -1;
        struct lval *v = lsnap_vals(s) + ll[i].first;
        for (uint32_t j = 0; j < ll[i].n && j < cap; j++) {
            out[j] = (struct sl_value){.type = (enum sl_value_type)v[j].type};
            if (v[j].type == SL_VAL_STR) {
                out[j].s = lsnap_bytes(s) + v[j].u.off;
                out[j].len = v[j].len;
            } else {
                out[j].num = v[j].u.num;
            }
        }
        return (long)ll[i].n;
    }
    return -1;
}

/* Appends list i of s as a JSON array; SL_ERR (b as it was) when a value
 * cannot be encoded. */
static int lsnap_encode(struct lsnap *s, uint32_t i, struct sl_buf *b, char *err, size_t errlen) {
    struct llist *l = &lsnap_lists(s)[i];
    struct lval *v = lsnap_vals(s) + l->first;
    char *bytes = lsnap_bytes(s);
    size_t mark = b->len;
    sl_buf_addc(b, '[');
    for (uint32_t j = 0; j < l->n; j++) {
        if (j) sl_buf_addc(b, ',');
        int rc = SL_OK;
        if (v[j].type == SL_VAL_STR) rc = sl_json_add_string(b, bytes + v[j].u.off, v[j].len, err, errlen);
        else if (v[j].type == SL_VAL_NUM) rc = sl_json_add_number(b, v[j].u.num, err, errlen);
        else sl_buf_add(b, "null", 4);
        if (rc) {
            b->len = mark;
            return SL_ERR;
        }
    }
    sl_buf_addc(b, ']');
    return SL_OK;
}

int sl_lazy_view_encode_lists(const struct sl_lazy_view *v, struct sl_buf *b, bool *first,
                              char *err, size_t errlen) {
    struct lsnap *s = (struct lsnap *)v->data;
    assert(v->kind == SL_LAZY_LISTS);
    struct llist *ll = lsnap_lists(s);
    size_t mark = b->len;
    for (uint32_t i = 0; i < s->nlists; i++) {
        if (ll[i].taken) continue;
        if (!*first) sl_buf_addc(b, ',');
        if (sl_json_add_string(b, lsnap_bytes(s) + ll[i].name_off, ll[i].name_len, err, errlen) ||
            (sl_buf_addc(b, ':'), lsnap_encode(s, i, b, err, errlen))) {
            b->len = mark;
            return SL_ERR;
        }
        *first = false;
    }
    return SL_OK;
}

long sl_lazy_view_lists(const struct sl_lazy_view *v, const char **names, size_t *lens,
                        uint32_t *ids, size_t cap) {
    struct lsnap *s = (struct lsnap *)v->data;
    assert(v->kind == SL_LAZY_LISTS);
    struct llist *ll = lsnap_lists(s);
    size_t n = 0;
    for (uint32_t i = 0; i < s->nlists; i++) {
        if (ll[i].taken) continue;
        if (n < cap) {
            names[n] = lsnap_bytes(s) + ll[i].name_off;
            lens[n] = ll[i].name_len;
            ids[n] = i;
        }
        n++;
    }
    return (long)n;
}

int sl_lazy_view_encode_list(const struct sl_lazy_view *v, uint32_t id, struct sl_buf *b,
                             char *err, size_t errlen) {
    struct lsnap *s = (struct lsnap *)v->data;
    assert(v->kind == SL_LAZY_LISTS && id < s->nlists && !lsnap_lists(s)[id].taken);
    return lsnap_encode(s, id, b, err, errlen);
}

/* ==================== Records ==================== */

static int scratch_gc(lua_State *L) {
    struct sl_json_tape *t = lua_touserdata(L, 1);
    free(t->nodes);
    t->nodes = NULL;
    t->cap = t->n = 0;
    return 0;
}

int sl_lazy_push(lua_State *L, const char *s, size_t n, char *err, size_t errlen) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, SL_REG_LAZY_SCRATCH); /* scratch */
    struct sl_json_tape *sc = lua_touserdata(L, -1);
    assert(sc && "sl_lazy_init not called on this lua_State");
    lua_pop(L, 1);
    if (sl_json_tape_parse(sc, s, n, err, errlen)) return SL_ERR;
    switch ((enum sl_json_type)sc->nodes[0].type) {
    case SL_JSON_ARRAY:
    case SL_JSON_OBJECT:
        break;
    default:                                          /* a scalar: no tape kept */
        push_scalar(L, &sc->nodes[0], s);
        return SL_OK;
    }
    size_t nodes = sc->n * sizeof(sc->nodes[0]);
    struct ltape *t = lua_newuserdata(L, sizeof(*t) + nodes + n); /* tape */
    t->nnodes = (uint32_t)sc->n;
    t->len = (uint32_t)n;
    memcpy(t->nodes, sc->nodes, nodes);
    memcpy((char *)ltape_text(t), s, n);
    push_meta(L);                                     /* tape M */
    /* The record itself is lazy whatever its size: of an envelope such as
     * {"message": ..., "collector": {...}} only what rules read is made. */
    if (t->nodes[0].type == SL_JSON_OBJECT)
        push_lazy_object(L, lua_gettop(L) - 1, lua_gettop(L), t, 0); /* tape M v */
    else
        push_node(L, lua_gettop(L) - 1, lua_gettop(L), t, 0);
    lua_replace(L, -3);                               /* v M */
    lua_pop(L, 1);                                    /* v */
    return SL_OK;
}

size_t sl_lazy_shape_builders(lua_State *L) {
    push_meta(L);
    lua_rawgeti(L, -1, M_SHAPES);                     /* M C */
    lua_Integer made = shapes_made(L, lua_gettop(L));
    lua_pop(L, 2);
    return made > 0 ? (size_t)made : 0;
}

size_t sl_lazy_eager_members(size_t n) {
    size_t old = eager_members;
    eager_members = (uint32_t)n;
    return old;
}

/* ==================== Rules' environment ==================== */

/* expand(t): sl_lazy_expand for Lua. */
static int lua_expand(lua_State *L) {
    sl_lazy_expand(L, 1);
    return 0;
}

/* The wrappers, given expand, the sentinel and the originals. */
static const char env_wrappers[] =
    "local expand, sentinel = ...\n"
    "local next, pairs, rawget, rawset, getmetatable, setmetatable, type =\n"
    "  next, pairs, rawget, rawset, getmetatable, setmetatable, type\n"
    "local function lazy(t)\n"
    "  local mt = getmetatable(t)\n"
    "  return type(mt) == 'table' and rawget(mt, 3) == sentinel\n"
    "end\n"
    "_G.pairs = function(t) if lazy(t) then expand(t) end return pairs(t) end\n"
    "_G.next = function(t, k) if lazy(t) then expand(t) end return next(t, k) end\n"
    "_G.rawget = function(t, k) if lazy(t) then expand(t) end return rawget(t, k) end\n"
    "_G.rawset = function(t, k, v) if lazy(t) then expand(t) end return rawset(t, k, v) end\n"
    "_G.getmetatable = function(t) if lazy(t) then return nil end return getmetatable(t) end\n"
    "_G.setmetatable = function(t, mt) if lazy(t) then expand(t) end return setmetatable(t, mt) end\n";

void sl_lazy_open_env(lua_State *L) {
    if (luaL_loadbuffer(L, env_wrappers, sizeof(env_wrappers) - 1, "=sluice.lazy"))
        lua_error(L);                                 /* our own code: cannot fail */
    lua_pushcfunction(L, lua_expand);
    lua_pushlightuserdata(L, &sentinel);
    lua_call(L, 2, 0);
}

/* M.__index: a key that is not a string (t[1], as collections.is_object
 * asks of every object) is answered in Lua, which the JIT compiles, without
 * a call into C. */
static const char index_wrapper[] =
    "local index, type = ..., type\n"
    "return function(t, k) if type(k) ~= 'string' then return nil end return index(t, k) end\n";

/* Pushes B, M[5] (npairs LAZY_HOT), or B0, M[7] (npairs 0):
 * B(tape, node, hsize, k1, v1, ..., kn, vn) makes a lazy value's table (no
 * metatable yet) with its hidden keys and n <= npairs members, hsize hash
 * slots made by table.new (a VM without the package library grows it). */
static void push_builder(lua_State *L, int npairs) {
    struct sl_buf src = {0};
    lua_getglobal(L, "require");
    if (lua_isfunction(L, -1)) {
        lua_pushliteral(L, "table.new");
        if (lua_pcall(L, 1, 1, 0) || !lua_isfunction(L, -1)) { /* tnew? */
            lua_pop(L, 1);
            lua_pushnil(L);
        }
    } else {
        lua_pop(L, 1);
        lua_pushnil(L);                               /* no tnew */
    }
    sl_buf_adds(&src, "local tk, nk, tnew = ...\n"
                      "tnew = tnew or function() return {} end\n"
                      "return function(tape, node, hsize");
    for (int i = 1; i <= npairs; i++) sl_buf_printf(&src, ", k%d, v%d", i, i);
    sl_buf_adds(&src, ")\nlocal t = tnew(0, hsize)\nt[tk] = tape\nt[nk] = node\n");
    for (int i = 1; i <= npairs; i++)
        sl_buf_printf(&src, "if k%d == nil then return t end\nt[k%d] = v%d\n", i, i, i);
    sl_buf_adds(&src, "return t\nend\n");
    if (luaL_loadbuffer(L, src.data, src.len, "=sluice.lazy")) { /* tnew chunk */
        sl_buf_free(&src);
        lua_error(L);                                 /* out of memory: our own code is valid */
    }
    sl_buf_free(&src);
    lua_insert(L, -2);                                /* chunk tnew */
    lua_pushlightuserdata(L, &tape_key);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &node_key);
    lua_insert(L, -2);                                /* chunk tk nk tnew */
    lua_call(L, 3, 1);                                /* B */
}

void sl_lazy_init(lua_State *L) {
    lua_createtable(L, 7, 2);                         /* M */
    push_builder(L, LAZY_HOT);
    lua_rawseti(L, -2, M_BUILDER);
    push_builder(L, 0);
    lua_rawseti(L, -2, M_BUILDER0);
    lua_createtable(L, 1, 0);                         /* C, made under no hot_gen */
    lua_pushinteger(L, 0);
    lua_rawseti(L, -2, 0);
    lua_rawseti(L, -2, M_SHAPES);
    lua_pushlightuserdata(L, &sentinel);
    lua_rawseti(L, -2, M_SENTINEL);
    lua_createtable(L, LAZY_HOT, 0);
    lua_rawseti(L, -2, M_HOT);
    if (luaL_loadbuffer(L, index_wrapper, sizeof(index_wrapper) - 1, "=sluice.lazy"))
        lua_error(L);                                 /* our own code: cannot fail */
    lua_pushcfunction(L, lazy_index);
    lua_call(L, 1, 1);                                /* M __index */
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lazy_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_rawseti(L, LUA_REGISTRYINDEX, SL_REG_LAZY_META);
    struct sl_json_tape *sc = lua_newuserdata(L, sizeof(*sc)); /* scratch */
    memset(sc, 0, sizeof(*sc));
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawseti(L, LUA_REGISTRYINDEX, SL_REG_LAZY_SCRATCH);
}
