/* test_backend_ops: every op of the backend interface (ops/backend.h) on every
 * backend this build registers, the way ggml's test-backend-ops does it.
 *  1. The cpu backend against naive double-precision re-derivations of each
 *     op's contract, written out here from ops/backend.h and ops/ops.h:
 *     linear y = x W^T + b (fp32 and bf16 W), RMSNorm, rotate-half RoPE
 *     (inv_freq from kvz_rope_inv_freq_raw, default and llama3), causal GQA
 *     attention with scale and per-row log-sum-exp (pos0 = 0 and > 0, decode
 *     and prefill, cpu blocks that do not divide the length), SwiGLU; and,
 *     bit for bit, add, embed (fp32 and bf16 tables), copy_rows, convert
 *     f32 <-> bf16 <-> f16 (round to nearest even: hand-picked bit patterns incl.
 *     halfway cases, subnormals, inf, NaN; every bf16 pattern; random fp32
 *     patterns against an RNE written here) and fill (splitmix64, checked
 *     against its published outputs).
 *  2. Every other compiled backend that opens (cuda) against the cpu backend
 *     on the same inputs (upload, run, download, compare); one that is
 *     compiled but does not open (no device) is reported as SKIP and the cpu
 *     part still runs. On the CUDA emulator (kvz_backend_emulated()) attention
 *     cases above ATTN_EMU_MAX_WORK = n_q * keys * heads * head_dim run on
 *     the cpu only.
 *     The KVzip+ score phases (row and value log-norms, causal lse, the
 *     best log-score; fp32 and bf16 compute), the row gather and the
 *     asynchronous slot downloads likewise (see their section).
 *     The trainer ops (gemm in every transpose combination and precision,
 *     bias rows, column sums, GELU and its gradient, MSE, gradient clipping,
 *     AdamW, combine_parts, take_rows, the ridge statistics, backend memory)
 *     likewise, with relative budgets (see their section).
 *  3. The argument errors of the generic layer (ops/backend.c) on every
 *     backend: KVZ_EINVAL with a message naming the op, and opening cuda in
 *     a build without CUDA: KVZ_EUNSUPPORTED "... built without CUDA ...".
 * Every array an op touches lives in backend memory between KVZ_GUARD guard
 * elements (the NaN pattern KVZ_GUARD_BITS, bf16: its upper half), uploaded
 * and downloaded whole: guards must be untouched, inputs unchanged, outputs
 * finite. Errors are NMSE = sum((got-ref)^2)/sum(ref^2) per op and dtype
 * within the budgets below; a failure prints the op, shape, NMSE, budget and
 * the worst element; the end prints the worst NMSE seen per op
 * (KVZ_TEST_VERBOSE=1: every case's). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/kvz_cuda.h"
#include "../ops/backend.h"
#include "kvz_test.h"
#include "kvz_test_gpu.h"

/* ---------- budgets (NMSE) ----------
 * In brackets: the worst NMSE observed over this file's cases (x86-64,
 * OpenBLAS; cuda: the CPU emulator of tests/cuda_emu, whose cuBLAS is
 * OpenBLAS and whose math is the host's libm). Budgets keep a margin of 9x
 * (bf16 attention) to 10^4x over them. */
/* cpu vs the naive double reference */
#define BUDGET_CPU_LINEAR 1e-9       /* fp32 sgemm; bf16 W widened exactly [9.3e-14] */
#define BUDGET_CPU_ELEMENTWISE 1e-11 /* rmsnorm, rope, swiglu: a few ulp [3.7e-15] */
#define BUDGET_CPU_ATTENTION 1e-9    /* out [3.9e-13] and lse [2.7e-15] */
/* cpu linear with bf16 W vs the naive one with the unrounded fp32 W: the cost
 * of rounding W to bf16 (half an ulp of 8 significant bits, uniform: ~2e-6
 * expected) [2.6e-6; 4.0e-6 for the 1x1x1 case] */
#define BUDGET_BF16_WEIGHTS 1e-4
/* another backend vs the cpu backend on the same inputs */
#define BUDGET_BE_F32 1e-10           /* fp32 ops [emulator: 0, attention 4.2e-13] */
#define BUDGET_BE_BF16_LINEAR 1e-4    /* x rounded to bf16 as well [2.9e-6] */
#define BUDGET_BE_BF16_ATTENTION 1e-4 /* compute KVZ_BF16: q, k, v and P in bf16 [1.1e-5,
                                         lse 4.7e-7] */
/* add, embed, copy_rows, convert, fill: bit for bit on every backend */

/* Emulator: the largest attention case (n_q * keys * heads * head_dim) run on
 * an emulated backend. With 2e7 every case of this file runs there (the whole
 * test: ~1 s on the emulator, 0.1 s cpu only); larger cases added later stay
 * on the cpu there. */
#define ATTN_EMU_MAX_WORK 2e7

/* ---------- backends ---------- */

static kvz_backend *g_cpu;
static kvz_backend *g_other[4];
static int g_n_other;

static const char *short_name(const kvz_backend *be)
{
    return kvz_backend_kind_of(be) == KVZ_BACKEND_CPU ? "cpu" : "cuda";
}

static int emulated(const kvz_backend *be)
{
    return kvz_backend_kind_of(be) == KVZ_BACKEND_CUDA && kvz_backend_emulated();
}

/* ---------- random inputs ---------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rand_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static float frand(float scale)
{
    return scale * (2.0f * (float)(rand_u64() >> 40) / 16777216.0f - 1.0f);
}

static float *rand_array(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand(scale);
    return p;
}

/* ---------- bf16, written out (not the header's helpers) ---------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int f32_bits_nan(uint32_t u)
{
    return (u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0;
}

static int bf16_nan(uint16_t b)
{
    return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0;
}

/* Round to nearest, ties to even, on the upper half; the carry runs into the
 * exponent (to inf on overflow). NaN: any NaN (the caller checks the class). */
static uint16_t ref_bf16(uint32_t u)
{
    uint32_t hi = u >> 16, lo = u & 0xffffu;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u)))
        hi++;
    return (uint16_t)hi;
}

static float ref_widen(uint16_t b)
{
    return bits_f32((uint32_t)b << 16);
}

/* ---------- budgets bookkeeping: worst NMSE per op / dtype / comparison ---------- */

typedef struct stat {
    char name[96];
    double budget, worst;
    int cases;
} stat;

static stat g_stats[128];
static int g_n_stats;
static int g_verbose; /* KVZ_TEST_VERBOSE=1: print every case's NMSE */

static void record(const char *name, double budget, double nmse)
{
    int i = 0;
    while (i < g_n_stats && strcmp(g_stats[i].name, name) != 0)
        i++;
    if (i == g_n_stats) {
        if (g_n_stats == (int)(sizeof g_stats / sizeof g_stats[0]))
            return;
        g_n_stats++;
        snprintf(g_stats[i].name, sizeof g_stats[i].name, "%s", name);
        g_stats[i].budget = budget;
        g_stats[i].worst = 0.0;
    }
    if (nmse > g_stats[i].worst || isnan(nmse))
        g_stats[i].worst = nmse;
    g_stats[i].cases++;
}

/* got[n] against ref[n]: every value finite, NMSE <= budget; records the NMSE
 * under stat_name ("linear f32: cpu vs naive"). */
static void check_nmse(const char *stat_name, const char *what, const float *got,
                       const double *ref, size_t n, double budget)
{
    double num = 0.0, den = 0.0, worst = -1.0;
    size_t wi = 0, nonfinite = 0, first_nf = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            if (!nonfinite++)
                first_nf = i;
            continue;
        }
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        if (fabs(d) > worst) {
            worst = fabs(d);
            wi = i;
        }
    }
    double nmse = den > 0.0 ? num / den : num;
    record(stat_name, budget, nonfinite ? NAN : nmse);
    if (g_verbose)
        printf("  %-44s %9.3g  %s\n", stat_name, nmse, what);
    KVZ_CHECK(nonfinite == 0, "%s: %zu of %zu outputs not finite (first [%zu] = %g)", what,
              nonfinite, n, first_nf, n ? got[first_nf] : 0.0f);
    KVZ_CHECK(nmse <= budget,
              "%s: NMSE %.3g > budget %.3g; worst [%zu] got %.9g expected %.9g (|diff| %.3g)",
              what, nmse, budget, wi, n ? got[wi] : 0.0f, n ? ref[wi] : 0.0, worst);
}

static double *widen_array(const float *v, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}

/* got vs ref (another backend vs the cpu backend), both float. */
static void check_vs_cpu(const char *stat_name, const char *what, const float *got,
                         const float *ref, size_t n, double budget)
{
    double *r = widen_array(ref, n);
    check_nmse(stat_name, what, got, r, n, budget);
    free(r);
}

/* Bit-exact comparison of 32-bit (floats) or 16-bit (bf16) arrays. */
static void check_bits(const char *what, const void *got, const void *ref, size_t n,
                       size_t esize)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp((const char *)got + i * esize, (const char *)ref + i * esize, esize)) {
            if (!bad++)
                first = i;
        }
    uint32_t g = 0, r = 0;
    memcpy(&g, (const char *)got + first * esize, n ? esize : 0);
    memcpy(&r, (const char *)ref + first * esize, n ? esize : 0);
    if (esize == 4)
        KVZ_CHECK(bad == 0,
                  "%s: %zu of %zu elements differ; first [%zu] got %.9g (0x%08x) expected %.9g "
                  "(0x%08x)",
                  what, bad, n, first, bits_f32(g), g, bits_f32(r), r);
    else
        KVZ_CHECK(bad == 0,
                  "%s: %zu of %zu elements differ; first [%zu] got 0x%04x expected 0x%04x", what,
                  bad, n, first, g, r);
}

/* ---------- guarded backend buffers ---------- */

/* n elements of dtype in backend memory with KVZ_GUARD guard elements before
 * and after; all: the allocation, buf: the n elements. */
typedef struct gbuf {
    kvz_buf all, buf;
} gbuf;

static void guard_fill(void *p, kvz_dtype dt, size_t n)
{
    const uint32_t b32 = KVZ_GUARD_BITS;
    const uint16_t b16 = (uint16_t)(KVZ_GUARD_BITS >> 16); /* 0x7fa5: a bf16 NaN */
    const uint64_t b64 = ((uint64_t)0x7ff4a5a5u << 32) | KVZ_GUARD_BITS; /* a double NaN */
    size_t es = kvz_dtype_size(dt);
    for (size_t i = 0; i < n; i++) {
        if (es == 8)
            memcpy((char *)p + 8 * i, &b64, 8);
        else if (es == 4)
            memcpy((char *)p + 4 * i, &b32, 4);
        else
            memcpy((char *)p + 2 * i, &b16, 2);
    }
}

static int guard_intact(const void *p, kvz_dtype dt, size_t n)
{
    size_t es = kvz_dtype_size(dt);
    unsigned char *g = malloc(n * es);
    guard_fill(g, dt, n);
    int ok = memcmp(p, g, n * es) == 0;
    free(g);
    return ok;
}

/* Allocates and uploads host[n] (NULL: the guard pattern everywhere, so an
 * output element the op does not write reads as NaN). */
static void gb_make(kvz_backend *be, kvz_dtype dt, size_t n, const void *host,
                    const char *what, gbuf *g)
{
    size_t es = kvz_dtype_size(dt), total = n + 2 * KVZ_GUARD;
    unsigned char *img = malloc(total * es);
    memset(g, 0, sizeof *g);
    guard_fill(img, dt, total);
    if (host && n)
        memcpy(img + KVZ_GUARD * es, host, n * es);
    kvz_error err = {0};
    int rc = kvz_backend_alloc(be, dt, total, what, &g->all, &err);
    if (rc == KVZ_OK)
        rc = kvz_backend_upload(be, g->all.data, img, total * es, &err);
    KVZ_CHECK(rc == KVZ_OK, "%s: %s: alloc/upload of %zu elements: %s", short_name(be), what,
              total, err.msg);
    free(img);
    g->buf = kvz_buf_at(g->all, KVZ_GUARD);
    g->buf.numel = n;
}

/* Downloads the whole allocation; checks both guards; copies the n elements
 * to out (if non-NULL); checks they equal unchanged (if non-NULL: an input
 * the op must not write); frees. */
static void gb_finish(kvz_backend *be, gbuf *g, void *out, const void *unchanged,
                      const char *what)
{
    if (!g->all.data)
        return;
    size_t es = kvz_dtype_size(g->all.dtype), n = g->buf.numel, total = g->all.numel;
    unsigned char *img = malloc(total * es);
    kvz_error err = {0};
    int rc = kvz_backend_download(be, img, g->all.data, total * es, &err);
    KVZ_CHECK(rc == KVZ_OK, "%s: %s: download: %s", short_name(be), what, err.msg);
    if (rc == KVZ_OK) {
        KVZ_CHECK(guard_intact(img, g->all.dtype, KVZ_GUARD), "%s: %s: front guard overwritten",
                  short_name(be), what);
        KVZ_CHECK(guard_intact(img + (KVZ_GUARD + n) * es, g->all.dtype, KVZ_GUARD),
                  "%s: %s: back guard overwritten", short_name(be), what);
        if (out && n)
            memcpy(out, img + KVZ_GUARD * es, n * es);
        if (unchanged && n)
            KVZ_CHECK(memcmp(img + KVZ_GUARD * es, unchanged, n * es) == 0,
                      "%s: %s: input modified by the op", short_name(be), what);
    }
    free(img);
    kvz_backend_free(be, &g->all);
}

static float *f32p(const gbuf *g)
{
    return kvz_buf_f32(g->buf);
}

/* The op's status and a sync after it (a fault surfaces at the next sync). */
static int op_ok(kvz_backend *be, int rc, const kvz_error *err, const char *what)
{
    KVZ_CHECK(rc == KVZ_OK, "%s: %s: %s", short_name(be), what, err->msg);
    kvz_error e2 = {0};
    int rs = kvz_backend_sync(be, &e2);
    KVZ_CHECK(rs == KVZ_OK, "%s: %s: sync after the op: %s", short_name(be), what, e2.msg);
    return rc == KVZ_OK && rs == KVZ_OK;
}

/* ================= linear ================= */

typedef struct linear_case {
    size_t n, n_in, n_out;
    int bias;
} linear_case;

