// tinylm/backend/gemv_q8.hpp: the one-row products of gemv.hpp for weights read from a q8_0 copy
// (decoding_weights.hpp): c_j = alpha * sum over the row's blocks of 32 of d_jb * (a . codes_jb) + beta * c_j.
//
// The activations stay f32: each block's codes are widened to f32 (sign extension, then a conversion), multiplied
// by a and summed in f32, and the block's sum is scaled once. A row is summed in the same order whichever call
// computes it (gemv_nt or a group); the AVX-512, AVX2 and generic copies sum in different orders.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/gemv_rows.hpp>
#include <tinylm/core/simd.hpp>

#include <algorithm>
#include <cstdint>

#if defined(TINYLM_AVX512_CLONES) || defined(TINYLM_AVX2_CLONES)
#include <immintrin.h>
#endif

namespace tl::detail {

// How far ahead the kernels ask for codes: the rows this many calls further (gemv_q8_rows_avx512). Without it one
// core kept too few lines in flight from memory: 278 -> 131 us for Qwen2.5-0.5B's 4864 x 896 product on one thread
// of a Zen 5, 141-175 -> 62-95 us on two (bench_decode_products).
inline constexpr index_t q8_groups_ahead = 2;

// Row j of the product (the codes and scales of the product's row 0 are w.data, w.scales): the blocks from
// `from` (a multiple of 32) to k, one weight at a time; `sum` carries what a kernel summed before them.
inline float gemv_q8_row_rest(const gemm_args<float>& g, const decoding_copy& w, index_t j, index_t from, float sum) {
    const std::int8_t* row = static_cast<const std::int8_t*>(w.data) + j * g.ldb;
    const float* d = w.scales + j * w.scales_ld;
    for (index_t p0 = from; p0 < g.k; p0 += q8_block) {
        const index_t p1 = std::min(g.k, p0 + q8_block);
        float s = 0;
        for (index_t p = p0; p < p1; ++p)
            s += g.a[p] * float(row[p]);
        sum += d[p0 / q8_block] * s;
    }
    return sum;
}

// Rows [j0, j1) of c without vector intrinsics (the baseline build, and parallel_ranges' AVX2 copy of it).
inline void gemv_nt_rows_q8_generic(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    const float* a = g.a;
    const index_t k = g.k, ldb = g.ldb, full = k - k % q8_block;
    const auto* codes = static_cast<const std::int8_t*>(w.data);
    for (index_t j = j0; j < j1; ++j) {
        const std::int8_t* row = codes + j * ldb;
        const float* d = w.scales + j * w.scales_ld;
        float sum = 0;
        for (index_t p0 = 0; p0 < full; p0 += q8_block) {
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (index_t p = p0; p < p0 + q8_block; ++p)
                s += a[p] * float(row[p]);
            sum += d[p0 / q8_block] * s;
        }
        gemv_store(g, j, gemv_q8_row_rest(g, w, j, full, sum));
    }
}

#ifdef TINYLM_AVX512_CLONES
#define TINYLM_GEMV_Q8_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
// Rows [j, j + R) of c, for the M rows of a from i0: per block, 2 x 16 codes widened (vpmovsxbd, vcvtdq2ps) once
// and used against the same 32 activations of each of the M rows. Every (row of a, row of c) is summed as with
// M = 1: sequences decoded together get what each would get alone.
//
// As gemv_q4.hpp's kernel, it asks for the codes of the rows q8_groups_ahead calls further (two cache lines a block
// for 4 rows) and their scales, and reads each row's codes and scales through a pointer of its own.
template <int R, int M>
TINYLM_GEMV_Q8_AVX512 void gemv_q8_rows_avx512(const gemm_args<float>& g, const decoding_copy& w, index_t j,
                                               index_t i0) {
    const index_t k = g.k, ldb = g.ldb, lda = g.lda, blocks = k / q8_block;
    const float* a = g.a + i0 * lda;
    const std::int8_t* codes[R];
    const float* scales[R];
    for (int r = 0; r < R; ++r)
        codes[r] = static_cast<const std::int8_t*>(w.data) + (j + r) * ldb,
        scales[r] = w.scales + (j + r) * w.scales_ld;
    const char* codes_ahead = reinterpret_cast<const char*>(codes[0] + q8_groups_ahead * R * ldb);
    const char* scales_ahead = reinterpret_cast<const char*>(scales[0] + q8_groups_ahead * R * w.scales_ld);
    __m512 s[M][R];
    for (int i = 0; i < M; ++i)
        for (int r = 0; r < R; ++r)
            s[i][r] = _mm512_setzero_ps();
    // The zero-masking forms: GCC 12 warns about the undefined pass-through of the unmasked ones.
    const __mmask16 all = 0xffff;
    for (index_t b = 0; b < blocks; ++b) {
        for (index_t line = 0; line < R * q8_block; line += 64)
            _mm_prefetch(codes_ahead + b * R * q8_block + line, _MM_HINT_T0);
        if (b % 4 == 0) _mm_prefetch(scales_ahead + b * R * sizeof(float), _MM_HINT_T0);
        __m512 a0[M], a1[M];
        for (int i = 0; i < M; ++i) {
            const float* x = a + i * lda + b * q8_block;
            a0[i] = _mm512_loadu_ps(x), a1[i] = _mm512_loadu_ps(x + 16);
        }
        for (int r = 0; r < R; ++r) {
            const std::int8_t* row = codes[r] + b * q8_block;
            const __m128i c0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row));
            const __m128i c1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16));
            const __m512 w0 = _mm512_maskz_cvtepi32_ps(all, _mm512_maskz_cvtepi8_epi32(all, c0));
            const __m512 w1 = _mm512_maskz_cvtepi32_ps(all, _mm512_maskz_cvtepi8_epi32(all, c1));
            const __m512 d = _mm512_set1_ps(scales[r][b]);
            for (int i = 0; i < M; ++i)
                s[i][r] = _mm512_fmadd_ps(_mm512_fmadd_ps(a1[i], w1, _mm512_mul_ps(a0[i], w0)), d, s[i][r]);
        }
    }
    const index_t full = blocks * q8_block;
    for (int i = 0; i < M; ++i) {
        gemm_args<float> one = g;
        one.a = a + i * lda;
        one.c = g.c + (i0 + i) * g.ldc;
        for (int r = 0; r < R; ++r)
            gemv_store(one, j + r, gemv_q8_row_rest(one, w, j + r, full, gemv_sum_avx512(s[i][r])));
    }
}
// Rows [j0, j1) of c for every row of a, four of a's at a time (4 x 4 accumulators, 8 activations: 26 of the 32
// registers). Rows of a outside, rows of c inside: four rows of activations stay in L1 (24 KB at k = 1536) while the
// block's codes come again from L2 for the next four; the other way round, 8 rows of activations (48 KB) were
// streamed from L2 for every 4 rows of codes, and 8 rows ran slower than 4.
inline void gemv_nt_rows_q8_avx512(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    by_rows<4>(0, g.m, [&](index_t i, auto m) {
        by_rows<4>(j0, j1,
                   [&](index_t j, auto r) { gemv_q8_rows_avx512<decltype(r)::value, decltype(m)::value>(g, w, j, i); });
    });
}
#undef TINYLM_GEMV_Q8_AVX512
#endif

