// 04_russian_novels: the course's pretraining recipe, from raw novels to a model that writes Russian.
//
// Task:     a Llama-style decoder (RoPE, GQA, SwiGLU, RMSNorm) trained from scratch on 107 Russian novels.
// Stages:   1. clean the corpus (NFC, whitespace and punctuation, sentences with Latin or pre-reform letters
//              dropped, exact and near duplicates removed: tinylm/data);
//           2. train a 3,000-token byte-level BPE tokenizer on the cleaned text (tinylm/tokenizer), or use a
//              given tokenizer.json (--tokenizer: its vocabulary must fit the preset's embedding);
//           3. cut documents into context-sized chunks with <bos>/<eos> and write train.bin / val.bin
//              (split by document);
//           4. train with AdamW, warmup + cosine, clipping and gradient accumulation, validating and
//              sampling the course's ten prompts every --eval-every steps; checkpoints (Hugging Face layout
//              with tokenizer.json) let an interrupted run resume bit-identically;
//           5. continue the ten prompts with the final model.
//           Stages 1-3 (examples/common/prepare.hpp, shared with 05_tatar) are cached in OUT/data_* and
//           skipped when their files exist.
// Data:     ../shared/data/russian_novels/corpus (TINYLM_DATA_DIR or --data-dir; public source:
//           github.com/JoannaBy/RussianNovels, folder corpus/).
// Presets:  --preset cpu (tl::presets::russian_novels_cpu, the default: sized so that the README's main command
//           ends within 30 minutes on 2 cores) and --preset 150m (tl::presets::russian_novels_150m, the course's
//           configuration: hidden 1024, 16 layers, 16/8 heads, intermediate 1536, context 512; 132M parameters;
//           440 tokens/s on 2 Zen 5 cores, 630 in bf16: hours a pass over the novels, docs/performance.md; learning
//           rate 3e-4 unless --lr is given).
// Command:  build/examples/04_russian_novels [--preset cpu] [--steps N] [--out runs/russian_novels]; --help lists
//           every option with its default (option groups shared with 05 and 06: examples/common/options.hpp).
// Output:   progress lines, validation loss and perplexity, the ten continuations; OUT/report.md (loss
//           curves and samples), OUT/tensorboard, OUT/log.jsonl, OUT/checkpoint.
// Devices:  --device cpu (tl::decoder, the default) or cuda (gpu::device_decoder<gpu_ops>: parameters, gradients
//           and AdamW's moments on the GPU, bf16 products; the same tl::trainer, checkpoints and report; validation on
//           the GPU, the prompts sampled on the CPU from the downloaded weights; needs a build with tinylm::cuda);
//           --device cpu-ops runs the GPU's code path on the CPU (gpu::cpu_ops: slow, a check; docs/gpu.md).
//           Under mpirun, --device cuda takes one GPU per rank and sums the gradients through NCCL (docs/gpu.md).
//           --attention products|fused|rows picks how the device model computes attention (fused: one kernel on
//           tensor cores, with --device cuda and a head width of 64 or 128, as --preset 150m's).
//           --precision bf16 runs the CPU's products in bf16 with f32 accumulation (a CPU with AVX-512 BF16 or
//           AMX: 1.5x f32 on an AMD Zen 5, docs/precision.md); weights, gradients and AdamW stay f32.
// Ranks:    mpirun -np N build/examples/04_russian_novels ... trains data parallel (docs/distributed.md; --batch is
//           the global batch): rank 0 prepares the data (the others wait, then read its cache), prints, logs,
//           samples and writes; the other ranks only train and validate (examples/common/ranks.hpp).
#include "checkpoint_files.hpp"
#include "course_prompts.hpp"
#include "devices.hpp"
#include "options.hpp"
#include "prepare.hpp"
#include "ranks.hpp"
#include "samples.hpp"

#include <tinylm/core/data_dir.hpp>
#include <tinylm/model/registry.hpp>
#include <tinylm/tinylm.hpp>
#include <tinylm/train/run_logger.hpp>
#include <tinylm/train/shard_batches.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <span>

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> course_prompts(recipes::course_prompts.begin(), recipes::course_prompts.end());

