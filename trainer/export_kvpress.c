/* export_kvpress: the kvpress export directory (config.json +
 * model.safetensors) that kvpress's KVzapModel.from_pretrained loads.
 * Owns: the config.json keys (incl. the "kvzap" provenance object), the
 * safetensors writer, the atomic directory write (kvz_outdir: a temporary
 * directory swapped into place whole) and re-reading/validating such a
 * directory. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/kvz_file.h"
#include "../model/kvz_json.h"
#include "../model/safetensors.h"
#include "export_internal.h"

/* ---- writing ---- */

static const char *kind_name(int kind)
{
    return kind == KVZ_SURROGATE_KIND_MLP ? "mlp" : "linear";
}

static int add_provenance(json_t *cfg, const kvz_surrogate *s, const kvz_export_info *info,
                          const char *path, kvz_error *err)
{
    json_t *p = json_object();
    json_object_set_new(p, "writer", json_string("kvzap " KVZ_VERSION));
    json_object_set_new(p, "kind", json_string(kind_name(s->kind)));
    if (info && info->source_model)
        json_object_set_new(p, "source_model", json_string(info->source_model));
    if (info && info->source_model_sha256 && *info->source_model_sha256)
        json_object_set_new(p, "source_model_sha256", json_string(info->source_model_sha256));
    if (info && info->target_arch)
        json_object_set_new(p, "target_architecture", json_string(info->target_arch));
    if (info && info->dataset)
        json_object_set_new(p, "dataset", json_string(info->dataset));
    if (info && info->metrics_json) {
        json_error_t je;
        kvz_json_mark mark = kvz_json_mark_now();
        json_t *m = json_loads(info->metrics_json, 0, &je);
        if (kvz_json_failed_since(mark) || !m || !json_is_object(m)) {
            int oom = kvz_json_failed_since(mark) || json_error_code(&je) == json_error_out_of_memory;
            json_decref(m);
            json_decref(p);
            return oom ? kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path)
                       : kvz_fail(err, KVZ_EINVAL, "%s: metrics summary is not a JSON object", path);
        }
        json_object_set_new(p, "metrics", m);
    }
    if (info && info->n_thresholds) {
        json_t *a = json_array();
        for (size_t i = 0; i < info->n_thresholds; i++)
            json_array_append_new(a, json_real(info->thresholds[i]));
        json_object_set_new(p, "suggested_thresholds", a);
    }
    json_object_set_new(cfg, "kvzap", p);
    return KVZ_OK;
}

/* Every setter below drops its value silently when jansson runs out of
 * memory: the mark catches that before the text is used. */
static int build_config(const kvz_surrogate *s, const kvz_export_options *o, const char *path,
                        char **text, kvz_error *err)
{
    kvz_json_mark mark = kvz_json_mark_now();
    json_t *cfg = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string("KVzapModel"));
    json_object_set_new(cfg, "architectures", arch);
    json_object_set_new(cfg, "model_type", json_string("kvzap"));
    json_object_set_new(cfg, "input_dim", json_integer((json_int_t)s->d_in));
    json_object_set_new(cfg, "output_dim", json_integer((json_int_t)s->d_out));
    json_object_set_new(cfg, "n_modules", json_integer((json_int_t)s->n_layers));
    json_object_set_new(cfg, "hidden_dim", s->kind == KVZ_SURROGATE_KIND_MLP
                                               ? json_integer((json_int_t)s->d_hidden)
                                               : json_null());
    json_object_set_new(cfg, "dtype", json_string(kvz_export_dtype_name(o->dtype)));
    json_object_set_new(cfg, "torch_dtype", json_string(kvz_export_dtype_name(o->dtype)));
    int rc = add_provenance(cfg, s, o->info, path, err);
    *text = rc ? NULL : json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(cfg);
    if (!rc && (!*text || kvz_json_failed_since(mark))) {
        free(*text);
        *text = NULL;
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    return rc;
}

static const char *st_dtype_name(kvz_export_dtype d)
{
    return d == KVZ_EXPORT_F32 ? "F32" : d == KVZ_EXPORT_F16 ? "F16" : "BF16";
}

/* The safetensors JSON header, padded with spaces to a multiple of 8; NULL
 * when out of memory (a setter dropped a value included). */
