// Hopper tensor-core forward (sm_90a): FlashAttention on warpgroup MMA (wgmma.mma_async) fed by the Tensor
// Memory Accelerator, D ∈ {64, 128}.
//
// A block owns BM = 128 query rows and walks the visible key tiles BN = 128 at a time, with three warpgroups of
// distinct roles (warp specialisation). The producer (warpgroup 0) gives most of its registers back (setmaxnreg
// 24) and one of its threads issues every load: Q once, then per visible key tile two TMA copies for K and two for
// V (one per 64-column panel), each completing on a "full" mbarrier of its stage (two stages each). TMA writes the
// 128-byte swizzle the products read and fills rows past the end with zeros. The two consumers (64 query rows
// each, 240 registers) wait on those mbarriers and, per tile: S = Q·Kᵀ with both operands from shared memory, the
// online softmax on the accumulators, O += P·V with P from registers and V read transposed. The softmax of tile
// j + 1 runs while O += P_j·V_j is in flight (each iteration issues S_{j+1}, then P_j·V_j, waits for S_{j+1} only).
// A consumer releases a stage by arriving on its "empty" mbarrier (a lane per warp) once the product that read it
// has completed; the producer waits for both consumers' releases before refilling it. No block-wide barrier after
// the set-up, so the consumers run at their own pace and their softmax and products interleave. Every key tile's
// class (attention_tile_bounds, classify) goes to shared memory once, up front: hidden tiles are skipped, fully
// visible tiles take no mask work.
// Lab (H100, S = 16k): 1.60× the same math with cp.async loads by every thread and a barrier per tile at D = 128,
// 1.47× at D = 64 (lab/kernel-notes.md, forward v10).
//
// Contract: the mma.sync forward's (attention_forward_mma.cu) — fold the keys into the partial (o, lse), o
// normalised, lse its log-sum-exp, masks from global positions and document ids; key-tile bounds for 128-key
// tiles — with Q, K and V given as tensor maps: 4-D (D, heads, S, B) over the 16-bit inputs, boxes (64, 1, 128, 1),
// 128-byte swizzle, out-of-bounds elements zero. 384 threads; dynamic shared memory (128 + 4·128)·D·2 + 1024 bytes
// (the 1 KB aligns the swizzled atoms).

#include "wgmma_primitives.cuh"
#include "tma_primitives.cuh"

