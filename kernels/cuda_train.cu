/* cuda_train: kvz_cuda_train.h in CUDA builds: the MLP surrogate's fp32
 * training step (cuBLAS sgemm forward/backward, exact-erf GELU, MSE loss,
 * clip_grad_norm_, AdamW) and the float64 ridge accumulator (cublasDsyrk /
 * cublasDgemm). Each context owns its cuBLAS handle, so its math mode (strict
 * fp32 or TF32) never leaks into the oracle's shared handle. Elementwise
 * kernels use explicit round-to-nearest intrinsics (__fmul_rn, __fadd_rn,
 * ...) so nvcc does not fuse multiplies and adds the CPU trainer keeps apart.
 * Reductions are float64 and deterministic (fixed grid, fixed tree order,
 * one final block over the partials in index order). */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <cuda_bf16.h>

#include "cuda_ops_internal.cuh"

extern "C" {
#include "kvz_cuda_train.h"
}

enum { RED_THREADS = 256, RED_MAX_BLOCKS = 240, EW_THREADS = 256 };

#define TRAIN_SQRT1_2 0.70710678118654752440f
#define TRAIN_INV_SQRT_2PI 0.39894228040143267794f

/* ---------- deterministic float64 reductions ---------- */

/* Tree sum of the block's RED_THREADS values in shared memory; thread 0 gets
 * the total. */
static __device__ double block_sum(double v)
{
    __shared__ double s[RED_THREADS];
    s[threadIdx.x] = v;
    __syncthreads();
    for (unsigned half = RED_THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
    return s[0];
}

/* partial[block] = sum of v[i]^2 over the block's grid-stride slice. */
static __global__ void sumsq_partial_kernel(const float *v, size_t n, double *partial)
{
    double acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        acc += (double)v[i] * (double)v[i];
    double total = block_sum(acc);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = total;
}

/* MSE residuals: dy = scale * (out - y) (fp32, as the CPU), partial[block] =
 * sum of (out - y)^2 in float64. */
static __global__ void residual_partial_kernel(const float *out, const float *y, size_t n,
                                               float scale, float *dy, double *partial)
{
    double acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float r = __fsub_rn(out[i], y[i]);
        dy[i] = __fmul_rn(scale, r);
        acc += (double)r * (double)r;
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = total;
}

/* How the final reduction turns the total into its device result. */
enum { FINAL_MEAN = 0, FINAL_SQRT = 1 };

/* *out = total / div (FINAL_MEAN) or sqrt(total) (FINAL_SQRT), total = sum of
 * partial[0 .. n_partial) (one block). Double division and sqrt are IEEE
 * round-to-nearest on the device, as on the host. */
static __global__ void partial_final_kernel(const double *partial, unsigned n_partial, int mode,
                                            double div, double *out)
{
    double acc = 0;
    for (unsigned i = threadIdx.x; i < n_partial; i += blockDim.x)
        acc += partial[i];
    double total = block_sum(acc);
    if (threadIdx.x == 0)
        *out = mode == FINAL_SQRT ? sqrt(total) : total / div;
}

static unsigned red_blocks(size_t n)
{
    unsigned b = kvz_cuda_blocks_for(n, RED_THREADS);
    return b > (unsigned)RED_MAX_BLOCKS ? (unsigned)RED_MAX_BLOCKS : b;
}

/* Queues the final reduction of partial[0 .. nb) into the device double
 * out_dev (no wait). */
static int finish_sum_dev(const double *partial, unsigned nb, int mode, double div,
                          double *out_dev, const char *what, kvz_error *err)
{
    partial_final_kernel<<<1, RED_THREADS>>>(partial, nb, mode, div, out_dev);
    return kvz_cuda_check_launch(what, err);
}

/* *out = the device double src (waits). */
static int download_double(double *out, const double *src, const char *what, kvz_error *err)
{
    return kvz_cuda_check(cudaMemcpy(out, src, sizeof *out, cudaMemcpyDeviceToHost), what, err);
}

/* col[j] = (float) sum over rows r of v[r * cols + j], float64 tree sums;
 * one block per column. */
static __global__ void col_sum_f32_kernel(const float *v, size_t rows, size_t cols, float *col)
{
    double acc = 0;
    for (size_t r = threadIdx.x; r < rows; r += blockDim.x)
        acc += (double)v[r * cols + blockIdx.x];
    double total = block_sum(acc);
    if (threadIdx.x == 0)
        col[blockIdx.x] = (float)total;
}

/* ---------- MLP elementwise kernels ---------- */

/* out[r, j] = bias[j] for n rows of m columns. */
static __global__ void bias_fill_kernel(float *out, const float *bias, size_t n, size_t m)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n * m;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % m];
}

