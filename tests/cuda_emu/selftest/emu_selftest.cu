/* emu_selftest.cu: self-test kernels and cases for the kvzap CUDA emulator,
 * linked into tests/test_gpu_emulator only in KVZ_CUDA_EMU builds. Each case
 * checks the emulator against hand-computed values or a naive loop that
 * follows NVIDIA's documented definition, and writes what went wrong into a
 * report: cuBLAS (every transpose combination, strides, beta = 0, types,
 * argument errors), bf16/fp16 rounding ties, a shared-memory block
 * reduction, warp shuffles, launch-configuration errors, guard-byte and
 * host-pointer faults, divergent barriers and a missing __syncthreads
 * exposed by the rotating schedule. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

/* ---------- report ---------- */

static char *g_report;
static size_t g_cap;
static int g_fails;

static void fail(const char *fmt, ...)
{
    size_t used = strlen(g_report);
    if (used + 2 < g_cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_report + used, g_cap - used - 1, fmt, ap);
        va_end(ap);
        used = strlen(g_report);
        g_report[used] = '\n';
        g_report[used + 1] = '\0';
    }
    g_fails++;
}

#define EXPECT(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond))                                                                          \
            fail(__VA_ARGS__);                                                                \
    } while (0)

/* Device copy of host data (n elements of T). */
template <class T> static T *upload(const T *h, size_t n)
{
    T *d = NULL;
    if (cudaMalloc(&d, n * sizeof(T)) != cudaSuccess)
        return NULL;
    cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}

static bool close_to(double got, double ref, double rtol)
{
    return fabs(got - ref) <= 1e-6 + rtol * fabs(ref);
}

/* ---------- kernels ---------- */

enum { SUM_THREADS = 128 };

/* out[block] = sum of in[block * SUM_THREADS + t], shared-memory tree. */
static __global__ void block_sum_kernel(const float *in, size_t n, float *out)
{
    __shared__ float part[SUM_THREADS];
    size_t i = blockIdx.x * (size_t)SUM_THREADS + threadIdx.x;
    part[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (unsigned s = SUM_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = part[0];
}

/* The same without the barriers: thread 0 sums before the others wrote. */
static __global__ void racy_sum_kernel(float *out)
{
    __shared__ float part[SUM_THREADS];
    part[threadIdx.x] = 1.0f;
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (unsigned t = 0; t < SUM_THREADS; t++)
            s += part[t];
        out[blockIdx.x] = s;
    }
}

/* Dynamic shared memory: each thread stores its index, thread 0 sums them. */
static __global__ void dynamic_sum_kernel(unsigned n_slots, float *out)
{
    extern __shared__ float slots[];
    for (unsigned i = threadIdx.x; i < n_slots; i += blockDim.x)
        slots[i] = (float)i;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (unsigned i = 0; i < n_slots; i++)
            s += slots[i];
        *out = s;
    }
}

/* Per thread: xor-butterfly warp sum, the next lane's value, lane 3's value. */
static __global__ void shuffle_kernel(int *sum, int *down, int *bcast, int *ballot)
{
    int t = (int)threadIdx.x, v = t * t + 1;
    int s = v;
    for (int m = 16; m > 0; m >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, m);
    sum[t] = s;
    down[t] = __shfl_down_sync(0xffffffffu, v, 1);
    bcast[t] = __shfl_sync(0xffffffffu, v, 3);
    ballot[t] = (int)__ballot_sync(0xffffffffu, t % 3 == 0);
}

static __global__ void write_kernel(float *p, size_t n)
{
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        p[i] = 1.0f;
}

static __global__ void divergent_barrier_kernel(float *p)
{
    if (threadIdx.x >= 16)
        return;
    __syncthreads();
    p[threadIdx.x] = 2.0f;
}

