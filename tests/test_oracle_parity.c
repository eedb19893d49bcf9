/* test_oracle_parity: the single-pass KVzip+ oracle (kvzip_oracle/oracle_doc.h)
 * against its PyTorch reference (tests/reference/oracle_reference.py, fixtures
 * of tests/reference/make_oracle_fixtures.py in tests/fixtures/oracle/):
 * the real SmolLM2-135M-Instruct GGUF (its tokenizer and chatml template) and
 * the tiny random Qwen3 (QK-norm, NFC tokenizer, think block) and Llama-3
 * (llama3 RoPE scaling, double BOS) checkpoints with their small trained
 * tokenizers, on prose, C code, German and math documents.
 * Per document:
 *   - kvz_oracle_prompt_build: the same ids (exact) and the same P and R;
 *     the rendering equals the reference's apply_chat_template text;
 *   - kvz_oracle_score_single on the reference ids, all of P: log-scores
 *     within 1e-3 absolute everywhere (the reference is float64 log-domain
 *     on fp32 q/k/v/x, so every value is finite), hidden states x at the
 *     stored layers/positions within ||delta||/||ref|| <= 1e-4 per row. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kvzip_oracle/oracle_doc.h"
#include "../model/chat_template.h"
#include "../model/checkpoint.h"
#include "../model/forward.h"
#include "../model/tokenizer.h"
#include "kvz_test.h"
#include "test_forward_parity_fixture.h"

#define SCORE_ATOL 1e-3
#define HIDDEN_RTOL 1e-4

typedef struct oracle_model {
    kvz_forward *f;
    kvz_tokenizer *tok;
    kvz_chat_template *tpl;
    size_t L, D, Hkv;
} oracle_model;

typedef struct worst {
    double score, hidden;
} worst;

static int model_open(const char *path, oracle_model *m)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    memset(m, 0, sizeof *m);
    int rc = kvz_checkpoint_open(path, &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        kvz_forward_options opt = {.n_threads = 2, .max_tokens = 0, .attn_block = 0};
        rc = kvz_forward_create(ck, &opt, &m->f, &err);
        KVZ_CHECK_OK(rc, err);
    }
    kvz_checkpoint_close(ck);
    if (rc == KVZ_OK) {
        rc = kvz_tokenizer_load(path, &m->tok, &err);
        KVZ_CHECK_OK(rc, err);
    }
    if (rc == KVZ_OK) {
        rc = kvz_chat_template_load(path, NULL, &m->tpl, &err);
        KVZ_CHECK_OK(rc, err);
    }
    if (rc == KVZ_OK) {
        const kvz_model_config *cfg = kvz_forward_config(m->f);
        m->L = cfg->n_layers;
        m->D = cfg->d_model;
        m->Hkv = cfg->n_kv_heads;
    }
    return rc;
}

static void model_close(oracle_model *m)
{
    kvz_chat_template_free(m->tpl);
    kvz_tokenizer_free(m->tok);
    kvz_forward_free(m->f);
}

static size_t json_pair(const json_t *doc, const char *key, size_t i)
{
    return (size_t)json_integer_value(json_array_get(json_object_get(doc, key), i));
}

/* Prompt, P/R and rendering of kvzap against the reference. */
static void check_prompt(const char *model, const oracle_model *m, const json_t *doc, fwd_array ids)
{
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *text = json_string_value(json_object_get(doc, "text"));
    const char *rendered = json_string_value(json_object_get(doc, "rendered"));
    kvz_error err = {0};
    char *ours = NULL, what[160];
    int rc = kvz_chat_render_repeat_prompt(m->tpl, text, &ours, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK)
        KVZ_CHECK(strcmp(ours, rendered) == 0, "%s %s: the rendered repeat prompt differs from "
                  "apply_chat_template's", model, name);
    free(ours);
    kvz_oracle_prompt p = {0};
    rc = kvz_oracle_prompt_build(m->tok, m->tpl, text, strlen(text), &p, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        snprintf(what, sizeof what, "%s %s: repeat prompt ids", model, name);
        kvz_test_equal_i32(what, p.ids, p.n_ids, ids.data, ids.numel);
        size_t want[4] = {json_pair(doc, "context", 0), json_pair(doc, "context", 1),
                          json_pair(doc, "repeat", 0), json_pair(doc, "repeat", 1)};
        size_t got[4] = {p.context_start, p.context_end, p.repeat_start, p.repeat_end};
        KVZ_CHECK(memcmp(want, got, sizeof want) == 0,
                  "%s %s: P = [%zu, %zu), R = [%zu, %zu); reference P = [%zu, %zu), R = [%zu, %zu)", model,
                  name, got[0], got[1], got[2], got[3], want[0], want[1], want[2], want[3]);
    }
    kvz_oracle_prompt_free(&p);
}

