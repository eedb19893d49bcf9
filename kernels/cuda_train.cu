/* cuda_train: the trainer ops of the cuda backend (cuda_train.cuh; the
 * contracts are ops/backend.h's "trainer ops"): the MLP step's elementwise
 * kernels (bias rows, exact-erf GELU and its derivative, MSE residuals,
 * clip_grad_norm_'s scale, AdamW), its deterministic float64 reductions
 * (loss, gradient norm, bias gradients: fixed grid, fixed tree order, one
 * final block over the partials in index order, so a shape gives the same
 * bits run to run), the batch gather from fp32 or fp16 rows, the parts
 * combination, and the ridge's float64 statistics (cublasDsyrk /
 * cublasDgemm). Elementwise kernels use explicit round-to-nearest
 * intrinsics (__fmul_rn, __fadd_rn, ...) so nvcc does not fuse the
 * multiplies and adds the cpu backend keeps apart. The GEMMs themselves
 * are the backend's (backend_cuda.cu: one cuBLAS handle, its math mode per
 * precision). */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda_ops_internal.cuh"
#include "cuda_train.cuh"

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

/* MSE residuals: dy = scale * (out - y) (fp32, as the CPU; dy may be NULL),
 * partial[block] = sum of (out - y)^2 in float64. */
static __global__ void residual_partial_kernel(const float *out, const float *y, size_t n,
                                               float scale, float *dy, double *partial)
{
    double acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float r = __fsub_rn(out[i], y[i]);
        if (dy)
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


/* ---------- the ops ---------- */

int kvz_cuda_train_bias_rows(float *out, const float *bias, size_t n, size_t m, kvz_error *err)
{
    bias_fill_kernel<<<kvz_cuda_blocks_for(n * m, EW_THREADS), EW_THREADS>>>(out, bias, n, m);
    return kvz_cuda_check_launch("cuda: bias rows", err);
}

int kvz_cuda_train_col_sums(const float *v, size_t n, size_t m, float *out, kvz_error *err)
{
    col_sum_f32_kernel<<<(unsigned)m, RED_THREADS>>>(v, n, m, out);
    return kvz_cuda_check_launch("cuda: column sums", err);
}

int kvz_cuda_train_gelu(const float *h, float *a, size_t count, kvz_error *err)
{
    gelu_forward_kernel<<<kvz_cuda_blocks_for(count, EW_THREADS), EW_THREADS>>>(h, a, count);
    return kvz_cuda_check_launch("cuda: gelu", err);
}

int kvz_cuda_train_gelu_backward(const float *h, float *da, size_t count, kvz_error *err)
{
    gelu_backward_kernel<<<kvz_cuda_blocks_for(count, EW_THREADS), EW_THREADS>>>(h, da, count);
    return kvz_cuda_check_launch("cuda: gelu backward", err);
}

int kvz_cuda_train_mse(const float *pred, const float *y, size_t count, float *dy, double *loss,
                       double *partial, kvz_error *err)
{
    unsigned nb = red_blocks(count);
    float scale = 2.0f / (float)count;
    residual_partial_kernel<<<nb, RED_THREADS>>>(pred, y, count, scale, dy, partial);
    int rc = kvz_cuda_check_launch("cuda: mse residuals", err);
    return rc ? rc : finish_sum_dev(partial, nb, FINAL_MEAN, (double)count, loss, "cuda: mse", err);
}

int kvz_cuda_train_clip(float *g, size_t count, double max_norm, double *norm, double *partial,
                        kvz_error *err)
{
    if (!norm)
        norm = partial + KVZ_TRAIN_PARTIALS - 1;
    unsigned nb = red_blocks(count);
    sumsq_partial_kernel<<<nb, RED_THREADS>>>(g, count, partial);
    int rc = kvz_cuda_check_launch("cuda: gradient norm", err);
    rc = rc ? rc : finish_sum_dev(partial, nb, FINAL_SQRT, 1.0, norm, "cuda: gradient norm", err);
    if (rc == KVZ_OK && max_norm > 0) {
        clip_scale_kernel<<<kvz_cuda_blocks_for(count, EW_THREADS), EW_THREADS>>>(g, count, norm,
                                                                                  max_norm);
        rc = kvz_cuda_check_launch("cuda: clip scale", err);
    }
    return rc;
}

int kvz_cuda_train_adamw(float *param, const float *grad, float *m, float *v, size_t count,
                         const kvz_adamw_args *a, kvz_error *err)
{
    double bc1 = 1.0 - pow(a->beta1, (double)a->t), bc2 = 1.0 - pow(a->beta2, (double)a->t);
    adamw_coef c;
    float b1 = (float)a->beta1;
    c.decay = (float)(1.0 - a->lr * a->weight_decay);
    c.step_size = (float)(a->lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.b2 = (float)a->beta2;
    c.one_minus_b1 = 1.0f - b1;
    c.one_minus_b2 = 1.0f - c.b2;
    c.eps = (float)a->eps;
    adamw_kernel<<<kvz_cuda_blocks_for(count, EW_THREADS), EW_THREADS>>>(param, grad, m, v,
                                                                         count, c);
    return kvz_cuda_check_launch("cuda: adamw", err);
}

enum { COMBINE_CHUNK = 16 };

typedef struct combine_chunk {
    const float *src[COMBINE_CHUNK];
    float weight[COMBINE_CHUNK];
    const double *loss;
    double rows[COMBINE_CHUNK];
    unsigned n;
    int first;
} combine_chunk;

/* dst[i] (= 0 when first) += weight[p] * src[p][i], p in order (fp32). */
static __global__ void combine_kernel(float *dst, size_t count, combine_chunk c)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = c.first ? 0.0f : dst[i];
        for (unsigned p = 0; p < c.n; p++)
            g = __fadd_rn(g, __fmul_rn(c.weight[p], c.src[p][i]));
        dst[i] = g;
    }
}