static __global__ void partial_warp_shuffle_kernel(int *p)
{
    p[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

/* ---------- cases ---------- */

/* op(X)(i, l) of a column-major matrix with leading dimension ld. */
static double op_at(const float *x, int ld, bool trans, int i, int l)
{
    return trans ? x[l + (size_t)i * ld] : x[i + (size_t)l * ld];
}

static void case_sgemm_hand(void)
{
    /* A = [1 2 3; 4 5 6], B = [7 8; 9 10; 11 12], A B = [58 64; 139 154] */
    const float a[] = {1, 4, 2, 5, 3, 6}, b[] = {7, 9, 11, 8, 10, 12};
    float c[4] = {NAN, NAN, NAN, NAN};
    float *da = upload(a, 6), *db = upload(b, 6), *dc = upload(c, 4);
    cublasHandle_t h;
    EXPECT(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    const float one = 1.0f, zero = 0.0f;
    /* beta = 0: C (NaN) must not be read */
    cublasStatus_t st = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, da, 2, db, 3,
                                    &zero, dc, 2);
    EXPECT(st == CUBLAS_STATUS_SUCCESS, "sgemm status %d", (int)st);
    cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
    const float want[] = {58, 139, 64, 154};
    for (int i = 0; i < 4; i++)
        EXPECT(c[i] == want[i], "hand sgemm C[%d] = %g, want %g", i, c[i], want[i]);
    /* argument errors as cuBLAS reports them */
    EXPECT(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, da, 1, db, 3, &zero, dc, 2) ==
               CUBLAS_STATUS_INVALID_VALUE,
           "lda < m accepted");
    EXPECT(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 3, &one, da, 2, db, 3, &zero, dc, 2) ==
               CUBLAS_STATUS_INVALID_VALUE,
           "op T with lda < k accepted");
    EXPECT(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 3, &one, da, 2, db, 3, &zero, dc, 2) ==
               CUBLAS_STATUS_INVALID_VALUE,
           "m < 0 accepted");
    EXPECT(cublasSgemm(NULL, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, da, 2, db, 3, &zero, dc,
                       2) == CUBLAS_STATUS_NOT_INITIALIZED,
           "NULL handle accepted");
    cublasDestroy(h);
    cudaFree(da), cudaFree(db), cudaFree(dc);
}

/* Every (transa, transb) with padded leading dimensions, alpha, beta != 0,
 * and a strided batch (B shared: stride 0), against the documented formula. */
static void case_sgemm_all_transposes(void)
{
    const int m = 5, n = 7, k = 3, batch = 3;
    cublasHandle_t h;
    cublasCreate(&h);
    cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
            int lda = ar + 2, ldb = br + 1, ldc = m + 3;
            size_t sa = (size_t)lda * ac + 5, sc = (size_t)ldc * n + 2;
            size_t na = sa * batch, nb = (size_t)ldb * bc, nc = sc * batch;
            float *a = (float *)malloc(na * 4), *b = (float *)malloc(nb * 4);
            float *c = (float *)malloc(nc * 4), *got = (float *)malloc(nc * 4);
            for (size_t i = 0; i < na; i++)
                a[i] = (float)((int)(i * 7 % 11) - 5) * 0.25f;
            for (size_t i = 0; i < nb; i++)
                b[i] = (float)((int)(i * 5 % 13) - 6) * 0.5f;
            for (size_t i = 0; i < nc; i++)
                c[i] = (float)((int)(i % 9) - 4);
            float *da = upload(a, na), *db = upload(b, nb), *dc = upload(c, nc);
            const float alpha = 1.5f, beta = -0.5f;
            cublasStatus_t st = cublasSgemmStridedBatched(
                h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                &alpha, da, lda, (long long)sa, db, ldb, 0, &beta, dc, ldc, (long long)sc, batch);
            EXPECT(st == CUBLAS_STATUS_SUCCESS, "strided sgemm ta=%d tb=%d status %d", ta, tb,
                   (int)st);
            cudaMemcpy(got, dc, nc * 4, cudaMemcpyDeviceToHost);
            for (int p = 0; p < batch; p++)
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < m; i++) {
                        double acc = 0;
                        for (int l = 0; l < k; l++)
                            acc += op_at(a + p * sa, lda, ta, i, l) * op_at(b, ldb, tb, l, j);
                        size_t ci = p * sc + i + (size_t)j * ldc;
                        double ref = alpha * acc + beta * c[ci];
                        EXPECT(close_to(got[ci], ref, 1e-6),
                               "strided sgemm ta=%d tb=%d batch %d C(%d,%d) = %.8g, want %.8g",
                               ta, tb, p, i, j, got[ci], ref);
                    }
            /* padding between columns and batches untouched */
            for (int p = 0; p < batch; p++)
                for (int j = 0; j < n; j++)
                    for (int i = m; i < ldc && (size_t)(i + j * ldc) < sc; i++) {
                        size_t ci = p * sc + i + (size_t)j * ldc;
                        EXPECT(got[ci] == c[ci], "padding C[%zu] written", ci);
                    }
            cudaFree(da), cudaFree(db), cudaFree(dc);
            free(a), free(b), free(c), free(got);
        }
    cublasDestroy(h);
}

