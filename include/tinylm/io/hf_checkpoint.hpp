// tinylm/io/hf_checkpoint.hpp: checkpoints in the Hugging Face layout.
//
//   <dir>/config.json             LlamaForCausalLM, Qwen2ForCausalLM (q/k/v biases), MistralForCausalLM
//                                 (sliding window), MinistralForCausalLM (sliding window in some layers only,
//                                 with layer_types) or MixtralForCausalLM (experts), chosen from the model_config
//   <dir>/generation_config.json
//   <dir>/model.safetensors       f32 tensors under their Hugging Face names (no lm_head when tied)
//
// transformers.AutoModelForCausalLM.from_pretrained(<dir>) loads what save_pretrained writes, and
// load_pretrained reads both ours and theirs (f32, f16, bf16 or f64 tensors; one file or a sharded index).
// Loading checks config.json against the compile-time configuration and names every field that differs.
// Saving writes a sibling "<dir>.tmp" and swaps it in, so an interrupted save leaves the old checkpoint.
// A LoRA model's files hold its base only (merge() first to save the fine-tuned model as a plain
// checkpoint); the adapter goes to the PEFT format (io/peft.hpp).
#pragma once

#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/decoder.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace tl {

namespace fs = std::filesystem;

inline std::string hf_architecture(const model_config& c) {
    check(c.norm == norm_kind::rmsnorm && c.mlp == mlp_kind::swiglu,
          "hf_checkpoint: only RMSNorm + SwiGLU decoders map onto Llama, Qwen2, Mistral or Mixtral");
    const bool per_layer_window = c.sliding_window > 0 && c.full_attention_every > 0;
    if (c.moe.n_experts > 0) {
        check(!c.qkv_bias, "hf_checkpoint: experts with q/k/v biases have no Hugging Face architecture here");
        check(!per_layer_window, "hf_checkpoint: experts with a per-layer sliding window have no Hugging Face "
                                 "architecture here (MixtralForCausalLM ignores layer_types)");
        return "MixtralForCausalLM";
    }
    check(!(c.qkv_bias && c.sliding_window > 0),
          "hf_checkpoint: q/k/v biases with a sliding window have no Hugging Face "
          "architecture here (Qwen2's sliding window is per layer)");
    if (c.qkv_bias) return "Qwen2ForCausalLM";
    if (per_layer_window) return "MinistralForCausalLM"; // Mistral's blocks; honours layer_types
    if (c.sliding_window > 0) return "MistralForCausalLM";
    return "LlamaForCausalLM";
}

struct special_token_ids {
    int bos = -1, eos = -1, pad = -1; // -1: none
};

inline nlohmann::json hf_config_json(const model_config& c, special_token_ids special = {}) {
    const std::string arch = hf_architecture(c);
    nlohmann::json j{
        {"architectures", {arch}},
        {"model_type", arch == "Qwen2ForCausalLM"       ? "qwen2"
                       : arch == "MistralForCausalLM"   ? "mistral"
                       : arch == "MixtralForCausalLM"   ? "mixtral"
                       : arch == "MinistralForCausalLM" ? "ministral"
                                                        : "llama"},
        {"vocab_size", c.vocab_size},
        {"hidden_size", c.d_model},
        {"intermediate_size", c.d_ff},
        {"num_hidden_layers", c.n_layers},
        {"num_attention_heads", c.n_heads},
        {"num_key_value_heads", c.n_kv_heads},
        {"head_dim", c.head_dim()},
        {"max_position_embeddings", c.max_seq_len},
        {"rms_norm_eps", c.norm_eps},
        {"rope_theta", c.rope_theta},
        {"tie_word_embeddings", c.tied_embeddings},
        {"hidden_act", "silu"},
        {"initializer_range", c.init_std},
        {"torch_dtype", "float32"},
        {"use_cache", true},
    };
    if (arch == "LlamaForCausalLM") j["attention_bias"] = false, j["mlp_bias"] = false;
    if (arch == "MistralForCausalLM") j["sliding_window"] = c.sliding_window;
    if (arch == "MinistralForCausalLM") {
        j["sliding_window"] = c.sliding_window;
        j["layer_types"] = nlohmann::json::array();
        for (int l = 0; l < c.n_layers; ++l)
            j["layer_types"].push_back(c.layer_window(l) > 0 ? "sliding_attention" : "full_attention");
    }
    if (arch == "Qwen2ForCausalLM") j["use_sliding_window"] = false, j["sliding_window"] = nullptr;
    if (arch == "MixtralForCausalLM") {
        j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
        j["num_local_experts"] = c.moe.n_experts;
        j["num_experts_per_tok"] = c.moe.top_k;
        j["router_jitter_noise"] = 0.0;
        // HF adds router_aux_loss_coef * aux_loss to the loss only with output_router_logits.
        j["output_router_logits"] = c.moe.aux_loss_weight > 0;
        j["router_aux_loss_coef"] = c.moe.aux_loss_weight;
    }
    if (special.bos >= 0) j["bos_token_id"] = special.bos;
    if (special.eos >= 0) j["eos_token_id"] = special.eos;
    if (special.pad >= 0) j["pad_token_id"] = special.pad;
    return j;
}

