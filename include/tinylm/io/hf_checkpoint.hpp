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
// Loading checks config.json against the compile-time configuration and names every field that differs
// (check_hf_config; config.json both ways, and read into a model_config: io/hf_config.hpp).
// Saving writes a sibling "<dir>.tmp" and swaps it in, so an interrupted save leaves the old checkpoint.
// A LoRA model's files hold its base only (merge() first to save the fine-tuned model as a plain
// checkpoint); the adapter goes to the PEFT format (io/peft.hpp).
#pragma once

#include <tinylm/io/hf_config.hpp>
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

namespace detail {
inline void write_text(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    check(bool(out), [&] { return "hf_checkpoint: writing " + p.string() + " failed (disk full?)"; });
}

// Test hook: when set, called with the name of each step of swap_in just before it runs. A test throws from it
// to leave the folders as a kill at that point would (tests/trainer/test_trainer.cpp,
// kill_at_every_step_of_the_checkpoint_swap).
inline void (*swap_in_hook)(const char* step) = nullptr;
inline void swap_step(const char* step) {
    if (swap_in_hook) swap_in_hook(step);
}

// Replaces `dir` by `staged` so that at every moment one complete checkpoint exists on disk: `dir`, or `dir.old`
// while `dir` is missing (a kill between the two renames). Readers look in that order (newest_complete_folder).
inline void swap_in(const fs::path& staged, const fs::path& dir) {
    const fs::path old = dir.string() + ".old";
    swap_step("recover");
    if (!fs::exists(dir) && fs::exists(old)) fs::rename(old, dir); // .old is the only complete copy: keep it
    swap_step("remove old");
    fs::remove_all(old);
    swap_step("move current to old");
    if (fs::exists(dir)) fs::rename(dir, old);
    swap_step("move staged to current");
    fs::rename(staged, dir);
    swap_step("remove old again");
    fs::remove_all(old);
}
} // namespace detail

// The folder swap_in left complete: `dir` when it holds `marker`, else `dir.old` when that does (a save was killed
// between its renames), else none (empty path).
inline fs::path newest_complete_folder(const fs::path& dir, const std::string& marker) {
    if (fs::exists(dir / marker)) return dir;
    const fs::path old = dir.string() + ".old";
    if (!fs::exists(dir) && fs::exists(old / marker)) return old;
    return {};
}
// True for a QLoRA decoder (lora_config::quantized_base): its projections are NF4, outside parameter_entries().
template <class Model>
constexpr bool has_quantized_base = requires {
    requires Model::quantized_base;
};

namespace detail {
// Every tensor of a model's base, by name: its f32 entries, then (QLoRA) its NF4 projections. The adapter's are
// not among them (io/peft.hpp).
template <class Model>
std::vector<std::string> base_tensor_names(const Model& model) {
    std::vector<std::string> names;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind != param_kind::adapter) names.push_back(e.name);
    if constexpr (has_quantized_base<Model>)
        for (const auto& q : model.quantized_entries())
            names.push_back(q.name);
    return names;
}

// Adds the base to `w` in f32; NF4 projections dequantised (what the model computes with).
template <class Model>
void add_base_tensors(safetensors_writer& w, const Model& model) {
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind != param_kind::adapter) w.add<float>(e.name, e.value);
    if constexpr (has_quantized_base<Model>) {
        std::vector<float> staging;
        for (const auto& q : model.quantized_entries()) {
            staging.resize(std::size_t(q.shape.numel()));
            const tensor_view<float> v{staging.data(), q.shape};
            dequantize(model.quantized_weight(q.layer, q.target), v);
            w.add<float>(q.name, cview<float>(v));
        }
    }
}

// Reads the base tensor `name` of the model from tensor `stored` of `r`: an entry in place, or (QLoRA) an NF4
// projection quantised as it is read, so that its f32 copy exists one matrix at a time.
template <class Model>
class base_tensor_reader {
public:
    explicit base_tensor_reader(Model& model) : model_(model) {
        for (const parameter_entry& e : model.parameter_entries())
            entry_of_[e.name] = &e;
    }
    void read(const safetensors_reader& r, const std::string& name, const std::string& stored) {
        if (const auto it = entry_of_.find(name); it != entry_of_.end()) {
            r.read(stored, it->second->value);
            return;
        }
        if constexpr (has_quantized_base<Model>)
            for (const auto& q : model_.quantized_entries())
                if (q.name == name) {
                    staging_.resize(std::size_t(q.shape.numel()));
                    const tensor_view<float> v{staging_.data(), q.shape};
                    r.read(stored, v);
                    model_.set_quantized_weight(q.layer, q.target, v);
                }
    }

private:
    Model& model_;
    std::map<std::string, const parameter_entry*> entry_of_;
    std::vector<float> staging_;
};
} // namespace detail

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
    detail::add_base_tensors(w, model);
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

    const std::vector<std::string> names = detail::base_tensor_names(model);
    const std::map<std::string, std::string> file_of = detail::hf_weight_files(dir, names);
    std::map<std::string, std::vector<std::string>> by_file;
    for (const std::string& n : names)
        by_file[file_of.at(n)].push_back(n);
    detail::base_tensor_reader<Model> reader(model);
    for (const auto& [file, tensors] : by_file) {
        const safetensors_reader r(dir / file);
        for (const std::string& n : tensors)
            reader.read(r, n, n);
    }
}

} // namespace tl
