/* test_cli_logits_smollm2: the `kvzap logits` command (which may re-execute
 * itself with a faster OpenBLAS kernel set than the library tests use, see
 * cli_tune_openblas) agrees with transformers on the default model: every
 * prompt of the forward fixture, argmax identical at every position and the
 * stored full logits rows within ||delta||/||ref|| <= 1e-4. Skips (77) when
 * the default model is absent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "ops/ops.h"
#include "test_forward_parity_fixture.h"

/* Runs `$KVZAP logits MODEL --ids ... --all --out PATH`; 0 on exit status 0. */
static int run_cli(const char *model, const int32_t *ids, size_t n, const char *out)
{
    size_t cap = 256 + strlen(model) + strlen(out) + 12 * n;
    char *cmd = malloc(cap);
    if (!cmd)
        return -1;
    size_t k = (size_t)snprintf(cmd, cap, "'%s' logits '%s' --all --out '%s' --ids ",
                                getenv("KVZAP"), model, out);
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(cmd + k, cap - k, "%s%d", i ? "," : "", ids[i]);
    snprintf(cmd + k, cap - k, " > /dev/null");
    int rc = system(cmd);
    free(cmd);
    return rc;
}

static void check_prompt(const fwd_fixture *fx, const char *model, const char *name, size_t vocab)
{
    fwd_array ids = fwd_get(fx, name, "ids"), argmax = fwd_get(fx, name, "argmax");
    fwd_array pos = fwd_get(fx, name, "logit_pos"), rows = fwd_get(fx, name, "logits");
    if (!ids.data || !argmax.data || !pos.data || !rows.data) {
        KVZ_CHECK(0, "%s: fixture arrays missing", name);
        return;
    }
    char out[512];
    snprintf(out, sizeof out, "%s/%s.f32", kvz_test_tmpdir(), name);
    KVZ_CHECK(run_cli(model, ids.data, ids.numel, out) == 0, "%s: kvzap logits failed", name);
    size_t size = 0;
    float *logits = (float *)fwd_read_all(out, &size);
    KVZ_CHECK(logits && size == ids.numel * vocab * sizeof(float), "%s: %s has %zu bytes", name,
              out, size);
    if (!logits || size != ids.numel * vocab * sizeof(float)) {
        free(logits);
        return;
    }
    size_t bad = 0;
    for (size_t t = 0; t < ids.numel; t++) {
        size_t best = kvz_argmax(logits + t * vocab, vocab);
        if ((int32_t)best != ((const int32_t *)argmax.data)[t] && bad++ < 5)
            fprintf(stderr, "%s: position %zu argmax %zu, transformers %d\n", name, t, best,
                    ((const int32_t *)argmax.data)[t]);
    }
    KVZ_CHECK(bad == 0, "%s: argmax differs at %zu of %zu positions", name, bad, ids.numel);
    double worst = 0;
    for (size_t r = 0; r < pos.numel; r++) {
        size_t t = (size_t)((const int32_t *)pos.data)[r];
        char what[128];
        snprintf(what, sizeof what, "%s logits row %zu (position %zu)", name, r, t);
        fwd_check_rel(what, logits + t * vocab, (const float *)rows.data + r * vocab, vocab, 1e-4,
                      &worst);
    }
    printf("%s: %zu tokens, argmax identical, worst logits rel-norm %.3g\n", name, ids.numel,
           worst);
    free(logits);
}

int main(void)
{
    const char *model = getenv("KVZAP_DEFAULT_MODEL");
    if (!model || !getenv("KVZAP"))
        kvz_test_skip("KVZAP_DEFAULT_MODEL / KVZAP not set");
    FILE *probe = fopen(model, "rb");
    if (!probe)
        kvz_test_skip("default model not fetched");
    fclose(probe);
    fwd_fixture fx;
    if (fwd_fixture_load("smollm2", &fx) == 0) {
        size_t vocab = fwd_meta_size(&fx, "vocab_size");
        json_t *prompts = json_object_get(fx.index, "prompts");
        for (size_t i = 0; i < json_array_size(prompts); i++) {
            const char *name = json_string_value(json_object_get(json_array_get(prompts, i), "name"));
            if (name)
                check_prompt(&fx, model, name, vocab);
        }
    }
    fwd_fixture_free(&fx);
    return kvz_test_done();
}
