/* report_metrics: loads metrics.json (docs/training-output.md) for the report:
 * per-layer, per-model held-out metrics and the provenance keys. Every
 * problem names the file and the JSON location. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "../model/kvz_json.h"
#include "report_internal.h"

/* A number (NaN for null/absent when optional); KVZ_EFORMAT otherwise. */
static int get_number(const char *path, const char *where, json_t *obj, const char *key,
                      int required, double *out, kvz_error *err)
{
    json_t *v = json_object_get(obj, key);
    *out = NAN;
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return KVZ_OK;
    }
    if ((!v && !required) || json_is_null(v))
        return KVZ_OK;
    return kvz_fail(err, KVZ_EFORMAT, "%s: %s.%s: %s", path, where, key,
                    v ? "expected a number" : "missing");
}

static int load_heads(const char *path, const char *where, json_t *heads, rep_model *m,
                      kvz_error *err)
{
    static const char *const keys[3] = {"mse", "r2", "pearson"};
    if (!heads)
        return KVZ_OK;
    if (!json_is_array(heads))
        return kvz_fail(err, KVZ_EFORMAT, "%s: %s.heads: expected an array", path, where);
    m->n_heads = json_array_size(heads);
    m->heads = calloc(m->n_heads ? m->n_heads : 1, sizeof *m->heads);
    if (!m->heads)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    for (size_t h = 0; h < m->n_heads; h++) {
        char at[160];
        snprintf(at, sizeof at, "%s.heads[%zu]", where, h);
        json_t *o = json_array_get(heads, h);
        if (!json_is_object(o))
            return kvz_fail(err, KVZ_EFORMAT, "%s: %s: expected an object", path, at);
        for (int k = 0; k < 3; k++) {
            int rc = get_number(path, at, o, keys[k], 0, &m->heads[h][k], err);
            if (rc)
                return rc;
        }
    }
    return KVZ_OK;
}

static int load_model(const char *path, const char *where, json_t *o, int is_mlp, rep_model *m,
                      kvz_error *err)
{
    static const char *const ko_keys[3] = {"2x", "3x", "4x"};
    if (!json_is_object(o))
        return kvz_fail(err, KVZ_EFORMAT, "%s: %s: %s", path, where,
                        o ? "expected an object" : "missing");
    int rc = get_number(path, where, o, "mse", 1, &m->mse, err);
    if (!rc)
        rc = get_number(path, where, o, "r2", 1, &m->r2, err);
    if (!rc)
        rc = get_number(path, where, o, "pearson", 1, &m->pearson, err);
    if (!rc)
        rc = get_number(path, where, o, is_mlp ? "train_seconds" : "fit_seconds", 0, &m->seconds,
                        err);
    json_t *ko = json_object_get(o, "keep_overlap");
    if (!rc && ko && !json_is_object(ko))
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: %s.keep_overlap: expected an object", path, where);
    for (int k = 0; k < 3 && !rc; k++) {
        char at[160];
        snprintf(at, sizeof at, "%s.keep_overlap", where);
        rc = get_number(path, at, ko, ko_keys[k], 0, &m->keep_overlap[k], err);
    }
    return rc ? rc : load_heads(path, where, json_object_get(o, "heads"), m, err);
}

static int load_layer(const char *path, size_t i, json_t *o, rep_layer *l, kvz_error *err)
{
    char where[64];
    snprintf(where, sizeof where, "layers[%zu]", i);
    if (!json_is_object(o))
        return kvz_fail(err, KVZ_EFORMAT, "%s: %s: expected an object", path, where);
    json_t *idx = json_object_get(o, "layer");
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 || json_integer_value(idx) > 100000)
        return kvz_fail(err, KVZ_EFORMAT, "%s: %s.layer: expected a layer index", path, where);
    l->layer = (int)json_integer_value(idx);
    int rc = get_number(path, where, o, "n_train", 0, &l->n_train, err);
    if (!rc)
        rc = get_number(path, where, o, "n_val", 0, &l->n_val, err);
    if (!rc)
        rc = get_number(path, where, o, "n_test", 0, &l->n_test, err);
    char at[96];
    snprintf(at, sizeof at, "%s.linear", where);
    if (!rc)
        rc = load_model(path, at, json_object_get(o, "linear"), 0, &l->linear, err);
    snprintf(at, sizeof at, "%s.mlp", where);
    if (!rc)
        rc = load_model(path, at, json_object_get(o, "mlp"), 1, &l->mlp, err);
    return rc;
}

/* Provenance: every top-level key but "layers", scalars as text, others as
 * compact JSON. */
static int load_provenance(const char *path, json_t *root, rep_metrics *m, kvz_error *err)
{
    size_t n = json_object_size(root);
    m->prov_keys = calloc(n ? n : 1, sizeof *m->prov_keys);
    m->prov_values = calloc(n ? n : 1, sizeof *m->prov_values);
    if (!m->prov_keys || !m->prov_values)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "layers"))
            continue;
        char *text = json_is_string(v) ? strdup(json_string_value(v))
                                       : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        m->prov_keys[m->n_prov] = strdup(key);
        m->prov_values[m->n_prov++] = text;
        if (!text || !m->prov_keys[m->n_prov - 1])
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    return KVZ_OK;
}

static int by_layer(const void *a, const void *b)
{
    const rep_layer *x = a, *y = b;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

static int load_root(const char *path, json_t *root, rep_metrics *m, kvz_error *err)
{
    if (!json_is_object(root))
        return kvz_fail(err, KVZ_EFORMAT, "%s: expected a JSON object at the top", path);
    json_t *layers = json_object_get(root, "layers");
    if (!json_is_array(layers))
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"layers\": %s", path,
                        layers ? "expected an array" : "missing");
    if (json_array_size(layers) == 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"layers\" is empty: no trained layer", path);
    m->layers = calloc(json_array_size(layers), sizeof *m->layers);
    if (!m->layers)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < json_array_size(layers); i++) {
        m->n_layers = i + 1;
        int rc = load_layer(path, i, json_array_get(layers, i), &m->layers[i], err);
        if (rc)
            return rc;
    }
    qsort(m->layers, m->n_layers, sizeof *m->layers, by_layer);
    for (size_t i = 1; i < m->n_layers; i++)
        if (m->layers[i].layer == m->layers[i - 1].layer)
            return kvz_fail(err, KVZ_EFORMAT, "%s: layer %d appears twice", path,
                            m->layers[i].layer);
    return load_provenance(path, root, m, err);
}

int rep_metrics_load(const char *path, rep_metrics *out, kvz_error *err)
{
    memset(out, 0, sizeof *out);
    char *text = NULL;
    size_t len = 0;
    int rc = kvz_file_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    json_error_t jerr;
    kvz_json_mark mark = kvz_json_mark_now();
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (kvz_json_failed_since(mark) || (!root && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(root);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    if (!root)
        return kvz_fail(err, KVZ_EFORMAT, "%s: invalid JSON: line %d column %d: %s", path,
                        jerr.line, jerr.column, jerr.text);
    rc = load_root(path, root, out, err);
    json_decref(root);
    if (rc)
        rep_metrics_free(out);
    return rc;
}

void rep_metrics_free(rep_metrics *m)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        free(m->layers[i].linear.heads);
        free(m->layers[i].mlp.heads);
    }
    free(m->layers);
    for (size_t i = 0; i < m->n_prov; i++) {
        free(m->prov_keys[i]);
        free(m->prov_values[i]);
    }
    free(m->prov_keys);
    free(m->prov_values);
    memset(m, 0, sizeof *m);
}
