// tinylm/cuda/ranking_row.hpp: the per-element and per-row arithmetic of a sentence encoder's contrastive step on
// the device (src/cuda/ranking.cu; cuda/ranking_step.hpp drives it), as __host__ __device__ functions, so that the
// kernels and the CPU executor (cpu_ops) run the same code. No CUDA header, no core/tensor.hpp or ops/*.hpp here
// (nvcc cannot compile those warning-free); the formulas are those of ops/pooling.hpp and embed/ranking_loss.hpp:
//
//   pooling of text b, a segment of hidden: its len_b tokens start at token start_b (b T when every text has its
//   own row of T tokens; anywhere in a row when texts are packed end to end), padding and other texts never read:
//     mean  e[b, j] = (sum_{t < len} h[b, t, j]) * (1 / len)      (f32 sum in t order, as pool_forward)
//     cls   e[b, j] = h[b, 0, j]
//     max   e[b, j] = max_{t < len} h[b, t, j], arg the first t   (the gradient goes to the arg max)
//   rows normalised: y = x / max(|x|, 1e-12) with |x| in double (torch's F.normalize; the sentence encoder's
//     Normalize module keeps |x| as a float, the ranking loss as a double: `float_norm` says which)
//     backward dx = (dy - y (y . dy)) / |x|, or dy / 1e-12 where |x| <= 1e-12
//   ranking loss over the scores S (B, M) = scale u_a u_c^T (a product):
//     row_lse_i = logsumexp_j S_ij (double), col_lse_j = logsumexp_{i < B} S_ij for j < B (symmetric)
//     loss = mean_i (row_lse_i - S_ii) [+ mean_j (col_lse_j - S_jj), then / 2]
//     dS_ij = w (exp(S_ij - row_lse_i) - [i == j]) [+ w (exp(S_ij - col_lse_j) - [i == j]) for j < B, symmetric]
//     with w = 1 / B (symmetric: 1 / (2 B))
// One thread per output element or per row, each a sequential loop in the CPU op's order: the kernels give the CPU
// drivers' values to the last bits of the device's exp and log (src/cuda compiles with --fmad=false).
#pragma once

#include <tinylm/cuda/row_math.hpp>

#include <cmath>
#include <cstdint>