/* a = 0.5 h (1 + erf(h / sqrt 2)), operation order of trainer/gelu.c. */
static __global__ void gelu_forward_kernel(const float *h, float *a, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = h[i];
        float e = erff(__fmul_rn(x, TRAIN_SQRT1_2));
        a[i] = __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, e));
    }
}

/* da *= Phi(h) + h phi(h). */
static __global__ void gelu_backward_kernel(const float *h, float *da, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = h[i];
        float cdf = __fmul_rn(0.5f, __fadd_rn(1.0f, erff(__fmul_rn(x, TRAIN_SQRT1_2))));
        float pdf = __fmul_rn(expf(__fmul_rn(__fmul_rn(-0.5f, x), x)), TRAIN_INV_SQRT_2PI);
        da[i] = __fmul_rn(da[i], __fadd_rn(cdf, __fmul_rn(x, pdf)));
    }
}

/* clip_grad_norm_'s scale with the norm read on the device: coef =
 * max_norm / (norm + 1e-6) in float64; v *= (float)coef only when coef < 1
 * (a NaN norm leaves v alone, as on the host). */
static __global__ void clip_scale_kernel(float *v, size_t n, const double *norm, double max_norm)
{
    double coef = max_norm / __dadd_rn(*norm, 1e-6);
    if (!(coef < 1.0))
        return;
    float c = (float)coef;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        v[i] = __fmul_rn(v[i], c);
}

typedef struct adamw_coef {
    float decay, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps;
} adamw_coef;

/* kvz_mlp_adamw_step, element by element in the same fp32 operation order. */
static __global__ void adamw_kernel(float *p, const float *grad, float *m, float *v, size_t n,
                                    adamw_coef c)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i];
        float pi = __fmul_rn(p[i], c.decay);
        float mi = __fadd_rn(m[i], __fmul_rn(__fsub_rn(g, m[i]), c.one_minus_b1));
        float vi = __fadd_rn(__fmul_rn(v[i], c.b2), __fmul_rn(__fmul_rn(c.one_minus_b2, g), g));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bc2_sqrt), c.eps);
        p[i] = __fsub_rn(pi, __fmul_rn(c.step_size, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
    }
}

/* ---------- MLP context ---------- */

struct kvz_cuda_mlp {
    kvz_mlp_shape s;
    size_t max_rows, n_params;
    unsigned flags;
    cublasHandle_t blas;
    __nv_bfloat16 *bf;    /* BF16 mode: two GEMM-input copies of bf_len each */
    size_t bf_len;
    float *state;         /* [4 * n_params]: params, grad, m, v */
    float *params, *grad, *m1, *v;
    float *act;           /* h, a, da [max_rows, Dh]; out, dy [max_rows, Hkv] */
    float *h, *a, *da, *out, *dy;
    double *partial;      /* [RED_MAX_BLOCKS + 1]: block partials, then result */
    double *result;       /* partial + RED_MAX_BLOCKS: the host-returning wrappers' slot */
};

static int check_mlp_shape(kvz_mlp_shape s, size_t max_rows, unsigned flags, kvz_error *err)
{
    const size_t big = (size_t)1 << 30, lim = (size_t)INT_MAX;
    if (!s.d_in || !s.d_hidden || !s.d_out || s.d_in > big || s.d_hidden > big || s.d_out > big)
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: bad shape D=%zu Dh=%zu Hkv=%zu", s.d_in,
                        s.d_hidden, s.d_out);
    if (max_rows == 0 || max_rows > lim / s.d_hidden || max_rows > lim / s.d_out ||
        max_rows > lim / s.d_in)
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: max_rows %zu out of range for D=%zu Dh=%zu",
                        max_rows, s.d_in, s.d_hidden);
    if ((flags & ~(unsigned)(KVZ_CUDA_TRAIN_TF32 | KVZ_CUDA_TRAIN_BF16)) ||
        ((flags & KVZ_CUDA_TRAIN_TF32) && (flags & KVZ_CUDA_TRAIN_BF16)))
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: unknown or conflicting flags 0x%x", flags);
    return KVZ_OK;
}

