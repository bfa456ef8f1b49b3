// tinylm/backend/onednn.hpp: matrix products through oneDNN (Debian libdnnl 2.6).
//
// This is the only header that touches the oneDNN API, so an upgrade to oneDNN 3.x changes one file.
// dnnl_sgemm is row-major, like tinylm. f32 only: oneDNN has no f64 gemm, and f64 is for the reference.
#pragma once

#ifndef TINYLM_HAS_ONEDNN
#error "tinylm: oneDNN backend requested but not enabled; link tinylm::onednn (configure with -DTINYLM_WITH_ONEDNN=ON)"
#endif

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/gemv.hpp>
#include <tinylm/core/error.hpp>

#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <span>
#include <string>

namespace tl {

struct onednn_cpu {
    static constexpr std::string_view name = "onednn_cpu";

    static void gemm(const gemm_args<float>& g) {
        if (g.m == 0 || g.n == 0) return;
        if (detail::gemv_applies(g)) return detail::gemv_nt(g); // one row (decoding): see gemv.hpp
        const dnnl_status_t s = dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.m, g.n, g.k, g.alpha, g.a,
                                           g.lda, g.b, g.ldb, g.beta, g.c, g.ldc);
        check(s == dnnl_success, [&] {
            return "onednn_cpu: dnnl_sgemm failed with status " + std::to_string(int(s)) +
                   " for m=" + std::to_string(g.m) + " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k);
        });
    }

    // Products that do not feed each other: one-row ones (decoding) share one parallel region.
    static void gemm_group(std::span<const gemm_args<float>> gs) {
        if (std::all_of(gs.begin(), gs.end(), [](const auto& g) { return detail::gemv_applies(g); }))
            return detail::gemv_nt_group(gs);
        for (const auto& g : gs)
            gemm(g);
    }
};

static_assert(Backend<onednn_cpu>);

} // namespace tl
