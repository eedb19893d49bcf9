/* cuda_forward_kernels: the elementwise kernels of the GPU forward pass
 * (embedding gather, q/k/v split, bias and residual adds, fp32 <-> bf16
 * casts, hash-based random fill) and their launchers
 * (cuda_forward_internal.cuh); RMSNorm, RoPE and SwiGLU are the ops of
 * kernels/kvz_cuda_ops.h, named for this forward. Each mirrors the CPU op of
 * ops/ops_cpu.c / model/forward_run.c operation by operation: sums of squares
 * in double, explicit round-to-nearest intrinsics where nvcc would otherwise
 * fuse a multiply-add that the CPU keeps apart. bf16 values are handled as
 * their bit patterns (uint16_t, the upper half of an fp32), which is what
 * cuBLAS's CUDA_R_16BF reads. Grid-stride loops: correct for any size. */
#include <math.h>
#include <stdio.h>

#include "cuda_forward_internal.cuh"
#include "cuda_ops_internal.cuh"

extern "C" {
#include "kvz_cuda_ops.h"
}

enum { CF_THREADS = 256 };

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
    embed_kernel<<<kvz_cuda_blocks_for(n * D, CF_THREADS), CF_THREADS, 0, 0>>>(
        ids, bf16 ? NULL : (const float *)f->embed, bf16 ? (const uint16_t *)f->embed : NULL, h,
        n, D);
    return cf_check_launch(f, "embedding kernel launch", err);
}

/* ---------- RMSNorm ---------- */

/* The per-layer ops of kernels/kvz_cuda_ops.h (tested one by one against
 * the CPU ops in test_gpu_ops) with this forward's name in their messages. */
static int cf_named(const kvz_cuda_forward *f, int rc, kvz_error *err)
{
    if (rc != KVZ_OK && err) {
        char msg[KVZ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        kvz_fail(err, rc, "%s: cuda forward: %s", f->source, msg);
    }
    return rc;
}

int cf_rmsnorm(kvz_cuda_forward *f, const float *x, const float *w, float *y, size_t n_rows,
               size_t dim, kvz_error *err)
{
    return cf_named(f, kvz_cuda_rmsnorm(x, w, y, n_rows, dim, (float)f->cfg.rms_norm_eps, err),
                    err);
}

/* ---------- RoPE ---------- */

int cf_rope(kvz_cuda_forward *f, float *x, size_t n, size_t n_heads, size_t pos0, kvz_error *err)
{
    return cf_named(f, kvz_cuda_rope_apply(x, n, n_heads, f->cfg.head_dim, pos0, f->inv_freq, err),
                    err);
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
    split_qkv_kernel<<<kvz_cuda_blocks_for(n * (Q + 2 * KV), CF_THREADS), CF_THREADS, 0, 0>>>(
        qkv, q, k_dst, v_dst, n, Q, KV);
    return cf_check_launch(f, "q/k/v split kernel launch", err);
}

/* ---------- SwiGLU ---------- */

int cf_swiglu(kvz_cuda_forward *f, const float *gate_up, float *out, size_t n, kvz_error *err)
{
    return cf_named(f, kvz_cuda_swiglu(gate_up, out, n, f->cfg.d_ff, err), err);
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
    add_bias_kernel<<<kvz_cuda_blocks_for(n_rows * width, CF_THREADS), CF_THREADS, 0, 0>>>(y, bias, n_rows,
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
    residual_kernel<<<kvz_cuda_blocks_for(n_rows * width, CF_THREADS), CF_THREADS, 0, 0>>>(h, d, bias,
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
    to_bf16_kernel<<<kvz_cuda_blocks_for(n, CF_THREADS), CF_THREADS, 0, 0>>>(src, dst, n);
    return cf_check_launch(f, "fp32->bf16 kernel launch", err);
}

int cf_from_bf16(kvz_cuda_forward *f, const uint16_t *src, float *dst, size_t n, kvz_error *err)
{
    from_bf16_kernel<<<kvz_cuda_blocks_for(n, CF_THREADS), CF_THREADS, 0, 0>>>(src, dst, n);
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
    fill_kernel<<<kvz_cuda_blocks_for(n, CF_THREADS), CF_THREADS, 0, 0>>>(
        bf16 ? NULL : (float *)dst, bf16 ? (uint16_t *)dst : NULL, n, key, bound, value);
    return cf_check_launch(f, "random fill kernel launch", err);
}
