// Hopper tensor-core backward (sm_90a): all five products on warpgroup MMA (wgmma.mma_async), D ∈ {64, 128}, with
// the per-pair loads on the Tensor Memory Accelerator.
//
// A block owns BN = 128 keys of one key/value head and walks every visible (query head, BM-row query tile) pair of
// its group — or of one query head, when the grid has a row of blocks per query head — BM = 128 at D = 64, 64 at
// D = 128, with three warpgroups of distinct roles. The two consumers (64 keys each) compute, keys as rows:
//     Sᵀ = K_wg·Qᵀ, dPᵀ = V_wg·dOᵀ          both operands from shared-memory descriptors (K-major)
//     Pᵀ = exp(scale·Sᵀ − LSE), dSᵀ = scale · Pᵀ ∘ (dPᵀ − δ)        on the accumulators
//     dV_wg += Pᵀ·dO, dK_wg += dSᵀ·Q         Pᵀ and dSᵀ from registers, dO and Q read transposed (MN-major)
//     dQ[:, half wg] += dS·K                 dSᵀ through shared memory, read transposed as A; K read transposed
// so dK and dV are summed over the block's query heads in registers (added by reductions at the end when other
// blocks hold the group's other heads). Each consumer stages its dQ half of the pair (BM × D/2 fp32, 16 KB) in
// shared memory and adds it with one bulk reduction (cp.reduce.async.bulk, done in L2 by the copy engine) into an
// fp32 dQ laid out by tiles, which attention_dq_from_tiles_d<D> then adds into dQ: the per-thread vector
// reductions this replaced cost ≈ 30 % of the kernel at D = 64 (lab v24: 1.04–1.09×). The
// element-wise work overlaps the products: Sᵀ is waited for alone, so Pᵀ forms while dPᵀ computes, dV += Pᵀ·dO
// runs while dSᵀ forms (at BM = 64; at 128 once it is formed), and dK += dSᵀ·Q while dQ is added.
// The producer (registers given back by setmaxnreg) loads each pair ahead into one of two stages: one warp stores
// LSE and δ of the pair's BM rows, one of its lanes issues the TMA copies of Q and dO (one per 64-column panel),
// all completing on the stage's "full" mbarrier; a consumer releases the stage on its "empty" mbarrier once the
// pair's last product has completed. dSᵀ has two buffers, so the one barrier left per pair is the consumers'
// named barrier between writing dSᵀ and reading it for dQ. K and V load once per block by cp.async from every
// thread before the roles split. Every query tile's class is computed once into shared memory; tiles the mask
// hides are skipped, fully visible ones take no mask work. K, V, Q and dO sit in 128-byte swizzled panels
// (wgmma_primitives.cuh), dSᵀ in the core layout; dQ reads K transposed, each warpgroup D / 2 columns: at D = 128
// a whole panel each, at D = 64 half a panel, which no descriptor can name, so there K is kept a second time in the
// core layout. Lab (H100): swizzling 1.14–1.16× at D = 128 and 1.11–1.12× at D = 64, the producer/consumer
// split 1.12–1.15× more at D = 128 and 1.22–1.23× at D = 64 (lab/kernel-notes.md, backward v9, v13, v14).
//
// Contract: the mma.sync backward's (attention_backward_mma.cu), with BM-row query bounds and 128-row key bounds,
// Q and dO given as tensor maps: 4-D (D, heads, S, B) over the 16-bit inputs, boxes (64, 1, BM, 1), 128-byte
// swizzle, out-of-bounds elements zero — and dQ's place taken by the zeroed tile-laid-out buffer (B·H·⌈S/BM⌉·BM·D
// fp32). 384 threads; dynamic shared memory (2·128 + 4·BM)·D·2 + 2·128·BM·2 + 4·BM·4 + 4·BM·D + 1024 bytes (the
// 1 KB aligns the swizzled atoms), + 128·64·2 at D = 64 for K's second copy (195 KB at D = 128, 211 KB at D = 64).

#include "wgmma_primitives.cuh"
#include "tma_primitives.cuh"

