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

#include <tinylm/core/error.hpp>
#include <tinylm/core/host_device.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

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

// ---- bf16 storage: round to nearest even, as tl::bf16 (core/dtype.hpp); NaN stays a quiet NaN -----------------
TINYLM_HD inline std::uint16_t bf16_bits(float f) {
    std::uint32_t u = 0;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) return std::uint16_t((u >> 16) | 0x0040u);
    return std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---- residual + RMSNorm fused: resid = x + a, y = RMSNorm(resid) (model/block.hpp's pre-norm step) -------------
// One pass writes the residual stream and the normalised row. The backward is RMSNorm's with dx accumulated
// into the residual stream's gradient, which then is the gradient of x and of a alike (residual_backward).
TINYLM_HD inline float residual_add(float x, float a) { return x + a; }

// ---- SwiGLU: h = silu(g) * u (ops/activation.hpp), with expf where the CPU op has its fast_exp --------------------
TINYLM_HD inline float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }
TINYLM_HD inline float swiglu_h(float g, float u) { return g * sigmoid(g) * u; }
// dg = dh * u * sig * (1 + g * (1 - sig)), du = dh * silu(g)
TINYLM_HD inline void swiglu_grad(float& dg, float& du, float dh, float g, float u) {
    const float sig = sigmoid(g);
    dg = dh * u * sig * (1.0f + g * (1.0f - sig));
    du = dh * g * sig;
}

