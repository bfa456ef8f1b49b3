// src/cuda/emulation/include/tinylm_cuda_emulation.hpp: CUDA's execution model on the CPU, for the host emulation
// of tinylm::cuda (docs/gpu.md, "The host emulation"). A C++ compiler builds src/cuda/*.cu unchanged with this
// header and the cuda_runtime.h and cublasLt.h beside it in place of CUDA's, and the kernels run on the CPU: every
// block of the grid in turn, every thread of a block as a fiber that yields at __syncthreads and at the warp-level
// exchanges (__shfl*_sync, __syncwarp).
//
// What it checks that the CPU executor (gpu::cpu_ops) cannot: the kernels themselves, their indexing, their
// reductions and barriers, their launch configurations (the limits of CUDA), device memory read before it is written
// (new allocations are filled with NaN bytes, as cudaMalloc promises nothing), writes past a planned buffer into the
// guard gap after it (and reads of it under AddressSanitizer), and the cuBLASLt descriptors of blas.cu. What it cannot:
// anything of the GPU itself (its memory model, warps' lockstep and timing, the real cuBLASLt).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

// A warp: warpSize consecutive threads of the block in its linear order (threadIdx.x + threadIdx.y blockDim.x +
// threadIdx.z blockDim.x blockDim.y), lane = that index % warpSize; a block whose size is not a multiple of it ends
// with a partial warp, whose missing lanes count as exited.
inline constexpr int warpSize = 32;

namespace tl::gpu::emulation {
// The warp-level calls (CUDA C++ Programming Guide, "Warp Shuffle Functions" and __syncwarp), as a warp barrier:
// a lane waits until every lane named in `mask` has reached the same call (same kind, same mask, same width of
// value), then each reads the value its source lane passed. Faults (the runtime's, as for __syncthreads; CUDA calls
// these undefined): the caller's own bit missing from the mask; lanes of one mask at different calls or masks; a
// source lane outside the mask or past the block's end; a width that is not a power of 2 up to warpSize; a lane of the
// mask that ends, or waits at __syncthreads, while others wait for it (stricter than CUDA, which lets a lane of the
// mask exit). `operand` is srcLane, delta or laneMask; returns the source lane's bits (the caller's own where CUDA
// returns var unchanged: up or down past the segment, xor into a later segment).
enum class warp_call { shfl, shfl_up, shfl_down, shfl_xor, syncwarp };
std::uint64_t warp_exchange(warp_call call, unsigned mask, std::uint64_t bits, unsigned bytes, int operand, int width);

template <class T>
concept warp_value = std::is_arithmetic_v<T> && sizeof(T) <= sizeof(std::uint64_t);

template <warp_value T>
T shuffle(warp_call call, unsigned mask, T var, int operand, int width) {
    std::uint64_t bits = 0;
    std::memcpy(&bits, &var, sizeof var);
    bits = warp_exchange(call, mask, bits, sizeof var, operand, width);
    std::memcpy(&var, &bits, sizeof var);
    return var;
}
} // namespace tl::gpu::emulation

template <tl::gpu::emulation::warp_value T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize) {
    return tl::gpu::emulation::shuffle(tl::gpu::emulation::warp_call::shfl, mask, var, srcLane, width);
}
template <tl::gpu::emulation::warp_value T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    return tl::gpu::emulation::shuffle(tl::gpu::emulation::warp_call::shfl_up, mask, var, int(delta), width);
}
template <tl::gpu::emulation::warp_value T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    return tl::gpu::emulation::shuffle(tl::gpu::emulation::warp_call::shfl_down, mask, var, int(delta), width);
}
template <tl::gpu::emulation::warp_value T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize) {
    return tl::gpu::emulation::shuffle(tl::gpu::emulation::warp_call::shfl_xor, mask, var, laneMask, width);
}
// Waits for the lanes of `mask` (the caller's among them), as CUDA's; orders nothing more on the host.
inline void __syncwarp(unsigned mask = 0xffffffffU) {
    tl::gpu::emulation::warp_exchange(tl::gpu::emulation::warp_call::syncwarp, mask, 0, 0, 0, warpSize);
}

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