// Adds two adjacent fp32 values to global memory (8-byte aligned) in one reduction (sm_90): half the requests of
// two scalar atomics (lab v10: 1.2–1.3× when dQ was added this way).
__device__ __forceinline__ void red_add_v2(float *address, float x, float y) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(address), "f"(x), "f"(y) : "memory");
}

// dQ laid out by tiles: per (batch b, query head, BM-row query tile, half of D) a contiguous BM × D/2
// fp32 block — one bulk reduction each — whose row `row` holds column j at j ^ 4·(row mod 8): a consumer's 8-byte
// stores of rows g = 0 … 7 then fall on distinct banks (two wavefronts a warp, the least for 256 bytes).
__device__ __forceinline__ int dq_tile_column(int row, int column) { return column ^ (4 * (row & 7)); }

template <int BM, int D>
__device__ __forceinline__ size_t dq_tile_offset(int b, int head, int query_tile, int half, int H, int query_tiles) {
    return (((size_t)b * H + head) * query_tiles + query_tile) * (size_t)(BM * D) + (size_t)half * (BM * D / 2);
}

template <int D, int BM>
__device__ __forceinline__ void backward_wgmma(const TensorMap *map_q, const TensorMap *map_do, const bf16_t *k,
                                               const bf16_t *v, const float *lse, const float *delta, const int *qpos,
                                               const int *kpos, const int *qdoc, const int *kdoc,
                                               const int4 *query_bounds, const int4 *key_bounds, float *dq_tiles,
                                               float *dk, float *dv, int Sq, int Sk, int H, int Hkv, float scale,
                                               int kind, int window) {
    constexpr int BN = 128, THREADS = 384, CHUNKS = D / 8, CLASS_CACHE = 1024, DQ_N = D / 2, MH = BM / 64;
    constexpr int TILE_KV = BN * D * 2, TILE_Q = BM * D * 2, TILE_DS = BN * BM * 2;
    constexpr bool K_COPY = D == 64;  // K in the core layout too, for dQ
    // dV += Pᵀ·dO is issued before dSᵀ forms (and runs meanwhile) at 64 query rows; at 128 after it, as fp32 Pᵀ and
    // dPᵀ, Pᵀ packed for the product, dK and dV (≈ 224 registers) would not fit at once.
    constexpr bool DV_AFTER_DS = BM == 128;
    extern __shared__ __align__(128) unsigned char shared_bytes[];
    unsigned char *sK = align_1024(shared_bytes);
    unsigned char *sV = sK + TILE_KV;
    unsigned char *sQ_stages = sV + TILE_KV, *sdO_stages = sQ_stages + 2 * TILE_Q;  // two stages each
    unsigned char *sdS_buffers = sdO_stages + 2 * TILE_Q;  // dSᵀ [key][query], core layout of BM columns; two
    float *sL_stages = (float *)(sdS_buffers + 2 * TILE_DS);  // LSE (natural log) of the query tile (0 past the end)
    float *sD_stages = sL_stages + 2 * BM;                     // δ of the query tile
    unsigned char *sK_core = (unsigned char *)(sD_stages + 2 * BM);  // K_COPY: K in the core layout
    float *sdQ = (float *)(sK_core + (K_COPY ? BN * D * 2 : 0));      // each consumer's dQ half, staged
    __shared__ __align__(8) u64 full[2], empty[2];
    __shared__ unsigned char tile_classes[CLASS_CACHE];  // classes of query tiles first, first + 1, …
    __shared__ int tile_range[2];

    // Warpgroup 0 produces; warpgroups 1 and 2 compute 64 keys each (`wg` 0 and 1).
    const int tid = threadIdx.x, role = tid >> 7, wg = role - 1, warp = (tid >> 5) & 3, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    // Grid y: key/value heads — a block walks every query head of its group, dK and dV summed in registers — or,
    // when the launch has one row of blocks per query head, that head alone, dK and dV added by reductions (the
    // blocks running at once then share one head's Q, dO and dQ in L2 instead of a group's).
    const int group = H / Hkv, b = blockIdx.z;
    const bool one_head = gridDim.y != Hkv;
    const int kvh = one_head ? blockIdx.y / group : blockIdx.y;
    const int head_first = one_head ? blockIdx.y : kvh * group;
    const int head_end = one_head ? head_first + 1 : head_first + group;
    const int key_tile = gridDim.x - 1 - blockIdx.x;  // under causal masks the first keys see the most queries
    const int key0 = key_tile * BN, query_tiles = (Sq + BM - 1) / BM;
    const size_t kv_stride = (size_t)Hkv * D;
    const float scale2 = scale * LOG2E;
    const int4 kb = key_bounds[key_tile];

    if (tid == 0) {  // visible to every thread after shown_tile_range's first barrier
        for (int s = 0; s < 2; s++) {
            mbar_init(&full[s], 32);  // the producer warp's lanes (lane 0's arrival announces the TMA bytes)
            mbar_init(&empty[s], 8);  // a lane of each consumer warp
        }
        mbar_fence_init();
    }
    // Layouts as the mainline's: K, V, Q, dO in 128-byte swizzled panels; K-major descriptors of 16 columns kk of
    // the 64 rows from `row`; O += A·(tile read transposed) over 16 rows kk, one m64n64 product per panel.
    auto k_major = [&](const unsigned char *tile, int rows, int row, int kk) {
        return rows == BN ? swizzled_k_major<BN>(tile, row, kk) : swizzled_k_major<BM>(tile, row, kk);
    };
    auto add_transposed = [&](float (&acc)[D / 2], const u32 (&a)[4], const unsigned char *tile, int kk) {
#pragma unroll
        for (int panel = 0; panel < D / 64; panel++)
            wgmma_rs<64>(*reinterpret_cast<float (*)[32]>(acc + 32 * panel), a,
                         swizzled_descriptor(tile + panel * BM * 128 + kk * 2048, 16, 1024));
    };

    // K and V tiles → shared memory by every thread; meanwhile the range of query tiles this key tile meets.
    const bf16_t *k_base = k + ((size_t)b * Sk * Hkv + kvh) * D, *v_base = v + ((size_t)b * Sk * Hkv + kvh) * D;
    for (int idx = tid; idx < BN * CHUNKS; idx += THREADS) {
        const int r = (idx >> 3) % BN, c = (idx & 7) + ((idx >> 3) / BN) * 8, j = key0 + r;
        const size_t offset = (size_t)min(j, Sk - 1) * kv_stride + c * 8;
        cp_async16(sK + swizzled_chunk<BN>(r, c), k_base + offset, j < Sk);
        cp_async16(sV + swizzled_chunk<BN>(r, c), v_base + offset, j < Sk);
        if constexpr (K_COPY) cp_async16(sK_core + core_chunk<D>(r, c), k_base + offset, j < Sk);
    }
    cp_async_commit();
    const int2 range = shown_tile_range<THREADS>(
        query_tiles, [&](int i) { return classify(query_bounds[i], kb, false, kind, window) != HIDDEN; }, tile_range);
    const int first = range.x, last = range.y;
    const bool ragged_keys = key0 + BN > Sk;
    auto classify_tile = [&](int qt) {
        return classify(query_bounds[qt], kb, ragged_keys || qt * BM + BM > Sq, kind, window);
    };
    for (int i = tid; i < min(last - first + 1, CLASS_CACHE); i += THREADS) tile_classes[i] = classify_tile(first + i);
    cp_async_wait_all();
    fence_async_shared();  // K and V (cp.async) become visible to the products (async proxy)
    __syncthreads();       // the last block-wide barrier
    auto class_of = [&](int qt) -> int {
        return qt - first < CLASS_CACHE ? tile_classes[qt - first] : classify_tile(qt);
    };
    auto visible_from = [&](int head, int qt) -> int2 {  // the first visible pair at or after (head, qt)
        for (; head < head_end; head++, qt = first)
            for (; qt <= last; qt++)
                if (class_of(qt) != HIDDEN) return make_int2(head, qt);
        return make_int2(-1, 0);
    };

    if (role == 0) {
        setmaxnreg_dec<24>();  // by all four warps of the warpgroup, as setmaxnreg requires
        if (warp != 0) return;
        // The n-th visible pair into stage n % 2 once its (n − 2)-th use is released: LSE and δ by the warp's
        // lanes, Q and dO by TMA from lane 0.
        int2 pair = visible_from(head_first, first);
        for (int n = 0; pair.x >= 0; n++, pair = visible_from(pair.x, pair.y + 1)) {
            const int stage = n & 1;
            if (n >= 2) mbar_wait(&empty[stage], ((n >> 1) & 1) ^ 1);  // parity of the release of use n / 2 − 1
            const size_t row_base = ((size_t)b * H + pair.x) * Sq;
            for (int r = lane; r < BM; r += 32) {
                const int i = pair.y * BM + r;
                sL_stages[stage * BM + r] = i < Sq ? lse[row_base + i] : 0.f;
                sD_stages[stage * BM + r] = i < Sq ? delta[row_base + i] : 0.f;
            }
            if (lane == 0) {
                mbar_expect(&full[stage], 2 * TILE_Q);
                for (int panel = 0; panel < D / 64; panel++) {
                    tma_load_4d(sQ_stages + stage * TILE_Q + panel * BM * 128, map_q, panel * 64, pair.x, pair.y * BM,
                                b, &full[stage]);
                    tma_load_4d(sdO_stages + stage * TILE_Q + panel * BM * 128, map_do, panel * 64, pair.x,
                                pair.y * BM, b, &full[stage]);
                }
            } else {
                mbar_arrive(&full[stage]);
            }
        }
        return;
    }
    setmaxnreg_inc<240>();

    // This thread's two key rows: consumer warpgroup wg, warp `warp` within it, lane rows g and g + 8.
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

    int2 current = visible_from(head_first, first);
    for (int n = 0; current.x >= 0; n++) {
        const int2 next = visible_from(current.x, current.y + 1);  // past `last` the walk moves to the next head
        const int stage = n & 1, head = current.x, q0 = current.y * BM, tile_class = class_of(current.y);
        // Rows past the end hold zeros (LSE 0): their P is not 0, but they sit only in partial tiles, whose mask
        // pass zeros them.
        const unsigned char *sQ = sQ_stages + stage * TILE_Q, *sdO = sdO_stages + stage * TILE_Q;
        const float *sL = sL_stages + stage * BM, *sD = sD_stages + stage * BM;
        unsigned char *sdS = sdS_buffers + stage * TILE_DS;  // this pair's; the other may still feed the last dQ
        mbar_wait(&full[stage], (n >> 1) & 1);

        // Sᵀ and dPᵀ for this warpgroup's 64 keys × BM queries; [4c + e]: key row g + 8·(e / 2), query 8c + 2t + e % 2.
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

        // Pᵀ (in s) on every pair, then zeros where a partial tile's mask hides one; packed, and dV += Pᵀ·dO
        // issued (K = the BM queries; dO read transposed) here or once dSᵀ is formed.
        wgmma_wait<1>();  // Sᵀ has landed; dPᵀ may still run
        pin(s);
#pragma unroll
        for (int i = 0; i < BM / 2; i++) s[i] = exp2_approx(fmaf(s[i], scale2, -sL[(i >> 2) * 8 + t * 2 + (i & 1)] * LOG2E));
        if (tile_class == PARTIAL) {
            // Which of this thread's scores the mask shows, bit 4c + 2r + e, in a loop kept rolled (each query's
            // position and document read once, few registers: the products' accumulators keep theirs).
            u64 shown = 0;
#pragma unroll 1
            for (int c = 0; c < BM / 8; c++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int qi = q0 + c * 8 + t * 2 + e;
                    const bool inside = qi < Sq;
                    const int qp = inside ? qpos[qi] : 0, qd = inside ? qdoc[qi] : 0;
#pragma unroll
                    for (int r = 0; r < 2; r++)
                        if (inside && krow[r] < Sk && visible(qp, kp[r], qd, kd[r], kind, window))
                            shown |= 1ull << (4 * c + 2 * r + e);
                }
#pragma unroll
            for (int i = 0; i < BM / 2; i++) s[i] = (shown >> i) & 1 ? s[i] : 0.f;
        }
        u32 pa[BM / 16][4], da[BM / 16][4];
        auto issue_dv = [&] {  // Pᵀ packed (pa), then dV += Pᵀ·dO issued and committed
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++) accumulator_to_a(pa[kk], s, kk);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++) add_transposed(dV, pa[kk], sdO, kk);
            wgmma_commit();
        };
        if constexpr (!DV_AFTER_DS) {
            issue_dv();
            wgmma_wait<1>();  // dPᵀ has landed; dV may still run
        } else {
            wgmma_wait<0>();  // dPᵀ has landed
        }
        pin(dp);

        // Scaled dSᵀ (in dp), to shared memory for dQ (pairs of queries are adjacent there) and packed for
        // dK += dSᵀ·Q.
