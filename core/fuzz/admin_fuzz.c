/* admin_fuzz.c -- libFuzzer target for the admin listener's request parsing
 * (httpd.c's parser with the admin listener's bounds).
 *
 * The first input byte picks how the rest is cut into pieces (as reads from
 * a socket would be); the pieces are fed one after the other. Checked: the
 * parser never takes more than it is given, keeps within its memory bounds,
 * hands over only GET and HEAD requests with no body, and refuses with one
 * of the statuses it documents. */
#include "admin.h"
#include "httpd.h"
#include "sl.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct sl_httpd_parser p;
    const char *in = (const char *)data + 1;
    size_t n = size ? size - 1 : 0, off = 0, piece;

    if (size == 0) return 0;
    piece = (size_t)data[0] % 17 + 1;
    sl_httpd_parser_init(&p, SL_ADMIN_MAX_HEAD, 0, SL_ADMIN_METHODS);
    while (off < n && p.state != SL_HTTPD_P_DONE && p.state != SL_HTTPD_P_ERROR) {
        size_t len = n - off < piece ? n - off : piece;
        size_t used = sl_httpd_parse(&p, in + off, len);
        if (used > len) abort();
        if (used == 0 && p.state != SL_HTTPD_P_DONE && p.state != SL_HTTPD_P_ERROR)
            abort();   /* no progress: a caller would spin */
        off += used;
        if (p.head.cap > 2 * SL_ADMIN_MAX_HEAD + 64 || p.line.cap > 2 * SL_ADMIN_MAX_HEAD + 64 ||
            p.body.len > 0)
            abort();
    }
    if (p.state == SL_HTTPD_P_DONE &&
        (!(p.method & SL_ADMIN_METHODS) || sl_httpd_parser_header(&p, "Transfer-Encoding")))
        abort();
    if (p.state == SL_HTTPD_P_ERROR && p.error != 400 && p.error != 405 && p.error != 413 &&
        p.error != 417 && p.error != 431)
        abort();
    sl_httpd_parser_free(&p);
    return 0;
}
