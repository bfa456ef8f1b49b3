// tinylm/cuda/decoder_plan.hpp: every device buffer of one training step of a decoder, planned in one arena
// (arena_plan.hpp) from its model_config and the batch shape, before anything is allocated.
//
// For the Llama- and Qwen2-shaped decoders the GPU kernels cover so far: pre-norm RMSNorm, SwiGLU, RoPE, biases on
// q, k and v only, tied or untied heads, Mixtral's experts (plan_moe_layer, plan_moe_scratch below: LoRA on attention
// only, no QLoRA); full training or LoRA, dropout included (others are refused, naming the field). Without gradient
// checkpointing every layer keeps what its backward reads; the gradients of activations live in one set of scratch
// buffers that the layers share, because the backward visits one layer at a time. N = batch * time tokens, d = d_model,
// q = q_width, kv = kv_width, f = d_ff, H = n_heads, V = vocab_size, P = parameter_count(config):
//
//   model state   parameters, gradients, adam.m, adam.v: 4 P bytes each; parameters.bf16 2 P (bf16 option).
//                 With LoRA (A elements of adapter_layout): adapter 4 A, and gradients, adam.m, adam.v 4 A each
//                 instead of 4 P (the base is frozen); adapter.bf16 2 A and scratch.bf16.lora 2 N r (bf16);
//                 scratch.lora.t 4 N r; per layer and targeted projection p, layer.l.lora.p (x A^T, N r f32).
//                 LoRA dropout (p > 0): scratch.lora.x, 4 N w (w: the widest input of a targeted projection), the
//                 dropped input of one projection (and then its input gradient before the mask); with bf16
//                 products scratch.bf16.lora_x 2 N w, its operand.
//                 QLoRA: parameters (and parameters.bf16) without the projection weights, which are in
//                 nf4.codes, nf4.qabsmax, nf4.absmax2 (nf4_layout; about 0.52 byte per weight) and dequantised
//                 one at a time into scratch.nf4 (the widest projection, bf16 or f32 as the products)
//   bf16 operands scratch.bf16.a, scratch.bf16.b: 2 max(N max(d, q, f), logits_rows V) bytes each (bf16
//                 option: a product's activation operands, converted right before it)
//   inputs        ids, targets (int32 N), doc_start, positions (int64 N), embedding.tokens / .offsets / .positions
//                 (int32 N, N + 1, N: the host's token_groups, at most that large), rope.cos / rope.sin (f32 T x D/2)
//   layer l       layer.l.x, .normed1, .resid, .normed2 (N d), .q, .attn (N q), .k, .v (N kv), .gate, .up,
//                 .hidden (N f), .rstd1, .rstd2 (N), .lse (H N); all f32. With gradient checkpointing only
//                 layer.l.x (each layer's input) and one set of the others, work.normed1 ... work.lse, that the
//                 forward and each layer's recomputation in the backward overwrite
//   final         final.x, final.normed (N d), final.rstd, xent.lse, xent.loss (N), logits (logits_rows V)
//   scratch       scratch.tmp, .dx, .dnormed (N d), .dq, .dattn (N q), .dk, .dv (N kv), .dgate, .dup,
//                 .dhidden (N f), .delta (H N)
//   attention     (attention_path::products only; S = the sequences per chunk, attention_sequences, H T T
//                 scores each) attention.scores, attention.dscores (S H T T f32); with bf16 products also
//                 attention.bf16.q, .do (N q), .k, .v (N kv) and .p (S H T T) bf16
//   optimizer     grad_norm.partials (grad_norm_blocks doubles), grad_norm.total (one double)
//   cuBLASLt      blas.workspace (blas_workspace_bytes)
//
// Each buffer starts at a multiple of 256 bytes, so the total is the sum above plus less than 256 bytes per
// buffer. The LM head runs logits_rows tokens at a time through the fused softmax cross-entropy, so the logits
// of the whole batch (N V floats) never exist at once.
#pragma once

