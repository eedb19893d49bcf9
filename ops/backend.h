/* backend: the one op interface of kvzap (the ggml way: one API, several
 * backends). A backend is a table of operations on memory it owns; the
 * forward pass (model/forward_run.c) and every algorithm above it are written
 * once against this table. Two backends exist:
 *   cpu   ops/backend_cpu.c      host memory, the ops of ops/ops.h (OpenBLAS
 *                                sgemm, the ops' thread pool); the readable
 *                                reference and the default
 *   cuda  kernels/backend_cuda.cu device memory, the kernels of kernels/ and
 *                                cuBLAS; registered only in CUDA builds
 *                                (KVZ_HAVE_CUDA), so a build without CUDA
 *                                answers "cuda" with one clear message
 *
 * Memory. Every pointer an op takes is backend memory (from kvz_backend_alloc)
 * unless its comment says host. Buffers carry a dtype (kvz_buf); activations
 * are fp32 (`float *` into a kvz_buf of KVZ_F32); weight matrices and
 * embedding tables are fp32 or bf16 (the `kvz_buf` arguments). On the cpu
 * backend memory is host memory (host_memory = 1): callers may read and
 * write it directly, and upload/download are memcpy.
 *
 * Ordering. Ops are queued in call order on the backend's one stream and only
 * enqueue (cuda): a fault inside one shows up at the next download, sync or
 * op status. download and sync wait for everything queued before them. On
 * the cpu backend every op has finished when it returns. A cuda backend's
 * ops run on the calling thread's current device, which open sets: use it
 * from the opening thread (or set the device on the other thread first).
 *
 * Errors follow common/kvz_error.h: KVZ_OK, or a code and one line naming
 * the op and the problem ("cuda: cannot allocate 12582912 bytes for the K cache
 * on device 0 (3145728 bytes free of 85899345920)"); callers add the model.
 *
 * Environment (read once, when a cuda backend opens): KVZ_ATTENTION=fp32
 * keeps compute KVZ_BF16 attention off the tensor cores, KVZ_SCORE=fp32 the
 * score's last phase (safety valves; results then match fp32 compute).
 *
 * Numerics: each op states its contract; the cpu backend follows
 * transformers' fp32 eager path. Backends agree within the per-op budgets
 * of tests/test_backend_ops.c (NMSE per op and dtype), not bit for bit. */
#ifndef KVZ_BACKEND_H
#define KVZ_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "ops.h"

/* ---------- dtypes and buffers ---------- */

typedef enum kvz_dtype {
    KVZ_F32 = 0,  /* IEEE binary32 */
    KVZ_BF16 = 1, /* bfloat16 bit patterns (the upper half of an fp32) */
    KVZ_F16 = 2,  /* IEEE binary16 */
    KVZ_F64 = 3,  /* IEEE binary64: reductions, log-domain scores, statistics */
    KVZ_I32 = 4,  /* int32_t: indices */
    KVZ_I64 = 5   /* int64_t: indices */
} kvz_dtype;

size_t kvz_dtype_size(kvz_dtype t);
/* "float32", "bfloat16", "float16", "float64", "int32", "int64" */
const char *kvz_dtype_name(kvz_dtype t);

/* A buffer of backend memory: numel elements of dtype at data. A view into a
 * larger buffer is a kvz_buf too (kvz_buf_at); only what kvz_backend_alloc
 * returned may be freed. */
typedef struct kvz_buf {
    void *data;
    kvz_dtype dtype;
    size_t numel;
} kvz_buf;

/* The view of b from element `first` on (numel - first elements). */
kvz_buf kvz_buf_at(kvz_buf b, size_t first);
/* b's data as fp32 (NULL unless b is KVZ_F32). */
float *kvz_buf_f32(kvz_buf b);

/* ---------- opening a backend ---------- */

typedef enum kvz_backend_kind { KVZ_BACKEND_CPU = 0, KVZ_BACKEND_CUDA = 1 } kvz_backend_kind;

typedef struct kvz_backend_options {
    kvz_backend_kind kind;
    int device;    /* cuda: device index (0: the first) */
    int n_threads; /* cpu: ops and OpenBLAS threads, process-wide; 0: all cores */
} kvz_backend_options;

typedef struct kvz_backend kvz_backend;

