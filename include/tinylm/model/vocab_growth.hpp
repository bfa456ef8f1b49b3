// tinylm/model/vocab_growth.hpp: training a grown vocabulary in stages and judging the new tokens (issue 16).
//
//   tl::set_vocab_stage(model, tl::vocab_stage::new_rows, new_ids);        // stage 1: only the new rows train
//   ... trainer ...
//   tl::set_vocab_stage(model, tl::vocab_stage::embeddings_and_head, new_ids);   // stage 2
//   tl::set_vocab_stage(model, tl::vocab_stage::all, new_ids);             // stage 3 (full fine-tuning)
//
// Stage 3 as LoRA: a decoder whose adapter sets trainable_embeddings (model/config.hpp) gives the embedding
// and head gradient memory; `all` then trains the adapter, the embedding and the head (saved as peft's
// modules_to_save) and `all_but_old_rows` the adapter and the new rows only (peft's trainable_token_indices).
//
//   tl::nearest_tokens(model, id, 10, tl::token_side::input)   // old tokens closest by cosine
//   tl::mean_kl(before, after, ids, T)                         // KL(before ‖ after) per position
//   tl::new_token_mass(model, ids, T, first_new_id)            // probability the model gives the new tokens
//   tl::perplexity(model, ids, T)
//
// The stages use freezing and row masks (model/parameter_table.hpp): in stage 1 the optimizer leaves every other
// row, and its moments, untouched, so the old vocabulary and the rest of the model stay bit-identical.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/model/parameter.hpp>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tl {

enum class vocab_stage {
    new_rows,            // the new rows of the embedding (and of an untied head) only
    embeddings_and_head, // the whole embedding and head
    all,                 // every parameter (with an adapter: the adapter, the embedding and the head)
    all_but_old_rows,    // every parameter, but only the new rows of the embedding and head
};

// Sets what trains for `stage`; new_ids are the added tokens' ids. Under an adapter the frozen base (no
// gradient memory) stays frozen in every stage; the embedding and head train only when the adapter has
// trainable_embeddings.
template <class M>
void set_vocab_stage(M& model, vocab_stage stage, std::span<const token_t> new_ids) {
    const index_t V = model.config().vocab_size;
    const bool everything = stage == vocab_stage::all || stage == vocab_stage::all_but_old_rows;
    model.set_trainable([](const parameter_entry& e) { return e.grad.data != nullptr; }, everything);
    model.set_row_mask(param_group::embedding, {});
    model.set_row_mask(param_group::head, {});
    if (stage == vocab_stage::all) return;
    if (!everything) {
        model.set_trainable(param_group::embedding, true);
        model.set_trainable(param_group::head, true); // no entry when tied: the head is the embedding
    }
    if (stage == vocab_stage::embeddings_and_head) return;
    check(!new_ids.empty(), "set_vocab_stage: stages new_rows and all_but_old_rows need the new tokens' ids");
    std::vector<std::uint8_t> mask(std::size_t(V), 0);
    for (token_t id : new_ids) {
        check(id >= 0 && index_t(id) < V, [&] {
            return "set_vocab_stage: new token id " + std::to_string(id) + " is outside the vocabulary of " +
                   std::to_string(V) + " (resize the model first)";
        });
        mask[std::size_t(id)] = 1;
    }
    model.set_row_mask(param_group::embedding, mask);
    model.set_row_mask(param_group::head, mask);
}

enum class token_side { input, output };

// The (V, d) matrix of the input embedding or of the output head (the embedding when tied).
template <class M>
cview<float> token_matrix(const M& model, token_side side) {
    const param_group want =
        side == token_side::output && !model.config().tied_embeddings ? param_group::head : param_group::embedding;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.group == want && e.value.shape.rank == 2 && e.value.dim(0) == model.config().vocab_size)
            return cview<float>{e.value.data, e.value.shape};
    fail("token_matrix: the model has no vocabulary matrix for this side");
}

// The k tokens with the largest cosine similarity to token `id` (itself excluded), best first; only ids below
// `limit` (default: all) are candidates, e.g. the old vocabulary.
template <class M>
std::vector<std::pair<token_t, double>> nearest_tokens(const M& model, token_t id, std::size_t k, token_side side,
                                                       index_t limit = -1) {
    const cview<float> w = token_matrix(model, side);
    const index_t V = w.dim(0), d = w.dim(1);
    if (limit < 0) limit = V;
    check(id >= 0 && index_t(id) < V, [&] { return "nearest_tokens: id " + std::to_string(id) + " is out of range"; });
    auto norm = [&](index_t r) {
        double s = 0;
        for (index_t j = 0; j < d; ++j)
            s += double(w.data[r * d + j]) * w.data[r * d + j];
        return std::sqrt(s);
    };
    const double n0 = norm(id);
    std::vector<std::pair<token_t, double>> all;
    for (index_t r = 0; r < std::min(limit, V); ++r) {
        if (r == index_t(id)) continue;
        double dot = 0;
        for (index_t j = 0; j < d; ++j)
            dot += double(w.data[r * d + j]) * w.data[index_t(id) * d + j];
        const double nr = norm(r);
        all.emplace_back(token_t(r), n0 > 0 && nr > 0 ? dot / (n0 * nr) : 0.0);
    }
    const std::size_t n = std::min(k, all.size());
    std::partial_sort(all.begin(), all.begin() + std::ptrdiff_t(n), all.end(),
                      [](const auto& a, const auto& b) { return a.second > b.second; });
    all.resize(n);
    return all;
}

