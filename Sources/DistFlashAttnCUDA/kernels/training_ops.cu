// The small kernels of a training step around the GEMMs (cuBLAS) and the attention: RMSNorm, rotary embedding,
// SwiGLU, cross-entropy, token embedding, AdamW and the fp32 → bf16 cast. Activations that feed a GEMM or the
// attention are written in bf16; statistics, gradients, master weights and optimizer moments stay fp32. Each
// kernel computes what the CPU layer of the same name computes, in the same order where it matters, and all are
// memory-bound: one pass over their data, simplicity first. Row reductions use one block of BLOCK threads per row.
// Reductions over rows (RMSNorm's weight gradient) go through per-chunk partials summed in a fixed order, so
// they are deterministic; the embedding's scatter-add uses atomics (its order varies from run to run).
typedef unsigned short bf16_t;
#define BLOCK 256
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ bf16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// Four values rounded to bf16, packed for one 8-byte store.
__device__ __forceinline__ uint2 bf16x4(float a, float b, float c, float d) {
    return make_uint2(float_to_bf16(a) | (unsigned)float_to_bf16(b) << 16, float_to_bf16(c) | (unsigned)float_to_bf16(d) << 16);
}

__device__ __forceinline__ float bf16_to_float(bf16_t b) { return __uint_as_float((unsigned)b << 16); }

// Four bf16 values from one 8-byte load.
__device__ __forceinline__ float4 float4_of_bf16x4(uint2 v) {
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                       __uint_as_float(v.y & 0xffff0000u));
}

__device__ __forceinline__ bool aligned(const void *p, unsigned bytes) { return ((unsigned long long)p & (bytes - 1)) == 0; }

// An elementwise pass over `count` elements, grid-stride: `quad(q)` for elements 4q … 4q + 3 (16-byte fp32 or
// 8-byte bf16 loads and stores: these passes are bound by memory bandwidth) when `vectors` says every pointer is
// aligned for them, then `single(i)` for the elements left (all of them otherwise).
template <typename Quad, typename Single>
__device__ __forceinline__ void elementwise(long long count, bool vectors, Quad quad, Single single) {
    const long long stride = (long long)gridDim.x * blockDim.x, first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long quads = vectors ? count / 4 : 0;
    for (long long q = first; q < quads; q += stride) quad(q);
    for (long long i = 4 * quads + first; i < count; i += stride) single(i);
}

// The sum of v over the block (every thread gets it); `scratch` holds BLOCK / 32 floats.
__device__ float block_sum(float v, float *scratch) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < BLOCK / 32; ++w) total += scratch[w];
    return total;
}

// The largest v over the block and the smallest index holding it (every thread gets both).
__device__ void block_argmax(float &v, int &index, float *scratch, int *scratch_index) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, v, offset);
        const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
        if (other > v || (other == v && other_index < index)) { v = other; index = other_index; }
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) { scratch[warp] = v; scratch_index[warp] = index; }
    __syncthreads();
    v = scratch[0]; index = scratch_index[0];
    for (int w = 1; w < BLOCK / 32; ++w) {
        if (scratch[w] > v || (scratch[w] == v && scratch_index[w] < index)) { v = scratch[w]; index = scratch_index[w]; }
    }
}

// A row's slice for one thread: the N-float groups e = N·(threadIdx.x + BLOCK·k), k < RMS_MAX_PER_THREAD / N
// (E ≤ BLOCK · RMS_MAX_PER_THREAD). N = 4 reads and writes 16-byte fp32 groups (E % 4 == 0, rows 16-byte
// aligned), N = 1 any E.
#define RMS_MAX_PER_THREAD 32
template <int N> struct Group { float v[N]; };

template <int N> __device__ __forceinline__ Group<N> load_group(const float *p) {
    Group<N> g;
    if constexpr (N == 4) {
        const float4 f = *(const float4 *)p;
        g.v[0] = f.x; g.v[1] = f.y; g.v[2] = f.z; g.v[3] = f.w;
    } else {
        for (int j = 0; j < N; ++j) g.v[j] = p[j];
    }
    return g;
}

