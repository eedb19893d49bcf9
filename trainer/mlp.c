/* mlp: the MLP surrogate's model side for training: the flat parameter
 * layout, nn.Linear default init, and the forward + backward of the MSE loss,
 * written once on the backend ops (ops/backend.h; see mlp.h for the
 * formulas): on the cpu backend the float32 sgemm arithmetic it always had,
 * on cuda the same sequence with cuBLAS. */
#include "mlp.h"

#include <math.h>
#include <stdlib.h>

#include "mlp_work.h"

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

struct kvz_mlp_work {
    kvz_backend *be;
    size_t max_rows;
    kvz_buf act;       /* backend memory: */
    float *h, *a, *da; /* [max_rows, Dh]: pre-activation, gelu(h), dL/da then dL/dh */
    float *out, *dy;   /* [max_rows, Hkv]: prediction, dL/dy */
};

int kvz_mlp_work_create(kvz_backend *be, kvz_mlp_shape s, size_t max_rows, kvz_mlp_work **out,
                        kvz_error *err)
{
    *out = NULL;
    kvz_mlp_work *w = calloc(1, sizeof *w);
    if (!w)
        return kvz_fail(err, KVZ_ENOMEM, "mlp: out of memory");
    w->be = be;
    w->max_rows = max_rows;
    size_t Dh = s.d_hidden, H = s.d_out;
    int rc = kvz_backend_alloc(be, KVZ_F32, max_rows * (3 * Dh + 2 * H), "the MLP activations",
                               &w->act, err);
    if (rc) {
        free(w);
        return rc;
    }
    w->h = w->act.data;
    w->a = w->h + max_rows * Dh;
    w->da = w->a + max_rows * Dh;
    w->out = w->da + max_rows * Dh;
    w->dy = w->out + max_rows * H;
    *out = w;
    return KVZ_OK;
}

void kvz_mlp_work_free(kvz_mlp_work *w)
{
    if (!w)
        return;
    kvz_backend_free(w->be, &w->act);
    free(w);
}

/* out[n, m] = in[n, k] W^T + bias, W [m, k]. */
static int linear_forward(kvz_backend *be, const float *in, size_t n, size_t k, const float *W,
                          const float *bias, size_t m, float *out, kvz_gemm_precision prec,
                          kvz_error *err)
{
    int rc = kvz_op_bias_rows(be, out, bias, n, m, err);
    return rc ? rc : kvz_op_gemm(be, 0, 1, n, m, k, in, W, 1.0f, out, prec, err);
}

/* gW [m, k] = d[n, m]^T in[n, k]; gb[m] = column sums of d (float64 sums). */
static int linear_param_grad(kvz_backend *be, const float *d, const float *in, size_t n,
                             size_t k, size_t m, float *gW, float *gb, kvz_gemm_precision prec,
                             kvz_error *err)
{
    int rc = kvz_op_gemm(be, 1, 0, m, k, n, d, in, 0.0f, gW, prec, err);
    return rc ? rc : kvz_op_col_sums(be, d, n, m, gb, err);
}

int kvz_mlp_work_loss_grad(kvz_mlp_shape s, const float *flat, const float *x, const float *y,
                           size_t n, kvz_mlp_work *w, kvz_gemm_precision prec, double *loss,
                           float *grad, kvz_error *err)
{
    size_t D = s.d_in, Dh = s.d_hidden, H = s.d_out;
    kvz_backend *be = w->be;
    kvz_surrogate_layer p = kvz_mlp_view(s, (float *)flat);
    int rc = linear_forward(be, x, n, D, p.w1, p.b1, Dh, w->h, prec, err);
    rc = rc ? rc : kvz_op_gelu(be, w->h, w->a, n * Dh, err);
    rc = rc ? rc : linear_forward(be, w->a, n, Dh, p.w2, p.b2, H, w->out, prec, err);
    rc = rc ? rc : kvz_op_mse(be, w->out, y, n * H, grad ? w->dy : NULL, loss, err);
    if (rc || !grad)
        return rc;
    kvz_surrogate_layer g = kvz_mlp_view(s, grad);
    rc = linear_param_grad(be, w->dy, w->a, n, Dh, H, g.w2, g.b2, prec, err);
    rc = rc ? rc : kvz_op_gemm(be, 0, 0, n, Dh, H, w->dy, p.w2, 0.0f, w->da, prec, err);
    rc = rc ? rc : kvz_op_gelu_backward(be, w->h, w->da, n * Dh, err);
    return rc ? rc : linear_param_grad(be, w->da, x, n, D, Dh, g.w1, g.b1, prec, err);
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
    kvz_mlp_work *w = NULL;
    rc = kvz_mlp_work_create(kvz_backend_host(), s, n, &w, err);
    rc = rc ? rc : kvz_mlp_work_loss_grad(s, flat, x, y, n, w, KVZ_GEMM_FP32, loss, grad, err);
    kvz_mlp_work_free(w);
    return rc;
}
