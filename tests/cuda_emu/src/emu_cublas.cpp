/* emu_cublas.cpp (kvzap CUDA emulator): the cuBLAS subset, column-major as
 * NVIDIA documents it: C = alpha op(A) op(B) + beta C with op(X) = X or X^T
 * (CUBLAS_OP_C = T for real types), lda/ldb/ldc and batch strides, beta == 0
 * meaning C is not read, Dsyrk writing only the `uplo` triangle, Sgemv with
 * signed increments. Argument errors return what cuBLAS returns
 * (NOT_INITIALIZED, INVALID_VALUE, NOT_SUPPORTED for type combinations
 * GemmEx lacks). Products run in OpenBLAS (fp32 for the 32F compute types,
 * fp64 for D/64F) on operands gathered and converted first; TF32
 * (math mode CUBLAS_TF32_TENSOR_OP_MATH or CUBLAS_COMPUTE_32F_FAST_TF32) and
 * FAST_16BF / FAST_16F round the inputs first, like tensor cores. Operands
 * must be device memory whose whole extent fits its allocation; otherwise a
 * sticky cudaErrorIllegalAddress and CUBLAS_STATUS_EXECUTION_FAILED. Pointer
 * mode is host only. */
#include <math.h>
#include <stdlib.h>

#include <vector>

#include <cblas.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "emu_internal.h"

struct cublasContext {
    cudaStream_t stream;
    cublasMath_t math;
};

namespace kvz_emu {
namespace {

typedef std::lock_guard<std::recursive_mutex> guard;

enum rounding { ROUND_NONE, ROUND_TF32, ROUND_BF16, ROUND_FP16 };

float round_input(float v, rounding r)
{
    switch (r) {
    case ROUND_TF32: {
        uint32_t u = kvz_emu_f2u(v);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return v;
        u += 0xfffu + ((u >> 13) & 1u);
        return kvz_emu_u2f(u & ~0x1fffu);
    }
    case ROUND_BF16: return kvz_emu_bf16_bits_to_float(kvz_emu_float_to_bf16_bits(v));
    case ROUND_FP16: return kvz_emu_half_bits_to_float(kvz_emu_float_to_half_bits(v));
    default: return v;
    }
}

size_t type_size(cudaDataType t)
{
    switch (t) {
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    default: return 0;
    }
}

double load(const void *p, cudaDataType t, size_t i)
{
    switch (t) {
    case CUDA_R_16F: return kvz_emu_half_bits_to_float(((const unsigned short *)p)[i]);
    case CUDA_R_16BF: return kvz_emu_bf16_bits_to_float(((const unsigned short *)p)[i]);
    case CUDA_R_32F: return ((const float *)p)[i];
    default: return ((const double *)p)[i];
    }
}

void store(void *p, cudaDataType t, size_t i, double v)
{
    switch (t) {
    case CUDA_R_16F: ((unsigned short *)p)[i] = kvz_emu_float_to_half_bits((float)v); break;
    case CUDA_R_16BF: ((unsigned short *)p)[i] = kvz_emu_float_to_bf16_bits((float)v); break;
    case CUDA_R_32F: ((float *)p)[i] = (float)v; break;
    default: ((double *)p)[i] = v; break;
    }
}

/* One operand: rows x cols column-major with leading dimension ld, batch stride. */
struct operand {
    const void *p;
    cudaDataType t;
    int rows, cols, ld;
    long long stride;
};

/* The operand's whole extent over `batch` batches lies in one device
 * allocation; otherwise a sticky illegal-address fault naming it. */
bool operand_in_bounds(const operand &o, int batch, const char *fn, const char *name)
{
    if (o.rows == 0 || o.cols == 0 || batch == 0)
        return true;
    size_t es = type_size(o.t);
    long long span = (long long)(o.cols - 1) * o.ld + o.rows; /* elements of one batch */
    long long lo = 0, hi = span;
    long long last = (long long)(batch - 1) * o.stride;
    if (last < 0)
        lo += last;
    else
        hi += last;
    const char *base = (const char *)o.p + lo * (long long)es;
    if (o.p && lookup(base, (size_t)(hi - lo) * es) == MEM_DEVICE)
        return true;
    set_fault(cudaErrorIllegalAddress,
              "%s: %s (%d x %d, ld %d, batch stride %lld, %d batch(es)) at %p is not inside one "
              "device allocation",
              fn, name, o.rows, o.cols, o.ld, o.stride, batch, o.p);
    return false;
}

struct gemm_args {
    const char *fn;
    cublasOperation_t ta, tb;
    int m, n, k;
    double alpha, beta;
    operand A, B, C;
    int batch;
    rounding round;
    bool fp64;
};

bool valid_op(cublasOperation_t op)
{
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

int imax1(int v)
{
    return v > 1 ? v : 1;
}

cublasStatus_t gemm_check(cublasHandle_t h, const gemm_args &g, const void *alpha,
                          const void *beta)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!valid_op(g.ta) || !valid_op(g.tb) || g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0 ||
        !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (g.A.ld < imax1(g.ta == CUBLAS_OP_N ? g.m : g.k) ||
        g.B.ld < imax1(g.tb == CUBLAS_OP_N ? g.k : g.n) || g.C.ld < imax1(g.m))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

/* op(X) of batch b as a dense row-major [out_rows][k] array, rounded. */
template <class T>
void gather(const operand &o, cublasOperation_t op, int b, int out_rows, int k, rounding r,
            std::vector<T> &out)
{
    out.resize((size_t)out_rows * (size_t)k);
    const char *base = (const char *)o.p + (long long)b * o.stride * (long long)type_size(o.t);
    if (o.t == CUDA_R_32F && r == ROUND_NONE) { /* the common case, without the type switch */
        const float *f = (const float *)base;
        for (int i = 0; i < out_rows; i++)
            for (int l = 0; l < k; l++)
                out[(size_t)i * k + l] = op == CUBLAS_OP_N ? f[(size_t)i + (size_t)l * o.ld]
                                                           : f[(size_t)l + (size_t)i * o.ld];
        return;
    }
    for (int i = 0; i < out_rows; i++)
        for (int l = 0; l < k; l++) {
            /* op N: element (i, l) of X [out_rows x k]; op T: element (l, i) of X [k x out_rows] */
            size_t idx = op == CUBLAS_OP_N ? (size_t)i + (size_t)l * o.ld
                                           : (size_t)l + (size_t)i * o.ld;
            double v = load(base, o.t, idx);
            out[(size_t)i * k + l] = o.t == CUDA_R_64F ? (T)v : (T)round_input((float)v, r);
        }
}

/* prod[i][j] = row i of a . row j of bt (OpenBLAS; fp32 or fp64 throughout). */
void product(int m, int n, int k, const float *a, const float *bt, float *prod)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, bt, k, 0.0f, prod,
                n);
}
void product(int m, int n, int k, const double *a, const double *bt, double *prod)
{
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0, a, k, bt, k, 0.0, prod, n);
}

