/* prune: the pruning policies (stated in prune.h). Host code: the surrogate
 * runs on the host (kvz_surrogate_predict) and SnapKV's attention scores
 * with cblas; on a backend whose memory is not the host's, the chunk's x (or
 * q and the layer's kept keys) are downloaded first. The policy keeps its
 * own copy of each head's kept positions, ascending, with their scores; the
 * cache (or another runtime's) holds the same set because every eviction
 * goes through here. */
#include <cblas.h>
#include <math.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "prune.h"

typedef struct head_state {
    int32_t *pos;  /* [n] kept positions, ascending */
    float *score;  /* [n] their scores */
    size_t n, cap;
} head_state;

typedef struct layer_state {
    head_state *head; /* [Hkv] */
    size_t seen;      /* positions the layer has been given (pos0 + n of the last call) */
    size_t scored;    /* positions pushed to the head lists */
    size_t buf_pos0;  /* threshold: oldest undecided position */
    double ratio;     /* compression after the last call that ran */
    int ran;
} layer_state;

typedef struct candidate {
    float score;
    int32_t pos;
    uint32_t layer, head;
} candidate;

struct kvz_prune {
    kvz_prune_options o;
    size_t L, D, H, hkv, dh;
    int prefill;
    layer_state *layer;
    float *x, *y, *scratch;   /* host: [rows, D], [rows, Hkv], [rows, surrogate Dh] */
    size_t rows;
    int32_t *evict;           /* [evict_cap] */
    size_t evict_cap;
    candidate *cand;          /* [cand_cap] */
    size_t cand_cap;
    float *snap;              /* snapkv: q rows, keys, logits, sums */
    size_t snap_cap;
    double score_seconds;     /* wall time spent computing scores */
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double kvz_prune_score_seconds(const kvz_prune *p)
{
    return p->score_seconds;
}

static const char *const METHODS[] = {"full", "kvzap", "oracle", "streaming", "random", "snapkv"};
static const char *const MODES[] = {"threshold", "ratio", "budget"};

const char *kvz_prune_method_name(kvz_prune_method m)
{
    return (unsigned)m < sizeof METHODS / sizeof *METHODS ? METHODS[m] : "?";
}

const char *kvz_prune_mode_name(kvz_prune_mode m)
{
    return (unsigned)m < sizeof MODES / sizeof *MODES ? MODES[m] : "?";
}

int kvz_prune_method_parse(const char *name, kvz_prune_method *out)
{
    for (size_t i = 0; name && i < sizeof METHODS / sizeof *METHODS; i++)
        if (!strcmp(name, METHODS[i])) {
            *out = (kvz_prune_method)i;
            return KVZ_OK;
        }
    return KVZ_EINVAL;
}

int kvz_prune_mode_parse(const char *name, kvz_prune_mode *out)
{
    for (size_t i = 0; name && i < sizeof MODES / sizeof *MODES; i++)
        if (!strcmp(name, MODES[i])) {
            *out = (kvz_prune_mode)i;
            return KVZ_OK;
        }
    return KVZ_EINVAL;
}

static int check_options(const kvz_model_config *c, const kvz_prune_options *o, kvz_error *err)
{
    const char *m = kvz_prune_method_name(o->method);
    if ((unsigned)o->method > KVZ_PRUNE_SNAPKV || (unsigned)o->mode > KVZ_PRUNE_BUDGET)
        return kvz_fail(err, KVZ_EINVAL, "pruning: unknown method %d or mode %d", (int)o->method,
                        (int)o->mode);
    if (o->method == KVZ_PRUNE_FULL)
        return KVZ_OK;
    if (o->mode == KVZ_PRUNE_THRESHOLD && o->method != KVZ_PRUNE_KVZAP && o->method != KVZ_PRUNE_ORACLE)
        return kvz_fail(err, KVZ_EINVAL,
                        "pruning: %s has no threshold mode (its scores are not log-scores); "
                        "use ratio or budget",
                        m);
    if (o->mode == KVZ_PRUNE_THRESHOLD && !isfinite(o->tau))
        return kvz_fail(err, KVZ_EINVAL, "pruning: tau must be a finite number, got %g", o->tau);
    if (o->mode != KVZ_PRUNE_THRESHOLD && !(o->ratio >= 0.0 && o->ratio < 1.0))
        return kvz_fail(err, KVZ_EINVAL, "pruning: the ratio to evict must be in [0, 1), got %g",
                        o->ratio);
    if (o->method == KVZ_PRUNE_ORACLE && !o->scores)
        return kvz_fail(err, KVZ_EINVAL, "pruning: oracle needs its scores");
    if (o->method == KVZ_PRUNE_KVZAP) {
        const kvz_surrogate *s = o->surrogate;
        if (!s)
            return kvz_fail(err, KVZ_EINVAL, "pruning: kvzap needs a surrogate");
        if (s->n_layers != c->n_layers || s->d_in != c->d_model || s->d_out != c->n_kv_heads)
            return kvz_fail(err, KVZ_EINVAL,
                            "the surrogate is for %zu layers, d_model %zu, %zu KV heads; the "
                            "model has %zu layers, d_model %zu, %zu KV heads",
                            s->n_layers, s->d_in, s->d_out, c->n_layers, c->d_model,
                            c->n_kv_heads);
    }
    return KVZ_OK;
}

int kvz_prune_create(const kvz_model_config *cfg, const kvz_prune_options *opt, kvz_prune **out,
                     kvz_error *err)
{
    *out = NULL;
    if (!cfg || !opt)
        return kvz_fail(err, KVZ_EINVAL, "pruning: no model shape or options");
    int rc = check_options(cfg, opt, err);
    if (rc)
        return rc;
    kvz_prune *p = calloc(1, sizeof *p);
    if (p)
        p->layer = calloc(cfg->n_layers, sizeof *p->layer);
    for (size_t l = 0; p && p->layer && l < cfg->n_layers; l++)
        if (!(p->layer[l].head = calloc(cfg->n_kv_heads, sizeof(head_state)))) {
            kvz_prune_free(p);
            p = NULL;
        }
    if (!p || !p->layer) {
        if (p)
            free(p);
        return kvz_fail(err, KVZ_ENOMEM, "pruning: out of memory");
    }
    p->o = *opt;
    if (!p->o.window)
        p->o.window = 128;
    if (!p->o.n_sink)
        p->o.n_sink = 4;
    if (!p->o.snap_queries)
        p->o.snap_queries = 64;
    p->L = cfg->n_layers;
    p->D = cfg->d_model;
    p->H = cfg->n_heads;
    p->hkv = cfg->n_kv_heads;
    p->dh = cfg->head_dim;
    *out = p;
    return KVZ_OK;
}

void kvz_prune_free(kvz_prune *p)
{
    if (!p)
        return;
    for (size_t l = 0; p->layer && l < p->L; l++) {
        for (size_t g = 0; p->layer[l].head && g < p->hkv; g++) {
            free(p->layer[l].head[g].pos);
            free(p->layer[l].head[g].score);
        }
        free(p->layer[l].head);
    }
    free(p->layer);
    free(p->x), free(p->y), free(p->scratch), free(p->evict), free(p->cand), free(p->snap);
    free(p);
}

void kvz_prune_set_prefill(kvz_prune *p, int on)
{
    p->prefill = on != 0;
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem, const char *what,
                kvz_error *err)
{
    if (need <= *cap)
        return KVZ_OK;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    void *b = realloc(*buf, n * elem);
    if (!b)
        return kvz_fail(err, KVZ_ENOMEM, "pruning: out of memory for %zu %s", n, what);
    *buf = b;
    *cap = n;
    return KVZ_OK;
}

static int host_rows(kvz_prune *p, size_t n, kvz_error *err)
{
    if (n <= p->rows)
        return KVZ_OK;
    free(p->x), free(p->y), free(p->scratch);
    size_t sdh = p->o.surrogate && p->o.surrogate->d_hidden ? p->o.surrogate->d_hidden : 1;
    p->x = malloc(n * p->D * sizeof *p->x);
    p->y = malloc(n * p->hkv * sizeof *p->y);
    p->scratch = malloc(n * sdh * sizeof *p->scratch);
    p->rows = p->x && p->y && p->scratch ? n : 0;
    return p->rows ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "pruning: out of memory for %zu rows", n);
}

