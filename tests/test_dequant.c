/* test_dequant: fp32 dequantization of every supported ggml type against
 * gguf-py's gguf.quants.dequantize (tests/fixtures/gguf/all_types.f32, written
 * by tests/reference/make_gguf_fixtures.py from the bytes in all_types.gguf).
 * Tolerance: NONE - values must be bit-identical (NaN matches NaN), because
 * the C code performs the same fp32 operations in the same order as ggml and
 * gguf-py (fp16->fp32 is exact; one or two fp32 products/sums per element).
 * Also checks the row-wise API, the type table and the fp16/bf16 helpers. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvz_file.h"
#include "kvz_test.h"
#include "model/dequant.h"
#include "model/gguf.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Bit-exact comparison; NaN equals NaN. Returns the number of mismatches. */
static size_t count_mismatches(const char *name, const float *got, const float *ref, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if ((isnan(got[i]) && isnan(ref[i])) || bits_of(got[i]) == bits_of(ref[i]))
            continue;
        if (bad++ < 5)
            fprintf(stderr, "  %s[%zu]: got %.9g (0x%08x) ref %.9g (0x%08x)\n", name, i, got[i],
                    bits_of(got[i]), ref[i], bits_of(ref[i]));
    }
    return bad;
}

static void check_rows_api(kvz_gguf *g, const kvz_gguf_tensor_info *t, const float *ref)
{
    size_t row = (size_t)t->ne[0], rows = (size_t)(t->numel / t->ne[0]);
    if (rows < 2)
        return;
    float *out = malloc((rows - 1) * row * sizeof *out);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_gguf_tensor_rows_to_f32(g, t, 1, rows - 1, out, &err), err);
    KVZ_CHECK(count_mismatches(t->name, out, ref + row, (rows - 1) * row) == 0, "%s rows 1..",
              t->name);
    KVZ_CHECK(kvz_gguf_tensor_rows_to_f32(g, t, rows, 1, out, &err) == KVZ_EINVAL, "row range");
    KVZ_CHECK(strstr(err.msg, t->name) != NULL, "%s", err.msg);
    free(out);
}

static void check_tensor(kvz_gguf *g, json_t *jt, const float *values, size_t n_values)
{
    const char *name = json_string_value(json_object_get(jt, "name"));
    json_t *at = json_object_get(jt, "values_at");
    const kvz_gguf_tensor_info *t = kvz_gguf_find_tensor(g, name);
    KVZ_CHECK(t != NULL, "tensor %s", name);
    if (!t || !at)
        return;
    size_t off = (size_t)json_integer_value(at);
    KVZ_CHECK(off + t->numel <= n_values, "%s: values in range", name);
    if (off + t->numel > n_values)
        return;
    float *out = malloc(t->numel * sizeof *out);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_gguf_tensor_to_f32(g, t, out, &err), err);
    size_t bad = count_mismatches(name, out, values + off, (size_t)t->numel);
    KVZ_CHECK(bad == 0, "%s (%s): %zu of %" PRIu64 " values differ from gguf-py", name,
              kvz_ggml_type_name(t->type), bad, t->numel);
    check_rows_api(g, t, values + off);
    free(out);
}

static void check_fixture(void)
{
    json_error_t jerr;
    json_t *doc = json_load_file(kvz_test_fixture("gguf/all_types.json"), 0, &jerr);
    char *raw = NULL;
    size_t len = 0;
    kvz_error err = {0};
    KVZ_CHECK(doc != NULL, "all_types.json: %s", jerr.text);
    KVZ_CHECK_OK(kvz_file_read_all(kvz_test_fixture("gguf/all_types.f32"), &raw, &len, &err), err);
    kvz_gguf *g = NULL;
    KVZ_CHECK_OK(kvz_gguf_open(kvz_test_fixture("gguf/all_types.gguf"), &g, &err), err);
    if (doc && raw && g) {
        size_t n = len / sizeof(float);
        KVZ_CHECK(n == (size_t)json_integer_value(json_object_get(doc, "n_values")), "n_values");
        float *values = malloc(len);
        memcpy(values, raw, len);
        size_t k;
        json_t *jt;
        json_array_foreach(json_object_get(doc, "tensors"), k, jt)
            check_tensor(g, jt, values, n);
        free(values);
    }
    kvz_gguf_close(g);
    free(raw);
    json_decref(doc);
}

