// tinylm/train/checkpoint.hpp: a training checkpoint = a Hugging Face model folder (io/hf_checkpoint.hpp; an
// encoder's: io/hf_encoder.hpp) plus what resuming needs:
//   optimizer.safetensors   the optimizer's state tensors (any Optimizer, optim/optimizer.hpp): for AdamW the
//                           moments of the parameters that have trained, "exp_avg.<name>" and "exp_avg_sq.<name>"
//   trainer_state.json      step, optimizer step count, data position, and the run's history
// A LoRA model also gets its adapter in the PEFT format (adapter_config.json, adapter_model.safetensors) and
// the LoRA dropout's key and forward count in trainer_state.json, so that a resume continues bit-identically;
// a QLoRA model also its NF4 base byte for byte, nf4_base.safetensors (train/checkpoint_nf4.hpp: model.safetensors
// holds it dequantised, and quantising that again does not give back the bytes).
// The folder is staged as "<dir>.tmp" and swapped in whole: a crash mid-save keeps the previous checkpoint.
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/hf_encoder.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/optim/optimizer.hpp>
#include <tinylm/train/checkpoint_checksums.hpp>
#include <tinylm/train/checkpoint_nf4.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>

namespace tl {

struct training_state {
    long long step = 0;                                // optimizer steps completed
    std::uint64_t data_position = 0;                   // BatchSource::position() after the last step
    nlohmann::json history = nlohmann::json::object(); // free-form: losses, best validation, ...
};

namespace detail {
// A decoder's Hugging Face files, a BERT encoder's (io/hf_encoder.hpp), or those of a model that writes its own
// (write_files / load_files: eval/encoder_classifier.hpp, an encoder and its head).
template <class Model>
void write_model_files(const Model& model, const fs::path& stage, special_token_ids special) {
    if constexpr (requires { model.write_files(stage); })
        model.write_files(stage);
    else if constexpr (requires { requires Model::bert_layout; })
        write_encoder_files(model, stage);
    else
        write_hf_files(model, stage, special);
}
template <class Model>
void load_model_files(Model& model, const fs::path& dir) {
    if constexpr (requires { model.load_files(dir); })
        model.load_files(dir);
    else if constexpr (requires { requires Model::bert_layout; })
        load_encoder(model, dir);
    else
        load_pretrained(model, dir);
}
// A resumed run must not start from NaN or infinite weights (a damaged file whose checksum was never written):
// names the first tensor with one.
inline void check_finite(cview<float> t, const std::string& name, const fs::path& file) {
    const float* p = t.data;
    const std::int64_t n = t.data ? t.numel() : 0;
    for (std::int64_t i = 0; i < n; ++i)
        if (!std::isfinite(p[i]))
            fail("checkpoint: " + file.string() + ": tensor " + name + " holds " +
                 (std::isnan(p[i]) ? std::string("NaN") : std::string("an infinite value")) + " at element " +
                 std::to_string(i) + "; the checkpoint is damaged, delete it or restore a copy");
}
template <class Model>
void check_finite_parameters(const Model& model, const fs::path& dir) {
    if constexpr (requires { model.parameter_entries(); })
        for (const auto& e : model.parameter_entries())
            check_finite(e.value, e.name, dir);
}
} // namespace detail

// `extra(stage_dir)` may add files (a tokenizer.json) before the swap.
template <class Model, Optimizer Opt>
void save_training_checkpoint(const Model& model, const Opt& opt, const training_state& state, const fs::path& dir,
                              special_token_ids special = {}, const std::function<void(const fs::path&)>& extra = {}) {
    const fs::path stage = dir.string() + ".tmp";
    fs::remove_all(stage);
    detail::write_model_files(model, stage, special);
    if constexpr (Model::has_adapter) write_adapter_files(model, stage);
    if constexpr (has_quantized_base<Model>) write_nf4_base(model, stage);
    safetensors_writer w;
    opt.visit_state([&](const std::string& name, cview<float> t) { w.add<float>(name, t); });
    w.save(stage / "optimizer.safetensors");
    nlohmann::json j{{"step", state.step},
                     {"optimizer_steps", opt.steps()},
                     {"data_position", state.data_position},
                     {"history", state.history}};
    if constexpr (Model::has_adapter) {
        j["lora_dropout_seed"] = model.dropout_seed();
        j["lora_dropout_calls"] = model.dropout_calls();
    }
    if (extra) extra(stage);
    j["checksums"] = tensor_file_checksums(stage); // last: of every tensor file the stage holds
    detail::write_text(stage / "trainer_state.json", j.dump(2) + "\n");
    detail::swap_in(stage, dir);
}

// The optimizer's state becomes exactly what the checkpoint holds (state for entries it lacks is dropped).
template <class Model, Optimizer Opt>
training_state load_training_checkpoint(Model& model, Opt& opt, const fs::path& dir) {
    const std::string file = "checkpoint: " + (dir / "trainer_state.json").string();
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(std::ifstream(dir / "trainer_state.json"));
    } catch (const nlohmann::json::exception& e) {
        fail(file + " is unreadable: " + e.what());
    }
    if (!verify_tensor_file_checksums(dir, j, file))
        std::fprintf(stderr, "checkpoint: %s has no checksums (written by an older tinylm); resuming unverified\n",
                     dir.c_str());
    detail::load_model_files(model, dir);
    if constexpr (has_quantized_base<Model>) load_nf4_base(model, dir); // the exact NF4 bytes, when stored
    if constexpr (Model::has_adapter) load_adapter(model, dir);
    detail::check_finite_parameters(model, dir);
    const safetensors_reader r(dir / "optimizer.safetensors");
    opt.reset_state([&](const std::string& name) { return r.contains(name); });
    opt.visit_state([&](const std::string& name, tensor_view<float> t) {
        r.read(name, t);
        detail::check_finite(t, name, dir / "optimizer.safetensors");
    });
    const auto steps = json_field<long long>(j, "optimizer_steps", file);
    const auto step = json_field<long long>(j, "step", file);
    check(steps >= 0 && step >= 0, [&] { return file + ": step and optimizer_steps must not be negative"; });
    // No run reaches 2^40 steps; a larger count is a damaged file, and would overflow the step arithmetic later.
    constexpr long long max_steps = 1LL << 40;
    check(steps <= max_steps && step <= max_steps, [&] {
        return file + ": step " + std::to_string(std::max(step, steps)) +
               " is not a step count a run reaches; the checkpoint is damaged, delete it or restore a copy";
    });
    opt.set_steps(steps);
    if constexpr (Model::has_adapter) {
        model.set_dropout_seed(json_field_or(j, "lora_dropout_seed", model.dropout_seed(), file));
        model.set_dropout_calls(json_field_or(j, "lora_dropout_calls", std::uint64_t(0), file));
    }
    const auto history = json_field_or(j, "history", nlohmann::json::object(), file);
    check(history.is_object(), [&] { return file + ": history must be an object"; });
    return {step, json_field<std::uint64_t>(j, "data_position", file), history};
}

} // namespace tl