static void case_gemm_ex(void)
{
    const int m = 3, n = 2, k = 4;
    float a[m * k], b[k * n];
    for (int i = 0; i < m * k; i++)
        a[i] = 1.0f + (float)i / 256.0f + 1.0f / 4096.0f; /* not bf16-exact */
    for (int i = 0; i < k * n; i++)
        b[i] = (float)(i % 5) - 2.0f;
    __nv_bfloat16 ab[m * k], bb[k * n];
    for (int i = 0; i < m * k; i++)
        ab[i] = __float2bfloat16_rn(a[i]);
    for (int i = 0; i < k * n; i++)
        bb[i] = __float2bfloat16_rn(b[i]);
    __nv_bfloat16 *dab = upload(ab, m * k), *dbb = upload(bb, k * n);
    float *dc = NULL;
    __nv_bfloat16 *dcb = NULL;
    cudaMalloc(&dc, m * n * sizeof(float));
    cudaMalloc(&dcb, m * n * sizeof(__nv_bfloat16));
    cublasHandle_t h;
    cublasCreate(&h);
    const float one = 1.0f, zero = 0.0f;
    /* op(A) = A^T: A stored k x m (lda k) */
    cublasStatus_t st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, dab, CUDA_R_16BF,
                                     k, dbb, CUDA_R_16BF, k, &zero, dc, CUDA_R_32F, m,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    EXPECT(st == CUBLAS_STATUS_SUCCESS, "GemmEx bf16->f32 status %d", (int)st);
    st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, dab, CUDA_R_16BF, k, dbb,
                      CUDA_R_16BF, k, &zero, dcb, CUDA_R_16BF, m, CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT);
    EXPECT(st == CUBLAS_STATUS_SUCCESS, "GemmEx bf16->bf16 status %d", (int)st);
    float c[m * n];
    __nv_bfloat16 cb[m * n];
    cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
    cudaMemcpy(cb, dcb, sizeof cb, cudaMemcpyDeviceToHost);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0;
            for (int l = 0; l < k; l++)
                acc += (double)__bfloat162float(ab[l + i * k]) * __bfloat162float(bb[l + j * k]);
            EXPECT(close_to(c[i + j * m], acc, 1e-6), "GemmEx f32 C(%d,%d) = %.8g, want %.8g",
                   i, j, c[i + j * m], acc);
            float want_b = __bfloat162float(__float2bfloat16_rn((float)acc));
            EXPECT(__bfloat162float(cb[i + j * m]) == want_b,
                   "GemmEx bf16 C(%d,%d) = %.8g, want %.8g", i, j,
                   __bfloat162float(cb[i + j * m]), want_b);
        }
    /* type combinations cuBLAS lacks, and a bad algo */
    EXPECT(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dab, CUDA_R_16BF, m, dbb,
                        CUDA_R_16F, k, &zero, dc, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
           "GemmEx bf16 x fp16 accepted");
    EXPECT(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dab, CUDA_R_16BF, m, dbb,
                        CUDA_R_16BF, k, &zero, dc, CUDA_R_32F, m, CUBLAS_COMPUTE_32F_FAST_TF32,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
           "GemmEx bf16 with FAST_TF32 accepted");
    /* TF32: 1 + 2^-12 rounds to 1 in the inputs */
    float x = 1.0f + 1.0f / 4096.0f, y = 1.0f, r = 0.0f;
    float *dx = upload(&x, 1), *dy = upload(&y, 1), *dr = upload(&r, 1);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dx, CUDA_R_32F, 1, dy, CUDA_R_32F, 1,
                 &zero, dr, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&r, dr, 4, cudaMemcpyDeviceToHost);
    EXPECT(r == 1.0f, "TF32 product of 1+2^-12 and 1 = %.9g, want 1", r);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dx, CUDA_R_32F, 1, dy, CUDA_R_32F, 1,
                 &zero, dr, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&r, dr, 4, cudaMemcpyDeviceToHost);
    EXPECT(r == x, "pedantic product = %.9g, want %.9g", r, x);
    cublasDestroy(h);
    cudaFree(dab), cudaFree(dbb), cudaFree(dc), cudaFree(dcb), cudaFree(dx), cudaFree(dy),
        cudaFree(dr);
}

