/* kvzip_chunked_score: the passes of chunked KVzip+ scoring (see the notes
 * in kvzip_chunked.c for kvpress's semantics). One prefill of the prompt
 * (capturing x at the sampled positions), then per chunk one repeat input
 * on top of the cache whose layer tap scores the chunk's keys, then
 * kvz_forward_truncate back to the prompt.
 *
 * Per layer and chunk [c0, c1) with sinks [0, ns) and repeat rows at
 * absolute positions base.. : for query head g and repeat row r,
 *   lse[r] = log-sum-exp of q_r . k_i / sqrt(dh) over i in sinks, chunk and
 *            own keys base..base+r (blockwise, online, double sums);
 *   y[i]   = max over r, g in group of q_r . k_i / sqrt(dh) - lse[r]
 *            - ln ||x_r|| + ln ||W_O^g v_i||   for i in the chunk.
 * Items (query head, part of the rows) run on the ops thread pool. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"
#include "kvzip_chunked.h"
#include "kvzip_score.h"

enum { CQ_BLOCK = 64, CK_BLOCK = 256, N_SINK = 4, PREV_TAIL = 8 };

#define INSTRUCTION_FIRST "\n\nRepeat the previous context exactly."
#define INSTRUCTION_NEXT "\n\nRepeat the part of the previous context exactly, starting with"

typedef struct chunk_job {
    const kvz_layer_tap *tap;
    size_t H, Hkv, dh, D;
    float scale;
    size_t n_sink, c0, c1; /* sinks [0, n_sink), chunk [c0, c1) (absolute) */
    size_t n_parts, part_len;
    double *log_xnorm; /* [rows] */
    double *lognorm;   /* [H, nC] */
    double *best;      /* [H * n_parts, nC] */
    int *status;       /* [max(H, H * n_parts)] */
} chunk_job;

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* s[nq, nk] = scale * q_r . k_i, repeat rows [r0, r0+nq), keys [i0, i0+nk). */
static void logits_block(const chunk_job *jb, size_t g, size_t r0, size_t nq, size_t i0,
                         size_t nk, float *s)
{
    size_t h = g / (jb->H / jb->Hkv), q_stride = jb->H * jb->dh, kv_stride = jb->Hkv * jb->dh;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nq, (blasint)nk,
                (blasint)jb->dh, jb->scale, jb->tap->q + r0 * q_stride + g * jb->dh,
                (blasint)q_stride, jb->tap->k + i0 * kv_stride + h * jb->dh, (blasint)kv_stride,
                0.0f, s, (blasint)nk);
}

/* Online log-sum-exp update of (m, l) with row[0..n). */
static void lse_update(const float *row, size_t n, double *m, double *l)
{
    double bm = -INFINITY;
    for (size_t c = 0; c < n; c++)
        bm = row[c] > bm ? row[c] : bm;
    if (bm > *m) {
        *l *= exp(*m - bm);
        *m = bm;
    }
    float mf = (float)*m;
    double sum = 0.0;
    for (size_t c = 0; c < n; c++)
        sum += expf(row[c] - mf);
    *l += sum;
}

/* Log-sum-exp update of rows [r0, r0+nq) over keys [ib, ie); causal: row r
 * sees keys up to base + r only. */
static void lse_segment(const chunk_job *jb, size_t g, size_t r0, size_t nq, size_t ib,
                        size_t ie, int causal, float *s, double *m, double *l)
{
    size_t base = jb->tap->pos0;
    for (size_t i0 = ib; i0 < ie; i0 += CK_BLOCK) {
        size_t nk = min_sz(ie - i0, CK_BLOCK);
        logits_block(jb, g, r0, nq, i0, nk, s);
        for (size_t r = 0; r < nq; r++) {
            size_t last = base + r0 + r; /* last visible key (causal) */
            if (causal && last < i0)
                continue;
            lse_update(s + r * nk, causal ? min_sz(nk, last + 1 - i0) : nk, &m[r], &l[r]);
        }
    }
}

/* best[i-c0] = max over rows [r0, r0+nq) of the chunk key's log-score, from
 * the chunk logits sc[nq, nC]. */
static void chunk_best(const chunk_job *jb, size_t nq, const float *sc, const double *shift,
                       const double *lognorm, double *best)
{
    size_t nC = jb->c1 - jb->c0;
    for (size_t r = 0; r < nq; r++)
        for (size_t c = 0; c < nC; c++) {
            double y = (double)sc[r * nC + c] - shift[r] + lognorm[c];
            if (y > best[c])
                best[c] = y;
        }
}


