// gpu::decoder_step against Hugging Face transformers on the parity fixtures (tests/reference/fixtures, written by
// tests/reference/make_fixtures.py in float64): the loss, every parameter gradient, and the parameters after one
// AdamW step, as tests/model/test_hf_parity.cpp checks tl::decoder. The step's executor decides where it runs: the
// CPU executor in the default test run (tests/cuda/test_device_parity.cpp), the GPU in the `cuda` label
// (tests/cuda/test_device_parity_gpu.cpp), so "the whole model against transformers on the GPU" is one command.
#pragma once

#include "../model/fixture_configs.hpp"
#include "parity_fixture.hpp"

#include <tinylm/core/error.hpp>
#include <tinylm/cuda/decoder_plan.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/optim/adamw.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace tl_test {

// One fixture: its weights and its batch (parity_fixture.hpp). A LoRA fixture (llama_gqa_lora: peft's adapter on a
// base) holds the adapter as "lora." + peft's names, its gradients and AdamW step on the adapter only.
struct parity_fixture {
    tl::safetensors_reader file;
    fixture_batch data;
    long long batch = 0, time = 0;

    explicit parity_fixture(const std::string& name)
        : file(fixture_path(name)), data(read_fixture_batch(file)), batch(data.shape[0]), time(data.shape[1]) {}
    // What plan_decoder_step needs besides the model: this batch, the head in chunks of 16 rows (several chunks),
    // and a LoRA fixture's adapter (peft's r, lora_alpha, target_modules).
    tl::gpu::decoder_plan_options options(bool bf16) const {
        tl::gpu::decoder_plan_options o;
        o.batch = batch, o.time = time, o.logits_rows = 16, o.bf16_weights = bf16;
        if (lora()) {
            const auto l = nlohmann::json::parse(file.metadata().at("lora"));
            o.lora.rank = l.at("r"), o.lora.alpha = l.at("lora_alpha"), o.lora.dropout = l.at("lora_dropout");
            const std::pair<const char*, tl::lora_target> modules[] = {
                {"q_proj", tl::lora_q},      {"k_proj", tl::lora_k},       {"v_proj", tl::lora_v},
                {"o_proj", tl::lora_o},      {"gate_proj", tl::lora_gate}, {"up_proj", tl::lora_up},
                {"down_proj", tl::lora_down}};
            for (const std::string target : l.at("target_modules"))
                for (const auto& [module, bit] : modules)
                    if (target == module) o.lora.targets |= std::uint32_t(bit);
        }
        return o;
    }
    bool lora() const { return file.metadata().contains("lora"); }
    // The fixture's name of a trainable tensor: the decoder's, or peft's for an adapter's.
    std::string trainable(const std::string& name) const { return lora() ? "base_model.model." + name : name; }
    tl::adamw_options adamw() const {
        const auto hp = nlohmann::json::parse(file.metadata().at("adamw"));
        tl::adamw_options o;
        o.lr = hp.at("lr"), o.beta1 = hp.at("beta1"), o.beta2 = hp.at("beta2"), o.eps = hp.at("eps");
        o.weight_decay = hp.at("weight_decay");
        return o;
    }
};

struct device_parity_errors {
    std::size_t fixture_parameters = 0, parameters_loaded = 0;
    double loss = 0, expected_loss = 0;
    double gradient = 0; // the worst tensor's largest difference, relative to its largest element
    std::string gradient_name;
    double adamw_lr = 0; // the worst difference after one AdamW step, in units of the learning rate
    std::string adamw_name;
};

