/* device.h (kvzap CUDA emulator): what kernel code sees. CUDA qualifiers
 * become plain C++; threadIdx/blockIdx/blockDim/gridDim are globals the
 * fiber scheduler (src/emu_sched.cpp) sets before it resumes a CUDA thread;
 * __syncthreads, __syncwarp and the warp shuffles are scheduling points;
 * atomics are plain read-modify-writes (one OS thread runs a launch, fibers
 * switch only at scheduling points); math intrinsics map to libm with the
 * rounding the _rn intrinsics promise. Function-static __shared__ arrays go
 * to the kvz_emu_shared section, which the scheduler fills with 0xff before
 * every block. */
#ifndef KVZ_EMU_DEVICE_H
#define KVZ_EMU_DEVICE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("kvz_emu_shared")))
#define __CUDA_ARCH__ 900

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

extern "C" {
void kvz_emu_syncthreads(void);
void kvz_emu_syncwarp(unsigned mask);
/* The value lane src of this warp passed to the same collective. */
uint64_t kvz_emu_warp_exchange(unsigned mask, uint64_t mine, unsigned src, const char *what);
/* Bit i = predicate of lane i. */
unsigned kvz_emu_warp_ballot(unsigned mask, int predicate, const char *what);
unsigned kvz_emu_lane_id(void);
void *kvz_emu_dynamic_smem(void);
void kvz_emu_trap(const char *what) __attribute__((noreturn));
}

#define __syncthreads() kvz_emu_syncthreads()
#define __trap() kvz_emu_trap("__trap()")

/* ---------- warp shuffles and votes ---------- */

namespace kvz_emu {
template <class T> inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffle: 1..8-byte scalar types only");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <class T> inline T from_bits(uint64_t b)
{
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
inline unsigned segment_base(unsigned lane, int width)
{
    return lane & ~(unsigned)(width - 1);
}
} // namespace kvz_emu

template <class T> inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32)
{
    unsigned lane = kvz_emu_lane_id();
    unsigned src = kvz_emu::segment_base(lane, width) + ((unsigned)src_lane & (unsigned)(width - 1));
    return kvz_emu::from_bits<T>(
        kvz_emu_warp_exchange(mask, kvz_emu::to_bits(var), src, "__shfl_sync"));
}
template <class T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    unsigned lane = kvz_emu_lane_id();
    unsigned in_seg = lane - kvz_emu::segment_base(lane, width);
    unsigned src = in_seg >= delta ? lane - delta : lane;
    return kvz_emu::from_bits<T>(
        kvz_emu_warp_exchange(mask, kvz_emu::to_bits(var), src, "__shfl_up_sync"));
}
template <class T> inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32)
{
    unsigned lane = kvz_emu_lane_id();
    unsigned in_seg = lane - kvz_emu::segment_base(lane, width);
    unsigned src = in_seg + delta < (unsigned)width ? lane + delta : lane;
    return kvz_emu::from_bits<T>(
        kvz_emu_warp_exchange(mask, kvz_emu::to_bits(var), src, "__shfl_down_sync"));
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32)
{
    unsigned lane = kvz_emu_lane_id();
    unsigned src = lane ^ (unsigned)lane_mask;
    if (src >= kvz_emu::segment_base(lane, width) + (unsigned)width || src >= 32u)
        src = lane;
    return kvz_emu::from_bits<T>(
        kvz_emu_warp_exchange(mask, kvz_emu::to_bits(var), src, "__shfl_xor_sync"));
}
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    kvz_emu_syncwarp(mask);
}
inline unsigned __ballot_sync(unsigned mask, int predicate)
{
    return kvz_emu_warp_ballot(mask, predicate, "__ballot_sync");
}
inline int __all_sync(unsigned mask, int predicate)
{
    return kvz_emu_warp_ballot(mask, predicate, "__all_sync") == 0xffffffffu;
}
inline int __any_sync(unsigned mask, int predicate)
{
    return kvz_emu_warp_ballot(mask, predicate, "__any_sync") != 0u;
}

/* ---------- atomics (one OS thread per launch: plain read-modify-write) ---------- */

