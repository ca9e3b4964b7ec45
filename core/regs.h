/* regs.h -- where the core keeps its values of each Lua VM in the registry.
 *
 * Negative integer keys: luaL_ref gives out positive ones only (and keeps
 * its free list at 0), and an integer key is found with one hash lookup,
 * where a light userdata key also costs its interning (about 150
 * instructions a lookup; the record path makes ~9 per record). */
#ifndef SL_REGS_H
#define SL_REGS_H

enum sl_reg {
    SL_REG_ARRAY_MT = -101,  /* json.c: the metatable of arrays */
    SL_REG_LAZY_META,        /* lazy.c: the metatable lazy values share */
    SL_REG_LAZY_SCRATCH,     /* lazy.c: the reusable parse buffer */
    SL_REG_PATH_CACHE,       /* step.c: the steps' path segments and getters */
    SL_REG_CTX_KIT,          /* pipeline.c: what contexts are made with */
};

#endif
