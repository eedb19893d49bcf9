/* test_export: surrogate exports against kvpress.
 *  - parity: the fixture surrogates (tests/fixtures/export/<kind>.json, made
 *    by tests/reference/make_export_fixtures.py with kvpress's KVzapModel)
 *    predict kvpress's outputs; our F32/BF16 exports equal the
 *    KVzapModel.save_pretrained directories tensor by tensor (bytes) and key
 *    by key; reloaded exports predict the same;
 *  - round trips: kvpress dir and GGUF in F32 (bit-exact), BF16, F16;
 *  - kvz_export_check on good exports and on corrupted variants;
 *  - atomic writes: unwritable destination leaves nothing, overwrite rules;
 *  - float32 -> bf16/f16 rounding.
 * KVZ_TEST_EXPORT_KEEP=<dir>: also leave the C-written exports there (to load
 * them with kvpress by hand: make_export_fixtures.py --check-export). */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/kvz_file.h"
#include "kvz_test.h"
#include "model/gguf.h"
#include "model/safetensors.h"
#include "trainer/export.h"

typedef struct fixture {
    json_t *root;
    kvz_surrogate *s;
    size_t n;
    float *x, *y_f32, *y_bf16w; /* [n, L, D], [n, L, Hkv], [n, L, Hkv] */
} fixture;

static char path_buf[64][512];
static int path_next;

/* tmpdir/name in a small rotating buffer. */
static const char *tmp_path(const char *name)
{
    char *p = path_buf[path_next++ % 64];
    snprintf(p, sizeof path_buf[0], "%s/%s", kvz_test_tmpdir(), name);
    return p;
}

static float *json_floats(const json_t *arr, size_t want)
{
    if (json_array_size(arr) != want)
        return NULL;
    float *v = malloc(want * sizeof *v);
    for (size_t i = 0; i < want; i++)
        v[i] = (float)json_real_value(json_array_get(arr, i));
    return v;
}

static float *layer_tensor(kvz_surrogate *s, size_t layer, const char *suffix)
{
    kvz_surrogate_layer l = kvz_surrogate_layer_at(s, layer);
    if (strcmp(suffix, "weight") == 0 || strcmp(suffix, "0.weight") == 0)
        return l.w1;
    if (strcmp(suffix, "bias") == 0 || strcmp(suffix, "0.bias") == 0)
        return l.b1;
    return strcmp(suffix, "2.weight") == 0 ? l.w2 : l.b2;
}

static int load_fixture(const char *kind, fixture *f)
{
    char rel[64];
    snprintf(rel, sizeof rel, "export/%s.json", kind);
    json_error_t je;
    memset(f, 0, sizeof *f);
    f->root = json_load_file(kvz_test_fixture(rel), 0, &je);
    KVZ_CHECK(f->root != NULL, "%s: %s", rel, je.text);
    if (!f->root)
        return -1;
    json_t *r = f->root;
    size_t L = (size_t)json_integer_value(json_object_get(r, "n_layers"));
    size_t D = (size_t)json_integer_value(json_object_get(r, "d_in"));
    size_t Dh = (size_t)json_integer_value(json_object_get(r, "d_hidden"));
    size_t H = (size_t)json_integer_value(json_object_get(r, "d_out"));
    f->n = (size_t)json_integer_value(json_object_get(r, "n"));
    kvz_error err;
    int kind_id = Dh ? KVZ_SURROGATE_KIND_MLP : KVZ_SURROGATE_KIND_LINEAR;
    KVZ_CHECK_OK(kvz_surrogate_create(kind_id, L, D, Dh, H, &f->s, &err), err);
    const char *name;
    json_t *t;
    json_object_foreach(json_object_get(r, "tensors"), name, t) {
        size_t layer;
        int used;
        sscanf(name, "layers.%zu.%n", &layer, &used);
        json_t *vals = json_object_get(t, "values");
        float *dst = layer_tensor(f->s, layer, name + used);
        for (size_t i = 0; i < json_array_size(vals); i++)
            dst[i] = (float)json_real_value(json_array_get(vals, i));
    }
    f->x = json_floats(json_object_get(r, "x"), f->n * L * D);
    f->y_f32 = json_floats(json_object_get(r, "y_f32"), f->n * L * H);
    f->y_bf16w = json_floats(json_object_get(r, "y_bf16w"), f->n * L * H);
    KVZ_CHECK(f->x && f->y_f32 && f->y_bf16w, "%s: x/y sizes", rel);
    return f->x && f->y_f32 && f->y_bf16w ? 0 : -1;
}

static void free_fixture(fixture *f)
{
    kvz_surrogate_free(f->s);
    free(f->x), free(f->y_f32), free(f->y_bf16w);
    json_decref(f->root);
}

