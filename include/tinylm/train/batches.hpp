// tinylm/train/batches.hpp: where training batches come from.
//
// A BatchSource fills (B, T) ids and next-token targets and can report and restore its position, so a
// resumed run draws exactly the batches an uninterrupted one would. It comes in two kinds:
//   next(ids, targets)             token windows: each row is one stretch of text (TokenBatchSource)
//   next(ids, targets, doc_start)  rows of packed documents (DocumentBatchSource): doc_start (B, T) holds, per
//                                  token, the column where its document starts, so attention stays inside a
//                                  document and positions restart at each one (model.loss(ids, targets,
//                                  doc_start)); targets of -100 (ignore_index) are not trained: SFT label masks
// position() and seek(pos) are the source's own count (the trainer stores it in the checkpoint).
//
// token_windows is the in-memory token source: batch number k, row b starts at a position drawn from a
// counter-based RNG at index k * B + b, so seeking is just setting k. (The corpus pipeline's memory-mapped
// shards provide the same interface: train/shard_batches.hpp.) packed_rows serves fixed rows of packed
// documents (SFT rows of data/sft_batch.hpp) in a seeded order, each row once per epoch.
#pragma once

#include <tinylm/core/rng.hpp>
#include <tinylm/ops/common.hpp>

#include <concepts>
#include <span>
#include <vector>

namespace tl {

template <class S>
concept TokenBatchSource = requires(S& s, tensor_view<token_t> ids, tensor_view<token_t> targets) {
    s.next(ids, targets);
};
template <class S>
concept DocumentBatchSource = requires(S& s, tensor_view<token_t> ids, tensor_view<token_t> targets,
                                       tensor_view<index_t> doc_start) {
    s.next(ids, targets, doc_start);
};
template <class S>
concept BatchSource = (TokenBatchSource<S> || DocumentBatchSource<S>)&&requires(S& s, std::uint64_t pos) {
    { s.position() } -> std::convertible_to<std::uint64_t>;
    s.seek(pos);
};

class token_windows {
public:
    token_windows(std::vector<token_t> tokens, std::uint64_t seed) : tokens_(std::move(tokens)), rng_(seed, 0xda7a) {}

    void next(tensor_view<token_t> ids, tensor_view<token_t> targets) {
        const index_t B = ids.dim(0), T = ids.dim(1);
        check(index_t(tokens_.size()) > T + 1, [&] {
            return "token_windows: " + std::to_string(tokens_.size()) + " tokens cannot fill a window of " +
                   std::to_string(T + 1);
        });
        const std::uint64_t starts = tokens_.size() - std::size_t(T) - 1;
        for (index_t b = 0; b < B; ++b) {
            const std::uint64_t r = rng_.at(batch_ * std::uint64_t(B) + std::uint64_t(b));
            const std::size_t at = std::size_t((static_cast<unsigned __int128>(r) * starts) >> 64);
            std::copy_n(tokens_.begin() + std::ptrdiff_t(at), T, ids.row(b));
            std::copy_n(tokens_.begin() + std::ptrdiff_t(at) + 1, T, targets.row(b));
        }
        ++batch_;
    }
    std::uint64_t position() const { return batch_; }
    void seek(std::uint64_t batch) { batch_ = batch; }
    std::span<const token_t> tokens() const { return tokens_; }

private:
    std::vector<token_t> tokens_;
    counter_rng rng_;
    std::uint64_t batch_ = 0;
};
static_assert(BatchSource<token_windows>);

// Fixed rows of packed documents, (rows, T) ids, targets and doc_start (data::sft_rows holds them), served B at
// a time: draw number i (batch i / B, row i % B) is row order_e[i % rows] of epoch e = i / rows, where order_e
// is a permutation drawn from (seed, e). Every row comes once per epoch, and seek recomputes one permutation,
// so a resumed run draws the rows an uninterrupted one would. The vectors must outlive the source.
class packed_rows {
public:
    packed_rows(std::span<const token_t> ids, std::span<const token_t> targets, std::span<const index_t> doc_start,
                index_t time, std::uint64_t seed)
        : ids_(ids), targets_(targets), doc_start_(doc_start), time_(time),
          rows_(time > 0 ? index_t(ids.size()) / time : 0), seed_(seed) {
        check(time > 0 && rows_ > 0 && index_t(ids.size()) == rows_ * time && targets.size() == ids.size() &&
                  doc_start.size() == ids.size(),
              "packed_rows: ids, targets and doc_start must hold the same whole number (> 0) of rows");
    }

    void next(tensor_view<token_t> ids, tensor_view<token_t> targets, tensor_view<index_t> doc_start) {
        const index_t B = ids.dim(0);
        check(ids.dim(1) == time_ && targets.shape == ids.shape && doc_start.shape == ids.shape, [&] {
            return "packed_rows: a batch of " + ids.shape.str() + " does not fit rows of " + std::to_string(time_) +
                   " tokens";
        });
        for (index_t b = 0; b < B; ++b) {
            const std::uint64_t draw = batch_ * std::uint64_t(B) + std::uint64_t(b);
            const std::size_t from = std::size_t(row_of(draw) * time_);
            std::copy_n(ids_.begin() + std::ptrdiff_t(from), time_, ids.row(b));
            std::copy_n(targets_.begin() + std::ptrdiff_t(from), time_, targets.row(b));
            std::copy_n(doc_start_.begin() + std::ptrdiff_t(from), time_, doc_start.row(b));
        }
        ++batch_;
    }
    std::uint64_t position() const { return batch_; }
    void seek(std::uint64_t batch) { batch_ = batch; }
    index_t rows() const { return rows_; }

private:
    index_t row_of(std::uint64_t draw) {
        const std::uint64_t epoch = draw / std::uint64_t(rows_);
        if (order_.empty() || epoch != epoch_) {
            order_.resize(std::size_t(rows_));
            for (index_t r = 0; r < rows_; ++r)
                order_[std::size_t(r)] = r;
            counter_rng rng(seed_, epoch); // Fisher-Yates
            for (std::size_t i = order_.size() - 1; i > 0; --i)
                std::swap(order_[i], order_[rng.below(i + 1)]);
            epoch_ = epoch;
        }
        return order_[std::size_t(draw % std::uint64_t(rows_))];
    }

    std::span<const token_t> ids_, targets_;
    std::span<const index_t> doc_start_;
    index_t time_, rows_;
    std::uint64_t seed_;
    std::uint64_t batch_ = 0, epoch_ = 0;
    std::vector<index_t> order_;
};
static_assert(BatchSource<packed_rows> && DocumentBatchSource<packed_rows>);

// The first `max_windows` consecutive (non-overlapping) windows of a token sequence, for validation.
inline std::pair<std::vector<token_t>, std::vector<token_t>> validation_windows(std::span<const token_t> tokens,
                                                                                index_t T, index_t max_windows) {
    const index_t count = std::min<index_t>(max_windows, (index_t(tokens.size()) - 1) / T);
    std::vector<token_t> ids(std::size_t(count * T)), targets(std::size_t(count * T));
    for (index_t w = 0; w < count; ++w)
        for (index_t t = 0; t < T; ++t) {
            ids[std::size_t(w * T + t)] = tokens[std::size_t(w * T + t)];
            targets[std::size_t(w * T + t)] = tokens[std::size_t(w * T + t + 1)];
        }
    return {std::move(ids), std::move(targets)};
}

} // namespace tl
