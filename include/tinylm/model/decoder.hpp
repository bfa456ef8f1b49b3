// tinylm/model/decoder.hpp: a decoder-only transformer (Llama / Qwen2 / Mistral family) generated from a
// compile-time configuration, with a hand-written backward pass.
//
//   x = embed(ids)
//   for each layer:  x = x + o_proj(attention(rope(q(norm1(x))), rope(k(..)), v(..)))
//                    x = x + down(mlp(gate(norm2(x)), up(norm2(x))))
//                        (with config.moe.n_experts > 0: x = x + moe(norm2(x)), Mixtral's sparse block)
//   logits = head(norm(x))            loss = cross_entropy(logits, targets), chunked over the vocabulary
//                                     (+ moe.aux_loss_weight * the load-balancing loss over all layers)
//
// Memory: parameters, gradients and optimizer state share one arena, allocated at construction;
// activations live in a second arena planned for the batch shape (plan(B, T)), so a training step allocates
// nothing. Parameter names are the Hugging Face ones (model.layers.3.self_attn.q_proj.weight) and weights
// are stored (out, in), so checkpoints load without renaming or transposes.
#pragma once

#include <tinylm/backend/default.hpp>
#include <tinylm/core/arena.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/cross_entropy.hpp>
#include <tinylm/ops/embedding.hpp>
#include <tinylm/ops/layernorm.hpp>
#include <tinylm/ops/linear.hpp>
#include <tinylm/ops/moe.hpp>
#include <tinylm/ops/residual.hpp>
#include <tinylm/ops/rmsnorm.hpp>
#include <tinylm/ops/rope.hpp>

#include <functional>
#include <string>
#include <vector>

namespace tl {

// How the optimizer treats a parameter (weight decay groups): decay weights, and by option embeddings.
enum class param_kind : std::uint8_t { weight, embedding, norm, bias };

struct parameter_entry {
    std::string name;         // Hugging Face name
    tensor_view<float> value; // the parameter
    tensor_view<float> grad;  // its gradient, same shape
    param_kind kind;
};

template <ModelConfig C, Backend B = default_backend>
class decoder {
public:
    static constexpr model_config config = C::value;
    static_assert(validate_config<C>());
    using backend = B;

    static constexpr index_t d = config.d_model, n_heads = config.n_heads, n_kv = config.n_kv_heads,
                             hd = config.head_dim(), qw = config.q_width(), kvw = config.kv_width(), ff = config.d_ff,
                             vocab = config.vocab_size;
    static constexpr bool has_norm_bias = config.norm == norm_kind::layernorm;
    static constexpr bool swiglu = config.mlp == mlp_kind::swiglu;
    static constexpr bool is_moe = config.moe.n_experts > 0;
    static constexpr index_t n_experts = config.moe.n_experts, top_k = config.moe.top_k;

    // Number of parameter-shaped state tensors an optimizer may allocate (AdamW needs two).
    static constexpr int max_optimizer_slots = 2;

    struct norm_params {
        tensor_view<float> weight, bias; // bias only for layernorm
    };
    struct layer_params {
        norm_params attn_norm;
        tensor_view<float> q, k, v, o;
        tensor_view<float> q_bias, k_bias, v_bias; // only with qkv_bias
        norm_params mlp_norm;
        tensor_view<float> gate, up, down; // gate only for swiglu; none with experts
        // Experts (is_moe): router (E, d), gate|up stacked (E, 2F, d), down (E, d, F)
        tensor_view<float> router, experts_gate_up, experts_down;
    };
    struct parameters {
        tensor_view<float> embed;
        std::vector<layer_params> layers;
        norm_params final_norm;
        tensor_view<float> head; // the embedding when tied
    };

    // Allocates parameters, gradients and optimizer state in one arena; initialises from `seed`.
    explicit decoder(std::uint64_t seed = 0, index_t cross_entropy_chunk = 4096) : ce_chunk_(cross_entropy_chunk) {
        arena measure = arena::measuring();
        allocate_parameters(measure);
        const std::size_t block = measure.used();
        param_arena_ = arena(block * (2 + max_optimizer_slots));
        params_ = allocate_parameters(param_arena_);
        grads_ = allocate_parameters(param_arena_);
        grad_begin_ = grads_.embed.data;
        grad_bytes_ = block;
        build_entries();
        init(seed);
        zero_grad();
    }
    decoder(const decoder&) = delete;
    decoder& operator=(const decoder&) = delete;

