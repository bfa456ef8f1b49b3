// tinylm/io/sentence_transformers.hpp: sentence-transformers folders, read and written.
//
//   <dir>/modules.json                 [Transformer (path ""), Pooling ("1_Pooling"), Normalize ("2_Normalize")]
//   <dir>/sentence_bert_config.json    {"max_seq_length": 256, "do_lower_case": false}
//   <dir>/config.json, model.safetensors, tokenizer.json, ...   the Transformer module: a BertModel folder
//   <dir>/1_Pooling/config.json        {"word_embedding_dimension": d, "pooling_mode_mean_tokens": true, ...}
//   <dir>/2_Normalize/                 (no files)
//
// read_sentence_config(dir) gives where the Transformer module lives and the sentence_config (pooling, normalise,
// max length); modules tinylm does not compute (Dense, a pooling mode other than one of mean / cls / max, several
// modes at once) are errors naming them. write_sentence_folder(model, dir, config, tokenizer_dir) writes the whole
// folder (the tokenizer files copied from `tokenizer_dir`) in "<dir>.tmp" and swaps it in; SentenceTransformer(dir)
// loads it and computes tinylm's embeddings.
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/embed/sentence_encoder.hpp>
#include <tinylm/io/hf_encoder.hpp>
#include <tinylm/tokenizer/wordpiece_json.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace tl {

// The batches a sentence_encoder takes, from a WordPiece tokenizer (its [CLS] $A [SEP] template, right padding).
// `tok` must outlive the function.
inline embed::batch_tokenizer sentence_tokenizer(const wordpiece_tokenizer& tok) {
    return [&tok](std::span<const std::string> texts, index_t max_length) {
        wordpiece_batch b = tok.encode_batch(texts, std::size_t(max_length));
        return embed::token_batch{std::move(b.ids), std::move(b.type_ids), std::move(b.lengths),
                                  index_t(b.batch), index_t(b.time),       index_t(b.n_truncated)};
    };
}

struct sentence_folder {
    fs::path transformer_dir; // the BertModel folder (usually `dir` itself)
    embed::sentence_config config;
};

inline sentence_folder read_sentence_config(const fs::path& dir) {
    const fs::path modules_path = dir / "modules.json";
    check(fs::exists(modules_path), [&] {
        return "sentence_transformers: " + dir.string() +
               " has no modules.json (not a sentence-transformers folder; a plain BertModel folder loads with "
               "load_bert and takes the pooling from the caller)";
    });
    const nlohmann::json modules = detail::read_json_file(modules_path, "sentence_transformers");
    const auto error = [&](const std::string& what) {
        fail("sentence_transformers: " + modules_path.string() + ": " + what);
    };
    if (!modules.is_array() || modules.empty()) error("must be a non-empty array of modules");
    sentence_folder out;
    out.config.normalize = false;
    bool transformer = false, pooling = false;
    for (const auto& m : modules) {
        if (!m.is_object() || !m.contains("type") || !m["type"].is_string() || !m.contains("path") ||
            !m["path"].is_string())
            error("each module needs a \"type\" and a \"path\" string, got " + m.dump());
        const std::string type = m["type"].get<std::string>();
        const fs::path path = dir / m["path"].get<std::string>();
        if (type == "sentence_transformers.models.Transformer") {
            if (transformer) error("two Transformer modules");
            if (pooling || out.config.normalize) error("the Transformer module must come first");
            transformer = true;
            out.transformer_dir = path;
            const fs::path st = path / "sentence_bert_config.json";
            if (fs::exists(st)) {
                const nlohmann::json j = detail::read_json_file(st, "sentence_transformers");
                const auto length = json_field_or<std::int64_t>(j, "max_seq_length", out.config.max_length,
                                                                "sentence_transformers: " + st.string());
                check(length >= 2 && length <= (1 << 20), [&] {
                    return "sentence_transformers: " + st.string() + ": max_seq_length must be in [2, 2^20]";
                });
                out.config.max_length = index_t(length);
            }
        } else if (type == "sentence_transformers.models.Pooling") {
            if (!transformer || pooling) error("Pooling must follow the Transformer module, once");
            pooling = true;
            const fs::path p = path / "config.json";
            const nlohmann::json j = detail::read_json_file(p, "sentence_transformers");
            std::vector<std::string> on;
            for (const auto& [key, value] : j.items())
                if (key.starts_with("pooling_mode_") && value.is_boolean() && value.get<bool>()) on.push_back(key);
            if (j.contains("pooling_mode") && j["pooling_mode"].is_string())
                on = {"pooling_mode_" + j["pooling_mode"].get<std::string>() + "_tokens"};
            if (on.size() != 1)
                fail("sentence_transformers: " + p.string() +
                     ": exactly one pooling mode is supported (mean, cls or max), got " + std::to_string(on.size()));
            const std::string mode = on.front();
            if (mode == "pooling_mode_mean_tokens")
                out.config.pooling = pooling_mode::mean;
            else if (mode == "pooling_mode_cls_token" || mode == "pooling_mode_cls_tokens")
                out.config.pooling = pooling_mode::cls;
            else if (mode == "pooling_mode_max_tokens")
                out.config.pooling = pooling_mode::max;
            else
                fail("sentence_transformers: " + p.string() + ": " + mode + " is not supported (mean, cls or max)");
            if (j.contains("include_prompt") && j["include_prompt"].is_boolean() && !j["include_prompt"].get<bool>())
                fail("sentence_transformers: " + p.string() + ": include_prompt = false is not supported");
        } else if (type == "sentence_transformers.models.Normalize") {
            if (!pooling) error("Normalize must follow Pooling");
            out.config.normalize = true;
        } else {
            error("module " + type + " is not supported (Transformer, Pooling, Normalize)");
        }
    }
    if (!transformer || !pooling) error("needs a Transformer and a Pooling module");
    return out;
}

