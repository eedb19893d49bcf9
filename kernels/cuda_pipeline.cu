/* cuda_pipeline: the GPU oracle's per-document plumbing (kvz_cuda_pipeline.h):
 * pinned host buffers, the sample gather kernel, the copy stream and the
 * per-slot completion events. The scorer it calls lives in cuda_score.cu. */
#include <stdlib.h>
#include <string.h>

#include "cuda_ops_internal.cuh"

extern "C" {
#include "kvz_cuda_ops.h"
#include "kvz_cuda_pipeline.h"
}

enum { GATHER_THREADS = 128 };

struct kvz_cuda_pipeline {
    kvz_cuda_pipeline_shape shape;
    cudaStream_t compute, copy;
    int own_copy;             /* copy stream created */
    cudaEvent_t compute_done; /* staging complete for the current document */
    cudaEvent_t *slot_done;   /* [n_slots] the slot's copy has landed */
    size_t n_events;          /* created slot events */
    int *slot_copying;        /* [n_slots] a copy out of the slot's staging was queued */
    size_t *d_positions;      /* [n_max] */
    float *d_layer_scores;    /* [cap_context, Hkv] */
    size_t cap_context;
    /* Per slot, so that document i+1 computes into one staging while
     * document i's copy still reads the other (the copy stream does not
     * block the compute stream). */
    float **staging_hidden;   /* [n_slots][L, n_max, D] (used as [L, n, D]) */
    float **staging_scores;   /* [n_slots][L, n_max, Hkv] (used as [L, n, Hkv]) */
    size_t n, p0, slot;       /* the current document and its slot */
    kvz_cuda_score_ws *ws;
};

/* ---------- kernel ---------- */

/* For sample s (absolute position pos[s]): hidden_out[s, :] = x[pos[s], :]
 * (when hidden_out) and scores_out[s, :] = layer_scores[pos[s] - p0, :].
 * Grid: blocks stride over samples; block: threads stride over columns. */
static __global__ void gather_samples_kernel(const float *x, size_t D,
                                             const float *layer_scores, size_t Hkv,
                                             const size_t *pos, size_t n, size_t p0,
                                             float *hidden_out, float *scores_out)
{
    for (size_t s = blockIdx.x; s < n; s += gridDim.x) {
        size_t i = pos[s];
        if (hidden_out)
            for (size_t c = threadIdx.x; c < D; c += blockDim.x)
                hidden_out[s * D + c] = x[i * D + c];
        for (size_t c = threadIdx.x; c < Hkv; c += blockDim.x)
            scores_out[s * Hkv + c] = layer_scores[(i - p0) * Hkv + c];
    }
}

/* ---------- pinned memory ---------- */

extern "C" void *kvz_cuda_pinned_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free error state */
        return NULL;
    }
    return p;
}

extern "C" void kvz_cuda_pinned_free(void *p)
{
    if (p)
        cudaFreeHost(p);
}

/* ---------- create / free ---------- */

static int create_events(kvz_cuda_pipeline *p, kvz_error *err)
{
    int rc = kvz_cuda_check(cudaEventCreate(&p->compute_done), "oracle pipeline: cudaEventCreate",
                            err);
    p->slot_done = (cudaEvent_t *)calloc(p->shape.n_slots, sizeof(cudaEvent_t));
    if (rc == KVZ_OK && !p->slot_done)
        rc = kvz_fail(err, KVZ_ENOMEM, "oracle pipeline: out of memory");
    for (size_t i = 0; rc == KVZ_OK && i < p->shape.n_slots; i++) {
        rc = kvz_cuda_check(cudaEventCreate(&p->slot_done[i]), "oracle pipeline: cudaEventCreate",
                            err);
        if (rc == KVZ_OK)
            p->n_events++;
    }
    return rc;
}

static int alloc_staging(kvz_cuda_pipeline *p, kvz_error *err)
{
    const kvz_cuda_pipeline_shape *s = &p->shape;
    p->staging_hidden = (float **)calloc(s->n_slots, sizeof *p->staging_hidden);
    p->staging_scores = (float **)calloc(s->n_slots, sizeof *p->staging_scores);
    p->slot_copying = (int *)calloc(s->n_slots, sizeof *p->slot_copying);
    if (!p->staging_hidden || !p->staging_scores || !p->slot_copying)
        return kvz_fail(err, KVZ_ENOMEM, "oracle pipeline: out of memory");
    int rc = kvz_cuda_alloc((void **)&p->d_positions, s->n_max * sizeof(size_t), err);
    for (size_t k = 0; rc == KVZ_OK && k < s->n_slots; k++) {
        rc = kvz_cuda_alloc((void **)&p->staging_scores[k],
                            s->n_layers * s->n_max * s->n_kv_heads * sizeof(float), err);
        if (rc == KVZ_OK && s->with_hidden)
            rc = kvz_cuda_alloc((void **)&p->staging_hidden[k],
                                s->n_layers * s->n_max * s->d_model * sizeof(float), err);
    }
    return rc;
}