static void case_dsyrk_dgemm_sgemv(void)
{
    const int n = 4, k = 3, lda = 5, ldc = 6;
    double a[lda * n], c0[ldc * n]; /* A as n x k (lda >= n) or k x n (lda >= k); n > k */
    for (int i = 0; i < lda * n; i++)
        a[i] = (double)((i * 3) % 7) - 3.0;
    for (int i = 0; i < ldc * n; i++)
        c0[i] = -100.0 - i;
    cublasHandle_t h;
    cublasCreate(&h);
    const double one = 1.0, half = 0.5;
    for (int up = 0; up < 2; up++)
        for (int tr = 0; tr < 2; tr++) {
            /* trans N: A n x k (lda >= n); trans T: A k x n (lda >= k) */
            double *da = upload(a, lda * (tr ? n : k)), *dc = upload(c0, ldc * n), c[ldc * n];
            cublasStatus_t st = cublasDsyrk(h, up ? CUBLAS_FILL_MODE_UPPER : CUBLAS_FILL_MODE_LOWER,
                                            tr ? CUBLAS_OP_T : CUBLAS_OP_N, n, k, &one, da, lda,
                                            &half, dc, ldc);
            EXPECT(st == CUBLAS_STATUS_SUCCESS, "dsyrk status %d", (int)st);
            cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
            for (int j = 0; j < n; j++)
                for (int i = 0; i < ldc; i++) {
                    bool in_tri = i < n && (up ? i <= j : i >= j);
                    double want = c0[i + j * ldc];
                    if (in_tri) {
                        double acc = 0;
                        for (int l = 0; l < k; l++)
                            acc += (tr ? a[l + i * lda] : a[i + l * lda]) *
                                   (tr ? a[l + j * lda] : a[j + l * lda]);
                        want = acc + 0.5 * want;
                    }
                    EXPECT(c[i + j * ldc] == want, "dsyrk up=%d trans=%d C[%d,%d] = %g, want %g",
                           up, tr, i, j, c[i + j * ldc], want);
                }
            cudaFree(da), cudaFree(dc);
        }
    double *dummy = upload(a, lda * k);
    EXPECT(cublasDsyrk(h, CUBLAS_FILL_MODE_FULL, CUBLAS_OP_N, n, k, &one, dummy, lda, &one, dummy,
                       lda) == CUBLAS_STATUS_INVALID_VALUE,
           "dsyrk FULL accepted");
    /* dgemm: C (2x2) = A^T (2x3 of a 3x2 A, lda 3) B (3x2, ldb 3) */
    const double ga[] = {1, 2, 3, 4, 5, 6}, gb[] = {1, 0, 1, 0, 1, 0};
    double gc[4] = {NAN, NAN, NAN, NAN};
    double *dga = upload(ga, 6), *dgb = upload(gb, 6), *dgc = upload(gc, 4);
    const double zero = 0.0;
    cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 3, &one, dga, 3, dgb, 3, &zero, dgc, 2);
    cudaMemcpy(gc, dgc, sizeof gc, cudaMemcpyDeviceToHost);
    const double gwant[] = {4, 10, 2, 5}; /* A^T = [1 2 3; 4 5 6]; B cols (1,0,1), (0,1,0) */
    for (int i = 0; i < 4; i++)
        EXPECT(gc[i] == gwant[i], "dgemm C[%d] = %g, want %g", i, gc[i], gwant[i]);
    /* sgemv: y = A x (A 2x3, lda 2), incx 2; then A^T y with incy -1 */
    const float va[] = {1, 4, 2, 5, 3, 6}, vx[] = {1, -9, 1, -9, 1};
    float vy[2] = {NAN, NAN}, vz[3] = {7, 7, 7};
    float *dva = upload(va, 6), *dvx = upload(vx, 5), *dvy = upload(vy, 2), *dvz = upload(vz, 3);
    const float fone = 1.0f, fzero = 0.0f;
    cublasSgemv(h, CUBLAS_OP_N, 2, 3, &fone, dva, 2, dvx, 2, &fzero, dvy, 1);
    cudaMemcpy(vy, dvy, sizeof vy, cudaMemcpyDeviceToHost);
    EXPECT(vy[0] == 6 && vy[1] == 15, "sgemv N: y = (%g, %g), want (6, 15)", vy[0], vy[1]);
    cublasSgemv(h, CUBLAS_OP_T, 2, 3, &fone, dva, 2, dvy, 1, &fzero, dvz, -1);
    cudaMemcpy(vz, dvz, sizeof vz, cudaMemcpyDeviceToHost);
    /* A^T y = (66, 87, 108), stored backwards with incy -1 */
    EXPECT(vz[0] == 108 && vz[1] == 87 && vz[2] == 66, "sgemv T incy -1: (%g, %g, %g)", vz[0],
           vz[1], vz[2]);
    EXPECT(cublasSgemv(h, CUBLAS_OP_N, 2, 3, &fone, dva, 2, dvx, 0, &fzero, dvy, 1) ==
               CUBLAS_STATUS_INVALID_VALUE,
           "sgemv incx 0 accepted");
    cublasDestroy(h);
    cudaFree(dummy), cudaFree(dga), cudaFree(dgb), cudaFree(dgc);
    cudaFree(dva), cudaFree(dvx), cudaFree(dvy), cudaFree(dvz);
}

