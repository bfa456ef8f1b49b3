// tinylm/eval/sampling.hpp: choosing the next token from logits.
//
// In order (as Hugging Face's generate applies them): repetition penalty over the tokens seen so far
// (Keskar et al. 2019: a positive logit is divided by the penalty, a negative one multiplied), temperature,
// top-k, then top-p (nucleus: the smallest set of most likely tokens whose probability reaches p), then min-p
// (tokens less likely than min_p times the most likely one are dropped; Nguyen et al. 2024), then a draw. temperature
// == 0 means greedy. Deterministic for a given seed: draws come from a counter-based RNG.
#pragma once

#include <tinylm/core/rng.hpp>
#include <tinylm/ops/common.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>
#include <vector>

namespace tl {

struct sampling_options {
    double temperature = 1.0;        // 0: greedy
    int top_k = 0;                   // 0: off
    double top_p = 1.0;              // 1: off
    double repetition_penalty = 1.0; // 1: off
    std::uint64_t seed = 0;
    double min_p = 0.0; // 0: off
};

class sampler {
public:
    sampler(index_t vocab, sampling_options options)
        : options_(options), rng_(options.seed, 0x5a4d), logits_(std::size_t(vocab)), order_(std::size_t(vocab)),
          seen_(std::size_t(vocab), 0) {
        check(options.temperature >= 0 && options.top_k >= 0 && options.top_p > 0 && options.top_p <= 1 &&
                  options.repetition_penalty > 0 && options.min_p >= 0 && options.min_p <= 1,
              "sampler: need temperature >= 0, top_k >= 0, 0 < top_p <= 1, repetition_penalty > 0, 0 <= min_p <= 1");
    }

    // Picks a token given the logits of one position and the tokens seen so far (prompt and output).
    token_t sample(std::span<const float> logits, std::span<const token_t> history) {
        const index_t vocab = index_t(logits_.size());
        check(index_t(logits.size()) == vocab, "sampler: logits do not match the vocabulary size");
        if (options_.temperature == 0.0 && options_.repetition_penalty == 1.0) // greedy: no copy needed
            return token_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        std::copy(logits.begin(), logits.end(), logits_.begin());
        if (options_.repetition_penalty != 1.0) {
            for (token_t t : history)
                if (t >= 0 && t < vocab && !seen_[std::size_t(t)]) {
                    seen_[std::size_t(t)] = 1;
                    double& z = logits_[std::size_t(t)];
                    z = z > 0 ? z / options_.repetition_penalty : z * options_.repetition_penalty;
                }
            for (token_t t : history)
                if (t >= 0 && t < vocab) seen_[std::size_t(t)] = 0;
        }
        if (options_.temperature == 0.0)
            return token_t(std::max_element(logits_.begin(), logits_.end()) - logits_.begin());

        std::iota(order_.begin(), order_.end(), 0);
        index_t keep = vocab;
        // Most likely first; equal values by id, so that a partial sort's prefix is the full sort's.
        auto more_likely = [&](index_t a, index_t b) {
            const double za = logits_[std::size_t(a)], zb = logits_[std::size_t(b)];
            return za > zb || (za == zb && a < b);
        };
        if (options_.top_k > 0 && options_.top_k < vocab) {
            keep = options_.top_k;
            std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), more_likely);
        }
        // Weights exp((z - max) / T) of the kept tokens (order_'s first `keep`), in place of their logits.
        const double top = *std::max_element(logits_.begin(), logits_.end());
        double total = 0;
        for (index_t i = 0; i < keep; ++i) {
            double& z = logits_[std::size_t(order_[std::size_t(i)])];
            z = std::exp((z - top) / options_.temperature);
            total += z;
        }
        if (options_.top_p < 1.0) {
            // The nucleus, most likely first. Without top-k only a prefix of the vocabulary is sorted, grown 8x
            // from 64 as needed: sorting all of a 150K vocabulary took 11 ms a token.
            index_t sorted = keep < vocab ? keep : 0, i = 0;
            double cumulative = 0;
            while (i < keep) {
                if (i == sorted) {
                    const index_t more = std::min(keep, std::max<index_t>(64, 8 * sorted));
                    std::partial_sort(order_.begin() + sorted, order_.begin() + more, order_.end(), more_likely);
                    sorted = more;
                }
                cumulative += logits_[std::size_t(order_[std::size_t(i++)])] / total;
                if (cumulative >= options_.top_p) break;
            }
            keep = i;
            total = 0;
            for (index_t j = 0; j < keep; ++j)
                total += logits_[std::size_t(order_[std::size_t(j)])];
        }
        if (options_.min_p > 0) { // each kept weight is p / p_max: drop those below min_p (the top stays)
            total = 0;
            for (index_t i = 0; i < keep; ++i) {
                double& w = logits_[std::size_t(order_[std::size_t(i)])];
                if (w < options_.min_p) w = 0;
                total += w;
            }
        }
        double u = rng_.uniform() * total;
        index_t last = 0; // the last token with a weight, for a draw that rounding pushes past the end
        for (index_t i = 0; i < keep; ++i) {
            const double w = logits_[std::size_t(order_[std::size_t(i)])];
            if (w == 0) continue;
            last = i;
            u -= w;
            if (u < 0) return token_t(order_[std::size_t(i)]);
        }
        return token_t(order_[std::size_t(last)]);
    }

    const sampling_options& options() const { return options_; }

private:
    sampling_options options_;
    counter_rng rng_;
    std::vector<double> logits_;
    std::vector<index_t> order_;
    std::vector<unsigned char> seen_;
};

} // namespace tl