// FRESH: the block's keys are all the keys (no partial to fold into): O is written in the input type (`o_fresh`,
// what a training step's W_o GEMM and δ read) and LSE set, with no read of either and no fill before.
template <int D, int BN, bool FRESH = false>
__device__ __forceinline__ void forward_wgmma(const TensorMap *map_q, const TensorMap *map_k, const TensorMap *map_v,
                                              const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                                              const int4 *key_bounds, float *o, bf16_t *o_fresh, float *lse, int Sq,
                                              int Sk, int H, int Hkv, float scale, int kind, int window) {
    constexpr int BM = 128, THREADS = 384, TILE_Q = BM * D * 2, TILE_KV = BN * D * 2, CLASS_CACHE = 4096;
    extern __shared__ __align__(128) unsigned char shared_bytes[];
    unsigned char *sQ = align_1024(shared_bytes);
    unsigned char *sK = sQ + TILE_Q, *sV = sK + 2 * TILE_KV;  // K and V: two stages each
    __shared__ __align__(8) u64 q_full, k_full[2], v_full[2], k_empty[2], v_empty[2];
    __shared__ unsigned char tile_classes[CLASS_CACHE];  // classes of key tiles first, first + 1, …
    __shared__ int4 query_bounds;
    __shared__ int tile_range[2];

    // Warpgroup 0 produces; warpgroups 1 and 2 compute 64 query rows each (`group` 0 and 1).
    const int tid = threadIdx.x, role = tid >> 7, group = role - 1, warp = (tid >> 5) & 3, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
    const int row0 = (gridDim.x - 1 - blockIdx.x) * BM;  // heaviest (latest) query tiles first under causal masks
    const int key_tiles = (Sk + BN - 1) / BN;

    if (tid == 0) {  // visible to every thread after block_row_bounds's first barrier
        mbar_init(&q_full, 1);
        for (int s = 0; s < 2; s++) {
            mbar_init(&k_full[s], 1);
            mbar_init(&v_full[s], 1);
            mbar_init(&k_empty[s], 8);  // a lane of each consumer warp
            mbar_init(&v_empty[s], 8);
        }
        mbar_fence_init();
    }
    const int4 qb = block_row_bounds<THREADS>(qpos, qdoc, row0, BM, Sq, query_bounds);
    auto classify_tile = [&](int j) { return classify(qb, key_bounds[j], (j + 1) * BN > Sk, kind, window); };
    const int2 range =
        shown_tile_range<THREADS>(key_tiles, [&](int j) { return classify_tile(j) != HIDDEN; }, tile_range);
    const int first = range.x, last = range.y;
    for (int j = first + tid; j <= min(last, first + CLASS_CACHE - 1); j += THREADS)
        tile_classes[j - first] = classify_tile(j);
    __syncthreads();  // the last block-wide barrier
    auto class_of = [&](int j) -> int { return j - first < CLASS_CACHE ? tile_classes[j - first] : classify_tile(j); };
    auto next_tile = [&](int j) {  // the next visible tile after j, or last + 1
        do j++; while (j <= last && class_of(j) == HIDDEN);
        return j;
    };

    if (role == 0) {
        setmaxnreg_dec<24>();
        if (tid != 0 || first > last) return;  // (no visible tile: the consumers read nothing)
        // Q, then K and V of the n-th visible tile into stage n % 2 once its (n − 2)-th use is released.
        mbar_expect(&q_full, TILE_Q);
        for (int panel = 0; panel < D / 64; panel++)
            tma_load_4d(sQ + panel * BM * 128, map_q, panel * 64, h, row0, b, &q_full);
        int n = 0;
        for (int j = first; j <= last; j = next_tile(j), n++) {
            const int stage = n & 1;
            const unsigned released = ((n >> 1) & 1) ^ 1;  // parity of the release of use n / 2 − 1
            if (n >= 2) mbar_wait(&k_empty[stage], released);
            mbar_expect(&k_full[stage], TILE_KV);
            for (int panel = 0; panel < D / 64; panel++)
                tma_load_4d(sK + stage * TILE_KV + panel * BN * 128, map_k, panel * 64, kvh, j * BN, b, &k_full[stage]);
            if (n >= 2) mbar_wait(&v_empty[stage], released);
            mbar_expect(&v_full[stage], TILE_KV);
            for (int panel = 0; panel < D / 64; panel++)
                tma_load_4d(sV + stage * TILE_KV + panel * BN * 128, map_v, panel * 64, kvh, j * BN, b, &v_full[stage]);
        }
        return;
    }
    setmaxnreg_inc<240>();
    // A consumer waits for the n-th visible tile's K or V with parity (n / 2) % 2 and releases its stage (a lane
    // per warp) once the product that read it has completed.
    auto wait_full = [&](u64 (&bars)[2], int n) { mbar_wait(&bars[n & 1], (n >> 1) & 1); };
    auto release = [&](u64 (&bars)[2], int n) {
        if (lane == 0) mbar_arrive(&bars[n & 1]);
    };

    const size_t q_stride = (size_t)H * D;
    // This thread's rows: consumer warpgroup `group`, warp `warp` within it, lane rows g and g + 8.
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

    // S = Q·Kᵀ of the tile in K stage `stage`, for this warpgroup's 64 rows (issued, committed, not waited for).
    auto issue_s = [&](float (&s)[BN / 2], int stage) {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<BN>(s, swizzled_k_major<BM>(sQ, group * 64, kk), swizzled_k_major<BN>(sK + stage * TILE_KV, 0, kk),
                         kk > 0);
        wgmma_commit();
    };
    // Masks S of tile j (partial tiles), moves the running max, and turns S into P = exp(scale·S − max) in place;
    // returns each row's factor for the old accumulators and adds P's row sums to `sum`. s[4c + e]: row
    // g + 8·(e / 2), key 8c + 2t + e % 2.
    auto softmax = [&](float (&s)[BN / 2], int j, float (&alpha)[2], float (&sum)[2]) {
        if (class_of(j) == PARTIAL) {
            const int key0 = j * BN;
#pragma unroll
            for (int c = 0; c < BN / 8; c++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, jj = key0 + c * 8 + t * 2 + (e & 1);
                    const bool ok = rows[r] < Sq && jj < Sk && visible(qp[r], kpos[jj], qd[r], kdoc[jj], kind, window);
                    s[4 * c + e] = ok ? s[4 * c + e] : NEG_INF;
                }
        }
        float top[2] = {m[0], m[1]}, shift[2];
#pragma unroll
        for (int i = 0; i < BN / 2; i++) top[(i >> 1) & 1] = fmaxf(top[(i >> 1) & 1], s[i]);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 1));
            top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 2));
            const float base = top[r] == NEG_INF ? 0.f : top[r];
            alpha[r] = exp2_approx((m[r] - base) * scale2);
            m[r] = top[r];
            shift[r] = base * scale2;
            sum[r] = 0.f;
        }