// bf16 in (N = 4: 8-byte groups, rows 8-byte aligned).
template <int N> __device__ __forceinline__ Group<N> load_group(const bf16_t *p) {
    Group<N> g;
    if constexpr (N == 4) {
        const float4 f = float4_of_bf16x4(*(const uint2 *)p);
        g.v[0] = f.x; g.v[1] = f.y; g.v[2] = f.z; g.v[3] = f.w;
    } else {
        for (int j = 0; j < N; ++j) g.v[j] = bf16_to_float(p[j]);
    }
    return g;
}

template <int N> __device__ __forceinline__ void store_group(float *p, const Group<N> &g) {
    if constexpr (N == 4) *(float4 *)p = make_float4(g.v[0], g.v[1], g.v[2], g.v[3]);
    else for (int j = 0; j < N; ++j) p[j] = g.v[j];
}

template <int N> __device__ __forceinline__ void store_group_bf16(bf16_t *p, const Group<N> &g) {
    if constexpr (N == 4) *(uint2 *)p = bf16x4(g.v[0], g.v[1], g.v[2], g.v[3]);
    else for (int j = 0; j < N; ++j) p[j] = float_to_bf16(g.v[j]);
}

// y = w ∘ x · r (bf16), r = 1 / √(Σ x² / E + ε) per row of x [rows, E], one element a thread. Grid: rows.
extern "C" __global__ void rmsnorm_forward(const float *x, const float *w, bf16_t *y, float *r, int E, float eps) {
    __shared__ float scratch[BLOCK / 32];
    const float *row = x + (long long)blockIdx.x * E;
    float squares = 0.f;
    for (int e = threadIdx.x; e < E; e += BLOCK) squares += row[e] * row[e];
    const float rt = 1.f / sqrtf(block_sum(squares, scratch) / (float)E + eps);
    if (threadIdx.x == 0) r[blockIdx.x] = rt;
    bf16_t *out = y + (long long)blockIdx.x * E;
    for (int e = threadIdx.x; e < E; e += BLOCK) out[e] = float_to_bf16(w[e] * (row[e] * rt));
}

