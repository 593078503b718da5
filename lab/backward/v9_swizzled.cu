// Candidate backward (lab): v7 on 128-byte swizzled tiles, D = 128 (the forward's v9 asks the same question).
// K, V, Q and dO sit in panels of 64 columns (128-byte rows, 8-row atoms of 1024 bytes, chunk c of row r at
// c ^ r); dSᵀ stays in the unswizzled core layout (its transposed-A reading is the one probed). Products:
//     Sᵀ, dPᵀ   A = K, V rows of the warpgroup (K-major, 32 bytes a k16 step along a panel), B = Q, dO (K-major)
//     dV, dK    B = dO, Q read transposed: one m64n64 product per 64-column panel, 2048 bytes a 16-query step
//     dQ        B = K read transposed: the warpgroup's half of D is exactly one panel, 2048 bytes a 16-key step
// `T_LBO`/`T_SBO` pick the transposed reading (probe 5); the `_alt` kernel swaps them. The dynamic shared-memory
// base is rounded up to 1024 bytes (1 KB requested beyond the tiles).
// Predicted: 1.1–1.3× v7 if unswizzled reads starve the tensor cores (forward v9 and probe 5 tell first).
// Expects the kernels' wgmma_primitives.cuh already included.

// Descriptor of a 128-byte swizzled tile (mode 1 in bits 62–63; atoms 1024-byte aligned).
__device__ __forceinline__ u64 swizzled_descriptor(const void *tile, unsigned lbo, unsigned sbo) {
    return smem_descriptor(tile, lbo, sbo) | (1ull << 62);
}

// Byte offset of 16-byte chunk c (of D / 8) of row r in a tile of ROWS rows stored as 128-byte swizzled panels.
template <int ROWS>
__device__ __forceinline__ unsigned swizzled_chunk(int r, int c) {
    return (c >> 3) * ROWS * 128 + (r >> 3) * 1024 + (r & 7) * 128 + (((c & 7) ^ (r & 7)) << 4);
}

__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// 4 bytes global → shared (L1-cached); `valid == false` writes zeros.
__device__ __forceinline__ void cp_async4(void *destination, const void *source, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;"
                 :: "r"(shared_address(destination)), "l"(source), "r"(valid ? 4 : 0));
}

