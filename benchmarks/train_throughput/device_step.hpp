// device_step.hpp: bench_train's timed loop over gpu::decoder_step (tinylm/cuda/decoder_step.hpp), written once
// for any executor: gpu::gpu_ops (the GPU, --device cuda) or gpu::cpu_ops (the same step through the kernels' CPU
// drivers, --device cpu-ops: slow, but it lets anyone check the loop without a GPU). The model starts from the
// weights of a tl::decoder, copied by their Hugging Face names as tests/model/test_train.cpp does, so both devices
// train the model the CPU path builds from the same seed, on the same random tokens.
#pragma once

#include "bench_configs.hpp"

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/cuda/decoder_step.hpp>
#include <tinylm/model/parameter.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace bench {

struct device_step_settings {
    long long batch = 1, time = 1, logits_rows = 4096;
    bool bf16 = true;
    int warmup = 1, steps = 3;
    std::uint64_t seed = 1;
    double lr = 1e-4, max_grad_norm = 1.0;
    tl::adamw_options adamw; // lr is the one above; the rest as bench_train's CPU step (weight decay 0.1)
};

struct device_step_result {
    std::vector<double> step_seconds, losses, gradient_norms; // seconds of the timed steps; losses of every step
};

// weights: the parameter entries of a tl::decoder (any sizes) holding the initial weights. Every step draws a fresh
// batch of uniform random tokens (bench_train's draw), then, timed: zero gradients, forward + loss + backward, clip
// the global norm to max_grad_norm, AdamW, and sync() (the executor's queue drained: a device synchronize on the
// GPU). A template of the executor alone, so that the benchmark compiles it once per executor, not per config.
template <class Ex>
device_step_result run_device_steps(const tl::model_config& c, const std::vector<tl::parameter_entry>& weights,
                                    const tl::gpu::arena_plan& plan, std::byte* base, Ex& ex, void (*sync)(),
                                    const device_step_settings& s, const char* label) {
    tl::gpu::decoder_plan_options o;
    o.batch = s.batch, o.time = s.time, o.logits_rows = s.logits_rows, o.bf16_weights = s.bf16;
    tl::gpu::decoder_step<Ex> step(c, o, plan, base, ex);

    std::size_t covered = 0;
    for (const tl::parameter_entry& e : weights) {
        const auto it = std::find_if(step.layout().begin(), step.layout().end(),
                                     [&](const tl::gpu::parameter_slice& p) { return p.name == e.name; });
        tl::check(it != step.layout().end() && it->size() == std::size_t(e.value.numel()), [&] {
            std::string m = "bench_train: the decoder's parameter '";
            m += e.name;
            m += "' has no slice of its size in gpu::decoder_parameter_layout";
            return m;
        });
        ex.upload(step.parameter(e.name), e.value.data, it->size() * sizeof(float));
        covered += it->size();
    }
    tl::check(covered == std::size_t(tl::parameter_count(c)),
              "bench_train: the decoder's parameters do not cover the GPU step's parameter block");
    step.parameters_changed();

    tl::adamw_options adamw = s.adamw;
    adamw.lr = s.lr;
    const std::size_t n = std::size_t(s.batch * s.time);
    std::vector<std::int32_t> ids(n), targets(n);
    device_step_result r;
    for (int i = 0; i < s.warmup + s.steps; ++i) {
        tl::counter_rng rng(s.seed, 1000 + std::uint64_t(i)); // bench_train's CPU path draws the same tokens
        for (auto& t : ids)
            t = std::int32_t(rng.below(std::uint64_t(c.vocab_size)));
        for (auto& t : targets)
            t = std::int32_t(rng.below(std::uint64_t(c.vocab_size)));
        sync();
        const double t0 = now_seconds();
        step.zero_gradients();
        const double loss = step.forward_backward(ids.data(), targets.data());
        const double norm = step.clip_gradients(s.max_grad_norm);
        step.adamw_step(s.lr, adamw);
        sync();
        const double t = now_seconds() - t0;
        r.losses.push_back(loss);
        r.gradient_norms.push_back(norm);
        if (i >= s.warmup) r.step_seconds.push_back(t);
        std::fprintf(stderr, "tinylm %s step %d: loss %.5f, gradient norm %.4f, %.4f s\n", label, i, loss, norm, t);
    }
    return r;
}

// Dense bf16 tensor-core peak (TFLOP/s, without sparsity) of the GPUs the course runs on, by the name CUDA
// reports; 0 when unknown (--peak-tflops then gives it). NVIDIA's data sheets: H100 SXM and H200 989.4,
// H100 NVL 835.5, H100 PCIe 756.5, A100 312.
inline double dense_bf16_peak_tflops(const std::string& name) {
    const std::pair<const char*, double> table[] = {
        {"H200", 989.4}, {"H100 NVL", 835.5}, {"H100 PCIe", 756.5}, {"H100", 989.4}, {"A100", 312.0}};
    for (const auto& [key, tflops] : table)
        if (name.find(key) != std::string::npos) return tflops;
    return 0;
}

} // namespace bench
