// tinylm/ops/attention.hpp: causal scaled dot-product attention with MHA, GQA, MQA and a sliding window.
//
//   q (B, T, Hq, D), k and v (B, T, Hkv, D), out (B, T, Hq, D); Hq is a multiple of Hkv and query head h
//   reads key/value head h / (Hq / Hkv) (MHA: Hkv = Hq; MQA: Hkv = 1; GQA in between), without copies.
//   Query i sees key j when j <= i and, with a window W > 0, i - j < W (Mistral's rule: W keys including
//   itself). Saves lse (B, Hq, T), the log-sum-exp of each query's scores.
//
// Forward keeps a running maximum and sum (online softmax), so no T x T matrix is ever stored; backward
// recomputes each probability from lse, and uses Dq = dout . out (FlashAttention-2's trick) so it needs
// one pass over the keys and no scratch memory:
//   p = exp(s - lse), dp = dout . v, ds = p (dp - Dq), dq += ds k / sqrt(D), dk += ds q / sqrt(D), dv += p dout
// dq, dk and dv are assigned (zeroed here, then accumulated over the keys and queries).
//
// Inference with a KV cache uses the same forward: k and v are then the cache (B, capacity, Hkv, D), the
// queries sit at positions q_start .. q_start + T - 1, and lse may be left empty.
#pragma once

#include <tinylm/ops/common.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tl {

struct attention_shape {
    index_t batch, time, q_heads, kv_heads, head_dim;
    index_t window = 0;   // 0: full causal attention
    index_t key_time = 0; // time extent of k and v (the cache capacity at inference; = time in training)

    index_t first_visible_key(index_t i) const { return window > 0 ? std::max<index_t>(0, i - window + 1) : 0; }
};

namespace detail {
inline attention_shape attention_shape_of(const shape& q, const shape& k, index_t window, index_t q_start = 0) {
    check(q.rank == 4 && k.rank == 4,
          [&] { return "attention: q and k must be (B, T, H, D), got q " + q.str() + " and k " + k.str(); });
    attention_shape s{q[0], q[1], q[2], k[2], q[3], window, k[1]};
    check(k[0] == s.batch && k[1] >= q_start + s.time && k[3] == s.head_dim && s.kv_heads > 0 &&
              s.q_heads % s.kv_heads == 0,
          [&] {
              return "attention: k has shape " + k.str() + ", incompatible with q " + q.str() + " at position " +
                     std::to_string(q_start) +
                     " (same B and D, keys up to the last query, query heads a multiple of "
                     "key/value heads)";
          });
    return s;
}
// Accumulates in T: f32 in training (vectorised), f64 in the gradient checks.
template <class T>
inline T dot(const T* a, const T* b, index_t n) {
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (index_t c = 0; c < n; ++c)
        sum += a[c] * b[c];
    return sum;
}
} // namespace detail

template <class T>
void attention_forward(tensor_view<T> out, tensor_view<T> lse, cview<T> q, cview<T> k, cview<T> v, index_t window = 0,
                       index_t q_start = 0) {
    const attention_shape s = detail::attention_shape_of(q.shape, k.shape, window, q_start);
    expect_same_shape("attention", "v", v, k);
    expect_same_shape("attention", "out", out, q);
    if (lse.data) expect_shape("attention", "lse", lse, {s.batch, s.q_heads, s.time});
    const index_t D = s.head_dim, group = s.q_heads / s.kv_heads;
    const T scale = T(1.0 / std::sqrt(double(D)));
    auto at = [&](auto& t, index_t b, index_t i, index_t h, index_t heads) {
        return t.data + ((b * s.time + i) * heads + h) * D;
    };
    auto at_key = [&](auto& t, index_t b, index_t j, index_t h) {
        return t.data + ((b * s.key_time + j) * s.kv_heads + h) * D;
    };
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t b = 0; b < s.batch; ++b)
        for (index_t h = 0; h < s.q_heads; ++h)
            for (index_t i = 0; i < s.time; ++i) {
                const index_t hk = h / group;
                const T* qi = at(q, b, i, h, s.q_heads);
                T* oi = at(out, b, i, h, s.q_heads);
                std::fill_n(oi, D, T(0));
                T running_max = -std::numeric_limits<T>::infinity(), running_sum = 0;
                const index_t pos = q_start + i;
                for (index_t j = s.first_visible_key(pos); j <= pos; ++j) {
                    const T* kj = at_key(k, b, j, hk);
                    const T* vj = at_key(v, b, j, hk);
                    const T score = detail::dot(qi, kj, D) * scale;
                    if (score > running_max) { // rescale what has been summed so far
                        const T r = std::exp(running_max - score);
                        running_sum *= r;
#pragma omp simd
                        for (index_t c = 0; c < D; ++c)
                            oi[c] *= r;
                        running_max = score;
                    }
                    const T p = std::exp(score - running_max);
                    running_sum += p;
#pragma omp simd
                    for (index_t c = 0; c < D; ++c)
                        oi[c] += p * vj[c];
                }
                const T inv_sum = T(1) / running_sum;
#pragma omp simd
                for (index_t c = 0; c < D; ++c)
                    oi[c] *= inv_sum;
                if (lse.data) lse[(b * s.q_heads + h) * s.time + i] = T(running_max + std::log(running_sum));
            }
}