/* C of batch b = alpha * prod + beta * C, in the compute precision; C is
 * not read when beta == 0. */
template <class T> void epilogue(const gemm_args &g, int b, const std::vector<T> &prod)
{
    char *cbase = (char *)g.C.p + (long long)b * g.C.stride * (long long)type_size(g.C.t);
    const T alpha = (T)g.alpha, beta = (T)g.beta;
    for (int j = 0; j < g.n; j++)
        for (int i = 0; i < g.m; i++) {
            size_t ci = (size_t)i + (size_t)j * g.C.ld;
            T r = alpha * prod[(size_t)i * g.n + j];
            if (beta != (T)0)
                r += beta * (T)load(cbase, g.C.t, ci);
            store(cbase, g.C.t, ci, (double)r);
        }
}

template <class T> void gemm_batches(const gemm_args &g, bool read_ab)
{
    std::vector<T> a, bt, prod((size_t)g.m * g.n, (T)0);
    for (int b = 0; b < g.batch; b++) {
        if (read_ab) {
            gather(g.A, g.ta == CUBLAS_OP_N ? CUBLAS_OP_N : CUBLAS_OP_T, b, g.m, g.k, g.round, a);
            gather(g.B, g.tb == CUBLAS_OP_N ? CUBLAS_OP_T : CUBLAS_OP_N, b, g.n, g.k, g.round, bt);
            product(g.m, g.n, g.k, a.data(), bt.data(), prod.data());
        }
        epilogue(g, b, prod);
    }
}