#pragma unroll
        for (int i = 0; i < BN / 2; i++) {
            s[i] = exp2_approx(fmaf(s[i], scale2, -shift[(i >> 1) & 1]));
            sum[(i >> 1) & 1] += s[i];
        }
    };
    // Folds a softmax step into the running sums and (once P_{j−1}·V_{j−1} has landed) the accumulators.
    auto rescale = [&](const float (&alpha)[2], float (&sum)[2]) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            l[r] = l[r] * alpha[r] + sum[r];
#pragma unroll
            for (int c = 0; c < D / 8; c++) {
                acc[4 * c + 2 * r] *= alpha[r];
                acc[4 * c + 2 * r + 1] *= alpha[r];
            }
        }
    };

    // Prologue: S and the softmax of the first visible tile.
    u32 p[BN / 16][4];  // P_j as A fragments (keys 16kk … 16kk + 15)
    int j = first, next = first <= last ? next_tile(first) : last + 1, n = 0;
    if (j <= last) {
        mbar_wait(&q_full, 0);
        wait_full(k_full, 0);
        float s[BN / 2], alpha[2], sum[2];
        issue_s(s, 0);
        wgmma_wait<0>();
        pin(s);
        release(k_empty, 0);
        softmax(s, j, alpha, sum);
        rescale(alpha, sum);
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) accumulator_to_a(p[kk], s, kk);
    }
    // O += P_j·V_j: V's rows are keys, read transposed, one m64n64 product per 64-column panel (2048 bytes, two
    // 8-key atoms, per 16 keys; accumulator columns 64p … 64p + 63 are acc[32p … 32p + 31]). Issued, committed.
    auto issue_pv = [&](int stage) {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
            for (int panel = 0; panel < D / 64; panel++)
                wgmma_rs<64>(*reinterpret_cast<float (*)[32]>(acc + 32 * panel), p[kk],
                             swizzled_descriptor(sV + stage * TILE_KV + panel * BN * 128 + kk * 2048, 16, 1024));
        wgmma_commit();
    };
    // Tile n (j) with a successor n + 1 (next): its P in `p`, its V in stage n % 2; K of next in stage (n + 1) % 2.
    // No branch around a wgmma or a wait: ptxas serialises the products when it cannot tell which accumulators a
    // wait has released.
    while (next <= last) {
        wait_full(k_full, n + 1);
        wait_full(v_full, n);
        float s[BN / 2], alpha[2], sum[2];
        issue_s(s, (n + 1) & 1);
        issue_pv(n & 1);
        wgmma_wait<1>();  // S_{n+1} has landed; P_n·V_n may still run
        pin(s);
        release(k_empty, n + 1);
        softmax(s, next, alpha, sum);
        wgmma_wait<0>();
        pin(acc);
        release(v_empty, n);
        rescale(alpha, sum);
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) accumulator_to_a(p[kk], s, kk);
        j = next;
        next = next_tile(next);
        n++;
    }
    if (j <= last) {  // the last visible tile: P·V only
        wait_full(v_full, n);
        issue_pv(n & 1);
        wgmma_wait<0>();
        pin(acc);
    }

    // (o, lse) ⊕= this block's (acc / l, m + log l), in fp32: weights of the two normalised partials. FRESH: (o, lse)
    // = (acc / l, m + log l) — the same values a fold into an empty partial gives — or (0, −∞) without a visible key.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = rows[r];
        if (FRESH && i < Sq) {
            const float inverse = l[r] == 0.f ? 0.f : 1.f / l[r];
            u32 *row = (u32 *)(o_fresh + (size_t)(b * Sq + i) * q_stride + h * D + t * 2);
#pragma unroll
            for (int c = 0; c < D / 8; c++)
                row[c * 4] = pack_input(acc[4 * c + 2 * r] * inverse, acc[4 * c + 2 * r + 1] * inverse);
            if (t == 0)
                lse[((size_t)b * H + h) * Sq + i] = l[r] == 0.f ? NEG_INF : (m[r] * scale2 + __log2f(l[r])) * LN2;
        }
        if (FRESH || i >= Sq || l[r] == 0.f) continue;  // no visible key in this block: the partial stands
        fold_into_partial<D>(o + (size_t)(b * Sq + i) * q_stride + h * D + t * 2, lse + ((size_t)b * H + h) * Sq + i,
                             m[r] * scale2 + __log2f(l[r]), l[r], t, lane,
                             [&](int c, int e) { return acc[4 * c + 2 * r + e]; });
    }
}

