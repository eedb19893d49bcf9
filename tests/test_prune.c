/* test_prune: KVzap's threshold policy (trainer/prune.h) on the pruned
 * forward, against DMSPress's semantics re-derived naively here: after any
 * call that ran the policy, head g of layer l keeps exactly the tokens t
 * with t >= len - window or score_l(x_t)[g] >= tau, where the score is the
 * surrogate on the attention input the token had when it entered (recorded
 * here from the same x the policy sees); with decoding off, calls after the
 * prefill evict nothing and leave the compression as it was. The prefill's
 * x equals the dense forward's (checked through a tap), and the compression
 * is kvpress's mean over layers of evicted / (Hkv x length). A surrogate of
 * the wrong shape is refused with both shapes named. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/forward.h"
#include "../trainer/prune.h"
#include "kvz_test.h"

enum { N = 70, STEPS = 6, WINDOW = 16, MAXT = N + STEPS };

typedef struct recorder {
    kvz_prune_kvzap *policy;
    const kvz_surrogate *s;
    size_t hkv, D;
    float *score; /* [L, MAXT, Hkv] */
    float *x0;    /* [L, N, D] prefill x the policy saw */
} recorder;

static int record_then_prune(void *user, size_t layer, const float *x, size_t n, size_t pos0,
                             kvz_kv_cache *cache, kvz_error *err)
{
    recorder *r = user;
    float *y = malloc(n * r->hkv * sizeof *y);
    int rc = kvz_surrogate_predict(r->s, layer, x, n, y, NULL, err);
    for (size_t t = 0; !rc && t < n; t++)
        memcpy(r->score + (layer * MAXT + pos0 + t) * r->hkv, y + t * r->hkv,
               r->hkv * sizeof *y);
    if (!rc && pos0 == 0)
        memcpy(r->x0 + layer * N * r->D, x, n * r->D * sizeof *x);
    free(y);
    return rc ? rc : kvz_prune_kvzap_layer(r->policy, layer, x, n, pos0, cache, err);
}

typedef struct dense_x {
    size_t D;
    float *x; /* [L, N, D] */
} dense_x;

static int grab_x(const kvz_layer_tap *t, void *user, kvz_error *err)
{
    (void)err;
    dense_x *d = user;
    memcpy(d->x + t->layer * N * d->D, t->x, t->n_tokens * d->D * sizeof(float));
    return KVZ_OK;
}

/* The naive expectation after a call ending at len, with the policy's
 * decisions frozen at `decided_len` (the last length the policy ran at). */
static void check_kept(const recorder *r, kvz_kv_cache *c, size_t L, size_t len,
                       size_t decided_len, float tau, const char *what, double *comp)
{
    size_t bad = 0;
    double sum = 0.0;
    int32_t *want = malloc(MAXT * sizeof *want);
    for (size_t l = 0; l < L; l++) {
        size_t evicted = 0;
        for (size_t g = 0; g < r->hkv; g++) {
            size_t m = 0;
            for (size_t t = 0; t < len; t++) {
                int decided = t + WINDOW < decided_len;
                if (decided && r->score[(l * MAXT + t) * r->hkv + g] < tau)
                    evicted++;
                else
                    want[m++] = (int32_t)t;
            }
            size_t got = kvz_kv_cache_count(c, l, g);
            const int32_t *p = kvz_kv_cache_positions(c, l, g);
            if (got != m || memcmp(p, want, m * sizeof *want)) {
                if (bad++ < 3)
                    printf("  %s: layer %zu head %zu keeps %zu positions, want %zu\n", what, l,
                           g, got, m);
            }
        }
        sum += (double)evicted / (double)(r->hkv * decided_len);
    }
    KVZ_CHECK(bad == 0, "%s: %zu (layer, head) kept sets differ", what, bad);
    *comp = sum / (double)L;
    free(want);
}

