// tinylm/backend/reference.hpp: the oracle. Naive loops with double accumulation; slow on purpose, simple
// enough to check by reading. Every other backend is tested against it.
#pragma once

#include <tinylm/backend/backend.hpp>

namespace tl {

struct reference_cpu {
    static constexpr std::string_view name = "reference_cpu";

    template <class T>
    static void gemm(const gemm_args<T>& g) {
        auto a = [&](index_t i, index_t p) { return g.trans_a ? g.a[p * g.lda + i] : g.a[i * g.lda + p]; };
        auto b = [&](index_t p, index_t j) { return g.trans_b ? g.b[j * g.ldb + p] : g.b[p * g.ldb + j]; };
        for (index_t i = 0; i < g.m; ++i)
            for (index_t j = 0; j < g.n; ++j) {
                double acc = 0;
                for (index_t p = 0; p < g.k; ++p)
                    acc += double(a(i, p)) * double(b(p, j));
                T& c = g.c[i * g.ldc + j];
                c = T(double(g.alpha) * acc + (g.beta == T(0) ? 0.0 : double(g.beta) * double(c)));
            }
    }
};

static_assert(Backend<reference_cpu> && BackendFor<reference_cpu, double>);

} // namespace tl
