// tinylm/cuda/device.hpp: the CUDA device, its memory arena and the kernels of tinylm::cuda (src/cuda).
//
// A plain C++ header: the declarations take raw device pointers and an opaque stream (a cudaStream_t as void*,
// nullptr for the default stream), so a program that links tinylm::cuda compiles its own code with any C++
// compiler and needs no CUDA header. Every function throws tl::error naming the call and CUDA's message when the
// runtime reports an error. Issue 20 (docs/gpu.md): memory, the decoder's element-wise and per-row ops, causal
// attention, the fused softmax cross-entropy and AdamW; matrix products are in cuda/blas.hpp.
#pragma once

#include <tinylm/cuda/arena_plan.hpp>
#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/dropout_row.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/ranking_row.hpp>
#include <tinylm/cuda/row_math.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tl::gpu {

// CUDA devices visible to this process; 0 when there is none or no driver (never throws).
int device_count();
// The current device's name as CUDA reports it ("NVIDIA H100 80GB HBM3"); empty when there is no device.
std::string device_name();

// One cudaMalloc of plan.bytes(), freed on destruction; at(offset) is the device address of a planned buffer. Under
// the host emulation the guard gap after every buffer (arena_plan.hpp) is registered with the runtime, which then
// reports a kernel, product, copy or memset that reaches into one, naming the buffer.
class device_arena {
public:
    explicit device_arena(const arena_plan& plan);
    ~device_arena();
    device_arena(const device_arena&) = delete;
    device_arena& operator=(const device_arena&) = delete;
    device_arena(device_arena&& o) noexcept : base_(o.base_), bytes_(o.bytes_) {
        o.base_ = nullptr;
        o.bytes_ = 0;
    }

    template <class T>
    T* at(std::size_t offset) const {
        return reinterpret_cast<T*>(static_cast<std::byte*>(base_) + offset);
    }
    std::size_t bytes() const { return bytes_; }

private:
    void* base_ = nullptr;
    std::size_t bytes_ = 0;
};

// Host <-> device copies of `bytes` (synchronous), and waiting for all work on the device.
void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes);
void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes);
void synchronize();
// bytes of device memory set to zero (cudaMemsetAsync on the stream).
void fill_zero(void* device_dst, std::size_t bytes, void* stream = nullptr);

// Kernels, f32, rows of a row-major (n, d) or (n, v) matrix; the math is row_math.hpp's.
// y, rstd (n) = RMSNorm(x) with weight w (d).
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, long long n, int d, float eps,
                     void* stream = nullptr);
// dx assigned; dw (d) accumulated, or skipped when null. Deterministic: no atomics.
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      long long n, int d, void* stream = nullptr);
// Per row: lse and loss (0 where the target is -100). targets are token ids (int32).
void softmax_xent_forward(float* loss, float* lse, const float* logits, const std::int32_t* targets, long long n,
                          long long v, void* stream = nullptr);
// logits replaced in place by d(scale * sum of row losses) / d logits; no probabilities are stored.
void softmax_xent_backward(float* logits, const float* lse, const std::int32_t* targets, long long n, long long v,
                           float scale, void* stream = nullptr);
// resid = x + a and y, rstd = RMSNorm(resid) in one pass (pre-norm blocks); resid may be x (in place).
void residual_rmsnorm_forward(float* resid, float* y, float* rstd, const float* x, const float* a, const float* w,
                              long long n, int d, float eps, void* stream = nullptr);
// dresid += RMSNorm's input gradient (the residual stream's gradient, that of x and a alike); dw accumulated.
void residual_rmsnorm_backward(float* dresid, float* dw, const float* dy, const float* resid, const float* w,
                               const float* rstd, long long n, int d, void* stream = nullptr);
// out (n, d) = weight rows at ids (n); ids are trusted (the host checks them: group_positions_by_token).
void embedding_forward(float* out, const std::int32_t* ids, const float* weight, long long n, int d,
                       void* stream = nullptr);
