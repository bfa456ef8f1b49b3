// tinylm/model/config.hpp: the compile-time description of a decoder-only transformer.
//
// A configuration is a named type holding `static constexpr model_config value`, written with designated
// initializers (see model/presets.hpp). Structure lives here; learning rate, batch and sampling are
// run-time settings and live elsewhere. validate_config<C>() states each rule once, as a static_assert
// whose message names the field and the fix.
//
// Attention heads: n_heads query heads share n_kv_heads key/value heads.
//
//   MHA  n_kv_heads == n_heads   q: 0 1 2 3    kv: 0 1 2 3
//   GQA  1 < n_kv_heads < n_h    q: 0 1 2 3    kv: 0 . 1 .     (each kv head serves n_heads/n_kv_heads)
//   MQA  n_kv_heads == 1         q: 0 1 2 3    kv: 0 . . .
//
// A sliding window W > 0 lets query i see keys i-W+1 .. i (Mistral); 0 means full causal attention.
// Per layer: full_attention_every = k > 0 keeps every k-th layer (l = k-1, 2k-1, ...) full and slides the
// others (k = 2: windowed, full, windowed, full, as Gemma 2); layer_window(l) is the window of layer l.
#pragma once

#include <array>
#include <concepts>
#include <cstdint>
#include <string>
#include <tinylm/core/error.hpp>
#include <tinylm/core/shape.hpp>

namespace tl {

enum class mlp_kind : std::uint8_t {
    swiglu, // down(silu(gate(x)) * up(x)): Llama, Qwen2, Mistral
    gelu,   // down(gelu(up(x)))
};

enum class norm_kind : std::uint8_t { rmsnorm, layernorm };

// Where a block normalises (model/block.hpp): pre-norm (Llama, GPT-2: x + f(norm(x))) or post-norm (BERT, the
// original Transformer: norm(x + f(x))).
enum class norm_placement : std::uint8_t { pre, post };

// Which keys a query sees: causal (decoders: keys at or before it) or bidirectional (encoders: all keys of its
// row but padding).
enum class attention_kind : std::uint8_t { causal, bidirectional };

// How a token's position enters: rotary embeddings in every attention layer (Llama, Qwen2), or a learned table
// of max_seq_len rows added to the token embeddings (BERT, GPT-2).
enum class position_kind : std::uint8_t { rope, learned };

// Mixture of experts (Mixtral): n_experts == 0 means a dense MLP. Otherwise every layer's MLP is n_experts
// SwiGLU experts of width d_ff and a softmax router that sends each token to its top_k experts with
// renormalised weights; the loss adds aux_loss_weight * the load-balancing loss (transformers'
// router_aux_loss_coef with output_router_logits=True). See ops/moe.hpp.
struct moe_config {
    int n_experts = 0;
    int top_k = 0;
    double aux_loss_weight = 0.0;
    // false: transformers' Mixtral loss, the statistics of all layers pooled before multiplying (a layer can
    // starve an expert while another layer over-uses it and the pooled loss sees balance). true: the mean
    // of per-layer losses (Switch Transformer, GShard), so every layer's router is pulled towards balance.
    bool balance_per_layer = false;

