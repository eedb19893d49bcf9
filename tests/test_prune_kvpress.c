/* test_prune_kvpress: the pruned runtime against kvpress itself. The fixture
 * tests/fixtures/prune/kvpress_dmspress.json was written by
 * tests/reference/make_prune_fixtures.py, which ran kvpress's
 * DMSPress(KVzapPress) in float32 on the default model (transformers, the
 * GGUF dequantized) with our exported Linear surrogate
 * (tests/fixtures/prune/surrogate_linear, loaded by kvpress's own
 * KVzapModel.from_pretrained): a prompt of more than 1,500 tokens, 8
 * teacher-forced decode steps and 16 greedy tokens, with decoding False and
 * True at two thresholds, window 128. Here the same runs go through kvzap's
 * pruned forward (ragged cache, trainer/prune's threshold policy) and must
 * give, per case:
 *   - the identical evicted (layer, head, position) set after the prefill
 *     and after the decode steps (kvpress masks, kvzap removes: the sets
 *     must match exactly);
 *   - the identical compression ratio (kvpress's DMSPress.compression_ratio
 *     and its per-layer values, to 1e-12);
 *   - logits within 1e-4 relative L2 norm of kvpress's, over the fixture's
 *     2048 sampled vocabulary ids, at the prefill's last position and each
 *     decode step, with the same argmax;
 *   - the identical greedy tokens.
 * Skips when the default model is not cached (KVZAP_DEFAULT_MODEL). In the
 * sanitizer build (KVZ_TEST_SANITIZED) only the decoding=True cases run
 * (their prefill sets are the decoding=False cases' too). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/forward.h"
#include "../ops/ops.h"
#include "../trainer/export.h"
#include "../trainer/prune.h"
#include "kvz_test.h"

#define LOGIT_RTOL 1e-4

typedef struct ids {
    int32_t *v;
    size_t n;
} ids;

static ids json_ids(json_t *a)
{
    ids r = {calloc(json_array_size(a) + 1, sizeof(int32_t)), json_array_size(a)};
    for (size_t i = 0; i < r.n; i++)
        r.v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return r;
}

/* Relative L2 error of logits[ids] against ref (a JSON array). */
static double logit_error(const float *logits, const ids *sel, json_t *ref, double *worst_abs,
                          size_t *worst_id)
{
    double num = 0.0, den = 0.0;
    *worst_abs = 0.0;
    for (size_t i = 0; i < sel->n; i++) {
        double r = json_number_value(json_array_get(ref, i)), d = (double)logits[sel->v[i]] - r;
        num += d * d;
        den += r * r;
        if (fabs(d) > *worst_abs) {
            *worst_abs = fabs(d);
            *worst_id = (size_t)sel->v[i];
        }
    }
    return sqrt(num / den);
}

static void check_logits(const char *what, const float *logits, size_t V, const ids *sel,
                         json_t *ref, json_t *argmax)
{
    double worst = 0.0;
    size_t id = 0;
    double e = logit_error(logits, sel, ref, &worst, &id);
    size_t am = kvz_argmax(logits, V);
    KVZ_CHECK(e <= LOGIT_RTOL, "%s: logits relative error %.3g > %.0e (worst |diff| %.3g at id %zu)",
              what, e, LOGIT_RTOL, worst, id);
    KVZ_CHECK(am == (size_t)json_integer_value(argmax), "%s: argmax %zu, kvpress %lld", what, am,
              (long long)json_integer_value(argmax));
    printf("  %s: logits rel err %.2e (worst |diff| %.2e), argmax %zu\n", what, e, worst, am);
}