/* Host view of a backend array (downloaded into dst unless host memory). */
static const float *host_view(kvz_backend *be, const float *src, float *dst, size_t n,
                              kvz_error *err, int *rc)
{
    if (!be || kvz_backend_host_memory(be))
        return src;
    *rc = kvz_backend_download(be, dst, src, n * sizeof(float), err);
    return dst;
}

static uint64_t splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The chunk's scores into p->y [n, Hkv] (snapkv: placeholders, re-scored
 * after the push). */
static int score_chunk(kvz_prune *p, const kvz_prune_call *c, kvz_error *err)
{
    size_t n = c->n, hkv = p->hkv;
    int rc = KVZ_OK;
    switch (p->o.method) {
    case KVZ_PRUNE_KVZAP: {
        kvz_backend *be = c->cache ? kvz_kv_cache_backend(c->cache) : NULL;
        const float *hx = host_view(be, c->x, p->x, n * p->D, err, &rc);
        return rc ? rc : kvz_surrogate_predict(p->o.surrogate, c->layer, hx, n, p->y, p->scratch, err);
    }
    case KVZ_PRUNE_ORACLE:
        for (size_t t = 0; t < n; t++)
            for (size_t g = 0; g < hkv; g++) {
                size_t pos = c->pos0 + t;
                p->y[t * hkv + g] = pos < p->o.scores_len
                                        ? p->o.scores[(c->layer * hkv + g) * p->o.scores_len + pos]
                                        : INFINITY;
            }
        return KVZ_OK;
    case KVZ_PRUNE_STREAMING:
        for (size_t t = 0; t < n; t++)
            for (size_t g = 0; g < hkv; g++) {
                size_t pos = c->pos0 + t;
                p->y[t * hkv + g] = pos < p->o.n_sink ? INFINITY : (float)pos;
            }
        return KVZ_OK;
    case KVZ_PRUNE_RANDOM:
        for (size_t t = 0; t < n; t++)
            for (size_t g = 0; g < hkv; g++) {
                uint64_t h = splitmix64(p->o.seed ^ splitmix64(((uint64_t)c->layer << 40) ^
                                                               ((uint64_t)g << 32) ^
                                                               (uint64_t)(c->pos0 + t)));
                p->y[t * hkv + g] = (float)(h >> 40) * (1.0f / 16777216.0f);
            }
        return KVZ_OK;
    default:
        for (size_t i = 0; i < n * hkv; i++)
            p->y[i] = INFINITY;
        return KVZ_OK;
    }
}

