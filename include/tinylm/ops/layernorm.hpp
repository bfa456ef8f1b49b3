// tinylm/ops/layernorm.hpp: LayerNorm (Ba et al. 2016) with weight and bias.
//   forward:  y (N, d) = (x - mean) * rstd * w + b;   saves mean (N), rstd (N)
//   backward: with xhat = (x - mean) * rstd and g = dy * w:
//             dx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (assigned or added)
//             dw += sum dy * xhat;  db += sum dy
#pragma once

#include <tinylm/core/simd.hpp>
#include <tinylm/ops/common.hpp>

#include <cmath>

namespace tl {

template <class T>
void layernorm_forward(tensor_view<T> y, tensor_view<T> mean, tensor_view<T> rstd, cview<T> x, cview<T> weight,
                       cview<T> bias, double eps) {
    const index_t n = x.rows(), d = x.cols();
    expect_same_shape("layernorm", "y", y, x);
    expect_shape("layernorm", "weight", weight, {d});
    expect_shape("layernorm", "bias", bias, {d});
    expect_shape("layernorm", "mean", mean, {n});
    expect_shape("layernorm", "rstd", rstd, {n});
#pragma omp parallel for schedule(static) if (n * d >= detail::min_parallel_work)
    for (index_t r = 0; r < n; ++r) {
        const T* xr = x.row(r);
        double mu = 0;
        for (index_t j = 0; j < d; ++j)
            mu += double(xr[j]);
        mu /= double(d);
        double var = 0;
        for (index_t j = 0; j < d; ++j)
            var += (double(xr[j]) - mu) * (double(xr[j]) - mu);
        const double s = 1.0 / std::sqrt(var / double(d) + eps);
        mean[r] = T(mu);
        rstd[r] = T(s);
        for (index_t j = 0; j < d; ++j)
            y.row(r)[j] = T((double(xr[j]) - mu) * s * double(weight[j]) + double(bias[j]));
    }
}

template <class T>
void layernorm_backward(tensor_view<T> dx, tensor_view<T> dweight, tensor_view<T> dbias, cview<T> dy, cview<T> x,
                        cview<T> weight, cview<T> mean, cview<T> rstd, grad_write dx_mode = grad_write::assign) {
    const index_t n = x.rows(), d = x.cols();
    expect_same_shape("layernorm_backward", "dx", dx, x);
    expect_same_shape("layernorm_backward", "dy", dy, x);
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < n; ++r) {
        const T* xr = x.row(r);
        const T* dyr = dy.row(r);
        const double mu = double(mean[r]), s = double(rstd[r]);
        double mean_g = 0, mean_gx = 0;
        for (index_t j = 0; j < d; ++j) {
            const double g = double(dyr[j]) * double(weight[j]);
            mean_g += g;
            mean_gx += g * (double(xr[j]) - mu) * s;
        }
        mean_g /= double(d);
        mean_gx /= double(d);
        for (index_t j = 0; j < d; ++j) {
            const double xhat = (double(xr[j]) - mu) * s;
            const double g = double(dyr[j]) * double(weight[j]);
            write_grad(dx.row(r)[j], T(s * (g - mean_g - xhat * mean_gx)), dx_mode);
        }
    }
    if (!dweight.data) return; // a frozen norm (LoRA): no weight or bias gradient
    for (index_t r = 0; r < n; ++r)
        for (index_t j = 0; j < d; ++j) {
            const double xhat = (double(x.row(r)[j]) - double(mean[r])) * double(rstd[r]);
            dweight[j] += T(double(dy.row(r)[j]) * xhat);
            dbias[j] += dy.row(r)[j];
        }
}

} // namespace tl
