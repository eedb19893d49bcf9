/* config: the schema table of kvz_run_config and the operations that work
 * on whole configs (defaults, free, --set, cross-field checks, equality).
 * YAML reading is in config_yaml.c; value parsing/printing in config_value.c. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/chat_template.h"
#include "config.h"

static const char *const DEVICES[] = {"auto", "cpu", "cuda", NULL};
static const char *const PRECISIONS[] = {"bfloat16", "float32", NULL};
static const char *const GPU_MATHS[] = {"float32", "tf32", "bfloat16", NULL};
static const char *const HIDDEN_DTYPES[] = {"float16", "float32", NULL};
static const char *const SCORINGS[] = {"kvzip_plus", "chunked", NULL};
static const char *const SURROGATES[] = {"linear", "mlp", "both", NULL};
static const char *const EXPORT_FORMATS[] = {"kvpress", "gguf", NULL};
static const char *const EXPORT_DTYPES[] = {"bfloat16", "float16", "float32", NULL};
static const char *const NON_FINITE[] = {"error", "skip", NULL};
static const char *const EXPORT_MODELS[] = {"mlp", "linear", NULL};

static int check_chat_template(const char *value, char *why, size_t why_size)
{
    kvz_chat_family f;
    if (!strcmp(value, "auto") || kvz_chat_family_from_name(value, &f, NULL) == KVZ_OK)
        return 0;
    snprintf(why, why_size, "expected auto or one of %s, got '%s'", kvz_chat_family_names(),
             value);
    return 1;
}

#define OFF(member) offsetof(kvz_run_config, member)
#define STR(key, member, def, doc) {key, KVZ_CFG_STRING, OFF(member), def, NULL, 0, 0, 0, NULL, doc}
#define PATH(key, member, doc) \
    {key, KVZ_CFG_STRING, OFF(member), NULL, NULL, KVZ_CFG_PATH, 0, 0, NULL, doc}
#define STR_SET(key, member, def, doc) \
    {key, KVZ_CFG_STRING, OFF(member), def, NULL, KVZ_CFG_NOT_NULL, 0, 0, NULL, doc}
#define NUM(key, type, member, def, bounds, lo, hi, doc) \
    {key, type, OFF(member), def, NULL, bounds, lo, hi, NULL, doc}
#define ENUM(key, member, def, choices, doc) \
    {key, KVZ_CFG_ENUM, OFF(member), def, choices, 0, 0, 0, NULL, doc}
#define BOOL(key, member, def, doc) {key, KVZ_CFG_BOOL, OFF(member), def, NULL, 0, 0, 0, NULL, doc}
#define POSITIVE (KVZ_CFG_MIN | KVZ_CFG_MIN_EXCLUSIVE)
#define NONNEG KVZ_CFG_MIN

static const kvz_config_field CONFIG_FIELDS[] = {
    PATH("model.path", model.path, "checkpoint: a GGUF file or an HF model directory"),
    {"model.chat_template", KVZ_CFG_STRING, OFF(model.chat_template), "auto", NULL,
     KVZ_CFG_NOT_NULL, 0, 0, check_chat_template,
     "chat template family: auto (detect from the checkpoint) or chatml-smollm2, qwen2, qwen3, "
     "llama3, llama3.1"},
    PATH("model.tokenizer", model.tokenizer,
        "tokenizer override: a tokenizer.json / HF directory (default: the checkpoint's own)"),
    NUM("model.threads", KVZ_CFG_SIZE, model.threads, "0", 0, 0, 0, "CPU threads; 0 = all cores"),
    ENUM("model.device", model.device, "auto", DEVICES,
         "where to compute (oracle and train): auto (CUDA when available), cpu, cuda"),
    ENUM("model.precision", model.precision, "bfloat16", PRECISIONS,
         "GPU forward precision: bfloat16 (bf16 weights and GEMM inputs, fp32 accumulation) or "
         "float32 (checking mode); the CPU path is always float32"),

    PATH("oracle.corpus", oracle.corpus,
         "input corpus: a JSONL file (one document per line), a text file, or a directory of them"),
    PATH("oracle.output", oracle.output, "output HDF5 dataset (\".h5\" is appended when missing)"),
    STR_SET("oracle.text_field", oracle.text_field, "text", "JSON field holding the document text"),
    STR("oracle.subset_field", oracle.subset_field, NULL,
        "JSON field naming the document's subset (quotas are per subset); unset = one subset"),
    NUM("oracle.n_tokens", KVZ_CFG_SIZE, oracle.n_tokens, "500", POSITIVE, 0, 0,
        "context positions sampled per document (all when fewer)"),
    NUM("oracle.min_doc_tokens", KVZ_CFG_SIZE, oracle.min_doc_tokens, "750", 0, 0, 0,
        "keep documents with more than this many tokens (exclusive)"),
    NUM("oracle.max_doc_tokens", KVZ_CFG_SIZE, oracle.max_doc_tokens, "1250", POSITIVE, 0, 0,
        "keep documents with fewer than this many tokens (exclusive)"),
    NUM("oracle.train_docs_per_subset", KVZ_CFG_SIZE, oracle.train_docs_per_subset, "500", 0, 0,
        0, "training documents per subset"),
    NUM("oracle.test_docs_per_subset", KVZ_CFG_SIZE, oracle.test_docs_per_subset, "5", 0, 0, 0,
        "test documents per subset"),
    NUM("oracle.seed", KVZ_CFG_INT, oracle.seed, "0", NONNEG, 0, 0,
        "seed for document and position sampling"),
    ENUM("oracle.hidden_dtype", oracle.hidden_dtype, "float16", HIDDEN_DTYPES,
         "storage dtype of the hidden states x (targets are always float32)"),
    ENUM("oracle.scoring", oracle.scoring, "kvzip_plus", SCORINGS,
         "kvzip_plus: single forward pass (spec 1); chunked: kvpress's chunked KVzip (spec 2)"),
    NUM("oracle.chunk_size", KVZ_CFG_SIZE, oracle.chunk_size, "2048", POSITIVE, 0, 0,
        "chunk length in tokens for scoring: chunked"),
    BOOL("oracle.store_hidden", oracle.store_hidden, "true",
         "store the hidden states (needed to train surrogates)"),
    BOOL("oracle.ridge_stats", oracle.ridge_stats, "true",
         "accumulate per-layer ridge sufficient statistics while writing"),
    NUM("oracle.docs_per_shard", KVZ_CFG_SIZE, oracle.docs_per_shard, "16", POSITIVE, 0, 0,
        "documents per crash-safe shard (a crash loses at most one shard's work)"),

    PATH("train.dataset", train.dataset, "oracle dataset to train on"),
    PATH("train.output", train.output, "where the trained surrogates are written"),
    BOOL("train.verify_dataset", train.verify_dataset, "true",
         "check train.dataset against its integrity seal (one read of the file) before "
         "opening it; false skips the hash (--no-verify)"),
    {"train.layers", KVZ_CFG_LAYERS, OFF(train.layers), "all", NULL, 0, 0, 0, NULL,
     "layers to train: all, or a list of layer indices"},
    ENUM("train.model", train.model, "both", SURROGATES, "surrogate kind: linear, mlp or both"),
    NUM("train.ridge_alpha", KVZ_CFG_DOUBLE, train.ridge_alpha, "1.0", NONNEG, 0, 0,
        "ridge penalty (sklearn Ridge alpha; intercept not penalized)"),
    NUM("train.mlp_hidden", KVZ_CFG_SIZE, train.mlp_hidden, "0", 0, 0, 0,
        "MLP hidden width; 0 = D/8"),
    NUM("train.lr", KVZ_CFG_DOUBLE, train.lr, "5e-3", POSITIVE, 0, 0, "AdamW learning rate"),
    NUM("train.beta1", KVZ_CFG_DOUBLE, train.beta1, "0.9", NONNEG | KVZ_CFG_MAX |
        KVZ_CFG_MAX_EXCLUSIVE, 0, 1, "AdamW beta1"),
    NUM("train.beta2", KVZ_CFG_DOUBLE, train.beta2, "0.999", NONNEG | KVZ_CFG_MAX |
        KVZ_CFG_MAX_EXCLUSIVE, 0, 1, "AdamW beta2"),
    NUM("train.eps", KVZ_CFG_DOUBLE, train.eps, "1e-8", POSITIVE, 0, 0, "AdamW epsilon"),
    NUM("train.weight_decay", KVZ_CFG_DOUBLE, train.weight_decay, "0.01", NONNEG, 0, 0,
        "AdamW decoupled weight decay"),
    NUM("train.batch_size", KVZ_CFG_SIZE, train.batch_size, "512", POSITIVE, 0, 0,
        "minibatch size"),
    NUM("train.epochs", KVZ_CFG_SIZE, train.epochs, "15", POSITIVE, 0, 0,
        "epochs (cosine annealing over this many, stepped per epoch)"),
    NUM("train.grad_clip", KVZ_CFG_DOUBLE, train.grad_clip, "1.0", NONNEG, 0, 0,
        "gradient-norm clip; 0 = no clipping"),
    NUM("train.val_fraction", KVZ_CFG_DOUBLE, train.val_fraction, "0.05", NONNEG | KVZ_CFG_MAX |
        KVZ_CFG_MAX_EXCLUSIVE, 0, 1, "random validation split (monitoring only)"),
    NUM("train.seed", KVZ_CFG_INT, train.seed, "0", NONNEG, 0, 0,
        "seed for initialisation, split and shuffling"),
    ENUM("train.non_finite", train.non_finite, "error", NON_FINITE,
         "samples with NaN/Inf hidden states or targets: error (refuse) or skip (count and drop)"),
    BOOL("train.mlp_init_output_bias", train.mlp_init_output_bias, "false",
         "start the MLP output bias at the training targets' mean (not in the reference "
         "recipe; helps small datasets)"),
    ENUM("train.gpu_precision", train.gpu_precision, "float32", GPU_MATHS,
         "GPU MLP GEMMs: float32 (matches the CPU trainer), tf32 or bfloat16 (tensor cores; "
         "master weights stay float32)"),

    ENUM("export.format", export.format, "kvpress", EXPORT_FORMATS,
         "kvpress: config.json + model.safetensors that kvpress loads; gguf"),
    ENUM("export.dtype", export.dtype, "bfloat16", EXPORT_DTYPES, "weight dtype of the export"),
    PATH("export.output", export.output, "export directory (kvpress) or file (gguf)"),
    ENUM("export.model", export.model, "mlp", EXPORT_MODELS,
         "which trained surrogate to export (from train.output)"),
};

static const size_t N_FIELDS = sizeof CONFIG_FIELDS / sizeof CONFIG_FIELDS[0];

const kvz_config_field *kvz_config_fields(size_t *n)
{
    *n = N_FIELDS;
    return CONFIG_FIELDS;
}

const kvz_config_field *kvz_config_find_field(const char *key)
{
    for (size_t i = 0; key && i < N_FIELDS; i++)
        if (!strcmp(CONFIG_FIELDS[i].key, key))
            return &CONFIG_FIELDS[i];
    return NULL;
}

int kvz_config_is_section(const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < N_FIELDS; i++)
        if (!strncmp(CONFIG_FIELDS[i].key, key, n) && CONFIG_FIELDS[i].key[n] == '.')
            return 1;
    return 0;
}

const char *kvz_config_enum_name(const char *key, int value)
{
    const kvz_config_field *f = kvz_config_find_field(key);
    if (!f || f->type != KVZ_CFG_ENUM || value < 0)
        return NULL;
    for (int i = 0; f->choices[i]; i++)
        if (i == value)
            return f->choices[i];
    return NULL;
}

/* ---------- whole-config operations ---------- */

