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
// (parameters.bf16), the activation operands right before each product (scratch.bf16.a, .b). Everything else,
// master weights, gradients and moments included, stays f32.
//
// After the step, the optimizer over the flat blocks: the global gradient norm and clipping (optim/clip.hpp's
// rule) and AdamW (optim/adamw.hpp's update and decay rule: every parameter but the norms decays, the embedding
// unless decay_embeddings is off), one launch per parameter tensor.
//
// Ex is an executor: upload/download/zero over its memory, matmul (gpu::matmul_args), and the ops of
// device.hpp by the same names with the stream left out.
#pragma once

#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/decoder_plan.hpp>
#include <tinylm/cuda/row_math.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/rope.hpp>
#include <tinylm/optim/adamw.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tl::gpu {

template <class Ex>
class decoder_step {
public:
    // base: the start of plan.bytes() of Ex's memory (a device_arena's, or a host buffer for cpu_ops).
    decoder_step(const model_config& c, const decoder_plan_options& o, const arena_plan& plan, std::byte* base, Ex& ex)
        : c_(c), o_(o), plan_(plan), base_(base), ex_(ex), layout_(decoder_parameter_layout(c)) {
        n_ = o.batch * o.time;
        rows_ = std::min<long long>(n_, o.logits_rows);
        // RoPE tables once, as the CPU decoder builds them (rope_table in f32).
        const std::size_t half = std::size_t(c.head_dim() / 2);
        std::vector<float> cos(std::size_t(o.time) * half), sin(cos.size());
        const rope_scaling_config& r = c.rope_scaling;
        rope_table<float>({cos.data(), {o.time, index_t(half)}}, {sin.data(), {o.time, index_t(half)}}, c.rope_theta, 0,
                          {r.factor, r.low_freq_factor, r.high_freq_factor, double(r.original_max_position)});
        ex_.upload(buf("rope.cos"), cos.data(), cos.size() * sizeof(float));
        ex_.upload(buf("rope.sin"), sin.data(), sin.size() * sizeof(float));
        ex_.zero(buf("adam.m"), plan_.at("adam.m").bytes); // device memory starts undefined
        ex_.zero(buf("adam.v"), plan_.at("adam.v").bytes);
        weights_stale_ = true;
    }

    const std::vector<parameter_slice>& layout() const { return layout_; }
    // The parameter (or its gradient) named as in Hugging Face's checkpoints, in Ex's memory.
    float* parameter(const std::string& name) { return slice("parameters", name); }
    float* gradient(const std::string& name) { return slice("gradients", name); }
    // After writing parameters directly (a checkpoint, a test): their bf16 copy is made again before the next
    // products. adamw_step does this itself.
    void parameters_changed() { weights_stale_ = true; }
    void zero_gradients() { ex_.zero(buf("gradients"), plan_.at("gradients").bytes); }

    // The L2 norm of all gradients (a deterministic sum in double).
    double gradient_norm() {
        ex_.sum_of_squares(as<double>("grad_norm.total"), as<double>("grad_norm.partials"), f("gradients"),
                           (long long)plan_.at("gradients").bytes / (long long)sizeof(float));
        double total = 0;
        ex_.download(&total, buf("grad_norm.total"), sizeof total);
        return std::sqrt(total);
    }
    // Scales all gradients by max_norm / (norm + 1e-6) when their norm exceeds max_norm; returns the norm before.
    double clip_gradients(double max_norm) {
        const double norm = gradient_norm();
        const float scale = clip_scale(norm, max_norm);
        if (scale != 1.0f)
            ex_.scale_elements(f("gradients"), scale,
                               (long long)plan_.at("gradients").bytes / (long long)sizeof(float));
        return norm;
    }
    // One AdamW step at learning rate lr (the step count is kept here, as tl::adamw keeps its own).
    void adamw_step(double lr, const adamw_options& o) {
        ++adam_t_;
        for (const parameter_slice& s : layout_) {
            const bool is_norm = s.name.find("norm") != std::string::npos;
            const bool is_embedding = s.name == "model.embed_tokens.weight";
            const bool decay = !is_norm && (!is_embedding || o.decay_embeddings);
            ex_.adamw_step(f("parameters") + s.offset, f("gradients") + s.offset, f("adam.m") + s.offset,
                           f("adam.v") + s.offset, (long long)s.size(),
                           adamw_step_coeffs(lr, o.beta1, o.beta2, o.eps, o.weight_decay, adam_t_, decay));
        }
        weights_stale_ = true;
    }

