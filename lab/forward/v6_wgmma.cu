// Candidate forward (lab): the first Hopper kernel — warpgroup MMA (wgmma.mma_async) instead of mma.sync.
//
// Two warpgroups of 64 query rows share each K/V tile. S = Q·Kᵀ reads both operands straight from shared memory
// through descriptors (no ldmatrix: the per-warp copies of K that bound the mainline go away), and O += P·V
// takes P from the registers that hold S's accumulators, V read transposed from shared memory. Tiles sit in
// shared memory as 8 × 8 core matrices without swizzle (the layout `lab/run.sh wgmma` confirmed for K-major
// operands); cp.async fills them, two stages of K and V. No warp specialisation or ping-pong yet: each warpgroup
// waits for its own products (wgmma.wait_group 0) before its softmax, and the other warpgroup — or the SM's
// other block at D = 64 — fills the gap.
// Predicted: ≥ 1.2× the mainline at D = 128 (wgmma's rate is ~1.5× mma.sync's and the operand traffic through
// ldmatrix disappears; the softmax is not yet overlapped with the products within a warpgroup).
// Depends on probes 2 and 3 of `lab/run.sh wgmma` (B transposed, A from registers): V_LBO_ALONG_K picks the
// reading of the transposed descriptor; both are built. Expects mma_primitives.cuh already included.

typedef unsigned long long u64;

// D (+)= A·Bᵀ, m64n64k16: A and B from K-major descriptors; `accumulate` 0 overwrites D.
__device__ __forceinline__ void wgmma_ss_m64n64(float (&d)[32], u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b), "r"(accumulate));
}

// D (+)= A·Bᵀ, m64n128k16: A and B from K-major descriptors; `accumulate` 0 overwrites D.
__device__ __forceinline__ void wgmma_ss_m64n128(float (&d)[64], u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(a), "l"(b), "r"(accumulate));
}

