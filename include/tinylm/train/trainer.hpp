// tinylm/train/trainer.hpp: the one training loop: pretraining (01, 04, 05), SFT and LoRA (07, 08).
//
//   tl::trainer t(model, source, validation, options);         // AdamW with options.adamw
//   tl::trainer t(model, source, tl::sgd(model), validation, options); // any Optimizer (optim/optimizer.hpp)
//   t.run();
//
// Each step: grad_accum micro-batches of (batch_size, seq_len) from a BatchSource (train/batches.hpp: token
// windows, or rows of packed documents with doc_start, e.g. SFT rows whose targets are -100 outside the
// assistant's replies), each backward scaled by 1 / grad_accum; global-norm clipping; the optimizer at the
// scheduled rate (linear warmup, then cosine/linear/constant decay). Every eval_every steps a validation loss:
// the given callable (std::function<double()>), or the mean loss over the first eval_windows windows of
// validation tokens. Every checkpoint_every steps a checkpoint (train/checkpoint.hpp: model, optimizer state,
// data position, LoRA dropout state; an adapter model also in the PEFT format) in out_dir/checkpoint, which the
// next run resumes from, so an interrupted run, even one killed with SIGKILL, continues bit-identically.
// Ctrl-C (SIGINT) finishes the current step, saves and returns `interrupted`. A non-finite loss or gradient norm
// stops the run with an error that points at the last good checkpoint; nothing is saved over it.
//
// Data parallel (docs/distributed.md): under `mpirun -np N` (tinylm::mpi) the same program trains on N ranks of
// options.communicator (default dist::world(); a world of one changes nothing). batch_size is the global batch:
// every rank draws the whole batch from its source (so the batches and their order do not depend on N) and
// trains on its own rows (dist::part_of: contiguous, in rank order). Rank 0's weights go to every rank at the
// start; each micro-batch's loss is weighted by the rank's share of the global count of target tokens, so the
// gradient summed over ranks (dist::gradient_buckets, in the last micro-batch only: each bucket's all-reduce
// starts inside its backward as soon as the bucket is final, through the decoder's backward hook) is that of one
// process training the whole batch; experts sum their balancing statistics over the ranks (the global batch's
// balancing loss) and LoRA draws the dropout masks of the rank's rows of the global batch; clipping, the
// optimizer step and the divergence check then run on identical data on every rank. Validation windows are split over
// the ranks. Rank 0 alone calls the hooks (on_step, on_eval) and writes checkpoints; every rank resumes from the same
// checkpoint folder (a shared file system). A run whose ranks disagree on settings or step refuses to start; an error
// on one rank ends the job (communicator::abort). options.zero (AdamW only): ZeRO-1 (dist/zero.hpp): gradients
// reduce-scattered, each rank steps AdamW on its 1/N of the parameters and keeps only that part of the moments, the
// updated parts all-gathered; checkpoints gather the moments into the usual full form, so a run resumes with any N,
// with or without zero.
//
// A device-resident model (DeviceResidentModel below: gpu::device_decoder, cuda/device_decoder.hpp) trains in the
// same loop: its loss and gradient come in one call, its norm, clipping and optimizer (gpu::device_adamw) run where
// its parameters live, and its host mirror of the parameters is what checkpoints write and read (docs/gpu.md).
// Distributed, it is built for the rank's rows (dist::part_of of batch_size); rank 0's parameters and the gradient
// sum go through options.device_communicator, in the model's memory (gpu::nccl_communicator on GPUs), as one
// collective each: the micro-batch's weight (the rank's share of the global targets) is known before its backward,
// which runs with its loss, so the summed gradient is one process's over the whole batch, as on the CPU; no
// overlap with backward (one all-reduce of the flat gradient block after the last micro-batch) and no ZeRO. With
// experts, its step calls a hook between its forward and its loss that sums the balancing statistics over the ranks
// (through the host communicator), so its balancing loss is the global batch's, as tl::decoder's.
#pragma once

#include <tinylm/core/memory_budget.hpp>
#include <tinylm/dist/communicator.hpp>
#include <tinylm/dist/data_parallel.hpp>
#include <tinylm/dist/zero.hpp>

#include <tinylm/backend/default.hpp>
#include <tinylm/backend/precision.hpp>
#include <tinylm/io/model_card.hpp>
#include <tinylm/model/backward_hook.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/optimizer.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/train/batches.hpp>
#include <tinylm/train/checkpoint.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <csignal>
#include <cstdio>
#include <functional>
#include <optional>
#include <span>
#include <type_traits>