void kvz_config_free(kvz_run_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_FIELDS; i++) {
        void *p = (char *)cfg + CONFIG_FIELDS[i].offset;
        if (CONFIG_FIELDS[i].type == KVZ_CFG_STRING)
            free(*(char **)p);
        else if (CONFIG_FIELDS[i].type == KVZ_CFG_LAYERS)
            free(((kvz_layer_list *)p)->ids);
    }
    memset(cfg, 0, sizeof *cfg);
}

int kvz_config_init(kvz_run_config *cfg, kvz_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_FIELDS; i++) {
        const kvz_config_field *f = &CONFIG_FIELDS[i];
        char why[512];
        if (!f->default_text)
            continue;
        if (kvz_config_parse_into(f, cfg, f->default_text, 0, why, sizeof why)) {
            kvz_config_free(cfg);
            return kvz_fail(err, KVZ_ECONFIG, "default of key '%s': %s", f->key, why);
        }
    }
    return KVZ_OK;
}

/* Lists the keys directly under section (or the sections when section is ""). */
static void list_keys_under(const char *section, char *buf, size_t size)
{
    size_t n = strlen(section), used = 0;
    buf[0] = '\0';
    const char *prev = "";
    size_t prev_len = 0;
    for (size_t i = 0; i < N_FIELDS && used + 1 < size; i++) {
        const char *k = CONFIG_FIELDS[i].key;
        if (n && (strncmp(k, section, n) || k[n] != '.'))
            continue;
        const char *rest = n ? k + n + 1 : k;
        size_t len = strcspn(rest, ".");
        if (len == prev_len && !strncmp(rest, prev, len))
            continue;
        int w = snprintf(buf + used, size - used, "%s%.*s", used ? ", " : "", (int)len, rest);
        used += w > 0 ? (size_t)w : 0;
        prev = rest;
        prev_len = len;
    }
}