// D += A·B, m64n64k16: A from registers (mma.m16n8k16's A fragments, a warp's 16 rows), B from a descriptor
// read transposed (MN-major).
__device__ __forceinline__ void wgmma_rs_m64n64_trans_b(float (&d)[32], const u32 (&a)[4], u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// D += A·B, m64n128k16: A from registers (mma.m16n8k16's A fragments, a warp's 16 rows), B from a descriptor
// read transposed (MN-major).
__device__ __forceinline__ void wgmma_rs_m64n128_trans_b(float (&d)[64], const u32 (&a)[4], u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE " "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// Shared-memory descriptor (no swizzle): start address, leading and stride byte offsets (each >> 4, 14 bits).
__device__ __forceinline__ u64 smem_descriptor(const void *tile, unsigned lbo, unsigned sbo) {
    return (u64)((shared_address(tile) & 0x3FFFF) >> 4) | ((u64)((lbo & 0x3FFFF) >> 4) << 16)
        | ((u64)((sbo & 0x3FFFF) >> 4) << 32);
}

// Byte offset of 16-byte chunk (row r, chunk c) of a tile with D columns stored as 8 × 8 core matrices: the
// chunks of a core row are 16 bytes apart, core matrices adjacent along the columns 128 bytes apart, blocks of
// 8 rows 16·D bytes apart. Q and K read this way are K-major (column = head dimension); V is MN-major (row = key).
template <int D>
__device__ __forceinline__ unsigned core_chunk(int r, int c) { return (r >> 3) * 16 * D + c * 128 + (r & 7) * 16; }

// Copies `rows` rows of D columns from global (row stride `stride` elements) into the core-matrix layout, rows
// past `valid` as zeros. Eight consecutive threads fill one 128-byte core matrix, so the writes hit every bank.
template <int D, int THREADS>
__device__ __forceinline__ void load_core_tile(unsigned char *tile, const bf16_t *base, size_t stride, int first_row,
                                               int rows, int valid) {
    constexpr int CHUNKS = D / 8;
    for (int idx = threadIdx.x; idx < rows * CHUNKS; idx += THREADS) {
        const int r8 = idx & 7, c = (idx >> 3) % CHUNKS, block = (idx >> 3) / CHUNKS, r = block * 8 + r8;
        const int i = first_row + r;
        cp_async16(tile + core_chunk<D>(r, c), base + (size_t)min(i, valid - 1) * stride + c * 8, i < valid);
    }
    cp_async_commit();
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
// cp.async writes reach shared memory through the generic proxy; wgmma reads through the async proxy.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

template <int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], u64 a, u64 b, int accumulate) {
    if constexpr (N == 64) wgmma_ss_m64n64(d, a, b, accumulate);
    else wgmma_ss_m64n128(d, a, b, accumulate);
}
template <int N>
__device__ __forceinline__ void wgmma_rs_trans_b(float (&d)[N / 2], const u32 (&a)[4], u64 b) {
    if constexpr (N == 64) wgmma_rs_m64n64_trans_b(d, a, b);
    else wgmma_rs_m64n128_trans_b(d, a, b);
}

// Two warpgroups, 64 query rows each (BM = 128); key tiles of BN; K and V double-buffered by cp.async, the tile
// after next loading while this one computes. Per tile and warpgroup: S = Q·Kᵀ (D/16 wgmma from shared memory),
// mask and online softmax on the accumulators, then O += P·V (BN/16 wgmma, P from registers, V read transposed).
// The mask rule, tile classes and the (o, lse) fold are the mainline's. V_LBO_ALONG_K: which reading of the
// MN-major descriptor is right (lab/run.sh wgmma, probe 2).
template <int D, int BN, bool V_LBO_ALONG_K>
__device__ void forward_wgmma(const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,
                              const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq,
                              int Sk, int H, int Hkv, float scale, int kind, int window) {
    constexpr int BM = 128, THREADS = 256, TILE_Q = BM * D * 2, TILE_KV = BN * D * 2;
    extern __shared__ __align__(128) unsigned char shared_bytes[];
    unsigned char *sQ = shared_bytes, *sK = sQ + TILE_Q, *sV = sK + 2 * TILE_KV;  // K and V: two stages each
    __shared__ int4 query_bounds;
    __shared__ int tile_range[2];

    const int tid = threadIdx.x, group = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
    const int row0 = (gridDim.x - 1 - blockIdx.x) * BM;  // heaviest (latest) query tiles first under causal masks
    const int key_tiles = (Sk + BN - 1) / BN;
    const size_t q_stride = (size_t)H * D, kv_stride = (size_t)Hkv * D;
    const bf16_t *q_base = q + ((size_t)b * Sq * H + h) * D;
    const bf16_t *k_base = k + ((size_t)b * Sk * Hkv + kvh) * D, *v_base = v + ((size_t)b * Sk * Hkv + kvh) * D;

    load_core_tile<D, THREADS>(sQ, q_base, q_stride, row0, BM, Sq);
    if (tid == 0) {
        query_bounds = make_int4(0x7fffffff, -0x7fffffff, 0x7fffffff, -0x7fffffff);
        tile_range[0] = key_tiles;
        tile_range[1] = -1;
    }
    __syncthreads();
    for (int i = row0 + tid; i < min(row0 + BM, Sq); i += THREADS) {
        atomicMin(&query_bounds.x, qpos[i]); atomicMax(&query_bounds.y, qpos[i]);
        atomicMin(&query_bounds.z, qdoc[i]); atomicMax(&query_bounds.w, qdoc[i]);
    }
    __syncthreads();
    const int4 qb = query_bounds;
    for (int j = tid; j < key_tiles; j += THREADS)
        if (classify(qb, key_bounds[j], false, kind, window) != HIDDEN) {
            atomicMin(&tile_range[0], j);
            atomicMax(&tile_range[1], j);
        }
    __syncthreads();
    const int first = tile_range[0], last = tile_range[1];
    auto class_of = [&](int j) { return classify(qb, key_bounds[j], (j + 1) * BN > Sk, kind, window); };
    auto next_tile = [&](int j) {
        do j++; while (j <= last && class_of(j) == HIDDEN);
        return j;
    };
    auto load_kv = [&](int j, int stage) {  // one commit group: K then V of tile j
        const int key0 = j * BN;
        constexpr int CHUNKS = D / 8;
        for (int idx = tid; idx < BN * CHUNKS; idx += THREADS) {
            const int r8 = idx & 7, c = (idx >> 3) % CHUNKS, r = ((idx >> 3) / CHUNKS) * 8 + r8, jj = key0 + r;
            const size_t offset = (size_t)min(jj, Sk - 1) * kv_stride + c * 8;
            cp_async16(sK + stage * TILE_KV + core_chunk<D>(r, c), k_base + offset, jj < Sk);
            cp_async16(sV + stage * TILE_KV + core_chunk<D>(r, c), v_base + offset, jj < Sk);
        }
        cp_async_commit();
    };

    // This thread's rows: warpgroup `group`, warp `warp` within it, lane rows g and g + 8.
    const float scale2 = scale * LOG2E;
    int rows[2], qp[2], qd[2];
    float m[2], l[2], acc[D / 2];
#pragma unroll
    for (int s = 0; s < 2; s++) {
        const int i = row0 + group * 64 + warp * 16 + g + 8 * s;
        rows[s] = i;
        qp[s] = i < Sq ? qpos[i] : 0;
        qd[s] = i < Sq ? qdoc[i] : -1;
        m[s] = NEG_INF;
        l[s] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < D / 2; i++) acc[i] = 0.f;

    int j = first, next = first <= last ? next_tile(first) : last + 1;
    if (j <= last) load_kv(j, 0);
    if (next <= last) load_kv(next, 1);
    for (int stage = 0; j <= last; stage ^= 1) {
        // Tile j's K and V (and Q, the first time) have landed; tile `next` may still be loading.
        if (next <= last) cp_async_wait_one(); else cp_async_wait_all();
        fence_async_shared();
        __syncthreads();
        const int key0 = j * BN, tile_class = class_of(j);
        const unsigned char *tK = sK + stage * TILE_KV, *tV = sV + stage * TILE_KV;

        // S = Q·Kᵀ for this warpgroup's 64 rows: A = Q rows, B = K rows (both K-major; LBO along the head
        // dimension, 128 bytes; SBO between blocks of 8 rows, 16·D bytes).
        float s[BN / 2];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<BN>(s, smem_descriptor(sQ + group * 64 * D * 2 + kk * 256, 128, 16 * D),
                         smem_descriptor(tK + kk * 256, 128, 16 * D), kk > 0);
        wgmma_commit();
        wgmma_wait_all();

        // Mask (partial tiles), then the online softmax; s[4c + e] is row g + 8·(e / 2), key 8c + 2t + e % 2.
        if (tile_class == PARTIAL) {
#pragma unroll
            for (int c = 0; c < BN / 8; c++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, jj = key0 + c * 8 + t * 2 + (e & 1);
                    const bool ok = rows[r] < Sq && jj < Sk && visible(qp[r], kpos[jj], qd[r], kdoc[jj], kind, window);
                    s[4 * c + e] = ok ? s[4 * c + e] : NEG_INF;
                }
        }
        float top[2] = {m[0], m[1]}, sum[2] = {0.f, 0.f}, shift[2];
#pragma unroll
        for (int i = 0; i < BN / 2; i++) top[(i >> 1) & 1] = fmaxf(top[(i >> 1) & 1], s[i]);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 1));
            top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 2));
            const float base = top[r] == NEG_INF ? 0.f : top[r];
            const float alpha = exp2_approx((m[r] - base) * scale2);
            m[r] = top[r];
            shift[r] = base * scale2;
            l[r] *= alpha;