    // ---- parameters ------------------------------------------------------------------------------------

    const parameters& params() const { return params_; }
    const parameters& grads() const { return grads_; }
    // One walk over every parameter, in a fixed order, with its Hugging Face name: optimizers, checkpoints,
    // clipping, freezing and counting all use it.
    const std::vector<parameter_entry>& parameter_entries() const { return entries_; }
    template <class F>
    void visit_parameters(F&& f) const {
        for (const parameter_entry& e : entries_)
            f(e);
    }
    // A zeroed tensor per parameter, in parameter_entries() order, from the parameter arena.
    std::vector<tensor_view<float>> allocate_optimizer_state() {
        check(optimizer_slots_used_ < max_optimizer_slots, "decoder: all optimizer state slots are in use");
        ++optimizer_slots_used_;
        std::vector<tensor_view<float>> state;
        for (const parameter_entry& e : entries_)
            state.push_back(param_arena_.allocate_zeroed<float>(e.value.shape));
        return state;
    }
    void zero_grad() { std::fill_n(reinterpret_cast<std::byte*>(grad_begin_), grad_bytes_, std::byte{0}); }
    // Re-initialises every parameter: N(0, init_std^2) weights, unit norm weights, zero biases.
    void init(std::uint64_t seed) {
        std::uint64_t stream = 0;
        for (const parameter_entry& e : entries_) {
            counter_rng rng(seed, stream++);
            if (e.kind == param_kind::norm)
                e.value.fill(1.0f);
            else if (e.kind == param_kind::bias)
                e.value.fill(0.0f);
            else
                for (float& w : e.value)
                    w = float(rng.normal() * config.init_std);
        }
    }

    // ---- activations -----------------------------------------------------------------------------------

    // Plans activation memory for batches of shape (batch, time). Allocates only when a larger shape than
    // ever before is planned; call it before the training loop so that steps never allocate.
    void plan(index_t batch, index_t time) {
        check(batch > 0 && time > 0 && time <= config.max_seq_len, [&] {
            return "decoder: batch " + std::to_string(batch) + " x time " + std::to_string(time) +
                   " is not valid (time must be in [1, max_seq_len = " + std::to_string(config.max_seq_len) + "])";
        });
        if (batch == batch_ && time == time_) return;
        arena measure = arena::measuring();
        allocate_activations(measure, batch, time);
        if (measure.used() > act_arena_.capacity()) act_arena_ = arena(measure.used());
        act_arena_.reset();
        acts_ = allocate_activations(act_arena_, batch, time);
        batch_ = batch;
        time_ = time;
        rope_table(acts_.rope_cos, acts_.rope_sin, config.rope_theta);
    }
    std::size_t activation_bytes() const { return act_arena_.capacity(); }
    std::size_t parameter_arena_bytes() const { return param_arena_.capacity(); }

    // ---- forward and backward --------------------------------------------------------------------------

    // Logits (B, T, V) for ids (B, T), written to `out`. Inference path: materialises all logits.
    void logits(cview<token_t> ids, tensor_view<float> out) {
        forward_hidden(ids);
        const index_t n = batch_ * time_;
        expect_shape("decoder::logits", "out", out, {batch_, time_, vocab});
        linear_forward<B, float>(out.reshaped({n, vocab}), acts_.final_normed, params_.head);
    }

