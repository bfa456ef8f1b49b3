// tinylm/dist/data_parallel.hpp: what data parallelism does to a model's parameter entries (model/parameter.hpp):
// rank 0's weights to every rank, gradients summed over ranks in buckets, and a fingerprint of the weights to
// prove the replicas identical.
//
// Buckets: the entries that train, in reverse walk order (the order backward completes them: head and last
// block first), grouped into buckets of about `bucket_bytes` (default 25 MiB, as PyTorch DDP). Each bucket's
// gradients are copied into one contiguous buffer and its non-blocking all-reduce started; the sums are copied
// back when all were started. Overlap with backward (docs/distributed.md):
//   buckets.begin(comm, entries, stage_of);   // before the last backward of the step; nothing starts yet
//   model.backward(scale, [&](index_t stage) { buckets.ready(stage); }); // the model's backward hook
//   buckets.finish();                         // starts what is left, waits, copies the sums back
// The model calls the hook each time some gradients are final, with a stage that falls as backward goes down
// (decoder: n_layers after the head and final norm, l after block l); stage_of(entry) is the stage whose call
// makes that entry's gradient final (-1: only when backward returns, as the embedding's). ready(stage) starts
// every bucket, in order, whose entries are all final, so a bucket's transfer runs while backward computes the
// blocks below it, and lets the transfers of the buckets already started advance (MPI progresses them only inside
// its calls). reduce() is begin() + finish(): all buckets after backward. Every rank starts the same buckets in
// the same order (the same model, the same stages), as MPI requires. Which entries train is read at every
// begin(), so freezing between steps works; every rank must freeze the same.
#pragma once

#include <tinylm/dist/communicator.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/optim/optimizer.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

namespace tl::dist {

// Every entry's value (frozen ones too) from `root` to every rank.
inline void broadcast_parameters(communicator& comm, const std::vector<parameter_entry>& entries, int root = 0) {
    if (comm.size() == 1) return;
    for (const parameter_entry& e : entries)
        comm.broadcast_values(std::span<float>(e.value.data, std::size_t(e.value.numel())), root);
}

// A fingerprint of every entry's name and value bits: equal on two ranks only when their replicas are identical.
inline std::uint64_t parameter_fingerprint(const std::vector<parameter_entry>& entries) {
    std::uint64_t h = fingerprint(std::string_view{});
    for (const parameter_entry& e : entries) {
        h = fingerprint(e.name, h);
        h = fingerprint(std::as_bytes(std::span<const float>(e.value.data, std::size_t(e.value.numel()))), h);
    }
    return h;
}

class gradient_buckets {
public:
    static constexpr std::size_t default_bucket_bytes = std::size_t(25) << 20;
    // An entry's backward stage (see the top of this file); without one, every gradient is final at the end.
    using stage_fn = std::function<index_t(const parameter_entry&)>;

    explicit gradient_buckets(std::size_t bucket_bytes = default_bucket_bytes)
        : bucket_floats_(std::max<std::size_t>(1, bucket_bytes / sizeof(float))) {}

    // Sums the gradients of the entries that train over all ranks, in place, after backward.
    void reduce(communicator& comm, const std::vector<parameter_entry>& entries) {
        begin(comm, entries);
        finish();
    }

    // Plans the buckets for this step's reduction; nothing is sent before ready() or finish().
    void begin(communicator& comm, const std::vector<parameter_entry>& entries, const stage_fn& stage_of = {}) {
        comm_ = &comm;
        entries_ = &entries;
        inflight_.clear();
        started_before_finish_ = 0;
        if (comm.size() == 1) return;
        plan(entries, stage_of);
        inflight_.reserve(buckets_.size());
    }

    // Backward has made final every gradient of stage >= `stage`: starts the buckets now complete (in order) and
    // advances those under way.
    void ready(index_t stage) {
        if (!comm_ || comm_->size() == 1) return;
        while (inflight_.size() < buckets_.size() && buckets_[inflight_.size()].stage >= stage)
            start(inflight_.size());
        started_before_finish_ = inflight_.size();
        for (pending& p : inflight_)
            p.test();
    }

    // Starts the buckets not started yet, waits for all and copies the sums back into the gradients.
    void finish() {
        if (!comm_ || comm_->size() == 1) return;
        const auto t0 = std::chrono::steady_clock::now();
        while (inflight_.size() < buckets_.size())
            start(inflight_.size());
        for (std::size_t k = 0; k < buckets_.size(); ++k) {
            inflight_[k].wait();
            std::size_t at = buckets_[k].offset;
            for (std::size_t i = buckets_[k].first; i < buckets_[k].last; ++i) {
                const tensor_view<float>& g = (*entries_)[order_[i]].grad;
                std::memcpy(g.data, buffer_.data() + at, std::size_t(g.numel()) * sizeof(float));
                at += std::size_t(g.numel());
            }
        }
        inflight_.clear();
        comm_ = nullptr;
        finish_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }

    std::size_t bucket_count() const { return buckets_.size(); }
    std::size_t reduced_floats() const { return buffer_.size(); }
    // Buckets whose all-reduce started inside backward (through ready()) in the last reduction.
    std::size_t started_during_backward() const { return started_before_finish_; }
    // Seconds the last finish() took: the communication backward did not hide (starting the rest, waiting, copying
    // the sums back).
    double finish_seconds() const { return finish_seconds_; }

private:
    struct bucket {
        std::size_t first = 0, last = 0; // range of order_
        std::size_t offset = 0;          // in buffer_
        index_t stage = 0;               // the lowest stage of its entries: final once ready(stage) was called
    };

    void start(std::size_t k) {
        const bucket& b = buckets_[k];
        std::size_t at = b.offset;
        for (std::size_t i = b.first; i < b.last; ++i) {
            const tensor_view<float>& g = (*entries_)[order_[i]].grad;
            std::memcpy(buffer_.data() + at, g.data, std::size_t(g.numel()) * sizeof(float));
            at += std::size_t(g.numel());
        }
        inflight_.push_back(comm_->all_reduce_sum(std::span<float>(buffer_.data() + b.offset, at - b.offset)));
    }

    void plan(const std::vector<parameter_entry>& entries, const stage_fn& stage_of) {
        order_.clear();
        buckets_.clear();
        std::size_t total = 0, in_bucket = 0;
        constexpr index_t at_the_end = -1;
        for (std::size_t i = entries.size(); i-- > 0;) {
            if (!trains(entries[i])) continue;
            if (buckets_.empty() || in_bucket >= bucket_floats_) {
                buckets_.push_back({order_.size(), order_.size(), total, std::numeric_limits<index_t>::max()});
                in_bucket = 0;
            }
            order_.push_back(i);
            bucket& b = buckets_.back();
            b.last = order_.size();
            b.stage = std::min(b.stage, stage_of ? stage_of(entries[i]) : at_the_end);
            const std::size_t n = std::size_t(entries[i].grad.numel());
            total += n;
            in_bucket += n;
        }
        buffer_.resize(total);
    }

    std::size_t bucket_floats_;
    std::vector<std::size_t> order_; // entry indices, reverse walk order, trained ones only
    std::vector<bucket> buckets_;
    std::vector<float> buffer_;
    communicator* comm_ = nullptr;                          // between begin() and finish()
    const std::vector<parameter_entry>* entries_ = nullptr; // idem
    std::vector<pending> inflight_;                         // the started buckets, in order
    std::size_t started_before_finish_ = 0;
    double finish_seconds_ = 0;
};

} // namespace tl::dist
