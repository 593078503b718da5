// Innermost CPU micro-kernels for the attention tiles.
//
// Everything above this layer (tiling, online softmax, masks, threads) is Swift. What lives here is the part
// Swift cannot express portably: wide-vector code selected at run time (AVX-512, AVX2+FMA, or a generic path),
// so that one binary built for baseline x86-64 still uses the widest vectors of the machine it runs on.
//
// GEMM operands are "packed": A as panels of MR rows, B as panels of NR columns, each panel stored k-major and
// zero-padded, so the micro-kernel streams contiguous memory. MR/NR belong to the selected ISA; always size
// buffers with dfa_packed_a_floats / dfa_packed_b_floats.
#ifndef DISTFLASH_CPU_KERNELS_H
#define DISTFLASH_CPU_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction sets: 0 generic, 1 AVX2+FMA, 2 AVX-512F. Every kernel takes the one to use as its first
/// argument, so callers (and tests) can pick any path the machine supports.
/// The widest this CPU supports, lowered by the environment variable DISTFLASH_CPU_ISA=generic|avx2.
int dfa_best_isa(void);
const char *dfa_isa_name(int isa);

/// Floats needed to pack an M×K A operand / a K×N B operand.
size_t dfa_packed_a_floats(int isa, int M, int K);
size_t dfa_packed_b_floats(int isa, int K, int N);

/// Packs A[M×K], element (i, k) at A[i*rs + k*cs], into MR-row panels.
void dfa_pack_a(int isa, int M, int K, const float *A, long rs, long cs, float *packed);
/// Packs B[K×N], element (k, j) at B[k*rs + j*cs], into NR-column panels.
void dfa_pack_b(int isa, int K, int N, const float *B, long rs, long cs, float *packed);

/// C[M×N] = alpha · A·B + beta · C, with A and B packed. C row-major with row stride ldc.
/// beta == 0 never reads C (it may hold garbage or NaN).
void dfa_gemm_packed(int isa, int M, int N, int K, float alpha, const float *packedA, const float *packedB,
                     float beta, float *C, long ldc);

/// One online-softmax step for `rows` rows of a score tile S (row stride lds, `cols` valid columns).
/// For each row r: m' = max(m[r], max_j S[r,j]); S[r,j] = exp(S[r,j] - m');
/// l[r] = l[r]·exp(m[r] - m') + Σ_j S[r,j]; rescale[r] = exp(m[r] - m'); m[r] = m'.
/// Rows that are still entirely -inf keep m = -inf, get S = 0, rescale = 1.
void dfa_online_softmax(int isa, int rows, int cols, float *S, long lds, float *m, float *l, float *rescale);

/// Backward softmax for a tile: P = exp(S - lse[r]) (0 where lse is -inf) written over S;
/// dS = P ∘ (dP - delta[r]) written over dP.
void dfa_softmax_backward(int isa, int rows, int cols, float *S, long lds, float *dP, long ldp,
                          const float *lse, const float *delta);

/// x[0..<n] *= a.
void dfa_scale(int n, float *x, float a);

#ifdef __cplusplus
}
#endif

#endif
