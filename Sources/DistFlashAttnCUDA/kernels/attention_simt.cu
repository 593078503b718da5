// Reference-grade SIMT attention kernels: one warp per query row (forward, dQ) or key row (dK/dV), lanes split
// the head dimension (D ≤ 256 → ≤ 8 values per lane). Correct for every mask, GQA and any size; not fast —
// tensor-core kernels replace them for speed. Inputs Q, K, V are bf16 or fp16 (raw 16-bit), everything else fp32.
// Masks are decided from global positions and document ids: kind 0 causal, 1 full, 2 causal window.

#define MAX_PER_LANE 8
typedef unsigned short bf16_t;
#define INFINITY __int_as_float(0x7f800000)  // no headers: the kernels need nothing but NVRTC

#include "input_type.cuh"

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ bool visible(int q, int k, int qd, int kd, int kind, int window) {
    if (qd != kd) return false;
    if (kind == 1) return true;
    return k <= q && (kind != 2 || k > q - window);
}

// Folds keys 0..<Sk into the partial (o, lse) of query rows 0..<Sq.
// q [B,Sq,H,D] bf16; k, v [B,Sk,Hkv,D] bf16; o [B,Sq,H,D] fp32; lse [B,H,Sq] fp32. grid (ceil(Sq/warps), H, B).
extern "C" __global__ void attention_forward(const bf16_t *q, const bf16_t *k, const bf16_t *v, const int *qpos,
                                             const int *kpos, const int *qdoc, const int *kdoc, float *o, float *lse,
                                             int Sq, int Sk, int H, int Hkv, int D, float scale, int kind,
                                             int window) {
    const int lane = threadIdx.x & 31, i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int h = blockIdx.y, b = blockIdx.z, g = h / (H / Hkv);
    if (i >= Sq) return;
    const bf16_t *qrow = q + ((size_t)(b * Sq + i) * H + h) * D;
    float *orow = o + ((size_t)(b * Sq + i) * H + h) * D;
    float *lrow = lse + ((size_t)b * H + h) * Sq + i;
    float qr[MAX_PER_LANE], acc[MAX_PER_LANE];
    for (int e = 0; e < MAX_PER_LANE; e++) {
        int d = lane + 32 * e;
        qr[e] = d < D ? input_to_float(qrow[d]) * scale : 0.f;
        acc[e] = d < D ? orow[d] : 0.f;
    }
    float m = *lrow, l = m == -INFINITY ? 0.f : 1.f;
    const int qp = qpos[i], qd = qdoc[i];
    bool touched = false;
    for (int j = 0; j < Sk; j++) {
        if (!visible(qp, kpos[j], qd, kdoc[j], kind, window)) continue;
        touched = true;
        const bf16_t *krow = k + ((size_t)(b * Sk + j) * Hkv + g) * D, *vrow = v + ((size_t)(b * Sk + j) * Hkv + g) * D;
        float s = 0.f;
        for (int e = 0; e < MAX_PER_LANE; e++) {
            int d = lane + 32 * e;
            if (d < D) s += qr[e] * input_to_float(krow[d]);
        }
        s = warp_sum(s);
        float top = fmaxf(m, s), alpha = __expf(m - top), p = __expf(s - top);
        l = l * alpha + p;
        for (int e = 0; e < MAX_PER_LANE; e++) {
            int d = lane + 32 * e;
            if (d < D) acc[e] = acc[e] * alpha + p * input_to_float(vrow[d]);
        }
        m = top;
    }
    if (!touched) return;
    for (int e = 0; e < MAX_PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < D) orow[d] = l == 0.f ? 0.f : acc[e] / l;
    }
    if (lane == 0) *lrow = l == 0.f ? -INFINITY : m + logf(l);
}

// delta[b,h,i] = Σ_d o·do. o, dout [B,S,H,D] fp32; delta [B,H,S]. grid (ceil(S/warps), H, B).
extern "C" __global__ void attention_backward_preprocess(const float *o, const float *dout, float *delta, int S,
                                                         int H, int D) {
    const int lane = threadIdx.x & 31, i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int h = blockIdx.y, b = blockIdx.z;
    if (i >= S) return;
    const size_t row = ((size_t)(b * S + i) * H + h) * D;
    float s = 0.f;
    for (int d = lane; d < D; d += 32) s += o[row + d] * dout[row + d];
    s = warp_sum(s);
    if (lane == 0) delta[((size_t)b * H + h) * S + i] = s;
}

