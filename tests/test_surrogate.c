/* test_surrogate: the surrogate object and its sgemm forward pass against a
 * naive double-precision implementation (Linear and MLP, awkward sizes),
 * scratch NULL vs caller-given, layer pointers and argument errors. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "trainer/surrogate.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float uniform(float scale)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return scale * ((float)(rng_state >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
}

static void fill(float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = uniform(scale);
}

static void naive_linear(const float *x, size_t n, size_t k, const float *w, const float *b,
                         size_t m, double *out)
{
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < m; c++) {
            double acc = b[c];
            for (size_t i = 0; i < k; i++)
                acc += (double)x[r * k + i] * (double)w[c * k + i];
            out[r * m + c] = acc;
        }
}

static void naive_predict(const kvz_surrogate *s, size_t layer, const float *x, size_t n,
                          float *y)
{
    kvz_surrogate_layer l = kvz_surrogate_layer_at(s, layer);
    double *out = malloc(n * s->d_out * sizeof *out);
    if (s->kind == KVZ_SURROGATE_KIND_LINEAR) {
        naive_linear(x, n, s->d_in, l.w1, l.b1, s->d_out, out);
    } else {
        double *h = malloc(n * s->d_hidden * sizeof *h);
        float *hf = malloc(n * s->d_hidden * sizeof *hf);
        naive_linear(x, n, s->d_in, l.w1, l.b1, s->d_hidden, h);
        for (size_t i = 0; i < n * s->d_hidden; i++)
            hf[i] = (float)(0.5 * h[i] * (1.0 + erf(h[i] / sqrt(2.0))));
        naive_linear(hf, n, s->d_hidden, l.w2, l.b2, s->d_out, out);
        free(h);
        free(hf);
    }
    for (size_t i = 0; i < n * s->d_out; i++)
        y[i] = (float)out[i];
    free(out);
}

static void check_model(int kind, size_t L, size_t D, size_t Dh, size_t H, size_t n)
{
    kvz_surrogate *s;
    kvz_error err;
    KVZ_CHECK_OK(kvz_surrogate_create(kind, L, D, Dh, H, &s, &err), err);
    fill(s->params, L * s->layer_stride, 0.3f);
    float *x = malloc(n * D * sizeof *x), *y = malloc(n * H * sizeof *y);
    float *y2 = malloc(n * H * sizeof *y2), *ref = malloc(n * H * sizeof *ref);
    float *scratch = malloc((n * Dh + 1) * sizeof *scratch);
    fill(x, n * D, 2.0f);
    for (size_t layer = 0; layer < L; layer++) {
        KVZ_CHECK_OK(kvz_surrogate_predict(s, layer, x, n, y, NULL, &err), err);
        KVZ_CHECK_OK(kvz_surrogate_predict(s, layer, x, n, y2, scratch, &err), err);
        naive_predict(s, layer, x, n, ref);
        kvz_test_allclose(kind ? "mlp vs naive" : "linear vs naive", y, ref, n * H, 1e-5, 1e-5);
        KVZ_CHECK(memcmp(y, y2, n * H * sizeof *y) == 0, "scratch NULL and given differ (layer %zu)",
                  layer);
    }
    free(x), free(y), free(y2), free(ref), free(scratch);
    kvz_surrogate_free(s);
}

static void check_layout(void)
{
    kvz_surrogate *s;
    kvz_error err;
    KVZ_CHECK_OK(kvz_surrogate_create(KVZ_SURROGATE_KIND_MLP, 3, 10, 4, 2, &s, &err), err);
    KVZ_CHECK(s->layer_stride == 4 * 10 + 4 + 2 * 4 + 2, "stride %zu", s->layer_stride);
    kvz_surrogate_layer l = kvz_surrogate_layer_at(s, 2);
    KVZ_CHECK(l.w1 == s->params + 2 * s->layer_stride && l.b1 == l.w1 + 40 && l.w2 == l.b1 + 4 &&
                  l.b2 == l.w2 + 8,
              "MLP layer pointers");
    kvz_surrogate_layer none = kvz_surrogate_layer_at(s, 3);
    KVZ_CHECK(!none.w1 && !none.b2, "out-of-range layer gives NULL pointers");
    for (size_t i = 0; i < 3 * s->layer_stride; i++)
        KVZ_CHECK(s->params[i] == 0.0f, "params zeroed");
    float x[10] = {0}, y[2];
    int rc = kvz_surrogate_predict(s, 3, x, 1, y, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "layer 3"), "bad layer: %s", err.msg);
    KVZ_CHECK_OK(kvz_surrogate_predict(s, 0, x, 0, y, NULL, &err), err);
    kvz_surrogate_free(s);

    KVZ_CHECK_OK(kvz_surrogate_create(KVZ_SURROGATE_KIND_LINEAR, 2, 5, 0, 3, &s, &err), err);
    l = kvz_surrogate_layer_at(s, 1);
    KVZ_CHECK(l.w1 == s->params + 18 && l.b1 == l.w1 + 15 && !l.w2 && !l.b2, "linear pointers");
    kvz_surrogate_free(s);
    kvz_surrogate_free(NULL);
}

static void check_create_errors(void)
{
    kvz_surrogate *s = (kvz_surrogate *)1;
    kvz_error err;
    KVZ_CHECK(kvz_surrogate_create(KVZ_SURROGATE_KIND_LINEAR, 2, 5, 3, 3, &s, &err) == KVZ_EINVAL &&
                  !s,
              "linear with hidden dim: %s", err.msg);
    KVZ_CHECK(kvz_surrogate_create(KVZ_SURROGATE_KIND_MLP, 2, 5, 0, 3, &s, &err) == KVZ_EINVAL,
              "MLP without hidden dim: %s", err.msg);
    KVZ_CHECK(kvz_surrogate_create(KVZ_SURROGATE_KIND_MLP, 0, 5, 2, 3, &s, &err) == KVZ_EINVAL,
              "zero layers: %s", err.msg);
    KVZ_CHECK(kvz_surrogate_create(7, 1, 5, 2, 3, &s, &err) == KVZ_EINVAL, "bad kind: %s", err.msg);
    KVZ_CHECK(kvz_surrogate_create(KVZ_SURROGATE_KIND_LINEAR, SIZE_MAX / 2, SIZE_MAX / 2, 0, 3, &s,
                                   &err) == KVZ_EINVAL,
              "overflowing sizes: %s", err.msg);
}

int main(void)
{
    check_create_errors();
    check_layout();
    check_model(KVZ_SURROGATE_KIND_LINEAR, 3, 37, 0, 5, 13);
    check_model(KVZ_SURROGATE_KIND_LINEAR, 1, 1, 0, 1, 1);
    check_model(KVZ_SURROGATE_KIND_MLP, 3, 45, 7, 3, 17);
    check_model(KVZ_SURROGATE_KIND_MLP, 2, 130, 17, 8, 1);
    check_model(KVZ_SURROGATE_KIND_MLP, 1, 64, 8, 2, 300);
    return kvz_test_done();
}
