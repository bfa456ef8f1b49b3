// The KV-cache path against the full forward, for the tests of every model variant that decodes.
#pragma once

#include "random.hpp"

#include <tinylm/ops/common.hpp>

#include <algorithm>
#include <initializer_list>
#include <vector>

namespace tl::test {

// Feeds ids (B, T) to forward_cached in chunks of the given sizes (they must sum to at most T) and returns the
// worst relative error, over every chunk and sequence, of the last position's logits against those of the full
// forward (logits()) at the same position.
template <class Model>
double cached_vs_full_logits(Model& model, typename Model::kv_cache& cache, const owned<token_t>& ids,
                             std::initializer_list<index_t> chunks) {
    const index_t B = ids.shape.dims[0], T = ids.shape.dims[1], V = model.config().vocab_size;
    owned<float> full({B, T, V}), last({B, V});
    model.logits(ids, full);
    index_t pos = 0;
    double worst = 0;
    for (const index_t step : chunks) {
        owned<token_t> part({B, step});
        for (index_t b = 0; b < B; ++b)
            for (index_t t = 0; t < step; ++t)
                part.data[b * step + t] = ids.data[b * T + pos + t];
        model.forward_cached(cache, part, last);
        pos += step;
        for (index_t b = 0; b < B; ++b) {
            const std::vector<float> want(full.data.begin() + (b * T + pos - 1) * V,
                                          full.data.begin() + (b * T + pos) * V);
            const std::vector<float> got(last.data.begin() + b * V, last.data.begin() + (b + 1) * V);
            worst = std::max(worst, rel_error(got, want));
        }
    }
    return worst;
}

} // namespace tl::test
