// 06_evaluate: evaluate a tinylm checkpoint directory (Hugging Face layout with tokenizer.json).
//
//   06_evaluate bpb --checkpoint DIR --text held_out.txt [--split paragraph|line|file] [--stride N]
//       perplexity and bits per byte of held-out text (include/tinylm/eval/bits_per_byte.hpp)
//   06_evaluate mc --checkpoint DIR --task test.jsonl [--dev dev.jsonl --shots 2 --seed 1234]
//       a multiple-choice task with lm-evaluation-harness conventions: acc, acc_norm (multiple_choice.hpp)
//   06_evaluate qa --checkpoint DIR [--set benchmarks/tatar_qa/facts.jsonl] [--floors --train-text a.txt ...]
//       the paraphrase-consistency QA benchmark, with the untrained-model and unigram floors (paraphrase_qa.hpp)
//
// Any Llama, Mistral, Ministral, Qwen2 or Mixtral checkpoint loads, whatever its sizes: config.json picks the
// structure (tl::with_pretrained, io/hf_any.hpp) and the sizes are read at run time, so a new shape (a grown
// vocabulary, a 0.5B Qwen) needs no rebuild. --help lists every option with its default. docs/evaluation.md
// has the formats.
#include "evaluate_commands.hpp"
#include "options.hpp"

#include <tinylm/io/hf_any.hpp>
#include <tinylm/model/registry.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>

namespace fs = std::filesystem;

int main(int argc, char** argv) try {
    CLI::App app{"Evaluate a tinylm checkpoint: bits per byte, multiple choice (lm-eval conventions), paraphrase QA"};
    recipes::show_defaults(app); // the subcommands inherit it
    app.require_subcommand(1);
    recipes::evaluate::settings s;
    s.qa_set_path = fs::path(TINYLM_SOURCE_DIR) / "benchmarks/tatar_qa/facts.jsonl";
    recipes::evaluate::add_commands(app, s, [&](CLI::App* sub) { recipes::add_checkpoint_options(*sub, s.model); });
    CLI11_PARSE(app, argc, argv);
    s.command = app.get_subcommands().front()->get_name();

    const tl::model_config config = tl::read_hf_folder_config(s.model.checkpoint);
    const fs::path tokenizer_file =
        s.model.tokenizer.empty() ? s.model.checkpoint / "tokenizer.json" : s.model.tokenizer;
    tl::check(fs::is_regular_file(tokenizer_file), [&] {
        return tokenizer_file.string() +
               " does not exist: give --tokenizer FILE or put the model's tokenizer.json there";
    });
    const tl::tokenizer tok = tl::load_tokenizer_json(tokenizer_file.string());
    // A tokenizer of another model: ids beyond the embedding would index past it.
    tl::check(tl::index_t(tok.vocab_size()) <= tl::index_t(config.vocab_size), [&] {
        return tokenizer_file.string() + " has " + std::to_string(tok.vocab_size()) +
               " tokens, more than the vocabulary of " + std::to_string(config.vocab_size) + " in " +
               (s.model.checkpoint / "config.json").string() + ": the tokenizer of another model?";
    });
    const std::optional<std::string_view> preset = tl::presets::find(tl::hf_visible(config), [&](tl::model_config p) {
        p = tl::hf_visible(p);
        p.init_std = config.init_std;
        return p;
    });
    std::fprintf(s.json ? stderr : stdout, // stdout holds the JSON alone
                 "configuration: %s, %d layers, d_model %d, vocabulary %d (preset: %s)\n",
                 tl::hf_architecture(config).c_str(), config.n_layers, config.d_model, config.vocab_size,
                 preset ? std::string(*preset).c_str() : "none");
    return tl::with_pretrained(
        s.model.checkpoint,
        [&](auto& model) { return recipes::evaluate::run(model, s, tok, s.model.checkpoint.string()); },
        tl::weights_to_load_for_inference);
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
