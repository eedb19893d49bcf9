/* test_gpu_oracle_pipeline: the CUDA oracle's device plumbing
 * (kernels/kvz_cuda_pipeline.h) on a small random model with awkward sizes
 * (kvz_forward_create_random on the cuda backend): per layer the pipeline's stream-ordered
 * score, which uses the attention's lse from the tap, against the
 * synchronous scorer with its own log-sum-exp pass (kvz_cuda_kvzip_score_layer
 * with tap->lse = NULL), and the gathered hidden rows against the tap's x,
 * through the async copy into pinned host buffers with guard values around
 * them; two documents on alternating slots, the second with other positions.
 * Tolerances: log-scores |a-b| <= 1e-4 + 1e-5 |ref| (fp32 vs double lse);
 * hidden rows exact. Run twice: head_dim 8 with the fp32 scorer, and
 * head_dim 16 with the pipeline's tensor_cores flag (bf16 q.k, the oracle's
 * BF16 mode) against the fp32 synchronous scorer, log-scores within 2e-2
 * (test_gpu_score.c's TC_ATOL, measured there). Skips (77) without a CUDA
 * device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvz_cuda.h"
#include "kernels/kvz_cuda_ops.h"
#include "kernels/kvz_cuda_pipeline.h"
#include "kvz_test.h"
#include "model/forward.h"
#include "ops/backend.h"

enum { L = 2, D = 48, H = 6, HKV = 2, PREFIX = 5, DOC = 37, MIDDLE = 7, SUFFIX = 3 };
enum { T = PREFIX + 2 * DOC + MIDDLE + SUFFIX, NMAX = 13, GUARD = 16 };
enum { P0 = PREFIX, P1 = PREFIX + DOC, R0 = P1 + MIDDLE, R1 = R0 + DOC };
static const float SENTINEL = -12345.0f;

typedef struct ctx {
    kvz_cuda_pipeline *pipe;
    const kvz_model_config *cfg;
    float *d_ref;                /* [DOC, HKV] device */
    float ref_scores[L][DOC * HKV];
    float ref_x[L][T * D];
    int fails;
    double atol; /* log-score tolerance: fp32, or bf16 q.k (tensor cores) */
} ctx;

static int tap_fn(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    ctx *c = user;
    int rc = kvz_cuda_pipeline_layer(c->pipe, tap, c->cfg, P0, P1, R0, R1, err);
    if (rc)
        return rc;
    kvz_layer_tap own = *tap;
    own.lse = NULL; /* the scorer's own causal log-sum-exp pass */
    rc = kvz_cuda_kvzip_score_layer(&own, c->cfg, P0, P1, R0, R1, c->d_ref, err);
    rc = rc ? rc
            : kvz_cuda_download(c->ref_scores[tap->layer], c->d_ref, sizeof c->ref_scores[0],
                                err);
    return rc ? rc : kvz_cuda_download(c->ref_x[tap->layer], tap->x, sizeof c->ref_x[0], err);
}

static void make_config(kvz_model_config *m, size_t head_dim)
{
    memset(m, 0, sizeof *m);
    m->arch = KVZ_ARCH_QWEN3;
    snprintf(m->architecture, sizeof m->architecture, "Qwen3ForCausalLM");
    m->n_layers = L, m->d_model = D, m->n_heads = H, m->n_kv_heads = HKV, m->head_dim = head_dim;
    m->head_dim_given = 1, m->d_ff = 80, m->vocab_size = 300, m->max_position_embeddings = 4096;
    m->rms_norm_eps = 1e-6, m->rope_theta = 1e6, m->qk_norm = 1, m->bos_token_id = -1;
    snprintf(m->dtype, sizeof m->dtype, "float32");
}

typedef struct host_bufs {
    float *hidden_raw, *scores_raw; /* with GUARD floats either side */
} host_bufs;

static int guards_ok(const float *raw, size_t n)
{
    for (size_t i = 0; i < GUARD; i++)
        if (raw[i] != SENTINEL || raw[GUARD + n + i] != SENTINEL)
            return 0;
    return 1;
}

static void check_doc(ctx *c, const host_bufs *hb, const size_t *pos, size_t n, int doc)
{
    const float *hid = hb->hidden_raw + GUARD, *sc = hb->scores_raw + GUARD;
    KVZ_CHECK(guards_ok(hb->hidden_raw, L * n * D) && guards_ok(hb->scores_raw, L * n * HKV),
              "doc %d: guard values around the pinned outputs were overwritten", doc);
    float *want = malloc(L * n * HKV * sizeof *want);
    int hidden_same = 1;
    size_t nan = 0;
    for (size_t l = 0; l < L; l++)
        for (size_t s = 0; s < n; s++) {
            for (size_t k = 0; k < HKV; k++)
                want[(l * n + s) * HKV + k] = c->ref_scores[l][(pos[s] - P0) * HKV + k];
            for (size_t d = 0; d < D; d++) {
                float v = hid[(l * n + s) * D + d];
                hidden_same &= v == c->ref_x[l][pos[s] * D + d];
                nan += isnan(v) != 0;
            }
        }
    for (size_t i = 0; i < L * n * HKV; i++)
        nan += isnan(sc[i]) != 0;
    KVZ_CHECK(nan == 0, "doc %d: %zu NaN outputs", doc, nan);
    KVZ_CHECK(hidden_same, "doc %d: gathered hidden rows differ from the tap's x", doc);
    char what[64];
    snprintf(what, sizeof what, "doc %d log-scores (tap lse vs own lse)", doc);
    kvz_test_allclose(what, sc, want, L * n * HKV, c->atol, 1e-5);
    free(want);
}

