/* test_safetensors: the safetensors reader on the committed tiny checkpoints
 * (tests/fixtures/tiny, made by tests/reference/make_tiny_checkpoints.py:
 * shapes, dtypes and exact fp32 checksums as transformers holds them) and on
 * hand-built corrupt files (every header check has a case). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "model/safetensors.h"

static void check_against_reference(const char *name, const json_t *ref)
{
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    char dir[512];
    snprintf(dir, sizeof dir, "%s", kvz_test_fixture("tiny"));
    size_t n = strlen(dir);
    snprintf(dir + n, sizeof dir - n, "/%s", name);
    int rc = kvz_safetensors_open(dir, &st, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    const json_t *tensors = json_object_get(json_object_get(ref, name), "tensors");
    KVZ_CHECK(json_object_size(tensors) > 0, "%s: reference has tensors", name);
    const char *tname;
    json_t *tr;
    json_object_foreach((json_t *)tensors, tname, tr) {
        const kvz_st_tensor *t = kvz_safetensors_find(st, tname);
        KVZ_CHECK(t != NULL, "%s: tensor %s present", name, tname);
        if (!t)
            continue;
        const json_t *shape = json_object_get(tr, "shape");
        KVZ_CHECK(t->n_dims == json_array_size(shape), "%s: %s n_dims", name, tname);
        for (size_t d = 0; d < t->n_dims && d < json_array_size(shape); d++)
            KVZ_CHECK(t->shape[d] == (uint64_t)json_integer_value(json_array_get(shape, d)),
                      "%s: %s dim %zu", name, tname, d);
        float *buf = malloc(t->numel * sizeof *buf);
        rc = kvz_safetensors_to_f32(st, t, buf, t->numel, &err);
        KVZ_CHECK_OK(rc, err);
        uint64_t want = strtoull(json_string_value(json_object_get(tr, "checksum")), NULL, 10);
        KVZ_CHECK(!rc && kvz_test_checksum_f32(buf, t->numel) == want, "%s: %s exact fp32 bits", name, tname);
        free(buf);
    }
    KVZ_CHECK(kvz_safetensors_metadata(st, "format") &&
                  !strcmp(kvz_safetensors_metadata(st, "format"), "pt"),
              "%s: __metadata__ format pt", name);
    kvz_safetensors_close(st);
}

static void test_fixtures(void)
{
    json_error_t jerr;
    json_t *ref = json_load_file(kvz_test_fixture("tiny/reference.json"), 0, &jerr);
    KVZ_CHECK(ref != NULL, "reference.json loads: %s", jerr.text);
    if (!ref)
        return;
    const json_t *cks = json_object_get(ref, "checkpoints");
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)cks, name, v) check_against_reference(name, cks);
    json_decref(ref);

    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    int rc = kvz_safetensors_open(kvz_test_fixture("tiny/mistral_sharded"), &st, &err);
    KVZ_CHECK_OK(rc, err);
    if (!rc) {
        KVZ_CHECK(kvz_safetensors_n_files(st) == 5, "sharded: 5 files (got %zu)",
                  kvz_safetensors_n_files(st));
        KVZ_CHECK(strstr(kvz_safetensors_path(st), "index.json") != NULL, "sharded path is the index");
        kvz_safetensors_close(st);
    }
}

/* ---------- hand-built files ---------- */

/* Writes a safetensors file: header JSON then data_len bytes of data. */
static const char *write_st(const char *fname, const char *header, size_t data_len)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", kvz_test_tmpdir(), fname);
    FILE *fp = fopen(path, "wb");
    uint64_t n = strlen(header);
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, fp);
    fwrite(header, 1, n, fp);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(i * 7 & 0xff), fp);
    fclose(fp);
    return path;
}

static void expect_fail(const char *what, const char *header, size_t data_len, int code,
                        const char *needle)
{
    const char *path = write_st("bad.safetensors", header, data_len);
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    int rc = kvz_safetensors_open(path, &st, &err);
    KVZ_CHECK(rc == code, "%s: status %d (want %d): %s", what, rc, code, err.msg);
    KVZ_CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' mentions '%s'", what, err.msg,
              needle);
    KVZ_CHECK(strstr(err.msg, "bad.safetensors") != NULL, "%s: message names the file", what);
    KVZ_CHECK(st == NULL, "%s: no handle on failure", what);
    kvz_safetensors_close(st);
}

