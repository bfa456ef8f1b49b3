// bench_sampling: the cost of choosing one token (eval/sampling.hpp) over Qwen2's vocabulary of 151,936, per
// sampling setting, on two kinds of logits: "spread" (normal, sd 2: a flat distribution whose top-p nucleus holds
// thousands of tokens, the worst case for sorting) and "peaked" (normal, sd 4: a nucleus of tens, as a trained
// model's usually is). A 600-token history feeds the repetition penalty.
//
//   build-bench/benchmarks/generation/bench_sampling --benchmark_repetitions=3 --benchmark_report_aggregates_only
#include <tinylm/core/rng.hpp>
#include <tinylm/eval/sampling.hpp>

#include <benchmark/benchmark.h>

#include <vector>

namespace {

constexpr tl::index_t vocab = 151936;

std::vector<float> logits_with_spread(double sd) {
    std::vector<float> z(static_cast<std::size_t>(vocab));
    tl::counter_rng rng(1);
    for (float& x : z)
        x = float(sd * rng.normal());
    return z;
}

const tl::sampling_options settings[] = {
    {.temperature = 0},                                                        // greedy
    {.temperature = 0.7, .top_k = 20, .top_p = 0.8},                           // Qwen2.5's generation_config
    {.temperature = 0.6, .top_k = 0, .top_p = 0.9},                            // top-p alone (--top-k 0)
    {.temperature = 1, .top_k = 50, .top_p = 0.95, .repetition_penalty = 1.1}, // transformers' top-k, a penalty
    {.temperature = 0.8},                                                      // the whole distribution
};

void bm_sample(benchmark::State& state) {
    const std::vector<float> logits = logits_with_spread(state.range(1) == 0 ? 2.0 : 4.0);
    std::vector<tl::token_t> history(600);
    tl::counter_rng rng(2);
    for (tl::token_t& t : history)
        t = tl::token_t(rng.below(vocab));
    tl::sampler s(vocab, settings[state.range(0)]);
    for (auto _ : state)
        benchmark::DoNotOptimize(s.sample(logits, history));
}

const char* const setting_names[] = {"greedy", "k20_p0.8_t0.7", "p0.9_t0.6", "k50_p0.95_rep1.1", "t0.8"};

} // namespace

int main(int argc, char** argv) {
    for (int i = 0; i < 5; ++i)
        for (int peaked = 0; peaked < 2; ++peaked)
            benchmark::RegisterBenchmark(
                (std::string("bm_sample/") + setting_names[i] + (peaked ? "/peaked" : "/spread")).c_str(), bm_sample)
                ->Args({i, peaked})
                ->Unit(benchmark::kMicrosecond);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
