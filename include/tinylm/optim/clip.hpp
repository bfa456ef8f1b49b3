// tinylm/optim/clip.hpp: global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_: when the L2 norm
// of all gradients together exceeds max_norm, every gradient is scaled by max_norm / (norm + 1e-6).
// Returns the norm before clipping (log it: a rising norm is the first sign of divergence). Frozen entries
// (trainable == false, the base of a LoRA model) are skipped, so parameter_entries() and trainable_entries()
// give the same result.
#pragma once

#include <tinylm/model/decoder.hpp>

#include <cmath>
#include <vector>

namespace tl {

inline double grad_norm(const std::vector<parameter_entry>& entries) {
    double total = 0;
    for (const parameter_entry& e : entries) {
        if (!e.trainable) continue;
        double s = 0;
        for (float g : e.grad)
            s += double(g) * double(g);
        total += s;
    }
    return std::sqrt(total);
}

inline double clip_grad_norm(const std::vector<parameter_entry>& entries, double max_norm) {
    const double norm = grad_norm(entries);
    if (norm > max_norm) {
        const float scale = float(max_norm / (norm + 1e-6));
        for (const parameter_entry& e : entries)
            if (e.trainable)
                for (float& g : e.grad)
                    g *= scale;
    }
    return norm;
}

} // namespace tl