static int mlp_alloc(kvz_cuda_mlp *m, kvz_error *err)
{
    size_t np = m->n_params, rows = m->max_rows;
    size_t n_act = rows * (3 * m->s.d_hidden + 2 * m->s.d_out);
    int rc = kvz_cuda_check(cudaMalloc((void **)&m->state, 4 * np * sizeof(float)),
                            "cuda mlp: allocating params/grads/moments", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMalloc((void **)&m->act, n_act * sizeof(float)),
                            "cuda mlp: allocating activations", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(
            cudaMalloc((void **)&m->partial, (RED_MAX_BLOCKS + 1) * sizeof(double)),
            "cuda mlp: allocating reduction scratch", err);
    if (rc == KVZ_OK && m->bf_len)
        rc = kvz_cuda_check(cudaMalloc((void **)&m->bf, 2 * m->bf_len * sizeof(__nv_bfloat16)),
                            "cuda mlp: allocating the bfloat16 GEMM inputs", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemset(m->state, 0, 4 * np * sizeof(float)),
                            "cuda mlp: zeroing params/grads/moments", err);
    if (rc != KVZ_OK)
        return rc;
    m->result = m->partial + RED_MAX_BLOCKS;
    m->params = m->state;
    m->grad = m->state + np;
    m->m1 = m->state + 2 * np;
    m->v = m->state + 3 * np;
    m->h = m->act;
    m->a = m->h + rows * m->s.d_hidden;
    m->da = m->a + rows * m->s.d_hidden;
    m->out = m->da + rows * m->s.d_hidden;
    m->dy = m->out + rows * m->s.d_out;
    return KVZ_OK;
}

/* Largest GEMM input: W1 [Dh, D], x [rows, D], a/da [rows, Dh], W2 [Hkv, Dh],
 * dy [rows, Hkv]. */
static size_t bf16_scratch_len(kvz_mlp_shape s, size_t rows)
{
    size_t cand[5] = {s.d_hidden * s.d_in, rows * s.d_in, rows * s.d_hidden,
                      s.d_out * s.d_hidden, rows * s.d_out};
    size_t best = 1;
    for (int i = 0; i < 5; i++)
        best = cand[i] > best ? cand[i] : best;
    return (best + 63) / 64 * 64; /* the second copy starts 128-byte aligned */
}

static __global__ void to_bf16_kernel(const float *v, size_t n, __nv_bfloat16 *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(v[i]);
}

static int create_handle(cublasHandle_t *h, cublasMath_t mode, const char *what, kvz_error *err)
{
    int rc = kvz_cublas_check(cublasCreate(h), what, err);
    if (rc != KVZ_OK) {
        *h = NULL;
        return rc;
    }
    return kvz_cublas_check(cublasSetMathMode(*h, mode), what, err);
}

extern "C" int kvz_cuda_mlp_create(kvz_mlp_shape s, size_t max_rows, unsigned flags,
                                   kvz_cuda_mlp **out, kvz_error *err)
{
    if (!out)
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: NULL output");
    *out = NULL;
    int rc = check_mlp_shape(s, max_rows, flags, err);
    if (rc != KVZ_OK)
        return rc;
    kvz_cuda_mlp *m = (kvz_cuda_mlp *)calloc(1, sizeof *m);
    if (!m)
        return kvz_fail(err, KVZ_ENOMEM, "cuda mlp: out of host memory");
    m->s = s;
    m->max_rows = max_rows;
    m->n_params = kvz_mlp_n_params(s);
    m->flags = flags;
    if (flags & KVZ_CUDA_TRAIN_BF16)
        m->bf_len = bf16_scratch_len(s, max_rows);
    /* BF16 inputs need the default mode (pedantic may refuse tensor-core paths). */
    cublasMath_t mode = (flags & KVZ_CUDA_TRAIN_TF32)   ? CUBLAS_TF32_TENSOR_OP_MATH
                        : (flags & KVZ_CUDA_TRAIN_BF16) ? CUBLAS_DEFAULT_MATH
                                                        : CUBLAS_PEDANTIC_MATH;
    rc = create_handle(&m->blas, mode, "cuda mlp: creating the cuBLAS handle", err);
    if (rc == KVZ_OK)
        rc = mlp_alloc(m, err);
    if (rc != KVZ_OK) {
        kvz_cuda_mlp_free(m);
        return rc;
    }
    *out = m;
    return KVZ_OK;
}

extern "C" void kvz_cuda_mlp_free(kvz_cuda_mlp *m)
{
    if (!m)
        return;
    if (m->blas)
        cublasDestroy(m->blas);
    (void)cudaFree(m->state);
    (void)cudaFree(m->act);
    (void)cudaFree(m->partial);
    (void)cudaFree(m->bf);
    free(m);
}

/* Host <-> device copy of n floats. */
static int copy_floats(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                       const char *what, kvz_error *err)
{
    return kvz_cuda_check(cudaMemcpy(dst, src, n * sizeof(float), kind), what, err);
}

static int need(const void *m, const void *p, const char *what, kvz_error *err)
{
    if (!m || !p)
        return kvz_fail(err, KVZ_EINVAL, "%s: NULL argument", what);
    return KVZ_OK;
}

extern "C" int kvz_cuda_mlp_upload_params(kvz_cuda_mlp *m, const float *flat, kvz_error *err)
{
    const char *what = "cuda mlp: uploading params";
    int rc = need(m, flat, what, err);
    return rc ? rc : copy_floats(m->params, flat, m->n_params, cudaMemcpyHostToDevice, what, err);
}

extern "C" int kvz_cuda_mlp_download_params(kvz_cuda_mlp *m, float *flat, kvz_error *err)
{
    const char *what = "cuda mlp: downloading params";
    int rc = need(m, flat, what, err);
    return rc ? rc : copy_floats(flat, m->params, m->n_params, cudaMemcpyDeviceToHost, what, err);
}

extern "C" int kvz_cuda_mlp_download_grad(kvz_cuda_mlp *m, float *grad, kvz_error *err)
{
    const char *what = "cuda mlp: downloading the gradient";
    int rc = need(m, grad, what, err);
    return rc ? rc : copy_floats(grad, m->grad, m->n_params, cudaMemcpyDeviceToHost, what, err);
}

extern "C" int kvz_cuda_mlp_upload_grad(kvz_cuda_mlp *m, const float *grad, kvz_error *err)
{
    const char *what = "cuda mlp: uploading the gradient";
    int rc = need(m, grad, what, err);
    return rc ? rc : copy_floats(m->grad, grad, m->n_params, cudaMemcpyHostToDevice, what, err);
}

extern "C" int kvz_cuda_mlp_download_moments(kvz_cuda_mlp *m, float *m1, float *v,
                                             kvz_error *err)
{
    const char *what = "cuda mlp: downloading the AdamW moments";
    int rc = need(m, m, what, err);
    if (rc == KVZ_OK && m1)
        rc = copy_floats(m1, m->m1, m->n_params, cudaMemcpyDeviceToHost, what, err);
    if (rc == KVZ_OK && v)
        rc = copy_floats(v, m->v, m->n_params, cudaMemcpyDeviceToHost, what, err);
    return rc;
}

extern "C" int kvz_cuda_mlp_upload_moments(kvz_cuda_mlp *m, const float *m1, const float *v,
                                           kvz_error *err)
{
    const char *what = "cuda mlp: uploading the AdamW moments";
    int rc = need(m, m, what, err);
    if (rc == KVZ_OK && m1)
        rc = copy_floats(m->m1, m1, m->n_params, cudaMemcpyHostToDevice, what, err);
    if (rc == KVZ_OK && v)
        rc = copy_floats(m->v, v, m->n_params, cudaMemcpyHostToDevice, what, err);
    return rc;
}

extern "C" int kvz_cuda_mlp_reset_moments(kvz_cuda_mlp *m, kvz_error *err)
{
    const char *what = "cuda mlp: zeroing the AdamW moments";
    int rc = need(m, m, what, err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemset(m->m1, 0, 2 * m->n_params * sizeof(float)), what, err);
    return rc;
}

/* ---------- forward / backward ---------- */

/* Column-major C[M, N] = alpha op(A) op(B) + beta C with dense operands
 * (lda, ldb are the stored leading dimensions). fp32/TF32: cublasSgemm;
 * BF16: both inputs rounded to bfloat16, fp32 accumulation (cublasGemmEx). */
static int mlp_gemm(kvz_cuda_mlp *m, cublasOperation_t opa, cublasOperation_t opb, size_t M,
                    size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb,
                    float beta, float *C, size_t ldc, const char *what, kvz_error *err)
{
    const float one = 1.0f;
    if (!(m->flags & KVZ_CUDA_TRAIN_BF16))
        return kvz_cublas_check(cublasSgemm(m->blas, opa, opb, (int)M, (int)N, (int)K, &one, A,
                                            (int)lda, B, (int)ldb, &beta, C, (int)ldc),
                                what, err);
    size_t na = lda * (opa == CUBLAS_OP_N ? K : M), nb = ldb * (opb == CUBLAS_OP_N ? N : K);
    if (na > m->bf_len || nb > m->bf_len)
        return kvz_fail(err, KVZ_EINVAL, "%s: bfloat16 scratch too small (%zu, %zu > %zu)",
                        what, na, nb, m->bf_len);
    __nv_bfloat16 *a16 = m->bf, *b16 = m->bf + m->bf_len;
    to_bf16_kernel<<<kvz_cuda_blocks_for(na, EW_THREADS), EW_THREADS>>>(A, na, a16);
    int rc = kvz_cuda_check_launch(what, err);
    if (rc == KVZ_OK) {
        to_bf16_kernel<<<kvz_cuda_blocks_for(nb, EW_THREADS), EW_THREADS>>>(B, nb, b16);
        rc = kvz_cuda_check_launch(what, err);
    }
    if (rc == KVZ_OK)
        rc = kvz_cublas_check(cublasGemmEx(m->blas, opa, opb, (int)M, (int)N, (int)K, &one, a16,
                                           CUDA_R_16BF, (int)lda, b16, CUDA_R_16BF, (int)ldb,
                                           &beta, C, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT),
                              what, err);
    return rc;
}

/* Row-major out[n, mo] = in[n, k] W^T + bias, W [mo, k] row-major. In cuBLAS's
 * column-major view: OUT[mo, n] = W^T(op T of the [k, mo] view) * IN[k, n]. */
static int linear_forward(kvz_cuda_mlp *m, const float *in, size_t n, size_t k, const float *W,
                          const float *bias, size_t mo, float *out, kvz_error *err)
{
    bias_fill_kernel<<<kvz_cuda_blocks_for(n * mo, EW_THREADS), EW_THREADS>>>(out, bias, n, mo);
    int rc = kvz_cuda_check_launch("cuda mlp: bias fill", err);
    if (rc == KVZ_OK)
        rc = mlp_gemm(m, CUBLAS_OP_T, CUBLAS_OP_N, mo, n, k, W, k, in, k, 1.0f, out, mo,
                      "cuda mlp: forward sgemm", err);
    return rc;
}

/* gW [mo, k] row-major = d[n, mo]^T in[n, k]  (column-major: GW[k, mo] =
 * IN[k, n] * D[mo, n]^T); gb[mo] = column sums of d (float64). */
static int linear_param_grad(kvz_cuda_mlp *m, const float *d, const float *in, size_t n,
                             size_t k, size_t mo, float *gW, float *gb, kvz_error *err)
{
    int rc = mlp_gemm(m, CUBLAS_OP_N, CUBLAS_OP_T, k, mo, n, in, k, d, mo, 0.0f, gW, k,
                      "cuda mlp: weight-gradient sgemm", err);
    if (rc != KVZ_OK)
        return rc;
    col_sum_f32_kernel<<<(unsigned)mo, RED_THREADS>>>(d, n, mo, gb);
    return kvz_cuda_check_launch("cuda mlp: bias-gradient sums", err);
}

/* Forward and residuals; the loss sse / (n * Hkv) lands in the device
 * double loss_dev (no wait). */
static int forward_loss(kvz_cuda_mlp *m, const float *x, const float *y, size_t n,
                        double *loss_dev, kvz_error *err)
{
    size_t D = m->s.d_in, Dh = m->s.d_hidden, H = m->s.d_out;
    kvz_surrogate_layer p = kvz_mlp_view(m->s, m->params);
    int rc = linear_forward(m, x, n, D, p.w1, p.b1, Dh, m->h, err);
    if (rc != KVZ_OK)
        return rc;
    gelu_forward_kernel<<<kvz_cuda_blocks_for(n * Dh, EW_THREADS), EW_THREADS>>>(m->h, m->a,
                                                                                  n * Dh);
    rc = kvz_cuda_check_launch("cuda mlp: gelu", err);
    if (rc == KVZ_OK)
        rc = linear_forward(m, m->a, n, Dh, p.w2, p.b2, H, m->out, err);
    if (rc != KVZ_OK)
        return rc;
    unsigned nb = red_blocks(n * H);
    float scale = 2.0f / (float)(n * H);
    residual_partial_kernel<<<nb, RED_THREADS>>>(m->out, y, n * H, scale, m->dy, m->partial);
    rc = kvz_cuda_check_launch("cuda mlp: residuals", err);
    if (rc == KVZ_OK)
        rc = finish_sum_dev(m->partial, nb, FINAL_MEAN, (double)(n * H), loss_dev,
                            "cuda mlp: loss", err);
    return rc;
}

static int backward(kvz_cuda_mlp *m, const float *x, size_t n, kvz_error *err)
{
    size_t D = m->s.d_in, Dh = m->s.d_hidden, H = m->s.d_out;
    kvz_surrogate_layer p = kvz_mlp_view(m->s, m->params);
    kvz_surrogate_layer g = kvz_mlp_view(m->s, m->grad);
    int rc = linear_param_grad(m, m->dy, m->a, n, Dh, H, g.w2, g.b2, err);
    /* row-major da[n, Dh] = dy[n, H] W2[H, Dh]: column-major DA[Dh, n] = W2[Dh, H] DY[H, n] */
    if (rc == KVZ_OK)
        rc = mlp_gemm(m, CUBLAS_OP_N, CUBLAS_OP_N, Dh, n, H, p.w2, Dh, m->dy, H, 0.0f, m->da, Dh,
                      "cuda mlp: da sgemm", err);
    if (rc != KVZ_OK)
        return rc;
    gelu_backward_kernel<<<kvz_cuda_blocks_for(n * Dh, EW_THREADS), EW_THREADS>>>(m->h, m->da,
                                                                                   n * Dh);
    rc = kvz_cuda_check_launch("cuda mlp: gelu backward", err);
    if (rc == KVZ_OK)
        rc = linear_param_grad(m, m->da, x, n, D, Dh, g.w1, g.b1, err);
    return rc;
}

static int check_rows(const kvz_cuda_mlp *m, const float *x_dev, const float *y_dev, size_t n,
                      const void *out, const char *what, kvz_error *err)
{
    if (!m || !x_dev || !y_dev || !out)
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: %s: NULL argument", what);
    if (n == 0 || n > m->max_rows)
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: %s: %zu rows but the context holds 1..%zu",
                        what, n, m->max_rows);
    return KVZ_OK;
}