namespace tl {

struct trainer_options {
    index_t batch_size = 8;     // sequences per micro-batch
    index_t seq_len = 64;       // tokens per sequence
    int grad_accum = 1;         // micro-batches per optimizer step
    long long max_steps = 1000; // optimizer steps; the learning-rate schedule spans them
    long long stop_at = 0;      // pause after this step (validation, checkpoint); 0: run to max_steps
    double peak_lr = 3e-4;
    double min_lr = 3e-5;
    long long warmup_steps = 100;
    decay_kind decay = decay_kind::cosine;
    adamw_options adamw{};               // when the trainer builds its AdamW itself
    double clip = 1.0;                   // global gradient norm limit; 0 turns clipping off
    int eval_every = 100;                // steps between validation passes (and at the end); 0: only at the end
    index_t eval_windows = 32;           // validation windows of seq_len tokens (with validation tokens)
    int checkpoint_every = 100;          // steps between checkpoints (and at the end); 0: only at the end
    fs::path out_dir{};                  // checkpoints go to out_dir / "checkpoint"; empty: none
    bool resume = true;                  // continue from out_dir / "checkpoint" when it exists
    special_token_ids special{};         // written into config.json
    bool gradient_checkpointing = false; // recompute each block's forward in backward (decoder.hpp)
    // Written into every checkpoint when set: generation_config.json with these sampling defaults (bos/eos/pad ids
    // from `special`), and a README.md model card with the run's steps and losses (io/model_card.hpp).
    std::optional<hf_generation_config> generation{};
    std::optional<model_card_info> card{};
    // The processes training together (dist/communicator.hpp); nullptr: dist::world().
    dist::communicator* communicator = nullptr;
    std::size_t bucket_bytes = dist::gradient_buckets::default_bucket_bytes; // gradient all-reduce buckets
    // Start each bucket's all-reduce inside the step's last backward, as soon as its gradients are final (the
    // model's backward hook: decoders), so that communication overlaps the rest of backward; off: after backward.
    bool overlap_reduce = true;
    bool zero = false; // ZeRO-1 when distributed: AdamW's moments sharded over the ranks
    // A device-resident model's collectives over its own memory (rank 0's parameters at the start, the gradient
    // block every step): a gpu::nccl_communicator over the ranks of `communicator` for a model on GPUs; nullptr:
    // `communicator` itself, which serves a model whose memory is the host's (gpu::cpu_ops). Unused otherwise.
    dist::communicator* device_communicator = nullptr;
    // bf16: the model's matrix products in bf16 with f32 accumulation while run() runs (docs/precision.md); needs
    // the onednn_cpu backend on a CPU with AVX-512 BF16 or AMX, and refuses with the reason elsewhere.
    precision matmul_precision = precision::f32;
};

struct step_report {
    long long step = 0, max_steps = 0; // step counts from 1
    double loss = 0, lr = 0, grad_norm = 0;
    double tokens_per_second = 0, elapsed_seconds = 0;
    long long counted_targets = 0; // targets the step's loss averaged (fewer than the tokens with label masks)
};

// paused: stopped at stop_at before max_steps; a trainer with a later stop_at continues from the checkpoint on
// the same schedule (staged runs: compare candidates early, then continue the best).
enum class train_outcome { finished, paused, interrupted };

namespace detail {
#ifdef TINYLM_HAS_ONEDNN
template <class Model>
concept computes_with_onednn = requires {
    typename Model::backend;
}
&&std::same_as<typename Model::backend, onednn_cpu>;
#endif
} // namespace detail

// The model's matrix products in `p` while the returned optional holds its value: a scoped_cpu_precision for
// bf16, nothing for f32 (reset() ends the scope early). The trainer holds one for the duration of run(); a training
// loop of its own holds one too (examples/09_retrieval). bf16 needs a model computing with onednn_cpu, and refuses with
// the reason elsewhere.
template <class Model>
auto scoped_matmul_precision(precision p) {
#ifdef TINYLM_HAS_ONEDNN
    if constexpr (detail::computes_with_onednn<Model>) {
        if (p == precision::f32) return std::optional<scoped_cpu_precision>();
        return std::optional<scoped_cpu_precision>(std::in_place, p);
    } else
#endif
    {
        check(p == precision::f32, "matmul_precision bf16 needs the onednn_cpu backend (tinylm::onednn, "
                                   "the default backend when oneDNN is enabled); this model computes with another");
        return std::optional<int>(); // nothing to scope
    }
}

namespace detail {
inline std::atomic<int> interrupt_requests{0};
// The optimizer a trainer builds when none is given: AdamW, or the model's own (a device model's moments live
// beside its parameters: gpu::device_adamw).
template <class Model>
struct default_optimizer_of {
    using type = adamw;
};
template <class Model>
requires requires { typename Model::optimizer_type; }
struct default_optimizer_of<Model> {
    using type = typename Model::optimizer_type;
};
extern "C" inline void on_interrupt(int) { interrupt_requests.store(1); }
} // namespace detail

// A model whose parameters, gradients and optimizer state live in an accelerator's memory (gpu::device_decoder,
// cuda/device_decoder.hpp). The trainer then asks it for the micro-batch's loss and gradient in one call, and for
// the gradient norm and clipping; its parameter_entries() are a host mirror, which the trainer refreshes before a
// checkpoint is written (download_parameters) and sends back after one is read (upload_parameters), so that the
// checkpoint files are a CPU run's. Distributed, it must be a DataParallelDeviceModel (below).
template <class Model>
concept DeviceResidentModel = requires(Model& m, cview<token_t> ids, cview<index_t> doc_start, double x) {
    { m.loss_and_backward(ids, ids, x, doc_start) } -> std::convertible_to<float>;
    { m.grad_norm() } -> std::convertible_to<double>;
    { m.clip_grad_norm(x) } -> std::convertible_to<double>;
    m.download_parameters();
    m.upload_parameters();
};
// A device-resident model that trains on several ranks: it broadcasts its parameters and sums its gradients in its
// own memory, over a communicator that takes it (trainer_options::device_communicator). Another device model
// trains in one process only.
template <class Model>
concept DataParallelDeviceModel = DeviceResidentModel<Model> && requires(Model& m, dist::communicator& comm) {
    m.broadcast_parameters(comm, 0);
    m.all_reduce_gradients(comm);
};

// A device-resident model with experts that trains on several ranks: its step hands each forward's balancing
// statistics to a hook that sums them over the ranks (gpu::device_decoder::set_global_balance), so its balancing
// loss is the global batch's, as tl::decoder's (use_global_balance). Without it, a device model with experts trains
// in one process only.
template <class Model>
concept GlobalBalanceDeviceModel = DataParallelDeviceModel<Model> &&
    requires(Model& m, std::function<void(std::span<double>)> sum, double x) {
    m.set_global_balance(sum, x);
};

template <class Model, BatchSource Source, Optimizer Opt = typename detail::default_optimizer_of<Model>::type>
class trainer {
public:
    using validation_fn = std::function<double()>;