namespace tl::gpu {

// tl::pooling_mode's values (ops/pooling.hpp), without that header.
enum class pool_kind : int { mean = 0, cls = 1, max = 2 };

inline constexpr double unit_norm_clamp = 1e-12; // torch.nn.functional.normalize's eps

// ---- pooling: element j of text b over its len rows (stride d) starting at h ------------------------------------
TINYLM_HD inline float pool_element(pool_kind mode, const float* h, long long len, int d, int j, std::int32_t* arg) {
    if (mode == pool_kind::cls) return h[j];
    if (mode == pool_kind::mean) {
        float s = 0;
        for (long long t = 0; t < len; ++t)
            s += h[t * d + j];
        return s * (1.0f / float(len));
    }
    float m = h[j];
    std::int32_t a = 0;
    for (long long t = 1; t < len; ++t)
        if (h[t * d + j] > m) m = h[t * d + j], a = std::int32_t(t);
    *arg = a;
    return m;
}
// d hidden of the token t of text b's segment (t = its index minus start_b), column j, given d e[b, j] (assigned;
// 0 past the text's end and on the tokens the mode does not read).
TINYLM_HD inline float pool_grad_element(pool_kind mode, float de, long long t, long long len, std::int32_t arg) {
    if (t >= len) return 0.0f;
    if (mode == pool_kind::cls) return t == 0 ? de : 0.0f;
    if (mode == pool_kind::mean) return de * (1.0f / float(len));
    return t == arg ? de : 0.0f;
}

// ---- row normalisation ---------------------------------------------------------------------------------------
// y = x / max(|x|, eps); returns |x| (rounded to float first when float_norm: the value the backward then sees).
TINYLM_HD inline double unit_row(float* y, const float* x, int d, bool float_norm) {
    double s = 0;
    for (int k = 0; k < d; ++k)
        s += double(x[k]) * double(x[k]);
    const double norm = sqrt(s);
    const double inv = 1.0 / (norm > unit_norm_clamp ? norm : unit_norm_clamp);
    for (int k = 0; k < d; ++k)
        y[k] = float(double(x[k]) * inv);
    return float_norm ? double(float(norm)) : norm;
}
// In place: g (d) = d loss / d y becomes d loss / d x, with y = the unit row and norm its |x|.
TINYLM_HD inline void unit_row_backward(float* g, const float* y, double norm, int d) {
    if (norm <= unit_norm_clamp) {
        for (int k = 0; k < d; ++k)
            g[k] = float(double(g[k]) / unit_norm_clamp);
        return;
    }
    double dot = 0;
    for (int k = 0; k < d; ++k)
        dot += double(y[k]) * double(g[k]);
    const double inv = 1.0 / norm;
    for (int k = 0; k < d; ++k)
        g[k] = float((double(g[k]) - double(y[k]) * dot) * inv);
}

// ---- the ranking loss's rows and columns -------------------------------------------------------------------
// logsumexp of n scores s[0], s[stride], ... in double (a row: stride 1; a column of (B, M): stride M).
TINYLM_HD inline double scores_lse(const float* s, long long n, long long stride) {
    double mx = double(s[0]);
    for (long long i = 1; i < n; ++i)
        mx = double(s[i * stride]) > mx ? double(s[i * stride]) : mx;
    double sum = 0;
    for (long long i = 0; i < n; ++i)
        sum += exp(double(s[i * stride]) - mx);
    return mx + log(sum);
}
// d loss / d S_ij given the score s = S_ij, row i's lse, column j's (read only for j < B when symmetric), w.
TINYLM_HD inline float ranking_dscore(float s, long long i, long long j, long long b, double row_lse, double col_lse,
                                      double w, bool symmetric) {
    const double x = double(s);
    if (symmetric && j < b) return float(w * (exp(x - row_lse) + exp(x - col_lse) - (i == j ? 2.0 : 0.0)));
    return float(w * (exp(x - row_lse) - (i == j ? 1.0 : 0.0)));
}

// ---- CPU drivers: the kernels' work, one element or row after another --------------------------------------
// pooled (n, d) from hidden (tokens, d): text b's lengths[b] tokens from token starts[b] on; arg (n, d), max only
// (may be null else).
inline void pool_segments(pool_kind mode, float* pooled, std::int32_t* arg, const float* hidden,
                          const std::int64_t* starts, const std::int64_t* lengths, long long n, int d) {
    for (long long b = 0; b < n; ++b)
        for (int j = 0; j < d; ++j)
            pooled[b * d + j] = pool_element(mode, hidden + starts[b] * d, lengths[b], d, j,
                                             mode == pool_kind::max ? arg + b * d + j : nullptr);
}
// d hidden of token r (of `tokens`), column j: owner[r] is the text holding token r, or -1 (padding).
TINYLM_HD inline float pool_grad_token(pool_kind mode, const float* dpooled, const std::int32_t* arg,
                                       const std::int32_t* owner, const std::int64_t* starts,
                                       const std::int64_t* lengths, long long r, int d, int j) {
    const long long b = owner[r];
    if (b < 0) return 0.0f;
    const long long e = b * d + j;
    return pool_grad_element(mode, dpooled[e], r - starts[b], lengths[b], mode == pool_kind::max ? arg[e] : 0);
}
// dhidden (tokens, d) assigned from dpooled (n, d): every token, 0 on padding.
inline void pool_backward_segments(pool_kind mode, float* dhidden, const float* dpooled, const std::int32_t* arg,
                                   const std::int32_t* owner, const std::int64_t* starts, const std::int64_t* lengths,
                                   long long tokens, int d) {
    for (long long r = 0; r < tokens; ++r)
        for (int j = 0; j < d; ++j)
            dhidden[r * d + j] = pool_grad_token(mode, dpooled, arg, owner, starts, lengths, r, d, j);
}
inline void unit_rows(float* y, double* norms, const float* x, long long n, int d, bool float_norm) {
    for (long long r = 0; r < n; ++r)
        norms[r] = unit_row(y + r * d, x + r * d, d, float_norm);
}
inline void unit_rows_backward(float* g, const float* y, const double* norms, long long n, int d) {
    for (long long r = 0; r < n; ++r)
        unit_row_backward(g + r * d, y + r * d, norms[r], d);
}
// Over scores (b, m): row_lse (b); when symmetric col_lse (b) of the first b columns; terms (2 b): row_lse_i - S_ii,
// then col_lse_i - S_ii (0 unless symmetric): the loss is their sum in this order over b (or 2 b).
inline void ranking_lse_rows(double* row_lse, double* col_lse, double* terms, const float* scores, long long b,
                             long long m, bool symmetric) {
    for (long long i = 0; i < b; ++i) {
        row_lse[i] = scores_lse(scores + i * m, m, 1);
        terms[i] = row_lse[i] - double(scores[i * m + i]);
    }
    for (long long j = 0; j < b; ++j) {
        col_lse[j] = symmetric ? scores_lse(scores + j, b, m) : 0.0;
        terms[b + j] = symmetric ? col_lse[j] - double(scores[j * m + j]) : 0.0;
    }
}
// scores (b, m) replaced by d loss / d scores.
inline void ranking_dscores_rows(float* scores, const double* row_lse, const double* col_lse, long long b, long long m,
                                 double w, bool symmetric) {
    for (long long i = 0; i < b; ++i)
        for (long long j = 0; j < m; ++j)
            scores[i * m + j] =
                ranking_dscore(scores[i * m + j], i, j, b, row_lse[i], j < b ? col_lse[j] : 0.0, w, symmetric);
}

} // namespace tl::gpu
