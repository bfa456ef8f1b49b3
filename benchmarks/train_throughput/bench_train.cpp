// bench_train: training throughput of a tinylm decoder (loss, backward, AdamW step) on random tokens, with the
// GEMM ceiling measured in the same process. One JSON line on stdout; run.py runs it beside the PyTorch peer
// (pytorch_peer.py) and prints the comparison (docs/performance.md).
//
//   build-speed/benchmarks/train_throughput/bench_train --config b --steps 3 --warmup 1 [--checkpointing]
//   build-speed/benchmarks/train_throughput/bench_train --config a --save-init runs/speed-a   (for run.py --check)
//   build-gpu/benchmarks/train_throughput/bench_train --device cuda --config 150m --steps 10 --warmup 2
//
// Configs: a, b (bench_configs.hpp) and 150m (tl::presets::russian_novels_150m). Every step draws a fresh batch of
// uniform random tokens (the counter RNG, so both implementations could see the same ones); steps after the warm-up
// are timed one by one (zero_grad + loss + backward + AdamW), and tokens/s is batch x time / the median step.
//
// --device cuda (a build with tinylm::cuda, docs/gpu.md): the same model and tokens through gpu::decoder_step on
// the GPU (device_step.hpp): bf16 products by default, batch 64 by default, the LM head in chunks of --logits-rows
// tokens; each timed step is zero gradients, forward and backward, clipping to norm 1 and AdamW, ended by a device
// synchronize; MFU against the GPU's dense bf16 peak (by its name, or --peak-tflops). --device cpu-ops runs that
// very loop through gpu::cpu_ops (the kernels' CPU drivers, the reference gemm): slow, for checking without a GPU.
#include "bench_configs.hpp"
#include "device_step.hpp"
#include "gemm_ceiling.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/cuda/cpu_ops.hpp>
#ifdef TINYLM_HAS_CUDA
#include <tinylm/cuda/device.hpp>
#include <tinylm/cuda/gpu_ops.hpp>
#endif
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
    std::string precision; // empty: f32, or bf16 on cuda
    std::string device = "cpu";
    long long logits_rows = 4096;
    double peak_tflops = 0; // 0: by the GPU's name
};

#ifdef TINYLM_HAS_CUDA
constexpr bool have_cuda = true;
#else
constexpr bool have_cuda = false;
#endif

void no_sync() {} // gpu::cpu_ops runs each op to its end

