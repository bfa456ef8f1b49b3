// tinylm/cuda/encoder_plan.hpp: every device buffer of one training step of a BERT-shaped encoder (tl::encoder with
// post-norm LayerNorm, GELU, biases on every projection, learned positions, token types), planned in one arena
// (arena_plan.hpp) from its model_config and the batch shape, before anything is allocated.
//
// N = batch * time tokens, d = d_model, q = q_width, kv = kv_width, f = d_ff, H = n_heads, P = the parameters of
// encoder_parameter_layout (the pooler included: carried, never trained):
//
//   model state   parameters, gradients, adam.m, adam.v: 4 P bytes each; parameters.bf16 2 P (bf16 option)
//                 QLoRA (lora.quantized_base): "parameters" without the projection weights, which sit in
//                 nf4.codes, nf4.qabsmax, nf4.absmax2 (encoder_nf4_layout; about 0.52 byte per weight) and are
//                 dequantised one at a time into scratch.nf4 (the widest projection, bf16 or f32 as the products)
//                 With LoRA (A elements of encoder_adapter_layout): adapter 4 A, and gradients, adam.m, adam.v 4 A
//                 each instead of 4 P (the base is frozen); adapter.bf16 2 A and scratch.bf16.lora 2 N r (bf16);
//                 scratch.lora.t 4 N r; per layer and targeted projection p, layer.l.lora.p (x A^T, N r f32).
//                 LoRA dropout (p > 0): scratch.lora.x, 4 N w (w: the widest input of a targeted projection), the
//                 dropped input of one projection at a time (and its masked input gradient), scratch.bf16.lora_x 2 N w
//                 (bf16); dropout_positions (int64 N: each token's place in the CPU model's layout, dropout_row.hpp)
//   bf16 operands scratch.bf16.a, scratch.bf16.b: 2 N max(d, q, f) bytes each (bf16 option)
//   inputs        ids, type_ids, position_ids (int32 N), key_lengths (int64 B), doc_start (int64 N), and per table
//                 (word, position, type) the host's token_groups: embedding.<table>.tokens / .offsets / .positions
//                 (int32 N, N + 1, N at most)
//   embeddings    embed.summed (N d: before the embeddings' LayerNorm), embed.mean, embed.rstd (N)
//   layer l       layer.l.x (N d: the layer's input), .q, .attn (N q), .k, .v (N kv), .lse (H N),
//                 .resid1, .normed1, .resid2 (N d), .mean1, .rstd1, .mean2, .rstd2 (N), .up, .act (N f)
//   output        hidden (N d: the last layer's output), dhidden (N d: where a caller may put d loss / d hidden)
//   scratch       scratch.tmp, .dx, .dnormed (N d), .dq, .dattn (N q), .dk, .dv (N kv), .dup, .dact (N f),
//                 .delta (H N)
//   attention     as decoder_plan.hpp's (attention_path::products: scores of attention_sequences sequences at once)
//   optimizer     grad_norm.partials, grad_norm.total; cuBLASLt's blas.workspace
//
// Each buffer starts at a multiple of 256 bytes.
#pragma once

#include <tinylm/cuda/arena_plan.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/decoder_plan.hpp> // parameter_slice, projection_shape, attention_path
#include <tinylm/cuda/row_math.hpp>
#include <tinylm/model/config.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace tl::gpu {

// BertModel's module of projection p in layer l (tl::bert_tensor_name's mapping of the decoder-style names; the
// encoder has no gate).
inline std::string bert_module(int l, proj p) {
    std::string m = "encoder.layer." + std::to_string(l) + ".";
    switch (p) {
    case proj::q:
        return m + "attention.self.query";
    case proj::k:
        return m + "attention.self.key";
    case proj::v:
        return m + "attention.self.value";
    case proj::o:
        return m + "attention.output.dense";
    case proj::up:
        return m + "intermediate.dense";
    case proj::down:
        return m + "output.dense";
    case proj::gate:
        break;
    }
    fail("gpu::bert_module: a BERT layer has no gate projection");
}
// The LayerNorms of layer l: after attention (1) and after the MLP (2).
inline std::string bert_layer_norm(int l, int which) {
    return "encoder.layer." + std::to_string(l) + (which == 1 ? ".attention.output.LayerNorm" : ".output.LayerNorm");
}

