/* backend_cuda: the cuda backend of ops/backend.h (CUDA builds only). One
 * device, everything on the legacy default stream: device memory (cudaMalloc
 * with a cudaMemGetInfo peak sampled at every alloc and sync), the cuBLAS
 * projections (fp32: pedantic math and compute, no TF32; bf16 weights: x
 * rounded to bf16 into a staging buffer, fp32 accumulation on tensor cores),
 * the per-layer ops of kernels/kvz_cuda_ops.h, the attention kernels of
 * kernels/kvz_cuda_attention.h, and this file's elementwise kernels (bias,
 * add, embedding gather, strided row copy, fp32 <-> bf16, random fill).
 * bf16 values are their bit patterns (uint16_t), which is what cuBLAS's
 * CUDA_R_16BF reads; conversions follow the host rule of ops/backend.h.
 * Kernels use grid-stride loops (correct for any size) and explicit
 * round-to-nearest adds, like the CPU backend's separate operations. Ops only
 * enqueue; a fault shows up at the next download, sync or checked call. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda_ops_internal.cuh"

extern "C" {
#include "../ops/backend.h"
#include "kvz_cuda_attention.h"
#include "kvz_cuda_ops.h"
}
#include "cuda_score.cuh"
#include "cuda_train.cuh"

typedef struct cuda_backend {
    kvz_backend head;
    int device;
    cublasHandle_t blas;
    cublasMath_t math;   /* the handle's math mode now */
    uint16_t *x_bf16;    /* linear's bf16 input (bf16 weights), x_bf16_cap elements */
    size_t x_bf16_cap;
    int32_t *ids;        /* embed's device ids, ids_cap elements */
    size_t ids_cap;
    size_t peak;         /* the largest used device memory sampled */
    int tc_attention;    /* 0 when KVZ_ATTENTION=fp32 at open: no tensor-core attention */
    int tc_score;        /* 0 when KVZ_SCORE=fp32 at open: no tensor-core score */
    /* KVzip+ score scratch (value lognorms' Gram/Y, best's slice maxima) */
    float *score_scratch;
    size_t score_scratch_cap;
    /* trainer: reduction partials (+ a result slot) and the ridge's
     * finiteness flag in one allocation; the bf16 GEMM's two inputs */
    double *train_partial;
    unsigned long long *train_flag;
    uint16_t *gemm_bf16;
    size_t gemm_bf16_cap;
    /* asynchronous downloads: a non-blocking copy stream (the legacy
     * default stream would wait for it), created on first use */
    cudaStream_t copy_stream;
    cudaEvent_t compute_done, slot_done[KVZ_BACKEND_SLOTS];
    int async_ready;
    int slot_recorded[KVZ_BACKEND_SLOTS];
} cuda_backend;

enum { THREADS = 256 };

#define GRID_STRIDE(e, n)                                                         \
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < (n);        \
         e += (size_t)gridDim.x * blockDim.x)

static cuda_backend *cb(kvz_backend *be)
{
    return (cuda_backend *)be;
}

/* ---------- status ---------- */

/* KVZ_OK, or "cuda: <call>: <error name> (<message>)" with KVZ_EIO; the
 * error is consumed so a later launch check does not report it again. */
static int check(cudaError_t rc, const char *call, kvz_error *err)
{
    if (rc == cudaSuccess)
        return KVZ_OK;
    (void)cudaGetLastError();
    return kvz_fail(err, KVZ_EIO, "cuda: %s: %s (%s)", call, cudaGetErrorName(rc),
                    cudaGetErrorString(rc));
}

static int check_blas(cublasStatus_t rc, const char *call, kvz_error *err)
{
    if (rc == CUBLAS_STATUS_SUCCESS)
        return KVZ_OK;
    int code = rc == CUBLAS_STATUS_ALLOC_FAILED ? KVZ_ENOMEM : KVZ_EIO;
    return kvz_fail(err, code, "cuda: %s: cuBLAS %s (status %d)", call,
                    cublasGetStatusString(rc), (int)rc);
}

static int check_launch(const char *kernel, kvz_error *err)
{
    return check(cudaGetLastError(), kernel, err);
}

static void sample_memory(cuda_backend *c)
{
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    if (total_b - free_b > c->peak)
        c->peak = total_b - free_b;
}

/* ---------- memory ---------- */

static int cuda_alloc(kvz_backend *be, size_t bytes, const char *what, void **out,
                      kvz_error *err)
{
    cuda_backend *c = cb(be);
    *out = NULL;
    cudaError_t rc = cudaMalloc(out, bytes);
    if (rc == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        *out = NULL;
        return kvz_fail(err, KVZ_ENOMEM,
                        "cuda: cannot allocate %zu bytes for %s on device %d (%zu bytes free "
                        "of %zu)", bytes, what, c->device, free_b, total_b);
    }
    char call[192];
    snprintf(call, sizeof call, "cudaMalloc(%zu bytes for %s)", bytes, what);
    if (check(rc, call, err)) {
        *out = NULL;
        return KVZ_EIO;
    }
    sample_memory(c);
    return KVZ_OK;
}