/* Opens a backend. Errors: KVZ_EUNSUPPORTED ("cuda: this kvzap was built
 * without CUDA; use --device cpu", "cuda: no CUDA device is available: ..."),
 * KVZ_ENOMEM, KVZ_EIO (a driver or cuBLAS failure, named). */
int kvz_backend_open(const kvz_backend_options *opt, kvz_backend **out, kvz_error *err);
void kvz_backend_close(kvz_backend *be);
/* The process-wide cpu backend of plain host memory, for host arrays that
 * no backend owns (taps with backend NULL, hand-made test data): always
 * there, never closed, and getting it changes no thread setting. */
kvz_backend *kvz_backend_host(void);
/* 1 when this build registers kind (cpu: always; cuda: CUDA builds). */
int kvz_backend_compiled(kvz_backend_kind kind);

/* "cpu" or "cuda:0 NVIDIA H100 80GB HBM3" */
const char *kvz_backend_name(const kvz_backend *be);
kvz_backend_kind kvz_backend_kind_of(const kvz_backend *be);
/* 1 when backend memory is host memory (cpu). */
int kvz_backend_host_memory(const kvz_backend *be);
/* The native stream (cudaStream_t as void *; NULL: cuda's legacy default
 * stream, or the cpu backend). Work queued there by other code (a tap's) is
 * ordered with the ops. */
void *kvz_backend_stream(const kvz_backend *be);
/* Bytes held by this backend's live allocations now, and the peak of the
 * device's in-use memory (cuda: cudaMemGetInfo samples taken at every alloc
 * and sync; cpu: the peak of bytes held). */
size_t kvz_backend_bytes_held(const kvz_backend *be);
size_t kvz_backend_peak_bytes(const kvz_backend *be);

/* ---------- devices ---------- */

/* What a device is (kvzap devices). */
typedef struct kvz_device_info {
    char name[256];
    int major, minor;    /* cuda compute capability */
    size_t total_memory; /* bytes */
    int multiprocessors;
} kvz_device_info;

/* Usable devices of kind: cpu 1; cuda the driver's count, 0 when the build
 * has no CUDA or there is no driver or device (the reason goes to err when
 * given; never fails otherwise). */
int kvz_backend_device_count(kvz_backend_kind kind, kvz_error *err);
/* Device `device` of kind (cuda only; cpu: KVZ_EUNSUPPORTED). */
int kvz_backend_device_info(kvz_backend_kind kind, int device, kvz_device_info *out,
                            kvz_error *err);
/* 1 when the cuda backend runs on the CPU emulator of tests/cuda_emu (build
 * option KVZ_CUDA_EMU: a model of CUDA for CI; tests keep its work small). */
int kvz_backend_emulated(void);
/* What --device auto means everywhere: cuda when this build has it and a
 * real device is visible (the emulator is a test device: only an explicit
 * cuda uses it), else cpu. */
kvz_backend_kind kvz_backend_auto_kind(void);

/* ---------- memory ---------- */

/* Host memory for staging transfers: page-locked on cuda (asynchronous
 * copies), malloc on cpu; NULL when out of memory. Free with
 * kvz_backend_host_free on the same backend (NULL is fine). */
void *kvz_backend_host_alloc(kvz_backend *be, size_t bytes);
void kvz_backend_host_free(kvz_backend *be, void *p);

/* *out = numel elements of dtype (numel 0 allowed: a 1-element allocation);
 * `what` names the buffer in the error ("the K cache"). KVZ_ENOMEM says how
 * much was asked and how much is free. */
int kvz_backend_alloc(kvz_backend *be, kvz_dtype dtype, size_t numel, const char *what,
                      kvz_buf *out, kvz_error *err);
/* Frees what kvz_backend_alloc returned (data NULL is fine) and clears *b. */
void kvz_backend_free(kvz_backend *be, kvz_buf *b);
/* Host -> backend, backend -> host (waits for queued work), backend ->
 * backend; bytes at the given pointers. */
int kvz_backend_upload(kvz_backend *be, void *dst, const void *host_src, size_t bytes,
                       kvz_error *err);
int kvz_backend_download(kvz_backend *be, void *host_dst, const void *src, size_t bytes,
                         kvz_error *err);
