// bench_gemm: f32 matrix-product throughput of each backend at transformer shapes, after checking each
// result against the reference backend. The GFLOP/s here is the ceiling that MFU figures divide by.
//   cmake -B build -DTINYLM_BUILD_BENCHMARKS=ON && cmake --build build --target bench_gemm
//   build/benchmarks/bench_gemm --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <tinylm/backend/default.hpp>
#include <tinylm/core/rng.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <stdexcept>
#include <vector>

namespace {

std::vector<float> random_matrix(std::int64_t n, std::uint64_t seed) {
    tl::counter_rng rng(seed);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v)
        x = float(rng.normal());
    return v;
}

// y (m, n) = x (m, k) W^T with W (n, k): the shape of a linear layer's forward pass.
template <class B>
void bm_linear_gemm(benchmark::State& state) {
    const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
    const auto x = random_matrix(m * k, 1), w = random_matrix(n * k, 2);
    std::vector<float> y(std::size_t(m * n)), expected(std::size_t(m * n));
    const tl::gemm_args<float> g{.trans_b = true,
                                 .m = m,
                                 .n = n,
                                 .k = k,
                                 .a = x.data(),
                                 .lda = k,
                                 .b = w.data(),
                                 .ldb = k,
                                 .c = y.data(),
                                 .ldc = n};
    // Correctness first: a few rows against the reference.
    auto check = g;
    check.m = std::min<std::int64_t>(m, 8);
    check.c = expected.data();
    tl::reference_cpu::gemm(check);
    B::gemm(g);
    for (std::int64_t i = 0; i < check.m * n; ++i)
        if (std::abs(y[std::size_t(i)] - expected[std::size_t(i)]) > 1e-3f * (1 + std::abs(expected[std::size_t(i)])))
            throw std::runtime_error("bench_gemm: result differs from the reference");
    for (auto _ : state) {
        B::gemm(g);
        benchmark::DoNotOptimize(y.data());
    }
    state.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * double(m) * double(n) * double(k), benchmark::Counter::kIsIterationInvariantRate,
                           benchmark::Counter::kIs1000);
}

// (tokens, out, in): config B's q projection, MLP up projection and output head at batch 8 x 512.
#define TINYLM_SHAPES                                                                                                  \
    ->Args({4096, 512, 512})                                                                                           \
        ->Args({4096, 1536, 512})                                                                                      \
        ->Args({4096, 8000, 512})                                                                                      \
        ->Unit(benchmark::kMillisecond)                                                                                \
        ->UseRealTime()
BENCHMARK(bm_linear_gemm<tl::eigen_cpu>) TINYLM_SHAPES;
#ifdef TINYLM_HAS_ONEDNN
BENCHMARK(bm_linear_gemm<tl::onednn_cpu>) TINYLM_SHAPES;
#endif

} // namespace

BENCHMARK_MAIN();
