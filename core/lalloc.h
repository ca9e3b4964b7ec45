/* lalloc.h -- the memory allocator of the rules' Lua VMs.
 *
 * A record leaves only garbage in its VM: about 25 small objects (tables,
 * their hash parts, strings, the tape's userdata) made and, one collection
 * later, freed. LuaJIT's own allocator spent ~110 instructions on each
 * free and ~55 on each allocation. This one keeps freed blocks on a list
 * per size class and hands them out again, a few instructions each way:
 * blocks of up to SL_LALLOC_SMALL bytes, in classes of 16 bytes (up to
 * 1 KiB) and of 256 bytes above, are cut from 128 KiB chunks taken from
 * malloc; bigger ones are malloc's.
 *
 * Memory: a class keeps what it held at its peak until the VM is closed
 * (a freed block serves only its own class); chunks are freed with the
 * allocator. One VM, one allocator, one thread: no lock.
 *
 *   struct sl_lalloc *a = sl_lalloc_create();
 *   lua_State *L = lua_newstate(sl_lalloc_fn, a);
 *   ...
 *   lua_close(L);
 *   sl_lalloc_destroy(a);
 */
#ifndef SL_LALLOC_H
#define SL_LALLOC_H

#include <stddef.h>

#define SL_LALLOC_SMALL 8192   /* bytes: larger blocks come from malloc */

struct sl_lalloc;

/* NULL when out of memory. */
struct sl_lalloc *sl_lalloc_create(void);
/* Frees every chunk: after lua_close of the VM that used it. NULL is fine. */
void sl_lalloc_destroy(struct sl_lalloc *a);

/* A lua_Alloc: ud is the struct sl_lalloc. */
void *sl_lalloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

/* Bytes the allocator holds from malloc (chunks and large blocks). */
size_t sl_lalloc_held(const struct sl_lalloc *a);

#endif
