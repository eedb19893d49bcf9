/* backend_cpu: the cpu backend of ops/backend.h. Host memory (malloc),
 * every op finished when it returns, the arithmetic of ops/ops.h: OpenBLAS
 * sgemm for linear, the blockwise attention, RMSNorm and SwiGLU split over
 * the ops' thread pool in chunks of rows (per-row arithmetic, so results do
 * not depend on the thread count). bf16 weights and tables are widened to
 * fp32 (linear: a block of output rows at a time); attention always
 * computes in fp32. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

typedef struct cpu_backend {
    kvz_backend head;
    size_t peak;     /* largest head.bytes_held seen */
    float *widened;  /* bf16 linear: a block of W widened to fp32 */
    float *y_block;  /* bf16 linear: the block's outputs */
    size_t widened_floats, y_block_floats;
} cpu_backend;

/* ---------- memory ---------- */

static void cpu_close(kvz_backend *be)
{
    cpu_backend *c = (cpu_backend *)be;
    free(c->widened);
    free(c->y_block);
    free(c);
}

static int cpu_alloc(kvz_backend *be, size_t bytes, const char *what, void **out, kvz_error *err)
{
    cpu_backend *c = (cpu_backend *)be;
    *out = malloc(bytes);
    if (!*out)
        return kvz_fail(err, KVZ_ENOMEM, "cpu: cannot allocate %zu MiB for %s", bytes >> 20,
                        what);
    if (be->bytes_held + bytes > c->peak)
        c->peak = be->bytes_held + bytes;
    return KVZ_OK;
}

static void cpu_free(kvz_backend *be, void *p, size_t bytes)
{
    (void)be;
    (void)bytes;
    free(p);
}

static int cpu_copy(kvz_backend *be, void *dst, const void *src, size_t bytes, kvz_error *err)
{
    (void)be;
    (void)err;
    memmove(dst, src, bytes);
    return KVZ_OK;
}

static int cpu_sync(kvz_backend *be, kvz_error *err)
{
    (void)be;
    (void)err;
    return KVZ_OK;
}

static size_t cpu_peak(const kvz_backend *be)
{
    return ((const cpu_backend *)be)->peak;
}

/* ---------- ops ---------- */

/* Grows *buf to at least n floats. */
static int reserve(float **buf, size_t *have, size_t n)
{
    if (n <= *have)
        return 0;
    float *p = realloc(*buf, n * sizeof *p);
    if (!p)
        return -1;
    *buf = p;
    *have = n;
    return 0;
}

enum { WIDEN_ROWS = 1024 }; /* output rows of a bf16 W widened at a time */

static int cpu_linear(kvz_backend *be, const float *x, kvz_buf w, const float *bias, float *y,
                      size_t n, size_t n_in, size_t n_out, kvz_error *err)
{
    if (w.dtype == KVZ_F32) {
        kvz_linear(x, w.data, bias, y, n, n_in, n_out);
        return KVZ_OK;
    }
    if (w.dtype != KVZ_BF16)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "cpu: linear: %s weights are not supported",
                        kvz_dtype_name(w.dtype));
    cpu_backend *c = (cpu_backend *)be;
    size_t rows = n_out < WIDEN_ROWS ? n_out : WIDEN_ROWS;
    if (reserve(&c->widened, &c->widened_floats, rows * n_in) ||
        reserve(&c->y_block, &c->y_block_floats, n * rows))
        return kvz_fail(err, KVZ_ENOMEM, "cpu: linear: out of memory widening bf16 weights");
    const uint16_t *w16 = w.data;
    for (size_t o0 = 0; o0 < n_out; o0 += rows) {
        size_t cnt = n_out - o0 < rows ? n_out - o0 : rows;
        for (size_t i = 0; i < cnt * n_in; i++)
            c->widened[i] = kvz_bf16_widen(w16[o0 * n_in + i]);
        kvz_linear(x, c->widened, bias ? bias + o0 : NULL, c->y_block, n, n_in, cnt);
        for (size_t r = 0; r < n; r++)
            memcpy(y + r * n_out + o0, c->y_block + r * cnt, cnt * sizeof *y);
    }
    return KVZ_OK;
}

/* RMSNorm and SwiGLU over the thread pool, 64 rows per item. */
typedef struct rows_job {
    const float *in, *w;
    float *out;
    size_t n_rows, width;
    float eps;
} rows_job;

enum { ROWS_PER_ITEM = 64 };

static size_t item_rows(const rows_job *j, size_t i)
{
    size_t r0 = i * ROWS_PER_ITEM;
    return j->n_rows - r0 < ROWS_PER_ITEM ? j->n_rows - r0 : ROWS_PER_ITEM;
}

static void rmsnorm_item(void *ctx, size_t i)
{
    rows_job *j = ctx;
    size_t r0 = i * ROWS_PER_ITEM;
    kvz_rmsnorm(j->in + r0 * j->width, j->w, j->out + r0 * j->width, item_rows(j, i), j->width,
                j->eps);
}

static void swiglu_item(void *ctx, size_t i)
{
    rows_job *j = ctx;
    size_t r0 = i * ROWS_PER_ITEM;
    kvz_swiglu(j->in + r0 * 2 * j->width, j->out + r0 * j->width, item_rows(j, i), j->width);
}

