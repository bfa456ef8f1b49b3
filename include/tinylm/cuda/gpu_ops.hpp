// tinylm/cuda/gpu_ops.hpp: decoder_step's and encoder_step's executor on the GPU (decoder_step.hpp,
// encoder_step.hpp): device memory, the kernels of tinylm::cuda and cuBLASLt products, all on one stream (nullptr:
// the default stream). Link tinylm::cuda.
#pragma once

#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/device.hpp>
#include <tinylm/cuda/moe_kernels.hpp>
#include <tinylm/cuda/nf4_row.hpp>

namespace tl::gpu {

struct gpu_ops {
    blas* products = nullptr;
    void* stream = nullptr;
    nf4_tables nf4_codebooks = make_nf4_tables(); // QLoRA's, for nf4_dequantize

    void upload(void* dst, const void* src, std::size_t bytes) { copy_to_device(dst, src, bytes); }
    void download(void* dst, const void* src, std::size_t bytes) { copy_to_host(dst, src, bytes); }
    void zero(void* dst, std::size_t bytes) { fill_zero(dst, bytes, stream); }
    void matmul(const matmul_args& g) { products->matmul(g, stream); }
    void to_bf16(std::uint16_t* dst, const float* src, long long n) { gpu::to_bf16(dst, src, n, stream); }