    // Mean cross-entropy of targets (B, T) given ids (B, T); positions with target -100 are not counted.
    // Keeps the activations for backward(). The vocabulary is processed in chunks.
    float loss(cview<token_t> ids, cview<token_t> targets) {
        forward_hidden(ids);
        expect_same_shape("decoder::loss", "targets", targets, ids);
        copy(targets, acts_.targets);
        const auto r = head_cross_entropy_forward<B, float>(acts_.ce_lse, acts_.ce, acts_.final_normed, params_.head,
                                                            flat_targets());
        loss_count_ = r.count;
        has_forward_ = true;
        if constexpr (is_moe) return float(r.loss + config.moe.aux_loss_weight * aux_loss_);
        return float(r.loss);
    }
    index_t counted_targets() const { return loss_count_; }
    // Mixture of experts: the load-balancing loss of the last forward (unweighted; loss() adds
    // moe.aux_loss_weight times it), and the tokens each expert of `layer` received (top_k per token).
    double aux_loss() const { return aux_loss_; }
    std::vector<index_t> expert_counts(index_t layer) const {
        std::vector<index_t> counts;
        check(layer >= 0 && layer < index_t(acts_.layers.size()), "decoder::expert_counts: run a forward first");
        if constexpr (is_moe)
            for (index_t e = 0; e < n_experts; ++e)
                counts.push_back(acts_.layers[layer].moe.tokens_of(e));
        return counts;
    }

    // Adds d(loss * scale)/d(parameter) into the gradients, for the last call of loss().
    void backward(double scale = 1.0) {
        check(has_forward_, "decoder::backward: call loss() first");
        has_forward_ = false;
        daux_ = config.moe.aux_loss_weight * scale;
        auto& a = acts_;
        head_cross_entropy_backward<B, float>(a.dnormed, grads_.head, a.ce, a.final_normed, params_.head,
                                              flat_targets(), a.ce_lse, scale);
        norm_backward(a.dx, grads_.final_norm, a.dnormed, a.xs.back(), params_.final_norm, a.final_stats,
                      grad_write::assign);
        for (index_t l = config.n_layers - 1; l >= 0; --l)
            layer_backward(l);
        embedding_backward<float>(grads_.embed, a.ids, a.dx);
    }

    // ---- inference with a KV cache ---------------------------------------------------------------------

    // Keys and values of every layer for `batch` sequences of up to `capacity` positions, plus the scratch
    // one chunk of new tokens needs. Memory is allocated once, here.
    class kv_cache {
    public:
        index_t batch() const { return batch_; }
        index_t capacity() const { return capacity_; }
        index_t length() const { return length_; } // positions filled so far
        void clear() { length_ = 0; }

    private:
        friend class decoder;
        arena arena_;
        index_t batch_ = 0, capacity_ = 0, chunk_ = 0, length_ = 0;
        std::vector<tensor_view<float>> k_, v_;  // per layer (B, capacity, Hkv, D)
        tensor_view<float> rope_cos_, rope_sin_; // (capacity, D/2)
        tensor_view<float> x_, normed_, q_, k_new_, v_new_, att_, tmp_, gate_, up_, hidden_; // chunk scratch
        tensor_view<float> last_, last_normed_, last_rstd_, last_mean_, rstd_, mean_;
        moe_cache<float> moe_;        // experts only
        moe_workspace<float> moe_ws_; // experts only
    };

    kv_cache make_cache(index_t batch, index_t capacity, index_t chunk = 64) const {
        check(batch > 0 && capacity > 0 && chunk > 0,
              "decoder::make_cache: batch, capacity and chunk must be positive");
        chunk = std::min(chunk, capacity);
        kv_cache c;
        c.batch_ = batch;
        c.capacity_ = capacity;
        c.chunk_ = chunk;
        auto plan = [&](arena& a) {
            c.k_.clear();
            c.v_.clear();
            for (int l = 0; l < config.n_layers; ++l) {
                c.k_.push_back(a.allocate<float>({batch, capacity, n_kv, hd}));
                c.v_.push_back(a.allocate<float>({batch, capacity, n_kv, hd}));
            }
            const index_t n = batch * chunk;
            c.rope_cos_ = a.allocate<float>({capacity, hd / 2});
            c.rope_sin_ = a.allocate<float>({capacity, hd / 2});
            c.x_ = a.allocate<float>({n, d});
            c.normed_ = a.allocate<float>({n, d});
            c.rstd_ = a.allocate<float>({n});
            c.mean_ = a.allocate<float>({n});
            c.q_ = a.allocate<float>({n, qw});
            c.k_new_ = a.allocate<float>({n, kvw});
            c.v_new_ = a.allocate<float>({n, kvw});
            c.att_ = a.allocate<float>({n, qw});
            c.tmp_ = a.allocate<float>({n, d});
            c.gate_ = a.allocate<float>({n, ff});
            c.up_ = a.allocate<float>({n, ff});
            c.hidden_ = a.allocate<float>({n, ff});
            c.last_ = a.allocate<float>({batch, d});
            c.last_normed_ = a.allocate<float>({batch, d});
            c.last_rstd_ = a.allocate<float>({batch});
            c.last_mean_ = a.allocate<float>({batch});
            if constexpr (is_moe) {
                c.moe_ = moe_cache<float>::allocate(a, n, ff, n_experts, top_k);
                c.moe_ws_ = moe_workspace<float>::allocate(a, n, d, ff, n_experts, top_k);
            }
        };
        arena measure = arena::measuring();
        plan(measure);
        c.arena_ = arena(measure.used());
        plan(c.arena_);
        rope_table(c.rope_cos_, c.rope_sin_, config.rope_theta);
        return c;
    }

