// tinylm/io/peft_merge.hpp: a PEFT LoRA adapter of any rank folded into a loaded model's weights,
// W += scale * B A, for running or exporting a fine-tuned model (`tinylm generate --adapter`, GGUF export).
//
//   tl::with_pretrained(base, [&](auto& model) { tl::merge_adapter(model, adapter_dir); ... });
//
// load_adapter (io/peft.hpp) needs the adapter's rank and targets at compile time, to keep training it; merging
// needs neither, so any adapter peft writes for the model's linear layers works: per-module ranks
// (rank_pattern: the rank is read from each lora_A), rsLoRA (scale alpha / sqrt(r)), modules_to_save (the saved
// tensor replaces the model's, e.g. a resized embedding fine-tuned whole). What would compute something else is
// refused with the reason: DoRA, alpha_pattern, fan_in_fan_out, trained biases, trainable token deltas.
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/io/safetensors.hpp>

#include <cmath>
#include <map>
#include <string>

namespace tl {

struct merge_report {
    int lora_pairs = 0;       // weights that received B A
    int replaced_tensors = 0; // modules_to_save tensors copied in
    std::string summary() const {
        return std::to_string(lora_pairs) + " LoRA weight(s) merged, " + std::to_string(replaced_tensors) +
               " tensor(s) replaced";
    }
};

// Folds the adapter in `dir` into `model`'s base weights. The model must be a plain (adapter-less) one.
template <class Model>
merge_report merge_adapter(Model& model, const fs::path& dir) {
    const fs::path config_path = dir / "adapter_config.json", weights = dir / "adapter_model.safetensors";
    check(fs::exists(config_path), [&] { return "peft: " + dir.string() + " has no adapter_config.json"; });
    check(fs::exists(weights), [&] { return "peft: " + dir.string() + " has no adapter_model.safetensors"; });
    const nlohmann::json j = detail::read_json_file(config_path, "peft");
    const std::string where = "peft: " + config_path.string();
    check(j.is_object(), [&] { return where + ": not a JSON object"; });
    const std::string type = json_field_or<std::string>(j, "peft_type", "", where);
    check(type == "LORA", [&] { return where + ": peft_type \"" + type + "\"; only LORA adapters can be merged"; });
    auto refuse = [&](const char* key, const nlohmann::json& fine, const char* why) {
        check(!j.contains(key) || j[key].is_null() || j[key] == fine,
              [&] { return where + ": " + key + " " + j[key].dump() + ": " + why; });
    };
    refuse("use_dora", false, "DoRA is not supported");
    refuse("fan_in_fan_out", false, "tinylm stores weights (out, in)");
    refuse("bias", "none", "trained biases are not supported");
    refuse("alpha_pattern", nlohmann::json::object(), "per-module alphas are not supported");
    refuse("trainable_token_indices", nullptr, "trainable token deltas are not supported; save modules_to_save");
    const double alpha = json_field<double>(j, "lora_alpha", where);
    const bool rslora = json_field_or<bool>(j, "use_rslora", false, where);

    std::map<std::string, const parameter_entry*> base;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind != param_kind::adapter) base[e.name] = &e;
    const safetensors_reader r(weights);
    merge_report report;
    for (const auto& entry : r.tensors()) {
        const std::string& key = entry.first;
        check(key.starts_with(peft_prefix),
              [&] { return "peft: " + weights.string() + ": tensor " + key + " lacks the prefix " + peft_prefix; });
        const std::string name = key.substr(std::string_view(peft_prefix).size());
        if (name.ends_with(".lora_B.weight")) continue; // with its lora_A
        const std::string suffix = ".lora_A.weight";
        if (!name.ends_with(suffix)) { // modules_to_save: the tensor itself
            const auto it = base.find(name);
            check(it != base.end(), [&] {
                return "peft: " + weights.string() + " holds " + key + ", which matches no tensor of the model";
            });
            r.read(key, it->second->value);
            ++report.replaced_tensors;
            continue;
        }
        const std::string module = name.substr(0, name.size() - suffix.size());
        const auto it = base.find(module + ".weight");
        check(it != base.end(), [&] {
            return "peft: " + weights.string() + " adapts " + module + ", which is not a linear layer of the model";
        });
        const std::string b_key = std::string(peft_prefix) + module + ".lora_B.weight";
        check(r.contains(b_key), [&] { return "peft: " + weights.string() + " has " + key + " but no " + b_key; });
        const tensor_view<float> w = it->second->value;
        const index_t out = w.shape[0], in = w.shape[1];
        const auto& a_shape = r.info(key).shape;
        check(a_shape.size() == 2 && a_shape[1] == in && a_shape[0] > 0,
              [&] { return "peft: " + key + " should be (r, " + std::to_string(in) + ") for " + module; });
        const index_t rank = index_t(a_shape[0]);
        std::vector<float> a(std::size_t(rank * in)), b(std::size_t(out * rank));
        r.read(key, tensor_view<float>{a.data(), {rank, in}});
        r.read(b_key, tensor_view<float>{b.data(), {out, rank}});
        const double scale = rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
#pragma omp parallel for schedule(static)
        for (index_t o = 0; o < out; ++o)
            for (index_t k = 0; k < rank; ++k) {
                const float s = float(scale) * b[std::size_t(o * rank + k)];
                const float* a_row = a.data() + k * in;
                float* w_row = w.data + o * in;
                for (index_t i = 0; i < in; ++i)
                    w_row[i] += s * a_row[i];
            }
        ++report.lora_pairs;
    }
    check(report.lora_pairs + report.replaced_tensors > 0,
          [&] { return "peft: " + weights.string() + " holds no tensor to merge"; });
    return report;
}

} // namespace tl