    // AdamW's moments of the parameter named (Ex's memory) and its step count: what a checkpoint saves and restores
    // (gpu::device_adamw, cuda/device_decoder.hpp).
    float* first_moment(const std::string& name) { return slice("adam.m", name); }
    float* second_moment(const std::string& name) { return slice("adam.v", name); }
    long long adamw_steps() const { return adam_t_; }
    void set_adamw_steps(long long t) { adam_t_ = t; }

    // Validation: the mean loss over counted targets, forward and the head's loss only (no gradient is touched).
    // Arguments as forward_backward's.
    double loss(const std::int32_t* ids, const std::int32_t* targets, const std::int64_t* documents = nullptr) {
        const long long n = n_;
        long long count = 0;
        for (long long i = 0; i < n; ++i)
            count += targets[i] >= 0;
        for (long long i = 0; i < n; ++i)
            check(ids[i] >= 0 && ids[i] < c_.vocab_size, [&] {
                return "decoder_step::loss: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                       " is outside the vocabulary of " + std::to_string(c_.vocab_size);
            });
        ex_.upload(buf("ids"), ids, std::size_t(n) * sizeof(std::int32_t));
        ex_.upload(buf("targets"), targets, std::size_t(n) * sizeof(std::int32_t));
        documents_ = documents != nullptr;
        if (documents_) {
            check_document_starts(cview<index_t>{documents, {o_.batch, o_.time}}, "decoder_step::loss");
            std::vector<std::int64_t> in_document(static_cast<std::size_t>(n));
            for (long long i = 0; i < n; ++i)
                in_document[std::size_t(i)] = i % o_.time - documents[i];
            ex_.upload(buf("doc_start"), documents, std::size_t(n) * sizeof(std::int64_t));
            ex_.upload(buf("positions"), in_document.data(), in_document.size() * sizeof(std::int64_t));
        }
        if (o_.bf16_weights && weights_stale_) {
            ex_.to_bf16(as<std::uint16_t>("parameters.bf16"), f("parameters"),
                        (long long)plan_.at("parameters").bytes / (long long)sizeof(float));
            weights_stale_ = false;
        }
        forward();
        const double loss_sum = head(count, false);
        return count > 0 ? loss_sum / double(count) : 0.0;
    }

