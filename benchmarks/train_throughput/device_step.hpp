// device_step.hpp: bench_train's timed loop over gpu::decoder_step (tinylm/cuda/decoder_step.hpp), written once
// for any executor: gpu::gpu_ops (the GPU, --device cuda) or gpu::cpu_ops (the same step through the kernels' CPU
// drivers, --device cpu-ops: slow, but it lets anyone check the loop without a GPU). The initial weights come from a
// weight_source by name: for configs a, b and 150m the tl::decoder the CPU path builds with the same seed (so both
// devices train the same model on the same random tokens), for qwen0.5b random_weights (no tl::decoder: its 494M
// parameters would cost a decoder instantiation and its memory for nothing; a step's time does not depend on the
// values). LoRA adapters are always random_weights.
#pragma once

#include "bench_configs.hpp"

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/cuda/decoder_step.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/ops/nf4.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace bench {

struct device_step_settings {
    int warmup = 1, steps = 3;
    std::uint64_t seed = 1;
    double lr = 1e-4, max_grad_norm = 1.0;
    tl::adamw_options adamw; // lr is the one above; the rest as bench_train's CPU step (weight decay 0.1)
};

struct device_step_result {
    std::vector<double> step_seconds, losses, gradient_norms; // seconds of the timed steps; losses of every step
};

// Writes the initial value of the dense (rows, cols) parameter `slice.name` (a Hugging Face or peft name; offset
// unused) to out, row-major.
using weight_source = std::function<void(const tl::gpu::parameter_slice& slice, float* out)>;

// Random initial weights by name, as tl::decoder initialises (model/config.hpp's init_std): norm weights 1, biases 0,
// every other matrix (LoRA's A and B too, so that every path of the adapter carries signal) normal(0, std) from the
// counter RNG on a stream named by the parameter's name, so the same name gets the same values whatever the layout
// (full, LoRA, QLoRA). Rows in parallel: each row starts at its own position of the stream (normal() takes two
// counter values), so the values do not depend on the threads.
inline weight_source random_weights(std::uint64_t seed, double std) {
    return [seed, std](const tl::gpu::parameter_slice& s, float* out) {
        const bool norm = s.name.find("norm") != std::string::npos, bias = s.name.ends_with(".bias");
        if (norm || bias) {
            std::fill(out, out + s.size(), norm ? 1.0f : 0.0f);
            return;
        }
        std::uint64_t stream = 0xcbf29ce484222325ull; // FNV-1a of the name
        for (const char ch : s.name)
            stream = (stream ^ std::uint8_t(ch)) * 0x100000001b3ull;
        const auto rows = static_cast<long long>(s.rows);
#pragma omp parallel for schedule(static)
        for (long long i = 0; i < rows; ++i) {
            tl::counter_rng rng(seed, stream);
            rng.set_counter(2 * std::uint64_t(i) * s.cols);
            float* row = out + std::size_t(i) * s.cols;
            for (std::size_t j = 0; j < s.cols; ++j)
                row[j] = float(std * rng.normal());
        }
    };
}

// The initial weights of a tl::decoder's parameter entries, by name (and size, checked); names of LoRA's adapter
// (not in a plain decoder) from `adapter`.
inline weight_source decoder_weights(const std::vector<tl::parameter_entry>& entries, weight_source adapter) {
    return [&entries, adapter = std::move(adapter)](const tl::gpu::parameter_slice& s, float* out) {
        if (s.name.find(".lora_") != std::string::npos) return adapter(s, out);
        const auto it = std::find_if(entries.begin(), entries.end(),
                                     [&](const tl::parameter_entry& e) { return e.name == s.name; });
        tl::check(it != entries.end() && std::size_t(it->value.numel()) == s.size(), [&] {
            std::string m = "bench_train: gpu::decoder_parameter_layout's parameter '";
            m += s.name;
            m += "' is not a parameter of the same size in the tl::decoder";
            return m;
        });
        std::copy(it->value.data, it->value.data + s.size(), out);
    };
}

// QLoRA: the seven projections of every layer, in gpu::nf4_layout's order, from `weights`, quantised with
// tl::quantize_nf4 (double quantisation). In parallel over the matrices (Qwen2.5-0.5B: 168 of them, 358M weights;
// one thread would take tens of seconds); an error in a thread is rethrown here. Not a template: compiled once.
inline std::vector<tl::nf4_tensor> quantized_projections(const tl::model_config& c, const weight_source& weights) {
    const std::vector<tl::gpu::nf4_slice> nf4 = tl::gpu::nf4_layout(c);
    std::vector<tl::nf4_tensor> quantized(nf4.size());
    std::vector<std::exception_ptr> errors(nf4.size());
    const auto count = static_cast<long long>(nf4.size());
#pragma omp parallel for schedule(dynamic)
    for (long long i = 0; i < count; ++i) {
        try { // per layer, in lora_target's order
            const auto [in, out] = tl::gpu::projection_shape(c, tl::proj(int(i % tl::lora_target_count)));
            std::vector<float> w(in * out);
            weights({nf4[std::size_t(i)].name, 0, out, in}, w.data());
            quantized[std::size_t(i)] =
                tl::quantize_nf4(tl::cview<float>{w.data(), {tl::index_t(out), tl::index_t(in)}}, true);
        } catch (...) {
            errors[std::size_t(i)] = std::current_exception();
        }
    }
    for (const std::exception_ptr& e : errors)
        if (e) std::rethrow_exception(e);
    return quantized;
}

// o: the plan's options (plan was made from them: plan_decoder_step(c, o)). Loads the initial weights from `weights`:
// the base's f32 block, with QLoRA the seven projections of every layer quantised with tl::quantize_nf4 (double
// quantisation) and loaded through set_quantized_weight, with LoRA the adapter. Then every step draws a fresh batch
// of uniform random tokens (bench_train's draw), and, timed: zero gradients, forward + loss + backward, clip the
// global norm to max_grad_norm, AdamW, and sync() (the executor's queue drained: a device synchronize on the GPU). A
// template of the executor alone, so that the benchmark compiles it once per executor, not per config.
template <class Ex>
device_step_result run_device_steps(const tl::model_config& c, const tl::gpu::decoder_plan_options& o,
                                    const tl::gpu::arena_plan& plan, std::byte* base, Ex& ex, void (*sync)(),
                                    const device_step_settings& s, const weight_source& weights, const char* label) {
    tl::gpu::decoder_step<Ex> step(c, o, plan, base, ex);

    const double load_start = now_seconds();
    std::vector<float> host;
    auto load = [&](const tl::gpu::parameter_slice& p) {
        host.resize(p.size());
        weights(p, host.data());
        ex.upload(step.parameter(p.name), host.data(), p.size() * sizeof(float));
    };
    for (const tl::gpu::parameter_slice& p : step.layout())
        load(p);
    if (o.lora.rank > 0 && o.lora.quantized_base) {
        const std::vector<tl::gpu::nf4_slice> nf4 = tl::gpu::nf4_layout(c);
        const std::vector<tl::nf4_tensor> quantized = quantized_projections(c, weights);
        for (std::size_t i = 0; i < nf4.size(); ++i)
            step.set_quantized_weight(nf4[i].name, quantized[i]);
    }
    for (const tl::gpu::parameter_slice& p : step.adapter_layout())
        load(p);
    step.parameters_changed();
    std::fprintf(stderr, "tinylm %s: initial weights made%s and loaded in %.1f s\n", label,
                 o.lora.quantized_base ? ", quantised to NF4" : "", now_seconds() - load_start);

    tl::adamw_options adamw = s.adamw;
    adamw.lr = s.lr;
    const std::size_t n = std::size_t(o.batch * o.time);
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

// FLOPs per token of one step of gpu::decoder_step, counted as tl::flops_per_token counts (matrix products only; norms,
// biases, SwiGLU, softmax and the optimizer left out). Full training: tl::flops_per_token = 6 W + 12 q keys, with W
// the matrix weights per token, L (d q + 2 d kv + q d + 3 d f) + V d (the head; tied, it is the embedding matrix),
// 2 FLOPs each for the forward, the input gradient and the weight gradient, and attention's four T x T products per
// head (q k^T and p v forward; dp, dv, dq, dk backward) over the mean number of keys each query sees. LoRA: the base
// is frozen and its weight gradients are never computed, so 4 W; each adapted projection (in, out) of rank r adds
// x A^T (2 r in) and u B^T (2 r out) forward, dy B (2 r out), dB (2 r out), dA (2 r in) and dx += t A (2 r in)
// backward, 6 r (in + out) = 6 per adapter parameter:
//   LoRA step FLOPs per token = tl::flops_per_token - 2 W + 6 A   (A: the adapter's parameters)
// The same with QLoRA (the dequantisation is no product). The first layer's q, k, v input gradient, which nothing
// needs under LoRA (the embedding is frozen), is computed here and counted; PyTorch's autograd skips it (0.1% of a
// Qwen2.5-0.5B step), and pytorch_peer.py uses this same count.
inline double step_flops_per_token(const tl::model_config& c, long long time, const tl::lora_config& lora) {
    const double full = tl::flops_per_token(c, int(time));
    if (lora.rank == 0) return full;
    const double d = c.d_model, q = c.q_width(), kv = c.kv_width(), f = c.d_ff;
    const double matrix_weights = c.n_layers * (d * q + 2 * d * kv + q * d + 3 * d * f) + double(c.vocab_size) * d;
    double adapter = 0;
    for (const tl::gpu::parameter_slice& s : tl::gpu::adapter_layout(c, lora))
        adapter += double(s.size());
    return full - 2 * matrix_weights + 6 * adapter;
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
