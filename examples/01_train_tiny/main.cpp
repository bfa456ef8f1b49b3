// 01_train_tiny: train the tiny byte-level decoder on Russian prose and let it write.
//
// Task:     next-byte prediction with presets::tiny (2 layers, d_model 64, GQA 4/2, SwiGLU, RoPE; 125k
//           parameters), AdamW with warmup + cosine decay and gradient clipping.
// Data:     Pushkin's "The Captain's Daughter" from the data directory (../shared/data/russian_novels,
//           see docs/data.md; TINYLM_DATA_DIR or --data-dir overrides), or a built-in paragraph when the
//           data is absent. The last 10% of the text is held out for validation.
// Runtime:  about a minute on 2 cores with the defaults.
// Command:  build/examples/01_train_tiny [--steps 1500] [--text FILE]
//           mpirun -np 2 build/examples/01_train_tiny   (data parallel when built with MPI, docs/distributed.md:
//           --batch is the global batch; rank 0 prints, logs, samples and writes checkpoints)
// Output:   a line per 100 steps (step, train loss, learning rate, tokens/s), the validation loss in nats
//           per byte, and a 300-byte sample continuing a prompt.
#include "cli_checks.hpp"
#include "options.hpp"

#include <tinylm/core/data_dir.hpp>
#include <tinylm/dist/communicator.hpp>
#include <tinylm/eval/generate.hpp>
#include <tinylm/tinylm.hpp>
#include <tinylm/train/run_logger.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using model_t = tl::decoder<tl::presets::tiny>;

