// tinylm/optim/optimizer.hpp: what an optimizer is, and the state storage AdamW and SGD share.
//
// An optimizer works on a model's parameter entries (model/parameter.hpp), never on the model type. It keeps a
// pointer to the model's own vector (model.parameter_entries()) rather than a copy, because the model flips
// `trainable` at run time to freeze and unfreeze groups, and the optimizer must see that at the next step.
//
// The Optimizer concept (what trainer.hpp and checkpoint.hpp call):
//   opt.step(lr)             one update of every entry that is trainable and has a gradient; rows whose
//                            row_mask is 0 get no update, no weight decay and no change of their state
//   opt.steps(), set_steps() the step count (bias corrections use it; checkpoints restore it)
//   opt.visit_state(f)       f(name, tensor) for every state tensor that exists, named "<kind>.<entry name>"
//                            ("exp_avg.<name>", "exp_avg_sq.<name>" for AdamW, as torch names them); on a const
//                            optimizer the tensor is a cview<float> (saving), otherwise a tensor_view<float>
//                            (loading)
//   opt.reset_state(has)     drops all state, then allocates zeroed state for every entry whose first state
//                            name has(name) is true (a checkpoint holds it); visit_state then fills it
// State is owned by the optimizer (two optimizers on one model do not share anything) and allocated lazily, the
// first step an entry trains: a frozen entry costs nothing.
#pragma once

#include <tinylm/model/parameter.hpp>

#include <concepts>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tl {

template <class O>
concept Optimizer = requires(O& o, const O& co, double lr, long long t,
                             const std::function<void(const std::string&, cview<float>)>& save,
                             const std::function<void(const std::string&, tensor_view<float>)>& load,
                             const std::function<bool(const std::string&)>& has) {
    o.step(lr);
    { co.steps() } -> std::convertible_to<long long>;
    o.set_steps(t);
    co.visit_state(save);
    o.visit_state(load);
    o.reset_state(has);
};

// An entry the optimizer updates this step (a LoRA base has no gradient; a frozen entry is not trainable).
inline bool trains(const parameter_entry& e) { return e.trainable && e.grad.data != nullptr; }

// Calls f(j) for every element j of e that trains: all of them, or only those of rows (dim 0) whose row_mask is
// set. Parallel over elements, or over rows with a mask (a mask test per element would cost a division).
template <class F>
void for_each_trained_element(const parameter_entry& e, F&& f) {
    const index_t n = e.value.numel();
    if (e.row_mask == nullptr) {
#pragma omp parallel for schedule(static)
        for (index_t j = 0; j < n; ++j)
            f(j);
        return;
    }
    const index_t rows = e.value.dim(0), cols = rows > 0 ? n / rows : 0;
    check(index_t(e.row_mask->size()) == rows, [&] {
        return "optimizer: the row mask of " + e.name + " has " + std::to_string(e.row_mask->size()) + " entries for " +
               std::to_string(rows) + " rows";
    });
    const std::uint8_t* mask = e.row_mask->data();
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < rows; ++r)
        if (mask[r])
            for (index_t c = 0; c < cols; ++c)
                f(r * cols + c);
}

// Per-entry optimizer state: one tensor per kind ("exp_avg", "exp_avg_sq", ...) for each entry that has trained,
// the shape of the entry, zero until its first update.
class optimizer_state {
public:
    optimizer_state(const std::vector<parameter_entry>* entries, std::vector<std::string> kinds)
        : entries_(entries), kinds_(std::move(kinds)) {}

    const std::vector<parameter_entry>& entries() const { return *entries_; }
    bool has(std::size_t entry) const { return entry < data_.size() && !data_[entry].empty(); }
    // Allocates entry's state (zeroed) if it has none; returns true when it did.
    bool ensure(std::size_t entry) {
        if (data_.size() < entries_->size()) data_.resize(entries_->size());
        if (!data_[entry].empty()) return false;
        data_[entry].assign(kinds_.size(), std::vector<float>(std::size_t((*entries_)[entry].value.numel()), 0.0f));
        return true;
    }
    float* get(std::size_t entry, std::size_t kind) { return data_[entry][kind].data(); }

    template <class F>
    void visit(F&& f) const {
        for (std::size_t i = 0; i < data_.size(); ++i)
            for (std::size_t k = 0; k < data_[i].size(); ++k)
                f(kinds_[k] + "." + (*entries_)[i].name, cview<float>{data_[i][k].data(), (*entries_)[i].value.shape});
    }
    template <class F>
    void visit(F&& f) {
        for (std::size_t i = 0; i < data_.size(); ++i)
            for (std::size_t k = 0; k < data_[i].size(); ++k)
                f(kinds_[k] + "." + (*entries_)[i].name,
                  tensor_view<float>{data_[i][k].data(), (*entries_)[i].value.shape});
    }
    // Entries without a gradient never train, so a checkpoint cannot hold state for them.
    template <class Has>
    void reset(Has&& has) {
        data_.assign(entries_->size(), {});
        for (std::size_t i = 0; i < entries_->size(); ++i)
            if ((*entries_)[i].grad.data != nullptr && has(kinds_.front() + "." + (*entries_)[i].name)) ensure(i);
    }

private:
    const std::vector<parameter_entry>* entries_;
    std::vector<std::string> kinds_;
    std::vector<std::vector<std::vector<float>>> data_; // [entry][kind][element]; empty: none yet
};

// What every optimizer shares: its entries, its state and its step count, with the Optimizer concept's
// checkpoint members. AdamW and SGD add their options and step().
class stateful_optimizer {
public:
    long long steps() const { return t_; }
    void set_steps(long long t) { t_ = t; } // when restoring the state from a checkpoint
    const std::vector<parameter_entry>& entries() const { return state_.entries(); }
    // The state tensors as "<kind>.<name>" (see the Optimizer concept).
    template <class F>
    void visit_state(F&& f) const {
        state_.visit(f);
    }
    template <class F>
    void visit_state(F&& f) {
        state_.visit(f);
    }
    template <class Has>
    void reset_state(Has&& has) {
        state_.reset(has);
    }

protected:
    stateful_optimizer(const std::vector<parameter_entry>* entries, std::vector<std::string> kinds)
        : state_(entries, std::move(kinds)) {}
    optimizer_state state_;
    long long t_ = 0;
};

} // namespace tl