    // Appends ids (B, T) to the cache and writes the logits of the last new position, (B, V).
    void forward_cached(kv_cache& c, cview<token_t> ids, tensor_view<float> last_logits) const {
        check(ids.shape.rank == 2 && ids.dim(0) == c.batch_, [&] {
            return "decoder::forward_cached: ids must be (" + std::to_string(c.batch_) + ", T), got " + ids.shape.str();
        });
        const index_t total = ids.dim(1);
        check(c.length_ + total <= c.capacity_, [&] {
            return "decoder::forward_cached: " + std::to_string(c.length_ + total) +
                   " positions exceed the cache capacity " + std::to_string(c.capacity_);
        });
        expect_shape("decoder::forward_cached", "last_logits", last_logits, {c.batch_, vocab});
        for (index_t t0 = 0; t0 < total; t0 += c.chunk_) {
            const index_t t_len = std::min(c.chunk_, total - t0);
            forward_cached_chunk(c, ids, t0, t_len);
        }
        linear_forward<B, float>(last_logits, c.last_normed_, params_.head);
    }

private:
    struct norm_stats {
        tensor_view<float> mean, rstd; // mean only for layernorm
    };
    struct layer_activations {
        tensor_view<float> normed1, q, k, v, att, lse, resid, normed2, gate, up, hidden;
        norm_stats stats1, stats2;
        moe_cache<float> moe; // experts only (then gate, up, hidden are empty)
    };
    struct activations {
        tensor_view<token_t> ids, targets;  // (B, T)
        std::vector<tensor_view<float>> xs; // residual stream (N, d), L + 1 of them
        std::vector<layer_activations> layers;
        tensor_view<float> final_normed; // (N, d)
        norm_stats final_stats;
        tensor_view<float> ce_lse; // (N)
        cross_entropy_workspace<float> ce;
        tensor_view<float> rope_cos, rope_sin; // (T, D/2)
        // Scratch, shared by all layers: a temporary in forward, gradients in backward.
        tensor_view<float> tmp, dx, dnormed, dq, dk, dv, datt, dgate, dup, dhidden;
        moe_workspace<float> moe_ws; // experts only: scratch shared by the layers
        moe_balance balance;         // experts only: aux-loss statistics of all layers
    };

    parameters allocate_parameters(arena& a) {
        parameters p;
        auto norm = [&]() {
            return norm_params{a.allocate<float>({d}), has_norm_bias ? a.allocate<float>({d}) : tensor_view<float>{}};
        };
        p.embed = a.allocate<float>({vocab, d});
        for (int l = 0; l < config.n_layers; ++l) {
            layer_params& lp = p.layers.emplace_back();
            lp.attn_norm = norm();
            lp.q = a.allocate<float>({qw, d});
            lp.k = a.allocate<float>({kvw, d});
            lp.v = a.allocate<float>({kvw, d});
            if constexpr (config.qkv_bias) {
                lp.q_bias = a.allocate<float>({qw});
                lp.k_bias = a.allocate<float>({kvw});
                lp.v_bias = a.allocate<float>({kvw});
            }
            lp.o = a.allocate<float>({d, qw});
            lp.mlp_norm = norm();
            if constexpr (is_moe) {
                lp.router = a.allocate<float>({n_experts, d});
                lp.experts_gate_up = a.allocate<float>({n_experts, 2 * ff, d});
                lp.experts_down = a.allocate<float>({n_experts, d, ff});
            } else {
                if constexpr (swiglu) lp.gate = a.allocate<float>({ff, d});
                lp.up = a.allocate<float>({ff, d});
                lp.down = a.allocate<float>({d, ff});
            }
        }
        p.final_norm = norm();
        p.head = config.tied_embeddings ? p.embed : a.allocate<float>({vocab, d});
        return p;
    }

