/* test_corpus_compressed: corpus input from .jsonl.gz, .jsonl.zst, .txt.gz and
 * .txt.zst files (data/corpus_scan.c), alone and in directories, with the
 * default model's tokenizer. Checks: a compressed corpus selects exactly what
 * the uncompressed one does (keys, order, splits, subsets, token counts,
 * texts; source ids differ only by the file names' .gz/.zst); streams that
 * span many 64 KiB buffers and lines split across gzip members or zstd
 * frames; concatenated gzip members; zero padding; empty files and empty
 * streams; re-reading (texts kept, so deleting the file afterwards does not
 * matter); errors naming file:line inside compressed files; truncated and
 * corrupt gzip/zstd streams, each one message naming the file; and that a
 * large .jsonl.gz is scanned in bounded memory (a child process). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "../data/corpus.h"
#include "kvz_test.h"

static const kvz_tokenizer *g_tok;

/* --- helpers --- */

static const char *tmp_path(const char *rel)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", kvz_test_tmpdir(), rel);
    return buf[k];
}

static void make_dirs(const char *rel)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", kvz_test_tmpdir(), rel);
    for (char *s = p + strlen(kvz_test_tmpdir()) + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

static void write_bytes(const char *rel, const void *data, size_t n)
{
    FILE *fp = fopen(tmp_path(rel), "wb");
    KVZ_CHECK(fp != NULL, "cannot write %s", rel);
    if (fp) {
        if (n)
            fwrite(data, 1, n, fp);
        fclose(fp);
    }
}

/* A growable byte buffer. */
typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void buf_add(buf *b, const void *data, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* One gzip member of data[0..n) appended to out. */
static void gz_member(buf *out, const void *data, size_t n)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    KVZ_CHECK(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK,
              "deflateInit2");
    size_t bound = deflateBound(&zs, (uLong)n) + 64;
    unsigned char *tmp = malloc(bound);
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)n;
    zs.next_out = tmp;
    zs.avail_out = (uInt)bound;
    KVZ_CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END, "deflate");
    buf_add(out, tmp, bound - zs.avail_out);
    deflateEnd(&zs);
    free(tmp);
}

/* One zstd frame (with checksum, as the zstd tool writes) appended to out. */
static void zst_frame(buf *out, const void *data, size_t n)
{
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
    size_t bound = ZSTD_compressBound(n);
    unsigned char *tmp = malloc(bound);
    size_t k = ZSTD_compress2(cc, tmp, bound, data, n);
    KVZ_CHECK(!ZSTD_isError(k), "ZSTD_compress2: %s", ZSTD_getErrorName(k));
    if (!ZSTD_isError(k))
        buf_add(out, tmp, k);
    ZSTD_freeCCtx(cc);
    free(tmp);
}

/* data compressed as pieces (members/frames) split at the given cut points. */
static void write_compressed(const char *rel, const buf *data, int zstd, size_t n_cuts,
                             const size_t *cuts)
{
    buf out = {0};
    size_t at = 0;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : data->n;
        if (zstd)
            zst_frame(&out, data->p + at, end - at);
        else
            gz_member(&out, data->p + at, end - at);
        at = end;
    }
    write_bytes(rel, out.p, out.n);
    free(out.p);
}

static kvz_corpus_options opts(const char *path, size_t train, size_t test)
{
    kvz_corpus_options o = {0};
    o.path = path;
    o.train_per_subset = train;
    o.test_per_subset = test;
    o.seed = 7;
    return o;
}

static kvz_corpus *select_ok(const kvz_corpus_options *o)
{
    kvz_corpus *c = NULL;
    kvz_error err = {0};
    int rc = kvz_corpus_select(o, g_tok, &c, &err);
    KVZ_CHECK(rc == KVZ_OK, "select %s: %s", o->path, err.msg);
    return c;
}

