// tinylm/core/host_device.hpp: TINYLM_HD marks a function that nvcc compiles for the host and the device (the
// kernels' per-row arithmetic, the counter hash); other compilers see a plain function.
#pragma once

#if defined(__CUDACC__)
#define TINYLM_HD __host__ __device__
#else
#define TINYLM_HD
#endif
