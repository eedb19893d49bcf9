/* test_prune: the pruning policies (trainer/prune.h) on the pruned forward
 * of tiny/qwen3_f16, against their semantics re-derived naively here. A
 * wrapper around kvz_prune_layer records each call's scores from what the
 * policy sees (the surrogate on the call's x; StreamingLLM's positions; the
 * oracle's given scores; SnapKV's attention probabilities recomputed in
 * double from the call's q and the cache's keys), then a simple simulator
 * takes the same decisions with plain loops and full scans:
 *   threshold (DMSPress): the buffer is the positions since the last decided
 *     one; while it is longer than the window its oldest leave, evicted when
 *     score < tau;
 *   ratio: each head keeps max(floor(len (1 - r)), window), evicting its
 *     lowest (score, position) outside the window one at a time;
 *   budget: the same over all heads and layers at the last layer's call;
 *   calls after the prefill run only with decoding (or the prefill flag).
 * After every call the cache's kept positions must equal the simulator's for
 * every (layer, head), and the policy's compression its mean over layers of
 * evicted / (Hkv x length) after the last call that ran. Also: the prefill's
 * x equals the dense forward's; random keeps exactly the counts with a seed
 * that decides; chunked prefill; a runtime without our cache driving the
 * policy through the evict callback; bad options refused with the reason. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/forward.h"
#include "../ops/ops.h"
#include "../trainer/prune.h"
#include "kvz_test.h"

enum { N = 70, STEPS = 6, WINDOW = 16, MAXT = N + STEPS, MAXL = 8, MAXG = 4 };

typedef struct sim {
    kvz_prune_options o;
    kvz_prune *policy;
    const kvz_model_config *cfg;
    size_t L, hkv;
    int prefill_flag;
    /* the simulator: [l][g][t] */
    unsigned char kept[MAXL][MAXG][MAXT];
    double score[MAXL][MAXG][MAXT];
    size_t len[MAXL], buf0[MAXL];
    double ratio[MAXL];
    int ran[MAXL];
    float *x0;          /* [L, N, D] the prefill's x the policy saw */
    size_t calls, bad;
    const char *what;
} sim;

/* SnapKV-style scores of the cache's current keys, in double. */
static void snapkv_naive(sim *s, const kvz_prune_call *c)
{
    size_t H = c->n_heads, dh = c->head_dim, gs = H / s->hkv;
    size_t w = c->n < 64 ? c->n : 64;
    kvz_ragged_attn_args a = {0};
    kvz_kv_cache_view(c->cache, c->layer, &a);
    for (size_t g = 0; g < s->hkv; g++) {
        size_t cnt = kvz_kv_cache_count(c->cache, c->layer, g);
        const int32_t *pos = kvz_kv_cache_positions(c->cache, c->layer, g);
        double *acc = calloc(cnt, sizeof *acc), *row = malloc(cnt * sizeof *row);
        for (size_t i = 0; i < w; i++) {
            size_t qpos = c->pos0 + c->n - w + i;
            for (size_t j = 0; j < gs; j++) {
                const float *q = c->q + ((c->n - w + i) * H + g * gs + j) * dh;
                double mx = -INFINITY, sum = 0.0;
                for (size_t t = 0; t < cnt; t++) {
                    const float *k = a.k + (kvz_kv_cache_head_row0(c->cache, c->layer, g) + t) * dh;
                    double d = 0.0;
                    for (size_t e = 0; e < dh; e++)
                        d += (double)q[e] * k[e];
                    row[t] = (size_t)pos[t] <= qpos ? d / sqrt((double)dh) : -INFINITY;
                    mx = row[t] > mx ? row[t] : mx;
                }
                for (size_t t = 0; t < cnt; t++)
                    sum += (row[t] = exp(row[t] - mx));
                for (size_t t = 0; t < cnt; t++)
                    acc[t] += row[t] / sum;
            }
        }
        for (size_t t = 0; t < cnt; t++) {
            double v = 0.0;
            for (size_t u = t >= 2 ? t - 2 : 0; u <= t + 2 && u < cnt; u++)
                v += acc[u];
            s->score[c->layer][g][pos[t]] = v / (5.0 * (double)(w * gs));
        }
        free(acc), free(row);
    }
}

/* Evicts from the simulator's (l, g) the lowest kept (score, position)
 * older than the window; 0 when there is none. */
