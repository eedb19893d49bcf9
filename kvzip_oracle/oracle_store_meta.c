/* oracle_store_meta: kvz_oracle_meta <-> root attributes, one table row per
 * field (attribute name, the config-style key used in messages, its kind).
 * Strings are variable-length UTF-8 ("" for NULL), sizes and the seed int64,
 * flags int32, enums their config names ("float16", "kvzip_plus"). */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "oracle_store_internal.h"

typedef enum { M_STR, M_SIZE, M_I64, M_FLAG, M_SCORING, M_DTYPE } meta_kind;

typedef struct meta_field {
    const char *attr, *key;
    meta_kind kind;
    size_t offset;
    int informational;   /* not compared on resume */
    const char *missing; /* value of a string attribute absent from older files (NULL: required) */
} meta_field;

#define F(attr, key, kind, member) {attr, key, kind, offsetof(kvz_oracle_meta, member), 0, NULL}
static const meta_field FIELDS[] = {
    F("model_path", "model.path", M_STR, model_path),
    F("model_architecture", "model.architecture", M_STR, model_architecture),
    F("model_config_json", "model.config_json", M_STR, model_config_json),
    F("tokenizer", "model.tokenizer", M_STR, tokenizer),
    F("chat_template", "model.chat_template", M_STR, chat_template),
    F("corpus", "oracle.corpus", M_STR, corpus),
    F("text_field", "oracle.text_field", M_STR, text_field),
    F("subset_field", "oracle.subset_field", M_STR, subset_field),
    F("scoring", "oracle.scoring", M_SCORING, scoring),
    F("chunk_size", "oracle.chunk_size", M_SIZE, chunk_size),
    F("n_tokens", "oracle.n_tokens", M_SIZE, n_tokens),
    F("min_doc_tokens", "oracle.min_doc_tokens", M_SIZE, min_doc_tokens),
    F("max_doc_tokens", "oracle.max_doc_tokens", M_SIZE, max_doc_tokens),
    F("train_docs_per_subset", "oracle.train_docs_per_subset", M_SIZE, train_docs_per_subset),
    F("test_docs_per_subset", "oracle.test_docs_per_subset", M_SIZE, test_docs_per_subset),
    F("seed", "oracle.seed", M_I64, seed),
    F("hidden_dtype", "oracle.hidden_dtype", M_DTYPE, hidden_dtype),
    F("store_hidden", "oracle.store_hidden", M_FLAG, store_hidden),
    F("ridge_stats", "oracle.ridge_stats", M_FLAG, ridge_stats),
    F("n_layers", "model.n_layers", M_SIZE, n_layers),
    F("d_model", "model.d_model", M_SIZE, d_model),
    F("n_kv_heads", "model.n_kv_heads", M_SIZE, n_kv_heads),
    F("n_documents_planned", "oracle.n_documents_planned", M_SIZE, n_documents_planned),
    F("corpus_fingerprint", "oracle.corpus (selected documents and their texts)", M_STR,
      corpus_fingerprint),
    {"device", "model.device", M_STR, offsetof(kvz_oracle_meta, device), 1, "cpu"},
    {"precision", "model.precision", M_STR, offsetof(kvz_oracle_meta, precision), 0, "float32"},
    {"model_sha256", "model.path (the checkpoint files' SHA-256)", M_STR,
     offsetof(kvz_oracle_meta, model_sha256), 0, ""},
};
#undef F
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

const char *kvz_ostore_dtype_name(int hidden_dtype)
{
    const char *n = kvz_config_enum_name("oracle.hidden_dtype", hidden_dtype);
    return n ? n : "unknown";
}

const char *kvz_ostore_scoring_name(int scoring)
{
    const char *n = kvz_config_enum_name("oracle.scoring", scoring);
    return n ? n : "unknown";
}

/* The field's value as a string (enums) or int64 (numbers). */
static const char *field_str(const meta_field *f, const kvz_oracle_meta *m)
{
    const void *p = (const char *)m + f->offset;
    switch (f->kind) {
    case M_STR: {
        const char *s = *(const char *const *)p;
        return s ? s : "";
    }
    case M_SCORING:
        return kvz_ostore_scoring_name(*(const int *)p);
    case M_DTYPE:
        return kvz_ostore_dtype_name(*(const int *)p);
    default:
        return NULL;
    }
}

static int64_t field_i64(const meta_field *f, const kvz_oracle_meta *m)
{
    const void *p = (const char *)m + f->offset;
    switch (f->kind) {
    case M_SIZE:
        return (int64_t) * (const size_t *)p;
    case M_I64:
        return *(const int64_t *)p;
    case M_FLAG:
        return *(const int *)p != 0;
    default:
        return 0;
    }
}

int kvz_ostore_meta_put(hid_t obj, const kvz_oracle_meta *m)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const meta_field *f = &FIELDS[i];
        const char *s = field_str(f, m);
        int rc = s ? kvz_h5_attr_put_str(obj, f->attr, s)
             : f->kind == M_FLAG ? kvz_h5_attr_put_i32(obj, f->attr, (int32_t)field_i64(f, m))
                                 : kvz_h5_attr_put_i64(obj, f->attr, field_i64(f, m));
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Short strings are quoted in messages; long ones (templates, JSON) are not. */
static void describe_change(char *why, size_t size, const char *key, const char *was,
                            const char *now)
{
    if (strlen(was) + strlen(now) <= 120)
        snprintf(why, size, "%s was '%s', now '%s'", key, was, now);
    else
        snprintf(why, size, "%s differs from the interrupted run's", key);
}

