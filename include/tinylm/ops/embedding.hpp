// tinylm/ops/embedding.hpp: token embedding lookup.
//   forward:  out (N, d) = weight (V, d)[ids (N)]
//   backward: dweight (V, d) += scatter of dout (N, d) by ids
#pragma once

#include <tinylm/ops/common.hpp>

#include <algorithm>

namespace tl {

template <class T>
void embedding_forward(tensor_view<T> out, cview<token_t> ids, cview<T> weight) {
    const index_t n = ids.numel(), vocab = weight.dim(0), d = weight.dim(1);
    expect_shape("embedding", "out", out, {n, d});
    for (index_t i = 0; i < n; ++i) {
        const token_t id = ids[i];
        check(id >= 0 && id < vocab, [&] {
            return "embedding: token id " + std::to_string(id) + " at position " + std::to_string(i) +
                   " is outside the vocabulary [0, " + std::to_string(vocab) + ")";
        });
        std::copy_n(weight.row(id), d, out.row(i));
    }
}

template <class T>
void embedding_backward(tensor_view<T> dweight, cview<token_t> ids, cview<T> dout) {
    const index_t n = ids.numel(), d = dweight.dim(1);
    expect_shape("embedding_backward", "dout", dout, {n, d});
    // Serial on purpose: two positions may hold the same token, so rows of dweight would race.
    for (index_t i = 0; i < n; ++i) {
        T* dst = dweight.row(ids[i]);
        const T* src = dout.row(i);
        for (index_t j = 0; j < d; ++j)
            dst[j] += src[j];
    }
}

} // namespace tl
