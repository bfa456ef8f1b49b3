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
#pragma once

#include <tinylm/core/memory_budget.hpp>
#include <tinylm/io/model_card.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/optimizer.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/train/batches.hpp>
#include <tinylm/train/checkpoint.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <functional>

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
inline std::atomic<int> interrupt_requests{0};
extern "C" inline void on_interrupt(int) { interrupt_requests.store(1); }
} // namespace detail

template <class Model, BatchSource Source, Optimizer Opt = adamw>
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
        : model_(model), train_(train), options_(std::move(options)), opt_(std::move(optimizer)),
          validate_(std::move(validate)), schedule_{options_.peak_lr, options_.min_lr, options_.warmup_steps,
                                                    options_.max_steps, options_.decay},
          ids_(batch_tokens(options_)), targets_(ids_.size()) {
        if constexpr (DocumentBatchSource<Source>) doc_start_.resize(ids_.size());
    }

    // Hooks (all optional).
    std::function<void(const step_report&)> on_step;                   // after every optimizer step
    std::function<void(long long step, double val_loss)> on_eval;      // after every validation pass
    std::function<void(const fs::path& staged_dir)> add_to_checkpoint; // extra files, e.g. tokenizer.json

    fs::path checkpoint_dir() const { return options_.out_dir.empty() ? fs::path{} : options_.out_dir / "checkpoint"; }
    const training_state& state() const { return state_; }
    Opt& optimizer() { return opt_; }

    // The validation callable's loss, or the mean loss over the validation windows (NaN when there are none).
    double evaluate() {
        if (validate_) return validate_();
        const index_t windows = index_t(val_ids_.size()) / options_.seq_len;
        if (windows == 0) return NAN;
        double total = 0;
        index_t counted = 0;
        for (index_t w0 = 0; w0 < windows; w0 += options_.batch_size) {
            const index_t n = std::min(options_.batch_size, windows - w0);
            const shape s{n, options_.seq_len};
            const float loss = model_.eval_loss(cview<token_t>{val_ids_.data() + w0 * options_.seq_len, s},
                                                cview<token_t>{val_targets_.data() + w0 * options_.seq_len, s});
            total += double(loss) * double(model_.counted_targets());
            counted += model_.counted_targets();
        }
        return total / double(counted);
    }

    // Continues from out_dir/checkpoint when resuming is on and one exists (once; run() calls it too).
    // Returns the step the run continues from.
    long long restore() {
        // checkpoint.old when a save was killed between its renames; a leftover checkpoint.tmp is never read.
        const fs::path from =
            checkpoint_dir().empty() ? fs::path{} : newest_complete_folder(checkpoint_dir(), "trainer_state.json");
        if (!restored_ && options_.resume && !from.empty()) {
            state_ = load_training_checkpoint(model_, opt_, from);
            check_resume_position(from);
            train_.seek(state_.data_position);
        }
        restored_ = true;
        return state_.step;
    }

    train_outcome run() {
        restore();
        model_.set_gradient_checkpointing(options_.gradient_checkpointing);
        model_.plan(options_.batch_size, options_.seq_len);
        detail::interrupt_requests.store(0);
        const auto previous = std::signal(SIGINT, detail::on_interrupt);
        struct restore {
            decltype(previous) handler;
            ~restore() { std::signal(SIGINT, handler); }
        } restore_handler{previous};

        const auto start = std::chrono::steady_clock::now();
        const shape batch{options_.batch_size, options_.seq_len};
        const long long stop =
            options_.stop_at > 0 ? std::min(options_.stop_at, options_.max_steps) : options_.max_steps;
        while (state_.step < stop) {
            const auto step_start = std::chrono::steady_clock::now();
            model_.zero_grad();
            double loss = 0;
            long long counted = 0;
            for (int micro = 0; micro < options_.grad_accum; ++micro) {
                const tensor_view<token_t> ids{ids_.data(), batch}, targets{targets_.data(), batch};
                if constexpr (DocumentBatchSource<Source>) {
                    const tensor_view<index_t> doc_start{doc_start_.data(), batch};
                    train_.next(ids, targets, doc_start);
                    loss += model_.loss(ids, targets, doc_start);
                } else {
                    train_.next(ids, targets);
                    loss += model_.loss(ids, targets);
                }
                counted += model_.counted_targets();
                model_.backward(1.0 / options_.grad_accum);
            }
            loss /= options_.grad_accum;
            const double norm = options_.clip > 0 ? clip_grad_norm(model_.parameter_entries(), options_.clip)
                                                  : grad_norm(model_.parameter_entries());
            if (!std::isfinite(loss) || !std::isfinite(norm))
                fail("trainer: training diverged at step " + std::to_string(state_.step + 1) + " (loss " +
                     std::to_string(loss) + ", gradient norm " + std::to_string(norm) + "); " +
                     (checkpoint_dir().empty() ? std::string("no checkpoint was configured")
                                               : "the last good checkpoint is " + checkpoint_dir().string()) +
                     ". Lower the learning rate or check the data.");
            const double lr = schedule_.lr_at(state_.step);
            opt_.step(lr);
            ++state_.step;
            state_.data_position = train_.position();
            state_.history["last_train_loss"] = loss;

            const auto now = std::chrono::steady_clock::now();
            if (on_step) {
                const double secs = std::chrono::duration<double>(now - step_start).count();
                on_step({state_.step, options_.max_steps, loss, lr, norm,
                         double(options_.grad_accum * options_.batch_size * options_.seq_len) / secs,
                         std::chrono::duration<double>(now - start).count(), counted});
            }
            const bool last = state_.step == stop; // validated and saved like the end of the run
            if ((options_.eval_every > 0 && state_.step % options_.eval_every == 0) || last) {
                const double val = evaluate();
                state_.history["val_loss"].push_back({state_.step, val});
                if (on_eval) on_eval(state_.step, val);
                model_.plan(options_.batch_size, options_.seq_len);
            }
            const bool interrupted = detail::interrupt_requests.load() != 0;
            if ((options_.checkpoint_every > 0 && state_.step % options_.checkpoint_every == 0) || last || interrupted)
                save();
            if (interrupted) return train_outcome::interrupted;
        }
        return state_.step < options_.max_steps ? train_outcome::paused : train_outcome::finished;
    }

    void save() {
        if (checkpoint_dir().empty()) return;
        save_training_checkpoint(model_, opt_, state_, checkpoint_dir(), options_.special, [&](const fs::path& stage) {
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

private:
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
        else
            return Opt(model.parameter_entries());
    }

    Model& model_;
    Source& train_;
    trainer_options options_;
    Opt opt_;
    validation_fn validate_;
    lr_schedule schedule_;
    training_state state_;
    bool restored_ = false;
    std::vector<token_t> ids_, targets_, val_ids_, val_targets_;

    // Every source draws one position per micro-batch (batches.hpp, shard_batches.hpp), so a checkpoint of step s
    // has data_position s * grad_accum. A larger one (a damaged trainer_state.json) would silently seek past the
    // data this run would have seen; a step beyond 2^40 would overflow the step arithmetic.
    void check_resume_position(const fs::path& dir) const {
        const std::string file = (dir / "trainer_state.json").string();
        check(state_.step <= (1LL << 40), [&] {
            return "checkpoint: " + file + ": step " + std::to_string(state_.step) +
                   " is not a step count a run reaches; the checkpoint is damaged, delete it or restore a copy";
        });
        const std::uint64_t drawn = std::uint64_t(state_.step) * std::uint64_t(options_.grad_accum);
        check(state_.data_position <= drawn, [&] {
            return "checkpoint: " + file + ": data_position " + std::to_string(state_.data_position) +
                   " is beyond the " + std::to_string(drawn) + " micro-batches that step " +
                   std::to_string(state_.step) + " with grad_accum " + std::to_string(options_.grad_accum) +
                   " has drawn; the checkpoint is damaged, delete it or restore a copy";
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
};

} // namespace tl