int kvz_ostore_meta_diff(hid_t obj, const kvz_oracle_meta *m, char *why, size_t why_size)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const meta_field *f = &FIELDS[i];
        const char *now = field_str(f, m);
        if (f->informational)
            continue;
        if (now) {
            char *was = NULL;
            int got = kvz_h5_attr_get_str(obj, f->attr, &was);
            if (got == -1 && f->missing)
                got = (was = strdup(f->missing)) ? 0 : KVZ_ENOMEM;
            if (got == KVZ_ENOMEM) {
                snprintf(why, why_size, "out of memory reading attribute '%s'", f->attr);
                return KVZ_ENOMEM;
            }
            if (!was) {
                snprintf(why, why_size, "%s is missing from the interrupted run", f->key);
                return 1;
            }
            int differ = strcmp(was, now) != 0;
            if (differ)
                describe_change(why, why_size, f->key, was, now);
            free(was);
            if (differ)
                return 1;
            continue;
        }
        int64_t was;
        if (kvz_h5_attr_get_i64(obj, f->attr, &was) < 0) {
            snprintf(why, why_size, "%s is missing from the interrupted run", f->key);
            return 1;
        }
        if (was != field_i64(f, m)) {
            snprintf(why, why_size, "%s was %" PRId64 ", now %" PRId64, f->key, was,
                     field_i64(f, m));
            return 1;
        }
    }
    return 0;
}

/* Enum name -> value (-1 when unknown). */
static int enum_value(const char *key, const char *name)
{
    for (int v = 0; v < 16; v++) {
        const char *n = kvz_config_enum_name(key, v);
        if (!n)
            break;
        if (!strcmp(n, name))
            return v;
    }
    return -1;
}

static int get_field(hid_t obj, const meta_field *f, kvz_oracle_meta *m, char **str_slot)
{
    void *p = (char *)m + f->offset;
    if (f->kind == M_STR || f->kind == M_SCORING || f->kind == M_DTYPE) {
        char *s = NULL;
        int got = kvz_h5_attr_get_str(obj, f->attr, &s);
        if (got == -1 && f->missing)
            got = (s = strdup(f->missing)) ? 0 : KVZ_ENOMEM;
        if (got < 0)
            return got;
        if (f->kind == M_STR) {
            *str_slot = s;
            *(const char **)p = s;
            return 0;
        }
        int v = enum_value(f->kind == M_SCORING ? "oracle.scoring" : "oracle.hidden_dtype", s);
        free(s);
        if (v < 0)
            return -1;
        *(int *)p = v;
        return 0;
    }
    int64_t v;
    if (kvz_h5_attr_get_i64(obj, f->attr, &v) < 0 || (f->kind != M_I64 && v < 0))
        return -1;
    if (f->kind == M_SIZE)
        *(size_t *)p = (size_t)v;
    else if (f->kind == M_I64)
        *(int64_t *)p = v;
    else
        *(int *)p = v != 0;
    return 0;
}

int kvz_ostore_meta_get(hid_t obj, kvz_oracle_meta *m, char *strs[KVZ_OSTORE_META_N_STRS],
                        char *why, size_t why_size)
{
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < KVZ_OSTORE_META_N_STRS; i++)
        strs[i] = NULL;
    size_t n_str = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        const meta_field *f = &FIELDS[i];
        if (f->kind == M_STR && n_str >= KVZ_OSTORE_META_N_STRS) {
            snprintf(why, why_size, "internal: more string fields than KVZ_OSTORE_META_N_STRS");
            return -1;
        }
        char **slot = f->kind == M_STR ? &strs[n_str++] : NULL;
        int rc = get_field(obj, f, m, slot);
        if (rc == KVZ_ENOMEM) {
            snprintf(why, why_size, "out of memory reading attribute '%s'", f->attr);
            return KVZ_ENOMEM;
        }
        if (rc < 0) {
            snprintf(why, why_size, "attribute '%s' is missing or invalid", f->attr);
            return -1;
        }
    }
    return 0;
}

void kvz_ostore_meta_free_strs(char *strs[KVZ_OSTORE_META_N_STRS])
{
    for (size_t i = 0; i < KVZ_OSTORE_META_N_STRS; i++) {
        free(strs[i]);
        strs[i] = NULL;
    }
}

int kvz_ostore_meta_copy(const kvz_oracle_meta *m, kvz_oracle_meta *out,
                         char *strs[KVZ_OSTORE_META_N_STRS])
{
    *out = *m;
    size_t n_str = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (FIELDS[i].kind != M_STR)
            continue;
        if (n_str >= KVZ_OSTORE_META_N_STRS)
            return -1; /* KVZ_OSTORE_META_N_STRS is smaller than the table's string fields */
        const char *s = field_str(&FIELDS[i], m);
        strs[n_str] = strdup(s);
        if (!strs[n_str])
            return -1;
        *(const char **)((char *)out + FIELDS[i].offset) = strs[n_str++];
    }
    return 0;
}