#pragma unroll
        for (int i = 0; i < BM / 2; i++) dp[i] = s[i] * (dp[i] - sD[(i >> 2) * 8 + t * 2 + (i & 1)]) * scale;
        if constexpr (DV_AFTER_DS) issue_dv();
#pragma unroll
        for (int c = 0; c < BM / 8; c++)
#pragma unroll
            for (int r = 0; r < 2; r++)
                *(u32 *)(sdS + core_chunk<BM>(wg * 64 + warp * 16 + g + 8 * r, c) + 4 * t) =
                    pack_input(dp[4 * c + 2 * r], dp[4 * c + 2 * r + 1]);
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) accumulator_to_a(da[kk], dp, kk);
        fence_async_shared();  // dSᵀ's stores become visible to the async proxy
        // The previous pair's bulk reduction has read this consumer's staged dQ, which the barrier then tells every
        // thread of it (long done by now: a pair's products lie between).
        if (warp == 0 && lane == 0) bulk_wait_read();
        asm volatile("bar.sync 1, 256;" ::: "memory");  // both consumers' dSᵀ are written (named barrier 1)

        // dQ (BM queries × this warpgroup's half of D) = dS·K over the block's 128 keys: dS is dSᵀ read transposed
        // (M = queries, K = keys), K read transposed (K = keys, N = head dimension).
        float dq_acc[MH][DQ_N / 2];  // [h][4c + e]: query row 64h + g + 8·(e / 2), column 8c + 2t + e % 2 of this half
        wgmma_fence();
