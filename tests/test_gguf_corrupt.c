/* test_gguf_corrupt: the GGUF reader on hand-built and damaged files.
 * Small GGUF images are assembled byte by byte here (v1/v2/v3/big-endian
 * headers, empty and nested arrays, bad bools, duplicate keys and tensor
 * names, bad alignment, partial blocks, shape overflow, embedded NULs), plus
 * every truncation of tests/fixtures/gguf/all_types.gguf and a seeded
 * byte-flip sweep over its header. Every case must end in the expected
 * status with a message naming the file, and never crash (run under ASan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvz_file.h"
#include "kvz_test.h"
#include "model/gguf.h"

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s, size_t n) { put_u64(b, n); put(b, s, n); }

static void header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void kv_u32(buf *b, const char *key, uint32_t v)
{
    put_str(b, key, strlen(key));
    put_u32(b, KVZ_GGUF_UINT32);
    put_u32(b, v);
}

/* One tensor info: 2-D [ne0, ne1] of type at offset. */
static void tensor_info(buf *b, const char *name, uint64_t ne0, uint64_t ne1, uint32_t type,
                        uint64_t offset)
{
    put_str(b, name, strlen(name));
    put_u32(b, 2);
    put_u64(b, ne0);
    put_u64(b, ne1);
    put_u32(b, type);
    put_u64(b, offset);
}

static void pad_to(buf *b, size_t align, size_t data_bytes)
{
    static const unsigned char zero[256];
    while (b->n % align)
        put(b, zero, 1);
    while (data_bytes > 0) {
        size_t k = data_bytes < sizeof zero ? data_bytes : sizeof zero;
        put(b, zero, k);
        data_bytes -= k;
    }
}

static const char *write_tmp(const char *name, const void *p, size_t n)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", kvz_test_tmpdir(), name);
    FILE *fp = fopen(path, "wb");
    if (fp) {
        if (n)
            fwrite(p, 1, n, fp);
        fclose(fp);
    }
    return path;
}

