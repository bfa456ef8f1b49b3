// sft_recipe.hpp: the supervised fine-tuning recipe shared by 07_sft_instruct and 08_jokes_lora.
//
//   conversations -> held-out split -> chat template + assistant-only labels -> packed rows
//   -> validation loss and samples of the base -> tl::trainer with AdamW (LoRA, QLoRA or full) over the packed
//      rows -> validation loss and samples -> adapter (PEFT) or model (Hugging Face) saved -> reloaded and checked
//      against the trained logits -> OUT/before_after.md (a prompt basket at three sampling settings, before and
//      after), OUT/training/ (log.jsonl, TensorBoard, loss curves).
// Training is the library's loop (train/trainer.hpp), so a run keeps checkpoints in OUT/checkpoint (the model,
// with an adapter also in the PEFT format, AdamW's moments, the row order's position and the LoRA dropout state):
// running the same command again continues it, bit-identically even after kill -9, and Ctrl-C saves first.
// Under `mpirun -np N` (docs/distributed.md) every rank runs the recipe and the trainer trains data parallel
// (the batch is the global batch); rank 0 alone samples, logs, saves, reloads and writes the report, the other
// ranks train and validate and return 0 after training (examples/common/ranks.hpp).
// Devices (recipe_inputs::device, --device): cpu (tl::decoder, the default), cuda (gpu::device_decoder<gpu_ops, the
// same adapter>: the adapter (or, --full, every parameter), its gradients and AdamW's moments on the GPU, the frozen
// base loaded once, bf16 products; needs a build with tinylm::cuda) or cpu-ops (the GPU's code path on the CPU,
// gpu::cpu_ops, f32: a check). The same trainer, checkpoints (either device resumes the other's) and validation
// (on the device); the trained weights then come back to the host model for the samples, the saved files and the
// reload check. Under mpirun, cuda takes one GPU per rank and sums the gradients through NCCL.
#pragma once

#include "../common/options.hpp" // (relative, as ranks.hpp)
#include "../common/ranks.hpp"   // also for test_recipes, which lacks examples/common on its path

#include <tinylm/cuda/device_decoder.hpp>
#if defined(TINYLM_HAS_NCCL) && TINYLM_HAS_NCCL
#include <tinylm/cuda/nccl_communicator.hpp>
#endif
#include <tinylm/data/sft.hpp>
#include <tinylm/eval/generate.hpp>
#include <tinylm/io/hf_any.hpp>
#include <tinylm/io/hf_folder.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/tinylm.hpp>
#include <tinylm/train/run_logger.hpp>
#include <tinylm/train/trainer.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace recipe {

namespace fs = std::filesystem;
using tl::index_t;

// LoRA as the issue asks for it: r = 8, alpha = 16, dropout 0.05 on all seven projections.
struct lora8 {
    static constexpr tl::lora_config value{.rank = 8, .alpha = 16, .dropout = 0.05f, .targets = tl::lora_all};
};
// The same adapter on a 4-bit NF4 base (QLoRA).
struct qlora8 {
    static constexpr tl::lora_config value{
        .rank = 8, .alpha = 16, .dropout = 0.05f, .targets = tl::lora_all, .quantized_base = true};
};