int kvz_config_unknown_key_message(const char *key, char *buf, size_t size)
{
    char known[768];
    char section[256];
    const char *dot = strrchr(key, '.');
    size_t n = dot ? (size_t)(dot - key) : 0;
    snprintf(section, sizeof section, "%.*s", (int)n, key);
    if (n && kvz_config_is_section(section)) {
        list_keys_under(section, known, sizeof known);
        return snprintf(buf, size, "unknown key '%s' (keys in '%s': %s)", key, section, known);
    }
    list_keys_under("", known, sizeof known);
    return snprintf(buf, size, "unknown key '%s' (sections: %s)", key, known);
}

int kvz_config_set(kvz_run_config *cfg, const char *key, const char *value, kvz_error *err)
{
    char why[900];
    const kvz_config_field *f = kvz_config_find_field(key);
    if (!f) {
        if (kvz_config_is_section(key)) {
            list_keys_under(key, why, sizeof why);
            return kvz_fail(err, KVZ_ECONFIG, "--set: '%s' is a section; set one of its keys (%s)",
                            key, why);
        }
        kvz_config_unknown_key_message(key, why, sizeof why);
        return kvz_fail(err, KVZ_ECONFIG, "--set: %s", why);
    }
    if (kvz_config_parse_into(f, cfg, value ? value : "", 0, why, sizeof why))
        return kvz_fail(err, KVZ_ECONFIG, "--set: key '%s': %s", key, why);
    return KVZ_OK;
}

