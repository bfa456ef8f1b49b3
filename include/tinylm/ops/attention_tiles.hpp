// tinylm/ops/attention_tiles.hpp: the small register-blocked matrix products of the tiled attention kernels
// (ops/attention.hpp): a tile's scores q k^T (tile_nt) and its probabilities times values (tile_nn), loops the
// compiler vectorises, compiled once per instruction set by the kernels that inline them. Keys and values may be a
// bf16 KV cache's (widen).
#pragma once

#include <tinylm/core/dtype.hpp>
#include <tinylm/core/tensor.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>

namespace tl::detail {

// A key or value element as T: itself, or a bf16 one of a bf16 KV cache widened exactly (a shift, which the loops
// here and in attention.hpp vectorise: the cache is read at half the bytes and summed in T as an f32 cache would be).
template <class T, class KV>
inline T widen(KV x) {
    if constexpr (std::is_same_v<KV, bf16>)
        return T(std::bit_cast<float>(std::uint32_t(x.bits) << 16));
    else
        return x;
}

constexpr index_t attention_block = 64; // queries and keys per tile (S, P and dP tiles of 64 x 64)

// Columns of C kept in registers per row by tile_nn: two vector registers of the instruction set in use.
#if defined(__AVX512F__)
constexpr index_t simd_bytes = 64;
#elif defined(__AVX__)
constexpr index_t simd_bytes = 32;
#else
constexpr index_t simd_bytes = 16;
#endif
template <class T, index_t bytes = simd_bytes>
constexpr index_t register_columns = 2 * bytes / index_t(sizeof(T));

// C[i, 0:W] += sum_p A(i, p) B[p, 0:W] for i < MR, p < kk, with the MR x W block of C in registers over the
// whole sum (A(i, p) as in tile_nn).
template <index_t MR, index_t W, class T, class TB>
inline void tile_block(T* C, index_t ldc, const T* A, index_t ars, index_t acs, const TB* B, index_t ldb, index_t kk) {
    T acc[MR][W];
    for (index_t r = 0; r < MR; ++r)
        for (index_t cc = 0; cc < W; ++cc)
            acc[r][cc] = C[r * ldc + cc];
    for (index_t p = 0; p < kk; ++p) {
        const TB* b = B + p * ldb;
#pragma GCC unroll 8
        for (index_t r = 0; r < MR; ++r) {
            const T a = A[r * ars + p * acs];
#pragma omp simd
            for (index_t cc = 0; cc < W; ++cc)
                acc[r][cc] += a * widen<T>(b[cc]);
        }
    }
    for (index_t r = 0; r < MR; ++r)
        for (index_t cc = 0; cc < W; ++cc)
            C[r * ldc + cc] = acc[r][cc];
}

// Rows 0 .. R - 1 of tile_nn's product: blocks of NR columns, then NR / 2, then the last columns one by one.
template <index_t R, index_t NR, class T, class TB>
inline void tile_rows(T* c0, index_t ldc, const T* ai, index_t ars, index_t acs, const TB* B, index_t ldb, index_t n,
                      index_t kk) {
    index_t col = 0;
    for (; col + NR <= n; col += NR)
        tile_block<R, NR>(c0 + col, ldc, ai, ars, acs, B + col, ldb, kk);
    if (col + NR / 2 <= n) {
        tile_block<R, NR / 2>(c0 + col, ldc, ai, ars, acs, B + col, ldb, kk);
        col += NR / 2;
    }
    for (index_t r = 0; r < R; ++r)
        for (index_t p = 0; p < kk; ++p) {
            const T a = ai[r * ars + p * acs];
            for (index_t cc = col; cc < n; ++cc)
                c0[r * ldc + cc] += a * widen<T>(B[p * ldb + cc]);
        }
}

// C[i, 0:n] += sum_p A(i, p) B[p, 0:n] for i < m, p < kk, where A(i, p) = A[i * ars + p * acs] (so that
// A may be a tile or its transpose), in register blocks (tile_block) of MR rows x NR columns, NR being two
// vector registers: MR = 4 rows (8 accumulators: SSE and AVX2 have 16 registers), or 8 where the registers are
// 512-bit (16 accumulators of AVX-512's 32). Fewer rows left than MR go in blocks of 4, 2 and 1 rows, still in
// registers (a decoding group's 7 heads, the last block of a sequence). A remainder of at least NR / 2 columns (a
// head width of 16 under AVX-512) takes a half-width block before the last columns go one by one.
// B may be a bf16 KV cache's values (widen).
template <index_t NR, class T, class TB>
inline void tile_nn(T* C, index_t ldc, const T* A, index_t ars, index_t acs, const TB* B, index_t ldb, index_t m,
                    index_t n, index_t kk) {
    constexpr index_t MR = NR * index_t(sizeof(T)) >= 128 ? 8 : 4;
    index_t i = 0;
    for (; i + MR <= m; i += MR)
        tile_rows<MR, NR>(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, n, kk);
    if constexpr (MR > 4)
        if (i + 4 <= m) {
            tile_rows<4, NR>(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, n, kk);
            i += 4;
        }
    if (i + 2 <= m) {
        tile_rows<2, NR>(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, n, kk);
        i += 2;
    }
    if (i < m) tile_rows<1, NR>(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, n, kk);
}

// C[i, j] = alpha * sum_c A[i, c] B[j, c] for an m x n tile (n <= attention_block; rows of A and B: length
// kd, strides lda and ldb). B is transposed 64 columns at a time into a stack tile, so that the product is
// tile_nn's broadcast-and-add, without horizontal sums. B may be a bf16 KV cache's keys, widened as transposed.
// The transposition goes a column of B at a time (strided loads the compiler makes gathers, stores in a row): key
// by key it was scalar copies, most of a decoding group's time (7 rows of queries, attention_forward_group). Rows of B
// a multiple of 4 KB apart (a KV cache of 8 key/value heads of 128 floats) put all the tile's rows in one set of the
// L1 cache, which holds 8 to 12: each line was evicted before its next column came, and decoding groups went at half
// the row kernel's speed. Those go 8 rows at a time; other strides keep the long gathers, faster there (so was 2 KB
// in a whole model; docs/performance.md, "Groups of 2 on an AVX-512 CPU, and key rows 4 KB apart").
template <index_t NR, class T, class TB>
inline void tile_nt(T* C, index_t ldc, const T* A, index_t lda, const TB* B, index_t ldb, index_t m, index_t n,
                    index_t kd, T alpha) {
    constexpr index_t KC = 64, BK = attention_block;
    alignas(64) T Bt[KC * BK];
    for (index_t i = 0; i < m; ++i)
        std::fill_n(C + i * ldc, n, T(0));
    const index_t rows_at_once = ldb * index_t(sizeof(TB)) % 4096 == 0 ? 8 : n;
    for (index_t c0 = 0; c0 < kd; c0 += KC) {
        const index_t kc = std::min(KC, kd - c0);
        for (index_t j0 = 0; j0 < n; j0 += rows_at_once) {
            const index_t rows = std::min(rows_at_once, n - j0);
            for (index_t c = 0; c < kc; ++c) {
                const TB* bc = B + j0 * ldb + c0 + c;
                T* btc = Bt + c * BK + j0;
#pragma omp simd
                for (index_t j = 0; j < rows; ++j)
                    btc[j] = widen<T>(bc[j * ldb]);
            }
        }
        tile_nn<NR>(C, ldc, A + c0, lda, index_t(1), Bt, BK, m, n, kc);
    }
    for (index_t i = 0; i < m; ++i) {
        T* ci = C + i * ldc;
#pragma omp simd
        for (index_t j = 0; j < n; ++j)
            ci[j] *= alpha;
    }
}

} // namespace tl::detail
