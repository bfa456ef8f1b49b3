// tinylm/optim/sgd.hpp: SGD with momentum, as torch.optim.SGD (coupled L2 weight decay, no dampening):
//   g' = g + wd * p;  buf = momentum * buf + g';  p -= lr * buf   (an entry's first step: buf = g')
// It updates the entries of model.parameter_entries() that are trainable and have a gradient, as adamw.hpp
// does (row masks included); its state, "momentum_buffer.<name>", is its own.
#pragma once

#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/optimizer.hpp>

#include <vector>

namespace tl {

struct sgd_options {
    double lr = 1e-2;
    double momentum = 0.9;
    double weight_decay = 0.0;
    bool decay_embeddings = true;
};

class sgd : public stateful_optimizer {
public:
    // `entries` must outlive the optimizer (the model's own vector: it sees the model's freezing).
    explicit sgd(const std::vector<parameter_entry>& entries, sgd_options options = {})
        : stateful_optimizer(&entries, {"momentum_buffer"}), options_(options) {}
    template <class Model>
    requires requires(Model& m) {
        { m.parameter_entries() } -> std::same_as<const std::vector<parameter_entry>&>;
    }
    explicit sgd(Model& model, sgd_options options = {}) : sgd(model.parameter_entries(), options) {}

    void step() { step(options_.lr); }
    void step(double lr) {
        for (std::size_t i = 0; i < state_.entries().size(); ++i) {
            const parameter_entry& e = state_.entries()[i];
            if (!trains(e)) continue;
            // torch starts the buffer at the first gradient rather than decaying a zero buffer.
            const double mu = state_.ensure(i) ? 0.0 : options_.momentum;
            const double wd = decays(e.kind, options_.decay_embeddings) ? options_.weight_decay : 0.0;
            float* p = e.value.data;
            const float* g = e.grad.data;
            float* b = state_.get(i, 0);
            for_each_trained_element(e, [=](index_t j) {
                const double gj = double(g[j]) + wd * double(p[j]);
                b[j] = float(mu * b[j] + gj);
                p[j] = float(double(p[j]) - lr * b[j]);
            });
        }
        ++t_;
    }
    const sgd_options& options() const { return options_; }

private:
    sgd_options options_;
};
static_assert(Optimizer<sgd>);

} // namespace tl
