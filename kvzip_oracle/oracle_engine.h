/* oracle_engine: the oracle's per-document "score" step on a backend
 * (ops/backend.h), written once: a kvz_forward whose layer tap scores the
 * layer with the backend's score ops and gathers the sampled rows; on cuda
 * the results land in the writer slot's pinned buffers asynchronously and
 * kvz_oracle_engine_ready waits for them, on cpu they are complete when
 * score returns (and the chunked scorer drives the cpu forward itself)
 * The harvest loop (oracle.c) calls score on the main thread and ready on
 * the writer thread (oracle_writer.h), once per slot, in order. */
#ifndef KVZ_ORACLE_ENGINE_H
#define KVZ_ORACLE_ENGINE_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../model/checkpoint.h"
#include "../model/forward.h"
#include "../model/model_config.h"
#include "oracle_doc.h"

typedef struct kvz_oracle_engine_options {
    int device;       /* KVZ_DEVICE_CPU or KVZ_DEVICE_CUDA (already resolved, not auto) */
    int precision;    /* KVZ_PRECISION_* (cuda only; the CPU is always float32) */
    size_t threads;   /* CPU threads (0: all) */
    int scoring;      /* KVZ_SCORING_*: cuda runs kvzip_plus only */
    size_t n_slots;   /* writer slots, at most KVZ_BACKEND_SLOTS (0: 2) */
    size_t n_max;     /* most samples per document */
    int with_hidden;  /* hidden states are wanted */
} kvz_oracle_engine_options;

typedef struct kvz_oracle_engine kvz_oracle_engine; /* opaque */

/* Loads ck onto the engine's device. The checkpoint may be closed after.
 * Errors: the forward's, KVZ_EUNSUPPORTED (cuda with chunked scoring, no
 * CUDA build or no device: the message says which). */
int kvz_oracle_engine_open(const kvz_checkpoint *ck, const kvz_oracle_engine_options *opt,
                           kvz_oracle_engine **out, kvz_error *err);
/* An engine around a forward made elsewhere (e.g. kvz_forward_create_random
 * for benchmarks and tests), taken over: freed with the engine, or at once
 * on failure. The backend and precision are the forward's; opt->device and
 * opt->precision are ignored. */
int kvz_oracle_engine_wrap(kvz_forward *f, const kvz_oracle_engine_options *opt,
                           kvz_oracle_engine **out, kvz_error *err);
void kvz_oracle_engine_free(kvz_oracle_engine *e);

const kvz_model_config *kvz_oracle_engine_config(const kvz_oracle_engine *e);
/* "cpu" or "cuda:0 NVIDIA H100 80GB HBM3" */
const char *kvz_oracle_engine_device(const kvz_oracle_engine *e);
/* The effective precision of the scores: "float32" or "bfloat16". */
const char *kvz_oracle_engine_precision(const kvz_oracle_engine *e);
/* The CPU forward (the chunked scorer drives it), NULL on cuda. */
kvz_forward *kvz_oracle_engine_cpu_forward(kvz_oracle_engine *e);

/* Host buffers for the writer slots (pinned on cuda). */
void *kvz_oracle_engine_host_alloc(void *engine, size_t bytes);
void kvz_oracle_engine_host_free(void *engine, void *p);

/* Single-pass KVzip+ scores of one document into out_hidden [L, n, D]
 * (NULL: skip) and out_logscores [L, n, Hkv], host buffers of writer slot
 * `slot` (from kvz_oracle_engine_host_alloc). positions: ascending, within
 * the prompt's context. On cuda the outputs are complete only after
 * kvz_oracle_engine_ready(slot). */
int kvz_oracle_engine_score(kvz_oracle_engine *e, const kvz_oracle_prompt *p,
                            const size_t *positions, size_t n, float *out_hidden,
                            float *out_logscores, size_t slot, kvz_error *err);
/* Blocks until slot's outputs are complete (no-op on the CPU). */
int kvz_oracle_engine_ready(kvz_oracle_engine *e, size_t slot, kvz_error *err);

#endif
