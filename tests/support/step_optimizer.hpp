// tests/support/step_optimizer.hpp: a GPU training step's optimizer (cuda/flat_step.hpp: decoder_step, encoder_step)
// against tinylm's CPU one on the same gradients: clipping at 0.5 as tl::clip_grad_norm (the norm within 1e-12,
// every clipped gradient within 1e-6 of tl's), then two AdamW steps bit for bit as tl::adamw (each step's decay rule
// by name against tl's by kind). model: a tl model holding gradients; step: a step over the same parameters.
// load_parameters_into_step copies a tl model's parameters into a step on the CPU executor, by name;
// expect_gradients_match compares their gradients.
#pragma once

#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace tl_test {

// Every parameter of `model` into `step` (host memory: the CPU executor) by name: the step's layout names each of them
// with its size, and nothing else.
template <class Model, class Step>
void load_parameters_into_step(const Model& model, Step& step) {
    std::size_t covered = 0;
    for (const tl::parameter_entry& e : model.parameter_entries()) {
        const auto it =
            std::find_if(step.layout().begin(), step.layout().end(), [&](const auto& s) { return s.name == e.name; });
        BOOST_TEST_REQUIRE((it != step.layout().end()), "no slice for " << e.name);
        BOOST_TEST_REQUIRE(it->size() == std::size_t(e.value.numel()), e.name);
        std::copy_n(e.value.data, e.value.numel(), step.parameter(e.name));
        covered += it->size();
    }
    BOOST_TEST(covered == std::size_t(model.parameter_count()));
    BOOST_TEST(step.layout().size() == model.parameter_entries().size());
    step.parameters_changed();
}

// The step's gradient of every parameter within `relative` of the largest element of the model's (each non-zero);
// returns the largest difference found, relative to its tensor's scale. context: prefixes a failure's message.
template <class Model, class Step>
double expect_gradients_match(const Model& model, Step& step, double relative, const std::string& context) {
    double worst = 0;
    for (const tl::parameter_entry& e : model.parameter_entries()) {
        const float* g = step.gradient(e.name);
        double err = 0, scale = 0;
        for (tl::index_t i = 0; i < e.grad.numel(); ++i) {
            err = std::max(err, std::abs(double(g[i]) - double(e.grad[i])));
            scale = std::max(scale, std::abs(double(e.grad[i])));
        }
        BOOST_TEST(scale > 0.0, context << e.name);
        BOOST_TEST(err <= relative * scale, context << e.name << ": " << err << " against a scale of " << scale);
        worst = std::max(worst, err / scale);
    }
    return worst;
}

template <class Model, class Step>
void expect_step_optimizer_matches(Model& model, Step& step) {
    auto copy_gradients = [&] {
        for (const tl::parameter_entry& e : model.trainable_entries())
            std::copy_n(e.grad.data, e.grad.numel(), step.gradient(e.name));
    };
    copy_gradients();
    const double norm = tl::clip_grad_norm(model.parameter_entries(), 0.5), step_norm = step.clip_gradients(0.5);
    BOOST_TEST_REQUIRE(norm > 0.5); // clipping happened
    BOOST_TEST(std::abs(step_norm - norm) <= 1e-12 * norm);
    for (const tl::parameter_entry& e : model.trainable_entries()) { // one scale, maybe an ulp apart
        const float* g = step.gradient(e.name);
        tl::index_t off = 0;
        for (tl::index_t i = 0; i < e.grad.numel(); ++i)
            off += std::abs(g[i] - e.grad[i]) > 1e-6f * std::abs(e.grad[i]);
        BOOST_TEST(off == 0, e.name);
    }
    copy_gradients(); // the clipped gradients exactly, so that AdamW can be compared bit for bit
    const tl::adamw_options options{.weight_decay = 0.1};
    tl::adamw opt(model, options);
    for (const double lr : {1e-3, 2e-3}) {
        opt.step(lr);
        step.adamw_step(lr, options);
        for (const tl::parameter_entry& e : model.parameter_entries())
            BOOST_TEST_REQUIRE(
                std::memcmp(step.parameter(e.name), e.value.data, std::size_t(e.value.numel()) * sizeof(float)) == 0,
                e.name << " after the step at lr " << lr);
    }
}

} // namespace tl_test
