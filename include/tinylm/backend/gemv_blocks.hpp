// tinylm/backend/gemv_blocks.hpp: the one-row products of gemv.hpp for weights read from a copy in blocks of 32
// weights with an f32 scale each, q8_0 (gemv_q8.hpp) or q4_0 (gemv_q4.hpp):
// c_j = alpha * sum over the row's blocks b of d_jb * (a . w_jb) + beta * c_j, w_jb the block's unscaled weights.
//
// The activations stay f32: the format (`Blocks`) widens each block's codes to f32 weights, which are multiplied by
// a and summed in f32; the block's sum is scaled once. A row is summed in the same order whichever call computes it
// (gemv_nt or a group); the AVX-512, AVX2 and generic copies sum in different orders. A format gives:
//   code, block_bytes          the type of its codes, and how many of them a block of 32 weights takes;
//   weight(row, p), dot(a, b)  weight p of a row, and a block's 32 weights dotted with a (no intrinsics);
//   widen_avx512<h>, _avx2<q>  a block's weights 16h to 16h + 15, 8q to 8q + 7, as floats (where the build has them),
//   avx2_offset                 what widen_avx2 leaves out of every weight (the kernel adds offset * sum a a block).
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/gemv_q4.hpp>
#include <tinylm/backend/gemv_q8.hpp>
#include <tinylm/backend/gemv_rows.hpp>
#include <tinylm/core/simd.hpp>

#include <algorithm>

#if defined(TINYLM_AVX512_CLONES) || defined(TINYLM_AVX2_CLONES)
#include <immintrin.h>
#endif

namespace tl::detail {

// How far ahead the kernels ask for codes: the rows this many calls further (rows are contiguous: R rows of codes
// ahead are a call's). Without it one core kept too few lines in flight from memory: for Qwen2.5-0.5B's 4864 x 896
// product on a Zen 5 (bench_decode_products), q8_0 278 -> 131 us on one thread, 141-175 -> 62-95 us on two; q4_0
// 168 -> 111 us on one thread, 91 -> 64 us on two.
inline constexpr index_t blocks_groups_ahead = 2;

// Row j of the product (the codes and scales of the product's row 0 are w.data, w.scales): the blocks from
// `from` (a multiple of 32) to k, one weight at a time; `sum` carries what a kernel summed before them.
template <class Blocks>
float gemv_blocks_row_rest(const gemm_args<float>& g, const decoding_copy& w, index_t j, index_t from, float sum) {
    const auto* row = static_cast<const typename Blocks::code*>(w.data) + j * w.codes_ld;
    const float* d = w.scales + j * w.scales_ld;
    for (index_t p0 = from; p0 < g.k; p0 += q8_block) {
        const index_t p1 = std::min(g.k, p0 + q8_block);
        float s = 0;
        for (index_t p = p0; p < p1; ++p)
            s += g.a[p] * Blocks::weight(row, p);
        sum += d[p0 / q8_block] * s;
    }
    return sum;
}

// Rows [j0, j1) of c without vector intrinsics (the baseline build).
template <class Blocks>
void gemv_nt_rows_blocks_generic(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    const index_t blocks = g.k / q8_block;
    for (index_t j = j0; j < j1; ++j) {
        const auto* row = static_cast<const typename Blocks::code*>(w.data) + j * w.codes_ld;
        const float* d = w.scales + j * w.scales_ld;
        float sum = 0;
        for (index_t b = 0; b < blocks; ++b)
            sum += d[b] * Blocks::dot(g.a + b * q8_block, row + b * Blocks::block_bytes);
        gemv_store(g, j, gemv_blocks_row_rest<Blocks>(g, w, j, blocks * q8_block, sum));
    }
}

// Rows [j, j + R) of a copy: a pointer to each row's codes and one to its scales, indexed by the block (with the
// offsets recomputed from j, r and p in the loop the general registers ran out, and the loop spent more
// instructions on addresses than on the weights); and the asking ahead: at block b, for the same block of the rows
// blocks_groups_ahead calls further (rows are contiguous: R rows of codes ahead are a call's), R * block_bytes
// codes, and their scales every 4 blocks.
template <class Blocks, int R>
struct block_rows {
    const typename Blocks::code* codes[R];
    const float* scales[R];
    const char *codes_ahead, *scales_ahead;

