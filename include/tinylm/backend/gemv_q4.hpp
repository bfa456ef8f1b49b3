// tinylm/backend/gemv_q4.hpp: the one-row products of gemv.hpp for weights read from a q4_0 copy
// (decoding_weights.hpp): c_j = alpha * sum over the row's blocks of 32 of d_jb * (a . (q_jb - 8)) + beta * c_j.
//
// The activations stay f32, as with q8_0 (gemv_q8.hpp): a block's 16 bytes are split into their low nibbles (its
// weights 0-15) and high nibbles (16-31), 8 subtracted from each, widened to f32 and multiplied by a; the block's
// sum is scaled once. ggml's order within a block makes the split two whole registers of 16 on AVX-512, with no
// shuffle. A row is summed in the same order whichever call computes it (gemv_nt or a group); the AVX-512, AVX2 and
// generic copies sum in different orders.
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

// How far ahead the kernels ask for codes: the rows this many calls further (gemv_q4_rows_avx512).
inline constexpr index_t q4_groups_ahead = 2;

// Weight p of a q4_0 row (p from the row's first block) as its code minus 8.
inline float q4_weight(const std::uint8_t* row, index_t p) {
    const index_t in_block = p % q8_block;
    const std::uint8_t byte = row[p / q8_block * q4_block_bytes + in_block % q4_block_bytes];
    return float(int(in_block < q4_block_bytes ? byte & 0x0f : byte >> 4) - 8);
}

// Row j of the product (the codes and scales of the product's row 0 are w.data, w.scales): the blocks from `from`
// (a multiple of 32) to k, one weight at a time; `sum` carries what a kernel summed before them.
inline float gemv_q4_row_rest(const gemm_args<float>& g, const decoding_copy& w, index_t j, index_t from, float sum) {
    const std::uint8_t* row = static_cast<const std::uint8_t*>(w.data) + j * w.codes_ld;
    const float* d = w.scales + j * w.scales_ld;
    for (index_t p0 = from; p0 < g.k; p0 += q8_block) {
        const index_t p1 = std::min(g.k, p0 + q8_block);
        float s = 0;
        for (index_t p = p0; p < p1; ++p)
            s += g.a[p] * q4_weight(row, p);
        sum += d[p0 / q8_block] * s;
    }
    return sum;
}

// Rows [j0, j1) of c without vector intrinsics (the baseline build).
inline void gemv_nt_rows_q4_generic(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    const float* a = g.a;
    const index_t full = g.k - g.k % q8_block;
    const auto* codes = static_cast<const std::uint8_t*>(w.data);
    for (index_t j = j0; j < j1; ++j) {
        const std::uint8_t* row = codes + j * w.codes_ld;
        const float* d = w.scales + j * w.scales_ld;
        float sum = 0;
        for (index_t p0 = 0; p0 < full; p0 += q8_block) {
            const std::uint8_t* block = row + p0 / 2;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (index_t p = 0; p < q4_block_bytes; ++p)
                s += a[p0 + p] * float(int(block[p] & 0x0f) - 8) + a[p0 + p + 16] * float(int(block[p] >> 4) - 8);
            sum += d[p0 / q8_block] * s;
        }
        gemv_store(g, j, gemv_q4_row_rest(g, w, j, full, sum));
    }
}

