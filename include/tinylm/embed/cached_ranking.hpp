// tinylm/embed/cached_ranking.hpp: one training step of the ranking loss (embed/ranking_loss.hpp) on a model
// (embed/embedder.hpp), plain or with a gradient cache (Gao et al. 2021, "Scaling Deep Contrastive Learning
// Batch Size under Memory Limited Setup"; sentence-transformers' CachedMultipleNegativesRankingLoss).
//
// The loss couples every text of the batch, but it depends on the model only through the embeddings. So:
//   1. embed all texts in mini-batches of m without keeping activations          (no graph)
//   2. loss and d(loss)/d(embeddings) for the whole batch                         (B x M scores)
//   3. per mini-batch: embed again keeping activations, backward with its slice   (one mini-batch of graph)
// The parameter gradients are those of the plain step (the chain rule split at the embeddings); the price is a
// second forward pass. Memory: the (n, d) embeddings and their gradients, the (B, M) scores and one
// mini-batch of activations, whatever B is. mini_batch_size = 0 runs the plain step: one embed(train = true)
// over all texts and one backward.
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/embed/embedder.hpp>
#include <tinylm/embed/ranking_loss.hpp>

#include <span>
#include <string>
#include <vector>

namespace tl::embed {

// One batch of texts: B anchors, B positives, B*H hard negatives (anchor b's are rows b*H .. b*H+H-1).
struct text_batch {
    std::span<const std::string> anchors;
    std::span<const std::string> positives;
    std::span<const std::string> negatives = {};
};

struct ranking_step_options {
    ranking_loss_options loss = {};
    index_t mini_batch_size = 32; // texts per embed call in the cached step; 0: the plain (uncached) step
};

// Owns the step's buffers (one arena, grown when a batch needs more than any before).
template <class Bk>
class ranking_step {
public:
    // Forward and backward of one batch: returns the loss and accumulates the model's parameter gradients.
    template <SentenceEmbedder E>
    double run(E& model, const text_batch& batch, const ranking_step_options& opt = {}) {
        const index_t b = index_t(batch.anchors.size()), d = index_t(model.embedding_dim());
        check(b > 0, "ranking_step: empty batch");
        check(index_t(batch.positives.size()) == b, [&] {
            return "ranking_step: " + std::to_string(b) + " anchors but " + std::to_string(batch.positives.size()) +
                   " positives";
        });
        check(batch.negatives.size() % std::size_t(b) == 0, [&] {
            return "ranking_step: " + std::to_string(batch.negatives.size()) + " negatives for " + std::to_string(b) +
                   " anchors (expected H per anchor)";
        });
        check(opt.mini_batch_size >= 0, "ranking_step: mini_batch_size must be >= 0");
        const index_t h = index_t(batch.negatives.size()) / b, n = b * (2 + h);
        const bool cached = opt.mini_batch_size > 0 && opt.mini_batch_size < n;
        const index_t chunk = cached ? opt.mini_batch_size : 0;
        plan(b, h, d, chunk);

        const std::span<const std::string> columns[3] = {batch.anchors, batch.positives, batch.negatives};
        const index_t offsets[3] = {0, b, 2 * b};
        auto rows = [&](tensor_view<float> t, index_t r0, index_t count) {
            return tensor_view<float>{t.data + r0 * d, {count, d}};
        };
        if (cached) {
            for (int c = 0; c < 3; ++c)
                for (std::size_t i = 0; i < columns[c].size(); i += std::size_t(chunk)) {
                    const auto part = columns[c].subspan(i, std::min(std::size_t(chunk), columns[c].size() - i));
                    model.embed(part, rows(emb_, offsets[c] + index_t(i), index_t(part.size())), false);
                }
        } else {
            joined_.clear();
            for (const auto& col : columns)
                joined_.insert(joined_.end(), col.begin(), col.end());
            model.embed(std::span<const std::string>(joined_), emb_, true);
        }

        const double loss = ranking_loss_forward<Bk, float>(ws_, rows(emb_, 0, b), rows(emb_, b, b),
                                                            rows(emb_, 2 * b, b * h), opt.loss);
        ranking_loss_backward<Bk, float>(rows(grad_, 0, b), rows(grad_, b, b), rows(grad_, 2 * b, b * h), ws_,
                                         opt.loss);

        if (!cached) {
            model.backward_embeddings(cview<float>(grad_));
            return loss;
        }
        for (int c = 0; c < 3; ++c)
            for (std::size_t i = 0; i < columns[c].size(); i += std::size_t(chunk)) {
                const auto part = columns[c].subspan(i, std::min(std::size_t(chunk), columns[c].size() - i));
                const index_t count = index_t(part.size());
                model.embed(part, rows(scratch_, 0, count), true);
                model.backward_embeddings(cview<float>(rows(grad_, offsets[c] + index_t(i), count)));
            }
        return loss;
    }

    // Bytes held for the largest batch so far (the model's activations are the model's own).
    std::size_t workspace_bytes() const { return arena_.capacity(); }

private:
    struct buffers {
        tensor_view<float> emb, grad, scratch;
        ranking_loss_workspace<float> ws;
    };
    static buffers allocate(arena& a, index_t b, index_t h, index_t d, index_t chunk) {
        const index_t n = b * (2 + h);
        return {a.allocate<float>({n, d}), a.allocate<float>({n, d}), a.allocate<float>({chunk, d}),
                ranking_loss_workspace<float>::allocate(a, b, h, d)};
    }
    void plan(index_t b, index_t h, index_t d, index_t chunk) {
        const buffers u = plan_in(arena_, [&](arena& a) { return allocate(a, b, h, d, chunk); });
        emb_ = u.emb, grad_ = u.grad, scratch_ = u.scratch, ws_ = u.ws;
    }

    arena arena_;
    tensor_view<float> emb_, grad_, scratch_;
    ranking_loss_workspace<float> ws_;
    std::vector<std::string> joined_; // the plain step's texts in one call (anchors, positives, negatives)
};

} // namespace tl::embed
