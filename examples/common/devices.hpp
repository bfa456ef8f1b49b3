// examples/common/devices.hpp: --device cpu|cuda|cpu-ops of the pretraining recipes (04_russian_novels, 05_tatar;
// docs/gpu.md): the refusals at start, and the model a run trains on.
//
//   recipes::check_device("05_tatar", device, attention);   // after parsing: cuda without a backend or a GPU refused
//   return recipes::train_on_device("05_tatar", world, options, device, model,
//                                   [&](auto& trained, const std::string& backend) { ... tl::trainer(trained, ...) },
//                                   attention);                 // --attention (add_attention_option)
//
// cpu trains the host model itself (tl::decoder); cuda a gpu::device_decoder<gpu_ops> (parameters, gradients and
// AdamW's moments on the GPU, bf16 products) and cpu-ops a gpu::device_decoder<cpu_ops> (the GPU's code path on the
// CPU: a check, slow), both loaded from the host model. recipes::to_host copies a device model's weights back into the
// host model, for what runs on the CPU (samples, QA scoring). Under mpirun each rank's device model takes its rows of
// the global batch, and on cuda the gradients are summed through NCCL (one GPU per rank).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/cuda/device_decoder.hpp>
#if defined(TINYLM_HAS_NCCL) && TINYLM_HAS_NCCL
#include <tinylm/cuda/nccl_communicator.hpp>
#endif
#include <tinylm/dist/communicator.hpp>
#include <tinylm/train/trainer.hpp>

#include <CLI/CLI.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <type_traits>

namespace recipes {

// --attention of the device models (gpu::device_decoder_options::attention), beside --device.
inline void add_attention_option(CLI::App& app, std::string& attention) {
    app.add_option("--attention", attention,
                   "with --device cuda or cpu-ops, how the device model computes attention: products (T x T scores "
                   "through cuBLASLt, masked tiles skipped), fused (one kernel on tensor cores, FlashAttention-2's "
                   "loop: --device cuda only, bf16, head width 64 or 128, e.g. --preset 150m) or rows (one thread "
                   "per query, f32: the oracle); docs/gpu.md")
        ->check(CLI::IsMember({"products", "fused", "rows"}))
        ->capture_default_str();
}
inline tl::gpu::attention_path attention_path_named(const std::string& name) {
    if (name == "fused") return tl::gpu::attention_path::fused;
    if (name == "rows") return tl::gpu::attention_path::rows;
    tl::check(name == "products", "--attention " + name + ": products, fused or rows");
    return tl::gpu::attention_path::products;
}

// --device cuda needs a build with tinylm::cuda and a visible GPU: refused at start, before the data is prepared.
inline void check_device(const std::string& recipe, const std::string& device,
                         const std::string& attention = "products") {
    tl::check(attention == "products" || device != "cpu",
              recipe + ": --attention " + attention + " is for the device models (--device cuda or cpu-ops)");
    tl::check(attention != "fused" || device == "cuda",
              recipe + ": --attention fused needs bf16 products, which --device cuda has (cpu-ops runs f32)");
    if (device != "cuda") return;
#ifdef TINYLM_HAS_CUDA
    tl::check(tl::gpu::device_count() > 0, recipe + ": --device cuda: no CUDA device is visible (device_count() == 0): "
                                                    "no GPU or no driver on this machine");
#else
    tl::fail(recipe + ": --device cuda: this build has no CUDA backend (tinylm::cuda); configure with "
                      "-DTINYLM_WITH_CUDA=ON (needs nvcc) and rebuild, or use --device cpu");
#endif
}

// The trained model's weights into the host model `model` (nothing to do when it is the host model itself).
template <class Trained, class Model>
void to_host(Trained& trained, Model& model) {
    if constexpr (!std::is_same_v<std::remove_cvref_t<Trained>, Model>) trained.store_into(model);
}

// train_on(trained, backend) with the model --device names: `model` itself (cpu), or a device model of the same
// configuration loaded from it, computing attention as --attention names; returns what train_on returns. `options`
// are the trainer's (batch_size, seq_len, gradient_checkpointing; on cuda with several ranks its device_communicator
// is set here).
template <class Model, class TrainOn>
auto train_on_device(const std::string& recipe, tl::dist::communicator& world, tl::trainer_options& options,
                     const std::string& device, Model& model, TrainOn&& train_on,
                     const std::string& attention = "products") {
    if (device == "cpu")
        return train_on(model, std::string(Model::backend::name) +
                                   (options.matmul_precision == tl::precision::bf16 ? " (bf16 products)" : ""));
    tl::gpu::device_decoder_options on_device; // the rank's rows of the global batch (all of it in one process)
    on_device.batch =
        tl::index_t(tl::dist::part_of(std::size_t(options.batch_size), world.rank(), world.size()).count());
    on_device.time = options.seq_len, on_device.bf16 = device == "cuda";
    on_device.checkpointing = options.gradient_checkpointing;
    on_device.attention = attention_path_named(attention);
#ifdef TINYLM_HAS_CUDA
    if (device == "cuda") {
        // Several ranks: one GPU each, the parameters and gradients through NCCL (docs/gpu.md); made before the
        // model, since it selects the rank's GPU.
#if defined(TINYLM_HAS_NCCL) && TINYLM_HAS_NCCL
        std::optional<tl::gpu::nccl_communicator> gpus;
        if (world.size() > 1) options.device_communicator = &gpus.emplace(world);
#else
        tl::check(world.size() == 1, recipe + ": --device cuda on several ranks needs NCCL (gpu::nccl_communicator); "
                                              "this build of tinylm::cuda has none (docs/gpu.md)");
#endif
        tl::gpu::device_decoder<tl::gpu::gpu_ops> gpu_model(model.config(), on_device);
        gpu_model.load_from(model);
        auto result = train_on(gpu_model, std::string("cuda (gpu::device_decoder, bf16 products)"));
        options.device_communicator = nullptr; // `gpus` ends here
        return result;
    }
#endif
    tl::check(device == "cpu-ops", recipe + ": --device " + device + " is not available in this build");
    tl::gpu::device_decoder<tl::gpu::cpu_ops> checked(model.config(), on_device);
    checked.load_from(model);
    return train_on(checked, std::string("cpu-ops (gpu::device_decoder's code path on the CPU)"));
}

} // namespace recipes