// The flat "parameters" block of an encoder: BertModel's names in tl::encoder's parameter_entries order.
// quantized_projections (QLoRA): the six projection weights of every layer live in NF4 (encoder_nf4_layout below),
// not here; their biases stay f32 here, as tl::encoder keeps them.
inline std::vector<parameter_slice> encoder_parameter_layout(const model_config& c,
                                                             bool quantized_projections = false) {
    std::vector<parameter_slice> out;
    std::size_t at = 0;
    auto add = [&](std::string name, std::size_t rows, std::size_t cols) {
        if (quantized_projections && name.starts_with("encoder.layer.") &&
            name.find("LayerNorm") == std::string::npos && name.ends_with(".weight"))
            return;
        out.push_back({std::move(name), at, rows, cols});
        at += rows * cols;
    };
    const auto d = std::size_t(c.d_model);
    add("embeddings.word_embeddings.weight", std::size_t(c.vocab_size), d);
    add("embeddings.position_embeddings.weight", std::size_t(c.max_seq_len), d);
    if (c.type_vocab_size > 0) add("embeddings.token_type_embeddings.weight", std::size_t(c.type_vocab_size), d);
    add("embeddings.LayerNorm.weight", 1, d);
    add("embeddings.LayerNorm.bias", 1, d);
    for (int l = 0; l < c.n_layers; ++l) {
        auto norm = [&](int which) {
            add(bert_layer_norm(l, which) + ".weight", 1, d);
            add(bert_layer_norm(l, which) + ".bias", 1, d);
        };
        auto projection = [&](proj p) {
            const auto [in, width] = projection_shape(c, p);
            add(bert_module(l, p) + ".weight", width, in);
            add(bert_module(l, p) + ".bias", 1, width);
        };
        norm(1);
        for (const proj p : {proj::q, proj::k, proj::v, proj::o})
            projection(p);
        norm(2);
        projection(proj::up);
        projection(proj::down);
    }
    add("pooler.dense.weight", d, d);
    add("pooler.dense.bias", 1, d);
    return out;
}

// QLoRA: where each NF4 projection weight of an encoder sits in nf4.codes, nf4.qabsmax and nf4.absmax2
// (decoder_plan.hpp's nf4_slice: ops/nf4.hpp's format with double quantisation), per layer in lora_target's order
// without the gate, under BertModel's names (tl::encoder's quantized_entries).
inline std::vector<nf4_slice> encoder_nf4_layout(const model_config& c) {
    std::vector<nf4_slice> out;
    nf4_slice at;
    for (int l = 0; l < c.n_layers; ++l)
        for (const proj p : {proj::q, proj::k, proj::v, proj::o, proj::up, proj::down}) {
            const auto [in, width] = projection_shape(c, p);
            nf4_slice s{bert_module(l, p) + ".weight", at.codes, at.qabsmax, at.absmax2, in * width};
            at.codes += s.code_bytes(), at.qabsmax += s.blocks(), at.absmax2 += s.scale_blocks();
            out.push_back(std::move(s));
        }
    return out;
}

// The projections LoRA targets in an encoder: lora.targets without the gate (BERT's MLP has none; tl::encoder
// ignores that bit too).
inline std::uint32_t encoder_lora_targets(const lora_config& lora) {
    return lora.rank > 0 ? lora.targets & ~(1u << int(proj::gate)) : 0u;
}

// LoRA: the adapter's matrices under tl::encoder's names (BertModel's module + ".lora_A.weight" / ".lora_B.weight",
// as peft names them without "base_model.model.") in a flat block of their own: per layer, per targeted projection
// in lora_target's order, A (rank, in) then B (out, rank).
inline std::vector<parameter_slice> encoder_adapter_layout(const model_config& c, const lora_config& lora) {
    std::vector<parameter_slice> out;
    const std::uint32_t targets = encoder_lora_targets(lora);
    std::size_t at = 0;
    const auto r = std::size_t(lora.rank);
    for (int l = 0; l < c.n_layers; ++l)
        for (int t = 0; t < lora_target_count; ++t) {
            if (((targets >> t) & 1u) == 0) continue;
            const auto [in, width] = projection_shape(c, proj(t));
            const std::string m = bert_module(l, proj(t));
            out.push_back({m + ".lora_A.weight", at, r, in});
            at += r * in;
            out.push_back({m + ".lora_B.weight", at, width, r});
            at += width * r;
        }
    return out;
}