    void build_entries() {
        auto add = [&](std::string name, tensor_view<float> v, tensor_view<float> g, param_kind k) {
            if (v.data) entries_.push_back({std::move(name), v, g, k});
        };
        auto add_norm = [&](const std::string& prefix, const norm_params& v, const norm_params& g) {
            add(prefix + ".weight", v.weight, g.weight, param_kind::norm);
            add(prefix + ".bias", v.bias, g.bias, param_kind::bias);
        };
        add("model.embed_tokens.weight", params_.embed, grads_.embed, param_kind::embedding);
        for (int l = 0; l < config.n_layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            const layer_params &v = params_.layers[l], &g = grads_.layers[l];
            add_norm(p + "input_layernorm", v.attn_norm, g.attn_norm);
            add(p + "self_attn.q_proj.weight", v.q, g.q, param_kind::weight);
            add(p + "self_attn.q_proj.bias", v.q_bias, g.q_bias, param_kind::bias);
            add(p + "self_attn.k_proj.weight", v.k, g.k, param_kind::weight);
            add(p + "self_attn.k_proj.bias", v.k_bias, g.k_bias, param_kind::bias);
            add(p + "self_attn.v_proj.weight", v.v, g.v, param_kind::weight);
            add(p + "self_attn.v_proj.bias", v.v_bias, g.v_bias, param_kind::bias);
            add(p + "self_attn.o_proj.weight", v.o, g.o, param_kind::weight);
            add_norm(p + "post_attention_layernorm", v.mlp_norm, g.mlp_norm);
            add(p + "mlp.gate_proj.weight", v.gate, g.gate, param_kind::weight);
            add(p + "mlp.up_proj.weight", v.up, g.up, param_kind::weight);
            add(p + "mlp.down_proj.weight", v.down, g.down, param_kind::weight);
            add(p + "mlp.gate.weight", v.router, g.router, param_kind::weight); // experts only (transformers 5)
            add(p + "mlp.experts.gate_up_proj", v.experts_gate_up, g.experts_gate_up, param_kind::weight);
            add(p + "mlp.experts.down_proj", v.experts_down, g.experts_down, param_kind::weight);
        }
        add_norm("model.norm", params_.final_norm, grads_.final_norm);
        if (!config.tied_embeddings) add("lm_head.weight", params_.head, grads_.head, param_kind::weight);
    }