    friend constexpr bool operator==(const moe_config&, const moe_config&) = default;
};

// LoRA (Hu et al. 2021), as peft's LoraConfig: every targeted projection y = x W^T gets a trainable low-rank
// update y += (alpha / rank) * B(A(dropout(x))) with A (rank, in) and B (out, rank); the base is frozen.
// The adapter is the decoder's third template argument, a named type holding `static constexpr lora_config
// value` (see LoraAdapter below); rank == 0 means no adapter. The targets are PEFT's target_modules.
enum lora_target : std::uint32_t {
    lora_q = 1u << 0,    // self_attn.q_proj
    lora_k = 1u << 1,    // self_attn.k_proj
    lora_v = 1u << 2,    // self_attn.v_proj
    lora_o = 1u << 3,    // self_attn.o_proj
    lora_gate = 1u << 4, // mlp.gate_proj
    lora_up = 1u << 5,   // mlp.up_proj
    lora_down = 1u << 6, // mlp.down_proj
    lora_attention = lora_q | lora_k | lora_v | lora_o,
    lora_all = lora_attention | lora_gate | lora_up | lora_down,
};
inline constexpr int lora_target_count = 7;
// The projections of a block, in peft's target bit order (lora_target): q, k, v, o, gate, up, down, and their
// Hugging Face module names.
enum class proj : int { q, k, v, o, gate, up, down };
inline constexpr std::array<const char*, lora_target_count> projection_modules = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
struct lora_config {
    int rank = 0;
    float alpha = 0;
    float dropout = 0;         // on the adapter's input, during training only (loss/backward)
    std::uint32_t targets = 0; // a bitwise or of lora_target
    // QLoRA (Dettmers et al. 2023): the frozen q/k/v/o/gate/up/down weights of every layer (targeted or not)
    // are stored in NF4 with double quantisation (ops/nf4.hpp) and dequantised tile by tile in forward and
    // backward; embeddings, norms, biases, the head and the adapter stay f32.
    bool quantized_base = false;
    // The embedding and the (untied) head keep gradient memory and train with the adapter (a grown
    // vocabulary's new rows, docs/vocabulary.md). save_adapter writes them as peft's modules_to_save (full
    // copies) or, when their rows are masked, as trainable_token_indices (the trained rows only).
    bool trainable_embeddings = false;
};

// The adapter of a plain decoder: none (zero cost).
struct no_adapter {
    static constexpr lora_config value{};
};

// A named adapter type: `struct my_lora { static constexpr lora_config value{.rank = 8, .alpha = 16,
// .dropout = 0.05f, .targets = lora_all}; };`
template <class A>
concept LoraAdapter = requires {
    { A::value } -> std::convertible_to<const lora_config&>;
};

template <LoraAdapter A>
constexpr bool validate_adapter() {
    constexpr lora_config c = A::value;
    static_assert(c.rank >= 0, "lora_config: rank must be >= 0 (0: no adapter)");
    static_assert(c.rank == 0 || c.alpha > 0, "lora_config: alpha must be positive (the scale is alpha / rank)");
    static_assert(c.dropout >= 0 && c.dropout < 1, "lora_config: dropout must be in [0, 1)");
    static_assert(c.rank == 0 || (c.targets != 0 && (c.targets & ~std::uint32_t(lora_all)) == 0),
                  "lora_config: targets must be a non-empty bitwise or of lora_target (lora_q ... lora_down)");
    static_assert(!c.quantized_base || c.rank > 0,
                  "lora_config: quantized_base (QLoRA) needs an adapter (rank > 0): the 4-bit base is frozen");
    static_assert(!c.trainable_embeddings || c.rank > 0,
                  "lora_config: trainable_embeddings is for an adapter (rank > 0); a plain model trains them anyway");
    return true;
}

// Llama 3.x long-context RoPE ("rope_type": "llama3" in config.json): wavelengths longer than
// original_max_position / low_freq_factor are divided by `factor`, shorter than original_max_position /
// high_freq_factor are kept, and those between are interpolated smoothly (transformers'
// _compute_llama3_parameters). factor == 0 means plain RoPE.
struct rope_scaling_config {
    double factor = 0;
    double low_freq_factor = 1;
    double high_freq_factor = 4;
    int original_max_position = 8192;

    friend constexpr bool operator==(const rope_scaling_config&, const rope_scaling_config&) = default;
};

// A size field set to `dynamic` in a configuration type is read at run time (from config.json, or a
// model_config passed to the constructor) instead of being a compile-time constant. See docs/config.md.
inline constexpr int dynamic = -1;

struct model_config {
    // Sizes
    int vocab_size = 0;
    int d_model = 0; // hidden size
    int n_layers = 0;
    int n_heads = 0;     // query heads
    int n_kv_heads = 0;  // key/value heads (see the diagram above)
    int d_head = 0;      // 0: d_model / n_heads
    int d_ff = 0;        // MLP intermediate size
    int max_seq_len = 0; // context length the model is trained for

