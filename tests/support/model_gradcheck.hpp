// Whole-model gradients against central differences of the model's own f32 loss (the ops are checked in f64 one
// by one in tests/ops; this checks how a model wires them). With weights of scale ~0.2 and eps = 1e-2, f32 noise
// stays near 1e-3 of a typical gradient.
#pragma once

#include <tinylm/core/rng.hpp>
#include <tinylm/model/parameter.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace tl::test {

// The worst relative error |fd - g| / (|g| + 2e-3) over `probes` random elements of every trainable entry; `loss()`
// recomputes the loss without touching the gradients, which must hold the backward of the unperturbed loss.
template <class Loss>
double worst_entry_fd_error(const std::vector<parameter_entry>& entries, Loss&& loss, const char* label,
                            int probes = 3) {
    const float eps = 1e-2f;
    double worst = 0;
    counter_rng pick(3);
    for (const parameter_entry& e : entries) {
        if (!e.trainable) continue;
        for (int probe = 0; probe < probes; ++probe) {
            float& w = e.value.data[pick.below(std::uint64_t(e.value.numel()))];
            const std::size_t j = std::size_t(&w - e.value.data);
            const float w0 = w;
            w = w0 + eps;
            const double up = loss();
            w = w0 - eps;
            const double down = loss();
            w = w0;
            const double fd = (up - down) / (2 * double(eps)), g = e.grad.data[j];
            const double err = std::abs(fd - g) / (std::abs(g) + 2e-3);
            if (err > 0.05)
                BOOST_TEST_MESSAGE(label << " " << e.name << "[" << j << "]: backward " << g << ", fd " << fd);
            worst = std::max(worst, err);
        }
    }
    BOOST_TEST_MESSAGE(label << ": worst relative error against central differences " << worst);
    return worst;
}

} // namespace tl::test
