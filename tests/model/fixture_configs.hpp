// The tiny configurations of tests/reference/make_fixtures.py, as tinylm configurations.
#pragma once

#include <tinylm/model/config.hpp>

namespace tl::test {

struct llama_gqa {
    static constexpr model_config value{
        .vocab_size = 64, .d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 48, .max_seq_len = 64};
};
struct llama_mha {
    static constexpr model_config value{.vocab_size = 64,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 4,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .rope_theta = 500000.0};
};
struct mistral_window {
    static constexpr model_config value{.vocab_size = 64,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 1,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .sliding_window = 4};
};
struct qwen2_tied {
    static constexpr model_config value{.vocab_size = 64,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .rope_theta = 1000000.0,
                                        .qkv_bias = true,
                                        .norm_eps = 1e-6,
                                        .tied_embeddings = true};
};
struct qwen3_qknorm { // Qwen3ForCausalLM: QK-norm, heads of 16 (query width 64 on hidden 32), tied embeddings
    static constexpr model_config value{.vocab_size = 64,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_head = 16,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .rope_theta = 1000000.0,
                                        .qk_norm = true,
                                        .norm_eps = 1e-6,
                                        .tied_embeddings = true};
};
struct mixtral_moe { // MixtralForCausalLM: 4 experts, top-2, router_aux_loss_coef 0.02 (output_router_logits)
    static constexpr model_config value{.vocab_size = 64,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .moe = {.n_experts = 4, .top_k = 2, .aux_loss_weight = 0.02}};
};
struct ministral_layers { // MinistralForCausalLM with layer_types: sliding, full, sliding (window 4)
    static constexpr model_config value{.vocab_size = 64,
                                        .d_model = 32,
                                        .n_layers = 3,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .sliding_window = 4,
                                        .full_attention_every = 2};
};

} // namespace tl::test