#pragma unroll
            for (int c = 0; c < D / 8; c++) {
                acc[4 * c + 2 * r] *= alpha;
                acc[4 * c + 2 * r + 1] *= alpha;
            }
        }
#pragma unroll
        for (int i = 0; i < BN / 2; i++) {
            s[i] = exp2_approx(fmaf(s[i], scale2, -shift[(i >> 1) & 1]));
            sum[(i >> 1) & 1] += s[i];
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            l[r] += sum[r];
        }

        // O += P·V: P's accumulators are A fragments (keys 16kk … 16kk + 15 in columns 2kk and 2kk + 1); V's
        // rows are keys, read transposed: core matrices along the head dimension 128 bytes apart, blocks of 8 keys
        // 16·D bytes apart.
        // All of P is packed before the first product: registers an in-flight wgmma reads must not change.
        u32 p[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            p[kk][0] = pack_input(s[8 * kk], s[8 * kk + 1]);
            p[kk][1] = pack_input(s[8 * kk + 2], s[8 * kk + 3]);
            p[kk][2] = pack_input(s[8 * kk + 4], s[8 * kk + 5]);
            p[kk][3] = pack_input(s[8 * kk + 6], s[8 * kk + 7]);
        }
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
            wgmma_rs_trans_b<D>(acc, p[kk], V_LBO_ALONG_K ? smem_descriptor(tV + kk * 32 * D, 16 * D, 128)
                                                          : smem_descriptor(tV + kk * 32 * D, 128, 16 * D));
        wgmma_commit();
        wgmma_wait_all();

        // Every warpgroup is done with this stage: the tile after next loads into it.
        __syncthreads();
        const int after = next <= last ? next_tile(next) : last + 1;
        if (after <= last) load_kv(after, stage);
        j = next;
        next = after;
    }
    cp_async_wait_all();  // with no visible tile, Q's copy is still in flight

    // (o, lse) ⊕= this block's (acc / l, m + log l), in fp32: weights of the two normalised partials.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = rows[r];
        if (i >= Sq || l[r] == 0.f) continue;  // no visible key in this block: the partial stands
        const float block_lse = m[r] * scale2 + __log2f(l[r]);  // base 2
        float *lse_at = lse + ((size_t)b * H + h) * Sq + i;
        const float old = *lse_at;  // natural log
        const float old2 = old == NEG_INF ? NEG_INF : old * LOG2E;
        const float top = fmaxf(old2, block_lse);
        const float w_old = exp2_approx(old2 - top), w_new = exp2_approx(block_lse - top);
        const float total = w_old + w_new;
        const float f_new = w_new / (total * l[r]), f_old = w_old / total;
        float *row = o + (size_t)(b * Sq + i) * q_stride + h * D + t * 2;
