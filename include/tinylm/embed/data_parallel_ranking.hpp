// tinylm/embed/data_parallel_ranking.hpp: the gradients of one optimizer step of the ranking loss
// (embed/cached_ranking.hpp) on the N ranks of a communicator (docs/distributed.md), for a loop of its own such
// as examples/09_retrieval's:
//
//   tl::embed::data_parallel_ranking<backend> dp(tl::dist::world());
//   dp.join(model, settings);                     // same settings and model on every rank, rank 0's weights to all
//   for (...) {
//       const double loss = dp.gradients(se, batch, options);  // zero_grad, step, gradients summed over ranks
//       tl::clip_grad_norm(model.trainable_entries(), 1.0);    // identical gradients: identical steps
//       opt.step(lr);
//   }
//
// The batch is the global one: every rank passes the whole batch, embeds its own pairs (dist::part_of), and the
// ranking step all-gathers the embeddings so that the in-batch negatives are those of the whole batch (one
// process's loss, to rounding). The parameter gradients are summed over the ranks in buckets
// (dist::gradient_buckets); with `overlap` each bucket's all-reduce starts inside the step's last backward, as
// soon as the encoder's backward hook (encoder::backward_stage) says its gradients are final. The summed gradients
// are bit-identical on every rank, so clipping and the optimizer keep the replicas bit-identical. The trainer
// (train/trainer.hpp) does the same for token batches; the ranking loss couples the rows of a batch through the
// similarity matrix, which the trainer's per-row losses do not, hence this step.
#pragma once

#include <tinylm/dist/data_parallel.hpp>
#include <tinylm/embed/cached_ranking.hpp>
#include <tinylm/embed/sentence_encoder.hpp>

#include <string>

namespace tl::embed {

template <class Bk>
class data_parallel_ranking {
public:
    explicit data_parallel_ranking(dist::communicator& comm,
                                   std::size_t bucket_bytes = dist::gradient_buckets::default_bucket_bytes,
                                   bool overlap = true)
        : comm_(comm), buckets_(bucket_bytes), overlap_(overlap) {}

    dist::communicator& communicator() { return comm_; }
    // The buckets of the last step (bucket_count(), started_during_backward()).
    const dist::gradient_buckets& gradient_buckets() const { return buckets_; }
    const ranking_step<Bk>& step() const { return step_; }

    // Before the first step, on every rank: fails on every rank (dist::collective_error) unless all ranks pass the
    // same `settings` (whatever decides the result and the order of the collectives: batch, mini-batch, schedule,
    // the step resumed from) and the same model (parameter names, sizes, which train); then rank 0's weights go to
    // every rank.
    template <class Model>
    void join(Model& model, const std::string& settings) {
        if (comm_.size() == 1) return;
        std::string described = settings; // built with += (GCC 12 warns on "literal" + std::string temporaries)
        described += overlap_ ? " overlap" : " after-backward";
        for (const parameter_entry& e : model.parameter_entries()) {
            described += ' ';
            described += e.name;
            described += ':';
            described += std::to_string(e.value.numel());
            described += trains(e) ? "+" : "-";
        }
        dist::check_same_on_all_ranks(comm_, dist::fingerprint(described),
                                      "the ranking step's settings or the model (batch, schedule, parameters)");
        dist::broadcast_parameters(comm_, model.parameter_entries(), 0);
    }

    // Zeroes the gradients, runs the ranking step on this rank's part of the global `batch` (the loss of the whole
    // batch, the same on every rank, is returned) and sums the parameter gradients over the ranks.
    template <class Model>
    double gradients(sentence_encoder<Model>& se, const text_batch& batch, ranking_step_options options) {
        Model& model = se.model();
        model.zero_grad();
        options.communicator = &comm_;
        if (comm_.size() == 1) return step_.run(se, batch, options);
        const auto& entries = model.parameter_entries();
        if (!overlap_) {
            const double loss = step_.run(se, batch, options);
            buckets_.reduce(comm_, entries);
            return loss;
        }
        buckets_.begin(comm_, entries, [&](const parameter_entry& e) { return model.backward_stage(e.name); });
        const double loss = step_.run(se, batch, options, [&](index_t stage) { buckets_.ready(stage); });
        buckets_.finish();
        return loss;
    }

private:
    dist::communicator& comm_;
    ranking_step<Bk> step_;
    dist::gradient_buckets buckets_;
    bool overlap_;
};

} // namespace tl::embed
