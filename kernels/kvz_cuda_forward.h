/* kvz_cuda_forward: the plain-C face of the GPU transformer forward pass (no
 * CUDA headers here). Same architectures, checkpoints and semantics as the
 * CPU pass of model/forward.h (batch 1, causal, a growing KV cache, layer
 * taps right after attention), on one CUDA device. Implemented by
 * kernels/cuda_forward.cu in CUDA builds and by kernels/cuda_forward_nocuda.c
 * (every function fails with KVZ_EUNSUPPORTED) otherwise.
 *
 * Precision:
 *   KVZ_CUDA_FP32  weights fp32, strict fp32 GEMMs (no TF32): the checking
 *                  mode, matches the CPU pass to ~1e-5.
 *   KVZ_CUDA_BF16  weights stored bf16 on the device (GGUF quantized and
 *                  F16/F32 tensors are dequantized on load, then rounded to
 *                  bf16); GEMM inputs bf16, accumulation and outputs fp32.
 *                  Residual stream, norms, RoPE, softmax and the KV cache
 *                  stay fp32 in both modes.
 * Attention is the project's own flash-style kernel
 * (kernels/cuda_forward_attention.cu, also callable alone through
 * kernels/kvz_cuda_attention.h; docs/gpu-forward.md says why not cuDNN):
 * causal, GQA, online softmax, and it also returns each query row's
 * log-sum-exp (the tap's lse).
 *
 * Taps: the callback receives the same kvz_layer_tap as the CPU pass, but
 * x, q, k, v, w_o and lse are DEVICE pointers (fp32, the CPU shapes;
 * in bf16 mode w_o is an fp32 copy of the bf16 weight made for the tap),
 * valid only during the callback. Work queued by the callback on the
 * forward's stream (kvz_cuda_forward_stream) is ordered with the pass. */
#ifndef KVZ_CUDA_FORWARD_H
#define KVZ_CUDA_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../model/checkpoint.h"
#include "../model/forward.h"
#include "../model/model_config.h"

typedef enum kvz_cuda_precision {
    KVZ_CUDA_FP32 = 0,
    KVZ_CUDA_BF16 = 1
} kvz_cuda_precision;

typedef struct kvz_cuda_forward_options {
    int device;                   /* CUDA device index (0: the first) */
    kvz_cuda_precision precision; /* see above; default (0) fp32 */
    size_t max_tokens;            /* KV-cache capacity; 0: the model's context length.
                                     The cache grows on demand like the CPU one. */
} kvz_cuda_forward_options;

typedef struct kvz_cuda_forward kvz_cuda_forward; /* opaque: device weights, cache, scratch */

/* Loads ck's weights onto the device (one tensor at a time through a host
 * staging buffer, so host memory stays O(largest tensor)). Errors:
 * KVZ_EUNSUPPORTED (no CUDA build, no device), KVZ_ENOMEM (device or host
 * memory; the message says how much was asked and how much is free),
 * KVZ_EIO (a CUDA/cuBLAS failure, named), the checkpoint's read errors. */
int kvz_cuda_forward_create(const kvz_checkpoint *ck, const kvz_cuda_forward_options *opt_or_NULL,
                            kvz_cuda_forward **out, kvz_error *err);
/* A model of shape cfg with random weights generated on the device from seed
 * (projections uniform in +-1/sqrt(fan_in), norms 1, embeddings +-1): for
 * benchmarks of large shapes without a download. */
int kvz_cuda_forward_create_random(const kvz_model_config *cfg, uint64_t seed,
                                   const kvz_cuda_forward_options *opt_or_NULL,
                                   kvz_cuda_forward **out, kvz_error *err);
void kvz_cuda_forward_free(kvz_cuda_forward *f);

const kvz_model_config *kvz_cuda_forward_config(const kvz_cuda_forward *f);
void kvz_cuda_forward_reset(kvz_cuda_forward *f);
void kvz_cuda_forward_truncate(kvz_cuda_forward *f, size_t n_tokens);
size_t kvz_cuda_forward_n_cached(const kvz_cuda_forward *f);

/* kvz_forward_run on the device: ids (host) [n], logits (host) as the CPU
 * pass. Returns once the pass is queued and, when logits are asked for,
 * copied back; tap work queued on the stream may still be running. Errors as
 * kvz_forward_run, plus KVZ_EIO for CUDA/cuBLAS failures. */
int kvz_cuda_forward_run(kvz_cuda_forward *f, const int32_t *ids, size_t n, kvz_tap_fn tap,
                         void *user, int logits_mode, float *logits, kvz_error *err);

/* The cudaStream_t (as void *) all of this forward's work runs on. Today
 * NULL: the legacy default stream, which kvz_cuda_kvzip_score_layer also
 * uses, so tap work is ordered with the pass without events. */
void *kvz_cuda_forward_stream(const kvz_cuda_forward *f);
/* Device memory: bytes held by this forward now (weights, cache, scratch),
 * and the device's peak in-use bytes since creation (cudaMemGetInfo samples
 * taken at every run). */
size_t kvz_cuda_forward_device_bytes(const kvz_cuda_forward *f);
size_t kvz_cuda_forward_peak_device_bytes(const kvz_cuda_forward *f);

#endif