static char *st_header(const kvz_export_tensor *plan, size_t n, kvz_export_dtype dtype,
                       size_t *len)
{
    kvz_json_mark mark = kvz_json_mark_now();
    json_t *h = json_object();
    json_t *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(h, "__metadata__", meta);
    size_t off = 0, es = kvz_export_dtype_size(dtype);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_object(), *shape = json_array();
        for (size_t d = 0; d < plan[i].n_dims; d++)
            json_array_append_new(shape, json_integer((json_int_t)plan[i].shape[d]));
        json_object_set_new(t, "dtype", json_string(st_dtype_name(dtype)));
        json_object_set_new(t, "shape", shape);
        json_object_set_new(t, "data_offsets", json_pack("[II]", (json_int_t)off,
                                                         (json_int_t)(off + plan[i].numel * es)));
        json_object_set_new(h, plan[i].name, t);
        off += plan[i].numel * es;
    }
    char *text = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    if (text && kvz_json_failed_since(mark)) {
        free(text);
        text = NULL;
    }
    if (!text)
        return NULL;
    size_t raw = strlen(text), padded = (raw + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + raw, ' ', padded - raw);
    out[padded] = '\0';
    *len = padded;
    return out;
}

static int write_tensors(FILE *fp, const kvz_surrogate *s, const kvz_export_tensor *plan, size_t n,
                         kvz_export_dtype dtype)
{
    size_t most = 0, es = kvz_export_dtype_size(dtype);
    for (size_t i = 0; i < n; i++)
        most = plan[i].numel > most ? plan[i].numel : most;
    unsigned char *buf = malloc(most * es);
    if (!buf)
        return KVZ_ENOMEM;
    int ok = 1;
    for (size_t i = 0; ok && i < n; i++) {
        kvz_export_encode(s->params + plan[i].offset, plan[i].numel, dtype, buf);
        ok = fwrite(buf, es, plan[i].numel, fp) == plan[i].numel;
    }
    free(buf);
    return ok ? KVZ_OK : KVZ_EIO;
}

/* Opens, writes via the callback, fsyncs and closes one file of the temp dir. */
typedef int (*body_writer)(FILE *fp, const void *ctx);

static int write_synced(const char *file, const char *dest, body_writer body, const void *ctx,
                        kvz_error *err)
{
    FILE *fp = fopen(file, "wb");
    if (!fp)
        return kvz_fail(err, KVZ_EIO, "%s: cannot write %s: %s", dest, file, strerror(errno));
    int rc = body(fp, ctx);
    int e = errno;
    if (rc == KVZ_OK && (fflush(fp) != 0 || ferror(fp) || fsync(fileno(fp)) != 0))
        rc = KVZ_EIO, e = errno;
    if (fclose(fp) != 0 && rc == KVZ_OK)
        rc = KVZ_EIO, e = errno;
    if (rc == KVZ_ENOMEM)
        return kvz_fail(err, rc, "%s: out of memory writing %s", dest, file);
    if (rc)
        return kvz_fail(err, KVZ_EIO, "%s: write failed (%s): %s", dest, file, strerror(e));
    return KVZ_OK;
}

static int write_text(FILE *fp, const void *ctx)
{
    const char *text = ctx;
    size_t n = strlen(text);
    return fwrite(text, 1, n, fp) == n && fputc('\n', fp) != EOF ? KVZ_OK : KVZ_EIO;
}

typedef struct st_job {
    const kvz_surrogate *s;
    const kvz_export_tensor *plan;
    size_t n;
    kvz_export_dtype dtype;
    const char *header;
    size_t header_len;
} st_job;

static int write_st(FILE *fp, const void *ctx)
{
    const st_job *j = ctx;
    unsigned char len8[8];
    for (int b = 0; b < 8; b++)
        len8[b] = (unsigned char)((uint64_t)j->header_len >> (8 * b));
    if (fwrite(len8, 1, 8, fp) != 8 || fwrite(j->header, 1, j->header_len, fp) != j->header_len)
        return KVZ_EIO;
    return write_tensors(fp, j->s, j->plan, j->n, j->dtype);
}