static int sim_evict_lowest(sim *s, size_t l, size_t g, size_t len, size_t *bl, size_t *bg)
{
    size_t edge = len > s->o.window ? len - s->o.window : 0, best_l = 0, best_g = 0, best_t = 0;
    int found = 0;
    for (size_t ll = bl ? 0 : l; ll < (bl ? s->L : l + 1); ll++)
        for (size_t gg = bl ? 0 : g; gg < (bl ? s->hkv : g + 1); gg++)
            for (size_t t = 0; t < edge; t++) {
                if (!s->kept[ll][gg][t])
                    continue;
                double v = s->score[ll][gg][t], b = s->score[best_l][best_g][best_t];
                if (!found || v < b || (v == b && t < best_t) ||
                    (v == b && t == best_t && (ll < best_l || (ll == best_l && gg < best_g)))) {
                    best_l = ll, best_g = gg, best_t = t;
                    found = 1;
                }
            }
    if (found)
        s->kept[best_l][best_g][best_t] = 0;
    if (bl)
        *bl = best_l, *bg = best_g;
    return found;
}

static size_t sim_count(const sim *s, size_t l, size_t g)
{
    size_t m = 0;
    for (size_t t = 0; t < s->len[l]; t++)
        m += s->kept[l][g][t];
    return m;
}

static void sim_call(sim *s, const kvz_prune_call *c, const float *y)
{
    size_t l = c->layer, len = c->pos0 + c->n;
    if (c->pos0 == 0) {
        memset(s->kept[l], 0, sizeof s->kept[l]);
        s->buf0[l] = 0;
        s->ran[l] = 0;
    }
    int runs = c->pos0 == 0 || s->prefill_flag || s->o.decoding;
    for (size_t t = c->pos0; t < len; t++)
        for (size_t g = 0; g < s->hkv; g++) {
            s->kept[l][g][t] = 1;
            s->score[l][g][t] = runs && y ? y[(t - c->pos0) * s->hkv + g] : INFINITY;
        }
    s->len[l] = len;
    if (!runs)
        return;
    if (s->o.method == KVZ_PRUNE_SNAPKV)
        snapkv_naive(s, c);
    if (s->o.mode == KVZ_PRUNE_THRESHOLD) {
        while (len - s->buf0[l] > s->o.window) {
            for (size_t g = 0; g < s->hkv; g++)
                if (s->score[l][g][s->buf0[l]] < s->o.tau)
                    s->kept[l][g][s->buf0[l]] = 0;
            s->buf0[l]++;
        }
    } else if (s->o.mode == KVZ_PRUNE_RATIO) {
        size_t win = len < s->o.window ? len : s->o.window;
        size_t target = (size_t)((double)len * (1.0 - s->o.ratio));
        target = target < win ? win : target;
        for (size_t g = 0; g < s->hkv; g++)
            while (sim_count(s, l, g) > target && sim_evict_lowest(s, l, g, len, NULL, NULL)) {
            }
    } else if (l + 1 == s->L) {
        size_t win = len < s->o.window ? len : s->o.window, all = s->L * s->hkv, have = 0, bl, bg;
        size_t target = (size_t)((double)(all * len) * (1.0 - s->o.ratio));
        target = target < all * win ? all * win : target;
        for (size_t ll = 0; ll < s->L; ll++)
            for (size_t g = 0; g < s->hkv; g++)
                have += sim_count(s, ll, g);
        for (; have > target && sim_evict_lowest(s, 0, 0, len, &bl, &bg); have--) {
        }
    }
    size_t first = s->o.mode == KVZ_PRUNE_BUDGET && l + 1 == s->L ? 0 : l;
    for (size_t ll = first; ll <= l; ll++) {
        size_t kept = 0;
        for (size_t g = 0; g < s->hkv; g++)
            kept += sim_count(s, ll, g);
        s->ratio[ll] = (double)(s->hkv * len - kept) / (double)(s->hkv * len);
        s->ran[ll] = 1;
    }
}

static void sim_compare(sim *s, kvz_kv_cache *cache, size_t l0, size_t l1)
{
    for (size_t l = l0; l <= l1; l++)
        for (size_t g = 0; g < s->hkv; g++) {
            size_t got = kvz_kv_cache_count(cache, l, g), m = 0, diff = 0;
            const int32_t *pos = kvz_kv_cache_positions(cache, l, g);
            for (size_t t = 0; t < s->len[l]; t++)
                if (s->kept[l][g][t]) {
                    if (m >= got || pos[m] != (int32_t)t)
                        diff++;
                    m++;
                }
            if (got != m || diff) {
                if (s->bad++ < 4)
                    printf("  %s: call %zu layer %zu head %zu keeps %zu positions, the "
                           "simulator %zu (%zu differ)\n",
                           s->what, s->calls, l, g, got, m, diff);
            }
        }
}