static void run_linear(kvz_backend *be, const float *x, kvz_dtype wdt, const void *w,
                       const float *bias, float *y, const linear_case *c, const char *what)
{
    gbuf gx, gw, gb = {{0}, {0}}, gy;
    gb_make(be, KVZ_F32, c->n * c->n_in, x, "x", &gx);
    gb_make(be, wdt, c->n_out * c->n_in, w, "W", &gw);
    if (bias)
        gb_make(be, KVZ_F32, c->n_out, bias, "bias", &gb);
    gb_make(be, KVZ_F32, c->n * c->n_out, NULL, "y", &gy);
    kvz_error err = {0};
    int rc = kvz_op_linear(be, f32p(&gx), gw.buf, bias ? f32p(&gb) : NULL, f32p(&gy), c->n,
                           c->n_in, c->n_out, &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: y", what);
    gb_finish(be, &gy, y, NULL, lab);
    snprintf(lab, sizeof lab, "%s: x", what);
    gb_finish(be, &gx, NULL, x, lab);
    snprintf(lab, sizeof lab, "%s: W", what);
    gb_finish(be, &gw, NULL, w, lab);
    snprintf(lab, sizeof lab, "%s: bias", what);
    gb_finish(be, &gb, NULL, bias, lab);
}

/* y = x W^T + b in double, W given as fp32 values. */
static void ref_linear(const float *x, const float *w, const float *bias, double *y,
                       const linear_case *c)
{
    for (size_t r = 0; r < c->n; r++)
        for (size_t o = 0; o < c->n_out; o++) {
            double s = bias ? bias[o] : 0.0;
            for (size_t i = 0; i < c->n_in; i++)
                s += (double)x[r * c->n_in + i] * w[o * c->n_in + i];
            y[r * c->n_out + o] = s;
        }
}

static void test_linear(const linear_case *c)
{
    size_t nx = c->n * c->n_in, nw = c->n_out * c->n_in, ny = c->n * c->n_out;
    float *x = rand_array(nx, 2.0f), *w = rand_array(nw, 0.5f);
    float *bias = c->bias ? rand_array(c->n_out, 1.0f) : NULL;
    uint16_t *w16 = malloc(nw * sizeof *w16);
    float *w16f = malloc(nw * sizeof *w16f);
    for (size_t i = 0; i < nw; i++) {
        w16[i] = ref_bf16(f32_bits(w[i]));
        w16f[i] = ref_widen(w16[i]);
    }
    double *ref = malloc(ny * sizeof *ref), *ref32 = malloc(ny * sizeof *ref32);
    float *cpu = malloc(ny * sizeof *cpu), *got = malloc(ny * sizeof *got);
    ref_linear(x, w, bias, ref32, c);
    for (int d = 0; d < 2; d++) {
        kvz_dtype wdt = d ? KVZ_BF16 : KVZ_F32;
        const void *wh = d ? (const void *)w16 : (const void *)w;
        const char *dn = d ? "bf16" : "f32";
        char what[200], st[96];
        snprintf(what, sizeof what, "linear %s n=%zu n_in=%zu n_out=%zu%s", dn, c->n, c->n_in,
                 c->n_out, c->bias ? " +bias" : "");
        char wcpu[240];
        snprintf(wcpu, sizeof wcpu, "cpu %s", what);
        run_linear(g_cpu, x, wdt, wh, bias, cpu, c, wcpu);
        if (d)
            ref_linear(x, w16f, bias, ref, c);
        snprintf(st, sizeof st, "linear %s: cpu vs naive%s", dn, d ? " (widened W)" : "");
        check_nmse(st, wcpu, cpu, d ? ref : ref32, ny, BUDGET_CPU_LINEAR);
        if (d)
            check_nmse("linear bf16: cpu vs naive with the fp32 W", wcpu, cpu, ref32, ny,
                       BUDGET_BF16_WEIGHTS);
        for (int b = 0; b < g_n_other; b++) {
            kvz_backend *be = g_other[b];
            char wbe[240];
            snprintf(wbe, sizeof wbe, "%s %s", short_name(be), what);
            run_linear(be, x, wdt, wh, bias, got, c, wbe);
            snprintf(st, sizeof st, "linear %s: %s vs cpu", dn, short_name(be));
            check_vs_cpu(st, wbe, got, cpu, ny, d ? BUDGET_BE_BF16_LINEAR : BUDGET_BE_F32);
        }
    }
    free(x), free(w), free(bias), free(w16), free(w16f), free(ref), free(ref32), free(cpu),
        free(got);
}

/* ================= rmsnorm ================= */

typedef struct rmsnorm_case {
    size_t rows, dim;
    float eps;
    int in_place, zero_row;
} rmsnorm_case;

static void run_rmsnorm(kvz_backend *be, const float *x, const float *w, float *y,
                        const rmsnorm_case *c, const char *what)
{
    size_t n = c->rows * c->dim;
    gbuf gx, gw, gy;
    gb_make(be, KVZ_F32, n, x, "x", &gx);
    gb_make(be, KVZ_F32, c->dim, w, "w", &gw);
    if (!c->in_place)
        gb_make(be, KVZ_F32, n, NULL, "y", &gy);
    kvz_error err = {0};
    int rc = kvz_op_rmsnorm(be, f32p(&gx), f32p(&gw), c->in_place ? f32p(&gx) : f32p(&gy),
                            c->rows, c->dim, c->eps, &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: y", what);
    if (c->in_place) {
        gb_finish(be, &gx, y, NULL, lab);
    } else {
        gb_finish(be, &gy, y, NULL, lab);
        snprintf(lab, sizeof lab, "%s: x", what);
        gb_finish(be, &gx, NULL, x, lab);
    }
    snprintf(lab, sizeof lab, "%s: w", what);
    gb_finish(be, &gw, NULL, w, lab);
}

static void test_rmsnorm(const rmsnorm_case *c)
{
    size_t n = c->rows * c->dim;
    float *x = rand_array(n, 3.0f), *w = rand_array(c->dim, 1.5f);
    if (c->zero_row && c->rows > 1)
        memset(x + c->dim, 0, c->dim * sizeof *x);
    double *ref = malloc(n * sizeof *ref);
    float *cpu = malloc(n * sizeof *cpu), *got = malloc(n * sizeof *got);
    for (size_t r = 0; r < c->rows; r++) {
        double ss = 0.0;
        for (size_t i = 0; i < c->dim; i++)
            ss += (double)x[r * c->dim + i] * x[r * c->dim + i];
        double inv = 1.0 / sqrt(ss / (double)c->dim + (double)c->eps);
        for (size_t i = 0; i < c->dim; i++)
            ref[r * c->dim + i] = (double)w[i] * x[r * c->dim + i] * inv;
    }
    char what[200], wl[240], st[96];
    snprintf(what, sizeof what, "rmsnorm rows=%zu dim=%zu eps=%g%s%s", c->rows, c->dim,
             (double)c->eps, c->in_place ? " in place" : "", c->zero_row ? " (a zero row)" : "");
    snprintf(wl, sizeof wl, "cpu %s", what);
    run_rmsnorm(g_cpu, x, w, cpu, c, wl);
    check_nmse("rmsnorm f32: cpu vs naive", wl, cpu, ref, n, BUDGET_CPU_ELEMENTWISE);
    for (int b = 0; b < g_n_other; b++) {
        snprintf(wl, sizeof wl, "%s %s", short_name(g_other[b]), what);
        run_rmsnorm(g_other[b], x, w, got, c, wl);
        snprintf(st, sizeof st, "rmsnorm f32: %s vs cpu", short_name(g_other[b]));
        check_vs_cpu(st, wl, got, cpu, n, BUDGET_BE_F32);
    }
    free(x), free(w), free(ref), free(cpu), free(got);
}

/* ================= rope ================= */

typedef struct rope_case {
    size_t T, H, dh, pos0;
    double theta;
    int llama3;
} rope_case;

static void run_rope(kvz_backend *be, const float *x, const float *inv, float *y,
                     const rope_case *c, const char *what)
{
    size_t n = c->T * c->H * c->dh;
    gbuf gx, gi;
    gb_make(be, KVZ_F32, n, x, "x", &gx);
    gb_make(be, KVZ_F32, c->dh / 2, inv, "inv_freq", &gi);
    kvz_error err = {0};
    int rc = kvz_op_rope(be, f32p(&gx), c->T, c->H, c->dh, c->pos0, f32p(&gi), &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: x", what);
    gb_finish(be, &gx, y, NULL, lab);
    snprintf(lab, sizeof lab, "%s: inv_freq", what);
    gb_finish(be, &gi, NULL, inv, lab);
}

static void test_rope(const rope_case *c)
{
    size_t n = c->T * c->H * c->dh, half = c->dh / 2;
    float *x = rand_array(n, 2.0f), *inv = malloc(half * sizeof *inv);
    kvz_rope_scaling sc = {KVZ_ROPE_SCALING_LLAMA3, 8.0, 1.0, 4.0, 8192};
    kvz_rope_inv_freq_raw(c->theta, c->dh, c->llama3 ? &sc : NULL, inv);
    double *ref = malloc(n * sizeof *ref);
    float *cpu = malloc(n * sizeof *cpu), *got = malloc(n * sizeof *got);
    /* the angle is the float product (float)pos * inv_freq[i] (transformers:
     * inv_freq @ position_ids in float32); cos and sin in double */
    for (size_t t = 0; t < c->T; t++)
        for (size_t h = 0; h < c->H; h++) {
            const float *v = x + (t * c->H + h) * c->dh;
            double *o = ref + (t * c->H + h) * c->dh;
            for (size_t i = 0; i < half; i++) {
                volatile float angle = (float)(c->pos0 + t) * inv[i];
                double cs = cos((double)angle), sn = sin((double)angle);
                o[i] = (double)v[i] * cs - (double)v[half + i] * sn;
                o[half + i] = (double)v[half + i] * cs + (double)v[i] * sn;
            }
        }
    char what[200], wl[240], st[96];
    snprintf(what, sizeof what, "rope T=%zu H=%zu head_dim=%zu pos0=%zu theta=%g%s", c->T, c->H,
             c->dh, c->pos0, c->theta, c->llama3 ? " llama3" : "");
    snprintf(wl, sizeof wl, "cpu %s", what);
    run_rope(g_cpu, x, inv, cpu, c, wl);
    check_nmse("rope f32: cpu vs naive", wl, cpu, ref, n, BUDGET_CPU_ELEMENTWISE);
    for (int b = 0; b < g_n_other; b++) {
        snprintf(wl, sizeof wl, "%s %s", short_name(g_other[b]), what);
        run_rope(g_other[b], x, inv, got, c, wl);
        snprintf(st, sizeof st, "rope f32: %s vs cpu", short_name(g_other[b]));
        check_vs_cpu(st, wl, got, cpu, n, BUDGET_BE_F32);
    }
    free(x), free(inv), free(ref), free(cpu), free(got);
}

/* ================= attention ================= */

typedef struct attn_case {
    size_t H, Hkv, dh, n_q, pos0, block;
    float scale; /* 0: 1/sqrt(head_dim) */
    int lse;
} attn_case;

static double attn_work(const attn_case *c)
{
    return (double)c->n_q * (double)(c->pos0 + c->n_q) * (double)c->H * (double)c->dh;
}

static void run_attention(kvz_backend *be, const float *q, const float *k, const float *v,
                          float *out, float *lse, const attn_case *c, float scale,
                          kvz_dtype compute, const char *what)
{
    size_t nk = c->pos0 + c->n_q, nq_el = c->n_q * c->H * c->dh, nkv_el = nk * c->Hkv * c->dh;
    gbuf gq, gk, gv, go, gl = {{0}, {0}};
    gb_make(be, KVZ_F32, nq_el, q, "q", &gq);
    gb_make(be, KVZ_F32, nkv_el, k, "k", &gk);
    gb_make(be, KVZ_F32, nkv_el, v, "v", &gv);
    gb_make(be, KVZ_F32, nq_el, NULL, "out", &go);
    if (lse)
        gb_make(be, KVZ_F32, c->n_q * c->H, NULL, "lse", &gl);
    kvz_attn_args a = {f32p(&gq), f32p(&gk), f32p(&gv), f32p(&go), c->n_q, c->pos0, c->H,
                       c->Hkv, c->dh, c->block, scale, lse ? f32p(&gl) : NULL};
    kvz_error err = {0};
    int rc = kvz_op_attention(be, &a, compute, &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: out", what);
    gb_finish(be, &go, out, NULL, lab);
    snprintf(lab, sizeof lab, "%s: lse", what);
    gb_finish(be, &gl, lse, NULL, lab);
    snprintf(lab, sizeof lab, "%s: q", what);
    gb_finish(be, &gq, NULL, q, lab);
    snprintf(lab, sizeof lab, "%s: k", what);
    gb_finish(be, &gk, NULL, k, lab);
    snprintf(lab, sizeof lab, "%s: v", what);
    gb_finish(be, &gv, NULL, v, lab);
}

/* Full softmax rows in double: query i at position pos0 + i sees keys
 * 0..pos0+i; head h reads kv head h / (H / Hkv). */
static void ref_attention(const float *q, const float *k, const float *v, double *out,
                          double *lse, const attn_case *c, double scale)
{
    size_t H = c->H, Hkv = c->Hkv, dh = c->dh, G = H / Hkv, nk = c->pos0 + c->n_q;
    double *s = malloc(nk * sizeof *s);
    for (size_t i = 0; i < c->n_q; i++)
        for (size_t h = 0; h < H; h++) {
            const float *qi = q + (i * H + h) * dh;
            size_t kvh = h / G, last = c->pos0 + i;
            double m = -INFINITY, sum = 0.0;
            for (size_t j = 0; j <= last; j++) {
                const float *kj = k + (j * Hkv + kvh) * dh;
                double dot = 0.0;
                for (size_t d = 0; d < dh; d++)
                    dot += (double)qi[d] * kj[d];
                s[j] = scale * dot;
                m = s[j] > m ? s[j] : m;
            }
            for (size_t j = 0; j <= last; j++) {
                s[j] = exp(s[j] - m);
                sum += s[j];
            }
            double *o = out + (i * H + h) * dh;
            for (size_t d = 0; d < dh; d++)
                o[d] = 0.0;
            for (size_t j = 0; j <= last; j++) {
                const float *vj = v + (j * Hkv + kvh) * dh;
                for (size_t d = 0; d < dh; d++)
                    o[d] += s[j] / sum * vj[d];
            }
            lse[i * H + h] = m + log(sum);
        }
    free(s);
}

static void test_attention(const attn_case *c)
{
    size_t nk = c->pos0 + c->n_q, nq_el = c->n_q * c->H * c->dh, nkv_el = nk * c->Hkv * c->dh;
    size_t nl = c->n_q * c->H;
    float scale = c->scale != 0.0f ? c->scale : 1.0f / sqrtf((float)c->dh);
    float *q = rand_array(nq_el, 2.0f), *k = rand_array(nkv_el, 2.0f);
    float *v = rand_array(nkv_el, 1.0f);
    double *ref = malloc(nq_el * sizeof *ref), *ref_lse = malloc(nl * sizeof *ref_lse);
    float *cpu = malloc(nq_el * sizeof *cpu), *cpu_lse = malloc(nl * sizeof *cpu_lse);
    float *got = malloc(nq_el * sizeof *got), *got_lse = malloc(nl * sizeof *got_lse);
    ref_attention(q, k, v, ref, ref_lse, c, (double)scale);
    char what[200], wl[260], st[96];
    snprintf(what, sizeof what,
             "attention H=%zu Hkv=%zu head_dim=%zu n_q=%zu pos0=%zu (keys %zu) block=%zu "
             "scale=%g%s",
             c->H, c->Hkv, c->dh, c->n_q, c->pos0, nk, c->block, (double)scale,
             c->lse ? "" : " no lse");
    snprintf(wl, sizeof wl, "cpu %s", what);
    run_attention(g_cpu, q, k, v, cpu, c->lse ? cpu_lse : NULL, c, scale, KVZ_F32, wl);
    check_nmse("attention f32: cpu vs naive", wl, cpu, ref, nq_el, BUDGET_CPU_ATTENTION);
    if (c->lse) {
        snprintf(wl, sizeof wl, "cpu %s: lse", what);
        check_nmse("attention lse f32: cpu vs naive", wl, cpu_lse, ref_lse, nl,
                   BUDGET_CPU_ATTENTION);
    }
    /* compute KVZ_BF16 on the cpu: still fp32, the same result */
    snprintf(wl, sizeof wl, "cpu %s compute bf16", what);
    run_attention(g_cpu, q, k, v, got, c->lse ? got_lse : NULL, c, scale, KVZ_BF16, wl);
    check_bits(wl, got, cpu, nq_el, 4);
    if (c->lse)
        check_bits(wl, got_lse, cpu_lse, nl, 4);
    for (int b = 0; b < g_n_other; b++) {
        kvz_backend *be = g_other[b];
        if (emulated(be) && attn_work(c) > ATTN_EMU_MAX_WORK) {
            printf("%s %s: cpu only on the emulator (work %.3g > %.3g)\n", short_name(be), what,
                   attn_work(c), ATTN_EMU_MAX_WORK);
            continue;
        }
        for (int d = 0; d < 2; d++) {
            kvz_dtype compute = d ? KVZ_BF16 : KVZ_F32;
            const char *dn = d ? "bf16" : "f32";
            double budget = d ? BUDGET_BE_BF16_ATTENTION : BUDGET_BE_F32;
            snprintf(wl, sizeof wl, "%s %s compute %s", short_name(be), what, dn);
            run_attention(be, q, k, v, got, c->lse ? got_lse : NULL, c, scale, compute, wl);
            snprintf(st, sizeof st, "attention %s: %s vs cpu f32", dn, short_name(be));
            check_vs_cpu(st, wl, got, cpu, nq_el, budget);
            if (c->lse) {
                snprintf(st, sizeof st, "attention lse %s: %s vs cpu f32", dn, short_name(be));
                snprintf(wl, sizeof wl, "%s %s compute %s: lse", short_name(be), what, dn);
                check_vs_cpu(st, wl, got_lse, cpu_lse, nl, budget);
            }
        }
    }
    free(q), free(k), free(v), free(ref), free(ref_lse), free(cpu), free(cpu_lse), free(got),
        free(got_lse);
}

/* ================= ragged attention (pruned KV cache) =================
 * Every other backend against the cpu op (test_kv_cache checks the cpu op
 * against attention re-derived naively with a mask). Ragged counts, keys
 * after the queries, one KV group that sees nothing, decode and prefill. */

static void run_ragged(kvz_backend *be, const kvz_ragged_attn_args *h, float *out,
                       const char *what)
{
    size_t dh = h->head_dim, nq = h->n_q * h->n_heads * dh, nkv = h->n_kv_heads * h->cap * dh;
    gbuf q, k, v, pos, count, o, row0 = {0};
    if (h->row0)
        gb_make(be, KVZ_I32, h->n_kv_heads, h->row0, "row0", &row0);
    gb_make(be, KVZ_F32, nq, h->q, "q", &q);
    gb_make(be, KVZ_F32, nkv, h->k, "k", &k);
    gb_make(be, KVZ_F32, nkv, h->v, "v", &v);
    gb_make(be, KVZ_I32, h->n_kv_heads * h->cap, h->pos, "pos", &pos);
    gb_make(be, KVZ_I32, h->n_kv_heads, h->count, "count", &count);
    gb_make(be, KVZ_F32, nq, NULL, "out", &o);
    kvz_ragged_attn_args a = *h;
    a.q = f32p(&q), a.k = f32p(&k), a.v = f32p(&v), a.out = f32p(&o);
    a.pos = pos.buf.data, a.count = count.buf.data;
    a.row0 = h->row0 ? row0.buf.data : NULL;
    kvz_error err = {0};
    op_ok(be, kvz_op_ragged_attention(be, &a, &err), &err, what);
    if (h->row0)
        gb_finish(be, &row0, NULL, h->row0, what);
    gb_finish(be, &q, NULL, h->q, what);
    gb_finish(be, &k, NULL, h->k, what);
    gb_finish(be, &v, NULL, h->v, what);
    gb_finish(be, &pos, NULL, h->pos, what);
    gb_finish(be, &count, NULL, h->count, what);
    gb_finish(be, &o, out, NULL, what);
}

static void test_ragged(size_t H, size_t Hkv, size_t dh, size_t cap, size_t n_q, size_t q_pos0)
{
    size_t nq = n_q * H * dh, nkv = Hkv * cap * dh;
    float *q = rand_array(nq, 2.0f), *k = rand_array(nkv, 1.0f), *v = rand_array(nkv, 1.0f);
    int32_t *pos = malloc(Hkv * cap * sizeof *pos), *count = malloc(Hkv * sizeof *count);
    for (size_t g = 0; g < Hkv; g++) {
        int32_t p = (int32_t)(g == Hkv - 1 ? q_pos0 + n_q : 0);
        for (size_t c = 0; c < cap; c++)
            pos[g * cap + c] = p += 1 + (int32_t)(rand_u64() % 4);
        count[g] = (int32_t)(g % 2 ? cap : cap * 2 / 3);
    }
    int32_t *row0 = malloc(Hkv * sizeof *row0);
    for (size_t g = 0; g < Hkv; g++) /* slabs in reverse order, as a resized cache may lay them */
        row0[g] = (int32_t)((Hkv - 1 - g) * cap);
    float *cpu = malloc(nq * sizeof *cpu), *got = malloc(nq * sizeof *got);
    for (int with_row0 = 0; with_row0 < 2; with_row0++) {
        kvz_ragged_attn_args a = {q,   k,      v,  pos, count, NULL, n_q, q_pos0, cap, H, Hkv, dh,
                                  1.0f / sqrtf((float)dh), with_row0 ? row0 : NULL};
        char what[160], st[96];
        snprintf(what, sizeof what,
                 "ragged attention H=%zu Hkv=%zu head_dim=%zu cap=%zu n_q=%zu%s", H, Hkv, dh, cap,
                 n_q, with_row0 ? " (row0)" : "");
        run_ragged(g_cpu, &a, cpu, what);
        for (int b = 0; b < g_n_other; b++) {
            run_ragged(g_other[b], &a, got, what);
            snprintf(st, sizeof st, "ragged attention: %s vs cpu", short_name(g_other[b]));
            check_vs_cpu(st, what, got, cpu, nq, BUDGET_BE_F32);
        }
    }
    free(q), free(k), free(v), free(pos), free(count), free(row0), free(cpu), free(got);
}

/* ================= swiglu ================= */

static void run_swiglu(kvz_backend *be, const float *gu, float *out, size_t n, size_t d_ff,
                       const char *what)
{
    gbuf gg, go;
    gb_make(be, KVZ_F32, n * 2 * d_ff, gu, "gate_up", &gg);
    gb_make(be, KVZ_F32, n * d_ff, NULL, "out", &go);
    kvz_error err = {0};
    int rc = kvz_op_swiglu(be, f32p(&gg), f32p(&go), n, d_ff, &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: out", what);
    gb_finish(be, &go, out, NULL, lab);
    snprintf(lab, sizeof lab, "%s: gate_up", what);
    gb_finish(be, &gg, NULL, gu, lab);
}

static void test_swiglu(size_t n, size_t d_ff)
{
    size_t no = n * d_ff;
    float *gu = rand_array(n * 2 * d_ff, 12.0f);
    double *ref = malloc(no * sizeof *ref);
    float *cpu = malloc(no * sizeof *cpu), *got = malloc(no * sizeof *got);
    for (size_t r = 0; r < n; r++)
        for (size_t i = 0; i < d_ff; i++) {
            double g = gu[r * 2 * d_ff + i], u = gu[r * 2 * d_ff + d_ff + i];
            ref[r * d_ff + i] = g / (1.0 + exp(-g)) * u;
        }
    char what[120], wl[160], st[96];
    snprintf(what, sizeof what, "swiglu n=%zu d_ff=%zu", n, d_ff);
    snprintf(wl, sizeof wl, "cpu %s", what);
    run_swiglu(g_cpu, gu, cpu, n, d_ff, wl);
    check_nmse("swiglu f32: cpu vs naive", wl, cpu, ref, no, BUDGET_CPU_ELEMENTWISE);
    for (int b = 0; b < g_n_other; b++) {
        snprintf(wl, sizeof wl, "%s %s", short_name(g_other[b]), what);
        run_swiglu(g_other[b], gu, got, n, d_ff, wl);
        snprintf(st, sizeof st, "swiglu f32: %s vs cpu", short_name(g_other[b]));
        check_vs_cpu(st, wl, got, cpu, no, BUDGET_BE_F32);
    }
    free(gu), free(ref), free(cpu), free(got);
}

/* ================= add (exact: one IEEE addition) ================= */

static void run_add(kvz_backend *be, const float *h, const float *d, float *out, size_t count,
                    const char *what)
{
    gbuf gh, gd;
    gb_make(be, KVZ_F32, count, h, "h", &gh);
    gb_make(be, KVZ_F32, count, d, "d", &gd);
    kvz_error err = {0};
    int rc = kvz_op_add(be, f32p(&gh), f32p(&gd), count, &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: h", what);
    gb_finish(be, &gh, out, NULL, lab);
    snprintf(lab, sizeof lab, "%s: d", what);
    gb_finish(be, &gd, NULL, d, lab);
}

static void test_add(size_t count)
{
    float *h = rand_array(count, 100.0f), *d = rand_array(count, 0.01f);
    float *ref = malloc(count * sizeof *ref), *got = malloc(count * sizeof *got);
    for (size_t i = 0; i < count; i++) /* the exact sum, rounded once */
        ref[i] = (float)((double)h[i] + (double)d[i]);
    kvz_backend *all[5] = {g_cpu};
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    for (int b = 0; b <= g_n_other; b++) {
        char what[120];
        snprintf(what, sizeof what, "%s add count=%zu", short_name(all[b]), count);
        run_add(all[b], h, d, got, count, what);
        check_bits(what, got, ref, count, 4);
    }
    free(h), free(d), free(ref), free(got);
}

/* ================= embed (exact) ================= */

static void run_embed(kvz_backend *be, kvz_dtype dt, const void *table, size_t rows,
                      size_t dim, const int32_t *ids, size_t n, float *h, const char *what)
{
    gbuf gt, gh;
    gb_make(be, dt, rows * dim, table, "table", &gt);
    gb_make(be, KVZ_F32, n * dim, NULL, "h", &gh);
    kvz_error err = {0};
    int rc = kvz_op_embed(be, gt.buf, dim, ids, n, f32p(&gh), &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: h", what);
    gb_finish(be, &gh, h, NULL, lab);
    snprintf(lab, sizeof lab, "%s: table", what);
    gb_finish(be, &gt, NULL, table, lab);
}

static void test_embed(size_t rows, size_t dim, size_t n)
{
    float *t32 = rand_array(rows * dim, 1.0f);
    uint16_t *t16 = malloc(rows * dim * sizeof *t16);
    for (size_t i = 0; i < rows * dim; i++)
        t16[i] = ref_bf16(f32_bits(t32[i]));
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t t = 0; t < n; t++) /* the first and last rows, repeats */
        ids[t] = t == 0 ? (int32_t)(rows - 1)
                        : t == 1 ? 0 : t % 5 == 3 ? ids[t - 1] : (int32_t)(rand_u64() % rows);
    float *ref = malloc(n * dim * sizeof *ref), *got = malloc(n * dim * sizeof *got);
    kvz_backend *all[5] = {g_cpu};
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    for (int d = 0; d < 2; d++) {
        for (size_t t = 0; t < n; t++)
            for (size_t i = 0; i < dim; i++)
                ref[t * dim + i] = d ? ref_widen(t16[(size_t)ids[t] * dim + i])
                                     : t32[(size_t)ids[t] * dim + i];
        for (int b = 0; b <= g_n_other; b++) {
            char what[160];
            snprintf(what, sizeof what, "%s embed %s rows=%zu dim=%zu n=%zu", short_name(all[b]),
                     d ? "bf16" : "f32", rows, dim, n);
            run_embed(all[b], d ? KVZ_BF16 : KVZ_F32, d ? (const void *)t16 : (const void *)t32,
                      rows, dim, ids, n, got, what);
            check_bits(what, got, ref, n * dim, 4);
        }
    }
    free(t32), free(t16), free(ids), free(ref), free(got);
}

/* ================= copy_rows (exact) ================= */

typedef struct copy_case {
    size_t n_rows, width, src_stride, src_off, dst_stride, dst_off;
} copy_case;

static void test_copy_rows(const copy_case *c)
{
    size_t ns = c->n_rows * c->src_stride, nd = c->n_rows * c->dst_stride;
    float *src = rand_array(ns, 5.0f), *dst0 = rand_array(nd, 7.0f);
    float *ref = malloc(nd * sizeof *ref), *got = malloc(nd * sizeof *got);
    memcpy(ref, dst0, nd * sizeof *ref); /* what lies between the rows stays */
    for (size_t r = 0; r < c->n_rows; r++)
        for (size_t i = 0; i < c->width; i++)
            ref[r * c->dst_stride + c->dst_off + i] = src[r * c->src_stride + c->src_off + i];
    kvz_backend *all[5] = {g_cpu};
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    for (int b = 0; b <= g_n_other; b++) {
        kvz_backend *be = all[b];
        char what[200], lab[260];
        snprintf(what, sizeof what,
                 "%s copy_rows n_rows=%zu width=%zu src stride %zu +%zu, dst stride %zu +%zu",
                 short_name(be), c->n_rows, c->width, c->src_stride, c->src_off, c->dst_stride,
                 c->dst_off);
        gbuf gs, gd;
        gb_make(be, KVZ_F32, ns, src, "src", &gs);
        gb_make(be, KVZ_F32, nd, dst0, "dst", &gd);
        kvz_error err = {0};
        /* the width columns of each row must lie inside the buffers */
        int rc = kvz_op_copy_rows(be, f32p(&gd) + c->dst_off, c->dst_stride, f32p(&gs) + c->src_off,
                                  c->src_stride, c->n_rows, c->width, &err);
        op_ok(be, rc, &err, what);
        snprintf(lab, sizeof lab, "%s: dst", what);
        gb_finish(be, &gd, got, NULL, lab);
        snprintf(lab, sizeof lab, "%s: src", what);
        gb_finish(be, &gs, NULL, src, lab);
        check_bits(what, got, ref, nd, 4);
    }
    free(src), free(dst0), free(ref), free(got);
}

/* ================= convert (exact, RNE) ================= */

/* Converts src (n elements of sdt) into a dst of n + extra elements of ddt
 * that holds dst0; returns dst's contents in out. */
static void run_convert(kvz_backend *be, kvz_dtype ddt, kvz_dtype sdt, const void *src,
                        size_t n, const void *dst0, size_t extra, void *out, const char *what)
{
    gbuf gs, gd;
    gb_make(be, sdt, n, src, "src", &gs);
    gb_make(be, ddt, n + extra, dst0, "dst", &gd);
    kvz_error err = {0};
    int rc = kvz_op_convert(be, gd.buf, gs.buf, &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: dst", what);
    gb_finish(be, &gd, out, NULL, lab);
    snprintf(lab, sizeof lab, "%s: src", what);
    gb_finish(be, &gs, NULL, src, lab);
}

/* f32 -> bf16 of src[n] against the expected bits exp16 (NaN inputs: any NaN). */
static void check_to_bf16(const char *what, const uint32_t *src, const uint16_t *got,
                          const uint16_t *exp16, size_t n, size_t extra, const uint16_t *dst0)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        int ok = f32_bits_nan(src[i]) ? bf16_nan(got[i]) : got[i] == exp16[i];
        if (!ok && !bad++)
            first = i;
    }
    KVZ_CHECK(bad == 0,
              "%s: %zu of %zu differ; first [%zu] 0x%08x (%.9g) -> got 0x%04x expected 0x%04x%s",
              what, bad, n, first, src[first], bits_f32(src[first]), got[first], exp16[first],
              f32_bits_nan(src[first]) ? " (any NaN)" : "");
    KVZ_CHECK(memcmp(got + n, dst0 + n, extra * sizeof *got) == 0,
              "%s: dst past the source's %zu elements written", what, n);
}

static void test_convert(void)
{
    /* hand-picked f32 -> bf16 (round to nearest, ties to even) */
    static const uint32_t hand_in[] = {
        0x3f800000u, /* 1.0 */
        0x3f808000u, /* halfway 0x3f80|0x3f81: even 0x3f80 */
        0x3f818000u, /* halfway 0x3f81|0x3f82: even 0x3f82 */
        0x3f808001u, /* just above halfway: up */
        0x3f807fffu, /* just below halfway: down */
        0xbf818000u, /* negative halfway: even 0xbf82 */
        0x3f80ffffu, /* up */
        0x7f800000u, /* +inf */
        0xff800000u, /* -inf */
        0x7f7fffffu, /* FLT_MAX: rounds up to inf */
        0x7f7f8000u, /* halfway, odd: up into inf */
        0x7f7f7fffu, /* below halfway: largest finite bf16 */
        0x80000000u, /* -0 */
        0x00000000u, /* +0 */
        0x00018000u, /* subnormal halfway, odd: up */
        0x00008000u, /* subnormal halfway, even: down to +0 */
        0x807fffffu, /* largest negative subnormal: up to the smallest normal */
        0x7fc00000u, /* quiet NaN */
        0x7f800001u, /* signalling NaN whose payload is all in the low half */
        0xffffffffu, /* negative NaN */
    };
    static const uint16_t hand_out[] = {
        0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x3f80, 0xbf82, 0x3f81, 0x7f80, 0xff80, 0x7f80,
        0x7f80, 0x7f7f, 0x8000, 0x0000, 0x0002, 0x0000, 0x8080, 0x7fc0, 0x7fc0, 0xffc0,
    };
    enum { NH = sizeof hand_in / sizeof hand_in[0], NR = 100003, EXTRA = 5 };
    uint32_t *rin = malloc(NR * sizeof *rin);
    uint16_t *rexp = malloc(NR * sizeof *rexp), *got16 = malloc((NR + EXTRA) * sizeof *got16);
    uint16_t *dst16 = malloc((NR + EXTRA) * sizeof *dst16);
    for (size_t i = 0; i < NR; i++) { /* every class: random bit patterns */
        rin[i] = (uint32_t)(rand_u64() >> 32);
        if (i % 3 == 1) /* many halfway cases */
            rin[i] = (rin[i] & 0xffff0000u) | 0x8000u;
        rexp[i] = ref_bf16(rin[i]);
    }
    for (size_t i = 0; i < NR + EXTRA; i++)
        dst16[i] = (uint16_t)(0x1234 + i);
    /* bf16 -> f32: every pattern */
    enum { N16 = 65536 };
    uint16_t *all16 = malloc(N16 * sizeof *all16);
    uint32_t *exp32 = malloc(N16 * sizeof *exp32), *got32 = malloc((N16 + EXTRA) * 4);
    uint32_t *dst32 = malloc((N16 + EXTRA) * 4);
    for (size_t i = 0; i < N16; i++) {
        all16[i] = (uint16_t)i;
        exp32[i] = (uint32_t)i << 16;
    }
    for (size_t i = 0; i < N16 + EXTRA; i++)
        dst32[i] = 0x3f800000u + (uint32_t)i;
    kvz_backend *all[5] = {g_cpu};
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    for (int b = 0; b <= g_n_other; b++) {
        kvz_backend *be = all[b];
        char what[160];
        snprintf(what, sizeof what, "%s convert f32->bf16 hand-picked", short_name(be));
        run_convert(be, KVZ_BF16, KVZ_F32, hand_in, NH, dst16, EXTRA, got16, what);
        check_to_bf16(what, hand_in, got16, hand_out, NH, EXTRA, dst16);
        for (size_t i = 0; i < NH; i++) /* NaN stays a quiet NaN, sign kept */
            if (f32_bits_nan(hand_in[i]))
                KVZ_CHECK(bf16_nan(got16[i]) && (got16[i] & 0x0040u) &&
                              (got16[i] & 0x8000u) == (hand_in[i] >> 16 & 0x8000u),
                          "%s: NaN 0x%08x -> 0x%04x, not a quiet NaN of the same sign", what,
                          hand_in[i], got16[i]);
        snprintf(what, sizeof what, "%s convert f32->bf16 %d random patterns", short_name(be),
                 (int)NR);
        run_convert(be, KVZ_BF16, KVZ_F32, rin, NR, dst16, EXTRA, got16, what);
        check_to_bf16(what, rin, got16, rexp, NR, EXTRA, dst16);
        snprintf(what, sizeof what, "%s convert bf16->f32 all 65536 patterns", short_name(be));
        run_convert(be, KVZ_F32, KVZ_BF16, all16, N16, dst32, EXTRA, got32, what);
        {
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < N16; i++) {
                int ok = bf16_nan(all16[i]) ? f32_bits_nan(got32[i]) : got32[i] == exp32[i];
                if (!ok && !bad++)
                    first = i;
            }
            KVZ_CHECK(bad == 0, "%s: %zu differ; first 0x%04x -> got 0x%08x expected 0x%08x",
                      what, bad, all16[first], got32[first], exp32[first]);
            KVZ_CHECK(memcmp(got32 + N16, dst32 + N16, EXTRA * 4) == 0,
                      "%s: dst past the source written", what);
        }
        /* same dtype: a copy, bit for bit (NaN patterns included) */
        snprintf(what, sizeof what, "%s convert f32->f32", short_name(be));
        {
            uint32_t *g = malloc(NR * sizeof *g);
            run_convert(be, KVZ_F32, KVZ_F32, rin, NR, NULL, 0, g, what);
            check_bits(what, g, rin, NR, 4);
            free(g);
        }
        snprintf(what, sizeof what, "%s convert bf16->bf16", short_name(be));
        run_convert(be, KVZ_BF16, KVZ_BF16, all16, N16, NULL, 0, got16, what);
        check_bits(what, got16, all16, N16, 2);
    }
    free(rin), free(rexp), free(got16), free(dst16), free(all16), free(exp32), free(got32),
        free(dst32);
}

/* ================= fill (exact) ================= */

/* splitmix64, written out (Steele, Lea, Flood 2014; Vigna's reference code). */
static uint64_t ref_splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Element i of a fill: key = splitmix64(seed ^ splitmix64(tensor)); u = the
 * top 24 bits of splitmix64(key + i) / 2^24; (2u - 1) * bound (exact in
 * double, then rounded once to float, as the float expression is), or value
 * when bound is 0. */
static float ref_fill(uint64_t seed, uint64_t tensor, size_t i, float bound, float value)
{
    if (bound == 0.0f)
        return value;
    uint64_t key = ref_splitmix64(seed ^ ref_splitmix64(tensor));
    double u = (double)(ref_splitmix64(key + i) >> 40) / 16777216.0;
    return (float)((2.0 * u - 1.0) * (double)bound);
}

typedef struct fill_case {
    size_t n, view_off; /* fill the view from view_off on */
    uint64_t seed, tensor;
    float bound, value;
} fill_case;

static void test_fill(const fill_case *c)
{
    float *ref = malloc(c->n * sizeof *ref), *got = malloc(c->n * sizeof *got);
    float *init = rand_array(c->n, 1.0f);
    uint16_t *ref16 = malloc(c->n * sizeof *ref16), *got16 = malloc(c->n * sizeof *got16);
    uint16_t *init16 = malloc(c->n * sizeof *init16);
    for (size_t i = 0; i < c->n; i++) {
        init16[i] = ref_bf16(f32_bits(init[i]));
        ref[i] = i < c->view_off ? init[i] : ref_fill(c->seed, c->tensor, i - c->view_off,
                                                      c->bound, c->value);
        ref16[i] = i < c->view_off ? init16[i] : ref_bf16(f32_bits(ref[i]));
    }
    kvz_backend *all[5] = {g_cpu};
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    for (int b = 0; b <= g_n_other; b++)
        for (int d = 0; d < 2; d++) {
            kvz_backend *be = all[b];
            kvz_dtype dt = d ? KVZ_BF16 : KVZ_F32;
            char what[200], lab[260];
            snprintf(what, sizeof what,
                     "%s fill %s n=%zu from %zu seed=%llu tensor=%llu bound=%g value=%g",
                     short_name(be), d ? "bf16" : "f32", c->n, c->view_off,
                     (unsigned long long)c->seed, (unsigned long long)c->tensor,
                     (double)c->bound, (double)c->value);
            gbuf g;
            gb_make(be, dt, c->n, d ? (const void *)init16 : (const void *)init, "b", &g);
            kvz_error err = {0};
            int rc = kvz_op_fill(be, kvz_buf_at(g.buf, c->view_off), c->seed, c->tensor, c->bound,
                                 c->value, &err);
            op_ok(be, rc, &err, what);
            snprintf(lab, sizeof lab, "%s: b", what);
            gb_finish(be, &g, d ? (void *)got16 : (void *)got, NULL, lab);
            if (d)
                check_bits(what, got16, ref16, c->n, 2);
            else
                check_bits(what, got, ref, c->n, 4);
        }
    free(ref), free(got), free(init), free(ref16), free(got16), free(init16);
}

static void test_splitmix(void)
{
    /* the published first outputs of SplitMix64 from state 0 */
    static const uint64_t pub[3] = {0xe220a8397b1dcdafull, 0x6e789e6aa1b965f4ull,
                                    0x06c45d188009454full};
    for (uint64_t i = 0; i < 3; i++) {
        uint64_t st = i * 0x9e3779b97f4a7c15ull;
        KVZ_CHECK(ref_splitmix64(st) == pub[i], "ref splitmix64 output %llu",
                  (unsigned long long)i);
        KVZ_CHECK(kvz_splitmix64(st) == pub[i], "kvz_splitmix64 output %llu: 0x%016llx",
                  (unsigned long long)i, (unsigned long long)kvz_splitmix64(st));
    }
    KVZ_CHECK(kvz_fill_key(7, 3) == ref_splitmix64(7 ^ ref_splitmix64(3)), "kvz_fill_key");
    /* the header's host bf16 helpers follow the rule too */
    for (size_t i = 0; i < 20000; i++) {
        uint32_t u = (uint32_t)(rand_u64() >> 32);
        if (i & 1)
            u = (u & 0xffff0000u) | 0x8000u;
        uint16_t h = kvz_f32_to_bf16(bits_f32(u));
        int ok = f32_bits_nan(u) ? bf16_nan(h) : h == ref_bf16(u);
        if (!ok) {
            KVZ_CHECK(0, "kvz_f32_to_bf16(0x%08x) = 0x%04x, expected 0x%04x", u, h, ref_bf16(u));
            break;
        }
    }
}

/* ================= argument errors ================= */

static void expect_err(kvz_backend *be, int rc, int want, const kvz_error *err,
                       const char *needle, const char *what)
{
    KVZ_CHECK(rc == want, "%s %s: rc %d, expected %d (%s)", short_name(be), what, rc, want,
              err->msg);
    KVZ_CHECK(strstr(err->msg, needle) != NULL, "%s %s: message '%s' lacks '%s'",
              short_name(be), what, err->msg, needle);
}

static void test_errors(kvz_backend *be)
{
    kvz_error err = {0};
    kvz_buf w, t, x, b16, f16;
    int ok = kvz_backend_alloc(be, KVZ_F32, 64, "w", &w, &err) == KVZ_OK;
    ok &= kvz_backend_alloc(be, KVZ_F32, 4 * 8, "table", &t, &err) == KVZ_OK;
    ok &= kvz_backend_alloc(be, KVZ_F32, 64, "x", &x, &err) == KVZ_OK;
    ok &= kvz_backend_alloc(be, KVZ_BF16, 64, "b16", &b16, &err) == KVZ_OK;
    ok &= kvz_backend_alloc(be, KVZ_F16, 64, "f16", &f16, &err) == KVZ_OK;
    KVZ_CHECK(ok, "%s: alloc for the error cases: %s", short_name(be), err.msg);
    if (!ok)
        return;
    float *xp = kvz_buf_f32(x), *wp = kvz_buf_f32(w);
    int rc;

    kvz_error_clear(&err);
    rc = kvz_op_linear(be, NULL, w, NULL, xp, 2, 4, 4, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "linear", "linear with NULL x");
    kvz_error_clear(&err);
    rc = kvz_op_linear(be, xp, w, NULL, NULL, 2, 4, 4, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "linear", "linear with NULL y");
    kvz_error_clear(&err);
    rc = kvz_op_linear(be, xp, w, NULL, xp, 1, 16, 8, &err); /* W holds 64 < 128 */
    expect_err(be, rc, KVZ_EINVAL, &err, "linear", "linear with W too small");
    kvz_error_clear(&err);
    rc = kvz_op_rmsnorm(be, xp, NULL, xp, 2, 8, 1e-6f, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "rmsnorm", "rmsnorm with NULL w");
    kvz_error_clear(&err);
    rc = kvz_op_rope(be, xp, 1, 1, 7, 0, wp, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "rope", "rope with an odd head_dim");
    kvz_error_clear(&err);
    kvz_attn_args a = {xp, xp, xp, wp, 1, 0, 3, 2, 4, 0, 0.5f, NULL};
    rc = kvz_op_attention(be, &a, KVZ_F32, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "attention", "attention with 3 heads over 2 kv heads");
    kvz_error_clear(&err);
    a.n_kv_heads = 1, a.v = NULL;
    rc = kvz_op_attention(be, &a, KVZ_F32, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "attention", "attention with NULL v");
    kvz_error_clear(&err);
    rc = kvz_op_swiglu(be, NULL, xp, 1, 4, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "swiglu", "swiglu with NULL gate_up");
    kvz_error_clear(&err);
    rc = kvz_op_add(be, xp, NULL, 4, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "add", "add with NULL d");
    int32_t ids[3] = {0, 4, 1}; /* the table has 4 rows of 8 */
    kvz_error_clear(&err);
    rc = kvz_op_embed(be, t, 8, ids, 3, xp, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "embed", "embed with id 4 of 4 rows");
    KVZ_CHECK(strstr(err.msg, "outside the table") != NULL, "embed message: %s", err.msg);
    ids[1] = -1;
    kvz_error_clear(&err);
    rc = kvz_op_embed(be, t, 8, ids, 3, xp, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "embed", "embed with id -1");
    kvz_error_clear(&err);
    rc = kvz_op_embed(be, f16, 8, (int32_t[]){0}, 1, xp, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "embed", "embed of a float16 table");
    kvz_error_clear(&err);
    rc = kvz_op_copy_rows(be, xp, 4, wp, 8, 2, 5, &err); /* dst stride < width */
    expect_err(be, rc, KVZ_EINVAL, &err, "copy_rows", "copy_rows with dst stride < width");
    kvz_error_clear(&err);
    kvz_buf small = b16;
    small.numel = 10;
    rc = kvz_op_convert(be, small, x, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "convert", "convert into a too small dst");
    kvz_error_clear(&err);
    kvz_buf as_int = f16; /* not a float dtype: refused before any access */
    as_int.dtype = KVZ_I32, as_int.numel /= 2;
    rc = kvz_op_convert(be, as_int, x, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "convert", "convert to int32");
    kvz_error_clear(&err);
    rc = kvz_op_fill(be, f16, 1, 2, 0.1f, 0.0f, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "fill", "fill of a float16 buffer");
    /* empty ops: KVZ_OK without touching anything */
    kvz_error_clear(&err);
    rc = kvz_op_linear(be, NULL, w, NULL, NULL, 0, 4, 4, &err);
    KVZ_CHECK(rc == KVZ_OK, "%s: linear with n=0: rc %d (%s)", short_name(be), rc, err.msg);
    rc = kvz_op_add(be, NULL, NULL, 0, &err);
    KVZ_CHECK(rc == KVZ_OK, "%s: add with count 0: rc %d (%s)", short_name(be), rc, err.msg);
    a.v = xp, a.n_q = 0;
    rc = kvz_op_attention(be, &a, KVZ_F32, &err);
    KVZ_CHECK(rc == KVZ_OK, "%s: attention with n_q=0: rc %d (%s)", short_name(be), rc, err.msg);
    kvz_backend_free(be, &w), kvz_backend_free(be, &t), kvz_backend_free(be, &x);
    kvz_backend_free(be, &b16), kvz_backend_free(be, &f16);
    KVZ_CHECK(w.data == NULL && w.numel == 0, "kvz_backend_free clears the buf");
}

static void test_open_errors(void)
{
    kvz_error err = {0};
    kvz_backend *be = (kvz_backend *)&err; /* must become NULL */
    kvz_backend_options o = {(kvz_backend_kind)7, 0, 0};
    int rc = kvz_backend_open(&o, &be, &err);
    KVZ_CHECK(rc == KVZ_EINVAL && be == NULL, "open of kind 7: rc %d (%s)", rc, err.msg);
    KVZ_CHECK(kvz_backend_compiled(KVZ_BACKEND_CPU), "cpu is always compiled");
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA)) {
        kvz_error_clear(&err);
        o.kind = KVZ_BACKEND_CUDA;
        rc = kvz_backend_open(&o, &be, &err);
        KVZ_CHECK(rc == KVZ_EUNSUPPORTED && be == NULL, "open cuda without CUDA: rc %d (%s)", rc,
                  err.msg);
        KVZ_CHECK(strstr(err.msg, "built without CUDA") != NULL, "message '%s'", err.msg);
        KVZ_CHECK(!kvz_backend_compiled(KVZ_BACKEND_CUDA), "kvz_backend_compiled(KVZ_BACKEND_CUDA) disagrees with the registry");
    }
    KVZ_CHECK(kvz_dtype_size(KVZ_F32) == 4 && kvz_dtype_size(KVZ_BF16) == 2 &&
                  kvz_dtype_size(KVZ_F16) == 2,
              "dtype sizes");
    KVZ_CHECK(strcmp(kvz_dtype_name(KVZ_BF16), "bfloat16") == 0, "dtype name");
    float arr[10];
    kvz_buf b = {arr, KVZ_F32, 10}, v = kvz_buf_at(b, 3), e = kvz_buf_at(b, 12);
    KVZ_CHECK(v.data == arr + 3 && v.numel == 7 && kvz_buf_f32(v) == arr + 3, "kvz_buf_at");
    KVZ_CHECK(e.numel == 0, "kvz_buf_at past the end: numel %zu", e.numel);
    b.dtype = KVZ_BF16;
    KVZ_CHECK(kvz_buf_f32(b) == NULL, "kvz_buf_f32 of a bf16 buffer");
}

/* ================= the cases ================= */

/* ---------- float16 conversions ---------- */

/* f16 bits of x by the compiler's own conversion (_Float16: IEEE binary16,
 * round to nearest even on x86-64), the reference for kvz_f32_to_f16. */
#ifdef __FLT16_MAX__
static uint16_t ref_f16(uint32_t u)
{
    _Float16 h = (_Float16)bits_f32(u);
    uint16_t b;
    memcpy(&b, &h, sizeof b);
    return b;
}

static uint32_t ref_f16_widen(uint16_t b)
{
    _Float16 h;
    memcpy(&h, &b, sizeof h);
    return f32_bits((float)h);
}
#endif

static int f16_nan(uint16_t b)
{
    return (b & 0x7c00u) == 0x7c00u && (b & 0x03ffu) != 0;
}

static void test_convert_f16(void)
{
#ifndef __FLT16_MAX__
    printf("SKIP float16 conversions: this compiler has no _Float16 to check against\n");
#else
    /* f32 -> f16: hand-picked edges, then random patterns biased to the f16 range */
    static const uint32_t hand[] = {
        0x3f800000u, 0x477fe000u /* 65504 */, 0x477fefffu /* just below 65520: 65504 */,
        0x477ff000u /* 65520: inf */, 0x38800000u /* 2^-14 */, 0x38000000u /* 2^-15 */,
        0x33800000u /* 2^-24 */, 0x33000000u /* 2^-25: ties to 0 */, 0x33000001u /* up */,
        0x33c00000u /* 1.5 x 2^-24: ties to even 2^-23 */, 0x387fe000u /* largest subnormal */,
        0x387ff000u /* rounds up to 2^-14 */, 0x3f801000u /* halfway, even: down */,
        0x3f803000u /* halfway, odd: up */, 0x80000000u, 0x7f800000u, 0xff800000u,
        0x7fc00000u, 0x7f800001u, 0xffffffffu, 0x7f7fffffu, 0x00000001u,
    };
    enum { NH = sizeof hand / sizeof hand[0], NR = 100003, N16 = 65536, EXTRA = 3 };
    uint32_t *in = malloc((NH + NR) * sizeof *in), *got32 = malloc((N16 + EXTRA) * 4);
    uint16_t *got16 = malloc((NH + NR + EXTRA) * 2), *all16 = malloc(N16 * 2);
    uint16_t *back = malloc(N16 * 2), *dst16 = malloc((NH + NR + EXTRA) * 2);
    uint32_t *dst32 = malloc((N16 + EXTRA) * 4);
    memcpy(in, hand, sizeof hand);
    for (size_t i = 0; i < NR; i++) {
        uint32_t u = (uint32_t)(rand_u64() >> 32);
        if (i % 2) /* exponents near the f16 range, many halfway cases */
            u = (u & 0x807fffffu) | ((uint32_t)(100 + i % 45) << 23);
        if (i % 5 == 0)
            u = (u & 0xffffe000u) | 0x1000u;
        in[NH + i] = u;
    }
    for (size_t i = 0; i < NH + NR + EXTRA; i++)
        dst16[i] = (uint16_t)(0x5a5a + i);
    for (size_t i = 0; i < N16; i++)
        all16[i] = (uint16_t)i;
    for (size_t i = 0; i < N16 + EXTRA; i++)
        dst32[i] = 0x3f800000u + (uint32_t)i;
    kvz_backend *all[5] = {g_cpu};
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    for (int b = 0; b <= g_n_other; b++) {
        kvz_backend *be = all[b];
        char what[160];
        snprintf(what, sizeof what, "%s convert f32->f16 (%d patterns)", short_name(be),
                 (int)(NH + NR));
        run_convert(be, KVZ_F16, KVZ_F32, in, NH + NR, dst16, EXTRA, got16, what);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < NH + NR; i++) {
            int ok = f32_bits_nan(in[i]) ? f16_nan(got16[i]) && (got16[i] & 0x0200u) &&
                                               (got16[i] & 0x8000u) == (in[i] >> 16 & 0x8000u)
                                         : got16[i] == ref_f16(in[i]);
            if (!ok && !bad++)
                first = i;
        }
        KVZ_CHECK(bad == 0, "%s: %zu differ; first 0x%08x -> got 0x%04x expected 0x%04x", what,
                  bad, in[first], got16[first], ref_f16(in[first]));
        KVZ_CHECK(memcmp(got16 + NH + NR, dst16 + NH + NR, EXTRA * 2) == 0,
                  "%s: dst past the source written", what);
        snprintf(what, sizeof what, "%s convert f16->f32 all 65536 patterns", short_name(be));
        run_convert(be, KVZ_F32, KVZ_F16, all16, N16, dst32, EXTRA, got32, what);
        bad = 0;
        for (size_t i = 0; i < N16; i++) {
            int ok = f16_nan(all16[i]) ? f32_bits_nan(got32[i]) : got32[i] == ref_f16_widen(all16[i]);
            if (!ok && !bad++)
                first = i;
        }
        KVZ_CHECK(bad == 0, "%s: %zu differ; first 0x%04x -> got 0x%08x expected 0x%08x", what,
                  bad, all16[first], got32[first], ref_f16_widen(all16[first]));
        snprintf(what, sizeof what, "%s convert f16->bf16->f16 round trip", short_name(be));
        run_convert(be, KVZ_BF16, KVZ_F16, all16, N16, NULL, 0, got16, what);
        run_convert(be, KVZ_F16, KVZ_BF16, got16, N16, NULL, 0, back, what);
        bad = 0;
        for (size_t i = 0; i < N16; i++) { /* bf16 holds 8 bits: exact up to that */
            float x = bits_f32(ref_f16_widen(all16[i]));
            uint16_t want = ref_f16(f32_bits(ref_widen(ref_bf16(f32_bits(x)))));
            int ok = f16_nan(all16[i]) ? f16_nan(back[i]) : back[i] == want;
            if (!ok && !bad++)
                first = i;
        }
        KVZ_CHECK(bad == 0, "%s: %zu differ; first 0x%04x -> 0x%04x", what, bad, all16[first],
                  back[first]);
    }
    free(in), free(got32), free(got16), free(all16), free(back), free(dst16), free(dst32);
#endif
}

/* ---------- KVzip+ score ops ---------- */
/* The four phases of ops/backend.h's KVzip+ score and the row gather, on
 * random layer taps (x 1, q and k 1.5, v 1, w_o 0.2: logits of order 1):
 * the cpu backend against naive double re-derivations (all keys of the
 * causal row, W_O^g v_i as a double product), every other backend against
 * the cpu backend with each phase fed the cpu's results of the earlier
 * ones. Log-domain values compare by absolute error (equal infinities are
 * equal); budgets below, worst seen in brackets (cuda: the emulator). */
#define ATOL_CPU_ROWNORM 1e-12   /* double sums [0] */
#define ATOL_CPU_LOGNORM 1e-5    /* fp32 products W v, double norms [1.3e-7] */
#define ATOL_CPU_LSE 1e-5        /* fp32 logits, double sums [2.4e-7] */
#define ATOL_CPU_BEST 1e-4       /* fp32 logits; out fp32 [9.7e-7] */
#define ATOL_BE_ROWNORM 1e-9     /* another reduction order [0] */
#define ATOL_BE_LOGNORM 1e-4     /* cuda: through fp32 Gram matrices [1.6e-7] */
#define ATOL_BE_LSE 1e-5         /* [2.1e-7] */
#define ATOL_BE_BEST 1e-4        /* [1.2e-6] */
#define ATOL_BE_BEST_BF16 2e-2   /* bf16 q and k (tensor cores; test_gpu_score.c) [5.5e-3] */

typedef struct score_case {
    size_t T, H, Hkv, dh, D, p0, p1, r0, r1;
    int zero_v; /* the value vector of key p0 + 1, KV head 0, is zero: -inf */
} score_case;

/* |got - ref| <= atol elementwise; infinities must match exactly. */
static void check_abs(const char *stat_name, const char *what, const double *got,
                      const double *ref, size_t n, double atol)
{
    double worst = 0.0;
    size_t wi = 0, bad_inf = 0, nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) {
            nan++;
            continue;
        }
        if (isinf(got[i]) || isinf(ref[i])) {
            bad_inf += got[i] != ref[i];
            continue;
        }
        double d = fabs(got[i] - ref[i]);
        if (d > worst)
            worst = d, wi = i;
    }
    record(stat_name, atol, nan || bad_inf ? NAN : worst);
    if (g_verbose)
        printf("  %-44s %9.3g  %s\n", stat_name, worst, what);
    KVZ_CHECK(nan == 0 && bad_inf == 0, "%s: %zu NaN, %zu infinities that differ", what, nan,
              bad_inf);
    KVZ_CHECK(worst <= atol, "%s: worst |diff| %.3g > %.0e at [%zu]: got %.12g expected %.12g",
              what, worst, atol, wi, n ? got[wi] : 0.0, n ? ref[wi] : 0.0);
}

