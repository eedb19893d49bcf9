/* corpus_scan: the input side of corpus selection. Lists the regular files of
 * a corpus path (recursively, sorted by path, hidden entries skipped), and
 * reads each one as documents: a ".jsonl" file line by line (lines may be
 * any length; json_loadb per line), any other file whole. Every record is
 * checked to be UTF-8 before it is parsed, so a bad byte is reported as
 * file:line and byte offset rather than as a JSON syntax error.
 *
 * Compressed files (kind by name, see kvz_corpus_compression): ".gz" is
 * decompressed with zlib's inflate (gzip framing, CRC and length checked;
 * concatenated members are read one after another as gzip -d does; zero
 * padding after the last member is ignored, other trailing bytes are an
 * error), ".zst" with ZSTD_decompressStream (any number of frames; zstd's
 * default window limit of 128 MiB applies). Both stream through fixed 64 KiB
 * buffers: a ".jsonl.gz"/".jsonl.zst" costs the buffers plus the longest
 * line, as an uncompressed ".jsonl" does; a compressed text file is one
 * document and is decompressed whole, as a text file is read whole. A
 * truncated or corrupt stream is one error naming the file, the byte of the
 * compressed file and the JSONL line reached. A 0-byte file is empty content. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "../common/kvz_file.h"
#include "../common/kvz_utf8.h"
#include "../model/kvz_json.h"
#include "corpus_internal.h"

uint64_t kvz_corpus_fnv1a64(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int has_suffix(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

int kvz_corpus_compression(const char *path, size_t *suffix_len)
{
    size_t n = strlen(path), k = 0;
    int kind = KVZ_CORPUS_PLAIN;
    if (has_suffix(path, n, ".gz")) {
        kind = KVZ_CORPUS_GZIP;
        k = 3;
    } else if (has_suffix(path, n, ".zst")) {
        kind = KVZ_CORPUS_ZSTD;
        k = 4;
    }
    if (suffix_len)
        *suffix_len = k;
    return kind;
}

int kvz_corpus_is_jsonl(const char *path)
{
    size_t k;
    kvz_corpus_compression(path, &k);
    return has_suffix(path, strlen(path) - k, ".jsonl");
}

/* --- listing --- */

typedef struct file_list {
    char **paths;
    size_t n, cap;
} file_list;

static int list_push(file_list *l, char *path, kvz_error *err)
{
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory listing files");
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->paths, cap * sizeof *p);
        if (!p) {
            free(path);
            return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory listing files");
        }
        l->paths = p;
        l->cap = cap;
    }
    l->paths[l->n++] = path;
    return KVZ_OK;
}

static int walk_dir(const char *dir, file_list *l, kvz_error *err);

/* Adds child (owned) to the list, or walks it when it is a directory. */
static int visit_child(char *child, file_list *l, kvz_error *err)
{
    struct stat st, lst;
    if (stat(child, &st) != 0 || lstat(child, &lst) != 0) {
        int rc = kvz_fail(err, KVZ_EIO, "%s: cannot stat: %s", child, strerror(errno));
        free(child);
        return rc;
    }
    if (S_ISDIR(st.st_mode)) {
        int rc = S_ISLNK(lst.st_mode) ? KVZ_OK : walk_dir(child, l, err);
        free(child);
        return rc;
    }
    if (S_ISREG(st.st_mode))
        return list_push(l, child, err);
    free(child);
    return KVZ_OK;
}

static int walk_dir(const char *dir, file_list *l, kvz_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = KVZ_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue; /* hidden, "." and ".." */
        rc = visit_child(kvz_path_join(dir, e->d_name), l, err);
    }
    closedir(d);
    return rc;
}

static int cmp_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void kvz_corpus_free_files(char **files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
}

