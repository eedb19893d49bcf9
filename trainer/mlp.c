/* mlp: the MLP surrogate's model side for training: the flat parameter
 * layout, nn.Linear default init, and the float32 forward + backward of the
 * MSE loss with cblas_sgemm (see mlp.h for the formulas). */
#include "gelu.h"
#include "mlp.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "mlp_work.h"

#define MLP_SQRT1_2 0.70710678118654752440
#define MLP_INV_SQRT_2PI 0.39894228040143267794

struct kvz_mlp_work {
    size_t max_rows;
    float *h, *a, *da; /* [max_rows, Dh]: pre-activation, gelu(h), dL/da then dL/dh */
    float *out, *dy;   /* [max_rows, Hkv]: prediction, dL/dy */
};

size_t kvz_mlp_n_params(kvz_mlp_shape s)
{
    return s.d_hidden * s.d_in + s.d_hidden + s.d_out * s.d_hidden + s.d_out;
}

kvz_surrogate_layer kvz_mlp_view(kvz_mlp_shape s, float *flat)
{
    kvz_surrogate_layer v;
    v.w1 = flat;
    v.b1 = v.w1 + s.d_hidden * s.d_in;
    v.w2 = v.b1 + s.d_hidden;
    v.b2 = v.w2 + s.d_out * s.d_hidden;
    return v;
}

static void fill_uniform(uint64_t *rng, float *v, size_t n, double bound)
{
    for (size_t i = 0; i < n; i++) {
        double u = (double)(kvz_mlp_rng_next(rng) >> 40) * (1.0 / 16777216.0);
        v[i] = (float)((2.0 * u - 1.0) * bound);
    }
}

void kvz_mlp_init_default(kvz_mlp_shape s, float *flat, uint64_t seed)
{
    uint64_t rng = seed ^ KVZ_MLP_SALT_INIT;
    kvz_surrogate_layer p = kvz_mlp_view(s, flat);
    double bound1 = 1.0 / sqrt((double)s.d_in), bound2 = 1.0 / sqrt((double)s.d_hidden);
    fill_uniform(&rng, p.w1, s.d_hidden * s.d_in, bound1);
    fill_uniform(&rng, p.b1, s.d_hidden, bound1);
    fill_uniform(&rng, p.w2, s.d_out * s.d_hidden, bound2);
    fill_uniform(&rng, p.b2, s.d_out, bound2);
}

kvz_mlp_work *kvz_mlp_work_create(kvz_mlp_shape s, size_t max_rows)
{
    kvz_mlp_work *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->max_rows = max_rows;
    w->h = malloc(max_rows * s.d_hidden * sizeof *w->h);
    w->a = malloc(max_rows * s.d_hidden * sizeof *w->a);
    w->da = malloc(max_rows * s.d_hidden * sizeof *w->da);
    w->out = malloc(max_rows * s.d_out * sizeof *w->out);
    w->dy = malloc(max_rows * s.d_out * sizeof *w->dy);
    if (!w->h || !w->a || !w->da || !w->out || !w->dy) {
        kvz_mlp_work_free(w);
        return NULL;
    }
    return w;
}

void kvz_mlp_work_free(kvz_mlp_work *w)
{
    if (!w)
        return;
    free(w->h);
    free(w->a);
    free(w->da);
    free(w->out);
    free(w->dy);
    free(w);
}

/* out[n, m] = in[n, k] W^T + bias, W [m, k]. */
static void linear_forward(const float *in, size_t n, size_t k, const float *W, const float *bias,
                           size_t m, float *out)
{
    for (size_t r = 0; r < n; r++)
        for (size_t j = 0; j < m; j++)
            out[r * m + j] = bias[j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)m, (int)k, 1.0f, in,
                (int)k, W, (int)k, 1.0f, out, (int)m);
}

/* gW [m, k] = d[n, m]^T in[n, k]; gb[m] = column sums of d (float64 sums). */
static void linear_param_grad(const float *d, const float *in, size_t n, size_t k, size_t m,
                              float *gW, float *gb)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)k, (int)n, 1.0f, d, (int)m,
                in, (int)k, 0.0f, gW, (int)k);
    for (size_t j = 0; j < m; j++) {
        double acc = 0;
        for (size_t r = 0; r < n; r++)
            acc += d[r * m + j];
        gb[j] = (float)acc;
    }
}

void kvz_mlp_work_loss_grad(kvz_mlp_shape s, const float *flat, const float *x, const float *y,
                            size_t n, kvz_mlp_work *w, double *loss, float *grad)
{
    size_t D = s.d_in, Dh = s.d_hidden, H = s.d_out;
    kvz_surrogate_layer p = kvz_mlp_view(s, (float *)flat);
    linear_forward(x, n, D, p.w1, p.b1, Dh, w->h);
    kvz_gelu_forward(w->h, w->a, n * Dh);
    linear_forward(w->a, n, Dh, p.w2, p.b2, H, w->out);
    double sse = 0;
    float scale = 2.0f / (float)(n * H);
    for (size_t i = 0; i < n * H; i++) {
        float r = w->out[i] - y[i];
        sse += (double)r * r;
        w->dy[i] = scale * r;
    }
    *loss = sse / (double)(n * H);
    if (!grad)
        return;
    kvz_surrogate_layer g = kvz_mlp_view(s, grad);
    linear_param_grad(w->dy, w->a, n, Dh, H, g.w2, g.b2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)Dh, (int)H, 1.0f, w->dy,
                (int)H, p.w2, (int)Dh, 0.0f, w->da, (int)Dh);
    kvz_gelu_backward_mul(w->h, w->da, n * Dh);
    linear_param_grad(w->da, x, n, D, Dh, g.w1, g.b1);
}

static int check_shape(kvz_mlp_shape s, kvz_error *err)
{
    const size_t big = (size_t)1 << 30;
    if (!s.d_in || !s.d_hidden || !s.d_out || s.d_in > big || s.d_hidden > big || s.d_out > big)
        return kvz_fail(err, KVZ_EINVAL, "mlp: bad shape D=%zu Dh=%zu Hkv=%zu", s.d_in,
                        s.d_hidden, s.d_out);
    return KVZ_OK;
}

int kvz_mlp_loss_grad(kvz_mlp_shape s, const float *flat, const float *x, const float *y,
                      size_t n, double *loss, float *grad, kvz_error *err)
{
    int rc = check_shape(s, err);
    if (rc)
        return rc;
    if (!flat || !x || !y || !loss || n == 0 || n > ((size_t)1 << 31) / s.d_hidden)
        return kvz_fail(err, KVZ_EINVAL, "mlp: bad arguments (n=%zu rows)", n);
    kvz_mlp_work *w = kvz_mlp_work_create(s, n);
    if (!w)
        return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory for %zu rows", n);
    kvz_mlp_work_loss_grad(s, flat, x, y, n, w, loss, grad);
    kvz_mlp_work_free(w);
    return KVZ_OK;
}
