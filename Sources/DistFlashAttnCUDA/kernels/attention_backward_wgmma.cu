// Hopper tensor-core backward (sm_90a): all five products on warpgroup MMA (wgmma.mma_async), D ∈ {64, 128}.
//
// A block of two warpgroups owns BN = 128 keys of one key/value head (64 a warpgroup) and walks every visible
// (query head of its group, 64-row query tile) pair. Per pair and warpgroup, keys as rows:
//     Sᵀ = K_wg·Qᵀ, dPᵀ = V_wg·dOᵀ          both operands from shared-memory descriptors (K-major)
//     Pᵀ = exp(scale·Sᵀ − LSE), dSᵀ = scale · Pᵀ ∘ (dPᵀ − δ)        on the accumulators
//     dV_wg += Pᵀ·dO, dK_wg += dSᵀ·Q         Pᵀ and dSᵀ from registers, dO and Q read transposed (MN-major)
//     dQ[:, half wg] += dS·K                 dSᵀ through shared memory, read transposed as A; K read transposed
// so dK and dV of a group are summed over its query heads in registers without atomics, and dQ is accumulated in
// fp32 by vector reductions (two columns each). The element-wise work overlaps the products: Sᵀ is waited for
// alone, so Pᵀ forms while dPᵀ computes, dV += Pᵀ·dO runs while dSᵀ forms, and dK += dSᵀ·Q while dQ is added.
// The next pair's Q, dO, LSE and δ load by cp.async into a second stage while this pair computes; every query
// tile's class is computed once into shared memory. Tiles the mask hides are skipped, fully visible ones take no
// mask work. K, V, Q and dO sit in 128-byte swizzled panels (wgmma_primitives.cuh; lab, H100: 1.14–1.16× the
// unswizzled layout at D = 128, 1.11–1.12× at D = 64), dSᵀ in the core layout. dQ reads K transposed, each
// warpgroup D / 2 columns: at D = 128 a whole panel each; at D = 64 half a panel, which no descriptor can name, so
// there K is kept a second time in the core layout for dQ.
//
// Contract: the mma.sync backward's (attention_backward_mma.cu), with its 64-row query bounds and 128-row key
// bounds. Shared memory: (2·128 + 4·64)·D·2 + 128·64·2 + 4·64·4 + 1024 bytes (the 1 KB aligns the swizzled atoms),
// + 128·64·2 at D = 64 for K's second copy (147 KB at D = 128, 90 KB at D = 64).

#include "wgmma_primitives.cuh"

__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// Adds two adjacent fp32 values to global memory (8-byte aligned) in one reduction (sm_90): half the requests of
// two scalar atomics, which made dQ's additions the backward's bottleneck (lab v10: 1.2–1.3×).
__device__ __forceinline__ void red_add_v2(float *address, float x, float y) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(address), "f"(x), "f"(y) : "memory");
}

// 4 bytes global → shared (L1-cached); `valid == false` writes zeros.
__device__ __forceinline__ void cp_async4(void *destination, const void *source, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;"
                 :: "r"(shared_address(destination)), "l"(source), "r"(valid ? 4 : 0));
}