    // Validation on the first eval_windows windows of seq_len tokens of `validation_tokens`.
    trainer(Model& model, Source& train, std::vector<token_t> validation_tokens, trainer_options options)
        : trainer(model, train, default_optimizer(model, options), validation_fn{}, std::move(options)) {
        std::tie(val_ids_, val_targets_) =
            validation_windows(validation_tokens, options_.seq_len, options_.eval_windows);
    }
    // Validation by `validate` (e.g. the loss over held-out SFT rows); empty: none (NaN).
    trainer(Model& model, Source& train, validation_fn validate, trainer_options options)
        : trainer(model, train, default_optimizer(model, options), std::move(validate), std::move(options)) {}
    // Any optimizer over model.parameter_entries(); options.adamw is then unused.
    trainer(Model& model, Source& train, Opt optimizer, validation_fn validate, trainer_options options)
        : model_(model), train_(train), options_(std::move(options)),
          comm_(options_.communicator ? *options_.communicator : dist::world()), opt_(std::move(optimizer)),
          validate_(std::move(validate)), schedule_{options_.peak_lr, options_.min_lr, options_.warmup_steps,
                                                    options_.max_steps, options_.decay},
          rows_(dist::part_of(std::size_t(options_.batch_size), comm_.rank(), comm_.size())),
          ids_(batch_tokens(options_)), targets_(ids_.size()), buckets_(options_.bucket_bytes) {
        check(options_.batch_size >= comm_.size(), [&] {
            return "trainer: a global batch_size of " + std::to_string(options_.batch_size) +
                   " cannot give a row to each of " + std::to_string(comm_.size()) + " ranks";
        });
        if constexpr (DocumentBatchSource<Source>) doc_start_.resize(ids_.size());
    }

    // Hooks (all optional).
    std::function<void(const step_report&)> on_step;                   // after every optimizer step
    std::function<void(long long step, double val_loss)> on_eval;      // after every validation pass
    std::function<void(const fs::path& staged_dir)> add_to_checkpoint; // extra files, e.g. tokenizer.json

    fs::path checkpoint_dir() const { return options_.out_dir.empty() ? fs::path{} : options_.out_dir / "checkpoint"; }
    const training_state& state() const { return state_; }
    Opt& optimizer() { return opt_; }
    dist::communicator& communicator() { return comm_; }
    // The collectives over a device-resident model's memory: options.device_communicator, or communicator().
    dist::communicator& device_communicator() {
        return options_.device_communicator ? *options_.device_communicator : comm_;
    }
    // The gradient buckets of the data-parallel reduction, with what the last step did (bucket_count(),
    // started_during_backward()).
    const dist::gradient_buckets& gradient_buckets() const { return buckets_; }