    // Attention
    int sliding_window = 0;       // 0: full causal attention
    int full_attention_every = 0; // with a window: layers l with (l + 1) % k == 0 attend fully; 0: all slide
    double rope_theta = 10000.0;
    bool qkv_bias = false;   // Qwen2 has biases on q, k and v projections
    bool dense_bias = false; // BERT also has biases on the output projection and on both MLP projections
    // Qwen3's QK-norm: each head's query and key go through an RMSNorm of the head width (one weight for all query
    // heads, one for all key heads) after their projections, before RoPE. A family type (families::llama) takes it
    // from the checkpoint, as tied_embeddings: Qwen3 is Llama's structure with it.
    bool qk_norm = false;
    position_kind positions = position_kind::rope;
    int type_vocab_size = 0; // encoders: token type (segment) embeddings added to the input (BERT: 2)

    // Blocks
    mlp_kind mlp = mlp_kind::swiglu;
    norm_kind norm = norm_kind::rmsnorm;
    norm_placement norm_position = norm_placement::pre;
    attention_kind attention = attention_kind::causal;
    double norm_eps = 1e-5;
    bool tied_embeddings = false; // lm_head shares the embedding matrix

    // Initialisation: N(0, init_std^2) for weights, ones for norm weights, zeros for biases
    double init_std = 0.02;

    // Llama 3 "rope_scaling" ({"rope_type": "llama3", ...}); factor 0: plain RoPE
    rope_scaling_config rope_scaling{};

    moe_config moe{};

    // Every field equal (tl::presets::find, read_hf_config's round trip).
    friend constexpr bool operator==(const model_config&, const model_config&) = default;

