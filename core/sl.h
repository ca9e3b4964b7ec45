/* sl.h -- definitions shared by every unit of the sluice core.
 *
 * Return codes, logging and checked allocation. Uses nothing but libc. */
#ifndef SL_H
#define SL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define SL_OK 0    /* The operation succeeded. */
#define SL_ERR -1  /* The operation failed; details are in the caller's buffer. */

#define SL_VERSION "0.1.0" /* The release, in /status and `sluice --version`. */
#define SL_ERRLEN 512 /* Size of the error buffers callers pass to units. */

enum sl_log_level { SL_LOG_DEBUG, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR };

#define SL_LOG_BURST 10          /* Lines one call site may print per window. */
#define SL_LOG_WINDOW_MS 10000   /* The rate-limit window of a call site. */

/* Logs one line to stderr: time, level, unit, message. Never fails.
 * Rate-limited per call site (its format string): past SL_LOG_BURST lines
 * in SL_LOG_WINDOW_MS, lines are counted, not printed, and the next line of
 * that site (or sl_log_flush) says "suppressed N similar messages", so a
 * flood of bad records cannot fill a disk. Thread-safe. */
void sl_log(enum sl_log_level level, const char *unit, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As sl_log, with the call site named by site (e.g. a Lua "file:line"). */
void sl_log_site(enum sl_log_level level, const char *unit, const char *site,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Prints the count of each site whose window ended (every site: all) with
 * lines suppressed. Call it now and then (the worker's timer) and at exit,
 * so a flood that stopped still reports what it hid. */
void sl_log_flush(int all);
/* Sets the lowest level that sl_log prints (default SL_LOG_INFO). */
void sl_log_set_level(enum sl_log_level level);

/* Checked allocation: on failure these log and abort, so callers never see
 * NULL (as Redis zmalloc's out-of-memory handler). */
void *sl_malloc(size_t n);
void *sl_calloc(size_t n, size_t size);

/* A free list of objects of one size, for what every record allocates and
 * frees (its pipeline record, contexts, produce reports): get returns a
 * zeroed object, put keeps up to max of them for the next get and frees the
 * rest. One thread only (the event loop's). Under AddressSanitizer get and
 * put are calloc and free, so a use after put is still caught. The objects
 * kept stay reachable from the pool and live as long as the process. */
struct sl_pool {
    size_t size;      /* bytes of one object */
    size_t max;       /* objects kept at most */
    size_t n;         /* objects kept now */
    void *free;       /* the first kept object; each starts with the next's address */
};
#if defined(__SANITIZE_ADDRESS__)
#define SL_POOL_ACTIVE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_POOL_ACTIVE 0
#endif
#endif
#ifndef SL_POOL_ACTIVE
#define SL_POOL_ACTIVE 1
#endif
#define SL_POOL_INIT(type, most) {sizeof(type) < sizeof(void *) ? sizeof(void *) : sizeof(type), (most), 0, NULL}
void *sl_pool_get(struct sl_pool *p);
void sl_pool_put(struct sl_pool *p, void *obj);
void *sl_realloc(void *p, size_t n);
char *sl_strdup(const char *s);
char *sl_strndup(const char *s, size_t n);
/* Copies s into dst[0..size), cut to size - 1 bytes and NUL-terminated, as
 * snprintf(dst, size, "%s", s) does, without its cost on a per-record path.
 * size must be at least 1. */
void sl_strcpy_cut(char *dst, size_t size, const char *s);

/* Wall-clock and monotonic time in milliseconds. */
int64_t sl_now_ms(void);
int64_t sl_mono_ms(void);
/* sl_mono_ms at the kernel tick's resolution (a few ms, never ahead of
 * sl_mono_ms), for marks taken per record where the cost of a clock read
 * shows. */
int64_t sl_mono_coarse_ms(void);

/* Growable byte buffer. A zeroed struct is an empty buffer; sl_buf_free
 * releases it. */
struct sl_buf {
    char *data;   /* NUL-terminated when len > 0 or after sl_buf_cstr */
    size_t len;   /* bytes used */
    size_t cap;   /* bytes allocated */
};
void sl_buf_add(struct sl_buf *b, const void *p, size_t n);
void sl_buf_addc(struct sl_buf *b, char c);
void sl_buf_adds(struct sl_buf *b, const char *s);
void sl_buf_printf(struct sl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *sl_buf_cstr(struct sl_buf *b);
void sl_buf_reset(struct sl_buf *b);
void sl_buf_free(struct sl_buf *b);

/* snprintf into an error buffer of size n; NULL buf is allowed. */
void sl_errf(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads the whole file at path into out (appending), at most max bytes.
 * SL_ERR with err naming the file on a read error or a larger file. */
int sl_read_file(const char *path, struct sl_buf *out, size_t max, char *err, size_t errlen);

#endif