static void check_abs_f32(const char *stat_name, const char *what, const float *got,
                          const double *ref, size_t n, double atol)
{
    double *g = widen_array(got, n);
    check_abs(stat_name, what, g, ref, n, atol);
    free(g);
}

/* The tap's inputs of one case. */
typedef struct score_in {
    float *x, *q, *k, *v, *w_o, *tap_lse;
    size_t nx, nq, nkv, nw;
    float scale;
} score_in;

static void score_in_make(const score_case *c, score_in *in)
{
    in->nx = c->T * c->D, in->nq = c->T * c->H * c->dh, in->nkv = c->T * c->Hkv * c->dh;
    in->nw = c->D * c->H * c->dh;
    in->x = rand_array(in->nx, 1.0f), in->q = rand_array(in->nq, 1.5f);
    in->k = rand_array(in->nkv, 1.5f), in->v = rand_array(in->nkv, 1.0f);
    in->w_o = rand_array(in->nw, 0.2f);
    if (c->zero_v)
        memset(in->v + (c->p0 + 1) * c->Hkv * c->dh, 0, c->dh * sizeof(float));
    in->scale = (float)(1.0 / sqrt((double)c->dh));
    in->tap_lse = malloc(c->T * c->H * sizeof(float)); /* filled from the naive lse */
}

