// tinylm/model/mlp.hpp: the MLP half of a block, forward and backward side by side. Two kinds:
//   dense_mlp   down(silu(gate(x)) * up(x)) (SwiGLU: Llama, Qwen2, Mistral) or down(gelu(up(x)))
//   moe_mlp     Mixtral's sparse block: a softmax router sends each token to top_k of n_experts SwiGLU
//               experts (ops/moe.hpp); the load-balancing statistics go to a moe_balance
// Both offer the same members, so a block holds either.
#pragma once

#include <tinylm/model/projection.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/moe.hpp>

namespace tl {

// What a forward or backward of the MLP half needs beyond its input: the experts' load-balancing
// statistics and the gradient weight of the auxiliary loss (experts only).
struct mlp_context {
    moe_balance* balance = nullptr; // forward: add this forward's statistics (nullptr: a recomputation)
    double daux = 0;                // backward: d(loss)/d(aux loss) for this layer's statistics
};

template <class Backend, LoraAdapter Adapter, mlp_kind Kind>
class dense_mlp {
public:
    using projection_t = projection<Backend, Adapter>;
    static constexpr bool swiglu = Kind == mlp_kind::swiglu;
    struct activations {
        tensor_view<float> gate, up, hidden; // (N, F); gate only for SwiGLU
        std::array<tensor_view<float>, 3> lora_h;
    };
    struct scratch {
        tensor_view<float> dgate, dup, dhidden;
    };

    dense_mlp() = default;
    dense_mlp(const model_config& c, index_t layer)
        : width_(c.d_ff), gate_(c.d_model, c.d_ff, layer, proj::gate, c.dense_bias),
          up_(c.d_model, c.d_ff, layer, proj::up, c.dense_bias),
          down_(c.d_ff, c.d_model, layer, proj::down, c.dense_bias) {}

    template <class Visit>
    void walk(Visit&& visit, const std::string& prefix) {
        if constexpr (swiglu) gate_.walk(visit, prefix + "mlp.gate_proj", param_group::mlp);
        up_.walk(visit, prefix + "mlp.up_proj", param_group::mlp);
        down_.walk(visit, prefix + "mlp.down_proj", param_group::mlp);
    }
    template <class F>
    void for_each_projection(F&& f) {
        if constexpr (swiglu) f(gate_);
        f(up_), f(down_);
    }

    activations allocate(arena& a, index_t batch, index_t time, bool) const {
        const index_t n = batch * time;
        activations s;
        if constexpr (swiglu) s.gate = a.allocate<float>({n, width_});
        s.up = a.allocate<float>({n, width_});
        s.hidden = a.allocate<float>({n, width_});
        const projection_t* p[] = {&gate_, &up_, &down_};
        for (int t = 0; t < 3; ++t)
            if (p[t]->targeted()) s.lora_h[std::size_t(t)] = a.allocate<float>({n, projection_t::lora.rank});
        return s;
    }
    scratch allocate_scratch(arena& a, index_t batch, index_t time) const {
        const index_t n = batch * time;
        return {a.allocate<float>({n, width_}), a.allocate<float>({n, width_}), a.allocate<float>({n, width_})};
    }

    void forward(tensor_view<float> y, cview<float> x, const activations& s, const scratch&, const adapter_state& ad,
                 const mlp_context&) const {
        if constexpr (swiglu) {
            forward_together<projection_t, 2>({&gate_, &up_}, {s.gate, s.up}, x, {s.lora_h[0], s.lora_h[1]}, ad);
            swiglu_forward<float>(s.hidden, s.gate, s.up);
        } else {
            up_.forward(s.up, x, s.lora_h[1], ad);
            gelu_forward<float>(s.hidden, s.up);
        }
        down_.forward(y, s.hidden, s.lora_h[2], ad);
    }
    void backward(tensor_view<float> dx, cview<float> dy, cview<float> x, const activations& s, const scratch& g,
                  const adapter_state& ad, const mlp_context&, grad_write mode) const {
        down_.backward(g.dhidden, dy, s.hidden, s.lora_h[2], ad, grad_write::assign);
        if constexpr (swiglu) {
            swiglu_backward<float>(g.dgate, g.dup, g.dhidden, s.gate, s.up);
            gate_.backward(dx, g.dgate, x, s.lora_h[0], ad, mode);
            up_.backward(dx, g.dup, x, s.lora_h[1], ad, grad_write::add);
        } else {
            gelu_backward<float>(g.dup, g.dhidden, s.up);
            up_.backward(dx, g.dup, x, s.lora_h[1], ad, mode);
        }
    }

private:
    index_t width_ = 0;
    projection_t gate_, up_, down_;
};

template <class Backend>
class moe_mlp {
public:
    using activations = moe_cache<float>;
    using scratch = moe_workspace<float>;

    moe_mlp() = default;
    moe_mlp(const model_config& c, index_t)
        : d_(c.d_model), width_(c.d_ff), experts_(c.moe.n_experts), top_k_(c.moe.top_k) {}

    // Names as transformers 5 writes Mixtral: the router is mlp.gate, the experts stacked per layer.
    template <class Visit>
    void walk(Visit&& visit, const std::string& prefix) {
        visit(param_slot{
            prefix + "mlp.gate.weight", {experts_, d_}, param_kind::weight, param_group::mlp, &router_, &drouter_});
        visit(param_slot{prefix + "mlp.experts.gate_up_proj",
                         {experts_, 2 * width_, d_},
                         param_kind::weight,
                         param_group::mlp,
                         &gate_up_,
                         &dgate_up_});
        visit(param_slot{prefix + "mlp.experts.down_proj",
                         {experts_, d_, width_},
                         param_kind::weight,
                         param_group::mlp,
                         &down_,
                         &ddown_});
    }
    template <class F>
    void for_each_projection(F&&) {}

    activations allocate(arena& a, index_t batch, index_t time, bool) const {
        return moe_cache<float>::allocate(a, batch * time, width_, experts_, top_k_);
    }
    scratch allocate_scratch(arena& a, index_t batch, index_t time) const {
        return moe_workspace<float>::allocate(a, batch * time, d_, width_, experts_, top_k_);
    }

    void forward(tensor_view<float> y, cview<float> x, const activations& s, const scratch& g, const adapter_state&,
                 const mlp_context& ctx) const {
        moe_forward<Backend, float>(y, s.first_rows(x.rows()), g.first_rows(x.rows()), x, router_, gate_up_, down_,
                                    ctx.balance);
    }
    // The router also receives the auxiliary loss's gradient (ctx.daux).
    void backward(tensor_view<float> dx, cview<float> dy, cview<float> x, const activations& s, const scratch& g,
                  const adapter_state&, const mlp_context& ctx, grad_write mode) const {
        moe_backward<Backend, float>(dx, drouter_, dgate_up_, ddown_, dy, x, router_, gate_up_, down_, s, g,
                                     ctx.balance, ctx.daux, mode);
    }

private:
    index_t d_ = 0, width_ = 0, experts_ = 0, top_k_ = 0;
    tensor_view<float> router_, gate_up_, down_, drouter_, dgate_up_, ddown_;
};

} // namespace tl
