/* test_kvzip_chunked: chunked KVzip+ scoring (kvzip_oracle/kvzip_chunked.h)
 * on SmolLM2 against tests/fixtures/oracle_chunked/smollm2.{json,bin} from
 * tests/reference/make_oracle_chunked_fixtures.py (transformers fp32 eager,
 * kvpress's KVzip press semantics written out): prompt ids, context range and
 * suffix ids exactly; log-scores of every context position in four layers
 * within 1e-3 absolute; the prefill's x at a few positions within 1e-4
 * relative. Plus argument errors. Skips without KVZAP_DEFAULT_MODEL. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kvzip_oracle/kvzip_chunked.h"
#include "common/kvz_file.h"
#include "kvz_test.h"

#define LOGSCORE_ATOL 1e-3
#define HIDDEN_RTOL 1e-4

typedef struct fixture {
    json_t *index;
    char *bin, *doc;
    size_t bin_size, doc_size;
} fixture;

/* The whole file (NUL-terminated), or NULL. */
static char *read_all(const char *path, size_t *size)
{
    char *buf = NULL;
    return kvz_file_read_all(path, &buf, size, NULL) == KVZ_OK ? buf : NULL;
}

static int fixture_load(fixture *fx)
{
    json_error_t jerr;
    memset(fx, 0, sizeof *fx);
    fx->index = json_load_file(kvz_test_fixture("oracle_chunked/smollm2.json"), 0, &jerr);
    KVZ_CHECK(fx->index != NULL, "oracle_chunked/smollm2.json: %s", jerr.text);
    fx->bin = read_all(kvz_test_fixture("oracle_chunked/smollm2.bin"), &fx->bin_size);
    KVZ_CHECK(fx->bin != NULL, "cannot read oracle_chunked/smollm2.bin");
    fx->doc = read_all(kvz_test_fixture("oracle_chunked/document.txt"), &fx->doc_size);
    KVZ_CHECK(fx->doc != NULL, "cannot read oracle_chunked/document.txt");
    return fx->index && fx->bin && fx->doc ? 0 : -1;
}

static void fixture_free(fixture *fx)
{
    json_decref(fx->index);
    free(fx->bin);
    free(fx->doc);
}

/* Array `name` of the .bin; *numel its element count (NULL when absent). */
static const void *fixture_array(const fixture *fx, const char *name, size_t *numel)
{
    json_t *e = json_object_get(json_object_get(fx->index, "arrays"), name);
    *numel = 0;
    if (!e)
        return NULL;
    size_t off = (size_t)json_integer_value(json_object_get(e, "offset")), n = 1;
    json_t *shape = json_object_get(e, "shape");
    for (size_t i = 0; i < json_array_size(shape); i++)
        n *= (size_t)json_integer_value(json_array_get(shape, i));
    KVZ_CHECK(off + 4 * n <= fx->bin_size, "%s beyond the .bin", name);
    if (off + 4 * n > fx->bin_size)
        return NULL;
    *numel = n;
    return fx->bin + off;
}

static size_t meta(const fixture *fx, const char *key)
{
    return (size_t)json_integer_value(json_object_get(fx->index, key));
}

typedef struct model {
    kvz_forward *f;
    kvz_tokenizer *tok;
    kvz_chat_template *tpl;
} model;

static int model_open(const char *gguf, model *m)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    memset(m, 0, sizeof *m);
    int rc = kvz_checkpoint_open(gguf, &ck, &err);
    if (rc == KVZ_OK) {
        kvz_forward_options opt = {.n_threads = 2, .max_tokens = 0, .attn_block = 0};
        rc = kvz_forward_create(ck, &opt, &m->f, &err);
    }
    kvz_checkpoint_close(ck);
    if (rc == KVZ_OK)
        rc = kvz_tokenizer_load(gguf, &m->tok, &err);
    if (rc == KVZ_OK)
        rc = kvz_chat_template_load(gguf, NULL, &m->tpl, &err);
    KVZ_CHECK_OK(rc, err);
    return rc;
}

static void model_close(model *m)
{
    kvz_forward_free(m->f);
    kvz_tokenizer_free(m->tok);
    kvz_chat_template_free(m->tpl);
}