// The fixture's weights into `step` by name (write(destination in Ex's memory, host source, count)), its batch
// forward and backward, then one AdamW step with the fixture's hyperparameters; read(host destination, source in
// Ex's memory, count) brings gradients and parameters back.
template <class Step, class Write, class Read>
device_parity_errors device_parity(Step& step, const parity_fixture& f, Write write, Read read) {
    device_parity_errors e;
    for (const auto& [name, tensor] : f.file.tensors())
        e.fixture_parameters += name.starts_with("param.") || name.starts_with("lora.");
    const auto load = [&](const std::vector<tl::gpu::parameter_slice>& layout, const std::string& prefix) {
        for (const tl::gpu::parameter_slice& s : layout) {
            const auto w = f.file.read_all<float>(prefix + s.name);
            tl::check(w.size() == s.size(), "device_parity: the fixture's " + s.name + " has another size");
            write(step.parameter(s.name), w.data(), w.size());
            ++e.parameters_loaded;
        }
    };
    load(step.layout(), "param.");
    load(step.adapter_layout(), "lora.base_model.model.");
    step.parameters_changed();

    step.zero_gradients();
    e.loss = step.forward_backward(f.data.ids.data(), f.data.targets.data());
    e.expected_loss = f.file.read_all<float>("loss")[0];
    for (const tl::gpu::parameter_slice& s : step.trainable_layout()) {
        std::vector<float> got(s.size());
        read(got.data(), step.gradient(s.name), got.size());
        const auto expected = f.file.read_all<float>("grad." + f.trainable(s.name));
        double diff = 0, scale = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
            diff = std::max(diff, std::abs(double(got[i]) - double(expected[i])));
            scale = std::max(scale, std::abs(double(expected[i])));
        }
        const double relative = scale > 0 ? diff / scale : diff;
        if (relative >= e.gradient) e.gradient = relative, e.gradient_name = s.name;
    }

    const tl::adamw_options hp = f.adamw();
    step.adamw_step(hp.lr, hp);
    for (const tl::gpu::parameter_slice& s : step.trainable_layout()) {
        std::vector<float> got(s.size());
        read(got.data(), step.parameter(s.name), got.size());
        const auto expected = f.file.read_all<float>("adamw." + f.trainable(s.name));
        double diff = 0;
        for (std::size_t i = 0; i < got.size(); ++i)
            diff = std::max(diff, std::abs(double(got[i]) - double(expected[i])));
        if (diff / hp.lr >= e.adamw_lr) e.adamw_lr = diff / hp.lr, e.adamw_name = s.name;
    }
    return e;
}

// Every fixture the step supports (the dense ones and peft's LoRA; the mixture of experts waits for MoE on the
// device), f32 products and bf16 ones, through run(fixture, config, plan options) -> device_parity_errors.
// f32: the bounds of tl::decoder's own parity test (1e-4 against the float64 oracle; the first AdamW step moves each
// weight by about lr, so its error counts in units of lr). bf16 products (operands rounded to 8 bits of mantissa,
// f32 accumulation): loss 1e-2, gradients bf16_gradient_bound; AdamW after bf16 gradients is not compared (a
// gradient near zero may change sign, and the first step then moves that weight by 2 lr the other way).
template <class Run>
void expect_parity_on_every_fixture(const char* where, double bf16_gradient_bound, Run run) {
    struct named_config {
        const char* name;
        tl::model_config config;
    };
    const named_config fixtures[] = {{"llama_gqa", tl::test::llama_gqa::value},
                                     {"llama_mha", tl::test::llama_mha::value},
                                     {"mistral_window", tl::test::mistral_window::value},
                                     {"qwen2_tied", tl::test::qwen2_tied::value},
                                     {"ministral_layers", tl::test::ministral_layers::value},
                                     {"qwen3_qknorm", tl::test::qwen3_qknorm::value},
                                     {"llama_gqa_lora", tl::test::llama_gqa::value}}; // peft: r 4, all 7 projections
    for (const named_config& fixture : fixtures)
        for (const bool bf16 : {false, true}) {
            BOOST_TEST_CONTEXT(fixture.name << (bf16 ? ", bf16 products" : ", f32 products")) {
                const parity_fixture f(fixture.name);
                const device_parity_errors e = run(f, fixture.config, f.options(bf16));
                const double loss_error = std::abs(e.loss - e.expected_loss) / e.expected_loss;
                BOOST_TEST_MESSAGE(fixture.name << (bf16 ? " bf16" : " f32") << " " << where << ": loss " << e.loss
                                                << " vs " << e.expected_loss << " (" << loss_error
                                                << "), worst gradient " << e.gradient << " (" << e.gradient_name
                                                << "), AdamW " << e.adamw_lr << " lr (" << e.adamw_name << ")");
                BOOST_TEST(e.fixture_parameters == e.parameters_loaded); // every tensor, nothing else
                BOOST_TEST(loss_error < (bf16 ? 1e-2 : 1e-4));
                BOOST_TEST(e.gradient < (bf16 ? bf16_gradient_bound : 1e-4), e.gradient_name);
                if (!bf16) BOOST_TEST(e.adamw_lr < 1e-2, e.adamw_name);
            }
        }
}

} // namespace tl_test