// The same for E % 4 == 0, E ≤ 32 · 4 · RMS_WARP_GROUPS and 16-byte aligned rows: a warp per row (no block
// barrier: a block per row spent more on its start and barriers than on its 8 KB), the row held in registers
// between the sum and the output (reading it again missed L2 once 64 rows a multiprocessor were in flight:
// 1.5× the DRAM traffic). Grid: ceil(rows / (BLOCK / 32)).
#define RMS_WARP_GROUPS 16
extern "C" __global__ void rmsnorm_forward_x4(const float *x, const float *w, bf16_t *y, float *r, int rows, int E,
                                              float eps) {
    const int lane = threadIdx.x % 32, t = blockIdx.x * (BLOCK / 32) + threadIdx.x / 32;
    if (t >= rows) return;
    const float4 *row = (const float4 *)(x + (long long)t * E);
    float4 v[RMS_WARP_GROUPS];
    float squares = 0.f;
#pragma unroll
    for (int k = 0; k < RMS_WARP_GROUPS; ++k) {
        const int q = lane + 32 * k;
        v[k] = q < E / 4 ? row[q] : make_float4(0.f, 0.f, 0.f, 0.f);
        squares += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    for (int offset = 16; offset > 0; offset >>= 1) squares += __shfl_xor_sync(0xffffffffu, squares, offset);
    const float rt = 1.f / sqrtf(squares / (float)E + eps);
    if (lane == 0) r[t] = rt;
    uint2 *out = (uint2 *)(y + (long long)t * E);
#pragma unroll
    for (int k = 0; k < RMS_WARP_GROUPS; ++k) {
        const int q = lane + 32 * k;
        if (q < E / 4) {
            const float4 weight = ((const float4 *)w)[q];
            out[q] = bf16x4(weight.x * (v[k].x * rt), weight.y * (v[k].y * rt), weight.z * (v[k].z * rt),
                            weight.w * (v[k].w * rt));
        }
    }
}

// dx += r · (w ∘ dy − x · r² · Σ(w ∘ dy ∘ x) / E) for each row, and the sum rounded to bf16 into dx_bf16 when
// given (non-null: the next GEMM's input, without a cast's pass); this block's rows' Σ dy ∘ x · r go to
// dw_partial[blockIdx.x, :] (summed over blocks by column_sums). A thread's groups: K of N floats
// (E ≤ N · BLOCK · K). HOLD keeps the row's x, dy and dx in registers from the first pass to the second (and
// loads dx with the others, before the block's sum); otherwise the second pass reads them again (from L1: this
// block read x and dy just now) — registers for 8 blocks an SM at the widest rows. Grid: ceil(rows / rows_per_block).
template <int N, int K, bool HOLD, typename Dy>
__device__ void rmsnorm_backward_rows(const float *x, const float *w, const float *r, const Dy *dy, float *dx,
                                      bf16_t *dx_bf16, float *dw_partial, int rows, int E, int rows_per_block) {
    __shared__ float scratch[BLOCK / 32];
    auto each_group = [&](auto body) {  // body(k, e) for this thread's groups of a row: k-th, at element e
#pragma unroll
        for (int k = 0; k < K; ++k) {
            const int e = N * (threadIdx.x + BLOCK * k);
            if (e < E) body(k, e);
        }
    };
    Group<N> dw[K], held_x[HOLD ? K : 1], held_dy[HOLD ? K : 1], held_dx[HOLD ? K : 1];
#pragma unroll
    for (int k = 0; k < K; ++k)
        for (int j = 0; j < N; ++j) dw[k].v[j] = 0.f;
    const int first = blockIdx.x * rows_per_block, last = min(rows, first + rows_per_block);
    for (int t = first; t < last; ++t) {
        const long long offset = (long long)t * E;
        const float rt = r[t];
        float dot = 0.f;
        each_group([&](int k, int e) {
            const Group<N> row = load_group<N>(x + offset + e), grad = load_group<N>(dy + offset + e),
                           weight = load_group<N>(w + e);
            if constexpr (HOLD) {
                held_x[k] = row;
                held_dy[k] = grad;
                held_dx[k] = load_group<N>(dx + offset + e);
            }
            for (int j = 0; j < N; ++j) {
                dot += weight.v[j] * grad.v[j] * row.v[j];
                dw[k].v[j] += grad.v[j] * row.v[j] * rt;
            }
        });
        const float c = rt * rt * block_sum(dot, scratch) / (float)E;
        each_group([&](int k, int e) {
            Group<N> row, grad, out;
            if constexpr (HOLD) {
                row = held_x[k], grad = held_dy[k], out = held_dx[k];
            } else {
                row = load_group<N>(x + offset + e), grad = load_group<N>(dy + offset + e);
                out = load_group<N>(dx + offset + e);
            }
            const Group<N> weight = load_group<N>(w + e);
            for (int j = 0; j < N; ++j) out.v[j] += rt * (weight.v[j] * grad.v[j] - row.v[j] * c);
            store_group<N>(dx + offset + e, out);
            if (dx_bf16) store_group_bf16<N>(dx_bf16 + offset + e, out);
        });
    }
    each_group([&](int k, int e) { store_group<N>(dw_partial + (long long)blockIdx.x * E + e, dw[k]); });
}

// dy in fp32, or in bf16 (`_bf16`: as the GEMM that computes it rounds it, autocast's way: half the bytes).
#define RMSNORM_BACKWARD(NAME, N, K, HOLD)                                                                          \
    extern "C" __global__ void NAME(const float *x, const float *w, const float *r, const float *dy, float *dx,   \
                                    bf16_t *dx_bf16, float *dw_partial, int rows, int E, int rows_per_block) {    \
        rmsnorm_backward_rows<N, K, HOLD>(x, w, r, dy, dx, dx_bf16, dw_partial, rows, E, rows_per_block);         \
    }                                                                                                               \
    extern "C" __global__ void NAME##_bf16(const float *x, const float *w, const float *r, const bf16_t *dy,      \
                                           float *dx, bf16_t *dx_bf16, float *dw_partial, int rows, int E,        \
                                           int rows_per_block) {                                                  \
        rmsnorm_backward_rows<N, K, HOLD>(x, w, r, dy, dx, dx_bf16, dw_partial, rows, E, rows_per_block);         \
    }
