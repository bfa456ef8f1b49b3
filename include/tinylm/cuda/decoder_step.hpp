// tinylm/cuda/decoder_step.hpp: one training step (forward, loss, backward) of a pre-norm Llama-shaped decoder
// over the buffers of plan_decoder_step (decoder_plan.hpp), written once against an executor of ops:
// gpu::cpu_ops (cpu_ops.hpp: the CPU drivers of row_math.hpp and attention_row.hpp, with host memory) or
// gpu::gpu_ops (gpu_ops.hpp: the kernels of tinylm::cuda and cuBLASLt, with device memory). The CPU executor
// is checked against tl::decoder in test_cuda_math, so the order of the kernels, the buffers they use and the
// gradients they add up are known right before the GPU runs the same code.
//
// The order is model/block.hpp's, with the residual add fused into the next norm:
//   x_0 = embed(ids); normed1 = rmsnorm(x_0)
//   per layer l: q, k, v = normed1 W^T; rope(q, k); attn = attention(q, k, v); tmp = attn Wo^T
//                (attention by attention.cu's row kernels, through products, attention_products.hpp, or fused,
//                flash_attention.cu: decoder_plan_options::attention)
//                resid = x_l + tmp, normed2 = rmsnorm(resid)                      (fused)
//                gate, up = normed2 W^T; hidden = swiglu(gate, up); tmp = hidden Wd^T
//                x_{l+1} = resid + tmp, normed1 of l + 1 (or the final norm) = rmsnorm(x_{l+1})  (fused)
//   head: logits_rows tokens at a time: logits = final.normed Wh^T, the fused softmax cross-entropy (lse and
//         loss per row), its gradient over the logits, d final.normed = dlogits Wh, dWh += dlogits^T final.normed
// and back through the layers; the residual stream's gradient lives in scratch.dx, to which each norm's backward
// adds its input gradient. Gradients accumulate into the "gradients" block (zero_gradients clears it).
//
// bf16 mixed precision (decoder_plan_options::bf16_weights): every product reads bf16 operands and accumulates
// and writes f32, as tl's CPU bf16 path (docs/precision.md); the weights are converted once per optimizer step
// (parameters.bf16), the activation operands right before each product (scratch.bf16.a, .b; attention's into
// attention.bf16.*). Everything else,
// master weights, gradients and moments included, stays f32.
//
// Biases (q, k, v: Qwen2) are added after their products and their gradients are column sums. LoRA
// (decoder_plan_options::lora): each targeted projection adds scale (x A^T) B^T, with x A^T kept for the backward;
// the base is frozen (no dW, no norm or embedding gradients), the adapter block ("adapter", peft's names) trains.
// LoRA dropout (lora.dropout > 0): in a training step (forward_backward, not loss()) each adapter reads dropout(x),
// tl::decoder's masks bit for bit (dropout_row.hpp: the same seed, training-forward count, layer, projection and
// element), drawn into scratch.lora.x and drawn again in the backward for dA and the masked input gradient.
//
// Mixture of experts (model_config::moe, Mixtral's block of ops/moe.hpp): the MLP of every layer is a router and E
// SwiGLU experts, of which each token takes top_k. Deterministic dispatch: the (token, choice) slots are grouped by
// expert with a stable counting sort on the device (moe_kernels.hpp), the tokens' rows gathered into expert-contiguous
// buffers sized for every slot (N K rows: any routing fits), one product per expert over its contiguous rows (m = its
// count, read back to the host: E + 1 ints per layer, the one synchronisation the experts add), and a combine where
// each token sums its K weighted rows in a fixed order (no atomics). The load-balancing loss as tl::decoder's, pooled
// or per layer, in the loss and in the router's gradient. With LoRA (attention only, as tl::decoder; the plan refuses
// the rest) the router and the experts are frozen: their backward gives d normed2 only (the balancing loss's gradient
// included, through the router's input gradient), no weight gradients.
// Data parallel (set_global_balance): between the forward and the loss, the balancing statistics of every balance
// (slot counts, router probability sums, rows: tl::decoder::balance_statistics()'s packing) go to a hook that sums
// them over the ranks, so the balancing loss and its gradient are the global batch's, as tl::decoder's on N ranks.
//
// After the step, the optimizer over the flat blocks: the global gradient norm and clipping (optim/clip.hpp's
// rule) and AdamW (optim/adamw.hpp's update and decay rule: every parameter but the norms decays, the embedding
// unless decay_embeddings is off), one launch per parameter tensor.
//
// Ex is an executor: upload/download/zero over its memory, matmul (gpu::matmul_args), and the ops of
// device.hpp by the same names with the stream left out.
#pragma once

#include <tinylm/cuda/attention_products.hpp>
#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/decoder_plan.hpp>
#include <tinylm/cuda/flat_step.hpp>
#include <tinylm/cuda/lora_dropout.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/row_math.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/rope.hpp>
#include <tinylm/optim/adamw.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl::gpu {