    block_rows(const decoding_copy& w, index_t j) {
        for (int r = 0; r < R; ++r)
            codes[r] = static_cast<const typename Blocks::code*>(w.data) + (j + r) * w.codes_ld,
            scales[r] = w.scales + (j + r) * w.scales_ld;
        codes_ahead = reinterpret_cast<const char*>(codes[0] + blocks_groups_ahead * R * w.codes_ld);
        scales_ahead = reinterpret_cast<const char*>(scales[0] + blocks_groups_ahead * R * w.scales_ld);
    }
    void ask_ahead(index_t b) const {
        for (index_t line = 0; line < R * Blocks::block_bytes; line += 64)
            __builtin_prefetch(codes_ahead + b * R * Blocks::block_bytes + line, 0, 3); // prefetcht0
        if (b % 4 == 0) __builtin_prefetch(scales_ahead + b * R * sizeof(float), 0, 3);
    }
};

#ifdef TINYLM_AVX512_CLONES
// Rows [j, j + R) of c, for the M rows of a from i0: per block, the codes widened once (Blocks::widen_avx512) and used
// against the same 32 activations of each of the M rows. Every (row of a, row of c) is summed as with M = 1:
// sequences decoded together get what each would get alone.
// The codes come through block_rows, which asks for the next calls' rows ahead.
template <class Blocks, int R, int M>
TINYLM_TARGET_AVX512 void gemv_blocks_rows_avx512(const gemm_args<float>& g, const decoding_copy& w, index_t j,
                                                  index_t i0) {
    const index_t lda = g.lda, blocks = g.k / q8_block;
    const float* a = g.a + i0 * lda;
    const block_rows<Blocks, R> rows(w, j);
    __m512 s[M][R];
    for (int i = 0; i < M; ++i)
        for (int r = 0; r < R; ++r)
            s[i][r] = _mm512_setzero_ps();
    for (index_t b = 0; b < blocks; ++b) {
        rows.ask_ahead(b);
        __m512 a0[M], a1[M];
        for (int i = 0; i < M; ++i) {
            const float* x = a + i * lda + b * q8_block;
            a0[i] = _mm512_loadu_ps(x), a1[i] = _mm512_loadu_ps(x + 16);
        }
        for (int r = 0; r < R; ++r) {
            const typename Blocks::code* block = rows.codes[r] + b * Blocks::block_bytes;
            const __m512 w0 = Blocks::template widen_avx512<0>(block), w1 = Blocks::template widen_avx512<1>(block);
            const __m512 d = _mm512_set1_ps(rows.scales[r][b]);
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
            gemv_store(one, j + r, gemv_blocks_row_rest<Blocks>(one, w, j + r, full, gemv_sum_avx512(s[i][r])));
    }
}
// Rows [j0, j1) of c for every row of a, four of a's at a time (4 x 4 accumulators, 8 activations: 26 of the 32
// registers). Rows of a outside, rows of c inside: four rows of activations stay in L1 (24 KB at k = 1536) while the
// block's codes come again from L2 for the next four; the other way round, 8 rows of activations (48 KB) were
// streamed from L2 for every 4 rows of q8_0 codes, and 8 rows ran slower than 4.
template <class Blocks>
void gemv_nt_rows_blocks_avx512(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    by_rows<4>(0, g.m, [&](index_t i, auto m) {
        by_rows<4>(j0, j1, [&](index_t j, auto r) {
            gemv_blocks_rows_avx512<Blocks, decltype(r)::value, decltype(m)::value>(g, w, j, i);
        });
    });
}
#endif

#ifdef TINYLM_AVX2_CLONES
// Rows [j, j + R): per block, the codes widened to 4 x 8 floats (Blocks::widen_avx2) against the 32 activations. Ahead
// as the AVX-512 kernel asks.
template <class Blocks, int R>
TINYLM_TARGET_AVX2 void gemv_blocks_rows_avx2(const gemm_args<float>& g, const decoding_copy& w, index_t j) {
    const float* a = g.a;
    const index_t blocks = g.k / q8_block, full = blocks * q8_block;
    const block_rows<Blocks, R> rows(w, j);
    __m256 s[R];
    for (int r = 0; r < R; ++r)
        s[r] = _mm256_setzero_ps();
    for (index_t b = 0; b < blocks; ++b) {
        rows.ask_ahead(b);
        const float* x = a + b * q8_block;
        const __m256 a0 = _mm256_loadu_ps(x), a1 = _mm256_loadu_ps(x + 8), a2 = _mm256_loadu_ps(x + 16),
                     a3 = _mm256_loadu_ps(x + 24);
        // The codes' offset, once a block for all R rows: sum a (w + o) = sum a w + o sum a.
        const __m256 offset = _mm256_mul_ps(_mm256_set1_ps(float(Blocks::avx2_offset)),
                                            _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (int r = 0; r < R; ++r) {
            const typename Blocks::code* block = rows.codes[r] + b * Blocks::block_bytes;
            __m256 sum = _mm256_mul_ps(a0, Blocks::template widen_avx2<0>(block));
            sum = _mm256_fmadd_ps(a1, Blocks::template widen_avx2<1>(block), sum);
            sum = _mm256_fmadd_ps(a2, Blocks::template widen_avx2<2>(block), sum);
            sum = _mm256_fmadd_ps(a3, Blocks::template widen_avx2<3>(block), sum);
            if constexpr (Blocks::avx2_offset != 0) sum = _mm256_add_ps(sum, offset);
            s[r] = _mm256_fmadd_ps(sum, _mm256_set1_ps(rows.scales[r][b]), s[r]);
        }
    }
    for (int r = 0; r < R; ++r)
        gemv_store(g, j + r, gemv_blocks_row_rest<Blocks>(g, w, j + r, full, gemv_sum_avx2(s[r])));
}
template <class Blocks>
void gemv_nt_rows_blocks_avx2(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
    by_rows<4>(j0, j1, [&](index_t j, auto rows) { gemv_blocks_rows_avx2<Blocks, decltype(rows)::value>(g, w, j); });
}
#endif

// True where gemv_nt_rows_blocks takes every row of a (g.m of them) in one pass over the codes.
inline bool gemv_blocks_take_many_rows() {
#ifdef TINYLM_AVX512_CLONES
    if (avx512_clones_active()) return true;
#endif
    return false;
}

// Rows [j0, j1) of c from the copy `w` of g's weights in the format Blocks, with the widest kernel this CPU runs:
// for every row of a where gemv_blocks_take_many_rows(), else for g.a's first row only (g.m = 1).
template <class Blocks>
void gemv_nt_rows_blocks(const gemm_args<float>& g, const decoding_copy& w, index_t j0, index_t j1) {
#ifdef TINYLM_AVX512_CLONES
    if (avx512_clones_active()) return gemv_nt_rows_blocks_avx512<Blocks>(g, w, j0, j1);
#endif
#ifdef TINYLM_AVX2_CLONES
    if (avx2_clones_active()) return gemv_nt_rows_blocks_avx2<Blocks>(g, w, j0, j1);
#endif
    gemv_nt_rows_blocks_generic<Blocks>(g, w, j0, j1);
}

} // namespace tl::detail