/* Appends the chunk to every head's list: positions the policy was not run
 * on (between calls that ran) first, as +inf, then the chunk's scores. */
static int push_chunk(kvz_prune *p, layer_state *ls, size_t pos0, size_t n, kvz_error *err)
{
    size_t gap = pos0 - ls->scored;
    for (size_t g = 0; g < p->hkv; g++) {
        head_state *h = &ls->head[g];
        size_t need = h->n + gap + n;
        if (need > h->cap) {
            size_t cap = h->cap ? h->cap : 256;
            while (cap < need)
                cap *= 2;
            int32_t *pos = realloc(h->pos, cap * sizeof *pos);
            if (pos)
                h->pos = pos;
            float *score = pos ? realloc(h->score, cap * sizeof *score) : NULL;
            if (!score)
                return kvz_fail(err, KVZ_ENOMEM, "pruning: out of memory for %zu positions", cap);
            h->score = score;
            h->cap = cap;
        }
        for (size_t t = 0; t < gap; t++) {
            h->pos[h->n] = (int32_t)(ls->scored + t);
            h->score[h->n++] = INFINITY;
        }
        for (size_t t = 0; t < n; t++) {
            h->pos[h->n] = (int32_t)(pos0 + t);
            h->score[h->n++] = p->y[t * p->hkv + g];
        }
    }
    ls->scored = ls->seen = pos0 + n;
    return KVZ_OK;
}

/* Evicts the listed positions (ascending) of (layer, head): the cache (or
 * the runtime's callback) and the policy's own list. */
static int evict(kvz_prune *p, const kvz_prune_call *c, size_t layer, size_t g,
                 const int32_t *pos, size_t m, kvz_error *err)
{
    if (!m)
        return KVZ_OK;
    int rc = c->cache ? kvz_kv_cache_evict(c->cache, layer, g, pos, m, err)
                      : p->o.evict ? p->o.evict(p->o.evict_user, layer, g, pos, m, err)
                                   : kvz_fail(err, KVZ_EINVAL,
                                              "pruning: a call without a cache needs the evict "
                                              "callback");
    if (rc)
        return rc;
    head_state *h = &p->layer[layer].head[g];
    size_t w = 0, j = 0;
    for (size_t i = 0; i < h->n; i++) {
        while (j < m && pos[j] < h->pos[i])
            j++;
        if (j < m && pos[j] == h->pos[i])
            continue;
        h->pos[w] = h->pos[i];
        h->score[w++] = h->score[i];
    }
    h->n = w;
    return KVZ_OK;
}