int kvz_corpus_list_files(const char *path, char ***files, size_t *n, kvz_error *err)
{
    struct stat st;
    *files = NULL;
    *n = 0;
    if (stat(path, &st) != 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", path, strerror(errno));
    file_list l = {0};
    int rc;
    if (S_ISDIR(st.st_mode))
        rc = walk_dir(path, &l, err);
    else if (S_ISREG(st.st_mode))
        rc = list_push(&l, strdup(path), err);
    else
        rc = kvz_fail(err, KVZ_EIO, "%s: not a regular file or directory", path);
    if (rc) {
        kvz_corpus_free_files(l.paths, l.n);
        return rc;
    }
    if (l.n > 1)
        qsort(l.paths, l.n, sizeof *l.paths, cmp_paths);
    *files = l.paths;
    *n = l.n;
    return KVZ_OK;
}

/* --- reading --- */

/* "dir/code.jsonl" -> "code", "dir/code.jsonl.gz" -> "code" (malloc'ed). */
static char *base_name_no_ext(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t k, n = strlen(base);
    kvz_corpus_compression(base, &k);
    n -= k;
    const char *dot = NULL;
    for (size_t i = n; i-- > 0;)
        if (base[i] == '.') {
            dot = base + i;
            break;
        }
    n = dot && dot != base ? (size_t)(dot - base) : n;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, base, n);
        s[n] = '\0';
    }
    return s;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int string_field(const char *path, size_t line, json_t *obj, const char *name,
                        const json_t **out, kvz_error *err)
{
    json_t *v = json_object_get(obj, name);
    *out = v;
    if (v && !json_is_string(v))
        return kvz_fail(err, KVZ_EFORMAT, "%s:%zu: field \"%s\" is not a string (found %s)", path,
                        line, name, json_kind(v));
    return KVZ_OK;
}

static int check_fields(const char *path, size_t line, json_t *root, const kvz_corpus_fields *f,
                        const json_t **text, const json_t **subset, kvz_error *err)
{
    if (!json_is_object(root))
        return kvz_fail(err, KVZ_EFORMAT, "%s:%zu: not a JSON object (found %s)", path, line,
                        json_kind(root));
    int rc = string_field(path, line, root, f->text_field, text, err);
    if (!rc && !*text)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s:%zu: no \"%s\" field", path, line, f->text_field);
    *subset = NULL;
    if (!rc && f->subset_field) {
        json_t *s = json_object_get(root, f->subset_field);
        if (s && !json_is_null(s)) /* null counts as absent */
            rc = string_field(path, line, root, f->subset_field, subset, err);
    }
    return rc;
}

