/* train_synth_store: writes a small synthetic oracle dataset with the store
 * (kvzip_oracle/oracle_store.h) for the trainer's streaming and GPU tests:
 * L layers, D dims, Hkv heads, n_docs documents of per_doc samples (the first
 * n_test_docs are test documents); y = a fixed smooth function of x (learnable)
 * plus small noise; one NaN log-score at (nan_layer, nan_row) when
 * nan_row >= 0. Header-only (static functions). */
#ifndef KVZ_TRAIN_SYNTH_STORE_H
#define KVZ_TRAIN_SYNTH_STORE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/config.h"
#include "data/corpus.h"
#include "kvz_test.h"
#include "kvzip_oracle/oracle_store.h"

typedef struct synth_store {
    size_t L, D, H, n_docs, per_doc, n_test_docs;
    int hidden_dtype, store_hidden, ridge_stats;
    long nan_layer, nan_row; /* nan_row < 0: none */
    uint64_t seed;
} synth_store;

static double synth_urand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (double)(*s >> 11) * 0x1.0p-53;
}

static float synth_target(size_t l, size_t h, const float *x, size_t D, double noise)
{
    double y = -6.0 - 0.5 * (double)l + 0.5 * (double)h;
    for (size_t k = 0; k < D; k++)
        y += 0.3 * sin((double)(k + 3 * h + 7 * l)) * x[k];
    y += 0.5 * tanh(x[0] * x[D > 1 ? 1 : 0]);
    return (float)(y + noise);
}

static void synth_doc(const synth_store *c, uint64_t *rng, size_t d, float *hidden, float *scores)
{
    for (size_t i = 0; i < c->per_doc; i++)
        for (size_t l = 0; l < c->L; l++) {
            float *x = hidden + (l * c->per_doc + i) * c->D;
            for (size_t k = 0; k < c->D; k++)
                x[k] = (float)(2.0 * synth_urand(rng) - 1.0 + 0.1 * (double)k / (double)c->D);
            for (size_t h = 0; h < c->H; h++)
                scores[(l * c->per_doc + i) * c->H + h] =
                    synth_target(l, h, x, c->D, 0.02 * (synth_urand(rng) - 0.5));
            size_t row = d * c->per_doc + i;
            if (c->nan_row >= 0 && (size_t)c->nan_row == row && (size_t)c->nan_layer == l)
                scores[(l * c->per_doc + i) * c->H] = NAN;
        }
}

static int synth_store_write(const synth_store *c, const char *path)
{
    kvz_oracle_meta m = {0};
    m.model_path = "synthetic";
    m.model_architecture = "llama";
    m.model_config_json = "{}";
    m.n_tokens = c->per_doc;
    m.max_doc_tokens = 1000000;
    m.train_docs_per_subset = c->n_docs - c->n_test_docs;
    m.test_docs_per_subset = c->n_test_docs;
    m.hidden_dtype = c->hidden_dtype;
    m.store_hidden = c->store_hidden;
    m.ridge_stats = c->ridge_stats;
    m.n_layers = c->L;
    m.d_model = c->D;
    m.n_kv_heads = c->H;
    m.n_documents_planned = c->n_docs;
    kvz_oracle_run *run = NULL;
    size_t done = 0;
    kvz_error err = {0};
    int rc = kvz_oracle_run_open(path, &m, 4, 0, 1, &run, &done, &err);
    KVZ_CHECK_OK(rc, err);
    float *hidden = malloc(c->L * c->per_doc * c->D * sizeof(float));
    float *scores = malloc(c->L * c->per_doc * c->H * sizeof(float));
    int32_t *tok = malloc(c->per_doc * sizeof(int32_t)), *pos = malloc(c->per_doc * sizeof(int32_t));
    uint64_t rng = c->seed ? c->seed : 88172645463325252ull;
    for (size_t d = 0; rc == KVZ_OK && d < c->n_docs; d++) {
        for (size_t i = 0; i < c->per_doc; i++) {
            tok[i] = (int32_t)(d * 100 + i);
            pos[i] = (int32_t)(5 + i);
        }
        synth_doc(c, &rng, d, hidden, scores);
        char src[32];
        snprintf(src, sizeof src, "syn.jsonl:%zu", d + 1);
        kvz_oracle_doc_record rec = {src, "syn", d < c->n_test_docs ? KVZ_SPLIT_TEST : KVZ_SPLIT_TRAIN,
                                     100, 100 + c->per_doc * 3, 5, 5 + c->per_doc, 120, 160};
        kvz_oracle_doc_samples s = {c->per_doc, tok, pos, hidden, scores};
        rc = kvz_oracle_run_append(run, &rec, &s, &err);
        KVZ_CHECK_OK(rc, err);
    }
    if (rc == KVZ_OK) {
        rc = kvz_oracle_run_finish(run, &err);
        KVZ_CHECK_OK(rc, err);
    }
    kvz_oracle_run_close(run);
    free(hidden);
    free(scores);
    free(tok);
    free(pos);
    return rc;
}

#endif
