/* export_gguf: the single-file GGUF v3 export of a surrogate.
 * Owns: writing the header, the kvzap.* metadata (general.architecture
 * "kvzap", dims, kind, optional target architecture / provenance /
 * suggested thresholds), the tensor table (kvpress names, GGML dim order)
 * and 32-byte aligned data, atomically via kvz_atomic_*; and re-reading and
 * validating such a file with the repo's GGUF reader. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "../model/gguf.h"
#include "export_internal.h"

#define GGUF_ALIGN 32u

/* ---- writing ---- */

typedef struct gguf_out {
    FILE *fp;
    uint64_t pos;
    int failed;
} gguf_out;

static void put_bytes(gguf_out *o, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, o->fp) != n)
        o->failed = 1;
    o->pos += n;
}

static void put_le(gguf_out *o, uint64_t v, size_t n)
{
    unsigned char b[8];
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put_bytes(o, b, n);
}

static void put_str(gguf_out *o, const char *s)
{
    put_le(o, strlen(s), 8);
    put_bytes(o, s, strlen(s));
}

static void put_key(gguf_out *o, const char *key, kvz_gguf_type type)
{
    put_str(o, key);
    put_le(o, (uint64_t)type, 4);
}

static void kv_str(gguf_out *o, const char *key, const char *v)
{
    put_key(o, key, KVZ_GGUF_STRING);
    put_str(o, v);
}

static void kv_u32(gguf_out *o, const char *key, uint32_t v)
{
    put_key(o, key, KVZ_GGUF_UINT32);
    put_le(o, v, 4);
}

static void kv_f32_array(gguf_out *o, const char *key, const double *v, size_t n)
{
    put_key(o, key, KVZ_GGUF_ARRAY);
    put_le(o, KVZ_GGUF_FLOAT32, 4);
    put_le(o, n, 8);
    for (size_t i = 0; i < n; i++) {
        float f = (float)v[i];
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        put_le(o, u, 4);
    }
}

static void pad_to_alignment(gguf_out *o)
{
    static const unsigned char zeros[GGUF_ALIGN];
    size_t pad = (size_t)((GGUF_ALIGN - o->pos % GGUF_ALIGN) % GGUF_ALIGN);
    put_bytes(o, zeros, pad);
}

static uint32_t ggml_type_of(kvz_export_dtype d)
{
    return d == KVZ_EXPORT_F32 ? KVZ_GGML_F32 : d == KVZ_EXPORT_F16 ? KVZ_GGML_F16 : KVZ_GGML_BF16;
}

/* Counts, then writes, the metadata pairs (count_only: just count). */
static size_t put_metadata(gguf_out *o, const kvz_surrogate *s, const kvz_export_options *opt,
                           int count_only)
{
    const kvz_export_info *in = opt->info;
    int sha = in && in->source_model_sha256 && *in->source_model_sha256;
    size_t n = 9 + (in && in->target_arch) + (in && in->source_model) + sha + (in && in->dataset) +
               (in && in->metrics_json) + (in && in->n_thresholds);
    if (count_only)
        return n;
    kv_str(o, "general.architecture", "kvzap");
    kv_str(o, "general.name", "kvzap surrogate");
    kv_u32(o, "general.alignment", GGUF_ALIGN);
    kv_str(o, "kvzap.kind", s->kind == KVZ_SURROGATE_KIND_MLP ? "mlp" : "linear");
    kv_u32(o, "kvzap.input_dim", (uint32_t)s->d_in);
    kv_u32(o, "kvzap.output_dim", (uint32_t)s->d_out);
    kv_u32(o, "kvzap.hidden_dim", (uint32_t)s->d_hidden);
    kv_u32(o, "kvzap.n_modules", (uint32_t)s->n_layers);
    kv_str(o, "kvzap.dtype", kvz_export_dtype_name(opt->dtype));
    if (in && in->target_arch)
        kv_str(o, "kvzap.target_architecture", in->target_arch);
    if (in && in->source_model)
        kv_str(o, "kvzap.source_model", in->source_model);
    if (sha)
        kv_str(o, "kvzap.source_model_sha256", in->source_model_sha256);
    if (in && in->dataset)
        kv_str(o, "kvzap.dataset", in->dataset);
    if (in && in->metrics_json)
        kv_str(o, "kvzap.metrics_json", in->metrics_json);
    if (in && in->n_thresholds)
        kv_f32_array(o, "kvzap.suggested_thresholds", in->thresholds, in->n_thresholds);
    return n;
}

