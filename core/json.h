/* json.h -- faithful JSON codec between JSON text and LuaJIT values.
 *
 * Decodes JSON text straight into Lua tables in one pass (no intermediate
 * tree) and encodes Lua values back, so that what comes in goes out
 * unchanged: `[]` stays `[]`, millisecond timestamps stay integers, null
 * stays null. Uses sl.h for buffers and LuaJIT's C API; nothing else.
 *
 * Mapping:
 *   null    <-> lightuserdata NULL (the same value as cjson.null)
 *   array   <-> table with the shared array metatable (sl_json_push_array_mt);
 *               a plain table whose keys are exactly 1..n also encodes as an
 *               array. Holes in a table with the array metatable encode as
 *               null; a hole-ridden one (max index > 2 * count + 64) is an
 *               error, as are holes in a plain table.
 *   object  <-> plain table with string keys; an empty plain table is `{}`
 *   number  <-> lua_Number; integral values with |x| <= 2^53 print as
 *               integers, -0 prints as `-0`, others with the shortest of
 *               %.15g/%.16g/%.17g that reads back the same; NaN/inf fail
 *   string  <-> string; the decoder validates UTF-8 (RFC 8259) and turns
 *               \uXXXX (surrogate pairs too) into UTF-8; the encoder escapes
 *               `"`, `\` and control characters, passes UTF-8 through raw and
 *               rejects strings that are not valid UTF-8.
 * Duplicate object keys: the last one wins. Nesting deeper than
 * SL_JSON_MAX_DEPTH fails cleanly on both sides. */
#ifndef SL_JSON_H
#define SL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <lua.h>

#include "sl.h"

#define SL_JSON_MAX_DEPTH 256 /* Deepest nesting of arrays/objects accepted; bounds C recursion and Lua stack use. */

/* Call once per lua_State before using the others: creates the array
 * metatable and the protected decoder in the registry. Raises a Lua error
 * only when out of memory (call it where the state is set up). */
void sl_json_init(lua_State *L);

/* Decodes JSON text s[0..n) and pushes the value on L. On error pushes
 * nothing, returns SL_ERR, and err says what and at which byte offset. Runs
 * protected: never raises a Lua error, never leaves the stack unbalanced. */
int sl_json_decode(lua_State *L, const char *s, size_t n, char *err, size_t errlen);

/* Reads the JSON number (RFC 8259 grammar) at the start of s[0..n) and
 * converts it as sl_json_decode does: the one definition of a number for
 * every part of sluice that reads JSON (the collector refuses what this
 * refuses). Returns the bytes it took and sets *v; returns 0 when s does not
 * start with a well-formed number or when the number is beyond a double's
 * range (1e999, -1e400, 1.2e329; an underflow such as 1e-400 reads as 0).
 * Then *why says which and *fault is the offset of the faulty byte (0 for a
 * number out of range); either may be NULL. Needs no lua_State. */
size_t sl_json_number(const char *s, size_t n, double *v, size_t *fault,
                      const char **why);

/* Appends the JSON text of the value at stack index idx to out. On
 * unencodable values (function, userdata other than null, NaN/inf, mixed or
 * non-string keys, invalid UTF-8, too deep) returns SL_ERR with err set and
 * out as it was before the call. Never raises; leaves the stack as it was. */
int sl_json_encode(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen);
/* As sl_json_encode, with every object's keys in byte order (the order of
 * lua/sluice/init.lua's encoder), so equal values give equal text. */
int sl_json_encode_sorted(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen);

/* Appends s[0..n) as a JSON string (quoted, escaped as the encoder does).
 * SL_ERR with err (and out as it was) when s is not valid UTF-8. */
int sl_json_add_string(struct sl_buf *out, const char *s, size_t n, char *err, size_t errlen);
/* Appends x as the encoder writes numbers. SL_ERR for NaN or infinity. */
int sl_json_add_number(struct sl_buf *out, double x, char *err, size_t errlen);

/* Pushes the shared array metatable. */
void sl_json_push_array_mt(lua_State *L);

/* Lua C functions for the `sluice` module:
 *   json_decode(s) -> v | nil, err
 *   json_encode(v) -> s | nil, err  (keys in byte order: the bytes
 *                     lua/sluice/init.lua gives under busted)
 *   array(t)       -> t with the array metatable set (a new empty table when
 *                     t is nil) */
int sl_lua_json_decode(lua_State *L);
int sl_lua_json_encode(lua_State *L);
int sl_lua_array(lua_State *L);

/* ==================== Scanning without Lua ==================== */

/* A token of sl_json_scan. depth is the number of containers open around
 * it: 0 for the document's value; an object's or array's open and close
 * tokens carry the depth of the container itself, its members one more. */
enum sl_json_kind {
    SL_JSON_OBJECT,   /* '{' */
    SL_JSON_ARRAY,    /* '[' */
    SL_JSON_CLOSE,    /* '}' or ']' */
    SL_JSON_KEY,      /* an object member's name; its value comes next */
    SL_JSON_STRING,
    SL_JSON_NUMBER,
    SL_JSON_LITERAL   /* true, false, null */
};

struct sl_json_token {
    enum sl_json_kind kind;
    int depth;
    const char *raw;  /* the token's bytes in the input; a string's or key's without quotes */
    size_t len;
    bool escaped;     /* a string or key with backslash escapes (decode with sl_json_unescape) */
};

typedef void sl_json_scan_fn(void *arg, const struct sl_json_token *t);

/* Checks that s[0..n) is one JSON value by the rules sl_json_decode applies
 * (strings of valid UTF-8 without raw control characters, escapes and
 * surrogate pairs, numbers as sl_json_number reads them, whitespace around)
 * with at most max_depth containers open (<= 0 or above SL_JSON_MAX_DEPTH:
 * SL_JSON_MAX_DEPTH), calling fn (when not NULL) for each token in input
 * order. No recursion, no allocation. SL_ERR with err ("json: what at byte
 * N") on the first fault; tokens before it have been reported. */
int sl_json_scan(const char *s, size_t n, int max_depth, sl_json_scan_fn *fn, void *arg,
                 char *err, size_t errlen);

/* Appends the decoded bytes of a string's raw text (between the quotes, as
 * a token gives it) to out. SL_ERR on a bad escape (never for a token
 * sl_json_scan reported). */
int sl_json_unescape(const char *raw, size_t n, struct sl_buf *out);

/* The length of the longest valid UTF-8 (RFC 3629) prefix of s[0..n): n
 * when all of it is valid. The one UTF-8 check of the core. */
size_t sl_json_utf8_check(const char *s, size_t n);

/* As sl_json_add_string, for text from outside (HTTP headers): each byte
 * that does not start a valid UTF-8 sequence is written as U+FFFD, so it
 * never fails. */
void sl_json_add_string_lossy(struct sl_buf *out, const char *s, size_t n);

#endif