    // The validation callable's loss, or the mean loss over the validation windows (NaN when there are none).
    // Distributed, a collective: the callable runs on every rank and rank 0's value counts; the windows are
    // dealt out to the ranks batch by batch.
    double evaluate() {
        if (validate_) {
            double v = validate_();
            comm_.broadcast_values(std::span<double>(&v, 1), 0);
            return v;
        }
        const index_t windows = index_t(val_ids_.size()) / options_.seq_len;
        if (windows == 0) return NAN;
        double total = 0;
        double counted = 0;
        // Windows per call: a batch; a device model holds only the rank's rows (the smallest share when they differ).
        const index_t chunk = DeviceResidentModel<Model> ? options_.batch_size / comm_.size() : options_.batch_size;
        const index_t stride = chunk * comm_.size();
        for (index_t w0 = chunk * comm_.rank(); w0 < windows; w0 += stride) {
            const index_t n = std::min(chunk, windows - w0);
            const shape s{n, options_.seq_len};
            const float loss = model_.eval_loss(cview<token_t>{val_ids_.data() + w0 * options_.seq_len, s},
                                                cview<token_t>{val_targets_.data() + w0 * options_.seq_len, s});
            total += double(loss) * double(model_.counted_targets());
            counted += double(model_.counted_targets());
        }
        if (comm_.size() > 1) {
            double sums[2] = {total, counted};
            comm_.all_reduce_sum(std::span<double>(sums, 2)).wait();
            total = sums[0];
            counted = sums[1];
        }
        return total / counted;
    }

    // Continues from out_dir/checkpoint when resuming is on and one exists (once; run() calls it too).
    // Returns the step the run continues from.
    long long restore() {
        // checkpoint.old when a save was killed between its renames; a leftover checkpoint.tmp is never read.
        const fs::path from =
            checkpoint_dir().empty() ? fs::path{} : newest_complete_folder(checkpoint_dir(), "trainer_state.json");
        setup_zero();
        if (!restored_ && options_.resume && !from.empty()) {
            state_ = load_training_checkpoint(model_, opt_, from);
            if constexpr (DeviceResidentModel<Model>) model_.upload_parameters(); // read into the host mirror
            check_resume_position(from);
            train_.seek(state_.data_position);
            if (zero_) { // each rank keeps its part of the moments
                zero_->scatter_state(opt_, *zero_opt_);
                opt_.reset_state([](const std::string&) { return false; });
            }
            // A checkpoint of N ranks records N (save()); resuming with another number is fine and said.
            const int written_by = state_.history.value("world_size", 1);
            if (written_by != comm_.size() && comm_.is_root())
                std::fprintf(stderr,
                             "tinylm: trainer: resuming a checkpoint of %d rank(s) with %d: the global batch and the "
                             "sample order are unchanged%s\n",
                             written_by, comm_.size(), zero_ ? "; AdamW's moments are split anew over the ranks" : "");
        }
        restored_ = true;
        return state_.step;
    }

