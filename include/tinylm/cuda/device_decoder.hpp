// tinylm/cuda/device_decoder.hpp: a decoder whose parameters, gradients and AdamW moments live in one arena of an
// executor's memory (the GPU's with gpu::gpu_ops, host memory with gpu::cpu_ops), trained by THE training loop,
// tl::trainer (train/trainer.hpp), as a tl::decoder is:
//
//   gpu::device_decoder<gpu::gpu_ops> model(config, {.batch = 64, .time = 512, .bf16 = true});
//   model.load_from(host_decoder);                      // the initial weights, copied by parameter name
//   tl::trainer run(model, batches, validation_tokens, options);   // optimizer: gpu::device_adamw
//   run.run();
//   model.store_into(host_decoder);                     // evaluation, sampling, save_pretrained on the CPU
//
// What the trainer needs of it (tl::DeviceResidentModel): the micro-batch's loss and its gradient in one pass
// (decoder_step's head interleaves them chunk by chunk, so logits are never stored whole), the gradient norm and
// clipping over the flat gradient block, a forward-only validation loss, and a host mirror of the parameters:
// parameter_entries() are host tensors under the Hugging Face names, which checkpoints write and read
// (download_parameters before a save, upload_parameters after a load), so a checkpoint is the same files as a CPU
// run's and either resumes the other. The entries have no gradient: nothing on the host trains them. Distributed
// (mpirun, one GPU per rank): built for the rank's rows, its parameters broadcast and its gradient block summed in
// its own memory through the trainer's device communicator (gpu::nccl_communicator on GPUs). With experts, the
// trainer also sums each forward's balancing statistics over the ranks (set_global_balance: host values, through
// its host communicator), so the balancing loss is the global batch's, as tl::decoder's on N ranks.
//
// gpu::device_adamw is the Optimizer (optim/optimizer.hpp) of such a model: its step is decoder_step's AdamW over
// the device's moments; its state is those moments, copied through the host under tl::adamw's names
// ("exp_avg.<name>", "exp_avg_sq.<name>") when a checkpoint is written or read.
//
// LoRA and QLoRA (the adapter type A, as tl::decoder<C, B, A> takes it): the base is frozen and loaded once (QLoRA:
// its seven projections per layer in NF4, quantised on the host as tl::decoder quantises them, set_quantized_weight),
// the adapter trains, and only the adapter has gradients and AdamW moments. The host mirror is then tl::decoder's
// with the same adapter: the base's entries (not trainable) and the adapter's (param_kind::adapter, peft's names
// without "base_model.model."), and QLoRA's quantized_entries(); so a checkpoint writes the same files (the model
// folder, the PEFT adapter, the dropout's key and training-forward count) and either model resumes the other. LoRA
// dropout draws tl::decoder's masks (decoder_step.hpp): one training forward per loss_and_backward, none in
// eval_loss, as the trainer drives tl::decoder.
//
// A plain C++ header: with gpu_ops it needs tinylm::cuda at link time, never a CUDA header.
#pragma once

#include <tinylm/core/shape.hpp>
#include <tinylm/core/token.hpp>
#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/decoder_plan.hpp>
#include <tinylm/cuda/decoder_step.hpp>
#include <tinylm/cuda/device.hpp>
#include <tinylm/cuda/gpu_ops.hpp>
#include <tinylm/dist/communicator.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/ops/nf4.hpp>
#include <tinylm/optim/adamw.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace tl::gpu {

// The shape of every step (the trainer's batch_size and seq_len), the LM head's chunk and bf16 products.
struct device_decoder_options {
    index_t batch = 8, time = 64;
    long long logits_rows = 4096;
    bool bf16 = false;
    bool checkpointing = false; // gradient checkpointing (decoder_plan_options::checkpointing): planned up front
    // How the step computes attention (decoder_plan.hpp's attention_path): products (the default), fused (one kernel
    // on tensor cores; bf16, head width 64 or 128) or rows (the f32 oracle).
    attention_path attention = attention_path::products;
};

// The arena and the executor over it: host memory for cpu_ops, one cudaMalloc and a cuBLASLt handle for gpu_ops.
template <class Ex>
struct step_memory;