#include <tinylm/cuda/arena_plan.hpp>
#include <tinylm/cuda/attention_fused.hpp>
#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/row_math.hpp>
#include <tinylm/model/config.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace tl::gpu {

// Where each parameter sits in the flat "parameters" block (and, at the same offsets, in "gradients", "adam.m",
// "adam.v" and "parameters.bf16"): Hugging Face names in the decoder's walk order, dense, offsets in elements.
// One block lets AdamW, the gradient norm and the bf16 conversion each run as one kernel over all parameters.
struct parameter_slice {
    std::string name;
    std::size_t offset = 0, rows = 0, cols = 0; // a vector is one row
    std::size_t size() const { return rows * cols; }
};

// The short names of a block's projections in lora_target's order (the buffers of their adapters' x A^T).
inline constexpr const char* lora_names[lora_target_count] = {"q", "k", "v", "o", "gate", "up", "down"};

// A block's projection `p`: its input and output widths.
struct projection_widths {
    std::size_t in, out;
};
inline projection_widths projection_shape(const model_config& c, proj p) {
    const auto d = std::size_t(c.d_model), q = std::size_t(c.q_width()), kv = std::size_t(c.kv_width()),
               f = std::size_t(c.d_ff);
    switch (p) {
    case proj::q:
        return {d, q};
    case proj::k:
    case proj::v:
        return {d, kv};
    case proj::o:
        return {q, d};
    case proj::gate:
    case proj::up:
        return {d, f};
    case proj::down:
        return {f, d};
    }
    return {0, 0};
}

// quantized_projections (QLoRA): the seven projection weights of every layer live in NF4 (nf4_layout below), not here.
inline std::vector<parameter_slice> decoder_parameter_layout(const model_config& c,
                                                             bool quantized_projections = false) {
    std::vector<parameter_slice> out;
    std::size_t at = 0;
    auto add = [&](std::string name, std::size_t rows, std::size_t cols) {
        if (quantized_projections && name.find("_proj.weight") != std::string::npos) return;
        out.push_back({std::move(name), at, rows, cols});
        at += rows * cols;
    };
    const auto d = std::size_t(c.d_model), q = std::size_t(c.q_width()), kv = std::size_t(c.kv_width()),
               f = std::size_t(c.d_ff), v = std::size_t(c.vocab_size);
    add("model.embed_tokens.weight", v, d);
    for (int l = 0; l < c.n_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", 1, d);
        for (const auto& [name, out] :
             {std::pair{"self_attn.q_proj", q}, {"self_attn.k_proj", kv}, {"self_attn.v_proj", kv}}) {
            add(p + name + ".weight", out, d);
            if (c.qkv_bias) add(p + name + ".bias", 1, out);
        }
        add(p + "self_attn.o_proj.weight", d, q);
        if (c.qk_norm) { // Qwen3: after o_proj, as tl::decoder's walk
            add(p + "self_attn.q_norm.weight", 1, std::size_t(c.head_dim()));
            add(p + "self_attn.k_norm.weight", 1, std::size_t(c.head_dim()));
        }
        add(p + "post_attention_layernorm.weight", 1, d);
        if (c.moe.n_experts > 0) { // Mixtral's names (model/mlp.hpp): the router, then the experts stacked
            const auto e = std::size_t(c.moe.n_experts);
            add(p + "mlp.gate.weight", e, d);
            add(p + "mlp.experts.gate_up_proj", e * 2 * f, d);
            add(p + "mlp.experts.down_proj", e * d, f);
            continue;
        }
        add(p + "mlp.gate_proj.weight", f, d);
        add(p + "mlp.up_proj.weight", f, d);
        add(p + "mlp.down_proj.weight", d, f);
    }
    add("model.norm.weight", 1, d);
    if (!c.tied_embeddings) add("lm_head.weight", v, d);
    return out;
}