/* y[n, L, Hkv] = every module on its slice x[:, i, :] (kvpress's forward). */
static void predict_all(const kvz_surrogate *s, const float *x, size_t n, float *y)
{
    float *xi = malloc(n * s->d_in * sizeof *xi), *yi = malloc(n * s->d_out * sizeof *yi);
    kvz_error err;
    for (size_t i = 0; i < s->n_layers; i++) {
        for (size_t r = 0; r < n; r++)
            memcpy(xi + r * s->d_in, x + (r * s->n_layers + i) * s->d_in, s->d_in * sizeof *xi);
        KVZ_CHECK_OK(kvz_surrogate_predict(s, i, xi, n, yi, NULL, &err), err);
        for (size_t r = 0; r < n; r++)
            memcpy(y + (r * s->n_layers + i) * s->d_out, yi + r * s->d_out, s->d_out * sizeof *yi);
    }
    free(xi), free(yi);
}

static void check_predicts(const char *what, const kvz_surrogate *s, const fixture *f,
                           const float *ref)
{
    size_t m = f->n * s->n_layers * s->d_out;
    float *y = malloc(m * sizeof *y);
    predict_all(s, f->x, f->n, y);
    kvz_test_allclose(what, y, ref, m, 1e-5, 0);
    free(y);
}

static int export_to(const kvz_surrogate *s, const char *path, kvz_export_format format,
                     kvz_export_dtype dtype, const kvz_export_info *info)
{
    kvz_export_options o = kvz_export_default_options();
    o.format = format, o.dtype = dtype, o.info = info;
    kvz_error err;
    int rc = kvz_export_write(s, path, &o, &err);
    KVZ_CHECK_OK(rc, err);
    return rc;
}

/* ---- comparison with kvpress's own save_pretrained output ---- */

static void compare_tensors(const char *ours, const char *ref)
{
    kvz_safetensors *a = NULL, *b = NULL;
    kvz_error err;
    KVZ_CHECK_OK(kvz_safetensors_open(ours, &a, &err), err);
    KVZ_CHECK_OK(kvz_safetensors_open(ref, &b, &err), err);
    if (!a || !b)
        goto out;
    const char *fa = kvz_safetensors_metadata(a, "format");
    KVZ_CHECK(fa && strcmp(fa, "pt") == 0, "%s: metadata format pt", ours);
    KVZ_CHECK(kvz_safetensors_n_tensors(a) == kvz_safetensors_n_tensors(b), "%s: %zu tensors vs %zu",
              ours, kvz_safetensors_n_tensors(a), kvz_safetensors_n_tensors(b));
    for (size_t i = 0; i < kvz_safetensors_n_tensors(b); i++) {
        const kvz_st_tensor *tb = kvz_safetensors_tensor(b, i);
        const kvz_st_tensor *ta = kvz_safetensors_find(a, tb->name);
        KVZ_CHECK(ta != NULL, "%s: missing '%s'", ours, tb->name);
        if (!ta)
            continue;
        int same = ta->dtype == tb->dtype && ta->n_dims == tb->n_dims && ta->nbytes == tb->nbytes &&
                   memcmp(ta->shape, tb->shape, sizeof ta->shape) == 0;
        KVZ_CHECK(same, "%s: '%s' dtype/shape differ from kvpress", ours, tb->name);
        KVZ_CHECK(same && memcmp(ta->data, tb->data, ta->nbytes) == 0,
                  "%s: '%s' bytes differ from kvpress's", ours, tb->name);
    }
out:
    kvz_safetensors_close(a);
    kvz_safetensors_close(b);
}

/* Every key kvpress writes (bar transformers_version) has the same value in
 * ours; ours adds only torch_dtype (for transformers 4.x) and kvzap. */
static void compare_configs(const char *ours, const char *ref)
{
    json_error_t je;
    json_t *a = json_load_file(ours, 0, &je), *b = json_load_file(ref, 0, &je);
    KVZ_CHECK(a && b, "config.json parse: %s", je.text);
    const char *key;
    json_t *v;
    json_object_foreach(b, key, v) {
        if (strcmp(key, "transformers_version") == 0)
            continue;
        KVZ_CHECK(json_equal(json_object_get(a, key), v), "%s: key \"%s\" differs from kvpress's",
                  ours, key);
    }
    json_object_foreach(a, key, v) {
        int known = json_object_get(b, key) || strcmp(key, "torch_dtype") == 0 ||
                    strcmp(key, "kvzap") == 0;
        KVZ_CHECK(known, "%s: unexpected key \"%s\"", ours, key);
    }
    KVZ_CHECK(json_equal(json_object_get(a, "torch_dtype"), json_object_get(a, "dtype")),
              "%s: torch_dtype == dtype", ours);
    json_decref(a), json_decref(b);
}

