// tinylm/eval/loglikelihood.hpp: log-likelihood of a continuation given a context, the way
// lm-evaluation-harness computes it for a Hugging Face causal model (lm_eval/api/model.py, _encode_pair and
// loglikelihood; lm_eval/models/huggingface.py, _loglikelihood_tokens; version 0.4.13):
//
//   1. trailing whitespace of the context moves to the front of the continuation;
//   2. context + continuation is encoded as one string, the context alone too, and the continuation's tokens
//      are whole[len(context_tokens):] (so a merge across the boundary stays in the continuation);
//   3. an empty context becomes the prefix token (<bos>, else <eos>), unless the continuation starts with it;
//   4. the model reads (context + continuation)[-(max_len + 1):][:-1] (left truncation) and the result is
//      the sum of log-softmax values of the continuation tokens, plus whether each one is the argmax.
//
// The scores come from the model's logits (f32) with the log-softmax taken in double. Requests are sorted
// by length and run in right-padded batches (causal attention: padding never changes earlier positions).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/tensor.hpp>
#include <tinylm/eval/log_softmax.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/ops/common.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl::eval {

// A decoder (model/decoder.hpp), or anything with its configuration and logits().
template <class M>
concept DecoderModel = requires(const M& m) {
    { m.config() } -> std::convertible_to<const model_config&>;
};

// Token ids of one request: the model reads `context` and is scored on `continuation`.
struct token_request {
    std::vector<token_t> context{}, continuation{};
};

struct ll_result {
    double logprob = 0;                   // sum over the continuation tokens, natural log
    bool greedy = true;                   // every continuation token is the argmax of its position
    std::vector<double> token_logprobs{}; // one per continuation token
};

struct ll_options {
    index_t batch = 8;              // sequences per forward
    token_t prefix_token = -1;      // context of an empty-context request (<bos>, else <eos>); -1: none
    bool add_special_tokens = true; // as Hugging Face's tokenizer(text): the post-processor's tokens
};

// A tokenizer's beginning-of-text token: <bos>, <s>, <|endoftext|> or <eos>, the first one it has; -1 if none.
inline token_t default_prefix_token(const tokenizer& tok) {
    for (const char* name : {"<bos>", "<s>", "<|begin_of_text|>", "<|endoftext|>", "<eos>", "</s>"})
        if (const token_t id = tok.token_to_id(name); id >= 0) return id;
    return -1;
}

// lm-eval's _encode_pair (and the empty-context rule of loglikelihood).
inline token_request encode_pair(const tokenizer& tok, std::string_view context, std::string_view continuation,
                                 const ll_options& options = {}) {
    const encode_options enc{.add_special_tokens = options.add_special_tokens};
    token_request r;
    if (context.empty()) {
        const std::vector<token_t> cont = tok.encode(continuation);
        check(!cont.empty(), "encode_pair: the continuation is empty");
        check(options.prefix_token >= 0,
              "encode_pair: the context is empty and the tokenizer has no <bos>/<eos> to stand in for it");
        if (cont.front() == options.prefix_token) {
            r.context.assign(cont.begin(), cont.begin() + 1);
            r.continuation.assign(cont.begin() + 1, cont.end());
        } else {
            r.context = {options.prefix_token};
            r.continuation.assign(cont.begin(), cont.end());
        }
        return r;
    }
    // Python's str.rstrip() strips Unicode whitespace; the ASCII set covers the prompts written here.
    std::size_t keep = context.size();
    while (keep > 0 && std::string_view(" \t\n\r\v\f").find(context[keep - 1]) != std::string_view::npos)
        --keep;
    const std::string ctx(context.substr(0, keep));
    const std::string cont = std::string(context.substr(keep)) + std::string(continuation);
    const std::vector<token_t> whole = tok.encode(ctx + cont, enc);
    const std::vector<token_t> ctx_ids = tok.encode(ctx, enc);
    r.context.assign(ctx_ids.begin(), ctx_ids.end());
    if (whole.size() > ctx_ids.size())
        r.continuation.assign(whole.begin() + std::ptrdiff_t(ctx_ids.size()), whole.end());
    return r;
}