static void check_prompt(const fixture *fx, const kvz_chunked_prompt *p)
{
    size_t n_ids, n_suffix;
    const int32_t *ids = fixture_array(fx, "ids", &n_ids);
    const int32_t *suffix = fixture_array(fx, "suffix_ids", &n_suffix);
    kvz_test_equal_i32("prompt ids", p->ids, p->n_ids, ids, n_ids);
    kvz_test_equal_i32("suffix ids", p->suffix_ids, p->n_suffix, suffix, n_suffix);
    KVZ_CHECK(p->context_start == meta(fx, "context_start") && p->context_end == meta(fx, "context_end"),
              "context [%zu, %zu), reference [%zu, %zu)", p->context_start, p->context_end,
              meta(fx, "context_start"), meta(fx, "context_end"));
}

/* Every context position of the fixture's layers within LOGSCORE_ATOL. */
static void check_logscores(const fixture *fx, const float *ours, size_t L, size_t n_pos,
                            size_t Hkv, size_t p0)
{
    size_t n_layers, n_ref;
    const int32_t *layers = fixture_array(fx, "logscore_layers", &n_layers);
    const float *ref = fixture_array(fx, "logscores", &n_ref);
    KVZ_CHECK(layers && ref && n_ref == n_layers * n_pos * Hkv, "logscores: %zu values for %zu layers",
              n_ref, n_layers);
    if (!layers || !ref || n_ref != n_layers * n_pos * Hkv)
        return;
    double worst = -1.0;
    size_t wl = 0, wi = 0, wh = 0;
    float wo = 0, wr = 0;
    for (size_t a = 0; a < n_layers; a++)
        for (size_t i = 0; i < n_pos * Hkv; i++) {
            float o = ours[((size_t)layers[a] * n_pos) * Hkv + i], r = ref[a * n_pos * Hkv + i];
            double d = fabs((double)o - r);
            if (!(d <= worst)) /* NaN counts as worst */
                worst = isnan(d) ? INFINITY : d, wl = (size_t)layers[a], wi = i / Hkv, wh = i % Hkv,
                wo = o, wr = r;
        }
    printf("log-scores: worst |ours - ref| = %.3g at layer %zu, position %zu, head %zu "
           "(ours %.6f, ref %.6f); %zu layers x %zu positions x %zu heads\n",
           worst, wl, p0 + wi, wh, wo, wr, n_layers, n_pos, Hkv);
    KVZ_CHECK(worst <= LOGSCORE_ATOL, "log-scores differ by %.3g > %.0e", worst, LOGSCORE_ATOL);
    size_t n_bad = 0;
    for (size_t i = 0; i < L * n_pos * Hkv; i++)
        n_bad += !isfinite(ours[i]);
    KVZ_CHECK(n_bad == 0, "%zu non-finite log-scores over all layers", n_bad);
}

/* The prefill's x at the fixture's positions (ours hold every context position). */
static void check_hidden(const fixture *fx, const float *ours, size_t L, size_t n_pos, size_t D,
                         size_t p0)
{
    size_t n_hp, n_ref;
    const int32_t *hp = fixture_array(fx, "hidden_pos", &n_hp);
    const float *ref = fixture_array(fx, "hidden", &n_ref);
    KVZ_CHECK(hp && ref && n_ref == L * n_hp * D, "hidden: %zu values", n_ref);
    if (!hp || !ref || n_ref != L * n_hp * D)
        return;
    double worst = 0.0;
    size_t wl = 0, wp = 0;
    for (size_t l = 0; l < L; l++)
        for (size_t k = 0; k < n_hp; k++) {
            const float *o = ours + (l * n_pos + ((size_t)hp[k] - p0)) * D, *r = ref + (l * n_hp + k) * D;
            double num = 0.0, den = 0.0;
            for (size_t c = 0; c < D; c++)
                num += ((double)o[c] - r[c]) * ((double)o[c] - r[c]), den += (double)r[c] * r[c];
            double rel = sqrt(num / den);
            if (!(rel <= worst))
                worst = isnan(rel) ? INFINITY : rel, wl = l, wp = (size_t)hp[k];
        }
    printf("hidden x: worst ||ours - ref|| / ||ref|| = %.3g at layer %zu, position %zu\n", worst, wl, wp);
    KVZ_CHECK(worst <= HIDDEN_RTOL, "hidden x differs by %.3g > %.0e (relative)", worst, HIDDEN_RTOL);
}

