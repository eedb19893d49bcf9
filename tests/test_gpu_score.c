/* test_gpu_score: kvz_kvzip_score_layer on a cuda backend (the score
 * phases as the cuda backend's ops) against the same function on the cpu
 * backend (host taps) on random layer taps of awkward shapes (GQA groups of
 * 1..5 heads, ranges that split tiles, a head_dim that needs more than 48 KiB
 * of shared memory, a zero value vector giving -inf): log-scores within 1e-4
 * absolute, infinities identical, the output's guard floats untouched, the
 * CPU op's argument errors reproduced. Then the tensor-core variant
 * (compute KVZ_BF16: bf16 q.k) on
 * |P| 37, |R| 53 with GQA groups 1, 2, 4, head_dim 64 and 128, a zero value
 * vector, and a case with several key blocks and repeat slices: within
 * TC_ATOL (see there) of the CPU op, same infinities, no NaN, guards intact,
 * and per-head Spearman rank correlation >= 0.99 over the context keys.
 * Skipped (77) when the build has no CUDA or the machine has no GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "kvz_test_gpu.h"
#include "kvzip_oracle/kvzip_score.h"

/* The tensor-core score rounds q and k to bf16 (relative error <= 2^-9
 * each), so scale q.k moves by at most scale * sum_d |q_d k_d| * 2^-8 (about
 * 0.025 for these taps' uniform +-1.5 q and k at dh 128; typically about
 * 1e-3, the errors being random in sign), and the max over queries by no
 * more than its worst term. Measured under the emulator: worst |a-b|
 * 6.4e-3 over the cases below (logits of order 1); TC_ATOL leaves 3x. */
static const double TC_ATOL = 2e-2;

typedef struct score_case {
    size_t T, D, H, Hkv, dh, p0, p1, r0, r1;
    int zero_value; /* zero the value vector of context key p0 + 1, KV head 0 */
    int tc;         /* the tensor-core path (async entry, tensor_cores = 1) */
} score_case;

/* The host tap's arrays and their device copies. */
typedef struct tap_arrays {
    float *host[5], *dev[5]; /* x, q, k, v, w_o */
    kvz_buf buf[5];          /* the device allocations */
    size_t n[5];
} tap_arrays;

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static void random_fill(float *v, size_t n, float scale)
{
    kvz_test_random_fill(&rng_state, v, n, scale);
}

static int make_tap(const score_case *c, tap_arrays *ta, kvz_layer_tap *host_tap,
                    kvz_layer_tap *dev_tap, kvz_error *err)
{
    const float scales[5] = {1.0f, 1.5f, 1.5f, 1.0f, 0.2f};
    size_t n[5] = {c->T * c->D, c->T * c->H * c->dh, c->T * c->Hkv * c->dh,
                   c->T * c->Hkv * c->dh, c->D * c->H * c->dh};
    int rc = KVZ_OK;
    memset(ta, 0, sizeof *ta);
    for (int a = 0; a < 5 && rc == KVZ_OK; a++) {
        ta->n[a] = n[a];
        ta->host[a] = malloc(n[a] * sizeof(float));
        if (!ta->host[a])
            return kvz_fail(err, KVZ_ENOMEM, "test: out of memory");
        random_fill(ta->host[a], n[a], scales[a]);
        if (a == 3 && c->zero_value)
            memset(ta->host[3] + (c->p0 + 1) * c->Hkv * c->dh, 0, c->dh * sizeof(float));
        rc = kvz_backend_alloc(kvz_test_cuda(), KVZ_F32, n[a], "a test tap array", &ta->buf[a],
                               err);
        ta->dev[a] = kvz_buf_f32(ta->buf[a]);
        if (rc == KVZ_OK)
            rc = kvz_backend_upload(kvz_test_cuda(), ta->dev[a], ta->host[a],
                                    n[a] * sizeof(float), err);
    }
    kvz_layer_tap t = {3, 0, c->T, ta->host[0], ta->host[1], ta->host[2], ta->host[3],
                       ta->host[4], NULL, NULL};
    *host_tap = t;
    kvz_layer_tap d = {3, 0, c->T, ta->dev[0], ta->dev[1], ta->dev[2], ta->dev[3], ta->dev[4],
                       NULL, kvz_test_cuda()};
    *dev_tap = d;
    return rc;
}

static void free_tap(tap_arrays *ta)
{
    for (int a = 0; a < 5; a++) {
        free(ta->host[a]);
        if (ta->buf[a].data)
            kvz_backend_free(kvz_test_cuda(), &ta->buf[a]);
    }
}

/* fp32, or bf16 q.k products on tensor cores; with a workspace of its own
 * every other case (then a sync), else scratch for the one call. */
