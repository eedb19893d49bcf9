/* export: the format-independent part of surrogate exports.
 * Owns: options and dtype/format names, float32 -> bf16/f16 rounding, the
 * tensor plan (names and shapes kvpress uses), value checks before writing,
 * and dispatching write/check/load to the kvpress and GGUF back ends. */
#include "export.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/kvz_file.h"
#include "export_internal.h"

kvz_export_options kvz_export_default_options(void)
{
    kvz_export_options o = {.format = KVZ_EXPORT_KVPRESS, .dtype = KVZ_EXPORT_BF16};
    return o;
}

const char *kvz_export_dtype_name(kvz_export_dtype dtype)
{
    switch (dtype) {
    case KVZ_EXPORT_BF16: return "bfloat16";
    case KVZ_EXPORT_F16: return "float16";
    case KVZ_EXPORT_F32: return "float32";
    }
    return "?";
}

size_t kvz_export_dtype_size(kvz_export_dtype dtype)
{
    return dtype == KVZ_EXPORT_F32 ? 4 : 2;
}

static int name_in(const char *text, const char *const *names)
{
    for (size_t i = 0; names[i]; i++)
        if (strcasecmp(text, names[i]) == 0)
            return 1;
    return 0;
}

int kvz_export_dtype_parse(const char *text, kvz_export_dtype *out, kvz_error *err)
{
    static const char *const bf16[] = {"bf16", "bfloat16", NULL};
    static const char *const f16[] = {"f16", "fp16", "float16", "half", NULL};
    static const char *const f32[] = {"f32", "fp32", "float32", "float", NULL};
    if (text && name_in(text, bf16))
        *out = KVZ_EXPORT_BF16;
    else if (text && name_in(text, f16))
        *out = KVZ_EXPORT_F16;
    else if (text && name_in(text, f32))
        *out = KVZ_EXPORT_F32;
    else
        return kvz_fail(err, KVZ_EINVAL, "unknown export dtype '%s' (use bf16, f16 or f32)",
                        text ? text : "");
    return KVZ_OK;
}

int kvz_export_format_parse(const char *text, kvz_export_format *out, kvz_error *err)
{
    static const char *const kvpress[] = {"kvpress", "dir", "safetensors", "hf", NULL};
    static const char *const gguf[] = {"gguf", NULL};
    if (text && name_in(text, kvpress))
        *out = KVZ_EXPORT_KVPRESS;
    else if (text && name_in(text, gguf))
        *out = KVZ_EXPORT_GGUF;
    else
        return kvz_fail(err, KVZ_EINVAL, "unknown export format '%s' (use kvpress or gguf)",
                        text ? text : "");
    return KVZ_OK;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Half subnormal (or zero) from a float magnitude below 2^-14. */
void kvz_export_encode(const float *src, size_t n, kvz_export_dtype dtype, unsigned char *dst)
{
    for (size_t i = 0; i < n; i++) {
        if (dtype == KVZ_EXPORT_F32) {
            uint32_t u = f32_bits(src[i]);
            for (int b = 0; b < 4; b++)
                dst[4 * i + (size_t)b] = (unsigned char)(u >> (8 * b));
            continue;
        }
        unsigned short h = dtype == KVZ_EXPORT_BF16 ? kvz_f32_to_bf16(src[i]) : kvz_f32_to_f16(src[i]);
        dst[2 * i] = (unsigned char)(h & 0xff);
        dst[2 * i + 1] = (unsigned char)(h >> 8);
    }
}

int kvz_export_check_values(const float *v, size_t n, kvz_export_dtype dtype, const char *what,
                            const char *tensor, kvz_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            return kvz_fail(err, KVZ_EINVAL, "%s: tensor '%s' element %zu is not finite (%g)",
                            what, tensor, i, (double)v[i]);
        int overflow = dtype == KVZ_EXPORT_F16 ? (kvz_f32_to_f16(v[i]) & 0x7c00u) == 0x7c00u
                       : dtype == KVZ_EXPORT_BF16 ? (kvz_f32_to_bf16(v[i]) & 0x7f80u) == 0x7f80u
                                                  : 0;
        if (overflow)
            return kvz_fail(err, KVZ_EINVAL, "%s: tensor '%s' element %zu (%g) does not fit %s",
                            what, tensor, i, (double)v[i], kvz_export_dtype_name(dtype));
    }
    return KVZ_OK;
}