static uint64_t aligned(uint64_t v)
{
    return (v + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
}

static void put_tensor_infos(gguf_out *o, const kvz_export_tensor *plan, size_t n,
                             kvz_export_dtype dtype)
{
    uint64_t off = 0, es = kvz_export_dtype_size(dtype);
    for (size_t i = 0; i < n; i++) {
        put_str(o, plan[i].name);
        put_le(o, plan[i].n_dims, 4);
        for (size_t d = plan[i].n_dims; d-- > 0;) /* GGML order: innermost first */
            put_le(o, plan[i].shape[d], 8);
        put_le(o, ggml_type_of(dtype), 4);
        put_le(o, off, 8);
        off = aligned(off + plan[i].numel * es);
    }
}

static int put_tensor_data(gguf_out *o, const kvz_surrogate *s, const kvz_export_tensor *plan,
                           size_t n, kvz_export_dtype dtype)
{
    size_t most = 0, es = kvz_export_dtype_size(dtype);
    for (size_t i = 0; i < n; i++)
        most = plan[i].numel > most ? plan[i].numel : most;
    unsigned char *buf = malloc(most * es);
    if (!buf)
        return KVZ_ENOMEM;
    for (size_t i = 0; i < n && !o->failed; i++) {
        pad_to_alignment(o);
        kvz_export_encode(s->params + plan[i].offset, plan[i].numel, dtype, buf);
        put_bytes(o, buf, plan[i].numel * es);
    }
    free(buf);
    return KVZ_OK;
}

static int write_body(gguf_out *o, const kvz_surrogate *s, const kvz_export_options *opt,
                      kvz_error *err, const char *path)
{
    kvz_export_tensor *plan;
    size_t n;
    int rc = kvz_export_plan(s->kind, s->n_layers, s->d_hidden, s->d_in, s->d_out, &plan, &n, err);
    if (rc)
        return rc;
    put_bytes(o, "GGUF", 4);
    put_le(o, 3, 4);
    put_le(o, n, 8);
    put_le(o, put_metadata(o, s, opt, 1), 8);
    put_metadata(o, s, opt, 0);
    put_tensor_infos(o, plan, n, opt->dtype);
    rc = put_tensor_data(o, s, plan, n, opt->dtype);
    free(plan);
    if (rc)
        return kvz_fail(err, rc, "%s: out of memory", path);
    return KVZ_OK;
}

int kvz_export_write_gguf(const kvz_surrogate *s, const char *path, const kvz_export_options *opt,
                          kvz_error *err)
{
    if (s->n_layers > UINT32_MAX || s->d_in > UINT32_MAX || s->d_hidden > UINT32_MAX ||
        s->d_out > UINT32_MAX)
        return kvz_fail(err, KVZ_EINVAL, "%s: surrogate sizes exceed GGUF's uint32 fields", path);
    if (kvz_path_is_dir(path))
        return kvz_fail(err, KVZ_EINVAL, "%s: is a directory; a GGUF export is one file", path);
    if (kvz_path_exists(path) && !opt->overwrite)
        return kvz_fail(err, KVZ_EINVAL, "%s: already exists (pass --overwrite to replace it)", path);
    kvz_atomic_file f;
    int rc = kvz_atomic_open(path, &f, err);
    if (rc)
        return rc;
    gguf_out o = {.fp = f.fp};
    rc = write_body(&o, s, opt, err, path);
    if (rc) {
        kvz_atomic_abort(&f);
        return rc;
    }
    return kvz_atomic_commit(&f, err); /* reports any failed write (ferror) */
}

/* ---- reading ---- */

typedef struct gguf_dims {
    int kind;
    size_t n_layers, d_in, d_hidden, d_out;
} gguf_dims;

static int get_dim(const kvz_gguf *g, const char *key, int allow_zero, size_t *out,
                   kvz_error *err)
{
    uint64_t v;
    int rc = kvz_gguf_get_u64(g, key, &v, err);
    if (rc)
        return rc == KVZ_ENOTFOUND ? kvz_fail(err, KVZ_EFORMAT, "%s: missing key %s",
                                              kvz_gguf_path(g), key)
                                   : rc;
    if ((!allow_zero && v == 0) || v > (1u << 30))
        return kvz_fail(err, KVZ_EFORMAT, "%s: %s = %llu is out of range", kvz_gguf_path(g), key,
                        (unsigned long long)v);
    *out = (size_t)v;
    return KVZ_OK;
}

static int str_equals(const kvz_gguf *g, const char *key, const char *want, int *eq,
                      kvz_error *err)
{
    const char *s;
    size_t len;
    int rc = kvz_gguf_get_str(g, key, &s, &len, err);
    if (rc == KVZ_ENOTFOUND)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing key %s", kvz_gguf_path(g), key);
    *eq = !rc && len == strlen(want) && memcmp(s, want, len) == 0;
    return rc;
}

static int read_dims(const kvz_gguf *g, gguf_dims *d, kvz_error *err)
{
    const char *file = kvz_gguf_path(g);
    int eq = 0, mlp = 0, rc = str_equals(g, "general.architecture", "kvzap", &eq, err);
    if (!rc && !eq)
        return kvz_fail(err, KVZ_EFORMAT, "%s: general.architecture must be \"kvzap\"", file);
    if (!rc && !(rc = str_equals(g, "kvzap.kind", "mlp", &mlp, err)) && !mlp &&
        !(rc = str_equals(g, "kvzap.kind", "linear", &eq, err)) && !eq)
        return kvz_fail(err, KVZ_EFORMAT, "%s: kvzap.kind must be \"linear\" or \"mlp\"", file);
    if (!rc)
        rc = get_dim(g, "kvzap.input_dim", 0, &d->d_in, err);
    if (!rc)
        rc = get_dim(g, "kvzap.output_dim", 0, &d->d_out, err);
    if (!rc)
        rc = get_dim(g, "kvzap.n_modules", 0, &d->n_layers, err);
    if (!rc)
        rc = get_dim(g, "kvzap.hidden_dim", 1, &d->d_hidden, err);
    if (rc)
        return rc;
    d->kind = mlp ? KVZ_SURROGATE_KIND_MLP : KVZ_SURROGATE_KIND_LINEAR;
    if (mlp != (d->d_hidden > 0))
        return kvz_fail(err, KVZ_EFORMAT, "%s: kvzap.hidden_dim %zu does not fit kvzap.kind %s",
                        file, d->d_hidden, mlp ? "mlp" : "linear");
    return KVZ_OK;
}

static void read_provenance(const kvz_gguf *g, kvz_export_report *rep)
{
    const char *s;
    size_t len, count;
    kvz_gguf_type et;
    if (kvz_gguf_get_str(g, "kvzap.target_architecture", &s, &len, NULL) == KVZ_OK)
        snprintf(rep->target_arch, sizeof rep->target_arch, "%.*s", (int)len, s);
    if (kvz_gguf_get_array(g, "kvzap.suggested_thresholds", &et, &count, NULL) != KVZ_OK)
        return;
    for (size_t i = 0; i < count && rep->n_thresholds < KVZ_EXPORT_MAX_THRESHOLDS; i++) {
        double v;
        if (kvz_gguf_array_f64(g, "kvzap.suggested_thresholds", i, &v, NULL) == KVZ_OK)
            rep->thresholds[rep->n_thresholds++] = v;
    }
}

static int check_gguf_tensor(const kvz_gguf *g, const kvz_export_tensor *want, uint32_t type,
                             kvz_error *err)
{
    const char *file = kvz_gguf_path(g);
    const kvz_gguf_tensor_info *t = kvz_gguf_find_tensor(g, want->name);
    if (!t)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing tensor '%s'", file, want->name);
    int ok = t->n_dims == want->n_dims;
    for (size_t d = 0; ok && d < want->n_dims; d++)
        ok = t->ne[d] == want->shape[want->n_dims - 1 - d];
    if (!ok) {
        char got[96], exp[64];
        uint64_t dims[4];
        for (uint32_t d = 0; d < t->n_dims && d < 4; d++)
            dims[d] = t->ne[t->n_dims - 1 - d];
        kvz_export_shape_str(dims, t->n_dims, got, sizeof got);
        kvz_export_plan_shape_str(want, exp, sizeof exp);
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s' has shape %s, expected %s", file,
                        want->name, got, exp);
    }
    if (t->type != type) {
        const char *name = kvz_ggml_type_name(t->type);
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s' is %s, expected %s like the others",
                        file, want->name, name ? name : "an unknown type",
                        kvz_ggml_type_name(type));
    }
    return KVZ_OK;
}

