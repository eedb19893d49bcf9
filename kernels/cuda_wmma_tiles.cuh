/* cuda_wmma_tiles: the bf16 tensor-core tile steps shared by the tensor-core
 * attention (cuda_forward_attention_tc.cu) and the tensor-core KVzip+ score
 * (cuda_score_tc.cu). CUDA builds only; never include from C. Layout-agnostic
 * WMMA only (load/store/mma on whole 16x16 fragments, no element access), so
 * the CPU emulator (tests/cuda_emu) runs them faithfully. */
#ifndef KVZ_CUDA_WMMA_TILES_CUH
#define KVZ_CUDA_WMMA_TILES_CUH

#include <cuda_bf16.h>
#include <mma.h>

typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::row_major> kvz_wmma_a;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::col_major> kvz_wmma_bt; /* B^T from row-major rows */
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::row_major> kvz_wmma_b;
typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> kvz_wmma_acc;

/* The block's threads convert tile_rows rows of dh fp32 values (row r at
 * src + r * stride) into bf16 dst[tile_rows][ld]; rows >= n_rows are zero. */
static __device__ void kvz_wmma_load_rows(__nv_bfloat16 *dst, size_t ld, const float *src,
                                          size_t stride, size_t n_rows, size_t tile_rows,
                                          size_t dh)
{
    for (size_t e = threadIdx.x; e < tile_rows * dh; e += blockDim.x) {
        size_t r = e / dh, d = e % dh;
        dst[r * ld + d] = __float2bfloat16_rn(r < n_rows ? src[r * stride + d] : 0.0f);
    }
}

/* One warp: s[16][16 n_sub] (row-major, ld s_ld) = A B^T, A = 16 rows of a
 * (bf16, ld), B = the first 16 n_sub rows of b (bf16, ld), over dh (a
 * multiple of 16) columns. */
static __device__ void kvz_wmma_scores(float *s, unsigned s_ld, const __nv_bfloat16 *a,
                                       const __nv_bfloat16 *b, size_t ld, size_t dh,
                                       size_t n_sub)
{
    for (size_t c = 0; c < n_sub; c++) {
        kvz_wmma_acc acc;
        nvcuda::wmma::fill_fragment(acc, 0.0f);
        for (size_t d0 = 0; d0 < dh; d0 += 16) {
            kvz_wmma_a fa;
            kvz_wmma_bt fb;
            nvcuda::wmma::load_matrix_sync(fa, a + d0, (unsigned)ld);
            nvcuda::wmma::load_matrix_sync(fb, b + c * 16 * ld + d0, (unsigned)ld);
            nvcuda::wmma::mma_sync(acc, fa, fb, acc);
        }
        nvcuda::wmma::store_matrix_sync(s + c * 16, acc, s_ld, nvcuda::wmma::mem_row_major);
    }
}

#endif