static int write_dir_contents(const kvz_surrogate *s, const char *tmp, const char *path,
                              const kvz_export_options *o, kvz_error *err)
{
    char *config = NULL, *header = NULL;
    kvz_export_tensor *plan = NULL;
    size_t n = 0, header_len = 0;
    int rc = build_config(s, o, path, &config, err);
    if (!rc)
        rc = kvz_export_plan(s->kind, s->n_layers, s->d_hidden, s->d_in, s->d_out, &plan, &n, err);
    if (!rc && !(header = st_header(plan, n, o->dtype, &header_len)))
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    char *cfg_path = rc ? NULL : kvz_path_join(tmp, "config.json");
    char *st_path = rc ? NULL : kvz_path_join(tmp, "model.safetensors");
    if (!rc && (!cfg_path || !st_path))
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    if (!rc)
        rc = write_synced(cfg_path, path, write_text, config, err);
    st_job job = {s, plan, n, o->dtype, header, header_len};
    if (!rc)
        rc = write_synced(st_path, path, write_st, &job, err);
    free(cfg_path);
    free(st_path);
    free(config);
    free(header);
    free(plan);
    return rc;
}

/* An existing destination may be replaced only when it is a directory of
 * plain files that is empty or a kvzap export. */
static int replaceable(const char *path, kvz_error *err)
{
    if (!kvz_path_is_dir(path))
        return kvz_fail(err, KVZ_EINVAL, "%s: exists and is not a directory; not replacing it",
                        path);
    DIR *d = opendir(path);
    if (!d)
        return kvz_fail(err, KVZ_EIO, "%s: cannot read: %s", path, strerror(errno));
    struct dirent *e;
    int n = 0, bad = 0;
    while ((e = readdir(d)) && !bad) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = kvz_path_join(path, e->d_name);
        struct stat st;
        bad = !p || lstat(p, &st) != 0 || !S_ISREG(st.st_mode);
        free(p);
        n++;
    }
    closedir(d);
    if (!bad && n > 0)
        bad = kvz_export_check(path, NULL, NULL) != KVZ_OK;
    if (bad)
        return kvz_fail(err, KVZ_EINVAL,
                        "%s: exists and is not a kvzap export; not replacing it", path);
    return KVZ_OK;
}

int kvz_export_write_kvpress(const kvz_surrogate *s, const char *path,
                             const kvz_export_options *o, kvz_error *err)
{
    int existed = kvz_path_exists(path);
    if (existed && !o->overwrite)
        return kvz_fail(err, KVZ_EINVAL, "%s: already exists (pass --overwrite to replace it)", path);
    int rc = existed ? replaceable(path, err) : KVZ_OK;
    if (rc)
        return rc;
    kvz_outdir out;
    rc = kvz_outdir_begin(path, &out, err);
    if (rc)
        return rc;
    rc = write_dir_contents(s, out.tmp_path, path, o, err);
    if (rc)
        kvz_outdir_abort(&out);
    else
        rc = kvz_outdir_commit(&out, err);
    return rc;
}

/* ---- reading ---- */

typedef struct kv_config {
    int kind;
    size_t n_layers, d_in, d_hidden, d_out;
    kvz_export_dtype dtype;
} kv_config;

static int config_dim(const json_t *cfg, const char *file, const char *key, size_t *out,
                      kvz_error *err)
{
    json_t *v = json_object_get(cfg, key);
    if (!v)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing key \"%s\"", file, key);
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 30))
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"%s\" must be a positive integer", file, key);
    *out = (size_t)json_integer_value(v);
    return KVZ_OK;
}

static int config_dtype(const json_t *cfg, const char *file, kvz_export_dtype *out,
                        kvz_error *err)
{
    const json_t *a = json_object_get(cfg, "dtype"), *b = json_object_get(cfg, "torch_dtype");
    if (!a && !b)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing key \"dtype\" (or \"torch_dtype\")", file);
    if ((a && !json_is_string(a)) || (b && !json_is_string(b)))
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"dtype\"/\"torch_dtype\" must be strings", file);
    if (a && b && strcmp(json_string_value(a), json_string_value(b)) != 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"dtype\" is '%s' but \"torch_dtype\" is '%s'",
                        file, json_string_value(a), json_string_value(b));
    const char *name = json_string_value(a ? a : b);
    for (int d = KVZ_EXPORT_BF16; d <= KVZ_EXPORT_F32; d++)
        if (strcmp(name, kvz_export_dtype_name((kvz_export_dtype)d)) == 0) {
            *out = (kvz_export_dtype)d;
            return KVZ_OK;
        }
    return kvz_fail(err, KVZ_EFORMAT,
                    "%s: dtype '%s' is not one of bfloat16, float16, float32", file, name);
}