inline nlohmann::json pooling_config_json(index_t dim, pooling_mode mode) {
    return nlohmann::json{{"word_embedding_dimension", dim},
                          {"pooling_mode_cls_token", mode == pooling_mode::cls},
                          {"pooling_mode_mean_tokens", mode == pooling_mode::mean},
                          {"pooling_mode_max_tokens", mode == pooling_mode::max},
                          {"pooling_mode_mean_sqrt_len_tokens", false},
                          {"pooling_mode_weightedmean_tokens", false},
                          {"pooling_mode_lasttoken", false},
                          {"include_prompt", true}};
}

// Writes a sentence-transformers folder of `model` (a BERT-layout encoder) with `config`; the tokenizer files of
// `tokenizer_dir` (tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt) are copied.
template <class Model>
void write_sentence_folder(const Model& model, const fs::path& dir, const embed::sentence_config& config,
                           const fs::path& tokenizer_dir) {
    check(fs::exists(tokenizer_dir / "tokenizer.json"),
          [&] { return "sentence_transformers: " + tokenizer_dir.string() + " has no tokenizer.json to copy"; });
    const fs::path stage = dir.string() + ".tmp";
    fs::remove_all(stage);
    write_encoder_files(model, stage);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"})
        if (fs::exists(tokenizer_dir / f)) fs::copy_file(tokenizer_dir / f, stage / f);
    nlohmann::json modules = nlohmann::json::array(
        {{{"idx", 0}, {"name", "0"}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
         {{"idx", 1}, {"name", "1"}, {"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}}});
    if (config.normalize)
        modules.push_back(
            {{"idx", 2}, {"name", "2"}, {"path", "2_Normalize"}, {"type", "sentence_transformers.models.Normalize"}});
    detail::write_text(stage / "modules.json", modules.dump(2) + "\n");
    detail::write_text(stage / "sentence_bert_config.json",
                       nlohmann::json{{"max_seq_length", config.max_length}, {"do_lower_case", false}}.dump(2) + "\n");
    detail::write_text(stage / "config_sentence_transformers.json",
                       nlohmann::json{{"model_type", "SentenceTransformer"},
                                      {"prompts", nlohmann::json::object()},
                                      {"default_prompt_name", nullptr},
                                      {"similarity_fn_name", "cosine"},
                                      {"__version__", {{"tinylm", "1"}}}}
                               .dump(2) +
                           "\n");
    fs::create_directories(stage / "1_Pooling");
    detail::write_text(stage / "1_Pooling" / "config.json",
                       pooling_config_json(model.hidden_size(), config.pooling).dump(2) + "\n");
    if (config.normalize) fs::create_directories(stage / "2_Normalize");
    detail::swap_in(stage, dir);
}

} // namespace tl
