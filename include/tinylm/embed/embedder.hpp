// tinylm/embed/embedder.hpp: what the contrastive training step needs from a sentence-embedding model.
//
//   e.embedding_dim()                 width d of the embeddings
//   e.embed(texts, out, train)        out (n, d) = the embeddings of n texts. train = true keeps what backward
//                                     needs (activations) for exactly this call; train = false keeps nothing
//   e.backward_embeddings(d)          d (n, d) = d(loss)/d(out) of the last embed(train = true): accumulates the
//                                     parameter gradients (+=, docs/conventions.md)
//
// The cached step (embed/cached_ranking.hpp) embeds every text twice, first without and then with activations,
// and needs both calls to compute the same function: a model with dropout must make it deterministic per text
// within a step (sentence-transformers replays the random state for the same reason).
#pragma once

#include <tinylm/core/tensor.hpp>

#include <concepts>
#include <span>
#include <string>

namespace tl::embed {

template <class E>
concept SentenceEmbedder = requires(E& e, std::span<const std::string> texts, tensor_view<float> out, cview<float> d) {
    { e.embedding_dim() } -> std::convertible_to<index_t>;
    e.embed(texts, out, /*train=*/true);
    e.backward_embeddings(d);
};

} // namespace tl::embed
