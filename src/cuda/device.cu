// src/cuda/device.cu: devices, the arena's single allocation and copies (tinylm/cuda/device.hpp).
#include "check.cuh"

#include <tinylm/cuda/device.hpp>

namespace tl::gpu {

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); // no driver or no device: clear the sticky error, report none
        return 0;
    }
    return n;
}

std::string device_name() {
    if (device_count() == 0) return {};
    int device = 0;
    detail::cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp prop{};
    detail::cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    return prop.name;
}

device_arena::device_arena(const arena_plan& plan) : bytes_(plan.bytes()) {
    if (bytes_ == 0) return;
    detail::cuda_check(cudaMalloc(&base_, bytes_), "cudaMalloc of the device arena");
#if defined(TINYLM_CUDA_EMULATION)
    // The host emulation guards the gap after every buffer (arena_plan.hpp): a kernel, product, copy or memset that
    // reaches into one is a fault naming the buffer. A GPU has nothing to check them with: the gaps are only unused.
    for (const arena_plan::entry& e : plan.entries())
        emulation::guard_gap(at<std::byte>(e.offset + e.bytes), e.guard, e.name.c_str());
#endif
}

device_arena::~device_arena() {
    if (base_) (void)cudaFree(base_);
}

void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes) {
    detail::cuda_check(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
}
void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes) {
    detail::cuda_check(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to the host");
}
void fill_zero(void* device_dst, std::size_t bytes, void* stream) {
    if (bytes == 0) return;
    detail::cuda_check(cudaMemsetAsync(device_dst, 0, bytes, detail::as_stream(stream)), "cudaMemsetAsync");
}
void synchronize() { detail::cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

} // namespace tl::gpu