template <int D>
__device__ void backward_wgmma(const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout, const float *lse,
                               const float *delta, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                               const int4 *query_bounds, const int4 *key_bounds, float *dq, float *dk, float *dv,
                               int Sq, int Sk, int H, int Hkv, float scale, int kind, int window) {
    constexpr int BN = 128, BM = 64, THREADS = 256, CHUNKS = D / 8, CLASS_CACHE = 1024, DQ_N = D / 2;
    constexpr int TILE_KV = BN * D * 2, TILE_Q = BM * D * 2;
    constexpr bool K_COPY = D == 64;  // K in the core layout too, for dQ
    extern __shared__ __align__(128) unsigned char shared_bytes[];
    unsigned char *sK = align_1024(shared_bytes);
    unsigned char *sV = sK + TILE_KV;
    unsigned char *sQ_stages = sV + TILE_KV, *sdO_stages = sQ_stages + 2 * TILE_Q;  // two stages each
    unsigned char *sdS = sdO_stages + 2 * TILE_Q;      // dSᵀ [key][query], core layout of BM columns
    float *sL_stages = (float *)(sdS + BN * BM * 2);  // LSE (natural log) of the query tile, two stages (0 past the end)
    float *sD_stages = sL_stages + 2 * BM;            // δ of the query tile, two stages
    unsigned char *sK_core = (unsigned char *)(sD_stages + 2 * BM);  // K_COPY: K in the core layout
    __shared__ unsigned char tile_classes[CLASS_CACHE];  // classes of query tiles first, first + 1, …
    __shared__ int tile_range[2];

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int kvh = blockIdx.y, b = blockIdx.z, group = H / Hkv;
    const int key_tile = gridDim.x - 1 - blockIdx.x;  // under causal masks the first keys see the most queries
    const int key0 = key_tile * BN, query_tiles = (Sq + BM - 1) / BM;
    const size_t q_stride = (size_t)H * D, kv_stride = (size_t)Hkv * D;
    const float scale2 = scale * LOG2E;
    const int4 kb = key_bounds[key_tile];

    // Layouts. Chunk idx of a ROWS-row tile's copy → (row, 16-byte chunk): eight threads fill one 128-byte row of
    // a swizzled panel; where that chunk sits; K-major descriptors of 16 columns kk of the 64 rows from `row`;
    // O += A·(tile read transposed) over 16 rows kk into N = D columns, one m64n64 product per panel.
    auto chunk_of = [&](int idx, int rows) { return make_int2((idx >> 3) % rows, (idx & 7) + ((idx >> 3) / rows) * 8); };
    auto chunk_at = [&](int rows, int r, int c) -> unsigned {
        return rows == BN ? swizzled_chunk<BN>(r, c) : swizzled_chunk<BM>(r, c);
    };
    auto k_major = [&](const unsigned char *tile, int rows, int row, int kk) {
        return rows == BN ? swizzled_k_major<BN>(tile, row, kk) : swizzled_k_major<BM>(tile, row, kk);
    };
    auto add_transposed = [&](float (&acc)[D / 2], const u32 (&a)[4], const unsigned char *tile, int kk) {
#pragma unroll
        for (int panel = 0; panel < D / 64; panel++)
            wgmma_rs<64>(*reinterpret_cast<float (*)[32]>(acc + 32 * panel), a,
                         swizzled_descriptor(tile + panel * BM * 128 + kk * 2048, 16, 1024));
    };

    // K and V tiles → shared memory; meanwhile find the range of query tiles this key tile meets.
    const bf16_t *k_base = k + ((size_t)b * Sk * Hkv + kvh) * D, *v_base = v + ((size_t)b * Sk * Hkv + kvh) * D;
    for (int idx = tid; idx < BN * CHUNKS; idx += THREADS) {
        const int2 rc = chunk_of(idx, BN);
        const int j = key0 + rc.x;
        const size_t offset = (size_t)min(j, Sk - 1) * kv_stride + rc.y * 8;
        cp_async16(sK + chunk_at(BN, rc.x, rc.y), k_base + offset, j < Sk);
        cp_async16(sV + chunk_at(BN, rc.x, rc.y), v_base + offset, j < Sk);
        if constexpr (K_COPY) cp_async16(sK_core + core_chunk<D>(rc.x, rc.y), k_base + offset, j < Sk);
    }
    cp_async_commit();
    const int2 range = shown_tile_range<THREADS>(
        query_tiles, [&](int i) { return classify(query_bounds[i], kb, false, kind, window) != HIDDEN; }, tile_range);

    // This thread's two key rows: warpgroup wg, warp `warp` within it, lane rows g and g + 8.
    int krow[2], kp[2], kd[2];
#pragma unroll
    for (int s = 0; s < 2; s++) {
        krow[s] = key0 + wg * 64 + warp * 16 + g + 8 * s;
        kp[s] = krow[s] < Sk ? kpos[krow[s]] : 0;
        kd[s] = krow[s] < Sk ? kdoc[krow[s]] : -1;
    }
    float dK[D / 2], dV[D / 2];  // [4c + e]: key row g + 8·(e / 2), column 8c + 2t + e % 2
#pragma unroll
    for (int i = 0; i < D / 2; i++) dK[i] = dV[i] = 0.f;
    cp_async_wait_all();
    __syncthreads();
    const int first = range.x, last = range.y;
    const bool ragged_keys = key0 + BN > Sk;
    auto classify_tile = [&](int qt) {
        return classify(query_bounds[qt], kb, ragged_keys || qt * BM + BM > Sq, kind, window);
    };
    for (int i = tid; i < min(last - first + 1, CLASS_CACHE); i += THREADS) tile_classes[i] = classify_tile(first + i);
    __syncthreads();
    auto class_of = [&](int qt) -> int { return qt - first < CLASS_CACHE ? tile_classes[qt - first] : classify_tile(qt); };

    auto visible_from = [&](int head, int qt) -> int2 {  // the first visible pair at or after (head, qt)
        for (; head < (kvh + 1) * group; head++, qt = first)
            for (; qt <= last; qt++)
                if (class_of(qt) != HIDDEN) return make_int2(head, qt);
        return make_int2(-1, 0);
    };
    auto load_stage = [&](int2 pair, int stage) {
        const bf16_t *q_base = q + ((size_t)b * Sq * H + pair.x) * D, *do_base = dout + ((size_t)b * Sq * H + pair.x) * D;
        const size_t row_base = ((size_t)b * H + pair.x) * Sq;
        for (int idx = tid; idx < BM * CHUNKS; idx += THREADS) {
            const int2 rc = chunk_of(idx, BM);
            const int i = pair.y * BM + rc.x;
            const size_t offset = (size_t)min(i, Sq - 1) * q_stride + rc.y * 8;
            cp_async16(sQ_stages + stage * TILE_Q + chunk_at(BM, rc.x, rc.y), q_base + offset, i < Sq);
            cp_async16(sdO_stages + stage * TILE_Q + chunk_at(BM, rc.x, rc.y), do_base + offset, i < Sq);
        }
        for (int r = tid; r < BM; r += THREADS) {
            const int i = min(pair.y * BM + r, Sq - 1);
            cp_async4(sL_stages + stage * BM + r, lse + row_base + i, pair.y * BM + r < Sq);
            cp_async4(sD_stages + stage * BM + r, delta + row_base + i, pair.y * BM + r < Sq);
        }
        cp_async_commit();
    };

    int2 current = visible_from(kvh * group, first);
    int stage = 0;
    if (current.x >= 0) load_stage(current, 0);
    while (current.x >= 0) {
        const int2 next = visible_from(current.x, current.y + 1);  // past `last` the walk moves to the next head
        if (next.x >= 0) load_stage(next, stage ^ 1);
        const int head = current.x, q0 = current.y * BM, tile_class = class_of(current.y);
        // Rows past the end hold zeros (LSE 0): their P is not 0, but they sit only in partial tiles, whose mask
        // pass zeros them.
        const unsigned char *sQ = sQ_stages + stage * TILE_Q, *sdO = sdO_stages + stage * TILE_Q;
        const float *sL = sL_stages + stage * BM, *sD = sD_stages + stage * BM;
        if (next.x >= 0) cp_async_wait_one(); else cp_async_wait_all();
        fence_async_shared();
        __syncthreads();

        // Sᵀ and dPᵀ for this warpgroup's 64 keys × 64 queries; [4c + e]: key row g + 8·(e / 2), query 8c + 2t + e % 2.
        float s[BM / 2], dp[BM / 2];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<BM>(s, k_major(sK, BN, wg * 64, kk), k_major(sQ, BM, 0, kk), kk > 0);
        wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<BM>(dp, k_major(sV, BN, wg * 64, kk), k_major(sdO, BM, 0, kk), kk > 0);
        wgmma_commit();
        wgmma_wait<1>();  // Sᵀ has landed; dPᵀ may still run
        pin(s);

        // Pᵀ (in s) on every pair, then zeros where a partial tile's mask hides one; packed, and dV += Pᵀ·dO
        // issued (K = the 64 queries; dO read transposed).
#pragma unroll
        for (int i = 0; i < BM / 2; i++)
            s[i] = exp2_approx(fmaf(s[i], scale2, -sL[(i >> 2) * 8 + t * 2 + (i & 1)] * LOG2E));
        if (tile_class == PARTIAL) {
#pragma unroll
            for (int i = 0; i < BM / 2; i++) {
                const int r = (i >> 1) & 1, qi = q0 + (i >> 2) * 8 + t * 2 + (i & 1);
                const bool ok = qi < Sq && krow[r] < Sk && visible(qpos[qi], kp[r], qdoc[qi], kd[r], kind, window);
                s[i] = ok ? s[i] : 0.f;
            }
        }
        u32 pa[BM / 16][4], da[BM / 16][4];
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) accumulator_to_a(pa[kk], s, kk);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) add_transposed(dV, pa[kk], sdO, kk);
        wgmma_commit();
        wgmma_wait<1>();  // dPᵀ has landed; dV may still run
        pin(dp);

        // Scaled dSᵀ (in dp), to shared memory for dQ (pairs of queries are adjacent there) and packed for
        // dK += dSᵀ·Q.