static int export_dtype_of(const kvz_gguf *g, uint32_t type, kvz_export_dtype *out,
                           kvz_error *err)
{
    if (type == KVZ_GGML_F32 || type == KVZ_GGML_F16 || type == KVZ_GGML_BF16) {
        *out = type == KVZ_GGML_F32 ? KVZ_EXPORT_F32
               : type == KVZ_GGML_F16 ? KVZ_EXPORT_F16 : KVZ_EXPORT_BF16;
        return KVZ_OK;
    }
    const char *name = kvz_ggml_type_name(type);
    return kvz_fail(err, KVZ_EFORMAT, "%s: tensor type %s is not F32, F16 or BF16",
                    kvz_gguf_path(g), name ? name : "unknown");
}

/* Checks every tensor's name, shape and type (one float type for all), and
 * that no tensor is extra. */
static int check_gguf_tensors(const kvz_gguf *g, const kvz_export_tensor *plan, size_t n,
                              kvz_export_dtype *dtype, kvz_error *err)
{
    const char *file = kvz_gguf_path(g);
    const kvz_gguf_tensor_info *first = kvz_gguf_find_tensor(g, plan[0].name);
    if (!first)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing tensor '%s'", file, plan[0].name);
    int rc = export_dtype_of(g, first->type, dtype, err);
    for (size_t i = 0; !rc && i < n; i++)
        rc = check_gguf_tensor(g, plan + i, first->type, err);
    for (size_t i = 0; !rc && i < kvz_gguf_n_tensors(g); i++) {
        const char *name = kvz_gguf_tensor(g, i)->name;
        size_t j = 0;
        while (j < n && strcmp(plan[j].name, name) != 0)
            j++;
        if (j == n)
            rc = kvz_fail(err, KVZ_EFORMAT, "%s: unexpected tensor '%s' (the metadata describes "
                          "%zu tensors)", file, name, n);
    }
    return rc;
}

