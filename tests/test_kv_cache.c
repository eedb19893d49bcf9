/* test_kv_cache: the ragged per-head KV cache (model/kv_cache.h) and the
 * ragged attention op (kvz_op_ragged_attention) on the cpu backend:
 *  - the op against attention re-derived naively here in double: dense
 *    causal attention over each head's keys with the evicted ones masked
 *    (random shapes, ragged counts, keys after the query, a query that sees
 *    nothing gets zeros);
 *  - append / evict / compaction: kept positions and K/V rows are exactly
 *    the expected subset, kvpress's compression ratio, the capacity shrinking
 *    and the bytes it reports;
 *  - the pruned forward with a policy that evicts nothing gives the dense
 *    forward's logits (prefill and decoding), refuses taps, and a policy
 *    that evicts changes the logits and reports its compression. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/forward.h"
#include "../model/kv_cache.h"
#include "../ops/ops.h"
#include "kvz_test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* Naive reference: for each (query, head), softmax over head g's keys with
 * pos <= query position, in double. */
static void ref_ragged(const kvz_ragged_attn_args *a, double *out)
{
    size_t dh = a->head_dim;
    for (size_t i = 0; i < a->n_q; i++)
        for (size_t h = 0; h < a->n_heads; h++) {
            size_t g = h / (a->n_heads / a->n_kv_heads);
            size_t r0 = a->row0 ? (size_t)a->row0[g] : g * a->cap;
            double *o = out + (i * a->n_heads + h) * dh, mx = -INFINITY, sum = 0.0;
            memset(o, 0, dh * sizeof *o);
            double *s = malloc(((size_t)a->count[g] + 1) * sizeof *s);
            for (int j = 0; j < a->count[g]; j++) {
                s[j] = -INFINITY;
                if ((size_t)a->pos[r0 + j] > a->q_pos0 + i)
                    continue;
                double d = 0.0;
                for (size_t e = 0; e < dh; e++)
                    d += (double)a->q[(i * a->n_heads + h) * dh + e] *
                         a->k[(r0 + j) * dh + e];
                s[j] = d * a->scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j < a->count[g]; j++)
                if (s[j] != -INFINITY) {
                    double p = exp(s[j] - mx);
                    sum += p;
                    for (size_t e = 0; e < dh; e++)
                        o[e] += p * a->v[(r0 + j) * dh + e];
                }
            for (size_t e = 0; sum > 0 && e < dh; e++)
                o[e] /= sum;
            free(s);
        }
}

static void check_op(kvz_backend *be, size_t H, size_t Hkv, size_t dh, size_t cap, size_t n_q,
                     size_t q_pos0)
{
    float *q = malloc(n_q * H * dh * sizeof *q), *k = malloc(Hkv * cap * dh * sizeof *k);
    float *v = malloc(Hkv * cap * dh * sizeof *v), *out = malloc(n_q * H * dh * sizeof *out);
    float *reff = malloc(n_q * H * dh * sizeof *reff);
    double *ref = malloc(n_q * H * dh * sizeof *ref);
    int32_t *pos = malloc(Hkv * cap * sizeof *pos), *count = malloc(Hkv * sizeof *count);
    for (size_t i = 0; i < n_q * H * dh; i++)
        q[i] = frand() * 2.0f;
    for (size_t i = 0; i < Hkv * cap * dh; i++) {
        k[i] = frand();
        v[i] = frand();
    }
    for (size_t g = 0; g < Hkv; g++) { /* ragged: each head keeps a random ascending subset */
        int32_t p = (int32_t)(g == Hkv - 1 ? q_pos0 + n_q : 0); /* last head: all in the future */
        size_t c = 0;
        for (; c < cap; c++) {
            p += 1 + (int32_t)((frand() + 1.0f) * 2.0f);
            pos[g * cap + c] = p;
        }
        count[g] = (int32_t)(g % 2 ? cap : cap * 2 / 3);
    }
    kvz_ragged_attn_args a = {q,   k,      v,  pos, count, out, n_q, q_pos0, cap, H, Hkv, dh,
                              1.0f / sqrtf((float)dh), NULL};
    kvz_error err = {0};
    int rc = kvz_op_ragged_attention(be, &a, &err);
    KVZ_CHECK_OK(rc, err);
    ref_ragged(&a, ref);
    for (size_t i = 0; i < n_q * H * dh; i++)
        reff[i] = (float)ref[i];
    char what[96];
    snprintf(what, sizeof what, "ragged attention H=%zu Hkv=%zu dh=%zu cap=%zu n_q=%zu", H, Hkv,
             dh, cap, n_q);
    kvz_test_allclose(what, out, reff, n_q * H * dh, 1e-6, 1e-5);
    /* heads of the last KV group see nothing: zeros */
    size_t group = H / Hkv;
    for (size_t i = 0; i < n_q; i++)
        for (size_t h = (Hkv - 1) * group; h < H; h++)
            for (size_t e = 0; e < dh; e++)
                KVZ_CHECK(out[(i * H + h) * dh + e] == 0.0f, "query %zu head %zu: %g", i, h,
                          out[(i * H + h) * dh + e]);
    free(q), free(k), free(v), free(out), free(reff), free(ref), free(pos), free(count);
}

