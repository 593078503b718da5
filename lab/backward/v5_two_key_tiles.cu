// Candidate backward (lab), D = 64: each warp owns 32 keys (two m16 tiles) instead of 16, over 32-query tiles.
//
// The mainline gives each of its 8 warps 16 keys, so every warp reads the whole Q and dO tiles through ldmatrix
// twice per tile (plain for Sᵀ and dPᵀ, transposed for dV and dK): about one ldmatrix.x4 (4 clocks of shared
// memory) per 1.6 mma, at the balance point of shared-memory bandwidth and mma rate. With 32 keys a warp, every
// Q and dO fragment feeds twice the products: 2.7 mma per ldmatrix in Sᵀ/dPᵀ and 4 in dV/dK. The price is
// registers: dK and dV of 32 keys × 64 columns take 128, so the query tile shrinks to 32 rows (Sᵀ and dPᵀ take
// 64) — D = 128 cannot afford it. Four warps (128 keys) a block, ~57 KB of shared memory: two blocks per SM by
// registers, so one block's barriers overlap the other's products.
// Predicted: +15–30 % at D = 64 over the mainline w8 (the rate llama-1b's training step depends on).
// Expects mma_primitives.cuh already included (the harness includes it once for every candidate).

__device__ void backward_two_key_tiles(const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout,
                                       const float *lse, const float *delta, const int *qpos, const int *kpos,
                                       const int *qdoc, const int *kdoc, const int4 *query_bounds,
                                       const int4 *key_bounds, float *dq, float *dk, float *dv, int Sq, int Sk, int H,
                                       int Hkv, float scale, int kind, int window) {
    constexpr int D = 64, WARPS = 4, KT = 2, BN = 16 * KT * WARPS, BM = 32, THREADS = 32 * WARPS;
    constexpr int LD = D + 8, LDS = BM + 8, CHUNKS = D / 8;
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

    // This thread's four key rows: tile kt, half s → key0 + warp·32 + kt·16 + g + 8s.
    int krow[KT][2], kp[KT][2], kd[KT][2];
#pragma unroll
    for (int kt = 0; kt < KT; kt++)
#pragma unroll
        for (int s = 0; s < 2; s++) {
            krow[kt][s] = key0 + warp * 16 * KT + kt * 16 + g + 8 * s;
            kp[kt][s] = krow[kt][s] < Sk ? kpos[krow[kt][s]] : 0;
            kd[kt][s] = krow[kt][s] < Sk ? kdoc[krow[kt][s]] : -1;
        }
    float dK[KT][D / 8][4], dV[KT][D / 8][4];
#pragma unroll
    for (int kt = 0; kt < KT; kt++)
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) dK[kt][n][e] = dV[kt][n][e] = 0.f;
    cp_async_wait_all();
    __syncthreads();
    const int first = tile_range[0], last = tile_range[1];
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

            // Sᵀ and dPᵀ for this warp's 32 keys × 32 queries: every Q and dO fragment feeds both key tiles.
            float s[KT][BM / 8][4], dp[KT][BM / 8][4];
#pragma unroll
            for (int kt = 0; kt < KT; kt++)