cublasStatus_t gemm_run(cublasHandle_t h, gemm_args g, const void *alpha, const void *beta)
{
    guard lock(api_lock());
    cublasStatus_t st = gemm_check(h, g, alpha, beta);
    if (st != CUBLAS_STATUS_SUCCESS)
        return st;
    if (api_enter() != cudaSuccess)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (g.m == 0 || g.n == 0 || g.batch == 0)
        return CUBLAS_STATUS_SUCCESS;
    g.alpha = g.fp64 ? *(const double *)alpha : *(const float *)alpha;
    g.beta = g.fp64 ? *(const double *)beta : *(const float *)beta;
    bool read_ab = g.k > 0 && g.alpha != 0.0;
    g.A.rows = g.ta == CUBLAS_OP_N ? g.m : g.k, g.A.cols = g.ta == CUBLAS_OP_N ? g.k : g.m;
    g.B.rows = g.tb == CUBLAS_OP_N ? g.k : g.n, g.B.cols = g.tb == CUBLAS_OP_N ? g.n : g.k;
    g.C.rows = g.m, g.C.cols = g.n;
    if ((read_ab && (!operand_in_bounds(g.A, g.batch, g.fn, "A") ||
                     !operand_in_bounds(g.B, g.batch, g.fn, "B"))) ||
        !operand_in_bounds(g.C, g.batch, g.fn, "C"))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (g.fp64)
        gemm_batches<double>(g, read_ab);
    else
        gemm_batches<float>(g, read_ab);
    return check_guards(g.fn) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

rounding sgemm_rounding(cublasHandle_t h)
{
    return h && (h->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH ? ROUND_TF32 : ROUND_NONE;
}

/* The rounding GemmEx applies, or false for a combination cuBLAS lacks. */
bool ex_types(cublasHandle_t h, cudaDataType at, cudaDataType bt, cudaDataType ct,
              cublasComputeType_t compute, rounding *r, bool *fp64)
{
    *r = ROUND_NONE;
    *fp64 = false;
    switch (compute) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
        if (at != bt)
            return false;
        if (at == CUDA_R_32F && ct == CUDA_R_32F) {
            if (compute == CUBLAS_COMPUTE_32F)
                *r = sgemm_rounding(h);
            return true;
        }
        return (at == CUDA_R_16F || at == CUDA_R_16BF) && (ct == at || ct == CUDA_R_32F);
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_16F:
        *r = compute == CUBLAS_COMPUTE_32F_FAST_TF32   ? ROUND_TF32
             : compute == CUBLAS_COMPUTE_32F_FAST_16BF ? ROUND_BF16
                                                       : ROUND_FP16;
        return at == CUDA_R_32F && bt == CUDA_R_32F && ct == CUDA_R_32F;
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
        *fp64 = true;
        return at == CUDA_R_64F && bt == CUDA_R_64F && ct == CUDA_R_64F;
    default:
        return false;
    }
}

bool valid_algo(cublasGemmAlgo_t algo)
{
    int a = (int)algo;
    return (a >= -1 && a <= 23) || (a >= 99 && a <= 115);
}

cublasStatus_t gemm_ex(const char *fn, cublasHandle_t h, cublasOperation_t ta,
                       cublasOperation_t tb, int m, int n, int k, const void *alpha,
                       const void *A, cudaDataType at, int lda, long long sa, const void *B,
                       cudaDataType bt, int ldb, long long sb, const void *beta, void *C,
                       cudaDataType ct, int ldc, long long sc, int batch,
                       cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    gemm_args g{fn, ta, tb, m, n, k, 0, 0, {A, at, 0, 0, lda, sa}, {B, bt, 0, 0, ldb, sb},
                {C, ct, 0, 0, ldc, sc}, batch, ROUND_NONE, false};
    if (!valid_algo(algo))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!ex_types(h, at, bt, ct, compute, &g.round, &g.fp64))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm_run(h, g, alpha, beta);
}

} // namespace
} // namespace kvz_emu

using namespace kvz_emu;

/* ---------- handle ---------- */

