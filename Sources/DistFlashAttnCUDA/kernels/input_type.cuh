// The attention kernels' 16-bit input type, shared by the sources that read inputs element by element: bf16, or
// fp16 when the backend compiles the source with DISTFLASH_INPUT_F16 defined (one module per input type, the same
// kernel names). Expects `bf16_t` (raw 16 bits) declared. Spliced in place of its #include line, like
// mma_primitives.cuh.
#pragma once

// An input element as fp32.
__device__ __forceinline__ float input_to_float(bf16_t x) {
#ifdef DISTFLASH_INPUT_F16
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
#else
    return __uint_as_float(((unsigned)x) << 16);
#endif
}
