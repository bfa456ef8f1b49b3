// bench_train: training throughput of a tinylm decoder (loss, backward, AdamW step) on random tokens, with the
// GEMM ceiling measured in the same process. One JSON line on stdout; run.py runs it beside the PyTorch peer
// (pytorch_peer.py) and prints the comparison (docs/performance.md).
//
//   build-speed/benchmarks/train_throughput/bench_train --config b --steps 3 --warmup 1 [--checkpointing]
//   build-speed/benchmarks/train_throughput/bench_train --config a --save-init runs/speed-a   (for run.py --check)
//
// Configs: a, b (bench_configs.hpp) and 150m (tl::presets::russian_novels_150m). Every step draws a fresh batch of
// uniform random tokens (the counter RNG, so both implementations could see the same ones); steps after the warm-up
// are timed one by one (zero_grad + loss + backward + AdamW), and tokens/s is batch x time / the median step.
#include "bench_configs.hpp"
#include "gemm_ceiling.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/model/registry.hpp>
#include <tinylm/optim/adamw.hpp>

#include <CLI/CLI.hpp>
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

// The configurations --config offers, under their command-line names, and their default batches.
using configs = std::tuple<tl::presets::named<"a", bench::config_a>, tl::presets::named<"b", bench::config_b>,
                           tl::presets::named<"150m", tl::presets::russian_novels_150m>>;
const std::map<std::string, int> default_batch = {{"a", 16}, {"b", 8}, {"150m", 4}};

struct settings {
    std::string config = "a";
    int batch = 0; // 0: the config's default
    int steps = 3;
    int warmup = 1;
    bool ceiling = true;
    bool checkpointing = false;
    std::string save_init;
    bool runtime_sizes = false;
    std::uint64_t seed = 1;
    std::string precision = "f32";
};

