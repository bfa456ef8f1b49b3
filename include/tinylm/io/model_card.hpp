// tinylm/io/model_card.hpp: the README.md of a checkpoint folder, a model card as the Hugging Face Hub shows it
// (YAML front matter, then Markdown): what the model is, what it was trained on and how long, its losses, its
// sampling defaults, and how to load it in transformers and in tinylm. The trainer writes one into every
// checkpoint when trainer_options::card is set; the numbers come from the run itself.
#pragma once

#include <tinylm/io/hf_config.hpp>
#include <tinylm/io/hf_folder.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace tl {

struct model_card_info {
    std::string title;                    // e.g. "Russian novels, 4.5M parameters"
    std::string description;              // a paragraph: what the model is for
    std::string data;                     // what it was trained on (and where the data comes from)
    std::vector<std::string> languages{}; // ISO 639-1 codes for the front matter: "ru", "tt"
    std::string license = "other";        // the front matter's license
    std::string example_prompt = "Hello"; // used in the loading examples
    std::string recipe;                   // the command that made it, e.g. "04_russian_novels --preset cpu"
};

// What the run did, for the card.
struct model_card_training {
    long long steps = 0, max_steps = 0;
    double tokens_per_step = 0;
    double last_train_loss = NAN;
    std::vector<std::pair<long long, double>> validation{}; // (step, loss)
};

namespace detail {
inline std::string card_number(double x, const char* format = "%.4f") {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, x);
    return buf;
}
// A string as a YAML double-quoted scalar (JSON's escaping is valid YAML).
inline std::string yaml_string(const std::string& s) { return nlohmann::json(s).dump(); }
} // namespace detail

inline std::string model_card_markdown(const model_config& c, const model_card_info& info,
                                       const model_card_training& run, const hf_generation_config& generation) {
    std::string md = "---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n- tinylm\n";
    md += "license: " + info.license + "\n";
    if (!info.languages.empty()) {
        md += "language:\n";
        for (const std::string& l : info.languages)
            md += "- " + l + "\n";
    }
    md += "---\n\n# " + (info.title.empty() ? std::string("tinylm model") : info.title) + "\n\n";
    if (!info.description.empty()) md += info.description + "\n\n";
    md += "Trained with tinylm (C++20, no Python)";
    if (!info.recipe.empty()) md += " by `" + info.recipe + "`";
    md += ".\n\n## Model\n\n| | |\n| --- | --- |\n";
    md += "| architecture | " + hf_architecture(c) + " |\n";
    md += "| parameters | " + std::to_string(parameter_count(c)) + " |\n";
    md += "| layers | " + std::to_string(c.n_layers) + " |\n";
    md += "| hidden size | " + std::to_string(c.d_model) + " |\n";
    md +=
        "| attention heads (key/value) | " + std::to_string(c.n_heads) + " (" + std::to_string(c.n_kv_heads) + ") |\n";
    md += "| MLP size | " + std::to_string(c.d_ff) + " |\n";
    md += "| context | " + std::to_string(c.max_seq_len) + " tokens |\n";
    md += "| vocabulary | " + std::to_string(c.vocab_size) + " tokens |\n";
    md += std::string("| tied embeddings | ") + (c.tied_embeddings ? "yes" : "no") + " |\n";
    if (c.moe.n_experts > 0)
        md += "| experts | " + std::to_string(c.moe.n_experts) + ", " + std::to_string(c.moe.top_k) + " per token |\n";
    md += "\n## Training\n\n";
    if (!info.data.empty()) md += info.data + "\n\n";
    md += "- steps: " + std::to_string(run.steps) + " of " + std::to_string(run.max_steps) + "\n";
    if (run.tokens_per_step > 0) {
        const double tokens = double(run.steps) * run.tokens_per_step;
        md += "- tokens: " +
              (tokens >= 1e6 ? detail::card_number(tokens / 1e6, "%.2f") + "M" : detail::card_number(tokens, "%.0f")) +
              " (" + detail::card_number(run.tokens_per_step, "%.0f") + " per step)\n";
    }
    if (!std::isnan(run.last_train_loss))
        md += "- last training loss: " + detail::card_number(run.last_train_loss) + " nats/token\n";
    if (!run.validation.empty()) {
        const auto& [step, loss] = run.validation.back();
        md += "- validation loss at step " + std::to_string(step) + ": " + detail::card_number(loss) +
              " nats/token (perplexity " + detail::card_number(std::exp(loss), "%.1f") + ")\n";
        md += "\n| step | validation loss |\n| ---: | ---: |\n";
        for (const auto& v : run.validation)
            md += "| " + std::to_string(v.first) + " | " + detail::card_number(v.second) + " |\n";
    }
    md += "\n## Sampling defaults (generation_config.json)\n\n";
    if (generation.do_sample)
        md += "temperature " + detail::card_number(generation.temperature, "%g") + ", top-k " +
              std::to_string(generation.top_k) + ", top-p " + detail::card_number(generation.top_p, "%g") +
              ", repetition penalty " + detail::card_number(generation.repetition_penalty, "%g") +
              (generation.max_new_tokens > 0 ? ", " + std::to_string(generation.max_new_tokens) + " new tokens" : "") +
              "\n";
    else
        md += "greedy decoding\n";
    const std::string prompt = detail::yaml_string(info.example_prompt);
    md += "\n## Use\n\nWith transformers (the folder is a standard checkpoint):\n\n```python\n"
          "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
          "tok = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n"
          "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
          "ids = tok(" +
          prompt +
          ", return_tensors=\"pt\")\n"
          "print(tok.decode(model.generate(**ids)[0]))  # the sampling defaults above\n```\n\n"
          "With tinylm:\n\n```sh\n"
          "tinylm generate --model path/to/this/folder --prompt " +
          prompt +
          "\n"
          "tinylm chat --model path/to/this/folder\n"
          "tinylm serve --model path/to/this/folder --port 8080   # OpenAI-compatible /v1\n```\n";
    return md;
}

} // namespace tl
