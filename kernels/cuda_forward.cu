/* cuda_forward: kvz_cuda_forward.h except the pass itself (cuda_forward_run.cu):
 * status checks and the device-allocation registry, creation (device and
 * cuBLAS setup, config checks, the RoPE table), weight loading from a
 * checkpoint through one host staging buffer (q/k/v and gate/up fused like
 * the CPU pass; matrices fp32 or rounded to bf16 on the host), random weights
 * generated on the device, the getters and freeing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_forward_internal.cuh"

extern "C" {
#include "kvz_cuda.h"
#include "kvz_cuda_attention.h"
#include "../ops/ops.h"
}

/* ---------- status ---------- */

int cf_check(const kvz_cuda_forward *f, cudaError_t rc, const char *what, kvz_error *err)
{
    if (rc == cudaSuccess)
        return KVZ_OK;
    (void)cudaGetLastError(); /* consumed: never re-reported by a later launch check */
    return kvz_fail(err, KVZ_EIO, "%s: cuda forward: %s: %s (%s)", f->source, what,
                    cudaGetErrorName(rc), cudaGetErrorString(rc));
}

int cf_check_blas(const kvz_cuda_forward *f, cublasStatus_t rc, const char *what, kvz_error *err)
{
    if (rc == CUBLAS_STATUS_SUCCESS)
        return KVZ_OK;
    int code = rc == CUBLAS_STATUS_ALLOC_FAILED ? KVZ_ENOMEM : KVZ_EIO;
    return kvz_fail(err, code, "%s: cuda forward: %s: cuBLAS %s (status %d)", f->source, what,
                    cublasGetStatusString(rc), (int)rc);
}

int cf_check_launch(const kvz_cuda_forward *f, const char *what, kvz_error *err)
{
    return cf_check(f, cudaGetLastError(), what, err);
}

size_t cf_elem_bytes(const kvz_cuda_forward *f)
{
    return f->precision == KVZ_CUDA_BF16 ? 2 : 4;
}

/* ---------- allocations ---------- */

void cf_sample_memory(kvz_cuda_forward *f)
{
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    if (total_b - free_b > f->peak_used)
        f->peak_used = total_b - free_b;
}

static int registry_add(kvz_cuda_forward *f, void *ptr, size_t bytes)
{
    if (f->n_allocs == f->cap_allocs) {
        size_t cap = f->cap_allocs ? 2 * f->cap_allocs : 64;
        cf_alloc *a = (cf_alloc *)realloc(f->allocs, cap * sizeof *a);
        if (!a)
            return KVZ_ENOMEM;
        f->allocs = a;
        f->cap_allocs = cap;
    }
    f->allocs[f->n_allocs].ptr = ptr;
    f->allocs[f->n_allocs].bytes = bytes;
    f->n_allocs++;
    f->bytes_held += bytes;
    return KVZ_OK;
}

int cf_malloc(kvz_cuda_forward *f, void **out, size_t bytes, const char *what, kvz_error *err)
{
    *out = NULL;
    cudaError_t rc = cudaMalloc(out, bytes ? bytes : 1);
    if (rc == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        *out = NULL;
        return kvz_fail(err, KVZ_ENOMEM,
                        "%s: cuda forward: cannot allocate %zu bytes for %s on device %d "
                        "(%zu bytes free of %zu)", f->source, bytes, what, f->device, free_b,
                        total_b);
    }
    char call[160];
    snprintf(call, sizeof call, "cudaMalloc(%zu bytes for %s)", bytes, what);
    if (cf_check(f, rc, call, err)) {
        *out = NULL;
        return KVZ_EIO;
    }
    if (registry_add(f, *out, bytes)) {
        cudaFree(*out);
        *out = NULL;
        return kvz_fail(err, KVZ_ENOMEM, "%s: cuda forward: out of host memory", f->source);
    }
    return KVZ_OK;
}

