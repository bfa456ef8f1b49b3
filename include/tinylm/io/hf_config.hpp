// tinylm/io/hf_config.hpp: a Hugging Face config.json and a tinylm model_config, both ways.
//
//   hf_architecture(c)         the transformers class that computes what c computes (Llama, Qwen2, Mistral,
//                              Ministral, Mixtral)
//   hf_config_json(c)          the config.json save_pretrained writes for c
//   check_hf_config(j, c, f)   throws naming every field of config.json that disagrees with c
//   hf_visible(c)              c as config.json carries it (read_hf_config(hf_config_json(c)))
//   read_hf_config(j, f)       the model_config of a config.json: LlamaForCausalLM (Llama 3 rope_scaling),
//                              MistralForCausalLM, MinistralForCausalLM (layer_types), Qwen2ForCausalLM (q/k/v
//                              biases, no sliding window), MixtralForCausalLM (experts)
//
// read_hf_config(hf_config_json(c)) == c for every field config.json carries; the others keep their defaults:
// mlp (SwiGLU), norm (RMSNorm), moe.balance_per_layer (false). It gives the canonical form of what it reads:
// d_head 0 when the head width is hidden_size / num_attention_heads, sliding_window 0 when no layer slides,
// full_attention_every 0 when every layer slides, else the k of "every k-th layer full".
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/json_field.hpp>
#include <tinylm/model/config.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

namespace tl {

namespace detail {
inline bool close(double a, double b) { return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b)); }

inline nlohmann::json rope_scaling_json(const rope_scaling_config& r) {
    return {{"rope_type", "llama3"},
            {"factor", r.factor},
            {"low_freq_factor", r.low_freq_factor},
            {"high_freq_factor", r.high_freq_factor},
            {"original_max_position_embeddings", r.original_max_position}};
}

// The RoPE variant of a config.json: transformers 4's "rope_scaling" (null: plain), or transformers 5's
// "rope_parameters" (rope_type "default": plain). type "" means plain RoPE; "llama3" fills `scaling`.
struct hf_rope {
    std::string key, type, json, problem; // problem: what is missing from a llama3 object
    rope_scaling_config scaling{};
};
inline hf_rope hf_rope_of(const nlohmann::json& j, const std::string& where) {
    hf_rope r;
    const nlohmann::json* o = nullptr;
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
        r.key = "rope_scaling", o = &j["rope_scaling"];
    else if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
        r.key = "rope_parameters", o = &j["rope_parameters"];
    if (!o) return r;
    r.json = o->dump();
    const auto text = [&](const char* k) {
        return o->is_object() && o->contains(k) && (*o)[k].is_string() ? (*o)[k].get<std::string>() : std::string();
    };
    r.type = !text("rope_type").empty() ? text("rope_type") : text("type");
    if (r.type.empty()) r.type = r.key == "rope_scaling" ? "(none given)" : "default";
    if (r.type == "default") {
        r.type.clear();
        return r;
    }
    if (r.type != "llama3") return r;
    for (const char* k : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
        if (!o->contains(k) || !(*o)[k].is_number()) r.problem += std::string(r.problem.empty() ? "" : ", ") + k;
    if (!r.problem.empty()) {
        r.problem = r.key + " (llama3) lacks " + r.problem;
        return r;
    }
    r.scaling = {.factor = (*o)["factor"].get<double>(),
                 .low_freq_factor = (*o)["low_freq_factor"].get<double>(),
                 .high_freq_factor = (*o)["high_freq_factor"].get<double>(),
                 .original_max_position = json_as<int>((*o)["original_max_position_embeddings"], where,
                                                       r.key + ".original_max_position_embeddings")};
    return r;
}
} // namespace detail

