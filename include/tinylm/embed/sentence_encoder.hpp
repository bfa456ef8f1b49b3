// tinylm/embed/sentence_encoder.hpp: texts -> sentence embeddings, as sentence-transformers' Transformer ->
// Pooling -> (Normalize) pipeline, forward and backward:
//
//   ids, type_ids, lengths = tokenize(texts, max_length)        (right padding; texts over max_length truncated)
//   h = encoder.forward(ids, lengths, type_ids)                  (model/encoder.hpp)
//   e = pool(h, lengths)  [ e = e / |e| ]                        (ops/pooling.hpp: mean, cls or max)
//
// It is a SentenceEmbedder (embed/embedder.hpp): embed(texts, out, train) then backward_embeddings(d) train the
// encoder through any loss on embeddings (embed/ranking_loss.hpp). encode() is the inference path: texts sorted
// by length and cut into batches so that little padding is computed, embeddings returned in the input order.
//
// The tokenizer is any function from texts to a token_batch, so a WordPiece, BPE or any other tokenizer serves.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/tensor.hpp>
#include <tinylm/core/token.hpp>
#include <tinylm/model/backward_hook.hpp>
#include <tinylm/ops/pooling.hpp>

#include <algorithm>
#include <functional>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace tl::embed {

// Texts as the encoder takes them: (batch, time) rows of ids and token types, right-padded.
struct token_batch {
    std::vector<token_t> ids, type_ids; // batch * time
    std::vector<index_t> lengths;       // real tokens per row
    index_t batch = 0, time = 0;
    index_t truncated = 0; // texts cut at max_length
};
using batch_tokenizer = std::function<token_batch(std::span<const std::string> texts, index_t max_length)>;

// sentence-transformers' sentence_bert_config.json (max_seq_length) and Pooling / Normalize modules.
struct sentence_config {
    pooling_mode pooling = pooling_mode::mean;
    bool normalize = true;
    index_t max_length = 256; // tokens, the special ones included
    // Pack the texts of a call into one row (document starts; no padding computed) instead of padding each to
    // the longest: the same embeddings, less work when lengths differ (queries and documents in one step).
    bool pack = true;
};

template <class Model>
class sentence_encoder {
public:
    sentence_encoder(Model& model, batch_tokenizer tokenize, sentence_config config)
        : model_(model), tokenize_(std::move(tokenize)), config_(config) {
        check(config_.max_length >= 2 && config_.max_length <= model_.config().max_seq_len, [&] {
            return "sentence_encoder: max_length " + std::to_string(config_.max_length) + " must be in [2, " +
                   std::to_string(model_.config().max_seq_len) + "] (the model's position table)";
        });
    }

    index_t embedding_dim() const { return model_.hidden_size(); }
    const sentence_config& config() const { return config_; }
    Model& model() { return model_; }
    // Texts cut at max_length since construction (callers print a counted warning), of all texts embedded (a
    // text embedded twice counts twice, as in the gradient cache's two passes).
    index_t truncated_texts() const { return truncated_; }
    index_t embedded_texts() const { return embedded_; }

    // out (n, d) = the embeddings of `texts`; train keeps what backward_embeddings needs.
    void embed(std::span<const std::string> texts, tensor_view<float> out, bool train) {
        const index_t n = index_t(texts.size()), d = embedding_dim();
        check(n > 0, "sentence_encoder::embed: no texts");
        expect_shape("sentence_encoder::embed", "out", out, {n, d});
        tokens_ = tokenize_(texts, config_.max_length);
        truncated_ += tokens_.truncated;
        embedded_ += n;
        const index_t B = tokens_.batch, T = tokens_.time;
        check(B == n && index_t(tokens_.ids.size()) == B * T && index_t(tokens_.lengths.size()) == B,
              "sentence_encoder: the tokenizer returned a malformed batch");
        pooled_.resize(std::size_t(n * d));
        arg_.resize(std::size_t(n * d));
        norms_.resize(std::size_t(n));
        const tensor_view<float> pooled = config_.normalize ? tensor_view<float>{pooled_.data(), {n, d}} : out;
        if (config_.pack) {
            pack_tokens();
            const index_t total = index_t(packed_ids_.size());
            const cview<token_t> types = model_.config().type_vocab_size > 0
                                             ? cview<token_t>{packed_types_.data(), {1, total}}
                                             : cview<token_t>{};
            const cview<float> h = model_.forward(cview<token_t>{packed_ids_.data(), {1, total}}, {}, types, train,
                                                  cview<index_t>{doc_start_.data(), {1, total}});
            pool_packed_forward<float>(config_.pooling, pooled, {arg_.data(), {n, d}}, h, {starts_.data(), {B}},
                                       {tokens_.lengths.data(), {B}});
        } else {
            const cview<float> h = model_.forward(cview<token_t>{tokens_.ids.data(), {B, T}},
                                                  cview<index_t>{tokens_.lengths.data(), {B}}, type_ids(B, T), train);
            pool_forward<float>(config_.pooling, pooled, {arg_.data(), {n, d}}, h.reshaped({B, T, d}),
                                {tokens_.lengths.data(), {B}});
        }
        if (config_.normalize) {
            l2_normalize_forward<float>(out, {norms_.data(), {n}}, pooled);
            normed_.assign(out.data, out.data + n * d); // y, for the backward
        }
        has_forward_ = train;
    }

