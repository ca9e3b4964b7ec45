/* json.c -- faithful JSON codec between JSON text and LuaJIT values.
 *
 * The decoder is a recursive descent parser that builds Lua values directly:
 * the members of an open container wait on the Lua stack and are moved into a
 * table created with the exact size once the container closes, so a table is
 * never rehashed while it fills. It runs under lua_pcall, so an out-of-memory
 * error inside the Lua API cannot escape to a caller outside pcall. The
 * encoder uses only Lua API calls that cannot raise. See json.h for the
 * mapping between JSON and Lua. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strtod_l, newlocale, uselocale */
#endif
#include <assert.h>
#include <stdbool.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <lua.h>
#include <lauxlib.h>

#include "json.h"
#include "regs.h"
#include "lazy.h"

#define JSON_CHUNK_SHALLOW 64   /* Members of a container held on the stack before a flush, depth <= 16. */
#define JSON_CHUNK_DEEP 8       /* The same below depth 16, so 256 levels fit LUAI_MAXCSTACK (8000). */
#define JSON_SHALLOW_DEPTH 16   /* Deepest level that uses JSON_CHUNK_SHALLOW. */
#define JSON_SCRATCH_INLINE 512 /* Bytes of unescaped string kept on the C stack before going to the heap. */
#define JSON_NUM_MAX 64         /* Longest number text parsed on the C stack; longer goes to the heap. */
/* The errors past SL_JSON_MAX_DEPTH (256), decoding and encoding. */
#define JSON_TOO_DEEP "nesting deeper than 256"
#define JSON_TOO_DEEP_ENC JSON_TOO_DEEP " (or a cycle)"
_Static_assert(SL_JSON_MAX_DEPTH == 256, "JSON_TOO_DEEP names the limit");
#define JSON_SPARSE_SLACK 64    /* An array may have max index <= 2 * count + this; beyond, it is an error. */

static char decoder_key;   /* Registry key: the protected decoder closure. */

static locale_t c_locale;  /* "C" numeric locale for strtod_l and number printing. */
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_create(void) {
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    assert(c_locale);
}

/* ==================== Shared scanning ==================== */

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Returns the first byte in [p, end) that a JSON string cannot hold as is:
 * '"', '\\', a control character (< 0x20) or a non-ASCII byte. Returns end
 * when there is none. Reads 16 bytes at a time with SSE2, then 8 at a time
 * (the lowest flagged byte of a word is always a true match: borrows only
 * spill upwards), never past end. */
static inline const unsigned char *scan_plain(const unsigned char *p, const unsigned char *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {                           /* signed < 0x20 also catches bytes >= 0x80 */
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                   _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t v, q, bs, hit;
        memcpy(&v, p, 8);
        q = v ^ (ONES * '"');
        bs = v ^ (ONES * '\\');
        hit = (((q - ONES) & ~q) | ((bs - ONES) & ~bs) | ((v - ONES * 0x20) & ~v) | v) & HIGHS;
        if (hit) return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') p++;
    return p;
}

/* Returns the length (2..4) of the valid UTF-8 sequence at p (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0 if it is invalid
 * or truncated at end. p[0] must be >= 0x80. */
static inline int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    size_t avail = (size_t)(end - p);
    unsigned lo = 0x80, hi = 0xBF;

    if (c < 0xC2) return 0;
    if (c < 0xE0) return (avail >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (avail < 3) return 0;
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
        return 3;
    }
    if (c < 0xF5) {
        if (avail < 4) return 0;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        return 4;
    }
    return 0;
}

/* ==================== Decoder ==================== */

struct dec {
    lua_State *L;
    const unsigned char *start;  /* input start, for error offsets */
    const unsigned char *p;      /* next byte to read */
    const unsigned char *end;    /* one past the last input byte */
    int mt_idx;                  /* stack (pseudo-)index of the array metatable */
    int failed;                  /* set once err holds a message */
    char *err;                   /* caller's error buffer */
    size_t errlen;
    char *scratch;               /* unescaped string being built */
    size_t scap;                 /* its capacity */
    char inline_scratch[JSON_SCRATCH_INLINE];
};

static int dec_fail_at(struct dec *d, const unsigned char *at, const char *what) {
    if (!d->failed) {
        size_t off = (size_t)(at - d->start);
        if (at >= d->end)
            sl_errf(d->err, d->errlen, "json: %s: unexpected end of input at byte %zu", what, off);
        else if (*at >= 0x20 && *at < 0x7f)
            sl_errf(d->err, d->errlen, "json: %s: unexpected '%c' at byte %zu", what, *at, off);
        else
            sl_errf(d->err, d->errlen, "json: %s: unexpected byte 0x%02x at byte %zu", what, *at, off);
        d->failed = 1;
    }
    return -1;
}

static int dec_fail_msg(struct dec *d, const unsigned char *at, const char *what) {
    if (!d->failed) {
        sl_errf(d->err, d->errlen, "json: %s at byte %zu", what, (size_t)(at - d->start));
        d->failed = 1;
    }
    return -1;
}

static inline void skip_ws(struct dec *d) {
    const unsigned char *p = d->p, *end = d->end;
    if (p < end && *p > ' ') return;                  /* compact JSON: no whitespace */
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    d->p = p;
}

/* Makes room for need bytes of unescaped string. */
static void scratch_reserve(struct dec *d, size_t need) {
    size_t cap;
    if (need <= d->scap) return;
    cap = d->scap * 2;
    while (cap < need) cap *= 2;
    if (d->scratch == d->inline_scratch) {
        char *n = sl_malloc(cap);
        memcpy(n, d->scratch, d->scap);
        d->scratch = n;
    } else {
        d->scratch = sl_realloc(d->scratch, cap);
    }
    d->scap = cap;
}

static inline int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    *out = v;
    return 0;
}

static size_t scan_escape(const unsigned char *p, const unsigned char *end, char o[4],
                          size_t *olen, const char **why, const unsigned char **fault);

/* Decodes the escape at d->p (the backslash) and appends its UTF-8 to the
 * scratch at *len (scan_escape reads it, for the scanner too). */
static int dec_escape(struct dec *d, size_t *len) {
    const unsigned char *fault;
    const char *why;
    size_t olen, k;

    scratch_reserve(d, *len + 4);
    k = scan_escape(d->p, d->end, d->scratch + *len, &olen, &why, &fault);
    if (!k) {
        if (d->end - d->p >= 2 && d->p[1] == 'u') return dec_fail_msg(d, fault, why);
        return dec_fail_at(d, fault, why);
    }
    *len += olen;
    d->p += k;
    return 0;
}

/* Parses the string at d->p (the opening quote) and pushes it. A string
 * without escapes is pushed straight from the input. */
static int dec_string(struct dec *d) {
    const unsigned char *begin = d->p + 1, *p = begin, *end = d->end;
    size_t len;
    int n;

    for (;;) {                               /* fast path: no escapes */
        p = scan_plain(p, end);
        if (p >= end) return dec_fail_at(d, p, "unterminated string");
        if (*p == '"') {
            lua_pushlstring(d->L, (const char *)begin, (size_t)(p - begin));
            d->p = p + 1;
            return 0;
        }
        if (*p == '\\') break;
        if (*p < 0x20) return dec_fail_at(d, p, "control character in string");
        if (!(n = utf8_len(p, end))) return dec_fail_msg(d, p, "invalid UTF-8 in string");
        p += n;
    }

    len = (size_t)(p - begin);               /* slow path: unescape into scratch */
    scratch_reserve(d, len + 16);
    memcpy(d->scratch, begin, len);
    for (;;) {
        if (*p == '\\') {
            d->p = p;
            if (dec_escape(d, &len) < 0) return -1;
            p = d->p;
        } else if (*p == '"') {
            lua_pushlstring(d->L, d->scratch, len);
            d->p = p + 1;
            return 0;
        } else if (*p < 0x20) {
            return dec_fail_at(d, p, "control character in string");
        } else {                             /* a run of plain bytes or UTF-8 */
            const unsigned char *run = p;
            for (;;) {
                p = scan_plain(p, end);
                if (p >= end || *p < 0x80) break;
                if (!(n = utf8_len(p, end))) return dec_fail_msg(d, p, "invalid UTF-8 in string");
                p += n;
            }
            scratch_reserve(d, len + (size_t)(p - run));
            memcpy(d->scratch + len, run, (size_t)(p - run));
            len += (size_t)(p - run);
        }
        if (p >= end) return dec_fail_at(d, p, "unterminated string");
    }
}

