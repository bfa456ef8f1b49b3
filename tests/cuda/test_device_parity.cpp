// The GPU's training step (gpu::decoder_step) on the CPU executor against transformers and peft on the parity
// fixtures (tests/support/device_parity.hpp): every dense fixture and peft's LoRA fixture, f32 products and bf16
// ones. The GPU runs the same check in test_device_parity_gpu.cpp (label cuda). The mixture-of-experts fixture is
// refused by the step's plan so far.
#include "../model/fixture_configs.hpp"
#include "../support/device_parity.hpp"

#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/decoder_step.hpp>

#include <boost/test/unit_test.hpp>

#include <cstring>
#include <string>
#include <vector>

BOOST_AUTO_TEST_SUITE(device_parity_cpu)

namespace {

struct named_config {
    const char* name;
    tl::model_config config;
};
const named_config dense_fixtures[] = {{"llama_gqa", tl::test::llama_gqa::value},
                                       {"llama_mha", tl::test::llama_mha::value},
                                       {"mistral_window", tl::test::mistral_window::value},
                                       {"qwen2_tied", tl::test::qwen2_tied::value},
                                       {"ministral_layers", tl::test::ministral_layers::value},
                                       {"llama_gqa_lora", tl::test::llama_gqa::value}}; // peft's LoRA, r 4, 7 targets

} // namespace

// f32 products: the bounds of tl::decoder's own parity test (1e-4 against the float64 oracle; the first AdamW step
// moves each weight by about lr, so its error is counted in units of lr). bf16 products (each operand rounded to
// 8 bits of mantissa, f32 accumulation): measured here 2026-12-05 at most 6.8e-4 (loss) and 3.7e-2 (gradients);
// bounds 1e-2 and 5e-2. AdamW after bf16 gradients is not compared: a gradient near zero may change sign, and
// the first step then moves that weight by 2 lr the other way.
BOOST_AUTO_TEST_CASE(decoder_step_on_the_cpu_matches_transformers) {
    for (const named_config& fixture : dense_fixtures)
        for (const bool bf16 : {false, true}) {
            BOOST_TEST_CONTEXT(fixture.name << (bf16 ? ", bf16 products" : ", f32 products")) {
                const tl_test::parity_fixture f(fixture.name);
                const tl::gpu::decoder_plan_options o = f.options(bf16);
                const tl::gpu::arena_plan plan = tl::gpu::plan_decoder_step(fixture.config, o);
                std::vector<std::byte> memory(plan.bytes());
                tl::gpu::cpu_ops ex;
                tl::gpu::decoder_step<tl::gpu::cpu_ops> step(fixture.config, o, plan, memory.data(), ex);
                const auto copy = [](float* to, const float* from, std::size_t n) {
                    std::memcpy(to, from, n * sizeof(float));
                };
                const tl_test::device_parity_errors e = tl_test::device_parity(step, f, copy, copy);
                const double loss_error = std::abs(e.loss - e.expected_loss) / e.expected_loss;
                BOOST_TEST_MESSAGE(fixture.name << (bf16 ? " bf16" : " f32") << ": loss " << e.loss << " vs "
                                                << e.expected_loss << " (" << loss_error << "), worst gradient "
                                                << e.gradient << " (" << e.gradient_name << "), AdamW " << e.adamw_lr
                                                << " lr (" << e.adamw_name << ")");
                BOOST_TEST(e.fixture_parameters == e.parameters_loaded); // every tensor, nothing else
                BOOST_TEST(loss_error < (bf16 ? 1e-2 : 1e-4));
                BOOST_TEST(e.gradient < (bf16 ? 5e-2 : 1e-4), e.gradient_name);
                if (!bf16) BOOST_TEST(e.adamw_lr < 1e-2, e.adamw_name);
            }
        }
}

BOOST_AUTO_TEST_SUITE_END()
