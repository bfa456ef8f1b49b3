// tinylm/cuda/blas.hpp: matrix products on the GPU through cuBLASLt (src/cuda/blas.cu), with the row-major
// conventions of tl::gemm_args (backend/backend.hpp): c (m, n) = alpha op(a) op(b) + beta c, op(a) (m, k),
// op(b) (k, n), lda/ldb/ldc the row strides as stored. Batched: `batch` products of the same shape, operand i at
// a + i stride_a (elements), b + i stride_b and c + i stride_c (the attention's per-head products).
//
// Inputs f32 or bf16 (the bits of tl::bf16, as gpu::to_bf16 writes them), always f32 accumulation and an f32
// output: bf16 mixed precision keeps f32 master weights and converts them once per optimizer step. The f32
// path computes in full f32 (CUBLAS_COMPUTE_32F, no TF32). A plain C++ header, as device.hpp.
#pragma once

#include <cstddef>

namespace tl::gpu {

enum class matmul_input { f32, bf16 };

struct matmul_args {
    bool trans_a = false, trans_b = false;
    long long m = 0, n = 0, k = 0;
    float alpha = 1;
    const void* a = nullptr; // float or bf16 bits (std::uint16_t), as `input` says
    long long lda = 0;
    const void* b = nullptr;
    long long ldb = 0;
    float beta = 0;
    float* c = nullptr;
    long long ldc = 0;
    matmul_input input = matmul_input::f32;
    long long batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
};

// cuBLASLt's workspace for Hopper GPUs (NVIDIA's recommendation: 32 MiB); planned in the device arena.
inline constexpr std::size_t blas_workspace_bytes = std::size_t(32) << 20;

// A cuBLASLt handle and the device workspace it may use (from the arena: nothing is allocated on the device
// per product). Products on one stream run in order. The algorithm is cuBLASLt's first heuristic choice for
// the shape and the operands' alignment, asked once per distinct product and kept (a training step repeats the
// same few hundred products; asking every time would cost more host time than the GPU spends on many of them).
// At most blas_plan_capacity plans are kept, the least recently used forgotten first (plan_cache.hpp): the experts'
// grouped products take m = an expert's row count, which changes with the routing, and would otherwise grow the
// cache without bound.
inline constexpr std::size_t blas_plan_capacity = 4096;

class blas {
public:
    blas(void* workspace, std::size_t workspace_bytes);
    ~blas();
    blas(const blas&) = delete;
    blas& operator=(const blas&) = delete;

    void matmul(const matmul_args& g, void* stream = nullptr) const;
    // Distinct products planned and kept (a test checks that a repeated step adds none); at most blas_plan_capacity.
    std::size_t cached_plans() const;

private:
    struct plans;            // the cache, keyed by shape, strides, types and alignment (blas.cu)
    void* handle_ = nullptr; // cublasLtHandle_t
    void* workspace_ = nullptr;
    std::size_t workspace_bytes_ = 0;
    plans* plans_ = nullptr;
};

} // namespace tl::gpu
