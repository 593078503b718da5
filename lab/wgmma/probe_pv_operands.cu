// Probes of the two operand forms a wgmma forward needs for O += P·V, each beside one already confirmed
// (probe_m64n64k16.cu: K-major shared-memory descriptors, LBO = core-matrix step along K, SBO = along M/N):
//  - B transposed: V is stored [keys][D] with D contiguous, i.e. MN-major for B (K = keys, N = D), read with
//    imm-trans-b = 1. Core matrix (n-block i, k-block j) is 8 K-rows of 16 contiguous bytes along N at
//    i·stride_n + j·stride_k; the probe tries both readings of LBO and SBO.
//  - A from registers: P stays in the accumulator registers of S = Q·Kᵀ; each warp of the warpgroup holds its 16
//    rows in mma.m16n8k16's A-fragment layout (a0: row g, columns 2t, 2t+1; a1: row g + 8; a2, a3: columns + 8).
// Both compute D [64 × 64] = A [64 × 16] · B where B is given as [16 × 64] (k, n) row-major in global memory.
// Self-contained (no CUDA headers). Expects probe_m64n64k16.cu included before it (descriptor, core_offset,
// store_accumulator).

// D (+)= A·B, m64n64k16: A from a K-major descriptor, B from a descriptor read transposed (MN-major).
__device__ __forceinline__ void wgmma_m64n64k16_trans_b(float (&d)[32], u64 a, u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"  // scale-d false: D = A·B
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b));
}

// D (+)= A·Bᵀ, m64n64k16: A from four registers a thread, B from a K-major descriptor.
__device__ __forceinline__ void wgmma_m64n64k16_register_a(float (&d)[32], const unsigned (&a)[4], u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"  // scale-d false: D = A·B
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// a: [64 × 16] row-major; b: [16 × 64] (k, n) row-major, stored MN-major: element (k, n) at
// (n / 8)·stride_n + (k / 8)·stride_k + (k % 8)·16 + (n % 8)·2. A is K-major as in the first probe (LBO 128, SBO 256).
extern "C" __global__ void wgmma_probe_trans_b(const bf16_t *a, const bf16_t *b, float *d, unsigned stride_n,
                                               unsigned stride_k, unsigned lbo, unsigned sbo) {
    __shared__ __align__(128) unsigned char tiles[2][4096];
    for (int i = threadIdx.x; i < 64 * 16; i += blockDim.x) {
        const int row = i / 16, k = i % 16;
        *(bf16_t *)(tiles[0] + core_offset(row, k, 256, 128)) = a[i];
        const int kb = i / 64, n = i % 64;
        *(bf16_t *)(tiles[1] + (n / 8) * stride_n + (kb / 8) * stride_k + (kb % 8) * 16 + (n % 8) * 2) = b[i];
    }
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 0.f;
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    wgmma_m64n64k16_trans_b(acc, descriptor(tiles[0], 128, 256), descriptor(tiles[1], lbo, sbo));
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    store_accumulator(acc, d);
}

// a: [64 × 16] row-major, given to the instruction in registers; b: [16 × 64] (k, n) row-major, stored K-major
// (Bᵀ's rows as the first probe's B: element (k, n) at core_offset(n, k, 256, 128); LBO 128, SBO 256).
extern "C" __global__ void wgmma_probe_register_a(const bf16_t *a, const bf16_t *b, float *d) {
    __shared__ __align__(128) unsigned char tile[4096];
    for (int i = threadIdx.x; i < 64 * 16; i += blockDim.x) {
        const int k = i / 64, n = i % 64;
        *(bf16_t *)(tile + core_offset(n, k, 256, 128)) = b[i];
    }
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    auto pair = [&](int row, int column) {  // two bf16 of A, the lower column in the low half
        return (unsigned)a[(16 * warp + row) * 16 + column] | ((unsigned)a[(16 * warp + row) * 16 + column + 1] << 16);
    };
    const unsigned fragment[4] = {pair(g, 2 * t), pair(g + 8, 2 * t), pair(g, 2 * t + 8), pair(g + 8, 2 * t + 8)};
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 0.f;
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    wgmma_m64n64k16_register_a(acc, fragment, descriptor(tile, 128, 256));
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    store_accumulator(acc, d);
}