int kvz_backend_copy(kvz_backend *be, void *dst, const void *src, size_t bytes, kvz_error *err);
/* Waits for all queued work; reports a fault any of it hit. */
int kvz_backend_sync(kvz_backend *be, kvz_error *err);

/* ---------- ops (fp32 activations, row-major) ---------- */

/* y[n, n_out] = x[n, n_in] W^T (+ bias[n_out]); W [n_out, n_in] (PyTorch's
 * layout) fp32 or bf16. bf16 weights: the cuda backend rounds x to bf16 and
 * accumulates in fp32 (tensor cores); the cpu backend widens W to fp32. fp32
 * weights: strict fp32 on both (cuda: no TF32). */
int kvz_op_linear(kvz_backend *be, const float *x, kvz_buf w, const float *bias_or_NULL,
                  float *y, size_t n, size_t n_in, size_t n_out, kvz_error *err);
/* kvz_rmsnorm: y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for n_rows rows of
 * dim; y may equal x. Per-head RMSNorm (Qwen3 q/k norm) is this op with
 * n_rows = tokens x heads and dim = head_dim. */
int kvz_op_rmsnorm(kvz_backend *be, const float *x, const float *w, float *y, size_t n_rows,
                   size_t dim, float eps, kvz_error *err);
/* kvz_rope_apply in place on x [n_tokens, n_heads, head_dim] (token t at
 * position pos0 + t); inv_freq [head_dim/2] in backend memory. */
int kvz_op_rope(kvz_backend *be, float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                size_t pos0, const float *inv_freq, kvz_error *err);
/* kvz_attention (causal GQA, per-row log-sum-exp into a->lse when non-NULL)
 * with every array in backend memory. compute KVZ_BF16 lets a backend round
 * Q, K, V and the softmax weights to bf16 for the two products (cuda: the
 * tensor-core kernel where the head_dim allows it); the cpu backend always
 * computes in fp32. a->block is a cpu tuning knob (0: 256). */
int kvz_op_attention(kvz_backend *be, const kvz_attn_args *a, kvz_dtype compute,
                     kvz_error *err);
/* kvz_ragged_attention (ops/ops.h: per-KV-head kept keys at their original
 * positions, causal by position) with every array, count and pos included,
 * in backend memory; fp32. */
int kvz_op_ragged_attention(kvz_backend *be, const kvz_ragged_attn_args *a, kvz_error *err);
/* kvz_swiglu: out [n, d_ff] = silu(gate) * up of gate_up [n, 2*d_ff]. */
int kvz_op_swiglu(kvz_backend *be, const float *gate_up, float *out, size_t n, size_t d_ff,
                  kvz_error *err);
/* h[i] += d[i] for i < count. */
int kvz_op_add(kvz_backend *be, float *h, const float *d, size_t count, kvz_error *err);
/* h [n, dim] = rows ids[t] (HOST array, each < table rows) of table [rows,
 * dim], fp32 or bf16 (widened). */
int kvz_op_embed(kvz_backend *be, kvz_buf table, size_t dim, const int32_t *ids, size_t n,
                 float *h, kvz_error *err);
/* dst[r * dst_stride + c] = src[r * src_stride + c] for r < n_rows, c < width
 * (floats; the two regions must not overlap): e.g. the q, k and v column
 * blocks out of a fused q/k/v row. */
int kvz_op_copy_rows(kvz_backend *be, float *dst, size_t dst_stride, const float *src,
                     size_t src_stride, size_t n_rows, size_t width, kvz_error *err);
/* dst = src converted element by element (dst.numel >= src.numel) between
 * fp32, bf16 and fp16: narrowing rounds to nearest even (NaN stays NaN; fp16
 * overflows to inf; bf16 <-> fp16 goes through fp32), widening is exact;
 * same dtype copies. */
int kvz_op_convert(kvz_backend *be, kvz_buf dst, kvz_buf src, kvz_error *err);
/* Random fill of b, reproducible on every backend: element i is uniform in
 * [-bound, bound) from splitmix64 of (seed, tensor, i) (kvz_fill_key below;
 * bound 0: the constant value), then stored in b's dtype (bf16: rounded). For models of a given shape without a
 * download (benchmarks). */
int kvz_op_fill(kvz_backend *be, kvz_buf b, uint64_t seed, uint64_t tensor, float bound,
                float value, kvz_error *err);