static void score_in_free(score_in *in)
{
    free(in->x), free(in->q), free(in->k), free(in->v), free(in->w_o), free(in->tap_lse);
}

/* Naive phases in double. lse_all [H, T] (every query row, for tap_lse). */
static void score_naive(const score_case *c, const score_in *in, double *rown, double *lognorm,
                        double *lse, double *lse_all, double *best)
{
    size_t H = c->H, G = c->H / c->Hkv, dh = c->dh, D = c->D, nP = c->p1 - c->p0;
    size_t nR = c->r1 - c->r0;
    for (size_t j = 0; j < nR; j++) {
        double s = 0;
        for (size_t d = 0; d < D; d++)
            s += (double)in->x[(c->r0 + j) * D + d] * in->x[(c->r0 + j) * D + d];
        rown[j] = 0.5 * log(s);
    }
    for (size_t g = 0; g < H; g++) {
        size_t h = g / G;
        for (size_t i = 0; i < nP; i++) {
            const float *vi = in->v + ((c->p0 + i) * c->Hkv + h) * dh;
            double ss = 0;
            for (size_t r = 0; r < D; r++) {
                double y = 0;
                for (size_t e = 0; e < dh; e++)
                    y += (double)in->w_o[r * H * dh + g * dh + e] * vi[e];
                ss += y * y;
            }
            lognorm[g * nP + i] = 0.5 * log(ss);
        }
        for (size_t j = 0; j < c->T; j++) {
            double m = -INFINITY, l = 0;
            const float *qj = in->q + (j * H + g) * dh;
            double *logit = malloc((j + 1) * sizeof *logit);
            for (size_t i = 0; i <= j; i++) {
                const float *ki = in->k + (i * c->Hkv + h) * dh;
                double s = 0;
                for (size_t e = 0; e < dh; e++)
                    s += (double)qj[e] * ki[e];
                logit[i] = s * in->scale;
                m = logit[i] > m ? logit[i] : m;
            }
            for (size_t i = 0; i <= j; i++)
                l += exp(logit[i] - m);
            free(logit);
            lse_all[g * c->T + j] = m + log(l);
            if (j >= c->r0 && j < c->r1)
                lse[g * nR + (j - c->r0)] = lse_all[g * c->T + j];
        }
    }
    for (size_t i = 0; i < nP; i++)
        for (size_t h = 0; h < c->Hkv; h++) {
            double b = -INFINITY;
            const float *ki = in->k + ((c->p0 + i) * c->Hkv + h) * dh;
            for (size_t g = h * G; g < (h + 1) * G; g++)
                for (size_t j = 0; j < nR; j++) {
                    const float *qj = in->q + ((c->r0 + j) * H + g) * dh;
                    double s = 0;
                    for (size_t e = 0; e < dh; e++)
                        s += (double)qj[e] * ki[e];
                    double y = s * in->scale - lse[g * nR + j] - rown[j] + lognorm[g * nP + i];
                    b = y > b ? y : b;
                }
            best[i * c->Hkv + h] = b;
        }
}