extern "C" int kvz_cuda_mlp_loss_grad_dev(kvz_cuda_mlp *m, const float *x_dev,
                                          const float *y_dev, size_t n, double *loss_dev,
                                          kvz_error *err)
{
    int rc = check_rows(m, x_dev, y_dev, n, loss_dev, "loss_grad", err);
    rc = rc ? rc : forward_loss(m, x_dev, y_dev, n, loss_dev, err);
    return rc ? rc : backward(m, x_dev, n, err);
}

extern "C" int kvz_cuda_mlp_loss_grad(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev,
                                      size_t n, double *loss, kvz_error *err)
{
    int rc = check_rows(m, x_dev, y_dev, n, loss, "loss_grad", err);
    rc = rc ? rc : kvz_cuda_mlp_loss_grad_dev(m, x_dev, y_dev, n, m->result, err);
    return rc ? rc : download_double(loss, m->result, "cuda mlp: loss", err);
}

extern "C" int kvz_cuda_mlp_loss(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev,
                                 size_t n, double *loss, kvz_error *err)
{
    int rc = check_rows(m, x_dev, y_dev, n, loss, "loss", err);
    rc = rc ? rc : forward_loss(m, x_dev, y_dev, n, m->result, err);
    return rc ? rc : download_double(loss, m->result, "cuda mlp: loss", err);
}