static const double pow10_exact[] = {  /* every power of ten a double holds exactly */
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* ==================== Numbers ==================== */

/* Numbers with at most 19 significant digits, a mantissa <= 2^53 and a small
 * exponent are converted exactly by one correctly rounded operation; others
 * go through strtod_l in the C locale. */
size_t sl_json_number(const char *s, size_t n, double *v, size_t *fault,
                      const char **why) {
    const unsigned char *num = (const unsigned char *)s, *p = num, *end = num + n;
    uint64_t m = 0;
    int ndig = 0, exact = 1, neg = 0;
    long exp10 = 0, e = 0;
    const char *bad = "bad number";
    double x;

    if (p < end && *p == '-') { neg = 1; p++; }
    if (p >= end || *p < '0' || *p > '9') goto fail;
    if (*p == '0') {
        p++;
    } else {
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            if (ndig < 19) { m = m * 10 + (*p - '0'); ndig++; }
            else { exp10++; exact = 0; }
        }
    }
    if (p < end && *p == '.') {
        p++;
        bad = "bad number (digit expected after '.')";
        if (p >= end || *p < '0' || *p > '9') goto fail;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            if (ndig < 19) {
                m = m * 10 + (*p - '0');
                if (m) ndig++;
                exp10--;
            } else if (*p != '0') {
                exact = 0;
            }
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int eneg = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) { eneg = *p == '-'; p++; }
        bad = "bad number (digit expected in exponent)";
        if (p >= end || *p < '0' || *p > '9') goto fail;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            if (e < 100000) e = e * 10 + (*p - '0');
        exp10 += eneg ? -e : e;
    }

    if (exact && m <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        x = (double)m;
        if (exp10 < 0) x /= pow10_exact[-exp10];
        else if (exp10 > 0) x *= pow10_exact[exp10];
        if (neg) x = -x;
    } else {
        char local[JSON_NUM_MAX], *buf = local;
        size_t len = (size_t)(p - num);
        pthread_once(&c_locale_once, c_locale_create);
        if (len >= sizeof(local)) buf = sl_malloc(len + 1);
        memcpy(buf, num, len);
        buf[len] = '\0';
        x = strtod_l(buf, NULL, c_locale);
        if (buf != local) free(buf);
        if (!isfinite(x)) {
            p = num;
            bad = "number out of range";
            goto fail;
        }
    }
    *v = x;
    return (size_t)(p - num);
fail:
    if (fault) *fault = (size_t)(p - num);
    if (why) *why = bad;
    return 0;
}

/* Parses the number at d->p and pushes it. */
static int dec_number(struct dec *d) {
    double v;
    size_t fault = 0, n;
    const char *why = NULL;

    n = sl_json_number((const char *)d->p, (size_t)(d->end - d->p), &v, &fault, &why);
    if (n == 0) {
        /* A number starts with '-' or a digit here, so a fault at 0 is a
         * well-formed number out of range. */
        return fault ? dec_fail_at(d, d->p + fault, why) : dec_fail_msg(d, d->p, why);
    }
    lua_pushnumber(d->L, v);
    d->p += n;
    return 0;
}

static int dec_value(struct dec *d, int depth);

/* Stack slots beyond a chunk of members a container may need: the pending
 * key and value, and a flush's table and two copies. Checked once per chunk. */
#define DEC_SLOTS 6

static inline int dec_chunk(int depth) {
    return depth <= JSON_SHALLOW_DEPTH ? JSON_CHUNK_SHALLOW : JSON_CHUNK_DEEP;
}

/* Moves the npairs key/value pairs waiting above the object's slot at base
 * into its table (created at base by the first flush). */
static void obj_flush(lua_State *L, int base, int *made, int npairs) {
    int first = base + *made, t;
    if (!*made) {
        lua_createtable(L, 0, npairs);                /* pairs.. t */
        t = lua_gettop(L);
    } else {
        t = base;                                     /* t pairs.. */
    }
    for (int i = 0; i < npairs; i++) {
        lua_pushvalue(L, first + 2 * i);
        lua_pushvalue(L, first + 2 * i + 1);
        lua_rawset(L, t);                             /* in input order: the last duplicate wins */
    }
    if (!*made) {
        lua_replace(L, base);                         /* t pairs(stale).. */
        *made = 1;
    }
    lua_settop(L, base);                              /* t */
}

static int dec_object(struct dec *d, int depth) {
    lua_State *L = d->L;
    int base = lua_gettop(L) + 1, made = 0, pending = 0, chunk = dec_chunk(depth);

    if (depth > SL_JSON_MAX_DEPTH) return dec_fail_msg(d, d->p, JSON_TOO_DEEP);
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        lua_createtable(L, 0, 0);
        return 0;
    }
    if (!lua_checkstack(L, 2 * chunk + DEC_SLOTS)) return dec_fail_msg(d, d->p, "document too deep for the Lua stack");
    for (;;) {
        if (d->p >= d->end || *d->p != '"') return dec_fail_at(d, d->p, "object key expected");
        if (dec_string(d) < 0) return -1;             /* .. key */
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') return dec_fail_at(d, d->p, "':' expected");
        d->p++;
        skip_ws(d);
        if (dec_value(d, depth) < 0) return -1;       /* .. key value */
        if (++pending == chunk) {
            obj_flush(L, base, &made, pending);
            pending = 0;
            if (!lua_checkstack(L, 2 * chunk + DEC_SLOTS))
                return dec_fail_msg(d, d->p, "document too deep for the Lua stack");
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            break;
        }
        return dec_fail_at(d, d->p, "',' or '}' expected");
    }
    if (pending || !made) obj_flush(L, base, &made, pending);
    return 0;
}

static int dec_array(struct dec *d, int depth) {
    lua_State *L = d->L;
    int base = lua_gettop(L) + 1, made = 0, pending = 0, stored = 0, chunk = dec_chunk(depth);

    if (depth > SL_JSON_MAX_DEPTH) return dec_fail_msg(d, d->p, JSON_TOO_DEEP);
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        lua_createtable(L, 0, 0);
        goto done;
    }
    if (!lua_checkstack(L, chunk + DEC_SLOTS)) return dec_fail_msg(d, d->p, "document too deep for the Lua stack");
    for (;;) {
        if (dec_value(d, depth) < 0) return -1;       /* .. value */
        if (++pending == chunk) {
            if (!made) {
                lua_createtable(L, pending, 0);
                lua_insert(L, base);                  /* t values.. */
                made = 1;
            }
            for (int i = pending; i >= 1; i--) lua_rawseti(L, base, stored + i);
            stored += pending;
            pending = 0;
            if (!lua_checkstack(L, chunk + DEC_SLOTS))
                return dec_fail_msg(d, d->p, "document too deep for the Lua stack");
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            break;
        }
        return dec_fail_at(d, d->p, "',' or ']' expected");
    }
    if (!made) {
        lua_createtable(L, pending, 0);
        lua_insert(L, base);                          /* t values.. */
    }
    for (int i = pending; i >= 1; i--) lua_rawseti(L, base, stored + i);
done:
    lua_pushvalue(L, d->mt_idx);                      /* t mt */
    lua_setmetatable(L, base);                        /* t */
    return 0;
}

/* Reads the literal true, false or null at d->p and moves past it:
 * returns SL_JSON_TRUE, SL_JSON_FALSE or SL_JSON_NULL, or -1 (d->p kept). */
static int dec_literal(struct dec *d) {
    const unsigned char *p = d->p;
    size_t left = (size_t)(d->end - p);
    if (left >= 4 && !memcmp(p, "true", 4)) { d->p += 4; return SL_JSON_TRUE; }
    if (left >= 5 && !memcmp(p, "false", 5)) { d->p += 5; return SL_JSON_FALSE; }
    if (left >= 4 && !memcmp(p, "null", 4)) { d->p += 4; return SL_JSON_NULL; }
    return -1;
}

