// tinylm/io/peft.hpp: LoRA adapters in the PEFT format, the folder peft's save_pretrained writes and
// peft.PeftModel.from_pretrained(base, <dir>) loads:
//
//   <dir>/adapter_config.json         peft_type "LORA", r, lora_alpha, lora_dropout, target_modules, ...
//   <dir>/adapter_model.safetensors   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight (r, in)
//                                     base_model.model.model.layers.N.self_attn.q_proj.lora_B.weight (out, r)
//
// save_adapter writes a sibling "<dir>.tmp" and swaps it in. load_adapter reads adapters written by tinylm
// and by peft (f32, bf16 or f64 tensors), checks r, lora_alpha and target_modules against the compile-time
// adapter (one error naming every difference) and refuses features tinylm does not compute (DoRA, rsLoRA,
// per-module rank or alpha patterns, layer subsets, fan_in_fan_out, trained biases). lora_dropout is a
// training setting: a different value is accepted.
//
// An adapter with trainable_embeddings (model/config.hpp) also saves the embedding and the untied head, in
// one of peft's two forms (checked against peft 0.21.2's save_pretrained):
//   all rows train (no row mask)  modules_to_save ["embed_tokens", "lm_head"]; the full matrices under the
//                                 base names base_model.model.model.embed_tokens.weight and
//                                 base_model.model.lm_head.weight (peft strips ".modules_to_save.default")
//   row masks (vocab_growth.hpp)  trainable_token_indices {"embed_tokens": [ids], "lm_head": [ids]} (a list
//                                 when tied); the trained rows, in id order, as
//                                 base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta
//                                 (n, d): peft's "delta" holds the rows' values, not a difference
// The adapter's base is then the model as it was before the adapter trained (the resized one for a grown
// vocabulary): save it with save_pretrained before training.
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <string>

namespace tl {

inline constexpr const char* peft_prefix = "base_model.model.";

// peft's target_modules names of a lora_target bitmask: q_proj, k_proj, ..., down_proj.
inline std::vector<std::string> peft_target_modules(std::uint32_t targets) {
    static const char* names[lora_target_count] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                   "gate_proj", "up_proj", "down_proj"};
    std::vector<std::string> out;
    for (int t = 0; t < lora_target_count; ++t)
        if ((targets >> t) & 1u) out.emplace_back(names[t]);
    return out;
}

// A BERT encoder's targets as one regular expression (peft full-matches a string against each module name):
// the list form cannot say "output.dense but not attention.output.dense", since peft matches list entries as
// name suffixes. "(.*\.)?" lets it match under a task head's "bert." too.
inline std::string bert_peft_target_pattern(std::uint32_t targets) {
    static const char* names[lora_target_count] = {"attention\\.self\\.query",
                                                   "attention\\.self\\.key",
                                                   "attention\\.self\\.value",
                                                   "attention\\.output\\.dense",
                                                   "",
                                                   "intermediate\\.dense",
                                                   "output\\.dense"};
    // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on a literal + a temporary string.
    std::string pattern = "(.*\\.)?encoder\\.layer\\.\\d+\\.(";
    bool first = true;
    for (int t = 0; t < lora_target_count; ++t)
        if ((targets >> t) & 1u) {
            if (!first) pattern += '|';
            pattern += names[t];
            first = false;
        }
    pattern += ')';
    return pattern;
}

// What a model's adapter_config.json says of its targets and task: decoders list module names (CAUSAL_LM),
// BERT encoders give a pattern (FEATURE_EXTRACTION).
template <class Model>
nlohmann::json peft_targets_of() {
    if constexpr (requires { requires Model::bert_layout; })
        return bert_peft_target_pattern(Model::lora.targets);
    else
        return peft_target_modules(Model::lora.targets);
}
template <class Model>
constexpr const char* peft_task_of() {
    if constexpr (requires { requires Model::bert_layout; })
        return "FEATURE_EXTRACTION";
    else
        return "CAUSAL_LM";
}