static int run_gpu(const kvz_layer_tap *dev_tap, const kvz_model_config *cfg,
                   const score_case *c, float *dev_out, kvz_error *err)
{
    static int flip;
    kvz_dtype compute = c->tc ? KVZ_BF16 : KVZ_F32;
    if (flip++ % 2 == 0)
        return kvz_kvzip_score_layer(dev_tap, cfg, c->p0, c->p1, c->r0, c->r1, compute, NULL,
                                     dev_out, err);
    kvz_kvzip_ws ws = {0};
    int rc = kvz_kvzip_score_layer(dev_tap, cfg, c->p0, c->p1, c->r0, c->r1, compute, &ws,
                                   dev_out, err);
    rc = rc ? rc : kvz_backend_sync(dev_tap->backend, err);
    kvz_kvzip_ws_free(&ws);
    return rc;
}

/* Runs the GPU score into a guarded device output; checks the guards. */
static int gpu_score(const kvz_layer_tap *dev_tap, const kvz_model_config *cfg,
                     const score_case *c, float *got, size_t n, kvz_error *err)
{
    kvz_guarded out;
    int rc = kvz_guarded_create(&out, NULL, n);
    if (rc == KVZ_OK)
        rc = run_gpu(dev_tap, cfg, c, out.data, err);
    if (rc == KVZ_OK)
        kvz_guarded_fetch(&out, got, "score output");
    kvz_guarded_free(&out);
    return rc;
}

/* Average ranks of column h of a [n, stride] array (ties share the mean). */
static void column_ranks(const float *v, size_t n, size_t stride, size_t h, double *rank)
{
    for (size_t i = 0; i < n; i++) {
        size_t below = 0, equal = 0;
        for (size_t k = 0; k < n; k++) {
            below += v[k * stride + h] < v[i * stride + h];
            equal += v[k * stride + h] == v[i * stride + h];
        }
        rank[i] = (double)below + 0.5 * (double)(equal - 1);
    }
}

/* Spearman rank correlation of column h of got and ref ([n, stride]). */
static double column_spearman(const float *got, const float *ref, size_t n, size_t stride,
                              size_t h)
{
    double *rg = malloc(n * sizeof *rg), *rr = malloc(n * sizeof *rr), r = -2.0;
    if (rg && rr && n > 1) {
        column_ranks(got, n, stride, h, rg);
        column_ranks(ref, n, stride, h, rr);
        double mean = 0.5 * (double)(n - 1), sxy = 0, sxx = 0, syy = 0;
        for (size_t i = 0; i < n; i++) {
            sxy += (rg[i] - mean) * (rr[i] - mean);
            sxx += (rg[i] - mean) * (rg[i] - mean);
            syy += (rr[i] - mean) * (rr[i] - mean);
        }
        r = sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : (sxx == syy ? 1.0 : 0.0);
    }
    free(rg), free(rr);
    return r;
}

static void check_ranking(const char *what, const float *got, const float *ref, size_t nP,
                          size_t Hkv)
{
    double worst = 2.0, worst_abs = 0.0;
    for (size_t h = 0; h < Hkv; h++) {
        double r = column_spearman(got, ref, nP, Hkv, h);
        worst = r < worst ? r : worst;
        KVZ_CHECK(r >= 0.99, "%s: KV head %zu: Spearman %.5f < 0.99", what, h, r);
    }
    for (size_t i = 0; i < nP * Hkv; i++)
        if (!isinf(ref[i]) && fabs((double)got[i] - ref[i]) > worst_abs)
            worst_abs = fabs((double)got[i] - ref[i]);
    printf("%s (tensor cores): worst |a-b| %.3g, worst Spearman %.5f\n", what, worst_abs, worst);
}

/* Equal infinities count as equal (and are zeroed); then |got-ref| <= atol. */
static void compare_scores(const char *what, float *got, float *ref, size_t n, double atol)
{
    size_t nan = 0, inf_mismatch = 0, n_inf = 0;
    for (size_t i = 0; i < n; i++) {
        nan += isnan(got[i]) != 0;
        if (isinf(ref[i]) || isinf(got[i])) {
            inf_mismatch += got[i] != ref[i];
            n_inf++;
            got[i] = ref[i] = 0.0f;
        }
    }
    KVZ_CHECK(nan == 0, "%s: %zu NaN scores", what, nan);
    KVZ_CHECK(inf_mismatch == 0, "%s: %zu infinities differ", what, inf_mismatch);
    KVZ_CHECK(n_inf < n, "%s: every score infinite", what);
    kvz_test_allclose(what, got, ref, n, atol, 0.0);
}

