// bench_decode_products: the matrix products of decoding steps alone: y = x W^T for 1 to 8 rows of activations
// (sequences decoded together), W (out, in) in f32, with tinylm's kernels (backend/gemv.hpp: each row summed as
// alone) and with the GEMM library (oneDNN, or Eigen in a build without it: what f32 products of several rows ran
// before; products of one row never go there). A stack of copies of W, 128 MB in all, is cycled through so that the
// weights come from memory, as in a model's step; GB/s counts the weights' bytes once a product.
//
//   build-bench/benchmarks/generation/bench_decode_products --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true
// Arguments of each case: out, in, rows, path (0: tinylm's kernels, 1: the GEMM library).
#include <tinylm/backend/default.hpp>
#include <tinylm/core/rng.hpp>

#include <benchmark/benchmark.h>

#include <vector>

namespace {

using tl::index_t;

void bm_decode_product(benchmark::State& state) {
    const index_t out = state.range(0), in = state.range(1), rows = state.range(2);
    const bool library = state.range(3) == 1;
    const index_t copies = std::max<index_t>(2, (index_t(128) << 20) / (out * in * index_t(sizeof(float))));
    std::vector<float> w(std::size_t(copies * out * in)), x(std::size_t(rows * in)), y(std::size_t(rows * out));
    tl::counter_rng rng(1);
    for (float& v : w)
        v = float(0.05 * rng.normal());
    for (float& v : x)
        v = float(rng.normal());
    const index_t saved = tl::detail::max_gemv_rows;
    tl::detail::max_gemv_rows = library ? 1 : 8;
    index_t next = 0;
    for (auto _ : state) {
        tl::default_backend::gemm(tl::gemm_args<float>{.trans_b = true,
                                                       .m = rows,
                                                       .n = out,
                                                       .k = in,
                                                       .a = x.data(),
                                                       .lda = in,
                                                       .b = w.data() + next * out * in,
                                                       .ldb = in,
                                                       .c = y.data(),
                                                       .ldc = out});
        next = (next + 1) % copies;
        benchmark::DoNotOptimize(y.data());
    }
    tl::detail::max_gemv_rows = saved;
    state.counters["GB/s"] = benchmark::Counter(
        double(out * in) * sizeof(float), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Config B's (1536 x 512 gate/up, 512 x 1536 down, 8000 x 512 head) and Qwen2.5-0.5B's (4864 x 896 gate/up,
// 896 x 4864 down) products; one row only through tinylm (the library never takes it).
void decode_shapes(benchmark::internal::Benchmark* b) {
    for (const auto& [out, in] :
         {std::pair<index_t, index_t>{1536, 512}, {512, 1536}, {8000, 512}, {4864, 896}, {896, 4864}})
        for (const index_t rows : {1, 2, 4, 8})
            for (const index_t library : {0, 1})
                if (rows > 1 || library == 0) b->Args({out, in, rows, library});
}
BENCHMARK(bm_decode_product)->Apply(decode_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();

} // namespace

BENCHMARK_MAIN();
