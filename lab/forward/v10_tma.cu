// Candidate forward (lab), v10: the promoted wgmma forward (v9) with its loads on the Tensor Memory Accelerator and
// a warpgroup of its own. v9 spends every thread on the loads: each of the 256 threads computes addresses and
// issues 16 cp.async per key tile, and a block-wide barrier per tile holds the two warpgroups in lockstep. Here
// (FA3's layout) a third warpgroup produces: one of its threads issues per key tile two TMA copies for K and two
// for V (one per 64-column panel; TMA writes the 128-byte swizzle itself and fills rows past the end with zeros),
// each completing on a "full" mbarrier; the two consumer warpgroups (64 query rows each, v9's math unchanged)
// wait on those, and release a stage by arriving on its "empty" mbarrier once their product that read it has
// completed (a lane per warp), which the producer waits for before refilling it. No block-wide barrier after
// the set-up, so each consumer warpgroup runs at its own pace and their softmax and products interleave. The
// producer gives its registers back (setmaxnreg 24) and the consumers take 240.
// Tensor maps (made on the host, cuTensorMapEncodeTiled): Q, K, V as 4-D tensors (D, heads, S, B) of 16-bit
// elements, boxes (64, 1, 128, 1), 128-byte swizzle, out-of-bounds rows zero.
// Predicted: 1.1–1.3× v9 at D = 128 (the loads' issue slots and the per-tile barrier off the consumers' path).
// v11 adds FA3's ping-pong: the two consumer warpgroups take turns to issue their products (named barriers), so
// one's softmax overlaps the other's products. Predicted: +5–10 % over v10.
// Expects the kernels' wgmma_primitives.cuh already included.

// A CUtensorMap (opaque, 128 bytes, 64-byte aligned), passed by value as a __grid_constant__ kernel parameter.
struct __align__(64) TensorMap { unsigned long long opaque[16]; };

__device__ __forceinline__ void mbar_init(u64 *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(shared_address(bar)), "r"(count) : "memory");
}
// The producer's arrival, announcing `bytes` of TMA transactions that complete the phase.
__device__ __forceinline__ void mbar_expect(u64 *bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(shared_address(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64 *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(shared_address(bar)) : "memory");
}
// Spins until the phase with parity `parity` of `bar` has completed.
__device__ __forceinline__ void mbar_wait(u64 *bar, unsigned parity) {
    asm volatile("{\n.reg .pred done;\nwait_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra wait_%=;\n}\n" :: "r"(shared_address(bar)), "r"(parity) : "memory");
}
// TMA: the box at (c0, c1, c2, c3) of `map` into shared memory at `destination`, completing on `bar`.
__device__ __forceinline__ void tma_load_4d(void *destination, const TensorMap *map, int c0, int c1, int c2, int c3,
                                            u64 *bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];"
                 :: "r"(shared_address(destination)), "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
                    "r"(shared_address(bar)) : "memory");
}
template <int REGISTERS> __device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(REGISTERS));
}
template <int REGISTERS> __device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(REGISTERS));
}

// Inlined into each kernel: setmaxnreg takes effect only under the kernel's own register cap.
template <int D, int BN, bool PINGPONG>
__device__ __forceinline__ void forward_tma(const TensorMap *map_q, const TensorMap *map_k, const TensorMap *map_v, const int *qpos,
                            const int *kpos, const int *qdoc, const int *kdoc, const int4 *key_bounds, float *o,
                            float *lse, int Sq, int Sk, int H, int Hkv, float scale, int kind, int window) {
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
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    const int4 qb = block_row_bounds<THREADS>(qpos, qdoc, row0, BM, Sq, query_bounds);
    auto classify_tile = [&](int j) { return classify(qb, key_bounds[j], (j + 1) * BN > Sk, kind, window); };
    const int2 range = shown_tile_range<THREADS>(key_tiles, [&](int j) { return classify_tile(j) != HIDDEN; }, tile_range);
    const int first = range.x, last = range.y;
    for (int j = first + tid; j <= min(last, first + CLASS_CACHE - 1); j += THREADS) tile_classes[j - first] = classify_tile(j);
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
    // PINGPONG (v11): the consumers take turns to issue their products (named barrier 1 + group is this
    // warpgroup's turn; passing it arrives on the other's), so one's softmax runs while the other's products do.
    // Warpgroup 1 hands the first turn to warpgroup 0; warpgroup 0 takes one turn more at the end, so every
    // arrival is matched.
    auto take_turn = [&] {
        if constexpr (PINGPONG) asm volatile("bar.sync %0, 256;" :: "r"(1 + group) : "memory");
    };
    auto pass_turn = [&] {
        if constexpr (PINGPONG) asm volatile("bar.arrive %0, 256;" :: "r"(2 - group) : "memory");
    };
    if (PINGPONG && group == 1 && first <= last) pass_turn();

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
        take_turn();
        issue_s(s, 0);
        pass_turn();
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
        take_turn();
        issue_s(s, (n + 1) & 1);
        issue_pv(n & 1);
        pass_turn();
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
        take_turn();
        issue_pv(n & 1);
        pass_turn();
        wgmma_wait<0>();
        pin(acc);
        if (PINGPONG && group == 0) take_turn();  // matches warpgroup 1's last pass
    }

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

// Kernel names lab_forward_v10_d<D>, lab_forward_v11_d<D> (PINGPONG); 384 threads; dynamic shared memory
// (128 + 4·128)·D·2 + 1024 bytes.
#define FORWARD_CANDIDATE(NAME, D, PINGPONG)                                                                                \
    extern "C" __global__ void __launch_bounds__(384, 1) NAME(                                                    \
            const __grid_constant__ TensorMap map_q, const __grid_constant__ TensorMap map_k,                     \
            const __grid_constant__ TensorMap map_v, const int *qpos, const int *kpos, const int *qdoc,           \
            const int *kdoc, const int4 *key_bounds, float *o, float *lse, int Sq, int Sk, int H, int Hkv,        \
            int dim, float scale, int kind, int window) {                                                         \
        forward_tma<D, 128, PINGPONG>(&map_q, &map_k, &map_v, qpos, kpos, qdoc, kdoc, key_bounds, o, lse, Sq, Sk, H, Hkv,   \
                            scale, kind, window);                                                                 \
    }
FORWARD_CANDIDATE(lab_forward_v10_d64, 64, false)
FORWARD_CANDIDATE(lab_forward_v10_d128, 128, false)
FORWARD_CANDIDATE(lab_forward_v11_d64, 64, true)
FORWARD_CANDIDATE(lab_forward_v11_d128, 128, true)
