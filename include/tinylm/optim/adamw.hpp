// tinylm/optim/adamw.hpp: AdamW (Loshchilov & Hutter 2019) with decoupled weight decay, the update
// torch.optim.AdamW performs:
//   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Weight decay applies to weights and, unless decay_embeddings is false, to embeddings; never to norm
// weights or biases; LoRA matrices decay (torch decays every parameter given to it). Only the model's
// trainable_entries() are updated (with a LoRA adapter: the A/B matrices; the frozen base has no moments, so
// the optimizer state is as small as the adapter). Moments live in the model's parameter arena.
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/model/parameter.hpp>

#include <cmath>
#include <vector>

namespace tl {

struct adamw_options {
    double lr = 1e-3; // used when step() is called without a scheduled learning rate
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double weight_decay = 0.1;
    bool decay_embeddings = true;
};

inline bool decays(param_kind kind, bool decay_embeddings) {
    return kind == param_kind::weight || kind == param_kind::adapter ||
           (kind == param_kind::embedding && decay_embeddings);
}

// A zeroed tensor per entry, in a new arena of `owner`.
inline std::vector<tensor_view<float>> zeroed_state(const std::vector<parameter_entry>& entries,
                                                    std::vector<arena>& owner) {
    std::size_t bytes = 0;
    for (const parameter_entry& e : entries)
        bytes += arena::round_up(std::size_t(e.value.numel()) * sizeof(float));
    arena& a = owner.emplace_back(bytes);
    std::vector<tensor_view<float>> state;
    for (const parameter_entry& e : entries)
        state.push_back(a.allocate_zeroed<float>(e.value.shape));
    return state;
}

class adamw {
    std::vector<arena> state_; // the optimizer owns its state (declared first: the moments below live in it)

public:
    template <class Model>
    explicit adamw(Model& model, adamw_options options = {})
        : options_(options), entries_(&model.trainable_entries()), m_(zeroed_state(model.trainable_entries(), state_)),
          v_(zeroed_state(model.trainable_entries(), state_)) {}

    void step() { step(options_.lr); }
    void step(double lr) {
        ++t_;
        const double bc1 = 1.0 - std::pow(options_.beta1, double(t_));
        const double bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, double(t_)));
        const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps, step_size = lr / bc1;
        for (std::size_t i = 0; i < entries_->size(); ++i) {
            const parameter_entry& e = (*entries_)[i];
            const float decay =
                float(decays(e.kind, options_.decay_embeddings) ? 1.0 - lr * options_.weight_decay : 1.0);
            float* p = e.value.data;
            const float* g = e.grad.data;
            float* m = m_[i].data;
            float* v = v_[i].data;
            const index_t n = e.value.numel();
#pragma omp parallel for schedule(static)
            for (index_t j = 0; j < n; ++j) {
                const double gj = g[j];
                m[j] = float(b1 * m[j] + (1 - b1) * gj);
                v[j] = float(b2 * v[j] + (1 - b2) * gj * gj);
                p[j] = float(double(p[j]) * decay - step_size * m[j] / (std::sqrt(double(v[j])) / bc2_sqrt + eps));
            }
        }
    }

    long long steps() const { return t_; }
    void set_steps(long long t) { t_ = t; } // when restoring moments from a checkpoint
    const adamw_options& options() const { return options_; }
    // The parameters it updates (the model's trainable_entries()), and their moments in that order
    // (checkpoints save them).
    const std::vector<parameter_entry>& entries() const { return *entries_; }
    const std::vector<tensor_view<float>>& first_moments() const { return m_; }
    const std::vector<tensor_view<float>>& second_moments() const { return v_; }

private:
    adamw_options options_;
    const std::vector<parameter_entry>* entries_;
    std::vector<tensor_view<float>> m_, v_;
    long long t_ = 0;
};

} // namespace tl