extern "C" int kvz_cuda_pipeline_create(void *compute_stream,
                                        const kvz_cuda_pipeline_shape *shape,
                                        kvz_cuda_pipeline **out, kvz_error *err)
{
    *out = NULL;
    if (!shape || shape->n_slots == 0 || shape->n_max == 0 || shape->n_layers == 0 ||
        shape->n_kv_heads == 0 || shape->d_model == 0)
        return kvz_fail(err, KVZ_EINVAL, "oracle pipeline: empty shape");
    kvz_cuda_pipeline *p = (kvz_cuda_pipeline *)calloc(1, sizeof *p);
    if (!p)
        return kvz_fail(err, KVZ_ENOMEM, "oracle pipeline: out of memory");
    p->shape = *shape;
    p->compute = (cudaStream_t)compute_stream;
    /* Non-blocking: the compute stream may be the legacy default stream,
     * which would otherwise wait for every copy (and they for it). */
    int rc = kvz_cuda_check(cudaStreamCreateWithFlags(&p->copy, cudaStreamNonBlocking),
                            "oracle pipeline: cudaStreamCreateWithFlags", err);
    p->own_copy = rc == KVZ_OK;
    if (rc == KVZ_OK)
        rc = create_events(p, err);
    if (rc == KVZ_OK)
        rc = alloc_staging(p, err);
    if (rc != KVZ_OK) {
        kvz_cuda_pipeline_free(p);
        return rc;
    }
    *out = p;
    return KVZ_OK;
}

extern "C" void kvz_cuda_pipeline_free(kvz_cuda_pipeline *p)
{
    if (!p)
        return;
    cudaDeviceSynchronize(); /* nothing may still use the buffers or events */
    cudaGetLastError();
    kvz_cuda_score_ws_free(p->ws);
    kvz_cuda_free(p->d_positions);
    kvz_cuda_free(p->d_layer_scores);
    for (size_t k = 0; k < p->shape.n_slots; k++) {
        kvz_cuda_free(p->staging_hidden ? p->staging_hidden[k] : NULL);
        kvz_cuda_free(p->staging_scores ? p->staging_scores[k] : NULL);
    }
    free(p->staging_hidden);
    free(p->staging_scores);
    free(p->slot_copying);
    for (size_t i = 0; i < p->n_events; i++)
        cudaEventDestroy(p->slot_done[i]);
    if (p->compute_done)
        cudaEventDestroy(p->compute_done);
    if (p->own_copy)
        cudaStreamDestroy(p->copy);
    free(p->slot_done);
    free(p);
}

/* ---------- one document ---------- */

static int grow_layer_scores(kvz_cuda_pipeline *p, size_t n_context, kvz_error *err)
{
    if (n_context <= p->cap_context)
        return KVZ_OK;
    kvz_cuda_free(p->d_layer_scores); /* cudaFree waits for the device */
    p->d_layer_scores = NULL;
    p->cap_context = 0;
    int rc = kvz_cuda_alloc((void **)&p->d_layer_scores,
                            n_context * p->shape.n_kv_heads * sizeof(float), err);
    if (rc == KVZ_OK)
        p->cap_context = n_context;
    return rc;
}

extern "C" int kvz_cuda_pipeline_begin(kvz_cuda_pipeline *p, size_t slot,
                                       const size_t *positions, size_t n, size_t p0,
                                       size_t n_context, kvz_error *err)
{
    if (slot >= p->shape.n_slots)
        return kvz_fail(err, KVZ_EINVAL, "oracle pipeline: bad slot %zu", slot);
    if (n == 0 || n > p->shape.n_max || !positions)
        return kvz_fail(err, KVZ_EINVAL, "oracle pipeline: %zu samples (at most %zu)", n,
                        p->shape.n_max);
    for (size_t s = 0; s < n; s++)
        if (positions[s] < p0 || positions[s] >= p0 + n_context)
            return kvz_fail(err, KVZ_EINVAL,
                            "oracle pipeline: sample position %zu outside the context [%zu, %zu)",
                            positions[s], p0, p0 + n_context);
    int rc = KVZ_OK;
    if (p->slot_copying[slot]) /* the slot's staging is read by its last copy until it lands */
        rc = kvz_cuda_check(cudaStreamWaitEvent(p->compute, p->slot_done[slot], 0),
                            "oracle pipeline: cudaStreamWaitEvent", err);
    rc = rc ? rc : grow_layer_scores(p, n_context, err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemcpyAsync(p->d_positions, positions, n * sizeof(size_t),
                                            cudaMemcpyHostToDevice, p->compute),
                            "oracle pipeline: positions cudaMemcpyAsync", err);
    if (rc == KVZ_OK)
        p->n = n, p->p0 = p0, p->slot = slot;
    return rc;
}