static int run_doc(kvz_forward *f, ctx *c, host_bufs *hb, size_t slot, const size_t *pos,
                   size_t n, uint32_t seed, kvz_error *err)
{
    int32_t ids[T];
    uint32_t st = seed;
    for (size_t i = 0; i < T; i++)
        st = st * 1664525u + 1013904223u, ids[i] = (int32_t)((st >> 8) % 300);
    memcpy(ids + R0, ids + P0, DOC * sizeof(int32_t));
    for (size_t i = 0; i < L * NMAX * D + 2 * GUARD; i++)
        hb->hidden_raw[i] = SENTINEL;
    for (size_t i = 0; i < L * NMAX * HKV + 2 * GUARD; i++)
        hb->scores_raw[i] = SENTINEL;
    int rc = kvz_cuda_pipeline_begin(c->pipe, slot, pos, n, P0, DOC, err);
    kvz_forward_reset(f);
    rc = rc ? rc : kvz_forward_run(f, ids, T, tap_fn, c, 0, NULL, err);
    rc = rc ? rc
            : kvz_cuda_pipeline_copy_out(c->pipe, slot, hb->hidden_raw + GUARD,
                                         hb->scores_raw + GUARD, err);
    return rc ? rc : kvz_cuda_pipeline_wait(c->pipe, slot, err);
}

/* Two documents through one pipeline (tensor_cores: the shape's flag). */
static void run_config(size_t head_dim, int tensor_cores)
{
    kvz_error err = {0};
    kvz_model_config cfg;
    make_config(&cfg, head_dim);
    kvz_forward_options fo = {0};
    fo.device = KVZ_BACKEND_CUDA, fo.precision = KVZ_F32, fo.max_tokens = T;
    kvz_forward *f = NULL;
    ctx *c = calloc(1, sizeof *c);
    host_bufs hb[2] = {{0}};
    if (c)
        c->atol = tensor_cores ? 2e-2 : 1e-4;
    int rc = kvz_forward_create_random(&cfg, 7, &fo, &f, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_cuda_pipeline_shape sh = {2, NMAX, L, D, HKV, 1, tensor_cores};
    rc = rc ? rc : kvz_cuda_pipeline_create(kvz_backend_stream(kvz_forward_backend(f)), &sh,
                                                &c->pipe, &err);
    rc = rc ? rc : kvz_cuda_alloc((void **)&c->d_ref, DOC * HKV * sizeof(float), &err);
    for (int s = 0; rc == KVZ_OK && s < 2; s++) {
        hb[s].hidden_raw = kvz_cuda_pinned_alloc((L * NMAX * D + 2 * GUARD) * sizeof(float));
        hb[s].scores_raw = kvz_cuda_pinned_alloc((L * NMAX * HKV + 2 * GUARD) * sizeof(float));
        if (!hb[s].hidden_raw || !hb[s].scores_raw)
            rc = kvz_fail(&err, KVZ_ENOMEM, "pinned host memory");
    }
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        c->cfg = kvz_forward_config(f);
        size_t pos_a[NMAX] = {P0, P0 + 1, P0 + 2, P0 + 3, P0 + 9, P0 + 10, P0 + 17,
                              P0 + 20, P0 + 28, P0 + 31, P0 + 33, P0 + 35, P1 - 1};
        size_t pos_b[7] = {P0 + 4, P0 + 5, P0 + 6, P0 + 12, P0 + 19, P0 + 27, P0 + 30};
        rc = run_doc(f, c, &hb[0], 0, pos_a, NMAX, 11u, &err);
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK)
            check_doc(c, &hb[0], pos_a, NMAX, 0);
        rc = run_doc(f, c, &hb[1], 1, pos_b, 7, 99u, &err);
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK)
            check_doc(c, &hb[1], pos_b, 7, 1);
        size_t bad = P1;
        KVZ_CHECK(kvz_cuda_pipeline_begin(c->pipe, 0, &bad, 1, P0, DOC, &err) == KVZ_EINVAL,
                  "a position outside the context was accepted");
        KVZ_CHECK(kvz_cuda_pipeline_begin(c->pipe, 2, pos_b, 7, P0, DOC, &err) == KVZ_EINVAL,
                  "slot 2 of 2 was accepted");
        KVZ_CHECK_OK(kvz_cuda_pipeline_begin(c->pipe, 1, pos_b, 7, P0, DOC, &err), err);
        KVZ_CHECK(kvz_cuda_pipeline_copy_out(c->pipe, 0, hb[0].hidden_raw + GUARD,
                                             hb[0].scores_raw + GUARD, &err) == KVZ_EINVAL,
                  "a copy out of another slot than the document's was accepted");
    }
    kvz_cuda_pipeline_free(c->pipe);
    kvz_cuda_free(c->d_ref);
    for (int s = 0; s < 2; s++)
        kvz_cuda_pinned_free(hb[s].hidden_raw), kvz_cuda_pinned_free(hb[s].scores_raw);
    kvz_forward_free(f);
    free(c);
}

int main(void)
{
    kvz_error err = {0};
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA) || kvz_cuda_device_count(&err) <= 0)
        kvz_test_skip("no CUDA device (or a build without CUDA)");
    run_config(8, 0);
    run_config(16, 1);
    kvz_cuda_ops_release();
    return kvz_test_done();
}