// Model: decoder<Config> (sizes fixed at compile time) or decoder<families::llama> (the same sizes read at run
// time, --runtime-sizes); both are built from Config::value.
template <class Config, class Model>
int run(const settings& s, int default_batch) {
    using model_t = Model;
    const tl::index_t B = s.batch > 0 ? s.batch : default_batch, T = Config::value.max_seq_len;
    const tl::index_t vocab = Config::value.vocab_size;

    // bf16: the products in bf16 with f32 accumulation, everything else f32 (docs/precision.md); the ceiling below
    // stays f32.
#ifdef TINYLM_HAS_ONEDNN
    std::optional<tl::scoped_cpu_precision> bf16;
#else
    std::optional<int> bf16;
#endif
#ifdef TINYLM_HAS_ONEDNN
    if (s.precision == "bf16") bf16.emplace(tl::precision::bf16);
#else
    tl::check(s.precision == "f32",
              "bench_train: --precision bf16 needs oneDNN (configure with TINYLM_WITH_ONEDNN=ON)");
#endif
    auto model = std::make_unique<model_t>(Config::value, s.seed);
    if (!s.save_init.empty()) tl::save_pretrained(*model, std::filesystem::path(s.save_init) / "init");
    model->set_gradient_checkpointing(s.checkpointing);
    model->plan(B, T);
    tl::adamw opt(*model, {.lr = 1e-4, .weight_decay = 0.1});

    std::vector<tl::token_t> ids(std::size_t(B * T)), targets(std::size_t(B * T));
    auto draw = [&](int step) {
        tl::counter_rng rng(s.seed, 1000 + std::uint64_t(step));
        for (auto& t : ids)
            t = tl::token_t(rng.below(std::uint64_t(vocab)));
        for (auto& t : targets)
            t = tl::token_t(rng.below(std::uint64_t(vocab)));
    };
    const tl::cview<tl::token_t> ids_view{ids.data(), {B, T}}, targets_view{targets.data(), {B, T}};

    std::vector<double> step_seconds, losses;
    for (int step = 0; step < s.warmup + s.steps; ++step) {
        draw(step);
        if (step == 0 && !s.save_init.empty()) {
            tl::safetensors_writer w;
            w.add_metadata("format", "pt");
            w.add<tl::token_t>("ids", ids_view);
            w.add<tl::token_t>("targets", targets_view);
            w.save(std::filesystem::path(s.save_init) / "batch.safetensors");
        }
        const double t0 = bench::now_seconds();
        model->zero_grad();
        const float loss = model->loss(ids_view, targets_view);
        model->backward();
        opt.step();
        const double t = bench::now_seconds() - t0;
        losses.push_back(loss);
        if (step >= s.warmup) step_seconds.push_back(t);
        std::fprintf(stderr, "tinylm %s step %d: loss %.5f, %.3f s\n", s.config.c_str(), step, double(loss), t);
    }
    const double rss = bench::peak_rss_mib(); // before the ceiling's buffers
    bf16.reset();
    bench::gemm_ceiling_result ceiling;
    if (s.ceiling) ceiling = bench::measure_gemm_ceiling<typename model_t::backend>(Config::value, B * T);

    std::printf("{\"impl\": \"tinylm\", \"variant\": \"%s\", \"precision\": \"%s\", \"sizes\": \"%s\", \"config\": "
                "\"%s\", \"batch\": %lld, "
                "\"seq_len\": %lld, "
                "\"checkpointing\": %s, \"threads\": %d, \"parameters\": %lld, \"flops_per_token\": %.6g, "
                "\"tokens_per_step\": %lld, "
                "\"step_seconds\": %s, \"losses\": %s, \"peak_rss_mib\": %.1f, \"activation_mib\": %.1f, "
                "\"parameter_arena_mib\": %.1f, \"gemm_model_shapes_gflops\": %.2f, \"gemm_square_gflops\": %.2f, "
                "\"gemm_model_shapes_seconds\": %.4f}\n",
                std::string(model_t::backend::name).c_str(), s.precision.c_str(),
                s.runtime_sizes ? "run-time" : "compile-time", s.config.c_str(), (long long)B, (long long)T,
                s.checkpointing ? "true" : "false", omp_get_max_threads(),
                (long long)tl::parameter_count(Config::value), tl::flops_per_token(Config::value, int(T)),
                (long long)(B * T), bench::json_array(step_seconds).c_str(), bench::json_array(losses).c_str(), rss,
                double(model->activation_bytes()) / (1 << 20), double(model->parameter_arena_bytes()) / (1 << 20),
                ceiling.model_shapes_gflops, ceiling.square_gflops, ceiling.model_shapes_seconds);
    if (!s.save_init.empty()) {
        std::FILE* f = std::fopen((std::filesystem::path(s.save_init) / "tinylm_loss.json").c_str(), "w");
        if (f) {
            std::fprintf(f, "{\"loss\": %.8f}\n", losses.front());
            std::fclose(f);
        }
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"tinylm training throughput (issue 6; docs/performance.md)"};
    settings s;
    app.add_option("--config", s.config, "a, b or 150m")->check(CLI::IsMember(tl::presets::names<configs>()));
    app.add_option("--batch", s.batch, "sequences per step (default: a 16, b 8, 150m 4)");
    app.add_option("--steps", s.steps, "timed steps")->check(CLI::PositiveNumber);
    app.add_option("--warmup", s.warmup, "untimed steps first");
    app.add_option("--seed", s.seed, "initialisation and token seed");
    app.add_option("--precision", s.precision,
                   "f32, or bf16: matrix products in bf16 with f32 accumulation (AVX-512 BF16 or AMX; "
                   "docs/precision.md)")
        ->check(CLI::IsMember({"f32", "bf16"}));
    app.add_flag("!--no-ceiling", s.ceiling, "skip the GEMM ceiling measurement");
    app.add_flag("--checkpointing", s.checkpointing, "gradient checkpointing per block (recompute in backward)");
    app.add_flag("--runtime-sizes", s.runtime_sizes,
                 "the model as tl::families::llama with the config's sizes given at run time (issue 14)");
    app.add_option("--save-init", s.save_init,
                   "write the initial weights (DIR/init, Hugging Face layout), the first batch and its loss, so that "
                   "pytorch_peer.py --check DIR can confirm it builds the same model");
    CLI11_PARSE(app, argc, argv);
    try {
        if (!s.save_init.empty()) std::filesystem::create_directories(s.save_init);
        return tl::presets::visit<configs>(s.config, [&]<class Config>() {
            const int batch = default_batch.at(s.config);
            return s.runtime_sizes ? run<Config, tl::decoder<tl::families::llama>>(s, batch)
                                   : run<Config, tl::decoder<Config>>(s, batch);
        });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_train: %s\n", e.what());
        return 1;
    }
}
