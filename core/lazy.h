/* lazy.h -- JSON records that rules read on demand.
 *
 * A record's value is parsed once into a tape (json.h) kept in one Lua
 * userdata with a copy of the text, and handed to rules as lazy values:
 * an object is a table whose metatable makes a member on first read
 * (__index) and stores it in the table, so a rule that reads 7 members of 60
 * makes 7 Lua values, not 60. The names rules read that way are learnt (the
 * last 16), and a new object makes its members of those names at once: the
 * members a rule reads of every record need no metamethod call. An array is
 * made whole (a table with the array metatable, so # and ipairs work) when
 * its parent member is read; its object elements are lazy again. Scalars
 * are made as sl_json_decode makes them: what a rule sees is what the eager
 * decoder gives, except that a lazy object has a metatable, and two light
 * userdata keys no rule can name, until it is expanded.
 *
 * A member a rule assigns or deletes (sets nil) is marked on the tape, so it
 * is never made again from the text. Whatever walks a table (pairs, next,
 * rawget, rawset, setmetatable, getmetatable in the rules' environment; the
 * unsorted encoder of json.c) first expands a lazy object: every member
 * made, the metatable removed, leaving the plain table the eager decoder
 * would have made. The sorted encoder (sinks, traces) does not: it writes
 * the members not made straight from the tape (sl_lazy_view_tape), the same
 * bytes as the table made whole would give. Finding a member on the tape
 * scans the object's members, so an object of more than 256 members is
 * expanded at its first read or assignment instead: a rule that reads
 * every member of a large object by name costs one expansion, not a scan
 * per read.
 *
 * Window aggregates are handed over the same way: a table whose lists are
 * made when read, and written by the encoder straight from their copy.
 * Uses json.c (tape, array metatable, number and string writers),
 * window.h's values and LuaJIT's C API. */
#ifndef SL_LAZY_H
#define SL_LAZY_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "sl.h"
#include "window.h"

/* Call once per lua_State, after sl_json_init: keeps the metamethods and a
 * reusable parse buffer in the registry. */
void sl_lazy_init(lua_State *L);

/* Parses s[0..n) and pushes its value, lazy when it is an object. On bad
 * JSON pushes nothing and returns SL_ERR with err worded as sl_json_decode
 * words it. The text is copied: s may go once this returns. */
int sl_lazy_push(lua_State *L, const char *s, size_t n, char *err, size_t errlen);

/* Objects of at most n members are made whole at once (a lazy one costs
 * more than a few members), except the record itself, which is always lazy
 * (an envelope of two members, one of them never read); returns the
 * previous bound (default 4). For tests, which set 0 to make every object
 * lazy. */
size_t sl_lazy_eager_members(size_t n);

/* How many builders of lazy tables with a given set of hot members (the
 * members rules read of every record, made with each new lazy object) the
 * VM has made for the hot keys of now: for tests. */
size_t sl_lazy_shape_builders(lua_State *L);

/* True when the value at idx is a lazy object not yet expanded. */
bool sl_lazy_is(lua_State *L, int idx);

/* True when the key at idx is one a lazy value keeps its tape under: whoever
 * walks a table of lists without expanding it (sl_lazy_view_encode_lists's
 * caller) skips these. */
bool sl_lazy_hidden_key(lua_State *L, int idx);

/* Expands the lazy object at idx (nothing when it is not one): every member
 * not yet made is made, and its metatable goes. Its members that are
 * objects stay lazy. */
void sl_lazy_expand(lua_State *L, int idx);

/* What a table is to the encoders (json.c), found with one look at its
 * metatable: a lazy object not yet expanded, a table of lists not yet
 * expanded (sl_lazy_push_lists), or neither. */
enum sl_lazy_kind { SL_LAZY_NO, SL_LAZY_OBJECT, SL_LAZY_LISTS };
struct sl_lazy_view {
    enum sl_lazy_kind kind;
    const void *data;  /* the table's tape or copy of lists: valid while the table is */
    uint32_t obj;      /* SL_LAZY_OBJECT: its object node */
};

/* Fills v for the value at idx (SL_LAZY_NO for any value but the two). */
void sl_lazy_view(lua_State *L, int idx, struct sl_lazy_view *v);

/* For the sorted encoder, which writes a lazy object's members not made
 * straight from the tape: the nodes of v's tape (an SL_LAZY_OBJECT), with
 * the text in *text. A member whose last occurrence's value node is
 * SL_JSON_TAKEN is the table's: made, assigned, or gone when deleted. */
const struct sl_json_node *sl_lazy_view_tape(const struct sl_lazy_view *v, const char **text);

/* ==================== Lists made on demand ==================== */

/* A list of values for sl_lazy_push_lists (the caller's memory). */
struct sl_lazy_list {
    const char *name;                 /* its member name */
    const struct sl_value *vals;      /* window.h values; none is SL_VAL_NONE */
    size_t n;
};

/* Pushes a table whose members name -> list (a table with the array
 * metatable) are made on first read, from a copy of lists[0..n) taken now
 * (the values may change once this returns). The caller may set other
 * members raw. Read, assigned or expanded, it behaves as the table of
 * lists built at once would; sl_lazy_view_encode_lists writes it without making
 * the lists. */
void sl_lazy_push_lists(lua_State *L, const struct sl_lazy_list *lists, size_t n);

/* Appends the lists of v (an SL_LAZY_LISTS) not made yet as JSON members
 * ("name":[...]), each preceded by a comma unless *first, and clears *first
 * when it wrote one; SL_ERR with err set (nothing written) when a value
 * cannot be encoded (a string not UTF-8). */
int sl_lazy_view_encode_lists(const struct sl_lazy_view *v, struct sl_buf *b, bool *first,
                              char *err, size_t errlen);

/* For an encoder that orders keys: how many lists of v (an SL_LAZY_LISTS)
 * are not made yet, with the names of the first cap of them in names/lens
 * (pointing into the table's copy: valid while the table is) and what
 * sl_lazy_view_encode_list takes for each in ids. */
long sl_lazy_view_lists(const struct sl_lazy_view *v, const char **names, size_t *lens,
                        uint32_t *ids, size_t cap);

/* Appends list id (sl_lazy_view_lists's) of v as a JSON array; SL_ERR with
 * err set (nothing written) when a value cannot be encoded. */
int sl_lazy_view_encode_list(const struct sl_lazy_view *v, uint32_t id, struct sl_buf *b,
                             char *err, size_t errlen);

/* The values of list name[0..nlen) of the table of lists at idx, as
 * sl_lazy_push_lists copied them, without making the list (the encoder
 * still writes it from the copy): fills out[0 .. min(n, cap)) and returns n.
 * Strings point into the copy (not NUL-terminated) and stay valid while the
 * table does. -1 when idx is not a table of lists or was expanded, has no
 * such list, or the list was made, assigned or deleted: read it through Lua
 * then. */
long sl_lazy_peek_list(lua_State *L, int idx, const char *name, size_t nlen,
                       struct sl_value *out, size_t cap);

/* Replaces pairs, next, rawget, rawset, getmetatable and setmetatable in
 * L's globals with versions that expand a lazy object first (getmetatable
 * answers nil for one, as for any decoded object). Call before loading
 * rules: modules keep the functions they find at load. */
void sl_lazy_open_env(lua_State *L);

#endif
