/* sl.c -- logging, checked allocation, time and buffers (see sl.h). */
#define _GNU_SOURCE
#include "sl.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum sl_log_level log_level = SL_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sl_log_set_level(enum sl_log_level level) { log_level = level; }

/* ==================== Rate limit per call site ==================== */

#define SL_LOG_SITES 256 /* Call sites tracked at once; beyond, lines are not limited. */
#define SL_LOG_PROBE 8   /* Slots probed for a site before giving up. */

/* One call site's window. */
struct site {
    uint64_t key;              /* the format's address or the site's hash; 0: free */
    int64_t start;             /* monotonic ms the window began */
    unsigned printed;          /* lines printed in the window */
    uint64_t suppressed;       /* lines counted, not printed */
    enum sl_log_level level;   /* of the last suppressed line, for the summary */
    char unit[16];
    char what[64];             /* the first line's start, to name the flood */
};

static struct site sites[SL_LOG_SITES];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static struct site *site_of(uint64_t key) {
    for (unsigned i = 0; i < SL_LOG_PROBE; i++) {
        struct site *s = &sites[(key + i * 0x9e3779b9u) % SL_LOG_SITES];
        if (s->key == key) return s;
        if (!s->key) {
            s->key = key;
            return s;
        }
    }
    return NULL;
}

static void emit(enum sl_log_level level, const char *unit, const char *msg) {
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", ts, now.tv_nsec / 1000000L,
            level_names[level], unit, msg);
}

/* Ends a site's window, reporting what it suppressed. Lock held. */
static void site_report(struct site *s) {
    if (s->suppressed) {
        char msg[128];
        snprintf(msg, sizeof(msg), "suppressed %llu similar messages in the last %d s: %s...",
                 (unsigned long long)s->suppressed, SL_LOG_WINDOW_MS / 1000, s->what);
        emit(s->level, s->unit, msg);
    }
    s->suppressed = 0;
    s->printed = 0;
}

static void vlog(enum sl_log_level level, const char *unit, uint64_t key,
                 const char *fmt, va_list ap) {
    char msg[4096];
    int64_t now = sl_mono_ms();

    if (level < log_level) return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    pthread_mutex_lock(&log_lock);
    struct site *s = site_of(key ? key : 1);
    if (!s) {
        emit(level, unit, msg);
    } else {
        if (!s->printed && !s->suppressed) s->start = now;
        if (now - s->start >= SL_LOG_WINDOW_MS) {
            site_report(s);
            s->start = now;
        }
        if (s->printed < SL_LOG_BURST) {
            if (!s->printed) snprintf(s->what, sizeof(s->what), "%.*s",
                                      (int)strcspn(msg, "\n"), msg);
            s->printed++;
            emit(level, unit, msg);
        } else {
            s->suppressed++;
            s->level = level;
            snprintf(s->unit, sizeof(s->unit), "%s", unit);
        }
    }
    pthread_mutex_unlock(&log_lock);
}

void sl_log(enum sl_log_level level, const char *unit, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(level, unit, (uint64_t)(uintptr_t)fmt, fmt, ap);
    va_end(ap);
}

void sl_log_site(enum sl_log_level level, const char *unit, const char *site,
                 const char *fmt, ...) {
    uint64_t h = 14695981039346656037ull;
    va_list ap;
    for (const char *p = site; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    va_start(ap, fmt);
    vlog(level, unit, h, fmt, ap);
    va_end(ap);
}

void sl_log_flush(int all) {
    int64_t now = sl_mono_ms();
    pthread_mutex_lock(&log_lock);
    for (size_t i = 0; i < SL_LOG_SITES; i++)
        if (sites[i].key && (sites[i].printed || sites[i].suppressed) &&
            (all || now - sites[i].start >= SL_LOG_WINDOW_MS))
            site_report(&sites[i]);
    pthread_mutex_unlock(&log_lock);
}

static void oom(size_t n) {
    sl_log(SL_LOG_ERROR, "alloc", "out of memory allocating %zu bytes", n);
    abort();
}

void *sl_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *sl_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *sl_pool_get(struct sl_pool *p) {
#if SL_POOL_ACTIVE
    void *obj = p->free;
    if (obj) {
        memcpy(&p->free, obj, sizeof(void *));
        if (p->free) __builtin_prefetch(p->free, 1);   /* the next get's: see lalloc.c */
        p->n--;
        return memset(obj, 0, p->size);
    }
#endif
    return sl_calloc(1, p->size);
}

void sl_pool_put(struct sl_pool *p, void *obj) {
    (void)p;
    if (!obj) return;
#if SL_POOL_ACTIVE
    if (p->n < p->max) {
        memcpy(obj, &p->free, sizeof(void *));
        p->free = obj;
        p->n++;
        return;
    }
#endif
    free(obj);
}

void *sl_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *sl_strdup(const char *s) { return sl_strndup(s, strlen(s)); }

char *sl_strndup(const char *s, size_t n) {
    char *p = sl_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void sl_strcpy_cut(char *dst, size_t size, const char *s) {
    size_t n = strnlen(s, size - 1);
    memmove(dst, s, n);
    dst[n] = '\0';
}

int64_t sl_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t sl_mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t sl_mono_coarse_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void buf_reserve(struct sl_buf *b, size_t extra) {
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = sl_realloc(b->data, cap);
    b->cap = cap;
}

void sl_buf_add(struct sl_buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sl_buf_addc(struct sl_buf *b, char c) {
    buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void sl_buf_adds(struct sl_buf *b, const char *s) { sl_buf_add(b, s, strlen(s)); }

void sl_buf_printf(struct sl_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

const char *sl_buf_cstr(struct sl_buf *b) {
    buf_reserve(b, 0);
    b->data[b->len] = '\0';
    return b->data;
}

void sl_buf_reset(struct sl_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void sl_buf_free(struct sl_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void sl_errf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    if (!buf || !n) return;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

int sl_read_file(const char *path, struct sl_buf *out, size_t max, char *err, size_t errlen) {
    char chunk[65536];
    size_t k, start = out->len;
    int ret = SL_ERR;
    FILE *f = fopen(path, "rb");
    if (!f) {
        sl_errf(err, errlen, "%s: %s", path, strerror(errno));
        return SL_ERR;
    }
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (out->len - start + k > max) {
            sl_errf(err, errlen, "%s: larger than %zu bytes", path, max);
            goto done;
        }
        sl_buf_add(out, chunk, k);
    }
    if (ferror(f)) {
        sl_errf(err, errlen, "%s: %s", path, strerror(errno));
        goto done;
    }
    sl_buf_cstr(out);
    ret = SL_OK;
done:
    fclose(f);
    return ret;
}