// The presets --preset offers, under their command-line names.
using cpu_preset = tl::presets::named<"cpu", tl::presets::russian_novels_cpu>;
using course_preset = tl::presets::named<"150m", tl::presets::russian_novels_150m>;

template <class Config>
int train(tl::dist::communicator& world, const recipes::prepared_data& data, tl::trainer_options options,
          std::uint64_t seed, const recipes::sampling_flags& sampling, const std::string& title,
          const std::string& device, const std::string& attention) {
    using model_t = tl::decoder<Config>;
    const bool root = world.is_root();
    tl::check(data.tok.vocab_size() <= std::size_t(Config::value.vocab_size), [&] {
        return "04_russian_novels: the tokenizer " + data.tokenizer_json.string() + " has " +
               std::to_string(data.tok.vocab_size()) + " tokens, more than the model's vocabulary of " +
               std::to_string(Config::value.vocab_size) + " (--prepare-only stops after the shards)";
    });
    const tl::data::token_shard train_shard(data.train_bin, data.info.hash), val_shard(data.val_bin, data.info.hash);
    tl::check(val_shard.size() > std::size_t(options.seq_len) + 1, [&] {
        return "04_russian_novels: the validation split has only " + std::to_string(val_shard.size()) +
               " tokens; use more novels (--max-files) or delete " + data.dir.string();
    });
    std::vector<tl::token_t> val_tokens(
        std::min<std::size_t>(val_shard.size(), std::size_t(options.eval_windows * options.seq_len + 1)));
    val_shard.copy<tl::token_t>(0, val_tokens);

    model_t model(seed);
    tl::shard_batches batches(train_shard, options.batch_size, options.seq_len, seed);
    options.special = {.bos = int(data.info.bos), .eos = int(data.info.eos), .pad = data.tok.token_to_id("<pad>")};
    recipes::describe_checkpoints(
        options, sampling,
        {.title = title.substr(title.find(' ') + 1) + ", " + std::to_string(tl::parameter_count(Config::value)) +
                  " parameters",
         .description = "A small Llama-style decoder (RoPE, GQA, SwiGLU) pretrained from scratch on Russian novels: a "
                        "course model, which writes Russian words and dialogue punctuation, not yet sense.",
         .data = "107 public-domain Russian novels (docs/data.md), cleaned, split by novel into training and "
                 "validation; a 3,000-token byte-level BPE tokenizer trained on the training part.",
         .languages = {"ru"},
         .example_prompt = "Сила войска зависит от его духа",
         .recipe = "examples/04_russian_novels"});
    // The run itself, with tl::decoder or a device model (whose weights come to `model` for the samples).
    const auto train_on = [&](auto& trained, const std::string& backend) -> int {
        tl::trainer run(trained, batches, val_tokens, options);
        run.add_to_checkpoint = recipes::tokenizer_files(data.tok, Config::value.max_seq_len);
        const long long first_step = run.restore();
        std::optional<tl::run_logger> logger; // rank 0's (the trainer calls the hooks on rank 0 only)
        const double tokens = double(options.max_steps) * options.batch_size * options.seq_len * options.grad_accum;
        if (root) {
            logger.emplace(options.out_dir, title, options.max_steps, first_step);
            logger->summary("model",
                            std::to_string(tl::parameter_count(Config::value)) + " parameters, backend " + backend);
            logger->summary("training tokens", std::to_string(static_cast<long long>(tokens)));
        }
        std::printf("model: %lld parameters, %lld steps of %lld tokens (%.1fM tokens), backend %s\n",
                    static_cast<long long>(tl::parameter_count(Config::value)), options.max_steps,
                    static_cast<long long>(options.batch_size * options.seq_len * options.grad_accum), tokens / 1e6,
                    backend.c_str());
        const auto samples_of = [&](int new_tokens) { // on the CPU, from a device model's weights
            recipes::to_host(trained, model);
            return recipes::continue_prompts(model, data.tok, course_prompts, new_tokens, sampling.sampling, seed);
        };
        double val_loss = NAN;
        run.on_step = [&](const tl::step_report& r) { logger->step(r); };
        run.on_eval = [&](long long step, double loss) {
            logger->eval(step, loss);
            val_loss = loss;
            if (step < options.max_steps) logger->samples(step, samples_of(sampling.new_tokens / 2));
        };
        if (run.run() == tl::train_outcome::interrupted) {
            if (!root) return 130;
            logger->finish();
            std::printf("interrupted at step %lld; checkpoint in %s (run again to resume)\n", run.state().step,
                        run.checkpoint_dir().c_str());
            return 130;
        }
        world.broadcast_values(std::span<double>(&val_loss, 1), 0); // every rank decides alike: evaluate is collective
        if (std::isnan(val_loss)) val_loss = run.evaluate();        // resumed after the last step
        if (!root) return 0;
        const auto samples = samples_of(sampling.new_tokens);
        logger->samples(-1, samples);
        logger->summary("validation loss", std::to_string(val_loss) + " nats/token (perplexity " +
                                               std::to_string(std::exp(val_loss)) + ")");
        std::printf("\nvalidation loss %.4f nats/token, perplexity %.1f\n\n", val_loss, std::exp(val_loss));
        for (const auto& [prompt, text] : samples)
            std::printf("%s|%s\n\n", prompt.c_str(), text.c_str());
        std::printf("report: %s\ncheckpoint: %s (Hugging Face layout, with tokenizer.json)\n", logger->finish().c_str(),
                    run.checkpoint_dir().c_str());
        return 0;
    };
    return recipes::train_on_device("04_russian_novels", world, options, device, model, train_on, attention);
}

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"Pretrain a Llama-style model on Russian novels"};
    recipes::show_defaults(app);
    std::string preset = "cpu";
    recipes::data_flags data_flags;
    recipes::run_flags run;
    recipes::sampling_flags sampling{.new_tokens = 60};
    tl::trainer_options options{.batch_size = 8,
                                .seq_len = 256,
                                .grad_accum = 2,
                                .max_steps = 700,
                                .peak_lr = 3e-3,
                                .min_lr = 3e-4,
                                .warmup_steps = 60,
                                .adamw = {.weight_decay = 0.1},
                                .eval_every = 175,
                                .eval_windows = 64,
                                .checkpoint_every = 100,
                                .out_dir = "runs/russian_novels"};
    std::size_t max_files = 0;
    double val_fraction = 0.05;
    std::string device = "cpu", attention = "products";
    app.add_option("--preset", preset, "cpu (russian_novels_cpu, 4.5M parameters) or 150m (russian_novels_150m)")
        ->check(CLI::IsMember(tl::presets::names<cpu_preset, course_preset>()));
    app.add_option("--device", device,
                   "cpu (tl::decoder), or cuda: the GPU (gpu::device_decoder, bf16 products; in a build with "
                   "tinylm::cuda), where --batch defaults to 64 and --grad-accum to 1, and with --preset 150m --steps "
                   "to 1000, --eval-every to 250 and --checkpoint-every to 500: about 5 minutes of training on an H100 "
                   "if a step of 64 x 512 tokens takes 0.3 s (an estimate: docs/gpu.md). cpu-ops: the GPU's code path "
                   "on the CPU (slow; a check)")
        ->check(CLI::IsMember({"cpu", "cuda", "cpu-ops"}));
    recipes::add_attention_option(app, attention);
    CLI::Option_group* data_group = recipes::add_data_options(app, data_flags);
    data_group->add_option("--max-files", max_files, "use only the first N novels (0: all)")
        ->check(recipes::at_least(std::size_t{0}, "novels to use; 0: all"));
    std::string tokenizer_flag;
    bool prepare_only = false;
    data_group->add_option("--tokenizer", tokenizer_flag,
                           "a tokenizer.json (Qwen, Llama-2, ...; also under the data dir) instead of training one");
    data_group->add_flag("--prepare-only", prepare_only, "stop after cleaning, the tokenizer and the shards");
    const CLI::Option_group* training = recipes::add_training_options(app, options, run);
    recipes::add_sampling_options(app, sampling);
    CLI11_PARSE(app, argc, argv);
    tl::dist::communicator& world = recipes::join_world();
    recipes::check_device("04_russian_novels", device, attention);
    options.matmul_precision = recipes::checked_precision("04_russian_novels", run.precision, device);
    if (device == "cuda") {
        // The whole batch in one step on the GPU.
        const auto unless_given = [&](const char* flag, auto& value, auto fallback) {
            if (training->count(flag) == 0) value = fallback;
        };
        unless_given("--batch", options.batch_size, tl::index_t{64});
        unless_given("--grad-accum", options.grad_accum, 1);
        if (preset == "150m") {
            unless_given("--steps", options.max_steps, 1000LL);
            unless_given("--eval-every", options.eval_every, 250);
            unless_given("--checkpoint-every", options.checkpoint_every, 500);
        }
    }
    if (run.smoke) {
        max_files = 8;
        val_fraction = 0.3;
        options.max_steps = 20;
        options.batch_size = 2;
        options.grad_accum = 1;
        options.seq_len = 64;
        options.eval_every = 10;
        options.eval_windows = 4;
        options.warmup_steps = 2;
        sampling.new_tokens = 8;
        options.out_dir = options.out_dir / "smoke";
    }
    if (preset == "150m") {
        options.seq_len = run.smoke ? options.seq_len : tl::presets::russian_novels_150m::value.max_seq_len;
        if (training->count("--lr") == 0) options.peak_lr = 3e-4;
    }
    options.min_lr = options.peak_lr / 10;
    options.warmup_steps = std::min<long long>(options.warmup_steps, options.max_steps / 5);
    recipes::root_only(world, [&] { // no rank looks for a checkpoint before rank 0 removed it
        recipes::prepare_out_dir(options.out_dir, "--out");
        if (run.fresh) fs::remove_all(options.out_dir / "checkpoint");
    });

    const fs::path data_dir = tl::find_data_dir(data_flags.dir), corpus = data_dir / "russian_novels" / "corpus";
    const auto start = std::chrono::steady_clock::now();
    const fs::path tokenizer_file = recipes::resolve_tokenizer_file(tokenizer_flag, data_dir);
    const fs::path data_cache = options.out_dir / ("data_ctx" + std::to_string(options.seq_len) +
                                                   (max_files ? "_files" + std::to_string(max_files) : "") +
                                                   recipes::tokenizer_dir_suffix(tokenizer_file));
    // A prepared cache (prepare.hpp reuses it) needs no corpus: a GPU machine gets train.bin, val.bin,
    // tokenizer.json and summary.json of OUT/data_ctx512 (26 MB), not the 72 MB of novels.
    const bool prepared = fs::exists(data_cache / "train.bin") && fs::exists(data_cache / "val.bin") &&
                          fs::exists(data_cache / "tokenizer.json") && fs::exists(data_cache / "summary.json");
    if (!fs::exists(corpus) && !prepared) {
        std::cerr << "error: 04_russian_novels: " << corpus << " does not exist. Set --data-dir or TINYLM_DATA_DIR, or "
                  << "download the corpus from github.com/JoannaBy/RussianNovels (folder corpus/).\n";
        return 2;
    }
    const auto novels = [&] { // the first --max-files .txt files of the corpus, by name
        std::vector<fs::path> files;
        for (const auto& e : fs::directory_iterator(corpus))
            if (e.path().extension() == ".txt") files.push_back(e.path());
        std::sort(files.begin(), files.end());
        tl::check(!files.empty(), [&] { return "04_russian_novels: no .txt files in " + corpus.string(); });
        if (max_files > 0 && files.size() > max_files) files.resize(max_files);
        return std::make_unique<tl::data::text_reader>(files);
    };
    recipes::prepare_options prep{.vocab = 3000,
                                  .context = std::size_t(options.seq_len),
                                  .val_fraction = val_fraction,
                                  .threads = data_flags.threads};
    prep.clean.allowed = tl::data::alphabet::preset("russian");
    prep.tokenizer_file = tokenizer_file;
    const recipes::prepared_data data =
        recipes::root_first(world, [&] { return recipes::prepare_data(novels, data_cache, prep); });
    std::printf("data: ready after %.0f s\n", recipes::seconds_since(start));
    if (prepare_only) return 0;
    const int rc = tl::presets::visit<cpu_preset, course_preset>(preset, [&]<class P>() {
        return train<P>(world, data, options, run.seed, sampling, "tinylm: Russian novels, " + preset + " preset",
                        device, attention);
    });
    std::printf("total time %.1f minutes\n", recipes::seconds_since(start) / 60);
    return rc;
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