/* *loss_dst (= 0 when first) += (loss[p] * rows[p]) / total, p in order. */
static __global__ void combine_loss_kernel(double *loss_dst, combine_chunk c, double total)
{
    double s = c.first ? 0.0 : *loss_dst;
    for (unsigned p = 0; p < c.n; p++)
        s = __dadd_rn(s, __ddiv_rn(__dmul_rn(c.loss[p], c.rows[p]), total));
    *loss_dst = s;
}

int kvz_cuda_train_combine(float *dst, const float *const *src, const float *weight,
                           size_t n_src, size_t count, double *loss_dst, const double *loss,
                           const size_t *rows, kvz_error *err)
{
    double total = 0;
    for (size_t p = 0; loss_dst && p < n_src; p++)
        total += (double)rows[p];
    int rc = KVZ_OK;
    for (size_t p0 = 0; rc == KVZ_OK && p0 < n_src; p0 += COMBINE_CHUNK) {
        combine_chunk c;
        memset(&c, 0, sizeof c);
        c.n = (unsigned)(n_src - p0 < COMBINE_CHUNK ? n_src - p0 : COMBINE_CHUNK);
        c.first = p0 == 0;
        for (unsigned p = 0; p < c.n; p++) {
            c.src[p] = dst ? src[p0 + p] : NULL;
            c.weight[p] = dst ? weight[p0 + p] : 0.0f;
            c.rows[p] = loss_dst ? (double)rows[p0 + p] : 0.0;
        }
        c.loss = loss_dst ? loss + p0 : NULL;
        if (dst && count) {
            combine_kernel<<<kvz_cuda_blocks_for(count, EW_THREADS), EW_THREADS>>>(dst, count, c);
            rc = kvz_cuda_check_launch("cuda: combine parts", err);
        }
        if (rc == KVZ_OK && loss_dst) {
            combine_loss_kernel<<<1, 1>>>(loss_dst, c, total);
            rc = kvz_cuda_check_launch("cuda: combine part losses", err);
        }
    }
    return rc;
}

/* dst[k, c] = src[row(k), c] (fp32 or fp16 widened). */
static __global__ void take_rows_kernel(const void *src, int f16, size_t width,
                                        const int64_t *idx, size_t row0, size_t n, float *dst)
{
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n * width;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t k = e / width, col = e % width;
        size_t r = idx ? (size_t)idx[k] : row0 + k;
        dst[e] = f16 ? __half2float(((const __half *)src)[r * width + col])
                     : ((const float *)src)[r * width + col];
    }
}

int kvz_cuda_train_take_rows(const void *src, int src_f16, size_t width, const int64_t *idx,
                             size_t row0, size_t n, float *dst, kvz_error *err)
{
    take_rows_kernel<<<kvz_cuda_blocks_for(n * width, EW_THREADS), EW_THREADS>>>(
        src, src_f16, width, idx, row0, n, dst);
    return kvz_cuda_check_launch("cuda: take rows", err);
}