int kvz_corpus_parse_line(const char *path, size_t line, const char *buf, size_t len,
                          const kvz_corpus_fields *f, const char *default_subset, json_t **root,
                          const char **text, size_t *text_len, const char **subset,
                          kvz_error *err)
{
    json_error_t jerr;
    kvz_json_mark mark = kvz_json_mark_now(); /* a failed allocation can drop a character of
                                                * a string behind a successful load */
    json_t *r = json_loadb(buf, len, JSON_ALLOW_NUL, &jerr);
    if (kvz_json_failed_since(mark) || (!r && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(r);
        return kvz_fail(err, KVZ_ENOMEM, "%s:%zu: out of memory", path, line);
    }
    if (!r)
        return kvz_fail(err, KVZ_EFORMAT, "%s:%zu: not valid JSON: %s (column %d)", path, line,
                        jerr.text, jerr.column);
    const json_t *t, *s;
    int rc = check_fields(path, line, r, f, &t, &s, err);
    if (rc) {
        json_decref(r);
        return rc;
    }
    *root = r;
    *text = json_string_value(t);
    *text_len = json_string_length(t);
    *subset = s ? json_string_value(s) : default_subset;
    return KVZ_OK;
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

/* --- streaming decompression --- */

#define ZCHUNK ((size_t)64 << 10)

/* A file read as its (decompressed) bytes, through fixed-size buffers. */
typedef struct zsrc {
    const char *path;
    int kind;            /* KVZ_CORPUS_* */
    FILE *fp;
    unsigned char *in;   /* compressed input buffer [ZCHUNK] */
    size_t in_pos, in_len;
    uint64_t in_off;     /* file offset of in[0] */
    int in_eof;
    z_stream zs;         /* gzip */
    int zs_ready, in_member;
    size_t members;
    ZSTD_DCtx *zd;       /* zstd */
    size_t zret;         /* last ZSTD_decompressStream result; 0 = frame boundary */
    uint64_t frame_at;   /* file offset where the current zstd frame starts */
} zsrc;

static void zsrc_close(zsrc *z)
{
    if (z->zs_ready)
        inflateEnd(&z->zs);
    ZSTD_freeDCtx(z->zd);
    free(z->in);
    if (z->fp)
        fclose(z->fp);
    memset(z, 0, sizeof *z);
}

static int zsrc_open(zsrc *z, const char *path, kvz_error *err)
{
    memset(z, 0, sizeof *z);
    z->path = path;
    z->kind = kvz_corpus_compression(path, NULL);
    z->fp = fopen(path, "rb");
    if (!z->fp)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (z->kind == KVZ_CORPUS_PLAIN)
        return KVZ_OK;
    int ok = (z->in = malloc(ZCHUNK)) != NULL;
    if (ok && z->kind == KVZ_CORPUS_GZIP)
        ok = z->zs_ready = inflateInit2(&z->zs, 16 + MAX_WBITS) == Z_OK; /* gzip only */
    if (ok && z->kind == KVZ_CORPUS_ZSTD)
        ok = (z->zd = ZSTD_createDCtx()) != NULL;
    if (!ok) {
        zsrc_close(z);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    return KVZ_OK;
}

/* Refills the input buffer once it is used up. */
static int zsrc_fill(zsrc *z, kvz_error *err)
{
    if (z->in_pos < z->in_len || z->in_eof)
        return KVZ_OK;
    z->in_off += z->in_len;
    z->in_pos = z->in_len = 0;
    z->in_len = fread(z->in, 1, ZCHUNK, z->fp);
    if (z->in_len < ZCHUNK) {
        if (ferror(z->fp))
            return kvz_fail(err, KVZ_EIO, "%s: read error at byte %llu: %s", z->path,
                            (unsigned long long)(z->in_off + z->in_len), strerror(errno));
        z->in_eof = 1;
    }
    return KVZ_OK;
}

static uint64_t zsrc_at(const zsrc *z)
{
    return z->in_off + z->in_pos;
}

/* After the last gzip member: zero bytes (tape padding) are ignored, as gzip
 * does; anything else is an error (a member whose header is damaged would
 * otherwise be dropped silently). */
static int gz_trailer(zsrc *z, kvz_error *err)
{
    for (;;) {
        int rc = zsrc_fill(z, err);
        if (rc || z->in_pos == z->in_len)
            return rc;
        for (; z->in_pos < z->in_len; z->in_pos++)
            if (z->in[z->in_pos] != 0)
                return kvz_fail(err, KVZ_EFORMAT,
                                "%s: not gzip data at byte %llu (after %zu complete gzip "
                                "member%s): trailing garbage or a damaged member",
                                z->path, (unsigned long long)zsrc_at(z), z->members,
                                z->members == 1 ? "" : "s");
    }
}

static int gz_read(zsrc *z, unsigned char *out, size_t cap, size_t *got, kvz_error *err)
{
    while (*got == 0) {
        int rc = zsrc_fill(z, err);
        if (rc)
            return rc;
        int have = z->in_pos < z->in_len;
        if (!z->in_member) {
            if (!have)
                return KVZ_OK; /* the end, between members */
            if (z->members > 0 && z->in[z->in_pos] == 0)
                return gz_trailer(z, err);
            if (z->members > 0 && inflateReset(&z->zs) != Z_OK)
                return kvz_fail(err, KVZ_EFORMAT, "%s: cannot restart inflate", z->path);
            z->in_member = 1;
        }
        if (!have)
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: truncated gzip stream (the file ends at byte %llu inside "
                            "gzip member %zu)",
                            z->path, (unsigned long long)zsrc_at(z), z->members + 1);
        z->zs.next_in = z->in + z->in_pos;
        z->zs.avail_in = (uInt)(z->in_len - z->in_pos);
        z->zs.next_out = out;
        z->zs.avail_out = (uInt)cap;
        int ret = inflate(&z->zs, Z_NO_FLUSH);
        z->in_pos = z->in_len - z->zs.avail_in;
        *got = cap - z->zs.avail_out;
        if (ret == Z_STREAM_END) {
            z->in_member = 0;
            z->members++;
        } else if (ret == Z_MEM_ERROR) {
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory in inflate", z->path);
        } else if (ret == Z_DATA_ERROR && z->zs.msg && !strcmp(z->zs.msg, "incorrect header check")) {
            if (z->members == 0)
                return kvz_fail(err, KVZ_EFORMAT, "%s: not in gzip format", z->path);
            z->in_member = 0; /* report as trailing garbage */
            return gz_trailer(z, err);
        } else if (ret != Z_OK) {
            return kvz_fail(err, KVZ_EFORMAT, "%s: corrupt gzip data at byte %llu: %s", z->path,
                            (unsigned long long)zsrc_at(z),
                            z->zs.msg ? z->zs.msg : zError(ret));
        }
    }
    return KVZ_OK;
}

static int zst_read(zsrc *z, unsigned char *out, size_t cap, size_t *got, kvz_error *err)
{
    int stalls = 0;
    while (*got == 0) {
        int rc = zsrc_fill(z, err);
        if (rc)
            return rc;
        int have = z->in_pos < z->in_len;
        if (!have && z->zret == 0)
            return KVZ_OK; /* the end, at a frame boundary */
        ZSTD_inBuffer zi = {z->in + z->in_pos, z->in_len - z->in_pos, 0};
        ZSTD_outBuffer zo = {out, cap, 0};
        uint64_t at = zsrc_at(z);
        if (z->zret == 0)
            z->frame_at = at;
        size_t r = ZSTD_decompressStream(z->zd, &zo, &zi);
        z->in_pos += zi.pos;
        if (ZSTD_isError(r)) {
            ZSTD_ErrorCode code = ZSTD_getErrorCode(r);
            if (code == ZSTD_error_prefix_unknown && at == 0)
                return kvz_fail(err, KVZ_EFORMAT, "%s: not in zstd format", z->path);
            if (code == ZSTD_error_memory_allocation)
                return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory in zstd", z->path);
            /* zstd does not say where inside the frame; the input consumed
             * so far says roughly how far decoding got */
            char near[64] = "";
            if (zsrc_at(z) > z->frame_at + 64)
                snprintf(near, sizeof near, " (detected near byte %llu)",
                         (unsigned long long)zsrc_at(z));
            return kvz_fail(err, KVZ_EFORMAT, "%s: corrupt zstd frame at byte %llu%s: %s%s",
                            z->path, (unsigned long long)z->frame_at, near, ZSTD_getErrorName(r),
                            code == ZSTD_error_frameParameter_windowTooLarge
                                ? " (a window over 128 MiB, e.g. zstd --long=31: recompress "
                                  "without --long)"
                                : "");
        }
        z->zret = r;
        *got = zo.pos;
        if (!have && zo.pos == 0)
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: truncated zstd stream (the file ends at byte %llu inside a "
                            "frame)",
                            z->path, (unsigned long long)zsrc_at(z));
        if (zi.pos == 0 && zo.pos == 0 && ++stalls > 8)
            return kvz_fail(err, KVZ_EFORMAT, "%s: corrupt zstd frame at byte %llu: no progress",
                            z->path, (unsigned long long)zsrc_at(z));
    }
    return KVZ_OK;
}

/* Up to cap decompressed bytes into out; *got = 0 only at the end. */
static int zsrc_read(zsrc *z, unsigned char *out, size_t cap, size_t *got, kvz_error *err)
{
    *got = 0;
    if (z->kind == KVZ_CORPUS_GZIP)
        return gz_read(z, out, cap, got, err);
    if (z->kind == KVZ_CORPUS_ZSTD)
        return zst_read(z, out, cap, got, err);
    *got = fread(out, 1, cap, z->fp);
    if (*got == 0 && ferror(z->fp))
        return kvz_fail(err, KVZ_EIO, "%s: read error: %s", z->path, strerror(errno));
    return KVZ_OK;
}

/* Lines of a zsrc: getline over the decompressed bytes. */
typedef struct line_reader {
    zsrc src;
    unsigned char *chunk; /* [ZCHUNK] decompressed bytes not yet returned */
    size_t pos, len;
    int eof;
} line_reader;

static int lines_open(line_reader *r, const char *path, kvz_error *err)
{
    memset(r, 0, sizeof *r);
    int rc = zsrc_open(&r->src, path, err);
    if (rc)
        return rc;
    if (!(r->chunk = malloc(ZCHUNK))) {
        zsrc_close(&r->src);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    return KVZ_OK;
}

static void lines_close(line_reader *r)
{
    zsrc_close(&r->src);
    free(r->chunk);
}

/* The next line with its '\n' (the last one may lack it) into *buf (grown
 * as needed, NUL-terminated); *n = 0 at the end. */
static int next_line(line_reader *r, char **buf, size_t *cap, size_t *n, kvz_error *err)
{
    *n = 0;
    for (;;) {
        if (r->pos == r->len) {
            if (r->eof)
                return KVZ_OK;
            r->pos = 0;
            int rc = zsrc_read(&r->src, r->chunk, ZCHUNK, &r->len, err);
            if (rc)
                return rc;
            if (r->len == 0) {
                r->eof = 1;
                return KVZ_OK;
            }
        }
        const unsigned char *p = r->chunk + r->pos;
        const unsigned char *nl = memchr(p, '\n', r->len - r->pos);
        size_t take = nl ? (size_t)(nl - p) + 1 : r->len - r->pos;
        if (*n + take + 1 > *cap) {
            size_t c = *cap ? *cap : 256;
            while (c < *n + take + 1)
                c *= 2;
            char *q = realloc(*buf, c);
            if (!q)
                return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory for a %zu-byte line",
                                r->src.path, *n + take);
            *buf = q;
            *cap = c;
        }
        memcpy(*buf + *n, p, take);
        *n += take;
        (*buf)[*n] = '\0';
        r->pos += take;
        if (nl)
            return KVZ_OK;
    }
}

/* The whole decompressed content (a compressed text document). */
static int read_all_decompressed(const char *path, char **out, size_t *len, kvz_error *err)
{
    zsrc z;
    int rc = zsrc_open(&z, path, err);
    if (rc)
        return rc;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < ZCHUNK + 1) {
            size_t c = cap ? 2 * cap : 2 * ZCHUNK;
            char *q = realloc(buf, c);
            if (!q) {
                rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory (%zu bytes decompressed)",
                              path, n);
                break;
            }
            buf = q;
            cap = c;
        }
        size_t got;
        rc = zsrc_read(&z, (unsigned char *)buf + n, ZCHUNK, &got, err);
        if (rc || got == 0)
            break;
        n += got;
    }
    zsrc_close(&z);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return KVZ_OK;
}

