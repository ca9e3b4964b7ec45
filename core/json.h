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
#include <stdint.h>
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

/* ==================== Tape ==================== */

/* A tape is JSON text parsed once into a flat array of nodes in document
 * order (a container's members follow it; an object's are key, value, key,
 * value...), without a Lua value or an allocation per member. It is
 * checked as sl_json_decode checks (the same errors at the same offsets), so
 * anything read from it later is known good. lazy.c builds Lua values from
 * it on demand. */
enum sl_json_type {
    SL_JSON_NULL, SL_JSON_FALSE, SL_JSON_TRUE, SL_JSON_NUMBER, SL_JSON_STRING,
    SL_JSON_ARRAY, SL_JSON_OBJECT,
};

#define SL_JSON_ESCAPED 1u /* String node: the text holds escapes (unescape it to read). */
#define SL_JSON_TAKEN 2u   /* Object member value: its Lua value was made or replaced. */

struct sl_json_node {
    uint8_t type;            /* enum sl_json_type */
    uint8_t flags;           /* SL_JSON_ESCAPED, SL_JSON_TAKEN */
    uint32_t next;           /* index of the node after this one's subtree */
    union {
        struct { uint32_t off, len; } str; /* string: bytes between the quotes */
        uint32_t count;      /* array: elements; object: members */
        double num;          /* number: its value */
    } u;
};

/* A growable node array that sl_json_tape_parse fills (reuse it: it keeps
 * its capacity). A zeroed struct is empty; free nodes when done. */
struct sl_json_tape {
    struct sl_json_node *nodes;
    size_t n;                /* nodes used */
    size_t cap;              /* nodes allocated */
};

/* Parses s[0..n) into t (replacing what it held). On error returns SL_ERR
 * with err as sl_json_decode would word it (t's contents undefined). Texts
 * of 4 GiB or more are refused. Needs no lua_State. */
int sl_json_tape_parse(struct sl_json_tape *t, const char *s, size_t n, char *err, size_t errlen);

/* Writes the unescaped bytes of the string text raw[0..n) (from a tape or a
 * token of sl_json_scan, so known good) to out, which has room for n bytes
 * and may be raw itself; returns the length. */
size_t sl_json_unescape(const char *raw, size_t n, char *out);

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
/* Appends the object {keys[0]: v0, keys[1]: v1, ...} of the n values at
 * stack indices first .. first + n - 1, encoded as sl_json_encode_sorted
 * does, leaving out those that are nil. keys are JSON string literals,
 * written as given and in the order given (a sink's fields, sorted once).
 * On error as sl_json_encode_sorted. */
int sl_json_encode_members_sorted(lua_State *L, int first, size_t n, const char *const *keys,
                                  struct sl_buf *out, char *err, size_t errlen);

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
    SL_JSON_TOK_OBJECT,   /* '{' */
    SL_JSON_TOK_ARRAY,    /* '[' */
    SL_JSON_TOK_CLOSE,    /* '}' or ']' */
    SL_JSON_TOK_KEY,      /* an object member's name; its value comes next */
    SL_JSON_TOK_STRING,
    SL_JSON_TOK_NUMBER,
    SL_JSON_TOK_LITERAL   /* true, false, null */
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

/* The length of the longest valid UTF-8 (RFC 3629) prefix of s[0..n): n
 * when all of it is valid. The one UTF-8 check of the core. */
size_t sl_json_utf8_check(const char *s, size_t n);

/* As sl_json_add_string, for text from outside (HTTP headers): each byte
 * that does not start a valid UTF-8 sequence is written as U+FFFD, so it
 * never fails. */
void sl_json_add_string_lossy(struct sl_buf *out, const char *s, size_t n);

#endif
