// tinylm/optim/sgd.hpp: SGD with momentum, as torch.optim.SGD (coupled L2 weight decay, no dampening):
//   g' = g + wd * p;  buf = momentum * buf + g';  p -= lr * buf   (first step: buf = g')
// Only the model's trainable_entries() are updated (a LoRA model: the adapter).
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/optim/adamw.hpp>

#include <vector>

namespace tl {

struct sgd_options {
    double lr = 1e-2;
    double momentum = 0.9;
    double weight_decay = 0.0;
    bool decay_embeddings = true;
};

class sgd {
    std::vector<arena> state_; // the optimizer owns its state (declared first: the moments below live in it)

public:
    template <class Model>
    explicit sgd(Model& model, sgd_options options = {})
        : options_(options), entries_(&model.trainable_entries()), buf_(zeroed_state(model.trainable_entries(), state_)) {}

    void step() { step(options_.lr); }
    void step(double lr) {
        for (std::size_t i = 0; i < entries_->size(); ++i) {
            const parameter_entry& e = (*entries_)[i];
            const double wd = decays(e.kind, options_.decay_embeddings) ? options_.weight_decay : 0.0;
            float* p = e.value.data;
            const float* g = e.grad.data;
            float* b = buf_[i].data;
            const index_t n = e.value.numel();
            const double mu = t_ == 0 ? 0.0 : options_.momentum;
#pragma omp parallel for schedule(static)
            for (index_t j = 0; j < n; ++j) {
                const double gj = double(g[j]) + wd * double(p[j]);
                b[j] = float(mu * b[j] + gj);
                p[j] = float(double(p[j]) - lr * b[j]);
            }
        }
        ++t_;
    }
    long long steps() const { return t_; }

private:
    sgd_options options_;
    const std::vector<parameter_entry>* entries_;
    std::vector<tensor_view<float>> buf_;
    long long t_ = 0;
};

} // namespace tl