void cf_free(kvz_cuda_forward *f, void *ptr)
{
    if (!ptr)
        return;
    for (size_t i = 0; i < f->n_allocs; i++) {
        if (f->allocs[i].ptr != ptr)
            continue;
        (void)cudaFree(ptr);
        f->bytes_held -= f->allocs[i].bytes;
        f->allocs[i] = f->allocs[--f->n_allocs];
        return;
    }
}

/* ---------- host bf16 ---------- */

uint16_t cf_bf16_from_f32(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
        return (uint16_t)((bits >> 16) | 0x0040u);
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

/* ---------- device weights layout ---------- */

static int alloc_f32(kvz_cuda_forward *f, float **dst, size_t numel, const char *what,
                     kvz_error *err)
{
    return cf_malloc(f, (void **)dst, numel * sizeof(float), what, err);
}

static int alloc_matrix(kvz_cuda_forward *f, void **dst, size_t numel, const char *what,
                        kvz_error *err)
{
    return cf_malloc(f, dst, numel * cf_elem_bytes(f), what, err);
}

static int alloc_layer(kvz_cuda_forward *f, cf_layer *w, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t D = c->d_model, dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh;
    size_t F = c->d_ff;
    int rc = alloc_f32(f, &w->in_norm, D, "input_layernorm", err);
    rc = rc ? rc : alloc_f32(f, &w->post_norm, D, "post_attention_layernorm", err);
    rc = rc ? rc : alloc_matrix(f, &w->w_qkv, (Q + 2 * KV) * D, "q/k/v_proj", err);
    if (c->qkv_bias)
        rc = rc ? rc : alloc_f32(f, &w->b_qkv, Q + 2 * KV, "q/k/v biases", err);
    if (c->qk_norm) {
        rc = rc ? rc : alloc_f32(f, &w->q_norm, dh, "q_norm", err);
        rc = rc ? rc : alloc_f32(f, &w->k_norm, dh, "k_norm", err);
    }
    rc = rc ? rc : alloc_matrix(f, &w->w_o, D * Q, "o_proj", err);
    if (c->o_bias)
        rc = rc ? rc : alloc_f32(f, &w->b_o, D, "o_proj bias", err);
    rc = rc ? rc : alloc_matrix(f, &w->w_gate_up, 2 * F * D, "gate/up_proj", err);
    rc = rc ? rc : alloc_matrix(f, &w->w_down, D * F, "down_proj", err);
    if (c->mlp_bias) {
        rc = rc ? rc : alloc_f32(f, &w->b_gate_up, 2 * F, "gate/up biases", err);
        rc = rc ? rc : alloc_f32(f, &w->b_down, D, "down_proj bias", err);
    }
    return rc;
}

static int alloc_weights(kvz_cuda_forward *f, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t VD = c->vocab_size * c->d_model;
    int rc = alloc_matrix(f, &f->embed, VD, "embed_tokens", err);
    rc = rc ? rc : alloc_f32(f, &f->final_norm, c->d_model, "model.norm", err);
    if (c->tie_word_embeddings)
        f->lm_head = f->embed;
    else
        rc = rc ? rc : alloc_matrix(f, &f->lm_head, VD, "lm_head", err);
    for (size_t l = 0; !rc && l < c->n_layers; l++)
        rc = alloc_layer(f, &f->layers[l], err);
    return rc;
}

/* ---------- loading from a checkpoint ---------- */

typedef struct cf_loader {
    kvz_cuda_forward *f;
    const kvz_checkpoint *ck;
    float *staging;      /* host, the largest tensor */
    uint16_t *staging16; /* host, bf16 of the same (bf16 mode) */
    kvz_error *err;
} cf_loader;

/* Reads tensor name (numel elements) and uploads it at element offset `at`
 * of dst: as fp32, or (matrix in bf16 mode) rounded to bf16. */
static int load_tensor(cf_loader *ld, const char *name, size_t numel, void *dst, size_t at,
                       int matrix)
{
    kvz_cuda_forward *f = ld->f;
    int rc = kvz_checkpoint_read_f32(ld->ck, name, ld->staging, numel, ld->err);
    if (rc)
        return rc;
    const void *src = ld->staging;
    size_t elem = sizeof(float);
    if (matrix && f->precision == KVZ_CUDA_BF16) {
        for (size_t i = 0; i < numel; i++)
            ld->staging16[i] = cf_bf16_from_f32(ld->staging[i]);
        src = ld->staging16;
        elem = 2;
    }
    char what[224];
    snprintf(what, sizeof what, "cudaMemcpy(upload %s)", name);
    return cf_check(f, cudaMemcpy((char *)dst + at * elem, src, numel * elem,
                                  cudaMemcpyHostToDevice), what, ld->err);
}

static int load_layer_tensor(cf_loader *ld, size_t l, const char *suffix, size_t numel,
                             void *dst, size_t at, int matrix)
{
    char name[160];
    snprintf(name, sizeof name, "model.layers.%zu.%s", l, suffix);
    return load_tensor(ld, name, numel, dst, at, matrix);
}

static int load_layer(cf_loader *ld, size_t l, const cf_layer *w)
{
    const kvz_model_config *c = &ld->f->cfg;
    size_t D = c->d_model, dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh;
    size_t F = c->d_ff;
    int rc = load_layer_tensor(ld, l, "input_layernorm.weight", D, w->in_norm, 0, 0);
    rc = rc ? rc : load_layer_tensor(ld, l, "post_attention_layernorm.weight", D, w->post_norm, 0, 0);
    rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.q_proj.weight", Q * D, w->w_qkv, 0, 1);
    rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.k_proj.weight", KV * D, w->w_qkv, Q * D, 1);
    rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.v_proj.weight", KV * D, w->w_qkv,
                                     (Q + KV) * D, 1);
    if (c->qkv_bias) {
        rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.q_proj.bias", Q, w->b_qkv, 0, 0);
        rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.k_proj.bias", KV, w->b_qkv, Q, 0);
        rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.v_proj.bias", KV, w->b_qkv, Q + KV, 0);
    }
    if (c->qk_norm) {
        rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.q_norm.weight", dh, w->q_norm, 0, 0);
        rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.k_norm.weight", dh, w->k_norm, 0, 0);
    }
    rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.o_proj.weight", D * Q, w->w_o, 0, 1);
    if (c->o_bias)
        rc = rc ? rc : load_layer_tensor(ld, l, "self_attn.o_proj.bias", D, w->b_o, 0, 0);
    rc = rc ? rc : load_layer_tensor(ld, l, "mlp.gate_proj.weight", F * D, w->w_gate_up, 0, 1);
    rc = rc ? rc : load_layer_tensor(ld, l, "mlp.up_proj.weight", F * D, w->w_gate_up, F * D, 1);
    rc = rc ? rc : load_layer_tensor(ld, l, "mlp.down_proj.weight", D * F, w->w_down, 0, 1);
    if (c->mlp_bias) {
        rc = rc ? rc : load_layer_tensor(ld, l, "mlp.gate_proj.bias", F, w->b_gate_up, 0, 0);
        rc = rc ? rc : load_layer_tensor(ld, l, "mlp.up_proj.bias", F, w->b_gate_up, F, 0);
        rc = rc ? rc : load_layer_tensor(ld, l, "mlp.down_proj.bias", D, w->b_down, 0, 0);
    }
    return rc;
}