static void compare_with_kvpress(const char *dir, const char *kind, const char *suffix)
{
    char ref[96], rel[96];
    snprintf(ref, sizeof ref, "export/%s_%s/model.safetensors", kind, suffix);
    char *ours = kvz_path_join(dir, "model.safetensors");
    compare_tensors(ours, kvz_test_fixture(ref));
    free(ours);
    snprintf(rel, sizeof rel, "export/%s_%s/config.json", kind, suffix);
    ours = kvz_path_join(dir, "config.json");
    compare_configs(ours, kvz_test_fixture(rel));
    free(ours);
}

static void keep_copy(const kvz_surrogate *s, const char *name, kvz_export_dtype dtype)
{
    const char *keep = getenv("KVZ_TEST_EXPORT_KEEP");
    if (!keep || !*keep)
        return;
    char *p = kvz_path_join(keep, name);
    kvz_export_options o = kvz_export_default_options();
    o.dtype = dtype, o.overwrite = 1;
    double th[2] = {-4.0, -6.5};
    kvz_export_info info = {.source_model = "test", .target_arch = "llama", .thresholds = th,
                            .n_thresholds = 2, .metrics_json = "{\"r2\": 0.5}"};
    o.info = &info;
    kvz_error err;
    KVZ_CHECK_OK(kvz_export_write(s, p, &o, &err), err);
    free(p);
}

/* ---- parity and round trips ---- */

static void check_same_params(const char *what, const kvz_surrogate *a, const kvz_surrogate *b,
                              double rtol)
{
    int same = a && b && a->kind == b->kind && a->n_layers == b->n_layers &&
               a->d_in == b->d_in && a->d_hidden == b->d_hidden && a->d_out == b->d_out;
    KVZ_CHECK(same, "%s: sizes differ", what);
    if (!same)
        return;
    size_t n = a->n_layers * a->layer_stride;
    if (rtol == 0)
        KVZ_CHECK(memcmp(a->params, b->params, n * sizeof(float)) == 0, "%s: not bit-exact", what);
    else
        kvz_test_allclose(what, b->params, a->params, n, 1e-7, rtol);
}

static kvz_surrogate *load_ok(const char *path)
{
    kvz_surrogate *s = NULL;
    kvz_error err;
    KVZ_CHECK_OK(kvz_export_load(path, &s, &err), err);
    return s;
}

static void parity_kind(const char *kind)
{
    fixture f;
    if (load_fixture(kind, &f) != 0) {
        free_fixture(&f);
        return;
    }
    check_predicts("C predict vs kvpress (f32)", f.s, &f, f.y_f32);

    const char *d32 = tmp_path("parity_f32"), *dbf = tmp_path("parity_bf16");
    char r32[64], rbf[64];
    snprintf(r32, sizeof r32, "export/%s_f32", kind);
    snprintf(rbf, sizeof rbf, "export/%s_bf16", kind);
    if (export_to(f.s, d32, KVZ_EXPORT_KVPRESS, KVZ_EXPORT_F32, NULL) == 0)
        compare_with_kvpress(d32, kind, "f32");
    if (export_to(f.s, dbf, KVZ_EXPORT_KVPRESS, KVZ_EXPORT_BF16, NULL) == 0)
        compare_with_kvpress(dbf, kind, "bf16");

    kvz_surrogate *l32 = load_ok(d32), *lbf = load_ok(dbf);
    kvz_surrogate *k32 = load_ok(kvz_test_fixture(r32)), *kbf = load_ok(kvz_test_fixture(rbf));
    check_same_params("f32 export reload", f.s, l32, 0);
    check_same_params("kvpress f32 dir load", f.s, k32, 0);
    check_same_params("bf16 export vs kvpress bf16", kbf, lbf, 0);
    if (l32)
        check_predicts("f32 export reloaded vs kvpress", l32, &f, f.y_f32);
    if (lbf)
        check_predicts("bf16 export reloaded vs kvpress bf16 weights", lbf, &f, f.y_bf16w);
    keep_copy(f.s, kind[0] == 'm' ? "mlp_f32" : "linear_f32", KVZ_EXPORT_F32);
    keep_copy(f.s, kind[0] == 'm' ? "mlp_bf16" : "linear_bf16", KVZ_EXPORT_BF16);
    kvz_surrogate_free(l32), kvz_surrogate_free(lbf);
    kvz_surrogate_free(k32), kvz_surrogate_free(kbf);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", d32, dbf);
    KVZ_CHECK(system(cmd) == 0, "cleanup");
    free_fixture(&f);
}

