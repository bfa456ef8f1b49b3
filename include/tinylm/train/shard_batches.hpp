// tinylm/train/shard_batches.hpp: the trainer's view of a token shard.
//
// A BatchSource (train/batches.hpp) over a memory-mapped shard (data/shards.hpp): each (B, T + 1) window of
// data::batch_loader becomes (B, T) ids and the next-token targets; position and seek are the loader's, so a
// resumed run draws the batches an uninterrupted one would.
#pragma once

#include <tinylm/data/shards.hpp>
#include <tinylm/train/batches.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace tl {

class shard_batches {
public:
    shard_batches(const data::token_shard& shard, index_t B, index_t T, std::uint64_t seed)
        : loader_(shard, std::size_t(B), std::size_t(T), seed), window_(std::size_t(B * (T + 1))) {}

    void next(tensor_view<token_t> ids, tensor_view<token_t> targets) {
        const index_t B = ids.dim(0), T = ids.dim(1);
        check(std::size_t(B * (T + 1)) == window_.size() && targets.dim(0) == B && targets.dim(1) == T, [&] {
            return "shard_batches: ids " + ids.shape.str() + " and targets " + targets.shape.str() +
                   " do not match the loader's (B, T)";
        });
        loader_.next(std::span<std::int32_t>(window_));
        for (index_t b = 0; b < B; ++b) {
            std::copy_n(window_.begin() + b * (T + 1), T, ids.row(b));
            std::copy_n(window_.begin() + b * (T + 1) + 1, T, targets.row(b));
        }
    }
    std::uint64_t position() const { return loader_.position(); }
    void seek(std::uint64_t p) { loader_.seek(p); }

private:
    data::batch_loader loader_;
    std::vector<std::int32_t> window_;
};
static_assert(BatchSource<shard_batches>);

} // namespace tl
