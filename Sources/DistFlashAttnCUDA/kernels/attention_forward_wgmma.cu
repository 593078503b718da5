// Hopper tensor-core forward (sm_90a): FlashAttention on warpgroup MMA (wgmma.mma_async), D ∈ {64, 128}.
//
// A block of two warpgroups owns BM = 128 query rows (64 a warpgroup) and walks the visible key tiles BN = 128 at
// a time. Per tile and warpgroup: S = Q·Kᵀ with both operands from shared memory, the online softmax on the
// accumulators, then O += P·V with P from registers and V read transposed. The softmax of tile j + 1 runs while
// O += P_j·V_j is in flight: each iteration issues S_{j+1}, then P_j·V_j, waits for S_{j+1} only, masks it and
// takes its exponentials, and only then waits for P_j·V_j to rescale O. Q, K and V sit in 128-byte swizzled
// panels (wgmma_primitives.cuh), which keeps the shared-memory reads off the tensor cores' path; K and V have
// two stages each, loaded by cp.async a whole iteration before they are read (K_{j+2} reuses K_j's stage, V_{j+1}
// V_{j−1}'s, so one barrier per tile suffices). Every key tile's class (attention_tile_bounds, classify) goes to
// shared memory once, up front: hidden tiles are skipped, fully visible tiles take no mask work.
// Lab (H100, S = 16k): 1.33× the mma.sync forward at D = 128, 1.05× at D = 64 (lab/kernel-notes.md).
//
// Contract: the mma.sync forward's (attention_forward_mma.cu) — fold the keys into the partial (o, lse), o
// normalised, lse its log-sum-exp, masks from global positions and document ids; key-tile bounds for 128-key
// tiles. 256 threads; dynamic shared memory (128 + 4·128)·D·2 + 1024 bytes (the 1 KB aligns the swizzled atoms).

#include "wgmma_primitives.cuh"

// Copies ROWS rows of D columns from global memory (row stride `stride` elements) into 128-byte swizzled panels
// (eight consecutive threads fill one 128-byte row of a panel), rows past `valid` as zeros; does not commit.
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows(unsigned char *tile, const bf16_t *base, size_t stride, int first_row,
                                          int valid) {
    for (int idx = threadIdx.x; idx < ROWS * D / 8; idx += THREADS) {
        const int c = (idx & 7) + ((idx >> 3) / ROWS) * 8, r = (idx >> 3) % ROWS, i = first_row + r;
        cp_async16(tile + swizzled_chunk<ROWS>(r, c), base + (size_t)min(i, valid - 1) * stride + c * 8, i < valid);
    }
}

