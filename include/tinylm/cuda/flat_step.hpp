// tinylm/cuda/flat_step.hpp: what the training steps over one arena share (decoder_step.hpp, encoder_step.hpp):
// their buffers by name, matrix products whose operands are f32 or bf16 copies made right before them, the
// scratch of attention through products, and the optimizer over flat blocks (the global gradient norm, clipping,
// AdamW slice by slice). The plans put the matching buffers in the arena with plan_attention_products and
// plan_optimizer (decoder_plan.hpp). QLoRA's NF4 weights (nf4.codes, nf4.qabsmax, nf4.absmax2, scratch.nf4 of both
// plans): uploaded, viewed and dequantised before a product the same way in both steps.
#pragma once

#include <tinylm/cuda/arena_plan.hpp>
#include <tinylm/cuda/attention_products.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/decoder_plan.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/row_math.hpp>
#include <tinylm/optim/adamw.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tl::gpu {

// What AdamW does with one parameter slice: step it or not (a frozen one), with weight decay or without.
struct adamw_rule {
    bool train = true, decay = true;
};

template <class Ex>
class flat_step {
public:
    void zero_gradients() { ex_.zero(buf("gradients"), plan_.at("gradients").bytes); }
    // The L2 norm of all gradients (a deterministic sum in double).
    double gradient_norm() {
        ex_.sum_of_squares(as<double>("grad_norm.total"), as<double>("grad_norm.partials"), f("gradients"),
                           gradient_count());
        double total = 0;
        ex_.download(&total, buf("grad_norm.total"), sizeof total);
        return std::sqrt(total);
    }
    // Scales all gradients by max_norm / (norm + 1e-6) when their norm exceeds max_norm (optim/clip.hpp's rule);
    // returns the norm before.
    double clip_gradients(double max_norm) {
        const double norm = gradient_norm();
        const float scale = clip_scale(norm, max_norm);
        if (scale != 1.0f) ex_.scale_elements(f("gradients"), scale, gradient_count());
        return norm;
    }
    // AdamW's step count (tl::adamw keeps its own): what a checkpoint saves and restores.
    long long adamw_steps() const { return adam_t_; }
    void set_adamw_steps(long long t) { adam_t_ = t; }

protected:
    flat_step(const arena_plan& plan, std::byte* base, Ex& ex, bool bf16)
        : plan_(plan), base_(base), ex_(ex), bf16_(bf16) {
        ex_.zero(buf("adam.m"), plan_.at("adam.m").bytes); // device memory starts undefined
        ex_.zero(buf("adam.v"), plan_.at("adam.v").bytes);
    }

    std::byte* buf(const std::string& name) const { return base_ + plan_.at(name).offset; }
    template <class T>
    T* as(const std::string& name) const {
        return reinterpret_cast<T*>(buf(name));
    }
    float* f(const std::string& name) const { return as<float>(name); }
    long long gradient_count() const { return (long long)plan_.at("gradients").bytes / (long long)sizeof(float); }

    // ---- QLoRA: NF4 weights laid out by nf4_slice (decoder_plan.hpp) ----
    // Copies q (ops/nf4.hpp's format; double quantisation required) into slice s; `who` names the step in the error.
    void upload_nf4(const nf4_slice& s, const nf4_tensor& q, const char* who) {
        check(q.double_quant && std::size_t(q.numel()) == s.n && q.codes.size() == s.code_bytes() &&
                  q.qabsmax.size() == s.blocks() && q.absmax2.size() == s.scale_blocks(),
              [&] {
                  return std::string(who) + ": the NF4 weight for " + s.name + " (" + q.shape().str() +
                         ") does not match the model's shape, or lacks double quantisation";
              });
        ex_.upload(buf("nf4.codes") + s.codes, q.codes.data(), q.codes.size());
        ex_.upload(buf("nf4.qabsmax") + s.qabsmax, q.qabsmax.data(), q.qabsmax.size());
        ex_.upload(f("nf4.absmax2") + s.absmax2, q.absmax2.data(), q.absmax2.size() * sizeof(float));
    }
    // Slice s's arrays in Ex's memory, with its offset (a host value the kernel takes).
    nf4_weight nf4_view(const nf4_slice& s, float offset) const {
        nf4_weight q;
        q.codes = reinterpret_cast<const std::uint8_t*>(buf("nf4.codes")) + s.codes;
        q.qabsmax = reinterpret_cast<const std::uint8_t*>(buf("nf4.qabsmax")) + s.qabsmax;
        q.absmax2 = f("nf4.absmax2") + s.absmax2, q.offset = offset, q.n = (long long)s.n;
        return q;
    }
    // q dequantised into scratch.nf4 (bf16 or f32, as the products read): a product's weight operand, valid until
    // the next call.
    const void* dequantized_nf4(const nf4_weight& q) {
        if (bf16_)
            ex_.nf4_dequantize(nullptr, as<std::uint16_t>("scratch.nf4"), q);
        else
            ex_.nf4_dequantize(f("scratch.nf4"), nullptr, q);
        return buf("scratch.nf4");
    }

