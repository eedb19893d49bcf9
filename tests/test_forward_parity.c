/* test_forward_parity: model/forward.c against transformers (fp32, eager
 * attention) on the fixtures of tests/reference/make_forward_fixtures.py:
 * the tiny random llama3 (llama3 RoPE scaling), qwen2 (biases), qwen3
 * (q/k norm, head_dim != d/H) and sharded mistral checkpoints, and the real
 * SmolLM2-135M-Instruct GGUF on prose, code, a chat prompt and a >= 1,000
 * token KVzip repeat prompt. Per prompt: logits rows, logsumexp and argmax at
 * every position, every layer's attention input x (tap), and for the first
 * prompt Q/K (after norm + RoPE) and V of the first and last layer. Pass:
 * ||delta||/||ref|| <= 1e-4 per tensor, identical argmax everywhere. The
 * stored ids are fed directly; kvz_tokenize is checked to reproduce them.
 * The long prompt is fed in chunks so the KV-cache path is covered too
 * (about 15 s in Release, 25 s under ASan on this machine). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/chat_template.h"
#include "../model/forward.h"
#include "../model/tokenizer.h"
#include "kvz_test.h"
#include "test_forward_parity_fixture.h"

#define TOL 1e-4
#define CHUNK 256

typedef struct worst_rel {
    double logits, lse, x, qkv;
} worst_rel;

/* What one prompt's run collects through the tap. */
typedef struct capture {
    size_t n_layers, d, qkv_d, kv_d, T;
    const int32_t *x_pos;
    size_t n_x_pos;
    float *x;            /* [L, n_x_pos, D] */
    int want_qkv;
    size_t last_layer;
    float *q[2], *k[2], *v[2]; /* layer 0 and last: [T, H*dh], [T, Hkv*dh] */
} capture;

static int capture_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    (void)err;
    capture *c = user;
    for (size_t i = 0; i < c->n_x_pos; i++) {
        size_t p = (size_t)c->x_pos[i];
        if (p >= tap->pos0 && p < tap->pos0 + tap->n_tokens)
            memcpy(c->x + (tap->layer * c->n_x_pos + i) * c->d, tap->x + (p - tap->pos0) * c->d,
                   c->d * sizeof(float));
    }
    int slot = tap->layer == 0 ? 0 : tap->layer == c->last_layer ? 1 : -1;
    if (c->want_qkv && slot >= 0) {
        memcpy(c->q[slot] + tap->pos0 * c->qkv_d, tap->q, tap->n_tokens * c->qkv_d * sizeof(float));
        size_t n_all = tap->pos0 + tap->n_tokens;
        memcpy(c->k[slot], tap->k, n_all * c->kv_d * sizeof(float));
        memcpy(c->v[slot], tap->v, n_all * c->kv_d * sizeof(float));
    }
    return KVZ_OK;
}

static double row_lse(const float *row, size_t V, size_t *argmax)
{
    size_t best = 0;
    for (size_t j = 1; j < V; j++)
        if (row[j] > row[best])
            best = j;
    double s = 0.0;
    for (size_t j = 0; j < V; j++)
        s += exp((double)row[j] - row[best]);
    *argmax = best;
    return row[best] + log(s);
}

/* Per-position argmax/lse, and the rows the fixture stores, from a chunk. */
typedef struct logit_summary {
    int32_t *argmax;
    float *lse, *rows; /* rows: [n_logit_pos, V] */
    const int32_t *logit_pos;
    size_t n_logit_pos;
} logit_summary;

static void summarise_chunk(logit_summary *s, const float *logits, size_t pos0, size_t n, size_t V)
{
    for (size_t t = 0; t < n; t++) {
        size_t am;
        s->lse[pos0 + t] = (float)row_lse(logits + t * V, V, &am);
        s->argmax[pos0 + t] = (int32_t)am;
        for (size_t i = 0; i < s->n_logit_pos; i++)
            if ((size_t)s->logit_pos[i] == pos0 + t)
                memcpy(s->rows + i * V, logits + t * V, V * sizeof(float));
    }
}

static void check_qkv(const fwd_fixture *fx, const char *model, const char *pname, capture *c,
                      worst_rel *w)
{
    size_t layers[2] = {0, c->last_layer};
    for (int s = 0; s < 2; s++) {
        char key[16], what[160];
        const char *names[3] = {"q", "k", "v"};
        float *got[3] = {c->q[s], c->k[s], c->v[s]};
        for (int j = 0; j < 3; j++) {
            snprintf(key, sizeof key, "%s%zu", names[j], layers[s]);
            fwd_array ref = fwd_get(fx, pname, key);
            KVZ_CHECK(ref.data != NULL, "%s %s: fixture lacks %s", model, pname, key);
            if (!ref.data)
                continue;
            snprintf(what, sizeof what, "%s %s layer %zu %s", model, pname, layers[s], names[j]);
            fwd_check_rel(what, got[j], ref.data, ref.numel, TOL, &w->qkv);
        }
    }
}