static int wrapped(void *user, const kvz_prune_call *c, kvz_error *err)
{
    sim *s = user;
    const kvz_model_config *cfg = s->cfg;
    float *y = malloc(c->n * s->hkv * sizeof *y);
    int rc = KVZ_OK;
    if (s->o.method == KVZ_PRUNE_KVZAP)
        rc = kvz_surrogate_predict(s->o.surrogate, c->layer, c->x, c->n, y, NULL, err);
    for (size_t t = 0; t < c->n; t++)
        for (size_t g = 0; g < s->hkv; g++) {
            size_t pos = c->pos0 + t;
            if (s->o.method == KVZ_PRUNE_STREAMING)
                y[t * s->hkv + g] = pos < s->o.n_sink ? INFINITY : (float)pos;
            else if (s->o.method == KVZ_PRUNE_ORACLE)
                y[t * s->hkv + g] = s->o.scores[(c->layer * s->hkv + g) * s->o.scores_len + pos];
            else if (s->o.method != KVZ_PRUNE_KVZAP)
                y[t * s->hkv + g] = 0.0f;
        }
    if (!rc && c->pos0 == 0 && s->x0)
        memcpy(s->x0 + c->layer * N * cfg->d_model, c->x, c->n * cfg->d_model * sizeof(float));
    if (!rc)
        sim_call(s, c, y);
    free(y);
    rc = rc ? rc : kvz_prune_layer(s->policy, c, err);
    if (rc)
        return rc;
    s->calls++;
    if (s->o.mode != KVZ_PRUNE_BUDGET)
        sim_compare(s, c->cache, c->layer, c->layer);
    else if (c->layer + 1 == s->L)
        sim_compare(s, c->cache, 0, s->L - 1);
    double sum = 0.0;
    size_t n = 0;
    for (size_t l = 0; l < s->L; l++)
        if (s->ran[l])
            sum += s->ratio[l], n++;
    double want = n ? sum / (double)n : 0.0;
    if (fabs(kvz_prune_compression(s->policy) - want) > 1e-12 && s->bad++ < 4)
        printf("  %s: call %zu compression %.6f, the simulator %.6f\n", s->what, s->calls,
               kvz_prune_compression(s->policy), want);
    return KVZ_OK;
}

/* Runs ids through a pruned forward with the options (prefill in chunks of
 * `chunk`, 0: one call), STEPS greedy decode steps; checks every call
 * against the simulator. Returns the final compression. */
