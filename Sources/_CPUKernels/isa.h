// Internal: the per-ISA entry points the dispatcher chooses between.
#ifndef DISTFLASH_CPU_ISA_H
#define DISTFLASH_CPU_ISA_H

/// MR×NR block of C = alpha·(a·b) + beta·C from MR rows of A (row stride lda; rows ≥ m are not read) and one
/// packed B panel (K×NR); only the top-left m×n of the block is stored (edges).
typedef void (*dfa_ukernel_fn)(int K, const float *a, long lda, const float *b, float *C, long ldc, float alpha,
                               float beta, int m, int n);
typedef void (*dfa_online_softmax_fn)(int rows, int cols, float *S, long lds, float *m, float *l, float *rescale);
typedef void (*dfa_softmax_backward_fn)(int rows, int cols, float *St, long lds, float *dPt, long ldp,
                                        const float *lse, const float *delta);

typedef struct {
    const char *name;
    int mr, nr;
    dfa_ukernel_fn ukernel;
    dfa_online_softmax_fn online_softmax;
    dfa_softmax_backward_fn softmax_backward_t;
} dfa_isa_table;

extern const dfa_isa_table dfa_generic_table;
extern const dfa_isa_table dfa_avx2_table;
extern const dfa_isa_table dfa_avx512_table;

/// Shared epilogue for partial blocks: C[i,j] = alpha·acc[i*nr + j] + beta·C[i,j] for i < m, j < n.
static inline void dfa_store_edge(const float *acc, int nr, float *C, long ldc, float alpha, float beta, int m,
                                  int n) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float v = alpha * acc[i * nr + j];
            C[i * ldc + j] = beta == 0.0f ? v : v + beta * C[i * ldc + j];
        }
}

/// Row pointers for a micro-kernel: rows past the edge repeat the last valid row, so the kernel never reads
/// outside A (their results are computed and dropped).
#define DFA_ROW_POINTERS(rows, a, lda, m, MR)                                                                     \
    const float *rows[MR];                                                                                        \
    for (int i_ = 0; i_ < (MR); i_++) rows[i_] = (a) + (long)(i_ < (m) ? i_ : (m) - 1) * (lda)

#endif
