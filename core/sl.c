/* sl.c -- logging, checked allocation, time and buffers (see sl.h). */
#define _GNU_SOURCE
#include "sl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum sl_log_level log_level = SL_LOG_INFO;

void sl_log_set_level(enum sl_log_level level) { log_level = level; }

void sl_log(enum sl_log_level level, const char *unit, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    char ts[32], msg[4096];
    struct timespec now;
    struct tm tm;
    va_list ap;

    if (level < log_level) return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", ts, now.tv_nsec / 1000000L,
            names[level], unit, msg);
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