static void round_trip(const kvz_surrogate *s, kvz_export_format format, kvz_export_dtype dtype,
                       const char *name)
{
    const char *p = tmp_path(name);
    double th[3] = {-3.5, -5.0, -7.25};
    kvz_export_info info = {.source_model = "HuggingFaceTB/SmolLM2-135M-Instruct",
                            .target_arch = "llama", .dataset = "unit test",
                            .metrics_json = "{\"r2_mean\": 0.7}", .thresholds = th,
                            .n_thresholds = 3};
    if (export_to(s, p, format, dtype, &info) != 0)
        return;
    kvz_export_report rep;
    kvz_error err;
    KVZ_CHECK_OK(kvz_export_check(p, &rep, &err), err);
    size_t per = s->kind == KVZ_SURROGATE_KIND_MLP ? 4 : 2;
    KVZ_CHECK(rep.format == format && rep.dtype == dtype && rep.kind == s->kind &&
                  rep.n_layers == s->n_layers && rep.d_in == s->d_in &&
                  rep.d_hidden == s->d_hidden && rep.d_out == s->d_out &&
                  rep.n_tensors == per * s->n_layers && rep.n_params == s->n_layers * s->layer_stride,
              "%s: report fields", name);
    KVZ_CHECK(strcmp(rep.target_arch, "llama") == 0 && rep.n_thresholds == 3 &&
                  rep.thresholds[1] == -5.0 && rep.thresholds[2] == -7.25,
              "%s: provenance (arch '%s', %zu thresholds)", name, rep.target_arch,
              rep.n_thresholds);
    kvz_surrogate *l = load_ok(p);
    double rtol = dtype == KVZ_EXPORT_F32 ? 0 : dtype == KVZ_EXPORT_F16 ? 1.0 / 2048 : 1.0 / 256;
    check_same_params(name, s, l, rtol);
    if (l && dtype != KVZ_EXPORT_F32) {
        size_t n = 7, D = s->d_in, H = s->d_out;
        float *x = malloc(n * D * sizeof *x), *ya = malloc(n * H * sizeof *ya);
        float *yb = malloc(n * H * sizeof *yb);
        for (size_t i = 0; i < n * D; i++)
            x[i] = (float)sin(0.37 * (double)i);
        KVZ_CHECK_OK(kvz_surrogate_predict(s, 1, x, n, ya, NULL, &err), err);
        KVZ_CHECK_OK(kvz_surrogate_predict(l, 1, x, n, yb, NULL, &err), err);
        kvz_test_allclose(name, yb, ya, n * H, 0.05, 0.02);
        free(x), free(ya), free(yb);
    }
    kvz_surrogate_free(l);
}

static kvz_surrogate *make_random(int kind, size_t L, size_t D, size_t Dh, size_t H)
{
    kvz_surrogate *s = NULL;
    kvz_error err;
    KVZ_CHECK_OK(kvz_surrogate_create(kind, L, D, Dh, H, &s, &err), err);
    for (size_t i = 0; s && i < L * s->layer_stride; i++)
        s->params[i] = (float)(0.3 * sin(1.7 * (double)i + 0.1) + 1e-3 * cos((double)i));
    return s;
}

static void round_trips(void)
{
    kvz_surrogate *mlp = make_random(KVZ_SURROGATE_KIND_MLP, 3, 40, 5, 3);
    kvz_surrogate *lin = make_random(KVZ_SURROGATE_KIND_LINEAR, 4, 33, 0, 2);
    const kvz_export_format fmts[2] = {KVZ_EXPORT_KVPRESS, KVZ_EXPORT_GGUF};
    const kvz_export_dtype dts[3] = {KVZ_EXPORT_F32, KVZ_EXPORT_BF16, KVZ_EXPORT_F16};
    for (int f = 0; f < 2; f++)
        for (int d = 0; d < 3; d++) {
            char name[64];
            snprintf(name, sizeof name, "rt_mlp_%d_%d%s", f, d, f ? ".gguf" : "");
            round_trip(mlp, fmts[f], dts[d], name);
            snprintf(name, sizeof name, "rt_lin_%d_%d%s", f, d, f ? ".gguf" : "");
            round_trip(lin, fmts[f], dts[d], name);
        }
    kvz_surrogate_free(mlp);
    kvz_surrogate_free(lin);
}

/* ---- corrupted exports ---- */

static int copy_file(const char *from, const char *to)
{
    char *data = NULL;
    size_t len = 0;
    kvz_error err;
    if (kvz_file_read_all(from, &data, &len, &err) != 0)
        return -1;
    FILE *fp = fopen(to, "wb");
    int ok = fp && fwrite(data, 1, len, fp) == len;
    if (fp)
        ok &= fclose(fp) == 0;
    free(data);
    return ok ? 0 : -1;
}

/* A directory with config.json from cfg_dir and model.safetensors from st_dir. */
static const char *mix(const char *name, const char *cfg_dir, const char *st_dir)
{
    const char *d = tmp_path(name);
    mkdir(d, 0777);
    char *a = kvz_path_join(cfg_dir, "config.json"), *b = kvz_path_join(d, "config.json");
    KVZ_CHECK(copy_file(a, b) == 0, "copy %s", a);
    free(a), free(b);
    a = kvz_path_join(st_dir, "model.safetensors"), b = kvz_path_join(d, "model.safetensors");
    KVZ_CHECK(copy_file(a, b) == 0, "copy %s", a);
    free(a), free(b);
    return d;
}