    constexpr int head_dim() const { return d_head ? d_head : d_model / n_heads; }
    constexpr int q_width() const { return n_heads * head_dim(); }
    constexpr int kv_width() const { return n_kv_heads * head_dim(); }
    // The attention window of layer l (0: full causal attention); Hugging Face's layer_types[l] is
    // "sliding_attention" exactly when it is positive.
    constexpr int layer_window(int l) const {
        return full_attention_every > 0 && (l + 1) % full_attention_every == 0 ? 0 : sliding_window;
    }
};

// Number of trainable parameters of a decoder (LoRA excluded; an encoder counts its own: model/encoder.hpp).
constexpr std::int64_t parameter_count(const model_config& c) {
    const std::int64_t d = c.d_model, ff = c.d_ff, q = c.q_width(), kv = c.kv_width();
    const std::int64_t norm = c.norm == norm_kind::layernorm ? 2 * d : d;
    std::int64_t attn = d * q + 2 * d * kv + q * d;
    if (c.qkv_bias) attn += q + 2 * kv;
    if (c.dense_bias) attn += d;
    if (c.qk_norm) attn += 2 * c.head_dim();
    std::int64_t mlp = c.mlp == mlp_kind::swiglu ? 3 * d * ff : 2 * d * ff;
    if (c.dense_bias) mlp += ff + d;
    if (c.moe.n_experts > 0) mlp = c.moe.n_experts * (3 * d * ff + d); // experts and the router's row each
    const std::int64_t layer = attn + mlp + 2 * norm;
    const std::int64_t embed = std::int64_t(c.vocab_size) * d;
    std::int64_t inputs = embed + std::int64_t(c.type_vocab_size) * d;
    if (c.positions == position_kind::learned) inputs += std::int64_t(c.max_seq_len) * d;
    return inputs + (c.tied_embeddings ? 0 : embed) + c.n_layers * layer + norm;
}

// Training FLOPs per token at context length `seq_len`: 6 per weight of every matrix product (forward 2,
// backward 4; the embedding lookup is not a product, the output head is) plus attention scores and values,
// 6 * 2 * n_layers * q_width * (average keys per query). Causal masking halves the keys; a window caps them.
// With experts, a token goes through top_k of them (and the router's n_experts x d product).
constexpr double flops_per_token(const model_config& c, int seq_len) {
    const double d = c.d_model, ff = c.d_ff, q = c.q_width(), kv = c.kv_width();
    const double mlp_weights = c.moe.n_experts > 0 ? c.moe.top_k * 3 * d * ff + c.moe.n_experts * d
                                                   : (c.mlp == mlp_kind::swiglu ? 3 : 2) * d * ff;
    const double matmul_weights = c.n_layers * (d * q + 2 * d * kv + q * d + mlp_weights) + double(c.vocab_size) * d;
    double keys = 0; // summed over layers
    for (int l = 0; l < c.n_layers; ++l) {
        const int window = c.layer_window(l);
        if (window > 0 && window < seq_len) {
            const double w = window; // average over positions of min(i + 1, w)
            keys += (w * (w + 1) / 2 + (seq_len - w) * w) / seq_len;
        } else {
            keys += (seq_len + 1) / 2.0;
        }
    }
    return 6 * matmul_weights + 6 * 2 * q * keys;
}

// A forward's batch shape: positive, and no longer than the positions the model has.
inline void check_batch_shape(const char* who, index_t batch, index_t time, index_t max_seq_len) {
    check(batch > 0 && time > 0 && time <= max_seq_len, [&] {
        return std::string(who) + ": batch " + std::to_string(batch) + " x time " + std::to_string(time) +
               " is not valid (time must be in [1, max_seq_len = " + std::to_string(max_seq_len) + "])";
    });
}

// Makes a model whose base weights a loader fills (decoder(config, weights_to_load, seed)): no random draws.
// weights_to_load_for_inference also leaves out the base's gradient memory (as much again as the weights), for a
// model that only decodes or evaluates; its backward refuses.
struct weights_to_load_t {
    bool gradients = true;
};
inline constexpr weights_to_load_t weights_to_load{};
inline constexpr weights_to_load_t weights_to_load_for_inference{.gradients = false};

// A named configuration type: `struct my_model { static constexpr model_config value{...}; };`
template <class C>
concept ModelConfig = requires {
    { C::value } -> std::convertible_to<const model_config&>;
};

// ---- run-time sizes ----------------------------------------------------------------------------------
// The size fields that may be tl::dynamic, by name: one list serves has_dynamic_fields, resolve_config and
// the messages naming a field that disagrees.
template <class F>
constexpr void for_each_size_field(F&& f, model_config& a, const model_config& b) {
    f("vocab_size", a.vocab_size, b.vocab_size);
    f("d_model", a.d_model, b.d_model);
    f("n_layers", a.n_layers, b.n_layers);
    f("n_heads", a.n_heads, b.n_heads);
    f("n_kv_heads", a.n_kv_heads, b.n_kv_heads);
    f("d_head", a.d_head, b.d_head);
    f("d_ff", a.d_ff, b.d_ff);
    f("max_seq_len", a.max_seq_len, b.max_seq_len);
    f("type_vocab_size", a.type_vocab_size, b.type_vocab_size);
    f("sliding_window", a.sliding_window, b.sliding_window);
    f("full_attention_every", a.full_attention_every, b.full_attention_every);
    f("rope_theta", a.rope_theta, b.rope_theta);
    f("norm_eps", a.norm_eps, b.norm_eps);
    f("init_std", a.init_std, b.init_std);
    f("rope_scaling.factor", a.rope_scaling.factor, b.rope_scaling.factor);
    f("moe.n_experts", a.moe.n_experts, b.moe.n_experts);
    f("moe.top_k", a.moe.top_k, b.moe.top_k);
    f("moe.aux_loss_weight", a.moe.aux_loss_weight, b.moe.aux_loss_weight);
}

template <class T>
constexpr bool is_dynamic(T v) {
    return v == T(dynamic);
}

// True when some size is left to run time (a "family" type such as families::llama).
constexpr bool has_dynamic_fields(model_config c) {
    bool any = false;
    for_each_size_field([&](const char*, auto& v, const auto&) { any = any || is_dynamic(v); }, c, c);
    return any;
}

// Run-time check of a resolved configuration: throws naming the field and the fix. The same rules are the
// static_asserts of validate_config below, written twice on purpose: a static_assert can only show a literal
// message, so a shared constexpr function would turn "n_heads must be a multiple of n_kv_heads" into a bare
// "invalid configuration" at compile time. Change both together.
inline void check_config(const model_config& c) {
    auto need = [](bool ok, const char* what) {
        if (!ok) throw error(std::string("model_config: ") + what);
    };
    need(c.vocab_size > 0, "vocab_size must be positive");
    need(c.d_model > 0 && c.n_layers > 0 && c.d_ff > 0, "d_model, n_layers, d_ff must be positive");
    need(c.n_heads > 0 && c.n_kv_heads > 0, "n_heads and n_kv_heads must be positive");
    need(c.n_heads % c.n_kv_heads == 0,
         "n_heads must be a multiple of n_kv_heads (MHA: equal, GQA: a divisor, MQA: 1)");
    need(c.d_head > 0 || c.d_model % c.n_heads == 0, "d_model must be divisible by n_heads, or set d_head");
    need(c.positions != position_kind::rope || c.head_dim() % 2 == 0,
         "the head width must be even for rotary embeddings");
    need(c.type_vocab_size >= 0, "type_vocab_size must be >= 0 (0: no token type embeddings)");
    need(c.max_seq_len > 0, "max_seq_len must be positive");
    need(c.sliding_window >= 0, "sliding_window must be 0 (off) or a positive width");
    need(c.full_attention_every >= 0 && (c.full_attention_every == 0 || c.sliding_window > 0),
         "full_attention_every (every k-th layer full) needs a sliding_window > 0");
    need(c.rope_theta > 0 && c.norm_eps > 0, "rope_theta and norm_eps must be positive");
    need(c.attention == attention_kind::causal || c.sliding_window == 0,
         "a sliding window needs causal attention (attention = bidirectional takes sliding_window = 0)");
    need(c.rope_scaling.factor >= 0, "rope_scaling.factor must be >= 0 (0: plain RoPE)");
    need(c.moe.n_experts >= 0, "moe.n_experts must be 0 (dense MLP) or the number of experts");
    need(c.moe.n_experts == 0 || (c.moe.top_k >= 1 && c.moe.top_k <= c.moe.n_experts),
         "moe.top_k must be in [1, moe.n_experts]");
    need(c.moe.n_experts == 0 || c.mlp == mlp_kind::swiglu, "mixture of experts needs mlp = mlp_kind::swiglu");
    need(c.moe.aux_loss_weight >= 0, "moe.aux_loss_weight must be >= 0");
}

// The configuration a model of type C runs with: C's fixed fields, and `runtime`'s where C says dynamic.
// A fixed field that `runtime` contradicts is an error naming it (a checkpoint of another shape); the
// structure (norm, MLP kind, q/k/v biases, experts or not) must agree. The flags tied_embeddings, qk_norm and
// moe.balance_per_layer come from `runtime` when C has any dynamic size.
inline model_config resolve_config(const model_config& fixed, const model_config& runtime) {
    model_config c = fixed;
    std::string diffs;
    for_each_size_field(
        [&](const char* name, auto& v, const auto& r) {
            if (is_dynamic(v))
                v = r;
            else if (v != r)
                diffs += std::string("\n  ") + name + ": the model type fixes " + std::to_string(v) + ", got " +
                         std::to_string(r);
        },
        c, runtime);
    const bool family = has_dynamic_fields(fixed);
    if (family) {
        c.tied_embeddings = runtime.tied_embeddings;
        c.qk_norm = runtime.qk_norm;
        c.moe.balance_per_layer = runtime.moe.balance_per_layer;
        c.rope_scaling = runtime.rope_scaling;
    } else {
        if (c.tied_embeddings != runtime.tied_embeddings) diffs += "\n  tied_embeddings differs";
        if (c.qk_norm != runtime.qk_norm) diffs += "\n  qk_norm (Qwen3's norm of each query and key head) differs";
    }
    if (c.mlp != runtime.mlp || c.norm != runtime.norm || c.qkv_bias != runtime.qkv_bias ||
        c.dense_bias != runtime.dense_bias || c.norm_position != runtime.norm_position ||
        c.attention != runtime.attention || c.positions != runtime.positions)
        diffs += "\n  structure (mlp, norm, norm_position, attention, positions, qkv_bias or dense_bias) differs from "
                 "the model type";
    if ((fixed.moe.n_experts != 0) != (runtime.moe.n_experts != 0))
        diffs += "\n  moe.n_experts: experts in one and a dense MLP in the other";
    if (!diffs.empty()) throw error("model_config: the configuration does not fit the model type:" + diffs);
    check_config(c);
    return c;
}

// An adapter's targets must exist in the model's structure.
template <ModelConfig C, LoraAdapter A>
constexpr bool validate_adapter_for() {
    constexpr lora_config l = A::value;
    constexpr bool experts = C::value.moe.n_experts != 0, adapter = l.rank > 0;
    static_assert(validate_adapter<A>());
    static_assert(!l.quantized_base || !experts, "lora_config: quantized_base (QLoRA) supports dense MLPs only");
    static_assert(!adapter || !experts || (l.targets & (lora_gate | lora_up | lora_down)) == 0,
                  "lora_config: with experts there are no gate/up/down projections to target (attention only)");
    static_assert(!adapter || C::value.mlp == mlp_kind::swiglu || (l.targets & lora_gate) == 0,
                  "lora_config: a GELU MLP has no gate projection to target");
    return true;
}

// Compile-time rules for a configuration type; a dynamic field is checked at run time (check_config).
template <ModelConfig C>
constexpr bool validate_config() {
    constexpr model_config c = C::value;
    if constexpr (!has_dynamic_fields(c)) {
        static_assert(c.vocab_size > 0, "model_config: vocab_size must be positive");
        static_assert(c.d_model > 0 && c.n_layers > 0 && c.d_ff > 0,
                      "model_config: d_model, n_layers, d_ff must be positive");
        static_assert(c.n_heads > 0 && c.n_kv_heads > 0, "model_config: n_heads and n_kv_heads must be positive");
        static_assert(c.n_heads % c.n_kv_heads == 0,
                      "model_config: n_heads must be a multiple of n_kv_heads (MHA: equal, GQA: a divisor, MQA: 1)");
        static_assert(c.d_head != 0 || c.d_model % c.n_heads == 0,
                      "model_config: d_model must be divisible by n_heads, or set d_head explicitly");
        static_assert(c.positions != position_kind::rope || c.head_dim() % 2 == 0,
                      "model_config: the head width must be even for rotary embeddings");
        static_assert(c.type_vocab_size >= 0, "model_config: type_vocab_size must be >= 0 (0: none)");
        static_assert(c.max_seq_len > 0, "model_config: max_seq_len must be positive");
        static_assert(c.sliding_window >= 0, "model_config: sliding_window must be 0 (off) or a positive width");
        static_assert(c.full_attention_every >= 0 && (c.full_attention_every == 0 || c.sliding_window > 0),
                      "model_config: full_attention_every (every k-th layer full) needs a sliding_window > 0; "
                      "0 slides every layer");
        static_assert(c.rope_theta > 0, "model_config: rope_theta must be positive");
        static_assert(c.attention == attention_kind::causal || c.sliding_window == 0,
                      "model_config: a sliding window needs causal attention (bidirectional: sliding_window = 0)");
        static_assert(c.norm_eps > 0, "model_config: norm_eps must be positive");
        static_assert(c.moe.n_experts >= 0,
                      "model_config: moe.n_experts must be 0 (dense MLP) or the number of experts");
        static_assert(c.moe.n_experts == 0 || (c.moe.top_k >= 1 && c.moe.top_k <= c.moe.n_experts),
                      "model_config: moe.top_k must be in [1, moe.n_experts] (Mixtral: 2 of 8)");
        static_assert(c.moe.aux_loss_weight >= 0, "model_config: moe.aux_loss_weight must be >= 0 (0: no aux loss)");
    }
    static_assert(c.moe.n_experts == 0 || c.mlp == mlp_kind::swiglu,
                  "model_config: mixture of experts needs mlp = mlp_kind::swiglu (the experts are SwiGLU MLPs)");
    return true;
}

} // namespace tl