/* Opens the image; checks status and that the message has the file name and want_msg. */
static void expect(const char *name, buf *b, int want_rc, const char *want_msg)
{
    const char *path = write_tmp(name, b->p, b->n);
    kvz_gguf *g = NULL;
    kvz_error err = {0};
    int rc = kvz_gguf_open(path, &g, &err);
    KVZ_CHECK(rc == want_rc, "%s: status %d, want %d (%s)", name, rc, want_rc, err.msg);
    if (rc != KVZ_OK) {
        KVZ_CHECK(g == NULL, "%s: handle on failure", name);
        KVZ_CHECK(strstr(err.msg, name) != NULL, "%s: message lacks the file: %s", name, err.msg);
        KVZ_CHECK(!want_msg || strstr(err.msg, want_msg), "%s: message '%s' lacks '%s'", name,
                  err.msg, want_msg);
    }
    kvz_gguf_close(g);
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void test_versions(void)
{
    buf b = {0};
    header(&b, 3, 0, 0);
    expect("minimal_v3.gguf", &b, KVZ_OK, NULL);
    header(&b, 2, 0, 1);
    kv_u32(&b, "a", 1);
    expect("v2.gguf", &b, KVZ_OK, NULL);
    header(&b, 1, 0, 0);
    expect("v1.gguf", &b, KVZ_EUNSUPPORTED, "version 1");
    header(&b, 0x03000000u, 0, 0);
    expect("bigendian.gguf", &b, KVZ_EUNSUPPORTED, "big-endian");
    header(&b, 7, 0, 0);
    expect("v7.gguf", &b, KVZ_EUNSUPPORTED, "version 7");
    put(&b, "GGU", 3);
    expect("short_magic.gguf", &b, KVZ_EFORMAT, "magic");
    put(&b, "GGUF\3\0", 6);
    expect("short_version.gguf", &b, KVZ_EFORMAT, "truncated");
    expect("empty.gguf", &b, KVZ_EFORMAT, "empty");
    header(&b, 3, 0, 1000);
    expect("kv_count.gguf", &b, KVZ_EFORMAT, "key/value count 1000");
    header(&b, 3, (uint64_t)1 << 60, 0);
    expect("tensor_count.gguf", &b, KVZ_EFORMAT, "tensor count");
}

static void test_values(void)
{
    buf b = {0};
    header(&b, 3, 0, 2); /* empty array, then a string array */
    put_str(&b, "empty", 5);
    put_u32(&b, KVZ_GGUF_ARRAY);
    put_u32(&b, KVZ_GGUF_INT32);
    put_u64(&b, 0);
    put_str(&b, "strs", 4);
    put_u32(&b, KVZ_GGUF_ARRAY);
    put_u32(&b, KVZ_GGUF_STRING);
    put_u64(&b, 2);
    put_str(&b, "x", 1);
    put_str(&b, "", 0);
    const char *path = write_tmp("arrays.gguf", b.p, b.n);
    kvz_gguf *g = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_gguf_open(path, &g, &err), err);
    size_t n = 99;
    kvz_gguf_type et;
    if (g) {
        KVZ_CHECK_OK(kvz_gguf_get_array(g, "empty", &et, &n, &err), err);
        KVZ_CHECK(n == 0 && et == KVZ_GGUF_INT32, "empty array");
        const char *s;
        KVZ_CHECK_OK(kvz_gguf_array_str(g, "strs", 1, &s, &n, &err), err);
        KVZ_CHECK(n == 0, "empty string element");
    }
    kvz_gguf_close(g);
    free(b.p);
    memset(&b, 0, sizeof b);

    header(&b, 3, 0, 1);
    put_str(&b, "nested", 6);
    put_u32(&b, KVZ_GGUF_ARRAY);
    put_u32(&b, KVZ_GGUF_ARRAY);
    put_u64(&b, 1);
    put_u32(&b, KVZ_GGUF_INT8);
    put_u64(&b, 0);
    expect("nested.gguf", &b, KVZ_EUNSUPPORTED, "nested");

    header(&b, 3, 0, 1);
    put_str(&b, "flag", 4);
    put_u32(&b, KVZ_GGUF_BOOL);
    put(&b, "\2", 1);
    expect("bool2.gguf", &b, KVZ_EFORMAT, "bool");

    header(&b, 3, 0, 1);
    put_str(&b, "what", 4);
    put_u32(&b, 13);
    put_u32(&b, 0);
    expect("vtype13.gguf", &b, KVZ_EFORMAT, "unknown value type 13");

    header(&b, 3, 0, 1);
    put_str(&b, "a\0b", 3);
    put_u32(&b, KVZ_GGUF_UINT8);
    put(&b, "\1", 1);
    expect("nul_key.gguf", &b, KVZ_EFORMAT, "NUL");

    header(&b, 3, 0, 2);
    kv_u32(&b, "dup", 1);
    kv_u32(&b, "dup", 2);
    expect("dup_key.gguf", &b, KVZ_EFORMAT, "duplicate metadata key 'dup'");

    header(&b, 3, 0, 1);
    put_str(&b, "big", 3);
    put_u32(&b, KVZ_GGUF_ARRAY);
    put_u32(&b, KVZ_GGUF_UINT64);
    put_u64(&b, UINT64_MAX / 4);
    expect("big_array.gguf", &b, KVZ_EFORMAT, "array count");
}

