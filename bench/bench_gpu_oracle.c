/* bench_gpu_oracle: the kvzap side of bench/bench_gpu_oracle.sh (not a test).
 * A Qwen3-8B-shaped model with random weights made on the device
 * (kvz_forward_create_random on the cuda backend: L=36, D=4096, H=32, Hkv=8, dh=128,
 * d_ff=12288, vocab 151936, rope theta 1e6, qk_norm, eps 1e-6), synthetic
 * repeat prompts [prefix 16][doc][middle 24][the same doc][suffix 6] of
 * random ids, and per document the oracle engine itself
 * (kvzip_oracle/oracle_engine.h, kvz_oracle_engine_wrap around the random
 * forward): one forward pass whose tap scores every layer on the device
 * (with the attention's lse) and gathers the sampled rows, then the async
 * download into pinned host buffers of two alternating slots, waited for as
 * the writer thread would. No HDF5: the store's append is not timed (the
 * writer thread overlaps it).
 * Usage: bench_gpu_oracle [--tiny] [--docs N] [--doc-tokens T] [--samples S]
 *                         [--precision bfloat16|float32]
 * Prints one JSON line. --tiny: L=2, D=64, H=4, Hkv=2, dh=16, d_ff=128,
 * vocab 512, docs of 40 tokens (for the CPU emulator). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "kvzip_oracle/oracle_doc.h"
#include "kvzip_oracle/oracle_engine.h"
#include "model/forward.h"
#include "ops/backend.h"

enum { PREFIX = 16, MIDDLE = 24, SUFFIX = 6 };

typedef struct bench_args {
    int tiny, bf16;
    size_t docs, doc_tokens, samples;
} bench_args;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse(int argc, char **argv, bench_args *a)
{
    *a = (bench_args){0, 1, 4, 1000, 500};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "--tiny"))
            a->tiny = 1, a->doc_tokens = 40, a->samples = 16, a->docs = 2;
        else if (!strcmp(s, "--docs") && v)
            a->docs = strtoul(v, NULL, 10), i++;
        else if (!strcmp(s, "--doc-tokens") && v)
            a->doc_tokens = strtoul(v, NULL, 10), i++;
        else if (!strcmp(s, "--samples") && v)
            a->samples = strtoul(v, NULL, 10), i++;
        else if (!strcmp(s, "--precision") && v)
            a->bf16 = strcmp(v, "float32") != 0, i++;
        else
            return fprintf(stderr, "bench_gpu_oracle: bad argument %s\n", s), 2;
    }
    if (a->docs == 0 || a->doc_tokens < 8 || a->samples == 0)
        return fprintf(stderr, "bench_gpu_oracle: need docs >= 1, doc-tokens >= 8\n"), 2;
    return 0;
}

static void model_shape(int tiny, kvz_model_config *c)
{
    memset(c, 0, sizeof *c);
    c->arch = KVZ_ARCH_QWEN3;
    snprintf(c->architecture, sizeof c->architecture, "Qwen3ForCausalLM");
    size_t big[] = {36, 4096, 32, 8, 128, 12288, 151936};
    size_t small[] = {2, 64, 4, 2, 16, 128, 512};
    const size_t *s = tiny ? small : big;
    c->n_layers = s[0], c->d_model = s[1], c->n_heads = s[2], c->n_kv_heads = s[3];
    c->head_dim = s[4], c->d_ff = s[5], c->vocab_size = s[6];
    c->head_dim_given = 1;
    c->max_position_embeddings = 40960;
    c->rms_norm_eps = 1e-6, c->rope_theta = 1e6;
    c->qk_norm = 1;
    c->bos_token_id = -1;
    snprintf(c->dtype, sizeof c->dtype, "bfloat16");
}

/* The synthetic repeat prompt of document d and its ranges. */
static void make_prompt(const bench_args *a, const kvz_model_config *c, size_t d,
                        kvz_oracle_prompt *p)
{
    size_t T = PREFIX + 2 * a->doc_tokens + MIDDLE + SUFFIX;
    uint64_t st = 0x9E3779B97F4A7C15ull * (d + 1);
    for (size_t i = 0; i < T; i++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        p->ids[i] = (int32_t)(st % c->vocab_size);
    }
    p->n_ids = T;
    p->context_start = PREFIX, p->context_end = PREFIX + a->doc_tokens;
    p->repeat_start = p->context_end + MIDDLE, p->repeat_end = p->repeat_start + a->doc_tokens;
    memcpy(p->ids + p->repeat_start, p->ids + p->context_start, a->doc_tokens * sizeof(int32_t));
}