static void expect_error(const kvz_corpus_options *o, int code, const char *s1, const char *s2)
{
    kvz_corpus *c = NULL;
    kvz_error err = {0};
    int rc = kvz_corpus_select(o, g_tok, &c, &err);
    KVZ_CHECK(rc == code, "%s: got %d (%s), want %d", o->path, rc, err.msg, code);
    KVZ_CHECK(c == NULL, "no corpus on error");
    printf("  error: %s\n", err.msg);
    KVZ_CHECK(strstr(err.msg, s1) != NULL, "message '%s' lacks '%s'", err.msg, s1);
    KVZ_CHECK(!s2 || strstr(err.msg, s2) != NULL, "message '%s' lacks '%s'", err.msg, s2);
    kvz_corpus_free(c);
}

/* source below root, with ".gz"/".zst" removed from the file name. */
static void plain_id(const char *source, const char *root, char *out, size_t cap)
{
    size_t n = strlen(root);
    const char *s = strncmp(source, root, n) == 0 && source[n] == '/' ? source + n + 1 : source;
    const char *colon = strrchr(s, ':');
    size_t end = colon ? (size_t)(colon - s) : strlen(s);
    size_t k = end >= 3 && !memcmp(s + end - 3, ".gz", 3)    ? 3
               : end >= 4 && !memcmp(s + end - 4, ".zst", 4) ? 4
                                                              : 0;
    snprintf(out, cap, "%.*s%s", (int)(end - k), s, colon ? colon : "");
}

/* b (a compressed copy of a) selects the same documents with the same texts. */
static void check_equivalent(const kvz_corpus *a, const char *root_a, const kvz_corpus *b,
                             const char *root_b, const char *what)
{
    KVZ_CHECK(kvz_corpus_count(a) == kvz_corpus_count(b), "%s: %zu vs %zu docs", what,
              kvz_corpus_count(a), kvz_corpus_count(b));
    KVZ_CHECK(kvz_corpus_n_scanned(a) == kvz_corpus_n_scanned(b), "%s: scanned %zu vs %zu", what,
              kvz_corpus_n_scanned(a), kvz_corpus_n_scanned(b));
    KVZ_CHECK(kvz_corpus_n_eligible_seen(a) == kvz_corpus_n_eligible_seen(b),
              "%s: eligible %zu vs %zu", what, kvz_corpus_n_eligible_seen(a),
              kvz_corpus_n_eligible_seen(b));
    size_t n = kvz_corpus_count(a) < kvz_corpus_count(b) ? kvz_corpus_count(a) : kvz_corpus_count(b);
    for (size_t i = 0; i < n; i++) {
        const kvz_corpus_doc *x = kvz_corpus_doc_at(a, i), *y = kvz_corpus_doc_at(b, i);
        char ix[512], iy[512];
        plain_id(x->source, root_a, ix, sizeof ix);
        plain_id(y->source, root_b, iy, sizeof iy);
        KVZ_CHECK(!strcmp(ix, iy) && x->key == y->key && x->split == y->split &&
                      !strcmp(x->subset, y->subset) && x->n_tokens == y->n_tokens,
                  "%s: doc %zu: %s/%s/%d/%zu vs %s/%s/%d/%zu", what, i, x->source, x->subset,
                  x->split, x->n_tokens, y->source, y->subset, y->split, y->n_tokens);
        char *ta = NULL, *tb = NULL;
        size_t la = 0, lb = 0;
        kvz_error err = {0};
        KVZ_CHECK_OK(kvz_corpus_read_text(a, i, &ta, &la, &err), err);
        KVZ_CHECK_OK(kvz_corpus_read_text(b, i, &tb, &lb, &err), err);
        KVZ_CHECK(ta && tb && la == lb && !memcmp(ta, tb, la) && tb[lb] == '\0',
                  "%s: doc %zu (%s): texts differ (%zu vs %zu bytes)", what, i, y->source, la, lb);
        free(ta);
        free(tb);
    }
}

/* --- the test corpus --- */

static const char *WORDS[] = {"cache", "keys", "values", "head", "layer", "token", "prune",
                              "score", "query", "window", "attention", "sparse", "model"};

/* JSONL of n lines (some blank, some CRLF, some with a subset field, one of
 * ~150 KB), the lines' texts varying in length. */