static int cand_less(const candidate *a, const candidate *b)
{
    if (a->score != b->score)
        return a->score < b->score;
    if (a->pos != b->pos)
        return a->pos < b->pos;
    if (a->layer != b->layer)
        return a->layer < b->layer;
    return a->head < b->head;
}

/* Reorders c[0..m) so that its k least (score, position, layer, head) come
 * first (quickselect; deterministic pivots). */
static void select_lowest(candidate *c, size_t m, size_t k)
{
    size_t lo = 0, hi = m;
    while (hi - lo > 1 && k > lo && k < hi) {
        candidate piv = c[lo + (hi - lo) / 2];
        size_t i = lo, lt = lo, gt = hi; /* [lo,lt) < piv, [lt,i) == piv, [gt,hi) > piv */
        while (i < gt) {
            if (cand_less(&c[i], &piv)) {
                candidate t = c[i];
                c[i++] = c[lt];
                c[lt++] = t;
            } else if (cand_less(&piv, &c[i])) {
                candidate t = c[i];
                c[i] = c[--gt];
                c[gt] = t;
            } else {
                i++;
            }
        }
        if (k <= lt)
            hi = lt;
        else if (k >= gt)
            lo = gt;
        else
            return;
    }
}

static int cmp_head_pos(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->layer != y->layer)
        return x->layer < y->layer ? -1 : 1;
    if (x->head != y->head)
        return x->head < y->head ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Evicts candidates c[0..k) (any layers and heads): sorted by (layer,
 * head, position), one eviction per head. */
static int evict_candidates(kvz_prune *p, const kvz_prune_call *call, candidate *c, size_t k,
                            kvz_error *err)
{
    int rc = grow((void **)&p->evict, &p->evict_cap, k, sizeof *p->evict, "evictions", err);
    if (!rc)
        qsort(c, k, sizeof *c, cmp_head_pos);
    for (size_t i = 0; !rc && i < k;) {
        size_t m = 0, l = c[i].layer, g = c[i].head;
        for (; i < k && c[i].layer == l && c[i].head == g; i++)
            p->evict[m++] = c[i].pos;
        rc = evict(p, call, l, g, p->evict, m, err);
    }
    return rc;
}

/* Candidates of (layer, head): kept pairs older than the window. */
static int add_candidates(kvz_prune *p, size_t l, size_t g, size_t *m, kvz_error *err)
{
    const head_state *h = &p->layer[l].head[g];
    size_t seen = p->layer[l].seen, edge = seen > p->o.window ? seen - p->o.window : 0;
    int rc = grow((void **)&p->cand, &p->cand_cap, *m + h->n, sizeof *p->cand, "candidates", err);
    for (size_t i = 0; !rc && i < h->n && (size_t)h->pos[i] < edge; i++)
        p->cand[(*m)++] = (candidate){h->score[i], h->pos[i], (uint32_t)l, (uint32_t)g};
    return rc;
}

static int decide_threshold(kvz_prune *p, const kvz_prune_call *c, kvz_error *err)
{
    layer_state *ls = &p->layer[c->layer];
    size_t buffered = ls->seen - ls->buf_pos0;
    if (buffered <= p->o.window)
        return KVZ_OK;
    size_t out = buffered - p->o.window, end = ls->buf_pos0 + out;
    int rc = grow((void **)&p->evict, &p->evict_cap, out, sizeof *p->evict, "evictions", err);
    for (size_t g = 0; !rc && g < p->hkv; g++) {
        const head_state *h = &ls->head[g];
        size_t m = 0;
        /* the buffer's positions are all kept: the last `buffered` entries */
        for (size_t i = h->n - buffered; i < h->n && (size_t)h->pos[i] < end; i++)
            if (h->score[i] < p->o.tau)
                p->evict[m++] = h->pos[i];
        rc = evict(p, c, c->layer, g, p->evict, m, err);
    }
    ls->buf_pos0 = end;
    return rc;
}