static int dec_value(struct dec *d, int depth) {
    const unsigned char *p = d->p;
    size_t left = (size_t)(d->end - p);

    if (!left) return dec_fail_at(d, p, "value expected");
    switch (*p) {
    case '"': return dec_string(d);
    case '{': return dec_object(d, depth + 1);
    case '[': return dec_array(d, depth + 1);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return dec_number(d);
    case 't': case 'f': case 'n':
        switch (dec_literal(d)) {
        case SL_JSON_TRUE: lua_pushboolean(d->L, 1); return 0;
        case SL_JSON_FALSE: lua_pushboolean(d->L, 0); return 0;
        case SL_JSON_NULL: lua_pushlightuserdata(d->L, NULL); return 0;
        }
        break;
    }
    return dec_fail_at(d, p, "value expected");
}

/* The protected body of sl_json_decode: the argument is the struct dec, the
 * upvalue the array metatable. Returns the value, or nothing on error. */
static int dec_protected(lua_State *L) {
    struct dec *d = lua_touserdata(L, 1);
    d->L = L;
    d->mt_idx = lua_upvalueindex(1);
    skip_ws(d);
    if (dec_value(d, 0) < 0) return 0;
    skip_ws(d);
    if (d->p != d->end) {
        dec_fail_at(d, d->p, "trailing data after the value");
        return 0;
    }
    return 1;
}

int sl_json_decode(lua_State *L, const char *s, size_t n, char *err, size_t errlen) {
    struct dec d;
    int ret = SL_ERR, top = lua_gettop(L);

    d.start = d.p = (const unsigned char *)s;
    d.end = d.start + n;
    d.failed = 0;
    d.err = err;
    d.errlen = errlen;
    d.scratch = d.inline_scratch;
    d.scap = sizeof(d.inline_scratch);

    if (!lua_checkstack(L, 3)) {
        sl_errf(err, errlen, "json: Lua stack full");
        return SL_ERR;
    }
    lua_pushlightuserdata(L, &decoder_key);
    lua_rawget(L, LUA_REGISTRYINDEX);                 /* decoder */
    assert(lua_isfunction(L, -1) && "sl_json_init not called on this lua_State");
    lua_pushlightuserdata(L, &d);                     /* decoder d */
    if (lua_pcall(L, 1, 1, 0)) {                      /* value | msg */
        sl_errf(err, errlen, "json: %s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
        goto done;
    }
    if (d.failed) goto done;
    ret = SL_OK;
done:
    if (d.scratch != d.inline_scratch) free(d.scratch);
    if (ret != SL_OK) lua_settop(L, top);
    return ret;
}

/* ==================== Tape ==================== */

struct tdec {
    struct dec d;                /* input, position and error reporting */
    struct sl_json_tape *t;
};

/* Appends a node of type and returns its index. */
static inline uint32_t tape_add(struct sl_json_tape *t, uint8_t type) {
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->nodes = sl_realloc(t->nodes, t->cap * sizeof(*t->nodes));
    }
    struct sl_json_node *nd = &t->nodes[t->n];
    nd->type = type;
    nd->flags = 0;
    nd->next = (uint32_t)t->n + 1;
    return (uint32_t)t->n++;
}

/* True for the byte after a backslash of a one-byte escape (not \u). */
static inline bool simple_escape(unsigned char c) {
    return c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
           c == 't';
}

/* Checks the string at d->p (the opening quote) as dec_string does and
 * adds its node: the text between the quotes, escapes left in place. */
static int tdec_string(struct tdec *td) {
    struct dec *d = &td->d;
    const unsigned char *begin = d->p + 1, *p = begin, *end = d->end;
    uint8_t flags = 0;
    int n;

    for (;;) {
        p = scan_plain(p, end);
        if (p >= end) return dec_fail_at(d, p, "unterminated string");
        if (*p == '"') break;
        if (*p == '\\') {
            flags = SL_JSON_ESCAPED;
            if (end - p >= 2 && simple_escape(p[1])) { /* \" \\ \/ \b \f \n \r \t: valid as is */
                p += 2;
                continue;
            }
            size_t len = 0;                  /* checked into the scratch, then dropped */
            d->p = p;
            if (dec_escape(d, &len) < 0) return -1;
            p = d->p;
            continue;
        }
        if (*p < 0x20) return dec_fail_at(d, p, "control character in string");
        if (!(n = utf8_len(p, end))) return dec_fail_msg(d, p, "invalid UTF-8 in string");
        p += n;
    }
    uint32_t i = tape_add(td->t, SL_JSON_STRING);
    td->t->nodes[i].flags = flags;
    td->t->nodes[i].u.str.off = (uint32_t)(begin - d->start);
    td->t->nodes[i].u.str.len = (uint32_t)(p - begin);
    d->p = p + 1;
    return 0;
}

/* tdec_string for the short plain strings most keys and many values are:
 * when the closing quote comes first in the 16 bytes after the opening one
 * (no escape, control or non-ASCII byte before it), the node is added here
 * without a call; anything else goes to tdec_string. */
static inline int tdec_short_string(struct tdec *td) {
#ifdef __SSE2__
    struct dec *d = &td->d;
    const unsigned char *begin = d->p + 1;
    if (d->end - begin >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)begin);
        int quote = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')));
        int other = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')),
                                                   _mm_cmplt_epi8(v, _mm_set1_epi8(0x20))));
        if (quote && (!other || __builtin_ctz((unsigned)quote) < __builtin_ctz((unsigned)other))) {
            uint32_t len = (uint32_t)__builtin_ctz((unsigned)quote);
            uint32_t i = tape_add(td->t, SL_JSON_STRING);
            td->t->nodes[i].u.str.off = (uint32_t)(begin - d->start);
            td->t->nodes[i].u.str.len = len;
            d->p = begin + len + 1;
            return 0;
        }
    }
#endif
    return tdec_string(td);
}

static int tdec_value(struct tdec *td, int depth);

/* An array or object at d->p: members until close, each an object member
 * (key ':' value) when obj. */
static int tdec_container(struct tdec *td, int depth, bool obj) {
    struct dec *d = &td->d;
    char close = obj ? '}' : ']';
    uint32_t i = tape_add(td->t, obj ? SL_JSON_OBJECT : SL_JSON_ARRAY), count = 0;

    if (depth > SL_JSON_MAX_DEPTH) return dec_fail_msg(d, d->p, JSON_TOO_DEEP);
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == close) {
        d->p++;
        goto done;
    }
    for (;;) {
        if (obj) {
            if (d->p >= d->end || *d->p != '"') return dec_fail_at(d, d->p, "object key expected");
            if (tdec_short_string(td) < 0) return -1;
            skip_ws(d);
            if (d->p >= d->end || *d->p != ':') return dec_fail_at(d, d->p, "':' expected");
            d->p++;
            skip_ws(d);
        }
        if (d->p < d->end && *d->p == '"') {  /* most values: no dispatch */
            if (tdec_short_string(td) < 0) return -1;
        } else if (tdec_value(td, depth) < 0) {
            return -1;
        }
        count++;
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (d->p < d->end && *d->p == close) {
            d->p++;
            break;
        }
        return dec_fail_at(d, d->p, obj ? "',' or '}' expected" : "',' or ']' expected");
    }
done:
    td->t->nodes[i].u.count = count;
    td->t->nodes[i].next = (uint32_t)td->t->n;
    return 0;
}

static int tdec_value(struct tdec *td, int depth) {
    struct dec *d = &td->d;
    const unsigned char *p = d->p;
    size_t left = (size_t)(d->end - p), fault = 0, n;
    const char *why = NULL;
    uint32_t i;
    double v;

    if (!left) return dec_fail_at(d, p, "value expected");
    switch (*p) {
    case '"': return tdec_short_string(td);
    case '{': return tdec_container(td, depth + 1, true);
    case '[': return tdec_container(td, depth + 1, false);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        n = sl_json_number((const char *)p, left, &v, &fault, &why);
        if (n == 0) return fault ? dec_fail_at(d, p + fault, why) : dec_fail_msg(d, p, why);
        i = tape_add(td->t, SL_JSON_NUMBER);   /* it may move the nodes: index after */
        td->t->nodes[i].u.num = v;
        d->p += n;
        return 0;
    case 't': case 'f': case 'n': {
        int lit = dec_literal(d);
        if (lit < 0) break;
        tape_add(td->t, (uint8_t)lit);
        return 0;
    }
    }
    return dec_fail_at(d, p, "value expected");
}

