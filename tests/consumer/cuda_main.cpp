// Links tinylm::cuda from the installed package (the CUDA backend, docs/gpu.md) and asks for the devices.
// gpu::device_count() never throws: 0 on a machine without a GPU or driver, which is not a failure here.
#include <tinylm/cuda/device.hpp>

#include <cstdio>

#ifndef TINYLM_HAS_CUDA
#error "tinylm::cuda must bring its compile definition TINYLM_HAS_CUDA"
#endif

int main() {
    const int devices = tl::gpu::device_count();
    std::printf("consumer_cuda: %d CUDA device(s)%s%s\n", devices, devices > 0 ? ", the first: " : "",
                devices > 0 ? tl::gpu::device_name().c_str() : "");
    return devices >= 0 ? 0 : 1;
}