#define T(name, dtype, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_bad_headers(void)
{
    expect_fail("overlap", "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}", 12,
                KVZ_EFORMAT, "overlap");
    expect_fail("gap", "{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 12,
                KVZ_EFORMAT, "gap");
    expect_fail("first not at 0", "{" T("a", "F32", "[1]", 4, 8) "}", 8, KVZ_EFORMAT, "not 0");
    expect_fail("trailing", "{" T("a", "F32", "[1]", 0, 4) "}", 8, KVZ_EFORMAT, "unused bytes");
    expect_fail("out of range", "{" T("a", "F32", "[4]", 0, 16) "}", 8, KVZ_EFORMAT, "data section");
    expect_fail("size mismatch", "{" T("a", "F32", "[3]", 0, 8) "}", 8, KVZ_EFORMAT, "needs 12 bytes");
    expect_fail("negative shape", "{" T("a", "F32", "[-1]", 0, 0) "}", 0, KVZ_EFORMAT,
                "non-negative");
    expect_fail("float shape", "{" T("a", "F32", "[1.5]", 0, 4) "}", 4, KVZ_EFORMAT, "non-negative");
    expect_fail("begin > end", "{" T("a", "F32", "[0]", 8, 4) "}", 8, KVZ_EFORMAT, "begin after");
    expect_fail("unknown dtype", "{" T("a", "F4", "[2]", 0, 1) "}", 1, KVZ_EUNSUPPORTED, "F4");
    expect_fail("not json", "{\"a\": [", 0, KVZ_EFORMAT, "not valid JSON");
    expect_fail("not object", "[1,2]", 0, KVZ_EFORMAT, "not a JSON object");
    expect_fail("bad metadata", "{\"__metadata__\":{\"x\":1}}", 0, KVZ_EFORMAT, "__metadata__");
    expect_fail("huge numel",
                "{" T("a", "F32", "[4294967296,4294967296,4294967296]", 0, 4) "}", 4, KVZ_EFORMAT,
                "overflow");
    expect_fail("numel x size overflow", "{" T("a", "F64", "[4611686018427387904]", 0, 4) "}", 4,
                KVZ_EFORMAT, "overflows");

    /* header length past EOF */
    char path[512];
    snprintf(path, sizeof path, "%s/short.safetensors", kvz_test_tmpdir());
    FILE *fp = fopen(path, "wb");
    fwrite("\xff\x00\x00\x00\x00\x00\x00\x00{}", 1, 10, fp);
    fclose(fp);
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    KVZ_CHECK(kvz_safetensors_open(path, &st, &err) == KVZ_EFORMAT && strstr(err.msg, "past the end"),
              "header length past EOF: %s", err.msg);
    fp = fopen(path, "wb");
    fwrite("\x02\x00", 1, 2, fp);
    fclose(fp);
    KVZ_CHECK(kvz_safetensors_open(path, &st, &err) == KVZ_EFORMAT && strstr(err.msg, "too small"),
              "tiny file: %s", err.msg);
}

