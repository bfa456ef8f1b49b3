// src/cuda/check.cuh: CUDA runtime errors as tl::error, naming the call.
#pragma once

#include "launch.cuh"

#include <tinylm/core/error.hpp>

#include <cuda_runtime.h>

#include <string>

namespace tl::gpu::detail {

inline void cuda_check(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    std::string m = "cuda: ";
    m += what;
    m += " failed: ";
    m += cudaGetErrorString(e);
    fail(m);
}
// After a kernel launch: a bad configuration shows up at once, a fault at the next synchronisation.
inline void launch_check(const char* kernel) { cuda_check(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

} // namespace tl::gpu::detail
