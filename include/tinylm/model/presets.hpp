// tinylm/model/presets.hpp: named configurations. Each states its parameter count, checked at compile time.
#pragma once

#include <tinylm/model/config.hpp>
#include <tinylm/model/families.hpp>

namespace tl::presets {

// Small enough to train in seconds on two cores; byte-level vocabulary (no tokenizer needed).
struct tiny {
    static constexpr model_config value{.vocab_size = 256,
                                        .d_model = 64,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 176,
                                        .max_seq_len = 64,
                                        .init_std = 0.05};
};

// The course's Llama-style model for Russian novels (3k BPE vocabulary, untied head).
struct russian_novels_150m {
    static constexpr model_config value{.vocab_size = 3000,
                                        .d_model = 1024,
                                        .n_layers = 16,
                                        .n_heads = 16,
                                        .n_kv_heads = 8,
                                        .d_ff = 1536,
                                        .max_seq_len = 512};
};
// 16 layers x (q 1024^2 + k,v 2 x 1024 x 512 + o 1024^2 + mlp 3 x 1024 x 1536 + 2 norms of 1024)
// + embedding and head 2 x 3000 x 1024 + final norm 1024.
static_assert(parameter_count(russian_novels_150m::value) == 132'006'912);

// The same family sized for two CPU cores (examples/04_russian_novels --preset cpu, the learning check's
// `recipe` configuration): 4.5M parameters, context 256.
struct russian_novels_cpu {
    static constexpr model_config value{.vocab_size = 3000,
                                        .d_model = 256,
                                        .n_layers = 4,
                                        .n_heads = 8,
                                        .n_kv_heads = 4,
                                        .d_ff = 704,
                                        .max_seq_len = 256};
};
static_assert(parameter_count(russian_novels_cpu::value) == 4'487'424);

// The Tatar recipe's three variants (examples/05_tatar, docs/tatar.md): the same width, depth, heads and
// 4k vocabulary. The MoE variant splits the dense MLP's width over 4 experts of d_ff / 2 (top-2), so a token
// passes through the same MLP width; the sliding variant windows layers 0 and 2 at 32 tokens.
struct tatar_dense {
    static constexpr model_config value{.vocab_size = 4000,
                                        .d_model = 256,
                                        .n_layers = 4,
                                        .n_heads = 8,
                                        .n_kv_heads = 4,
                                        .d_ff = 704,
                                        .max_seq_len = 256};
};
struct tatar_moe {
    static constexpr model_config value = [] {
        model_config c = tatar_dense::value;
        c.d_ff = tatar_dense::value.d_ff / 2;
        c.moe = {.n_experts = 4, .top_k = 2, .aux_loss_weight = 0.01, .balance_per_layer = true};
        return c;
    }();
};
struct tatar_sliding {
    static constexpr model_config value = [] {
        model_config c = tatar_dense::value;
        c.sliding_window = 32;
        c.full_attention_every = 2;
        return c;
    }();
};

// Qwen2.5-0.5B (huggingface.co/Qwen/Qwen2.5-0.5B/config.json): GQA 14/2, q/k/v biases, tied embeddings.
struct qwen2_5_0_5b {
    static constexpr model_config value{.vocab_size = 151936,
                                        .d_model = 896,
                                        .n_layers = 24,
                                        .n_heads = 14,
                                        .n_kv_heads = 2,
                                        .d_ff = 4864,
                                        .max_seq_len = 32768,
                                        .rope_theta = 1000000.0,
                                        .qkv_bias = true,
                                        .norm_eps = 1e-6,
                                        .tied_embeddings = true};
};
static_assert(parameter_count(qwen2_5_0_5b::value) == 494'032'768); // the published 0.49B

// Qwen3-0.6B (huggingface.co/Qwen/Qwen3-0.6B/config.json): GQA 16/8 with heads of 128 (a query width of 2048 on
// d_model 1024), QK-norm, tied embeddings.
struct qwen3_0_6b {
    static constexpr model_config value{.vocab_size = 151936,
                                        .d_model = 1024,
                                        .n_layers = 28,
                                        .n_heads = 16,
                                        .n_kv_heads = 8,
                                        .d_head = 128,
                                        .d_ff = 3072,
                                        .max_seq_len = 40960,
                                        .rope_theta = 1000000.0,
                                        .qk_norm = true,
                                        .norm_eps = 1e-6,
                                        .tied_embeddings = true};
};
static_assert(parameter_count(qwen3_0_6b::value) == 596'049'920); // transformers' Qwen3ForCausalLM of that config

// TinyLlama-1.1B (huggingface.co/TinyLlama/TinyLlama-1.1B-Chat-v1.0/config.json): GQA 32/4, untied.
struct tinyllama_1_1b {
    static constexpr model_config value{.vocab_size = 32000,
                                        .d_model = 2048,
                                        .n_layers = 22,
                                        .n_heads = 32,
                                        .n_kv_heads = 4,
                                        .d_ff = 5632,
                                        .max_seq_len = 2048};
};
static_assert(parameter_count(tinyllama_1_1b::value) == 1'100'048'384); // the published 1.1B

static_assert(validate_config<tiny>() && validate_config<russian_novels_150m>() && validate_config<qwen2_5_0_5b>() &&
              validate_config<qwen3_0_6b>() && validate_config<tinyllama_1_1b>());

// A small BERT-layout encoder (model/encoder.hpp) to train from scratch on a tinylm BPE tokenizer, whose size gives
// the vocabulary at run time (embed/bpe_batches.hpp makes its batches): 4 layers of width 256, context 256. Its
// folders are BertModel folders (io/hf_encoder.hpp). 3.2M parameters besides the embedding matrix.
struct encoder_small {
    static constexpr model_config value = [] {
        model_config c = families::bert::value;
        c.d_model = 256, c.n_layers = 4, c.n_heads = c.n_kv_heads = 4, c.d_head = 0, c.d_ff = 1024;
        c.max_seq_len = 256, c.type_vocab_size = 2, c.norm_eps = 1e-12, c.init_std = 0.02, c.rope_theta = 10000;
        return c; // vocab_size stays dynamic
    }();
};

} // namespace tl::presets
