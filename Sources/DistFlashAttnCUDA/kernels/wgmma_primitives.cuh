// Warpgroup MMA (wgmma.mma_async, sm_90a) in the shapes the attention kernels use, and the shared-memory descriptors
// they read. Operands sit in shared memory either in 128-byte swizzled panels (the fast layout: the attention
// kernels' Q, K, V, dO) or as 8 × 8 core matrices without swizzle; for the latter, K-major or read transposed
// (MN-major), LBO is the byte step between core matrices adjacent along K and SBO the step along M or N. The
// readings of both layouts are confirmed on the card (lab/wgmma's probes, the swizzled kernels' checks).
// Accumulators: per warp of the warpgroup 16 rows, laid out as mma.m16n8's C fragment repeated over the N/8
// column chunks (d[4c + e]: row g + 8·(e / 2), column 8c + 2t + e % 2). sm_90a only.
#pragma once

#include "mma_primitives.cuh"

typedef unsigned long long u64;

// Shared-memory descriptor, no swizzle: start address, LBO and SBO (bytes; each stored >> 4 in 14 bits).
__device__ __forceinline__ u64 smem_descriptor(const void *tile, unsigned lbo, unsigned sbo) {
    return (u64)((shared_address(tile) & 0x3FFFF) >> 4) | ((u64)((lbo & 0x3FFFF) >> 4) << 16)
        | ((u64)((sbo & 0x3FFFF) >> 4) << 32);
}

// Descriptor of a tile in 128-byte swizzled panels (mode 1 in bits 62–63; atoms 1024-byte aligned, base offset 0).
// A panel holds 64 columns of ROWS rows: 128-byte rows, 8-row atoms of 1024 bytes, 16-byte chunk c of row r at
// c ^ (r mod 8). K-major: SBO 1024 (between atoms), LBO unused; read transposed: LBO 16, SBO 1024 (the swapped
// reading fails the lab's checks).
__device__ __forceinline__ u64 swizzled_descriptor(const void *tile, unsigned lbo, unsigned sbo) {
    return smem_descriptor(tile, lbo, sbo) | (1ull << 62);
}

// Byte offset of 16-byte chunk c (of D / 8) of row r in a tile of ROWS rows stored as 128-byte swizzled panels.
template <int ROWS>
__device__ __forceinline__ unsigned swizzled_chunk(int r, int c) {
    return (c >> 3) * ROWS * 128 + (r >> 3) * 1024 + (r & 7) * 128 + (((c & 7) ^ (r & 7)) << 4);
}

// The K-major descriptor of 16 columns kk (a k16 step: 32 bytes along a panel's rows) of a swizzled tile of
// ROWS rows, from row `row` (a multiple of 8) on.
template <int ROWS>
__device__ __forceinline__ u64 swizzled_k_major(const unsigned char *tile, int row, int kk) {
    return swizzled_descriptor(tile + (kk >> 2) * ROWS * 128 + row / 8 * 1024 + (kk & 3) * 32, 16, 1024);
}

// The first 1024-byte boundary at or after `base` in shared memory (swizzled atoms must start on one).
__device__ __forceinline__ unsigned char *align_1024(unsigned char *base) {
    return base + ((1024 - (shared_address(base) & 1023)) & 1023);
}

// Byte offset of 16-byte chunk (row r, chunk c) of a tile of `COLUMNS` 2-byte columns in the core-matrix layout:
// a core matrix's rows 16 bytes apart, core matrices along the columns 128 bytes apart, blocks of 8 rows
// 16·COLUMNS bytes apart. Read with the columns as K the tile is K-major (LBO 128, SBO 16·COLUMNS); read with the
// rows as K it is MN-major (LBO 16·COLUMNS, SBO 128).
template <int COLUMNS>
__device__ __forceinline__ unsigned core_chunk(int r, int c) { return (r >> 3) * 16 * COLUMNS + c * 128 + (r & 7) * 16; }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int PENDING>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(PENDING) : "memory"); }
// cp.async and st.shared write through the generic proxy; wgmma reads through the async proxy.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// Pins accumulator registers at this point of the program: the compiler must not move their reads above a
// wgmma_wait or their writes below a wgmma issue.
template <int N>
__device__ __forceinline__ void pin(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// D (+)= op(A)·op(B), m64n32k16, both operands from descriptors; TRANS_A / TRANS_B read them MN-major;
// `accumulate` 0 overwrites D.
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_ss_m64n32(float (&d)[16], u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %19, %20;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}

// D (+)= op(A)·op(B), m64n64k16, both operands from descriptors; TRANS_A / TRANS_B read them MN-major;
// `accumulate` 0 overwrites D.
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_ss_m64n64(float (&d)[32], u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}

// D (+)= op(A)·op(B), m64n128k16, both operands from descriptors; TRANS_A / TRANS_B read them MN-major;
// `accumulate` 0 overwrites D.
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_ss_m64n128(float (&d)[64], u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(a), "l"(b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}

// D += A·op(B), m64n64k16: A from registers (per warp its 16 rows as mma.m16n8k16's A fragment), B from a
// descriptor, read MN-major when TRANS_B.
template <int TRANS_B>
__device__ __forceinline__ void wgmma_rs_m64n64(float (&d)[32], const u32 (&a)[4], u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %37;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B));
}

// D += A·op(B), m64n128k16: A from registers (per warp its 16 rows as mma.m16n8k16's A fragment), B from a
// descriptor, read MN-major when TRANS_B.
template <int TRANS_B>
__device__ __forceinline__ void wgmma_rs_m64n128(float (&d)[64], const u32 (&a)[4], u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %69;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B));
}

// The shapes by N, for kernels templated on a tile width.
template <int N, int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], u64 a, u64 b, int accumulate) {
    if constexpr (N == 32) wgmma_ss_m64n32<TRANS_A, TRANS_B>(d, a, b, accumulate);
    else if constexpr (N == 64) wgmma_ss_m64n64<TRANS_A, TRANS_B>(d, a, b, accumulate);
    else wgmma_ss_m64n128<TRANS_A, TRANS_B>(d, a, b, accumulate);
}
template <int N, int TRANS_B = 1>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const u32 (&a)[4], u64 b) {
    if constexpr (N == 64) wgmma_rs_m64n64<TRANS_B>(d, a, b);
    else wgmma_rs_m64n128<TRANS_B>(d, a, b);
}

// The A fragments of a product's K slice kk (16 columns) from an accumulator of the same rows: columns 16kk …
// 16kk + 15 are chunks 2kk and 2kk + 1.
template <int N>
__device__ __forceinline__ void accumulator_to_a(u32 (&a)[4], const float (&d)[N], int kk) {
    a[0] = pack_input(d[8 * kk], d[8 * kk + 1]);
    a[1] = pack_input(d[8 * kk + 2], d[8 * kk + 3]);
    a[2] = pack_input(d[8 * kk + 4], d[8 * kk + 5]);
    a[3] = pack_input(d[8 * kk + 6], d[8 * kk + 7]);
}