static int decide_ratio(kvz_prune *p, const kvz_prune_call *c, kvz_error *err)
{
    layer_state *ls = &p->layer[c->layer];
    size_t seen = ls->seen, win = seen < p->o.window ? seen : p->o.window;
    size_t target = (size_t)((double)seen * (1.0 - p->o.ratio));
    if (target < win)
        target = win;
    int rc = KVZ_OK;
    for (size_t g = 0; !rc && g < p->hkv; g++) {
        size_t have = ls->head[g].n, m = 0;
        if (have <= target)
            continue;
        rc = add_candidates(p, c->layer, g, &m, err);
        size_t k = have - target < m ? have - target : m;
        if (!rc && k) {
            select_lowest(p->cand, m, k);
            rc = evict_candidates(p, c, p->cand, k, err);
        }
    }
    return rc;
}

static int decide_budget(kvz_prune *p, const kvz_prune_call *c, kvz_error *err)
{
    if (c->layer + 1 != p->L)
        return KVZ_OK;
    size_t seen = p->layer[c->layer].seen, win = seen < p->o.window ? seen : p->o.window;
    size_t total = p->L * p->hkv;
    size_t target = (size_t)((double)(total * seen) * (1.0 - p->o.ratio)), have = 0, m = 0;
    if (target < total * win)
        target = total * win;
    int rc = KVZ_OK;
    for (size_t l = 0; !rc && l < p->L; l++) {
        if (p->layer[l].seen != seen)
            return kvz_fail(err, KVZ_EINVAL,
                            "pruning (budget): layer %zu has seen %zu positions, the last "
                            "layer %zu; every layer must run each chunk",
                            l, p->layer[l].seen, seen);
        for (size_t g = 0; !rc && g < p->hkv; g++) {
            have += p->layer[l].head[g].n;
            rc = add_candidates(p, l, g, &m, err);
        }
    }
    size_t k = have > target ? have - target : 0;
    if (k > m)
        k = m;
    if (!rc && k) {
        select_lowest(p->cand, m, k);
        rc = evict_candidates(p, c, p->cand, k, err);
    }
    return rc;
}

/* SnapKV-style scores of every kept key of the layer (prune.h). */
static int snapkv_rescore(kvz_prune *p, const kvz_prune_call *c, kvz_error *err)
{
    if (!c->cache)
        return kvz_fail(err, KVZ_EINVAL, "pruning: snapkv needs the ragged cache (its keys)");
    layer_state *ls = &p->layer[c->layer];
    size_t n = c->n, H = p->H, dh = p->dh, gs = H / p->hkv;
    size_t w = n < p->o.snap_queries ? n : p->o.snap_queries;
    size_t maxk = 0;
    for (size_t g = 0; g < p->hkv; g++)
        if (ls->head[g].n > maxk)
            maxk = ls->head[g].n;
    size_t need = w * H * dh + maxk * dh + w * gs * maxk + maxk;
    int rc = grow((void **)&p->snap, &p->snap_cap, need, sizeof *p->snap, "snapkv floats", err);
    if (rc)
        return rc;
    float *qh = p->snap, *kh = qh + w * H * dh, *logit = kh + maxk * dh, *acc = logit + w * gs * maxk;
    kvz_backend *be = kvz_kv_cache_backend(c->cache);
    const float *q = host_view(be, c->q + (n - w) * H * dh, qh, w * H * dh, err, &rc);
    kvz_ragged_attn_args a = {0};
    kvz_kv_cache_view(c->cache, c->layer, &a);
    float scale = 1.0f / sqrtf((float)dh);
    for (size_t g = 0; !rc && g < p->hkv; g++) {
        head_state *h = &ls->head[g];
        size_t cnt = h->n;
        if (kvz_kv_cache_count(c->cache, c->layer, g) != cnt)
            return kvz_fail(err, KVZ_EINVAL,
                            "pruning: layer %zu head %zu: the cache keeps %zu pairs, the policy "
                            "%zu (evicted elsewhere?)",
                            c->layer, g, kvz_kv_cache_count(c->cache, c->layer, g), cnt);
        const float *k = host_view(be, a.k + kvz_kv_cache_head_row0(c->cache, c->layer, g) * dh, kh,
                                   cnt * dh, err, &rc);
        if (rc)
            break;
        /* logit[i*gs + j, t] = q(query i, head g*gs + j) . k_t / sqrt(dh); q rows
         * are [w, H, dh], so the group's gs heads of one query are contiguous */
        for (size_t i = 0; i < w; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)gs, (int)cnt, (int)dh,
                        scale, q + (i * H + g * gs) * dh, (int)dh, k, (int)dh, 0.0f,
                        logit + i * gs * cnt, (int)cnt);
        for (size_t j = 0; j < cnt; j++)
            acc[j] = 0.0f;
        for (size_t i = 0; i < w; i++) {
            int32_t qpos = (int32_t)(c->pos0 + n - w + i);
            for (size_t j = 0; j < gs; j++) {
                float *row = logit + (i * gs + j) * cnt, mx = -INFINITY;
                for (size_t t = 0; t < cnt && h->pos[t] <= qpos; t++)
                    mx = row[t] > mx ? row[t] : mx;
                double sum = 0.0;
                size_t t = 0;
                for (; t < cnt && h->pos[t] <= qpos; t++)
                    sum += (row[t] = expf(row[t] - mx));
                for (size_t u = 0; u < t; u++)
                    acc[u] += (float)(row[u] / sum);
            }
        }
        for (size_t t = 0; t < cnt; t++) {
            float s = 0.0f;
            for (size_t u = t >= 2 ? t - 2 : 0; u <= t + 2 && u < cnt; u++)
                s += acc[u];
            h->score[t] = s / (5.0f * (float)(w * gs));
        }
    }
    return rc;
}

