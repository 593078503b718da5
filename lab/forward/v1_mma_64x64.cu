// Tensor-core forward (FlashAttention-2 style) for D ∈ {64, 128}: a block of 4 warps takes 64 query rows (16 per
// warp) and walks the key tiles 64 at a time; S = Q·Kᵀ and O += P·V run on mma.sync.m16n8k16 (bf16 in, fp32
// accumulate), operands fed from shared memory by ldmatrix. Same contract as attention_forward in
// attention_simt.cu: fold keys into the partial (o, lse), masks from global positions and document ids, tiles the
// mask hides entirely skipped. Self-contained (inline PTX, no headers) so NVRTC needs no include path.

typedef unsigned short bf16_t;
typedef unsigned int u32;
#define NEG_INF __int_as_float(0xff800000)

struct __align__(16) Vec16 { u32 x, y, z, w; };

__device__ __forceinline__ u32 shared_address(const void *pointer) {
    u32 address;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(pointer));
    return address;
}

__device__ __forceinline__ void ldmatrix_x4(u32 *r, const void *pointer) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(pointer)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(u32 *r, const void *pointer) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(pointer)));
}

// c (16×8 fp32) += a (16×16 bf16, row) · b (16×8 bf16, col)
__device__ __forceinline__ void mma_bf16(float *c, const u32 *a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16x2, `low` in the low half (the element with the smaller column index).
__device__ __forceinline__ u32 pack_bf16(float low, float high) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(high), "f"(low));
    return r;
}

__device__ __forceinline__ bool visible(int q, int k, int qd, int kd, int kind, int window) {
    if (qd != kd) return false;
    if (kind == 1) return true;
    return k <= q && (kind != 2 || k > q - window);
}

