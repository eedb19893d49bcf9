/* test_kvzip_score: kvzip_oracle/kvzip_score against a plain double-precision
 * reference of spec 1.3 (full softmax rows, explicit W_O^g v_i products) on
 * random taps with awkward sizes and on every layer of the tiny Qwen3
 * checkpoint through kvz_forward_run's tap; plus the argument errors. The
 * random taps run with 1 and 16 threads (one or several query chunks per head).
 * Tolerance on the log-scores: |got - ref| <= 1e-5 + 1e-5 * |ref|. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kvzip_oracle/kvzip_score.h"
#include "../model/forward.h"
#include "../ops/ops.h"
#include "kvz_test.h"

#define ATOL 1e-5
#define RTOL 1e-5

static double worst_err = 0.0;

/* ||W_O^g v_i^h||, written out. */
static double ref_wo_norm(const kvz_layer_tap *t, const kvz_model_config *c, size_t g,
                          size_t h, size_t i)
{
    size_t H = c->n_heads, Hkv = c->n_kv_heads, dh = c->head_dim, D = c->d_model;
    double ss = 0.0;
    for (size_t row = 0; row < D; row++) {
        double o = 0.0;
        for (size_t d = 0; d < dh; d++)
            o += (double)t->w_o[row * H * dh + g * dh + d] * t->v[(i * Hkv + h) * dh + d];
        ss += o * o;
    }
    return sqrt(ss);
}

/* Full causal softmax row of query j, head g, into a[0..j]. */
static void ref_softmax_row(const kvz_layer_tap *t, const kvz_model_config *c, size_t g,
                            size_t j, double *a)
{
    size_t H = c->n_heads, Hkv = c->n_kv_heads, dh = c->head_dim, h = g / (H / Hkv);
    double mx = -INFINITY, sum = 0.0;
    for (size_t i = 0; i <= j; i++) {
        double dot = 0.0;
        for (size_t d = 0; d < dh; d++)
            dot += (double)t->q[(j * H + g) * dh + d] * t->k[(i * Hkv + h) * dh + d];
        a[i] = dot / sqrt((double)dh);
        mx = a[i] > mx ? a[i] : mx;
    }
    for (size_t i = 0; i <= j; i++)
        sum += exp(a[i] - mx);
    for (size_t i = 0; i <= j; i++)
        a[i] = exp(a[i] - mx) / sum;
}

/* out[(i-p0)*Hkv + h] = ln s[h, i], the spec formula computed plainly. */
static void ref_scores(const kvz_layer_tap *t, const kvz_model_config *c, size_t p0,
                       size_t p1, size_t r0, size_t r1, double *out)
{
    size_t H = c->n_heads, Hkv = c->n_kv_heads, G = H / Hkv, D = c->d_model, nP = p1 - p0;
    double *a = malloc(t->n_tokens * sizeof *a), *s = calloc(nP * Hkv, sizeof *s);
    double *wn = malloc(nP * sizeof *wn);
    for (size_t g = 0; g < H; g++) {
        size_t h = g / G;
        for (size_t i = p0; i < p1; i++)
            wn[i - p0] = ref_wo_norm(t, c, g, h, i);
        for (size_t j = r0; j < r1; j++) {
            double xn = 0.0;
            for (size_t d = 0; d < D; d++)
                xn += (double)t->x[j * D + d] * t->x[j * D + d];
            xn = sqrt(xn);
            ref_softmax_row(t, c, g, j, a);
            for (size_t i = p0; i < p1; i++) {
                double v = a[i] * wn[i - p0] / xn;
                if (v > s[(i - p0) * Hkv + h])
                    s[(i - p0) * Hkv + h] = v;
            }
        }
    }
    for (size_t e = 0; e < nP * Hkv; e++)
        out[e] = log(s[e]);
    free(a);
    free(s);
    free(wn);
}