    void embedding_forward(float* out, const std::int32_t* ids, const float* weight, long long n, int d) {
        gpu::embedding_forward(out, ids, weight, n, d, stream);
    }
    void embedding_backward(float* dweight, const std::int32_t* tokens, const std::int32_t* offsets,
                            const std::int32_t* positions, long long groups, const float* dout, int d) {
        gpu::embedding_backward(dweight, tokens, offsets, positions, groups, dout, d, stream);
    }
    void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, long long n, int d, float eps) {
        gpu::rmsnorm_forward(y, rstd, x, w, n, d, eps, stream);
    }
    void residual_rmsnorm_forward(float* resid, float* y, float* rstd, const float* x, const float* a, const float* w,
                                  long long n, int d, float eps) {
        gpu::residual_rmsnorm_forward(resid, y, rstd, x, a, w, n, d, eps, stream);
    }
    void residual_rmsnorm_backward(float* dresid, float* dw, const float* dy, const float* resid, const float* w,
                                   const float* rstd, long long n, int d) {
        gpu::residual_rmsnorm_backward(dresid, dw, dy, resid, w, rstd, n, d, stream);
    }
    void nf4_dequantize(float* out, std::uint16_t* out_bf16, const nf4_weight& q) {
        gpu::nf4_dequantize(out, out_bf16, q, nf4_codebooks, stream);
    }
    void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                           long long n, int d, float eps) {
        gpu::layernorm_forward(y, mean, rstd, x, w, b, n, d, eps, stream);
    }
    void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                            const float* mean, const float* rstd, long long n, int d) {
        gpu::layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, n, d, stream);
    }
    void residual_layernorm_forward(float* resid, float* y, float* mean, float* rstd, const float* x, const float* a,
                                    const float* w, const float* b, long long n, int d, float eps) {
        gpu::residual_layernorm_forward(resid, y, mean, rstd, x, a, w, b, n, d, eps, stream);
    }
    void embedding_sum_forward(float* out, const std::int32_t* ids, const float* word, const std::int32_t* positions,
                               const float* position, const std::int32_t* types, const float* type, long long n,
                               int d) {
        gpu::embedding_sum_forward(out, ids, word, positions, position, types, type, n, d, stream);
    }
    void gelu_forward(float* y, const float* x, long long n) { gpu::gelu_forward(y, x, n, stream); }
    void gelu_backward(float* dx, const float* dy, const float* x, long long n) {
        gpu::gelu_backward(dx, dy, x, n, stream);
    }
    void bias_add(float* y, const float* b, long long n, int d) { gpu::bias_add(y, b, n, d, stream); }
    void bias_backward(float* db, const float* dy, long long n, int d) { gpu::bias_backward(db, dy, n, d, stream); }
    void swiglu_forward(float* h, const float* g, const float* u, long long n) {
        gpu::swiglu_forward(h, g, u, n, stream);
    }
    void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, long long n) {
        gpu::swiglu_backward(dg, du, dh, g, u, n, stream);
    }
    void rope(float* x, const float* cos, const float* sin, const std::int64_t* positions, long long batch,
              long long time, int heads, int head_dim, double direction) {
        gpu::rope(x, cos, sin, positions, batch, time, heads, head_dim, direction, stream);
    }
    void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                           const attention_masks& masks, const attention_dims& s) {
        gpu::attention_forward(out, lse, q, k, v, masks, s, stream);
    }
    void attention_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                            const float* k, const float* v, const float* out, const float* lse,
                            const attention_masks& masks, const attention_dims& s) {
        gpu::attention_backward(dq, dk, dv, delta, dout, q, k, v, out, lse, masks, s, stream);
    }
    void attention_fused_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                 const attention_masks& masks, const attention_dims& s) {
        gpu::attention_fused_forward(out, lse, q, k, v, masks, s, stream);
    }
    void attention_fused_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                                  const float* k, const float* v, const float* out, const float* lse,
                                  const attention_masks& masks, const attention_dims& s) {
        gpu::attention_fused_backward(dq, dk, dv, delta, dout, q, k, v, out, lse, masks, s, stream);
    }
    void attention_softmax(float* scores, float* lse, const attention_masks& masks, const attention_dims& s,
                           long long b0, long long nb, long long query_block) {
        gpu::attention_softmax(scores, lse, masks, s, b0, nb, query_block, stream);
    }
    void attention_probabilities(float* scores, const float* lse, const attention_masks& masks, const attention_dims& s,
                                 long long b0, long long nb, long long query_block) {
        gpu::attention_probabilities(scores, lse, masks, s, b0, nb, query_block, stream);
    }
    void attention_dscores(float* dscores, const float* p, const float* delta, const attention_masks& masks,
                           const attention_dims& s, long long b0, long long nb, long long query_block) {
        gpu::attention_dscores(dscores, p, delta, masks, s, b0, nb, query_block, stream);
    }
    void attention_delta(float* delta, const float* dout, const float* out, const attention_dims& s) {
        gpu::attention_delta(delta, dout, out, s, stream);
    }
    void softmax_xent_forward(float* loss, float* lse, const float* logits, const std::int32_t* targets, long long n,
                              long long v) {
        gpu::softmax_xent_forward(loss, lse, logits, targets, n, v, stream);
    }
    void softmax_xent_backward(float* logits, const float* lse, const std::int32_t* targets, long long n, long long v,
                               float scale) {
        gpu::softmax_xent_backward(logits, lse, targets, n, v, scale, stream);
    }
    void sum_of_squares(double* total, double* partials, const float* x, long long n) {
        gpu::sum_of_squares(total, partials, x, n, stream);
    }
    void scale_elements(float* x, float scale, long long n) { gpu::scale_elements(x, scale, n, stream); }
    void adamw_step(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c) {
        gpu::adamw_step(p, g, m, v, n, c, stream);
    }
    // LoRA dropout (dropout_row.hpp)
    void dropout_forward(float* out, const float* x, long long n, const dropout_mask& m) {
        gpu::dropout_forward(out, x, n, m, stream);
    }
    void dropout_backward(float* dx, const float* g, long long n, const dropout_mask& m) {
        gpu::dropout_backward(dx, g, n, m, stream);
    }

    // A sentence encoder's contrastive step (src/cuda/ranking.cu; cuda/ranking_step.hpp).
    void pool_forward(pool_kind mode, float* pooled, std::int32_t* arg, const float* hidden, const std::int64_t* starts,
                      const std::int64_t* lengths, long long n, int d) {
        gpu::pool_forward(mode, pooled, arg, hidden, starts, lengths, n, d, stream);
    }
    void pool_backward(pool_kind mode, float* dhidden, const float* dpooled, const std::int32_t* arg,
                       const std::int32_t* owner, const std::int64_t* starts, const std::int64_t* lengths,
                       long long tokens, int d) {
        gpu::pool_backward(mode, dhidden, dpooled, arg, owner, starts, lengths, tokens, d, stream);
    }
    void normalize_rows(float* y, double* norms, const float* x, long long n, int d, bool float_norm) {
        gpu::normalize_rows(y, norms, x, n, d, float_norm, stream);
    }
    void normalize_rows_backward(float* g, const float* y, const double* norms, long long n, int d) {
        gpu::normalize_rows_backward(g, y, norms, n, d, stream);
    }
    void ranking_lse(double* row_lse, double* col_lse, double* terms, const float* scores, long long b, long long m,
                     bool symmetric) {
        gpu::ranking_lse(row_lse, col_lse, terms, scores, b, m, symmetric, stream);
    }
    void ranking_dscores(float* scores, const double* row_lse, const double* col_lse, long long b, long long m,
                         double w, bool symmetric) {
        gpu::ranking_dscores(scores, row_lse, col_lse, b, m, w, symmetric, stream);
    }

    // ---- mixture of experts (moe_kernels.hpp; decoder_step's MoE layers) ----
    void moe_route(float* probs, std::int32_t* expert, float* weight, long long n, int n_experts, int top_k) {
        gpu::moe_route(probs, expert, weight, n, n_experts, top_k, stream);
    }
    void moe_dispatch(std::int32_t* offsets, std::int32_t* slot_row, std::int32_t* row_token, std::int32_t* counts,
                      const std::int32_t* expert, long long slots, int top_k, int n_experts) {
        gpu::moe_dispatch(offsets, slot_row, row_token, counts, expert, slots, top_k, n_experts, stream);
    }
    void moe_gather(float* out, const std::int32_t* row_token, const float* in, long long rows, int d) {
        gpu::moe_gather(out, row_token, in, rows, d, stream);
    }
    void moe_swiglu_forward(float* hidden, const float* gate_up, long long rows, int f) {
        gpu::moe_swiglu_forward(hidden, gate_up, rows, f, stream);
    }
    void moe_swiglu_backward(float* dgate_up, const float* dhidden, const float* gate_up, long long rows, int f) {
        gpu::moe_swiglu_backward(dgate_up, dhidden, gate_up, rows, f, stream);
    }
    void moe_combine(float* y, const float* rows, const std::int32_t* slot_row, const float* weight, long long n,
                     int top_k, int d) {
        gpu::moe_combine(y, rows, slot_row, weight, n, top_k, d, stream);
    }
    void moe_combine_backward(float* dx, const float* rows, const std::int32_t* slot_row, long long n, int top_k,
                              int d) {
        gpu::moe_combine_backward(dx, rows, slot_row, n, top_k, d, stream);
    }
    void moe_weight_gradient(double* dweight, float* dhidden, float* dy, const float* hidden,
                             const std::int32_t* slot_row, const float* weight, long long slots, int f, int d) {
        gpu::moe_weight_gradient(dweight, dhidden, dy, hidden, slot_row, weight, slots, f, d, stream);
    }
    void moe_router_backward(float* dlogits, const float* probs, const std::int32_t* expert, const float* weight,
                             const double* dweight, const double* aux, long long n, int n_experts, int top_k) {
        gpu::moe_router_backward(dlogits, probs, expert, weight, dweight, aux, n, n_experts, top_k, stream);
    }
    void moe_probability_sums(double* sums, const float* probs, long long n, int n_experts) {
        gpu::moe_probability_sums(sums, probs, n, n_experts, stream);
    }
};

} // namespace tl::gpu
