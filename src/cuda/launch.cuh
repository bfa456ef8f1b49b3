// src/cuda/launch.cuh: TINYLM_LAUNCH(kernel, grid, block, stream, arguments...) launches a kernel, with no
// dynamic shared memory; every launch in src/cuda goes through it. Under nvcc it is the launch syntax itself,
// kernel<<<grid, block, 0, stream>>>(arguments...), so the GPU build is what it would be without it. Under the host
// emulation (TINYLM_CUDA_EMULATION, src/cuda/emulation/), where a C++ compiler builds the same .cu files, it runs
// the kernel's blocks and threads on the CPU.
//
// A macro because the launch syntax is not C++; `kernel` must be a name without a top-level comma (for a kernel
// template's instance, take a pointer to it first).
#pragma once

#if defined(TINYLM_CUDA_EMULATION)
#define TINYLM_LAUNCH(kernel, grid, block, stream, ...)                                                                \
    ::tl::gpu::emulation::launch_named(#kernel, kernel, grid, block, stream, __VA_ARGS__)
#else
#define TINYLM_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif
