// tinylm/backend/gemv_f32.hpp: the products of gemv.hpp for f32 weights with AVX-512 or AVX2, for one row of
// activations or several (sequences decoded together): c_ij = alpha * a_i . b_j + beta * c_ij.
//
// Each (row of a, row of c) has one accumulator of 16 (AVX-512) or 8 (AVX2) lanes, summed over k in order and then
// across its lanes, with the weights past the last full register added one by one: so a row is summed the same
// way whichever other rows of a ran beside it, and several sequences decoded together get the logits each would
// get alone. The weights are loaded once for the M rows of a, R rows of c sharing the loads of a.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/gemv_rows.hpp>
#include <tinylm/core/simd.hpp>

#if defined(TINYLM_AVX512_CLONES) || defined(TINYLM_AVX2_CLONES)
#include <immintrin.h>
#endif

namespace tl::detail {

// a . b over [from, k), one weight at a time after `sum` (what a kernel summed before them).
inline float gemv_f32_row_rest(const float* a, const float* b, index_t from, index_t k, float sum) {
    for (index_t p = from; p < k; ++p)
        sum += a[p] * b[p];
    return sum;
}

// The weights a kernel asks for ahead of its loads: 512 floats (2 KB) further along each of its rows, or, near a
// row's end, the next rows' weights (the next call's) as far in. Asked for early, more of them are in flight from
// memory than the loads alone keep (config B's 1536 x 512 products, 2 rows of a: 50 -> 40 us). Past the last rows
// of the weights it asks for addresses beyond them: a prefetch never faults.
inline constexpr index_t gemv_f32_ahead = 512;
template <int R>
inline const float* gemv_f32_prefetch_base(const float* b, index_t ldb, index_t k, index_t p) {
    return p + gemv_f32_ahead < k ? b + p + gemv_f32_ahead : b + R * ldb + (p + gemv_f32_ahead - k);
}

#ifdef TINYLM_AVX512_CLONES
// Rows [j, j + R) of c for the M rows of a from i0.
template <int R, int M>
TINYLM_TARGET_AVX512 void gemv_f32_rows_avx512(const gemm_args<float>& g, index_t j, index_t i0) {
    const index_t k = g.k, ldb = g.ldb, lda = g.lda, full = k - k % 16;
    const float* a = g.a + i0 * lda;
    const float* b = g.b + j * ldb;
    __m512 s[M][R];
    for (int i = 0; i < M; ++i)
        for (int r = 0; r < R; ++r)
            s[i][r] = _mm512_setzero_ps();
    for (index_t p = 0; p < full; p += 16) {
        __m512 x[M];
        for (int i = 0; i < M; ++i)
            x[i] = _mm512_loadu_ps(a + i * lda + p);
        const float* ahead = gemv_f32_prefetch_base<R>(b, ldb, k, p);
        for (int r = 0; r < R; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(ahead + r * ldb), _MM_HINT_T0);
            __m512 w = _mm512_loadu_ps(b + r * ldb + p);
            // Into a register once: folded into each of the M FMAs, the same weights were loaded M times, the load
            // queue filled with them, and fewer weights were in flight from memory (2 rows ran at 0.8x).
            if constexpr (M > 1) asm("" : "+v"(w));
            for (int i = 0; i < M; ++i)
                s[i][r] = _mm512_fmadd_ps(x[i], w, s[i][r]);
        }
    }
    for (int i = 0; i < M; ++i) {
        gemm_args<float> one = g;
        one.c = g.c + (i0 + i) * g.ldc;
        for (int r = 0; r < R; ++r)
            gemv_store(one, j + r, gemv_f32_row_rest(a + i * lda, b + r * ldb, full, k, gemv_sum_avx512(s[i][r])));
    }
}
#endif

#ifdef TINYLM_AVX2_CLONES
// The same with 8 lanes (M <= 2, R <= 4: 8 accumulators, 2 rows of a and a row of weights in the 16 registers).
template <int R, int M>
TINYLM_TARGET_AVX2 void gemv_f32_rows_avx2(const gemm_args<float>& g, index_t j, index_t i0) {
    const index_t k = g.k, ldb = g.ldb, lda = g.lda, full = k - k % 8;
    const float* a = g.a + i0 * lda;
    const float* b = g.b + j * ldb;
    __m256 s[M][R];
    for (int i = 0; i < M; ++i)
        for (int r = 0; r < R; ++r)
            s[i][r] = _mm256_setzero_ps();
    for (index_t p = 0; p < full; p += 8) {
        __m256 x[M];
        for (int i = 0; i < M; ++i)
            x[i] = _mm256_loadu_ps(a + i * lda + p);
        const float* ahead = gemv_f32_prefetch_base<R>(b, ldb, k, p);
        for (int r = 0; r < R; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(ahead + r * ldb), _MM_HINT_T0);
            __m256 w = _mm256_loadu_ps(b + r * ldb + p);
            if constexpr (M > 1) asm("" : "+v"(w)); // as in the AVX-512 kernel
            for (int i = 0; i < M; ++i)
                s[i][r] = _mm256_fmadd_ps(x[i], w, s[i][r]);
        }
    }
    for (int i = 0; i < M; ++i) {
        gemm_args<float> one = g;
        one.c = g.c + (i0 + i) * g.ldc;
        for (int r = 0; r < R; ++r)
            gemv_store(one, j + r, gemv_f32_row_rest(a + i * lda, b + r * ldb, full, k, gemv_sum_avx2(s[i][r])));
    }
}
#endif

// True where gemv_nt_rows_f32 has a kernel: each row of a summed as alone, the weights read once for several.
inline bool gemv_f32_has_kernel() { return avx512_clones_active() || avx2_clones_active(); }

// Rows [j0, j1) of c for every row of a (g.m of them), where gemv_f32_has_kernel(): the rows of a in groups (4 with
// AVX-512, 2 with AVX2) outside, so that a group's activations stay in L1 while the weights come from memory for the
// first group and from L2 for the others (gemv.hpp gives a call as many rows of c as L2 holds). With AVX-512, rows
// of c 8 at a time for up to 2 rows of a, 6 for 3 or 4 (8 x 2 or 6 x 4 accumulators, 29 of the 32 registers at most):
// more rows of weights streaming at once kept more of them in flight (8 rows 1.15x faster than 4 for one row of a).
inline void gemv_nt_rows_f32(const gemm_args<float>& g, index_t j0, index_t j1) {
#ifdef TINYLM_AVX512_CLONES
    if (avx512_clones_active())
        return by_rows<4>(0, g.m, [&](index_t i, auto m) {
            constexpr int M = decltype(m)::value;
            by_rows<(M <= 2 ? 8 : 6)>(j0, j1,
                                      [&](index_t j, auto r) { gemv_f32_rows_avx512<decltype(r)::value, M>(g, j, i); });
        });
#endif
#ifdef TINYLM_AVX2_CLONES
    if (avx2_clones_active())
        return by_rows<2>(0, g.m, [&](index_t i, auto m) {
            by_rows<4>(j0, j1,
                       [&](index_t j, auto r) { gemv_f32_rows_avx2<decltype(r)::value, decltype(m)::value>(g, j, i); });
        });
#endif
    (void)g, (void)j0, (void)j1;
}

} // namespace tl::detail
