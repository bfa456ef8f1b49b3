// tinylm/backend/gemv.hpp: c = alpha * a B^T + beta * c for a few rows a (m <= max_gemv_rows) and B (n, k)
// row-major: every projection when a model decodes one token (the weights are (out, in), y = x W^T), or one token of
// each of several sequences decoded together (a server's clients, generate_batch's rows).
//
// Why not the GEMM library: at m = 1 the product is one pass over the weights, so its speed is the memory
// bandwidth. sgemm packs B into its own layout first (reading the weights and writing a copy on every call),
// which at batch 1 costs more than the product (benchmarks/generation: docs/performance.md). Here each weight
// row is read once, four rows per pass sharing the loads of a, spread over the OpenMP threads, with AVX2 and
// AVX-512 kernels chosen at run time (core/simd.hpp). Sums run in a different order than the GEMM's: results agree
// to float rounding, not bit for bit; but each row of a is summed the same way whatever rows ran beside it, so a
// sequence decoded with others gets the logits it gets alone. Products that share their input (q, k, v; gate, up)
// can be run together, in one parallel region (gemv_nt_group, the backends' gemm_group), with the same results.
// Weights with a bf16, q8_0 or q4_0 copy (a live decoding_weights: decoding_weights.hpp) are read from the copy: half
// the bytes, about a quarter, or about a sixth (q8_0's and q4_0's kernels: gemv_blocks.hpp; f32's:
// gemv_f32.hpp).
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/gemv_blocks.hpp>
#include <tinylm/backend/gemv_f32.hpp>
#include <tinylm/backend/gemv_rows.hpp>
#include <tinylm/core/simd.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <span>

#if defined(TINYLM_AVX512_CLONES) || defined(TINYLM_AVX2_CLONES)
#include <immintrin.h>
#endif

