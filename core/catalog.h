/* catalog.h -- the store's products as the model knows them: handle -> GID.
 *
 * A catalog is an ordered list of products, each a Shopify handle (the URL
 * slug the tracker sees) and a product GID (what the storefront and the
 * Admin API take). Products are numbered 0..n-1 in list order; the model
 * works on these numbers. Catalogs are read from JSON
 * (examples/catalog.json: {"products": [{"handle", "gid", ...}, ...]}) with
 * json.c, or built in memory. Handles are interned with intern.c. */
#ifndef SL_CATALOG_H
#define SL_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "sl.h"

#define SL_CATALOG_NONE UINT32_MAX    /* Not a product number: "no such handle". */
#define SL_CATALOG_MAX_PRODUCTS 1000000 /* Largest catalog accepted. */
#define SL_CATALOG_MAX_FIELD 1024     /* Longest handle or GID accepted, bytes. */

struct sl_catalog;

/* An empty catalog. Never NULL (allocation aborts). */
struct sl_catalog *sl_catalog_create(void);
void sl_catalog_destroy(struct sl_catalog *c);

/* Appends a product; its number is the count before the call. SL_ERR (and
 * nothing added) for an empty or too long handle or GID, a handle already
 * there, or a full catalog. */
int sl_catalog_add(struct sl_catalog *c, const char *handle, size_t hlen, const char *gid,
                   size_t glen, char *err, size_t errlen);

/* Reads a catalog file. NULL with err naming the file and the product
 * ("products[3].gid: expected a non-empty string") on any problem. */
struct sl_catalog *sl_catalog_load(const char *path, char *err, size_t errlen);

size_t sl_catalog_count(const struct sl_catalog *c);
/* The number of handle s[0..len), or SL_CATALOG_NONE. O(len) on average. */
uint32_t sl_catalog_find(const struct sl_catalog *c, const char *s, size_t len);
const char *sl_catalog_handle(const struct sl_catalog *c, uint32_t i);
const char *sl_catalog_gid(const struct sl_catalog *c, uint32_t i);

/* FNV-1a 64 over every product's handle and GID, each NUL-terminated, in
 * order: two catalogs with the same hash number the same products alike.
 * Part of the model file format: never change it. */
uint64_t sl_catalog_hash(const struct sl_catalog *c);
/* FNV-1a 64 of p[0..n) continuing from h (start with SL_CATALOG_FNV_INIT). */
uint64_t sl_catalog_fnv(uint64_t h, const void *p, size_t n);
#define SL_CATALOG_FNV_INIT UINT64_C(0xcbf29ce484222325) /* FNV-1a 64 offset basis. */

/* Bytes allocated for the catalog. */
size_t sl_catalog_bytes(const struct sl_catalog *c);

#endif