// Throws naming each field of config.json that disagrees with the compile-time configuration.
inline void check_hf_config(const nlohmann::json& j, const model_config& c, const std::string& where) {
    std::string diffs;
    auto expect = [&](const char* key, auto want) {
        using W = decltype(want);
        if (!j.contains(key) || j[key].is_null()) {
            diffs += std::string("\n  ") + key + ": missing, the model needs " + nlohmann::json(want).dump();
            return;
        }
        const W got = j[key].template get<W>();
        const bool same = [&] {
            if constexpr (std::is_floating_point_v<W>)
                return std::abs(got - want) <= 1e-9 * std::abs(want);
            else
                return got == want;
        }();
        if (!same)
            diffs += std::string("\n  ") + key + ": " + j[key].dump() + " in the file, " + nlohmann::json(want).dump() +
                     " in the model";
    };
    expect("vocab_size", c.vocab_size);
    expect("hidden_size", c.d_model);
    expect("intermediate_size", c.d_ff);
    expect("num_hidden_layers", c.n_layers);
    expect("num_attention_heads", c.n_heads);
    if (j.contains("num_key_value_heads"))
        expect("num_key_value_heads", c.n_kv_heads);
    else if (c.n_kv_heads != c.n_heads)
        diffs += "\n  num_key_value_heads: missing (means MHA), the model has GQA/MQA";
    if (j.contains("head_dim") && !j["head_dim"].is_null()) expect("head_dim", c.head_dim());
    expect("rms_norm_eps", c.norm_eps);
    // The block tinylm computes: SwiGLU with SiLU, no MLP biases, no rope scaling.
    if (j.contains("hidden_act") && j["hidden_act"] != "silu")
        diffs += "\n  hidden_act: " + j["hidden_act"].dump() + " in the file, \"silu\" in the model";
    if (j.contains("mlp_bias") && j["mlp_bias"] == true)
        diffs += "\n  mlp_bias: true in the file, the model has no MLP biases";
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
        diffs += "\n  rope_scaling: " + j["rope_scaling"].dump() + " in the file, the model has plain RoPE";
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
        j["rope_parameters"].contains("rope_type") && j["rope_parameters"]["rope_type"] != "default")
        diffs += "\n  rope_parameters.rope_type: " + j["rope_parameters"]["rope_type"].dump() +
                 " in the file, the model has plain RoPE (\"default\")";
    // transformers 5 writes rope_theta inside rope_parameters; earlier versions at the top level.
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
        j["rope_parameters"].contains("rope_theta")) {
        const double theta = j["rope_parameters"]["rope_theta"].get<double>();
        if (std::abs(theta - c.rope_theta) > 1e-9 * c.rope_theta)
            diffs += "\n  rope_parameters.rope_theta: " + std::to_string(theta) + " in the file, " +
                     std::to_string(c.rope_theta) + " in the model";
    } else {
        expect("rope_theta", c.rope_theta);
    }
    expect("tie_word_embeddings", c.tied_embeddings);
    const bool file_window =
        j.contains("sliding_window") && !j["sliding_window"].is_null() && j.value("use_sliding_window", true);
    const int window = file_window ? j["sliding_window"].get<int>() : 0;
    if (window != c.sliding_window)
        diffs += "\n  sliding_window: " + std::to_string(window) + " in the file, " + std::to_string(c.sliding_window) +
                 " in the model";
    // Which layers slide: layer_types when present (Ministral, Qwen2), else Qwen2's max_window_layers (the
    // layers from there on slide), else all of them (Mistral, Mixtral).
    if (window > 0 && window == c.sliding_window) {
        const bool listed = j.contains("layer_types") && j["layer_types"].is_array();
        check(!listed || j["layer_types"].size() == std::size_t(c.n_layers),
              [&] { return "hf_checkpoint: " + where + ": layer_types must have num_hidden_layers entries"; });
        const int first_sliding =
            j.value("model_type", "") == "qwen2" && !listed ? j.value("max_window_layers", 28) : 0;
        std::string file_types, model_types;
        for (int l = 0; l < c.n_layers; ++l) {
            const bool file_slides =
                listed ? j["layer_types"][std::size_t(l)] == "sliding_attention" : l >= first_sliding;
            file_types += file_slides ? 'S' : 'F';
            model_types += c.layer_window(l) > 0 ? 'S' : 'F';
        }
        if (file_types != model_types)
            diffs += "\n  layer_types (S sliding, F full): " + file_types + " in the file, " + model_types +
                     " in the model (full_attention_every = " + std::to_string(c.full_attention_every) + ")";
    }
    const bool file_bias = j.value("model_type", "") == "qwen2" || j.value("attention_bias", false);
    if (file_bias != c.qkv_bias)
        diffs += std::string("\n  q/k/v biases: ") + (file_bias ? "present" : "absent") + " in the file, " +
                 (c.qkv_bias ? "present" : "absent") + " in the model";
    // Experts: Mixtral's num_local_experts / num_experts_per_tok (absent: a dense MLP). The aux-loss weight
    // is a training setting: checked only when the file says that its loss uses it (output_router_logits).
    const int file_experts =
        j.contains("num_local_experts") && !j["num_local_experts"].is_null() ? j["num_local_experts"].get<int>() : 0;
    if (file_experts != c.moe.n_experts)
        diffs += "\n  num_local_experts: " + std::to_string(file_experts) + " in the file (0: dense MLP), " +
                 std::to_string(c.moe.n_experts) + " in the model (moe.n_experts)";
    if (file_experts > 0 && c.moe.n_experts > 0) {
        expect("num_experts_per_tok", c.moe.top_k);
        if (j.value("output_router_logits", false)) expect("router_aux_loss_coef", c.moe.aux_loss_weight);
    }
    check(diffs.empty(),
          [&] { return "hf_checkpoint: " + where + " does not match the model's configuration:" + diffs; });
}