int sl_json_tape_parse(struct sl_json_tape *t, const char *s, size_t n, char *err, size_t errlen) {
    struct tdec td;
    struct dec *d = &td.d;
    int ret = SL_ERR;

    if (n >= UINT32_MAX) {
        sl_errf(err, errlen, "json: text of %zu bytes is too long", n);
        return SL_ERR;
    }
    td.t = t;
    t->n = 0;
    d->L = NULL;
    d->start = d->p = (const unsigned char *)s;
    d->end = d->start + n;
    d->failed = 0;
    d->err = err;
    d->errlen = errlen;
    d->scratch = d->inline_scratch;
    d->scap = sizeof(d->inline_scratch);
    skip_ws(d);
    if (tdec_value(&td, 0) < 0) goto done;
    skip_ws(d);
    if (d->p != d->end) {
        dec_fail_at(d, d->p, "trailing data after the value");
        goto done;
    }
    ret = SL_OK;
done:
    if (d->scratch != d->inline_scratch) free(d->scratch);
    return ret;
}

/* ==================== Encoder ==================== */

struct enc {
    lua_State *L;
    struct sl_buf *b;
    int mt_idx;       /* stack index of the array metatable */
    char *err;
    size_t errlen;
    bool sorted;      /* object keys in byte order (sl_json_encode_sorted) */
};

/* Makes room for n more bytes plus the NUL that struct sl_buf keeps. */
static inline void enc_reserve(struct sl_buf *b, size_t n) {
    size_t need = b->len + n + 1, cap;
    if (need <= b->cap) return;
    cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = sl_realloc(b->data, cap);
    b->cap = cap;
}

