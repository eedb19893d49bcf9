/* test_gpu_train_e2e: the trainer on the cuda backend end to end against
 * the cpu trainer (skipped, exit 77, without CUDA or a device). Small sizes
 * throughout (the CUDA emulator runs these too):
 *   - the batch gather (kvz_op_take_rows) from device rows in fp16 and fp32
 *     storage, by index and by range (D=37, awkward): exact for
 *     fp16-representable values, guard floats around the outputs untouched,
 *     a range past the rows refused;
 *   - one epoch of kvz_mlp_train_on(cuda, float32) vs kvz_mlp_train with the
 *     same options: every weight within atol 1e-6 + rtol 1e-4, same per-step
 *     losses (1e-5 relative), no NaN;
 *   - ridge from the device rows (kvz_ridge_fit_rows on cuda: float64 sums
 *     there; fp32 rows, and fp16 rows widened on the device) vs the host
 *     accumulator's solve: 1e-6 relative;
 *   - tf32 and bfloat16 GEMMs: final validation MSE within 1% of float32 on
 *     a learnable target whose noise floor dominates;
 *   - kvz_train_run (kvzap train) with model.device=cuda (explicit: auto
 *     never picks the emulator) vs cpu on a synthetic fp16 store without
 *     ridge sums (so the ridge is fitted from the device rows): per layer
 *     linear R^2 within 1e-6, MLP MSE within 1e-3 relative, and
 *     metrics.json's mlp.device says cuda. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "kvz_test.h"
#include "kvz_test_gpu.h"
#include "ops/backend.h"
#include "train_synth_store.h"
#include "trainer/mlp.h"
#include "trainer/ridge.h"
#include "trainer/train.h"

static kvz_backend *be; /* kvz_test_cuda() */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double urand(void)
{
    return synth_urand(&rng_state);
}

/* x [n, D] uniform in [-1, 1]; y [n, H] = smooth function + noise of std ~noise. */
static void make_set(float *x, float *y, size_t n, size_t D, size_t H, double noise)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < D; k++)
            x[i * D + k] = (float)(2.0 * urand() - 1.0);
        for (size_t h = 0; h < H; h++)
            y[i * H + h] = synth_target(0, h, x + i * D, D, noise * 3.46 * (urand() - 0.5));
    }
}

static int all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* ---------- device rows and gather ---------- */

/* n values of dtype (F32 or F16, from the floats v) on the device. */
static kvz_buf device_rows(const float *v, size_t n, int fp16, kvz_error *err)
{
    kvz_buf b = {0};
    size_t es = fp16 ? 2 : 4;
    uint16_t *h = fp16 ? malloc(n * sizeof *h) : NULL;
    for (size_t i = 0; h && i < n; i++)
        h[i] = kvz_f32_to_f16(v[i]);
    int rc = fp16 && !h ? kvz_fail(err, KVZ_ENOMEM, "out of memory")
                        : kvz_backend_alloc(be, fp16 ? KVZ_F16 : KVZ_F32, n, "test rows", &b, err);
    rc = rc ? rc : kvz_backend_upload(be, b.data, fp16 ? (const void *)h : (const void *)v,
                                      n * es, err);
    KVZ_CHECK_OK(rc, *err);
    free(h);
    return b;
}

