// tinylm/ops/activation.hpp: the MLP non-linearities, elementwise over (N, F).
//   swiglu:  h = silu(g) * u, silu(g) = g * sigmoid(g)   (Shazeer 2020; Llama, Qwen2)
//            dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  du = dh * silu(g)
//   gelu:    y = x * Phi(x) with the exact erf form (BERT, GPT-2 uses the tanh approximation)
//            dx = dy * (Phi(x) + x * phi(x)); in float, erf to 1.5e-7 by a vectorised rational approximation
// Input gradients are assigned. SwiGLU runs in the input type with simd.hpp's fast_exp (AVX2 copy chosen at run
// time); double inputs keep std::exp for the gradient checks.
#pragma once

#include <tinylm/core/simd.hpp>
#include <tinylm/ops/common.hpp>

#include <cmath>
#include <numbers>
#include <type_traits>

namespace tl {

inline constexpr index_t elementwise_grain = 16384; // elements per parallel block (64 KiB of float)

template <class T>
void swiglu_forward(tensor_view<T> h, cview<T> gate, cview<T> up) {
    expect_same_shape("swiglu", "up", up, gate);
    expect_same_shape("swiglu", "h", h, gate);
    detail::parallel_ranges(gate.numel(), elementwise_grain, [&](index_t begin, index_t end) {
        T* hp = h.data;
        const T *g = gate.data, *u = up.data;
#pragma omp simd
        for (index_t i = begin; i < end; ++i)
            hp[i] = g[i] / (T(1) + detail::fast_exp(-g[i])) * u[i];
    });
}

template <class T>
void swiglu_backward(tensor_view<T> dgate, tensor_view<T> dup, cview<T> dh, cview<T> gate, cview<T> up) {
    expect_same_shape("swiglu_backward", "dh", dh, gate);
    expect_same_shape("swiglu_backward", "dgate", dgate, gate);
    expect_same_shape("swiglu_backward", "dup", dup, gate);
    detail::parallel_ranges(gate.numel(), elementwise_grain, [&](index_t begin, index_t end) {
        T *dg = dgate.data, *du = dup.data;
        const T *g = gate.data, *u = up.data, *d = dh.data;
#pragma omp simd
        for (index_t i = begin; i < end; ++i) {
            const T sig = T(1) / (T(1) + detail::fast_exp(-g[i]));
            dg[i] = d[i] * u[i] * sig * (T(1) + g[i] * (T(1) - sig));
            du[i] = d[i] * g[i] * sig;
        }
    });
}

namespace detail {
// erf(x) for float inside omp simd: Abramowitz & Stegun 7.1.26 on |x|, erf(x) = 1 - poly(t) e^{-x^2} with
// t = 1 / (1 + p |x|) (absolute error below 1.5e-7, under float's resolution of values near 1), sign restored.
// Double keeps std::erf, so that the gradient checks see exact arithmetic.
inline float erf_float(float x) {
    const float ax = std::fabs(x);
    const float t = 1.0f / (1.0f + 0.3275911f * ax);
    const float poly =
        t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float y = 1.0f - poly * fast_exp(-ax * ax);
    return std::copysign(y, x);
}
} // namespace detail

template <class T>
void gelu_forward(tensor_view<T> y, cview<T> x) {
    expect_same_shape("gelu", "y", y, x);
    if constexpr (std::is_same_v<T, float>) {
        detail::parallel_ranges(x.numel(), elementwise_grain, [&](index_t begin, index_t end) {
            float* yp = y.data;
            const float* xp = x.data;
#pragma omp simd
            for (index_t i = begin; i < end; ++i)
                yp[i] = 0.5f * xp[i] * (1.0f + detail::erf_float(xp[i] * 0.70710678118654752f));
        });
    } else {
        const index_t n = x.numel();
#pragma omp parallel for schedule(static)
        for (index_t i = 0; i < n; ++i) {
            const double v = double(x[i]);
            y[i] = T(0.5 * v * (1.0 + std::erf(v * std::numbers::sqrt2 / 2)));
        }
    }
}

template <class T>
void gelu_backward(tensor_view<T> dx, cview<T> dy, cview<T> x) {
    expect_same_shape("gelu_backward", "dx", dx, x);
    constexpr double inv_sqrt_2pi = 0.3989422804014327;
    if constexpr (std::is_same_v<T, float>) {
        detail::parallel_ranges(x.numel(), elementwise_grain, [&](index_t begin, index_t end) {
            float* d = dx.data;
            const float *xp = x.data, *g = dy.data;
#pragma omp simd
            for (index_t i = begin; i < end; ++i) {
                const float v = xp[i];
                const float cdf = 0.5f * (1.0f + detail::erf_float(v * 0.70710678118654752f));
                d[i] = g[i] * (cdf + v * float(inv_sqrt_2pi) * detail::fast_exp(-0.5f * v * v));
            }
        });
    } else {
        const index_t n = x.numel();
#pragma omp parallel for schedule(static)
        for (index_t i = 0; i < n; ++i) {
            const double v = double(x[i]);
            const double cdf = 0.5 * (1.0 + std::erf(v * std::numbers::sqrt2 / 2));
            dx[i] = T(double(dy[i]) * (cdf + v * inv_sqrt_2pi * std::exp(-0.5 * v * v)));
        }
    }
}

} // namespace tl
