// src/cuda/emulation/include/cuda_bf16.h: the part of CUDA's cuda_bf16.h that src/cuda uses, for the host emulation
// (docs/gpu.md, "The host emulation"), declared from the CUDA C++ Programming Guide and the CUDA Math API: the
// storage type __nv_bfloat16 and its conversions. __float2bfloat16 rounds to nearest even (NaN stays a NaN), as
// tinylm/cuda/row_math.hpp's bf16_bits, which it calls; __bfloat162float is exact.
#pragma once

#include <tinylm/cuda/row_math.hpp>

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    std::uint16_t bits = 0;
};

inline __nv_bfloat16 __float2bfloat16(float f) { return {tl::gpu::bf16_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) {
    const std::uint32_t u = std::uint32_t(h.bits) << 16;
    float f = 0;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