#ifdef TINYLM_AVX2_CLONES
#define TINYLM_GEMV_Q8_AVX2 __attribute__((target("avx2,fma")))
// 8 codes as floats. (A function of its own: a lambda would not inherit the target.)
TINYLM_GEMV_Q8_AVX2 inline __m256 gemv_q8_widen8(const std::int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
// Rows [j, j + R): per block, 4 x 8 codes widened against the same 32 activations.
// Ahead as the AVX-512 kernel asks.
template <int R>
TINYLM_GEMV_Q8_AVX2 void gemv_q8_rows_avx2(const gemm_args<float>& g, const decoding_copy& w, index_t j) {
    const float* a = g.a;
    const index_t ldb = g.ldb, blocks = g.k / q8_block, full = blocks * q8_block;
    const std::int8_t* codes[R];
    const float* scales[R];
    for (int r = 0; r < R; ++r)
        codes[r] = static_cast<const std::int8_t*>(w.data) + (j + r) * ldb,
        scales[r] = w.scales + (j + r) * w.scales_ld;
    const char* codes_ahead = reinterpret_cast<const char*>(codes[0] + q8_groups_ahead * R * ldb);
    const char* scales_ahead = reinterpret_cast<const char*>(scales[0] + q8_groups_ahead * R * w.scales_ld);
    __m256 s[R];
    for (int r = 0; r < R; ++r)
        s[r] = _mm256_setzero_ps();
    for (index_t b = 0; b < blocks; ++b) {
        for (index_t line = 0; line < R * q8_block; line += 64)
            _mm_prefetch(codes_ahead + b * R * q8_block + line, _MM_HINT_T0);
        if (b % 4 == 0) _mm_prefetch(scales_ahead + b * R * sizeof(float), _MM_HINT_T0);
        const float* x = a + b * q8_block;
        const __m256 a0 = _mm256_loadu_ps(x), a1 = _mm256_loadu_ps(x + 8), a2 = _mm256_loadu_ps(x + 16),
                     a3 = _mm256_loadu_ps(x + 24);
        for (int r = 0; r < R; ++r) {
            const std::int8_t* row = codes[r] + b * q8_block;
            __m256 block = _mm256_mul_ps(a0, gemv_q8_widen8(row));
            block = _mm256_fmadd_ps(a1, gemv_q8_widen8(row + 8), block);
            block = _mm256_fmadd_ps(a2, gemv_q8_widen8(row + 16), block);
            block = _mm256_fmadd_ps(a3, gemv_q8_widen8(row + 24), block);
            s[r] = _mm256_fmadd_ps(block, _mm256_set1_ps(scales[r][b]), s[r]);
        }
    }
    for (int r = 0; r < R; ++r)
        gemv_store(g, j + r, gemv_q8_row_rest(g, w, j + r, full, gemv_sum_avx2(s[r])));
}
inline void gemv_nt_rows_q8_avx2(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    by_rows<4>(j0, j1, [&](index_t j, auto rows) { gemv_q8_rows_avx2<decltype(rows)::value>(g, w, j); });
}
#undef TINYLM_GEMV_Q8_AVX2
#endif

// True where gemv_nt_rows_q8 takes every row of a (g.m of them) in one pass over the codes.
inline bool gemv_q8_takes_many_rows() {
#ifdef TINYLM_AVX512_CLONES
    if (avx512_clones_active()) return true;
#endif
    return false;
}

// Rows [j0, j1) of c from the q8_0 copy `w` of g's weights, with the widest kernel this CPU runs: for every row of a
// where gemv_q8_takes_many_rows(), else for g.a's first row only (g.m = 1).
inline void gemv_nt_rows_q8(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
#ifdef TINYLM_AVX512_CLONES
    if (avx512_clones_active()) return gemv_nt_rows_q8_avx512(g, w, j0, j1);
#endif
#ifdef TINYLM_AVX2_CLONES
    if (avx2_clones_active()) return gemv_nt_rows_q8_avx2(g, w, j0, j1);
#endif
    gemv_nt_rows_q8_generic(g, w, j0, j1);
}

} // namespace tl::detail