/* Elements of the largest tensor the config implies. */
static size_t largest_tensor(const kvz_model_config *c)
{
    size_t D = c->d_model, Q = c->n_heads * c->head_dim;
    size_t sizes[3] = {c->vocab_size * D, c->d_ff * D, Q * D};
    size_t best = 0;
    for (int i = 0; i < 3; i++)
        if (sizes[i] > best)
            best = sizes[i];
    return best;
}

static int load_weights(kvz_cuda_forward *f, const kvz_checkpoint *ck, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t n = largest_tensor(c);
    cf_loader ld = {f, ck, (float *)malloc(n * sizeof(float)), NULL, err};
    if (f->precision == KVZ_CUDA_BF16)
        ld.staging16 = (uint16_t *)malloc(n * sizeof(uint16_t));
    int rc = KVZ_OK;
    if (!ld.staging || (f->precision == KVZ_CUDA_BF16 && !ld.staging16))
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: cuda forward: cannot allocate %zu MiB of host staging",
                      f->source, n * sizeof(float) >> 20);
    size_t VD = c->vocab_size * c->d_model;
    rc = rc ? rc : load_tensor(&ld, "model.embed_tokens.weight", VD, f->embed, 0, 1);
    rc = rc ? rc : load_tensor(&ld, "model.norm.weight", c->d_model, f->final_norm, 0, 0);
    if (!c->tie_word_embeddings)
        rc = rc ? rc : load_tensor(&ld, "lm_head.weight", VD, f->lm_head, 0, 1);
    for (size_t l = 0; !rc && l < c->n_layers; l++)
        rc = load_layer(&ld, l, &f->layers[l]);
    free(ld.staging);
    free(ld.staging16);
    return rc;
}

