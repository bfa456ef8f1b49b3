// tinylm/ops/rope.hpp: rotary position embedding (Su et al. 2021) in the Hugging Face "rotate half" layout:
// dimension i pairs with i + D/2 (not with i + 1 as in the paper and in Meta's original code).
//   table:    cos, sin (T, D/2) at positions first_position + t, frequency theta^(-2i/D)
//   forward:  x (B, T, H, D) rotated in place by +angle
//   backward: dx (B, T, H, D) rotated in place by -angle (the rotation is orthogonal: R^T = R(-angle))
// positions (B, T), optional: the table row of each token instead of its index t. Packed SFT rows pass the
// position inside each token's document (t - doc_start), so that positions restart at every document.
#pragma once

#include <tinylm/core/simd.hpp>
#include <tinylm/ops/common.hpp>

#include <cmath>
#include <numbers>
#include <string>

namespace tl {

// Llama 3 frequency scaling ("rope_type": "llama3"; transformers' _compute_llama3_parameters): wavelengths
// longer than original_max_position / low_freq_factor are divided by `factor`, shorter than
// original_max_position / high_freq_factor kept, those between interpolated. factor == 0: none.
struct rope_llama3_scaling {
    double factor = 0, low_freq_factor = 1, high_freq_factor = 4;
    double original_max_position = 8192;
};

inline float rope_inverse_frequency(index_t i, index_t half, double theta, const rope_llama3_scaling& scaling = {}) {
    // Rounded to f32 as transformers does, so long contexts agree with it.
    const float inv_freq = 1.0f / std::pow(float(theta), float(2 * i) / float(2 * half));
    if (scaling.factor <= 0) return inv_freq;
    const float factor = float(scaling.factor), low = float(scaling.low_freq_factor),
                high = float(scaling.high_freq_factor), old_len = float(scaling.original_max_position);
    const float wavelen = float(2 * std::numbers::pi) / inv_freq;
    if (wavelen < old_len / high) return inv_freq;                 // high frequencies: kept
    if (wavelen > old_len / low) return inv_freq / factor;         // low frequencies: scaled
    const float smooth = (old_len / wavelen - low) / (high - low); // in between: interpolated
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq;
}

template <class T>
void rope_table(tensor_view<T> cos, tensor_view<T> sin, double theta, index_t first_position = 0,
                const rope_llama3_scaling& scaling = {}) {
    const index_t t_len = cos.dim(0), half = cos.dim(1);
    expect_same_shape("rope_table", "sin", sin, cos);
    for (index_t i = 0; i < half; ++i) {
        const float inv_freq = rope_inverse_frequency(i, half, theta, scaling);
        for (index_t t = 0; t < t_len; ++t) {
            const double angle = double(first_position + t) * double(inv_freq);
            cos[t * half + i] = T(std::cos(angle));
            sin[t * half + i] = T(std::sin(angle));
        }
    }
}

namespace detail {
template <class T>
void rope_rotate(tensor_view<T> x, cview<T> cos, cview<T> sin, double direction, cview<index_t> positions) {
    check(x.shape.rank == 4, [&] { return "rope: x must be (B, T, H, D), got " + x.shape.str(); });
    const index_t b_len = x.dim(0), t_len = x.dim(1), heads = x.dim(2), d = x.dim(3), half = d / 2;
    check(d % 2 == 0, "rope: head width must be even");
    if (!positions.data) {
        expect_shape("rope", "cos", cos, {t_len, half});
    } else {
        expect_shape("rope", "positions", positions, {b_len, t_len});
        check(cos.shape.rank == 2 && cos.dim(1) == half, [&] {
            return "rope: cos has shape " + cos.shape.str() + " but expected (positions, " + std::to_string(half) + ")";
        });
        for (index_t i = 0; i < positions.numel(); ++i)
            check(positions[i] >= 0 && positions[i] < cos.dim(0), [&] {
                return "rope: position " + std::to_string(positions[i]) + " is outside the table of " +
                       std::to_string(cos.dim(0)) + " positions";
            });
    }
    expect_same_shape("rope", "sin", sin, cos);
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() >= detail::min_parallel_work)
    for (index_t b = 0; b < b_len; ++b)
        for (index_t t = 0; t < t_len; ++t)
            for (index_t h = 0; h < heads; ++h) {
                T* v = x.data + ((b * t_len + t) * heads + h) * d;
                const index_t row = positions.data ? positions[b * t_len + t] : t;
                for (index_t i = 0; i < half; ++i) {
                    const double c = double(cos[row * half + i]), s = direction * double(sin[row * half + i]);
                    const double x1 = double(v[i]), x2 = double(v[i + half]);
                    v[i] = T(x1 * c - x2 * s);
                    v[i + half] = T(x2 * c + x1 * s);
                }
            }
}
} // namespace detail

template <class T>
void rope_forward(tensor_view<T> x, cview<T> cos, cview<T> sin, cview<index_t> positions = {}) {
    detail::rope_rotate(x, cos, sin, +1.0, positions);
}
template <class T>
void rope_backward(tensor_view<T> dx, cview<T> cos, cview<T> sin, cview<index_t> positions = {}) {
    detail::rope_rotate(dx, cos, sin, -1.0, positions);
}

} // namespace tl
