/* test_forward_ops: the CPU ops of ops/ops.h against naive references written
 * here (double-precision full-softmax attention on awkward sizes and block
 * sizes, RoPE as a direct rotation, RMSNorm, SwiGLU, sgemm projections,
 * argmax) and RoPE inv_freq / cos / sin against transformers' values recorded
 * in tests/fixtures/forward_ops/rope_inv_freq.json (default and llama3). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"
#include "kvz_test.h"

static unsigned long long g_rng = 88172645463325252ull;

static float rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rnd_array(size_t n, float scale)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; a && i < n; i++)
        a[i] = rnd() * scale;
    return a;
}

/* ---------- attention ---------- */

static void naive_attention(const kvz_attn_args *a, float *out)
{
    size_t dh = a->head_dim, group = a->n_heads / a->n_kv_heads;
    size_t n_keys = a->pos0 + a->n_q;
    double *p = malloc(n_keys * sizeof *p);
    for (size_t i = 0; i < a->n_q; i++)
        for (size_t h = 0; h < a->n_heads; h++) {
            const float *q = a->q + (i * a->n_heads + h) * dh;
            size_t visible = a->pos0 + i + 1, kvh = h / group;
            double mx = -INFINITY, sum = 0.0;
            for (size_t j = 0; j < visible; j++) {
                const float *k = a->k + (j * a->n_kv_heads + kvh) * dh;
                double s = 0.0;
                for (size_t d = 0; d < dh; d++)
                    s += (double)q[d] * k[d];
                p[j] = s * a->scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            for (size_t j = 0; j < visible; j++)
                sum += (p[j] = exp(p[j] - mx));
            for (size_t d = 0; d < dh; d++) {
                double acc = 0.0;
                for (size_t j = 0; j < visible; j++)
                    acc += p[j] / sum * a->v[(j * a->n_kv_heads + kvh) * dh + d];
                out[(i * a->n_heads + h) * dh + d] = (float)acc;
            }
        }
    free(p);
}

static void check_attention(size_t n_q, size_t pos0, size_t H, size_t Hkv, size_t dh, size_t block,
                            int threads)
{
    kvz_ops_set_threads(threads);
    size_t n_keys = pos0 + n_q;
    float *q = rnd_array(n_q * H * dh, 2.0f), *k = rnd_array(n_keys * Hkv * dh, 2.0f);
    float *v = rnd_array(n_keys * Hkv * dh, 1.0f);
    float *got = calloc(n_q * H * dh, sizeof *got), *ref = calloc(n_q * H * dh, sizeof *ref);
    kvz_attn_args a = {q, k, v, got, n_q, pos0, H, Hkv, dh, block, 1.0f / sqrtf((float)dh), NULL};
    KVZ_CHECK(kvz_attention(&a) == KVZ_OK, "attention failed");
    naive_attention(&a, ref);
    char what[128];
    snprintf(what, sizeof what, "attention n_q=%zu pos0=%zu H=%zu Hkv=%zu dh=%zu block=%zu threads=%d",
             n_q, pos0, H, Hkv, dh, block, threads);
    kvz_test_allclose(what, got, ref, n_q * H * dh, 2e-6, 2e-5);
    free(q), free(k), free(v), free(got), free(ref);
}

static void test_attention(void)
{
    check_attention(1, 0, 1, 1, 2, 0, 1);
    check_attention(37, 0, 6, 2, 10, 8, 2);
    check_attention(37, 13, 6, 2, 10, 5, 2);
    check_attention(37, 13, 6, 3, 10, 1, 1);
    check_attention(1, 300, 4, 4, 16, 7, 2);   /* decode step with a long cache */
    check_attention(300, 0, 3, 1, 64, 0, 2);   /* default block 256: two key blocks */
    check_attention(129, 70, 9, 3, 64, 64, 3); /* more threads than cores is fine */
}

/* ---------- RoPE ---------- */

static void test_rope_apply(void)
{
    size_t T = 5, H = 3, dh = 12, half = dh / 2, pos0 = 41;
    float inv[6];
    kvz_rope_inv_freq_raw(10000.0, dh, NULL, inv);
    float *x = rnd_array(T * H * dh, 1.0f), *y = malloc(T * H * dh * sizeof *y);
    memcpy(y, x, T * H * dh * sizeof *y);
    kvz_rope_apply(y, T, H, dh, pos0, inv);
    float *ref = malloc(T * H * dh * sizeof *ref);
    for (size_t t = 0; t < T; t++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < half; i++) {
                const float *v = x + (t * H + h) * dh;
                double ang = (double)(float)((float)(pos0 + t) * inv[i]);
                double c = cos(ang), s = sin(ang);
                ref[(t * H + h) * dh + i] = (float)(v[i] * c - v[i + half] * s);
                ref[(t * H + h) * dh + i + half] = (float)(v[i + half] * c + v[i] * s);
            }
    kvz_test_allclose("rope apply vs direct rotation", y, ref, T * H * dh, 1e-6, 1e-5);
    float direct = (float)(1.0 / pow(10000.0, 2.0 * 3 / 12.0));
    KVZ_CHECK(fabsf(inv[3] - direct) <= 1e-7f * direct, "inv_freq[3] %g vs %g", inv[3], direct);
    free(x), free(y), free(ref);
}

static void floats_from_json(json_t *arr, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)json_number_value(json_array_get(arr, i));
}