static void cuda_free(kvz_backend *be, void *p, size_t bytes)
{
    (void)be;
    (void)bytes;
    if (p && cudaFree(p) != cudaSuccess)
        (void)cudaGetLastError(); /* a broken context: the next checked call says so */
}

/* Grows a scratch buffer to at least n elements of size es (contents lost;
 * cudaFree waits for queued work that still reads the old one). */
static int reserve(cuda_backend *c, void **buf, size_t *cap, size_t n, size_t es,
                   const char *what, kvz_error *err)
{
    if (n <= *cap)
        return KVZ_OK;
    cuda_free(&c->head, *buf, *cap * es);
    *buf = NULL;
    *cap = 0;
    int rc = cuda_alloc(&c->head, n * es, what, buf, err);
    if (!rc)
        *cap = n;
    return rc;
}

static int memcpy_kind(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                       const char *dir, kvz_error *err)
{
    char call[96];
    snprintf(call, sizeof call, "cudaMemcpy(%s, %zu bytes)", dir, bytes);
    return check(cudaMemcpy(dst, src, bytes, kind), call, err);
}

static int cuda_upload(kvz_backend *be, void *dst, const void *host_src, size_t bytes,
                       kvz_error *err)
{
    (void)be;
    return memcpy_kind(dst, host_src, bytes, cudaMemcpyHostToDevice, "host to device", err);
}

static int cuda_download(kvz_backend *be, void *host_dst, const void *src, size_t bytes,
                         kvz_error *err)
{
    (void)be;
    return memcpy_kind(host_dst, src, bytes, cudaMemcpyDeviceToHost, "device to host", err);
}

static int cuda_copy(kvz_backend *be, void *dst, const void *src, size_t bytes, kvz_error *err)
{
    (void)be;
    return memcpy_kind(dst, src, bytes, cudaMemcpyDeviceToDevice, "device to device", err);
}

static int cuda_sync(kvz_backend *be, kvz_error *err)
{
    int rc = check(cudaDeviceSynchronize(), "cudaDeviceSynchronize", err);
    sample_memory(cb(be));
    return rc;
}

static size_t cuda_peak(const kvz_backend *be)
{
    return ((const cuda_backend *)be)->peak;
}

/* ---------- elementwise kernels ---------- */

static __device__ float bf16_widen_dev(uint16_t b)
{
    return __int_as_float((int)((unsigned)b << 16));
}

