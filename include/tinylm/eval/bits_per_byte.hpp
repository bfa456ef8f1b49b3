// tinylm/eval/bits_per_byte.hpp: perplexity and bits per byte of held-out text.
//
//   bits per byte = (sum over the text's tokens of -ln p(token | tokens before)) / (ln 2 * UTF-8 bytes of the text)
//
// Bytes do not depend on the tokenizer, so models with different vocabularies compare on this number
// (perplexity per token does not). Each document is scored on its own: its first token is predicted from the
// prefix token (<bos>) when the tokenizer has one; without one the first token cannot be predicted, is left
// out of the loss and counted in `unscored_tokens` (its bytes stay in the denominator, so the figure is a
// slight underestimate; say so when comparing).
//
// Windows. A document longer than the model's context is scored in windows of `context` tokens that advance
// by `stride` tokens; every token is scored exactly once, in the first window that reaches it, with at least
// context - stride tokens before it (fewer at the start of the document):
//
//   stride == context (the default): disjoint windows, lm-evaluation-harness's loglikelihood_rolling;
//   stride <  context: overlapping windows, more context per token, context / stride times the compute
//                      (Hugging Face's "perplexity of fixed-length models" recipe).
//
// The losses come from the decoder's eval_loss (chunked cross-entropy, no dropout); windows are sorted by
// length and batched with right padding (targets -100), which causal attention makes exact.
//
// By steps (`by_steps`): each window is instead fed one token a step through forward_cached, as generation feeds
// its tokens, and each target scored from that step's logits. The numbers are then those of the model decoding
// sees: products of up to 8 rows read the decoding copies of the weights where a decoding_weights is live
// (--precision bf16, q8_0, q4_0), and attention reads the KV cache in its precision (--kv-cache bf16). With
// neither, they equal eval_loss's within f32 rounding (a test), at the cost of a forward a token.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/tensor.hpp>
#include <tinylm/eval/log_softmax.hpp>
#include <tinylm/ops/common.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace tl::eval {

struct bpb_options {
    index_t context = 0;       // tokens per window; 0: the model's max_seq_len
    index_t stride = 0;        // tokens a window advances; 0: context (disjoint windows)
    index_t batch = 8;         // windows per forward
    token_t prefix_token = -1; // predicts each document's first token (<bos>); -1: none
    bool by_steps = false;     // score from decoding steps, `batch` windows a step (see the header comment)
    // Called after each batch of windows with the tokens scored so far and in all (long evaluations report with it).
    std::function<void(std::size_t done, std::size_t total)> progress = nullptr;
};

struct bpb_report {
    double nll = 0;                  // nats, summed over the scored tokens
    std::size_t tokens = 0;          // scored tokens
    std::size_t unscored_tokens = 0; // first tokens of documents without a prefix token
    std::size_t bytes = 0;           // UTF-8 bytes of the documents
    std::size_t documents = 0, windows = 0;
    double bits_per_byte() const { return bytes ? nll / (std::numbers::ln2 * double(bytes)) : NAN; }
    double nats_per_token() const { return tokens ? nll / double(tokens) : NAN; }
    double perplexity() const { return std::exp(nats_per_token()); }
};

// One window: the model reads `ids` and is scored where `targets` is not -100.
struct bpb_window {
    std::vector<token_t> ids, targets;
};

// The windows that score every token of one tokenized document once (see the header comment).
inline std::vector<bpb_window> document_windows(std::span<const token_t> doc, index_t context, index_t stride,
                                                token_t prefix_token) {
    check(context > 0 && stride > 0 && stride <= context, "document_windows: need 0 < stride <= context, got stride " +
                                                              std::to_string(stride) + ", context " +
                                                              std::to_string(context));
    std::vector<token_t> s;
    if (prefix_token >= 0) s.push_back(prefix_token);
    s.insert(s.end(), doc.begin(), doc.end());
    std::vector<bpb_window> out;
    const index_t last = index_t(s.size()) - 1; // targets are s[1..last]
    for (index_t scored = 0; scored < last;) {
        const index_t end = std::min(scored == 0 ? context : scored + stride, last); // last target of the window
        const index_t begin = std::max<index_t>(0, end - context);                   // first input position
        bpb_window w;
        w.ids.assign(s.begin() + begin, s.begin() + end);
        for (index_t k = begin + 1; k <= end; ++k)
            w.targets.push_back(k > scored ? s[std::size_t(k)] : -100);
        out.push_back(std::move(w));
        scored = end;
    }
    return out;
}

// The targets a batch of windows scores (for progress).
inline std::size_t scored_targets(std::span<const bpb_window> windows) {
    std::size_t n = 0;
    for (const bpb_window& w : windows)
        n += std::size_t(std::count_if(w.targets.begin(), w.targets.end(), [](token_t t) { return t >= 0; }));
    return n;
}

