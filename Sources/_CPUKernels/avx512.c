// AVX-512F path: 8×32 micro-kernel (16 zmm accumulators) and a 16-lane exp.
#include "isa.h"
#include <immintrin.h>
#include <math.h>

#define TARGET __attribute__((target("avx512f,avx512dq,fma")))
enum { MR = 12, NR = 32 };

/// ROWS×32 block: ROWS·2 zmm accumulators, one broadcast of A per row and k. Instantiated for 4, 8 and 12 rows so
/// edge blocks do only the rows they need.
#define DFA_AVX512_BLOCK(ROWS)                                                                                    \
    TARGET static void block##ROWS(int K, const float *const *row, const float *b, float *C, long ldc,          \
                                   float alpha, float beta, int m, int n) {                                     \
        __m512 c0[ROWS], c1[ROWS];                                                                                \
        for (int i = 0; i < ROWS; i++) c0[i] = c1[i] = _mm512_setzero_ps();                                       \
        for (int k = 0; k < K; k++) {                                                                             \
            __m512 b0 = _mm512_loadu_ps(b + k * NR), b1 = _mm512_loadu_ps(b + k * NR + 16);                       \
            for (int i = 0; i < ROWS; i++) {                                                                      \
                __m512 ai = _mm512_set1_ps(row[i][k]);                                                            \
                c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);                                                           \
                c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);                                                           \
            }                                                                                                     \
        }                                                                                                         \
        store(c0, c1, ROWS, C, ldc, alpha, beta, m, n);                                                           \
    }

/// Writes the top-left m×n of a rows×32 accumulator block into C (alpha·acc + beta·C; beta = 0 never reads C).
TARGET static inline void store(const __m512 *c0, const __m512 *c1, int rows, float *C, long ldc, float alpha,
                                float beta, int m, int n) {
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 k0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1u);
    __mmask16 k1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1u);
    for (int i = 0; i < rows && i < m; i++) {
        float *c = C + i * ldc;
        __m512 r0 = _mm512_mul_ps(va, c0[i]), r1 = _mm512_mul_ps(va, c1[i]);
        if (beta != 0.0f) {
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, c), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, c + 16), r1);
        }
        _mm512_mask_storeu_ps(c, k0, r0);
        _mm512_mask_storeu_ps(c + 16, k1, r1);
    }
}

DFA_AVX512_BLOCK(4)
DFA_AVX512_BLOCK(8)
DFA_AVX512_BLOCK(12)

TARGET static void ukernel(int K, const float *a, long lda, const float *b, float *C, long ldc, float alpha,
                           float beta, int m, int n) {
    DFA_ROW_POINTERS(row, a, lda, m, MR);
    if (m <= 4) block4(K, row, b, C, ldc, alpha, beta, m, n);
    else if (m <= 8) block8(K, row, b, C, ldc, alpha, beta, m, n);
    else block12(K, row, b, C, ldc, alpha, beta, m, n);
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