#pragma unroll
        for (int h = 0; h < MH; h++)
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++)
                wgmma_ss<DQ_N, 1, 1>(dq_acc[h], smem_descriptor(sdS + kk * 32 * BM + h * 1024, 16 * BM, 128),
                                     !K_COPY
                                         ? swizzled_descriptor(sK + wg * BN * 128 + kk * 2048, 16, 1024)
                                         : smem_descriptor(sK_core + kk * 32 * D + wg * 8 * D, 16 * D, 128),
                                     kk > 0);
        wgmma_commit();
        // dK += dSᵀ·Q (K = the BM queries; Q read transposed) runs while dQ is added.
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) add_transposed(dK, da[kk], sQ, kk);
        wgmma_commit();
        wgmma_wait<1>();  // dV and dQ have landed
#pragma unroll
        for (int h = 0; h < MH; h++) {
            pin(dq_acc[h]);
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int row = h * 64 + warp * 16 + g + 8 * r;
                float *staged = sdQ + wg * BM * DQ_N + row * DQ_N;
#pragma unroll
                for (int c = 0; c < DQ_N / 8; c++)
                    *(float2 *)(staged + dq_tile_column(row, c * 8 + t * 2)) =
                        make_float2(dq_acc[h][4 * c + 2 * r], dq_acc[h][4 * c + 2 * r + 1]);
            }
        }
        fence_async_shared();  // the staged dQ becomes visible to the bulk copy (async proxy)
        asm volatile("bar.sync %0, 128;" :: "r"(2 + wg) : "memory");  // this consumer's whole half is staged
        if (warp == 0 && lane == 0) {
            bulk_reduce_add_f32(dq_tiles + dq_tile_offset<BM, D>(b, head, current.y, wg, H, query_tiles),
                                sdQ + wg * BM * DQ_N, BM * DQ_N * 4);
            bulk_commit();
        }
        wgmma_wait<0>();
        if (lane == 0) mbar_arrive(&empty[stage]);  // this pair's Q, dO, LSE and δ are read
        current = next;
    }
    pin(dK);
    pin(dV);
    if (warp == 0 && lane == 0) bulk_wait();  // the last bulk reduction has landed (and read its source)