static void test_tensors(void)
{
    buf b = {0};
    header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    expect("align48.gguf", &b, KVZ_EFORMAT, "power of two");

    header(&b, 3, 2, 0);
    tensor_info(&b, "w", 32, 2, KVZ_GGML_F32, 0);
    tensor_info(&b, "w", 32, 2, KVZ_GGML_F32, 256);
    pad_to(&b, 32, 512);
    expect("dup_tensor.gguf", &b, KVZ_EFORMAT, "duplicate tensor name 'w'");

    header(&b, 3, 1, 0);
    tensor_info(&b, "q", 33, 2, KVZ_GGML_Q4_0, 0);
    pad_to(&b, 32, 64);
    expect("partial_block.gguf", &b, KVZ_EFORMAT, "not a multiple of the Q4_0 block size");

    header(&b, 3, 1, 0);
    tensor_info(&b, "huge", (uint64_t)1 << 40, (uint64_t)1 << 40, KVZ_GGML_F32, 0);
    pad_to(&b, 32, 64);
    expect("overflow.gguf", &b, KVZ_EFORMAT, "overflows");

    header(&b, 3, 1, 0);
    tensor_info(&b, "q5", 256, 1, 13, 0); /* Q5_K: parses, sizes check out */
    pad_to(&b, 32, 176);
    expect("q5k.gguf", &b, KVZ_OK, NULL);

    header(&b, 3, 1, 0);
    tensor_info(&b, "odd", 4, 1, 99, 0);
    pad_to(&b, 32, 64);
    expect("type99.gguf", &b, KVZ_EUNSUPPORTED, "tensor 'odd' has unknown ggml type 99");

    header(&b, 3, 2, 1);
    kv_u32(&b, "general.alignment", 16);
    tensor_info(&b, "a", 8, 1, KVZ_GGML_F32, 0);
    tensor_info(&b, "b", 4, 1, KVZ_GGML_F32, 16);
    pad_to(&b, 16, 32);
    expect("align16.gguf", &b, KVZ_EFORMAT, "tensors 'a' (data bytes 0..32) and 'b'");
}

/* Every prefix of the fixture fails cleanly until the last tensor's data is whole. */
static void test_truncations(void)
{
    char *raw = NULL;
    size_t len = 0;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_file_read_all(kvz_test_fixture("gguf/all_types.gguf"), &raw, &len, &err), err);
    if (!raw)
        return;
    kvz_gguf *g = NULL;
    const char *path = write_tmp("full.gguf", raw, len);
    KVZ_CHECK_OK(kvz_gguf_open(path, &g, &err), err);
    size_t need = 0;
    for (size_t i = 0; g && i < kvz_gguf_n_tensors(g); i++) {
        const kvz_gguf_tensor_info *t = kvz_gguf_tensor(g, i);
        size_t end = (size_t)kvz_gguf_data_offset(g) + (size_t)kvz_gguf_tensor_offset(g, t) +
                     t->nbytes;
        need = end > need ? end : need;
    }
    kvz_gguf_close(g);
    size_t wrong = 0;
    for (size_t n = 0; n < len; n++) {
        path = write_tmp("cut.gguf", raw, n);
        g = NULL;
        int rc = kvz_gguf_open(path, &g, &err);
        int ok = n < need ? (rc == KVZ_EFORMAT && strstr(err.msg, "cut.gguf")) : rc == KVZ_OK;
        if (!ok && wrong++ < 5)
            fprintf(stderr, "  prefix %zu: status %d: %s\n", n, rc, err.msg);
        kvz_gguf_close(g);
    }
    KVZ_CHECK(wrong == 0, "%zu of %zu truncations misjudged (data ends at %zu)", wrong, len, need);
    free(raw);
}

/* Seeded random byte flips in the header/metadata/tensor-info region. */
static void test_byte_flips(void)
{
    char *raw = NULL;
    size_t len = 0;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_file_read_all(kvz_test_fixture("gguf/all_types.gguf"), &raw, &len, &err), err);
    if (!raw || len < 3072)
        return;
    uint64_t state = 0x9e3779b97f4a7c15ull;
    size_t opened = 0, failed_without_msg = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char *copy = malloc(len);
        memcpy(copy, raw, len);
        for (int k = 0; k < 1 + iter % 3; k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            copy[(state >> 33) % 3072] ^= (char)(1u << ((state >> 20) % 8));
        }
        const char *path = write_tmp("flip.gguf", copy, len);
        kvz_gguf *g = NULL;
        kvz_error_clear(&err);
        int rc = kvz_gguf_open(path, &g, &err);
        if (rc == KVZ_OK) {
            opened++;
            kvz_gguf_close(g);
        } else if (!strstr(err.msg, "flip.gguf")) {
            failed_without_msg++;
        }
        free(copy);
    }
    KVZ_CHECK(failed_without_msg == 0, "%zu failures without a proper message", failed_without_msg);
    printf("byte flips: %zu of 3000 still opened (flipped bits inside values/data)\n", opened);
    free(raw);
}

int main(void)
{
    test_versions();
    test_values();
    test_tensors();
    test_truncations();
    test_byte_flips();
    return kvz_test_done();
}