    activations allocate_activations(arena& a, index_t batch, index_t time) {
        const index_t n = batch * time;
        auto stats = [&]() {
            return norm_stats{has_norm_bias ? a.allocate<float>({n}) : tensor_view<float>{}, a.allocate<float>({n})};
        };
        activations s;
        s.ids = a.allocate<token_t>({batch, time});
        s.targets = a.allocate<token_t>({batch, time});
        for (int l = 0; l <= config.n_layers; ++l)
            s.xs.push_back(a.allocate<float>({n, d}));
        for (int l = 0; l < config.n_layers; ++l) {
            layer_activations& la = s.layers.emplace_back();
            la.normed1 = a.allocate<float>({n, d});
            la.stats1 = stats();
            la.q = a.allocate<float>({batch, time, n_heads, hd});
            la.k = a.allocate<float>({batch, time, n_kv, hd});
            la.v = a.allocate<float>({batch, time, n_kv, hd});
            la.att = a.allocate<float>({batch, time, n_heads, hd});
            la.lse = a.allocate<float>({batch, n_heads, time});
            la.resid = a.allocate<float>({n, d});
            la.normed2 = a.allocate<float>({n, d});
            la.stats2 = stats();
            if constexpr (is_moe) {
                la.moe = moe_cache<float>::allocate(a, n, ff, n_experts, top_k);
            } else {
                if constexpr (swiglu) la.gate = a.allocate<float>({n, ff});
                la.up = a.allocate<float>({n, ff});
                la.hidden = a.allocate<float>({n, ff});
            }
        }
        s.final_normed = a.allocate<float>({n, d});
        s.final_stats = stats();
        s.ce_lse = a.allocate<float>({n});
        s.ce = cross_entropy_workspace<float>::allocate(a, n, std::min<index_t>(ce_chunk_, vocab));
        s.rope_cos = a.allocate<float>({time, hd / 2});
        s.rope_sin = a.allocate<float>({time, hd / 2});
        s.tmp = a.allocate<float>({n, d});
        s.dx = a.allocate<float>({n, d});
        s.dnormed = a.allocate<float>({n, d});
        s.dq = a.allocate<float>({batch, time, n_heads, hd});
        s.dk = a.allocate<float>({batch, time, n_kv, hd});
        s.dv = a.allocate<float>({batch, time, n_kv, hd});
        s.datt = a.allocate<float>({n, qw});
        if constexpr (is_moe) {
            s.moe_ws = moe_workspace<float>::allocate(a, n, d, ff, n_experts, top_k);
            s.balance = moe_balance::allocate(a, n_experts);
        } else {
            s.dgate = a.allocate<float>({n, ff});
            s.dup = a.allocate<float>({n, ff});
            s.dhidden = a.allocate<float>({n, ff});
        }
        return s;
    }

    // One chunk of t_len new positions per sequence: the training forward, reading keys and values from the
    // cache. Ends with the final norm of each sequence's last position in c.last_normed_.
    void forward_cached_chunk(kv_cache& c, cview<token_t> ids, index_t t0, index_t t_len) const {
        const index_t batch = c.batch_, n = batch * t_len, start = c.length_, half = hd / 2;
        auto rows = [&](tensor_view<float> t, index_t width) { return tensor_view<float>{t.data, {n, width}}; };
        auto heads = [&](tensor_view<float> t, index_t h) { return tensor_view<float>{t.data, {batch, t_len, h, hd}}; };
        const tensor_view<float> x = rows(c.x_, d), normed = rows(c.normed_, d), tmp = rows(c.tmp_, d);
        const cview<float> cos{c.rope_cos_.data + start * half, {t_len, half}},
            sin{c.rope_sin_.data + start * half, {t_len, half}};
        const norm_stats st{tensor_view<float>{c.mean_.data, {n}}, tensor_view<float>{c.rstd_.data, {n}}};
        for (index_t b = 0; b < batch; ++b)
            for (index_t t = 0; t < t_len; ++t) {
                const token_t id = ids[b * ids.dim(1) + t0 + t];
                check(id >= 0 && id < vocab, [&] {
                    return "decoder::forward_cached: token id " + std::to_string(id) + " is outside the vocabulary";
                });
                std::copy_n(params_.embed.row(id), d, x.row(b * t_len + t));
            }
        for (index_t l = 0; l < config.n_layers; ++l) {
            const layer_params& p = params_.layers[l];
            norm_forward(normed, st, x, p.attn_norm);
            linear_forward<B, float>(rows(c.q_, qw), normed, p.q, p.q_bias);
            linear_forward<B, float>(rows(c.k_new_, kvw), normed, p.k, p.k_bias);
            linear_forward<B, float>(rows(c.v_new_, kvw), normed, p.v, p.v_bias);
            rope_forward<float>(heads(c.q_, n_heads), cos, sin);
            rope_forward<float>(heads(c.k_new_, n_kv), cos, sin);
            for (index_t b = 0; b < batch; ++b) { // append to the cache
                const index_t width = t_len * kvw, at = (b * c.capacity_ + start) * kvw;
                std::copy_n(c.k_new_.data + b * width, width, c.k_[l].data + at);
                std::copy_n(c.v_new_.data + b * width, width, c.v_[l].data + at);
            }
            attention_forward<float>(heads(c.att_, n_heads), {}, heads(c.q_, n_heads), c.k_[l], c.v_[l],
                                     config.sliding_window, start);
            linear_forward<B, float>(tmp, rows(c.att_, qw), p.o);
            residual_forward<float>(x, x, tmp);
            norm_forward(normed, st, x, p.mlp_norm);
            if constexpr (is_moe) {
                moe_forward<B, float>(tmp, c.moe_.first_rows(n), c.moe_ws_.first_rows(n), normed, p.router,
                                      p.experts_gate_up, p.experts_down);
            } else {
                linear_forward<B, float>(rows(c.up_, ff), normed, p.up);
                if constexpr (swiglu) {
                    linear_forward<B, float>(rows(c.gate_, ff), normed, p.gate);
                    swiglu_forward<float>(rows(c.hidden_, ff), rows(c.gate_, ff), rows(c.up_, ff));
                } else {
                    gelu_forward<float>(rows(c.hidden_, ff), rows(c.up_, ff));
                }
                linear_forward<B, float>(tmp, rows(c.hidden_, ff), p.down);
            }
            residual_forward<float>(x, x, tmp);
        }
        c.length_ += t_len;
        for (index_t b = 0; b < batch; ++b)
            std::copy_n(x.row(b * t_len + t_len - 1), d, c.last_.row(b));
        norm_forward(c.last_normed_, norm_stats{c.last_mean_, c.last_rstd_}, c.last_, params_.final_norm);
    }

