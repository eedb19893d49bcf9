/* halfbits.h (kvzap CUDA emulator): exact float <-> bfloat16 / IEEE half
 * bit conversions, round to nearest even, as the CUDA _rn intrinsics. */
#ifndef KVZ_EMU_HALFBITS_H
#define KVZ_EMU_HALFBITS_H
#include <stdint.h>
#include <string.h>

static inline uint32_t kvz_emu_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline float kvz_emu_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline unsigned short kvz_emu_float_to_bf16_bits(float f)
{
    uint32_t u = kvz_emu_f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return 0x7fff; /* NaN: canonical, as __float2bfloat16_rn */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
static inline float kvz_emu_bf16_bits_to_float(unsigned short b)
{
    return kvz_emu_u2f((uint32_t)b << 16);
}

static inline unsigned short kvz_emu_float_to_half_bits(float f)
{
    uint32_t u = kvz_emu_f2u(f);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return 0x7fff; /* NaN: canonical, as __float2half_rn */
    if (a >= 0x477ff000u) /* >= 65520: rounds to infinity */
        return (unsigned short)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: subnormal half (or zero) */
        if (a < 0x33000000u) /* < 2^-25: rounds to zero (2^-25 is the tie; even -> 0) */
            return (unsigned short)sign;
        uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        /* value = mant * 2^(E - 150); in units of 2^-24 (the half subnormal
         * step) that is mant >> (126 - E), 14 <= shift <= 24 here. */
        int shift = 126 - (int)(a >> 23);
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u)))
            q++;
        return (unsigned short)(sign | q);
    }
    /* normal: rebias exponent 127 -> 15, keep 10 mantissa bits, RNE */
    uint32_t r = a - 0x38000000u; /* exponent - 112 */
    uint32_t q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
        q++;
    return (unsigned short)(sign | q);
}
static inline float kvz_emu_half_bits_to_float(unsigned short h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)
        return kvz_emu_u2f(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f); /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    return kvz_emu_u2f(sign | ((e + 112u) << 23) | (m << 13));
}
#endif