static void make_jsonl(buf *b, size_t n, unsigned seed)
{
    char line[2048];
    for (size_t i = 0; i < n; i++) {
        unsigned r = seed * 2654435761u + (unsigned)i * 40503u;
        if (i % 37 == 5) {
            buf_add(b, "\n", 1);
            continue;
        }
        int k = snprintf(line, sizeof line, "{\"id\": %zu, %s\"text\": \"Document %zu:", i,
                         i % 3 == 0 ? "\"subset\": \"alt\", " : "", i);
        size_t words = 5 + r % 60;
        for (size_t w = 0; w < words && k < (int)sizeof line - 40; w++)
            k += snprintf(line + k, sizeof line - (size_t)k, " %s",
                          WORDS[(r >> (w % 20)) % (sizeof WORDS / sizeof WORDS[0])]);
        k += snprintf(line + k, sizeof line - (size_t)k, " caf\\u00e9.\"}%s",
                      i % 11 == 0 ? "\r\n" : "\n");
        buf_add(b, line, (size_t)k);
        if (i == n / 2) { /* one long line spanning several 64 KiB buffers */
            buf_add(b, "{\"text\": \"", 10);
            for (size_t w = 0; w < 30000; w++)
                buf_add(b, "word ", 5);
            buf_add(b, "end\"}\n", 6);
        }
    }
}

static void make_text(buf *b, size_t words)
{
    for (size_t w = 0; w < words; w++) {
        const char *s = WORDS[(w * 7) % (sizeof WORDS / sizeof WORDS[0])];
        buf_add(b, s, strlen(s));
        buf_add(b, w % 13 == 12 ? "\n" : " ", 1);
    }
}