template <>
struct step_memory<cpu_ops> {
    explicit step_memory(const arena_plan& plan) : bytes(plan.bytes()) {}
    std::byte* base() { return bytes.data(); }
    std::vector<std::byte> bytes;
    cpu_ops ex;
};

template <class Ex>
requires std::same_as<Ex, gpu_ops>
struct step_memory<Ex> {
    explicit step_memory(const arena_plan& plan)
        : arena(with_a_device(plan)),
          products(arena.at<std::byte>(plan.at("blas.workspace").offset), blas_workspace_bytes), ex{&products,
                                                                                                    nullptr} {}
    std::byte* base() { return arena.at<std::byte>(0); }
    device_arena arena;
    blas products;
    gpu_ops ex;

private:
    static const arena_plan& with_a_device(const arena_plan& plan) {
        check(device_count() > 0,
              "gpu::device_decoder: no CUDA device is visible (device_count() == 0): this build has "
              "the CUDA backend, but the machine has no GPU or no driver; train with the CPU");
        return plan;
    }
};

template <class Ex, LoraAdapter A = no_adapter>
class device_adamw;

template <class Ex, LoraAdapter A = no_adapter>
class device_decoder {
public:
    static_assert(validate_adapter<A>());
    static constexpr lora_config lora = A::value;
    static constexpr bool has_adapter = lora.rank > 0; // checkpoint.hpp: the PEFT files and the dropout's state
    static constexpr bool quantized_base = has_adapter && lora.quantized_base; // io/hf_checkpoint.hpp: NF4 base
    static_assert(!lora.trainable_embeddings,
                  "gpu::device_decoder: LoRA with trainable embeddings is not supported on the device yet");
    using optimizer_type = device_adamw<Ex, A>; // the trainer's default optimizer for this model

    // QLoRA's NF4 projections, named and ordered as tl::decoder's (model/projection_table.hpp).
    struct quantized_entry {
        std::string name; // model.layers.3.self_attn.q_proj.weight
        index_t layer;
        int target; // proj index: q, k, v, o, gate, up, down
        tl::shape shape;
    };

    device_decoder(const model_config& c, const device_decoder_options& o)
        : config_(c), options_(o), step_options_(step_options(o)), plan_(plan_decoder_step(c, step_options_)),
          memory_(plan_), step_(c, step_options_, plan_, memory_.base(), memory_.ex) {
        host_.assign(block_size(step_.layout()), 0.0f);
        adapter_host_.assign(block_size(step_.adapter_layout()), 0.0f);
        for (const parameter_slice& s : step_.layout()) {
            const bool norm = s.name.find("norm") != std::string::npos;
            const bool embedding = s.name == "model.embed_tokens.weight", bias = s.name.ends_with(".bias");
            shape dims = s.rows == 1 ? shape{index_t(s.cols)} : shape{index_t(s.rows), index_t(s.cols)};
            if (c.moe.n_experts > 0 && s.name.find(".mlp.experts.") != std::string::npos) // stacked: (E, rows, cols)
                dims = shape{index_t(c.moe.n_experts), index_t(s.rows) / c.moe.n_experts, index_t(s.cols)};
            parameter_entry e{s.name,
                              {host_.data() + s.offset, dims},
                              {},
                              norm        ? param_kind::norm
                              : embedding ? param_kind::embedding
                              : bias      ? param_kind::bias
                                          : param_kind::weight};
            e.trainable = !has_adapter; // a frozen base under an adapter
            entries_.push_back(e);
        }
        for (const parameter_slice& s : step_.adapter_layout())
            entries_.push_back({s.name,
                                {adapter_host_.data() + s.offset, {index_t(s.rows), index_t(s.cols)}},
                                {},
                                param_kind::adapter,
                                true,
                                param_group::adapter});
        if constexpr (quantized_base) { // zeros until loaded (load_from, a checkpoint)
            std::vector<float> zeros;
            for (int l = 0; l < c.n_layers; ++l)
                for (int t = 0; t < lora_target_count; ++t) {
                    const projection_widths w = projection_shape(c, proj(t));
                    quantized_entries_.push_back(
                        {"model.layers." + std::to_string(l) + "." + projection_modules[std::size_t(t)] + ".weight", l,
                         t, shape{index_t(w.out), index_t(w.in)}});
                    zeros.assign(std::size_t(w.out * w.in), 0.0f);
                    set_quantized_weight(l, t, cview<float>{zeros.data(), quantized_entries_.back().shape});
                }
        }
        upload_parameters();
    }
    device_decoder(const device_decoder&) = delete; // step_ keeps references to plan_ and memory_
    device_decoder& operator=(const device_decoder&) = delete;