inline nlohmann::json peft_adapter_config(const lora_config& c, const std::string& base_model_name_or_path = "",
                                          const nlohmann::json& target_modules = nullptr,
                                          const char* task_type = "CAUSAL_LM") {
    return nlohmann::json{
        {"peft_type", "LORA"},
        {"task_type", task_type},
        {"base_model_name_or_path",
         base_model_name_or_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model_name_or_path)},
        {"r", c.rank},
        {"lora_alpha", c.alpha},
        {"lora_dropout", c.dropout},
        {"target_modules", target_modules.is_null() ? nlohmann::json(peft_target_modules(c.targets)) : target_modules},
        {"bias", "none"},
        {"fan_in_fan_out", false},
        {"use_rslora", false},
        {"use_dora", false},
        {"init_lora_weights", true},
        {"inference_mode", true},
        {"modules_to_save", nullptr},
        {"layers_to_transform", nullptr},
        {"layers_pattern", nullptr},
        {"rank_pattern", nlohmann::json::object()},
        {"alpha_pattern", nlohmann::json::object()},
        {"revision", nullptr},
    };
}

namespace detail {

// peft's module name of a vocabulary matrix (embed_tokens, lm_head) and the key of its trained rows.
inline std::string peft_module_of(const parameter_entry& e) {
    return e.group == param_group::embedding ? "embed_tokens" : "lm_head";
}
inline std::string peft_token_delta_key(const parameter_entry& e) {
    std::string key = peft_prefix + e.name;
    key.resize(key.size() - std::string(".weight").size());
    key += ".token_adapter.trainable_tokens_delta";
    return key;
}
inline bool is_vocabulary_matrix(const parameter_entry& e) {
    return (e.group == param_group::embedding || e.group == param_group::head) && e.value.shape.rank == 2 &&
           e.name.ends_with(".weight");
}

// The embedding and untied head of an adapter with trainable embeddings: modules_to_save (no row masks) or
// trainable_token_indices (masked rows).
template <class Model>
void add_vocabulary_modules(const Model& model, nlohmann::json& config, safetensors_writer& w) {
    nlohmann::json modules = nlohmann::json::array(), tokens = nlohmann::json::object();
    std::vector<float> rows;
    for (const parameter_entry& e : model.parameter_entries()) {
        if (!is_vocabulary_matrix(e)) continue;
        if (!e.row_mask) {
            modules.push_back(peft_module_of(e));
            w.add<float>(peft_prefix + e.name, e.value);
            // Tied: peft (ensure_weight_tying) wraps lm_head as well and expects its copy in the file.
            if (model.config().tied_embeddings) w.add<float>(std::string(peft_prefix) + "lm_head.weight", e.value);
            continue;
        }
        const index_t d = e.value.dim(1);
        std::vector<index_t> ids;
        for (std::size_t r = 0; r < e.row_mask->size(); ++r)
            if ((*e.row_mask)[r]) ids.push_back(index_t(r));
        check(!ids.empty(), [&] { return "peft: the row mask of " + e.name + " selects no row"; });
        rows.resize(ids.size() * std::size_t(d));
        for (std::size_t i = 0; i < ids.size(); ++i)
            std::copy_n(e.value.data + ids[i] * d, d, rows.data() + i * std::size_t(d));
        w.add<float>(peft_token_delta_key(e), cview<float>{rows.data(), {index_t(ids.size()), d}});
        tokens[peft_module_of(e)] = ids;
    }
    check(modules.empty() || tokens.empty(),
          "peft: the embedding and the head must both train all rows (modules_to_save) or both masked rows "
          "(trainable_token_indices)");
    if (!modules.empty()) config["modules_to_save"] = modules;
    // Tied: without ensure_weight_tying peft would copy embed_tokens alone and leave lm_head on the old matrix.
    if (!modules.empty() && model.config().tied_embeddings) config["ensure_weight_tying"] = true;
    if (!tokens.empty()) // tied: peft's list form (the head follows the embedding)
        config["trainable_token_indices"] = tokens.size() == 1 ? tokens["embed_tokens"] : tokens;
}

} // namespace detail

// Writes adapter_config.json and adapter_model.safetensors into `stage` (created if missing).
template <class Model>
void write_adapter_files(const Model& model, const fs::path& stage, const std::string& base_model_name_or_path = "") {
    static_assert(Model::has_adapter,
                  "save_adapter: the model has no LoRA adapter (decoder<Config, Backend, Adapter>)");
    check(!model.merged(), "peft: save_adapter needs the unmerged adapter; call unmerge() first");
    fs::create_directories(stage);
    nlohmann::json config =
        peft_adapter_config(Model::lora, base_model_name_or_path, peft_targets_of<Model>(), peft_task_of<Model>());
    safetensors_writer w;
    w.add_metadata("format", "pt");
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind == param_kind::adapter) w.add<float>(peft_prefix + e.name, e.value);
    if constexpr (Model::lora.trainable_embeddings) detail::add_vocabulary_modules(model, config, w);
    detail::write_text(stage / "adapter_config.json", config.dump(2) + "\n");
    w.save(stage / "adapter_model.safetensors");
}