// A chat format for a model whose tokenizer has no chat special tokens (our pretrained Russian model): the
// markers are ordinary text, and the assistant's turn ends with the model's eos token, which the labels train
// and generation stops at. A Jinja template like any model's, so the same code path serves real templates.
inline constexpr std::string_view plain_chat_template = R"tmpl({{- bos_token }}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {{- message.content + '\n\n' }}
    {%- elif message.role == 'user' %}
        {{- '### Вопрос:\n' + message.content + '\n\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '### Ответ:\n' + message.content + eos_token + '\n\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '### Ответ:\n' }}
{%- endif %})tmpl";

struct chat_format {
    tl::chat_template tmpl;
    std::string name;
    std::vector<tl::token_t> stop; // generation stops at these ids
};

// `which`: auto (the folder's template, else plain), folder, plain, chatml or zephyr.
inline chat_format pick_chat_format(const tl::hf_folder& f, const std::string& which) {
    const tl::tokenizer& tok = *f.tokenizer;
    auto special = [&](const std::string& from_config, const char* fallback) {
        if (!from_config.empty()) return from_config;
        tl::check(tok.token_to_id(fallback) >= 0, [&] {
            return std::string("recipe: the tokenizer has no ") + fallback +
                   " token and no tokenizer_config.json names one; pick --chat-format chatml or zephyr";
        });
        return std::string(fallback);
    };
    std::string name = which;
    if (which == "auto") name = f.chat ? "folder" : "plain";
    std::optional<tl::chat_template> t;
    if (name == "folder") {
        tl::check(f.chat.has_value(), "recipe: --chat-format folder: the folder has no chat template");
        t = *f.chat;
    } else if (name == "plain") {
        t.emplace(std::string(plain_chat_template), "chat template 'plain'");
        t->set_variable("bos_token", special(f.special.bos, "<bos>"));
        t->set_variable("eos_token", special(f.special.eos, "<eos>"));
    } else if (name == "chatml") {
        t = tl::chat_template::chatml();
    } else if (name == "zephyr") {
        t = tl::chat_template::zephyr();
    } else {
        tl::fail("recipe: unknown chat format '" + which + "' (auto, folder, plain, chatml, zephyr)");
    }
    chat_format out{*t, name, f.generation.eos_token_ids};
    // The template's end of turn stops generation too (ChatML's <|im_end|> in a base model's folder).
    const auto eos = t->variables().contains("eos_token") ? t->variables()["eos_token"].get<std::string>() : "";
    if (const tl::token_t id = eos.empty() ? -1 : tok.token_to_id(eos);
        id >= 0 && std::find(out.stop.begin(), out.stop.end(), id) == out.stop.end())
        out.stop.push_back(id);
    return out;
}

// ---- data ------------------------------------------------------------------------------------------------

struct data_split {
    std::vector<tl::data::conversation> train, val;
};

// Shuffles with `seed` and holds out `val_count` conversations.
inline data_split hold_out(std::vector<tl::data::conversation> all, std::size_t val_count, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::shuffle(all.begin(), all.end(), rng);
    val_count = std::min(val_count, all.size() / 2);
    data_split s;
    s.val.assign(std::make_move_iterator(all.begin()), std::make_move_iterator(all.begin() + long(val_count)));
    s.train.assign(std::make_move_iterator(all.begin() + long(val_count)), std::make_move_iterator(all.end()));
    return s;
}

struct tokenized {
    std::vector<tl::data::sft_example> examples;
    std::size_t too_long = 0; // conversations longer than a row: left out, or cut when truncating
    std::size_t labelled = 0, tokens = 0;
};

// Conversations longer than a row are left out (their eos would be cut, and the model would not learn to
// stop on them), unless `truncate`: then their first `time` tokens are kept.
inline tokenized tokenize_fitting(const tl::tokenizer& tok, const chat_format& fmt,
                                  const std::vector<tl::data::conversation>& convs, index_t time, bool truncate) {
    tokenized out;
    for (auto& ex : tl::data::tokenize_conversations(tok, fmt.tmpl, convs)) {
        if (index_t(ex.ids.size()) > time) {
            ++out.too_long;
            if (!truncate) continue;
            ex.ids.resize(std::size_t(time));
            ex.labels.resize(std::size_t(time));
        }
        out.tokens += ex.ids.size();
        out.labelled += std::size_t(std::count_if(ex.labels.begin(), ex.labels.end(), [](auto l) { return l >= 0; }));
        out.examples.push_back(std::move(ex));
    }
    return out;
}

// ---- training --------------------------------------------------------------------------------------------

struct train_options {
    long long steps = 300;
    index_t batch = 8;  // rows per step
    index_t time = 256; // tokens per row (packed conversations)
    double lr = 2e-3;
    long long warmup = 20;
    double weight_decay = 0.0;
    double clip = 1.0;
    long long eval_every = 100;
    long long checkpoint_every = 50; // steps between checkpoints in OUT/checkpoint (and at the end)
    bool fresh = false;              // start over even if OUT/checkpoint exists
    std::uint64_t seed = 1;
};

// Token-weighted mean loss over all rows, without dropout.
template <class Model>
double validation_loss(Model& model, const tl::data::sft_rows& rows, index_t batch) {
    double sum = 0;
    double count = 0;
    for (index_t r = 0; r < rows.rows; r += batch) {
        const index_t n = std::min(batch, rows.rows - r);
        const double l = model.eval_loss(rows.ids_view(r, n), rows.targets_view(r, n), rows.doc_start_view(r, n));
        sum += l * double(model.counted_targets());
        count += double(model.counted_targets());
    }
    return count > 0 ? sum / count : NAN;
}

// ---- samples ---------------------------------------------------------------------------------------------

struct sampling_setting {
    std::string label;
    tl::sampling_options sampling;
};

// Three settings from conservative to free; the same seeds before and after, so differences come from the model.
inline std::vector<sampling_setting> report_settings() {
    return {{"greedy, repetition penalty 1.2", {.temperature = 0.0, .repetition_penalty = 1.2}},
            {"temperature 0.7, top-p 0.9, repetition penalty 1.1",
             {.temperature = 0.7, .top_p = 0.9, .repetition_penalty = 1.1}},
            {"temperature 1.0, top-p 0.95, no repetition penalty", {.temperature = 1.0, .top_p = 0.95}}};
}

using samples_t = std::vector<std::vector<std::string>>; // [setting][prompt]

template <class Model>
samples_t sample_basket(const Model& model, const tl::tokenizer& tok, const chat_format& fmt,
                        const std::vector<std::string>& prompts, const std::string& system_prompt, int new_tokens,
                        std::uint64_t seed) {
    samples_t out;
    for (const auto& s : report_settings()) {
        out.emplace_back();
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            nlohmann::ordered_json messages = nlohmann::ordered_json::array();
            if (!system_prompt.empty()) messages.push_back({{"role", "system"}, {"content", system_prompt}});
            messages.push_back({{"role", "user"}, {"content", prompts[i]}});
            const auto ids = tok.encode(fmt.tmpl.render(messages, {.add_generation_prompt = true}));
            const int room = int(model.config().max_seq_len) - int(ids.size());
            tl::sampling_options sampling = s.sampling;
            sampling.seed = seed + i;
            const tl::generation_options g{.max_new_tokens = std::max(0, std::min(new_tokens, room)),
                                           .stop_tokens = fmt.stop,
                                           .sampling = sampling};
            const auto gen = tl::generate(model, std::span<const tl::token_t>(ids), g);
            out.back().push_back(tok.decode(std::vector<tl::token_t>(gen.begin(), gen.end()), true));
        }
    }
    return out;
}

