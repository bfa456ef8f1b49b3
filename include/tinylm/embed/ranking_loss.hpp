// tinylm/embed/ranking_loss.hpp: the multiple-negatives ranking loss on sentence embeddings (InfoNCE with
// in-batch negatives), as sentence-transformers' MultipleNegativesRankingLoss and, with `symmetric`,
// MultipleNegativesSymmetricRankingLoss.
//
//   anchors a (B, d), positives p (B, d), hard negatives n (B*H, d) with H >= 0 per anchor (anchor b's
//   negatives are rows b*H .. b*H+H-1; every anchor scores every negative, so the order only decides which
//   gradient row belongs to which text).
//   forward:  u = x / max(|x|, 1e-12) for every row (cosine similarity, as torch's F.normalize)
//             candidates c = [p; n] (M = B + B*H rows);  S (B, M) = scale * u_a u_c^T
//             loss = mean_i (logsumexp_j S_ij - S_ii)                          (anchor -> candidates)
//             symmetric: loss = (that + mean_j (logsumexp_i S_ij - S_jj)) / 2  (positive j -> anchors, j < B)
//   backward: dS = dloss/B * (softmax_rows(S) - I) [* 1/2, plus the column term for j < B when symmetric]
//             du_a = scale * dS u_c,  du_c = scale * dS^T u_a
//             dx = (du - u (u . du)) / |x|   (the normalisation's Jacobian; du / 1e-12 below the clamp)
// Input gradients are assigned (docs/conventions.md). The workspace keeps what backward needs from forward
// (normalised rows, norms, scores, log-sum-exps); backward overwrites the scores, so call it once per forward.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/arena.hpp>
#include <tinylm/core/simd.hpp>
#include <tinylm/ops/common.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace tl::embed {

struct ranking_loss_options {
    double scale = 20.0;    // sentence-transformers' default (temperature 0.05)
    bool symmetric = false; // also rank the anchors for each positive (MultipleNegativesSymmetricRankingLoss)
};

template <class T>
struct ranking_loss_workspace {
    tensor_view<T> anchors_unit;        // (B, d)
    tensor_view<T> candidates_unit;     // (M, d): positives then negatives
    tensor_view<T> scores;              // (B, M); dS after backward
    tensor_view<double> anchor_norm;    // (B)
    tensor_view<double> candidate_norm; // (M)
    tensor_view<double> row_lse;        // (B) logsumexp over candidates
    tensor_view<double> col_lse;        // (B) logsumexp over anchors, for positive j (symmetric only)

    // n_anchors B, hard negatives per anchor H, embedding width d.
    static ranking_loss_workspace allocate(arena& a, index_t n_anchors, index_t negatives_per_anchor, index_t dim) {
        const index_t m = n_anchors * (1 + negatives_per_anchor);
        return {a.allocate<T>({n_anchors, dim}), a.allocate<T>({m, dim}), a.allocate<T>({n_anchors, m}),
                a.allocate<double>({n_anchors}), a.allocate<double>({m}), a.allocate<double>({n_anchors}),
                a.allocate<double>({n_anchors})};
    }
    index_t n_anchors() const { return anchors_unit.rows(); }
    index_t n_candidates() const { return candidates_unit.rows(); }
    index_t dim() const { return anchors_unit.cols(); }
};

namespace detail {
inline constexpr double norm_clamp = 1e-12; // torch.nn.functional.normalize's eps
inline constexpr index_t loss_row_grain = 8;

// dst row r = src row r / max(|src_r|, eps); norm[r] = |src_r|.
template <class T>
void normalize_rows(T* dst, double* norm, cview<T> src) {
    const index_t d = src.cols();
    tl::detail::parallel_ranges(src.rows(), 64, [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
            const T* x = src.row(r);
            double s = 0;
            for (index_t k = 0; k < d; ++k)
                s += double(x[k]) * double(x[k]);
            norm[r] = std::sqrt(s);
            const double inv = 1.0 / std::max(norm[r], norm_clamp);
            for (index_t k = 0; k < d; ++k)
                dst[r * d + k] = T(double(x[k]) * inv);
        }
    });
}

