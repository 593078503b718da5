// Tensor-core forward (FlashAttention-2 style) for D ∈ {64, 128}.
//
// A block of WARPS warps owns BM = WARPS·16·MT query rows (each warp MT m16 row tiles) and walks the key tiles BN
// at a time: S = Q·Kᵀ and O += P·V on mma.sync.m16n8k16 (bf16 or fp16 in, fp32 accumulate), operands fed from shared
// memory by ldmatrix. K and V tiles arrive by cp.async: V of tile j loads while S of tile j computes, K of the next
// tile while P·V of tile j computes. Each key tile is classified against the block's query rows from precomputed
// bounds (attention_tile_bounds): hidden tiles are skipped, fully visible tiles take no mask work, only the
// others (the diagonal, a window's edge, document borders, ragged ends) test each pair.
//
// Contract (same as attention_forward in attention_simt.cu): fold the keys into the partial (o, lse), where o is
// normalised and lse its log-sum-exp; masks from global positions and document ids. Softmax runs in base 2 with
// the scale folded into the exponent's FMA. The PTX wrappers live in mma_primitives.cuh.

#include "mma_primitives.cuh"

template <int D, int WARPS, int MT, int BN, bool Q_IN_REGISTERS>
__device__ void forward_mma(const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,
                            const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq,
                            int Sk, int H, int Hkv, float scale, int kind, int window) {
    constexpr int BM = WARPS * 16 * MT, LD = D + 8;  // padded rows: ldmatrix and cp.async hit distinct banks
    constexpr int THREADS = WARPS * 32, CHUNKS = D / 8;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    bf16_t *sQ = (bf16_t *)shared_bytes, *sK = sQ + BM * LD, *sV = sK + BN * LD;
    __shared__ int4 query_bounds;
    __shared__ int tile_range[2];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
    const int row0 = (gridDim.x - 1 - blockIdx.x) * BM;  // heaviest (latest) query tiles first under causal masks
    const int key_tiles = (Sk + BN - 1) / BN;
    const size_t q_stride = (size_t)H * D, kv_stride = (size_t)Hkv * D;
    const bf16_t *q_base = q + ((size_t)b * Sq * H + h) * D;
    const bf16_t *k_base = k + ((size_t)b * Sk * Hkv + kvh) * D, *v_base = v + ((size_t)b * Sk * Hkv + kvh) * D;

    // Q tile → shared memory (async), then the block's query bounds and the range of key tiles it must visit.
    for (int idx = tid; idx < BM * CHUNKS; idx += THREADS) {
        int r = idx / CHUNKS, c = idx % CHUNKS, i = row0 + r;
        cp_async16(sQ + r * LD + c * 8, q_base + (size_t)min(i, Sq - 1) * q_stride + c * 8, i < Sq);
    }
    cp_async_commit();
    const int4 qb = block_row_bounds<THREADS>(qpos, qdoc, row0, BM, Sq, query_bounds);
    const int2 range = shown_tile_range<THREADS>(
        key_tiles, [&](int j) { return classify(qb, key_bounds[j], false, kind, window) != HIDDEN; }, tile_range);
    const int first = range.x, last = range.y;

    auto load_tile = [&](bf16_t *destination, const bf16_t *base, int key0) {
        for (int idx = tid; idx < BN * CHUNKS; idx += THREADS) {
            int r = idx / CHUNKS, c = idx % CHUNKS, j = key0 + r;
            cp_async16(destination + r * LD + c * 8, base + (size_t)min(j, Sk - 1) * kv_stride + c * 8, j < Sk);
        }
        cp_async_commit();
    };
    auto class_of = [&](int j) {
        return classify(qb, key_bounds[j], (j + 1) * BN > Sk, kind, window);
    };
    auto next_tile = [&](int j) {
        do j++; while (j <= last && class_of(j) == HIDDEN);
        return j;
    };
    if (first <= last) load_tile(sK, k_base, first * BN);

    // This thread's rows (two per m16 tile) and the running state of this block alone; m in raw-score units. The
    // partial already in (o, lse) is merged in exactly at the end: seeding the running state from it instead
    // would put every probability of this block below 1 (m would start at the old LSE) and round all of them to
    // bf16, even the row's largest, which measurably doubles the error after a few folds.
    const float scale2 = scale * LOG2E;
    int rows[MT][2], qp[MT][2], qd[MT][2];
    float m[MT][2], l[MT][2], acc[MT][D / 8][4];
    #pragma unroll
    for (int mt = 0; mt < MT; mt++)
        #pragma unroll
        for (int s = 0; s < 2; s++) {
            int i = row0 + (warp * MT + mt) * 16 + g + 8 * s;
            bool valid = i < Sq;
            rows[mt][s] = i;
            qp[mt][s] = valid ? qpos[i] : 0;
            qd[mt][s] = valid ? qdoc[i] : -1;
            m[mt][s] = NEG_INF;
            l[mt][s] = 0.f;
            #pragma unroll
            for (int n = 0; n < D / 8; n++)
                #pragma unroll
                for (int c = 0; c < 2; c++) acc[mt][n][2 * s + c] = 0.f;
        }

    cp_async_wait_all();
    __syncthreads();
    u32 qf[Q_IN_REGISTERS ? MT : 1][Q_IN_REGISTERS ? D / 16 : 1][4];
    if (Q_IN_REGISTERS)
        #pragma unroll
        for (int mt = 0; mt < MT; mt++)
            #pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                ldmatrix_x4(qf[mt][kk], sQ + ((warp * MT + mt) * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);

    for (int j = first; j <= last;) {
        // sK holds tile j; sV is free. Fetch V_j while S_j computes.
        const int key0 = j * BN, tile_class = class_of(j);
        load_tile(sV, v_base, key0);

        float s[MT][BN / 8][4];
        #pragma unroll
        for (int mt = 0; mt < MT; mt++)
            #pragma unroll
            for (int n = 0; n < BN / 8; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
        #pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            u32 qa[MT][4];
            #pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (Q_IN_REGISTERS) {
                    #pragma unroll
                    for (int e = 0; e < 4; e++) qa[mt][e] = qf[Q_IN_REGISTERS ? mt : 0][Q_IN_REGISTERS ? kk : 0][e];
                } else {
                    ldmatrix_x4(qa[mt], sQ + ((warp * MT + mt) * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
                }
            }
            #pragma unroll
            for (int np = 0; np < BN / 16; np++) {
                u32 bf[4];
                int m8 = lane >> 3;
                ldmatrix_x4(bf, sK + (np * 16 + (m8 >> 1) * 8 + (lane & 7)) * LD + kk * 16 + (m8 & 1) * 8);
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_input(s[mt][2 * np], qa[mt], bf[0], bf[1]);
                    mma_input(s[mt][2 * np + 1], qa[mt], bf[2], bf[3]);
                }
            }
        }

        // Mask (partial tiles only, in a pass of its own: a branch inside the unrolled softmax would cut it into
        // a basic block per element), then the online softmax on raw scores with the scale inside the exponent's FMA.
        if (tile_class == PARTIAL) {
            #pragma unroll
            for (int mt = 0; mt < MT; mt++)
                #pragma unroll
                for (int n = 0; n < BN / 8; n++)
                    #pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int r = e >> 1, jj = key0 + n * 8 + t * 2 + (e & 1);
                        bool ok = rows[mt][r] < Sq && jj < Sk
                                  && visible(qp[mt][r], kpos[jj], qd[mt][r], kdoc[jj], kind, window);
                        s[mt][n][e] = ok ? s[mt][n][e] : NEG_INF;
                    }
        }
        #pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float top[2] = {m[mt][0], m[mt][1]};
            #pragma unroll
            for (int n = 0; n < BN / 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++) top[e >> 1] = fmaxf(top[e >> 1], s[mt][n][e]);
            float sum[2] = {0.f, 0.f}, shift[2];
            #pragma unroll
            for (int r = 0; r < 2; r++) {
                top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 1));
                top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 2));
                float base = top[r] == NEG_INF ? 0.f : top[r];
                float alpha = exp2_approx((m[mt][r] - base) * scale2);
                m[mt][r] = top[r];
                shift[r] = base * scale2;
                l[mt][r] *= alpha;
                #pragma unroll
                for (int n = 0; n < D / 8; n++) {
                    acc[mt][n][2 * r] *= alpha;
                    acc[mt][n][2 * r + 1] *= alpha;
                }
            }
            #pragma unroll
            for (int n = 0; n < BN / 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[mt][n][e] = exp2_approx(fmaf(s[mt][n][e], scale2, -shift[e >> 1]));
                    sum[e >> 1] += s[mt][n][e];
                }
            #pragma unroll
            for (int r = 0; r < 2; r++) {
                sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
                sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
                l[mt][r] += sum[r];
            }
        }

        // V_j has landed and every warp is done with sK: fetch K of the next tile while P·V runs.
        cp_async_wait_all();
        __syncthreads();
        const int next = next_tile(j);
        if (next <= last) load_tile(sK, k_base, next * BN);

        // O += P·V: P's accumulator layout is the A layout of the next mma (two 8-key tiles per 16 keys).
        #pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            u32 pf[MT][4];
            #pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pf[mt][0] = pack_input(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pf[mt][1] = pack_input(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pf[mt][2] = pack_input(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pf[mt][3] = pack_input(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
            #pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                u32 bf[4];
                int m8 = lane >> 3;
                ldmatrix_x4_trans(bf, sV + (kk * 16 + (m8 & 1) * 8 + (lane & 7)) * LD + dp * 16 + (m8 >> 1) * 8);
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_input(acc[mt][2 * dp], pf[mt], bf[0], bf[1]);
                    mma_input(acc[mt][2 * dp + 1], pf[mt], bf[2], bf[3]);
                }
            }
        }
        // K of the next tile has landed and every warp is done with sV.
        cp_async_wait_all();
        __syncthreads();
        j = next;
    }

    // (o, lse) ⊕= this block's (acc / l, m + log l), in fp32: weights of the two normalised partials.
    #pragma unroll
    for (int mt = 0; mt < MT; mt++)
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            int i = rows[mt][r];
            if (i >= Sq || l[mt][r] == 0.f) continue;  // no visible key in this block: the partial stands
            fold_into_partial<D>(o + (size_t)(b * Sq + i) * q_stride + h * D + t * 2,
                                 lse + ((size_t)b * H + h) * Sq + i, m[mt][r] * scale2 + __log2f(l[mt][r]), l[mt][r], t,
                                 lane, [&](int n, int e) { return acc[mt][n][2 * r + e]; });
        }
}

// Kernel name: attention_forward_mma_d<D>_w<WARPS>_m<MT>_n<BN>[_qr]; dynamic shared memory
// (BM + 2·BN)·(D + 8)·2 bytes with BM = WARPS·16·MT.
#define FORWARD_MMA(D, WARPS, MT, BN, QR, SUFFIX)                                                               \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                                    \
        attention_forward_mma_d##D##_w##WARPS##_m##MT##_n##BN##SUFFIX(                                          \
            const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,                \
            const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq, int Sk,     \
            int H, int Hkv, int dim, float scale, int kind, int window) {                                       \
        forward_mma<D, WARPS, MT, BN, QR>(q, k, v, qpos, kpos, qdoc, kdoc, key_bounds, o, lse, Sq, Sk, H, Hkv,  \
                                          scale, kind, window);                                                 \
    }
// The lab's winners on H100 (lab/results): 4 warps × 2 row tiles (128 rows), Q read from shared memory.
FORWARD_MMA(64, 4, 2, 128, false, )
FORWARD_MMA(128, 4, 2, 64, false, )