    const model_config& config() const { return config_; }
    const device_decoder_options& options() const { return options_; }
    std::size_t arena_bytes() const { return plan_.bytes(); }
    decoder_step<Ex>& step() { return step_; }
    const decoder_step<Ex>& step() const { return step_; }
    Ex& executor() { return memory_.ex; }

    // The host mirror of the parameters (Hugging Face names, tl::decoder's shapes), as of the last
    // download_parameters(); what checkpoints write and read.
    // With an adapter only the adapter comes back (the base does not train); upload sends both.
    const std::vector<parameter_entry>& parameter_entries() const { return entries_; }
    void download_parameters() {
        if constexpr (has_adapter)
            memory_.ex.download(adapter_host_.data(), adapter_block(), adapter_host_.size() * sizeof(float));
        else
            memory_.ex.download(host_.data(), base_block(), host_.size() * sizeof(float));
    }
    void upload_parameters() {
        memory_.ex.upload(base_block(), host_.data(), host_.size() * sizeof(float));
        if constexpr (has_adapter)
            memory_.ex.upload(adapter_block(), adapter_host_.data(), adapter_host_.size() * sizeof(float));
        step_.parameters_changed();
    }

    // ---- the adapter's state as tl::decoder's (io/peft.hpp, train/checkpoint.hpp) ----
    bool merged() const { return false; } // the adapter is never merged into the device's base
    std::uint64_t dropout_seed() const { return step_.dropout_seed(); }
    void set_dropout_seed(std::uint64_t s) { step_.set_dropout_seed(s); }
    std::uint64_t dropout_calls() const { return step_.dropout_calls(); }
    void set_dropout_calls(std::uint64_t n) { step_.set_dropout_calls(n); }
    void set_dropout_row_offset(index_t rows) { step_.set_dropout_row_offset(rows); }
    // QLoRA: the NF4 projections (host copies of what the device holds), as tl::decoder's.
    const std::vector<quantized_entry>& quantized_entries() const { return quantized_entries_; }
    const nf4_tensor& quantized_weight(index_t l, int t) const { return quantized_.at(nf4_index(l, t)); }
    // Quantises w (out, in) into projection t of layer l as tl::decoder does (loading a checkpoint), or takes a
    // host model's NF4 weight as it is; either goes to the device at once.
    void set_quantized_weight(index_t l, int t, cview<float> w) { set_quantized_weight(l, t, quantize_nf4(w, true)); }
    void set_quantized_weight(index_t l, int t, nf4_tensor q) {
        static_assert(quantized_base, "gpu::device_decoder::set_quantized_weight: the base is not quantised (QLoRA)");
        const std::size_t i = nf4_index(l, t);
        if (quantized_.size() <= i) quantized_.resize(i + 1);
        step_.set_quantized_weight(quantized_entries_.at(i).name, q);
        quantized_[i] = std::move(q);
    }

