// tinylm/model/decoder.hpp: a decoder-only transformer (Llama / Qwen2 / Mistral family) generated from a
// compile-time configuration, with a hand-written backward pass.
//
//   x = embed(ids)
//   for each layer:  x = x + o_proj(attention(rope(q(norm1(x))), rope(k(..)), v(..)))
//                    x = x + down(mlp(gate(norm2(x)), up(norm2(x))))
//                        (with static_config.moe.n_experts > 0: x = x + moe(norm2(x)), Mixtral's sparse block)
//   logits = head(norm(x))            loss = cross_entropy(logits, targets), chunked over the vocabulary
//                                     (+ moe.aux_loss_weight * the load-balancing loss over all layers,
//                                      or the mean of per-layer ones: moe.balance_per_layer)
//
// Memory: parameters, gradients and optimizer state share one arena, allocated at construction;
// activations live in a second arena planned for the batch shape (plan(B, T)), so a training step allocates
// nothing. Parameter names are the Hugging Face ones (model.layers.3.self_attn.q_proj.weight) and weights
// are stored (out, in), so checkpoints load without renaming or transposes.
//
// LoRA: the third template argument is an adapter type (model/static_config.hpp, default no_adapter: zero cost).
// With one, every targeted projection computes y = x W^T (+ b) + (alpha / r) * (dropout(x) A^T) B^T with
// A (r, in) initialised like peft (kaiming-uniform, a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and B zero.
// The base is frozen: it has no gradients (no dW products, no gradient memory) and only the LoRA tensors
// are trainable (parameter_entry::trainable; trainable_entries() is what optimizers see). Their names are
// peft's without the "base_model.model." prefix: model.layers.0.self_attn.q_proj.lora_A.weight.
// Dropout uses the counter-based RNG, stream (training forward count, layer, target), and is active only
// in loss()/backward(). merge() folds (alpha / r) B A into W; unmerge() takes it out again.
//
// QLoRA (lora_config::quantized_base): the frozen q/k/v/o/gate/up/down weights live in NF4 with double
// quantisation (ops/nf4.hpp, about 0.516 bytes per weight), never as f32: init() and load_pretrained quantise
// one matrix at a time, forward and backward dequantise tiles of 512 rows into a scratch (ops/nf4_linear.hpp).
// They are not parameter_entries(); quantized_entries() names them. merge() re-quantises W + (alpha / r) B A
// (lossy, measured in docs/quantization.md) and keeps the 4-bit weights it replaced, which unmerge() restores.
#pragma once

#include <tinylm/backend/default.hpp>
#include <tinylm/core/arena.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/cross_entropy.hpp>
#include <tinylm/ops/embedding.hpp>
#include <tinylm/ops/layernorm.hpp>
#include <tinylm/ops/linear.hpp>
#include <tinylm/ops/moe.hpp>
#include <tinylm/ops/nf4_linear.hpp>
#include <tinylm/ops/residual.hpp>
#include <tinylm/ops/rmsnorm.hpp>
#include <tinylm/ops/rope.hpp>

#include <array>
#include <functional>
#include <string>
#include <vector>

namespace tl {

template <ModelConfig C, Backend B = default_backend, LoraAdapter A = no_adapter>
class decoder {
public:
    static constexpr model_config static_config = C::value;
    const model_config& config() const { return static_config; }
    static_assert(validate_config<C>());
    static_assert(validate_adapter<A>());
    using backend = B;
    using adapter = A;

    // ---- LoRA (compile time) ---------------------------------------------------------------------------
    static constexpr lora_config lora = A::value;
    static constexpr bool has_adapter = lora.rank > 0;
    static constexpr index_t lora_rank = lora.rank;
    static constexpr float lora_scale = has_adapter ? lora.alpha / float(lora.rank) : 0.0f;
    static constexpr bool lora_dropout = has_adapter && lora.dropout > 0;
    static constexpr bool quantized_base = has_adapter && lora.quantized_base; // QLoRA: an NF4 base
    static_assert(!quantized_base || static_config.moe.n_experts == 0,
                  "lora_config: quantized_base (QLoRA) supports dense MLPs only, not experts");
    // Target t in 0..6: q, k, v, o, gate, up, down (the bit order of lora_target).
    static constexpr std::array<const char*, lora_target_count> lora_modules = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    static constexpr bool lora_targets(int t) { return has_adapter && ((lora.targets >> t) & 1u); }
    static_assert(!has_adapter || static_config.moe.n_experts == 0 || (lora.targets & (lora_gate | lora_up | lora_down)) == 0,
                  "lora_config: with experts there are no gate/up/down projections to target (attention only)");
    static_assert(!has_adapter || static_config.mlp == mlp_kind::swiglu || (lora.targets & lora_gate) == 0,
                  "lora_config: a GELU MLP has no gate projection to target");

    static constexpr index_t d = static_config.d_model, n_heads = static_config.n_heads, n_kv = static_config.n_kv_heads,
                             hd = static_config.head_dim(), qw = static_config.q_width(), kvw = static_config.kv_width(), ff = static_config.d_ff,
                             vocab = static_config.vocab_size;
    static constexpr bool has_norm_bias = static_config.norm == norm_kind::layernorm;
    static constexpr bool swiglu = static_config.mlp == mlp_kind::swiglu;
    static constexpr bool is_moe = static_config.moe.n_experts > 0;
    static constexpr index_t n_experts = static_config.moe.n_experts, top_k = static_config.moe.top_k;

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
    struct lora_pair {
        tensor_view<float> a, b; // A (r, in), B (out, r); empty when the projection is not targeted
    };
    struct lora_params {
        std::vector<std::array<lora_pair, lora_target_count>> layers;
    };
    static constexpr index_t lora_in(int t) {
        constexpr index_t in[] = {d, d, d, qw, d, d, ff};
        return in[t];
    }
    static constexpr index_t lora_out(int t) {
        constexpr index_t out[] = {qw, kvw, kvw, d, ff, ff, d};
        return out[t];
    }