inline std::string hf_architecture(const model_config& c) {
    check(c.norm == norm_kind::rmsnorm && c.mlp == mlp_kind::swiglu && c.norm_position == norm_placement::pre &&
              c.attention == attention_kind::causal,
          "hf_checkpoint: only causal pre-norm RMSNorm + SwiGLU decoders map onto Llama, Qwen2, Qwen3, Mistral or "
          "Mixtral");
    const bool per_layer_window = c.sliding_window > 0 && c.full_attention_every > 0;
    if (c.qk_norm) {
        check(!c.qkv_bias && c.moe.n_experts == 0 && c.sliding_window == 0,
              "hf_checkpoint: QK-norm (qk_norm) with q/k/v biases, experts or a sliding window has no Hugging Face "
              "architecture here (Qwen3ForCausalLM has none of them)");
        return "Qwen3ForCausalLM";
    }
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
                       : arch == "Qwen3ForCausalLM"     ? "qwen3"
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
    if (arch == "Qwen2ForCausalLM" || arch == "Qwen3ForCausalLM")
        j["use_sliding_window"] = false, j["sliding_window"] = nullptr;
    if (arch == "Qwen3ForCausalLM") j["attention_bias"] = false;
    if (arch == "MixtralForCausalLM") {
        j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
        j["num_local_experts"] = c.moe.n_experts;
        j["num_experts_per_tok"] = c.moe.top_k;
        j["router_jitter_noise"] = 0.0;
        // HF adds router_aux_loss_coef * aux_loss to the loss only with output_router_logits.
        j["output_router_logits"] = c.moe.aux_loss_weight > 0;
        j["router_aux_loss_coef"] = c.moe.aux_loss_weight;
    }
    if (c.rope_scaling.factor > 0) j["rope_scaling"] = detail::rope_scaling_json(c.rope_scaling);
    if (special.bos >= 0) j["bos_token_id"] = special.bos;
    if (special.eos >= 0) j["eos_token_id"] = special.eos;
    if (special.pad >= 0) j["pad_token_id"] = special.pad;
    return j;
}

