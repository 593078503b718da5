// AVX2+FMA path: 6×16 micro-kernel (12 ymm accumulators) and an 8-lane exp.
#include "isa.h"
#include <immintrin.h>
#include <math.h>

#define TARGET __attribute__((target("avx2,fma")))
enum { MR = 6, NR = 16 };

TARGET static void ukernel(int K, const float *a, long lda, const float *b, float *C, long ldc, float alpha,
                           float beta, int m, int n) {
    DFA_ROW_POINTERS(row, a, lda, m, MR);
    __m256 c0[MR], c1[MR];
    for (int i = 0; i < MR; i++) c0[i] = c1[i] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(b + k * NR), b1 = _mm256_loadu_ps(b + k * NR + 8);
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(row[i] + k);
            c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
        }
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (m == MR && n == NR) {
        for (int i = 0; i < MR; i++) {
            float *c = C + i * ldc;
            __m256 r0 = _mm256_mul_ps(va, c0[i]), r1 = _mm256_mul_ps(va, c1[i]);
            if (beta != 0.0f) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8), r1);
            }
            _mm256_storeu_ps(c, r0);
            _mm256_storeu_ps(c + 8, r1);
        }
        return;
    }
    float acc[MR * NR];
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(acc + i * NR, c0[i]);
        _mm256_storeu_ps(acc + i * NR + 8, c1[i]);
    }
    dfa_store_edge(acc, NR, C, ldc, alpha, beta, m, n);
}

/// exp(x) for 8 lanes; exactly 0 below -87.33 (and for -inf).
TARGET static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654475f);
    __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

TARGET static void online_softmax(int rows, int cols, float *S, long lds, float *m, float *l, float *rescale) {
    for (int r = 0; r < rows; r++) {
        float *s = S + r * lds;
        float mx = m[r];
        int j = 0;
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        for (; j + 8 <= cols; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
        float lanes[8];
        _mm256_storeu_ps(lanes, vmax);
        for (int q = 0; q < 8; q++) mx = lanes[q] > mx ? lanes[q] : mx;
        for (; j < cols; j++) mx = s[j] > mx ? s[j] : mx;
        if (mx == -INFINITY) {
            for (j = 0; j < cols; j++) s[j] = 0.0f;
            rescale[r] = 1.0f;
            continue;
        }
        __m256 vm = _mm256_set1_ps(mx), vsum = _mm256_setzero_ps();
        for (j = 0; j + 8 <= cols; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
            _mm256_storeu_ps(s + j, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        _mm256_storeu_ps(lanes, vsum);
        float sum = 0.0f;
        for (int q = 0; q < 8; q++) sum += lanes[q];
        for (; j < cols; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        float sc = expf(m[r] - mx);
        l[r] = l[r] * sc + sum;
        rescale[r] = sc;
        m[r] = mx;
    }
}

TARGET static void softmax_backward_t(int rows, int cols, float *St, long lds, float *dPt, long ldp,
                                      const float *lse, const float *delta) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY), inf = _mm256_set1_ps(INFINITY);
    for (int j = 0; j < rows; j++) {
        float *s = St + j * lds, *dp = dPt + j * ldp;
        int r = 0;
        for (; r + 8 <= cols; r += 8) {
            // Rows that saw no key have lse = −∞: subtracting +∞ instead makes their P exactly 0.
            __m256 vl = _mm256_loadu_ps(lse + r);
            vl = _mm256_blendv_ps(vl, inf, _mm256_cmp_ps(vl, ninf, _CMP_EQ_OQ));
            __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + r), vl));
            _mm256_storeu_ps(dp + r, _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dp + r), _mm256_loadu_ps(delta + r))));
            _mm256_storeu_ps(s + r, p);
        }
        for (; r < cols; r++) {
            float p = lse[r] == -INFINITY ? 0.0f : expf(s[r] - lse[r]);
            s[r] = p;
            dp[r] = p * (dp[r] - delta[r]);
        }
    }
}

const dfa_isa_table dfa_avx2_table = {"avx2", MR, NR, ukernel, online_softmax, softmax_backward_t};
