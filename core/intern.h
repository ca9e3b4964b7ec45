/* intern.h -- a refcounted table of interned strings.
 *
 * Gives each distinct byte string a small integer id, so that a string
 * repeated in many places (a product slug in a million window entries) is
 * stored once. Every sl_intern_add() and sl_intern_ref() takes one reference;
 * sl_intern_unref() drops one, and the string is freed with its last
 * reference. Ids of freed strings are reused. Strings may hold any bytes,
 * NUL included. Uses sl.h for allocation; used by window.c. */
#ifndef SL_INTERN_H
#define SL_INTERN_H

#include <stddef.h>
#include <stdint.h>

struct sl_intern;

/* Creates an empty table. Never returns NULL (allocation aborts). */
struct sl_intern *sl_intern_create(void);
/* Frees the table and every string in it, referenced or not. NULL is ok. */
void sl_intern_destroy(struct sl_intern *in);

/* Returns the id of the string s[0..len), adding it if absent, and takes one
 * reference to it. Average O(len). */
uint32_t sl_intern_add(struct sl_intern *in, const char *s, size_t len);
/* Returns the id of s[0..len) without taking a reference, or
 * SL_INTERN_NONE when the string is not in the table. */
uint32_t sl_intern_find(const struct sl_intern *in, const char *s, size_t len);
#define SL_INTERN_NONE UINT32_MAX /* Not an id: "no such string". */

/* Takes one more reference to a live id. */
void sl_intern_ref(struct sl_intern *in, uint32_t id);
/* Drops one reference to a live id; the string is freed with the last one. */
void sl_intern_unref(struct sl_intern *in, uint32_t id);

/* The bytes of a live id, NUL-terminated; *len (if not NULL) gets the length.
 * The pointer stays valid until the id's last reference is dropped. */
const char *sl_intern_str(const struct sl_intern *in, uint32_t id, size_t *len);
/* References held on a live id. */
uint32_t sl_intern_refs(const struct sl_intern *in, uint32_t id);

/* Number of live strings. */
size_t sl_intern_count(const struct sl_intern *in);
/* Bytes requested from the allocator for the table and its strings. */
size_t sl_intern_bytes(const struct sl_intern *in);

/* A 64-bit hash of s[0..len) mixed with seed; shared with window.c. Not
 * cryptographic. */
uint64_t sl_intern_hash(const void *s, size_t len, uint64_t seed);

#endif