static void run_case(const kvz_checkpoint *ck, const kvz_surrogate *s, float tau, int decoding,
                     const float *dense_x0)
{
    const kvz_model_config *cfg = kvz_checkpoint_config(ck);
    size_t L = cfg->n_layers, D = cfg->d_model, hkv = cfg->n_kv_heads, V = cfg->vocab_size;
    kvz_error err = {0};
    recorder r = {NULL, s, hkv, D, calloc(L * MAXT * hkv, sizeof(float)),
                  calloc(L * N * D, sizeof(float))};
    kvz_prune_kvzap_options po = {tau, WINDOW, decoding};
    int rc = kvz_prune_kvzap_create(s, L, D, hkv, &po, &r.policy, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_forward_options opt = {.n_threads = 2, .prune = record_then_prune, .prune_user = &r};
    kvz_forward *f = NULL;
    rc = kvz_forward_create(ck, &opt, &f, &err);
    KVZ_CHECK_OK(rc, err);
    int32_t ids[MAXT];
    for (size_t i = 0; i < MAXT; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *logits = malloc(V * sizeof *logits);
    rc = kvz_forward_run(f, ids, N, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
    KVZ_CHECK_OK(rc, err);
    char what[96];
    snprintf(what, sizeof what, "tau %g decoding %d: prefill x vs the dense forward's", tau,
             decoding);
    kvz_test_allclose(what, r.x0, dense_x0, L * N * D, 1e-6, 1e-5);
    kvz_kv_cache *c = kvz_forward_kv_cache(f);
    double comp = 0.0, comp_prefill = 0.0;
    snprintf(what, sizeof what, "tau %g decoding %d: after the prefill", tau, decoding);
    check_kept(&r, c, L, N, N, tau, what, &comp_prefill);
    KVZ_CHECK(fabs(kvz_prune_kvzap_compression(r.policy) - comp_prefill) < 1e-12,
              "%s: compression %.6f, want %.6f", what, kvz_prune_kvzap_compression(r.policy),
              comp_prefill);
    for (size_t s_ = 0; s_ < STEPS; s_++) {
        int32_t next = (int32_t)kvz_argmax(logits, V);
        rc = kvz_forward_run(f, &next, 1, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
        KVZ_CHECK_OK(rc, err);
        size_t len = N + s_ + 1;
        snprintf(what, sizeof what, "tau %g decoding %d: after step %zu", tau, decoding, s_);
        check_kept(&r, c, L, len, decoding ? len : N, tau, what, &comp);
        double want = decoding ? comp : comp_prefill;
        KVZ_CHECK(fabs(kvz_prune_kvzap_compression(r.policy) - want) < 1e-12,
                  "%s: compression %.6f, want %.6f", what, kvz_prune_kvzap_compression(r.policy),
                  want);
    }
    printf("tau %g decoding %d: compression %.4f after the prefill, %.4f at the end\n", tau,
           decoding, comp_prefill, kvz_prune_kvzap_compression(r.policy));
    KVZ_CHECK(comp_prefill > 0.05, "the case evicts something (%.4f)", comp_prefill);
    free(logits);
    kvz_forward_free(f);
    kvz_prune_kvzap_free(r.policy);
    free(r.score), free(r.x0);
}

int main(void)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    int rc = kvz_checkpoint_open(kvz_test_fixture("tiny/qwen3_f16"), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    const kvz_model_config *cfg = kvz_checkpoint_config(ck);
    size_t L = cfg->n_layers, D = cfg->d_model, hkv = cfg->n_kv_heads, V = cfg->vocab_size;
    kvz_surrogate *s = NULL;
    rc = kvz_surrogate_create(KVZ_SURROGATE_KIND_LINEAR, L, D, 0, hkv, &s, &err);
    KVZ_CHECK_OK(rc, err);
    uint64_t st = 12345;
    for (size_t i = 0; i < L * s->layer_stride; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        s->params[i] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.5) * 0.5f;
    }
    /* the dense forward's prefill x, through a tap */
    dense_x dx = {D, calloc(L * N * D, sizeof(float))};
    kvz_forward_options opt = {.n_threads = 2};
    kvz_forward *f = NULL;
    rc = kvz_forward_create(ck, &opt, &f, &err);
    KVZ_CHECK_OK(rc, err);
    int32_t ids[N];
    for (size_t i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % V);
    rc = kvz_forward_run(f, ids, N, grab_x, &dx, KVZ_LOGITS_NONE, NULL, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_forward_free(f);
    for (int decoding = 0; decoding < 2; decoding++) {
        run_case(ck, s, 0.0f, decoding, dx.x);
        run_case(ck, s, -0.3f, decoding, dx.x);
    }
    /* a surrogate for another model */
    kvz_prune_kvzap *p = NULL;
    kvz_prune_kvzap_options po = {0.0f, 0, 0};
    rc = kvz_prune_kvzap_create(s, L + 1, D, hkv, &po, &p, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "the model has"), "wrong shape: %s", err.msg);
    free(dx.x);
    kvz_surrogate_free(s);
    kvz_checkpoint_close(ck);
    return kvz_test_done();
}
