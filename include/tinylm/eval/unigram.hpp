// tinylm/eval/unigram.hpp: a unigram language model over token ids, the floor that knows which tokens are
// frequent in the training data and nothing about context:
//
//   log p(token) = ln((count(token) + 1) / (total + vocab))      (add-one smoothing: unseen tokens stay finite)
//
// Used as a baseline for log-likelihood benchmarks (paraphrase_qa.hpp): a continuation's score is the sum of
// its tokens' log p, whatever the question.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/ops/common.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <cmath>
#include <span>
#include <string_view>
#include <vector>

namespace tl::eval {

class unigram_model {
public:
    explicit unigram_model(std::size_t vocab) : counts_(vocab, 0) {
        check(vocab > 0, "unigram_model: the vocabulary is empty");
    }

    void add(std::span<const token_t> tokens) {
        for (token_t t : tokens) {
            check(t >= 0 && std::size_t(t) < counts_.size(), [&] {
                return "unigram_model: token " + std::to_string(t) + " is outside the vocabulary of " +
                       std::to_string(counts_.size());
            });
            ++counts_[std::size_t(t)];
        }
        total_ += tokens.size();
    }
    // Counts the tokens of `text` (large texts: pass pieces, e.g. one line or file at a time).
    void add_text(const tokenizer& tok, std::string_view text, int threads = 1) {
        const std::vector<token_t> ids = tok.encode_parallel(text, threads);
        add(std::span<const token_t>(ids.data(), ids.size()));
    }

    double logprob(token_t t) const {
        check(t >= 0 && std::size_t(t) < counts_.size(), "unigram_model::logprob: token outside the vocabulary");
        return std::log((double(counts_[std::size_t(t)]) + 1) / (double(total_) + double(counts_.size())));
    }
    double loglikelihood(std::span<const token_t> tokens) const {
        double s = 0;
        for (token_t t : tokens)
            s += logprob(t);
        return s;
    }
    std::size_t count(token_t t) const { return counts_.at(std::size_t(t)); }
    std::size_t total() const { return total_; }
    std::size_t vocab_size() const { return counts_.size(); }

private:
    std::vector<std::size_t> counts_;
    std::size_t total_ = 0;
};

} // namespace tl::eval
