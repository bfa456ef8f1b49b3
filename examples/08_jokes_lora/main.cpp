// 08_jokes_lora: teach a pretrained model to tell Russian jokes on request, with a LoRA adapter.
//
// Task:     conversations "Расскажи анекдот про <тему>" -> a joke, after the assignment's system message ("Ты
//           ассистент, который рассказывает короткие смешные анекдоты на русском языке.", --system to change it);
//           loss on the assistant's tokens only;
//           LoRA r=8 (--lora-rank 4, 8 or 16, no rebuild), alpha=2r, dropout 0.05 on q/k/v/o/gate/up/down, AdamW;
//           validation loss on held-out jokes before and after; the adapter saved in PEFT format, reloaded onto the
//           base and checked against the fine-tuned logits; a before/after report for a prompt basket at three sampling
//           settings.
// Data:     ../shared/data/jokes/anekdoty_themed.jsonl (theme per joke: the prompt names it),
//           ../shared/data/jokes/clean_comedy_gold_ru.csv (jokes rated at least --min-rating),
//           and Debian's fortunes-ru (apt-get install fortunes-ru; /usr/share/games/fortunes/ru, entries
//           separated by lines holding '%'; the file name gives the theme), when installed.
// Base:     any Llama-shaped Hugging Face folder (--base; its config.json gives the sizes, no rebuild): our own
//           pretrained Russian model (examples/04_russian_novels, the offline demo) or TinyLlama-1.1B-Chat
//           (optionally --qlora for a 4-bit NF4 base).
// Command:  build/examples/08_jokes_lora/08_jokes_lora [--base runs/russian_novels/checkpoint]
//           [--out runs/jokes_lora] [--steps N]
// Output:   validation losses, OUT/before_after.md (with the data report: the cleaner's counts, rating and length
//           histograms before and after filtering, also printed), OUT/adapter (adapter_config.json,
//           adapter_model.safetensors), OUT/training (log.jsonl, TensorBoard, loss curves), OUT/checkpoint
//           (every --checkpoint-every steps: running the same command again continues the run bit-identically,
//           also after kill -9; Ctrl-C saves one; --fresh starts over).
// Devices:  --device cpu (tl::decoder, the default), cuda (gpu::device_decoder with the same LoRA or QLoRA adapter on
//           the GPU, bf16 products; needs a build with tinylm::cuda) or cpu-ops (the GPU's code path on the CPU: a
//           check); the same trainer, checkpoints and report (sft_recipe.hpp; docs/gpu.md). Under mpirun, cuda takes
//           one GPU per rank.
#include "cli_checks.hpp"
#include "jokes_data.hpp"
#include "ranks.hpp"
#include "sft_recipe.hpp"

#include <tinylm/core/data_dir.hpp>
#include <tinylm/model/registry.hpp>

#include <CLI/CLI.hpp>

#include <iostream>

namespace fs = std::filesystem;

