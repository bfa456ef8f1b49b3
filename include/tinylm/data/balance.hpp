// tinylm/data/balance.hpp: sample a labelled corpus to a target class mix (issue 22).
//
//   balance_result r = balance(labels, num_classes, {.seed = 1});   // uniform mix, no replacement
//   for (std::size_t i : r.indices) keep(corpus[i]);
//
// Each class k gets target_k = total * mix_k examples (largest remainders, so the targets sum to total exactly).
// A class with at least target_k examples gives a seeded sample without replacement; a smaller one gives all its
// examples and, when replacement is allowed, the rest drawn again with replacement (otherwise it stays short).
// total = 0 picks the largest total every class can fill without replacement: min_k(count_k / mix_k).
// The result carries the class histogram before and after, which the recipes print.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace tl::data {

struct balance_options {
    std::vector<double> mix{}; // per class, any positive scale (normalised); empty: uniform
    std::size_t total = 0;     // examples in the result; 0: the most reachable without replacement
    bool replacement = true;   // let a short class repeat examples to reach its target
    std::uint64_t seed = 1;
};

struct balance_result {
    std::vector<std::size_t> indices;               // into the labels, grouped by class, shuffled within a class
    std::vector<std::size_t> before, after, target; // per-class histograms
    std::size_t repeated = 0;                       // examples drawn a second time (replacement)
};

// Targets per class summing to `total` exactly: floor of total * mix_k, then the largest remainders get one more.
inline std::vector<std::size_t> class_targets(std::span<const double> mix, std::size_t total) {
    const double sum = std::accumulate(mix.begin(), mix.end(), 0.0);
    std::vector<std::size_t> target(mix.size());
    std::vector<std::pair<double, std::size_t>> remainder;
    std::size_t given = 0;
    for (std::size_t k = 0; k < mix.size(); ++k) {
        const double exact = double(total) * mix[k] / sum;
        target[k] = std::size_t(std::floor(exact));
        given += target[k];
        remainder.emplace_back(exact - std::floor(exact), k);
    }
    std::stable_sort(remainder.begin(), remainder.end(), [](auto& a, auto& b) { return a.first > b.first; });
    for (std::size_t i = 0; given < total; ++i, ++given)
        ++target[remainder[i % remainder.size()].second];
    return target;
}

inline balance_result balance(std::span<const int> labels, int num_classes, const balance_options& opt = {}) {
    check(num_classes > 0, "balance: num_classes must be positive");
    const std::size_t K = std::size_t(num_classes);
    std::vector<double> mix = opt.mix.empty() ? std::vector<double>(K, 1.0) : opt.mix;
    check(mix.size() == K, [&] {
        return "balance: mix has " + std::to_string(mix.size()) + " entries for " + std::to_string(K) + " classes";
    });
    for (double m : mix)
        check(m > 0 && std::isfinite(m), "balance: every mix entry must be positive and finite");

    balance_result r;
    r.before.assign(K, 0);
    std::vector<std::vector<std::size_t>> members(K);
    for (std::size_t i = 0; i < labels.size(); ++i) {
        check(labels[i] >= 0 && labels[i] < num_classes, [&] {
            return "balance: label " + std::to_string(labels[i]) + " at index " + std::to_string(i) +
                   " is outside [0, " + std::to_string(num_classes) + ")";
        });
        members[std::size_t(labels[i])].push_back(i);
        ++r.before[std::size_t(labels[i])];
    }
    std::size_t total = opt.total;
    if (total == 0) { // the largest total with target_k <= count_k for every k
        const double sum = std::accumulate(mix.begin(), mix.end(), 0.0);
        double most = INFINITY;
        for (std::size_t k = 0; k < K; ++k)
            most = std::min(most, double(r.before[k]) * sum / mix[k]);
        total = std::size_t(std::floor(most + 1e-9));
        // Rounding may still ask one more than a class holds; step down until none does.
        while (total > 0) {
            const auto t = class_targets(mix, total);
            bool fits = true;
            for (std::size_t k = 0; k < K; ++k)
                fits = fits && t[k] <= r.before[k];
            if (fits) break;
            --total;
        }
    }
    r.target = class_targets(mix, total);
    r.after.assign(K, 0);
    counter_rng rng(opt.seed, 0xba1a);
    for (std::size_t k = 0; k < K; ++k) {
        std::vector<std::size_t>& m = members[k];
        // Fisher-Yates: a seeded order of the class, whose first target_k entries are the sample.
        for (std::size_t i = m.size(); i > 1; --i)
            std::swap(m[i - 1], m[rng.below(i)]);
        const std::size_t take = std::min(r.target[k], m.size());
        r.indices.insert(r.indices.end(), m.begin(), m.begin() + std::ptrdiff_t(take));
        r.after[k] = take;
        if (opt.replacement && !m.empty())
            for (std::size_t extra = take; extra < r.target[k]; ++extra, ++r.repeated, ++r.after[k])
                r.indices.push_back(m[rng.below(m.size())]);
    }
    return r;
}

} // namespace tl::data