namespace tl::detail {

// Rows of a (tokens) up to which a product runs here rather than in the GEMM library: sequences decoded together,
// and short prompts. f32 weights without an AVX2 or AVX-512 kernel (gemv_f32_has_kernel) go to the library from 2
// rows: running the one-row kernel per row was slower there (docs/design-notes.md, note 18). A variable so that
// benchmarks can compare (bench_generate --gemv-rows); 1: only single rows.
inline index_t max_gemv_rows = 8;

inline decoding_copy gemv_weights_copy(const gemm_args<float>& g);
inline bool gemv_applies(const gemm_args<float>& g) {
    if (g.m < 1 || g.trans_a || !g.trans_b || g.k <= 0) return false;
    if (g.m == 1) return true;
    return g.m <= max_gemv_rows && (gemv_f32_has_kernel() || gemv_weights_copy(g).format != decoding_format::f32);
}

// How far ahead the bf16 kernels ask for weights: the rows this many calls further.
inline constexpr index_t bf16_groups_ahead = 2;

// A weight as f32: itself, or its bf16 copy widened exactly (decoding_weights.hpp).
inline float widen(float w) { return w; }
inline float widen(std::uint16_t w) { return std::bit_cast<float>(std::uint32_t(w) << 16); }

// Rows [j0, j1) of c (j0 a multiple of 4 from the start of a 64-row block, so that a row is summed the same way
// whichever call computes it), reading the weights from `b` (g.b, or its bf16 copy: the same strides).
template <class W>
void gemv_nt_rows(const gemm_args<float>& g, const W* b, index_t j0, index_t j1) {
    // Locals, not reads through g inside the loop: a pointer read through a reference stops the vectoriser.
    const float* a = g.a;
    const index_t k = g.k, ldb = g.ldb;
    index_t j = j0;
    for (; j + 4 <= j1; j += 4) {
        const W *b0 = b + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (index_t p = 0; p < k; ++p) {
            const float x = a[p];
            s0 += x * widen(b0[p]);
            s1 += x * widen(b1[p]);
            s2 += x * widen(b2[p]);
            s3 += x * widen(b3[p]);
        }
        gemv_store(g, j, s0);
        gemv_store(g, j + 1, s1);
        gemv_store(g, j + 2, s2);
        gemv_store(g, j + 3, s3);
    }
    for (; j < j1; ++j) {
        const W* b0 = b + j * ldb;
        float s0 = 0;
#pragma omp simd reduction(+ : s0)
        for (index_t p = 0; p < k; ++p)
            s0 += a[p] * widen(b0[p]);
        gemv_store(g, j, s0);
    }
}

// The copy of g's weights that a product reads (decoding_weights.hpp); format f32: none, read g.b.
inline decoding_copy gemv_weights_copy(const gemm_args<float>& g) { return decoding_copy_of(g.b, g.n, g.k, g.ldb); }
#ifdef TINYLM_AVX512_CLONES
// gemv_nt_rows for bf16 weights with AVX-512: at half the bytes of f32, widening one by one (vpmovzxwd, then a
// shift) bounds the loop, not memory (docs/precision.md, "Decoding with bf16 weights"). A 32-bit lane of 32
// loaded weights holds an even one (low half) and an odd one (high half): a shift and a mask widen 16 of each,
// and the activations are split into their even and odd elements to match (two permutes per 4 rows x 32). The
// weights of a row past the last full 32 are widened one by one. Both bf16 kernels ask for the weights of the rows
// bf16_groups_ahead calls further while they read these, and keep a pointer a row (as gemv_blocks.hpp's kernels).
// Rows [j, j + R) of c for the M rows of a from i0: each block of 32 weights widened once for the M rows.
template <int R, int M>
TINYLM_TARGET_AVX512 void gemv_bf16_rows_avx512(const gemm_args<float>& g, const std::uint16_t* b, index_t j,
                                                index_t i0) {
    const index_t k = g.k, ldb = g.ldb, lda = g.lda, full = k - k % 32;
    const float* a = g.a + i0 * lda;
    const std::uint16_t* rows[R];
    for (int r = 0; r < R; ++r)
        rows[r] = b + (j + r) * ldb;
    const char* ahead = reinterpret_cast<const char*>(b + (j + bf16_groups_ahead * R) * ldb);
    const __m512i even_index = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_index = _mm512_add_epi32(even_index, _mm512_set1_epi32(1));
    const __m512i high_half = _mm512_set1_epi32(int(0xffff0000u));
    // The zero-masking forms: GCC 12 warns about the undefined pass-through of the unmasked ones.
    const __mmask16 all = 0xffff;
    __m512 s[M][R];
    for (int i = 0; i < M; ++i)
        for (int r = 0; r < R; ++r)
            s[i][r] = _mm512_setzero_ps();
    for (index_t p = 0; p < full; p += 32) {
        for (int line = 0; line < R; ++line) // R rows of 32 weights: R cache lines of the rows ahead
            _mm_prefetch(ahead + (p * R + line * 32) * sizeof(std::uint16_t), _MM_HINT_T0);
        __m512 even[M], odd[M];
        for (int i = 0; i < M; ++i) {
            const __m512 lo = _mm512_loadu_ps(a + i * lda + p), hi = _mm512_loadu_ps(a + i * lda + p + 16);
            even[i] = _mm512_permutex2var_ps(lo, even_index, hi);
            odd[i] = _mm512_permutex2var_ps(lo, odd_index, hi);
        }
        for (int r = 0; r < R; ++r) {
            const __m512i w = _mm512_loadu_si512(rows[r] + p);
            const __m512 w_even = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, w, 16));
            const __m512 w_odd = _mm512_castsi512_ps(_mm512_and_si512(w, high_half));
            for (int i = 0; i < M; ++i) {
                s[i][r] = _mm512_fmadd_ps(even[i], w_even, s[i][r]);
                s[i][r] = _mm512_fmadd_ps(odd[i], w_odd, s[i][r]);
            }
        }
    }
    for (int i = 0; i < M; ++i) {
        gemm_args<float> one = g;
        one.a = a + i * lda;
        one.c = g.c + (i0 + i) * g.ldc;
        for (int r = 0; r < R; ++r) {
            float t = gemv_sum_avx512(s[i][r]);
            const std::uint16_t* row = rows[r];
            for (index_t p = full; p < k; ++p)
                t += one.a[p] * widen(row[p]);
            gemv_store(one, j + r, t);
        }
    }
}
// Every row of a, four at a time (4 x 4 accumulators, 8 registers of activations, 2 of widened weights).
inline void gemv_nt_rows_bf16_avx512(const gemm_args<float>& g, const std::uint16_t* b, index_t j0, index_t j1) {
    by_rows<4>(0, g.m, [&](index_t i, auto m) {
        by_rows<4>(j0, j1, [&](index_t j, auto r) {
            gemv_bf16_rows_avx512<decltype(r)::value, decltype(m)::value>(g, b, j, i);
        });
    });
}
#endif
#ifdef TINYLM_AVX2_CLONES
// The same for AVX2 CPUs (16 weights a pass, half the AVX-512 width): the generic loop's widening gives them only
// 1.2-1.3x f32 (docs/precision.md). Within each 128-bit half, a permute puts a's even elements before its odd ones;
// a cross-half shuffle then gathers the 8 even and the 8 odd of 16.
// Rows [j, j + R) of c for the M (<= 2) rows of a from i0.
template <int R, int M>
TINYLM_TARGET_AVX2 void gemv_bf16_rows_avx2(const gemm_args<float>& g, const std::uint16_t* b, index_t j, index_t i0) {
    const index_t k = g.k, ldb = g.ldb, lda = g.lda, full = k - k % 16;
    const float* a = g.a + i0 * lda;
    const std::uint16_t* rows[R];
    for (int r = 0; r < R; ++r)
        rows[r] = b + (j + r) * ldb;
    const char* ahead = reinterpret_cast<const char*>(b + (j + bf16_groups_ahead * R) * ldb);
    const __m256i evens_first = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i high_half = _mm256_set1_epi32(int(0xffff0000u));
    __m256 s[M][R];
    for (int i = 0; i < M; ++i)
        for (int r = 0; r < R; ++r)
            s[i][r] = _mm256_setzero_ps();
    for (index_t p = 0; p < full; p += 16) {
        if (p % 32 == 0)
            for (int line = 0; line < R; ++line)
                _mm_prefetch(ahead + (p * R + line * 32) * sizeof(std::uint16_t), _MM_HINT_T0);
        __m256 even[M], odd[M];
        for (int i = 0; i < M; ++i) {
            const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(a + i * lda + p), evens_first);
            const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(a + i * lda + p + 8), evens_first);
            even[i] = _mm256_permute2f128_ps(lo, hi, 0x20), odd[i] = _mm256_permute2f128_ps(lo, hi, 0x31);
        }
        for (int r = 0; r < R; ++r) {
            const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + p));
            const __m256 w_even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
            const __m256 w_odd = _mm256_castsi256_ps(_mm256_and_si256(w, high_half));
            for (int i = 0; i < M; ++i) {
                s[i][r] = _mm256_fmadd_ps(even[i], w_even, s[i][r]);
                s[i][r] = _mm256_fmadd_ps(odd[i], w_odd, s[i][r]);
            }
        }
    }
    for (int i = 0; i < M; ++i) {
        gemm_args<float> one = g;
        one.a = a + i * lda;
        one.c = g.c + (i0 + i) * g.ldc;
        for (int r = 0; r < R; ++r) {
            float t = gemv_sum_avx2(s[i][r]);
            const std::uint16_t* row = rows[r];
            for (index_t p = full; p < k; ++p)
                t += one.a[p] * widen(row[p]);
            gemv_store(one, j + r, t);
        }
    }
}
inline void gemv_nt_rows_bf16_avx2(const gemm_args<float>& g, const std::uint16_t* b, index_t j0, index_t j1) {
    by_rows<2>(0, g.m, [&](index_t i, auto m) {
        by_rows<4>(j0, j1,
                   [&](index_t j, auto r) { gemv_bf16_rows_avx2<decltype(r)::value, decltype(m)::value>(g, b, j, i); });
    });
}
#endif
// True where the kernel for weights of format f takes every row of a in one call (else the first only).
inline bool gemv_takes_many_rows(decoding_format f) {
    if (f == decoding_format::q8_0 || f == decoding_format::q4_0) return gemv_blocks_take_many_rows();
    return avx512_clones_active() || avx2_clones_active(); // f32 (gemv_f32_has_kernel) and bf16
}

