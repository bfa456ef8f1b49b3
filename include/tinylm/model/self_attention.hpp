// tinylm/model/self_attention.hpp: the attention half of a block, forward and backward:
//   q, k, v = projections of x;  q, k = rmsnorm of each head (Qwen3's QK-norm, model_config::qk_norm);
//   rope(q), rope(k) (unless positions are learned embeddings);  att = softmax(q k^T / sqrt(D) + mask) v;  y = o(att)
// with GQA (n_kv_heads key/value heads shared by n_heads query heads), causal (decoders) or bidirectional
// (encoders: model_config::attention), an optional sliding window (causal only), right padding (key_lengths),
// and packed documents (doc_start: no attention across documents, RoPE positions restart).
// Under a KV cache the new keys and values are appended to the cache at `start` and the queries attend over
// everything cached: the same forward serves training, evaluation and generation.
#pragma once

#include <tinylm/model/norm.hpp>
#include <tinylm/model/projection.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/rope.hpp>

#include <span>
#include <vector>

namespace tl {

// One layer's cached keys or values, (B, capacity, Hkv, D): f32, or bf16 (kv_cache.hpp, kv_precision::bf16), the
// other view empty.
struct kv_tensor {
    tensor_view<float> f32{};
    tensor_view<bf16> half{};
    bool empty() const { return f32.data == nullptr && half.data == nullptr; }
};

// Where a forward's tokens sit: rope rows, packed documents, and the KV cache when generating.
struct attention_context {
    cview<float> cos{}, sin{};      // (T, D/2) rows of the rope table for these positions
    cview<index_t> positions{};     // (B, T) packed documents: rope row of each token; else empty
    cview<index_t> doc_start{};     // (B, T) packed documents: first token of each token's document
    cview<index_t> key_lengths{};   // (B) right padding: keys at positions >= key_lengths[b] are unseen
    kv_tensor k_cache{}, v_cache{}; // generating with a KV cache
    index_t start = 0;              // cached positions before these
    // One token of each of B sequences, each with a cache of its own (kv_cache::append_each): this layer's keys and
    // values of sequence b, (1, capacity_b, Hkv, D), in the caches' precision (the other lists empty), and the
    // positions it holds (the token's position; also in `positions`, for rope).
    std::span<const tensor_view<float>> row_k{}, row_v{};
    std::span<const tensor_view<bf16>> row_k_half{}, row_v_half{};
    std::span<const index_t> row_start{};
    bool decodes_rows() const { return !row_k.empty() || !row_k_half.empty(); }
};

template <class Backend, LoraAdapter Adapter>
class self_attention {
public:
    using projection_t = projection<Backend, Adapter>;
    using qk_norm_t = norm_layer<norm_kind::rmsnorm>;
    using norm_stats = qk_norm_t::stats;
    struct activations {
        tensor_view<float> q, k, v, att, lse; // (B, T, H, D), lse (B, H, T) (empty when not training)
        std::array<tensor_view<float>, 4> lora_h;
        // QK-norm: the projections' q and k before their norm (training only; else normed in place) and the rows'
        // rstd, one a head of each token.
        tensor_view<float> q_in, k_in;
        norm_stats q_stats, k_stats;
    };
    // Gradients of the backward, shared by all layers.
    struct scratch {
        tensor_view<float> dq, dk, dv, datt;
        tensor_view<float> dq_in, dk_in; // QK-norm: d(loss)/d(q, k before their norm)
    };

    self_attention() = default;
    self_attention(const model_config& c, index_t layer)
        : heads_(c.n_heads), kv_heads_(c.n_kv_heads), head_dim_(c.head_dim()), window_(c.layer_window(int(layer))),
          causal_(c.attention == attention_kind::causal), q_(c.d_model, c.q_width(), layer, proj::q, c.qkv_bias),
          k_(c.d_model, c.kv_width(), layer, proj::k, c.qkv_bias),
          v_(c.d_model, c.kv_width(), layer, proj::v, c.qkv_bias),
          o_(c.q_width(), c.d_model, layer, proj::o, c.dense_bias), rope_(c.positions == position_kind::rope),
          qk_norm_(c.qk_norm) {
        q_norm_.eps = k_norm_.eps = c.norm_eps;
    }

