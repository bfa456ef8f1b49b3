// tinylm/ops/cross_entropy.hpp: the output projection fused with softmax cross-entropy, computed over the
// vocabulary in chunks so that at most (N, chunk) logits exist at once (the full (N, V) matrix is 4096 x
// 151936 floats = 2.5 GB for a Qwen2 vocabulary at batch 8 x 512).
//
//   forward:  logits = h (N, d) W^T (V, d);  loss = mean over rows with target != -100 of
//             logsumexp(logits_r) - logits_r[target_r];  saves lse (N)
//   backward: for each chunk, dlogits = (softmax - onehot) * dloss / count (zero on ignored rows);
//             dh = dlogits W (assigned),  dW += dlogits^T h
// The workspace holds one chunk of logits (N, chunk) and two per-row sums; allocate it once, outside
// the training step (cross_entropy_workspace::allocate). exp runs in T (simd.hpp's fast_exp, std::exp for
// double); the row sums are kept in double.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/arena.hpp>
#include <tinylm/core/simd.hpp>
#include <tinylm/ops/common.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tl {

struct cross_entropy_result {
    double loss = 0;   // mean over counted rows (0 when none is counted)
    index_t count = 0; // rows whose target is not ignore_index
};

template <class T>
struct cross_entropy_workspace {
    tensor_view<T> logits;            // (N, chunk)
    tensor_view<double> row_sum;      // (N) running sum of exp(logit - running max)
    tensor_view<double> target_logit; // (N)

    static cross_entropy_workspace allocate(arena& a, index_t rows, index_t chunk) {
        return {a.allocate<T>({rows, chunk}), a.allocate<double>({rows}), a.allocate<double>({rows})};
    }
};

namespace detail {
inline constexpr index_t row_grain = 16; // rows of a logits chunk per parallel block

inline index_t count_targets(cview<token_t> targets, index_t vocab) {
    index_t count = 0;
    for (index_t r = 0; r < targets.numel(); ++r) {
        const token_t t = targets[r];
        check(t == ignore_index || (t >= 0 && t < vocab), [&] {
            return "cross_entropy: target " + std::to_string(t) + " at row " + std::to_string(r) +
                   " is outside the vocabulary [0, " + std::to_string(vocab) + ") and is not -100";
        });
        count += t != ignore_index;
    }
    return count;
}
} // namespace detail

template <class B, class T>
requires BackendFor<B, T> cross_entropy_result head_cross_entropy_forward(tensor_view<T> lse,
                                                                          const cross_entropy_workspace<T>& ws,
                                                                          cview<T> h, cview<T> weight,
                                                                          cview<token_t> targets) {
    const tensor_view<T> scratch = ws.logits;
    const index_t n = h.rows(), d = h.cols(), vocab = weight.dim(0), chunk = scratch.cols();
    check(weight.dim(1) == d, [&] { return "cross_entropy: h " + h.shape.str() + " vs weight " + weight.shape.str(); });
    expect_shape("cross_entropy", "targets", targets, {n});
    expect_shape("cross_entropy", "lse", lse, {n});
    check(scratch.rows() == n && chunk > 0,
          [&] { return "cross_entropy: scratch must be (N, chunk), got " + scratch.shape.str(); });
    const index_t count = detail::count_targets(targets, vocab);

    // Running max and sum per row; lse temporarily holds the running max, target_logit the picked logit.
    std::fill_n(lse.data, n, -std::numeric_limits<T>::infinity());
    check(ws.row_sum.numel() >= n && ws.target_logit.numel() >= n, "cross_entropy: workspace too small");
    double* sum = ws.row_sum.data;
    double* target_logit = ws.target_logit.data;
    std::fill_n(sum, n, 0.0);
    std::fill_n(target_logit, n, 0.0);
    for (index_t v0 = 0; v0 < vocab; v0 += chunk) {
        const index_t width = std::min(chunk, vocab - v0);
        B::gemm(gemm_args<T>{.trans_b = true,
                             .m = n,
                             .n = width,
                             .k = d,
                             .a = h.data,
                             .lda = d,
                             .b = weight.data + v0 * d,
                             .ldb = d,
                             .c = scratch.data,
                             .ldc = chunk});
        detail::parallel_ranges(n, detail::row_grain, [&](index_t r0, index_t r1) {
            for (index_t r = r0; r < r1; ++r) {
                const T* z = scratch.row(r);
                T m = lse[r];
                const T chunk_max = *std::max_element(z, z + width);
                if (chunk_max > m) {
                    sum[r] *= std::exp(double(m) - double(chunk_max));
                    m = chunk_max;
                }
                // exp and partial sums of 512 in T (a vector reduction), the row's sum in double
                double s = 0;
                for (index_t j0 = 0; j0 < width; j0 += 512) {
                    const index_t j1 = std::min(width, j0 + 512);
                    T part = 0;
#pragma omp simd reduction(+ : part)
                    for (index_t j = j0; j < j1; ++j)
                        part += detail::fast_exp(z[j] - m);
                    s += double(part);
                }
                sum[r] += s;
                lse[r] = m;
                const token_t t = targets[r];
                if (t >= v0 && t < v0 + width) target_logit[r] = double(z[t - v0]);
            }
        });
    }
    double total = 0;
    for (index_t r = 0; r < n; ++r) {
        const double l = double(lse[r]) + std::log(sum[r]);
        lse[r] = T(l);
        if (targets[r] != ignore_index) total += l - target_logit[r];
    }
    return {count ? total / double(count) : 0.0, count};
}