int kvz_config_set_arg(kvz_run_config *cfg, const char *key_eq_value, kvz_error *err)
{
    const char *eq = strchr(key_eq_value, '=');
    if (!eq || eq == key_eq_value)
        return kvz_fail(err, KVZ_ECONFIG, "--set '%s': expected KEY=VALUE (e.g. oracle.n_tokens=300)",
                        key_eq_value);
    char key[256];
    if ((size_t)(eq - key_eq_value) >= sizeof key)
        return kvz_fail(err, KVZ_ECONFIG, "--set: key too long in '%.40s...'", key_eq_value);
    snprintf(key, sizeof key, "%.*s", (int)(eq - key_eq_value), key_eq_value);
    return kvz_config_set(cfg, key, eq + 1, err);
}

int kvz_config_validate(const kvz_run_config *cfg, kvz_error *err)
{
    if (cfg->oracle.min_doc_tokens + 1 >= cfg->oracle.max_doc_tokens)
        return kvz_fail(err, KVZ_ECONFIG,
                        "oracle.min_doc_tokens (%zu) and oracle.max_doc_tokens (%zu) leave no "
                        "document length (both bounds are exclusive)",
                        cfg->oracle.min_doc_tokens, cfg->oracle.max_doc_tokens);
    if (cfg->oracle.scoring == KVZ_SCORING_CHUNKED && cfg->oracle.chunk_size < 8)
        return kvz_fail(err, KVZ_ECONFIG,
                        "oracle.chunk_size (%zu) must be at least 8 for scoring: chunked (the "
                        "repeat prompt quotes the previous chunk's last 8 tokens)",
                        cfg->oracle.chunk_size);
    return KVZ_OK;
}

