// Tensor-core backward (FlashAttention-2 style, keys outer) for D ∈ {64, 128}.
//
// A block of WARPS warps owns BN = 16·WARPS keys of one key/value head and walks every query head of its group and
// every query tile (BM = 64 rows) the mask lets it see. Per tile, warp w holds 16 keys and computes, transposed so
// that keys are rows:
//     Sᵀ = K_w·Qᵀ,  dPᵀ = V_w·dOᵀ,  Pᵀ = exp(scale·Sᵀ − LSE),  dSᵀ = scale · Pᵀ ∘ (dPᵀ − δ)
//     dV_w += Pᵀ·dO,  dK_w += dSᵀ·Q                   (accumulated in fp32 registers over the whole walk)
//     dQ += dS·K                                      (dSᵀ goes through shared memory; fp32 atomics into dQ)
// so dK and dV of a group are summed over its query heads without atomics, and dQ is accumulated in fp32.
// P and dS enter the mma in the input type (bf16 or fp16). Tiles the mask hides are skipped, fully visible ones take no mask work.
//
// Contract (same as attention_backward_dkdv/_dq in attention_simt.cu): add the block's dQ `[B, S_q, H, D]` and
// dK, dV `[B, S_k, H_kv, D]` into the fp32 gradients, given the final LSE `[B, H, S_q]` and δ `[B, H, S_q]`.

#include "mma_primitives.cuh"