template <class B, class T>
requires BackendFor<B, T>
void head_cross_entropy_backward(tensor_view<T> dh, tensor_view<T> dweight, const cross_entropy_workspace<T>& ws,
                                 cview<T> h, cview<T> weight, cview<token_t> targets, cview<T> lse,
                                 double dloss = 1.0) {
    const tensor_view<T> scratch = ws.logits;
    const index_t n = h.rows(), d = h.cols(), vocab = weight.dim(0), chunk = scratch.cols();
    expect_same_shape("cross_entropy_backward", "dh", dh, h);
    if (dweight.data) expect_same_shape("cross_entropy_backward", "dweight", dweight, weight);
    const index_t count = detail::count_targets(targets, vocab);
    const double scale = count ? dloss / double(count) : 0.0;
    for (index_t v0 = 0; v0 < vocab; v0 += chunk) {
        const index_t width = std::min(chunk, vocab - v0);
        B::gemm(gemm_args<T>{.trans_b = true,
                             .m = n,
                             .n = width,
                             .k = d,
                             .a = h.data,
                             .lda = d,
                             .b = weight.data + v0 * d,
                             .ldb = d,
                             .c = scratch.data,
                             .ldc = chunk});
        detail::parallel_ranges(n, detail::row_grain, [&](index_t r0, index_t r1) {
            for (index_t r = r0; r < r1; ++r) {
                T* z = scratch.row(r);
                const token_t t = targets[r];
                if (t == ignore_index) {
                    std::fill_n(z, width, T(0));
                    continue;
                }
                const T l = lse[r], sc = T(scale);
#pragma omp simd
                for (index_t j = 0; j < width; ++j)
                    z[j] = detail::fast_exp(z[j] - l) * sc;
                if (t >= v0 && t < v0 + width) z[t - v0] = T(double(z[t - v0]) - scale);
            }
        });
        B::gemm(gemm_args<T>{.m = n,
                             .n = d,
                             .k = width,
                             .a = scratch.data,
                             .lda = chunk,
                             .b = weight.data + v0 * d,
                             .ldb = d,
                             .beta = T(v0 == 0 ? 0 : 1),
                             .c = dh.data,
                             .ldc = d});
        if (!dweight.data) continue; // a frozen head (LoRA): no weight gradient
        B::gemm(gemm_args<T>{.trans_a = true,
                             .m = width,
                             .n = d,
                             .k = n,
                             .a = scratch.data,
                             .lda = chunk,
                             .b = h.data,
                             .ldb = d,
                             .beta = T(1),
                             .c = dweight.data + v0 * d,
                             .ldc = d});
    }
}

} // namespace tl