#pragma unroll
        for (int c = 0; c < D / 8; c++) {
            const float2 before = old == NEG_INF ? make_float2(0.f, 0.f) : *(float2 *)(row + c * 8);
            *(float2 *)(row + c * 8) = make_float2(f_old * before.x + f_new * acc[4 * c + 2 * r],
                                                   f_old * before.y + f_new * acc[4 * c + 2 * r + 1]);
        }
        __syncwarp(0xfu << (lane & 28));  // the quad has read lse before one of its lanes writes it
        if (t == 0) *lse_at = (top + __log2f(total)) * LN2;
    }
}

// Kernel name: lab_forward_v6_d<D>_n<BN>[_lbo_mn]; 256 threads; dynamic shared memory (128 + 4·BN)·D·2 bytes.
#define FORWARD_V6(D, BN, ALONG_K, SUFFIX)                                                                        \
    extern "C" __global__ void __launch_bounds__(256) lab_forward_v6_d##D##_n##BN##SUFFIX(                         \
            const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,                  \
            const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq, int Sk,       \
            int H, int Hkv, int dim, float scale, int kind, int window) {                                         \
        forward_wgmma<D, BN, ALONG_K>(q, k, v, qpos, kpos, qdoc, kdoc, key_bounds, o, lse, Sq, Sk, H, Hkv, scale, \
                                      kind, window);                                                              \
    }
FORWARD_V6(64, 128, true, )
FORWARD_V6(64, 128, false, _lbo_mn)
FORWARD_V6(128, 128, true, )
FORWARD_V6(128, 128, false, _lbo_mn)
FORWARD_V6(128, 64, true, _n64)