static int config_identity(const json_t *cfg, const char *file, kvz_error *err)
{
    const json_t *mt = json_object_get(cfg, "model_type");
    if (!json_is_string(mt) || strcmp(json_string_value(mt), "kvzap") != 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"model_type\" must be \"kvzap\"", file);
    const json_t *arch = json_object_get(cfg, "architectures");
    size_t i;
    json_t *v;
    json_array_foreach(arch, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), "KVzapModel") == 0)
            return KVZ_OK;
    return kvz_fail(err, KVZ_EFORMAT, "%s: \"architectures\" must list \"KVzapModel\"", file);
}

static void config_provenance(const json_t *cfg, kvz_export_report *rep)
{
    const json_t *p = json_object_get(cfg, "kvzap");
    const json_t *arch = json_object_get(p, "target_architecture");
    if (json_is_string(arch))
        snprintf(rep->target_arch, sizeof rep->target_arch, "%s", json_string_value(arch));
    const json_t *th = json_object_get(p, "suggested_thresholds");
    size_t i;
    json_t *v;
    json_array_foreach(th, i, v)
        if (json_is_number(v) && rep->n_thresholds < KVZ_EXPORT_MAX_THRESHOLDS)
            rep->thresholds[rep->n_thresholds++] = json_number_value(v);
}

static int parse_config(const json_t *cfg, const char *file, kv_config *c, kvz_export_report *rep,
                        kvz_error *err)
{
    if (!json_is_object(cfg))
        return kvz_fail(err, KVZ_EFORMAT, "%s: not a JSON object", file);
    int rc = config_identity(cfg, file, err);
    if (!rc)
        rc = config_dim(cfg, file, "input_dim", &c->d_in, err);
    if (!rc)
        rc = config_dim(cfg, file, "output_dim", &c->d_out, err);
    if (!rc)
        rc = config_dim(cfg, file, "n_modules", &c->n_layers, err);
    if (rc)
        return rc;
    const json_t *h = json_object_get(cfg, "hidden_dim");
    if (!h)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing key \"hidden_dim\" (null for Linear)", file);
    c->kind = json_is_null(h) ? KVZ_SURROGATE_KIND_LINEAR : KVZ_SURROGATE_KIND_MLP;
    c->d_hidden = 0;
    if (!json_is_null(h) && (rc = config_dim(cfg, file, "hidden_dim", &c->d_hidden, err)))
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"hidden_dim\" must be a positive integer or null",
                        file);
    if ((rc = config_dtype(cfg, file, &c->dtype, err)))
        return rc;
    config_provenance(cfg, rep);
    return KVZ_OK;
}

static int read_config(const char *dir, kv_config *c, kvz_export_report *rep, kvz_error *err)
{
    char *file = kvz_path_join(dir, "config.json");
    if (!file)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", dir);
    char *text = NULL;
    size_t len;
    int rc = kvz_file_read_all(file, &text, &len, err);
    if (!rc) {
        json_error_t je;
        kvz_json_mark mark = kvz_json_mark_now();
        json_t *cfg = json_loadb(text, len, 0, &je);
        if (kvz_json_failed_since(mark) || (!cfg && json_error_code(&je) == json_error_out_of_memory))
            rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", file);
        else if (!cfg)
            rc = kvz_fail(err, KVZ_EFORMAT, "%s: invalid JSON at line %d: %s", file, je.line,
                          je.text);
        else
            rc = parse_config(cfg, file, c, rep, err);
        json_decref(cfg);
    }
    free(text);
    free(file);
    return rc;
}

static kvz_st_dtype st_dtype_of(kvz_export_dtype d)
{
    return d == KVZ_EXPORT_F32 ? KVZ_ST_F32 : d == KVZ_EXPORT_F16 ? KVZ_ST_F16 : KVZ_ST_BF16;
}