extern "C" int kvz_cuda_mlp_clip_dev(kvz_cuda_mlp *m, double max_norm, double *norm_dev,
                                     kvz_error *err)
{
    if (!m)
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: clip: NULL context");
    double *norm = norm_dev ? norm_dev : m->result;
    unsigned nb = red_blocks(m->n_params);
    sumsq_partial_kernel<<<nb, RED_THREADS>>>(m->grad, m->n_params, m->partial);
    int rc = kvz_cuda_check_launch("cuda mlp: gradient norm", err);
    if (rc == KVZ_OK)
        rc = finish_sum_dev(m->partial, nb, FINAL_SQRT, 1.0, norm, "cuda mlp: gradient norm",
                            err);
    if (rc == KVZ_OK && max_norm > 0) {
        clip_scale_kernel<<<kvz_cuda_blocks_for(m->n_params, EW_THREADS), EW_THREADS>>>(
            m->grad, m->n_params, norm, max_norm);
        rc = kvz_cuda_check_launch("cuda mlp: clip scale", err);
    }
    return rc;
}

extern "C" int kvz_cuda_mlp_clip(kvz_cuda_mlp *m, double max_norm, double *norm_before,
                                 kvz_error *err)
{
    int rc = kvz_cuda_mlp_clip_dev(m, max_norm, m ? m->result : NULL, err);
    if (rc == KVZ_OK && norm_before)
        rc = download_double(norm_before, m->result, "cuda mlp: gradient norm", err);
    return rc;
}

