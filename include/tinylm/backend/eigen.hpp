// tinylm/backend/eigen.hpp: matrix products through Eigen 3.4 (row-major maps over arena memory).
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/gemv.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <span>
#include <type_traits>

namespace tl {

struct eigen_cpu {
    static constexpr std::string_view name = "eigen_cpu";

    template <class T>
    static void gemm(const gemm_args<T>& g) {
        if constexpr (std::is_same_v<T, float>)
            if (detail::gemv_applies(g)) return detail::gemv_nt(g); // one row (decoding): see gemv.hpp
        using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        using stride = Eigen::OuterStride<>;
        using cmap = Eigen::Map<const matrix, Eigen::Unaligned, stride>;
        const cmap a(g.a, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, stride(g.lda));
        const cmap b(g.b, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, stride(g.ldb));
        Eigen::Map<matrix, Eigen::Unaligned, stride> c(g.c, g.m, g.n, stride(g.ldc));
        if (g.beta == T(0))
            c.setZero();
        else if (g.beta != T(1))
            c *= g.beta;
        // Each branch names its product; never store an Eigen expression in `auto`.
        if (!g.trans_a && !g.trans_b)
            c.noalias() += g.alpha * a * b;
        else if (!g.trans_a && g.trans_b)
            c.noalias() += g.alpha * a * b.transpose();
        else if (g.trans_a && !g.trans_b)
            c.noalias() += g.alpha * a.transpose() * b;
        else
            c.noalias() += g.alpha * a.transpose() * b.transpose();
    }

    // Products that do not feed each other: one-row ones (decoding) share one parallel region.
    static void gemm_group(std::span<const gemm_args<float>> gs) {
        if (std::all_of(gs.begin(), gs.end(), [](const auto& g) { return detail::gemv_applies(g); }))
            return detail::gemv_nt_group(gs);
        for (const auto& g : gs)
            gemm(g);
    }
};

static_assert(Backend<eigen_cpu> && BackendFor<eigen_cpu, double>);

} // namespace tl