/* Results of the phases on one backend. */
typedef struct score_out {
    double *rown, *lognorm, *lse, *lse_tap;
    float *best, *best_bf16;
} score_out;

static void score_out_alloc(const score_case *c, score_out *o)
{
    size_t nP = c->p1 - c->p0, nR = c->r1 - c->r0;
    o->rown = malloc(nR * sizeof *o->rown);
    o->lognorm = malloc(c->H * nP * sizeof *o->lognorm);
    o->lse = malloc(c->H * nR * sizeof *o->lse);
    o->lse_tap = malloc(c->H * nR * sizeof *o->lse_tap);
    o->best = malloc(nP * c->Hkv * sizeof *o->best);
    o->best_bf16 = malloc(nP * c->Hkv * sizeof *o->best_bf16);
}

static void score_out_free(score_out *o)
{
    free(o->rown), free(o->lognorm), free(o->lse), free(o->lse_tap), free(o->best);
    free(o->best_bf16);
}

/* Every phase on be; best is fed `feed` (the cpu's phases 1-3). */
static void score_run(kvz_backend *be, const score_case *c, const score_in *in,
                      const score_out *feed, score_out *o, const char *what)
{
    size_t nP = c->p1 - c->p0, nR = c->r1 - c->r0, H = c->H, Hkv = c->Hkv;
    gbuf gx, gq, gk, gv, gw, gl, grn, gln, glse, glt, gf[3], gbest, gbb;
    gb_make(be, KVZ_F32, in->nx, in->x, "x", &gx);
    gb_make(be, KVZ_F32, in->nq, in->q, "q", &gq);
    gb_make(be, KVZ_F32, in->nkv, in->k, "k", &gk);
    gb_make(be, KVZ_F32, in->nkv, in->v, "v", &gv);
    gb_make(be, KVZ_F32, in->nw, in->w_o, "w_o", &gw);
    gb_make(be, KVZ_F32, c->T * H, in->tap_lse, "tap lse", &gl);
    gb_make(be, KVZ_F64, nR, NULL, "row lognorms", &grn);
    gb_make(be, KVZ_F64, H * nP, NULL, "value lognorms", &gln);
    gb_make(be, KVZ_F64, H * nR, NULL, "lse", &glse);
    gb_make(be, KVZ_F64, H * nR, NULL, "lse from the tap", &glt);
    gb_make(be, KVZ_F64, H * nR, feed ? feed->lse : NULL, "fed lse", &gf[0]);
    gb_make(be, KVZ_F64, nR, feed ? feed->rown : NULL, "fed row lognorms", &gf[1]);
    gb_make(be, KVZ_F64, H * nP, feed ? feed->lognorm : NULL, "fed value lognorms", &gf[2]);
    gb_make(be, KVZ_F32, nP * Hkv, NULL, "best", &gbest);
    gb_make(be, KVZ_F32, nP * Hkv, NULL, "best bf16", &gbb);
    kvz_error err = {0};
    char lab[300];
    snprintf(lab, sizeof lab, "%s: row lognorms", what);
    op_ok(be, kvz_op_row_lognorms(be, f32p(&gx) + c->r0 * c->D, c->D, c->D, nR, grn.buf.data,
                                  &err), &err, lab);
    snprintf(lab, sizeof lab, "%s: value lognorms", what);
    op_ok(be, kvz_op_value_lognorms(be, f32p(&gv), f32p(&gw), H, Hkv, c->dh, c->D, c->p0, c->p1,
                                    gln.buf.data, &err), &err, lab);
    snprintf(lab, sizeof lab, "%s: causal lse", what);
    op_ok(be, kvz_op_causal_lse(be, f32p(&gq), f32p(&gk), NULL, H, Hkv, c->dh, in->scale, c->r0,
                                c->r1, glse.buf.data, &err), &err, lab);
    snprintf(lab, sizeof lab, "%s: lse from the tap", what);
    op_ok(be, kvz_op_causal_lse(be, f32p(&gq), f32p(&gk), f32p(&gl), H, Hkv, c->dh, in->scale,
                                c->r0, c->r1, glt.buf.data, &err), &err, lab);
    const gbuf *src_lse = feed ? &gf[0] : &glse, *src_rn = feed ? &gf[1] : &grn;
    const gbuf *src_ln = feed ? &gf[2] : &gln;
    snprintf(lab, sizeof lab, "%s: kvzip best f32", what);
    op_ok(be, kvz_op_kvzip_best(be, f32p(&gq), f32p(&gk), H, Hkv, c->dh, in->scale, c->p0, c->p1,
                                c->r0, c->r1, src_lse->buf.data, src_rn->buf.data,
                                src_ln->buf.data, KVZ_F32, f32p(&gbest), &err), &err, lab);
    snprintf(lab, sizeof lab, "%s: kvzip best bf16", what);
    op_ok(be, kvz_op_kvzip_best(be, f32p(&gq), f32p(&gk), H, Hkv, c->dh, in->scale, c->p0, c->p1,
                                c->r0, c->r1, src_lse->buf.data, src_rn->buf.data,
                                src_ln->buf.data, KVZ_BF16, f32p(&gbb), &err), &err, lab);
    gb_finish(be, &grn, o->rown, NULL, "row lognorms");
    gb_finish(be, &gln, o->lognorm, NULL, "value lognorms");
    gb_finish(be, &glse, o->lse, NULL, "lse");
    gb_finish(be, &glt, o->lse_tap, NULL, "lse from the tap");
    gb_finish(be, &gbest, o->best, NULL, "best");
    gb_finish(be, &gbb, o->best_bf16, NULL, "best bf16");
    gb_finish(be, &gf[0], NULL, feed ? feed->lse : NULL, "fed lse");
    gb_finish(be, &gf[1], NULL, feed ? feed->rown : NULL, "fed row lognorms");
    gb_finish(be, &gf[2], NULL, feed ? feed->lognorm : NULL, "fed value lognorms");
    gb_finish(be, &gx, NULL, in->x, "x");
    gb_finish(be, &gq, NULL, in->q, "q");
    gb_finish(be, &gk, NULL, in->k, "k");
    gb_finish(be, &gv, NULL, in->v, "v");
    gb_finish(be, &gw, NULL, in->w_o, "w_o");
    gb_finish(be, &gl, NULL, in->tap_lse, "tap lse");
}

static int score_emu_ok(const score_case *c)
{
    double work = (double)(c->p1 - c->p0) * (double)(c->r1 - c->r0) * (double)c->H *
                  (double)c->dh;
    return work <= ATTN_EMU_MAX_WORK;
}

static void test_score_case(const score_case *c)
{
    size_t nP = c->p1 - c->p0, nR = c->r1 - c->r0, H = c->H;
    score_in in;
    score_in_make(c, &in);
    double *rown = malloc(nR * sizeof *rown), *lognorm = malloc(H * nP * sizeof *lognorm);
    double *lse = malloc(H * nR * sizeof *lse), *lse_all = malloc(H * c->T * sizeof *lse_all);
    double *best = malloc(nP * c->Hkv * sizeof *best);
    score_naive(c, &in, rown, lognorm, lse, lse_all, best);
    for (size_t j = 0; j < c->T; j++) /* the tap's [T, H] fp32 lse */
        for (size_t g = 0; g < H; g++)
            in.tap_lse[j * H + g] = (float)lse_all[g * c->T + j];
    double *lse_tap_ref = malloc(H * nR * sizeof *lse_tap_ref);
    for (size_t g = 0; g < H; g++)
        for (size_t j = 0; j < nR; j++)
            lse_tap_ref[g * nR + j] = (double)in.tap_lse[(c->r0 + j) * H + g];
    char what[200], wl[240], st[96];
    snprintf(what, sizeof what, "score T%zu H%zu/%zu dh%zu D%zu P[%zu,%zu) R[%zu,%zu)%s", c->T,
             H, c->Hkv, c->dh, c->D, c->p0, c->p1, c->r0, c->r1, c->zero_v ? " zero v" : "");
    score_out cpu, got;
    score_out_alloc(c, &cpu);
    score_out_alloc(c, &got);
    snprintf(wl, sizeof wl, "cpu %s", what);
    score_run(g_cpu, c, &in, NULL, &cpu, wl);
    check_abs("row lognorms f64: cpu vs naive", wl, cpu.rown, rown, nR, ATOL_CPU_ROWNORM);
    check_abs("value lognorms f64: cpu vs naive", wl, cpu.lognorm, lognorm, H * nP,
              ATOL_CPU_LOGNORM);
    check_abs("causal lse f64: cpu vs naive", wl, cpu.lse, lse, H * nR, ATOL_CPU_LSE);
    check_abs("causal lse from the tap: cpu (exact)", wl, cpu.lse_tap, lse_tap_ref, H * nR, 0.0);
    check_abs_f32("kvzip best f32: cpu vs naive", wl, cpu.best, best, nP * c->Hkv,
                  ATOL_CPU_BEST);
    check_bits("kvzip best: cpu bf16 compute = f32", cpu.best_bf16, cpu.best, nP * c->Hkv, 4);
    if (c->zero_v)
        KVZ_CHECK(isinf(cpu.best[c->Hkv]) && cpu.best[c->Hkv] < 0, "%s: zero v is not -inf", wl);
    for (int b = 0; b < g_n_other; b++) {
        kvz_backend *be = g_other[b];
        if (emulated(be) && !score_emu_ok(c))
            continue;
        const char *bn = short_name(be);
        snprintf(wl, sizeof wl, "%s %s", bn, what);
        score_run(be, c, &in, &cpu, &got, wl);
        double *cpu_best = widen_array(cpu.best, nP * c->Hkv);
        snprintf(st, sizeof st, "row lognorms f64: %s vs cpu", bn);
        check_abs(st, wl, got.rown, cpu.rown, nR, ATOL_BE_ROWNORM);
        snprintf(st, sizeof st, "value lognorms f64: %s vs cpu", bn);
        check_abs(st, wl, got.lognorm, cpu.lognorm, H * nP, ATOL_BE_LOGNORM);
        snprintf(st, sizeof st, "causal lse f64: %s vs cpu", bn);
        check_abs(st, wl, got.lse, cpu.lse, H * nR, ATOL_BE_LSE);
        snprintf(st, sizeof st, "causal lse from the tap: %s (exact)", bn);
        check_abs(st, wl, got.lse_tap, lse_tap_ref, H * nR, 0.0);
        snprintf(st, sizeof st, "kvzip best f32: %s vs cpu", bn);
        check_abs_f32(st, wl, got.best, cpu_best, nP * c->Hkv, ATOL_BE_BEST);
        snprintf(st, sizeof st, "kvzip best bf16: %s vs cpu f32", bn);
        check_abs_f32(st, wl, got.best_bf16, cpu_best, nP * c->Hkv, ATOL_BE_BEST_BF16);
        free(cpu_best);
    }
    score_out_free(&cpu), score_out_free(&got);
    score_in_free(&in);
    free(rown), free(lognorm), free(lse), free(lse_all), free(best), free(lse_tap_ref);
}

/* gather rows: exact on every backend; the cpu refuses an index outside the source. */
static void test_gather(kvz_backend *be, size_t n_src, size_t ld, size_t width, size_t base,
                        size_t n)
{
    float *src = rand_array(n_src * ld, 1.0f);
    int64_t *idx = malloc(n * sizeof *idx);
    float *ref = malloc(n * width * sizeof *ref), *got = malloc(n * width * sizeof *got);
    for (size_t s = 0; s < n; s++) {
        idx[s] = (int64_t)(base + (s * 7919 + 3) % n_src);
        memcpy(ref + s * width, src + ((size_t)idx[s] - base) * ld, width * sizeof *ref);
    }
    char what[160];
    snprintf(what, sizeof what, "%s gather rows n_src=%zu ld=%zu width=%zu base=%zu n=%zu",
             short_name(be), n_src, ld, width, base, n);
    gbuf gs, gi, gd;
    gb_make(be, KVZ_F32, n_src * ld, src, "src", &gs);
    gb_make(be, KVZ_I64, n, idx, "idx", &gi);
    gb_make(be, KVZ_F32, n * width, NULL, "dst", &gd);
    kvz_error err = {0};
    op_ok(be, kvz_op_gather_rows(be, f32p(&gs), ld, width, base, n_src, gi.buf.data, n,
                                 f32p(&gd), &err), &err, what);
    gb_finish(be, &gd, got, NULL, what);
    gb_finish(be, &gs, NULL, src, what);
    gb_finish(be, &gi, NULL, idx, what);
    check_bits(what, got, ref, n * width, 4);
    if (kvz_backend_host_memory(be)) {
        int64_t bad = (int64_t)(base + n_src);
        int rc = kvz_op_gather_rows(be, src, ld, width, base, n_src, &bad, 1, got, &err);
        KVZ_CHECK(rc == KVZ_EINVAL && strstr(err.msg, "gather rows"), "%s: index past the end: "
                  "rc %d (%s)", what, rc, err.msg);
    }
    free(src), free(idx), free(ref), free(got);
}

/* download_async into host memory and the slot calls, on every backend. */
static void test_slots(kvz_backend *be)
{
    size_t n = 1000;
    float *src = rand_array(n, 1.0f);
    gbuf gs;
    gb_make(be, KVZ_F32, n, src, "src", &gs);
    float *host[2] = {kvz_backend_host_alloc(be, n * sizeof(float)),
                      kvz_backend_host_alloc(be, n * sizeof(float))};
    kvz_error err = {0};
    KVZ_CHECK(host[0] && host[1], "%s: host_alloc", short_name(be));
    for (size_t slot = 0; host[0] && host[1] && slot < 2; slot++) {
        int rc = kvz_backend_slot_fence(be, slot, &err);
        rc = rc ? rc : kvz_backend_download_async(be, slot, host[slot], f32p(&gs),
                                                  n * sizeof(float), &err);
        rc = rc ? rc : kvz_backend_slot_record(be, slot, &err);
        rc = rc ? rc : kvz_backend_slot_wait(be, slot, &err);
        KVZ_CHECK(rc == KVZ_OK, "%s: slot %zu: %s", short_name(be), slot, err.msg);
        if (rc == KVZ_OK)
            check_bits("download_async", host[slot], src, n, 4);
    }
    KVZ_CHECK(kvz_backend_slot_wait(be, KVZ_BACKEND_SLOTS, &err) == KVZ_EINVAL,
              "%s: slot %d accepted", short_name(be), KVZ_BACKEND_SLOTS);
    kvz_backend_host_free(be, host[0]);
    kvz_backend_host_free(be, host[1]);
    gb_finish(be, &gs, NULL, src, "slots src");
    free(src);
}

static void test_score_ops(void)
{
    /* T, H, Hkv, dh, D, p0, p1, r0, r1, zero v */
    static const score_case sc[] = {
        {77, 6, 3, 40, 72, 3, 41, 45, 77, 0},    /* G 2, sizes that split every tile */
        {100, 5, 1, 24, 37, 0, 64, 64, 100, 1},  /* G 5, P of two whole tiles, zero v */
        {130, 4, 4, 72, 50, 10, 75, 75, 130, 0}, /* MHA, head_dim 72 */
        {50, 2, 1, 200, 64, 1, 20, 20, 50, 0},   /* head_dim 200: > 48 KiB shared memory */
        {3, 2, 1, 64, 16, 0, 1, 1, 3, 0},        /* one context key */
        {40, 14, 2, 64, 96, 2, 17, 19, 40, 1},   /* G 7 */
        {70, 4, 2, 128, 64, 5, 30, 33, 70, 0},   {60, 2, 2, 256, 32, 0, 25, 26, 60, 0},
        {50, 4, 2, 80, 40, 4, 20, 22, 50, 0},
        {600, 2, 1, 64, 48, 10, 290, 300, 580, 0}, /* several cpu key/query blocks, slices */
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++)
        test_score_case(&sc[i]);
    kvz_backend *all[5] = {g_cpu};
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    for (int b = 0; b <= g_n_other; b++) {
        test_gather(all[b], 37, 5, 5, 11, 13);
        test_gather(all[b], 300, 576, 576, 0, 1);
        test_gather(all[b], 9, 3, 2, 100, 40); /* width < ld, repeated rows */
        test_slots(all[b]);
    }
}
/* (end of the KVzip+ score op tests) */

/* ---------- trainer ops ---------- */
/* The trainer ops of ops/backend.h (the MLP and ridge surrogates): the cpu
 * backend against naive re-derivations of each contract (double sums, or the
 * header's fp32 formula written out), every other backend against the cpu
 * backend on the same inputs (upload, run, download). Errors are relative
 * ("rel" in the stat names): |got - ref| / scale elementwise, scale a bound
 * on the magnitudes that meet in the element (stated per op), so results
 * that cancel to near 0 do not inflate it. Exact ops (bias rows, take rows,
 * the scaling of clip, dy of mse, combine_parts' fp32 sum in p order) are
 * compared bit for bit; the header pins their arithmetic (fp32 in the cpu's
 * order, no fused multiply-adds). Worst seen in brackets (x86-64 OpenBLAS;
 * cuda: the CPU emulator). */
/* gemm, scale sum_k |op(a)_ik op(b)_kj| + |beta c_ij| (the componentwise
 * bound of a dot product) */
#define RTOL_GEMM_F32 1e-6       /* fp32 sgemm vs the double product [1.8e-7]; cuda vs
                                    cpu [1.2e-7] */
#define RTOL_GEMM_TF32 3e-3      /* tf32 keeps 10 mantissa bits: <= 2^-10 per input even
                                    truncated, two inputs, vs the cpu's fp32 [5.9e-4] */
#define RTOL_GEMM_BF16 1e-2      /* bf16 keeps 7: <= 2^-8 per input rounded to nearest,
                                    two inputs, vs the cpu's fp32 [4.5e-3] */
#define RTOL_GEMM_BF16_EXACT 1e-5 /* bf16 mode vs the double product of the bf16-rounded
                                     inputs (the header's contract): fp32 accumulation
                                     [1.0e-7] */
#define RTOL_COL_SUMS 1e-6       /* float64 sums rounded once to fp32 (2^-24), scale |ref|
                                    [5.9e-8; cuda vs cpu 0] */
#define RTOL_GELU 1e-6           /* libmvec erff/expf (<= 4 ulp); cuda erff/expf; scale
                                    |gelu(h)| + |h| (1 + erff(x) cancels for h << 0) and
                                    |da gelu'(h)| + |da| (gelu' crosses 0 at h = -0.75)
                                    [1.2e-7 both; cuda vs cpu 1.2e-7] */