// How decoder_step computes attention. rows: attention.cu's kernels, one thread per query (or key) row, f32 on
// CUDA cores; the oracle. products: scores as T x T matrices per (sequence, head) from cuBLASLt's batched
// products (bf16 on tensor cores with bf16_weights), masked and normalised by a row kernel, then p v; the backward
// recomputes the scores from q, k and the saved lse. Memory: the scores of attention_sequences sequences at once.
// fused: flash_attention.cu's kernels (attention_fused.hpp): FlashAttention-2's loop on tensor cores, bf16 operands
// and f32 accumulation, no scores in memory; needs bf16_weights and a head width of 64 or 128
// (fused_head_dim_supported).
enum class attention_path { rows, products, fused };

// LoRA: the adapter's matrices, peft's names without "base_model.model." (as tl::decoder's parameter_entries), in a
// flat block of their own: per layer, per targeted projection in lora_target's order, A (rank, in) then B (out, rank).
inline std::vector<parameter_slice> adapter_layout(const model_config& c, const lora_config& lora) {
    std::vector<parameter_slice> out;
    if (lora.rank == 0) return out;
    std::size_t at = 0;
    const auto r = std::size_t(lora.rank);
    for (int l = 0; l < c.n_layers; ++l)
        for (int t = 0; t < lora_target_count; ++t) {
            if (((lora.targets >> t) & 1u) == 0) continue;
            const auto [in, width] = projection_shape(c, proj(t));
            const std::string p = "model.layers." + std::to_string(l) + "." + projection_modules[std::size_t(t)];
            out.push_back({p + ".lora_A.weight", at, r, in});
            at += r * in;
            out.push_back({p + ".lora_B.weight", at, width, r});
            at += width * r;
        }
    return out;
}

// QLoRA: where each NF4 projection weight sits in the blocks nf4.codes (bytes), nf4.qabsmax (bytes, one 8-bit scale
// per 64 weights) and nf4.absmax2 (floats, one per 256 scales): ops/nf4.hpp's format with double quantisation, per
// layer in lora_target's order.
struct nf4_slice {
    std::string name; // model.layers.l.<module>.weight
    std::size_t codes = 0, qabsmax = 0, absmax2 = 0, n = 0;
    std::size_t code_bytes() const { return (n + 1) / 2; }
    std::size_t blocks() const { return (n + 63) / 64; }
    std::size_t scale_blocks() const { return (blocks() + 255) / 256; }
};
inline std::vector<nf4_slice> nf4_layout(const model_config& c) {
    std::vector<nf4_slice> out;
    nf4_slice at;
    for (int l = 0; l < c.n_layers; ++l)
        for (int t = 0; t < lora_target_count; ++t) {
            const auto [in, width] = projection_shape(c, proj(t));
            nf4_slice s{"model.layers." + std::to_string(l) + "." + projection_modules[std::size_t(t)] + ".weight",
                        at.codes, at.qabsmax, at.absmax2, in * width};
            at.codes += s.code_bytes(), at.qabsmax += s.blocks(), at.absmax2 += s.scale_blocks();
            out.push_back(std::move(s));
        }
    return out;
}

struct decoder_plan_options {
    long long batch = 1, time = 1;
    long long logits_rows = 4096; // tokens per chunk of the LM head (capped at batch * time)
    bool bf16_weights = true;     // bf16 mixed precision: the products read bf16 copies of their operands
    attention_path attention = attention_path::products;
    long long attention_sequences = 0; // sequences per chunk of attention scores (products); 0: the whole batch
    // Queries per block of the products (attention_products.hpp): only the tiles a block's queries can see (causal,
    // window) are computed; 0: the whole T x T products.
    long long attention_query_block = attention_default_query_block;
    // LoRA (rank > 0): the base is frozen (no gradients, no moments) and the adapter trains: gradients and AdamW's
    // moments cover the adapter's block. quantized_base (QLoRA): the projection weights in NF4 (nf4_layout),
    // dequantised into one scratch weight right before each product. Dropout: tl::decoder's masks (dropout_row.hpp),
    // drawn again in the backward. Trainable embeddings are refused for now.
    lora_config lora{};
    // Gradient checkpointing: keep each layer's input only and recompute the layer's forward in the backward (the
    // same kernels on the same inputs: bit-identical gradients), one layer's activations instead of all.
    bool checkpointing = false;
    // The sequences of one chunk of scores.
    long long attention_chunk() const {
        return attention_sequences > 0 && attention_sequences < batch ? attention_sequences : batch;
    }
};