RMSNORM_BACKWARD(rmsnorm_backward, 1, RMS_MAX_PER_THREAD, false)
RMSNORM_BACKWARD(rmsnorm_backward_x4, 4, RMS_MAX_PER_THREAD / 4, false)
// E ≤ 2048 four at a time (llama-1b's width): two groups a thread, held.
RMSNORM_BACKWARD(rmsnorm_backward_x4_held, 4, 2, true)

// out[c] += Σ_r partial[r, c] (out[c] = … without `accumulate`) in a fixed order (deterministic): a block takes 32
// columns; its BLOCK / 32 row lanes each sum every (BLOCK / 32)-th row of them, then the lanes' sums are added in
// lane order. Grid: ceil(columns / 32).
extern "C" __global__ void column_sums(const float *partial, float *out, int rows, int columns, int accumulate) {
    __shared__ float sums[BLOCK / 32][32];
    const int column = threadIdx.x % 32, lane = threadIdx.x / 32, c = blockIdx.x * 32 + column;
    float total = 0.f;
    if (c < columns)
        for (int k = lane; k < rows; k += BLOCK / 32) total += partial[(long long)k * columns + c];
    sums[lane][column] = total;
    __syncthreads();
    if (lane == 0 && c < columns) {
        float sum = 0.f;
        for (int j = 0; j < BLOCK / 32; ++j) sum += sums[j][column];
        out[c] = accumulate ? out[c] + sum : sum;
    }
}

// Rotary embedding (rotate_half pairing: i with i + D/2) of x [B, n, heads, D] by the angles of each token's
// global position, tables cos, sin [n, D/2]: direction +1 forward, −1 backward; fp32 or bf16 in (the projections
// as their GEMM wrote them), bf16 out (the attention's input forward, the Q, K projections' GEMM input backward).
// One thread per (row, pair); pairs = B · n · heads · D/2 < 2³¹, so the index arithmetic stays 32-bit (a 64-bit
// division costs tens of instructions).
__device__ __forceinline__ float as_float(float x) { return x; }
__device__ __forceinline__ float as_float(bf16_t x) { return bf16_to_float(x); }

// y's rows (b, t) are y_stride elements apart and its heads start at column y_column (the columns of a wider
// matrix: the Q, K, V gradients side by side for one GEMM); y_stride = heads · D, y_column = 0 for a tensor of
// x's shape.
template <typename In>
__device__ __forceinline__ void rope(const In *x, bf16_t *y, const float *cosines, const float *sines, int n,
                                     int heads, int D, int pairs, float direction, int y_stride, int y_column) {
    const unsigned half = D / 2;
    for (unsigned p = blockIdx.x * blockDim.x + threadIdx.x; p < (unsigned)pairs; p += gridDim.x * blockDim.x) {
        const unsigned head_row = p / half, i = p - head_row * half;  // (b, t, h) flattened; the pair
        const unsigned token_row = head_row / heads, t = token_row % n;
        const float c = cosines[t * half + i], s = direction * sines[t * half + i];
        const long long base = (long long)head_row * D + i;
        const long long out = (long long)token_row * y_stride + y_column + (head_row - token_row * heads) * D + i;
        const float a = as_float(x[base]), b = as_float(x[base + half]);
        y[out] = float_to_bf16(a * c - b * s);
        y[out + half] = float_to_bf16(b * c + a * s);
    }
}

// Four consecutive pairs a thread (D % 8 == 0, every pointer 16-byte aligned): 16-byte fp32 or 8-byte bf16 loads
// and 8-byte bf16 stores — one pair a thread left the pass at half the memory bandwidth.
__device__ __forceinline__ float4 load4(const float *p) { return *(const float4 *)p; }
__device__ __forceinline__ float4 load4(const bf16_t *p) { return float4_of_bf16x4(*(const uint2 *)p); }

