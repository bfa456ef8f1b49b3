// tinylm/optim/clip.hpp: global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_: when the L2 norm
// of all gradients together exceeds max_norm, every gradient is scaled by max_norm / (norm + 1e-6).
// Returns the norm before clipping (log it: a rising norm is the first sign of divergence). Only what the
// optimizer will update counts: entries that are frozen (trainable == false) or have no gradient (the base of a
// LoRA model) are skipped, and so are rows outside an entry's row_mask, so freezing or masking a part leaves
// the norm of the rest unchanged.
#pragma once

#include <tinylm/optim/optimizer.hpp>

#include <cmath>
#include <vector>

namespace tl {

namespace detail {
// Calls f(first, count) for each trained run of e's gradient, in order (a whole tensor, or its unmasked rows).
template <class F>
void for_each_trained_run(const parameter_entry& e, F&& f) {
    const index_t n = e.grad.numel();
    if (e.row_mask == nullptr) {
        f(index_t(0), n);
        return;
    }
    const index_t rows = e.grad.dim(0), cols = rows > 0 ? n / rows : 0;
    check(index_t(e.row_mask->size()) == rows, [&] { return "clip: the row mask of " + e.name + " does not fit"; });
    for (index_t r = 0; r < rows; ++r)
        if ((*e.row_mask)[std::size_t(r)]) f(r * cols, cols);
}
} // namespace detail

inline double grad_norm(const std::vector<parameter_entry>& entries) {
    double total = 0;
    for (const parameter_entry& e : entries) {
        if (!trains(e)) continue;
        double s = 0;
        detail::for_each_trained_run(e, [&](index_t first, index_t count) {
            for (index_t j = first; j < first + count; ++j)
                s += double(e.grad.data[j]) * double(e.grad.data[j]);
        });
        total += s;
    }
    return std::sqrt(total);
}

inline double clip_grad_norm(const std::vector<parameter_entry>& entries, double max_norm) {
    const double norm = grad_norm(entries);
    if (norm > max_norm) {
        const float scale = float(max_norm / (norm + 1e-6));
        for (const parameter_entry& e : entries)
            if (trains(e))
                detail::for_each_trained_run(e, [&](index_t first, index_t count) {
                    for (index_t j = first; j < first + count; ++j)
                        e.grad.data[j] *= scale;
                });
    }
    return norm;
}

} // namespace tl
