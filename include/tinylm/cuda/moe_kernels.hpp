// tinylm/cuda/moe_kernels.hpp: the mixture-of-experts kernels of tinylm::cuda (src/cuda/moe.cu), plain C++
// declarations as device.hpp's (device pointers, a stream as void*). The arithmetic is cuda/moe_row.hpp's; the
// expert products between them are cuBLASLt's (decoder_step.hpp). Every reduction is a fixed tree in one block or a
// loop in a fixed order: no atomics, the same bits on every run.
#pragma once

#include <cstdint>

namespace tl::gpu {

// probs (n, E): the router's logits in, the probabilities out (in place); expert, weight (n, top_k).
void moe_route(float* probs, std::int32_t* expert, float* weight, long long n, int n_experts, int top_k,
               void* stream = nullptr);
// The stable counting sort of the slots by expert: offsets (E + 1), slot_row, row_token (slots); counts (E) is
// scratch. One block per expert, each scanning the slots in order.
void moe_dispatch(std::int32_t* offsets, std::int32_t* slot_row, std::int32_t* row_token, std::int32_t* counts,
                  const std::int32_t* expert, long long slots, int top_k, int n_experts, void* stream = nullptr);
// out (rows, d) = in[row_token[r]] per row.
void moe_gather(float* out, const std::int32_t* row_token, const float* in, long long rows, int d,
                void* stream = nullptr);
// hidden (rows, f) = silu(gate) * up of gate_up (rows, 2f); backward assigns dgate_up (rows, 2f).
void moe_swiglu_forward(float* hidden, const float* gate_up, long long rows, int f, void* stream = nullptr);
void moe_swiglu_backward(float* dgate_up, const float* dhidden, const float* gate_up, long long rows, int f,
                         void* stream = nullptr);
// y (n, d) = per token the weighted sum of its top_k grouped rows; backward: dx (n, d) += their sum.
void moe_combine(float* y, const float* rows, const std::int32_t* slot_row, const float* weight, long long n, int top_k,
                 int d, void* stream = nullptr);
void moe_combine_backward(float* dx, const float* rows, const std::int32_t* slot_row, long long n, int top_k, int d,
                          void* stream = nullptr);
// Per slot: dweight = dhidden . hidden (double), then dhidden (f) and dy (d) of its grouped row scaled by its weight.
void moe_weight_gradient(double* dweight, float* dhidden, float* dy, const float* hidden, const std::int32_t* slot_row,
                         const float* weight, long long slots, int f, int d, void* stream = nullptr);
// dlogits (n, E) of the router; aux (E) the balancing loss's coefficients, or null.
void moe_router_backward(float* dlogits, const float* probs, const std::int32_t* expert, const float* weight,
                         const double* dweight, const double* aux, long long n, int n_experts, int top_k,
                         void* stream = nullptr);
// sums (E) += the column sums of probs (n, E), in double.
void moe_probability_sums(double* sums, const float* probs, long long n, int n_experts, void* stream = nullptr);

} // namespace tl::gpu
