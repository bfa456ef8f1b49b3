// bench_decode_products: the matrix products of decoding steps alone: y = x W^T for 1 to 8 rows of activations
// (sequences decoded together), W (out, in) in f32, with tinylm's kernels (backend/gemv.hpp: each row summed as
// alone) and with the GEMM library (oneDNN, or Eigen in a build without it: what f32 products of several rows ran
// before; products of one row never go there), and from decoding copies of W (tl::decoding_weights: bf16, q8_0, q4_0).
// A stack of copies of W is cycled through so that the weights come from memory, as in a model's step (128 MB of what
// the products read); GB/s counts the bytes a product reads of its weights (the f32 ones, or the copy's).
//
//   build-bench/benchmarks/generation/bench_decode_products --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true
// Arguments of each case: out, in, rows, path (0: tinylm's kernels on f32 weights, 1: the GEMM library, 2, 3, 4:
// tinylm's kernels on bf16, q8_0, q4_0 copies).
#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/default.hpp>
#include <tinylm/core/rng.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace {

using tl::index_t;

void bm_decode_product(benchmark::State& state) {
    const index_t out = state.range(0), in = state.range(1), rows = state.range(2);
    const bool library = state.range(3) == 1;
    // Enough copies that what the products read, 128 MB, is 4 times the L3 of a large CPU (32 MB): the f32 weights
    // the copies are made from are 1.8 to 6.4 times as large.
    constexpr double bytes_per_weight[] = {4, 4, 2, 1 + 4.0 / 32, 0.5 + 4.0 / 32};
    const index_t copies = std::max<index_t>(
        2, index_t(double(index_t(128) << 20) / (double(out * in) * bytes_per_weight[state.range(3)])));
    std::vector<float> w(std::size_t(copies * out * in)), x(std::size_t(rows * in)), y(std::size_t(rows * out));
    tl::counter_rng rng(1);
    for (index_t i = 0; i < out * in; ++i) // one matrix, then copies of it
        w[std::size_t(i)] = float(0.05 * rng.normal());
    for (index_t c = 1; c < copies; ++c)
        std::copy(w.begin(), w.begin() + out * in, w.begin() + c * out * in);
    for (float& v : x)
        v = float(rng.normal());
    struct entry {
        tl::tensor_view<float> value;
    };
    std::vector<entry> entries;
    for (index_t c = 0; c < copies; ++c)
        entries.push_back({{w.data() + c * out * in, {out, in}}});
    constexpr tl::decoding_format formats[] = {tl::decoding_format::bf16, tl::decoding_format::q8_0,
                                               tl::decoding_format::q4_0};
    std::optional<tl::decoding_weights> copied;
    if (state.range(3) >= 2) copied.emplace(entries, formats[state.range(3) - 2]);
    const double bytes = copied ? double(copied->bytes()) / double(copies) : double(out * in) * sizeof(float);
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
    state.counters["GB/s"] =
        benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Config B's (1536 x 512 gate/up, 512 x 1536 down, 8000 x 512 head) and Qwen2.5-0.5B's (4864 x 896 gate/up,
// 896 x 4864 down) products; one row only through tinylm (the library never takes it).
void decode_shapes(benchmark::internal::Benchmark* b) {
    for (const auto& [out, in] :
         {std::pair<index_t, index_t>{1536, 512}, {512, 1536}, {8000, 512}, {4864, 896}, {896, 4864}})
        for (const index_t rows : {1, 2, 4, 8})
            for (const index_t path : {0, 1, 2, 3, 4})
                if (rows > 1 || path != 1) b->Args({out, in, rows, path});
}
BENCHMARK(bm_decode_product)->Apply(decode_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();

} // namespace

BENCHMARK_MAIN();
