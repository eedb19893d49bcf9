/* config: the YAML run configuration (kvz_run_config) and its schema.
 * Owns: the typed struct every subcommand reads, the table of fields that
 * describes it (dotted key, type, offset, default, bounds, doc line), loading
 * a YAML file onto it (libyaml; common/config_yaml.c), `--set key=value`
 * overrides parsed with the same typed parsers (common/config_value.c), cross
 * field checks, and printing the effective config back as YAML that re-reads
 * to the same struct.
 *
 * Adding a key = adding a struct member and one row in CONFIG_FIELDS
 * (common/config.c); loading, --set, printing, equality and the docs test
 * pick it up from the table. Sections are the dotted prefixes of the keys.
 *
 * Errors are KVZ_ECONFIG (KVZ_EIO for an unreadable file) with messages like
 *   "run.yaml:3:14: key 'oracle.n_tokens': expected an integer, got 'abc'"
 *   "run.yaml:5:3: unknown key 'oracle.n_token' (keys in 'oracle': corpus, ...)"
 *   "--set: key 'train.lr': expected a number, got 'fast'"
 * Typing: YAML scalars are read as text and parsed by the field's type, so a
 * quoted "300" is accepted for an integer. A plain null (~, null, or nothing)
 * unsets an optional string; it is an error for any other field. */
#ifndef KVZ_CONFIG_H
#define KVZ_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kvz_error.h"

enum { KVZ_DEVICE_AUTO = 0, KVZ_DEVICE_CPU, KVZ_DEVICE_CUDA };
/* model.precision (GPU forward) and train.gpu_precision (GPU MLP GEMMs). */
enum { KVZ_PRECISION_BFLOAT16 = 0, KVZ_PRECISION_FLOAT32 };
enum { KVZ_GPU_MATH_FLOAT32 = 0, KVZ_GPU_MATH_TF32, KVZ_GPU_MATH_BFLOAT16 };
enum { KVZ_HIDDEN_FLOAT16 = 0, KVZ_HIDDEN_FLOAT32 };
enum { KVZ_SCORING_KVZIP_PLUS = 0, KVZ_SCORING_CHUNKED };
enum { KVZ_SURROGATE_LINEAR = 0, KVZ_SURROGATE_MLP, KVZ_SURROGATE_BOTH };
enum { KVZ_NON_FINITE_ERROR = 0, KVZ_NON_FINITE_SKIP };
enum { KVZ_EXPORT_MODEL_MLP = 0, KVZ_EXPORT_MODEL_LINEAR };
/* Same values as trainer/export.h's kvz_export_format and kvz_export_dtype. */
enum { KVZ_CFG_EXPORT_KVPRESS = 0, KVZ_CFG_EXPORT_GGUF };
enum { KVZ_CFG_EXPORT_BFLOAT16 = 0, KVZ_CFG_EXPORT_FLOAT16, KVZ_CFG_EXPORT_FLOAT32 };

/* train.layers: "all", or an explicit non-empty list of distinct layer indices. */
typedef struct kvz_layer_list {
    int all;
    size_t n;
    int64_t *ids; /* [n], owned; NULL when all */
} kvz_layer_list;

/* Strings are owned, NUL-terminated, NULL when unset. Enum members are ints
 * holding the KVZ_* values above. */
typedef struct kvz_run_config {
    struct {
        char *path;          /* checkpoint: GGUF file or HF directory */
        char *chat_template; /* "auto" or a family name (model/chat_template.h) */
        char *tokenizer;     /* optional tokenizer path override */
        size_t threads;      /* 0 = all cores */
        int device;          /* KVZ_DEVICE_* (oracle and train) */
        int precision;       /* KVZ_PRECISION_*: GPU forward only */
    } model;
    struct {
        char *corpus, *output, *text_field, *subset_field;
        size_t n_tokens, min_doc_tokens, max_doc_tokens;
        size_t train_docs_per_subset, test_docs_per_subset;
        int64_t seed;
        int hidden_dtype; /* KVZ_HIDDEN_* */
        int scoring;      /* KVZ_SCORING_* */
        size_t chunk_size;
        int store_hidden, ridge_stats;
        size_t docs_per_shard;
    } oracle;
    struct {
        char *dataset, *output;
        kvz_layer_list layers;
        int model; /* KVZ_SURROGATE_* */
        double ridge_alpha;
        size_t mlp_hidden; /* 0 = D/8 */
        double lr, beta1, beta2, eps, weight_decay;
        size_t batch_size, epochs;
        double grad_clip, val_fraction;
        int64_t seed;
        int non_finite;           /* KVZ_NON_FINITE_* */
        int mlp_init_output_bias; /* bool */
        int gpu_precision;        /* KVZ_GPU_MATH_* */
        int verify_dataset;       /* bool: check train.dataset's integrity seal */
    } train;
    struct {
        int format; /* KVZ_CFG_EXPORT_KVPRESS / _GGUF */
        int dtype;  /* KVZ_CFG_EXPORT_BFLOAT16 / _FLOAT16 / _FLOAT32 */
        char *output;
        int model; /* KVZ_EXPORT_MODEL_* */
    } export;
} kvz_run_config;