/* kvz_f32_to_bf16: round to nearest even; NaN stays a quiet NaN. */
static __device__ uint16_t f32_to_bf16_dev(float x)
{
    unsigned bits = (unsigned)__float_as_int(x);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
        return (uint16_t)((bits >> 16) | 0x0040u);
    unsigned rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

static __global__ void add_bias_kernel(float *y, const float *bias, size_t n_rows, size_t width)
{
    GRID_STRIDE(e, n_rows * width)
        y[e] = __fadd_rn(y[e], bias[e % width]);
}

static __global__ void add_kernel(float *h, const float *d, size_t count)
{
    GRID_STRIDE(e, count)
        h[e] = __fadd_rn(h[e], d[e]);
}

/* h [n, dim] = rows ids[t] of the table (fp32 t32 or bf16 t16). */
static __global__ void embed_kernel(const int32_t *ids, const float *t32, const uint16_t *t16,
                                    float *h, size_t n, size_t dim)
{
    GRID_STRIDE(e, n * dim) {
        size_t src = (size_t)ids[e / dim] * dim + e % dim;
        h[e] = t32 ? t32[src] : bf16_widen_dev(t16[src]);
    }
}

static __global__ void copy_rows_kernel(float *dst, size_t dst_stride, const float *src,
                                        size_t src_stride, size_t n_rows, size_t width)
{
    GRID_STRIDE(e, n_rows * width) {
        size_t r = e / width, col = e % width;
        dst[r * dst_stride + col] = src[r * src_stride + col];
    }
}

static __global__ void to_bf16_kernel(const float *src, uint16_t *dst, size_t n)
{
    GRID_STRIDE(e, n)
        dst[e] = f32_to_bf16_dev(src[e]);
}

static __global__ void from_bf16_kernel(const uint16_t *src, float *dst, size_t n)
{
    GRID_STRIDE(e, n)
        dst[e] = bf16_widen_dev(src[e]);
}

/* Between any two of fp32 / bf16 / fp16 (dtype codes of ops/backend.h) via
 * fp32; fp16 with cuda_fp16.h's round-to-nearest-even conversions, a NaN
 * made quiet with the source's sign and payload top bits (the host rule). */
static __global__ void convert_kernel(const void *src, int sdt, void *dst, int ddt, size_t n)
{
    GRID_STRIDE(e, n) {
        float x;
        if (sdt == KVZ_F32)
            x = ((const float *)src)[e];
        else if (sdt == KVZ_BF16)
            x = bf16_widen_dev(((const uint16_t *)src)[e]);
        else
            x = __half2float(__ushort_as_half(((const unsigned short *)src)[e]));
        if (ddt == KVZ_F32) {
            ((float *)dst)[e] = x;
        } else if (ddt == KVZ_BF16) {
            ((uint16_t *)dst)[e] = f32_to_bf16_dev(x);
        } else {
            unsigned bits = (unsigned)__float_as_int(x);
            unsigned short h;
            if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
                h = (unsigned short)(((bits >> 16) & 0x8000u) | 0x7e00u | ((bits >> 13) & 0x3ffu));
            else
                h = __half_as_ushort(__float2half_rn(x));
            ((unsigned short *)dst)[e] = h;
        }
    }
}

/* kvz_splitmix64 of ops/backend.h, on the device. */
static __device__ uint64_t splitmix64_dev(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* kvz_op_fill's element e: u = top 24 bits of splitmix64(key + e) / 2^24,
 * (2u - 1) * bound (2u is exact, so a fused multiply-add rounds the same),
 * or value when bound is 0; stored as fp32 (d32) or bf16 (d16). */
static __global__ void fill_kernel(float *d32, uint16_t *d16, size_t n, uint64_t key,
                                   float bound, float value)
{
    GRID_STRIDE(e, n) {
        float x = value;
        if (bound != 0.0f) {
            float u = (float)(splitmix64_dev(key + e) >> 40) * (1.0f / 16777216.0f);
            x = __fmul_rn(__fsub_rn(2.0f * u, 1.0f), bound);
        }
        if (d32)
            d32[e] = x;
        else
            d16[e] = f32_to_bf16_dev(x);
    }
}

/* ---------- ops ---------- */

/* y[n, n_out] = x[n, n_in] W^T (+ bias); W [n_out, n_in] row-major is
 * column-major n_in x n_out, hence op(W) = T: C(n_out x n) = W^T x. fp32:
 * pedantic math and compute (strict fp32); bf16: default math (tensor cores)
 * with fp32 accumulation, as the previous GPU pass did per precision. */
/* The handle's math mode (every GEMM user sets the one it needs, except
 * that fp32 users accept default and pedantic alike). */
static int set_math(cuda_backend *c, cublasMath_t math, kvz_error *err)
{
    if (math == c->math)
        return KVZ_OK;
    int rc = check_blas(cublasSetMathMode(c->blas, math), "cublasSetMathMode", err);
    c->math = rc ? c->math : math;
    return rc;
}

static int cuda_linear(kvz_backend *be, const float *x, kvz_buf w, const float *bias, float *y,
                       size_t n, size_t n_in, size_t n_out, kvz_error *err)
{
    cuda_backend *c = cb(be);
    if (w.dtype != KVZ_F32 && w.dtype != KVZ_BF16)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "cuda: linear: %s weights are not supported",
                        kvz_dtype_name(w.dtype));
    if (n > INT_MAX || n_in > INT_MAX || n_out > INT_MAX)
        return kvz_fail(err, KVZ_EINVAL, "cuda: linear: GEMM of %zu x %zu x %zu is too large "
                        "for cuBLAS", n, n_in, n_out);
    int bf16 = w.dtype == KVZ_BF16;
    const void *xin = x;
    int rc = KVZ_OK;
    if (bf16) {
        rc = reserve(c, (void **)&c->x_bf16, &c->x_bf16_cap, n * n_in, sizeof(uint16_t),
                     "linear's bf16 input", err);
        if (rc)
            return rc;
        to_bf16_kernel<<<kvz_cuda_blocks_for(n * n_in, THREADS), THREADS, 0, 0>>>(x, c->x_bf16,
                                                                                 n * n_in);
        rc = check_launch("to_bf16_kernel launch", err);
        xin = c->x_bf16;
    }
    cublasMath_t math = bf16 ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH;
    if (!rc && math != c->math) {
        rc = check_blas(cublasSetMathMode(c->blas, math), "cublasSetMathMode", err);
        c->math = rc ? c->math : math;
    }
    if (rc)
        return rc;
    const float alpha = 1.0f, beta = 0.0f;
    cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    cublasStatus_t st = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)n,
                                     (int)n_in, &alpha, w.data, in_type, (int)n_in, xin, in_type,
                                     (int)n_in, &beta, y, CUDA_R_32F, (int)n_out, compute,
                                     CUBLAS_GEMM_DEFAULT);
    char call[96];
    snprintf(call, sizeof call, "linear: cublasGemmEx(%zu x %zu x %zu, %s)", n, n_in, n_out,
             kvz_dtype_name(w.dtype));
    rc = check_blas(st, call, err);
    if (rc || !bias)
        return rc;
    add_bias_kernel<<<kvz_cuda_blocks_for(n * n_out, THREADS), THREADS, 0, 0>>>(y, bias, n,
                                                                               n_out);
    return check_launch("add_bias_kernel launch", err);
}

