// src/cuda/check.cuh: CUDA runtime errors as tl::error, naming the call.
#pragma once

#include "launch.cuh"

#include <tinylm/core/error.hpp>

#include <cuda_runtime.h>

#include <string>

namespace tl::gpu::detail {

// A failed call also stays CUDA's "last error" until cudaGetLastError reads it: read it here, or the next launch_check
// would report this failure as its kernel's (a refused allocation, then any launch: "embedding_forward failed: out of
// memory"). A fault that stays (a crashed kernel) is returned again by every later call anyway.
inline void cuda_check(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();
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