template <class Model>
void save_adapter(const Model& model, const fs::path& dir, const std::string& base_model_name_or_path = "") {
    const fs::path stage = dir.string() + ".tmp";
    fs::remove_all(stage);
    write_adapter_files(model, stage, base_model_name_or_path);
    detail::swap_in(stage, dir);
}

// Throws naming every field of adapter_config.json that the compile-time adapter `c` cannot take.
inline void check_adapter_config(const nlohmann::json& j, const lora_config& c, const std::string& where,
                                 const nlohmann::json& target_modules = nullptr) {
    const bool vocab = c.trainable_embeddings;
    check(j.is_object(), [&] { return "peft: " + where + ": not a JSON object"; });
    const std::string file = "peft: " + where;
    std::string diffs;
    const std::string type = json_field_or<std::string>(j, "peft_type", "", file);
    if (type != "LORA") diffs += "\n  peft_type: \"" + type + "\" in the file, tinylm loads \"LORA\"";
    const int r = json_field_or<int>(j, "r", -1, file);
    if (r != c.rank)
        diffs += "\n  r: " + std::to_string(r) + " in the file, " + std::to_string(c.rank) + " in the model";
    const double alpha = json_field_or<double>(j, "lora_alpha", -1, file);
    if (std::abs(alpha - double(c.alpha)) > 1e-6 * std::abs(double(c.alpha)))
        diffs += "\n  lora_alpha: " + (j.contains("lora_alpha") ? j["lora_alpha"].dump() : std::string("missing")) +
                 " in the file, " + nlohmann::json(c.alpha).dump() + " in the model";
    std::set<std::string> want, got;
    for (const std::string& m : peft_target_modules(c.targets))
        want.insert(m);
    if (target_modules.is_string()) { // a BERT encoder's pattern: the file must hold the same pattern
        if (!j.contains("target_modules") || j["target_modules"] != target_modules)
            diffs += "\n  target_modules: " + (j.contains("target_modules") ? j["target_modules"].dump() : "missing") +
                     " in the file, " + target_modules.dump() + " in the model";
    } else if (j.contains("target_modules") && j["target_modules"].is_array()) {
        for (const std::string& m : json_as<std::vector<std::string>>(j["target_modules"], file, "target_modules"))
            got.insert(m);
    } else if (j.contains("target_modules") && j["target_modules"].is_string()) {
        diffs +=
            "\n  target_modules: a pattern (" + j["target_modules"].dump() + "); tinylm needs a list of module names";
    } else {
        diffs += "\n  target_modules: missing";
    }
    if (!got.empty() && got != want) {
        auto list = [](const std::set<std::string>& s) {
            std::string out;
            for (const auto& m : s)
                out += (out.empty() ? "" : ", ") + m;
            return "[" + out + "]";
        };
        diffs += "\n  target_modules: " + list(got) + " in the file, " + list(want) + " in the model";
    }
    auto must_be = [&](const char* key, const nlohmann::json& value, const char* why) {
        if (j.contains(key) && !j[key].is_null() && j[key] != value)
            diffs += std::string("\n  ") + key + ": " + j[key].dump() + " in the file; " + why;
    };
    must_be("use_dora", false, "DoRA is not supported");
    must_be("use_rslora", false, "rsLoRA (scale alpha / sqrt(r)) is not supported");
    must_be("fan_in_fan_out", false, "tinylm stores weights (out, in)");
    must_be("bias", "none", "trained biases are not supported");
    must_be("rank_pattern", nlohmann::json::object(), "per-module ranks are not supported");
    must_be("alpha_pattern", nlohmann::json::object(), "per-module alphas are not supported");
    must_be("layers_to_transform", nullptr, "the adapter must cover every layer");
    if (!vocab) {
        must_be("modules_to_save", nullptr,
                "fully trained extra modules need an adapter with trainable_embeddings (embed_tokens, lm_head)");
        must_be("trainable_token_indices", nullptr, "trainable tokens need an adapter with trainable_embeddings");
    } else if (j.contains("modules_to_save") && !j["modules_to_save"].is_null()) {
        const auto modules = json_as<std::vector<std::string>>(j["modules_to_save"], file, "modules_to_save");
        for (const std::string& m : modules) // peft may write "model.embed_tokens" beside "embed_tokens"
            if (!m.ends_with("embed_tokens") && !m.ends_with("lm_head"))
                diffs += "\n  modules_to_save: \"" + m + "\"; tinylm trains embed_tokens and lm_head only";
    }
    check(diffs.empty(), [&] { return "peft: " + where + " does not match the model's LoRA adapter:" + diffs; });
}