static int cuda_rmsnorm(kvz_backend *be, const float *x, const float *w, float *y, size_t n_rows,
                        size_t dim, float eps, kvz_error *err)
{
    (void)be;
    return kvz_cuda_rmsnorm(x, w, y, n_rows, dim, eps, err);
}

static int cuda_rope(kvz_backend *be, float *x, size_t n_tokens, size_t n_heads,
                     size_t head_dim, size_t pos0, const float *inv_freq, kvz_error *err)
{
    (void)be;
    return kvz_cuda_rope_apply(x, n_tokens, n_heads, head_dim, pos0, inv_freq, err);
}

/* compute bf16 takes the tensor-core kernel where the head_dim allows it,
 * unless KVZ_ATTENTION=fp32 was set when the backend opened (the safety
 * valve); otherwise the fp32 kernel. */
static int cuda_attention(kvz_backend *be, const kvz_attn_args *a, kvz_dtype compute,
                          kvz_error *err)
{
    int tc = compute == KVZ_BF16 && cb(be)->tc_attention &&
             kvz_cuda_attention_bf16_supported(a->head_dim);
    return tc ? kvz_cuda_attention_bf16(a, err) : kvz_cuda_attention(a, err);
}

static int cuda_ragged_attention(kvz_backend *be, const kvz_ragged_attn_args *a,
                                 kvz_error *err)
{
    (void)be;
    return kvz_cuda_ragged_attention(a, err);
}

static int cuda_swiglu(kvz_backend *be, const float *gate_up, float *out, size_t n, size_t d_ff,
                       kvz_error *err)
{
    (void)be;
    return kvz_cuda_swiglu(gate_up, out, n, d_ff, err);
}

static int cuda_add(kvz_backend *be, float *h, const float *d, size_t count, kvz_error *err)
{
    (void)be;
    add_kernel<<<kvz_cuda_blocks_for(count, THREADS), THREADS, 0, 0>>>(h, d, count);
    return check_launch("add_kernel launch", err);
}

/* The ids go through one device buffer: cudaMemcpy from the host waits for
 * the previous embed's gather, so reusing it is safe. */
static int cuda_embed(kvz_backend *be, kvz_buf table, size_t dim, const int32_t *ids, size_t n,
                      float *h, kvz_error *err)
{
    cuda_backend *c = cb(be);
    if (table.dtype != KVZ_F32 && table.dtype != KVZ_BF16)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "cuda: embed: %s tables are not supported",
                        kvz_dtype_name(table.dtype));
    int rc = reserve(c, (void **)&c->ids, &c->ids_cap, n, sizeof(int32_t), "embed's token ids",
                     err);
    rc = rc ? rc : memcpy_kind(c->ids, ids, n * sizeof *ids, cudaMemcpyHostToDevice,
                               "token ids to device", err);
    if (rc)
        return rc;
    int f32 = table.dtype == KVZ_F32;
    embed_kernel<<<kvz_cuda_blocks_for(n * dim, THREADS), THREADS, 0, 0>>>(
        c->ids, f32 ? (const float *)table.data : NULL,
        f32 ? NULL : (const uint16_t *)table.data, h, n, dim);
    return check_launch("embed_kernel launch", err);
}

static int cuda_copy_rows(kvz_backend *be, float *dst, size_t dst_stride, const float *src,
                          size_t src_stride, size_t n_rows, size_t width, kvz_error *err)
{
    if (dst_stride == width && src_stride == width)
        return cuda_copy(be, dst, src, n_rows * width * sizeof *dst, err);
    copy_rows_kernel<<<kvz_cuda_blocks_for(n_rows * width, THREADS), THREADS, 0, 0>>>(
        dst, dst_stride, src, src_stride, n_rows, width);
    return check_launch("copy_rows_kernel launch", err);
}