static void expect_bad(const char *path, int want_rc, const char *needle)
{
    kvz_error err;
    kvz_error_clear(&err);
    int rc = kvz_export_check(path, NULL, &err);
    KVZ_CHECK(rc == want_rc && strstr(err.msg, needle) != NULL,
              "check(%s): rc %d (want %d), message '%s' lacks '%s'", path, rc, want_rc, err.msg,
              needle);
    kvz_surrogate *s = NULL;
    KVZ_CHECK(kvz_export_load(path, &s, &err) == want_rc && !s, "load(%s) also fails", path);
}

/* Rewrites config.json of dir with key set to the JSON value text (or removed when NULL). */
static void edit_config(const char *dir, const char *key, const char *value_json)
{
    char *p = kvz_path_join(dir, "config.json");
    json_error_t je;
    json_t *cfg = json_load_file(p, 0, &je);
    if (value_json)
        json_object_set_new(cfg, key, json_loads(value_json, JSON_DECODE_ANY, &je));
    else
        json_object_del(cfg, key);
    KVZ_CHECK(json_dump_file(cfg, p, JSON_INDENT(1)) == 0, "rewrite %s", p);
    json_decref(cfg);
    free(p);
}

static void patch_bytes(const char *file, long offset, const void *bytes, size_t n)
{
    FILE *fp = fopen(file, "r+b");
    KVZ_CHECK(fp != NULL, "open %s", file);
    if (!fp)
        return;
    fseek(fp, offset, offset < 0 ? SEEK_END : SEEK_SET);
    KVZ_CHECK(fwrite(bytes, 1, n, fp) == n, "patch %s", file);
    fclose(fp);
}

static void truncate_file(const char *file, long keep)
{
    KVZ_CHECK(truncate(file, keep) == 0, "truncate %s", file);
}

static void corrupt_kvpress(void)
{
    kvz_surrogate *s3 = make_random(KVZ_SURROGATE_KIND_MLP, 3, 32, 4, 2);
    kvz_surrogate *s2 = make_random(KVZ_SURROGATE_KIND_MLP, 2, 32, 4, 2);
    kvz_surrogate *h5 = make_random(KVZ_SURROGATE_KIND_MLP, 3, 32, 5, 2);
    const char *g3 = tmp_path("good3"), *g2 = tmp_path("good2"), *gh5 = tmp_path("good_h5");
    const char *gbf = tmp_path("good3_bf16");
    export_to(s3, g3, KVZ_EXPORT_KVPRESS, KVZ_EXPORT_F32, NULL);
    export_to(s2, g2, KVZ_EXPORT_KVPRESS, KVZ_EXPORT_F32, NULL);
    export_to(h5, gh5, KVZ_EXPORT_KVPRESS, KVZ_EXPORT_F32, NULL);
    export_to(s3, gbf, KVZ_EXPORT_KVPRESS, KVZ_EXPORT_BF16, NULL);
    kvz_error err;
    KVZ_CHECK_OK(kvz_export_check(g3, NULL, &err), err);

    expect_bad(mix("missing_tensor", g3, g2), KVZ_EFORMAT, "missing tensor 'layers.2.0.weight'");
    expect_bad(mix("extra_tensor", g2, g3), KVZ_EFORMAT, "unexpected tensor 'layers.2.");
    expect_bad(mix("wrong_shape", g3, gh5), KVZ_EFORMAT,
               "'layers.0.0.weight' has shape [5, 32], expected [4, 32]");
    expect_bad(mix("wrong_dtype", g3, gbf), KVZ_EFORMAT, "is BF16 but config.json says float32");

    static const struct { const char *name, *key, *value, *needle; } cfg_cases[] = {
        {"cfg_model_type", "model_type", "\"llama\"", "\"model_type\" must be \"kvzap\""},
        {"cfg_no_input", "input_dim", NULL, "missing key \"input_dim\""},
        {"cfg_neg_output", "output_dim", "-2", "\"output_dim\" must be a positive integer"},
        {"cfg_hidden_str", "hidden_dim", "\"4\"", "\"hidden_dim\" must be a positive integer or null"},
        {"cfg_hidden_null", "hidden_dim", "null", "missing tensor 'layers.0.weight'"},
        {"cfg_n_modules", "n_modules", "4", "missing tensor 'layers.3.0.weight'"},
        {"cfg_dtype", "dtype", "\"int8\"", "\"dtype\" is 'int8' but \"torch_dtype\" is 'float32'"},
        {"cfg_arch", "architectures", "[\"LlamaForCausalLM\"]", "must list \"KVzapModel\""},
    };
    for (size_t i = 0; i < sizeof cfg_cases / sizeof cfg_cases[0]; i++) {
        const char *d = mix(cfg_cases[i].name, g3, g3);
        edit_config(d, cfg_cases[i].key, cfg_cases[i].value);
        expect_bad(d, KVZ_EFORMAT, cfg_cases[i].needle);
    }
    const char *d = mix("cfg_dtype_only", g3, g3);
    edit_config(d, "torch_dtype", NULL);
    edit_config(d, "dtype", "\"float8\"");
    expect_bad(d, KVZ_EFORMAT, "dtype 'float8' is not one of");
    d = mix("cfg_bad_json", g3, g3);
    char *p = kvz_path_join(d, "config.json");
    truncate_file(p, 20);
    expect_bad(d, KVZ_EFORMAT, "config.json: invalid JSON");
    free(p);

    d = mix("truncated", g3, g3);
    p = kvz_path_join(d, "model.safetensors");
    truncate_file(p, 300);
    expect_bad(d, KVZ_EFORMAT, "model.safetensors");
    free(p);

    d = mix("nan_value", g3, g3);
    p = kvz_path_join(d, "model.safetensors");
    const unsigned char nan_bits[4] = {0x00, 0x00, 0xc0, 0x7f};
    patch_bytes(p, -4, nan_bits, 4);
    expect_bad(d, KVZ_EFORMAT, "is not finite");
    free(p);

    d = mix("no_weights", g3, g3);
    p = kvz_path_join(d, "model.safetensors");
    remove(p);
    expect_bad(d, KVZ_ENOTFOUND, "model.safetensors: missing");
    free(p);
    expect_bad(tmp_path("does_not_exist"), KVZ_ENOTFOUND, "no such file or directory");
    kvz_surrogate_free(s3), kvz_surrogate_free(s2), kvz_surrogate_free(h5);
}


