/* kvz_utf8: strict UTF-8 handling shared by every module that takes text
 * (tokenizer, chat templates, YAML configs): validation that names the first
 * bad byte and why, and single-code-point decode/encode. Well-formedness is
 * the Unicode table of well-formed byte sequences (no overlongs, no
 * surrogates, nothing above U+10FFFF). */
#ifndef KVZ_UTF8_H
#define KVZ_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* KVZ_OK, or KVZ_EFORMAT with *bad_offset = the first bad byte and *why = a
 * short reason ("truncated sequence", "overlong encoding", "UTF-16
 * surrogate", ...). Either out pointer may be NULL. */
int kvz_utf8_validate(const char *s, size_t len, size_t *bad_offset, const char **why);

/* Length of the valid sequence at s[0..n) (> 0), or -(length of the maximal
 * invalid subpart) (< 0); n >= 1. */
long kvz_utf8_step(const unsigned char *s, size_t n);

/* A valid UTF-8 spelling of arbitrary bytes (file names are bytes): every
 * backslash becomes two backslashes and every byte that is not part of valid
 * UTF-8 (and NUL) becomes a backslash, 'x' and two upper-case hex digits; valid UTF-8 is copied. Unique
 * and reversible (kvz_utf8_unescape_bytes); malloc'ed, NULL on OOM. */
char *kvz_utf8_escape_bytes(const char *s, size_t len);
/* The bytes kvz_utf8_escape_bytes was given (*len set; NUL-terminated),
 * or NULL when s is not such an escape or on OOM. */
char *kvz_utf8_unescape_bytes(const char *s, size_t *len);

/* Decodes one code point from a sequence already known to be valid. */
size_t kvz_utf8_decode(const unsigned char *s, uint32_t *cp);
/* Encodes cp (<= 0x10FFFF) into out[0..4); returns the byte count. */
size_t kvz_utf8_encode(uint32_t cp, char *out);

#endif