// In place: du (rows, d) -> dx = (du - u (u . du)) / |x|, or du / eps where the norm was clamped.
template <class T>
void normalize_rows_backward(T* grad, const T* unit, const double* norm, index_t rows, index_t d) {
    tl::detail::parallel_ranges(rows, 64, [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
            T* g = grad + r * d;
            const T* u = unit + r * d;
            if (norm[r] <= norm_clamp) {
                for (index_t k = 0; k < d; ++k)
                    g[k] = T(double(g[k]) / norm_clamp);
                continue;
            }
            double dot = 0;
            for (index_t k = 0; k < d; ++k)
                dot += double(u[k]) * double(g[k]);
            const double inv = 1.0 / norm[r];
            for (index_t k = 0; k < d; ++k)
                g[k] = T((double(g[k]) - double(u[k]) * dot) * inv);
        }
    });
}

template <class T>
void check_ranking_inputs(std::string_view op, const ranking_loss_workspace<T>& ws, cview<T> anchors,
                          cview<T> positives, cview<T> negatives) {
    const index_t b = ws.n_anchors(), d = ws.dim(), m = ws.n_candidates();
    check(b > 0, [&] { return std::string(op) + ": the batch has no anchors"; });
    expect_shape(op, "anchors", anchors, {b, d});
    expect_shape(op, "positives", positives, {b, d});
    expect_shape(op, "negatives", negatives, {m - b, d});
    expect_shape(op, "scores", ws.scores, {b, m});
}
} // namespace detail

// Returns the loss; fills the workspace for ranking_loss_backward. `negatives` may have 0 rows.
template <class Bk, class T>
requires BackendFor<Bk, T>
double ranking_loss_forward(const ranking_loss_workspace<T>& ws, cview<T> anchors, cview<T> positives,
                            cview<T> negatives, const ranking_loss_options& opt = {}) {
    detail::check_ranking_inputs("ranking_loss", ws, anchors, positives, negatives);
    check(opt.scale > 0, "ranking_loss: scale must be positive");
    const index_t b = ws.n_anchors(), d = ws.dim(), m = ws.n_candidates();
    detail::normalize_rows(ws.anchors_unit.data, ws.anchor_norm.data, anchors);
    detail::normalize_rows(ws.candidates_unit.data, ws.candidate_norm.data, positives);
    if (m > b) detail::normalize_rows(ws.candidates_unit.data + b * d, ws.candidate_norm.data + b, negatives);
    Bk::gemm(gemm_args<T>{.trans_b = true,
                          .m = b,
                          .n = m,
                          .k = d,
                          .alpha = T(opt.scale),
                          .a = ws.anchors_unit.data,
                          .lda = d,
                          .b = ws.candidates_unit.data,
                          .ldb = d,
                          .c = ws.scores.data,
                          .ldc = m});
    // Row log-sum-exps in double: the scores are bounded by +-scale, the sums are not.
    tl::detail::parallel_ranges(b, detail::loss_row_grain, [&](index_t r0, index_t r1) {
        for (index_t i = r0; i < r1; ++i) {
            const T* s = ws.scores.row(i);
            const double mx = double(*std::max_element(s, s + m));
            double sum = 0;
            for (index_t j = 0; j < m; ++j)
                sum += std::exp(double(s[j]) - mx);
            ws.row_lse[i] = mx + std::log(sum);
        }
    });
    double forward = 0, backward = 0;
    for (index_t i = 0; i < b; ++i)
        forward += ws.row_lse[i] - double(ws.scores.row(i)[i]);
    if (!opt.symmetric) return forward / double(b);
    // Positive j against all anchors: column j of the (B, B) positive block.
    for (index_t j = 0; j < b; ++j) {
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (index_t i = 0; i < b; ++i)
            mx = std::max(mx, double(ws.scores.row(i)[j]));
        for (index_t i = 0; i < b; ++i)
            sum += std::exp(double(ws.scores.row(i)[j]) - mx);
        ws.col_lse[j] = mx + std::log(sum);
        backward += ws.col_lse[j] - double(ws.scores.row(j)[j]);
    }
    return (forward + backward) / (2.0 * double(b));
}