template <class Ex>
class decoder_step : public flat_step<Ex> {
    using base_t = flat_step<Ex>;
    using base_t::buf, base_t::f, base_t::linear, base_t::linear_dx, base_t::linear_dw, base_t::operand, base_t::run,
        base_t::ex_, base_t::plan_;
    template <class T>
    T* as(const std::string& name) const { // (a using-declaration does not make a dependent base's template usable)
        return base_t::template as<T>(name);
    }

public:
    // base: the start of plan.bytes() of Ex's memory (a device_arena's, or a host buffer for cpu_ops).
    decoder_step(const model_config& c, const decoder_plan_options& o, const arena_plan& plan, std::byte* base, Ex& ex)
        : base_t(plan, base, ex, o.bf16_weights), c_(c), o_(o), lora_(o.lora.rank > 0), moe_(c.moe.n_experts > 0),
          nf4_(lora_ && o.lora.quantized_base), layout_(decoder_parameter_layout(c, nf4_)),
          adapter_layout_(gpu::adapter_layout(c, o.lora)),
          products_(ex, this->products_scratch(o.attention, o.attention_chunk(), o.attention_query_block)) {
        if (nf4_) nf4_layout_ = nf4_layout(c), nf4_offsets_.assign(nf4_layout_.size(), 0.0f);
        if (moe_) {
            moe_offsets_.assign(std::size_t(c.n_layers), std::vector<std::int32_t>(std::size_t(c.moe.n_experts) + 1));
            moe_counts_.assign(std::size_t(moe_balances() * c.moe.n_experts), 0.0);
            // The host's per-step buffers, sized once: no allocation inside a step.
            moe_layer_counts_.assign(std::size_t(c.n_layers * c.moe.n_experts), 0);
            moe_chosen_.assign(std::size_t(o.batch * o.time * c.moe.top_k), 0);
            moe_sums_.assign(moe_counts_.size(), 0.0);
            moe_aux_.assign(std::size_t(c.n_layers * c.moe.n_experts), 0.0);
            moe_rows_.assign(std::size_t(moe_balances()), 0.0);
            balance_statistics_.assign(std::size_t(moe_balances() * (2 * c.moe.n_experts + 1)), 0.0);
        }
        n_ = o.batch * o.time;
        balance_tokens_ = n_;
        rows_ = std::min<long long>(n_, o.logits_rows);
        // RoPE tables once, as the CPU decoder builds them (rope_table in f32).
        const std::size_t half = std::size_t(c.head_dim() / 2);
        std::vector<float> cos(std::size_t(o.time) * half), sin(cos.size());
        const rope_scaling_config& r = c.rope_scaling;
        rope_table<float>({cos.data(), {o.time, index_t(half)}}, {sin.data(), {o.time, index_t(half)}}, c.rope_theta, 0,
                          {r.factor, r.low_freq_factor, r.high_freq_factor, double(r.original_max_position)});
        ex_.upload(buf("rope.cos"), cos.data(), cos.size() * sizeof(float));
        ex_.upload(buf("rope.sin"), sin.data(), sin.size() * sizeof(float));
    }

    // The base's parameters ("parameters": Hugging Face names), the adapter's with LoRA ("adapter": peft's names),
    // and those that train (the base's, or the adapter's with LoRA: "gradients", "adam.m", "adam.v" follow them).
    const std::vector<parameter_slice>& layout() const { return layout_; }
    const std::vector<parameter_slice>& adapter_layout() const { return adapter_layout_; }
    const std::vector<parameter_slice>& trainable_layout() const { return lora_ ? adapter_layout_ : layout_; }
    // The parameter (or the gradient of a trainable one) named as in Hugging Face's and peft's files, in Ex's
    // memory.
    float* parameter(const std::string& name) {
        if (float* p = find(layout_, "parameters", name)) return p;
        if (float* p = find(adapter_layout_, "adapter", name)) return p;
        fail("decoder_step: no parameter named '" + name + "'");
    }
    float* gradient(const std::string& name) {
        if (float* g = find(trainable_layout(), "gradients", name)) return g;
        fail("decoder_step: no trainable parameter named '" + name + "'" + (lora_ ? " (the base is frozen)" : ""));
    }
    // QLoRA: the NF4 projection weight `name` (Hugging Face's, e.g. model.layers.0.mlp.up_proj.weight), as
    // tl::decoder holds it (quantized_weight: double quantisation, the shape of the projection).
    void set_quantized_weight(const std::string& name, const nf4_tensor& q) {
        for (std::size_t i = 0; i < nf4_layout_.size(); ++i) {
            if (nf4_layout_[i].name != name) continue;
            this->upload_nf4(nf4_layout_[i], q, "decoder_step");
            nf4_offsets_[i] = q.offset;
            return;
        }
        fail("decoder_step: no NF4 weight named '" + name + "'" + (nf4_ ? "" : " (the base is not quantised)"));
    }
    // After writing parameters directly (a checkpoint, a test): their bf16 copy is made again before the next
    // products. adamw_step does this itself.
    void parameters_changed() { base_stale_ = adapter_stale_ = true; }
    // One AdamW step at learning rate lr (the step count is kept here, as tl::adamw keeps its own).
    // The decay rule is tl::adamw's by kind, here by name: never norms or biases, the embedding unless
    // decay_embeddings is off, every other matrix (LoRA's too).
    void adamw_step(double lr, const adamw_options& o) {
        this->adamw_over(trainable_layout(), lora_ ? "adapter" : "parameters", lr, o, [&](const std::string& name) {
            const bool is_norm = name.find("norm") != std::string::npos, is_bias = name.ends_with(".bias");
            const bool is_embedding = name == "model.embed_tokens.weight";
            return adamw_rule{true, !is_norm && !is_bias && (!is_embedding || o.decay_embeddings)};
        });
        (lora_ ? adapter_stale_ : base_stale_) = true;
    }

    // AdamW's moments of the parameter named (Ex's memory): with adamw_steps(), what a checkpoint saves and restores
    // (gpu::device_adamw, cuda/device_decoder.hpp).
    float* first_moment(const std::string& name) { return moment("adam.m", name); }
    float* second_moment(const std::string& name) { return moment("adam.v", name); }

    // LoRA dropout's state, as tl::decoder's (model/projection_table.hpp), which a checkpoint saves and restores: the
    // masks' key (by default tl::decoder(seed 0)'s), the training forwards so far (forward_backward counts them
    // before its forward, loss() does not), and the rows of the global batch before this process's (data parallel).
    std::uint64_t dropout_seed() const { return dropout_.seed; }
    void set_dropout_seed(std::uint64_t s) { dropout_.seed = s; }
    std::uint64_t dropout_calls() const { return dropout_.calls; }
    void set_dropout_calls(std::uint64_t n) { dropout_.calls = n; }
    void set_dropout_row_offset(long long rows) { dropout_.row0 = rows; }

