/* cuda_bf16.h (kvzap CUDA emulator stand-in): __nv_bfloat16 as a struct
 * holding the 16 bits, with the scalar conversions kvzap's subset allows
 * (__float2bfloat16_rn, __bfloat162float; round to nearest even, NaN ->
 * 0x7fff like the CUDA intrinsic). No arithmetic operators and no implicit
 * conversions, on purpose: the subset does not use them. */
#ifndef KVZ_EMU_CUDA_BF16_H
#define KVZ_EMU_CUDA_BF16_H
#include "kvz_emu/halfbits.h"

struct __nv_bfloat16 {
    unsigned short __x;
};
typedef __nv_bfloat16 nv_bfloat16;

static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    __nv_bfloat16 r;
    r.__x = kvz_emu_float_to_bf16_bits(f);
    return r;
}
static inline __nv_bfloat16 __float2bfloat16(float f)
{
    return __float2bfloat16_rn(f);
}
static inline float __bfloat162float(__nv_bfloat16 h)
{
    return kvz_emu_bf16_bits_to_float(h.__x);
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h)
{
    return h.__x;
}
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x)
{
    __nv_bfloat16 r;
    r.__x = x;
    return r;
}
#endif
