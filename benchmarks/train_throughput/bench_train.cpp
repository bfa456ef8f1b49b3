// bench_train: training throughput of a tinylm decoder (loss, backward, AdamW step) on random tokens, with the
// GEMM ceiling measured in the same process. One JSON line on stdout; run.py runs it beside the PyTorch peer
// (pytorch_peer.py) and prints the comparison (docs/performance.md).
//
//   build-speed/benchmarks/train_throughput/bench_train --config b --steps 3 --warmup 1 [--checkpointing]
//   build-speed/benchmarks/train_throughput/bench_train --config a --save-init runs/speed-a   (for run.py --check)
//   build-gpu/benchmarks/train_throughput/bench_train --device cuda --config 150m --steps 10 --warmup 2
//   build-gpu/benchmarks/train_throughput/bench_train --device cuda --config qwen0.5b --lora 16 [--qlora]
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
// The device path also takes --config qwen0.5b (tl::presets::qwen2_5_0_5b: q/k/v biases, tied head, GQA 14/2,
// vocab 151936; batch 16 on cuda), --seq-len, --lora R (peft's LoraConfig r=R, alpha 2R, dropout 0, all seven
// projections) and --qlora, --attention rows|products|fused, --checkpointing and --plan-only (the arena's size, nothing
// run). The JSON gives flops_per_token (tl::flops_per_token: 6N + attention, full training's count) and
// step_flops_per_token (what the step computes: under LoRA no weight gradients of the frozen base; derived in
// device_step.hpp); the MFU is from the latter.
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
// qwen0.5b (tl::presets::qwen2_5_0_5b): --device cuda and cpu-ops only, with weights from device_step.hpp's
// random_weights (no tl::decoder of it is compiled: the CPU path refuses it).
constexpr const char* qwen_name = "qwen0.5b";

// The device path's batch when --batch is not given: cuda 64 (issue 20's 150M step; qwen0.5b 16, which fits an
// 80 GB H100 with LoRA: docs/gpu.md), cpu-ops the CPU path's (qwen0.5b 1).
int device_default_batch(const std::string& config, bool cuda) {
    if (config == qwen_name) return cuda ? 16 : 1;
    return cuda ? 64 : default_batch.at(config);
}

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
    // The device path only (cuda, cpu-ops):
    long long seq_len = 0; // 0: the config's max_seq_len capped at 512
    int lora = 0;          // LoRA rank on all seven projections (alpha 2 rank, dropout 0); 0: full training
    bool qlora = false;    // with lora: the projections in NF4 (tl::quantize_nf4, double quantisation)
    std::string attention = "products"; // gpu::attention_path
    bool plan_only = false;             // print the arena plan's size, allocate and run nothing
    // Products: queries per block (attention_products.hpp); 0: whole T x T products.
    long long attention_query_block = tl::gpu::attention_default_query_block;
};

#ifdef TINYLM_HAS_CUDA
constexpr bool have_cuda = true;
#else
constexpr bool have_cuda = false;
#endif

void no_sync() {} // gpu::cpu_ops runs each op to its end