static int cuda_convert(kvz_backend *be, kvz_buf dst, kvz_buf src, kvz_error *err)
{
    size_t n = src.numel;
    if (dst.dtype == src.dtype)
        return cuda_copy(be, dst.data, src.data, n * kvz_dtype_size(src.dtype), err);
    if (src.dtype == KVZ_F32 && dst.dtype == KVZ_BF16) {
        to_bf16_kernel<<<kvz_cuda_blocks_for(n, THREADS), THREADS, 0, 0>>>(
            (const float *)src.data, (uint16_t *)dst.data, n);
        return check_launch("to_bf16_kernel launch", err);
    }
    if (src.dtype == KVZ_BF16 && dst.dtype == KVZ_F32) {
        from_bf16_kernel<<<kvz_cuda_blocks_for(n, THREADS), THREADS, 0, 0>>>(
            (const uint16_t *)src.data, (float *)dst.data, n);
        return check_launch("from_bf16_kernel launch", err);
    }
    convert_kernel<<<kvz_cuda_blocks_for(n, THREADS), THREADS, 0, 0>>>(
        src.data, (int)src.dtype, dst.data, (int)dst.dtype, n);
    return check_launch("convert_kernel launch", err);
}

static int cuda_fill(kvz_backend *be, kvz_buf b, uint64_t seed, uint64_t tensor, float bound,
                     float value, kvz_error *err)
{
    (void)be;
    if (b.dtype != KVZ_F32 && b.dtype != KVZ_BF16)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "cuda: fill: %s buffers are not supported",
                        kvz_dtype_name(b.dtype));
    int f32 = b.dtype == KVZ_F32;
    fill_kernel<<<kvz_cuda_blocks_for(b.numel, THREADS), THREADS, 0, 0>>>(
        f32 ? (float *)b.data : NULL, f32 ? NULL : (uint16_t *)b.data, b.numel,
        kvz_fill_key(seed, tensor), bound, value);
    return check_launch("fill_kernel launch", err);
}

static void *cuda_host_alloc(kvz_backend *be, size_t bytes)
{
    (void)be;
    void *p = NULL;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_host_free(kvz_backend *be, void *p)
{
    (void)be;
    cudaFreeHost(p);
}

/* ---------- KVzip+ score (cuda) ---------- */
/* The phases of kernels/cuda_score.cu on the legacy stream, with the
 * backend's scratch; the sampled-row gather; asynchronous downloads. */

static int cuda_row_lognorms(kvz_backend *be, const float *x, size_t ld, size_t width, size_t n,
                             double *out, kvz_error *err)
{
    (void)be;
    return kvz_cuda_score_row_lognorms(x, ld, width, n, out, 0, err);
}

static int cuda_value_lognorms(kvz_backend *be, const float *v, const float *w_o, size_t H,
                               size_t Hkv, size_t dh, size_t D, size_t i0, size_t i1,
                               double *out, kvz_error *err)
{
    cuda_backend *c = cb(be);
    int rc = c->math == CUBLAS_TF32_TENSOR_OP_MATH ? set_math(c, CUBLAS_PEDANTIC_MATH, err) : 0;
    rc = rc ? rc : reserve(c, (void **)&c->score_scratch, &c->score_scratch_cap,
                           kvz_cuda_score_value_scratch(H, Hkv, dh, i1 - i0), sizeof(float),
                           "the score's GEMM scratch", err);
    return rc ? rc
              : kvz_cuda_score_value_lognorms(c->blas, c->score_scratch, v, w_o, H, Hkv, dh, D,
                                              i0, i1, out, 0, err);
}

static int cuda_causal_lse(kvz_backend *be, const float *q, const float *k, const float *tap_lse,
                           size_t H, size_t Hkv, size_t dh, float scale, size_t r0, size_t r1,
                           double *lse, kvz_error *err)
{
    (void)be;
    return kvz_cuda_score_causal_lse(q, k, tap_lse, H, Hkv, dh, scale, r0, r1, lse, 0, err);
}

static int cuda_kvzip_best(kvz_backend *be, const float *q, const float *k, size_t H,
                           size_t Hkv, size_t dh, float scale, size_t p0, size_t p1, size_t r0,
                           size_t r1, const double *lse, const double *log_xnorm,
                           const double *lognorm, kvz_dtype compute, float *out,
                           kvz_error *err)
{
    cuda_backend *c = cb(be);
    int tc = compute == KVZ_BF16 && c->tc_score;
    size_t need = kvz_cuda_score_best_scratch(Hkv, dh, p0, p1, r0, r1, tc);
    int rc = need ? reserve(c, (void **)&c->score_scratch, &c->score_scratch_cap, need,
                            sizeof(float), "the score's slice maxima", err)
                  : KVZ_OK;
    return rc ? rc
              : kvz_cuda_score_best(q, k, H, Hkv, dh, scale, p0, p1, r0, r1, lse, log_xnorm,
                                    lognorm, tc, need ? c->score_scratch : NULL, out, 0, err);
}

/* dst[s, :] = src[idx[s] - base, :]; blocks stride over rows, threads over
 * columns. */
static __global__ void gather_rows_kernel(const float *src, size_t ld, size_t width,
                                          size_t base, const int64_t *idx, size_t n, float *dst)
{
    for (size_t s = blockIdx.x; s < n; s += gridDim.x) {
        const float *row = src + ((size_t)idx[s] - base) * ld;
        for (size_t c = threadIdx.x; c < width; c += blockDim.x)
            dst[s * width + c] = row[c];
    }
}

static int cuda_gather_rows(kvz_backend *be, const float *src, size_t ld, size_t width,
                            size_t base, size_t n_src, const int64_t *idx, size_t n, float *dst,
                            kvz_error *err)
{
    (void)be, (void)n_src; /* the indices stay on the device: the caller checked them */
    gather_rows_kernel<<<kvz_cuda_blocks_for(n, 1), 128, 0, 0>>>(src, ld, width, base, idx, n,
                                                                 dst);
    return check_launch("gather_rows_kernel launch", err);
}

static int async_setup(cuda_backend *c, kvz_error *err)
{
    if (c->async_ready)
        return KVZ_OK;
    int rc = check(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking),
                   "cudaStreamCreateWithFlags(copy stream)", err);
    if (rc) {
        c->copy_stream = NULL;
        return rc;
    }
    rc = check(cudaEventCreateWithFlags(&c->compute_done, cudaEventDisableTiming),
               "cudaEventCreate", err);
    for (int s = 0; !rc && s < KVZ_BACKEND_SLOTS; s++)
        rc = check(cudaEventCreateWithFlags(&c->slot_done[s], cudaEventDisableTiming),
                   "cudaEventCreate", err);
    c->async_ready = rc == KVZ_OK; /* (a failure leaks a few events: the device is broken) */
    return rc;
}

