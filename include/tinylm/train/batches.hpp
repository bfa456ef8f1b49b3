// tinylm/train/batches.hpp: where training batches come from.
//
// A BatchSource fills (B, T) ids and next-token targets and can report and restore its position, so a
// resumed run draws exactly the batches an uninterrupted one would. token_windows is the in-memory source:
// batch number k, row b starts at a position drawn from a counter-based RNG at index k * B + b, so
// seeking is just setting k. (The corpus pipeline's memory-mapped shards provide the same interface.)
#pragma once

#include <tinylm/core/rng.hpp>
#include <tinylm/ops/common.hpp>

#include <concepts>
#include <span>
#include <vector>

namespace tl {

template <class S>
concept BatchSource = requires(S s, tensor_view<token_t> ids, tensor_view<token_t> targets, std::uint64_t pos) {
    s.next(ids, targets);
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