    template <class Visit>
    void walk(Visit&& visit, const std::string& prefix) {
        q_.walk(visit, prefix + "self_attn.q_proj", param_group::attention);
        k_.walk(visit, prefix + "self_attn.k_proj", param_group::attention);
        v_.walk(visit, prefix + "self_attn.v_proj", param_group::attention);
        o_.walk(visit, prefix + "self_attn.o_proj", param_group::attention);
        if (qk_norm_) {
            q_norm_.walk(visit, prefix + "self_attn.q_norm", head_dim_);
            k_norm_.walk(visit, prefix + "self_attn.k_norm", head_dim_);
        }
    }
    template <class F>
    void for_each_projection(F&& f) {
        f(q_), f(k_), f(v_), f(o_);
    }

    activations allocate(arena& a, index_t batch, index_t time, bool training) const {
        activations s;
        s.q = a.allocate<float>({batch, time, heads_, head_dim_});
        s.k = a.allocate<float>({batch, time, kv_heads_, head_dim_});
        s.v = a.allocate<float>({batch, time, kv_heads_, head_dim_});
        s.att = a.allocate<float>({batch, time, heads_, head_dim_});
        if (training) s.lse = a.allocate<float>({batch, heads_, time});
        const projection_t* p[] = {&q_, &k_, &v_, &o_};
        for (int t = 0; t < 4; ++t)
            if (p[t]->targeted()) s.lora_h[std::size_t(t)] = a.allocate<float>({batch * time, projection_t::lora.rank});
        if (qk_norm_) {
            if (training) {
                s.q_in = a.allocate<float>({batch, time, heads_, head_dim_});
                s.k_in = a.allocate<float>({batch, time, kv_heads_, head_dim_});
            }
            s.q_stats = norm_stats::allocate(a, batch * time * heads_);
            s.k_stats = norm_stats::allocate(a, batch * time * kv_heads_);
        }
        return s;
    }
    scratch allocate_scratch(arena& a, index_t batch, index_t time) const {
        scratch g;
        g.dq = a.allocate<float>({batch, time, heads_, head_dim_});
        g.dk = a.allocate<float>({batch, time, kv_heads_, head_dim_});
        g.dv = a.allocate<float>({batch, time, kv_heads_, head_dim_});
        g.datt = a.allocate<float>({batch * time, heads_ * head_dim_});
        if (qk_norm_) {
            g.dq_in = a.allocate<float>({batch, time, heads_, head_dim_});
            g.dk_in = a.allocate<float>({batch, time, kv_heads_, head_dim_});
        }
        return g;
    }

    // y (N, d) = the attention half applied to x (N, d).
    void forward(tensor_view<float> y, cview<float> x, const activations& s, const attention_context& ctx,
                 const adapter_state& ad) const {
        // With QK-norm the projections write q_in and k_in when training (the norm's backward reads them), else
        // q and k, normed in place.
        const bool keep_inputs = qk_norm_ && s.q_in.data;
        const tensor_view<float> q = keep_inputs ? s.q_in : s.q, k = keep_inputs ? s.k_in : s.k;
        forward_together<projection_t, 3>({&q_, &k_, &v_}, {flat(q), flat(k), flat(s.v)}, x,
                                          {s.lora_h[0], s.lora_h[1], s.lora_h[2]}, ad);
        if (qk_norm_) {
            q_norm_.forward(head_rows(s.q), s.q_stats, head_rows(q));
            k_norm_.forward(head_rows(s.k), s.k_stats, head_rows(k));
        }
        if (rope_) {
            rope_forward<float>(s.q, ctx.cos, ctx.sin, ctx.positions);
            rope_forward<float>(s.k, ctx.cos, ctx.sin, ctx.positions);
        }
        if (ctx.decodes_rows()) { // one token of each sequence: append it to its own cache, attend over that
            const index_t width = kv_heads_ * head_dim_;
            for (std::size_t b = 0; b < ctx.row_start.size(); ++b) {
                const index_t at = ctx.row_start[b] * width;
                const float *k = s.k.data + index_t(b) * width, *v = s.v.data + index_t(b) * width;
                if (ctx.row_k.empty()) {
                    store_in_cache({.half = ctx.row_k_half[b]}, at, k, width);
                    store_in_cache({.half = ctx.row_v_half[b]}, at, v, width);
                } else {
                    store_in_cache({.f32 = ctx.row_k[b]}, at, k, width);
                    store_in_cache({.f32 = ctx.row_v[b]}, at, v, width);
                }
            }
            if (ctx.row_k.empty())
                attention_forward_rows<float, bf16>(s.att, s.q, ctx.row_k_half, ctx.row_v_half, ctx.row_start, window_,
                                                    causal_);
            else
                attention_forward_rows<float>(s.att, s.q, ctx.row_k, ctx.row_v, ctx.row_start, window_, causal_);
        } else if (!ctx.k_cache.empty()) { // append to the cache, attend over all of it
            const tensor_view<float>& f = ctx.k_cache.f32;
            const index_t batch = s.k.dim(0), t_len = s.k.dim(1), width = kv_heads_ * head_dim_,
                          capacity = f.data ? f.dim(1) : ctx.k_cache.half.dim(1);
            for (index_t b = 0; b < batch; ++b) {
                const index_t at = (b * capacity + ctx.start) * width;
                store_in_cache(ctx.k_cache, at, s.k.data + b * t_len * width, t_len * width);
                store_in_cache(ctx.v_cache, at, s.v.data + b * t_len * width, t_len * width);
            }
            if (f.data)
                attention_forward<float>(s.att, s.lse, s.q, ctx.k_cache.f32, ctx.v_cache.f32, window_, ctx.start, {},
                                         causal_, ctx.key_lengths);
            else
                attention_forward<float, bf16>(s.att, s.lse, s.q, ctx.k_cache.half, ctx.v_cache.half, window_,
                                               ctx.start, {}, causal_, ctx.key_lengths);
        } else {
            attention_forward<float>(s.att, s.lse, s.q, s.k, s.v, window_, 0, ctx.doc_start, causal_, ctx.key_lengths);
        }
        o_.forward(y, flat(s.att), s.lora_h[3], ad);
    }