#define RTOL_F64_SUM 1e-12       /* float64 reductions (mse loss, clip norm, ridge,
                                    combine's loss): another order costs ~1e-16 [cpu:
                                    ridge 1.7e-16, else 0; cuda vs cpu 4.9e-15] */
#define RTOL_ADAMW 1e-6          /* fp32 formula; scale |p| + |p0| + lr, |m| + |m0| +
                                    sum |g|, |v| [0: bit for bit, cuda too] */

static int all_backends(kvz_backend **all)
{
    all[0] = g_cpu;
    for (int b = 0; b < g_n_other; b++)
        all[b + 1] = g_other[b];
    return g_n_other + 1;
}

/* err_i = |got_i - ref_i| / scale_i (scale NULL: |ref_i|; 0 / 0 counts as 0)
 * <= rtol for every element; got must be finite. Records the worst under
 * stat_name. */
static void check_rel(const char *stat_name, const char *what, const double *got,
                      const double *ref, const double *scale, size_t n, double rtol)
{
    double worst = 0.0;
    size_t wi = 0, nonfinite = 0, first_nf = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            if (!nonfinite++)
                first_nf = i;
            continue;
        }
        double d = fabs(got[i] - ref[i]), s = scale ? scale[i] : fabs(ref[i]);
        double e = s > 0.0 ? d / s : d == 0.0 ? 0.0 : INFINITY;
        if (e > worst)
            worst = e, wi = i;
    }
    record(stat_name, rtol, nonfinite ? NAN : worst);
    if (g_verbose)
        printf("  %-44s %9.3g  %s\n", stat_name, worst, what);
    KVZ_CHECK(nonfinite == 0, "%s: %zu of %zu outputs not finite (first [%zu] = %g)", what,
              nonfinite, n, first_nf, n ? got[first_nf] : 0.0);
    KVZ_CHECK(worst <= rtol,
              "%s: relative error %.3g > budget %.0e; worst [%zu] got %.17g expected %.17g "
              "(|diff| %.3g, scale %.3g)",
              what, worst, rtol, wi, n ? got[wi] : 0.0, n ? ref[wi] : 0.0,
              n ? fabs(got[wi] - ref[wi]) : 0.0,
              n ? (scale ? scale[wi] : fabs(ref[wi])) : 0.0);
}

static void check_rel_f32(const char *stat_name, const char *what, const float *got,
                          const double *ref, const double *scale, size_t n, double rtol)
{
    double *g = widen_array(got, n);
    check_rel(stat_name, what, g, ref, scale, n, rtol);
    free(g);
}

/* One backend double downloaded. */
static double download_f64(kvz_backend *be, gbuf *g, const char *what)
{
    double v = NAN;
    gb_finish(be, g, &v, NULL, what);
    return v;
}

/* ================= gemm ================= */

typedef struct gemm_case {
    size_t m, n, k;
} gemm_case;

/* c [m, n] = op(a) op(b) + beta c0 on be (c0 NULL: c holds the NaN guard
 * pattern, which beta 0 must never read). */
static void run_gemm(kvz_backend *be, int ta, int tb, const gemm_case *c, const float *a,
                     const float *b, float beta, const float *c0, kvz_gemm_precision prec,
                     float *out, const char *what)
{
    gbuf ga, gbb, gc;
    gb_make(be, KVZ_F32, c->m * c->k, a, "a", &ga);
    gb_make(be, KVZ_F32, c->k * c->n, b, "b", &gbb);
    gb_make(be, KVZ_F32, c->m * c->n, c0, "c", &gc);
    kvz_error err = {0};
    int rc = kvz_op_gemm(be, ta, tb, c->m, c->n, c->k, f32p(&ga), f32p(&gbb), beta, f32p(&gc),
                         prec, &err);
    op_ok(be, rc, &err, what);
    char lab[300];
    snprintf(lab, sizeof lab, "%s: c", what);
    gb_finish(be, &gc, out, NULL, lab);
    snprintf(lab, sizeof lab, "%s: a", what);
    gb_finish(be, &ga, NULL, a, lab);
    snprintf(lab, sizeof lab, "%s: b", what);
    gb_finish(be, &gbb, NULL, b, lab);
}

/* ref = op(a) op(b) + beta c0 in double and the componentwise scale. a holds
 * [m, k] (or [k, m] when ta), b [k, n] (or [n, k] when tb). */
static void ref_gemm(int ta, int tb, const gemm_case *c, const float *a, const float *b,
                     float beta, const float *c0, double *ref, double *scale)
{
    size_t m = c->m, n = c->n, k = c->k;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0, sa = 0.0;
            for (size_t q = 0; q < k; q++) {
                double p = (double)(ta ? a[q * m + i] : a[i * k + q]) *
                           (double)(tb ? b[j * k + q] : b[q * n + j]);
                s += p;
                sa += fabs(p);
            }
            if (beta != 0.0f) {
                s += (double)beta * c0[i * n + j];
                sa += fabs((double)beta * c0[i * n + j]);
            }
            ref[i * n + j] = s;
            scale[i * n + j] = sa;
        }
}

static void test_gemm(const gemm_case *c)
{
    size_t na = c->m * c->k, nb = c->k * c->n, nc = c->m * c->n;
    float *a = rand_array(na, 1.0f), *b = rand_array(nb, 1.0f), *c0 = rand_array(nc, 2.0f);
    float *a16 = malloc(na * sizeof *a16), *b16 = malloc(nb * sizeof *b16);
    for (size_t i = 0; i < na; i++)
        a16[i] = kvz_bf16_widen(kvz_f32_to_bf16(a[i]));
    for (size_t i = 0; i < nb; i++)
        b16[i] = kvz_bf16_widen(kvz_f32_to_bf16(b[i]));
    double *ref = malloc(nc * sizeof *ref), *scale = malloc(nc * sizeof *scale);
    double *ref16 = malloc(nc * sizeof *ref16), *scale16 = malloc(nc * sizeof *scale16);
    float *cpu = malloc(nc * sizeof *cpu), *got = malloc(nc * sizeof *got);
    double *cpu_d = malloc(nc * sizeof *cpu_d);
    static const kvz_gemm_precision precs[3] = {KVZ_GEMM_FP32, KVZ_GEMM_TF32, KVZ_GEMM_BF16};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bi = 0; bi < 2; bi++) {
                float beta = bi ? 1.0f : 0.0f;
                const float *cin = bi ? c0 : NULL;
                ref_gemm(ta, tb, c, a, b, beta, c0, ref, scale);
                ref_gemm(ta, tb, c, a16, b16, beta, c0, ref16, scale16);
                char what[200], wl[260], st[96];
                snprintf(what, sizeof what, "gemm %s%s m=%zu n=%zu k=%zu beta=%g%s",
                         ta ? "a^T" : "a", tb ? " b^T" : " b", c->m, c->n, c->k, (double)beta,
                         bi ? "" : " (c NaN)");
                snprintf(wl, sizeof wl, "cpu %s f32", what);
                run_gemm(g_cpu, ta, tb, c, a, b, beta, cin, KVZ_GEMM_FP32, cpu, wl);
                check_rel_f32("gemm f32 rel: cpu vs naive", wl, cpu, ref, scale, nc,
                              RTOL_GEMM_F32);
                for (int p = 1; p < 3; p++) { /* the cpu backend is always fp32 */
                    snprintf(wl, sizeof wl, "cpu %s %s (fp32 on the cpu)", what,
                             kvz_gemm_precision_name(precs[p]));
                    run_gemm(g_cpu, ta, tb, c, a, b, beta, cin, precs[p], got, wl);
                    check_bits(wl, got, cpu, nc, 4);
                }
                for (size_t i = 0; i < nc; i++)
                    cpu_d[i] = cpu[i];
                for (int o = 0; o < g_n_other; o++) {
                    kvz_backend *be = g_other[o];
                    const char *bn = short_name(be);
                    for (int p = 0; p < 3; p++) {
                        const char *pn = kvz_gemm_precision_name(precs[p]);
                        snprintf(wl, sizeof wl, "%s %s %s", bn, what, pn);
                        run_gemm(be, ta, tb, c, a, b, beta, cin, precs[p], got, wl);
                        double rtol = p == 0 ? RTOL_GEMM_F32 : p == 1 ? RTOL_GEMM_TF32
                                                                       : RTOL_GEMM_BF16;
                        snprintf(st, sizeof st, "gemm %s rel: %s vs cpu f32", pn, bn);
                        check_rel_f32(st, wl, got, cpu_d, scale, nc, rtol);
                        if (p == 2) {
                            snprintf(st, sizeof st, "gemm bfloat16 rel: %s vs naive bf16 in", bn);
                            check_rel_f32(st, wl, got, ref16, scale16, nc, RTOL_GEMM_BF16_EXACT);
                        }
                    }
                }
            }
    free(a), free(b), free(c0), free(a16), free(b16), free(ref), free(scale), free(ref16),
        free(scale16), free(cpu), free(got), free(cpu_d);
}

/* ================= bias rows, column sums (bias and its gradient) ================= */

static void test_bias_rows(size_t n, size_t m)
{
    float *bias = rand_array(m, 3.0f), *ref = malloc(n * m * sizeof *ref);
    float *got = malloc(n * m * sizeof *got);
    for (size_t r = 0; r < n; r++)
        memcpy(ref + r * m, bias, m * sizeof *ref);
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        char what[120];
        snprintf(what, sizeof what, "%s bias rows n=%zu m=%zu", short_name(be), n, m);
        gbuf go, gb;
        gb_make(be, KVZ_F32, n * m, NULL, "out", &go); /* NaN: every element must be written */
        gb_make(be, KVZ_F32, m, bias, "bias", &gb);
        kvz_error err = {0};
        op_ok(be, kvz_op_bias_rows(be, f32p(&go), f32p(&gb), n, m, &err), &err, what);
        gb_finish(be, &go, got, NULL, what);
        gb_finish(be, &gb, NULL, bias, what);
        check_bits(what, got, ref, n * m, 4);
    }
    free(bias), free(ref), free(got);
}

static void test_col_sums(size_t n, size_t m)
{
    float *v = rand_array(n * m, 3.0f);
    double *ref = malloc(m * sizeof *ref), *cpu_d = malloc(m * sizeof *cpu_d);
    float *cpu = malloc(m * sizeof *cpu), *got = malloc(m * sizeof *got);
    for (size_t j = 0; j < m; j++) {
        double s = 0.0;
        for (size_t r = 0; r < n; r++)
            s += v[r * m + j];
        ref[j] = s;
    }
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        char what[120], st[96];
        snprintf(what, sizeof what, "%s col sums n=%zu m=%zu%s", short_name(be), n, m,
                 n ? "" : " (v NULL)");
        gbuf gv = {{0}, {0}}, go;
        if (n)
            gb_make(be, KVZ_F32, n * m, v, "v", &gv);
        gb_make(be, KVZ_F32, m, NULL, "out", &go);
        kvz_error err = {0};
        op_ok(be, kvz_op_col_sums(be, n ? f32p(&gv) : NULL, n, m, f32p(&go), &err), &err, what);
        gb_finish(be, &go, b ? got : cpu, NULL, what);
        gb_finish(be, &gv, NULL, v, what);
        if (!n) {
            size_t bad = 0;
            for (size_t j = 0; j < m; j++)
                bad += (b ? got : cpu)[j] != 0.0f;
            KVZ_CHECK(bad == 0, "%s: %zu of %zu sums over no rows are not 0", what, bad, m);
            continue;
        }
        if (b == 0) {
            check_rel_f32("col sums rel: cpu vs naive f64", what, cpu, ref, NULL, m,
                          RTOL_COL_SUMS);
            for (size_t j = 0; j < m; j++)
                cpu_d[j] = cpu[j];
        } else {
            snprintf(st, sizeof st, "col sums rel: %s vs cpu", short_name(be));
            check_rel_f32(st, what, got, cpu_d, NULL, m, RTOL_COL_SUMS);
        }
    }
    free(v), free(ref), free(cpu_d), free(cpu), free(got);
}

/* ================= gelu ================= */

static double ref_gelu(double h)
{
    return 0.5 * h * erfc(-h / sqrt(2.0)); /* = h Phi(h), without 1 + erf's cancellation */
}

static double ref_gelu_grad(double h)
{
    return 0.5 * erfc(-h / sqrt(2.0)) + h * exp(-0.5 * h * h) / sqrt(2.0 * 3.14159265358979323846);
}

static void test_gelu(size_t count, int in_place)
{
    static const float special[] = {0.0f, -0.0f, 1e-3f, -1e-3f, 0.5f, -0.75179f, -1.5f, 3.0f,
                                    -3.0f, -5.5f, -9.0f, 9.0f, 20.0f, -20.0f, 1e-20f, -6.0f};
    size_t ns = sizeof special / sizeof special[0];
    float *h = rand_array(count, 7.0f), *da = rand_array(count, 2.0f);
    for (size_t i = 0; i < count && i < ns; i++)
        h[i] = special[i];
    double *ref = malloc(count * sizeof *ref), *sc = malloc(count * sizeof *sc);
    double *refb = malloc(count * sizeof *refb), *scb = malloc(count * sizeof *scb);
    double *cpu_d = malloc(count * sizeof *cpu_d), *cpub_d = malloc(count * sizeof *cpub_d);
    float *got = malloc(count * sizeof *got), *gotb = malloc(count * sizeof *gotb);
    for (size_t i = 0; i < count; i++) {
        ref[i] = ref_gelu(h[i]);
        sc[i] = fabs(ref[i]) + fabs((double)h[i]);
        refb[i] = (double)da[i] * ref_gelu_grad(h[i]);
        scb[i] = fabs(refb[i]) + fabs((double)da[i]);
    }
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        const char *bn = short_name(be);
        char what[120], wb[140], st[96];
        snprintf(what, sizeof what, "%s gelu count=%zu%s", bn, count,
                 in_place ? " in place" : "");
        snprintf(wb, sizeof wb, "%s gelu backward count=%zu", bn, count);
        gbuf gh, ga = {{0}, {0}}, gd;
        gb_make(be, KVZ_F32, count, h, "h", &gh);
        if (!in_place)
            gb_make(be, KVZ_F32, count, NULL, "a", &ga);
        gb_make(be, KVZ_F32, count, da, "da", &gd);
        kvz_error err = {0};
        /* backward first: it reads h, which the in-place forward overwrites */
        op_ok(be, kvz_op_gelu_backward(be, f32p(&gh), f32p(&gd), count, &err), &err, wb);
        op_ok(be, kvz_op_gelu(be, f32p(&gh), in_place ? f32p(&gh) : f32p(&ga), count, &err),
              &err, what);
        gb_finish(be, &gd, gotb, NULL, wb);
        if (in_place) {
            gb_finish(be, &gh, got, NULL, what);
        } else {
            gb_finish(be, &ga, got, NULL, what);
            gb_finish(be, &gh, NULL, h, what);
        }
        if (b == 0) {
            check_rel_f32("gelu rel: cpu vs naive erf", what, got, ref, sc, count, RTOL_GELU);
            check_rel_f32("gelu backward rel: cpu vs naive erf", wb, gotb, refb, scb, count,
                          RTOL_GELU);
            for (size_t i = 0; i < count; i++)
                cpu_d[i] = got[i], cpub_d[i] = gotb[i];
        } else {
            snprintf(st, sizeof st, "gelu rel: %s vs cpu", bn);
            check_rel_f32(st, what, got, cpu_d, sc, count, RTOL_GELU);
            snprintf(st, sizeof st, "gelu backward rel: %s vs cpu", bn);
            check_rel_f32(st, wb, gotb, cpub_d, scb, count, RTOL_GELU);
        }
    }
    free(h), free(da), free(ref), free(sc), free(refb), free(scb), free(cpu_d), free(cpub_d),
        free(got), free(gotb);
}

/* ================= mse ================= */

static void test_mse(size_t count)
{
    float *pred = rand_array(count, 2.0f), *y = rand_array(count, 1.5f);
    float *ref_dy = malloc(count * sizeof *ref_dy), *got = malloc(count * sizeof *got);
    float s = 2.0f / (float)count;
    double sse = 0.0;
    for (size_t i = 0; i < count; i++) {
        float r = pred[i] - y[i];
        sse += (double)r * r;
        ref_dy[i] = s * r;
    }
    double ref_loss = sse / (double)count, cpu_loss = NAN, loss_dy = NAN;
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        const char *bn = short_name(be);
        for (int with_dy = 1; with_dy >= 0; with_dy--) {
            char what[120], st[96];
            snprintf(what, sizeof what, "%s mse count=%zu%s", bn, count,
                     with_dy ? "" : " dy NULL");
            gbuf gp, gy, gd = {{0}, {0}}, gl;
            gb_make(be, KVZ_F32, count, pred, "pred", &gp);
            gb_make(be, KVZ_F32, count, y, "y", &gy);
            if (with_dy)
                gb_make(be, KVZ_F32, count, NULL, "dy", &gd);
            gb_make(be, KVZ_F64, 1, NULL, "loss", &gl);
            kvz_error err = {0};
            op_ok(be, kvz_op_mse(be, f32p(&gp), f32p(&gy), count, with_dy ? f32p(&gd) : NULL,
                                 gl.buf.data, &err), &err, what);
            double loss = download_f64(be, &gl, what);
            gb_finish(be, &gp, NULL, pred, what);
            gb_finish(be, &gy, NULL, y, what);
            if (with_dy) {
                gb_finish(be, &gd, got, NULL, what);
                check_bits(what, got, ref_dy, count, 4); /* s r in fp32: exact */
            }
            if (!with_dy) { /* the same loss as with dy (deterministic) */
                KVZ_CHECK(memcmp(&loss, &loss_dy, sizeof loss) == 0,
                          "%s: loss %.17g, with dy %.17g", what, loss, loss_dy);
            } else if (b == 0) {
                check_rel("mse loss f64 rel: cpu vs naive", what, &loss, &ref_loss, NULL, 1,
                          RTOL_F64_SUM);
                cpu_loss = loss_dy = loss;
            } else {
                snprintf(st, sizeof st, "mse loss f64 rel: %s vs cpu", bn);
                check_rel(st, what, &loss, &cpu_loss, NULL, 1, RTOL_F64_SUM);
                loss_dy = loss;
            }
        }
    }
    free(pred), free(y), free(ref_dy), free(got);
}

/* ================= clip grad norm ================= */

/* g on be clipped with max_norm (norm_buf: a backend double for the norm, or
 * NULL); returns the norm downloaded (NaN when not asked). */
static double run_clip(kvz_backend *be, const float *g, size_t count, double max_norm,
                       int norm_buf, float *out, const char *what)
{
    gbuf gg, gn = {{0}, {0}};
    gb_make(be, KVZ_F32, count, g, "g", &gg);
    if (norm_buf)
        gb_make(be, KVZ_F64, 1, NULL, "norm", &gn);
    kvz_error err = {0};
    op_ok(be, kvz_op_clip_grad_norm(be, f32p(&gg), count, max_norm,
                                    norm_buf ? gn.buf.data : NULL, &err), &err, what);
    gb_finish(be, &gg, out, NULL, what);
    return norm_buf ? download_f64(be, &gn, what) : NAN;
}

