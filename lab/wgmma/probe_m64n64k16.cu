// A probe of Hopper's warpgroup MMA before any kernel is built on it: one warpgroup computes
// D [64 × 64] = A [64 × 16] · Bᵀ (B stored [64 × 16], K-major like A) with one wgmma.mma_async.m64n64k16 from
// shared-memory descriptors (no swizzle), and writes D in the accumulator layout we assume. The tiles sit in
// shared memory as 8 × 8 core matrices (8 rows of 16 bytes, 128 contiguous bytes each); core matrix (i, j) — i
// along M or N, j along K — starts at i·stride_mn + j·stride_k bytes. The descriptors get `lbo` and `sbo`, so
// the harness can try both readings of "leading" and "stride" byte offset against one physical arrangement.
// Self-contained (no CUDA headers): lab/compile_check.py compiles it with NVRTC as the backend would.
typedef unsigned short bf16_t;
typedef unsigned long long u64;

__device__ __forceinline__ unsigned shared_address(const void *pointer) {
    unsigned address;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(pointer));
    return address;
}

// Matrix descriptor: start address, leading and stride byte offsets (each >> 4, 14 bits), base offset 0,
// swizzle mode 0 (bits 62-63).
__device__ __forceinline__ u64 descriptor(const void *tile, unsigned lbo, unsigned sbo) {
    return (u64)((shared_address(tile) & 0x3FFFF) >> 4) | ((u64)((lbo & 0x3FFFF) >> 4) << 16)
        | ((u64)((sbo & 0x3FFFF) >> 4) << 32);
}

// D (+)= A·B, m64n64k16, bf16 in, fp32 accumulate; A and B from descriptors, neither transposed.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b), "r"(accumulate));
}

// Byte offset of element (row, k) of a 64 × 16 tile stored as core matrices.
__device__ __forceinline__ unsigned core_offset(int row, int k, unsigned stride_mn, unsigned stride_k) {
    return (row / 8) * stride_mn + (k / 8) * stride_k + (row % 8) * 16 + (k % 8) * 2;
}

// Writes the accumulator to d [64 × 64] in the layout we assume (mma.m16n8's C fragment, per warp 16 rows,
// repeated over the 8 column chunks): warp w, lane l hold rows 16w + l/4 and 16w + l/4 + 8, columns 8j + 2(l % 4)
// + {0, 1} in acc[4j .. 4j + 3].
__device__ __forceinline__ void store_accumulator(const float (&acc)[32], float *d) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row = 16 * warp + lane / 4;
    for (int j = 0; j < 8; ++j) {
        const int column = 8 * j + 2 * (lane % 4);
        d[row * 64 + column] = acc[4 * j];
        d[row * 64 + column + 1] = acc[4 * j + 1];
        d[(row + 8) * 64 + column] = acc[4 * j + 2];
        d[(row + 8) * 64 + column + 1] = acc[4 * j + 3];
    }
}

// One block of 128 threads. a, b: [64 × 16] bf16 row-major in global memory; d: [64 × 64] fp32.
extern "C" __global__ void wgmma_probe(const bf16_t *a, const bf16_t *b, float *d, unsigned stride_mn,
                                       unsigned stride_k, unsigned lbo, unsigned sbo) {
    __shared__ __align__(128) unsigned char tiles[2][4096];
    for (int i = threadIdx.x; i < 64 * 16; i += blockDim.x) {
        const int row = i / 16, k = i % 16;
        *(bf16_t *)(tiles[0] + core_offset(row, k, stride_mn, stride_k)) = a[i];
        *(bf16_t *)(tiles[1] + core_offset(row, k, stride_mn, stride_k)) = b[i];
    }
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // generic-proxy writes → async proxy (wgmma)
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 0.f;
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    wgmma_m64n64k16(acc, descriptor(tiles[0], lbo, sbo), descriptor(tiles[1], lbo, sbo), 0);
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    store_accumulator(acc, d);
}
