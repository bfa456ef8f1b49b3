// Random test inputs: never zeros, never a pattern that could hide an indexing bug.
#pragma once

#include <tinylm/core/rng.hpp>
#include <tinylm/core/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace tl::test {

// A tensor that owns its storage, for tests.
template <class T>
struct owned {
    std::vector<T> data;
    tl::shape shape;
    explicit owned(tl::shape s, T value = T{}) : data(std::size_t(s.numel()), value), shape(s) {}
    tensor_view<T> view() { return {data.data(), shape}; }
    cview<T> cv() const { return {data.data(), shape}; }
    operator tensor_view<T>() { return view(); }
    operator cview<T>() const { return cv(); }
};

template <class T>
owned<T> random_tensor(tl::shape s, std::uint64_t seed, double scale = 1.0, double offset = 0.0) {
    owned<T> t(s);
    counter_rng rng(seed, 17);
    for (T& v : t.data)
        v = T(offset + scale * rng.normal());
    return t;
}

template <class To, class From>
owned<To> cast(const owned<From>& src) {
    owned<To> t(src.shape);
    std::transform(src.data.begin(), src.data.end(), t.data.begin(), [](From v) { return To(v); });
    return t;
}

// max |a - b| / max |b|: relative to the scale of the expected tensor, so tiny elements do not dominate.
template <class A, class B>
double rel_error(const std::vector<A>& a, const std::vector<B>& b) {
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
        scale = std::max(scale, std::abs(double(b[i])));
    }
    return scale > 0 ? diff / scale : diff;
}

} // namespace tl::test
