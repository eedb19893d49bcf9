/* dequant: ggml type table and block dequantization to fp32 (see dequant.h).
 * The arithmetic mirrors ggml's reference dequantize_row_* functions
 * operation for operation (same products, same order, fp32 throughout), so
 * results are bit-identical to ggml and to gguf-py's gguf.quants.dequantize. */
#include "dequant.h"

#include <string.h>

#include "../common/kvz_error.h"
#include "gguf.h"

#define QK_K 256

typedef struct ggml_type_traits {
    const char *name;
    unsigned block_size;
    unsigned type_size;
} ggml_type_traits;

/* Indexed by ggml type number (ggml.h); gaps are type numbers ggml retired. */
static const ggml_type_traits TYPES[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},
    [2] = {"Q4_0", 32, 18},      [3] = {"Q4_1", 32, 20},
    [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 40},
    [10] = {"Q2_K", 256, 84},    [11] = {"Q3_K", 256, 110},
    [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},
    [16] = {"IQ2_XXS", 256, 66}, [17] = {"IQ2_XS", 256, 74},
    [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},
    [22] = {"IQ2_S", 256, 82},   [23] = {"IQ4_XS", 256, 136},
    [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},        [29] = {"IQ1_M", 256, 56},
    [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},
};
static const size_t N_TYPES = sizeof TYPES / sizeof TYPES[0];

static const ggml_type_traits *traits(uint32_t type)
{
    if (type >= N_TYPES || !TYPES[type].name)
        return NULL;
    return &TYPES[type];
}

const char *kvz_ggml_type_name(uint32_t type)
{
    const ggml_type_traits *t = traits(type);
    return t ? t->name : NULL;
}

size_t kvz_ggml_block_size(uint32_t type)
{
    const ggml_type_traits *t = traits(type);
    return t ? t->block_size : 0;
}

size_t kvz_ggml_type_size(uint32_t type)
{
    const ggml_type_traits *t = traits(type);
    return t ? t->type_size : 0;
}

int kvz_ggml_type_supported(uint32_t type)
{
    switch (type) {
    case KVZ_GGML_F32: case KVZ_GGML_F16: case KVZ_GGML_BF16: case KVZ_GGML_Q8_0:
    case KVZ_GGML_Q4_0: case KVZ_GGML_Q4_1: case KVZ_GGML_Q4_K: case KVZ_GGML_Q6_K:
        return 1;
    default:
        return 0;
    }
}

int kvz_ggml_row_bytes(uint32_t type, size_t n, size_t *bytes)
{
    const ggml_type_traits *t = traits(type);
    if (!t)
        return KVZ_EUNSUPPORTED;
    if (n % t->block_size != 0)
        return KVZ_EINVAL;
    size_t blocks = n / t->block_size;
    if (blocks > SIZE_MAX / t->type_size)
        return KVZ_EFORMAT;
    *bytes = blocks * t->type_size;
    return KVZ_OK;
}

/* --- scalar conversions --- */

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float kvz_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) /* inf / NaN: payload kept */
        return bits_to_f32(sign | 0x7f800000u | (mant << 13));
    if (exp != 0)    /* normal: rebias 15 -> 127 */
        return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0)
        return bits_to_f32(sign);
    /* subnormal: mant * 2^-24, exact in fp32 */
    float v = (float)mant * bits_to_f32(0x33800000u); /* 2^-24 */
    return sign ? -v : v;
}

float kvz_bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

static uint16_t read_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static float read_f16(const unsigned char *p)
{
    return kvz_f16_to_f32(read_u16(p));
}

/* --- element types --- */

static void dequant_f32(const unsigned char *src, float *dst, size_t n)
{
    memcpy(dst, src, n * sizeof(float));
}

static void dequant_f16(const unsigned char *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = read_f16(src + 2 * i);
}

static void dequant_bf16(const unsigned char *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = kvz_bf16_to_f32(read_u16(src + 2 * i));
}

/* --- 32-element block quants --- */

/* Q8_0: fp16 d, int8 q[32]; y = q * d. */
static void dequant_q8_0(const unsigned char *src, float *dst, size_t n_blocks)
{
    for (size_t b = 0; b < n_blocks; b++, src += 34, dst += 32) {
        const float d = read_f16(src);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)(int8_t)src[2 + j] * d;
    }
}

/* Q4_0: fp16 d, 16 bytes of nibbles (low nibbles = elements 0..15,
 * high nibbles = 16..31); y = (q - 8) * d. */