template <int D>
__device__ void forward_mma(const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos,
                            const int *qdoc, const int *kdoc, float *o, float *lse, int Sq, int Sk, int H, int Hkv,
                            float scale, int kind, int window) {
    constexpr int BM = 64, BN = 64, LD = D + 8;  // padded rows: ldmatrix reads hit distinct banks
    __shared__ __align__(16) bf16_t sK[BN * LD];
    __shared__ __align__(16) bf16_t sV[BN * LD];
    __shared__ int bounds[4];  // key tile: min/max position, min/max document

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
    const int row0 = blockIdx.x * BM;

    // Q tile through shared memory (sK) into registers: the A fragments of this warp's 16 rows.
    for (int idx = tid; idx < BM * D / 8; idx += blockDim.x) {
        int r = idx / (D / 8), c = idx % (D / 8), i = row0 + r;
        Vec16 value = {0, 0, 0, 0};
        if (i < Sq) value = *(const Vec16 *)(q + ((size_t)(b * Sq + i) * H + h) * D + c * 8);
        *(Vec16 *)(sK + r * LD + c * 8) = value;
    }
    __syncthreads();
    u32 qf[D / 16][4];
    for (int kk = 0; kk < D / 16; kk++)
        ldmatrix_x4(qf[kk], sK + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);

    // This thread's two rows and the running state (seeded from the partial).
    int rows[2] = {row0 + warp * 16 + g, row0 + warp * 16 + g + 8};
    int qp[2], qd[2];
    float m[2], l[2], acc[D / 8][4];
    for (int s = 0; s < 2; s++) {
        bool valid = rows[s] < Sq;
        qp[s] = valid ? qpos[rows[s]] : 0;
        qd[s] = valid ? qdoc[rows[s]] : -1;
        m[s] = valid ? lse[((size_t)b * H + h) * Sq + rows[s]] : NEG_INF;
        l[s] = m[s] == NEG_INF ? 0.f : 1.f;
    }
    for (int n = 0; n < D / 8; n++)
        for (int e = 0; e < 4; e++) {
            int i = rows[e >> 1], d = n * 8 + t * 2 + (e & 1);
            acc[n][e] = i < Sq ? o[((size_t)(b * Sq + i) * H + h) * D + d] : 0.f;
        }

    // Bounds of the block's queries, for skipping key tiles.
    int qlo = 0x7fffffff, qhi = -0x7fffffff, dlo = 0x7fffffff, dhi = -0x7fffffff;
    for (int i = row0; i < min(row0 + BM, Sq); i++) {
        qlo = min(qlo, qpos[i]); qhi = max(qhi, qpos[i]);
        dlo = min(dlo, qdoc[i]); dhi = max(dhi, qdoc[i]);
    }

    for (int key0 = 0; key0 < Sk; key0 += BN) {
        __syncthreads();  // everyone is done with the previous tile
        if (tid == 0) {
            int klo = 0x7fffffff, khi = -0x7fffffff, elo = 0x7fffffff, ehi = -0x7fffffff;
            for (int j = key0; j < min(key0 + BN, Sk); j++) {
                klo = min(klo, kpos[j]); khi = max(khi, kpos[j]);
                elo = min(elo, kdoc[j]); ehi = max(ehi, kdoc[j]);
            }
            bounds[0] = klo; bounds[1] = khi; bounds[2] = elo; bounds[3] = ehi;
        }
        __syncthreads();
        bool none = bounds[3] < dlo || bounds[2] > dhi || (kind != 1 && bounds[0] > qhi)
                    || (kind == 2 && bounds[1] <= qlo - window);
        if (none) continue;
        for (int idx = tid; idx < BN * D / 8; idx += blockDim.x) {
            int r = idx / (D / 8), c = idx % (D / 8), j = key0 + r;
            Vec16 kv = {0, 0, 0, 0}, vv = {0, 0, 0, 0};
            if (j < Sk) {
                size_t offset = ((size_t)(b * Sk + j) * Hkv + kvh) * D + c * 8;
                kv = *(const Vec16 *)(k + offset);
                vv = *(const Vec16 *)(v + offset);
            }
            *(Vec16 *)(sK + r * LD + c * 8) = kv;
            *(Vec16 *)(sV + r * LD + c * 8) = vv;
        }
        __syncthreads();

        // S = Q·Kᵀ for this warp's 16 rows × 64 keys.
        float s[BN / 8][4];
        for (int n = 0; n < BN / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
        for (int np = 0; np < BN / 16; np++)
            for (int kk = 0; kk < D / 16; kk++) {
                u32 bf[4];
                int m8 = lane >> 3;
                ldmatrix_x4(bf, sK + (np * 16 + (m8 >> 1) * 8 + (lane & 7)) * LD + kk * 16 + (m8 & 1) * 8);
                mma_bf16(s[2 * np], qf[kk], bf[0], bf[1]);
                mma_bf16(s[2 * np + 1], qf[kk], bf[2], bf[3]);
            }

        // Scale, mask, online softmax (each row is shared by the 4 threads of a quad).
        float top[2] = {m[0], m[1]};
        for (int n = 0; n < BN / 8; n++)
            for (int e = 0; e < 4; e++) {
                int r = e >> 1, j = key0 + n * 8 + t * 2 + (e & 1);
                bool ok = rows[r] < Sq && j < Sk && visible(qp[r], kpos[j], qd[r], kdoc[j], kind, window);
                s[n][e] = ok ? s[n][e] * scale : NEG_INF;
                top[r] = fmaxf(top[r], s[n][e]);
            }
        float alpha[2], sum[2] = {0.f, 0.f};
        for (int r = 0; r < 2; r++) {
            top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 1));
            top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 2));
            float base = top[r] == NEG_INF ? 0.f : top[r];
            alpha[r] = __expf(m[r] - base);
            m[r] = top[r];
            top[r] = base;
        }
        for (int n = 0; n < BN / 8; n++)
            for (int e = 0; e < 4; e++) {
                s[n][e] = __expf(s[n][e] - top[e >> 1]);
                sum[e >> 1] += s[n][e];
            }
        for (int r = 0; r < 2; r++) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            l[r] = l[r] * alpha[r] + sum[r];
        }
        for (int n = 0; n < D / 8; n++)
            for (int e = 0; e < 4; e++) acc[n][e] *= alpha[e >> 1];

        // O += P·V: P's accumulator layout is the A layout of the next mma (two 8-key tiles per 16 keys).
        for (int kk = 0; kk < BN / 16; kk++) {
            u32 pf[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                         pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            for (int dp = 0; dp < D / 16; dp++) {
                u32 bf[4];
                int m8 = lane >> 3;
                ldmatrix_x4_trans(bf, sV + (kk * 16 + (m8 & 1) * 8 + (lane & 7)) * LD + dp * 16 + (m8 >> 1) * 8);
                mma_bf16(acc[2 * dp], pf, bf[0], bf[1]);
                mma_bf16(acc[2 * dp + 1], pf, bf[2], bf[3]);
            }
        }
    }

    for (int r = 0; r < 2; r++) {
        if (rows[r] >= Sq) continue;
        float inverse = l[r] == 0.f ? 0.f : 1.f / l[r];
        for (int n = 0; n < D / 8; n++)
            for (int c = 0; c < 2; c++)
                o[((size_t)(b * Sq + rows[r]) * H + h) * D + n * 8 + t * 2 + c] = acc[n][r * 2 + c] * inverse;
        if (t == 0) lse[((size_t)b * H + h) * Sq + rows[r]] = l[r] == 0.f ? NEG_INF : m[r] + logf(l[r]);
    }
}

#define FORWARD_MMA(D)                                                                                          \
    extern "C" __global__ void __launch_bounds__(128) lab_forward_v1_d##D(                                 \
        const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos, const int *kpos, const int *qdoc,  \
        const int *kdoc, float *o, float *lse, int Sq, int Sk, int H, int Hkv, int dim, float scale, int kind,  \
        int window) {                                                                                           \
        forward_mma<D>(q, k, v, qpos, kpos, qdoc, kdoc, o, lse, Sq, Sk, H, Hkv, scale, kind, window);           \
    }
FORWARD_MMA(64)
FORWARD_MMA(128)