static void case_half_rounding(void)
{
    struct {
        float f;
        unsigned short bf16;
    } bt[] = {
        {1.0f, 0x3f80},
        {1.00390625f, 0x3f80},      /* 1 + 2^-8: tie, even -> 1 */
        {1.01171875f, 0x3f82},      /* 1 + 3*2^-8: tie, odd -> up */
        {0x1.010002p+0f, 0x3f81},   /* just above the tie */
        {-2.0078125f, 0xc000},      /* -(2 + 2^-7): tie to even */
        {0x1.ffp+127f, 0x7f80},     /* tie above the largest bf16: to infinity */
        {0x1.fep+127f, 0x7f7f},     /* the largest bf16 */
        {INFINITY, 0x7f80},
        {NAN, 0x7fff},
    };
    for (size_t i = 0; i < sizeof bt / sizeof bt[0]; i++) {
        __nv_bfloat16 b = __float2bfloat16_rn(bt[i].f);
        EXPECT(__bfloat16_as_ushort(b) == bt[i].bf16, "bf16(%.9g) = 0x%04x, want 0x%04x",
               bt[i].f, __bfloat16_as_ushort(b), bt[i].bf16);
    }
    struct {
        float f;
        unsigned short h;
    } ht[] = {
        {1.0f, 0x3c00},
        {1.00048828125f, 0x3c00},   /* 1 + 2^-11: tie, even -> 1 */
        {1.00146484375f, 0x3c02},   /* 1 + 3*2^-11: tie, odd -> up */
        {65504.0f, 0x7bff},
        {65519.0f, 0x7bff},
        {65520.0f, 0x7c00},         /* tie at max: rounds to infinity */
        {5.9604645e-08f, 0x0001},   /* 2^-24: smallest subnormal */
        {2.9802322e-08f, 0x0000},   /* 2^-25: tie, even -> 0 */
        {8.940697e-08f, 0x0002},    /* 1.5 * 2^-24: tie, odd -> up */
        {6.1035156e-05f, 0x0400},   /* 2^-14: smallest normal */
        {-0.0f, 0x8000},
        {NAN, 0x7fff},
    };
    for (size_t i = 0; i < sizeof ht / sizeof ht[0]; i++) {
        __half h = __float2half_rn(ht[i].f);
        EXPECT(__half_as_ushort(h) == ht[i].h, "half(%.9g) = 0x%04x, want 0x%04x", ht[i].f,
               __half_as_ushort(h), ht[i].h);
        if (ht[i].f == ht[i].f && ht[i].h != 0x7c00 && fabsf(ht[i].f) != 65519.0f &&
            ht[i].h != 0 && ht[i].f != 1.00048828125f && ht[i].f != 1.00146484375f &&
            ht[i].f != 8.940697e-08f)
            EXPECT(__half2float(h) == ht[i].f, "half round trip of %.9g gives %.9g", ht[i].f,
                   __half2float(h));
    }
    EXPECT(__half2float(__ushort_as_half(0x7c00)) == INFINITY, "half 0x7c00 is not +inf");
    EXPECT(__bfloat162float(__ushort_as_bfloat16(0xc0a0)) == -5.0f, "bf16 0xc0a0 is not -5");
}