    void norm_forward(tensor_view<float> y, const norm_stats& st, cview<float> x, const norm_params& p) const {
        if constexpr (has_norm_bias)
            layernorm_forward<float>(y, st.mean, st.rstd, x, p.weight, p.bias, config.norm_eps);
        else
            rmsnorm_forward<float>(y, st.rstd, x, p.weight, config.norm_eps);
    }
    void norm_backward(tensor_view<float> dx, const norm_params& g, cview<float> dy, cview<float> x,
                       const norm_params& p, const norm_stats& st, grad_write mode) {
        if constexpr (has_norm_bias)
            layernorm_backward<float>(dx, g.weight, g.bias, dy, x, p.weight, st.mean, st.rstd, mode);
        else
            rmsnorm_backward<float>(dx, g.weight, dy, x, p.weight, st.rstd, mode);
    }
    static tensor_view<float> flat(tensor_view<float> t) {
        return t.reshaped({t.dim(0) * t.dim(1), t.numel() / (t.dim(0) * t.dim(1))});
    }

    cview<token_t> flat_targets() const { return acts_.targets.reshaped({batch_ * time_}); }

    void forward_hidden(cview<token_t> ids) {
        check(ids.shape.rank == 2, [&] { return "decoder: ids must be (B, T), got " + ids.shape.str(); });
        plan(ids.dim(0), ids.dim(1));
        auto& a = acts_;
        copy(ids, a.ids);
        embedding_forward<float>(a.xs[0], a.ids.reshaped({batch_ * time_}), params_.embed);
        if constexpr (is_moe) a.balance.clear();
        for (index_t l = 0; l < config.n_layers; ++l)
            layer_forward(l);
        if constexpr (is_moe) aux_loss_ = a.balance.loss();
        norm_forward(a.final_normed, a.final_stats, a.xs.back(), params_.final_norm);
    }

    void layer_forward(index_t l) {
        const layer_params& p = params_.layers[l];
        layer_activations& la = acts_.layers[l];
        const tensor_view<float> x = acts_.xs[l], out = acts_.xs[l + 1];
        // attention
        norm_forward(la.normed1, la.stats1, x, p.attn_norm);
        linear_forward<B, float>(flat(la.q), la.normed1, p.q, p.q_bias);
        linear_forward<B, float>(flat(la.k), la.normed1, p.k, p.k_bias);
        linear_forward<B, float>(flat(la.v), la.normed1, p.v, p.v_bias);
        rope_forward<float>(la.q, acts_.rope_cos, acts_.rope_sin);
        rope_forward<float>(la.k, acts_.rope_cos, acts_.rope_sin);
        attention_forward<float>(la.att, la.lse, la.q, la.k, la.v, config.sliding_window);
        linear_forward<B, float>(acts_.tmp, flat(la.att), p.o);
        residual_forward<float>(la.resid, x, acts_.tmp);
        // MLP
        norm_forward(la.normed2, la.stats2, la.resid, p.mlp_norm);
        if constexpr (is_moe) {
            moe_forward<B, float>(acts_.tmp, la.moe, acts_.moe_ws, la.normed2, p.router, p.experts_gate_up,
                                  p.experts_down, &acts_.balance);
        } else {
            linear_forward<B, float>(la.up, la.normed2, p.up);
            if constexpr (swiglu) {
                linear_forward<B, float>(la.gate, la.normed2, p.gate);
                swiglu_forward<float>(la.hidden, la.gate, la.up);
            } else {
                gelu_forward<float>(la.hidden, la.up);
            }
            linear_forward<B, float>(acts_.tmp, la.hidden, p.down);
        }
        residual_forward<float>(out, la.resid, acts_.tmp);
    }