static void test_good_and_dtypes(void)
{
    /* F16 values: 1.0, -2.0, smallest subnormal, +inf; BF16: 1.0, -0.5; I64 one value. */
    const char *path = write_st("good.safetensors",
                                "{\"__metadata__\":{\"format\":\"pt\"},"
                                T("h", "F16", "[2,2]", 0, 8) "," T("b", "BF16", "[2]", 8, 12) ","
                                T("i", "I64", "[1]", 12, 20) "," T("z", "F32", "[0,3]", 20, 20)
                                "," T("s", "F32", "[]", 20, 24) "}",
                                24);
    /* overwrite the data with known values */
    FILE *fp = fopen(path, "r+b");
    fseek(fp, -24, SEEK_END);
    const unsigned char data[24] = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c,
                                    0x80, 0x3f, 0x00, 0xbf, 7, 0, 0, 0, 0, 0, 0, 0,
                                    0x00, 0x00, 0x80, 0x3f};
    fwrite(data, 1, sizeof data, fp);
    fclose(fp);
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    int rc = kvz_safetensors_open(path, &st, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    KVZ_CHECK(kvz_safetensors_n_tensors(st) == 5, "5 tensors");
    float h[4], b[2], s[1];
    const kvz_st_tensor *th = kvz_safetensors_find(st, "h");
    KVZ_CHECK_OK(kvz_safetensors_to_f32(st, th, h, 4, &err), err);
    KVZ_CHECK(h[0] == 1.0f && h[1] == -2.0f && h[2] == ldexpf(1.0f, -24) && isinf(h[3]) && h[3] > 0,
              "F16 values %g %g %g %g", h[0], h[1], h[2], h[3]);
    KVZ_CHECK_OK(kvz_safetensors_to_f32(st, kvz_safetensors_find(st, "b"), b, 2, &err), err);
    KVZ_CHECK(b[0] == 1.0f && b[1] == -0.5f, "BF16 values %g %g", b[0], b[1]);
    KVZ_CHECK_OK(kvz_safetensors_to_f32(st, kvz_safetensors_find(st, "s"), s, 1, &err), err);
    KVZ_CHECK(s[0] == 1.0f && kvz_safetensors_find(st, "s")->n_dims == 0, "scalar");
    KVZ_CHECK(kvz_safetensors_find(st, "z")->numel == 0, "empty tensor");
    float i64[1];
    rc = kvz_safetensors_to_f32(st, kvz_safetensors_find(st, "i"), i64, 1, &err);
    KVZ_CHECK(rc == KVZ_EUNSUPPORTED && strstr(err.msg, "'i'") && strstr(err.msg, "I64"),
              "I64 refused: %s", err.msg);
    rc = kvz_safetensors_to_f32(st, th, h, 3, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "wrong destination size refused");
    KVZ_CHECK(kvz_safetensors_find(st, "nope") == NULL, "absent name");
    kvz_safetensors_close(st);
}

/* ---------- shards ---------- */

static void write_text(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", kvz_test_tmpdir(), name);
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
}

static void expect_index_fail(const char *what, const char *index, const char *needle)
{
    write_text("model.safetensors.index.json", index);
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    int rc = kvz_safetensors_open(kvz_test_tmpdir(), &st, &err);
    KVZ_CHECK(rc != KVZ_OK && strstr(err.msg, needle), "%s: %s", what, err.msg);
    kvz_safetensors_close(st);
}

static void test_shards(void)
{
    write_st("s1.safetensors", "{" T("a", "F32", "[1]", 0, 4) "}", 4);
    write_st("s2.safetensors", "{" T("b", "F32", "[1]", 0, 4) "}", 4);
    write_st("s3.safetensors", "{" T("a", "F32", "[1]", 0, 4) "}", 4);
    write_text("model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    int rc = kvz_safetensors_open(kvz_test_tmpdir(), &st, &err);
    KVZ_CHECK_OK(rc, err);
    if (!rc)
        KVZ_CHECK(kvz_safetensors_n_files(st) == 2 && kvz_safetensors_find(st, "b") &&
                      kvz_safetensors_find(st, "b")->file_index == 1,
                  "two shards merged");
    kvz_safetensors_close(st);
    expect_index_fail("missing shard", "{\"weight_map\":{\"a\":\"nope.safetensors\"}}", "does not exist");
    expect_index_fail("tensor stored twice",
                      "{\"weight_map\":{\"a\":\"s1.safetensors\",\"x\":\"s3.safetensors\"}}",
                      "stored twice");
    expect_index_fail("listed twice", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s3.safetensors\"}}",
                      "duplicate");
    expect_index_fail("wrong shard", "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s2.safetensors\"}}",
                      "does not hold");
    expect_index_fail("no weight_map", "{\"metadata\":{}}", "weight_map");
    expect_index_fail("path escape", "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", "not a file name");
    expect_index_fail("not JSON", "{\"weight_map\":", "not valid JSON");
}

int main(void)
{
    test_fixtures();
    test_bad_headers();
    test_good_and_dtypes();
    test_shards();
    return kvz_test_done();
}
