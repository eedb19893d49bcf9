/* kvz_cuda_pipeline: the plain-C face (no CUDA headers) of the GPU oracle's
 * per-document plumbing: pinned host buffers, the stream-ordered KVzip+
 * layer score, the gather of the sampled rows into device staging, and the
 * asynchronous copy of the staging into a writer slot's pinned buffers on a
 * separate copy stream, with one completion event per slot.
 * Implemented by kernels/cuda_pipeline.cu (+ the async scorer in
 * kernels/cuda_score.cu) in CUDA builds and by kernels/cuda_pipeline_nocuda.c
 * (every call fails with KVZ_EUNSUPPORTED) otherwise.
 *
 * Order of one document in slot s on the compute stream S (the forward's):
 *   begin:   S waits for slot s's previous copy (its staging is free again),
 *            uploads the sample positions
 *   per layer (in the forward's tap): score -> layer scores [|P|, Hkv],
 *            gather rows -> slot s's staging hidden [L, n, D] and scores
 *            [L, n, Hkv]
 *   copy_out: event on S; the copy stream (non-blocking) waits for it,
 *            copies the staging into the slot's pinned host buffers and
 *            records the slot's event
 *   wait:    (writer thread) cudaEventSynchronize on the slot's event
 * Staging is per slot, so the copy of document i overlaps the compute of
 * document i+1 when they use different slots. */
#ifndef KVZ_CUDA_PIPELINE_H
#define KVZ_CUDA_PIPELINE_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../model/forward.h"
#include "../model/model_config.h"

/* ---------- pinned host memory ---------- */
/* Page-locked host memory (cudaMallocHost); NULL on failure or without CUDA. */
void *kvz_cuda_pinned_alloc(size_t bytes);
void kvz_cuda_pinned_free(void *p);

/* ---------- the stream-ordered scorer (kernels/cuda_score.cu) ---------- */
typedef struct kvz_cuda_score_ws kvz_cuda_score_ws; /* device scratch, grows on demand */
void kvz_cuda_score_ws_free(kvz_cuda_score_ws *ws);
/* kvz_cuda_kvzip_score_layer (kernels/kvz_cuda_ops.h) queued on `stream`
 * (a cudaStream_t as void *; NULL: the legacy default stream) without
 * waiting: same arguments, checks and results. tap->lse, when not NULL, is
 * a DEVICE array [T, H] of the attention's log-normalizers and replaces the
 * scorer's own log-sum-exp phase. tensor_cores: nonzero runs the max over
 * the repeat queries (phase 4) with bf16 q.k products on tensor cores (the
 * oracle's BF16 mode; log-scores within about 1e-2 of the fp32 ones) when
 * head_dim is a multiple of 16 up to 256, unless the environment sets
 * KVZ_SCORE=fp32; 0 keeps the exact fp32 kernel. *ws: NULL on the first
 * call (created), reused after; free with kvz_cuda_score_ws_free once the
 * stream is idle. */
int kvz_cuda_kvzip_score_layer_async(const kvz_layer_tap *tap, const kvz_model_config *cfg,
                                     size_t p0, size_t p1, size_t r0, size_t r1,
                                     float *out_logscores, void *stream, int tensor_cores,
                                     kvz_cuda_score_ws **ws, kvz_error *err);

/* ---------- one document's pipeline ---------- */
typedef struct kvz_cuda_pipeline kvz_cuda_pipeline; /* opaque */

typedef struct kvz_cuda_pipeline_shape {
    size_t n_slots;            /* writer slots (one completion event each) */
    size_t n_max;              /* most samples per document */
    size_t n_layers, d_model, n_kv_heads;
    int with_hidden;           /* gather and copy hidden rows too */
    int tensor_cores;          /* score on tensor cores (BF16 mode; see the scorer) */
} kvz_cuda_pipeline_shape;

/* compute_stream: the forward's stream (kvz_backend_stream of its backend). Creates
 * the copy stream, the events and the staging buffers. */
int kvz_cuda_pipeline_create(void *compute_stream, const kvz_cuda_pipeline_shape *shape,
                             kvz_cuda_pipeline **out, kvz_error *err);
/* Waits for the device to go idle, then frees everything; NULL is fine. */
void kvz_cuda_pipeline_free(kvz_cuda_pipeline *p);

/* Starts a document in writer slot `slot` (< n_slots): positions (host,
 * absolute, in [p0, p0 + n_context)) [n <= n_max]. Queued on the compute
 * stream after the slot's previous copy. */
int kvz_cuda_pipeline_begin(kvz_cuda_pipeline *p, size_t slot, const size_t *positions, size_t n,
                            size_t p0, size_t n_context, kvz_error *err);
/* One layer's tap (device pointers, pos0 == 0): the layer's scores over the
 * context [p0, p1) with repeat [r0, r1), then the gather of the sampled rows
 * of tap->x and of the scores into staging layer tap->layer. */
int kvz_cuda_pipeline_layer(kvz_cuda_pipeline *p, const kvz_layer_tap *tap,
                            const kvz_model_config *cfg, size_t p0, size_t p1, size_t r0,
                            size_t r1, kvz_error *err);
/* After the pass (slot: the one given to begin): staging -> host_hidden [L, n, D] (when with_hidden) and
 * host_scores [L, n, Hkv] (pinned, from kvz_cuda_pinned_alloc) on the copy
 * stream; records slot's completion event. */
int kvz_cuda_pipeline_copy_out(kvz_cuda_pipeline *p, size_t slot, float *host_hidden,
                               float *host_scores, kvz_error *err);
/* Blocks until slot's copy is complete (any thread); reports device faults. */
int kvz_cuda_pipeline_wait(kvz_cuda_pipeline *p, size_t slot, kvz_error *err);

#endif