static void run_case(const score_case *c)
{
    char what[128];
    snprintf(what, sizeof what, "%sscore T%zu D%zu H%zu/%zu dh%zu P[%zu,%zu) R[%zu,%zu)", c->tc ? "tc " : "", c->T,
             c->D, c->H, c->Hkv, c->dh, c->p0, c->p1, c->r0, c->r1);
    kvz_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_heads = c->H, cfg.n_kv_heads = c->Hkv, cfg.head_dim = c->dh, cfg.d_model = c->D;
    size_t n = (c->p1 - c->p0) * c->Hkv;
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    tap_arrays ta;
    memset(&ta, 0, sizeof ta);
    kvz_layer_tap host_tap, dev_tap;
    kvz_error err = {0};
    int rc = ref && got ? make_tap(c, &ta, &host_tap, &dev_tap, &err) : KVZ_ENOMEM;
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK)
        KVZ_CHECK_OK(rc = kvz_kvzip_score_layer(&host_tap, &cfg, c->p0, c->p1, c->r0, c->r1,
                                                KVZ_F32, NULL, ref, &err),
                     err);
    if (rc == KVZ_OK)
        KVZ_CHECK_OK(rc = gpu_score(&dev_tap, &cfg, c, got, n, &err), err);
    if (rc == KVZ_OK && c->zero_value)
        KVZ_CHECK(isinf(got[1 * c->Hkv]) && got[1 * c->Hkv] < 0, "%s: zero value not -inf",
                  what);
    if (rc == KVZ_OK && c->tc)
        check_ranking(what, got, ref, c->p1 - c->p0, c->Hkv);
    if (rc == KVZ_OK)
        compare_scores(what, got, ref, n, c->tc ? TC_ATOL : 1e-4);
    free_tap(&ta);
    free(ref), free(got);
}

static void test_bad_arguments(void)
{
    score_case c = {40, 16, 2, 1, 8, 0, 10, 10, 40, 0, 0};
    kvz_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_heads = 2, cfg.n_kv_heads = 1, cfg.head_dim = 8, cfg.d_model = 16;
    tap_arrays ta;
    kvz_layer_tap host_tap, dev_tap;
    kvz_error err = {0};
    KVZ_CHECK_OK(make_tap(&c, &ta, &host_tap, &dev_tap, &err), err);
    float *out = ta.dev[0]; /* any device buffer; never written on these errors */
    KVZ_CHECK(kvz_kvzip_score_layer(&dev_tap, &cfg, 0, 12, 10, 40, KVZ_F32, NULL, out, &err) ==
                  KVZ_EINVAL && strstr(err.msg, "must end") != NULL,
              "overlapping ranges: %s", err.msg);
    KVZ_CHECK(kvz_kvzip_score_layer(&dev_tap, &cfg, 0, 10, 10, 41, KVZ_F32, NULL, out, &err) ==
                  KVZ_EINVAL && strstr(err.msg, "goes past") != NULL,
              "repeat past T: %s", err.msg);
    KVZ_CHECK(kvz_kvzip_score_layer(&dev_tap, &cfg, 0, 10, 10, 40, KVZ_F32, NULL, NULL, &err) ==
                  KVZ_EINVAL, "NULL output");
    cfg.n_kv_heads = 3;
    KVZ_CHECK(kvz_kvzip_score_layer(&dev_tap, &cfg, 0, 10, 10, 40, KVZ_F32, NULL, out, &err) ==
                  KVZ_EINVAL && strstr(err.msg, "bad head config") != NULL,
              "bad head config: %s", err.msg);
    free_tap(&ta);
}

int main(void)
{
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA))
        kvz_test_skip("built without CUDA");
    kvz_error err = {0};
    if (kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) == 0 || !kvz_test_cuda())
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
    const score_case cases[] = {
        {77, 72, 6, 3, 40, 3, 41, 45, 77, 0, 0},     /* G 2, tiles split everywhere */
        {100, 37, 5, 1, 24, 0, 64, 64, 100, 1, 0},  /* G 5, P two whole tiles, zero v */
        {130, 50, 4, 4, 72, 10, 75, 75, 130, 0, 0}, /* G 1 (MHA) */
        {50, 64, 2, 1, 200, 1, 20, 20, 50, 0, 0},   /* dh 200: > 48 KiB shared memory */
        /* tensor cores: |P| 37, |R| 53 */
        {100, 48, 4, 4, 64, 3, 40, 47, 100, 1, 1},  /* G 1, dh 64, zero v */
        {95, 40, 4, 2, 128, 0, 37, 42, 95, 0, 1},   /* G 2, dh 128: > 48 KiB */
        {98, 32, 8, 2, 64, 5, 42, 45, 98, 1, 1},    /* G 4, dh 64, zero v */
        {98, 32, 8, 2, 128, 5, 42, 45, 98, 0, 1},   /* G 4, dh 128 */
        {340, 24, 2, 1, 32, 5, 135, 140, 340, 0, 1}, /* 3 key blocks, repeat slices */
        {77, 72, 6, 3, 40, 3, 41, 45, 77, 0, 1},    /* dh 40: falls back to fp32 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
    test_bad_arguments();
    kvz_backend_close(kvz_test_cuda());
    return kvz_test_done();
}
