// Innermost CPU micro-kernels for the attention tiles.
//
// Everything above this layer (tiling, online softmax, masks, threads) is Swift. What lives here is the part
// Swift cannot express portably: wide-vector code selected at run time (AVX-512, AVX2+FMA, or a generic path),
// so that one binary built for baseline x86-64 still uses the widest vectors of the machine it runs on.
//
// GEMM: A is a plain row-major matrix (its rows are broadcast one scalar at a time, so it needs no packing);
// B is "packed" as panels of NR columns, each stored k-major and zero-padded, so the micro-kernel streams
// contiguous vectors. NR belongs to the selected ISA: size buffers with dfa_packed_b_floats.
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

/// Floats needed to pack a K×N B operand.
size_t dfa_packed_b_floats(int isa, int K, int N);
/// Columns per packed B panel (NR).
int dfa_panel_width(int isa);

/// Packs B[K×N], element (k, j) at B[k*rs + j*cs], into NR-column panels.
void dfa_pack_b(int isa, int K, int N, const float *B, long rs, long cs, float *packed);

/// C[M×N] = alpha · A·B + beta · C. A row-major with row stride lda (only its first M rows are read),
/// C row-major with row stride ldc; beta == 0 never reads C (it may hold garbage or NaN).
/// B is packed with `packedK` rows; to use its rows k0 ..< k0+K pass packedB + k0·NR (and its first N columns).
void dfa_gemm(int isa, int M, int N, int K, float alpha, const float *A, long lda, const float *packedB,
              int packedK, float beta, float *C, long ldc);

/// One online-softmax step for `rows` rows of a score tile S (row stride lds, `cols` valid columns).
/// For each row r: m' = max(m[r], max_j S[r,j]); S[r,j] = exp(S[r,j] - m');
/// l[r] = l[r]·exp(m[r] - m') + Σ_j S[r,j]; rescale[r] = exp(m[r] - m'); m[r] = m'.
/// Rows that are still entirely -inf keep m = -inf, get S = 0, rescale = 1.
void dfa_online_softmax(int isa, int rows, int cols, float *S, long lds, float *m, float *l, float *rescale);

/// Backward softmax on a *transposed* tile (rows = keys, columns = queries):
/// Pᵀ[j,r] = exp(Sᵀ[j,r] − lse[r]) (0 where lse[r] is −∞) written over Sᵀ;
/// dSᵀ[j,r] = Pᵀ[j,r] · (dPᵀ[j,r] − delta[r]) written over dPᵀ.
void dfa_softmax_backward_t(int isa, int rows, int cols, float *St, long lds, float *dPt, long ldp,
                            const float *lse, const float *delta);

/// x[0..<n] *= a.
void dfa_scale(int n, float *x, float a);

#ifdef __cplusplus
}
#endif

#endif
