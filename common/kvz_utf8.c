/* kvz_utf8: strict UTF-8 validation and code-point decode/encode (see kvz_utf8.h). */
#include "kvz_utf8.h"

#include <stdlib.h>
#include <string.h>

#include "kvz_error.h"


size_t kvz_utf8_decode(const unsigned char *s, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

size_t kvz_utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Width of a sequence led by b (0: b cannot lead) and the allowed range of
 * the second byte, as in the Unicode table of well-formed sequences. */
static int utf8_lead(unsigned char b, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        if (b == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        if (b == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

/* Length of the valid sequence at s[0..n) (>0), or -(length of the maximal
 * invalid subpart) (<0). */
long kvz_utf8_step(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    unsigned char lo, hi;
    int w = utf8_lead(s[0], &lo, &hi);
    if (w == 0)
        return -1;
    if (n < 2 || s[1] < lo || s[1] > hi)
        return -1;
    for (int k = 2; k < w; k++)
        if ((size_t)k >= n || (s[k] & 0xC0) != 0x80)
            return -k;
    return w;
}

static const char *utf8_reason(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    if (b >= 0x80 && b <= 0xBF)
        return "unexpected continuation byte";
    if (b == 0xC0 || b == 0xC1)
        return "overlong encoding";
    if (b >= 0xF5)
        return "byte that never appears in UTF-8";
    unsigned char lo, hi;
    int w = utf8_lead(b, &lo, &hi);
    for (int k = 1; k < w; k++) {
        if ((size_t)k >= n)
            return "truncated sequence at end of text";
        if (k == 1 && (s[1] & 0xC0) == 0x80 && (s[1] < lo || s[1] > hi)) {
            if (b == 0xED)
                return "UTF-16 surrogate";
            if (b == 0xF4)
                return "code point above U+10FFFF";
            return "overlong encoding";
        }
        if ((s[k] & 0xC0) != 0x80)
            return "truncated sequence (missing continuation byte)";
    }
    return "invalid sequence";
}

int kvz_utf8_validate(const char *text, size_t len, size_t *bad_offset, const char **why)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        long step = kvz_utf8_step(s + i, len - i);
        if (step < 0) {
            if (bad_offset)
                *bad_offset = i;
            if (why)
                *why = utf8_reason(s + i, len - i);
            return KVZ_EFORMAT;
        }
        i += (size_t)step;
    }
    return KVZ_OK;
}

char *kvz_utf8_escape_bytes(const char *s, size_t len)
{
    char *out = malloc(4 * len + 1), *o = out;
    if (!out)
        return NULL;
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len;) {
        long step = kvz_utf8_step((const unsigned char *)s + i, len - i);
        if (step > 0 && s[i] != '\\' && s[i] != '\0') {
            memcpy(o, s + i, (size_t)step);
            o += step;
            i += (size_t)step;
        } else if (step > 0 && s[i] == '\\') {
            *o++ = '\\';
            *o++ = '\\';
            i++;
        } else { /* not UTF-8, or a NUL byte (kept out of the C string) */
            step = step > 0 ? -1 : step;
            for (long k = 0; k < -step; k++, i++) {
                unsigned char b = (unsigned char)s[i];
                *o++ = '\\';
                *o++ = 'x';
                *o++ = hex[b >> 4];
                *o++ = hex[b & 15];
            }
        }
    }
    *o = '\0';
    return out;
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

char *kvz_utf8_unescape_bytes(const char *s, size_t *len)
{
    size_t n = strlen(s), k = 0;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            out[k++] = s[i];
        } else if (i + 1 < n && s[i + 1] == '\\') {
            out[k++] = '\\';
            i++;
        } else if (i + 3 < n && s[i + 1] == 'x' && hex_value(s[i + 2]) >= 0 &&
                   hex_value(s[i + 3]) >= 0) {
            out[k++] = (char)(hex_value(s[i + 2]) * 16 + hex_value(s[i + 3]));
            i += 3;
        } else {
            free(out);
            return NULL;
        }
    }
    out[k] = '\0';
    if (len)
        *len = k;
    return out;
}