// ---- GELU, the exact erf form (ops/activation.hpp: BERT's), with erff where the CPU op has its approximation ------
TINYLM_HD inline float gelu_y(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
// dx = dy * (Phi(x) + x * phi(x))
TINYLM_HD inline float gelu_dx(float dy, float x) {
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    return dy * (cdf + x * 0.3989422804014327f * expf(-0.5f * x * x));
}

// ---- LayerNorm with weight and bias (ops/layernorm.hpp): y = (x - mean) * rstd * w + b --------------------------
// Two sums per row: the mean, then the squared deviations from it (not the sum of squares, which cancels).
TINYLM_HD inline float layernorm_rstd(float squared_deviations, int d, float eps) {
    return 1.0f / sqrtf(squared_deviations / float(d) + eps);
}
TINYLM_HD inline float layernorm_y(float x, float mean, float rstd, float w, float b) {
    return (x - mean) * rstd * w + b;
}
// Backward, with g = dy * w and xhat = (x - mean) * rstd: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). The
// row sums g and g * xhat first.
TINYLM_HD inline float layernorm_dx(float dy, float w, float x, float mean, float rstd, float sum_g, float sum_gx,
                                    int d) {
    const float xhat = (x - mean) * rstd;
    return rstd * (dy * w - sum_g / float(d) - xhat * (sum_gx / float(d)));
}
// ---- BERT's embeddings: word[id] + (position[p] + type[t]), tl::encoder's order of the additions -----------------
TINYLM_HD inline float embedding_sum(float word, float position, float type) { return word + (position + type); }

// d(loss)/d(w_j) and d(loss)/d(b_j) of LayerNorm for column j, summed over the n rows in order and added (one
// GPU thread per column, the same order on the CPU).
TINYLM_HD inline float layernorm_dw_term(float dy, float x, float mean, float rstd) { return dy * ((x - mean) * rstd); }
TINYLM_HD inline void layernorm_dwdb_column(float* dw, float* db, const float* dy, const float* x, const float* mean,
                                            const float* rstd, long long n, int d, int j) {
    float sw = 0, sb = 0;
    for (long long r = 0; r < n; ++r) {
        sw += layernorm_dw_term(dy[r * d + j], x[r * d + j], mean[r], rstd[r]);
        sb += dy[r * d + j];
    }
    dw[j] += sw;
    db[j] += sb;
}

// ---- RoPE, Hugging Face's rotate-half layout (ops/rope.hpp): dimension i pairs with i + D/2 ---------------------
// In double, as the CPU op: the same bits on both sides. direction +1 forward, -1 backward (R^T = R(-angle)).
TINYLM_HD inline void rope_rotate_pair(float& x1, float& x2, float cos, float sin, double direction) {
    const double c = double(cos), s = direction * double(sin);
    const double a = double(x1), b = double(x2);
    x1 = float(a * c - b * s);
    x2 = float(b * c + a * s);
}

// ---- embedding: forward a row copy; backward a scatter-add made deterministic by grouping positions by token ----
// The ids of a batch are on the host before they reach the device, so the host groups the positions by token
// (a counting sort, O(n + distinct tokens)); each token's row of dweight is then the sum of its positions' rows
// in position order, one block per token on the GPU: no atomics, the same bits on every run.
struct token_groups {
    std::vector<std::int32_t> tokens;    // distinct tokens, ascending
    std::vector<std::int32_t> offsets;   // tokens.size() + 1: positions of tokens[g] are order[offsets[g] ..]
    std::vector<std::int32_t> positions; // n positions, grouped by token, ascending inside a group
};

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

// ---- the global gradient norm: a sum of squares in double, in a fixed two-level order --------------------------
// The kernel gives element i to thread i mod (grad_norm_blocks x threads), sums each thread's elements in
// order, then a tree per block into grad_norm_blocks partial sums, then a tree over those: the same bits on
// every run. Clipping then scales every element by one float (optim/clip.hpp's rule).
inline constexpr int grad_norm_blocks = 256;
TINYLM_HD inline double square(float g) { return double(g) * double(g); }
// max_norm / (norm + 1e-6) when the norm exceeds max_norm, else 1 (no scaling).
inline float clip_scale(double norm, double max_norm) {
    return norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f;
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
// ids (n) in [0, vocab): checked here, where the host sees them (the kernels trust their input).
inline token_groups group_positions_by_token(const std::int32_t* ids, long long n, long long vocab) {
    check(n < 0x7fffffffLL, "gpu::group_positions_by_token: more than 2^31 - 1 positions");
    std::vector<std::int32_t> count(std::size_t(vocab) + 1, 0);
    for (long long i = 0; i < n; ++i) {
        check(ids[i] >= 0 && ids[i] < vocab, [&] {
            std::string m = "gpu::group_positions_by_token: token id ";
            m += std::to_string(ids[i]);
            m += " at position ";
            m += std::to_string(i);
            m += " is outside the vocabulary [0, ";
            m += std::to_string(vocab);
            m += ")";
            return m;
        });
        ++count[std::size_t(ids[i]) + 1];
    }
    token_groups g;
    std::vector<std::int32_t> start(std::size_t(vocab) + 1, 0);
    for (long long t = 0; t < vocab; ++t) {
        start[std::size_t(t) + 1] = start[std::size_t(t)] + count[std::size_t(t) + 1];
        if (count[std::size_t(t) + 1] > 0) {
            g.tokens.push_back(std::int32_t(t));
            g.offsets.push_back(start[std::size_t(t)]);
        }
    }
    g.offsets.push_back(std::int32_t(n));
    g.positions.resize(std::size_t(n));
    for (long long i = 0; i < n; ++i) // ascending i: each group stays in position order
        g.positions[std::size_t(start[std::size_t(ids[i])]++)] = std::int32_t(i);
    return g;
}
inline void embedding_gather_rows(float* out, const std::int32_t* ids, const float* weight, long long n, int d) {
    for (long long i = 0; i < n; ++i)
        memcpy(out + i * d, weight + (long long)ids[i] * d, sizeof(float) * std::size_t(d));
}
// dweight (vocab, d) += the rows of dout (n, d) at each token's positions, summed in position order.
inline void embedding_scatter_add_rows(float* dweight, const token_groups& g, const float* dout, int d) {
    for (std::size_t t = 0; t < g.tokens.size(); ++t)
        for (int j = 0; j < d; ++j) {
            float s = 0;
            for (std::int32_t p = g.offsets[t]; p < g.offsets[t + 1]; ++p)
                s += dout[(long long)g.positions[std::size_t(p)] * d + j];
            dweight[(long long)g.tokens[t] * d + j] += s;
        }
}
inline void residual_rmsnorm_rows(float* resid, float* y, float* rstd, const float* x, const float* a, const float* w,
                                  long long n, int d, float eps) {
    for (long long i = 0; i < n * d; ++i)
        resid[i] = residual_add(x[i], a[i]);
    rmsnorm_rows(y, rstd, resid, w, n, d, eps);
}
// dresid += RMSNorm's input gradient; dw accumulated (may be null).
inline void residual_rmsnorm_backward_rows(float* dresid, float* dw, const float* dy, const float* resid,
                                           const float* w, const float* rstd, long long n, int d) {
    std::vector<float> dx(std::size_t(n * d));
    rmsnorm_backward_rows(dx.data(), dw, dy, resid, w, rstd, n, d);
    for (long long i = 0; i < n * d; ++i)
        dresid[i] += dx[std::size_t(i)];
}
inline void gelu_rows(float* y, const float* x, long long n) {
    for (long long i = 0; i < n; ++i)
        y[i] = gelu_y(x[i]);
}
inline void gelu_backward_rows(float* dx, const float* dy, const float* x, long long n) {
    for (long long i = 0; i < n; ++i)
        dx[i] = gelu_dx(dy[i], x[i]);
}
inline void layernorm_rows(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                           long long n, int d, float eps) {
    for (long long r = 0; r < n; ++r) {
        const float* xr = x + r * d;
        float sum = 0, dev = 0;
        for (int j = 0; j < d; ++j)
            sum += xr[j];
        mean[r] = sum / float(d);
        for (int j = 0; j < d; ++j)
            dev += (xr[j] - mean[r]) * (xr[j] - mean[r]);
        rstd[r] = layernorm_rstd(dev, d, eps);
        for (int j = 0; j < d; ++j)
            y[r * d + j] = layernorm_y(xr[j], mean[r], rstd[r], w[j], b[j]);
    }
}
// dx assigned; dw, db accumulated (both null: a frozen norm).
inline void layernorm_backward_rows(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                                    const float* mean, const float* rstd, long long n, int d) {
    for (long long r = 0; r < n; ++r) {
        float sum_g = 0, sum_gx = 0;
        for (int j = 0; j < d; ++j) {
            const float g = dy[r * d + j] * w[j];
            sum_g += g;
            sum_gx += g * ((x[r * d + j] - mean[r]) * rstd[r]);
        }
        for (int j = 0; j < d; ++j)
            dx[r * d + j] = layernorm_dx(dy[r * d + j], w[j], x[r * d + j], mean[r], rstd[r], sum_g, sum_gx, d);
    }
    if (!dw) return;
    for (int j = 0; j < d; ++j)
        layernorm_dwdb_column(dw, db, dy, x, mean, rstd, n, d, j);
}
// resid = x + a, y = LayerNorm(resid) (a post-norm block's step, model/block.hpp: norm(x + sublayer(x))); the
// backward is LayerNorm's, whose input gradient is then that of x and of a alike.
inline void residual_layernorm_rows(float* resid, float* y, float* mean, float* rstd, const float* x, const float* a,
                                    const float* w, const float* b, long long n, int d, float eps) {
    for (long long i = 0; i < n * d; ++i)
        resid[i] = residual_add(x[i], a[i]);
    layernorm_rows(y, mean, rstd, resid, w, b, n, d, eps);
}
// out (n, d) = word[ids] + (position[positions] + type[types]); types and type may be null (no token types: + 0).
inline void embedding_sum_rows(float* out, const std::int32_t* ids, const float* word, const std::int32_t* positions,
                               const float* position, const std::int32_t* types, const float* type, long long n,
                               int d) {
    for (long long i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j)
            out[i * d + j] = embedding_sum(word[(long long)ids[i] * d + j], position[(long long)positions[i] * d + j],
                                           type ? type[(long long)types[i] * d + j] : 0.0f);
}
// Biases of (n, d) rows: y += b per row; db += the column sums of dy, rows in order (a thread per column on the
// GPU: deterministic).
TINYLM_HD inline float bias_column_sum(const float* dy, long long n, int d, int j) {
    float s = 0;
    for (long long r = 0; r < n; ++r)
        s += dy[r * d + j];
    return s;
}
inline void bias_add_rows(float* y, const float* b, long long n, int d) {
    for (long long i = 0; i < n * d; ++i)
        y[i] += b[i % d];
}
inline void bias_backward_rows(float* db, const float* dy, long long n, int d) {
    for (int j = 0; j < d; ++j)
        db[j] += bias_column_sum(dy, n, d, j);
}
inline void swiglu_rows(float* h, const float* g, const float* u, long long n) {
    for (long long i = 0; i < n; ++i)
        h[i] = swiglu_h(g[i], u[i]);
}
inline void swiglu_backward_rows(float* dg, float* du, const float* dh, const float* g, const float* u, long long n) {
    for (long long i = 0; i < n; ++i)
        swiglu_grad(dg[i], du[i], dh[i], g[i], u[i]);
}
// x (batch, time, heads, head_dim) rotated in place; cos, sin (table rows, head_dim / 2); positions (batch, time)
// the table row of each token, or null for its index t.
inline void rope_rows(float* x, const float* cos, const float* sin, const std::int64_t* positions, long long batch,
                      long long time, int heads, int head_dim, double direction) {
    const int half = head_dim / 2;
    for (long long bt = 0; bt < batch * time; ++bt) {
        const long long row = positions ? positions[bt] : bt % time;
        for (int h = 0; h < heads; ++h) {
            float* v = x + (bt * heads + h) * head_dim;
            for (int i = 0; i < half; ++i)
                rope_rotate_pair(v[i], v[i + half], cos[row * half + i], sin[row * half + i], direction);
        }
    }
}
inline double sum_of_squares(const float* x, long long n) {
    double s = 0;
    for (long long i = 0; i < n; ++i)
        s += square(x[i]);
    return s;
}
// (Not scale_elements: device.hpp declares the kernel's launcher by that name, and cpu_ops may see both.)
inline void scale_in_place(float* x, float scale, long long n) {
    for (long long i = 0; i < n; ++i)
        x[i] *= scale;
}
inline void adamw_elements(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c) {
    for (long long i = 0; i < n; ++i)
        adamw_element(p[i], g[i], m[i], v[i], c);
}

} // namespace tl::gpu
