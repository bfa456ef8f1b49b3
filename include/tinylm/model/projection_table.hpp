// tinylm/model/projection_table.hpp: a model's projections by (layer, q/k/v/o/gate/up/down), and what acts
// on all of them at once: the LoRA adapter's merge and dropout state, QLoRA's NF4 base weights.
// The decoder inherits it, so these are members of the model.
#pragma once

#include <tinylm/model/projection.hpp>

#include <array>
#include <vector>

namespace tl {

template <class Projection>
class projection_table {
public:
    // ---- LoRA ------------------------------------------------------------------------------------------
    // W += (alpha / r) B A for every targeted projection; the forward then skips the adapter path. Training
    // needs the unmerged form; unmerge() takes the product out again (QLoRA: restores the NF4 weights
    // exactly). No-ops without an adapter.
    void merge() { merge_sign(+1); }
    void unmerge() { merge_sign(-1); }
    bool merged() const { return adapter_.merged; }
    // The dropout masks' key and the number of training forwards so far (a checkpoint saves both).
    std::uint64_t dropout_seed() const { return adapter_.dropout_seed; }
    void set_dropout_seed(std::uint64_t s) { adapter_.dropout_seed = s; }
    std::uint64_t dropout_calls() const { return adapter_.dropout_calls; }
    void set_dropout_calls(std::uint64_t n) { adapter_.dropout_calls = n; }
    // Data parallel: this process trains rows (tokens) [rows, ...) of each global batch; the masks are drawn as for
    // the whole batch, so N ranks drop what one process would (the trainer sets it; 0 by default).
    void set_dropout_row_offset(index_t rows) { adapter_.dropout_row0 = rows; }
    // A (r, in) and B (out, r) of projection t of layer l (empty when not targeted).
    struct lora_pair {
        tensor_view<float> a, b;
    };
    lora_pair lora_weights(index_t l, int t) const {
        const Projection& p = at(l, t);
        return {p.lora_a(), p.lora_b()};
    }

    // ---- QLoRA: the NF4 base, named and in the order of the f32 walk it replaces --------------------------
    struct quantized_entry {
        std::string name; // model.layers.3.self_attn.q_proj.weight
        index_t layer;
        int target; // proj index: q, k, v, o, gate, up, down
        tl::shape shape;
    };
    const std::vector<quantized_entry>& quantized_entries() const { return quantized_; }
    const nf4_tensor& quantized_weight(index_t l, int t) const { return at(l, t).quantized_weight(); }
    // Quantises w (out, in) into projection t of layer l (loading; the f32 copy stays the caller's).
    void set_quantized_weight(index_t l, int t, cview<float> w) {
        check(!adapter_.merged, "set_quantized_weight: unmerge() the adapter first");
        Projection& p = *projections_.at(std::size_t(l))[std::size_t(t)];
        expect_shape("set_quantized_weight", "w", w, {p.out(), p.in()});
        p.quantized_weight() = quantize_nf4(w, true);
    }
    // Takes an NF4 weight as it is (a training checkpoint's exact bytes: train/checkpoint_nf4.hpp).
    void set_quantized_weight(index_t l, int t, nf4_tensor q) {
        check(!adapter_.merged, "set_quantized_weight: unmerge() the adapter first");
        Projection& p = *projections_.at(std::size_t(l))[std::size_t(t)];
        check_nf4("set_quantized_weight", q);
        check(q.out == p.out() && q.in == p.in(), [&] {
            return "set_quantized_weight: nf4 weight " + q.shape().str() + " for a projection (" +
                   std::to_string(p.out()) + ", " + std::to_string(p.in()) + ")";
        });
        p.quantized_weight() = std::move(q);
    }
    std::size_t quantized_base_bytes() const {
        std::size_t bytes = 0;
        for (const quantized_entry& q : quantized_)
            bytes += storage_bytes(quantized_weight(q.layer, q.target));
        return bytes;
    }
    index_t quantized_base_params() const {
        index_t n = 0;
        for (const quantized_entry& q : quantized_)
            n += q.shape.numel();
        return n;
    }

protected:
    template <class Block>
    void add_layer(Block& b) {
        auto& row = projections_.emplace_back();
        b.for_each_projection([&](Projection& p) { row[std::size_t(p.which())] = &p; });
    }
    // Names the NF4 slots of the base walk by (layer, projection); sizes the dequantisation scratch.
    void index_quantized(const std::vector<param_slot>& base, const model_config& c) {
        for (const param_slot& s : base)
            for (index_t l = 0; s.quantized && l < index_t(projections_.size()); ++l)
                for (Projection* p : projections_[std::size_t(l)])
                    if (p && &p->quantized_weight() == s.quantized)
                        quantized_.push_back({s.name, l, int(p->which()), s.shape});
        if constexpr (Projection::quantized)
            adapter_.nf4_scratch.resize(
                std::size_t(Projection::nf4_tile_rows * std::max({c.d_model, c.q_width(), c.d_ff})));
    }
    // The adapter path's scratch for `rows` tokens (planned with a model's activations): LoRA's (N, r) hidden
    // and, with dropout, the dropped input and its gradient at the widest projection input.
    void allocate_adapter_scratch(arena& a, index_t rows, const model_config& c) const {
        if constexpr (Projection::has_adapter) {
            const index_t widest = std::max({index_t(c.d_model), index_t(c.q_width()), index_t(c.d_ff)});
            adapter_.dh = a.allocate<float>({rows, Projection::lora.rank});
            if constexpr (Projection::dropout) {
                adapter_.x = a.allocate<float>({rows, widest});
                adapter_.dx = a.allocate<float>({rows, widest});
            }
        }
    }
    template <class F>
    void for_each_projection(F&& f) {
        for (auto& row : projections_)
            for (Projection* p : row)
                if (p) f(*p);
    }
    const Projection& at(index_t l, int t) const { return *projections_.at(std::size_t(l))[std::size_t(t)]; }

    std::vector<std::array<Projection*, lora_target_count>> projections_; // per layer, by proj index
    mutable adapter_state adapter_;
    std::vector<quantized_entry> quantized_;

private:
    void merge_sign(int sign) {
        if constexpr (Projection::has_adapter) {
            check(adapter_.merged != (sign > 0), sign > 0 ? "decoder::merge: the adapter is already merged"
                                                          : "decoder::unmerge: the adapter is not merged");
            for_each_projection([&](Projection& p) { p.merge(sign); });
            adapter_.merged = sign > 0;
        }
    }
};

} // namespace tl