static inline void enc_add(struct sl_buf *b, const char *s, size_t n) {
    enc_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static inline void enc_addc(struct sl_buf *b, char c) {
    enc_reserve(b, 1);
    b->data[b->len++] = c;
}

static int enc_fail(struct enc *e, const char *what) {
    sl_errf(e->err, e->errlen, "json: %s", what);
    return -1;
}

#define ENC_SHORT 24   /* enc_string copies a string this short byte by byte */

/* The bytes a JSON string holds as they are: printable ASCII but '"' and '\\'. */
static const unsigned char enc_plain[256] = {
    [0x20] = 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,      /* 0x22 '"' */
    [0x30] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    [0x40] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    [0x50] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,      /* 0x5c '\\' */
    [0x60] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    [0x70] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static int enc_string(struct enc *e, const char *str, size_t n) {
    static const char hex[] = "0123456789abcdef";
    struct sl_buf *b = e->b;
    const unsigned char *s = (const unsigned char *)str, *p = s, *end = s + n;

    enc_reserve(b, n + 2);
    b->data[b->len++] = '"';
    if (n <= ENC_SHORT) {                             /* most keys: copied as checked */
        char *o = b->data + b->len;
        size_t i = 0;
        for (; i < n && enc_plain[s[i]]; i++) o[i] = (char)s[i];
        if (i == n) {
            o[n] = '"';
            b->len += n + 1;
            return 0;
        }                                             /* else from the start, below */
    }
    while (p < end) {
        const unsigned char *run = p;
        p = scan_plain(p, end);
        if (p > run) enc_add(b, (const char *)run, (size_t)(p - run));
        if (p >= end) break;
        if (*p >= 0x80) {
            int k = utf8_len(p, end);
            if (!k) {
                sl_errf(e->err, e->errlen, "json: invalid UTF-8 in string at byte %zu", (size_t)(p - s));
                return -1;
            }
            enc_add(b, (const char *)p, (size_t)k);
            p += k;
            continue;
        }
        enc_reserve(b, 6);
        char *o = b->data + b->len;
        switch (*p) {
        case '"': o[0] = '\\'; o[1] = '"'; b->len += 2; break;
        case '\\': o[0] = '\\'; o[1] = '\\'; b->len += 2; break;
        case '\n': o[0] = '\\'; o[1] = 'n'; b->len += 2; break;
        case '\r': o[0] = '\\'; o[1] = 'r'; b->len += 2; break;
        case '\t': o[0] = '\\'; o[1] = 't'; b->len += 2; break;
        case '\b': o[0] = '\\'; o[1] = 'b'; b->len += 2; break;
        case '\f': o[0] = '\\'; o[1] = 'f'; b->len += 2; break;
        default:
            memcpy(o, "\\u00", 4);
            o[4] = hex[*p >> 4];
            o[5] = hex[*p & 15];
            b->len += 6;
        }
        p++;
    }
    enc_addc(b, '"');
    return 0;
}

/* Writes u's decimal digits to end at end, two at a time; returns where
 * they start. */
static char *put_digits(char *end, uint64_t u) {
    static const char pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    while (u >= 100) {
        end -= 2;
        memcpy(end, pairs + 2 * (u % 100), 2);
        u /= 100;
    }
    if (u >= 10) {
        end -= 2;
        memcpy(end, pairs + 2 * u, 2);
    } else {
        *--end = (char)('0' + u);
    }
    return end;
}

/* Writes x as %.15g would when x is the double nearest to a decimal of at
 * most 15 significant digits with |x| < 1e14 (model scores, prices,
 * coordinates), without printf: the fewest decimals k with m / 10^k == x,
 * m < 10^15. Only one 15-digit decimal lies within half an ulp of a double,
 * so that m is what %.15g prints: as 0.000ddd or ddd.ddd, or as d.ddde-XX
 * below 1e-4. Returns the length, or 0 if x is not such a number (then
 * printf finds its digits).
 *
 * One division, not one per k: with K the most decimals (<= 22, the powers
 * of ten a double holds) keeping x * 10^K below 10^15, x * 10^K lies within
 * 0.23 of m_k * 10^(K-k) for any k <= K that round-trips, so it rounds to
 * that; m_K round-trips then too, and its trailing zeros off give the
 * fewest. When m_K does not round-trip, no k does. */
static int fmt_short_decimal(double x, char *out) {
    double ax = fabs(x);
    char buf[24];
    int k, nd, n = 0;
    uint64_t m = 0;

    if (!(ax > 0) || ax >= 1e14) return 0;
    for (k = 1; k < 22 && ax * pow10_exact[k + 1] < 1e15; k++) {}
    m = (uint64_t)nearbyint(ax * pow10_exact[k]);
    if (!m || (double)m / pow10_exact[k] != ax) return 0;
    while (m % 10 == 0 && k > 0) { m /= 10; k--; }
    const char *d = put_digits(buf + sizeof(buf), m);
    nd = (int)(buf + sizeof(buf) - d);
    if (x < 0) out[n++] = '-';
    int exp10 = nd - 1 - k;                           /* of the first digit */
    if (exp10 < -4) {                                 /* d.ddde-XX, as %g: 2 digits at least */
        out[n++] = *d++;
        if (nd > 1) out[n++] = '.';
        memcpy(out + n, d, (size_t)nd - 1);
        n += nd - 1;
        out[n++] = 'e';
        out[n++] = '-';
        out[n++] = (char)('0' + -exp10 / 10);
        out[n++] = (char)('0' + -exp10 % 10);
        return n;
    }
    if (nd <= k) {                                    /* 0.000ddd */
        out[n++] = '0';
        out[n++] = '.';
        for (int i = 0; i < k - nd; i++) out[n++] = '0';
    } else {                                          /* ddd.ddd */
        memcpy(out + n, d, (size_t)(nd - k));
        n += nd - k;
        d += nd - k;
        if (k) out[n++] = '.';
        nd = k;
    }
    memcpy(out + n, d, (size_t)nd);
    return n + nd;
}

static int enc_number(struct enc *e, lua_Number x) {
    struct sl_buf *b = e->b;
    char tmp[40];
    int n;

    if (!isfinite(x)) return enc_fail(e, isnan(x) ? "cannot encode NaN" : "cannot encode infinity");
    if (x == floor(x) && fabs(x) <= 9007199254740992.0) {
        char *o = put_digits(tmp + sizeof(tmp), (uint64_t)fabs(x));
        if (signbit(x)) *--o = '-';                   /* -0 stays -0 */
        enc_add(b, o, (size_t)(tmp + sizeof(tmp) - o));
        return 0;
    }
    if ((n = fmt_short_decimal(x, tmp))) {
        enc_add(b, tmp, (size_t)n);
        return 0;
    }
    pthread_once(&c_locale_once, c_locale_create);
    locale_t old = uselocale(c_locale);
    double ax = fabs(x);
    n = 0;
    if (ax < 1e-4 || ax >= 1e14) {                    /* else fmt_short_decimal proved 15 digits too few */
        n = snprintf(tmp, sizeof(tmp), "%.15g", x);
        if (strtod_l(tmp, NULL, c_locale) != x) n = 0;
    }
    if (!n) {
        n = snprintf(tmp, sizeof(tmp), "%.16g", x);
        if (strtod_l(tmp, NULL, c_locale) != x) n = snprintf(tmp, sizeof(tmp), "%.17g", x);
    }
    uselocale(old);
    enc_add(b, tmp, (size_t)n);
    return 0;
}

static int enc_value(struct enc *e, int idx, int depth);

/* A key of an object being sorted: the string is the table's own key, kept
 * alive by the table while it is encoded (or a tape's, enc_tape_object).
 * pre is its first 8 bytes, big-endian, zero-padded: most keys differ
 * there, so sorting seldom calls memcmp. */
struct enc_key {
    const char *s;
    size_t n;
    uint64_t pre;
    int v;            /* its value's stack index; 0: a list of a table of lists,
                         written from its copy; -1: read again with rawget */
    uint32_t node;    /* enc_tape_object: its value node, 0 for the table's */
    uint32_t pos;     /* enc_tape_object: orders occurrences of one key */
};

#define ENC_LISTS 16  /* Lists of a table of lists written from their copy, sorted. */
#define ENC_SMALL 16  /* Members whose values stay on the stack while sorting. */

static inline uint64_t key_prefix(const char *s, size_t n) {
    uint64_t p = 0;
    if (n >= 8) {
        memcpy(&p, s, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        p = __builtin_bswap64(p);
#endif
        return p;
    }
    for (size_t i = 0; i < 8; i++) p = p << 8 | (i < n ? (unsigned char)s[i] : 0);
    return p;
}

static int enc_key_cmp(const void *a, const void *b) {
    const struct enc_key *x = a, *y = b;
    if (x->pre != y->pre) return x->pre < y->pre ? -1 : 1;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    if (c) return c;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Doubles *cap keys: the first growth moves them off small (the caller's
 * array on its stack, of *cap keys), later ones realloc. */
static struct enc_key *grow_keys(struct enc_key *keys, const struct enc_key *small, size_t *cap) {
    size_t had = *cap;
    *cap *= 2;
    if (keys == small) return memcpy(sl_malloc(*cap * sizeof(*keys)), small, had * sizeof(*keys));
    return sl_realloc(keys, *cap * sizeof(*keys));
}

/* Sorts keys[0..n) in byte order (then pos): insertion sort for the few
 * members most objects have. */
static void sort_keys(struct enc_key *keys, size_t n) {
    if (n > 2 * ENC_SMALL) {
        qsort(keys, n, sizeof(*keys), enc_key_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct enc_key x = keys[i];
        size_t j = i;
        for (; j && enc_key_cmp(&keys[j - 1], &x) > 0; j--) keys[j] = keys[j - 1];
        keys[j] = x;
    }
}

/* The lists of a table of lists still lazy, not made yet (lazy.h), that
 * the sorted encoder writes from their copy. */
struct enc_lists {
    const struct sl_lazy_view *view;
    const char *names[ENC_LISTS];
    size_t lens[ENC_LISTS];
    uint32_t ids[ENC_LISTS];
    size_t n;
};

/* Encodes the object at idx with its keys in byte order, as Lua's
 * table.sort of its keys does (lua/sluice/init.lua). O(n log n). The values
 * of its first ENC_SMALL members stay on the stack, so they are not looked
 * up again. idx may be a table of lists still lazy: lists says which of its
 * lists are not made yet, and its hidden keys are skipped. */
static int enc_object_sorted(struct enc *e, int idx, int depth, const struct enc_lists *lists) {
    lua_State *L = e->L;
    struct enc_key small[ENC_SMALL + ENC_LISTS], *keys = small;
    size_t n = 0, cap = sizeof(small) / sizeof(small[0]), kept = 0;
    int base = lua_gettop(L), ret = -1;
    bool keep = lua_checkstack(L, 2 * ENC_SMALL + 4);

    for (; lists && n < lists->n; n++)
        keys[n] = (struct enc_key){.s = lists->names[n], .n = lists->lens[n], .node = lists->ids[n],
                                   .pre = key_prefix(lists->names[n], lists->lens[n])};
    lua_pushnil(L);                                   /* .. nil */
    while (lua_next(L, idx)) {                        /* .. [k v]... k v */
        if (lists && sl_lazy_hidden_key(L, -2)) {
            lua_pop(L, 1);
            continue;
        }
        if (lua_type(L, -2) != LUA_TSTRING) {
            enc_fail(e, "cannot encode a table with both string and non-string keys");
            goto done;
        }
        if (n == cap) keys = grow_keys(keys, small, &cap);
        keys[n].s = lua_tolstring(L, -2, &keys[n].n);
        keys[n].pre = key_prefix(keys[n].s, keys[n].n);
        keys[n].pos = 0;
        if (keep && kept < ENC_SMALL) {
            keys[n].v = lua_gettop(L);                /* stays: .. k v k */
            kept++;
            lua_pushvalue(L, -2);
        } else {
            keys[n].v = -1;
            lua_pop(L, 1);                            /* .. k */
        }
        n++;
    }                                                 /* .. [k v]... */
    sort_keys(keys, n);
    enc_addc(e->b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i) enc_addc(e->b, ',');
        if (enc_string(e, keys[i].s, keys[i].n) < 0) goto done;
        enc_addc(e->b, ':');
        if (keys[i].v == 0) {
            if (sl_lazy_view_encode_list(lists->view, keys[i].node, e->b, e->err, e->errlen)) goto done;
        } else if (keys[i].v > 0) {
            if (enc_value(e, keys[i].v, depth) < 0) goto done;
        } else {
            lua_pushlstring(L, keys[i].s, keys[i].n); /* .. k */
            lua_rawget(L, idx);                       /* .. v */
            if (enc_value(e, lua_gettop(L), depth) < 0) goto done;
            lua_pop(L, 1);                            /* .. */
        }
    }
    enc_addc(e->b, '}');
    ret = 0;
done:
    lua_settop(L, base);
    if (keys != small) free(keys);
    return ret;
}

/* Writes the members of the object at idx from the pair k v on the stack
 * (lua_next's) to the last, then the closing brace; "{" and, unless first,
 * members before them are written already. lazy: idx is a table of lists
 * still lazy, whose hidden keys (lazy.h) are not members. */
static int enc_members(struct enc *e, int idx, int depth, bool first, bool lazy) {
    lua_State *L = e->L;
    struct sl_buf *b = e->b;
    do {                                              /* .. k v */
        size_t kn;
        const char *k;
        if (lazy && sl_lazy_hidden_key(L, -2)) {
            lua_pop(L, 1);                            /* .. k */
            continue;
        }
        if (lua_type(L, -2) != LUA_TSTRING)
            return enc_fail(e, "cannot encode a table with both string and non-string keys");
        if (!first) enc_addc(b, ',');
        first = false;
        k = lua_tolstring(L, -2, &kn);
        if (enc_string(e, k, kn) < 0) return -1;
        enc_addc(b, ':');
        if (enc_value(e, lua_gettop(L), depth) < 0) return -1;
        lua_pop(L, 1);                                /* .. k */
    } while (lua_next(L, idx));                       /* .. k v | .. */
    enc_addc(b, '}');
    return 0;
}

/* Judges the keys of the table at idx as an array's: *max is the largest;
 * -1 (e->err set) when a key is not 1..n, or the table has holes (is_arr:
 * too many of them). */
static int array_max(struct enc *e, int idx, int is_arr, double *max) {
    lua_State *L = e->L;
    double count = 0;
    *max = 0;
    lua_pushnil(L);                                   /* .. nil */
    while (lua_next(L, idx)) {                        /* .. k v */
        lua_Number k;
        if (lua_type(L, -2) != LUA_TNUMBER) {
            lua_pop(L, 2);
            return enc_fail(e, "cannot encode a table with both string and non-string keys");
        }
        k = lua_tonumber(L, -2);
        if (k < 1 || k != floor(k) || k > 2147483647.0) {
            lua_pop(L, 2);
            return enc_fail(e, "cannot encode a table with number keys that are not 1..n");
        }
        count++;
        if (k > *max) *max = k;
        lua_pop(L, 1);                                /* .. k */
    }                                                 /* .. */
    if (*max > count) {
        if (!is_arr) return enc_fail(e, "cannot encode an array with holes (use sluice.array to encode them as null)");
        if (*max > 2 * count + JSON_SPARSE_SLACK) return enc_fail(e, "cannot encode an excessively sparse array");
    }
    return 0;
}

/* ==================== Sorted, from a tape ==================== */

static int enc_tape_value(struct enc *e, const struct sl_json_node *nodes, const char *text,
                          uint32_t i, int depth);

/* Writes string node nd of text as enc_string writes its unescaped bytes. */
static int enc_tape_string(struct enc *e, const struct sl_json_node *nd, const char *text) {
    const char *raw = text + nd->u.str.off;
    char local[256], *buf = local;
    if (!(nd->flags & SL_JSON_ESCAPED)) return enc_string(e, raw, nd->u.str.len);
    if (nd->u.str.len > sizeof(local)) buf = sl_malloc(nd->u.str.len);
    int r = enc_string(e, buf, sl_json_unescape(raw, nd->u.str.len, buf));
    if (buf != local) free(buf);
    return r;
}

/* Writes object node obj of a tape with its keys in byte order, each key's
 * last occurrence winning, as the sorted encoder writes the table that
 * decoding it makes. When idx is not 0 the object is the lazy table at idx
 * (lazy.h): a member whose last occurrence is taken is the table's (made,
 * assigned, or gone when deleted), and the table's other members are added. */
static int enc_tape_object(struct enc *e, const struct sl_json_node *nodes, const char *text,
                           uint32_t obj, int idx, int depth) {
    lua_State *L = e->L;
    struct enc_key small[2 * ENC_SMALL], *keys = small;
    size_t n = 0, cap = sizeof(small) / sizeof(small[0]), esc = 0;
    uint32_t count = nodes[obj].u.count;
    char *ubuf = NULL, *u;
    int ret = -1;

    if (depth > SL_JSON_MAX_DEPTH) return enc_fail(e, JSON_TOO_DEEP_ENC);
    for (uint32_t m = 0, k = obj + 1; m < count; m++, k = nodes[k + 1].next)
        if (nodes[k].flags & SL_JSON_ESCAPED) esc += nodes[k].u.str.len;
    u = ubuf = esc ? sl_malloc(esc) : NULL;           /* unescaped keys, never moved */
    for (uint32_t m = 0, k = obj + 1; m < count; m++, k = nodes[k + 1].next) {
        if (n == cap) keys = grow_keys(keys, small, &cap);
        const struct sl_json_node *kn = &nodes[k];
        if (kn->flags & SL_JSON_ESCAPED) {
            keys[n].s = u;
            keys[n].n = sl_json_unescape(text + kn->u.str.off, kn->u.str.len, u);
            u += keys[n].n;
        } else {
            keys[n].s = text + kn->u.str.off;
            keys[n].n = kn->u.str.len;
        }
        keys[n].pre = key_prefix(keys[n].s, keys[n].n);
        keys[n].node = k + 1;
        keys[n].pos = m;
        n++;
    }
    if (idx) {                                        /* the table's own members */
        lua_pushnil(L);                               /* .. nil */
        while (lua_next(L, idx)) {                    /* .. k v */
            lua_pop(L, 1);                            /* .. k */
            if (sl_lazy_hidden_key(L, -1)) continue;
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 1);
                enc_fail(e, "cannot encode a table with both string and non-string keys");
                goto done;
            }
            if (n == cap) keys = grow_keys(keys, small, &cap);
            keys[n].s = lua_tolstring(L, -1, &keys[n].n); /* kept alive by the table */
            keys[n].pre = key_prefix(keys[n].s, keys[n].n);
            keys[n].node = 0;
            keys[n].pos = UINT32_MAX;
            n++;
        }
    }
    sort_keys(keys, n);
    enc_addc(e->b, '{');
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        const struct enc_key *w = &keys[i];
        if (i + 1 < n && w->n == keys[i + 1].n && !memcmp(w->s, keys[i + 1].s, w->n)) continue;
        if (w->node && idx && nodes[w->node].flags & SL_JSON_TAKEN) continue; /* deleted */
        if (!first) enc_addc(e->b, ',');
        first = false;
        if (enc_string(e, w->s, w->n) < 0) goto done;
        enc_addc(e->b, ':');
        if (w->node) {
            if (enc_tape_value(e, nodes, text, w->node, depth) < 0) goto done;
        } else {
            lua_pushlstring(L, w->s, w->n);           /* .. k */
            lua_rawget(L, idx);                       /* .. v */
            int r = enc_value(e, lua_gettop(L), depth);
            lua_pop(L, 1);                            /* .. */
            if (r < 0) goto done;
        }
    }
    enc_addc(e->b, '}');
    ret = 0;
done:
    if (keys != small) free(keys);
    free(ubuf);
    return ret;
}

/* Writes value node i of a tape as the sorted encoder writes the Lua value
 * that decoding it makes (depth: the value's parent's, as enc_value's). */
static int enc_tape_value(struct enc *e, const struct sl_json_node *nodes, const char *text,
                          uint32_t i, int depth) {
    const struct sl_json_node *nd = &nodes[i];
    switch ((enum sl_json_type)nd->type) {
    case SL_JSON_NULL: enc_add(e->b, "null", 4); return 0;
    case SL_JSON_FALSE: enc_add(e->b, "false", 5); return 0;
    case SL_JSON_TRUE: enc_add(e->b, "true", 4); return 0;
    case SL_JSON_NUMBER: return enc_number(e, nd->u.num);
    case SL_JSON_STRING: return enc_tape_string(e, nd, text);
    case SL_JSON_OBJECT: return enc_tape_object(e, nodes, text, i, 0, depth + 1);
    case SL_JSON_ARRAY:
        break;
    }
    if (depth + 1 > SL_JSON_MAX_DEPTH) return enc_fail(e, JSON_TOO_DEEP_ENC);
    enc_addc(e->b, '[');
    for (uint32_t k = 0, el = i + 1; k < nd->u.count; k++, el = nodes[el].next) {
        if (k) enc_addc(e->b, ',');
        if (enc_tape_value(e, nodes, text, el, depth + 1) < 0) return -1;
    }
    enc_addc(e->b, ']');
    return 0;
}

/* Encodes the table at absolute index idx. Tables with the array metatable,
 * and plain tables whose first key is a number, are arrays: one pass counts
 * keys and finds the largest, a second emits 1..max. Others are objects,
 * emitted in lua_next order as their keys come. */
static int enc_table(struct enc *e, int idx, int depth) {
    lua_State *L = e->L;
    struct sl_buf *b = e->b;
    int is_arr = 0;

    if (depth > SL_JSON_MAX_DEPTH) return enc_fail(e, JSON_TOO_DEEP_ENC);
    if (!lua_checkstack(L, 4)) return enc_fail(e, "Lua stack full");
    if (lua_getmetatable(L, idx)) {                   /* .. mt */
        is_arr = lua_rawequal(L, -1, e->mt_idx);
        lua_pop(L, 1);                                /* .. */
        if (!is_arr) {
            struct sl_lazy_view view;
            sl_lazy_view(L, idx, &view);
            if (view.kind == SL_LAZY_LISTS && !e->sorted) { /* window lists: from their copy */
                bool first = true;
                enc_addc(b, '{');
                if (sl_lazy_view_encode_lists(&view, b, &first, e->err, e->errlen)) return -1;
                lua_pushnil(L);                       /* .. nil */
                if (lua_next(L, idx)) return enc_members(e, idx, depth, first, true); /* .. k v */
                enc_addc(b, '}');
                return 0;
            }
            if (view.kind == SL_LAZY_LISTS) {         /* the same, sorted */
                struct enc_lists lists = {.view = &view};
                long nl = sl_lazy_view_lists(&view, lists.names, lists.lens, lists.ids, ENC_LISTS);
                lists.n = (size_t)nl;
                if (nl <= ENC_LISTS) return enc_object_sorted(e, idx, depth, &lists);
            }
            if (view.kind == SL_LAZY_OBJECT && e->sorted) { /* members not made: from the tape */
                const char *text;
                const struct sl_json_node *nodes = sl_lazy_view_tape(&view, &text);
                return enc_tape_object(e, nodes, text, view.obj, idx, depth);
            }
            if (view.kind != SL_LAZY_NO) sl_lazy_expand(L, idx); /* made whole */
        }
    }
    lua_pushnil(L);                                   /* .. nil */
    if (!lua_next(L, idx)) {                          /* .. */
        enc_add(b, is_arr ? "[]" : "{}", 2);
        return 0;
    }                                                 /* .. k v */
    if (!is_arr && lua_type(L, -2) == LUA_TSTRING && e->sorted) {
        lua_pop(L, 2);                                /* .. */
        return enc_object_sorted(e, idx, depth, NULL);
    }
    if (!is_arr && lua_type(L, -2) == LUA_TSTRING) {
        enc_addc(b, '{');
        return enc_members(e, idx, depth, true, false);
    }

    /* Keys 1, 2, 3, ... as they come (a table's array part comes first, in
     * order) are written in one pass. Another key starts over with the two
     * passes below, which judge it; a value that fails is an error after
     * its keys are judged, as the two passes would report. */
    int base = lua_gettop(L) - 2;                     /* .. | k v */
    size_t mark = b->len;
    lua_Number want = 1;
    double max;
    enc_addc(b, '[');
    do {                                              /* .. k v */
        if (lua_type(L, -2) != LUA_TNUMBER || lua_tonumber(L, -2) != want) break;
        if (want > 1) enc_addc(b, ',');
        if (enc_value(e, lua_gettop(L), depth) < 0) {
            lua_settop(L, base);
            array_max(e, idx, is_arr, &max);          /* a bad key's error wins */
            return -1;
        }
        want++;
        lua_settop(L, base + 1);                      /* .. k */
    } while (lua_next(L, idx));
    if (lua_gettop(L) == base) {                      /* every key was the next one */
        enc_addc(b, ']');
        return 0;
    }
    lua_settop(L, base);
    b->len = mark;
    if (array_max(e, idx, is_arr, &max) < 0) return -1;
    enc_addc(b, '[');
    for (int i = 1; i <= (int)max; i++) {
        if (i > 1) enc_addc(b, ',');
        lua_rawgeti(L, idx, i);                       /* .. v */
        if (enc_value(e, lua_gettop(L), depth) < 0) return -1;
        lua_pop(L, 1);                                /* .. */
    }
    enc_addc(b, ']');
    return 0;
}

static int enc_value(struct enc *e, int idx, int depth) {
    lua_State *L = e->L;
    size_t n;
    const char *s;

    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        enc_add(e->b, "null", 4);
        return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) enc_add(e->b, "true", 4);
        else enc_add(e->b, "false", 5);
        return 0;
    case LUA_TNUMBER:
        return enc_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &n);
        return enc_string(e, s, n);
    case LUA_TTABLE:
        return enc_table(e, idx, depth + 1);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            enc_add(e->b, "null", 4);
            return 0;
        }
        return enc_fail(e, "cannot encode a lightuserdata other than null");
    default:
        sl_errf(e->err, e->errlen, "json: cannot encode a %s", lua_typename(L, lua_type(L, idx)));
        return -1;
    }
}

