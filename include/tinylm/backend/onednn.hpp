// tinylm/backend/onednn.hpp: matrix products through oneDNN (Debian libdnnl 2.6).
//
// This header and onednn_bf16.hpp are the only ones that touch the oneDNN API, so an upgrade of oneDNN changes
// two files. dnnl_sgemm is row-major, like tinylm. f32 only: oneDNN has no f64 gemm, and f64 is for the reference.
//
// Precision is chosen at run time, for the whole process, as PyTorch's set_float32_matmul_precision:
// set_cpu_precision(precision::bf16) runs every product with more than one row as a bf16 product with f32
// accumulation (onednn_bf16.hpp; docs/precision.md) and refuses on a CPU or oneDNN where that is not fast.
// One-row products (decoding) stay f32: they are bound by memory, not arithmetic.
#pragma once

#ifndef TINYLM_HAS_ONEDNN
#error "tinylm: oneDNN backend requested but not enabled; link tinylm::onednn (configure with -DTINYLM_WITH_ONEDNN=ON)"
#endif

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/gemv.hpp>
#include <tinylm/backend/onednn_bf16.hpp>
#include <tinylm/core/error.hpp>

#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <atomic>
#include <span>
#include <string>

namespace tl {

namespace detail {
inline std::atomic<precision> onednn_precision{precision::f32};
}

// The precision of onednn_cpu's products from now on, in every thread; bf16 throws tl::error, naming the reason,
// where bf16 products would not be fast (detail::bf16_support). Call it between steps, not during one.
inline void set_cpu_precision(precision p) {
    if (p == precision::bf16) {
        const std::string why = detail::bf16_support();
        check(why.empty(), [&] {
            std::string m = "set_cpu_precision(bf16): ";
            m += why;
            m += "; train in f32 instead";
            return m;
        });
    }
    detail::onednn_precision.store(p, std::memory_order_relaxed);
}
inline precision cpu_precision() { return detail::onednn_precision.load(std::memory_order_relaxed); }

// Sets a precision for its lifetime and restores the previous one.
class scoped_cpu_precision {
public:
    explicit scoped_cpu_precision(precision p) : previous_(cpu_precision()) { set_cpu_precision(p); }
    ~scoped_cpu_precision() { detail::onednn_precision.store(previous_, std::memory_order_relaxed); }
    scoped_cpu_precision(const scoped_cpu_precision&) = delete;
    scoped_cpu_precision& operator=(const scoped_cpu_precision&) = delete;

private:
    precision previous_;
};

struct onednn_cpu {
    static constexpr std::string_view name = "onednn_cpu";

    static void gemm(const gemm_args<float>& g) {
        if (g.m == 0 || g.n == 0) return;
        if (detail::gemv_applies(g)) return detail::gemv_nt(g); // one row (decoding): see gemv.hpp
        if (cpu_precision() == precision::bf16) return detail::bf16_gemm(g);
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
