// tinylm/ops/residual.hpp: the residual stream.
//   forward:  y = a + b
//   backward: da += dy, db += dy   (the residual stream is where activation gradients add)
#pragma once

#include <tinylm/core/simd.hpp>
#include <tinylm/ops/common.hpp>

namespace tl {

template <class T>
void residual_forward(tensor_view<T> y, cview<T> a, cview<T> b) {
    expect_same_shape("residual", "b", b, a);
    expect_same_shape("residual", "y", y, a);
    const index_t n = a.numel();
#pragma omp parallel for schedule(static) if (n >= detail::min_parallel_work)
    for (index_t i = 0; i < n; ++i)
        y[i] = a[i] + b[i];
}

template <class T>
void residual_backward(tensor_view<T> da, tensor_view<T> db, cview<T> dy) {
    expect_same_shape("residual_backward", "da", da, dy);
    expect_same_shape("residual_backward", "db", db, dy);
    const index_t n = dy.numel();
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) {
        da[i] += dy[i];
        db[i] += dy[i];
    }
}

} // namespace tl