    // Adds the encoder's parameter gradients for d = d(loss)/d(embeddings) of the last embed(train = true).
    // `hook`: the encoder's backward hook (model/backward_hook.hpp), called as gradients become final.
    void backward_embeddings(cview<float> d, const backward_hook& hook = {}) {
        check(has_forward_, "sentence_encoder::backward_embeddings: call embed(..., train = true) first");
        has_forward_ = false;
        const index_t B = tokens_.batch, T = tokens_.time, w = embedding_dim();
        expect_shape("sentence_encoder::backward_embeddings", "d", d, {B, w});
        dpooled_.resize(std::size_t(B * w));
        cview<float> dpool = d;
        if (config_.normalize) {
            l2_normalize_backward<float>({dpooled_.data(), {B, w}}, d, {normed_.data(), {B, w}}, {norms_.data(), {B}});
            dpool = {dpooled_.data(), {B, w}};
        }
        if (config_.pack) {
            const index_t total = index_t(packed_ids_.size());
            dhidden_.resize(std::size_t(total * w));
            pool_packed_backward<float>(config_.pooling, {dhidden_.data(), {total, w}}, dpool, {arg_.data(), {B, w}},
                                        {starts_.data(), {B}}, {tokens_.lengths.data(), {B}});
            model_.backward_from_hidden(cview<float>{dhidden_.data(), {total, w}}, hook);
            return;
        }
        dhidden_.resize(std::size_t(B * T * w));
        pool_backward<float>(config_.pooling, {dhidden_.data(), {B, T, w}}, dpool, {arg_.data(), {B, w}},
                             {tokens_.lengths.data(), {B}});
        model_.backward_from_hidden(cview<float>{dhidden_.data(), {B * T, w}}, hook);
    }

    // Inference: the embeddings (n, d) of `texts` in batches of batch_size, longest texts first (as
    // sentence-transformers' encode), returned in the input order. `progress(done, n)` after each batch.
    std::vector<float> encode(std::span<const std::string> texts, index_t batch_size = 64,
                              const std::function<void(index_t, index_t)>& progress = {}) {
        check(batch_size > 0, "sentence_encoder::encode: batch_size must be positive");
        const index_t n = index_t(texts.size()), d = embedding_dim();
        std::vector<index_t> order(texts.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
            return texts[std::size_t(a)].size() > texts[std::size_t(b)].size();
        });
        std::vector<float> result(std::size_t(n * d)), chunk;
        std::vector<std::string> batch;
        for (index_t begin = 0; begin < n; begin += batch_size) {
            const index_t end = std::min(n, begin + batch_size);
            batch.clear();
            for (index_t i = begin; i < end; ++i)
                batch.push_back(texts[std::size_t(order[std::size_t(i)])]);
            chunk.resize(std::size_t((end - begin) * d));
            embed(batch, {chunk.data(), {end - begin, d}}, false);
            for (index_t i = begin; i < end; ++i)
                std::copy_n(chunk.data() + (i - begin) * d, d, result.data() + order[std::size_t(i)] * d);
            if (progress) progress(end, n);
        }
        return result;
    }

private:
    // The real tokens of the padded batch, text after text in one row, with each token's text start.
    void pack_tokens() {
        const index_t B = tokens_.batch, T = tokens_.time;
        packed_ids_.clear(), packed_types_.clear(), doc_start_.clear(), starts_.clear();
        for (index_t b = 0; b < B; ++b) {
            const index_t start = index_t(packed_ids_.size()), len = tokens_.lengths[std::size_t(b)];
            starts_.push_back(start);
            for (index_t t = 0; t < len; ++t) {
                packed_ids_.push_back(tokens_.ids[std::size_t(b * T + t)]);
                packed_types_.push_back(tokens_.type_ids.empty() ? 0 : tokens_.type_ids[std::size_t(b * T + t)]);
                doc_start_.push_back(start);
            }
        }
    }
    cview<token_t> type_ids(index_t B, index_t T) const {
        if (model_.config().type_vocab_size == 0) return {};
        check(index_t(tokens_.type_ids.size()) == B * T, "sentence_encoder: the tokenizer returned no type ids");
        return {tokens_.type_ids.data(), {B, T}};
    }

    Model& model_;
    batch_tokenizer tokenize_;
    sentence_config config_;
    token_batch tokens_;
    std::vector<float> pooled_, normed_, norms_, dpooled_, dhidden_;
    std::vector<index_t> arg_;
    std::vector<token_t> packed_ids_, packed_types_; // pack: (1, N) real tokens
    std::vector<index_t> doc_start_, starts_;        // pack: each token's text start (N), each text's start (B)
    index_t truncated_ = 0, embedded_ = 0;
    bool has_forward_ = false;
};

} // namespace tl::embed