#pragma unroll
        for (int i = 0; i < BM / 2; i++) dp[i] = s[i] * (dp[i] - sD[(i >> 2) * 8 + t * 2 + (i & 1)]) * scale;
#pragma unroll
        for (int c = 0; c < BM / 8; c++)
#pragma unroll
            for (int r = 0; r < 2; r++)
                *(u32 *)(sdS + core_chunk<BM>(wg * 64 + warp * 16 + g + 8 * r, c) + 4 * t) =
                    pack_input(dp[4 * c + 2 * r], dp[4 * c + 2 * r + 1]);
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) accumulator_to_a(da[kk], dp, kk);
        fence_async_shared();  // dSᵀ's stores become visible to the async proxy
        __syncthreads();       // both warpgroups' dSᵀ are written

        // dQ (64 queries × this warpgroup's half of D) = dS·K over the block's 128 keys: dS is dSᵀ read transposed
        // (M = queries, K = keys), K read transposed (K = keys, N = head dimension).
        float dq_acc[DQ_N / 2];  // [4c + e]: query row g + 8·(e / 2), column 8c + 2t + e % 2 of this half
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
            wgmma_ss<DQ_N, 1, 1>(dq_acc, smem_descriptor(sdS + kk * 32 * BM, 16 * BM, 128),
                                 !K_COPY
                                     ? swizzled_descriptor(sK + wg * BN * 128 + kk * 2048, 16, 1024)
                                     : smem_descriptor(sK_core + kk * 32 * D + wg * 8 * D, 16 * D, 128),
                                 kk > 0);
        wgmma_commit();
        // dK += dSᵀ·Q (K = the 64 queries; Q read transposed) runs while dQ is added.
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) add_transposed(dK, da[kk], sQ, kk);
        wgmma_commit();
        wgmma_wait<1>();  // dV and dQ have landed
        pin(dq_acc);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int i = q0 + warp * 16 + g + 8 * r;
            if (i >= Sq) continue;
            float *row = dq + (size_t)(b * Sq + i) * q_stride + head * D + wg * DQ_N + t * 2;