/* Sets e up to append to out: the array metatable pushed (the caller
 * restores the stack). False, err set, when the stack cannot grow. */
static bool enc_begin(struct enc *e, lua_State *L, struct sl_buf *out, char *err, size_t errlen,
                      bool sorted) {
    e->L = L;
    e->b = out;
    e->err = err;
    e->errlen = errlen;
    e->sorted = sorted;
    if (!lua_checkstack(L, 4)) {
        sl_errf(err, errlen, "json: Lua stack full");
        return false;
    }
    sl_json_push_array_mt(L);                         /* .. mt */
    e->mt_idx = lua_gettop(L);
    return true;
}

/* Ends an encoding that began with out->len at start: drops the partial
 * text on failure (ok false), keeps the NUL, restores the stack to top. */
static int enc_end(struct enc *e, bool ok, size_t start, int top) {
    if (!ok) e->b->len = start;
    if (e->b->data) e->b->data[e->b->len] = '\0';
    lua_settop(e->L, top);
    return ok ? SL_OK : SL_ERR;
}

static int encode(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen,
                  bool sorted) {
    struct enc e;
    int top = lua_gettop(L);
    size_t start = out->len;

    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = top + idx + 1;
    if (!enc_begin(&e, L, out, err, errlen, sorted)) return SL_ERR;
    return enc_end(&e, enc_value(&e, idx, 0) == 0, start, top);
}

