/* mt.h -- Python's `random` module, bit for bit, for reproducible data.
 *
 * The seed's interaction generator and its negative sampling ran on Python's
 * Mersenne Twister (MT19937). This unit gives the same stream for the same
 * seed: random.seed(n) for a non-negative integer n, random.random(),
 * random.randint(a, b) and random.choice(seq) (as an index) return exactly
 * what CPython 3 returns, so a file generated here equals the one Python
 * writes. Not for anything secret. Uses nothing but libc. */
#ifndef SL_MT_H
#define SL_MT_H

#include <stdint.h>

#define SL_MT_N 624 /* Words of MT19937 state. */

struct sl_mt {
    uint32_t s[SL_MT_N];  /* the state vector */
    int i;                /* next word of s to temper; SL_MT_N: regenerate */
};

/* random.seed(seed): init_by_array over the 32-bit words of seed, lowest
 * first (one word 0 for seed 0). */
void sl_mt_seed(struct sl_mt *mt, uint64_t seed);
/* The next raw 32-bit output (genrand_uint32). */
uint32_t sl_mt_u32(struct sl_mt *mt);
/* random.random(): a double in [0, 1) with 53 random bits. */
double sl_mt_random(struct sl_mt *mt);
/* random._randbelow(n) for 0 < n < 2^32: getrandbits(bit_length(n)) drawn
 * again until below n. random.choice(seq) is seq[sl_mt_below(mt, len)]. */
uint32_t sl_mt_below(struct sl_mt *mt, uint64_t n);
/* random.randint(a, b), a <= b, b - a < 2^32 - 1: a + _randbelow(b - a + 1). */
int64_t sl_mt_randint(struct sl_mt *mt, int64_t a, int64_t b);

#endif