    // A product's activation operand: x itself (f32 products) or its bf16 copy in a scratch buffer, converted once
    // for every product that reads it.
    const void* operand(const float* x, long long count, const char* scratch) {
        if (!bf16_) return x;
        ex_.to_bf16(as<std::uint16_t>(scratch), x, count);
        return as<std::uint16_t>(scratch);
    }
    void run(matmul_args g) {
        g.input = bf16_ ? matmul_input::bf16 : matmul_input::f32;
        ex_.matmul(g);
    }
    // y (rows, out) = x (rows, in) W^T; x and w operands.
    void linear(float* y, const void* x, const void* w, long long rows, long long out, long long in) {
        matmul_args g;
        g.trans_b = true, g.m = rows, g.n = out, g.k = in, g.a = x, g.lda = in, g.b = w, g.ldb = in;
        g.c = y, g.ldc = out;
        run(g);
    }
    // dx (rows, in) = dy (rows, out) W (out, in) + beta dx; dy and w operands.
    void linear_dx(float* dx, const void* dy, const void* w, long long rows, long long out, long long in, float beta) {
        matmul_args g;
        g.m = rows, g.n = in, g.k = out, g.a = dy, g.lda = out, g.b = w, g.ldb = in, g.beta = beta;
        g.c = dx, g.ldc = in;
        run(g);
    }
    // dW (out, in) += dy^T (out, rows) x (rows, in); dy and x operands.
    void linear_dw(float* dw, const void* dy, const void* x, long long rows, long long out, long long in) {
        matmul_args g;
        g.trans_a = true, g.m = out, g.n = in, g.k = rows, g.a = dy, g.lda = out, g.b = x, g.ldb = in, g.beta = 1;
        g.c = dw, g.ldc = in;
        run(g);
    }

    // One AdamW step at learning rate lr over the slices of `layout` in the block `values`, their gradients and
    // moments at the same offsets of "gradients", "adam.m", "adam.v"; rule(name) says which train and decay.
    template <class Rule>
    void adamw_over(const std::vector<parameter_slice>& layout, const char* values, double lr, const adamw_options& o,
                    Rule&& rule) {
        ++adam_t_;
        float* p = f(values);
        for (const parameter_slice& s : layout) {
            const adamw_rule r = rule(s.name);
            if (!r.train) continue;
            ex_.adamw_step(p + s.offset, f("gradients") + s.offset, f("adam.m") + s.offset, f("adam.v") + s.offset,
                           (long long)s.size(),
                           adamw_step_coeffs(lr, o.beta1, o.beta2, o.eps, o.weight_decay, adam_t_, r.decay));
        }
    }

    // The scratch of attention through products as plan_attention_products laid it out (empty for the rows path),
    // in query blocks of query_block rows (0: whole products).
    attention_scratch products_scratch(attention_path path, long long chunk, long long query_block) const {
        attention_scratch x;
        if (path != attention_path::products) return x;
        x.scores = f("attention.scores"), x.dscores = f("attention.dscores"), x.chunk = chunk;
        x.query_block = query_block;
        if (bf16_) {
            x.q = as<std::uint16_t>("attention.bf16.q"), x.k = as<std::uint16_t>("attention.bf16.k");
            x.v = as<std::uint16_t>("attention.bf16.v"), x.dout = as<std::uint16_t>("attention.bf16.do");
            x.p = as<std::uint16_t>("attention.bf16.p");
        }
        return x;
    }

    const arena_plan& plan_;
    std::byte* base_;
    Ex& ex_;
    bool bf16_;
    long long adam_t_ = 0;
};

} // namespace tl::gpu