static int check_st_tensor(const kvz_safetensors *st, const char *file, const kvz_export_tensor *want,
                           const kv_config *c, kvz_error *err)
{
    const kvz_st_tensor *t = kvz_safetensors_find(st, want->name);
    if (!t)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing tensor '%s' (n_modules %zu, %s)", file,
                        want->name, c->n_layers, c->kind == KVZ_SURROGATE_KIND_MLP ? "MLP" : "Linear");
    int shape_ok = t->n_dims == want->n_dims;
    for (size_t d = 0; shape_ok && d < want->n_dims; d++)
        shape_ok = t->shape[d] == want->shape[d];
    if (!shape_ok) {
        char got[96], exp[64];
        kvz_export_shape_str(t->shape, t->n_dims, got, sizeof got);
        kvz_export_plan_shape_str(want, exp, sizeof exp);
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: tensor '%s' has shape %s, expected %s from config.json", file,
                        want->name, got, exp);
    }
    if (t->dtype != st_dtype_of(c->dtype))
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s' is %s but config.json says %s", file,
                        want->name, kvz_st_dtype_name(t->dtype), kvz_export_dtype_name(c->dtype));
    return KVZ_OK;
}

static int find_extra(const kvz_safetensors *st, const char *file, const kvz_export_tensor *plan,
                      size_t n, kvz_error *err)
{
    for (size_t i = 0; i < kvz_safetensors_n_tensors(st); i++) {
        const char *name = kvz_safetensors_tensor(st, i)->name;
        size_t j = 0;
        while (j < n && strcmp(plan[j].name, name) != 0)
            j++;
        if (j == n)
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: unexpected tensor '%s' (config.json describes %zu tensors)", file,
                            name, n);
    }
    return KVZ_OK;
}

static int check_finite(const float *v, size_t n, const char *file, const char *name,
                        kvz_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s' element %zu is not finite", file,
                            name, i);
    return KVZ_OK;
}

/* Checks every tensor's name, shape and dtype before allocating, then
 * converts them into a new surrogate. */
static int read_tensors(const kvz_safetensors *st, const char *file, const kv_config *c,
                        kvz_surrogate **out, kvz_error *err)
{
    /* Each module has 2 (Linear) or 4 (MLP) tensors: more modules than tensors
     * cannot check out, and planning them first would allocate for all. */
    if (c->n_layers > kvz_safetensors_n_tensors(st))
        return kvz_fail(err, KVZ_EFORMAT, "%s: n_modules %zu but model.safetensors holds only "
                        "%zu tensors", file, c->n_layers, kvz_safetensors_n_tensors(st));
    kvz_export_tensor *plan;
    size_t n;
    int rc = kvz_export_plan(c->kind, c->n_layers, c->d_hidden, c->d_in, c->d_out, &plan, &n, err);
    if (rc)
        return rc;
    const char *fmt = kvz_safetensors_metadata(st, "format");
    if (!fmt || strcmp(fmt, "pt") != 0)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: metadata \"format\" must be \"pt\"", file);
    for (size_t i = 0; !rc && i < n; i++)
        rc = check_st_tensor(st, file, plan + i, c, err);
    if (!rc)
        rc = find_extra(st, file, plan, n, err);
    kvz_surrogate *s = NULL;
    if (!rc)
        rc = kvz_surrogate_create(c->kind, c->n_layers, c->d_in, c->d_hidden, c->d_out, &s, err);
    for (size_t i = 0; !rc && i < n; i++) {
        float *dst = s->params + plan[i].offset;
        rc = kvz_safetensors_to_f32(st, kvz_safetensors_find(st, plan[i].name), dst,
                                    plan[i].numel, err);
        if (!rc)
            rc = check_finite(dst, plan[i].numel, file, plan[i].name, err);
    }
    free(plan);
    if (rc)
        kvz_surrogate_free(s);
    else
        *out = s;
    return rc;
}

int kvz_export_read_kvpress(const char *path, kvz_export_report *rep, kvz_surrogate **out,
                            kvz_error *err)
{
    kv_config c;
    int rc = read_config(path, &c, rep, err);
    if (rc)
        return rc;
    char *file = kvz_path_join(path, "model.safetensors");
    if (!file)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    kvz_safetensors *st = NULL;
    kvz_surrogate *s = NULL;
    if (!kvz_path_exists(file))
        rc = kvz_fail(err, KVZ_ENOTFOUND, "%s: missing (the export's weights)", file);
    if (!rc)
        rc = kvz_safetensors_open(file, &st, err);
    if (!rc)
        rc = read_tensors(st, file, &c, &s, err);
    if (!rc)
        kvz_export_report_fill(rep, KVZ_EXPORT_KVPRESS, c.dtype, s, kvz_safetensors_n_tensors(st));
    kvz_safetensors_close(st);
    free(file);
    if (!rc && out)
        *out = s;
    else
        kvz_surrogate_free(s);
    return rc;
}
