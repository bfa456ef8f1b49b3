// tinylm/model/parameter_table.hpp: a model's parameters as one table, built from its walk (model/slot.hpp).
//
// Memory: one arena holding the values and then the gradients (or, with a frozen base, the base, the
// adapter and the adapter's gradients), so zero_grad() is one fill. The entries (parameter.hpp) are what
// optimizers, clipping, checkpoints and counting see; freezing flips `trainable` at run time and row masks
// restrict the embedding and head to chosen rows. Initialisation draws one counter-based stream per tensor
// in walk order, so a model's initial weights do not depend on anything but its walk and the seed.
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/model/slot.hpp>

#include <algorithm>
#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

class parameter_table {
    // walk_base(visit) visits the base tensors, walk_adapter(visit) the adapter's. With `frozen_base` the
    // base gets no gradient memory and does not train, except the embedding and head when `vocab_trains`
    // (an adapter with trainable embeddings: peft's modules_to_save / trainable_token_indices).
protected:
    template <class WalkBase, class WalkAdapter>
    void build(WalkBase&& walk_base, WalkAdapter&& walk_adapter, bool frozen_base, bool vocab_trains = false) {
        auto keeps_grad = [&](const param_slot& s) {
            return !frozen_base ||
                   (vocab_trains && (s.group == param_group::embedding || s.group == param_group::head));
        };
        auto values = [](arena& a) {
            return [&a](const param_slot& s) {
                if (s.value) *s.value = a.allocate<float>(s.shape);
            };
        };
        auto grads = [&keeps_grad](arena& a, bool base) {
            return [&a, &keeps_grad, base](const param_slot& s) {
                if (s.grad && (!base || keeps_grad(s))) *s.grad = a.allocate<float>(s.shape);
            };
        };
        auto run = [&](arena& a) -> std::size_t { // returns where the gradients begin
            walk_base(values(a));
            walk_adapter(values(a));
            const std::size_t grads_at = a.used();
            walk_base(grads(a, true));
            walk_adapter(grads(a, false));
            return grads_at;
        };
        arena measure = arena::measuring();
        run(measure);
        arena_ = arena(measure.used(), arena::pages::huge); // read whole every step and every decoded token
        const std::size_t grads_at = run(arena_);
        grad_begin_ = arena_.base() + grads_at;
        grad_end_ = arena_.base() + arena_.used();
        walk_base([&](const param_slot& s) {
            base_.push_back(s);
            if (s.value)
                entries_.push_back(
                    {s.name, *s.value, keeps_grad(s) ? *s.grad : tensor_view<float>{}, s.kind, keeps_grad(s), s.group});
        });
        walk_adapter([&](const param_slot& s) {
            entries_.push_back({s.name, *s.value, *s.grad, s.kind, true, s.group});
        });
        rebuild_trainable();
    }

public:
    // One walk over every parameter in a fixed order with its Hugging Face name: optimizers, checkpoints,
    // clipping, freezing and counting use it. With an adapter: the frozen base (no grad), then the adapter.
    const std::vector<parameter_entry>& parameter_entries() const { return entries_; }
    // The entries that train now.
    const std::vector<parameter_entry>& trainable_entries() const { return trainable_; }
    template <class F>
    void visit_parameters(F&& f) const {
        for (const parameter_entry& e : entries_)
            f(e);
    }
    // The base walk as built (QLoRA: its NF4 slots have `quantized` set and no entry).
    const std::vector<param_slot>& base_slots() const { return base_; }
    std::size_t parameter_arena_bytes() const { return arena_.capacity(); }
    void zero_grad() { std::fill(grad_begin_, grad_end_, std::byte{0}); }

protected:
    // N(0, std^2) weights, unit norm weights, zero biases; stream i for the i-th tensor of the base walk
    // (an NF4 one draws in f32 and is quantised).
    void init_base(std::uint64_t seed, double std) {
        std::vector<float> staging;
        for (std::size_t stream = 0; stream < base_.size(); ++stream) {
            const param_slot& s = base_[stream];
            if (s.quantized) {
                staging.resize(std::size_t(s.shape.numel()));
                fill_normal(staging.data(), s.shape.numel(), seed, stream, std);
                *s.quantized = quantize_nf4(cview<float>{staging.data(), s.shape});
            } else if (s.kind == param_kind::norm) {
                s.value->fill(1.0f);
            } else if (s.kind == param_kind::bias) {
                s.value->fill(0.0f);
            } else {
                fill_normal(s.value->data, s.value->numel(), seed, stream, std);
            }
        }
    }
    // The base at zero, for a loader to fill (a model made with weights_to_load: model/decoder.hpp).
    void zero_base() {
        for (const param_slot& s : base_)
            if (s.value) s.value->fill(0.0f);
    }

private:
    // w[i] = std * normal number i of stream (seed, stream): counters 2i and 2i + 1 (counter_rng::normal), so
    // blocks of elements can be drawn on several threads, giving what one thread draws.
    static void fill_normal(float* w, index_t n, std::uint64_t seed, std::uint64_t stream, double std) {
        constexpr index_t block = index_t(1) << 14;
#pragma omp parallel for schedule(static) if (n > block)
        for (index_t b = 0; b < (n + block - 1) / block; ++b) {
            counter_rng rng(seed, stream);
            rng.set_counter(std::uint64_t(2 * b * block));
            for (index_t i = b * block; i < std::min(n, (b + 1) * block); ++i)
                w[i] = float(rng.normal() * std);
        }
    }

public:
    // Freezes or unfreezes a group (embedding, head, norm, attention, mlp, adapter), the entries whose name
    // contains `name_part`, or those `pred` selects. One without gradient memory (a frozen base) cannot train.
    void set_trainable(param_group group, bool on) {
        set_trainable([&](const parameter_entry& e) { return e.group == group; }, on);
    }
    void set_trainable(std::string_view name_part, bool on) {
        set_trainable([&](const parameter_entry& e) { return e.name.find(name_part) != std::string::npos; }, on);
    }
    void set_trainable(const std::function<bool(const parameter_entry&)>& pred, bool on) {
        for (parameter_entry& e : entries_)
            if (pred(e)) {
                check(!on || e.grad.data, [&] {
                    return "set_trainable: " + e.name + " has no gradient memory (a frozen base under an adapter)";
                });
                e.trainable = on;
            }
        rebuild_trainable();
    }
    // Only rows with mask[row] != 0 of the embedding or head train; an empty mask trains all rows.
    void set_row_mask(param_group group, std::vector<std::uint8_t> mask) {
        check(group == param_group::embedding || group == param_group::head,
              "set_row_mask: rows can be masked in the embedding and the head only");
        std::vector<std::uint8_t>& kept = masks_[group == param_group::head ? 1 : 0];
        kept = std::move(mask);
        for (parameter_entry& e : entries_)
            if (e.group == group) {
                check(kept.empty() || index_t(kept.size()) == e.value.dim(0), [&] {
                    return "set_row_mask: the mask has " + std::to_string(kept.size()) + " rows, " + e.name + " " +
                           std::to_string(e.value.dim(0));
                });
                e.row_mask = kept.empty() ? nullptr : &kept;
            }
        rebuild_trainable();
    }

private:
    void rebuild_trainable() {
        trainable_.clear();
        for (const parameter_entry& e : entries_)
            if (e.trainable) trainable_.push_back(e);
    }

    arena arena_;
    std::byte *grad_begin_ = nullptr, *grad_end_ = nullptr;
    std::vector<param_slot> base_;
    std::vector<parameter_entry> entries_, trainable_;
    std::array<std::vector<std::uint8_t>, 2> masks_; // embedding, head
};

} // namespace tl