int kvz_prune_layer(void *user, const kvz_prune_call *c, kvz_error *err)
{
    kvz_prune *p = user;
    if (c->layer >= p->L)
        return kvz_fail(err, KVZ_EINVAL, "pruning: layer %zu of a %zu-layer policy", c->layer, p->L);
    layer_state *ls = &p->layer[c->layer];
    if (c->pos0 == 0) {
        for (size_t g = 0; g < p->hkv; g++)
            ls->head[g].n = 0;
        ls->seen = ls->scored = ls->buf_pos0 = 0;
        ls->ratio = 0.0;
        ls->ran = 0;
    } else if (c->pos0 < ls->seen) {
        return kvz_fail(err, KVZ_EINVAL,
                        "pruning: layer %zu: a chunk at position %zu after %zu positions (only a "
                        "reset to 0 may go back)",
                        c->layer, c->pos0, ls->seen);
    }
    if (c->pos0 != 0 && !p->prefill && !p->o.decoding) {
        ls->seen = c->pos0 + c->n; /* kept as they come; pushed as +inf if the policy runs again */
        return KVZ_OK;
    }
    int rc = host_rows(p, c->n, err);
    double t0 = now_seconds();
    rc = rc ? rc : score_chunk(p, c, err);
    rc = rc ? rc : push_chunk(p, ls, c->pos0, c->n, err);
    if (!rc && p->o.method == KVZ_PRUNE_SNAPKV)
        rc = snapkv_rescore(p, c, err);
    p->score_seconds += now_seconds() - t0;
    if (!rc && p->o.method != KVZ_PRUNE_FULL) {
        if (p->o.mode == KVZ_PRUNE_THRESHOLD)
            rc = decide_threshold(p, c, err);
        else if (p->o.mode == KVZ_PRUNE_RATIO)
            rc = decide_ratio(p, c, err);
        else
            rc = decide_budget(p, c, err);
    }
    if (rc)
        return rc;
    size_t first = p->o.mode == KVZ_PRUNE_BUDGET && c->layer + 1 == p->L ? 0 : c->layer;
    for (size_t l = first; l <= c->layer; l++) {
        layer_state *s = &p->layer[l];
        size_t kept = 0;
        for (size_t g = 0; g < p->hkv; g++)
            kept += s->head[g].n;
        size_t all = p->hkv * s->seen;
        s->ratio = all ? (double)(all - kept) / (double)all : 0.0;
        s->ran = 1;
    }
    return KVZ_OK;
}

double kvz_prune_layer_compression(const kvz_prune *p, size_t layer)
{
    return layer < p->L ? p->layer[layer].ratio : 0.0;
}

double kvz_prune_compression(const kvz_prune *p)
{
    double sum = 0.0;
    size_t n = 0;
    for (size_t l = 0; l < p->L; l++)
        if (p->layer[l].ran) {
            sum += p->layer[l].ratio;
            n++;
        }
    return n ? sum / (double)n : 0.0;
}
