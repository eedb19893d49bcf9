/* cuda_ops: kvz_cuda_ops.h in CUDA builds, except the KVzip+ score
 * (cuda_score.cu): device buffers, the status-check helpers and the cuBLAS
 * handle of cuda_ops_internal.cuh, and the elementwise kernels (RMSNorm,
 * per-head RMSNorm, rotate-half RoPE, SwiGLU). The kernels mirror the CPU ops
 * in ops/ops_cpu.c operation by operation: sums of squares in double, and
 * explicit round-to-nearest intrinsics (__fmul_rn, __fadd_rn, ...) where nvcc
 * would otherwise fuse a multiply and an add into one FMA that the CPU build
 * does not use, so results differ from the CPU only by cosf/sinf/expf ulps. */
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>

#include "cuda_ops_internal.cuh"

extern "C" {
#include "kvz_cuda_ops.h"
}

/* ---------- helpers ---------- */

int kvz_cuda_check(cudaError_t rc, const char *what, kvz_error *err)
{
    if (rc == cudaSuccess)
        return KVZ_OK;
    /* Consume the reported error: a non-sticky one (a failed cudaMalloc or
     * cudaMallocHost the caller recovers from) would otherwise stay in the
     * last-error state and fail the next launch's cudaGetLastError check. */
    (void)cudaGetLastError();
    int code = rc == cudaErrorMemoryAllocation ? KVZ_ENOMEM : KVZ_EIO;
    return kvz_fail(err, code, "%s: %s (%s)", what, cudaGetErrorString(rc), cudaGetErrorName(rc));
}

int kvz_cublas_check(cublasStatus_t rc, const char *what, kvz_error *err)
{
    if (rc == CUBLAS_STATUS_SUCCESS)
        return KVZ_OK;
    int code = rc == CUBLAS_STATUS_ALLOC_FAILED ? KVZ_ENOMEM : KVZ_EIO;
    return kvz_fail(err, code, "%s: cuBLAS %s (status %d)", what, cublasGetStatusString(rc),
                    (int)rc);
}

int kvz_cuda_check_launch(const char *what, kvz_error *err)
{
    return kvz_cuda_check(cudaGetLastError(), what, err);
}

unsigned kvz_cuda_blocks_for(size_t n, unsigned threads)
{
    size_t blocks = (n + threads - 1) / threads;
    const size_t cap = (size_t)65535 * 16;
    if (blocks > cap)
        blocks = cap;
    return blocks ? (unsigned)blocks : 1u;
}

enum { SMEM_MAX_DEVICES = 64 };
static pthread_mutex_t g_optin_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t g_optin_bytes[SMEM_MAX_DEVICES]; /* 0: not asked yet */

static int optin_limit(int dev, size_t *out, const char *what, kvz_error *err)
{
    int rc = KVZ_OK;
    pthread_mutex_lock(&g_optin_lock);
    size_t *slot = dev >= 0 && dev < SMEM_MAX_DEVICES ? &g_optin_bytes[dev] : NULL;
    if (!slot || *slot == 0) {
        int optin = 0;
        rc = kvz_cuda_check(
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), what,
            err);
        *out = rc ? 0 : (size_t)optin;
        if (slot && !rc)
            *slot = *out;
    } else {
        *out = *slot;
    }
    pthread_mutex_unlock(&g_optin_lock);
    return rc;
}

int kvz_cuda_allow_smem(const void *kernel, size_t bytes, const char *what, kvz_error *err)
{
    if (bytes <= 48 * 1024)
        return KVZ_OK;
    int dev = 0;
    size_t limit = 0;
    int rc = kvz_cuda_check(cudaGetDevice(&dev), what, err);
    rc = rc ? rc : optin_limit(dev, &limit, what, err);
    if (rc)
        return rc;
    if (bytes > limit)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: needs %zu bytes of shared memory per block, device %d allows %zu",
                        what, bytes, dev, limit);
    return kvz_cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               (int)bytes),
                          what, err);
}

/* ---------- RMSNorm ---------- */

enum { NORM_THREADS = 256 }; /* a power of two: the tree reduction halves it */

/* Shapes: x, y [n_rows, dim], w [dim]; y may alias x. Grid: blocks stride
 * over the rows; block: NORM_THREADS threads share one row. Pass 1 sums x^2
 * in double and reduces it in shared memory; pass 2 (after the barrier, so
 * every read of the row is done) writes w * (x * inv), each thread the
 * same indices it read. */
