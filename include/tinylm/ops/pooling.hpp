// tinylm/ops/pooling.hpp: one vector per row of token states (sentence embeddings), forward and backward.
//   hidden (B, T, d) with lengths (B): row b holds lengths[b] real tokens, then padding that no mode reads.
//   mean:  out[b] = sum_{t < len} hidden[b, t] / len          (sentence-transformers' masked mean)
//   cls:   out[b] = hidden[b, 0]                              (the first token, BERT's [CLS])
//   max:   out[b, j] = max_{t < len} hidden[b, t, j]          (the gradient goes to the arg max, first on ties)
//   l2 normalisation: y = x / max(|x|, eps)                   (torch.nn.functional.normalize, eps 1e-12)
//                     dx = (dy - y (y . dy)) / |x|, or dy / eps when |x| <= eps
//   packed texts (pool_packed_*): hidden (N, d), text b at rows starts[b] .. starts[b] + lengths[b] - 1
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

namespace detail {
// Pooling of B segments of token rows: segment b is rows start_of(b) .. start_of(b) + lengths[b] - 1 of `h` (d wide).
template <class T, class StartOf>
void pool_segments(pooling_mode mode, tensor_view<T> out, tensor_view<index_t> arg, const T* h, index_t d,
                   StartOf start_of, cview<index_t> lengths) {
    const index_t batch = out.dim(0);
#pragma omp parallel for schedule(static)
    for (index_t b = 0; b < batch; ++b) {
        const index_t len = lengths[b];
        const T* rows = h + start_of(b) * d;
        T* o = out.row(b);
        if (mode == pooling_mode::cls) {
            for (index_t j = 0; j < d; ++j)
                o[j] = rows[j];
        } else if (mode == pooling_mode::mean) {
            for (index_t j = 0; j < d; ++j)
                o[j] = 0;
            for (index_t t = 0; t < len; ++t)
                for (index_t j = 0; j < d; ++j)
                    o[j] += rows[t * d + j];
            const T inv = T(1) / T(len);
            for (index_t j = 0; j < d; ++j)
                o[j] *= inv;
        } else {
            index_t* a = arg.row(b);
            for (index_t j = 0; j < d; ++j)
                o[j] = rows[j], a[j] = 0;
            for (index_t t = 1; t < len; ++t)
                for (index_t j = 0; j < d; ++j)
                    if (rows[t * d + j] > o[j]) o[j] = rows[t * d + j], a[j] = t;
        }
    }
}

// The gradient of pool_segments into dh (zero first: rows no segment reads get none).
template <class T, class StartOf>
void pool_segments_backward(pooling_mode mode, tensor_view<T> dh, cview<T> dout, cview<index_t> arg, index_t d,
                            StartOf start_of, cview<index_t> lengths) {
    dh.fill(T(0));
    const index_t batch = dout.dim(0);
#pragma omp parallel for schedule(static)
    for (index_t b = 0; b < batch; ++b) {
        T* rows = dh.data + start_of(b) * d;
        const T* g = dout.row(b);
        if (mode == pooling_mode::cls) {
            for (index_t j = 0; j < d; ++j)
                rows[j] = g[j];
        } else if (mode == pooling_mode::mean) {
            const T inv = T(1) / T(lengths[b]);
            for (index_t t = 0; t < lengths[b]; ++t)
                for (index_t j = 0; j < d; ++j)
                    rows[t * d + j] = g[j] * inv;
        } else {
            const index_t* a = arg.row(b);
            for (index_t j = 0; j < d; ++j)
                rows[a[j] * d + j] = g[j];
        }
    }
}

inline void check_segments(const char* who, cview<index_t> starts, cview<index_t> lengths, index_t batch,
                           index_t rows) {
    expect_shape(who, "starts", starts, {batch});
    expect_shape(who, "lengths", lengths, {batch});
    for (index_t b = 0; b < batch; ++b)
        check(lengths[b] >= 1 && starts[b] >= 0 && starts[b] + lengths[b] <= rows, [&] {
            return std::string(who) + ": segment " + std::to_string(b) + " (start " + std::to_string(starts[b]) +
                   ", length " + std::to_string(lengths[b]) + ") is not inside the " + std::to_string(rows) + " rows";
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
    detail::pool_segments<T>(
        mode, out, arg, hidden.data, d, [time](index_t b) { return b * time; }, lengths);
}

// dhidden (B, T, d) = d(loss)/d(hidden) given dout (B, d) (assigned; zero where the mode did not read).
template <class T>
void pool_backward(pooling_mode mode, tensor_view<T> dhidden, cview<T> dout, cview<index_t> arg,
                   cview<index_t> lengths) {
    const index_t batch = dhidden.dim(0), time = dhidden.dim(1), d = dhidden.dim(2);
    expect_shape("pool_backward", "dout", dout, {batch, d});
    detail::check_pool_lengths("pool_backward", lengths, batch, time);
    detail::pool_segments_backward<T>(
        mode, dhidden, dout, arg, d, [time](index_t b) { return b * time; }, lengths);
}

// The same over packed texts: hidden (N, d) token rows, text b at rows starts[b] .. starts[b] + lengths[b] - 1.
template <class T>
void pool_packed_forward(pooling_mode mode, tensor_view<T> out, tensor_view<index_t> arg, cview<T> hidden,
                         cview<index_t> starts, cview<index_t> lengths) {
    const index_t batch = out.dim(0), d = hidden.cols();
    expect_shape("pool_packed", "out", out, {batch, d});
    detail::check_segments("pool_packed", starts, lengths, batch, hidden.rows());
    if (mode == pooling_mode::max) expect_shape("pool_packed", "arg", arg, {batch, d});
    detail::pool_segments<T>(
        mode, out, arg, hidden.data, d, [&](index_t b) { return starts[b]; }, lengths);
}
template <class T>
void pool_packed_backward(pooling_mode mode, tensor_view<T> dhidden, cview<T> dout, cview<index_t> arg,
                          cview<index_t> starts, cview<index_t> lengths) {
    const index_t d = dhidden.cols();
    expect_shape("pool_packed_backward", "dout", dout, {dout.dim(0), d});
    detail::check_segments("pool_packed_backward", starts, lengths, dout.dim(0), dhidden.rows());
    detail::pool_segments_backward<T>(
        mode, dhidden, dout, arg, d, [&](index_t b) { return starts[b]; }, lengths);
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