    // Validation: the mean loss over counted targets, forward and the head's loss only (no gradient is touched).
    // Arguments as forward_backward's. rows (experts only): the first `rows` sequences are the batch, the others
    // padding (ignored targets) whose routing stays out of the balancing loss, as tl::decoder on `rows` sequences.
    double loss(const std::int32_t* ids, const std::int32_t* targets, const std::int64_t* documents = nullptr,
                long long rows = -1) {
        check(rows <= o_.batch, "decoder_step::loss: more rows than the batch");
        for (long long i = 0; i < n_; ++i)
            check(ids[i] >= 0 && ids[i] < c_.vocab_size, [&] {
                return "decoder_step::loss: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                       " is outside the vocabulary of " + std::to_string(c_.vocab_size);
            });
        const long long count = upload_inputs(ids, targets, documents);
        refresh_bf16_weights();
        training_ = false; // no dropout, no count
        balance_tokens_ = rows < 0 ? n_ : rows * o_.time;
        forward();
        balance_tokens_ = n_;
        const double loss_sum = head(count, false);
        return (count > 0 ? loss_sum / double(count) : 0.0) + c_.moe.aux_loss_weight * aux_loss_;
    }

    // ids, targets (batch * time, host memory; targets -100 are ignored): the mean loss over counted targets (plus
    // moe.aux_loss_weight times the experts' balancing loss, as tl::decoder::loss), and the gradients of both, times
    // gradient_scale (1 / micro-batches with gradient accumulation), added to "gradients". documents (batch * time,
    // host memory, optional): the doc_start of packed rows as tl::decoder takes it; attention stays inside each, RoPE
    // positions restart at each.
    double forward_backward(const std::int32_t* ids, const std::int32_t* targets,
                            const std::int64_t* documents = nullptr, double gradient_scale = 1.0) {
        const int d = c_.d_model;
        const token_groups groups = group_positions_by_token(ids, n_, c_.vocab_size); // checks the ids
        ex_.upload(buf("embedding.tokens"), groups.tokens.data(), groups.tokens.size() * sizeof(std::int32_t));
        ex_.upload(buf("embedding.offsets"), groups.offsets.data(), groups.offsets.size() * sizeof(std::int32_t));
        ex_.upload(buf("embedding.positions"), groups.positions.data(), groups.positions.size() * sizeof(std::int32_t));
        const long long count = upload_inputs(ids, targets, documents);

        refresh_bf16_weights();
        if (lora_ && o_.lora.dropout > 0) ++dropout_.calls; // as tl::decoder counts its training forwards
        training_ = true;
        forward();
        if (moe_ && sum_balance_) use_global_balance();
        const double loss_sum = head(count, true, gradient_scale);
        aux_gradient_scale_ = moe_ && sum_balance_ ? balance_gradient_scale_ : gradient_scale;
        backward();
        training_ = false;
        if (!lora_)
            ex_.embedding_backward(gradient("model.embed_tokens.weight"), as<std::int32_t>("embedding.tokens"),
                                   as<std::int32_t>("embedding.offsets"), as<std::int32_t>("embedding.positions"),
                                   (long long)groups.tokens.size(), f("scratch.dx"), d);
        return (count > 0 ? loss_sum / double(count) : 0.0) + c_.moe.aux_loss_weight * aux_loss_;
    }