typedef struct bench {
    bench_args a;
    kvz_model_config cfg;
    kvz_forward *fwd; /* owned by the engine */
    kvz_oracle_engine *engine;
    kvz_backend *be;
    float *host_hidden[2], *host_scores[2];
    kvz_oracle_prompt prompt;
    size_t *positions;
} bench;

/* One document as the oracle engine runs it; slot alternates 0/1 and is
 * waited for before reuse (the writer thread's role). */
static int run_doc(bench *b, size_t d, int *used, kvz_error *err)
{
    size_t slot = d % 2;
    int rc = used[slot] ? kvz_oracle_engine_ready(b->engine, slot, err) : KVZ_OK;
    make_prompt(&b->a, &b->cfg, d, &b->prompt);
    kvz_oracle_prompt *p = &b->prompt;
    size_t n = kvz_oracle_sample_positions(p->context_start, p->context_end, b->a.samples, 1, d,
                                           b->positions);
    rc = rc ? rc
            : kvz_oracle_engine_score(b->engine, p, b->positions, n, b->host_hidden[slot],
                                      b->host_scores[slot], slot, err);
    used[slot] = 1;
    return rc;
}

static int setup(bench *b, kvz_error *err)
{
    size_t T = PREFIX + 2 * b->a.doc_tokens + MIDDLE + SUFFIX, L = b->cfg.n_layers;
    kvz_forward_options fo = {0};
    fo.device = KVZ_BACKEND_CUDA, fo.precision = b->a.bf16 ? KVZ_BF16 : KVZ_F32, fo.max_tokens = T;
    int rc = kvz_forward_create_random(&b->cfg, 1234, &fo, &b->fwd, err);
    kvz_oracle_engine_options eo = {.scoring = KVZ_SCORING_KVZIP_PLUS, .n_slots = 2,
                                    .n_max = b->a.samples, .with_hidden = 1};
    rc = rc ? rc : kvz_oracle_engine_wrap(b->fwd, &eo, &b->engine, err);
    if (rc)
        b->fwd = NULL; /* freed by the engine */
    else
        b->be = kvz_forward_backend(b->fwd);
    for (int s = 0; rc == KVZ_OK && s < 2; s++) {
        b->host_hidden[s] = kvz_backend_host_alloc(b->be, L * b->a.samples * b->cfg.d_model * 4);
        b->host_scores[s] = kvz_backend_host_alloc(b->be, L * b->a.samples * b->cfg.n_kv_heads * 4);
        if (!b->host_hidden[s] || !b->host_scores[s])
            rc = kvz_fail(err, KVZ_ENOMEM, "pinned host memory");
    }
    b->prompt.ids = malloc(T * sizeof(int32_t));
    b->positions = malloc(b->a.samples * sizeof(size_t));
    if (rc == KVZ_OK && (!b->prompt.ids || !b->positions))
        rc = kvz_fail(err, KVZ_ENOMEM, "out of memory");
    return rc;
}

static void teardown(bench *b)
{
    for (int s = 0; b->be && s < 2; s++)
        kvz_backend_host_free(b->be, b->host_hidden[s]),
            kvz_backend_host_free(b->be, b->host_scores[s]);
    kvz_oracle_engine_free(b->engine); /* and the forward */
    free(b->prompt.ids);
    free(b->positions);
}

/* Forward FLOPs of one T-token pass (no logits): 2 x non-embedding matmul
 * parameters x T + per layer 2 x 2 x H x dh x T(T+1)/2 (QK^T and AV, causal). */
static double forward_flops(const kvz_model_config *c, size_t T)
{
    double D = (double)c->d_model, qd = (double)(c->n_heads * c->head_dim);
    double kvd = (double)(c->n_kv_heads * c->head_dim), ff = (double)c->d_ff;
    double per_layer = D * qd + 2 * D * kvd + qd * D + 3 * D * ff;
    double t = (double)T;
    return (double)c->n_layers * (2 * per_layer * t + 4 * qd * t * (t + 1) / 2);
}

