// bench_generate: batch-1 generation speed with the KV cache (tl::generate, greedy) and the machine's memory
// bandwidth, measured in the same process (issue 6, docs/performance.md). One JSON line on stdout; run.py runs it
// beside generation_peer.py (Hugging Face generate, use_cache, greedy).
//
//   build-speed/benchmarks/generation/bench_generate --config b --new-tokens 256 --repeats 3
//
// Decode tokens/s counts the new tokens after the first (each costs one cached forward of one position) over the
// time between the first and the last; prefill (the prompt) is reported apart. Bytes read per decoded token: every
// weight matrix once (the output head included; of the embedding only one row) plus the keys and values of every
// layer up to the current position (averaged over the decode). The bandwidth is a STREAM-style triad
// a = b + s c over three 128 MiB float arrays (bytes counted as STREAM does: 3 x 4 per element), best of 5.
// --precision bf16|q8_0|q4_0: the decoding steps read copies of the weights (tl::decoding_weights; in the count
// above bf16 is 2 bytes a weight, q8_0 1 + 4 / 32, q4_0 0.5 + 4 / 32); the prompt's prefill reads the f32 weights.
// --kv-cache bf16: the KV cache keeps keys and values in bf16 (2 bytes an element in the count above).
// --min-group N, --min-group-keys K: decoding attention runs a key/value head's query heads as one tile product
// for groups of N or more, and groups of 2 or more over K keys or more (ops/attention.hpp, decodes_by_group); else
// each head alone.
// --isa avx2|baseline: the kernels' copies an older CPU runs (core/simd.hpp), on this one; the default, best, takes
// the widest the CPU has.
#include "../train_throughput/bench_configs.hpp"

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/eval/generate_batch.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/registry.hpp>

#include <CLI/CLI.hpp>
#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

// Qwen2.5-0.5B's shape with 7 key/value heads: groups of 2 query heads (as Qwen3-0.6B's 16 over 8), whose decoding
// attention goes together only over long contexts (ops/attention.hpp, decodes_by_group).
struct qwen_0_5b_groups_of_2 {
    static constexpr tl::model_config value = [] {
        tl::model_config c = tl::presets::qwen2_5_0_5b::value;
        c.n_kv_heads = 7;
        return c;
    }();
};

// Qwen3-0.6B's sizes (huggingface.co/Qwen/Qwen3-0.6B/config.json: 16 query heads over 8 key/value heads of width 128,
// 28 layers) without its q/k norms (the decoder had none when docs/performance.md measured it): groups of 2 over as
// many key/value heads as a power of two, for decoding at long contexts. qwen3-0.6b is Qwen3-0.6B itself.
struct qwen3_0_6b_shape {
    static constexpr tl::model_config value = [] {
        tl::model_config c = tl::presets::qwen3_0_6b::value;
        c.qk_norm = false;
        return c;
    }();
};

// The configurations --config offers, under their command-line names.
// qwen0.5b: Qwen2.5-0.5B's shape (random weights; context 32768), for long contexts, where the KV cache's bytes count.
using configs = std::tuple<tl::presets::named<"a", bench::config_a>, tl::presets::named<"b", bench::config_b>,
                           tl::presets::named<"qwen0.5b", tl::presets::qwen2_5_0_5b>,
                           tl::presets::named<"qwen0.5b-kv7", qwen_0_5b_groups_of_2>,
                           tl::presets::named<"qwen3-0.6b-shape", qwen3_0_6b_shape>,
                           tl::presets::named<"qwen3-0.6b", tl::presets::qwen3_0_6b>>;

double triad_gb_per_s() {
    const std::size_t n = std::size_t(32) << 20; // 32 Mi floats = 128 MiB per array, 4x the L3
    std::vector<float> a(n), b(n), c(n);
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i) { // first touch by the threads that use it
        a[i] = 0;
        b[i] = 1;
        c[i] = 2;
    }
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
        const double t0 = bench::now_seconds();
        const float s = 3.0f;
        float* pa = a.data();
        const float *pb = b.data(), *pc = c.data();
#pragma omp parallel for schedule(static)
        for (std::size_t i = 0; i < n; ++i)
            pa[i] = pb[i] + s * pc[i];
        best = std::min(best, bench::now_seconds() - t0);
    }
    if (a[n / 2] != 7.0f) std::fprintf(stderr, "triad: unexpected value %g\n", double(a[n / 2]));
    return 3.0 * 4.0 * double(n) / best * 1e-9;
}