inline std::string quoted(std::string text) { // a Markdown block quote, one line per line
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    std::string out = "> ";
    for (char c : text) {
        if (c == '\n')
            out += "  \n> ";
        else
            out += c;
    }
    return out + "\n";
}

// ---- the recipe ------------------------------------------------------------------------------------------

struct recipe_inputs {
    std::string title;
    fs::path base;                             // Hugging Face folder with tokenizer.json
    fs::path out;                              // run directory
    std::vector<tl::data::conversation> convs; // all conversations; the split happens here
    std::size_t val_count = 100;               // held out
    std::string chat_format = "auto";          // see pick_chat_format
    std::vector<std::string> prompts;          // the report's basket
    std::size_t assignment_prompts = 0;        // the first ones are the assignment's questions (marked)
    std::string system_prompt = {};            // for the basket (the data carries its own)
    int new_tokens = 80;                       // per sample
    std::string data_summary = {};             // sources, for the report
    std::string report_extra = {};             // markdown put in the report after its table (08: data histograms)
    bool truncate = false;                     // cut conversations longer than a row instead of leaving them out
    train_options train = {};
    std::function<void(long long step)> after_step = {}; // after each optimizer step (tests kill the run here)
    std::string device = "cpu";                          // cpu, cuda or cpu-ops (the header comment)
    tl::precision products = tl::precision::f32;         // --precision, as recipes::checked_precision returned it
};

