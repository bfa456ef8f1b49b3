// tinylm/backend/precision.hpp: the arithmetic of the CPU backend's matrix products (docs/precision.md).
//   f32:  f32 products (the default)
//   bf16: operands rounded to bf16, f32 accumulation and result (oneDNN on AVX-512 BF16 / AMX CPUs only;
//         tl::set_cpu_precision in backend/onednn.hpp)
#pragma once

namespace tl {
enum class precision { f32, bf16 };
} // namespace tl