/* ---------- random weights ---------- */

typedef struct cf_filler {
    kvz_cuda_forward *f;
    uint64_t seed, tensor;
    kvz_error *err;
} cf_filler;

static int fill_uniform(cf_filler *fl, void *dst, size_t numel, int matrix, float bound)
{
    int bf16 = matrix && fl->f->precision == KVZ_CUDA_BF16;
    return cf_fill(fl->f, dst, numel, bf16, fl->seed, fl->tensor++, bound, 0.0f, fl->err);
}

static int fill_ones(cf_filler *fl, float *dst, size_t numel)
{
    return cf_fill(fl->f, dst, numel, 0, fl->seed, fl->tensor++, 0.0f, 1.0f, fl->err);
}

static int fill_layer(cf_filler *fl, const cf_layer *w)
{
    const kvz_model_config *c = &fl->f->cfg;
    size_t D = c->d_model, dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh;
    size_t F = c->d_ff;
    float bd = 1.0f / sqrtf((float)D), bq = 1.0f / sqrtf((float)Q), bf = 1.0f / sqrtf((float)F);
    int rc = fill_ones(fl, w->in_norm, D);
    rc = rc ? rc : fill_ones(fl, w->post_norm, D);
    rc = rc ? rc : fill_uniform(fl, w->w_qkv, (Q + 2 * KV) * D, 1, bd);
    if (w->b_qkv)
        rc = rc ? rc : fill_uniform(fl, w->b_qkv, Q + 2 * KV, 0, bd);
    if (w->q_norm) {
        rc = rc ? rc : fill_ones(fl, w->q_norm, dh);
        rc = rc ? rc : fill_ones(fl, w->k_norm, dh);
    }
    rc = rc ? rc : fill_uniform(fl, w->w_o, D * Q, 1, bq);
    if (w->b_o)
        rc = rc ? rc : fill_uniform(fl, w->b_o, D, 0, bq);
    rc = rc ? rc : fill_uniform(fl, w->w_gate_up, 2 * F * D, 1, bd);
    rc = rc ? rc : fill_uniform(fl, w->w_down, D * F, 1, bf);
    if (w->b_gate_up) {
        rc = rc ? rc : fill_uniform(fl, w->b_gate_up, 2 * F, 0, bd);
        rc = rc ? rc : fill_uniform(fl, w->b_down, D, 0, bf);
    }
    return rc;
}

static int fill_weights(kvz_cuda_forward *f, uint64_t seed, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    cf_filler fl = {f, seed, 0, err};
    size_t VD = c->vocab_size * c->d_model;
    int rc = fill_uniform(&fl, f->embed, VD, 1, 1.0f);
    rc = rc ? rc : fill_ones(&fl, f->final_norm, c->d_model);
    if (!c->tie_word_embeddings)
        rc = rc ? rc : fill_uniform(&fl, f->lm_head, VD, 1, 1.0f / sqrtf((float)c->d_model));
    for (size_t l = 0; !rc && l < c->n_layers; l++)
        rc = fill_layer(&fl, &f->layers[l]);
    return rc ? rc : cf_check(f, cudaDeviceSynchronize(), "cudaDeviceSynchronize (random fill)",
                              err);
}