// Cosine similarity of two tokens' rows.
template <class M>
double token_cosine(const M& model, token_t a, token_t b, token_side side) {
    const cview<float> w = token_matrix(model, side);
    const index_t V = w.dim(0), d = w.dim(1);
    check(a >= 0 && b >= 0 && index_t(a) < V && index_t(b) < V, "token_cosine: id out of range");
    double dot = 0, na = 0, nb = 0;
    for (index_t j = 0; j < d; ++j) {
        const double x = w.data[index_t(a) * d + j], y = w.data[index_t(b) * d + j];
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
}

namespace detail {
// Calls f(t, log_probs) for every position of `ids` cut into windows of T (the last one shorter), log_probs
// the model's log-softmax (double) at that position.
template <class M, class F>
void for_each_log_prob(M& model, std::span<const token_t> ids, index_t T, F&& f) {
    check(T > 0, "vocab diagnostics: the window length must be positive");
    const index_t V = model.config().vocab_size;
    std::vector<float> logits;
    std::vector<double> lp(std::size_t(V), 0.0);
    for (std::size_t at = 0; at < ids.size(); at += std::size_t(T)) {
        const index_t n = index_t(std::min<std::size_t>(std::size_t(T), ids.size() - at));
        model.plan(1, n);
        logits.resize(std::size_t(n * V));
        model.logits(cview<token_t>{ids.data() + at, {1, n}}, tensor_view<float>{logits.data(), {1, n, V}});
        for (index_t t = 0; t < n; ++t) {
            const float* z = logits.data() + t * V;
            double mx = z[0];
            for (index_t v = 0; v < V; ++v)
                mx = std::max(mx, double(z[v]));
            double s = 0;
            for (index_t v = 0; v < V; ++v)
                s += std::exp(double(z[v]) - mx);
            const double lse = mx + std::log(s);
            for (index_t v = 0; v < V; ++v)
                lp[std::size_t(v)] = double(z[v]) - lse;
            f(at + std::size_t(t), lp);
        }
    }
}
} // namespace detail

// Mean over positions of KL(before ‖ after) in nats; `after` may have more tokens (before gives them 0) and be
// another type (a LoRA stage against the plain original).
template <class M1, class M2>
double mean_kl(M1& before, M2& after, std::span<const token_t> ids, index_t T) {
    check(after.config().vocab_size >= before.config().vocab_size, "mean_kl: `after` has the smaller vocabulary");
    std::vector<std::vector<double>> p;
    detail::for_each_log_prob(before, ids, T, [&](std::size_t, const std::vector<double>& lp) { p.push_back(lp); });
    double kl = 0;
    detail::for_each_log_prob(after, ids, T, [&](std::size_t t, const std::vector<double>& lq) {
        for (std::size_t v = 0; v < p[t].size(); ++v)
            kl += std::exp(p[t][v]) * (p[t][v] - lq[v]);
    });
    return ids.empty() ? 0.0 : kl / double(ids.size());
}

// Mean over positions of the probability the model gives tokens with id >= first_new.
template <class M>
double new_token_mass(M& model, std::span<const token_t> ids, index_t T, token_t first_new) {
    double mass = 0;
    detail::for_each_log_prob(model, ids, T, [&](std::size_t, const std::vector<double>& lp) {
        for (std::size_t v = std::size_t(first_new); v < lp.size(); ++v)
            mass += std::exp(lp[v]);
    });
    return ids.empty() ? 0.0 : mass / double(ids.size());
}

// exp(mean cross-entropy of each next token), windows of T (each window predicts its own next tokens).
template <class M>
double perplexity(M& model, std::span<const token_t> ids, index_t T) {
    double nll = 0;
    std::size_t n = 0;
    detail::for_each_log_prob(model, ids, T, [&](std::size_t t, const std::vector<double>& lp) {
        const std::size_t window_end = std::min(ids.size(), (t / std::size_t(T) + 1) * std::size_t(T));
        if (t + 1 >= window_end) return;
        nll -= lp[std::size_t(ids[t + 1])];
        ++n;
    });
    check(n > 0, "perplexity: the text is too short (needs two tokens in a window)");
    return std::exp(nll / double(n));
}

} // namespace tl
