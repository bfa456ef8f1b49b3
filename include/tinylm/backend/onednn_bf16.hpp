// tinylm/backend/onednn_bf16.hpp: bf16 mixed-precision matrix products through a oneDNN matmul primitive.
//
// Mixed precision as PyTorch's autocast does it for a matmul: the f32 operands (master weights, activations,
// gradients) are rounded to bf16 for the product, which accumulates and writes f32. Nothing else changes: the
// model, its gradients and the optimizer stay f32 (docs/precision.md). onednn_cpu (onednn.hpp) runs its products
// here when the run-time precision is bf16 (set_cpu_precision).
//
// oneDNN runs bf16 products fast only on CPUs with AVX-512 BF16 (avx512_core_bf16) or AMX (avx512_core_amx);
// elsewhere its bf16 matmul falls back to slow code, so bf16_support() refuses there. Each thread keeps one
// primitive per product shape (created on first use) and bf16 copies of the operands in buffers that only grow:
// after the first step no product allocates.
#pragma once

#ifndef TINYLM_HAS_ONEDNN
#error "tinylm: oneDNN backend requested but not enabled; link tinylm::onednn (configure with -DTINYLM_WITH_ONEDNN=ON)"
#endif

#include <tinylm/backend/backend.hpp>
#include <tinylm/backend/precision.hpp>
#include <tinylm/core/error.hpp>
#include <tinylm/core/simd.hpp>

#include <oneapi/dnnl/dnnl.hpp>

#include <immintrin.h>

#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace tl {

namespace detail {

// f32 -> bf16 with round to nearest even (what oneDNN's reorder and PyTorch's .to(bfloat16) do); a NaN stays a
// quiet NaN instead of rounding into the exponent.
inline std::uint16_t to_bf16(float x) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);
    return std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float from_bf16(std::uint16_t h) { return std::bit_cast<float>(std::uint32_t(h) << 16); }

// Why bf16 products cannot run here, or empty when they can: oneDNN 2.6 or later with an effective ISA that has
// AVX-512 BF16 (AMX CPUs have it too). ONEDNN_MAX_CPU_ISA lowers the effective ISA, and is honoured.
inline std::string bf16_support() {
    const dnnl_version_t* v = dnnl_version();
    std::string why;
    if (v->major < 2 || (v->major == 2 && v->minor < 6)) {
        why = "oneDNN ";
        why += std::to_string(v->major);
        why += '.';
        why += std::to_string(v->minor);
        why += " is too old for bf16 products (tinylm needs 2.6 or later)";
        return why;
    }
    const auto isa = unsigned(dnnl::get_effective_cpu_isa());
    const auto bf16 = unsigned(dnnl_cpu_isa_avx512_core_bf16);
    if ((isa & bf16) != bf16) {
        char hex[16];
        std::snprintf(hex, sizeof hex, "%x", isa);
        why = "oneDNN's effective ISA here (0x";
        why += hex;
        why += ") has neither AVX-512 BF16 nor AMX (the CPU lacks them, or ONEDNN_MAX_CPU_ISA limits it), "
               "and bf16 products would be slower than f32";
    }
    return why;
}

// n floats of src, times scale, to bf16 with AVX-512 BF16's conversion (round to nearest even, NaN stays NaN,
// as to_bf16): bf16 products run only on CPUs that have it (bf16_support).
__attribute__((target("avx512f,avx512bf16"))) inline void to_bf16_avx512(const float* src, index_t n, float scale,
                                                                         std::uint16_t* dst) {
    const __m512 s = _mm512_set1_ps(scale);
    index_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(s, _mm512_loadu_ps(src + i)));
        std::memcpy(dst + i, &h, sizeof h);
    }
    for (; i < n; ++i)
        dst[i] = to_bf16(scale * src[i]);
}

// Rows x cols of `src` (row stride ld) into dense bf16 rows of `dst`, times `scale`, over the OpenMP threads.
inline void convert_to_bf16(const float* src, index_t rows, index_t cols, index_t ld, float scale, std::uint16_t* dst) {
    const index_t grain = std::max<index_t>(1, 65536 / std::max<index_t>(1, cols));
    if (ld == cols) // one dense block: split it evenly whatever the row length
        return parallel_ranges(rows * cols, grain * cols,
                               [=](index_t i0, index_t i1) { to_bf16_avx512(src + i0, i1 - i0, scale, dst + i0); });
    parallel_ranges(rows, grain, [=](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r)
            to_bf16_avx512(src + r * ld, cols, scale, dst + r * cols);
    });
}