/* Fills cfg with the defaults (cannot fail except on OOM). */
int kvz_config_init(kvz_run_config *cfg, kvz_error *err);
void kvz_config_free(kvz_run_config *cfg);

/* kvz_config_init + kvz_config_apply_file. Does NOT run the cross-field
 * checks: call kvz_config_validate after any --set overrides, or use
 * kvz_config_load_full. On failure cfg is freed. */
int kvz_config_load(const char *path, kvz_run_config *cfg, kvz_error *err);
/* Applies a YAML file's keys on top of cfg (keys absent keep their value). */
int kvz_config_apply_file(kvz_run_config *cfg, const char *path, kvz_error *err);
/* One override: key is dotted ("oracle.n_tokens"), value is text parsed by
 * the field's type (strings verbatim, "" unsets an optional string; layers:
 * "all", "3", "0,1,2" or "[0, 1, 2]"). */
int kvz_config_set(kvz_run_config *cfg, const char *key, const char *value, kvz_error *err);
/* "key=value" form of kvz_config_set (what --set takes). */
int kvz_config_set_arg(kvz_run_config *cfg, const char *key_eq_value, kvz_error *err);
/* Cross-field checks (e.g. min_doc_tokens < max_doc_tokens). */
int kvz_config_validate(const kvz_run_config *cfg, kvz_error *err);
/* Defaults, then path (NULL = none), then each "key=value", then validate. */
int kvz_config_load_full(const char *path_or_NULL, const char *const *sets, size_t n_sets,
                         kvz_run_config *cfg, kvz_error *err);
/* For subcommands: fails with "key 'oracle.corpus' is required (set it in the
 * config or with --set oracle.corpus=...)" when the string key is unset. */
int kvz_config_require(const kvz_run_config *cfg, const char *key, kvz_error *err);

/* Prints every key with its effective value as YAML (re-reads to an equal struct). */
int kvz_config_write_yaml(const kvz_run_config *cfg, FILE *out, kvz_error *err);
/* 1 when every field is equal (strings by content, doubles exactly). */
int kvz_config_equal(const kvz_run_config *a, const kvz_run_config *b);
/* Enum value name ("cuda", "float16", ...) for a key, or NULL. */
const char *kvz_config_enum_name(const char *key, int value);

/* ---------- the schema ---------- */

typedef enum kvz_config_type {
    KVZ_CFG_STRING, /* char *            */
    KVZ_CFG_INT,    /* int64_t           */
    KVZ_CFG_SIZE,   /* size_t, >= 0      */
    KVZ_CFG_DOUBLE, /* double, finite    */
    KVZ_CFG_BOOL,   /* int 0/1           */
    KVZ_CFG_ENUM,   /* int index into choices */
    KVZ_CFG_LAYERS  /* kvz_layer_list    */
} kvz_config_type;

enum { /* kvz_config_field.bounds */
    KVZ_CFG_MIN = 1,
    KVZ_CFG_MAX = 2,
    KVZ_CFG_MIN_EXCLUSIVE = 4, /* with KVZ_CFG_MIN: value > min */
    KVZ_CFG_MAX_EXCLUSIVE = 8, /* with KVZ_CFG_MAX: value < max */
    KVZ_CFG_NOT_NULL = 16,     /* strings: null / "" not allowed */
    KVZ_CFG_PATH = 32          /* strings: a leading "~/" expands to $HOME/ */
};

typedef struct kvz_config_field {
    const char *key;
    kvz_config_type type;
    size_t offset;
    const char *default_text; /* parsed like a --set value; NULL: unset string */
    const char *const *choices; /* KVZ_CFG_ENUM: NULL-terminated names */
    unsigned bounds;
    double min, max;
    /* Extra check for strings (e.g. chat template family names): returns 0
     * when ok, else writes why. */
    int (*check)(const char *value, char *why, size_t why_size);
    const char *doc; /* one line: meaning, as in docs/configuration.md */
} kvz_config_field;

const kvz_config_field *kvz_config_fields(size_t *n);
const kvz_config_field *kvz_config_find_field(const char *key);
/* 1 when key is a section (a dotted prefix of some field's key). */
int kvz_config_is_section(const char *key);
/* "an integer", "a non-negative integer", "a number", "true or false", ... */
const char *kvz_config_type_desc(const kvz_config_field *f);

/* Parses text into the field of cfg (the typed parsers every path shares).
 * On failure writes the problem, without location or key, into why
 * ("expected an integer, got 'abc'") and returns KVZ_ECONFIG. null_value: the
 * YAML value was a plain null. */
int kvz_config_parse_into(const kvz_config_field *f, kvz_run_config *cfg, const char *text,
                          int null_value, char *why, size_t why_size);
/* "unknown key 'x.y' (keys in 'x': a, b)" into buf (shared by file and --set errors). */
int kvz_config_unknown_key_message(const char *key, char *buf, size_t size);
/* Sets a KVZ_CFG_LAYERS field from list items (each an integer text). */
int kvz_config_parse_layers(const kvz_config_field *f, kvz_run_config *cfg,
                            const char *const *items, size_t n, char *why, size_t why_size);

#endif