    // On entry acts_.dx holds d(loss)/d(output of layer l); on exit d(loss)/d(input of layer l).
    // The residual connections are the pass-through of dx; each branch adds its input gradient into it.
    void layer_backward(index_t l) {
        const layer_params& p = params_.layers[l];
        const layer_params& g = grads_.layers[l];
        const layer_activations& la = acts_.layers[l];
        auto& a = acts_;
        // MLP (mirror of the forward MLP block)
        if constexpr (is_moe) { // the router also receives the aux loss's gradient (daux_, set by backward())
            moe_backward<B, float>(a.dnormed, g.router, g.experts_gate_up, g.experts_down, a.dx, la.normed2, p.router,
                                   p.experts_gate_up, p.experts_down, la.moe, a.moe_ws, &a.balance, daux_);
        } else {
            linear_backward<B, float>(a.dhidden, g.down, {}, a.dx, la.hidden, p.down);
            if constexpr (swiglu) {
                swiglu_backward<float>(a.dgate, a.dup, a.dhidden, la.gate, la.up);
                linear_backward<B, float>(a.dnormed, g.gate, {}, a.dgate, la.normed2, p.gate);
                linear_backward<B, float>(a.dnormed, g.up, {}, a.dup, la.normed2, p.up, grad_write::add);
            } else {
                gelu_backward<float>(a.dup, a.dhidden, la.up);
                linear_backward<B, float>(a.dnormed, g.up, {}, a.dup, la.normed2, p.up);
            }
        }
        norm_backward(a.dx, g.mlp_norm, a.dnormed, la.resid, p.mlp_norm, la.stats2, grad_write::add);
        // attention (mirror of the forward attention block)
        linear_backward<B, float>(a.datt, g.o, {}, a.dx, flat(la.att), p.o);
        attention_backward<float>(a.dq, a.dk, a.dv, a.datt.reshaped(la.att.shape), la.q, la.k, la.v, la.att, la.lse,
                                  config.sliding_window);
        rope_backward<float>(a.dq, a.rope_cos, a.rope_sin);
        rope_backward<float>(a.dk, a.rope_cos, a.rope_sin);
        linear_backward<B, float>(a.dnormed, g.q, g.q_bias, flat(a.dq), la.normed1, p.q);
        linear_backward<B, float>(a.dnormed, g.k, g.k_bias, flat(a.dk), la.normed1, p.k, grad_write::add);
        linear_backward<B, float>(a.dnormed, g.v, g.v_bias, flat(a.dv), la.normed1, p.v, grad_write::add);
        norm_backward(a.dx, g.attn_norm, a.dnormed, a.xs[l], p.attn_norm, la.stats1, grad_write::add);
    }

    arena param_arena_;
    parameters params_, grads_;
    float* grad_begin_ = nullptr;
    std::size_t grad_bytes_ = 0;
    std::vector<parameter_entry> entries_;
    int optimizer_slots_used_ = 0;

    arena act_arena_;
    activations acts_;
    index_t batch_ = 0, time_ = 0;
    index_t ce_chunk_;
    index_t loss_count_ = 0;
    bool has_forward_ = false;
    double aux_loss_ = 0; // experts only: load-balancing loss of the last forward
    double daux_ = 0;     // experts only: d(scaled loss)/d(aux loss) during backward()
};

} // namespace tl