// The buffers that attention through products reads (attention_products.hpp; flat_step.hpp hands them out):
// the scores of `chunk` sequences (h heads, time x time) and their gradient, and with bf16 products the operands'
// copies. Nothing for the rows path.
inline void plan_attention_products(arena_plan& plan, attention_path path, long long chunk, bool bf16, std::size_t n,
                                    std::size_t q, std::size_t kv, std::size_t h, std::size_t time) {
    if (path != attention_path::products) return;
    const std::size_t scores = std::size_t(chunk) * h * time * time;
    plan.add_array<float>("attention.scores", scores);
    plan.add_array<float>("attention.dscores", scores);
    if (!bf16) return;
    plan.add_array<std::uint16_t>("attention.bf16.q", n * q);
    plan.add_array<std::uint16_t>("attention.bf16.k", n * kv);
    plan.add_array<std::uint16_t>("attention.bf16.v", n * kv);
    plan.add_array<std::uint16_t>("attention.bf16.do", n * q);
    plan.add_array<std::uint16_t>("attention.bf16.p", scores);
}
// Mixture of experts (c.moe.n_experts = E > 0, top_k = K; decoder_step's MoE layers, moe_row.hpp): what a layer keeps
// for its backward, under `prefix` (layer.l. or, with checkpointing, work.): moe.probs (N E f32), moe.expert (N K
// int32), moe.weight (N K f32), moe.slot_row, moe.row_token (N K int32), moe.offsets (E + 1 int32), moe.gate_up (N K
// 2f f32), moe.hidden (N K f f32). Each token's K rows are in them once, grouped by expert: the worst case of any
// routing, so nothing depends on where the tokens go. These replace the dense MLP's gate, up and hidden.
inline void plan_moe_layer(arena_plan& plan, const std::string& prefix, const model_config& c, std::size_t n) {
    const auto e = std::size_t(c.moe.n_experts), k = std::size_t(c.moe.top_k), f = std::size_t(c.d_ff);
    plan.add_array<float>(prefix + "moe.probs", n * e);
    plan.add_array<std::int32_t>(prefix + "moe.expert", n * k);
    plan.add_array<float>(prefix + "moe.weight", n * k);
    plan.add_array<std::int32_t>(prefix + "moe.slot_row", n * k);
    plan.add_array<std::int32_t>(prefix + "moe.row_token", n * k);
    plan.add_array<std::int32_t>(prefix + "moe.offsets", e + 1);
    plan.add_array<float>(prefix + "moe.gate_up", n * k * 2 * f);
    plan.add_array<float>(prefix + "moe.hidden", n * k * f);
}
// ... and the scratch the layers share: moe.gathered, moe.rows (N K d f32: the experts' inputs, outputs, then dy and
// dx of the grouped rows), moe.dhidden (N K f), moe.dgate_up (N K 2f), moe.dweight (N K double), moe.dlogits (N E),
// moe.counts (E int32), the load-balancing statistics moe.prob_sum (B E double, B = L balances per layer or one
// pooled) and the balancing loss's gradient coefficients moe.aux (L E double). These replace scratch.dgate, .dup and
// .dhidden.
inline void plan_moe_scratch(arena_plan& plan, const model_config& c, std::size_t n) {
    const auto e = std::size_t(c.moe.n_experts), k = std::size_t(c.moe.top_k), f = std::size_t(c.d_ff),
               d = std::size_t(c.d_model), layers = std::size_t(c.n_layers);
    plan.add_array<float>("moe.gathered", n * k * d);
    plan.add_array<float>("moe.rows", n * k * d);
    plan.add_array<float>("moe.dhidden", n * k * f);
    plan.add_array<float>("moe.dgate_up", n * k * 2 * f);
    plan.add_array<double>("moe.dweight", n * k);
    plan.add_array<float>("moe.dlogits", n * e);
    plan.add_array<std::int32_t>("moe.counts", e);
    plan.add_array<double>("moe.prob_sum", (c.moe.balance_per_layer ? layers : 1) * e);
    plan.add_array<double>("moe.aux", layers * e);
}