static void check_cache(kvz_backend *be)
{
    const size_t L = 2, Hkv = 3, dh = 8, n = 40;
    kvz_error err = {0};
    kvz_kv_cache *c = NULL;
    int rc = kvz_kv_cache_create(be, L, Hkv, dh, &c, &err);
    KVZ_CHECK_OK(rc, err);
    float *kr = malloc(600 * Hkv * dh * sizeof *kr), *vr = malloc(600 * Hkv * dh * sizeof *vr);
    for (size_t i = 0; i < 600 * Hkv * dh; i++) {
        kr[i] = (float)i;
        vr[i] = -(float)i;
    }
    for (size_t l = 0; l < L; l++) {
        rc = kvz_kv_cache_append(c, l, kr, vr, n / 2, 0, &err);
        rc = rc ? rc : kvz_kv_cache_append(c, l, kr + n / 2 * Hkv * dh, vr + n / 2 * Hkv * dh,
                                           n / 2, n / 2, &err);
        KVZ_CHECK_OK(rc, err);
    }
    rc = kvz_kv_cache_append(c, 0, kr, vr, 1, 5, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "appending at a seen position: %d", rc);
    /* layer 0 head 1: evict 7, 8, 39 and 99 (not there), then 0 (rows before the first
     * eviction stay, then the whole head moves); layer 1 untouched */
    int32_t ev[] = {39, 8, 99, 7}, ev0 = 0;
    rc = kvz_kv_cache_evict(c, 0, 1, ev, 4, &err);
    rc = rc ? rc : kvz_kv_cache_evict(c, 0, 1, &ev0, 1, &err);
    KVZ_CHECK_OK(rc, err);
    int32_t expect[40];
    size_t ne = 0;
    for (int32_t p = 0; p < 40; p++)
        if (p != 0 && p != 7 && p != 8 && p != 39)
            expect[ne++] = p;
    kvz_test_equal_i32("kept positions", kvz_kv_cache_positions(c, 0, 1),
                       kvz_kv_cache_count(c, 0, 1), expect, ne);
    KVZ_CHECK(kvz_kv_cache_count(c, 0, 0) == n && kvz_kv_cache_count(c, 1, 1) == n,
              "other heads keep everything");
    kvz_ragged_attn_args a = {0};
    kvz_kv_cache_view(c, 0, &a);
    size_t bad = 0;
    for (size_t j = 0; j < ne; j++) /* row j of head 1 is token expect[j]'s head-1 row */
        for (size_t e = 0; e < dh; e++) {
            float want = (float)(((size_t)expect[j] * Hkv + 1) * dh + e);
            bad += a.k[(a.row0[1] + j) * dh + e] != want || a.v[(a.row0[1] + j) * dh + e] != -want;
        }
    KVZ_CHECK(bad == 0, "%zu compacted K/V values differ", bad);
    KVZ_CHECK(a.count[1] == (int32_t)ne && a.pos[a.row0[1]] == 1, "backend count/pos");
    double want_c = (4.0 / (Hkv * n) + 0.0) / 2.0;
    KVZ_CHECK(fabs(kvz_kv_cache_compression(c) - want_c) < 1e-15, "compression %g, want %g",
              kvz_kv_cache_compression(c), want_c);
    KVZ_CHECK(kvz_kv_cache_kept_pairs(c) == L * Hkv * n - 4 &&
                  kvz_kv_cache_full_pairs(c) == L * Hkv * n,
              "pairs %zu of %zu", kvz_kv_cache_kept_pairs(c), kvz_kv_cache_full_pairs(c));
    KVZ_CHECK(kvz_kv_cache_kept_bytes(c) == (L * Hkv * n - 4) * 2 * dh * 4, "kept bytes");
    /* grow layer 1 to 640 rows, then evict nearly all: the capacity shrinks to its floor */
    rc = kvz_kv_cache_append(c, 1, kr, vr, 600, n, &err);
    KVZ_CHECK_OK(rc, err);
    size_t big = kvz_kv_cache_bytes(c);
    int32_t *all = malloc(640 * sizeof *all);
    for (int32_t p = 0; p < 630; p++)
        all[p] = p;
    for (size_t g = 0; g < Hkv; g++) {
        rc = kvz_kv_cache_evict(c, 1, g, all, 630, &err);
        KVZ_CHECK_OK(rc, err);
    }
    KVZ_CHECK(kvz_kv_cache_count(c, 1, 2) == 10, "10 kept");
    KVZ_CHECK(kvz_kv_cache_bytes(c) < big && kvz_kv_cache_peak_bytes(c) >= big,
              "bytes %zu after eviction, %zu before, peak %zu", kvz_kv_cache_bytes(c), big,
              kvz_kv_cache_peak_bytes(c));
    kvz_kv_cache_view(c, 1, &a);
    /* layer 1's heads shrank to the 64-row floor; layer 0 kept its 64-row slabs */
    size_t floor_bytes = 2 * Hkv * 64 * (2 * dh * 4 + 4) + 2 * 2 * Hkv * 4;
    KVZ_CHECK(kvz_kv_cache_bytes(c) >= floor_bytes && kvz_kv_cache_bytes(c) <= floor_bytes + (1u << 20),
              "bytes %zu after eviction (slabs at their 64-row floor: %zu + scratch)",
              kvz_kv_cache_bytes(c), floor_bytes);
    KVZ_CHECK(a.row0[2] == 128 && a.k[(a.row0[2] + 9) * dh] == (float)((599 * Hkv + 2) * dh),
              "last kept row (head 2's slab at row %d)", a.row0[2]);
    kvz_kv_cache_reset(c);
    KVZ_CHECK(kvz_kv_cache_kept_pairs(c) == 0 && kvz_kv_cache_compression(c) == 0.0, "reset");
    free(all), free(kr), free(vr);
    kvz_kv_cache_free(c);
}