extern "C" int kvz_cuda_mlp_adamw_step(kvz_cuda_mlp *m, size_t t, double lr, double beta1,
                                       double beta2, double eps, double weight_decay,
                                       kvz_error *err)
{
    if (!m || t == 0)
        return kvz_fail(err, KVZ_EINVAL, "cuda mlp: adamw: NULL context or step t = 0");
    double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
    adamw_coef c;
    float b1 = (float)beta1;
    c.decay = (float)(1.0 - lr * weight_decay);
    c.step_size = (float)(lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.b2 = (float)beta2;
    c.one_minus_b1 = 1.0f - b1;
    c.one_minus_b2 = 1.0f - c.b2;
    c.eps = (float)eps;
    adamw_kernel<<<kvz_cuda_blocks_for(m->n_params, EW_THREADS), EW_THREADS>>>(
        m->params, m->grad, m->m1, m->v, m->n_params, c);
    return kvz_cuda_check_launch("cuda mlp: adamw", err);
}

/* ---------- ridge accumulator ---------- */

struct kvz_cuda_ridge {
    size_t d_in, d_out, block_rows;
    cublasHandle_t blas;
    double *sums;               /* xtx [D*D] (lower, column-major), xty, x_sum, y_sum, y_sq_sum */
    double *xtx, *xty, *x_sum, *y_sum, *y_sq_sum;
    double *xd, *yd;            /* [block_rows, D], [block_rows, Hkv] float64 copies */
    unsigned long long *bad;    /* first non-finite index of a block (device) */
    int64_t count;
};

static size_t ridge_n_sums(size_t D, size_t H)
{
    return D * D + D * H + D + 2 * H;
}

extern "C" void kvz_cuda_ridge_free(kvz_cuda_ridge *r)
{
    if (!r)
        return;
    if (r->blas)
        cublasDestroy(r->blas);
    (void)cudaFree(r->sums);
    (void)cudaFree(r->xd);
    (void)cudaFree(r->bad);
    free(r);
}

static int ridge_alloc(kvz_cuda_ridge *r, kvz_error *err)
{
    size_t D = r->d_in, H = r->d_out, ns = ridge_n_sums(D, H);
    int rc = kvz_cuda_check(cudaMalloc((void **)&r->sums, ns * sizeof(double)),
                            "cuda ridge: allocating the sums", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMalloc((void **)&r->xd, r->block_rows * (D + H) * sizeof(double)),
                            "cuda ridge: allocating the float64 block", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMalloc((void **)&r->bad, sizeof *r->bad),
                            "cuda ridge: allocating the finiteness flag", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemset(r->sums, 0, ns * sizeof(double)),
                            "cuda ridge: zeroing the sums", err);
    if (rc != KVZ_OK)
        return rc;
    r->xtx = r->sums;
    r->xty = r->xtx + D * D;
    r->x_sum = r->xty + D * H;
    r->y_sum = r->x_sum + D;
    r->y_sq_sum = r->y_sum + H;
    r->yd = r->xd + r->block_rows * D;
    return KVZ_OK;
}

extern "C" int kvz_cuda_ridge_create(size_t d_in, size_t d_out, size_t block_rows,
                                     kvz_cuda_ridge **out, kvz_error *err)
{
    if (!out)
        return kvz_fail(err, KVZ_EINVAL, "cuda ridge: NULL output");
    *out = NULL;
    const size_t big = (size_t)1 << 20, lim = (size_t)INT_MAX;
    if (!d_in || !d_out || d_in > big || d_out > big || !block_rows ||
        block_rows > lim / d_in || block_rows > lim / d_out)
        return kvz_fail(err, KVZ_EINVAL, "cuda ridge: bad sizes D=%zu Hkv=%zu block_rows=%zu",
                        d_in, d_out, block_rows);
    kvz_cuda_ridge *r = (kvz_cuda_ridge *)calloc(1, sizeof *r);
    if (!r)
        return kvz_fail(err, KVZ_ENOMEM, "cuda ridge: out of host memory");
    r->d_in = d_in;
    r->d_out = d_out;
    r->block_rows = block_rows;
    int rc = create_handle(&r->blas, CUBLAS_PEDANTIC_MATH,
                           "cuda ridge: creating the cuBLAS handle", err);
    if (rc == KVZ_OK)
        rc = ridge_alloc(r, err);
    if (rc != KVZ_OK) {
        kvz_cuda_ridge_free(r);
        return rc;
    }
    *out = r;
    return KVZ_OK;
}

/* *bad = min index i with v[i] not finite (stays ULLONG_MAX when none). */
static __global__ void first_nonfinite_kernel(const float *v, size_t n, unsigned long long *bad)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        if (!isfinite(v[i]))
            atomicMin(bad, (unsigned long long)i);
}