/* ---------- KVzip+ score ops (the oracle) ---------- */
/* The phases of the KVzip+ layer score (spec 1.2/1.3), which
 * kvz_kvzip_score_layer (kvzip_oracle/kvzip_score.h) runs in order:
 *   1 kvz_op_row_lognorms     ln ||x_j||           repeat queries j in R
 *   2 kvz_op_value_lognorms   ln ||W_O^g v_i^h||   context keys i in P
 *   3 kvz_op_causal_lse       lse_g(j) of query j's full causal row
 *   4 kvz_op_kvzip_best       y[i, h] = max over g in group(h), j in R of
 *                             scale q_j.k_i - lse_g(j) - ln||x_j|| + ln||W_O^g v_i||
 * Shapes of one layer's tap (a single pass from position 0): q [T, H, dh],
 * k and v [T, Hkv, dh], w_o [D, H dh] (row-major fp32), H % Hkv == 0, head
 * g reads KV head g / (H / Hkv). Everything after the q.k products is
 * float64 (`double *` arrays in KVZ_F64 backend buffers), in the log domain,
 * so tiny attention weights do not underflow; never a T x T matrix. */

/* out[r] = 0.5 ln(sum_c x[r * ld + c]^2) for r < n, c < width (float64
 * sums; a zero row gives -inf). */
int kvz_op_row_lognorms(kvz_backend *be, const float *x, size_t ld, size_t width, size_t n,
                        double *out, kvz_error *err);
/* out[g * (i1 - i0) + (i - i0)] = ln ||W_O^g v_i^h|| for every query head
 * g < H and key i in [i0, i1): W_O^g = w_o[:, g dh : (g+1) dh] [D, dh].
 * cpu: the products W_O^g v_i by sgemm, then their norms; cuda: through the
 * head's Gram matrix (||W v||^2 = v^T W^T W v, dh x dh, about 6x fewer
 * flops at Qwen3-8B shapes). -inf for a zero product. */
int kvz_op_value_lognorms(kvz_backend *be, const float *v, const float *w_o, size_t H,
                          size_t Hkv, size_t dh, size_t D, size_t i0, size_t i1, double *out,
                          kvz_error *err);
/* lse[g * (r1 - r0) + (j - r0)] for g < H, j in [r0, r1): the log-sum-exp
 * over keys 0..j of scale q_j.k_i (online, float64 sums). When tap_lse (the
 * forward attention's own [T, H] fp32 log-normalizers) is not NULL it is
 * copied instead (no second pass over the rows). */
int kvz_op_causal_lse(kvz_backend *be, const float *q, const float *k, const float *tap_lse,
                      size_t H, size_t Hkv, size_t dh, float scale, size_t r0, size_t r1,
                      double *lse, kvz_error *err);
/* out [p1 - p0, Hkv] (fp32) = phase 4 above, for p0 < p1 <= r0 < r1 (every
 * repeat query sees every context key: no mask). lse [H, r1 - r0],
 * log_xnorm [r1 - r0], lognorm [H, p1 - p0] from phases 1-3. compute
 * KVZ_BF16 lets a backend round q and k to bf16 for the products (cuda:
 * tensor cores where head_dim % 16 == 0 and head_dim <= 256; log-scores
 * within about 1e-2); the cpu backend always computes in fp32. */
int kvz_op_kvzip_best(kvz_backend *be, const float *q, const float *k, size_t H, size_t Hkv,
                      size_t dh, float scale, size_t p0, size_t p1, size_t r0, size_t r1,
                      const double *lse, const double *log_xnorm, const double *lognorm,
                      kvz_dtype compute, float *out, kvz_error *err);
/* dst[s * width + c] = src[(idx[s] - base) * ld + c] for s < n, c < width:
 * the sampled rows (positions idx, an int64 backend array [n], each in
 * [base, base + n_src)) of a [n_src, ld] fp32 array. */
int kvz_op_gather_rows(kvz_backend *be, const float *src, size_t ld, size_t width,
                       size_t base, size_t n_src, const int64_t *idx, size_t n, float *dst,
                       kvz_error *err);

/* ---------- asynchronous downloads into host slots ---------- */
/* For producers that overlap the download of one result with the compute
 * of the next (the oracle: document i is written while i+1 is scored).
 * A slot (0 <= slot < KVZ_BACKEND_SLOTS) names a set of downloads. cuda:
 * a copy stream of its own and one event per slot; cpu: memcpy, and the
 * waits return at once. */
