// tinylm/cuda/device.hpp: the CUDA device, its memory arena and the kernels of tinylm::cuda (src/cuda).
//
// A plain C++ header: the declarations take raw device pointers and an opaque stream (a cudaStream_t as void*,
// nullptr for the default stream), so a program that links tinylm::cuda compiles its own code with any C++
// compiler and needs no CUDA header. Every function throws tl::error naming the call and CUDA's message when the
// runtime reports an error. This is the first increment of issue 20 (docs/gpu.md): memory, RMSNorm, the fused
// softmax cross-entropy and AdamW; the rest of the decoder's ops and cuBLASLt products come next.
#pragma once

#include <tinylm/cuda/arena_plan.hpp>
#include <tinylm/cuda/row_math.hpp>

#include <cstddef>
#include <cstdint>

namespace tl::gpu {

// CUDA devices visible to this process; 0 when there is none or no driver (never throws).
int device_count();

// One cudaMalloc of plan.bytes(), freed on destruction; at(offset) is the device address of a planned buffer.
class device_arena {
public:
    explicit device_arena(const arena_plan& plan);
    ~device_arena();
    device_arena(const device_arena&) = delete;
    device_arena& operator=(const device_arena&) = delete;
    device_arena(device_arena&& o) noexcept : base_(o.base_), bytes_(o.bytes_) {
        o.base_ = nullptr;
        o.bytes_ = 0;
    }

    template <class T>
    T* at(std::size_t offset) const {
        return reinterpret_cast<T*>(static_cast<std::byte*>(base_) + offset);
    }
    std::size_t bytes() const { return bytes_; }

private:
    void* base_ = nullptr;
    std::size_t bytes_ = 0;
};

// Host <-> device copies of `bytes` (synchronous), and waiting for all work on the device.
void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes);
void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes);
void synchronize();

// Kernels, f32, rows of a row-major (n, d) or (n, v) matrix; the math is row_math.hpp's.
// y, rstd (n) = RMSNorm(x) with weight w (d).
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, long long n, int d, float eps,
                     void* stream = nullptr);
// dx assigned; dw (d) accumulated, or skipped when null. Deterministic: no atomics.
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      long long n, int d, void* stream = nullptr);
// Per row: lse and loss (0 where the target is -100). targets are token ids (int32).
void softmax_xent_forward(float* loss, float* lse, const float* logits, const std::int32_t* targets, long long n,
                          long long v, void* stream = nullptr);
// logits replaced in place by d(scale * sum of row losses) / d logits; no probabilities are stored.
void softmax_xent_backward(float* logits, const float* lse, const std::int32_t* targets, long long n, long long v,
                           float scale, void* stream = nullptr);
// One AdamW step over n elements (optim/adamw.hpp's update; coefficients from adamw_step_coeffs).
void adamw_step(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c,
                void* stream = nullptr);

} // namespace tl::gpu