static void check_type_table(void)
{
    static const struct { uint32_t type; const char *name; size_t bs, ts; int ok; } T[] = {
        {KVZ_GGML_F32, "F32", 1, 4, 1},     {KVZ_GGML_F16, "F16", 1, 2, 1},
        {KVZ_GGML_BF16, "BF16", 1, 2, 1},   {KVZ_GGML_Q8_0, "Q8_0", 32, 34, 1},
        {KVZ_GGML_Q4_0, "Q4_0", 32, 18, 1}, {KVZ_GGML_Q4_1, "Q4_1", 32, 20, 1},
        {KVZ_GGML_Q4_K, "Q4_K", 256, 144, 1}, {KVZ_GGML_Q6_K, "Q6_K", 256, 210, 1},
        {13, "Q5_K", 256, 176, 0},          {39, "MXFP4", 32, 17, 0},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        KVZ_CHECK(!strcmp(kvz_ggml_type_name(T[i].type), T[i].name), "name %u", T[i].type);
        KVZ_CHECK(kvz_ggml_block_size(T[i].type) == T[i].bs, "block size %s", T[i].name);
        KVZ_CHECK(kvz_ggml_type_size(T[i].type) == T[i].ts, "type size %s", T[i].name);
        KVZ_CHECK(kvz_ggml_type_supported(T[i].type) == T[i].ok, "supported %s", T[i].name);
    }
    const uint32_t unknown[] = {4, 5, 31, 36, 40, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        KVZ_CHECK(kvz_ggml_type_name(unknown[i]) == NULL && kvz_ggml_block_size(unknown[i]) == 0,
                  "type %u unknown", unknown[i]);
    size_t bytes = 0;
    KVZ_CHECK(kvz_ggml_row_bytes(KVZ_GGML_Q4_K, 512, &bytes) == KVZ_OK && bytes == 288, "Q4_K");
    KVZ_CHECK(kvz_ggml_row_bytes(KVZ_GGML_Q4_K, 100, &bytes) == KVZ_EINVAL, "partial block");
    KVZ_CHECK(kvz_ggml_row_bytes(77, 32, &bytes) == KVZ_EUNSUPPORTED, "unknown type");
    KVZ_CHECK(kvz_ggml_row_bytes(KVZ_GGML_F32, SIZE_MAX / 2, &bytes) == KVZ_EFORMAT, "overflow");
    float dst[32];
    unsigned char src[64] = {0};
    KVZ_CHECK(kvz_dequantize(13, src, dst, 256) == KVZ_EUNSUPPORTED, "Q5_K rejected");
    KVZ_CHECK(kvz_dequantize(KVZ_GGML_Q8_0, src, dst, 31) == KVZ_EINVAL, "n not a multiple of 32");
}

static void check_half_helpers(void)
{
    KVZ_CHECK(kvz_f16_to_f32(0x3c00) == 1.0f, "f16 1");
    KVZ_CHECK(kvz_f16_to_f32(0xc000) == -2.0f, "f16 -2");
    KVZ_CHECK(kvz_f16_to_f32(0x7bff) == 65504.0f, "f16 max");
    KVZ_CHECK(kvz_f16_to_f32(0x0001) == 0x1p-24f, "f16 min subnormal");
    KVZ_CHECK(kvz_f16_to_f32(0x03ff) == 0x3ffp-24f, "f16 max subnormal");
    KVZ_CHECK(kvz_f16_to_f32(0x0400) == 0x1p-14f, "f16 min normal");
    KVZ_CHECK(bits_of(kvz_f16_to_f32(0x8000)) == 0x80000000u, "f16 -0");
    KVZ_CHECK(isinf(kvz_f16_to_f32(0xfc00)) && kvz_f16_to_f32(0xfc00) < 0, "f16 -inf");
    KVZ_CHECK(isnan(kvz_f16_to_f32(0x7e00)), "f16 nan");
    KVZ_CHECK(kvz_bf16_to_f32(0x3f80) == 1.0f, "bf16 1");
    KVZ_CHECK(kvz_bf16_to_f32(0xc049) == -3.140625f, "bf16 -3.14");
    KVZ_CHECK(bits_of(kvz_bf16_to_f32(0x0001)) == 0x00010000u, "bf16 subnormal");
    /* Every finite f16 against an independent formula:
     * value = mant * 2^(exp-25) for normals, so compare against ldexpf. */
    size_t bad = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        uint32_t e = h >> 10, m = h & 0x3ff;
        float want = e ? ldexpf((float)(m | 0x400), (int)e - 25) : ldexpf((float)m, -24);
        if (kvz_f16_to_f32((uint16_t)h) != want || kvz_f16_to_f32((uint16_t)(h | 0x8000)) != -want)
            bad++;
    }
    KVZ_CHECK(bad == 0, "%zu finite f16 values convert wrongly", bad);
}

int main(void)
{
    check_type_table();
    check_half_helpers();
    check_fixture();
    return kvz_test_done();
}
