// tools/tinylm/common.hpp: what the subcommands of `tinylm` share: the model flags (--model, --adapter), the
// sampling flags (each overrides the model's generation_config.json only when given), the chat formatting of a
// conversation, and the one function that loads a model (model_loader.cpp, the only file that instantiates the
// decoders).
#pragma once

#include "cli_checks.hpp"

#include <tinylm/serve/chat_format.hpp>
#include <tinylm/serve/text_model.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tinylm_cli {

namespace fs = std::filesystem;

struct model_flags;
// Loads the model folder with the adapter merged in (empty: none) and, with --precision bf16, the weights' bf16
// copies for decoding, printing what was loaded to stderr.
std::unique_ptr<tl::text_model> open_model(const model_flags& flags);

// Writes the model folder (with the adapter merged in) as a GGUF file for llama.cpp (io/gguf.hpp).
void export_gguf(const fs::path& model, const fs::path& adapter, const std::string& type, const std::string& name,
                 const fs::path& out);

// --model: an existing folder, or a .gguf file.
inline CLI::Validator existing_model_path() {
    return CLI::Validator(
        [](std::string& p) {
            return fs::is_directory(p) || (fs::is_regular_file(p) && fs::path(p).extension() == ".gguf")
                       ? std::string()
                       : "not a folder or a .gguf file: " + p;
        },
        "DIR|FILE.gguf");
}

struct model_flags {
    fs::path model{}, adapter{};
    std::string precision = "f32"; // the weights one-token decoding steps read (add_decoding_precision_option)
    std::string kv_cache = "f32";  // the keys' and values' precision in the KV caches
};
inline void add_model_options(CLI::App& app, model_flags& m) {
    app.add_option(
           "--model", m.model,
           "model folder (config.json, model.safetensors, tokenizer.json), or a GGUF file (llama, qwen2 or qwen3; "
           "its tokenizer and chat template from the file, its weights dequantised to f32: docs/gguf.md)")
        ->required()
        ->check(existing_model_path());
    app.add_option("--adapter", m.adapter, "PEFT LoRA adapter folder, merged into the model at load")
        ->check(CLI::ExistingDirectory);
}
// --precision, for the commands that decode (generate, chat, serve, eval generations).
inline void add_decoding_precision_option(CLI::App& app, model_flags& m) {
    app.add_option("--precision", m.precision,
                   "the weights each decoding step reads: f32; bf16 copies (half the bytes a token: faster where "
                   "decoding is bound by memory, any CPU; +half the weights' memory); q8_0 copies (8-bit codes, "
                   "a scale per 32 weights: about a quarter of the bytes, +0.28x the weights' memory); or q4_0 "
                   "copies (4-bit codes, a scale per 32: about a sixth of the bytes, +0.16x the memory; the "
                   "coarsest: logits within a few percent). Prompts of more than 8 tokens still read f32 "
                   "(docs/precision.md)")
        ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}))
        ->capture_default_str();
    app.add_option("--kv-cache", m.kv_cache,
                   "the precision of the cached keys and values: f32, or bf16 (half the cache's memory and of "
                   "the bytes each token reads from it, which dominate at long contexts; rounded once when stored, "
                   "as llama.cpp's default f16 cache; model/kv_cache.hpp)")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
}

// Sampling settings given on the command line; the rest come from the model's generation_config.json.
struct sampling_flags {
    tl::sampling_overrides given;

    void add_to(CLI::App& app) {
        CLI::Option_group* g = app.add_option_group("Sampling (defaults: the model's generation_config.json)");
        g->add_option("--temperature", given.temperature, "sampling temperature; 0: greedy")
            ->check(recipes::in_range(0.0, 100.0, "sampling temperature; 0: greedy"));
        g->add_option("--top-k", given.top_k, "sample among the k likeliest tokens; 0: all")
            ->check(recipes::at_least(0, "the k likeliest tokens; 0: all"));
        g->add_option("--top-p", given.top_p, "nucleus: the likeliest tokens up to this probability; 1: all")
            ->check(recipes::in_range(0.0, 1.0, "nucleus probability; 1: all"));
        g->add_option("--min-p", given.min_p, "drop tokens less likely than min-p times the likeliest; 0: off")
            ->check(recipes::in_range(0.0, 1.0, "share of the likeliest token's probability; 0: off"));
        g->add_option("--repetition-penalty", given.repetition_penalty, "divides the logits of tokens seen; 1: off")
            ->check(recipes::above(0.0, "divides the logits of tokens seen; 1: off"));
        g->add_option("--max-tokens", given.max_tokens, "new tokens at most (default: generation_config's, else 128)")
            ->check(recipes::at_least(1, "new tokens at most"));
        g->add_option("--seed", given.seed, "random seed of the sampler");
        g->add_option("--stop", given.stop, "stop when the text contains this string (repeatable)");
    }
    tl::text_generation_options apply(const tl::text_model& m) const { return m.options_with(given); }
};

// Each subcommand adds itself to `app`; when it is the one given, its callback sets `chosen` to what main runs
// after parsing (its exit code).
using command = std::function<int()>;
void add_generate(CLI::App& app, command& chosen);
void add_chat(CLI::App& app, command& chosen);
void add_serve(CLI::App& app, command& chosen);
void add_info(CLI::App& app, command& chosen);
void add_eval(CLI::App& app, command& chosen);
void add_eval_generations(CLI::App& eval, command& chosen); // `tinylm eval generations`
void add_synth(CLI::App& app, command& chosen);
void add_export_gguf(CLI::App& app, command& chosen);

} // namespace tinylm_cli