static void check_gather(int fp16)
{
    enum { N = 50, D = 37, H = 3, K = 13 };
    kvz_error err = {0};
    static float x[N * D], y[N * H], got[K * D + K * H];
    for (size_t i = 0; i < N * D; i++)
        x[i] = (float)((int)(i * 7919 % 257) - 128) / 64.0f; /* exact in fp16 */
    for (size_t i = 0; i < N * H; i++)
        y[i] = -6.0f + (float)i / 3.0f;
    kvz_buf dx = device_rows(x, N * D, fp16, &err), dy = device_rows(y, N * H, 0, &err);
    int64_t idx[K];
    for (size_t k = 0; k < K; k++)
        idx[k] = (int64_t)((k * 17 + 5) % N);
    kvz_buf didx = {0};
    KVZ_CHECK_OK(kvz_backend_alloc(be, KVZ_I64, K, "test indices", &didx, &err), err);
    KVZ_CHECK_OK(kvz_backend_upload(be, didx.data, idx, sizeof idx, &err), err);
    kvz_guarded out; /* x rows then y rows, NaN guards around both */
    kvz_guarded_create(&out, NULL, K * D + K * H);
    if (!dx.data || !dy.data || !didx.data || !out.data)
        goto done;
    float *gx = out.data, *gy = out.data + K * D;
    KVZ_CHECK_OK(kvz_op_take_rows(be, dx, D, didx.data, 0, K, gx, &err), err);
    KVZ_CHECK_OK(kvz_op_take_rows(be, dy, H, didx.data, 0, K, gy, &err), err);
    kvz_guarded_fetch(&out, got, "gather by index");
    int ok = 1;
    for (size_t k = 0; k < K; k++) {
        ok &= memcmp(got + k * D, x + idx[k] * D, D * sizeof(float)) == 0;
        ok &= memcmp(got + K * D + k * H, y + idx[k] * H, H * sizeof(float)) == 0;
    }
    KVZ_CHECK(ok, "gather by index (fp16 %d) differs", fp16);
    KVZ_CHECK_OK(kvz_op_take_rows(be, dx, D, NULL, 40, 10, gx, &err), err);
    KVZ_CHECK_OK(kvz_op_take_rows(be, dy, H, NULL, 40, 10, gy, &err), err);
    kvz_guarded_fetch(&out, got, "gather by range");
    KVZ_CHECK(memcmp(got, x + 40 * D, 10 * D * sizeof(float)) == 0 &&
                  memcmp(got + K * D, y + 40 * H, 10 * H * sizeof(float)) == 0,
              "gather by range (fp16 %d) differs", fp16);
    KVZ_CHECK(kvz_op_take_rows(be, dx, D, NULL, 45, 10, gx, &err) == KVZ_EINVAL,
              "range past the rows (fp16 %d) accepted", fp16);
done:
    kvz_guarded_free(&out);
    kvz_backend_free(be, &didx);
    kvz_backend_free(be, &dx);
    kvz_backend_free(be, &dy);
}

/* ---------- one epoch: cuda fp32 vs cpu ---------- */

static kvz_mlp_options options(size_t epochs, size_t batch)
{
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = epochs;
    o.batch_size = batch;
    o.seed = 42;
    o.init_b2_mean = 1;
    return o;
}

typedef struct params {
    float *flat;
    kvz_surrogate_layer view;
} params;

static params params_new(kvz_mlp_shape s)
{
    params p = {calloc(kvz_mlp_n_params(s), sizeof(float)), {0}};
    p.view = kvz_mlp_view(s, p.flat);
    return p;
}

/* kvz_mlp_train_on(cuda) from host rows x [n, D], y [n, H] (uploaded). */
static int train_cuda(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                      const kvz_mlp_options *o, kvz_gemm_precision prec, kvz_surrogate_layer p,
                      kvz_mlp_log *log, kvz_error *err)
{
    kvz_buf dx = device_rows(x, n * s.d_in, 0, err), dy = device_rows(y, n * s.d_out, 0, err);
    int rc = dx.data && dy.data ? kvz_mlp_train_on(be, s, dx, dy, y, n, o, prec, p, log, err)
                                : KVZ_ENOMEM;
    kvz_backend_free(be, &dx);
    kvz_backend_free(be, &dy);
    return rc;
}

static void test_epoch_vs_cpu(void)
{
    enum { N = 203, D = 19, DH = 7, H = 3 };
    kvz_mlp_shape s = {D, DH, H};
    static float x[N * D], y[N * H];
    make_set(x, y, N, D, H, 0.1);
    kvz_mlp_options o = options(1, 32);
    params cpu = params_new(s), gpu = params_new(s);
    kvz_mlp_log lc = {0}, lg = {0};
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_mlp_train(s, x, y, N, &o, cpu.view, &lc, &err), err);
    KVZ_CHECK_OK(train_cuda(s, x, y, N, &o, KVZ_GEMM_FP32, gpu.view, &lg, &err), err);
    size_t np = kvz_mlp_n_params(s);
    KVZ_CHECK(all_finite(gpu.flat, np), "cuda weights not finite");
    kvz_test_allclose("one epoch: cuda fp32 weights vs cpu", gpu.flat, cpu.flat, np, 1e-6, 1e-4);
    double worst = 0;
    for (size_t i = 0; i < np; i++) {
        double d = fabs((double)gpu.flat[i] - cpu.flat[i]) / (1e-6 + 1e-4 * fabs(cpu.flat[i]));
        worst = d > worst ? d : worst;
    }
    printf("one epoch: worst weight |diff| / (1e-6 + 1e-4 |ref|) = %.3g\n", worst);
    KVZ_CHECK(lg.n_steps == lc.n_steps && lg.n_steps == (N - 11 + 31) / 32, "steps %zu vs %zu",
              lg.n_steps, lc.n_steps);
    for (size_t i = 0; i < lg.n_steps && i < lc.n_steps; i++)
        KVZ_CHECK(fabs(lg.step_loss[i] - lc.step_loss[i]) <= 1e-5 * fabs(lc.step_loss[i]),
                  "step %zu loss %.9g vs cpu %.9g", i, lg.step_loss[i], lc.step_loss[i]);
    if (lg.val_loss && lc.val_loss)
        KVZ_CHECK(fabs(lg.val_loss[0] - lc.val_loss[0]) <= 1e-5 * fabs(lc.val_loss[0]),
                  "val loss %.9g vs cpu %.9g", lg.val_loss[0], lc.val_loss[0]);
    kvz_mlp_log_free(&lc);
    kvz_mlp_log_free(&lg);
    free(cpu.flat);
    free(gpu.flat);
}

