// tinylm/io/hf_encoder.hpp: Hugging Face BertModel folders (config.json + model.safetensors) for the encoder.
//
//   read_bert_config(j, where)   the model_config of a BERT config.json (model_type "bert"; BertModel,
//                                BertForMaskedLM, ... : any architecture whose encoder is BertModel)
//   bert_config_json(c)          the config.json of BertModel for c
//   load_encoder(model, dir)     config.json checked against model.config(), tensors in F32, F16, BF16 or F64;
//                                names with or without the "bert." prefix of the task heads; the pooler optional
//   save_encoder(model, dir)     config.json + model.safetensors (f32), staged in "<dir>.tmp" and swapped in;
//                                transformers.AutoModel and sentence-transformers load it
//   load_bert<B, A>(dir)         a new encoder<families::bert, B, A> sized by the folder's config.json
//
// Only what tinylm computes is accepted: exact (erf) GELU, absolute positions, post-norm LayerNorm blocks. Anything
// else (RoBERTa's position offset, relative positions, another activation) is an error naming the field.
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/encoder.hpp>
#include <tinylm/model/families.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>

namespace tl {

inline model_config read_bert_config(const nlohmann::json& j, const std::string& where) {
    const std::string file = "hf_encoder: " + where;
    const auto error = [&](const std::string& what) { fail(file + ": " + what); };
    if (!j.is_object()) error("not a JSON object");
    const auto text = [&](const char* key, const char* fallback) {
        return json_field_or<std::string>(j, key, fallback, file);
    };
    const auto size = [&](const char* key) { // positive, and small enough that products of sizes fit
        const int v = json_field<int>(j, key, file);
        if (v <= 0 || v > (1 << 24)) error(std::string(key) + " must be in [1, 2^24], not " + std::to_string(v));
        return v;
    };
    const std::string type = text("model_type", "");
    if (type != "bert") {
        std::string arch;
        if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
            arch = " (architectures " + j["architectures"].dump() + ")";
        error("model_type \"" + type + "\"" + arch +
              " is not an encoder tinylm reads; supported: \"bert\" (BertModel and its task heads)");
    }
    if (const std::string act = text("hidden_act", "gelu"); act != "gelu")
        error("hidden_act \"" + act + "\" is not supported; the encoder computes the exact (erf) \"gelu\"");
    if (const std::string pos = text("position_embedding_type", "absolute"); pos != "absolute")
        error("position_embedding_type \"" + pos + "\" is not supported; only \"absolute\"");
    if (json_field_or<bool>(j, "is_decoder", false, file)) error("is_decoder is true: a causal BERT is not an encoder");

    model_config c = families::bert::value;
    c.vocab_size = size("vocab_size");
    c.d_model = size("hidden_size");
    c.n_layers = size("num_hidden_layers");
    c.n_heads = c.n_kv_heads = size("num_attention_heads");
    c.d_head = 0;
    c.d_ff = size("intermediate_size");
    c.max_seq_len = size("max_position_embeddings");
    c.type_vocab_size = json_field_or<int>(j, "type_vocab_size", 2, file);
    if (c.type_vocab_size < 0 || c.type_vocab_size > (1 << 16)) error("type_vocab_size must be in [0, 65536]");
    c.norm_eps = json_field_or<double>(j, "layer_norm_eps", 1e-12, file);
    c.init_std = json_field_or<double>(j, "initializer_range", 0.02, file);
    c.rope_theta = 10000; // unused: positions are learned
    try {
        check_config(c);
    } catch (const tl::error& e) {
        error(e.what());
    }
    return c;
}

inline nlohmann::json bert_config_json(const model_config& c) {
    check(c.attention == attention_kind::bidirectional && c.norm_position == norm_placement::post &&
              c.positions == position_kind::learned && c.norm == norm_kind::layernorm && c.mlp == mlp_kind::gelu &&
              c.qkv_bias && c.dense_bias && c.n_kv_heads == c.n_heads && c.head_dim() * c.n_heads == c.d_model,
          "bert_config_json: only BERT's structure (families::bert) has a BertModel config.json; a pre-norm or "
          "rotary encoder has no Hugging Face class");
    return nlohmann::json{
        {"architectures", {"BertModel"}},
        {"model_type", "bert"},
        {"vocab_size", c.vocab_size},
        {"hidden_size", c.d_model},
        {"num_hidden_layers", c.n_layers},
        {"num_attention_heads", c.n_heads},
        {"intermediate_size", c.d_ff},
        {"hidden_act", "gelu"},
        {"hidden_dropout_prob", 0.1},
        {"attention_probs_dropout_prob", 0.1},
        {"max_position_embeddings", c.max_seq_len},
        {"type_vocab_size", c.type_vocab_size},
        {"initializer_range", c.init_std},
        {"layer_norm_eps", c.norm_eps},
        {"pad_token_id", 0},
        {"position_embedding_type", "absolute"},
        {"dtype", "float32"},
    };
}

// The model_config of a BERT folder's config.json.
inline model_config read_bert_folder_config(const fs::path& dir) {
    const fs::path p = dir / "config.json";
    check(fs::exists(p), [&] { return "hf_encoder: " + dir.string() + " has no config.json (not a model folder)"; });
    return read_bert_config(detail::read_json_file(p, "hf_encoder"), p.string());
}

// Reads a BertModel folder into `model` (see the header comment). The configuration must equal the model's.
template <class Model>
void load_encoder(Model& model, const fs::path& dir) {
    const model_config c = read_bert_folder_config(dir);
    check(c == model.config(), [&] {
        return "hf_encoder: " + (dir / "config.json").string() +
               " describes another model than this encoder (sizes differ); build it from this config (load_bert)";
    });
    check(fs::exists(dir / "model.safetensors"), [&] {
        return "hf_encoder: " + dir.string() + " has no model.safetensors (pytorch_model.bin is not read: convert it)";
    });
    const safetensors_reader r(dir / "model.safetensors");
    detail::base_tensor_reader<Model> reader(model);
    std::string missing;
    for (const std::string& n : detail::base_tensor_names(model)) {
        // Task heads (BertForMaskedLM, ...) keep the encoder under "bert."; sentence-transformers does not.
        const std::string stored = r.contains(n) ? n : r.contains("bert." + n) ? "bert." + n : "";
        if (!stored.empty())
            reader.read(r, n, stored);
        else if (!n.starts_with("pooler.")) // BertModel(add_pooling_layer=False) has none
            missing += "\n  " + n;
    }
    check(missing.empty(), [&] { return "hf_encoder: " + (dir / "model.safetensors").string() + " lacks:" + missing; });
}

// Writes config.json and model.safetensors (f32) into `stage` (created if missing). A QLoRA encoder writes its
// NF4 projections dequantised; a LoRA encoder its base only (merge() first to save the fine-tuned model).
template <class Model>
void write_encoder_files(const Model& model, const fs::path& stage) {
    fs::create_directories(stage);
    detail::write_text(stage / "config.json", bert_config_json(model.config()).dump(2) + "\n");
    safetensors_writer w;
    w.add_metadata("format", "pt");
    detail::add_base_tensors(w, model);
    w.save(stage / "model.safetensors");
}

template <class Model>
void save_encoder(const Model& model, const fs::path& dir) {
    const fs::path stage = dir.string() + ".tmp";
    fs::remove_all(stage);
    write_encoder_files(model, stage);
    detail::swap_in(stage, dir);
}

// A new encoder sized by the BERT folder `dir`, with its weights.
template <Backend B = default_backend, LoraAdapter A = no_adapter>
std::unique_ptr<encoder<families::bert, B, A>> load_bert(const fs::path& dir, std::uint64_t seed = 0) {
    auto m = std::make_unique<encoder<families::bert, B, A>>(read_bert_folder_config(dir), seed);
    load_encoder(*m, dir);
    return m;
}

} // namespace tl
