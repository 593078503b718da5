// Small kernels the executor uses to keep shards on the device: cutting and pasting 4-D blocks (set / add),
// merging two partial (O, LSE), and δ = rowsum(dO ∘ O) with dO in the input type. All memory-bound; simplicity
// first. Compiled once per input type (bf16; fp16 with DISTFLASH_INPUT_F16 defined).
typedef unsigned short bf16_t;
#define NEG_INF __int_as_float(0xff800000)

#include "input_type.cuh"

// dst[p0 + a, p1 + b, p2 + c, p3 + d] (=|+=) src[o0 + a, o1 + b, o2 + c, o3 + d] for a block of e0×e1×e2×e3:
// src has dims (·, s1, s2, s3), dst (·, t1, t2, t3). One block of threads per run of the last axis
// (grid-stride over runs), threads along the run.
template <typename T, bool ADD>
__device__ void copy_block(const T *src, T *dst, int e0, int e1, int e2, int e3, int s1, int s2, int s3, int o0,
                           int o1, int o2, int o3, int t1, int t2, int t3, int p0, int p1, int p2) {
    const long long runs = (long long)e0 * e1 * e2;
    for (long long run = blockIdx.x; run < runs; run += gridDim.x) {
        const int c = (int)(run % e2), b = (int)(run / e2 % e1), a = (int)(run / ((long long)e2 * e1));
        const T *from = src + (((long long)(a + o0) * s1 + (b + o1)) * s2 + (c + o2)) * s3 + o3;
        T *to = dst + (((long long)(a + p0) * t1 + (b + p1)) * t2 + (c + p2)) * t3;
        for (int d = threadIdx.x; d < e3; d += blockDim.x) {
            if (ADD) to[d] += from[d]; else to[d] = from[d];
        }
    }
}

#define COPY_ARGS int e0, int e1, int e2, int e3, int s1, int s2, int s3, int o0, int o1, int o2, int o3, int t1, \
                  int t2, int t3, int p0, int p1, int p2, int p3
#define COPY_PASS e0, e1, e2, e3, s1, s2, s3, o0, o1, o2, o3, t1, t2, t3, p0, p1, p2

extern "C" __global__ void copy_block_f32(const float *src, float *dst, COPY_ARGS) {
    copy_block<float, false>(src, dst + p3, COPY_PASS);
}
extern "C" __global__ void add_block_f32(const float *src, float *dst, COPY_ARGS) {
    copy_block<float, true>(src, dst + p3, COPY_PASS);
}
extern "C" __global__ void copy_block_b16(const bf16_t *src, bf16_t *dst, COPY_ARGS) {
    copy_block<bf16_t, false>(src, dst + p3, COPY_PASS);
}

// (O, LSE) ⊕= (O2, LSE2) for rows of O [B, S, H, D], LSE [B, H, S]: one warp per (b, h, i) row.
extern "C" __global__ void merge_partials(float *o, float *lse, const float *o2, const float *lse2, int S, int H,
                                          int D) {
    const int lane = threadIdx.x & 31, i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int h = blockIdx.y, b = blockIdx.z;
    if (i >= S) return;
    const long long l = ((long long)b * H + h) * S + i;
    const float a = lse[l], c = lse2[l];
    if (c == NEG_INF) return;  // the other partial saw no key: nothing to add
    const float top = fmaxf(a, c);
    const float wa = a == NEG_INF ? 0.f : expf(a - top), wc = expf(c - top);
    const float fa = wa / (wa + wc), fc = wc / (wa + wc);
    float *row = o + (((long long)b * S + i) * H + h) * D;
    const float *other = o2 + (((long long)b * S + i) * H + h) * D;
    for (int d = lane; d < D; d += 32) row[d] = fa * row[d] + fc * other[d];
    __syncwarp();  // every lane has read lse[l] (the early returns are the same for the whole warp)
    if (lane == 0) lse[l] = top + logf(wa + wc);
}

// δ[b, h, i] = Σ_d dO[b, i, h, d] · O[b, i, h, d], dO in bf16: one warp per row.
__device__ __forceinline__ float as_float(float x) { return x; }
__device__ __forceinline__ float as_float(bf16_t x) { return input_to_float(x); }

template <typename OutputType>
__device__ void backward_preprocess(const OutputType *o, const bf16_t *dout, float *delta, int S, int H, int D) {
    const int lane = threadIdx.x & 31, i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int h = blockIdx.y, b = blockIdx.z;
    if (i >= S) return;
    const long long row = (((long long)b * S + i) * H + h) * D;
    float sum = 0.f;
    for (int d = lane; d < D; d += 32) sum += as_float(o[row + d]) * input_to_float(dout[row + d]);
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) delta[((long long)b * H + h) * S + i] = sum;
}

// O fp32 (a merged partial), dO in the input type.
extern "C" __global__ void backward_preprocess_input(const float *o, const bf16_t *dout, float *delta, int S, int H,
                                                     int D) {
    backward_preprocess(o, dout, delta, S, H, D);
}

// O and dO in the input type (O as a training step keeps it: rounded once, as the output projection reads it).
extern "C" __global__ void backward_preprocess_inputs(const bf16_t *o, const bf16_t *dout, float *delta, int S, int H,
                                                      int D) {
    backward_preprocess(o, dout, delta, S, H, D);
}

// fp32 copy of an input-type tensor (the SIMT backward reads dO in fp32).
extern "C" __global__ void widen_input(const bf16_t *src, float *dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = input_to_float(src[i]);
}

// An fp32 tensor rounded to the input type (a whole-block attention's O on kernels that write it in fp32).
extern "C" __global__ void narrow_input(const float *src, bf16_t *dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = float_to_input(src[i]);
}

// Benchmark inputs made on the device: input-type values uniform in [−√3, √3) (unit variance) from a hash of
// (seed, index), so no host array of the full size is ever built.
extern "C" __global__ void fill_random_input(bf16_t *dst, long long n, unsigned seed) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned long long x = (unsigned long long)i * 0x9E3779B97F4A7C15ull ^ ((unsigned long long)seed << 32 | seed);
        x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 27; x *= 0x94D049BB133111EBull; x ^= x >> 33;
        float u = (float)(x >> 40) * (1.f / 16777216.f);  // [0, 1)
        float value = (2.f * u - 1.f) * 1.7320508f;
#ifdef DISTFLASH_INPUT_F16
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(dst[i]) : "f"(value));
#else
        dst[i] = (bf16_t)(__float_as_uint(value) >> 16);
#endif
    }
}
