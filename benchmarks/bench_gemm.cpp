// bench_gemm: f32 matrix-product throughput of each backend at transformer shapes, after checking each
// result against the reference backend. The GFLOP/s here is the ceiling that MFU figures divide by.
//   cmake -B build -DTINYLM_BUILD_BENCHMARKS=ON && cmake --build build --target bench_gemm
//   build/benchmarks/bench_gemm --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// With oneDNN it also times the f32 -> bf16 conversion of a whole model's product weights (bm_bf16_convert).
#include "train_throughput/bench_configs.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/core/rng.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<float> random_matrix(std::int64_t n, std::uint64_t seed) {
    tl::counter_rng rng(seed);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v)
        x = float(rng.normal());
    return v;
}

// y (m, n) = x (m, k) W^T with W (n, k): the shape of a linear layer's forward pass. Checked against the
// reference within f32's rounding, or for bf16 products (bm_linear_gemm_bf16) within bf16's: 2^-7 times the sum
// of the magnitudes of the terms (docs/precision.md "Accuracy").
template <class B, bool bf16 = false>
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
    for (std::int64_t i = 0; i < check.m; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
            double magnitudes = 0;
            for (std::int64_t p = 0; p < k; ++p)
                magnitudes += std::abs(double(x[std::size_t(i * k + p)]) * double(w[std::size_t(j * k + p)]));
            const double e = expected[std::size_t(i * n + j)],
                         bound = bf16 ? magnitudes / 128 : 1e-3 * (1 + std::abs(e));
            if (std::abs(y[std::size_t(i * n + j)] - e) > bound)
                throw std::runtime_error("bench_gemm: result differs from the reference");
        }
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
// The same products in bf16 with f32 accumulation (tl::set_cpu_precision(bf16): the operands' conversion included,
// as a training step runs them): the ceiling of bf16 training, where the CPU has it.
void bm_linear_gemm_bf16(benchmark::State& state) {
    const std::string why = tl::detail::bf16_support();
    if (!why.empty()) return state.SkipWithError(why.c_str());
    tl::scoped_cpu_precision bf16(tl::precision::bf16);
    bm_linear_gemm<tl::onednn_cpu, true>(state);
}
BENCHMARK(bm_linear_gemm_bf16) TINYLM_SHAPES;
#endif

#ifdef TINYLM_HAS_ONEDNN
// bf16 products convert their operands, weights included, right before each product (docs/precision.md): a
// weight is converted twice per training step (forward and input gradient). This is one conversion of every
// product weight of config A (argument 0) or B (1): all parameters but the embedding and the norms, as
// d_model-wide rows, as the products convert them. It bounds what a bf16 copy kept per optimizer step can save.
void bm_bf16_convert(benchmark::State& state) {
    const std::string why = tl::detail::bf16_support();
    if (!why.empty()) {
        state.SkipWithError(why.c_str());
        return;
    }
    const tl::model_config c = state.range(0) == 0 ? bench::config_a::value : bench::config_b::value;
    const std::int64_t d = c.d_model,
                       n = tl::parameter_count(c) - std::int64_t(c.vocab_size) * d - (2 * c.n_layers + 1) * d;
    const auto w = random_matrix(n, 3);
    std::vector<std::uint16_t> out(static_cast<std::size_t>(n));
    for (auto _ : state) {
        tl::detail::convert_to_bf16(w.data(), n / d, d, d, 1.0f, out.data());
        benchmark::DoNotOptimize(out.data());
    }
    state.counters["weights"] = double(n);
    state.counters["GB/s"] =
        benchmark::Counter(6.0 * double(n), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(bm_bf16_convert)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif

} // namespace

BENCHMARK_MAIN();
