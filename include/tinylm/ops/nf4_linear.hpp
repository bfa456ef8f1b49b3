// tinylm/ops/nf4_linear.hpp: y = x W^T + b with a frozen NF4 weight W (out, in) (ops/nf4.hpp), the base layer of
// QLoRA. W is never materialised: each call dequantises a tile of rows of W into a caller-provided scratch buffer
// (tile, in) and hands the tile to the backend's gemm, tile after tile.
//   forward:  y (N, out) = x (N, in) W^T (+ b (out))      y[:, r:r+k] = x tile^T for tile = W[r:r+k, :]
//   backward: dx (N, in) = dy W   (assigned, or added with grad_write::add)   dx += dy[:, r:r+k] tile
//             no weight gradient: the base is frozen (LoRA adapters carry the trainable part).
// The scratch view sets the tile: any (k, in) with k >= 1 (k > out is fine); nf4_scratch_shape(w, k) gives
// (min(k, out), in). Memory beyond the packed weight is k * in elements; larger tiles mean fewer, larger gemm
// calls (the decoder uses 512 rows). Tiles are dequantised in parallel (OpenMP). The result equals linear_forward /
// linear_backward on dequantize(w) up to f32 summation order (backward sums the tiles' products).
// An empty bias view (data == nullptr) means no bias.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/ops/common.hpp>
#include <tinylm/ops/nf4.hpp>

#include <algorithm>

namespace tl {

// Shape of a scratch buffer holding `tile_rows` rows of w (fewer when w has fewer rows).
inline shape nf4_scratch_shape(const nf4_tensor& w, index_t tile_rows = 256) {
    return {std::max<index_t>(1, std::min(tile_rows, w.out)), w.in};
}

namespace detail {
// Dequantises rows [r0, r0 + k) of w into scratch, in parallel over groups of 16 rows (each group is
// dequantize_rows on its own range, so the values are those of one call).
template <class T>
void dequantize_tile(const nf4_tensor& w, index_t r0, index_t k, T* scratch) {
    const index_t groups = (k + 15) / 16;
#pragma omp parallel for schedule(static)
    for (index_t g = 0; g < groups; ++g) {
        const index_t first = g * 16, rows = std::min<index_t>(16, k - first);
        dequantize_rows(w, r0 + first, tensor_view<T>{scratch + first * w.in, {rows, w.in}});
    }
}

template <class T>
void check_nf4_scratch(std::string_view op, const nf4_tensor& w, const tensor_view<T>& scratch) {
    check_nf4(op, w);
    check(scratch.data && scratch.shape.rank == 2 && scratch.dim(0) >= 1 && scratch.dim(1) == w.in, [&] {
        return std::string(op) + ": scratch has shape " + scratch.shape.str() + ", expected (k >= 1, " +
               std::to_string(w.in) + ") for the nf4 weight " + w.shape().str();
    });
}
} // namespace detail

template <class B, class T>
requires BackendFor<B, T>
void nf4_linear_forward(tensor_view<T> y, cview<T> x, const nf4_tensor& w, cview<T> bias, tensor_view<T> scratch) {
    detail::check_nf4_scratch("nf4_linear", w, scratch);
    const index_t n = x.rows(), in = x.cols(), out = w.out;
    check(w.in == in, [&] {
        return "nf4_linear: x has shape " + x.shape.str() + " but the weight " + w.shape().str() + " expects " +
               std::to_string(w.in) + " input features";
    });
    check(y.rows() == n && y.cols() == out, [&] {
        return "nf4_linear: y has shape " + y.shape.str() + ", expected (" + std::to_string(n) + ", " +
               std::to_string(out) + ")";
    });
    if (bias.data) {
        expect_shape("nf4_linear", "bias", bias, {out});
        for (index_t r = 0; r < n; ++r)
            std::copy_n(bias.data, out, y.row(r));
    }
    const index_t tile = scratch.dim(0);
    for (index_t r0 = 0; r0 < out; r0 += tile) {
        const index_t k = std::min(tile, out - r0);
        detail::dequantize_tile(w, r0, k, scratch.data);
        B::gemm(gemm_args<T>{.trans_b = true,
                             .m = n,
                             .n = k,
                             .k = in,
                             .a = x.data,
                             .lda = in,
                             .b = scratch.data,
                             .ldb = in,
                             .beta = T(bias.data ? 1 : 0),
                             .c = y.data + r0,
                             .ldc = out});
    }
}

template <class B, class T>
requires BackendFor<B, T>
void nf4_linear_backward(tensor_view<T> dx, cview<T> dy, const nf4_tensor& w, tensor_view<T> scratch,
                         grad_write dx_mode = grad_write::assign) {
    detail::check_nf4_scratch("nf4_linear_backward", w, scratch);
    const index_t n = dy.rows(), in = w.in, out = w.out;
    check(dy.cols() == out, [&] {
        return "nf4_linear_backward: dy has shape " + dy.shape.str() + " but the weight " + w.shape().str() + " has " +
               std::to_string(out) + " outputs";
    });
    check(dx.rows() == n && dx.cols() == in, [&] {
        return "nf4_linear_backward: dx has shape " + dx.shape.str() + ", expected (" + std::to_string(n) + ", " +
               std::to_string(in) + ")";
    });
    if (out == 0) {
        if (dx_mode == grad_write::assign) dx.fill(T(0));
        return;
    }
    const index_t tile = scratch.dim(0);
    for (index_t r0 = 0; r0 < out; r0 += tile) {
        const index_t k = std::min(tile, out - r0);
        detail::dequantize_tile(w, r0, k, scratch.data);
        const bool first = r0 == 0;
        B::gemm(gemm_args<T>{.m = n,
                             .n = in,
                             .k = k,
                             .a = dy.data + r0,
                             .lda = out,
                             .b = scratch.data,
                             .ldb = in,
                             .beta = T(first && dx_mode == grad_write::assign ? 0 : 1),
                             .c = dx.data,
                             .ldc = in});
    }
}

} // namespace tl