static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* Copies good.gguf to name and overwrites the u32 found at (needle + skip). */
static void patch_u32(const char *good, const char *data, size_t len, const char *name,
                      const char *needle, size_t needle_len, size_t skip, uint32_t value,
                      const char *expect)
{
    const char *at = find_bytes(data, len, needle, needle_len);
    KVZ_CHECK(at != NULL, "%s: needle found", name);
    if (!at)
        return;
    const char *bad = tmp_path(name);
    copy_file(good, bad);
    unsigned char le[4] = {value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff, value >> 24};
    patch_bytes(bad, (long)(at - data + (long)skip), le, 4);
    expect_bad(bad, KVZ_EFORMAT, expect);
}

static void patch_gguf_cases(const char *g, const char *data, size_t len)
{
    /* key string, then the u32 type (4), then the u32 value */
    patch_u32(g, data, len, "missing.gguf", "kvzap.n_modules", 15, 19, 3,
              "missing tensor 'layers.2.0.weight'");
    patch_u32(g, data, len, "extra.gguf", "kvzap.n_modules", 15, 19, 1,
              "unexpected tensor 'layers.1.");
    patch_u32(g, data, len, "hidden.gguf", "kvzap.hidden_dim", 16, 20, 0,
              "kvzap.hidden_dim 0 does not fit kvzap.kind mlp");
    patch_u32(g, data, len, "shape.gguf", "kvzap.input_dim", 15, 19, 25,
              "tensor 'layers.0.0.weight' has shape [3, 24], expected [3, 25]");
    /* tensor info: name, u32 n_dims, u64 ne[1], u32 type */
    patch_u32(g, data, len, "dtype.gguf", "\x0f\0\0\0\0\0\0\0layers.0.0.bias", 23, 23 + 12,
              KVZ_GGML_F16, "tensor 'layers.0.0.bias' is F16, expected F32 like the others");
}

static void corrupt_gguf(void)
{
    kvz_surrogate *s = make_random(KVZ_SURROGATE_KIND_MLP, 2, 24, 3, 2);
    const char *g = tmp_path("good.gguf");
    export_to(s, g, KVZ_EXPORT_GGUF, KVZ_EXPORT_F32, NULL);
    kvz_error err;
    KVZ_CHECK_OK(kvz_export_check(g, NULL, &err), err);
    const char *t = tmp_path("trunc.gguf");
    copy_file(g, t);
    truncate_file(t, 200);
    expect_bad(t, KVZ_EFORMAT, "trunc.gguf");
    const char *n = tmp_path("nan.gguf");
    copy_file(g, n);
    const unsigned char nan_bits[4] = {0x00, 0x00, 0xc0, 0x7f};
    patch_bytes(n, -4, nan_bits, 4);
    expect_bad(n, KVZ_EFORMAT, "tensor 'layers.1.2.bias' element 1 is not finite");

    /* general.architecture "kvzap" -> "kvzaq": patch the first occurrence. */
    char *data = NULL;
    size_t len = 0;
    KVZ_CHECK_OK(kvz_file_read_all(g, &data, &len, &err), err);
    const char *arch = data ? find_bytes(data, len, "\x05\0\0\0\0\0\0\0kvzap", 13) : NULL;
    KVZ_CHECK(arch != NULL, "architecture value found");
    if (arch) {
        const char *bad = tmp_path("arch.gguf");
        copy_file(g, bad);
        patch_bytes(bad, (long)(arch - data) + 12, "q", 1);
        expect_bad(bad, KVZ_EFORMAT, "general.architecture must be \"kvzap\"");
    }
    patch_gguf_cases(g, data, len);
    free(data);
    kvz_surrogate_free(s);
}