/* ---------- ridge statistics ---------- */

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

/* KVZ_OK when v [n, cols] is finite, else KVZ_EINVAL naming the first bad
 * one (waits for the check). */
static int ridge_check_finite(unsigned long long *flag, const float *v, size_t n, size_t cols,
                              const char *kind, kvz_error *err)
{
    unsigned long long bad = ULLONG_MAX;
    int rc = kvz_cuda_check(cudaMemcpy(flag, &bad, sizeof bad, cudaMemcpyHostToDevice),
                            "cuda: ridge finiteness flag", err);
    if (rc != KVZ_OK)
        return rc;
    first_nonfinite_kernel<<<kvz_cuda_blocks_for(n * cols, EW_THREADS), EW_THREADS>>>(
        v, n * cols, flag);
    rc = kvz_cuda_check_launch("cuda: ridge finiteness check", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemcpy(&bad, flag, sizeof bad, cudaMemcpyDeviceToHost),
                            "cuda: ridge finiteness check", err);
    if (rc == KVZ_OK && bad != ULLONG_MAX)
        rc = kvz_fail(err, KVZ_EINVAL, "ridge: row %llu %s %llu of the block is not finite",
                      bad / cols, kind, bad % cols);
    return rc;
}

/* One block of nb <= block rows into the sums. */
static int ridge_add_block(cublasHandle_t blas, const float *x, const float *y, size_t nb,
                           size_t D, size_t H, double *xd, double *yd, double *sums,
                           kvz_error *err)
{
    double *xtx = sums, *xty = xtx + D * D, *x_sum = xty + D * H, *y_sum = x_sum + D;
    double *y_sq = y_sum + H;
    to_double_kernel<<<kvz_cuda_blocks_for(nb * D, EW_THREADS), EW_THREADS>>>(x, nb * D, xd);
    int rc = kvz_cuda_check_launch("cuda: ridge x to float64", err);
    if (rc != KVZ_OK)
        return rc;
    to_double_kernel<<<kvz_cuda_blocks_for(nb * H, EW_THREADS), EW_THREADS>>>(y, nb * H, yd);
    rc = kvz_cuda_check_launch("cuda: ridge y to float64", err);
    const double one = 1.0;
    /* Row-major x [nb, D] is column-major X^T [D, nb]: xtx = X^T X = A A^T;
     * its column-major lower triangle is the row-major upper one. */
    if (rc == KVZ_OK)
        rc = kvz_cublas_check(cublasDsyrk(blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)D,
                                          (int)nb, &one, xd, (int)D, &one, xtx, (int)D),
                              "cuda: ridge dsyrk", err);
    /* Row-major xty [D, H] is column-major [H, D] = Y^T[H, nb] (X^T[D, nb])^T. */
    if (rc == KVZ_OK)
        rc = kvz_cublas_check(cublasDgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)H, (int)D,
                                          (int)nb, &one, yd, (int)H, xd, (int)D, &one, xty,
                                          (int)H),
                              "cuda: ridge dgemm", err);
    if (rc != KVZ_OK)
        return rc;
    col_sum_f64_kernel<<<(unsigned)D, RED_THREADS>>>(xd, nb, D, x_sum, NULL);
    rc = kvz_cuda_check_launch("cuda: ridge x column sums", err);
    if (rc == KVZ_OK) {
        col_sum_f64_kernel<<<(unsigned)H, RED_THREADS>>>(yd, nb, H, y_sum, y_sq);
        rc = kvz_cuda_check_launch("cuda: ridge y column sums", err);
    }
    return rc;
}

int kvz_cuda_train_ridge_add(cublasHandle_t blas, const float *x, const float *y, size_t n,
                             size_t D, size_t H, double *scratch, size_t block, double *sums,
                             unsigned long long *flag, kvz_error *err)
{
    if (block > (size_t)INT_MAX / D || block > (size_t)INT_MAX / H)
        block = (size_t)INT_MAX / (D > H ? D : H);
    int rc = ridge_check_finite(flag, x, n, D, "feature", err);
    if (rc == KVZ_OK)
        rc = ridge_check_finite(flag, y, n, H, "target", err);
    for (size_t r0 = 0; rc == KVZ_OK && r0 < n; r0 += block) {
        size_t nb = n - r0 < block ? n - r0 : block;
        rc = ridge_add_block(blas, x + r0 * D, y + r0 * H, nb, D, H, scratch,
                             scratch + block * D, sums, err);
    }
    return rc;
}