template <typename In>
__device__ __forceinline__ void rope_x4(const In *x, bf16_t *y, const float *cosines, const float *sines, int n,
                                        int heads, int D, int pairs, float direction, int y_stride, int y_column) {
    const unsigned half = D / 2;
    for (unsigned q = blockIdx.x * blockDim.x + threadIdx.x; q < (unsigned)pairs / 4; q += gridDim.x * blockDim.x) {
        const unsigned head_row = 4 * q / half, i = 4 * q - head_row * half;
        const unsigned token_row = head_row / heads, t = token_row % n;
        const float4 c = load4(cosines + t * half + i), s = load4(sines + t * half + i);
        const long long base = (long long)head_row * D + i;
        const long long out = (long long)token_row * y_stride + y_column + (head_row - token_row * heads) * D + i;
        const float4 a = load4(x + base), b = load4(x + base + half);
        const float4 sd = make_float4(direction * s.x, direction * s.y, direction * s.z, direction * s.w);
        *(uint2 *)(y + out) = bf16x4(a.x * c.x - b.x * sd.x, a.y * c.y - b.y * sd.y, a.z * c.z - b.z * sd.z,
                                     a.w * c.w - b.w * sd.w);
        *(uint2 *)(y + out + half) = bf16x4(b.x * c.x + a.x * sd.x, b.y * c.y + a.y * sd.y, b.z * c.z + a.z * sd.z,
                                            b.w * c.w + a.w * sd.w);
    }
}

#define ROPE_KERNELS(NAME, IN, DIRECTION)                                                                             \
    extern "C" __global__ void NAME(const IN *x, bf16_t *y, const float *cosines, const float *sines, int n,         \
                                    int heads, int D, int pairs, int y_stride, int y_column) {                       \
        rope(x, y, cosines, sines, n, heads, D, pairs, DIRECTION, y_stride, y_column);                               \
    }                                                                                                                \
    extern "C" __global__ void NAME##_x4(const IN *x, bf16_t *y, const float *cosines, const float *sines, int n,    \
                                         int heads, int D, int pairs, int y_stride, int y_column) {                  \
        rope_x4(x, y, cosines, sines, n, heads, D, pairs, DIRECTION, y_stride, y_column);                            \
    }
ROPE_KERNELS(rope_forward, float, 1.f)
ROPE_KERNELS(rope_forward_bf16, bf16_t, 1.f)
ROPE_KERNELS(rope_backward, float, -1.f)

// σ(g) = 1 / (1 + e^−g) on the multi-function unit (ex2 and rcp, ≈ 2 ulp; σ → 0 as e^−g → ∞): the results are
// rounded to bf16, and the accurate expf and division made these passes bound by instructions rather than by memory.
__device__ __forceinline__ float sigmoid(float g) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.f + __expf(-g)));
    return r;
}

__device__ __forceinline__ float swiglu(float g, float u) { return g * sigmoid(g) * u; }

// a = silu(g) · u, elementwise; g, u and a bf16 (the GEMMs' operands and results), computed in fp32.
extern "C" __global__ void swiglu_forward(const bf16_t *gate, const bf16_t *up, bf16_t *a, long long count) {
    elementwise(
        count, aligned(gate, 8) && aligned(up, 8) && aligned(a, 8),
        [&](long long q) {
            const float4 g = float4_of_bf16x4(((const uint2 *)gate)[q]), u = float4_of_bf16x4(((const uint2 *)up)[q]);
            ((uint2 *)a)[q] = bf16x4(swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w));
        },
        [&](long long i) { a[i] = float_to_bf16(swiglu(bf16_to_float(gate[i]), bf16_to_float(up[i]))); });
}

// dg = da · u · σ(g) · (1 + g · (1 − σ(g))), du = da · g · σ(g), in bf16: their only readers are the gate and up
// projections' GEMMs, so the fp32 values never need memory of their own. g, u and da come in bf16 too.
__device__ __forceinline__ float2 swiglu_grads(float g, float u, float d) {  // (dg, du)
    const float s = sigmoid(g);
    return make_float2(d * u * s * (1.f + g * (1.f - s)), d * g * s);
}