#pragma unroll
                for (int n = 0; n < BM / 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) s[kt][n][e] = dp[kt][n][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                u32 ka[KT][4], va[KT][4];
#pragma unroll
                for (int kt = 0; kt < KT; kt++) {
                    int row = (warp * 16 * KT + kt * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8;
                    ldmatrix_x4(ka[kt], sK + row);
                    ldmatrix_x4(va[kt], sV + row);
                }
#pragma unroll
                for (int np = 0; np < BM / 16; np++) {
                    u32 qb[4], ob[4];
                    int row = (np * 16 + (m8 >> 1) * 8 + (lane & 7)) * LD + kk * 16 + (m8 & 1) * 8;
                    ldmatrix_x4(qb, sQ + row);
                    ldmatrix_x4(ob, sdO + row);
#pragma unroll
                    for (int kt = 0; kt < KT; kt++) {
                        mma_input(s[kt][2 * np], ka[kt], qb[0], qb[1]);
                        mma_input(s[kt][2 * np + 1], ka[kt], qb[2], qb[3]);
                        mma_input(dp[kt][2 * np], va[kt], ob[0], ob[1]);
                        mma_input(dp[kt][2 * np + 1], va[kt], ob[2], ob[3]);
                    }
                }
            }

            // Pᵀ (in s) in straight-line code, zeros where a partial tile's mask hides a pair, then scaled dSᵀ
            // (in dp), also to shared memory for dQ.
#pragma unroll
            for (int kt = 0; kt < KT; kt++)
#pragma unroll
                for (int n = 0; n < BM / 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        s[kt][n][e] = exp2_approx(fmaf(s[kt][n][e], scale2, -sL[n * 8 + t * 2 + (e & 1)]));
            if (tile_class == PARTIAL) {
#pragma unroll
                for (int kt = 0; kt < KT; kt++)
#pragma unroll
                    for (int n = 0; n < BM / 8; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int r = e >> 1, i = q0 + n * 8 + t * 2 + (e & 1);
                            bool ok = i < Sq && krow[kt][r] < Sk
                                      && visible(qpos[i], kp[kt][r], qdoc[i], kd[kt][r], kind, window);
                            s[kt][n][e] = ok ? s[kt][n][e] : 0.f;
                        }
            }
#pragma unroll
            for (int kt = 0; kt < KT; kt++)
#pragma unroll
                for (int n = 0; n < BM / 8; n++) {
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        dp[kt][n][e] = s[kt][n][e] * (dp[kt][n][e] - sD[n * 8 + t * 2 + (e & 1)]) * scale;
#pragma unroll
                    for (int r = 0; r < 2; r++)
                        *(u32 *)(sdS + (warp * 16 * KT + kt * 16 + g + 8 * r) * LDS + n * 8 + t * 2) =
                            pack_input(dp[kt][n][2 * r], dp[kt][n][2 * r + 1]);
                }

            // dV += Pᵀ·dO, dK += dSᵀ·Q (k = query): every dO and Q fragment feeds both key tiles.
#pragma unroll
            for (int kk = 0; kk < BM / 16; kk++) {
                u32 pa[KT][4], da[KT][4];
#pragma unroll
                for (int kt = 0; kt < KT; kt++) {
                    pa[kt][0] = pack_input(s[kt][2 * kk][0], s[kt][2 * kk][1]);
                    pa[kt][1] = pack_input(s[kt][2 * kk][2], s[kt][2 * kk][3]);
                    pa[kt][2] = pack_input(s[kt][2 * kk + 1][0], s[kt][2 * kk + 1][1]);
                    pa[kt][3] = pack_input(s[kt][2 * kk + 1][2], s[kt][2 * kk + 1][3]);
                    da[kt][0] = pack_input(dp[kt][2 * kk][0], dp[kt][2 * kk][1]);
                    da[kt][1] = pack_input(dp[kt][2 * kk][2], dp[kt][2 * kk][3]);
                    da[kt][2] = pack_input(dp[kt][2 * kk + 1][0], dp[kt][2 * kk + 1][1]);
                    da[kt][3] = pack_input(dp[kt][2 * kk + 1][2], dp[kt][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dd = 0; dd < D / 16; dd++) {
                    u32 ob[4], qb[4];
                    int row = (kk * 16 + (m8 & 1) * 8 + (lane & 7)) * LD + dd * 16 + (m8 >> 1) * 8;
                    ldmatrix_x4_trans(ob, sdO + row);
                    ldmatrix_x4_trans(qb, sQ + row);
#pragma unroll
                    for (int kt = 0; kt < KT; kt++) {
                        mma_input(dV[kt][2 * dd], pa[kt], ob[0], ob[1]);
                        mma_input(dV[kt][2 * dd + 1], pa[kt], ob[2], ob[3]);
                        mma_input(dK[kt][2 * dd], da[kt], qb[0], qb[1]);
                        mma_input(dK[kt][2 * dd + 1], da[kt], qb[2], qb[3]);
                    }
                }
            }
            __syncthreads();  // dSᵀ complete

            // dQ (32 query rows × 64 columns) = dS·K: warp w takes 16 rows × 32 columns, added with atomics.
            {
                const int qrow = (warp & 1) * 16, col0 = (warp >> 1) * 32;
                float acc[4][4];
#pragma unroll
                for (int n = 0; n < 4; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++) {
                    u32 a[4];
                    ldmatrix_x4_trans(a, sdS + (kk * 16 + (m8 >> 1) * 8 + (lane & 7)) * LDS + qrow + (m8 & 1) * 8);
#pragma unroll
                    for (int dd = 0; dd < 2; dd++) {
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
                    for (int n = 0; n < 4; n++) {
                        atomicAdd(row + n * 8, acc[n][2 * r]);
                        atomicAdd(row + n * 8 + 1, acc[n][2 * r + 1]);
                    }
                }
            }
            __syncthreads();  // before the next tile overwrites sQ, sdO, sdS
        }
    }

#pragma unroll
    for (int kt = 0; kt < KT; kt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int j = krow[kt][r];
            if (j >= Sk) continue;
            size_t offset = ((size_t)(b * Sk + j) * Hkv + kvh) * D + t * 2;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                float2 *pk = (float2 *)(dk + offset + n * 8), *pv = (float2 *)(dv + offset + n * 8);
                float2 ok = *pk, ov = *pv;
                *pk = make_float2(ok.x + dK[kt][n][2 * r], ok.y + dK[kt][n][2 * r + 1]);
                *pv = make_float2(ov.x + dV[kt][n][2 * r], ov.y + dV[kt][n][2 * r + 1]);
            }
        }
}

// Kernel name: lab_backward_v5_d64; 128 threads; 128 keys a block; query bounds of 32-row tiles; dynamic shared
// memory (2·128 + 2·32)·72·2 + 128·40·2 + 2·32·4 bytes.
extern "C" __global__ void __launch_bounds__(128, 2) lab_backward_v5_d64(
    const bf16_t *q, const bf16_t *k, const bf16_t *v, const bf16_t *dout, const float *lse, const float *delta,
    const int *qpos, const int *kpos, const int *qdoc, const int *kdoc, const int4 *query_bounds,
    const int4 *key_bounds, float *dq, float *dk, float *dv, int Sq, int Sk, int H, int Hkv, int dim, float scale,
    int kind, int window) {
    backward_two_key_tiles(q, k, v, dout, lse, delta, qpos, kpos, qdoc, kdoc, query_bounds, key_bounds, dq, dk, dv,
                           Sq, Sk, H, Hkv, scale, kind, window);
}
