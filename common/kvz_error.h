/* kvz_error: the error convention of libkvzap.
 * Every fallible function returns an int status (KVZ_OK == 0, negative codes
 * below) and, when given a non-NULL kvz_error, fills it with one readable line
 * that names the file (or input) and the problem, e.g.
 *   "model.gguf: truncated: tensor data ends at 4096 but the file has 1000 bytes".
 * Callers print err.msg and exit non-zero; nothing prints on the library's behalf. */
#ifndef KVZ_ERROR_H
#define KVZ_ERROR_H

#include <stddef.h>

enum {
    KVZ_OK = 0,
    KVZ_EIO = -1,          /* open/read/write/mmap failed */
    KVZ_EFORMAT = -2,      /* file or text is malformed, truncated, inconsistent */
    KVZ_EUNSUPPORTED = -3, /* well-formed but not supported (architecture, quant type) */
    KVZ_ENOMEM = -4,       /* allocation failed */
    KVZ_EINVAL = -5,       /* bad argument or option */
    KVZ_ECONFIG = -6,      /* bad configuration (YAML) */
    KVZ_ENOTFOUND = -7     /* a named thing (tensor, key, token) does not exist */
};

#define KVZ_ERRMSG_MAX 1024

typedef struct kvz_error {
    int code;
    char msg[KVZ_ERRMSG_MAX];
} kvz_error;

/* Formats the message into err (if non-NULL) and returns code. */
int kvz_fail(kvz_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Short name of a status code ("io error", "format error", ...). */
const char *kvz_strerror(int code);

/* Clears err to KVZ_OK / empty message. */
void kvz_error_clear(kvz_error *err);

#endif
