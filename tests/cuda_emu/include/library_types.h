/* library_types.h (kvzap CUDA emulator stand-in): cudaDataType and
 * libraryPropertyType with the values of the real CUDA header. */
#ifndef KVZ_EMU_LIBRARY_TYPES_H
#define KVZ_EMU_LIBRARY_TYPES_H

typedef enum cudaDataType_t {
    CUDA_R_16F = 2,
    CUDA_C_16F = 6,
    CUDA_R_16BF = 14,
    CUDA_C_16BF = 15,
    CUDA_R_32F = 0,
    CUDA_C_32F = 4,
    CUDA_R_64F = 1,
    CUDA_C_64F = 5,
    CUDA_R_8I = 3,
    CUDA_R_32I = 10
} cudaDataType_t;
typedef cudaDataType_t cudaDataType;

typedef enum libraryPropertyType_t {
    MAJOR_VERSION,
    MINOR_VERSION,
    PATCH_LEVEL
} libraryPropertyType_t;
typedef libraryPropertyType_t libraryPropertyType;

#endif
