/* ops_cpu: the CPU implementation of ops/ops.h (threads, RMSNorm, SwiGLU,
 * argmax, RoPE tables and application, sgemm projections, blockwise causal
 * attention with an online softmax). */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/kvz_error.h"

/* ---------- threads ---------- */

static int g_threads = 0; /* 0: not set yet */

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void kvz_ops_set_threads(int n)
{
    g_threads = n > 0 ? n : online_cores();
    openblas_set_num_threads(g_threads);
}

int kvz_ops_threads(void)
{
    if (g_threads == 0)
        kvz_ops_set_threads(0);
    return g_threads;
}

/* A persistent pool: n-1 workers sleep on a condition variable between
 * jobs, so a parallel_for costs a wake-up, not thread creation (new threads
 * would also make OpenBLAS set up fresh per-thread buffers on every call).
 * One job at a time (callers are the single-threaded orchestration code);
 * nested calls from inside a job run inline. */
typedef struct parallel_pool {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    size_t n_workers;      /* started */
    atomic_ulong gen;      /* job generation */
    kvz_parallel_fn fn;
    void *ctx;
    size_t n_items;
    atomic_size_t next;
    atomic_size_t busy;    /* workers still inside the current job */
} parallel_pool;

/* Spin this many polls (tens of microseconds) before sleeping: the training
 * loop issues several short jobs per step, and a futex sleep/wake per job
 * costs more than the work. */
enum { POOL_SPIN = 20000 };

static parallel_pool g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                               PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL, 0, 0, 0};
static pthread_mutex_t g_pool_call = PTHREAD_MUTEX_INITIALIZER;

static inline void sched_yield_or_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
static _Thread_local int t_in_job;

static void run_items(parallel_pool *p, kvz_parallel_fn fn, void *ctx, size_t n_items)
{
    t_in_job = 1;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= n_items)
            break;
        fn(ctx, i);
    }
    t_in_job = 0;
}

static void *pool_worker(void *arg)
{
    parallel_pool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < POOL_SPIN && atomic_load(&p->gen) == seen; i++)
            sched_yield_or_pause();
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->gen) == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        seen = atomic_load(&p->gen);
        kvz_parallel_fn fn = p->fn;
        void *ctx = p->ctx;
        size_t n = p->n_items;
        pthread_mutex_unlock(&p->mu);
        run_items(p, fn, ctx, n);
        pthread_mutex_lock(&p->mu);
        if (atomic_fetch_sub(&p->busy, 1) == 1)
            pthread_cond_signal(&p->done);
    }
    return NULL;
}

/* Starts workers up to want (never stops them; they sleep when idle). */
static size_t pool_grow(parallel_pool *p, size_t want)
{
    while (p->n_workers < want) {
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&tid, &attr, pool_worker, p);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
        p->n_workers++;
    }
    return p->n_workers;
}

void kvz_parallel_for(size_t n_items, kvz_parallel_fn fn, void *ctx)
{
    size_t n_threads = (size_t)kvz_ops_threads();
    if (n_threads > n_items)
        n_threads = n_items;
    if (n_threads <= 1 || t_in_job || pthread_mutex_trylock(&g_pool_call) != 0) {
        for (size_t i = 0; i < n_items; i++) /* inline: one thread, nested or concurrent */
            fn(ctx, i);
        return;
    }
    parallel_pool *p = &g_pool;
    pthread_mutex_lock(&p->mu);
    size_t workers = pool_grow(p, n_threads - 1);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, workers);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_items(p, fn, ctx, n_items); /* the caller works too */
    for (int i = 0; i < POOL_SPIN && atomic_load(&p->busy) > 0; i++)
        sched_yield_or_pause();
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->busy) > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&g_pool_call);
}

/* ---------- elementwise ---------- */

void kvz_rmsnorm(const float *x, const float *w, float *y, size_t n_rows, size_t dim, float eps)
{
    for (size_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double sum = 0.0;
        for (size_t i = 0; i < dim; i++)
            sum += (double)xr[i] * (double)xr[i];
        float variance = (float)(sum / (double)dim);
        float inv = 1.0f / sqrtf(variance + eps);
        for (size_t i = 0; i < dim; i++)
            yr[i] = w[i] * (xr[i] * inv);
    }
}

void kvz_swiglu(const float *gate_up, float *out, size_t n_rows, size_t d_ff)
{
    for (size_t r = 0; r < n_rows; r++) {
        const float *g = gate_up + r * 2 * d_ff;
        const float *u = g + d_ff;
        float *o = out + r * d_ff;
        for (size_t i = 0; i < d_ff; i++) {
            float silu = g[i] / (1.0f + expf(-g[i]));
            o[i] = silu * u[i];
        }
    }
}

size_t kvz_argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* ---------- RoPE ---------- */

/* transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), float32. */
static float default_inv_freq(double theta, size_t i, size_t head_dim)
{
    float exponent = (float)(2 * i) / (float)head_dim;
    float power = (float)pow((double)(float)theta, (double)exponent);
    return 1.0f / power;
}

