// src/cuda/emulation/include/tinylm_cuda_emulation.hpp: CUDA's execution model on the CPU, for the host emulation
// of tinylm::cuda (docs/gpu.md, "The host emulation"). A C++ compiler builds src/cuda/*.cu unchanged with this
// header and the cuda_runtime.h and cublasLt.h beside it in place of CUDA's, and the kernels run on the CPU: every
// block of the grid in turn, every thread of a block as a fiber that yields at __syncthreads.
//
// What it checks that the CPU executor (gpu::cpu_ops) cannot: the kernels themselves, their indexing, their
// reductions and barriers, their launch configurations (the limits of CUDA), device memory read before it is written
// (new allocations are filled with NaN bytes, as cudaMalloc promises nothing), writes past a planned buffer into the
// guard gap after it (and reads of it under AddressSanitizer), and the cuBLASLt descriptors of blas.cu. What it cannot:
// anything of the GPU itself (its memory model, warps, timing, the real cuBLASLt).
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// The CUDA keywords: the emulation runs one block at a time (launches from several host threads take turns), so a
// block's shared memory can be a function's static storage.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables: set by the scheduler before it runs (or resumes) a thread.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

// Every thread of the block waits here until all have arrived; a thread that finishes while others wait is an error
// (CUDA: "the condition must evaluate identically across the entire thread block").
void __syncthreads();

using cudaStream_t = struct emulated_stream*;

namespace tl::gpu::emulation {

// Runs `thread` for every thread of every block (tinylm_cuda_emulation.cpp); records a bad configuration or a fault
// as the CUDA runtime would (cudaGetLastError, and a fault is sticky).
void run_grid(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& thread);

// ---- guard gaps: out-of-bounds accesses inside one allocation (arena_plan.hpp's gaps between buffers) ----
// [gap, gap + bytes), inside a cudaMalloc'd allocation, belongs to no buffer: it follows the buffer `after`
// (device_arena registers each of its plan's gaps, src/cuda/device.cu). The runtime fills it with a canary and checks
// every gap after each kernel and cuBLASLt product, and refuses a copy or memset whose range reaches into one (read
// or written): either is a sticky fault, cudaErrorIllegalAddress, whose message names the call and `after`. Under
// AddressSanitizer the gap is also poisoned, so a kernel's read of it is reported at once. cudaFree of the allocation
// drops (and unpoisons) its gaps.
void guard_gap(void* gap, std::size_t bytes, const char* after);
// Checks every gap (see guard_gap) after `call` ran; cublas_lt.cpp calls it after each product.
void check_gaps(const char* call);
// Forgets a sticky fault, as a new process would (a GPU's context is lost for good): for the emulation's own tests.
void forget_fault();

// TINYLM_LAUNCH under the emulation (src/cuda/launch.cuh): the arguments are converted to the kernel's parameters
// once, as a launch copies them, and every thread calls the kernel with them.
template <class... Params, class... Args>
void launch_named(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t, Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args), "a kernel launch with the wrong number of arguments");
    std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    run_grid(name, grid, block, [&] { std::apply(kernel, params); });
}

// Whether [p, p + bytes) lies inside one emulated device allocation (cudaMalloc's): what NCCL's emulation checks its
// buffers against (runtime.cpp).
bool is_device_memory(const void* p, std::size_t bytes);

} // namespace tl::gpu::emulation
