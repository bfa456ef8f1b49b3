// tinylm/ops/pooling.hpp: one vector per row of token states (sentence embeddings), forward and backward.
//   hidden (B, T, d) with lengths (B): row b holds lengths[b] real tokens, then padding that no mode reads.
//   mean:  out[b] = sum_{t < len} hidden[b, t] / len          (sentence-transformers' masked mean)
//   cls:   out[b] = hidden[b, 0]                              (the first token, BERT's [CLS])
//   max:   out[b, j] = max_{t < len} hidden[b, t, j]          (the gradient goes to the arg max, first on ties)
//   l2 normalisation: y = x / max(|x|, eps)                   (torch.nn.functional.normalize, eps 1e-12)
//                     dx = (dy - y (y . dy)) / |x|, or dy / eps when |x| <= eps
// Input gradients are assigned (padding positions get zeros).
#pragma once

#include <tinylm/ops/common.hpp>

#include <cmath>
#include <string>

namespace tl {

enum class pooling_mode : std::uint8_t { mean, cls, max };

inline const char* pooling_name(pooling_mode m) {
    return m == pooling_mode::mean ? "mean" : m == pooling_mode::cls ? "cls" : "max";
}

namespace detail {
inline void check_pool_lengths(const char* who, cview<index_t> lengths, index_t batch, index_t time) {
    expect_shape(who, "lengths", lengths, {batch});
    for (index_t b = 0; b < batch; ++b)
        check(lengths[b] >= 1 && lengths[b] <= time, [&] {
            return std::string(who) + ": lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
                   " is not in [1, " + std::to_string(time) + "]";
        });
}
} // namespace detail

// out (B, d) from hidden (B, T, d); `arg` (B, d), max only: the time index each maximum came from.
template <class T>
void pool_forward(pooling_mode mode, tensor_view<T> out, tensor_view<index_t> arg, cview<T> hidden,
                  cview<index_t> lengths) {
    check(hidden.shape.rank == 3, [&] { return "pool: hidden must be (B, T, d), got " + hidden.shape.str(); });
    const index_t batch = hidden.dim(0), time = hidden.dim(1), d = hidden.dim(2);
    expect_shape("pool", "out", out, {batch, d});
    detail::check_pool_lengths("pool", lengths, batch, time);
    if (mode == pooling_mode::max) expect_shape("pool", "arg", arg, {batch, d});
#pragma omp parallel for schedule(static)
    for (index_t b = 0; b < batch; ++b) {
        const index_t len = lengths[b];
        const T* h = hidden.data + b * time * d;
        T* o = out.row(b);
        if (mode == pooling_mode::cls) {
            for (index_t j = 0; j < d; ++j)
                o[j] = h[j];
        } else if (mode == pooling_mode::mean) {
            for (index_t j = 0; j < d; ++j)
                o[j] = 0;
            for (index_t t = 0; t < len; ++t)
                for (index_t j = 0; j < d; ++j)
                    o[j] += h[t * d + j];
            const T inv = T(1) / T(len);
            for (index_t j = 0; j < d; ++j)
                o[j] *= inv;
        } else {
            index_t* a = arg.row(b);
            for (index_t j = 0; j < d; ++j)
                o[j] = h[j], a[j] = 0;
            for (index_t t = 1; t < len; ++t)
                for (index_t j = 0; j < d; ++j)
                    if (h[t * d + j] > o[j]) o[j] = h[t * d + j], a[j] = t;
        }
    }
}

// dhidden (B, T, d) = d(loss)/d(hidden) given dout (B, d) (assigned; zero where the mode did not read).
template <class T>
void pool_backward(pooling_mode mode, tensor_view<T> dhidden, cview<T> dout, cview<index_t> arg,
                   cview<index_t> lengths) {
    const index_t batch = dhidden.dim(0), time = dhidden.dim(1), d = dhidden.dim(2);
    expect_shape("pool_backward", "dout", dout, {batch, d});
    detail::check_pool_lengths("pool_backward", lengths, batch, time);
#pragma omp parallel for schedule(static)
    for (index_t b = 0; b < batch; ++b) {
        T* dh = dhidden.data + b * time * d;
        const T* g = dout.row(b);
        for (index_t i = 0; i < time * d; ++i)
            dh[i] = 0;
        if (mode == pooling_mode::cls) {
            for (index_t j = 0; j < d; ++j)
                dh[j] = g[j];
        } else if (mode == pooling_mode::mean) {
            const T inv = T(1) / T(lengths[b]);
            for (index_t t = 0; t < lengths[b]; ++t)
                for (index_t j = 0; j < d; ++j)
                    dh[t * d + j] = g[j] * inv;
        } else {
            const index_t* a = arg.row(b);
            for (index_t j = 0; j < d; ++j)
                dh[a[j] * d + j] = g[j];
        }
    }
}

inline constexpr double l2_normalize_eps = 1e-12; // torch.nn.functional.normalize's default

// y (N, d) = rows of x scaled to unit length; norms (N) keeps |x| for the backward.
template <class T>
void l2_normalize_forward(tensor_view<T> y, tensor_view<T> norms, cview<T> x) {
    const index_t n = x.rows(), d = x.cols();
    expect_same_shape("l2_normalize", "y", y, x);
    expect_shape("l2_normalize", "norms", norms, {n});
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) {
        double sq = 0;
        for (index_t j = 0; j < d; ++j)
            sq += double(x.row(i)[j]) * double(x.row(i)[j]);
        norms[i] = T(std::sqrt(sq));
        const double inv = 1.0 / std::max(std::sqrt(sq), l2_normalize_eps);
        for (index_t j = 0; j < d; ++j)
            y.row(i)[j] = T(double(x.row(i)[j]) * inv);
    }
}

template <class T>
void l2_normalize_backward(tensor_view<T> dx, cview<T> dy, cview<T> y, cview<T> norms) {
    const index_t n = y.rows(), d = y.cols();
    expect_same_shape("l2_normalize_backward", "dx", dx, y);
    expect_same_shape("l2_normalize_backward", "dy", dy, y);
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) {
        if (double(norms[i]) <= l2_normalize_eps) { // y = x / eps: linear
            for (index_t j = 0; j < d; ++j)
                dx.row(i)[j] = T(double(dy.row(i)[j]) / l2_normalize_eps);
            continue;
        }
        double dot = 0;
        for (index_t j = 0; j < d; ++j)
            dot += double(y.row(i)[j]) * double(dy.row(i)[j]);
        const double inv = 1.0 / double(norms[i]);
        for (index_t j = 0; j < d; ++j)
            dx.row(i)[j] = T((double(dy.row(i)[j]) - double(y.row(i)[j]) * dot) * inv);
    }
}

} // namespace tl
