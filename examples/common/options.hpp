// examples/common/options.hpp: the command-line option groups the recipes share (04_russian_novels, 05_tatar,
// 06_evaluate), so that the same flag means the same thing, with the same help, in every program. Each group
// appears under its own heading in --help, and show_defaults(app) makes --help print every default.
//
//   CLI::App app{"..."};
//   recipes::show_defaults(app);                      // first: options added later capture their defaults
//   recipes::add_data_options(app, data);             // --data-dir, --threads
//   recipes::add_training_options(app, options, run); // --out, --steps, --batch, --lr, ..., --seed, --fresh, --smoke
//   options.matmul_precision = recipes::checked_precision("04_russian_novels", run.precision, device); // parsed
//   recipes::add_sampling_options(app, sampling);     // --sample-tokens, --temperature, --top-k, ...
#pragma once

#include "cli_checks.hpp"

#include <tinylm/eval/sampling.hpp>
#include <tinylm/train/trainer.hpp>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace recipes {

// Every option added to `app` (and its subcommands) from here on shows its default value in --help; parse errors
// are one line (cli_checks.hpp).
inline void show_defaults(CLI::App& app) {
    app.option_defaults()->always_capture_default();
    one_line_errors(app);
}

// A pretrained model's folder in the models dir: $TINYLM_MODELS_DIR, else ~/.cache/tinylm/models (where
// scripts/fetch-models.sh puts them; tests/support/models.hpp looks in the same place).
inline std::filesystem::path default_model(const std::string& name) {
    const char* env = std::getenv("TINYLM_MODELS_DIR");
    const char* home = std::getenv("HOME");
    const std::filesystem::path dir =
        env && *env ? std::filesystem::path(env) : std::filesystem::path(home ? home : ".") / ".cache/tinylm/models";
    return dir / name;
}

// Where the data is, and the threads that prepare it (cleaning, tokenizer training, shards; the prepared files
// are the same for any thread count).
struct data_flags {
    std::string dir{}; // empty: $TINYLM_DATA_DIR or ../shared/data (tl::find_data_dir)
    int threads = 2;
};
inline CLI::Option_group* add_data_options(CLI::App& app, data_flags& d) {
    CLI::Option_group* g = app.add_option_group("Data");
    g->add_option("--data-dir", d.dir, "tinylm data directory (empty: $TINYLM_DATA_DIR or ../shared/data)");
    g->add_option("--threads", d.threads, "threads for cleaning, tokenizer training and shards")
        ->check(in_range(1, 1024, "threads for cleaning, tokenizer training and shards"));
    return g;
}

// --precision: the CPU's matrix products (the trainer's matmul_precision, through checked_precision).
inline void add_precision_option(CLI::App& app, std::string& precision) {
    app.add_option("--precision", precision,
                   "the CPU's matrix products: f32, or bf16 with f32 accumulation (f32 weights, gradients and AdamW; "
                   "a CPU with AVX-512 BF16 or AMX; docs/precision.md)")
        ->check(CLI::IsMember({"f32", "bf16"}));
}

// A training run: the trainer's settings a recipe exposes, its seed, and how to start it.
struct run_flags {
    std::uint64_t seed = 1;        // initialisation and batching
    bool fresh = false;            // discard the checkpoint in --out
    bool smoke = false;            // the recipe's minute-long form for CI
    std::string precision = "f32"; // the CPU's products: trainer_options::matmul_precision (checked_precision)
};
inline CLI::Option_group* add_training_options(CLI::App& app, tl::trainer_options& o, run_flags& run) {
    CLI::Option_group* g = app.add_option_group("Training");
    g->add_option("--out", o.out_dir, "run directory (checkpoints, logs, report)");
    g->add_option("--steps", o.max_steps, "optimizer steps (the learning-rate schedule's length)")
        ->check(at_least(1LL, "optimizer steps"));
    g->add_option("--batch", o.batch_size, "sequences per micro-batch")
        ->check(at_least(tl::index_t{1}, "sequences per micro-batch"));
    g->add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step")
        ->check(at_least(1, "micro-batches per optimizer step"));
    g->add_option("--lr", o.peak_lr, "peak learning rate (the schedule decays to a tenth of it)")
        ->check(above(0.0, "peak learning rate"));
    g->add_option("--warmup", o.warmup_steps, "linear warmup steps (at most a fifth of --steps)")
        ->check(at_least(0LL, "linear warmup steps"));
    g->add_option("--eval-every", o.eval_every, "steps between validation and prompt samples (0: at the end only)")
        ->check(at_least(0, "steps between validations; 0: at the end only"));
    g->add_option("--eval-windows", o.eval_windows, "validation windows of one context each")
        ->check(at_least(tl::index_t{1}, "validation windows"));
    g->add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: at the end only)")
        ->check(at_least(0, "steps between checkpoints; 0: at the end only"));
    g->add_flag("--gradient-checkpointing", o.gradient_checkpointing,
                "recompute each block's forward in backward: activations of one layer instead of all");
    add_precision_option(*g, run.precision);
    g->add_option("--seed", run.seed, "initialisation and batching seed");
    g->add_flag("--fresh", run.fresh, "discard the checkpoint in --out (the prepared data is kept)");
    g->add_flag("--smoke", run.smoke, "a minute-long run on a few files (for CI)");
    return g;
}