template <class T>
void attention_backward(tensor_view<T> dq, tensor_view<T> dk, tensor_view<T> dv, cview<T> dout, cview<T> q, cview<T> k,
                        cview<T> v, cview<T> out, cview<T> lse, index_t window = 0) {
    const attention_shape s = detail::attention_shape_of(q.shape, k.shape, window);
    check(s.key_time == s.time, "attention_backward: keys and queries must span the same positions");
    expect_same_shape("attention_backward", "dq", dq, q);
    expect_same_shape("attention_backward", "dk", dk, k);
    expect_same_shape("attention_backward", "dv", dv, v);
    expect_same_shape("attention_backward", "dout", dout, q);
    const index_t D = s.head_dim, group = s.q_heads / s.kv_heads;
    const T scale = T(1.0 / std::sqrt(double(D)));
    auto at = [&](auto& t, index_t b, index_t i, index_t h, index_t heads) {
        return t.data + ((b * s.time + i) * heads + h) * D;
    };
    // One task per (batch, key/value head): it owns dk and dv of that head and dq of its query heads,
    // so no two threads write the same element.
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t b = 0; b < s.batch; ++b)
        for (index_t hk = 0; hk < s.kv_heads; ++hk) {
            for (index_t j = 0; j < s.time; ++j) {
                std::fill_n(at(dk, b, j, hk, s.kv_heads), D, T(0));
                std::fill_n(at(dv, b, j, hk, s.kv_heads), D, T(0));
            }
            for (index_t h = hk * group; h < (hk + 1) * group; ++h)
                for (index_t i = 0; i < s.time; ++i) {
                    const T* qi = at(q, b, i, h, s.q_heads);
                    const T* doi = at(dout, b, i, h, s.q_heads);
                    const T* oi = at(out, b, i, h, s.q_heads);
                    T* dqi = at(dq, b, i, h, s.q_heads);
                    std::fill_n(dqi, D, T(0));
                    const T d_i = detail::dot(doi, oi, D);
                    const T lse_i = lse[(b * s.q_heads + h) * s.time + i];
                    for (index_t j = s.first_visible_key(i); j <= i; ++j) {
                        const T* kj = at(k, b, j, hk, s.kv_heads);
                        const T* vj = at(v, b, j, hk, s.kv_heads);
                        T* dkj = at(dk, b, j, hk, s.kv_heads);
                        T* dvj = at(dv, b, j, hk, s.kv_heads);
                        const T p = std::exp(detail::dot(qi, kj, D) * scale - lse_i);
                        const T ds = p * (detail::dot(doi, vj, D) - d_i) * scale;
#pragma omp simd
                        for (index_t c = 0; c < D; ++c) {
                            dqi[c] += ds * kj[c];
                            dkj[c] += ds * qi[c];
                            dvj[c] += p * doi[c];
                        }
                    }
                }
        }
}

} // namespace tl
