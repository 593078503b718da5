// Portable path: plain loops the compiler may vectorise for the baseline ISA. Also the readable statement of
// what the wide paths compute.
#include "isa.h"
#include <math.h>

enum { MR = 4, NR = 16 };

static void ukernel(int K, const float *a, long lda, const float *b, float *C, long ldc, float alpha, float beta,
                    int m, int n) {
    DFA_ROW_POINTERS(row, a, lda, m, MR);
    float acc[MR * NR] = {0};
    for (int k = 0; k < K; k++)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i * NR + j] += row[i][k] * b[k * NR + j];
    dfa_store_edge(acc, NR, C, ldc, alpha, beta, m, n);
}

static void online_softmax(int rows, int cols, float *S, long lds, float *m, float *l, float *rescale) {
    for (int r = 0; r < rows; r++) {
        float *s = S + r * lds;
        float mx = m[r];
        for (int j = 0; j < cols; j++) mx = s[j] > mx ? s[j] : mx;
        if (mx == -INFINITY) {
            for (int j = 0; j < cols; j++) s[j] = 0.0f;
            rescale[r] = 1.0f;
            continue;
        }
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        float sc = expf(m[r] - mx);
        l[r] = l[r] * sc + sum;
        rescale[r] = sc;
        m[r] = mx;
    }
}

static void softmax_backward_t(int rows, int cols, float *St, long lds, float *dPt, long ldp, const float *lse,
                               const float *delta) {
    for (int j = 0; j < rows; j++) {
        float *s = St + j * lds, *dp = dPt + j * ldp;
        for (int r = 0; r < cols; r++) {
            float p = lse[r] == -INFINITY ? 0.0f : expf(s[r] - lse[r]);
            s[r] = p;
            dp[r] = p * (dp[r] - delta[r]);
        }
    }
}

const dfa_isa_table dfa_generic_table = {"generic", MR, NR, ukernel, online_softmax, softmax_backward_t};
