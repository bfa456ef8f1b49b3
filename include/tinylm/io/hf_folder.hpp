// tinylm/io/hf_folder.hpp: a Hugging Face model folder as `save_pretrained` writes it (or as downloaded from
// the Hub), read in one call:
//
//   <dir>/config.json                   checked against the compile-time preset (io/hf_checkpoint.hpp)
//   <dir>/model.safetensors             or model.safetensors.index.json + shards; F32, F16, BF16 or F64
//   <dir>/generation_config.json        eos ids and sampling defaults         -> hf_generation_config
//   <dir>/tokenizer.json                                                      -> tl::tokenizer
//   <dir>/tokenizer_config.json         special tokens, chat_template         -> hf_special_tokens,
//   <dir>/chat_template.jinja           (transformers 5 writes the template here) tl::chat_template
//
//   tl::decoder<tl::presets::qwen2_5_0_5b> model;
//   tl::hf_folder f = tl::load_hf_folder(model, "Qwen2.5-0.5B-Instruct");   // weights + everything else
//   auto ids = f.tokenizer->encode(f.chat->render(messages, {.add_generation_prompt = true}));
//   auto out = tl::generate(model, ids, f.generation.options(/*max_new_tokens=*/64));
//
// Only config.json and the weights are required; a folder without tokenizer files gives empty optionals, one
// without generation_config.json the transformers defaults (with eos from config.json).
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/eval/generate.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/tokenizer/chat_template.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tl {

// generation_config.json: what transformers' generate() uses by default for this model.
struct hf_generation_config {
    std::vector<token_t> eos_token_ids{}; // generation stops at any of them (an int or a list in the file)
    token_t bos_token_id = -1;            // -1: none
    token_t pad_token_id = -1;
    bool do_sample = false; // false: greedy, whatever the sampling fields say (as transformers)
    double temperature = 1.0;
    int top_k = 50; // transformers' default
    double top_p = 1.0;
    double repetition_penalty = 1.0;
    double min_p = 0.0;     // 0: off
    int max_new_tokens = 0; // 0: not given

    sampling_options sampling(std::uint64_t seed = 0) const {
        if (!do_sample) return {.temperature = 0.0, .repetition_penalty = repetition_penalty, .seed = seed};
        return {.temperature = temperature,
                .top_k = top_k,
                .top_p = top_p,
                .repetition_penalty = repetition_penalty,
                .seed = seed,
                .min_p = min_p};
    }
    // Options for tl::generate: stop at the eos ids, the file's max_new_tokens unless given one here.
    generation_options options(int new_tokens = 0, std::uint64_t seed = 0) const {
        return {.max_new_tokens = new_tokens > 0 ? new_tokens : (max_new_tokens > 0 ? max_new_tokens : 128),
                .stop_tokens = eos_token_ids,
                .sampling = sampling(seed)};
    }
};

// Special tokens of tokenizer_config.json (strings, or AddedToken objects with "content") and their ids in
// tokenizer.json (-1 when absent).
struct hf_special_tokens {
    std::string bos, eos, pad, unk;
    token_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
};

struct hf_folder {
    std::filesystem::path dir;
    nlohmann::json config;                  // config.json as read
    hf_generation_config generation;        // generation_config.json (defaults when absent)
    std::optional<tl::tokenizer> tokenizer; // tokenizer.json
    std::optional<tl::chat_template> chat;  // tokenizer_config.json "chat_template" or chat_template.jinja
    hf_special_tokens special;              // tokenizer_config.json
};

namespace detail {
// A token id or a list of them (eos_token_id is either); null or absent gives none.
inline std::vector<token_t> token_ids(const nlohmann::json& j, const char* key, const std::string& where) {
    std::vector<token_t> ids;
    if (!j.contains(key) || j[key].is_null()) return ids;
    const auto& v = j[key];
    check(v.is_number_integer() || v.is_array(),
          [&] { return "hf_folder: " + where + ": " + key + " must be an integer or a list of integers"; });
    for (const auto& x : v.is_array() ? v : nlohmann::json::array({v})) {
        ids.push_back(json_as<token_t>(x, "hf_folder: " + where, key));
    }
    return ids;
}

inline std::string special_token_text(const nlohmann::json& j, const char* key, const std::string& where) {
    if (!j.contains(key) || j[key].is_null()) return {};
    const auto& v = j[key];
    if (v.is_string()) return v.get<std::string>();
    check(v.is_object() && v.contains("content") && v["content"].is_string(), [&] {
        return "hf_folder: " + where + ": " + key + " must be a string or an AddedToken object with \"content\"";
    });
    return v["content"].get<std::string>();
}
} // namespace detail

// Reads generation_config.json; `model_config` (config.json) supplies eos/bos/pad ids the file lacks.
inline hf_generation_config read_generation_config(const std::filesystem::path& file,
                                                   const nlohmann::json& model_config = nlohmann::json::object()) {
    hf_generation_config g;
    const nlohmann::json j =
        std::filesystem::exists(file) ? detail::read_json_file(file, "hf_folder") : nlohmann::json::object();
    const std::string where = file.string();
    check(j.is_object(), [&] { return "hf_folder: " + where + " is not a JSON object"; });
    auto first = [&](const char* key) -> token_t {
        for (const auto* src : {&j, &model_config}) {
            const auto ids = detail::token_ids(*src, key, where);
            if (!ids.empty()) return ids.front();
        }
        return -1;
    };
    g.eos_token_ids = detail::token_ids(j, "eos_token_id", where);
    if (g.eos_token_ids.empty()) g.eos_token_ids = detail::token_ids(model_config, "eos_token_id", "config.json");
    g.bos_token_id = first("bos_token_id");
    g.pad_token_id = first("pad_token_id");
    auto number = [&](const char* key, auto& field) {
        if (!j.contains(key) || j[key].is_null()) return;
        field = json_as<std::remove_reference_t<decltype(field)>>(j[key], "hf_folder: " + where, key);
    };
    number("do_sample", g.do_sample);
    number("temperature", g.temperature);
    number("top_k", g.top_k);
    number("top_p", g.top_p);
    number("repetition_penalty", g.repetition_penalty);
    number("min_p", g.min_p);
    number("max_new_tokens", g.max_new_tokens);
    check(g.temperature >= 0 && g.top_k >= 0 && g.top_p > 0 && g.top_p <= 1 && g.repetition_penalty > 0 &&
              g.min_p >= 0 && g.min_p <= 1,
          [&] {
              return "hf_folder: " + where + ": sampling settings out of range (temperature " +
                     std::to_string(g.temperature) + ", top_k " + std::to_string(g.top_k) + ", top_p " +
                     std::to_string(g.top_p) + ", repetition_penalty " + std::to_string(g.repetition_penalty) + ")";
          });
    return g;
}

// generation_config.json holding these defaults (what transformers' generate() and `tinylm generate` use); the
// sampling fields only with do_sample, as transformers validates them.
inline nlohmann::json generation_config_json(const hf_generation_config& g) {
    nlohmann::json j{{"_from_model_config", false}};
    if (g.bos_token_id >= 0) j["bos_token_id"] = g.bos_token_id;
    if (g.eos_token_ids.size() == 1) j["eos_token_id"] = g.eos_token_ids.front();
    if (g.eos_token_ids.size() > 1) j["eos_token_id"] = g.eos_token_ids;
    if (g.pad_token_id >= 0) j["pad_token_id"] = g.pad_token_id;
    j["do_sample"] = g.do_sample;
    if (g.do_sample) {
        j["temperature"] = g.temperature;
        j["top_k"] = g.top_k;
        j["top_p"] = g.top_p;
        if (g.min_p > 0) j["min_p"] = g.min_p;
    }
    if (g.repetition_penalty != 1.0) j["repetition_penalty"] = g.repetition_penalty;
    if (g.max_new_tokens > 0) j["max_new_tokens"] = g.max_new_tokens;
    return j;
}
inline void write_generation_config(const std::filesystem::path& dir, const hf_generation_config& g) {
    detail::write_text(dir / "generation_config.json", generation_config_json(g).dump(2) + "\n");
}

// Defaults that sample as `s` does (do_sample unless s is greedy), for `max_new_tokens` (0: not given).
inline hf_generation_config sampling_defaults(const sampling_options& s, int max_new_tokens = 0) {
    hf_generation_config g;
    g.do_sample = s.temperature > 0;
    g.temperature = s.temperature > 0 ? s.temperature : 1.0;
    g.top_k = s.top_k;
    g.top_p = s.top_p;
    g.min_p = s.min_p;
    g.repetition_penalty = s.repetition_penalty;
    g.max_new_tokens = max_new_tokens;
    return g;
}

// Everything in the folder but the weights.
inline hf_folder read_hf_folder(const std::filesystem::path& dir) {
    hf_folder f;
    f.dir = dir;
    const auto config_path = dir / "config.json";
    check(std::filesystem::exists(config_path), [&] { return "hf_folder: " + dir.string() + " has no config.json"; });
    f.config = detail::read_json_file(config_path, "hf_folder");
    f.generation = read_generation_config(dir / "generation_config.json", f.config);
    if (std::filesystem::exists(dir / "tokenizer.json"))
        f.tokenizer = load_tokenizer_json((dir / "tokenizer.json").string());
    const auto tok_config = dir / "tokenizer_config.json";
    if (std::filesystem::exists(tok_config)) {
        const nlohmann::json j = detail::read_json_file(tok_config, "hf_folder");
        const std::string where = tok_config.string();
        f.special.bos = detail::special_token_text(j, "bos_token", where);
        f.special.eos = detail::special_token_text(j, "eos_token", where);
        f.special.pad = detail::special_token_text(j, "pad_token", where);
        f.special.unk = detail::special_token_text(j, "unk_token", where);
        if (f.tokenizer) {
            auto id_of = [&](const std::string& token, const char* key) -> token_t {
                if (token.empty()) return -1;
                const token_t id = f.tokenizer->token_to_id(token);
                check(id >= 0, [&] {
                    return "hf_folder: " + where + ": " + key + " \"" + token + "\" is not in " +
                           (dir / "tokenizer.json").string();
                });
                return id;
            };
            f.special.bos_id = id_of(f.special.bos, "bos_token");
            f.special.eos_id = id_of(f.special.eos, "eos_token");
            f.special.pad_id = id_of(f.special.pad, "pad_token");
            f.special.unk_id = id_of(f.special.unk, "unk_token");
        }
        if ((j.contains("chat_template") && !j["chat_template"].is_null()) ||
            std::filesystem::exists(dir / "chat_template.jinja"))
            f.chat = chat_template::from_tokenizer_config(tok_config);
    }
    return f;
}

// Loads the weights into `model` (load_pretrained: config check, shards, dtypes, QLoRA quantisation) and
// reads the rest of the folder.
template <class Model>
hf_folder load_hf_folder(Model& model, const std::filesystem::path& dir) {
    hf_folder f = read_hf_folder(dir);
    load_pretrained(model, dir);
    if (f.tokenizer)
        check(index_t(f.tokenizer->vocab_size()) <= model.config().vocab_size, [&] {
            return "hf_folder: " + (dir / "tokenizer.json").string() + " has " +
                   std::to_string(f.tokenizer->vocab_size()) + " tokens, more than the model's vocabulary of " +
                   std::to_string(model.config().vocab_size);
        });
    return f;
}

} // namespace tl