#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = krow[r];
        if (j >= Sk) continue;
        const size_t offset = ((size_t)(b * Sk + j) * Hkv + kvh) * D + t * 2;
#pragma unroll
        for (int c = 0; c < D / 8; c++) {
            float *pk = dk + offset + c * 8, *pv = dv + offset + c * 8;
            if (one_head && group > 1) {  // other blocks add the group's other heads
                red_add_v2(pk, dK[4 * c + 2 * r], dK[4 * c + 2 * r + 1]);
                red_add_v2(pv, dV[4 * c + 2 * r], dV[4 * c + 2 * r + 1]);
            } else {
                const float2 ok = *(float2 *)pk, ov = *(float2 *)pv;
                *(float2 *)pk = make_float2(ok.x + dK[4 * c + 2 * r], ok.y + dK[4 * c + 2 * r + 1]);
                *(float2 *)pv = make_float2(ov.x + dV[4 * c + 2 * r], ov.y + dV[4 * c + 2 * r + 1]);
            }
        }
    }
}

// dq [B, S, H, D] += the backward's tile-laid-out dQ (dq_tile_offset), or = with !ADD (dq unfilled before); four
// columns a thread. B·S·H < 2³¹, so the index arithmetic past the quads' count stays 32-bit.
template <int BM, int D, bool ADD = true>
__device__ void dq_from_tiles(const float *tiles, float *dq, int S, int H, int B) {
    const int query_tiles = (S + BM - 1) / BM;
    const size_t quads = (size_t)B * S * H * D / 4;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < quads; q += (size_t)gridDim.x * blockDim.x) {
        const unsigned d = (unsigned)(q % (D / 4)) * 4, token_head = (unsigned)(q / (D / 4));
        const unsigned head = token_head % H, token = token_head / H, i = token % S, b = token / S;
        const int row = i % BM, half = d / (D / 2);
        const float4 add = *(const float4 *)(tiles + dq_tile_offset<BM, D>(b, head, i / BM, half, H, query_tiles)
                                             + row * (D / 2) + dq_tile_column(row, d % (D / 2)));
        float4 *out = (float4 *)(dq + q * 4);
        if (!ADD) {
            *out = add;
            continue;
        }
        const float4 old = *out;
        *out = make_float4(old.x + add.x, old.y + add.y, old.z + add.z, old.w + add.w);
    }
}

