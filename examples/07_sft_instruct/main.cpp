// 07_sft_instruct: supervised fine-tuning on Russian instructions (alpaca style), with LoRA or in full.
//
// Task:     instruction (+ input) -> output conversations in the model's chat format, loss on the assistant's
//           tokens only, AdamW; validation loss on held-out instructions before and after; the adapter (PEFT
//           format) or the whole model (Hugging Face format) saved, reloaded and checked against the trained
//           logits; a before/after report for a prompt basket at three sampling settings.
// Data:     ../shared/data/instruct/ru_alpaca_seed_tasks.jsonl (rulm seed tasks) and
//           ru_instruct_gpt4_first100.jsonl (alpaca); more files with --data (alpaca JSON/JSONL, seed tasks, chat
//           messages JSONL, prompt/completion JSONL, CSV: the format is detected, see docs/sft.md; or named with
//           --data-format, e.g. alpaca-system: the assignment's layout, input = system, instruction = user).
// Report:   the assignment's four evaluation questions first, then eight more prompts, before and after, at
//           three sampling settings.
// Base:     any Llama- or Qwen2-shaped Hugging Face folder (--base; its config.json gives the sizes, no rebuild):
//           our own pretrained Russian model (examples/04_russian_novels, the offline demo, with a plain-text chat
//           format) or Qwen2.5-0.5B(-Instruct) (ChatML from its tokenizer_config.json; --qlora for a 4-bit NF4 base).
// Command:  build/examples/07_sft_instruct/07_sft_instruct [--base runs/russian_novels/checkpoint] [--full]
//           [--out runs/sft_instruct] [--steps N]
// Output:   validation losses, OUT/before_after.md, OUT/adapter or OUT/model, OUT/training (log.jsonl,
//           TensorBoard, loss curves), OUT/checkpoint (every --checkpoint-every steps: running the same command
//           again continues the run bit-identically, also after kill -9; Ctrl-C saves one; --fresh starts over).
// Devices:  --device cpu (tl::decoder, the default), cuda (gpu::device_decoder: LoRA, QLoRA or --full on the GPU, bf16
//           products; needs a build with tinylm::cuda) or cpu-ops (the GPU's code path on the CPU: a check); the same
//           trainer, checkpoints and report (sft_recipe.hpp; docs/gpu.md). Under mpirun, cuda takes one GPU per rank.
#include "cli_checks.hpp"
#include "ranks.hpp"
#include "sft_recipe.hpp"

#include <tinylm/model/registry.hpp>

#include <tinylm/core/data_dir.hpp>

#include <CLI/CLI.hpp>

#include <iostream>

namespace fs = std::filesystem;