extern "C" int kvz_cuda_pipeline_layer(kvz_cuda_pipeline *p, const kvz_layer_tap *tap,
                                       const kvz_model_config *cfg, size_t p0, size_t p1,
                                       size_t r0, size_t r1, kvz_error *err)
{
    const kvz_cuda_pipeline_shape *s = &p->shape;
    if (!tap || tap->layer >= s->n_layers || p0 != p->p0 || p1 - p0 > p->cap_context ||
        cfg->d_model != s->d_model || cfg->n_kv_heads != s->n_kv_heads)
        return kvz_fail(err, KVZ_EINVAL,
                        "oracle pipeline: tap of layer %zu does not match the document's shape",
                        tap ? tap->layer : 0);
    int rc = kvz_cuda_kvzip_score_layer_async(tap, cfg, p0, p1, r0, r1, p->d_layer_scores,
                                              (void *)p->compute, s->tensor_cores, &p->ws,
                                              err);
    if (rc != KVZ_OK)
        return rc;
    size_t l = tap->layer, n = p->n, D = s->d_model, Hkv = s->n_kv_heads;
    float *hid = s->with_hidden ? p->staging_hidden[p->slot] + l * n * D : NULL;
    gather_samples_kernel<<<kvz_cuda_blocks_for(n, 1), GATHER_THREADS, 0, p->compute>>>(
        tap->x, D, p->d_layer_scores, Hkv, p->d_positions, n, p0, hid,
        p->staging_scores[p->slot] + l * n * Hkv);
    return kvz_cuda_check_launch("oracle pipeline: gather launch", err);
}

extern "C" int kvz_cuda_pipeline_copy_out(kvz_cuda_pipeline *p, size_t slot, float *host_hidden,
                                          float *host_scores, kvz_error *err)
{
    const kvz_cuda_pipeline_shape *s = &p->shape;
    if (slot >= s->n_slots || slot != p->slot || !host_scores || (s->with_hidden && !host_hidden))
        return kvz_fail(err, KVZ_EINVAL,
                        "oracle pipeline: slot %zu is not the document's (%zu) or NULL host buffer",
                        slot, p->slot);
    size_t L = s->n_layers, n = p->n;
    int rc = kvz_cuda_check(cudaEventRecord(p->compute_done, p->compute),
                            "oracle pipeline: cudaEventRecord", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaStreamWaitEvent(p->copy, p->compute_done, 0),
                            "oracle pipeline: cudaStreamWaitEvent", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaMemcpyAsync(host_scores, p->staging_scores[slot],
                                            L * n * s->n_kv_heads * sizeof(float),
                                            cudaMemcpyDeviceToHost, p->copy),
                            "oracle pipeline: scores cudaMemcpyAsync", err);
    if (rc == KVZ_OK && s->with_hidden)
        rc = kvz_cuda_check(cudaMemcpyAsync(host_hidden, p->staging_hidden[slot],
                                            L * n * s->d_model * sizeof(float),
                                            cudaMemcpyDeviceToHost, p->copy),
                            "oracle pipeline: hidden cudaMemcpyAsync", err);
    if (rc == KVZ_OK)
        rc = kvz_cuda_check(cudaEventRecord(p->slot_done[slot], p->copy),
                            "oracle pipeline: cudaEventRecord", err);
    if (rc == KVZ_OK)
        p->slot_copying[slot] = 1;
    return rc;
}

extern "C" int kvz_cuda_pipeline_wait(kvz_cuda_pipeline *p, size_t slot, kvz_error *err)
{
    if (slot >= p->shape.n_slots)
        return kvz_fail(err, KVZ_EINVAL, "oracle pipeline: bad slot %zu", slot);
    return kvz_cuda_check(cudaEventSynchronize(p->slot_done[slot]),
                          "oracle pipeline: waiting for the device (cudaEventSynchronize)", err);
}
