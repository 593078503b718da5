// AVX-512F path: 8×32 micro-kernel (16 zmm accumulators) and a 16-lane exp.
#include "isa.h"
#include <immintrin.h>
#include <math.h>

#define TARGET __attribute__((target("avx512f,avx512dq,fma")))
enum { MR = 8, NR = 32 };

TARGET static void ukernel(int K, const float *a, long lda, const float *b, float *C, long ldc, float alpha,
                           float beta, int m, int n) {
    DFA_ROW_POINTERS(row, a, lda, m, MR);
    __m512 c0[MR], c1[MR];
    for (int i = 0; i < MR; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(b + k * NR), b1 = _mm512_loadu_ps(b + k * NR + 16);
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(row[i][k]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (m == MR && n == NR) {
        for (int i = 0; i < MR; i++) {
            float *c = C + i * ldc;
            __m512 r0 = _mm512_mul_ps(va, c0[i]), r1 = _mm512_mul_ps(va, c1[i]);
            if (beta != 0.0f) {
                r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c + 16), r1);
            }
            _mm512_storeu_ps(c, r0);
            _mm512_storeu_ps(c + 16, r1);
        }
        return;
    }
    float acc[MR * NR];
    for (int i = 0; i < MR; i++) {
        _mm512_storeu_ps(acc + i * NR, c0[i]);
        _mm512_storeu_ps(acc + i * NR + 16, c1[i]);
    }
    dfa_store_edge(acc, NR, C, ldc, alpha, beta, m, n);
}

/// exp(x) for 16 lanes, ~1 ulp on the range that matters; exactly 0 below -87.33 (and for -inf).
TARGET static inline __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.33654475f);
    __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

TARGET static inline __mmask16 tail_mask(int remaining) {
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}

TARGET static void online_softmax(int rows, int cols, float *S, long lds, float *m, float *l, float *rescale) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int r = 0; r < rows; r++) {
        float *s = S + r * lds;
        __m512 vmax = ninf;
        for (int j = 0; j < cols; j += 16)
            vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(ninf, tail_mask(cols - j), s + j));
        float mx = _mm512_reduce_max_ps(vmax);
        mx = m[r] > mx ? m[r] : mx;
        if (mx == -INFINITY) {
            for (int j = 0; j < cols; j++) s[j] = 0.0f;
            rescale[r] = 1.0f;
            continue;
        }
        __m512 vm = _mm512_set1_ps(mx), vsum = _mm512_setzero_ps();
        for (int j = 0; j < cols; j += 16) {
            __mmask16 k = tail_mask(cols - j);
            __m512 e = exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(ninf, k, s + j), vm));
            _mm512_mask_storeu_ps(s + j, k, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        float sc = expf(m[r] - mx);
        l[r] = l[r] * sc + _mm512_reduce_add_ps(vsum);
        rescale[r] = sc;
        m[r] = mx;
    }
}

TARGET static void softmax_backward_t(int rows, int cols, float *St, long lds, float *dPt, long ldp,
                                      const float *lse, const float *delta) {
    const __m512 inf = _mm512_set1_ps(INFINITY);
    for (int j = 0; j < rows; j++) {
        float *s = St + j * lds, *dp = dPt + j * ldp;
        for (int r = 0; r < cols; r += 16) {
            __mmask16 k = tail_mask(cols - r);
            // Rows that saw no key have lse = −∞: subtracting +∞ instead makes their P exactly 0.
            __m512 vl = _mm512_maskz_loadu_ps(k, lse + r);
            vl = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(vl, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ), vl, inf);
            __m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + r), vl));
            __m512 g = _mm512_mul_ps(p, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp + r), _mm512_maskz_loadu_ps(k, delta + r)));
            _mm512_mask_storeu_ps(s + r, k, p);
            _mm512_mask_storeu_ps(dp + r, k, g);
        }
    }
}

const dfa_isa_table dfa_avx512_table = {"avx512", MR, NR, ukernel, online_softmax, softmax_backward_t};