extern "C" cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    guard lock(api_lock());
    if (!handle)
        return CUBLAS_STATUS_INVALID_VALUE;
    *handle = nullptr;
    if (api_enter() != cudaSuccess)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *handle = new cublasContext{nullptr, CUBLAS_DEFAULT_MATH};
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    guard lock(api_lock());
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream_valid(stream))
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream)
{
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream)
        return CUBLAS_STATUS_INVALID_VALUE;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    int base = (int)mode & ~(int)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base < 0 || base > 3)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode)
{
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode)
        return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode)
{
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode == CUBLAS_POINTER_MODE_HOST)
        return CUBLAS_STATUS_SUCCESS;
    return mode == CUBLAS_POINTER_MODE_DEVICE ? CUBLAS_STATUS_NOT_SUPPORTED
                                              : CUBLAS_STATUS_INVALID_VALUE;
}

extern "C" cublasStatus_t cublasGetPointerMode(cublasHandle_t handle, cublasPointerMode_t *mode)
{
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode)
        return CUBLAS_STATUS_INVALID_VALUE;
    *mode = CUBLAS_POINTER_MODE_HOST;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" const char *cublasGetStatusName(cublasStatus_t status)
{
    switch (status) {
#define NAME(s) case s: return #s;
    NAME(CUBLAS_STATUS_SUCCESS) NAME(CUBLAS_STATUS_NOT_INITIALIZED)
    NAME(CUBLAS_STATUS_ALLOC_FAILED) NAME(CUBLAS_STATUS_INVALID_VALUE)
    NAME(CUBLAS_STATUS_ARCH_MISMATCH) NAME(CUBLAS_STATUS_MAPPING_ERROR)
    NAME(CUBLAS_STATUS_EXECUTION_FAILED) NAME(CUBLAS_STATUS_INTERNAL_ERROR)
    NAME(CUBLAS_STATUS_NOT_SUPPORTED) NAME(CUBLAS_STATUS_LICENSE_ERROR)
#undef NAME
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

extern "C" const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
    }
    return "unknown error";
}

/* ---------- GEMM ---------- */

extern "C" cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta,
                                      cublasOperation_t tb, int m, int n, int k,
                                      const float *alpha, const float *A, int lda,
                                      const float *B, int ldb, const float *beta, float *C,
                                      int ldc)
{
    gemm_args g{"cublasSgemm", ta, tb, m, n, k, 0, 0, {A, CUDA_R_32F, 0, 0, lda, 0},
                {B, CUDA_R_32F, 0, 0, ldb, 0}, {C, CUDA_R_32F, 0, 0, ldc, 0}, 1,
                sgemm_rounding(h), false};
    return gemm_run(h, g, alpha, beta);
}

extern "C" cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta,
                                      cublasOperation_t tb, int m, int n, int k,
                                      const double *alpha, const double *A, int lda,
                                      const double *B, int ldb, const double *beta, double *C,
                                      int ldc)
{
    gemm_args g{"cublasDgemm", ta, tb, m, n, k, 0, 0, {A, CUDA_R_64F, 0, 0, lda, 0},
                {B, CUDA_R_64F, 0, 0, ldb, 0}, {C, CUDA_R_64F, 0, 0, ldc, 0}, 1, ROUND_NONE,
                true};
    return gemm_run(h, g, alpha, beta);
}

extern "C" cublasStatus_t cublasSgemmStridedBatched(
    cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
    const float *alpha, const float *A, int lda, long long int sa, const float *B, int ldb,
    long long int sb, const float *beta, float *C, int ldc, long long int sc, int batch)
{
    gemm_args g{"cublasSgemmStridedBatched", ta, tb, m, n, k, 0, 0,
                {A, CUDA_R_32F, 0, 0, lda, sa}, {B, CUDA_R_32F, 0, 0, ldb, sb},
                {C, CUDA_R_32F, 0, 0, ldc, sc}, batch, sgemm_rounding(h), false};
    return gemm_run(h, g, alpha, beta);
}

extern "C" cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta,
                                       cublasOperation_t tb, int m, int n, int k,
                                       const void *alpha, const void *A, cudaDataType at,
                                       int lda, const void *B, cudaDataType bt, int ldb,
                                       const void *beta, void *C, cudaDataType ct, int ldc,
                                       cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    return gemm_ex("cublasGemmEx", h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta,
                   C, ct, ldc, 0, 1, compute, algo);
}