    // dx = (or +=, by mode) d(loss)/dx given dy; parameter gradients accumulate.
    void backward(tensor_view<float> dx, cview<float> dy, cview<float> x, const activations& s, const scratch& g,
                  const attention_context& ctx, const adapter_state& ad, grad_write mode) const {
        o_.backward(g.datt, dy, flat(s.att), s.lora_h[3], ad, grad_write::assign);
        attention_backward<float>(g.dq, g.dk, g.dv, g.datt.reshaped(s.att.shape), s.q, s.k, s.v, s.att, s.lse, window_,
                                  ctx.doc_start, causal_, ctx.key_lengths);
        if (rope_) {
            rope_backward<float>(g.dq, ctx.cos, ctx.sin, ctx.positions);
            rope_backward<float>(g.dk, ctx.cos, ctx.sin, ctx.positions);
        }
        tensor_view<float> dq = g.dq, dk = g.dk;
        if (qk_norm_) {
            q_norm_.backward(head_rows(g.dq_in), head_rows(g.dq), head_rows(s.q_in), s.q_stats, grad_write::assign);
            k_norm_.backward(head_rows(g.dk_in), head_rows(g.dk), head_rows(s.k_in), s.k_stats, grad_write::assign);
            dq = g.dq_in, dk = g.dk_in;
        }
        q_.backward(dx, flat(dq), x, s.lora_h[0], ad, mode);
        k_.backward(dx, flat(dk), x, s.lora_h[1], ad, grad_write::add);
        v_.backward(dx, flat(g.dv), x, s.lora_h[2], ad, grad_write::add);
    }

    // n keys or values written at element `at` of a cache: copied, or rounded to bf16 (nearest even).
    static void store_in_cache(const kv_tensor& cache, index_t at, const float* from, index_t n) {
        if (cache.f32.data) {
            std::copy_n(from, n, cache.f32.data + at);
            return;
        }
        bf16* to = cache.half.data + at;
        for (index_t i = 0; i < n; ++i)
            to[i] = bf16(from[i]);
    }

    static tensor_view<float> flat(tensor_view<float> t) {
        return t.reshaped({t.dim(0) * t.dim(1), t.numel() / (t.dim(0) * t.dim(1))});
    }
    // (B, T, H, D) as (B T H, D): one row a head of a token, the rows QK-norm normalises.
    static tensor_view<float> head_rows(tensor_view<float> t) { return t.reshaped({t.numel() / t.dim(3), t.dim(3)}); }

private:
    index_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0, window_ = 0;
    bool causal_ = true;
    projection_t q_, k_, v_, o_;
    bool rope_ = true; // false: positions are learned embeddings added to the input (BERT)
    bool qk_norm_ = false;
    qk_norm_t q_norm_, k_norm_; // Qwen3: weights of the head width, shared by the heads
};

} // namespace tl