static int cpu_rmsnorm(kvz_backend *be, const float *x, const float *w, float *y, size_t n_rows,
                       size_t dim, float eps, kvz_error *err)
{
    (void)be;
    (void)err;
    rows_job j = {x, w, y, n_rows, dim, eps};
    kvz_parallel_for((n_rows + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM, rmsnorm_item, &j);
    return KVZ_OK;
}

static int cpu_swiglu(kvz_backend *be, const float *gate_up, float *out, size_t n, size_t d_ff,
                      kvz_error *err)
{
    (void)be;
    (void)err;
    rows_job j = {gate_up, NULL, out, n, d_ff, 0.0f};
    kvz_parallel_for((n + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM, swiglu_item, &j);
    return KVZ_OK;
}

static int cpu_rope(kvz_backend *be, float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                    size_t pos0, const float *inv_freq, kvz_error *err)
{
    (void)be;
    (void)err;
    kvz_rope_apply(x, n_tokens, n_heads, head_dim, pos0, inv_freq);
    return KVZ_OK;
}

static int cpu_attention(kvz_backend *be, const kvz_attn_args *a, kvz_dtype compute,
                         kvz_error *err)
{
    (void)compute; /* always fp32 here */
    if (kvz_attention(a))
        return kvz_fail(err, KVZ_ENOMEM, "%s: attention: out of memory", be->name);
    return KVZ_OK;
}

static int cpu_add(kvz_backend *be, float *h, const float *d, size_t count, kvz_error *err)
{
    (void)be;
    (void)err;
    for (size_t i = 0; i < count; i++)
        h[i] += d[i];
    return KVZ_OK;
}

static int cpu_embed(kvz_backend *be, kvz_buf table, size_t dim, const int32_t *ids, size_t n,
                     float *h, kvz_error *err)
{
    (void)be;
    (void)err;
    for (size_t t = 0; t < n; t++) {
        size_t row = (size_t)ids[t] * dim;
        if (table.dtype == KVZ_F32) {
            memcpy(h + t * dim, (const float *)table.data + row, dim * sizeof *h);
        } else {
            const uint16_t *src = (const uint16_t *)table.data + row;
            for (size_t i = 0; i < dim; i++)
                h[t * dim + i] = kvz_bf16_widen(src[i]);
        }
    }
    return KVZ_OK;
}

static int cpu_copy_rows(kvz_backend *be, float *dst, size_t dst_stride, const float *src,
                         size_t src_stride, size_t n_rows, size_t width, kvz_error *err)
{
    (void)be;
    (void)err;
    for (size_t r = 0; r < n_rows; r++)
        memcpy(dst + r * dst_stride, src + r * src_stride, width * sizeof *dst);
    return KVZ_OK;
}

static int cpu_convert(kvz_backend *be, kvz_buf dst, kvz_buf src, kvz_error *err)
{
    (void)be;
    (void)err;
    if (src.dtype == KVZ_F32) { /* -> bf16 */
        const float *s = src.data;
        uint16_t *d = dst.data;
        for (size_t i = 0; i < src.numel; i++)
            d[i] = kvz_f32_to_bf16(s[i]);
    } else { /* bf16 -> f32 */
        const uint16_t *s = src.data;
        float *d = dst.data;
        for (size_t i = 0; i < src.numel; i++)
            d[i] = kvz_bf16_widen(s[i]);
    }
    return KVZ_OK;
}

static int cpu_fill(kvz_backend *be, kvz_buf b, uint64_t seed, uint64_t tensor, float bound,
                    float value, kvz_error *err)
{
    (void)be;
    (void)err;
    uint64_t key = kvz_fill_key(seed, tensor);
    for (size_t i = 0; i < b.numel; i++) {
        float x = value;
        if (bound != 0.0f) {
            float u = (float)(kvz_splitmix64(key + i) >> 40) * (1.0f / 16777216.0f);
            x = (2.0f * u - 1.0f) * bound;
        }
        if (b.dtype == KVZ_F32)
            ((float *)b.data)[i] = x;
        else
            ((uint16_t *)b.data)[i] = kvz_f32_to_bf16(x);
    }
    return KVZ_OK;
}

static void *cpu_host_alloc(kvz_backend *be, size_t bytes)
{
    (void)be;
    return malloc(bytes);
}

static void cpu_host_free(kvz_backend *be, void *p)
{
    (void)be;
    free(p);
}

/* ---------- KVzip+ score (cpu) ---------- */
/* (end of the KVzip+ score, cpu) */

/* ---------- trainer ops (cpu) ---------- */
/* (end of the trainer ops, cpu) */

static const kvz_backend_ops CPU_OPS = {
    .close = cpu_close,         .alloc = cpu_alloc,       .free = cpu_free,
    .upload = cpu_copy,         .download = cpu_copy,     .copy = cpu_copy,
    .sync = cpu_sync,           .peak_bytes = cpu_peak,   .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,   .linear = cpu_linear,
    .rmsnorm = cpu_rmsnorm,     .rope = cpu_rope,         .attention = cpu_attention,
    .swiglu = cpu_swiglu,       .add = cpu_add,           .embed = cpu_embed,
    .copy_rows = cpu_copy_rows, .convert = cpu_convert,   .fill = cpu_fill,
    /* KVzip+ score */
    /* trainer */
};

int kvz_backend_cpu_open(const kvz_backend_options *opt, kvz_backend **out, kvz_error *err)
{
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c)
        return kvz_fail(err, KVZ_ENOMEM, "cpu: out of memory");
    c->head.ops = &CPU_OPS;
    c->head.kind = KVZ_BACKEND_CPU;
    c->head.host_memory = 1;
    snprintf(c->head.name, sizeof c->head.name, "cpu");
    kvz_ops_set_threads(opt ? opt->n_threads : 0);
    *out = &c->head;
    return KVZ_OK;
}