// --precision as the trainer's matmul_precision, refused at start (before any data is prepared) where it cannot
// run: bf16 is the CPU's products (the device models choose their own: --device cuda computes in bf16, cpu-ops in
// f32), and needs oneDNN on a CPU with AVX-512 BF16 or AMX (tl::set_cpu_precision would refuse it later).
inline tl::precision checked_precision(const std::string& recipe, const std::string& precision,
                                       const std::string& device) {
    if (precision != "bf16") return tl::precision::f32;
    tl::check(device == "cpu", recipe + ": --precision bf16 is for the CPU's products (--device cpu); --device " +
                                   device + (device == "cuda" ? " computes in bf16 already" : " computes in f32"));
#ifdef TINYLM_HAS_ONEDNN
    const std::string why = tl::detail::bf16_support();
    tl::check(why.empty(), [&] { return recipe + ": --precision bf16: " + why + "; train in f32 instead"; });
#else
    tl::fail(recipe + ": --precision bf16 needs oneDNN's products (a build with tinylm::onednn)");
#endif
    return tl::precision::bf16;
}

// Continuations of the recipe's prompts during and after training.
struct sampling_flags {
    int new_tokens = 60; // per prompt; samples during training use half
    tl::sampling_options sampling{.temperature = 0.8, .top_k = 50, .top_p = 0.95, .repetition_penalty = 1.1};
};
inline CLI::Option_group* add_sampling_options(CLI::App& app, sampling_flags& s) {
    CLI::Option_group* g = app.add_option_group("Samples");
    g->add_option("--sample-tokens", s.new_tokens, "new tokens per prompt continuation")
        ->check(at_least(0, "new tokens per prompt continuation"));
    g->add_option("--temperature", s.sampling.temperature, "sampling temperature (0: greedy)")
        ->check(at_least(0.0, "sampling temperature; 0: greedy"));
    g->add_option("--top-k", s.sampling.top_k, "sample among the k likeliest tokens (0: all)")
        ->check(at_least(0, "the k likeliest tokens; 0: all"));
    g->add_option("--top-p", s.sampling.top_p, "nucleus: the likeliest tokens up to this probability (1: all)")
        ->check(in_range(0.0, 1.0, "nucleus probability; 1: all"));
    g->add_option("--repetition-penalty", s.sampling.repetition_penalty, "divides the logits of tokens seen (1: off)")
        ->check(above(0.0, "divides the logits of tokens seen; 1: off"));
    return g;
}

// A checkpoint to evaluate: the model folder and its tokenizer.
struct checkpoint_flags {
    std::filesystem::path checkpoint{}, tokenizer{};
    std::uint64_t seed = 1;
};
inline CLI::Option_group* add_checkpoint_options(CLI::App& app, checkpoint_flags& c) {
    CLI::Option_group* g = app.add_option_group("Checkpoint");
    g->add_option("--checkpoint", c.checkpoint, "checkpoint directory (config.json, model.safetensors)")->required();
    g->add_option("--tokenizer", c.tokenizer, "tokenizer.json (empty: the checkpoint's)");
    g->add_option("--seed", c.seed, "initialisation seed of the untrained floor");
    return g;
}

} // namespace recipes