// Throws naming each field of config.json that disagrees with the compile-time configuration.
inline void check_hf_config(const nlohmann::json& j, const model_config& c, const std::string& where) {
    check(j.is_object(), [&] { return "hf_checkpoint: " + where + ": not a JSON object"; });
    const std::string file = "hf_checkpoint: " + where;
    std::string diffs;
    auto expect = [&](const char* key, auto want) {
        using W = decltype(want);
        if (!j.contains(key) || j[key].is_null()) {
            diffs += std::string("\n  ") + key + ": missing, the model needs " + nlohmann::json(want).dump();
            return;
        }
        const W got = json_as<W>(j[key], file, key);
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
    // The block tinylm computes: SwiGLU with SiLU, no MLP biases; plain RoPE or Llama 3's scaling.
    if (j.contains("hidden_act") && j["hidden_act"] != "silu")
        diffs += "\n  hidden_act: " + j["hidden_act"].dump() + " in the file, \"silu\" in the model";
    if (j.contains("mlp_bias") && j["mlp_bias"] == true)
        diffs += "\n  mlp_bias: true in the file, the model has no MLP biases";
    const detail::hf_rope file_rope = detail::hf_rope_of(j, file);
    if (file_rope.type == "llama3") {
        const rope_scaling_config& f = file_rope.scaling;
        if (c.rope_scaling.factor == 0)
            diffs += "\n  " + file_rope.key + ": " + file_rope.json + " in the file, the model has plain RoPE";
        else if (!detail::close(f.factor, c.rope_scaling.factor) ||
                 !detail::close(f.low_freq_factor, c.rope_scaling.low_freq_factor) ||
                 !detail::close(f.high_freq_factor, c.rope_scaling.high_freq_factor) ||
                 f.original_max_position != c.rope_scaling.original_max_position)
            diffs += "\n  " + file_rope.key + ": " + file_rope.json + " in the file, " +
                     detail::rope_scaling_json(c.rope_scaling).dump() + " in the model";
    } else if (!file_rope.type.empty()) {
        diffs += "\n  " + file_rope.key + ".rope_type: \"" + file_rope.type + "\" in the file, the model has " +
                 (c.rope_scaling.factor > 0 ? "Llama 3's scaling (\"llama3\")" : "plain RoPE (\"default\")");
    } else if (c.rope_scaling.factor > 0) {
        diffs += "\n  rope_scaling: plain RoPE in the file, " + detail::rope_scaling_json(c.rope_scaling).dump() +
                 " in the model";
    }
    // transformers 5 writes rope_theta inside rope_parameters; earlier versions at the top level.
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
        j["rope_parameters"].contains("rope_theta")) {
        const double theta = json_as<double>(j["rope_parameters"]["rope_theta"], file, "rope_parameters.rope_theta");
        if (std::abs(theta - c.rope_theta) > 1e-9 * c.rope_theta)
            diffs += "\n  rope_parameters.rope_theta: " + std::to_string(theta) + " in the file, " +
                     std::to_string(c.rope_theta) + " in the model";
    } else {
        expect("rope_theta", c.rope_theta);
    }
    expect("tie_word_embeddings", c.tied_embeddings);
    const bool file_window = j.contains("sliding_window") && !j["sliding_window"].is_null() &&
                             json_field_or(j, "use_sliding_window", true, file);
    const int window = file_window ? json_field<int>(j, "sliding_window", file) : 0;
    if (window != c.sliding_window)
        diffs += "\n  sliding_window: " + std::to_string(window) + " in the file, " + std::to_string(c.sliding_window) +
                 " in the model";
    const std::string model_type = json_field_or<std::string>(j, "model_type", "", file);
    // Which layers slide: layer_types when present (Ministral, Qwen2), else Qwen2's max_window_layers (the
    // layers from there on slide), else all of them (Mistral, Mixtral).
    if (window > 0 && window == c.sliding_window) {
        const bool listed = j.contains("layer_types") && j["layer_types"].is_array();
        check(!listed || j["layer_types"].size() == std::size_t(c.n_layers),
              [&] { return "hf_checkpoint: " + where + ": layer_types must have num_hidden_layers entries"; });
        const int first_sliding =
            model_type == "qwen2" && !listed ? json_field_or(j, "max_window_layers", 28, file) : 0;
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
    const bool file_bias = model_type == "qwen2" || json_field_or(j, "attention_bias", false, file);
    if (file_bias != c.qkv_bias)
        diffs += std::string("\n  q/k/v biases: ") + (file_bias ? "present" : "absent") + " in the file, " +
                 (c.qkv_bias ? "present" : "absent") + " in the model";
    const bool file_qk_norm = model_type == "qwen3";
    if (file_qk_norm != c.qk_norm)
        diffs += std::string("\n  QK-norm (Qwen3's q_norm and k_norm): ") + (file_qk_norm ? "present" : "absent") +
                 " in the file, " + (c.qk_norm ? "present" : "absent") + " in the model (qk_norm)";
    // Experts: Mixtral's num_local_experts / num_experts_per_tok (absent: a dense MLP). The aux-loss weight
    // is a training setting: checked only when the file says that its loss uses it (output_router_logits).
    const int file_experts = json_field_or(j, "num_local_experts", 0, file);
    if (file_experts != c.moe.n_experts)
        diffs += "\n  num_local_experts: " + std::to_string(file_experts) + " in the file (0: dense MLP), " +
                 std::to_string(c.moe.n_experts) + " in the model (moe.n_experts)";
    if (file_experts > 0 && c.moe.n_experts > 0) {
        expect("num_experts_per_tok", c.moe.top_k);
        if (json_field_or(j, "output_router_logits", false, file))
            expect("router_aux_loss_coef", c.moe.aux_loss_weight);
    }
    check(diffs.empty(),
          [&] { return "hf_checkpoint: " + where + " does not match the model's configuration:" + diffs; });
}

// The architectures read_hf_config reads.
inline const std::vector<std::string>& hf_supported_architectures() {
    static const std::vector<std::string> a = {"LlamaForCausalLM", "MistralForCausalLM", "MinistralForCausalLM",
                                               "Qwen2ForCausalLM", "Qwen3ForCausalLM",   "MixtralForCausalLM"};
    return a;
}

// The model_config of a Hugging Face config.json (`where` names the file in errors). Throws tl::error for an
// architecture outside hf_supported_architectures(), a missing size, an activation other than SiLU, biases
// other than Qwen2's q/k/v ones, a RoPE scaling other than Llama 3's, Qwen2's sliding window, and per-layer
// windows other than "every k-th layer full".
inline model_config read_hf_config(const nlohmann::json& j, const std::string& where) {
    const auto error = [&](const std::string& what) { fail("hf_config: " + where + ": " + what); };
    if (!j.is_object()) error("not a JSON object");
    std::string arch;
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
        j["architectures"][0].is_string())
        arch = j["architectures"][0].get<std::string>();
    else if (j.contains("model_type") && j["model_type"].is_string()) {
        const std::string t = j["model_type"].get<std::string>();
        arch = t == "llama"       ? "LlamaForCausalLM"
               : t == "mistral"   ? "MistralForCausalLM"
               : t == "ministral" ? "MinistralForCausalLM"
               : t == "qwen2"     ? "Qwen2ForCausalLM"
               : t == "qwen3"     ? "Qwen3ForCausalLM"
               : t == "mixtral"   ? "MixtralForCausalLM"
                                  : "";
        if (arch.empty()) arch = "model_type \"" + t + "\"";
    }
    const auto& supported = hf_supported_architectures();
    if (std::find(supported.begin(), supported.end(), arch) == supported.end()) {
        std::string list;
        for (const std::string& a : supported)
            list += (list.empty() ? "" : ", ") + a;
        error((arch.empty()                     ? std::string("no architectures (nor model_type)")
               : arch.starts_with("model_type") ? arch
                                                : "architecture " + arch) +
              " is not supported; supported: " + list);
    }
    const auto given = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
    const auto integer = [&](const char* key) {
        if (!given(key)) error(std::string("missing field \"") + key + "\" (" + arch + ")");
        return json_as<int>(j[key], "hf_config: " + where, key);
    };
    const auto number = [&](const char* key, double fallback, bool required) {
        if (!given(key)) {
            if (required) error(std::string("missing field \"") + key + "\" (" + arch + ")");
            return fallback;
        }
        return json_as<double>(j[key], "hf_config: " + where, key);
    };
    const auto flag = [&](const char* key, bool fallback) {
        if (!given(key)) return fallback;
        return json_as<bool>(j[key], "hf_config: " + where, key);
    };

    model_config c;
    c.vocab_size = integer("vocab_size");
    c.d_model = integer("hidden_size");
    c.d_ff = integer("intermediate_size");
    c.n_layers = integer("num_hidden_layers");
    c.n_heads = integer("num_attention_heads");
    c.n_kv_heads = given("num_key_value_heads") ? integer("num_key_value_heads") : c.n_heads; // absent: MHA
    c.max_seq_len = integer("max_position_embeddings");
    c.norm_eps = number("rms_norm_eps", 0, true);
    c.init_std = number("initializer_range", c.init_std, false);
    c.tied_embeddings = flag("tie_word_embeddings", false);
    if (c.vocab_size <= 0 || c.d_model <= 0 || c.d_ff <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
        c.max_seq_len <= 0)
        error("vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, "
              "num_key_value_heads and max_position_embeddings must be positive");
    if (c.n_heads % c.n_kv_heads != 0)
        error("num_attention_heads (" + std::to_string(c.n_heads) + ") must be a multiple of num_key_value_heads (" +
              std::to_string(c.n_kv_heads) + ")");
    if (given("head_dim")) {
        const int head_dim = integer("head_dim");
        if (head_dim <= 0) error("head_dim must be positive");
        if (c.d_model % c.n_heads != 0 || head_dim != c.d_model / c.n_heads) c.d_head = head_dim;
    } else if (c.d_model % c.n_heads != 0) {
        error("hidden_size (" + std::to_string(c.d_model) + ") is not a multiple of num_attention_heads (" +
              std::to_string(c.n_heads) + ") and there is no head_dim");
    }
    if (c.head_dim() % 2 != 0) error("the head width " + std::to_string(c.head_dim()) + " must be even for RoPE");

    // RoPE: theta at the top level (transformers 4) or in rope_parameters (5); Llama 3's scaling.
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
        j["rope_parameters"].contains("rope_theta")) {
        c.rope_theta =
            json_as<double>(j["rope_parameters"]["rope_theta"], "hf_config: " + where, "rope_parameters.rope_theta");
    } else {
        c.rope_theta = number("rope_theta", 10000.0, false);
    }
    if (!(c.rope_theta > 0)) error("rope_theta must be positive");
    const detail::hf_rope rope = detail::hf_rope_of(j, "hf_config: " + where);
    if (rope.type == "llama3") {
        if (!rope.problem.empty()) error(rope.problem);
        c.rope_scaling = rope.scaling;
        if (!(c.rope_scaling.factor > 0) || !(c.rope_scaling.low_freq_factor > 0) ||
            !(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor) ||
            c.rope_scaling.original_max_position <= 0)
            error(rope.key + ": " + rope.json +
                  ": llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                  "original_max_position_embeddings > 0");
    } else if (!rope.type.empty()) {
        error(rope.key + ": rope type \"" + rope.type + "\" is not supported (" + rope.json +
              "); tinylm computes plain RoPE (\"default\") and Llama 3's scaling (\"llama3\")");
    }

    // The block: SwiGLU with SiLU, no MLP biases; q/k/v biases in Qwen2 only.
    if (given("hidden_act") && j["hidden_act"] != "silu")
        error("hidden_act " + j["hidden_act"].dump() +
              " is not supported; tinylm's MLP is SwiGLU with SiLU (\"silu\")");
    if (flag("mlp_bias", false)) error("mlp_bias true is not supported (tinylm's MLP has no biases)");
    c.qkv_bias = arch == "Qwen2ForCausalLM";
    c.qk_norm = arch == "Qwen3ForCausalLM";
    if (!c.qkv_bias && flag("attention_bias", false))
        error("attention_bias true is not supported for " + arch +
              " (q/k/v/o biases; tinylm has q/k/v biases only, as Qwen2)");

    // Attention windows.
    const int window = given("sliding_window") ? integer("sliding_window") : 0;
    if (window < 0) error("sliding_window must be positive or null");
    if (arch == "Qwen2ForCausalLM" || arch == "Qwen3ForCausalLM") {
        if (flag("use_sliding_window", false))
            error("use_sliding_window true is not supported for " + arch +
                  " (its window applies from max_window_layers on; tinylm writes no such per-layer window)");
    } else if (arch != "LlamaForCausalLM" && window > 0) {
        std::vector<bool> slides(std::size_t(c.n_layers), true); // Mistral, Mixtral: every layer
        if (arch == "MinistralForCausalLM" && given("layer_types")) {
            const auto& types = j["layer_types"];
            if (!types.is_array() || types.size() != std::size_t(c.n_layers))
                error("layer_types must be a list of num_hidden_layers (" + std::to_string(c.n_layers) + ") entries");
            for (std::size_t l = 0; l < types.size(); ++l) {
                if (types[l] != "sliding_attention" && types[l] != "full_attention")
                    error("layer_types[" + std::to_string(l) + "] is " + types[l].dump() +
                          "; expected \"sliding_attention\" or \"full_attention\"");
                slides[l] = types[l] == "sliding_attention";
            }
        }
        const auto sliding = std::count(slides.begin(), slides.end(), true);
        if (sliding > 0) {
            c.sliding_window = window;
            if (sliding < c.n_layers) { // the smallest k with "layers l, (l + 1) % k == 0, attend fully"
                for (int k = 2; k <= c.n_layers && c.full_attention_every == 0; ++k) {
                    bool fits = true;
                    for (int l = 0; l < c.n_layers; ++l)
                        fits = fits && slides[std::size_t(l)] == ((l + 1) % k != 0);
                    if (fits) c.full_attention_every = k;
                }
                if (c.full_attention_every == 0) {
                    std::string windowed, full;
                    for (int l = 0; l < c.n_layers; ++l)
                        (slides[std::size_t(l)] ? windowed : full) +=
                            ((slides[std::size_t(l)] ? windowed : full).empty() ? "" : ", ") + std::to_string(l);
                    error("layer_types: layers " + windowed + " slide and layers " + full +
                          " attend fully; tinylm expresses a window in every layer or full attention in every k-th "
                          "layer only (model_config::full_attention_every: layers k-1, 2k-1, ...)");
                }
            }
        }
    }

    // Experts (Mixtral). The aux-loss weight counts only when the file's loss uses it (output_router_logits).
    if (arch == "MixtralForCausalLM") {
        c.moe.n_experts = integer("num_local_experts");
        c.moe.top_k = integer("num_experts_per_tok");
        if (c.moe.n_experts < 1 || c.moe.top_k < 1 || c.moe.top_k > c.moe.n_experts)
            error("num_experts_per_tok (" + std::to_string(c.moe.top_k) + ") must be in [1, num_local_experts (" +
                  std::to_string(c.moe.n_experts) + ")]");
        c.moe.aux_loss_weight = flag("output_router_logits", false) ? number("router_aux_loss_coef", 0.001, false) : 0;
        if (c.moe.aux_loss_weight < 0) error("router_aux_loss_coef must be >= 0");
    }
    return c;
}

// c as a config.json carries it: read_hf_config(hf_config_json(c)), the fields it leaves out at their defaults.
// tl::presets::find(read_hf_config(j, f), tl::hf_visible) names the preset a config.json describes.
inline model_config hf_visible(const model_config& c) { return read_hf_config(hf_config_json(c), "hf_visible"); }

} // namespace tl
