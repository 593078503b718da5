// Probes of the 128-byte swizzled layouts (descriptor swizzle mode 1, bits 62–63) that CUTLASS-style Hopper
// kernels use, against the unswizzled core-matrix layout our kernels use now (probe_m64n64k16.cu). In the 128-byte
// swizzle an 8-row atom holds 8 rows of 128 bytes (64 bf16), 1024 bytes in all, and the 16-byte chunk c of row r
// sits at chunk c ^ r — XOR of address bits 4–6 with bits 7–9, so the tiles must be 1024-byte aligned. Both probes
// compute D [64 × 64] = A [64 × 64] · B over K = 64 in four k16 steps, as a kernel would:
//  - K-major A and B (rows of 64 along K): step kk starts 32·kk bytes into the atom's rows; SBO = 1024 between
//    atoms along M/N; LBO unused (the harness tries readings);
//  - A K-major as above, B read transposed (MN-major: rows are K, 64 along N, as V [keys][D]): step kk starts
//    2048·kk bytes on (two 8-row atoms along K); the harness tries readings of LBO / SBO.
// Self-contained (no CUDA headers). Expects probe_m64n64k16.cu included before it (shared_address,
// wgmma_m64n64k16, store_accumulator) and probe_pv_operands.cu (wgmma_m64n64k16_trans_b).

// Descriptor with the 128-byte swizzle: start address, LBO, SBO (each >> 4, 14 bits), base offset 0, mode 1.
__device__ __forceinline__ u64 swizzled_descriptor(const void *tile, unsigned lbo, unsigned sbo) {
    return (u64)((shared_address(tile) & 0x3FFFF) >> 4) | ((u64)((lbo & 0x3FFFF) >> 4) << 16)
        | ((u64)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

// Byte offset of element (row, column) of a tile with 64 columns (128 bytes a row) in the 128-byte swizzle.
__device__ __forceinline__ unsigned swizzled_offset(int row, int column) {
    return (row / 8) * 1024 + (row % 8) * 128 + (((column / 8) ^ (row % 8)) << 4) + (column % 8) * 2;
}

// Both [64 × 64] row-major operands into 128-byte swizzled tiles, visible to wgmma.
__device__ void load_swizzled(unsigned char (&tiles)[2][8192], const bf16_t *a, const bf16_t *b) {
    for (int i = threadIdx.x; i < 64 * 64; i += blockDim.x) {
        *(bf16_t *)(tiles[0] + swizzled_offset(i / 64, i % 64)) = a[i];
        *(bf16_t *)(tiles[1] + swizzled_offset(i / 64, i % 64)) = b[i];
    }
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// D += A·B, m64n64k16: A K-major, B read transposed (MN-major), both from descriptors.
__device__ __forceinline__ void wgmma_m64n64k16_trans_b_accumulate(float (&d)[32], u64 a, u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b));
}

// a: [64 × 64] (m, k) row-major; b: [64 × 64] (n, k) row-major (K-major B). D = A·Bᵀ.
extern "C" __global__ void wgmma_probe_swizzled(const bf16_t *a, const bf16_t *b, float *d, unsigned lbo,
                                                unsigned sbo) {
    __shared__ __align__(1024) unsigned char tiles[2][8192];
    load_swizzled(tiles, a, b);
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 0.f;
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n64k16(acc, swizzled_descriptor(tiles[0] + 32 * kk, lbo, sbo),
                        swizzled_descriptor(tiles[1] + 32 * kk, lbo, sbo), kk > 0);
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    store_accumulator(acc, d);
}

// a: [64 × 64] (m, k) row-major, K-major and swizzled (LBO 16, SBO 1024 — the reading the first swizzle probe
// checks); b: [64 × 64] (k, n) row-major, stored MN-major and swizzled (rows are K). D = A·B, one k16 step at a
// time with B's start 2048 bytes on.
extern "C" __global__ void wgmma_probe_swizzled_trans_b(const bf16_t *a, const bf16_t *b, float *d, unsigned lbo,
                                                        unsigned sbo) {
    __shared__ __align__(1024) unsigned char tiles[2][8192];
    load_swizzled(tiles, a, b);
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 0.f;
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    for (int kk = 0; kk < 4; ++kk) {
        if (kk == 0) {  // scale-d false on the first step: D = A·B
            wgmma_m64n64k16_trans_b(acc, swizzled_descriptor(tiles[0], 16, 1024),
                                    swizzled_descriptor(tiles[1], lbo, sbo));
        } else {
            wgmma_m64n64k16_trans_b_accumulate(acc, swizzled_descriptor(tiles[0] + 32 * kk, 16, 1024),
                                               swizzled_descriptor(tiles[1] + 2048 * kk, lbo, sbo));
        }
    }
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    store_accumulator(acc, d);
}
