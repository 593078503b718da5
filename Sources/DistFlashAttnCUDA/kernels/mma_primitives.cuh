// Shared pieces of the tensor-core kernels: PTX wrappers (cp.async, ldmatrix, mma.sync bf16), the mask rule, and
// the classification of a (query tile, key tile) pair from position/document bounds. Self-contained (no CUDA
// headers): the backend splices it into each kernel source in place of its #include line.
#pragma once

typedef unsigned short bf16_t;
typedef unsigned int u32;
#define NEG_INF __int_as_float(0xff800000)
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

struct __align__(16) Vec16 { u32 x, y, z, w; };

__device__ __forceinline__ u32 shared_address(const void *pointer) {
    u32 address;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(pointer));
    return address;
}

// 16 bytes global → shared without passing through registers; `valid == false` writes zeros.
__device__ __forceinline__ void cp_async16(void *destination, const void *source, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :: "r"(shared_address(destination)), "l"(source), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(u32 *r, const void *pointer) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(pointer)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(u32 *r, const void *pointer) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(pointer)));
}

// The 16-bit input type: bf16, or fp16 when the backend compiles the source with DISTFLASH_INPUT_F16 defined
// (one module per input type; kernel names are the same in both).
#ifdef DISTFLASH_INPUT_F16
#define MMA_INPUT_TYPE "f16"
#define CVT_INPUT_X2 "cvt.rn.f16x2.f32"
#else
#define MMA_INPUT_TYPE "bf16"
#define CVT_INPUT_X2 "cvt.rn.bf16x2.f32"
#endif

// c (16×8 fp32) += a (16×16 input type, row) · b (16×8 input type, col)
__device__ __forceinline__ void mma_input(float *c, const u32 *a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_INPUT_TYPE "." MMA_INPUT_TYPE ".f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a pair of the input type, `low` in the low half (the element with the smaller column index).
__device__ __forceinline__ u32 pack_input(float low, float high) {
    u32 r;
    asm(CVT_INPUT_X2 " %0, %1, %2;" : "=r"(r) : "f"(high), "f"(low));
    return r;
}

__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ bool visible(int q, int k, int qd, int kd, int kind, int window) {
    if (qd != kd) return false;
    if (kind == 1) return true;
    return k <= q && (kind != 2 || k > q - window);
}

// Position and document bounds of `tile` consecutive rows: (min pos, max pos, min doc, max doc).
extern "C" __global__ void attention_tile_bounds(const int *pos, const int *doc, int n, int tile, int4 *bounds) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t * tile >= n) return;
    int4 b = make_int4(0x7fffffff, -0x7fffffff, 0x7fffffff, -0x7fffffff);
    for (int i = t * tile; i < min(n, (t + 1) * tile); i++) {
        b.x = min(b.x, pos[i]); b.y = max(b.y, pos[i]);
        b.z = min(b.z, doc[i]); b.w = max(b.w, doc[i]);
    }
    bounds[t] = b;
}

// Bounds (as above) of rows row0 … min(row0 + rows, n) − 1, reduced by the block's THREADS threads in shared
// `bounds`. Every thread of the block calls it; it begins and ends with a barrier.
template <int THREADS>
__device__ __forceinline__ int4 block_row_bounds(const int *pos, const int *doc, int row0, int rows, int n,
                                                 int4 &bounds) {
    if (threadIdx.x == 0) bounds = make_int4(0x7fffffff, -0x7fffffff, 0x7fffffff, -0x7fffffff);
    __syncthreads();
    for (int i = row0 + threadIdx.x; i < min(row0 + rows, n); i += THREADS) {
        atomicMin(&bounds.x, pos[i]); atomicMax(&bounds.y, pos[i]);
        atomicMin(&bounds.z, doc[i]); atomicMax(&bounds.w, doc[i]);
    }
    __syncthreads();
    return bounds;
}

// The first and last of tiles 0 … tiles − 1 that `shown(i)` accepts (x > y: none), found by the block's THREADS
// threads in shared `range`. Every thread of the block calls it; it begins and ends with a barrier.
template <int THREADS, class Shown>
__device__ __forceinline__ int2 shown_tile_range(int tiles, Shown shown, int (&range)[2]) {
    if (threadIdx.x == 0) {
        range[0] = tiles;
        range[1] = -1;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < tiles; i += THREADS)
        if (shown(i)) {
            atomicMin(&range[0], i);
            atomicMax(&range[1], i);
        }
    __syncthreads();
    return make_int2(range[0], range[1]);
}

// (o, lse) ⊕= one query row's block result (O / l, LSE m·log2(e)-scaled + log l), in fp32: the two normalised
// partials weighted by their exponential sums. `row`: this lane's columns of the row in o (offset by 2t); `lse_at`
// its lse (natural log; −∞: no partial yet); `block_lse` base 2; `value(c, e)` the unnormalised O of column
// 8c + 2t + e. The row's quad of lanes calls it together (no lane of it skips while another folds).
template <int D, class Value>
__device__ __forceinline__ void fold_into_partial(float *row, float *lse_at, float block_lse, float l, int t, int lane,
                                                  Value value) {
    const float old = *lse_at;  // natural log
    const float old2 = old == NEG_INF ? NEG_INF : old * LOG2E;
    const float top = fmaxf(old2, block_lse);
    const float w_old = exp2_approx(old2 - top), w_new = exp2_approx(block_lse - top);
    const float total = w_old + w_new;
    const float f_new = w_new / (total * l), f_old = w_old / total;
#pragma unroll
    for (int c = 0; c < D / 8; c++) {
        const float2 before = old == NEG_INF ? make_float2(0.f, 0.f) : *(float2 *)(row + c * 8);
        *(float2 *)(row + c * 8) = make_float2(f_old * before.x + f_new * value(c, 0), f_old * before.y + f_new * value(c, 1));
    }
    __syncwarp(0xfu << (lane & 28));  // the quad has read lse before one of its lanes writes it
    if (t == 0) *lse_at = (top + __log2f(total)) * LN2;
}

enum TileClass { HIDDEN = 0, PARTIAL = 1, VISIBLE = 2 };

// How a key tile with bounds `k` relates to query rows with bounds `q`.
__device__ __forceinline__ int classify(int4 q, int4 k, bool ragged, int kind, int window) {
    if (k.w < q.z || k.z > q.w) return HIDDEN;
    if (kind != 1 && k.x > q.y) return HIDDEN;
    if (kind == 2 && k.y <= q.x - window) return HIDDEN;
    bool one_document = q.z == q.w && k.z == k.w && q.z == k.z;
    bool inside = kind == 1 || (k.y <= q.x && (kind != 2 || k.x > q.y - window));
    return one_document && inside && !ragged ? VISIBLE : PARTIAL;
}
