// tinylm/model/resize_vocabulary.hpp: a model with a larger vocabulary (after tl::add_tokens,
// tokenizer/add_tokens.hpp): the embedding matrix and the LM head grow by new rows, every other parameter and
// every old row is copied bit for bit.
//
//   tl::model_config c = model.config();
//   c.vocab_size = index_t(tok.vocab_size());                 // the run-time vocabulary size (docs/config.md)
//   tl::decoder<tl::families::llama> grown(c);
//   tl::vocab_resize_options o;                               // default: transformers' mean_resizing=True
//   tl::resize_vocabulary_into(model, grown, o);
//
// New rows are initialised by one of:
//   hf_mean        as transformers' resize_token_embeddings(n, mean_resizing=True): the mean of the old rows
//                  plus noise from N(0, 1e-9 Σ), Σ the old rows' covariance (Σ = X_cᵀX_c / N, X_c the centred
//                  rows). transformers draws it through a Cholesky factor of 1e-9 Σ; tinylm draws
//                  sqrt(1e-9 / N) X_cᵀ u with u ~ N(0, I_N), whose covariance is 1e-9 X_cᵀX_c / N = 1e-9 Σ: the
//                  same distribution, without forming the d×d matrix (O(N d) per new row). Like transformers,
//                  when Σ cannot be positive definite (N <= d rows: rank < d) the rows are the plain mean. The
//                  noise is about 3e-5 of the rows' spread, so the new rows equal the mean to ~1e-6; the point is
//                  that a new token's logit h·mean = the mean of the old logits, so the model's predictions
//                  hardly change (KL(before‖after) ≈ 0). The head's bias, where there is one, gets the mean
//                  plus N(0, (1e-9 std)²), as transformers does.
//   subtoken_mean  the mean of the rows of the pieces the word split into before it was added (the better
//                  start for a word that used to be several tokens); `pieces[i]` lists them for new token i.
//   random         N(0, std²), std = random_std or the config's init_std, as a fresh model is initialised.
// The embedding and the head (untied) are chosen separately; a tied model has one matrix, so its head follows
// the embedding and asking for another head init is an error.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/model/parameter.hpp>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tl {

enum class new_row_init { hf_mean, subtoken_mean, random };

struct vocab_resize_options {
    new_row_init embedding_init = new_row_init::hf_mean;
    // Untied models only; unset: the same as embedding_init.
    std::optional<new_row_init> head_init;
    // subtoken_mean: for new token i (id old_vocab + i), the old ids its word split into.
    std::vector<std::vector<token_t>> pieces;
    // random: the standard deviation (<= 0: the config's init_std).
    double random_std = 0;
    // The noise of hf_mean and the draws of random: one counter-based stream per matrix.
    std::uint64_t seed = 0;
    // hf_mean without its noise: the plain mean (deterministic, what the parity test compares).
    bool mean_noise = true;
};

namespace detail {

inline const char* init_name(new_row_init i) {
    switch (i) {
    case new_row_init::hf_mean:
        return "hf_mean";
    case new_row_init::subtoken_mean:
        return "subtoken_mean";
    case new_row_init::random:
        return "random";
    }
    return "?";
}

// Fills rows [n_old, n_new) of the (n_new, d) matrix `w` (rows [0, n_old) hold the old values).
inline void init_new_rows(tensor_view<float> w, index_t n_old, new_row_init how, const vocab_resize_options& o,
                          double std, std::uint64_t stream, const std::string& name) {
    const index_t n_new = w.dim(0), d = w.dim(1);
    float* data = w.data;
    auto row = [&](index_t r) { return data + r * d; };
    if (how == new_row_init::random) {
        counter_rng rng(o.seed, stream);
        for (index_t r = n_old; r < n_new; ++r)
            for (index_t j = 0; j < d; ++j)
                row(r)[j] = float(rng.normal() * std);
        return;
    }
    if (how == new_row_init::subtoken_mean) {
        check(index_t(o.pieces.size()) == n_new - n_old, [&] {
            return "resize_vocabulary: subtoken_mean needs the pieces of each of the " + std::to_string(n_new - n_old) +
                   " new tokens; got " + std::to_string(o.pieces.size());
        });
        std::vector<double> acc(static_cast<std::size_t>(d));
        for (index_t r = n_old; r < n_new; ++r) {
            const auto& ids = o.pieces[std::size_t(r - n_old)];
            check(!ids.empty(), [&] {
                return "resize_vocabulary: new token " + std::to_string(r) + " has no pieces for subtoken_mean";
            });
            std::fill(acc.begin(), acc.end(), 0.0);
            for (token_t id : ids) {
                check(id >= 0 && index_t(id) < n_old, [&] {
                    return "resize_vocabulary: piece id " + std::to_string(id) + " of new token " + std::to_string(r) +
                           " is not an old token (0.." + std::to_string(n_old - 1) + ")";
                });
                for (index_t j = 0; j < d; ++j)
                    acc[std::size_t(j)] += row(index_t(id))[j];
            }
            for (index_t j = 0; j < d; ++j)
                row(r)[j] = float(acc[std::size_t(j)] / double(ids.size()));
        }
        return;
    }
    // hf_mean: the mean in double, then mean + sqrt(1e-9 / N) X_cᵀ u.
    std::vector<double> mean(static_cast<std::size_t>(d), 0.0);
    for (index_t r = 0; r < n_old; ++r)
        for (index_t j = 0; j < d; ++j)
            mean[std::size_t(j)] += row(r)[j];
    for (double& m : mean)
        m /= double(n_old);
    const bool noise = o.mean_noise && n_old > d; // n_old <= d: Σ has rank < d, transformers takes the plain mean
    const double scale = std::sqrt(1e-9 / double(n_old));
    counter_rng rng(o.seed, stream);
    std::vector<double> acc(static_cast<std::size_t>(d));
    for (index_t r = n_old; r < n_new; ++r) {
        std::fill(acc.begin(), acc.end(), 0.0);
        if (noise)
            for (index_t k = 0; k < n_old; ++k) {
                const double u = rng.normal();
                const float* x = row(k);
                for (index_t j = 0; j < d; ++j)
                    acc[std::size_t(j)] += u * (double(x[j]) - mean[std::size_t(j)]);
            }
        for (index_t j = 0; j < d; ++j)
            row(r)[j] = float(mean[std::size_t(j)] + scale * acc[std::size_t(j)]);
    }
    (void)name;
}

// A bias over the vocabulary: new entries mean + N(0, (1e-9 std)²) (hf_mean; transformers), else the mean.
inline void init_new_bias(tensor_view<float> b, index_t n_old, std::uint64_t seed, std::uint64_t stream) {
    double mean = 0, sq = 0;
    for (index_t i = 0; i < n_old; ++i)
        mean += b.data[i];
    mean /= double(n_old);
    for (index_t i = 0; i < n_old; ++i)
        sq += (b.data[i] - mean) * (b.data[i] - mean);
    const double std = n_old > 1 ? std::sqrt(sq / double(n_old - 1)) : 0.0;
    counter_rng rng(seed, stream);
    for (index_t i = n_old; i < b.dim(0); ++i)
        b.data[i] = float(mean + rng.normal() * 1e-9 * std);
}

} // namespace detail