/* --- documents --- */

typedef struct scan_job {
    const char *path;
    size_t file_index;
    const kvz_corpus_fields *fields;
    const char *default_subset;
    kvz_corpus_found_fn fn;
    void *ctx;
    int compressed;
} scan_job;

static int scan_line(const scan_job *j, size_t line, uint64_t offset, const char *buf, size_t len,
                     kvz_error *err)
{
    size_t bad;
    const char *why;
    if (kvz_utf8_validate(buf, len, &bad, &why))
        return kvz_fail(err, KVZ_EFORMAT, "%s:%zu: invalid UTF-8 at byte %zu of the line (%s %llu): %s",
                        j->path, line, bad,
                        j->compressed ? "offset in the decompressed data" : "file offset",
                        (unsigned long long)(offset + bad), why);
    json_t *root;
    kvz_corpus_found d = {.file = j->path, .file_index = j->file_index, .line = line,
                          .offset = offset, .length = len, .compressed = j->compressed};
    int rc = kvz_corpus_parse_line(j->path, line, buf, len, j->fields, j->default_subset, &root,
                                   &d.text, &d.text_len, &d.subset, err);
    if (rc)
        return rc;
    d.content_hash = kvz_corpus_fnv1a64(buf, len, KVZ_FNV64_OFFSET);
    rc = j->fn(j->ctx, &d, err);
    json_decref(root);
    return rc;
}