/* ---------- create / free ---------- */

static int check_config(const kvz_cuda_forward *f, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    if (c->head_dim == 0 || c->head_dim % 2 || c->head_dim > KVZ_CUDA_ATTN_MAX_HEAD_DIM)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: head_dim %zu is not supported by the GPU pass (even, <= %d)",
                        f->source, c->head_dim, (int)KVZ_CUDA_ATTN_MAX_HEAD_DIM);
    if (c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads)
        return kvz_fail(err, KVZ_EFORMAT, "%s: %zu attention heads are not a multiple of %zu KV heads",
                        f->source, c->n_heads, c->n_kv_heads);
    if (c->n_layers == 0 || c->d_model == 0 || c->d_ff == 0 || c->vocab_size == 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: empty model shape", f->source);
    return KVZ_OK;
}

static int setup_device(kvz_cuda_forward *f, kvz_error *err)
{
    int count = kvz_cuda_device_count(NULL);
    if (count == 0)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: cuda forward: no usable CUDA device",
                        f->source);
    if (f->device < 0 || f->device >= count)
        return kvz_fail(err, KVZ_EINVAL, "%s: cuda forward: device %d does not exist (%d devices)",
                        f->source, f->device, count);
    int rc = cf_check(f, cudaSetDevice(f->device), "cudaSetDevice", err);
    rc = rc ? rc : cf_check_blas(f, cublasCreate(&f->blas), "cublasCreate", err);
    cublasMath_t math = f->precision == KVZ_CUDA_FP32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH;
    rc = rc ? rc : cf_check_blas(f, cublasSetMathMode(f->blas, math), "cublasSetMathMode", err);
    rc = rc ? rc : cf_check_blas(f, cublasSetStream(f->blas, 0), "cublasSetStream(legacy)", err);
    return rc;
}

static int upload_inv_freq(kvz_cuda_forward *f, kvz_error *err)
{
    size_t half = f->cfg.head_dim / 2;
    float *host = (float *)malloc(half * sizeof *host);
    if (!host)
        return kvz_fail(err, KVZ_ENOMEM, "%s: cuda forward: out of host memory", f->source);
    kvz_rope_inv_freq(&f->cfg, host);
    int rc = alloc_f32(f, &f->inv_freq, half, "RoPE inv_freq", err);
    rc = rc ? rc : cf_check(f, cudaMemcpy(f->inv_freq, host, half * sizeof *host,
                                          cudaMemcpyHostToDevice), "cudaMemcpy(inv_freq)", err);
    free(host);
    return rc;
}

/* Everything but the weights' values: struct, checks, device, buffers. */
static int begin(const kvz_model_config *cfg, const char *source,
                 const kvz_cuda_forward_options *opt, kvz_cuda_forward **out, kvz_error *err)
{
    kvz_cuda_forward_options o = opt ? *opt : kvz_cuda_forward_options{0, KVZ_CUDA_FP32, 0};
    kvz_cuda_forward *f = (kvz_cuda_forward *)calloc(1, sizeof *f);
    *out = f;
    if (!f)
        return kvz_fail(err, KVZ_ENOMEM, "cuda forward: out of memory");
    f->cfg = *cfg;
    snprintf(f->source, sizeof f->source, "%s", source);
    f->device = o.device;
    f->precision = o.precision;
    f->max_tokens = o.max_tokens ? o.max_tokens : cfg->max_position_embeddings;
    if (o.precision != KVZ_CUDA_FP32 && o.precision != KVZ_CUDA_BF16)
        return kvz_fail(err, KVZ_EINVAL, "%s: cuda forward: unknown precision %d", source,
                        (int)o.precision);
    int rc = check_config(f, err);
    rc = rc ? rc : setup_device(f, err);
    if (rc)
        return rc;
    f->layers = (cf_layer *)calloc(cfg->n_layers, sizeof *f->layers);
    f->k_cache = (float **)calloc(cfg->n_layers, sizeof *f->k_cache);
    f->v_cache = (float **)calloc(cfg->n_layers, sizeof *f->v_cache);
    if (!f->layers || !f->k_cache || !f->v_cache)
        return kvz_fail(err, KVZ_ENOMEM, "%s: cuda forward: out of host memory", source);
    cf_sample_memory(f);
    rc = upload_inv_freq(f, err);
    return rc ? rc : alloc_weights(f, err);
}