static int cuda_download_async(kvz_backend *be, size_t slot, void *host_dst, const void *src,
                               size_t bytes, kvz_error *err)
{
    (void)slot;
    cuda_backend *c = cb(be);
    int rc = async_setup(c, err);
    rc = rc ? rc : check(cudaEventRecord(c->compute_done, 0), "cudaEventRecord", err);
    rc = rc ? rc : check(cudaStreamWaitEvent(c->copy_stream, c->compute_done, 0),
                         "cudaStreamWaitEvent(copy stream)", err);
    return rc ? rc : check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost,
                                           c->copy_stream),
                           "cudaMemcpyAsync(device to host, copy stream)", err);
}

static int cuda_slot_record(kvz_backend *be, size_t slot, kvz_error *err)
{
    cuda_backend *c = cb(be);
    int rc = async_setup(c, err);
    rc = rc ? rc : check(cudaEventRecord(c->slot_done[slot], c->copy_stream),
                         "cudaEventRecord(slot)", err);
    if (!rc)
        c->slot_recorded[slot] = 1;
    return rc;
}

static int cuda_slot_fence(kvz_backend *be, size_t slot, kvz_error *err)
{
    cuda_backend *c = cb(be);
    if (!c->slot_recorded[slot])
        return KVZ_OK;
    return check(cudaStreamWaitEvent(0, c->slot_done[slot], 0), "cudaStreamWaitEvent(slot)",
                 err);
}

static int cuda_slot_wait(kvz_backend *be, size_t slot, kvz_error *err)
{
    cuda_backend *c = cb(be);
    if (!c->slot_recorded[slot])
        return KVZ_OK;
    return check(cudaEventSynchronize(c->slot_done[slot]),
                 "waiting for the device (cudaEventSynchronize)", err);
}
/* (end of the KVzip+ score, cuda) */

/* ---------- trainer ops (cuda) ---------- */

/* The partials and the flag, allocated on first use. */
static int train_scratch(cuda_backend *c, kvz_error *err)
{
    if (c->train_partial)
        return KVZ_OK;
    void *p = NULL;
    int rc = cuda_alloc(&c->head, KVZ_TRAIN_PARTIALS * sizeof(double) + sizeof(unsigned long long),
                        "the trainer's reduction scratch", &p, err);
    if (rc)
        return rc;
    c->train_partial = (double *)p;
    c->train_flag = (unsigned long long *)(c->train_partial + KVZ_TRAIN_PARTIALS);
    return KVZ_OK;
}

/* Row-major c [m, n] = op(a) op(b) + beta c is column-major c^T [n, m] =
 * op(b)^T op(a)^T: b's row-major [k, n] is the column-major [n, k] it
 * needs (no transpose), a^T likewise. */
