// tinylm/ops/rope.hpp: rotary position embedding (Su et al. 2021) in the Hugging Face "rotate half" layout:
// dimension i pairs with i + D/2 (not with i + 1 as in the paper and in Meta's original code).
//   table:    cos, sin (T, D/2) at positions first_position + t, frequency theta^(-2i/D)
//   forward:  x (B, T, H, D) rotated in place by +angle
//   backward: dx (B, T, H, D) rotated in place by -angle (the rotation is orthogonal: R^T = R(-angle))
// positions (B, T), optional: the table row of each token instead of its index t. Packed SFT rows pass the
// position inside each token's document (t - doc_start), so that positions restart at every document.
#pragma once

#include <tinylm/ops/common.hpp>

#include <cmath>
#include <string>

namespace tl {

template <class T>
void rope_table(tensor_view<T> cos, tensor_view<T> sin, double theta, index_t first_position = 0) {
    const index_t t_len = cos.dim(0), half = cos.dim(1);
    expect_same_shape("rope_table", "sin", sin, cos);
    for (index_t i = 0; i < half; ++i) {
        // The inverse frequency is rounded to f32 as transformers does, so long contexts agree with it.
        const float inv_freq = 1.0f / std::pow(float(theta), float(2 * i) / float(2 * half));
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
#pragma omp parallel for collapse(2) schedule(static)
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