/* ---- atomic writes, overwrite, refusals ---- */

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

static void atomic_writes(void)
{
    kvz_surrogate *a = make_random(KVZ_SURROGATE_KIND_LINEAR, 2, 8, 0, 2);
    kvz_surrogate *b = make_random(KVZ_SURROGATE_KIND_MLP, 2, 8, 2, 2);
    const char *area = tmp_path("atomic");
    mkdir(area, 0777);
    char blocker[300], dest[600];
    snprintf(blocker, sizeof blocker, "%s/not_a_dir", area);
    FILE *fp = fopen(blocker, "w");
    if (fp)
        fclose(fp);
    kvz_error err;
    kvz_export_options o = kvz_export_default_options();
    for (int f = 0; f < 2; f++) {
        o.format = f ? KVZ_EXPORT_GGUF : KVZ_EXPORT_KVPRESS;
        snprintf(dest, sizeof dest, "%s/sub/out", blocker);
        int rc = kvz_export_write(a, dest, &o, &err);
        KVZ_CHECK(rc == KVZ_EIO && strstr(err.msg, dest), "unwritable: rc %d '%s'", rc, err.msg);
        KVZ_CHECK(count_entries(area) == 1, "nothing left behind (%zu entries)", count_entries(area));
    }

    for (int f = 0; f < 2; f++) {
        o.format = f ? KVZ_EXPORT_GGUF : KVZ_EXPORT_KVPRESS;
        snprintf(dest, sizeof dest, "%s/exp%s", area, f ? ".gguf" : "");
        o.overwrite = 0;
        KVZ_CHECK_OK(kvz_export_write(a, dest, &o, &err), err);
        int rc = kvz_export_write(b, dest, &o, &err);
        KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "already exists"), "no overwrite: %s",
                  err.msg);
        kvz_surrogate *l = load_ok(dest);
        KVZ_CHECK(l && l->kind == KVZ_SURROGATE_KIND_LINEAR, "old export kept");
        kvz_surrogate_free(l);
        o.overwrite = 1;
        KVZ_CHECK_OK(kvz_export_write(b, dest, &o, &err), err);
        l = load_ok(dest);
        KVZ_CHECK(l && l->kind == KVZ_SURROGATE_KIND_MLP, "replaced by the new export");
        kvz_surrogate_free(l);
    }
    KVZ_CHECK(count_entries(area) == 3, "no temp/old leftovers (%zu entries)", count_entries(area));

    /* a trailing slash names the same directory; members name their export */
    o.format = KVZ_EXPORT_KVPRESS;
    snprintf(dest, sizeof dest, "%s/slash/", area);
    KVZ_CHECK_OK(kvz_export_write(a, dest, &o, &err), err);
    snprintf(dest, sizeof dest, "%s/slash/config.json", area);
    KVZ_CHECK_OK(kvz_export_check(dest, NULL, &err), err);
    snprintf(dest, sizeof dest, "%s/slash/model.safetensors", area);
    KVZ_CHECK_OK(kvz_export_check(dest, NULL, &err), err);

    /* overwrite refuses a directory that is not an export */
    snprintf(dest, sizeof dest, "%s/userdir", area);
    mkdir(dest, 0777);
    char keep[700];
    snprintf(keep, sizeof keep, "%s/notes.txt", dest);
    fp = fopen(keep, "w");
    if (fp)
        fclose(fp);
    o.format = KVZ_EXPORT_KVPRESS;
    int rc = kvz_export_write(b, dest, &o, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "not a kvzap export") && kvz_path_exists(keep),
              "foreign dir kept: %s", err.msg);
    /* overwrite of an empty directory is fine */
    snprintf(dest, sizeof dest, "%s/emptydir", area);
    mkdir(dest, 0777);
    KVZ_CHECK_OK(kvz_export_write(b, dest, &o, &err), err);

    /* non-finite and out-of-range parameters are refused before anything is written */
    b->params[3] = NAN;
    snprintf(dest, sizeof dest, "%s/nan_export", area);
    rc = kvz_export_write(b, dest, &o, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "layers.0.0.weight' element 3 is not finite") &&
                  !kvz_path_exists(dest),
              "NaN refused: %s", err.msg);
    b->params[3] = 1e6f;
    o.dtype = KVZ_EXPORT_F16;
    rc = kvz_export_write(b, dest, &o, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "does not fit float16"), "f16 range: %s", err.msg);
    o.dtype = KVZ_EXPORT_BF16;
    KVZ_CHECK_OK(kvz_export_write(b, dest, &o, &err), err);
    kvz_surrogate_free(a), kvz_surrogate_free(b);
}