static int hex_bit(const char *hex, size_t p)
{
    const char *h = hex + 2 * (p / 8);
    unsigned v = 0;
    for (int k = 0; k < 2; k++) {
        char c = h[k];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return (v >> (p % 8)) & 1;
}

/* The cache's evicted sets against the fixture's bitmasks over 0..len-1. */
static void check_evicted(const char *what, kvz_kv_cache *c, size_t L, size_t hkv, size_t len,
                          json_t *moment, const kvz_prune *p)
{
    json_t *ev = json_object_get(moment, "evicted");
    size_t bad_heads = 0, total_diff = 0, evicted = 0;
    for (size_t l = 0; l < L; l++)
        for (size_t g = 0; g < hkv; g++) {
            const char *hex = json_string_value(json_array_get(json_array_get(ev, l), g));
            if (!hex || strlen(hex) < 2 * ((len + 7) / 8)) {
                KVZ_CHECK(0, "%s: fixture mask of layer %zu head %zu missing or short", what, l, g);
                return;
            }
            size_t cnt = kvz_kv_cache_count(c, l, g), j = 0, diff = 0;
            const int32_t *pos = kvz_kv_cache_positions(c, l, g);
            for (size_t t = 0; t < len; t++) {
                int kept = j < cnt && pos[j] == (int32_t)t;
                j += kept;
                evicted += !kept;
                diff += kept == hex_bit(hex, t); /* bit set = evicted */
            }
            if (diff && bad_heads++ < 3)
                printf("  %s: layer %zu head %zu: %zu positions differ from kvpress\n", what, l,
                       g, diff);
            total_diff += diff;
        }
    KVZ_CHECK(total_diff == 0, "%s: %zu (layer, head) evicted sets differ (%zu positions)", what,
              bad_heads, total_diff);
    double want = json_number_value(json_object_get(moment, "compression"));
    double got = kvz_prune_compression(p);
    KVZ_CHECK(fabs(got - want) <= 1e-12, "%s: compression %.15f, kvpress %.15f", what, got, want);
    json_t *per = json_object_get(moment, "layer_compression");
    size_t bad_layers = 0;
    for (size_t l = 0; l < L && per; l++)
        bad_layers += fabs(kvz_prune_layer_compression(p, l) -
                           json_number_value(json_array_get(per, l))) > 1e-12;
    KVZ_CHECK(per && bad_layers == 0, "%s: %zu layers' compression differ", what, bad_layers);
    printf("  %s: %zu pairs evicted, compression %.6f (kvpress %.6f)\n", what, evicted, got, want);
}

static void run_case(const kvz_checkpoint *ck, const kvz_surrogate *s, json_t *fx, json_t *cs)
{
    const kvz_model_config *cfg = kvz_checkpoint_config(ck);
    size_t L = cfg->n_layers, hkv = cfg->n_kv_heads, V = cfg->vocab_size;
    double tau = json_number_value(json_object_get(cs, "tau"));
    int decoding = json_is_true(json_object_get(cs, "decoding"));
    ids prompt = json_ids(json_object_get(fx, "prompt_ids"));
    ids dec = json_ids(json_object_get(fx, "decode_ids"));
    ids sel = json_ids(json_object_get(fx, "logit_ids"));
    ids greedy = json_ids(json_object_get(cs, "greedy"));
    char what[160];
    printf("case tau %g decoding %d (kvpress tau margin %g):\n", tau, decoding,
           json_number_value(json_object_get(cs, "tau_margin")));
    kvz_error err = {0};
    kvz_prune_options o = {.method = KVZ_PRUNE_KVZAP, .mode = KVZ_PRUNE_THRESHOLD, .tau = tau,
                           .window = (size_t)json_integer_value(json_object_get(fx, "window")),
                           .decoding = decoding, .surrogate = s};
    kvz_prune *p = NULL;
    int rc = kvz_prune_create(cfg, &o, &p, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_forward_options fo = {.n_threads = 2, .prune = kvz_prune_layer, .prune_user = p};
    kvz_forward *f = NULL;
    rc = kvz_forward_create(ck, &fo, &f, &err);
    KVZ_CHECK_OK(rc, err);
    float *logits = malloc(V * sizeof *logits);
    rc = kvz_forward_run(f, prompt.v, prompt.n, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_kv_cache *c = kvz_forward_kv_cache(f);
    snprintf(what, sizeof what, "tau %g decoding %d after the prefill", tau, decoding);
    check_logits(what, logits, V, &sel, json_object_get(cs, "prefill_logits"),
                 json_object_get(cs, "prefill_argmax"));
    check_evicted(what, c, L, hkv, prompt.n, json_object_get(cs, "after_prefill"), p);
    json_t *dl = json_object_get(cs, "decode_logits"), *da = json_object_get(cs, "decode_argmax");
    for (size_t k = 0; k < dec.n && !rc; k++) {
        rc = kvz_forward_run(f, dec.v + k, 1, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
        KVZ_CHECK_OK(rc, err);
        snprintf(what, sizeof what, "tau %g decoding %d decode step %zu", tau, decoding, k);
        check_logits(what, logits, V, &sel, json_array_get(dl, k), json_array_get(da, k));
    }
    snprintf(what, sizeof what, "tau %g decoding %d after %zu decode steps", tau, decoding, dec.n);
    check_evicted(what, c, L, hkv, prompt.n + dec.n, json_object_get(cs, "after_decode"), p);
    /* greedy generation from a fresh prefill */
    kvz_forward_reset(f);
    rc = kvz_forward_run(f, prompt.v, prompt.n, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
    size_t same = 0, first_diff = greedy.n;
    for (size_t k = 0; k < greedy.n && !rc; k++) {
        int32_t next = (int32_t)kvz_argmax(logits, V);
        if (next == greedy.v[k])
            same++;
        else if (first_diff == greedy.n)
            first_diff = k;
        if (k + 1 < greedy.n)
            rc = kvz_forward_run(f, &next, 1, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
    }
    KVZ_CHECK_OK(rc, err);
    KVZ_CHECK(same == greedy.n, "tau %g decoding %d: %zu of %zu greedy tokens as kvpress (first "
              "difference at %zu)", tau, decoding, same, greedy.n, first_diff);
    printf("  greedy: %zu of %zu tokens as kvpress\n", same, greedy.n);
    free(logits);
    kvz_forward_free(f);
    kvz_prune_free(p);
    free(prompt.v), free(dec.v), free(sel.v), free(greedy.v);
}

int main(void)
{
    const char *gguf = getenv("KVZAP_DEFAULT_MODEL");
    if (!gguf || !*gguf)
        kvz_test_skip("KVZAP_DEFAULT_MODEL unset");
    FILE *probe = fopen(gguf, "rb");
    if (!probe)
        kvz_test_skip("the default model is not cached (scripts/fetch-assets)");
    fclose(probe);
    json_error_t jerr;
    json_t *fx = json_load_file(kvz_test_fixture("prune/kvpress_dmspress.json"), 0, &jerr);
    KVZ_CHECK(fx != NULL, "fixture: %s (line %d)", jerr.text, jerr.line);
    if (!fx)
        return kvz_test_done();
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    int rc = kvz_checkpoint_open(gguf, &ck, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_surrogate *s = NULL;
    rc = kvz_export_load(kvz_test_fixture("prune/surrogate_linear"), &s, &err);
    KVZ_CHECK_OK(rc, err);
    const kvz_model_config *cfg = kvz_checkpoint_config(ck);
    KVZ_CHECK(cfg->n_layers == (size_t)json_integer_value(json_object_get(fx, "n_layers")) &&
                  cfg->n_kv_heads == (size_t)json_integer_value(json_object_get(fx, "n_kv_heads")),
              "the fixture is for another model");
    KVZ_CHECK(json_array_size(json_object_get(fx, "prompt_ids")) >= 1500, "prompt of %zu tokens",
              json_array_size(json_object_get(fx, "prompt_ids")));
    json_t *cases = json_object_get(fx, "cases");
    KVZ_CHECK(json_array_size(cases) >= 4, "%zu cases", json_array_size(cases));
    const char *san = getenv("KVZ_TEST_SANITIZED");
    int subset = san && *san && strcmp(san, "0");
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *cs = json_array_get(cases, i);
        if (subset && !json_is_true(json_object_get(cs, "decoding"))) {
            printf("case %zu: skipped in the sanitizer build\n", i);
            continue;
        }
        run_case(ck, s, fx, cs);
    }
    kvz_surrogate_free(s);
    kvz_checkpoint_close(ck);
    json_decref(fx);
    return kvz_test_done();
}
