/* dequant: ggml tensor types -> fp32, exactly as ggml (ggml-quants.c) and
 * gguf-py's gguf.quants.dequantize compute them.
 * Owns: the ggml type table (name, block size, bytes per block) for every
 * type ggml defines, the fp16/bf16 -> fp32 helpers (shared with the
 * safetensors reader for its F16/BF16 tensors), and row-wise dequantization
 * of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K.
 * All inputs are little-endian bytes with no alignment requirement. */
#ifndef KVZ_DEQUANT_H
#define KVZ_DEQUANT_H

#include <stddef.h>
#include <stdint.h>

/* IEEE half (binary16) bits -> float; exact (subnormals, inf, NaN kept). */
float kvz_f16_to_f32(uint16_t h);
/* bfloat16 bits -> float; exact (the bits become the high half of a float). */
float kvz_bf16_to_f32(uint16_t h);

/* Elements per block of a ggml type (1 for F32/F16/BF16, 32 for Q4_0...,
 * 256 for K-quants); 0 when ggml defines no such type. */
size_t kvz_ggml_block_size(uint32_t ggml_type);
/* Bytes per block (4 for F32, 20 for Q4_1, 144 for Q4_K, ...); 0 when unknown. */
size_t kvz_ggml_type_size(uint32_t ggml_type);
/* 1 when kvz_dequantize handles the type, else 0. */
int kvz_ggml_type_supported(uint32_t ggml_type);
/* Name of any type ggml defines ("Q4_1", "Q5_K", ...), supported or not;
 * NULL when ggml defines no such type number. (Also declared in gguf.h.) */
const char *kvz_ggml_type_name(uint32_t type);
/* Bytes that n elements of the type occupy. KVZ_EINVAL when n is not a
 * multiple of the block size, KVZ_EUNSUPPORTED for an unknown type,
 * KVZ_EFORMAT on size_t overflow. */
int kvz_ggml_row_bytes(uint32_t ggml_type, size_t n, size_t *bytes);

/* Dequantizes n elements (a multiple of the type's block size) from src
 * (kvz_ggml_row_bytes(type, n) bytes) into dst[n]. Returns KVZ_OK,
 * KVZ_EUNSUPPORTED for a type kvz_ggml_type_supported rejects, or KVZ_EINVAL
 * when n is not a multiple of the block size. */
int kvz_dequantize(uint32_t ggml_type, const void *src, float *dst, size_t n);

#endif
