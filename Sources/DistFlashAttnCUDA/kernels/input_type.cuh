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

// fp32 rounded to the nearest input element (ties to even).
__device__ __forceinline__ bf16_t float_to_input(float x) {
    unsigned short r;
#ifdef DISTFLASH_INPUT_F16
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
#else
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
#endif
    return r;
}