/* Max |ours - ref| over [L, nP, Hkv]; prints the 5 worst on failure. */
static void check_scores(const char *model, const char *name, const oracle_model *m, const float *ours,
                         const float *ref, size_t p0, size_t nP, worst *w)
{
    size_t n = m->L * nP * m->Hkv, top[5] = {0};
    double topd[5] = {-1, -1, -1, -1, -1}, worst_d = 0.0;
    size_t n_bad = 0, n_nonfinite = 0;
    for (size_t e = 0; e < n; e++) {
        double d = fabs((double)ours[e] - (double)ref[e]);
        if (!isfinite(ours[e]))
            n_nonfinite++;
        if (!(d <= SCORE_ATOL))
            n_bad++;
        if (!(d <= worst_d))
            worst_d = d;
        for (int k = 0; k < 5; k++)
            if (!(d <= topd[k])) {
                memmove(topd + k + 1, topd + k, (size_t)(4 - k) * sizeof *topd);
                memmove(top + k + 1, top + k, (size_t)(4 - k) * sizeof *top);
                topd[k] = d;
                top[k] = e;
                break;
            }
    }
    if (!(worst_d <= w->score))
        w->score = worst_d;
    KVZ_CHECK(n_nonfinite == 0, "%s %s: %zu non-finite log-scores", model, name, n_nonfinite);
    KVZ_CHECK(n_bad == 0, "%s %s: %zu of %zu log-scores off by more than %g (worst %.3g)", model, name,
              n_bad, n, SCORE_ATOL, worst_d);
    for (int k = 0; n_bad && k < 5 && topd[k] >= 0; k++) {
        size_t e = top[k], h = e % m->Hkv, i = (e / m->Hkv) % nP, l = e / (m->Hkv * nP);
        printf("  %s %s layer %zu pos %zu head %zu: ours %.6f ref %.6f\n", model, name, l, p0 + i, h,
               ours[e], ref[e]);
    }
}

/* Hidden states at the stored layers/positions, per-row relative norm. */
static void check_hidden(const char *model, const char *name, const oracle_model *m, const fwd_fixture *fx,
                         const float *ours, size_t p0, size_t nP, worst *w)
{
    fwd_array layers = fwd_get(fx, name, "x_layers"), pos = fwd_get(fx, name, "x_pos");
    fwd_array x = fwd_get(fx, name, "x");
    KVZ_CHECK(layers.data && pos.data && x.numel == layers.numel * pos.numel * m->D, "%s %s: x arrays",
              model, name);
    if (!layers.data || !pos.data || x.numel != layers.numel * pos.numel * m->D)
        return;
    for (size_t a = 0; a < layers.numel; a++)
        for (size_t b = 0; b < pos.numel; b++) {
            size_t l = (size_t)((const int32_t *)layers.data)[a];
            size_t p = (size_t)((const int32_t *)pos.data)[b];
            KVZ_CHECK(l < m->L && p >= p0 && p < p0 + nP, "%s %s: x at layer %zu pos %zu outside", model,
                      name, l, p);
            if (l >= m->L || p < p0 || p >= p0 + nP)
                continue;
            const float *ref = (const float *)x.data + (a * pos.numel + b) * m->D;
            const float *got = ours + (l * nP + (p - p0)) * m->D;
            char what[160];
            snprintf(what, sizeof what, "%s %s x layer %zu pos %zu", model, name, l, p);
            fwd_check_rel(what, got, ref, m->D, HIDDEN_RTOL, &w->hidden);
        }
}