static void check_x(const fwd_fixture *fx, const char *model, const char *pname, capture *c,
                    worst_rel *w)
{
    fwd_array ref = fwd_get(fx, pname, "x");
    KVZ_CHECK(ref.numel == c->n_layers * c->n_x_pos * c->d, "%s %s: x shape", model, pname);
    if (!ref.data || ref.numel != c->n_layers * c->n_x_pos * c->d)
        return;
    for (size_t l = 0; l < c->n_layers; l++) {
        char what[160];
        size_t off = l * c->n_x_pos * c->d;
        double r = fwd_rel_norm(c->x + off, (const float *)ref.data + off, c->n_x_pos * c->d);
        snprintf(what, sizeof what, "%s %s layer %zu attention input x (%zu positions)", model, pname, l,
                 c->n_x_pos);
        fwd_check_rel(what, c->x + off, (const float *)ref.data + off, c->n_x_pos * c->d, TOL, &w->x);
        if (r > TOL) /* name the worst position too */
            for (size_t i = 0; i < c->n_x_pos; i++) {
                double ri = fwd_rel_norm(c->x + off + i * c->d, (const float *)ref.data + off + i * c->d, c->d);
                if (ri > TOL)
                    printf("  %s %s layer %zu position %d: rel %.3g\n", model, pname, l, c->x_pos[i], ri);
            }
    }
}

static void check_logits(const fwd_fixture *fx, const char *model, const char *pname,
                         const logit_summary *s, size_t T, size_t V, worst_rel *w)
{
    fwd_array am = fwd_get(fx, pname, "argmax"), lse = fwd_get(fx, pname, "lse");
    fwd_array rows = fwd_get(fx, pname, "logits");
    char what[160];
    if (am.data && am.numel == T) {
        snprintf(what, sizeof what, "%s %s argmax at every position", model, pname);
        kvz_test_equal_i32(what, s->argmax, T, am.data, am.numel);
    }
    if (lse.data && lse.numel == T) {
        snprintf(what, sizeof what, "%s %s logsumexp per position", model, pname);
        fwd_check_rel(what, s->lse, lse.data, T, TOL, &w->lse);
    }
    if (!rows.data)
        return;
    for (size_t i = 0; i < s->n_logit_pos; i++) {
        snprintf(what, sizeof what, "%s %s logits at position %d", model, pname, s->logit_pos[i]);
        fwd_check_rel(what, s->rows + i * V, (const float *)rows.data + i * V, V, TOL, &w->logits);
    }
}

static void check_tokenization(const kvz_tokenizer *tok, const char *pname, const char *text,
                               fwd_array ids)
{
    kvz_tokens toks = {0};
    kvz_error err = {0};
    int rc = kvz_tokenize(tok, text, strlen(text), 1, &toks, &err);
    KVZ_CHECK_OK(rc, err);
    char what[128];
    snprintf(what, sizeof what, "smollm2 %s: kvz_tokenize(text) vs stored ids", pname);
    if (rc == KVZ_OK)
        kvz_test_equal_i32(what, toks.ids, toks.n, ids.data, ids.numel);
    kvz_tokens_free(&toks);
}

/* The long prompt is the spec 1.1 repeat prompt of its document. */
static void check_repeat_prompt(const char *gguf, const char *doc, const char *text)
{
    kvz_chat_template *tpl = NULL;
    char *rendered = NULL;
    kvz_error err = {0};
    int rc = kvz_chat_template_load(gguf, NULL, &tpl, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        rc = kvz_chat_render_repeat_prompt(tpl, doc, &rendered, &err);
        KVZ_CHECK_OK(rc, err);
    }
    if (rc == KVZ_OK)
        KVZ_CHECK(strcmp(rendered, text) == 0, "smollm2 long: kvz_chat_render_repeat_prompt differs from "
                  "transformers' apply_chat_template");
    free(rendered);
    kvz_chat_template_free(tpl);
}

static void capture_init(capture *c, const kvz_model_config *cfg, size_t T, fwd_array x_pos, int want_qkv)
{
    memset(c, 0, sizeof *c);
    c->n_layers = cfg->n_layers;
    c->d = cfg->d_model;
    c->qkv_d = cfg->n_heads * cfg->head_dim;
    c->kv_d = cfg->n_kv_heads * cfg->head_dim;
    c->T = T;
    c->x_pos = x_pos.data;
    c->n_x_pos = x_pos.numel;
    c->x = calloc(c->n_layers * c->n_x_pos * c->d, sizeof(float));
    c->last_layer = c->n_layers - 1;
    c->want_qkv = want_qkv;
    for (int s = 0; want_qkv && s < 2; s++) {
        c->q[s] = calloc(T * c->qkv_d, sizeof(float));
        c->k[s] = calloc(T * c->kv_d, sizeof(float));
        c->v[s] = calloc(T * c->kv_d, sizeof(float));
    }
}