    // Experts, data parallel (tl::trainer on several ranks): after each training forward (forward_backward; loss()
    // stays the call's own batch), `sum` adds the balancing statistics of every rank in place (packed per balance
    // as tl::decoder::balance_statistics(): the slot counts per expert, the router probability sums per expert, the
    // rows), so that the loss returned, aux_loss() and the balancing gradient are the global batch's; that gradient
    // is then weighted by `gradient_scale` (the trainer's 1 / micro-batches: each rank's rows take their part of the
    // one global loss, as tl::decoder::backward's aux_scale), not by forward_backward's. An empty `sum`: the
    // balancing loss of the step's own batch, weighted as its cross-entropy (one process).
    void set_global_balance(std::function<void(std::span<double>)> sum, double gradient_scale) {
        sum_balance_ = std::move(sum);
        balance_gradient_scale_ = gradient_scale;
    }
    // Experts: the balancing loss of the last forward (unweighted, tl::decoder::aux_loss's), and the slots each expert
    // of `layer` got in it (tl::decoder::expert_counts's): the real rows' only after a padded loss(..., rows), as
    // tl::decoder evaluating only those rows.
    double aux_loss() const { return aux_loss_; }
    std::vector<long long> expert_counts(int layer) const {
        check(moe_ && layer >= 0 && layer < c_.n_layers, "decoder_step::expert_counts: experts and a layer index");
        const auto first = moe_layer_counts_.begin() + std::ptrdiff_t(layer) * c_.moe.n_experts;
        return {first, first + c_.moe.n_experts};
    }

private:
    // ids, targets and (optional) documents uploaded, with RoPE's position of each token in its document; returns
    // the number of counted targets.
    long long upload_inputs(const std::int32_t* ids, const std::int32_t* targets, const std::int64_t* documents) {
        long long count = 0;
        for (long long i = 0; i < n_; ++i)
            count += targets[i] >= 0;
        ex_.upload(buf("ids"), ids, std::size_t(n_) * sizeof(std::int32_t));
        ex_.upload(buf("targets"), targets, std::size_t(n_) * sizeof(std::int32_t));
        documents_ = documents != nullptr;
        if (documents_) {
            check_document_starts(cview<index_t>{documents, {o_.batch, o_.time}}, "decoder_step");
            std::vector<std::int64_t> in_document(static_cast<std::size_t>(n_));
            for (long long i = 0; i < n_; ++i)
                in_document[std::size_t(i)] = i % o_.time - documents[i];
            ex_.upload(buf("doc_start"), documents, std::size_t(n_) * sizeof(std::int64_t));
            ex_.upload(buf("positions"), in_document.data(), in_document.size() * sizeof(std::int64_t));
        }
        return count;
    }
    // Layer l's activation `name`: its own buffer, or with checkpointing the shared work.* one (all but x, the
    // layer's input, which every layer keeps).
    float* layer(int l, std::string_view name) const {
        if (o_.checkpointing && name != "x") return f("work." + std::string(name));
        return f("layer." + std::to_string(l) + "." + std::string(name));
    }
    float* find(const std::vector<parameter_slice>& layout, const char* block, const std::string& name) {
        for (const parameter_slice& s : layout)
            if (s.name == name) return f(block) + s.offset;
        return nullptr;
    }
    // The weights' bf16 copies, once per optimizer step (or after parameters_changed), not per product.
    void refresh_bf16_weights() {
        if (!o_.bf16_weights) return;
        if (base_stale_) convert_block("parameters");
        if (lora_ && adapter_stale_) convert_block("adapter");
        base_stale_ = adapter_stale_ = false;
    }
    float* moment(const char* block, const std::string& name) {
        if (float* m = find(trainable_layout(), block, name)) return m;
        fail("decoder_step: no trainable parameter named '" + name + "' has AdamW moments");
    }
    void convert_block(const std::string& block) {
        ex_.to_bf16(as<std::uint16_t>(block + ".bf16"), f(block),
                    (long long)plan_.at(block).bytes / (long long)sizeof(float));
    }
    float* weight(int l, const char* name) { return parameter("model.layers." + std::to_string(l) + "." + name); }
    // A norm's weight gradient, or null when the base is frozen (LoRA): the kernels then skip it.
    float* norm_gradient(const std::string& name) { return lora_ ? nullptr : gradient(name); }
    float* head_weight() { return parameter(c_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"); }
    float* head_gradient() { return gradient(c_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"); }

    // A weight's operand: itself, or its place in the bf16 copy of its block (the base's or the adapter's).
    const void* weight_operand(const float* w) {
        if (!o_.bf16_weights) return w;
        const bool adapter = lora_ && w >= f("adapter") && w < f("adapter") + plan_.at("adapter").bytes / sizeof(float);
        return adapter ? as<std::uint16_t>("adapter.bf16") + (w - f("adapter"))
                       : as<std::uint16_t>("parameters.bf16") + (w - f("parameters"));
    }
    // ---- a block's projections: y = x W^T (+ b) (+ scale (x A^T) B^T with LoRA) ----
    // Projection p's weight as a product's operand: its place in the base (or the base's bf16 copy), or with QLoRA
    // its NF4 form dequantised into scratch.nf4 (f32 or bf16, as the products read), right before its product.
    const void* projection_weight(int l, proj p) {
        if (!nf4_) return weight_operand(parameter(module(l, p) + ".weight"));
        const std::size_t i = std::size_t(l) * lora_target_count + std::size_t(p);
        return this->dequantized_nf4(this->nf4_view(nf4_layout_[i], nf4_offsets_[i]));
    }
    std::string module(int l, proj p) const {
        return "model.layers." + std::to_string(l) + "." + projection_modules[std::size_t(p)];
    }
    bool has_bias(proj p) const { return c_.qkv_bias && (p == proj::q || p == proj::k || p == proj::v); }
    bool targeted(proj p) const { return lora_ && ((o_.lora.targets >> int(p)) & 1u) != 0; }
    // Whether the backward of p reads its input (the weight's gradient, or the adapter's A).
    bool reads_input(proj p) const { return !lora_ || targeted(p); }
    std::string adapter_buffer(proj p) const { return std::string("lora.") + lora_names[int(p)]; }
    // y (rows, out) of projection p of layer l from x (an operand, rows x in).
    void project(int l, proj p, float* y, const void* x) {
        const auto [in, out] = projection_shape(c_, p);
        const std::string m = module(l, p);
        linear(y, x, projection_weight(l, p), n_, (long long)out, (long long)in);
        if (has_bias(p)) ex_.bias_add(y, parameter(m + ".bias"), n_, int(out));
        if (!targeted(p)) return;
        const long long r = o_.lora.rank;
        float* u = adapter_input(l, p, x);
        matmul_args h; // y += scale u B^T
        h.trans_b = true, h.m = n_, h.n = (long long)out, h.k = r, h.alpha = lora_scale();
        h.a = operand(u, n_ * r, "scratch.bf16.lora"), h.lda = r;
        h.b = weight_operand(parameter(m + ".lora_B.weight")), h.ldb = r, h.beta = 1, h.c = y, h.ldc = (long long)out;
        run(h);
    }
    // u (rows, r) = x A^T of LoRA's projection p, kept for the backward.
    float* adapter_input(int l, proj p, const void* x) {
        const long long in = (long long)projection_shape(c_, p).in, r = o_.lora.rank;
        float* u = layer(l, adapter_buffer(p));
        if (dropping()) x = dropped_input(l, p);
        matmul_args g;
        g.trans_b = true, g.m = n_, g.n = r, g.k = in, g.a = x, g.lda = in;
        g.b = weight_operand(parameter(module(l, p) + ".lora_A.weight")), g.ldb = in, g.c = u, g.ldc = r;
        run(g);
        return u;
    }
    // dx (rows, in) = dy W (+ scale dy B A) + beta dx for projection p of layer l; and the gradients of what trains:
    // the weight and bias (a trained base: dW from dy and the input's operand x) or the adapter's A and B. dy: f32
    // (a bias's column sums) and its operand; x: the input's operand, or null when !reads_input(p).
    void project_backward(int l, proj p, float* dx, float beta, const float* dy, const void* dy_operand,
                          const void* x) {
        const auto [in, out] = projection_shape(c_, p);
        const std::string m = module(l, p);
        linear_dx(dx, dy_operand, projection_weight(l, p), n_, (long long)out, (long long)in, beta);
        if (!lora_) {
            linear_dw(gradient(m + ".weight"), dy_operand, x, n_, (long long)out, (long long)in);
            if (has_bias(p)) ex_.bias_backward(gradient(m + ".bias"), dy, n_, int(out));
        }
        if (!targeted(p)) return;
        const long long r = o_.lora.rank;
        const float s = lora_scale();
        float* t = f("scratch.lora.t");
        matmul_args g; // t (rows, r) = dy B
        g.m = n_, g.n = r, g.k = (long long)out, g.a = dy_operand, g.lda = (long long)out;
        g.b = weight_operand(parameter(m + ".lora_B.weight")), g.ldb = r, g.c = t, g.ldc = r;
        run(g);
        matmul_args db; // dB (out, r) += scale dy^T u
        db.trans_a = true, db.m = (long long)out, db.n = r, db.k = n_, db.alpha = s, db.a = dy_operand;
        db.lda = (long long)out, db.b = operand(layer(l, adapter_buffer(p)), n_ * r, "scratch.bf16.lora"), db.ldb = r;
        db.beta = 1, db.c = gradient(m + ".lora_B.weight"), db.ldc = r;
        run(db);
        const void* t_operand = operand(t, n_ * r, "scratch.bf16.lora"); // u's copy is done
        matmul_args da;                                                  // dA (r, in) += scale t^T x
        da.trans_a = true, da.m = r, da.n = (long long)in, da.k = n_, da.alpha = s, da.a = t_operand, da.lda = r;
        da.b = dropping() ? dropped_input(l, p) : x, da.ldb = (long long)in, da.beta = 1;
        da.c = gradient(m + ".lora_A.weight"), da.ldc = (long long)in;
        run(da);
        matmul_args dxa; // dx += scale t A (with dropout: its masked form, through scratch.lora.x, read by da above)
        dxa.m = n_, dxa.n = (long long)in, dxa.k = r, dxa.alpha = s, dxa.a = t_operand, dxa.lda = r;
        dxa.b = weight_operand(parameter(m + ".lora_A.weight")), dxa.ldb = (long long)in, dxa.beta = 1, dxa.c = dx;
        dxa.ldc = (long long)in;
        if (dropping()) dxa.beta = 0, dxa.c = f("scratch.lora.x");
        run(dxa);
        if (dropping()) ex_.dropout_backward(dx, f("scratch.lora.x"), n_ * (long long)in, dropout_mask_of(l, p));
    }
    // ---- LoRA dropout ----
    bool dropping() const { return training_ && lora_ && o_.lora.dropout > 0; }
    // The f32 input of projection p of layer l (its saved activation, or the work buffer a recomputation filled).
    const float* projection_input(int l, proj p) const {
        switch (p) {
        case proj::q:
        case proj::k:
        case proj::v:
            return layer(l, "normed1");
        case proj::o:
            return layer(l, "attn");
        case proj::gate:
        case proj::up:
            return layer(l, "normed2");
        case proj::down:
            break;
        }
        return layer(l, "hidden");
    }
    // tl::projection's mask of projection p of layer l in this training forward.
    dropout_mask dropout_mask_of(int l, proj p) const {
        return dropout_.mask(o_.lora.dropout, c_.n_layers, l, p, projection_shape(c_, p).in);
    }
    // dropout(input of p) into scratch.lora.x; returns its operand (bf16 products: its copy in scratch.bf16.lora_x).
    const void* dropped_input(int l, proj p) {
        const long long count = n_ * (long long)projection_shape(c_, p).in;
        ex_.dropout_forward(f("scratch.lora.x"), projection_input(l, p), count, dropout_mask_of(l, p));
        return operand(f("scratch.lora.x"), count, "scratch.bf16.lora_x");
    }
    float lora_scale() const { return o_.lora.alpha / float(o_.lora.rank); }

    const std::int64_t* doc_start() const { return documents_ ? as<std::int64_t>("doc_start") : nullptr; }
    const std::int64_t* positions() const { return documents_ ? as<std::int64_t>("positions") : nullptr; }
    attention_dims dims(int l) const {
        return {o_.batch, o_.time, c_.n_heads, c_.n_kv_heads, c_.head_dim(), c_.layer_window(l)};
    }

    // Attention: attention.cu's row kernels, through products (attention_products.hpp), or fused
    // (flash_attention.cu).
    attention_masks masks() const { return attention_masks(doc_start()); }
    void attention_forward(int l) {
        if (o_.attention == attention_path::products)
            return products_.forward(layer(l, "attn"), layer(l, "lse"), layer(l, "q"), layer(l, "k"), layer(l, "v"),
                                     masks(), dims(l));
        if (o_.attention == attention_path::fused)
            return ex_.attention_fused_forward(layer(l, "attn"), layer(l, "lse"), layer(l, "q"), layer(l, "k"),
                                               layer(l, "v"), masks(), dims(l));
        ex_.attention_forward(layer(l, "attn"), layer(l, "lse"), layer(l, "q"), layer(l, "k"), layer(l, "v"), masks(),
                              dims(l));
    }
    // d q, k, v of layer l from d attn (scratch.dattn), into scratch.dq, .dk, .dv.
    void attention_backward(int l) {
        if (o_.attention == attention_path::products)
            return products_.backward(f("scratch.dq"), f("scratch.dk"), f("scratch.dv"), f("scratch.delta"),
                                      f("scratch.dattn"), layer(l, "q"), layer(l, "k"), layer(l, "v"), layer(l, "attn"),
                                      layer(l, "lse"), masks(), dims(l));
        if (o_.attention == attention_path::fused)
            return ex_.attention_fused_backward(f("scratch.dq"), f("scratch.dk"), f("scratch.dv"), f("scratch.delta"),
                                                f("scratch.dattn"), layer(l, "q"), layer(l, "k"), layer(l, "v"),
                                                layer(l, "attn"), layer(l, "lse"), masks(), dims(l));
        ex_.attention_backward(f("scratch.dq"), f("scratch.dk"), f("scratch.dv"), f("scratch.delta"),
                               f("scratch.dattn"), layer(l, "q"), layer(l, "k"), layer(l, "v"), layer(l, "attn"),
                               layer(l, "lse"), masks(), dims(l));
    }

    void forward() {
        const long long n = n_;
        const int d = c_.d_model;
        ex_.embedding_forward(layer(0, "x"), as<std::int32_t>("ids"), parameter("model.embed_tokens.weight"), n, d);
        ex_.rmsnorm_forward(layer(0, "normed1"), layer(0, "rstd1"), layer(0, "x"), weight(0, "input_layernorm.weight"),
                            n, d, float(c_.norm_eps));
        if (moe_) moe_start_forward();
        for (int l = 0; l < c_.n_layers; ++l)
            layer_forward(l, true);
        if (moe_) moe_finish_forward();
    }
    // Layer l from its normed input (normed1) to the SwiGLU output; with `onwards`, the down projection and the
    // residual add fused with the next norm too (the next layer's x and normed1, or the final norm's).
    void layer_forward(int l, bool onwards) {
        const long long n = n_;
        const int d = c_.d_model, q = c_.q_width(), ff = c_.d_ff, L = c_.n_layers;
        const float eps = float(c_.norm_eps);
        const void* normed1 = operand(layer(l, "normed1"), n * d, "scratch.bf16.a");
        const bool qk_norm = c_.qk_norm; // Qwen3: q and k projected into q_in, k_in, then normed per head
        project(l, proj::q, layer(l, qk_norm ? "q_in" : "q"), normed1);
        project(l, proj::k, layer(l, qk_norm ? "k_in" : "k"), normed1);
        project(l, proj::v, layer(l, "v"), normed1);
        if (qk_norm) {
            ex_.rmsnorm_forward(layer(l, "q"), layer(l, "rstd_q"), layer(l, "q_in"),
                                weight(l, "self_attn.q_norm.weight"), n * c_.n_heads, c_.head_dim(), eps);
            ex_.rmsnorm_forward(layer(l, "k"), layer(l, "rstd_k"), layer(l, "k_in"),
                                weight(l, "self_attn.k_norm.weight"), n * c_.n_kv_heads, c_.head_dim(), eps);
        }
        ex_.rope(layer(l, "q"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_heads, c_.head_dim(),
                 1.0);
        ex_.rope(layer(l, "k"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_kv_heads,
                 c_.head_dim(), 1.0);
        attention_forward(l);
        project(l, proj::o, f("scratch.tmp"), operand(layer(l, "attn"), n * q, "scratch.bf16.a"));
        ex_.residual_rmsnorm_forward(layer(l, "resid"), layer(l, "normed2"), layer(l, "rstd2"), layer(l, "x"),
                                     f("scratch.tmp"), weight(l, "post_attention_layernorm.weight"), n, d, eps);
        if (moe_) {
            moe_forward(l, onwards); // with onwards, the block's output in scratch.tmp
            if (!onwards) return;
        } else {
            const void* normed2 = operand(layer(l, "normed2"), n * d, "scratch.bf16.a");
            project(l, proj::gate, layer(l, "gate"), normed2);
            project(l, proj::up, layer(l, "up"), normed2);
            ex_.swiglu_forward(layer(l, "hidden"), layer(l, "gate"), layer(l, "up"), n * ff);
            if (!onwards) return;
            project(l, proj::down, f("scratch.tmp"), operand(layer(l, "hidden"), n * ff, "scratch.bf16.a"));
        }
        if (l + 1 < L)
            ex_.residual_rmsnorm_forward(layer(l + 1, "x"), layer(l + 1, "normed1"), layer(l + 1, "rstd1"),
                                         layer(l, "resid"), f("scratch.tmp"), weight(l + 1, "input_layernorm.weight"),
                                         n, d, eps);
        else
            ex_.residual_rmsnorm_forward(f("final.x"), f("final.normed"), f("final.rstd"), layer(l, "resid"),
                                         f("scratch.tmp"), parameter("model.norm.weight"), n, d, eps);
    }
    // Checkpointing: layer l's activations again, from its kept input (the norm that the forward fused with the
    // residual add, alone here: the same arithmetic on the same values).
    void recompute(int l) {
        ex_.rmsnorm_forward(layer(l, "normed1"), layer(l, "rstd1"), layer(l, "x"), weight(l, "input_layernorm.weight"),
                            n_, c_.d_model, float(c_.norm_eps));
        layer_forward(l, false);
        if (targeted(proj::down)) // the one adapter input past SwiGLU
            adapter_input(l, proj::down, operand(layer(l, "hidden"), n_ * c_.d_ff, "scratch.bf16.a"));
    }

    // The LM head and the loss, forward and backward, a chunk of rows at a time: the sum of the counted rows'
    // losses; d final.normed in scratch.dnormed (with_backward; without it, the loss alone: validation).
    double head(long long count, bool with_backward = true, double gradient_scale = 1.0) {
        const long long n = n_, v = c_.vocab_size;
        const int d = c_.d_model;
        const float scale = count > 0 ? float(gradient_scale / double(count)) : 0.0f;
        for (long long r0 = 0; r0 < n; r0 += rows_) {
            const long long rows = std::min(rows_, n - r0);
            const float* h = f("final.normed") + r0 * d;
            const void* h16 = operand(h, rows * d, "scratch.bf16.b"); // for the logits and the head's dW
            linear(f("logits"), h16, weight_operand(head_weight()), rows, v, d);
            ex_.softmax_xent_forward(f("xent.loss") + r0, f("xent.lse") + r0, f("logits"),
                                     as<std::int32_t>("targets") + r0, rows, v);
            if (!with_backward) continue;
            ex_.softmax_xent_backward(f("logits"), f("xent.lse") + r0, as<std::int32_t>("targets") + r0, rows, v,
                                      scale);
            const void* dlogits = operand(f("logits"), rows * v, "scratch.bf16.a");
            linear_dx(f("scratch.dnormed") + r0 * d, dlogits, weight_operand(head_weight()), rows, v, d, 0.0f);
            if (!lora_) linear_dw(head_gradient(), dlogits, h16, rows, v, d); // frozen under an adapter
        }
        std::vector<float> loss(static_cast<std::size_t>(n));
        ex_.download(loss.data(), f("xent.loss"), loss.size() * sizeof(float));
        double sum = 0;
        for (float x : loss)
            sum += double(x);
        return sum;
    }

    // The dense MLP's backward of layer l: dx (scratch.dx) is d(resid + mlp out); the down projection's input
    // gradient, SwiGLU, then gate and up into d normed2 (scratch.dnormed).
    void dense_mlp_backward(int l) {
        const long long n = n_;
        const int d = c_.d_model, ff = c_.d_ff;
        // The input's operand of a projection whose backward reads it (into scratch.bf16.b), else null.
        auto input = [&](bool read, const float* x, long long count) {
            return read ? operand(x, count, "scratch.bf16.b") : nullptr;
        };
        float* dx = f("scratch.dx");
        project_backward(l, proj::down, f("scratch.dhidden"), 0.0f, dx, operand(dx, n * d, "scratch.bf16.a"),
                         input(reads_input(proj::down), layer(l, "hidden"), n * ff));
        ex_.swiglu_backward(f("scratch.dgate"), f("scratch.dup"), f("scratch.dhidden"), layer(l, "gate"),
                            layer(l, "up"), n * ff);
        const void* normed2 = input(reads_input(proj::gate) || reads_input(proj::up), layer(l, "normed2"), n * d);
        project_backward(l, proj::gate, f("scratch.dnormed"), 0.0f, f("scratch.dgate"),
                         operand(f("scratch.dgate"), n * ff, "scratch.bf16.a"), normed2);
        project_backward(l, proj::up, f("scratch.dnormed"), 1.0f, f("scratch.dup"),
                         operand(f("scratch.dup"), n * ff, "scratch.bf16.a"), normed2);
    }

    // QK-norm's backward for q or k (`which`) of layer l: d(its input) into `dx` from d(its output) `dy`, the norm
    // weight's gradient accumulated (none under an adapter: frozen, as every norm).
    void qk_norm_backward(int l, const char* dx, const char* dy, const char* which, int heads) {
        const std::string w = "model.layers." + std::to_string(l) + ".self_attn." + which + "_norm.weight";
        const long long rows = n_ * heads;
        ex_.zero(f(dx), std::size_t(rows * c_.head_dim()) * sizeof(float));
        ex_.residual_rmsnorm_backward(f(dx), norm_gradient(w), f(dy), layer(l, std::string(which) + "_in"),
                                      parameter(w), layer(l, std::string("rstd_") + which), rows, c_.head_dim());
    }

    void backward() {
        const long long n = n_;
        const int d = c_.d_model, q = c_.q_width(), L = c_.n_layers;
        const std::string layers = "model.layers.";
        float* dx = f("scratch.dx");
        ex_.zero(dx, std::size_t(n * d) * sizeof(float));
        ex_.residual_rmsnorm_backward(dx, norm_gradient("model.norm.weight"), f("scratch.dnormed"), f("final.x"),
                                      parameter("model.norm.weight"), f("final.rstd"), n, d);
        // The input's operand of a projection whose backward reads it (into scratch.bf16.b), else null.
        auto input = [&](bool read, const float* x, long long count) {
            return read ? operand(x, count, "scratch.bf16.b") : nullptr;
        };
        if (moe_) moe_start_backward();
        for (int l = L - 1; l >= 0; --l) {
            if (o_.checkpointing && l < L - 1) recompute(l); // the last layer's are still in the work buffers
            const std::string at = layers + std::to_string(l) + ".";
            // MLP (dense or experts): d normed2 into scratch.dnormed.
            if (moe_)
                moe_backward(l);
            else
                dense_mlp_backward(l);
            ex_.residual_rmsnorm_backward(dx, norm_gradient(at + "post_attention_layernorm.weight"),
                                          f("scratch.dnormed"), layer(l, "resid"),
                                          parameter(at + "post_attention_layernorm.weight"), layer(l, "rstd2"), n, d);
            // Attention: dx is now d resid = d(x_l + attention out).
            project_backward(l, proj::o, f("scratch.dattn"), 0.0f, dx, operand(dx, n * d, "scratch.bf16.a"),
                             input(reads_input(proj::o), layer(l, "attn"), n * q));
            attention_backward(l);
            ex_.rope(f("scratch.dq"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_heads,
                     c_.head_dim(), -1.0);
            ex_.rope(f("scratch.dk"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_kv_heads,
                     c_.head_dim(), -1.0);
            const char *dq = "scratch.dq", *dk = "scratch.dk";
            if (c_.qk_norm) { // through the per-head norms: d q_in, d k_in
                qk_norm_backward(l, "scratch.dq_in", dq, "q", c_.n_heads);
                qk_norm_backward(l, "scratch.dk_in", dk, "k", c_.n_kv_heads);
                dq = "scratch.dq_in", dk = "scratch.dk_in";
            }
            const void* normed1 =
                input(reads_input(proj::q) || reads_input(proj::k) || reads_input(proj::v), layer(l, "normed1"), n * d);
            // d normed1 = the input gradients of q, k and v, in this order
            for (const auto& [p, gradient] : {std::pair{proj::q, dq}, {proj::k, dk}, {proj::v, "scratch.dv"}}) {
                const long long width = (long long)projection_shape(c_, p).out;
                project_backward(l, p, f("scratch.dnormed"), p == proj::q ? 0.0f : 1.0f, f(gradient),
                                 operand(f(gradient), n * width, "scratch.bf16.a"), normed1);
            }
            ex_.residual_rmsnorm_backward(dx, norm_gradient(at + "input_layernorm.weight"), f("scratch.dnormed"),
                                          layer(l, "x"), parameter(at + "input_layernorm.weight"), layer(l, "rstd1"), n,
                                          d);
        }
    }

    // ---- mixture of experts (moe_row.hpp, moe_kernels.hpp; buffers: plan_moe_layer, plan_moe_scratch) ----
    // Per layer: the router's logits (normed2 router^T) and moe_route; moe_dispatch groups the N*K slots by expert
    // and the offsets are read back (E + 1 ints: the host needs each expert's row count for its products); the
    // grouped inputs gathered; per expert, gate_up = x gate_up_e^T and, after SwiGLU over all grouped rows,
    // out = h down_e^T over its contiguous rows (one product per expert with m = its count, empty experts skipped);
    // the combine sums each token's K weighted rows in a fixed order into scratch.tmp. The balancing statistics:
    // the counts from the offsets (host), the probability sums on the device, read back once after the last layer.
    int moe_balances() const { return c_.moe.balance_per_layer ? c_.n_layers : 1; }
    int moe_balance(int l) const { return c_.moe.balance_per_layer ? l : 0; }
    // Rows the balancing statistics of one balance cover (tl's moe_balance::rows).
    double moe_balance_rows() const { return double(balance_tokens_) * (c_.moe.balance_per_layer ? 1 : c_.n_layers); }
    std::int32_t* moe_int(int l, const char* name) const { return reinterpret_cast<std::int32_t*>(layer(l, name)); }
    // Rows [first, ...) of a product's operand (f32, or bf16 with bf16 products).
    const void* operand_at(const void* operand, long long first) const {
        if (o_.bf16_weights) return static_cast<const std::uint16_t*>(operand) + first;
        return static_cast<const float*>(operand) + first;
    }
    void moe_start_forward();
    // Layer l's experts from normed2; with `onwards` (not a recomputation) the output into scratch.tmp and the
    // balancing statistics added.
    void moe_forward(int l, bool onwards);
    // The statistics of the forward (the probability sums read back, the rows of each balance) and its balancing
    // loss.
    void moe_finish_forward();
    // The balancing loss as tl::decoder's (aux = the mean over balances of E sum_e (c_e/R)(s_e/R)).
    void moe_update_aux_loss();
    // Data parallel: the statistics summed over the ranks by the hook (tl::decoder::balance_statistics()'s packing,
    // which tl::trainer sums the same way), then the balancing loss of the global batch.
    void use_global_balance();
    // The balancing loss's gradient per layer and expert, daux E c_e / R^2 (ops/moe.hpp's), into moe.aux; zero
    // when the loss has no weight (the router's kernel then skips it, as tl does). daux carries the balancing
    // loss's own gradient scale (forward_backward's, or set_global_balance's on several ranks).
    void moe_start_backward();
    // Layer l's experts backward: dx (scratch.dx) is d(block out); d normed2 into scratch.dnormed (the router's
    // input gradient, then the experts' added per token), the router's and the experts' weight gradients.
    void moe_backward(int l);

    model_config c_;
    decoder_plan_options o_;
    bool lora_, moe_, nf4_;
    std::vector<parameter_slice> layout_, adapter_layout_;
    std::vector<nf4_slice> nf4_layout_; // QLoRA
    std::vector<float> nf4_offsets_;    // each NF4 weight's mean scale (a host value the kernel takes)
    attention_products<Ex> products_;
    long long n_ = 0, rows_ = 0;
    bool documents_ = false, base_stale_ = true, adapter_stale_ = true;
    // LoRA dropout: tl::decoder(seed 0)'s key by default; training_ while forward_backward runs.
    lora_dropout_state dropout_;
    bool training_ = false;
    // experts: each layer's offsets (E + 1, read back after its dispatch), the balances' slot counts (host), the
    // balancing loss of the last forward, its gradient's daux (nonzero: the router adds it), the balancing loss's
    // gradient scale in the last forward_backward
    std::vector<std::vector<std::int32_t>> moe_offsets_;
    std::vector<double> moe_counts_;
    // experts, the step's host buffers (allocated with the step): the last forward's slots per layer and expert
    // (L x E, the real rows' only: expert_counts), a padded batch's routed experts (N K), the probability sums
    // read back (balances x E) and the balancing gradient's coefficients uploaded (L x E)
    std::vector<long long> moe_layer_counts_;
    std::vector<std::int32_t> moe_chosen_;
    std::vector<double> moe_sums_, moe_aux_;
    // the rows each balance's statistics cover (the global batch's after use_global_balance); their packing for
    // the ranks' sum
    std::vector<double> moe_rows_, balance_statistics_;
    double aux_loss_ = 0, moe_aux_scale_ = 0, aux_gradient_scale_ = 1;
    // data parallel: the sum over the ranks (set_global_balance) and the balancing gradient's scale with it
    std::function<void(std::span<double>)> sum_balance_;
    double balance_gradient_scale_ = 1;
    long long balance_tokens_ = 0; // tokens whose routing enters the balancing loss (all but loss()'s padding)
};

} // namespace tl::gpu

#include <tinylm/cuda/decoder_step_moe.hpp> // the experts' member functions, defined out of the class
