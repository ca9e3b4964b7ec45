/* test.h -- a tiny TAP test harness for the core's unit tests.
 *
 * Each test binary prints one "ok N - name" or "not ok N - name" line per
 * check, in TAP, then "1..N"; `make test` counts them. Use TEST() for a check
 * and TEST_DONE() at the end of main. */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <stdio.h>

static int test_n, test_failed;

#define TEST(name, cond) do {                                               \
    ++test_n;                                                               \
    if (cond) printf("ok %d - %s\n", test_n, name);                         \
    else {                                                                  \
        ++test_failed;                                                      \
        printf("not ok %d - %s\n#   %s:%d: expected %s\n", test_n, name,    \
               __FILE__, __LINE__, #cond);                                  \
    }                                                                       \
} while (0)

#define TEST_DONE() (printf("1..%d\n", test_n), test_failed ? 1 : 0)

/* Writes text to dir/name (a fixture file of the test). */
static inline void test_put(const char *dir, const char *name, const char *text) {
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

#endif