// QK-norm (Qwen3): what a layer keeps for the norms' backward, under `prefix`: q_in, k_in (the projections' outputs
// before their norm; q and k hold the normed values) and the rows' rstd_q, rstd_k (one a head of each token).
inline void plan_qk_norm(arena_plan& plan, const std::string& prefix, const model_config& c, std::size_t n) {
    plan.add_array<float>(prefix + "q_in", n * std::size_t(c.q_width()));
    plan.add_array<float>(prefix + "k_in", n * std::size_t(c.kv_width()));
    plan.add_array<float>(prefix + "rstd_q", n * std::size_t(c.n_heads));
    plan.add_array<float>(prefix + "rstd_k", n * std::size_t(c.n_kv_heads));
}

// The gradient norm's partial sums and cuBLASLt's workspace.
inline void plan_optimizer(arena_plan& plan) {
    plan.add_array<double>("grad_norm.partials", std::size_t(grad_norm_blocks));
    plan.add_array<double>("grad_norm.total", 1);
    plan.add("blas.workspace", blas_workspace_bytes);
}

inline arena_plan plan_decoder_step(const model_config& c, const decoder_plan_options& o) {
    auto refuse = [](bool ok, const char* what) {
        if (ok) return;
        std::string m = "gpu::plan_decoder_step: ";
        m += what;
        m += " (the CUDA kernels cover pre-norm RMSNorm + SwiGLU + RoPE decoders so far)";
        fail(m);
    };
    refuse(c.norm == norm_kind::rmsnorm && c.norm_position == norm_placement::pre, "the norm must be pre-norm RMSNorm");
    refuse(c.mlp == mlp_kind::swiglu, "the MLP must be SwiGLU");
    refuse(c.positions == position_kind::rope, "positions must be rotary");
    refuse(!c.dense_bias, "biases on the output and MLP projections are not supported (q, k, v biases are)");
    refuse(o.lora.rank == 0 || (o.lora.alpha > 0 && o.lora.targets != 0), "LoRA needs alpha > 0 and a target");
    refuse(o.lora.dropout >= 0 && o.lora.dropout < 1, "LoRA dropout must be in [0, 1)");
    refuse(!o.lora.trainable_embeddings, "LoRA with trainable embeddings is not supported on the GPU yet");
    // With experts, what tl::decoder allows (validate_adapter_for): LoRA on attention, the router and experts frozen.
    const bool experts_adapter = c.moe.n_experts > 0 && o.lora.rank > 0;
    refuse(!experts_adapter || (o.lora.targets & (lora_gate | lora_up | lora_down)) == 0,
           "LoRA with experts targets attention only (q, k, v, o): there are no gate/up/down projections");
    refuse(!experts_adapter || !o.lora.quantized_base, "QLoRA (quantized_base) with experts is not supported");
    check(o.batch > 0 && o.time > 0 && o.logits_rows > 0 && o.attention_sequences >= 0, [&] {
        std::string m = "gpu::plan_decoder_step: batch ";
        m += std::to_string(o.batch);
        m += ", time ";
        m += std::to_string(o.time);
        m += " and logits_rows ";
        m += std::to_string(o.logits_rows);
        m += " must be positive, attention_sequences ";
        m += std::to_string(o.attention_sequences);
        m += " at least 0";
        return m;
    });
    check(o.attention != attention_path::fused || (o.bf16_weights && fused_head_dim_supported(c.head_dim())), [&] {
        return "gpu::plan_decoder_step: attention_path::fused computes in bf16 with a head width of " +
               std::string(fused_head_dims_text) + ": it needs bf16_weights and such a width (here " +
               std::string(o.bf16_weights ? "bf16" : "f32") + ", head width " + std::to_string(c.head_dim()) +
               "); attention_path::products or rows take any";
    });
    check(o.attention_query_block >= 0, [&] {
        return "gpu::plan_decoder_step: attention_query_block " + std::to_string(o.attention_query_block) +
               " must be at least 0 (0: whole products)";
    });
    const auto n = std::size_t(o.batch * o.time), d = std::size_t(c.d_model), q = std::size_t(c.q_width()),
               kv = std::size_t(c.kv_width()), f = std::size_t(c.d_ff), h = std::size_t(c.n_heads),
               v = std::size_t(c.vocab_size), p = std::size_t(parameter_count(c));
    const std::size_t half = std::size_t(c.head_dim() / 2), rows = std::min(n, std::size_t(o.logits_rows));

    std::size_t adapter = 0; // LoRA's trainable elements
    for (const parameter_slice& s : adapter_layout(c, o.lora))
        adapter += s.size();
    const bool nf4 = o.lora.rank > 0 && o.lora.quantized_base;
    std::size_t base = 0; // the f32 base: all parameters, or (QLoRA) all but the projection weights
    for (const parameter_slice& s : decoder_parameter_layout(c, nf4))
        base += s.size();
    const std::size_t trained = o.lora.rank > 0 ? adapter : p, r = std::size_t(o.lora.rank);
    const bool moe = c.moe.n_experts > 0;

    arena_plan plan;
    plan.add_array<float>("parameters", base);
    if (nf4) {
        const std::vector<nf4_slice> q = nf4_layout(c);
        std::size_t widest = 0;
        for (int t = 0; t < lora_target_count; ++t)
            widest = std::max(widest, projection_shape(c, proj(t)).in * projection_shape(c, proj(t)).out);
        plan.add("nf4.codes", q.back().codes + q.back().code_bytes());
        plan.add("nf4.qabsmax", q.back().qabsmax + q.back().blocks());
        plan.add_array<float>("nf4.absmax2", q.back().absmax2 + q.back().scale_blocks());
        if (o.bf16_weights)
            plan.add_array<std::uint16_t>("scratch.nf4", widest);
        else
            plan.add_array<float>("scratch.nf4", widest);
    }
    if (adapter > 0) plan.add_array<float>("adapter", adapter);
    plan.add_array<float>("gradients", trained);
    plan.add_array<float>("adam.m", trained);
    plan.add_array<float>("adam.v", trained);
    if (o.bf16_weights) {
        plan.add_array<std::uint16_t>("parameters.bf16", base);
        if (adapter > 0) {
            plan.add_array<std::uint16_t>("adapter.bf16", adapter);
            plan.add_array<std::uint16_t>("scratch.bf16.lora", n * r);
        }
        std::size_t operand = std::max(n * std::max({d, q, f}), std::min(n, std::size_t(o.logits_rows)) * v);
        if (moe) // the grouped rows (N K of them) and the router's logits
            operand = std::max(
                {operand, n * std::size_t(c.moe.top_k) * std::max(d, 2 * f), n * std::size_t(c.moe.n_experts)});
        plan.add_array<std::uint16_t>("scratch.bf16.a", operand);
        plan.add_array<std::uint16_t>("scratch.bf16.b", operand);
    }

    plan.add_array<std::int32_t>("ids", n);
    plan.add_array<std::int32_t>("targets", n);
    plan.add_array<std::int64_t>("doc_start", n);
    plan.add_array<std::int64_t>("positions", n);
    plan.add_array<std::int32_t>("embedding.tokens", n);
    plan.add_array<std::int32_t>("embedding.offsets", n + 1);
    plan.add_array<std::int32_t>("embedding.positions", n);
    plan.add_array<float>("rope.cos", std::size_t(o.time) * half);
    plan.add_array<float>("rope.sin", std::size_t(o.time) * half);

    for (int l = 0; l < c.n_layers; ++l) {
        const std::string at = "layer." + std::to_string(l) + ".";
        plan.add_array<float>(at + "x", n * d);
        if (o.checkpointing) continue; // the rest once, as work.*, below
        plan.add_array<float>(at + "normed1", n * d);
        plan.add_array<float>(at + "rstd1", n);
        plan.add_array<float>(at + "q", n * q);
        plan.add_array<float>(at + "k", n * kv);
        plan.add_array<float>(at + "v", n * kv);
        plan.add_array<float>(at + "attn", n * q);
        plan.add_array<float>(at + "lse", h * n);
        if (c.qk_norm) plan_qk_norm(plan, at, c, n);
        for (const char* name : {"resid", "normed2"})
            plan.add_array<float>(at + name, n * d);
        plan.add_array<float>(at + "rstd2", n);
        if (moe) plan_moe_layer(plan, at, c, n);
        for (const char* name : {"gate", "up", "hidden"})
            if (!moe) plan.add_array<float>(at + name, n * f);
        for (int t = 0; t < lora_target_count; ++t) // x A^T of each targeted projection
            if ((o.lora.targets >> t) & 1u && r > 0) plan.add_array<float>(at + "lora." + lora_names[t], n * r);
    }
    if (o.checkpointing) {
        plan.add_array<float>("work.normed1", n * d);
        plan.add_array<float>("work.rstd1", n);
        plan.add_array<float>("work.q", n * q);
        plan.add_array<float>("work.k", n * kv);
        plan.add_array<float>("work.v", n * kv);
        plan.add_array<float>("work.attn", n * q);
        plan.add_array<float>("work.lse", h * n);
        if (c.qk_norm) plan_qk_norm(plan, "work.", c, n);
        for (const char* name : {"work.resid", "work.normed2"})
            plan.add_array<float>(name, n * d);
        plan.add_array<float>("work.rstd2", n);
        if (moe) plan_moe_layer(plan, "work.", c, n);
        for (const char* name : {"work.gate", "work.up", "work.hidden"})
            if (!moe) plan.add_array<float>(name, n * f);
        for (int t = 0; t < lora_target_count; ++t)
            if ((o.lora.targets >> t) & 1u && r > 0)
                plan.add_array<float>(std::string("work.lora.") + lora_names[t], n * r);
    }
    if (r > 0) plan.add_array<float>("scratch.lora.t", n * r);
    if (r > 0 && o.lora.dropout > 0) { // one projection's dropped input at a time
        std::size_t widest = 0;
        for (int t = 0; t < lora_target_count; ++t)
            if ((o.lora.targets >> t) & 1u) widest = std::max(widest, projection_shape(c, proj(t)).in);
        plan.add_array<float>("scratch.lora.x", n * widest);
        if (o.bf16_weights) plan.add_array<std::uint16_t>("scratch.bf16.lora_x", n * widest);
    }
    plan.add_array<float>("final.x", n * d);
    plan.add_array<float>("final.normed", n * d);
    plan.add_array<float>("final.rstd", n);
    plan.add_array<float>("xent.lse", n);
    plan.add_array<float>("xent.loss", n);
    plan.add_array<float>("logits", rows * v);

    for (const char* name : {"scratch.tmp", "scratch.dx", "scratch.dnormed"})
        plan.add_array<float>(name, n * d);
    for (const char* name : {"scratch.dq", "scratch.dattn"})
        plan.add_array<float>(name, n * q);
    for (const char* name : {"scratch.dk", "scratch.dv"})
        plan.add_array<float>(name, n * kv);
    if (c.qk_norm) {
        plan.add_array<float>("scratch.dq_in", n * q);
        plan.add_array<float>("scratch.dk_in", n * kv);
    }
    for (const char* name : {"scratch.dgate", "scratch.dup", "scratch.dhidden"})
        if (!moe) plan.add_array<float>(name, n * f);
    if (moe) plan_moe_scratch(plan, c, n);
    plan.add_array<float>("scratch.delta", h * n);

    plan_attention_products(plan, o.attention, o.attention_chunk(), o.bf16_weights, n, q, kv, h, std::size_t(o.time));
    plan_optimizer(plan);
    return plan;
}

} // namespace tl::gpu
