/* mt.c -- MT19937 with CPython's seeding and derived draws (see mt.h).
 *
 * The generator is Matsumoto and Nishimura's reference algorithm; seeding,
 * random() and _randbelow() follow CPython's Modules/_randommodule.c and
 * Lib/random.py, which is what makes the streams equal. */
#include "mt.h"

#include <assert.h>

#define MT_M 397
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu
#define MT_MATRIX 0x9908b0dfu

static void init_genrand(struct sl_mt *mt, uint32_t s) {
    mt->s[0] = s;
    for (int i = 1; i < SL_MT_N; i++)
        mt->s[i] = 1812433253u * (mt->s[i - 1] ^ (mt->s[i - 1] >> 30)) + (uint32_t)i;
    mt->i = SL_MT_N;
}

void sl_mt_seed(struct sl_mt *mt, uint64_t seed) {
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    int klen = key[1] ? 2 : 1, i = 1, j = 0;

    init_genrand(mt, 19650218u);
    for (int k = SL_MT_N > klen ? SL_MT_N : klen; k; k--) {
        mt->s[i] = (mt->s[i] ^ ((mt->s[i - 1] ^ (mt->s[i - 1] >> 30)) * 1664525u)) + key[j] +
                   (uint32_t)j;
        i++;
        j++;
        if (i >= SL_MT_N) { mt->s[0] = mt->s[SL_MT_N - 1]; i = 1; }
        if (j >= klen) j = 0;
    }
    for (int k = SL_MT_N - 1; k; k--) {
        mt->s[i] = (mt->s[i] ^ ((mt->s[i - 1] ^ (mt->s[i - 1] >> 30)) * 1566083941u)) -
                   (uint32_t)i;
        i++;
        if (i >= SL_MT_N) { mt->s[0] = mt->s[SL_MT_N - 1]; i = 1; }
    }
    mt->s[0] = 0x80000000u; /* MSB is 1, assuring a non-zero initial array */
    mt->i = SL_MT_N;
}

static void regenerate(struct sl_mt *mt) {
    static const uint32_t mag[2] = {0, MT_MATRIX};
    uint32_t y;
    int k;
    for (k = 0; k < SL_MT_N - MT_M; k++) {
        y = (mt->s[k] & MT_UPPER) | (mt->s[k + 1] & MT_LOWER);
        mt->s[k] = mt->s[k + MT_M] ^ (y >> 1) ^ mag[y & 1];
    }
    for (; k < SL_MT_N - 1; k++) {
        y = (mt->s[k] & MT_UPPER) | (mt->s[k + 1] & MT_LOWER);
        mt->s[k] = mt->s[k + (MT_M - SL_MT_N)] ^ (y >> 1) ^ mag[y & 1];
    }
    y = (mt->s[SL_MT_N - 1] & MT_UPPER) | (mt->s[0] & MT_LOWER);
    mt->s[SL_MT_N - 1] = mt->s[MT_M - 1] ^ (y >> 1) ^ mag[y & 1];
    mt->i = 0;
}

uint32_t sl_mt_u32(struct sl_mt *mt) {
    uint32_t y;
    if (mt->i >= SL_MT_N) regenerate(mt);
    y = mt->s[mt->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

double sl_mt_random(struct sl_mt *mt) {
    uint32_t a = sl_mt_u32(mt) >> 5, b = sl_mt_u32(mt) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

uint32_t sl_mt_below(struct sl_mt *mt, uint64_t n) {
    int k = 0;
    uint32_t r;
    assert(n > 0 && n <= UINT32_MAX);
    while (n >> k) k++;                      /* n.bit_length(), 1..32 */
    do r = sl_mt_u32(mt) >> (32 - k);        /* getrandbits(k), k <= 32 */
    while (r >= n);
    return r;
}

int64_t sl_mt_randint(struct sl_mt *mt, int64_t a, int64_t b) {
    assert(a <= b && (uint64_t)(b - a) < UINT32_MAX);
    return a + (int64_t)sl_mt_below(mt, (uint64_t)(b - a) + 1);
}