struct bf16_matmul_key {
    bool trans_a, trans_b, accumulate;
    index_t m, n, k, ldc;
    float beta;
    bool operator==(const bf16_matmul_key&) const = default;
};
struct bf16_matmul_key_hash {
    std::size_t operator()(const bf16_matmul_key& k) const {
        std::size_t h = std::size_t(k.trans_a) * 4 + std::size_t(k.trans_b) * 2 + std::size_t(k.accumulate);
        for (index_t v : {k.m, k.n, k.k, k.ldc})
            h = h * 1000003u ^ std::size_t(v);
        return h * 31 ^ std::hash<float>{}(k.beta);
    }
};

struct bf16_matmul {
    dnnl::matmul prim;
    dnnl::memory a, b, c;
};

// One per thread: oneDNN objects are not shared between threads that may run products at the same time.
struct bf16_matmul_cache {
    dnnl::engine eng{dnnl::engine::kind::cpu, 0};
    dnnl::stream strm{eng};
    std::unordered_map<bf16_matmul_key, bf16_matmul, bf16_matmul_key_hash> prims;
    std::vector<std::uint16_t> a_buf, b_buf; // grow only

    bf16_matmul& get(const bf16_matmul_key& key) {
        auto it = prims.find(key);
        if (it != prims.end()) return it->second;
        using dims = dnnl::memory::dims;
        using dt = dnnl::memory::data_type;
        // The operands are dense copies of what the caller stores: op(A) (m x k) is A^T when trans_a, a (k x m)
        // row-major buffer read with strides {1, m}; likewise B.
        const dnnl::memory::desc a_md(dims{key.m, key.k}, dt::bf16, key.trans_a ? dims{1, key.m} : dims{key.k, 1});
        const dnnl::memory::desc b_md(dims{key.k, key.n}, dt::bf16, key.trans_b ? dims{1, key.k} : dims{key.n, 1});
        const dnnl::memory::desc c_md(dims{key.m, key.n}, dt::f32, dims{key.ldc, 1});
        dnnl::primitive_attr attr;
        if (key.accumulate) {
            dnnl::post_ops po;
            po.append_sum(key.beta);
            attr.set_post_ops(po);
        }
#if DNNL_VERSION_MAJOR >= 3
        const dnnl::matmul::primitive_desc pd(eng, a_md, b_md, c_md, attr);
#else
        const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, eng);
#endif
        bf16_matmul e{dnnl::matmul(pd), dnnl::memory(a_md, eng, DNNL_MEMORY_NONE),
                      dnnl::memory(b_md, eng, DNNL_MEMORY_NONE), dnnl::memory(c_md, eng, DNNL_MEMORY_NONE)};
        return prims.emplace(key, std::move(e)).first->second;
    }
};

inline bf16_matmul_cache& thread_bf16_matmul_cache() {
    thread_local bf16_matmul_cache cache;
    return cache;
}

// C = alpha * op(A) op(B) + beta * C with op(A), op(B) rounded to bf16 (alpha folded into A before rounding,
// as autocast scales inside the product), f32 accumulation and f32 C.
inline void bf16_gemm(const gemm_args<float>& g) {
    if (g.m == 0 || g.n == 0) return;
    auto& cache = thread_bf16_matmul_cache();
    const index_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
    const index_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
    if (cache.a_buf.size() < std::size_t(a_rows * a_cols)) cache.a_buf.resize(std::size_t(a_rows * a_cols));
    if (cache.b_buf.size() < std::size_t(b_rows * b_cols)) cache.b_buf.resize(std::size_t(b_rows * b_cols));
    if (g.k == 0) { // an empty sum: oneDNN refuses zero-sized dimensions
        for (index_t i = 0; i < g.m; ++i)
            for (index_t j = 0; j < g.n; ++j)
                g.c[i * g.ldc + j] = g.beta == 0.0f ? 0.0f : g.beta * g.c[i * g.ldc + j];
        return;
    }
    convert_to_bf16(g.a, a_rows, a_cols, g.lda, g.alpha, cache.a_buf.data());
    convert_to_bf16(g.b, b_rows, b_cols, g.ldb, 1.0f, cache.b_buf.data());
    auto& e = cache.get({g.trans_a, g.trans_b, g.beta != 0.0f, g.m, g.n, g.k, g.ldc, g.beta});
    e.a.set_data_handle(cache.a_buf.data());
    e.b.set_data_handle(cache.b_buf.data());
    e.c.set_data_handle(g.c);
    e.prim.execute(cache.strm, {{DNNL_ARG_SRC, e.a}, {DNNL_ARG_WEIGHTS, e.b}, {DNNL_ARG_DST, e.c}});
    cache.strm.wait();
}

} // namespace detail
} // namespace tl
