// tinylm/ops/rmsnorm.hpp: RMSNorm (Zhang & Sennrich 2019), as Llama and Qwen2 use it.
//   forward:  y (N, d) = x / sqrt(mean(x^2) + eps) * w (d);   saves rstd (N) = 1 / sqrt(mean(x^2) + eps)
//   backward: with xhat = x * rstd and g = dy * w:
//             dx = rstd * (g - xhat * mean(g * xhat))   (assigned or added)
//             dw += sum over rows of dy * xhat      (skipped when dw is empty: a frozen weight)
#pragma once

#include <tinylm/core/simd.hpp>
#include <tinylm/ops/common.hpp>

#include <cmath>

namespace tl {

template <class T>
void rmsnorm_forward(tensor_view<T> y, tensor_view<T> rstd, cview<T> x, cview<T> weight, double eps) {
    const index_t n = x.rows(), d = x.cols();
    expect_same_shape("rmsnorm", "y", y, x);
    expect_shape("rmsnorm", "weight", weight, {d});
    expect_shape("rmsnorm", "rstd", rstd, {n});
#pragma omp parallel for schedule(static) if (n * d >= detail::min_parallel_work)
    for (index_t r = 0; r < n; ++r) {
        const T* xr = x.row(r);
        T* yr = y.row(r);
        double ss = 0;
        for (index_t j = 0; j < d; ++j)
            ss += double(xr[j]) * double(xr[j]);
        const double s = 1.0 / std::sqrt(ss / double(d) + eps);
        rstd[r] = T(s);
        for (index_t j = 0; j < d; ++j)
            yr[j] = T(double(xr[j]) * s * double(weight[j]));
    }
}

template <class T>
void rmsnorm_backward(tensor_view<T> dx, tensor_view<T> dweight, cview<T> dy, cview<T> x, cview<T> weight,
                      cview<T> rstd, grad_write dx_mode = grad_write::assign) {
    const index_t n = x.rows(), d = x.cols();
    expect_same_shape("rmsnorm_backward", "dx", dx, x);
    expect_same_shape("rmsnorm_backward", "dy", dy, x);
    if (dweight.data) expect_same_shape("rmsnorm_backward", "dweight", dweight, weight);
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < n; ++r) {
        const T* xr = x.row(r);
        const T* dyr = dy.row(r);
        T* dxr = dx.row(r);
        const double s = double(rstd[r]);
        double dot = 0; // mean(g * xhat)
        for (index_t j = 0; j < d; ++j)
            dot += double(dyr[j]) * double(weight[j]) * double(xr[j]) * s;
        dot /= double(d);
        for (index_t j = 0; j < d; ++j) {
            const double xhat = double(xr[j]) * s;
            write_grad(dxr[j], T(s * (double(dyr[j]) * double(weight[j]) - xhat * dot)), dx_mode);
        }
    }
    if (!dweight.data) return; // a frozen norm (LoRA): no weight gradient
    // serial over rows: every row adds into the same dweight
    for (index_t r = 0; r < n; ++r)
        for (index_t j = 0; j < d; ++j)
            dweight[j] += T(double(dy.row(r)[j]) * double(x.row(r)[j]) * double(rstd[r]));
}

} // namespace tl