/* Item = (query head, part of the repeat rows). */
static void score_item(void *ctx, size_t item)
{
    const chunk_job *jb = ctx;
    size_t nC = jb->c1 - jb->c0, g = item / jb->n_parts, rows = jb->tap->n_tokens;
    size_t r_begin = (item % jb->n_parts) * jb->part_len;
    size_t r_end = min_sz(rows, r_begin + jb->part_len);
    double *best = jb->best + item * nC;
    for (size_t i = 0; i < nC; i++)
        best[i] = -INFINITY;
    float *s = malloc((size_t)CQ_BLOCK * CK_BLOCK * sizeof *s);
    float *sc = malloc((size_t)CQ_BLOCK * nC * sizeof *sc); /* chunk logits, reused */
    jb->status[item] = s && sc ? KVZ_OK : KVZ_ENOMEM;
    for (size_t r0 = r_begin; s && sc && r0 < r_end; r0 += CQ_BLOCK) {
        size_t nq = min_sz(r_end - r0, CQ_BLOCK);
        double m[CQ_BLOCK], l[CQ_BLOCK], shift[CQ_BLOCK];
        for (size_t r = 0; r < nq; r++)
            m[r] = -INFINITY, l[r] = 0.0;
        lse_segment(jb, g, r0, nq, 0, jb->n_sink, 0, s, m, l);
        logits_block(jb, g, r0, nq, jb->c0, nC, sc);
        for (size_t r = 0; r < nq; r++)
            lse_update(sc + r * nC, nC, &m[r], &l[r]);
        lse_segment(jb, g, r0, nq, jb->tap->pos0, jb->tap->pos0 + r0 + nq, 1, s, m, l);
        for (size_t r = 0; r < nq; r++)
            shift[r] = m[r] + log(l[r]) + jb->log_xnorm[r0 + r];
        chunk_best(jb, nq, sc, shift, jb->lognorm + g * nC, best);
    }
    free(s);
    free(sc);
}

static void plan_parts(chunk_job *jb)
{
    size_t rows = jb->tap->n_tokens, n_blocks = (rows + CQ_BLOCK - 1) / CQ_BLOCK;
    size_t threads = (size_t)(kvz_ops_threads() > 0 ? kvz_ops_threads() : 1);
    size_t want = (2 * threads + jb->H - 1) / jb->H;
    size_t n = min_sz(want, n_blocks);
    n = n ? n : 1;
    jb->part_len = (n_blocks + n - 1) / n * CQ_BLOCK;
    jb->n_parts = (rows + jb->part_len - 1) / jb->part_len;
}

static int first_failure(const int *status, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (status[i] != KVZ_OK)
            return status[i];
    return KVZ_OK;
}

/* out[(i-c0)*Hkv + h] = max over the group's heads and row parts. */
static void reduce_heads(const chunk_job *jb, float *out)
{
    size_t nC = jb->c1 - jb->c0, per_h = jb->H / jb->Hkv * jb->n_parts;
    for (size_t i = 0; i < nC; i++)
        for (size_t h = 0; h < jb->Hkv; h++) {
            double b = -INFINITY;
            for (size_t item = h * per_h; item < (h + 1) * per_h; item++)
                b = jb->best[item * nC + i] > b ? jb->best[item * nC + i] : b;
            out[i * jb->Hkv + h] = (float)b;
        }
}

/* Scores one layer's chunk keys into out[nC, Hkv]. */
static int score_chunk_layer(const kvz_layer_tap *tap, const kvz_model_config *cfg,
                             size_t n_sink, size_t c0, size_t c1, float *out, kvz_error *err)
{
    chunk_job jb;
    memset(&jb, 0, sizeof jb);
    jb.tap = tap, jb.H = cfg->n_heads, jb.Hkv = cfg->n_kv_heads, jb.dh = cfg->head_dim;
    jb.D = cfg->d_model, jb.scale = (float)(1.0 / sqrt((double)jb.dh));
    jb.n_sink = n_sink, jb.c0 = c0, jb.c1 = c1;
    plan_parts(&jb);
    size_t nC = c1 - c0, n_items = jb.H * jb.n_parts, rows = tap->n_tokens;
    jb.log_xnorm = malloc(rows * sizeof *jb.log_xnorm);
    jb.lognorm = malloc(jb.H * nC * sizeof *jb.lognorm);
    jb.best = malloc(n_items * nC * sizeof *jb.best);
    jb.status = calloc(n_items > jb.H ? n_items : jb.H, sizeof *jb.status);
    int rc = KVZ_ENOMEM;
    if (jb.log_xnorm && jb.lognorm && jb.best && jb.status) {
        kvz_backend *be = tap->backend ? tap->backend : kvz_backend_host();
        rc = kvz_op_row_lognorms(be, tap->x, jb.D, jb.D, rows, jb.log_xnorm, err);
        rc = rc ? rc
                : kvz_op_value_lognorms(be, tap->v, tap->w_o, jb.H, jb.Hkv, jb.dh, jb.D, c0, c1,
                                        jb.lognorm, err);
        if (rc == KVZ_OK) {
            kvz_parallel_for(n_items, score_item, &jb);
            rc = first_failure(jb.status, n_items);
        }
        if (rc == KVZ_OK)
            reduce_heads(&jb, out);
    }
    free(jb.log_xnorm);
    free(jb.lognorm);
    free(jb.best);
    free(jb.status);
    if (rc != KVZ_OK)
        return kvz_fail(err, rc, "kvzip chunked: layer %zu: out of memory scoring chunk [%zu, %zu)",
                        tap->layer, c0, c1);
    return KVZ_OK;
}