// Gradients of the unnormalised embeddings (assigned). Uses and overwrites the workspace of the forward call
// with the same options.
template <class Bk, class T>
requires BackendFor<Bk, T>
void ranking_loss_backward(tensor_view<T> danchors, tensor_view<T> dpositives, tensor_view<T> dnegatives,
                           const ranking_loss_workspace<T>& ws, const ranking_loss_options& opt = {},
                           double dloss = 1.0) {
    const index_t b = ws.n_anchors(), d = ws.dim(), m = ws.n_candidates();
    expect_shape("ranking_loss_backward", "danchors", danchors, {b, d});
    expect_shape("ranking_loss_backward", "dpositives", dpositives, {b, d});
    expect_shape("ranking_loss_backward", "dnegatives", dnegatives, {m - b, d});
    const double w = dloss / double(b) * (opt.symmetric ? 0.5 : 1.0);
    // dS in place over the scores; each element is read once, so rows can run in parallel. With `symmetric`,
    // the positive block (j < B) also gets the column softmax exp(S_ij - col_lse_j) minus the identity.
    if (opt.symmetric) {
        tl::detail::parallel_ranges(b, detail::loss_row_grain, [&](index_t r0, index_t r1) {
            for (index_t i = r0; i < r1; ++i) {
                T* s = ws.scores.row(i);
                const double lse = ws.row_lse[i];
                for (index_t j = 0; j < b; ++j) {
                    const double x = double(s[j]);
                    s[j] = T(w * (std::exp(x - lse) + std::exp(x - ws.col_lse[j]) - (i == j ? 2.0 : 0.0)));
                }
                for (index_t j = b; j < m; ++j)
                    s[j] = T(w * std::exp(double(s[j]) - lse));
            }
        });
    } else {
        tl::detail::parallel_ranges(b, detail::loss_row_grain, [&](index_t r0, index_t r1) {
            for (index_t i = r0; i < r1; ++i) {
                T* s = ws.scores.row(i);
                const double lse = ws.row_lse[i];
                for (index_t j = 0; j < m; ++j)
                    s[j] = T(w * (std::exp(double(s[j]) - lse) - (i == j ? 1.0 : 0.0)));
            }
        });
    }
    const T scale = T(opt.scale);
    // du_a = scale * dS u_c;  du_p = scale * dS[:, :B]^T u_a;  du_n = scale * dS[:, B:]^T u_a
    Bk::gemm(gemm_args<T>{.m = b,
                          .n = d,
                          .k = m,
                          .alpha = scale,
                          .a = ws.scores.data,
                          .lda = m,
                          .b = ws.candidates_unit.data,
                          .ldb = d,
                          .c = danchors.data,
                          .ldc = d});
    Bk::gemm(gemm_args<T>{.trans_a = true,
                          .m = b,
                          .n = d,
                          .k = b,
                          .alpha = scale,
                          .a = ws.scores.data,
                          .lda = m,
                          .b = ws.anchors_unit.data,
                          .ldb = d,
                          .c = dpositives.data,
                          .ldc = d});
    if (m > b)
        Bk::gemm(gemm_args<T>{.trans_a = true,
                              .m = m - b,
                              .n = d,
                              .k = b,
                              .alpha = scale,
                              .a = ws.scores.data + b,
                              .lda = m,
                              .b = ws.anchors_unit.data,
                              .ldb = d,
                              .c = dnegatives.data,
                              .ldc = d});
    detail::normalize_rows_backward(danchors.data, ws.anchors_unit.data, ws.anchor_norm.data, b, d);
    detail::normalize_rows_backward(dpositives.data, ws.candidates_unit.data, ws.candidate_norm.data, b, d);
    if (m > b)
        detail::normalize_rows_backward(dnegatives.data, ws.candidates_unit.data + b * d, ws.candidate_norm.data + b,
                                        m - b, d);
}

} // namespace tl::embed
