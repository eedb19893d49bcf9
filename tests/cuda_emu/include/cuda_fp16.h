/* cuda_fp16.h (kvzap CUDA emulator stand-in): __half as a struct holding
 * the 16 bits, with __float2half_rn / __half2float (round to nearest even,
 * subnormals, overflow to infinity, NaN -> 0x7fff like the CUDA intrinsic).
 * No arithmetic operators and no implicit conversions, on purpose. */
#ifndef KVZ_EMU_CUDA_FP16_H
#define KVZ_EMU_CUDA_FP16_H
#include "kvz_emu/halfbits.h"

struct __half {
    unsigned short __x;
};
typedef __half half;

static inline __half __float2half_rn(float f)
{
    __half r;
    r.__x = kvz_emu_float_to_half_bits(f);
    return r;
}
static inline __half __float2half(float f)
{
    return __float2half_rn(f);
}
static inline float __half2float(__half h)
{
    return kvz_emu_half_bits_to_float(h.__x);
}
static inline unsigned short __half_as_ushort(__half h)
{
    return h.__x;
}
static inline __half __ushort_as_half(unsigned short x)
{
    __half r;
    r.__x = x;
    return r;
}
#endif
