// Maps an ISA to its kernels, packs B operands for its NR, and drives the micro-kernel over the blocks of C.
#include "CPUKernels.h"
#include "isa.h"
#include <stdlib.h>
#include <string.h>

int dfa_best_isa(void) {
    __builtin_cpu_init();
    int best = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) best = 2;
    const char *wanted = getenv("DISTFLASH_CPU_ISA");
    if (wanted && strcmp(wanted, "generic") == 0) best = 0;
    if (wanted && strcmp(wanted, "avx2") == 0 && best > 1) best = 1;
    return best;
}

static const dfa_isa_table *dfa_table(int isa) {
    return isa >= 2 ? &dfa_avx512_table : isa == 1 ? &dfa_avx2_table : &dfa_generic_table;
}

const char *dfa_isa_name(int isa) { return dfa_table(isa)->name; }

size_t dfa_packed_b_floats(int isa, int K, int N) {
    int nr = dfa_table(isa)->nr;
    return (size_t)((N + nr - 1) / nr) * nr * (size_t)K;
}

void dfa_pack_b(int isa, int K, int N, const float *B, long rs, long cs, float *packed) {
    int nr = dfa_table(isa)->nr;
    for (int j0 = 0; j0 < N; j0 += nr) {
        int n = N - j0 < nr ? N - j0 : nr;
        for (int k = 0; k < K; k++) {
            float *dst = packed + k * nr;
            const float *src = B + (long)k * rs + (long)j0 * cs;
            int j = 0;
            if (cs == 1) {
                memcpy(dst, src, sizeof(float) * n);
                j = n;
            } else {
                for (; j < n; j++) dst[j] = src[(long)j * cs];
            }
            for (; j < nr; j++) dst[j] = 0.0f;
        }
        packed += (size_t)nr * K;
    }
}

int dfa_panel_width(int isa) { return dfa_table(isa)->nr; }

void dfa_gemm(int isa, int M, int N, int K, float alpha, const float *A, long lda, const float *packedB,
              int packedK, float beta, float *C, long ldc) {
    const dfa_isa_table *t = dfa_table(isa);
    // Row blocks outer: the MR rows of A stay in L1 while the packed B panels stream past in one sequence.
    for (int i0 = 0; i0 < M; i0 += t->mr) {
        int m = M - i0 < t->mr ? M - i0 : t->mr;
        for (int j0 = 0; j0 < N; j0 += t->nr) {
            const float *b = packedB + (size_t)(j0 / t->nr) * t->nr * packedK;
            int n = N - j0 < t->nr ? N - j0 : t->nr;
            t->ukernel(K, A + (long)i0 * lda, lda, b, C + (long)i0 * ldc + j0, ldc, alpha, beta, m, n);
        }
    }
}

void dfa_online_softmax(int isa, int rows, int cols, float *S, long lds, float *m, float *l, float *rescale) {
    dfa_table(isa)->online_softmax(rows, cols, S, lds, m, l, rescale);
}

void dfa_softmax_backward_t(int isa, int rows, int cols, float *St, long lds, float *dPt, long ldp,
                            const float *lse, const float *delta) {
    dfa_table(isa)->softmax_backward_t(rows, cols, St, lds, dPt, ldp, lse, delta);
}

void dfa_scale(int n, float *x, float a) {
    for (int i = 0; i < n; i++) x[i] *= a;
}
