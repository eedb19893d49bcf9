/* oracle_store_layout: the dataset list shared by shards, the merged file and
 * the reader (names, element kinds, columns, rows per sample or document),
 * the group skeleton and the format attributes. One place defines the
 * layout documented in oracle_store.h and docs/oracle-format.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "oracle_store_internal.h"

static const struct {
    const char *name;
    int kind, per_doc;
} FIXED[KVZ_OSTORE_FIRST_LAYER_DSET] = {
    {"samples/token_id", KVZ_COL_I32, 0},       {"samples/doc_index", KVZ_COL_I32, 0},
    {"samples/position", KVZ_COL_I32, 0},       {"samples/split", KVZ_COL_U8, 0},
    {"documents/source", KVZ_COL_STR, 1},       {"documents/subset", KVZ_COL_STR, 1},
    {"documents/split", KVZ_COL_U8, 1},         {"documents/n_text_tokens", KVZ_COL_I32, 1},
    {"documents/n_prompt_tokens", KVZ_COL_I32, 1}, {"documents/context_start", KVZ_COL_I32, 1},
    {"documents/context_end", KVZ_COL_I32, 1},  {"documents/repeat_start", KVZ_COL_I32, 1},
    {"documents/repeat_end", KVZ_COL_I32, 1},   {"documents/n_samples", KVZ_COL_I32, 1},
    {"documents/sample_start", KVZ_COL_I64, 1},
};

static size_t per_layer(const kvz_oracle_meta *m)
{
    return m->store_hidden ? 2 : 1;
}

size_t kvz_ostore_hidden_index(const kvz_oracle_meta *m, size_t l)
{
    return KVZ_OSTORE_FIRST_LAYER_DSET + l * per_layer(m);
}

size_t kvz_ostore_scores_index(const kvz_oracle_meta *m, size_t l)
{
    return KVZ_OSTORE_FIRST_LAYER_DSET + l * per_layer(m) + (m->store_hidden ? 1 : 0);
}

kvz_ostore_dset *kvz_ostore_dsets(const kvz_oracle_meta *m, size_t *n)
{
    size_t count = KVZ_OSTORE_FIRST_LAYER_DSET + m->n_layers * per_layer(m);
    kvz_ostore_dset *d = calloc(count, sizeof *d);
    if (!d)
        return NULL;
    for (size_t i = 0; i < KVZ_OSTORE_FIRST_LAYER_DSET; i++) {
        snprintf(d[i].name, sizeof d[i].name, "%s", FIXED[i].name);
        d[i].kind = FIXED[i].kind;
        d[i].per_doc = FIXED[i].per_doc;
    }
    for (size_t l = 0; l < m->n_layers; l++) {
        if (m->store_hidden) {
            kvz_ostore_dset *h = &d[kvz_ostore_hidden_index(m, l)];
            snprintf(h->name, sizeof h->name, "layers/%zu/hidden", l);
            h->kind = m->hidden_dtype == KVZ_HIDDEN_FLOAT32 ? KVZ_COL_F32 : KVZ_COL_F16;
            h->cols = m->d_model;
        }
        kvz_ostore_dset *s = &d[kvz_ostore_scores_index(m, l)];
        snprintf(s->name, sizeof s->name, "layers/%zu/log_scores", l);
        s->kind = KVZ_COL_F32;
        s->cols = m->n_kv_heads;
    }
    *n = count;
    return d;
}

hid_t kvz_ostore_kind_type(int kind)
{
    switch (kind) {
    case KVZ_COL_STR:
        return kvz_h5_str_type();
    case KVZ_COL_U8:
        return H5Tcopy(H5T_STD_U8LE);
    case KVZ_COL_I32:
        return H5Tcopy(H5T_STD_I32LE);
    case KVZ_COL_I64:
        return H5Tcopy(H5T_STD_I64LE);
    case KVZ_COL_F16:
        return kvz_h5_half_type();
    default:
        return H5Tcopy(H5T_IEEE_F32LE);
    }
}

static int make_group(hid_t f, const char *name)
{
    hid_t g = kvz_h5_create_group(f, name);
    return g >= 0 && H5Gclose(g) >= 0 ? 0 : -1;
}

int kvz_ostore_create_groups(hid_t f, size_t n_layers)
{
    if (make_group(f, "samples") < 0 || make_group(f, "documents") < 0 ||
        make_group(f, "layers") < 0)
        return -1;
    for (size_t l = 0; l < n_layers; l++) {
        char name[40];
        snprintf(name, sizeof name, "layers/%zu", l);
        if (make_group(f, name) < 0)
            return -1;
    }
    return 0;
}

int kvz_ostore_put_format(hid_t f, int complete)
{
    if (kvz_h5_attr_put_str(f, "format", KVZ_ORACLE_FORMAT) < 0 ||
        kvz_h5_attr_put_i32(f, "format_version", KVZ_ORACLE_FORMAT_VERSION) < 0)
        return -1;
    return complete < 0 ? 0 : kvz_h5_attr_put_i32(f, "complete", complete);
}