    // The parameters of a host model (a tl::decoder of the same configuration and adapter), by name; every one
    // must exist. With an adapter: the base, the adapter, the dropout's key and count, QLoRA's NF4 weights.
    template <class Model>
    void load_from(const Model& model) {
        static_assert(Model::has_adapter == has_adapter, "gpu::device_decoder::load_from: a host model with an "
                                                         "adapter for a device model with one, and none for none");
        if constexpr (has_adapter) {
            static_assert(Model::lora.rank == lora.rank && Model::lora.alpha == lora.alpha &&
                              Model::lora.targets == lora.targets && Model::quantized_base == quantized_base,
                          "gpu::device_decoder::load_from: the host model's adapter differs (rank, alpha, targets, "
                          "NF4); its dropout rate may");
            set_dropout_seed(model.dropout_seed());
            set_dropout_calls(model.dropout_calls());
        }
        if constexpr (quantized_base)
            for (const auto& q : model.quantized_entries())
                set_quantized_weight(q.layer, q.target, model.quantized_weight(q.layer, q.target));
        std::size_t copied = 0;
        for (const parameter_entry& e : model.parameter_entries()) {
            const parameter_entry& mine = entry(e.name);
            check(mine.value.numel() == e.value.numel(), [&] {
                return "gpu::device_decoder::load_from: " + e.name + " has " + std::to_string(e.value.numel()) +
                       " elements, the device model " + std::to_string(mine.value.numel());
            });
            std::copy_n(e.value.data, e.value.numel(), mine.value.data);
            ++copied;
        }
        check(copied == entries_.size(), "gpu::device_decoder::load_from: the host model lacks some parameters of "
                                         "the device model (another configuration?)");
        upload_parameters();
    }
    // The device's parameters into a host model's entries of the same names (with an adapter: the adapter, the
    // unchanged base and the dropout's count, so the host model continues where the device stopped).
    template <class Model>
    void store_into(Model& model) {
        static_assert(Model::has_adapter == has_adapter, "gpu::device_decoder::store_into: the adapters differ");
        if constexpr (has_adapter) {
            model.set_dropout_seed(dropout_seed());
            model.set_dropout_calls(dropout_calls());
        }
        download_parameters();
        for (const parameter_entry& e : model.parameter_entries()) {
            const parameter_entry& mine = entry(e.name);
            check(mine.value.numel() == e.value.numel(),
                  [&] { return "gpu::device_decoder::store_into: " + e.name + " differs in size"; });
            std::copy_n(mine.value.data, mine.value.numel(), e.value.data);
        }
    }

    // The trainer's calls (tl::DeviceResidentModel).
    // Checkpointing changes the arena's plan, so it is chosen when the model is built (options.checkpointing).
    void set_gradient_checkpointing(bool on) {
        check(on == options_.checkpointing, [&] {
            return std::string("gpu::device_decoder: gradient checkpointing ") + (on ? "on" : "off") +
                   " was asked for, but the model was built with it " + (options_.checkpointing ? "on" : "off") +
                   " (device_decoder_options::checkpointing plans the arena for it)";
        });
    }
    void plan(index_t batch, index_t time) {
        check(batch == options_.batch && time == options_.time, [&] {
            return "gpu::device_decoder: built for batches of " + std::to_string(options_.batch) + " x " +
                   std::to_string(options_.time) + " tokens, asked for " + std::to_string(batch) + " x " +
                   std::to_string(time) +
                   " (the trainer's batch_size and seq_len must be the model's; distributed, the rank's rows of "
                   "batch_size: dist::part_of)";
        });
    }
    void zero_grad() { step_.zero_gradients(); }
    // The micro-batch's mean loss, and its gradient times `scale` added to the gradients.
    float loss_and_backward(cview<token_t> ids, cview<token_t> targets, double scale, cview<index_t> doc_start = {}) {
        check_batch("loss_and_backward", ids, targets);
        counted_ = count(targets);
        return float(step_.forward_backward(ids.data, targets.data, doc_start.data, scale));
    }
    // Validation: the mean loss over counted targets of up to `batch` rows (fewer are padded with ignored rows).
    float eval_loss(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start = {}) {
        check(ids.shape == targets.shape && ids.shape.rank == 2 && ids.dim(0) <= options_.batch &&
                  ids.dim(1) == options_.time,
              "gpu::device_decoder::eval_loss: ids and targets must be (rows <= batch, time) of the device model");
        counted_ = count(targets);
        if (ids.dim(0) == options_.batch) return float(step_.loss(ids.data, targets.data, doc_start.data));
        const std::size_t n = std::size_t(options_.batch * options_.time), given = std::size_t(ids.numel());
        padded_ids_.assign(n, 0);
        padded_targets_.assign(n, ignore_index);
        std::copy_n(ids.data, given, padded_ids_.begin());
        std::copy_n(targets.data, given, padded_targets_.begin());
        if (doc_start.data) {
            padded_docs_.assign(n, 0);
            std::copy_n(doc_start.data, given, padded_docs_.begin());
        }
        return float(step_.loss(padded_ids_.data(), padded_targets_.data(),
                                doc_start.data ? padded_docs_.data() : nullptr, ids.dim(0))); // experts: rows only
    }
    index_t counted_targets() const { return counted_; }
    // Experts: the slots each expert of `layer` got in the last forward, the real rows' only (tl::decoder's).
    std::vector<long long> expert_counts(int layer) const { return step_.expert_counts(layer); }
    double grad_norm() { return step_.gradient_norm(); }
    // optim/clip.hpp's rule over every gradient; returns the norm before.
    double clip_grad_norm(double max_norm) { return step_.clip_gradients(max_norm); }