static kvz_export_tensor make_tensor(const char *name, size_t rows, size_t cols, size_t offset)
{
    kvz_export_tensor t = {.n_dims = cols ? 2 : 1, .shape = {rows, cols},
                           .numel = cols ? rows * cols : rows, .offset = offset};
    snprintf(t.name, sizeof t.name, "%s", name);
    return t;
}

int kvz_export_plan(int kind, size_t n_layers, size_t d_hidden, size_t d_in, size_t d_out,
                    kvz_export_tensor **out, size_t *n_out, kvz_error *err)
{
    size_t per = kind == KVZ_SURROGATE_KIND_LINEAR ? 2 : 4;
    kvz_export_tensor *t = calloc(n_layers * per, sizeof *t);
    if (!t)
        return kvz_fail(err, KVZ_ENOMEM, "export: out of memory");
    size_t stride = kind == KVZ_SURROGATE_KIND_LINEAR
                        ? d_out * d_in + d_out
                        : d_hidden * d_in + d_hidden + d_out * d_hidden + d_out;
    char name[KVZ_EXPORT_NAME_MAX];
    for (size_t i = 0; i < n_layers; i++) {
        size_t base = i * stride;
        kvz_export_tensor *l = t + i * per;
        if (kind == KVZ_SURROGATE_KIND_LINEAR) {
            snprintf(name, sizeof name, "layers.%zu.weight", i);
            l[0] = make_tensor(name, d_out, d_in, base);
            snprintf(name, sizeof name, "layers.%zu.bias", i);
            l[1] = make_tensor(name, d_out, 0, base + d_out * d_in);
            continue;
        }
        size_t b1 = base + d_hidden * d_in, w2 = b1 + d_hidden, b2 = w2 + d_out * d_hidden;
        snprintf(name, sizeof name, "layers.%zu.0.weight", i);
        l[0] = make_tensor(name, d_hidden, d_in, base);
        snprintf(name, sizeof name, "layers.%zu.0.bias", i);
        l[1] = make_tensor(name, d_hidden, 0, b1);
        snprintf(name, sizeof name, "layers.%zu.2.weight", i);
        l[2] = make_tensor(name, d_out, d_hidden, w2);
        snprintf(name, sizeof name, "layers.%zu.2.bias", i);
        l[3] = make_tensor(name, d_out, 0, b2);
    }
    *out = t;
    *n_out = n_layers * per;
    return KVZ_OK;
}

static int check_surrogate_values(const kvz_surrogate *s, const char *path, kvz_export_dtype dtype,
                                  kvz_error *err)
{
    kvz_export_tensor *plan;
    size_t n;
    int rc = kvz_export_plan(s->kind, s->n_layers, s->d_hidden, s->d_in, s->d_out, &plan, &n, err);
    if (rc)
        return rc;
    for (size_t i = 0; rc == KVZ_OK && i < n; i++)
        rc = kvz_export_check_values(s->params + plan[i].offset, plan[i].numel, dtype, path,
                                     plan[i].name, err);
    free(plan);
    return rc;
}