/* Equivalence, one file at a time and as directories mixing kinds. */
static void test_equivalence(void)
{
    buf a = {0}, b = {0}, t = {0}, u = {0};
    make_jsonl(&a, 3000, 1); /* ~300 KB: several buffers */
    make_jsonl(&b, 200, 2);
    make_text(&t, 400);
    make_text(&u, 50);
    size_t cuts_a[] = {1, a.n / 3, a.n / 3 + 1, 2 * a.n / 3 + 17}; /* mid-line cuts */
    size_t cuts_t[] = {t.n / 2};

    /* single files: the selection of x.jsonl == x.jsonl.gz == x.jsonl.zst */
    make_dirs("one");
    write_bytes("one/x.jsonl", a.p, a.n);
    write_compressed("one/x.jsonl.gz", &a, 0, 0, NULL);
    write_compressed("one/x.jsonl.zst", &a, 1, 0, NULL);
    write_compressed("one/members.jsonl.gz", &a, 0, 4, cuts_a); /* 5 gzip members */
    write_compressed("one/frames.jsonl.zst", &a, 1, 4, cuts_a); /* 5 zstd frames */
    write_bytes("one/members.jsonl", a.p, a.n);
    write_bytes("one/frames.jsonl", a.p, a.n);
    static const char *pairs[][2] = {{"one/x.jsonl", "one/x.jsonl.gz"},
                                     {"one/x.jsonl", "one/x.jsonl.zst"},
                                     {"one/members.jsonl", "one/members.jsonl.gz"},
                                     {"one/frames.jsonl", "one/frames.jsonl.zst"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s", tmp_path(pairs[i][0]));
        snprintf(pb, sizeof pb, "%s", tmp_path(pairs[i][1]));
        kvz_corpus_options oa = opts(pa, 6, 2), ob = opts(pb, 6, 2);
        oa.subset_field = ob.subset_field = "subset";
        oa.min_tokens = ob.min_tokens = 8;
        oa.max_tokens = ob.max_tokens = 4000;
        kvz_corpus *ca = select_ok(&oa), *cb = select_ok(&ob);
        if (ca && cb) {
            KVZ_CHECK(kvz_corpus_count(ca) == 16, "%s: 2 subsets x 8 docs, got %zu", pairs[i][0],
                      kvz_corpus_count(ca));
            check_equivalent(ca, "", cb, "", pairs[i][1]);
            const kvz_corpus_doc *d = kvz_corpus_doc_at(cb, 0);
            const char *base = strrchr(pairs[i][1], '/') + 1;
            KVZ_CHECK(strstr(d->source, base) != NULL && strchr(d->source, ':'),
                      "source '%s' names the compressed file %s", d->source, base);
        }
        kvz_corpus_free(ca);
        kvz_corpus_free(cb);
    }

    /* directories: plain vs mixed kinds (gz, zst, members, frames, plain) */
    make_dirs("plain/sub");
    make_dirs("mixed/sub");
    write_bytes("plain/a.jsonl", a.p, a.n);
    write_bytes("plain/sub/b.jsonl", b.p, b.n);
    write_bytes("plain/t.txt", t.p, t.n);
    write_bytes("plain/sub/u.txt", u.p, u.n);
    write_bytes("plain/v.txt", u.p, u.n);
    write_bytes("plain/w.jsonl", b.p, b.n);
    write_compressed("mixed/a.jsonl.gz", &a, 0, 4, cuts_a);
    write_compressed("mixed/sub/b.jsonl.zst", &b, 1, 0, NULL);
    write_compressed("mixed/t.txt.gz", &t, 0, 1, cuts_t);
    write_compressed("mixed/sub/u.txt.zst", &u, 1, 0, NULL);
    write_bytes("mixed/v.txt", u.p, u.n);
    write_bytes("mixed/w.jsonl", b.p, b.n);
    for (int sf = 0; sf < 2; sf++) {
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s", tmp_path("plain"));
        snprintf(pb, sizeof pb, "%s", tmp_path("mixed"));
        kvz_corpus_options oa = opts(pa, 4, 1), ob = opts(pb, 4, 1);
        oa.subset_field = ob.subset_field = sf ? "subset" : NULL;
        kvz_corpus *ca = select_ok(&oa), *cb = select_ok(&ob);
        if (ca && cb) {
            check_equivalent(ca, pa, cb, pb, sf ? "dir, subset field" : "dir");
            /* subsets: file names without the compression suffix and extension */
            size_t seen_t = 0, seen_u = 0, seen_a = 0;
            for (size_t i = 0; i < kvz_corpus_count(cb); i++) {
                const kvz_corpus_doc *d = kvz_corpus_doc_at(cb, i);
                seen_t += !strcmp(d->subset, "t") && strstr(d->source, "/t.txt.gz") != NULL;
                seen_u += !strcmp(d->subset, "u") && strstr(d->source, "/sub/u.txt.zst") != NULL;
                seen_a += !strcmp(d->subset, "a") && strstr(d->source, "/a.jsonl.gz:") != NULL;
            }
            KVZ_CHECK(seen_t == 1 && seen_u == 1 && seen_a > 0,
                      "subsets t, u, a from t.txt.gz, u.txt.zst, a.jsonl.gz (%zu %zu %zu)",
                      seen_t, seen_u, seen_a);
        }
        kvz_corpus_free(ca);
        kvz_corpus_free(cb);
    }

    /* texts are kept: deleting the compressed files does not break re-reading */
    {
        char pb[1024];
        snprintf(pb, sizeof pb, "%s", tmp_path("mixed"));
        kvz_corpus_options ob = opts(pb, 4, 1);
        kvz_corpus *cb = select_ok(&ob);
        unlink(tmp_path("mixed/a.jsonl.gz"));
        unlink(tmp_path("mixed/t.txt.gz"));
        for (size_t i = 0; cb && i < kvz_corpus_count(cb); i++) {
            char *text = NULL;
            size_t len = 0;
            kvz_error err = {0};
            const kvz_corpus_doc *d = kvz_corpus_doc_at(cb, i);
            int rc = kvz_corpus_read_text(cb, i, &text, &len, &err);
            KVZ_CHECK(rc == KVZ_OK, "%s: read after the file was deleted: %s", d->source, err.msg);
            if (rc == KVZ_OK && !strcmp(d->subset, "t"))
                KVZ_CHECK(len == t.n && !memcmp(text, t.p, len), "t.txt.gz text");
            free(text);
        }
        kvz_corpus_free(cb);
    }
    free(a.p);
    free(b.p);
    free(t.p);
    free(u.p);
}

/* Empty files and empty streams behave as the empty uncompressed file. */
static void test_empty(void)
{
    buf empty = {0};
    buf_add(&empty, "", 0);
    write_bytes("e0.jsonl.gz", "", 0);
    write_compressed("e1.jsonl.gz", &empty, 0, 0, NULL);
    write_bytes("e2.jsonl.zst", "", 0);
    write_compressed("e3.jsonl.zst", &empty, 1, 0, NULL);
    buf blank = {0};
    buf_add(&blank, "\n  \n\r\n", 6);
    write_compressed("e4.jsonl.gz", &blank, 0, 0, NULL);
    static const char *names[] = {"e0.jsonl.gz", "e1.jsonl.gz", "e2.jsonl.zst", "e3.jsonl.zst",
                                  "e4.jsonl.gz"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        kvz_corpus_options o = opts(tmp_path(names[i]), 3, 1);
        expect_error(&o, KVZ_EINVAL, names[i], "no documents");
    }
    /* an empty .gz in a directory contributes nothing; an empty .txt.gz is
     * one empty document as an empty .txt is */
    make_dirs("emptymix");
    write_bytes("emptymix/z.jsonl.gz", "", 0);
    write_compressed("emptymix/y.jsonl.gz", &empty, 0, 0, NULL);
    write_bytes("emptymix/ok.jsonl", "{\"text\": \"a few words of text\"}\n", 32);
    kvz_corpus_options o = opts(tmp_path("emptymix"), 3, 0);
    kvz_corpus *c = select_ok(&o);
    KVZ_CHECK(c && kvz_corpus_count(c) == 1 && kvz_corpus_n_scanned(c) == 1,
              "one document from the mix");
    kvz_corpus_free(c);
    make_dirs("emptytxt");
    make_dirs("emptytxt_plain");
    write_compressed("emptytxt/e.txt.gz", &empty, 0, 0, NULL);
    write_bytes("emptytxt_plain/e.txt", "", 0);
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s", tmp_path("emptytxt_plain"));
    snprintf(pb, sizeof pb, "%s", tmp_path("emptytxt"));
    kvz_corpus_options oa = opts(pa, 3, 0), ob = opts(pb, 3, 0);
    kvz_corpus *ca = select_ok(&oa), *cb = select_ok(&ob);
    if (ca && cb)
        check_equivalent(ca, pa, cb, pb, "empty .txt.gz");
    kvz_corpus_free(ca);
    kvz_corpus_free(cb);
    free(empty.p);
    free(blank.p);
}

/* Padding and trailing bytes after the gzip members. */
static void test_gzip_trailers(void)
{
    buf a = {0};
    make_jsonl(&a, 40, 3);
    buf z = {0};
    gz_member(&z, a.p, a.n / 2);
    gz_member(&z, a.p + a.n / 2, a.n - a.n / 2);
    size_t n = z.n;
    buf_add(&z, "\0\0\0\0\0\0\0\0", 8);
    write_bytes("pad.jsonl.gz", z.p, z.n);
    write_bytes("pad.jsonl", a.p, a.n);
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s", tmp_path("pad.jsonl"));
    snprintf(pb, sizeof pb, "%s", tmp_path("pad.jsonl.gz"));
    kvz_corpus_options oa = opts(pa, 50, 0), ob = opts(pb, 50, 0);
    kvz_corpus *ca = select_ok(&oa), *cb = select_ok(&ob);
    if (ca && cb)
        check_equivalent(ca, "", cb, "", "zero padding after the members");
    kvz_corpus_free(ca);
    kvz_corpus_free(cb);

    z.n = n;
    buf_add(&z, "garbage", 7);
    write_bytes("garbage.jsonl.gz", z.p, z.n);
    kvz_corpus_options o = opts(tmp_path("garbage.jsonl.gz"), 3, 1);
    expect_error(&o, KVZ_EFORMAT, "garbage.jsonl.gz: not gzip data at byte", "2 complete gzip members");
    write_bytes("notgz.jsonl.gz", a.p, a.n);
    o.path = tmp_path("notgz.jsonl.gz");
    expect_error(&o, KVZ_EFORMAT, "notgz.jsonl.gz: not in gzip format", NULL);
    write_bytes("notzst.jsonl.zst", a.p, a.n);
    o.path = tmp_path("notzst.jsonl.zst");
    expect_error(&o, KVZ_EFORMAT, "notzst.jsonl.zst: not in zstd format", NULL);
    free(a.p);
    free(z.p);
}

/* Truncated and corrupt streams: one message naming the file. */
static void test_damaged(void)
{
    buf a = {0};
    make_jsonl(&a, 2000, 4);
    buf g = {0}, s = {0};
    gz_member(&g, a.p, a.n);
    zst_frame(&s, a.p, a.n);
    kvz_corpus_options o = opts(NULL, 3, 1);

    /* truncated: half the file, and only the 8-byte trailer missing */
    write_bytes("c.jsonl.gz", g.p, g.n / 2);
    o.path = tmp_path("c.jsonl.gz");
    expect_error(&o, KVZ_EFORMAT, "c.jsonl.gz: truncated gzip stream", "(after line");
    write_bytes("c2.jsonl.gz", g.p, g.n - 8);
    o.path = tmp_path("c2.jsonl.gz");
    expect_error(&o, KVZ_EFORMAT, "c2.jsonl.gz: truncated gzip stream", NULL);
    write_bytes("c.jsonl.zst", s.p, s.n / 2);
    o.path = tmp_path("c.jsonl.zst");
    expect_error(&o, KVZ_EFORMAT, "c.jsonl.zst: truncated zstd stream", "(after line");
    write_bytes("c2.jsonl.zst", s.p, s.n - 2); /* inside the checksum */
    o.path = tmp_path("c2.jsonl.zst");
    expect_error(&o, KVZ_EFORMAT, "c2.jsonl.zst: truncated zstd stream", NULL);
    write_bytes("c.txt.gz", g.p, g.n / 2);
    o.path = tmp_path("c.txt.gz");
    expect_error(&o, KVZ_EFORMAT, "c.txt.gz: truncated gzip stream", NULL);

    /* corrupt: flipped bytes in the middle, a wrong CRC, a bad zstd block */
    buf g2 = {0}, s2 = {0};
    buf_add(&g2, g.p, g.n);
    for (size_t i = 0; i < 16; i++)
        g2.p[g2.n / 2 + i] ^= 0x5a;
    write_bytes("bad.jsonl.gz", g2.p, g2.n);
    o.path = tmp_path("bad.jsonl.gz");
    expect_error(&o, KVZ_EFORMAT, "bad.jsonl.gz: corrupt gzip data at byte", NULL);
    memcpy(g2.p, g.p, g.n);
    g2.p[g2.n - 8] ^= 1; /* CRC32 of the member */
    write_bytes("crc.jsonl.gz", g2.p, g2.n);
    o.path = tmp_path("crc.jsonl.gz");
    expect_error(&o, KVZ_EFORMAT, "crc.jsonl.gz: corrupt gzip data at byte", "incorrect data check");
    buf_add(&s2, s.p, s.n);
    for (size_t i = 0; i < 16; i++)
        s2.p[s2.n / 2 + i] ^= 0x5a;
    write_bytes("bad.jsonl.zst", s2.p, s2.n);
    o.path = tmp_path("bad.jsonl.zst");
    expect_error(&o, KVZ_EFORMAT, "bad.jsonl.zst: corrupt zstd frame at byte", NULL);
    /* magic, frame header (window 1 MiB), then a block of the reserved type */
    static const unsigned char reserved[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x50, 0x07, 0x00, 0x00};
    write_bytes("rsv.txt.zst", reserved, sizeof reserved);
    o.path = tmp_path("rsv.txt.zst");
    expect_error(&o, KVZ_EFORMAT, "rsv.txt.zst: corrupt zstd frame at byte", NULL);

    /* the first damaged file of a directory is reported (path order) */
    make_dirs("dmg");
    write_bytes("dmg/a.jsonl", a.p, a.n);
    write_bytes("dmg/b.jsonl.zst", s2.p, s2.n);
    write_bytes("dmg/c.jsonl.gz", g.p, g.n / 2);
    o.path = tmp_path("dmg");
    expect_error(&o, KVZ_EFORMAT, "dmg/b.jsonl.zst: corrupt zstd frame", NULL);
    free(a.p);
    free(g.p);
    free(s.p);
    free(g2.p);
    free(s2.p);
}

/* Errors inside compressed files name file:line, as for plain files. */
static void test_line_errors(void)
{
    static const char *cases[][3] = {
        {"syn.jsonl.gz", "{\"text\": \"ok\"}\n\n{\"text\": \"cut\n", "syn.jsonl.gz:3: not valid JSON"},
        {"notext.jsonl.zst", "{\"text\": \"ok\"}\n{\"body\": 1}\n", "notext.jsonl.zst:2: no \"text\" field"},
        {"utf8.jsonl.gz", "{\"text\": \"a\"}\n{\"text\": \"caf\xc3\"}\n",
         "utf8.jsonl.gz:2: invalid UTF-8 at byte 13 of the line (offset in the decompressed data 27)"},
        {"utf8.txt.zst", "plain \xff text", "utf8.txt.zst: invalid UTF-8 at byte 6"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf d = {0};
        buf_add(&d, cases[i][1], strlen(cases[i][1]));
        write_compressed(cases[i][0], &d, strstr(cases[i][0], ".zst") != NULL, 0, NULL);
        kvz_corpus_options o = opts(tmp_path(cases[i][0]), 3, 1);
        expect_error(&o, KVZ_EFORMAT, cases[i][2], NULL);
        free(d.p);
    }
}

/* ~48 MiB of JSONL lines in a 1 MiB .jsonl.gz: scanned in a child process
 * whose peak RSS grows by far less than the decompressed size. */
static void test_bounded_memory(void)
{
    gzFile gz = gzopen(tmp_path("big.jsonl.gz"), "wb1");
    KVZ_CHECK(gz != NULL, "gzopen");
    if (!gz)
        return;
    char line[1200];
    size_t total = 0, lines = 0;
    while (total < ((size_t)48 << 20)) {
        int k = snprintf(line, sizeof line, "{\"text\": \"Line %zu:", lines);
        while (k < 1000)
            k += snprintf(line + k, sizeof line - (size_t)k, " %s",
                          WORDS[(size_t)k % (sizeof WORDS / sizeof WORDS[0])]);
        k += snprintf(line + k, sizeof line - (size_t)k, "\"}\n");
        gzwrite(gz, line, (unsigned)k);
        total += (size_t)k;
        lines++;
    }
    gzclose(gz);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        long base = ru.ru_maxrss;
        kvz_corpus_options o = opts(tmp_path("big.jsonl.gz"), 3, 1);
        o.max_tokens = 1250;
        kvz_corpus *c = NULL;
        kvz_error err = {0};
        int rc = kvz_corpus_select(&o, g_tok, &c, &err);
        getrusage(RUSAGE_SELF, &ru);
        double grew = (double)(ru.ru_maxrss - base) / 1024.0;
        printf("%zu MiB .jsonl.gz (%zu lines): peak RSS grew %.1f MiB, rc %d (%s)\n",
               total >> 20, lines, grew, rc, err.msg);
        int ok = rc == KVZ_OK && kvz_corpus_count(c) == 4 && kvz_corpus_n_scanned(c) == lines &&
                 grew < 16.0 + KVZ_TEST_ASAN_SLACK_MIB;
        kvz_corpus_free(c);
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    KVZ_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "a 48 MiB .jsonl.gz is scanned in bounded memory");
}

int main(void)
{
    const char *model = getenv("KVZAP_DEFAULT_MODEL");
    if (!model || access(model, R_OK) != 0)
        kvz_test_skip("KVZAP_DEFAULT_MODEL not set or missing");
    kvz_tokenizer *tok = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_tokenizer_load(model, &tok, &err), err);
    if (!tok)
        return kvz_test_done();
    g_tok = tok;
    test_equivalence();
    test_empty();
    test_gzip_trailers();
    test_damaged();
    test_line_errors();
    test_bounded_memory();
    kvz_tokenizer_free(tok);
    return kvz_test_done();
}