enum { KVZ_BACKEND_SLOTS = 8 };
/* Queues host_dst (from kvz_backend_host_alloc) <- src after all work
 * queued so far, in slot's set. */
int kvz_backend_download_async(kvz_backend *be, size_t slot, void *host_dst, const void *src,
                               size_t bytes, kvz_error *err);
/* Marks the end of slot's set (after its downloads). */
int kvz_backend_slot_record(kvz_backend *be, size_t slot, kvz_error *err);
/* Work queued after this waits until slot's recorded downloads are done
 * (reusing the backend memory they read). */
int kvz_backend_slot_fence(kvz_backend *be, size_t slot, kvz_error *err);
/* Blocks the calling thread (any thread) until slot's recorded downloads
 * are complete; reports a fault they hit. */
int kvz_backend_slot_wait(kvz_backend *be, size_t slot, kvz_error *err);
/* (end of the KVzip+ score ops) */

/* ---------- trainer ops (the MLP and ridge surrogates) ---------- */
/* What the trainer (trainer/mlp.c, mlp_train.c, ridge.c) writes once on:
 * the MLP surrogate's forward/backward (GEMMs, bias, GELU, MSE), gradient
 * clipping and AdamW, the batch gather, and the ridge's float64 sufficient
 * statistics. fp32 elementwise work keeps the cpu trainer's operation order
 * (cuda: explicit round-to-nearest intrinsics, no fused multiply-adds);
 * reductions are float64, sequential on the cpu backend and fixed-order
 * trees on cuda, so every backend is deterministic run to run. */

/* GEMM arithmetic (train.gpu_precision); the cpu backend is always fp32. */
typedef enum kvz_gemm_precision {
    KVZ_GEMM_FP32 = 0, /* strict fp32 (cuda: CUBLAS_PEDANTIC_MATH, no TF32) */
    KVZ_GEMM_TF32 = 1, /* cuda: TF32 tensor cores (about 1e-3 relative) */
    KVZ_GEMM_BF16 = 2  /* cuda: both inputs rounded to bf16, fp32 accumulation */
} kvz_gemm_precision;
/* "float32", "tf32", "bfloat16" */
const char *kvz_gemm_precision_name(kvz_gemm_precision p);

/* Row-major c [m, n] = op(a) op(b) + beta c: op(a) [m, k] is a [m, k], or
 * a^T of a [k, m] when trans_a; op(b) [k, n] is b [k, n], or b^T of b [n, k]
 * when trans_b. beta 0 never reads c. cpu: cblas_sgemm. */
int kvz_op_gemm(kvz_backend *be, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                const float *a, const float *b, float beta, float *c, kvz_gemm_precision prec,
                kvz_error *err);
/* out[r * m + j] = bias[j] for r < n, j < m (a layer's bias, before
 * kvz_op_gemm with beta 1). */
int kvz_op_bias_rows(kvz_backend *be, float *out, const float *bias, size_t n, size_t m,
                     kvz_error *err);
/* out[j] = (float) sum over r < n of v[r * m + j] (float64 sums), j < m:
 * bias gradients. */
int kvz_op_col_sums(kvz_backend *be, const float *v, size_t n, size_t m, float *out,
                    kvz_error *err);
/* a = gelu(h) (a may equal h), and da *= gelu'(h), for count elements
 * (formulas in ops.h; cpu: libmvec, within 4 ulp; cuda: erff/expf). */
int kvz_op_gelu(kvz_backend *be, const float *h, float *a, size_t count, kvz_error *err);
int kvz_op_gelu_backward(kvz_backend *be, const float *h, float *da, size_t count,
                         kvz_error *err);
/* The MSE of pred against y over count elements: r = pred - y (fp32),
 * dy = s r with s = 2.0f / (float)count when dy is not NULL, and the backend
 * double *loss = (sum of r^2 in float64) / count. */
int kvz_op_mse(kvz_backend *be, const float *pred, const float *y, size_t count, float *dy,
               double *loss, kvz_error *err);
/* torch.nn.utils.clip_grad_norm_: the backend double *norm = sqrt(sum g^2)
 * (float64; norm NULL: backend scratch); when max_norm > 0 and coef =
 * max_norm / (norm + 1e-6) < 1, g *= (float)coef, decided on the backend
 * (nothing waits; a NaN norm leaves g alone). */