    // Data parallel (the trainer under mpirun; docs/gpu.md, "Data parallel on GPUs"), in this model's memory, one
    // collective each: `comm` must take it (gpu::nccl_communicator for gpu_ops; a host communicator for cpu_ops).
    // Rank root's parameters to every rank (the host mirror follows), and the gradient block summed over the ranks.
    // With an adapter the f32 base and the adapter go (QLoRA's NF4 base does not: every rank loads the same one).
    void broadcast_parameters(dist::communicator& comm, int root) {
        check_reaches(comm, "broadcast_parameters");
        comm.broadcast(std::as_writable_bytes(std::span<float>{base_block(), host_.size()}), root);
        if constexpr (has_adapter)
            comm.broadcast(std::as_writable_bytes(std::span<float>{adapter_block(), adapter_host_.size()}), root);
        step_.parameters_changed();
        if constexpr (has_adapter) memory_.ex.download(host_.data(), base_block(), host_.size() * sizeof(float));
        download_parameters();
    }
    // Experts: the balancing statistics of each training forward summed over the ranks by `sum` (in place, host
    // values), the balancing loss's gradient weighted by `gradient_scale` (decoder_step::set_global_balance). An
    // empty `sum`: each step's own batch (one process).
    void set_global_balance(std::function<void(std::span<double>)> sum, double gradient_scale) {
        step_.set_global_balance(std::move(sum), gradient_scale);
    }
    void all_reduce_gradients(dist::communicator& comm) {
        check_reaches(comm, "all_reduce_gradients");
        const std::size_t n = has_adapter ? adapter_host_.size() : host_.size(); // the gradients of what trains
        comm.all_reduce_sum(std::span<float>{step_.gradient(step_.trainable_layout().front().name), n}).wait();
    }

private:
    // The flat blocks of the base's and the adapter's parameters (from their first slices: the layouts' offsets).
    float* base_block() { return step_.parameter(step_.layout().front().name); }
    float* adapter_block() { return step_.parameter(step_.adapter_layout().front().name); }
    static std::size_t block_size(const std::vector<parameter_slice>& layout) {
        std::size_t total = 0;
        for (const parameter_slice& s : layout)
            total = std::max(total, s.offset + s.size());
        return total;
    }
    std::size_t nf4_index(index_t l, int t) const {
        check(l >= 0 && l < config_.n_layers && t >= 0 && t < lora_target_count,
              "gpu::device_decoder: no NF4 projection there");
        return std::size_t(l) * lora_target_count + std::size_t(t);
    }
    void check_reaches(const dist::communicator& comm, const char* who) const {
        constexpr bool on_device = !std::same_as<Ex, cpu_ops>;
        check(comm.size() == 1 || comm.takes_device_memory() == on_device, [&] {
            std::string m = "gpu::device_decoder::";
            m += who;
            m += ": the communicator (" + comm.backend() + ") takes ";
            m += on_device ? "host memory, and this model's memory is the GPU's: give the trainer a "
                             "gpu::nccl_communicator (trainer_options::device_communicator, cuda/nccl_communicator.hpp)"
                           : "device memory, and this model's memory is the host's (gpu::cpu_ops): use a host "
                             "communicator (dist::world())";
            return m;
        });
    }
    static decoder_plan_options step_options(const device_decoder_options& o) {
        decoder_plan_options p;
        p.batch = o.batch, p.time = o.time, p.logits_rows = o.logits_rows, p.bf16_weights = o.bf16;
        p.checkpointing = o.checkpointing, p.attention = o.attention, p.lora = lora;
        return p;
    }
    const parameter_entry& entry(const std::string& name) const {
        for (const parameter_entry& e : entries_)
            if (e.name == name) return e;
        fail("gpu::device_decoder: no parameter named '" + name + "'");
    }
    void check_batch(const char* who, cview<token_t> ids, cview<token_t> targets) const {
        check(ids.shape == targets.shape && ids.shape.rank == 2 && ids.dim(0) == options_.batch &&
                  ids.dim(1) == options_.time,
              [&] {
                  return std::string("gpu::device_decoder::") + who + ": ids and targets must be (" +
                         std::to_string(options_.batch) + ", " + std::to_string(options_.time) + ")";
              });
    }
    static index_t count(cview<token_t> targets) {
        index_t n = 0;
        for (token_t t : targets)
            n += t != ignore_index;
        return n;
    }