template <int D, int WARPS>
__device__ void backward_mma(const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout, const float *lse,
                             const float *delta, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                             const int4 *query_bounds, const int4 *key_bounds, float *dq, float *dk, float *dv, int Sq,
                             int Sk, int H, int Hkv, float scale, int kind, int window) {
    constexpr int BN = 16 * WARPS, BM = 64, THREADS = 32 * WARPS, LD = D + 8, LDS = BM + 8, CHUNKS = D / 8;
    // dQ = dS·K: 4 warps cover the 64 query rows, extra warps split D.
    constexpr int DQ_SPLIT = WARPS / 4, DQ_COLUMNS = D / DQ_SPLIT;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    bf16_t *sK = (bf16_t *)shared_bytes, *sV = sK + BN * LD, *sQ = sV + BN * LD, *sdO = sQ + BM * LD;
    bf16_t *sdS = sdO + BM * LD;                // dSᵀ [key][query]
    float *sL = (float *)(sdS + BN * LDS);      // LSE·log2(e) of the query tile (+∞ past the end: P = 0)
    float *sD = sL + BM;                        // δ of the query tile
    __shared__ int tile_range[2];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3, m8 = lane >> 3;
    const int kvh = blockIdx.y, b = blockIdx.z, group = H / Hkv;
    const int key_tile = gridDim.x - 1 - blockIdx.x;  // under causal masks the first keys see the most queries
    const int key0 = key_tile * BN, query_tiles = (Sq + BM - 1) / BM;
    const size_t q_stride = (size_t)H * D, kv_stride = (size_t)Hkv * D;
    const float scale2 = scale * LOG2E;
    const int4 kb = key_bounds[key_tile];

    // K and V tiles → shared memory; meanwhile find the range of query tiles this key tile meets.
    const bf16_t *k_base = k + ((size_t)b * Sk * Hkv + kvh) * D, *v_base = v + ((size_t)b * Sk * Hkv + kvh) * D;
    for (int idx = tid; idx < BN * CHUNKS; idx += THREADS) {
        int r = idx / CHUNKS, c = idx % CHUNKS, j = key0 + r;
        size_t offset = (size_t)min(j, Sk - 1) * kv_stride + c * 8;
        cp_async16(sK + r * LD + c * 8, k_base + offset, j < Sk);
        cp_async16(sV + r * LD + c * 8, v_base + offset, j < Sk);
    }
    cp_async_commit();
    const int2 range = shown_tile_range<THREADS>(
        query_tiles, [&](int i) { return classify(query_bounds[i], kb, false, kind, window) != HIDDEN; }, tile_range);

    // This thread's two key rows.
    int krow[2], kp[2], kd[2];
#pragma unroll
    for (int s = 0; s < 2; s++) {
        krow[s] = key0 + warp * 16 + g + 8 * s;
        kp[s] = krow[s] < Sk ? kpos[krow[s]] : 0;
        kd[s] = krow[s] < Sk ? kdoc[krow[s]] : -1;
    }
    float dK[D / 8][4], dV[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dK[n][e] = dV[n][e] = 0.f;
    cp_async_wait_all();
    __syncthreads();
    const int first = range.x, last = range.y;
    const bool ragged_keys = key0 + BN > Sk;

    for (int head = kvh * group; head < (kvh + 1) * group; head++) {
        const bf16_t *q_base = q + ((size_t)b * Sq * H + head) * D, *do_base = dout + ((size_t)b * Sq * H + head) * D;
        const size_t row_base = ((size_t)b * H + head) * Sq;
        for (int qt = first; qt <= last; qt++) {
            const int q0 = qt * BM;
            const int tile_class = classify(query_bounds[qt], kb, ragged_keys || q0 + BM > Sq, kind, window);
            if (tile_class == HIDDEN) continue;
            for (int idx = tid; idx < BM * CHUNKS; idx += THREADS) {
                int r = idx / CHUNKS, c = idx % CHUNKS, i = q0 + r;
                size_t offset = (size_t)min(i, Sq - 1) * q_stride + c * 8;
                cp_async16(sQ + r * LD + c * 8, q_base + offset, i < Sq);
                cp_async16(sdO + r * LD + c * 8, do_base + offset, i < Sq);
            }
            cp_async_commit();
            for (int r = tid; r < BM; r += THREADS) {
                int i = q0 + r;
                sL[r] = i < Sq ? lse[row_base + i] * LOG2E : __int_as_float(0x7f800000);
                sD[r] = i < Sq ? delta[row_base + i] : 0.f;
            }
            cp_async_wait_all();
            __syncthreads();

            // Sᵀ and dPᵀ for this warp's 16 keys × 64 queries.
            float s[BM / 8][4], dp[BM / 8][4];
#pragma unroll
            for (int n = 0; n < BM / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                u32 ka[4], va[4];
                ldmatrix_x4(ka, sK + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
                ldmatrix_x4(va, sV + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
                for (int np = 0; np < BM / 16; np++) {
                    u32 qb[4], ob[4];
                    int row = (np * 16 + (m8 >> 1) * 8 + (lane & 7)) * LD + kk * 16 + (m8 & 1) * 8;
                    ldmatrix_x4(qb, sQ + row);
                    ldmatrix_x4(ob, sdO + row);
                    mma_input(s[2 * np], ka, qb[0], qb[1]);
                    mma_input(s[2 * np + 1], ka, qb[2], qb[3]);
                    mma_input(dp[2 * np], va, ob[0], ob[1]);
                    mma_input(dp[2 * np + 1], va, ob[2], ob[3]);
                }
            }

            // Pᵀ (in s) on every pair in straight-line code, then zeros where a partial tile's mask hides a pair
            // (a branch inside the unrolled loop would cut it into a basic block per element).
#pragma unroll
            for (int n = 0; n < BM / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[n][e] = exp2_approx(fmaf(s[n][e], scale2, -sL[n * 8 + t * 2 + (e & 1)]));
            if (tile_class == PARTIAL) {
#pragma unroll
                for (int n = 0; n < BM / 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int r = e >> 1, i = q0 + n * 8 + t * 2 + (e & 1);
                        bool ok = i < Sq && krow[r] < Sk && visible(qpos[i], kp[r], qdoc[i], kd[r], kind, window);
                        s[n][e] = ok ? s[n][e] : 0.f;
                    }
            }
            // Scaled dSᵀ (in dp), also to shared memory for dQ.
#pragma unroll
            for (int n = 0; n < BM / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) dp[n][e] = s[n][e] * (dp[n][e] - sD[n * 8 + t * 2 + (e & 1)]) * scale;
#pragma unroll
                for (int r = 0; r < 2; r++)
                    *(u32 *)(sdS + (warp * 16 + g + 8 * r) * LDS + n * 8 + t * 2) =
                        pack_input(dp[n][2 * r], dp[n][2 * r + 1]);
            }

            // dV += Pᵀ·dO, dK += dSᵀ·Q: the accumulators' layout is the A layout (k = query).
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++) {
                u32 pa[4] = {pack_input(s[2 * kk][0], s[2 * kk][1]), pack_input(s[2 * kk][2], s[2 * kk][3]),
                             pack_input(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_input(s[2 * kk + 1][2], s[2 * kk + 1][3])};
                u32 da[4] = {pack_input(dp[2 * kk][0], dp[2 * kk][1]), pack_input(dp[2 * kk][2], dp[2 * kk][3]),
                             pack_input(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                             pack_input(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
#pragma unroll
                for (int dd = 0; dd < D / 16; dd++) {
                    u32 ob[4], qb[4];
                    int row = (kk * 16 + (m8 & 1) * 8 + (lane & 7)) * LD + dd * 16 + (m8 >> 1) * 8;
                    ldmatrix_x4_trans(ob, sdO + row);
                    ldmatrix_x4_trans(qb, sQ + row);
                    mma_input(dV[2 * dd], pa, ob[0], ob[1]);
                    mma_input(dV[2 * dd + 1], pa, ob[2], ob[3]);
                    mma_input(dK[2 * dd], da, qb[0], qb[1]);
                    mma_input(dK[2 * dd + 1], da, qb[2], qb[3]);
                }
            }
            __syncthreads();  // dSᵀ complete

            // dQ (16 query rows × DQ_COLUMNS of D per warp) = dS·K, added to the fp32 dQ with atomics.
            {
                const int qrow = (warp & 3) * 16, col0 = (warp >> 2) * DQ_COLUMNS;
                float acc[DQ_COLUMNS / 8][4];
#pragma unroll
                for (int n = 0; n < DQ_COLUMNS / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++) {
                    u32 a[4];
                    ldmatrix_x4_trans(a, sdS + (kk * 16 + (m8 >> 1) * 8 + (lane & 7)) * LDS + qrow + (m8 & 1) * 8);
#pragma unroll
                    for (int dd = 0; dd < DQ_COLUMNS / 16; dd++) {
                        u32 kb4[4];
                        ldmatrix_x4_trans(kb4, sK + (kk * 16 + (m8 & 1) * 8 + (lane & 7)) * LD + col0 + dd * 16
                                                   + (m8 >> 1) * 8);
                        mma_input(acc[2 * dd], a, kb4[0], kb4[1]);
                        mma_input(acc[2 * dd + 1], a, kb4[2], kb4[3]);
                    }
                }
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int i = q0 + qrow + g + 8 * r;
                    if (i >= Sq) continue;
                    float *row = dq + (size_t)(b * Sq + i) * q_stride + head * D + col0 + t * 2;
#pragma unroll
                    for (int n = 0; n < DQ_COLUMNS / 8; n++) {
                        atomicAdd(row + n * 8, acc[n][2 * r]);
                        atomicAdd(row + n * 8 + 1, acc[n][2 * r + 1]);
                    }
                }
            }
            __syncthreads();  // before the next tile overwrites sQ, sdO, sdS
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        int j = krow[r];
        if (j >= Sk) continue;
        size_t offset = ((size_t)(b * Sk + j) * Hkv + kvh) * D + t * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            float2 *pk = (float2 *)(dk + offset + n * 8), *pv = (float2 *)(dv + offset + n * 8);
            float2 ok = *pk, ov = *pv;
            *pk = make_float2(ok.x + dK[n][2 * r], ok.y + dK[n][2 * r + 1]);
            *pv = make_float2(ov.x + dV[n][2 * r], ov.y + dV[n][2 * r + 1]);
        }
    }
}

// Kernel name: attention_backward_mma_d<D>_w<WARPS>; dynamic shared memory
// (2·BN + 2·64)·(D + 8)·2 + BN·72·2 + 2·64·4 bytes with BN = 16·WARPS.
#define BACKWARD_MMA(D, WARPS)                                                                                  \
    extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_backward_mma_d##D##_w##WARPS(            \
        const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout, const float *lse,               \
        const float *delta, const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,                \
        const int4 *query_bounds, const int4 *key_bounds, float *dq, float *dk, float *dv, int Sq, int Sk,      \
        int H, int Hkv, int dim, float scale, int kind, int window) {                                           \
        backward_mma<D, WARPS>(q, k, v, dout, lse, delta, qpos, kpos, qdoc, kdoc, query_bounds, key_bounds, dq, \
                               dk, dv, Sq, Sk, H, Hkv, scale, kind, window);                                    \
    }
BACKWARD_MMA(64, 4)
BACKWARD_MMA(64, 8)
BACKWARD_MMA(128, 4)
BACKWARD_MMA(128, 8)
