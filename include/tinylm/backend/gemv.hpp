// tinylm/backend/gemv.hpp: c = alpha * a B^T + beta * c for a single row a (m = 1) and B (n, k) row-major:
// every projection when a model decodes one token (the weights are (out, in), y = x W^T).
//
// Why not the GEMM library: at m = 1 the product is one pass over the weights, so its speed is the memory
// bandwidth. sgemm packs B into its own layout first (reading the weights and writing a copy on every call),
// which at batch 1 costs more than the product (benchmarks/generation: docs/performance.md). Here each weight
// row is read once, four rows per pass sharing the loads of a, spread over the OpenMP threads, with an AVX2
// copy chosen at run time (core/simd.hpp). Sums run in a different order than the GEMM's: results agree to
// float rounding, not bit for bit. Products that share their input (q, k, v; gate, up) can be run together,
// in one parallel region (gemv_nt_group, the backends' gemm_group), with the same results.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/simd.hpp>

#include <algorithm>
#include <span>

namespace tl::detail {

inline bool gemv_applies(const gemm_args<float>& g) { return g.m == 1 && !g.trans_a && g.trans_b && g.k > 0; }

// Rows [j0, j1) of c (j0 a multiple of 4 from the start of a 64-row block, so that a row is summed the same way
// whichever call computes it).
inline void gemv_nt_rows(const gemm_args<float>& g, index_t j0, index_t j1) {
    // Locals, not reads through g inside the loop: a pointer read through a reference stops the vectoriser.
    const float* a = g.a;
    const index_t k = g.k, ldb = g.ldb;
    auto store = [&](index_t j, float s) { g.c[j] = g.alpha * s + (g.beta == 0.0f ? 0.0f : g.beta * g.c[j]); };
    index_t j = j0;
    for (; j + 4 <= j1; j += 4) {
        const float *b0 = g.b + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (index_t p = 0; p < k; ++p) {
            const float x = a[p];
            s0 += x * b0[p];
            s1 += x * b1[p];
            s2 += x * b2[p];
            s3 += x * b3[p];
        }
        store(j, s0);
        store(j + 1, s1);
        store(j + 2, s2);
        store(j + 3, s3);
    }
    for (; j < j1; ++j) {
        const float* b0 = g.b + j * ldb;
        float s0 = 0;
#pragma omp simd reduction(+ : s0)
        for (index_t p = 0; p < k; ++p)
            s0 += a[p] * b0[p];
        store(j, s0);
    }
}

inline constexpr index_t gemv_grain = 64; // rows of c per parallel block

inline void gemv_nt(const gemm_args<float>& g) {
    parallel_ranges(g.n, gemv_grain, [&g](index_t j0, index_t j1) { gemv_nt_rows(g, j0, j1); });
}

// Several independent products (as q, k and v of one token): the 64-row blocks of all of them spread over the
// threads in one parallel region instead of one region each; every row is computed as gemv_nt computes it.
inline void gemv_nt_group(std::span<const gemm_args<float>> gs) {
    index_t blocks = 0;
    for (const auto& g : gs)
        blocks += (g.n + gemv_grain - 1) / gemv_grain;
    parallel_ranges(blocks, 1, [gs](index_t b0, index_t b1) {
        index_t first = 0; // the first block of product i
        for (const auto& g : gs) {
            const index_t count = (g.n + gemv_grain - 1) / gemv_grain;
            for (index_t b = std::max(b0, first); b < std::min(b1, first + count); ++b) {
                const index_t j0 = (b - first) * gemv_grain;
                gemv_nt_rows(g, j0, std::min(g.n, j0 + gemv_grain));
            }
            first += count;
        }
    });
}

} // namespace tl::detail
