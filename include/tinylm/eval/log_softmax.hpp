// tinylm/eval/log_softmax.hpp: one token's log-probability from a row of f32 logits, taken in double, the way the
// evaluations score tokens (lm-eval's log_softmax at one index; bits per byte's -ln p), and whether the token is the
// row's argmax (the first of equal maxima, as torch's argmax).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

namespace tl::eval {

struct token_log_prob {
    double value = 0; // ln softmax(row)[target]
    bool greedy = false;
};

inline token_log_prob log_softmax_at(std::span<const float> row, std::size_t target) {
    const std::size_t best = std::size_t(std::max_element(row.begin(), row.end()) - row.begin());
    const double top = row[best];
    double sum = 0;
    for (const float z : row)
        sum += std::exp(double(z) - top);
    return {double(row[target]) - top - std::log(sum), best == target};
}

} // namespace tl::eval
