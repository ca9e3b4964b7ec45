/* sl_test.c -- the logger's rate limit per call site; the object pool; the
 * bounded string copy. */
#define _GNU_SOURCE
#include "sl.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What stderr received since the last call (stderr is a temporary file). */
static char *captured(void) {
    fflush(stderr);
    off_t n = lseek(2, 0, SEEK_CUR);
    char *s = calloc(1, (size_t)n + 1);
    if (pread(2, s, (size_t)n, 0) != n) s[0] = '\0';
    if (ftruncate(2, 0) || lseek(2, 0, SEEK_SET)) s[0] = '\0';
    return s;
}

static int count(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static void flood(int n) {
    for (int i = 0; i < n; i++) sl_log(SL_LOG_WARN, "pipeline", "record %d failed\ntraceback", i);
}

struct thing {
    char name[40];
    long n;
};

static void test_pool(void) {
    struct sl_pool p = SL_POOL_INIT(struct thing, 2);
    struct thing *a = sl_pool_get(&p), *b = sl_pool_get(&p), *c = sl_pool_get(&p);
    TEST("pool: get gives distinct zeroed objects", a != b && b != c && !a->n && !a->name[0]);
    strcpy(a->name, "used");
    a->n = 7;
    sl_pool_put(&p, a);
    sl_pool_put(&p, b);
    sl_pool_put(&p, c);                          /* past max: freed */
    sl_pool_put(&p, NULL);
    TEST("pool: keeps at most max objects (none under the sanitizer)", p.n == (SL_POOL_ACTIVE ? 2 : 0));
    struct thing *d = sl_pool_get(&p), *e = sl_pool_get(&p), *g = sl_pool_get(&p);
    TEST("pool: an object got again is zeroed", !d->n && !d->name[0] && !e->n && !e->name[0]);
    TEST("pool: empty, get allocates", p.n == 0 && g && g != d && g != e);
    free(d);                                     /* plain memory: free works too */
    free(e);
    free(g);
}

static void test_strcpy_cut(void) {
    char four[4], big[16];
    memset(four, 'x', sizeof(four));
    sl_strcpy_cut(four, sizeof(four), "abcdef");
    TEST("strcpy_cut: cut to size - 1 bytes and terminated", !strcmp(four, "abc"));
    sl_strcpy_cut(four, sizeof(four), "abc");
    TEST("strcpy_cut: a string that just fits is whole", !strcmp(four, "abc"));
    sl_strcpy_cut(big, sizeof(big), "");
    TEST("strcpy_cut: the empty string", big[0] == '\0');
    sl_strcpy_cut(big, sizeof(big), ".2.1");
    TEST("strcpy_cut: a short string is copied as is", !strcmp(big, ".2.1"));
    sl_strcpy_cut(big, 1, "abc");
    TEST("strcpy_cut: size 1 gives the empty string", big[0] == '\0');
}

int main(void) {
    test_pool();
    test_strcpy_cut();
    FILE *f = tmpfile();
    int saved = dup(2);
    dup2(fileno(f), 2);

    flood(1000);
    char *s = captured();
    int burst = count(s, "failed\ntraceback");
    free(s);
    sl_log(SL_LOG_INFO, "other", "another site");
    s = captured();
    int other = count(s, "another site");
    free(s);
    sl_log_site(SL_LOG_INFO, "lua", "rule.lua:3", "%s", "from line 3");
    sl_log_site(SL_LOG_INFO, "lua", "rule.lua:4", "%s", "from line 4");
    for (int i = 0; i < 50; i++) sl_log_site(SL_LOG_INFO, "lua", "rule.lua:3", "%s", "again");
    s = captured();
    int line3 = count(s, "again"), line4 = count(s, "from line 4");
    free(s);
    sl_log_flush(0);
    s = captured();
    int early = (int)strlen(s);
    free(s);
    sl_log_flush(1);
    s = captured();
    int reported = count(s, "suppressed 990 similar messages") &&
                   count(s, "record 0 failed...") && count(s, "suppressed 41 similar");
    free(s);
    flood(3);
    s = captured();
    int fresh = count(s, "failed\ntraceback");
    free(s);

    dup2(saved, 2);
    close(saved);
    fclose(f);
    TEST("a flood from one site prints SL_LOG_BURST lines", burst == SL_LOG_BURST);
    TEST("another site is not limited by it", other == 1);
    TEST("sites named by sl_log_site are limited apart", line3 == SL_LOG_BURST - 1 && line4 == 1);
    TEST("a window not yet over reports nothing", early == 0);
    TEST("flushing reports the count suppressed per site, naming the first line", reported);
    TEST("after a report the site prints again", fresh == 3);
    return TEST_DONE();
}