// The rows [j0, j1) of c from the weights g reads (its own, or their copy `w` when it has one): for every row of a
// where gemv_takes_many_rows(w.format), else for the first.
inline void gemv_nt_weights_rows(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    if (w.format == decoding_format::f32)
        return gemv_f32_has_kernel() ? gemv_nt_rows_f32(g, j0, j1) : gemv_nt_rows<float>(g, g.b, j0, j1);
    if (w.format == decoding_format::q8_0) return gemv_nt_rows_blocks<q8_0_blocks>(g, w, j0, j1);
    if (w.format == decoding_format::q4_0) return gemv_nt_rows_blocks<q4_0_blocks>(g, w, j0, j1);
    const auto* b16 = static_cast<const std::uint16_t*>(w.data);
#ifdef TINYLM_AVX512_CLONES
    if (avx512_clones_active()) return gemv_nt_rows_bf16_avx512(g, b16, j0, j1);
#endif
#ifdef TINYLM_AVX2_CLONES
    if (avx2_clones_active()) return gemv_nt_rows_bf16_avx2(g, b16, j0, j1);
#endif
    gemv_nt_rows<std::uint16_t>(g, b16, j0, j1);
}

inline constexpr index_t gemv_grain = 64;        // rows of c per parallel block
inline constexpr std::size_t max_gemv_group = 8; // products in one region (q, k, v; gate, up)