template <int D, int BN>
__device__ void forward_wgmma(const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,
                              const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq,
                              int Sk, int H, int Hkv, float scale, int kind, int window) {
    constexpr int BM = 128, THREADS = 256, TILE_Q = BM * D * 2, TILE_KV = BN * D * 2, CLASS_CACHE = 4096;
    extern __shared__ __align__(128) unsigned char shared_bytes[];
    unsigned char *sQ = align_1024(shared_bytes);
    unsigned char *sK = sQ + TILE_Q, *sV = sK + 2 * TILE_KV;  // K and V: two stages each
    __shared__ unsigned char tile_classes[CLASS_CACHE];  // classes of key tiles first, first + 1, …
    __shared__ int4 query_bounds;
    __shared__ int tile_range[2];

    const int tid = threadIdx.x, group = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
    const int row0 = (gridDim.x - 1 - blockIdx.x) * BM;  // heaviest (latest) query tiles first under causal masks
    const int key_tiles = (Sk + BN - 1) / BN;
    const size_t q_stride = (size_t)H * D, kv_stride = (size_t)Hkv * D;
    const bf16_t *q_base = q + ((size_t)b * Sq * H + h) * D;
    const bf16_t *k_base = k + ((size_t)b * Sk * Hkv + kvh) * D, *v_base = v + ((size_t)b * Sk * Hkv + kvh) * D;

    load_rows<D, BM, THREADS>(sQ, q_base, q_stride, row0, Sq);  // committed with the first K tile
    const int4 qb = block_row_bounds<THREADS>(qpos, qdoc, row0, BM, Sq, query_bounds);
    auto classify_tile = [&](int j) { return classify(qb, key_bounds[j], (j + 1) * BN > Sk, kind, window); };
    const int2 range = shown_tile_range<THREADS>(key_tiles, [&](int j) { return classify_tile(j) != HIDDEN; }, tile_range);
    const int first = range.x, last = range.y;
    for (int j = first + tid; j <= min(last, first + CLASS_CACHE - 1); j += THREADS)
        tile_classes[j - first] = classify_tile(j);
    __syncthreads();
    auto class_of = [&](int j) -> int { return j - first < CLASS_CACHE ? tile_classes[j - first] : classify_tile(j); };
    auto next_tile = [&](int j) {  // the next visible tile after j, or last + 1
        do j++; while (j <= last && class_of(j) == HIDDEN);
        return j;
    };
    auto load_k = [&](int j, int stage) {
        load_rows<D, BN, THREADS>(sK + stage * TILE_KV, k_base, kv_stride, j * BN, Sk);
    };
    auto load_v = [&](int j, int stage) {
        load_rows<D, BN, THREADS>(sV + stage * TILE_KV, v_base, kv_stride, j * BN, Sk);
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

    // Prologue: Q and K of the first visible tile; then K of the second and V of the first load while S of the
    // first computes and its softmax runs.
    u32 p[BN / 16][4];  // P_j as A fragments (keys 16kk … 16kk + 15)
    int j = first, next = first <= last ? next_tile(first) : last + 1, stage = 0;
    if (j <= last) {
        load_k(j, 0);
        cp_async_commit();
        cp_async_wait_all();
        fence_async_shared();
        __syncthreads();
        if (next <= last) load_k(next, 1);
        load_v(j, 0);
        cp_async_commit();
        float s[BN / 2], alpha[2], sum[2];
        issue_s(s, 0);
        wgmma_wait<0>();
        pin(s);
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
    // Tile j with a successor: its P in `p`, its V in V stage `stage` (loading); K of `next` in K stage stage ^ 1
    // (loading). No branch around a wgmma or a wait inside the loop: ptxas serialises the products when it cannot
    // tell which accumulators a wait has released.
    while (next <= last) {
        cp_async_wait_all();  // issued an iteration ago
        fence_async_shared();
        __syncthreads();      // every warpgroup is past S_j and P_{j−1}·V_{j−1}: their stages are free
        const int after = next_tile(next);
        if (after <= last) load_k(after, stage);  // K_j's stage
        load_v(next, stage ^ 1);                  // V_{j−1}'s stage
        cp_async_commit();

        float s[BN / 2], alpha[2], sum[2];
        issue_s(s, stage ^ 1);
        issue_pv(stage);
        wgmma_wait<1>();  // S_{j+1} has landed; P_j·V_j may still run
        pin(s);
        softmax(s, next, alpha, sum);
        wgmma_wait<0>();
        pin(acc);
        rescale(alpha, sum);
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) accumulator_to_a(p[kk], s, kk);
        j = next;
        next = after;
        stage ^= 1;
    }
    if (j <= last) {  // the last visible tile: P·V only
        cp_async_wait_all();
        fence_async_shared();
        __syncthreads();
        issue_pv(stage);
        wgmma_wait<0>();
        pin(acc);
    }
    cp_async_commit();  // with no visible tile, Q's copy is still in flight (never committed)
    cp_async_wait_all();

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

// Kernel name: attention_forward_wgmma_d<D>; arguments as attention_forward_mma_*.
#define FORWARD_WGMMA(D)                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) attention_forward_wgmma_d##D(                              \
            const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,                  \
            const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq, int Sk,       \
            int H, int Hkv, int dim, float scale, int kind, int window) {                                         \
        forward_wgmma<D, 128>(q, k, v, qpos, kpos, qdoc, kdoc, key_bounds, o, lse, Sq, Sk, H, Hkv, scale, kind,   \
                              window);                                                                            \
    }
FORWARD_WGMMA(64)
FORWARD_WGMMA(128)
