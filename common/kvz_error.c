/* kvz_error: formatting of error messages (see kvz_error.h). */
#include "kvz_error.h"

#include <stdarg.h>
#include <stdio.h>

int kvz_fail(kvz_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *kvz_strerror(int code)
{
    switch (code) {
    case KVZ_OK: return "ok";
    case KVZ_EIO: return "i/o error";
    case KVZ_EFORMAT: return "format error";
    case KVZ_EUNSUPPORTED: return "unsupported";
    case KVZ_ENOMEM: return "out of memory";
    case KVZ_EINVAL: return "invalid argument";
    case KVZ_ECONFIG: return "configuration error";
    case KVZ_ENOTFOUND: return "not found";
    default: return "unknown error";
    }
}

void kvz_error_clear(kvz_error *err)
{
    if (err) {
        err->code = KVZ_OK;
        err->msg[0] = '\0';
    }
}
