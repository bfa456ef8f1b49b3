// tinylm/cuda/moe_row.hpp: the per-row arithmetic of the mixture-of-experts kernels (src/cuda/moe.cu) as
// __host__ __device__ functions, and CPU drivers that run them one row after another (gpu::cpu_ops). The math is
// ops/moe.hpp's, step for step, in double where it is in double there:
//
//   route     per token: softmax of the router's logits (E) in double, stored f32; the top_k largest probabilities
//             (a tie goes to the lower expert), their weights renormalised over the chosen ones
//   dispatch  the N*K (token, choice) slots grouped by expert with a stable counting sort (token order kept):
//             offsets (E + 1), slot_row (N*K: the grouped row of slot (t, j)), row_token (N*K: its token)
//   gather    grouped rows of an (N, d) matrix: out[r] = in[row_token[r]] (the experts' inputs, and dy)
//   experts   h = silu(g) * u on the fused (rows, 2F) gate_up layout (gate in [0, F), up in [F, 2F)), in double
//   combine   y_t = sum_j w_tj out[slot_row(t, j)] in double, j ascending: a fixed order, no atomics
//   backward  g_tj = dz . h (double), dz *= w and dy *= w per slot; SwiGLU's backward; the router's logits'
//             gradient per token (through the renormalised weights and the aux loss's per-expert coefficient,
//             aux_e = daux E c_e / R^2, computed on the host); the experts' input gradients added per token
//             (double, j ascending) to the router's
//   balance   s_e = sum_t p_te (double), added to the load-balancing statistics
//
// Expert ids, slot rows and offsets are int32 (the GPU's); a batch has fewer than 2^31 slots.
#pragma once

#include <tinylm/cuda/row_math.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace tl::gpu {

// ---- routing: probabilities in place of the logits, the chosen experts and their weights ------------------------
TINYLM_HD inline void moe_route_row(float* p, std::int32_t* chosen, float* weight, int n_experts, int top_k) {
    float largest = p[0];
    for (int e = 1; e < n_experts; ++e)
        if (p[e] > largest) largest = p[e];
    const double m = double(largest);
    double s = 0;
    for (int e = 0; e < n_experts; ++e)
        s += exp(double(p[e]) - m);
    for (int e = 0; e < n_experts; ++e)
        p[e] = float(exp(double(p[e]) - m) / s);
    double kept = 0;
    for (int j = 0; j < top_k; ++j) {
        int best = -1;
        for (int e = 0; e < n_experts; ++e) {
            bool taken = false;
            for (int i = 0; i < j; ++i)
                taken = taken || chosen[i] == e;
            if (taken) continue;
            if (best < 0 || p[e] > p[best]) best = e;
        }
        chosen[j] = best;
        kept += double(p[best]);
    }
    for (int j = 0; j < top_k; ++j)
        weight[j] = float(double(p[chosen[j]]) / kept);
}

// ---- the experts' SwiGLU on the fused gate_up rows, in double as ops/moe.hpp --------------------------------------
TINYLM_HD inline float moe_swiglu_h(float gate, float up) {
    const double g = double(gate);
    return float(g / (1.0 + exp(-g)) * double(up));
}
TINYLM_HD inline void moe_swiglu_grad(float& dgate, float& dup, float dh, float gate, float up) {
    const double g = double(gate), u = double(up), sig = 1.0 / (1.0 + exp(-g));
    dgate = float(double(dh) * u * sig * (1.0 + g * (1.0 - sig)));
    dup = float(double(dh) * g * sig);
}

// ---- combine: element i of token t's output, its K weighted expert rows in a fixed order ------------------------
TINYLM_HD inline float moe_combine_element(const float* rows, const std::int32_t* slot_row, const float* weight,
                                           int top_k, int d, int i) {
    double acc = 0;
    for (int j = 0; j < top_k; ++j)
        acc += double(weight[j]) * double(rows[(long long)slot_row[j] * d + i]);
    return float(acc);
}
// backward: dx_t[i] += the K expert rows' input gradients (already weighted), in the same order
TINYLM_HD inline float moe_combine_backward_element(float dx, const float* rows, const std::int32_t* slot_row,
                                                    int top_k, int d, int i) {
    double acc = double(dx);
    for (int j = 0; j < top_k; ++j)
        acc += double(rows[(long long)slot_row[j] * d + i]);
    return float(acc);
}

// ---- the router's backward for one token: d logits (E) ----------------------------------------------------------
//   dp_e = aux_e + sum_{j: chosen_j = e} (g_j - sum_j' w_j' g_j') / sum_{chosen} p
//   dz_e = p_e (dp_e - sum_e' p_e' dp_e')
// aux: the per-expert coefficient of the balancing loss's gradient, or null (no aux loss).
TINYLM_HD inline double moe_router_dp(int e, const std::int32_t* chosen, const double* dweight, double gbar,
                                      double kept, const double* aux, int top_k) {
    double v = aux ? aux[e] : 0.0;
    for (int j = 0; j < top_k; ++j)
        if (chosen[j] == e) v += (dweight[j] - gbar) / kept;
    return v;
}
TINYLM_HD inline void moe_router_backward_row(float* dlogits, const float* p, const std::int32_t* chosen,
                                              const float* weight, const double* dweight, const double* aux,
                                              int n_experts, int top_k) {
    double kept = 0, gbar = 0;
    for (int j = 0; j < top_k; ++j) {
        kept += double(p[chosen[j]]);
        gbar += double(weight[j]) * dweight[j];
    }
    double dot = 0;
    for (int e = 0; e < n_experts; ++e)
        dot += double(p[e]) * moe_router_dp(e, chosen, dweight, gbar, kept, aux, top_k);
    for (int e = 0; e < n_experts; ++e)
        dlogits[e] = float(double(p[e]) * (moe_router_dp(e, chosen, dweight, gbar, kept, aux, top_k) - dot));
}