// dweight rows += the rows of dout at their positions, one block per token of the token_groups (uploaded:
// tokens and offsets of `groups` + 1 entries, positions): deterministic, no atomics.
void embedding_backward(float* dweight, const std::int32_t* tokens, const std::int32_t* offsets,
                        const std::int32_t* positions, long long groups, const float* dout, int d,
                        void* stream = nullptr);
// An NF4 weight (nf4_row.hpp: device arrays) dequantised into out (f32) and/or out_bf16 (bf16 bits), either may be
// null: tl::dequantize's values bit for bit. tables: make_nf4_tables().
void nf4_dequantize(float* out, std::uint16_t* out_bf16, const nf4_weight& q, const nf4_tables& tables,
                    void* stream = nullptr);
// y (n, d) += b (d) per row; db (d) += the column sums of dy (n, d), rows in order (deterministic).
void bias_add(float* y, const float* b, long long n, int d, void* stream = nullptr);
void bias_backward(float* db, const float* dy, long long n, int d, void* stream = nullptr);
// h = silu(g) * u over n elements; backward assigns dg and du.
void swiglu_forward(float* h, const float* g, const float* u, long long n, void* stream = nullptr);
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, long long n,
                     void* stream = nullptr);
// y = GELU(x) (the exact erf form) over n elements; backward assigns dx.
void gelu_forward(float* y, const float* x, long long n, void* stream = nullptr);
void gelu_backward(float* dx, const float* dy, const float* x, long long n, void* stream = nullptr);
// LayerNorm of rows (n, d) with weight and bias: y, mean, rstd (n). Backward: dx assigned, dw and db (d)
// accumulated, or skipped when null. Deterministic: no atomics.
void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, long long n,
                       int d, float eps, void* stream = nullptr);
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, long long n, int d, void* stream = nullptr);
// resid = x + a and y, mean, rstd = LayerNorm(resid) in one pass (post-norm blocks: norm(x + sublayer(x))); the
// backward is layernorm_backward of resid.
void residual_layernorm_forward(float* resid, float* y, float* mean, float* rstd, const float* x, const float* a,
                                const float* w, const float* b, long long n, int d, float eps, void* stream = nullptr);
// BERT's embeddings: out (n, d) = word[ids] + (position[positions] + type[types]); types and type null: no token
// types. Indices are trusted (the host checks them).
void embedding_sum_forward(float* out, const std::int32_t* ids, const float* word, const std::int32_t* positions,
                           const float* position, const std::int32_t* types, const float* type, long long n, int d,
                           void* stream = nullptr);
// x (batch, time, heads, head_dim) rotated in place by +angle (direction 1) or -angle (-1, the backward);
// cos, sin (table rows, head_dim / 2) from tl::rope_table; positions (batch, time) or null (row = t).
void rope(float* x, const float* cos, const float* sin, const std::int64_t* positions, long long batch, long long time,
          int heads, int head_dim, double direction, void* stream = nullptr);
// dst (n, bf16 bits) = src rounded to nearest even (the weights' bf16 copy, once per optimizer step).
void to_bf16(std::uint16_t* dst, const float* src, long long n, void* stream = nullptr);
// Causal attention (attention_row.hpp's layout and rules; head_dim <= attention_max_head_dim): out, lse. masks:
// doc_start and key_lengths, device pointers or null (the caller checks them: 1 <= key_lengths[b] <= time).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const attention_masks& masks, const attention_dims& s, void* stream = nullptr);
// dq, dk, dv assigned; delta (B, Hq, T) is scratch. Deterministic: no atomics.
void attention_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const attention_masks& masks, const attention_dims& s, void* stream = nullptr);
// Fused attention on tensor cores (attention_fused.hpp, src/cuda/flash_attention.cu; attention_path::fused): the
// same layout, masks, lse and results as attention_forward / attention_backward, with bf16 operands and f32
// accumulation; head_dim 64 or 128 (fused_head_dim_supported; refused otherwise: attention_path::products takes any).
// The backward fills delta first (attention_delta) and is deterministic: no atomics.
void attention_fused_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const attention_masks& masks, const attention_dims& s, void* stream = nullptr);
void attention_fused_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                              const float* k, const float* v, const float* out, const float* lse,
                              const attention_masks& masks, const attention_dims& s, void* stream = nullptr);