// Two fp32 values rounded to bf16 (nearest even) and packed, the first in the low half: always bf16, whatever the
// module's input type — the product is a training step's GEMM operand.
__device__ __forceinline__ unsigned bf16x2(float low, float high) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(high), "f"(low));
    return r;
}

// The training step's fusion of the dQ conversion with RoPE's backward: dQ from the backward's tiles, each pair
// (d, d + D/2) — one column of the tile's two halves — turned back by its query row's angle (cos, sin [S, D/2]),
// rounded to bf16 into columns out_column + head·D … of row b·S + i of `out` (rows out_stride apart): no fp32 dQ
// is written or read again. The arithmetic is rope_backward's (training_ops.cu). Four pairs a thread.
template <int BM, int D>
__device__ void dq_rotated_from_tiles(const float *tiles, unsigned short *out, const float *cosines,
                                      const float *sines, int S, int H, int B, int out_stride, int out_column) {
    const int query_tiles = (S + BM - 1) / BM;
    const size_t quads = (size_t)B * S * H * D / 8;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < quads; q += (size_t)gridDim.x * blockDim.x) {
        const unsigned d = (unsigned)(q % (D / 8)) * 4, token_head = (unsigned)(q / (D / 8));
        const unsigned head = token_head % H, token = token_head / H, i = token % S, b = token / S;
        const int row = i % BM;
        const float *low = tiles + dq_tile_offset<BM, D>(b, head, i / BM, 0, H, query_tiles) + row * (D / 2)
                           + dq_tile_column(row, d);
        const float4 x = *(const float4 *)low, y = *(const float4 *)(low + BM * D / 2);  // columns d, d + D/2
        const float4 c = *(const float4 *)(cosines + (size_t)i * (D / 2) + d);
        const float4 s = *(const float4 *)(sines + (size_t)i * (D / 2) + d);
        const float4 sd = make_float4(-1.f * s.x, -1.f * s.y, -1.f * s.z, -1.f * s.w);
        unsigned short *to = out + (size_t)token * out_stride + out_column + head * D + d;
        *(uint2 *)to = make_uint2(bf16x2(x.x * c.x - y.x * sd.x, x.y * c.y - y.y * sd.y),
                                  bf16x2(x.z * c.z - y.z * sd.z, x.w * c.w - y.w * sd.w));
        *(uint2 *)(to + D / 2) = make_uint2(bf16x2(y.x * c.x + x.x * sd.x, y.y * c.y + x.y * sd.y),
                                            bf16x2(y.z * c.z + x.z * sd.z, y.w * c.w + x.w * sd.w));
    }
}