int sl_json_encode_members_sorted(lua_State *L, int first, size_t n, const char *const *keys,
                                  struct sl_buf *out, char *err, size_t errlen) {
    struct enc e;
    int top = lua_gettop(L);
    size_t start = out->len;
    bool any = false;

    if (first < 0 && first > LUA_REGISTRYINDEX) first = top + first + 1;
    if (!enc_begin(&e, L, out, err, errlen, true)) return SL_ERR;
    enc_addc(out, '{');
    for (size_t i = 0; i < n; i++) {
        int idx = first + (int)i;
        if (lua_isnil(L, idx)) continue;
        if (any) enc_addc(out, ',');
        any = true;
        enc_add(out, keys[i], strlen(keys[i]));
        enc_addc(out, ':');
        if (enc_value(&e, idx, 0) < 0) return enc_end(&e, false, start, top);
    }
    enc_addc(out, '}');
    return enc_end(&e, true, start, top);
}

int sl_json_encode(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen) {
    return encode(L, idx, out, err, errlen, false);
}

int sl_json_encode_sorted(lua_State *L, int idx, struct sl_buf *out, char *err, size_t errlen) {
    return encode(L, idx, out, err, errlen, true);
}

/* ==================== Lua interface ==================== */

int sl_json_add_string(struct sl_buf *out, const char *s, size_t n, char *err, size_t errlen) {
    struct enc e = {NULL, out, 0, err, errlen, false};
    size_t len = out->len;
    if (enc_string(&e, s, n)) {
        out->len = len;
        return SL_ERR;
    }
    return SL_OK;
}

int sl_json_add_number(struct sl_buf *out, double x, char *err, size_t errlen) {
    struct enc e = {NULL, out, 0, err, errlen, false};
    size_t len = out->len;
    if (enc_number(&e, x)) {
        out->len = len;
        return SL_ERR;
    }
    return SL_OK;
}

void sl_json_push_array_mt(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, SL_REG_ARRAY_MT); /* mt */
    assert(lua_istable(L, -1) && "sl_json_init not called on this lua_State");
}

void sl_json_init(lua_State *L) {
    pthread_once(&c_locale_once, c_locale_create);
    lua_createtable(L, 0, 1);                         /* mt */
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__name");                    /* a name for debugging; no behaviour */
    lua_rawseti(L, LUA_REGISTRYINDEX, SL_REG_ARRAY_MT); /* */

    lua_pushlightuserdata(L, &decoder_key);           /* key */
    sl_json_push_array_mt(L);                         /* key mt */
    lua_pushcclosure(L, dec_protected, 1);            /* key decoder */
    lua_rawset(L, LUA_REGISTRYINDEX);                 /* */
}

int sl_lua_json_decode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[SL_ERRLEN];

    if (sl_json_decode(L, s, n, err, sizeof(err)) == SL_OK) return 1;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

int sl_lua_json_encode(lua_State *L) {
    struct sl_buf b = {0};
    char err[SL_ERRLEN];

    luaL_checkany(L, 1);
    if (sl_json_encode_sorted(L, 1, &b, err, sizeof(err)) != SL_OK) {
        sl_buf_free(&b);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, b.data, b.len);
    sl_buf_free(&b);
    return 1;
}

int sl_lua_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_createtable(L, 0, 0);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, SL_REG_ARRAY_MT); /* t mt */
    if (!lua_istable(L, -1)) return luaL_error(L, "sluice.array: the JSON codec is not initialised");
    lua_setmetatable(L, 1);                           /* t */
    return 1;
}

/* ==================== Scanning without Lua ==================== */

/* The part of the codec that needs no lua_State: the collector validates
 * tracker bodies with it and builds GET payloads, so a body the collector
 * accepts is a body sl_json_decode decodes, byte rule for byte rule (one
 * UTF-8 validator, one escape grammar, one number grammar). */