/* A line of a compressed file did not parse (rc, err). Damaged data can
 * decode to wrong bytes before the check at the end of the member or frame
 * (CRC32, zstd's checksum) notices, so the rest of the stream is decoded
 * (output discarded, same buffers): when it is damaged, that is the error. */
static int blame_stream(line_reader *r, size_t line, int rc, kvz_error *err)
{
    kvz_error probe = {0};
    size_t got;
    int prc;
    while ((prc = zsrc_read(&r->src, r->chunk, ZCHUNK, &got, &probe)) == KVZ_OK && got > 0)
        ;
    if (prc != KVZ_EFORMAT)
        return rc;
    return kvz_fail(err, prc, "%s (found after line %zu, decoded from the damaged data, did not "
                              "parse)", probe.msg, line);
}

static int scan_jsonl(const scan_job *j, kvz_error *err)
{
    line_reader r;
    int rc = lines_open(&r, j->path, err);
    if (rc)
        return rc;
    char *buf = NULL;
    size_t cap = 0, line = 0, got;
    uint64_t offset = 0;
    for (;;) {
        if ((rc = next_line(&r, &buf, &cap, &got, err)) != KVZ_OK) {
            /* a read or decompression error: say how far the lines got */
            char why[KVZ_ERRMSG_MAX];
            snprintf(why, sizeof why, "%s", err ? err->msg : "read error");
            if (line)
                rc = kvz_fail(err, rc, "%s (after line %zu)", why, line);
            break;
        }
        if (got == 0)
            break;
        line++;
        if (!is_blank(buf, got) && (rc = scan_line(j, line, offset, buf, got, err)) != KVZ_OK) {
            if (rc == KVZ_EFORMAT && j->compressed)
                rc = blame_stream(&r, line, rc, err);
            break;
        }
        offset += got;
    }
    free(buf);
    lines_close(&r);
    return rc;
}