// dg and du go side by side into one matrix [rows, 2F] (dg in columns 0 … F − 1, du in F … 2F − 1): the gate
// and up projections' input gradient is then one GEMM with their stacked weights, and their weight gradients one
// more. Element i (row r = i / F of g) lands at i + r·F (dg) and i + r·F + F (du).
__device__ __forceinline__ long long side_by_side(long long i, int width) {
    // 32-bit division when the index allows (a 64-bit one costs tens of instructions)
    const long long row = i < 0x7fffffff ? (long long)((unsigned)i / (unsigned)width) : i / width;
    return i + row * width;
}

extern "C" __global__ void swiglu_backward(const bf16_t *gate, const bf16_t *up, const bf16_t *da, bf16_t *dgu,
                                           long long count, int width) {
    elementwise(
        count, width % 4 == 0 && aligned(gate, 8) && aligned(up, 8) && aligned(da, 8) && aligned(dgu, 8),
        [&](long long q) {
            const float4 g = float4_of_bf16x4(((const uint2 *)gate)[q]), u = float4_of_bf16x4(((const uint2 *)up)[q]),
                         d = float4_of_bf16x4(((const uint2 *)da)[q]);
            const float2 x = swiglu_grads(g.x, u.x, d.x), y = swiglu_grads(g.y, u.y, d.y),
                         z = swiglu_grads(g.z, u.z, d.z), w = swiglu_grads(g.w, u.w, d.w);
            const long long o = side_by_side(4 * q, width);
            *(uint2 *)(dgu + o) = bf16x4(x.x, y.x, z.x, w.x);
            *(uint2 *)(dgu + o + width) = bf16x4(x.y, y.y, z.y, w.y);
        },
        [&](long long i) {
            const float2 grads = swiglu_grads(bf16_to_float(gate[i]), bf16_to_float(up[i]), bf16_to_float(da[i]));
            const long long o = side_by_side(i, width);
            dgu[o] = float_to_bf16(grads.x);
            dgu[o + width] = float_to_bf16(grads.y);
        });
}

// The backward of a = silu(g) · u fused with its recomputation (strategies that keep no projections): a, dg, du
// from one read of g, u, da — a for the down projection's weight gradient, dg, du as swiglu_backward's.
extern "C" __global__ void swiglu_forward_backward(const bf16_t *gate, const bf16_t *up, const bf16_t *da, bf16_t *a,
                                                   bf16_t *dgu, long long count, int width) {
    elementwise(
        count,
        width % 4 == 0 && aligned(gate, 8) && aligned(up, 8) && aligned(da, 8) && aligned(a, 8) && aligned(dgu, 8),
        [&](long long q) {
            const float4 g = float4_of_bf16x4(((const uint2 *)gate)[q]), u = float4_of_bf16x4(((const uint2 *)up)[q]),
                         d = float4_of_bf16x4(((const uint2 *)da)[q]);
            const float2 x = swiglu_grads(g.x, u.x, d.x), y = swiglu_grads(g.y, u.y, d.y),
                         z = swiglu_grads(g.z, u.z, d.z), w = swiglu_grads(g.w, u.w, d.w);
            ((uint2 *)a)[q] = bf16x4(swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w));
            const long long o = side_by_side(4 * q, width);
            *(uint2 *)(dgu + o) = bf16x4(x.x, y.x, z.x, w.x);
            *(uint2 *)(dgu + o + width) = bf16x4(x.y, y.y, z.y, w.y);
        },
        [&](long long i) {
            const float g = bf16_to_float(gate[i]), u = bf16_to_float(up[i]);
            const float2 grads = swiglu_grads(g, u, bf16_to_float(da[i]));
            a[i] = float_to_bf16(swiglu(g, u));
            const long long o = side_by_side(i, width);
            dgu[o] = float_to_bf16(grads.x);
            dgu[o + width] = float_to_bf16(grads.y);
        });
}