static int cuda_gemm(kvz_backend *be, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                     const float *a, const float *b, float beta, float *cm,
                     kvz_gemm_precision prec, kvz_error *err)
{
    cuda_backend *c = cb(be);
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    int lda = (int)(trans_a ? m : k), ldb = (int)(trans_b ? k : n);
    const float one = 1.0f;
    if (prec != KVZ_GEMM_BF16) {
        int rc = set_math(c, prec == KVZ_GEMM_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                   : CUBLAS_PEDANTIC_MATH, err);
        return rc ? rc : check_blas(cublasSgemm(c->blas, op_b, op_a, (int)n, (int)m, (int)k, &one,
                                                b, ldb, a, lda, &beta, cm, (int)n),
                                    "cublasSgemm(trainer)", err);
    }
    size_t na = m * k, nb = k * n, off = (na + 63) / 64 * 64; /* b's copy 128-byte aligned */
    int rc = reserve(c, (void **)&c->gemm_bf16, &c->gemm_bf16_cap, off + nb, sizeof(uint16_t),
                     "the bf16 GEMM inputs", err);
    if (rc)
        return rc;
    to_bf16_kernel<<<kvz_cuda_blocks_for(na, THREADS), THREADS, 0, 0>>>(a, c->gemm_bf16, na);
    rc = check_launch("to_bf16_kernel launch", err);
    if (!rc) {
        to_bf16_kernel<<<kvz_cuda_blocks_for(nb, THREADS), THREADS, 0, 0>>>(b, c->gemm_bf16 + off,
                                                                           nb);
        rc = check_launch("to_bf16_kernel launch", err);
    }
    rc = rc ? rc : set_math(c, CUBLAS_DEFAULT_MATH, err);
    return rc ? rc : check_blas(cublasGemmEx(c->blas, op_b, op_a, (int)n, (int)m, (int)k, &one,
                                             c->gemm_bf16 + off, CUDA_R_16BF, ldb, c->gemm_bf16,
                                             CUDA_R_16BF, lda, &beta, cm, CUDA_R_32F, (int)n,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                "cublasGemmEx(trainer, bf16)", err);
}

static int cuda_bias_rows(kvz_backend *be, float *out, const float *bias, size_t n, size_t m,
                          kvz_error *err)
{
    (void)be;
    return kvz_cuda_train_bias_rows(out, bias, n, m, err);
}

static int cuda_col_sums(kvz_backend *be, const float *v, size_t n, size_t m, float *out,
                         kvz_error *err)
{
    (void)be;
    return kvz_cuda_train_col_sums(v, n, m, out, err);
}

static int cuda_gelu(kvz_backend *be, const float *h, float *a, size_t count, kvz_error *err)
{
    (void)be;
    return kvz_cuda_train_gelu(h, a, count, err);
}

static int cuda_gelu_backward(kvz_backend *be, const float *h, float *da, size_t count,
                              kvz_error *err)
{
    (void)be;
    return kvz_cuda_train_gelu_backward(h, da, count, err);
}

/* The reductions share one partials buffer: ops are ordered on the one
 * stream, so a later op's partials never overwrite an earlier op's before
 * its final block has read them. */
static int cuda_mse(kvz_backend *be, const float *pred, const float *y, size_t count, float *dy,
                    double *loss, kvz_error *err)
{
    cuda_backend *c = cb(be);
    int rc = train_scratch(c, err);
    return rc ? rc : kvz_cuda_train_mse(pred, y, count, dy, loss, c->train_partial, err);
}

static int cuda_clip_grad_norm(kvz_backend *be, float *g, size_t count, double max_norm,
                               double *norm, kvz_error *err)
{
    cuda_backend *c = cb(be);
    int rc = train_scratch(c, err);
    return rc ? rc : kvz_cuda_train_clip(g, count, max_norm, norm, c->train_partial, err);
}

static int cuda_adamw(kvz_backend *be, float *param, const float *grad, float *m, float *v,
                      size_t count, const kvz_adamw_args *a, kvz_error *err)
{
    (void)be;
    return kvz_cuda_train_adamw(param, grad, m, v, count, a, err);
}

static int cuda_combine_parts(kvz_backend *be, float *dst, const float *const *src,
                              const float *weight, size_t n_src, size_t count, double *loss_dst,
                              const double *loss, const size_t *rows, kvz_error *err)
{
    (void)be;
    return kvz_cuda_train_combine(dst, src, weight, n_src, count, loss_dst, loss, rows, err);
}

static int cuda_take_rows(kvz_backend *be, kvz_buf src, size_t width, const int64_t *idx,
                          size_t row0, size_t n, float *dst, kvz_error *err)
{
    (void)be;
    return kvz_cuda_train_take_rows(src.data, src.dtype == KVZ_F16, width, idx, row0, n, dst,
                                    err);
}

static int cuda_ridge_add(kvz_backend *be, const float *x, const float *y, size_t n, size_t D,
                          size_t H, kvz_buf scratch, kvz_buf sums, kvz_error *err)
{
    cuda_backend *c = cb(be);
    int rc = train_scratch(c, err);
    rc = rc ? rc : set_math(c, CUBLAS_PEDANTIC_MATH, err);
    return rc ? rc : kvz_cuda_train_ridge_add(c->blas, x, y, n, D, H, (double *)scratch.data,
                                              scratch.numel / (D + H), (double *)sums.data,
                                              c->train_flag, err);
}

static int cuda_memory(kvz_backend *be, size_t *free_bytes, size_t *total_bytes, kvz_error *err)
{
    (void)be;
    return check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo", err);
}
/* (end of the trainer ops, cuda) */

/* ---------- the table, opening and closing ---------- */

static void cuda_close(kvz_backend *be)
{
    cuda_backend *c = cb(be);
    cuda_free(be, c->x_bf16, 0);
    cuda_free(be, c->ids, 0);
    cuda_free(be, c->score_scratch, 0);
    cuda_free(be, c->train_partial, 0);
    cuda_free(be, c->gemm_bf16, 0);
    if (c->async_ready) {
        cudaStreamSynchronize(c->copy_stream);
        for (int s = 0; s < KVZ_BACKEND_SLOTS; s++)
            cudaEventDestroy(c->slot_done[s]);
        cudaEventDestroy(c->compute_done);
        cudaStreamDestroy(c->copy_stream);
    }
    if (c->blas)
        cublasDestroy(c->blas);
    free(c);
}

/* In the order of kvz_backend_ops (C++17 has no designated initializers). */
static const kvz_backend_ops CUDA_OPS = {
    cuda_close,   cuda_alloc,     cuda_free,      cuda_upload,   cuda_download, cuda_copy,
    cuda_sync,    cuda_peak,      cuda_host_alloc, cuda_host_free, cuda_linear,    cuda_rmsnorm,  cuda_rope,     cuda_attention,
    cuda_ragged_attention,
    cuda_swiglu,  cuda_add,       cuda_embed,     cuda_copy_rows, cuda_convert, cuda_fill,
    /* KVzip+ score */
    cuda_row_lognorms, cuda_value_lognorms, cuda_causal_lse, cuda_kvzip_best, cuda_gather_rows,
    cuda_download_async, cuda_slot_record, cuda_slot_fence, cuda_slot_wait,
    /* trainer */
    cuda_gemm, cuda_bias_rows, cuda_col_sums, cuda_gelu, cuda_gelu_backward, cuda_mse,
    cuda_clip_grad_norm, cuda_adamw, cuda_combine_parts, cuda_take_rows, cuda_ridge_add,
    cuda_memory,
};

static int setup(cuda_backend *c, kvz_error *err)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return kvz_fail(err, KVZ_EUNSUPPORTED, "cuda: no CUDA device is available: %s (%s)",
                        cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (count <= 0)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "cuda: no CUDA device is available: the runtime reports 0 devices");
    if (c->device < 0 || c->device >= count)
        return kvz_fail(err, KVZ_EINVAL, "cuda: device %d does not exist (%d device%s: 0..%d)",
                        c->device, count, count == 1 ? "" : "s", count - 1);
    cudaDeviceProp prop;
    int rc = check(cudaSetDevice(c->device), "cudaSetDevice", err);
    rc = rc ? rc : check(cudaGetDeviceProperties(&prop, c->device), "cudaGetDeviceProperties",
                         err);
    if (rc)
        return rc;
    snprintf(c->head.name, sizeof c->head.name, "cuda:%d %s", c->device, prop.name);
    rc = check_blas(cublasCreate(&c->blas), "cublasCreate", err);
    if (rc) {
        c->blas = NULL;
        return rc;
    }
    c->math = CUBLAS_PEDANTIC_MATH; /* strict fp32 until a bf16 GEMM asks otherwise */
    rc = check_blas(cublasSetMathMode(c->blas, c->math), "cublasSetMathMode", err);
    rc = rc ? rc : check_blas(cublasSetStream(c->blas, 0), "cublasSetStream(legacy)", err);
    sample_memory(c);
    return rc;
}

extern "C" int kvz_backend_cuda_open(const kvz_backend_options *opt, kvz_backend **out,
                                     kvz_error *err)
{
    *out = NULL;
    cuda_backend *c = (cuda_backend *)calloc(1, sizeof *c);
    if (!c)
        return kvz_fail(err, KVZ_ENOMEM, "cuda: out of host memory");
    c->head.ops = &CUDA_OPS;
    c->head.kind = KVZ_BACKEND_CUDA;
    c->head.host_memory = 0;
    c->head.stream = NULL;
    c->device = opt ? opt->device : 0;
    const char *env_att = getenv("KVZ_ATTENTION"), *env_score = getenv("KVZ_SCORE");
    c->tc_attention = !(env_att && strcmp(env_att, "fp32") == 0);
    c->tc_score = !(env_score && strcmp(env_score, "fp32") == 0);
    snprintf(c->head.name, sizeof c->head.name, "cuda:%d", c->device);
    int rc = setup(c, err);
    if (rc) {
        cuda_close(&c->head);
        return rc;
    }
    *out = &c->head;
    return KVZ_OK;
}