// Copies `from` into `to`, whose configuration must be from's with a vocabulary at least as large, and
// initialises the new rows of the embedding and the head as `o` says. Old rows and all other parameters are
// copied bit for bit. Errors: a smaller vocabulary, any other difference of configuration (tied against
// untied included), a head init for a tied model.
template <class M>
void resize_vocabulary_into(const M& from, M& to, const vocab_resize_options& o = {}) {
    static_assert(!M::quantized_base, "resize_vocabulary: a QLoRA base is NF4; resize the f32 model, then quantise");
    const model_config& a = from.config();
    const model_config& b = to.config();
    const index_t n_old = a.vocab_size, n_new = b.vocab_size;
    check(n_new >= n_old, [&] {
        return "resize_vocabulary: the new vocabulary (" + std::to_string(n_new) +
               ") is smaller than the current one (" + std::to_string(n_old) + "); tinylm only grows a vocabulary";
    });
    check(a.tied_embeddings == b.tied_embeddings, [&] {
        return std::string("resize_vocabulary: the model has ") + (a.tied_embeddings ? "tied" : "untied") +
               " embeddings and the target " + (b.tied_embeddings ? "tied" : "untied") +
               " ones; give the target the model's tied_embeddings";
    });
    model_config same = b;
    same.vocab_size = a.vocab_size;
    check(same == a, "resize_vocabulary: the target's configuration differs from the model's in more than "
                     "vocab_size");
    const new_row_init head_init = o.head_init.value_or(o.embedding_init);
    check(!a.tied_embeddings || head_init == o.embedding_init, [&] {
        return std::string("resize_vocabulary: the model's embeddings are tied, so the head is the embedding (") +
               detail::init_name(o.embedding_init) + "); head_init " + detail::init_name(head_init) +
               " is for untied models";
    });
    const double std = o.random_std > 0 ? o.random_std : a.init_std;
    const auto& src = from.parameter_entries();
    const auto& dst = to.parameter_entries();
    check(src.size() == dst.size(), "resize_vocabulary: the models have different parameter lists");
    for (std::size_t i = 0; i < src.size(); ++i) {
        const parameter_entry& s = src[i];
        const parameter_entry& t = dst[i];
        check(s.name == t.name, [&] { return "resize_vocabulary: parameter " + s.name + " against " + t.name; });
        const bool grows = (s.group == param_group::embedding || s.group == param_group::head) &&
                           s.value.dim(0) == n_old && t.value.dim(0) == n_new && n_new != n_old;
        if (!grows) {
            check(s.value.numel() == t.value.numel(),
                  [&] { return "resize_vocabulary: " + s.name + " differs in shape"; });
            std::memcpy(t.value.data, s.value.data, std::size_t(s.value.numel()) * sizeof(float));
            continue;
        }
        const index_t row = s.value.numel() / n_old; // d for matrices, 1 for a bias
        std::memcpy(t.value.data, s.value.data, std::size_t(s.value.numel()) * sizeof(float));
        if (row == 1) {
            detail::init_new_bias(t.value, n_old, o.seed, i);
            continue;
        }
        const new_row_init how = s.group == param_group::embedding ? o.embedding_init : head_init;
        detail::init_new_rows(t.value, n_old, how, o, std, i, s.name);
    }
}

// The same, returning a new model (M is built from the model's configuration with `new_vocab_size`).
template <class M>
std::unique_ptr<M> resize_vocabulary(const M& from, index_t new_vocab_size, const vocab_resize_options& o = {}) {
    check(new_vocab_size >= from.config().vocab_size, [&] {
        return "resize_vocabulary: the new vocabulary (" + std::to_string(new_vocab_size) +
               ") is smaller than the current one (" + std::to_string(from.config().vocab_size) +
               "); tinylm only grows a vocabulary";
    });
    model_config c = from.config();
    c.vocab_size = new_vocab_size;
    auto to = std::make_unique<M>(c);
    resize_vocabulary_into(from, *to, o);
    return to;
}

} // namespace tl
