/* cuda_forward_kernels: the elementwise kernels of the GPU forward pass
 * (embedding gather, RMSNorm, rotate-half RoPE, q/k/v split, SwiGLU, bias and
 * residual adds, fp32 <-> bf16 casts, hash-based random fill) and their
 * launchers (cuda_forward_internal.cuh). Each mirrors the CPU op of
 * ops/ops_cpu.c / model/forward_run.c operation by operation: sums of squares
 * in double, explicit round-to-nearest intrinsics where nvcc would otherwise
 * fuse a multiply-add that the CPU keeps apart. bf16 values are handled as
 * their bit patterns (uint16_t, the upper half of an fp32), which is what
 * cuBLAS's CUDA_R_16BF reads. Grid-stride loops: correct for any size. */
#include <math.h>

#include "cuda_forward_internal.cuh"

enum { CF_THREADS = 256, CF_NORM_THREADS = 256 };

static unsigned cf_blocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 16u)
        b = 65535u * 16u;
    return b ? (unsigned)b : 1u;
}

#define CF_GRID_STRIDE(e, n)                                                      \
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < (n);        \
         e += (size_t)gridDim.x * blockDim.x)

static __device__ float cf_bf16_to_f32_dev(uint16_t b)
{
    return __int_as_float((int)((unsigned)b << 16));
}

static __device__ uint16_t cf_f32_to_bf16_dev(float x)
{
    unsigned bits = (unsigned)__float_as_int(x);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
        return (uint16_t)((bits >> 16) | 0x0040u); /* NaN stays a quiet NaN */
    unsigned rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

/* ---------- embedding ---------- */

/* h [n, D] = rows ids[t] of the embedding [vocab, D] (fp32 or bf16). */
static __global__ void embed_kernel(const int32_t *ids, const float *e32, const uint16_t *e16,
                                    float *h, size_t n, size_t dim)
{
    CF_GRID_STRIDE(e, n * dim) {
        size_t t = e / dim, c = e % dim;
        size_t src = (size_t)ids[t] * dim + c;
        h[e] = e32 ? e32[src] : cf_bf16_to_f32_dev(e16[src]);
    }
}

int cf_embed(kvz_cuda_forward *f, const int32_t *ids, float *h, size_t n, kvz_error *err)
{
    size_t D = f->cfg.d_model;
    int bf16 = f->precision == KVZ_CUDA_BF16;
    embed_kernel<<<cf_blocks(n * D, CF_THREADS), CF_THREADS, 0, 0>>>(
        ids, bf16 ? NULL : (const float *)f->embed, bf16 ? (const uint16_t *)f->embed : NULL, h,
        n, D);
    return cf_check_launch(f, "embedding kernel launch", err);
}

/* ---------- RMSNorm ---------- */

/* x, y [n_rows, dim] (y may alias x), w [dim]. Blocks stride over rows;
 * CF_NORM_THREADS threads share a row: per-thread double sums of x^2, a
 * shared-memory tree, then y = w * (x * inv) on the indices each thread read. */
static __global__ void rmsnorm_kernel(const float *x, const float *w, float *y, size_t n_rows,
                                      size_t dim, float eps)
{
    __shared__ double partial[CF_NORM_THREADS];
    for (size_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double sum = 0.0;
        for (size_t i = threadIdx.x; i < dim; i += CF_NORM_THREADS)
            sum += (double)xr[i] * (double)xr[i];
        partial[threadIdx.x] = sum;
        __syncthreads();
        for (unsigned s = CF_NORM_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s)
                partial[threadIdx.x] += partial[threadIdx.x + s];
            __syncthreads();
        }
        float variance = (float)(partial[0] / (double)dim);
        float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(variance, eps)));
        for (size_t i = threadIdx.x; i < dim; i += CF_NORM_THREADS)
            yr[i] = __fmul_rn(w[i], __fmul_rn(xr[i], inv));
        __syncthreads(); /* partial[0] is read before the next row overwrites it */
    }
}