typedef struct policy {
    int evict;        /* 0: keep everything; 1: evict every 3rd token older than 8 */
    size_t calls;
} policy;

static int test_policy(void *user, const kvz_prune_call *c, kvz_error *err)
{
    policy *p = user;
    size_t layer = c->layer, n = c->n, pos0 = c->pos0;
    kvz_kv_cache *cache = c->cache;
    p->calls++;
    if (!p->evict || pos0 + n <= 8)
        return KVZ_OK;
    int32_t ev[64];
    size_t m = 0;
    for (size_t t = 0; t + 8 < pos0 + n && m < 64; t++)
        if (t % 3 == layer % 3)
            ev[m++] = (int32_t)t;
    return kvz_kv_cache_evict(cache, layer, 0, ev, m, err); /* head 0 only */
}

static int never_tap(const kvz_layer_tap *t, void *user, kvz_error *err)
{
    (void)t, (void)user, (void)err;
    return KVZ_OK;
}

static void check_forward(void)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    int rc = kvz_checkpoint_open(kvz_test_fixture("tiny/qwen3_f16"), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    size_t V = kvz_checkpoint_config(ck)->vocab_size;
    enum { N = 30, STEPS = 4 };
    int32_t ids[N + STEPS];
    for (size_t i = 0; i < N + STEPS; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *dense = malloc((N + STEPS) * V * sizeof *dense);
    float *pruned = malloc((N + STEPS) * V * sizeof *pruned);
    for (int mode = 0; mode < 3; mode++) { /* dense, prune nothing, prune */
        policy pol = {mode == 2, 0};
        kvz_forward_options opt = {.n_threads = 2, .prune = mode ? test_policy : NULL,
                                   .prune_user = &pol};
        kvz_forward *f = NULL;
        rc = kvz_forward_create(ck, &opt, &f, &err);
        KVZ_CHECK_OK(rc, err);
        float *dst = mode ? pruned : dense;
        rc = kvz_forward_run(f, ids, N, NULL, NULL, KVZ_LOGITS_ALL, dst, &err);
        for (size_t s = 0; !rc && s < STEPS; s++)
            rc = kvz_forward_run(f, ids + N + s, 1, NULL, NULL, KVZ_LOGITS_LAST,
                                 dst + (N + s) * V, &err);
        KVZ_CHECK_OK(rc, err);
        if (mode) {
            size_t L = kvz_forward_config(f)->n_layers;
            KVZ_CHECK(pol.calls == L * (1 + STEPS), "policy called %zu times", pol.calls);
            rc = kvz_forward_run(f, ids, 1, never_tap, NULL, KVZ_LOGITS_NONE, NULL, &err);
            KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "taps"), "tap refused: %s", err.msg);
            double comp = kvz_kv_cache_compression(kvz_forward_kv_cache(f));
            if (mode == 1) {
                kvz_test_allclose("pruned forward that evicts nothing vs dense", pruned, dense,
                                  (N + STEPS) * V, 1e-5, 1e-4);
                KVZ_CHECK(comp == 0.0, "compression %g", comp);
            } else {
                KVZ_CHECK(comp > 0.0 && comp < 0.5, "compression %g", comp);
                kvz_test_allclose("prefill logits (dense inside the chunk)", pruned, dense,
                                  N * V, 1e-5, 1e-4);
                double diff = 0.0;
                for (size_t i = N * V; i < (N + STEPS) * V; i++)
                    diff = fmax(diff, fabs(pruned[i] - dense[i]));
                KVZ_CHECK(diff > 1e-3, "evictions changed the decoding logits by %g", diff);
            }
        }
        kvz_forward_free(f);
    }
    free(dense), free(pruned);
    kvz_checkpoint_close(ck);
}

int main(void)
{
    kvz_backend *be = NULL;
    kvz_error err = {0};
    kvz_backend_options bo = {KVZ_BACKEND_CPU, 0, 2};
    int rc = kvz_backend_open(&bo, &be, &err);
    KVZ_CHECK_OK(rc, err);
    check_op(be, 4, 2, 16, 50, 5, 60);
    check_op(be, 6, 3, 40, 33, 1, 70);  /* decode: one query */
    check_op(be, 8, 2, 128, 300, 17, 500);
    check_op(be, 4, 2, 32, 400, 130, 200); /* three query blocks of the cpu op */
    check_cache(be);
    kvz_backend_close(be);
    check_forward();
    return kvz_test_done();
}