static void capture_free(capture *c)
{
    free(c->x);
    for (int s = 0; s < 2; s++) {
        free(c->q[s]);
        free(c->k[s]);
        free(c->v[s]);
    }
}

static void run_prompt(kvz_forward *f, const fwd_fixture *fx, const char *model, const char *pname,
                       int want_qkv, worst_rel *w)
{
    const kvz_model_config *cfg = kvz_forward_config(f);
    fwd_array ids = fwd_get(fx, pname, "ids"), x_pos = fwd_get(fx, pname, "x_pos");
    fwd_array lpos = fwd_get(fx, pname, "logit_pos");
    KVZ_CHECK(ids.data && x_pos.data && lpos.data, "%s %s: fixture arrays missing", model, pname);
    if (!ids.data || !x_pos.data || !lpos.data)
        return;
    size_t T = ids.numel, V = cfg->vocab_size;
    capture c;
    capture_init(&c, cfg, T, x_pos, want_qkv);
    logit_summary s = {malloc(T * sizeof(int32_t)), malloc(T * sizeof(float)),
                       malloc(lpos.numel * V * sizeof(float)), lpos.data, lpos.numel};
    float *logits = malloc((T < CHUNK ? T : CHUNK) * V * sizeof(float));
    kvz_forward_reset(f);
    kvz_error err = {0};
    int rc = KVZ_OK;
    for (size_t p = 0; p < T && rc == KVZ_OK; p += CHUNK) {
        size_t n = T - p < CHUNK ? T - p : CHUNK;
        rc = kvz_forward_run(f, (const int32_t *)ids.data + p, n, capture_tap, &c, KVZ_LOGITS_ALL, logits, &err);
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK)
            summarise_chunk(&s, logits, p, n, V);
    }
    if (rc == KVZ_OK) {
        check_logits(fx, model, pname, &s, T, V, w);
        check_x(fx, model, pname, &c, w);
        if (want_qkv)
            check_qkv(fx, model, pname, &c, w);
    }
    free(logits);
    free(s.argmax);
    free(s.lse);
    free(s.rows);
    capture_free(&c);
}

static void check_model(const char *model, const char *checkpoint_path)
{
    fwd_fixture fx;
    if (fwd_fixture_load(model, &fx) != 0) {
        fwd_fixture_free(&fx);
        return;
    }
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    kvz_forward *f = NULL;
    kvz_tokenizer *tok = NULL;
    int rc = kvz_checkpoint_open(checkpoint_path, &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        kvz_forward_options opt = {.n_threads = 2, .max_tokens = 0, .attn_block = 0};
        rc = kvz_forward_create(ck, &opt, &f, &err);
        KVZ_CHECK_OK(rc, err);
    }
    if (rc == KVZ_OK && kvz_checkpoint_gguf(ck) && strcmp(model, "smollm2") == 0) {
        rc = kvz_tokenizer_load(checkpoint_path, &tok, &err);
        KVZ_CHECK_OK(rc, err);
    }
    kvz_checkpoint_close(ck);
    worst_rel w = {0};
    json_t *prompts = json_object_get(fx.index, "prompts");
    for (size_t i = 0; f && i < json_array_size(prompts); i++) {
        json_t *p = json_array_get(prompts, i);
        const char *pname = json_string_value(json_object_get(p, "name"));
        const char *text = json_string_value(json_object_get(p, "text"));
        const char *doc = json_string_value(json_object_get(p, "repeat_of"));
        if (tok && text)
            check_tokenization(tok, pname, text, fwd_get(&fx, pname, "ids"));
        if (tok && text && doc)
            check_repeat_prompt(checkpoint_path, doc, text);
        run_prompt(f, &fx, model, pname, i == 0, &w);
    }
    printf("%s: worst ||delta||/||ref||: logits %.3g, logsumexp %.3g, x %.3g, q/k/v %.3g (layers %zu)\n",
           model, w.logits, w.lse, w.x, w.qkv, fwd_meta_size(&fx, "n_layers"));
    kvz_tokenizer_free(tok);
    kvz_forward_free(f);
    fwd_fixture_free(&fx);
}

int main(void)
{
    const char *tiny[] = {"llama3_f32", "qwen2_bf16", "qwen3_f16", "mistral_sharded"};
    for (size_t i = 0; i < sizeof tiny / sizeof *tiny; i++) {
        char rel[64], path[4096];
        snprintf(rel, sizeof rel, "tiny/%s", tiny[i]);
        snprintf(path, sizeof path, "%s", kvz_test_fixture(rel)); /* static buffer */
        check_model(tiny[i], path);
    }
    const char *gguf = getenv("KVZAP_DEFAULT_MODEL");
    if (!gguf || !*gguf) {
        printf("KVZAP_DEFAULT_MODEL unset: SmolLM2 parity not checked\n");
        return kvz_test_done();
    }
    char path[4096];
    snprintf(path, sizeof path, "%s", gguf);
    check_model("smollm2", path);
    return kvz_test_done();
}