/* Runs the library and the reference on one tap; compares; tracks the worst error. */
static void compare(const char *what, const kvz_layer_tap *t, const kvz_model_config *c,
                    size_t p0, size_t p1, size_t r0, size_t r1)
{
    size_t n = (p1 - p0) * c->n_kv_heads;
    float *got = malloc(n * sizeof *got), *reff = malloc(n * sizeof *reff);
    double *ref = malloc(n * sizeof *ref);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_kvzip_score_layer(t, c, p0, p1, r0, r1, KVZ_F32, NULL, got, &err), err);
    ref_scores(t, c, p0, p1, r0, r1, ref);
    for (size_t e = 0; e < n; e++) {
        reff[e] = (float)ref[e];
        double d = fabs(got[e] - ref[e]);
        if (d > worst_err)
            worst_err = d;
    }
    kvz_test_allclose(what, got, reff, n, ATOL, RTOL);
    free(got);
    free(reff);
    free(ref);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(float scale)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return scale * ((float)(rng_state >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
}

static float *random_array(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    for (size_t e = 0; e < n; e++)
        p[e] = frand(scale);
    return p;
}

typedef struct random_case {
    size_t H, Hkv, dh, D, T, p0, p1, r0, r1;
} random_case;

static void check_random(const random_case *rc)
{
    kvz_model_config c;
    memset(&c, 0, sizeof c);
    c.n_heads = rc->H;
    c.n_kv_heads = rc->Hkv;
    c.head_dim = rc->dh;
    c.d_model = rc->D;
    kvz_layer_tap t = {3, 0, rc->T, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    float *x = random_array(rc->T * rc->D, 2.0f), *q = random_array(rc->T * rc->H * rc->dh, 2.5f);
    float *k = random_array(rc->T * rc->Hkv * rc->dh, 2.5f);
    float *v = random_array(rc->T * rc->Hkv * rc->dh, 1.0f);
    float *w_o = random_array(rc->D * rc->H * rc->dh, 0.5f);
    t.x = x, t.q = q, t.k = k, t.v = v, t.w_o = w_o;
    char what[200];
    snprintf(what, sizeof what, "random H=%zu Hkv=%zu dh=%zu D=%zu T=%zu P=[%zu,%zu) R=[%zu,%zu)",
             rc->H, rc->Hkv, rc->dh, rc->D, rc->T, rc->p0, rc->p1, rc->r0, rc->r1);
    compare(what, &t, &c, rc->p0, rc->p1, rc->r0, rc->r1);
    free(x), free(q), free(k), free(v), free(w_o);
}

static void test_random(void)
{
    static const random_case cases[] = {
        {6, 2, 8, 20, 37, 0, 10, 20, 37},      {6, 3, 12, 20, 37, 3, 17, 17, 18},
        {6, 2, 12, 20, 120, 0, 1, 119, 120},   {6, 3, 8, 20, 300, 5, 140, 150, 300},
        {6, 2, 8, 20, 300, 0, 290, 290, 291},  {6, 6, 8, 20, 90, 10, 40, 41, 89},
        {6, 1, 12, 20, 271, 1, 270, 270, 271}, {6, 2, 8, 20, 299, 7, 71, 80, 280},
    };
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++)
        check_random(&cases[n]);
}

/* ---------- end to end: the tiny Qwen3 checkpoint ---------- */
typedef struct tap_ctx {
    const kvz_model_config *cfg;
    size_t layers_seen;
} tap_ctx;

static int score_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    (void)err;
    tap_ctx *ctx = user;
    char what[200];
    snprintf(what, sizeof what, "tiny/qwen3_f16 layer %zu, T=64 P=[5,25) R=[40,60)", tap->layer);
    compare(what, tap, ctx->cfg, 5, 25, 40, 60);
    ctx->layers_seen++;
    return KVZ_OK;
}

static void test_tiny_checkpoint(void)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    int rc = kvz_checkpoint_open(kvz_test_fixture("tiny/qwen3_f16"), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc != KVZ_OK)
        return;
    kvz_forward_options opt = {.n_threads = 2, .max_tokens = 64, .attn_block = 16};
    kvz_forward *f = NULL;
    rc = kvz_forward_create(ck, &opt, &f, &err);
    kvz_checkpoint_close(ck);
    KVZ_CHECK_OK(rc, err);
    if (rc != KVZ_OK)
        return;
    const kvz_model_config *cfg = kvz_forward_config(f);
    int32_t ids[64];
    for (size_t i = 0; i < 64; i++)
        ids[i] = (int32_t)((i * 2654435761u + 17u) % cfg->vocab_size);
    tap_ctx ctx = {cfg, 0};
    KVZ_CHECK_OK(kvz_forward_run(f, ids, 64, score_tap, &ctx, KVZ_LOGITS_NONE, NULL, &err), err);
    KVZ_CHECK(ctx.layers_seen == cfg->n_layers, "tapped %zu of %zu layers", ctx.layers_seen,
              cfg->n_layers);
    kvz_forward_free(f);
}

/* ---------- argument errors ---------- */
static void expect_einval(const kvz_layer_tap *t, const kvz_model_config *c, size_t p0,
                          size_t p1, size_t r0, size_t r1, const char *needle)
{
    float out[64];
    kvz_error err = {0};
    int rc = kvz_kvzip_score_layer(t, c, p0, p1, r0, r1, KVZ_F32, NULL, out, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "P=[%zu,%zu) R=[%zu,%zu): rc %d", p0, p1, r0, r1, rc);
    KVZ_CHECK(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

static void test_errors(void)
{
    kvz_model_config c;
    memset(&c, 0, sizeof c);
    c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 2, c.d_model = 4;
    float buf[16 * 8] = {0};
    kvz_layer_tap t = {0, 0, 16, buf, buf, buf, buf, buf, NULL, NULL};
    expect_einval(&t, &c, 0, 5, 4, 8, "must end at or before");
    expect_einval(&t, &c, 0, 5, 6, 17, "goes past the 16 tokens");
    expect_einval(&t, &c, 3, 3, 6, 8, "empty range");
    expect_einval(&t, &c, 0, 3, 6, 6, "empty range");
    expect_einval(NULL, &c, 0, 3, 6, 8, "NULL");
    t.pos0 = 2;
    expect_einval(&t, &c, 0, 3, 6, 8, "position 2");
    t.pos0 = 0;
    c.n_kv_heads = 3;
    expect_einval(&t, &c, 0, 3, 6, 8, "bad head config");
}

int main(void)
{
    kvz_ops_set_threads(1); /* one chunk per head */
    test_random();
    kvz_ops_set_threads(16); /* several query chunks per head */
    test_random();
    test_tiny_checkpoint();
    test_errors();
    printf("worst |got - ref| over all log-scores: %.3g\n", worst_err);
    return kvz_test_done();
}