// Sum of -ln p over the windows' targets (sorted longest first), run in right-padded batches; `done(windows)`
// after each batch.
template <class Model, class Done>
double windows_nll(Model& model, std::span<const bpb_window> windows, index_t batch, Done&& done) {
    double total = 0;
    std::vector<token_t> ids, targets;
    for (std::size_t first = 0; first < windows.size(); first += std::size_t(batch)) {
        const std::size_t n = std::min(windows.size() - first, std::size_t(batch));
        const std::size_t T = windows[first].ids.size();
        ids.assign(n * T, 0);
        targets.assign(n * T, -100);
        for (std::size_t b = 0; b < n; ++b) {
            std::copy(windows[first + b].ids.begin(), windows[first + b].ids.end(),
                      ids.begin() + std::ptrdiff_t(b * T));
            std::copy(windows[first + b].targets.begin(), windows[first + b].targets.end(),
                      targets.begin() + std::ptrdiff_t(b * T));
        }
        const shape sh{index_t(n), index_t(T)};
        double loss = model.eval_loss(cview<token_t>{ids.data(), sh}, cview<token_t>{targets.data(), sh});
        if constexpr (Model::is_moe) loss -= double(model.config().moe.aux_loss_weight) * model.aux_loss();
        total += loss * double(model.counted_targets());
        done(windows.subspan(first, n));
    }
    return total;
}

// The same sum from decoding steps: `batch` windows at a time (sorted longest first) share a cache, each step feeds
// every window its next token (a window already ended is fed token 0; causal attention keeps that from the others) and
// scores its target: -ln softmax(logits)[target], summed in double.
template <class Model, class Done>
double windows_nll_by_steps(const Model& model, std::span<const bpb_window> windows, index_t batch, Done&& done) {
    const std::size_t vocab = std::size_t(model.config().vocab_size);
    double total = 0;
    std::vector<token_t> step;
    std::vector<float> logits;
    for (std::size_t first = 0; first < windows.size(); first += std::size_t(batch)) {
        const std::size_t n = std::min(windows.size() - first, std::size_t(batch));
        const std::size_t T = windows[first].ids.size();
        auto cache = model.make_cache(index_t(n), index_t(T));
        step.assign(n, 0);
        logits.assign(n * vocab, 0.0f);
        for (std::size_t t = 0; t < T; ++t) {
            for (std::size_t b = 0; b < n; ++b) {
                const bpb_window& w = windows[first + b];
                step[b] = t < w.ids.size() ? w.ids[t] : 0;
            }
            model.forward_cached(cache, cview<token_t>{step.data(), {index_t(n), 1}},
                                 tensor_view<float>{logits.data(), {index_t(n), index_t(vocab)}});
            for (std::size_t b = 0; b < n; ++b) {
                const bpb_window& w = windows[first + b];
                if (t >= w.targets.size() || w.targets[t] < 0) continue;
                const std::span<const float> row(logits.data() + b * vocab, vocab);
                total -= log_softmax_at(row, std::size_t(w.targets[t])).value;
            }
        }
        done(windows.subspan(first, n));
    }
    return total;
}

// Bits per byte of tokenized documents; `bytes` is the UTF-8 size of their text.
template <class Model>
bpb_report evaluate_bpb_tokens(Model& model, std::span<const std::vector<token_t>> documents, std::size_t bytes,
                               const bpb_options& options = {}) {
    const index_t context = options.context > 0 ? options.context : model.config().max_seq_len;
    const index_t stride = options.stride > 0 ? options.stride : context;
    check(context <= model.config().max_seq_len,
          "evaluate_bpb: the window is longer than the model's context " + std::to_string(model.config().max_seq_len));
    bpb_report r;
    r.bytes = bytes;
    std::vector<bpb_window> windows;
    for (const std::vector<token_t>& doc : documents) {
        if (doc.empty()) continue;
        ++r.documents;
        if (options.prefix_token < 0) ++r.unscored_tokens;
        r.tokens += doc.size() - (options.prefix_token < 0 ? 1 : 0);
        for (bpb_window& w : document_windows(doc, context, stride, options.prefix_token))
            windows.push_back(std::move(w));
    }
    r.windows = windows.size();
    check(options.batch > 0, "evaluate_bpb: batch must be positive, got " + std::to_string(options.batch));
    // Longest first: a batch is padded to its first window's length, so like lengths share batches.
    std::stable_sort(windows.begin(), windows.end(),
                     [](const bpb_window& a, const bpb_window& b) { return a.ids.size() > b.ids.size(); });
    std::size_t scored = 0;
    auto done = [&](std::span<const bpb_window> batch) {
        scored += scored_targets(batch);
        if (options.progress) options.progress(scored, r.tokens);
    };
    if (options.by_steps) {
        if constexpr (requires { model.make_cache(1, 1); })
            r.nll = windows_nll_by_steps(model, windows, options.batch, done);
        else
            check(false, "evaluate_bpb: scoring by steps needs a model with a KV cache (forward_cached)");
    } else {
        r.nll = windows_nll(model, windows, options.batch, done);
    }
    return r;
}

// Bits per byte of text documents (each scored on its own, see the header comment).
template <class Model>
bpb_report evaluate_bpb(Model& model, const tokenizer& tok, std::span<const std::string> documents,
                        const bpb_options& options = {}) {
    std::vector<std::vector<token_t>> encoded;
    std::size_t bytes = 0;
    encode_cache cache;
    for (const std::string& d : documents) {
        std::vector<token_t> ids;
        tok.encode_into(d, ids, &cache);
        encoded.emplace_back(ids.begin(), ids.end());
        bytes += d.size();
    }
    return evaluate_bpb_tokens(model, std::span<const std::vector<token_t>>(encoded), bytes, options);
}

} // namespace tl::eval