extern "C" cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType at, int lda, long long int sa, const void *B,
    cudaDataType bt, int ldb, long long int sb, const void *beta, void *C, cudaDataType ct,
    int ldc, long long int sc, int batch, cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    return gemm_ex("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, alpha, A, at, lda, sa, B, bt,
                   ldb, sb, beta, C, ct, ldc, sc, batch, compute, algo);
}

/* ---------- SYRK, GEMV ---------- */

extern "C" cublasStatus_t cublasDsyrk(cublasHandle_t h, cublasFillMode_t uplo,
                                      cublasOperation_t trans, int n, int k,
                                      const double *alpha, const double *A, int lda,
                                      const double *beta, double *C, int ldc)
{
    guard lock(api_lock());
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((uplo != CUBLAS_FILL_MODE_LOWER && uplo != CUBLAS_FILL_MODE_UPPER) || !valid_op(trans) ||
        n < 0 || k < 0 || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    bool notrans = trans == CUBLAS_OP_N;
    if (lda < imax1(notrans ? n : k) || ldc < imax1(n))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (api_enter() != cudaSuccess)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (n == 0)
        return CUBLAS_STATUS_SUCCESS;
    bool read_a = k > 0 && *alpha != 0.0;
    operand oa{A, CUDA_R_64F, notrans ? n : k, notrans ? k : n, lda, 0};
    operand oc{C, CUDA_R_64F, n, n, ldc, 0};
    if ((read_a && !operand_in_bounds(oa, 1, "cublasDsyrk", "A")) ||
        !operand_in_bounds(oc, 1, "cublasDsyrk", "C"))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    for (int j = 0; j < n; j++) {
        int i0 = uplo == CUBLAS_FILL_MODE_LOWER ? j : 0;
        int i1 = uplo == CUBLAS_FILL_MODE_LOWER ? n : j + 1;
        for (int i = i0; i < i1; i++) {
            /* op(A) [n x k]: (i, l) = A[i + l lda] (N) or A[l + i lda] (T) */
            double acc = 0.0;
            for (int l = 0; read_a && l < k; l++) {
                double ai = notrans ? A[i + (size_t)l * lda] : A[l + (size_t)i * lda];
                double aj = notrans ? A[j + (size_t)l * lda] : A[l + (size_t)j * lda];
                acc = fma(ai, aj, acc);
            }
            double *c = C + i + (size_t)j * ldc;
            *c = *alpha * acc + (*beta != 0.0 ? *beta * *c : 0.0);
        }
    }
    return check_guards("cublasDsyrk") ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

extern "C" cublasStatus_t cublasSgemv(cublasHandle_t h, cublasOperation_t trans, int m, int n,
                                      const float *alpha, const float *A, int lda,
                                      const float *x, int incx, const float *beta, float *y,
                                      int incy)
{
    guard lock(api_lock());
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!valid_op(trans) || m < 0 || n < 0 || lda < imax1(m) || incx == 0 || incy == 0 ||
        !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (api_enter() != cudaSuccess)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    bool notrans = trans == CUBLAS_OP_N;
    int lx = notrans ? n : m, ly = notrans ? m : n;
    bool read_ax = *alpha != 0.0f;
    operand oa{A, CUDA_R_32F, m, n, lda, 0};
    operand ox{x, CUDA_R_32F, 1, lx, abs(incx), 0}, oy{y, CUDA_R_32F, 1, ly, abs(incy), 0};
    if ((read_ax && (!operand_in_bounds(oa, 1, "cublasSgemv", "A") ||
                     !operand_in_bounds(ox, 1, "cublasSgemv", "x"))) ||
        !operand_in_bounds(oy, 1, "cublasSgemv", "y"))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    long long x0 = incx > 0 ? 0 : (long long)(1 - lx) * incx;
    long long y0 = incy > 0 ? 0 : (long long)(1 - ly) * incy;
    for (int i = 0; i < ly; i++) {
        float acc = 0.0f;
        for (int l = 0; read_ax && l < lx; l++) {
            float a = notrans ? A[i + (size_t)l * lda] : A[l + (size_t)i * lda];
            acc = fmaf(a, x[x0 + (long long)l * incx], acc);
        }
        float *yi = y + y0 + (long long)i * incy;
        float r = *alpha * acc;
        if (*beta != 0.0f)
            r += *beta * *yi;
        *yi = r;
    }
    return check_guards("cublasSgemv") ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
