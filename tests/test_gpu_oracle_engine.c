/* test_gpu_oracle_engine: the oracle engine (kvzip_oracle/oracle_engine.h)
 * on a cuda backend against the same engine on the cpu backend, on a small
 * random model of awkward sizes made on each backend from the same seed
 * (kvz_forward_create_random: kvz_op_fill gives identical weights), wrapped
 * with kvz_oracle_engine_wrap. Three documents on alternating writer slots
 * (0, 1, 0: the third reuses slot 0's staging after its download, so the
 * slot fence matters), each with other sample positions and counts, the
 * outputs in pinned host buffers with guard values around them, read only
 * after kvz_oracle_engine_ready. Per document: log-scores at the sampled
 * positions within atol + 1e-5 |ref| of the cpu engine's, hidden rows within
 * 1e-4 max|x| (fp32 forwards on two backends: not bit-identical), no NaN,
 * guards intact. Run twice: head_dim 8 in float32 (atol 1e-4) and head_dim
 * 16 in bfloat16 (bf16 weights and GEMM inputs, tensor-core attention and
 * score: atol 0.15, hidden within 2e-2 max|x|; the cpu engine stays float32).
 * Skips (77) without a CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "kvz_test.h"
#include "kvzip_oracle/oracle_doc.h"
#include "kvzip_oracle/oracle_engine.h"
#include "model/forward.h"
#include "ops/backend.h"

enum { L = 2, D = 48, H = 6, HKV = 2, PREFIX = 5, DOC = 37, MIDDLE = 7, SUFFIX = 3 };
enum { T = PREFIX + 2 * DOC + MIDDLE + SUFFIX, NMAX = 13, GUARD = 16 };
enum { P0 = PREFIX, P1 = PREFIX + DOC, R0 = P1 + MIDDLE, R1 = R0 + DOC };
static const float SENTINEL = -12345.0f;

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

static void make_prompt(kvz_oracle_prompt *p, int32_t *ids, uint32_t seed)
{
    for (size_t i = 0; i < T; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)((seed >> 8) % 300);
    }
    memcpy(ids + R0, ids + P0, DOC * sizeof *ids); /* the repeat */
    memset(p, 0, sizeof *p);
    p->ids = ids, p->n_ids = T;
    p->context_start = P0, p->context_end = P1, p->repeat_start = R0, p->repeat_end = R1;
}

static kvz_oracle_engine *open_engine(const kvz_model_config *cfg, kvz_backend_kind kind,
                                      kvz_dtype prec)
{
    kvz_error err = {0};
    kvz_forward_options fo = {.device = kind, .precision = prec, .max_tokens = T};
    kvz_forward *f = NULL;
    kvz_oracle_engine *e = NULL;
    kvz_oracle_engine_options eo = {.scoring = KVZ_SCORING_KVZIP_PLUS, .n_slots = 2,
                                    .n_max = NMAX, .with_hidden = 1};
    int rc = kvz_forward_create_random(cfg, 7, &fo, &f, &err);
    rc = rc ? rc : kvz_oracle_engine_wrap(f, &eo, &e, &err);
    KVZ_CHECK_OK(rc, err);
    return rc ? NULL : e;
}

typedef struct slot_bufs {
    float *hidden_raw, *scores_raw; /* with GUARD floats either side */
} slot_bufs;

static int guards_ok(const float *raw, size_t n)
{
    for (size_t i = 0; i < GUARD; i++)
        if (raw[i] != SENTINEL || raw[GUARD + n + i] != SENTINEL)
            return 0;
    return 1;
}

static void sentinel_fill(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = SENTINEL;
}

/* One document's cuda outputs (hid [L, n, D], sc [L, n, Hkv]) against the
 * cpu engine's. */
static void compare_doc(kvz_oracle_engine *cpu, const kvz_oracle_prompt *p, const size_t *pos,
                        size_t n, const float *hid, const float *sc, double atol,
                        double hid_rel, const char *label)
{
    kvz_error err = {0};
    float *ref_hidden = malloc(L * n * D * sizeof(float));
    float *ref_scores = malloc(L * n * HKV * sizeof(float));
    int rc = ref_hidden && ref_scores ? KVZ_OK : KVZ_ENOMEM;
    rc = rc ? rc : kvz_oracle_engine_score(cpu, p, pos, n, ref_hidden, ref_scores, 0, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        size_t nan = 0;
        double max_ref = 0, max_diff = 0;
        for (size_t i = 0; i < L * n * D; i++) {
            nan += isnan(hid[i]) != 0;
            max_ref = fmax(max_ref, fabs(ref_hidden[i]));
            max_diff = fmax(max_diff, fabs((double)hid[i] - ref_hidden[i]));
        }
        for (size_t i = 0; i < L * n * HKV; i++)
            nan += isnan(sc[i]) != 0;
        KVZ_CHECK(nan == 0, "%s: %zu NaN outputs", label, nan);
        KVZ_CHECK(max_diff <= hid_rel * max_ref,
                  "%s: hidden rows max |cuda - cpu| %.3g > %.0e x max|x| %.3g", label, max_diff,
                  hid_rel, max_ref);
        kvz_test_allclose(label, sc, ref_scores, L * n * HKV, atol, 1e-5);
        printf("%s: hidden max |diff| %.3g (max |x| %.3g)\n", label, max_diff, max_ref);
    }
    free(ref_hidden), free(ref_scores);
}