static __global__ void to_double_kernel(const float *v, size_t n, double *d)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] = (double)v[i];
}

/* sum[j] += sum over rows of v[r, j] (and sq[j] += v^2 when sq != NULL);
 * one block per column, tree sums. */
static __global__ void col_sum_f64_kernel(const double *v, size_t rows, size_t cols, double *sum,
                                          double *sq)
{
    double acc = 0, acc_sq = 0;
    for (size_t r = threadIdx.x; r < rows; r += blockDim.x) {
        double x = v[r * cols + blockIdx.x];
        acc += x;
        acc_sq += x * x;
    }
    double total = block_sum(acc);
    __syncthreads(); /* block_sum's shared array is reused */
    double total_sq = sq ? block_sum(acc_sq) : 0;
    if (threadIdx.x == 0) {
        sum[blockIdx.x] += total;
        if (sq)
            sq[blockIdx.x] += total_sq;
    }
}

/* KVZ_OK when v [n, cols] is finite, else KVZ_EINVAL naming the first bad one. */
static int ridge_check_finite(kvz_cuda_ridge *r, const float *v, size_t n, size_t cols,
                              const char *kind, kvz_error *err)
{
    unsigned long long bad = ULLONG_MAX;
    int rc = kvz_cuda_check(cudaMemcpy(r->bad, &bad, sizeof bad, cudaMemcpyHostToDevice),
                            "cuda ridge: finiteness flag", err);
    if (rc != KVZ_OK)
        return rc;
    first_nonfinite_kernel<<<kvz_cuda_blocks_for(n * cols, EW_THREADS), EW_THREADS>>>(
        v, n * cols, r->bad);
    rc = kvz_cuda_check_launch("cuda ridge: finiteness check", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemcpy(&bad, r->bad, sizeof bad, cudaMemcpyDeviceToHost),
                            "cuda ridge: finiteness check", err);
    if (rc == KVZ_OK && bad != ULLONG_MAX)
        rc = kvz_fail(err, KVZ_EINVAL, "cuda ridge: row %llu %s %llu of the block is not finite",
                      bad / cols, kind, bad % cols);
    return rc;
}