    model_config config_;
    device_decoder_options options_;
    decoder_plan_options step_options_;
    arena_plan plan_;
    step_memory<Ex> memory_;
    decoder_step<Ex> step_;                  // after plan_ and memory_: it keeps references to them
    std::vector<float> host_, adapter_host_; // the host mirror: the base's block, the adapter's
    std::vector<parameter_entry> entries_;
    std::vector<quantized_entry> quantized_entries_;
    std::vector<nf4_tensor> quantized_;
    index_t counted_ = 0;
    std::vector<token_t> padded_ids_, padded_targets_;
    std::vector<index_t> padded_docs_;
};

// AdamW over a device_decoder's flat blocks (decoder_step::adamw_step: optim/adamw.hpp's update and decay rule), an
// Optimizer for tl::trainer and checkpoints. Like tl::adamw it has no state before its first step: a checkpoint of
// step 0 holds no moments, one of a later step all of them. With an adapter only the adapter has moments (the
// entries that train, as tl::adamw keeps state for those only).
template <class Ex, LoraAdapter A>
class device_adamw {
public:
    explicit device_adamw(device_decoder<Ex, A>& model, adamw_options options = {})
        : model_(&model), options_(options) {}

    void step(double lr) {
        model_->step().adamw_step(lr, options_);
        has_state_ = true;
    }
    long long steps() const { return model_->step().adamw_steps(); }
    void set_steps(long long t) { model_->step().set_adamw_steps(t); }
    const adamw_options& options() const { return options_; }

    // f(name, cview<float>) for each moment, copied to the host (saving).
    template <class F>
    void visit_state(F&& f) const {
        if (!has_state_) return;
        std::vector<float> host;
        for (const parameter_entry& e : model_->parameter_entries()) {
            if (!e.trainable) continue;
            host.resize(std::size_t(e.value.numel()));
            for (int kind = 0; kind < 2; ++kind) {
                model_->executor().download(host.data(), moment(kind, e.name), host.size() * sizeof(float));
                f(kind_name(kind) + e.name, cview<float>{host.data(), e.value.shape});
            }
        }
    }
    // f(name, tensor_view<float>) fills each moment on the host, which then goes to the device (loading).
    template <class F>
    void visit_state(F&& f) {
        if (!has_state_) return;
        std::vector<float> host;
        for (const parameter_entry& e : model_->parameter_entries()) {
            if (!e.trainable) continue;
            host.resize(std::size_t(e.value.numel()));
            for (int kind = 0; kind < 2; ++kind) {
                f(kind_name(kind) + e.name, tensor_view<float>{host.data(), e.value.shape});
                model_->executor().upload(moment(kind, e.name), host.data(), host.size() * sizeof(float));
            }
        }
    }
    // Zero moments; the state exists (visit_state visits it) when the checkpoint holds moments.
    template <class Has>
    void reset_state(Has&& has) {
        has_state_ = false;
        for (const parameter_entry& e : model_->parameter_entries()) {
            if (!e.trainable) continue;
            for (int kind = 0; kind < 2; ++kind)
                model_->executor().zero(moment(kind, e.name), std::size_t(e.value.numel()) * sizeof(float));
            has_state_ = has_state_ || has(kind_name(0) + e.name);
        }
    }

private:
    static std::string kind_name(int kind) { return kind == 0 ? "exp_avg." : "exp_avg_sq."; }
    float* moment(int kind, const std::string& name) const {
        return kind == 0 ? model_->step().first_moment(name) : model_->step().second_moment(name);
    }

    device_decoder<Ex, A>* model_;
    adamw_options options_;
    bool has_state_ = false;
};

} // namespace tl::gpu