static void run_config(size_t head_dim, kvz_dtype prec)
{
    kvz_model_config cfg;
    make_config(&cfg, head_dim);
    int bf16 = prec == KVZ_BF16;
    double atol = bf16 ? 0.15 : 1e-4, hid_rel = bf16 ? 2e-2 : 1e-4;
    kvz_oracle_engine *gpu = open_engine(&cfg, KVZ_BACKEND_CUDA, prec);
    kvz_oracle_engine *cpu = open_engine(&cfg, KVZ_BACKEND_CPU, KVZ_F32);
    void *ge = gpu;
    slot_bufs sb[2] = {{0}};
    size_t nh = L * NMAX * D + 2 * GUARD, ns = L * NMAX * HKV + 2 * GUARD;
    for (int s = 0; gpu && s < 2; s++) {
        sb[s].hidden_raw = kvz_oracle_engine_host_alloc(ge, nh * sizeof(float));
        sb[s].scores_raw = kvz_oracle_engine_host_alloc(ge, ns * sizeof(float));
        KVZ_CHECK(sb[s].hidden_raw && sb[s].scores_raw, "pinned host buffers");
    }
    float *doc0_hidden = malloc(L * NMAX * D * sizeof(float));
    float *doc0_scores = malloc(L * NMAX * HKV * sizeof(float));
    static const size_t pos_a[NMAX] = {P0,      P0 + 1,  P0 + 2,  P0 + 3,  P0 + 9,
                                       P0 + 10, P0 + 17, P0 + 20, P0 + 28, P0 + 31,
                                       P0 + 33, P0 + 35, P1 - 1};
    static const size_t pos_b[7] = {P0 + 4, P0 + 5, P0 + 6, P0 + 12, P0 + 19, P0 + 27, P0 + 30};
    static const size_t pos_c[3] = {P0 + 7, P0 + 8, P1 - 2};
    const size_t *pos[3] = {pos_a, pos_b, pos_c};
    size_t npos[3] = {NMAX, 7, 3};
    int32_t ids[3][T];
    kvz_oracle_prompt prompt[3];
    for (int d = 0; d < 3; d++)
        make_prompt(&prompt[d], ids[d], 11u + 31u * (uint32_t)d);
    char label[3][96];
    for (int d = 0; d < 3; d++)
        snprintf(label[d], sizeof label[d], "dh %zu %s doc %d (cuda vs cpu engine)", head_dim,
                 bf16 ? "bfloat16" : "float32", d);
    if (gpu && cpu && doc0_hidden && doc0_scores && sb[0].hidden_raw && sb[1].scores_raw) {
        kvz_error err = {0};
        /* queue documents 0 and 1, then 2 into slot 0 before slot 1 is read */
        int rc = KVZ_OK;
        for (int d = 0; d < 3 && rc == KVZ_OK; d++) {
            size_t slot = (size_t)d % 2;
            if (d == 2) { /* the writer reads slot 0 (document 0) first */
                rc = kvz_oracle_engine_ready(gpu, 0, &err);
                KVZ_CHECK_OK(rc, err);
                KVZ_CHECK(guards_ok(sb[0].hidden_raw, L * npos[0] * D) &&
                              guards_ok(sb[0].scores_raw, L * npos[0] * HKV),
                          "doc 0: guard values around the pinned outputs were overwritten");
                memcpy(doc0_hidden, sb[0].hidden_raw + GUARD, L * npos[0] * D * sizeof(float));
                memcpy(doc0_scores, sb[0].scores_raw + GUARD, L * npos[0] * HKV * sizeof(float));
                sentinel_fill(sb[0].hidden_raw, nh), sentinel_fill(sb[0].scores_raw, ns);
            } else {
                sentinel_fill(sb[slot].hidden_raw, nh), sentinel_fill(sb[slot].scores_raw, ns);
            }
            rc = rc ? rc
                    : kvz_oracle_engine_score(gpu, &prompt[d], pos[d], npos[d],
                                              sb[slot].hidden_raw + GUARD,
                                              sb[slot].scores_raw + GUARD, slot, &err);
            KVZ_CHECK_OK(rc, err);
        }
        if (rc == KVZ_OK)
            compare_doc(cpu, &prompt[0], pos[0], npos[0], doc0_hidden, doc0_scores, atol,
                        hid_rel, label[0]);
        for (int d = 1; d < 3 && rc == KVZ_OK; d++) {
            size_t slot = (size_t)d % 2, n = npos[d];
            rc = kvz_oracle_engine_ready(gpu, slot, &err);
            KVZ_CHECK_OK(rc, err);
            KVZ_CHECK(guards_ok(sb[slot].hidden_raw, L * n * D) &&
                          guards_ok(sb[slot].scores_raw, L * n * HKV),
                      "doc %d: guard values around the pinned outputs were overwritten", d);
            if (rc == KVZ_OK)
                compare_doc(cpu, &prompt[d], pos[d], n, sb[slot].hidden_raw + GUARD,
                            sb[slot].scores_raw + GUARD, atol, hid_rel, label[d]);
        }
    }
    for (int s = 0; gpu && s < 2; s++) {
        kvz_oracle_engine_host_free(ge, sb[s].hidden_raw);
        kvz_oracle_engine_host_free(ge, sb[s].scores_raw);
    }
    free(doc0_hidden), free(doc0_scores);
    kvz_oracle_engine_free(gpu);
    kvz_oracle_engine_free(cpu);
}

int main(void)
{
    kvz_error err = {0};
    if (kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) <= 0)
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
    run_config(8, KVZ_F32);
    run_config(16, KVZ_BF16);
    return kvz_test_done();
}
