/* mma.h (kvzap CUDA emulator stand-in): the layout-agnostic part of
 * nvcuda::wmma for shape m16n16k16 with __nv_bfloat16 (or __half) matrix_a /
 * matrix_b fragments and float accumulators: fragment, fill_fragment,
 * load_matrix_sync, store_matrix_sync, mma_sync.
 *
 * Emulation: every lane's fragment holds the WHOLE 16x16 tile (a real
 * fragment holds an unspecified per-lane slice), so each lane's load reads
 * the full tile honouring layout and ldm, mma_sync computes the full
 * D = A B + C in fp32 from the exact bf16/fp16 products, and each lane's
 * store writes the full tile (all lanes write identical values). Element
 * access (x[], num_elements) is left out on purpose: its lane mapping is
 * unspecified, so code using it cannot be emulated and does not compile.
 *
 * Checked like the real API: ldm a multiple of 8 for 16-bit element types
 * and of 4 for float, pointers 32-byte (256-bit) aligned; a violation faults
 * the kernel (cudaErrorLaunchFailure naming the call). The three *_sync
 * calls are warp collectives (all 32 lanes must reach them, as documented:
 * "waits until all warp lanes have arrived"). Accumulation order inside
 * mma_sync is k = 0..15 in fp32, which real tensor cores need not match:
 * results agree to fp32 rounding, not bitwise. */
#ifndef KVZ_EMU_MMA_H
#define KVZ_EMU_MMA_H

#include <stdint.h>
#include <stdio.h>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace nvcuda {
namespace wmma {

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
enum layout_t { mem_row_major, mem_col_major };

/* rows x cols of a fragment's tile, element (r, c) in v[r][c]. */
template <class Use, int M, int N, int K> struct kvz_emu_dims;
template <int M, int N, int K> struct kvz_emu_dims<matrix_a, M, N, K> {
    enum { rows = M, cols = K };
};
template <int M, int N, int K> struct kvz_emu_dims<matrix_b, M, N, K> {
    enum { rows = K, cols = N };
};
template <int M, int N, int K> struct kvz_emu_dims<accumulator, M, N, K> {
    enum { rows = M, cols = N };
};

template <class Use, int M, int N, int K, class T, class Layout = void> class fragment {
    static_assert(M == 16 && N == 16 && K == 16, "kvzap CUDA emulator: wmma shape 16x16x16 only");
    static_assert(std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value ||
                      std::is_same<T, float>::value,
                  "kvzap CUDA emulator: wmma element types bf16, half, float only");

  public:
    enum { kvz_rows = kvz_emu_dims<Use, M, N, K>::rows, kvz_cols = kvz_emu_dims<Use, M, N, K>::cols };
    float kvz_tile[kvz_rows][kvz_cols]; /* emulator-private: the whole tile, in every lane */
};

namespace kvz_detail {

inline float to_float(float v)
{
    return v;
}
inline float to_float(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
inline float to_float(__half v)
{
    return __half2float(v);
}

/* Faults the kernel like a misaligned or malformed wmma access would. */
inline void check(const void *p, unsigned ldm, size_t elem_bytes, const char *call)
{
    unsigned need = elem_bytes == 2 ? 8 : 4;
    char msg[200];
    if ((uintptr_t)p % 32 != 0) {
        snprintf(msg, sizeof msg,
                 "wmma::%s: pointer %p is not 32-byte (256-bit) aligned", call, p);
        kvz_emu_trap(msg);
    }
    if (ldm == 0 || ldm % need != 0) {
        snprintf(msg, sizeof msg, "wmma::%s: ldm %u is not a positive multiple of %u", call, ldm,
                 need);
        kvz_emu_trap(msg);
    }
}

inline void warp_arrive()
{
    kvz_emu_syncwarp(0xffffffffu);
}

template <class Layout> struct is_col {
    static const bool value = std::is_same<Layout, col_major>::value;
};

} // namespace kvz_detail

template <class Use, int M, int N, int K, class T, class Layout, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout> &f, const V &value)
{
    float x = kvz_detail::to_float(value);
    for (int r = 0; r < f.kvz_rows; r++)
        for (int c = 0; c < f.kvz_cols; c++)
            f.kvz_tile[r][c] = x;
}

/* matrix_a / matrix_b: the layout is the fragment's; element (r, c) is at
 * p[r * ldm + c] (row_major) or p[c * ldm + r] (col_major). */
template <class Use, int M, int N, int K, class T, class Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout> &f, const T *p, unsigned ldm)
{
    static_assert(!std::is_same<Use, accumulator>::value,
                  "wmma: loading an accumulator needs a layout_t argument");
    kvz_detail::warp_arrive();
    kvz_detail::check(p, ldm, sizeof(T), "load_matrix_sync");
    bool col = kvz_detail::is_col<Layout>::value;
    for (int r = 0; r < f.kvz_rows; r++)
        for (int c = 0; c < f.kvz_cols; c++)
            f.kvz_tile[r][c] =
                kvz_detail::to_float(col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]);
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ldm,
                             layout_t layout)
{
    kvz_detail::warp_arrive();
    kvz_detail::check(p, ldm, sizeof(float), "load_matrix_sync");
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            f.kvz_tile[r][c] =
                layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
}

template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                              unsigned ldm, layout_t layout)
{
    kvz_detail::warp_arrive();
    kvz_detail::check(p, ldm, sizeof(float), "store_matrix_sync");
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            (layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]) =
                f.kvz_tile[r][c];
}

/* d = a b + c, fp32 accumulation of the exact 16-bit products (d may alias c). */
template <int M, int N, int K, class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                     const fragment<matrix_a, M, N, K, T, LA> &a,
                     const fragment<matrix_b, M, N, K, T, LB> &b,
                     const fragment<accumulator, M, N, K, float> &c, bool satf = false)
{
    static_assert(!std::is_same<T, float>::value, "wmma: float a/b fragments need tf32 (not emulated)");
    (void)satf;
    kvz_detail::warp_arrive();
    float out[M][N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = c.kvz_tile[i][j];
            for (int k = 0; k < K; k++)
                acc += a.kvz_tile[i][k] * b.kvz_tile[k][j];
            out[i][j] = acc;
        }
    memcpy(d.kvz_tile, out, sizeof out);
}

} // namespace wmma
} // namespace nvcuda

#endif