// Kernel name: attention_backward_wgmma_d<D> (query tiles of 128 rows at D = 64, 64 at D = 128); arguments as
// attention_backward_mma_* with Q and dO as tensor maps.
#define BACKWARD_WGMMA(D, QUERY_TILE)                                                                          \
    extern "C" __global__ void __launch_bounds__(384, 1) attention_backward_wgmma_d##D(                        \
        const __grid_constant__ TensorMap map_q, const bf16_t *k, const bf16_t *v,                             \
        const __grid_constant__ TensorMap map_do, const float *lse, const float *delta, const int *qpos,       \
        const int *kpos, const int *qdoc, const int *kdoc, const int4 *query_bounds, const int4 *key_bounds,   \
        float *dq_tiles, float *dk, float *dv, int Sq, int Sk, int H, int Hkv, int dim, float scale, int kind, \
        int window) {                                                                                          \
        backward_wgmma<D, QUERY_TILE>(&map_q, &map_do, k, v, lse, delta, qpos, kpos, qdoc, kdoc, query_bounds, \
                                      key_bounds, dq_tiles, dk, dv, Sq, Sk, H, Hkv, scale, kind, window);      \
    }                                                                                                          \
    extern "C" __global__ void attention_dq_from_tiles_d##D(const float *tiles, float *dq, int S, int H, int B) { \
        dq_from_tiles<QUERY_TILE, D>(tiles, dq, S, H, B);                                                      \
    }                                                                                                          \
    extern "C" __global__ void attention_dq_set_from_tiles_d##D(const float *tiles, float *dq, int S, int H,   \
                                                                int B) {                                       \
        dq_from_tiles<QUERY_TILE, D, false>(tiles, dq, S, H, B);                                               \
    }                                                                                                          \
    extern "C" __global__ void attention_dq_rotated_from_tiles_d##D(                                           \
        const float *tiles, unsigned short *out, const float *cosines, const float *sines, int S, int H, int B, \
        int out_stride, int out_column) {                                                                      \
        dq_rotated_from_tiles<QUERY_TILE, D>(tiles, out, cosines, sines, S, H, B, out_stride, out_column);     \
    }
BACKWARD_WGMMA(64, 128)
BACKWARD_WGMMA(128, 64)

