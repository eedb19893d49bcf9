/* test_forward_ops_model: model/forward.h on the tiny fixtures (no reference
 * logits here; parity with transformers is test_forward_parity*): prefill in
 * one call equals prefill + token-by-token decoding through the KV cache,
 * attention block size does not change logits, taps see the documented
 * shapes and can stop the pass, and bad inputs fail with messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/forward.h"
#include "kvz_test.h"

#define N_TOK 40

static void make_ids(int32_t *ids, size_t n, size_t vocab)
{
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % vocab);
}

static kvz_forward *make_forward(const kvz_checkpoint *ck, size_t block, size_t max_tokens)
{
    kvz_error err = {0};
    kvz_forward_options opt = {.n_threads = 2, .max_tokens = max_tokens, .attn_block = block};
    kvz_forward *f = NULL;
    int rc = kvz_forward_create(ck, &opt, &f, &err);
    KVZ_CHECK_OK(rc, err);
    return f;
}

static kvz_checkpoint *open_checkpoint(const char *rel)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    int rc = kvz_checkpoint_open(kvz_test_fixture(rel), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    return ck;
}

static void check_incremental(const char *rel)
{
    kvz_checkpoint *ck = open_checkpoint(rel);
    kvz_forward *f = ck ? make_forward(ck, 16, 0) : NULL;
    kvz_forward *g = f ? make_forward(ck, 5, 0) : NULL;
    kvz_checkpoint_close(ck); /* forwards own copies of everything they need */
    if (!g) {
        kvz_forward_free(f);
        return;
    }
    size_t V = kvz_forward_config(f)->vocab_size;
    int32_t ids[N_TOK];
    make_ids(ids, N_TOK, V);
    float *all = malloc(N_TOK * V * sizeof *all), *step = malloc(V * sizeof *step);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_forward_run(f, ids, N_TOK, NULL, NULL, KVZ_LOGITS_ALL, all, &err), err);
    KVZ_CHECK_OK(kvz_forward_run(g, ids, 25, NULL, NULL, KVZ_LOGITS_LAST, step, &err), err);
    char what[200];
    snprintf(what, sizeof what, "%s: prefill 25 (block 5) vs row 24 of prefill 40 (block 16)", rel);
    kvz_test_allclose(what, step, all + 24 * V, V, 1e-5, 1e-4);
    for (size_t t = 25; t < N_TOK; t++) {
        KVZ_CHECK_OK(kvz_forward_run(g, &ids[t], 1, NULL, NULL, KVZ_LOGITS_LAST, step, &err), err);
        snprintf(what, sizeof what, "%s: decode step %zu vs prefill row", rel, t);
        kvz_test_allclose(what, step, all + t * V, V, 1e-5, 1e-4);
    }
    KVZ_CHECK(kvz_forward_n_cached(g) == N_TOK, "n_cached %zu", kvz_forward_n_cached(g));
    kvz_forward_reset(g);
    KVZ_CHECK(kvz_forward_n_cached(g) == 0, "reset empties the cache");
    free(all), free(step);
    kvz_forward_free(f);
    kvz_forward_free(g);
}

typedef struct tap_log {
    size_t calls, stop_at, H, Hkv, dh, D;
    int shapes_ok;
} tap_log;

static int record_tap(const kvz_layer_tap *t, void *user, kvz_error *err)
{
    tap_log *log = user;
    if (t->layer != log->calls % 2 || !t->x || !t->q || !t->k || !t->v || !t->w_o)
        log->shapes_ok = 0;
    /* the last cached key row is finite: the new rows are in the cache */
    size_t last = (t->pos0 + t->n_tokens - 1) * log->Hkv * log->dh;
    if (!isfinite(t->k[last]) || !isfinite(t->v[last]) || !isfinite(t->q[0]))
        log->shapes_ok = 0;
    log->calls++;
    if (log->calls == log->stop_at)
        return kvz_fail(err, KVZ_EINVAL, "tap says stop");
    return KVZ_OK;
}

static void check_taps_and_errors(void)
{
    kvz_checkpoint *ck = open_checkpoint("tiny/qwen3_f16");
    kvz_forward *f = ck ? make_forward(ck, 0, 32) : NULL;
    kvz_checkpoint_close(ck);
    if (!f)
        return;
    const kvz_model_config *c = kvz_forward_config(f);
    int32_t ids[40];
    make_ids(ids, 40, c->vocab_size);
    tap_log log = {0, 0, c->n_heads, c->n_kv_heads, c->head_dim, c->d_model, 1};
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_forward_run(f, ids, 10, record_tap, &log, KVZ_LOGITS_NONE, NULL, &err), err);
    KVZ_CHECK_OK(kvz_forward_run(f, ids, 3, record_tap, &log, KVZ_LOGITS_NONE, NULL, &err), err);
    KVZ_CHECK(log.calls == 2 * c->n_layers && log.shapes_ok, "taps: %zu calls, ok %d", log.calls,
              log.shapes_ok);
    log.stop_at = log.calls + 1;
    int rc = kvz_forward_run(f, ids, 2, record_tap, &log, KVZ_LOGITS_NONE, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "tap says stop"), "tap stop: %d %s", rc, err.msg);
    KVZ_CHECK(kvz_forward_n_cached(f) == 13, "a stopped pass leaves the cache at 13, got %zu",
              kvz_forward_n_cached(f));
    rc = kvz_forward_run(f, ids, 20, NULL, NULL, KVZ_LOGITS_NONE, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "capacity of 32"), "capacity: %s", err.msg);
    int32_t bad[2] = {1, (int32_t)c->vocab_size};
    rc = kvz_forward_run(f, bad, 2, NULL, NULL, KVZ_LOGITS_NONE, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "index 1 is outside the vocabulary"), "%s", err.msg);
    rc = kvz_forward_run(f, ids, 0, NULL, NULL, KVZ_LOGITS_NONE, NULL, &err);
    KVZ_CHECK(rc == KVZ_EINVAL, "zero tokens rejected");
    kvz_forward_free(f);
}

int main(void)
{
    check_incremental("tiny/llama3_f32");
    check_incremental("tiny/qwen2_bf16");
    check_incremental("tiny/qwen3_f16.gguf");
    check_taps_and_errors();
    return kvz_test_done();
}