/* ---- the passes ---- */

typedef struct pass_ctx {
    const kvz_model_config *cfg;
    const size_t *positions;
    size_t n_pos;
    float *out_hidden, *out_logscores;
    size_t n_sink, c0, c1; /* current chunk */
    float *chunk_scores;   /* [chunk_size, Hkv] */
} pass_ctx;

/* Index of the first sampled position >= pos. */
static size_t first_at_or_after(const pass_ctx *pc, size_t pos)
{
    size_t lo = 0, hi = pc->n_pos;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pc->positions[mid] < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int prefill_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    (void)err;
    const pass_ctx *pc = user;
    size_t D = pc->cfg->d_model, end = tap->pos0 + tap->n_tokens;
    for (size_t p = first_at_or_after(pc, tap->pos0); p < pc->n_pos && pc->positions[p] < end; p++)
        memcpy(pc->out_hidden + (tap->layer * pc->n_pos + p) * D,
               tap->x + (pc->positions[p] - tap->pos0) * D, D * sizeof(float));
    return KVZ_OK;
}

static int repeat_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    const pass_ctx *pc = user;
    size_t Hkv = pc->cfg->n_kv_heads;
    int rc = score_chunk_layer(tap, pc->cfg, pc->n_sink, pc->c0, pc->c1, pc->chunk_scores, err);
    if (rc != KVZ_OK)
        return rc;
    for (size_t p = first_at_or_after(pc, pc->c0); p < pc->n_pos && pc->positions[p] < pc->c1; p++)
        memcpy(pc->out_logscores + (tap->layer * pc->n_pos + p) * Hkv,
               pc->chunk_scores + (pc->positions[p] - pc->c0) * Hkv, Hkv * sizeof(float));
    return KVZ_OK;
}

typedef struct repeat_parts {
    int32_t *first, *next; /* tokenized instructions */
    size_t n_first, n_next;
    int32_t *ids; /* scratch for one repeat input */
} repeat_parts;

static int tokenize_instruction(const kvz_tokenizer *tok, const char *s, int32_t **ids, size_t *n,
                                kvz_error *err)
{
    kvz_tokens t;
    memset(&t, 0, sizeof t);
    int rc = kvz_tokenize(tok, s, strlen(s), 0, &t, err);
    if (rc == KVZ_OK) {
        *ids = malloc((t.n ? t.n : 1) * sizeof **ids);
        if (*ids) {
            memcpy(*ids, t.ids, t.n * sizeof **ids);
            *n = t.n;
        } else
            rc = kvz_fail(err, KVZ_ENOMEM, "kvzip chunked: out of memory");
    } else
        rc = kvz_fail(err, rc, "kvzip chunked: tokenizing the repeat instruction: %s", err->msg);
    kvz_tokens_free(&t);
    return rc;
}

static void repeat_parts_free(repeat_parts *rp)
{
    free(rp->first);
    free(rp->next);
    free(rp->ids);
}

/* Repeat input of the chunk [c0, c1): instruction (+ tail of the previous
 * chunk), suffix, the chunk's ids. Returns its length. */
static size_t build_repeat(const repeat_parts *rp, const kvz_chunked_prompt *p, size_t c0,
                           size_t c1)
{
    size_t n = 0;
    int first = c0 == p->context_start;
    memcpy(rp->ids, first ? rp->first : rp->next,
           (first ? rp->n_first : rp->n_next) * sizeof *rp->ids);
    n += first ? rp->n_first : rp->n_next;
    if (!first) {
        size_t tail = min_sz(PREV_TAIL, c0 - p->context_start);
        memcpy(rp->ids + n, p->ids + c0 - tail, tail * sizeof *rp->ids);
        n += tail;
    }
    memcpy(rp->ids + n, p->suffix_ids, p->n_suffix * sizeof *rp->ids);
    n += p->n_suffix;
    memcpy(rp->ids + n, p->ids + c0, (c1 - c0) * sizeof *rp->ids);
    return n + (c1 - c0);
}