static int check_write_args(const kvz_surrogate *s, const char *path,
                            const kvz_export_options *o, kvz_error *err)
{
    if (!path || !*path)
        return kvz_fail(err, KVZ_EINVAL, "export: no output path");
    if (!s || !s->params || s->n_layers == 0 || s->d_in == 0 || s->d_out == 0 ||
        (s->kind == KVZ_SURROGATE_KIND_MLP) != (s->d_hidden > 0))
        return kvz_fail(err, KVZ_EINVAL, "%s: export of an empty or inconsistent surrogate", path);
    if (o->format != KVZ_EXPORT_KVPRESS && o->format != KVZ_EXPORT_GGUF)
        return kvz_fail(err, KVZ_EINVAL, "%s: unknown export format %d", path, (int)o->format);
    if (o->dtype != KVZ_EXPORT_BF16 && o->dtype != KVZ_EXPORT_F16 && o->dtype != KVZ_EXPORT_F32)
        return kvz_fail(err, KVZ_EINVAL, "%s: unknown export dtype %d", path, (int)o->dtype);
    if (o->info && o->info->n_thresholds > KVZ_EXPORT_MAX_THRESHOLDS)
        return kvz_fail(err, KVZ_EINVAL, "%s: %zu thresholds (at most %d)", path,
                        o->info->n_thresholds, KVZ_EXPORT_MAX_THRESHOLDS);
    return check_surrogate_values(s, path, o->dtype, err);
}

int kvz_export_write(const kvz_surrogate *s, const char *path, const kvz_export_options *opt,
                     kvz_error *err)
{
    kvz_export_options o = opt ? *opt : kvz_export_default_options();
    int rc = check_write_args(s, path, &o, err);
    if (rc)
        return rc;
    char *clean = strdup(path); /* without trailing slashes: "out/" -> "out" */
    if (!clean)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    for (size_t n = strlen(clean); n > 1 && clean[n - 1] == '/'; n--)
        clean[n - 1] = '\0';
    rc = o.format == KVZ_EXPORT_GGUF ? kvz_export_write_gguf(s, clean, &o, err)
                                     : kvz_export_write_kvpress(s, clean, &o, err);
    free(clean);
    return rc;
}

void kvz_export_report_fill(kvz_export_report *rep, kvz_export_format format,
                            kvz_export_dtype dtype, const kvz_surrogate *s, size_t n_tensors)
{
    rep->format = format;
    rep->dtype = dtype;
    rep->kind = s->kind;
    rep->n_layers = s->n_layers;
    rep->d_in = s->d_in;
    rep->d_hidden = s->d_hidden;
    rep->d_out = s->d_out;
    rep->n_tensors = n_tensors;
    rep->n_params = s->n_layers * s->layer_stride;
}

void kvz_export_shape_str(const uint64_t *dims, size_t n_dims, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (size_t d = 0; d < n_dims && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%llu", d ? ", " : "", (unsigned long long)dims[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

void kvz_export_plan_shape_str(const kvz_export_tensor *t, char *buf, size_t cap)
{
    uint64_t dims[2] = {t->shape[0], t->shape[1]};
    kvz_export_shape_str(dims, t->n_dims, buf, cap);
}

/* "d/config.json" or "d/model.safetensors" -> "d" (malloc'ed); else NULL. */
static char *export_dir_of_member(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (strcmp(base, "config.json") != 0 && strcmp(base, "model.safetensors") != 0)
        return NULL;
    if (!slash)
        return strdup(".");
    return slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
}

static int read_any(const char *path, kvz_export_report *rep, kvz_surrogate **out, kvz_error *err)
{
    kvz_export_report local;
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    if (!path || !*path)
        return kvz_fail(err, KVZ_EINVAL, "export: no path given");
    if (!kvz_path_exists(path))
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: no such file or directory", path);
    if (kvz_path_is_dir(path))
        return kvz_export_read_kvpress(path, rep, out, err);
    char *dir = export_dir_of_member(path);
    if (dir) {
        int rc = kvz_export_read_kvpress(dir, rep, out, err);
        free(dir);
        return rc;
    }
    return kvz_export_read_gguf(path, rep, out, err);
}

int kvz_export_check(const char *path, kvz_export_report *report_or_NULL, kvz_error *err)
{
    return read_any(path, report_or_NULL, NULL, err);
}

int kvz_export_load(const char *path, kvz_surrogate **out, kvz_error *err)
{
    *out = NULL;
    return read_any(path, NULL, out, err);
}