// Attention through products (attention_row.hpp, "products"): the row steps between the batched products, over
// the scores (nb Hq T x T) of sequences b0 .. b0 + nb - 1, computed in query blocks of query_block rows (0: whole
// rows; attention_row.hpp's attention_computed_keys): each row reads and writes its computed keys only. Softmax:
// probabilities in place and lse (B, Hq, T); probabilities: the same from recomputed scores and the saved lse;
// dscores: dp replaced by ds = p (dp - delta) scale; delta (B, Hq, T) = dout . out per query row.
void attention_softmax(float* scores, float* lse, const attention_masks& masks, const attention_dims& s, long long b0,
                       long long nb, long long query_block, void* stream = nullptr);
void attention_probabilities(float* scores, const float* lse, const attention_masks& masks, const attention_dims& s,
                             long long b0, long long nb, long long query_block, void* stream = nullptr);
void attention_dscores(float* dscores, const float* p, const float* delta, const attention_masks& masks,
                       const attention_dims& s, long long b0, long long nb, long long query_block,
                       void* stream = nullptr);
void attention_delta(float* delta, const float* dout, const float* out, const attention_dims& s,
                     void* stream = nullptr);
// The sum of squares of x (n) in double, deterministic: partials (grad_norm_blocks doubles) then *total, both
// device memory.
void sum_of_squares(double* total, double* partials, const float* x, long long n, void* stream = nullptr);
// x *= scale over n elements (clipping).
void scale_elements(float* x, float scale, long long n, void* stream = nullptr);
// One AdamW step over n elements (optim/adamw.hpp's update; coefficients from adamw_step_coeffs).
void adamw_step(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c,
                void* stream = nullptr);

// ---- LoRA dropout (dropout_row.hpp: tl::decoder's masks bit for bit) ----
// out (n) = dropout(x) under mask m (out may not be x); backward: dx += the kept elements of g times the scale.
void dropout_forward(float* out, const float* x, long long n, const dropout_mask& m, void* stream = nullptr);
void dropout_backward(float* dx, const float* g, long long n, const dropout_mask& m, void* stream = nullptr);

// ---- a sentence encoder's contrastive step (src/cuda/ranking.cu; the arithmetic of ranking_row.hpp) ----
// pooled (n, d) from hidden (tokens, d): text b's lengths[b] tokens from token starts[b] on (int64, device), a
// row of its own or a segment of a packed row; arg (n, d) for max only.
void pool_forward(pool_kind mode, float* pooled, std::int32_t* arg, const float* hidden, const std::int64_t* starts,
                  const std::int64_t* lengths, long long n, int d, void* stream = nullptr);
// dhidden (tokens, d) assigned from dpooled (n, d): owner (int32 per token) names the text holding each token, -1 on
// padding; zeros on padding and on the tokens the mode does not read.
void pool_backward(pool_kind mode, float* dhidden, const float* dpooled, const std::int32_t* arg,
                   const std::int32_t* owner, const std::int64_t* starts, const std::int64_t* lengths, long long tokens,
                   int d, void* stream = nullptr);
// Rows (n, d) to unit length, norms (n, double); the backward turns g (n, d) in place from d y into d x.
void normalize_rows(float* y, double* norms, const float* x, long long n, int d, bool float_norm,
                    void* stream = nullptr);
void normalize_rows_backward(float* g, const float* y, const double* norms, long long n, int d, void* stream = nullptr);
// The ranking loss over scores (b, m): row_lse, col_lse (symmetric) and the loss terms (2 b doubles, summed on the
// host); then the scores replaced by their gradient with weight w.
void ranking_lse(double* row_lse, double* col_lse, double* terms, const float* scores, long long b, long long m,
                 bool symmetric, void* stream = nullptr);
void ranking_dscores(float* scores, const double* row_lse, const double* col_lse, long long b, long long m, double w,
                     bool symmetric, void* stream = nullptr);

} // namespace tl::gpu