static void case_block_reduction(void)
{
    const size_t n = 1000; /* 8 blocks, the last one partial */
    float in[n], out[8];
    for (size_t i = 0; i < n; i++)
        in[i] = (float)(i % 17);
    float *din = upload(in, n), *dout = NULL;
    cudaMalloc(&dout, sizeof out);
    block_sum_kernel<<<8, SUM_THREADS>>>(din, n, dout);
    EXPECT(cudaGetLastError() == cudaSuccess, "block_sum launch");
    cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost);
    for (int b = 0; b < 8; b++) {
        double want = 0;
        for (size_t i = b * SUM_THREADS; i < n && i < (size_t)(b + 1) * SUM_THREADS; i++)
            want += in[i];
        EXPECT(out[b] == (float)want, "block %d sum %g, want %g", b, out[b], want);
    }
    /* dynamic shared memory: 3000 floats, then 20000 (80 KB: needs the opt-in) */
    float *ds = NULL, s = 0;
    cudaMalloc(&ds, sizeof(float));
    dynamic_sum_kernel<<<1, 96, 3000 * sizeof(float)>>>(3000, ds);
    cudaMemcpy(&s, ds, sizeof s, cudaMemcpyDeviceToHost);
    EXPECT(s == 3000.0f * 2999.0f / 2.0f, "dynamic smem sum %g", s);
    dynamic_sum_kernel<<<1, 96, 20000 * sizeof(float)>>>(20000, ds);
    cudaError_t rc = cudaGetLastError();
    EXPECT(rc == cudaErrorInvalidValue, "80 KB smem without opt-in: %s", cudaGetErrorName(rc));
    EXPECT(cudaFuncSetAttribute(dynamic_sum_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                20000 * sizeof(float)) == cudaSuccess,
           "opt-in to 80 KB refused");
    dynamic_sum_kernel<<<1, 96, 20000 * sizeof(float)>>>(20000, ds);
    EXPECT(cudaGetLastError() == cudaSuccess, "80 KB smem with opt-in failed");
    EXPECT(cudaFuncSetAttribute(dynamic_sum_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                300 * 1024) == cudaErrorInvalidValue,
           "opt-in to 300 KB accepted");
    (void)cudaGetLastError(); /* failed calls set the last error, as in CUDA */
    cudaFree(din), cudaFree(dout), cudaFree(ds);
}

static void case_missing_syncthreads(void)
{
    float *d = NULL, out[2];
    cudaMalloc(&d, sizeof out);
    racy_sum_kernel<<<2, SUM_THREADS>>>(d);
    cudaMemcpy(out, d, sizeof out, cudaMemcpyDeviceToHost);
    /* a correct kernel gives 128 in both blocks; the emulator must not */
    EXPECT(!(out[0] == (float)SUM_THREADS && out[1] == (float)SUM_THREADS),
           "a missing __syncthreads went unnoticed (sums %g, %g)", out[0], out[1]);
    cudaFree(d);
}

static void case_shuffles(void)
{
    const int T = 64;
    int *d = NULL, h[4 * T];
    cudaMalloc(&d, sizeof h);
    shuffle_kernel<<<1, T>>>(d, d + T, d + 2 * T, d + 3 * T);
    cudaError_t rc = cudaGetLastError();
    EXPECT(rc == cudaSuccess, "shuffle launch: %s", cudaGetErrorString(rc));
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    for (int t = 0; t < T; t++) {
        int w0 = t - t % 32, sum = 0;
        unsigned ballot = 0;
        for (int l = 0; l < 32; l++) {
            sum += (w0 + l) * (w0 + l) + 1;
            ballot |= (unsigned)((w0 + l) % 3 == 0) << l;
        }
        int next = t % 32 == 31 ? t : t + 1;
        EXPECT(h[t] == sum, "xor sum lane %d: %d, want %d", t, h[t], sum);
        EXPECT(h[T + t] == next * next + 1, "shfl_down lane %d: %d", t, h[T + t]);
        EXPECT(h[2 * T + t] == (w0 + 3) * (w0 + 3) + 1, "shfl lane %d: %d", t, h[2 * T + t]);
        EXPECT((unsigned)h[3 * T + t] == ballot, "ballot lane %d: 0x%x, want 0x%x", t,
               (unsigned)h[3 * T + t], ballot);
    }
    cudaFree(d);
}

