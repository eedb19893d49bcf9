/* surrogate: the per-layer KVzap surrogate object (spec section 3).
 * Owns: allocating the one float32 parameter block, pointing into a layer's
 * weights, and the runtime forward pass (Linear: x W^T + b; MLP: exact-erf
 * GELU between two linears) with OpenBLAS sgemm. The trainer's reported
 * predictions and every re-loaded export go through this same function. */
#include "../ops/ops.h"
#include "surrogate.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static size_t layer_floats(int kind, size_t d_in, size_t d_hidden, size_t d_out)
{
    if (kind == KVZ_SURROGATE_KIND_LINEAR)
        return d_out * d_in + d_out;
    return d_hidden * d_in + d_hidden + d_out * d_hidden + d_out;
}

/* Refuses sizes whose parameter count would overflow size_t. */
static int sizes_fit(int kind, size_t n_layers, size_t d_in, size_t d_hidden, size_t d_out)
{
    size_t cap = SIZE_MAX / sizeof(float) / 4;
    size_t widest = kind == KVZ_SURROGATE_KIND_LINEAR ? d_out : d_hidden;
    if (d_in > cap || d_out > cap || d_hidden > cap)
        return 0;
    if (widest && d_in > cap / widest)
        return 0;
    if (d_hidden && d_out > cap / d_hidden)
        return 0;
    size_t per_layer = layer_floats(kind, d_in, d_hidden, d_out);
    return per_layer <= cap && n_layers <= cap / per_layer;
}

static int check_shape(int kind, size_t n_layers, size_t d_in, size_t d_hidden, size_t d_out,
                       kvz_error *err)
{
    if (kind != KVZ_SURROGATE_KIND_LINEAR && kind != KVZ_SURROGATE_KIND_MLP)
        return kvz_fail(err, KVZ_EINVAL, "surrogate: unknown kind %d", kind);
    if (n_layers == 0 || d_in == 0 || d_out == 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "surrogate: layers (%zu), input dim (%zu) and output dim (%zu) must be > 0",
                        n_layers, d_in, d_out);
    if (kind == KVZ_SURROGATE_KIND_LINEAR && d_hidden != 0)
        return kvz_fail(err, KVZ_EINVAL, "surrogate: a linear surrogate has hidden dim 0, not %zu",
                        d_hidden);
    if (kind == KVZ_SURROGATE_KIND_MLP && d_hidden == 0)
        return kvz_fail(err, KVZ_EINVAL, "surrogate: an MLP surrogate needs hidden dim > 0");
    if (!sizes_fit(kind, n_layers, d_in, d_hidden, d_out))
        return kvz_fail(err, KVZ_EINVAL, "surrogate: sizes %zu x %zu x %zu x %zu are too large",
                        n_layers, d_in, d_hidden, d_out);
    return KVZ_OK;
}

int kvz_surrogate_create(int kind, size_t n_layers, size_t d_in, size_t d_hidden, size_t d_out,
                         kvz_surrogate **out, kvz_error *err)
{
    *out = NULL;
    int rc = check_shape(kind, n_layers, d_in, d_hidden, d_out, err);
    if (rc)
        return rc;
    kvz_surrogate *s = calloc(1, sizeof *s);
    size_t stride = layer_floats(kind, d_in, d_hidden, d_out);
    float *params = s ? calloc(n_layers * stride, sizeof(float)) : NULL;
    if (!params) {
        free(s);
        return kvz_fail(err, KVZ_ENOMEM, "surrogate: out of memory for %zu parameters",
                        n_layers * stride);
    }
    *s = (kvz_surrogate){.kind = kind, .n_layers = n_layers, .d_in = d_in,
                         .d_hidden = d_hidden, .d_out = d_out, .params = params,
                         .layer_stride = stride};
    *out = s;
    return KVZ_OK;
}

void kvz_surrogate_free(kvz_surrogate *s)
{
    if (!s)
        return;
    free(s->params);
    free(s);
}

kvz_surrogate_layer kvz_surrogate_layer_at(const kvz_surrogate *s, size_t layer)
{
    kvz_surrogate_layer l = {0};
    if (!s || layer >= s->n_layers)
        return l;
    float *p = s->params + layer * s->layer_stride;
    l.w1 = p;
    if (s->kind == KVZ_SURROGATE_KIND_LINEAR) {
        l.b1 = p + s->d_out * s->d_in;
        return l;
    }
    l.b1 = l.w1 + s->d_hidden * s->d_in;
    l.w2 = l.b1 + s->d_hidden;
    l.b2 = l.w2 + s->d_out * s->d_hidden;
    return l;
}

/* out[n, m] = x[n, k] w[m, k]^T + bias[m] (bias broadcast first, then sgemm
 * accumulates with beta = 1). */
static void linear_forward(const float *x, size_t n, size_t k, const float *w, const float *bias,
                           size_t m, float *out)
{
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < m; c++)
            out[r * m + c] = bias[c];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)m, (blasint)k, 1.0f,
                x, (blasint)k, w, (blasint)k, 1.0f, out, (blasint)m);
}

int kvz_surrogate_predict(const kvz_surrogate *s, size_t layer, const float *x, size_t n,
                          float *y, float *scratch_or_NULL, kvz_error *err)
{
    if (!s || !s->params)
        return kvz_fail(err, KVZ_EINVAL, "surrogate: predict on a NULL surrogate");
    if (layer >= s->n_layers)
        return kvz_fail(err, KVZ_EINVAL, "surrogate: layer %zu out of range (%zu layers)", layer,
                        s->n_layers);
    if (n == 0)
        return KVZ_OK;
    if (!x || !y)
        return kvz_fail(err, KVZ_EINVAL, "surrogate: predict needs input and output buffers");
    if (n > (size_t)INT32_MAX)
        return kvz_fail(err, KVZ_EINVAL, "surrogate: %zu rows exceed the BLAS limit", n);
    kvz_surrogate_layer l = kvz_surrogate_layer_at(s, layer);
    if (s->kind == KVZ_SURROGATE_KIND_LINEAR) {
        linear_forward(x, n, s->d_in, l.w1, l.b1, s->d_out, y);
        return KVZ_OK;
    }
    float *hidden = scratch_or_NULL;
    if (!hidden) {
        if (s->d_hidden > SIZE_MAX / sizeof(float) / n ||
            !(hidden = malloc(n * s->d_hidden * sizeof(float))))
            return kvz_fail(err, KVZ_ENOMEM, "surrogate: out of memory for %zu x %zu scratch", n,
                            s->d_hidden);
    }
    linear_forward(x, n, s->d_in, l.w1, l.b1, s->d_hidden, hidden);
    kvz_gelu_forward(hidden, hidden, n * s->d_hidden);
    linear_forward(hidden, n, s->d_hidden, l.w2, l.b2, s->d_out, y);
    if (!scratch_or_NULL)
        free(hidden);
    return KVZ_OK;
}