// ---- CPU drivers (gpu::cpu_ops) ---------------------------------------------------------------------------------
inline void moe_route_rows(float* probs, std::int32_t* expert, float* weight, long long n, int n_experts, int top_k) {
    for (long long t = 0; t < n; ++t)
        moe_route_row(probs + t * n_experts, expert + t * top_k, weight + t * top_k, n_experts, top_k);
}
// The stable counting sort of the slots (token-major: slot t * top_k + j) by expert.
inline void moe_dispatch_rows(std::int32_t* offsets, std::int32_t* slot_row, std::int32_t* row_token,
                              const std::int32_t* expert, long long slots, int top_k, int n_experts) {
    for (int e = 0; e <= n_experts; ++e)
        offsets[e] = 0;
    for (long long i = 0; i < slots; ++i) {
        const std::int32_t e = expert[i];
        check(e >= 0 && e < n_experts, [&] {
            return "gpu::moe_dispatch: expert " + std::to_string(e) + " of slot " + std::to_string(i) +
                   " is outside [0, " + std::to_string(n_experts) + ")";
        });
        ++offsets[e + 1];
    }
    for (int e = 0; e < n_experts; ++e)
        offsets[e + 1] += offsets[e];
    std::vector<std::int32_t> cursor(offsets, offsets + n_experts);
    for (long long i = 0; i < slots; ++i) {
        const std::int32_t r = cursor[std::size_t(expert[i])]++;
        slot_row[i] = r;
        row_token[r] = std::int32_t(i / top_k);
    }
}
inline void moe_gather_rows(float* out, const std::int32_t* row_token, const float* in, long long rows, int d) {
    for (long long r = 0; r < rows; ++r)
        for (int i = 0; i < d; ++i)
            out[r * d + i] = in[(long long)row_token[r] * d + i];
}
inline void moe_swiglu_rows(float* hidden, const float* gate_up, long long rows, int f) {
    for (long long r = 0; r < rows; ++r)
        for (int i = 0; i < f; ++i)
            hidden[r * f + i] = moe_swiglu_h(gate_up[r * 2 * f + i], gate_up[r * 2 * f + f + i]);
}
inline void moe_swiglu_backward_rows(float* dgate_up, const float* dhidden, const float* gate_up, long long rows,
                                     int f) {
    for (long long r = 0; r < rows; ++r)
        for (int i = 0; i < f; ++i)
            moe_swiglu_grad(dgate_up[r * 2 * f + i], dgate_up[r * 2 * f + f + i], dhidden[r * f + i],
                            gate_up[r * 2 * f + i], gate_up[r * 2 * f + f + i]);
}
inline void moe_combine_rows(float* y, const float* rows, const std::int32_t* slot_row, const float* weight,
                             long long n, int top_k, int d) {
    for (long long t = 0; t < n; ++t)
        for (int i = 0; i < d; ++i)
            y[t * d + i] = moe_combine_element(rows, slot_row + t * top_k, weight + t * top_k, top_k, d, i);
}
inline void moe_combine_backward_rows(float* dx, const float* rows, const std::int32_t* slot_row, long long n,
                                      int top_k, int d) {
    for (long long t = 0; t < n; ++t)
        for (int i = 0; i < d; ++i)
            dx[t * d + i] = moe_combine_backward_element(dx[t * d + i], rows, slot_row + t * top_k, top_k, d, i);
}
// Per slot i (token-major): dweight[i] = dhidden[r] . hidden[r] in double (r = slot_row[i]), then dhidden[r] and
// dy[r] (d) scaled by the slot's weight.
inline void moe_weight_gradient_rows(double* dweight, float* dhidden, float* dy, const float* hidden,
                                     const std::int32_t* slot_row, const float* weight, long long slots, int f, int d) {
    for (long long i = 0; i < slots; ++i) {
        const long long r = slot_row[i];
        const double w = double(weight[i]);
        double g = 0;
        for (int c = 0; c < f; ++c) {
            g += double(dhidden[r * f + c]) * double(hidden[r * f + c]);
            dhidden[r * f + c] = float(double(dhidden[r * f + c]) * w);
        }
        dweight[i] = g;
        for (int c = 0; c < d; ++c)
            dy[r * d + c] = float(double(dy[r * d + c]) * w);
    }
}
inline void moe_router_backward_rows(float* dlogits, const float* probs, const std::int32_t* expert,
                                     const float* weight, const double* dweight, const double* aux, long long n,
                                     int n_experts, int top_k) {
    for (long long t = 0; t < n; ++t)
        moe_router_backward_row(dlogits + t * n_experts, probs + t * n_experts, expert + t * top_k, weight + t * top_k,
                                dweight + t * top_k, aux, n_experts, top_k);
}
// sums[e] += sum_t probs[t, e] (the sum in double, then added)
inline void moe_probability_sums_rows(double* sums, const float* probs, long long n, int n_experts) {
    for (int e = 0; e < n_experts; ++e) {
        double s = 0;
        for (long long t = 0; t < n; ++t)
            s += double(probs[t * n_experts + e]);
        sums[e] += s;
    }
}

} // namespace tl::gpu