int kvz_config_load(const char *path, kvz_run_config *cfg, kvz_error *err)
{
    int rc = kvz_config_init(cfg, err);
    if (rc == KVZ_OK)
        rc = kvz_config_apply_file(cfg, path, err);
    if (rc)
        kvz_config_free(cfg);
    return rc;
}

int kvz_config_load_full(const char *path_or_NULL, const char *const *sets, size_t n_sets,
                         kvz_run_config *cfg, kvz_error *err)
{
    int rc = kvz_config_init(cfg, err);
    if (rc == KVZ_OK && path_or_NULL)
        rc = kvz_config_apply_file(cfg, path_or_NULL, err);
    for (size_t i = 0; rc == KVZ_OK && i < n_sets; i++)
        rc = kvz_config_set_arg(cfg, sets[i], err);
    if (rc == KVZ_OK)
        rc = kvz_config_validate(cfg, err);
    if (rc)
        kvz_config_free(cfg);
    return rc;
}

int kvz_config_require(const kvz_run_config *cfg, const char *key, kvz_error *err)
{
    const kvz_config_field *f = kvz_config_find_field(key);
    if (!f || f->type != KVZ_CFG_STRING)
        return kvz_fail(err, KVZ_EINVAL, "kvz_config_require: '%s' is not a string key", key);
    const char *v = *(char *const *)((const char *)cfg + f->offset);
    if (!v || !*v)
        return kvz_fail(err, KVZ_ECONFIG,
                        "key '%s' is required (set it in the config file or with --set %s=...)",
                        key, key);
    return KVZ_OK;
}

static int field_equal(const kvz_config_field *f, const void *a, const void *b)
{
    switch (f->type) {
    case KVZ_CFG_STRING: {
        const char *x = *(char *const *)a, *y = *(char *const *)b;
        return (!x && !y) || (x && y && !strcmp(x, y));
    }
    case KVZ_CFG_INT: return *(const int64_t *)a == *(const int64_t *)b;
    case KVZ_CFG_SIZE: return *(const size_t *)a == *(const size_t *)b;
    case KVZ_CFG_DOUBLE: return *(const double *)a == *(const double *)b;
    case KVZ_CFG_BOOL:
    case KVZ_CFG_ENUM: return *(const int *)a == *(const int *)b;
    case KVZ_CFG_LAYERS: {
        const kvz_layer_list *x = a, *y = b;
        return x->all == y->all && x->n == y->n &&
               (x->n == 0 || !memcmp(x->ids, y->ids, x->n * sizeof *x->ids));
    }
    }
    return 0;
}

int kvz_config_equal(const kvz_run_config *a, const kvz_run_config *b)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        size_t off = CONFIG_FIELDS[i].offset;
        if (!field_equal(&CONFIG_FIELDS[i], (const char *)a + off, (const char *)b + off))
            return 0;
    }
    return 1;
}