static void case_launch_errors(void)
{
    float *d = NULL;
    cudaMalloc(&d, 64 * sizeof(float));
    write_kernel<<<1, 1025>>>(d, 64);
    cudaError_t rc = cudaGetLastError();
    EXPECT(rc == cudaErrorInvalidConfiguration, "1025 threads: %s", cudaGetErrorName(rc));
    EXPECT(cudaGetLastError() == cudaSuccess, "the launch error is not cleared");
    write_kernel<<<dim3(1, 70000), 32>>>(d, 64);
    rc = cudaGetLastError();
    EXPECT(rc == cudaErrorInvalidConfiguration, "grid y 70000: %s", cudaGetErrorName(rc));
    write_kernel<<<0, 32>>>(d, 64);
    rc = cudaGetLastError();
    EXPECT(rc == cudaErrorInvalidConfiguration, "grid 0: %s", cudaGetErrorName(rc));
    EXPECT(cudaDeviceSynchronize() == cudaSuccess, "a config error became sticky");
    /* memory API checks */
    float host[4];
    rc = cudaMemcpy(d + 62, host, sizeof host, cudaMemcpyHostToDevice);
    EXPECT(rc == cudaErrorInvalidValue, "copy past the allocation: %s", cudaGetErrorName(rc));
    rc = cudaMemcpy(host, d, sizeof host, cudaMemcpyHostToDevice);
    EXPECT(rc == cudaErrorInvalidValue, "H2D into host memory: %s", cudaGetErrorName(rc));
    size_t free0 = 0, total = 0, free1 = 0;
    cudaMemGetInfo(&free0, &total);
    void *big = NULL;
    rc = cudaMalloc(&big, total + 1);
    EXPECT(rc == cudaErrorMemoryAllocation && !big, "cudaMalloc beyond the budget: %s",
           cudaGetErrorName(rc));
    (void)cudaGetLastError();
    cudaMalloc(&big, 1 << 20);
    cudaMemGetInfo(&free1, &total);
    EXPECT(free0 - free1 == (1 << 20), "cudaMemGetInfo: 1 MiB allocation took %zu bytes",
           free0 - free1);
    cudaFree(big);
    cudaEvent_t e0, e1;
    float ms = -1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    EXPECT(cudaEventElapsedTime(&ms, e0, e1) == cudaErrorInvalidResourceHandle,
           "elapsed time of unrecorded events");
    cudaEventRecord(e0), cudaEventRecord(e1), cudaEventSynchronize(e1);
    EXPECT(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms >= 0, "elapsed time %g", ms);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    (void)cudaGetLastError();
    cudaFree(d);
}

/* Faults are sticky: each is checked, then the device is reset. */
static void expect_fault(cudaError_t want, const char *needle, const char *what)
{
    cudaError_t last = cudaGetLastError(), sync = cudaDeviceSynchronize();
    const char *msg = cudaGetErrorString(sync);
    EXPECT(last == want && sync == want, "%s: cudaGetLastError %s, sync %s, want %s", what,
           cudaGetErrorName(last), cudaGetErrorName(sync), cudaGetErrorName(want));
    EXPECT(strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, msg, needle);
    void *p = NULL;
    EXPECT(cudaMalloc(&p, 16) == want, "%s: fault not sticky", what);
    cudaDeviceReset();
    EXPECT(cudaDeviceSynchronize() == cudaSuccess, "%s: cudaDeviceReset left an error", what);
}

static void case_faults(void)
{
    float *d = NULL;
    cudaMalloc(&d, 10 * sizeof(float));
    write_kernel<<<1, 32>>>(d, 11); /* one float too many */
    expect_fault(cudaErrorIllegalAddress, "write_kernel", "overrun");

    float host[16];
    write_kernel<<<1, 32>>>(host, 16);
    expect_fault(cudaErrorIllegalAddress, "not in any device allocation", "host pointer");

    cudaMalloc(&d, 32 * sizeof(float));
    divergent_barrier_kernel<<<1, 32>>>(d);
    expect_fault(cudaErrorLaunchFailure, "__syncthreads reached by 16 of 32", "divergent barrier");

    int *di = NULL;
    cudaMalloc(&di, 48 * sizeof(int));
    partial_warp_shuffle_kernel<<<1, 48>>>(di);
    expect_fault(cudaErrorIllegalInstruction, "partial warp", "partial-warp shuffle");
}

/* ---------- wmma ---------- */

enum { WM_LDA = 24, WM_LDB = 40, WM_LDC = 20 };

/* One warp: d = a b + c with a row-major [16][WM_LDA], b col-major (column j
 * at b + j*WM_LDB), c and d row-major [16][WM_LDC]; d stored twice, the
 * second time column-major at d2. */
static __global__ void wmma_kernel(const __nv_bfloat16 *a, const __nv_bfloat16 *b, const float *c,
                                   float *d, float *d2)
{
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                           nvcuda::wmma::row_major> fa;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                           nvcuda::wmma::col_major> fb;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
    nvcuda::wmma::load_matrix_sync(fa, a, WM_LDA);
    nvcuda::wmma::load_matrix_sync(fb, b, WM_LDB);
    nvcuda::wmma::load_matrix_sync(acc, c, WM_LDC, nvcuda::wmma::mem_row_major);
    nvcuda::wmma::mma_sync(acc, fa, fb, acc);
    nvcuda::wmma::store_matrix_sync(d, acc, WM_LDC, nvcuda::wmma::mem_row_major);
    nvcuda::wmma::store_matrix_sync(d2, acc, 16, nvcuda::wmma::mem_col_major);
}