int kvz_op_clip_grad_norm(kvz_backend *be, float *g, size_t count, double max_norm,
                          double *norm, kvz_error *err);
/* One torch.optim.AdamW step (amsgrad off), fp32, t >= 1 counting this step:
 *   p *= 1 - lr wd; m += (g - m)(1 - b1); v = v b2 + (1 - b2) g g;
 *   p -= (lr / (1 - b1^t)) (m / (sqrt(v) / sqrt(1 - b2^t) + eps))
 * with every coefficient rounded to fp32 first. */
typedef struct kvz_adamw_args {
    size_t t;
    double lr, beta1, beta2, eps, weight_decay;
} kvz_adamw_args;
int kvz_op_adamw(kvz_backend *be, float *param, const float *grad, float *m, float *v,
                 size_t count, const kvz_adamw_args *a, kvz_error *err);
/* dst[i] = sum over p < n_src (in p order, from 0) of weight[p] * src[p][i]
 * (fp32), and the backend double *loss_dst = sum over p of (loss[p] *
 * rows[p]) / total (float64) when loss_dst is not NULL: one batch's result
 * from its parts (the cpu trainer splits a batch over its threads). src and
 * weight, rows are HOST arrays (of backend pointers and numbers); loss
 * [n_src] backend doubles; total = the sum of rows. dst may be NULL (loss
 * only). */
int kvz_op_combine_parts(kvz_backend *be, float *dst, const float *const *src,
                         const float *weight, size_t n_src, size_t count, double *loss_dst,
                         const double *loss, const size_t *rows, kvz_error *err);
/* dst[k * width + c] = src[row(k) * width + c] for k < n, c < width, where
 * row(k) = idx[k] (an int64 backend array) or row0 + k when idx is NULL;
 * src [src.numel / width rows, width] fp32 or fp16 (widened). Rows outside
 * src: KVZ_EINVAL (cpu, and the contiguous form everywhere; cuda does not
 * check idx). */
int kvz_op_take_rows(kvz_backend *be, kvz_buf src, size_t width, const int64_t *idx,
                     size_t row0, size_t n, float *dst, kvz_error *err);
/* The ridge's statistics += n rows x [n, D], y [n, H] (fp32), in float64.
 * sums (KVZ_F64, D*D + D*H + D + 2H) holds, in order: xtx [D, D] (X^T X, the
 * upper triangle of the row-major matrix; the strict lower part is never
 * written), xty [D, H] row-major, x_sum [D], y_sum [H], y_sq_sum [H].
 * scratch (KVZ_F64, at least D + H) takes float64 copies of
 * scratch.numel / (D + H) rows at a time (cpu: 256 keeps them in cache;
 * cuda: a few thousand). A non-finite value fails with KVZ_EINVAL ("ridge:
 * row r feature k of the block is not finite", or "target") and leaves the
 * sums unchanged (cuda waits for that check). */
int kvz_op_ridge_add(kvz_backend *be, const float *x, const float *y, size_t n, size_t D,
                     size_t H, kvz_buf scratch, kvz_buf sums, kvz_error *err);
/* Free and total bytes of the backend's memory (cuda: its device,
 * cudaMemGetInfo; cpu: available and total physical memory). */
int kvz_backend_memory(kvz_backend *be, size_t *free_bytes, size_t *total_bytes,
                       kvz_error *err);
/* (end of the trainer ops) */

/* ---------- implementing a backend ---------- */

/* The table a backend provides. Every entry is required; the kvz_op_* and
 * kvz_backend_* functions above check arguments (NULL arrays, dtypes,
 * sizes) once for all backends and then call these. */