// Per row t of logits z [T, V]: LSE, the loss LSE − z[label] (0 without a label: −1), and whether the first
// largest logit is at the label. Grid: T.
extern "C" __global__ void cross_entropy_forward(const float *z, const int *labels, float *lse, float *loss, int *correct,
                                                 int V) {
    __shared__ float scratch[BLOCK / 32];
    __shared__ int scratch_index[BLOCK / 32];
    const float *row = z + (long long)blockIdx.x * V;
    float top = NEG_INF;
    int best = 0x7fffffff;
    for (int v = threadIdx.x; v < V; v += BLOCK) {
        if (row[v] > top) { top = row[v]; best = v; }  // a thread's indices rise: the first largest stays
    }
    block_argmax(top, best, scratch, scratch_index);
    float sum = 0.f;
    for (int v = threadIdx.x; v < V; v += BLOCK) sum += expf(row[v] - top);
    const float total = block_sum(sum, scratch);
    if (threadIdx.x == 0) {
        const float l = top + logf(total);
        const int label = labels[blockIdx.x];
        lse[blockIdx.x] = l;
        loss[blockIdx.x] = label >= 0 ? l - row[label] : 0.f;
        correct[blockIdx.x] = label >= 0 && best == label;
    }
}

// dz = (e^(z − LSE) − [v = label]) · scale for labelled rows, 0 otherwise (bf16, for the output head's GEMMs).
extern "C" __global__ void cross_entropy_backward(const float *z, const int *labels, const float *lse, bf16_t *dz,
                                                  float scale, int V) {
    const float *row = z + (long long)blockIdx.x * V;
    bf16_t *out = dz + (long long)blockIdx.x * V;
    const int label = labels[blockIdx.x];
    const float l = lse[blockIdx.x];
    for (int v = threadIdx.x; v < V; v += BLOCK) {
        out[v] = label < 0 ? (bf16_t)0 : float_to_bf16(expf(row[v] - l) * scale - (v == label ? scale : 0.f));
    }
}

// y[t, :] = table[token_t, :] for T tokens, E per row; count = T · E.
extern "C" __global__ void embedding_forward(const int *tokens, const float *table, float *y, int E, long long count) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        y[i] = table[(long long)tokens[i / E] * E + i % E];
    }
}

// dtable[token_t, :] += dy[t, :] (atomics: tokens repeat).
extern "C" __global__ void embedding_backward(const int *tokens, const float *dy, float *dtable, int E, long long count) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        atomicAdd(dtable + (long long)tokens[i / E] * E + i % E, dy[i]);
    }
}

// One AdamW update of count master weights θ with gradients g · grad_scale (the clipping factor; the CPU
// scales g first, the same product) and moments m, v, in the CPU optimizer's order of operations; the bf16 copy
// of θ the GEMMs read is refreshed when given (non-null). Element i's weight decay is that of the segment holding
// it: the first of `segments` with segment_ends[k] > i (ascending ends, the last = count), so one launch updates
// every tensor of a flat buffer, matrices decayed, norms not.
// The segment holding element i: the first k with segment_ends[k] > i (binary search).
__device__ __forceinline__ int segment_of(long long i, const long long *segment_ends, int segments) {
    int low = 0, high = segments - 1;
    while (low < high) {
        const int mid = (low + high) / 2;
        if (segment_ends[mid] > i) high = mid; else low = mid + 1;
    }
    return low;
}

__device__ __forceinline__ void adamw_element(float &theta, float g, float &m, float &v, float decay, float grad_scale,
                                              float lr, float beta1, float beta2, float eps, float correction1,
                                              float correction2) {
    const float grad = grad_scale == 1.f ? g : g * grad_scale;
    m = beta1 * m + (1.f - beta1) * grad;
    v = beta2 * v + (1.f - beta2) * (grad * grad);
    const float m_hat = m / correction1, v_hat = v / correction2;
    theta = theta - lr * (m_hat / (sqrtf(v_hat) + eps) + decay * theta);
}