static int read_gguf_tensors(const kvz_gguf *g, const kvz_export_tensor *plan, size_t n,
                             kvz_surrogate *s, kvz_error *err)
{
    int rc = KVZ_OK;
    for (size_t i = 0; !rc && i < n; i++) {
        float *dst = s->params + plan[i].offset;
        rc = kvz_gguf_tensor_to_f32(g, kvz_gguf_find_tensor(g, plan[i].name), dst, err);
        for (size_t k = 0; !rc && k < plan[i].numel; k++)
            if (!isfinite(dst[k]))
                rc = kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s' element %zu is not finite",
                              kvz_gguf_path(g), plan[i].name, k);
    }
    return rc;
}

static int read_opened(const kvz_gguf *g, kvz_export_report *rep, kvz_surrogate **out,
                       kvz_error *err)
{
    gguf_dims d;
    int rc = read_dims(g, &d, err);
    if (rc)
        return rc;
    /* Each module has 2 (Linear) or 4 (MLP) tensors: more modules than tensors
     * cannot check out, and planning them first would allocate for all. */
    if (d.n_layers > kvz_gguf_n_tensors(g))
        return kvz_fail(err, KVZ_EFORMAT, "%s: kvzap.n_modules %zu but the file holds only %zu "
                        "tensors", kvz_gguf_path(g), d.n_layers, kvz_gguf_n_tensors(g));
    read_provenance(g, rep);
    kvz_export_tensor *plan;
    size_t n;
    kvz_surrogate *s = NULL;
    kvz_export_dtype dtype = KVZ_EXPORT_F32;
    rc = kvz_export_plan(d.kind, d.n_layers, d.d_hidden, d.d_in, d.d_out, &plan, &n, err);
    if (rc)
        return rc;
    rc = check_gguf_tensors(g, plan, n, &dtype, err);
    if (!rc)
        rc = kvz_surrogate_create(d.kind, d.n_layers, d.d_in, d.d_hidden, d.d_out, &s, err);
    if (!rc)
        rc = read_gguf_tensors(g, plan, n, s, err);
    if (!rc)
        kvz_export_report_fill(rep, KVZ_EXPORT_GGUF, dtype, s, kvz_gguf_n_tensors(g));
    free(plan);
    if (!rc && out)
        *out = s;
    else
        kvz_surrogate_free(s);
    return rc;
}

int kvz_export_read_gguf(const char *path, kvz_export_report *rep, kvz_surrogate **out,
                         kvz_error *err)
{
    kvz_gguf *g;
    int rc = kvz_gguf_open(path, &g, err);
    if (rc)
        return rc;
    rc = read_opened(g, rep, out, err);
    kvz_gguf_close(g);
    return rc;
}