int cf_rmsnorm(kvz_cuda_forward *f, const float *x, const float *w, float *y, size_t n_rows,
               size_t dim, kvz_error *err)
{
    if (n_rows == 0)
        return KVZ_OK;
    unsigned blocks = n_rows < 65535u ? (unsigned)n_rows : 65535u;
    rmsnorm_kernel<<<blocks, CF_NORM_THREADS, 0, 0>>>(x, w, y, n_rows, dim,
                                                      (float)f->cfg.rms_norm_eps);
    return cf_check_launch(f, "rmsnorm kernel launch", err);
}

/* ---------- RoPE ---------- */

/* x [n, n_heads, 2*half] in place; one thread per (token, head, pair). The
 * angle (float)(pos0 + t) * inv_freq[i] and the rotation round as the CPU. */
static __global__ void rope_kernel(float *x, size_t n, size_t n_heads, size_t half, size_t pos0,
                                   const float *inv_freq)
{
    CF_GRID_STRIDE(e, n * n_heads * half) {
        size_t i = e % half, row = e / half, t = row / n_heads;
        float angle = __fmul_rn((float)(pos0 + t), inv_freq[i]);
        float c = cosf(angle), s = sinf(angle);
        float *v = x + row * 2 * half;
        float x1 = v[i], x2 = v[half + i];
        v[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
        v[half + i] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    }
}

int cf_rope(kvz_cuda_forward *f, float *x, size_t n, size_t n_heads, size_t pos0, kvz_error *err)
{
    size_t half = f->cfg.head_dim / 2, total = n * n_heads * half;
    if (total == 0)
        return KVZ_OK;
    rope_kernel<<<cf_blocks(total, CF_THREADS), CF_THREADS, 0, 0>>>(x, n, n_heads, half, pos0,
                                                                    f->inv_freq);
    return cf_check_launch(f, "rope kernel launch", err);
}

/* ---------- q/k/v split ---------- */

static __global__ void split_qkv_kernel(const float *qkv, float *q, float *k_dst, float *v_dst,
                                        size_t n, size_t Q, size_t KV)
{
    size_t W = Q + 2 * KV;
    CF_GRID_STRIDE(e, n * W) {
        size_t t = e / W, c = e % W;
        float val = qkv[e];
        if (c < Q)
            q[t * Q + c] = val;
        else if (c < Q + KV)
            k_dst[t * KV + (c - Q)] = val;
        else
            v_dst[t * KV + (c - Q - KV)] = val;
    }
}

int cf_split_qkv(kvz_cuda_forward *f, const float *qkv, float *q, float *k_dst, float *v_dst,
                 size_t n, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    split_qkv_kernel<<<cf_blocks(n * (Q + 2 * KV), CF_THREADS), CF_THREADS, 0, 0>>>(
        qkv, q, k_dst, v_dst, n, Q, KV);
    return cf_check_launch(f, "q/k/v split kernel launch", err);
}

/* ---------- SwiGLU ---------- */

/* out [n, F] = (g / (1 + exp(-g))) * u, g/u the halves of gate_up [n, 2F]. */
static __global__ void swiglu_kernel(const float *gate_up, float *out, size_t n, size_t F)
{
    CF_GRID_STRIDE(e, n * F) {
        size_t r = e / F, i = e % F;
        float g = gate_up[r * 2 * F + i], u = gate_up[r * 2 * F + F + i];
        float silu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
        out[e] = __fmul_rn(silu, u);
    }
}

int cf_swiglu(kvz_cuda_forward *f, const float *gate_up, float *out, size_t n, kvz_error *err)
{
    size_t F = f->cfg.d_ff;
    swiglu_kernel<<<cf_blocks(n * F, CF_THREADS), CF_THREADS, 0, 0>>>(gate_up, out, n, F);
    return cf_check_launch(f, "swiglu kernel launch", err);
}

/* ---------- bias and residual ---------- */

static __global__ void add_bias_kernel(float *y, const float *bias, size_t n_rows, size_t width)
{
    CF_GRID_STRIDE(e, n_rows * width)
        y[e] = __fadd_rn(y[e], bias[e % width]);
}

int cf_add_bias(kvz_cuda_forward *f, float *y, const float *bias, size_t n_rows, size_t width,
                kvz_error *err)
{
    add_bias_kernel<<<cf_blocks(n_rows * width, CF_THREADS), CF_THREADS, 0, 0>>>(y, bias, n_rows,
                                                                                  width);
    return cf_check_launch(f, "bias kernel launch", err);
}

static __global__ void residual_kernel(float *h, const float *d, const float *bias,
                                       size_t n_rows, size_t width)
{
    CF_GRID_STRIDE(e, n_rows * width) {
        float delta = bias ? __fadd_rn(d[e], bias[e % width]) : d[e];
        h[e] = __fadd_rn(h[e], delta);
    }
}

int cf_residual_add(kvz_cuda_forward *f, float *h, const float *d, const float *bias,
                    size_t n_rows, size_t width, kvz_error *err)
{
    residual_kernel<<<cf_blocks(n_rows * width, CF_THREADS), CF_THREADS, 0, 0>>>(h, d, bias,
                                                                                  n_rows, width);
    return cf_check_launch(f, "residual kernel launch", err);
}

/* ---------- casts ---------- */

static __global__ void to_bf16_kernel(const float *src, uint16_t *dst, size_t n)
{
    CF_GRID_STRIDE(e, n)
        dst[e] = cf_f32_to_bf16_dev(src[e]);
}

static __global__ void from_bf16_kernel(const uint16_t *src, float *dst, size_t n)
{
    CF_GRID_STRIDE(e, n)
        dst[e] = cf_bf16_to_f32_dev(src[e]);
}

int cf_to_bf16(kvz_cuda_forward *f, const float *src, uint16_t *dst, size_t n, kvz_error *err)
{
    to_bf16_kernel<<<cf_blocks(n, CF_THREADS), CF_THREADS, 0, 0>>>(src, dst, n);
    return cf_check_launch(f, "fp32->bf16 kernel launch", err);
}

int cf_from_bf16(kvz_cuda_forward *f, const uint16_t *src, float *dst, size_t n, kvz_error *err)
{
    from_bf16_kernel<<<cf_blocks(n, CF_THREADS), CF_THREADS, 0, 0>>>(src, dst, n);
    return cf_check_launch(f, "bf16->fp32 kernel launch", err);
}

/* ---------- random fill ---------- */

static __host__ __device__ uint64_t cf_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Element i: u = top 24 bits of splitmix64(key + i) / 2^24 in [0, 1),
 * value (2u - 1) * bound, or the constant when bound is 0. */
static __global__ void fill_kernel(float *d32, uint16_t *d16, size_t n, uint64_t key,
                                   float bound, float value)
{
    CF_GRID_STRIDE(e, n) {
        float x = value;
        if (bound != 0.0f) {
            float u = (float)(cf_splitmix64(key + e) >> 40) * (1.0f / 16777216.0f);
            x = (2.0f * u - 1.0f) * bound;
        }
        if (d32)
            d32[e] = x;
        else
            d16[e] = cf_f32_to_bf16_dev(x);
    }
}

int cf_fill(kvz_cuda_forward *f, void *dst, size_t n, int bf16, uint64_t seed, uint64_t tensor,
            float bound, float value, kvz_error *err)
{
    if (n == 0)
        return KVZ_OK;
    uint64_t key = cf_splitmix64(seed ^ cf_splitmix64(tensor));
    fill_kernel<<<cf_blocks(n, CF_THREADS), CF_THREADS, 0, 0>>>(
        bf16 ? NULL : (float *)dst, bf16 ? (uint16_t *)dst : NULL, n, key, bound, value);
    return cf_check_launch(f, "random fill kernel launch", err);
}