// P and dS of pair (i, j) for head h: shared by the two backward kernels.
__device__ __forceinline__ void pair_grad(const float *qr, const float *dor, const bf16_t *krow, const bf16_t *vrow,
                                          int lane, int D, float lse_i, float delta_i, float *p_out, float *ds_out) {
    float s = 0.f, dp = 0.f;
    for (int e = 0; e < MAX_PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < D) {
            s += qr[e] * input_to_float(krow[d]);
            dp += dor[e] * input_to_float(vrow[d]);
        }
    }
    s = warp_sum(s);
    dp = warp_sum(dp);
    float p = lse_i == -INFINITY ? 0.f : __expf(s - lse_i);
    *p_out = p;
    *ds_out = p * (dp - delta_i);
}

// dK, dV += this block's part, one warp per key row j and kv head g (summing the group's query heads).
// grid (ceil(Sk/warps), Hkv, B). q scaled by `scale` inside.
extern "C" __global__ void attention_backward_dkdv(const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                                   const float *dout, const float *lse, const float *delta,
                                                   const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                                                   float *dk, float *dv, int Sq, int Sk, int H, int Hkv, int D,
                                                   float scale, int kind, int window) {
    const int lane = threadIdx.x & 31, j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int g = blockIdx.y, b = blockIdx.z, group = H / Hkv;
    if (j >= Sk) return;
    const bf16_t *krow = k + ((size_t)(b * Sk + j) * Hkv + g) * D, *vrow = v + ((size_t)(b * Sk + j) * Hkv + g) * D;
    float dka[MAX_PER_LANE] = {0}, dva[MAX_PER_LANE] = {0};
    const int kp = kpos[j], kd = kdoc[j];
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int i = 0; i < Sq; i++) {
            if (!visible(qpos[i], kp, qdoc[i], kd, kind, window)) continue;
            const size_t row = ((size_t)(b * Sq + i) * H + h) * D;
            float qr[MAX_PER_LANE], dor[MAX_PER_LANE];
            for (int e = 0; e < MAX_PER_LANE; e++) {
                int d = lane + 32 * e;
                qr[e] = d < D ? input_to_float(q[row + d]) * scale : 0.f;
                dor[e] = d < D ? dout[row + d] : 0.f;
            }
            const size_t stat = ((size_t)b * H + h) * Sq + i;
            float p, ds;
            pair_grad(qr, dor, krow, vrow, lane, D, lse[stat], delta[stat], &p, &ds);
            for (int e = 0; e < MAX_PER_LANE; e++) {
                dva[e] += p * dor[e];
                dka[e] += ds * qr[e];  // qr already holds scale·q
            }
        }
    }
    const size_t out = ((size_t)(b * Sk + j) * Hkv + g) * D;
    for (int e = 0; e < MAX_PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < D) {
            dk[out + d] += dka[e];
            dv[out + d] += dva[e];
        }
    }
}

// dQ += this block's part, one warp per query row i and head h. grid (ceil(Sq/warps), H, B).
extern "C" __global__ void attention_backward_dq(const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                                 const float *dout, const float *lse, const float *delta,
                                                 const int *qpos, const int *kpos, const int *qdoc, const int *kdoc,
                                                 float *dq, int Sq, int Sk, int H, int Hkv, int D, float scale,
                                                 int kind, int window) {
    const int lane = threadIdx.x & 31, i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int h = blockIdx.y, b = blockIdx.z, g = h / (H / Hkv);
    if (i >= Sq) return;
    const size_t row = ((size_t)(b * Sq + i) * H + h) * D, stat = ((size_t)b * H + h) * Sq + i;
    float qr[MAX_PER_LANE], dor[MAX_PER_LANE], acc[MAX_PER_LANE] = {0};
    for (int e = 0; e < MAX_PER_LANE; e++) {
        int d = lane + 32 * e;
        qr[e] = d < D ? input_to_float(q[row + d]) * scale : 0.f;
        dor[e] = d < D ? dout[row + d] : 0.f;
    }
    const float lse_i = lse[stat], delta_i = delta[stat];
    const int qp = qpos[i], qd = qdoc[i];
    for (int j = 0; j < Sk; j++) {
        if (!visible(qp, kpos[j], qd, kdoc[j], kind, window)) continue;
        const bf16_t *krow = k + ((size_t)(b * Sk + j) * Hkv + g) * D, *vrow = v + ((size_t)(b * Sk + j) * Hkv + g) * D;
        float p, ds;
        pair_grad(qr, dor, krow, vrow, lane, D, lse_i, delta_i, &p, &ds);
        for (int e = 0; e < MAX_PER_LANE; e++) {
            int d = lane + 32 * e;
            if (d < D) acc[e] += ds * scale * input_to_float(krow[d]);
        }
    }
    for (int e = 0; e < MAX_PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < D) dq[row + d] += acc[e];
    }
}
