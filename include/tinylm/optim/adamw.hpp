// tinylm/optim/adamw.hpp: AdamW (Loshchilov & Hutter 2019) with decoupled weight decay, the update
// torch.optim.AdamW performs:
//   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Weight decay applies to weights and, unless decay_embeddings is false, to embeddings; never to norm
// weights or biases; LoRA matrices decay (torch decays every parameter given to it).
//
// It updates the entries of model.parameter_entries() that are trainable and have a gradient (with a LoRA
// adapter: the A/B matrices), read at every step, so freezing a group between steps takes effect at the next
// one. Rows outside an entry's row_mask keep their value and moments. The moments are the optimizer's own
// (optim/optimizer.hpp), allocated the first time an entry trains; t, and so the bias correction, counts the
// optimizer's steps, so an entry unfrozen late starts from zero moments at the current bias correction.
// Checkpoints name the moments "exp_avg.<name>" and "exp_avg_sq.<name>".
#pragma once

#include <tinylm/optim/optimizer.hpp>

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

class adamw : public stateful_optimizer {
public:
    // `entries` must outlive the optimizer (the model's own vector: it sees the model's freezing).
    explicit adamw(const std::vector<parameter_entry>& entries, adamw_options options = {})
        : stateful_optimizer(&entries, {"exp_avg", "exp_avg_sq"}), options_(options) {}
    template <class Model>
    requires requires(Model& m) {
        { m.parameter_entries() } -> std::same_as<const std::vector<parameter_entry>&>;
    }
    explicit adamw(Model& model, adamw_options options = {}) : adamw(model.parameter_entries(), options) {}

    void step() { step(options_.lr); }
    void step(double lr) {
        ++t_;
        const double bc1 = 1.0 - std::pow(options_.beta1, double(t_));
        const double bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, double(t_)));
        const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps, step_size = lr / bc1;
        for (std::size_t i = 0; i < state_.entries().size(); ++i) {
            const parameter_entry& e = state_.entries()[i];
            if (!trains(e)) continue;
            state_.ensure(i);
            const float decay =
                float(decays(e.kind, options_.decay_embeddings) ? 1.0 - lr * options_.weight_decay : 1.0);
            float* p = e.value.data;
            const float* g = e.grad.data;
            float* m = state_.get(i, 0);
            float* v = state_.get(i, 1);
            for_each_trained_element(e, [=](index_t j) {
                const double gj = g[j];
                m[j] = float(b1 * m[j] + (1 - b1) * gj);
                v[j] = float(b2 * v[j] + (1 - b2) * gj * gj);
                p[j] = float(double(p[j]) * decay - step_size * m[j] / (std::sqrt(double(v[j])) / bc2_sqrt + eps));
            });
        }
    }

    const adamw_options& options() const { return options_; }

private:
    adamw_options options_;
};
static_assert(Optimizer<adamw>);

} // namespace tl
