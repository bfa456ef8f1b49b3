// tinylm/ops/linear.hpp: y = x W^T + b, with W stored (out, in) as in PyTorch and Hugging Face.
//   forward:  y (N, out) = x (N, in) W^T (+ b (out))
//   backward: dx (N, in) = dy W        (assigned, or added with grad_write::add)
//             dW (out, in) += dy^T x
//             db (out)     += sum over rows of dy
// An empty bias view (data == nullptr) means no bias; a null dx skips the input gradient.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/ops/common.hpp>

namespace tl {

// The product linear_forward hands to the backend, after checking the shapes and writing the bias into y:
// for callers that run several products together (gemm_each).
template <class T>
gemm_args<T> linear_product(tensor_view<T> y, cview<T> x, cview<T> weight, cview<T> bias = {}) {
    const index_t n = x.rows(), in = x.cols(), out = weight.dim(0);
    check(weight.dim(1) == in, [&] {
        return "linear: x has shape " + x.shape.str() + " but the weight " + weight.shape.str() + " expects " +
               std::to_string(weight.dim(1)) + " input features";
    });
    check(y.rows() == n && y.cols() == out, [&] {
        return "linear: y has shape " + y.shape.str() + ", expected (" + std::to_string(n) + ", " +
               std::to_string(out) + ")";
    });
    if (bias.data) {
        expect_shape("linear", "bias", bias, {out});
        for (index_t r = 0; r < n; ++r)
            std::copy_n(bias.data, out, y.row(r));
    }
    return gemm_args<T>{.trans_b = true,
                        .m = n,
                        .n = out,
                        .k = in,
                        .a = x.data,
                        .lda = in,
                        .b = weight.data,
                        .ldb = in,
                        .beta = T(bias.data ? 1 : 0),
                        .c = y.data,
                        .ldc = out};
}

template <class B, class T>
requires BackendFor<B, T>
void linear_forward(tensor_view<T> y, cview<T> x, cview<T> weight, cview<T> bias = {}) {
    B::gemm(linear_product(y, x, weight, bias));
}

template <class B, class T>
requires BackendFor<B, T>
void linear_backward(tensor_view<T> dx, tensor_view<T> dweight, tensor_view<T> dbias, cview<T> dy, cview<T> x,
                     cview<T> weight, grad_write dx_mode = grad_write::assign) {
    const index_t n = x.rows(), in = x.cols(), out = weight.dim(0);
    check(dy.rows() == n && dy.cols() == out, [&] { return "linear_backward: dy has shape " + dy.shape.str(); });
    if (dx.data) {
        expect_same_shape("linear_backward", "dx", dx, x);
        B::gemm(gemm_args<T>{.m = n,
                             .n = in,
                             .k = out,
                             .a = dy.data,
                             .lda = out,
                             .b = weight.data,
                             .ldb = in,
                             .beta = T(dx_mode == grad_write::add ? 1 : 0),
                             .c = dx.data,
                             .ldc = in});
    }
    expect_same_shape("linear_backward", "dweight", dweight, weight);
    B::gemm(gemm_args<T>{.trans_a = true,
                         .m = out,
                         .n = in,
                         .k = n,
                         .a = dy.data,
                         .lda = out,
                         .b = x.data,
                         .ldb = in,
                         .beta = T(1),
                         .c = dweight.data,
                         .ldc = in});
    if (dbias.data) {
        expect_shape("linear_backward", "dbias", dbias, {out});
        for (index_t r = 0; r < n; ++r)
            for (index_t j = 0; j < out; ++j)
                dbias[j] += dy.row(r)[j];
    }
}

} // namespace tl