struct encoder_plan_options {
    long long batch = 1, time = 1;
    bool bf16_weights = true; // bf16 mixed precision: the products read bf16 copies of their operands
    // LoRA (rank > 0): the base is frozen (no gradients, no moments) and the adapter trains: gradients and AdamW's
    // moments cover the adapter's block. quantized_base (QLoRA): the projection weights in NF4 (encoder_nf4_layout),
    // dequantised into one scratch weight right before each product, as decoder_step does. dropout in [0, 1):
    // tl::encoder's masks (encoder_step.hpp), in every forward (each is a training forward).
    lora_config lora{};
    attention_path attention = attention_path::products;
    long long attention_sequences = 0; // sequences per chunk of attention scores (products); 0: the whole batch
    long long attention_chunk() const {
        return attention_sequences > 0 && attention_sequences < batch ? attention_sequences : batch;
    }
};

inline arena_plan plan_encoder_step(const model_config& c, const encoder_plan_options& o) {
    auto refuse = [](bool ok, const char* what) {
        if (ok) return;
        std::string m = "gpu::plan_encoder_step: ";
        m += what;
        m += " (the CUDA kernels cover BERT-shaped encoders: post-norm LayerNorm, GELU, learned positions, biases)";
        fail(m);
    };
    refuse(c.attention == attention_kind::bidirectional, "attention must be bidirectional");
    refuse(c.norm == norm_kind::layernorm && c.norm_position == norm_placement::post,
           "the norm must be post-norm LayerNorm");
    refuse(c.mlp == mlp_kind::gelu, "the MLP must be GELU");
    refuse(c.positions == position_kind::learned, "positions must be learned");
    refuse(c.qkv_bias && c.dense_bias, "every projection must have a bias");
    refuse(c.moe.n_experts == 0, "mixtures of experts are not supported");

    refuse(o.lora.rank >= 0 && (o.lora.rank == 0 || (o.lora.alpha > 0 && encoder_lora_targets(o.lora) != 0)),
           "LoRA needs alpha > 0 and a target");
    refuse(o.lora.dropout >= 0 && o.lora.dropout < 1, "LoRA dropout must be in [0, 1)");
    refuse(!o.lora.trainable_embeddings, "LoRA with trainable embeddings is not supported on the device encoder");
    check(o.batch > 0 && o.time > 0 && o.time <= c.max_seq_len && o.attention_sequences >= 0, [&] {
        std::string m = "gpu::plan_encoder_step: batch ";
        m += std::to_string(o.batch);
        m += " and time ";
        m += std::to_string(o.time);
        m += " must be positive, time at most max_seq_len ";
        m += std::to_string(c.max_seq_len);
        m += ", attention_sequences ";
        m += std::to_string(o.attention_sequences);
        m += " at least 0";
        return m;
    });
    check(o.attention != attention_path::fused || (o.bf16_weights && fused_head_dim_supported(c.head_dim())), [&] {
        return "gpu::plan_encoder_step: attention_path::fused computes in bf16 with a head width of " +
               std::string(fused_head_dims_text) + ": it needs bf16_weights and such a width (here " +
               std::string(o.bf16_weights ? "bf16" : "f32") + ", head width " + std::to_string(c.head_dim()) +
               "); attention_path::products or rows take any";
    });
    const auto n = std::size_t(o.batch * o.time), d = std::size_t(c.d_model), q = std::size_t(c.q_width()),
               kv = std::size_t(c.kv_width()), f = std::size_t(c.d_ff), h = std::size_t(c.n_heads);
    const bool nf4 = o.lora.rank > 0 && o.lora.quantized_base;
    std::size_t p = 0, adapter = 0; // p: the f32 base (QLoRA: all but the projection weights)
    for (const parameter_slice& s : encoder_parameter_layout(c, nf4))
        p += s.size();
    for (const parameter_slice& s : encoder_adapter_layout(c, o.lora))
        adapter += s.size();
    const std::size_t trained = o.lora.rank > 0 ? adapter : p, r = std::size_t(o.lora.rank);
    const std::uint32_t targets = encoder_lora_targets(o.lora);

    arena_plan plan;
    plan.add_array<float>("parameters", p);
    if (nf4) {
        const std::vector<nf4_slice> w = encoder_nf4_layout(c);
        plan.add("nf4.codes", w.back().codes + w.back().code_bytes());
        plan.add("nf4.qabsmax", w.back().qabsmax + w.back().blocks());
        plan.add_array<float>("nf4.absmax2", w.back().absmax2 + w.back().scale_blocks());
        const std::size_t widest = std::max({q * d, kv * d, d * f}); // q, k, v, o; up, down
        if (o.bf16_weights)
            plan.add_array<std::uint16_t>("scratch.nf4", widest);
        else
            plan.add_array<float>("scratch.nf4", widest);
    }
    if (adapter > 0) plan.add_array<float>("adapter", adapter);
    for (const char* name : {"gradients", "adam.m", "adam.v"})
        plan.add_array<float>(name, trained);
    if (o.bf16_weights) {
        plan.add_array<std::uint16_t>("parameters.bf16", p);
        plan.add_array<std::uint16_t>("scratch.bf16.a", n * std::max({d, q, f}));
        plan.add_array<std::uint16_t>("scratch.bf16.b", n * std::max({d, q, f}));
        if (adapter > 0) {
            plan.add_array<std::uint16_t>("adapter.bf16", adapter);
            plan.add_array<std::uint16_t>("scratch.bf16.lora", n * r);
        }
    }

    for (const char* name : {"ids", "type_ids", "position_ids"})
        plan.add_array<std::int32_t>(name, n);
    plan.add_array<std::int64_t>("key_lengths", std::size_t(o.batch));
    plan.add_array<std::int64_t>("doc_start", n); // packed texts (encoder_step::forward's doc_start)
    for (const std::string table : {"word", "position", "type"}) {
        plan.add_array<std::int32_t>("embedding." + table + ".tokens", n);
        plan.add_array<std::int32_t>("embedding." + table + ".offsets", n + 1);
        plan.add_array<std::int32_t>("embedding." + table + ".positions", n);
    }
    plan.add_array<float>("embed.summed", n * d);
    plan.add_array<float>("embed.mean", n);
    plan.add_array<float>("embed.rstd", n);

    for (int l = 0; l < c.n_layers; ++l) {
        const std::string at = "layer." + std::to_string(l) + ".";
        plan.add_array<float>(at + "x", n * d);
        plan.add_array<float>(at + "q", n * q);
        plan.add_array<float>(at + "k", n * kv);
        plan.add_array<float>(at + "v", n * kv);
        plan.add_array<float>(at + "attn", n * q);
        plan.add_array<float>(at + "lse", h * n);
        for (const char* name : {"resid1", "normed1", "resid2"})
            plan.add_array<float>(at + name, n * d);
        for (const char* name : {"mean1", "rstd1", "mean2", "rstd2"})
            plan.add_array<float>(at + name, n);
        plan.add_array<float>(at + "up", n * f);
        plan.add_array<float>(at + "act", n * f);
        for (int t = 0; t < lora_target_count; ++t) // x A^T of each targeted projection
            if ((targets >> t) & 1u) plan.add_array<float>(at + "lora." + lora_names[t], n * r);
    }
    if (r > 0) plan.add_array<float>("scratch.lora.t", n * r);
    if (r > 0 && o.lora.dropout > 0) { // one projection's dropped input at a time
        std::size_t widest = 0;
        for (int t = 0; t < lora_target_count; ++t)
            if ((targets >> t) & 1u) widest = std::max(widest, projection_shape(c, proj(t)).in);
        plan.add_array<float>("scratch.lora.x", n * widest);
        if (o.bf16_weights) plan.add_array<std::uint16_t>("scratch.bf16.lora_x", n * widest);
        plan.add_array<std::int64_t>("dropout_positions", n);
    }
    plan.add_array<float>("hidden", n * d);
    plan.add_array<float>("dhidden", n * d);

    for (const char* name : {"scratch.tmp", "scratch.dx", "scratch.dnormed"})
        plan.add_array<float>(name, n * d);
    for (const char* name : {"scratch.dq", "scratch.dattn"})
        plan.add_array<float>(name, n * q);
    for (const char* name : {"scratch.dk", "scratch.dv"})
        plan.add_array<float>(name, n * kv);
    for (const char* name : {"scratch.dup", "scratch.dact"})
        plan.add_array<float>(name, n * f);
    plan.add_array<float>("scratch.delta", h * n);

    plan_attention_products(plan, o.attention, o.attention_chunk(), o.bf16_weights, n, q, kv, h, std::size_t(o.time));
    plan_optimizer(plan);
    return plan;
}

} // namespace tl::gpu