namespace detail {
inline void write_text(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    check(bool(out), [&] { return "hf_checkpoint: writing " + p.string() + " failed (disk full?)"; });
}

// Replaces `dir` by `staged` so that at every moment one complete checkpoint exists on disk.
inline void swap_in(const fs::path& staged, const fs::path& dir) {
    const fs::path old = dir.string() + ".old";
    fs::remove_all(old);
    if (fs::exists(dir)) fs::rename(dir, old);
    fs::rename(staged, dir);
    fs::remove_all(old);
}
} // namespace detail

// True for a QLoRA decoder (lora_config::quantized_base): its projections are NF4, outside parameter_entries().
template <class Model>
constexpr bool has_quantized_base = requires {
    requires Model::quantized_base;
};

// Writes config.json, generation_config.json and model.safetensors into `stage` (created if missing).
// A QLoRA model writes its NF4 projections dequantised to f32 (what it computes with).
template <class Model>
void write_hf_files(const Model& model, const fs::path& stage, special_token_ids special = {}) {
    fs::create_directories(stage);
    detail::write_text(stage / "config.json", hf_config_json(model.config(), special).dump(2) + "\n");
    nlohmann::json gen{{"_from_model_config", true}};
    if (special.bos >= 0) gen["bos_token_id"] = special.bos;
    if (special.eos >= 0) gen["eos_token_id"] = special.eos;
    detail::write_text(stage / "generation_config.json", gen.dump(2) + "\n");
    safetensors_writer w;
    w.add_metadata("format", "pt"); // transformers asks for it
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind != param_kind::adapter) w.add<float>(e.name, e.value); // LoRA: io/peft.hpp
    if constexpr (has_quantized_base<Model>) {
        std::vector<float> staging;
        for (const auto& q : model.quantized_entries()) {
            staging.resize(std::size_t(q.shape.numel()));
            const tensor_view<float> v{staging.data(), q.shape};
            dequantize(model.quantized_weight(q.layer, q.target), v);
            w.add<float>(q.name, cview<float>(v));
        }
    }
    w.save(stage / "model.safetensors");
}