template <int D, unsigned T_LBO, unsigned T_SBO>
__device__ void backward_swizzled(const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout, const float *lse,
                               const float *delta, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                               const int4 *query_bounds, const int4 *key_bounds, float *dq, float *dk, float *dv,
                               int Sq, int Sk, int H, int Hkv, float scale, int kind, int window) {
    constexpr int BN = 128, BM = 64, THREADS = 256, CHUNKS = D / 8, CLASS_CACHE = 1024, DQ_N = D / 2;
    constexpr int TILE_KV = BN * D * 2, TILE_Q = BM * D * 2;
    extern __shared__ __align__(128) unsigned char shared_bytes[];
    unsigned char *sK = shared_bytes + ((1024 - (shared_address(shared_bytes) & 1023)) & 1023);  // atoms aligned
    unsigned char *sV = sK + TILE_KV;
    unsigned char *sQ_stages = sV + TILE_KV, *sdO_stages = sQ_stages + 2 * TILE_Q;  // two stages each
    unsigned char *sdS = sdO_stages + 2 * TILE_Q;      // dSᵀ [key][query], core layout of BM columns
    float *sL_stages = (float *)(sdS + BN * BM * 2);  // LSE (natural log) of the query tile, two stages (0 past the end)
    float *sD_stages = sL_stages + 2 * BM;            // δ of the query tile, two stages
    __shared__ unsigned char tile_classes[CLASS_CACHE];  // classes of query tiles first, first + 1, …
    __shared__ int tile_range[2];

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int kvh = blockIdx.y, b = blockIdx.z, group = H / Hkv;
    const int key_tile = gridDim.x - 1 - blockIdx.x;  // under causal masks the first keys see the most queries
    const int key0 = key_tile * BN, query_tiles = (Sq + BM - 1) / BM;
    const size_t q_stride = (size_t)H * D, kv_stride = (size_t)Hkv * D;
    const float scale2 = scale * LOG2E;
    const int4 kb = key_bounds[key_tile];

    // K and V tiles → shared memory; meanwhile find the range of query tiles this key tile meets.
    const bf16_t *k_base = k + ((size_t)b * Sk * Hkv + kvh) * D, *v_base = v + ((size_t)b * Sk * Hkv + kvh) * D;
    for (int idx = tid; idx < BN * CHUNKS; idx += THREADS) {  // eight threads fill one 128-byte row of a panel
        const int c = (idx & 7) + ((idx >> 3) / BN) * 8, r = (idx >> 3) % BN, j = key0 + r;
        const size_t offset = (size_t)min(j, Sk - 1) * kv_stride + c * 8;
        cp_async16(sK + swizzled_chunk<BN>(r, c), k_base + offset, j < Sk);
        cp_async16(sV + swizzled_chunk<BN>(r, c), v_base + offset, j < Sk);
    }
    cp_async_commit();
    if (tid == 0) {
        tile_range[0] = query_tiles;
        tile_range[1] = -1;
    }
    __syncthreads();
    for (int i = tid; i < query_tiles; i += THREADS)
        if (classify(query_bounds[i], kb, false, kind, window) != HIDDEN) {
            atomicMin(&tile_range[0], i);
            atomicMax(&tile_range[1], i);
        }

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
    const int first = tile_range[0], last = tile_range[1];
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
            const int c = (idx & 7) + ((idx >> 3) / BM) * 8, r = (idx >> 3) % BM, i = pair.y * BM + r;
            const size_t offset = (size_t)min(i, Sq - 1) * q_stride + c * 8;
            cp_async16(sQ_stages + stage * TILE_Q + swizzled_chunk<BM>(r, c), q_base + offset, i < Sq);
            cp_async16(sdO_stages + stage * TILE_Q + swizzled_chunk<BM>(r, c), do_base + offset, i < Sq);
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
            wgmma_ss<BM>(s, swizzled_descriptor(sK + (kk >> 2) * BN * 128 + wg * 8 * 1024 + (kk & 3) * 32, 16, 1024),
                         swizzled_descriptor(sQ + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
        wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<BM>(dp, swizzled_descriptor(sV + (kk >> 2) * BN * 128 + wg * 8 * 1024 + (kk & 3) * 32, 16, 1024),
                         swizzled_descriptor(sdO + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
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
        for (int kk = 0; kk < BM / 16; kk++)
#pragma unroll
            for (int panel = 0; panel < D / 64; panel++)
                wgmma_rs<64>(*reinterpret_cast<float (*)[32]>(dV + 32 * panel), pa[kk],
                             swizzled_descriptor(sdO + panel * BM * 128 + kk * 2048, T_LBO, T_SBO));
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
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++)
#pragma unroll
            for (int panel = 0; panel < D / 64; panel++)
                wgmma_rs<64>(*reinterpret_cast<float (*)[32]>(dK + 32 * panel), da[kk],
                             swizzled_descriptor(sQ + panel * BM * 128 + kk * 2048, T_LBO, T_SBO));
        wgmma_commit();
        fence_async_shared();  // dSᵀ's stores become visible to the async proxy
        __syncthreads();       // both warpgroups' dSᵀ are written

        // dQ (64 queries × this warpgroup's half of D) = dS·K over the block's 128 keys: dS is dSᵀ read transposed
        // (M = queries, K = keys), K read transposed (K = keys, N = head dimension).
        float dq_acc[DQ_N / 2];  // [4c + e]: query row g + 8·(e / 2), column 8c + 2t + e % 2 of this half
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
            wgmma_ss<DQ_N, 1, 1>(dq_acc, smem_descriptor(sdS + kk * 32 * BM, 16 * BM, 128),
                                 swizzled_descriptor(sK + wg * BN * 128 + kk * 2048, T_LBO, T_SBO), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        pin(dq_acc);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int i = q0 + warp * 16 + g + 8 * r;
            if (i >= Sq) continue;
            float *row = dq + (size_t)(b * Sq + i) * q_stride + head * D + wg * DQ_N + t * 2;
#pragma unroll
            for (int c = 0; c < DQ_N / 8; c++) {
                atomicAdd(row + c * 8, dq_acc[4 * c + 2 * r]);
                atomicAdd(row + c * 8 + 1, dq_acc[4 * c + 2 * r + 1]);
            }
        }
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

// Kernel name: lab_backward_v9_d128[_alt]; 256 threads; dynamic shared memory the mainline wgmma backward's + 1024.
#define BACKWARD_V9(T_LBO, T_SBO, SUFFIX)                                                                       \
    extern "C" __global__ void __launch_bounds__(256) lab_backward_v9_d128##SUFFIX(                            \
        const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout, const float *lse,               \
        const float *delta, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,                \
        const int4 *query_bounds, const int4 *key_bounds, float *dq, float *dk, float *dv, int Sq, int Sk,      \
        int H, int Hkv, int dim, float scale, int kind, int window) {                                           \
        backward_swizzled<128, T_LBO, T_SBO>(q, k, v, dout, lse, delta, qpos, kpos, qdoc, kdoc, query_bounds,   \
                                             key_bounds, dq, dk, dv, Sq, Sk, H, Hkv, scale, kind, window);      \
    }
BACKWARD_V9(16, 1024, )
BACKWARD_V9(1024, 16, _alt)