#pragma unroll
            for (int c = 0; c < DQ_N / 8; c++)
                red_add_v2(row + c * 8, dq_acc[4 * c + 2 * r], dq_acc[4 * c + 2 * r + 1]);
        }
        wgmma_wait<0>();
        __syncthreads();  // before the next pair's load overwrites this stage and dSᵀ
        current = next;
        stage ^= 1;
    }
    pin(dK);
    pin(dV);

#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = krow[r];
        if (j >= Sk) continue;
        const size_t offset = ((size_t)(b * Sk + j) * Hkv + kvh) * D + t * 2;
#pragma unroll
        for (int c = 0; c < D / 8; c++) {
            float2 *pk = (float2 *)(dk + offset + c * 8), *pv = (float2 *)(dv + offset + c * 8);
            const float2 ok = *pk, ov = *pv;
            *pk = make_float2(ok.x + dK[4 * c + 2 * r], ok.y + dK[4 * c + 2 * r + 1]);
            *pv = make_float2(ov.x + dV[4 * c + 2 * r], ov.y + dV[4 * c + 2 * r + 1]);
        }
    }
}

// Kernel name: attention_backward_wgmma_d<D>; 256 threads; dynamic shared memory as above.
#define BACKWARD_WGMMA(D)                                                                                       \
    extern "C" __global__ void __launch_bounds__(256) attention_backward_wgmma_d##D(                           \
        const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout, const float *lse,               \
        const float *delta, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,                \
        const int4 *query_bounds, const int4 *key_bounds, float *dq, float *dk, float *dv, int Sq, int Sk,      \
        int H, int Hkv, int dim, float scale, int kind, int window) {                                           \
        backward_wgmma<D>(q, k, v, dout, lse, delta, qpos, kpos, qdoc, kdoc, query_bounds, key_bounds, dq, dk,  \
                          dv, Sq, Sk, H, Hkv, scale, kind, window);                                             \
    }
BACKWARD_WGMMA(64)
BACKWARD_WGMMA(128)
