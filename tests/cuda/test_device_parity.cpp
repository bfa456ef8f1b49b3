// The GPU's training step (gpu::decoder_step) on the CPU executor against transformers and peft on the parity
// fixtures (tests/support/device_parity.hpp): every dense fixture and peft's LoRA fixture, f32 products and bf16
// ones. The GPU runs the same check in test_device_parity_gpu.cpp (label cuda).
#include "../support/device_parity.hpp"

#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/decoder_step.hpp>

#include <boost/test/unit_test.hpp>

#include <cstring>
#include <vector>

BOOST_AUTO_TEST_SUITE(device_parity_cpu)

// bf16 gradients measured here 2026-12-05 within 3.7e-2 of their tensor's scale (ministral_layers), bound 5e-2;
// every figure in docs/gpu.md, "The whole model against transformers, on the device".
BOOST_AUTO_TEST_CASE(decoder_step_on_the_cpu_matches_transformers) {
    tl_test::expect_parity_on_every_fixture(
        "on the CPU executor", 5e-2,
        [](const tl_test::parity_fixture& f, const tl::model_config& c, const tl::gpu::decoder_plan_options& o) {
            const tl::gpu::arena_plan plan = tl::gpu::plan_decoder_step(c, o);
            std::vector<std::byte> memory(plan.bytes());
            tl::gpu::cpu_ops ex;
            tl::gpu::decoder_step<tl::gpu::cpu_ops> step(c, o, plan, memory.data(), ex);
            const auto copy = [](float* to, const float* from, std::size_t n) {
                std::memcpy(to, from, n * sizeof(float));
            };
            return tl_test::device_parity(step, f, copy, copy);
        });
}

BOOST_AUTO_TEST_SUITE_END()