static int finish(kvz_cuda_forward *f, int rc, kvz_cuda_forward **out)
{
    if (rc) {
        kvz_cuda_forward_free(f);
        *out = NULL;
        return rc;
    }
    cf_sample_memory(f);
    *out = f;
    return KVZ_OK;
}

extern "C" int kvz_cuda_forward_create(const kvz_checkpoint *ck,
                                       const kvz_cuda_forward_options *opt,
                                       kvz_cuda_forward **out, kvz_error *err)
{
    if (!out)
        return kvz_fail(err, KVZ_EINVAL, "cuda forward: NULL output handle");
    *out = NULL;
    if (!ck)
        return kvz_fail(err, KVZ_EINVAL, "cuda forward: NULL checkpoint");
    kvz_cuda_forward *f = NULL;
    int rc = begin(kvz_checkpoint_config(ck), kvz_checkpoint_path(ck), opt, &f, err);
    rc = rc ? rc : load_weights(f, ck, err);
    return finish(f, rc, out);
}

extern "C" int kvz_cuda_forward_create_random(const kvz_model_config *cfg, uint64_t seed,
                                              const kvz_cuda_forward_options *opt,
                                              kvz_cuda_forward **out, kvz_error *err)
{
    if (!out)
        return kvz_fail(err, KVZ_EINVAL, "cuda forward: NULL output handle");
    *out = NULL;
    if (!cfg)
        return kvz_fail(err, KVZ_EINVAL, "cuda forward: NULL model config");
    char source[96];
    snprintf(source, sizeof source, "random %s model (seed %llu)", kvz_arch_name(cfg->arch),
             (unsigned long long)seed);
    kvz_cuda_forward *f = NULL;
    int rc = begin(cfg, source, opt, &f, err);
    rc = rc ? rc : fill_weights(f, seed, err);
    return finish(f, rc, out);
}

extern "C" void kvz_cuda_forward_free(kvz_cuda_forward *f)
{
    if (!f)
        return;
    if (f->blas || f->n_allocs)
        (void)cudaSetDevice(f->device);
    for (size_t i = 0; i < f->n_allocs; i++)
        (void)cudaFree(f->allocs[i].ptr);
    if (f->blas)
        cublasDestroy(f->blas);
    free(f->allocs);
    free(f->layers);
    free(f->k_cache);
    free(f->v_cache);
    free(f);
}

/* ---------- getters ---------- */

extern "C" const kvz_model_config *kvz_cuda_forward_config(const kvz_cuda_forward *f)
{
    return f ? &f->cfg : NULL;
}

extern "C" void kvz_cuda_forward_reset(kvz_cuda_forward *f)
{
    if (f)
        f->n_cached = 0;
}

extern "C" void kvz_cuda_forward_truncate(kvz_cuda_forward *f, size_t n_tokens)
{
    if (f && n_tokens < f->n_cached)
        f->n_cached = n_tokens;
}

extern "C" size_t kvz_cuda_forward_n_cached(const kvz_cuda_forward *f)
{
    return f ? f->n_cached : 0;
}

extern "C" void *kvz_cuda_forward_stream(const kvz_cuda_forward *f)
{
    (void)f;
    return NULL; /* the legacy default stream: see docs/gpu-forward.md */
}

extern "C" size_t kvz_cuda_forward_device_bytes(const kvz_cuda_forward *f)
{
    return f ? f->bytes_held : 0;
}

extern "C" size_t kvz_cuda_forward_peak_device_bytes(const kvz_cuda_forward *f)
{
    return f ? f->peak_used : 0;
}