static void test_clip(size_t count)
{
    float *g = rand_array(count, 0.3f), *got = malloc(count * sizeof *got);
    float *exp_g = malloc(count * sizeof *exp_g), *got2 = malloc(count * sizeof *got2);
    double sq = 0.0;
    for (size_t i = 0; i < count; i++)
        sq += (double)g[i] * g[i];
    double ref_norm = sqrt(sq), cpu_norm = NAN;
    /* max_norm as a multiple of the norm: 0.5 and 1 scale (coef = max / (norm + 1e-6)
     * < 1), 2 does not, 0 and -1 never do */
    static const double factor[] = {0.5, 1.0, 2.0, 0.0, -1.0};
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        const char *bn = short_name(be);
        for (size_t f = 0; f < sizeof factor / sizeof factor[0]; f++) {
            double max_norm = factor[f] * ref_norm;
            char what[160], st[96];
            snprintf(what, sizeof what, "%s clip grad norm count=%zu max_norm=%.3g (norm x %g)",
                     bn, count, max_norm, factor[f]);
            double norm = run_clip(be, g, count, max_norm, 1, got, what);
            if (b == 0) {
                check_rel("clip norm f64 rel: cpu vs naive", what, &norm, &ref_norm, NULL, 1,
                          RTOL_F64_SUM);
                cpu_norm = norm;
            } else {
                snprintf(st, sizeof st, "clip norm f64 rel: %s vs cpu", bn);
                check_rel(st, what, &norm, &cpu_norm, NULL, 1, RTOL_F64_SUM);
            }
            /* the scaling the backend's own norm asks for, in fp32 (exact) */
            double coef = max_norm / (norm + 1e-6);
            int scaled = max_norm > 0 && coef < 1.0;
            KVZ_CHECK(scaled == (factor[f] > 0.0 && factor[f] <= 1.0),
                      "%s: coef %.17g: scaling expected %d", what, coef, scaled);
            for (size_t i = 0; i < count; i++)
                exp_g[i] = scaled ? g[i] * (float)coef : g[i];
            check_bits(what, got, exp_g, count, 4);
            if (factor[f] == 0.5) { /* norm NULL: backend scratch, the same result */
                snprintf(what, sizeof what, "%s clip grad norm count=%zu max_norm=%.3g norm NULL",
                         bn, count, max_norm);
                run_clip(be, g, count, max_norm, 0, got2, what);
                check_bits(what, got2, got, count, 4);
            }
        }
        /* a NaN gradient: the norm is NaN and g is left alone */
        float *gn = malloc(count * sizeof *gn);
        memcpy(gn, g, count * sizeof *gn);
        gn[count / 2] = NAN;
        char what[160];
        snprintf(what, sizeof what, "%s clip grad norm count=%zu with a NaN", bn, count);
        double norm = run_clip(be, gn, count, 0.5 * ref_norm, 1, got, what);
        KVZ_CHECK(isnan(norm), "%s: norm %g, expected NaN", what, norm);
        check_bits(what, got, gn, count, 4);
        free(gn);
    }
    free(g), free(got), free(exp_g), free(got2);
}

/* ================= adamw ================= */

/* The header's step in fp32, coefficients rounded to fp32 first. */
static void ref_adamw(float *p, const float *g, float *m, float *v, size_t n,
                      const kvz_adamw_args *a)
{
    float decay = (float)(1.0 - a->lr * a->weight_decay);
    float step = (float)(a->lr / (1.0 - pow(a->beta1, (double)a->t)));
    float bc2s = (float)sqrt(1.0 - pow(a->beta2, (double)a->t));
    float b1 = (float)a->beta1, b2 = (float)a->beta2, eps = (float)a->eps;
    for (size_t i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] += (g[i] - m[i]) * (1.0f - b1);
        v[i] = v[i] * b2 + (1.0f - b2) * g[i] * g[i];
        p[i] -= step * (m[i] / (sqrtf(v[i]) / bc2s + eps));
    }
}

typedef struct adamw_case {
    size_t count, steps, t0; /* steps t0, t0 + 1, ...; t0 > 1: m and v start non-zero */
    double lr, beta1, beta2, eps, wd;
} adamw_case;

static void test_adamw(const adamw_case *c)
{
    size_t n = c->count;
    float *p0 = rand_array(n, 1.0f), *m0 = calloc(n, sizeof *m0), *v0 = calloc(n, sizeof *v0);
    float **g = malloc(c->steps * sizeof *g);
    if (c->t0 > 1)
        for (size_t i = 0; i < n; i++) {
            m0[i] = frand(0.05f);
            v0[i] = frand(0.05f) * frand(0.05f) + 1e-4f * m0[i] * m0[i];
            v0[i] = fabsf(v0[i]);
        }
    for (size_t s = 0; s < c->steps; s++) {
        g[s] = rand_array(n, 0.1f);
        if (n > 3)
            g[s][3] = 0.0f; /* a zero gradient */
    }
    float *pr = malloc(n * sizeof *pr), *mr = malloc(n * sizeof *mr), *vr = malloc(n * sizeof *vr);
    memcpy(pr, p0, n * sizeof *pr), memcpy(mr, m0, n * sizeof *mr), memcpy(vr, v0, n * sizeof *vr);
    for (size_t s = 0; s < c->steps; s++) {
        kvz_adamw_args a = {c->t0 + s, c->lr, c->beta1, c->beta2, c->eps, c->wd};
        ref_adamw(pr, g[s], mr, vr, n, &a);
    }
    double *rp = widen_array(pr, n), *rm = widen_array(mr, n), *rv = widen_array(vr, n);
    double *sp = malloc(n * sizeof *sp), *sm = malloc(n * sizeof *sm);
    for (size_t i = 0; i < n; i++) {
        sp[i] = fabs(rp[i]) + fabs((double)p0[i]) + c->lr;
        sm[i] = fabs(rm[i]) + fabs((double)m0[i]);
        for (size_t s = 0; s < c->steps; s++)
            sm[i] += fabs((double)g[s][i]);
    }
    float *gp = malloc(n * sizeof *gp), *gm = malloc(n * sizeof *gm), *gv = malloc(n * sizeof *gv);
    double *cp = malloc(n * sizeof *cp), *cm = malloc(n * sizeof *cm), *cv = malloc(n * sizeof *cv);
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        const char *bn = short_name(be);
        char what[200], st[96];
        snprintf(what, sizeof what,
                 "%s adamw count=%zu steps t=%zu..%zu lr=%g betas=(%g, %g) eps=%g wd=%g", bn, n,
                 c->t0, c->t0 + c->steps - 1, c->lr, c->beta1, c->beta2, c->eps, c->wd);
        gbuf bp, bm, bv, bg;
        gb_make(be, KVZ_F32, n, p0, "param", &bp);
        gb_make(be, KVZ_F32, n, m0, "m", &bm);
        gb_make(be, KVZ_F32, n, v0, "v", &bv);
        gb_make(be, KVZ_F32, n, g[0], "grad", &bg);
        kvz_error err = {0};
        for (size_t s = 0; s < c->steps; s++) {
            if (s) {
                int rc = kvz_backend_upload(be, bg.buf.data, g[s], n * sizeof(float), &err);
                KVZ_CHECK(rc == KVZ_OK, "%s: upload grad: %s", what, err.msg);
            }
            kvz_adamw_args a = {c->t0 + s, c->lr, c->beta1, c->beta2, c->eps, c->wd};
            op_ok(be, kvz_op_adamw(be, f32p(&bp), f32p(&bg), f32p(&bm), f32p(&bv), n, &a, &err),
                  &err, what);
        }
        gb_finish(be, &bp, gp, NULL, what);
        gb_finish(be, &bm, gm, NULL, what);
        gb_finish(be, &bv, gv, NULL, what);
        gb_finish(be, &bg, NULL, g[c->steps - 1], what);
        if (b == 0) {
            check_rel_f32("adamw param rel: cpu vs naive", what, gp, rp, sp, n, RTOL_ADAMW);
            check_rel_f32("adamw m rel: cpu vs naive", what, gm, rm, sm, n, RTOL_ADAMW);
            check_rel_f32("adamw v rel: cpu vs naive", what, gv, rv, NULL, n, RTOL_ADAMW);
            for (size_t i = 0; i < n; i++)
                cp[i] = gp[i], cm[i] = gm[i], cv[i] = gv[i];
        } else {
            snprintf(st, sizeof st, "adamw param rel: %s vs cpu", bn);
            check_rel_f32(st, what, gp, cp, sp, n, RTOL_ADAMW);
            snprintf(st, sizeof st, "adamw m rel: %s vs cpu", bn);
            check_rel_f32(st, what, gm, cm, sm, n, RTOL_ADAMW);
            snprintf(st, sizeof st, "adamw v rel: %s vs cpu", bn);
            check_rel_f32(st, what, gv, cv, NULL, n, RTOL_ADAMW);
        }
    }
    for (size_t s = 0; s < c->steps; s++)
        free(g[s]);
    free(g), free(p0), free(m0), free(v0), free(pr), free(mr), free(vr), free(rp), free(rm),
        free(rv), free(sp), free(sm), free(gp), free(gm), free(gv), free(cp), free(cm), free(cv);
}

/* ================= combine parts ================= */

/* mode 0: grads and loss, 1: grads only (loss_dst NULL), 2: loss only (dst NULL) */
static void test_combine(size_t n_src, size_t count, int mode)
{
    float **src = malloc(n_src * sizeof *src), *w = malloc(n_src * sizeof *w);
    size_t *rows = malloc(n_src * sizeof *rows), total = 0;
    double *loss = malloc(n_src * sizeof *loss);
    for (size_t p = 0; p < n_src; p++) {
        src[p] = rand_array(count, 1.0f);
        rows[p] = 1 + (size_t)(rand_u64() % 97);
        total += rows[p];
        loss[p] = 0.01 + fabs((double)frand(2.0f)) + (double)frand(1.0f) * 1e-9;
    }
    for (size_t p = 0; p < n_src; p++) /* the trainer's weights: the parts' shares */
        w[p] = (float)rows[p] / (float)total;
    float *ref = malloc((count ? count : 1) * sizeof *ref);
    float *got = malloc((count ? count : 1) * sizeof *got);
    for (size_t i = 0; i < count; i++) {
        float s = 0.0f;
        for (size_t p = 0; p < n_src; p++)
            s += w[p] * src[p][i];
        ref[i] = s;
    }
    double ref_loss = 0.0, cpu_loss = NAN;
    for (size_t p = 0; p < n_src; p++)
        ref_loss += loss[p] * (double)rows[p] / (double)total;
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        const char *bn = short_name(be);
        char what[160], st[96];
        snprintf(what, sizeof what, "%s combine parts n_src=%zu count=%zu%s", bn, n_src, count,
                 mode == 1 ? " (grads only)" : mode == 2 ? " (loss only)" : "");
        gbuf *gs = calloc(n_src, sizeof *gs), gd = {{0}, {0}}, gl, gld = {{0}, {0}};
        const float **sp = malloc(n_src * sizeof *sp);
        for (size_t p = 0; p < n_src; p++) {
            gb_make(be, KVZ_F32, count, src[p], "src", &gs[p]);
            sp[p] = f32p(&gs[p]);
        }
        if (mode != 2)
            gb_make(be, KVZ_F32, count, NULL, "dst", &gd);
        gb_make(be, KVZ_F64, n_src, loss, "loss", &gl);
        if (mode != 1)
            gb_make(be, KVZ_F64, 1, NULL, "loss dst", &gld);
        kvz_error err = {0};
        op_ok(be, kvz_op_combine_parts(be, mode != 2 ? f32p(&gd) : NULL,
                                       (const float *const *)sp, w, n_src, count,
                                       mode != 1 ? gld.buf.data : NULL, gl.buf.data, rows, &err),
              &err, what);
        if (mode != 2) {
            gb_finish(be, &gd, got, NULL, what);
            check_bits(what, got, ref, count, 4); /* fp32, in p order from 0 */
        }
        if (mode != 1) {
            double l = download_f64(be, &gld, what);
            if (b == 0) {
                check_rel("combine loss f64 rel: cpu vs naive", what, &l, &ref_loss, NULL, 1,
                          RTOL_F64_SUM);
                cpu_loss = l;
            } else {
                snprintf(st, sizeof st, "combine loss f64 rel: %s vs cpu", bn);
                check_rel(st, what, &l, isnan(cpu_loss) ? &ref_loss : &cpu_loss, NULL, 1,
                          RTOL_F64_SUM);
            }
        }
        gb_finish(be, &gl, NULL, loss, what);
        for (size_t p = 0; p < n_src; p++)
            gb_finish(be, &gs[p], NULL, src[p], what);
        free(gs), free(sp);
    }
    for (size_t p = 0; p < n_src; p++)
        free(src[p]);
    free(src), free(w), free(rows), free(loss), free(ref), free(got);
}

/* ================= take rows ================= */

/* src: rows x width (+ extra elements: a partial row, not a row) of fp32 or
 * fp16; idx: n rows (NULL: row0 .. row0 + n - 1). Exact on every backend. */
static void test_take_rows(size_t rows, size_t width, size_t extra, size_t n, int use_idx,
                           size_t row0)
{
    size_t ns = rows * width + extra;
    float *s32 = rand_array(ns, 4.0f);
    uint16_t *s16 = malloc(ns * sizeof *s16);
    static const float special[] = {0.0f, -0.0f, 65504.0f, -65504.0f, 6.0e-8f /* subnormal */,
                                    -3.0e-5f, 1e5f /* inf */, -1e5f /* -inf */};
    for (size_t i = 0; i < ns; i++) {
        if (i % 11 == 5)
            s32[i] = special[(i / 11) % (sizeof special / sizeof special[0])];
        s16[i] = kvz_f32_to_f16(s32[i]);
    }
    int64_t *idx = malloc((n ? n : 1) * sizeof *idx);
    for (size_t k = 0; k < n; k++) /* the last and first rows, repeats */
        idx[k] = k == 0 ? (int64_t)(rows - 1)
                        : k == 1 ? 0 : k % 4 == 3 ? idx[k - 1] : (int64_t)(rand_u64() % rows);
    size_t nd = n * width > 0 ? n * width : 1;
    float *ref = malloc(nd * sizeof *ref), *got = malloc(nd * sizeof *got);
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int d = 0; d < 2; d++) {
        for (size_t k = 0; k < n; k++) {
            size_t r = use_idx ? (size_t)idx[k] : row0 + k;
            for (size_t c = 0; c < width; c++)
                ref[k * width + c] = d ? kvz_f16_widen(s16[r * width + c]) : s32[r * width + c];
        }
        for (int b = 0; b < na; b++) {
            kvz_backend *be = all[b];
            char what[200];
            if (use_idx)
                snprintf(what, sizeof what, "%s take rows %s rows=%zu (+%zu) width=%zu n=%zu idx",
                         short_name(be), d ? "f16" : "f32", rows, extra, width, n);
            else
                snprintf(what, sizeof what,
                         "%s take rows %s rows=%zu (+%zu) width=%zu rows %zu..%zu",
                         short_name(be), d ? "f16" : "f32", rows, extra, width, row0, row0 + n);
            gbuf gs, gi = {{0}, {0}}, gd;
            gb_make(be, d ? KVZ_F16 : KVZ_F32, ns, d ? (const void *)s16 : (const void *)s32,
                    "src", &gs);
            if (use_idx)
                gb_make(be, KVZ_I64, n, idx, "idx", &gi);
            gb_make(be, KVZ_F32, n * width, NULL, "dst", &gd);
            kvz_error err = {0};
            op_ok(be, kvz_op_take_rows(be, gs.buf, width, use_idx ? gi.buf.data : NULL, row0, n,
                                       f32p(&gd), &err), &err, what);
            gb_finish(be, &gd, got, NULL, what);
            check_bits(what, got, ref, n * width, 4);
            /* the contiguous form past the last whole row: refused everywhere */
            char lab[260];
            snprintf(lab, sizeof lab, "%s: rows %zu..%zu (past the end)", what, rows - 1,
                     rows + 1);
            kvz_error_clear(&err);
            int rc = kvz_op_take_rows(be, gs.buf, width, NULL, rows - 1, 2, f32p(&gd), &err);
            expect_err(be, rc, KVZ_EINVAL, &err, "take rows", lab);
            snprintf(lab, sizeof lab, "%s: rows %zu..%zu", what, rows + 1, rows + 2);
            kvz_error_clear(&err);
            rc = kvz_op_take_rows(be, gs.buf, width, NULL, rows + 1, 1, f32p(&gd), &err);
            expect_err(be, rc, KVZ_EINVAL, &err, "take rows", lab);
            if (kvz_backend_host_memory(be)) { /* the cpu checks idx too */
                int64_t bad[2] = {0, (int64_t)rows};
                snprintf(lab, sizeof lab, "%s: idx %zu", what, rows);
                kvz_error_clear(&err);
                rc = kvz_op_take_rows(be, gs.buf, width, bad, 0, 2, got, &err);
                expect_err(be, rc, KVZ_EINVAL, &err, "take rows", lab);
                bad[1] = -1;
                snprintf(lab, sizeof lab, "%s: idx -1", what);
                kvz_error_clear(&err);
                rc = kvz_op_take_rows(be, gs.buf, width, bad, 0, 2, got, &err);
                expect_err(be, rc, KVZ_EINVAL, &err, "take rows", lab);
            }
            gb_finish(be, &gs, NULL, d ? (const void *)s16 : (const void *)s32, what);
            gb_finish(be, &gi, NULL, idx, what);
        }
    }
    free(s32), free(s16), free(idx), free(ref), free(got);
}

/* ================= ridge statistics ================= */

typedef struct ridge_case {
    size_t n, D, H, scratch_rows, scratch_extra; /* scratch: rows x (D + H) + extra doubles */
} ridge_case;

static size_t ridge_sums_len(size_t D, size_t H)
{
    return D * D + D * H + D + 2 * H;
}

/* The statistics prior + x, y in double, and the componentwise scale. */
static void ref_ridge(const ridge_case *c, const float *x, const float *y, const double *prior,
                      double *ref, double *scale)
{
    size_t D = c->D, H = c->H, L = ridge_sums_len(D, H);
    for (size_t i = 0; i < L; i++)
        ref[i] = prior[i], scale[i] = fabs(prior[i]);
    double *xtx = ref, *xty = ref + D * D, *xs = xty + D * H, *ys = xs + D, *yq = ys + H;
    double *sxtx = scale, *sxty = scale + D * D, *sxs = sxty + D * H, *sys = sxs + D;
    double *syq = sys + H;
    for (size_t r = 0; r < c->n; r++) {
        const float *xr = x + r * D, *yr = y + r * H;
        for (size_t i = 0; i < D; i++) {
            for (size_t j = i; j < D; j++) {
                double p = (double)xr[i] * xr[j];
                xtx[i * D + j] += p, sxtx[i * D + j] += fabs(p);
            }
            for (size_t h = 0; h < H; h++) {
                double p = (double)xr[i] * yr[h];
                xty[i * H + h] += p, sxty[i * H + h] += fabs(p);
            }
            xs[i] += xr[i], sxs[i] += fabs((double)xr[i]);
        }
        for (size_t h = 0; h < H; h++) {
            ys[h] += yr[h], sys[h] += fabs((double)yr[h]);
            yq[h] += (double)yr[h] * yr[h], syq[h] += (double)yr[h] * yr[h];
        }
    }
}

/* sums prior -> out after ridge_add on be; returns the op's status (err
 * filled). */
