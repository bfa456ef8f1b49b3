// tinylm/backend/default.hpp: the backend a decoder uses when none is named. oneDNN when it is enabled
// (the fastest f32 gemm on these CPUs), otherwise Eigen.
#pragma once

#include <tinylm/backend/eigen.hpp>
#include <tinylm/backend/reference.hpp>
#ifdef TINYLM_HAS_ONEDNN
#include <tinylm/backend/onednn.hpp>
#endif

namespace tl {
#ifdef TINYLM_HAS_ONEDNN
using default_backend = onednn_cpu;
#else
using default_backend = eigen_cpu;
#endif
} // namespace tl