    train_outcome run() {
        [[maybe_unused]] const auto products = scoped_matmul_precision<Model>(options_.matmul_precision);
        restore();
        const bool distributed = comm_.size() > 1;
        if constexpr (DeviceResidentModel<Model> && !DataParallelDeviceModel<Model>)
            check(!distributed, [&] {
                return "trainer: this device model trains in one process (it has no broadcast_parameters and "
                       "all_reduce_gradients); this run has " +
                       std::to_string(comm_.size()) + " ranks";
            });
        // Experts on several ranks: tl::decoder's balancing loss is the global batch's (use_global_balance). A device
        // model's loss and backward run in one call, so it sums the statistics through a hook installed here, between
        // its forward and its loss (GlobalBalanceDeviceModel); one without that hook would balance each rank's rows
        // alone and train another model than one process does.
        if constexpr (DeviceResidentModel<Model> && !GlobalBalanceDeviceModel<Model> &&
                      requires { model_.config().moe.n_experts; })
            check(!distributed || model_.config().moe.n_experts == 0, [&] {
                return "trainer: a device model with experts trains in one process (it cannot sum its balancing "
                       "statistics over the ranks, so its balancing loss would be each rank's, not the global batch's "
                       "as tl::decoder's); this run has " +
                       std::to_string(comm_.size()) + " ranks";
            });
        if constexpr (DataParallelDeviceModel<Model>)
            check(device_communicator().size() == comm_.size() && device_communicator().rank() == comm_.rank(), [&] {
                return "trainer: the device communicator (" + device_communicator().backend() + ", rank " +
                       std::to_string(device_communicator().rank()) + " of " +
                       std::to_string(device_communicator().size()) + ") is not over the trainer's ranks (rank " +
                       std::to_string(comm_.rank()) + " of " + std::to_string(comm_.size()) +
                       "): make it from the trainer's communicator";
            });
        if (distributed) join_ranks();
        const index_t rows = index_t(rows_.count()), row0 = index_t(rows_.begin);
        model_.set_gradient_checkpointing(options_.gradient_checkpointing);
        model_.plan(rows, options_.seq_len);
        // LoRA dropout: the masks of this rank's rows are those one process would draw for them.
        if constexpr (requires { model_.set_dropout_row_offset(index_t{}); })
            model_.set_dropout_row_offset(row0 * options_.seq_len);
        detail::interrupt_requests.store(0);
        const auto previous = std::signal(SIGINT, detail::on_interrupt);
        struct restore {
            decltype(previous) handler;
            ~restore() { std::signal(SIGINT, handler); }
        } restore_handler{previous};
        // Experts on a device model, distributed: each forward's balancing statistics summed over the ranks (host
        // values: comm_, not the device communicator), the balancing gradient weighted by 1 per micro-batch on every
        // rank (as use_global_balance's); one process installs nothing, so its step is what it always was.
        struct global_balance {
            Model& model;
            bool installed = false;
            ~global_balance() {
                if constexpr (GlobalBalanceDeviceModel<Model>)
                    if (installed) model.set_global_balance({}, 1.0);
            }
        } balance_hook{model_};
        if constexpr (GlobalBalanceDeviceModel<Model>)
            if (distributed) {
                model_.set_global_balance([this](std::span<double> stats) { comm_.all_reduce_sum(stats).wait(); },
                                          1.0 / options_.grad_accum);
                balance_hook.installed = true;
            }

        const auto start = std::chrono::steady_clock::now();
        const shape batch{options_.batch_size, options_.seq_len}, mine{rows, options_.seq_len};
        const std::size_t offset = std::size_t(row0 * options_.seq_len);
        const long long stop =
            options_.stop_at > 0 ? std::min(options_.stop_at, options_.max_steps) : options_.max_steps;
        // Per micro-batch: the rank's loss times its target count, and the global count; then the interrupt flag.
        std::vector<double> sums(std::size_t(2 * options_.grad_accum + 1));
        try {
            while (state_.step < stop) {
                const auto step_start = std::chrono::steady_clock::now();
                model_.zero_grad();
                for (int micro = 0; micro < options_.grad_accum; ++micro) {
                    const tensor_view<token_t> ids{ids_.data(), batch}, targets{targets_.data(), batch};
                    const tensor_view<token_t> my_ids{ids_.data() + offset, mine},
                        my_targets{targets_.data() + offset, mine};
                    if constexpr (DocumentBatchSource<Source>)
                        train_.next(ids, targets, tensor_view<index_t>{doc_start_.data(), batch});
                    else
                        train_.next(ids, targets);
                    // The rank's share of the micro-batch's targets (1 in a world of one, so nothing changes); a
                    // device model's backward runs with its loss, so it needs the share before.
                    const index_t global = distributed ? count_targets(targets) : 0;
                    auto share_of = [&](index_t local) {
                        return !distributed ? 1.0 : global > 0 ? double(local) / double(global) : 0.0;
                    };
                    const double scale =
                        DeviceResidentModel<Model> ? share_of(count_targets(my_targets)) / options_.grad_accum : 0.0;
                    float loss = 0;
                    if constexpr (DocumentBatchSource<Source>)
                        loss = micro_batch_loss(scale, my_ids, my_targets,
                                                cview<index_t>{doc_start_.data() + offset, mine});
                    else
                        loss = micro_batch_loss(scale, my_ids, my_targets);
                    const index_t local = model_.counted_targets();
                    const double share = share_of(local);
                    // Experts: the balancing loss of the global micro-batch, weighted by 1 on every rank (below).
                    if (distributed) loss = float(use_global_balance(loss));
                    sums[std::size_t(2 * micro)] = double(loss) * double(local);
                    // Rank 0 alone adds the global count (the same on every rank), so the sum below is exact.
                    sums[std::size_t(2 * micro + 1)] = comm_.is_root() ? double(distributed ? global : local) : 0.0;
                    if constexpr (!DeviceResidentModel<Model>) // its backward ran with the loss
                        backward(share / options_.grad_accum, 1.0 / options_.grad_accum,
                                 distributed && micro + 1 == options_.grad_accum && overlaps());
                }
                sums.back() = detail::interrupt_requests.load() != 0 ? 1.0 : 0.0;
                const auto& entries = model_.parameter_entries();
                double norm = 0;
                if (distributed) {
                    dist::pending totals = comm_.all_reduce_sum(std::span<double>(sums));
                    if constexpr (DataParallelDeviceModel<Model>) {
                        model_.all_reduce_gradients(device_communicator()); // one collective, in its memory
                    } else if constexpr (DeviceResidentModel<Model>) {
                        fail("trainer: unreachable: run() refuses several ranks for this device model");
                    } else if (zero_) {
                        check(zero_->fits(entries), "trainer: with zero, what trains cannot change during a run");
                        zero_->reduce_scatter_gradients(comm_, entries);
                        norm = zero_->global_grad_norm(comm_);
                        if (options_.clip > 0 && norm > options_.clip)
                            zero_->scale_gradients(float(options_.clip / (norm + 1e-6))); // as clip_grad_norm
                    } else if (overlaps()) {
                        buckets_.finish(); // started inside backward
                    } else {
                        buckets_.reduce(comm_, entries);
                    }
                    totals.wait();
                }
                if constexpr (DeviceResidentModel<Model>)
                    norm = options_.clip > 0 ? model_.clip_grad_norm(options_.clip) : model_.grad_norm();
                else if (!zero_)
                    norm = options_.clip > 0 ? clip_grad_norm(entries, options_.clip) : grad_norm(entries);
                double loss = 0;
                long long counted = 0;
                for (int micro = 0; micro < options_.grad_accum; ++micro) {
                    const double global = sums[std::size_t(2 * micro + 1)];
                    loss += global > 0 ? sums[std::size_t(2 * micro)] / global : 0.0;
                    counted += (long long)std::llround(global);
                }
                loss /= options_.grad_accum;
                if (!std::isfinite(loss) || !std::isfinite(norm)) { // the same values on every rank
                    std::string message = "tinylm: trainer: training diverged at step " +
                                          std::to_string(state_.step + 1) + " (loss " + std::to_string(loss);
                    message += ", gradient norm " + std::to_string(norm) + "); ";
                    message += checkpoint_dir().empty() ? std::string("no checkpoint was configured")
                                                        : "the last good checkpoint is " + checkpoint_dir().string();
                    message += ". Lower the learning rate or check the data.";
                    throw dist::collective_error(message);
                }
                const double lr = schedule_.lr_at(state_.step);
                if (zero_) {
                    zero_opt_->step(lr);
                    zero_->all_gather_values(comm_, entries);
                } else {
                    opt_.step(lr);
                }
                ++state_.step;
                state_.data_position = train_.position();
                state_.history["last_train_loss"] = loss;

                const auto now = std::chrono::steady_clock::now();
                if (on_step && comm_.is_root()) {
                    const double secs = std::chrono::duration<double>(now - step_start).count();
                    on_step({state_.step, options_.max_steps, loss, lr, norm,
                             double(options_.grad_accum * options_.batch_size * options_.seq_len) / secs,
                             std::chrono::duration<double>(now - start).count(), counted});
                }
                const bool last = state_.step == stop; // validated and saved like the end of the run
                if ((options_.eval_every > 0 && state_.step % options_.eval_every == 0) || last) {
                    const double val = evaluate();
                    state_.history["val_loss"].push_back({state_.step, val});
                    if (on_eval && comm_.is_root()) on_eval(state_.step, val);
                    model_.plan(rows, options_.seq_len);
                }
                // Distributed, the flag summed above, so every rank stops at the same step.
                const bool interrupted = distributed ? sums.back() > 0 : detail::interrupt_requests.load() != 0;
                if ((options_.checkpoint_every > 0 && state_.step % options_.checkpoint_every == 0) || last ||
                    interrupted)
                    save();
                if (interrupted) return train_outcome::interrupted;
            }
        } catch (const dist::collective_error&) {
            throw;
        } catch (const std::exception& e) {
            if (distributed) comm_.abort(e.what()); // the other ranks would wait for this one forever
            throw;
        }
        return state_.step < options_.max_steps ? train_outcome::paused : train_outcome::finished;
    }