/* ---------- ridge ---------- */

/* kvz_ridge_fit_rows on cuda from fp32 or fp16 device rows vs the host
 * accumulator's solve on the same (for fp16: widened) rows. */
static void ridge_case(int fp16)
{
    enum { N = 150, D = 21, H = 2 };
    static float x[N * D], y[N * H], wc[H * D], bc[H], wg[H * D], bg[H];
    make_set(x, y, N, D, H, 0.1);
    for (size_t i = 0; fp16 && i < N * D; i++)
        x[i] = kvz_f16_widen(kvz_f32_to_f16(x[i])); /* what the device rows hold */
    kvz_error err = {0};
    kvz_ridge_acc *acc = NULL;
    KVZ_CHECK_OK(kvz_ridge_acc_create(D, H, &acc, &err), err);
    KVZ_CHECK_OK(kvz_ridge_acc_add(acc, x, y, N, &err), err);
    kvz_ridge_stats st = kvz_ridge_acc_stats(acc);
    KVZ_CHECK_OK(kvz_ridge_solve(&st, 1.0, wc, bc, &err), err);
    kvz_buf dx = device_rows(x, N * D, fp16, &err), dy = device_rows(y, N * H, 0, &err);
    KVZ_CHECK_OK(kvz_ridge_fit_rows(be, dx, dy, N, D, H, 1.0, wg, bg, &err), err);
    char what[96];
    snprintf(what, sizeof what, "ridge weights: cuda sums (%s rows) vs cpu",
             fp16 ? "float16" : "float32");
    kvz_test_allclose(what, wg, wc, H * D, 1e-7, 1e-6);
    snprintf(what, sizeof what, "ridge intercepts: cuda sums (%s rows) vs cpu",
             fp16 ? "float16" : "float32");
    kvz_test_allclose(what, bg, bc, H, 1e-7, 1e-6);
    kvz_backend_free(be, &dx);
    kvz_backend_free(be, &dy);
    kvz_ridge_acc_free(acc);
}

static void test_ridge(void)
{
    ridge_case(0);
    ridge_case(1);
}

/* ---------- precision modes ---------- */

static double final_val(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                        kvz_gemm_precision p)
{
    kvz_mlp_options o = options(4, 64);
    params w = params_new(s);
    kvz_mlp_log log = {0};
    kvz_error err = {0};
    KVZ_CHECK_OK(train_cuda(s, x, y, n, &o, p, w.view, &log, &err), err);
    double v = log.n_epochs ? log.val_loss[log.n_epochs - 1] : NAN;
    KVZ_CHECK(all_finite(w.flat, kvz_mlp_n_params(s)), "%s weights not finite",
              kvz_gemm_precision_name(p));
    kvz_mlp_log_free(&log);
    free(w.flat);
    return v;
}

static void test_precisions(void)
{
    enum { N = 1024, D = 24, DH = 16, H = 2 };
    kvz_mlp_shape s = {D, DH, H};
    static float x[N * D], y[N * H];
    make_set(x, y, N, D, H, 0.5); /* noise floor 0.25 dominates the val MSE */
    double f32 = final_val(s, x, y, N, KVZ_GEMM_FP32);
    double tf32 = final_val(s, x, y, N, KVZ_GEMM_TF32);
    double bf16 = final_val(s, x, y, N, KVZ_GEMM_BF16);
    printf("final val MSE: float32 %.6f  tf32 %.6f  bfloat16 %.6f\n", f32, tf32, bf16);
    KVZ_CHECK(isfinite(f32) && f32 < 0.5, "float32 did not learn: val MSE %g", f32);
    KVZ_CHECK(fabs(tf32 - f32) <= 0.01 * f32, "tf32 val MSE %g vs float32 %g", tf32, f32);
    KVZ_CHECK(fabs(bf16 - f32) <= 0.01 * f32, "bfloat16 val MSE %g vs float32 %g", bf16, f32);
}