namespace detail {

// The embedding / head an adapter with trainable embeddings saved: full matrices (modules_to_save) or rows
// (trainable_token_indices, a list for the embedding or an object per module). Adds the names read to `seen`.
template <class Model>
void read_vocabulary_modules(Model& model, const nlohmann::json& config, const safetensors_reader& r,
                             std::set<std::string>& seen) {
    const nlohmann::json none;
    const nlohmann::json& tokens =
        config.contains("trainable_token_indices") ? config["trainable_token_indices"] : none;
    for (const parameter_entry& e : model.parameter_entries()) {
        if (!is_vocabulary_matrix(e)) continue;
        const std::string full = peft_prefix + e.name, delta = peft_token_delta_key(e);
        if (r.contains(full)) {
            r.read(full, e.value);
            seen.insert(full);
        }
        // Tied: peft's copy of lm_head is the embedding again.
        const std::string tied_head = std::string(peft_prefix) + "lm_head.weight";
        if (model.config().tied_embeddings && e.group == param_group::embedding && r.contains(tied_head))
            seen.insert(tied_head);
        nlohmann::json ids_json;
        if (tokens.is_array() && e.group == param_group::embedding) ids_json = tokens;
        if (tokens.is_object() && tokens.contains(peft_module_of(e))) ids_json = tokens[peft_module_of(e)];
        if (ids_json.is_null()) continue;
        const auto ids = json_as<std::vector<index_t>>(ids_json, "peft: trainable_token_indices", peft_module_of(e));
        const index_t d = e.value.dim(1), n = index_t(ids.size());
        check(r.contains(delta),
              [&] { return "peft: the adapter has trainable_token_indices but no tensor " + delta; });
        std::vector<float> rows(std::size_t(n * d));
        r.read(delta, tensor_view<float>{rows.data(), {n, d}});
        for (index_t i = 0; i < n; ++i) {
            check(ids[std::size_t(i)] >= 0 && ids[std::size_t(i)] < e.value.dim(0), [&] {
                return "peft: trainable token id " + std::to_string(ids[std::size_t(i)]) + " is outside " + e.name +
                       " (" + std::to_string(e.value.dim(0)) + " rows)";
            });
            std::copy_n(rows.data() + i * d, d, e.value.data + ids[std::size_t(i)] * d);
        }
        seen.insert(delta);
    }
}

} // namespace detail

// Reads an adapter folder into the model's LoRA tensors (the base is untouched; load it with
// load_pretrained). Every tensor of adapter_model.safetensors must be one of the model's.
template <class Model>
void load_adapter(Model& model, const fs::path& dir) {
    static_assert(Model::has_adapter,
                  "load_adapter: the model has no LoRA adapter (decoder<Config, Backend, Adapter>)");
    check(!model.merged(), "peft: load_adapter needs the unmerged model; call unmerge() first");
    const fs::path config_path = dir / "adapter_config.json", weights = dir / "adapter_model.safetensors";
    check(fs::exists(config_path), [&] { return "peft: " + dir.string() + " has no adapter_config.json"; });
    check(fs::exists(weights), [&] { return "peft: " + dir.string() + " has no adapter_model.safetensors"; });
    nlohmann::json config;
    try {
        config = nlohmann::json::parse(std::ifstream(config_path));
    } catch (const nlohmann::json::exception& e) {
        fail("peft: " + config_path.string() + " is not valid JSON: " + e.what());
    }
    check_adapter_config(config, Model::lora, config_path.string(), peft_targets_of<Model>());
    const safetensors_reader r(weights);
    std::set<std::string> expected;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind == param_kind::adapter) {
            const std::string name = peft_prefix + e.name;
            expected.insert(name);
            check(r.contains(name), [&] { return "peft: " + weights.string() + " has no tensor " + name; });
            r.read(name, e.value);
        }
    if constexpr (Model::lora.trainable_embeddings) detail::read_vocabulary_modules(model, config, r, expected);
    for (const auto& entry : r.tensors()) { // not a structured binding: clang 14 cannot capture one in a lambda
        const std::string& name = entry.first;
        check(expected.contains(name), [&] {
            return "peft: " + weights.string() + " holds " + name + ", which the model's adapter does not have";
        });
    }
}

} // namespace tl
