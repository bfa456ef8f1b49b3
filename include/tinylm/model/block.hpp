// tinylm/model/block.hpp: one transformer block, forward and backward side by side.
//   pre-norm  (Llama, Qwen2, Mistral, Mixtral):  resid = x + attention(norm1(x));  out = resid + mlp(norm2(resid))
//   post-norm (BERT, the original Transformer):  h = norm1(x + attention(x));      out = norm2(h + mlp(h))
// The backward receives d(loss)/d(out) in `dx` and leaves d(loss)/d(x) there: the residual connections pass
// the gradient through and each branch adds its input gradient into it.
#pragma once

#include <tinylm/model/mlp.hpp>
#include <tinylm/model/norm.hpp>
#include <tinylm/model/self_attention.hpp>
#include <tinylm/ops/residual.hpp>

#include <type_traits>

namespace tl {

template <class Backend, LoraAdapter Adapter, norm_kind Norm, mlp_kind Mlp, bool Experts,
          norm_placement Placement = norm_placement::pre>
class block {
public:
    static constexpr bool post_norm = Placement == norm_placement::post;
    using attention_t = self_attention<Backend, Adapter>;
    using mlp_t = std::conditional_t<Experts, moe_mlp<Backend>, dense_mlp<Backend, Adapter, Mlp>>;
    using norm_t = norm_layer<Norm>;

    // Post-norm: normed1 is h = norm1(resid), normed2 holds h + mlp(h) (norm2's input).
    struct activations {
        tensor_view<float> normed1, resid, normed2; // (N, d)
        typename norm_t::stats stats1, stats2;
        typename attention_t::activations attention;
        typename mlp_t::activations mlp;
    };
    // Shared by all layers: a temporary in forward, gradients in backward.
    struct scratch {
        tensor_view<float> tmp, dnormed; // (N, d)
        typename attention_t::scratch attention;
        typename mlp_t::scratch mlp;
    };

    block() = default;
    block(const model_config& c, index_t layer) : d_(c.d_model), attention_(c, layer), mlp_(c, layer) {
        norm1_.eps = norm2_.eps = c.norm_eps;
    }

    template <class Visit>
    void walk(Visit&& visit, const std::string& prefix) {
        norm1_.walk(visit, prefix + "input_layernorm", d_);
        attention_.walk(visit, prefix);
        norm2_.walk(visit, prefix + "post_attention_layernorm", d_);
        mlp_.walk(visit, prefix);
    }
    template <class F>
    void for_each_projection(F&& f) {
        attention_.for_each_projection(f);
        mlp_.for_each_projection(f);
    }

    // `training`: keep what the backward needs (attention's log-sum-exp); a KV cache's chunk does not.
    activations allocate(arena& a, index_t batch, index_t time, bool training) const {
        const index_t n = batch * time;
        activations s;
        s.normed1 = a.allocate<float>({n, d_});
        s.stats1 = norm_t::stats::allocate(a, n);
        s.attention = attention_.allocate(a, batch, time, training);
        s.resid = a.allocate<float>({n, d_});
        s.normed2 = a.allocate<float>({n, d_});
        s.stats2 = norm_t::stats::allocate(a, n);
        s.mlp = mlp_.allocate(a, batch, time, training);
        return s;
    }
    scratch allocate_scratch(arena& a, index_t batch, index_t time, bool training) const {
        const index_t n = batch * time;
        scratch s;
        s.tmp = a.allocate<float>({n, d_});
        if (training) s.dnormed = a.allocate<float>({n, d_});
        if (training) s.attention = attention_.allocate_scratch(a, batch, time);
        if (training || Experts) s.mlp = mlp_.allocate_scratch(a, batch, time);
        return s;
    }

    // out may be x (the KV cache updates its residual stream in place).
    void forward(tensor_view<float> out, cview<float> x, const activations& s, const scratch& g,
                 const attention_context& actx, const adapter_state& ad, const mlp_context& mctx) const {
        if constexpr (post_norm) {
            attention_.forward(g.tmp, x, s.attention, actx, ad);
            residual_forward<float>(s.resid, x, g.tmp);
            norm1_.forward(s.normed1, s.stats1, s.resid);
            mlp_.forward(g.tmp, s.normed1, s.mlp, g.mlp, ad, mctx);
            residual_forward<float>(s.normed2, s.normed1, g.tmp);
            norm2_.forward(out, s.stats2, s.normed2);
            return;
        }
        norm1_.forward(s.normed1, s.stats1, x);
        attention_.forward(g.tmp, s.normed1, s.attention, actx, ad);
        residual_forward<float>(s.resid, x, g.tmp);
        norm2_.forward(s.normed2, s.stats2, s.resid);
        mlp_.forward(g.tmp, s.normed2, s.mlp, g.mlp, ad, mctx);
        residual_forward<float>(out, s.resid, g.tmp);
    }

    void backward(tensor_view<float> dx, cview<float> x, const activations& s, const scratch& g,
                  const attention_context& actx, const adapter_state& ad, const mlp_context& mctx) const {
        if constexpr (post_norm) { // g.dnormed carries each norm's input gradient; dx the residual stream's
            norm2_.backward(g.dnormed, dx, s.normed2, s.stats2, grad_write::assign);
            copy(cview<float>(g.dnormed), dx);
            mlp_.backward(dx, g.dnormed, s.normed1, s.mlp, g.mlp, ad, mctx, grad_write::add);
            norm1_.backward(g.dnormed, dx, s.resid, s.stats1, grad_write::assign);
            copy(cview<float>(g.dnormed), dx);
            attention_.backward(dx, g.dnormed, x, s.attention, g.attention, actx, ad, grad_write::add);
            return;
        }
        mlp_.backward(g.dnormed, dx, s.normed2, s.mlp, g.mlp, ad, mctx, grad_write::assign);
        norm2_.backward(dx, g.dnormed, s.resid, s.stats2, grad_write::add);
        attention_.backward(g.dnormed, dx, s.normed1, s.attention, g.attention, actx, ad, grad_write::assign);
        norm1_.backward(dx, g.dnormed, x, s.stats1, grad_write::add);
    }

private:
    index_t d_ = 0;
    norm_t norm1_, norm2_;
    attention_t attention_;
    mlp_t mlp_;
};

} // namespace tl