    // Rank 0 writes; the others have the same weights and optimizer state. A collective: every rank calls it at the
    // same step and waits for the write; with zero the moments are gathered into the full optimizer for the write,
    // then dropped again.
    void save() {
        if (checkpoint_dir().empty()) return;
        if (comm_.size() > 1)
            state_.history["world_size"] = comm_.size();
        else
            state_.history.erase("world_size"); // a checkpoint of one process stays as it always was
        if (zero_) zero_->gather_state(comm_, *zero_opt_, opt_, model_.parameter_entries(), {"exp_avg", "exp_avg_sq"});
        struct drop_full_state {
            trainer& t;
            ~drop_full_state() {
                if (t.zero_) t.opt_.reset_state([](const std::string&) { return false; });
            }
        } drop{*this};
        if constexpr (DeviceResidentModel<Model>) model_.download_parameters(); // the host mirror the files hold
        if (comm_.is_root()) {
            save_training_checkpoint(
                model_, opt_, state_, checkpoint_dir(), options_.special, [&](const fs::path& stage) {
                    if (add_to_checkpoint) add_to_checkpoint(stage);
                    if constexpr (!requires { requires Model::bert_layout; }) { // decoders: what generate() reads
                        hf_generation_config g = options_.generation.value_or(hf_generation_config{});
                        if (options_.generation) {
                            g.bos_token_id = options_.special.bos;
                            g.eos_token_ids.clear();
                            if (options_.special.eos >= 0) g.eos_token_ids.push_back(options_.special.eos);
                            g.pad_token_id = options_.special.pad;
                            write_generation_config(stage, g);
                        }
                        if (options_.card) write_model_card(stage, g);
                    }
                });
        }
        // A checkpoint is complete for every rank when save() returns: no rank may look for it (a restart in the
        // same job) before rank 0 has swapped it in. An error on rank 0 aborts the job, so no rank waits forever.
        comm_.barrier();
    }

private:
    void setup_zero() {
        if (!options_.zero || comm_.size() == 1 || zero_) return;
        if constexpr (std::is_same_v<Opt, adamw>) {
            zero_.emplace(comm_, model_.parameter_entries());
            zero_opt_.emplace(zero_->shard_entries(), opt_.options());
        } else {
            fail("trainer: zero (ZeRO-1) shards AdamW's moments; this trainer's optimizer is another");
        }
    }