// --device's check before any data is read: cuda needs tinylm::cuda in the build and a visible GPU.
inline void check_device(const std::string& device, const char* recipe) {
    tl::check(device == "cpu" || device == "cuda" || device == "cpu-ops",
              [&] { return std::string(recipe) + ": --device " + device + ": cpu, cuda or cpu-ops"; });
    if (device != "cuda") return;
#ifdef TINYLM_HAS_CUDA
    tl::check(tl::gpu::device_count() > 0, [&] {
        return std::string(recipe) + ": --device cuda: no CUDA device is visible (device_count() == 0): no GPU or no "
                                     "driver on this machine";
    });
#else
    tl::fail(std::string(recipe) + ": --device cuda: this build has no CUDA backend (tinylm::cuda); configure with "
                                   "-DTINYLM_WITH_CUDA=ON (needs nvcc) and rebuild, or use --device cpu");
#endif
}

template <class Model>
void load_base(Model& model, const fs::path& base) {
    tl::load_pretrained(model, base);
}

// The base's tokenizer and chat files, so that a saved model folder (or checkpoint) is complete.
inline void copy_tokenizer_files(const fs::path& base, const fs::path& to) {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"})
        if (fs::exists(base / f)) fs::copy_file(base / f, to / f, fs::copy_options::overwrite_existing);
}

// Largest |a - b| relative to the largest |b|.
inline double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, double(std::abs(a[i] - b[i])));
        scale = std::max(scale, double(std::abs(b[i])));
    }
    return diff / std::max(scale, 1e-30);
}

template <class Model>
std::vector<float> first_row_logits(Model& model, const tl::data::sft_rows& rows) {
    std::vector<float> out(std::size_t(rows.time * model.config().vocab_size));
    model.logits(rows.ids_view(0, 1), {out.data(), {1, rows.time, model.config().vocab_size}},
                 rows.doc_start_view(0, 1));
    return out;
}