static __global__ void rmsnorm_kernel(const float *x, const float *w, float *y, size_t n_rows,
                                      size_t dim, float eps)
{
    __shared__ double partial[NORM_THREADS];
    for (size_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double sum = 0.0;
        for (size_t i = threadIdx.x; i < dim; i += NORM_THREADS)
            sum += (double)xr[i] * (double)xr[i]; /* exact products: FMA or not, same sum */
        partial[threadIdx.x] = sum;
        __syncthreads();
        for (unsigned s = NORM_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s)
                partial[threadIdx.x] += partial[threadIdx.x + s];
            __syncthreads();
        }
        float variance = (float)(partial[0] / (double)dim);
        float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(variance, eps)));
        for (size_t i = threadIdx.x; i < dim; i += NORM_THREADS)
            yr[i] = __fmul_rn(w[i], __fmul_rn(xr[i], inv));
        __syncthreads(); /* partial[0] is read above before the next row overwrites it */
    }
}

extern "C" int kvz_cuda_rmsnorm(const float *x, const float *w, float *y, size_t n_rows,
                                size_t dim, float eps, kvz_error *err)
{
    if (!x || !w || !y || dim == 0)
        return kvz_fail(err, KVZ_EINVAL, "cuda rmsnorm: NULL array or dim 0");
    if (n_rows == 0)
        return KVZ_OK;
    rmsnorm_kernel<<<kvz_cuda_blocks_for(n_rows, 1), NORM_THREADS>>>(x, w, y, n_rows, dim, eps);
    return kvz_cuda_check_launch("cuda rmsnorm: kernel launch", err);
}

/* ---------- RoPE ---------- */

enum { ELEMENT_THREADS = 256 };

/* Shapes: x [n_tokens, n_heads, head_dim] in place, inv_freq [half],
 * half = head_dim / 2. One thread per (token, head, pair i < half) in a
 * grid-stride loop; the pair (x[i], x[half + i]) rotates by the angle
 * (float)(pos0 + t) * inv_freq[i], rounded exactly as the CPU op does. */
static __global__ void rope_kernel(float *x, size_t n_tokens, size_t n_heads, size_t half,
                                   size_t pos0, const float *inv_freq)
{
    size_t n = n_tokens * n_heads * half;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e % half, token_head = e / half, t = token_head / n_heads;
        float angle = __fmul_rn((float)(pos0 + t), inv_freq[i]);
        float c = cosf(angle), s = sinf(angle);
        float *v = x + token_head * 2 * half;
        float x1 = v[i], x2 = v[half + i];
        v[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
        v[half + i] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    }
}

extern "C" int kvz_cuda_rope_apply(float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                                   size_t pos0, const float *inv_freq, kvz_error *err)
{
    if (!x || !inv_freq || head_dim == 0 || head_dim % 2 != 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "cuda rope: NULL array or head_dim %zu (must be even and > 0)", head_dim);
    size_t n = n_tokens * n_heads * (head_dim / 2);
    if (n == 0)
        return KVZ_OK;
    rope_kernel<<<kvz_cuda_blocks_for(n, ELEMENT_THREADS), ELEMENT_THREADS>>>(
        x, n_tokens, n_heads, head_dim / 2, pos0, inv_freq);
    return kvz_cuda_check_launch("cuda rope: kernel launch", err);
}

/* ---------- SwiGLU ---------- */

/* Shapes: gate_up [n_rows, 2*d_ff] (gate half first), out [n_rows, d_ff].
 * One thread per output element in a grid-stride loop:
 * out = (g / (1 + exp(-g))) * u, each step rounded as the CPU op. */
static __global__ void swiglu_kernel(const float *gate_up, float *out, size_t n_rows,
                                     size_t d_ff)
{
    size_t n = n_rows * d_ff;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t r = e / d_ff, i = e % d_ff;
        float g = gate_up[r * 2 * d_ff + i], u = gate_up[r * 2 * d_ff + d_ff + i];
        float silu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
        out[e] = __fmul_rn(silu, u);
    }
}

extern "C" int kvz_cuda_swiglu(const float *gate_up, float *out, size_t n_rows, size_t d_ff,
                               kvz_error *err)
{
    if (!gate_up || !out || d_ff == 0)
        return kvz_fail(err, KVZ_EINVAL, "cuda swiglu: NULL array or d_ff 0");
    size_t n = n_rows * d_ff;
    if (n == 0)
        return KVZ_OK;
    swiglu_kernel<<<kvz_cuda_blocks_for(n, ELEMENT_THREADS), ELEMENT_THREADS>>>(gate_up, out,
                                                                               n_rows, d_ff);
    return kvz_cuda_check_launch("cuda swiglu: kernel launch", err);
}