    // Whether the step's last backward starts the gradient all-reduce (options.overlap_reduce, a model with a backward
    // hook, no ZeRO: its reduce-scatter needs every gradient at once).
    bool overlaps() const {
        if constexpr (HookedBackward<Model>)
            return options_.overlap_reduce && !zero_;
        else
            return false;
    }

    // The micro-batch's loss: model.loss, or on a device model the loss and its gradient (scaled by `scale`: the
    // rank's share of the targets over grad_accum) in one pass, since its LM head interleaves them.
    template <class Ids, class... DocStart>
    float micro_batch_loss([[maybe_unused]] double scale, const Ids& ids, const Ids& targets,
                           const DocStart&... doc_start) {
        if constexpr (DeviceResidentModel<Model>)
            return model_.loss_and_backward(ids, targets, scale, doc_start...);
        else
            return model_.loss(ids, targets, doc_start...);
    }

    // model.backward(scale); experts: the balancing loss's gradient scaled by aux_scale; `overlap`: the gradient
    // all-reduce started inside it (overlaps()).
    void backward(double scale, double aux_scale, bool overlap) {
        if constexpr (HookedBackward<Model>) {
            if (!overlap) return model_.backward(scale, {}, aux_scale);
            const auto& entries = model_.parameter_entries();
            buckets_.begin(comm_, entries, [&](const parameter_entry& e) { return model_.backward_stage(e.name); });
            model_.backward(
                scale, [&](index_t stage) { buckets_.ready(stage); }, aux_scale);
        } else {
            model_.backward(scale);
        }
    }

    // Experts, distributed: the balancing loss over the global micro-batch (its statistics summed over the ranks,
    // decoder::set_balance_statistics), as one process training the whole batch has it; its gradient is then
    // weighted by 1 on every rank, not by the rank's share of the targets (each rank's rows get their part of the
    // one global loss). Returns `loss` (the rank's cross-entropy plus the balancing loss) with the global balancing
    // loss in place of the rank's.
    double use_global_balance(double loss) {
        if constexpr (requires { requires Model::is_moe; }) {
            balance_stats_ = model_.balance_statistics();
            const double local_aux = model_.aux_loss();
            comm_.all_reduce_sum(std::span<double>(balance_stats_)).wait();
            model_.set_balance_statistics(balance_stats_);
            return loss + model_.config().moe.aux_loss_weight * (model_.aux_loss() - local_aux);
        } else {
            return loss;
        }
    }

    static index_t count_targets(cview<token_t> targets) {
        index_t n = 0;
        for (token_t t : targets)
            n += t != ignore_index;
        return n;
    }