// Scores token requests with the model; results are in request order.
template <DecoderModel Model>
std::vector<ll_result> score_requests(Model& model, std::span<const token_request> requests, index_t batch = 8) {
    const index_t max_len = model.config().max_seq_len, vocab = model.config().vocab_size;
    check(batch > 0, "score_requests: batch must be positive");
    // What the model reads: (context + continuation)[-(max_len + 1):][:-1].
    std::vector<std::vector<token_t>> inputs(requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const token_request& r = requests[i];
        check(!r.context.empty(), [&] { return "score_requests: request " + std::to_string(i) + " has no context"; });
        check(!r.continuation.empty(),
              [&] { return "score_requests: request " + std::to_string(i) + " has no continuation tokens"; });
        check(index_t(r.continuation.size()) <= max_len, [&] {
            return "score_requests: request " + std::to_string(i) + " has a continuation of " +
                   std::to_string(r.continuation.size()) + " tokens, longer than the context " +
                   std::to_string(max_len);
        });
        std::vector<token_t> whole(r.context);
        whole.insert(whole.end(), r.continuation.begin(), r.continuation.end());
        for (token_t t : whole)
            check(t >= 0 && t < vocab, [&] {
                return "score_requests: token " + std::to_string(t) + " is outside the model's vocabulary of " +
                       std::to_string(vocab);
            });
        const std::size_t begin = whole.size() > std::size_t(max_len) + 1 ? whole.size() - std::size_t(max_len) - 1 : 0;
        inputs[i].assign(whole.begin() + std::ptrdiff_t(begin), whole.end() - 1);
    }
    std::vector<std::size_t> order(requests.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return inputs[a].size() > inputs[b].size(); });

    std::vector<ll_result> results(requests.size());
    std::vector<token_t> ids;
    std::vector<float> logits;
    for (std::size_t first = 0, n = 0; first < order.size(); first += n) {
        // All logits of a batch are materialised: at most ~256 MB of them (one sequence at the least).
        const index_t T = index_t(inputs[order[first]].size());
        const std::size_t fit = std::max<std::size_t>(1, (std::size_t(1) << 26) / std::size_t(T * vocab));
        n = std::min({order.size() - first, std::size_t(batch), fit});
        ids.assign(n * std::size_t(T), 0);
        for (std::size_t b = 0; b < n; ++b)
            std::copy(inputs[order[first + b]].begin(), inputs[order[first + b]].end(),
                      ids.begin() + std::ptrdiff_t(b * std::size_t(T)));
        logits.resize(n * std::size_t(T * vocab));
        model.logits(cview<token_t>{ids.data(), {index_t(n), T}},
                     tensor_view<float>{logits.data(), {index_t(n), T, vocab}});
        for (std::size_t b = 0; b < n; ++b) {
            const std::size_t i = order[first + b];
            const std::vector<token_t>& cont = requests[i].continuation;
            const std::size_t len = inputs[i].size();
            ll_result& out = results[i];
            for (std::size_t j = 0; j < cont.size(); ++j) {
                const std::span<const float> row(logits.data() +
                                                     (b * std::size_t(T) + len - cont.size() + j) * std::size_t(vocab),
                                                 std::size_t(vocab));
                const token_log_prob lp = log_softmax_at(row, std::size_t(cont[j]));
                out.token_logprobs.push_back(lp.value);
                out.logprob += lp.value;
                out.greedy = out.greedy && lp.greedy;
            }
        }
    }
    return results;
}

// Scores (context, continuation) strings: encode_pair, then score_requests.
struct text_request {
    std::string context{}, continuation{};
};

template <DecoderModel Model>
std::vector<ll_result> loglikelihoods(Model& model, const tokenizer& tok, std::span<const text_request> requests,
                                      const ll_options& options = {}) {
    std::vector<token_request> encoded;
    encoded.reserve(requests.size());
    for (const text_request& r : requests)
        encoded.push_back(encode_pair(tok, r.context, r.continuation, options));
    return score_requests(model, std::span<const token_request>(encoded), options.batch);
}

} // namespace tl::eval