/* ---------- kvz_train_run: cuda vs cpu ---------- */

static int run_train(const char *dataset, const char *out, const char *device)
{
    char s_data[512], s_out[512], s_dev[64];
    snprintf(s_data, sizeof s_data, "train.dataset=%s", dataset);
    snprintf(s_out, sizeof s_out, "train.output=%s", out);
    snprintf(s_dev, sizeof s_dev, "model.device=%s", device);
    const char *sets[] = {s_data, s_out, s_dev, "train.epochs=3", "train.mlp_hidden=8",
                          "train.batch_size=32", "train.mlp_init_output_bias=true",
                          "model.threads=1"};
    kvz_run_config cfg;
    kvz_error err = {0};
    int rc = kvz_config_load_full(NULL, sets, sizeof sets / sizeof *sets, &cfg, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return rc;
    rc = kvz_train_run(&cfg, NULL, NULL, NULL, &err);
    KVZ_CHECK_OK(rc, err);
    kvz_config_free(&cfg);
    return rc;
}

static json_t *layers_of(const char *out)
{
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.json", out);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    KVZ_CHECK(root != NULL, "%s: %s", path, je.text);
    return root;
}

static double num(json_t *layer, const char *model, const char *key)
{
    return json_number_value(json_object_get(json_object_get(layer, model), key));
}

static void compare_runs(json_t *cpu, json_t *gpu)
{
    json_t *lc = json_object_get(cpu, "layers"), *lg = json_object_get(gpu, "layers");
    KVZ_CHECK(json_array_size(lc) == 2 && json_array_size(lg) == 2, "2 layers each");
    for (size_t i = 0; i < json_array_size(lc) && i < json_array_size(lg); i++) {
        json_t *c = json_array_get(lc, i), *g = json_array_get(lg, i);
        double rc = num(c, "linear", "r2"), rg = num(g, "linear", "r2");
        KVZ_CHECK(fabs(rc - rg) <= 1e-6 * fabs(rc) + 1e-9, "layer %zu linear R2 %.9g vs %.9g", i,
                  rg, rc);
        double mc = num(c, "mlp", "mse"), mg = num(g, "mlp", "mse");
        KVZ_CHECK(isfinite(mg) && fabs(mc - mg) <= 1e-3 * fabs(mc), "layer %zu mlp MSE %.9g vs %.9g",
                  i, mg, mc);
        const char *dev = json_string_value(json_object_get(json_object_get(g, "mlp"), "device"));
        KVZ_CHECK(dev && !strcmp(dev, "cuda"), "layer %zu mlp.device %s", i, dev ? dev : "(none)");
    }
}

static void test_train_run(void)
{
    const char *dir = kvz_test_tmpdir();
    char data[512], out_c[512], out_g[512];
    snprintf(data, sizeof data, "%s/syn.h5", dir);
    snprintf(out_c, sizeof out_c, "%s/cpu", dir);
    snprintf(out_g, sizeof out_g, "%s/gpu", dir);
    synth_store c = {2, 12, 2, 10, 30, 3, KVZ_HIDDEN_FLOAT16, 1, 0, 0, -1, 99};
    if (synth_store_write(&c, data) || run_train(data, out_c, "cpu") ||
        run_train(data, out_g, "cuda"))
        return;
    json_t *jc = layers_of(out_c), *jg = layers_of(out_g);
    if (jc && jg)
        compare_runs(jc, jg);
    json_decref(jc);
    json_decref(jg);
}

int main(void)
{
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA))
        kvz_test_skip("built without CUDA");
    kvz_error err = {0};
    if (kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) == 0 || !(be = kvz_test_cuda()))
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
    printf("backend: %s%s\n", kvz_backend_name(be), kvz_backend_emulated() ? " (emulated)" : "");
    check_gather(1);
    check_gather(0);
    test_epoch_vs_cpu();
    test_ridge();
    test_precisions();
    test_train_run();
    kvz_backend_close(be);
    return kvz_test_done();
}