/* Loads a matrix_b fragment from p with leading dimension ldm. */
static __global__ void wmma_bad_load_kernel(const __nv_bfloat16 *p, unsigned ldm)
{
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                           nvcuda::wmma::row_major> fb;
    nvcuda::wmma::load_matrix_sync(fb, p, ldm);
}

/* ---------- the table ---------- */

static void case_wmma(void)
{
    static __nv_bfloat16 ha[16 * WM_LDA], hb[16 * WM_LDB];
    static float hc[16 * WM_LDC], hd[16 * WM_LDC], hd2[256];
    for (int i = 0; i < 16 * WM_LDA; i++)
        ha[i] = __float2bfloat16_rn((float)((i * 7) % 23) / 8.0f - 1.3f);
    for (int i = 0; i < 16 * WM_LDB; i++)
        hb[i] = __float2bfloat16_rn((float)((i * 5) % 19) / 4.0f - 2.1f);
    for (int i = 0; i < 16 * WM_LDC; i++)
        hc[i] = (float)(i % 11) - 5.0f;
    __nv_bfloat16 *da = upload(ha, 16 * WM_LDA), *db = upload(hb, 16 * WM_LDB);
    float *dc = upload(hc, 16 * WM_LDC), *dd = NULL, *dd2 = NULL;
    cudaMalloc(&dd, sizeof hd), cudaMalloc(&dd2, sizeof hd2);
    wmma_kernel<<<1, 32>>>(da, db, dc, dd, dd2);
    EXPECT(cudaDeviceSynchronize() == cudaSuccess, "wmma kernel failed");
    cudaMemcpy(hd, dd, sizeof hd, cudaMemcpyDeviceToHost);
    cudaMemcpy(hd2, dd2, sizeof hd2, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            double ref = hc[i * WM_LDC + j];
            for (int k = 0; k < 16; k++)
                ref += (double)__bfloat162float(ha[i * WM_LDA + k]) *
                       __bfloat162float(hb[j * WM_LDB + k]);
            EXPECT(close_to(hd[i * WM_LDC + j], ref, 1e-6), "wmma d[%d][%d] = %g, want %g", i, j,
                   hd[i * WM_LDC + j], ref);
            EXPECT(hd2[j * 16 + i] == hd[i * WM_LDC + j], "wmma col-major store [%d][%d]", i, j);
        }
    wmma_bad_load_kernel<<<1, 32>>>(db + 8, 16); /* 16 bytes off a 32-byte boundary */
    expect_fault(cudaErrorLaunchFailure, "not 32-byte", "wmma misaligned pointer");
    db = upload(hb, 16 * WM_LDB);
    wmma_bad_load_kernel<<<1, 32>>>(db, 20); /* ldm not a multiple of 8 */
    expect_fault(cudaErrorLaunchFailure, "multiple of 8", "wmma ldm");
}

struct selftest_case {
    const char *name;
    void (*run)(void);
};

static const selftest_case CASES[] = {
    {"cublas sgemm by hand, argument errors", case_sgemm_hand},
    {"cublas strided sgemm, every transpose", case_sgemm_all_transposes},
    {"cublas GemmEx types, TF32", case_gemm_ex},
    {"cublas dsyrk, dgemm, sgemv", case_dsyrk_dgemm_sgemv},
    {"bf16/fp16 rounding ties", case_half_rounding},
    {"shared-memory block reduction, dynamic smem", case_block_reduction},
    {"missing __syncthreads detected", case_missing_syncthreads},
    {"warp shuffles and ballot", case_shuffles},
    {"launch-config and memory API errors", case_launch_errors},
    {"faults: overrun, host pointer, divergence", case_faults},
    {"wmma m16n16k16 bf16 vs a naive loop, alignment and ldm faults", case_wmma},
};

extern "C" int kvz_emu_selftest_count(void)
{
    return (int)(sizeof CASES / sizeof CASES[0]);
}

extern "C" const char *kvz_emu_selftest_name(int i)
{
    return CASES[i].name;
}

/* Runs case i; returns the number of failed expectations (report says which). */
extern "C" int kvz_emu_selftest_run(int i, char *report, size_t cap)
{
    g_report = report, g_cap = cap, g_fails = 0;
    report[0] = '\0';
    CASES[i].run();
    return g_fails;
}