static void check_doc(const char *model, oracle_model *m, const fwd_fixture *fx, const json_t *doc,
                      worst *w)
{
    const char *name = json_string_value(json_object_get(doc, "name"));
    fwd_array ids = fwd_get(fx, name, "ids"), ref = fwd_get(fx, name, "log_scores");
    KVZ_CHECK(ids.data && ref.data, "%s %s: fixture arrays missing", model, name);
    if (!ids.data || !ref.data)
        return;
    check_prompt(model, m, doc, ids);
    /* Score the reference ids, so a tokenizer mismatch does not hide the scores. */
    kvz_oracle_prompt p = {malloc(ids.numel * sizeof(int32_t)), ids.numel,
                           json_pair(doc, "context", 0), json_pair(doc, "context", 1),
                           json_pair(doc, "repeat", 0), json_pair(doc, "repeat", 1)};
    size_t nP = p.context_end - p.context_start;
    size_t *pos = malloc(nP * sizeof *pos);
    float *hidden = malloc(m->L * nP * m->D * sizeof(float));
    float *scores = malloc(m->L * nP * m->Hkv * sizeof(float));
    KVZ_CHECK(p.ids && pos && hidden && scores, "out of memory");
    KVZ_CHECK(ref.numel == m->L * nP * m->Hkv, "%s %s: log_scores shape", model, name);
    if (p.ids && pos && hidden && scores && ref.numel == m->L * nP * m->Hkv) {
        memcpy(p.ids, ids.data, ids.numel * sizeof(int32_t));
        for (size_t i = 0; i < nP; i++)
            pos[i] = p.context_start + i;
        kvz_error err = {0};
        int rc = kvz_oracle_score_single(m->f, &p, pos, nP, hidden, scores, &err);
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK) {
            check_scores(model, name, m, scores, ref.data, p.context_start, nP, w);
            check_hidden(model, name, m, fx, hidden, p.context_start, nP, w);
        }
    }
    free(p.ids);
    free(pos);
    free(hidden);
    free(scores);
}

static void check_model(const char *model, const char *path)
{
    fwd_fixture fx;
    oracle_model m = {0};
    if (fwd_fixture_load_from("oracle", model, &fx) == 0 && model_open(path, &m) == KVZ_OK) {
        worst w = {0};
        json_t *docs = json_object_get(fx.index, "docs");
        KVZ_CHECK(json_array_size(docs) >= 3, "%s: fewer than 3 documents", model);
        KVZ_CHECK(fwd_meta_size(&fx, "n_layers") == m.L && fwd_meta_size(&fx, "n_kv_heads") == m.Hkv,
                  "%s: fixture shape differs from the checkpoint", model);
        for (size_t i = 0; i < json_array_size(docs); i++)
            check_doc(model, &m, &fx, json_array_get(docs, i), &w);
        printf("%s: %zu documents, worst |log-score delta| %.3g (tol %g), worst x ||delta||/||ref|| %.3g "
               "(tol %g)\n", model, json_array_size(docs), w.score, SCORE_ATOL, w.hidden, HIDDEN_RTOL);
    }
    model_close(&m);
    fwd_fixture_free(&fx);
}

int main(void)
{
    char tiny_q[1024], tiny_l[1024];
    snprintf(tiny_q, sizeof tiny_q, "%s", kvz_test_fixture("tiny/qwen3_f16"));
    snprintf(tiny_l, sizeof tiny_l, "%s", kvz_test_fixture("tiny/llama3_f32"));
    check_model("qwen3_f16", tiny_q);
    check_model("llama3_f32", tiny_l);
    const char *gguf = getenv("KVZAP_DEFAULT_MODEL");
    if (gguf && *gguf)
        check_model("smollm2", gguf);
    else
        printf("KVZAP_DEFAULT_MODEL unset: SmolLM2 skipped\n");
    return kvz_test_done();
}