// A fingerprint of every generated token: equal fingerprints across builds mean the same greedy output.
std::uint64_t fnv1a(const std::vector<tl::token_t>& tokens) {
    std::uint64_t h = 14695981039346656037ull;
    for (const tl::token_t t : tokens) {
        h ^= std::uint64_t(std::uint32_t(t));
        h *= 1099511628211ull;
    }
    return h;
}

template <class Config>
int run(const std::string& name, int prompt_len, int new_tokens, int repeats, int rows, tl::decoding_format format,
        tl::kv_precision kv) {
    using model_t = tl::decoder<Config>;
    constexpr tl::model_config c = Config::value;
    auto model = std::make_unique<model_t>(1);
    model->set_kv_precision(kv);
    std::optional<tl::decoding_weights> copies;
    if (format != tl::decoding_format::f32) copies.emplace(model->parameter_entries(), format);
    std::vector<tl::token_t> prompt(static_cast<std::size_t>(prompt_len));
    tl::counter_rng rng(7);
    for (auto& t : prompt)
        t = tl::token_t(rng.below(std::uint64_t(c.vocab_size)));
    tl::generation_options options{.max_new_tokens = new_tokens, .sampling = {.temperature = 0.0}};

    const double bandwidth_before = triad_gb_per_s();
    std::vector<double> decode_tps, prefill_seconds;
    std::vector<tl::token_t> first_output;
    for (int r = 0; r < repeats + 1; ++r) { // the first is a warm-up
        std::vector<double> stamps;
        const double t0 = bench::now_seconds();
        // One stamp a step: with --rows, the step's first row (every row runs the step's one forward).
        const auto out = rows == 1
                             ? tl::generate(*model, prompt, options,
                                            [&](tl::token_t) {
                                                stamps.push_back(bench::now_seconds());
                                                return true;
                                            })
                             : tl::generate_batch(*model, prompt, rows, options, [&](std::size_t row, tl::token_t) {
                                   if (row == 0) stamps.push_back(bench::now_seconds());
                                   return true;
                               })[0];
        if (int(out.size()) != new_tokens) {
            std::fprintf(stderr, "bench_generate: generated %zu tokens, expected %d\n", out.size(), new_tokens);
            return 1;
        }
        if (r == 0) {
            first_output = out;
            continue;
        }
        prefill_seconds.push_back(stamps.front() - t0);
        decode_tps.push_back(double(rows) * double(new_tokens - 1) / (stamps.back() - stamps.front()));
    }
    const double bandwidth = std::max(bandwidth_before, triad_gb_per_s());

    const double d = c.d_model, ff = c.d_ff, q = c.q_width(), kv_width = c.kv_width();
    const double weights = c.n_layers * (d * q + 2 * d * kv_width + q * d + 3 * d * ff + 2 * d) + d +
                           double(c.vocab_size) * d + d; // layers, final norm, head, one embedding row
    const double mean_position = prompt_len + (new_tokens - 1) / 2.0;
    const double kv_bytes = (kv == tl::kv_precision::bf16 ? 2.0 : 4.0) * c.n_layers * 2 * kv_width * mean_position;
    const double bytes_per_weight = format == tl::decoding_format::bf16   ? 2.0
                                    : format == tl::decoding_format::q8_0 ? 1.0 + 4.0 / 32
                                    : format == tl::decoding_format::q4_0 ? 0.5 + 4.0 / 32
                                                                          : 4.0;
    // Rows decoded together read the weights once a step: bytes per generated token, over the step's rows.
    const double bytes_per_token = (bytes_per_weight * weights + rows * kv_bytes) / rows;
    const double tps = bench::median(decode_tps);
    std::printf(
        "{\"impl\": \"tinylm\", \"config\": \"%s\", \"precision\": \"%s\", \"kv_cache\": \"%s\", \"isa\": \"%s\", "
        "\"threads\": %d, "
        "\"rows\": %d, \"gemv_rows\": %d, \"min_group\": %d, \"min_long_group\": %d, \"min_group_keys\": %d, "
        "\"prompt_tokens\": %d, "
        "\"new_tokens\": %d, "
        "\"decode_tokens_per_s\": %s, \"decode_tokens_per_s_median\": %.3f, \"prefill_seconds\": %s, "
        "\"bytes_per_token\": %.0f, \"triad_gb_per_s\": %.2f, \"bandwidth_fraction\": %.4f, "
        "\"peak_rss_mib\": %.1f, \"first_tokens\": [%d, %d, %d, %d], \"tokens_fnv1a\": \"%016llx\"}\n",
        name.c_str(), tl::to_string(format), tl::to_string(kv),
        tl::detail::avx512_clones_active() ? "avx512" : (tl::detail::avx2_clones_active() ? "avx2" : "baseline"),
        omp_get_max_threads(), rows, int(tl::detail::max_gemv_rows), int(tl::detail::min_decoding_group),
        int(tl::detail::min_long_context_group), int(tl::detail::min_group_keys), prompt_len, new_tokens,
        bench::json_array(decode_tps).c_str(), tps, bench::json_array(prefill_seconds).c_str(), bytes_per_token,
        bandwidth, bytes_per_token * tps / (bandwidth * 1e9), bench::peak_rss_mib(), first_output[0], first_output[1],
        first_output[2], first_output[3], static_cast<unsigned long long>(fnv1a(first_output)));
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"tinylm batch-1 generation speed and memory bandwidth (issue 6; docs/performance.md)"};
    std::string config = "b";
    int prompt_len = 16, new_tokens = 256, repeats = 3, rows = 1;
    std::string precision = "f32";
    app.add_option("--config", config,
                   "a, b (docs/performance.md), qwen0.5b (Qwen2.5-0.5B's shape), qwen0.5b-kv7 (the same with 7 "
                   "key/value heads), qwen3-0.6b (Qwen3-0.6B: QK-norm, heads of 128) or qwen3-0.6b-shape (its sizes "
                   "without the q/k norms)")
        ->check(CLI::IsMember(tl::presets::names<configs>()));
    app.add_option("--prompt", prompt_len, "prompt tokens (random)")->check(CLI::PositiveNumber);
    app.add_option("--new-tokens", new_tokens, "tokens to generate")->check(CLI::Range(2, 4096));
    app.add_option("--rows", rows,
                   "continuations decoded together (tl::generate_batch: one forward a step for all); tokens/s "
                   "counts every row's")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    app.add_option("--repeats", repeats, "timed generations after one warm-up")->check(CLI::PositiveNumber);
    app.add_option("--precision", precision, "the weights the decoding steps read: f32, or bf16, q8_0 or q4_0 copies")
        ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}))
        ->capture_default_str();
    app.add_option("--gemv-rows", tl::detail::max_gemv_rows,
                   "products of up to this many rows run tinylm's decoding kernels, each row summed as alone "
                   "(backend/gemv.hpp); 1: the GEMM library for every product of several rows")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    app.add_option("--min-group", tl::detail::min_decoding_group,
                   "decoding, a key/value head's query heads go through one tile product from this many a group "
                   "(ops/attention.hpp); larger than the model's group: each head by the row kernel")
        ->check(CLI::Range(2, 1 << 20))
        ->capture_default_str();
    app.add_option("--min-group-keys", tl::detail::min_group_keys,
                   "decoding, smaller groups of --min-long-group heads or more go through one tile product over "
                   "this many keys")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--min-long-group", tl::detail::min_long_context_group,
                   "decoding, the smallest group that goes together from --min-group-keys keys (smaller ones: by "
                   "the row kernel unless --min-group says otherwise)")
        ->check(CLI::Range(2, 1 << 20))
        ->capture_default_str();
    std::string kv_cache = "f32";
    app.add_option("--kv-cache", kv_cache, "the KV cache's keys and values: f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    std::string isa = "best";
    app.add_option("--isa", isa, "the kernels' copies to run: best (the widest this CPU has), avx2, baseline (SSE2)")
        ->check(CLI::IsMember({"best", "avx2", "baseline"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    tl::detail::allow_avx512_clones = isa == "best";
    tl::detail::allow_avx2_clones = isa != "baseline";
    try {
        return tl::presets::visit<configs>(config, [&]<class Config>() {
            return run<Config>(config, prompt_len, new_tokens, repeats, rows, tl::parse_decoding_format(precision),
                               tl::parse_kv_precision(kv_cache));
        });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_generate: %s\n", e.what());
        return 1;
    }
}
