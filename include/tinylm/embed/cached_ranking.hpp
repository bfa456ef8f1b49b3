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
//
// Distributed (ranking_step_options::communicator, N ranks; docs/distributed.md): step 1 embeds only the rank's
// pairs and all-gathers the embeddings, step 2 runs on every rank over the whole batch (the in-batch negatives of
// one process), step 3 back-propagates the rank's own rows; summing the parameter gradients over the ranks
// (embed/data_parallel_ranking.hpp) gives one process's gradients.
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/dist/communicator.hpp>
#include <tinylm/embed/embedder.hpp>
#include <tinylm/embed/ranking_loss.hpp>
#include <tinylm/model/backward_hook.hpp>

#include <algorithm>
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
    // The ranks training together (dist/communicator.hpp); nullptr or a world of one: this process embeds the whole
    // batch. Distributed, rank r embeds its pairs dist::part_of(B, r, N) (their anchors, positives and negatives),
    // the embeddings are all-gathered, and every rank computes the loss of the whole global batch (every query
    // against every document: the in-batch negatives of one process) and its gradient with respect to every
    // embedding, then back-propagates the rows of its own texts. That gradient already holds every rank's queries'
    // contributions, so the parameter gradients summed over the ranks (dist::gradient_buckets) are exactly those
    // of one process on the whole batch. The loss is the global batch's, the same on every rank.
    dist::communicator* communicator = nullptr;
};

// Owns the step's buffers (one arena, grown when a batch needs more than any before).
template <class Bk>
class ranking_step {
public:
    // Forward and backward of one batch: returns the loss and accumulates the model's parameter gradients. `hook`
    // (optional) goes to the step's last backward, the one that makes the gradients final (the model's backward
    // hook, model/backward_hook.hpp: a data-parallel step starts its all-reduce buckets there).
    template <SentenceEmbedder E>
    double run(E& model, const text_batch& batch, const ranking_step_options& opt = {},
               const backward_hook& hook = {}) {
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
        const int ranks = opt.communicator ? opt.communicator->size() : 1;
        const int me = opt.communicator ? opt.communicator->rank() : 0;
        check(b >= ranks, [&] {
            return "ranking_step: a batch of " + std::to_string(b) + " pairs cannot give a pair to each of " +
                   std::to_string(ranks) + " ranks";
        });
        const index_t h = index_t(batch.negatives.size()) / b;
        const bool split = ranks > 1;
        const dist::part pairs = dist::part_of(std::size_t(b), me, ranks);
        const index_t mine = index_t(pairs.count()), most = (b + ranks - 1) / ranks;
        // This rank's texts: rows [first[c], first[c] + count[c]) of column c (anchors, positives, negatives), at
        // row local[c] of its embeddings (laid out as the whole batch's: anchors, positives, negatives).
        const std::span<const std::string> columns[3] = {batch.anchors, batch.positives, batch.negatives};
        const index_t offsets[3] = {0, b, 2 * b};
        const index_t first[3] = {index_t(pairs.begin), index_t(pairs.begin), index_t(pairs.begin) * h};
        const index_t count[3] = {mine, mine, mine * h};
        const index_t local[3] = {0, mine, 2 * mine};
        const index_t n_mine = mine * (2 + h);
        const bool cached = opt.mini_batch_size > 0 && opt.mini_batch_size < n_mine;
        const index_t chunk = cached ? opt.mini_batch_size : 0;
        plan(b, h, d, chunk, split ? most : 0, split ? ranks : 0);
        // One process: its texts are the batch, embedded in place. Distributed: into mine_, then gathered.
        const tensor_view<float> embedded = split ? tensor_view<float>{mine_.data, {n_mine, d}} : emb_;

        auto rows = [&](tensor_view<float> t, index_t r0, index_t n) {
            return tensor_view<float>{t.data + r0 * d, {n, d}};
        };
        auto texts = [&](int c, index_t i, index_t n) {
            return columns[c].subspan(std::size_t(first[c] + i), std::size_t(n));
        };
        if (cached) {
            for (int c = 0; c < 3; ++c)
                for (index_t i = 0; i < count[c]; i += chunk) {
                    const index_t n = std::min(chunk, count[c] - i);
                    model.embed(texts(c, i, n), rows(embedded, local[c] + i, n), false);
                }
        } else {
            joined_.clear();
            for (int c = 0; c < 3; ++c) {
                const auto part = texts(c, 0, count[c]);
                joined_.insert(joined_.end(), part.begin(), part.end());
            }
            model.embed(std::span<const std::string>(joined_), embedded, true);
        }
        if (split) gather(*opt.communicator, b, h, d, most);

        const double loss = ranking_loss_forward<Bk, float>(ws_, rows(emb_, 0, b), rows(emb_, b, b),
                                                            rows(emb_, 2 * b, b * h), opt.loss);
        ranking_loss_backward<Bk, float>(rows(grad_, 0, b), rows(grad_, b, b), rows(grad_, 2 * b, b * h), ws_,
                                         opt.loss);
        // The gradient of this rank's texts, laid out as its embeddings.
        tensor_view<float> dmine = grad_;
        if (split) {
            dmine = tensor_view<float>{mine_.data, {n_mine, d}}; // free once gathered
            for (int c = 0; c < 3; ++c)
                std::copy_n(grad_.data + (offsets[c] + first[c]) * d, count[c] * d, dmine.data + local[c] * d);
        }

        if (!cached) {
            backward(model, cview<float>(dmine), hook);
            return loss;
        }
        int last = 2; // the last column with texts: its last mini-batch's backward makes the gradients final
        while (count[last] == 0)
            --last;
        for (int c = 0; c <= last; ++c)
            for (index_t i = 0; i < count[c]; i += chunk) {
                const index_t n = std::min(chunk, count[c] - i);
                model.embed(texts(c, i, n), rows(scratch_, 0, n), true);
                const bool final_call = c == last && i + n == count[c];
                backward(model, cview<float>(rows(dmine, local[c] + i, n)), final_call ? hook : backward_hook{});
            }
        return loss;
    }