/* Dense bf16 peak (TFLOP/s) by device name; 0 when unknown. */
static double peak_tflops(const char *name, const char **which)
{
    if (strstr(name, "H100") && strstr(name, "PCIe"))
        return *which = "H100 PCIe dense bf16 756", 756.0;
    if (strstr(name, "H100") || strstr(name, "H200"))
        return *which = "H100 SXM / H200 dense bf16 989.4", 989.4;
    return *which = "unknown device", 0.0;
}

/* Forward passes alone (no tap), for the forward MFU. */
static int time_forward(bench *b, size_t reps, double *seconds, kvz_error *err)
{
    kvz_oracle_prompt *p = &b->prompt;
    int rc = kvz_backend_sync(kvz_forward_backend(b->fwd), err);
    double t0 = now_s();
    for (size_t r = 0; rc == KVZ_OK && r < reps; r++) {
        kvz_forward_reset(b->fwd);
        rc = kvz_forward_run(b->fwd, p->ids, p->n_ids, NULL, NULL, 0, NULL, err);
    }
    rc = rc ? rc : kvz_backend_sync(kvz_forward_backend(b->fwd), err);
    *seconds = (now_s() - t0) / (double)reps;
    return rc;
}

static int run(bench *b, kvz_error *err)
{
    int used[2] = {0, 0};
    double t_setup = now_s();
    int rc = setup(b, err);
    t_setup = now_s() - t_setup;
    rc = rc ? rc : run_doc(b, 0, used, err); /* warm-up */
    rc = rc ? rc : kvz_backend_sync(kvz_forward_backend(b->fwd), err);
    double t0 = now_s();
    for (size_t d = 1; rc == KVZ_OK && d <= b->a.docs; d++)
        rc = run_doc(b, d, used, err);
    for (size_t s = 0; rc == KVZ_OK && s < 2; s++)
        rc = used[s] ? kvz_oracle_engine_ready(b->engine, s, err) : KVZ_OK;
    double wall = now_s() - t0, fwd_s = 0;
    rc = rc ? rc : time_forward(b, b->a.docs, &fwd_s, err);
    if (rc != KVZ_OK)
        return rc;
    kvz_device_info info;
    memset(&info, 0, sizeof info);
    kvz_backend_device_info(KVZ_BACKEND_CUDA, 0, &info, NULL);
    const char *which = NULL;
    double peak = peak_tflops(info.name, &which) * 1e12;
    size_t T = b->prompt.n_ids;
    double flops = forward_flops(&b->cfg, T), per_doc = wall / (double)b->a.docs;
    printf("{\"device\": \"%s\", \"peak\": \"%s\", \"precision\": \"%s\", \"layers\": %zu, "
           "\"d_model\": %zu, \"docs\": %zu, \"seq_tokens\": %zu, \"samples\": %zu, "
           "\"setup_s\": %.2f, \"s_per_doc\": %.4f, \"tokens_per_s\": %.1f, "
           "\"forward_s\": %.4f, \"forward_tflops\": %.1f, \"forward_mfu\": %.4f, "
           "\"oracle_mfu\": %.4f, \"peak_gpu_bytes\": %zu, \"hdf5\": false}\n",
           info.name, which, b->a.bf16 ? "bfloat16" : "float32", b->cfg.n_layers,
           b->cfg.d_model, b->a.docs, T, b->a.samples, t_setup, per_doc, (double)T / per_doc,
           fwd_s, flops / fwd_s / 1e12, peak > 0 ? flops / fwd_s / peak : 0.0,
           peak > 0 ? flops / per_doc / peak : 0.0, kvz_forward_peak_device_bytes(b->fwd));
    return KVZ_OK;
}

int main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    if (parse(argc, argv, &b.a))
        return 2;
    model_shape(b.a.tiny, &b.cfg);
    if (b.a.samples > b.a.doc_tokens)
        b.a.samples = b.a.doc_tokens;
    kvz_error err = {0};
    int rc = run(&b, &err);
    teardown(&b);
    if (rc != KVZ_OK) {
        fprintf(stderr, "bench_gpu_oracle: %s\n", err.msg);
        return 1;
    }
    return 0;
}
