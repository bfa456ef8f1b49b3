// tinylm/backend/backend.hpp: what a backend is.
//
// A backend is a tag type with static functions. Ops are written once, generic over the backend, and call
// the backend only for the primitives where implementations differ (today: the matrix product). A backend
// may add fused kernels later; ops detect them with a requires-expression and otherwise use the generic path.
// The one so far: gemm_group(span of gemm_args), products independent of each other (no output is another's
// input), with the results gemm gives each; the CPU backends run one-row products (decoding) in a single
// parallel region. gemm_each() calls it where the backend has it.
//
// Conventions: row-major matrices; C (m x n) = alpha * op(A) * op(B) + beta * C with op(A) (m x k) and
// op(B) (k x n); lda/ldb/ldc are row strides. With beta == 0, C is not read (it may hold garbage).
#pragma once

#include <tinylm/core/shape.hpp>

#include <concepts>
#include <span>
#include <string_view>

namespace tl {

template <class T>
struct gemm_args {
    bool trans_a = false;
    bool trans_b = false;
    index_t m = 0, n = 0, k = 0;
    T alpha = 1;
    const T* a = nullptr;
    index_t lda = 0;
    const T* b = nullptr;
    index_t ldb = 0;
    T beta = 0;
    T* c = nullptr;
    index_t ldc = 0;
};

// B can compute matrix products on element type T.
template <class B, class T>
concept BackendFor = requires(const gemm_args<T>& g) {
    { B::name } -> std::convertible_to<std::string_view>;
    B::gemm(g);
};

// Every backend computes in f32; the reference backend also in f64 (for finite-difference checks).
template <class B>
concept Backend = BackendFor<B, float>;

// Independent products, through the backend's gemm_group when it has one, else one gemm at a time.
template <class B, class T>
requires BackendFor<B, T>
void gemm_each(std::span<const gemm_args<T>> gs) {
    if constexpr (requires { B::gemm_group(gs); })
        B::gemm_group(gs);
    else
        for (const auto& g : gs)
            B::gemm(g);
}

} // namespace tl
