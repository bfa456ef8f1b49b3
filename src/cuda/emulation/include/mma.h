// src/cuda/emulation/include/mma.h: the warp matrix functions of CUDA's mma.h (nvcuda::wmma) that src/cuda uses, for
// the host emulation (docs/gpu.md, "The host emulation"), declared from the CUDA C++ Programming Guide ("Warp Matrix
// Functions"): fragments of 16 x 16 x 16 tiles with __nv_bfloat16 operands and float accumulators, fill_fragment,
// load_matrix_sync, mma_sync and store_matrix_sync. Nothing of NVIDIA's header is copied.
//
// How a fragment's elements are spread over the 32 threads of a warp is unspecified by CUDA, so the emulation gives
// every thread the whole tile: each thread of the warp loads, multiplies and stores all of it (the same values, as
// the threads of a warp run one after another between barriers). That is correct for code that uses only the
// documented operations, plus element-wise operations over x[0 .. num_elements) applied by every thread alike; code
// that assumes a lane holds particular elements is not (a GPU shows that, not this). A warp's stores to one tile
// write the same values 32 times, and a load, a product and a store back to the same memory in one phase would add
// 32 times: src/cuda keeps products that accumulate into memory in separate buffers (flash_attention.cu). The
// documented preconditions are checked: a 256-bit aligned pointer and a leading dimension that is a multiple of
// 16 bytes. The product: bf16 x bf16 is exact in float, summed in float in the order of k.
#pragma once

#include "cuda_bf16.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class Use, int M, int N, int K>
struct fragment_shape; // rows x columns of the tile a fragment holds
template <int M, int N, int K>
struct fragment_shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct fragment_shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct fragment_shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};
inline float to_float(float x) { return x; }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
// The Programming Guide's preconditions of load_matrix_sync and store_matrix_sync.
template <class T>
void check_memory(const T* p, unsigned ldm, const char* what) {
    if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0 || (ldm * sizeof(T)) % 16 != 0) {
        std::fprintf(stderr,
                     "wmma emulation: %s: pointer %p not 256-bit aligned or ldm %u not a multiple of 16 bytes\n", what,
                     static_cast<const void*>(p), ldm);
        std::abort();
    }
}
} // namespace detail

// The whole tile, row-major: x[r * cols + c] (the emulation's layout; CUDA's is unspecified).
template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
public:
    static constexpr int rows = detail::fragment_shape<Use, M, N, K>::rows;
    static constexpr int cols = detail::fragment_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    T x[num_elements];
};

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& a, const T& v) {
    for (T& e : a.x)
        e = v;
}

// matrix_a, matrix_b: the layout is the fragment's.
template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& a, const T* p, unsigned ldm) {
    static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>);
    detail::check_memory(p, ldm, "load_matrix_sync");
    using F = fragment<Use, M, N, K, T, Layout>;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            a.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
}
// The accumulator: the layout given.
template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& a, const T* p, unsigned ldm, layout_t layout) {
    detail::check_memory(p, ldm, "load_matrix_sync");
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            a.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
template <int M, int N, int K, class T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& a, unsigned ldm, layout_t layout) {
    detail::check_memory(p, ldm, "store_matrix_sync");
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = a.x[r * N + c];
}

// d = a b + c (d may be c).
template <int M, int N, int K, class Tab, class LayoutA, class LayoutB, class Tc>
void mma_sync(fragment<accumulator, M, N, K, Tc>& d, const fragment<matrix_a, M, N, K, Tab, LayoutA>& a,
              const fragment<matrix_b, M, N, K, Tab, LayoutB>& b, const fragment<accumulator, M, N, K, Tc>& c) {
    Tc out[M * N];
    for (int r = 0; r < M; ++r)
        for (int n = 0; n < N; ++n) {
            Tc s = c.x[r * N + n];
            for (int k = 0; k < K; ++k)
                s += detail::to_float(a.x[r * K + k]) * detail::to_float(b.x[k * N + n]);
            out[r * N + n] = s;
        }
    for (int e = 0; e < M * N; ++e)
        d.x[e] = out[e];
}

} // namespace nvcuda::wmma