/* Adds one block of n <= block_rows rows. */
static int ridge_add_block(kvz_cuda_ridge *r, const float *x, const float *y, size_t n,
                           kvz_error *err)
{
    size_t D = r->d_in, H = r->d_out;
    to_double_kernel<<<kvz_cuda_blocks_for(n * D, EW_THREADS), EW_THREADS>>>(x, n * D, r->xd);
    int rc = kvz_cuda_check_launch("cuda ridge: x to float64", err);
    if (rc != KVZ_OK)
        return rc;
    to_double_kernel<<<kvz_cuda_blocks_for(n * H, EW_THREADS), EW_THREADS>>>(y, n * H, r->yd);
    rc = kvz_cuda_check_launch("cuda ridge: y to float64", err);
    const double one = 1.0;
    /* Row-major x [n, D] is column-major X^T [D, n]: xtx = X^T X = A A^T. */
    if (rc == KVZ_OK)
        rc = kvz_cublas_check(cublasDsyrk(r->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)D,
                                          (int)n, &one, r->xd, (int)D, &one, r->xtx, (int)D),
                              "cuda ridge: dsyrk", err);
    /* Row-major xty [D, H] is column-major [H, D] = Y^T[H, n] (X^T[D, n])^T. */
    if (rc == KVZ_OK)
        rc = kvz_cublas_check(cublasDgemm(r->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)H, (int)D,
                                          (int)n, &one, r->yd, (int)H, r->xd, (int)D, &one,
                                          r->xty, (int)H),
                              "cuda ridge: dgemm", err);
    if (rc != KVZ_OK)
        return rc;
    col_sum_f64_kernel<<<(unsigned)D, RED_THREADS>>>(r->xd, n, D, r->x_sum, NULL);
    rc = kvz_cuda_check_launch("cuda ridge: x column sums", err);
    if (rc == KVZ_OK) {
        col_sum_f64_kernel<<<(unsigned)H, RED_THREADS>>>(r->yd, n, H, r->y_sum, r->y_sq_sum);
        rc = kvz_cuda_check_launch("cuda ridge: y column sums", err);
    }
    return rc;
}

extern "C" int kvz_cuda_ridge_add(kvz_cuda_ridge *r, const float *x_dev, const float *y_dev,
                                  size_t n, kvz_error *err)
{
    if (n == 0)
        return KVZ_OK;
    if (!r || !x_dev || !y_dev)
        return kvz_fail(err, KVZ_EINVAL, "cuda ridge: add: NULL argument");
    int rc = ridge_check_finite(r, x_dev, n, r->d_in, "feature", err);
    if (rc == KVZ_OK)
        rc = ridge_check_finite(r, y_dev, n, r->d_out, "target", err);
    for (size_t r0 = 0; rc == KVZ_OK && r0 < n; r0 += r->block_rows) {
        size_t rows = n - r0 < r->block_rows ? n - r0 : r->block_rows;
        rc = ridge_add_block(r, x_dev + r0 * r->d_in, y_dev + r0 * r->d_out, rows, err);
    }
    if (rc == KVZ_OK)
        r->count += (int64_t)n;
    return rc;
}

static int download_doubles(double *dst, const double *src, size_t n, kvz_error *err)
{
    return kvz_cuda_check(cudaMemcpy(dst, src, n * sizeof(double), cudaMemcpyDeviceToHost),
                          "cuda ridge: downloading the sums", err);
}

extern "C" int kvz_cuda_ridge_download(kvz_cuda_ridge *r, double *xtx, double *xty,
                                       double *x_sum, double *y_sum, double *y_sq_sum,
                                       int64_t *count, kvz_error *err)
{
    if (!r || !xtx || !xty || !x_sum || !y_sum || !count)
        return kvz_fail(err, KVZ_EINVAL, "cuda ridge: download: NULL argument");
    size_t D = r->d_in, H = r->d_out;
    int rc = download_doubles(xtx, r->xtx, D * D, err);
    if (rc == KVZ_OK)
        rc = download_doubles(xty, r->xty, D * H, err);
    if (rc == KVZ_OK)
        rc = download_doubles(x_sum, r->x_sum, D, err);
    if (rc == KVZ_OK)
        rc = download_doubles(y_sum, r->y_sum, H, err);
    if (rc == KVZ_OK && y_sq_sum)
        rc = download_doubles(y_sq_sum, r->y_sq_sum, H, err);
    if (rc != KVZ_OK)
        return rc;
    /* Column-major lower triangle: entry (i, j), i >= j, at i + j D. Mirror it. */
    for (size_t j = 0; j < D; j++)
        for (size_t i = j + 1; i < D; i++)
            xtx[j + i * D] = xtx[i + j * D];
    *count = r->count;
    return KVZ_OK;
}
