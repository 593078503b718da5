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
// Probes 2 and 3 of `lab/run.sh wgmma` confirmed the transposed descriptor (LBO along K) and A from registers.
// Expects the kernels' wgmma_primitives.cuh already included.

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

__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// Two warpgroups, 64 query rows each (BM = 128); key tiles of BN; K and V double-buffered by cp.async, the tile
// after next loading while this one computes. Per tile and warpgroup: S = Q·Kᵀ (D/16 wgmma from shared memory),
// mask and online softmax on the accumulators, then O += P·V (BN/16 wgmma, P from registers, V read transposed).
// The mask rule, tile classes and the (o, lse) fold are the mainline's.
template <int D, int BN>
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
        wgmma_wait<0>();

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
            wgmma_rs<D>(acc, p[kk], smem_descriptor(tV + kk * 32 * D, 16 * D, 128));
        wgmma_commit();
        wgmma_wait<0>();

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

// Kernel name: lab_forward_v6_d<D>_n<BN>[_n64]; 256 threads; dynamic shared memory (128 + 4·BN)·D·2 bytes.
#define FORWARD_V6(D, BN, SUFFIX)                                                                        \
    extern "C" __global__ void __launch_bounds__(256) lab_forward_v6_d##D##_n##BN##SUFFIX(                         \
            const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,                  \
            const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq, int Sk,       \
            int H, int Hkv, int dim, float scale, int kind, int window) {                                         \
        forward_wgmma<D, BN>(q, k, v, qpos, kpos, qdoc, kdoc, key_bounds, o, lse, Sq, Sk, H, Hkv, scale, \
                                      kind, window);                                                              \
    }
FORWARD_V6(64, 128, )
FORWARD_V6(128, 128, )
FORWARD_V6(128, 64, _n64)
