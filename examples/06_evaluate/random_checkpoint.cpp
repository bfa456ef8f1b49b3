// random_checkpoint: writes a randomly initialised checkpoint (Hugging Face layout) of any configuration, with
// a tokenizer.json copied beside it: a same-shaped stand-in for a real model when none can be downloaded, and
// the way to show that a new shape loads without a rebuild (docs/evaluation.md, "Any checkpoint").
//
//   random_checkpoint --preset qwen2_5_0_5b --tokenizer ../shared/data/tokenizers/qwen3/tokenizer.json --out DIR
//   random_checkpoint --preset russian_novels_cpu --vocab 3005 --tokenizer tok.json --out DIR
//   random_checkpoint --config some/config.json --tokenizer tok.json --out DIR
//
// The model is built as a family type (model/families.hpp) with the configuration's sizes given at run time,
// so this one program writes every shape.
#include "options.hpp"

#include <tinylm/io/hf_any.hpp>
#include <tinylm/model/registry.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

namespace fs = std::filesystem;

int main(int argc, char** argv) try {
    CLI::App app{"Write a randomly initialised checkpoint of any configuration (Hugging Face layout)"};
    recipes::show_defaults(app);
    std::string preset;
    fs::path config_json, tokenizer, out;
    int vocab = 0;
    std::uint64_t seed = 1;
    app.add_option("--preset", preset, "a preset's configuration")->check(CLI::IsMember(tl::presets::names()));
    app.add_option("--config", config_json, "or a Hugging Face config.json");
    app.add_option("--vocab", vocab, "override the vocabulary size (0: keep)")
        ->check(recipes::at_least(0, "vocabulary size; 0: the preset's"));
    app.add_option("--tokenizer", tokenizer, "tokenizer.json to copy beside the weights")->required();
    app.add_option("--out", out, "output folder")->required();
    app.add_option("--seed", seed, "initialisation seed");
    CLI11_PARSE(app, argc, argv);
    tl::check(preset.empty() != config_json.empty(), "random_checkpoint: give exactly one of --preset and --config");

    tl::model_config c =
        preset.empty() ? tl::read_hf_config(nlohmann::json::parse(std::ifstream(config_json)), config_json.string())
                       : tl::presets::visit(preset, []<class P>() { return tl::model_config(P::value); });
    if (vocab > 0) c.vocab_size = vocab;
    auto write = [&]<class Family>() {
        tl::decoder<Family> model(c, seed);
        tl::save_pretrained(model, out);
        fs::copy_file(tokenizer, out / "tokenizer.json", fs::copy_options::overwrite_existing);
        std::printf("random_checkpoint: %s, %lld parameters (%s, vocabulary %d) -> %s\n",
                    tl::hf_architecture(c).c_str(), static_cast<long long>(model.parameter_count()),
                    preset.empty() ? config_json.c_str() : preset.c_str(), c.vocab_size, out.c_str());
    };
    tl::visit_family(c, write);
    return 0;
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