static int scan_text(const scan_job *j, kvz_error *err)
{
    char *text;
    size_t len, bad;
    const char *why;
    int rc = j->compressed ? read_all_decompressed(j->path, &text, &len, err)
                           : kvz_file_read_all(j->path, &text, &len, err);
    if (rc)
        return rc;
    if (kvz_utf8_validate(text, len, &bad, &why)) {
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: invalid UTF-8 at byte %zu%s: %s", j->path, bad,
                      j->compressed ? " of the decompressed text" : "", why);
    } else {
        kvz_corpus_found d = {.file = j->path, .file_index = j->file_index, .line = 0,
                              .offset = 0, .length = len,
                              .content_hash = kvz_corpus_fnv1a64(text, len, KVZ_FNV64_OFFSET),
                              .text = text, .text_len = len, .subset = j->default_subset,
                              .compressed = j->compressed};
        rc = j->fn(j->ctx, &d, err);
    }
    free(text);
    return rc;
}

int kvz_corpus_scan_file(const char *path, size_t file_index, const kvz_corpus_fields *f,
                         kvz_corpus_found_fn fn, void *ctx, kvz_error *err)
{
    char *subset = base_name_no_ext(path);
    if (!subset)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    scan_job j = {path, file_index, f, subset, fn, ctx,
                  kvz_corpus_compression(path, NULL) != KVZ_CORPUS_PLAIN};
    int rc = kvz_corpus_is_jsonl(path) ? scan_jsonl(&j, err) : scan_text(&j, err);
    free(subset);
    return rc;
}
