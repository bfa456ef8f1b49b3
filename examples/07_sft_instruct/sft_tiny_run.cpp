// sft_tiny_run: the 07/08 fine-tuning recipe (sft_recipe.hpp) on a tiny generated base, for tests that need a
// whole run in seconds and without ../shared/data: tests/trainer/sft_kill_and_resume.sh kills it with SIGKILL
// mid-run, runs it again and compares the checkpoint with an uninterrupted run's.
//
//   sft_tiny_run --work DIR --out DIR [--full] [--kill-after N]
//
// WORK/base is made once (a byte-level BPE with <bos>/<eos>/<pad> trained on generated arithmetic dialogues and a
// 2-layer model with random weights, saved as a Hugging Face folder); conversations are generated from a fixed
// seed. --kill-after N sends the process SIGKILL after step N (between checkpoints: the resumed run must redo the
// steps after the last checkpoint). The exit code is the recipe's: 0 when the reloaded adapter or model matches.
#include "sft_recipe.hpp"

#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

namespace {

namespace fs = std::filesystem;

struct tiny_sft {
    static constexpr tl::model_config value{.vocab_size = 320,
                                            .d_model = 32,
                                            .n_layers = 2,
                                            .n_heads = 2,
                                            .n_kv_heads = 1,
                                            .d_ff = 64,
                                            .max_seq_len = 96,
                                            .init_std = 0.05};
};

const char* const numbers[] = {"ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"};

std::vector<tl::data::conversation> dialogues(int count) {
    std::vector<tl::data::conversation> out;
    tl::counter_rng rng(17);
    for (int i = 0; i < count; ++i) {
        const auto a = rng.below(5), b = rng.below(5);
        out.push_back(
            {{{"user", std::string("Сколько будет ") + numbers[a] + " плюс " + numbers[b] + "?"},
              {"assistant", std::string(numbers[a]) + " плюс " + numbers[b] + " будет " + numbers[a + b] + "."}},
             "generated:" + std::to_string(i)});
    }
    return out;
}

// Staged and renamed, so that a killed run never leaves half a base behind.
void make_base(const fs::path& base) {
    if (fs::exists(base / "config.json")) return;
    tl::bpe_trainer_options opt;
    opt.vocab_size = tiny_sft::value.vocab_size;
    opt.special_tokens = {"<bos>", "<eos>", "<pad>"};
    opt.n_threads = 1;
    tl::bpe_trainer trainer(opt);
    for (const auto& c : dialogues(200))
        trainer.feed("### Вопрос:\n" + c.messages[0].content + "\n\n### Ответ:\n" + c.messages[1].content + "\n\n");
    const tl::tokenizer tok = trainer.train();
    const fs::path stage = base.string() + ".tmp";
    fs::remove_all(stage);
    tl::decoder<tiny_sft> model(5);
    tl::save_pretrained(
        model, stage,
        {.bos = tok.token_to_id("<bos>"), .eos = tok.token_to_id("<eos>"), .pad = tok.token_to_id("<pad>")});
    tl::save_tokenizer_json(tok, (stage / "tokenizer.json").string());
    fs::rename(stage, base);
}

} // namespace

int main(int argc, char** argv) try {
    fs::path work, out;
    bool full = false;
    long long kill_after = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--work" && i + 1 < argc)
            work = argv[++i];
        else if (a == "--out" && i + 1 < argc)
            out = argv[++i];
        else if (a == "--kill-after" && i + 1 < argc)
            kill_after = std::stoll(argv[++i]);
        else if (a == "--full")
            full = true;
        else {
            std::cerr << "usage: sft_tiny_run --work DIR --out DIR [--full] [--kill-after N]\n";
            return 2;
        }
    }
    if (work.empty() || out.empty()) {
        std::cerr << "sft_tiny_run: --work and --out are required\n";
        return 2;
    }
    make_base(work / "base");

    recipe::recipe_inputs in;
    in.title = "sft_tiny_run";
    in.base = work / "base";
    in.out = out;
    in.convs = dialogues(80);
    in.val_count = 8;
    in.chat_format = "plain";
    in.prompts = {"Сколько будет два плюс три?"};
    in.new_tokens = 6;
    // 36 packed rows, 4 a step: the second epoch (another row order) starts at step 10, where a resumed run picks up.
    in.train = {.steps = 16,
                .batch = 4,
                .time = 64,
                .lr = 5e-3,
                .warmup = 2,
                .weight_decay = 0.01,
                .eval_every = 4,
                .checkpoint_every = 5,
                .seed = 3};
    if (kill_after > 0)
        in.after_step = [kill_after](long long step) {
            if (step == kill_after) {
                std::fflush(stdout);
                std::raise(SIGKILL);
            }
        };
    using tl::default_backend;
    if (full) return recipe::run<tl::decoder<tiny_sft, default_backend>>(std::move(in));
    return recipe::run<tl::decoder<tiny_sft, default_backend, recipe::lora8>>(std::move(in));
} catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
}