static void check_parity(const fixture *fx, model *m)
{
    kvz_chunked_prompt p;
    kvz_error err = {0};
    int rc = kvz_chunked_prompt_build(m->tok, m->tpl, fx->doc, fx->doc_size, &p, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc != KVZ_OK)
        return;
    check_prompt(fx, &p);
    const kvz_model_config *cfg = kvz_forward_config(m->f);
    size_t L = cfg->n_layers, Hkv = cfg->n_kv_heads, D = cfg->d_model;
    size_t p0 = p.context_start, n_pos = p.context_end - p.context_start;
    size_t *pos = malloc(n_pos * sizeof *pos);
    float *scores = malloc(L * n_pos * Hkv * sizeof *scores);
    float *hidden = malloc(L * n_pos * D * sizeof *hidden);
    KVZ_CHECK(pos && scores && hidden, "out of memory");
    if (pos && scores && hidden && p.n_ids == meta(fx, "n_ids")) {
        for (size_t i = 0; i < n_pos; i++)
            pos[i] = p0 + i;
        rc = kvz_kvzip_chunked_score(m->f, m->tok, &p, meta(fx, "chunk_size"), pos, n_pos, hidden,
                                     scores, &err);
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK) {
            check_logscores(fx, scores, L, n_pos, Hkv, p0);
            check_hidden(fx, hidden, L, n_pos, D, p0);
            KVZ_CHECK(kvz_forward_n_cached(m->f) == p.n_ids, "cache holds %zu, want the %zu prompt ids",
                      kvz_forward_n_cached(m->f), p.n_ids);
        }
    }
    free(pos);
    free(scores);
    free(hidden);
    kvz_chunked_prompt_free(&p);
}

static void expect_fail(int rc, int want, const kvz_error *err, const char *needle, const char *what)
{
    KVZ_CHECK(rc == want, "%s: status %d, want %d (%s)", what, rc, want, err->msg);
    KVZ_CHECK(strstr(err->msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err->msg, needle);
}

static void check_errors(model *m)
{
    kvz_chunked_prompt p;
    kvz_error err = {0};
    const char *blank = " \n\t\xe2\x80\x83 ";
    int rc = kvz_chunked_prompt_build(m->tok, m->tpl, blank, strlen(blank), &p, &err);
    expect_fail(rc, KVZ_EFORMAT, &err, "not locatable", "whitespace-only text");
    KVZ_CHECK(p.ids == NULL && p.n_ids == 0, "failed build leaves an empty prompt");
    const char *text = "  A short note about glass.  ";
    rc = kvz_chunked_prompt_build(m->tok, m->tpl, text, strlen(text), &p, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc != KVZ_OK)
        return;
    const kvz_model_config *cfg = kvz_forward_config(m->f);
    size_t n_ctx = p.context_end - p.context_start, Hkv = cfg->n_kv_heads;
    size_t pos[2] = {p.context_start + 1, p.context_start};
    float scores[2 * 64 * 8];
    KVZ_CHECK(cfg->n_layers * 2 * Hkv <= sizeof scores / sizeof *scores, "score buffer too small");
    rc = kvz_kvzip_chunked_score(m->f, m->tok, &p, 0, pos + 1, 1, NULL, scores, &err);
    expect_fail(rc, KVZ_EINVAL, &err, "chunk_size is 0", "chunk_size 0");
    rc = kvz_kvzip_chunked_score(m->f, m->tok, &p, 4, pos, 2, NULL, scores, &err);
    expect_fail(rc, KVZ_EINVAL, &err, "ascend", "descending positions");
    size_t outside = p.context_start - 1;
    rc = kvz_kvzip_chunked_score(m->f, m->tok, &p, 4, &outside, 1, NULL, scores, &err);
    expect_fail(rc, KVZ_EINVAL, &err, "outside the context", "position in the template prefix");
    /* A tiny text in chunks of 2: every chunk path, scores finite. */
    size_t two[2] = {p.context_start, p.context_end - 1};
    rc = kvz_kvzip_chunked_score(m->f, m->tok, &p, 2, two, 2, NULL, scores, &err);
    KVZ_CHECK_OK(rc, err);
    for (size_t i = 0; rc == KVZ_OK && i < cfg->n_layers * 2 * Hkv; i++)
        KVZ_CHECK(isfinite(scores[i]), "short text: score %zu not finite (%g); %zu context tokens", i,
                  scores[i], n_ctx);
    kvz_chunked_prompt_free(&p);
}

int main(void)
{
    const char *gguf = getenv("KVZAP_DEFAULT_MODEL");
    if (!gguf || !*gguf)
        kvz_test_skip("KVZAP_DEFAULT_MODEL unset");
    fixture fx;
    model m;
    memset(&m, 0, sizeof m);
    if (fixture_load(&fx) == 0 && model_open(gguf, &m) == KVZ_OK) {
        check_errors(&m);
        check_parity(&fx, &m);
    }
    model_close(&m);
    fixture_free(&fx);
    return kvz_test_done();
}
