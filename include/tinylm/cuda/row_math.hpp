// tinylm/cuda/row_math.hpp: the per-element and per-row arithmetic of the CUDA kernels (src/cuda), as
// __host__ __device__ functions, so that the same code runs in the kernels and in a plain C++ test on the CPU
// (tests/cuda/test_row_math.cpp compares it with tinylm's CPU ops and f64). No CUDA header is needed here.
//
// What stays in the kernels is only how the work is spread: which thread takes which element, and the order of
// the reductions (a tree in a block instead of a loop). The sums are f32 on both sides; the CPU drivers at the
// end (rmsnorm_rows, ...) run the reductions in one fixed order, the kernels in another, so results agree to f32
// rounding, not bit for bit. Element-wise formulas agree bit for bit: src/cuda compiles with --fmad=false
// (no contraction into fused multiply-adds that the host code does not do) and IEEE sqrt and division.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TINYLM_HD __host__ __device__
#else
#define TINYLM_HD
#endif

namespace tl::gpu {

// ---- RMSNorm: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) (ops/rmsnorm.hpp) ------------------------
TINYLM_HD inline float rmsnorm_rstd(float sum_of_squares, int d, float eps) {
    return 1.0f / sqrtf(sum_of_squares / float(d) + eps);
}
TINYLM_HD inline float rmsnorm_y(float x, float rstd, float w) { return x * rstd * w; }
// Backward, with g = dy * w and xhat = x * rstd: dx = rstd * (g - xhat * mean(g * xhat)). The row first sums
// rmsnorm_dot_term over its elements (sum of g * x); mean(g * xhat) = that sum * rstd / d.
TINYLM_HD inline float rmsnorm_dot_term(float dy, float w, float x) { return dy * w * x; }
TINYLM_HD inline float rmsnorm_dx(float dy, float w, float x, float rstd, float dot_sum, int d) {
    const float mean_g_xhat = dot_sum * rstd / float(d);
    return rstd * (dy * w - x * rstd * mean_g_xhat);
}
// dw[j] = sum over rows of dy * xhat
TINYLM_HD inline float rmsnorm_dw_term(float dy, float x, float rstd) { return dy * (x * rstd); }

// ---- softmax cross-entropy over a row of logits, without storing probabilities --------------------------------
// An online log-sum-exp: the running maximum and the sum of exp(x - max). Two states merge (a tree reduction),
// so any split of the row gives the same lse up to rounding.
struct softmax_state {
    float max = -INFINITY;
    float sum = 0.0f;
};
TINYLM_HD inline softmax_state softmax_push(softmax_state s, float x) {
    if (x > s.max) {
        s.sum = s.sum * expf(s.max - x) + 1.0f; // exp(-inf) = 0 for the first element
        s.max = x;
    } else {
        s.sum += expf(x - s.max);
    }
    return s;
}
TINYLM_HD inline softmax_state softmax_merge(softmax_state a, softmax_state b) {
    if (b.max == -INFINITY) return a;
    if (a.max == -INFINITY) return b;
    if (a.max >= b.max) return {a.max, a.sum + b.sum * expf(b.max - a.max)};
    return {b.max, b.sum + a.sum * expf(a.max - b.max)};
}
TINYLM_HD inline float softmax_lse(softmax_state s) { return s.max + logf(s.sum); }
// The loss of one row: lse - logit[target] (a row whose target is ignore_index, -100, counts 0 and is skipped).
TINYLM_HD inline float xent_row_loss(float lse, float target_logit) { return lse - target_logit; }
// d loss / d logit_j = (softmax_j - [j == target]) * scale, scale = dloss / counted rows (0 for ignored rows).
// The backward writes it over the logits: the probabilities exist only inside this expression.
TINYLM_HD inline float xent_dlogit(float logit, float lse, bool is_target, float scale) {
    return (expf(logit - lse) - (is_target ? 1.0f : 0.0f)) * scale;
}

// ---- AdamW, the update of optim/adamw.hpp element by element, in double as there --------------------------------
// Coefficients of one step, computed once on the host: decay = 1 - lr * weight_decay (1 for parameters without
// decay), step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t).
struct adamw_coeffs {
    double b1 = 0.9, b2 = 0.95, eps = 1e-8;
    float decay = 1.0f;
    double step_size = 0, bc2_sqrt = 1;
};
TINYLM_HD inline void adamw_element(float& p, float g, float& m, float& v, const adamw_coeffs& c) {
    const double gj = g;
    m = float(c.b1 * m + (1 - c.b1) * gj);
    v = float(c.b2 * v + (1 - c.b2) * gj * gj);
    p = float(double(p) * c.decay - c.step_size * m / (sqrt(double(v)) / c.bc2_sqrt + c.eps));
}
inline adamw_coeffs adamw_step_coeffs(double lr, double b1, double b2, double eps, double weight_decay, long long t,
                                      bool decays) {
    adamw_coeffs c;
    c.b1 = b1;
    c.b2 = b2;
    c.eps = eps;
    c.decay = float(decays ? 1.0 - lr * weight_decay : 1.0);
    c.step_size = lr / (1.0 - std::pow(b1, double(t)));
    c.bc2_sqrt = std::sqrt(1.0 - std::pow(b2, double(t)));
    return c;
}

// ---- CPU drivers: the kernels' work, one row after another (what tests compare the GPU with) ----------------------
inline void rmsnorm_rows(float* y, float* rstd, const float* x, const float* w, long long n, int d, float eps) {
    for (long long r = 0; r < n; ++r) {
        const float* xr = x + r * d;
        float ss = 0;
        for (int j = 0; j < d; ++j)
            ss += xr[j] * xr[j];
        rstd[r] = rmsnorm_rstd(ss, d, eps);
        for (int j = 0; j < d; ++j)
            y[r * d + j] = rmsnorm_y(xr[j], rstd[r], w[j]);
    }
}
// dx assigned; dw (may be null: a frozen weight) accumulated.
inline void rmsnorm_backward_rows(float* dx, float* dw, const float* dy, const float* x, const float* w,
                                  const float* rstd, long long n, int d) {
    for (long long r = 0; r < n; ++r) {
        float dot = 0;
        for (int j = 0; j < d; ++j)
            dot += rmsnorm_dot_term(dy[r * d + j], w[j], x[r * d + j]);
        for (int j = 0; j < d; ++j)
            dx[r * d + j] = rmsnorm_dx(dy[r * d + j], w[j], x[r * d + j], rstd[r], dot, d);
    }
    if (!dw) return;
    for (int j = 0; j < d; ++j) {
        float s = 0;
        for (long long r = 0; r < n; ++r)
            s += rmsnorm_dw_term(dy[r * d + j], x[r * d + j], rstd[r]);
        dw[j] += s;
    }
}
// Per row: lse[r] and loss[r] (0 for an ignored row). Returns the number of counted rows.
inline long long xent_rows(float* loss, float* lse, const float* logits, const std::int32_t* targets, long long n,
                           long long v) {
    long long count = 0;
    for (long long r = 0; r < n; ++r) {
        softmax_state s;
        for (long long j = 0; j < v; ++j)
            s = softmax_push(s, logits[r * v + j]);
        lse[r] = softmax_lse(s);
        const bool counted = targets[r] >= 0;
        loss[r] = counted ? xent_row_loss(lse[r], logits[r * v + targets[r]]) : 0.0f;
        count += counted;
    }
    return count;
}
// logits (n, v) replaced by d loss / d logits for loss = scale * sum of the counted rows' losses.
inline void xent_backward_rows(float* logits, const float* lse, const std::int32_t* targets, long long n, long long v,
                               float scale) {
    for (long long r = 0; r < n; ++r) {
        const float row_scale = targets[r] >= 0 ? scale : 0.0f;
        for (long long j = 0; j < v; ++j)
            logits[r * v + j] = xent_dlogit(logits[r * v + j], lse[r], j == targets[r], row_scale);
    }
}
inline void adamw_elements(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c) {
    for (long long i = 0; i < n; ++i)
        adamw_element(p[i], g[i], m[i], v[i], c);
}

} // namespace tl::gpu