int main(int argc, char** argv) try {
    CLI::App app{"Fine-tune a pretrained model on Russian instructions"};
    app.option_defaults()->always_capture_default(); // --help prints every default
    recipes::one_line_errors(app);
    fs::path base = "runs/russian_novels/checkpoint", out = "runs/sft_instruct";
    std::string data_dir, system_prompt, data_format = "auto";
    std::vector<fs::path> extra;
    bool full = false, qlora = false, smoke = false, no_shared = false;
    std::size_t limit = 0;
    recipe::recipe_inputs in;
    in.title = "tinylm: instruction fine-tuning";
    in.train = {.steps = 200, .batch = 8, .time = 256, .lr = 2e-3, .warmup = 20, .eval_every = 50};
    in.val_count = 24;
    in.truncate = true; // long answers: their beginning still teaches the format
    app.add_option("--base", base, "Hugging Face folder of the base model (with tokenizer.json)");
    app.add_flag("--full", full, "full fine-tuning instead of LoRA");
    app.add_flag("--qlora", qlora, "LoRA on a 4-bit NF4 base");
    app.add_option("--out", out, "run directory");
    app.add_option("--data-dir", data_dir, "tinylm data directory (default: $TINYLM_DATA_DIR or ../shared/data)");
    app.add_option("--data", extra, "more SFT files (alpaca, seed tasks, chat messages, prompt/completion, CSV)");
    app.add_option("--data-format", data_format,
                   "format of the --data files: auto, alpaca, alpaca-system (input = system, instruction = user, "
                   "output = assistant; JSON, JSONL or CSV), seed-tasks, messages, prompt-completion, csv");
    app.add_flag("--no-shared", no_shared, "train on the --data files only");
    app.add_option("--system", system_prompt, "a system message for conversations without one and for the basket");
    app.add_option("--val", in.val_count, "held-out conversations")
        ->check(recipes::at_least(std::size_t{1}, "held-out conversations"));
    app.add_option("--chat-format", in.chat_format, "auto, folder, plain, chatml or zephyr");
    app.add_option("--steps", in.train.steps, "optimizer steps")->check(recipes::at_least(1LL, "optimizer steps"));
    app.add_option("--batch", in.train.batch, "rows per step")
        ->check(recipes::at_least(tl::index_t{1}, "rows per step"));
    app.add_option("--seq-len", in.train.time, "tokens per packed row")
        ->check(recipes::at_least(tl::index_t{8}, "tokens per packed row"));
    app.add_option("--lr", in.train.lr, "peak learning rate (default 2e-3 with LoRA, 3e-4 with --full)")
        ->check(recipes::above(0.0, "peak learning rate"));
    app.add_option("--weight-decay", in.train.weight_decay, "AdamW weight decay")
        ->check(recipes::in_range(0.0, 1.0, "AdamW weight decay"));
    app.add_option("--eval-every", in.train.eval_every, "steps between validation losses")
        ->check(recipes::in_range(1LL, 2147483647LL, "steps between validation losses"));
    app.add_option("--checkpoint-every", in.train.checkpoint_every, "steps between checkpoints in OUT/checkpoint")
        ->check(recipes::in_range(1LL, 2147483647LL, "steps between checkpoints"));
    app.add_flag("--fresh", in.train.fresh, "start over even if OUT/checkpoint exists (else the run continues)");
    app.add_option("--new-tokens", in.new_tokens, "new tokens per sample")
        ->check(recipes::at_least(0, "new tokens per sample"));
    app.add_option("--seed", in.train.seed, "split, batching, adapter and sampling seed");
    app.add_flag("--smoke", smoke, "a seconds-long run on a few instructions (for CI)");
    std::string precision = "f32";
    recipes::add_precision_option(app, precision);
    app.add_option("--device", in.device,
                   "cpu (tl::decoder), cuda: the GPU (gpu::device_decoder with the same adapter, or every parameter "
                   "with --full: the trained parameters, their gradients and AdamW's moments on the GPU, bf16 "
                   "products; in a build with tinylm::cuda; validation on the GPU, samples and saving on the CPU from "
                   "the trained weights) or cpu-ops: the GPU's code path on the CPU (f32; slow, a check)")
        ->check(CLI::IsMember({"cpu", "cuda", "cpu-ops"}));
    CLI11_PARSE(app, argc, argv);
    tl::dist::communicator& world = recipes::join_world(); // rank 0 prints (examples/common/ranks.hpp)
    recipe::check_device(in.device, "07_sft_instruct");
    in.products = recipes::checked_precision("07_sft_instruct", precision, in.device);
    tl::check(!(full && qlora), "07_sft_instruct: --full and --qlora exclude each other");
    // The SFT assignment's four evaluation questions, as the assignment spells them, then eight more.
    in.prompts = {"сколько планет в нашей солнечной системе?",
                  "расскажи стих",
                  "когда собирать крыжовник?",
                  "Как быстро выучить новый язык?",
                  "Назови три столицы европейских государств.",
                  "Объясни, что такое фотосинтез.",
                  "Придумай название для нового кафе.",
                  "Напиши короткое стихотворение о зиме.",
                  "Дай три совета, как лучше запоминать слова.",
                  "Сколько будет два плюс два?",
                  "Опиши осенний лес в двух предложениях.",
                  "Почему небо голубое?"};
    in.assignment_prompts = 4;
    in.system_prompt = system_prompt;
    if (smoke) {
        in.train = {.steps = 4, .batch = 2, .time = 128, .lr = 2e-3, .warmup = 1, .eval_every = 2, .fresh = true};
        in.prompts.resize(2);
        in.assignment_prompts = 2;
        in.new_tokens = 8;
        in.val_count = 6;
        limit = 30;
        out = out / "smoke";
    }
    if (full && app.count("--lr") == 0) in.train.lr = 3e-4; // every weight moves: a LoRA rate would wreck the base
    in.base = base;
    in.out = out;

    const fs::path instruct = tl::find_data_dir(data_dir) / "instruct";
    const fs::path seed_tasks = instruct / "ru_alpaca_seed_tasks.jsonl",
                   gpt4 = instruct / "ru_instruct_gpt4_first100.jsonl";
    if (!no_shared && (!fs::exists(seed_tasks) || !fs::exists(gpt4))) {
        std::cerr << "error: 07_sft_instruct: " << instruct << " lacks ru_alpaca_seed_tasks.jsonl or "
                  << "ru_instruct_gpt4_first100.jsonl. Set --data-dir or TINYLM_DATA_DIR (sources in DATA.md), or "
                  << "train on your own files with --data ... --no-shared.\n";
        return 2;
    }
    if (!fs::exists(base / "config.json")) {
        std::cerr << "error: 07_sft_instruct: no base model in " << base << "; train one with scripts/run-main.sh "
                  << "(examples/04_russian_novels) or point --base at a downloaded Qwen2.5-0.5B folder.\n";
        return 2;
    }

    recipes::root_only(world, [&] { recipes::prepare_out_dir(out, "--out"); });
    const tl::data::sft_read_options read{.system_prompt = system_prompt, .limit = limit};
    const tl::data::sft_format extra_format = tl::data::sft_format_from_name(data_format);
    std::vector<fs::path> files;
    if (!no_shared) files = {seed_tasks, gpt4};
    files.insert(files.end(), extra.begin(), extra.end());
    tl::check(!files.empty(), "07_sft_instruct: no data (--no-shared without --data)");
    for (const auto& f : files) {
        const bool shared = !no_shared && (f == seed_tasks || f == gpt4);
        auto convs = tl::data::read_sft(f, shared ? tl::data::sft_format::automatic : extra_format, read);
        in.data_summary += (in.data_summary.empty() ? "" : ", ") + std::to_string(convs.size()) +
                           " conversations from " + f.filename().string();
        in.convs.insert(in.convs.end(), convs.begin(), convs.end());
    }
    std::printf("data: %s\n", in.data_summary.c_str());

    // Any Llama- or Qwen2-shaped base: config.json gives the structure (q/k/v biases or not) and the sizes.
    const tl::model_config base_config = tl::read_hf_folder_config(in.base);
    const auto preset = tl::presets::find(tl::hf_visible(base_config), [&](tl::model_config p) {
        p = tl::hf_visible(p);
        p.init_std = base_config.init_std;
        return p;
    });
    in.title = "tinylm: instruction fine-tuning of " +
               (preset ? std::string(*preset) : tl::hf_architecture(base_config) + " " + in.base.filename().string());
    auto train = [&]<class Family>() {
        using tl::default_backend;
        if (full) return recipe::run<tl::decoder<Family, default_backend>>(std::move(in));
        if (qlora) return recipe::run<tl::decoder<Family, default_backend, recipe::qlora8>>(std::move(in));
        return recipe::run<tl::decoder<Family, default_backend, recipe::lora8>>(std::move(in));
    };
    tl::check(base_config.moe.n_experts == 0, "07_sft_instruct: bases with experts are not supported by the recipe");
    return base_config.qkv_bias ? train.template operator()<tl::families::qwen2>()
                                : train.template operator()<tl::families::llama>();
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
