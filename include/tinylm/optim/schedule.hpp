// tinylm/optim/schedule.hpp: learning-rate schedules. Linear warmup from 0 over warmup_steps, then
// cosine, linear or constant decay from peak_lr to min_lr at total_steps (held at min_lr afterwards).
// Steps count from 0: lr_at(0) is the rate of the first update.
#pragma once

#include <tinylm/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace tl {

enum class decay_kind { cosine, linear, constant };

struct lr_schedule {
    double peak_lr = 1e-3;
    double min_lr = 0.0;
    long long warmup_steps = 0;
    long long total_steps = 1;
    decay_kind decay = decay_kind::cosine;

    double lr_at(long long step) const {
        check(total_steps > 0 && warmup_steps >= 0 && warmup_steps <= total_steps,
              "lr_schedule: need 0 <= warmup_steps <= total_steps and total_steps > 0");
        if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
        if (decay == decay_kind::constant) return peak_lr;
        const long long span = std::max<long long>(1, total_steps - warmup_steps);
        const double progress = std::clamp(double(step - warmup_steps) / double(span), 0.0, 1.0);
        const double factor =
            decay == decay_kind::cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) : 1.0 - progress;
        return min_lr + (peak_lr - min_lr) * factor;
    }
};

} // namespace tl