// Kernel names: attention_forward_wgmma_d<D> (arguments as attention_forward_mma_* with Q, K, V as tensor maps)
// and attention_forward_wgmma_fresh_d<D> (the same with O in the input type, written rather than folded into).
#define FORWARD_WGMMA(D)                                                                                          \
    extern "C" __global__ void __launch_bounds__(384, 1) attention_forward_wgmma_d##D(                          \
            const __grid_constant__ TensorMap map_q, const __grid_constant__ TensorMap map_k,                     \
            const __grid_constant__ TensorMap map_v, const int *qpos, const int *kpos, const int *qdoc,           \
            const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq, int Sk, int H, int Hkv,        \
            int dim, float scale, int kind, int window) {                                                         \
        forward_wgmma<D, 128>(&map_q, &map_k, &map_v, qpos, kpos, qdoc, kdoc, key_bounds, o, nullptr, lse, Sq, Sk, \
                              H, Hkv, scale, kind, window);                                                       \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(384, 1) attention_forward_wgmma_fresh_d##D(                    \
            const __grid_constant__ TensorMap map_q, const __grid_constant__ TensorMap map_k,                     \
            const __grid_constant__ TensorMap map_v, const int *qpos, const int *kpos, const int *qdoc,           \
            const int *kdoc, const int4 *key_bounds, bf16_t *o, float *lse, int Sq, int Sk, int H, int Hkv,       \
            int dim, float scale, int kind, int window) {                                                         \
        forward_wgmma<D, 128, true>(&map_q, &map_k, &map_v, qpos, kpos, qdoc, kdoc, key_bounds, nullptr, o, lse,  \
                                    Sq, Sk, H, Hkv, scale, kind, window);                                         \
    }
FORWARD_WGMMA(64)
FORWARD_WGMMA(128)