// Four elements a thread when every pointer is 16-byte aligned (one segment search for the four unless they
// straddle a segment's end): one element a thread and a search each left the pass at ≈ 2.3 TB/s.
extern "C" __global__ void adamw_step(float *theta, const float *g, float *m, float *v, bf16_t *theta_bf16,
                                      long long count, const long long *segment_ends, const float *segment_decay,
                                      int segments, float grad_scale, float lr, float beta1, float beta2, float eps,
                                      float correction1, float correction2) {
    auto update = [&](long long i, float decay) {
        adamw_element(theta[i], g[i], m[i], v[i], decay, grad_scale, lr, beta1, beta2, eps, correction1, correction2);
        if (theta_bf16) theta_bf16[i] = float_to_bf16(theta[i]);
    };
    elementwise(
        count, aligned(theta, 16) && aligned(g, 16) && aligned(m, 16) && aligned(v, 16) && aligned(theta_bf16, 8),
        [&](long long q) {
            const int k = segment_of(4 * q, segment_ends, segments);
            if (segment_ends[k] < 4 * q + 4) {  // straddles a segment's end
                for (long long i = 4 * q; i < 4 * q + 4; i++)
                    update(i, segment_decay[segment_of(i, segment_ends, segments)]);
                return;
            }
            const float decay = segment_decay[k];
            float4 t = ((float4 *)theta)[q], mq = ((float4 *)m)[q], vq = ((float4 *)v)[q];
            const float4 gq = ((const float4 *)g)[q];
            adamw_element(t.x, gq.x, mq.x, vq.x, decay, grad_scale, lr, beta1, beta2, eps, correction1, correction2);
            adamw_element(t.y, gq.y, mq.y, vq.y, decay, grad_scale, lr, beta1, beta2, eps, correction1, correction2);
            adamw_element(t.z, gq.z, mq.z, vq.z, decay, grad_scale, lr, beta1, beta2, eps, correction1, correction2);
            adamw_element(t.w, gq.w, mq.w, vq.w, decay, grad_scale, lr, beta1, beta2, eps, correction1, correction2);
            ((float4 *)theta)[q] = t;
            ((float4 *)m)[q] = mq;
            ((float4 *)v)[q] = vq;
            if (theta_bf16) ((uint2 *)theta_bf16)[q] = bf16x4(t.x, t.y, t.z, t.w);
        },
        [&](long long i) { update(i, segment_decay[segment_of(i, segment_ends, segments)]); });
}

// x [rows, width] fp32 rounded into columns y_column … y_column + width − 1 of y (bf16, rows y_stride apart).
extern "C" __global__ void cast_bf16_columns(const float *x, bf16_t *y, int rows, int width, int y_stride,
                                             int y_column) {
    const long long count = (long long)rows * width;
    auto out = [&](long long i) { return (long long)(i / width) * y_stride + y_column + i % width; };
    elementwise(
        count, width % 4 == 0 && y_stride % 4 == 0 && y_column % 4 == 0 && aligned(x, 16) && aligned(y, 8),
        [&](long long q) {
            const float4 v = ((const float4 *)x)[q];
            *(uint2 *)(y + out(4 * q)) = bf16x4(v.x, v.y, v.z, v.w);
        },
        [&](long long i) { y[out(i)] = float_to_bf16(x[i]); });
}

extern "C" __global__ void cast_bf16(const float *x, bf16_t *y, long long count) {
    elementwise(
        count, aligned(x, 16) && aligned(y, 8),
        [&](long long q) {
            const float4 v = ((const float4 *)x)[q];
            ((uint2 *)y)[q] = bf16x4(v.x, v.y, v.z, v.w);
        },
        [&](long long i) { y[i] = float_to_bf16(x[i]); });
}

// partial[blockIdx.x] = Σ x² over the block's grid-stride share (the host adds the partials in float64).
extern "C" __global__ void sum_squares(const float *x, float *partial, long long count) {
    __shared__ float scratch[BLOCK / 32];
    float sum = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        sum += x[i] * x[i];
    }
    const float total = block_sum(sum, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

extern "C" __global__ void fill_f32(float *x, float value, long long count) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        x[i] = value;
    }
}
