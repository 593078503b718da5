// Tensor maps for the harnesses' TMA kernels (link with -lcuda). Include after tma_primitives.cuh (TensorMap).
#pragma once
#include <cuda.h>  // cuTensorMapEncodeTiled

// A 4-D tensor map (D, heads, S, B) over 16-bit elements, as the backend makes them: boxes of 64 columns ×
// `rows` rows of one head, 128-byte swizzle, rows past S read as zeros.
static TensorMap tensor_map(const bf16 *base, int D, int heads, int S, int B, int rows) {
    CUtensorMap map;
    cuuint64_t dims[4] = {(cuuint64_t)D, (cuuint64_t)heads, (cuuint64_t)S, (cuuint64_t)B};
    cuuint64_t strides[3] = {(cuuint64_t)D * 2, (cuuint64_t)heads * D * 2, (cuuint64_t)S * heads * D * 2};
    cuuint32_t box[4] = {64, 1, (cuuint32_t)rows, 1}, steps[4] = {1, 1, 1, 1};
    CUresult result = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)base, dims, strides,
                                             box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (result != CUDA_SUCCESS) {
        fprintf(stderr, "cuTensorMapEncodeTiled failed (%d)\n", (int)result);
        exit(1);
    }
    static_assert(sizeof(map) == sizeof(TensorMap), "CUtensorMap is 128 bytes");
    TensorMap out;
    memcpy(&out, &map, sizeof map);
    return out;
}