static int run_ridge(kvz_backend *be, const ridge_case *c, const float *x, const float *y,
                     const double *prior, double *out, kvz_error *err, const char *what)
{
    size_t D = c->D, H = c->H, L = ridge_sums_len(D, H);
    gbuf gx, gy, gs, gsum;
    gb_make(be, KVZ_F32, c->n * D, x, "x", &gx);
    gb_make(be, KVZ_F32, c->n * H, y, "y", &gy);
    gb_make(be, KVZ_F64, c->scratch_rows * (D + H) + c->scratch_extra, NULL, "scratch", &gs);
    gb_make(be, KVZ_F64, L, prior, "sums", &gsum);
    int rc = kvz_op_ridge_add(be, f32p(&gx), f32p(&gy), c->n, D, H, gs.buf, gsum.buf, err);
    kvz_error e2 = {0};
    int rs = kvz_backend_sync(be, &e2);
    KVZ_CHECK(rs == KVZ_OK, "%s: sync after the op: %s", what, e2.msg);
    gb_finish(be, &gsum, out, NULL, what);
    gb_finish(be, &gs, NULL, NULL, what); /* the guards: no more than scratch.numel used */
    gb_finish(be, &gx, NULL, x, what);
    gb_finish(be, &gy, NULL, y, what);
    return rc;
}

static void test_ridge(const ridge_case *c)
{
    size_t D = c->D, H = c->H, L = ridge_sums_len(D, H);
    float *x = rand_array(c->n * D, 2.0f), *y = rand_array(c->n * H, 3.0f);
    double *prior = malloc(L * sizeof *prior);
    for (size_t i = 0; i < L; i++)
        prior[i] = (double)frand(5.0f) + (double)frand(1.0f) * 1e-8;
    for (size_t i = 0; i < D; i++) /* the strict lower part: a pattern that must stay */
        for (size_t j = 0; j < i; j++)
            prior[i * D + j] = -777.25 - (double)(i * D + j);
    double *ref = malloc(L * sizeof *ref), *scale = malloc(L * sizeof *scale);
    double *cpu = malloc(L * sizeof *cpu), *got = malloc(L * sizeof *got);
    ref_ridge(c, x, y, prior, ref, scale);
    size_t *upper = malloc(L * sizeof *upper), nu = 0; /* the elements the op may write */
    for (size_t i = 0; i < L; i++)
        if (i >= D * D || (i % D) >= (i / D))
            upper[nu++] = i;
    double *ru = malloc(nu * sizeof *ru), *su = malloc(nu * sizeof *su);
    double *gu = malloc(nu * sizeof *gu), *cu = malloc(nu * sizeof *cu);
    for (size_t k = 0; k < nu; k++)
        ru[k] = ref[upper[k]], su[k] = scale[upper[k]];
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++) {
        kvz_backend *be = all[b];
        const char *bn = short_name(be);
        char what[200], st[96];
        snprintf(what, sizeof what, "%s ridge add n=%zu D=%zu H=%zu scratch %zu rows (+%zu)", bn,
                 c->n, D, H, c->scratch_rows, c->scratch_extra);
        kvz_error err = {0};
        int rc = run_ridge(be, c, x, y, prior, got, &err, what);
        KVZ_CHECK(rc == KVZ_OK, "%s: %s", what, err.msg);
        for (size_t k = 0; k < nu; k++)
            gu[k] = got[upper[k]];
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < D; i++)
            for (size_t j = 0; j < i; j++)
                if (memcmp(&got[i * D + j], &prior[i * D + j], sizeof(double)) && !bad++)
                    first = i * D + j;
        KVZ_CHECK(bad == 0, "%s: %zu elements of the strict lower part of X^T X written; first "
                  "(%zu, %zu) = %g", what, bad, first / D, first % D, got[first]);
        if (b == 0) {
            check_rel("ridge sums f64 rel: cpu vs naive", what, gu, ru, su, nu, RTOL_F64_SUM);
            memcpy(cpu, got, L * sizeof *cpu);
            memcpy(cu, gu, nu * sizeof *cu);
        } else {
            snprintf(st, sizeof st, "ridge sums f64 rel: %s vs cpu", bn);
            check_rel(st, what, gu, cu, su, nu, RTOL_F64_SUM);
        }
    }
    free(x), free(y), free(prior), free(ref), free(scale), free(cpu), free(got), free(upper),
        free(ru), free(su), free(gu), free(cu);
}

/* A non-finite feature or target anywhere (the last block too): KVZ_EINVAL
 * naming it, the sums unchanged (bit for bit). */
static void test_ridge_nonfinite(void)
{
    ridge_case c = {10, 7, 3, 3, 0}; /* 4 blocks of up to 3 rows */
    size_t L = ridge_sums_len(c.D, c.H);
    double *prior = malloc(L * sizeof *prior), *got = malloc(L * sizeof *got);
    for (size_t i = 0; i < L; i++)
        prior[i] = (double)frand(5.0f);
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int t = 0; t < 3; t++) {
        float *x = rand_array(c.n * c.D, 2.0f), *y = rand_array(c.n * c.H, 3.0f);
        const char *needle = t == 2 ? "target" : "feature", *desc;
        if (t == 0)
            x[9 * c.D + 4] = NAN, desc = "a NaN feature in row 9 (the last block)";
        else if (t == 1)
            x[1 * c.D + 0] = INFINITY, desc = "an inf feature in row 1";
        else
            y[7 * c.H + 2] = NAN, desc = "a NaN target in row 7";
        for (int b = 0; b < na; b++) {
            kvz_backend *be = all[b];
            char what[200];
            snprintf(what, sizeof what, "%s ridge add n=%zu D=%zu H=%zu scratch 3 rows: %s",
                     short_name(be), c.n, c.D, c.H, desc);
            kvz_error err = {0};
            int rc = run_ridge(be, &c, x, y, prior, got, &err, what);
            expect_err(be, rc, KVZ_EINVAL, &err, needle, what);
            KVZ_CHECK(memcmp(got, prior, L * sizeof *got) == 0, "%s: the sums changed", what);
        }
        free(x), free(y);
    }
    free(prior), free(got);
}

/* ================= memory, argument errors ================= */

static void test_trainer_misc(kvz_backend *be)
{
    kvz_error err = {0};
    size_t fr = 0, tot = 0;
    int rc = kvz_backend_memory(be, &fr, &tot, &err);
    KVZ_CHECK(rc == KVZ_OK && tot > 0 && fr <= tot, "%s: backend memory rc %d free %zu total "
              "%zu (%s)", short_name(be), rc, fr, tot, err.msg);
    size_t tot2 = 0;
    rc = kvz_backend_memory(be, NULL, &tot2, &err);
    KVZ_CHECK(rc == KVZ_OK && tot2 == tot, "%s: backend memory with free NULL: rc %d total %zu",
              short_name(be), rc, tot2);
    kvz_buf x, d;
    int ok = kvz_backend_alloc(be, KVZ_F32, 64, "x", &x, &err) == KVZ_OK;
    ok &= kvz_backend_alloc(be, KVZ_F64, 64, "d", &d, &err) == KVZ_OK;
    KVZ_CHECK(ok, "%s: alloc for the trainer error cases: %s", short_name(be), err.msg);
    if (!ok)
        return;
    float *xp = kvz_buf_f32(x);
    kvz_error_clear(&err);
    rc = kvz_op_gemm(be, 0, 0, 2, 2, 0, xp, xp, 0.0f, xp, KVZ_GEMM_FP32, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "gemm", "gemm with k=0");
    kvz_error_clear(&err);
    rc = kvz_op_gemm(be, 0, 0, 2, 2, 2, xp, xp, 0.0f, xp, (kvz_gemm_precision)7, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "gemm", "gemm with precision 7");
    kvz_error_clear(&err);
    rc = kvz_op_mse(be, xp, xp, 0, NULL, d.data, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "mse", "mse with count 0");
    kvz_error_clear(&err);
    kvz_buf scratch = d;
    scratch.numel = 4; /* < D + H */
    rc = kvz_op_ridge_add(be, xp, xp, 2, 3, 2, scratch, kvz_buf_at(d, 4), &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "ridge add", "ridge add with scratch < D + H");
    kvz_error_clear(&err);
    kvz_buf bf = {x.data, KVZ_BF16, 128};
    rc = kvz_op_take_rows(be, bf, 4, NULL, 0, 2, xp, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "take rows", "take rows of a bfloat16 source");
    kvz_error_clear(&err);
    rc = kvz_op_adamw(be, xp, xp, xp, xp, 4,
                      &(kvz_adamw_args){0, 1e-3, 0.9, 0.999, 1e-8, 0.0}, &err);
    expect_err(be, rc, KVZ_EINVAL, &err, "adamw", "adamw with t=0");
    kvz_backend_free(be, &x), kvz_backend_free(be, &d);
}

static void test_trainer_ops(void)
{
    /* m, n, k: one row, one element, odd sizes, n = 1, k = 1, one long k */
    static const gemm_case gm[] = {
        {1, 1, 1},  {7, 13, 5}, {65, 3, 129}, {1, 37, 19},
        {3, 5, 2000}, {50, 1, 9}, {9, 11, 1}, {31, 64, 70},
    };
    for (size_t i = 0; i < sizeof gm / sizeof gm[0]; i++)
        test_gemm(&gm[i]);
    test_bias_rows(1, 1);
    test_bias_rows(7, 13);
    test_bias_rows(300, 65);
    test_col_sums(0, 5);
    test_col_sums(1, 1);
    test_col_sums(1, 37);
    test_col_sums(3000, 3);
    test_col_sums(257, 129);
    test_gelu(1, 0);
    test_gelu(16, 1);
    test_gelu(3001, 0);
    test_gelu(1000, 1);
    test_mse(1);
    test_mse(7);
    test_mse(1000);
    test_mse(4097);
    test_clip(1);
    test_clip(1000);
    test_clip(5001);
    /* count, steps, t0, lr, beta1, beta2, eps, weight decay */
    static const adamw_case ad[] = {
        {1, 1, 1, 1e-3, 0.9, 0.999, 1e-8, 0.01},
        {1000, 1, 1, 1e-3, 0.9, 0.999, 1e-8, 0.01},
        {4099, 5, 1, 3e-3, 0.9, 0.999, 1e-8, 0.1},  /* five steps from zero state */
        {777, 3, 1000, 1e-4, 0.8, 0.99, 1e-6, 0.0}, /* late steps, non-zero m and v */
    };
    for (size_t i = 0; i < sizeof ad / sizeof ad[0]; i++)
        test_adamw(&ad[i]);
    for (int mode = 0; mode < 3; mode++) {
        test_combine(1, 1, mode);
        test_combine(3, 1000, mode);
        test_combine(5, 4097, mode);
    }
    /* rows, width, extra elements, n, idx, row0 */
    test_take_rows(37, 5, 3, 13, 1, 0);
    test_take_rows(300, 64, 0, 1, 1, 0);
    test_take_rows(9, 3, 2, 40, 1, 0); /* repeated rows */
    test_take_rows(50, 1, 0, 50, 1, 0);
    test_take_rows(37, 5, 3, 37, 0, 0); /* contiguous: every row */
    test_take_rows(37, 5, 3, 3, 0, 34); /* the last three */
    test_take_rows(300, 64, 7, 100, 0, 101);
    /* n, D, H, scratch rows (+ extra doubles) */
    static const ridge_case rc[] = {
        {10, 7, 3, 3, 0},    /* 4 blocks */
        {10, 7, 3, 1, 5},    /* one row a block; scratch not a whole number of rows */
        {1, 1, 1, 1, 0},     {300, 33, 5, 64, 2}, {257, 16, 2, 300, 0}, /* one block */
    };
    for (size_t i = 0; i < sizeof rc / sizeof rc[0]; i++)
        test_ridge(&rc[i]);
    test_ridge_nonfinite();
    kvz_backend *all[5];
    int na = all_backends(all);
    for (int b = 0; b < na; b++)
        test_trainer_misc(all[b]);
}
/* (end of the trainer op tests) */

int main(void)
{
    const char *verbose = getenv("KVZ_TEST_VERBOSE");
    g_verbose = verbose && strcmp(verbose, "0") != 0;
    kvz_error err = {0};
    kvz_backend_options co = {KVZ_BACKEND_CPU, 0, 3}; /* several threads: many row items */
    int rc = kvz_backend_open(&co, &g_cpu, &err);
    KVZ_CHECK(rc == KVZ_OK, "open cpu: %s", err.msg);
    if (rc != KVZ_OK)
        return kvz_test_done();
    KVZ_CHECK(kvz_backend_host_memory(g_cpu) && kvz_backend_kind_of(g_cpu) == KVZ_BACKEND_CPU,
              "cpu backend head");
    printf("backend: %s\n", kvz_backend_name(g_cpu));
    if (kvz_backend_compiled(KVZ_BACKEND_CUDA)) {
        kvz_backend_options o = {KVZ_BACKEND_CUDA, 0, 0};
        kvz_backend *be = NULL;
        kvz_error_clear(&err);
        rc = kvz_backend_open(&o, &be, &err);
        if (rc == KVZ_OK) {
            g_other[g_n_other++] = be;
            printf("backend: %s%s\n", kvz_backend_name(be),
                   kvz_backend_emulated() ? " (the CPU emulator: large attention cases cpu only)"
                                       : "");
        } else {
            KVZ_CHECK(rc == KVZ_EUNSUPPORTED, "open cuda: rc %d: %s", rc, err.msg);
            printf("SKIP cuda: %s (the cpu part still runs)\n", err.msg);
        }
    } else {
        printf("SKIP cuda: not compiled in this build\n");
    }

    test_open_errors();
    test_errors(g_cpu);
    for (int b = 0; b < g_n_other; b++)
        test_errors(g_other[b]);
    test_splitmix();

    static const linear_case lin[] = {
        {1, 67, 129, 1},  {5, 67, 129, 0},   {3, 3000, 7, 1}, {37, 257, 300, 1},
        {300, 64, 65, 0}, {2, 33, 1100, 1}, /* n_out > the cpu's bf16 widening block (1024) */
        {1, 1, 1, 0},     {64, 128, 256, 1},
    };
    for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
        test_linear(&lin[i]);

    static const rmsnorm_case rms[] = {
        {1, 3000, 1e-6f, 0, 0}, {7, 67, 1e-5f, 1, 1},  {200, 129, 1e-6f, 0, 0},
        {35, 64, 1e-6f, 1, 0} /* per head: 5 tokens x 7 heads */, {1, 1, 1e-6f, 0, 0},
        {130, 80, 1e-5f, 0, 1},
    };
    for (size_t i = 0; i < sizeof rms / sizeof rms[0]; i++)
        test_rmsnorm(&rms[i]);

    static const rope_case rope[] = {
        {1, 7, 64, 4000, 10000.0, 0},    /* decode, far position */
        {7, 3, 80, 0, 10000.0, 0},       {33, 2, 128, 130, 500000.0, 1}, /* llama3 */
        {5, 1, 256, 17, 1000000.0, 0},   {1, 1, 64, 0, 10000.0, 0},      /* identity */
        {130, 4, 64, 0, 10000.0, 0},     {3, 9, 128, 8191, 500000.0, 1},
    };
    for (size_t i = 0; i < sizeof rope / sizeof rope[0]; i++)
        test_rope(&rope[i]);

    /* H, Hkv, head_dim, n_q, pos0, cpu block, scale (0: 1/sqrt(dh)), lse */
    static const attn_case att[] = {
        {4, 4, 64, 1, 300, 0, 0.0f, 1},      /* decode, G = 1 */
        {8, 4, 80, 1, 517, 64, 0.0f, 1},     /* decode, G = 2, 518 keys in blocks of 64 */
        {7, 1, 128, 29, 40, 16, 0.0f, 1},    /* G = 7, 69 keys in blocks of 16 */
        {2, 2, 256, 19, 0, 8, 0.0f, 1},      /* head_dim 256, prefill from 0 */
        {6, 3, 80, 5, 7, 3, 0.125f, 1},      /* block 3, another scale */
        {2, 1, 64, 100, 33, 32, 0.0f, 1},    /* n_q > block with pos0 > 0 */
        {4, 2, 128, 3, 60, 0, 0.0f, 0},      /* no lse */
        {14, 2, 64, 130, 0, 48, 0.0f, 1},    /* G = 7, long prefill (cpu only on the emulator) */
        {4, 2, 128, 65, 200, 0, 0.0f, 1},    /* 265 keys over the default block 256 */
        {1, 1, 64, 1, 0, 0, 0.0f, 1},        /* one key */
        {3, 3, 72, 4, 9, 5, 0.0f, 1},        /* head_dim 72: not a multiple of 16 */
    };
    for (size_t i = 0; i < sizeof att / sizeof att[0]; i++)
        test_attention(&att[i]);
    test_ragged(4, 2, 16, 50, 5, 60);
    test_ragged(6, 3, 40, 33, 1, 70);   /* decode: one query, head_dim not a multiple of 32 */
    test_ragged(8, 2, 128, 300, 17, 500);
    test_ragged(2, 2, 256, 20, 3, 10);  /* the largest head_dim */

    test_swiglu(1, 3000);
    test_swiglu(7, 67);
    test_swiglu(130, 129);
    test_swiglu(1, 1);

    test_add(1);
    test_add(67);
    test_add(9001);

    test_embed(50, 67, 9);
    test_embed(300, 3000, 2);
    test_embed(1, 1, 1);
    test_embed(1000, 64, 130);

    static const copy_case cp[] = {
        {5, 67, 201, 67, 67, 0},    /* the k block out of a fused q/k/v row */
        {1, 3000, 3000, 0, 3000, 0}, {200, 7, 21, 14, 9, 2}, {33, 128, 640, 512, 130, 1},
    };
    for (size_t i = 0; i < sizeof cp / sizeof cp[0]; i++)
        test_copy_rows(&cp[i]);

    test_convert();
    test_convert_f16();

    static const fill_case fl[] = {
        {1, 0, 0, 0, 0.02f, 0.0f},          {1001, 0, 42, 7, 0.5f, 0.0f},
        {4099, 3, 1234567, 99, 1.0f, 0.0f}, /* a view: i counts from the view */
        {77, 0, 5, 5, 0.0f, 1.0f},          /* constant */
        {33, 1, 5, 6, 0.0f, -0.3f},         {5000, 0, ~0ull, ~0ull, 3.0e-3f, 0.0f},
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        test_fill(&fl[i]);

    test_score_ops();
    test_trainer_ops();

    KVZ_CHECK(kvz_backend_bytes_held(g_cpu) == 0, "cpu: %zu bytes still held",
              kvz_backend_bytes_held(g_cpu));
    for (int b = 0; b < g_n_other; b++) {
        KVZ_CHECK(kvz_backend_bytes_held(g_other[b]) == 0, "%s: %zu bytes still held",
                  short_name(g_other[b]), kvz_backend_bytes_held(g_other[b]));
        kvz_backend_close(g_other[b]);
    }
    kvz_backend_close(g_cpu);

    printf("worst NMSE per op (budget; \"rel\": the worst relative error), over the cases "
           "run:\n");
    for (int i = 0; i < g_n_stats; i++)
        printf("  %-48s %9.3g  (budget %.0e, %d cases)\n", g_stats[i].name, g_stats[i].worst,
               g_stats[i].budget, g_stats[i].cases);
    return kvz_test_done();
}