template <class Model>
void save_pretrained(const Model& model, const fs::path& dir, special_token_ids special = {}) {
    const fs::path stage = dir.string() + ".tmp";
    fs::remove_all(stage);
    write_hf_files(model, stage, special);
    detail::swap_in(stage, dir);
}

namespace detail {
inline nlohmann::json read_json_file(const fs::path& path, const std::string& who) {
    std::ifstream in(path, std::ios::binary);
    check(bool(in), [&] { return who + ": cannot open " + path.string(); });
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(who + ": " + path.string() + " is not valid JSON: " + e.what());
    }
}

// The file holding each tensor: model.safetensors, or the shard model.safetensors.index.json names.
inline std::map<std::string, std::string> hf_weight_files(const fs::path& dir, const std::vector<std::string>& names) {
    std::map<std::string, std::string> file_of;
    if (fs::exists(dir / "model.safetensors")) {
        for (const std::string& n : names)
            file_of[n] = "model.safetensors";
        return file_of;
    }
    const fs::path index = dir / "model.safetensors.index.json";
    check(fs::exists(index), [&] {
        return "hf_checkpoint: " + dir.string() + " has neither model.safetensors nor model.safetensors.index.json";
    });
    const nlohmann::json j = read_json_file(index, "hf_checkpoint");
    check(j.contains("weight_map") && j["weight_map"].is_object(),
          [&] { return "hf_checkpoint: " + index.string() + " has no weight_map object"; });
    const auto& map = j["weight_map"];
    std::string missing;
    for (const std::string& n : names) {
        if (!map.contains(n) || !map[n].is_string()) {
            missing += "\n  " + n;
            continue;
        }
        const std::string file = map[n].get<std::string>();
        check(fs::path(file).filename() == fs::path(file) && fs::exists(dir / file), [&] {
            return "hf_checkpoint: " + index.string() + " puts " + n + " in " + file + ", which is not in " +
                   dir.string();
        });
        file_of[n] = file;
    }
    check(missing.empty(), [&] { return "hf_checkpoint: " + index.string() + " does not list:" + missing; });
    return file_of;
}
} // namespace detail

// Reads a Hugging Face model folder into `model`: config.json checked against model.config() (one error listing
// every difference), then the tensors of model.safetensors or of the shards of model.safetensors.index.json,
// one file at a time (a shard's bytes are released before the next is read), in F32, F16, BF16 or F64,
// converted to f32. With tied embeddings there is no lm_head.weight to read (one in the file is ignored, as
// transformers does); tensors the model does not have (e.g. rotary inv_freq buffers) are ignored. A QLoRA
// model quantises each projection as it is read, so its f32 copy exists one matrix at a time.
template <class Model>
void load_pretrained(Model& model, const fs::path& dir) {
    const fs::path config_path = dir / "config.json";
    check(fs::exists(config_path), [&] { return "hf_checkpoint: " + dir.string() + " has no config.json"; });
    check_hf_config(detail::read_json_file(config_path, "hf_checkpoint"), model.config(), config_path.string());

    // Every tensor to read: an f32 entry, or (QLoRA) an NF4 projection, by name.
    std::vector<std::string> names;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind != param_kind::adapter) names.push_back(e.name);
    if constexpr (has_quantized_base<Model>)
        for (const auto& q : model.quantized_entries())
            names.push_back(q.name);
    const std::map<std::string, std::string> file_of = detail::hf_weight_files(dir, names);
    std::map<std::string, std::vector<std::string>> by_file;
    for (const std::string& n : names)
        by_file[file_of.at(n)].push_back(n);

    std::map<std::string, const parameter_entry*> entry_of;
    for (const parameter_entry& e : model.parameter_entries())
        entry_of[e.name] = &e;
    [[maybe_unused]] std::vector<float> staging;
    for (const auto& [file, tensors] : by_file) {
        const safetensors_reader r(dir / file);
        for (const std::string& n : tensors) {
            if (const auto it = entry_of.find(n); it != entry_of.end()) {
                r.read(n, it->second->value);
                continue;
            }
            if constexpr (has_quantized_base<Model>)
                for (const auto& q : model.quantized_entries())
                    if (q.name == n) {
                        staging.resize(std::size_t(q.shape.numel()));
                        const tensor_view<float> v{staging.data(), q.shape};
                        r.read(n, v);
                        model.set_quantized_weight(q.layer, q.target, v);
                    }
        }
    }
}

} // namespace tl