    // Distributed start: every rank must run the same settings on the same model from the same step (a rank that
    // missed the checkpoint folder would not); then rank 0's weights go to all.
    void join_ranks() {
        std::string settings; // built with += (GCC 12 warns on "literal" + std::string temporaries)
        auto add = [&](const std::string& piece) {
            settings += piece;
            settings += ' ';
        };
        add(std::to_string(options_.batch_size));
        add(std::to_string(options_.seq_len));
        for (double v :
             {double(options_.grad_accum), double(options_.max_steps), double(options_.stop_at), options_.peak_lr,
              options_.min_lr, double(options_.warmup_steps), double(int(options_.decay)), options_.clip,
              double(options_.eval_every), double(options_.eval_windows), double(options_.checkpoint_every),
              double(options_.gradient_checkpointing), double(val_ids_.size()), double(validate_ ? 1 : 0),
              double(options_.zero), double(options_.overlap_reduce)}) // the order of the collectives depends on it
            add(std::to_string(v));
        for (const parameter_entry& e : model_.parameter_entries()) {
            add(e.name);
            add(std::to_string(e.value.numel()));
            add(trains(e) ? "trains" : "frozen");
        }
        dist::check_same_on_all_ranks(comm_, dist::fingerprint(settings),
                                      "the training settings or the model (batch, schedule, parameters)");
        std::string position;
        for (long long v : {state_.step, (long long)state_.data_position, (long long)opt_.steps()})
            position += std::to_string(v) + ',';
        std::string where = "the step to resume from (is ";
        where += checkpoint_dir().string();
        where += " on a file system every rank sees?)";
        dist::check_same_on_all_ranks(comm_, dist::fingerprint(position), where);
        if constexpr (DataParallelDeviceModel<Model>)
            model_.broadcast_parameters(device_communicator(), 0); // in its memory; the host mirror follows
        else
            dist::broadcast_parameters(comm_, model_.parameter_entries(), 0);
    }

    void write_model_card(const fs::path& stage, const hf_generation_config& g) const {
        model_card_training t{.steps = state_.step,
                              .max_steps = options_.max_steps,
                              .tokens_per_step = double(options_.batch_size * options_.seq_len * options_.grad_accum)};
        if (state_.history.contains("last_train_loss"))
            t.last_train_loss = state_.history["last_train_loss"].get<double>();
        if (state_.history.contains("val_loss"))
            for (const auto& v : state_.history["val_loss"])
                if (v.is_array() && v.size() == 2 && v[1].is_number())
                    t.validation.emplace_back(v[0].get<long long>(), v[1].get<double>());
        detail::write_text(stage / "README.md", model_card_markdown(model_.config(), *options_.card, t, g));
    }

    static Opt default_optimizer(Model& model, const trainer_options& options) {
        if constexpr (std::is_same_v<Opt, adamw>)
            return adamw(model.parameter_entries(), options.adamw);
        else if constexpr (std::constructible_from<Opt, Model&, adamw_options>)
            return Opt(model, options.adamw); // gpu::device_adamw
        else
            return Opt(model.parameter_entries());
    }

    Model& model_;
    Source& train_;
    trainer_options options_;
    dist::communicator& comm_;
    Opt opt_;
    validation_fn validate_;
    lr_schedule schedule_;
    training_state state_;
    bool restored_ = false;
    dist::part rows_; // this rank's rows of every global batch
    std::vector<token_t> ids_, targets_, val_ids_, val_targets_;

    // Every source draws one position per micro-batch (batches.hpp, shard_batches.hpp), so a checkpoint of step s
    // has data_position s * grad_accum. A larger one (a damaged trainer_state.json) would silently seek past the
    // data this run would have seen (load_training_checkpoint refuses a step count no run reaches).
    void check_resume_position(const fs::path& dir) const {
        const std::string file = (dir / "trainer_state.json").string();
        const std::uint64_t drawn = std::uint64_t(state_.step) * std::uint64_t(options_.grad_accum);
        check(state_.data_position <= drawn, [&] {
            return "checkpoint: " + file + ": data_position " + std::to_string(state_.data_position) +
                   " is beyond the " + std::to_string(drawn) + " micro-batches that step " +
                   std::to_string(state_.step) + " with grad_accum " + std::to_string(options_.grad_accum) +
                   " has drawn; the checkpoint is damaged, or was written with a larger grad_accum (resume with "
                   "the same)";
        });
    }

    // Tokens of one micro-batch, checked before its buffers exist: positive sizes, a product that does not
    // overflow, and ids, targets and document starts that fit in memory (a batch of 10^8 rows is refused here,
    // not by std::bad_alloc).
    static std::size_t batch_tokens(const trainer_options& o) {
        check(o.batch_size > 0 && o.seq_len > 0 && o.grad_accum > 0 && o.max_steps > 0,
              "trainer: batch_size, seq_len, grad_accum and max_steps must be positive");
        const double tokens = double(o.batch_size) * double(o.seq_len);
        std::string what = "trainer: a batch of ";
        what += std::to_string(o.batch_size);
        what += " x ";
        what += std::to_string(o.seq_len);
        what += " tokens";
        check_fits_in_memory(tokens * 3 * sizeof(token_t), what, "a smaller batch or context needs less");
        return std::size_t(o.batch_size) * std::size_t(o.seq_len);
    }
    std::vector<index_t> doc_start_;
    std::vector<double> balance_stats_; // experts, distributed: the balancing loss's statistics, summed over ranks
    dist::gradient_buckets buckets_;
    std::optional<dist::zero_partition> zero_; // options.zero and distributed
    std::optional<adamw> zero_opt_;            // AdamW over zero_'s slices
};

} // namespace tl
