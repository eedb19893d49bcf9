/* cuda_forward_internal: what kernels/cuda_forward.cu (load, lifetime),
 * kernels/cuda_forward_run.cu (the pass) and kernels/cuda_forward_kernels.cu
 * (the pass's elementwise kernels) share: the kvz_cuda_forward struct, its
 * device-allocation registry and status checks, and the kernel launchers.
 * CUDA builds only; never include from C. */
#ifndef KVZ_CUDA_FORWARD_INTERNAL_CUH
#define KVZ_CUDA_FORWARD_INTERNAL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "kvz_cuda_forward.h"
}

/* One layer's device weights. Matrices are fp32 or bf16 (f->precision);
 * norms, biases and q/k norms are always fp32; absent ones are NULL. */
typedef struct cf_layer {
    float *in_norm, *post_norm;
    void *w_qkv;  /* [(H+2Hkv)*dh, D] q rows, then k, then v */
    float *b_qkv; /* [(H+2Hkv)*dh] or NULL */
    float *q_norm, *k_norm; /* [dh] (Qwen3) or NULL */
    void *w_o;    /* [D, H*dh] */
    float *b_o;
    void *w_gate_up; /* [2*d_ff, D] gate rows first */
    float *b_gate_up;
    void *w_down; /* [D, d_ff] */
    float *b_down;
} cf_layer;

typedef struct cf_alloc {
    void *ptr;
    size_t bytes;
} cf_alloc;

/* Device scratch for n tokens (views into one allocation). */
typedef struct cf_scratch {
    float *h, *x, *qkv, *q, *attn, *proj, *gate_up, *act, *lse;
    uint16_t *x_bf16; /* bf16 copy of a GEMM input (bf16 mode) */
    int32_t *ids;
} cf_scratch;

struct kvz_cuda_forward {
    kvz_model_config cfg;
    kvz_cuda_precision precision;
    int device;
    cublasHandle_t blas;
    cf_alloc *allocs; /* every live device allocation of this forward */
    size_t n_allocs, cap_allocs, bytes_held, peak_used;
    void *embed, *lm_head; /* [vocab, D]; lm_head == embed when tied */
    float *final_norm, *inv_freq;
    cf_layer *layers;
    float **k_cache, **v_cache; /* per layer [cap, Hkv, dh] */
    size_t cap, n_cached, max_tokens;
    void *scratch_mem;
    size_t scratch_tokens;
    cf_scratch s;
    float *w_o_f32;     /* bf16 mode: the tap's fp32 copy of one W_o */
    float *logits_dev;  /* [logit_rows, vocab] */
    size_t logit_rows;
    char source[256];
};

/* ---------- status and allocations (cuda_forward.cu) ---------- */
/* KVZ_OK, or "<source>: cuda forward: <what>: <error name> (<message>)", KVZ_EIO. */
int cf_check(const kvz_cuda_forward *f, cudaError_t rc, const char *what, kvz_error *err);
int cf_check_blas(const kvz_cuda_forward *f, cublasStatus_t rc, const char *what, kvz_error *err);
/* cudaGetLastError after a launch. */
int cf_check_launch(const kvz_cuda_forward *f, const char *what, kvz_error *err);
/* Registered cudaMalloc; KVZ_ENOMEM names the bytes asked and free. */
int cf_malloc(kvz_cuda_forward *f, void **out, size_t bytes, const char *what, kvz_error *err);
void cf_free(kvz_cuda_forward *f, void *ptr);
/* Samples cudaMemGetInfo into f->peak_used. */
void cf_sample_memory(kvz_cuda_forward *f);
/* Bytes per matrix element (4 fp32, 2 bf16). */
size_t cf_elem_bytes(const kvz_cuda_forward *f);

/* ---------- kernels (cuda_forward_kernels.cu); all on the legacy default
 * stream, only enqueue; each returns the launch status. ---------- */
int cf_embed(kvz_cuda_forward *f, const int32_t *ids, float *h, size_t n, kvz_error *err);
/* y = w * (x / sqrt(mean(x^2) + eps)) per row; y may equal x. */
int cf_rmsnorm(kvz_cuda_forward *f, const float *x, const float *w, float *y, size_t n_rows,
               size_t dim, kvz_error *err);
/* x in place, rotate-half RoPE; token t at position pos0 + t. */
int cf_rope(kvz_cuda_forward *f, float *x, size_t n, size_t n_heads, size_t pos0,
            kvz_error *err);
/* qkv [n, Q+2KV] -> q [n, Q], k_dst/v_dst [n, KV]. */
int cf_split_qkv(kvz_cuda_forward *f, const float *qkv, float *q, float *k_dst, float *v_dst,
                 size_t n, kvz_error *err);
int cf_swiglu(kvz_cuda_forward *f, const float *gate_up, float *out, size_t n, kvz_error *err);
/* y[r][c] += bias[c]. */
int cf_add_bias(kvz_cuda_forward *f, float *y, const float *bias, size_t n_rows, size_t width,
                kvz_error *err);
/* h[r][c] = h[r][c] + (d[r][c] (+ bias[c])). */
int cf_residual_add(kvz_cuda_forward *f, float *h, const float *d, const float *bias_or_NULL,
                    size_t n_rows, size_t width, kvz_error *err);
/* Round-to-nearest-even fp32 -> bf16 and back, n elements. */
int cf_to_bf16(kvz_cuda_forward *f, const float *src, uint16_t *dst, size_t n, kvz_error *err);
int cf_from_bf16(kvz_cuda_forward *f, const uint16_t *src, float *dst, size_t n, kvz_error *err);
/* Random fill: uniform in [-bound, bound) from splitmix64(seed, tensor, i);
 * bound 0 with value: the constant value. bf16: dst holds bf16. */
int cf_fill(kvz_cuda_forward *f, void *dst, size_t n, int bf16, uint64_t seed, uint64_t tensor,
            float bound, float value, kvz_error *err);

/* ---------- host bf16 rounding (cuda_forward.cu) ---------- */
uint16_t cf_bf16_from_f32(float x);

#endif