static int check_score_args(const kvz_forward *f, const kvz_tokenizer *tok,
                            const kvz_chunked_prompt *p, size_t chunk_size,
                            const size_t *positions, size_t n_pos, const float *out_logscores,
                            kvz_error *err)
{
    if (!f || !tok || !p || !p->ids || (n_pos && (!positions || !out_logscores)))
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip chunked: NULL forward, tokenizer, prompt, positions or output");
    if (chunk_size == 0)
        return kvz_fail(err, KVZ_EINVAL, "kvzip chunked: chunk_size is 0 (must be >= 1)");
    if (p->context_start >= p->context_end || p->context_end > p->n_ids)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip chunked: bad prompt: context [%zu, %zu) in %zu ids",
                        p->context_start, p->context_end, p->n_ids);
    for (size_t i = 0; i < n_pos; i++) {
        if (positions[i] < p->context_start || positions[i] >= p->context_end)
            return kvz_fail(err, KVZ_EINVAL,
                            "kvzip chunked: position %zu (index %zu) is outside the context "
                            "[%zu, %zu)",
                            positions[i], i, p->context_start, p->context_end);
        if (i && positions[i] <= positions[i - 1])
            return kvz_fail(err, KVZ_EINVAL,
                            "kvzip chunked: positions must ascend strictly: index %zu has %zu "
                            "after %zu",
                            i, positions[i], positions[i - 1]);
    }
    return KVZ_OK;
}

/* Prefill in slices (bounded scratch); the cache ends holding all ids. */
static int prefill(kvz_forward *f, const kvz_chunked_prompt *p, pass_ctx *pc, kvz_error *err)
{
    enum { SLICE = 4096 };
    for (size_t s = 0; s < p->n_ids; s += SLICE) {
        size_t n = min_sz(SLICE, p->n_ids - s);
        int rc = kvz_forward_run(f, p->ids + s, n, pc->out_hidden ? prefill_tap : NULL, pc,
                                 KVZ_LOGITS_NONE, NULL, err);
        if (rc != KVZ_OK)
            return rc;
    }
    return KVZ_OK;
}

static int score_chunks(kvz_forward *f, const kvz_chunked_prompt *p, size_t chunk_size,
                        const repeat_parts *rp, pass_ctx *pc, kvz_error *err)
{
    for (size_t c0 = p->context_start; c0 < p->context_end; c0 += chunk_size) {
        size_t c1 = min_sz(p->context_end, c0 + chunk_size);
        pc->c0 = c0, pc->c1 = c1, pc->n_sink = min_sz(N_SINK, c0);
        size_t n = build_repeat(rp, p, c0, c1);
        int rc = kvz_forward_run(f, rp->ids, n, repeat_tap, pc, KVZ_LOGITS_NONE, NULL, err);
        kvz_forward_truncate(f, p->n_ids);
        if (rc != KVZ_OK)
            return rc;
    }
    return KVZ_OK;
}

int kvz_kvzip_chunked_score(kvz_forward *f, const kvz_tokenizer *tok,
                            const kvz_chunked_prompt *p, size_t chunk_size,
                            const size_t *positions, size_t n_pos, float *out_hidden,
                            float *out_logscores, kvz_error *err)
{
    int rc = check_score_args(f, tok, p, chunk_size, positions, n_pos, out_logscores, err);
    if (rc != KVZ_OK)
        return rc;
    const kvz_model_config *cfg = kvz_forward_config(f);
    size_t n_ctx = p->context_end - p->context_start;
    size_t cs = min_sz(chunk_size, n_ctx);
    repeat_parts rp;
    memset(&rp, 0, sizeof rp);
    pass_ctx pc = {cfg, positions, n_pos, out_hidden, out_logscores, 0, 0, 0, NULL};
    rc = tokenize_instruction(tok, INSTRUCTION_FIRST, &rp.first, &rp.n_first, err);
    if (rc == KVZ_OK)
        rc = tokenize_instruction(tok, INSTRUCTION_NEXT, &rp.next, &rp.n_next, err);
    if (rc == KVZ_OK) {
        size_t n_instr = rp.n_first > rp.n_next + PREV_TAIL ? rp.n_first : rp.n_next + PREV_TAIL;
        rp.ids = malloc((n_instr + p->n_suffix + cs) * sizeof *rp.ids);
        pc.chunk_scores = malloc(cs * cfg->n_kv_heads * sizeof *pc.chunk_scores);
        if (!rp.ids || !pc.chunk_scores)
            rc = kvz_fail(err, KVZ_ENOMEM, "kvzip chunked: out of memory");
    }
    if (rc == KVZ_OK) {
        kvz_forward_reset(f);
        rc = prefill(f, p, &pc, err);
        if (rc == KVZ_OK)
            rc = score_chunks(f, p, cs, &rp, &pc, err);
    }
    free(pc.chunk_scores);
    repeat_parts_free(&rp);
    return rc;
}
