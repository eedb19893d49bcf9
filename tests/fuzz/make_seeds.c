/* make_seeds: writes the seed inputs of the fuzz targets that need the
 * library to produce them (tests/fuzz/corpus/; the other seeds are copies of
 * tests/fixtures or come from make_seeds.py):
 *   oracle_dataset/  small sealed oracle datasets written with the store
 *                    (float16 hidden + ridge sums, float32 hidden only,
 *                    ridge sums only), 2 layers, D 4, Hkv 2, 3 documents
 *   export_gguf/     GGUF exports of the tests/fixtures/export surrogates
 *                    (Linear F32, MLP BF16, MLP F16 with provenance)
 *   config/          printed_defaults.yaml: every key, as `kvzap config`
 *                    prints the defaults
 * usage: fuzz_make_seeds CORPUS_DIR   (run from anywhere; fixtures from
 * $KVZ_FIXTURES or the source tree). Rerun only to refresh the seeds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/config.h"
#include "data/corpus.h"
#include "fuzz_common.h"
#include "kvzip_oracle/oracle_store.h"
#include "trainer/export.h"

static void check(int rc, const kvz_error *err)
{
    if (rc != KVZ_OK) {
        fprintf(stderr, "make_seeds: %s\n", err->msg);
        exit(1);
    }
}

static void write_dataset(const char *path, int hidden_dtype, int store_hidden, int ridge)
{
    enum { L = 2, D = 4, H = 2, DOCS = 3, PER = 3 };
    kvz_oracle_meta m = {0};
    m.model_path = "synthetic";
    m.model_architecture = "LlamaForCausalLM";
    m.model_config_json = "{\"layers\": 2}";
    m.tokenizer = "tokenizer.json";
    m.chat_template = "chatml-smollm2";
    m.corpus = "corpus.jsonl";
    m.n_tokens = 8;
    m.max_doc_tokens = 1000;
    m.train_docs_per_subset = 2;
    m.test_docs_per_subset = 1;
    m.seed = 7;
    m.hidden_dtype = hidden_dtype;
    m.store_hidden = store_hidden;
    m.ridge_stats = ridge;
    m.n_layers = L;
    m.d_model = D;
    m.n_kv_heads = H;
    m.n_documents_planned = DOCS;
    m.corpus_fingerprint = "0123456789abcdef";
    m.device = "cpu";
    m.precision = "float32";
    kvz_oracle_run *run = NULL;
    size_t done = 0;
    kvz_error err = {0};
    check(kvz_oracle_run_open(path, &m, 2, 0, 1, &run, &done, &err), &err);
    float hidden[L * PER * D], scores[L * PER * H];
    int32_t tok[PER], pos[PER];
    for (size_t d = 0; d < DOCS; d++) {
        for (size_t i = 0; i < PER; i++) {
            tok[i] = (int32_t)(10 * d + i);
            pos[i] = (int32_t)(4 + i);
        }
        for (size_t k = 0; k < L * PER * D; k++)
            hidden[k] = (float)((k * 7 + d * 3) % 11) / 11.0f - 0.5f;
        for (size_t k = 0; k < L * PER * H; k++)
            scores[k] = -1.0f - (float)((k + d) % 5);
        char src[32];
        snprintf(src, sizeof src, "corpus.jsonl:%zu", d + 1);
        kvz_oracle_doc_record rec = {src, d ? "prose" : "code",
                                     d == 0 ? KVZ_SPLIT_TEST : KVZ_SPLIT_TRAIN, 5, 16, 2, 7, 10, 15};
        kvz_oracle_doc_samples s = {PER, tok, pos, hidden, scores};
        check(kvz_oracle_run_append(run, &rec, &s, &err), &err);
    }
    check(kvz_oracle_run_finish(run, &err), &err);
    kvz_oracle_run_close(run);
}

static void write_gguf_export(const char *fixture, const char *out, kvz_export_dtype dtype,
                              int provenance)
{
    char src[2048];
    kvz_surrogate *s = NULL;
    kvz_error err = {0};
    check(kvz_export_load(kvz_fuzz_fixture_path(fixture, src, sizeof src), &s, &err), &err);
    static const double TH[] = {-4.5, -6.0, -7.25};
    kvz_export_info info = {"HuggingFaceTB/SmolLM2-135M-Instruct", "llama", "synthetic",
                            "{\"r2_mean\": 0.7}", TH, 3, NULL};
    kvz_export_options opt = kvz_export_default_options();
    opt.format = KVZ_EXPORT_GGUF;
    opt.dtype = dtype;
    opt.overwrite = 1;
    opt.info = provenance ? &info : NULL;
    check(kvz_export_write(s, out, &opt, &err), &err);
    kvz_surrogate_free(s);
}

static void write_default_config(const char *path)
{
    kvz_run_config cfg;
    kvz_error err = {0};
    check(kvz_config_init(&cfg, &err), &err);
    FILE *fp = fopen(path, "w");
    if (!fp) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
    check(kvz_config_write_yaml(&cfg, fp, &err), &err);
    fclose(fp);
    kvz_config_free(&cfg);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/oracle_dataset", argv[1]);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/export_gguf", argv[1]);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/config", argv[1]);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/config/printed_defaults.yaml", argv[1]);
    write_default_config(path);
    snprintf(path, sizeof path, "%s/oracle_dataset/f16_hidden_ridge.h5", argv[1]);
    write_dataset(path, KVZ_HIDDEN_FLOAT16, 1, 1);
    snprintf(path, sizeof path, "%s/oracle_dataset/f32_hidden.h5", argv[1]);
    write_dataset(path, KVZ_HIDDEN_FLOAT32, 1, 0);
    snprintf(path, sizeof path, "%s/oracle_dataset/ridge_only.h5", argv[1]);
    write_dataset(path, KVZ_HIDDEN_FLOAT16, 0, 1);
    snprintf(path, sizeof path, "%s/export_gguf/linear_f32.gguf", argv[1]);
    write_gguf_export("export/linear_f32", path, KVZ_EXPORT_F32, 0);
    snprintf(path, sizeof path, "%s/export_gguf/mlp_bf16.gguf", argv[1]);
    write_gguf_export("export/mlp_bf16", path, KVZ_EXPORT_BF16, 1);
    snprintf(path, sizeof path, "%s/export_gguf/mlp_f16.gguf", argv[1]);
    write_gguf_export("export/mlp_f32", path, KVZ_EXPORT_F16, 1);
    return 0;
}