typedef struct kvz_backend_ops {
    void (*close)(kvz_backend *be);
    int (*alloc)(kvz_backend *be, size_t bytes, const char *what, void **out, kvz_error *err);
    void (*free)(kvz_backend *be, void *p, size_t bytes);
    int (*upload)(kvz_backend *be, void *dst, const void *host_src, size_t bytes, kvz_error *err);
    int (*download)(kvz_backend *be, void *host_dst, const void *src, size_t bytes,
                    kvz_error *err);
    int (*copy)(kvz_backend *be, void *dst, const void *src, size_t bytes, kvz_error *err);
    int (*sync)(kvz_backend *be, kvz_error *err);
    size_t (*peak_bytes)(const kvz_backend *be);
    void *(*host_alloc)(kvz_backend *be, size_t bytes);
    void (*host_free)(kvz_backend *be, void *p);
    int (*linear)(kvz_backend *be, const float *x, kvz_buf w, const float *bias, float *y,
                  size_t n, size_t n_in, size_t n_out, kvz_error *err);
    int (*rmsnorm)(kvz_backend *be, const float *x, const float *w, float *y, size_t n_rows,
                   size_t dim, float eps, kvz_error *err);
    int (*rope)(kvz_backend *be, float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                size_t pos0, const float *inv_freq, kvz_error *err);
    int (*attention)(kvz_backend *be, const kvz_attn_args *a, kvz_dtype compute,
                     kvz_error *err);
    int (*ragged_attention)(kvz_backend *be, const kvz_ragged_attn_args *a, kvz_error *err);
    int (*swiglu)(kvz_backend *be, const float *gate_up, float *out, size_t n, size_t d_ff,
                  kvz_error *err);
    int (*add)(kvz_backend *be, float *h, const float *d, size_t count, kvz_error *err);
    int (*embed)(kvz_backend *be, kvz_buf table, size_t dim, const int32_t *ids, size_t n,
                 float *h, kvz_error *err);
    int (*copy_rows)(kvz_backend *be, float *dst, size_t dst_stride, const float *src,
                     size_t src_stride, size_t n_rows, size_t width, kvz_error *err);
    int (*convert)(kvz_backend *be, kvz_buf dst, kvz_buf src, kvz_error *err);
    int (*fill)(kvz_backend *be, kvz_buf b, uint64_t seed, uint64_t tensor, float bound,
                float value, kvz_error *err);
    /* KVzip+ score */
    int (*row_lognorms)(kvz_backend *be, const float *x, size_t ld, size_t width, size_t n,
                        double *out, kvz_error *err);
    int (*value_lognorms)(kvz_backend *be, const float *v, const float *w_o, size_t H,
                          size_t Hkv, size_t dh, size_t D, size_t i0, size_t i1, double *out,
                          kvz_error *err);
    int (*causal_lse)(kvz_backend *be, const float *q, const float *k, const float *tap_lse,
                      size_t H, size_t Hkv, size_t dh, float scale, size_t r0, size_t r1,
                      double *lse, kvz_error *err);
    int (*kvzip_best)(kvz_backend *be, const float *q, const float *k, size_t H, size_t Hkv,
                      size_t dh, float scale, size_t p0, size_t p1, size_t r0, size_t r1,
                      const double *lse, const double *log_xnorm, const double *lognorm,
                      kvz_dtype compute, float *out, kvz_error *err);
    int (*gather_rows)(kvz_backend *be, const float *src, size_t ld, size_t width, size_t base,
                       size_t n_src, const int64_t *idx, size_t n, float *dst, kvz_error *err);
    int (*download_async)(kvz_backend *be, size_t slot, void *host_dst, const void *src,
                          size_t bytes, kvz_error *err);
    int (*slot_record)(kvz_backend *be, size_t slot, kvz_error *err);
    int (*slot_fence)(kvz_backend *be, size_t slot, kvz_error *err);
    int (*slot_wait)(kvz_backend *be, size_t slot, kvz_error *err);
    /* trainer */
    int (*gemm)(kvz_backend *be, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                const float *a, const float *b, float beta, float *c, kvz_gemm_precision prec,
                kvz_error *err);
    int (*bias_rows)(kvz_backend *be, float *out, const float *bias, size_t n, size_t m,
                     kvz_error *err);
    int (*col_sums)(kvz_backend *be, const float *v, size_t n, size_t m, float *out,
                    kvz_error *err);
    int (*gelu)(kvz_backend *be, const float *h, float *a, size_t count, kvz_error *err);
    int (*gelu_backward)(kvz_backend *be, const float *h, float *da, size_t count,
                         kvz_error *err);
    int (*mse)(kvz_backend *be, const float *pred, const float *y, size_t count, float *dy,
               double *loss, kvz_error *err);
    int (*clip_grad_norm)(kvz_backend *be, float *g, size_t count, double max_norm,
                          double *norm, kvz_error *err);
    int (*adamw)(kvz_backend *be, float *param, const float *grad, float *m, float *v,
                 size_t count, const kvz_adamw_args *a, kvz_error *err);
    int (*combine_parts)(kvz_backend *be, float *dst, const float *const *src,
                         const float *weight, size_t n_src, size_t count, double *loss_dst,
                         const double *loss, const size_t *rows, kvz_error *err);
    int (*take_rows)(kvz_backend *be, kvz_buf src, size_t width, const int64_t *idx,
                     size_t row0, size_t n, float *dst, kvz_error *err);
    int (*ridge_add)(kvz_backend *be, const float *x, const float *y, size_t n, size_t D,
                     size_t H, kvz_buf scratch, kvz_buf sums, kvz_error *err);
    int (*memory)(kvz_backend *be, size_t *free_bytes, size_t *total_bytes, kvz_error *err);
} kvz_backend_ops;