/* ---- conversions and names ---- */

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void conversions(void)
{
    KVZ_CHECK(kvz_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    KVZ_CHECK(kvz_f32_to_bf16(from_bits(0x3f808000u)) == 0x3f80, "bf16 tie to even (down)");
    KVZ_CHECK(kvz_f32_to_bf16(from_bits(0x3f818000u)) == 0x3f82, "bf16 tie to even (up)");
    KVZ_CHECK(kvz_f32_to_bf16(from_bits(0x3f808001u)) == 0x3f81, "bf16 above half");
    KVZ_CHECK((kvz_f32_to_bf16(NAN) & 0x7fff) > 0x7f80, "bf16 NaN stays NaN");
    KVZ_CHECK(kvz_f32_to_bf16(from_bits(0x7f800001u)) != 0x7f80, "bf16 signalling NaN stays NaN");
    KVZ_CHECK(kvz_f32_to_bf16(-INFINITY) == 0xff80, "bf16 -inf");
    KVZ_CHECK(kvz_f32_to_f16(1.0f) == 0x3c00 && kvz_f32_to_f16(-2.0f) == 0xc000, "f16 1, -2");
    KVZ_CHECK(kvz_f32_to_f16(65504.0f) == 0x7bff, "f16 max");
    KVZ_CHECK(kvz_f32_to_f16(65519.0f) == 0x7bff && kvz_f32_to_f16(65520.0f) == 0x7c00,
              "f16 overflow boundary");
    KVZ_CHECK(kvz_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001, "f16 smallest subnormal");
    KVZ_CHECK(kvz_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000, "f16 half-subnormal ties to 0");
    KVZ_CHECK(kvz_f32_to_f16(ldexpf(1.5f, -25)) == 0x0001, "f16 above half rounds up");
    KVZ_CHECK(kvz_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002, "f16 1.5 ulp ties to 2");
    KVZ_CHECK(kvz_f32_to_f16(ldexpf(1.0f, -14)) == 0x0400, "f16 smallest normal");
    KVZ_CHECK(kvz_f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400, "f16 subnormal rounds to normal");
    KVZ_CHECK(kvz_f32_to_f16(-0.0f) == 0x8000, "f16 -0");
    KVZ_CHECK(kvz_f32_to_f16(1.0f / 3.0f) == 0x3555, "f16 1/3");
    KVZ_CHECK(kvz_f32_to_f16(from_bits(0x3f801000u)) == 0x3c00, "f16 tie to even (down)");
    KVZ_CHECK(kvz_f32_to_f16(from_bits(0x3f803000u)) == 0x3c02, "f16 tie to even (up)");
    KVZ_CHECK((kvz_f32_to_f16(NAN) & 0x7fff) > 0x7c00, "f16 NaN");
    KVZ_CHECK(kvz_f32_to_f16(INFINITY) == 0x7c00, "f16 inf");

    kvz_export_dtype d;
    kvz_export_format f;
    kvz_error err;
    KVZ_CHECK(kvz_export_dtype_parse("BF16", &d, &err) == 0 && d == KVZ_EXPORT_BF16, "bf16");
    KVZ_CHECK(kvz_export_dtype_parse("float16", &d, &err) == 0 && d == KVZ_EXPORT_F16, "f16");
    KVZ_CHECK(kvz_export_dtype_parse("fp32", &d, &err) == 0 && d == KVZ_EXPORT_F32, "f32");
    KVZ_CHECK(kvz_export_dtype_parse("int8", &d, &err) == KVZ_EINVAL && strstr(err.msg, "int8"),
              "bad dtype: %s", err.msg);
    KVZ_CHECK(kvz_export_format_parse("gguf", &f, &err) == 0 && f == KVZ_EXPORT_GGUF, "gguf");
    KVZ_CHECK(kvz_export_format_parse("kvpress", &f, &err) == 0 && f == KVZ_EXPORT_KVPRESS, "kv");
    KVZ_CHECK(kvz_export_format_parse("onnx", &f, &err) == KVZ_EINVAL, "bad format");
    KVZ_CHECK(strcmp(kvz_export_dtype_name(KVZ_EXPORT_BF16), "bfloat16") == 0, "dtype name");
}

int main(void)
{
    conversions();
    parity_kind("linear");
    parity_kind("mlp");
    round_trips();
    corrupt_kvpress();
    corrupt_gguf();
    atomic_writes();
    return kvz_test_done();
}