/* transformers' _compute_llama3_parameters, step by step in float32. */
static float llama3_scale(float inv_freq, const kvz_rope_scaling *s)
{
    float factor = (float)s->factor;
    float low = (float)s->low_freq_factor;
    double old_ctx = (double)s->original_max_position_embeddings;
    float low_freq_wavelen = (float)(old_ctx / s->low_freq_factor);
    float high_freq_wavelen = (float)(old_ctx / s->high_freq_factor);
    float wavelen = (1.0f / inv_freq) * (float)(2.0 * 3.14159265358979323846);
    float scaled = wavelen > low_freq_wavelen ? inv_freq / factor : inv_freq;
    int medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (!medium)
        return scaled;
    float smooth = ((1.0f / wavelen) * (float)old_ctx - low) / (float)(s->high_freq_factor - s->low_freq_factor);
    return (1.0f - smooth) * scaled / factor + smooth * scaled;
}

void kvz_rope_inv_freq_raw(double theta, size_t head_dim, const kvz_rope_scaling *scaling,
                           float *inv_freq)
{
    for (size_t i = 0; i < head_dim / 2; i++) {
        inv_freq[i] = default_inv_freq(theta, i, head_dim);
        if (scaling && scaling->type == KVZ_ROPE_SCALING_LLAMA3)
            inv_freq[i] = llama3_scale(inv_freq[i], scaling);
    }
}

void kvz_rope_inv_freq(const kvz_model_config *cfg, float *inv_freq)
{
    kvz_rope_inv_freq_raw(cfg->rope_theta, cfg->head_dim, &cfg->rope_scaling, inv_freq);
}

void kvz_rope_cos_sin(size_t pos, const float *inv_freq, size_t half, float *cs)
{
    for (size_t i = 0; i < half; i++) {
        float angle = (float)pos * inv_freq[i];
        cs[i] = cosf(angle);
        cs[half + i] = sinf(angle);
    }
}

void kvz_rope_apply(float *x, size_t n_tokens, size_t n_heads, size_t head_dim, size_t pos0,
                    const float *inv_freq)
{
    size_t half = head_dim / 2;
    float cs[512];
    float *buf = head_dim <= 512 ? cs : malloc(head_dim * sizeof *buf);
    if (!buf)
        return; /* head_dim > 512 and OOM: cannot happen for supported models */
    for (size_t t = 0; t < n_tokens; t++) {
        kvz_rope_cos_sin(pos0 + t, inv_freq, half, buf);
        for (size_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * head_dim;
            for (size_t i = 0; i < half; i++) {
                float c = buf[i], s = buf[half + i];
                float x1 = v[i], x2 = v[half + i];
                float a = x1 * c, b = x2 * s, d = x2 * c, e = x1 * s;
                v[i] = a - b;
                v[half + i] = d + e;
            }
        }
    }
    if (buf != cs)
        free(buf);
}

/* ---------- projections ---------- */

static double g_linear_seconds, g_linear_flops;

void kvz_ops_linear_stats(double *seconds, double *flops)
{
    *seconds = g_linear_seconds;
    *flops = g_linear_flops;
}

void kvz_ops_linear_stats_reset(void)
{
    g_linear_seconds = 0.0;
    g_linear_flops = 0.0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct linear_job {
    const float *x, *w;
    float *y;
    size_t n_rows, n_in, n_out, n_parts;
} linear_job;

static void linear_part(void *ctx, size_t p)
{
    const linear_job *j = ctx;
    size_t r0 = j->n_rows * p / j->n_parts, r1 = j->n_rows * (p + 1) / j->n_parts;
    if (r1 > r0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)(r1 - r0),
                    (blasint)j->n_out, (blasint)j->n_in, 1.0f, j->x + r0 * j->n_in,
                    (blasint)j->n_in, j->w, (blasint)j->n_in, 0.0f, j->y + r0 * j->n_out,
                    (blasint)j->n_out);
}

/* Large row counts: row slices on the ops' threads, one BLAS thread each
 * (OpenBLAS's own threads would spin-yield against the ops' pool). */
void kvz_linear(const float *x, const float *w, const float *bias, float *y, size_t n_rows,
                size_t n_in, size_t n_out)
{
    double t0 = now_seconds();
    size_t threads = (size_t)kvz_ops_threads();
    linear_job j = {x, w, y, n_rows, n_in, n_out, threads};
    if (threads > 1 && n_rows >= 64 * threads) {
        openblas_set_num_threads(1);
        kvz_parallel_for(threads, linear_part, &j);
        openblas_set_num_threads((int)threads);
    } else {
        j.n_parts = 1;
        linear_part(&j, 0);
    }
    if (bias)
        for (size_t r = 0; r < n_rows; r++)
            for (size_t o = 0; o < n_out; o++)
                y[r * n_out + o] += bias[o];
    g_linear_seconds += now_seconds() - t0;
    g_linear_flops += 2.0 * (double)n_rows * (double)n_in * (double)n_out;
}