#ifdef TINYLM_AVX512_CLONES
#define TINYLM_GEMV_Q4_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
// Rows [j, j + R) of c, for the M rows of a from i0. A block's 16 bytes are widened to 16 lanes of 32 bits
// (vpmovzxbd) once; a permute through a table of the 16 values q - 8 (vpermps reads an index's low 4 bits) turns the
// lanes into the low nibbles' weights, and again after a shift by 4 into the high ones'. Each is used against the
// same 32 activations of each of the M rows; every (row of a, row of c) is summed as with M = 1: sequences decoded
// together get what each would get alone.
//
// The kernel asks for the codes of the rows q4_groups_ahead calls further (rows are contiguous: R rows of codes
// ahead are a call's), a cache line of them a block, and their scales: a core alone kept too few lines in flight
// from memory (one thread: 168 -> 111 us for Qwen2.5-0.5B's 4864 x 896 product, two: 91 -> 64 us;
// bench_decode_products). Each row's codes and scales go through a pointer of its own, indexed by the block: with
// the offsets recomputed from j, r and p in the loop the general registers ran out, and the loop spent more
// instructions on addresses than on the weights.
template <int R, int M>
TINYLM_GEMV_Q4_AVX512 void gemv_q4_rows_avx512(const gemm_args<float>& g, const decoding_copy& w, index_t j,
                                               index_t i0) {
    const index_t k = g.k, lda = g.lda, blocks = k / q8_block;
    const float* a = g.a + i0 * lda;
    const std::uint8_t* codes[R];
    const float* scales[R];
    for (int r = 0; r < R; ++r)
        codes[r] = static_cast<const std::uint8_t*>(w.data) + (j + r) * w.codes_ld,
        scales[r] = w.scales + (j + r) * w.scales_ld;
    const char* codes_ahead = reinterpret_cast<const char*>(codes[0] + q4_groups_ahead * R * w.codes_ld);
    const char* scales_ahead = reinterpret_cast<const char*>(scales[0] + q4_groups_ahead * R * w.scales_ld);
    const __m512 values = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512 s[M][R];
    for (int i = 0; i < M; ++i)
        for (int r = 0; r < R; ++r)
            s[i][r] = _mm512_setzero_ps();
    // The zero-masking forms: GCC 12 warns about the undefined pass-through of the unmasked ones.
    const __mmask16 all = 0xffff;
    for (index_t b = 0; b < blocks; ++b) {
        _mm_prefetch(codes_ahead + b * R * q4_block_bytes, _MM_HINT_T0);
        if (b % 4 == 0) _mm_prefetch(scales_ahead + b * R * sizeof(float), _MM_HINT_T0);
        __m512 a0[M], a1[M];
        for (int i = 0; i < M; ++i) {
            const float* x = a + i * lda + b * q8_block;
            a0[i] = _mm512_loadu_ps(x), a1[i] = _mm512_loadu_ps(x + 16);
        }
        for (int r = 0; r < R; ++r) {
            const __m512i bytes = _mm512_maskz_cvtepu8_epi32(
                all, _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes[r] + b * q4_block_bytes)));
            const __m512 w0 = _mm512_maskz_permutexvar_ps(all, bytes, values);
            const __m512 w1 = _mm512_maskz_permutexvar_ps(all, _mm512_maskz_srli_epi32(all, bytes, 4), values);
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
            gemv_store(one, j + r, gemv_q4_row_rest(one, w, j + r, full, gemv_sum_avx512(s[i][r])));
    }
}
// Rows [j0, j1) of c for every row of a, four of a's at a time (as gemv_nt_rows_q8_avx512).
inline void gemv_nt_rows_q4_avx512(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    by_rows<4>(0, g.m, [&](index_t i, auto m) {
        by_rows<4>(j0, j1,
                   [&](index_t j, auto r) { gemv_q4_rows_avx512<decltype(r)::value, decltype(m)::value>(g, w, j, i); });
    });
}
#undef TINYLM_GEMV_Q4_AVX512
#endif