namespace {

const char* builtin_text =
    "Отец мой Андрей Петрович Гринёв в молодости своей служил при графе Минихе и вышел в отставку премьер-майором. "
    "С тех пор жил он в своей Симбирской деревне, где и женился на девице Авдотье Васильевне Ю., дочери бедного "
    "тамошнего дворянина. Нас было девять человек детей. Все мои братья и сестры умерли во младенчестве. ";

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw tl::error("tinylm: cannot read " + p.string());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// A continuation longer than the 64-byte context: generate with the KV cache, and when the context is full
// start again from the last 32 bytes.
std::string sample(const model_t& model, std::string_view prompt, int n_bytes, double temperature, std::uint64_t seed) {
    const std::size_t keep = std::size_t(model.config().max_seq_len) / 2;
    std::vector<tl::token_t> context;
    for (unsigned char c : prompt)
        context.push_back(c);
    std::string out;
    for (std::uint64_t round = 0; int(out.size()) < n_bytes; ++round) {
        if (context.size() > keep) context.erase(context.begin(), context.end() - std::ptrdiff_t(keep));
        const int room = int(model.config().max_seq_len - context.size());
        const tl::generation_options g{.max_new_tokens = std::min(room, n_bytes - int(out.size())),
                                       .stop_tokens = {},
                                       .sampling = {.temperature = temperature, .top_k = 40, .seed = seed + round}};
        for (tl::token_t t : tl::generate(model, context, g)) {
            context.push_back(t);
            out += char(t);
        }
    }
    return out;
}

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"Train the tiny byte-level tinylm decoder and sample from it"};
    app.option_defaults()->always_capture_default(); // --help prints every default
    recipes::one_line_errors(app);
    tl::trainer_options options{.batch_size = 16,
                                .seq_len = tl::presets::tiny::value.max_seq_len,
                                .max_steps = 1500,
                                .peak_lr = 3e-3,
                                .warmup_steps = 100,
                                .adamw = {.weight_decay = 0.01},
                                .eval_every = 500,
                                .checkpoint_every = 250,
                                .out_dir = "runs/tiny"};
    std::uint64_t seed = 1;
    bool fresh = false;
    std::string text_file, data_dir = tl::find_data_dir().string(), prompt = "Маша вошла в комнату и";
    app.add_option("--steps", options.max_steps, "optimizer steps")->check(recipes::at_least(1LL, "optimizer steps"));
    app.add_option("--batch", options.batch_size, "sequences per step")
        ->check(recipes::at_least(tl::index_t{1}, "sequences per step"));
    app.add_option("--lr", options.peak_lr, "peak learning rate")->check(recipes::above(0.0, "peak learning rate"));
    app.add_option("--seed", seed, "initialisation and batching seed");
    app.add_option("--text", text_file, "train on this UTF-8 file instead of the default novel");
    app.add_option("--data-dir", data_dir, "tinylm data directory (default: $TINYLM_DATA_DIR or ../shared/data)");
    app.add_option("--out", options.out_dir, "run directory; checkpoints go to OUT/checkpoint");
    app.add_option("--checkpoint-every", options.checkpoint_every, "steps between checkpoints")
        ->check(recipes::at_least(0, "steps between checkpoints; 0: at the end only"));
    app.add_flag("--fresh", fresh, "start over even if OUT/checkpoint exists");
    app.add_option("--prompt", prompt, "text the sample continues");
    std::string precision = "f32";
    recipes::add_precision_option(app, precision);
    CLI11_PARSE(app, argc, argv);
    options.matmul_precision = recipes::checked_precision("01_train_tiny", precision, "cpu");
    // Under mpirun every rank runs this program; rank 0 alone prints, logs and writes.
    tl::dist::communicator& world = tl::dist::world();
    const bool root = world.is_root();
    if (!root && !std::freopen("/dev/null", "w", stdout)) throw tl::error("tinylm: cannot silence stdout");
    options.resume = !fresh;
    options.warmup_steps = std::min<long long>(options.warmup_steps, options.max_steps / 10);
    options.min_lr = options.peak_lr / 10;
    if (root) recipes::prepare_out_dir(options.out_dir, "--out");
    if (fresh && root) fs::remove_all(options.out_dir / "checkpoint");
    world.barrier(); // no rank looks for a checkpoint before rank 0 removed it

    std::string text, source;
    if (!text_file.empty()) {
        text = read_file(text_file), source = text_file;
        recipes::check_is_text(text, text_file, "--text");
    } else if (fs::path novel = fs::path(data_dir) / "russian_novels/corpus/Pushkin_CapitanskaaDochka.txt";
               !data_dir.empty() && fs::exists(novel))
        text = read_file(novel), source = novel.string();
    else {
        text = builtin_text;
        source = "the built-in paragraph (no data directory found; see docs/data.md)";
    }
    const std::ptrdiff_t T = options.seq_len;
    if (text.size() < std::size_t(4 * T))
        tl::fail("--text: " + source + " is shorter than 4 contexts (" + std::to_string(4 * T) + " bytes)");
    std::vector<tl::token_t> tokens;
    for (unsigned char c : text)
        tokens.push_back(c);
    // 10% for validation, but at least two full windows.
    const auto split = std::min(std::ptrdiff_t(tokens.size() * 9 / 10), std::ptrdiff_t(tokens.size()) - 2 * T - 1);
    std::printf("data: %s (%zu bytes: %td train, %td validation)\n", source.c_str(), text.size(), split,
                std::ptrdiff_t(text.size()) - split);
    model_t model(seed);
    std::printf("model: presets::tiny, %lld parameters, backend %s\n",
                static_cast<long long>(tl::parameter_count(tl::presets::tiny::value)),
                std::string(model_t::backend::name).c_str());

    tl::token_windows train({tokens.begin(), tokens.begin() + split}, seed);
    tl::trainer run(model, train, {tokens.begin() + split, tokens.end()}, options);
    const long long first_step = run.restore();
    if (first_step > 0 && root) std::printf("resumed from step %lld of %s\n", first_step, run.checkpoint_dir().c_str());
    std::optional<tl::run_logger> logger; // rank 0's (the trainer calls the hooks on rank 0 only)
    if (root) {
        logger.emplace(options.out_dir, "tinylm: tiny byte-level model", options.max_steps, first_step);
        logger->summary("data", source);
        logger->summary("parameters", std::to_string(tl::parameter_count(model.config())));
    }
    double val_loss = NAN;
    run.on_step = [&](const tl::step_report& r) { logger->step(r); };
    run.on_eval = [&](long long step, double loss) {
        logger->eval(step, loss);
        val_loss = loss;
        logger->samples(step, {{prompt, sample(model, prompt, 120, 0.8, seed)}});
    };
    if (run.run() == tl::train_outcome::interrupted) {
        if (!root) return 130;
        logger->finish();
        std::printf("interrupted at step %lld; checkpoint saved in %s (run again to resume)\n", run.state().step,
                    run.checkpoint_dir().c_str());
        return 130;
    }
    world.broadcast_values(std::span<double>(&val_loss, 1), 0); // every rank decides alike: evaluate is collective
    if (std::isnan(val_loss)) val_loss = run.evaluate();        // resumed after the last step
    if (!root) return 0;
    std::printf("validation loss %.4f nats/byte (%.3f bits/byte)\n", val_loss, val_loss / std::log(2.0));
    const std::string text_out = sample(model, prompt, 300, 0.8, seed);
    logger->samples(-1, {{prompt, text_out}});
    std::printf("sample (temperature 0.8, top-k 40):\n%s%s\n", prompt.c_str(), text_out.c_str());
    std::printf("report: %s, TensorBoard: %s\n", logger->finish().c_str(), (options.out_dir / "tensorboard").c_str());
    return 0;
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
