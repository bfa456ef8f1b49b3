// tinylm/model/families.hpp: configuration types whose sizes are all read at run time, one per structure.
// A family fixes what changes the code (norm and MLP kind, q/k/v biases, experts or not) and leaves every
// size tl::dynamic, so decoder<families::llama>(config) holds any Llama-shaped checkpoint without a rebuild:
//   llama   Llama 1-3 (rope_scaling), Mistral and Ministral (the window is a size), TinyLlama, SmolLM, and Qwen3
//           (QK-norm: the flag model_config::qk_norm comes from the checkpoint, as tied_embeddings does)
//   qwen2   Qwen2 / Qwen2.5 (q/k/v biases)
//   mixtral Mixtral (experts)
//   bert    BERT-family encoders (model/encoder.hpp): post-norm LayerNorm blocks, GELU, learned positions and
//           token types, biases everywhere, bidirectional attention (all-MiniLM, BGE, E5, LaBSE, ...)
// io/hf_any.hpp picks the decoder family from a folder's config.json; io/hf_encoder.hpp reads BERT's.
#pragma once

#include <tinylm/model/config.hpp>

namespace tl::families {

inline constexpr model_config all_dynamic{.vocab_size = dynamic,
                                          .d_model = dynamic,
                                          .n_layers = dynamic,
                                          .n_heads = dynamic,
                                          .n_kv_heads = dynamic,
                                          .d_head = dynamic,
                                          .d_ff = dynamic,
                                          .max_seq_len = dynamic,
                                          .sliding_window = dynamic,
                                          .full_attention_every = dynamic,
                                          .rope_theta = dynamic,
                                          .norm_eps = dynamic,
                                          .init_std = dynamic,
                                          .rope_scaling = {.factor = dynamic}};

struct llama {
    static constexpr model_config value = all_dynamic;
};
struct qwen2 {
    static constexpr model_config value = [] {
        model_config c = all_dynamic;
        c.qkv_bias = true;
        return c;
    }();
};
struct mixtral {
    static constexpr model_config value = [] {
        model_config c = all_dynamic;
        c.moe = {.n_experts = dynamic, .top_k = dynamic, .aux_loss_weight = dynamic};
        return c;
    }();
};

struct bert {
    static constexpr model_config value = [] {
        model_config c = all_dynamic;
        c.sliding_window = 0; // encoders attend to the whole row
        c.full_attention_every = 0;
        c.rope_scaling = {};
        c.type_vocab_size = dynamic;
        c.qkv_bias = c.dense_bias = true;
        c.positions = position_kind::learned;
        c.mlp = mlp_kind::gelu;
        c.norm = norm_kind::layernorm;
        c.norm_position = norm_placement::post;
        c.attention = attention_kind::bidirectional;
        return c;
    }();
};

} // namespace tl::families

namespace tl {

// Calls f.template operator()<Family>() with the decoder family whose structure `c` has (experts: mixtral; q/k/v
// biases: qwen2; else llama, Qwen3's QK-norm included) and returns what it returns. Write f as a generic lambda,
// `[&]<class Family>() { tl::decoder<Family> model(c); ... }`: each family is instantiated once where it is called.
template <class F>
decltype(auto) visit_family(const model_config& c, F&& f) {
    if (c.moe.n_experts > 0) return f.template operator()<families::mixtral>();
    if (c.qkv_bias) return f.template operator()<families::qwen2>();
    return f.template operator()<families::llama>();
}

} // namespace tl
