// tinylm/core/tensor.hpp: a non-owning, contiguous, row-major view that carries its shape.
//
// Views never own memory: parameters, gradients and activations live in arenas (core/arena.hpp).
// Shape checks go through `expect_shape`, whose error names the op, the tensor and both shapes.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/shape.hpp>

#include <algorithm>
#include <span>
#include <string_view>

namespace tl {

template <class T>
struct tensor_view {
    T* data = nullptr;
    tl::shape shape{};

    constexpr index_t numel() const { return shape.numel(); }
    constexpr index_t dim(int i) const { return shape[i]; }
    constexpr index_t rows() const { return shape.rows(); }
    constexpr index_t cols() const { return shape.cols(); }
    constexpr T& operator[](index_t i) const { return data[i]; }
    constexpr T* begin() const { return data; }
    constexpr T* end() const { return data + numel(); }
    std::span<T> span() const { return {data, std::size_t(numel())}; }
    // Pointer to row r of the (rows, cols) matrix view.
    constexpr T* row(index_t r) const { return data + r * cols(); }

    operator tensor_view<const T>() const { return {data, shape}; }

    // Same memory, another shape with the same element count.
    tensor_view reshaped(tl::shape s) const {
        check(s.numel() == numel(), [&] { return "cannot reshape " + shape.str() + " to " + s.str(); });
        return {data, s};
    }

    void fill(T value) const { std::fill(begin(), end(), value); }
};

template <class T>
using cview = tensor_view<const T>;

template <class T>
inline void expect_shape(std::string_view op, std::string_view what, const tensor_view<T>& t, const shape& want) {
    check(t.shape == want, [&] {
        return std::string(op) + ": " + std::string(what) + " has shape " + t.shape.str() + " but expected " +
               want.str();
    });
}

template <class T, class U>
inline void expect_same_shape(std::string_view op, std::string_view what, const tensor_view<T>& t,
                              const tensor_view<U>& like) {
    expect_shape(op, what, t, like.shape);
}

template <class T, class U>
inline void copy(tensor_view<const T> src, tensor_view<U> dst) {
    expect_same_shape("copy", "destination", dst, src);
    std::copy(src.begin(), src.end(), dst.begin());
}

} // namespace tl