// Runs the recipe with Model = decoder<Config, Backend, Adapter> (an adapter: LoRA/QLoRA; none: full
// fine-tuning). Returns the process exit code.
template <class Model>
int run(recipe_inputs in) {
    using clock = std::chrono::steady_clock;
    auto seconds = [](clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); };
    constexpr bool lora = Model::has_adapter;
    const auto& tr = in.train;
    tl::dist::communicator& world = tl::dist::world();
    const bool root = world.is_root();
    recipes::root_only(world, [&] { fs::create_directories(in.out); });

    // Base model, tokenizer, chat format.
    auto t0 = clock::now();
    const tl::hf_folder folder = tl::read_hf_folder(in.base);
    tl::check(folder.tokenizer.has_value(), [&] { return "recipe: " + in.base.string() + " has no tokenizer.json"; });
    const tl::tokenizer& tok = *folder.tokenizer;
    const chat_format fmt = pick_chat_format(folder, in.chat_format);
    const tl::model_config base_config = tl::read_hf_folder_config(in.base); // sizes read at run time
    auto model = std::make_unique<Model>(base_config, tl::weights_to_load, tr.seed);
    load_base(*model, in.base);
    tl::check(tr.time <= model->config().max_seq_len, [&] {
        return "recipe: rows of " + std::to_string(tr.time) + " tokens exceed the model's context of " +
               std::to_string(model->config().max_seq_len);
    });
    std::printf("base: %s (%lld parameters), loaded in %.1f s; chat format: %s\n", in.base.c_str(),
                static_cast<long long>(tl::parameter_count(model->config())), seconds(t0), fmt.name.c_str());
    long long trainable = 0;
    for (const auto& e : model->trainable_entries())
        trainable += static_cast<long long>(e.value.shape.numel());
    std::printf("trainable: %lld parameters (%s)\n", trainable, lora ? "LoRA adapter" : "full fine-tuning");

    // Data.
    const data_split split = hold_out(std::move(in.convs), in.val_count, tr.seed);
    const tokenized train_ex = tokenize_fitting(tok, fmt, split.train, tr.time, in.truncate);
    const tokenized val_ex = tokenize_fitting(tok, fmt, split.val, tr.time, in.truncate);
    const auto pad = folder.special.pad_id >= 0 ? folder.special.pad_id : fmt.stop.empty() ? 0 : fmt.stop.front();
    const tl::data::sft_rows train_rows = tl::data::pack_examples(train_ex.examples, tr.time, pad);
    const tl::data::sft_rows val_rows = tl::data::pack_examples(val_ex.examples, tr.time, pad);
    tl::check(train_rows.rows > 0 && val_rows.rows > 0, "recipe: no training or no validation rows");
    char line[512];
    std::snprintf(line, sizeof line,
                  "train %zu conversations (%zu tokens, %zu labelled) in %lld rows of %lld (fill %.2f); validation "
                  "%zu conversations (%zu labelled tokens) in %lld rows; %zu longer than a row %s",
                  train_ex.examples.size(), train_ex.tokens, train_ex.labelled, static_cast<long long>(train_rows.rows),
                  static_cast<long long>(tr.time), train_rows.fill(), val_ex.examples.size(), val_ex.labelled,
                  static_cast<long long>(val_rows.rows), train_ex.too_long + val_ex.too_long,
                  in.truncate ? "cut" : "left out");
    const std::string split_summary = line;
    std::printf("data: %s\n", split_summary.c_str());

    // Before.
    t0 = clock::now();
    const double val_before = validation_loss(*model, val_rows, tr.batch);
    std::printf("validation loss before: %.4f nats/token (%.1f s)\n", val_before, seconds(t0));
    t0 = clock::now();
    samples_t before; // rank 0's
    if (root) before = sample_basket(*model, tok, fmt, in.prompts, in.system_prompt, in.new_tokens, tr.seed);
    std::printf("samples before: %zu x %zu (%.1f s)\n", before.size(), in.prompts.size(), seconds(t0));

    // Training: the library's loop over the packed rows (each row once per epoch, in a seeded order), with
    // checkpoints in OUT/checkpoint that a second run of the same command continues from.
    const tl::special_token_ids special{
        .bos = folder.generation.bos_token_id,
        .eos = folder.generation.eos_token_ids.empty() ? -1 : folder.generation.eos_token_ids[0],
        .pad = folder.generation.pad_token_id};
    const tl::trainer_options options{.batch_size = tr.batch,
                                      .seq_len = tr.time,
                                      .grad_accum = 1,
                                      .max_steps = tr.steps,
                                      .peak_lr = tr.lr,
                                      .min_lr = tr.lr / 10,
                                      .warmup_steps = std::min(tr.warmup, tr.steps / 5),
                                      .decay = tl::decay_kind::cosine,
                                      .adamw = {.weight_decay = tr.weight_decay},
                                      .clip = tr.clip,
                                      .eval_every = int(tr.eval_every),
                                      .checkpoint_every = int(tr.checkpoint_every),
                                      .out_dir = in.out,
                                      .resume = !tr.fresh,
                                      .special = special,
                                      .matmul_precision = in.products};
    recipes::root_only(world, [&] { // no rank looks for a checkpoint before rank 0 removed it
        if (tr.fresh) fs::remove_all(in.out / "checkpoint");
    });
    tl::packed_rows batches(train_rows.ids, train_rows.targets, train_rows.doc_start, tr.time, tr.seed + 1);
    long long first_step = 0;
    double tokens = 0, train_seconds = 0, val_after = NAN;
    fs::path training_report, checkpoint_dir;
    // The run over the host model or a device model (validation on it, eval_rows rows at a time). Returns the exit
    // code when the process stops here (interrupted; a rank other than 0 after training).
    const auto train_on = [&](auto& trained, index_t eval_rows, const tl::trainer_options& with) -> std::optional<int> {
        tl::trainer run(
            trained, batches, [&] { return validation_loss(trained, val_rows, eval_rows); }, with);
        run.add_to_checkpoint = [&](const fs::path& staged) { copy_tokenizer_files(in.base, staged); };
        first_step = run.restore();
        if (first_step > 0)
            std::printf("resuming from %s at step %lld of %lld\n", run.checkpoint_dir().c_str(), first_step, tr.steps);
        std::optional<tl::run_logger> logger; // rank 0's (the trainer calls the hooks on rank 0 only)
        if (root) logger.emplace(in.out / "training", in.title, tr.steps, first_step);
        if (root && first_step == 0) logger->eval(0, val_before);
        run.on_step = [&](const tl::step_report& r) {
            tokens += double(r.counted_targets);
            logger->step(r);
            if (in.after_step) in.after_step(r.step);
        };
        run.on_eval = [&](long long step, double loss) { logger->eval(step, loss); };
        const auto train_start = clock::now();
        if (run.run() == tl::train_outcome::interrupted) {
            if (!root) return 130;
            logger->finish();
            std::printf("\ninterrupted at step %lld; checkpoint saved in %s (run again to resume)\n", run.state().step,
                        run.checkpoint_dir().c_str());
            return 130;
        }
        train_seconds = seconds(train_start);
        const nlohmann::json& history = run.state().history; // a finished run's rerun trains nothing: use its record
        val_after = history.contains("val_loss") && !history["val_loss"].empty() ? double(history["val_loss"].back()[1])
                                                                                 : run.evaluate();
        checkpoint_dir = run.checkpoint_dir();
        if (!root) return 0; // the rest samples, saves, reloads and reports
        logger->summary("validation loss",
                        std::to_string(val_before) + " before, " + std::to_string(val_after) + " after");
        training_report = logger->finish();
        return std::nullopt;
    };
    std::optional<int> stopped;
    if (in.device == "cpu") {
        stopped = train_on(*model, tr.batch, options);
    } else {
        tl::gpu::device_decoder_options on_device; // the rank's rows of the global batch (all of it in one process)
        on_device.batch = index_t(tl::dist::part_of(std::size_t(tr.batch), world.rank(), world.size()).count());
        on_device.time = tr.time, on_device.bf16 = in.device == "cuda";
        using adapter = typename Model::adapter;
#ifdef TINYLM_HAS_CUDA
        if (in.device == "cuda") {
            tl::trainer_options on_gpus = options;
            // Several ranks: one GPU each, the gradients through NCCL; made before the model (it selects the GPU).
#if defined(TINYLM_HAS_NCCL) && TINYLM_HAS_NCCL
            std::optional<tl::gpu::nccl_communicator> gpus;
            if (world.size() > 1) on_gpus.device_communicator = &gpus.emplace(world);
#else
            tl::check(world.size() == 1, "recipe: --device cuda on several ranks needs NCCL (gpu::nccl_communicator); "
                                         "this build of tinylm::cuda has none (docs/gpu.md)");
#endif
            tl::gpu::device_decoder<tl::gpu::gpu_ops, adapter> gpu_model(model->config(), on_device);
            gpu_model.load_from(*model);
            std::printf("device: cuda (gpu::device_decoder, bf16 products), %.0f MiB of GPU memory\n",
                        double(gpu_model.arena_bytes()) / (1 << 20));
            stopped = train_on(gpu_model, on_device.batch, on_gpus);
            gpu_model.store_into(*model);
        }
#endif
        if (in.device == "cpu-ops") {
            tl::gpu::device_decoder<tl::gpu::cpu_ops, adapter> checked(model->config(), on_device);
            checked.load_from(*model);
            std::printf("device: cpu-ops (gpu::device_decoder's code path on the CPU, f32)\n");
            stopped = train_on(checked, on_device.batch, options);
            checked.store_into(*model);
        }
        tl::check(in.device == "cuda" || in.device == "cpu-ops", "recipe: --device " + in.device + " is unknown");
    }
    if (stopped) return *stopped;
    std::printf("\nvalidation loss before %.4f, after %.4f nats/token (%s); training %.1f s (steps %lld to %lld, %.0f "
                "labelled tokens)\n",
                val_before, val_after, val_after < val_before ? "fell" : "DID NOT FALL", train_seconds, first_step + 1,
                tr.steps, tokens);

    t0 = clock::now();
    const samples_t after = sample_basket(*model, tok, fmt, in.prompts, in.system_prompt, in.new_tokens, tr.seed);
    std::printf("samples after (%.1f s)\n", seconds(t0));

    // Save, reload from the files alone, and compare logits on a validation row.
    const std::vector<float> trained_logits = first_row_logits(*model, val_rows);
    fs::path saved;
    auto reloaded = std::make_unique<Model>(base_config, tl::weights_to_load, tr.seed + 7);
    if constexpr (lora) {
        saved = in.out / "adapter";
        tl::save_adapter(*model, saved, in.base.string());
        load_base(*reloaded, in.base);
        tl::load_adapter(*reloaded, saved);
    } else {
        saved = in.out / "model";
        tl::save_pretrained(*model, saved, special);
        copy_tokenizer_files(in.base, saved);
        load_base(*reloaded, saved);
    }
    model.reset(); // the reloaded model alone from here
    const double reload_error = relative_difference(first_row_logits(*reloaded, val_rows), trained_logits);
    const bool reload_ok = reload_error <= 1e-5;
    std::printf("saved %s; reloaded %s: logits relative difference %.2e (%s)\n", saved.c_str(),
                lora ? "base + adapter" : "model", reload_error, reload_ok ? "OK" : "MISMATCH");

    // Report.
    std::ofstream md(in.out / "before_after.md", std::ios::binary);
    md << "# " << in.title << "\n\n| | |\n| --- | --- |\n";
    md << "| base | `" << in.base.string() << "` (" << tl::parameter_count(reloaded->config()) << " parameters) |\n";
    md << "| method | "
       << (lora ? "LoRA r=" + std::to_string(Model::lora.rank) + ", alpha " + std::to_string(int(Model::lora.alpha)) +
                      ", dropout " + std::to_string(Model::lora.dropout).substr(0, 4) +
                      ", targets q/k/v/o/gate/up/down" + (Model::lora.quantized_base ? ", NF4 base (QLoRA)" : "")
                : std::string("full fine-tuning"))
       << "; " << trainable << " trainable parameters |\n";
    md << "| chat format | " << fmt.name << "; loss on assistant tokens only |\n";
    if (!in.data_summary.empty()) md << "| data | " << in.data_summary << " |\n";
    if (!in.system_prompt.empty()) md << "| system message | «" << in.system_prompt << "» |\n";
    md << "| split | " << split_summary << " |\n";
    std::snprintf(line, sizeof line,
                  "%lld steps of %lld rows x %lld tokens, AdamW lr %.1e (warmup, cosine to lr/10), "
                  "weight decay %.2g, clip %.1f; %.1f s for steps %lld to %lld (checkpoints in `%s`)",
                  tr.steps, static_cast<long long>(tr.batch), static_cast<long long>(tr.time), tr.lr, tr.weight_decay,
                  tr.clip, train_seconds, first_step + 1, tr.steps, checkpoint_dir.c_str());
    md << "| training | " << line << " |\n";
    std::snprintf(line, sizeof line, "%.4f before, %.4f after (nats per assistant token)", val_before, val_after);
    md << "| validation loss | " << line << " |\n";
    std::snprintf(line, sizeof line, "%.2e (largest absolute difference over the largest absolute logit)",
                  reload_error);
    md << "| reloaded " << (lora ? "base + adapter" : "model") << " vs trained logits | " << line << " |\n";
    md << "| saved | `" << saved.string() << "` |\n| loss curves | `" << training_report.string() << "` |\n";
    const std::size_t n_assignment = std::min(in.assignment_prompts, in.prompts.size());
    if (n_assignment > 0) {
        md << "| the assignment's questions |";
        for (std::size_t p = 0; p < n_assignment; ++p)
            md << (p ? "; " : " ") << "«" << in.prompts[p] << "»";
        md << " (marked *assignment* below) |\n";
    }
    md << "\n" << in.report_extra;
    for (std::size_t s = 0; s < before.size(); ++s) {
        md << "## " << report_settings()[s].label << "\n\n";
        for (std::size_t p = 0; p < in.prompts.size(); ++p) {
            md << "**" << in.prompts[p] << "**" << (p < n_assignment ? " (*assignment*)" : "") << "\n\n*before:*\n\n"
               << quoted(before[s][p]) << "\n*after:*\n\n"
               << quoted(after[s][p]) << "\n";
        }
    }
    md.close();

    std::printf("\n%s\n", report_settings()[1].label.c_str());
    for (std::size_t p = 0; p < std::min<std::size_t>(3, in.prompts.size()); ++p)
        std::printf("%s\n  before: %s\n  after:  %s\n", in.prompts[p].c_str(), before[1][p].c_str(),
                    after[1][p].c_str());
    std::printf("\nreport: %s\n", (in.out / "before_after.md").c_str());
    return reload_ok ? 0 : 1;
}

} // namespace recipe