    // ids, targets (batch * time, host memory; targets -100 are ignored): the mean loss over counted targets,
    // and the gradients of that mean, times gradient_scale (1 / micro-batches with gradient accumulation), added
    // to "gradients". documents (batch * time, host memory, optional): the doc_start of packed rows as tl::decoder
    // takes it; attention stays inside each, RoPE positions restart at each.
    double forward_backward(const std::int32_t* ids, const std::int32_t* targets,
                            const std::int64_t* documents = nullptr, double gradient_scale = 1.0) {
        const long long n = n_, vocab = c_.vocab_size;
        const int d = c_.d_model;
        const token_groups groups = group_positions_by_token(ids, n, vocab);
        long long count = 0;
        for (long long i = 0; i < n; ++i)
            count += targets[i] >= 0;
        ex_.upload(buf("ids"), ids, std::size_t(n) * sizeof(std::int32_t));
        ex_.upload(buf("targets"), targets, std::size_t(n) * sizeof(std::int32_t));
        ex_.upload(buf("embedding.tokens"), groups.tokens.data(), groups.tokens.size() * sizeof(std::int32_t));
        ex_.upload(buf("embedding.offsets"), groups.offsets.data(), groups.offsets.size() * sizeof(std::int32_t));
        ex_.upload(buf("embedding.positions"), groups.positions.data(), groups.positions.size() * sizeof(std::int32_t));
        documents_ = documents != nullptr;
        if (documents_) {
            check_document_starts(cview<index_t>{documents, {o_.batch, o_.time}}, "decoder_step");
            std::vector<std::int64_t> in_document(static_cast<std::size_t>(n)); // RoPE's position of each token
            for (long long i = 0; i < n; ++i)
                in_document[std::size_t(i)] = i % o_.time - documents[i];
            ex_.upload(buf("doc_start"), documents, std::size_t(n) * sizeof(std::int64_t));
            ex_.upload(buf("positions"), in_document.data(), in_document.size() * sizeof(std::int64_t));
        }

        if (o_.bf16_weights && weights_stale_) { // once per optimizer step, not per product
            ex_.to_bf16(as<std::uint16_t>("parameters.bf16"), f("parameters"),
                        (long long)plan_.at("parameters").bytes / (long long)sizeof(float));
            weights_stale_ = false;
        }
        forward();
        const double loss_sum = head(count, true, gradient_scale);
        backward();
        ex_.embedding_backward(gradient("model.embed_tokens.weight"), as<std::int32_t>("embedding.tokens"),
                               as<std::int32_t>("embedding.offsets"), as<std::int32_t>("embedding.positions"),
                               (long long)groups.tokens.size(), f("scratch.dx"), d);
        return count > 0 ? loss_sum / double(count) : 0.0;
    }

private:
    std::byte* buf(const std::string& name) const { return base_ + plan_.at(name).offset; }
    template <class T>
    T* as(const std::string& name) const {
        return reinterpret_cast<T*>(buf(name));
    }
    float* f(const std::string& name) const { return as<float>(name); }
    float* layer(int l, const char* name) const { return f("layer." + std::to_string(l) + "." + name); }
    float* slice(const char* block, const std::string& name) {
        for (const parameter_slice& s : layout_)
            if (s.name == name) return f(block) + s.offset;
        fail("decoder_step: no parameter named '" + name + "'");
    }
    float* weight(int l, const char* name) { return parameter("model.layers." + std::to_string(l) + "." + name); }
    float* dweight(int l, const char* name) { return gradient("model.layers." + std::to_string(l) + "." + name); }
    float* head_weight() { return parameter(c_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"); }
    float* head_gradient() { return gradient(c_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"); }

    // A product's operands: f32 as they are, or (bf16) the weight's bf16 copy and the activation converted into
    // a scratch buffer (dense: every activation operand here is).
    const void* activation(const float* x, long long count, const char* scratch) {
        if (!o_.bf16_weights) return x;
        ex_.to_bf16(as<std::uint16_t>(scratch), x, count);
        return as<std::uint16_t>(scratch);
    }
    const void* weight_operand(const float* w) {
        if (!o_.bf16_weights) return w;
        return as<std::uint16_t>("parameters.bf16") + (w - f("parameters"));
    }
    void run(matmul_args g) {
        g.input = o_.bf16_weights ? matmul_input::bf16 : matmul_input::f32;
        ex_.matmul(g);
    }
    // y (rows, out) = x (rows, in) W^T
    void linear(float* y, const float* x, const float* w, long long rows, long long out, long long in) {
        matmul_args g;
        g.trans_b = true, g.m = rows, g.n = out, g.k = in, g.a = activation(x, rows * in, "scratch.bf16.a");
        g.lda = in, g.b = weight_operand(w), g.ldb = in, g.c = y, g.ldc = out;
        run(g);
    }
    // dx (rows, in) = dy (rows, out) W (out, in) + beta dx
    void linear_dx(float* dx, const float* dy, const float* w, long long rows, long long out, long long in,
                   float beta) {
        matmul_args g;
        g.m = rows, g.n = in, g.k = out, g.a = activation(dy, rows * out, "scratch.bf16.a"), g.lda = out;
        g.b = weight_operand(w), g.ldb = in, g.beta = beta, g.c = dx, g.ldc = in;
        run(g);
    }
    // dW (out, in) += dy^T (out, rows) x (rows, in)
    void linear_dw(float* dw, const float* dy, const float* x, long long rows, long long out, long long in) {
        matmul_args g;
        g.trans_a = true, g.m = out, g.n = in, g.k = rows, g.a = activation(dy, rows * out, "scratch.bf16.a");
        g.lda = out, g.b = activation(x, rows * in, "scratch.bf16.b"), g.ldb = in, g.beta = 1, g.c = dw, g.ldc = in;
        run(g);
    }
    const std::int64_t* doc_start() const { return documents_ ? as<std::int64_t>("doc_start") : nullptr; }
    const std::int64_t* positions() const { return documents_ ? as<std::int64_t>("positions") : nullptr; }
    attention_dims dims(int l) const {
        return {o_.batch, o_.time, c_.n_heads, c_.n_kv_heads, c_.head_dim(), c_.layer_window(l)};
    }

    void forward() {
        const long long n = n_;
        const int d = c_.d_model, q = c_.q_width(), kv = c_.kv_width(), ff = c_.d_ff, L = c_.n_layers;
        const float eps = float(c_.norm_eps);
        ex_.embedding_forward(layer(0, "x"), as<std::int32_t>("ids"), parameter("model.embed_tokens.weight"), n, d);
        ex_.rmsnorm_forward(layer(0, "normed1"), layer(0, "rstd1"), layer(0, "x"), weight(0, "input_layernorm.weight"),
                            n, d, eps);
        for (int l = 0; l < L; ++l) {
            linear(layer(l, "q"), layer(l, "normed1"), weight(l, "self_attn.q_proj.weight"), n, q, d);
            linear(layer(l, "k"), layer(l, "normed1"), weight(l, "self_attn.k_proj.weight"), n, kv, d);
            linear(layer(l, "v"), layer(l, "normed1"), weight(l, "self_attn.v_proj.weight"), n, kv, d);
            ex_.rope(layer(l, "q"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_heads,
                     c_.head_dim(), 1.0);
            ex_.rope(layer(l, "k"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_kv_heads,
                     c_.head_dim(), 1.0);
            ex_.attention_forward(layer(l, "attn"), layer(l, "lse"), layer(l, "q"), layer(l, "k"), layer(l, "v"),
                                  doc_start(), dims(l));
            linear(f("scratch.tmp"), layer(l, "attn"), weight(l, "self_attn.o_proj.weight"), n, d, q);
            ex_.residual_rmsnorm_forward(layer(l, "resid"), layer(l, "normed2"), layer(l, "rstd2"), layer(l, "x"),
                                         f("scratch.tmp"), weight(l, "post_attention_layernorm.weight"), n, d, eps);
            linear(layer(l, "gate"), layer(l, "normed2"), weight(l, "mlp.gate_proj.weight"), n, ff, d);
            linear(layer(l, "up"), layer(l, "normed2"), weight(l, "mlp.up_proj.weight"), n, ff, d);
            ex_.swiglu_forward(layer(l, "hidden"), layer(l, "gate"), layer(l, "up"), n * ff);
            linear(f("scratch.tmp"), layer(l, "hidden"), weight(l, "mlp.down_proj.weight"), n, d, ff);
            if (l + 1 < L)
                ex_.residual_rmsnorm_forward(layer(l + 1, "x"), layer(l + 1, "normed1"), layer(l + 1, "rstd1"),
                                             layer(l, "resid"), f("scratch.tmp"),
                                             weight(l + 1, "input_layernorm.weight"), n, d, eps);
            else
                ex_.residual_rmsnorm_forward(f("final.x"), f("final.normed"), f("final.rstd"), layer(l, "resid"),
                                             f("scratch.tmp"), parameter("model.norm.weight"), n, d, eps);
        }
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
            linear(f("logits"), h, head_weight(), rows, v, d);
            ex_.softmax_xent_forward(f("xent.loss") + r0, f("xent.lse") + r0, f("logits"),
                                     as<std::int32_t>("targets") + r0, rows, v);
            if (!with_backward) continue;
            ex_.softmax_xent_backward(f("logits"), f("xent.lse") + r0, as<std::int32_t>("targets") + r0, rows, v,
                                      scale);
            linear_dx(f("scratch.dnormed") + r0 * d, f("logits"), head_weight(), rows, v, d, 0.0f);
            linear_dw(head_gradient(), f("logits"), h, rows, v, d);
        }
        std::vector<float> loss(static_cast<std::size_t>(n));
        ex_.download(loss.data(), f("xent.loss"), loss.size() * sizeof(float));
        double sum = 0;
        for (float x : loss)
            sum += double(x);
        return sum;
    }

    void backward() {
        const long long n = n_;
        const int d = c_.d_model, q = c_.q_width(), kv = c_.kv_width(), ff = c_.d_ff, L = c_.n_layers;
        float* dx = f("scratch.dx");
        ex_.zero(dx, std::size_t(n * d) * sizeof(float));
        ex_.residual_rmsnorm_backward(dx, gradient("model.norm.weight"), f("scratch.dnormed"), f("final.x"),
                                      parameter("model.norm.weight"), f("final.rstd"), n, d);
        for (int l = L - 1; l >= 0; --l) {
            // MLP: dx is d(resid + mlp out); the down projection's input gradient, SwiGLU, gate and up.
            linear_dx(f("scratch.dhidden"), dx, weight(l, "mlp.down_proj.weight"), n, d, ff, 0.0f);
            linear_dw(dweight(l, "mlp.down_proj.weight"), dx, layer(l, "hidden"), n, d, ff);
            ex_.swiglu_backward(f("scratch.dgate"), f("scratch.dup"), f("scratch.dhidden"), layer(l, "gate"),
                                layer(l, "up"), n * ff);
            linear_dx(f("scratch.dnormed"), f("scratch.dgate"), weight(l, "mlp.gate_proj.weight"), n, ff, d, 0.0f);
            linear_dx(f("scratch.dnormed"), f("scratch.dup"), weight(l, "mlp.up_proj.weight"), n, ff, d, 1.0f);
            linear_dw(dweight(l, "mlp.gate_proj.weight"), f("scratch.dgate"), layer(l, "normed2"), n, ff, d);
            linear_dw(dweight(l, "mlp.up_proj.weight"), f("scratch.dup"), layer(l, "normed2"), n, ff, d);
            ex_.residual_rmsnorm_backward(dx, dweight(l, "post_attention_layernorm.weight"), f("scratch.dnormed"),
                                          layer(l, "resid"), weight(l, "post_attention_layernorm.weight"),
                                          layer(l, "rstd2"), n, d);
            // Attention: dx is now d resid = d(x_l + attention out).
            linear_dx(f("scratch.dattn"), dx, weight(l, "self_attn.o_proj.weight"), n, d, q, 0.0f);
            linear_dw(dweight(l, "self_attn.o_proj.weight"), dx, layer(l, "attn"), n, d, q);
            ex_.attention_backward(f("scratch.dq"), f("scratch.dk"), f("scratch.dv"), f("scratch.delta"),
                                   f("scratch.dattn"), layer(l, "q"), layer(l, "k"), layer(l, "v"), layer(l, "attn"),
                                   layer(l, "lse"), doc_start(), dims(l));
            ex_.rope(f("scratch.dq"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_heads,
                     c_.head_dim(), -1.0);
            ex_.rope(f("scratch.dk"), f("rope.cos"), f("rope.sin"), positions(), o_.batch, o_.time, c_.n_kv_heads,
                     c_.head_dim(), -1.0);
            linear_dx(f("scratch.dnormed"), f("scratch.dq"), weight(l, "self_attn.q_proj.weight"), n, q, d, 0.0f);
            linear_dx(f("scratch.dnormed"), f("scratch.dk"), weight(l, "self_attn.k_proj.weight"), n, kv, d, 1.0f);
            linear_dx(f("scratch.dnormed"), f("scratch.dv"), weight(l, "self_attn.v_proj.weight"), n, kv, d, 1.0f);
            linear_dw(dweight(l, "self_attn.q_proj.weight"), f("scratch.dq"), layer(l, "normed1"), n, q, d);
            linear_dw(dweight(l, "self_attn.k_proj.weight"), f("scratch.dk"), layer(l, "normed1"), n, kv, d);
            linear_dw(dweight(l, "self_attn.v_proj.weight"), f("scratch.dv"), layer(l, "normed1"), n, kv, d);
            ex_.residual_rmsnorm_backward(dx, dweight(l, "input_layernorm.weight"), f("scratch.dnormed"), layer(l, "x"),
                                          weight(l, "input_layernorm.weight"), layer(l, "rstd1"), n, d);
        }
    }

    model_config c_;
    decoder_plan_options o_;
    const arena_plan& plan_;
    std::byte* base_;
    Ex& ex_;
    std::vector<parameter_slice> layout_;
    long long n_ = 0, rows_ = 0, adam_t_ = 0;
    bool documents_ = false, weights_stale_ = true;
};

} // namespace tl::gpu