// --device cuda or cpu-ops: gpu::decoder_step over one arena of plan_decoder_step (device_step.hpp), initialised
// from `weights`, those of the tl::decoder the CPU path builds with the same seed. Not a template: compiled once.
int run_on_device(const settings& s, const tl::model_config& c, const std::vector<tl::parameter_entry>& weights,
                  int cpu_default_batch) {
    const bool cuda = s.device == "cuda";
    bench::device_step_settings d;
    d.batch = s.batch > 0 ? s.batch : cuda ? 64 : cpu_default_batch;
    d.time = c.max_seq_len;
    d.logits_rows = s.logits_rows;
    d.bf16 = s.precision.empty() ? cuda : s.precision == "bf16";
    d.warmup = s.warmup, d.steps = s.steps, d.seed = s.seed;
    d.adamw.weight_decay = 0.1; // as the CPU path's tl::adamw
    tl::gpu::decoder_plan_options o;
    o.batch = d.batch, o.time = d.time, o.logits_rows = d.logits_rows, o.bf16_weights = d.bf16;
    const tl::gpu::arena_plan plan = tl::gpu::plan_decoder_step(c, o);
    const std::string label = s.config + " on " + s.device;

    std::string name;
    bench::device_step_result r;
    if (cuda) {
#ifdef TINYLM_HAS_CUDA
        name = tl::gpu::device_name();
        tl::gpu::device_arena arena(plan);
        tl::gpu::blas products(arena.at<std::byte>(plan.at("blas.workspace").offset), tl::gpu::blas_workspace_bytes);
        tl::gpu::gpu_ops ex;
        ex.products = &products;
        r = bench::run_device_steps(c, weights, plan, arena.at<std::byte>(0), ex, tl::gpu::synchronize, d,
                                    label.c_str());
#endif
    } else {
        std::vector<std::byte> memory(plan.bytes());
        tl::gpu::cpu_ops ex;
        name = "the host (gpu::cpu_ops)";
        r = bench::run_device_steps(c, weights, plan, memory.data(), ex, no_sync, d, label.c_str());
    }

    const double tokens_per_step = double(d.batch * d.time), flops = tl::flops_per_token(c, int(d.time));
    const double tokens_per_second = tokens_per_step / bench::median(r.step_seconds);
    const double peak = s.peak_tflops > 0 ? s.peak_tflops : cuda ? bench::dense_bf16_peak_tflops(name) : 0;
    std::string mfu = "null";
    if (peak > 0) mfu = std::to_string(flops * tokens_per_second / (peak * 1e12));
    if (cuda && peak == 0)
        std::fprintf(stderr, "bench_train: no dense bf16 peak known for '%s': give --peak-tflops for the MFU\n",
                     name.c_str());
    std::printf("{\"impl\": \"tinylm\", \"variant\": \"%s\", \"device\": \"%s\", \"device_name\": \"%s\", "
                "\"precision\": \"%s\", \"sizes\": \"compile-time\", \"config\": \"%s\", \"batch\": %lld, "
                "\"seq_len\": %lld, \"checkpointing\": false, \"threads\": %d, \"parameters\": %lld, "
                "\"flops_per_token\": %.6g, \"tokens_per_step\": %lld, \"step_seconds\": %s, \"losses\": %s, "
                "\"gradient_norms\": %s, \"peak_rss_mib\": %.1f, \"arena_mib\": %.1f, \"logits_rows\": %lld, "
                "\"tokens_per_second\": %.1f, \"peak_tflops\": %.1f, \"mfu\": %s, "
                "\"gemm_model_shapes_gflops\": 0, \"gemm_square_gflops\": 0, \"gemm_model_shapes_seconds\": 0}\n",
                s.device.c_str(), s.device.c_str(), name.c_str(), d.bf16 ? "bf16" : "f32", s.config.c_str(), d.batch,
                d.time, omp_get_max_threads(), (long long)tl::parameter_count(c), flops, (long long)tokens_per_step,
                bench::json_array(r.step_seconds).c_str(), bench::json_array(r.losses).c_str(),
                bench::json_array(r.gradient_norms).c_str(), bench::peak_rss_mib(), double(plan.bytes()) / (1 << 20),
                std::min(d.logits_rows, d.batch * d.time), tokens_per_second, peak, mfu.c_str());
    return 0;
}

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
    tl::check(s.precision != "bf16",
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
                std::string(model_t::backend::name).c_str(), s.precision.empty() ? "f32" : s.precision.c_str(),
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
                   "f32, or bf16: matrix products in bf16 with f32 accumulation (on the CPU: AVX-512 BF16 or AMX, "
                   "docs/precision.md); default f32, bf16 with --device cuda")
        ->check(CLI::IsMember({"f32", "bf16"}));
    app.add_option("--device", s.device,
                   "cpu (tl::decoder), cuda (gpu::decoder_step on the GPU; a build with tinylm::cuda) or cpu-ops "
                   "(gpu::decoder_step through its CPU executor: slow, checks the loop without a GPU)")
        ->check(CLI::IsMember({"cpu", "cuda", "cpu-ops"}));
    app.add_option("--logits-rows", s.logits_rows, "cuda, cpu-ops: tokens per chunk of the LM head (default 4096)")
        ->check(CLI::PositiveNumber);
    app.add_option("--peak-tflops", s.peak_tflops,
                   "cuda: the dense bf16 peak for the MFU (default: by the GPU's name; H100 SXM and H200 989.4)");
    app.add_flag("!--no-ceiling", s.ceiling, "skip the GEMM ceiling measurement");
    app.add_flag("--checkpointing", s.checkpointing, "gradient checkpointing per block (recompute in backward)");
    app.add_flag("--runtime-sizes", s.runtime_sizes,
                 "the model as tl::families::llama with the config's sizes given at run time (issue 14)");
    app.add_option("--save-init", s.save_init,
                   "write the initial weights (DIR/init, Hugging Face layout), the first batch and its loss, so that "
                   "pytorch_peer.py --check DIR can confirm it builds the same model");
    CLI11_PARSE(app, argc, argv);
    try {
        if (s.device != "cpu") {
            tl::check(s.device != "cuda" || have_cuda,
                      "--device cuda needs a build with the CUDA backend (tinylm::cuda): configure with "
                      "-DTINYLM_WITH_CUDA=ON where nvcc is installed (docs/gpu.md); this build has none");
            tl::check(s.save_init.empty() && !s.checkpointing && !s.runtime_sizes,
                      "--save-init, --checkpointing and --runtime-sizes are for --device cpu");
#ifdef TINYLM_HAS_CUDA
            tl::check(s.device != "cuda" || tl::gpu::device_count() > 0,
                      "--device cuda: no CUDA device is visible to this process");
#endif
            return tl::presets::visit<configs>(s.config, [&]<class Config>() {
                const auto model = std::make_unique<tl::decoder<Config>>(Config::value, s.seed); // on the host
                return run_on_device(s, Config::value, model->parameter_entries(), default_batch.at(s.config));
            });
        }
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
