// bench_matmul_primitive: is a oneDNN matmul primitive, created once per shape and reused, faster than dnnl_sgemm
// (backend/onednn.hpp) at config B's projection products? A measurement for docs/performance.md, not a backend:
// on AVX2 CPUs oneDNN 2.6 implements f32 matmul with the same jit gemm (ONEDNN_VERBOSE=1 prints gemm:jit).
//   OMP_NUM_THREADS=2 build-speed/benchmarks/ops/bench_matmul_primitive
//   ONEDNN_VERBOSE=1 build-speed/benchmarks/ops/bench_matmul_primitive | grep exec | head -3
#include <chrono>
#include <cmath>
#include <cstdio>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tinylm/backend/onednn.hpp>
#include <tinylm/core/error.hpp>
#include <unordered_map>
#include <vector>

namespace {
using tl::gemm_args;
using tl::index_t;
using tl::onednn_cpu;

struct matmul_key {
    bool ta, tb;
    index_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    bool operator==(const matmul_key&) const = default;
};
struct matmul_key_hash {
    std::size_t operator()(const matmul_key& k) const {
        std::size_t h = std::size_t(k.ta) * 2 + std::size_t(k.tb);
        for (index_t v : {k.m, k.n, k.k, k.lda, k.ldb, k.ldc})
            h = h * 1000003u ^ std::size_t(v);
        h = h * 31 ^ std::hash<float>{}(k.alpha);
        h = h * 31 ^ std::hash<float>{}(k.beta);
        return h;
    }
};
struct matmul_entry {
    dnnl::matmul prim;
    dnnl::memory a, b, c;
};
struct matmul_cache {
    dnnl::engine eng{dnnl::engine::kind::cpu, 0};
    dnnl::stream strm{eng};
    std::unordered_map<matmul_key, matmul_entry, matmul_key_hash> map;
    matmul_entry& get(const gemm_args<float>& g) {
        const matmul_key key{g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.alpha, g.beta};
        auto it = map.find(key);
        if (it != map.end()) return it->second;
        using dims = dnnl::memory::dims;
        using dt = dnnl::memory::data_type;
        const dnnl::memory::desc a_md(dims{g.m, g.k}, dt::f32, g.trans_a ? dims{1, g.lda} : dims{g.lda, 1});
        const dnnl::memory::desc b_md(dims{g.k, g.n}, dt::f32, g.trans_b ? dims{1, g.ldb} : dims{g.ldb, 1});
        const dnnl::memory::desc c_md(dims{g.m, g.n}, dt::f32, dims{g.ldc, 1});
        dnnl::primitive_attr attr;
        if (g.alpha != 1.0f) attr.set_output_scales(0, {g.alpha});
        if (g.beta != 0.0f) {
            dnnl::post_ops po;
            po.append_sum(g.beta);
            attr.set_post_ops(po);
        }
        const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, eng);
        matmul_entry e{dnnl::matmul(pd), dnnl::memory(a_md, eng, DNNL_MEMORY_NONE),
                       dnnl::memory(b_md, eng, DNNL_MEMORY_NONE), dnnl::memory(c_md, eng, DNNL_MEMORY_NONE)};
        return map.emplace(key, std::move(e)).first->second;
    }
};
inline matmul_cache& thread_matmul_cache() {
    thread_local matmul_cache c;
    return c;
}

// The prototype: one primitive per (shape, transposes, strides, alpha, beta) and thread; handles swapped per call.
struct onednn_matmul_cpu {
    [[maybe_unused]] static constexpr std::string_view name = "onednn_matmul_cpu"; // clang: unread
    static void gemm(const gemm_args<float>& g) {
        if (g.m == 0 || g.n == 0) return;
        auto& cache = thread_matmul_cache();
        auto& e = cache.get(g);
        e.a.set_data_handle(const_cast<float*>(g.a));
        e.b.set_data_handle(const_cast<float*>(g.b));
        e.c.set_data_handle(g.c);
        e.prim.execute(cache.strm, {{DNNL_ARG_SRC, e.a}, {DNNL_ARG_WEIGHTS, e.b}, {DNNL_ARG_DST, e.c}});
        cache.strm.wait();
    }
};
template <class B>
double t(const gemm_args<float>& g, int reps) {
    B::gemm(g);
    double best = 1e9;
    for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        B::gemm(g);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}
} // namespace

int main() {
    const index_t N = 4096;
    std::vector<float> x(N * 1536), w(1536 * 1536), y(N * 1536), y2(N * 1536);
    for (size_t i = 0; i < x.size(); ++i)
        x[i] = float(std::sin(i * 0.37));
    for (size_t i = 0; i < w.size(); ++i)
        w[i] = float(std::cos(i * 0.11));
    struct S {
        index_t o, i;
    } shapes[] = {{512, 512}, {256, 512}, {1536, 512}, {512, 1536}};
    for (auto s : shapes) {
        // variant 0: forward x W^T; 1: input gradient dy W; 2: weight gradient dy^T x with beta = 1
        for (int variant = 0; variant < 3; ++variant) {
            gemm_args<float> g;
            if (variant == 0)
                g = {.trans_b = true,
                     .m = N,
                     .n = s.o,
                     .k = s.i,
                     .a = x.data(),
                     .lda = s.i,
                     .b = w.data(),
                     .ldb = s.i,
                     .c = y.data(),
                     .ldc = s.o};
            if (variant == 1)
                g = {.m = N,
                     .n = s.i,
                     .k = s.o,
                     .a = x.data(),
                     .lda = s.o,
                     .b = w.data(),
                     .ldb = s.i,
                     .c = y.data(),
                     .ldc = s.i};
            if (variant == 2)
                g = {.trans_a = true,
                     .m = s.o,
                     .n = s.i,
                     .k = N,
                     .a = x.data(),
                     .lda = s.o,
                     .b = x.data(),
                     .ldb = s.i,
                     .beta = 1.0f,
                     .c = y.data(),
                     .ldc = s.i};
            auto g2 = g;
            g2.c = y2.data();
            std::fill(y.begin(), y.end(), 0.5f);
            std::fill(y2.begin(), y2.end(), 0.5f);
            onednn_cpu::gemm(g);
            onednn_matmul_cpu::gemm(g2);
            double md = 0;
            for (index_t i = 0; i < g.m * g.ldc; ++i)
                md = std::max(md, double(std::abs(y[i] - y2[i])) / (1 + std::abs(y[i])));
            const double fl = 2.0 * g.m * g.n * g.k;
            double a = t<onednn_cpu>(g, 5), b = t<onednn_matmul_cpu>(g2, 5);
            std::printf("%4lld x %4lld variant %d: sgemm %.1f GFLOP/s, matmul %.1f GFLOP/s (diff %.1e)\n",
                        (long long)s.o, (long long)s.i, variant, fl / a * 1e-9, fl / b * 1e-9, md);
        }
    }
}
