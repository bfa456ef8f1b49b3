// tinylm/cuda/cpu_ops.hpp: decoder_step's and encoder_step's executor on the CPU (decoder_step.hpp,
// encoder_step.hpp): host memory, the CPU drivers of row_math.hpp and attention_row.hpp (the kernels' arithmetic,
// one row after another) and the reference gemm. The oracle the GPU executor (gpu_ops.hpp) is compared with, itself
// checked against tl::decoder and tl::encoder.
#pragma once

#include <tinylm/backend/reference.hpp>
#include <tinylm/cuda/attention_fused.hpp>
#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/dropout_row.hpp>
#include <tinylm/cuda/moe_row.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/ranking_row.hpp>
#include <tinylm/cuda/row_math.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace tl::gpu {

struct cpu_ops {
    void upload(void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); }
    void download(void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); }
    void zero(void* dst, std::size_t bytes) { std::memset(dst, 0, bytes); }

    // f32, or bf16 operands widened back to f32 (exactly) for the reference gemm; a batch one product after another.
    void matmul(const matmul_args& m) {
        const std::size_t element = m.input == matmul_input::bf16 ? 2 : 4;
        for (long long i = 0; i < m.batch; ++i) {
            gemm_args<float> g;
            g.trans_a = m.trans_a, g.trans_b = m.trans_b, g.m = m.m, g.n = m.n, g.k = m.k, g.alpha = m.alpha;
            const auto* a = static_cast<const std::byte*>(m.a) + std::size_t(i * m.stride_a) * element;
            const auto* b = static_cast<const std::byte*>(m.b) + std::size_t(i * m.stride_b) * element;
            g.a = reinterpret_cast<const float*>(a), g.lda = m.lda, g.b = reinterpret_cast<const float*>(b);
            g.ldb = m.ldb, g.beta = m.beta, g.c = m.c + i * m.stride_c, g.ldc = m.ldc;
            if (m.input == matmul_input::bf16) {
                // the stored extent: (rows - 1) strides and one row
                a_wide_ = widen(a, ((m.trans_a ? m.k : m.m) - 1) * m.lda + (m.trans_a ? m.m : m.k));
                b_wide_ = widen(b, ((m.trans_b ? m.n : m.k) - 1) * m.ldb + (m.trans_b ? m.k : m.n));
                g.a = a_wide_.data(), g.b = b_wide_.data();
            }
            reference_cpu::gemm(g);
        }
    }
    void to_bf16(std::uint16_t* dst, const float* src, long long n) {
        for (long long i = 0; i < n; ++i)
            dst[i] = bf16_bits(src[i]);
    }
    void embedding_forward(float* out, const std::int32_t* ids, const float* weight, long long n, int d) {
        embedding_gather_rows(out, ids, weight, n, d);
    }
    // The groups as decoder_step uploaded them (tokens, offsets, positions), read back into a token_groups.
    void embedding_backward(float* dweight, const std::int32_t* tokens, const std::int32_t* offsets,
                            const std::int32_t* positions, long long groups, const float* dout, int d) {
        token_groups g;
        g.tokens.assign(tokens, tokens + groups);
        g.offsets.assign(offsets, offsets + groups + 1);
        g.positions.assign(positions, positions + offsets[groups]);
        embedding_scatter_add_rows(dweight, g, dout, d);
    }
    void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, long long n, int d, float eps) {
        rmsnorm_rows(y, rstd, x, w, n, d, eps);
    }
    void residual_rmsnorm_forward(float* resid, float* y, float* rstd, const float* x, const float* a, const float* w,
                                  long long n, int d, float eps) {
        residual_rmsnorm_rows(resid, y, rstd, x, a, w, n, d, eps);
    }
    void residual_rmsnorm_backward(float* dresid, float* dw, const float* dy, const float* resid, const float* w,
                                   const float* rstd, long long n, int d) {
        residual_rmsnorm_backward_rows(dresid, dw, dy, resid, w, rstd, n, d);
    }
    void nf4_dequantize(float* out, std::uint16_t* out_bf16, const nf4_weight& q) {
        const nf4_tables t = make_nf4_tables();
        for (long long i = 0; i < q.n; ++i) {
            const float w = nf4_element(q, i, t);
            if (out) out[i] = w;
            if (out_bf16) out_bf16[i] = bf16_bits(w);
        }
    }
    void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                           long long n, int d, float eps) {
        layernorm_rows(y, mean, rstd, x, w, b, n, d, eps);
    }
    void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                            const float* mean, const float* rstd, long long n, int d) {
        layernorm_backward_rows(dx, dw, db, dy, x, w, mean, rstd, n, d);
    }
    void residual_layernorm_forward(float* resid, float* y, float* mean, float* rstd, const float* x, const float* a,
                                    const float* w, const float* b, long long n, int d, float eps) {
        residual_layernorm_rows(resid, y, mean, rstd, x, a, w, b, n, d, eps);
    }
    void embedding_sum_forward(float* out, const std::int32_t* ids, const float* word, const std::int32_t* positions,
                               const float* position, const std::int32_t* types, const float* type, long long n,
                               int d) {
        embedding_sum_rows(out, ids, word, positions, position, types, type, n, d);
    }
    void gelu_forward(float* y, const float* x, long long n) { gelu_rows(y, x, n); }
    void gelu_backward(float* dx, const float* dy, const float* x, long long n) { gelu_backward_rows(dx, dy, x, n); }
    void bias_add(float* y, const float* b, long long n, int d) { bias_add_rows(y, b, n, d); }
    void bias_backward(float* db, const float* dy, long long n, int d) { bias_backward_rows(db, dy, n, d); }
    void swiglu_forward(float* h, const float* g, const float* u, long long n) { swiglu_rows(h, g, u, n); }
    void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, long long n) {
        swiglu_backward_rows(dg, du, dh, g, u, n);
    }
    void rope(float* x, const float* cos, const float* sin, const std::int64_t* positions, long long batch,
              long long time, int heads, int head_dim, double direction) {
        rope_rows(x, cos, sin, positions, batch, time, heads, head_dim, direction);
    }
    void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                           const attention_masks& masks, const attention_dims& s) {
        attention_forward_rows(out, lse, q, k, v, masks, s);
    }
    void attention_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                            const float* k, const float* v, const float* out, const float* lse,
                            const attention_masks& masks, const attention_dims& s) {
        attention_backward_rows(dq, dk, dv, delta, dout, q, k, v, out, lse, masks, s);
    }
    void attention_fused_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                 const attention_masks& masks, const attention_dims& s) {
        attention_fused_forward_rows(out, lse, q, k, v, masks, s);
    }
    void attention_fused_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                                  const float* k, const float* v, const float* out, const float* lse,
                                  const attention_masks& masks, const attention_dims& s) {
        attention_fused_backward_rows(dq, dk, dv, delta, dout, q, k, v, out, lse, masks, s);
    }
    void attention_softmax(float* scores, float* lse, const attention_masks& masks, const attention_dims& s,
                           long long b0, long long nb, long long query_block) {
        attention_softmax_rows(scores, lse, masks, s, b0, nb, query_block);
    }
    void attention_probabilities(float* scores, const float* lse, const attention_masks& masks, const attention_dims& s,
                                 long long b0, long long nb, long long query_block) {
        attention_probabilities_rows(scores, lse, masks, s, b0, nb, query_block);
    }
    void attention_dscores(float* dscores, const float* p, const float* delta, const attention_masks& masks,
                           const attention_dims& s, long long b0, long long nb, long long query_block) {
        attention_dscores_rows(dscores, p, delta, masks, s, b0, nb, query_block);
    }
    void attention_delta(float* delta, const float* dout, const float* out, const attention_dims& s) {
        attention_delta_rows(delta, dout, out, s);
    }
    void softmax_xent_forward(float* loss, float* lse, const float* logits, const std::int32_t* targets, long long n,
                              long long v) {
        xent_rows(loss, lse, logits, targets, n, v);
    }
    void softmax_xent_backward(float* logits, const float* lse, const std::int32_t* targets, long long n, long long v,
                               float scale) {
        xent_backward_rows(logits, lse, targets, n, v, scale);
    }
    void sum_of_squares(double* total, double*, const float* x, long long n) { *total = gpu::sum_of_squares(x, n); }
    void scale_elements(float* x, float scale, long long n) { scale_in_place(x, scale, n); }
    void adamw_step(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c) {
        adamw_elements(p, g, m, v, n, c);
    }
    // LoRA dropout (dropout_row.hpp)
    void dropout_forward(float* out, const float* x, long long n, const dropout_mask& m) { dropout_rows(out, x, n, m); }
    void dropout_backward(float* dx, const float* g, long long n, const dropout_mask& m) {
        dropout_backward_rows(dx, g, n, m);
    }

    // A sentence encoder's contrastive step (ranking_row.hpp; cuda/ranking_step.hpp).
    void pool_forward(pool_kind mode, float* pooled, std::int32_t* arg, const float* hidden, const std::int64_t* starts,
                      const std::int64_t* lengths, long long n, int d) {
        pool_segments(mode, pooled, arg, hidden, starts, lengths, n, d);
    }
    void pool_backward(pool_kind mode, float* dhidden, const float* dpooled, const std::int32_t* arg,
                       const std::int32_t* owner, const std::int64_t* starts, const std::int64_t* lengths,
                       long long tokens, int d) {
        pool_backward_segments(mode, dhidden, dpooled, arg, owner, starts, lengths, tokens, d);
    }
    void normalize_rows(float* y, double* norms, const float* x, long long n, int d, bool float_norm) {
        unit_rows(y, norms, x, n, d, float_norm);
    }
    void normalize_rows_backward(float* g, const float* y, const double* norms, long long n, int d) {
        unit_rows_backward(g, y, norms, n, d);
    }
    void ranking_lse(double* row_lse, double* col_lse, double* terms, const float* scores, long long b, long long m,
                     bool symmetric) {
        ranking_lse_rows(row_lse, col_lse, terms, scores, b, m, symmetric);
    }
    void ranking_dscores(float* scores, const double* row_lse, const double* col_lse, long long b, long long m,
                         double w, bool symmetric) {
        ranking_dscores_rows(scores, row_lse, col_lse, b, m, w, symmetric);
    }

    // ---- mixture of experts (moe_row.hpp's drivers; decoder_step's MoE layers) ----
    void moe_route(float* probs, std::int32_t* expert, float* weight, long long n, int n_experts, int top_k) {
        moe_route_rows(probs, expert, weight, n, n_experts, top_k);
    }
    void moe_dispatch(std::int32_t* offsets, std::int32_t* slot_row, std::int32_t* row_token, std::int32_t*,
                      const std::int32_t* expert, long long slots, int top_k, int n_experts) {
        moe_dispatch_rows(offsets, slot_row, row_token, expert, slots, top_k, n_experts);
    }
    void moe_gather(float* out, const std::int32_t* row_token, const float* in, long long rows, int d) {
        moe_gather_rows(out, row_token, in, rows, d);
    }
    void moe_swiglu_forward(float* hidden, const float* gate_up, long long rows, int f) {
        moe_swiglu_rows(hidden, gate_up, rows, f);
    }
    void moe_swiglu_backward(float* dgate_up, const float* dhidden, const float* gate_up, long long rows, int f) {
        moe_swiglu_backward_rows(dgate_up, dhidden, gate_up, rows, f);
    }
    void moe_combine(float* y, const float* rows, const std::int32_t* slot_row, const float* weight, long long n,
                     int top_k, int d) {
        moe_combine_rows(y, rows, slot_row, weight, n, top_k, d);
    }
    void moe_combine_backward(float* dx, const float* rows, const std::int32_t* slot_row, long long n, int top_k,
                              int d) {
        moe_combine_backward_rows(dx, rows, slot_row, n, top_k, d);
    }
    void moe_weight_gradient(double* dweight, float* dhidden, float* dy, const float* hidden,
                             const std::int32_t* slot_row, const float* weight, long long slots, int f, int d) {
        moe_weight_gradient_rows(dweight, dhidden, dy, hidden, slot_row, weight, slots, f, d);
    }
    void moe_router_backward(float* dlogits, const float* probs, const std::int32_t* expert, const float* weight,
                             const double* dweight, const double* aux, long long n, int n_experts, int top_k) {
        moe_router_backward_rows(dlogits, probs, expert, weight, dweight, aux, n, n_experts, top_k);
    }
    void moe_probability_sums(double* sums, const float* probs, long long n, int n_experts) {
        moe_probability_sums_rows(sums, probs, n, n_experts);
    }

private:
    static std::vector<float> widen(const void* bits, long long count) {
        const auto* h = static_cast<const std::uint16_t*>(bits);
        std::vector<float> out(static_cast<std::size_t>(count));
        for (long long i = 0; i < count; ++i) {
            const std::uint32_t u = std::uint32_t(h[i]) << 16;
            std::memcpy(&out[std::size_t(i)], &u, sizeof u);
        }
        return out;
    }
    std::vector<float> a_wide_, b_wide_;
};

} // namespace tl::gpu