namespace {

using jokes::ask;

// LoRA on all seven projections with alpha = 2r and dropout 0.05 (r = 8: recipe::lora8, the assignment's).
template <int Rank, bool Quantized>
struct jokes_lora {
    static constexpr tl::lora_config value{
        .rank = Rank, .alpha = 2.0f * Rank, .dropout = 0.05f, .targets = tl::lora_all, .quantized_base = Quantized};
};

struct options {
    fs::path base = "runs/russian_novels/checkpoint", out = "runs/jokes_lora",
             fortunes = "/usr/share/games/fortunes/ru";
    std::string data_dir, chat_format = "auto", system = jokes::default_system;
    double min_rating = 3.0;
    int lora_rank = 8;
    std::size_t max_fortunes = 3000, val_count = 150, limit = 0;
    bool qlora = false, smoke = false, data_only = false;
};

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"Fine-tune a pretrained model on Russian jokes with LoRA"};
    app.option_defaults()->always_capture_default(); // --help prints every default
    recipes::one_line_errors(app);
    options o;
    recipe::recipe_inputs in;
    in.title = "tinylm: jokes LoRA";
    in.train = {.steps = 300, .batch = 8, .time = 256, .lr = 2e-3, .warmup = 20, .eval_every = 100};
    app.add_option("--base", o.base, "Hugging Face folder of the base model (with tokenizer.json)");
    app.add_option("--lora-rank", o.lora_rank, "LoRA rank r (alpha = 2r): 4, 8 or 16, the ranks compiled in");
    app.add_flag("--qlora", o.qlora, "store the frozen base in NF4 (QLoRA; for a large base such as TinyLlama)");
    app.add_option("--out", o.out, "run directory");
    app.add_option("--data-dir", o.data_dir, "tinylm data directory (default: $TINYLM_DATA_DIR or ../shared/data)");
    app.add_option("--fortunes", o.fortunes, "fortunes-ru folder (skipped when absent)");
    app.add_option("--max-fortunes", o.max_fortunes, "at most this many fortunes (drawn at random)")
        ->check(recipes::at_least(std::size_t{0}, "fortunes drawn at most"));
    app.add_option("--min-rating", o.min_rating, "keep clean_comedy_gold_ru jokes rated at least this (1-5)")
        ->check(recipes::in_range(1.0, 5.0, "the lowest rating kept"));
    app.add_option("--val", o.val_count, "held-out conversations")
        ->check(recipes::at_least(std::size_t{1}, "held-out conversations"));
    app.add_option("--system", o.system, "the system message of every conversation and of the basket ('': none)");
    app.add_option("--chat-format", o.chat_format, "auto, folder, plain, chatml or zephyr");
    app.add_option("--steps", in.train.steps, "optimizer steps")->check(recipes::at_least(1LL, "optimizer steps"));
    app.add_option("--batch", in.train.batch, "rows per step")
        ->check(recipes::at_least(tl::index_t{1}, "rows per step"));
    app.add_option("--seq-len", in.train.time, "tokens per packed row")
        ->check(recipes::at_least(tl::index_t{8}, "tokens per packed row"));
    app.add_option("--lr", in.train.lr, "peak learning rate")->check(recipes::above(0.0, "peak learning rate"));
    app.add_option("--eval-every", in.train.eval_every, "steps between validation losses")
        ->check(recipes::in_range(1LL, 2147483647LL, "steps between validation losses"));
    app.add_option("--checkpoint-every", in.train.checkpoint_every, "steps between checkpoints in OUT/checkpoint")
        ->check(recipes::in_range(1LL, 2147483647LL, "steps between checkpoints"));
    app.add_flag("--fresh", in.train.fresh, "start over even if OUT/checkpoint exists (else the run continues)");
    app.add_option("--new-tokens", in.new_tokens, "new tokens per sample")
        ->check(recipes::at_least(0, "new tokens per sample"));
    app.add_option("--seed", in.train.seed, "split, batching, adapter and sampling seed");
    app.add_flag("--smoke", o.smoke, "a seconds-long run on a few jokes (for CI)");
    app.add_flag("--data-only", o.data_only, "print the data report (cleaning, histograms) and stop: no base needed");
    std::string precision = "f32";
    recipes::add_precision_option(app, precision);
    app.add_option("--device", in.device,
                   "cpu (tl::decoder), cuda: the GPU (gpu::device_decoder with the same LoRA or QLoRA adapter: the "
                   "adapter, its gradients and AdamW's moments on the GPU, the frozen base loaded once, bf16 "
                   "products; in a build with tinylm::cuda; validation on the GPU, samples and saving on the CPU from "
                   "the trained weights) or cpu-ops: the GPU's code path on the CPU (f32; slow, a check)")
        ->check(CLI::IsMember({"cpu", "cuda", "cpu-ops"}));
    CLI11_PARSE(app, argc, argv);
    tl::dist::communicator& world = recipes::join_world(); // rank 0 prints (examples/common/ranks.hpp)
    recipe::check_device(in.device, "08_jokes_lora");
    in.products = recipes::checked_precision("08_jokes_lora", precision, in.device);
    // The LoRA ranks compiled in (the rank is part of the model type: one instantiation each).
    const auto with_rank = [&](auto&& f) { return tl::presets::visit_int<4, 8, 16>("--lora-rank", o.lora_rank, f); };
    with_rank([]<int>() { return 0; }); // an uncompiled rank stops here, before any data is read
    in.base = o.base;
    in.out = o.out;
    in.chat_format = o.chat_format;
    in.val_count = o.val_count;
    in.prompts = {ask + " про врачей", ask + " про Вовочку", ask + " про программистов", ask + " про армянское радио",
                  ask + " про тёщу",   ask + " про школу",   ask + " про работу",        ask + "."};
    if (o.smoke) {
        in.train = {.steps = 4, .batch = 2, .time = 128, .lr = 2e-3, .warmup = 1, .eval_every = 2, .fresh = true};
        in.prompts.resize(2);
        in.new_tokens = 8;
        in.val_count = 8;
        o.limit = 40;
        o.max_fortunes = 20;
        in.out = in.out / "smoke";
    }

    const fs::path jokes_dir = tl::find_data_dir(o.data_dir) / "jokes";
    if (!fs::exists(jokes_dir / "anekdoty_themed.jsonl") || !fs::exists(jokes_dir / "clean_comedy_gold_ru.csv")) {
        std::cerr << "error: 08_jokes_lora: " << jokes_dir
                  << " lacks anekdoty_themed.jsonl or clean_comedy_gold_ru.csv. Set "
                  << "--data-dir or TINYLM_DATA_DIR (sources in DATA.md).\n";
        return 2;
    }
    if (!o.data_only && !fs::exists(o.base / "config.json")) {
        std::cerr << "error: 08_jokes_lora: no base model in " << o.base << "; train one with scripts/run-main.sh "
                  << "(examples/04_russian_novels) or point --base at a downloaded TinyLlama-1.1B-Chat folder.\n";
        return 2;
    }

    recipes::root_only(world, [&] { recipes::prepare_out_dir(in.out, "--out"); });
    // Data.
    auto themed = jokes::read_themed(jokes_dir / "anekdoty_themed.jsonl", o.limit);
    auto rated = tl::data::read_rated_csv(
        jokes_dir / "clean_comedy_gold_ru.csv",
        {.prompt = ask + ".", .rating_column = "score", .min_rating = o.min_rating, .read = {.limit = o.limit}});
    std::vector<tl::data::conversation> fortunes, fortunes_all;
    if (fs::exists(o.fortunes)) {
        fortunes = jokes::read_fortunes(o.fortunes, 600);
        fortunes_all = fortunes;
        const std::size_t found = fortunes.size();
        std::mt19937_64 rng(in.train.seed);
        std::shuffle(fortunes.begin(), fortunes.end(), rng);
        if (fortunes.size() > o.max_fortunes) fortunes.resize(o.max_fortunes);
        std::printf("data: fortunes-ru: %zu entries of up to 600 bytes, %zu used\n", found, fortunes.size());
    } else {
        std::printf("data: %s not found (apt-get install fortunes-ru); using ../shared/data/jokes alone\n",
                    o.fortunes.c_str());
    }
    in.data_summary = std::to_string(themed.size()) + " themed jokes (anekdoty_themed.jsonl), " +
                      std::to_string(rated.size()) + " jokes rated >= " + std::to_string(o.min_rating).substr(0, 4) +
                      " (clean_comedy_gold_ru.csv), " + std::to_string(fortunes.size()) + " fortunes-ru entries";
    std::printf("data: %s\n", in.data_summary.c_str());
    // The data report: clean_comedy_gold_ru's ratings and lengths before and after --min-rating, and the replies
    // of every source before and after filtering (ratings, the fortunes drawn).
    const auto scores = jokes::read_scores(jokes_dir / "clean_comedy_gold_ru.csv");
    std::vector<double> score_all, score_kept, length_all, length_kept;
    for (const auto& j : scores) {
        score_all.push_back(j.score);
        length_all.push_back(double(jokes::characters(j.text)));
        if (j.score >= o.min_rating && (o.limit == 0 || score_kept.size() < o.limit)) { // as read_rated_csv keeps
            score_kept.push_back(j.score);
            length_kept.push_back(length_all.back());
        }
    }
    std::vector<double> replies_all = jokes::reply_lengths(themed);
    replies_all.insert(replies_all.end(), length_all.begin(), length_all.end());
    const auto fortunes_found = jokes::reply_lengths(fortunes_all);
    replies_all.insert(replies_all.end(), fortunes_found.begin(), fortunes_found.end());
    in.convs = std::move(themed);
    in.convs.insert(in.convs.end(), rated.begin(), rated.end());
    in.convs.insert(in.convs.end(), fortunes.begin(), fortunes.end());
    // The cleaner: entities, line ends, spaces, glued sentences and jokes (jokes_data.hpp).
    jokes::cleaning_counts cleaning;
    in.convs = jokes::clean_conversations(in.convs, cleaning);
    jokes::add_system_message(in.convs, o.system);
    in.system_prompt = o.system;
    const std::string min_rating = std::to_string(o.min_rating).substr(0, 4);
    in.report_extra =
        std::string(
            "## Data\n\nEvery joke cleaned (HTML entities, \\r\\n, repeated spaces, glued sentences and jokes):\n\n") +
        cleaning.markdown() +
        "\nclean_comedy_gold_ru.csv: the score (mean of five ratings, 1-5) of every joke, before and after "
        "keeping those rated at least " +
        min_rating + ":\n\n" + jokes::histogram_markdown("score", jokes::score_edges, score_all, score_kept, 1) +
        "\nTheir length in characters, before and after:\n\n" +
        jokes::histogram_markdown("characters", jokes::length_edges, length_all, length_kept, 0) +
        "\nEvery reply in characters: before (anekdoty_themed.jsonl, all of clean_comedy_gold_ru.csv, the fortunes-ru "
        "entries found) and after filtering (the rating, the fortunes drawn): the training and validation "
        "conversations\n\n" +
        jokes::histogram_markdown("characters", jokes::length_edges, replies_all, jokes::reply_lengths(in.convs), 0) +
        "\n";
    std::printf("\n%s", in.report_extra.c_str());
    if (o.data_only) return 0;

    // Any Llama-shaped base (our Russian model, TinyLlama): config.json gives the sizes at run time.
    const tl::model_config base_config = tl::read_hf_folder_config(in.base);
    tl::check(!base_config.qkv_bias && base_config.moe.n_experts == 0,
              "08_jokes_lora: the recipe takes Llama-shaped bases (LlamaForCausalLM, MistralForCausalLM)");
    in.title = "tinylm: jokes LoRA on " + tl::hf_architecture(base_config) + " (" +
               std::to_string(tl::parameter_count(base_config) / 1000000) + "M parameters)";
    return with_rank([&]<int R>() {
        using model_lora = tl::decoder<tl::families::llama, tl::default_backend, jokes_lora<R, false>>;
        using model_qlora = tl::decoder<tl::families::llama, tl::default_backend, jokes_lora<R, true>>;
        return o.qlora ? recipe::run<model_qlora>(in) : recipe::run<model_lora>(in);
    });
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