    // Bytes held for the largest batch so far (the model's activations are the model's own).
    std::size_t workspace_bytes() const { return arena_.capacity(); }

private:
    struct buffers {
        tensor_view<float> emb, grad, scratch, mine, gathered;
        ranking_loss_workspace<float> ws;
    };
    // most, ranks: distributed, the most pairs a rank holds and the number of ranks (0 in one process).
    static buffers allocate(arena& a, index_t b, index_t h, index_t d, index_t chunk, index_t most, index_t ranks) {
        const index_t n = b * (2 + h), part = most * (2 + h);
        return {a.allocate<float>({n, d}),
                a.allocate<float>({n, d}),
                a.allocate<float>({chunk, d}),
                a.allocate<float>({part, d}),
                a.allocate<float>({ranks * part, d}),
                ranking_loss_workspace<float>::allocate(a, b, h, d)};
    }
    void plan(index_t b, index_t h, index_t d, index_t chunk, index_t most, index_t ranks) {
        const buffers u = plan_in(arena_, [&](arena& a) { return allocate(a, b, h, d, chunk, most, ranks); });
        emb_ = u.emb, grad_ = u.grad, scratch_ = u.scratch, mine_ = u.mine, gathered_ = u.gathered, ws_ = u.ws;
    }

    template <class E>
    static void backward(E& model, cview<float> d, const backward_hook& hook) {
        if constexpr (requires { model.backward_embeddings(d, hook); })
            model.backward_embeddings(d, hook);
        else
            model.backward_embeddings(d); // a model without a hook: its gradients are final when it returns
    }

    // Every rank's embeddings (mine_: its anchors, positives, negatives, each rank padded to `most` pairs so that
    // the parts have one size) into emb_, in the whole batch's layout.
    void gather(dist::communicator& comm, index_t b, index_t h, index_t d, index_t most) {
        const index_t ranks = comm.size(), part = most * (2 + h);
        const index_t mine = index_t(dist::part_of(std::size_t(b), comm.rank(), comm.size()).count());
        padded_.assign(std::size_t(part * d), 0.f);
        const index_t from[3] = {0, mine, 2 * mine}, to[3] = {0, most, 2 * most}, rows_of[3] = {mine, mine, mine * h};
        for (int c = 0; c < 3; ++c)
            std::copy_n(mine_.data + from[c] * d, rows_of[c] * d, padded_.data() + to[c] * d);
        comm.all_gather(std::span<const float>(padded_),
                        std::span<float>(gathered_.data, std::size_t(ranks * part * d)));
        const index_t offsets[3] = {0, b, 2 * b};
        for (index_t r = 0; r < ranks; ++r) {
            const dist::part p = dist::part_of(std::size_t(b), int(r), int(ranks));
            const index_t n = index_t(p.count()), at = index_t(p.begin);
            const index_t src[3] = {0, most, 2 * most}, dst[3] = {at, at, at * h}, rows[3] = {n, n, n * h};
            for (int c = 0; c < 3; ++c)
                std::copy_n(gathered_.data + (r * part + src[c]) * d, rows[c] * d,
                            emb_.data + (offsets[c] + dst[c]) * d);
        }
    }

    arena arena_;
    tensor_view<float> emb_, grad_, scratch_, mine_, gathered_;
    ranking_loss_workspace<float> ws_;
    std::vector<std::string> joined_; // the plain step's texts in one call (anchors, positives, negatives)
    std::vector<float> padded_;       // distributed: this rank's embeddings padded to the common part size
};

} // namespace tl::embed
