// tinylm/backend/gemv_rows.hpp: what the product kernels of decoding (gemv_f32.hpp, gemv.hpp: bf16 weights,
// gemv_blocks.hpp: q8_0 and q4_0 weights) share: the targets of their AVX-512 and AVX2 copies, the store of a
// finished row, the driver over rows (G at a time, then the rest), and the horizontal sums of their accumulators.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/simd.hpp>

#include <type_traits>

#if defined(TINYLM_AVX512_CLONES) || defined(TINYLM_AVX2_CLONES)
#include <immintrin.h>
#endif

// The instruction sets of the kernels' AVX-512 and AVX2 copies (parallel_ranges picks one at run time: simd.hpp).
// A function called from a kernel carries the kernel's target to be inlined into it; a lambda would not inherit it.
#define TINYLM_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define TINYLM_TARGET_AVX2 __attribute__((target("avx2,fma")))

namespace tl::detail {

// c[j] = alpha * sum + beta * c[j] (c not read when beta is 0: it may hold anything).
inline void gemv_store(const gemm_args<float>& g, index_t j, float sum) {
    g.c[j] = g.alpha * sum + (g.beta == 0.0f ? 0.0f : g.beta * g.c[j]);
}

// rows(i, N) when left == N, for N from 1 up (nothing when left is 0).
template <int N, class Rows>
void rows_left(index_t left, index_t i, Rows& rows) {
    if constexpr (N > 0) {
        if (left == N) return rows(i, std::integral_constant<int, N>{});
        rows_left<N - 1>(left, i, rows);
    }
}

// rows(j, R) for the rows [j0, j1), G at a time, then the R < G left in one call: rows of c for kernels that sum
// each row on its own (any grouping gives the same sums), or rows of a for kernels that keep an accumulator for each
// (row of a, row of c) in registers (a compile-time M).
template <int G, class Rows>
void by_rows(index_t j0, index_t j1, Rows rows) {
    index_t j = j0;
    for (; j + G <= j1; j += G)
        rows(j, std::integral_constant<int, G>{});
    rows_left<G - 1>(j1 - j, j, rows);
}

#ifdef TINYLM_AVX512_CLONES
// The sum of a register's 16 floats.
TINYLM_TARGET_AVX512 inline float gemv_sum_avx512(__m512 v) {
    // The zero-masking forms: GCC 12 warns about the undefined pass-through of the unmasked ones.
    const __m256 half =
        _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xff, v, 0), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
    __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    quarter = _mm_hadd_ps(quarter, quarter);
    return _mm_cvtss_f32(_mm_hadd_ps(quarter, quarter));
}
#endif
#ifdef TINYLM_AVX2_CLONES
// The sum of a register's 8 floats.
TINYLM_TARGET_AVX2 inline float gemv_sum_avx2(__m256 v) {
    __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    quarter = _mm_hadd_ps(quarter, quarter);
    return _mm_cvtss_f32(_mm_hadd_ps(quarter, quarter));
}
#endif

} // namespace tl::detail