static void check_rope_case(json_t *c, json_t *positions)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    size_t dh = (size_t)json_integer_value(json_object_get(c, "head_dim")), half = dh / 2;
    json_t *sc = json_object_get(c, "scaling");
    kvz_rope_scaling s = {KVZ_ROPE_SCALING_NONE, 0, 0, 0, 0};
    if (json_is_object(sc))
        s = (kvz_rope_scaling){KVZ_ROPE_SCALING_LLAMA3,
                               json_number_value(json_object_get(sc, "factor")),
                               json_number_value(json_object_get(sc, "low_freq_factor")),
                               json_number_value(json_object_get(sc, "high_freq_factor")),
                               (size_t)json_integer_value(json_object_get(sc, "original_max_position_embeddings"))};
    float inv[256], ref[256], cs[512], ref_cos[256], ref_sin[256];
    kvz_rope_inv_freq_raw(json_number_value(json_object_get(c, "theta")), dh, &s, inv);
    floats_from_json(json_object_get(c, "inv_freq"), ref, half);
    char what[160];
    snprintf(what, sizeof what, "%s inv_freq", name);
    kvz_test_allclose(what, inv, ref, half, 0.0, 2e-7);
    for (size_t p = 0; p < json_array_size(positions); p++) {
        size_t pos = (size_t)json_integer_value(json_array_get(positions, p));
        kvz_rope_cos_sin(pos, ref, half, cs); /* transformers' inv_freq in, its cos/sin out */
        floats_from_json(json_array_get(json_object_get(c, "cos"), p), ref_cos, half);
        floats_from_json(json_array_get(json_object_get(c, "sin"), p), ref_sin, half);
        snprintf(what, sizeof what, "%s cos at %zu", name, pos);
        kvz_test_allclose(what, cs, ref_cos, half, 1e-6, 0.0);
        snprintf(what, sizeof what, "%s sin at %zu", name, pos);
        kvz_test_allclose(what, cs + half, ref_sin, half, 1e-6, 0.0);
    }
}

static void test_rope_fixture(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(kvz_test_fixture("forward_ops/rope_inv_freq.json"), 0, &jerr);
    KVZ_CHECK(root != NULL, "fixture: %s", jerr.text);
    if (!root)
        return;
    json_t *cases = json_object_get(root, "cases");
    KVZ_CHECK(json_array_size(cases) >= 6, "fixture has %zu cases", json_array_size(cases));
    for (size_t i = 0; i < json_array_size(cases); i++)
        check_rope_case(json_array_get(cases, i), json_object_get(root, "positions"));
    json_decref(root);
}

/* ---------- elementwise and projections ---------- */

static void test_rmsnorm_swiglu_argmax(void)
{
    size_t rows = 3, dim = 7;
    float *x = rnd_array(rows * dim, 3.0f), *w = rnd_array(dim, 1.0f), y[21], ref[21];
    for (size_t r = 0; r < rows; r++) {
        double ss = 0.0;
        for (size_t i = 0; i < dim; i++)
            ss += (double)x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / dim + 1e-5);
        for (size_t i = 0; i < dim; i++)
            ref[r * dim + i] = (float)(w[i] * x[r * dim + i] * inv);
    }
    kvz_rmsnorm(x, w, y, rows, dim, 1e-5f);
    kvz_test_allclose("rmsnorm", y, ref, rows * dim, 1e-6, 1e-6);
    kvz_rmsnorm(x, w, x, rows, dim, 1e-5f); /* in place */
    kvz_test_allclose("rmsnorm in place", x, ref, rows * dim, 1e-6, 1e-6);
    float gu[2 * 2 * 3] = {-20, 0, 1.5f, 2, 3, 4, 0.5f, -1, 30, 1, 1, 1}, act[6], aref[6];
    for (size_t r = 0; r < 2; r++)
        for (size_t i = 0; i < 3; i++) {
            double g = gu[r * 6 + i];
            aref[r * 3 + i] = (float)(g / (1.0 + exp(-g)) * gu[r * 6 + 3 + i]);
        }
    kvz_swiglu(gu, act, 2, 3);
    kvz_test_allclose("swiglu", act, aref, 6, 1e-7, 1e-6);
    float v[6] = {1, 5, -2, 5, 4, 0};
    KVZ_CHECK(kvz_argmax(v, 6) == 1, "argmax takes the first of ties");
    free(x), free(w);
}

static void test_linear(void)
{
    size_t T = 9, in = 33, out = 17;
    float *x = rnd_array(T * in, 1.0f), *w = rnd_array(out * in, 1.0f), *b = rnd_array(out, 1.0f);
    float *y = malloc(T * out * sizeof *y), *ref = malloc(T * out * sizeof *ref);
    for (size_t t = 0; t < T; t++)
        for (size_t o = 0; o < out; o++) {
            double acc = b[o];
            for (size_t i = 0; i < in; i++)
                acc += (double)x[t * in + i] * w[o * in + i];
            ref[t * out + o] = (float)acc;
        }
    kvz_linear(x, w, b, y, T, in, out);
    kvz_test_allclose("linear with bias", y, ref, T * out, 1e-5, 1e-5);
    double sec, flops;
    kvz_ops_linear_stats(&sec, &flops);
    KVZ_CHECK(flops >= 2.0 * T * in * out, "linear stats count flops (%g)", flops);
    free(x), free(w), free(b), free(y), free(ref);
}

int main(void)
{
    test_rope_fixture();
    test_rope_apply();
    test_rmsnorm_swiglu_argmax();
    test_linear();
    test_attention();
    kvz_ops_set_threads(0);
    return kvz_test_done();
}