    // Allocates parameters, gradients and optimizer state in one arena; initialises from `seed`.
    // With an adapter: base, LoRA, LoRA gradients and optimizer state for the LoRA tensors only.
    explicit decoder(std::uint64_t seed = 0, index_t cross_entropy_chunk = 4096)
        : dropout_seed_(mix64(seed ^ 0x4c6f5241ull)), ce_chunk_(cross_entropy_chunk) {
        arena measure = arena::measuring();
        allocate_parameters(measure);
        const std::size_t block = measure.used();
        if constexpr (has_adapter) {
            arena measure_lora = arena::measuring();
            allocate_lora(measure_lora);
            const std::size_t lora_block = measure_lora.used();
            param_arena_ = arena(block + lora_block * (2 + max_optimizer_slots));
            params_ = allocate_parameters(param_arena_);
            lora_ = allocate_lora(param_arena_);
            lora_grads_ = allocate_lora(param_arena_);
            grads_.layers.resize(std::size_t(static_config.n_layers)); // frozen base: no gradients
            if constexpr (quantized_base) {
                qbase_.resize(std::size_t(static_config.n_layers));
                qbase_unmerged_.resize(std::size_t(static_config.n_layers));
                nf4_scratch_.resize(std::size_t(nf4_tile_rows * std::max({d, qw, ff})));
            }
        } else {
            param_arena_ = arena(block * (2 + max_optimizer_slots));
            params_ = allocate_parameters(param_arena_);
            grads_ = allocate_parameters(param_arena_);
            grad_begin_ = grads_.embed.data;
            grad_bytes_ = block;
        }
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
    // With an adapter the walk holds the frozen base (trainable == false, no grad) and then the LoRA tensors.
    const std::vector<parameter_entry>& parameter_entries() const { return entries_; }
    // The entries an optimizer updates: all of them, or only the LoRA tensors with an adapter.
    const std::vector<parameter_entry>& trainable_entries() const { return trainable_; }
    const lora_params& lora_weights() const { return lora_; }
    const lora_params& lora_grads() const { return lora_grads_; }

    // ---- QLoRA: the NF4 base (quantized_base only) -----------------------------------------------------
    // Projection t (0..6: q, k, v, o, gate, up, down) of layer l, with its Hugging Face name, in the order
    // of the f32 walk they replace.
    struct quantized_entry {
        std::string name; // model.layers.3.self_attn.q_proj.weight
        index_t layer;
        int target;
        tl::shape shape; // (out, in)
    };
    const std::vector<quantized_entry>& quantized_entries() const { return quantized_; }
    const nf4_tensor& quantized_weight(index_t l, int t) const { return qbase_.at(std::size_t(l))[std::size_t(t)]; }
    // Quantises w (out, in) into projection t of layer l (loading; the f32 copy stays the caller's).
    void set_quantized_weight(index_t l, int t, cview<float> w) {
        check(!merged_, "decoder::set_quantized_weight: unmerge() the adapter first");
        expect_shape("decoder::set_quantized_weight", "w", w, {lora_out(t), lora_in(t)});
        qbase_.at(std::size_t(l))[std::size_t(t)] = quantize_nf4(w, true);
    }
    // Bytes held by the NF4 base (codes and both levels of scales) and the number of weights it stores.
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
    template <class F>
    void visit_parameters(F&& f) const {
        for (const parameter_entry& e : entries_)
            f(e);
    }
    // A zeroed tensor per trainable parameter, in trainable_entries() order, from the parameter arena.
    std::vector<tensor_view<float>> allocate_optimizer_state() {
        check(optimizer_slots_used_ < max_optimizer_slots, "decoder: all optimizer state slots are in use");
        ++optimizer_slots_used_;
        std::vector<tensor_view<float>> state;
        for (const parameter_entry& e : trainable_)
            state.push_back(param_arena_.allocate_zeroed<float>(e.value.shape));
        return state;
    }
    void zero_grad() {
        if constexpr (has_adapter) {
            for (const parameter_entry& e : trainable_)
                e.grad.fill(0.0f);
        } else {
            std::fill_n(reinterpret_cast<std::byte*>(grad_begin_), grad_bytes_, std::byte{0});
        }
    }
    // Re-initialises every parameter: N(0, init_std^2) weights, unit norm weights, zero biases; LoRA as
    // init_adapter(seed). The base's random streams do not depend on the adapter.
    // An NF4 base draws each projection in f32 with its f32 stream and quantises it (one matrix at a time).
    void init(std::uint64_t seed) {
        [[maybe_unused]] std::vector<float> staging;
        for (std::size_t stream = 0; stream < base_order_.size(); ++stream) {
            counter_rng rng(seed, stream);
            if (base_order_[stream] < 0) { // quantized_base only
                const quantized_entry& q = quantized_[std::size_t(-base_order_[stream] - 1)];
                staging.resize(std::size_t(q.shape.numel()));
                for (float& w : staging)
                    w = float(rng.normal() * static_config.init_std);
                qbase_[std::size_t(q.layer)][std::size_t(q.target)] =
                    quantize_nf4(cview<float>{staging.data(), q.shape});
                continue;
            }
            const parameter_entry& e = entries_[std::size_t(base_order_[stream])];
            if (e.kind == param_kind::norm)
                e.value.fill(1.0f);
            else if (e.kind == param_kind::bias)
                e.value.fill(0.0f);
            else
                for (float& w : e.value)
                    w = float(rng.normal() * static_config.init_std);
        }
        init_adapter(seed);
    }
    // Re-initialises the LoRA tensors only, as peft does: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform
    // with a = sqrt(5)), B = 0, so that a fresh adapter leaves the model's output unchanged.
    void init_adapter(std::uint64_t seed) {
        if constexpr (has_adapter) {
            check(!merged_, "decoder::init_adapter: unmerge() the adapter first");
            for (index_t l = 0; l < static_config.n_layers; ++l)
                for (int t = 0; t < lora_target_count; ++t) {
                    const lora_pair& p = lora_.layers[l][t];
                    if (!p.a.data) continue;
                    counter_rng rng(seed ^ 0x6c6f7261ull, std::uint64_t(l * lora_target_count + t));
                    const double bound = 1.0 / std::sqrt(double(lora_in(t)));
                    for (float& w : p.a)
                        w = float((2 * rng.uniform() - 1) * bound);
                    p.b.fill(0.0f);
                }
        }
    }

    // ---- LoRA: merge and dropout state -----------------------------------------------------------------

    // W += (alpha / r) B A for every targeted projection; the forward then skips the adapter path.
    // Training (backward) needs the unmerged form. unmerge() subtracts the same product again (W comes back
    // up to f32 rounding). Both are no-ops without an adapter.
    void merge() { merge_sign(+1); }
    void unmerge() { merge_sign(-1); }
    bool merged() const { return merged_; }
    // The dropout masks' key (from the constructor's seed) and the number of training forwards so far: a
    // training checkpoint saves both so that a resumed run draws the same masks.
    std::uint64_t dropout_seed() const { return dropout_seed_; }
    void set_dropout_seed(std::uint64_t s) { dropout_seed_ = s; }
    std::uint64_t dropout_calls() const { return dropout_calls_; }
    void set_dropout_calls(std::uint64_t n) { dropout_calls_ = n; }

    // ---- activations -----------------------------------------------------------------------------------

    // Plans activation memory for batches of shape (batch, time). Allocates only when a larger shape than
    // ever before is planned; call it before the training loop so that steps never allocate.
    void plan(index_t batch, index_t time) {
        check(batch > 0 && time > 0 && time <= static_config.max_seq_len, [&] {
            return "decoder: batch " + std::to_string(batch) + " x time " + std::to_string(time) +
                   " is not valid (time must be in [1, max_seq_len = " + std::to_string(static_config.max_seq_len) + "])";
        });
        if (batch == batch_ && time == time_) return;
        arena measure = arena::measuring();
        allocate_activations(measure, batch, time);
        if (measure.used() > act_arena_.capacity()) act_arena_ = arena(measure.used());
        act_arena_.reset();
        acts_ = allocate_activations(act_arena_, batch, time);
        batch_ = batch;
        time_ = time;
        rope_table(acts_.rope_cos, acts_.rope_sin, static_config.rope_theta);
    }
    std::size_t activation_bytes() const { return act_arena_.capacity(); }
    // Gradient checkpointing per block: the forward keeps only each layer's input (the residual stream) and
    // one layer's activations; backward() recomputes each layer's forward just before its backward. About
    // one extra forward of the blocks per step (not of the head) for activation memory of ~1 layer instead
    // of L. Gradients are bit-identical to the stored forward's (tests/model/test_checkpointing.cpp).
    void set_gradient_checkpointing(bool on) {
        if (on == checkpointing_) return;
        checkpointing_ = on;
        has_forward_ = false;
        const index_t b = batch_, t = time_;
        batch_ = time_ = 0;
        act_arena_ = arena();
        if (b > 0) plan(b, t);
    }
    bool gradient_checkpointing() const { return checkpointing_; }
    std::size_t parameter_arena_bytes() const { return param_arena_.capacity(); }

    // ---- forward and backward --------------------------------------------------------------------------

    // doc_start (B, T), optional in logits/loss/eval_loss: packed rows of several documents (data/sft_batch.hpp).
    // For each token, the index in its row of its document's first token: attention does not look across
    // documents and RoPE positions restart at each (t - doc_start). Empty: one document per row, as before.

    // Logits (B, T, V) for ids (B, T), written to `out`. Inference path: materialises all logits.
    void logits(cview<token_t> ids, tensor_view<float> out, cview<index_t> doc_start = {}) {
        forward_hidden(ids, doc_start);
        const index_t n = batch_ * time_;
        expect_shape("decoder::logits", "out", out, {batch_, time_, vocab});
        if constexpr (has_adapter) has_forward_ = false; // the LoRA activations now hold an inference forward
        linear_forward<B, float>(out.reshaped({n, vocab}), acts_.final_normed, params_.head);
    }

    // Mean cross-entropy of targets (B, T) given ids (B, T); positions with target -100 are not counted.
    // Keeps the activations for backward(). The vocabulary is processed in chunks.
    float loss(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start = {}) {
        return loss_impl(ids, targets, true, doc_start);
    }
    // The same loss without LoRA dropout and without advancing its masks: validation. (Without dropout in
    // the adapter it is loss().) After it, backward() needs another loss() when the adapter has dropout.
    float eval_loss(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start = {}) {
        const float l = loss_impl(ids, targets, false, doc_start);
        if constexpr (lora_dropout) has_forward_ = false;
        return l;
    }

private:
    float loss_impl(cview<token_t> ids, cview<token_t> targets, bool train, cview<index_t> doc_start) {
        if constexpr (lora_dropout)
            if (train) ++dropout_calls_;
        training_ = forward_training_ = train;
        forward_hidden(ids, doc_start);
        training_ = false;
        expect_same_shape("decoder::loss", "targets", targets, ids);
        copy(targets, acts_.targets);
        const auto r = head_cross_entropy_forward<B, float>(acts_.ce_lse, acts_.ce, acts_.final_normed, params_.head,
                                                            flat_targets());
        loss_count_ = r.count;
        has_forward_ = true;
        if constexpr (is_moe) return float(r.loss + static_config.moe.aux_loss_weight * aux_loss_);
        return float(r.loss);
    }

public:
    index_t counted_targets() const { return loss_count_; }
    // Mixture of experts: the load-balancing loss of the last forward (unweighted; loss() adds
    // moe.aux_loss_weight times it), and the tokens each expert of `layer` received (top_k per token).
    double aux_loss() const { return aux_loss_; }
    std::vector<index_t> expert_counts(index_t layer) const {
        std::vector<index_t> counts;
        check(layer >= 0 && layer < index_t(expert_counts_.size()), "decoder::expert_counts: run a forward first");
        return expert_counts_[std::size_t(layer)];
    }

    // Adds d(loss * scale)/d(parameter) into the gradients, for the last call of loss().
    void backward(double scale = 1.0) {
        check(has_forward_, "decoder::backward: call loss() first");
        check(!merged_, "decoder::backward: the adapter is merged; unmerge() it before training");
        has_forward_ = false;
        daux_ = static_config.moe.aux_loss_weight * scale;
        auto& a = acts_;
        head_cross_entropy_backward<B, float>(a.dnormed, grads_.head, a.ce, a.final_normed, params_.head,
                                              flat_targets(), a.ce_lse, scale); // no dW when frozen
        norm_backward(a.dx, grads_.final_norm, a.dnormed, a.xs.back(), params_.final_norm, a.final_stats,
                      grad_write::assign);
        for (index_t l = static_config.n_layers - 1; l >= 0; --l) {
            if (checkpointing_) recompute_layer(l);
            layer_backward(l);
        }
        if constexpr (!has_adapter) embedding_backward<float>(grads_.embed, a.ids, a.dx);
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
        tensor_view<float> lora_h_;   // LoRA only: (chunk rows, r)
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
            for (int l = 0; l < static_config.n_layers; ++l) {
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
            if constexpr (has_adapter) c.lora_h_ = a.allocate<float>({n, lora_rank});
        };
        arena measure = arena::measuring();
        plan(measure);
        c.arena_ = arena(measure.used());
        plan(c.arena_);
        rope_table(c.rope_cos_, c.rope_sin_, static_config.rope_theta);
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
        moe_cache<float> moe;                                     // experts only (then gate, up, hidden are empty)
        std::array<tensor_view<float>, lora_target_count> lora_h; // LoRA: dropout(x) A^T (N, r) per target
    };
    struct activations {
        tensor_view<token_t> ids, targets;  // (B, T)
        std::vector<tensor_view<float>> xs; // residual stream (N, d), L + 1 of them
        std::vector<layer_activations> layers;
        tensor_view<float> final_normed; // (N, d)
        norm_stats final_stats;
        tensor_view<float> ce_lse; // (N)
        cross_entropy_workspace<float> ce;
        tensor_view<float> rope_cos, rope_sin;     // (T, D/2)
        tensor_view<index_t> doc_start, positions; // (B, T): packed documents (when documents_)
        // Scratch, shared by all layers: a temporary in forward, gradients in backward.
        tensor_view<float> tmp, dx, dnormed, dq, dk, dv, datt, dgate, dup, dhidden;
        moe_workspace<float> moe_ws;                 // experts only: scratch shared by the layers
        std::vector<moe_balance> balances;           // experts only: aux-loss statistics, per layer or one for all
        tensor_view<float> lora_x, lora_dx, lora_dh; // LoRA scratch: dropout(x) and its gradient (N, max in), dh
    };

    parameters allocate_parameters(arena& a) {
        parameters p;
        auto norm = [&]() {
            return norm_params{a.allocate<float>({d}), has_norm_bias ? a.allocate<float>({d}) : tensor_view<float>{}};
        };
        p.embed = a.allocate<float>({vocab, d});
        for (int l = 0; l < static_config.n_layers; ++l) {
            layer_params& lp = p.layers.emplace_back();
            lp.attn_norm = norm();
            if constexpr (!quantized_base) { // QLoRA keeps q/k/v/o/gate/up/down in qbase_ (NF4)
                lp.q = a.allocate<float>({qw, d});
                lp.k = a.allocate<float>({kvw, d});
                lp.v = a.allocate<float>({kvw, d});
            }
            if constexpr (static_config.qkv_bias) {
                lp.q_bias = a.allocate<float>({qw});
                lp.k_bias = a.allocate<float>({kvw});
                lp.v_bias = a.allocate<float>({kvw});
            }
            if constexpr (!quantized_base) lp.o = a.allocate<float>({d, qw});
            lp.mlp_norm = norm();
            if constexpr (is_moe) {
                lp.router = a.allocate<float>({n_experts, d});
                lp.experts_gate_up = a.allocate<float>({n_experts, 2 * ff, d});
                lp.experts_down = a.allocate<float>({n_experts, d, ff});
            } else if constexpr (!quantized_base) {
                if constexpr (swiglu) lp.gate = a.allocate<float>({ff, d});
                lp.up = a.allocate<float>({ff, d});
                lp.down = a.allocate<float>({d, ff});
            }
        }
        p.final_norm = norm();
        p.head = static_config.tied_embeddings ? p.embed : a.allocate<float>({vocab, d});
        return p;
    }

    lora_params allocate_lora(arena& a) {
        lora_params p;
        p.layers.resize(std::size_t(static_config.n_layers));
        for (int l = 0; l < static_config.n_layers; ++l)
            for (int t = 0; t < lora_target_count; ++t)
                if (lora_targets(t)) {
                    p.layers[l][t].a = a.allocate<float>({lora_rank, lora_in(t)});
                    p.layers[l][t].b = a.allocate<float>({lora_out(t), lora_rank});
                }
        return p;
    }

    void build_entries() {
        auto add = [&](std::string name, tensor_view<float> v, tensor_view<float> g, param_kind k) {
            if (!v.data) return;
            base_order_.push_back(index_t(entries_.size()));
            entries_.push_back({std::move(name), v, has_adapter ? tensor_view<float>{} : g, k, !has_adapter});
        };
        // Projection t of layer l: an f32 entry, or an NF4 one (quantized_base) at the same place of the walk.
        auto add_proj = [&](std::string name, tensor_view<float> v, tensor_view<float> g, index_t l, int t) {
            if constexpr (quantized_base) {
                if (t == 4 && !swiglu) return; // no gate
                base_order_.push_back(-index_t(quantized_.size()) - 1);
                quantized_.push_back({std::move(name), l, t, {lora_out(t), lora_in(t)}});
            } else {
                add(std::move(name), v, g, param_kind::weight);
            }
        };
        auto add_norm = [&](const std::string& prefix, const norm_params& v, const norm_params& g) {
            add(prefix + ".weight", v.weight, g.weight, param_kind::norm);
            add(prefix + ".bias", v.bias, g.bias, param_kind::bias);
        };
        add("model.embed_tokens.weight", params_.embed, grads_.embed, param_kind::embedding);
        for (int l = 0; l < static_config.n_layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            const layer_params &v = params_.layers[l], &g = grads_.layers[l];
            add_norm(p + "input_layernorm", v.attn_norm, g.attn_norm);
            add_proj(p + "self_attn.q_proj.weight", v.q, g.q, l, 0);
            add(p + "self_attn.q_proj.bias", v.q_bias, g.q_bias, param_kind::bias);
            add_proj(p + "self_attn.k_proj.weight", v.k, g.k, l, 1);
            add(p + "self_attn.k_proj.bias", v.k_bias, g.k_bias, param_kind::bias);
            add_proj(p + "self_attn.v_proj.weight", v.v, g.v, l, 2);
            add(p + "self_attn.v_proj.bias", v.v_bias, g.v_bias, param_kind::bias);
            add_proj(p + "self_attn.o_proj.weight", v.o, g.o, l, 3);
            add_norm(p + "post_attention_layernorm", v.mlp_norm, g.mlp_norm);
            if constexpr (!is_moe) {
                add_proj(p + "mlp.gate_proj.weight", v.gate, g.gate, l, 4);
                add_proj(p + "mlp.up_proj.weight", v.up, g.up, l, 5);
                add_proj(p + "mlp.down_proj.weight", v.down, g.down, l, 6);
            }
            add(p + "mlp.gate.weight", v.router, g.router, param_kind::weight); // experts only (transformers 5)
            add(p + "mlp.experts.gate_up_proj", v.experts_gate_up, g.experts_gate_up, param_kind::weight);
            add(p + "mlp.experts.down_proj", v.experts_down, g.experts_down, param_kind::weight);
        }
        add_norm("model.norm", params_.final_norm, grads_.final_norm);
        if (!static_config.tied_embeddings) add("lm_head.weight", params_.head, grads_.head, param_kind::weight);
        if constexpr (has_adapter)
            for (int l = 0; l < static_config.n_layers; ++l)
                for (int t = 0; t < lora_target_count; ++t) {
                    const lora_pair &v = lora_.layers[l][t], &g = lora_grads_.layers[l][t];
                    if (!v.a.data) continue;
                    const std::string p = "model.layers." + std::to_string(l) + "." + lora_modules[t];
                    entries_.push_back({p + ".lora_A.weight", v.a, g.a, param_kind::adapter, true});
                    entries_.push_back({p + ".lora_B.weight", v.b, g.b, param_kind::adapter, true});
                }
        for (const parameter_entry& e : entries_)
            if (e.trainable) trainable_.push_back(e);
    }

    activations allocate_activations(arena& a, index_t batch, index_t time) {
        const index_t n = batch * time;
        auto stats = [&]() {
            return norm_stats{has_norm_bias ? a.allocate<float>({n}) : tensor_view<float>{}, a.allocate<float>({n})};
        };
        activations s;
        s.ids = a.allocate<token_t>({batch, time});
        s.targets = a.allocate<token_t>({batch, time});
        for (int l = 0; l <= static_config.n_layers; ++l)
            s.xs.push_back(a.allocate<float>({n, d}));
        for (int l = 0; l < (checkpointing_ ? 1 : static_config.n_layers); ++l) {
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
        s.doc_start = a.allocate<index_t>({batch, time});
        s.positions = a.allocate<index_t>({batch, time});
        s.tmp = a.allocate<float>({n, d});
        s.dx = a.allocate<float>({n, d});
        s.dnormed = a.allocate<float>({n, d});
        s.dq = a.allocate<float>({batch, time, n_heads, hd});
        s.dk = a.allocate<float>({batch, time, n_kv, hd});
        s.dv = a.allocate<float>({batch, time, n_kv, hd});
        s.datt = a.allocate<float>({n, qw});
        if constexpr (is_moe) {
            s.moe_ws = moe_workspace<float>::allocate(a, n, d, ff, n_experts, top_k);
            s.balances.resize(static_config.moe.balance_per_layer ? static_config.n_layers : 1);
            for (auto& b : s.balances)
                b = moe_balance::allocate(a, n_experts);
        } else {
            s.dgate = a.allocate<float>({n, ff});
            s.dup = a.allocate<float>({n, ff});
            s.dhidden = a.allocate<float>({n, ff});
        }
        if constexpr (has_adapter) {
            for (layer_activations& la : s.layers)
                for (int t = 0; t < lora_target_count; ++t)
                    if (lora_targets(t)) la.lora_h[t] = a.allocate<float>({n, lora_rank});
            s.lora_dh = a.allocate<float>({n, lora_rank});
            if constexpr (lora_dropout) {
                const index_t in_max = std::max({d, qw, ff});
                s.lora_x = a.allocate<float>({n, in_max});
                s.lora_dx = a.allocate<float>({n, in_max});
            }
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
        const tensor_view<float> h = has_adapter ? rows(c.lora_h_, lora_rank) : tensor_view<float>{};
        for (index_t l = 0; l < static_config.n_layers; ++l) {
            const layer_params& p = params_.layers[l];
            norm_forward(normed, st, x, p.attn_norm);
            proj_forward(rows(c.q_, qw), normed, p.q, p.q_bias, l, 0, h, false);
            proj_forward(rows(c.k_new_, kvw), normed, p.k, p.k_bias, l, 1, h, false);
            proj_forward(rows(c.v_new_, kvw), normed, p.v, p.v_bias, l, 2, h, false);
            rope_forward<float>(heads(c.q_, n_heads), cos, sin);
            rope_forward<float>(heads(c.k_new_, n_kv), cos, sin);
            for (index_t b = 0; b < batch; ++b) { // append to the cache
                const index_t width = t_len * kvw, at = (b * c.capacity_ + start) * kvw;
                std::copy_n(c.k_new_.data + b * width, width, c.k_[l].data + at);
                std::copy_n(c.v_new_.data + b * width, width, c.v_[l].data + at);
            }
            attention_forward<float>(heads(c.att_, n_heads), {}, heads(c.q_, n_heads), c.k_[l], c.v_[l],
                                     static_config.layer_window(int(l)), start);
            proj_forward(tmp, rows(c.att_, qw), p.o, {}, l, 3, h, false);
            residual_forward<float>(x, x, tmp);
            norm_forward(normed, st, x, p.mlp_norm);
            if constexpr (is_moe) {
                moe_forward<B, float>(tmp, c.moe_.first_rows(n), c.moe_ws_.first_rows(n), normed, p.router,
                                      p.experts_gate_up, p.experts_down);
            } else {
                proj_forward(rows(c.up_, ff), normed, p.up, {}, l, 5, h, false);
                if constexpr (swiglu) {
                    proj_forward(rows(c.gate_, ff), normed, p.gate, {}, l, 4, h, false);
                    swiglu_forward<float>(rows(c.hidden_, ff), rows(c.gate_, ff), rows(c.up_, ff));
                } else {
                    gelu_forward<float>(rows(c.hidden_, ff), rows(c.up_, ff));
                }
                proj_forward(tmp, rows(c.hidden_, ff), p.down, {}, l, 6, h, false);
            }
            residual_forward<float>(x, x, tmp);
        }
        c.length_ += t_len;
        for (index_t b = 0; b < batch; ++b)
            std::copy_n(x.row(b * t_len + t_len - 1), d, c.last_.row(b));
        norm_forward(c.last_normed_, norm_stats{c.last_mean_, c.last_rstd_}, c.last_, params_.final_norm);
    }

    // ---- LoRA paths ------------------------------------------------------------------------------------

    tensor_view<float> base_weight(index_t l, int t) const {
        const layer_params& p = params_.layers[l];
        const std::array<tensor_view<float>, lora_target_count> w = {p.q, p.k, p.v, p.o, p.gate, p.up, p.down};
        return w[t];
    }
    void merge_sign(int sign) {
        if constexpr (has_adapter) {
            check(merged_ != (sign > 0), sign > 0 ? "decoder::merge: the adapter is already merged"
                                                  : "decoder::unmerge: the adapter is not merged");
            for (index_t l = 0; l < static_config.n_layers; ++l)
                for (int t = 0; t < lora_target_count; ++t) {
                    const lora_pair& p = lora_.layers[l][t];
                    if (!p.a.data) continue;
                    if constexpr (quantized_base) {
                        merge_quantized(l, t, sign);
                        continue;
                    }
                    B::gemm(gemm_args<float>{.m = lora_out(t),
                                             .n = lora_in(t),
                                             .k = lora_rank,
                                             .alpha = float(sign) * lora_scale,
                                             .a = p.b.data,
                                             .lda = lora_rank,
                                             .b = p.a.data,
                                             .ldb = lora_in(t),
                                             .beta = 1.0f,
                                             .c = base_weight(l, t).data,
                                             .ldc = lora_in(t)});
                }
            merged_ = sign > 0;
        } else {
            (void)sign;
        }
    }
    // QLoRA merge: W' = quantize_nf4(dequantize(W) + (alpha / r) B A), keeping W for unmerge() (exact).
    void merge_quantized(index_t l, int t, int sign) {
        nf4_tensor &q = qbase_[std::size_t(l)][std::size_t(t)], &kept = qbase_unmerged_[std::size_t(l)][std::size_t(t)];
        if (sign < 0) {
            q = std::move(kept);
            kept = nf4_tensor{};
            return;
        }
        const lora_pair& p = lora_.layers[l][t];
        std::vector<float> w(std::size_t(q.numel()));
        dequantize(q, tensor_view<float>{w.data(), q.shape()});
        B::gemm(gemm_args<float>{.m = lora_out(t),
                                 .n = lora_in(t),
                                 .k = lora_rank,
                                 .alpha = lora_scale,
                                 .a = p.b.data,
                                 .lda = lora_rank,
                                 .b = p.a.data,
                                 .ldb = lora_in(t),
                                 .beta = 1.0f,
                                 .c = w.data(),
                                 .ldc = lora_in(t)});
        kept = std::move(q);
        q = quantize_nf4(cview<float>{w.data(), kept.shape()}, true);
    }
    // Scratch for nf4_linear: nf4_tile_rows rows of a projection with `in` inputs.
    tensor_view<float> nf4_scratch(int t) const {
        return tensor_view<float>{nf4_scratch_.data(), {nf4_tile_rows, lora_in(t)}};
    }
    // Dropout keeps element i of target t in layer l with probability 1 - p, in the current training forward.
    bool dropout_keeps(const counter_rng& rng, index_t i) const {
        return double(rng.at(std::uint64_t(i)) >> 11) * 0x1.0p-53 >= double(lora.dropout);
    }
    counter_rng dropout_rng(index_t l, int t) const {
        return counter_rng(dropout_seed_,
                           (dropout_calls_ * std::uint64_t(static_config.n_layers) + std::uint64_t(l)) * lora_target_count +
                               std::uint64_t(t));
    }
    // dropout(x) into the scratch acts_.lora_x, (N, in).
    cview<float> dropout_input(cview<float> x, index_t l, int t) const {
        const tensor_view<float> xd{acts_.lora_x.data, {x.rows(), x.cols()}};
        const counter_rng rng = dropout_rng(l, t);
        const float keep_scale = float(1.0 / (1.0 - double(lora.dropout)));
        const index_t n = x.numel();
        for (index_t i = 0; i < n; ++i)
            xd.data[i] = dropout_keeps(rng, i) ? x.data[i] * keep_scale : 0.0f;
        return xd;
    }
    // y = x W^T (+ b), plus (alpha / r) (dropout(x) A^T) B^T for a targeted projection; h keeps
    // dropout(x) A^T (N, r) for the backward.
    void proj_forward(tensor_view<float> y, cview<float> x, [[maybe_unused]] cview<float> w, cview<float> bias,
                      index_t l, int t, [[maybe_unused]] tensor_view<float> h, [[maybe_unused]] bool train) const {
        if constexpr (quantized_base)
            nf4_linear_forward<B, float>(y, x, qbase_[std::size_t(l)][std::size_t(t)], bias, nf4_scratch(t));
        else
            linear_forward<B, float>(y, x, w, bias);
        if constexpr (has_adapter) {
            const lora_pair& p = lora_.layers[l][t];
            if (!p.a.data || merged_) return;
            const index_t n = x.rows(), in = lora_in(t), out = lora_out(t), r = lora_rank;
            const cview<float> xd = lora_dropout && train ? dropout_input(x, l, t) : x;
            B::gemm(gemm_args<float>{.trans_b = true,
                                     .m = n,
                                     .n = r,
                                     .k = in,
                                     .a = xd.data,
                                     .lda = in,
                                     .b = p.a.data,
                                     .ldb = in,
                                     .c = h.data,
                                     .ldc = r});
            B::gemm(gemm_args<float>{.trans_b = true,
                                     .m = n,
                                     .n = out,
                                     .k = r,
                                     .alpha = lora_scale,
                                     .a = h.data,
                                     .lda = r,
                                     .b = p.b.data,
                                     .ldb = r,
                                     .beta = 1.0f,
                                     .c = y.data,
                                     .ldc = out});
        }
    }
    // The backward of proj_forward. With an adapter the base is frozen: only dx = dy W (no dW, no db), plus
    // the LoRA path: dB += s dy^T h, dh = s dy B, dA += dh^T dropout(x), dx += dropout'(dh A).
    void proj_backward(tensor_view<float> dx, [[maybe_unused]] tensor_view<float> dw,
                       [[maybe_unused]] tensor_view<float> db, cview<float> dy, cview<float> x,
                       [[maybe_unused]] cview<float> w, grad_write mode, [[maybe_unused]] index_t l,
                       [[maybe_unused]] int t) {
        if constexpr (!has_adapter) {
            linear_backward<B, float>(dx, dw, db, dy, x, w, mode);
        } else {
            const index_t n = x.rows(), in = x.cols(), out = dy.cols(), r = lora_rank;
            if constexpr (quantized_base)
                nf4_linear_backward<B, float>(dx, dy, qbase_[std::size_t(l)][std::size_t(t)], nf4_scratch(t), mode);
            else
                B::gemm(gemm_args<float>{.m = n,
                                         .n = in,
                                         .k = out,
                                         .a = dy.data,
                                         .lda = out,
                                         .b = w.data,
                                         .ldb = in,
                                         .beta = mode == grad_write::add ? 1.0f : 0.0f,
                                         .c = dx.data,
                                         .ldc = in});
            const lora_pair &p = lora_.layers[l][t], &g = lora_grads_.layers[l][t];
            if (!p.a.data) return;
            const float* h = layer_acts(l).lora_h[t].data;
            float* dh = acts_.lora_dh.data;
            B::gemm(gemm_args<float>{.trans_a = true,
                                     .m = out,
                                     .n = r,
                                     .k = n,
                                     .alpha = lora_scale,
                                     .a = dy.data,
                                     .lda = out,
                                     .b = h,
                                     .ldb = r,
                                     .beta = 1.0f,
                                     .c = g.b.data,
                                     .ldc = r});
            B::gemm(gemm_args<float>{.m = n,
                                     .n = r,
                                     .k = out,
                                     .alpha = lora_scale,
                                     .a = dy.data,
                                     .lda = out,
                                     .b = p.b.data,
                                     .ldb = r,
                                     .c = dh,
                                     .ldc = r});
            const cview<float> xd = lora_dropout ? dropout_input(x, l, t) : x;
            B::gemm(gemm_args<float>{.trans_a = true,
                                     .m = r,
                                     .n = in,
                                     .k = n,
                                     .a = dh,
                                     .lda = r,
                                     .b = xd.data,
                                     .ldb = in,
                                     .beta = 1.0f,
                                     .c = g.a.data,
                                     .ldc = in});
            if constexpr (!lora_dropout) {
                B::gemm(gemm_args<float>{.m = n,
                                         .n = in,
                                         .k = r,
                                         .a = dh,
                                         .lda = r,
                                         .b = p.a.data,
                                         .ldb = in,
                                         .beta = 1.0f,
                                         .c = dx.data,
                                         .ldc = in});
            } else {
                float* dxd = acts_.lora_dx.data;
                B::gemm(gemm_args<float>{
                    .m = n, .n = in, .k = r, .a = dh, .lda = r, .b = p.a.data, .ldb = in, .c = dxd, .ldc = in});
                const counter_rng rng = dropout_rng(l, t);
                const float keep_scale = float(1.0 / (1.0 - double(lora.dropout)));
                for (index_t i = 0; i < n * in; ++i)
                    if (dropout_keeps(rng, i)) dx.data[i] += dxd[i] * keep_scale;
            }
        }
    }

    void norm_forward(tensor_view<float> y, const norm_stats& st, cview<float> x, const norm_params& p) const {
        if constexpr (has_norm_bias)
            layernorm_forward<float>(y, st.mean, st.rstd, x, p.weight, p.bias, static_config.norm_eps);
        else
            rmsnorm_forward<float>(y, st.rstd, x, p.weight, static_config.norm_eps);
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

    cview<index_t> doc_starts() const { return documents_ ? cview<index_t>(acts_.doc_start) : cview<index_t>{}; }
    cview<index_t> doc_positions() const { return documents_ ? cview<index_t>(acts_.positions) : cview<index_t>{}; }
    cview<token_t> flat_targets() const { return acts_.targets.reshaped({batch_ * time_}); }

    void forward_hidden(cview<token_t> ids, cview<index_t> doc_start) {
        check(ids.shape.rank == 2, [&] { return "decoder: ids must be (B, T), got " + ids.shape.str(); });
        plan(ids.dim(0), ids.dim(1));
        auto& a = acts_;
        copy(ids, a.ids);
        documents_ = doc_start.data != nullptr;
        if (documents_) {
            expect_same_shape("decoder", "doc_start", doc_start, ids);
            check_document_starts(doc_start, "decoder");
            copy(doc_start, a.doc_start);
            for (index_t i = 0; i < batch_ * time_; ++i)
                a.positions[i] = i % time_ - a.doc_start[i];
        }
        embedding_forward<float>(a.xs[0], a.ids.reshaped({batch_ * time_}), params_.embed);
        if constexpr (is_moe)
            for (auto& b : a.balances)
                b.clear();
        for (index_t l = 0; l < static_config.n_layers; ++l)
            layer_forward(l);
        if constexpr (is_moe) {
            aux_loss_ = 0;
            for (const auto& b : a.balances)
                aux_loss_ += b.loss() / double(a.balances.size());
        }
        norm_forward(a.final_normed, a.final_stats, a.xs.back(), params_.final_norm);
    }

    // Experts: the aux-loss statistics layer l adds to (its own with moe.balance_per_layer, else the shared one).
    moe_balance& balance_of(index_t l) { return acts_.balances[acts_.balances.size() == 1 ? 0 : l]; }

    // The activations layer l writes: its own, or the one shared set under gradient checkpointing.
    layer_activations& layer_acts(index_t l) { return acts_.layers[checkpointing_ ? 0 : std::size_t(l)]; }

    // Gradient checkpointing: layer l's forward again, from its kept input, with the dropout masks of the
    // forward (same dropout_calls_) and without adding to the aux-loss statistics a second time.
    void recompute_layer(index_t l) {
        training_ = forward_training_;
        layer_forward(l, /*recompute=*/true);
        training_ = false;
    }

    void layer_forward(index_t l, bool recompute = false) {
        const layer_params& p = params_.layers[l];
        layer_activations& la = layer_acts(l);
        const tensor_view<float> x = acts_.xs[l], out = acts_.xs[l + 1];
        // attention
        norm_forward(la.normed1, la.stats1, x, p.attn_norm);
        proj_forward(flat(la.q), la.normed1, p.q, p.q_bias, l, 0, la.lora_h[0], training_);
        proj_forward(flat(la.k), la.normed1, p.k, p.k_bias, l, 1, la.lora_h[1], training_);
        proj_forward(flat(la.v), la.normed1, p.v, p.v_bias, l, 2, la.lora_h[2], training_);
        rope_forward<float>(la.q, acts_.rope_cos, acts_.rope_sin, doc_positions());
        rope_forward<float>(la.k, acts_.rope_cos, acts_.rope_sin, doc_positions());
        attention_forward<float>(la.att, la.lse, la.q, la.k, la.v, static_config.layer_window(int(l)), 0, doc_starts());
        proj_forward(acts_.tmp, flat(la.att), p.o, {}, l, 3, la.lora_h[3], training_);
        residual_forward<float>(la.resid, x, acts_.tmp);
        // MLP
        norm_forward(la.normed2, la.stats2, la.resid, p.mlp_norm);
        if constexpr (is_moe) {
            moe_forward<B, float>(acts_.tmp, la.moe, acts_.moe_ws, la.normed2, p.router, p.experts_gate_up,
                                  p.experts_down, recompute ? nullptr : &balance_of(l));
            if (!recompute)
                for (index_t e = 0; e < n_experts; ++e)
                    expert_counts_[std::size_t(l)][std::size_t(e)] = la.moe.tokens_of(e);
        } else {
            proj_forward(la.up, la.normed2, p.up, {}, l, 5, la.lora_h[5], training_);
            if constexpr (swiglu) {
                proj_forward(la.gate, la.normed2, p.gate, {}, l, 4, la.lora_h[4], training_);
                swiglu_forward<float>(la.hidden, la.gate, la.up);
            } else {
                gelu_forward<float>(la.hidden, la.up);
            }
            proj_forward(acts_.tmp, la.hidden, p.down, {}, l, 6, la.lora_h[6], training_);
        }
        residual_forward<float>(out, la.resid, acts_.tmp);
    }

    // On entry acts_.dx holds d(loss)/d(output of layer l); on exit d(loss)/d(input of layer l).
    // The residual connections are the pass-through of dx; each branch adds its input gradient into it.
    void layer_backward(index_t l) {
        const layer_params& p = params_.layers[l];
        const layer_params& g = grads_.layers[l];
        const layer_activations& la = layer_acts(l);
        auto& a = acts_;
        // MLP (mirror of the forward MLP block)
        if constexpr (is_moe) { // the router also receives the aux loss's gradient (daux_, set by backward())
            moe_backward<B, float>(a.dnormed, g.router, g.experts_gate_up, g.experts_down, a.dx, la.normed2, p.router,
                                   p.experts_gate_up, p.experts_down, la.moe, a.moe_ws, &balance_of(l),
                                   daux_ / double(a.balances.size())); // aux is the mean over the balances
        } else {
            proj_backward(a.dhidden, g.down, {}, a.dx, la.hidden, p.down, grad_write::assign, l, 6);
            if constexpr (swiglu) {
                swiglu_backward<float>(a.dgate, a.dup, a.dhidden, la.gate, la.up);
                proj_backward(a.dnormed, g.gate, {}, a.dgate, la.normed2, p.gate, grad_write::assign, l, 4);
                proj_backward(a.dnormed, g.up, {}, a.dup, la.normed2, p.up, grad_write::add, l, 5);
            } else {
                gelu_backward<float>(a.dup, a.dhidden, la.up);
                proj_backward(a.dnormed, g.up, {}, a.dup, la.normed2, p.up, grad_write::assign, l, 5);
            }
        }
        norm_backward(a.dx, g.mlp_norm, a.dnormed, la.resid, p.mlp_norm, la.stats2, grad_write::add);
        // attention (mirror of the forward attention block)
        proj_backward(a.datt, g.o, {}, a.dx, flat(la.att), p.o, grad_write::assign, l, 3);
        attention_backward<float>(a.dq, a.dk, a.dv, a.datt.reshaped(la.att.shape), la.q, la.k, la.v, la.att, la.lse,
                                  static_config.layer_window(int(l)), doc_starts());
        rope_backward<float>(a.dq, a.rope_cos, a.rope_sin, doc_positions());
        rope_backward<float>(a.dk, a.rope_cos, a.rope_sin, doc_positions());
        proj_backward(a.dnormed, g.q, g.q_bias, flat(a.dq), la.normed1, p.q, grad_write::assign, l, 0);
        proj_backward(a.dnormed, g.k, g.k_bias, flat(a.dk), la.normed1, p.k, grad_write::add, l, 1);
        proj_backward(a.dnormed, g.v, g.v_bias, flat(a.dv), la.normed1, p.v, grad_write::add, l, 2);
        norm_backward(a.dx, g.attn_norm, a.dnormed, a.xs[l], p.attn_norm, la.stats1, grad_write::add);
    }

    arena param_arena_;
    parameters params_, grads_;
    float* grad_begin_ = nullptr;
    std::size_t grad_bytes_ = 0;
    std::vector<parameter_entry> entries_, trainable_;
    int optimizer_slots_used_ = 0;
    lora_params lora_, lora_grads_; // adapter only
    // QLoRA (quantized_base): the base walk for init() (entries_ index, or -1 - quantized_ index), the NF4
    // projections per layer, the 4-bit weights merge() replaced, and the dequantisation scratch
    // (nf4_tile_rows x the widest input; mutable: the const forward_cached uses it too).
    std::vector<index_t> base_order_;
    std::vector<quantized_entry> quantized_;
    std::vector<std::array<nf4_tensor, lora_target_count>> qbase_, qbase_unmerged_;
    static constexpr index_t nf4_tile_rows = 512; // fewer gemm calls; scratch 512 x 4864 f32 = 10 MB for Qwen2.5
    mutable std::vector<float> nf4_scratch_;
    bool merged_ = false;
    bool training_ = false;         // inside loss() (and its recomputation): LoRA dropout is active
    bool forward_training_ = false; // the last loss_impl's `train`, for recompute_layer
    bool checkpointing_ = false;    // set_gradient_checkpointing
    std::uint64_t dropout_seed_ = 0, dropout_calls_ = 0;

    arena act_arena_;
    activations acts_;
    index_t batch_ = 0, time_ = 0;
    index_t ce_chunk_;
    index_t loss_count_ = 0;
    bool has_forward_ = false;
    bool documents_ = false; // the last forward had doc_start (packed rows)
    double aux_loss_ = 0;    // experts only: load-balancing loss of the last forward
    double daux_ = 0;        // experts only: d(scaled loss)/d(aux loss) during backward()
    // experts only: tokens per expert of each layer in the last forward (kept apart from the activations,
    // which gradient checkpointing shares between layers)
    std::vector<std::vector<index_t>> expert_counts_ =
        std::vector<std::vector<index_t>>(std::size_t(static_config.n_layers), std::vector<index_t>(n_experts));
};

} // namespace tl