template <class T> inline T kvz_emu_atomic_add(T *p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}
inline float atomicAdd(float *p, float v) { return kvz_emu_atomic_add(p, v); }
inline double atomicAdd(double *p, double v) { return kvz_emu_atomic_add(p, v); }
inline int atomicAdd(int *p, int v) { return kvz_emu_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return kvz_emu_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    return kvz_emu_atomic_add(p, v);
}
inline int atomicSub(int *p, int v) { return kvz_emu_atomic_add(p, -v); }
inline unsigned atomicSub(unsigned *p, unsigned v) { return kvz_emu_atomic_add(p, 0u - v); }

template <class T> inline T kvz_emu_atomic_max(T *p, T v)
{
    T old = *p;
    if (v > old)
        *p = v;
    return old;
}
template <class T> inline T kvz_emu_atomic_min(T *p, T v)
{
    T old = *p;
    if (v < old)
        *p = v;
    return old;
}
#define KVZ_EMU_MINMAX(T)                                                                    \
    inline T atomicMax(T *p, T v) { return kvz_emu_atomic_max(p, v); }                      \
    inline T atomicMin(T *p, T v) { return kvz_emu_atomic_min(p, v); }
KVZ_EMU_MINMAX(int)
KVZ_EMU_MINMAX(unsigned)
KVZ_EMU_MINMAX(long long)
KVZ_EMU_MINMAX(unsigned long long)
#undef KVZ_EMU_MINMAX

template <class T> inline T kvz_emu_atomic_cas(T *p, T compare, T v)
{
    T old = *p;
    if (old == compare)
        *p = v;
    return old;
}
inline int atomicCAS(int *p, int c, int v) { return kvz_emu_atomic_cas(p, c, v); }
inline unsigned atomicCAS(unsigned *p, unsigned c, unsigned v) { return kvz_emu_atomic_cas(p, c, v); }
inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long c,
                                    unsigned long long v)
{
    return kvz_emu_atomic_cas(p, c, v);
}
template <class T> inline T kvz_emu_atomic_exch(T *p, T v)
{
    T old = *p;
    *p = v;
    return old;
}
inline int atomicExch(int *p, int v) { return kvz_emu_atomic_exch(p, v); }
inline unsigned atomicExch(unsigned *p, unsigned v) { return kvz_emu_atomic_exch(p, v); }
inline float atomicExch(float *p, float v) { return kvz_emu_atomic_exch(p, v); }
inline unsigned long long atomicExch(unsigned long long *p, unsigned long long v)
{
    return kvz_emu_atomic_exch(p, v);
}
inline void __threadfence(void) {}
inline void __threadfence_block(void) {}

/* ---------- math intrinsics ---------- */

/* Volatile temporaries keep the host compiler from contracting a*b+c into an
 * FMA across intrinsic boundaries, as the _rn intrinsics promise. */
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __frcp_rn(float a) { volatile float r = 1.0f / a; return r; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
inline double __dsub_rn(double a, double b) { volatile double r = a - b; return r; }
inline double __ddiv_rn(double a, double b) { volatile double r = a / b; return r; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __expf(float a) { return expf(a); }
inline float __logf(float a) { return logf(a); }
inline float __sinf(float a) { return sinf(a); }
inline float __cosf(float a) { return cosf(a); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __powf(float a, float b) { return powf(a, b); }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline double rsqrt(double a) { return 1.0 / sqrt(a); }
inline float __saturatef(float a) { return a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : (a == a ? a : 0.0f)); }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, sizeof i); return i; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, sizeof i); return i; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, sizeof f); return f; }
inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, sizeof i); return i; }
inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, sizeof d); return d; }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }

/* CUDA's device-side min/max overloads. */
#define KVZ_EMU_MINMAX_FN(T)                                                                 \
    inline T min(T a, T b) { return a < b ? a : b; }                                         \
    inline T max(T a, T b) { return a > b ? a : b; }
KVZ_EMU_MINMAX_FN(int)
KVZ_EMU_MINMAX_FN(unsigned)
KVZ_EMU_MINMAX_FN(long)
KVZ_EMU_MINMAX_FN(unsigned long)
KVZ_EMU_MINMAX_FN(long long)
KVZ_EMU_MINMAX_FN(unsigned long long)
#undef KVZ_EMU_MINMAX_FN
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

#endif