static double run_case(const kvz_checkpoint *ck, const kvz_prune_options *o, size_t chunk,
                       const float *dense_x0, const char *what)
{
    const kvz_model_config *cfg = kvz_checkpoint_config(ck);
    size_t V = cfg->vocab_size, D = cfg->d_model;
    kvz_error err = {0};
    static sim s;
    memset(&s, 0, sizeof s);
    s.o = *o;
    s.cfg = cfg;
    s.L = cfg->n_layers;
    s.hkv = cfg->n_kv_heads;
    s.what = what;
    s.x0 = chunk ? NULL : calloc(s.L * N * D, sizeof(float));
    int rc = kvz_prune_create(cfg, o, &s.policy, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_forward_options opt = {.n_threads = 2, .prune = wrapped, .prune_user = &s};
    kvz_forward *f = NULL;
    rc = kvz_forward_create(ck, &opt, &f, &err);
    KVZ_CHECK_OK(rc, err);
    int32_t ids[MAXT];
    for (size_t i = 0; i < MAXT; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *logits = malloc(V * sizeof *logits);
    size_t step = chunk ? chunk : N;
    for (size_t at = 0; at < N && !rc; at += step) {
        size_t len = N - at < step ? N - at : step;
        s.prefill_flag = at > 0;
        kvz_prune_set_prefill(s.policy, at > 0);
        rc = kvz_forward_run(f, ids + at, len, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
    }
    s.prefill_flag = 0;
    kvz_prune_set_prefill(s.policy, 0);
    KVZ_CHECK_OK(rc, err);
    if (s.x0) {
        char w[128];
        snprintf(w, sizeof w, "%s: prefill x vs the dense forward's", what);
        kvz_test_allclose(w, s.x0, dense_x0, s.L * N * D, 1e-6, 1e-5);
    }
    double after_prefill = kvz_prune_compression(s.policy);
    for (size_t k = 0; k < STEPS && !rc; k++) {
        int32_t next = (int32_t)kvz_argmax(logits, V);
        rc = kvz_forward_run(f, &next, 1, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
    }
    KVZ_CHECK_OK(rc, err);
    double end = kvz_prune_compression(s.policy);
    KVZ_CHECK(s.bad == 0, "%s: %zu mismatches with the simulator", what, s.bad);
    KVZ_CHECK(s.calls == s.L * (N / step + (N % step != 0) + STEPS), "%s: %zu policy calls", what,
              s.calls);
    if (!o->decoding)
        KVZ_CHECK(end == after_prefill, "%s: decoding changed the compression (%.6f -> %.6f)",
                  what, after_prefill, end);
    if (o->method != KVZ_PRUNE_FULL)
        KVZ_CHECK(after_prefill > 0.05, "%s: the case evicts something (%.4f)", what,
                  after_prefill);
    printf("%s: compression %.4f after the prefill, %.4f at the end, %.4f in the cache\n", what,
           after_prefill, end, kvz_kv_cache_compression(kvz_forward_kv_cache(f)));
    free(logits);
    kvz_forward_free(f);
    kvz_prune_free(s.policy);
    free(s.x0);
    return end;
}

/* Random: exact counts per head after each call; the seed decides. */
static void random_case(const kvz_checkpoint *ck, uint64_t seed, int32_t *kept_out)
{
    const kvz_model_config *cfg = kvz_checkpoint_config(ck);
    kvz_error err = {0};
    kvz_prune_options o = {.method = KVZ_PRUNE_RANDOM, .mode = KVZ_PRUNE_RATIO, .ratio = 0.4,
                           .window = WINDOW, .decoding = 1, .seed = seed};
    kvz_prune *p = NULL;
    int rc = kvz_prune_create(cfg, &o, &p, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_forward_options opt = {.n_threads = 2, .prune = kvz_prune_layer, .prune_user = p};
    kvz_forward *f = NULL;
    rc = kvz_forward_create(ck, &opt, &f, &err);
    KVZ_CHECK_OK(rc, err);
    int32_t ids[MAXT];
    for (size_t i = 0; i < MAXT; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % cfg->vocab_size);
    rc = kvz_forward_run(f, ids, N, NULL, NULL, KVZ_LOGITS_NONE, NULL, &err);
    for (size_t k = 0; !rc && k < 3; k++)
        rc = kvz_forward_run(f, ids + N + k, 1, NULL, NULL, KVZ_LOGITS_NONE, NULL, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_kv_cache *c = kvz_forward_kv_cache(f);
    size_t len = N + 3, want = (size_t)((double)len * 0.6);
    for (size_t l = 0; l < cfg->n_layers; l++)
        for (size_t g = 0; g < cfg->n_kv_heads; g++) {
            size_t got = kvz_kv_cache_count(c, l, g);
            const int32_t *pos = kvz_kv_cache_positions(c, l, g);
            KVZ_CHECK(got == want, "random: layer %zu head %zu keeps %zu, want %zu", l, g, got,
                      want);
            KVZ_CHECK(got >= WINDOW && pos[got - WINDOW] == (int32_t)(len - WINDOW),
                      "random: layer %zu head %zu lost part of its window", l, g);
        }
    memcpy(kept_out, kvz_kv_cache_positions(c, 0, 0), want * sizeof *kept_out);
    kvz_forward_free(f);
    kvz_prune_free(p);
}

typedef struct evict_log {
    size_t n[MAXG];
    int32_t pos[MAXG][512];
} evict_log;

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

static int log_evictions(void *user, size_t layer, size_t head, const int32_t *pos, size_t n,
                         kvz_error *err)
{
    (void)err;
    evict_log *e = user;
    if (layer == 1)
        for (size_t i = 0; i < n && e->n[head] < 512; i++)
            e->pos[head][e->n[head]++] = pos[i];
    return KVZ_OK;
}

/* Another runtime: host x, no cache, evictions through the callback. */
static void callback_case(const kvz_model_config *cfg, const kvz_surrogate *s)
{
    enum { T = 300 };
    size_t D = cfg->d_model, hkv = cfg->n_kv_heads;
    float *x = malloc(T * D * sizeof *x), *y = malloc(T * hkv * sizeof *y);
    uint64_t st = 99;
    for (size_t i = 0; i < T * D; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.5) * 4.0f;
    }
    kvz_error err = {0};
    static evict_log log;
    memset(&log, 0, sizeof log);
    kvz_prune_options o = {.method = KVZ_PRUNE_KVZAP, .tau = 0.0, .surrogate = s,
                           .evict = log_evictions, .evict_user = &log};
    kvz_prune *p = NULL;
    int rc = kvz_prune_create(cfg, &o, &p, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_prune_call c = {1, 0, T, x, NULL, cfg->n_heads, cfg->head_dim, NULL};
    rc = kvz_prune_layer(p, &c, &err);
    KVZ_CHECK_OK(rc, err);
    rc = kvz_surrogate_predict(s, 1, x, T, y, NULL, &err);
    KVZ_CHECK_OK(rc, err);
    size_t total = 0;
    for (size_t g = 0; g < hkv; g++) {
        size_t m = 0, bad = 0;
        for (size_t t = 0; t + 128 < T; t++)
            if (y[t * hkv + g] < 0.0f)
                bad += m >= log.n[g] || log.pos[g][m++] != (int32_t)t;
        KVZ_CHECK(m == log.n[g] && bad == 0, "callback: head %zu evicted %zu, want %zu (%zu differ)",
                  g, log.n[g], m, bad);
        total += m;
    }
    KVZ_CHECK(fabs(kvz_prune_layer_compression(p, 1) - (double)total / (double)(hkv * T)) < 1e-12,
              "callback: layer compression %.6f", kvz_prune_layer_compression(p, 1));
    kvz_prune_free(p);
    /* without the callback */
    o.evict = NULL;
    rc = kvz_prune_create(cfg, &o, &p, &err);
    KVZ_CHECK_OK(rc, err);
    rc = kvz_prune_layer(p, &c, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "evict callback"), "no callback: %s", err.msg);
    kvz_prune_free(p);
    free(x), free(y);
}

static void refused(const kvz_model_config *cfg, const kvz_prune_options *o, const char *want)
{
    kvz_error err = {0};
    kvz_prune *p = NULL;
    int rc = kvz_prune_create(cfg, o, &p, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && p == NULL && strstr(err.msg, want), "want '%s', got rc %d '%s'",
              want, rc, err.msg);
    kvz_prune_free(p);
}

int main(void)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    int rc = kvz_checkpoint_open(kvz_test_fixture("tiny/qwen3_f16"), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    const kvz_model_config *cfg = kvz_checkpoint_config(ck);
    size_t L = cfg->n_layers, D = cfg->d_model, hkv = cfg->n_kv_heads, V = cfg->vocab_size;
    KVZ_CHECK(L <= MAXL && hkv <= MAXG, "fixture shape %zu layers %zu KV heads", L, hkv);
    kvz_surrogate *s = NULL;
    rc = kvz_surrogate_create(KVZ_SURROGATE_KIND_LINEAR, L, D, 0, hkv, &s, &err);
    KVZ_CHECK_OK(rc, err);
    uint64_t st = 12345;
    for (size_t i = 0; i < L * s->layer_stride; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        s->params[i] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.5) * 0.5f;
    }
    /* the dense forward's prefill x, through a tap */
    float *dense = calloc(L * N * D, sizeof(float));
    {
        kvz_forward_options opt = {.n_threads = 2};
        kvz_forward *f = NULL;
        rc = kvz_forward_create(ck, &opt, &f, &err);
        KVZ_CHECK_OK(rc, err);
        int32_t ids[N];
        for (size_t i = 0; i < N; i++)
            ids[i] = (int32_t)((i * 7919 + 13) % V);
        dense_x dx = {D, dense};
        rc = kvz_forward_run(f, ids, N, grab_x, &dx, KVZ_LOGITS_NONE, NULL, &err);
        KVZ_CHECK_OK(rc, err);
        kvz_forward_free(f);
    }
    float *given = malloc(L * hkv * MAXT * sizeof *given);
    for (size_t i = 0; i < L * hkv * MAXT; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        given[i] = (float)((double)(st >> 11) / 9007199254740992.0) * 4.0f - 3.0f;
    }
    const kvz_prune_options kz = {.method = KVZ_PRUNE_KVZAP, .window = WINDOW, .surrogate = s};
    for (int dec = 0; dec < 2; dec++) {
        kvz_prune_options o = kz;
        o.decoding = dec;
        char what[96];
        o.tau = 0.0;
        snprintf(what, sizeof what, "kvzap threshold tau 0 decoding %d", dec);
        run_case(ck, &o, 0, dense, what);
        o.tau = -0.3;
        snprintf(what, sizeof what, "kvzap threshold tau -0.3 decoding %d", dec);
        run_case(ck, &o, 0, dense, what);
        o.mode = KVZ_PRUNE_RATIO;
        o.ratio = 0.5;
        snprintf(what, sizeof what, "kvzap ratio 0.5 decoding %d", dec);
        run_case(ck, &o, 0, dense, what);
        o.mode = KVZ_PRUNE_BUDGET;
        o.ratio = 0.6;
        snprintf(what, sizeof what, "kvzap budget 0.6 decoding %d", dec);
        run_case(ck, &o, 0, dense, what);
        o = (kvz_prune_options){.method = KVZ_PRUNE_SNAPKV, .mode = KVZ_PRUNE_RATIO, .ratio = 0.5,
                                .window = WINDOW, .decoding = dec};
        snprintf(what, sizeof what, "snapkv ratio 0.5 decoding %d", dec);
        run_case(ck, &o, 0, dense, what);
    }
    {
        kvz_prune_options o = {.method = KVZ_PRUNE_STREAMING, .mode = KVZ_PRUNE_RATIO,
                               .ratio = 0.5, .window = WINDOW, .decoding = 1, .n_sink = 4};
        run_case(ck, &o, 0, dense, "streaming ratio 0.5 decoding 1");
        o = (kvz_prune_options){.method = KVZ_PRUNE_ORACLE, .tau = -1.0, .window = WINDOW,
                                .scores = given, .scores_len = MAXT, .decoding = 1};
        run_case(ck, &o, 0, dense, "oracle threshold -1 decoding 1");
        o = (kvz_prune_options){.method = KVZ_PRUNE_FULL, .window = WINDOW, .decoding = 1};
        double c = run_case(ck, &o, 0, dense, "full");
        KVZ_CHECK(c == 0.0, "full evicts nothing (%.6f)", c);
        /* chunked prefill: later chunks run the policy with decoding off */
        o = kz;
        o.tau = -0.3;
        run_case(ck, &o, 25, NULL, "kvzap threshold -0.3, prefill chunks of 25");
        o.mode = KVZ_PRUNE_BUDGET;
        o.ratio = 0.6;
        run_case(ck, &o, 25, NULL, "kvzap budget 0.6, prefill chunks of 25");
    }
    {
        int32_t a[MAXT], b[MAXT], c[MAXT];
        random_case(ck, 7, a);
        random_case(ck, 7, b);
        random_case(ck, 8, c);
        size_t want = (size_t)((double)(N + 3) * 0.6);
        KVZ_CHECK(!memcmp(a, b, want * sizeof *a), "random: the same seed keeps the same pairs");
        KVZ_CHECK(memcmp(a, c, want * sizeof *a), "random: another seed keeps other pairs");
    }
    callback_case(cfg, s);
    /* bad options */
    kvz_prune_options o = kz;
    o.tau = NAN;
    refused(cfg, &o, "tau must be a finite number");
    o = kz;
    o.mode = KVZ_PRUNE_RATIO;
    o.ratio = 1.0;
    refused(cfg, &o, "in [0, 1)");
    o = (kvz_prune_options){.method = KVZ_PRUNE_STREAMING, .mode = KVZ_PRUNE_THRESHOLD};
    refused(cfg, &o, "has no threshold mode");
    o = (kvz_prune_options){.method = KVZ_PRUNE_ORACLE};
    refused(cfg, &o, "oracle needs its scores");
    o = (kvz_prune_options){.method = KVZ_PRUNE_KVZAP};
    refused(cfg, &o, "needs a surrogate");
    kvz_model_config other = *cfg;
    other.n_layers = L + 1;
    o = kz;
    refused(&other, &o, "the model has");
    free(given);
    free(dense);
    kvz_surrogate_free(s);
    kvz_checkpoint_close(ck);
    return kvz_test_done();
}