static void dequant_q4_0(const unsigned char *src, float *dst, size_t n_blocks)
{
    for (size_t b = 0; b < n_blocks; b++, src += 18, dst += 32) {
        const float d = read_f16(src);
        const unsigned char *qs = src + 2;
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)((qs[j] & 0x0f) - 8) * d;
            dst[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* Q4_1: fp16 d, fp16 m, 16 bytes of nibbles; y = q * d + m. */
static void dequant_q4_1(const unsigned char *src, float *dst, size_t n_blocks)
{
    for (size_t b = 0; b < n_blocks; b++, src += 20, dst += 32) {
        const float d = read_f16(src);
        const float m = read_f16(src + 2);
        const unsigned char *qs = src + 4;
        for (int j = 0; j < 16; j++) {
            const float lo = (float)(qs[j] & 0x0f) * d;
            const float hi = (float)(qs[j] >> 4) * d;
            dst[j] = lo + m;
            dst[j + 16] = hi + m;
        }
    }
}

/* --- K-quants (256-element super-blocks) --- */

/* Q4_K's 12 scale bytes pack 8 six-bit scales and 8 six-bit mins. */
static void q4_k_scale_min(int j, const unsigned char *s, unsigned *sc, unsigned *mn)
{
    if (j < 4) {
        *sc = s[j] & 63u;
        *mn = s[j + 4] & 63u;
    } else {
        *sc = (s[j + 4] & 0x0fu) | ((unsigned)(s[j - 4] >> 6) << 4);
        *mn = (unsigned)(s[j + 4] >> 4) | ((unsigned)(s[j] >> 6) << 4);
    }
}

/* Q4_K: fp16 d, fp16 dmin, scales[12], qs[128]; each 64 elements use 32
 * bytes: low nibbles (sub-block 2i) then high nibbles (sub-block 2i+1);
 * y = (d*sc) * q - (dmin*m). */
static void dequant_q4_k(const unsigned char *src, float *dst, size_t n_blocks)
{
    for (size_t b = 0; b < n_blocks; b++, src += 144, dst += QK_K) {
        const float d = read_f16(src);
        const float dmin = read_f16(src + 2);
        const unsigned char *scales = src + 4;
        const unsigned char *q = src + 16;
        float *y = dst;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            unsigned sc, mn;
            q4_k_scale_min(is, scales, &sc, &mn);
            const float d1 = d * (float)sc, m1 = dmin * (float)mn;
            q4_k_scale_min(is + 1, scales, &sc, &mn);
            const float d2 = d * (float)sc, m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                const float lo = d1 * (float)(q[l] & 0x0f);
                const float hi = d2 * (float)(q[l] >> 4);
                y[l] = lo - m1;
                y[l + 32] = hi - m2;
            }
        }
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], fp16 d;
 * y = (d*scale) * (q - 32), 16 elements per scale. */
static void dequant_q6_k(const unsigned char *src, float *dst, size_t n_blocks)
{
    for (size_t b = 0; b < n_blocks; b++, src += 210, dst += QK_K) {
        const unsigned char *ql = src, *qh = src + 128;
        const int8_t *sc = (const int8_t *)(src + 192);
        const float d = read_f16(src + 208);
        float *y = dst;
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xf) | ((qh[l] >> 0 & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xf) | ((qh[l] >> 2 & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
                y[l] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

int kvz_dequantize(uint32_t type, const void *src, float *dst, size_t n)
{
    if (!kvz_ggml_type_supported(type))
        return KVZ_EUNSUPPORTED;
    const size_t bs = kvz_ggml_block_size(type);
    if (n % bs != 0)
        return KVZ_EINVAL;
    const unsigned char *s = src;
    switch (type) {
    case KVZ_GGML_F32: dequant_f32(s, dst, n); break;
    case KVZ_GGML_F16: dequant_f16(s, dst, n); break;
    case KVZ_GGML_BF16: dequant_bf16(s, dst, n); break;
    case KVZ_GGML_Q8_0: dequant_q8_0(s, dst, n / bs); break;
    case KVZ_GGML_Q4_0: dequant_q4_0(s, dst, n / bs); break;
    case KVZ_GGML_Q4_1: dequant_q4_1(s, dst, n / bs); break;
    case KVZ_GGML_Q4_K: dequant_q4_k(s, dst, n / bs); break;
    case KVZ_GGML_Q6_K: dequant_q6_k(s, dst, n / bs); break;
    }
    return KVZ_OK;
}