/* Reads the escape at p (the backslash) as dec_escape does: writes its UTF-8
 * to o (4 bytes of room) and *olen, returns the escape's length in the input,
 * or 0 when it is bad (then *why says why and *fault where, as the decoder
 * reports it). */
static size_t scan_escape(const unsigned char *p, const unsigned char *end, char o[4],
                          size_t *olen, const char **why, const unsigned char **fault) {
    unsigned cp, lo;
    static const char simple[] = "\"\"\\\\//b\bf\fn\nr\rt\t";

    *why = "bad string escape";
    *fault = end - p < 2 ? end : p + 1;
    if (end - p < 2) return 0;
    if (p[1] != 'u') {
        for (const char *s = simple; *s; s += 2)
            if (p[1] == (unsigned char)s[0]) {
                o[0] = s[1];
                *olen = 1;
                return 2;
            }
        return 0;
    }
    *fault = p;
    *why = "bad \\u escape (four hex digits expected)";
    if (end - p < 6 || hex4(p + 2, &cp) < 0) return 0;
    *why = "lone low surrogate in \\u escape";
    if (cp >= 0xDC00 && cp <= 0xDFFF) return 0;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        *why = "high surrogate not followed by a low surrogate";
        if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &lo) < 0 ||
            lo < 0xDC00 || lo > 0xDFFF)
            return 0;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp < 0x80) {
        o[0] = (char)cp;
        *olen = 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        *olen = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        *olen = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        *olen = 4;
    }
    return cp >= 0x10000 ? 12 : 6;
}

/* Checks the string whose opening quote is at p. Returns the byte after its
 * closing quote and sets *escaped, or NULL with *fault and *why set. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end,
                                        bool *escaped, const unsigned char **fault,
                                        const char **why) {
    char o[4];
    size_t olen, k;

    *escaped = false;
    for (p++;;) {
        p = scan_plain(p, end);
        *fault = p;
        if (p >= end) { *why = "unterminated string"; return NULL; }
        if (*p == '"') return p + 1;
        if (*p == '\\') {
            if (!(k = scan_escape(p, end, o, &olen, why, fault))) return NULL;
            *escaped = true;
            p += k;
        } else if (*p < 0x20) {
            *why = "control character in string";
            return NULL;
        } else {
            if (!(k = (size_t)utf8_len(p, end))) { *why = "invalid UTF-8 in string"; return NULL; }
            p += k;
        }
    }
}

int sl_json_scan(const char *s, size_t n, int max_depth, sl_json_scan_fn *fn, void *arg,
                 char *err, size_t errlen) {
    const unsigned char *start = (const unsigned char *)s, *p = start, *end = start + n;
    const unsigned char *fault = NULL, *next;
    const char *why = "value expected";
    unsigned char open[SL_JSON_MAX_DEPTH];            /* '{' or '[' per open container */
    enum { VALUE, AFTER, MEMBER } want = VALUE;
    struct sl_json_token t;
    int depth = 0;
    double num;

    if (max_depth <= 0 || max_depth > SL_JSON_MAX_DEPTH) max_depth = SL_JSON_MAX_DEPTH;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    for (;;) {
        t.depth = depth;
        t.escaped = false;
        fault = p;
        if (want == MEMBER) {                         /* "key" : */
            why = "object key expected";
            if (p >= end || *p != '"') goto fail;
            if (!(next = scan_string(p, end, &t.escaped, &fault, &why))) goto fail;
            t.kind = SL_JSON_TOK_KEY;
            t.raw = (const char *)p + 1;
            t.len = (size_t)(next - p) - 2;
            if (fn) fn(arg, &t);
            p = next;
            while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
            fault = p;
            why = "':' expected";
            if (p >= end || *p != ':') goto fail;
            p++;
            while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
            want = VALUE;
            continue;
        }
        if (want == AFTER) {                          /* , or a close */
            while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
            fault = p;
            if (depth == 0) {
                why = "trailing data after the value";
                if (p != end) goto fail;
                return SL_OK;
            }
            why = open[depth - 1] == '{' ? "',' or '}' expected" : "',' or ']' expected";
            if (p >= end) goto fail;
            if (*p == ',') {
                p++;
                while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
                want = open[depth - 1] == '{' ? MEMBER : VALUE;
                continue;
            }
            if (*p != (open[depth - 1] == '{' ? '}' : ']')) goto fail;
            t.kind = SL_JSON_TOK_CLOSE;
            t.depth = --depth;
            t.raw = (const char *)p++;
            t.len = 1;
            if (fn) fn(arg, &t);
            continue;
        }
        why = "value expected";                       /* a value */
        if (p >= end) goto fail;
        t.raw = (const char *)p;
        switch (*p) {
        case '{': case '[':
            why = "nesting too deep";
            if (depth + 1 > max_depth) goto fail;
            t.kind = *p == '{' ? SL_JSON_TOK_OBJECT : SL_JSON_TOK_ARRAY;
            t.len = 1;
            if (fn) fn(arg, &t);
            open[depth++] = *p++;
            while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
            if (p < end && *p == (open[depth - 1] == '{' ? '}' : ']')) {
                t.kind = SL_JSON_TOK_CLOSE;
                t.depth = --depth;
                t.raw = (const char *)p++;
                if (fn) fn(arg, &t);
                want = AFTER;
            } else {
                want = open[depth - 1] == '{' ? MEMBER : VALUE;
            }
            continue;
        case '"':
            if (!(next = scan_string(p, end, &t.escaped, &fault, &why))) goto fail;
            t.kind = SL_JSON_TOK_STRING;
            t.raw = (const char *)p + 1;
            t.len = (size_t)(next - p) - 2;
            break;
        case 't': case 'f': case 'n': {
            size_t l = *p == 'f' ? 5 : 4;
            const char *lit = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
            if ((size_t)(end - p) < l || memcmp(p, lit, l)) goto fail;
            t.kind = SL_JSON_TOK_LITERAL;
            t.len = l;
            next = p + l;
            break;
        }
        default: {
            size_t off = 0;
            if (*p != '-' && (*p < '0' || *p > '9')) goto fail;
            t.len = sl_json_number((const char *)p, (size_t)(end - p), &num, &off, &why);
            fault = p + off;
            if (!t.len) goto fail;
            t.kind = SL_JSON_TOK_NUMBER;
            next = p + t.len;
        }
        }
        if (fn) fn(arg, &t);
        p = next;
        want = AFTER;
    }
fail:
    if (fault >= end)
        sl_errf(err, errlen, "json: %s: unexpected end of input at byte %zu", why,
                (size_t)(fault - start));
    else
        sl_errf(err, errlen, "json: %s at byte %zu", why, (size_t)(fault - start));
    return SL_ERR;
}

size_t sl_json_unescape(const char *raw, size_t n, char *out) {
    const unsigned char *p = (const unsigned char *)raw, *end = p + n, *run = p;
    const unsigned char *fault;
    const char *why;
    char o[4];
    size_t olen, k, len = 0;

    while (p < end) {
        if (*p != '\\') { p++; continue; }
        memmove(out + len, run, (size_t)(p - run));
        len += (size_t)(p - run);
        k = scan_escape(p, end, o, &olen, &why, &fault);
        assert(k && "sl_json_unescape: text not checked by the scanner or the tape");
        memcpy(out + len, o, olen);
        len += olen;
        run = p += k;
    }
    memmove(out + len, run, (size_t)(p - run));
    return len + (size_t)(p - run);
}

size_t sl_json_utf8_check(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    int k;

    while (p < end) {
        if (*p < 0x80) { p++; continue; }
        if (!(k = utf8_len(p, end))) return (size_t)(p - (const unsigned char *)s);
        p += k;
    }
    return n;
}

void sl_json_add_string_lossy(struct sl_buf *out, const char *s, size_t n) {
    struct sl_buf fixed = {0};
    size_t at = 0, bad;

    while ((bad = at + sl_json_utf8_check(s + at, n - at)) < n) {
        sl_buf_add(&fixed, s + at, bad - at);
        sl_buf_adds(&fixed, "\xEF\xBF\xBD");          /* U+FFFD for the one byte */
        at = bad + 1;
    }
    if (at == 0) {
        sl_json_add_string(out, s, n, NULL, 0);       /* valid: cannot fail */
    } else {
        sl_buf_add(&fixed, s + at, n - at);
        sl_json_add_string(out, fixed.data, fixed.len, NULL, 0);
    }
    sl_buf_free(&fixed);
}