// --device cuda or cpu-ops: gpu::decoder_step over one arena of plan_decoder_step (device_step.hpp), its initial
// weights from `weights` (device_step.hpp's weight_source). Not a template: compiled once.
int run_on_device(const settings& s, const tl::model_config& c, const bench::weight_source& weights,
                  const char* weights_from) {
    const bool cuda = s.device == "cuda";
    tl::gpu::decoder_plan_options o;
    o.batch = s.batch > 0 ? s.batch : device_default_batch(s.config, cuda);
    o.time = s.seq_len > 0 ? s.seq_len : std::min<long long>(c.max_seq_len, 512);
    o.logits_rows = s.logits_rows;
    o.bf16_weights = s.precision.empty() ? cuda : s.precision == "bf16";
    o.attention = s.attention == "rows"    ? tl::gpu::attention_path::rows
                  : s.attention == "fused" ? tl::gpu::attention_path::fused
                                           : tl::gpu::attention_path::products;
    o.attention_query_block = s.attention_query_block;
    o.checkpointing = s.checkpointing;
    if (s.lora > 0) { // peft's LoraConfig(r=R, lora_alpha=2R, lora_dropout=0, the seven projections)
        o.lora.rank = s.lora, o.lora.alpha = 2.0f * float(s.lora), o.lora.targets = tl::lora_all;
        o.lora.quantized_base = s.qlora;
    }
    tl::check(o.time <= c.max_seq_len, [&] {
        std::string m = "--seq-len ";
        m += std::to_string(o.time);
        m += " is longer than the config's max_seq_len ";
        m += std::to_string(c.max_seq_len);
        return m;
    });
    bench::device_step_settings d;
    d.warmup = s.warmup, d.steps = s.steps, d.seed = s.seed;
    d.adamw.weight_decay = 0.1; // as the CPU path's tl::adamw
    const tl::gpu::arena_plan plan = tl::gpu::plan_decoder_step(c, o);
    const std::string label = s.config + " on " + s.device;
    std::size_t adapter = 0;
    for (const tl::gpu::parameter_slice& p : tl::gpu::adapter_layout(c, o.lora))
        adapter += p.size();

    std::string name = cuda ? "" : "the host (gpu::cpu_ops)";
    bench::device_step_result r;
    if (s.plan_only) {
        // nothing allocated, nothing run: the plan's size for choosing a batch
    } else if (cuda) {
#ifdef TINYLM_HAS_CUDA
        name = tl::gpu::device_name();
        tl::gpu::device_arena arena(plan);
        tl::gpu::blas products(arena.at<std::byte>(plan.at("blas.workspace").offset), tl::gpu::blas_workspace_bytes);
        tl::gpu::gpu_ops ex;
        ex.products = &products;
        r = bench::run_device_steps(c, o, plan, arena.at<std::byte>(0), ex, tl::gpu::synchronize, d, weights,
                                    label.c_str());
#endif
    } else {
        std::vector<std::byte> memory(plan.bytes());
        tl::gpu::cpu_ops ex;
        r = bench::run_device_steps(c, o, plan, memory.data(), ex, no_sync, d, weights, label.c_str());
    }

    // flops_per_token: tl::flops_per_token (6N + attention, full training's count, as the CPU path and the peer
    // report); step_flops_per_token: what this step computes (without the frozen base's weight gradients under
    // LoRA, device_step.hpp); the MFU is from the latter.
    const double tokens_per_step = double(o.batch * o.time), flops = tl::flops_per_token(c, int(o.time));
    const double step_flops = bench::step_flops_per_token(c, o.time, o.lora);
    const double tokens_per_second = r.step_seconds.empty() ? 0 : tokens_per_step / bench::median(r.step_seconds);
    const double peak = s.peak_tflops > 0 ? s.peak_tflops : cuda ? bench::dense_bf16_peak_tflops(name) : 0;
    std::string mfu = "null";
    if (peak > 0 && tokens_per_second > 0) mfu = std::to_string(step_flops * tokens_per_second / (peak * 1e12));
    if (cuda && !s.plan_only && peak == 0)
        std::fprintf(stderr, "bench_train: no dense bf16 peak known for '%s': give --peak-tflops for the MFU\n",
                     name.c_str());
    std::printf(
        "{\"impl\": \"tinylm\", \"variant\": \"%s\", \"device\": \"%s\", \"device_name\": \"%s\", "
        "\"precision\": \"%s\", \"sizes\": \"compile-time\", \"config\": \"%s\", \"batch\": %lld, "
        "\"seq_len\": %lld, \"checkpointing\": %s, \"attention\": \"%s\", \"attention_query_block\": %lld, "
        "\"lora_rank\": %d, \"lora_alpha\": %g, \"qlora\": %s, \"adapter_parameters\": %zu, \"weights\": \"%s\", "
        "\"plan_only\": %s, \"threads\": %d, \"parameters\": %lld, "
        "\"flops_per_token\": %.6g, \"step_flops_per_token\": %.6g, \"mfu_flops\": \"step_flops_per_token\", "
        "\"tokens_per_step\": %lld, \"step_seconds\": %s, \"losses\": %s, "
        "\"gradient_norms\": %s, \"peak_rss_mib\": %.1f, \"arena_mib\": %.1f, \"arena_buffers\": %zu, "
        "\"logits_rows\": %lld, \"tokens_per_second\": %.1f, \"peak_tflops\": %.1f, \"mfu\": %s, "
        "\"gemm_model_shapes_gflops\": 0, \"gemm_square_gflops\": 0, \"gemm_model_shapes_seconds\": 0}\n",
        s.device.c_str(), s.device.c_str(), name.c_str(), o.bf16_weights ? "bf16" : "f32", s.config.c_str(), o.batch,
        o.time, o.checkpointing ? "true" : "false", s.attention.c_str(), o.attention_query_block, o.lora.rank,
        double(o.lora.alpha), o.lora.quantized_base ? "true" : "false", adapter, weights_from,
        s.plan_only ? "true" : "false", omp_get_max_threads(), (long long)tl::parameter_count(c), flops, step_flops,
        (long long)tokens_per_step, bench::json_array(r.step_seconds).c_str(), bench::json_array(r.losses).c_str(),
        bench::json_array(r.gradient_norms).c_str(), bench::peak_rss_mib(), double(plan.bytes()) / (1 << 20),
        plan.entries().size(), std::min(o.logits_rows, o.batch * o.time), tokens_per_second, peak, mfu.c_str());
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
    std::vector<std::string> config_names;
    for (const std::string_view name : tl::presets::names<configs>())
        config_names.emplace_back(name);
    config_names.emplace_back(qwen_name);
    app.add_option("--config", s.config, "a, b, 150m, or qwen0.5b (--device cuda and cpu-ops only)")
        ->check(CLI::IsMember(config_names));
    app.add_option("--batch", s.batch,
                   "sequences per step (default: a 16, b 8, 150m 4, qwen0.5b 1; --device cuda 64, qwen0.5b 16)");
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
    auto* seq_len =
        app.add_option("--seq-len", s.seq_len,
                       "cuda, cpu-ops: tokens per sequence (default: the config's max_seq_len, at most 512)")
            ->check(CLI::PositiveNumber);
    auto* lora = app.add_option("--lora", s.lora,
                                "cuda, cpu-ops: LoRA of this rank on q, k, v, o, gate, up, down (alpha 2 x rank, "
                                "dropout 0; A and B random): the base frozen")
                     ->check(CLI::PositiveNumber);
    auto* qlora = app.add_flag("--qlora", s.qlora,
                               "cuda, cpu-ops, with --lora: the seven projections in NF4 with double quantisation "
                               "(QLoRA), dequantised before each product");
    auto* attention = app.add_option("--attention", s.attention,
                                     "cuda, cpu-ops: products (batched products, the default), rows (the row "
                                     "kernels, the oracle) or fused (flash_attention.cu on tensor cores; bf16, "
                                     "head width 64 or 128)")
                          ->check(CLI::IsMember({"rows", "products", "fused"}));
    auto* query_block = app.add_option("--attention-query-block", s.attention_query_block,
                                       "cuda, cpu-ops, --attention products: queries per block, whose products skip "
                                       "the tiles no query of the block sees (default 128; 0: whole T x T products)")
                            ->check(CLI::NonNegativeNumber);
    auto* plan_only = app.add_flag("--plan-only", s.plan_only,
                                   "cuda, cpu-ops: print the JSON line with the arena's size (arena_mib) and run "
                                   "nothing (for choosing a batch)");
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
            tl::check(s.save_init.empty() && !s.runtime_sizes, "--save-init and --runtime-sizes are for --device cpu");
            tl::check(!s.qlora || s.lora > 0, "--qlora needs --lora R (the adapter that trains)");
#ifdef TINYLM_HAS_CUDA
            tl::check(s.device != "cuda" || s.plan_only || tl::gpu::device_count() > 0,
                      "--device cuda: no CUDA device is visible to this process");
#endif
            const bench::weight_source adapter = bench::random_weights(s.seed, 0.02);
            if (s.config == qwen_name) {
                const tl::model_config& c = tl::presets::qwen2_5_0_5b::value;
                return run_on_device(s, c, bench::random_weights(s.seed, c.init_std),
                                     "random: normal(0, init_std), norms 1, biases 0 (timing does not depend on "
                                     "the values)");
            }
            return tl::presets::visit<configs>(s.config, [&]<class Config>() {
                if (s.plan_only) return run_on_device(s, Config::value, adapter, "none (plan only)");
                const auto model = std::make_unique<tl::decoder<Config>>(Config::value, s.seed); // on the host
                const std::vector<tl::parameter_entry> entries = model->parameter_entries();
                return run_on_device(s, Config::value, bench::decoder_weights(entries, adapter),
                                     "tl::decoder's initialisation from --seed, as --device cpu");
            });
        }
        for (const CLI::Option* o : {seq_len, lora, qlora, attention, query_block, plan_only})
            tl::check(o->count() == 0, [&] {
                std::string m = o->get_name();
                m += " is for --device cuda and cpu-ops (gpu::decoder_step); --device cpu times tl::decoder";
                return m;
            });
        tl::check(s.config != qwen_name,
                  "--config qwen0.5b is for --device cuda and cpu-ops (the CPU path would compile a "
                  "tl::decoder of it only for this benchmark)");
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