#ifdef TINYLM_AVX2_CLONES
#define TINYLM_GEMV_Q4_AVX2 __attribute__((target("avx2,fma")))
// The low and the high nibbles of 8 bytes (zero-extended to 32-bit lanes, vpmovzxbd) minus 8, as floats. (Functions
// of their own: a lambda would not inherit the target.)
TINYLM_GEMV_Q4_AVX2 inline __m256 gemv_q4_low8(__m256i bytes) {
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(bytes, _mm256_set1_epi32(0x0f)), _mm256_set1_epi32(8)));
}
TINYLM_GEMV_Q4_AVX2 inline __m256 gemv_q4_high8(__m256i bytes) {
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bytes, 4), _mm256_set1_epi32(8)));
}
// Rows [j, j + R): per block, its 16 bytes zero-extended 8 at a time straight from memory (two vpmovzxbd: the
// shuffles that splitting the nibbles of a 16-byte register and widening them took bounded the loop, 0.8x q8_0's
// tokens/s) against the 32 activations. Ahead as the AVX-512 kernel asks.
template <int R>
TINYLM_GEMV_Q4_AVX2 void gemv_q4_rows_avx2(const gemm_args<float>& g, const decoding_copy& w, index_t j) {
    const float* a = g.a;
    const index_t blocks = g.k / q8_block, full = blocks * q8_block;
    const std::uint8_t* codes[R];
    const float* scales[R];
    for (int r = 0; r < R; ++r)
        codes[r] = static_cast<const std::uint8_t*>(w.data) + (j + r) * w.codes_ld,
        scales[r] = w.scales + (j + r) * w.scales_ld;
    const char* codes_ahead = reinterpret_cast<const char*>(codes[0] + q4_groups_ahead * R * w.codes_ld);
    const char* scales_ahead = reinterpret_cast<const char*>(scales[0] + q4_groups_ahead * R * w.scales_ld);
    __m256 s[R];
    for (int r = 0; r < R; ++r)
        s[r] = _mm256_setzero_ps();
    for (index_t b = 0; b < blocks; ++b) {
        _mm_prefetch(codes_ahead + b * R * q4_block_bytes, _MM_HINT_T0);
        if (b % 4 == 0) _mm_prefetch(scales_ahead + b * R * sizeof(float), _MM_HINT_T0);
        const float* x = a + b * q8_block;
        const __m256 a0 = _mm256_loadu_ps(x), a1 = _mm256_loadu_ps(x + 8), a2 = _mm256_loadu_ps(x + 16),
                     a3 = _mm256_loadu_ps(x + 24);
        for (int r = 0; r < R; ++r) {
            const std::uint8_t* c = codes[r] + b * q4_block_bytes;
            const __m256i first = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c)));
            const __m256i second = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + 8)));
            __m256 block = _mm256_mul_ps(a0, gemv_q4_low8(first));
            block = _mm256_fmadd_ps(a1, gemv_q4_low8(second), block);
            block = _mm256_fmadd_ps(a2, gemv_q4_high8(first), block);
            block = _mm256_fmadd_ps(a3, gemv_q4_high8(second), block);
            s[r] = _mm256_fmadd_ps(block, _mm256_set1_ps(scales[r][b]), s[r]);
        }
    }
    for (int r = 0; r < R; ++r)
        gemv_store(g, j + r, gemv_q4_row_rest(g, w, j + r, full, gemv_sum_avx2(s[r])));
}
inline void gemv_nt_rows_q4_avx2(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    by_rows<4>(j0, j1, [&](index_t j, auto rows) { gemv_q4_rows_avx2<decltype(rows)::value>(g, w, j); });
}
#undef TINYLM_GEMV_Q4_AVX2
#endif

// Rows [j0, j1) of c from the q4_0 copy `w` of g's weights, with the widest kernel this CPU runs: for every row of a
// on AVX-512 CPUs (gemv_q8_takes_many_rows: the same rule), else for g.a's first row only (g.m = 1).
inline void gemv_nt_rows_q4(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
#ifdef TINYLM_AVX512_CLONES
    if (avx512_clones_active()) return gemv_nt_rows_q4_avx512(g, w, j0, j1);
#endif
#ifdef TINYLM_AVX2_CLONES
    if (avx2_clones_active()) return gemv_nt_rows_q4_avx2(g, w, j0, j1);
#endif
    gemv_nt_rows_q4_generic(g, w, j0, j1);
}

} // namespace tl::detail