/* The common head of every backend; an implementation embeds it first and
 * keeps its own state after it. */
struct kvz_backend {
    const kvz_backend_ops *ops;
    kvz_backend_kind kind;
    int host_memory;
    void *stream;
    size_t bytes_held;
    char name[320];
};

/* The registered openers (ops/backend_cpu.c; kernels/backend_cuda.cu in CUDA
 * builds). They fill the head (ops, kind, host_memory, name). */
int kvz_backend_cpu_open(const kvz_backend_options *opt, kvz_backend **out, kvz_error *err);
int kvz_backend_cuda_open(const kvz_backend_options *opt, kvz_backend **out, kvz_error *err);

/* Host bf16 conversions (the rule of kvz_op_convert): round to nearest
 * even, NaN stays a quiet NaN; widening is exact. */
static inline uint16_t kvz_f32_to_bf16(float x)
{
    union { float f; uint32_t u; } v = {x};
    if ((v.u & 0x7f800000u) == 0x7f800000u && (v.u & 0x007fffffu))
        return (uint16_t)((v.u >> 16) | 0x0040u);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

static inline float kvz_bf16_widen(uint16_t b)
{
    union { uint32_t u; float f; } v = {(uint32_t)b << 16};
    return v.f;
}

/* Host float16 conversions (IEEE binary16; the rule of kvz_op_convert):
 * round to nearest even with subnormals, overflow to inf (from 65520 up),
 * NaN stays a quiet NaN of the same sign; widening is exact. */
static inline uint16_t kvz_f32_to_f16(float x)
{
    union { float f; uint32_t u; } v = {x};
    uint32_t sign = (v.u >> 16) & 0x8000u, a = v.u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf, NaN */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x0200u | ((a >> 13) & 0x3ffu) : 0));
    if (a >= 0x477ff000u) /* >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a subnormal (or 0) of 2^-24 units */
        if (a < 0x33000000u)
            return (uint16_t)sign;
        uint32_t m = (a & 0x7fffffu) | 0x800000u, s = 126 - (a >> 23);
        uint32_t r = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
        r += rem > half || (rem == half && (r & 1u));
        return (uint16_t)(sign | r);
    }
    uint32_t h = (((a >> 23) - 112) << 10) | ((a & 0x7fffffu) >> 13), rem = a & 0x1fffu;
    h += rem > 0x1000u || (rem == 0x1000u && (h & 1u));
    return (uint16_t)(sign | h);
}

static inline float kvz_f16_widen(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0x1f)
        u = sign | 0x7f800000u | (m << 13);
    else if (e)
        u = sign | ((e + 112) << 23) | (m << 13);
    else if (!m)
        u = sign;
    else { /* subnormal: normalize */
        e = 113;
        while (!(m & 0x400u))
            m <<= 1, e--;
        u = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
    union { uint32_t u; float f; } v = {u};
    return v.f;
}

/* kvz_op_fill's values, shared by the backends so they fill identically:
 * key = splitmix64(seed ^ splitmix64(tensor)); element i takes the top 24
 * bits of splitmix64(key + i) as u in [0, 1) and is (2u - 1) * bound, or
 * value when bound is 0. */
static inline uint64_t kvz_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t kvz_fill_key(uint64_t seed, uint64_t tensor)
{
    return kvz_splitmix64(seed ^ kvz_splitmix64(tensor));
}

#endif