// Rows of weights of a product that stay in a core's L2 while every row of a is computed (at least 24, and a
// multiple of 24: whole groups for the kernels' 4, 6 and 8 rows of c): 256 KB of them, a quarter of a Zen 4/5
// core's L2.
inline index_t gemv_rows_in_cache(const gemm_args<float>& g, const decoding_copy& w) {
    const index_t row_bytes = w.format == decoding_format::f32    ? 4 * g.k
                              : w.format == decoding_format::bf16 ? 2 * g.k
                              : w.format == decoding_format::q8_0 ? g.k
                                                                  : std::max<index_t>(1, g.k / 2);
    return std::max<index_t>(24, (index_t(256) << 10) / row_bytes / 24 * 24);
}

// Rows [j0, j1) of c for every row of a (m of them), gemv_rows_in_cache rows of weights at a time, so that they
// come from memory once and from the cache for the other rows of a. The kernels of AVX2 and AVX-512 CPUs take the
// rows of a in groups, each block of weights loaded (and widened) once for a group (gemv_f32.hpp, gemv_blocks.hpp,
// gemv_bf16_rows_*); elsewhere the one-row kernel runs for each row of a in turn. Either way a row of c is
// summed exactly as a product of that row alone sums it, so sequences decoded together get the logits each would get
// alone.
inline void gemv_nt_weights_block(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    if (g.m == 1) return gemv_nt_weights_rows(g, w, j0, j1);
    const bool together = gemv_takes_many_rows(w.format);
    const index_t step = gemv_rows_in_cache(g, w);
    for (index_t s = j0; s < j1; s += step) {
        const index_t e = std::min(j1, s + step);
        if (together) {
            gemv_nt_weights_rows(g, w, s, e);
            continue;
        }
        for (index_t i = 0; i < g.m; ++i) {
            gemm_args<float> row = g;
            row.m = 1;
            row.a = g.a + i * g.lda;
            row.c = g.c + i * g.ldc;
            gemv_nt_weights_rows(row, w, s, e);
        }
    }
}

inline void gemv_nt(const gemm_args<float>& g) {
    const decoding_copy w = gemv_weights_copy(g);
    parallel_ranges(g.n, gemv_grain, [&g, &w](index_t j0, index_t j1) { gemv_nt_weights_block(g, w, j0, j1); });
}

// Several independent products (as q, k and v of one token): the 64-row blocks of all of them spread over the
// threads in one parallel region instead of one region each; every row is computed as gemv_nt computes it.
inline void gemv_nt_group(std::span<const gemm_args<float>> gs) {
    if (gs.size() > max_gemv_group) { // a region per max_gemv_group products (none has that many today)
        for (std::size_t i = 0; i < gs.size(); i += max_gemv_group)
            gemv_nt_group(gs.subspan(i, std::min(max_gemv_group, gs.size() - i)));
        return;
    }
    index_t blocks = 0;
    std::array<decoding_copy, max_gemv_group> copies{};
    for (std::size_t i = 0; i < gs.size(); ++i) {
        blocks += (gs[i].n + gemv_grain - 1) / gemv_grain;
        copies[i] = gemv_weights_copy(gs[i]);
    }
    parallel_ranges(blocks, 1, [gs, &copies](index_t b0, index_t b1) {
        index_t first = 0; // the first block of product i
        for (std::size_t i = 0; i < gs.size(); ++i) {
            const gemm_args<float>& g = gs[i];
            const index_t count = (g.n + gemv_grain - 1) / gemv_grain;
            for (index_t b = std::max(b0, first); b < std::min(b1, first + count); ++b) {
                const index_t j0 = (b - first) * gemv_grain;
                gemv_nt_weights_block(g, copies[i], j0, std::min(g.n, j0 + gemv_grain));
            }
            first += count;
        }
    });
}

} // namespace tl::detail
