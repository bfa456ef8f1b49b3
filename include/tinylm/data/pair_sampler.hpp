// tinylm/data/pair_sampler.hpp: batches of pair rows in which no text occurs twice, in the spirit of
// sentence-transformers' NoDuplicatesBatchSampler.
//
// With in-batch negatives every positive (and hard negative) of the batch is a negative for every other anchor.
// Two rows that share a text (the same answer for two questions, a positive that is another row's anchor or
// negative) would make that text a positive and a negative of the same anchor at once: a false negative.
//
// Each epoch shuffles the rows (tl::counter_rng, stream = epoch, so epoch e is the same for a seed whatever ran
// before) and fills batches greedily in that order: a row that shares a text with the batch being filled is
// deferred, keeping its place ahead of the rows not yet looked at, and the next batch starts from the deferred
// rows. The scan ends a batch early when no remaining row fits; such a short batch is kept, or dropped with
// drop_last (its rows then sit out the epoch). So an epoch uses every row exactly once without drop_last, and may
// have more batches than ceil(rows / batch_size) when texts repeat (sentence-transformers instead tops an epoch up
// to that count with repeated rows).
//
// Texts are compared exactly (byte for byte), across columns; a row may repeat a text within itself.
// Resume: position() is (epoch, batch); set_position() of a saved one continues with the same batches.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/data/pairs.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tl::data {

struct sampler_position {
    std::uint64_t epoch = 0;
    std::size_t batch = 0; // batches of this epoch already handed out
    bool operator==(const sampler_position&) const = default;
};

class no_duplicates_sampler {
public:
    no_duplicates_sampler(std::span<const text_pair> rows, std::size_t batch_size, std::uint64_t seed,
                          bool drop_last = false)
        : batch_size_(batch_size), seed_(seed), drop_last_(drop_last) {
        check(batch_size > 0, "no_duplicates_sampler: batch_size must be positive");
        check(!rows.empty(), "no_duplicates_sampler: no rows");
        // Texts become ids once, so that an epoch compares integers and the rows need not outlive the sampler.
        std::unordered_map<std::string_view, std::uint32_t> ids;
        row_texts_.resize(rows.size());
        for (std::size_t r = 0; r < rows.size(); ++r) {
            auto add = [&](const std::string& t) {
                const auto [it, added] = ids.try_emplace(t, std::uint32_t(ids.size()));
                row_texts_[r].push_back(it->second);
            };
            add(rows[r].anchor);
            add(rows[r].positive);
            for (const std::string& n : rows[r].negatives)
                add(n);
        }
        n_texts_ = ids.size();
        plan(0);
    }

    // The row indices of the next batch; the first batch of the next epoch once this one is done. An epoch in
    // which drop_last leaves no batch at all (every batch short) throws.
    std::span<const std::size_t> next() {
        if (pos_.batch >= batches_.size()) {
            plan(pos_.epoch + 1);
            check(!batches_.empty(), [&] {
                return "no_duplicates_sampler: no full batch of " + std::to_string(batch_size_) +
                       " rows without a repeated text (drop_last)";
            });
        }
        return batches_[pos_.batch++];
    }

    sampler_position position() const { return pos_; }
    void set_position(sampler_position p) {
        if (p.epoch != pos_.epoch) plan(p.epoch);
        check(p.batch <= batches_.size(), [&] {
            return "no_duplicates_sampler: position " + std::to_string(p.batch) + " but epoch " +
                   std::to_string(p.epoch) + " has " + std::to_string(batches_.size()) + " batches";
        });
        pos_ = p;
    }

    // The batches of the current epoch (position().epoch).
    const std::vector<std::vector<std::size_t>>& epoch_batches() const { return batches_; }
    std::size_t batches_in_epoch() const { return batches_.size(); }
    std::size_t rows() const { return row_texts_.size(); }

private:
    void plan(std::uint64_t epoch) {
        const std::size_t n = row_texts_.size();
        std::vector<std::size_t> order(n);
        for (std::size_t i = 0; i < n; ++i)
            order[i] = i;
        counter_rng rng(seed_, epoch);
        for (std::size_t i = n; i > 1; --i) // Fisher-Yates
            std::swap(order[i - 1], order[std::size_t(rng.below(i))]);

        batches_.clear();
        std::vector<std::uint64_t> seen(n_texts_, 0); // seen[t] == stamp: text t is in the batch being filled
        std::uint64_t stamp = 0;
        std::vector<std::size_t> deferred;
        while (!order.empty()) {
            ++stamp;
            std::vector<std::size_t> batch;
            deferred.clear();
            std::size_t i = 0;
            for (; i < order.size() && batch.size() < batch_size_; ++i) {
                const auto& texts = row_texts_[order[i]];
                bool clash = false;
                for (std::uint32_t t : texts)
                    clash = clash || seen[t] == stamp;
                if (clash) {
                    deferred.push_back(order[i]);
                    continue;
                }
                for (std::uint32_t t : texts)
                    seen[t] = stamp;
                batch.push_back(order[i]);
            }
            deferred.insert(deferred.end(), order.begin() + std::ptrdiff_t(i), order.end());
            order.swap(deferred);
            if (batch.size() == batch_size_ || !drop_last_) batches_.push_back(std::move(batch));
        }
        pos_ = {epoch, 0};
    }

    std::size_t batch_size_;
    std::uint64_t seed_;
    bool drop_last_;
    std::vector<std::vector<std::uint32_t>> row_texts_;
    std::size_t n_texts_ = 0;
    std::vector<std::vector<std::size_t>> batches_;
    sampler_position pos_;
};

} // namespace tl::data
