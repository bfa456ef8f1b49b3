// tinylm/dist/data_parallel.hpp: what data parallelism does to a model's parameter entries (model/parameter.hpp):
// rank 0's weights to every rank, gradients summed over ranks in buckets, and a fingerprint of the weights to
// prove the replicas identical.
//
// Buckets: the entries that train, in reverse walk order (the order backward completes them: head and last
// block first), grouped into buckets of about `bucket_bytes` (default 25 MiB, as PyTorch DDP). reduce() copies
// each bucket's gradients into one contiguous buffer, starts its non-blocking all-reduce at once, and copies the
// sums back as each completes, so the copy of one bucket overlaps the transfer of those before it. The decoder's
// backward is one call, so reduction starts after it: overlapping it with backward itself would need a hook
// per block (docs/distributed.md). Which entries train is read at every reduce(), so freezing between steps
// works; every rank must freeze the same.
#pragma once

#include <tinylm/dist/communicator.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/optim/optimizer.hpp>

#include <algorithm>
#include <cstring>
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

    explicit gradient_buckets(std::size_t bucket_bytes = default_bucket_bytes)
        : bucket_floats_(std::max<std::size_t>(1, bucket_bytes / sizeof(float))) {}

    // Sums the gradients of the entries that train over all ranks, in place.
    void reduce(communicator& comm, const std::vector<parameter_entry>& entries) {
        if (comm.size() == 1) return;
        plan(entries);
        std::vector<pending> inflight;
        inflight.reserve(buckets_.size());
        for (const bucket& b : buckets_) { // reverse walk order (see plan)
            std::size_t at = b.offset;
            for (std::size_t i = b.first; i < b.last; ++i) {
                const tensor_view<float>& g = entries[order_[i]].grad;
                std::memcpy(buffer_.data() + at, g.data, std::size_t(g.numel()) * sizeof(float));
                at += std::size_t(g.numel());
            }
            inflight.push_back(comm.all_reduce_sum(std::span<float>(buffer_.data() + b.offset, at - b.offset)));
        }
        for (std::size_t k = 0; k < buckets_.size(); ++k) {
            inflight[k].wait();
            std::size_t at = buckets_[k].offset;
            for (std::size_t i = buckets_[k].first; i < buckets_[k].last; ++i) {
                const tensor_view<float>& g = entries[order_[i]].grad;
                std::memcpy(g.data, buffer_.data() + at, std::size_t(g.numel()) * sizeof(float));
                at += std::size_t(g.numel());
            }
        }
    }

    std::size_t bucket_count() const { return buckets_.size(); }
    std::size_t reduced_floats() const { return buffer_.size(); }

private:
    struct bucket {
        std::size_t first = 0, last = 0; // range of order_
        std::size_t offset = 0;          // in buffer_
    };

    void plan(const std::vector<parameter_entry>& entries) {
        order_.clear();
        buckets_.clear();
        std::size_t total = 0, in_bucket = 0;
        for (std::size_t i = entries.size(); i-- > 0;) {
            if (!trains(entries[i])) continue;
            if (buckets_.empty() || in_bucket >= bucket_floats_) {
                buckets_.push_back({order_.size(), order_.size(), total});
                in_bucket = 0;
            }
            order_.push_back(i);
            buckets_.back().last = order_.size();
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
};

} // namespace tl::dist
